//! The admin API so far (issue 17): `GET /admin/users`, `PUT`/`DELETE
//! /admin/users/{id}/roles/{role}`, and disable, enable and unlock, behind
//! `RequireRole<Admin>`.

use std::collections::BTreeSet;
use std::time::Duration;

use authlog::actors::{Administer, UserChange};
use authlog::domain::{Role, UserId};
use authlog::events::EventMetadata;
use serde_json::{Value, json};

use crate::common::{
    TestApp, TestDatabase, assert_error, spawn_app, spawn_app_with, test_settings,
};

const PASSWORD: &str = "admin-test-password";
const BOSS: &str = "boss@example.com";

/// Signs `email` up and returns their id.
async fn user(app: &TestApp, email: &str) -> UserId {
    let body = app.signed_up(email, PASSWORD).await;
    serde_json::from_value(body["id"].clone()).expect("an id")
}

/// Makes `user` an admin the way a library user would: a message to the registry.
async fn make_admin(app: &TestApp, user: UserId) {
    app.registry
        .send(Administer {
            user_id: user,
            change: UserChange::GrantRole(Role::admin()),
            metadata: EventMetadata::by("the tests"),
        })
        .await
        .expect("delivered")
        .expect("granted");
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = app.http.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("answered")
}

/// An admin (`BOSS`) with a token, and a user who is not, with one.
async fn admin_and_user(app: &TestApp) -> (UserId, String, UserId, String) {
    let boss = user(app, BOSS).await;
    make_admin(app, boss).await;
    let admin_token = app.token_for(BOSS, PASSWORD).await;
    let plain = user(app, "plain@example.com").await;
    let plain_token = app.token_for("plain@example.com", PASSWORD).await;
    (boss, admin_token, plain, plain_token)
}

#[actix_web::test]
async fn every_admin_route_is_401_without_a_valid_token_and_403_without_admin() {
    let (app, _log) = spawn_app().await;
    let (_, admin_token, plain, _) = admin_and_user(&app).await;
    // Not an admin, and not the user the routes change.
    user(&app, "outsider@example.com").await;
    let outsider = app.token_for("outsider@example.com", PASSWORD).await;
    let routes = [
        (reqwest::Method::GET, "/admin/users".to_owned(), 200),
        (reqwest::Method::GET, "/admin/users?limit=0".to_owned(), 422),
        (
            reqwest::Method::PUT,
            format!("/admin/users/{plain}/roles/support"),
            204,
        ),
        (
            reqwest::Method::DELETE,
            format!("/admin/users/{plain}/roles/support"),
            204,
        ),
        (reqwest::Method::GET, format!("/admin/users/{plain}"), 200),
        (
            reqwest::Method::GET,
            format!("/admin/users/{plain}/events"),
            200,
        ),
        (
            reqwest::Method::GET,
            format!("/admin/users/{}", UserId::new()),
            404,
        ),
        (
            reqwest::Method::POST,
            format!("/admin/users/{plain}/disable"),
            204,
        ),
        (
            reqwest::Method::POST,
            format!("/admin/users/{plain}/enable"),
            204,
        ),
        (
            reqwest::Method::POST,
            format!("/admin/users/{plain}/unlock"),
            204,
        ),
        // Authorization is decided before the rest of the request is looked at.
        (
            reqwest::Method::PUT,
            "/admin/users/not-a-uuid/roles/Not A Role".to_owned(),
            404,
        ),
    ];
    for (method, path, admins_get) in routes {
        let what = format!("{method} {path}");
        let response = call(&app, method.clone(), &path, None).await;
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().ok()),
            Some(Some("Bearer")),
            "{what}"
        );
        assert_eq!(
            assert_error(response, 401).await,
            "Not authenticated",
            "{what}"
        );
        let response = call(&app, method.clone(), &path, Some("not.a.token")).await;
        assert_eq!(
            assert_error(response, 401).await,
            "Invalid or expired token",
            "{what}"
        );
        let response = call(&app, method.clone(), &path, Some(&outsider)).await;
        assert_eq!(assert_error(response, 403).await, "Forbidden", "{what}");
        let response = call(&app, method, &path, Some(&admin_token)).await;
        assert_eq!(response.status(), admins_get, "{what}");
    }
}

#[actix_web::test]
async fn roles_over_http_are_idempotent_end_sessions_and_keep_the_last_admin() {
    let (app, _log) = spawn_app().await;
    let (boss, admin_token, plain, plain_token) = admin_and_user(&app).await;
    let put = |user: UserId, role: &str| format!("/admin/users/{user}/roles/{role}");
    for _ in 0..2 {
        let response = call(
            &app,
            reqwest::Method::PUT,
            &put(plain, "support"),
            Some(&admin_token),
        )
        .await;
        assert_eq!(response.status(), 204, "granting twice is fine");
    }
    let profile: Value = app
        .profile(Some(&format!("Bearer {plain_token}")))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        profile["roles"],
        json!(["support"]),
        "the log's roles, not the token's"
    );

    let response = call(
        &app,
        reqwest::Method::DELETE,
        &put(boss, "admin"),
        Some(&admin_token),
    )
    .await;
    assert_eq!(
        assert_error(response, 409).await,
        "The last admin cannot lose the admin role"
    );
    let response = call(
        &app,
        reqwest::Method::PUT,
        &put(UserId::new(), "support"),
        Some(&admin_token),
    )
    .await;
    assert_eq!(assert_error(response, 404).await, "User not found");
    let response = call(
        &app,
        reqwest::Method::PUT,
        &put(plain, "Support"),
        Some(&admin_token),
    )
    .await;
    let detail = assert_error(response, 422).await;
    assert!(detail.starts_with("role: "), "{detail}");

    // Revoking ends the user's sessions: their token stops working at once.
    let response = call(
        &app,
        reqwest::Method::DELETE,
        &put(plain, "support"),
        Some(&admin_token),
    )
    .await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        app.profile(Some(&format!("Bearer {plain_token}")))
            .await
            .status(),
        401
    );
    let response = call(
        &app,
        reqwest::Method::DELETE,
        &put(plain, "support"),
        Some(&admin_token),
    )
    .await;
    assert_eq!(response.status(), 204, "revoking a role they lack is fine");

    // With a second admin, the first may step down; their own token then dies with their
    // sessions.
    let response = call(
        &app,
        reqwest::Method::PUT,
        &put(plain, "admin"),
        Some(&admin_token),
    )
    .await;
    assert_eq!(response.status(), 204);
    let response = call(
        &app,
        reqwest::Method::DELETE,
        &put(boss, "admin"),
        Some(&admin_token),
    )
    .await;
    assert_eq!(response.status(), 204);
    let response = call(
        &app,
        reqwest::Method::GET,
        "/admin/users",
        Some(&admin_token),
    )
    .await;
    assert_eq!(response.status(), 401);
    let deputy = app.token_for("plain@example.com", PASSWORD).await;
    let response = call(&app, reqwest::Method::GET, "/admin/users", Some(&deputy)).await;
    assert_eq!(response.status(), 200);
}

/// Follows `next` to the end, `limit` at a time, calling `between` after each page.
async fn list_all(
    app: &TestApp,
    token: &str,
    query: &str,
    limit: usize,
    mut between: impl AsyncFnMut(usize),
) -> Vec<Value> {
    let mut users = Vec::new();
    let mut after: Option<String> = None;
    for page in 0.. {
        let mut path = format!("/admin/users?limit={limit}{query}");
        if let Some(after) = &after {
            path.push_str(&format!("&after={}", urlencode(after)));
        }
        let response = call(app, reqwest::Method::GET, &path, Some(token)).await;
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.expect("json");
        let got = body["users"].as_array().expect("users").clone();
        assert!(got.len() <= limit);
        users.extend(got);
        between(page).await;
        match body["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    users
}

fn urlencode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[actix_web::test]
async fn paging_skips_and_repeats_nobody_while_sign_ups_continue() {
    let log = crate::common::TestLog::create().await;
    let mut settings = test_settings(log.store_settings());
    // Every sign-up here comes from one address.
    settings.throttle = authlog::throttle::ThrottlePolicy::off();
    let app = spawn_app_with(settings).await;
    let (_, admin_token, _, _) = admin_and_user(&app).await;
    let mut before = BTreeSet::from([BOSS.to_owned(), "plain@example.com".to_owned()]);
    for i in 0..40 {
        let email = format!("m{i:02}@example.com");
        user(&app, &email).await;
        before.insert(email);
    }
    // Sign-ups land before and after the cursor while the listing goes on.
    let mut added = 0;
    let users = list_all(&app, &admin_token, "", 7, async |page| {
        for email in [
            format!("a{page}@example.com"),
            format!("z{page}@example.com"),
        ] {
            user(&app, &email).await;
            added += 1;
        }
    })
    .await;
    assert!(added > 10);
    let emails: Vec<String> = users
        .iter()
        .map(|user| user["email"].as_str().expect("email").to_owned())
        .collect();
    let mut sorted = emails.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(emails, sorted, "in email order, nobody twice");
    let listed: BTreeSet<String> = emails.into_iter().collect();
    assert!(before.is_subset(&listed), "nobody who was there is skipped");

    // The prefix filter, and what a listed user looks like.
    let users = list_all(&app, &admin_token, "&email_prefix=BOSS", 5, async |_| {}).await;
    assert_eq!(users.len(), 1);
    let boss = &users[0];
    assert_eq!(boss["email"], BOSS);
    assert_eq!(boss["roles"], json!(["admin"]));
    assert!(boss["created_at"].is_string());
    assert!(boss["last_login_at"].is_string(), "{boss}");
    assert_eq!(
        list_all(&app, &admin_token, "&email_prefix=m0", 100, async |_| {})
            .await
            .len(),
        10
    );
}

#[actix_web::test]
async fn a_role_revoked_on_one_instance_ends_the_sessions_on_the_other_at_once() {
    let db = TestDatabase::create().await;
    let a = spawn_app_with(test_settings(db.store_settings())).await;
    let b = spawn_app_with(test_settings(db.store_settings())).await;
    let (_, admin_token, plain, _) = admin_and_user(&a).await;
    let path = format!("/admin/users/{plain}/roles/support");
    assert_eq!(
        call(&a, reqwest::Method::PUT, &path, Some(&admin_token))
            .await
            .status(),
        204
    );
    // A token for the user from the other instance, carrying the role.
    let token = b.token_for("plain@example.com", PASSWORD).await;
    assert_eq!(
        crate::common::claims_of(&token)["roles"],
        json!(["support"])
    );
    assert_eq!(
        b.profile(Some(&format!("Bearer {token}"))).await.status(),
        200
    );
    // The admin's token works on the other instance too.
    assert_eq!(
        call(&b, reqwest::Method::GET, "/admin/users", Some(&admin_token))
            .await
            .status(),
        200
    );

    assert_eq!(
        call(&a, reqwest::Method::DELETE, &path, Some(&admin_token))
            .await
            .status(),
        204
    );
    let started = std::time::Instant::now();
    while b.profile(Some(&format!("Bearer {token}"))).await.status() != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "B still accepts the token"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_web::test]
async fn a_disabled_user_is_refused_like_a_wrong_password_until_enabled() {
    let (app, _log) = spawn_app().await;
    let (boss, admin_token, plain, plain_token) = admin_and_user(&app).await;
    let post = |user: UserId, what: &str| format!("/admin/users/{user}/{what}");
    let refresh = {
        let login: Value = app
            .login("plain@example.com", PASSWORD)
            .await
            .json()
            .await
            .expect("json");
        login["refresh_token"]
            .as_str()
            .expect("a refresh token")
            .to_owned()
    };
    for _ in 0..2 {
        let response = call(
            &app,
            reqwest::Method::POST,
            &post(plain, "disable"),
            Some(&admin_token),
        )
        .await;
        assert_eq!(response.status(), 204, "disabling twice is fine");
    }
    // Every session ended at once: the token and the refresh token are dead.
    assert_eq!(
        app.profile(Some(&format!("Bearer {plain_token}")))
            .await
            .status(),
        401
    );
    let response = app
        .post_json("/token/refresh", &json!({ "refresh_token": refresh }))
        .await;
    assert_eq!(response.status(), 401);
    // The right password gets exactly what a wrong one gets.
    let right = app.login("plain@example.com", PASSWORD).await;
    let right = assert_error(right, 401).await;
    let wrong = assert_error(
        app.login("plain@example.com", "not-the-password").await,
        401,
    )
    .await;
    assert_eq!(right, wrong);
    let listed: Value = call(
        &app,
        reqwest::Method::GET,
        "/admin/users?email_prefix=plain",
        Some(&admin_token),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(listed["users"][0]["disabled"], true);

    // The last enabled admin cannot be disabled.
    let response = call(
        &app,
        reqwest::Method::POST,
        &post(boss, "disable"),
        Some(&admin_token),
    )
    .await;
    assert_eq!(
        assert_error(response, 409).await,
        "The last admin cannot lose the admin role"
    );

    let response = call(
        &app,
        reqwest::Method::POST,
        &post(plain, "enable"),
        Some(&admin_token),
    )
    .await;
    assert_eq!(response.status(), 204);
    app.token_for("plain@example.com", PASSWORD).await;
    let response = call(
        &app,
        reqwest::Method::POST,
        &post(UserId::new(), "enable"),
        Some(&admin_token),
    )
    .await;
    assert_eq!(assert_error(response, 404).await, "User not found");
}

async fn detail(app: &TestApp, token: &str, user: UserId) -> Value {
    let path = format!("/admin/users/{user}");
    let response = call(app, reqwest::Method::GET, &path, Some(token)).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

#[actix_web::test]
async fn the_detail_page_shows_sessions_failures_and_the_lockout_that_unlock_clears() {
    let (app, _log) = spawn_app().await;
    let (_, admin_token, plain, _) = admin_and_user(&app).await;
    let before = detail(&app, &admin_token, plain).await;
    assert_eq!(before["email"], "plain@example.com");
    assert_eq!(
        before["sessions"].as_array().map(Vec::len),
        Some(1),
        "{before}"
    );
    assert_eq!(before["lockout"]["locked"], false);
    assert_eq!(before["failed_logins_last_hour"], 0);
    // Five failures lock the account from this address (docs/security.md).
    let mut status = 401;
    for _ in 0..10 {
        status = app
            .login("plain@example.com", "not-the-password")
            .await
            .status()
            .as_u16();
        if status == 429 {
            break;
        }
    }
    assert_eq!(status, 429, "locked out");
    assert_eq!(app.login("plain@example.com", PASSWORD).await.status(), 429);
    let locked = detail(&app, &admin_token, plain).await;
    assert_eq!(locked["lockout"]["locked"], true, "{locked}");
    assert_eq!(
        locked["lockout"]["addresses"][0]["client_ip"], "127.0.0.1",
        "{locked}"
    );
    assert!(
        locked["failed_logins_last_hour"].as_u64() >= Some(5),
        "{locked}"
    );
    assert!(
        locked["recent_failed_logins"][0]["failures"].as_u64() >= Some(5),
        "{locked}"
    );

    let path = format!("/admin/users/{plain}/unlock");
    let response = call(&app, reqwest::Method::POST, &path, Some(&admin_token)).await;
    assert_eq!(response.status(), 204);
    let unlocked = detail(&app, &admin_token, plain).await;
    assert_eq!(unlocked["lockout"]["locked"], false, "{unlocked}");
    assert_eq!(unlocked["recent_failed_logins"], json!([]), "{unlocked}");
    app.token_for("plain@example.com", PASSWORD).await;
    let after = detail(&app, &admin_token, plain).await;
    assert_eq!(
        after["sessions"].as_array().map(Vec::len),
        Some(2),
        "{after}"
    );
    let response = call(&app, reqwest::Method::POST, &path, Some(&admin_token)).await;
    assert_eq!(
        response.status(),
        204,
        "an unlock is always an event, even with nothing locked"
    );
}

#[actix_web::test]
async fn a_users_events_come_in_stream_order_with_hashes_redacted() {
    let (app, _log) = spawn_app().await;
    let (boss, admin_token, plain, _) = admin_and_user(&app).await;
    let path = format!("/admin/users/{plain}/roles/support");
    assert_eq!(
        call(&app, reqwest::Method::PUT, &path, Some(&admin_token))
            .await
            .status(),
        204
    );
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let path = format!("/admin/users/{plain}/events?limit=2&after={after}");
        let response = call(&app, reqwest::Method::GET, &path, Some(&admin_token)).await;
        assert_eq!(response.status(), 200, "{path}");
        let page: Value = response.json().await.expect("json");
        events.extend(page["events"].as_array().expect("events").clone());
        match page["next"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    let types: Vec<&str> = events
        .iter()
        .map(|event| event["event_type"].as_str().expect("a type"))
        .collect();
    assert_eq!(
        types,
        [
            "UserRegistered",
            "LoginSucceeded",
            "SessionStarted",
            "RoleGranted"
        ]
    );
    let versions: Vec<i64> = events
        .iter()
        .map(|event| event["stream_version"].as_i64().expect("a version"))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    assert_eq!(events[0]["payload"]["password_hash"], "<redacted>");
    assert_eq!(events[0]["payload"]["email"], "plain@example.com");
    assert_eq!(events[3]["metadata"]["actor"], format!("admin {boss}"));
    assert!(
        !serde_json::to_string(&events)
            .expect("json")
            .contains("$2b$")
    );

    let path = format!("/admin/users/{}/events", UserId::new());
    let response = call(&app, reqwest::Method::GET, &path, Some(&admin_token)).await;
    assert_eq!(assert_error(response, 404).await, "User not found");
    let path = format!("/admin/users/{plain}/events?limit=1001");
    let response = call(&app, reqwest::Method::GET, &path, Some(&admin_token)).await;
    assert_eq!(response.status(), 422);
}
