//! Settings, from command-line flags and environment variables, checked once at start-up.
//!
//! Secrets (`DATABASE_URL`, `AUTHLOG_JWT_SECRET`) are read from the environment only, never from
//! flags, so they do not show up in `ps` or shell history, and they are never printed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use secrecy::SecretString;

use crate::actors::{JwtSecret, JwtSecretError};
use crate::events::{EventStore, PostgresSettings, SqliteSettings};
use crate::keyfile;
use crate::throttle::ThrottlePolicy;

const SECRETS_HELP: &str = "\
Secrets, read from the environment only:
  DATABASE_URL        PostgreSQL URL holding the event log, e.g.
                      postgres://postgres@127.0.0.1:5432/authlog
                      [default: unset, the embedded SQLite log in --data-dir]
  AUTHLOG_JWT_SECRET  HMAC key for access tokens, at least 32 bytes, e.g. from
                      `openssl rand -hex 32`. Required with PostgreSQL; on the
                      embedded log a key is generated once into --data-dir/jwt-secret

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
}

/// Which log an audit command reads: PostgreSQL when DATABASE_URL is set, else the embedded one.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory of the embedded store (when DATABASE_URL is unset).
    #[arg(long, env = "AUTHLOG_DATA_DIR", default_value = "authlog-data")]
    pub data_dir: PathBuf,
}

impl StoreArgs {
    pub fn store_settings(&self) -> StoreSettings {
        match env_secret("DATABASE_URL") {
            Some(url) => StoreSettings::Postgres(PostgresSettings::new(url)),
            None => StoreSettings::Sqlite(SqliteSettings::in_dir(&self.data_dir)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Jsonl,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = SECRETS_HELP)]
pub struct EventsArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// First position to list.
    #[arg(long)]
    pub from: Option<i64>,
    /// Last position to list.
    #[arg(long)]
    pub to: Option<i64>,
    /// Only events recorded at or after this time (RFC 3339, e.g. 2026-11-27T09:00:00Z).
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// Only events recorded at or before this time.
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    /// Only this user's events: an email or a user id.
    #[arg(long)]
    pub user: Option<String>,
    /// Only events of this type, e.g. LoginFailed.
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// A readable table, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = SECRETS_HELP)]
#[command(group(clap::ArgGroup::new("point").required(true).args(["at", "to"])))]
pub struct ReplayArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Replay the events recorded up to this time (RFC 3339).
    #[arg(long)]
    pub at: Option<DateTime<Utc>>,
    /// Replay the events up to this position.
    #[arg(long)]
    pub to: Option<i64>,
    /// Show this user's history and whether they could log in then: an email or a user id.
    #[arg(long)]
    pub user: Option<String>,
    /// The login throttling rules to judge by: the service's, from the same settings.
    #[command(flatten)]
    pub throttle: LoginThrottleArgs,
}

impl ReplayArgs {
    /// The service's login rules; sign-ups do not matter to a replay.
    pub fn policy(&self) -> ThrottlePolicy {
        self.throttle.policy(0)
    }
}

#[derive(Debug, Clone, Args)]
#[command(after_help = SECRETS_HELP)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// A head recorded earlier, as HASH@POSITION: fails if the log no longer contains it
    /// (rewritten from scratch, or its tail removed).
    #[arg(long)]
    pub expect: Option<String>,
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
    #[arg(long, env = "AUTHLOG_BIND", default_value = "127.0.0.1:8000")]
    pub bind: String,
    /// bcrypt cost for new password hashes (4 to 31; each step doubles the work).
    #[arg(long, env = "AUTHLOG_BCRYPT_COST", default_value_t = 12,
          value_parser = clap::value_parser!(u32).range(4..=31))]
    pub bcrypt_cost: u32,
    /// Lifetime of access tokens, in minutes.
    #[arg(long, env = "AUTHLOG_TOKEN_TTL_MINUTES", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=24 * 60))]
    pub token_ttl_minutes: u64,
    /// The `iss` claim of issued tokens, required on tokens presented.
    #[arg(long, env = "AUTHLOG_TOKEN_ISSUER", default_value = "authlog")]
    pub token_issuer: String,
    /// The `aud` claim of issued tokens, required on tokens presented.
    #[arg(long, env = "AUTHLOG_TOKEN_AUDIENCE", default_value = "authlog")]
    pub token_audience: String,
    /// HTTP worker threads [default: one per core].
    #[arg(long, env = "AUTHLOG_WORKERS", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub workers: Option<u64>,
    /// Seconds to let requests in flight finish after SIGTERM or SIGINT before exiting.
    #[arg(long, env = "AUTHLOG_SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_timeout_seconds: u64,
    /// PostgreSQL connections kept open (PostgreSQL only).
    #[arg(long, env = "AUTHLOG_DB_POOL_SIZE", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub db_pool_size: u64,
    /// Seconds a store call may take (connect, wait for a connection, each statement, or the
    /// SQLite write lock) before the request gets 503.
    #[arg(long, env = "AUTHLOG_DB_TIMEOUT_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub db_timeout_seconds: u64,
    #[command(flatten)]
    pub throttle: LoginThrottleArgs,
    /// Sign-ups per client address in any minute (0: no limit).
    #[arg(long, env = "AUTHLOG_SIGNUP_RATE_PER_MINUTE", default_value_t = 20)]
    pub signup_rate_per_minute: u32,
    /// Proxies whose X-Forwarded-For is believed, as IP addresses or CIDR ranges, comma-separated
    /// [default: none: the TCP peer is the client].
    #[arg(long, env = "AUTHLOG_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,
    /// Directory of the embedded store (events.db) and its generated token key, used when
    /// DATABASE_URL is unset. Created with mode 0700 if missing.
    #[arg(long, env = "AUTHLOG_DATA_DIR", default_value = "authlog-data")]
    pub data_dir: PathBuf,
}

/// The login throttling settings, shared by `serve` and `replay` so both judge by one rule.
#[derive(Debug, Clone, Args)]
pub struct LoginThrottleArgs {
    /// Consecutive failed logins per account and client address before that address must wait
    /// (0: no limit).
    #[arg(long, env = "AUTHLOG_LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: u32,
    /// The first wait, in seconds, once an address reached the limit; it doubles with each
    /// further failure.
    #[arg(long, env = "AUTHLOG_LOGIN_LOCKOUT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub login_lockout_seconds: u64,
    /// The longest wait, in seconds.
    #[arg(long, env = "AUTHLOG_LOGIN_LOCKOUT_MAX_SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub login_lockout_max_seconds: u64,
    /// Failed logins per account in any hour, from addresses that never logged in to it, before
    /// such addresses get 429 (0: no limit).
    #[arg(
        long,
        env = "AUTHLOG_ACCOUNT_MAX_FAILURES_PER_HOUR",
        default_value_t = 100
    )]
    pub account_max_failures_per_hour: u32,
}

impl LoginThrottleArgs {
    /// The policy these settings describe, with this sign-up rate.
    pub fn policy(&self, signups_per_minute: u32) -> ThrottlePolicy {
        ThrottlePolicy {
            login_max_failures: self.login_max_failures,
            lockout_base: Duration::from_secs(self.login_lockout_seconds),
            lockout_max: Duration::from_secs(self.login_lockout_max_seconds),
            account_failures_per_hour: self.account_max_failures_per_hour,
            signups_per_minute,
        }
    }
}

/// Where the event log lives.
#[derive(Clone)]
pub enum StoreSettings {
    Postgres(PostgresSettings),
    /// The embedded SQLite log: the default, needing nothing installed.
    Sqlite(SqliteSettings),
    /// A store built by the caller (tests, embedding programs), such as an in-memory one.
    Provided(Arc<dyn EventStore>),
}

/// Where the token signing key comes from.
#[derive(Debug, Clone)]
pub enum JwtSecretSource {
    /// Given by the operator (`AUTHLOG_JWT_SECRET`) or the embedding program.
    Given(JwtSecret),
    /// Read from this file, generated there (mode 0600) on first start. Only chosen for the
    /// embedded store; a shared PostgreSQL log needs one key that every instance is given.
    File(PathBuf),
}

impl From<JwtSecret> for JwtSecretSource {
    fn from(secret: JwtSecret) -> Self {
        Self::Given(secret)
    }
}

/// The generated key's place in a data directory.
pub fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join(keyfile::FILE_NAME)
}

/// Everything `Application::build` needs.
#[derive(Clone)]
pub struct Settings {
    pub bind: String,
    pub store: StoreSettings,
    pub jwt_secret: JwtSecretSource,
    pub token_ttl: Duration,
    pub bcrypt_cost: u32,
    pub workers: usize,
    /// Longest an HTTP handler waits on an actor before answering 503. It covers queueing for
    /// bcrypt, so it is generous.
    pub actor_timeout: Duration,
    /// How long requests in flight may take to finish once shutdown starts.
    pub shutdown_timeout: Duration,
    /// `iss` and `aud` of tokens.
    pub token_issuer: String,
    pub token_audience: String,
    /// Brute-force limits.
    pub throttle: ThrottlePolicy,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "AUTHLOG_JWT_SECRET is not set: it is required with PostgreSQL, so that tokens stay valid \
         across restarts and replicas (generate one with `openssl rand -hex 32`)"
    )]
    MissingJwtSecret,
    #[error(transparent)]
    WeakJwtSecret(#[from] JwtSecretError),
}

impl Settings {
    /// Defaults for everything but the two things with no safe default.
    pub fn new(store: StoreSettings, jwt_secret: impl Into<JwtSecretSource>) -> Self {
        Self {
            bind: "127.0.0.1:8000".to_owned(),
            store,
            jwt_secret: jwt_secret.into(),
            token_ttl: Duration::from_secs(30 * 60),
            bcrypt_cost: bcrypt::DEFAULT_COST,
            workers: available_cores(),
            actor_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            token_issuer: crate::actors::DEFAULT_ISSUER.to_owned(),
            token_audience: crate::actors::DEFAULT_ISSUER.to_owned(),
            throttle: ThrottlePolicy::default(),
            trusted_proxies: Vec::new(),
        }
    }

    /// Combines parsed flags with the secrets from the environment.
    pub fn from_env(args: ServeArgs) -> Result<Self, ConfigError> {
        Self::from_parts(
            args,
            env_secret("DATABASE_URL"),
            env_secret("AUTHLOG_JWT_SECRET"),
        )
    }

    /// [`Settings::from_env`] without the environment, so the rules can be tested.
    pub fn from_parts(
        args: ServeArgs,
        database_url: Option<SecretString>,
        jwt_secret: Option<SecretString>,
    ) -> Result<Self, ConfigError> {
        let store_timeout = Duration::from_secs(args.db_timeout_seconds);
        let (store, jwt_secret) = match (database_url, jwt_secret) {
            (Some(url), Some(secret)) => (
                StoreSettings::Postgres(PostgresSettings {
                    pool_size: usize::try_from(args.db_pool_size).unwrap_or(4),
                    timeout: store_timeout,
                    ..PostgresSettings::new(url)
                }),
                JwtSecretSource::Given(JwtSecret::parse(secret)?),
            ),
            (Some(_), None) => return Err(ConfigError::MissingJwtSecret),
            (None, secret) => (
                StoreSettings::Sqlite(SqliteSettings {
                    timeout: store_timeout,
                    ..SqliteSettings::in_dir(&args.data_dir)
                }),
                match secret {
                    Some(secret) => JwtSecretSource::Given(JwtSecret::parse(secret)?),
                    None => JwtSecretSource::File(key_file(&args.data_dir)),
                },
            ),
        };
        let mut settings = Self::new(store, jwt_secret);
        settings.bind = args.bind;
        settings.bcrypt_cost = args.bcrypt_cost;
        settings.token_ttl = Duration::from_secs(args.token_ttl_minutes * 60);
        settings.shutdown_timeout = Duration::from_secs(args.shutdown_timeout_seconds);
        settings.throttle = args.throttle.policy(args.signup_rate_per_minute);
        settings.trusted_proxies = args.trusted_proxies;
        settings.token_issuer = args.token_issuer;
        settings.token_audience = args.token_audience;
        if let Some(workers) = args.workers {
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

pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

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

    #[test]
    fn postgres_needs_a_long_enough_secret() {
        let url = secret("postgres://postgres@127.0.0.1/authlog");
        let key = secret("0123456789abcdef0123456789abcdef");
        let error = Settings::from_parts(serve_args(&[]), url.clone(), None).err();
        assert!(matches!(error, Some(ConfigError::MissingJwtSecret)));
        let error = Settings::from_parts(serve_args(&[]), url.clone(), secret("short")).err();
        let message = error.expect("refused").to_string();
        assert_eq!(
            message,
            "AUTHLOG_JWT_SECRET must be at least 32 bytes, got 5"
        );
        let settings = Settings::from_parts(serve_args(&[]), url, key).expect("valid");
        assert!(matches!(settings.store, StoreSettings::Postgres(_)));
        assert!(matches!(settings.jwt_secret, JwtSecretSource::Given(_)));
    }

    #[test]
    fn without_a_database_url_the_log_is_embedded_in_the_data_dir() {
        let settings = Settings::from_parts(serve_args(&[]), None, None).expect("valid");
        let StoreSettings::Sqlite(sqlite) = &settings.store else {
            panic!("expected the embedded store");
        };
        assert_eq!(sqlite.path, Path::new("authlog-data/events.db"));
        let JwtSecretSource::File(key) = &settings.jwt_secret else {
            panic!("expected a generated key file");
        };
        assert_eq!(key, Path::new("authlog-data/jwt-secret"));

        let args = serve_args(&["--data-dir", "/var/lib/authlog"]);
        let settings = Settings::from_parts(args, None, secret("0123456789abcdef0123456789abcdef"))
            .expect("valid");
        let StoreSettings::Sqlite(sqlite) = &settings.store else {
            panic!("expected the embedded store");
        };
        assert_eq!(sqlite.path, Path::new("/var/lib/authlog/events.db"));
        assert!(matches!(settings.jwt_secret, JwtSecretSource::Given(_)));
        let error = Settings::from_parts(serve_args(&[]), None, secret("short")).err();
        assert!(matches!(error, Some(ConfigError::WeakJwtSecret(_))));
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
        let settings = Settings::from_parts(
            args,
            secret("postgres://postgres@127.0.0.1/authlog"),
            secret("0123456789abcdef0123456789abcdef"),
        )
        .expect("valid");
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
        let url = secret("postgres://postgres@127.0.0.1/authlog");
        let key = secret("0123456789abcdef0123456789abcdef");
        let settings = Settings::from_parts(args.clone(), url, key).expect("valid");
        let StoreSettings::Postgres(postgres) = &settings.store else {
            panic!("expected PostgreSQL");
        };
        assert_eq!(postgres.pool_size, 8);
        assert_eq!(postgres.timeout, Duration::from_secs(2));
        assert_eq!(settings.shutdown_timeout, Duration::from_secs(10));
        let settings = Settings::from_parts(args, None, None).expect("valid");
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
