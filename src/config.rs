//! The validated settings `Application::build` takes, and every default, stated once.
//!
//! Defaults live with the type that owns them ([`ThrottlePolicy::DEFAULT`],
//! [`PostgresSettings::DEFAULT_POOL_SIZE`], [`crate::events::DEFAULT_STORE_TIMEOUT`]) or in
//! [`defaults`] below; the command-line flags in [`crate::cli`] take their defaults from here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::clock::Clock;
use crate::events::{EventStore, PostgresSettings, SqliteSettings};
use crate::jwt::{JwtSecret, JwtSecretError};
use crate::keyfile;
use crate::sessions::SessionPolicy;
use crate::throttle::ThrottlePolicy;

/// The service's own defaults.
pub mod defaults {
    use std::time::Duration;

    /// Loopback only: exposing the service is a choice.
    pub const BIND: &str = "127.0.0.1:8000";
    /// The embedded store's directory, relative to the working directory.
    pub const DATA_DIR: &str = "authlog-data";
    pub const BCRYPT_COST: u32 = bcrypt::DEFAULT_COST;
    pub const TOKEN_TTL_MINUTES: u64 = 30;
    pub const SHUTDOWN_TIMEOUT_SECONDS: u64 = 30;
    /// Longest an HTTP handler waits on an actor. It covers queueing for bcrypt, so it is
    /// generous.
    pub const ACTOR_TIMEOUT: Duration = Duration::from_secs(30);
    /// `iss` and `aud` of tokens.
    pub const ISSUER: &str = crate::jwt::DEFAULT_ISSUER;
    /// Connections one client address may hold at once. Browsers open 6 per origin and API
    /// clients pool a few dozen; 256 leaves room for a NAT'd office while one address cannot
    /// take more than a small share of the descriptors a server has.
    pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 256;
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
    /// Read from this file, generated there (mode 0600) on first start. The CLI chooses it only
    /// for the embedded store; a shared PostgreSQL log needs one key that every instance is
    /// given ([`ConfigError::MissingJwtSecret`]).
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
    /// Longest an HTTP handler waits on an actor before answering 503.
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
    /// Connections one client address may hold at once (0: no limit); trusted proxies are exempt.
    pub max_connections_per_address: usize,
    /// Session lifetimes and the refresh-token reuse grace.
    pub sessions: SessionPolicy,
    /// The time session and token decisions read: the system's, or a settable one in tests.
    pub clock: Clock,
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
            bind: defaults::BIND.to_owned(),
            store,
            jwt_secret: jwt_secret.into(),
            token_ttl: Duration::from_secs(defaults::TOKEN_TTL_MINUTES * 60),
            bcrypt_cost: defaults::BCRYPT_COST,
            workers: available_cores(),
            actor_timeout: defaults::ACTOR_TIMEOUT,
            shutdown_timeout: Duration::from_secs(defaults::SHUTDOWN_TIMEOUT_SECONDS),
            token_issuer: defaults::ISSUER.to_owned(),
            token_audience: defaults::ISSUER.to_owned(),
            throttle: ThrottlePolicy::DEFAULT,
            trusted_proxies: Vec::new(),
            max_connections_per_address: defaults::MAX_CONNECTIONS_PER_ADDRESS,
            sessions: SessionPolicy::DEFAULT,
            clock: Clock::system(),
        }
    }
}

pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
