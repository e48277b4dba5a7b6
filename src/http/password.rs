//! `POST /password`: change the password, knowing the current one. The old password stops
//! working, and every other session of the user ends; this one carries on.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::authorize;
use super::{AppState, BearerToken, JsonBody, Tokens, log_attempt, request_metadata};
use crate::actors::ChangePassword;
use crate::domain::Password;
use crate::error::{ApiError, ErrorBody};

/// The JSON body of `/password`.
#[derive(Deserialize, ToSchema)]
#[serde(expecting = "a JSON object with \"current_password\" and \"new_password\" strings")]
pub(crate) struct PasswordChange {
    /// The password in use now, checked like a login's (and throttled like one).
    #[schema(format = Password, max_length = 72)]
    current_password: String,
    /// Under the sign-up rules: 8 to 72 bytes, not one of the most common passwords.
    #[schema(format = Password, max_length = 72)]
    new_password: String,
}

/// Changes the caller's password.
///
/// Answers 204 once `PasswordChanged` (and a `SessionEnded` for each other session) has
/// committed.
#[utoipa::path(
    post,
    path = "/password",
    tag = "auth",
    security(("bearer" = []), ("oauth2" = [])),
    request_body(content = PasswordChange, content_type = "application/json"),
    responses(
        (status = 204, description = "Changed; every other session has ended"),
        (status = 400, description = "The body is not well-formed JSON", body = ErrorBody),
        (status = 401, description = "No valid token, or the current password is wrong",
            body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 408, description = "The body did not arrive within 10 seconds; the \
            connection is closed", body = ErrorBody),
        (status = 413, description = "The body is over 4 KiB", body = ErrorBody),
        (status = 415, description = "The body is not declared as JSON", body = ErrorBody),
        (status = 422, description = "A field is missing or mistyped, or the new password \
            breaks the sign-up rules", body = ErrorBody),
        (status = 429, description = "Too many failed checks of this account's password from \
            this address", body = ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, description = "The event log is unreachable; retry later", body = ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    )
)]
pub async fn change(
    token: Result<BearerToken, ApiError>,
    body: JsonBody<PasswordChange>,
    req: HttpRequest,
    state: web::Data<AppState>,
    tokens: Tokens,
) -> Result<HttpResponse, ApiError> {
    let result = async {
        let caller = authorize(token, &state, &tokens).await?;
        let PasswordChange {
            current_password,
            new_password,
        } = body.into_inner();
        let new_password = Password::parse(new_password)
            .map_err(|e| ApiError::Unprocessable(format!("new_password: {e}")))?;
        // One bcrypt cannot compare exactly can match no password: a wrong one.
        let current_password =
            Password::for_login(current_password).ok_or(ApiError::InvalidCredentials)?;
        let change = ChangePassword {
            user_id: caller.user.user_id,
            keep: Some(caller.claims.sid),
            current_password,
            new_password,
            metadata: request_metadata(&req),
        };
        state
            .registry
            .send(change)
            .timeout(state.actor_timeout)
            .await??;
        Ok(caller.user.user_id)
    }
    .await;
    log_attempt("password_change", &req, result.as_ref().copied());
    result?;
    Ok(HttpResponse::NoContent().finish())
}
