//! Settings, from command-line flags and environment variables, checked once at start-up.
//!
//! Secrets (`DATABASE_URL`, `AUTHLOG_JWT_SECRET`) are read from the environment only, never from
//! flags, so they do not show up in `ps` or shell history, and they are never printed.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

use crate::actors::{JwtSecret, JwtSecretError};
use crate::events::{EventStore, PostgresSettings};

const SECRETS_HELP: &str = "\
Secrets, read from the environment only:
  DATABASE_URL        PostgreSQL URL holding the event log (required),
                      e.g. postgres://postgres@127.0.0.1:5432/authlog
  AUTHLOG_JWT_SECRET  HMAC key for access tokens, at least 32 bytes (required),
                      e.g. from `openssl rand -hex 32`";

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
    /// `authlog` with no subcommand serves, with these arguments.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the HTTP service (the default).
    Serve(ServeArgs),
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
    /// HTTP worker threads [default: one per core].
    #[arg(long, env = "AUTHLOG_WORKERS", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub workers: Option<u64>,
}

/// Where the event log lives.
#[derive(Clone)]
pub enum StoreSettings {
    Postgres(PostgresSettings),
    /// A store built by the caller (tests, embedding programs), such as an in-memory one.
    Provided(Arc<dyn EventStore>),
}

/// Everything `Application::build` needs.
#[derive(Clone)]
pub struct Settings {
    pub bind: String,
    pub store: StoreSettings,
    pub jwt_secret: JwtSecret,
    pub token_ttl: Duration,
    pub bcrypt_cost: u32,
    pub workers: usize,
    /// Longest an HTTP handler waits on an actor before answering 503. It covers queueing for
    /// bcrypt, so it is generous.
    pub actor_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "DATABASE_URL is not set: authlog keeps its event log in PostgreSQL \
         (e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/authlog)"
    )]
    MissingDatabaseUrl,
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
    pub fn new(store: StoreSettings, jwt_secret: JwtSecret) -> Self {
        Self {
            bind: "127.0.0.1:8000".to_owned(),
            store,
            jwt_secret,
            token_ttl: Duration::from_secs(30 * 60),
            bcrypt_cost: bcrypt::DEFAULT_COST,
            workers: available_cores(),
            actor_timeout: Duration::from_secs(30),
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
        let database_url = database_url.ok_or(ConfigError::MissingDatabaseUrl)?;
        let jwt_secret = jwt_secret.ok_or(ConfigError::MissingJwtSecret)?;
        let store = StoreSettings::Postgres(PostgresSettings::new(database_url));
        let mut settings = Self::new(store, JwtSecret::parse(jwt_secret)?);
        settings.bind = args.bind;
        settings.bcrypt_cost = args.bcrypt_cost;
        settings.token_ttl = Duration::from_secs(args.token_ttl_minutes * 60);
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
        let CliCommand::Serve(args) = cli.into_command();
        assert_eq!(args.bcrypt_cost, 12);
        assert_eq!(args.token_ttl_minutes, 30);
    }

    fn serve_args(flags: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(std::iter::once("authlog").chain(flags.iter().copied()))
            .expect("parses");
        let CliCommand::Serve(args) = cli.into_command();
        args
    }

    fn secret(value: &str) -> Option<SecretString> {
        Some(SecretString::from(value))
    }

    #[test]
    fn postgres_needs_a_database_url_and_a_long_enough_secret() {
        let url = secret("postgres://postgres@127.0.0.1/authlog");
        let key = secret("0123456789abcdef0123456789abcdef");
        let error = Settings::from_parts(serve_args(&[]), None, key.clone()).err();
        assert!(matches!(error, Some(ConfigError::MissingDatabaseUrl)));
        let error = Settings::from_parts(serve_args(&[]), url.clone(), None).err();
        assert!(matches!(error, Some(ConfigError::MissingJwtSecret)));
        let error = Settings::from_parts(serve_args(&[]), url.clone(), secret("short")).err();
        let message = error.expect("refused").to_string();
        assert_eq!(
            message,
            "AUTHLOG_JWT_SECRET must be at least 32 bytes, got 5"
        );
        assert!(Settings::from_parts(serve_args(&[]), url, key).is_ok());
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
    fn out_of_range_values_name_the_setting() {
        let error = Cli::try_parse_from(["authlog", "serve", "--bcrypt-cost", "3"])
            .expect_err("too low")
            .to_string();
        assert!(error.contains("--bcrypt-cost"), "{error}");
    }
}
