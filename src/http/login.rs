//! `POST /login`: check a password; 200 with a token once `LoginSucceeded` has committed.

use actix_web::http::header::{CACHE_CONTROL, PRAGMA};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::signup::Credentials;
use super::{AppState, JsonBody, request_metadata};
use crate::actors::{Authenticate, IssueToken};
use crate::domain::{Email, Password};
use crate::error::ApiError;

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
}

pub async fn login(
    body: JsonBody<Credentials>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Credentials { email, password } = body.into_inner();
    // An email that could never have been registered, or a password bcrypt cannot compare
    // exactly, cannot match any account: same answer as a wrong password.
    let (Ok(email), Some(password)) = (Email::parse(&email), Password::for_login(password)) else {
        tracing::info!(outcome = "invalid_credentials", "login failed");
        return Err(ApiError::InvalidCredentials);
    };
    let authenticate = Authenticate {
        email,
        password,
        metadata: request_metadata(&req),
    };
    let user = match state
        .registry
        .send(authenticate)
        .timeout(state.actor_timeout)
        .await?
    {
        Ok(user) => user,
        Err(error) => {
            tracing::info!(outcome = %error, "login failed");
            return Err(error.into());
        }
    };
    let token = state
        .tokens
        .send(IssueToken { user: user.clone() })
        .timeout(state.actor_timeout)
        .await??;
    tracing::info!(user_id = %user.user_id, "login succeeded");
    // RFC 6749 §5.1: responses carrying tokens must not be cached.
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .insert_header((PRAGMA, "no-cache"))
        .json(TokenResponse {
            access_token: token.into_string(),
            token_type: "bearer",
        }))
}
