//! The email→user directory: the in-memory view of the log that every decision reads.
//!
//! [`Directory::apply`] is the only code that turns events into state. Start-up replay, the live
//! path after each commit, and catch-up after an outage all call it, so they cannot disagree.

use std::collections::HashMap;

use crate::domain::{Email, PasswordHash, UserId};
use crate::events::{Event, EventStore, RecordedEvent, StoreError, for_each_after};

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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    users: HashMap<UserId, UserEntry>,
    by_email: HashMap<Email, UserId>,
    /// Position of the last event applied; replay and catch-up continue after it.
    position: i64,
}

impl Directory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the whole log and applies it in position order.
    pub async fn rebuild(store: &dyn EventStore) -> Result<Self, StoreError> {
        let mut directory = Self::new();
        for_each_after(store, 0, |event| directory.apply(&event)).await?;
        Ok(directory)
    }

    /// Folds one committed event into the directory. Holds no decisions: every check happened
    /// before the event was appended. Events at or before [`Directory::position`] were already
    /// applied and are skipped, so re-reading an overlapping tail is harmless.
    pub fn apply(&mut self, recorded: &RecordedEvent) {
        if recorded.position <= self.position {
            return;
        }
        self.position = recorded.position;
        match &recorded.event {
            Event::UserRegistered(registered) => {
                self.by_email
                    .insert(registered.email.clone(), registered.user_id);
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
            Event::LoginSucceeded(login) => {
                if let Some(user) = self.users.get_mut(&login.user_id) {
                    user.version = recorded.stream_version;
                    user.logins += 1;
                }
            }
            Event::LoginFailed(failed) => {
                if let Some(user) = self.users.get_mut(&failed.user_id) {
                    user.version = recorded.stream_version;
                    user.failed_logins += 1;
                }
            }
            Event::PasswordRehashed(rehashed) => {
                if let Some(user) = self.users.get_mut(&rehashed.user_id) {
                    user.version = recorded.stream_version;
                    user.password_hash = rehashed.password_hash.clone();
                }
            }
        }
    }

    pub fn by_email(&self, email: &Email) -> Option<&UserEntry> {
        self.by_email.get(email).and_then(|id| self.users.get(id))
    }

    pub fn get(&self, id: UserId) -> Option<&UserEntry> {
        self.users.get(&id)
    }

    pub fn position(&self) -> i64 {
        self.position
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn users(&self) -> impl Iterator<Item = &UserEntry> {
        self.users.values()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::events::{EventMetadata, LoginSucceeded, UserRegistered};

    fn recorded(position: i64, stream_version: i32, event: Event) -> RecordedEvent {
        RecordedEvent {
            position,
            stream_version,
            event,
            metadata: EventMetadata::default(),
            recorded_at: Utc::now(),
        }
    }

    fn registered(id: UserId, email: &str) -> Event {
        Event::UserRegistered(UserRegistered {
            user_id: id,
            email: Email::parse(email).expect("valid"),
            password_hash: PasswordHash::new("$2b$04$x".into()),
        })
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
        assert_eq!(directory.position(), 3);
    }

    #[test]
    fn applying_an_already_applied_position_changes_nothing() {
        let id = UserId::new();
        let first = recorded(1, 1, registered(id, "a@example.com"));
        let login = recorded(2, 2, Event::LoginSucceeded(LoginSucceeded { user_id: id }));
        let mut directory = Directory::new();
        directory.apply(&first);
        directory.apply(&login);
        let before = directory.clone();
        directory.apply(&login);
        directory.apply(&first);
        assert_eq!(directory, before);
    }
}
