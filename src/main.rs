//! The `authlog` binary: logs, settings, then the chosen subcommand.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use authlog::config::{Cli, CliCommand, Settings};
use authlog::startup::Application;
use clap::Parser;

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(message) = authlog::telemetry::init(cli.log_format) {
        eprintln!("authlog: {message}");
        return ExitCode::from(2);
    }
    let outcome = match cli.into_command() {
        CliCommand::Serve(args) => serve(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line with the whole cause chain; no backtrace, which helps nobody running it.
            tracing::error!("authlog stopped: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: authlog::config::ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::from_env(args)?;
    let app = Application::build(settings).await?;
    app.run_until_stopped().await?;
    tracing::info!("authlog stopped");
    Ok(())
}
