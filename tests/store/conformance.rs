//! One conformance suite for every `EventStore`: PostgreSQL, embedded SQLite and in-memory.
//!
//! Each case is written once, generic over [`Backend`], and `every_case!` instantiates the whole
//! list for every backend, so a backend cannot pass by leaving a case out. The two rules an
//! in-memory store cannot have (durability, and refusing SQL that rewrites history) are declared
//! by its `DURABLE` constant, and the cases check that declaration instead of skipping.

use std::path::PathBuf;
use std::sync::Arc;

use crate::common::TestDatabase;
use authlog::domain::{Email, PasswordHash, UserId};
use authlog::events::{
    Conflict, Event, EventMetadata, EventStore, InMemoryEventStore, LoginSucceeded, NewEvent,
    PostgresEventStore, PostgresSettings, RecordedEvent, SqliteEventStore, SqliteSettings,
    StoreError, UserRegistered, events_after,
};
use futures_util::future::join_all;
use secrecy::SecretString;

/// What the cases need from a backend.
trait Backend: Sized {
    /// Whether the log outlives the store value, and lives where other tools can try to change it.
    const DURABLE: bool;

    /// A new, empty log.
    async fn create() -> Self;

    /// The store under test.
    fn store(&self) -> Arc<dyn EventStore>;

    /// An independent handle on the same log: another pool or connection, what a second process
    /// would have. The in-memory store can only hand out itself again.
    async fn second_handle(&self) -> Arc<dyn EventStore>;

    /// Closes the store and opens the same log again; `None` for a store that keeps nothing.
    async fn reopen(&mut self) -> Option<Arc<dyn EventStore>>;

    /// Tries to change or remove recorded events with the backend's own tools, behind authlog's
    /// back, and returns each statement with the error it got (`None` if it was allowed).
    async fn rewrite_history(&self) -> Vec<(&'static str, Option<String>)>;
}

/// These tests are about what the stores guarantee, not how fast: a store call may take its
/// time. The large batch seals about 2,400 values and opens as many; unoptimised (the test
/// profile), XChaCha20-Poly1305 takes about a millisecond a value, so on a loaded machine that
/// batch outlasts the service's 5-second bound.
const STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

struct Postgres {
    db: TestDatabase,
    store: Option<Arc<dyn EventStore>>,
}

impl Postgres {
    async fn connect(db: &TestDatabase) -> Arc<dyn EventStore> {
        let mut settings = PostgresSettings::new(SecretString::from(db.url()));
        settings.timeout = STORE_TIMEOUT;
        let store = PostgresEventStore::connect(&settings)
            .expect("valid settings")
            .with_personal_data(crate::common::shredder());
        store.migrate().await.expect("migrates");
        Arc::new(store)
    }
}

impl Backend for Postgres {
    const DURABLE: bool = true;

    async fn create() -> Self {
        let db = TestDatabase::create().await;
        let store = Some(Self::connect(&db).await);
        Self { db, store }
    }

    fn store(&self) -> Arc<dyn EventStore> {
        Arc::clone(self.store.as_ref().expect("open"))
    }

    async fn second_handle(&self) -> Arc<dyn EventStore> {
        Self::connect(&self.db).await
    }

    async fn reopen(&mut self) -> Option<Arc<dyn EventStore>> {
        self.store = None;
        self.store = Some(Self::connect(&self.db).await);
        Some(self.store())
    }

    async fn rewrite_history(&self) -> Vec<(&'static str, Option<String>)> {
        let client = self.db.client().await;
        let mut outcomes = Vec::new();
        for statement in [
            "UPDATE events SET payload = '{}'::jsonb",
            "DELETE FROM events WHERE position = (SELECT min(position) FROM events)",
            "TRUNCATE events",
            "INSERT INTO events (position, stream_id, stream_version, event_type, event_version, \
                                 payload, recorded_at) \
             SELECT position, stream_id, stream_version, event_type, event_version, payload, \
                    recorded_at FROM events \
             ON CONFLICT (stream_id, stream_version) DO UPDATE SET payload = '{}'::jsonb",
        ] {
            let error = client.batch_execute(statement).await.err();
            outcomes.push((statement, error.map(|e| format!("{e:?}"))));
        }
        outcomes
    }
}

struct Sqlite {
    dir: tempfile::TempDir,
    store: Option<Arc<dyn EventStore>>,
}

impl Sqlite {
    fn settings(&self) -> SqliteSettings {
        SqliteSettings {
            timeout: STORE_TIMEOUT,
            ..SqliteSettings::in_dir(self.dir.path())
        }
    }

    fn path(&self) -> PathBuf {
        self.settings().path
    }

    async fn open(settings: &SqliteSettings) -> Arc<dyn EventStore> {
        Arc::new(
            SqliteEventStore::open(settings)
                .await
                .expect("opens")
                .with_personal_data(crate::common::shredder()),
        )
    }
}

impl Backend for Sqlite {
    const DURABLE: bool = true;

    async fn create() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Some(Self::open(&SqliteSettings::in_dir(dir.path())).await);
        Self { dir, store }
    }

    fn store(&self) -> Arc<dyn EventStore> {
        Arc::clone(self.store.as_ref().expect("open"))
    }

    async fn second_handle(&self) -> Arc<dyn EventStore> {
        Self::open(&self.settings()).await
    }

    async fn reopen(&mut self) -> Option<Arc<dyn EventStore>> {
        self.store = None;
        self.store = Some(Self::open(&self.settings()).await);
        Some(self.store())
    }

    async fn rewrite_history(&self) -> Vec<(&'static str, Option<String>)> {
        let connection = rusqlite::Connection::open(self.path()).expect("open the file directly");
        let mut outcomes = Vec::new();
        for statement in [
            "UPDATE events SET payload = '{}'",
            "DELETE FROM events WHERE position = (SELECT min(position) FROM events)",
            "DELETE FROM events",
            // Conflict resolution by deleting the old row, which fires no DELETE trigger.
            "INSERT OR REPLACE INTO events \
             SELECT position, stream_id, stream_version, event_type, event_version, payload, \
                    '{\"client_ip\":\"10.6.6.6\"}', recorded_at, prev_hash, hash, signature FROM events",
            "INSERT OR REPLACE INTO events \
             (stream_id, stream_version, event_type, event_version, payload, recorded_at) \
             SELECT stream_id, stream_version, event_type, event_version, payload, recorded_at \
             FROM events",
            "INSERT INTO events SELECT * FROM events WHERE true \
             ON CONFLICT DO UPDATE SET payload = '{}'",
        ] {
            let error = connection.execute_batch(statement).err();
            outcomes.push((statement, error.map(|e| e.to_string())));
        }
        outcomes
    }
}

struct InMemory {
    store: Arc<InMemoryEventStore>,
}

impl Backend for InMemory {
    /// It lives in this process only, and offers no call that changes or removes an event:
    /// append-only is a property of its type rather than a rule to test.
    const DURABLE: bool = false;

    async fn create() -> Self {
        Self {
            store: Arc::new(InMemoryEventStore::new()),
        }
    }

    fn store(&self) -> Arc<dyn EventStore> {
        self.store.clone()
    }

    async fn second_handle(&self) -> Arc<dyn EventStore> {
        self.store.clone()
    }

    async fn reopen(&mut self) -> Option<Arc<dyn EventStore>> {
        None
    }

    async fn rewrite_history(&self) -> Vec<(&'static str, Option<String>)> {
        Vec::new()
    }
}

// ---- event builders ----

fn hash() -> PasswordHash {
    // Any well-formed value will do; the stores never look inside it.
    serde_json::from_value(serde_json::json!(
        "$2b$04$abcdefghijklmnopqrstuuJ3YdsgWvRzXKJe1NVvOQ8Cs3vZ5u3Dq"
    ))
    .expect("a hash deserialises")
}

fn email(local: &str) -> Email {
    Email::parse(&format!("{local}@example.com")).expect("valid email")
}

fn register(user: UserId, email: &Email) -> NewEvent {
    NewEvent {
        stream_version: 1,
        event: Event::UserRegistered(UserRegistered {
            user_id: user,
            email: email.clone(),
            password_hash: hash(),
            imported: None,
        }),
        metadata: EventMetadata::new(Some([127, 0, 0, 1].into()), Some("conformance/1 ✓")),
    }
}

fn login(user: UserId, stream_version: i32) -> NewEvent {
    NewEvent {
        stream_version,
        event: Event::LoginSucceeded(LoginSucceeded { user_id: user }),
        metadata: EventMetadata::default(),
    }
}

async fn read_all(store: &dyn EventStore) -> Vec<RecordedEvent> {
    events_after(store, 0).collect().await.expect("reads")
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, expected: Conflict) {
    match result {
        Err(StoreError::Conflict(conflict)) => assert_eq!(conflict, expected),
        other => panic!("expected a {expected:?} conflict, got {other:?}"),
    }
}

fn assert_strictly_increasing(events: &[RecordedEvent]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "positions must strictly increase: {} then {}",
            pair[0].position,
            pair[1].position
        );
    }
}

// ---- the cases ----

async fn append_and_read_back_in_order<B: Backend>() {
    let backend = B::create().await;
    let store = backend.store();
    assert!(store.read_after(0, 100).await.expect("reads").is_empty());
    assert!(
        store
            .append(Vec::new())
            .await
            .expect("empty append")
            .is_empty()
    );

    let (alice, bob) = (UserId::new(), UserId::new());
    let first = store
        .append(vec![register(alice, &email("alice")), login(alice, 2)])
        .await
        .expect("appends");
    let second = store
        .append(vec![register(bob, &email("bob")), login(alice, 3)])
        .await
        .expect("appends");
    assert_eq!(first.len(), 2);
    assert_eq!(second.len(), 2);
    let appended: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_strictly_increasing(&appended);
    assert_eq!(
        appended
            .iter()
            .map(|e| (e.event.user_id(), e.stream_version))
            .collect::<Vec<_>>(),
        [
            (Some(alice), 1),
            (Some(alice), 2),
            (Some(bob), 1),
            (Some(alice), 3)
        ]
    );

    // Read back exactly as recorded: events, metadata, positions and times.
    assert_eq!(read_all(&*store).await, appended);
    let after_first = first[1].position;
    assert_eq!(
        store.read_after(after_first, 100).await.expect("reads"),
        second
    );
    assert_eq!(store.read_after(0, 1).await.expect("reads"), &appended[..1]);
    assert!(
        store
            .read_after(appended[3].position, 100)
            .await
            .expect("reads")
            .is_empty()
    );

    // One stream, in version order, without the others'.
    let alices = store
        .read_stream(alice.as_uuid(), 0, 100)
        .await
        .expect("reads");
    assert_eq!(
        alices,
        [
            appended[0].clone(),
            appended[1].clone(),
            appended[3].clone()
        ]
    );
    let later = store
        .read_stream(alice.as_uuid(), 1, 1)
        .await
        .expect("reads");
    assert_eq!(later, [appended[1].clone()]);
    assert!(
        store
            .read_stream(UserId::new().as_uuid(), 0, 100)
            .await
            .expect("reads")
            .is_empty()
    );
}

async fn stream_version_conflict<B: Backend>() {
    let backend = B::create().await;
    let store = backend.store();
    let (alice, bob) = (UserId::new(), UserId::new());
    let registered = store
        .append(vec![register(alice, &email("alice"))])
        .await
        .expect("appends");

    assert_conflict(
        store.append(vec![login(alice, 1)]).await,
        Conflict::StreamVersion,
    );
    // A duplicate inside one batch.
    assert_conflict(
        store.append(vec![login(alice, 2), login(alice, 2)]).await,
        Conflict::StreamVersion,
    );
    // A conflict on one stream rejects the whole batch, other streams included.
    assert_conflict(
        store
            .append(vec![register(bob, &email("bob")), login(alice, 1)])
            .await,
        Conflict::StreamVersion,
    );
    assert_eq!(read_all(&*store).await, registered, "nothing was written");

    let next = store.append(vec![login(alice, 2)]).await.expect("appends");
    assert_eq!(next[0].stream_version, 2);
}

async fn email_uniqueness<B: Backend>() {
    let backend = B::create().await;
    let store = backend.store();
    let alice = email("alice");
    let registered = store
        .append(vec![register(UserId::new(), &alice)])
        .await
        .expect("appends");

    assert_conflict(
        store.append(vec![register(UserId::new(), &alice)]).await,
        Conflict::EmailTaken,
    );
    let bob = email("bob");
    assert_conflict(
        store
            .append(vec![
                register(UserId::new(), &bob),
                register(UserId::new(), &bob),
            ])
            .await,
        Conflict::EmailTaken,
    );
    let carol = email("carol");
    assert_conflict(
        store
            .append(vec![
                register(UserId::new(), &carol),
                register(UserId::new(), &alice),
            ])
            .await,
        Conflict::EmailTaken,
    );
    assert_eq!(read_all(&*store).await, registered, "nothing was written");

    // The rejected batches left nothing behind that would block these.
    store
        .append(vec![
            register(UserId::new(), &bob),
            register(UserId::new(), &carol),
        ])
        .await
        .expect("appends");
}

async fn concurrent_appends_have_one_winner<B: Backend>() {
    const ATTEMPTS: usize = 16;
    let backend = B::create().await;
    let handles = [backend.store(), backend.second_handle().await];

    let contested = email("contested");
    let outcomes = join_all((0..ATTEMPTS).map(|i| {
        let store = Arc::clone(&handles[i % 2]);
        let event = register(UserId::new(), &contested);
        async move { store.append(vec![event]).await }
    }))
    .await;
    let (won, lost): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(Result::is_ok);
    assert_eq!(won.len(), 1, "exactly one registration of the email wins");
    for outcome in lost {
        assert_conflict(outcome, Conflict::EmailTaken);
    }

    // The same race on one stream's next version.
    let user = match &won[0] {
        Ok(recorded) => recorded[0].event.user_id().expect("a user's event"),
        Err(error) => panic!("{error:?}"),
    };
    let outcomes = join_all((0..ATTEMPTS).map(|i| {
        let store = Arc::clone(&handles[i % 2]);
        async move { store.append(vec![login(user, 2)]).await }
    }))
    .await;
    let (won, lost): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(Result::is_ok);
    assert_eq!(won.len(), 1, "exactly one writer takes stream version 2");
    for outcome in lost {
        assert_conflict(outcome, Conflict::StreamVersion);
    }
    assert_eq!(read_all(&*handles[1]).await.len(), 2);
}

async fn history_cannot_be_rewritten<B: Backend>() {
    let backend = B::create().await;
    let store = backend.store();
    let user = UserId::new();
    let recorded = store
        .append(vec![register(user, &email("alice")), login(user, 2)])
        .await
        .expect("appends");

    let attempts = backend.rewrite_history().await;
    assert_eq!(
        attempts.is_empty(),
        !B::DURABLE,
        "every backend that stores events where other tools can reach them must be tried"
    );
    for (statement, error) in attempts {
        let error = error.unwrap_or_else(|| panic!("allowed: {statement}"));
        assert!(
            error.contains("append-only") || error.contains("UNIQUE constraint failed"),
            "{statement} failed for the wrong reason: {error}"
        );
    }
    assert_eq!(read_all(&*store).await, recorded, "the log is unchanged");
}

async fn data_survives_reopening<B: Backend>() {
    let mut backend = B::create().await;
    let store = backend.store();
    let alice = email("alice");
    let user = UserId::new();
    let recorded = store
        .append(vec![register(user, &alice), login(user, 2)])
        .await
        .expect("appends");
    drop(store);

    let Some(store) = backend.reopen().await else {
        assert!(!B::DURABLE, "a durable backend must reopen");
        return;
    };
    assert!(B::DURABLE, "a backend that reopens must say it is durable");
    assert_eq!(read_all(&*store).await, recorded);
    // The rules hold after reopening, and positions continue after the last one.
    assert_conflict(
        store.append(vec![register(UserId::new(), &alice)]).await,
        Conflict::EmailTaken,
    );
    assert_conflict(
        store.append(vec![login(user, 2)]).await,
        Conflict::StreamVersion,
    );
    let next = store.append(vec![login(user, 3)]).await.expect("appends");
    assert!(next[0].position > recorded[1].position);
}

async fn a_large_batch_is_one_atomic_append<B: Backend>() {
    // More than one read page, so reading it back exercises paging too.
    const USERS: usize = authlog::events::READ_PAGE * 6 / 10;
    let backend = B::create().await;
    let store = backend.store();
    let users: Vec<UserId> = (0..USERS).map(|_| UserId::new()).collect();
    let mut batch: Vec<NewEvent> = users
        .iter()
        .enumerate()
        .map(|(i, user)| register(*user, &email(&format!("user{i}"))))
        .collect();
    batch.extend(users.iter().map(|user| login(*user, 2)));

    // One conflict at the very end rejects all of it.
    let mut rejected = batch.clone();
    rejected.push(login(users[0], 2));
    assert_conflict(store.append(rejected).await, Conflict::StreamVersion);
    assert!(read_all(&*store).await.is_empty(), "nothing was written");

    let recorded = store.append(batch.clone()).await.expect("appends");
    assert_eq!(recorded.len(), 2 * USERS);
    assert_strictly_increasing(&recorded);
    let read = read_all(&*store).await;
    assert_eq!(read, recorded);
    let mut written: Vec<_> = read
        .iter()
        .map(|e| (e.stream_id(), e.stream_version))
        .collect();
    let mut expected: Vec<_> = batch
        .iter()
        .map(|e| (e.stream_id(), e.stream_version))
        .collect();
    written.sort();
    expected.sort();
    assert_eq!(written, expected, "every event of the batch, once");
}

async fn the_chain_links_every_event_even_with_concurrent_writers<B: Backend>() {
    const APPENDS: usize = 40;
    let backend = B::create().await;
    let handles = [backend.store(), backend.second_handle().await];
    let outcomes = join_all((0..APPENDS).map(|i| {
        let store = Arc::clone(&handles[i % 2]);
        let user = UserId::new();
        // Batches of one and of two events, interleaved across both handles.
        let mut batch = vec![register(user, &email(&format!("chain{i}")))];
        if i % 3 == 0 {
            batch.push(login(user, 2));
        }
        async move { store.append(batch).await }
    }))
    .await;
    assert!(outcomes.iter().all(Result::is_ok), "every append commits");
    let written: usize = outcomes.iter().flatten().map(Vec::len).sum();

    let verifier = authlog::events::chain::verify(&*handles[0])
        .await
        .expect("reads");
    assert_eq!(verifier.broken, None, "the chain is intact");
    assert_eq!(verifier.count, written as u64);
    let rows = handles[1]
        .read_rows_after(0, usize::MAX)
        .await
        .expect("reads");
    let positions: Vec<i64> = rows.iter().map(|row| row.columns.position).collect();
    assert_eq!(
        positions,
        (1..=written as i64).collect::<Vec<_>>(),
        "positions in chain order"
    );
    assert_eq!(
        Some(&verifier.head_hash),
        rows.last().and_then(|row| row.hash.as_ref())
    );
    assert_eq!(
        rows[0].prev_hash.as_deref(),
        Some(authlog::events::chain::GENESIS)
    );
}

/// A session's row exists exactly while its start is committed and its end is not, is written
/// atomically with them, and a refresh token is rotated once however many handles race for it.
async fn session_rows_follow_their_events_and_rotate_once<B: Backend>() {
    use authlog::events::{EndReason, SessionEnded, SessionStarted};
    use authlog::sessions::{RefreshKey, RefreshKeys, Rotated, Rotation, SessionWrite, seal};
    let backend = B::create().await;
    let store = backend.store();
    let user = UserId::new();
    let session = authlog::domain::SessionId::new();
    let key = RefreshKeys::new(
        RefreshKey::derive(b"a test secret of at least 32 bytes!!"),
        None,
    );
    let first = key.mint(session, 1).expect("random");
    let now = chrono::Utc::now();
    let expires_at = now + chrono::Duration::days(1);
    let start = |version: i32, session| NewEvent {
        stream_version: version,
        event: Event::SessionStarted(SessionStarted {
            user_id: user,
            session_id: session,
            expires_at,
            idle_seconds: 3600,
        }),
        metadata: EventMetadata::default(),
    };
    let row = |session, hash| SessionWrite::Start {
        session,
        user_id: user,
        token_hash: hash,
        started_at: now,
        expires_at,
    };
    store
        .append_with(
            vec![register(user, &email("rows")), start(2, session)],
            vec![row(session, first.hash)],
        )
        .await
        .expect("appends");
    // A batch the database refuses writes no row either.
    let refused = authlog::domain::SessionId::new();
    let conflict = store
        .append_with(vec![start(2, refused)], vec![row(refused, first.hash)])
        .await;
    assert_conflict(conflict, Conflict::StreamVersion);
    assert!(
        store
            .last_used(vec![refused])
            .await
            .expect("reads")
            .is_empty()
    );

    let presented = key.read(first.token.as_str()).expect("ours");
    let second = key.mint(session, 2).expect("random");
    let rotation = Rotation {
        presented: presented.clone(),
        successor: second.hash,
        sealed: seal(&second.token, &presented),
        now,
        idle_cutoff: now - chrono::Duration::hours(1),
    };
    let other = backend.second_handle().await;
    let racers = (0..4).map(|i| {
        let store = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        let rotation = rotation.clone();
        async move { store.rotate(vec![rotation]).await.expect("rotates") }
    });
    let outcomes: Vec<Rotated> = join_all(racers).await.into_iter().flatten().collect();
    let done = outcomes.iter().filter(|o| **o == Rotated::Done).count();
    assert_eq!(done, 1, "exactly one rotation: {outcomes:?}");
    for outcome in &outcomes {
        if let Rotated::Unmatched(row) = outcome {
            let row = row.as_ref().expect("the session's row");
            assert_eq!((row.generation, row.previous_hash), (2, Some(first.hash)));
            assert_eq!(row.token_hash, second.hash);
            let sealed = row.sealed.as_deref().expect("the sealed successor");
            assert_eq!(key.open(sealed, &presented), Some(second.token.clone()));
        }
    }
    let used = store.last_used(vec![session]).await.expect("reads");
    assert_eq!(used.len(), 1);

    store
        .append_with(
            vec![NewEvent {
                stream_version: 3,
                event: Event::SessionEnded(SessionEnded {
                    user_id: user,
                    session_id: session,
                    reason: EndReason::Logout,
                }),
                metadata: EventMetadata::default(),
            }],
            vec![SessionWrite::End(session)],
        )
        .await
        .expect("appends");
    assert!(
        store
            .last_used(vec![session])
            .await
            .expect("reads")
            .is_empty()
    );
    let next = key.read(second.token.as_str()).expect("ours");
    let after = store
        .rotate(vec![Rotation {
            presented: next,
            ..rotation.clone()
        }])
        .await
        .expect("rotates");
    assert_eq!(after, [Rotated::Unmatched(None)]);

    // Expired rows are pruned.
    let later = authlog::domain::SessionId::new();
    store
        .append_with(vec![start(4, later)], vec![row(later, first.hash)])
        .await
        .expect("appends");
    let pruned = store
        .prune_sessions(expires_at, now - chrono::Duration::hours(1))
        .await
        .expect("prunes");
    assert_eq!(pruned, 1);
}

/// Instantiates every case for one backend. Adding a case means adding it here, once.
/// A snapshot folded while sign-ups go on is a fold of a prefix of the log: the snapshot and the
/// tail after it give exactly what a full replay gives. It outlives the store value where the
/// log does, and an erasure deletes it (it holds the erased user's data).
async fn snapshots_are_consistent_while_appends_continue<B: Backend>() {
    use authlog::snapshot::{self, Restored};
    use authlog::state::State;
    use authlog::throttle::ThrottlePolicy;

    let mut backend = B::create().await;
    let store = backend.store();
    let users: Vec<UserId> = (0..400).map(|_| UserId::new()).collect();
    for (n, chunk) in users[..200].chunks(50).enumerate() {
        let batch = chunk
            .iter()
            .enumerate()
            .map(|(i, user)| register(*user, &email(&format!("early{n}-{i}"))))
            .collect();
        store.append(batch).await.expect("appends");
    }
    // Sign-ups in small appends on one handle while another folds and writes a snapshot.
    let writer = Arc::clone(&store);
    let late = users[200..].to_vec();
    let signups = async move {
        for (n, user) in late.iter().enumerate() {
            writer
                .append(vec![register(*user, &email(&format!("late{n}")))])
                .await
                .expect("appends");
        }
    };
    let other = backend.second_handle().await;
    let (taken, ()) = tokio::join!(snapshot::take(other.as_ref()), signups);
    let taken = taken.expect("folds").expect("writes one");
    assert!(taken.kept);
    assert!(taken.users >= 200 && taken.users <= 400, "{taken:?}");

    let check = |store: Arc<dyn EventStore>| async move {
        let (restored, how) = snapshot::restore(store.as_ref(), ThrottlePolicy::default())
            .await
            .expect("restores");
        let replayed = State::replay(store.as_ref(), ThrottlePolicy::default())
            .await
            .expect("replays");
        assert_eq!(
            how,
            Restored::Snapshot {
                position: taken.position,
                tail: u64::try_from(replayed.position() - taken.position).expect("after")
            }
        );
        assert_eq!(restored.position(), replayed.position());
        assert_eq!(restored.directory(), replayed.directory());
        assert_eq!(restored.directory().len(), 400);
    };
    check(Arc::clone(&store)).await;
    drop(other);
    drop(store);
    let store = match backend.reopen().await {
        Some(store) => {
            check(Arc::clone(&store)).await;
            store
        }
        None => backend.store(),
    };
    // An erasure deletes every snapshot, in the append that erases.
    assert_eq!(
        store.snapshots().await.expect("lists"),
        vec![taken.position]
    );
    let erased = NewEvent {
        stream_version: 2,
        event: Event::UserErased(authlog::events::UserErased { user_id: users[0] }),
        metadata: EventMetadata::default(),
    };
    store.append(vec![erased]).await.expect("erases");
    assert!(store.snapshots().await.expect("lists").is_empty());
}

macro_rules! every_case {
    ($backend:ty) => {
        every_case!(
            $backend;
            append_and_read_back_in_order,
            stream_version_conflict,
            email_uniqueness,
            concurrent_appends_have_one_winner,
            history_cannot_be_rewritten,
            data_survives_reopening,
            a_large_batch_is_one_atomic_append,
            the_chain_links_every_event_even_with_concurrent_writers,
            session_rows_follow_their_events_and_rotate_once,
            snapshots_are_consistent_while_appends_continue,
        );
    };
    ($backend:ty; $($case:ident),* $(,)?) => {
        $(
            #[actix_web::test]
            async fn $case() {
                super::$case::<$backend>().await;
            }
        )*
    };
}

mod postgres {
    every_case!(super::Postgres);
}

mod sqlite {
    every_case!(super::Sqlite);
}

mod in_memory {
    every_case!(super::InMemory);
}
