//! Builds the application: store, migrations, replay, actors (started once), listener, server.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix::{Actor, Addr};
use actix_web::dev::Server;
use actix_web::http::header::{CACHE_CONTROL, X_CONTENT_TYPE_OPTIONS};
use actix_web::middleware::DefaultHeaders;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;

use crate::actors::{JwtKeys, JwtSecret, TokenActor, UserRegistry};
use crate::config::{JwtSecretSource, Settings, StoreSettings, available_cores};
use crate::events::{EventStore, PostgresEventStore, SqliteEventStore};
use crate::hashing::PasswordHasher;
use crate::http::{self, AppState};
use crate::keyfile::{self, KeyOrigin};

/// The signing key, reading or generating the key file if that is where it comes from.
fn jwt_secret(settings: &Settings) -> anyhow::Result<JwtSecret> {
    let path = match &settings.jwt_secret {
        JwtSecretSource::Given(secret) => return Ok(secret.clone()),
        JwtSecretSource::File(path) => path,
    };
    anyhow::ensure!(
        !matches!(settings.store, StoreSettings::Postgres(_)),
        "AUTHLOG_JWT_SECRET is required with PostgreSQL, so that every instance signs with one key"
    );
    let (secret, origin) = keyfile::load_or_generate(path)?;
    match origin {
        KeyOrigin::Generated => tracing::warn!(
            "AUTHLOG_JWT_SECRET is not set: generated a token signing key in {} (mode 0600). \
             Tokens stay valid across restarts as long as that file is kept and private; \
             set AUTHLOG_JWT_SECRET to manage the key yourself",
            path.display()
        ),
        KeyOrigin::Loaded => tracing::info!(
            "AUTHLOG_JWT_SECRET is not set: signing tokens with the key in {}",
            path.display()
        ),
    }
    Ok(secret)
}

pub struct Application {
    address: SocketAddr,
    server: Server,
    registry: Addr<UserRegistry>,
    tokens: Addr<TokenActor>,
}

impl Application {
    /// Connects the store, migrates it, replays the log into the registry, starts the actors and
    /// binds the listener. No request is accepted before the replay has finished.
    ///
    /// Bind to port 0 to get a free port; [`Application::port`] tells which.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let (store, store_name): (Arc<dyn EventStore>, String) = match &settings.store {
            StoreSettings::Postgres(postgres) => {
                let store = PostgresEventStore::connect(postgres)?;
                store.migrate().await?;
                let name = format!("PostgreSQL {}", store.description());
                (Arc::new(store), name)
            }
            StoreSettings::Sqlite(sqlite) => {
                let store = SqliteEventStore::open(sqlite).await?;
                let name = format!("embedded SQLite {}", store.path().display());
                (Arc::new(store), name)
            }
            StoreSettings::Provided(store) => (
                Arc::clone(store),
                "a store provided by the caller".to_owned(),
            ),
        };
        let jwt_secret = jwt_secret(&settings)?;

        let cores = available_cores();
        let hasher = PasswordHasher::new(settings.bcrypt_cost, cores);
        let registry = UserRegistry::load(store, hasher.clone())
            .await
            .context("cannot rebuild the user directory from the event log")?;
        let users = registry.directory().len();
        let position = registry.directory().position();
        let registry = registry.start();
        let keys = Arc::new(JwtKeys::new(&jwt_secret, settings.token_ttl));
        let tokens = TokenActor::start_pool(keys, cores);

        let state = web::Data::new(AppState {
            registry: registry.clone(),
            tokens: tokens.clone(),
            hasher,
            actor_timeout: settings.actor_timeout,
        });
        let listener = TcpListener::bind(&settings.bind)
            .with_context(|| format!("cannot listen on {} (AUTHLOG_BIND)", settings.bind))?;
        let address = listener.local_addr()?;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(
                    DefaultHeaders::new()
                        .add((CACHE_CONTROL, "no-store"))
                        .add((X_CONTENT_TYPE_OPTIONS, "nosniff")),
                )
                .configure(http::configure)
        })
        .workers(settings.workers)
        .listen(listener)?
        .run();

        tracing::info!(
            users,
            position,
            bcrypt_cost = settings.bcrypt_cost,
            "authlog listening on http://{address} with the event log in {store_name}"
        );
        Ok(Self {
            address,
            server,
            registry,
            tokens,
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

    /// Serves until the server is stopped (SIGINT or SIGTERM, or the System shutting down).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
