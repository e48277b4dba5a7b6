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
use crate::domain::KeyAlgorithm;
use crate::events::{EventStore, PostgresSettings, SqliteSettings};
use crate::jwt::{JwtSecret, JwtSecretError};
use crate::keyfile;
use crate::sessions::SessionPolicy;
use crate::throttle::ThrottlePolicy;
use crate::vault::{MasterKey, MasterKeyError};

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
    /// Public keys that anyone may check tokens with (docs/decisions.md, "Token signing keys").
    pub const TOKEN_ALGORITHM: crate::domain::KeyAlgorithm = crate::domain::KeyAlgorithm::EdDSA;
    /// How long a signing key signs before the next takes over. NIST SP 800-57 leaves the
    /// period to the operator; a month bounds what one leaked key can sign while keeping the
    /// JWKS short.
    pub const KEY_ROTATION_DAYS: u64 = 30;
    /// The JWKS `Cache-Control: max-age`, and so how long ahead of signing a new key is
    /// published. An hour: verifiers refetch the JWKS at most hourly, and the libraries that
    /// cache for less (PyJWT's `PyJWKClient`: 5 minutes) are covered.
    pub const JWKS_MAX_AGE_SECONDS: u64 = 3600;
    /// A key that stopped signing stays published for the longest token lifetime, the leeway
    /// and this margin, for instances that applied the switch a little later than the one that
    /// made it.
    pub const KEY_RETIREMENT_MARGIN: Duration = Duration::from_secs(60);
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

/// Where the HS256 secret comes from, if there is one.
#[derive(Debug, Clone)]
pub enum JwtSecretSource {
    /// None: tokens are signed with the log's Ed25519 keys, and HS256 tokens are refused.
    None,
    /// Given by the operator (`AUTHLOG_JWT_SECRET`) or the embedding program.
    Given(JwtSecret),
    /// Read from this file if it is there (a data directory from before EdDSA, whose tokens
    /// and refresh tokens stay valid), else none.
    IfPresent(PathBuf),
    /// Read from this file, generated there (mode 0600) on first start: HS256 on the embedded
    /// store. A shared PostgreSQL log needs one secret that every instance is given
    /// ([`ConfigError::MissingJwtSecret`]).
    File(PathBuf),
}

impl From<JwtSecret> for JwtSecretSource {
    fn from(secret: JwtSecret) -> Self {
        Self::Given(secret)
    }
}

/// Where the master key comes from.
#[derive(Debug, Clone)]
pub enum MasterKeySource {
    /// Given by the operator (`AUTHLOG_MASTER_KEY`) or the embedding program.
    Given(MasterKey),
    /// Read from this file, generated there (mode 0600) on first start: the embedded store. A
    /// shared PostgreSQL log needs one master key every instance is given
    /// ([`ConfigError::MissingMasterKey`]).
    File(PathBuf),
}

impl From<MasterKey> for MasterKeySource {
    fn from(key: MasterKey) -> Self {
        Self::Given(key)
    }
}

/// The generated HS256 secret's place in a data directory.
pub fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join(keyfile::FILE_NAME)
}

/// The generated master key's place in a data directory.
pub fn master_key_file(data_dir: &Path) -> PathBuf {
    data_dir.join(keyfile::MASTER_KEY_FILE_NAME)
}

/// Everything `Application::build` needs.
#[derive(Clone)]
pub struct Settings {
    pub bind: String,
    pub store: StoreSettings,
    /// Seals the signing keys' private halves in the log, and keys refresh-token tags.
    pub master_key: MasterKeySource,
    /// The HS256 secret: signs if `token_algorithm` is HS256; verifies its tokens either way.
    pub jwt_secret: JwtSecretSource,
    /// What signs new access tokens: the log's active Ed25519 key, or the HS256 secret.
    pub token_algorithm: KeyAlgorithm,
    /// How long a signing key signs before the next takes over; `None`: only on demand.
    pub key_rotation: Option<Duration>,
    /// The JWKS cache lifetime, which is also how long a new key is published before it signs.
    pub jwks_max_age: Duration,
    /// The URL clients reach this service at (`https://auth.example.com`), for the discovery
    /// document; `None`: `http://` and the address it listens on.
    pub public_url: Option<String>,
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
    /// Where and how often signed checkpoints of the log's head are written.
    pub checkpoints: crate::checkpoint::CheckpointPolicy,
    /// When snapshots of the folded state are written ([`crate::snapshot`]).
    pub snapshots: crate::snapshot::SnapshotPolicy,
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
    #[error(
        "AUTHLOG_MASTER_KEY is not set: it is required with PostgreSQL, so that every instance          can open the signing keys in the log (generate one with `openssl rand -hex 32`)"
    )]
    MissingMasterKey,
    #[error(transparent)]
    WeakMasterKey(#[from] MasterKeyError),
    #[error(
        "AUTHLOG_JWKS_MAX_AGE_SECONDS ({lead} s) must be shorter than AUTHLOG_KEY_ROTATION_DAYS          ({rotation} s): a new key is published that long before it signs"
    )]
    LeadLongerThanRotation { lead: u64, rotation: u64 },
    #[error(
        "AUTHLOG_PUBLIC_URL must be an http:// or https:// URL with no path, query or fragment, got {0:?}"
    )]
    PublicUrl(String),
}

impl Settings {
    /// Defaults for everything but the two things with no safe default.
    pub fn new(store: StoreSettings, master_key: impl Into<MasterKeySource>) -> Self {
        Self {
            bind: defaults::BIND.to_owned(),
            store,
            master_key: master_key.into(),
            jwt_secret: JwtSecretSource::None,
            token_algorithm: defaults::TOKEN_ALGORITHM,
            key_rotation: Some(Duration::from_secs(defaults::KEY_ROTATION_DAYS * 86_400)),
            jwks_max_age: Duration::from_secs(defaults::JWKS_MAX_AGE_SECONDS),
            public_url: None,
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
            checkpoints: crate::checkpoint::CheckpointPolicy::default(),
            snapshots: crate::snapshot::SnapshotPolicy::default(),
        }
    }
}

pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// An `AUTHLOG_PUBLIC_URL`: `http` or `https`, a host, perhaps a port; no path, query or
/// fragment (the well-known documents are at its root). A trailing slash is dropped.
pub fn parse_public_url(raw: &str) -> Result<String, ConfigError> {
    let trimmed = raw.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"));
    let valid = rest.is_some_and(|host| {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c))
    });
    if valid {
        Ok(trimmed.to_owned())
    } else {
        Err(ConfigError::PublicUrl(raw.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_an_origin_only() {
        for (raw, parsed) in [
            ("https://auth.example.com", "https://auth.example.com"),
            ("https://auth.example.com/", "https://auth.example.com"),
            ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
            ("http://[::1]:8000", "http://[::1]:8000"),
        ] {
            assert_eq!(parse_public_url(raw).expect(raw), parsed);
        }
        for bad in [
            "auth.example.com",
            "ftp://x",
            "https://",
            "https://a/b",
            "https://a?x",
            "https://a#x",
            "https://a b",
        ] {
            assert!(parse_public_url(bad).is_err(), "{bad}");
        }
    }
}
