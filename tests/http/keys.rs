//! Token signing keys: the JWKS and discovery documents, tokens checked by the `jsonwebtoken`
//! crate's JWK-set support (code nobody here wrote), rotation on schedule and on demand, its
//! lead and linger, retirement, several instances agreeing on one key, the `authlog keys`
//! commands against running servers on both stores, a wrong master key, switching from HS256,
//! and no private key material anywhere it could leak.

use std::time::{Duration, Instant};

use authlog::actors::{ChangeSigningKeys, KeyChange};
use authlog::clock::{Clock, ManualClock};
use authlog::config::{JwtSecretSource, Settings, StoreSettings};
use authlog::domain::{KeyAlgorithm, KeyId};
use authlog::events::EventMetadata;
use authlog::keyring::KeyState;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::common::service::{Service, embedded_env, run};
use crate::common::{
    TEST_MASTER_KEY, TestApp, TestDatabase, TestLog, assert_unauthorized, claims_of, jwt_secret,
    spawn_app, spawn_app_with, test_settings,
};

const EMAIL: &str = "keys@example.com";
const PASSWORD: &str = "keys-password-1";

/// The `kid` in a token's header.
fn kid_of(token: &str) -> String {
    let header = token.split('.').next().expect("a header");
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url")).expect("json");
    header["kid"].as_str().expect("a kid").to_owned()
}

async fn jwks(app: &TestApp) -> Value {
    let response = app.get("/.well-known/jwks.json").await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|key| key["kid"].as_str().expect("kid").to_owned())
        .collect()
}

/// Checks `token` as another service would, with the `jsonwebtoken` crate: the JWK set fetched
/// from the app, the key the token's kid names, EdDSA only, `iss` and `aud` required.
/// The JWKS of a running `authlog` binary.
async fn service_jwks(http: &reqwest::Client, service: &Service) -> Value {
    http.get(service.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json")
}

async fn verified_elsewhere(app: &TestApp, token: &str) -> Result<Value, String> {
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let set: JwkSet = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = set.find(&kid).ok_or(format!("no key {kid} in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["authlog"]);
    validation.set_audience(&["authlog"]);
    validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| e.to_string())
}

async fn profile(app: &TestApp, token: &str) -> u16 {
    app.profile(Some(&format!("Bearer {token}")))
        .await
        .status()
        .as_u16()
}

/// Settings whose clock a test moves, with this lead time and no scheduled rotation.
fn keyed(store: StoreSettings, lead: Duration) -> (Settings, ManualClock) {
    let (clock, handle) = Clock::settable();
    let mut settings = test_settings(store);
    settings.clock = clock;
    settings.jwks_max_age = lead;
    settings.key_rotation = None;
    (settings, handle)
}

/// Adds a key as `authlog keys rotate` does, through the app's registry.
async fn rotate(app: &TestApp, now: bool) -> KeyId {
    let set = app.keychain.key_set();
    let key = app.keychain.vault().make().expect("a key");
    let key_id = key.key_id.clone();
    app.registry
        .send(ChangeSigningKeys {
            change: KeyChange::Add {
                key,
                activate: now,
                after: set.newest().map(|key| key.key_id.clone()),
            },
            metadata: EventMetadata::by("test"),
        })
        .await
        .expect("the registry answers")
        .expect("the key is added");
    key_id
}

/// Polls `condition` every 20 ms for at most `within`.
async fn eventually<F: std::future::Future<Output = bool>>(
    within: Duration,
    what: &str,
    mut condition: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn the_jwks_and_the_discovery_document_say_what_verifiers_need() {
    let (app, _log) = spawn_app().await;
    let response = app.get("/.well-known/jwks.json").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["cache-control"],
        "public, max-age=3600",
        "cached for the lead time"
    );
    let jwks: Value = response.json().await.expect("json");
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "{jwks}");
    let key = &keys[0];
    assert_eq!(
        (&key["kty"], &key["crv"], &key["use"], &key["alg"]),
        (
            &json!("OKP"),
            &json!("Ed25519"),
            &json!("sig"),
            &json!("EdDSA")
        )
    );
    let x: [u8; 32] = URL_SAFE_NO_PAD
        .decode(key["x"].as_str().expect("x"))
        .expect("base64url")
        .try_into()
        .expect("32 bytes");
    assert_eq!(
        key["kid"].as_str(),
        Some(KeyId::thumbprint_ed25519(&x).as_str()),
        "the kid is the key's RFC 7638 thumbprint"
    );
    assert_eq!(
        key.as_object().map(|k| k.len()),
        Some(6),
        "no private part: {key}"
    );

    let response = app.get("/.well-known/openid-configuration").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "public, max-age=3600");
    let discovery: Value = response.json().await.expect("json");
    assert_eq!(
        discovery,
        json!({
            "issuer": "authlog",
            "jwks_uri": app.url("/.well-known/jwks.json"),
            "token_endpoint": app.url("/login"),
            "grant_types_supported": ["password", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["none"],
            "access_token_signing_alg_values_supported": ["EdDSA"],
        })
    );
    // What an OpenID provider would add, and authlog does not do, is not claimed.
    for absent in [
        "authorization_endpoint",
        "userinfo_endpoint",
        "id_token_signing_alg_values_supported",
        "response_types_supported",
        "subject_types_supported",
    ] {
        assert!(discovery.get(absent).is_none(), "{absent}");
    }
    let response = app.get("/health/ready").await;
    assert_eq!(response.status(), 200, "ready once a key signs");
}

#[actix_web::test]
async fn the_discovery_document_names_the_configured_public_url_and_issuer() {
    let log = TestLog::create().await;
    let mut settings = test_settings(log.store_settings());
    settings.public_url = Some("https://auth.example.com".to_owned());
    settings.token_issuer = "https://auth.example.com".to_owned();
    settings.jwks_max_age = Duration::from_secs(600);
    let app = spawn_app_with(settings).await;
    let response = app.get("/.well-known/openid-configuration").await;
    assert_eq!(response.headers()["cache-control"], "public, max-age=600");
    let discovery: Value = response.json().await.expect("json");
    assert_eq!(discovery["issuer"], "https://auth.example.com");
    assert_eq!(
        discovery["jwks_uri"],
        "https://auth.example.com/.well-known/jwks.json"
    );
    assert_eq!(
        discovery["token_endpoint"],
        "https://auth.example.com/login"
    );
}

#[actix_web::test]
async fn tokens_verify_with_the_jsonwebtoken_crates_jwk_set_support() {
    let (app, _log) = spawn_app().await;
    let user = app.signed_up(EMAIL, PASSWORD).await;
    let token = app.token_for(EMAIL, PASSWORD).await;
    let claims = verified_elsewhere(&app, &token).await.expect("verifies");
    assert_eq!(claims["sub"], user["id"]);
    assert_eq!(claims["email"], EMAIL);
    assert_eq!(claims["sid"], claims_of(&token)["sid"]);
    // The same library refuses a token that was changed after signing.
    let mut changed = token.clone().into_bytes();
    let at = token.find('.').expect("dot") + 5;
    changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(changed).expect("ascii");
    assert!(verified_elsewhere(&app, &changed).await.is_err());
}

/// The rotation the issue describes, step by step, with a two-second lead: the new key is in
/// the JWKS before it signs; once it signs, tokens carry its kid and the old key's tokens still
/// verify, here and elsewhere; once the old key's tokens have expired it is retired by the
/// schedule, and gone from the JWKS.
#[actix_web::test]
async fn a_rotation_publishes_ahead_switches_then_retires_the_old_key() {
    let log = TestLog::create().await;
    let lead = Duration::from_secs(2);
    let (settings, clock) = keyed(log.store_settings(), lead);
    let linger = settings.token_ttl + Duration::from_secs(30 + 60);
    let app = spawn_app_with(settings).await;
    app.signed_up(EMAIL, PASSWORD).await;
    let old_token = app.token_for(EMAIL, PASSWORD).await;
    let old = kid_of(&old_token);

    let new = rotate(&app, false).await;
    let added = Instant::now();
    assert_eq!(kids(&jwks(&app).await), [old.clone(), new.to_string()]);
    let token = app.token_for(EMAIL, PASSWORD).await;
    assert_eq!(kid_of(&token), old, "published, not signing yet");
    assert!(added.elapsed() < lead, "checked within the lead");

    let deadline = Instant::now() + Duration::from_secs(10);
    let new_token = loop {
        let token = app.token_for(EMAIL, PASSWORD).await;
        if kid_of(&token) != old {
            break token;
        }
        assert!(
            Instant::now() < deadline,
            "the new key did not start signing"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(kid_of(&new_token), new.as_str());
    let set = app.keychain.key_set();
    let record = set.find(&new).expect("the new key");
    let published_for = record.activated_at.expect("active") - record.added_at;
    assert!(
        published_for.to_std().expect("forward") >= lead,
        "published {published_for} before it signed, the lead is {lead:?}"
    );
    for token in [&old_token, &new_token] {
        assert_eq!(profile(&app, token).await, 200);
        verified_elsewhere(&app, token).await.expect("verifies");
    }
    assert_eq!(
        set.find(&KeyId::parse(&old).expect("kid"))
            .map(|key| key.state()),
        Some(KeyState::Retiring)
    );

    // The last token the old key could have signed expires `linger` after the switch (token
    // lifetime, leeway, margin): then the schedule retires it.
    clock.advance(linger - Duration::from_secs(60));
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        kids(&jwks(&app).await).len(),
        2,
        "not before its tokens expire"
    );
    clock.advance(Duration::from_secs(61));
    eventually(Duration::from_secs(5), "the old key is retired", || async {
        kids(&jwks(&app).await) == [new.to_string()]
    })
    .await;
    let error = verified_elsewhere(&app, &old_token)
        .await
        .expect_err("gone");
    assert!(error.contains("no key"), "{error}");
    // The clock has moved past every token issued so far; a fresh one works.
    let fresh = app.token_for(EMAIL, PASSWORD).await;
    assert_eq!(kid_of(&fresh), new.as_str());
    assert_eq!(profile(&app, &fresh).await, 200);
}

#[actix_web::test]
async fn the_schedule_rotates_a_key_once_its_period_is_over() {
    let log = TestLog::create().await;
    let (mut settings, clock) = keyed(log.store_settings(), Duration::from_secs(3600));
    settings.key_rotation = Some(Duration::from_secs(30 * 86_400));
    let app = spawn_app_with(settings).await;
    let first = app
        .keychain
        .key_set()
        .active()
        .expect("a key")
        .key_id
        .clone();
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.keychain.key_set().keys().len(), 1, "nothing due yet");
    // Past the period less the lead: the next key is published; past the lead too: it signs.
    clock.advance(Duration::from_secs(30 * 86_400));
    eventually(Duration::from_secs(10), "the next key signs", || async {
        app.keychain
            .key_set()
            .active()
            .is_some_and(|key| key.key_id != first)
    })
    .await;
    app.signed_up(EMAIL, PASSWORD).await;
    let token = app.token_for(EMAIL, PASSWORD).await;
    assert_ne!(kid_of(&token), first.as_str());
    verified_elsewhere(&app, &token).await.expect("verifies");
}

/// A key retired at once (as for a leak) takes every token it signed with it, however long
/// they had left, here and in the JWKS; the active key cannot be retired.
#[actix_web::test]
async fn a_token_signed_by_a_retired_key_is_refused() {
    let (app, _log) = spawn_app().await;
    app.signed_up(EMAIL, PASSWORD).await;
    let old_token = app.token_for(EMAIL, PASSWORD).await;
    let old = KeyId::parse(&kid_of(&old_token)).expect("kid");
    let (_, old_private) = app.signing_key();
    let retire = |key_id: KeyId| {
        app.registry.send(ChangeSigningKeys {
            change: KeyChange::Retire(key_id),
            metadata: EventMetadata::by("test"),
        })
    };
    let refused = retire(old.clone()).await.expect("answers");
    assert!(
        matches!(refused, Err(authlog::actors::RegistryError::KeysChanged)),
        "the active key is not retired: {refused:?}"
    );
    rotate(&app, true).await;
    assert_eq!(
        profile(&app, &old_token).await,
        200,
        "retiring, still valid"
    );
    retire(old.clone())
        .await
        .expect("answers")
        .expect("retired");
    assert_unauthorized(
        app.profile(Some(&format!("Bearer {old_token}"))).await,
        "Invalid or expired token",
    )
    .await;
    assert!(!kids(&jwks(&app).await).contains(&old.to_string()));
    // Forged with the retired key's private half, valid for a day: still refused.
    let claims = claims_of(&old_token);
    let mut long = claims.clone();
    long["exp"] = json!(chrono::Utc::now().timestamp() + 86_400);
    let header = URL_SAFE_NO_PAD
        .encode(json!({"alg": "EdDSA", "typ": "JWT", "kid": old.as_str()}).to_string());
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(long.to_string()));
    use ed25519_dalek::Signer as _;
    let forged = format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(old_private.sign(input.as_bytes()).to_bytes())
    );
    assert_eq!(profile(&app, &forged).await, 401);
    let fresh = app.token_for(EMAIL, PASSWORD).await;
    assert_eq!(profile(&app, &fresh).await, 200);
}

/// Two instances starting on a new database make one key between them, and two taking the same
/// rotation step at the same moment append it once.
#[actix_web::test]
async fn two_instances_never_both_make_a_key_for_one_rotation() {
    let db = TestDatabase::create().await;
    let (one, clock) = keyed(db.store_settings(), Duration::from_secs(3600));
    let mut two = test_settings(db.store_settings());
    two.clock = one.clock.clone();
    two.key_rotation = None;
    let (a, b) = futures_util::future::join(spawn_app_with(one), spawn_app_with(two)).await;
    assert_eq!(
        db.key_event_types().await,
        [
            ("SigningKeyAdded".to_owned(), 1),
            ("SigningKeyActivated".to_owned(), 2)
        ],
        "one first key"
    );
    let first = a.keychain.key_set().active().expect("a key").key_id.clone();
    eventually(Duration::from_secs(5), "both sign with it", || async {
        b.keychain.key_set().active().map(|key| &key.key_id) == Some(&first)
    })
    .await;

    // Both see the same retirement come due at once, and race it (the timers race too).
    let second = rotate(&a, true).await;
    clock.advance(Duration::from_secs(3 * 3600));
    let racers = (0..6).map(|i| {
        let rotator = if i % 2 == 0 { &a.rotator } else { &b.rotator };
        rotator.send(authlog::actors::RotateKeys)
    });
    futures_util::future::join_all(racers).await;
    eventually(
        Duration::from_secs(5),
        "the first key is retired",
        || async { db.key_event_types().await.len() == 5 },
    )
    .await;
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        db.key_event_types()
            .await
            .into_iter()
            .map(|(t, _)| t)
            .collect::<Vec<_>>(),
        [
            "SigningKeyAdded",
            "SigningKeyActivated",
            "SigningKeyAdded",
            "SigningKeyActivated",
            "SigningKeyRetired"
        ],
        "each step once"
    );
    for app in [&a, &b] {
        assert_eq!(
            app.keychain.key_set().active().map(|key| &key.key_id),
            Some(&second)
        );
    }
}

/// A key one instance starts signing with is accepted by the other at once, even before it has
/// applied the key's events (the unknown kid makes it catch up), and both publish it.
#[actix_web::test]
async fn a_key_added_on_one_instance_verifies_on_the_other_at_once() {
    let db = TestDatabase::create().await;
    let a = spawn_app_with(test_settings(db.store_settings())).await;
    let b = spawn_app_with(test_settings(db.store_settings())).await;
    a.signed_up(EMAIL, PASSWORD).await;
    let new = rotate(&a, true).await;
    let token = a.token_for(EMAIL, PASSWORD).await;
    assert_eq!(kid_of(&token), new.as_str());
    assert_eq!(profile(&b, &token).await, 200);
    assert!(kids(&jwks(&b).await).contains(&new.to_string()));
    verified_elsewhere(&b, &token).await.expect("verifies");
}

/// `AUTHLOG_TOKEN_ALGORITHM=HS256` signs with the secret (its kid in the header, nothing
/// published); switching to EdDSA keeps those tokens valid while the secret is configured, and
/// only then; tokens from before key ids (no kid) likewise.
#[actix_web::test]
async fn switching_from_hs256_keeps_its_tokens_while_their_secret_is_configured() {
    let log = TestLog::create().await;
    let hs256 = || {
        let mut settings = test_settings(log.store_settings());
        settings.token_algorithm = KeyAlgorithm::HS256;
        settings.jwt_secret = JwtSecretSource::Given(jwt_secret());
        settings
    };
    let app = spawn_app_with(hs256()).await;
    app.signed_up(EMAIL, PASSWORD).await;
    let hs_token = app.token_for(EMAIL, PASSWORD).await;
    assert_eq!(kid_of(&hs_token), jwt_secret().key_id().as_str());
    assert_eq!(profile(&app, &hs_token).await, 200);
    let discovery: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        discovery["access_token_signing_alg_values_supported"],
        json!(["HS256"])
    );
    // The HS256 secret is never published; the log's Ed25519 key, made before, still is.
    assert!(!kids(&jwks(&app).await).contains(&kid_of(&hs_token)));
    // A token from before kids: the same claims, HS256, no kid.
    let kidless = {
        use hmac::Mac as _;
        let payload = hs_token.split('.').nth(1).expect("payload");
        let input = format!(
            "{}.{payload}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#)
        );
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(crate::common::TEST_SECRET.as_bytes())
                .expect("any length");
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    };
    assert_eq!(profile(&app, &kidless).await, 200);

    // EdDSA, the secret still configured: both kinds of HS256 token still work.
    let mut eddsa = hs256();
    eddsa.token_algorithm = KeyAlgorithm::EdDSA;
    let app = spawn_app_with(eddsa).await;
    let ed_token = app.token_for(EMAIL, PASSWORD).await;
    assert_ne!(kid_of(&ed_token), kid_of(&hs_token));
    for token in [&hs_token, &kidless, &ed_token] {
        assert_eq!(profile(&app, token).await, 200);
    }
    // Without it: refused.
    let app = spawn_app_with(test_settings(log.store_settings())).await;
    for token in [&hs_token, &kidless] {
        assert_eq!(profile(&app, token).await, 401);
    }
    assert_eq!(profile(&app, &ed_token).await, 200);
}

#[actix_web::test]
async fn a_wrong_master_key_stops_start_up_with_a_clear_message() {
    let log = TestLog::create().await;
    let app = spawn_app_with(test_settings(log.store_settings())).await;
    app.signed_up(EMAIL, PASSWORD).await;
    let mut settings = test_settings(log.store_settings());
    settings.master_key = authlog::config::MasterKeySource::Given(
        authlog::vault::MasterKey::parse(&secrecy::SecretString::from(
            "another-master-key-that-is-long-enough-0123456789",
        ))
        .expect("long enough"),
    );
    settings.bind = "127.0.0.1:0".to_owned();
    let error = match authlog::startup::Application::build(settings).await {
        Ok(_) => panic!("started with a master key that opens none of the log's keys"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains("AUTHLOG_MASTER_KEY does not open any of the 1 signing keys"),
        "{error}"
    );
}

/// The real binary: a master key that is not the log's stops it at start-up, exit 1, with the
/// message on both stores (on the embedded one, a replaced key file).
#[actix_web::test]
async fn the_binary_refuses_a_master_key_that_is_not_the_logs() {
    let data = tempfile::tempdir().expect("temp dir");
    let env = embedded_env(data.path());
    Service::start(&env).terminate(Duration::from_secs(30));
    std::fs::write(
        data.path().join("master-key"),
        "a-master-key-that-is-not-this-logs-0123456789abcdef\n",
    )
    .expect("replace the key file");
    let (status, _, stderr) = run(&env, &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("AUTHLOG_MASTER_KEY does not open"),
        "{stderr}"
    );
    // A lost master key cannot be recovered from: the log is signed with a key derived from
    // it, and nothing a new key signs can vouch for what came before (docs/auditing.md).
    for args in [
        &["keys", "rotate"][..],
        &["keys", "rotate", "--now", "--force"],
    ] {
        let (status, _, stderr) = run(&env, args);
        assert_eq!(status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("start a new log"), "{stderr}");
    }
    let (status, _, stderr) = run(&env, &["keys", "rotate", "--force"]);
    assert_eq!(status.code(), Some(2), "--force needs --now: {stderr}");

    let db = TestDatabase::create().await;
    Service::start(&db.service_env()).terminate(Duration::from_secs(30));
    let mut env = db.service_env();
    env.retain(|(name, _)| name != "AUTHLOG_MASTER_KEY");
    let (status, _, stderr) = run(&env, &[]);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("AUTHLOG_MASTER_KEY is not set"), "{stderr}");
    env.push((
        "AUTHLOG_MASTER_KEY".to_owned(),
        format!("{TEST_MASTER_KEY}-but-another"),
    ));
    let (status, _, stderr) = run(&env, &[]);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("AUTHLOG_MASTER_KEY does not open"),
        "{stderr}"
    );
}

/// `authlog keys` against a running server, on both stores: `rotate` publishes at once (the
/// embedded server notices another process's append within a second), `rotate --now` signs
/// at once, `retire` withdraws, the active key and unknown ids are refused (exit 1), and `list`
/// says it all.
async fn keys_commands_against_a_running_server(env: Vec<(String, String)>) {
    let service = Service::start(&env);
    let http = reqwest::Client::new();
    let kids = || async { kids(&service_jwks(&http, &service).await) };
    let first = kids().await;
    assert_eq!(first.len(), 1);

    let (status, stdout, stderr) = run(&env, &["keys", "rotate"]);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("added signing key"), "{stdout}");
    let deadline = Instant::now() + Duration::from_secs(3);
    while kids().await.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the server did not see the new key"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, stdout, stderr) = run(&env, &["keys", "rotate", "--now"]);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("activated it"), "{stdout}");

    let (status, listed, _) = run(&env, &["keys", "list", "--format", "jsonl"]);
    assert!(status.success());
    let keys: Vec<Value> = listed
        .lines()
        .map(|line| serde_json::from_str(line).expect("json"))
        .collect();
    let states: Vec<&str> = keys
        .iter()
        .map(|key| key["state"].as_str().expect("state"))
        .collect();
    // The second key was overtaken before it signed: retired by the command's own step or the
    // server's schedule.
    assert!(
        matches!(
            states.as_slice(),
            ["retiring", "pending" | "retired", "active"]
        ),
        "{listed}"
    );
    let active = keys[2]["key_id"].as_str().expect("kid").to_owned();
    assert!(
        !listed.contains("sealed") && !listed.contains("private"),
        "{listed}"
    );

    let (status, _, stderr) = run(&env, &["keys", "retire", &active]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is the active key"), "{stderr}");
    let unknown = KeyId::thumbprint_ed25519(&[1; 32]);
    let (status, _, stderr) = run(&env, &["keys", "retire", unknown.as_str()]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("there is no key"), "{stderr}");
    let (status, _, stderr) = run(&env, &["keys", "retire", "not a key id"]);
    assert_eq!(status.code(), Some(2), "{stderr}");

    let (status, stdout, stderr) = run(&env, &["keys", "retire", &first[0]]);
    assert!(status.success(), "{stdout}{stderr}");
    // Retired here, and the overtaken second key by the server's schedule.
    let deadline = Instant::now() + Duration::from_secs(3);
    while kids().await != [active.clone()] {
        assert!(
            Instant::now() < deadline,
            "the server still publishes {:?}",
            kids().await
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, table, _) = run(&env, &["keys", "list"]);
    assert!(table.starts_with("key "), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");

    // The log says who did each step.
    let (_, events, _) = run(&env, &["events", "--type", "SigningKeyAdded"]);
    assert!(events.contains(r#"by="authlog keys rotate""#), "{events}");
    assert!(events.contains(r#"by="rotation schedule""#), "{events}");
}

#[actix_web::test]
async fn keys_commands_on_the_embedded_store() {
    let data = tempfile::tempdir().expect("temp dir");
    keys_commands_against_a_running_server(embedded_env(data.path())).await;
}

#[actix_web::test]
async fn keys_commands_on_postgres() {
    let db = TestDatabase::create().await;
    keys_commands_against_a_running_server(db.service_env()).await;
}

/// The private halves are nowhere in plaintext: not in the database (a `pg_dump`-like read of
/// every column), the embedded store's files, `authlog events` output, or the service's log.
#[actix_web::test]
async fn private_keys_are_never_in_the_clear() {
    let data = tempfile::tempdir().expect("temp dir");
    let env = embedded_env(data.path());
    let service = Service::start(&env);
    let (status, _, _) = run(&env, &["keys", "rotate", "--now"]);
    assert!(status.success());
    let (_, log) = service.terminate(Duration::from_secs(30));
    let (_, events, _) = run(&env, &["events", "--format", "jsonl"]);
    let (_, table, _) = run(&env, &["events"]);

    let master = std::fs::read_to_string(data.path().join("master-key")).expect("the key file");
    let master =
        authlog::vault::MasterKey::parse(&secrecy::SecretString::from(master.trim().to_owned()))
            .expect("long enough");
    let vault = authlog::signing::KeyVault::new(&master);
    let store = authlog::events::SqliteEventStore::open_read_only(&data.path().join("events.db"))
        .await
        .expect("opens");
    let ring = authlog::operate::key_ring(&store).await.expect("reads");
    drop(store);
    assert_eq!(ring.keys().len(), 2);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(data.path()).expect("lists") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|name| name != "master-key") {
            files.push(std::fs::read(&path).expect("reads"));
        }
    }
    for key in ring.keys() {
        let seed = vault.open(key).expect("opens").to_bytes();
        let forms = [
            seed.to_vec(),
            URL_SAFE_NO_PAD.encode(seed).into_bytes(),
            base64::engine::general_purpose::STANDARD
                .encode(seed)
                .into_bytes(),
            seed.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into_bytes(),
        ];
        for form in &forms {
            let part = &form[..16];
            for file in &files {
                assert!(!file.windows(16).any(|w| w == part), "in a store file");
            }
            for text in [&events, &table] {
                assert!(!text.as_bytes().windows(16).any(|w| w == part), "in events");
            }
            for line in &log {
                assert!(
                    !line.as_bytes().windows(16).any(|w| w == part),
                    "in the log"
                );
            }
        }
        let sealed = URL_SAFE_NO_PAD.encode(&key.sealed_private_key);
        assert!(!events.contains(&sealed[..24]), "not even sealed");
    }
    assert!(
        events.contains(r#""sealed_private_key":"<sealed>""#),
        "{events}"
    );
}

#[actix_web::test]
async fn private_keys_are_not_in_the_clear_in_postgresql() {
    let db = TestDatabase::create().await;
    let app = spawn_app_with(test_settings(db.store_settings())).await;
    rotate(&app, true).await;
    let everything: String = db
        .client()
        .await
        .query_one(
            "SELECT string_agg(e::text, '') || coalesce((SELECT string_agg(s::text, '') \
             FROM sessions s), '') FROM events e",
            &[],
        )
        .await
        .expect("reads")
        .get(0);
    let set = app.keychain.key_set();
    assert_eq!(set.keys().len(), 2);
    for key in set.keys() {
        let seed = app.keychain.vault().open(key).expect("opens").to_bytes();
        for form in [
            URL_SAFE_NO_PAD.encode(seed),
            base64::engine::general_purpose::STANDARD.encode(seed),
            seed.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        ] {
            assert!(
                !everything.contains(&form[..16]),
                "a private key in the database"
            );
        }
    }
}

/// The hostile tokens that matter most, against the real binary, forged with nothing but what
/// it publishes (the JWKS): HS256 keyed with the public key (algorithm confusion), an unknown
/// `kid`, the attacker's key offered in `jwk` or by `jku`; then a token whose key was retired
/// with `authlog keys retire` while the server runs.
#[actix_web::test]
async fn the_binary_refuses_forged_tokens_and_tokens_of_a_retired_key() {
    use crate::hostile::{claims, forge, forge_hs256};

    let data = tempfile::tempdir().expect("temp dir");
    let env = embedded_env(data.path());
    let service = Service::start(&env);
    let http = reqwest::Client::new();
    let (email, password) = ("victim@example.com", "victim-password-1");
    let status = crate::common::service::signup_at(&http, &service.address, email, password).await;
    assert_eq!(status, 201);
    let login: Value = crate::common::service::login_at(&http, &service.address, email, password)
        .await
        .json()
        .await
        .expect("json");
    let token = login["access_token"].as_str().expect("a token").to_owned();
    let real = crate::common::claims_of(&token);
    let (user, sid) = (
        real["sub"].as_str().expect("sub"),
        real["sid"].as_str().expect("sid"),
    );
    let profile = |token: String| {
        let http = http.clone();
        let url = service.url("/profile");
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("answered")
                .status()
                .as_u16()
        }
    };
    assert_eq!(profile(token.clone()).await, 200, "the real token works");

    let jwks = service_jwks(&http, &service).await;
    let kid = kids(&jwks).remove(0);
    let x = jwks["keys"][0]["x"].as_str().expect("x").to_owned();
    let public = URL_SAFE_NO_PAD.decode(&x).expect("base64url");
    let impostor = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let impostor_kid = KeyId::thumbprint_ed25519(impostor.verifying_key().as_bytes());
    let forged_claims = claims(user, sid, email, 600);
    let forgeries = [
        (
            "HS256 keyed with the public key, naming the Ed25519 key",
            forge_hs256(
                &json!({"alg": "HS256", "typ": "JWT", "kid": kid}),
                &forged_claims,
                &public,
            ),
        ),
        (
            "HS256 keyed with the JWKS's x, naming the Ed25519 key",
            forge_hs256(
                &json!({"alg": "HS256", "typ": "JWT", "kid": kid}),
                &forged_claims,
                x.as_bytes(),
            ),
        ),
        (
            "the attacker's key under its own, unknown kid",
            forge(
                &json!({"alg": "EdDSA", "typ": "JWT", "kid": impostor_kid.as_str()}),
                &forged_claims,
                &impostor,
            ),
        ),
        (
            "the attacker's key embedded in a jwk header",
            forge(
                &json!({"alg": "EdDSA", "typ": "JWT", "kid": impostor_kid.as_str(), "jwk": {
                    "kty": "OKP", "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(impostor.verifying_key().as_bytes()),
                }}),
                &forged_claims,
                &impostor,
            ),
        ),
        (
            "the attacker's key behind a jku URL, naming the real kid",
            forge(
                &json!({"alg": "EdDSA", "typ": "JWT", "kid": kid,
                    "jku": "https://evil.example/jwks.json"}),
                &forged_claims,
                &impostor,
            ),
        ),
    ];
    for (what, forged) in forgeries {
        assert_eq!(profile(forged).await, 401, "{what}");
    }

    // Retire the key that signed the real token: it stops working, at once here and within a
    // second on a running embedded server.
    let (status, _, stderr) = run(&env, &["keys", "rotate", "--now"]);
    assert!(status.success(), "{stderr}");
    let (status, _, stderr) = run(&env, &["keys", "retire", &kid]);
    assert!(status.success(), "{stderr}");
    let deadline = Instant::now() + Duration::from_secs(3);
    while profile(token.clone()).await != 401 {
        assert!(
            Instant::now() < deadline,
            "a token of a retired key still works"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}
