//! Log signatures and checkpoints (issue 19), against the real binary on both stores: a row
//! forged with nothing but INSERT rights, with a correctly computed chain hash, is applied by no
//! instance (at once or after a restart), raises the alarm, and is named by `verify`, `replay`
//! and the Python verifier; checkpoints catch a cut tail and a chain rewritten even with the
//! signing key; a rotated log key is vouched for by the one before it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use authlog::events::chain::hash_row;
use authlog::events::signed::LogSigner;
use authlog::events::{Event, StoredColumns};
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::service::{Service, embedded_env, login_at, run, signup_at};
use crate::common::{TEST_MASTER_KEY, TestDatabase, master_key};

const ALICE: &str = "alice.signed@example.com";
const PASSWORD: &str = "correct-horse-battery";
const ATTACKER_PASSWORD: &str = "mallory-was-here-42";

/// The embedded store in `dir`, with the tests' master key given (not generated), so a test can
/// sign as the key's holder would.
fn embedded(dir: &Path) -> Vec<(String, String)> {
    let mut env = embedded_env(dir);
    env.push(("AUTHLOG_MASTER_KEY".to_owned(), TEST_MASTER_KEY.to_owned()));
    env
}

/// What a forger reads and writes: the head, and a user's stream.
enum Raw<'a> {
    Sqlite(&'a Path),
    Postgres(&'a TestDatabase),
}

/// The row a forger with INSERT rights writes: a `PasswordRehashed` giving the victim a hash of
/// the attacker's password, in clear (as an event from before sealing would hold it), chained
/// onto the head with a correctly computed hash. Returns its position.
async fn forge(raw: Raw<'_>) -> i64 {
    let attacker_hash = bcrypt::hash(ATTACKER_PASSWORD, 4).expect("bcrypt");
    match raw {
        Raw::Sqlite(dir) => {
            let connection =
                rusqlite::Connection::open(dir.join("events.db")).expect("open the file");
            let (head, hash, at): (i64, String, String) = connection
                .query_row(
                    "SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .expect("the head");
            let (stream, version): (String, i32) = connection
                .query_row(
                    "SELECT stream_id, max(stream_version) FROM events WHERE stream_id = \
                     (SELECT stream_id FROM events WHERE event_type = 'UserRegistered' LIMIT 1)",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .expect("the victim's stream");
            let at = DateTime::parse_from_rfc3339(&at).expect("a time").to_utc();
            let columns = forged(
                head + 1,
                stream.parse().expect("uuid"),
                version + 1,
                &attacker_hash,
                at,
            );
            let forged_hash = hash_row(&hash, &columns);
            connection
                .execute(
                    "INSERT INTO events (position, stream_id, stream_version, event_type, \
                     event_version, payload, metadata, recorded_at, prev_hash, hash) \
                     VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, ?9)",
                    rusqlite::params![
                        columns.position,
                        stream,
                        columns.stream_version,
                        columns.event_type,
                        columns.payload.to_string(),
                        columns.metadata.to_string(),
                        columns
                            .recorded_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                        hash,
                        forged_hash,
                    ],
                )
                .expect("inserted with INSERT rights alone");
            head + 1
        }
        Raw::Postgres(db) => {
            let client = db.client().await;
            let row = client
                .query_one(
                    "SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1",
                    &[],
                )
                .await
                .expect("the head");
            let (head, hash, at): (i64, String, DateTime<Utc>) =
                (row.get(0), row.get(1), row.get(2));
            let row = client
                .query_one(
                    "SELECT stream_id, max(stream_version) FROM events WHERE stream_id = \
                     (SELECT stream_id FROM events WHERE event_type = 'UserRegistered' LIMIT 1) \
                     GROUP BY stream_id",
                    &[],
                )
                .await
                .expect("the victim's stream");
            let (stream, version): (Uuid, i32) = (row.get(0), row.get(1));
            let columns = forged(head + 1, stream, version + 1, &attacker_hash, at);
            let forged_hash = hash_row(&hash, &columns);
            client
                .execute(
                    "INSERT INTO events (position, stream_id, stream_version, event_type, \
                     event_version, payload, metadata, recorded_at, prev_hash, hash) \
                     VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9)",
                    &[
                        &columns.position,
                        &columns.stream_id,
                        &columns.stream_version,
                        &columns.event_type,
                        &columns.payload,
                        &columns.metadata,
                        &columns.recorded_at,
                        &hash,
                        &forged_hash,
                    ],
                )
                .await
                .expect("inserted with INSERT rights alone");
            head + 1
        }
    }
}

fn forged(
    position: i64,
    stream: Uuid,
    version: i32,
    password_hash: &str,
    after: DateTime<Utc>,
) -> StoredColumns {
    StoredColumns {
        position,
        stream_id: stream,
        stream_version: version,
        event_type: Event::PASSWORD_REHASHED.to_owned(),
        event_version: 1,
        payload: json!({"user_id": stream, "password_hash": password_hash}),
        metadata: json!({}),
        recorded_at: (after + chrono::TimeDelta::milliseconds(1)).trunc_subsecs(6),
    }
}

/// Waits (up to 5 s) for the instance's readiness to name `position` as untrusted.
async fn alarm_raised(http: &reqwest::Client, service: &Service, position: i64) -> String {
    let started = Instant::now();
    loop {
        let response = http
            .get(service.url("/health/ready"))
            .send()
            .await
            .expect("readiness answered");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let detail = body["detail"].as_str().unwrap_or_default().to_owned();
        if status == 503 && detail.contains(&format!("position {position}")) {
            return detail;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no alarm for position {position}: {status} {body}"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The log's first public key, as an auditor pins it.
fn public_key(env: &[(String, String)]) -> String {
    let (status, out, err) = run(env, &["log-key", "show"]);
    assert!(status.success(), "{err}");
    out.lines()
        .find_map(|line| line.strip_prefix("generation 1: "))
        .expect("generation 1's key")
        .trim()
        .to_owned()
}

async fn access_token(http: &reqwest::Client, service: &Service) -> String {
    let response = login_at(http, &service.address, ALICE, PASSWORD).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    body["access_token"].as_str().expect("a token").to_owned()
}

async fn profile(http: &reqwest::Client, service: &Service, token: &str) -> u16 {
    http.get(service.url("/profile"))
        .bearer_auth(token)
        .send()
        .await
        .expect("profile answered")
        .status()
        .as_u16()
}

/// The forged row against `instances` running servers: none applies it, each raises the alarm
/// and goes on serving; the auditors' tools name its position; a restarted instance refuses it
/// too.
async fn a_forged_row_is_applied_by_no_instance(
    env: Vec<(String, String)>,
    raw: Raw<'_>,
    instances: usize,
    python: &dyn Fn(&str) -> (Option<i32>, String),
) {
    let services: Vec<Service> = (0..instances).map(|_| Service::start(&env)).collect();
    let http = reqwest::Client::new();
    assert_eq!(
        signup_at(&http, &services[0].address, ALICE, PASSWORD).await,
        201
    );
    // Alice is an admin too, to read her own history through the admin API.
    let (status, _, stderr) = run(
        &env,
        &["admin", "grant-role", "--email", ALICE, "--role", "admin"],
    );
    assert!(status.success(), "{stderr}");
    let started = Instant::now();
    let token = loop {
        let token = access_token(&http, services.last().expect("one")).await;
        if crate::common::claims_of(&token)["roles"] == json!(["admin"]) {
            break token;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the grant was not seen"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    };
    let alice = crate::common::claims_of(&token)["sub"]
        .as_str()
        .expect("sub")
        .to_owned();
    let key = public_key(&env);
    let (status, out, _) = run(&env, &["verify", "--public-key", &key]);
    assert!(status.success(), "{out}");
    assert!(
        out.contains("signatures: ") && out.contains("all valid"),
        "{out}"
    );
    let (code, out) = python(&key);
    assert_eq!(code, Some(0), "{out}");

    let position = forge(raw).await;
    for service in &services {
        let detail = alarm_raised(&http, service, position).await;
        assert!(detail.contains("no log signature covers it"), "{detail}");
        // The attacker's password opens nothing; the instance still serves what it had.
        let attempt = login_at(&http, &service.address, ALICE, ATTACKER_PASSWORD).await;
        assert_ne!(attempt.status(), 200, "the forged hash was applied");
        assert_eq!(profile(&http, service, &token).await, 200);
        // The admin API's history shows what the instance applied, not the forged row.
        let history: Value = http
            .get(service.url(&format!("/admin/users/{alice}/events")))
            .bearer_auth(&token)
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("json");
        let types: Vec<&str> = history["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter_map(|event| event["event_type"].as_str())
            .collect();
        assert!(types.contains(&"RoleGranted"), "{history}");
        assert!(!types.contains(&"PasswordRehashed"), "{history}");
        assert_eq!(
            service.metric("authlog_log_untrusted_position").await,
            position as f64
        );
        assert!(
            service
                .log_lines()
                .iter()
                .any(|line| line.contains(&format!("row at position {position} is not applied"))),
            "no error line"
        );
    }

    let (status, out, _) = run(&env, &["verify", "--public-key", &key]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!("UNSIGNED at position {position}")),
        "{out}"
    );
    let (code, out) = python(&key);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("UNSIGNED at position {position}")),
        "{out}"
    );
    let (status, out, err) = run(
        &env,
        &["replay", "--to", &position.to_string(), "--user", ALICE],
    );
    assert!(status.success(), "{err}");
    assert!(
        out.contains(&format!("REFUSED: the row at position {position}")),
        "{out}"
    );
    assert!(!out.contains("PasswordRehashed"), "{out}");

    // A restart replays the log and refuses the row just the same.
    drop(services);
    let restarted = Service::start(&env);
    alarm_raised(&http, &restarted, position).await;
    assert_eq!(
        restarted.metric("authlog_log_untrusted_position").await,
        position as f64
    );
    let attempt = login_at(&http, &restarted.address, ALICE, ATTACKER_PASSWORD).await;
    assert_ne!(
        attempt.status(),
        200,
        "the forged hash was applied after a restart"
    );
    assert_eq!(profile(&http, &restarted, &token).await, 200);
}

fn python_sqlite(dir: &Path) -> impl Fn(&str) -> (Option<i32>, String) {
    let db = dir.join("events.db");
    move |key: &str| {
        let output = Command::new("python3")
            .args(["docs/verify_chain.py", "--public-key", key, "--sqlite"])
            .arg(&db)
            .output()
            .expect("python3 runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }
}

fn python_postgres(url: String) -> impl Fn(&str) -> (Option<i32>, String) {
    move |key: &str| {
        let shell = format!(
            "psql '{url}' -At -F $'\\t' -c \"{}\" | python3 docs/verify_chain.py --public-key {key}",
            crate::common::PSQL_QUERY.replace('"', "\\\"")
        );
        let output = Command::new("bash")
            .args(["-c", &shell])
            .output()
            .expect("bash runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }
}

#[actix_web::test]
async fn a_forged_row_is_applied_by_neither_of_two_instances_on_postgres() {
    let db = TestDatabase::create().await;
    let env = db.service_env();
    let python = python_postgres(db.url());
    a_forged_row_is_applied_by_no_instance(env, Raw::Postgres(&db), 2, &python).await;
}

/// The embedded store serves one instance by design: the forger writes to its file while it
/// runs, and the server sees the write within its half-second watch.
#[actix_web::test]
async fn a_forged_row_is_not_applied_on_the_embedded_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let python = python_sqlite(dir.path());
    a_forged_row_is_applied_by_no_instance(
        embedded(dir.path()),
        Raw::Sqlite(dir.path()),
        1,
        &python,
    )
    .await;
}

/// `verify --checkpoints` against a copy of the log changed as an attacker would.
fn verify_checkpoints(dir: &Path, key: &str, checkpoints: &Path) -> (Option<i32>, String) {
    let (status, out, _) = run(
        &embedded(dir),
        &[
            "verify",
            "--public-key",
            key,
            "--checkpoints",
            &checkpoints.display().to_string(),
        ],
    );
    (status.code(), out)
}

fn python_checkpoints(dir: &Path, key: &str, checkpoints: &Path) -> (Option<i32>, String) {
    let output = Command::new("python3")
        .args(["docs/verify_chain.py", "--public-key", key, "--checkpoints"])
        .arg(checkpoints)
        .arg("--sqlite")
        .arg(dir.join("events.db"))
        .env("AUTHLOG_PURE_ED25519", "1")
        .output()
        .expect("python3 runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// A copy of the data directory's log, with the append-only triggers gone: what a database
/// owner can make of it.
fn owned_copy(from: &Path) -> (tempfile::TempDir, rusqlite::Connection) {
    let copy = tempfile::tempdir().expect("temp dir");
    let source = rusqlite::Connection::open(from.join("events.db")).expect("open");
    source
        .execute_batch(&format!(
            "VACUUM INTO '{}'",
            copy.path().join("events.db").display()
        ))
        .expect("copied");
    let connection = rusqlite::Connection::open(copy.path().join("events.db")).expect("open");
    let triggers: Vec<String> = connection
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        .and_then(|mut select| {
            select
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()
        })
        .expect("the triggers");
    for trigger in triggers {
        connection
            .execute_batch(&format!("DROP TRIGGER {trigger}"))
            .expect("dropped");
    }
    (copy, connection)
}

#[actix_web::test]
async fn checkpoints_catch_a_cut_tail_and_a_chain_rewritten_with_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = embedded(dir.path());
    let checkpoints = dir.path().join("checkpoints.jsonl");
    let http = reqwest::Client::new();
    let service = Service::start(&env);
    for n in 0..3 {
        let email = format!("user{n}@example.com");
        assert_eq!(
            signup_at(&http, &service.address, &email, PASSWORD).await,
            201
        );
    }
    let to = checkpoints.display().to_string();
    let (status, out, err) = run(&env, &["checkpoint", "--to", &to]);
    assert!(status.success(), "{out}{err}");
    for n in 3..6 {
        let email = format!("user{n}@example.com");
        assert_eq!(
            signup_at(&http, &service.address, &email, PASSWORD).await,
            201
        );
    }
    let (status, out, err) = run(&env, &["checkpoint", "--to", &to]);
    assert!(status.success(), "{out}{err}");
    drop(service);
    let key = public_key(&env);
    let anchored = authlog::checkpoint::read(&checkpoints).expect("the checkpoints");
    assert!(anchored.len() >= 2, "{anchored:?}");
    let last = anchored.last().expect("one").position;

    let (code, out) = verify_checkpoints(dir.path(), &key, &checkpoints);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("checkpoints: {} anchored", anchored.len())),
        "{out}"
    );
    let (code, out) = python_checkpoints(dir.path(), &key, &checkpoints);
    assert_eq!(code, Some(0), "{out}");

    // The tail cut back to an earlier signed head: every signature left still verifies, and the
    // chain is whole; only the checkpoint knows the log was longer.
    let (cut, connection) = owned_copy(dir.path());
    let earlier: i64 = connection
        .query_row(
            "SELECT max(position) FROM events WHERE signature IS NOT NULL AND position < ?1",
            [last],
            |row| row.get(0),
        )
        .expect("an earlier signed head");
    connection
        .execute("DELETE FROM events WHERE position > ?1", [earlier])
        .expect("cut");
    drop(connection);
    std::fs::copy(dir.path().join("master-key"), cut.path().join("master-key")).ok();
    let (status, out, _) = run(&embedded(cut.path()), &["verify", "--public-key", &key]);
    assert!(
        status.success(),
        "without checkpoints the cut log looks whole: {out}"
    );
    let (code, out) = verify_checkpoints(cut.path(), &key, &checkpoints);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("its tail was removed"), "{out}");
    let (code, out) = python_checkpoints(cut.path(), &key, &checkpoints);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("CHECKPOINT MISSING: position {last}")),
        "{out}"
    );

    // The whole chain rewritten and re-signed by someone holding the key: one early event
    // changed, every hash after it recomputed, every batch signed again. Signatures and chain
    // verify; the anchored checkpoints do not.
    let (rewritten, connection) = owned_copy(dir.path());
    connection
        .execute(
            "UPDATE events SET metadata = '{\"actor\":\"history-rewriter\"}' WHERE position = 1",
            [],
        )
        .expect("changed");
    resign(&connection, &LogSigner::new(&master_key()));
    drop(connection);
    let (status, out, _) = run(
        &embedded(rewritten.path()),
        &["verify", "--public-key", &key],
    );
    assert!(
        status.success(),
        "the re-signed log verifies on its own: {out}"
    );
    let (code, out) = verify_checkpoints(rewritten.path(), &key, &checkpoints);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("the log was rewritten"), "{out}");
    let (code, out) = python_checkpoints(rewritten.path(), &key, &checkpoints);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("CHECKPOINT MISSING"), "{out}");
}

/// A row's columns as SQLite stores them, and its signature.
type RawRow = (
    i64,
    String,
    i32,
    String,
    i32,
    String,
    String,
    String,
    Option<String>,
);

/// Recomputes every hash in position order and signs every signed row again with generation 1.
fn resign(connection: &rusqlite::Connection, signer: &LogSigner) {
    let rows: Vec<RawRow> = connection
        .prepare(
            "SELECT position, stream_id, stream_version, event_type, event_version, payload, \
                 metadata, recorded_at, signature FROM events ORDER BY position",
        )
        .and_then(|mut select| {
            select
                .query_map([], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                        row.get(7)?,
                        row.get(8)?,
                    ))
                })?
                .collect::<Result<_, _>>()
        })
        .expect("the rows");
    let mut prev = authlog::events::chain::GENESIS.to_owned();
    for (position, stream, version, event_type, event_version, payload, metadata, at, signature) in
        rows
    {
        let columns = StoredColumns {
            position,
            stream_id: stream.parse().expect("uuid"),
            stream_version: version,
            event_type,
            event_version,
            payload: serde_json::from_str(&payload).expect("json"),
            metadata: serde_json::from_str(&metadata).expect("json"),
            recorded_at: DateTime::parse_from_rfc3339(&at).expect("time").to_utc(),
        };
        let hash = hash_row(&prev, &columns);
        let signature = signature.map(|_| signer.sign_head(1, position, &hash));
        connection
            .execute(
                "UPDATE events SET prev_hash = ?1, hash = ?2, signature = ?3 WHERE position = ?4",
                rusqlite::params![prev, hash, signature, position],
            )
            .expect("re-linked");
        prev = hash;
    }
}

#[actix_web::test]
async fn a_rotated_log_key_is_vouched_for_by_the_one_before() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = embedded(dir.path());
    let http = reqwest::Client::new();
    let service = Service::start(&env);
    assert_eq!(
        signup_at(&http, &service.address, ALICE, PASSWORD).await,
        201
    );
    let first = public_key(&env);

    // While the server runs: the command appends the rotation, signed by generation 1.
    let (status, out, err) = run(&env, &["log-key", "rotate"]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("signed by generation 2"), "{out}");
    let started = Instant::now();
    loop {
        let keys: Value = http
            .get(service.url("/.well-known/authlog-log-keys.json"))
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("json");
        if keys["keys"].as_array().is_some_and(|keys| keys.len() == 2) {
            assert_eq!(keys["keys"][0]["public_key"], first.as_str());
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{keys}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    // The server appends with generation 2 now, and keeps applying its own and others' rows.
    let token = access_token(&http, &service).await;
    assert_eq!(profile(&http, &service, &token).await, 200);
    let ready = http
        .get(service.url("/health/ready"))
        .send()
        .await
        .expect("answered");
    assert_eq!(ready.status(), 200);

    let (status, out, _) = run(&env, &["verify", "--public-key", &first]);
    assert!(status.success(), "{out}");
    assert!(out.contains("log-signing key generation 2"), "{out}");
    let (code, out) = python_sqlite(dir.path())(&first);
    assert_eq!(code, Some(0), "{out}");

    // A restart follows the rotation too.
    drop(service);
    let restarted = Service::start(&env);
    let token = access_token(&http, &restarted).await;
    assert_eq!(profile(&http, &restarted, &token).await, 200);
    let (status, out, _) = run(&env, &["verify", "--public-key", &first]);
    assert!(status.success(), "{out}");

    // A key that is not the log's signs nothing an auditor pinning the first accepts.
    let stranger = LogSigner::new(&authlog::vault::MasterKey::random());
    let other = authlog::events::signed::encode_key(&stranger.public_key(1));
    let (status, out, err) = run(&env, &["verify", "--public-key", &other]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(out.contains("UNSIGNED at position"), "{out}");
}

/// A server writes checkpoints to its file by itself: at start-up, every N events (here 1), and
/// at shutdown, each one the head it has applied; `verify --checkpoints` finds them all.
#[actix_web::test]
async fn a_server_anchors_checkpoints_as_it_goes_and_at_shutdown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let anchor = tempfile::tempdir().expect("another volume, say");
    let file = anchor.path().join("checkpoints.jsonl");
    let mut env = embedded(dir.path());
    env.push((
        "AUTHLOG_CHECKPOINT_FILE".to_owned(),
        file.display().to_string(),
    ));
    env.push(("AUTHLOG_CHECKPOINT_EVERY_EVENTS".to_owned(), "1".to_owned()));
    let service = Service::start(&env);
    let http = reqwest::Client::new();
    assert_eq!(
        signup_at(&http, &service.address, ALICE, PASSWORD).await,
        201
    );
    let started = Instant::now();
    while authlog::checkpoint::read(&file).map_or(0, |found| found.len()) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no checkpoint after the sign-up"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let token = access_token(&http, &service).await;
    assert_eq!(profile(&http, &service, &token).await, 200);
    let (status, _) = service.terminate(Duration::from_secs(30));
    assert!(status.success());
    let anchored = authlog::checkpoint::read(&file).expect("the checkpoints");
    let last = anchored.last().expect("one at shutdown");
    let connection = rusqlite::Connection::open(dir.path().join("events.db")).expect("open");
    let head: i64 = connection
        .query_row("SELECT max(position) FROM events", [], |row| row.get(0))
        .expect("the head");
    assert_eq!(
        last.position, head,
        "the last checkpoint is the head at shutdown"
    );
    let key = public_key(&env);
    let (code, out) = verify_checkpoints(dir.path(), &key, &file);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("checkpoints: {} anchored", anchored.len())),
        "{out}"
    );
}
