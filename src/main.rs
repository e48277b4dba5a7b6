//! The `authlog` binary: logs, settings, then the chosen subcommand.

#![forbid(unsafe_code)]

use authlog::config::{Cli, CliCommand, Settings};
use authlog::startup::Application;
use clap::Parser;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    authlog::telemetry::init();
    match cli.into_command() {
        CliCommand::Serve(args) => {
            let settings = Settings::from_env(args)?;
            let app = Application::build(settings).await?;
            app.run_until_stopped().await?;
        }
    }
    Ok(())
}
