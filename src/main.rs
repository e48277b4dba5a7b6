//! The `authlog` binary: logs, settings, then the chosen subcommand.

#![forbid(unsafe_code)]

use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: frees of memory another thread allocated (every row a
/// store's thread reads and the registry folds) go to the owning heap without taking a lock
/// (docs/decisions.md, "A compact directory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write as _;

use anyhow::Context as _;
use authlog::audit::{self, Anchors, EventFilter, ReplayPoint, VerifyOutcome};
use authlog::checkpoint::Sink;
use authlog::cli::{
    AdminArgs, AdminCommand, CheckpointArgs, Cli, CliCommand, EventsArgs, ImportArgs, KeysArgs,
    KeysCommand, LogKeyArgs, LogKeyCommand, OutputFormat, PublicKey, ReplayArgs, Secrets,
    ServeArgs, VerifyArgs,
};
use authlog::events::EventStore;
use authlog::events::signed::Trust;
use authlog::operate::{self, Outcome};
use authlog::startup::{Application, master_key, open_for_audit, open_store};
use clap::Parser;

/// The auditors' and operators' commands' exit statuses (their `--help` and docs/auditing.md say
/// the same): 0 success, 1 `verify` found the log changed (or a `keys` or `admin` command was
/// refused), 2 a
/// usage error (clap's own), 3 the log could not be read (or written).
const LOG_CHANGED: u8 = 1;
const REFUSED: u8 = 1;
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
        CliCommand::Keys(args) => keys(args).await,
        CliCommand::Admin(args) => admin(args).await,
        CliCommand::Checkpoint(args) => checkpoint(args).await,
        CliCommand::LogKey(args) => log_key(args).await,
        CliCommand::Snapshot(args) => snapshot(args).await,
        CliCommand::Import(args) => import(args).await,
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

async fn keys(args: KeysArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let outcome = match args.command {
        KeysCommand::List(args) => {
            let master = args.store.audit_master_key()?;
            let store = open_for_audit(&args.store.store_settings(), master.as_ref()).await?;
            let ring = operate::key_ring(store.as_ref()).await?;
            operate::list(&ring, args.format == OutputFormat::Jsonl, &mut out)?;
            Outcome::Done
        }
        KeysCommand::Rotate(args) => {
            let secrets = Secrets::from_env();
            let master = master_key(&args.store.master_key(&secrets)?)?;
            let (store, _) = open_store(&args.store.store_settings(), &master).await?;
            let actor = match (args.now, args.force) {
                (true, true) => "authlog keys rotate --now --force",
                (true, false) => "authlog keys rotate --now",
                _ => "authlog keys rotate",
            };
            operate::rotate(store, &master, args.now, args.force, actor, &mut out).await?
        }
        KeysCommand::Retire(args) => {
            let master = args.store.write_master_key()?;
            let (store, _) = open_store(&args.store.store_settings(), &master).await?;
            operate::retire(store, &args.key_id, "authlog keys retire", &mut out).await?
        }
    };
    out.flush()?;
    Ok(exit_status(outcome))
}

async fn admin(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let (args, grant, actor) = match args.command {
        AdminCommand::GrantRole(args) => (args, true, "authlog admin grant-role"),
        AdminCommand::RevokeRole(args) => (args, false, "authlog admin revoke-role"),
        AdminCommand::Erase(args) => {
            let master = args.store.write_master_key()?;
            let (store, _) = open_store(&args.store.store_settings(), &master).await?;
            let outcome =
                operate::erase(store, &args.email, "authlog admin erase", &mut out).await?;
            out.flush()?;
            return Ok(exit_status(outcome));
        }
    };
    let master = args.store.write_master_key()?;
    let (store, _) = open_store(&args.store.store_settings(), &master).await?;
    let outcome =
        operate::change_role(store, &args.email, &args.role, grant, actor, &mut out).await?;
    out.flush()?;
    Ok(exit_status(outcome))
}

fn exit_status(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Done => ExitCode::SUCCESS,
        Outcome::Refused(why) => {
            eprintln!("authlog: refused: {why}");
            ExitCode::from(REFUSED)
        }
    }
}

/// The master key of a command that signs but does not append: never generated here.
fn signing_master_key(
    store: &authlog::cli::StoreArgs,
) -> anyhow::Result<authlog::vault::MasterKey> {
    store.audit_master_key()?.context(
        "the log-signing keys are derived from the master key: set AUTHLOG_MASTER_KEY (or \
         point --data-dir at the embedded store's directory, which holds its key file)",
    )
}

async fn checkpoint(args: CheckpointArgs) -> anyhow::Result<ExitCode> {
    let master = signing_master_key(&args.store)?;
    let store = open_for_audit(&args.store.store_settings(), Some(&master)).await?;
    let sink = args.to.map_or(Sink::Stdout, Sink::File);
    let mut out = std::io::stdout().lock();
    let outcome = operate::checkpoint(store, &sink, &mut out).await?;
    out.flush()?;
    Ok(exit_status(outcome))
}

async fn snapshot(args: authlog::cli::LogKeyShowArgs) -> anyhow::Result<ExitCode> {
    let master = args.store.write_master_key()?;
    let (store, _) = open_store(&args.store.store_settings(), &master).await?;
    let mut out = std::io::stdout().lock();
    let outcome = operate::snapshot(store, &mut out).await?;
    out.flush()?;
    Ok(exit_status(outcome))
}

async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let (source, options) = match args.plan() {
        Ok(plan) => plan,
        Err(message) => {
            eprintln!("authlog: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    let master = args.store.write_master_key()?;
    let (store, _) = open_store(&args.store.store_settings(), &master).await?;
    let mut out = std::io::stdout().lock();
    let outcome = authlog::import::run(&source, store, &options, &mut out).await?;
    out.flush()?;
    Ok(exit_status(outcome))
}

async fn log_key(args: LogKeyArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let outcome = match args.command {
        LogKeyCommand::Show(args) => {
            let master = signing_master_key(&args.store)?;
            let store = open_for_audit(&args.store.store_settings(), Some(&master)).await?;
            operate::show_log_keys(store, &mut out).await?
        }
        LogKeyCommand::Rotate(args) => {
            let master = args.store.write_master_key()?;
            let (store, _) = open_store(&args.store.store_settings(), &master).await?;
            operate::rotate_log_key(store, "authlog log-key rotate", &mut out).await?
        }
    };
    out.flush()?;
    Ok(exit_status(outcome))
}

/// Whose signatures an auditor's command accepts: `--public-key`, else the master key's.
fn trust(public_key: Option<PublicKey>, store: &dyn EventStore) -> Option<Trust> {
    match public_key {
        Some(PublicKey(key)) => Some(Trust::public_key(key)),
        None => store.log_signer().map(|signer| signer.trust()),
    }
}

async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let master = args.store.audit_master_key()?;
    let store = open_for_audit(&args.store.store_settings(), master.as_ref()).await?;
    let checkpoints = match &args.checkpoints {
        Some(path) => authlog::checkpoint::read(path)
            .with_context(|| format!("cannot read the checkpoints in {}", path.display()))?,
        None => Vec::new(),
    };
    let anchors = Anchors {
        trust: trust(args.public_key, store.as_ref()),
        checkpoints,
    };
    let mut out = std::io::stdout().lock();
    let outcome =
        audit::verify_anchored(store.as_ref(), args.expect.as_ref(), anchors, &mut out).await?;
    out.flush()?;
    Ok(match outcome {
        VerifyOutcome::Intact => ExitCode::SUCCESS,
        _ => ExitCode::from(LOG_CHANGED),
    })
}

async fn events(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let master = args.store.audit_master_key()?;
    let store = open_for_audit(&args.store.store_settings(), master.as_ref()).await?;
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
    let master = args.store.audit_master_key()?;
    let store = open_for_audit(&args.store.store_settings(), master.as_ref()).await?;
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
        trust(args.public_key, store.as_ref()),
        &mut out,
    )
    .await?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
