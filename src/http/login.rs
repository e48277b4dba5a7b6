//! `POST /login`: check a password; 200 with an access token and a refresh token once
//! `LoginSucceeded` and `SessionStarted` have committed.
//!
//! Takes JSON, as the tutorial's clients send, or an OAuth2 password grant form (RFC 6749
//! §4.3.2), as Swagger UI's Authorize button sends. Both give the same answers. The form also
//! takes `grant_type=refresh_token` (RFC 6749 §6), answered as `POST /token/refresh` is.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header::{CACHE_CONTROL, PRAGMA};
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::json::{self, BodyKind, LimitedBody};
use super::refresh;
use super::signup::Credentials;
use super::{AppState, Tokens, log_attempt, request_metadata};
use crate::actors::{Authenticate, IssueToken, MintRefresh, SessionGrant};
use crate::domain::{Email, Password, SessionId};
use crate::error::{ApiError, ErrorBody};
use crate::jwt::AccessToken;
use crate::projection::UserSummary;
use crate::sessions::RefreshToken;

const ACCEPTED: &str = "application/json or application/x-www-form-urlencoded";

/// The form body of `/login`: an OAuth2 resource owner password grant.
#[derive(Deserialize, ToSchema)]
pub(crate) struct PasswordGrant {
    /// `password` if given; `refresh_token` takes the form of `POST /token/refresh` instead
    /// (a `refresh_token` field, no `username` or `password`); any other grant type is refused
    /// with 400.
    #[schema(example = "password")]
    #[allow(dead_code, reason = "documented here, read through `GrantType`")]
    grant_type: Option<String>,
    /// The account's email.
    #[schema(format = "email", example = "user@example.com")]
    username: String,
    #[schema(format = Password, example = "mypassword123")]
    password: String,
}

/// Just the grant type of a form, to choose how to read the rest.
#[derive(Deserialize)]
struct GrantType {
    grant_type: Option<String>,
}

/// `/login`'s body, from either body type.
pub enum LoginBody {
    Password(Credentials),
    Refresh(String),
}

impl FromRequest for LoginBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let kind = json::body_kind(req);
        let body = LimitedBody::new(req, payload);
        Box::pin(async move {
            match kind {
                BodyKind::Json => json::parse(&body.read().await?).map(LoginBody::Password),
                BodyKind::Form => parse_form(&body.read().await?),
                BodyKind::Other => Err(ApiError::UnsupportedMediaType { accepted: ACCEPTED }),
            }
        })
    }
}

/// A form with `username` and `password` (extra fields, such as `scope` or `client_id`, are
/// ignored), or `grant_type=refresh_token` with `refresh_token`; missing or repeated fields are
/// 422, like their JSON counterparts.
fn parse_form(body: &[u8]) -> Result<LoginBody, ApiError> {
    let unprocessable =
        |error: serde_urlencoded::de::Error| ApiError::Unprocessable(error.to_string());
    let grant: GrantType = serde_urlencoded::from_bytes(body).map_err(unprocessable)?;
    match grant.grant_type.as_deref() {
        Some("refresh_token") => refresh::form(body).map(LoginBody::Refresh),
        None | Some("password") => {
            let grant: PasswordGrant = serde_urlencoded::from_bytes(body).map_err(unprocessable)?;
            Ok(LoginBody::Password(Credentials {
                email: grant.username,
                password: grant.password,
            }))
        }
        Some(_) => Err(ApiError::UnsupportedGrantType),
    }
}

/// What a login and a refresh answer (RFC 6749 §5.1).
#[derive(Serialize, ToSchema)]
pub(crate) struct TokenResponse {
    /// A signed JWT (HS256) carrying the session's id as `sid`; send it as
    /// `Authorization: Bearer <token>`.
    access_token: String,
    #[schema(example = "bearer")]
    token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 1800)]
    expires_in: i64,
    /// Opaque; spend it at `POST /token/refresh` for a new pair. Single use.
    refresh_token: String,
}

impl TokenResponse {
    /// The reply, never cached (RFC 6749 §5.1).
    pub(crate) fn reply(access: AccessToken, refresh: RefreshToken, now: i64) -> HttpResponse {
        HttpResponse::Ok()
            .insert_header((CACHE_CONTROL, "no-store"))
            .insert_header((PRAGMA, "no-cache"))
            .json(TokenResponse {
                expires_in: (access.expires_at() - now).max(0),
                access_token: access.into_string(),
                token_type: "bearer",
                refresh_token: refresh.into_string(),
            })
    }
}

/// Logs in: exchanges an email and password for an access token and a refresh token.
///
/// Answers 200 once the `LoginSucceeded` and `SessionStarted` events have committed. A wrong
/// password and an unknown email get the same 401. The form also takes
/// `grant_type=refresh_token&refresh_token=…`, answered as `POST /token/refresh`.
#[utoipa::path(
    post,
    path = "/login",
    tag = "auth",
    request_body(content(
        (Credentials = "application/json"),
        (PasswordGrant = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "A bearer token", body = TokenResponse),
        (status = 400, description = "The body is not well-formed JSON, or the form's \
            `grant_type` is neither `password` nor `refresh_token`", body = ErrorBody),
        (status = 401, description = "Invalid credentials (or, for a refresh, `Invalid refresh \
            token`)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 408, description = "The body did not arrive within 10 seconds; the \
            connection is closed", body = ErrorBody),
        (status = 413, description = "The body is over 4 KiB", body = ErrorBody),
        (status = 415, description = "The body is neither JSON nor a form", body = ErrorBody),
        (status = 422, description = "A field is missing or mistyped", body = ErrorBody),
        (status = 429, description = "Too many failed logins for this account from this \
            address (or from unknown addresses); applies even to the right password",
            body = ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, description = "The event log is unreachable; retry later", body = ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    )
)]
pub async fn login(
    body: LoginBody,
    req: HttpRequest,
    state: web::Data<AppState>,
    tokens: Tokens,
) -> Result<HttpResponse, ApiError> {
    let credentials = match body {
        LoginBody::Password(credentials) => credentials,
        LoginBody::Refresh(token) => return refresh::answer(token, &req, &state, &tokens).await,
    };
    let result = authenticate(credentials, &req, &state, &tokens).await;
    log_attempt(
        "login",
        &req,
        result.as_ref().map(|(user, ..)| user.user_id),
    );
    let (_, access, refresh) = result?;
    Ok(TokenResponse::reply(
        access,
        refresh,
        state.clock.now().timestamp(),
    ))
}

async fn authenticate(
    credentials: Credentials,
    req: &HttpRequest,
    state: &AppState,
    tokens: &Tokens,
) -> Result<(UserSummary, AccessToken, RefreshToken), ApiError> {
    let Credentials { email, password } = credentials;
    // An email that could never have been registered, or a password bcrypt cannot compare
    // exactly, cannot match any account: same answer as a wrong password.
    let (Ok(email), Some(password)) = (Email::parse(&email), Password::for_login(password)) else {
        return Err(ApiError::InvalidCredentials);
    };
    // The session's first refresh token is minted now and spent only if the login succeeds;
    // the registry stores its hash with `SessionStarted`, in one transaction.
    let session = SessionId::new();
    // This worker's own TokenActor, on this thread: no timeout needed (see `auth`).
    let refresh = tokens
        .actor
        .send(MintRefresh {
            session,
            generation: 1,
        })
        .await??;
    let authenticate = Authenticate {
        email,
        password,
        metadata: request_metadata(req),
        session: Some(SessionGrant {
            session_id: session,
            token_hash: refresh.hash,
        }),
    };
    let user = state
        .registry
        .send(authenticate)
        .timeout(state.actor_timeout)
        .await??;
    // Applied before the registry answered, so the view holds it.
    let not_after = state
        .view
        .session(session)?
        .map(|entry| entry.expires_at)
        .ok_or(ApiError::InvalidCredentials)?;
    let access = tokens
        .actor
        .send(IssueToken {
            user: user.clone(),
            session,
            not_after,
        })
        .await??;
    Ok((user, access, refresh.token))
}
