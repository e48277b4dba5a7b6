//! The email→user directory: the in-memory view of the log that every decision reads.
//!
//! [`Directory::apply`] turns events into directory state; [`crate::state::State::apply`] calls
//! it for start-up replay, the live path after each commit, catch-up and the auditors alike.
//!
//! The users map is a concurrent map shared with every [`DirectoryView`]. The registry is its
//! only writer and writes each committed event in place, so publishing a commit to readers costs
//! nothing per user: an HTTP worker looks a user up without a message and without a copy.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;

use crate::domain::{Email, PasswordHash, UserId};
use crate::events::{Event, RecordedEvent};

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
}

/// What callers outside the registry learn about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub user_id: UserId,
    pub email: Email,
}

impl From<&UserEntry> for UserSummary {
    fn from(user: &UserEntry) -> Self {
        Self {
            user_id: user.id,
            email: user.email.clone(),
        }
    }
}

type Users = DashMap<UserId, UserEntry>;

#[derive(Debug, Default)]
pub struct Directory {
    /// Written only by the directory's owner (the registry), read by its views on any thread.
    users: Arc<Users>,
    /// Read only by the owner's decisions (sign-up and login look users up by email).
    by_email: HashMap<Email, UserId>,
}

/// A read-only handle on a [`Directory`]'s users, for other threads. Cloning it is cheap.
#[derive(Debug, Clone)]
pub struct DirectoryView {
    users: Arc<Users>,
}

impl DirectoryView {
    /// The user with this id, as far as the log has been applied.
    pub fn find(&self, id: UserId) -> Option<UserSummary> {
        self.users
            .get(&id)
            .map(|user| UserSummary::from(user.value()))
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
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
        }
    }

    /// Folds one committed event into the directory. Holds no decisions: every check happened
    /// before the event was appended.
    pub fn apply(&mut self, recorded: &RecordedEvent) {
        match &recorded.event {
            Event::UserRegistered(registered) => {
                // Keyed by today's form of the address, so one registered under older rules is
                // found by the spelling sign-up and login parse to now.
                self.by_email
                    .insert(registered.email.canonical(), registered.user_id);
                self.users.insert(
                    registered.user_id,
                    UserEntry {
                        id: registered.user_id,
                        email: registered.email.clone(),
                        password_hash: registered.password_hash.clone(),
                        version: recorded.stream_version,
                        logins: 0,
                        failed_logins: 0,
                    },
                );
            }
            Event::LoginSucceeded(login) => self.update(login.user_id, recorded, |user| {
                user.logins += 1;
            }),
            Event::LoginFailed(failed) => self.update(failed.user_id, recorded, |user| {
                user.failed_logins += 1;
            }),
            Event::PasswordRehashed(rehashed) => self.update(rehashed.user_id, recorded, |user| {
                user.password_hash = rehashed.password_hash.clone();
            }),
        }
    }

    /// Applies `change` to an existing user and moves their stream to the event's version.
    fn update(&self, id: UserId, recorded: &RecordedEvent, change: impl FnOnce(&mut UserEntry)) {
        if let Some(mut user) = self.users.get_mut(&id) {
            user.version = recorded.stream_version;
            change(&mut user);
        }
    }

    /// Takes over `other`'s users, keeping this directory's views (which then see them).
    /// O(users), once per load: never on the path of a commit.
    pub fn adopt(&mut self, other: Directory) {
        self.users.clear();
        let users = Arc::try_unwrap(other.users).unwrap_or_else(|shared| (*shared).clone());
        for (id, user) in users {
            self.users.insert(id, user);
        }
        self.by_email = other.by_email;
    }

    pub fn by_email(&self, email: &Email) -> Option<UserEntry> {
        self.by_email.get(email).and_then(|id| self.get(*id))
    }

    pub fn get(&self, id: UserId) -> Option<UserEntry> {
        self.users.get(&id).map(|user| user.value().clone())
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Every user, in no particular order (a copy: for auditors and tests).
    pub fn users(&self) -> Vec<UserEntry> {
        self.users.iter().map(|user| user.value().clone()).collect()
    }
}

/// A deep copy, detached from this directory's views (O(users): for tests and diagnostics).
impl Clone for Directory {
    fn clone(&self) -> Self {
        Self {
            users: Arc::new(self.users.as_ref().clone()),
            by_email: self.by_email.clone(),
        }
    }
}

/// Two directories are equal when they hold the same users.
impl PartialEq for Directory {
    fn eq(&self, other: &Self) -> bool {
        self.by_email == other.by_email
            && self.users.len() == other.users.len()
            && self
                .users
                .iter()
                .all(|user| other.users.get(user.key()).is_some_and(|o| *o == *user))
    }
}

impl Eq for Directory {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::LoginSucceeded;
    use crate::events::testing::{recorded, registered};

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
