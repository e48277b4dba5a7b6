//! `GET /profile`: the protected route; needs a valid token for a user the log knows.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::{AppState, BearerToken, Tokens, log_attempt};
use crate::actors::{CatchUp, VerifyToken};
use crate::domain::{Email, UserId};
use crate::error::{ApiError, ErrorBody};
use crate::projection::UserSummary;

#[derive(Serialize, ToSchema)]
pub(crate) struct ProfileResponse {
    #[schema(example = "Access granted")]
    message: &'static str,
    #[schema(value_type = uuid::Uuid)]
    user_id: UserId,
    #[schema(value_type = String, format = "email", example = "user@example.com")]
    email: Email,
}

/// The protected route: who the bearer token belongs to.
///
/// Needs `Authorization: Bearer <token>` from `/login`, for a user the log knows.
#[utoipa::path(
    get,
    path = "/profile",
    tag = "auth",
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The token is valid", body = ProfileResponse),
        (status = 401, description = "`Not authenticated` without a bearer token; \
            `Invalid or expired token` otherwise", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`, with \
                `error=\"invalid_token\"` for a bad token"))),
        (status = 503, description = "The service cannot answer now; retry later",
            body = ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait"))),
    )
)]
pub async fn profile(
    token: Result<BearerToken, ApiError>,
    req: HttpRequest,
    state: web::Data<AppState>,
    tokens: Tokens,
) -> Result<HttpResponse, ApiError> {
    let result = match token {
        Ok(token) => authorize(token, &state, &tokens).await,
        Err(error) => Err(error),
    };
    log_attempt("token", &req, result.as_ref().map(|user| user.user_id));
    let user = result?;
    Ok(HttpResponse::Ok().json(ProfileResponse {
        message: "Access granted",
        user_id: user.user_id,
        email: user.email,
    }))
}

/// The user a token belongs to, if it is valid and the log knows them. Both steps stay on this
/// worker's thread: its own TokenActor, then the registry's published view. Only a user the view
/// lacks costs a message: the registry catches up first, so a token from another instance's
/// fresh sign-up works at once.
async fn authorize(
    token: BearerToken,
    state: &AppState,
    tokens: &Tokens,
) -> Result<UserSummary, ApiError> {
    let verify = VerifyToken {
        token: token.into_string(),
    };
    // No timeout: this worker's TokenActor runs on this very thread between our polls, so it
    // cannot be slower than this handler, and a timer per request would cost more than the check.
    let claims = tokens.send(verify).await??;
    // A correctly signed token is not enough: its user must exist in the log.
    if let Some(user) = state.view.find_user(claims.sub)? {
        return Ok(user);
    }
    // Perhaps another instance has just registered them: catch up with the log, then decide.
    state
        .registry
        .send(CatchUp)
        .timeout(state.actor_timeout)
        .await??;
    state
        .view
        .find_user(claims.sub)?
        .ok_or(ApiError::InvalidToken)
}
