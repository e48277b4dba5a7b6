//! `GET /profile`: the protected route; needs a valid token for a user the log knows.

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::{AppState, BearerToken};
use crate::actors::{FindUser, VerifyToken};
use crate::domain::{Email, UserId};
use crate::error::ApiError;

#[derive(Serialize)]
struct ProfileResponse {
    message: &'static str,
    user_id: UserId,
    email: Email,
}

pub async fn profile(
    token: BearerToken,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let verify = VerifyToken {
        token: token.into_string(),
    };
    let claims = state
        .tokens
        .send(verify)
        .timeout(state.actor_timeout)
        .await??;
    // A correctly signed token is not enough: its user must exist in the log.
    let user = state
        .registry
        .send(FindUser {
            user_id: claims.sub,
        })
        .timeout(state.actor_timeout)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    Ok(HttpResponse::Ok().json(ProfileResponse {
        message: "Access granted",
        user_id: user.user_id,
        email: user.email,
    }))
}
