//! Operating authlog: health probes, metrics, structured logs without secrets, graceful
//! shutdown under load (fault F7).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authlog::throttle::turns::MAX_WAITING_PER_ADDRESS;

use crate::common::service::{Service, embedded_env};
use crate::common::{
    TestDatabase, assert_error, spawn_app, spawn_app_on_postgres, spawn_app_with, test_settings,
};
use authlog::config::StoreSettings;
use authlog::events::InMemoryEventStore;
use serde_json::{Value, json};

const PASSWORD: &str = "operations-password-1";
const WRONG_PASSWORD: &str = "operations-wrong-password";

#[actix_web::test]
async fn liveness_and_readiness_when_all_is_well() {
    let (app, _db) = spawn_app().await;
    let response = app.get("/health/live").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.expect("json")["status"],
        "alive"
    );

    assert_eq!(
        app.signup("ready@example.com", PASSWORD).await.status(),
        201
    );
    let response = app.get("/health/ready").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["users"], 1);
    assert!(body["position"].as_i64().is_some_and(|p| p >= 1), "{body}");
}

#[actix_web::test]
async fn readiness_is_503_naming_the_store_when_it_does_not_answer() {
    let store = Arc::new(InMemoryEventStore::new());
    let app = spawn_app_with(test_settings(StoreSettings::Provided(store.clone()))).await;
    store.set_offline(true);
    let response = app.get("/health/ready").await;
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        assert_error(response, 503).await,
        "not ready: the event store does not answer"
    );
    // Liveness does not depend on the store.
    let response = app.get("/health/live").await;
    assert_eq!(response.status(), 200);
    store.set_offline(false);
    let response = app.get("/health/ready").await;
    assert_eq!(response.status(), 200);
}

/// The value of one sample line, such as `authlog_projection_users 3`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line[series.len()..].trim().parse().ok())
}

#[actix_web::test]
async fn metrics_report_requests_bcrypt_appends_projection_queue_and_pool() {
    let (app, _db) = spawn_app_on_postgres().await;
    let scrape = || async {
        let response = app.get("/metrics").await;
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with("text/plain; version=0.0.4")
        );
        response.text().await.expect("text")
    };
    let signup_series =
        r#"authlog_http_requests_total{method="POST",route="/signup",status="201"}"#;
    let registered_series = r#"authlog_events_appended_total{event_type="UserRegistered"}"#;
    let before = scrape().await;
    let signups_before = sample(&before, signup_series).unwrap_or(0.0);
    let registered_before = sample(&before, registered_series).unwrap_or(0.0);

    assert_eq!(
        app.signup("metrics@example.com", PASSWORD).await.status(),
        201
    );
    assert_eq!(
        app.login("metrics@example.com", PASSWORD).await.status(),
        200
    );
    let after = scrape().await;

    // Counters are process-wide (other tests in this binary add to them): compare deltas.
    assert!(sample(&after, signup_series).expect("signup counted") >= signups_before + 1.0);
    assert!(sample(&after, registered_series).expect("appends counted") >= registered_before + 1.0);
    for series in [
        r#"authlog_http_request_duration_seconds_count{method="POST",route="/login"}"#,
        r#"authlog_bcrypt_duration_seconds_count{operation="hash"}"#,
        r#"authlog_bcrypt_duration_seconds_count{operation="verify"}"#,
        r#"authlog_events_appended_total{event_type="LoginSucceeded"}"#,
        "authlog_append_duration_seconds_count",
        "authlog_append_batch_size_count",
        "authlog_projection_users",
        "authlog_registry_queue_depth",
        "authlog_registry_ready",
        r#"authlog_db_pool_connections{state="max"}"#,
        r#"authlog_db_pool_connections{state="open"}"#,
    ] {
        assert!(
            sample(&after, series).is_some(),
            "{series} missing:\n{after}"
        );
    }
    assert_eq!(
        sample(&after, r#"authlog_db_pool_connections{state="max"}"#),
        Some(4.0)
    );
}

/// Signs up, logs in (right and wrong password), calls /profile (good and bad token), with the
/// binary logging JSON; then stops it with SIGTERM and reads its log.
#[actix_web::test]
async fn logs_are_json_lines_with_request_ids_and_never_hold_secrets() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut env = embedded_env(data.path());
    env.push(("AUTHLOG_LOG_FORMAT".to_owned(), "json".to_owned()));
    let service = Service::start(&env);
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(service.url(path)).json(&body).send();
    let request_id = |response: &reqwest::Response| {
        response.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned()
    };

    let email = "logs@example.com";
    let response = post("/signup", json!({"email": email, "password": PASSWORD}))
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
    let signup_id = request_id(&response);
    let response = post(
        "/login",
        json!({"email": email, "password": WRONG_PASSWORD}),
    )
    .await
    .expect("sent");
    assert_eq!(response.status(), 401);
    let failed_id = request_id(&response);
    let response = post("/login", json!({"email": email, "password": PASSWORD}))
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let login_id = request_id(&response);
    let body = response.json::<Value>().await.expect("json");
    let token = body["access_token"].as_str().expect("token").to_owned();
    let spent = body["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    // A refresh and a logout: none of their tokens may reach the log either.
    let response = post("/token/refresh", json!({"refresh_token": spent}))
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let refreshed = response.json::<Value>().await.expect("json");
    let current = refreshed["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    let response = post("/login", json!({"email": email, "password": PASSWORD}))
        .await
        .expect("sent");
    let other = response.json::<Value>().await.expect("json");
    let response = http
        .post(service.url("/logout"))
        .bearer_auth(other["access_token"].as_str().expect("token"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 204);
    let response = http
        .get(service.url("/profile"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let tampered = format!("{token}x");
    let response = http
        .get(service.url("/profile"))
        .bearer_auth(&tampered)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 401);
    let bad_token_id = request_id(&response);

    let (status, log) = service.terminate(Duration::from_secs(30));
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");

    let key = std::fs::read_to_string(data.path().join("master-key")).expect("key file");
    let lines: Vec<Value> = log
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    for (line, raw) in lines.iter().zip(&log) {
        assert!(
            line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "UTC: {raw}"
        );
        assert!(line["level"].is_string(), "{raw}");
        let refresh_tokens = [
            spent.as_str(),
            current.as_str(),
            &spent[..20],
            &current[20..40],
        ];
        for secret in [PASSWORD, WRONG_PASSWORD, "eyJ", "$2b$", key.trim()]
            .into_iter()
            .chain(refresh_tokens)
        {
            assert!(
                !raw.contains(secret),
                "a log line holds a secret ({secret:.8}…): {raw}"
            );
        }
    }
    // Every authentication attempt: outcome, client address, and the request's id.
    let attempt = |request_id: &str| {
        lines
            .iter()
            .find(|line| {
                line["message"] == "authentication attempt" && line["span"]["id"] == request_id
            })
            .unwrap_or_else(|| {
                panic!(
                    "no attempt logged for request {request_id}:\n{}",
                    log.join("\n")
                )
            })
    };
    for (request_id, action, outcome) in [
        (&signup_id, "signup", "succeeded"),
        (&failed_id, "login", "invalid_credentials"),
        (&login_id, "login", "succeeded"),
        (&bad_token_id, "token", "invalid_token"),
    ] {
        let line = attempt(request_id);
        assert_eq!(line["action"], action, "{line}");
        assert_eq!(line["outcome"], outcome, "{line}");
        assert_eq!(line["client"], "127.0.0.1", "{line}");
    }
}

/// F7: SIGTERM while sign-ups stream in. The process exits 0 after answering what it accepted,
/// and after a restart every acknowledged user is there.
async fn sigterm_under_load(env: Vec<(String, String)>) {
    let service = Service::start(&env);
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let address = service.address.clone();
            let acknowledged = Arc::clone(&acknowledged);
            let stop = Arc::clone(&stop);
            actix_rt::spawn(async move {
                let http = reqwest::Client::new();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let email = format!("term-{client}-{i}@example.com");
                    let response = http
                        .post(format!("{address}/signup"))
                        .json(&json!({"email": email, "password": PASSWORD}))
                        .send()
                        .await;
                    match response {
                        Ok(response) if response.status() == 201 => {
                            acknowledged.lock().expect("not poisoned").insert(email);
                        }
                        // A graceful stop never answers 5xx to what it accepted.
                        Ok(response) => panic!("sign-up answered {}", response.status()),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    let (status, log) =
        actix_rt::task::spawn_blocking(move || service.terminate(Duration::from_secs(40)))
            .await
            .expect("joined");
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("client finished without panicking");
    }
    assert!(
        status.success(),
        "exit status after SIGTERM: {status:?}\n{}",
        log.join("\n")
    );
    assert!(
        log.iter().any(|line| line.contains("authlog stopped")),
        "the last line says it stopped:\n{}",
        log.join("\n")
    );

    let acknowledged = acknowledged.lock().expect("not poisoned").clone();
    assert!(
        acknowledged.len() > 50,
        "too little load: {}",
        acknowledged.len()
    );
    let service = Service::start(&env);
    let http = reqwest::Client::new();
    let emails: Vec<&String> = acknowledged.iter().collect();
    // One address may have this many logins waiting at once (and more get 429): log in that
    // many at a time.
    for chunk in emails.chunks(MAX_WAITING_PER_ADDRESS) {
        let replies = futures_util::future::join_all(chunk.iter().map(|email| {
            http.post(service.url("/login"))
                .json(&json!({"email": email, "password": PASSWORD}))
                .send()
        }))
        .await;
        for (email, reply) in chunk.iter().zip(replies) {
            assert_eq!(
                reply.expect("answered").status(),
                200,
                "{email} lost after SIGTERM"
            );
        }
    }
}

#[actix_web::test]
async fn sigterm_under_load_loses_nothing_on_the_embedded_store() {
    let data = tempfile::tempdir().expect("temp dir");
    sigterm_under_load(embedded_env(data.path())).await;
}

#[actix_web::test]
async fn sigterm_under_load_loses_nothing_on_postgres() {
    let db = TestDatabase::create().await;
    sigterm_under_load(vec![
        ("DATABASE_URL".to_owned(), db.url()),
        (
            "AUTHLOG_MASTER_KEY".to_owned(),
            crate::common::TEST_MASTER_KEY.to_owned(),
        ),
    ])
    .await;
}
