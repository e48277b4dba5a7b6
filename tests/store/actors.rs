//! Driving the actors directly, without HTTP, as programs and tests that embed authlog do.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix::{Actor, Addr};
use authlog::actors::{
    Authenticate, FindUser, GetDirectory, GetReadiness, LoadError, Readiness, Register,
    RegistryError, UserRegistry,
};
use authlog::domain::{Email, Password, SessionId};
use authlog::events::chain::ChainedRow;
use authlog::events::signed::{Linked, LogSigner};
use authlog::events::{
    Event, EventMetadata, EventStore, InMemoryEventStore, NewEvent, RecordedEvent, StoreError,
    StoreFuture,
};
use authlog::hashing::PasswordHasher;
use authlog::projection::UserSummary;
use authlog::sessions::{Rotated, Rotation, SessionWrite};
use authlog::state::State;
use authlog::throttle::ThrottlePolicy;
use chrono::{DateTime, Utc};
use futures_util::future::join_all;

fn hasher() -> PasswordHasher {
    PasswordHasher::new(4, 2)
}

fn email(raw: &str) -> Email {
    Email::parse(raw).expect("valid email")
}

fn metadata() -> EventMetadata {
    EventMetadata::new(Some([127, 0, 0, 1].into()), Some("actor-test"))
}

async fn start(store: Arc<dyn EventStore>) -> Addr<UserRegistry> {
    UserRegistry::load(store, hasher())
        .await
        .expect("loads")
        .start()
}

async fn register(
    registry: &Addr<UserRegistry>,
    raw: &str,
    password: &str,
) -> Result<UserSummary, RegistryError> {
    let password_hash = crate::common::password_hash(password).await;
    registry
        .send(Register {
            email: email(raw),
            password_hash,
            metadata: metadata(),
        })
        .await
        .expect("registry answers")
}

async fn authenticate(
    registry: &Addr<UserRegistry>,
    raw: &str,
    password: &str,
) -> Result<UserSummary, RegistryError> {
    let password = Password::for_login(password.to_owned()).expect("fits bcrypt");
    registry
        .send(Authenticate {
            email: email(raw),
            password,
            metadata: metadata(),
            session: None,
        })
        .await
        .expect("registry answers")
}

fn types(events: &[RecordedEvent]) -> Vec<(&'static str, i32)> {
    events
        .iter()
        .map(|e| (e.event.event_type(), e.stream_version))
        .collect()
}

#[actix_web::test]
async fn register_appends_user_registered_and_answers_after_commit() {
    let store = Arc::new(InMemoryEventStore::new());
    let registry = start(store.clone()).await;
    let user = register(&registry, "A@Example.com", "password1")
        .await
        .expect("registered");
    assert_eq!(user.email, email("a@example.com"));

    let events = store.events();
    assert_eq!(types(&events), [("UserRegistered", 1)]);
    assert_eq!(events[0].event.user_id(), Some(user.user_id));
    assert_eq!(events[0].metadata, metadata());
    let found = registry
        .send(FindUser {
            user_id: user.user_id,
        })
        .await
        .expect("answers")
        .expect("the registry is loaded");
    assert_eq!(found, Some(user));
}

#[actix_web::test]
async fn a_registry_started_while_the_store_is_down_answers_loading_then_serves() {
    let store = Arc::new(InMemoryEventStore::new());
    store.set_offline(true);
    let dummy_hash = hasher().dummy_hash().await.expect("hash");
    let error = match UserRegistry::load_with(store.clone(), hasher(), dummy_hash.clone()).await {
        Err(LoadError::Replay(error @ StoreError::Unavailable(_))) => error,
        Err(other) => panic!("expected an unavailable store, got {other:?}"),
        Ok(_) => panic!("loaded from an offline store"),
    };
    let registry = UserRegistry::unloaded(store.clone(), hasher(), dummy_hash, &error).start();

    // Never "invalid credentials" or "unknown user" from an empty directory: "not loaded yet".
    assert!(matches!(
        register(&registry, "alice@example.com", "password-1").await,
        Err(RegistryError::Loading)
    ));
    assert!(matches!(
        authenticate(&registry, "alice@example.com", "password-1").await,
        Err(RegistryError::Loading)
    ));
    let found = registry
        .send(FindUser {
            user_id: authlog::domain::UserId::new(),
        })
        .await
        .expect("answers");
    assert!(matches!(found, Err(RegistryError::Loading)));
    match registry.send(GetReadiness).await.expect("answers") {
        Readiness::Loading { last_error } => {
            assert!(last_error.is_some_and(|e| e.contains("offline")));
        }
        ready => panic!("not ready yet, got {ready:?}"),
    }

    // The store comes back: the registry replays in the background and serves.
    store.set_offline(false);
    let mut ready = false;
    for _ in 0..100 {
        if matches!(
            registry.send(GetReadiness).await.expect("answers"),
            Readiness::Ready { .. }
        ) {
            ready = true;
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "ready within 5 s of the store's return");
    register(&registry, "alice@example.com", "password-1")
        .await
        .expect("registers once ready");
    authenticate(&registry, "alice@example.com", "password-1")
        .await
        .expect("logs in");
}

#[actix_web::test]
async fn a_duplicate_registration_is_refused_and_appends_nothing() {
    let store = Arc::new(InMemoryEventStore::new());
    let registry = start(store.clone()).await;
    register(&registry, "a@example.com", "password1")
        .await
        .expect("registered");
    let again = register(&registry, " A@EXAMPLE.COM", "password2").await;
    assert!(matches!(again, Err(RegistryError::EmailTaken)), "{again:?}");
    assert_eq!(store.events().len(), 1);
}

#[actix_web::test]
async fn of_50_concurrent_registrations_of_one_email_exactly_one_wins() {
    let store = Arc::new(InMemoryEventStore::new());
    let registry = start(store.clone()).await;
    let outcome = crate::common::race_registrations(&[&registry], "race@example.com", 50).await;
    assert_eq!(outcome, (1, 49));
    assert_eq!(store.events().len(), 1);
}

#[actix_web::test]
async fn concurrent_registrations_of_different_emails_all_commit() {
    let store = Arc::new(InMemoryEventStore::new());
    let registry = start(store.clone()).await;
    let hash = crate::common::password_hash("password1").await;
    let attempts = (0..200).map(|i| {
        registry.send(Register {
            email: email(&format!("user{i}@example.com")),
            password_hash: hash.clone(),
            metadata: metadata(),
        })
    });
    let results = join_all(attempts).await;
    assert!(results.into_iter().all(|r| r.expect("answers").is_ok()));
    assert_eq!(store.events().len(), 200);
    let directory = registry.send(GetDirectory).await.expect("answers");
    assert_eq!(directory.len(), 200);
}

#[actix_web::test]
async fn login_appends_login_succeeded_with_the_next_stream_version() {
    let store = Arc::new(InMemoryEventStore::new());
    let registry = start(store.clone()).await;
    let user = register(&registry, "a@example.com", "password1")
        .await
        .expect("registered");
    for _ in 0..2 {
        let logged_in = authenticate(&registry, "A@example.com", "password1")
            .await
            .expect("login");
        assert_eq!(logged_in, user);
    }
    assert_eq!(
        types(&store.events()),
        [
            ("UserRegistered", 1),
            ("LoginSucceeded", 2),
            ("LoginSucceeded", 3)
        ]
    );
}

#[actix_web::test]
async fn concurrent_logins_take_consecutive_stream_versions() {
    let store = Arc::new(InMemoryEventStore::new());
    let registry = start(store.clone()).await;
    register(&registry, "a@example.com", "password1")
        .await
        .expect("registered");
    // Two checks at a time and eight waiting: as many as one account and address may have in
    // flight (`throttle::turns`).
    let logins = (0..10).map(|_| authenticate(&registry, "a@example.com", "password1"));
    assert!(join_all(logins).await.iter().all(Result::is_ok));
    let versions: Vec<i32> = store.events().iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, (1..=11).collect::<Vec<_>>());
}

#[actix_web::test]
async fn logins_beyond_the_parallel_bound_are_refused_at_once() {
    let store = Arc::new(InMemoryEventStore::new());
    let registry = start(store.clone()).await;
    register(&registry, "a@example.com", "password1")
        .await
        .expect("registered");
    let logins = (0..20).map(|_| authenticate(&registry, "a@example.com", "password1"));
    let results = join_all(logins).await;
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(RegistryError::Busy(_))))
        .count();
    let succeeded = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!((succeeded, refused), (10, 10), "{results:?}");
    assert_eq!(
        store.events().len(),
        11,
        "only the checked logins are events"
    );
    // Once they are done, the account logs in as usual.
    authenticate(&registry, "a@example.com", "password1")
        .await
        .expect("login");
}

#[actix_web::test]
async fn wrong_password_and_unknown_email_are_refused_alike() {
    let store = Arc::new(InMemoryEventStore::new());
    let registry = start(store.clone()).await;
    register(&registry, "a@example.com", "password1")
        .await
        .expect("registered");
    for (who, password) in [
        ("a@example.com", "password2"),
        ("b@example.com", "password1"),
    ] {
        let result = authenticate(&registry, who, password).await;
        assert!(
            matches!(result, Err(RegistryError::InvalidCredentials)),
            "{who}: {result:?}"
        );
    }
    // The wrong password is an event on the user's stream; the unknown email leaves none.
    assert_eq!(
        types(&store.events()),
        [("UserRegistered", 1), ("LoginFailed", 2)]
    );
}

#[actix_web::test]
async fn rebuilding_from_the_log_reproduces_the_projection() {
    let store = Arc::new(InMemoryEventStore::new());
    let registry = start(store.clone()).await;
    for i in 0..10 {
        register(&registry, &format!("u{i}@example.com"), "password1")
            .await
            .expect("registered");
    }
    for i in 0..10 {
        for _ in 0..(i % 3) {
            authenticate(&registry, &format!("u{i}@example.com"), "password1")
                .await
                .expect("login");
        }
    }
    let live = registry.send(GetDirectory).await.expect("answers");
    let replayed = State::replay(store.as_ref(), ThrottlePolicy::default())
        .await
        .expect("replays");
    let replayed = replayed.directory();
    assert_eq!(*replayed, live);
    assert_eq!(replayed.len(), 10);
    assert_eq!(replayed.users().iter().map(|u| u.logins).sum::<u64>(), 9);

    // A second registry on the same log serves the same users.
    let restarted = start(store.clone()).await;
    authenticate(&restarted, "u4@example.com", "password1")
        .await
        .expect("login after restart");
    let duplicate = register(&restarted, "u4@example.com", "password1").await;
    assert!(matches!(duplicate, Err(RegistryError::EmailTaken)));
}

#[actix_web::test]
async fn a_failed_append_leaves_memory_untouched_and_recovers() {
    let store = Arc::new(InMemoryEventStore::new());
    let registry = start(store.clone()).await;
    register(&registry, "a@example.com", "password1")
        .await
        .expect("registered");
    let before = registry.send(GetDirectory).await.expect("answers");

    store.set_offline(true);
    let result = register(&registry, "b@example.com", "password1").await;
    assert!(
        matches!(result, Err(RegistryError::Unavailable(_))),
        "{result:?}"
    );
    let login = authenticate(&registry, "a@example.com", "password1").await;
    assert!(
        matches!(login, Err(RegistryError::Unavailable(_))),
        "no token without a logged login: {login:?}"
    );
    assert_eq!(registry.send(GetDirectory).await.expect("answers"), before);

    store.set_offline(false);
    register(&registry, "b@example.com", "password1")
        .await
        .expect("registered once back");
    authenticate(&registry, "a@example.com", "password1")
        .await
        .expect("login once back");
    assert_eq!(
        types(&store.events()),
        [
            ("UserRegistered", 1),
            ("UserRegistered", 1),
            ("LoginSucceeded", 2)
        ]
    );
}

/// Commits, then reports failure: what a client sees when the connection drops during COMMIT.
struct LostReplyStore {
    inner: InMemoryEventStore,
    lose_next: AtomicBool,
}

impl EventStore for LostReplyStore {
    fn append_with(
        &self,
        events: Vec<NewEvent>,
        sessions: Vec<SessionWrite>,
    ) -> StoreFuture<'_, Vec<RecordedEvent>> {
        Box::pin(async move {
            let recorded = self.inner.append_with(events, sessions).await?;
            if self.lose_next.swap(false, Ordering::SeqCst) {
                return Err(StoreError::unavailable("connection lost after COMMIT"));
            }
            Ok(recorded)
        })
    }

    fn read_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<RecordedEvent>> {
        self.inner.read_after(after, limit)
    }

    fn read_rows_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<ChainedRow>> {
        self.inner.read_rows_after(after, limit)
    }

    fn read_linked_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<Linked>> {
        self.inner.read_linked_after(after, limit)
    }

    fn first_signed(&self) -> StoreFuture<'_, Option<i64>> {
        self.inner.first_signed()
    }

    fn log_signer(&self) -> Option<std::sync::Arc<LogSigner>> {
        self.inner.log_signer()
    }

    fn read_stream(
        &self,
        stream_id: uuid::Uuid,
        after_version: i32,
        limit: usize,
    ) -> StoreFuture<'_, Vec<RecordedEvent>> {
        self.inner.read_stream(stream_id, after_version, limit)
    }

    fn rotate(&self, rotations: Vec<Rotation>) -> StoreFuture<'_, Vec<Rotated>> {
        self.inner.rotate(rotations)
    }

    fn last_used(
        &self,
        sessions: Vec<SessionId>,
    ) -> StoreFuture<'_, Vec<(SessionId, DateTime<Utc>)>> {
        self.inner.last_used(sessions)
    }

    fn prune_sessions(
        &self,
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreFuture<'_, u64> {
        self.inner.prune_sessions(now, idle_cutoff)
    }
}

#[actix_web::test]
async fn after_an_ambiguous_append_the_registry_rereads_the_log() {
    let store = Arc::new(LostReplyStore {
        inner: InMemoryEventStore::new(),
        lose_next: AtomicBool::new(true),
    });
    let registry = start(store.clone()).await;
    let result = register(&registry, "a@example.com", "password1").await;
    assert!(
        matches!(result, Err(RegistryError::Unavailable(_))),
        "{result:?}"
    );

    // The event did commit. The next command re-reads the log first, so the registry neither
    // registers the email twice nor forgets the user.
    let retry = register(&registry, "a@example.com", "password1").await;
    assert!(matches!(retry, Err(RegistryError::EmailTaken)), "{retry:?}");
    authenticate(&registry, "a@example.com", "password1")
        .await
        .expect("the committed user logs in");
    assert_eq!(
        types(&store.inner.events()),
        [("UserRegistered", 1), ("LoginSucceeded", 2)]
    );
}

#[actix_web::test]
async fn two_registries_on_one_log_never_register_an_email_twice() {
    // Two processes sharing a database: neither sees the other's memory, only the log.
    let store = Arc::new(InMemoryEventStore::new());
    let first = start(store.clone()).await;
    let second = start(store.clone()).await;
    register(&first, "a@example.com", "password1")
        .await
        .expect("registered");
    let duplicate = register(&second, "a@example.com", "password2").await;
    assert!(
        matches!(duplicate, Err(RegistryError::EmailTaken)),
        "{duplicate:?}"
    );

    // The conflict taught the second registry about the user, so it can log them in, and its
    // stream version stays in step with the first registry's writes.
    authenticate(&first, "a@example.com", "password1")
        .await
        .expect("login on first");
    authenticate(&second, "a@example.com", "password1")
        .await
        .expect("login on second");
    authenticate(&first, "a@example.com", "password1")
        .await
        .expect("login on first again");
    assert_eq!(
        types(&store.events()),
        [
            ("UserRegistered", 1),
            ("LoginSucceeded", 2),
            ("LoginSucceeded", 3),
            ("LoginSucceeded", 4)
        ]
    );
    assert!(matches!(store.events()[0].event, Event::UserRegistered(_)));
}

/// Unreachable at first, then reachable with a schema it refuses to migrate.
struct RefusesToMigrate {
    inner: InMemoryEventStore,
    attempts: std::sync::atomic::AtomicUsize,
}

impl EventStore for RefusesToMigrate {
    fn append_with(
        &self,
        events: Vec<NewEvent>,
        sessions: Vec<SessionWrite>,
    ) -> StoreFuture<'_, Vec<RecordedEvent>> {
        self.inner.append_with(events, sessions)
    }

    fn read_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<RecordedEvent>> {
        self.inner.read_after(after, limit)
    }

    fn read_rows_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<ChainedRow>> {
        self.inner.read_rows_after(after, limit)
    }

    fn read_linked_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<Linked>> {
        self.inner.read_linked_after(after, limit)
    }

    fn first_signed(&self) -> StoreFuture<'_, Option<i64>> {
        self.inner.first_signed()
    }

    fn log_signer(&self) -> Option<std::sync::Arc<LogSigner>> {
        self.inner.log_signer()
    }

    fn read_stream(
        &self,
        stream_id: uuid::Uuid,
        after_version: i32,
        limit: usize,
    ) -> StoreFuture<'_, Vec<RecordedEvent>> {
        self.inner.read_stream(stream_id, after_version, limit)
    }

    fn rotate(&self, rotations: Vec<Rotation>) -> StoreFuture<'_, Vec<Rotated>> {
        self.inner.rotate(rotations)
    }

    fn last_used(
        &self,
        sessions: Vec<SessionId>,
    ) -> StoreFuture<'_, Vec<(SessionId, DateTime<Utc>)>> {
        self.inner.last_used(sessions)
    }

    fn prune_sessions(
        &self,
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreFuture<'_, u64> {
        self.inner.prune_sessions(now, idle_cutoff)
    }

    fn prepare(&self) -> StoreFuture<'_, ()> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if attempt == 0 {
                Err(StoreError::unavailable("connection refused"))
            } else {
                Err(StoreError::Migration {
                    what: "error applying migration V9__broken: ERROR: boom (SQLSTATE 42601)"
                        .to_owned(),
                })
            }
        })
    }
}

#[actix_web::test]
async fn a_registry_waiting_for_its_store_stops_retrying_when_a_migration_fails() {
    let store = Arc::new(RefusesToMigrate {
        inner: InMemoryEventStore::new(),
        attempts: std::sync::atomic::AtomicUsize::new(0),
    });
    let dummy_hash = hasher().dummy_hash().await.expect("hash");
    let error = match UserRegistry::load_with(store.clone(), hasher(), dummy_hash.clone()).await {
        Err(LoadError::Replay(error @ StoreError::Unavailable(_))) => error,
        other => panic!("expected an unreachable store, got {:?}", other.err()),
    };
    let registry = UserRegistry::unloaded(store.clone(), hasher(), dummy_hash, &error).start();
    let mut failed = None;
    for _ in 0..100 {
        if let Readiness::Failed { error } = registry.send(GetReadiness).await.expect("answers") {
            failed = Some(error);
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let failed = failed.expect("the registry gives up on a failed migration");
    assert!(failed.contains("V9__broken"), "{failed}");
    // It does not keep retrying: one attempt at start-up, one in the background.
    actix_rt::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(store.attempts.load(Ordering::SeqCst), 2);
    assert!(matches!(
        register(&registry, "a@example.com", "password1").await,
        Err(RegistryError::Loading)
    ));
}
