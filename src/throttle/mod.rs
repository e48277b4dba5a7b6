//! Brute-force throttling, as pure state derived from events: failed logins per account and
//! address, failed logins per account, sign-ups per address.
//!
//! Known accounts are throttled from `LoginFailed`, `LoginSucceeded` and `UserRegistered` events
//! (their `recorded_at` and client address), so the state survives restarts and is the same in
//! every instance that reads the same log. Attempts on emails that have no account leave no
//! event (the log holds no data about people who never signed up); they are counted here in
//! memory under the same rules, so that the answers never reveal whether an account exists.
//!
//! The rules (numbers are the defaults; each is a setting, and 0 turns it off):
//! - **Per account and address**: after 5 consecutive failures from one address, that address
//!   must wait 30 s before its next attempt on that account, doubling with every further failure
//!   (60 s, 120 s, …) up to 1 hour. A success from the address clears its streak. While waiting,
//!   every attempt gets 429, even with the right password, so the throttle cannot be probed.
//! - **Per account, all addresses**: at most 100 failures in any hour. Past that, attempts from
//!   addresses that have never logged in to the account get 429 until the oldest failure leaves
//!   the window. Addresses that have logged in before (or registered the account) are exempt, so
//!   an attacker spraying from new addresses cannot lock the owner out; they still have their
//!   own per-address limit.
//! - **Per address**: at most 20 sign-ups and 100 login attempts per minute.

pub mod turns;

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher as _;
use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::{Email, UserId};
use crate::events::{Event, RecordedEvent};
use crate::snapshot::codec::{Malformed, Reader, Writer};

/// The limits; 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Consecutive failures per account and address before the address must wait.
    pub login_max_failures: u32,
    /// The first wait; each further failure doubles it.
    pub lockout_base: Duration,
    /// The longest wait.
    pub lockout_max: Duration,
    /// Failures per account in any hour, from addresses that never logged in to it.
    pub account_failures_per_hour: u32,
    /// Sign-ups per address in any minute.
    pub signups_per_minute: u32,
    /// Login attempts (password checks about to run or wait) per address in any minute.
    pub logins_per_minute: u32,
    /// Failed refreshes (unknown, expired, revoked or spent tokens) per address in any minute.
    pub refresh_failures_per_minute: u32,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl ThrottlePolicy {
    /// The defaults, stated once: the CLI's defaults are these.
    pub const DEFAULT: Self = Self {
        login_max_failures: 5,
        lockout_base: Duration::from_secs(30),
        lockout_max: Duration::from_secs(60 * 60),
        account_failures_per_hour: 100,
        signups_per_minute: 20,
        // A person logs in a few times a day, and even an office behind one address rarely
        // reaches one a second; 100 a minute is a fifth of what 2 cores check at cost 12, so one
        // address cannot take the rest from everyone else.
        logins_per_minute: 100,
        // A client refreshes once per access-token lifetime and fails only when its session has
        // ended; 30 failures a minute is far past any client's need, and a guesser's 30 a minute
        // against 2^128 tags is nothing.
        refresh_failures_per_minute: 30,
    };

    /// No limits at all.
    pub fn off() -> Self {
        Self {
            login_max_failures: 0,
            account_failures_per_hour: 0,
            signups_per_minute: 0,
            logins_per_minute: 0,
            refresh_failures_per_minute: 0,
            ..Self::default()
        }
    }
}

/// Who a login names: an account, or an email no account has.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    User(UserId),
    Unknown(Email),
}

/// Refused for now; retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

impl Throttled {
    /// Whole seconds for a `Retry-After` header, never 0.
    pub fn retry_after_seconds(&self) -> u64 {
        self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)
    }
}

/// Where a user stands with the login throttle ([`Throttle::standing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStanding {
    /// Consecutive failures per address since its last success, newest first.
    pub streaks: Vec<FailureStreak>,
    /// Failures from any address within the last hour.
    pub failures_last_hour: usize,
    /// Addresses refused now, and for how long.
    pub locked_addresses: Vec<(Option<IpAddr>, Throttled)>,
    /// Set while addresses the account never used are refused (too many failures this hour).
    pub new_addresses: Option<Throttled>,
}

/// One address's consecutive failures on one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureStreak {
    pub client: Option<IpAddr>,
    pub failures: u32,
    pub last_failure: DateTime<Utc>,
}

/// A streak of failures from one address on one account.
#[derive(Debug, Clone, Copy)]
struct Streak {
    failures: u32,
    last_failure: DateTime<Utc>,
}

const HOUR: TimeDelta = TimeDelta::hours(1);
const MINUTE: TimeDelta = TimeDelta::minutes(1);
/// A streak with no failure for this long is forgotten.
const STREAK_MEMORY: TimeDelta = TimeDelta::hours(24);

#[derive(Debug, Clone, Default)]
pub struct Throttle {
    policy: ThrottlePolicy,
    streaks: HashMap<(Subject, Option<IpAddr>), Streak>,
    /// Failure times per account within the last hour, oldest first.
    account_failures: HashMap<Subject, VecDeque<DateTime<Utc>>>,
    /// Addresses that logged in to (or registered) each account.
    known_addresses: KnownAddresses,
    /// Sign-ups per address within the last minute.
    signups: HashMap<Option<IpAddr>, SignupWindow>,
    /// Login attempts per address within the last minute, oldest first (in memory only: a
    /// flood's rate, not history).
    logins: HashMap<Option<IpAddr>, VecDeque<DateTime<Utc>>>,
    /// Failed refreshes per address within the last minute, oldest first (in memory only).
    refresh_failures: HashMap<Option<IpAddr>, VecDeque<DateTime<Utc>>>,
}

/// One address's sign-ups within the last minute: admitted attempts and registrations read
/// from the log, each counted once.
#[derive(Debug, Clone, Default)]
struct SignupWindow {
    /// When each counted sign-up happened, oldest first.
    times: VecDeque<DateTime<Utc>>,
    /// Admitted here whose `UserRegistered` has not been applied yet. The event of an admitted
    /// sign-up takes its place instead of counting again, so the live path (admitted, then
    /// committed) and a replay (committed only) count the same.
    unmatched: usize,
}

impl Throttle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    pub fn policy(&self) -> &ThrottlePolicy {
        &self.policy
    }

    pub fn set_policy(&mut self, policy: ThrottlePolicy) {
        self.policy = policy;
    }

    /// Takes the state of `other` (rebuilt from the log), keeping this policy.
    pub fn replace_state(&mut self, other: Throttle) {
        let policy = self.policy;
        *self = other;
        self.policy = policy;
    }

    /// Updates the state from a committed event, whoever wrote it and whenever it is read.
    /// Events must come in log order.
    pub fn apply(&mut self, event: &RecordedEvent) {
        let client = event.metadata.client_ip;
        let at = event.recorded_at;
        match &event.event {
            // An import is no sign-up anyone sent: it counts against no address's rate (a
            // hundred thousand of them would hold the address-less window for a minute).
            Event::UserRegistered(registered) if registered.imported.is_none() => {
                let window = self.signups.entry(client).or_default();
                // Only the last minute counts, and times only move on: older ones can go now
                // (a replay of a million sign-ups would otherwise hold them all).
                window.forget_before(at - MINUTE);
                if window.unmatched > 0 {
                    window.unmatched -= 1;
                } else {
                    window.times.push_back(at);
                }
                // The address that created the account is one its owner uses.
                if let Some(ip) = client {
                    self.known_addresses.insert(registered.user_id, ip);
                }
            }
            Event::UserRegistered(_) => {}
            Event::LoginSucceeded(login) => self.succeeded(&Subject::User(login.user_id), client),
            Event::LoginFailed(failed) => self.failed(Subject::User(failed.user_id), client, at),
            // A password change proves the password, like a successful login.
            Event::PasswordChanged(changed) => {
                self.succeeded(&Subject::User(changed.user_id), client);
            }
            Event::PasswordRehashed(_)
            | Event::SessionStarted(_)
            | Event::SessionEnded(_)
            | Event::SigningKeyAdded(_)
            | Event::SigningKeyActivated(_)
            | Event::SigningKeyRetired(_)
            | Event::LogKeyRotated(_)
            | Event::RoleGranted(_)
            | Event::RoleRevoked(_)
            | Event::UserDisabled(_)
            | Event::UserEnabled(_)
            | Event::Redacted(_) => {}
            // Erased: nothing about the account is kept.
            Event::UserErased(erased) => {
                let subject = Subject::User(erased.user_id);
                self.streaks.retain(|(streaked, _), _| *streaked != subject);
                self.account_failures.remove(&subject);
                self.known_addresses.remove(erased.user_id);
            }
            // An admin's unlock: the account's failures are forgotten, from every address.
            Event::LockoutCleared(cleared) => {
                let subject = Subject::User(cleared.user_id);
                self.streaks.retain(|(streaked, _), _| *streaked != subject);
                self.account_failures.remove(&subject);
            }
        }
    }

    /// Whether a login naming `subject` from `client` may be checked now.
    pub fn check_login(
        &self,
        subject: &Subject,
        client: Option<IpAddr>,
        now: DateTime<Utc>,
    ) -> Result<(), Throttled> {
        let policy = &self.policy;
        if policy.login_max_failures > 0
            && let Some(streak) = self.streaks.get(&(subject.clone(), client))
            && streak.failures >= policy.login_max_failures
        {
            let doublings = (streak.failures - policy.login_max_failures).min(31);
            let wait = policy
                .lockout_base
                .saturating_mul(1 << doublings)
                .min(policy.lockout_max);
            let until = streak.last_failure + delta(wait);
            if now < until {
                return Err(throttled(until - now));
            }
        }
        if policy.account_failures_per_hour > 0 && !self.is_known(subject, client) {
            let recent = self
                .account_failures
                .get(subject)
                .map(|times| recent(times, now - HOUR))
                .unwrap_or_default();
            if recent.len() >= policy.account_failures_per_hour as usize
                && let Some(oldest) = recent.first()
            {
                return Err(throttled(**oldest + HOUR - now));
            }
        }
        Ok(())
    }

    /// The addresses refused for `subject` at `now`, and for how long, for auditors.
    pub fn locked_addresses(
        &self,
        subject: &Subject,
        now: DateTime<Utc>,
    ) -> Vec<(Option<IpAddr>, Throttled)> {
        self.streaks
            .keys()
            .filter(|(who, _)| who == subject)
            .filter_map(|(who, client)| {
                self.check_login(who, *client, now)
                    .err()
                    .map(|wait| (*client, wait))
            })
            .collect()
    }

    /// Where `user` stands with the login throttle at `now`, for admins: the failure streaks
    /// per address, the failures within the last hour, and what is locked out and how long.
    pub fn standing(&self, user: UserId, now: DateTime<Utc>) -> LoginStanding {
        let subject = Subject::User(user);
        let mut streaks: Vec<FailureStreak> = self
            .streaks
            .iter()
            .filter(|((who, _), _)| *who == subject)
            .map(|((_, client), streak)| FailureStreak {
                client: *client,
                failures: streak.failures,
                last_failure: streak.last_failure,
            })
            .collect();
        streaks.sort_by_key(|streak| std::cmp::Reverse(streak.last_failure));
        let failures_last_hour = self
            .account_failures
            .get(&subject)
            .map_or(0, |times| recent(times, now - HOUR).len());
        // An address the account never used is refused while the hourly count is full; `None`
        // stands for such an address here (no known address has `None`).
        let new_addresses = self.check_login(&subject, None, now).err();
        LoginStanding {
            streaks,
            failures_last_hour,
            locked_addresses: self.locked_addresses(&subject, now),
            new_addresses,
        }
    }

    /// How many checks of `subject` from `client` may run before the next outcome is known:
    /// the failures left before a lockout, or one once a lockout has passed (its failure would
    /// double the wait). Ask only after [`Throttle::check_login`] passed.
    pub fn allowance(&self, subject: &Subject, client: Option<IpAddr>) -> u32 {
        match self.policy.login_max_failures {
            0 => turns::MAX_RUNNING,
            limit => limit.saturating_sub(self.streak(subject, client)).max(1),
        }
    }

    /// Consecutive failures of `subject` from `client` so far.
    pub fn streak(&self, subject: &Subject, client: Option<IpAddr>) -> u32 {
        self.streaks
            .get(&(subject.clone(), client))
            .map_or(0, |streak| streak.failures)
    }

    /// Whether `client` may sign up now; if so, the attempt counts against its rate, whatever
    /// its outcome (a refused duplicate costs the same as a new account).
    pub fn admit_signup(
        &mut self,
        client: Option<IpAddr>,
        now: DateTime<Utc>,
    ) -> Result<(), Throttled> {
        let limit = self.policy.signups_per_minute;
        let window = self.signups.entry(client).or_default();
        window.forget_before(now - MINUTE);
        admit_per_minute(&mut window.times, limit, now)?;
        if limit > 0 {
            window.unmatched += 1;
        }
        Ok(())
    }

    /// Whether `client` may start another login attempt now; if so, it counts against its rate.
    pub fn admit_login(
        &mut self,
        client: Option<IpAddr>,
        now: DateTime<Utc>,
    ) -> Result<(), Throttled> {
        let times = self.logins.entry(client).or_default();
        drop_before(times, now - MINUTE);
        admit_per_minute(times, self.policy.logins_per_minute, now)
    }

    /// Whether `client` may try a refresh now: refused while it has failed too many this minute.
    pub fn check_refresh(
        &mut self,
        client: Option<IpAddr>,
        now: DateTime<Utc>,
    ) -> Result<(), Throttled> {
        let limit = self.policy.refresh_failures_per_minute as usize;
        let Some(times) = self.refresh_failures.get_mut(&client) else {
            return Ok(());
        };
        drop_before(times, now - MINUTE);
        match times.front() {
            Some(oldest) if limit > 0 && times.len() >= limit => {
                Err(throttled(*oldest + MINUTE - now))
            }
            _ => Ok(()),
        }
    }

    /// A refresh from `client` failed (it leaves no event).
    pub fn refresh_failed(&mut self, client: Option<IpAddr>, now: DateTime<Utc>) {
        if self.policy.refresh_failures_per_minute > 0 {
            self.refresh_failures
                .entry(client)
                .or_default()
                .push_back(now);
        }
    }

    /// A failed login on an email with no account: counted here, since it leaves no event.
    pub fn unknown_failed(&mut self, email: Email, client: Option<IpAddr>, now: DateTime<Utc>) {
        self.failed(Subject::Unknown(email), client, now);
    }

    /// Forgets what can no longer matter, so memory stays bounded by recent activity.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.streaks
            .retain(|_, streak| now - streak.last_failure < STREAK_MEMORY);
        self.account_failures.retain(|_, times| {
            drop_before(times, now - HOUR);
            !times.is_empty()
        });
        self.signups.retain(|_, window| {
            window.forget_before(now - MINUTE);
            !window.times.is_empty()
        });
        self.logins.retain(|_, times| {
            drop_before(times, now - MINUTE);
            !times.is_empty()
        });
        self.refresh_failures.retain(|_, times| {
            drop_before(times, now - MINUTE);
            !times.is_empty()
        });
    }

    fn failed(&mut self, subject: Subject, client: Option<IpAddr>, at: DateTime<Utc>) {
        let streak = self
            .streaks
            .entry((subject.clone(), client))
            .or_insert(Streak {
                failures: 0,
                last_failure: at,
            });
        streak.failures = streak.failures.saturating_add(1);
        streak.last_failure = at;
        let times = self.account_failures.entry(subject).or_default();
        times.push_back(at);
        drop_before(times, at - HOUR);
    }

    fn succeeded(&mut self, subject: &Subject, client: Option<IpAddr>) {
        self.streaks.remove(&(subject.clone(), client));
        if let (Subject::User(user), Some(ip)) = (subject, client) {
            self.known_addresses.insert(*user, ip);
        }
    }

    fn is_known(&self, subject: &Subject, client: Option<IpAddr>) -> bool {
        match (subject, client) {
            (Subject::User(user), Some(ip)) => self.known_addresses.contains(*user, ip),
            _ => false,
        }
    }
}

/// The throttle's part of a snapshot ([`crate::snapshot`]): everything but the policy, which
/// is configuration. Each map is written in key order, so that one state always writes the
/// same bytes.
impl Throttle {
    pub(crate) fn write_snapshot(&self, w: &mut Writer) {
        let mut streaks: Vec<_> = self.streaks.iter().collect();
        streaks.sort_unstable_by(|a, b| subject_order(&a.0.0, &b.0.0).then(a.0.1.cmp(&b.0.1)));
        w.len(streaks.len());
        for ((subject, client), streak) in streaks {
            write_subject(w, subject);
            w.opt_ip(*client);
            w.u32(streak.failures);
            w.time(streak.last_failure);
        }
        let mut failures: Vec<_> = self.account_failures.iter().collect();
        failures.sort_unstable_by(|a, b| subject_order(a.0, b.0));
        w.len(failures.len());
        for (subject, times) in failures {
            write_subject(w, subject);
            write_times(w, times);
        }
        let mut known: Vec<UserId> = self.known_addresses.users().collect();
        known.sort_unstable();
        w.len(known.len());
        for user in known {
            w.uuid(user.as_uuid());
            let addresses = self.known_addresses.of(user);
            w.len(addresses.len());
            for address in addresses {
                w.ip(address);
            }
        }
        let mut signups: Vec<_> = self.signups.iter().collect();
        signups.sort_unstable_by_key(|(client, _)| **client);
        w.len(signups.len());
        for (client, window) in signups {
            w.opt_ip(*client);
            write_times(w, &window.times);
            w.len(window.unmatched);
        }
        for map in [&self.logins, &self.refresh_failures] {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by_key(|(client, _)| **client);
            w.len(entries.len());
            for (client, times) in entries {
                w.opt_ip(*client);
                write_times(w, times);
            }
        }
    }

    pub(crate) fn read_snapshot(
        r: &mut Reader<'_>,
        policy: ThrottlePolicy,
    ) -> Result<Self, Malformed> {
        let mut throttle = Self::new(policy);
        for _ in 0..r.len()? {
            let key = (read_subject(r)?, r.opt_ip()?);
            let streak = Streak {
                failures: r.u32()?,
                last_failure: r.time()?,
            };
            throttle.streaks.insert(key, streak);
        }
        for _ in 0..r.len()? {
            let subject = read_subject(r)?;
            throttle.account_failures.insert(subject, read_times(r)?);
        }
        let count = r.len()?;
        throttle.known_addresses.reserve(count);
        for _ in 0..count {
            let user = UserId::from(r.uuid()?);
            for _ in 0..r.len()? {
                throttle.known_addresses.insert(user, r.ip()?);
            }
        }
        for _ in 0..r.len()? {
            let client = r.opt_ip()?;
            let window = SignupWindow {
                times: read_times(r)?,
                unmatched: r.len()?,
            };
            throttle.signups.insert(client, window);
        }
        for map in [&mut throttle.logins, &mut throttle.refresh_failures] {
            for _ in 0..r.len()? {
                let client = r.opt_ip()?;
                map.insert(client, read_times(r)?);
            }
        }
        Ok(throttle)
    }
}

fn subject_order(a: &Subject, b: &Subject) -> std::cmp::Ordering {
    match (a, b) {
        (Subject::User(a), Subject::User(b)) => a.cmp(b),
        (Subject::User(_), Subject::Unknown(_)) => std::cmp::Ordering::Less,
        (Subject::Unknown(_), Subject::User(_)) => std::cmp::Ordering::Greater,
        (Subject::Unknown(a), Subject::Unknown(b)) => a.cmp(b),
    }
}

fn write_subject(w: &mut Writer, subject: &Subject) {
    match subject {
        Subject::User(user) => {
            w.u8(0);
            w.uuid(user.as_uuid());
        }
        Subject::Unknown(email) => {
            w.u8(1);
            w.str(email.as_str());
        }
    }
}

fn read_subject(r: &mut Reader<'_>) -> Result<Subject, Malformed> {
    match r.u8()? {
        0 => Ok(Subject::User(UserId::from(r.uuid()?))),
        1 => Ok(Subject::Unknown(Email::from_record(r.str()?.to_owned()))),
        _ => Err(Malformed(
            "a throttle subject is neither a user nor an address",
        )),
    }
}

fn write_times(w: &mut Writer, times: &VecDeque<DateTime<Utc>>) {
    w.len(times.len());
    for time in times {
        w.time(*time);
    }
}

fn read_times(r: &mut Reader<'_>) -> Result<VecDeque<DateTime<Utc>>, Malformed> {
    (0..r.len()?).map(|_| r.time()).collect()
}

/// The addresses each account was registered or logged in from. The first of each account in
/// one dense vector of (user, address), found through a table of 4-byte slots (a hash map of
/// the pairs would double every byte at a million accounts); the others, for the accounts seen
/// from more than one, in sets beside it. Keyed by user ids, which the service makes at random,
/// so hashed with foldhash rather than SipHash.
#[derive(Debug, Clone, Default)]
struct KnownAddresses {
    hasher: hashbrown::DefaultHashBuilder,
    first: Vec<(UserId, IpAddr)>,
    slots: hashbrown::HashTable<u32>,
    more: hashbrown::HashMap<UserId, HashSet<IpAddr>>,
}

impl KnownAddresses {
    fn slot(&self, user: UserId) -> Option<usize> {
        let first = &self.first;
        self.slots
            .find(self.hasher.hash_one(user), |slot| {
                first[*slot as usize].0 == user
            })
            .map(|slot| *slot as usize)
    }

    fn insert(&mut self, user: UserId, ip: IpAddr) {
        match self.slot(user) {
            Some(slot) if self.first[slot].1 != ip => {
                self.more.entry(user).or_default().insert(ip);
            }
            Some(_) => {}
            None => {
                let Self {
                    hasher,
                    first,
                    slots,
                    ..
                } = self;
                if first.len() == first.capacity() {
                    // By a quarter, not doubled: at most a quarter of the vector is slack.
                    first.reserve_exact((first.capacity() / 4).max(64));
                }
                let slot = u32::try_from(first.len()).unwrap_or(u32::MAX);
                first.push((user, ip));
                slots.insert_unique(hasher.hash_one(user), slot, |slot| {
                    hasher.hash_one(first[*slot as usize].0)
                });
            }
        }
    }

    fn contains(&self, user: UserId, ip: IpAddr) -> bool {
        self.slot(user).is_some_and(|slot| self.first[slot].1 == ip)
            || self.more.get(&user).is_some_and(|more| more.contains(&ip))
    }

    fn remove(&mut self, user: UserId) {
        self.more.remove(&user);
        let Self {
            hasher,
            first,
            slots,
            ..
        } = self;
        let Ok(entry) = slots.find_entry(hasher.hash_one(user), |slot| {
            first[*slot as usize].0 == user
        }) else {
            return;
        };
        let (slot, _) = entry.remove();
        let slot = slot as usize;
        let last = first.len() - 1;
        first.swap_remove(slot);
        if slot != last {
            // The last pair moved into the freed slot: its index entry follows it.
            let moved = hasher.hash_one(first[slot].0);
            if let Some(index) = slots.find_mut(moved, |index| *index as usize == last) {
                *index = slot as u32;
            }
        }
    }

    fn reserve(&mut self, users: usize) {
        self.first.reserve_exact(users);
        let Self {
            hasher,
            first,
            slots,
            ..
        } = self;
        slots.reserve(users, |slot| hasher.hash_one(first[*slot as usize].0));
    }

    fn users(&self) -> impl Iterator<Item = UserId> + '_ {
        self.first.iter().map(|(user, _)| *user)
    }

    /// The user's addresses, sorted.
    fn of(&self, user: UserId) -> Vec<IpAddr> {
        let mut addresses: Vec<IpAddr> = self
            .slot(user)
            .map(|slot| self.first[slot].1)
            .into_iter()
            .collect();
        if let Some(more) = self.more.get(&user) {
            addresses.extend(more.iter().copied());
        }
        addresses.sort_unstable();
        addresses
    }
}

impl SignupWindow {
    fn forget_before(&mut self, since: DateTime<Utc>) {
        drop_before(&mut self.times, since);
        self.unmatched = self.unmatched.min(self.times.len());
    }
}

/// One more attempt at `now` against `limit` a minute (0: no limit), given the attempts of the
/// last minute, oldest first; counted if admitted.
fn admit_per_minute(
    times: &mut VecDeque<DateTime<Utc>>,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<(), Throttled> {
    if limit == 0 {
        return Ok(());
    }
    match times.front() {
        Some(oldest) if times.len() >= limit as usize => Err(throttled(*oldest + MINUTE - now)),
        _ => {
            times.push_back(now);
            Ok(())
        }
    }
}

/// The times at or after `since`.
fn recent(times: &VecDeque<DateTime<Utc>>, since: DateTime<Utc>) -> Vec<&DateTime<Utc>> {
    times.iter().filter(|time| **time > since).collect()
}

fn drop_before(times: &mut VecDeque<DateTime<Utc>>, since: DateTime<Utc>) {
    while times.front().is_some_and(|time| *time <= since) {
        times.pop_front();
    }
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

fn throttled(wait: TimeDelta) -> Throttled {
    Throttled {
        retry_after: wait.to_std().unwrap_or(Duration::from_secs(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PasswordHash;
    use crate::events::{EventMetadata, LoginFailed, LoginSucceeded, UserRegistered};

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([198, 51, 100, last]))
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("valid time")
    }

    fn event(
        position: i64,
        event: Event,
        client: Option<IpAddr>,
        when: DateTime<Utc>,
    ) -> RecordedEvent {
        RecordedEvent {
            position,
            stream_version: 1,
            event,
            metadata: EventMetadata::new(client, None),
            recorded_at: when,
        }
    }

    fn registered(user: UserId, client: Option<IpAddr>) -> RecordedEvent {
        let event_ = Event::UserRegistered(UserRegistered {
            user_id: user,
            email: Email::parse("victim@example.com").expect("valid"),
            password_hash: PasswordHash::new("$2b$04$x".to_owned()),
            imported: None,
        });
        event(1, event_, client, at(0))
    }

    fn failed(user: UserId, client: Option<IpAddr>, when: DateTime<Utc>) -> RecordedEvent {
        event(
            2,
            Event::LoginFailed(LoginFailed { user_id: user }),
            client,
            when,
        )
    }

    fn retry(result: Result<(), Throttled>) -> Option<u64> {
        result.err().map(|t| t.retry_after_seconds())
    }

    #[test]
    fn known_addresses_survive_removals_that_move_others() {
        let mut known = KnownAddresses::default();
        let users: Vec<UserId> = (0..300).map(|_| UserId::new()).collect();
        for (n, user) in users.iter().enumerate() {
            known.insert(
                *user,
                IpAddr::from([10, 0, (n / 256) as u8, (n % 256) as u8]),
            );
            if n % 5 == 0 {
                known.insert(*user, IpAddr::from([192, 0, 2, 1]));
            }
        }
        for user in users.iter().step_by(3) {
            known.remove(*user);
        }
        for (n, user) in users.iter().enumerate() {
            let first = IpAddr::from([10, 0, (n / 256) as u8, (n % 256) as u8]);
            let kept = n % 3 != 0;
            assert_eq!(known.contains(*user, first), kept, "user {n}");
            assert_eq!(
                known.contains(*user, IpAddr::from([192, 0, 2, 1])),
                kept && n % 5 == 0
            );
        }
        assert_eq!(known.users().count(), 200);
    }

    #[test]
    fn five_failures_lock_the_address_and_the_wait_doubles() {
        let user = UserId::new();
        let subject = Subject::User(user);
        let mut throttle = Throttle::new(ThrottlePolicy::default());
        for i in 0..4 {
            throttle.apply(&failed(user, ip(1), at(i)));
        }
        assert_eq!(retry(throttle.check_login(&subject, ip(1), at(4))), None);
        throttle.apply(&failed(user, ip(1), at(4)));
        // Locked for 30 s after the fifth failure, whatever password comes next.
        assert_eq!(
            retry(throttle.check_login(&subject, ip(1), at(5))),
            Some(29)
        );
        assert_eq!(retry(throttle.check_login(&subject, ip(1), at(34))), None);
        // Another address is not affected.
        assert_eq!(retry(throttle.check_login(&subject, ip(2), at(5))), None);
        // The sixth failure doubles the wait, the seventh doubles it again.
        throttle.apply(&failed(user, ip(1), at(40)));
        assert_eq!(
            retry(throttle.check_login(&subject, ip(1), at(40))),
            Some(60)
        );
        throttle.apply(&failed(user, ip(1), at(100)));
        assert_eq!(
            retry(throttle.check_login(&subject, ip(1), at(100))),
            Some(120)
        );
    }

    #[test]
    fn the_wait_is_capped_and_a_success_clears_the_streak() {
        let user = UserId::new();
        let subject = Subject::User(user);
        let mut throttle = Throttle::new(ThrottlePolicy::default());
        for i in 0..40 {
            throttle.apply(&failed(user, ip(1), at(i)));
        }
        assert_eq!(
            retry(throttle.check_login(&subject, ip(1), at(39))),
            Some(3600)
        );
        throttle.apply(&event(
            3,
            Event::LoginSucceeded(LoginSucceeded { user_id: user }),
            ip(1),
            at(4000),
        ));
        assert_eq!(retry(throttle.check_login(&subject, ip(1), at(4000))), None);
    }

    #[test]
    fn spraying_from_new_addresses_cannot_lock_out_a_known_address() {
        let user = UserId::new();
        let subject = Subject::User(user);
        let mut throttle = Throttle::new(ThrottlePolicy::default());
        throttle.apply(&registered(user, ip(1)));
        // 100 failures from 100 addresses, 4 each at most: no per-address lock.
        for i in 0..100u8 {
            throttle.apply(&failed(
                user,
                Some(IpAddr::from([203, 0, 113, i])),
                at(i64::from(i)),
            ));
        }
        // A fresh address is refused until the oldest failure is an hour old.
        assert_eq!(
            retry(throttle.check_login(&subject, ip(200), at(100))),
            Some(3500)
        );
        assert_eq!(
            retry(throttle.check_login(&subject, ip(200), at(3601))),
            None
        );
        // The owner's address, which registered the account, is never refused by this rule.
        assert_eq!(retry(throttle.check_login(&subject, ip(1), at(100))), None);
    }

    #[test]
    fn unknown_emails_follow_the_same_rules_in_memory() {
        let email = Email::parse("nobody@example.com").expect("valid");
        let subject = Subject::Unknown(email.clone());
        let mut throttle = Throttle::new(ThrottlePolicy::default());
        for i in 0..5 {
            throttle.unknown_failed(email.clone(), ip(1), at(i));
        }
        assert_eq!(
            retry(throttle.check_login(&subject, ip(1), at(5))),
            Some(29)
        );
    }

    #[test]
    fn signups_per_address_per_minute() {
        let mut throttle = Throttle::new(ThrottlePolicy::default());
        for i in 0..20 {
            assert!(throttle.admit_signup(ip(1), at(i)).is_ok());
        }
        assert_eq!(retry(throttle.admit_signup(ip(1), at(30))), Some(30));
        assert!(throttle.admit_signup(ip(2), at(30)).is_ok());
        assert!(throttle.admit_signup(ip(1), at(61)).is_ok());
        // Replayed registrations count too, so a restart does not reset the rate.
        let mut replayed = Throttle::new(ThrottlePolicy::default());
        for _ in 0..20 {
            replayed.apply(&registered(UserId::new(), ip(3)));
        }
        assert!(replayed.admit_signup(ip(3), at(10)).is_err());
    }

    #[test]
    fn an_admitted_sign_up_and_its_event_count_once() {
        let mut throttle = Throttle::new(ThrottlePolicy {
            signups_per_minute: 2,
            ..ThrottlePolicy::DEFAULT
        });
        assert!(throttle.admit_signup(ip(1), at(0)).is_ok());
        // Its own event, applied after commit, takes the admission's place.
        throttle.apply(&registered(UserId::new(), ip(1)));
        assert!(throttle.admit_signup(ip(1), at(1)).is_ok());
        assert!(throttle.admit_signup(ip(1), at(2)).is_err());
        // Another instance's sign-up from the same address, read from the log, counts too.
        let mut other = Throttle::new(ThrottlePolicy {
            signups_per_minute: 2,
            ..ThrottlePolicy::DEFAULT
        });
        assert!(other.admit_signup(ip(1), at(0)).is_ok());
        other.apply(&registered(UserId::new(), ip(1)));
        other.apply(&registered(UserId::new(), ip(1)));
        assert!(other.admit_signup(ip(1), at(1)).is_err());
    }

    #[test]
    fn imported_users_count_against_no_sign_up_rate() {
        let mut throttle = Throttle::new(ThrottlePolicy {
            signups_per_minute: 1,
            ..ThrottlePolicy::DEFAULT
        });
        for _ in 0..3 {
            let mut import = registered(UserId::new(), None);
            if let Event::UserRegistered(registered) = &mut import.event {
                registered.imported = Some(crate::events::Imported {
                    source: "csv:users.csv".to_owned(),
                    id: None,
                    row: 2,
                    created_at: None,
                });
            }
            throttle.apply(&import);
        }
        assert!(throttle.admit_signup(None, at(1)).is_ok());
    }

    #[test]
    fn the_allowance_is_the_failures_left_and_one_after_a_lockout() {
        let user = UserId::new();
        let subject = Subject::User(user);
        let mut throttle = Throttle::new(ThrottlePolicy::default());
        assert_eq!(throttle.allowance(&subject, ip(1)), 5);
        for i in 0..4 {
            throttle.apply(&failed(user, ip(1), at(i)));
        }
        assert_eq!(throttle.allowance(&subject, ip(1)), 1);
        throttle.apply(&failed(user, ip(1), at(4)));
        assert!(throttle.check_login(&subject, ip(1), at(5)).is_err());
        // The lockout has passed: one more check may run.
        assert!(throttle.check_login(&subject, ip(1), at(40)).is_ok());
        assert_eq!(throttle.allowance(&subject, ip(1)), 1);
        assert_eq!(
            Throttle::new(ThrottlePolicy::off()).allowance(&subject, ip(1)),
            turns::MAX_RUNNING
        );
    }

    #[test]
    fn login_attempts_per_address_per_minute() {
        let mut throttle = Throttle::new(ThrottlePolicy {
            logins_per_minute: 3,
            ..ThrottlePolicy::DEFAULT
        });
        for i in 0..3 {
            assert!(throttle.admit_login(ip(1), at(i)).is_ok());
        }
        assert_eq!(retry(throttle.admit_login(ip(1), at(10))), Some(50));
        assert!(
            throttle.admit_login(ip(2), at(10)).is_ok(),
            "another address"
        );
        assert!(
            throttle.admit_login(ip(1), at(61)).is_ok(),
            "the window slid"
        );
    }

    #[test]
    fn zero_turns_each_limit_off() {
        let user = UserId::new();
        let subject = Subject::User(user);
        let mut throttle = Throttle::new(ThrottlePolicy::off());
        for i in 0..500 {
            throttle.apply(&failed(user, ip(1), at(i)));
            assert!(throttle.admit_signup(ip(1), at(i)).is_ok());
            assert!(throttle.admit_login(ip(1), at(i)).is_ok());
        }
        assert!(throttle.check_login(&subject, ip(1), at(500)).is_ok());
    }

    #[test]
    fn pruning_forgets_only_what_no_longer_matters() {
        let user = UserId::new();
        let subject = Subject::User(user);
        let mut throttle = Throttle::new(ThrottlePolicy::default());
        for i in 0..5 {
            throttle.apply(&failed(user, ip(1), at(i)));
        }
        throttle.prune(at(10));
        assert!(throttle.check_login(&subject, ip(1), at(10)).is_err());
        throttle.prune(at(2 * 24 * 3600));
        assert!(throttle.streaks.is_empty() && throttle.account_failures.is_empty());
    }
}
