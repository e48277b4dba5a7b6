//! Login turn-taking: how many password checks of one account (or unknown email) from one
//! address run at once, who waits, and who is refused at once.
//!
//! Plain data with no timers and no actors: the registry asks [`Turns::admit`] when an attempt
//! arrives, parks it with [`Turns::wait`] if it must wait, and, when a turn ends, hands the next
//! turn out with [`Turns::next`]. A waiting attempt costs nothing until then: nothing polls.
//!
//! The bounds protect everyone else's logins from one account's flood. At most
//! [`MAX_RUNNING`] checks of a key run at once (and never more than the throttle still allows),
//! at most [`MAX_WAITING`] wait, and any further attempt is refused at once. Waiters whose
//! caller has gone away are dropped, never started.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use super::Subject;

/// Who takes turns together: one account (or unknown email) from one client address.
pub type TurnKey = (Subject, Option<IpAddr>);

/// Checks of one key that may run at once. Two keeps one key to at most two bcrypt slots, so
/// another user's login waits at most about one bcrypt time behind it on a 2-core machine.
pub const MAX_RUNNING: u32 = 2;

/// Attempts of one key that may wait for a turn; a further attempt is refused at once (429).
pub const MAX_WAITING: usize = 8;

/// A parked attempt.
pub trait Waiter {
    /// Its caller has stopped waiting (the client went away): it must never start.
    fn is_gone(&self) -> bool;
}

/// What [`Turns::admit`] decided for a new attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Start the check now; the turn is reserved and must be ended with [`Turns::end`].
    Go,
    /// Park the attempt with [`Turns::wait`]; it starts when [`Turns::next`] hands it out.
    Wait,
    /// Too many attempts of this key already run or wait: refuse it now.
    Full,
}

#[derive(Debug)]
struct KeyTurns<W> {
    running: u32,
    waiting: VecDeque<W>,
}

impl<W> Default for KeyTurns<W> {
    fn default() -> Self {
        Self {
            running: 0,
            waiting: VecDeque::new(),
        }
    }
}

#[derive(Debug)]
pub struct Turns<W> {
    keys: HashMap<TurnKey, KeyTurns<W>>,
    /// Parked attempts over all keys, for the metrics.
    waiting: usize,
}

impl<W> Default for Turns<W> {
    fn default() -> Self {
        Self {
            keys: HashMap::new(),
            waiting: 0,
        }
    }
}

impl<W: Waiter> Turns<W> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new attempt of `key`, when the throttle allows `allowance` more checks of it. It goes
    /// at once only if nobody of its key is waiting (first come, first served).
    pub fn admit(&mut self, key: &TurnKey, allowance: u32) -> Admission {
        let limit = allowance.min(MAX_RUNNING);
        let turns = self.keys.entry(key.clone()).or_default();
        let before = turns.waiting.len();
        turns.waiting.retain(|waiter| !waiter.is_gone());
        self.waiting -= before - turns.waiting.len();
        if turns.waiting.is_empty() && turns.running < limit {
            turns.running += 1;
            Admission::Go
        } else if turns.waiting.len() < MAX_WAITING {
            Admission::Wait
        } else {
            Admission::Full
        }
    }

    /// Parks an attempt that [`Turns::admit`] told to wait.
    pub fn wait(&mut self, key: TurnKey, waiter: W) {
        self.keys.entry(key).or_default().waiting.push_back(waiter);
        self.waiting += 1;
    }

    /// One running check of `key` has ended.
    pub fn end(&mut self, key: &TurnKey) {
        if let Some(turns) = self.keys.get_mut(key) {
            turns.running = turns.running.saturating_sub(1);
        }
        self.forget_if_idle(key);
    }

    /// The next waiter of `key` that may start now, given the throttle's `allowance`; its turn
    /// is reserved. Waiters whose caller has gone are dropped on the way.
    pub fn next(&mut self, key: &TurnKey, allowance: u32) -> Option<W> {
        let turns = self.keys.get_mut(key)?;
        let mut next = None;
        if turns.running < allowance.min(MAX_RUNNING) {
            while let Some(waiter) = turns.waiting.pop_front() {
                self.waiting -= 1;
                if !waiter.is_gone() {
                    turns.running += 1;
                    next = Some(waiter);
                    break;
                }
            }
        }
        self.forget_if_idle(key);
        next
    }

    /// Takes every waiter of `key` (to refuse them all, when the throttle now locks the key).
    pub fn drain(&mut self, key: &TurnKey) -> Vec<W> {
        let drained: Vec<W> = self
            .keys
            .get_mut(key)
            .map(|turns| turns.waiting.drain(..).collect())
            .unwrap_or_default();
        self.waiting -= drained.len();
        self.forget_if_idle(key);
        drained
    }

    /// Checks of `key` running now.
    pub fn running(&self, key: &TurnKey) -> u32 {
        self.keys.get(key).map_or(0, |turns| turns.running)
    }

    /// Attempts parked over all keys.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    fn forget_if_idle(&mut self, key: &TurnKey) {
        if self
            .keys
            .get(key)
            .is_some_and(|turns| turns.running == 0 && turns.waiting.is_empty())
        {
            self.keys.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;
    use crate::domain::UserId;

    /// A waiter whose caller can be made to leave.
    #[derive(Clone)]
    struct Caller {
        id: u32,
        gone: Rc<Cell<bool>>,
    }

    impl Caller {
        fn new(id: u32) -> Self {
            Self {
                id,
                gone: Rc::new(Cell::new(false)),
            }
        }
    }

    impl Waiter for Caller {
        fn is_gone(&self) -> bool {
            self.gone.get()
        }
    }

    fn key() -> TurnKey {
        (
            Subject::User(UserId::new()),
            Some(IpAddr::from([198, 51, 100, 1])),
        )
    }

    #[test]
    fn given_an_idle_key_when_attempts_arrive_then_two_run_eight_wait_and_the_rest_are_refused() {
        let mut turns = Turns::new();
        let key = key();
        let admissions: Vec<Admission> = (0..12)
            .map(|id| {
                let admission = turns.admit(&key, 5);
                if admission == Admission::Wait {
                    turns.wait(key.clone(), Caller::new(id));
                }
                admission
            })
            .collect();
        assert_eq!(&admissions[..2], [Admission::Go; 2]);
        assert_eq!(&admissions[2..10], [Admission::Wait; 8]);
        assert_eq!(&admissions[10..], [Admission::Full; 2]);
        assert_eq!((turns.running(&key), turns.waiting()), (2, 8));
    }

    #[test]
    fn given_waiters_when_a_turn_ends_then_the_first_live_one_goes_next() {
        let mut turns = Turns::new();
        let key = key();
        assert_eq!(turns.admit(&key, 1), Admission::Go);
        let callers: Vec<Caller> = (0..3).map(Caller::new).collect();
        for caller in &callers {
            assert_eq!(turns.admit(&key, 1), Admission::Wait);
            turns.wait(key.clone(), caller.clone());
        }
        // The first waiter's client goes away: it is skipped, never started.
        callers[0].gone.set(true);
        assert!(turns.next(&key, 1).is_none(), "one running, allowance 1");
        turns.end(&key);
        assert_eq!(turns.next(&key, 1).map(|c| c.id), Some(1));
        assert_eq!((turns.running(&key), turns.waiting()), (1, 1));
    }

    #[test]
    fn given_a_key_the_throttle_now_locks_when_draining_then_every_waiter_is_handed_back() {
        let mut turns = Turns::new();
        let key = key();
        assert_eq!(turns.admit(&key, 2), Admission::Go);
        assert_eq!(turns.admit(&key, 2), Admission::Go);
        assert_eq!(turns.admit(&key, 2), Admission::Wait);
        turns.wait(key.clone(), Caller::new(7));
        turns.end(&key);
        // The throttle allows no further check: nobody starts, and the caller refuses them.
        assert!(turns.next(&key, 0).is_none());
        let refused: Vec<u32> = turns.drain(&key).iter().map(|c| c.id).collect();
        assert_eq!(refused, [7]);
        turns.end(&key);
        assert_eq!((turns.running(&key), turns.waiting()), (0, 0));
        assert!(turns.keys.is_empty(), "idle keys are forgotten");
    }

    #[test]
    fn given_waiters_when_a_new_attempt_arrives_then_it_queues_behind_them() {
        let mut turns = Turns::new();
        let key = key();
        assert_eq!(turns.admit(&key, 1), Admission::Go);
        assert_eq!(turns.admit(&key, 1), Admission::Wait);
        turns.wait(key.clone(), Caller::new(1));
        turns.end(&key);
        // A turn is free, but someone is waiting for it: the newcomer waits too.
        assert_eq!(turns.admit(&key, 1), Admission::Wait);
        assert_eq!(turns.next(&key, 1).map(|c| c.id), Some(1));
    }

    #[test]
    fn given_gone_waiters_when_admitting_then_they_free_their_places() {
        let mut turns = Turns::new();
        let key = key();
        turns.admit(&key, 2);
        turns.admit(&key, 2);
        let callers: Vec<Caller> = (0..8).map(Caller::new).collect();
        for caller in &callers {
            assert_eq!(turns.admit(&key, 2), Admission::Wait);
            turns.wait(key.clone(), caller.clone());
        }
        assert_eq!(turns.admit(&key, 2), Admission::Full);
        for caller in &callers {
            caller.gone.set(true);
        }
        assert_eq!(turns.admit(&key, 2), Admission::Wait);
        assert_eq!(turns.waiting(), 0);
    }
}
