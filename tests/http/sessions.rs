//! Sessions, on both stores: the contract's new rows (refresh, logout, logout everywhere, the
//! session list, revoking one, changing the password), the rotation rule with its grace, idle
//! and absolute expiry on a settable clock, refresh floods, and restarts. Tests about several
//! instances on one PostgreSQL database are at the end.

use std::time::Duration;

use crate::common::{
    TUTORIAL_PASSWORD, TestApp, TestDatabase, TestLog, assert_error, assert_unauthorized,
    claims_of, spawn_app_with, test_settings,
};
use authlog::actors::ExpireSessions;
use authlog::clock::{Clock, ManualClock};
use authlog::config::Settings;
use serde_json::{Value, json};

const INVALID_REFRESH: &str = "Invalid refresh token";
const INVALID_TOKEN: &str = "Invalid or expired token";

/// Which store a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Store {
    Embedded,
    Postgres,
}

/// The app on a fresh log of either kind, with a settable clock.
pub struct Fixture {
    pub app: TestApp,
    pub clock: ManualClock,
    log: Option<TestLog>,
    db: Option<TestDatabase>,
}

impl Fixture {
    pub async fn start(store: Store, tweak: impl FnOnce(&mut Settings)) -> Self {
        let (log, db) = match store {
            Store::Embedded => (Some(TestLog::create().await), None),
            Store::Postgres => (None, Some(TestDatabase::create().await)),
        };
        let store_settings = match (&log, &db) {
            (Some(log), _) => log.store_settings(),
            (_, Some(db)) => db.store_settings(),
            _ => unreachable!("one of them is set"),
        };
        let mut settings = test_settings(store_settings);
        let (clock, handle) = Clock::settable();
        settings.clock = clock;
        tweak(&mut settings);
        let app = spawn_app_with(settings).await;
        Self {
            app,
            clock: handle,
            log,
            db,
        }
    }

    /// Another app on the same log (a restarted process: it replays the log).
    pub async fn restarted(&self) -> TestApp {
        let store = match (&self.log, &self.db) {
            (Some(log), _) => log.store_settings(),
            (_, Some(db)) => db.store_settings(),
            _ => unreachable!("one of them is set"),
        };
        spawn_app_with(test_settings(store)).await
    }

    pub async fn event_types(&self) -> Vec<(String, i32)> {
        match (&self.log, &self.db) {
            (Some(log), _) => log.event_types().await,
            (_, Some(db)) => db.event_types().await,
            _ => unreachable!("one of them is set"),
        }
    }

    /// How many events of this type the log holds.
    pub async fn count(&self, event_type: &str) -> usize {
        self.event_types()
            .await
            .iter()
            .filter(|(t, _)| t == event_type)
            .count()
    }
}

/// An access token and a refresh token.
#[derive(Debug, Clone)]
pub struct Pair {
    pub access: String,
    pub refresh: String,
}

impl Pair {
    fn from_body(body: &Value) -> Self {
        Self {
            access: body["access_token"]
                .as_str()
                .expect("access token")
                .to_owned(),
            refresh: body["refresh_token"]
                .as_str()
                .expect("refresh token")
                .to_owned(),
        }
    }

    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.access)
    }

    pub fn sid(&self) -> String {
        claims_of(&self.access)["sid"]
            .as_str()
            .expect("sid")
            .to_owned()
    }
}

pub async fn signed_up_and_in(app: &TestApp, email: &str) -> Pair {
    app.signed_up(email, TUTORIAL_PASSWORD).await;
    log_in(app, email, TUTORIAL_PASSWORD).await
}

pub async fn log_in(app: &TestApp, email: &str, password: &str) -> Pair {
    let response = app.login(email, password).await;
    assert_eq!(response.status(), 200, "login of {email}");
    Pair::from_body(&response.json().await.expect("json"))
}

pub async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.post_json("/token/refresh", &json!({ "refresh_token": token }))
        .await
}

/// Refreshes, asserting 200 and the no-store headers; the new pair.
pub async fn refreshed(app: &TestApp, token: &str) -> Pair {
    let response = refresh(app, token).await;
    assert_eq!(response.status(), 200, "refresh");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(header("pragma"), "no-cache");
    Pair::from_body(&response.json().await.expect("json"))
}

pub async fn with_bearer(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    pair: &Pair,
) -> reqwest::Response {
    app.http
        .request(method, app.url(path))
        .header("Authorization", pair.bearer())
        .send()
        .await
        .expect("request sent")
}

pub async fn profile_status(app: &TestApp, pair: &Pair) -> u16 {
    app.profile(Some(&pair.bearer())).await.status().as_u16()
}

async fn sessions_of(app: &TestApp, pair: &Pair) -> Vec<Value> {
    let response = with_bearer(app, reqwest::Method::GET, "/sessions", pair).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("a JSON array")
}

async fn change_password(
    app: &TestApp,
    pair: &Pair,
    current: &str,
    new: &str,
) -> reqwest::Response {
    app.http
        .post(app.url("/password"))
        .header("Authorization", pair.bearer())
        .json(&json!({ "current_password": current, "new_password": new }))
        .send()
        .await
        .expect("request sent")
}

/// Every test of this list, once on the embedded store and once on PostgreSQL.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[actix_web::test]
                async fn $name() {
                    super::$name(super::Store::Embedded).await;
                }
            )*
        }
        mod postgres {
            $(
                #[actix_web::test]
                async fn $name() {
                    super::$name(super::Store::Postgres).await;
                }
            )*
        }
    };
}

on_both_stores!(
    login_starts_a_session_named_by_the_access_token,
    a_refresh_rotates_the_refresh_token_and_appends_nothing,
    the_oauth2_refresh_grant_works_on_login_and_on_the_refresh_route,
    reuse_after_the_grace_revokes_the_session_and_its_access_tokens,
    two_refreshes_within_the_grace_both_hold_a_working_token,
    with_no_grace_any_second_use_revokes,
    logout_ends_this_session_at_once,
    logout_all_ends_every_session_of_the_user,
    the_session_list_shows_only_the_callers_sessions,
    deleting_a_session_revokes_it_and_only_the_owner_may,
    a_password_change_keeps_this_session_and_ends_the_others,
    a_password_change_is_checked_like_a_login,
    idle_sessions_expire_and_leave_memory,
    no_session_outlives_its_absolute_lifetime,
    refresh_floods_from_one_address_are_throttled,
    a_restart_keeps_sessions,
    hostile_session_bodies,
);

async fn login_starts_a_session_named_by_the_access_token(store: Store) {
    let fx = Fixture::start(store, |_| {}).await;
    let pair = signed_up_and_in(&fx.app, "a@example.com").await;
    assert!(uuid::Uuid::parse_str(&pair.sid()).is_ok());
    assert_ne!(pair.refresh, pair.access);
    assert_eq!(profile_status(&fx.app, &pair).await, 200);
    assert_eq!(
        fx.event_types().await,
        [
            ("UserRegistered".to_owned(), 1),
            ("LoginSucceeded".to_owned(), 2),
            ("SessionStarted".to_owned(), 3)
        ]
    );
}

async fn a_refresh_rotates_the_refresh_token_and_appends_nothing(store: Store) {
    let fx = Fixture::start(store, |_| {}).await;
    let first = signed_up_and_in(&fx.app, "a@example.com").await;
    let events = fx.event_types().await.len();
    let second = refreshed(&fx.app, &first.refresh).await;
    assert_ne!(second.refresh, first.refresh, "a new refresh token");
    assert_ne!(second.access, first.access, "a new access token");
    assert_eq!(second.sid(), first.sid(), "the same session");
    let third = refreshed(&fx.app, &second.refresh).await;
    assert_eq!(third.sid(), first.sid());
    for pair in [&first, &second, &third] {
        assert_eq!(profile_status(&fx.app, pair).await, 200);
    }
    assert_eq!(
        fx.event_types().await.len(),
        events,
        "a rotation lives beside the log"
    );
}

async fn the_oauth2_refresh_grant_works_on_login_and_on_the_refresh_route(store: Store) {
    let fx = Fixture::start(store, |_| {}).await;
    let pair = signed_up_and_in(&fx.app, "a@example.com").await;
    let form = |path: &str, token: &str| {
        fx.app
            .http
            .post(fx.app.url(path))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("grant_type=refresh_token&refresh_token={token}"))
            .send()
    };
    let response = form("/login", &pair.refresh).await.expect("sent");
    assert_eq!(response.status(), 200);
    let next = Pair::from_body(&response.json().await.expect("json"));
    let response = form("/token/refresh", &next.refresh).await.expect("sent");
    assert_eq!(response.status(), 200);
    let last = Pair::from_body(&response.json().await.expect("json"));
    assert_eq!(profile_status(&fx.app, &last).await, 200);
    let response = form("/login", "not-a-token").await.expect("sent");
    assert_unauthorized(response, INVALID_REFRESH).await;
}

async fn reuse_after_the_grace_revokes_the_session_and_its_access_tokens(store: Store) {
    let fx = Fixture::start(store, |_| {}).await;
    let first = signed_up_and_in(&fx.app, "a@example.com").await;
    let second = refreshed(&fx.app, &first.refresh).await;
    fx.clock.advance(Duration::from_secs(11));
    // The thief (or the victim) presents the spent token after the grace.
    assert_unauthorized(refresh(&fx.app, &first.refresh).await, INVALID_REFRESH).await;
    // The whole session is gone: its live access tokens and its current refresh token.
    for pair in [&first, &second] {
        assert_unauthorized(fx.app.profile(Some(&pair.bearer())).await, INVALID_TOKEN).await;
    }
    assert_unauthorized(refresh(&fx.app, &second.refresh).await, INVALID_REFRESH).await;
    assert_eq!(fx.count("SessionEnded").await, 1);
}

async fn two_refreshes_within_the_grace_both_hold_a_working_token(store: Store) {
    let fx = Fixture::start(store, |_| {}).await;
    let first = signed_up_and_in(&fx.app, "a@example.com").await;
    // Two tabs refresh the same token, one after the other, within the grace.
    let tab_a = refreshed(&fx.app, &first.refresh).await;
    fx.clock.advance(Duration::from_secs(5));
    let tab_b = refreshed(&fx.app, &first.refresh).await;
    assert_eq!(tab_a.refresh, tab_b.refresh, "both hold the one successor");
    assert_ne!(tab_a.access, tab_b.access);
    for pair in [&tab_a, &tab_b] {
        assert_eq!(profile_status(&fx.app, pair).await, 200);
    }
    // And the successor works, once.
    let next = refreshed(&fx.app, &tab_b.refresh).await;
    assert_eq!(profile_status(&fx.app, &next).await, 200);
    assert_eq!(
        fx.count("SessionEnded").await,
        0,
        "nobody was treated as a thief"
    );
}

async fn with_no_grace_any_second_use_revokes(store: Store) {
    let fx = Fixture::start(store, |settings| settings.sessions.grace = Duration::ZERO).await;
    let first = signed_up_and_in(&fx.app, "a@example.com").await;
    let second = refreshed(&fx.app, &first.refresh).await;
    assert_unauthorized(refresh(&fx.app, &first.refresh).await, INVALID_REFRESH).await;
    assert_eq!(profile_status(&fx.app, &second).await, 401);
    assert_eq!(fx.count("SessionEnded").await, 1);
}

async fn logout_ends_this_session_at_once(store: Store) {
    let fx = Fixture::start(store, |_| {}).await;
    let pair = signed_up_and_in(&fx.app, "a@example.com").await;
    let other = log_in(&fx.app, "a@example.com", TUTORIAL_PASSWORD).await;
    let response = with_bearer(&fx.app, reqwest::Method::POST, "/logout", &pair).await;
    assert_eq!(response.status(), 204);
    assert_unauthorized(fx.app.profile(Some(&pair.bearer())).await, INVALID_TOKEN).await;
    assert_unauthorized(refresh(&fx.app, &pair.refresh).await, INVALID_REFRESH).await;
    let again = with_bearer(&fx.app, reqwest::Method::POST, "/logout", &pair).await;
    assert_unauthorized(again, INVALID_TOKEN).await;
    // Another session of the same user is untouched.
    assert_eq!(profile_status(&fx.app, &other).await, 200);
    let none = fx
        .app
        .http
        .post(fx.app.url("/logout"))
        .send()
        .await
        .expect("sent");
    assert_unauthorized(none, "Not authenticated").await;
}

async fn logout_all_ends_every_session_of_the_user(store: Store) {
    let fx = Fixture::start(store, |_| {}).await;
    let one = signed_up_and_in(&fx.app, "a@example.com").await;
    let two = log_in(&fx.app, "a@example.com", TUTORIAL_PASSWORD).await;
    let stranger = signed_up_and_in(&fx.app, "b@example.com").await;
    let response = with_bearer(&fx.app, reqwest::Method::POST, "/logout/all", &two).await;
    assert_eq!(response.status(), 204);
    for pair in [&one, &two] {
        assert_eq!(profile_status(&fx.app, pair).await, 401);
        assert_eq!(refresh(&fx.app, &pair.refresh).await.status(), 401);
    }
    assert_eq!(
        profile_status(&fx.app, &stranger).await,
        200,
        "another user's"
    );
    assert_eq!(fx.count("SessionEnded").await, 2);
}

async fn the_session_list_shows_only_the_callers_sessions(store: Store) {
    let fx = Fixture::start(store, |_| {}).await;
    let mine = signed_up_and_in(&fx.app, "a@example.com").await;
    let response = fx
        .app
        .http
        .post(fx.app.url("/login"))
        .header("User-Agent", "second-device/1.0")
        .json(&json!({ "email": "a@example.com", "password": TUTORIAL_PASSWORD }))
        .send()
        .await
        .expect("sent");
    let second = Pair::from_body(&response.json().await.expect("json"));
    let theirs = signed_up_and_in(&fx.app, "b@example.com").await;

    let listed = sessions_of(&fx.app, &mine).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let ids: Vec<&str> = listed
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [mine.sid(), second.sid()], "oldest first");
    for session in &listed {
        let keys: Vec<&str> = session
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "client_ip",
                "created_at",
                "current",
                "expires_at",
                "id",
                "last_used_at",
                "user_agent"
            ]
        );
        assert_eq!(session["client_ip"], "127.0.0.1");
        assert_eq!(session["current"], session["id"] == mine.sid().as_str());
    }
    assert_eq!(listed[1]["user_agent"], "second-device/1.0");
    // A refresh moves last_used_at (and the idle end) on.
    fx.clock.advance(Duration::from_secs(60));
    refreshed(&fx.app, &second.refresh).await;
    let after = sessions_of(&fx.app, &mine).await;
    assert!(after[1]["last_used_at"].as_str() > listed[1]["last_used_at"].as_str());
    assert_eq!(after[0]["last_used_at"], listed[0]["last_used_at"]);

    let listed = sessions_of(&fx.app, &theirs).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], theirs.sid().as_str());
    assert_eq!(listed[0]["current"], true);
}

async fn deleting_a_session_revokes_it_and_only_the_owner_may(store: Store) {
    let fx = Fixture::start(store, |_| {}).await;
    let mine = signed_up_and_in(&fx.app, "a@example.com").await;
    let lost_phone = log_in(&fx.app, "a@example.com", TUTORIAL_PASSWORD).await;
    let theirs = signed_up_and_in(&fx.app, "b@example.com").await;
    let path = format!("/sessions/{}", lost_phone.sid());
    // Another user gets 404, and the session lives on.
    let response = with_bearer(&fx.app, reqwest::Method::DELETE, &path, &theirs).await;
    assert_eq!(assert_error(response, 404).await, "Session not found");
    assert_eq!(profile_status(&fx.app, &lost_phone).await, 200);
    for bad in [
        "/sessions/not-a-uuid",
        &format!("/sessions/{}", uuid::Uuid::new_v4()),
    ] {
        let response = with_bearer(&fx.app, reqwest::Method::DELETE, bad, &mine).await;
        assert_eq!(
            assert_error(response, 404).await,
            "Session not found",
            "{bad}"
        );
    }
    let response = with_bearer(&fx.app, reqwest::Method::DELETE, &path, &mine).await;
    assert_eq!(response.status(), 204);
    assert_eq!(profile_status(&fx.app, &lost_phone).await, 401);
    assert_eq!(refresh(&fx.app, &lost_phone.refresh).await.status(), 401);
    assert_eq!(profile_status(&fx.app, &mine).await, 200);
    // Gone: a second delete is 404.
    let response = with_bearer(&fx.app, reqwest::Method::DELETE, &path, &mine).await;
    assert_eq!(response.status(), 404);
}

async fn a_password_change_keeps_this_session_and_ends_the_others(store: Store) {
    let fx = Fixture::start(store, |_| {}).await;
    let here = signed_up_and_in(&fx.app, "a@example.com").await;
    let laptop = log_in(&fx.app, "a@example.com", TUTORIAL_PASSWORD).await;
    let phone = log_in(&fx.app, "a@example.com", TUTORIAL_PASSWORD).await;
    let new = "a-brand-new-passphrase";
    let response = change_password(&fx.app, &here, TUTORIAL_PASSWORD, new).await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        profile_status(&fx.app, &here).await,
        200,
        "this session carries on"
    );
    refreshed(&fx.app, &here.refresh).await;
    for other in [&laptop, &phone] {
        assert_eq!(profile_status(&fx.app, other).await, 401);
        assert_eq!(refresh(&fx.app, &other.refresh).await.status(), 401);
    }
    assert_eq!(
        fx.app
            .login("a@example.com", TUTORIAL_PASSWORD)
            .await
            .status(),
        401
    );
    log_in(&fx.app, "a@example.com", new).await;
    assert_eq!(fx.count("PasswordChanged").await, 1);
    assert_eq!(fx.count("SessionEnded").await, 2);
}

async fn a_password_change_is_checked_like_a_login(store: Store) {
    let fx = Fixture::start(store, |_| {}).await;
    let pair = signed_up_and_in(&fx.app, "a@example.com").await;
    let wrong = change_password(&fx.app, &pair, "not-my-password", "a-brand-new-passphrase").await;
    assert_unauthorized(wrong, "Invalid credentials").await;
    assert_eq!(
        fx.count("LoginFailed").await,
        1,
        "counted like a failed login"
    );
    let weak = change_password(&fx.app, &pair, TUTORIAL_PASSWORD, "short").await;
    assert_eq!(
        assert_error(weak, 422).await,
        "new_password: must be at least 8 bytes"
    );
    let common = change_password(&fx.app, &pair, TUTORIAL_PASSWORD, "password123").await;
    assert!(
        assert_error(common, 422)
            .await
            .starts_with("new_password: ")
    );
    // Five wrong ones lock the account out from this address, as five failed logins would.
    for _ in 0..4 {
        change_password(&fx.app, &pair, "not-my-password", "a-brand-new-passphrase").await;
    }
    let locked = change_password(&fx.app, &pair, TUTORIAL_PASSWORD, "a-brand-new-passphrase").await;
    assert_eq!(locked.status(), 429);
    assert!(locked.headers().contains_key("retry-after"));
    assert_eq!(fx.count("PasswordChanged").await, 0);
    let anonymous = fx
        .app
        .post_json(
            "/password",
            &json!({ "current_password": TUTORIAL_PASSWORD, "new_password": "a-brand-new-passphrase" }),
        )
        .await;
    assert_unauthorized(anonymous, "Not authenticated").await;
}

async fn idle_sessions_expire_and_leave_memory(store: Store) {
    let fx = Fixture::start(store, |settings| {
        settings.sessions.idle = Duration::from_secs(3600);
    })
    .await;
    let used = signed_up_and_in(&fx.app, "a@example.com").await;
    let idle = log_in(&fx.app, "a@example.com", TUTORIAL_PASSWORD).await;
    fx.clock.advance(Duration::from_secs(59 * 60));
    let used = refreshed(&fx.app, &used.refresh).await;
    fx.clock.advance(Duration::from_secs(2 * 60));
    // 61 minutes unused: expired. The other was refreshed 2 minutes ago.
    assert_unauthorized(refresh(&fx.app, &idle.refresh).await, INVALID_REFRESH).await;
    let listed = sessions_of(&fx.app, &used).await;
    assert_eq!(listed.len(), 1, "an idle session is not listed: {listed:?}");
    let gone = fx.app.registry.send(ExpireSessions).await.expect("answers");
    assert_eq!(gone, 1, "the idle session left memory");
    let used = refreshed(&fx.app, &used.refresh).await;
    assert_eq!(profile_status(&fx.app, &used).await, 200);
    assert_eq!(
        fx.count("SessionEnded").await,
        0,
        "an expiry is not an event"
    );
}

async fn no_session_outlives_its_absolute_lifetime(store: Store) {
    let fx = Fixture::start(store, |settings| {
        settings.sessions.idle = Duration::from_secs(3600);
        settings.sessions.lifetime = Duration::from_secs(2 * 3600);
    })
    .await;
    let mut pair = signed_up_and_in(&fx.app, "a@example.com").await;
    for _ in 0..2 {
        fx.clock.advance(Duration::from_secs(50 * 60));
        pair = refreshed(&fx.app, &pair.refresh).await;
    }
    // At 100 minutes, the access token ends with the session, at 120, not 30 minutes later.
    let exp = claims_of(&pair.access)["exp"].as_i64().expect("exp");
    let iat = claims_of(&pair.access)["iat"].as_i64().expect("iat");
    // Both are whole seconds cut from instants whose fractions differ (the session's end was
    // fixed at the login, `iat` is now): 20 minutes, or a second less.
    assert!(
        (20 * 60 - 1..=20 * 60).contains(&(exp - iat)),
        "capped at the session's end: {}",
        exp - iat
    );
    fx.clock.advance(Duration::from_secs(21 * 60));
    assert_unauthorized(refresh(&fx.app, &pair.refresh).await, INVALID_REFRESH).await;
    assert_eq!(profile_status(&fx.app, &pair).await, 401);
    let gone = fx.app.registry.send(ExpireSessions).await.expect("answers");
    assert_eq!(gone, 1, "the expired session left memory");
}

async fn refresh_floods_from_one_address_are_throttled(store: Store) {
    let fx = Fixture::start(store, |_| {}).await;
    let pair = signed_up_and_in(&fx.app, "a@example.com").await;
    let limit = authlog::throttle::ThrottlePolicy::DEFAULT.refresh_failures_per_minute;
    for i in 0..limit {
        let token = if i % 2 == 0 {
            "garbage".to_owned()
        } else {
            format!("{}A", &pair.refresh[1..])
        };
        assert_unauthorized(refresh(&fx.app, &token).await, INVALID_REFRESH).await;
    }
    let response = refresh(&fx.app, "garbage").await;
    assert_eq!(response.status(), 429);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(
        assert_error(response, 429).await,
        format!("Too many failed refresh attempts; retry in {wait} seconds")
    );
    // The address waits, even with a good token; a minute later it may try again.
    assert_eq!(refresh(&fx.app, &pair.refresh).await.status(), 429);
    fx.clock.advance(Duration::from_secs(61));
    refreshed(&fx.app, &pair.refresh).await;
}

async fn a_restart_keeps_sessions(store: Store) {
    let fx = Fixture::start(store, |_| {}).await;
    let pair = signed_up_and_in(&fx.app, "a@example.com").await;
    let ended = log_in(&fx.app, "a@example.com", TUTORIAL_PASSWORD).await;
    let response = with_bearer(&fx.app, reqwest::Method::POST, "/logout", &ended).await;
    assert_eq!(response.status(), 204);
    let next = fx.restarted().await;
    assert_eq!(
        profile_status(&next, &pair).await,
        200,
        "the session replays"
    );
    assert_eq!(
        profile_status(&next, &ended).await,
        401,
        "and so does its end"
    );
    let rotated = refreshed(&next, &pair.refresh).await;
    assert_eq!(profile_status(&next, &rotated).await, 200);
    assert_eq!(refresh(&next, &ended.refresh).await.status(), 401);
}

async fn hostile_session_bodies(store: Store) {
    let fx = Fixture::start(store, |_| {}).await;
    let pair = signed_up_and_in(&fx.app, "a@example.com").await;
    let huge = "a".repeat(5000);
    let raw = |path: &'static str, content_type: Option<&'static str>, body: Vec<u8>| {
        fx.app.post_raw(path, content_type, body)
    };
    let json = Some("application/json");
    let cases: Vec<(&str, reqwest::Response, u16, &str)> = vec![
        (
            "missing field",
            raw("/token/refresh", json, b"{}".to_vec()).await,
            422,
            "missing field `refresh_token`",
        ),
        (
            "number",
            raw("/token/refresh", json, br#"{"refresh_token": 42}"#.to_vec()).await,
            422,
            "refresh_token: ",
        ),
        (
            "null",
            raw(
                "/token/refresh",
                json,
                br#"{"refresh_token": null}"#.to_vec(),
            )
            .await,
            422,
            "refresh_token: ",
        ),
        (
            "array body",
            raw("/token/refresh", json, b"[]".to_vec()).await,
            422,
            "the request body must be a JSON object",
        ),
        (
            "malformed",
            raw("/token/refresh", json, b"{\"refresh_token\"".to_vec()).await,
            400,
            "",
        ),
        (
            "huge",
            raw(
                "/token/refresh",
                json,
                format!("{{\"refresh_token\":\"{huge}\"}}").into_bytes(),
            )
            .await,
            413,
            "Request body is too large",
        ),
        (
            "NUL",
            raw(
                "/token/refresh",
                json,
                br#"{"refresh_token": "\u0000"}"#.to_vec(),
            )
            .await,
            401,
            INVALID_REFRESH,
        ),
        (
            "long token",
            raw(
                "/token/refresh",
                json,
                format!("{{\"refresh_token\":\"{}\"}}", "A".repeat(3000)).into_bytes(),
            )
            .await,
            401,
            INVALID_REFRESH,
        ),
        (
            "no content type",
            raw("/token/refresh", None, b"{}".to_vec()).await,
            415,
            "Content-Type must be",
        ),
        (
            "wrong grant",
            raw(
                "/token/refresh",
                Some("application/x-www-form-urlencoded"),
                b"grant_type=password&refresh_token=x".to_vec(),
            )
            .await,
            400,
            "unsupported grant_type",
        ),
        (
            "login refresh grant without a token",
            raw(
                "/login",
                Some("application/x-www-form-urlencoded"),
                b"grant_type=refresh_token".to_vec(),
            )
            .await,
            422,
            "missing field `refresh_token`",
        ),
    ];
    for (name, response, status, detail) in cases {
        let got = assert_error(response, status).await;
        assert!(got.starts_with(detail), "{name}: {got}");
    }
    let password = |body: Value| {
        fx.app
            .http
            .post(fx.app.url("/password"))
            .header("Authorization", pair.bearer())
            .json(&body)
            .send()
    };
    for (body, status, detail) in [
        (json!({}), 422, "missing field `current_password`"),
        (
            json!({"current_password": TUTORIAL_PASSWORD}),
            422,
            "missing field `new_password`",
        ),
        (
            json!({"current_password": 1, "new_password": "x"}),
            422,
            "current_password: ",
        ),
        (
            json!({"current_password": TUTORIAL_PASSWORD, "new_password": ["x"]}),
            422,
            "new_password: ",
        ),
        (
            json!({"current_password": TUTORIAL_PASSWORD, "new_password": "x".repeat(73)}),
            422,
            "new_password: must be at most 72 bytes",
        ),
        (
            json!({"current_password": "\u{0}".repeat(73), "new_password": "a-brand-new-passphrase"}),
            401,
            "Invalid credentials",
        ),
    ] {
        let got = assert_error(password(body.clone()).await.expect("sent"), status).await;
        assert!(got.starts_with(detail), "{body}: {got}");
    }
    // NUL is a character like any other in a password, compared exactly.
    let nul = "with\u{0}nul-inside";
    let response = password(json!({"current_password": TUTORIAL_PASSWORD, "new_password": nul}))
        .await
        .expect("sent");
    assert_eq!(response.status(), 204);
    log_in(&fx.app, "a@example.com", nul).await;
    assert_eq!(fx.app.login("a@example.com", "with").await.status(), 401);
    let long_id = format!("/sessions/{huge}");
    let response = with_bearer(&fx.app, reqwest::Method::DELETE, &long_id, &pair).await;
    assert!(
        matches!(response.status().as_u16(), 404 | 414 | 431),
        "{}",
        response.status()
    );
}

// ---- Several instances on one PostgreSQL database ----

/// Two apps on one fresh database.
async fn two_instances(tweak: impl Fn(&mut Settings)) -> (TestApp, TestApp, TestDatabase) {
    let db = TestDatabase::create().await;
    let mut settings = test_settings(db.store_settings());
    tweak(&mut settings);
    let a = spawn_app_with(settings.clone()).await;
    let b = spawn_app_with(settings).await;
    (a, b, db)
}

/// Polls `check` until it holds, for at most 5 s; how long that took.
async fn within_the_lag(mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = std::time::Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not seen within 5 s"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[actix_web::test]
async fn two_instances_racing_one_refresh_token_rotate_it_once() {
    let (a, b, db) = two_instances(|_| {}).await;
    for round in 0..5 {
        let pair = signed_up_and_in(&a, &format!("race{round}@example.com")).await;
        let (on_a, on_b) = tokio::join!(refresh(&a, &pair.refresh), refresh(&b, &pair.refresh));
        assert_eq!(
            (on_a.status().as_u16(), on_b.status().as_u16()),
            (200, 200),
            "round {round}"
        );
        let on_a = Pair::from_body(&on_a.json().await.expect("json"));
        let on_b = Pair::from_body(&on_b.json().await.expect("json"));
        assert_eq!(
            on_a.refresh, on_b.refresh,
            "one rotation won; the other got its successor"
        );
        let generation: i32 = db
            .client()
            .await
            .query_one(
                "SELECT generation FROM sessions WHERE session_id = $1::text::uuid",
                &[&pair.sid()],
            )
            .await
            .expect("the row")
            .get(0);
        assert_eq!(generation, 2, "exactly one rotation");
        assert_eq!(profile_status(&b, &on_a).await, 200);
    }
    // Without a grace, exactly one of two racing refreshes wins, and the loser ends the session.
    let (a, b, db) = two_instances(|s| s.sessions.grace = Duration::ZERO).await;
    let pair = signed_up_and_in(&a, "race@example.com").await;
    let (on_a, on_b) = tokio::join!(refresh(&a, &pair.refresh), refresh(&b, &pair.refresh));
    let mut statuses = [on_a.status().as_u16(), on_b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401]);
    assert_eq!(
        db.event_types()
            .await
            .iter()
            .filter(|(t, _)| t == "SessionEnded")
            .count(),
        1
    );
}

#[actix_web::test]
async fn logout_and_logout_all_are_seen_on_another_instance() {
    let (a, b, _db) = two_instances(|_| {}).await;
    let pair = signed_up_and_in(&a, "a@example.com").await;
    // A session started on A works on B at once (B catches up on a session it has not seen).
    assert_eq!(profile_status(&b, &pair).await, 200);
    let other = log_in(&b, "a@example.com", TUTORIAL_PASSWORD).await;
    assert_eq!(refreshed(&a, &other.refresh).await.sid(), other.sid());
    let response = with_bearer(&a, reqwest::Method::POST, "/logout", &pair).await;
    assert_eq!(response.status(), 204);
    let lag = within_the_lag(async || profile_status(&b, &pair).await == 401).await;
    eprintln!("logout seen on the other instance after {lag:?}");
    assert_eq!(refresh(&b, &pair.refresh).await.status(), 401);
    assert_eq!(profile_status(&b, &other).await, 200, "only that session");

    let third = log_in(&a, "a@example.com", TUTORIAL_PASSWORD).await;
    let response = with_bearer(&b, reqwest::Method::POST, "/logout/all", &third).await;
    assert_eq!(response.status(), 204);
    within_the_lag(async || {
        profile_status(&a, &third).await == 401 && profile_status(&a, &other).await == 401
    })
    .await;
}

// ---- The real binary, restarted ----

/// A session survives the process: kill -9 after a login, a refresh and a logout, start again on
/// the same log, and the live session refreshes and opens /profile while the ended one stays
/// ended. Both stores.
#[actix_web::test]
async fn sessions_survive_a_kill_9_and_a_restart_of_the_binary() {
    use crate::common::service::{Service, embedded_env, login_at, signup_at};
    let data = tempfile::tempdir().expect("temp dir");
    let db = TestDatabase::create().await;
    for env in [embedded_env(data.path()), db.service_env()] {
        let http = reqwest::Client::new();
        let service = Service::start(&env);
        assert_eq!(
            signup_at(
                &http,
                &service.address,
                "restart@example.com",
                TUTORIAL_PASSWORD
            )
            .await,
            201
        );
        let login = |service: &Service| {
            let address = service.address.clone();
            let http = http.clone();
            async move {
                let response =
                    login_at(&http, &address, "restart@example.com", TUTORIAL_PASSWORD).await;
                assert_eq!(response.status(), 200);
                Pair::from_body(&response.json().await.expect("json"))
            }
        };
        let kept = login(&service).await;
        let ended = login(&service).await;
        let post = |service: &Service, path: &str, body: Value| {
            http.post(service.url(path)).json(&body).send()
        };
        let response = post(
            &service,
            "/token/refresh",
            json!({"refresh_token": kept.refresh}),
        )
        .await
        .expect("sent");
        assert_eq!(response.status(), 200);
        let kept = Pair::from_body(&response.json().await.expect("json"));
        let response = http
            .post(service.url("/logout"))
            .bearer_auth(&ended.access)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 204);
        service.kill_9();

        let service = Service::start(&env);
        let profile = |pair: &Pair| {
            http.get(service.url("/profile"))
                .bearer_auth(pair.access.clone())
                .send()
        };
        assert_eq!(profile(&kept).await.expect("sent").status(), 200);
        assert_eq!(profile(&ended).await.expect("sent").status(), 401);
        let response = post(
            &service,
            "/token/refresh",
            json!({"refresh_token": kept.refresh}),
        )
        .await
        .expect("sent");
        assert_eq!(
            response.status(),
            200,
            "the rotated token is the current one"
        );
        let response = post(
            &service,
            "/token/refresh",
            json!({"refresh_token": ended.refresh}),
        )
        .await
        .expect("sent");
        assert_eq!(response.status(), 401);
    }
}
