//! The email→user directory: the in-memory view of the log that every decision reads.
//!
//! [`Directory::apply`] turns events into directory state; [`crate::state::State::apply`] calls
//! it for start-up replay, the live path after each commit, catch-up and the auditors alike.
//!
//! The users are shared with every [`DirectoryView`]: the registry is their only writer and
//! writes each committed event in place, so publishing a commit to readers costs nothing per
//! user: an HTTP worker looks a user up without a message and without a copy. How they are
//! kept compact is [`store`]'s.

mod store;

use std::collections::{BTreeSet, BinaryHeap};
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::DashMap;

use crate::domain::{Email, PasswordHash, Role, SessionId, UserId};
use crate::events::{Event, RecordedEvent};
use crate::snapshot::codec::{Malformed, Reader, Writer};
use store::{Account, Credentials, EmailIndex, Rare, Users};

/// A registered user as the log describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub id: UserId,
    pub email: Email,
    pub password_hash: PasswordHash,
    /// Version of the last event in the user's stream: the next event takes `version + 1`.
    pub version: i32,
    pub logins: u64,
    pub failed_logins: u64,
    /// When `UserRegistered` was recorded, or for an imported user, when the source says the
    /// account was created (if it says).
    pub created_at: DateTime<Utc>,
    /// When the last `LoginSucceeded` was recorded.
    pub last_login_at: Option<DateTime<Utc>>,
    /// Sessions started and not ended or expired, oldest first.
    pub sessions: Vec<SessionId>,
    /// `PasswordChanged` events so far: a password check made before the latest change is
    /// stale, and its outcome is refused (see [`crate::decide`]).
    pub password_changes: u32,
    /// Granted and not revoked, sorted; empty for most users (no allocation).
    pub roles: Box<[Role]>,
    /// An admin disabled the user: logins fail, and there are no sessions.
    pub disabled: bool,
}

impl UserEntry {
    pub fn has_role(&self, role: &Role) -> bool {
        self.roles.binary_search(role).is_ok()
    }
}

/// A live session as the log describes it. Its current refresh token lives beside the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    pub user_id: UserId,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<Box<str>>,
}

/// What callers outside the registry learn about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub user_id: UserId,
    pub email: Email,
    /// Sorted.
    pub roles: Box<[Role]>,
}

impl From<&UserEntry> for UserSummary {
    fn from(user: &UserEntry) -> Self {
        Self {
            user_id: user.id,
            email: user.email.clone(),
            roles: user.roles.clone(),
        }
    }
}

/// What a request needs of a session: whose it is and when it ends at the latest. A copy, so
/// the check on every Bearer request allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLife {
    pub user_id: UserId,
    pub expires_at: DateTime<Utc>,
}

impl From<&SessionEntry> for SessionLife {
    fn from(entry: &SessionEntry) -> Self {
        Self {
            user_id: entry.user_id,
            expires_at: entry.expires_at,
        }
    }
}

type Sessions = DashMap<SessionId, SessionEntry>;

impl Account {
    /// The public form: a copy.
    fn entry(&self) -> UserEntry {
        let rare = self.rare();
        UserEntry {
            id: self.id,
            email: Email::from_record(self.credentials.email().to_owned()),
            password_hash: self.credentials.password_hash(),
            version: self.version,
            logins: self.logins,
            failed_logins: rare.map_or(0, |rare| rare.failed_logins),
            created_at: self.created_at,
            last_login_at: self.last_login_at,
            sessions: self.sessions().to_vec(),
            password_changes: rare.map_or(0, |rare| rare.password_changes),
            roles: self.roles().into(),
            disabled: self.disabled,
        }
    }

    fn summary(&self) -> UserSummary {
        UserSummary {
            user_id: self.id,
            email: Email::from_record(self.credentials.email().to_owned()),
            roles: self.roles().into(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Directory {
    /// Written only by the directory's owner (the registry), read by its views on any thread.
    users: Arc<Users>,
    /// Live sessions, written and read the same way: a Bearer request checks its session here.
    sessions: Arc<Sessions>,
    /// Read only by the owner's decisions (sign-up and login look users up by email).
    by_email: EmailIndex,
    /// Who holds `admin`, for the owner's decisions (the last admin's guard).
    admins: BTreeSet<UserId>,
}

/// A read-only handle on a [`Directory`]'s users, for other threads. Cloning it is cheap.
#[derive(Debug, Clone)]
pub struct DirectoryView {
    users: Arc<Users>,
    sessions: Arc<Sessions>,
}

impl DirectoryView {
    /// The user with this id, as far as the log has been applied, unless disabled.
    pub fn find(&self, id: UserId) -> Option<UserSummary> {
        self.users
            .get(id, |account| (!account.disabled).then(|| account.summary()))
            .flatten()
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Up to `limit` users in email order whose email starts with `prefix` (ASCII case
    /// ignored) and sorts after `after`, and whether more follow. Keyset paging: emails never
    /// change, so a listing page by page skips and repeats nobody, whatever sign-ups (or
    /// erasures, which only remove) happen meanwhile. O(users × log limit): run it off the request thread.
    pub fn page(&self, prefix: &str, after: Option<&str>, limit: usize) -> (Vec<UserEntry>, bool) {
        let mut smallest: BinaryHeap<(Email, UserId)> = BinaryHeap::with_capacity(limit + 2);
        self.users.for_each(|account| {
            let email = account.credentials.email();
            let matches = email.len() >= prefix.len()
                && email.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
                && after.is_none_or(|after| email > after);
            if !matches {
                return;
            }
            if smallest.len() <= limit {
                smallest.push((Email::from_record(email.to_owned()), account.id));
            } else if smallest
                .peek()
                .is_some_and(|(largest, _)| email < largest.as_str())
            {
                smallest.pop();
                smallest.push((Email::from_record(email.to_owned()), account.id));
            }
        });
        let more = smallest.len() > limit;
        let mut page = smallest.into_sorted_vec();
        page.truncate(limit);
        let users = page
            .into_iter()
            .filter_map(|(_, id)| self.get(id))
            .collect();
        (users, more)
    }

    /// The user as the log describes them, in full (a copy).
    pub fn get(&self, id: UserId) -> Option<UserEntry> {
        self.users.get(id, Account::entry)
    }

    /// Whose the session is and when it ends, if it is live as far as the log has been applied
    /// (expiry is the caller's to check against its clock).
    pub fn session(&self, id: SessionId) -> Option<SessionLife> {
        self.sessions
            .get(&id)
            .map(|entry| SessionLife::from(entry.value()))
    }

    /// The user's live sessions, oldest first.
    pub fn sessions_of(&self, user: UserId) -> Vec<(SessionId, SessionEntry)> {
        let ids = self
            .users
            .get(user, |account| account.sessions().to_vec())
            .unwrap_or_default();
        ids.into_iter()
            .filter_map(|id| {
                self.sessions
                    .get(&id)
                    .map(|entry| (id, entry.value().clone()))
            })
            .collect()
    }
}

impl Directory {
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle that sees every event this directory applies from now on.
    pub fn view(&self) -> DirectoryView {
        DirectoryView {
            users: Arc::clone(&self.users),
            sessions: Arc::clone(&self.sessions),
        }
    }

    /// Folds one committed event into the directory. Holds no decisions: every check happened
    /// before the event was appended.
    pub fn apply(&mut self, recorded: &RecordedEvent) {
        match &recorded.event {
            Event::UserRegistered(registered) => {
                self.users.insert(Account {
                    id: registered.user_id,
                    credentials: Credentials::new(
                        registered.email.as_str(),
                        registered.password_hash.as_str(),
                    ),
                    // An imported user's account is as old as the source says.
                    created_at: registered
                        .imported
                        .as_ref()
                        .and_then(|imported| imported.created_at)
                        .unwrap_or(recorded.recorded_at),
                    last_login_at: None,
                    version: recorded.stream_version,
                    disabled: false,
                    logins: 0,
                    rare: None,
                });
                // Keyed by today's form of the address, so one registered under older rules is
                // found by the spelling sign-up and login parse to now.
                let canonical = registered.email.canonical();
                self.by_email
                    .insert(&self.users, registered.user_id, canonical.as_str());
            }
            Event::LoginSucceeded(login) => self.update(login.user_id, recorded, |user| {
                user.logins += 1;
                user.last_login_at = Some(recorded.recorded_at);
            }),
            Event::LoginFailed(failed) => self.update(failed.user_id, recorded, |user| {
                user.change_rare(|rare| rare.failed_logins += 1);
            }),
            Event::PasswordRehashed(rehashed) => self.update(rehashed.user_id, recorded, |user| {
                user.credentials = user.credentials.with_hash(rehashed.password_hash.as_str());
            }),
            Event::PasswordChanged(changed) => self.update(changed.user_id, recorded, |user| {
                user.credentials = user.credentials.with_hash(changed.password_hash.as_str());
                user.change_rare(|rare| rare.password_changes += 1);
            }),
            Event::SessionStarted(started) => {
                self.sessions.insert(
                    started.session_id,
                    SessionEntry {
                        user_id: started.user_id,
                        started_at: recorded.recorded_at,
                        expires_at: started.expires_at,
                        client_ip: recorded.metadata.client_ip,
                        user_agent: recorded.metadata.user_agent.as_deref().map(Box::from),
                    },
                );
                self.update(started.user_id, recorded, |user| {
                    user.change_rare(|rare| rare.sessions.push(started.session_id));
                });
            }
            Event::SessionEnded(ended) => {
                self.sessions.remove(&ended.session_id);
                self.update(ended.user_id, recorded, |user| {
                    user.change_rare(|rare| rare.sessions.retain(|id| *id != ended.session_id));
                });
            }
            Event::RoleGranted(granted) => {
                if granted.role.is_admin() {
                    self.admins.insert(granted.user_id);
                }
                self.update(granted.user_id, recorded, |user| {
                    user.change_rare(|rare| {
                        if let Err(at) = rare.roles.binary_search(&granted.role) {
                            let mut roles = std::mem::take(&mut rare.roles).into_vec();
                            roles.insert(at, granted.role.clone());
                            rare.roles = roles.into_boxed_slice();
                        }
                    });
                });
            }
            Event::RoleRevoked(revoked) => {
                if revoked.role.is_admin() {
                    self.admins.remove(&revoked.user_id);
                }
                self.update(revoked.user_id, recorded, |user| {
                    user.change_rare(|rare| {
                        if rare.roles.binary_search(&revoked.role).is_ok() {
                            let mut roles = std::mem::take(&mut rare.roles).into_vec();
                            roles.retain(|role| *role != revoked.role);
                            rare.roles = roles.into_boxed_slice();
                        }
                    });
                });
            }
            Event::UserDisabled(disabled) => self.update(disabled.user_id, recorded, |user| {
                user.disabled = true;
            }),
            Event::UserEnabled(enabled) => self.update(enabled.user_id, recorded, |user| {
                user.disabled = false;
            }),
            // The throttle's: only the stream's version moves here.
            Event::LockoutCleared(cleared) => self.update(cleared.user_id, recorded, |_| {}),
            // Erased: the user, their email's claim and their sessions are forgotten (the
            // sessions' own `SessionEnded` events come first, in the same append).
            Event::UserErased(erased) => {
                let email = self.users.get(erased.user_id, |account| {
                    account.credentials.email().to_owned()
                });
                if let Some(email) = email {
                    let canonical = Email::from_record(email).canonical();
                    self.by_email.remove(&self.users, canonical.as_str());
                }
                if let Some(account) = self.users.remove(erased.user_id) {
                    for session in account.sessions() {
                        self.sessions.remove(session);
                    }
                }
                self.admins.remove(&erased.user_id);
            }
            // An event whose personal fields cannot be read: an erased user's, whose
            // `UserErased` follows, or any user's for a reader without the master key.
            Event::Redacted(_) => {}
            // The signing keys' stream: the key ring's; the log keys': the readers' guard's.
            Event::SigningKeyAdded(_)
            | Event::SigningKeyActivated(_)
            | Event::SigningKeyRetired(_)
            | Event::LogKeyRotated(_) => {}
        }
    }

    /// Forgets sessions whose absolute lifetime is over at `now`, or that are in `idle` (found
    /// idle-expired beside the log); how many went. Nothing is appended: an expiry is a rule
    /// applied to the log, not an event in it.
    pub fn expire_sessions(&mut self, now: DateTime<Utc>, idle: &[SessionId]) -> usize {
        let mut gone: Vec<(SessionId, UserId)> = self
            .sessions
            .iter()
            .filter(|entry| entry.expires_at <= now)
            .map(|entry| (*entry.key(), entry.user_id))
            .collect();
        gone.extend(
            idle.iter()
                .filter_map(|id| self.sessions.get(id).map(|entry| (*id, entry.user_id))),
        );
        for (id, user) in &gone {
            self.sessions.remove(id);
            self.users.update(*user, |account| {
                account.change_rare(|rare| rare.sessions.retain(|session| session != id));
            });
        }
        gone.len()
    }

    /// The user's live sessions, oldest first.
    pub fn sessions_of(&self, user: UserId) -> Vec<(SessionId, SessionEntry)> {
        self.view().sessions_of(user)
    }

    /// Live sessions, all users together.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Every live session started at or before `before` (candidates for the idle check).
    pub fn sessions_started_before(&self, before: DateTime<Utc>) -> Vec<SessionId> {
        self.sessions
            .iter()
            .filter(|entry| entry.started_at <= before)
            .map(|entry| *entry.key())
            .collect()
    }

    /// [`DirectoryView::session`].
    pub fn session(&self, id: SessionId) -> Option<SessionLife> {
        self.view().session(id)
    }

    /// Applies `change` to an existing user and moves their stream to the event's version.
    fn update(&self, id: UserId, recorded: &RecordedEvent, change: impl FnOnce(&mut Account)) {
        self.users.update(id, |account| {
            account.version = recorded.stream_version;
            change(account);
        });
    }

    /// Takes over `other`'s users, keeping this directory's views (which then see them).
    /// O(users), once per load: never on the path of a commit.
    pub fn adopt(&mut self, other: Directory) {
        let users = Arc::try_unwrap(other.users).unwrap_or_else(|shared| (*shared).clone());
        self.users.replace_with(users);
        self.sessions.clear();
        let sessions = Arc::try_unwrap(other.sessions).unwrap_or_else(|shared| (*shared).clone());
        for (id, session) in sessions {
            self.sessions.insert(id, session);
        }
        // Rebuilt against this directory's accounts (the index compares through them).
        self.by_email = EmailIndex::with_capacity(other.by_email.len());
        for id in other.by_email.ids() {
            if let Some(email) = self
                .users
                .get(*id, |account| account.credentials.email().to_owned())
            {
                let canonical = Email::from_record(email).canonical();
                self.by_email.insert(&self.users, *id, canonical.as_str());
            }
        }
        self.admins = other.admins;
    }

    pub fn by_email(&self, email: &Email) -> Option<UserEntry> {
        self.by_email
            .get(&self.users, email.as_str())
            .and_then(|id| self.get(id))
    }

    /// Who holds `admin` now, in id order (disabled users included).
    pub fn admins(&self) -> &BTreeSet<UserId> {
        &self.admins
    }

    /// How many users hold `admin` and are not disabled: who can use the admin API.
    pub fn enabled_admins(&self) -> usize {
        self.admins
            .iter()
            .filter(|id| !self.is_disabled(**id))
            .count()
    }

    /// Whether an admin has disabled the user (without copying the user).
    pub fn is_disabled(&self, id: UserId) -> bool {
        self.users
            .get(id, |account| account.disabled)
            .unwrap_or(false)
    }

    pub fn get(&self, id: UserId) -> Option<UserEntry> {
        self.users.get(id, Account::entry)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Every user, in no particular order (a copy: for auditors and tests).
    pub fn users(&self) -> Vec<UserEntry> {
        let mut users = Vec::with_capacity(self.users.len());
        self.users.for_each(|account| users.push(account.entry()));
        users
    }

    /// Whether the email index names `id`: the one account, of those whose addresses have one
    /// canonical form, that sign-up and login find.
    fn indexed(&self, account: &Account) -> bool {
        let canonical = Email::from_record(account.credentials.email().to_owned()).canonical();
        self.by_email.get(&self.users, canonical.as_str()) == Some(account.id)
    }
}

/// The directory's part of a snapshot ([`crate::snapshot`]): users and sessions in id order, so
/// that one state always writes the same bytes. The email index and the admins are derived
/// from the users on reading; a flag per user says whether the index names them (an address
/// registered twice under older rules is indexed to one account only).
impl Directory {
    pub(crate) fn write_snapshot(&self, w: &mut Writer) {
        let mut accounts: Vec<(UserId, Vec<u8>)> = Vec::with_capacity(self.users.len());
        self.users.for_each(|account| {
            let mut one = Writer::with_capacity(160);
            one.uuid(account.id.as_uuid());
            one.bytes(account.credentials.as_bytes());
            one.i32(account.version);
            one.len(account.logins as usize);
            one.time(account.created_at);
            one.opt_time(account.last_login_at);
            one.option(account.rare(), |one, rare| {
                one.len(rare.failed_logins as usize);
                one.u32(rare.password_changes);
                one.len(rare.sessions.len());
                for session in &rare.sessions {
                    one.uuid(session.as_uuid());
                }
                one.len(rare.roles.len());
                for role in &rare.roles {
                    one.str(role.as_str());
                }
            });
            one.bool(account.disabled);
            one.bool(self.indexed(account));
            accounts.push((account.id, one.into_bytes()));
        });
        accounts.sort_unstable_by_key(|(id, _)| *id);
        w.len(accounts.len());
        for (_, bytes) in accounts {
            w.raw(&bytes);
        }
        let mut sessions: Vec<SessionId> = self.sessions.iter().map(|s| *s.key()).collect();
        sessions.sort_unstable();
        w.len(sessions.len());
        for id in sessions {
            let Some(session) = self.sessions.get(&id) else {
                continue;
            };
            w.uuid(id.as_uuid());
            w.uuid(session.user_id.as_uuid());
            w.time(session.started_at);
            w.time(session.expires_at);
            w.opt_ip(session.client_ip);
            w.option(session.user_agent.as_deref(), Writer::str);
        }
    }

    pub(crate) fn read_snapshot(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        let count = r.len()?;
        let users = Users::with_capacity(count);
        let mut by_email = EmailIndex::with_capacity(count);
        let mut indexed = Vec::with_capacity(count);
        let mut admins = BTreeSet::new();
        let mut previous = None;
        for _ in 0..count {
            let id = UserId::from(r.uuid()?);
            if previous.is_some_and(|previous| previous >= id) {
                return Err(Malformed("users are not in strictly increasing id order"));
            }
            previous = Some(id);
            let credentials = Credentials::from_bytes(r.bytes()?).ok_or(Malformed(
                "a user's email and hash are not in their packed form",
            ))?;
            let version = r.i32()?;
            let logins = r.len()? as u64;
            let created_at = r.time()?;
            let last_login_at = r.opt_time()?;
            let rare = r.option(|r| {
                Ok(Box::new(Rare {
                    failed_logins: r.len()? as u64,
                    password_changes: r.u32()?,
                    sessions: (0..r.len()?)
                        .map(|_| r.uuid().map(SessionId::from))
                        .collect::<Result<Vec<_>, _>>()?,
                    roles: (0..r.len()?)
                        .map(|_| {
                            Role::parse(r.str()?).map_err(|_| Malformed("a role is not valid"))
                        })
                        .collect::<Result<Box<[Role]>, _>>()?,
                }))
            })?;
            let disabled = r.bool()?;
            if r.bool()? {
                indexed.push((id, by_email.hash_of(credentials.email())));
            }
            if rare
                .as_ref()
                .is_some_and(|rare| rare.roles.iter().any(Role::is_admin))
            {
                admins.insert(id);
            }
            users.insert_new(Account {
                id,
                credentials,
                created_at,
                last_login_at,
                version,
                disabled,
                logins,
                rare,
            });
        }
        for (id, hash) in indexed {
            by_email.insert_new(&users, id, hash);
        }
        let count = r.len()?;
        let sessions = Sessions::with_capacity(count);
        for _ in 0..count {
            let id = SessionId::from(r.uuid()?);
            let entry = SessionEntry {
                user_id: UserId::from(r.uuid()?),
                started_at: r.time()?,
                expires_at: r.time()?,
                client_ip: r.opt_ip()?,
                user_agent: r.option(|r| r.str().map(Box::from))?,
            };
            sessions.insert(id, entry);
        }
        Ok(Self {
            users: Arc::new(users),
            sessions: Arc::new(sessions),
            by_email,
            admins,
        })
    }
}

/// A deep copy, detached from this directory's views (O(users): for tests and diagnostics).
impl Clone for Directory {
    fn clone(&self) -> Self {
        let users = Arc::new(self.users.as_ref().clone());
        let mut by_email = EmailIndex::with_capacity(self.by_email.len());
        for id in self.by_email.ids() {
            if let Some(email) = users.get(*id, |account| account.credentials.email().to_owned()) {
                let canonical = Email::from_record(email).canonical();
                by_email.insert(&users, *id, canonical.as_str());
            }
        }
        Self {
            users,
            sessions: Arc::new(self.sessions.as_ref().clone()),
            by_email,
            admins: self.admins.clone(),
        }
    }
}

/// Two directories are equal when they hold the same users, index the same ones by email,
/// and hold the same sessions and admins.
impl PartialEq for Directory {
    fn eq(&self, other: &Self) -> bool {
        let mut same_users = self.users.len() == other.users.len();
        if same_users {
            self.users.for_each(|account| {
                same_users &= other
                    .users
                    .get(account.id, |theirs| {
                        theirs == account && other.indexed(theirs) == self.indexed(account)
                    })
                    .unwrap_or(false);
            });
        }
        same_users
            && self.by_email.len() == other.by_email.len()
            && self.admins == other.admins
            && self.sessions.len() == other.sessions.len()
            && self
                .sessions
                .iter()
                .all(|s| other.sessions.get(s.key()).is_some_and(|o| *o == *s))
    }
}

impl Eq for Directory {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::LoginSucceeded;
    use crate::events::testing::{recorded, registered};

    #[test]
    fn an_imported_user_is_as_old_as_the_source_says() {
        let id = UserId::new();
        let created = chrono::DateTime::parse_from_rfc3339("2021-03-04T05:06:07Z")
            .expect("valid")
            .with_timezone(&Utc);
        let mut event = registered(id, "old@example.com");
        if let Event::UserRegistered(registered) = &mut event {
            registered.imported = Some(crate::events::Imported {
                source: "postgresql:fastapi_auth/users".to_owned(),
                id: Some("7".to_owned()),
                row: 7,
                created_at: Some(created),
            });
        }
        let mut directory = Directory::new();
        directory.apply(&recorded(1, 1, event));
        let other = UserId::new();
        let now = recorded(2, 1, registered(other, "new@example.com"));
        directory.apply(&now);
        assert_eq!(directory.get(id).map(|user| user.created_at), Some(created));
        assert_eq!(
            directory.get(other).map(|user| user.created_at),
            Some(now.recorded_at),
            "a sign-up's is when it committed"
        );
    }

    #[test]
    fn given_registration_and_logins_then_directory_tracks_version_and_count() {
        let id = UserId::new();
        let mut directory = Directory::new();
        directory.apply(&recorded(1, 1, registered(id, "a@example.com")));
        for (position, version) in [(2, 2), (3, 3)] {
            let login = Event::LoginSucceeded(LoginSucceeded { user_id: id });
            directory.apply(&recorded(position, version, login));
        }
        let user = directory
            .by_email(&Email::parse("A@example.com").expect("valid"))
            .expect("registered");
        assert_eq!((user.id, user.version, user.logins), (id, 3, 2));
    }

    #[test]
    fn a_view_sees_each_applied_event_without_a_copy() {
        let mut directory = Directory::new();
        let view = directory.view();
        let id = UserId::new();
        assert_eq!(view.find(id), None);
        directory.apply(&recorded(1, 1, registered(id, "a@example.com")));
        let found = view.find(id).expect("published");
        assert_eq!(found.email.as_str(), "a@example.com");
        // A copy is detached: what the original applies later does not reach it.
        let copy = directory.clone();
        let other = UserId::new();
        directory.apply(&recorded(2, 1, registered(other, "b@example.com")));
        assert!(view.find(other).is_some());
        assert!(copy.get(other).is_none());
        assert_ne!(copy, directory);
    }
}
