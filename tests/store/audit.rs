//! The auditors' view: tampering caught by `verify` on both stores, `events` and `replay` output
//! on a known log, and the chain checked without authlog by `docs/verify_chain.py`.

use std::process::Command;
use std::sync::Arc;

use crate::common::TestDatabase;
use authlog::audit::{self, EventFilter, ReplayPoint, VerifyOutcome};
use authlog::domain::{Email, UserId};
use authlog::events::{
    Event, EventMetadata, EventStore, LoginFailed, LoginSucceeded, NewEvent, PostgresEventStore,
    PostgresSettings, SqliteEventStore, SqliteSettings, UserRegistered,
};
use authlog::throttle::ThrottlePolicy;
use secrecy::SecretString;
use serde_json::Value;

/// A log on one of the two SQL stores, with a way to change it behind authlog's back.
enum Log {
    Postgres(Box<TestDatabase>, Arc<dyn EventStore>),
    Sqlite(tempfile::TempDir, Arc<dyn EventStore>),
}

impl Log {
    async fn postgres() -> Self {
        let db = TestDatabase::create().await;
        let store =
            PostgresEventStore::connect(&PostgresSettings::new(SecretString::from(db.url())))
                .expect("connects");
        store.migrate().await.expect("migrates");
        Log::Postgres(Box::new(db), Arc::new(store))
    }

    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteEventStore::open(&SqliteSettings::in_dir(dir.path()))
            .await
            .expect("opens");
        Log::Sqlite(dir, Arc::new(store))
    }

    fn store(&self) -> &dyn EventStore {
        match self {
            Log::Postgres(_, store) | Log::Sqlite(_, store) => store.as_ref(),
        }
    }

    /// Runs SQL as the database's owner would, with the append-only rules lifted. `pg` and
    /// `sqlite` are the same change in each dialect.
    async fn tamper(&self, pg: &str, sqlite: &str) {
        match self {
            Log::Postgres(db, _) => db
                .client()
                .await
                .batch_execute(&format!(
                    "ALTER TABLE events DISABLE TRIGGER USER; {pg}; \
                     ALTER TABLE events ENABLE TRIGGER USER"
                ))
                .await
                .expect("tampered as superuser"),
            Log::Sqlite(dir, _) => {
                let connection = rusqlite::Connection::open(dir.path().join("events.db"))
                    .expect("open the file");
                let mut sql = String::new();
                for trigger in [
                    "events_no_update",
                    "events_no_delete",
                    "events_no_replace_position",
                    "events_no_replace_stream_version",
                    "events_no_replace_registered_email",
                ] {
                    sql.push_str(&format!("DROP TRIGGER IF EXISTS {trigger};"));
                }
                sql.push_str(sqlite);
                connection.execute_batch(&sql).expect("tampered");
            }
        }
    }
}

fn ip(last: u8) -> EventMetadata {
    EventMetadata::new(Some([198, 51, 100, last].into()), Some("audit-test"))
}

fn registered(user: UserId, email: &str, last: u8) -> NewEvent {
    NewEvent {
        stream_version: 1,
        event: Event::UserRegistered(UserRegistered {
            user_id: user,
            email: Email::parse(email).expect("valid"),
            password_hash: serde_json::from_value(serde_json::json!(
                "$2b$04$abcdefghijklmnopqrstuuJ3YdsgWvRzXKJe1NVvOQ8Cs3vZ5u3Dq"
            ))
            .expect("hash"),
        }),
        metadata: ip(last),
    }
}

fn login(user: UserId, version: i32, ok: bool, last: u8) -> NewEvent {
    NewEvent {
        stream_version: version,
        event: if ok {
            Event::LoginSucceeded(LoginSucceeded { user_id: user })
        } else {
            Event::LoginFailed(LoginFailed { user_id: user })
        },
        metadata: ip(last),
    }
}

/// Six events: alice registers and logs in, bob registers, alice fails from .66, bob and alice
/// log in.
async fn known_log(store: &dyn EventStore) -> (UserId, UserId) {
    let (alice, bob) = (UserId::new(), UserId::new());
    for batch in [
        vec![
            registered(alice, "alice@example.com", 1),
            login(alice, 2, true, 1),
        ],
        vec![registered(bob, "bob@example.com", 2)],
        vec![login(alice, 3, false, 66)],
        vec![login(bob, 2, true, 2), login(alice, 4, true, 1)],
    ] {
        store.append(batch).await.expect("appends");
    }
    (alice, bob)
}

async fn verify(store: &dyn EventStore, expect: Option<&str>) -> (VerifyOutcome, String) {
    let mut out = Vec::new();
    let outcome = audit::verify(store, expect, &mut out)
        .await
        .expect("verifies");
    (outcome, String::from_utf8(out).expect("utf-8"))
}

fn broken_at(outcome: &VerifyOutcome) -> Option<i64> {
    match outcome {
        VerifyOutcome::Broken(position, _) => Some(*position),
        _ => None,
    }
}

/// Each tampering on each store: verify names the first bad position, or `--expect` catches a
/// removed tail.
async fn tampering_is_caught(
    log: fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Log>>>,
) {
    // An altered payload: the row's own hash no longer matches.
    let changed = log().await;
    known_log(changed.store()).await;
    let (outcome, text) = verify(changed.store(), None).await;
    assert_eq!(outcome, VerifyOutcome::Intact, "{text}");
    changed
        .tamper(
            "UPDATE events SET payload = jsonb_set(payload, '{email}', '\"mallory@example.com\"') \
             WHERE position = 3",
            "UPDATE events SET payload = json_set(payload, '$.email', 'mallory@example.com') \
             WHERE position = 3",
        )
        .await;
    let (outcome, text) = verify(changed.store(), None).await;
    assert_eq!(broken_at(&outcome), Some(3), "{text}");
    assert!(text.contains("BROKEN at position 3"), "{text}");

    // A deleted row: the next row's prev_hash points at nothing.
    let deleted = log().await;
    known_log(deleted.store()).await;
    deleted
        .tamper(
            "DELETE FROM events WHERE position = 4",
            "DELETE FROM events WHERE position = 4",
        )
        .await;
    let (outcome, text) = verify(deleted.store(), None).await;
    assert_eq!(broken_at(&outcome), Some(5), "{text}");

    // Two rows swapped, each keeping its own hashes.
    let swapped = log().await;
    known_log(swapped.store()).await;
    let swap = "CREATE TEMP TABLE moved AS SELECT * FROM events WHERE position IN (2, 4);
        DELETE FROM events WHERE position IN (2, 4);
        INSERT INTO events (position, stream_id, stream_version, event_type, event_version,
                            payload, metadata, recorded_at, prev_hash, hash)
        SELECT CASE position WHEN 2 THEN 4 ELSE 2 END, stream_id, stream_version, event_type,
               event_version, payload, metadata, recorded_at, prev_hash, hash FROM moved";
    swapped.tamper(swap, swap).await;
    let (outcome, text) = verify(swapped.store(), None).await;
    assert_eq!(broken_at(&outcome), Some(2), "{text}");

    // The tail removed: the chain that is left is intact, but the recorded head is gone.
    let truncated = log().await;
    known_log(truncated.store()).await;
    let (_, before) = verify(truncated.store(), None).await;
    let head_hash = before
        .lines()
        .find_map(|line| line.strip_prefix("head hash: "))
        .expect("head hash")
        .to_owned();
    let expect = format!("{head_hash}@6");
    let (outcome, _) = verify(truncated.store(), Some(&expect)).await;
    assert_eq!(outcome, VerifyOutcome::Intact);
    truncated
        .tamper(
            "DELETE FROM events WHERE position > 4",
            "DELETE FROM events WHERE position > 4",
        )
        .await;
    let (outcome, text) = verify(truncated.store(), None).await;
    assert_eq!(
        outcome,
        VerifyOutcome::Intact,
        "alone, a shorter chain looks fine: {text}"
    );
    let (outcome, text) = verify(truncated.store(), Some(&expect)).await;
    assert!(
        matches!(outcome, VerifyOutcome::ExpectedHeadMissing(_)),
        "{text}"
    );
    assert!(text.contains("no event at position 6"), "{text}");
}

#[actix_web::test]
async fn tampering_with_postgres_is_caught() {
    tampering_is_caught(|| Box::pin(Log::postgres())).await;
}

#[actix_web::test]
async fn tampering_with_the_embedded_store_is_caught() {
    tampering_is_caught(|| Box::pin(Log::sqlite())).await;
}

#[actix_web::test]
async fn events_lists_filters_and_never_shows_a_hash() {
    let log = Log::sqlite().await;
    let (alice, _) = known_log(log.store()).await;
    let list = |filter: EventFilter, jsonl: bool| {
        let store = log.store();
        async move {
            let mut out = Vec::new();
            let count = audit::events(store, &filter, jsonl, &mut out)
                .await
                .expect("lists");
            (count, String::from_utf8(out).expect("utf-8"))
        }
    };
    let (count, table) = list(EventFilter::default(), false).await;
    assert_eq!(count, 6);
    assert_eq!(table.lines().count(), 7, "a header and six rows:\n{table}");
    assert!(table.lines().next().is_some_and(|h| h.contains("position")));
    assert!(
        !table.contains("$2b$"),
        "no password hash in full:\n{table}"
    );
    assert!(table.contains("password=sha256:"), "{table}");

    let (count, _) = list(
        EventFilter {
            user: Some("alice@example.com".into()),
            ..Default::default()
        },
        false,
    )
    .await;
    assert_eq!(count, 4);
    let (count, _) = list(
        EventFilter {
            user: Some(alice.to_string()),
            ..Default::default()
        },
        false,
    )
    .await;
    assert_eq!(count, 4);
    let (count, _) = list(
        EventFilter {
            event_type: Some("LoginFailed".into()),
            ..Default::default()
        },
        false,
    )
    .await;
    assert_eq!(count, 1);
    let (count, _) = list(
        EventFilter {
            from: Some(3),
            to: Some(4),
            ..Default::default()
        },
        false,
    )
    .await;
    assert_eq!(count, 2);

    let (count, lines) = list(EventFilter::default(), true).await;
    assert_eq!(count, 6);
    for line in lines.lines() {
        let event: Value = serde_json::from_str(line).expect("a JSON line");
        assert!(
            event["position"].is_i64() && event["recorded_at"].is_string(),
            "{line}"
        );
        if event["event_type"] == "UserRegistered" {
            let hash = event["payload"]["password_hash"]
                .as_str()
                .expect("fingerprint");
            assert!(hash.starts_with("sha256:") && hash.len() == 19, "{hash}");
        }
    }
    let since = lines
        .lines()
        .nth(2)
        .map(|l| serde_json::from_str::<Value>(l).expect("json"));
    let since = since.expect("third")["recorded_at"]
        .as_str()
        .expect("time")
        .parse()
        .expect("time");
    let (count, _) = list(
        EventFilter {
            since: Some(since),
            ..Default::default()
        },
        true,
    )
    .await;
    assert!(count >= 4, "from the third event on");
}

async fn replay(store: &dyn EventStore, point: ReplayPoint, user: &str) -> String {
    let mut out = Vec::new();
    audit::replay(
        store,
        point,
        Some(user),
        ThrottlePolicy::default(),
        &mut out,
    )
    .await
    .expect("replays");
    String::from_utf8(out).expect("utf-8")
}

#[actix_web::test]
async fn replay_answers_who_could_log_in_when() {
    let log = Log::sqlite().await;
    let (alice, _) = known_log(log.store()).await;
    let store = log.store();

    let before = replay(store, ReplayPoint::Position(0), "alice@example.com").await;
    assert!(before.contains("users: 0"), "{before}");
    assert!(before.contains(": no (not registered)"), "{before}");

    let after = replay(store, ReplayPoint::Position(2), "alice@example.com").await;
    assert!(after.contains("users: 1"), "{after}");
    assert!(after.contains("logins: 1 succeeded, 0 failed"), "{after}");
    assert!(
        after.contains("yes, with the right password, from any address"),
        "{after}"
    );
    assert_eq!(
        after.lines().filter(|l| l.contains("  #")).count(),
        2,
        "{after}"
    );

    // Four more failures from .66 make five: that address is locked, others are not.
    for version in 5..=8 {
        store
            .append(vec![login(alice, version, false, 66)])
            .await
            .expect("appends");
    }
    let rows = store.read_after(0, 100).await.expect("reads");
    let last = rows.last().expect("events").recorded_at;
    let during = replay(store, ReplayPoint::At(last), &alice.to_string()).await;
    assert!(during.contains("logins: 3 succeeded, 5 failed"), "{during}");
    assert!(
        during.contains("yes, with the right password, except:"),
        "{during}"
    );
    assert!(
        during.contains("from 198.51.100.66: locked for 30 s more"),
        "{during}"
    );
    // Long after the window, the lock has passed.
    let later = replay(
        store,
        ReplayPoint::At(last + chrono::Duration::minutes(5)),
        "alice@example.com",
    )
    .await;
    assert!(later.contains("from any address"), "{later}");
}

#[actix_web::test]
async fn the_binary_exits_1_on_a_broken_chain_and_the_python_script_agrees() {
    let log = Log::sqlite().await;
    known_log(log.store()).await;
    let Log::Sqlite(dir, _) = &log else {
        unreachable!()
    };
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_authlog"))
            .args(args)
            .env_remove("DATABASE_URL")
            .env("AUTHLOG_DATA_DIR", dir.path())
            .output()
            .expect("runs")
    };
    let intact = run(&["verify"]);
    assert!(intact.status.success());
    let report = String::from_utf8_lossy(&intact.stdout).into_owned();
    assert!(
        report.contains("events: 6") && report.contains("chain intact"),
        "{report}"
    );

    // docs/verify_chain.py reaches the same head without authlog.
    let script = Command::new("python3")
        .args(["docs/verify_chain.py", "--sqlite"])
        .arg(dir.path().join("events.db"))
        .output()
        .expect("python3 runs");
    assert!(
        script.status.success(),
        "{}",
        String::from_utf8_lossy(&script.stderr)
    );
    let python = String::from_utf8_lossy(&script.stdout).into_owned();
    for line in python.lines() {
        assert!(
            report.contains(line),
            "authlog and the script disagree on {line:?}:\n{report}"
        );
    }

    log.tamper("", "UPDATE events SET metadata = '{}' WHERE position = 5")
        .await;
    let broken = run(&["verify"]);
    assert_eq!(broken.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&broken.stdout).contains("BROKEN at position 5"));
    let script = Command::new("python3")
        .args(["docs/verify_chain.py", "--sqlite"])
        .arg(dir.path().join("events.db"))
        .output()
        .expect("python3 runs");
    assert_eq!(script.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&script.stdout).trim(),
        "BROKEN at position 5"
    );
}

#[actix_web::test]
async fn the_python_script_verifies_postgres_from_psql() {
    let log = Log::postgres().await;
    known_log(log.store()).await;
    let Log::Postgres(db, _) = &log else {
        unreachable!()
    };
    let mut out = Vec::new();
    audit::verify(log.store(), None, &mut out)
        .await
        .expect("verifies");
    let report = String::from_utf8(out).expect("utf-8");
    let shell = format!(
        "psql '{}' -At -F $'\\t' -c \"{}\" | python3 docs/verify_chain.py",
        db.url(),
        PSQL_QUERY.replace('"', "\\\"")
    );
    let script = Command::new("bash")
        .args(["-c", &shell])
        .output()
        .expect("bash runs");
    assert!(
        script.status.success(),
        "{}{}",
        String::from_utf8_lossy(&script.stdout),
        String::from_utf8_lossy(&script.stderr)
    );
    for line in String::from_utf8_lossy(&script.stdout).lines() {
        assert!(report.contains(line), "{line:?} not in {report}");
    }
}

/// The query docs/auditing.md gives for PostgreSQL (kept identical; a test below checks).
const PSQL_QUERY: &str = "SELECT position, stream_id, stream_version, event_type, event_version, payload::text, metadata::text, to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), prev_hash, hash FROM events ORDER BY position";

#[test]
fn the_auditing_doc_shows_the_tested_script_and_query() {
    let doc = std::fs::read_to_string("docs/auditing.md").expect("docs/auditing.md");
    let script = std::fs::read_to_string("docs/verify_chain.py").expect("the script");
    assert!(
        doc.contains(script.trim()),
        "docs/auditing.md must show docs/verify_chain.py as it is"
    );
    assert!(
        doc.contains(PSQL_QUERY),
        "docs/auditing.md must show the tested psql query"
    );
}
