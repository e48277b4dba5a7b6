//! The token signing keys as the log describes them: which are published, which one signs, and
//! which rotation step is due. Pure: [`crate::state::State::apply`] folds the key events into a
//! [`KeyRing`], which publishes its [`KeySet`] to its [`KeysView`]s after each one; the
//! TokenActors read that view; [`KeySet::next_step`] says what the rotation schedule wants next.
//!
//! A key's life, each step an event on [`crate::events::SIGNING_KEYS_STREAM`]:
//! 1. **pending**: added and published (in the JWKS), signing nothing yet;
//! 2. **active**: it signs every new token; activating a key ends the previous one's signing;
//! 3. **retiring**: superseded; still published, still verifying the tokens it signed;
//! 4. **retired**: gone from the JWKS; tokens it signed are refused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::{KeyAlgorithm, KeyId};
use crate::events::{Event, RecordedEvent, SigningKeyAdded};
use crate::snapshot::codec::{Malformed, Reader, Writer};

/// One key and the times of its steps, from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: KeyId,
    pub algorithm: KeyAlgorithm,
    pub public_key: Vec<u8>,
    /// Sealed under the master key; opened only by the TokenActors' keychain.
    pub sealed_private_key: Vec<u8>,
    pub added_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
    /// When another key was activated after this one: it has signed nothing since.
    pub superseded_at: Option<DateTime<Utc>>,
    pub retired_at: Option<DateTime<Utc>>,
}

/// Where a key is in its life (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Pending,
    Active,
    Retiring,
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
            KeyState::Retired => "retired",
        }
    }
}

impl KeyRecord {
    pub fn state(&self) -> KeyState {
        match (self.retired_at, self.superseded_at, self.activated_at) {
            (Some(_), _, _) => KeyState::Retired,
            (None, Some(_), _) => KeyState::Retiring,
            (None, None, Some(_)) => KeyState::Active,
            (None, None, None) => KeyState::Pending,
        }
    }
}

/// Every key the log holds, retired ones too, oldest first: what the TokenActors and the
/// rotation schedule read, as one immutable snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<KeyRecord>,
}

/// What the rotation schedule runs by; stated once in [`crate::config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Whether this instance signs with the log's keys (EdDSA). Off when it signs with HS256:
    /// it then adds and activates no keys, and only retires those whose time has come.
    pub sign_with_keys: bool,
    /// How long a key signs before the next one takes over; `None`: only on demand.
    pub rotation: Option<Duration>,
    /// How long a key is published before it signs: the JWKS cache lifetime, so that every
    /// verifier that honours it has the key before the first token signed with it.
    pub lead: Duration,
    /// How long a key stays published after it stopped signing: the longest access-token
    /// lifetime and the verification leeway, plus a margin for instances that applied the
    /// switch a little later.
    pub linger: Duration,
}

/// One step of the rotation schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStep {
    /// Make a key, to follow the newest one (`after`), and activate it at once if `activate`
    /// (nothing signs yet, so no verifier can be waiting for it).
    Add {
        activate: bool,
        after: Option<KeyId>,
    },
    Activate(KeyId),
    Retire(KeyId),
}

/// The keys as folded so far, and the snapshot its views read.
#[derive(Debug)]
pub struct KeyRing {
    set: KeySet,
    /// The stream version of the last key event: the next one takes `version + 1`.
    version: i32,
    published: Arc<Published>,
}

#[derive(Debug, Default)]
struct Published {
    /// Bumped after each change, so a reader compares one number per request.
    generation: AtomicU64,
    set: RwLock<Arc<KeySet>>,
}

impl Default for KeyRing {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyRing {
    pub fn new() -> Self {
        Self {
            set: KeySet::default(),
            version: 0,
            published: Arc::default(),
        }
    }

    /// A handle that sees every change this ring applies from now on.
    pub fn view(&self) -> KeysView {
        KeysView {
            published: Arc::clone(&self.published),
        }
    }

    /// Folds one committed event in; anything but a key event leaves the ring as it is. Steps
    /// that name a key the ring does not hold, or that come out of order, change nothing: the
    /// log never holds them unless written around authlog.
    pub fn apply(&mut self, recorded: &RecordedEvent) {
        let at = recorded.recorded_at;
        if recorded.event.user_id().is_none() {
            self.version = recorded.stream_version;
        }
        let keys = &mut self.set.keys;
        match &recorded.event {
            Event::SigningKeyAdded(added) => {
                if keys.iter().any(|key| key.key_id == added.key_id) {
                    return;
                }
                keys.push(record(added, at));
            }
            Event::SigningKeyActivated(activated) => {
                if !self.set.can_activate(&activated.key_id) {
                    return;
                }
                for key in &mut self.set.keys {
                    if key.key_id == activated.key_id {
                        key.activated_at = Some(at);
                    } else if key.state() == KeyState::Active {
                        key.superseded_at = Some(at);
                    }
                }
            }
            Event::SigningKeyRetired(retired) => {
                match keys.iter_mut().find(|key| key.key_id == retired.key_id) {
                    Some(key) if key.retired_at.is_none() => key.retired_at = Some(at),
                    _ => return,
                }
            }
            _ => return,
        }
        self.publish();
    }

    /// Takes over what `other` replayed; this ring's views see it.
    pub fn adopt(&mut self, other: KeyRing) {
        self.set = other.set;
        self.version = other.version;
        self.publish();
    }

    /// A few keys a year: copied whole on each key event.
    fn publish(&self) {
        if let Ok(mut slot) = self.published.set.write() {
            *slot = Arc::new(self.set.clone());
        }
        self.published.generation.fetch_add(1, Ordering::Release);
    }

    /// The signing keys' stream version so far.
    pub fn version(&self) -> i32 {
        self.version
    }

    pub fn set(&self) -> &KeySet {
        &self.set
    }
}

impl std::ops::Deref for KeyRing {
    type Target = KeySet;

    fn deref(&self) -> &KeySet {
        &self.set
    }
}

impl KeySet {
    /// Every key ever added, oldest first.
    pub fn keys(&self) -> &[KeyRecord] {
        &self.keys
    }

    /// The keys a verifier may hold: every key not retired, oldest first.
    pub fn published(&self) -> impl Iterator<Item = &KeyRecord> {
        self.keys
            .iter()
            .filter(|key| key.state() != KeyState::Retired)
    }

    pub fn find(&self, id: &KeyId) -> Option<&KeyRecord> {
        self.keys.iter().find(|key| key.key_id == *id)
    }

    /// The key that signs new tokens.
    pub fn active(&self) -> Option<&KeyRecord> {
        self.keys.iter().find(|key| key.state() == KeyState::Active)
    }

    /// The key added last, whatever its state.
    pub fn newest(&self) -> Option<&KeyRecord> {
        self.keys.last()
    }

    /// Whether a key may be added to follow `after`: the newest key is still that one (else
    /// another instance or command added one meanwhile).
    pub fn can_add(&self, after: Option<&KeyId>) -> bool {
        self.newest().map(|key| &key.key_id) == after
    }

    /// Whether this key may be activated: it is pending.
    pub fn can_activate(&self, id: &KeyId) -> bool {
        self.find(id)
            .is_some_and(|key| key.state() == KeyState::Pending)
    }

    /// Whether this key may be retired: it is pending or retiring. The active key is not (it
    /// would leave nothing to sign with); rotate first.
    pub fn can_retire(&self, id: &KeyId) -> bool {
        self.find(id)
            .is_some_and(|key| matches!(key.state(), KeyState::Pending | KeyState::Retiring))
    }

    /// What the schedule wants done at `now`, if anything; one step at a time, and each step
    /// is checked again against the log when it is appended ([`crate::decide`]), so instances
    /// that decide the same step at once append it once.
    pub fn next_step(&self, now: DateTime<Utc>, policy: &RotationPolicy) -> Option<KeyStep> {
        let newest = self.newest();
        // A pending key that is not the newest was overtaken before it signed anything.
        if let Some(stale) = self.keys.iter().find(|key| {
            key.state() == KeyState::Pending && Some(&key.key_id) != newest.map(|n| &n.key_id)
        }) {
            return Some(KeyStep::Retire(stale.key_id.clone()));
        }
        let pending = newest.filter(|key| key.state() == KeyState::Pending);
        if policy.sign_with_keys {
            match (self.active(), pending) {
                (None, None) => {
                    return Some(KeyStep::Add {
                        activate: true,
                        after: newest.map(|key| key.key_id.clone()),
                    });
                }
                // Nothing signs: there is no reason to wait for verifiers' caches.
                (None, Some(pending)) => return Some(KeyStep::Activate(pending.key_id.clone())),
                (Some(_), Some(pending)) if now >= later(pending.added_at, policy.lead) => {
                    return Some(KeyStep::Activate(pending.key_id.clone()));
                }
                (Some(active), None) => {
                    if let (Some(rotation), Some(since)) = (policy.rotation, active.activated_at) {
                        // Published `lead` ahead, so that the next key signs `rotation` after
                        // this one started.
                        let due = later(since, rotation.saturating_sub(policy.lead));
                        if now >= due {
                            return Some(KeyStep::Add {
                                activate: false,
                                after: newest.map(|key| key.key_id.clone()),
                            });
                        }
                    }
                }
                (Some(_), Some(_)) => {}
            }
        }
        self.keys
            .iter()
            .find(|key| {
                key.state() == KeyState::Retiring
                    && key
                        .superseded_at
                        .is_some_and(|at| now >= later(at, policy.linger))
            })
            .map(|key| KeyStep::Retire(key.key_id.clone()))
    }
}

/// The key ring's part of a snapshot ([`crate::snapshot`]): its keys in log order and the
/// stream's version. Private keys stay sealed as the log holds them.
impl KeyRing {
    pub(crate) fn write_snapshot(&self, w: &mut Writer) {
        w.i32(self.version);
        w.len(self.set.keys.len());
        for key in &self.set.keys {
            w.str(key.key_id.as_str());
            w.u8(match key.algorithm {
                KeyAlgorithm::EdDSA => 0,
                KeyAlgorithm::HS256 => 1,
            });
            w.bytes(&key.public_key);
            w.bytes(&key.sealed_private_key);
            w.time(key.added_at);
            w.opt_time(key.activated_at);
            w.opt_time(key.superseded_at);
            w.opt_time(key.retired_at);
        }
    }

    pub(crate) fn read_snapshot(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        let version = r.i32()?;
        let keys = (0..r.len()?)
            .map(|_| {
                Ok(KeyRecord {
                    key_id: KeyId::parse(r.str()?)
                        .map_err(|_| Malformed("a key id is not valid"))?,
                    algorithm: match r.u8()? {
                        0 => KeyAlgorithm::EdDSA,
                        1 => KeyAlgorithm::HS256,
                        _ => return Err(Malformed("a key's algorithm is unknown")),
                    },
                    public_key: r.bytes()?.to_vec(),
                    sealed_private_key: r.bytes()?.to_vec(),
                    added_at: r.time()?,
                    activated_at: r.opt_time()?,
                    superseded_at: r.opt_time()?,
                    retired_at: r.opt_time()?,
                })
            })
            .collect::<Result<Vec<_>, Malformed>>()?;
        let ring = Self {
            set: KeySet { keys },
            version,
            published: Arc::default(),
        };
        ring.publish();
        Ok(ring)
    }
}

fn record(added: &SigningKeyAdded, at: DateTime<Utc>) -> KeyRecord {
    KeyRecord {
        key_id: added.key_id.clone(),
        algorithm: added.algorithm,
        public_key: added.public_key.clone(),
        sealed_private_key: added.sealed_private_key.clone(),
        added_at: at,
        activated_at: None,
        superseded_at: None,
        retired_at: None,
    }
}

fn later(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(by)
        .ok()
        .and_then(|by| at.checked_add_signed(by))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A read-only handle on a [`KeyRing`]'s published keys, for other threads. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct KeysView {
    published: Arc<Published>,
}

impl KeysView {
    /// Changes with every key event applied: compare it to know whether [`KeysView::current`]
    /// changed.
    pub fn generation(&self) -> u64 {
        self.published.generation.load(Ordering::Acquire)
    }

    /// The keys as published now.
    pub fn current(&self) -> Arc<KeySet> {
        self.published
            .set
            .read()
            .map(|set| Arc::clone(&set))
            .unwrap_or_default()
    }
}

impl Default for KeysView {
    /// A view of no keys, which never changes (for callers without a registry).
    fn default() -> Self {
        KeyRing::new().view()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::testing::recorded;
    use crate::events::{SigningKeyActivated, SigningKeyRetired};

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);

    fn policy() -> RotationPolicy {
        RotationPolicy {
            sign_with_keys: true,
            rotation: Some(30 * DAY),
            lead: HOUR,
            linger: Duration::from_secs(32 * 60),
        }
    }

    fn id(n: u8) -> KeyId {
        KeyId::thumbprint_ed25519(&[n; 32])
    }

    /// A ring fed `events` (stream versions 1, 2, …), each recorded at its time.
    struct Given {
        ring: KeyRing,
        version: i32,
    }

    impl Given {
        fn new() -> Self {
            Self {
                ring: KeyRing::new(),
                version: 0,
            }
        }

        fn at(mut self, at: DateTime<Utc>, event: Event) -> Self {
            self.version += 1;
            let mut event = recorded(i64::from(self.version), self.version, event);
            event.recorded_at = at;
            self.ring.apply(&event);
            self
        }

        fn added(self, at: DateTime<Utc>, n: u8) -> Self {
            self.at(
                at,
                Event::SigningKeyAdded(SigningKeyAdded {
                    key_id: id(n),
                    algorithm: KeyAlgorithm::EdDSA,
                    public_key: vec![n; 32],
                    sealed_private_key: vec![0; 72],
                }),
            )
        }

        fn activated(self, at: DateTime<Utc>, n: u8) -> Self {
            self.at(
                at,
                Event::SigningKeyActivated(SigningKeyActivated { key_id: id(n) }),
            )
        }

        fn retired(self, at: DateTime<Utc>, n: u8) -> Self {
            self.at(
                at,
                Event::SigningKeyRetired(SigningKeyRetired { key_id: id(n) }),
            )
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("a time")
    }

    fn after(by: Duration) -> DateTime<Utc> {
        later(t0(), by)
    }

    #[test]
    fn given_no_keys_when_planning_then_a_key_is_added_and_activated_at_once() {
        let ring = KeyRing::new();
        assert_eq!(
            ring.next_step(t0(), &policy()),
            Some(KeyStep::Add {
                activate: true,
                after: None
            })
        );
        let hs256 = RotationPolicy {
            sign_with_keys: false,
            ..policy()
        };
        assert_eq!(ring.next_step(t0(), &hs256), None, "HS256 makes no keys");
    }

    #[test]
    fn given_an_active_key_when_its_rotation_nears_then_the_next_is_published_a_lead_ahead() {
        let ring = Given::new().added(t0(), 1).activated(t0(), 1).ring;
        let due = after(30 * DAY - HOUR);
        assert_eq!(ring.next_step(due - TimeDelta::seconds(1), &policy()), None);
        assert_eq!(
            ring.next_step(due, &policy()),
            Some(KeyStep::Add {
                activate: false,
                after: Some(id(1))
            })
        );
        let manual = RotationPolicy {
            rotation: None,
            ..policy()
        };
        assert_eq!(ring.next_step(after(365 * DAY), &manual), None);
    }

    #[test]
    fn given_a_pending_key_then_it_is_activated_only_once_the_lead_has_passed() {
        let added = after(DAY);
        let ring = Given::new()
            .added(t0(), 1)
            .activated(t0(), 1)
            .added(added, 2)
            .ring;
        assert_eq!(ring.active().map(|k| &k.key_id), Some(&id(1)));
        assert_eq!(
            ring.next_step(later(added, HOUR) - TimeDelta::seconds(1), &policy()),
            None
        );
        assert_eq!(
            ring.next_step(later(added, HOUR), &policy()),
            Some(KeyStep::Activate(id(2)))
        );
        assert_eq!(
            ring.view().current().published().count(),
            2,
            "both published"
        );
    }

    #[test]
    fn given_a_pending_key_and_nothing_signing_then_it_is_activated_at_once() {
        let ring = Given::new().added(t0(), 1).ring;
        assert_eq!(
            ring.next_step(t0(), &policy()),
            Some(KeyStep::Activate(id(1)))
        );
    }

    #[test]
    fn given_a_superseded_key_then_it_is_retired_once_its_tokens_have_expired() {
        let switched = after(DAY);
        let ring = Given::new()
            .added(t0(), 1)
            .activated(t0(), 1)
            .added(after(HOUR), 2)
            .activated(switched, 2)
            .ring;
        assert_eq!(
            ring.find(&id(1)).map(KeyRecord::state),
            Some(KeyState::Retiring)
        );
        assert_eq!(ring.active().map(|k| &k.key_id), Some(&id(2)));
        let linger = policy().linger;
        assert_eq!(
            ring.next_step(later(switched, linger) - TimeDelta::seconds(1), &policy()),
            None
        );
        assert_eq!(
            ring.next_step(later(switched, linger), &policy()),
            Some(KeyStep::Retire(id(1)))
        );
        let hs256 = RotationPolicy {
            sign_with_keys: false,
            ..policy()
        };
        assert_eq!(
            ring.next_step(later(switched, linger), &hs256),
            Some(KeyStep::Retire(id(1))),
            "retiring is due whatever this instance signs with"
        );
    }

    #[test]
    fn given_two_pending_keys_then_the_older_is_retired_first() {
        let ring = Given::new()
            .added(t0(), 1)
            .activated(t0(), 1)
            .added(after(HOUR), 2)
            .added(after(HOUR), 3)
            .ring;
        assert_eq!(
            ring.next_step(after(HOUR), &policy()),
            Some(KeyStep::Retire(id(2)))
        );
    }

    #[test]
    fn the_published_set_holds_what_is_not_retired_and_names_the_signer() {
        let ring = Given::new()
            .added(t0(), 1)
            .activated(t0(), 1)
            .added(t0(), 2)
            .activated(t0(), 2)
            .ring;
        let view = ring.view();
        let generation = view.generation();
        let ring = Given { ring, version: 4 }.retired(after(HOUR), 1).ring;
        assert!(view.generation() > generation, "a change is seen");
        let set = view.current();
        assert_eq!(set.active().map(|k| &k.key_id), Some(&id(2)));
        assert_eq!(
            set.published().map(|k| &k.key_id).collect::<Vec<_>>(),
            [&id(2)]
        );
        assert_eq!(set.keys().len(), 2, "the retired key is still in the set");
        assert_eq!(ring.version(), 5);
        assert_eq!(
            ring.find(&id(1)).map(KeyRecord::state),
            Some(KeyState::Retired)
        );
    }

    #[test]
    fn preconditions_follow_the_states() {
        let ring = Given::new()
            .added(t0(), 1)
            .activated(t0(), 1)
            .added(t0(), 2)
            .ring;
        assert!(ring.can_add(Some(&id(2))) && !ring.can_add(Some(&id(1))));
        assert!(!ring.can_add(None));
        assert!(ring.can_activate(&id(2)) && !ring.can_activate(&id(1)));
        assert!(ring.can_retire(&id(2)), "pending");
        assert!(!ring.can_retire(&id(1)), "active");
        assert!(!ring.can_retire(&id(9)), "unknown");
        assert!(KeyRing::new().can_add(None));
    }

    #[test]
    fn steps_naming_unknown_keys_or_out_of_order_change_nothing() {
        let ring = Given::new()
            .activated(t0(), 7)
            .retired(t0(), 7)
            .added(t0(), 1)
            .activated(t0(), 1)
            .activated(t0(), 1)
            .ring;
        assert_eq!(ring.keys().len(), 1);
        assert_eq!(
            ring.find(&id(1)).map(KeyRecord::state),
            Some(KeyState::Active)
        );
    }
}
