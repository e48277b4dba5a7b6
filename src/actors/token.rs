//! TokenActor: issues and verifies access tokens, over the pure [`JwtKeys`].
//!
//! An ordinary actor, cheap to start: [`crate::startup::Application`] starts one on each HTTP
//! worker's own arbiter, on purpose, so a request's token check is a message to an actor on the
//! same thread (no cross-thread hop, no lock), and one more on the main arbiter for callers that
//! drive the actors directly ([`crate::startup::Application::tokens`]). All of them share one
//! set of keys.

use std::sync::Arc;

use actix::prelude::*;
use chrono::Utc;

use crate::jwt::{AccessToken, Claims, JwtKeys, TokenError, VerifiedTokens};
use crate::projection::UserSummary;

/// Signs a token for a user the registry has just authenticated.
#[derive(Message)]
#[rtype(result = "Result<AccessToken, TokenError>")]
pub struct IssueToken {
    pub user: UserSummary,
}

/// Verifies a bearer token and returns its claims (shared: a token presented again is answered
/// from this actor's cache of verified tokens, without a copy).
#[derive(Message)]
#[rtype(result = "Result<Arc<Claims>, TokenError>")]
pub struct VerifyToken {
    pub token: String,
}

/// Tokens each TokenActor remembers as verified (a few hundred bytes each).
pub const VERIFIED_TOKENS: usize = 4096;

pub struct TokenActor {
    keys: Arc<JwtKeys>,
    /// This actor's own, so no lock is shared between workers.
    verified: VerifiedTokens,
}

impl TokenActor {
    pub fn new(keys: Arc<JwtKeys>) -> Self {
        Self {
            keys,
            verified: VerifiedTokens::new(VERIFIED_TOKENS),
        }
    }
}

impl Actor for TokenActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // One per HTTP worker: a burst of requests on that worker queues here rather than
        // waiting for room in actix's default 16-message mailbox.
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<IssueToken> for TokenActor {
    type Result = Result<AccessToken, TokenError>;

    fn handle(&mut self, msg: IssueToken, _ctx: &mut Self::Context) -> Self::Result {
        self.keys.issue(&msg.user, Utc::now())
    }
}

impl Handler<VerifyToken> for TokenActor {
    type Result = Result<Arc<Claims>, TokenError>;

    fn handle(&mut self, msg: VerifyToken, _ctx: &mut Self::Context) -> Self::Result {
        let now = Utc::now().timestamp();
        if let Some(claims) = self.verified.get(&msg.token, now) {
            return Ok(claims);
        }
        let claims = Arc::new(self.keys.verify(&msg.token)?);
        self.verified.insert(&msg.token, Arc::clone(&claims), now);
        Ok(claims)
    }
}
