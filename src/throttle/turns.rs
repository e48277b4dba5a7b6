//! Login turn-taking: how many password checks run at once for one account (or unknown email)
//! from one address, and for one address in all, who waits, and who is refused at once.
//!
//! Plain data with no timers and no actors: the registry asks [`Turns::admit`] when an attempt
//! arrives, parks it with [`Turns::wait`] if it must wait, and, when a turn ends
//! ([`Turns::end`]), hands turns out with [`Turns::next`]. A waiting attempt costs nothing until
//! then: nothing polls.
//!
//! The bounds keep one account's flood, and one address's flood, from taking everyone else's
//! logins with them:
//! - at most [`MAX_RUNNING`] checks of one account and address run at once, and never more than
//!   the throttle still allows;
//! - at most `per_address` checks of one address run at once (one per core: an address can fill
//!   the cores, but not the queue in front of them, so another address's login waits at most
//!   about one bcrypt time);
//! - at most [`MAX_WAITING`] attempts of one account and address, and [`MAX_WAITING_PER_ADDRESS`]
//!   of one address, wait; any further attempt is refused at once.
//!
//! Waiters of an address start in arrival order, except that one whose account may not run yet
//! does not hold up the others. Waiters whose caller has gone away are dropped, never started.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use super::Subject;

/// Who takes turns together: one account (or unknown email) from one client address.
pub type TurnKey = (Subject, Option<IpAddr>);

/// Checks of one account and address that may run at once. Two keeps one account to at most two
/// bcrypt slots.
pub const MAX_RUNNING: u32 = 2;

/// Attempts of one account and address that may wait for a turn.
pub const MAX_WAITING: usize = 8;

/// Attempts of one address, all accounts together, that may wait for a turn.
pub const MAX_WAITING_PER_ADDRESS: usize = 16;

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
    /// Too many attempts of this account and address already run or wait: refuse it now.
    AccountFull,
    /// Too many attempts of this address already wait: refuse it now.
    AddressFull,
}

#[derive(Debug)]
struct Address<W> {
    running: u32,
    /// In arrival order, each with its key.
    waiting: VecDeque<(TurnKey, W)>,
}

impl<W> Default for Address<W> {
    fn default() -> Self {
        Self {
            running: 0,
            waiting: VecDeque::new(),
        }
    }
}

#[derive(Debug)]
pub struct Turns<W> {
    /// Checks running per account and address.
    running: HashMap<TurnKey, u32>,
    addresses: HashMap<Option<IpAddr>, Address<W>>,
    /// Checks one address may run at once.
    per_address: u32,
    /// Parked attempts over all addresses, for the metrics.
    waiting: usize,
}

impl<W: Waiter> Turns<W> {
    /// `per_address`: checks one address may run at once (usually one per core).
    pub fn new(per_address: u32) -> Self {
        Self {
            running: HashMap::new(),
            addresses: HashMap::new(),
            per_address: per_address.max(1),
            waiting: 0,
        }
    }

    /// A new attempt of `key`, when the throttle allows `allowance` more checks of it.
    pub fn admit(&mut self, key: &TurnKey, allowance: u32) -> Admission {
        self.forget_gone(key.1);
        let running = self.running.get(key).copied().unwrap_or(0);
        let address = self.addresses.entry(key.1).or_default();
        let queued = address.waiting.iter().filter(|(k, _)| k == key).count();
        if queued == 0 && running < allowance.min(MAX_RUNNING) && address.running < self.per_address
        {
            address.running += 1;
            *self.running.entry(key.clone()).or_default() += 1;
            Admission::Go
        } else if queued >= MAX_WAITING {
            Admission::AccountFull
        } else if address.waiting.len() >= MAX_WAITING_PER_ADDRESS {
            Admission::AddressFull
        } else {
            Admission::Wait
        }
    }

    /// Parks an attempt that [`Turns::admit`] told to wait.
    pub fn wait(&mut self, key: TurnKey, waiter: W) {
        self.addresses
            .entry(key.1)
            .or_default()
            .waiting
            .push_back((key, waiter));
        self.waiting += 1;
    }

    /// One running check of `key` has ended.
    pub fn end(&mut self, key: &TurnKey) {
        if let Some(running) = self.running.get_mut(key) {
            *running = running.saturating_sub(1);
            if *running == 0 {
                self.running.remove(key);
            }
        }
        if let Some(address) = self.addresses.get_mut(&key.1) {
            address.running = address.running.saturating_sub(1);
        }
        self.forget_if_idle(key.1);
    }

    /// Hands turns to the waiters of `address`, in arrival order, while it has room. `judge`
    /// says for a waiter's key how many checks the throttle allows now, or why it refuses them;
    /// a refused waiter is handed back with the reason. Each waiter handed back with `Ok` has its
    /// turn reserved. Waiters whose caller has gone are dropped on the way.
    pub fn next<R>(
        &mut self,
        address: Option<IpAddr>,
        mut judge: impl FnMut(&TurnKey) -> Result<u32, R>,
    ) -> Vec<(TurnKey, W, Result<(), R>)> {
        self.forget_gone(address);
        let mut handed = Vec::new();
        let Some(entry) = self.addresses.get_mut(&address) else {
            return handed;
        };
        let mut kept = VecDeque::with_capacity(entry.waiting.len());
        while let Some((key, waiter)) = entry.waiting.pop_front() {
            match judge(&key) {
                Err(refusal) => {
                    self.waiting -= 1;
                    handed.push((key, waiter, Err(refusal)));
                }
                Ok(allowance) => {
                    let running = self.running.get(&key).copied().unwrap_or(0);
                    if entry.running < self.per_address && running < allowance.min(MAX_RUNNING) {
                        entry.running += 1;
                        *self.running.entry(key.clone()).or_default() += 1;
                        self.waiting -= 1;
                        handed.push((key, waiter, Ok(())));
                    } else {
                        kept.push_back((key, waiter));
                    }
                }
            }
        }
        entry.waiting = kept;
        self.forget_if_idle(address);
        handed
    }

    /// Checks of `key` running now.
    pub fn running(&self, key: &TurnKey) -> u32 {
        self.running.get(key).copied().unwrap_or(0)
    }

    /// Attempts parked over all addresses.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Drops the waiters of `address` whose caller has gone.
    fn forget_gone(&mut self, address: Option<IpAddr>) {
        if let Some(entry) = self.addresses.get_mut(&address) {
            let before = entry.waiting.len();
            entry.waiting.retain(|(_, waiter)| !waiter.is_gone());
            self.waiting -= before - entry.waiting.len();
        }
    }

    fn forget_if_idle(&mut self, address: Option<IpAddr>) {
        if self
            .addresses
            .get(&address)
            .is_some_and(|entry| entry.running == 0 && entry.waiting.is_empty())
        {
            self.addresses.remove(&address);
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

    fn key_from(last: u8) -> TurnKey {
        (
            Subject::User(UserId::new()),
            Some(IpAddr::from([198, 51, 100, last])),
        )
    }

    fn key() -> TurnKey {
        key_from(1)
    }

    /// Admits `n` attempts of `key`, parking those told to wait; their admissions.
    fn arrive(turns: &mut Turns<Caller>, key: &TurnKey, n: u32, allowance: u32) -> Vec<Admission> {
        (0..n)
            .map(|id| {
                let admission = turns.admit(key, allowance);
                if admission == Admission::Wait {
                    turns.wait(key.clone(), Caller::new(id));
                }
                admission
            })
            .collect()
    }

    fn started(handed: Vec<(TurnKey, Caller, Result<(), ()>)>) -> Vec<u32> {
        handed
            .into_iter()
            .filter(|(_, _, outcome)| outcome.is_ok())
            .map(|(_, caller, _)| caller.id)
            .collect()
    }

    #[test]
    fn given_an_idle_account_when_attempts_arrive_then_two_run_eight_wait_and_the_rest_are_refused()
    {
        let mut turns = Turns::new(4);
        let key = key();
        let admissions = arrive(&mut turns, &key, 12, 5);
        assert_eq!(&admissions[..2], [Admission::Go; 2]);
        assert_eq!(&admissions[2..10], [Admission::Wait; 8]);
        assert_eq!(&admissions[10..], [Admission::AccountFull; 2]);
        assert_eq!((turns.running(&key), turns.waiting()), (2, 8));
    }

    #[test]
    fn given_one_address_flooding_many_accounts_then_it_runs_one_check_per_core_and_sixteen_wait() {
        let mut turns = Turns::new(2);
        let address = Some(IpAddr::from([203, 0, 113, 9]));
        let admissions: Vec<Admission> = (0..20)
            .map(|id| {
                let key = (Subject::User(UserId::new()), address);
                let admission = turns.admit(&key, 5);
                if admission == Admission::Wait {
                    turns.wait(key, Caller::new(id));
                }
                admission
            })
            .collect();
        assert_eq!(&admissions[..2], [Admission::Go; 2]);
        assert_eq!(&admissions[2..18], [Admission::Wait; 16]);
        assert_eq!(&admissions[18..], [Admission::AddressFull; 2]);
        // Another address is not affected.
        assert_eq!(turns.admit(&key_from(2), 5), Admission::Go);
    }

    #[test]
    fn given_waiters_when_a_turn_ends_then_the_first_live_one_goes_next() {
        let mut turns = Turns::new(4);
        let key = key();
        assert_eq!(
            arrive(&mut turns, &key, 4, 1),
            [
                Admission::Go,
                Admission::Wait,
                Admission::Wait,
                Admission::Wait
            ]
        );
        // The first waiter's client goes away: it is skipped, never started.
        let first = turns.addresses[&key.1].waiting[0].1.clone();
        first.gone.set(true);
        assert!(
            started(turns.next(key.1, |_| Ok(1))).is_empty(),
            "one running, allowance 1"
        );
        turns.end(&key);
        assert_eq!(started(turns.next(key.1, |_| Ok(1))), [2]);
        assert_eq!((turns.running(&key), turns.waiting()), (1, 1));
    }

    #[test]
    fn given_an_account_the_throttle_now_locks_then_its_waiters_are_handed_back_refused() {
        let mut turns = Turns::new(4);
        let key = key();
        arrive(&mut turns, &key, 3, 2);
        turns.end(&key);
        let handed = turns.next(key.1, |_| Err("locked"));
        let refused: Vec<(u32, Result<(), &str>)> = handed
            .into_iter()
            .map(|(_, c, outcome)| (c.id, outcome))
            .collect();
        assert_eq!(refused, [(2, Err("locked"))]);
        turns.end(&key);
        assert_eq!((turns.running(&key), turns.waiting()), (0, 0));
        assert!(
            turns.addresses.is_empty() && turns.running.is_empty(),
            "idle forgotten"
        );
    }

    #[test]
    fn given_an_account_at_its_limit_then_its_waiters_do_not_hold_up_the_addresss_others() {
        let mut turns = Turns::new(3);
        let victim = key();
        // The victim account runs two checks, its limit; three more of it wait.
        arrive(&mut turns, &victim, 5, 5);
        // Another account from the same address may still run: the address has room.
        let other = (Subject::User(UserId::new()), victim.1);
        assert_eq!(turns.admit(&other, 5), Admission::Go);
        turns.end(&other);
        // Ending the other account's turn starts nothing of the victim's (still at its limit).
        assert!(started(turns.next(victim.1, |_| Ok(5))).is_empty());
        turns.end(&victim);
        assert_eq!(started(turns.next(victim.1, |_| Ok(5))), [2]);
    }

    #[test]
    fn given_waiters_when_a_new_attempt_of_their_account_arrives_then_it_queues_behind_them() {
        let mut turns = Turns::new(4);
        let key = key();
        arrive(&mut turns, &key, 2, 1);
        turns.end(&key);
        // A turn is free, but someone of this account is waiting for it: the newcomer waits too.
        assert_eq!(turns.admit(&key, 1), Admission::Wait);
        turns.wait(key.clone(), Caller::new(9));
        assert_eq!(started(turns.next(key.1, |_| Ok(1))), [1]);
    }

    #[test]
    fn given_gone_waiters_when_admitting_then_they_free_their_places() {
        let mut turns = Turns::new(4);
        let key = key();
        arrive(&mut turns, &key, 10, 2);
        assert_eq!(turns.admit(&key, 2), Admission::AccountFull);
        for (_, caller) in &turns.addresses[&key.1].waiting {
            caller.gone.set(true);
        }
        assert_eq!(turns.admit(&key, 2), Admission::Wait);
        assert_eq!(turns.waiting(), 0);
    }
}
