//! The auditors' view: tampering caught by `verify` on both stores, `events` and `replay` output
//! on a known log, and the chain checked without authlog by `docs/verify_chain.py`.

use std::process::Command;
use std::sync::Arc;

use crate::common::TestDatabase;
use authlog::audit::{self, EventFilter, ExpectedHead, ReplayPoint, VerifyOutcome};
use authlog::domain::{Email, SessionId, UserId};
use authlog::events::{
    EndReason, Event, EventMetadata, EventStore, LoginFailed, LoginSucceeded, NewEvent,
    PostgresEventStore, PostgresSettings, SessionEnded, SessionStarted, SqliteEventStore,
    SqliteSettings, UserRegistered,
};
use authlog::throttle::ThrottlePolicy;
use chrono::SubsecRound as _;
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
                .expect("connects")
                .with_personal_data(crate::common::shredder());
        store.migrate().await.expect("migrates");
        Log::Postgres(Box::new(db), Arc::new(store))
    }

    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteEventStore::open(&SqliteSettings::in_dir(dir.path()))
            .await
            .expect("opens")
            .with_personal_data(crate::common::shredder());
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
            imported: None,
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
    let expect = expect.map(|raw| raw.parse::<ExpectedHead>().expect("HASH@POSITION"));
    let outcome = audit::verify(store, expect.as_ref(), &mut out)
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
        store.log_signer().map(|signer| signer.trust()),
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

use crate::common::PSQL_QUERY;

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

/// The binary, reading the embedded log in `data_dir` (no DATABASE_URL); status and output.
fn authlog(data_dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_authlog"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env("AUTHLOG_DATA_DIR", data_dir)
        .output()
        .expect("runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The finding: JSON text edited so that it decodes to the same value (whitespace, a leading
/// duplicate key) kept the chain intact, yet SQL's json_extract, and so the unique-email index,
/// saw the attacker's email.
#[actix_web::test]
async fn edits_that_decode_to_the_same_event_are_caught() {
    for (name, edit) in [
        (
            "whitespace",
            "UPDATE events SET payload = replace(payload, ',', ', ') WHERE position = 3",
        ),
        (
            "a leading duplicate key",
            "UPDATE events SET payload = '{\"email\":\"attacker@evil.example\",' \
             || substr(payload, 2) WHERE position = 3",
        ),
        (
            "whitespace before the metadata",
            "UPDATE events SET metadata = ' ' || metadata WHERE position = 3",
        ),
    ] {
        let log = Log::sqlite().await;
        known_log(log.store()).await;
        log.tamper("", edit).await;
        let Log::Sqlite(dir, _) = &log else {
            unreachable!()
        };
        let (outcome, text) = verify(log.store(), None).await;
        assert_eq!(broken_at(&outcome), Some(3), "{name}: {text}");
        assert!(
            text.contains("not the canonical encoding"),
            "{name}: {text}"
        );
        let script = Command::new("python3")
            .args(["docs/verify_chain.py", "--sqlite"])
            .arg(dir.path().join("events.db"))
            .output()
            .expect("python3 runs");
        assert_eq!(script.status.code(), Some(1), "{name}: the script agrees");
        assert_eq!(
            String::from_utf8_lossy(&script.stdout).trim(),
            "BROKEN at position 3",
            "{name}"
        );
    }
}

#[actix_web::test]
async fn audit_commands_refuse_a_store_that_does_not_exist_and_create_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no").join("such").join("dir");
    for args in [&["verify"][..], &["events"], &["replay", "--to", "1"]] {
        let (status, stdout, stderr) = authlog(&missing, args);
        assert_eq!(status, Some(3), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.starts_with("authlog: error: there is no event log at "),
            "{args:?}: a plain message, not a log line: {stderr}"
        );
        assert!(!stdout.contains("chain intact"), "{stdout}");
    }
    assert!(!dir.path().join("no").exists(), "nothing was created");
}

#[actix_web::test]
async fn a_read_only_copy_verifies_with_authlog_and_the_script() {
    let log = Log::sqlite().await;
    known_log(log.store()).await;
    let Log::Sqlite(dir, store) = log else {
        unreachable!()
    };
    drop(store);
    // A copy on read-only media: a directory and file nobody may write, read as another user
    // when the tests run as root (root may write anything).
    let copy = tempfile::tempdir().expect("temp dir");
    let file = copy.path().join("events.db");
    std::fs::copy(dir.path().join("events.db"), &file).expect("copy");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    std::fs::set_permissions(copy.path(), std::fs::Permissions::from_mode(0o555)).expect("chmod");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    let as_reader = |program: &str| {
        let mut command = if root {
            let mut command = Command::new("setpriv");
            command.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
            command
        } else {
            Command::new(program)
        };
        command.env_remove("DATABASE_URL");
        command
    };
    let output = as_reader(env!("CARGO_BIN_EXE_authlog"))
        .args(["verify", "--data-dir"])
        .arg(copy.path())
        .output()
        .expect("runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("events: 6") && stdout.contains("chain intact"),
        "{stdout}"
    );
    // The system's Python when reading as another user: root's may live under /root.
    let python = if root && std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let output = as_reader(python)
        .arg(
            std::env::current_dir()
                .expect("cwd")
                .join("docs/verify_chain.py"),
        )
        .arg("--sqlite")
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::set_permissions(copy.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let untouched: Vec<_> = std::fs::read_dir(copy.path())
        .expect("list")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(
        untouched,
        ["events.db"],
        "nothing was written beside the copy"
    );
}

#[actix_web::test]
async fn auditors_arguments_are_checked_and_usage_errors_exit_2() {
    let log = Log::sqlite().await;
    known_log(log.store()).await;
    let Log::Sqlite(dir, _) = &log else {
        unreachable!()
    };
    for (args, says) in [
        (&["events", "--from=-9223372036854775808"][..], "--from"),
        (&["events", "--from", "0"], "--from"),
        (&["events", "--type", "LoginFail"], "LoginFailed"),
        (&["verify", "--expect", "abc"], "is not HASH@POSITION"),
        (&["replay", "--at", "yesterday"], "2026-11-27T09:00:00Z"),
        (&["events", "--until", "tomorrow"], "RFC 3339"),
    ] {
        let (status, stdout, stderr) = authlog(dir.path(), args);
        assert_eq!(status, Some(2), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("ERROR authlog"),
            "not a log line: {stderr}"
        );
    }
    // The documented statuses: 0 intact, 1 changed.
    let (status, _, _) = authlog(dir.path(), &["verify"]);
    assert_eq!(status, Some(0));
    let (_, help, _) = authlog(dir.path(), &["verify", "--help"]);
    assert!(help.contains("Exit status: 0 success"), "{help}");
    assert!(
        !help.contains("AUTHLOG_JWT_SECRET"),
        "auditors need no token key: {help}"
    );
}

/// The finding: `recorded_at` was taken before the append lock, so with two writers times went
/// backwards in position order, and `replay --at T` (which stopped at the first later time)
/// disagreed with `events --until T`.
#[actix_web::test]
async fn two_writers_never_record_times_out_of_order_and_replay_agrees_with_events() {
    use actix::Actor;
    use authlog::actors::{Register, UserRegistry};
    use authlog::hashing::PasswordHasher;
    let log = Log::postgres().await;
    let Log::Postgres(db, _) = &log else {
        unreachable!()
    };
    let mut registries = Vec::new();
    for _ in 0..2 {
        let store =
            PostgresEventStore::connect(&PostgresSettings::new(SecretString::from(db.url())))
                .expect("connects")
                .with_personal_data(crate::common::shredder());
        registries.push(
            UserRegistry::load(Arc::new(store), PasswordHasher::new(4, 2))
                .await
                .expect("loads")
                .start(),
        );
    }
    let hash = crate::common::password_hash("password1").await;
    let sends = (0..400).map(|i| {
        registries[i % 2].send(Register {
            email: Email::parse(&format!("writer{i}@example.com")).expect("valid"),
            password_hash: hash.clone(),
            metadata: EventMetadata::default(),
        })
    });
    for reply in futures_util::future::join_all(sends).await {
        reply.expect("answers").expect("registers");
    }
    let events = log.store().read_after(0, 1000).await.expect("reads");
    assert_eq!(events.len(), 400);
    let backwards = events
        .windows(2)
        .filter(|pair| pair[1].recorded_at < pair[0].recorded_at)
        .count();
    assert_eq!(backwards, 0, "times went backwards in position order");
    for at in [50, 150, 250, 399].map(|i| events[i].recorded_at) {
        let mut out = Vec::new();
        audit::replay(
            log.store(),
            ReplayPoint::At(at),
            None,
            ThrottlePolicy::default(),
            log.store().log_signer().map(|signer| signer.trust()),
            &mut out,
        )
        .await
        .expect("replays");
        let replayed = String::from_utf8(out).expect("utf-8");
        let filter = EventFilter {
            until: Some(at),
            event_type: Some("UserRegistered".to_owned()),
            ..Default::default()
        };
        let listed = audit::events(log.store(), &filter, true, &mut Vec::new())
            .await
            .expect("lists");
        assert!(
            replayed.contains(&format!("users: {listed}\n")),
            "events --until lists {listed}, replay --at says:\n{replayed}"
        );
    }
}

/// `SessionStarted` for `user` at `version`, from `.last`, ending at `expires_at`.
fn started(
    user: UserId,
    version: i32,
    session: SessionId,
    expires_at: chrono::DateTime<chrono::Utc>,
    last: u8,
) -> NewEvent {
    NewEvent {
        stream_version: version,
        event: Event::SessionStarted(SessionStarted {
            user_id: user,
            session_id: session,
            expires_at,
            idle_seconds: 604_800,
        }),
        metadata: ip(last),
    }
}

#[actix_web::test]
async fn sessions_are_chained_listed_and_replayed_by_time() {
    for log in [Log::sqlite().await, Log::postgres().await] {
        let (alice, _) = known_log(log.store()).await;
        let store = log.store();
        let (phone, laptop) = (SessionId::new(), SessionId::new());
        let far = chrono::Utc::now().trunc_subsecs(0) + chrono::Duration::days(30);
        store
            .append(vec![started(alice, 5, phone, far, 7)])
            .await
            .expect("appends");
        let both = store
            .append(vec![started(alice, 6, laptop, far, 8)])
            .await
            .expect("appends")[0]
            .recorded_at;
        store
            .append(vec![NewEvent {
                stream_version: 7,
                event: Event::SessionEnded(SessionEnded {
                    user_id: alice,
                    session_id: phone,
                    reason: EndReason::RefreshTokenReused,
                }),
                metadata: ip(9),
            }])
            .await
            .expect("appends");

        let (outcome, report) = verify(store, None).await;
        assert_eq!(outcome, VerifyOutcome::Intact, "{report}");
        assert!(report.contains("events: 9"), "{report}");

        let mut out = Vec::new();
        audit::events(store, &EventFilter::default(), false, &mut out)
            .await
            .expect("lists");
        let table = String::from_utf8(out).expect("utf-8");
        assert!(
            table.contains(&format!(
                "session={phone} reason=refresh_token_reused from=198.51.100.9"
            )),
            "{table}"
        );
        assert!(
            table.contains(&format!("session={laptop} expires=")),
            "{table}"
        );

        // At the time both were live, replay lists both; now, only the laptop's.
        let then = replay(store, ReplayPoint::At(both), "alice@example.com").await;
        assert!(then.contains("sessions live at"), "{then}");
        assert!(then.contains(&format!("session {phone} since")), "{then}");
        assert!(then.contains(&format!("session {laptop} since")), "{then}");
        assert!(then.contains("from 198.51.100.7"), "{then}");
        let now = replay(store, ReplayPoint::Position(9), "alice@example.com").await;
        assert!(!now.contains(&format!("session {phone} since")), "{now}");
        assert!(now.contains(&format!("session {laptop} since")), "{now}");
        // Past their absolute end, none.
        let later = replay(
            store,
            ReplayPoint::At(far + chrono::Duration::seconds(1)),
            "alice@example.com",
        )
        .await;
        assert!(later.contains(": 0\n"), "{later}");

        if let Log::Sqlite(dir, _) = &log {
            // docs/verify_chain.py hashes the session events exactly as authlog does.
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
        }
    }
}
