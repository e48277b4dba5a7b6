//! The one error type for HTTP replies: each variant's status is decided here and nowhere else.
//!
//! Bodies are always `{"detail": "..."}`. Causes of 5xx replies are logged with their chain and
//! never sent to the client.

use std::error::Error as StdError;

use actix::MailboxError;
use actix_web::http::StatusCode;
use actix_web::http::header::{ALLOW, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::actors::RegistryError;
use crate::diagnostics::error_chain;
use crate::hashing::HashError;
use crate::jwt::TokenError;

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECONDS: &str = "5";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not well-formed JSON.
    #[error("{0}")]
    MalformedBody(String),
    /// 413: the body is larger than the endpoint accepts.
    #[error("Request body is too large (at most {limit} bytes)")]
    PayloadTooLarge { limit: usize },
    /// 408: the body did not arrive in time (the connection is closed after the reply).
    #[error("Request body not received within {seconds} seconds")]
    BodyTimeout { seconds: u64 },
    /// 415: the body's declared type is not one the endpoint reads.
    #[error("Content-Type must be {accepted}")]
    UnsupportedMediaType { accepted: &'static str },
    /// 429: throttled; the client may retry after `retry_after` seconds.
    #[error("Too many {what}; retry in {retry_after} seconds")]
    TooManyRequests {
        retry_after: u64,
        what: &'static str,
    },
    /// 503 from the readiness probe, naming what is missing.
    #[error("not ready: {0}")]
    NotReady(String),
    /// 400: an OAuth2 `grant_type` other than `password` (RFC 6749 §5.2 `unsupported_grant_type`).
    #[error("unsupported grant_type: only \"password\" is supported")]
    UnsupportedGrantType,
    /// 422: well-formed JSON whose fields are missing, mistyped or invalid; says which and why.
    #[error("{0}")]
    Unprocessable(String),
    /// 409: the email is already registered.
    #[error("User already exists")]
    UserExists,
    /// 401 at login: unknown email or wrong password, deliberately the same.
    #[error("Invalid credentials")]
    InvalidCredentials,
    /// 401: no bearer token was presented.
    #[error("Not authenticated")]
    NotAuthenticated,
    /// 401: a bearer token was presented but is not valid now (or its user does not exist).
    #[error("Invalid or expired token")]
    InvalidToken,
    /// 401 from a refresh: the refresh token is unknown, expired, revoked or spent.
    #[error("Invalid refresh token")]
    InvalidRefreshToken,
    /// 404: no such session among the caller's.
    #[error("Session not found")]
    SessionNotFound,
    /// 403: a valid token whose user lacks the role the route requires.
    #[error("Forbidden")]
    Forbidden,
    /// 404: no user has this id.
    #[error("User not found")]
    UserNotFound,
    /// 409: the change would leave nobody with the `admin` role.
    #[error("The last admin cannot lose the admin role")]
    LastAdmin,
    /// 404: no such route.
    #[error("Not Found")]
    NotFound,
    /// 405: the route exists but not with this method; `allow` lists the methods it takes.
    #[error("Method Not Allowed")]
    MethodNotAllowed { allow: &'static str },
    /// 503: the event store or an actor could not answer in time. Safe to retry.
    #[error("Service temporarily unavailable, please retry")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync>),
    /// 500: a bug or a broken invariant. The cause is logged, not returned.
    #[error("Internal server error")]
    Internal(#[source] Box<dyn StdError + Send + Sync>),
}

/// Every error reply's body.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"detail": "Invalid credentials"}))]
pub struct ErrorBody {
    /// What went wrong, for a person to read.
    pub detail: String,
}

impl ApiError {
    /// A stable word for logs and metrics: what happened, without the detail text.
    pub fn outcome(&self) -> &'static str {
        match self {
            ApiError::MalformedBody(_)
            | ApiError::PayloadTooLarge { .. }
            | ApiError::BodyTimeout { .. }
            | ApiError::UnsupportedMediaType { .. }
            | ApiError::UnsupportedGrantType
            | ApiError::Unprocessable(_) => "bad_request",
            ApiError::UserExists => "email_taken",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::NotAuthenticated => "no_token",
            ApiError::InvalidToken => "invalid_token",
            ApiError::InvalidRefreshToken => "invalid_refresh_token",
            ApiError::SessionNotFound => "no_session",
            ApiError::UserNotFound => "no_user",
            ApiError::Forbidden => "forbidden",
            ApiError::LastAdmin => "last_admin",
            ApiError::NotFound | ApiError::MethodNotAllowed { .. } => "no_route",
            ApiError::Unavailable(_) | ApiError::NotReady(_) => "unavailable",
            ApiError::TooManyRequests { .. } => "throttled",
            ApiError::Internal(_) => "error",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedBody(_) | ApiError::UnsupportedGrantType => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UserExists | ApiError::LastAdmin => StatusCode::CONFLICT,
            ApiError::InvalidCredentials
            | ApiError::NotAuthenticated
            | ApiError::InvalidToken
            | ApiError::InvalidRefreshToken => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::SessionNotFound | ApiError::UserNotFound => {
                StatusCode::NOT_FOUND
            }
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %error_chain(cause.as_ref()), "answering 503");
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %error_chain(cause.as_ref()), "answering 500");
            }
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        match self {
            // RFC 6750 §3: every 401 names the scheme; §3.1 adds the error code for a bad token.
            ApiError::InvalidToken => {
                response.insert_header((WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#));
            }
            ApiError::InvalidCredentials
            | ApiError::NotAuthenticated
            | ApiError::InvalidRefreshToken => {
                response.insert_header((WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::MethodNotAllowed { allow } => {
                response.insert_header((ALLOW, *allow));
            }
            ApiError::Unavailable(_) | ApiError::NotReady(_) => {
                response.insert_header((RETRY_AFTER, RETRY_AFTER_SECONDS));
            }
            ApiError::TooManyRequests { retry_after, .. } => {
                response.insert_header((RETRY_AFTER, retry_after.to_string()));
            }
            // The rest of the body may never come: do not wait for it on this connection.
            ApiError::BodyTimeout { .. } => {
                response.force_close();
            }
            _ => {}
        }
        response.json(ErrorBody {
            detail: self.to_string(),
        })
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::EmailTaken => ApiError::UserExists,
            RegistryError::InvalidCredentials => ApiError::InvalidCredentials,
            RegistryError::Hashing(cause @ HashError::Busy) => ApiError::Unavailable(cause.into()),
            RegistryError::Hashing(cause) => ApiError::Internal(cause.into()),
            RegistryError::Throttled(throttled) => ApiError::TooManyRequests {
                retry_after: throttled.retry_after_seconds(),
                what: "failed login attempts",
            },
            RegistryError::Busy(throttled) => ApiError::TooManyRequests {
                retry_after: throttled.retry_after_seconds(),
                what: "login attempts in parallel for this account",
            },
            RegistryError::AddressBusy(throttled) => ApiError::TooManyRequests {
                retry_after: throttled.retry_after_seconds(),
                what: "login attempts from this address",
            },
            RegistryError::RefreshThrottled(throttled) => ApiError::TooManyRequests {
                retry_after: throttled.retry_after_seconds(),
                what: "failed refresh attempts",
            },
            RegistryError::InvalidRefreshToken => ApiError::InvalidRefreshToken,
            RegistryError::UnknownUser => ApiError::UserNotFound,
            RegistryError::LastAdmin => ApiError::LastAdmin,
            error @ (RegistryError::Unavailable(_)
            | RegistryError::Contention
            | RegistryError::KeysChanged
            | RegistryError::Stopped
            | RegistryError::Loading) => ApiError::Unavailable(error.into()),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Invalid(_) | TokenError::UnexpectedHeader | TokenError::UnknownKey => {
                ApiError::InvalidToken
            }
            // The log has no usable signing key yet (a new log, before the first is made):
            // waiting fixes it.
            error @ TokenError::NoSigningKey => ApiError::Unavailable(error.into()),
            error @ TokenError::Random(_) => ApiError::Internal(error.into()),
        }
    }
}

/// An actor that is gone or too busy to answer in time.
impl From<MailboxError> for ApiError {
    fn from(error: MailboxError) -> Self {
        ApiError::Unavailable(error.into())
    }
}

impl From<HashError> for ApiError {
    fn from(error: HashError) -> Self {
        match error {
            // Every slot taken and the line full: 503 at once, with Retry-After.
            HashError::Busy => ApiError::Unavailable(error.into()),
            error => ApiError::Internal(error.into()),
        }
    }
}
