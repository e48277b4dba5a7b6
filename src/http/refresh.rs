//! `POST /token/refresh`: spend a refresh token for a new access token and a new refresh token
//! (RFC 6749 §6). The rotation rule, reuse detection and grace are in [`crate::sessions`].

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use serde::Deserialize;
use utoipa::ToSchema;

use super::json::{self, BodyKind, LimitedBody};
use super::login::TokenResponse;
use super::{AppState, Tokens, client, log_attempt};
use crate::actors::{
    IssueToken, MintRefresh, OpenSealed, ReadRefresh, Refresh, RejectRefresh, Successor,
};
use crate::error::{ApiError, ErrorBody};
use crate::sessions::seal;

/// The JSON body of `/token/refresh`.
#[derive(Deserialize, ToSchema)]
#[serde(expecting = "a JSON object with a \"refresh_token\" string")]
pub(crate) struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    refresh_token: String,
}

/// The form body of `/token/refresh`: RFC 6749 §6.
#[derive(Deserialize, ToSchema)]
pub(crate) struct RefreshGrant {
    /// `refresh_token` if given; any other grant type is refused with 400.
    #[schema(example = "refresh_token")]
    grant_type: Option<String>,
    refresh_token: String,
}

/// The refresh token from a form (here, or `/login`'s with `grant_type=refresh_token`).
pub(crate) fn form(body: &[u8]) -> Result<String, ApiError> {
    let grant: RefreshGrant = serde_urlencoded::from_bytes(body)
        .map_err(|error| ApiError::Unprocessable(error.to_string()))?;
    if grant
        .grant_type
        .as_deref()
        .is_some_and(|grant| grant != "refresh_token")
    {
        return Err(ApiError::UnsupportedGrantType);
    }
    Ok(grant.refresh_token)
}

/// The refresh token, from either body type.
pub struct RefreshBody(String);

impl FromRequest for RefreshBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let kind = json::body_kind(req);
        let body = LimitedBody::new(req, payload);
        Box::pin(async move {
            match kind {
                BodyKind::Json => json::parse::<RefreshRequest>(&body.read().await?)
                    .map(|request| RefreshBody(request.refresh_token)),
                BodyKind::Form => form(&body.read().await?).map(RefreshBody),
                BodyKind::Other => Err(ApiError::UnsupportedMediaType {
                    accepted: "application/json or application/x-www-form-urlencoded",
                }),
            }
        })
    }
}

/// Refreshes a session: spends the refresh token, returns a new access token and a new refresh
/// token.
///
/// The token presented is spent. Presenting a spent one again more than the grace (10 s by
/// default) after it was spent ends the whole session, access tokens included; within the
/// grace, the second caller gets the same new refresh token as the first.
#[utoipa::path(
    post,
    path = "/token/refresh",
    tag = "auth",
    request_body(content(
        (RefreshRequest = "application/json"),
        (RefreshGrant = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "A new access token and refresh token", body = TokenResponse),
        (status = 400, description = "The body is not well-formed JSON, or the form's \
            `grant_type` is not `refresh_token`", body = ErrorBody),
        (status = 401, description = "`Invalid refresh token`: unknown, expired, revoked or \
            spent", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 408, description = "The body did not arrive within 10 seconds; the \
            connection is closed", body = ErrorBody),
        (status = 413, description = "The body is over 4 KiB", body = ErrorBody),
        (status = 415, description = "The body is neither JSON nor a form", body = ErrorBody),
        (status = 422, description = "A field is missing or mistyped", body = ErrorBody),
        (status = 429, description = "Too many failed refreshes from this address",
            body = ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, description = "The event log is unreachable; retry later", body = ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    )
)]
pub async fn refresh(
    body: RefreshBody,
    req: HttpRequest,
    state: web::Data<AppState>,
    tokens: Tokens,
) -> Result<HttpResponse, ApiError> {
    answer(body.0, &req, &state, &tokens).await
}

/// A refresh, from this route or from `/login`'s `grant_type=refresh_token`.
pub(crate) async fn answer(
    raw: String,
    req: &HttpRequest,
    state: &AppState,
    tokens: &Tokens,
) -> Result<HttpResponse, ApiError> {
    let result = rotate(raw, req, state, tokens).await;
    log_attempt("refresh", req, result.as_ref().map(|(user, _)| *user));
    Ok(result?.1)
}

async fn rotate(
    raw: String,
    req: &HttpRequest,
    state: &AppState,
    tokens: &Tokens,
) -> Result<(crate::domain::UserId, HttpResponse), ApiError> {
    let client = client::client_address(req);
    // This worker's own TokenActor, on this thread: no timeout needed (see `auth`).
    let Some(presented) = tokens.actor.send(ReadRefresh { token: raw }).await? else {
        // Not one of ours: counted against the address like any other failed refresh.
        return Err(state
            .registry
            .send(RejectRefresh { client })
            .timeout(state.actor_timeout)
            .await?
            .into());
    };
    let successor = tokens
        .actor
        .send(MintRefresh {
            session: presented.session,
            generation: presented.generation.wrapping_add(1),
        })
        .await??;
    let sealed = seal(&successor.token, &presented);
    let refreshed = state
        .registry
        .send(Refresh {
            presented: presented.clone(),
            successor: successor.hash,
            sealed,
            client,
        })
        .timeout(state.actor_timeout)
        .await??;
    let refresh = match refreshed.successor {
        Successor::Minted => successor.token,
        Successor::Sealed(sealed) => tokens
            .actor
            .send(OpenSealed { sealed, presented })
            .await?
            .ok_or(ApiError::InvalidRefreshToken)?,
    };
    let access = tokens
        .actor
        .send(IssueToken {
            user: refreshed.user.clone(),
            session: refreshed.session,
            not_after: refreshed.expires_at,
        })
        .await??;
    let now = state.clock.now().timestamp();
    Ok((
        refreshed.user.user_id,
        TokenResponse::reply(access, refresh, now),
    ))
}
