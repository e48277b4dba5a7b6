//! `POST /signup`: create an account; 201 once `UserRegistered` has committed.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::{AppState, JsonBody, request_metadata};
use crate::actors::Register;
use crate::domain::{Email, Password, UserId};
use crate::error::ApiError;

/// The body of `/signup` and `/login`.
#[derive(Deserialize)]
#[serde(expecting = "a JSON object with \"email\" and \"password\" strings")]
pub struct Credentials {
    pub email: String,
    pub password: String,
}

#[derive(Serialize)]
struct SignupResponse {
    id: UserId,
    email: Email,
}

pub async fn signup(
    body: JsonBody<Credentials>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Credentials { email, password } = body.into_inner();
    let email = Email::parse(&email).map_err(|e| ApiError::Unprocessable(format!("email: {e}")))?;
    let password =
        Password::parse(password).map_err(|e| ApiError::Unprocessable(format!("password: {e}")))?;
    let password_hash = state.hasher.hash(password).await?;
    let register = Register {
        email,
        password_hash,
        metadata: request_metadata(&req),
    };
    let user = state
        .registry
        .send(register)
        .timeout(state.actor_timeout)
        .await??;
    tracing::info!(user_id = %user.user_id, "user registered");
    Ok(HttpResponse::Created().json(SignupResponse {
        id: user.user_id,
        email: user.email,
    }))
}
