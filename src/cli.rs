//! The command line: subcommands, flags and the environment variables behind them, turned into
//! validated [`Settings`] once, at start-up.
//!
//! Secrets (`DATABASE_URL`, `AUTHLOG_MASTER_KEY`, `AUTHLOG_JWT_SECRET`) are read from the
//! environment only, never from flags, so they do not show up in `ps` or shell history, and they
//! are never printed. Defaults
//! are not stated here: each flag takes its default from [`crate::config`] or from the type that
//! owns it.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use secrecy::SecretString;

use crate::audit::ExpectedHead;
use crate::config::{
    ConfigError, JwtSecretSource, MasterKeySource, Settings, StoreSettings, defaults, key_file,
    master_key_file, parse_public_url,
};
use crate::domain::{Email, KeyAlgorithm, KeyId, Role};
use crate::events::{DEFAULT_STORE_TIMEOUT, Event, PostgresSettings, SqliteSettings};
use crate::jwt::JwtSecret;
use crate::sessions::SessionPolicy;
use crate::telemetry::LogFormat;
use crate::throttle::ThrottlePolicy;
use crate::vault::MasterKey;

const SECRETS_HELP: &str = "\
Secrets, read from the environment only:
  DATABASE_URL        PostgreSQL URL holding the event log, e.g.
                      postgres://postgres@127.0.0.1:5432/authlog
                      [default: unset, the embedded SQLite log in --data-dir]
  AUTHLOG_MASTER_KEY  opens the signing keys stored (sealed) in the log, and keys refresh
                      tokens; at least 32 bytes, e.g. from `openssl rand -hex 32`. Required
                      with PostgreSQL, the same for every instance; on the embedded log one is
                      generated once into --data-dir/master-key
  AUTHLOG_JWT_SECRET  HS256 secret, at least 32 bytes: signs tokens with
                      --token-algorithm HS256 (required then with PostgreSQL; generated into
                      --data-dir/jwt-secret on the embedded log), and keeps tokens it signed
                      valid after a switch to EdDSA

Logging:
  RUST_LOG            log filter, e.g. `info` or `authlog=debug,info` [default: info]
  NO_COLOR            set to turn colours off in text logs";

#[derive(Debug, Parser)]
#[command(
    name = "authlog",
    version,
    about = "An authentication service whose state is an append-only event log"
)]
#[command(args_conflicts_with_subcommands = true, after_help = SECRETS_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<CliCommand>,
    /// Log lines as readable text, or one JSON object per line (for log collectors).
    /// Filter with RUST_LOG (default `info`).
    #[arg(long, env = "AUTHLOG_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text,
          global = true)]
    pub log_format: LogFormat,
    /// `authlog` with no subcommand serves, with these arguments.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the HTTP service (the default).
    Serve(ServeArgs),
    /// List the event log, streaming; password hashes are shown as fingerprints.
    Events(EventsArgs),
    /// Rebuild the state as of a moment: users, logins, and one user's history and whether
    /// they could log in then.
    Replay(ReplayArgs),
    /// Recompute the hash chain: exit 0 if intact, 1 with the first bad position otherwise.
    Verify(VerifyArgs),
    /// The token signing keys: list them, rotate, retire one.
    Keys(KeysArgs),
    /// Users' roles: make the first admin, or take a role away.
    Admin(AdminArgs),
    /// Write a signed checkpoint of the log's head now (docs/auditing.md).
    Checkpoint(CheckpointArgs),
    /// The log-signing key: print its public half, or rotate it.
    LogKey(LogKeyArgs),
    /// Write a snapshot of the folded state now, so that the next start replays only the tail
    /// (a running server also writes them; README, "Operating authlog").
    Snapshot(LogKeyShowArgs),
    /// Bring users, with their bcrypt password hashes, from the FastAPI tutorial's database or
    /// from a JSONL or CSV export (README, "Moving from the FastAPI tutorial").
    Import(ImportArgs),
}

const IMPORT_HELP: &str = "\
The log to import into, from the environment: DATABASE_URL (PostgreSQL) or the embedded log
in --data-dir, as for `authlog serve`; AUTHLOG_MASTER_KEY as well on PostgreSQL. Running
servers log the imported users in at once, on either store.

Rows are read first: one that cannot be imported (unreadable, an invalid email, a password
hash that is not bcrypt $2a$, $2b$ or $2y$ at cost 4 to 31) is reported by its row or line
number and skipped, and of rows whose emails are the same once normalised the first is kept.
Users whose email is registered already are skipped, so running the same import again adds
nothing; nor is a user this source brought in before and who was erased since brought back.
Each UserRegistered records the source and the row's id. Logins check the imported hash, and
replace it with one at the configured cost on the first success.

Exit status: 0 done (skipped rows are listed, and counted in the summary); 1 refused
(--strict found a row that cannot be imported: nothing was appended); 2 a usage error; 3 the
source or the log could not be read, or the log could not be written.";

/// `authlog import`.
#[derive(Debug, Clone, Args)]
#[command(after_help = IMPORT_HELP)]
#[command(group(clap::ArgGroup::new("from").required(true).args(["from_postgres", "jsonl", "csv"])))]
pub struct ImportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The FastAPI tutorial's database, as a PostgreSQL URL such as
    /// postgresql://app@db.example.com/fastapi_auth. It is only read, in one read-only
    /// transaction. Leave the password out of the URL (the command line shows in `ps`) and set
    /// PGPASSWORD instead.
    #[arg(long, value_name = "URL", value_parser = parse_secret)]
    pub from_postgres: Option<SecretString>,
    /// The table holding the users (`schema.table` also works) [default: users].
    #[arg(long, requires = "from_postgres", conflicts_with_all = ["jsonl", "csv"])]
    pub table: Option<String>,
    /// Its columns: ID,EMAIL,HASH or ID,EMAIL,HASH,CREATED_AT (a timestamp kept as the account's
    /// creation time) [default: id,email,hashed_password].
    #[arg(long, requires = "from_postgres", conflicts_with_all = ["jsonl", "csv"],
          value_parser = crate::import::Columns::parse)]
    pub columns: Option<crate::import::Columns>,
    /// A file of one JSON object per line: `email`, `password_hash` (or `hashed_password`), and
    /// optionally `created_at` (RFC 3339) and `id`.
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,
    /// A CSV file whose header line names the same columns, in any order.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// What the log records as these users' source [default: postgresql:DATABASE/TABLE,
    /// jsonl:FILE NAME or csv:FILE NAME]. Keep it the same across runs of one import: a user
    /// erased since an earlier run is recognised by it and the row's id.
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Stop at the first row that cannot be imported as it is (or that collides with an
    /// earlier one), appending nothing.
    #[arg(long)]
    pub strict: bool,
    /// Read everything and report what would be imported, appending nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl ImportArgs {
    /// The source and how to run, from the flags; a usage error for a `--from-postgres` that
    /// is not a PostgreSQL URL (the message does not repeat it: it may hold a password).
    pub fn plan(&self) -> Result<(crate::import::Source, crate::import::Options), String> {
        use crate::import::Source;
        use secrecy::ExposeSecret as _;
        let source = match (&self.from_postgres, &self.jsonl, &self.csv) {
            (Some(url), _, _) => Source::Postgres {
                config: Box::new(url.expose_secret().parse().map_err(|_| {
                    "--from-postgres is not a PostgreSQL URL (postgresql://USER@HOST:PORT/DATABASE, \
                     or key=value pairs)"
                        .to_owned()
                })?),
                table: self.table.clone().unwrap_or_else(|| "users".to_owned()),
                columns: self.columns.clone().unwrap_or_default(),
            },
            (None, Some(path), _) => Source::Jsonl(path.clone()),
            // clap requires one of the three (the `from` group).
            (None, None, csv) => Source::Csv(csv.clone().unwrap_or_default()),
        };
        let options = crate::import::Options {
            source_name: self.source.clone().unwrap_or_else(|| source.default_name()),
            strict: self.strict,
            dry_run: self.dry_run,
        };
        Ok((source, options))
    }
}

/// A flag's value that must not be printed (a URL with a password in it): clap repeats a value
/// it refuses, so it is taken as it is here and parsed in [`ImportArgs::plan`].
fn parse_secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

#[derive(Debug, Clone, Args)]
pub struct CheckpointArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Append it to this file (flushed to disk) instead of printing it.
    #[arg(long)]
    pub to: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct LogKeyArgs {
    #[command(subcommand)]
    pub command: LogKeyCommand,
}

#[derive(Debug, Subcommand)]
pub enum LogKeyCommand {
    /// Print every log-signing public key (generation 1 first) for auditors to pin.
    Show(LogKeyShowArgs),
    /// Sign the log with the next generation's key from the next append on; the rotation is
    /// itself signed by the current key.
    Rotate(LogKeyShowArgs),
}

#[derive(Debug, Clone, Args)]
pub struct LogKeyShowArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
#[command(after_help = ADMIN_HELP)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub command: AdminCommand,
}

const ADMIN_HELP: &str = "\
The log, from the environment: DATABASE_URL (PostgreSQL) or the embedded log in --data-dir.
The change is appended as the servers append (same decisions, chain and lock), with this
command named as its actor; running servers see it at once (PostgreSQL), or within a second
(embedded). Revoking a role ends every session of the user; erasing a user ends them all and
destroys the user's data key, so their email, hashes, addresses and user agents in the log
can never be read again (docs/security.md, \"Personal data and erasure\").

Exit status: 0 done, or nothing to do (the user already has, or lacks, the role); 1 refused
(no such user, or the last admin); 2 a usage error; 3 the log could not be read or written.";

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Give a user a role (`admin` makes them an administrator).
    GrantRole(RoleArgs),
    /// Take a role from a user, and end their sessions. The last admin keeps `admin`.
    RevokeRole(RoleArgs),
    /// Erase a user (a GDPR Art. 17 request): end their sessions and destroy their data key.
    /// Cannot be undone. The last admin is refused.
    Erase(EraseArgs),
}

#[derive(Debug, Clone, Args)]
pub struct EraseArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The user's email, as they signed up with it.
    #[arg(long, value_parser = Email::parse)]
    pub email: Email,
}

#[derive(Debug, Clone, Args)]
pub struct RoleArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The user's email, as they signed up with it.
    #[arg(long, value_parser = Email::parse)]
    pub email: Email,
    /// 1 to 32 of a-z, 0-9, '_' and '-'; `admin` is built in.
    #[arg(long, value_parser = Role::parse)]
    pub role: Role,
}

#[derive(Debug, Args)]
#[command(after_help = KEYS_HELP)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

const KEYS_HELP: &str = "\
The log, from the environment: DATABASE_URL (PostgreSQL) or the embedded log in --data-dir.
`rotate` also needs the master key: AUTHLOG_MASTER_KEY, or --data-dir/master-key.
Running servers see the change at once (PostgreSQL), or within a second (embedded).

Exit status: 0 done; 1 refused (the keys are not as the command needs: the message says why);
2 a usage error; 3 the log could not be read or written.";

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Every key in the log: its id, algorithm, state and when it changed.
    List(KeysListArgs),
    /// Add a new key. It is published at once and signs once the JWKS cache lifetime has
    /// passed (a running server activates it), or at once with --now.
    Rotate(KeysRotateArgs),
    /// Withdraw a pending or retiring key: it leaves the JWKS, and tokens it signed are
    /// refused from now on. The active key cannot be retired: rotate first.
    Retire(KeysRetireArgs),
}

#[derive(Debug, Clone, Args)]
pub struct KeysListArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// A readable table, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Clone, Args)]
pub struct KeysRotateArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Sign with the new key at once, without waiting for verifiers' JWKS caches (for a key
    /// that may have leaked: verifiers that cache the JWKS refetch it for an unknown `kid`).
    #[arg(long)]
    pub now: bool,
    /// Add the key even though this master key opens none of the log's keys: the way back
    /// after losing the master key (every refresh token stops working, as their tags are keyed
    /// from it). Only with --now.
    #[arg(long, requires = "now")]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct KeysRetireArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The key's id (its `kid`), as `authlog keys list` shows it. A base64url id may start
    /// with `-`, and is still read as the id.
    #[arg(allow_hyphen_values = true)]
    pub key_id: KeyId,
}

/// `--token-algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenAlgorithm {
    /// Ed25519 keys kept in the log, published at /.well-known/jwks.json.
    #[value(name = "EdDSA")]
    EdDsa,
    /// One shared secret (AUTHLOG_JWT_SECRET); nothing is published.
    #[value(name = "HS256")]
    Hs256,
}

impl From<TokenAlgorithm> for KeyAlgorithm {
    fn from(algorithm: TokenAlgorithm) -> Self {
        match algorithm {
            TokenAlgorithm::EdDsa => KeyAlgorithm::EdDSA,
            TokenAlgorithm::Hs256 => KeyAlgorithm::HS256,
        }
    }
}

/// The secrets, from the environment (or given, in tests).
#[derive(Default)]
pub struct Secrets {
    pub database_url: Option<SecretString>,
    pub master_key: Option<SecretString>,
    pub jwt_secret: Option<SecretString>,
}

impl Secrets {
    pub fn from_env() -> Self {
        Self {
            database_url: env_secret("DATABASE_URL"),
            master_key: env_secret("AUTHLOG_MASTER_KEY"),
            jwt_secret: env_secret("AUTHLOG_JWT_SECRET"),
        }
    }
}

/// Which log an audit command reads: PostgreSQL when DATABASE_URL is set, else the embedded one.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory of the embedded store (when DATABASE_URL is unset).
    #[arg(long, env = "AUTHLOG_DATA_DIR", default_value = defaults::DATA_DIR)]
    pub data_dir: PathBuf,
}

impl StoreArgs {
    /// The master key: AUTHLOG_MASTER_KEY, or the data directory's file on the embedded store
    /// (generated there if missing); required with PostgreSQL.
    pub fn master_key(&self, secrets: &Secrets) -> Result<MasterKeySource, ConfigError> {
        match (&secrets.database_url, &secrets.master_key) {
            (_, Some(key)) => Ok(MasterKeySource::Given(MasterKey::parse(key)?)),
            (Some(_), None) => Err(ConfigError::MissingMasterKey),
            (None, None) => Ok(MasterKeySource::File(master_key_file(&self.data_dir))),
        }
    }

    /// The master key for an auditor's read, if there is one: AUTHLOG_MASTER_KEY, or the data
    /// directory's file on the embedded store (never generated here). Without it, personal
    /// data reads as `<sealed>`.
    pub fn audit_master_key(&self) -> anyhow::Result<Option<MasterKey>> {
        let secrets = Secrets::from_env();
        let secret = match (&secrets.database_url, secrets.master_key) {
            (_, Some(key)) => Some(key),
            (Some(_), None) => None,
            (None, None) => crate::keyfile::load_if_present(&master_key_file(&self.data_dir))?,
        };
        secret
            .map(|secret| MasterKey::parse(&secret).map_err(anyhow::Error::new))
            .transpose()
    }

    /// The master key for a command that appends: as [`StoreArgs::master_key`], from the
    /// environment, and read (or generated) now.
    pub fn write_master_key(&self) -> anyhow::Result<MasterKey> {
        let source = self.master_key(&Secrets::from_env())?;
        crate::startup::master_key(&source)
    }

    /// The store the environment names, with the default timeouts (audit commands).
    pub fn store_settings(&self) -> StoreSettings {
        self.settings(
            env_secret("DATABASE_URL"),
            DEFAULT_STORE_TIMEOUT,
            PostgresSettings::DEFAULT_POOL_SIZE,
        )
    }

    /// PostgreSQL at `database_url` if given, else the embedded store in the data directory.
    fn settings(
        &self,
        database_url: Option<SecretString>,
        timeout: Duration,
        pool_size: usize,
    ) -> StoreSettings {
        match database_url {
            Some(url) => StoreSettings::Postgres(PostgresSettings {
                pool_size,
                timeout,
                ..PostgresSettings::new(url)
            }),
            None => StoreSettings::Sqlite(SqliteSettings {
                timeout,
                ..SqliteSettings::in_dir(&self.data_dir)
            }),
        }
    }
}

const AUDIT_HELP: &str = "\
The log to read, from the environment:
  DATABASE_URL        PostgreSQL URL holding the event log, read in read-only transactions
                      [default: unset, the embedded log in --data-dir, opened read-only;
                      it must exist]

Exit status: 0 success (verify: the chain is intact); 1 verify found the log changed (a broken
chain, or the --expect head is gone); 2 a usage error; 3 the log could not be read.";

/// A time on the command line: RFC 3339, with a message that says so.
fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| format!("{raw:?} is not an RFC 3339 time; write it like 2026-11-27T09:00:00Z"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Jsonl,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = AUDIT_HELP)]
pub struct EventsArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// First position to list (positions start at 1).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub from: Option<i64>,
    /// Last position to list.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub to: Option<i64>,
    /// Only events recorded at or after this time (RFC 3339, e.g. 2026-11-27T09:00:00Z).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Only events recorded at or before this time.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
    /// Only this user's events: an email or a user id.
    #[arg(long)]
    pub user: Option<String>,
    /// Only events of this type.
    #[arg(long = "type", value_parser = clap::builder::PossibleValuesParser::new(Event::TYPES))]
    pub event_type: Option<String>,
    /// A readable table, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = AUDIT_HELP)]
#[command(group(clap::ArgGroup::new("point").required(true).args(["at", "to"])))]
pub struct ReplayArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Replay the events recorded up to this time (RFC 3339, e.g. 2026-11-27T09:00:00Z).
    #[arg(long, value_parser = parse_time)]
    pub at: Option<DateTime<Utc>>,
    /// Replay the events up to this position.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub to: Option<i64>,
    /// Show this user's history and whether they could log in then: an email or a user id.
    #[arg(long)]
    pub user: Option<String>,
    /// Apply only rows a signature of this log-signing public key covers (as for `verify`)
    /// [default: derived from the master key, if available].
    #[arg(long, value_parser = parse_public_key, allow_hyphen_values = true)]
    pub public_key: Option<PublicKey>,
    /// The login throttling rules to judge by: the service's, from the same settings.
    #[command(flatten)]
    pub throttle: LoginThrottleArgs,
}

impl ReplayArgs {
    /// The service's login rules; the per-address rates do not matter to a replay (they are
    /// counted in memory, not from the log).
    pub fn policy(&self) -> ThrottlePolicy {
        self.throttle.policy(0, 0)
    }
}

#[derive(Debug, Clone, Args)]
#[command(after_help = AUDIT_HELP)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// A head recorded earlier, as HASH@POSITION: fails if the log no longer contains it
    /// (rewritten from scratch, or its tail removed).
    #[arg(long)]
    pub expect: Option<ExpectedHead>,
    /// The log-signing public key (generation 1, base64url, as `authlog log-key show` and
    /// /.well-known/authlog-log-keys.json give it): every row must be covered by a signature
    /// of it, or of a key it vouched for [default: derived from the master key, if available].
    /// A key may begin with `-` (base64url's alphabet has it), and is taken as the value.
    #[arg(long, value_parser = parse_public_key, allow_hyphen_values = true)]
    pub public_key: Option<PublicKey>,
    /// A file of checkpoints (`AUTHLOG_CHECKPOINT_FILE`, or `authlog checkpoint --to`): the
    /// log must contain every one, unchanged.
    #[arg(long)]
    pub checkpoints: Option<std::path::PathBuf>,
}

/// A log-signing public key given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub ed25519_dalek::VerifyingKey);

fn parse_public_key(raw: &str) -> Result<PublicKey, String> {
    crate::events::signed::parse_key(raw).map(PublicKey)
}

impl Cli {
    /// The command to run, `serve` when none was named.
    pub fn into_command(self) -> CliCommand {
        self.command.unwrap_or(CliCommand::Serve(self.serve))
    }
}

#[derive(Debug, Clone, Args)]
#[command(after_help = SECRETS_HELP)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "AUTHLOG_BIND", default_value = defaults::BIND)]
    pub bind: String,
    /// bcrypt cost for new password hashes (4 to 31; each step doubles the work).
    #[arg(long, env = "AUTHLOG_BCRYPT_COST", default_value_t = defaults::BCRYPT_COST,
          value_parser = clap::value_parser!(u32).range(4..=31))]
    pub bcrypt_cost: u32,
    /// Lifetime of access tokens, in minutes.
    #[arg(long, env = "AUTHLOG_TOKEN_TTL_MINUTES", default_value_t = defaults::TOKEN_TTL_MINUTES,
          value_parser = clap::value_parser!(u64).range(1..=24 * 60))]
    pub token_ttl_minutes: u64,
    /// The `iss` claim of issued tokens, required on tokens presented.
    #[arg(long, env = "AUTHLOG_TOKEN_ISSUER", default_value = defaults::ISSUER)]
    pub token_issuer: String,
    /// The `aud` claim of issued tokens, required on tokens presented.
    #[arg(long, env = "AUTHLOG_TOKEN_AUDIENCE", default_value = defaults::ISSUER)]
    pub token_audience: String,
    /// What signs access tokens: the log's Ed25519 keys, which anyone may check with the
    /// public keys at /.well-known/jwks.json, or one shared HS256 secret (AUTHLOG_JWT_SECRET).
    #[arg(long, env = "AUTHLOG_TOKEN_ALGORITHM", value_enum, ignore_case = true,
          default_value_t = TokenAlgorithm::EdDsa)]
    pub token_algorithm: TokenAlgorithm,
    /// Days a signing key signs before the next one takes over (0: only on demand, with
    /// `authlog keys rotate`).
    #[arg(long, env = "AUTHLOG_KEY_ROTATION_DAYS", default_value_t = defaults::KEY_ROTATION_DAYS,
          value_parser = clap::value_parser!(u64).range(0..=3650))]
    pub key_rotation_days: u64,
    /// How long verifiers may cache the JWKS (its Cache-Control max-age), in seconds: a new
    /// key is published this long before it signs.
    #[arg(long, env = "AUTHLOG_JWKS_MAX_AGE_SECONDS",
          default_value_t = defaults::JWKS_MAX_AGE_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..=7 * 86_400))]
    pub jwks_max_age_seconds: u64,
    /// The URL clients reach this service at, for the discovery document's `jwks_uri` and
    /// `token_endpoint`, e.g. `https://auth.example.com` [default: `http://` and the address it
    /// listens on].
    #[arg(long, env = "AUTHLOG_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// HTTP worker threads [default: one per core].
    #[arg(long, env = "AUTHLOG_WORKERS", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub workers: Option<u64>,
    /// Seconds to let requests in flight finish after SIGTERM or SIGINT before exiting.
    #[arg(long, env = "AUTHLOG_SHUTDOWN_TIMEOUT_SECONDS",
          default_value_t = defaults::SHUTDOWN_TIMEOUT_SECONDS,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_timeout_seconds: u64,
    /// Where signed checkpoints of the log's head go (docs/auditing.md): a file, appended to
    /// and flushed (put it where the database's owner cannot write), or `-` for standard
    /// output [default: a log line].
    #[arg(long, env = "AUTHLOG_CHECKPOINT_FILE")]
    pub checkpoint_file: Option<String>,
    /// A checkpoint after this many events since the last (0: not by count).
    #[arg(
        long,
        env = "AUTHLOG_CHECKPOINT_EVERY_EVENTS",
        default_value_t = 10_000
    )]
    pub checkpoint_every_events: u32,
    /// A checkpoint after this many minutes, if the log moved (0: not by time). One is also
    /// written at start-up and at shutdown.
    #[arg(long, env = "AUTHLOG_CHECKPOINT_EVERY_MINUTES", default_value_t = 10)]
    pub checkpoint_every_minutes: u32,
    /// A snapshot of the folded state after this many events past the newest one (0: not by
    /// count), so that a start replays only the log's tail (README, "Operating authlog").
    #[arg(long, env = "AUTHLOG_SNAPSHOT_EVERY_EVENTS", default_value_t = 100_000)]
    pub snapshot_every_events: u32,
    /// A snapshot after this many minutes, if the log moved (0: not by time).
    #[arg(long, env = "AUTHLOG_SNAPSHOT_EVERY_MINUTES", default_value_t = 60)]
    pub snapshot_every_minutes: u32,
    /// PostgreSQL connections kept open (PostgreSQL only).
    #[arg(long, env = "AUTHLOG_DB_POOL_SIZE",
          default_value_t = PostgresSettings::DEFAULT_POOL_SIZE as u64,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub db_pool_size: u64,
    /// Seconds a store call may take (connect, wait for a connection, each statement, or the
    /// SQLite write lock) before the request gets 503.
    #[arg(long, env = "AUTHLOG_DB_TIMEOUT_SECONDS", default_value_t = DEFAULT_STORE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub db_timeout_seconds: u64,
    #[command(flatten)]
    pub throttle: LoginThrottleArgs,
    /// Sign-ups per client address in any minute (0: no limit).
    #[arg(long, env = "AUTHLOG_SIGNUP_RATE_PER_MINUTE",
          default_value_t = ThrottlePolicy::DEFAULT.signups_per_minute)]
    pub signup_rate_per_minute: u32,
    /// Login attempts per client address in any minute, past which they get 429 before any
    /// password check (0: no limit).
    #[arg(long, env = "AUTHLOG_LOGIN_RATE_PER_MINUTE",
          default_value_t = ThrottlePolicy::DEFAULT.logins_per_minute)]
    pub login_rate_per_minute: u32,
    /// Failed refreshes (unknown, expired, revoked or spent tokens) per client address in any
    /// minute, past which refreshes from it get 429 (0: no limit).
    #[arg(long, env = "AUTHLOG_REFRESH_FAILURES_PER_MINUTE",
          default_value_t = ThrottlePolicy::DEFAULT.refresh_failures_per_minute)]
    pub refresh_failures_per_minute: u32,
    /// A session whose refresh token is unused this long expires, in hours.
    #[arg(long, env = "AUTHLOG_SESSION_IDLE_HOURS",
          default_value_t = SessionPolicy::DEFAULT.idle.as_secs() / 3600,
          value_parser = clap::value_parser!(u64).range(1..=24 * 366))]
    pub session_idle_hours: u64,
    /// No session lives longer than this, however often it is refreshed, in days.
    #[arg(long, env = "AUTHLOG_SESSION_LIFETIME_DAYS",
          default_value_t = SessionPolicy::DEFAULT.lifetime.as_secs() / 86_400,
          value_parser = clap::value_parser!(u64).range(1..=366))]
    pub session_lifetime_days: u64,
    /// Two refreshes of one refresh token this many seconds apart are one client racing itself,
    /// not theft (0: any second use ends the session).
    #[arg(long, env = "AUTHLOG_REFRESH_REUSE_GRACE_SECONDS",
          default_value_t = SessionPolicy::DEFAULT.grace.as_secs(),
          value_parser = clap::value_parser!(u64).range(0..=300))]
    pub refresh_reuse_grace_seconds: u64,
    /// Proxies whose X-Forwarded-For is believed, as IP addresses or CIDR ranges, comma-separated
    /// [default: none: the TCP peer is the client].
    #[arg(long, env = "AUTHLOG_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,
    /// Connections one client address may hold at once; past it, requests get 429 and the
    /// connection is closed. Trusted proxies are exempt (0: no limit).
    #[arg(long, env = "AUTHLOG_MAX_CONNECTIONS_PER_ADDRESS",
          default_value_t = defaults::MAX_CONNECTIONS_PER_ADDRESS)]
    pub max_connections_per_address: usize,
    /// The embedded store's directory (events.db and the generated token key).
    #[command(flatten)]
    pub store: StoreArgs,
}

/// The login throttling settings, shared by `serve` and `replay` so both judge by one rule.
#[derive(Debug, Clone, Args)]
pub struct LoginThrottleArgs {
    /// Consecutive failed logins per account and client address before that address must wait
    /// (0: no limit).
    #[arg(long, env = "AUTHLOG_LOGIN_MAX_FAILURES",
          default_value_t = ThrottlePolicy::DEFAULT.login_max_failures)]
    pub login_max_failures: u32,
    /// The first wait, in seconds, once an address reached the limit; it doubles with each
    /// further failure.
    #[arg(long, env = "AUTHLOG_LOGIN_LOCKOUT_SECONDS",
          default_value_t = ThrottlePolicy::DEFAULT.lockout_base.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub login_lockout_seconds: u64,
    /// The longest wait, in seconds.
    #[arg(long, env = "AUTHLOG_LOGIN_LOCKOUT_MAX_SECONDS",
          default_value_t = ThrottlePolicy::DEFAULT.lockout_max.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub login_lockout_max_seconds: u64,
    /// Failed logins per account in any hour, from addresses that never logged in to it, before
    /// such addresses get 429 (0: no limit).
    #[arg(long, env = "AUTHLOG_ACCOUNT_MAX_FAILURES_PER_HOUR",
          default_value_t = ThrottlePolicy::DEFAULT.account_failures_per_hour)]
    pub account_max_failures_per_hour: u32,
}

impl LoginThrottleArgs {
    /// The policy these settings describe, with these per-address rates (sign-ups, logins).
    pub fn policy(&self, signups_per_minute: u32, logins_per_minute: u32) -> ThrottlePolicy {
        ThrottlePolicy {
            login_max_failures: self.login_max_failures,
            lockout_base: Duration::from_secs(self.login_lockout_seconds),
            lockout_max: Duration::from_secs(self.login_lockout_max_seconds),
            account_failures_per_hour: self.account_max_failures_per_hour,
            signups_per_minute,
            logins_per_minute,
            refresh_failures_per_minute: ThrottlePolicy::DEFAULT.refresh_failures_per_minute,
        }
    }
}

impl ServeArgs {
    /// Combines the parsed flags with the secrets from the environment.
    pub fn settings_from_env(self) -> Result<Settings, ConfigError> {
        self.settings(Secrets::from_env())
    }

    /// [`ServeArgs::settings_from_env`] without the environment, so the rules can be tested.
    pub fn settings(self, secrets: Secrets) -> Result<Settings, ConfigError> {
        let algorithm = KeyAlgorithm::from(self.token_algorithm);
        let master_key = self.store.master_key(&secrets)?;
        let Secrets {
            database_url,
            jwt_secret,
            ..
        } = secrets;
        let data_dir_secret = key_file(&self.store.data_dir);
        let jwt_secret = match (&database_url, jwt_secret, algorithm) {
            (_, Some(secret), _) => JwtSecretSource::Given(JwtSecret::parse(secret)?),
            (Some(_), None, KeyAlgorithm::HS256) => return Err(ConfigError::MissingJwtSecret),
            (Some(_), None, KeyAlgorithm::EdDSA) => JwtSecretSource::None,
            (None, None, KeyAlgorithm::HS256) => JwtSecretSource::File(data_dir_secret),
            (None, None, KeyAlgorithm::EdDSA) => JwtSecretSource::IfPresent(data_dir_secret),
        };
        let rotation = Duration::from_secs(self.key_rotation_days * 86_400);
        let lead = Duration::from_secs(self.jwks_max_age_seconds);
        if !rotation.is_zero() && lead >= rotation {
            return Err(ConfigError::LeadLongerThanRotation {
                lead: lead.as_secs(),
                rotation: rotation.as_secs(),
            });
        }
        let public_url = self
            .public_url
            .as_deref()
            .map(parse_public_url)
            .transpose()?;
        let store = self.store.settings(
            database_url,
            Duration::from_secs(self.db_timeout_seconds),
            usize::try_from(self.db_pool_size).unwrap_or(PostgresSettings::DEFAULT_POOL_SIZE),
        );
        let mut settings = Settings::new(store, master_key);
        settings.jwt_secret = jwt_secret;
        settings.token_algorithm = algorithm;
        settings.key_rotation = (!rotation.is_zero()).then_some(rotation);
        settings.jwks_max_age = lead;
        settings.public_url = public_url;
        settings.bind = self.bind;
        settings.bcrypt_cost = self.bcrypt_cost;
        settings.token_ttl = Duration::from_secs(self.token_ttl_minutes * 60);
        settings.shutdown_timeout = Duration::from_secs(self.shutdown_timeout_seconds);
        settings.checkpoints = crate::checkpoint::CheckpointPolicy {
            sink: self
                .checkpoint_file
                .as_deref()
                .map_or(crate::checkpoint::Sink::Log, crate::checkpoint::Sink::parse),
            every_events: i64::from(self.checkpoint_every_events),
            every: Duration::from_secs(u64::from(self.checkpoint_every_minutes) * 60),
        };
        settings.snapshots = crate::snapshot::SnapshotPolicy {
            every_events: i64::from(self.snapshot_every_events),
            every: Duration::from_secs(u64::from(self.snapshot_every_minutes) * 60),
        };
        settings.throttle = self
            .throttle
            .policy(self.signup_rate_per_minute, self.login_rate_per_minute);
        settings.throttle.refresh_failures_per_minute = self.refresh_failures_per_minute;
        settings.sessions = SessionPolicy {
            idle: Duration::from_secs(self.session_idle_hours * 3600),
            lifetime: Duration::from_secs(self.session_lifetime_days * 86_400),
            grace: Duration::from_secs(self.refresh_reuse_grace_seconds),
        };
        settings.trusted_proxies = self.trusted_proxies;
        settings.max_connections_per_address = self.max_connections_per_address;
        settings.token_issuer = self.token_issuer;
        settings.token_audience = self.token_audience;
        if let Some(workers) = self.workers {
            settings.workers = usize::try_from(workers).unwrap_or(1);
        }
        Ok(settings)
    }
}

/// An environment variable that is set and not empty.
fn env_secret(name: &str) -> Option<SecretString> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.is_empty())
        .map(SecretString::from)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use std::path::Path;

    use super::*;

    #[test]
    fn a_public_key_that_begins_with_a_hyphen_is_a_value_not_a_flag() {
        use crate::events::signed::{LogSigner, encode_key};
        // One key in 64 begins with '-' in base64url: the case a random test key once hit.
        let key = std::iter::repeat_with(|| {
            encode_key(&LogSigner::new(&crate::vault::MasterKey::random()).public_key(1))
        })
        .take(10_000)
        .find(|key| key.starts_with('-'))
        .expect("a key beginning with '-'");
        for args in [&["verify"][..], &["replay", "--to", "1"]] {
            let cli = Cli::try_parse_from(
                ["authlog"]
                    .iter()
                    .chain(args)
                    .chain(&["--public-key", key.as_str()]),
            );
            assert!(cli.is_ok(), "{args:?}: {:?}", cli.err());
        }
    }

    #[test]
    fn import_takes_one_source_and_names_it_without_credentials() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["authlog", "import"].iter().chain(args)).map(|cli| {
                let CliCommand::Import(import) = cli.into_command() else {
                    panic!("import");
                };
                import.plan()
            })
        };
        let refused = parse(&["--from-postgres", "postgres://u:s3cret@h:notaport/db"])
            .expect("clap takes the value as it is")
            .expect_err("not a URL");
        assert!(!refused.contains("s3cret"), "{refused}");
        let (source, options) = parse(&["--from-postgres", "postgres://app:pw@db/fastapi_auth"])
            .expect("parses")
            .expect("a URL");
        assert_eq!(options.source_name, "postgresql:fastapi_auth/users");
        assert!(!options.strict && !options.dry_run);
        let crate::import::Source::Postgres { table, columns, .. } = source else {
            panic!("a PostgreSQL source");
        };
        assert_eq!(
            (table.as_str(), columns),
            ("users", crate::import::Columns::default())
        );
        let (_, options) = parse(&[
            "--csv",
            "/tmp/users.csv",
            "--strict",
            "--dry-run",
            "--source",
            "legacy",
        ])
        .expect("parses")
        .expect("a file");
        assert_eq!(options.source_name, "legacy");
        assert!(options.strict && options.dry_run);
        for bad in [
            &[][..],
            &["--jsonl", "a.jsonl", "--csv", "b.csv"],
            &["--jsonl", "a.jsonl", "--table", "people"],
            &["--columns", "id,email,hash"],
            &[
                "--from-postgres",
                "postgres://db/x",
                "--columns",
                "id,email",
            ],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_serve_with_defaults() {
        let cli = Cli::try_parse_from(["authlog"]).expect("parses");
        let CliCommand::Serve(args) = cli.into_command() else {
            panic!("serve");
        };
        assert_eq!(args.bcrypt_cost, 12);
        assert_eq!(args.token_ttl_minutes, 30);
    }

    #[test]
    fn a_key_id_that_starts_with_a_dash_is_an_id_not_a_flag() {
        let kid = "-ZtR3n42Uyij5QguMSHWgmqqNICAAgoR_l2tlr5IQqk";
        for args in [
            vec!["authlog", "keys", "retire", kid],
            vec!["authlog", "keys", "retire", "--data-dir", "/tmp/x", kid],
        ] {
            let cli = Cli::try_parse_from(&args).expect("parses");
            let CliCommand::Keys(KeysArgs {
                command: KeysCommand::Retire(retire),
            }) = cli.into_command()
            else {
                panic!("keys retire");
            };
            assert_eq!(retire.key_id.as_str(), kid);
        }
    }

    #[test]
    fn admin_commands_parse_the_email_and_the_role_once() {
        let cli = Cli::try_parse_from([
            "authlog",
            "admin",
            "grant-role",
            "--email",
            "Boss@Example.com",
            "--role",
            "admin",
        ])
        .expect("parses");
        let CliCommand::Admin(AdminArgs {
            command: AdminCommand::GrantRole(args),
        }) = cli.into_command()
        else {
            panic!("admin grant-role");
        };
        assert_eq!(args.email, Email::parse("boss@example.com").expect("valid"));
        assert!(args.role.is_admin());
        for bad in [
            ["--email", "not-an-email", "--role", "admin"],
            ["--email", "a@example.com", "--role", "Admin"],
        ] {
            let args = ["authlog", "admin", "revoke-role"].into_iter().chain(bad);
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
    }

    fn serve_args(flags: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(std::iter::once("authlog").chain(flags.iter().copied()))
            .expect("parses");
        let CliCommand::Serve(args) = cli.into_command() else {
            panic!("serve");
        };
        args
    }

    fn secret(value: &str) -> Option<SecretString> {
        Some(SecretString::from(value))
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    /// PostgreSQL with a master key, and `jwt_secret` if given.
    fn on_postgres(jwt_secret: Option<&str>) -> Secrets {
        Secrets {
            database_url: secret("postgres://postgres@127.0.0.1/authlog"),
            master_key: secret(KEY),
            jwt_secret: jwt_secret.and_then(secret),
        }
    }

    #[test]
    fn postgres_needs_a_long_enough_master_key_and_an_hs256_secret_only_for_hs256() {
        let no_master = Secrets {
            master_key: None,
            ..on_postgres(None)
        };
        let error = serve_args(&[]).settings(no_master).err();
        assert!(matches!(error, Some(ConfigError::MissingMasterKey)));
        let short = Secrets {
            master_key: secret("short"),
            ..on_postgres(None)
        };
        let message = serve_args(&[])
            .settings(short)
            .err()
            .expect("refused")
            .to_string();
        assert_eq!(
            message,
            "AUTHLOG_MASTER_KEY must be at least 32 bytes, got 5"
        );
        let settings = serve_args(&[]).settings(on_postgres(None)).expect("valid");
        assert!(matches!(settings.store, StoreSettings::Postgres(_)));
        assert!(matches!(settings.master_key, MasterKeySource::Given(_)));
        assert!(matches!(settings.jwt_secret, JwtSecretSource::None));
        assert_eq!(settings.token_algorithm, KeyAlgorithm::EdDSA);

        let hs256 = || serve_args(&["--token-algorithm", "HS256"]);
        let error = hs256().settings(on_postgres(None)).err();
        assert!(matches!(error, Some(ConfigError::MissingJwtSecret)));
        let message = hs256()
            .settings(on_postgres(Some("short")))
            .err()
            .expect("refused")
            .to_string();
        assert_eq!(
            message,
            "AUTHLOG_JWT_SECRET must be at least 32 bytes, got 5"
        );
        let settings = hs256().settings(on_postgres(Some(KEY))).expect("valid");
        assert_eq!(settings.token_algorithm, KeyAlgorithm::HS256);
        assert!(matches!(settings.jwt_secret, JwtSecretSource::Given(_)));
        let settings = serve_args(&["--token-algorithm", "eddsa"])
            .settings(on_postgres(Some(KEY)))
            .expect("valid");
        assert_eq!(settings.token_algorithm, KeyAlgorithm::EdDSA);
        assert!(
            matches!(settings.jwt_secret, JwtSecretSource::Given(_)),
            "kept to check the tokens it signed"
        );
    }

    #[test]
    fn without_a_database_url_the_log_and_keys_are_in_the_data_dir() {
        let settings = serve_args(&[]).settings(Secrets::default()).expect("valid");
        let StoreSettings::Sqlite(sqlite) = &settings.store else {
            panic!("expected the embedded store");
        };
        assert_eq!(sqlite.path, Path::new("authlog-data/events.db"));
        let MasterKeySource::File(master) = &settings.master_key else {
            panic!("expected a generated master key file");
        };
        assert_eq!(master, Path::new("authlog-data/master-key"));
        let JwtSecretSource::IfPresent(key) = &settings.jwt_secret else {
            panic!("expected an HS256 secret read only if present");
        };
        assert_eq!(key, Path::new("authlog-data/jwt-secret"));
        let settings = serve_args(&["--token-algorithm", "HS256"])
            .settings(Secrets::default())
            .expect("valid");
        assert!(matches!(settings.jwt_secret, JwtSecretSource::File(_)));

        let args = serve_args(&["--data-dir", "/var/lib/authlog"]);
        let settings = args
            .settings(Secrets {
                jwt_secret: secret(KEY),
                master_key: secret(KEY),
                ..Secrets::default()
            })
            .expect("valid");
        let StoreSettings::Sqlite(sqlite) = &settings.store else {
            panic!("expected the embedded store");
        };
        assert_eq!(sqlite.path, Path::new("/var/lib/authlog/events.db"));
        assert!(matches!(settings.jwt_secret, JwtSecretSource::Given(_)));
        assert!(matches!(settings.master_key, MasterKeySource::Given(_)));
        let error = serve_args(&[])
            .settings(Secrets {
                jwt_secret: secret("short"),
                ..Secrets::default()
            })
            .err();
        assert!(matches!(error, Some(ConfigError::WeakJwtSecret(_))));
    }

    #[test]
    fn key_settings_reach_the_settings_and_are_checked_together() {
        let settings = serve_args(&[]).settings(Secrets::default()).expect("valid");
        assert_eq!(
            settings.key_rotation,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(settings.jwks_max_age, Duration::from_secs(3600));
        assert_eq!(settings.public_url, None);
        let settings = serve_args(&[
            "--key-rotation-days",
            "0",
            "--jwks-max-age-seconds",
            "5",
            "--public-url",
            "https://auth.example.com/",
        ])
        .settings(Secrets::default())
        .expect("valid");
        assert_eq!(settings.key_rotation, None, "0: only on demand");
        assert_eq!(settings.jwks_max_age, Duration::from_secs(5));
        assert_eq!(
            settings.public_url.as_deref(),
            Some("https://auth.example.com")
        );
        let error = serve_args(&[
            "--key-rotation-days",
            "1",
            "--jwks-max-age-seconds",
            "86400",
        ])
        .settings(Secrets::default())
        .err();
        assert!(matches!(
            error,
            Some(ConfigError::LeadLongerThanRotation { .. })
        ));
        let error = serve_args(&["--public-url", "auth.example.com"])
            .settings(Secrets::default())
            .err();
        assert!(matches!(error, Some(ConfigError::PublicUrl(_))));
    }

    #[test]
    fn flags_reach_the_settings() {
        let args = serve_args(&[
            "--bind",
            "0.0.0.0:9000",
            "--bcrypt-cost",
            "4",
            "--token-ttl-minutes",
            "5",
            "--workers",
            "3",
        ]);
        let settings = args.settings(on_postgres(None)).expect("valid");
        assert_eq!(settings.bind, "0.0.0.0:9000");
        assert_eq!(settings.bcrypt_cost, 4);
        assert_eq!(settings.token_ttl, Duration::from_secs(300));
        assert_eq!(settings.workers, 3);
    }

    #[test]
    fn operations_settings_reach_the_store_and_the_server() {
        let args = serve_args(&[
            "--db-pool-size",
            "8",
            "--db-timeout-seconds",
            "2",
            "--shutdown-timeout-seconds",
            "10",
        ]);
        let settings = args.clone().settings(on_postgres(None)).expect("valid");
        let StoreSettings::Postgres(postgres) = &settings.store else {
            panic!("expected PostgreSQL");
        };
        assert_eq!(postgres.pool_size, 8);
        assert_eq!(postgres.timeout, Duration::from_secs(2));
        assert_eq!(settings.shutdown_timeout, Duration::from_secs(10));
        let settings = args.settings(Secrets::default()).expect("valid");
        let StoreSettings::Sqlite(sqlite) = &settings.store else {
            panic!("expected the embedded store");
        };
        assert_eq!(sqlite.timeout, Duration::from_secs(2));
    }

    #[test]
    fn out_of_range_values_name_the_setting() {
        let error = Cli::try_parse_from(["authlog", "serve", "--bcrypt-cost", "3"])
            .expect_err("too low")
            .to_string();
        assert!(error.contains("--bcrypt-cost"), "{error}");
        let error = Cli::try_parse_from(["authlog", "--log-format", "xml"])
            .expect_err("unknown format")
            .to_string();
        assert!(error.contains("--log-format"), "{error}");
        let error = Cli::try_parse_from(["authlog", "--db-pool-size", "0"])
            .expect_err("too small")
            .to_string();
        assert!(error.contains("--db-pool-size"), "{error}");
    }
}
