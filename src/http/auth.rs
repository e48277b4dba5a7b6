//! Who a bearer token belongs to, for every route that takes one: a valid token, for a user the
//! log knows, in a session the log says is live.

use std::sync::Arc;

use super::{AppState, BearerToken, Tokens};
use crate::actors::CatchUp;
use crate::error::ApiError;
use crate::jwt::{Claims, TokenError};
use crate::projection::UserSummary;

/// The caller of a protected route.
pub struct Caller {
    pub user: UserSummary,
    pub claims: Arc<Claims>,
}

/// The caller, if the token verifies and both its user and its session are live. Every step
/// stays on this worker's thread (its own verifier, then the registry's published view); only
/// a key, user or session the view lacks costs a message: the registry catches up first, so a
/// token from another instance's fresh login (or signed by a key another instance just made)
/// works at once, and one whose session ended anywhere fails as soon as this instance has
/// applied that end.
pub async fn authorize(
    token: Result<BearerToken, ApiError>,
    state: &AppState,
    tokens: &Tokens,
) -> Result<Caller, ApiError> {
    let token = token?.into_string();
    // This worker's own verifier, called on this thread: no message, no lock shared with other
    // workers. The borrow ends before any await.
    let verified = tokens.verifier.borrow_mut().verify(&token);
    let claims = match verified {
        Err(TokenError::UnknownKey) => {
            catch_up(state).await?;
            tokens.verifier.borrow_mut().verify(&token)?
        }
        verified => verified?,
    };
    if let Some(user) = live(&claims, state)? {
        return Ok(Caller { user, claims });
    }
    catch_up(state).await?;
    let user = live(&claims, state)?.ok_or(ApiError::InvalidToken)?;
    Ok(Caller { user, claims })
}

/// Waits until the registry has applied everything any instance committed so far.
async fn catch_up(state: &AppState) -> Result<(), ApiError> {
    Ok(state
        .registry
        .send(CatchUp)
        .timeout(state.actor_timeout)
        .await??)
}

/// The token's user, if the view holds them and their session, unexpired, now, and the user
/// still has every role the token carries. A role the view lacks may have been granted on
/// another instance a moment ago: `None` then, so the caller catches up and asks again.
fn live(claims: &Claims, state: &AppState) -> Result<Option<UserSummary>, ApiError> {
    let Some(session) = state.view.session(claims.sid)? else {
        return Ok(None);
    };
    if session.user_id != claims.sub || session.expires_at <= state.clock.now() {
        return Err(ApiError::InvalidToken);
    }
    Ok(state.view.find_user(claims.sub)?.filter(|user| {
        claims
            .roles
            .iter()
            .all(|role| user.roles.binary_search(role).is_ok())
    }))
}
