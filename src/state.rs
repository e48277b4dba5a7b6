//! The state every decision reads, and the one fold that builds it from the log.
//!
//! [`State::apply`] is the only code that turns a recorded event into state. Start-up replay,
//! the live path after each commit, catch-up after an outage or another writer, `authlog
//! replay` and the tests all call it, so they cannot disagree. A new event type touches the
//! match in each part's own `apply` ([`Directory::apply`], [`Throttle::apply`],
//! [`KeyRing::apply`]) and nothing else.

use std::ops::ControlFlow;

use crate::events::{EventStore, RecordedEvent, StoreError, events_after};
use crate::keyring::KeyRing;
use crate::projection::Directory;
use crate::throttle::{Throttle, ThrottlePolicy};

#[derive(Debug)]
pub struct State {
    directory: Directory,
    throttle: Throttle,
    /// The token signing keys.
    keys: KeyRing,
    /// Position of the last event applied; replay and catch-up continue after it.
    position: i64,
}

impl State {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self {
            directory: Directory::new(),
            throttle: Throttle::new(policy),
            keys: KeyRing::new(),
            position: 0,
        }
    }

    /// Reads the whole log and applies it in position order.
    pub async fn replay(
        store: &dyn EventStore,
        policy: ThrottlePolicy,
    ) -> Result<Self, StoreError> {
        let mut state = Self::new(policy);
        events_after(store, 0)
            .for_each(|event| {
                state.apply(&event);
                ControlFlow::Continue(())
            })
            .await?;
        Ok(state)
    }

    /// Folds one committed event into every part of the state. Events at or before
    /// [`State::position`] were already applied and are skipped, so re-reading an overlapping
    /// tail is harmless. Returns whether the event was new.
    pub fn apply(&mut self, event: &RecordedEvent) -> bool {
        if event.position <= self.position {
            return false;
        }
        self.position = event.position;
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
