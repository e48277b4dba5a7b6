//! `POST /logout`, `POST /logout/all`, `GET /sessions`, `DELETE /sessions/{id}`: a user's own
//! sessions. Ending one appends `SessionEnded`; its access and refresh tokens stop working as
//! soon as an instance has applied it (at once on this one).

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::{Caller, authorize};
use super::{AppState, BearerToken, Tokens, log_attempt, request_metadata};
use crate::actors::EndSessions;
use crate::decide::SessionScope;
use crate::domain::SessionId;
use crate::error::{ApiError, ErrorBody};
use crate::events::EndReason;

/// One of the caller's live sessions.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionView {
    #[schema(value_type = uuid::Uuid)]
    id: SessionId,
    /// When the login that started it committed.
    #[schema(value_type = String, format = DateTime)]
    created_at: DateTime<Utc>,
    /// When its refresh token was last used (the login, or the last refresh).
    #[schema(value_type = String, format = DateTime)]
    last_used_at: DateTime<Utc>,
    /// When it ends at the latest: the earlier of its absolute end and its idle timeout.
    #[schema(value_type = String, format = DateTime)]
    expires_at: DateTime<Utc>,
    /// The address the login came from.
    #[schema(value_type = Option<String>, example = "198.51.100.7")]
    client_ip: Option<String>,
    user_agent: Option<String>,
    /// Whether this is the session of the token that asked.
    current: bool,
}

/// Authorizes the caller, ends the sessions `choose` picks for it, and logs the attempt as
/// `action`: what `/logout`, `/logout/all` and `DELETE /sessions/{id}` share. 204 once the
/// `SessionEnded` events have committed and been applied here.
async fn end_sessions(
    action: &'static str,
    token: Result<BearerToken, ApiError>,
    req: &HttpRequest,
    state: &AppState,
    tokens: &Tokens,
    reason: EndReason,
    choose: impl FnOnce(&Caller) -> Result<SessionScope, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let result = async {
        let caller = authorize(token, state, tokens).await?;
        let end = EndSessions {
            user_id: caller.user.user_id,
            scope: choose(&caller)?,
            reason,
            metadata: request_metadata(req),
        };
        state
            .registry
            .send(end)
            .timeout(state.actor_timeout)
            .await??;
        Ok(caller.user.user_id)
    }
    .await;
    log_attempt(action, req, result.as_ref().copied());
    result?;
    Ok(HttpResponse::NoContent().finish())
}

/// Logs out: ends the session of this access token.
///
/// Its access tokens and its refresh token stop working at once on this instance, and on the
/// others once they have applied the `SessionEnded` event (milliseconds; see the README).
#[utoipa::path(
    post,
    path = "/logout",
    tag = "auth",
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "The session has ended"),
        (status = 401, description = "No valid token, or its session has already ended",
            body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 503, description = "The event log is unreachable; retry later", body = ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    )
)]
pub async fn logout(
    token: Result<BearerToken, ApiError>,
    req: HttpRequest,
    state: web::Data<AppState>,
    tokens: Tokens,
) -> Result<HttpResponse, ApiError> {
    end_sessions(
        "logout",
        token,
        &req,
        &state,
        &tokens,
        EndReason::Logout,
        |caller| Ok(SessionScope::One(caller.claims.sid)),
    )
    .await
}

/// Logs out everywhere: ends every session of the user, this one included.
#[utoipa::path(
    post,
    path = "/logout/all",
    tag = "auth",
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "Every session of the user has ended"),
        (status = 401, description = "No valid token, or its session has already ended",
            body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 503, description = "The event log is unreachable; retry later", body = ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    )
)]
pub async fn logout_all(
    token: Result<BearerToken, ApiError>,
    req: HttpRequest,
    state: web::Data<AppState>,
    tokens: Tokens,
) -> Result<HttpResponse, ApiError> {
    let reason = EndReason::LogoutAll;
    end_sessions("logout_all", token, &req, &state, &tokens, reason, |_| {
        Ok(SessionScope::All)
    })
    .await
}

/// Lists the caller's live sessions, oldest first.
#[utoipa::path(
    get,
    path = "/sessions",
    tag = "auth",
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The caller's live sessions", body = Vec<SessionView>),
        (status = 401, description = "No valid token, or its session has ended",
            body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 503, description = "The service cannot answer now; retry later",
            body = ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait"))),
    )
)]
pub async fn list(
    token: Result<BearerToken, ApiError>,
    state: web::Data<AppState>,
    tokens: Tokens,
) -> Result<HttpResponse, ApiError> {
    let caller = authorize(token, &state, &tokens).await?;
    let now = state.clock.now();
    let live: Vec<_> = state
        .view
        .sessions_of(caller.user.user_id)
        .into_iter()
        .filter(|(_, entry)| entry.expires_at > now)
        .collect();
    // When each was last used lives beside the log (a refresh appends nothing).
    let used: std::collections::HashMap<SessionId, DateTime<Utc>> = state
        .store
        .last_used(live.iter().map(|(id, _)| *id).collect())
        .await
        .map_err(|error| ApiError::Unavailable(error.into()))?
        .into_iter()
        .collect();
    let sessions: Vec<SessionView> = live
        .into_iter()
        .filter_map(|(id, entry)| {
            let last_used_at = *used.get(&id)?;
            let expires_at = entry.expires_at.min(state.sessions.idle_at(last_used_at));
            (expires_at > now).then(|| SessionView {
                id,
                created_at: entry.started_at,
                last_used_at,
                expires_at,
                client_ip: entry.client_ip.map(|ip| ip.to_string()),
                user_agent: entry.user_agent.map(String::from),
                current: id == caller.claims.sid,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(sessions))
}

/// Ends one of the caller's sessions (another device's, or this one).
#[utoipa::path(
    delete,
    path = "/sessions/{id}",
    tag = "auth",
    security(("bearer" = []), ("oauth2" = [])),
    params(("id" = String, Path, description = "A session id from `GET /sessions`")),
    responses(
        (status = 204, description = "The session has ended"),
        (status = 401, description = "No valid token, or its session has ended",
            body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "Not one of the caller's live sessions", body = ErrorBody),
        (status = 503, description = "The event log is unreachable; retry later", body = ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    )
)]
pub async fn revoke(
    token: Result<BearerToken, ApiError>,
    id: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
    tokens: Tokens,
) -> Result<HttpResponse, ApiError> {
    let reason = EndReason::Revoked;
    end_sessions(
        "revoke_session",
        token,
        &req,
        &state,
        &tokens,
        reason,
        |caller| {
            let session = uuid::Uuid::parse_str(&id)
                .map(SessionId::from)
                .map_err(|_| ApiError::SessionNotFound)?;
            match state.view.session(session)? {
                Some(life) if life.user_id == caller.user.user_id => Ok(SessionScope::One(session)),
                _ => Err(ApiError::SessionNotFound),
            }
        },
    )
    .await
}
