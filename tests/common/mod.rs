//! Shared test helpers: a fresh embedded log or PostgreSQL database per test (dropped
//! afterwards), the app on port 0, typed HTTP calls, and a TCP proxy that can cut the database
//! off.
//!
//! PostgreSQL is required, never optional: if it cannot be reached these helpers panic with a
//! message saying how to start it, so a missing database fails the run instead of skipping tests.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod cluster;
pub mod service;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use actix::Addr;
use authlog::actors::UserRegistry;
use authlog::config::{Settings, StoreSettings};
use authlog::events::{PostgresSettings, SqliteEventStore, SqliteSettings, events_after};
use authlog::jwt::JwtSecret;
use authlog::signing::Keychain;
use authlog::startup::Application;
use authlog::vault::MasterKey;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio_postgres::NoTls;
use uuid::Uuid;

pub const TEST_SECRET: &str = "test-only-secret-at-least-32-bytes-long!";
/// The tests' master key (`AUTHLOG_MASTER_KEY`).
pub const TEST_MASTER_KEY: &str = "test-only-master-key-0123456789abcdef0123456789abcdef";
/// The tutorial's own example credentials.
/// The query docs/auditing.md gives for PostgreSQL, to feed `docs/verify_chain.py` (kept
/// identical; tests/store/audit.rs checks).
pub const PSQL_QUERY: &str = "SELECT position, stream_id, stream_version, event_type, event_version, payload::text, metadata::text, to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), prev_hash, hash, signature FROM events ORDER BY position";

pub const TUTORIAL_EMAIL: &str = "user@example.com";
pub const TUTORIAL_PASSWORD: &str = "mypassword123";

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The claims of a JWT, decoded without checking anything.
pub fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// Logs go to the test output only when `TEST_LOG` is set.
pub fn init_test_logging() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug"));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .init();
        }
    });
}

pub fn jwt_secret() -> JwtSecret {
    JwtSecret::parse(SecretString::from(TEST_SECRET)).expect("test secret is long enough")
}

pub fn master_key() -> MasterKey {
    MasterKey::parse(&SecretString::from(TEST_MASTER_KEY)).expect("long enough")
}

/// Every email registered in the log, in log order, read (and opened) through `store`.
pub async fn registered_emails(store: &dyn authlog::events::EventStore) -> Vec<String> {
    authlog::events::events_after(store, 0)
        .collect()
        .await
        .expect("the log reads back")
        .into_iter()
        .filter_map(|event| match event.event {
            authlog::events::Event::UserRegistered(user) => Some(user.email.as_str().to_owned()),
            _ => None,
        })
        .collect()
}

/// Seals personal data under the tests' master key, as a server given it would.
pub fn shredder() -> authlog::events::personal::Shredder {
    authlog::events::personal::Shredder::new(&master_key())
}

/// Settings for a test: port 0, bcrypt cost 4, two workers; the defaults otherwise, so tokens
/// are signed with the log's Ed25519 keys (under the tests' master key) and no HS256 secret is
/// configured.
pub fn test_settings(store: StoreSettings) -> Settings {
    let mut settings = Settings::new(store, master_key());
    settings.bind = "127.0.0.1:0".to_owned();
    settings.bcrypt_cost = 4;
    settings.workers = 2;
    settings.actor_timeout = Duration::from_secs(10);
    settings
}

/// A database created for one test and dropped (with its connections) when this is dropped,
/// even if the test panics.
pub struct TestDatabase {
    admin: tokio_postgres::Config,
    name: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let admin_url = std::env::var("AUTHLOG_TEST_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let admin = tokio_postgres::Config::from_str(&admin_url)
            .expect("AUTHLOG_TEST_DATABASE_URL is a valid PostgreSQL URL");
        let name = format!("authlog_test_{}", Uuid::new_v4().simple());
        let client = connect(&admin).await.unwrap_or_else(|error| {
            panic!(
                "PostgreSQL is required for the tests and is not reachable at {admin_url}: {error}\n\
                 Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
                 or point AUTHLOG_TEST_DATABASE_URL at a server where the user may CREATE DATABASE."
            )
        });
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create the test database");
        Self { admin, name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn config(&self) -> tokio_postgres::Config {
        let mut config = self.admin.clone();
        config.dbname(&self.name);
        config
    }

    pub fn host(&self) -> String {
        match self.admin.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".to_owned(),
        }
    }

    pub fn port(&self) -> u16 {
        self.admin.get_ports().first().copied().unwrap_or(5432)
    }

    /// The URL of this database, reached at `host:port` (the real server, or a proxy).
    pub fn url_at(&self, host: &str, port: u16) -> String {
        let user = self.admin.get_user().unwrap_or("postgres");
        let password = self
            .admin
            .get_password()
            .map(|p| format!(":{}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        format!("postgres://{user}{password}@{host}:{port}/{}", self.name)
    }

    pub fn url(&self) -> String {
        self.url_at(&self.host(), self.port())
    }

    pub fn store_settings(&self) -> StoreSettings {
        StoreSettings::Postgres(PostgresSettings::new(SecretString::from(self.url())))
    }

    /// The environment that points the real binary at this database, with the tests' master
    /// key.
    pub fn service_env(&self) -> Vec<(String, String)> {
        vec![
            ("DATABASE_URL".to_owned(), self.url()),
            ("AUTHLOG_MASTER_KEY".to_owned(), TEST_MASTER_KEY.to_owned()),
        ]
    }

    /// The position of the log's last event, 0 when empty.
    pub async fn head(&self) -> i64 {
        self.client()
            .await
            .query_one("SELECT coalesce(max(position), 0) FROM events", &[])
            .await
            .expect("read the head")
            .get(0)
    }

    /// A plain client on this database, for looking at the table directly.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.config())
            .await
            .expect("connect to the test database")
    }

    /// Waits until no other session is connected to this database. A process killed with
    /// `kill -9` may have sent a `COMMIT` that its server backend has yet to finish: the backend
    /// commits it regardless and exits only then, so reading the log before that can miss a
    /// commit that lands a moment later.
    pub async fn settled(&self) {
        let client = self.client().await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let others: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .expect("read pg_stat_activity")
                .get(0);
            if others == 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{others} sessions of a killed process are still connected after 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The `(event_type, stream_version)` of every user's event, in position order (the
    /// signing keys' stream left out: see [`TestDatabase::key_event_types`]).
    pub async fn event_types(&self) -> Vec<(String, i32)> {
        self.event_types_where("stream_id <> $1").await
    }

    /// The `(event_type, stream_version)` of every event on the signing keys' stream.
    pub async fn key_event_types(&self) -> Vec<(String, i32)> {
        self.event_types_where("stream_id = $1").await
    }

    /// The log as a server with the tests' master key reads it, personal data opened.
    pub async fn events(&self) -> Vec<authlog::events::RecordedEvent> {
        let store = authlog::events::PostgresEventStore::connect(
            &authlog::events::PostgresSettings::new(SecretString::from(self.url())),
        )
        .expect("connects")
        .with_personal_data(shredder());
        events_after(&store, 0)
            .collect()
            .await
            .expect("read events")
    }

    async fn event_types_where(&self, condition: &str) -> Vec<(String, i32)> {
        self.client()
            .await
            .query(
                &format!(
                    "SELECT event_type, stream_version FROM events WHERE {condition} \
                     ORDER BY position"
                ),
                &[&authlog::events::SIGNING_KEYS_STREAM],
            )
            .await
            .expect("read events")
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime; do the async work on a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let client = connect(&admin).await?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

async fn connect(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// An embedded log in a temporary directory (removed afterwards), for tests of the HTTP surface:
/// the app writes it through the same handle the test reads.
pub struct TestLog {
    store: Arc<SqliteEventStore>,
    _dir: tempfile::TempDir,
}

impl TestLog {
    pub async fn create() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteEventStore::open(&SqliteSettings::in_dir(dir.path()))
            .await
            .expect("the embedded log opens")
            .with_personal_data(shredder());
        Self {
            store: Arc::new(store),
            _dir: dir,
        }
    }

    pub fn store_settings(&self) -> StoreSettings {
        StoreSettings::Provided(self.store.clone())
    }

    /// The `(event_type, stream_version)` of every user's event, in position order (the
    /// signing keys' stream left out: see [`TestLog::key_event_types`]).
    pub async fn event_types(&self) -> Vec<(String, i32)> {
        self.types(|event| event.event.user_id().is_some()).await
    }

    /// The `(event_type, stream_version)` of every event on the signing keys' stream.
    pub async fn key_event_types(&self) -> Vec<(String, i32)> {
        self.types(|event| event.event.user_id().is_none()).await
    }

    async fn types(
        &self,
        keep: impl Fn(&authlog::events::RecordedEvent) -> bool,
    ) -> Vec<(String, i32)> {
        events_after(self.store.as_ref(), 0)
            .collect()
            .await
            .expect("read events")
            .iter()
            .filter(|e| keep(e))
            .map(|e| (e.event.event_type().to_owned(), e.stream_version))
            .collect()
    }
}

/// A running application and a client for it.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub registry: Addr<UserRegistry>,
    pub rotator: Addr<authlog::actors::KeyRotator>,
    /// The keys the app signs and checks tokens with.
    pub keychain: std::sync::Arc<Keychain>,
    pub http: reqwest::Client,
}

/// The app on a fresh embedded log. Keep the log alive as long as the app.
pub async fn spawn_app() -> (TestApp, TestLog) {
    let log = TestLog::create().await;
    let app = spawn_app_with(test_settings(log.store_settings())).await;
    (app, log)
}

/// The app on a fresh PostgreSQL database. Keep the database alive as long as the app.
pub async fn spawn_app_on_postgres() -> (TestApp, TestDatabase) {
    let db = TestDatabase::create().await;
    let app = spawn_app_with(test_settings(db.store_settings())).await;
    (app, db)
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    init_test_logging();
    let app = Application::build(settings)
        .await
        .expect("the application builds");
    let port = app.port();
    let registry = app.registry();
    let rotator = app.rotator();
    let keychain = app.keychain();
    actix_rt::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        registry,
        rotator,
        keychain,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `GET path`, asserting only that the request was sent.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// A POST with exactly this content type (or none) and raw body.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut request = self.http.post(self.url(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        request.send().await.expect("request sent")
    }

    pub async fn signup(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json("/signup", &json!({ "email": email, "password": password }))
            .await
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json("/login", &json!({ "email": email, "password": password }))
            .await
    }

    /// Signs up, asserting 201; returns the body.
    pub async fn signed_up(&self, email: &str, password: &str) -> Value {
        let response = self.signup(email, password).await;
        assert_eq!(response.status(), 201, "sign-up of {email:?}");
        response.json().await.expect("json")
    }

    /// Logs in and returns the access token, asserting success.
    pub async fn token_for(&self, email: &str, password: &str) -> String {
        let response = self.login(email, password).await;
        assert_eq!(response.status(), 200, "login of {email} should succeed");
        let body: Value = response.json().await.expect("json");
        body["access_token"].as_str().expect("token").to_owned()
    }

    /// The key the app signs with now, and its id: to forge tokens exactly as the app would
    /// sign them, so that only the property under test is wrong.
    pub fn signing_key(&self) -> (authlog::domain::KeyId, ed25519_dalek::SigningKey) {
        let set = self.keychain.key_set();
        let active = set.active().expect("an active signing key");
        let private = self
            .keychain
            .vault()
            .open(active)
            .expect("the active key opens under the tests' master key");
        (active.key_id.clone(), private)
    }

    /// `GET /profile` with this exact `Authorization` header value, or none.
    pub async fn profile(&self, authorization: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(self.url("/profile"));
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        request.send().await.expect("request sent")
    }
}

/// Asserts a JSON error reply: this status, and a body that is exactly `{"detail": <string>}`.
/// Returns the detail.
pub async fn assert_error(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content type was {content_type:?}"
    );
    let body: Value = response.json().await.expect("a JSON body");
    let object = body.as_object().expect("a JSON object");
    assert_eq!(object.len(), 1, "only a detail field: {body}");
    object["detail"]
        .as_str()
        .expect("detail is a string")
        .to_owned()
}

/// Asserts a 401 with this detail and a `WWW-Authenticate: Bearer...` header.
pub async fn assert_unauthorized(response: reqwest::Response, detail: &str) {
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer"),
        "WWW-Authenticate was {challenge:?}"
    );
    assert_eq!(assert_error(response, 401).await, detail);
}

/// A TCP proxy in front of PostgreSQL that a test can cut (killing open connections and refusing
/// new ones) and restore, to play a database outage without touching the shared server.
pub struct TcpProxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("address").port();
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (accept_up, accept_connections) = (Arc::clone(&up), Arc::clone(&connections));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                accept_connections
                    .lock()
                    .expect("lock")
                    .push(task.abort_handle());
            }
        });
        Self {
            port,
            up,
            connections,
        }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().expect("lock").drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// A bcrypt hash (cost 4) of `password`, for messages that take a pre-hashed password.
pub async fn password_hash(password: &str) -> authlog::domain::PasswordHash {
    // Any password bcrypt can take: these tests are not about the sign-up policy.
    let password =
        authlog::domain::Password::for_login(password.to_owned()).expect("at most 72 bytes");
    authlog::hashing::PasswordHasher::new(4, 1)
        .hash(password)
        .await
        .expect("hash")
}

/// Sends `attempts` concurrent registrations of one email, spread round-robin over `registries`,
/// and returns how many succeeded and how many were refused as duplicates.
pub async fn race_registrations(
    registries: &[&Addr<UserRegistry>],
    email: &str,
    attempts: usize,
) -> (usize, usize) {
    use authlog::actors::{Register, RegistryError};
    let hash = password_hash("password1").await;
    let email = authlog::domain::Email::parse(email).expect("valid email");
    let sends = (0..attempts).map(|i| {
        registries[i % registries.len()].send(Register {
            email: email.clone(),
            password_hash: hash.clone(),
            metadata: authlog::events::EventMetadata::default(),
        })
    });
    let results: Vec<_> = futures_util::future::join_all(sends)
        .await
        .into_iter()
        .map(|answer| answer.expect("the registry answers"))
        .collect();
    let wins = results.iter().filter(|r| r.is_ok()).count();
    let taken = results
        .iter()
        .filter(|r| matches!(r, Err(RegistryError::EmailTaken)))
        .count();
    assert_eq!(
        wins + taken,
        attempts,
        "only wins and duplicates: {results:?}"
    );
    (wins, taken)
}
