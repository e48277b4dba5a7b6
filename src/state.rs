//! The state every decision reads, and the one fold that builds it from the log.
//!
//! [`State::apply`] is the only code that turns a recorded event into state. Start-up replay,
//! the live path after each commit, catch-up after an outage or another writer, `authlog
//! replay` and the tests all call it, so they cannot disagree. A new event type touches the
//! match in each part's own `apply` ([`Directory::apply`], [`Throttle::apply`],
//! [`KeyRing::apply`]) and nothing else.

use std::ops::ControlFlow;

use crate::events::signed::{Guard, Linked, Untrusted};
use crate::events::{EventStore, RecordedEvent, StoreError, linked_after};
use crate::keyring::KeyRing;
use crate::projection::Directory;
use crate::snapshot::codec::{Malformed, Reader, Writer};
use crate::throttle::{Throttle, ThrottlePolicy};

#[derive(Debug)]
pub struct State {
    directory: Directory,
    throttle: Throttle,
    /// The token signing keys.
    keys: KeyRing,
    /// Position of the last event applied; replay and catch-up continue after it.
    position: i64,
    /// Lets through only rows a log signature covers ([`crate::events::signed`]).
    guard: Guard,
}

impl State {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self {
            directory: Directory::new(),
            throttle: Throttle::new(policy),
            keys: KeyRing::new(),
            position: 0,
            guard: Guard::new(None, None),
        }
    }

    /// Reads the whole log and applies it in position order: every row a log signature covers
    /// (checked with the store's keys, when it has the master key), up to the first that is not.
    pub async fn replay(
        store: &dyn EventStore,
        policy: ThrottlePolicy,
    ) -> Result<Self, StoreError> {
        let trust = store.log_signer().map(|signer| signer.trust());
        let state = Self::replay_with(store, policy, trust).await?;
        // The log's very first signature is not this master key's: no one with mere INSERT
        // rights can change a row already there, so the key is not the log's (or the database's
        // owner altered the first batch). Serving would append nothing anyway.
        if let Some(untrusted) = state.untrusted()
            && untrusted.why == crate::events::signed::Why::BadSignature
            && state.guard.signatures() == 0
        {
            return Err(StoreError::Misconfigured(format!(
                "AUTHLOG_MASTER_KEY does not open this log: its first signature (position {}) \
                 does not verify under the log-signing key this master key derives (or that \
                 first signed append was altered in the database). Start with \
                 the log's master key. If that key is lost, the log cannot be carried on, as \
                 nothing another key signs can vouch for it (docs/auditing.md): start a new \
                 log, and keep this one for the record",
                untrusted.position
            )));
        }
        Ok(state)
    }

    /// [`State::replay`] trusting the given keys, or checking nothing (`None`).
    pub async fn replay_with(
        store: &dyn EventStore,
        policy: ThrottlePolicy,
        trust: Option<crate::events::signed::Trust>,
    ) -> Result<Self, StoreError> {
        let first_signed = store.first_signed().await?;
        let mut state = Self::new(policy);
        state.guard = Guard::new(trust, first_signed);
        state.catch_up(store).await
    }

    /// Reads the log after [`State::position`] through the guard and applies what it lets
    /// through, to the end of the log or the first row it refuses: a replay's work, from the
    /// start or from a snapshot.
    pub async fn catch_up(mut self, store: &dyn EventStore) -> Result<Self, StoreError> {
        let mut refused = None;
        let state = &mut self;
        linked_after(store, state.position)
            .for_each(|row| {
                let (released, untrusted) = state.guard.push(row);
                for event in &released {
                    state.apply(event);
                }
                match untrusted {
                    Some(untrusted) => {
                        refused = Some(untrusted);
                        ControlFlow::Break(())
                    }
                    None => ControlFlow::Continue(()),
                }
            })
            .await?;
        let refused = match refused {
            Some(untrusted) => Some(untrusted),
            None => {
                let (released, refused) = state.guard.finish_read();
                for event in &released {
                    state.apply(event);
                }
                refused
            }
        };
        if let Some(untrusted) = refused {
            tracing::error!(
                position = untrusted.position,
                applied = state.position,
                "{untrusted}; serving the log as of position {}",
                state.position
            );
        }
        state.guard.end_of_replay();
        Ok(self)
    }

    /// The guard rows pass through.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Resumes reading with `guard` (one that starts at this state's position).
    pub(crate) fn set_guard(&mut self, guard: Guard) {
        self.guard = guard;
    }

    /// The state's part of a snapshot: the position, then each part's own
    /// ([`crate::snapshot`]). The guard is the snapshot header's.
    pub(crate) fn write_snapshot(&self, w: &mut Writer) {
        w.i64(self.position);
        self.directory.write_snapshot(w);
        self.throttle.write_snapshot(w);
        self.keys.write_snapshot(w);
    }

    pub(crate) fn read_snapshot(
        r: &mut Reader<'_>,
        policy: ThrottlePolicy,
    ) -> Result<Self, Malformed> {
        Ok(Self {
            position: r.i64()?,
            directory: Directory::read_snapshot(r)?,
            throttle: Throttle::read_snapshot(r, policy)?,
            keys: KeyRing::read_snapshot(r)?,
            guard: Guard::new(None, None),
        })
    }

    /// Takes rows read from the log after [`State::position`] and returns those a signature
    /// covers, in order, for the caller to apply; the rest stay unapplied and are read again
    /// next time. The second part is the row refused, if any.
    pub fn admit(&mut self, rows: Vec<Linked>) -> (Vec<RecordedEvent>, Option<Untrusted>) {
        let mut released = Vec::with_capacity(rows.len());
        for row in rows {
            let (batch, refused) = self.guard.push(row);
            released.extend(batch);
            if refused.is_some() {
                return (released, refused);
            }
        }
        let (batch, refused) = self.guard.finish_read();
        released.extend(batch);
        (released, refused)
    }

    /// The row this state refused to apply last, until a later read gets past it.
    pub fn untrusted(&self) -> Option<Untrusted> {
        self.guard.alarm()
    }

    /// The log-signing key generation in force.
    pub fn log_key_generation(&self) -> u32 {
        self.guard.generation()
    }

    /// Folds one committed event into every part of the state. Events at or before
    /// [`State::position`] were already applied and are skipped, so re-reading an overlapping
    /// tail is harmless. Returns whether the event was new.
    pub fn apply(&mut self, event: &RecordedEvent) -> bool {
        if event.position <= self.position {
            return false;
        }
        self.position = event.position;
        self.guard.follow(event);
        self.directory.apply(event);
        self.throttle.apply(event);
        self.keys.apply(event);
        true
    }

    /// Takes over what `other` replayed, keeping this state's directory and key views (which
    /// then see it) and throttle policy. O(users), once: when a registry that started before its store
    /// answered has replayed the log.
    pub fn adopt(&mut self, other: State) {
        self.directory.adopt(other.directory);
        self.throttle.replace_state(other.throttle);
        self.keys.adopt(other.keys);
        self.position = other.position;
        self.guard = other.guard;
    }

    pub fn position(&self) -> i64 {
        self.position
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub fn directory_mut(&mut self) -> &mut Directory {
        &mut self.directory
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    pub fn throttle_mut(&mut self) -> &mut Throttle {
        &mut self.throttle
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;
    use crate::events::testing::{recorded, registered};
    use crate::events::{Event, EventMetadata, LoginFailed};
    use crate::throttle::Subject;

    /// `event` at `position`, from one client address.
    fn from_client(position: i64, stream_version: i32, event: Event) -> RecordedEvent {
        RecordedEvent {
            metadata: EventMetadata::new(Some([198, 51, 100, 1].into()), None),
            ..recorded(position, stream_version, event)
        }
    }

    #[test]
    fn given_a_log_when_applied_twice_then_the_state_counts_each_event_once() {
        let id = UserId::new();
        let log = [
            from_client(1, 1, registered(id, "a@example.com")),
            from_client(2, 2, Event::LoginFailed(LoginFailed { user_id: id })),
        ];
        let mut state = State::new(ThrottlePolicy::default());
        for event in log.iter().chain(log.iter()) {
            state.apply(event);
        }
        assert_eq!(state.position(), 2);
        let user = state.directory().get(id).expect("registered");
        assert_eq!((user.version, user.failed_logins), (2, 1));
        let client = Some([198, 51, 100, 1].into());
        assert_eq!(state.throttle().streak(&Subject::User(id), client), 1);
    }

    #[test]
    fn adopting_a_replayed_state_reaches_existing_views() {
        let mut live = State::new(ThrottlePolicy::off());
        let view = live.directory().view();
        let id = UserId::new();
        let mut replayed = State::new(ThrottlePolicy::default());
        replayed.apply(&recorded(1, 1, registered(id, "a@example.com")));
        live.adopt(replayed);
        assert!(view.find(id).is_some());
        assert_eq!(live.position(), 1);
        assert_eq!(*live.throttle().policy(), ThrottlePolicy::off());
    }
}
