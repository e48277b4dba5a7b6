//! The benchmark's measurements that need no HTTP (`bench/run.sh` runs them):
//!
//! - `bcrypt COST SECONDS`: hashes per second with one thread per core: the login bound;
//! - `store KIND N`: registrations per second through the `UserRegistry` (group commit) and
//!   through one transaction per event, with pre-hashed passwords, checking every acknowledged
//!   event is in the log;
//! - `coldstart KIND USERS LOGINS`: generates a log, then times the replay that start-up does,
//!   its memory, and `verify`.
//!
//! - `tokens MASTER_KEY_FILE USER_ID EMAIL SESSION N`: prints N distinct access tokens for that
//!   user and session, signed with the log's active key (opened with the master key in
//!   MASTER_KEY_FILE) as the service signs them, for `/profile` with tokens it has never
//!   verified. The log: DATABASE_URL, or the embedded one in AUTHLOG_DATA_DIR;
//! - `ed25519 SECONDS`: Ed25519 signature checks per second with one thread per core, over a
//!   token's signing input: the bound for tokens never seen before;
//! - `abandon HOST:PORT VICTIM BYSTANDER PASSWORD CONNECTIONS`: the abandoned-logins attack:
//!   CONNECTIONS connections each send a login for VICTIM and all close at once, then times a
//!   login of BYSTANDER.
//!
//! KIND is `sqlite` (a fresh temporary directory) or `postgres` (DATABASE_URL, an empty
//! database). Each prints one JSON object on stdout (`tokens` prints the tokens).

#![forbid(unsafe_code)]

/// The allocator the `authlog` binary uses, so that what is measured here is what it does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use anyhow::Context as _;
use authlog::actors::{Register, UserRegistry};
use authlog::domain::{Email, PasswordHash, UserId};
use authlog::events::personal::Shredder;
use authlog::events::{
    Event, EventMetadata, EventStore, LoginSucceeded, NewEvent, PostgresEventStore,
    PostgresSettings, SqliteEventStore, SqliteSettings, UserRegistered, chain,
};
use authlog::hashing::PasswordHasher;
use secrecy::SecretString;
use serde_json::json;

#[actix_rt::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let number = |i: usize, default: u64| arg(i).parse().unwrap_or(default);
    let result = match arg(0).as_str() {
        "bcrypt" => bcrypt_bound(number(1, 12) as u32, number(2, 5)),
        "store" => store_bench(&arg(1), number(2, 20_000) as usize).await?,
        "coldstart" => cold_start(&arg(1), number(2, 1_000_000), number(3, 5_000_000)).await?,
        "snapstart" => snapshot_start(&arg(1)).await?,
        "verifyonly" => {
            let dir = std::env::var_os("AUTHLOG_BENCH_DIR").map(std::path::PathBuf::from);
            let store = reopen(&arg(1), dir.as_deref()).await?;
            let started = Instant::now();
            let verifier = chain::verify(store.as_ref()).await?;
            json!({"verify_seconds": started.elapsed().as_secs_f64(), "events": verifier.count,
                   "broken": verifier.broken.map(|(p, _)| p)})
        }
        "tokens" => return tokens(&arg(1), &arg(2), &arg(3), &arg(4), number(5, 20_000)).await,
        "ed25519" => ed25519_bound(number(1, 5)),
        "sessions" => session_memory(number(1, 200_000)),
        "abandon" => abandon(&arg(1), &arg(2), &arg(3), &arg(4), number(5, 1000) as usize).await?,
        "personal" => personal_cost(number(1, 100_000) as usize)?,
        "signing" => signing_cost(number(1, 100_000) as usize)?,
        other => anyhow::bail!(
            "unknown measurement {other:?}: bcrypt, ed25519, store, coldstart, tokens, sessions, \
             abandon, personal or signing"
        ),
    };
    println!("{result}");
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn bcrypt_bound(cost: u32, seconds: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let threads: Vec<_> = (0..cores())
        .map(|_| {
            std::thread::spawn(move || {
                let mut hashes = 0u64;
                while Instant::now() < deadline {
                    let _ = bcrypt::hash("k3#zq9!w-benchmark", cost);
                    hashes += 1;
                }
                hashes
            })
        })
        .collect();
    let hashes: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    let elapsed = started.elapsed().as_secs_f64();
    json!({"measure": "bcrypt", "cost": cost, "threads": cores(),
           "hashes_per_second": hashes as f64 / elapsed, "ms_per_hash": 1000.0 * elapsed * cores() as f64 / hashes.max(1) as f64})
}

/// Ed25519 checks per second on every core: what `/profile` can do at most with tokens it has
/// never seen (each needs one), measured with the call the service makes (`verify_strict`) over
/// a signing input as long as a token's; and signatures per second, one per login and refresh.
fn ed25519_bound(seconds: u64) -> serde_json::Value {
    use ed25519_dalek::Signer as _;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let message = vec![b'e'; 330];
    let signature = key.sign(&message);
    let public = key.verifying_key();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let threads: Vec<_> = (0..cores())
        .map(|_| {
            let message = message.clone();
            std::thread::spawn(move || {
                let mut checks = 0u64;
                while Instant::now() < deadline {
                    for _ in 0..100 {
                        let _ = public.verify_strict(&message, &signature);
                    }
                    checks += 100;
                }
                checks
            })
        })
        .collect();
    let checks: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    let elapsed = started.elapsed().as_secs_f64();
    // And signatures, which every login and refresh makes: half the time again.
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let signing = Instant::now();
    let threads: Vec<_> = (0..cores())
        .map(|_| {
            let key = key.clone();
            let message = message.clone();
            std::thread::spawn(move || {
                let mut signatures = 0u64;
                while Instant::now() < deadline {
                    for _ in 0..100 {
                        std::hint::black_box(key.sign(&message));
                    }
                    signatures += 100;
                }
                signatures
            })
        })
        .collect();
    let signatures: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    let signed = signing.elapsed().as_secs_f64();
    json!({"measure": "ed25519", "threads": cores(),
           "verifications_per_second": checks as f64 / elapsed,
           "us_per_verification": 1e6 * elapsed * cores() as f64 / checks.max(1) as f64,
           "signatures_per_second": signatures as f64 / signed,
           "us_per_signature": 1e6 * signed * cores() as f64 / signatures.max(1) as f64})
}

/// A fresh store of the given kind (the temporary directory lives as long as the store).
async fn open(kind: &str) -> anyhow::Result<(Arc<dyn EventStore>, Option<tempfile::TempDir>)> {
    let dir = match kind {
        "sqlite" => Some(tempfile::tempdir()?),
        _ => None,
    };
    let store = reopen(kind, dir.as_ref().map(tempfile::TempDir::path)).await?;
    Ok((store, dir))
}

/// The store of the given kind on the log in `dir` (SQLite) or at DATABASE_URL, as a process
/// starting on it would open it: with nothing cached, under the run's master key.
async fn reopen(kind: &str, dir: Option<&std::path::Path>) -> anyhow::Result<Arc<dyn EventStore>> {
    let shredder = Shredder::new(&MASTER);
    match (kind, dir) {
        ("sqlite", Some(dir)) => {
            let store = SqliteEventStore::open(&SqliteSettings::in_dir(dir))
                .await?
                .with_personal_data(shredder);
            Ok(Arc::new(store))
        }
        ("postgres", _) => {
            let url = std::env::var("DATABASE_URL").context("DATABASE_URL for postgres")?;
            let mut settings = PostgresSettings::new(SecretString::from(url));
            settings.timeout = Duration::from_secs(120);
            let store = PostgresEventStore::connect(&settings)?.with_personal_data(shredder);
            store.migrate().await?;
            Ok(Arc::new(store))
        }
        (other, _) => anyhow::bail!("unknown store {other:?}: sqlite or postgres"),
    }
}

fn hash() -> PasswordHash {
    serde_json::from_value(json!(
        "$2b$12$abcdefghijklmnopqrstuuJ3YdsgWvRzXKJe1NVvOQ8Cs3vZ5u3Dq"
    ))
    .unwrap_or_else(|_| unreachable!("a string deserialises"))
}

/// `users` registrations, each followed by a login from one address.
fn registered_and_logged_in(tag: &str, users: usize) -> anyhow::Result<Vec<NewEvent>> {
    let mut events = Vec::with_capacity(2 * users);
    for n in 0..users {
        let registered = registration(tag, n as u64)?;
        let user = UserId::from(registered.stream_id());
        events.push(registered);
        events.push(NewEvent {
            stream_version: 2,
            event: Event::LoginSucceeded(LoginSucceeded { user_id: user }),
            metadata: EventMetadata::new(Some([192, 0, 2, 1].into()), Some("bench/1")),
        });
    }
    Ok(events)
}

/// What sealing personal data costs, on one core, without a database: sealing N users'
/// registrations and a login each (new keys made and wrapped), then opening them as a
/// process starting on that log does (each key unwrapped once), and as a warm reader does
/// (keys cached).
fn personal_cost(users: usize) -> anyhow::Result<serde_json::Value> {
    let shredder = Shredder::new(&MASTER);
    let events = registered_and_logged_in("personal", users)?;
    let started = Instant::now();
    let sealed = shredder.seal_batch(&events, &std::collections::HashMap::new())?;
    let seal = started.elapsed().as_secs_f64();
    let keys: std::collections::HashMap<_, _> = sealed
        .new_keys
        .iter()
        .map(|key| (key.user_id, key.wrapped.clone()))
        .collect();
    let now = chrono::Utc::now();
    let rows: Vec<_> = (1..)
        .zip(&sealed.columns)
        .map(|(position, columns)| columns.at(position, now))
        .collect();
    let cold = Shredder::new(&MASTER);
    let copy = rows.clone();
    let started = Instant::now();
    let opened = cold.open_rows(copy, &keys)?;
    let open_cold = started.elapsed().as_secs_f64();
    let copy = rows.clone();
    let started = Instant::now();
    cold.open_rows(copy, &std::collections::HashMap::new())?;
    let open_warm = started.elapsed().as_secs_f64();
    anyhow::ensure!(opened.len() == events.len(), "every event opens");
    // The same rows decoded with nothing sealed: what reading cost before.
    let clear: Vec<_> = (1..)
        .zip(&events)
        .map(|(position, new)| authlog::events::StoredColumns {
            position,
            stream_id: new.stream_id(),
            stream_version: new.stream_version,
            event_type: new.event.event_type().to_owned(),
            event_version: new.event.event_version(),
            payload: new.event.payload(),
            metadata: new.metadata.to_json(),
            recorded_at: now,
        })
        .collect();
    let started = Instant::now();
    for row in clear {
        authlog::events::RecordedEvent::from_columns(row)?;
    }
    let decode_clear = started.elapsed().as_secs_f64();
    let per_event = |seconds: f64| 1e6 * seconds / events.len() as f64;
    // One AEAD operation on a 32-byte value, alone.
    let sealer = authlog::vault::Sealer::from_key(&[7; 32]);
    let started = Instant::now();
    let mut sealed_one = Vec::new();
    for _ in 0..users {
        sealed_one = sealer
            .seal_with([1; 24], &[0; 32], b"context")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let seal_one = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..users {
        sealer.open(&sealed_one, b"context");
    }
    let open_one = started.elapsed().as_secs_f64();
    Ok(json!({
        "aead_seal_us": 1e6 * seal_one / users as f64,
        "aead_open_us": 1e6 * open_one / users as f64,
        "measure": "personal", "users": users, "events": events.len(),
        "seal_us_per_event": per_event(seal),
        "open_cold_us_per_event": per_event(open_cold),
        "open_warm_us_per_event": per_event(open_warm),
        "decode_clear_us_per_event": per_event(decode_clear),
    }))
}

/// What signing the log costs, on one core, without a database: one head signed (once per
/// append), one checked (once per append read), and one row's hash recomputed from its sealed
/// columns (once per row read), over N users' registrations and logins.
fn signing_cost(users: usize) -> anyhow::Result<serde_json::Value> {
    use authlog::events::signed::LogSigner;
    let signer = std::sync::Arc::new(LogSigner::new(&MASTER));
    let trust = signer.trust();
    let head = authlog::events::chain::GENESIS;
    let rounds = users.clamp(1, 20_000);
    let started = Instant::now();
    let mut signature = String::new();
    for position in 0..rounds {
        signature = signer.sign_head(1, position as i64, head);
    }
    let sign = started.elapsed().as_secs_f64() / rounds as f64;
    let started = Instant::now();
    let mut valid = 0;
    for _ in 0..rounds {
        valid += usize::from(trust.verifies(1, (rounds - 1) as i64, head, &signature));
    }
    let check = started.elapsed().as_secs_f64() / rounds as f64;
    anyhow::ensure!(valid == rounds, "every signature verifies");
    let shredder = Shredder::new(&MASTER);
    let events = registered_and_logged_in("signing", users)?;
    let sealed = shredder.seal_batch(&events, &std::collections::HashMap::new())?;
    let now = chrono::Utc::now();
    let rows: Vec<_> = (1..)
        .zip(&sealed.columns)
        .map(|(position, columns)| columns.at(position, now))
        .collect();
    let started = Instant::now();
    let mut prev = head.to_owned();
    for row in &rows {
        prev = authlog::events::chain::hash_row(&prev, row);
    }
    let hash = started.elapsed().as_secs_f64() / rows.len() as f64;
    Ok(json!({
        "measure": "signing", "rows": rows.len(),
        "sign_us_per_append": 1e6 * sign,
        "check_us_per_append": 1e6 * check,
        "hash_us_per_row": 1e6 * hash,
    }))
}

/// One master key per run: every store this process opens on one log must share it.
/// Random per run; with AUTHLOG_BENCH_DIR, kept in it beside the log, so that a later run can
/// open the log again.
static MASTER: std::sync::LazyLock<authlog::vault::MasterKey> = std::sync::LazyLock::new(|| {
    let Some(dir) = std::env::var_os("AUTHLOG_BENCH_DIR") else {
        return authlog::vault::MasterKey::random();
    };
    let path = std::path::Path::new(&dir).join("bench-master-key");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        let text = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(&path, &text);
        text
    });
    authlog::vault::MasterKey::parse(&SecretString::from(text.trim().to_owned()))
        .unwrap_or_else(|_| authlog::vault::MasterKey::random())
});

fn registration(tag: &str, n: u64) -> anyhow::Result<NewEvent> {
    Ok(NewEvent {
        stream_version: 1,
        event: Event::UserRegistered(UserRegistered {
            user_id: UserId::new(),
            email: Email::parse(&format!("{tag}{n}@example.com"))?,
            password_hash: hash(),
            imported: None,
        }),
        metadata: EventMetadata::new(Some([127, 0, 0, 1].into()), Some("bench")),
    })
}

/// Registrations in the log whose email starts with `tag` (both measurements may share one
/// PostgreSQL database).
async fn count_registrations(store: &dyn EventStore, tag: &str) -> anyhow::Result<u64> {
    let mut count = 0;
    authlog::events::events_after(store, 0)
        .for_each(|event| {
            if let Event::UserRegistered(registered) = &event.event
                && registered.email.as_str().starts_with(tag)
            {
                count += 1;
            }
            std::ops::ControlFlow::Continue(())
        })
        .await?;
    Ok(count)
}

async fn store_bench(kind: &str, n: usize) -> anyhow::Result<serde_json::Value> {
    // Group commit: N registrations sent to the registry at once.
    let (store, _dir) = open(kind).await?;
    let registry = UserRegistry::load(Arc::clone(&store), PasswordHasher::new(4, cores()))
        .await?
        .start();
    let started = Instant::now();
    let mut acked = 0u64;
    for chunk in (0..n).collect::<Vec<_>>().chunks(4000) {
        let sends = chunk.iter().map(|i| {
            registry.send(Register {
                email: Email::parse(&format!("group{i}@example.com"))
                    .unwrap_or_else(|_| unreachable!()),
                password_hash: hash(),
                metadata: EventMetadata::default(),
            })
        });
        for reply in futures_util::future::join_all(sends).await {
            if matches!(reply, Ok(Ok(_))) {
                acked += 1;
            }
        }
    }
    let grouped = started.elapsed().as_secs_f64();
    let committed = count_registrations(store.as_ref(), "group").await?;
    anyhow::ensure!(
        committed == acked,
        "acknowledged {acked}, committed {committed}"
    );

    // One transaction per event: the same registrations, each its own append, 64 at a time.
    let (single_store, _single_dir) = open(kind).await?;
    let single_n = (n / 4).max(1) as u64;
    let started = Instant::now();
    let mut single_acked = 0u64;
    for chunk in (0..single_n).collect::<Vec<_>>().chunks(64) {
        let appends = chunk
            .iter()
            .map(|i| registration("single", *i).map(|event| single_store.append(vec![event])))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for result in futures_util::future::join_all(appends).await {
            if result.is_ok() {
                single_acked += 1;
            }
        }
    }
    let single = started.elapsed().as_secs_f64();
    let single_committed = count_registrations(single_store.as_ref(), "single").await?;
    anyhow::ensure!(
        single_committed == single_acked,
        "one-per-transaction lost events"
    );
    Ok(json!({
        "measure": "store", "store": kind,
        "group_commit": {"registrations": acked, "seconds": grouped, "per_second": acked as f64 / grouped},
        "one_per_transaction": {"registrations": single_acked, "seconds": single, "per_second": single_acked as f64 / single},
        "every_acknowledged_event_committed": true,
    }))
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Memory per live session: `n / 2` users, then two sessions each (an address and a 40-byte
/// user agent, as a browser sends), folded by the same `State::apply` the service runs; the
/// growth of the resident set from the sessions alone, per session.
fn session_memory(n: u64) -> serde_json::Value {
    use authlog::events::{RecordedEvent, SessionStarted};
    use authlog::state::State;
    let users = (n / 2).max(1);
    let mut state = State::new(authlog::throttle::ThrottlePolicy::default());
    let now = chrono::Utc::now();
    let hash: authlog::domain::PasswordHash = serde_json::from_value(json!(
        "$2b$12$abcdefghijklmnopqrstuuJ3YdsgWvRzXKJe1NVvOQ8Cs3vZ5u3Dq"
    ))
    .unwrap_or_else(|_| unreachable!("a valid hash"));
    let mut position = 0;
    let mut record = |state: &mut State, stream_version: i32, event: Event, metadata| {
        position += 1;
        state.apply(&RecordedEvent {
            position,
            stream_version,
            event,
            metadata,
            recorded_at: now,
        });
    };
    let ids: Vec<UserId> = (0..users).map(|_| UserId::new()).collect();
    for (i, id) in ids.iter().enumerate() {
        let email = Email::parse(&format!("user{i}@bench.example.com"))
            .unwrap_or_else(|_| unreachable!("a valid email"));
        let event = Event::UserRegistered(UserRegistered {
            user_id: *id,
            email,
            password_hash: hash.clone(),
            imported: None,
        });
        record(&mut state, 1, event, EventMetadata::default());
    }
    let before = rss_bytes();
    let started = Instant::now();
    for round in 0..2 {
        for (i, id) in ids.iter().enumerate() {
            let event = Event::SessionStarted(SessionStarted {
                user_id: *id,
                session_id: authlog::domain::SessionId::new(),
                expires_at: now + chrono::Duration::days(30),
                idle_seconds: 604_800,
            });
            let address = std::net::IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            let agent = "Mozilla/5.0 (X11; Linux x86_64) Firefox/1";
            let metadata = EventMetadata::new(Some(address), Some(agent));
            record(&mut state, 2 + round, event, metadata);
        }
    }
    let applied = started.elapsed().as_secs_f64();
    let after = rss_bytes();
    let sessions = state.directory().session_count() as u64;
    json!({
        "measure": "session_memory", "users": users, "sessions": sessions,
        "memory_bytes": after.saturating_sub(before),
        "bytes_per_session": after.saturating_sub(before) as f64 / sessions.max(1) as f64,
        "apply_seconds": applied,
    })
}

/// A start from the newest snapshot of the log in AUTHLOG_BENCH_DIR (or at DATABASE_URL), in
/// this fresh process: its time to ready, and what the state it holds costs in memory.
async fn snapshot_start(kind: &str) -> anyhow::Result<serde_json::Value> {
    let dir = std::env::var_os("AUTHLOG_BENCH_DIR").map(std::path::PathBuf::from);
    let store = reopen(kind, dir.as_deref()).await?;
    let snapshots = store.snapshots().await?;
    let before = rss_bytes();
    let started = Instant::now();
    let registry = UserRegistry::load(Arc::clone(&store), PasswordHasher::new(4, 1)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let after = rss_bytes();
    let users = registry.directory().len() as u64;
    Ok(json!({
        "measure": "snapstart", "store": kind, "snapshot": snapshots.first(),
        "seconds": seconds, "users": users,
        "bytes_per_user": after.saturating_sub(before) as f64 / users.max(1) as f64,
    }))
}

/// Registrations first, then logins spread over the users, in appends of 20,000.
async fn generate(store: &dyn EventStore, users: u64, logins: u64) -> anyhow::Result<()> {
    let mut ids = Vec::with_capacity(users as usize);
    let mut batch = Vec::with_capacity(20_000);
    for n in 0..users {
        let event = registration("cold", n)?;
        ids.push(UserId::from(event.stream_id()));
        batch.push(event);
        if batch.len() == 20_000 {
            store.append(std::mem::take(&mut batch)).await?;
        }
    }
    let mut versions = vec![1i32; users as usize];
    for n in 0..logins {
        let index = (n % users.max(1)) as usize;
        versions[index] += 1;
        batch.push(NewEvent {
            stream_version: versions[index],
            event: Event::LoginSucceeded(LoginSucceeded {
                user_id: ids[index],
            }),
            metadata: EventMetadata::new(Some([127, 0, 0, 1].into()), None),
        });
        if batch.len() == 20_000 {
            store.append(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        store.append(batch).await?;
    }
    Ok(())
}

async fn cold_start(kind: &str, users: u64, logins: u64) -> anyhow::Result<serde_json::Value> {
    // AUTHLOG_BENCH_DIR keeps the embedded log (and reuses one already there), so that the
    // replay can be measured and profiled again without generating the log again.
    let kept = std::env::var_os("AUTHLOG_BENCH_DIR").map(std::path::PathBuf::from);
    let temporary = match kept {
        Some(_) => None,
        None => Some(tempfile::tempdir()?),
    };
    let dir = kept
        .as_deref()
        .or(temporary.as_ref().map(tempfile::TempDir::path));
    let dir = (kind == "sqlite").then_some(dir).flatten();
    let store = reopen(kind, dir).await?;
    let started = Instant::now();
    if store.read_after(0, 1).await?.is_empty() {
        generate(store.as_ref(), users, logins).await?;
    }
    let generated = started.elapsed().as_secs_f64();
    // The replay measured is a full one: no snapshot left from an earlier run.
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir.join("snapshots"));
    }
    // Replayed as a new process would: a store with nothing cached.
    drop(store);
    let store = reopen(kind, dir).await?;

    let before = rss_bytes();
    let started = Instant::now();
    let registry = UserRegistry::load(Arc::clone(&store), PasswordHasher::new(4, 1)).await?;
    let replay = started.elapsed().as_secs_f64();
    let after = rss_bytes();
    let loaded_users = registry.directory().len() as u64;
    drop(registry);
    // For profiling the replay alone.
    if std::env::var_os("AUTHLOG_BENCH_REPLAY_ONLY").is_some() {
        return Ok(json!({"replay_seconds": replay, "users_loaded": loaded_users}));
    }

    let started = Instant::now();
    let verifier = chain::verify(store.as_ref()).await?;
    let verify = started.elapsed().as_secs_f64();
    anyhow::ensure!(verifier.broken.is_none(), "the generated chain is broken");
    // `authlog verify --public-key`: the chain and every append's signature.
    let anchors = authlog::audit::Anchors {
        trust: store.log_signer().map(|signer| signer.trust()),
        checkpoints: Vec::new(),
    };
    let mut report = Vec::new();
    let started = Instant::now();
    let outcome =
        authlog::audit::verify_anchored(store.as_ref(), None, anchors, &mut report).await?;
    let verify_signed = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        outcome == authlog::audit::VerifyOutcome::Intact,
        "the generated log does not verify: {}",
        String::from_utf8_lossy(&report)
    );
    let signatures = String::from_utf8_lossy(&report)
        .lines()
        .find_map(|line| {
            line.strip_prefix("signatures: ")?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    // A server's first snapshot (no snapshot yet: the fold is a full replay), then a start
    // from it, as a new process would.
    let started = Instant::now();
    let taken = authlog::snapshot::take(store.as_ref())
        .await?
        .context("a snapshot of a non-empty log")?;
    let snapshot_take = started.elapsed().as_secs_f64();
    anyhow::ensure!(taken.kept, "the snapshot was dropped");
    drop(store);
    let store = reopen(kind, dir).await?;
    let before_snapshot = rss_bytes();
    let started = Instant::now();
    let registry = UserRegistry::load(Arc::clone(&store), PasswordHasher::new(4, 1)).await?;
    let from_snapshot = started.elapsed().as_secs_f64();
    let after_snapshot = rss_bytes();
    anyhow::ensure!(
        registry.directory().len() as u64 == loaded_users,
        "the snapshot start has another directory"
    );
    drop(registry);
    Ok(json!({
        "measure": "coldstart", "store": kind, "users": users, "logins": logins,
        "snapshot_take_seconds": snapshot_take, "snapshot_bytes": taken.bytes,
        "snapshot_start_seconds": from_snapshot,
        "snapshot_start_bytes_per_user":
            after_snapshot.saturating_sub(before_snapshot) as f64 / loaded_users.max(1) as f64,
        "generate_seconds": generated,
        "replay_seconds": replay, "users_loaded": loaded_users,
        "memory_bytes": after.saturating_sub(before),
        "bytes_per_user": after.saturating_sub(before) as f64 / loaded_users.max(1) as f64,
        "verify_seconds": verify, "verified_events": verifier.count,
        "verify_signed_seconds": verify_signed, "signatures": signatures,
    }))
}

/// `n` access tokens for a live session of the user, each never seen by the service, signed
/// with the log's active key.
async fn tokens(
    master_key_file: &str,
    user_id: &str,
    email: &str,
    session: &str,
    n: u64,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let master = std::fs::read_to_string(master_key_file)
        .with_context(|| format!("read the master key {master_key_file}"))?;
    let master = authlog::vault::MasterKey::parse(&SecretString::from(master.trim().to_owned()))?;
    let store: Arc<dyn EventStore> = match std::env::var("DATABASE_URL") {
        Ok(url) => Arc::new(PostgresEventStore::connect_read_only(
            &PostgresSettings::new(SecretString::from(url)),
        )?),
        Err(_) => {
            let dir = std::env::var("AUTHLOG_DATA_DIR").context("AUTHLOG_DATA_DIR")?;
            Arc::new(
                SqliteEventStore::open_read_only(&SqliteSettings::in_dir(dir.as_ref()).path)
                    .await?,
            )
        }
    };
    let ring = authlog::operate::key_ring(store.as_ref()).await?;
    let active = ring.active().context("the log has no active signing key")?;
    let private = authlog::signing::KeyVault::new(&master).open(active)?;
    let keys =
        authlog::jwt::JwtKeys::empty(authlog::jwt::TokenPolicy::new(Duration::from_secs(30 * 60)))
            .signing_ed25519(active.key_id.clone(), private);
    let user = authlog::projection::UserSummary {
        user_id: UserId::from(uuid::Uuid::parse_str(user_id)?),
        email: Email::parse(email)?,
        roles: Box::default(),
    };
    let session = authlog::domain::SessionId::from(uuid::Uuid::parse_str(session)?);
    let not_after = chrono::Utc::now() + chrono::Duration::days(1);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for _ in 0..n {
        let token = keys.issue(&user, session, not_after, chrono::Utc::now())?;
        writeln!(out, "{}", token.as_str())?;
    }
    out.flush()?;
    Ok(())
}

/// One login request, as raw HTTP/1.1 bytes.
fn login_request(address: &str, email: &str, password: &str) -> String {
    let body = json!({ "email": email, "password": password }).to_string();
    format!(
        "POST /login HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// One sample of a series on `/metrics`.
async fn sample(http: &reqwest::Client, address: &str, series: &str) -> anyhow::Result<f64> {
    let text = http
        .get(format!("http://{address}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0))
}

async fn abandon(
    address: &str,
    victim: &str,
    bystander: &str,
    password: &str,
    connections: usize,
) -> anyhow::Result<serde_json::Value> {
    use tokio::io::AsyncWriteExt as _;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let verify = r#"authlog_bcrypt_duration_seconds_count{operation="verify"}"#;
    let checks_before = sample(&http, address, verify).await?;
    let request = login_request(address, victim, password);
    let mut open = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream.write_all(request.as_bytes()).await?;
        open.push(stream);
    }
    let waiting = sample(&http, address, "authlog_login_waiting").await?;
    drop(open);
    // Another user, from another address (loopback has all of 127.0.0.0/8).
    let other = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()?;
    let started = Instant::now();
    let response = other
        .post(format!("http://{address}/login"))
        .json(&json!({ "email": bystander, "password": password }))
        .send()
        .await?;
    let bystander_ms = started.elapsed().as_secs_f64() * 1000.0;
    let status = response.status().as_u16();
    // Let the checks already started finish, then count what the attack cost.
    let mut checks = sample(&http, address, verify).await?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = sample(&http, address, verify).await?;
        if now == checks {
            break;
        }
        checks = now;
    }
    Ok(json!({
        "measure": "abandon", "connections": connections,
        "bystander_ms": bystander_ms, "bystander_status": status,
        "waiting_at_peak": waiting, "password_checks": checks - checks_before,
    }))
}
