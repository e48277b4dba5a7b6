//! Roles (issue 17, first part): `RoleGranted` and `RoleRevoked` from `authlog admin`, against a
//! running server on both stores; the `roles` claim; `/profile`'s roles; the last admin's guard;
//! a revoked role ending its user's sessions at once.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::TestDatabase;
use crate::common::service::{Service, embedded_env, login_at, run, signup_at};

const BOSS: &str = "boss@example.com";
const DEPUTY: &str = "deputy@example.com";
const PASSWORD: &str = "correct-horse-battery";

async fn token(http: &reqwest::Client, service: &Service, email: &str) -> String {
    let login = login_at(http, &service.address, email, PASSWORD).await;
    assert_eq!(login.status(), 200);
    let body: Value = login.json().await.expect("json");
    body["access_token"].as_str().expect("a token").to_owned()
}

/// `/profile`'s status and body.
async fn profile(http: &reqwest::Client, service: &Service, token: &str) -> (u16, Value) {
    let response = http
        .get(service.url("/profile"))
        .bearer_auth(token)
        .send()
        .await
        .expect("answered");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

fn roles_claim(token: &str) -> Value {
    crate::common::claims_of(token)["roles"].clone()
}

/// Waits until `check` holds: the embedded server notices another process's append within a
/// second, PostgreSQL at once.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn first_admin_from_the_cli_against_a_running_server(env: Vec<(String, String)>) {
    let service = Service::start(&env);
    let http = reqwest::Client::new();
    for email in [BOSS, DEPUTY] {
        assert_eq!(
            signup_at(&http, &service.address, email, PASSWORD).await,
            201
        );
    }
    let before = token(&http, &service, BOSS).await;
    assert_eq!(roles_claim(&before), serde_json::json!([]));
    let (status, body) = profile(&http, &service, &before).await;
    assert_eq!(
        (status, body["roles"].clone()),
        (200, serde_json::json!([]))
    );

    let grant = ["admin", "grant-role", "--email", BOSS, "--role", "admin"];
    let (status, stdout, stderr) = run(&env, &grant);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("granted admin to boss@example.com"),
        "{stdout}"
    );
    let (status, stdout, _) = run(&env, &grant);
    assert!(status.success(), "idempotent");
    assert!(stdout.contains("already has the role admin"), "{stdout}");

    // The running server applies the CLI's append: a new token carries the role, and
    // /profile shows it; the token from before (no roles) stays valid.
    eventually("the server did not see the grant", || async {
        profile(&http, &service, &before).await.1["roles"] == serde_json::json!(["admin"])
    })
    .await;
    let admin = token(&http, &service, BOSS).await;
    assert_eq!(roles_claim(&admin), serde_json::json!(["admin"]));
    assert_eq!(profile(&http, &service, &admin).await.0, 200);

    // The last admin keeps the role; an unknown email and a bad role are refused.
    let revoke = ["admin", "revoke-role", "--email", BOSS, "--role", "admin"];
    let (status, _, stderr) = run(&env, &revoke);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("boss@example.com is the last admin"),
        "{stderr}"
    );
    let (status, _, stderr) = run(
        &env,
        &[
            "admin",
            "grant-role",
            "--email",
            "nobody@example.com",
            "--role",
            "admin",
        ],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no user has the email"), "{stderr}");
    let (status, _, _) = run(
        &env,
        &["admin", "grant-role", "--email", BOSS, "--role", "Admin"],
    );
    assert_eq!(status.code(), Some(2), "a usage error");

    // With a second admin, the first can lose the role: every session of theirs ends at once,
    // so neither token works any more, and a new one carries no role.
    let (status, _, stderr) = run(
        &env,
        &["admin", "grant-role", "--email", DEPUTY, "--role", "admin"],
    );
    assert!(status.success(), "{stderr}");
    let (status, stdout, stderr) = run(&env, &revoke);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("their sessions have ended"), "{stdout}");
    eventually("the revoked admin's token still works", || async {
        profile(&http, &service, &admin).await.0 == 401
    })
    .await;
    assert_eq!(profile(&http, &service, &before).await.0, 401);
    let after = token(&http, &service, BOSS).await;
    assert_eq!(roles_claim(&after), serde_json::json!([]));
    assert_eq!(
        profile(&http, &service, &after).await.1["roles"],
        serde_json::json!([])
    );

    // The log says who did what.
    let (_, events, _) = run(&env, &["events", "--type", "RoleGranted"]);
    assert!(
        events.contains(r#"role=admin by="authlog admin grant-role""#),
        "{events}"
    );
    assert_eq!(
        events.lines().filter(|l| l.contains("RoleGranted")).count(),
        2,
        "{events}"
    );
    let (_, ended, _) = run(&env, &["events", "--type", "SessionEnded"]);
    assert!(ended.contains("reason=role_revoked"), "{ended}");
}

#[actix_web::test]
async fn the_first_admin_from_the_cli_on_the_embedded_store() {
    let data = tempfile::tempdir().expect("temp dir");
    first_admin_from_the_cli_against_a_running_server(embedded_env(data.path())).await;
}

#[actix_web::test]
async fn the_first_admin_from_the_cli_on_postgres() {
    let db = TestDatabase::create().await;
    first_admin_from_the_cli_against_a_running_server(db.service_env()).await;
}
