//! `POST /signup`: create an account; 201 once `UserRegistered` has committed.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AppState, JsonBody, log_attempt, request_metadata};
use crate::actors::{AdmitSignup, Register, RegistryError};
use crate::domain::{Email, Password, UserId};
use crate::error::{ApiError, ErrorBody};
use crate::projection::UserSummary;

/// The JSON body of `/signup` and `/login`.
#[derive(Deserialize, ToSchema)]
#[serde(expecting = "a JSON object with \"email\" and \"password\" strings")]
pub struct Credentials {
    /// Trimmed and lowercased before use; at most 254 bytes, with a dotted domain.
    #[schema(format = "email", example = "user@example.com", max_length = 254)]
    pub email: String,
    /// 8 to 72 bytes of UTF-8 at sign-up; bcrypt's limit is in bytes. JSON Schema counts
    /// characters, so `maxLength` is the only bound it can state exactly (more than 72
    /// characters is always more than 72 bytes). Never trimmed.
    #[schema(format = Password, example = "mypassword123", max_length = 72)]
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct SignupResponse {
    /// The new user's id, also the id of their event stream.
    #[schema(value_type = uuid::Uuid)]
    id: UserId,
    /// The email as stored: trimmed and lowercased.
    #[schema(value_type = String, format = "email", example = "user@example.com")]
    email: Email,
}

/// Creates an account.
///
/// Answers 201 once the `UserRegistered` event has committed.
#[utoipa::path(
    post,
    path = "/signup",
    tag = "auth",
    request_body(content = Credentials, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered", body = SignupResponse),
        (status = 400, description = "The body is not well-formed JSON", body = ErrorBody),
        (status = 409, description = "User already exists", body = ErrorBody),
        (status = 408, description = "The body did not arrive within 10 seconds; the \
            connection is closed", body = ErrorBody),
        (status = 413, description = "The body is over 4 KiB", body = ErrorBody),
        (status = 415, description = "The body is not declared as JSON", body = ErrorBody),
        (status = 422, description = "A field is missing or mistyped, or the email or password \
            is invalid (including one of the ~100,000 most common passwords); the detail names \
            the field", body = ErrorBody),
        (status = 429, description = "Too many sign-ups from this address", body = ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, description = "The event log is unreachable; retry later", body = ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    )
)]
pub async fn signup(
    body: JsonBody<Credentials>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let result = register(body.into_inner(), &req, &state).await;
    log_attempt("signup", &req, result.as_ref().map(|user| user.user_id));
    let user = result?;
    Ok(HttpResponse::Created().json(SignupResponse {
        id: user.user_id,
        email: user.email,
    }))
}

async fn register(
    credentials: Credentials,
    req: &HttpRequest,
    state: &AppState,
) -> Result<UserSummary, ApiError> {
    let Credentials { email, password } = credentials;
    let email = Email::parse(&email).map_err(|e| ApiError::Unprocessable(format!("email: {e}")))?;
    let password =
        Password::parse(password).map_err(|e| ApiError::Unprocessable(format!("password: {e}")))?;
    // Counted and refused before bcrypt, so a flood of sign-ups costs no hashing.
    let client = super::client::client_address(req);
    match state
        .registry
        .send(AdmitSignup { client })
        .timeout(state.actor_timeout)
        .await?
    {
        Ok(()) => {}
        Err(RegistryError::Throttled(throttled)) => {
            return Err(ApiError::TooManyRequests {
                retry_after: throttled.retry_after_seconds(),
                what: "sign-ups from this address",
            });
        }
        Err(error) => return Err(error.into()),
    }
    let password_hash = state.hasher.hash(password).await?;
    let register = Register {
        email,
        password_hash,
        metadata: request_metadata(req),
    };
    Ok(state
        .registry
        .send(register)
        .timeout(state.actor_timeout)
        .await??)
}
