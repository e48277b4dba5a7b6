//! Database faults, on a throwaway PostgreSQL cluster (never the machine's own):
//! F1, the database restarts mid-load; F4, the database is down at boot.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::cluster::Cluster;
use crate::common::{TestApp, assert_error, spawn_app_with, test_settings};
use authlog::domain::{Email, SessionId, UserId};
use authlog::events::PostgresSettings;
use authlog::jwt::{JwtKeys, TokenPolicy};
use authlog::projection::UserSummary;
use chrono::Utc;
use secrecy::SecretString;

const PASSWORD: &str = "fault-test-password";

fn app_settings(cluster: &Cluster) -> authlog::config::Settings {
    let mut postgres = PostgresSettings::new(SecretString::from(cluster.url()));
    // Bounded waits, so an outage shows as quick 503s rather than hung requests.
    postgres.timeout = Duration::from_secs(2);
    let mut settings = test_settings(authlog::config::StoreSettings::Postgres(postgres));
    // The load signs up and logs in many users from 127.0.0.1: the per-address sign-up and
    // login rates are off.
    settings.throttle.signups_per_minute = 0;
    settings.throttle.logins_per_minute = 0;
    settings
}

async fn ready(app: &TestApp) -> bool {
    app.http
        .get(app.url("/health/ready"))
        .send()
        .await
        .is_ok_and(|response| response.status() == 200)
}

/// A 503 as the contract has it: the JSON detail and a Retry-After header.
async fn assert_503(response: reqwest::Response, what: &str) {
    assert!(
        response.headers().contains_key("retry-after"),
        "{what}: 503 without Retry-After"
    );
    assert_eq!(
        assert_error(response, 503).await,
        "Service temporarily unavailable, please retry",
        "{what}"
    );
}

/// F4: readiness is 503, and everything that needs the database is 503 (never 401 or 500),
/// until the database comes up; then the service becomes ready by itself.
#[actix_web::test]
async fn f4_database_down_at_boot() {
    let cluster = Cluster::init(); // created, not started
    let app = spawn_app_with(app_settings(&cluster)).await;

    let response = app.get("/health/ready").await;
    assert!(response.headers().contains_key("retry-after"));
    let detail = assert_error(response, 503).await;
    assert!(
        detail.contains("the event store does not answer"),
        "{detail}"
    );
    assert!(
        detail.contains("the event log has not been replayed yet"),
        "{detail}"
    );
    let response = app.get("/health/live").await;
    assert_eq!(response.status(), 200, "alive even without the database");

    assert_503(app.signup("early@example.com", PASSWORD).await, "signup").await;
    assert_503(app.login("early@example.com", PASSWORD).await, "login").await;
    // A well-formed token for a user (and a key) the service cannot look up yet: 503, not 401.
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let kid = authlog::domain::KeyId::thumbprint_ed25519(key.verifying_key().as_bytes());
    let keys = JwtKeys::empty(TokenPolicy::new(Duration::from_secs(600))).signing_ed25519(kid, key);
    let user = UserSummary {
        user_id: UserId::new(),
        email: Email::parse("early@example.com").expect("valid"),
        roles: Box::default(),
    };
    let token = keys
        .issue(
            &user,
            SessionId::new(),
            Utc::now() + chrono::Duration::days(1),
            Utc::now(),
        )
        .expect("signs")
        .into_string();
    let response = app.profile(Some(&format!("Bearer {token}"))).await;
    assert_503(response, "profile").await;

    cluster.start();
    let started = Instant::now();
    while !ready(&app).await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not ready 10 s after the database came up"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "F4: ready {:?} after the database came up",
        started.elapsed()
    );
    assert_eq!(
        app.signup("early@example.com", PASSWORD).await.status(),
        201
    );
    assert_eq!(app.login("early@example.com", PASSWORD).await.status(), 200);
}

/// One client's record of the load.
#[derive(Default)]
struct Seen {
    acknowledged: HashSet<String>,
    /// (when the request was sent, status) of every answer.
    answers: Vec<(Instant, u16)>,
}

/// F1: the database stops (immediate, as in a crash) and restarts while sign-ups and logins
/// run. During the outage the only errors are 503 with Retry-After; within 10 s of the
/// database's return the service answers again, without a restart; every 201 logs in.
#[actix_web::test]
async fn f1_database_restarts_mid_load() {
    let cluster = Cluster::start_new();
    let app = Arc::new(spawn_app_with(app_settings(&cluster)).await);
    assert!(ready(&app).await);

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|client| {
            let (app, seen, stop) = (Arc::clone(&app), Arc::clone(&seen), Arc::clone(&stop));
            actix_rt::spawn(async move {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    i += 1;
                    let email = format!("f1-{client}-{i}@example.com");
                    let sent = Instant::now();
                    let response = app.signup(&email, PASSWORD).await;
                    let status = response.status().as_u16();
                    if status == 503 {
                        assert_503(response, "signup during the outage").await;
                    }
                    seen.lock()
                        .expect("not poisoned")
                        .answers
                        .push((sent, status));
                    if status != 201 {
                        assert_eq!(status, 503, "signup: only 503s may fail");
                        actix_rt::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    seen.lock()
                        .expect("not poisoned")
                        .acknowledged
                        .insert(email.clone());
                    let sent = Instant::now();
                    let response = app.login(&email, PASSWORD).await;
                    let status = response.status().as_u16();
                    if status == 503 {
                        assert_503(response, "login during the outage").await;
                    } else {
                        assert_eq!(status, 200, "login of {email}: only 503s may fail");
                    }
                    seen.lock()
                        .expect("not poisoned")
                        .answers
                        .push((sent, status));
                }
            })
        })
        .collect();

    actix_rt::time::sleep(Duration::from_secs(1)).await;
    let cluster = actix_rt::task::spawn_blocking(move || {
        cluster.stop_immediate();
        cluster
    })
    .await
    .expect("stopped");
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    let cluster = actix_rt::task::spawn_blocking(move || {
        cluster.start();
        cluster
    })
    .await
    .expect("started");
    let returned = Instant::now();
    // Keep the load on until the service has answered successfully for a while, at most 15 s.
    loop {
        actix_rt::time::sleep(Duration::from_millis(200)).await;
        let recovered = {
            let seen = seen.lock().expect("not poisoned");
            let ok_after: Vec<Instant> = seen
                .answers
                .iter()
                .filter(|(sent, status)| *sent > returned && *status < 300)
                .map(|(sent, _)| *sent)
                .collect();
            ok_after.len() > 20
        };
        if recovered || returned.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        client.await.expect("client saw only 2xx and 503");
    }

    let seen = Arc::try_unwrap(seen)
        .ok()
        .expect("clients are done")
        .into_inner()
        .expect("not poisoned");
    let outage = seen
        .answers
        .iter()
        .filter(|(_, status)| *status == 503)
        .count();
    assert!(
        outage > 0,
        "no request hit the outage; the test proved nothing"
    );
    // The first request sent after the return that succeeded, and every 503 after that.
    let first_success = seen
        .answers
        .iter()
        .filter(|(sent, status)| *sent > returned && *status < 300)
        .map(|(sent, _)| *sent)
        .min()
        .expect("the service answered again after the database returned");
    let recovery = first_success.duration_since(returned);
    assert!(
        recovery < Duration::from_secs(10),
        "recovered only after {recovery:?}"
    );
    let late_failures = seen
        .answers
        .iter()
        .filter(|(sent, status)| *status == 503 && *sent > first_success + Duration::from_secs(1))
        .count();
    assert_eq!(late_failures, 0, "503s long after the service recovered");
    eprintln!(
        "F1: {} acknowledged, {outage} 503s during the outage, serving again {recovery:?} after \
         the database returned",
        seen.acknowledged.len()
    );

    for email in &seen.acknowledged {
        let response = app.login(email, PASSWORD).await;
        assert_eq!(
            response.status(),
            200,
            "{email} was acknowledged but cannot log in"
        );
    }
    drop(cluster);
}

/// The change feed while the database is away: a poll about every second instead of
/// notifications, then listening again once it is back, then notifications.
#[actix_web::test]
async fn the_change_feed_polls_while_the_database_is_away_and_listens_again() {
    use authlog::events::{Change, EventStore, PostgresEventStore};
    let cluster = Cluster::init(); // created, not started
    let mut settings = PostgresSettings::new(SecretString::from(cluster.url()));
    settings.timeout = Duration::from_secs(2);
    let store = PostgresEventStore::connect(&settings)
        .expect("pool")
        .with_personal_data(crate::common::shredder());
    let mut feed = store.watch().expect("PostgreSQL has a change feed");
    let polling = Instant::now();
    for _ in 0..3 {
        assert_eq!(next_change(&mut feed).await, Change::Poll);
    }
    assert!(
        polling.elapsed() >= Duration::from_millis(1_900),
        "about one a second"
    );
    let cluster = actix_rt::task::spawn_blocking(move || {
        cluster.start();
        cluster
    })
    .await
    .expect("started");
    let mut change = next_change(&mut feed).await;
    while change == Change::Poll {
        change = next_change(&mut feed).await;
    }
    assert_eq!(change, Change::Listening);
    store.migrate().await.expect("migrations");
    store
        .append(vec![authlog::events::NewEvent {
            stream_version: 1,
            event: authlog::events::Event::UserRegistered(authlog::events::UserRegistered {
                user_id: UserId::new(),
                email: Email::parse("feed@example.com").expect("valid"),
                password_hash: crate::common::password_hash("irrelevant").await,
                imported: None,
            }),
            metadata: authlog::events::EventMetadata::default(),
        }])
        .await
        .expect("append");
    assert_eq!(next_change(&mut feed).await, Change::Appended(1));
    actix_rt::task::spawn_blocking(move || cluster.stop_immediate())
        .await
        .expect("stopped");
    assert_eq!(next_change(&mut feed).await, Change::Lost);
    assert_eq!(next_change(&mut feed).await, Change::Poll);
}

async fn next_change(feed: &mut authlog::events::ChangeFeed) -> authlog::events::Change {
    use futures_util::StreamExt;
    tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .expect("the feed says something within 10 s")
        .expect("the feed does not end")
}
