//! Guarantees kept by PostgreSQL itself, restarts, and outages. Each test gets a fresh database.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{
    TUTORIAL_EMAIL, TUTORIAL_PASSWORD, TcpProxy, TestDatabase, assert_error, spawn_app_on_postgres,
    spawn_app_with, test_settings,
};
use actix::{Actor, Addr};
use authlog::actors::{Authenticate, GetDirectory, Register, UserRegistry};
use authlog::config::StoreSettings;
use authlog::domain::{Email, Password};
use authlog::events::{EventMetadata, EventStore, PostgresEventStore, PostgresSettings};
use authlog::hashing::PasswordHasher;
use futures_util::future::join_all;
use secrecy::SecretString;

async fn store_for(db: &TestDatabase) -> Arc<PostgresEventStore> {
    let settings = PostgresSettings::new(SecretString::from(db.url()));
    let store = PostgresEventStore::connect(&settings)
        .expect("pool")
        .with_personal_data(crate::common::shredder());
    store.migrate().await.expect("migrations apply");
    Arc::new(store)
}

async fn registry_on(store: Arc<PostgresEventStore>) -> Addr<UserRegistry> {
    UserRegistry::load(store, PasswordHasher::new(4, 2))
        .await
        .expect("loads")
        .start()
}

#[actix_web::test]
async fn migrations_are_tracked_and_idempotent() {
    let db = TestDatabase::create().await;
    let first = store_for(&db).await;
    first.migrate().await.expect("second run is a no-op");
    // Several instances starting at once serialise on the advisory lock.
    let racers = (0..4).map(|_| async { store_for(&db).await });
    join_all(racers).await;
    let client = db.client().await;
    let applied: i64 = client
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .expect("history table")
        .get(0);
    assert_eq!(applied, 7, "V1 to V7, each once");
}

#[actix_web::test]
async fn the_event_table_is_append_only() {
    let (app, db) = spawn_app_on_postgres().await;
    assert_eq!(
        app.signup(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await.status(),
        201
    );

    let client = db.client().await;
    for statement in [
        "UPDATE events SET payload = '{}'::jsonb",
        "UPDATE events SET recorded_at = now() - interval '1 day'",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let error = client.batch_execute(statement).await.expect_err(statement);
        let message = error
            .as_db_error()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        assert!(
            message.starts_with("events is append-only"),
            "{statement}: {message}"
        );
    }
    assert_eq!(db.event_types().await, [("UserRegistered".to_owned(), 1)]);
}

#[actix_web::test]
async fn the_database_itself_refuses_a_second_registration_or_stream_version() {
    let (app, db) = spawn_app_on_postgres().await;
    assert_eq!(
        app.signup(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await.status(),
        201
    );
    let client = db.client().await;

    // The email is sealed in the log; its keyed blind index beside it is unique.
    let duplicate_email = "INSERT INTO personal_keys (user_id, email_index, wrapped_key)
        SELECT gen_random_uuid(), email_index, wrapped_key FROM personal_keys LIMIT 1";
    let error = client
        .batch_execute(duplicate_email)
        .await
        .expect_err("unique email");
    let db_error = error.as_db_error().expect("a database error");
    assert_eq!(db_error.constraint(), Some("personal_keys_email_index_key"));
    // A registration stored in clear (as before V5) is still covered by the events' own index.
    let clear_email = "INSERT INTO events (position, stream_id, stream_version, event_type,
                                           event_version, payload)
        VALUES (1000, gen_random_uuid(), 1, 'UserRegistered', 1,
                jsonb_build_object('email', 'user@example.com', 'user_id', 'x', 'password_hash', 'x'))";
    client
        .batch_execute(clear_email)
        .await
        .expect("one in clear");
    let error = client
        .batch_execute(&clear_email.replace("1000", "1002"))
        .await
        .expect_err("unique email in clear");
    let db_error = error.as_db_error().expect("a database error");
    assert_eq!(db_error.constraint(), Some("events_registered_email_key"));

    let duplicate_version =
        "INSERT INTO events (position, stream_id, stream_version, event_type, event_version,
                             payload)
        SELECT 1001, stream_id, 1, 'LoginSucceeded', 1, '{}'::jsonb FROM events LIMIT 1";
    let error = client
        .batch_execute(duplicate_version)
        .await
        .expect_err("unique version");
    let db_error = error.as_db_error().expect("a database error");
    assert_eq!(db_error.constraint(), Some("events_stream_version_key"));
}

#[actix_web::test]
async fn two_registries_on_one_database_never_register_an_email_twice() {
    let db = TestDatabase::create().await;
    let first = registry_on(store_for(&db).await).await;
    let second = registry_on(store_for(&db).await).await;
    // 25 attempts on each registry at once. Neither registry's memory knows about the other's;
    // only the database's unique index can stop the second registration.
    let outcome =
        crate::common::race_registrations(&[&first, &second], "race@example.com", 50).await;
    assert_eq!(outcome, (1, 49));
    assert_eq!(db.event_types().await, [("UserRegistered".to_owned(), 1)]);

    // Both registries now know the user and keep the stream's versions in step.
    let email = Email::parse("race@example.com").expect("valid");
    for registry in [&first, &second, &first] {
        let login = registry
            .send(Authenticate {
                email: email.clone(),
                password: Password::for_login("password1".into()).expect("fits"),
                metadata: EventMetadata::default(),
                session: None,
            })
            .await
            .expect("answers");
        assert!(login.is_ok(), "{login:?}");
    }
    let versions: Vec<i32> = db.event_types().await.into_iter().map(|(_, v)| v).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
}

#[actix_web::test]
async fn two_registries_appending_at_once_keep_one_valid_chain() {
    let db = TestDatabase::create().await;
    let registries = [
        registry_on(store_for(&db).await).await,
        registry_on(store_for(&db).await).await,
    ];
    let hash = crate::common::password_hash("password1").await;
    let signups = (0..60).map(|i| {
        let registry = registries[i % 2].clone();
        let password_hash = hash.clone();
        async move {
            registry
                .send(Register {
                    email: Email::parse(&format!("chain{i}@example.com")).expect("valid"),
                    password_hash,
                    metadata: EventMetadata::default(),
                })
                .await
                .expect("answers")
        }
    });
    let outcomes = join_all(signups).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let verifier = authlog::events::chain::verify(store_for(&db).await.as_ref())
        .await
        .expect("reads");
    assert_eq!(
        verifier.broken, None,
        "one chain, whatever the interleaving"
    );
    assert_eq!(verifier.count, 60);
    assert_eq!(
        verifier.head_position, 60,
        "positions committed in chain order, no gaps"
    );
}

#[actix_web::test]
async fn a_restart_keeps_every_user_and_their_tokens() {
    let db = TestDatabase::create().await;
    let before = spawn_app_with(test_settings(db.store_settings())).await;
    let mut tokens = Vec::new();
    for i in 0..5 {
        let email = format!("user{i}@example.com");
        assert_eq!(before.signup(&email, TUTORIAL_PASSWORD).await.status(), 201);
        tokens.push(before.token_for(&email, TUTORIAL_PASSWORD).await);
    }
    let directory_before = before.registry.send(GetDirectory).await.expect("answers");

    // A new Application on the same database replays the log.
    let after = spawn_app_with(test_settings(db.store_settings())).await;
    let directory_after = after.registry.send(GetDirectory).await.expect("answers");
    assert_eq!(directory_after, directory_before);
    for (i, token) in tokens.iter().enumerate() {
        let email = format!("user{i}@example.com");
        assert_eq!(after.login(&email, TUTORIAL_PASSWORD).await.status(), 200);
        let response = after.profile(Some(&format!("Bearer {token}"))).await;
        assert_eq!(response.status(), 200, "a token from before the restart");
        assert_eq!(after.signup(&email, TUTORIAL_PASSWORD).await.status(), 409);
    }
}

#[actix_web::test]
async fn an_unreachable_database_gets_503_and_the_service_recovers_by_itself() {
    let db = TestDatabase::create().await;
    let upstream: SocketAddr = format!("{}:{}", db.host(), db.port())
        .parse()
        .expect("address");
    let proxy = TcpProxy::start(upstream).await;
    let mut postgres =
        PostgresSettings::new(SecretString::from(db.url_at("127.0.0.1", proxy.port)));
    postgres.timeout = Duration::from_secs(2);
    let app = spawn_app_with(test_settings(StoreSettings::Postgres(postgres))).await;
    assert_eq!(
        app.signup(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await.status(),
        201
    );

    proxy.cut();
    for attempt in 0..3 {
        let response = app
            .signup(&format!("down{attempt}@example.com"), TUTORIAL_PASSWORD)
            .await;
        let retry_after = response.headers().get("retry-after").cloned();
        let detail = assert_error(response, 503).await;
        assert_eq!(detail, "Service temporarily unavailable, please retry");
        assert!(retry_after.is_some(), "503 carries Retry-After");
        // A correct password still gets no token: the login could not be logged.
        let response = app.login(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await;
        assert_error(response, 503).await;
    }

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = app.signup("back@example.com", TUTORIAL_PASSWORD).await;
        if response.status() == 201 {
            break;
        }
        assert_eq!(response.status(), 503, "only 503 while recovering");
        assert!(
            Instant::now() < deadline,
            "the service did not recover within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        app.login(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await.status(),
        200
    );
    // Nothing from the outage was half-applied: no user for the refused signups.
    assert_eq!(
        app.login("down0@example.com", TUTORIAL_PASSWORD)
            .await
            .status(),
        401
    );
    let store = store_for(&db).await;
    assert_eq!(
        crate::common::registered_emails(store.as_ref()).await,
        [TUTORIAL_EMAIL, "back@example.com"]
    );
}

#[actix_web::test]
async fn a_corrupt_log_stops_start_up_instead_of_serving_a_wrong_directory() {
    let db = TestDatabase::create().await;
    let store = store_for(&db).await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO events (position, stream_id, stream_version, event_type, event_version,
                                 payload)
             VALUES (1, gen_random_uuid(), 1, 'UserTeleported', 1, '{}'::jsonb)",
        )
        .await
        .expect("insert");
    let error = UserRegistry::load(
        store.clone() as Arc<dyn EventStore>,
        PasswordHasher::new(4, 1),
    )
    .await
    .err()
    .expect("refuses to start");
    let chain = authlog::diagnostics::error_chain(&error);
    assert!(
        chain.contains("position 1") && chain.contains("UserTeleported"),
        "{chain}"
    );
}

#[actix_web::test]
async fn rows_from_before_the_chain_are_linked_at_start_up() {
    let db = TestDatabase::create().await;
    let registry = registry_on(store_for(&db).await).await;
    let hash = crate::common::password_hash("password1").await;
    for i in 0..3 {
        registry
            .send(Register {
                email: Email::parse(&format!("old{i}@example.com")).expect("valid"),
                password_hash: hash.clone(),
                metadata: EventMetadata::default(),
            })
            .await
            .expect("answers")
            .expect("registers");
    }
    // As a log written before V2 looks: no links.
    db.client()
        .await
        .batch_execute(
            "ALTER TABLE events DISABLE TRIGGER USER;
             UPDATE events SET prev_hash = NULL, hash = NULL;
             ALTER TABLE events ENABLE TRIGGER USER",
        )
        .await
        .expect("unlinked");
    let store = store_for(&db).await;
    let verifier = authlog::events::chain::verify(store.as_ref())
        .await
        .expect("reads");
    assert!(
        verifier.broken.is_some(),
        "unlinked rows are not a valid chain"
    );
    store.prepare().await.expect("links the old rows");
    let verifier = authlog::events::chain::verify(store.as_ref())
        .await
        .expect("reads");
    assert_eq!(verifier.broken, None);
    assert_eq!(verifier.count, 3);
    // The append-only trigger is back.
    let error = db.client().await.batch_execute("DELETE FROM events").await;
    assert!(error.is_err(), "still append-only");
}

#[actix_web::test]
async fn a_migration_the_database_refuses_stops_start_up_naming_it_and_the_reason() {
    let db = TestDatabase::create().await;
    // Something in V1's way: a table with the log's name and another shape.
    db.client()
        .await
        .batch_execute("CREATE TABLE events (id integer)")
        .await
        .expect("create the obstacle");
    // Before, any failure of `prepare` counted as "unreachable": the app started unready and
    // retried forever.
    let error = match authlog::startup::Application::build(test_settings(db.store_settings())).await
    {
        Ok(_) => panic!("start-up must fail, not retry"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains("V1__event_log"),
        "names the migration: {error}"
    );
    assert!(
        error.contains("\"events\" already exists") && error.contains("42P07"),
        "carries the database's message: {error}"
    );
}

#[actix_web::test]
async fn a_database_that_does_not_exist_stops_start_up_with_a_createdb_hint() {
    let db = TestDatabase::create().await;
    let url = db
        .url()
        .replace(db.name(), &format!("{}_missing", db.name()));
    let settings = test_settings(StoreSettings::Postgres(PostgresSettings::new(
        SecretString::from(url),
    )));
    let error = match authlog::startup::Application::build(settings).await {
        Ok(_) => panic!("start-up must fail, not wait for ever"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("does not exist"), "{error}");
    assert!(
        error.contains("createdb -h 127.0.0.1 -p 5432 -U postgres"),
        "{error}"
    );
}

/// The claim the tail rests on: appends are serialised by the chain's lock and each becomes
/// visible before the next can take it, so a reader of `position > last` sees positions in
/// order with no hole, however many processes write at once.
#[actix_web::test]
async fn the_tail_never_skips_a_position_under_concurrent_writers() {
    use authlog::domain::UserId;
    use authlog::events::{Event, NewEvent, UserRegistered};
    const WRITERS: usize = 4;
    const BATCHES: usize = 60;
    let db = TestDatabase::create().await;
    let reader = store_for(&db).await;
    let hash = crate::common::password_hash("irrelevant").await;
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = store_for(&db).await;
        let hash = hash.clone();
        writers.push(actix_rt::spawn(async move {
            for batch in 0..BATCHES {
                let events = (0..1 + batch % 3)
                    .map(|i| NewEvent {
                        stream_version: 1,
                        event: Event::UserRegistered(UserRegistered {
                            user_id: UserId::new(),
                            email: Email::parse(&format!("w{writer}-{batch}-{i}@example.com"))
                                .expect("valid"),
                            password_hash: hash.clone(),
                            imported: None,
                        }),
                        metadata: EventMetadata::default(),
                    })
                    .collect();
                store.append(events).await.expect("append");
            }
        }));
    }
    let total: i64 = (0..BATCHES)
        .map(|batch| 1 + (batch % 3) as i64)
        .sum::<i64>()
        * WRITERS as i64;
    let mut last = 0;
    let mut reads = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while last < total {
        assert!(Instant::now() < deadline, "the writers did not finish");
        for event in reader.read_after(last, 7).await.expect("read") {
            assert_eq!(event.position, last + 1, "the tail skipped a position");
            last = event.position;
        }
        reads += 1;
    }
    for writer in writers {
        writer.await.expect("writer finished");
    }
    assert!(reads > 10, "the reader ran alongside the writers");
}

/// Two registries on one database: an append that lands past another writer's event applies
/// that event first, so neither a catch-up (`position > last`) nor the directory misses it.
#[actix_web::test]
async fn an_own_append_past_another_writers_event_applies_that_event_too() {
    let db = TestDatabase::create().await;
    let a = registry_on(store_for(&db).await).await;
    let b = registry_on(store_for(&db).await).await;
    let hash = crate::common::password_hash("irrelevant").await;
    for round in 0..20 {
        let register = |registry: &Addr<UserRegistry>, email: String| {
            registry.send(Register {
                email: Email::parse(&email).expect("valid"),
                password_hash: hash.clone(),
                metadata: EventMetadata::default(),
            })
        };
        let on_a = format!("a{round}@example.com");
        register(&a, on_a.clone())
            .await
            .expect("answers")
            .expect("registered on A");
        register(&b, format!("b{round}@example.com"))
            .await
            .expect("answers")
            .expect("registered on B");
        let directory = b.send(GetDirectory).await.expect("answers");
        assert!(
            directory
                .by_email(&Email::parse(&on_a).expect("valid"))
                .is_some(),
            "round {round}: B's append came after A's, and B lacks A's user"
        );
    }
}
