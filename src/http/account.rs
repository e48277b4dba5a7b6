//! `DELETE /account`: the caller erases their own account (GDPR Art. 17), proving it with the
//! current password as well as the token. Their data key is destroyed with the `UserErased`
//! append, every session ends, and their email may sign up again as a new user.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::authorize;
use super::{AppState, BearerToken, JsonBody, Tokens, log_attempt, request_metadata};
use crate::actors::EraseAccount;
use crate::domain::Password;
use crate::error::{ApiError, ErrorBody};

/// The JSON body of `DELETE /account`.
#[derive(Deserialize, ToSchema)]
#[serde(expecting = "a JSON object with a \"password\" string")]
pub(crate) struct AccountErasure {
    /// The password in use now, checked like a login's (and throttled like one): a stolen
    /// access token alone cannot erase an account.
    #[schema(format = Password, max_length = 72)]
    password: String,
}

/// Erases the caller's account.
///
/// Answers 204 once `UserErased` (after a `SessionEnded` for each session) has committed and
/// the user's data key is destroyed: their email, password hashes, addresses and user agents
/// in the log can no longer be read by anyone, and the email is free to sign up again.
#[utoipa::path(
    delete,
    path = "/account",
    tag = "auth",
    security(("bearer" = []), ("oauth2" = [])),
    request_body(content = AccountErasure, content_type = "application/json"),
    responses(
        (status = 204, description = "Erased; every session has ended"),
        (status = 400, description = "The body is not well-formed JSON", body = ErrorBody),
        (status = 401, description = "No valid token, or the password is wrong",
            body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 408, description = "The body did not arrive within 10 seconds; the \
            connection is closed", body = ErrorBody),
        (status = 409, description = "The caller is the last enabled admin: grant `admin` to \
            someone else first", body = ErrorBody),
        (status = 413, description = "The body is over 4 KiB", body = ErrorBody),
        (status = 415, description = "The body is not declared as JSON", body = ErrorBody),
        (status = 422, description = "The password field is missing or mistyped",
            body = ErrorBody),
        (status = 429, description = "Too many failed checks of this account's password from \
            this address", body = ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, description = "The event log is unreachable; retry later", body = ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    )
)]
pub async fn erase(
    token: Result<BearerToken, ApiError>,
    body: JsonBody<AccountErasure>,
    req: HttpRequest,
    state: web::Data<AppState>,
    tokens: Tokens,
) -> Result<HttpResponse, ApiError> {
    let result = async {
        let caller = authorize(token, &state, &tokens).await?;
        // One bcrypt cannot compare exactly can match no password: a wrong one.
        let password =
            Password::for_login(body.into_inner().password).ok_or(ApiError::InvalidCredentials)?;
        let erase = EraseAccount {
            user_id: caller.user.user_id,
            password,
            metadata: request_metadata(&req),
        };
        state
            .registry
            .send(erase)
            .timeout(state.actor_timeout)
            .await??;
        Ok(caller.user.user_id)
    }
    .await;
    log_attempt("erase_account", &req, result.as_ref().copied());
    result?;
    Ok(HttpResponse::NoContent().finish())
}
