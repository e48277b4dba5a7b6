//! `kill -9` of the real `authlog` binary in the middle of sign-ups (fault F2), on the embedded
//! store and on PostgreSQL.
//!
//! Every sign-up answered 201 must survive and log in after a restart; a user may exist only if
//! its sign-up was answered 201 or was still in flight when the process died; an in-flight
//! sign-up retried after the restart gets 201, or 409 and then logs in with its password; tokens
//! issued before a crash still work after it.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{TestDatabase, registered_emails, shredder};
use authlog::events::personal::Shredder;
use authlog::events::{PostgresEventStore, PostgresSettings};
use authlog::throttle::turns::MAX_WAITING_PER_ADDRESS;
use authlog::vault::MasterKey;
use secrecy::SecretString;

use crate::common::service::{Service, embedded_env, login_at, signup_at};
use authlog::events::{SqliteEventStore, SqliteSettings};
use futures_util::future::join_all;
use serde_json::{Value, json};

const ROUNDS: usize = 3;
const CLIENTS: usize = 8;
const PASSWORD: &str = "crash-test-password";

/// Where the binary keeps its log in this test.
enum Store {
    Embedded(tempfile::TempDir),
    Postgres(Box<TestDatabase>),
}

impl Store {
    fn env(&self) -> Vec<(String, String)> {
        match self {
            Store::Embedded(dir) => embedded_env(dir.path()),
            Store::Postgres(db) => db.service_env(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Store::Embedded(_) => "embedded SQLite",
            Store::Postgres(_) => "PostgreSQL",
        }
    }

    /// Every registered email, read from the log itself.
    async fn registered(&self) -> HashSet<String> {
        match self {
            Store::Embedded(dir) => {
                // The binary generated the master key into the data directory.
                let master = std::fs::read_to_string(dir.path().join("master-key"))
                    .expect("the data directory's master key");
                let master = MasterKey::parse(&SecretString::from(master.trim().to_owned()))
                    .expect("a valid master key");
                let store = SqliteEventStore::open(&SqliteSettings::in_dir(dir.path()))
                    .await
                    .expect("the log opens after the crashes")
                    .with_personal_data(Shredder::new(&master));
                registered_emails(&store).await.into_iter().collect()
            }
            Store::Postgres(db) => {
                db.settled().await;
                let store = PostgresEventStore::connect(&PostgresSettings::new(
                    SecretString::from(db.url()),
                ))
                .expect("connects")
                .with_personal_data(shredder());
                registered_emails(&store).await.into_iter().collect()
            }
        }
    }
}

/// What the clients saw.
#[derive(Default)]
struct Outcomes {
    /// Answered 201.
    acknowledged: HashSet<String>,
    /// Sent, and the connection died before an answer: they may or may not exist.
    in_flight: HashSet<String>,
}

async fn sign_up_until_stopped(
    address: String,
    round: usize,
    client: usize,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Outcomes>>,
) {
    let http = reqwest::Client::new();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let email = format!("crash-{round}-{client}-{i}@example.com");
        let response = http
            .post(format!("{address}/signup"))
            .json(&json!({ "email": email, "password": PASSWORD }))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match response {
            Ok(response) if response.status() == 201 => {
                outcomes
                    .lock()
                    .expect("not poisoned")
                    .acknowledged
                    .insert(email);
            }
            Ok(response) => panic!("sign-up answered {}", response.status()),
            // Nothing was sent: the process is gone.
            Err(error) if error.is_connect() => return,
            Err(_) => {
                outcomes
                    .lock()
                    .expect("not poisoned")
                    .in_flight
                    .insert(email);
                return;
            }
        }
    }
}

async fn signup(http: &reqwest::Client, address: &str, email: &str) -> u16 {
    signup_at(http, address, email, PASSWORD).await
}

async fn login(http: &reqwest::Client, address: &str, email: &str) -> reqwest::Response {
    login_at(http, address, email, PASSWORD).await
}

/// A pseudo-random delay from the OS's randomness (via UUID v4), so each run kills at a
/// different moment.
fn random_millis(range: std::ops::Range<u64>) -> u64 {
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    range.start + random % (range.end - range.start)
}

async fn kill_9_mid_signup(store: Store) {
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let http = reqwest::Client::new();
    let mut early_token: Option<String> = None;

    for round in 0..ROUNDS {
        let service = Service::start(&store.env());
        assert!(
            service.startup_line.contains(store.name()),
            "the start-up line names the store: {}",
            service.startup_line
        );
        if let Some(token) = &early_token {
            let profile = http
                .get(service.url("/profile"))
                .bearer_auth(token)
                .send()
                .await
                .expect("profile answered");
            assert_eq!(profile.status(), 200, "a token survives a kill -9");
        }

        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                actix_rt::spawn(sign_up_until_stopped(
                    service.address.clone(),
                    round,
                    client,
                    Arc::clone(&stop),
                    Arc::clone(&outcomes),
                ))
            })
            .collect();

        if early_token.is_none() {
            // Take a token from the first acknowledged user, to use after the crash.
            let email = loop {
                actix_rt::time::sleep(Duration::from_millis(20)).await;
                let outcomes = outcomes.lock().expect("not poisoned");
                if let Some(email) = outcomes.acknowledged.iter().next() {
                    break email.clone();
                }
            };
            let body: Value = login(&http, &service.address, &email)
                .await
                .json()
                .await
                .expect("token body");
            early_token = body["access_token"].as_str().map(str::to_owned);
        }

        actix_rt::time::sleep(Duration::from_millis(random_millis(500..1500))).await;
        service.kill_9();
        stop.store(true, Ordering::SeqCst);
        for client in clients {
            client
                .await
                .expect("client task finished without panicking");
        }
    }

    let outcomes = Arc::try_unwrap(outcomes)
        .ok()
        .expect("clients are done")
        .into_inner()
        .expect("not poisoned");
    // A floor, not a figure: the machine is shared, so how many fit in the rounds varies.
    assert!(
        outcomes.acknowledged.len() >= 20,
        "the test signed up too few users to mean anything: {}",
        outcomes.acknowledged.len()
    );
    assert!(
        !outcomes.in_flight.is_empty(),
        "no sign-up was in flight at any kill; the test did not crash mid-signup"
    );

    // The log itself, before anything is retried: every registration was acknowledged or in
    // flight, and every acknowledged one is there.
    let registered = store.registered().await;
    for email in &registered {
        assert!(
            outcomes.acknowledged.contains(email) || outcomes.in_flight.contains(email),
            "{email} is registered but its sign-up was never acknowledged nor in flight"
        );
    }
    assert!(outcomes.acknowledged.is_subset(&registered));

    // A final restart: every acknowledged user logs in.
    let service = Service::start(&store.env());
    let address = service.address.clone();
    let acknowledged: Vec<&String> = outcomes.acknowledged.iter().collect();
    // One address may have this many logins waiting at once (and more get 429): log in that
    // many at a time.
    for chunk in acknowledged.chunks(MAX_WAITING_PER_ADDRESS) {
        let replies = join_all(chunk.iter().map(|email| login(&http, &address, email))).await;
        for (email, response) in chunk.iter().zip(replies) {
            assert_eq!(
                response.status(),
                200,
                "{email} was acknowledged but cannot log in"
            );
        }
    }
    // Retrying an ambiguous sign-up: 201 if it had not committed, else 409; either way the
    // user then logs in with the password.
    let mut committed = 0;
    for email in &outcomes.in_flight {
        match signup(&http, &address, email).await {
            201 => assert!(!registered.contains(email), "{email} registered twice"),
            409 => {
                assert!(
                    registered.contains(email),
                    "409 for {email}, not in the log"
                );
                committed += 1;
            }
            status => panic!("{email}: retried sign-up answered {status}"),
        }
        assert_eq!(login(&http, &address, email).await.status(), 200, "{email}");
    }
    service.kill_9();

    if let Store::Embedded(dir) = &store {
        let key = dir.path().join("master-key");
        let mode = std::fs::metadata(&key)
            .expect("key file")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    eprintln!(
        "crash test on {}: {} acknowledged, {} in flight at a kill ({committed} had committed)",
        store.name(),
        outcomes.acknowledged.len(),
        outcomes.in_flight.len(),
    );
}

#[actix_web::test]
async fn kill_9_mid_signup_on_the_embedded_store() {
    kill_9_mid_signup(Store::Embedded(tempfile::tempdir().expect("temp dir"))).await;
}

#[actix_web::test]
async fn kill_9_mid_signup_on_postgres() {
    kill_9_mid_signup(Store::Postgres(Box::new(TestDatabase::create().await))).await;
}
