//! KeyRotator: keeps the log's signing keys on schedule. It makes the first key, publishes the
//! next one a JWKS cache lifetime before it signs, activates it, and retires keys once the
//! tokens they signed have expired.
//!
//! A thin actor. The schedule is pure ([`crate::keyring::KeySet::next_step`]), new keys come from the
//! [`KeyVault`], and every step goes to the registry as a [`ChangeSigningKeys`], which decides
//! it against the log before appending. Every instance runs one; instances that take the same
//! step at once append it once, and the others hear [`RegistryError::KeysChanged`].

use actix::prelude::*;

use crate::actors::registry::{ChangeSigningKeys, RegistryError, RegistryView, UserRegistry};
use crate::clock::Clock;
use crate::decide::KeyChange;
use crate::diagnostics::error_chain;
use crate::events::EventMetadata;
use crate::keyring::{KeyStep, KeysView, RotationPolicy};
use crate::signing::KeyVault;

/// How often the schedule is looked at. It costs a read of the published keys; a step is due
/// at most a few times a month, but a first key is wanted as soon as the log is replayed.
pub const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// The `actor` of the key events the schedule appends.
pub const SCHEDULE: &str = "rotation schedule";

/// Takes the step the schedule wants now, if any, and answers which (after it committed),
/// `None` if none was due. Sent by the actor's own timer, and by start-up so that a new log has
/// a key before the first request.
#[derive(Message)]
#[rtype(result = "Result<Option<KeyStep>, RotateError>")]
pub struct RotateKeys;

/// Why a due step was not taken.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot make a signing key")]
    Make(#[source] crate::vault::SealError),
}

pub struct KeyRotator {
    registry: Addr<UserRegistry>,
    /// Whether the registry has replayed the log: before that, the keys are unknown.
    view: RegistryView,
    keys: KeysView,
    vault: KeyVault,
    policy: RotationPolicy,
    clock: Clock,
    /// A step is in flight: the timer waits for it.
    busy: bool,
}

impl KeyRotator {
    pub fn new(
        registry: Addr<UserRegistry>,
        view: RegistryView,
        keys: KeysView,
        vault: KeyVault,
        policy: RotationPolicy,
    ) -> Self {
        Self {
            registry,
            view,
            keys,
            vault,
            policy,
            clock: Clock::system(),
            busy: false,
        }
    }

    /// Reads the time from `clock` (a settable one in tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The change the schedule wants now, with a new key made for it if it adds one.
    fn due(&self) -> Result<Option<(KeyStep, KeyChange)>, RotateError> {
        if !self.view.is_loaded() {
            return Ok(None);
        }
        let Some(step) = self
            .keys
            .current()
            .next_step(self.clock.now(), &self.policy)
        else {
            return Ok(None);
        };
        let change = match &step {
            KeyStep::Add { activate, after } => {
                let key = self.vault.make().map_err(RotateError::Make)?;
                KeyChange::Add {
                    key,
                    activate: *activate,
                    after: after.clone(),
                }
            }
            KeyStep::Activate(key_id) => KeyChange::Activate(key_id.clone()),
            KeyStep::Retire(key_id) => KeyChange::Retire(key_id.clone()),
        };
        Ok(Some((step, change)))
    }
}

impl Actor for KeyRotator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TICK, |act, ctx| {
            if act.busy {
                return;
            }
            ctx.spawn(
                ctx.address()
                    .send(RotateKeys)
                    .into_actor(act)
                    .map(|_, _, _| ()),
            );
        });
    }
}

impl Handler<RotateKeys> for KeyRotator {
    type Result = ResponseActFuture<Self, Result<Option<KeyStep>, RotateError>>;

    fn handle(&mut self, _msg: RotateKeys, _ctx: &mut Self::Context) -> Self::Result {
        let (step, change) = match self.due() {
            Ok(Some(due)) => due,
            Ok(None) => return Box::pin(actix::fut::ready(Ok(None))),
            Err(error) => return Box::pin(actix::fut::ready(Err(error))),
        };
        self.busy = true;
        let key_id = match &change {
            KeyChange::Add { key, .. } => key.key_id.clone(),
            KeyChange::Activate(key_id) | KeyChange::Retire(key_id) => key_id.clone(),
            // The schedule steps token keys only; the log key rotates on demand.
            KeyChange::RotateLog => {
                self.busy = false;
                return Box::pin(actix::fut::ready(Ok(None)));
            }
        };
        let sent = self.registry.send(ChangeSigningKeys {
            change,
            metadata: EventMetadata::by(SCHEDULE),
        });
        Box::pin(sent.into_actor(self).map(move |answer, act, _ctx| {
            act.busy = false;
            let answer = answer.unwrap_or(Err(RegistryError::Stopped));
            match &answer {
                Ok(()) => tracing::info!(key_id = %key_id, "{}", done(&step)),
                // Another instance took it (or another step) first: nothing to do.
                Err(RegistryError::KeysChanged) => {
                    tracing::debug!(?step, "signing keys: another instance moved first");
                }
                Err(error @ (RegistryError::Loading | RegistryError::Unavailable(_))) => {
                    tracing::debug!(?step, error = %error_chain(error), "signing keys: step not taken yet");
                }
                Err(error) => {
                    tracing::warn!(?step, error = %error_chain(error), "signing keys: step failed");
                }
            }
            match answer {
                Ok(()) => Ok(Some(step)),
                Err(RegistryError::KeysChanged) => Ok(None),
                Err(error) => Err(error.into()),
            }
        }))
    }
}

/// What a step that committed did, for the log.
fn done(step: &KeyStep) -> &'static str {
    match step {
        KeyStep::Add { activate: true, .. } => {
            "signing key added and activated: it signs new tokens"
        }
        KeyStep::Add {
            activate: false, ..
        } => "signing key added: published now, it signs once the JWKS cache lifetime has passed",
        KeyStep::Activate(_) => "signing key activated: it signs new tokens from now on",
        KeyStep::Retire(_) => "signing key retired: it is no longer published",
    }
}
