//! `POST /login`: check a password; 200 with a token once `LoginSucceeded` has committed.
//!
//! Takes JSON, as the tutorial's clients send, or an OAuth2 password grant form (RFC 6749
//! §4.3.2), as Swagger UI's Authorize button sends. Both give the same answers.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header::{CACHE_CONTROL, PRAGMA};
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::json::{self, BodyKind, LimitedBody};
use super::signup::Credentials;
use super::{AppState, Tokens, log_attempt, request_metadata};
use crate::actors::{Authenticate, IssueToken};
use crate::domain::{Email, Password};
use crate::error::{ApiError, ErrorBody};
use crate::jwt::AccessToken;
use crate::projection::UserSummary;

const ACCEPTED: &str = "application/json or application/x-www-form-urlencoded";

/// The form body of `/login`: an OAuth2 resource owner password grant.
#[derive(Deserialize, ToSchema)]
pub(crate) struct PasswordGrant {
    /// `password` if given; any other grant type is refused with 400.
    #[schema(example = "password")]
    grant_type: Option<String>,
    /// The account's email.
    #[schema(format = "email", example = "user@example.com")]
    username: String,
    #[schema(format = Password, example = "mypassword123")]
    password: String,
}

/// `/login`'s credentials, from either body type.
pub struct LoginBody(Credentials);

impl FromRequest for LoginBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let kind = json::body_kind(req);
        let body = LimitedBody::new(req, payload);
        Box::pin(async move {
            match kind {
                BodyKind::Json => json::parse(&body.read().await?).map(LoginBody),
                BodyKind::Form => parse_form(&body.read().await?).map(LoginBody),
                BodyKind::Other => Err(ApiError::UnsupportedMediaType { accepted: ACCEPTED }),
            }
        })
    }
}

/// A form with `username` and `password` (extra fields, such as `scope` or `client_id`, are
/// ignored); missing or repeated fields are 422, like their JSON counterparts.
fn parse_form(body: &[u8]) -> Result<Credentials, ApiError> {
    let grant: PasswordGrant = serde_urlencoded::from_bytes(body)
        .map_err(|error| ApiError::Unprocessable(error.to_string()))?;
    if grant
        .grant_type
        .as_deref()
        .is_some_and(|grant| grant != "password")
    {
        return Err(ApiError::UnsupportedGrantType);
    }
    Ok(Credentials {
        email: grant.username,
        password: grant.password,
    })
}

#[derive(Serialize, ToSchema)]
pub(crate) struct TokenResponse {
    /// A signed JWT (HS256); send it as `Authorization: Bearer <token>`.
    access_token: String,
    #[schema(example = "bearer")]
    token_type: &'static str,
}

/// Logs in: exchanges an email and password for a bearer token.
///
/// Answers 200 once the `LoginSucceeded` event has committed. A wrong password and an unknown
/// email get the same 401.
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
            `grant_type` is not `password`", body = ErrorBody),
        (status = 401, description = "Invalid credentials", body = ErrorBody,
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
    let result = authenticate(body, &req, &state, &tokens).await;
    log_attempt("login", &req, result.as_ref().map(|(user, _)| user.user_id));
    let (_, token) = result?;
    // RFC 6749 §5.1: responses carrying tokens must not be cached.
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .insert_header((PRAGMA, "no-cache"))
        .json(TokenResponse {
            access_token: token.into_string(),
            token_type: "bearer",
        }))
}

async fn authenticate(
    body: LoginBody,
    req: &HttpRequest,
    state: &AppState,
    tokens: &Tokens,
) -> Result<(UserSummary, AccessToken), ApiError> {
    let LoginBody(Credentials { email, password }) = body;
    // An email that could never have been registered, or a password bcrypt cannot compare
    // exactly, cannot match any account: same answer as a wrong password.
    let (Ok(email), Some(password)) = (Email::parse(&email), Password::for_login(password)) else {
        return Err(ApiError::InvalidCredentials);
    };
    let authenticate = Authenticate {
        email,
        password,
        metadata: request_metadata(req),
    };
    let user = state
        .registry
        .send(authenticate)
        .timeout(state.actor_timeout)
        .await??;
    // This worker's own TokenActor, on this thread: no timeout needed (see `profile`).
    let token = tokens.send(IssueToken { user: user.clone() }).await??;
    Ok((user, token))
}
