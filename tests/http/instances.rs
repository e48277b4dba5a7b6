//! Several `authlog serve` processes on one PostgreSQL database act as one service: every
//! instance applies every committed event promptly, decides logins with every instance's
//! events, and trails the log's head visibly. The embedded store stays one process per data
//! directory.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::Value;

use crate::common::TestDatabase;
use crate::common::service::{Service, embedded_env, login_at, run, signup_at};

const PASSWORD: &str = "instances-password";

fn start(db: &TestDatabase, count: usize) -> Vec<Service> {
    (0..count)
        .map(|_| Service::start(&db.service_env()))
        .collect()
}

/// A client whose requests come from `127.0.1.n`, so per-address limits see many clients.
fn client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 1, n]))
        .build()
        .expect("client")
}

async fn signup(http: &reqwest::Client, service: &Service, email: &str) -> u16 {
    signup_at(http, &service.address, email, PASSWORD).await
}

async fn login(
    http: &reqwest::Client,
    service: &Service,
    email: &str,
    password: &str,
) -> reqwest::Response {
    login_at(http, &service.address, email, password).await
}

async fn ready(service: &Service) -> Value {
    let response = reqwest::get(service.url("/health/ready"))
        .await
        .expect("readiness answered");
    assert_eq!(
        response.status(),
        200,
        "{service:?} is ready",
        service = service.address
    );
    response.json().await.expect("readiness body")
}

/// Waits (at most `within`) until `service` has applied the log up to `position`, without
/// sending it anything but readiness probes (which never catch up themselves).
async fn applied_up_to(service: &Service, position: i64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let body = ready(service).await;
        if body["position"].as_i64() >= Some(position) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{} had not applied position {position} after {within:?}: {body}",
            service.address
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn sign_ups_on_any_instance_log_in_and_use_their_token_on_any_other_at_once() {
    let db = TestDatabase::create().await;
    let instances = start(&db, 3);
    // 200 users, 100 at a time (a full bcrypt queue would answer 503, by design), each from an
    // address of its own: signed up on one instance, logged in on the next straight after its
    // 201, and its token used on the third.
    for wave in 0..2_usize {
        let users = (0..100_usize).map(|i| {
            let instances = &instances;
            async move {
                let n = wave * 100 + i;
                let http = client_from(u8::try_from(n % 250 + 1).expect("small"));
                let email = format!("user-{n}@example.com");
                let (a, b, c) = (
                    &instances[n % 3],
                    &instances[(n + 1) % 3],
                    &instances[(n + 2) % 3],
                );
                assert_eq!(
                    signup(&http, a, &email).await,
                    201,
                    "{email} on {}",
                    a.address
                );
                let response = login(&http, b, &email, PASSWORD).await;
                assert_eq!(
                    response.status(),
                    200,
                    "{email} signed up on {}, logged in on {}",
                    a.address,
                    b.address
                );
                let token: Value = response.json().await.expect("token");
                let token = token["access_token"].as_str().expect("a token").to_owned();
                let profile = http
                    .get(c.url("/profile"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("profile answered");
                assert_eq!(
                    profile.status(),
                    200,
                    "{email}'s token from {} on {}",
                    b.address,
                    c.address
                );
            }
        });
        join_all(users).await;
    }
    // Every instance counts the same users, at the log's head, soon.
    let head = db.head().await;
    for instance in &instances {
        let body = applied_up_to(instance, head, Duration::from_secs(5)).await;
        assert_eq!(body["users"], 200, "{body}");
        assert_eq!(body["head"].as_i64(), Some(head), "{body}");
        assert_eq!(body["behind"], 0, "{body}");
    }
    // The propagation delay each saw is in its metrics.
    for instance in &instances {
        assert!(instance.metric("authlog_tail_delay_seconds_count").await > 0.0);
        assert_eq!(instance.metric("authlog_log_listening").await, 1.0);
    }
}

#[actix_web::test]
async fn an_email_signed_up_on_one_instance_is_taken_on_another() {
    let db = TestDatabase::create().await;
    let instances = start(&db, 2);
    let http = reqwest::Client::new();
    assert_eq!(signup(&http, &instances[0], "taken@example.com").await, 201);
    assert_eq!(signup(&http, &instances[1], "taken@example.com").await, 409);
    assert_eq!(
        signup(&http, &instances[1], "TAKEN@example.com ").await,
        409
    );
    assert_eq!(
        login(&http, &instances[1], "taken@example.com", PASSWORD)
            .await
            .status(),
        200
    );
}

#[actix_web::test]
async fn wrong_passwords_alternating_over_instances_lock_the_account_after_five() {
    let db = TestDatabase::create().await;
    let instances = start(&db, 2);
    let http = reqwest::Client::new();
    let email = "alternating@example.com";
    assert_eq!(signup(&http, &instances[0], email).await, 201);
    for attempt in 0..5 {
        let instance = &instances[attempt % 2];
        let response = login(&http, instance, email, "wrong-password").await;
        assert_eq!(
            response.status(),
            401,
            "attempt {} on {}",
            attempt + 1,
            instance.address
        );
    }
    // Locked on both instances, even with the right password.
    for instance in &instances {
        let response = login(&http, instance, email, PASSWORD).await;
        assert_eq!(
            response.status(),
            429,
            "after 5 failures, on {}",
            instance.address
        );
        assert!(response.headers().contains_key("retry-after"));
    }
}

#[actix_web::test]
async fn the_per_address_sign_up_rate_counts_every_instances_sign_ups() {
    let db = TestDatabase::create().await;
    let mut env = db.service_env();
    env.push(("AUTHLOG_SIGNUP_RATE_PER_MINUTE".to_owned(), "3".to_owned()));
    let instances = [Service::start(&env), Service::start(&env)];
    let http = reqwest::Client::new();
    for n in 0..3 {
        let instance = &instances[n % 2];
        assert_eq!(
            signup(&http, instance, &format!("rate-{n}@example.com")).await,
            201,
            "sign-up {} on {}",
            n + 1,
            instance.address
        );
    }
    // Three sign-ups from this address this minute, on two instances: both refuse a fourth.
    for instance in &instances {
        assert_eq!(
            signup(&http, instance, "rate-4@example.com").await,
            429,
            "{}",
            instance.address
        );
    }
}

#[actix_web::test]
async fn a_burst_of_guesses_spread_over_two_instances_gets_at_most_max_failures_plus_one_checks() {
    let db = TestDatabase::create().await;
    let instances = start(&db, 2);
    let http = reqwest::Client::new();
    let email = "burst@example.com";
    assert_eq!(signup(&http, &instances[0], email).await, 201);
    let guesses = (0..40).map(|i| {
        let (http, instance) = (&http, &instances[i % 2]);
        async move {
            login(http, instance, email, &format!("guess-{i}"))
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = join_all(guesses).await;
    assert!(
        statuses.iter().all(|status| matches!(status, 401 | 429)),
        "{statuses:?}; warnings: {:?}",
        instances
            .iter()
            .flat_map(Service::log_lines)
            .filter(|line| line.contains("WARN"))
            .collect::<Vec<_>>()
    );
    // Every password check that ran left a LoginFailed: 5 allowed, plus at most one in flight
    // on the other instance (max_failures + N - 1).
    let checks: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM events WHERE event_type = 'LoginFailed'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert!(
        (5..=6).contains(&checks),
        "{checks} password checks ran; {statuses:?}"
    );
}

#[actix_web::test]
async fn an_instance_whose_listening_connection_is_killed_stays_current_and_listens_again() {
    let db = TestDatabase::create().await;
    let instances = start(&db, 2);
    let (a, b) = (&instances[0], &instances[1]);
    let http = reqwest::Client::new();
    let admin = db.client().await;
    let name = format!("authlog-listen {}", b.pid());
    let listening = |name: String| {
        let admin = &admin;
        async move {
            let count: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    &[&name],
                )
                .await
                .expect("pg_stat_activity")
                .get(0);
            count
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    // Listening means the session exists and its LISTEN has run (the gauge is set after it).
    while listening(name.clone()).await != 1 || b.metric("authlog_log_listening").await != 1.0 {
        assert!(Instant::now() < deadline, "B did not listen within 10 s");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let killed: bool = admin
        .query_one(
            "SELECT bool_and(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1",
            &[&name],
        )
        .await
        .expect("terminate")
        .get(0);
    assert!(killed);
    // Writes on A keep reaching B, without any request to B that would catch up by itself.
    for n in 0..5 {
        assert_eq!(
            signup(&http, a, &format!("while-lost-{n}@example.com")).await,
            201
        );
    }
    applied_up_to(b, db.head().await, Duration::from_secs(5)).await;
    // And B listens again: a new session, and the gauge back at 1.
    let deadline = Instant::now() + Duration::from_secs(10);
    while listening(name.clone()).await != 1 || b.metric("authlog_log_listening").await != 1.0 {
        assert!(
            Instant::now() < deadline,
            "B did not listen again within 10 s"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        b.log_lines()
            .iter()
            .any(|line| line.contains("lost the connection that listens for appends")),
        "the loss is logged"
    );
    assert_eq!(signup(&http, a, "after-reconnect@example.com").await, 201);
    applied_up_to(b, db.head().await, Duration::from_secs(2)).await;
}

#[actix_web::test]
async fn an_instance_stopped_or_paused_while_another_writes_catches_up() {
    let db = TestDatabase::create().await;
    let a = Service::start(&db.service_env());
    let b = Service::start(&db.service_env());
    let http = reqwest::Client::new();

    // Paused (SIGSTOP): the notifications wait in its socket, and it applies them on SIGCONT.
    let signal = |name: &str, pid: u32| {
        let sent = std::process::Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {name}");
    };
    signal("-STOP", b.pid());
    for n in 0..10 {
        assert_eq!(
            signup(&http, &a, &format!("paused-{n}@example.com")).await,
            201
        );
    }
    signal("-CONT", b.pid());
    applied_up_to(&b, db.head().await, Duration::from_secs(5)).await;

    // Stopped (SIGTERM) and started again: it replays what it missed.
    let (status, _) = b.terminate(Duration::from_secs(10));
    assert!(status.success());
    for n in 0..10 {
        assert_eq!(
            signup(&http, &a, &format!("stopped-{n}@example.com")).await,
            201
        );
    }
    let b = Service::start(&db.service_env());
    let body = applied_up_to(&b, db.head().await, Duration::from_secs(5)).await;
    assert_eq!(body["users"], 20, "{body}");
    for n in 0..10 {
        let email = format!("stopped-{n}@example.com");
        assert_eq!(
            login(&http, &b, &email, PASSWORD).await.status(),
            200,
            "{email}"
        );
    }
}

#[actix_web::test]
async fn a_second_server_on_one_embedded_data_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data"); // made by the server
    let env = embedded_env(&data);
    let first = Service::start(&env);
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&data), 0o700, "the data directory is this user's only");
    assert_eq!(mode(&data.join("events.db.lock")), 0o600);
    let (status, _, stderr) = run(&env, &["serve"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another authlog server is already serving the embedded log")
            && stderr.contains("PostgreSQL"),
        "says why and what to do instead: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The first one is unharmed, and the auditors' read-only commands work beside it.
    assert_eq!(
        signup(&reqwest::Client::new(), &first, "first@example.com").await,
        201
    );
    let (status, stdout, stderr) = run(&env, &["verify"]);
    assert!(
        status.success(),
        "verify beside a running server: {stdout}{stderr}"
    );
    // Once it stops, another may serve the directory.
    let (status, _) = first.terminate(Duration::from_secs(10));
    assert!(status.success());
    let second = Service::start(&env);
    assert_eq!(
        login(
            &reqwest::Client::new(),
            &second,
            "first@example.com",
            PASSWORD
        )
        .await
        .status(),
        200
    );
}

/// The refresh-token attacks, on two real binaries with no reuse grace: a spent token replayed
/// on the other instance ends the whole session, the thief's current tokens included; and the
/// same token sent to both instances at once rotates once, the loser ending the session.
#[actix_web::test]
async fn a_refresh_token_replayed_on_another_instance_ends_its_session_everywhere() {
    let db = TestDatabase::create().await;
    let mut env = db.service_env();
    env.push((
        "AUTHLOG_REFRESH_REUSE_GRACE_SECONDS".to_owned(),
        "0".to_owned(),
    ));
    let (a, b) = (Service::start(&env), Service::start(&env));
    let http = reqwest::Client::new();
    assert_eq!(signup(&http, &a, "stolen@example.com").await, 201);
    let tokens = |body: Value| {
        (
            body["access_token"].as_str().expect("access").to_owned(),
            body["refresh_token"].as_str().expect("refresh").to_owned(),
        )
    };
    let refresh = |service: &Service, token: &str| {
        http.post(service.url("/token/refresh"))
            .json(&serde_json::json!({ "refresh_token": token }))
            .send()
    };
    let profile = |service: &Service, access: &str| {
        http.get(service.url("/profile")).bearer_auth(access).send()
    };
    let login_body = login(&http, &a, "stolen@example.com", PASSWORD).await;
    let (_, spent) = tokens(login_body.json().await.expect("json"));
    // The thief refreshes first, on A.
    let rotated = refresh(&a, &spent).await.expect("sent");
    assert_eq!(rotated.status(), 200);
    let (thief_access, thief_refresh) = tokens(rotated.json().await.expect("json"));
    assert_eq!(
        profile(&b, &thief_access).await.expect("sent").status(),
        200
    );
    // The victim's client presents the spent token, on B.
    let replay = refresh(&b, &spent).await.expect("sent");
    assert_eq!(replay.status(), 401);
    // The session is over on both instances, the thief's tokens included.
    for service in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while profile(service, &thief_access)
            .await
            .expect("sent")
            .status()
            != 401
        {
            assert!(Instant::now() < deadline, "the thief's token still works");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let response = refresh(service, &thief_refresh).await.expect("sent");
        assert_eq!(response.status(), 401);
    }

    // The same token at both instances at once: one rotation, and the other use ends it.
    let login_body = login(&http, &b, "stolen@example.com", PASSWORD).await;
    let (access, token) = tokens(login_body.json().await.expect("json"));
    let (on_a, on_b) = tokio::join!(refresh(&a, &token), refresh(&b, &token));
    let mut statuses = [
        on_a.expect("sent").status().as_u16(),
        on_b.expect("sent").status().as_u16(),
    ];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while profile(&a, &access).await.expect("sent").status() != 401 {
        assert!(Instant::now() < deadline, "the raced session still works");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ended: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM events WHERE event_type = 'SessionEnded' \
             AND payload->>'reason' = 'refresh_token_reused'",
            &[],
        )
        .await
        .expect("counted")
        .get(0);
    assert_eq!(ended, 2, "each reuse ended its session once");
}
