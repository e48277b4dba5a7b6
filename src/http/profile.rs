//! `GET /profile`: the protected route; needs a valid token for a user the log knows.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::{AppState, BearerToken, audit};
use crate::actors::{FindUser, VerifyToken};
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
) -> Result<HttpResponse, ApiError> {
    let result = match token {
        Ok(token) => authorize(token, &state).await,
        Err(error) => Err(error),
    };
    audit("token", &req, result.as_ref().map(|user| user.user_id));
    let user = result?;
    Ok(HttpResponse::Ok().json(ProfileResponse {
        message: "Access granted",
        user_id: user.user_id,
        email: user.email,
    }))
}

/// The user a token belongs to, if it is valid and the log knows them.
async fn authorize(token: BearerToken, state: &AppState) -> Result<UserSummary, ApiError> {
    let verify = VerifyToken {
        token: token.into_string(),
    };
    let claims = state
        .tokens
        .send(verify)
        .timeout(state.actor_timeout)
        .await??;
    // A correctly signed token is not enough: its user must exist in the log.
    state
        .registry
        .send(FindUser {
            user_id: claims.sub,
        })
        .timeout(state.actor_timeout)
        .await??
        .ok_or(ApiError::InvalidToken)
}
