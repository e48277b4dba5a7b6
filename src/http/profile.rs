//! `GET /profile`: the protected route; needs a valid token in a live session of a user the log
//! knows.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::authorize;
use super::{AppState, BearerToken, Tokens, log_attempt};
use crate::domain::{Email, Role, UserId};
use crate::error::{ApiError, ErrorBody};

#[derive(Serialize, ToSchema)]
pub(crate) struct ProfileResponse {
    #[schema(example = "Access granted")]
    message: &'static str,
    #[schema(value_type = uuid::Uuid)]
    user_id: UserId,
    #[schema(value_type = String, format = "email", example = "user@example.com")]
    email: Email,
    /// The caller's roles now, sorted (`admin` is built in).
    #[schema(value_type = Vec<String>, example = json!(["admin"]))]
    roles: Box<[Role]>,
}

/// The protected route: who the bearer token belongs to.
///
/// Needs `Authorization: Bearer <token>` from `/login` or `/token/refresh`, whose session has
/// not ended (logout, revocation, a password change elsewhere) or expired.
#[utoipa::path(
    get,
    path = "/profile",
    tag = "auth",
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The token is valid", body = ProfileResponse),
        (status = 401, description = "`Not authenticated` without a bearer token; \
            `Invalid or expired token` otherwise, including a token whose session has ended",
            body = ErrorBody,
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
    let result = authorize(token, &state, &tokens).await;
    log_attempt(
        "token",
        &req,
        result.as_ref().map(|caller| caller.user.user_id),
    );
    let user = result?.user;
    Ok(HttpResponse::Ok().json(ProfileResponse {
        message: "Access granted",
        user_id: user.user_id,
        email: user.email,
        roles: user.roles,
    }))
}
