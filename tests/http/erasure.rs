//! Erasure (issue 18), against the real binary on both stores: `DELETE /account` and
//! `DELETE /admin/users/{id}` destroy the user's data key; the chain still verifies; the email
//! signs up again as a new user; neither the database's files nor a dump hold the erased
//! email, user agent or key; an auditor without the master key sees no personal data; a wrong
//! master key stops start-up; another instance sees the erasure at once.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::TestDatabase;
use crate::common::service::{Service, embedded_env, login_at, run, signup_at};

const ALICE: &str = "alice.erasure@example.com";
const BOB: &str = "bob.keeps@example.com";
const PASSWORD: &str = "correct-horse-battery";
/// Alice's user agent: personal data that must not outlive her either.
const ALICE_AGENT: &str = "alice-agent-5f0c1e";

/// Which store the binary serves, and how to look at its raw bytes.
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

    /// The environment of an auditor given the log but not the master key.
    fn env_without_keys(&self, copy: &Path) -> Vec<(String, String)> {
        match self {
            Store::Embedded(dir) => {
                // A copy of the log's files, without the master-key file beside them.
                for entry in std::fs::read_dir(dir.path()).expect("the data directory") {
                    let path = entry.expect("an entry").path();
                    let name = path.file_name().expect("a name").to_string_lossy();
                    if name.starts_with("events.db") && !name.ends_with(".lock") {
                        std::fs::copy(&path, copy.join(&*name)).expect("copy");
                    }
                }
                embedded_env(copy)
            }
            Store::Postgres(db) => vec![("DATABASE_URL".to_owned(), db.url())],
        }
    }

    /// Everything the database holds, as bytes: the raw files (and WAL) of the embedded store,
    /// a `pg_dump` of PostgreSQL's.
    fn raw_bytes(&self) -> Vec<u8> {
        match self {
            Store::Embedded(dir) => {
                let mut bytes = Vec::new();
                for entry in std::fs::read_dir(dir.path()).expect("the data directory") {
                    let path = entry.expect("an entry").path();
                    let name = path.file_name().expect("a name").to_string_lossy();
                    if name.starts_with("events.db") {
                        bytes.extend(std::fs::read(&path).expect("read a database file"));
                    }
                }
                bytes
            }
            Store::Postgres(db) => {
                let output = std::process::Command::new("pg_dump")
                    .arg(db.url())
                    .output()
                    .expect("run pg_dump");
                assert!(output.status.success(), "pg_dump failed");
                output.stdout
            }
        }
    }

    /// The user's wrapped data key as stored, if there is one, in the form `raw_bytes` shows
    /// it (raw on SQLite, `\x`-hex in a dump).
    async fn wrapped_key(&self, user: &str) -> Option<Vec<u8>> {
        match self {
            Store::Embedded(dir) => {
                let connection = rusqlite::Connection::open_with_flags(
                    dir.path().join("events.db"),
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .expect("open read-only");
                connection
                    .query_row(
                        "SELECT wrapped_key FROM personal_keys WHERE user_id = ?1",
                        [user],
                        |row| row.get(0),
                    )
                    .ok()
            }
            Store::Postgres(db) => {
                let id: uuid::Uuid = user.parse().expect("a uuid");
                db.client()
                    .await
                    .query_opt(
                        "SELECT wrapped_key FROM personal_keys WHERE user_id = $1",
                        &[&id],
                    )
                    .await
                    .expect("read personal_keys")
                    .map(|row| {
                        let bytes: Vec<u8> = row.get(0);
                        bytes
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<String>()
                            .into_bytes()
                    })
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Logs in: the access and refresh tokens.
async fn login(http: &reqwest::Client, service: &Service, email: &str) -> (String, String) {
    let response = login_at(http, &service.address, email, PASSWORD).await;
    assert_eq!(response.status(), 200, "{email} logs in");
    let body: Value = response.json().await.expect("json");
    (
        body["access_token"].as_str().expect("access").to_owned(),
        body["refresh_token"].as_str().expect("refresh").to_owned(),
    )
}

async fn profile(http: &reqwest::Client, service: &Service, token: &str) -> (u16, Value) {
    let response = http
        .get(service.url("/profile"))
        .bearer_auth(token)
        .send()
        .await
        .expect("answered");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn erase_account(
    http: &reqwest::Client,
    service: &Service,
    token: &str,
    password: &str,
) -> u16 {
    http.delete(service.url("/account"))
        .bearer_auth(token)
        .json(&json!({ "password": password }))
        .send()
        .await
        .expect("answered")
        .status()
        .as_u16()
}

/// `authlog events --format jsonl`, one JSON value per event.
fn events(env: &[(String, String)]) -> Vec<Value> {
    let (status, stdout, stderr) = run(env, &["events", "--format", "jsonl"]);
    assert!(status.success(), "{stderr}");
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

fn registration_of<'a>(events: &'a [Value], user: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event_type"] == "UserRegistered" && e["stream_id"] == user)
        .expect("the user's registration")
}

async fn erase_then_verify_sign_up_again_and_search_the_files(store: Store) {
    let env = store.env();
    let service = Service::start(&env);
    let http = reqwest::Client::new();
    let alice_http = reqwest::Client::builder()
        .user_agent(ALICE_AGENT)
        .build()
        .expect("a client");
    for (client, email) in [(&alice_http, ALICE), (&http, BOB)] {
        assert_eq!(
            signup_at(client, &service.address, email, PASSWORD).await,
            201
        );
    }
    let (access, refresh) = login(&alice_http, &service, ALICE).await;
    let (_, me) = profile(&http, &service, &access).await;
    let alice = me["user_id"].as_str().expect("an id").to_owned();

    // With the master key, the auditor reads Alice's email; nowhere is it stored in clear.
    let before = events(&env);
    assert_eq!(registration_of(&before, &alice)["payload"]["email"], ALICE);
    let wrapped = store.wrapped_key(&alice).await.expect("Alice has a key");
    let raw = store.raw_bytes();
    assert!(
        contains(&raw, &wrapped),
        "the search sees the stored key before the erasure"
    );
    // Every client here is 127.0.0.1: no address is stored in clear, anyone's.
    for secret in [ALICE, ALICE_AGENT, "127.0.0.1"] {
        assert!(!contains(&raw, secret.as_bytes()), "{secret} in clear");
    }

    // A wrong password erases nothing; the right one erases Alice.
    assert_eq!(
        erase_account(&http, &service, &access, "not-the-password").await,
        401
    );
    assert_eq!(profile(&http, &service, &access).await.0, 200);
    assert_eq!(erase_account(&http, &service, &access, PASSWORD).await, 204);

    // Everything of hers stops at once: token, refresh token, password.
    assert_eq!(profile(&http, &service, &access).await.0, 401);
    let refreshed = http
        .post(service.url("/token/refresh"))
        .json(&json!({ "refresh_token": refresh }))
        .send()
        .await
        .expect("answered");
    assert_eq!(refreshed.status(), 401);
    assert_eq!(
        login_at(&http, &service.address, ALICE, PASSWORD)
            .await
            .status(),
        401
    );
    assert_eq!(
        store.wrapped_key(&alice).await,
        None,
        "the key is destroyed"
    );

    // The chain still verifies, and the auditor sees the erasure, not the data.
    let (status, stdout, stderr) = run(&env, &["verify"]);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("chain intact"), "{stdout}");
    let after = events(&env);
    let registration = registration_of(&after, &alice);
    assert_eq!(registration["payload"]["email"], "<erased>");
    assert_eq!(registration["payload"]["password_hash"], "<erased>");
    assert_eq!(registration["metadata"]["user_agent"], "<erased>");
    let erased = after
        .iter()
        .filter(|e| e["stream_id"] == alice.as_str())
        .map(|e| e["event_type"].as_str().expect("a type"))
        .collect::<Vec<_>>();
    assert_eq!(erased.last(), Some(&"UserErased"), "{erased:?}");
    assert!(erased.contains(&"SessionEnded"), "{erased:?}");
    let bob = after
        .iter()
        .find(|e| e["event_type"] == "UserRegistered" && e["payload"]["email"] == BOB);
    assert!(bob.is_some(), "Bob's data still reads");
    let (status, stdout, stderr) = run(&env, &["replay", "--to", "1000000", "--user", &alice]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("email=<erased>"), "{stdout}");
    assert!(!stdout.contains(ALICE), "{stdout}");

    // Neither the files (with the WAL) nor a dump hold her email, agent or key any more.
    let raw = store.raw_bytes();
    for (what, secret) in [
        ("email", ALICE.as_bytes()),
        ("user agent", ALICE_AGENT.as_bytes()),
        ("address", b"127.0.0.1".as_slice()),
        ("wrapped key", wrapped.as_slice()),
    ] {
        assert!(
            !contains(&raw, secret),
            "the erased user's {what} is still stored"
        );
    }

    // The email signs up again, as a new user.
    assert_eq!(
        signup_at(&alice_http, &service.address, ALICE, PASSWORD).await,
        201
    );
    let (again, _) = login(&alice_http, &service, ALICE).await;
    let (status, me) = profile(&http, &service, &again).await;
    assert_eq!(status, 200);
    let new_alice = me["user_id"].as_str().expect("an id").to_owned();
    assert_ne!(new_alice, alice);

    // An admin erases the new Alice; a non-admin may not, and Bob cannot erase the last
    // admin, himself, that way either.
    let (bob_token, _) = login(&http, &service, BOB).await;
    let admin_erase = |token: String, id: String| {
        let http = http.clone();
        let url = service.url(&format!("/admin/users/{id}"));
        async move {
            http.delete(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("answered")
                .status()
                .as_u16()
        }
    };
    assert_eq!(admin_erase(bob_token.clone(), new_alice.clone()).await, 403);
    let (status, _, stderr) = run(
        &env,
        &["admin", "grant-role", "--email", BOB, "--role", "admin"],
    );
    assert!(status.success(), "{stderr}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let bob_admin = loop {
        let (token, _) = login(&http, &service, BOB).await;
        if crate::common::claims_of(&token)["roles"] == json!(["admin"]) {
            break token;
        }
        assert!(Instant::now() < deadline, "the grant was not seen");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    };
    let bob_id = crate::common::claims_of(&bob_admin)["sub"]
        .as_str()
        .expect("sub")
        .to_owned();
    assert_eq!(admin_erase(bob_admin.clone(), bob_id).await, 409);
    assert_eq!(admin_erase(bob_admin.clone(), new_alice.clone()).await, 204);
    assert_eq!(admin_erase(bob_admin, new_alice).await, 404);
    assert_eq!(profile(&http, &service, &again).await.0, 401);
    let (status, stdout, _) = run(&env, &["verify"]);
    assert!(status.success(), "{stdout}");

    // An auditor with the log alone verifies it and sees types, times and streams: no email,
    // no address, no agent, no hash, not even Bob's.
    let copy = tempfile::tempdir().expect("temp dir");
    let auditor = store.env_without_keys(copy.path());
    let (status, stdout, stderr) = run(&auditor, &["verify"]);
    assert!(status.success(), "{stdout}{stderr}");
    let (status, table, stderr) = run(&auditor, &["events"]);
    assert!(status.success(), "{stderr}");
    let sealed = events(&auditor);
    assert!(sealed.len() >= after.len());
    for secret in [BOB, ALICE, ALICE_AGENT, "127.0.0.1", "$2b$"] {
        assert!(!table.contains(secret), "{secret} in {table}");
        assert!(
            !sealed.iter().any(|e| e.to_string().contains(secret)),
            "{secret} shown without the master key"
        );
    }
    let bob_registration = sealed
        .iter()
        .find(|e| e["event_type"] == "UserRegistered" && e["payload"]["email"] == "<sealed>");
    assert!(bob_registration.is_some(), "Bob's email reads <sealed>");
    service.terminate(Duration::from_secs(30));
}

#[actix_web::test]
async fn erasure_on_the_embedded_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    erase_then_verify_sign_up_again_and_search_the_files(Store::Embedded(dir)).await;
}

#[actix_web::test]
async fn erasure_on_postgres() {
    let db = TestDatabase::create().await;
    erase_then_verify_sign_up_again_and_search_the_files(Store::Postgres(Box::new(db))).await;
}

/// A master key that is not the log's: start-up stops with a message that says so, instead
/// of serving a directory of users whose data it cannot read.
async fn a_wrong_master_key_is_refused(env: Vec<(String, String)>, wrong: Vec<(String, String)>) {
    let service = Service::start(&env);
    let http = reqwest::Client::new();
    assert_eq!(
        signup_at(&http, &service.address, ALICE, PASSWORD).await,
        201
    );
    service.terminate(Duration::from_secs(30));
    let (status, _, stderr) = run(&wrong, &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the master key does not open the personal-data key"),
        "{stderr}"
    );
}

#[actix_web::test]
async fn a_wrong_master_key_stops_start_up_on_the_embedded_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = embedded_env(dir.path());
    let mut wrong = env.clone();
    wrong.push((
        "AUTHLOG_MASTER_KEY".to_owned(),
        "a-master-key-that-is-not-this-logs-0123456789abcdef".to_owned(),
    ));
    a_wrong_master_key_is_refused(env, wrong).await;
}

#[actix_web::test]
async fn a_wrong_master_key_stops_start_up_on_postgres() {
    let db = TestDatabase::create().await;
    let env = db.service_env();
    let wrong = vec![
        ("DATABASE_URL".to_owned(), db.url()),
        (
            "AUTHLOG_MASTER_KEY".to_owned(),
            "a-master-key-that-is-not-this-logs-0123456789abcdef".to_owned(),
        ),
    ];
    a_wrong_master_key_is_refused(env, wrong).await;
}

/// Two instances on one database: an erasure on one ends the user's token, refresh and
/// password on the other at once, and the email signs up again there.
#[actix_web::test]
async fn another_instance_sees_the_erasure_at_once() {
    let db = TestDatabase::create().await;
    let env = db.service_env();
    let (one, two) = (Service::start(&env), Service::start(&env));
    let http = reqwest::Client::new();
    assert_eq!(signup_at(&http, &one.address, ALICE, PASSWORD).await, 201);
    let (access, _) = login(&http, &two, ALICE).await;
    assert_eq!(profile(&http, &one, &access).await.0, 200);
    assert_eq!(profile(&http, &two, &access).await.0, 200);

    assert_eq!(erase_account(&http, &one, &access, PASSWORD).await, 204);
    let erased = Instant::now();
    // PostgreSQL notifies the other instance as the erasure commits: allow it a moment.
    loop {
        if profile(&http, &two, &access).await.0 == 401 {
            break;
        }
        assert!(
            erased.elapsed() < Duration::from_secs(2),
            "the other instance still accepts the erased user's token"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "the other instance refused the token after {:?}",
        erased.elapsed()
    );
    assert_eq!(
        login_at(&http, &two.address, ALICE, PASSWORD)
            .await
            .status(),
        401
    );
    assert_eq!(signup_at(&http, &two.address, ALICE, PASSWORD).await, 201);
    assert_eq!(
        login_at(&http, &one.address, ALICE, PASSWORD)
            .await
            .status(),
        200
    );
}

/// `authlog admin erase` from another process while a server runs: the server refuses the
/// erased user's token at once on PostgreSQL (notified as the erasure commits), and within a
/// second on the embedded store (which watches its file for other writers), on which no second
/// server can run.
async fn the_cli_erases_while_a_server_runs(env: Vec<(String, String)>, within: Duration) {
    let service = Service::start(&env);
    let http = reqwest::Client::new();
    assert_eq!(
        signup_at(&http, &service.address, ALICE, PASSWORD).await,
        201
    );
    let (access, _) = login(&http, &service, ALICE).await;
    let (status, stdout, stderr) = run(&env, &["admin", "erase", "--email", ALICE]);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("erased alice.erasure@example.com"),
        "{stdout}"
    );
    let erased = Instant::now();
    while profile(&http, &service, &access).await.0 != 401 {
        assert!(
            erased.elapsed() < within,
            "the server still accepts the erased user's token"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    println!("the server refused the token after {:?}", erased.elapsed());
    let (status, _, stderr) = run(&env, &["admin", "erase", "--email", ALICE]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no user has the email"), "{stderr}");
    assert_eq!(
        signup_at(&http, &service.address, ALICE, PASSWORD).await,
        201
    );
    let (status, stdout, _) = run(&env, &["verify"]);
    assert!(status.success(), "{stdout}");
}

#[actix_web::test]
async fn the_cli_erases_while_a_server_runs_on_the_embedded_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    the_cli_erases_while_a_server_runs(embedded_env(dir.path()), Duration::from_secs(3)).await;
}

#[actix_web::test]
async fn the_cli_erases_while_a_server_runs_on_postgres() {
    let db = TestDatabase::create().await;
    the_cli_erases_while_a_server_runs(db.service_env(), Duration::from_secs(2)).await;
}
