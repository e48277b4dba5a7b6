//! Builds the application: store, migrations, replay, keys, actors, listener, server.
//!
//! The registry and the key rotator are started once, here, outside `HttpServer::new`. The
//! TokenActor is started once here too (for callers that drive the actors), and once more on
//! each HTTP worker's own arbiter, on purpose: a token check then never leaves the worker's
//! thread. All TokenActors share one keychain.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;

use crate::actors::{KeyRotator, LoadError, Readiness, RotateKeys, TokenActor, UserRegistry};
use crate::checkpoint::Checkpointer;
use crate::config::{
    JwtSecretSource, MasterKeySource, Settings, StoreSettings, available_cores, defaults,
};
use crate::diagnostics::error_chain;
use crate::domain::KeyAlgorithm;
use crate::events::personal::Shredder;
use crate::events::{EventStore, PostgresEventStore, SqliteEventStore, StoreError};
use crate::hashing::PasswordHasher;
use crate::http::{self, AppState, Discovery};
use crate::jwt::{JwtSecret, LEEWAY_SECONDS, TokenPolicy};
use crate::keyfile::{self, KeyOrigin};
use crate::keyring::RotationPolicy;
use crate::metrics::METRICS;
use crate::sessions::{RefreshKey, RefreshKeys};
use crate::signing::{KeyVault, Keychain, SigningSettings, TokenVerifier};
use crate::vault::MasterKey;

/// Opens the event store the settings name, sealing personal data under `master`, and a
/// description of it for logs (no password). PostgreSQL is only connected lazily here; the
/// registry's replay migrates it.
pub async fn open_store(
    store: &StoreSettings,
    master: &MasterKey,
) -> anyhow::Result<(Arc<dyn EventStore>, String)> {
    let shredder = Shredder::new(master);
    Ok(match store {
        StoreSettings::Postgres(postgres) => {
            let store = PostgresEventStore::connect(postgres)?.with_personal_data(shredder);
            let name = format!("PostgreSQL {}", store.description());
            (Arc::new(store), name)
        }
        StoreSettings::Sqlite(sqlite) => {
            let store = SqliteEventStore::open(sqlite)
                .await?
                .with_personal_data(shredder);
            let name = format!("embedded SQLite {}", store.path().display());
            (Arc::new(store), name)
        }
        StoreSettings::Provided(store) => (
            Arc::clone(store),
            "a store provided by the caller".to_owned(),
        ),
    })
}

/// Held by a server on an embedded log for as long as it serves: the embedded store is one
/// process per data directory (its directory and throttle live in that process's memory, and
/// it watches no other writer), so a second `authlog serve` on the same directory is refused.
/// The auditors' read-only commands take no lock and keep working.
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Locks `<log file>.lock` next to the log, or says which process holds it.
    pub fn acquire(log: &std::path::Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = log.with_extension("db.lock");
        // Made here first, so with the data directory's mode (0700), as the store would.
        crate::data_dir::create_parent_dir(&path)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "another authlog server is already serving the embedded log in {} (it holds \
                 {}); the embedded store is one process per data directory. Stop it, use \
                 another --data-dir, or run several instances on PostgreSQL (DATABASE_URL)",
                log.parent().unwrap_or(log).display(),
                path.display()
            ),
            Err(std::fs::TryLockError::Error(error)) => {
                Err(anyhow::Error::new(error).context(format!("cannot lock {}", path.display())))
            }
        }
    }
}

/// The log the auditors' commands read: opened read-only, never created, migrated or written
/// (a missing embedded log is an error, not an empty one). With the master key, personal data
/// reads in clear; without it, as `<sealed>`.
pub async fn open_for_audit(
    store: &StoreSettings,
    master: Option<&MasterKey>,
) -> anyhow::Result<Arc<dyn EventStore>> {
    let shredder = master.map(Shredder::new);
    Ok(match store {
        StoreSettings::Postgres(postgres) => {
            let store = PostgresEventStore::connect_read_only(postgres)?;
            Arc::new(match shredder {
                Some(shredder) => store.with_personal_data(shredder),
                None => store,
            })
        }
        StoreSettings::Sqlite(sqlite) => {
            let store = SqliteEventStore::open_read_only(&sqlite.path).await?;
            Arc::new(match shredder {
                Some(shredder) => store.with_personal_data(shredder),
                None => store,
            })
        }
        StoreSettings::Provided(store) => Arc::clone(store),
    })
}

/// The master key, reading or generating the key file if that is where it comes from.
pub fn master_key(source: &MasterKeySource) -> anyhow::Result<MasterKey> {
    let path = match source {
        MasterKeySource::Given(key) => return Ok(key.clone()),
        MasterKeySource::File(path) => path,
    };
    let (key, origin) = keyfile::load_or_generate(path)?;
    match origin {
        KeyOrigin::Generated => tracing::warn!(
            "AUTHLOG_MASTER_KEY is not set: generated a master key in {} (mode 0600). It opens \
             the signing keys in the log: keep that file, private and backed up apart from the \
             log, or set AUTHLOG_MASTER_KEY to manage the key yourself",
            path.display()
        ),
        KeyOrigin::Loaded => tracing::info!(
            "AUTHLOG_MASTER_KEY is not set: using the master key in {}",
            path.display()
        ),
    }
    MasterKey::parse(&key).map_err(anyhow::Error::new)
}

/// The HS256 secret, if there is one, reading or generating the key file if that is where it
/// comes from.
pub fn jwt_secret(source: &JwtSecretSource) -> anyhow::Result<Option<JwtSecret>> {
    let secret = match source {
        JwtSecretSource::None => return Ok(None),
        JwtSecretSource::Given(secret) => return Ok(Some(secret.clone())),
        JwtSecretSource::IfPresent(path) => {
            let Some(secret) = keyfile::load_if_present(path)? else {
                return Ok(None);
            };
            tracing::info!(
                "HS256 tokens signed with the secret in {} are still accepted; delete it once \
                 no session from before needs it (docs/decisions.md, \"Switching algorithms\")",
                path.display()
            );
            secret
        }
        JwtSecretSource::File(path) => {
            let (secret, origin) = keyfile::load_or_generate(path)?;
            match origin {
                KeyOrigin::Generated => tracing::warn!(
                    "AUTHLOG_JWT_SECRET is not set: generated an HS256 secret in {} (mode \
                     0600). Tokens stay valid across restarts as long as that file is kept and \
                     private; set AUTHLOG_JWT_SECRET to manage the secret yourself",
                    path.display()
                ),
                KeyOrigin::Loaded => tracing::info!(
                    "AUTHLOG_JWT_SECRET is not set: signing tokens with the secret in {}",
                    path.display()
                ),
            }
            secret
        }
    };
    JwtSecret::parse(secret)
        .map(Some)
        .map_err(anyhow::Error::new)
}

pub struct Application {
    address: SocketAddr,
    server: Server,
    /// Held while serving an embedded log.
    lock: Option<DataDirLock>,
    registry: Addr<UserRegistry>,
    tokens: Addr<TokenActor>,
    rotator: Addr<KeyRotator>,
    keychain: Arc<Keychain>,
    /// Writes checkpoints every so often, and once more at shutdown.
    checkpointer: Option<(
        Arc<tokio::sync::Mutex<Checkpointer>>,
        tokio::task::JoinHandle<()>,
    )>,
    /// The thread that writes snapshots, if the store can keep them.
    snapshotter: Option<actix::Arbiter>,
}

impl Application {
    /// Connects the store, migrates it, replays the log into the registry, starts the actors and
    /// binds the listener. No request is accepted before the replay has finished.
    ///
    /// Bind to port 0 to get a free port; [`Application::port`] tells which.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Bound first: a port in use fails here, before any store is opened or actor started
        // (an actor started and then dropped with the runtime would panic on the way out).
        let listener = TcpListener::bind(&settings.bind)
            .with_context(|| format!("cannot listen on {} (AUTHLOG_BIND)", settings.bind))?;
        let address = listener.local_addr()?;
        let lock = match &settings.store {
            StoreSettings::Sqlite(sqlite) => Some(DataDirLock::acquire(&sqlite.path)?),
            _ => None,
        };
        let master = master_key(&settings.master_key)?;
        let (store, store_name) = open_store(&settings.store, &master).await?;
        let hs256 = jwt_secret(&settings.jwt_secret)?;
        // Build the metrics now, not on the first request that records one.
        std::sync::LazyLock::force(&METRICS);

        let cores = available_cores();
        let hasher = PasswordHasher::new(settings.bcrypt_cost, cores);
        let dummy_hash = hasher
            .dummy_hash()
            .await
            .context("cannot prepare the dummy password hash")?;
        let registry =
            match UserRegistry::load_with(Arc::clone(&store), hasher.clone(), dummy_hash.clone())
                .await
            {
                Ok(registry) => registry,
                // Unreachable: serve 503s and report not-ready until the store is back.
                Err(LoadError::Replay(error @ StoreError::Unavailable(_))) => {
                    tracing::warn!(
                        error = %error_chain(&error),
                        "the event log is unreachable; starting unready and retrying"
                    );
                    UserRegistry::unloaded(Arc::clone(&store), hasher.clone(), dummy_hash, &error)
                }
                // A log this build cannot decode is not something waiting fixes.
                Err(error) => {
                    return Err(anyhow::Error::new(error)
                        .context("cannot rebuild the user directory from the event log"));
                }
            };
        let readiness = registry.readiness();
        let loaded = matches!(readiness, Readiness::Ready { .. });
        let view = registry.view();
        let vault = KeyVault::new(&master);
        let keychain = Arc::new(Keychain::new(
            vault.clone(),
            registry.keys(),
            SigningSettings {
                algorithm: settings.token_algorithm,
                hs256: hs256.clone(),
                policy: TokenPolicy {
                    ttl: settings.token_ttl,
                    issuer: settings.token_issuer.clone(),
                    audience: settings.token_audience.clone(),
                },
            },
        ));
        if loaded {
            // Before any actor starts: a wrong master key stops start-up here.
            keychain.check()?;
        }
        let keys = registry.keys();
        let registry = registry
            .with_throttle_policy(settings.throttle)
            .with_session_policy(settings.sessions)
            .with_clock(settings.clock.clone())
            .start();
        let clock = settings.clock.clone();
        let rotator = KeyRotator::new(
            registry.clone(),
            view.clone(),
            keys,
            vault,
            rotation_policy(&settings),
        )
        .with_clock(clock.clone())
        .start();
        if loaded {
            // A new log gets its first key before the first request; an older one takes
            // whatever step came due while no instance ran.
            match rotator.send(RotateKeys).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(error = %error_chain(&error), "cannot take a key rotation step yet; retrying");
                }
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "the key rotator did not answer");
                }
            }
        }
        let refresh = RefreshKeys::new(
            RefreshKey::from_master(&master),
            hs256
                .as_ref()
                .map(|secret| RefreshKey::derive(secret.bytes())),
        );
        let tokens = TokenActor::new(Arc::clone(&keychain), refresh.clone())
            .with_clock(clock.clone())
            .start();

        if settings.public_url.is_none() && address.ip().is_unspecified() {
            tracing::warn!(
                "listening on {address} without AUTHLOG_PUBLIC_URL: the discovery document names \
                 http://{address}, which clients cannot reach; set AUTHLOG_PUBLIC_URL to the URL \
                 they use"
            );
        }
        let discovery = Discovery::new(
            settings
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{address}")),
            settings.token_issuer.clone(),
            settings.jwks_max_age,
            settings.token_algorithm,
        );
        let state = web::Data::new(AppState {
            store: Arc::clone(&store),
            registry: registry.clone(),
            view,
            hasher,
            actor_timeout: settings.actor_timeout,
            clock: settings.clock.clone(),
            sessions: settings.sessions,
            keychain: Arc::clone(&keychain),
            discovery,
        });
        let trusted_proxies = settings.trusted_proxies.clone();
        let keychain_for_workers = Arc::clone(&keychain);
        let connections = http::ConnectionCounts::new(
            settings.max_connections_per_address,
            settings.trusted_proxies.clone(),
        );
        let server = HttpServer::new(move || {
            // Runs on each worker's thread: this TokenActor lives on that worker's arbiter, and
            // the verifier is only ever used there.
            let tokens = web::Data::new(http::WorkerTokens {
                actor: TokenActor::new(Arc::clone(&keychain_for_workers), refresh.clone())
                    .with_clock(clock.clone())
                    .start(),
                verifier: std::cell::RefCell::new(TokenVerifier::new(
                    Arc::clone(&keychain_for_workers),
                    clock.clone(),
                )),
            });
            App::new()
                .app_data(state.clone())
                .app_data(tokens)
                .wrap(http::ConnectionLimit)
                .wrap(http::Observe::new(&trusted_proxies))
                .configure(http::configure)
        })
        .workers(settings.workers)
        // A client that closes its side has gone away: drop its request, and with it any work not
        // started yet (a login waiting for its turn or for bcrypt), instead of finishing it for
        // nobody. No HTTP client this API serves half-closes and then waits for a reply.
        .h1_allow_half_closed(false)
        .on_connect(move |io, data| connections.on_connect(io, data))
        // SIGTERM/SIGINT: stop accepting, let requests in flight finish (each waits for its
        // append to commit or fail), then return from `run_until_stopped`.
        .shutdown_timeout(settings.shutdown_timeout.as_secs())
        .listen(listener)?
        .run();

        tracing::info!(
            readiness = %readiness,
            bcrypt_cost = settings.bcrypt_cost,
            token_algorithm = %settings.token_algorithm,
            signing_key = keychain
                .current()
                .keys
                .signing_key()
                .map(tracing::field::display),
            "authlog listening on http://{address} with the event log in {store_name}"
        );
        // Checkpoints of the log's head, by this instance's own key (the master key's).
        let checkpointer = store.log_signer().map(|signer| {
            let checkpointer = Arc::new(tokio::sync::Mutex::new(Checkpointer::new(
                registry.clone(),
                Arc::clone(&store),
                signer,
                settings.checkpoints.clone(),
            )));
            let ticking = Arc::clone(&checkpointer);
            let task = tokio::spawn(async move {
                let mut ticker = tokio::time::interval(Duration::from_secs(1));
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    ticking.lock().await.tick(false).await;
                }
            });
            (checkpointer, task)
        });
        // Snapshots, folded on a thread of their own (needs the master key, which seals them).
        let snapshotter =
            (store.log_signer().is_some() && !settings.snapshots.never()).then(|| {
                crate::snapshot::Snapshotter::new(
                    registry.clone(),
                    Arc::clone(&store),
                    settings.snapshots,
                )
                .start(Duration::from_secs(10))
            });
        Ok(Self {
            address,
            server,
            lock,
            registry,
            tokens,
            rotator,
            keychain,
            checkpointer,
            snapshotter,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The registry serving this application, for callers that drive it directly.
    pub fn registry(&self) -> Addr<UserRegistry> {
        self.registry.clone()
    }

    pub fn tokens(&self) -> Addr<TokenActor> {
        self.tokens.clone()
    }

    /// The key rotator: [`RotateKeys`] takes the step the schedule wants now.
    pub fn rotator(&self) -> Addr<KeyRotator> {
        self.rotator.clone()
    }

    /// The keys tokens are signed and checked with, as built from the log.
    pub fn keychain(&self) -> Arc<Keychain> {
        Arc::clone(&self.keychain)
    }

    /// Serves until the server is stopped (SIGINT or SIGTERM, or the System shutting down).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        if let Some(snapshotter) = &self.snapshotter {
            snapshotter.stop();
        }
        // The last checkpoint: the head as this instance leaves it.
        if let Some((checkpointer, task)) = self.checkpointer {
            task.abort();
            checkpointer.lock().await.tick(true).await;
        }
        drop(self.lock);
        served
    }
}

/// The rotation schedule the settings describe: a key that stopped signing lingers for the
/// longest token lifetime, the leeway and a margin.
pub fn rotation_policy(settings: &Settings) -> RotationPolicy {
    RotationPolicy {
        sign_with_keys: settings.token_algorithm == KeyAlgorithm::EdDSA,
        rotation: settings.key_rotation,
        lead: settings.jwks_max_age,
        linger: settings.token_ttl
            + std::time::Duration::from_secs(LEEWAY_SECONDS)
            + defaults::KEY_RETIREMENT_MARGIN,
    }
}
