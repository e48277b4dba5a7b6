//! The `authlog` binary: logs, settings, then the chosen subcommand.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use std::io::Write as _;

use authlog::audit::{self, EventFilter, ReplayPoint, VerifyOutcome};
use authlog::cli::{Cli, CliCommand, EventsArgs, OutputFormat, ReplayArgs, ServeArgs, VerifyArgs};
use authlog::startup::{Application, open_for_audit};
use clap::Parser;

/// The auditors' commands' exit statuses (their `--help` and docs/auditing.md say the same):
/// 0 success, 1 `verify` found the log changed, 2 a usage error (clap's own), 3 the log could not
/// be read.
const LOG_CHANGED: u8 = 1;
const LOG_UNREADABLE: u8 = 3;

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(message) = authlog::telemetry::init(cli.log_format) {
        eprintln!("authlog: {message}");
        return ExitCode::from(2);
    }
    let audit = match cli.into_command() {
        CliCommand::Serve(args) => {
            return match serve(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    // One log line with the whole cause chain; no backtrace, which helps nobody
                    // running it.
                    tracing::error!("authlog stopped: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
        CliCommand::Events(args) => events(args).await,
        CliCommand::Replay(args) => replay(args).await,
        CliCommand::Verify(args) => verify(args).await,
    };
    audit.unwrap_or_else(|error| {
        // An auditor's script reads this: a plain message, not a log line.
        eprintln!("authlog: error: {error:#}");
        ExitCode::from(LOG_UNREADABLE)
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.settings_from_env()?;
    // Each connection holds a descriptor; the soft limit (often 1,024) is far below what the
    // hard limit allows, so take what is allowed, as servers commonly do.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
    let app = Application::build(settings).await?;
    app.run_until_stopped().await?;
    tracing::info!("authlog stopped");
    Ok(())
}

async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let store = open_for_audit(&args.store.store_settings()).await?;
    let mut out = std::io::stdout().lock();
    let outcome = audit::verify(store.as_ref(), args.expect.as_ref(), &mut out).await?;
    out.flush()?;
    Ok(match outcome {
        VerifyOutcome::Intact => ExitCode::SUCCESS,
        _ => ExitCode::from(LOG_CHANGED),
    })
}

async fn events(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let store = open_for_audit(&args.store.store_settings()).await?;
    let filter = EventFilter {
        from: args.from,
        to: args.to,
        since: args.since,
        until: args.until,
        user: args.user,
        event_type: args.event_type,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let listed = audit::events(
        store.as_ref(),
        &filter,
        args.format == OutputFormat::Jsonl,
        &mut out,
    )
    .await;
    match listed {
        Ok(_) => out.flush()?,
        // `authlog events | head` closes the pipe early: not an error.
        Err(audit::AuditError::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
        }
        Err(error) => return Err(error.into()),
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let store = open_for_audit(&args.store.store_settings()).await?;
    let point = match (args.at, args.to) {
        (Some(at), _) => ReplayPoint::At(at),
        (None, Some(to)) => ReplayPoint::Position(to),
        // clap requires one of them (the `point` group).
        (None, None) => anyhow::bail!("give --at or --to"),
    };
    let mut out = std::io::stdout().lock();
    audit::replay(
        store.as_ref(),
        point,
        args.user.as_deref(),
        args.policy(),
        &mut out,
    )
    .await?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
