//! TokenActor: issues and verifies access tokens, and mints and reads refresh tokens, with the
//! keys the process's [`Keychain`] builds from the log.
//!
//! An ordinary actor, cheap to start: [`crate::startup::Application`] starts one on each HTTP
//! worker's own arbiter, on purpose, so issuing a token is a message to an actor on the same
//! thread (no cross-thread hop, no lock), and one more on the main arbiter for callers that drive
//! the actors directly ([`crate::startup::Application::tokens`]). All of them share one
//! keychain. Checking a bearer token on a request goes one step further: the worker calls its
//! own [`TokenVerifier`] (the same code `VerifyToken` runs here), without a message.

use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::domain::SessionId;
use crate::jwt::{AccessToken, Claims, TokenError};
use crate::projection::UserSummary;
use crate::sessions::{MintedRefresh, PresentedRefresh, RefreshKeys, RefreshToken};
use crate::signing::{Keychain, TokenVerifier};

/// Signs an access token for a user the registry has just authenticated, in `session`, expiring
/// no later than the session does.
#[derive(Message)]
#[rtype(result = "Result<AccessToken, TokenError>")]
pub struct IssueToken {
    pub user: UserSummary,
    pub session: SessionId,
    pub not_after: DateTime<Utc>,
}

/// Verifies a bearer token and returns its claims (shared: a token presented again is answered
/// from this actor's cache of verified tokens, without a copy). Whether its session is live is
/// the caller's next check. [`TokenError::UnknownKey`] may mean the key was added by another
/// instance a moment ago: the caller may catch up with the log and ask again.
#[derive(Message)]
#[rtype(result = "Result<Arc<Claims>, TokenError>")]
pub struct VerifyToken {
    pub token: String,
}

/// A new refresh token for `session` at `generation` (1 for a login's first).
#[derive(Message)]
#[rtype(result = "Result<MintedRefresh, TokenError>")]
pub struct MintRefresh {
    pub session: SessionId,
    pub generation: u32,
}

/// The session and generation of a presented refresh token, if authlog minted it.
#[derive(Message)]
#[rtype(result = "Option<PresentedRefresh>")]
pub struct ReadRefresh {
    pub token: String,
}

/// The successor another refresh of `presented` received, sealed under it in the store.
#[derive(Message)]
#[rtype(result = "Option<RefreshToken>")]
pub struct OpenSealed {
    pub sealed: Vec<u8>,
    pub presented: PresentedRefresh,
}

pub struct TokenActor {
    /// The keys, and the cache of verified tokens: this actor's own.
    verifier: TokenVerifier,
    refresh: RefreshKeys,
}

impl TokenActor {
    pub fn new(keychain: Arc<Keychain>, refresh: RefreshKeys) -> Self {
        Self {
            verifier: TokenVerifier::new(keychain, Clock::system()),
            refresh,
        }
    }

    /// Reads the time from `clock` (a settable one in tests).
    pub fn with_clock(self, clock: Clock) -> Self {
        let keychain = self.verifier.keychain();
        Self {
            verifier: TokenVerifier::new(keychain, clock),
            refresh: self.refresh,
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
        let now = self.verifier.clock().now();
        self.verifier
            .keys()
            .issue(&msg.user, msg.session, msg.not_after, now)
    }
}

impl Handler<VerifyToken> for TokenActor {
    type Result = Result<Arc<Claims>, TokenError>;

    fn handle(&mut self, msg: VerifyToken, _ctx: &mut Self::Context) -> Self::Result {
        self.verifier.verify(&msg.token)
    }
}

impl Handler<MintRefresh> for TokenActor {
    type Result = Result<MintedRefresh, TokenError>;

    fn handle(&mut self, msg: MintRefresh, _ctx: &mut Self::Context) -> Self::Result {
        self.refresh
            .mint(msg.session, msg.generation)
            .map_err(TokenError::Random)
    }
}

impl Handler<ReadRefresh> for TokenActor {
    type Result = Option<PresentedRefresh>;

    fn handle(&mut self, msg: ReadRefresh, _ctx: &mut Self::Context) -> Self::Result {
        self.refresh.read(&msg.token)
    }
}

impl Handler<OpenSealed> for TokenActor {
    type Result = Option<RefreshToken>;

    fn handle(&mut self, msg: OpenSealed, _ctx: &mut Self::Context) -> Self::Result {
        self.refresh.open(&msg.sealed, &msg.presented)
    }
}
