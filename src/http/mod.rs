//! The REST API: routes, shared state, and the extractors that turn requests into domain types.
//!
//! Handlers stay thin: parse, send one message per actor, shape the reply. One file per endpoint.

mod account;
mod admin;
mod auth;
mod bearer;
pub mod client;
mod connections;
mod health;
mod json;
mod login;
mod observe;
mod openapi;
mod password;
mod profile;
mod refresh;
mod require;
mod root;
mod sessions;
mod signup;
mod wellknown;

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::http::header::USER_AGENT;
use actix_web::{HttpRequest, HttpResponse, Resource, web};

use crate::actors::{RegistryView, TokenActor, UserRegistry};
use crate::domain::UserId;
use crate::error::ApiError;
use crate::events::{EventMetadata, EventStore};
use crate::hashing::PasswordHasher;
use crate::signing::TokenVerifier;

pub use auth::Caller;
pub use bearer::BearerToken;
pub use connections::{ConnectionCounts, ConnectionLimit};
pub use json::{JsonBody, MAX_BODY_BYTES};
pub use observe::{Observe, REQUEST_ID};
pub use openapi::{ApiDoc, DOCS_PATH, SPEC_PATH};
pub use require::{Admin, RequireRole, RoleName};
pub use wellknown::{DISCOVERY_PATH, Discovery, JWKS_PATH, LOG_KEYS_PATH};

/// What every handler shares. Built once in `Application::build`, before the workers start.
pub struct AppState {
    /// For readiness probes; everything else goes through the registry.
    pub store: Arc<dyn EventStore>,
    /// Commands (sign-up, login) and readiness.
    pub registry: Addr<UserRegistry>,
    /// Queries (who a token's user is), answered on the worker's own thread.
    pub view: RegistryView,
    pub hasher: PasswordHasher,
    /// Longest a handler waits for an actor before answering 503.
    pub actor_timeout: Duration,
    /// The registry's clock, for checking a session's absolute expiry on a request.
    pub clock: crate::clock::Clock,
    /// Session lifetimes, for the session list's expiry times.
    pub sessions: crate::sessions::SessionPolicy,
    /// The keys tokens are signed and checked with, as built from the log: the JWKS, and
    /// readiness.
    pub keychain: Arc<crate::signing::Keychain>,
    /// The discovery document.
    pub discovery: Discovery,
}

/// This worker's token tools, made on the worker's own thread (see [`crate::startup`]): its
/// [`TokenActor`] (issuing access tokens, refresh tokens), a message to the same thread; and its
/// own [`TokenVerifier`] for bearer tokens, called directly: the hot path sends no message.
pub struct WorkerTokens {
    pub actor: Addr<TokenActor>,
    /// Only this worker's thread uses it, one request at a time between awaits.
    pub verifier: std::cell::RefCell<TokenVerifier>,
}

pub type Tokens = web::Data<WorkerTokens>;

/// Mounts every route, the API document and Swagger UI, and the JSON 404/405 replies.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Routes are matched in this order: the most frequent first.
    cfg.service(endpoint("/profile", "GET").route(web::get().to(profile::profile)))
        .service(endpoint("/health/live", "GET").route(web::get().to(health::live)))
        .service(endpoint("/login", "POST").route(web::post().to(login::login)))
        .service(endpoint("/token/refresh", "POST").route(web::post().to(refresh::refresh)))
        .service(endpoint("/signup", "POST").route(web::post().to(signup::signup)))
        .service(endpoint("/logout", "POST").route(web::post().to(sessions::logout)))
        .service(endpoint("/logout/all", "POST").route(web::post().to(sessions::logout_all)))
        .service(endpoint("/sessions", "GET").route(web::get().to(sessions::list)))
        .service(endpoint("/sessions/{id}", "DELETE").route(web::delete().to(sessions::revoke)))
        .service(endpoint("/password", "POST").route(web::post().to(password::change)))
        .service(endpoint("/admin/users", "GET").route(web::get().to(admin::list_users)))
        .service(endpoint("/account", "DELETE").route(web::delete().to(account::erase)))
        .service(
            endpoint("/admin/users/{id}", "GET, DELETE")
                .route(web::get().to(admin::user_detail))
                .route(web::delete().to(admin::erase_user)),
        )
        .service(
            endpoint("/admin/users/{id}/events", "GET").route(web::get().to(admin::user_events)),
        )
        .service(
            endpoint("/admin/users/{id}/roles/{role}", "PUT, DELETE")
                .route(web::put().to(admin::grant_role))
                .route(web::delete().to(admin::revoke_role)),
        )
        .service(
            endpoint("/admin/users/{id}/disable", "POST").route(web::post().to(admin::disable)),
        )
        .service(endpoint("/admin/users/{id}/enable", "POST").route(web::post().to(admin::enable)))
        .service(endpoint("/admin/users/{id}/unlock", "POST").route(web::post().to(admin::unlock)))
        .service(endpoint("/", "GET").route(web::get().to(root::root)))
        .service(endpoint("/health/ready", "GET").route(web::get().to(health::ready)))
        .service(endpoint(JWKS_PATH, "GET").route(web::get().to(wellknown::jwks)))
        .service(endpoint(LOG_KEYS_PATH, "GET").route(web::get().to(wellknown::log_keys)))
        .service(
            endpoint(DISCOVERY_PATH, "GET").route(web::get().to(wellknown::openid_configuration)),
        )
        .service(endpoint("/metrics", "GET").route(web::get().to(health::metrics)))
        .service(openapi::swagger_ui())
        .service(openapi::docs_redirect())
        .default_service(web::route().to(not_found));
}

/// A resource whose other methods get a JSON 405 with an `Allow` header. Its name is its path:
/// the metrics' `route` label.
pub(crate) fn endpoint(path: &str, allow: &'static str) -> Resource {
    web::resource(path).name(path).default_service(
        web::route().to(move || async move {
            Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow })
        }),
    )
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// Logs one authentication attempt (sign-up, login, or a token presented to a protected route)
/// in one shape: the action, its outcome, the user when known, and the client address
/// (ASVS V16.3.1). The line's timestamp is UTC; the request id is in the enclosing span.
/// Successful token checks are logged at debug, everything else at info.
fn log_attempt(action: &'static str, req: &HttpRequest, outcome: Result<UserId, &ApiError>) {
    let client = observe::Client(client::client_address(req));
    let (outcome, user_id) = match outcome {
        Ok(user_id) => ("succeeded", Some(tracing::field::display(user_id))),
        Err(error) => (error.outcome(), None),
    };
    macro_rules! attempt {
        ($level:ident) => {
            tracing::$level!(action, outcome, user_id, client = %client, "authentication attempt")
        };
    }
    if action == "token" && user_id.is_some() {
        attempt!(debug);
    } else {
        attempt!(info);
    }
}

/// Where a request came from, for the event's metadata: the client address (see [`client`])
/// and the user agent.
fn request_metadata(req: &HttpRequest) -> EventMetadata {
    let user_agent = req.headers().get(USER_AGENT).and_then(|v| v.to_str().ok());
    EventMetadata::new(client::client_address(req), user_agent)
}
