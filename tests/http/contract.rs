//! The REST contract, row by row, and the tutorial's walk-through, against the app on port 0 with
//! a real PostgreSQL database per test.

use std::time::Duration;

use crate::common::{
    TUTORIAL_EMAIL, TUTORIAL_PASSWORD, TestApp, assert_error, assert_unauthorized, jwt_secret,
    spawn_app,
};
use authlog::domain::{Email, UserId};
use authlog::jwt::{JwtKeys, TokenPolicy};
use authlog::projection::UserSummary;
use chrono::Utc;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

// ---- GET / ----

#[actix_web::test]
async fn root_says_the_api_is_running() {
    let (app, _db) = spawn_app().await;
    let response = app.get("/").await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "content-type").starts_with("application/json"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({ "message": "Auth API is running" }));
}

// ---- POST /signup ----

#[actix_web::test]
async fn signup_returns_201_with_a_uuid_and_the_normalised_email() {
    let (app, db) = spawn_app().await;
    let body = app
        .signed_up("  New.User@Example.COM ", TUTORIAL_PASSWORD)
        .await;
    let object = body.as_object().expect("object");
    assert_eq!(object.len(), 2, "only id and email: {body}");
    assert_eq!(body["email"], "new.user@example.com");
    let id = body["id"].as_str().expect("id is a string");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "id {id} is a UUID");
    // A 2xx means the event is committed: it is in the table now.
    assert_eq!(db.event_types().await, [("UserRegistered".to_owned(), 1)]);
}

#[actix_web::test]
async fn signup_of_an_existing_email_is_409_whatever_its_case_or_spacing() {
    let (app, db) = spawn_app().await;
    app.signed_up(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await;
    for variant in [
        TUTORIAL_EMAIL,
        "USER@example.com",
        "  user@EXAMPLE.com  ",
        "\tUser@Example.Com\n",
    ] {
        let response = app.signup(variant, "anotherpassword").await;
        assert_eq!(
            assert_error(response, 409).await,
            "User already exists",
            "{variant:?}"
        );
    }
    assert_eq!(db.event_types().await.len(), 1, "no second account");
}

#[actix_web::test]
async fn signup_with_missing_or_mistyped_fields_is_422_naming_the_field() {
    let (app, _db) = spawn_app().await;
    let cases = [
        (json!({ "password": TUTORIAL_PASSWORD }), "email"),
        (json!({ "email": TUTORIAL_EMAIL }), "password"),
        (
            json!({ "email": 42, "password": TUTORIAL_PASSWORD }),
            "email",
        ),
        (
            json!({ "email": TUTORIAL_EMAIL, "password": null }),
            "password",
        ),
        (
            json!({ "email": TUTORIAL_EMAIL, "password": ["x"] }),
            "password",
        ),
        (json!({}), "email"),
    ];
    for (body, field) in cases {
        let detail = assert_error(app.post_json("/signup", &body).await, 422).await;
        assert!(
            detail.contains(field),
            "{body} -> {detail:?} should name {field}"
        );
    }
    for body in [
        json!([TUTORIAL_EMAIL, TUTORIAL_PASSWORD]),
        json!(null),
        json!("text"),
    ] {
        let detail = assert_error(app.post_json("/signup", &body).await, 422).await;
        assert_eq!(detail, "the request body must be a JSON object");
    }
}

#[actix_web::test]
async fn signup_with_an_invalid_email_is_422() {
    let (app, db) = spawn_app().await;
    let long = format!("{}@example.com", "a".repeat(300));
    for email in [
        "",
        "   ",
        "plainaddress",
        "a@b@example.com",
        "user@localhost",
        "us er@example.com",
        long.as_str(),
    ] {
        let detail = assert_error(app.signup(email, TUTORIAL_PASSWORD).await, 422).await;
        assert!(detail.starts_with("email: "), "{email:?} -> {detail:?}");
    }
    assert!(db.event_types().await.is_empty());
}

#[actix_web::test]
async fn signup_password_must_be_8_to_72_bytes() {
    let (app, _db) = spawn_app().await;
    let detail = assert_error(app.signup("a@example.com", "1234567").await, 422).await;
    assert_eq!(detail, "password: must be at least 8 bytes");
    let detail = assert_error(app.signup("b@example.com", &"x".repeat(73)).await, 422).await;
    assert!(
        detail.starts_with("password: must be at most 72 bytes"),
        "{detail}"
    );
    // 25 three-byte characters: 25 characters but 75 bytes.
    let detail = assert_error(app.signup("c@example.com", &"€".repeat(25)).await, 422).await;
    assert!(
        detail.starts_with("password: must be at most 72 bytes"),
        "{detail}"
    );

    for (email, password) in [
        ("d@example.com", "x7".repeat(4)),
        ("e@example.com", "y".repeat(72)),
    ] {
        app.signed_up(email, &password).await;
        assert_eq!(app.login(email, &password).await.status(), 200);
    }
    // At 72 bytes every byte counts: a different last byte is a different password.
    let almost = format!("{}z", "y".repeat(71));
    assert_eq!(app.login("e@example.com", &almost).await.status(), 401);
}

#[actix_web::test]
async fn signup_with_malformed_json_is_400() {
    let (app, _db) = spawn_app().await;
    for body in [
        "",
        "{",
        "{\"email\": }",
        "{'email': 'a@example.com'}",
        "{\"email\":\"a@b.co\",\"password\":\"12345678\"} x",
    ] {
        let response = app
            .post_raw(
                "/signup",
                Some("application/json"),
                body.as_bytes().to_vec(),
            )
            .await;
        let detail = assert_error(response, 400).await;
        assert!(
            detail.starts_with("Malformed JSON"),
            "{body:?} -> {detail:?}"
        );
    }
    let invalid_utf8 = b"{\"email\":\"\xff@example.com\",\"password\":\"12345678\"}".to_vec();
    assert_error(
        app.post_raw("/signup", Some("application/json"), invalid_utf8)
            .await,
        400,
    )
    .await;
}

#[actix_web::test]
async fn signup_without_a_json_content_type_is_415() {
    let (app, _db) = spawn_app().await;
    let body = json!({ "email": TUTORIAL_EMAIL, "password": TUTORIAL_PASSWORD }).to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("garbage"),
    ] {
        let response = app
            .post_raw("/signup", content_type, body.clone().into_bytes())
            .await;
        assert_eq!(
            assert_error(response, 415).await,
            "Content-Type must be application/json",
            "{content_type:?}"
        );
    }
    // Parameters and +json subtypes are fine.
    let response = app
        .post_raw(
            "/signup",
            Some("application/json; charset=utf-8"),
            body.into_bytes(),
        )
        .await;
    assert_eq!(response.status(), 201);
}

#[actix_web::test]
async fn signup_above_the_body_limit_is_413() {
    let (app, _db) = spawn_app().await;
    let padding = "x".repeat(authlog::http::MAX_BODY_BYTES);
    let body = json!({ "email": TUTORIAL_EMAIL, "password": TUTORIAL_PASSWORD, "pad": padding });
    let detail = assert_error(app.post_json("/signup", &body).await, 413).await;
    assert!(detail.starts_with("Request body is too large"), "{detail}");

    // Chunked, so no Content-Length announces the size.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let chunk = "x".repeat(1024);
    let mut request = String::from(
        "POST /signup HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for _ in 0..8 {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(
        reply.contains("{\"detail\":\"Request body is too large"),
        "{reply}"
    );
}

// ---- POST /login ----

#[actix_web::test]
async fn login_returns_a_bearer_token_that_must_not_be_cached() {
    let (app, db) = spawn_app().await;
    app.signed_up(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await;
    let response = app.login(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "cache-control"), "no-store");
    let body: Value = response.json().await.expect("json");
    let keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["access_token", "expires_in", "refresh_token", "token_type"],
        "{body}"
    );
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 1800);
    let token = body["access_token"].as_str().expect("token");
    assert_eq!(token.split('.').count(), 3, "a JWT");
    assert!(
        crate::common::claims_of(token)["sid"].is_string(),
        "the token names its session"
    );
    let refresh = body["refresh_token"].as_str().expect("refresh token");
    assert!(refresh.len() >= 43, "at least 256 bits: {refresh}");
    // The login and its session are in the log before the tokens are handed out.
    assert_eq!(
        db.event_types().await,
        [
            ("UserRegistered".to_owned(), 1),
            ("LoginSucceeded".to_owned(), 2),
            ("SessionStarted".to_owned(), 3)
        ]
    );
}

#[actix_web::test]
async fn login_accepts_any_casing_of_the_email() {
    let (app, _db) = spawn_app().await;
    app.signed_up(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await;
    for email in ["USER@EXAMPLE.COM", " User@Example.com "] {
        assert_eq!(
            app.login(email, TUTORIAL_PASSWORD).await.status(),
            200,
            "{email:?}"
        );
    }
}

#[actix_web::test]
async fn login_failure_is_identical_for_unknown_email_and_wrong_password() {
    let (app, db) = spawn_app().await;
    app.signed_up(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await;
    let attempts = [
        (TUTORIAL_EMAIL, "wrongpassword"),
        ("nobody@example.com", TUTORIAL_PASSWORD),
        ("not-an-email", TUTORIAL_PASSWORD),
        (TUTORIAL_EMAIL, ""),
        (TUTORIAL_EMAIL, "mypassword123 "),
    ];
    let mut replies = Vec::new();
    for (email, password) in attempts {
        let response = app.login(email, password).await;
        let headers: Vec<_> = ["www-authenticate", "content-type", "cache-control"]
            .iter()
            .map(|name| header(&response, name))
            .collect();
        let status = response.status().as_u16();
        let body = response.text().await.expect("body");
        replies.push((status, headers, body));
    }
    assert_eq!(replies[0].0, 401);
    assert_eq!(replies[0].2, r#"{"detail":"Invalid credentials"}"#);
    assert_eq!(replies[0].1[0], "Bearer");
    for reply in &replies[1..] {
        assert_eq!(reply, &replies[0]);
    }
    // Wrong passwords for a real account are events on its stream (three here: the wrong one,
    // the empty one, the one with a trailing space); unknown or impossible emails leave none.
    let failures = db
        .event_types()
        .await
        .iter()
        .filter(|(event_type, _)| event_type == "LoginFailed")
        .count();
    assert_eq!(failures, 3);
}

#[actix_web::test]
async fn login_rejects_bad_bodies_like_signup() {
    let (app, _db) = spawn_app().await;
    let detail = assert_error(
        app.post_json("/login", &json!({ "email": TUTORIAL_EMAIL }))
            .await,
        422,
    )
    .await;
    assert!(detail.contains("password"), "{detail}");
    assert_error(
        app.post_raw("/login", Some("application/json"), b"{".to_vec())
            .await,
        400,
    )
    .await;
    let detail = assert_error(
        app.post_raw("/login", Some("text/plain"), b"{}".to_vec())
            .await,
        415,
    )
    .await;
    assert_eq!(
        detail,
        "Content-Type must be application/json or application/x-www-form-urlencoded"
    );
    let huge = json!({ "email": "x".repeat(8 * 1024), "password": "y" });
    assert_error(app.post_json("/login", &huge).await, 413).await;
}

// ---- POST /login as an OAuth2 password grant form (Swagger UI's Authorize button) ----

async fn login_form(app: &TestApp, fields: &[(&str, &str)]) -> reqwest::Response {
    let body = serde_urlencoded::to_string(fields).expect("encodable");
    app.post_raw(
        "/login",
        Some("application/x-www-form-urlencoded"),
        body.into_bytes(),
    )
    .await
}

#[actix_web::test]
async fn login_form_gives_the_same_token_body_as_json() {
    let (app, db) = spawn_app().await;
    let password = "p@ss w&rd=1+2 ✓";
    app.signed_up(TUTORIAL_EMAIL, password).await;
    // As Swagger UI sends it, with grant_type and the empty extras; and the bare minimum.
    for fields in [
        &[
            ("grant_type", "password"),
            ("username", TUTORIAL_EMAIL),
            ("password", password),
            ("scope", ""),
            ("client_id", ""),
        ][..],
        &[("username", " User@Example.com "), ("password", password)][..],
    ] {
        let response = login_form(&app, fields).await;
        assert_eq!(response.status(), 200, "{fields:?}");
        assert_eq!(header(&response, "cache-control"), "no-store");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body.as_object().expect("object").len(), 4, "{body}");
        assert_eq!(body["token_type"], "bearer");
        let token = body["access_token"].as_str().expect("token");
        let bearer = format!("Bearer {token}");
        assert_eq!(app.profile(Some(&bearer)).await.status(), 200);
    }
    let logins = db
        .event_types()
        .await
        .iter()
        .filter(|(event_type, _)| event_type == "LoginSucceeded")
        .count();
    assert_eq!(logins, 2, "each form login is an event like a JSON one");
}

#[actix_web::test]
async fn login_form_failures_match_json_failures() {
    let (app, _db) = spawn_app().await;
    app.signed_up(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await;
    let json_reply = app.login(TUTORIAL_EMAIL, "wrongpassword").await;
    let json_challenge = header(&json_reply, "www-authenticate");
    let json_body = json_reply.text().await.expect("body");
    for fields in [
        &[("username", TUTORIAL_EMAIL), ("password", "wrongpassword")][..],
        &[
            ("username", "nobody@example.com"),
            ("password", TUTORIAL_PASSWORD),
        ][..],
        &[
            ("username", "not-an-email"),
            ("password", TUTORIAL_PASSWORD),
        ][..],
    ] {
        let response = login_form(&app, fields).await;
        assert_eq!(response.status(), 401, "{fields:?}");
        assert_eq!(header(&response, "www-authenticate"), json_challenge);
        assert_eq!(response.text().await.expect("body"), json_body);
    }

    let detail = assert_error(
        login_form(&app, &[("password", TUTORIAL_PASSWORD)]).await,
        422,
    )
    .await;
    assert_eq!(detail, "missing field `username`");
    let detail = assert_error(
        login_form(
            &app,
            &[
                ("username", TUTORIAL_EMAIL),
                ("password", TUTORIAL_PASSWORD),
                ("password", "other"),
            ],
        )
        .await,
        422,
    )
    .await;
    assert_eq!(detail, "duplicate field `password`");
    // RFC 6749 §5.2: unsupported_grant_type is a 400, even with good credentials.
    let detail = assert_error(
        login_form(
            &app,
            &[
                ("grant_type", "client_credentials"),
                ("username", TUTORIAL_EMAIL),
                ("password", TUTORIAL_PASSWORD),
            ],
        )
        .await,
        400,
    )
    .await;
    assert_eq!(
        detail,
        r#"unsupported grant_type: only "password" is supported"#
    );
    let huge = format!("username=a&password={}", "x".repeat(8 * 1024));
    assert_error(
        app.post_raw(
            "/login",
            Some("application/x-www-form-urlencoded"),
            huge.into_bytes(),
        )
        .await,
        413,
    )
    .await;
    // Sign-up stays JSON only.
    let detail = assert_error(
        app.post_raw(
            "/signup",
            Some("application/x-www-form-urlencoded"),
            b"email=a%40b.co&password=mypassword123".to_vec(),
        )
        .await,
        415,
    )
    .await;
    assert_eq!(detail, "Content-Type must be application/json");
}

// ---- GET /profile ----

#[actix_web::test]
async fn profile_with_a_valid_token_grants_access() {
    let (app, _db) = spawn_app().await;
    let user = app.signed_up(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await;
    let token = app.token_for(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let response = app.profile(Some(&format!("{scheme} {token}"))).await;
        assert_eq!(response.status(), 200, "scheme {scheme}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(
            body,
            json!({
                "message": "Access granted",
                "user_id": user["id"],
                "email": TUTORIAL_EMAIL,
                "roles": [],
            })
        );
    }
}

#[actix_web::test]
async fn profile_without_a_token_is_not_authenticated() {
    let (app, _db) = spawn_app().await;
    app.signed_up(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await;
    let token = app.token_for(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await;

    assert_unauthorized(app.profile(None).await, "Not authenticated").await;
    for value in [
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        &format!("Token {token}"),
    ] {
        assert_unauthorized(app.profile(Some(value)).await, "Not authenticated").await;
    }
    // A token anywhere but the Authorization header is never read.
    for query in ["access_token", "token", "jwt"] {
        let url = app.url(&format!("/profile?{query}={token}"));
        let response = app.http.get(url).send().await.expect("sent");
        assert_unauthorized(response, "Not authenticated").await;
    }
    let response = app
        .http
        .get(app.url("/profile"))
        .header("Cookie", format!("access_token={token}"))
        .send()
        .await
        .expect("sent");
    assert_unauthorized(response, "Not authenticated").await;
}

#[actix_web::test]
async fn profile_with_a_bad_token_is_invalid_or_expired() {
    let (app, _db) = spawn_app().await;
    let user = app.signed_up(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await;
    let token = app.token_for(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await;
    let user_id: UserId = serde_json::from_value(user["id"].clone()).expect("uuid");
    let email = Email::parse(TUTORIAL_EMAIL).expect("valid");
    let ttl = Duration::from_secs(30 * 60);
    // The app's own signing key, so that only the property under test is wrong.
    let (kid, key) = app.signing_key();
    let keys = JwtKeys::empty(TokenPolicy::new(ttl)).signing_ed25519(kid.clone(), key);
    let summary = UserSummary {
        user_id,
        email: email.clone(),
        roles: Box::default(),
    };
    // The real session, so that only the property under test is wrong.
    let sid = crate::common::claims_of(&token)["sid"].clone();
    let sid: authlog::domain::SessionId = serde_json::from_value(sid).expect("a session id");
    let far = Utc::now() + chrono::Duration::days(1);

    let expired = keys
        .issue(
            &summary,
            sid,
            far,
            Utc::now() - chrono::Duration::minutes(31),
        )
        .expect("sign");
    let not_yet = keys
        .issue(
            &summary,
            sid,
            far,
            Utc::now() + chrono::Duration::minutes(5),
        )
        .expect("sign");
    let stranger = keys
        .issue(
            &UserSummary {
                user_id: UserId::new(),
                email,
                roles: Box::default(),
            },
            sid,
            far,
            Utc::now(),
        )
        .expect("sign");
    let other_session = keys
        .issue(&summary, authlog::domain::SessionId::new(), far, Utc::now())
        .expect("sign");
    // Another key under the app's key id; and an HS256 secret, which this app does not have.
    let other_key = JwtKeys::empty(TokenPolicy::new(ttl))
        .signing_ed25519(kid, ed25519_dalek::SigningKey::from_bytes(&[7; 32]))
        .issue(&summary, sid, far, Utc::now())
        .expect("sign");
    let hs256 = JwtKeys::new(&jwt_secret(), ttl)
        .issue(&summary, sid, far, Utc::now())
        .expect("sign");
    let mut flipped = token.clone().into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");
    let segments: Vec<&str> = token.split('.').collect();

    let bad_tokens = [
        "garbage".to_owned(),
        expired.as_str().to_owned(),
        not_yet.as_str().to_owned(),
        stranger.as_str().to_owned(),
        other_session.as_str().to_owned(),
        other_key.as_str().to_owned(),
        hs256.as_str().to_owned(),
        flipped,
        format!("{}.{}", segments[0], segments[1]),
        format!("{token}.extra"),
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", segments[1]),
    ];
    for bad in &bad_tokens {
        let response = app.profile(Some(&format!("Bearer {bad}"))).await;
        assert_unauthorized(response, "Invalid or expired token").await;
    }
    // Stray words after the token are not a token.
    let response = app.profile(Some(&format!("Bearer {token} extra"))).await;
    assert_unauthorized(response, "Invalid or expired token").await;
    // The real token still works: nothing above was a false negative.
    assert_eq!(
        app.profile(Some(&format!("Bearer {token}"))).await.status(),
        200
    );
}

// ---- 404 and 405 ----

#[actix_web::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let (app, _db) = spawn_app().await;
    let response = app.get("/nope").await;
    assert_eq!(assert_error(response, 404).await, "Not Found");
    let response = app
        .http
        .post(app.url("/nope/deeper"))
        .send()
        .await
        .expect("sent");
    assert_eq!(assert_error(response, 404).await, "Not Found");

    for (method, path, allow) in [
        (reqwest::Method::GET, "/signup", "POST"),
        (reqwest::Method::PUT, "/login", "POST"),
        (reqwest::Method::POST, "/profile", "GET"),
        (reqwest::Method::DELETE, "/", "GET"),
        (reqwest::Method::POST, "/docs", "GET"),
    ] {
        let response = app
            .http
            .request(method.clone(), app.url(path))
            .send()
            .await
            .expect("sent");
        assert_eq!(header(&response, "allow"), allow, "{method} {path}");
        assert_eq!(assert_error(response, 405).await, "Method Not Allowed");
    }
}

#[actix_web::test]
async fn responses_are_not_cached_or_sniffed() {
    let (app, _db) = spawn_app().await;
    for response in [
        app.get("/").await,
        app.signup(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await,
        app.profile(None).await,
    ] {
        assert_eq!(header(&response, "cache-control"), "no-store");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    }
}

// ---- The tutorial, "Testing the Authentication System" ----

#[actix_web::test]
async fn the_tutorial_walk_through_works() {
    let (app, _db) = spawn_app().await;

    // Step 2: sign up.
    let user = app.signed_up(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await;
    assert_eq!(user["email"], TUTORIAL_EMAIL);

    // Step 3: log in and receive a JWT.
    let response = app.login(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["token_type"], "bearer");
    let token = body["access_token"].as_str().expect("token");
    assert!(token.starts_with("eyJ"));

    // Step 4: the protected route with the token.
    let response = app.profile(Some(&format!("Bearer {token}"))).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["message"], "Access granted");
    assert_eq!(body["user_id"], user["id"]);
    assert_eq!(body["email"], TUTORIAL_EMAIL);

    // Step 5: without the token.
    let response = app.profile(None).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"detail":"Not authenticated"}"#
    );
}
