//! Deciding what a command means for the log: pure, and tested without actors or stores.
//!
//! The registry batches commands that arrive while an append is in flight. [`BatchPlanner`] decides
//! each command against the committed [`Directory`] and [`KeyRing`] plus the commands already in
//! the batch, and answers with the events to append, a rejection, or "wait for the next batch".

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::domain::{Email, KeyId, PasswordHash, Role, SessionId, UserId};
use crate::events::{
    EndReason, Event, Imported, LockoutCleared, LogKeyRotated, LoginFailed, LoginSucceeded,
    PasswordChanged, PasswordRehashed, RoleGranted, RoleRevoked, SessionEnded, SessionStarted,
    SigningKeyActivated, SigningKeyAdded, SigningKeyRetired, UserDisabled, UserEnabled, UserErased,
    UserRegistered,
};
use crate::keyring::KeyRing;
use crate::projection::{Directory, UserSummary};
use crate::sessions::{SessionWrite, TokenHash};

/// A session a successful login starts.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub session_id: SessionId,
    /// The hash of its first refresh token.
    pub token_hash: TokenHash,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub idle_seconds: u64,
}

/// Which of a user's live sessions a command ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionScope {
    One(SessionId),
    All,
    AllBut(SessionId),
}

impl SessionScope {
    fn covers(self, session: SessionId) -> bool {
        match self {
            SessionScope::One(one) => one == session,
            SessionScope::All => true,
            SessionScope::AllBut(kept) => kept != session,
        }
    }
}

/// A change someone asked for.
#[derive(Debug, Clone)]
pub enum Command {
    Register {
        user_id: UserId,
        email: Email,
        password_hash: PasswordHash,
        /// Brought from another system by `authlog import`, and from where.
        imported: Option<Imported>,
    },
    /// A password check passed; `rehash` replaces a hash weaker than the configured cost, and
    /// `session` starts a session.
    RecordLogin {
        user_id: UserId,
        rehash: Option<PasswordHash>,
        session: Option<NewSession>,
        /// The user's `password_changes` when the password was checked.
        checked_at: u32,
    },
    /// A password check failed for a known user.
    RecordLoginFailure { user_id: UserId },
    /// Ends the user's live sessions in `scope`, for `reason`.
    EndSessions {
        user_id: UserId,
        scope: SessionScope,
        reason: EndReason,
    },
    /// The current password checked out: the new hash replaces it, and every session but
    /// `keep` ends.
    ChangePassword {
        user_id: UserId,
        password_hash: PasswordHash,
        keep: Option<SessionId>,
        /// The user's `password_changes` when the current password was checked.
        checked_at: u32,
    },
    /// One change to the signing keys.
    ChangeKeys(KeyChange),
    /// An admin's (or an operator command's) change to one user. Idempotent: a change the log
    /// already shows is answered without an append.
    Administer { user_id: UserId, change: UserChange },
    /// The log-signing key's next generation. Its stream version is the rotation's number
    /// (generation 2 is the first), so of two instances rotating at once one conflicts.
    RotateLogKey(LogKeyRotated),
}

/// What an admin changes about one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    GrantRole(Role),
    /// Takes the role away and ends every session of the user, so no token goes on carrying it.
    RevokeRole(Role),
    /// The user's logins fail as a wrong password does, and every session of theirs ends.
    Disable,
    Enable,
    /// Forgets the failed logins that lock the account out, from every address. Always an
    /// event: the log says who unlocked whom.
    ClearLockout,
    /// Erases the user: every session ends, then `UserErased`, whose append destroys the
    /// user's data key (crypto-shredding). Never unchanged: an erased user is unknown.
    Erase,
}

/// A change to the token signing keys, checked against the committed keys when decided: it is
/// refused ([`Rejection::KeysChanged`]) if they are no longer as it assumed.
#[derive(Debug, Clone)]
pub enum KeyChange {
    /// Adds `key` (made and sealed by the caller) to follow `after`, the newest key when the
    /// caller looked; activates it at once if `activate`.
    Add {
        key: SigningKeyAdded,
        activate: bool,
        after: Option<KeyId>,
    },
    /// Makes a pending key the one that signs.
    Activate(KeyId),
    /// Withdraws a pending or retiring key: tokens it signed stop verifying.
    Retire(KeyId),
    /// Rotates the log-signing key ([`crate::events::signed`]): the registry names the next
    /// generation and its public key, as [`Command::RotateLogKey`].
    RotateLog,
}

/// What a command's caller hears once its events have committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// A command about a user: who.
    User(UserSummary),
    /// A change to the signing keys.
    Keys,
}

/// What a command means, given the state it is decided against.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Append these `(stream_version, event)` pairs; once they commit, answer `answer`.
    Append {
        events: Vec<(i32, Event)>,
        /// Rows beside the log, written in the same transaction.
        sessions: Vec<SessionWrite>,
        answer: Committed,
    },
    Reject(Rejection),
    /// Nothing to append: the committed log already says what the command asks. Answered at
    /// once.
    Unchanged(Committed),
    /// The command touches an email an earlier command in this batch is registering. Its answer
    /// depends on whether that append commits, so it waits for the next batch.
    Wait,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    EmailTaken,
    UnknownUser,
    /// The password was checked before a change of password committed: it may be the old one.
    StaleCredentials,
    /// The signing keys are no longer as the command assumed: another instance or command
    /// took this step, or another one, first.
    KeysChanged,
    /// Taking `admin` from the last user who has it would leave nobody able to use the admin
    /// API.
    LastAdmin,
}

/// Decides the commands of one batch, in arrival order.
pub struct BatchPlanner<'a> {
    directory: &'a Directory,
    keys: &'a KeyRing,
    /// An earlier command of this batch changes the keys: a second waits for the next batch,
    /// so each is decided against committed keys.
    keys_claimed: bool,
    /// Emails registered by earlier commands of this batch.
    claimed: HashSet<Email>,
    /// Last stream version handed out in this batch, per user, so logins to one stream in one
    /// batch take consecutive versions.
    versions: HashMap<UserId, i32>,
    /// Sessions ended by earlier commands of this batch.
    ended: HashSet<SessionId>,
    /// Sessions started by earlier commands of this batch, per user.
    started: HashMap<UserId, Vec<SessionId>>,
    /// Users whose password an earlier command of this batch changes.
    changed: HashSet<UserId>,
    /// Users an earlier admin command of this batch changes: a second change waits for the
    /// next batch, so each is decided against committed state.
    administered: HashSet<UserId>,
    /// Enabled admins an earlier command of this batch revokes or disables: the last admin's
    /// guard counts them gone.
    admins_leaving: usize,
}

impl<'a> BatchPlanner<'a> {
    /// Events for an existing user's stream, taking the next versions.
    fn append_to(&mut self, user_id: UserId, events: Vec<Event>) -> Decision {
        self.append_with(user_id, events, Vec::new())
    }

    fn append_with(
        &mut self,
        user_id: UserId,
        events: Vec<Event>,
        sessions: Vec<SessionWrite>,
    ) -> Decision {
        let Some(user) = self.directory.get(user_id) else {
            return Decision::Reject(Rejection::UnknownUser);
        };
        let version = self.versions.entry(user_id).or_insert(user.version);
        let events = events
            .into_iter()
            .map(|event| {
                *version += 1;
                (*version, event)
            })
            .collect();
        Decision::Append {
            events,
            sessions,
            answer: Committed::User(UserSummary::from(&user)),
        }
    }

    /// One key event, if the ring still allows it; at most one key command per batch.
    fn change_keys(&mut self, allowed: bool, event: impl FnOnce() -> Vec<Event>) -> Decision {
        if self.keys_claimed {
            return Decision::Wait;
        }
        if !allowed {
            return Decision::Reject(Rejection::KeysChanged);
        }
        self.keys_claimed = true;
        let events = event()
            .into_iter()
            .zip(self.keys.version() + 1..)
            .map(|(event, version)| (version, event))
            .collect();
        Decision::Append {
            events,
            sessions: Vec::new(),
            answer: Committed::Keys,
        }
    }

    /// `SessionEnded` for each of the user's live sessions in `scope`, and their rows' removal.
    fn end_sessions(
        &mut self,
        user_id: UserId,
        scope: SessionScope,
        reason: EndReason,
    ) -> (Vec<Event>, Vec<SessionWrite>) {
        let mut live = self
            .directory
            .get(user_id)
            .map(|user| user.sessions)
            .unwrap_or_default();
        live.extend(self.started.get(&user_id).into_iter().flatten());
        live.into_iter()
            .filter(|session| scope.covers(*session) && self.ended.insert(*session))
            .map(|session_id| {
                (
                    Event::SessionEnded(SessionEnded {
                        user_id,
                        session_id,
                        reason,
                    }),
                    SessionWrite::End(session_id),
                )
            })
            .unzip()
    }

    pub fn new(directory: &'a Directory, keys: &'a KeyRing) -> Self {
        Self {
            directory,
            keys,
            keys_claimed: false,
            claimed: HashSet::new(),
            versions: HashMap::new(),
            ended: HashSet::new(),
            started: HashMap::new(),
            changed: HashSet::new(),
            administered: HashSet::new(),
            admins_leaving: 0,
        }
    }

    /// One admin change to `user_id`, against committed state and this batch's other changes.
    fn administer(&mut self, user_id: UserId, change: &UserChange) -> Decision {
        let Some(user) = self.directory.get(user_id) else {
            return Decision::Reject(Rejection::UnknownUser);
        };
        if self.administered.contains(&user_id) {
            return Decision::Wait;
        }
        let unchanged = match change {
            UserChange::GrantRole(role) => user.has_role(role),
            UserChange::RevokeRole(role) => !user.has_role(role),
            UserChange::Disable => user.disabled,
            UserChange::Enable => !user.disabled,
            UserChange::ClearLockout | UserChange::Erase => false,
        };
        if unchanged {
            return Decision::Unchanged(Committed::User(UserSummary::from(&user)));
        }
        // Whether the change takes an enabled admin away from the admin API.
        let admin_leaves = !user.disabled
            && match change {
                UserChange::RevokeRole(role) => role.is_admin(),
                UserChange::Disable | UserChange::Erase => user.has_role(&Role::admin()),
                _ => false,
            };
        if admin_leaves && self.directory.enabled_admins() <= 1 + self.admins_leaving {
            return Decision::Reject(Rejection::LastAdmin);
        }
        let (event, ends) = match change {
            UserChange::GrantRole(role) => (
                Event::RoleGranted(RoleGranted {
                    user_id,
                    role: role.clone(),
                }),
                None,
            ),
            UserChange::RevokeRole(role) => (
                Event::RoleRevoked(RoleRevoked {
                    user_id,
                    role: role.clone(),
                }),
                Some(EndReason::RoleRevoked),
            ),
            UserChange::Disable => (
                Event::UserDisabled(UserDisabled { user_id }),
                Some(EndReason::Disabled),
            ),
            UserChange::Enable => (Event::UserEnabled(UserEnabled { user_id }), None),
            UserChange::ClearLockout => (Event::LockoutCleared(LockoutCleared { user_id }), None),
            UserChange::Erase => (
                Event::UserErased(UserErased { user_id }),
                Some(EndReason::Erased),
            ),
        };
        let mut events = vec![event];
        let mut writes = Vec::new();
        if let Some(reason) = ends {
            let (ended, ended_writes) = self.end_sessions(user_id, SessionScope::All, reason);
            events.extend(ended);
            writes = ended_writes;
        }
        if matches!(change, UserChange::Erase) {
            // The sessions end first: `UserErased` is the stream's last event.
            events.rotate_left(1);
        }
        let decision = self.append_with(user_id, events, writes);
        if matches!(decision, Decision::Append { .. }) {
            self.administered.insert(user_id);
            self.admins_leaving += usize::from(admin_leaves);
        }
        decision
    }

    /// Whether a password check made when the user had `checked_at` password changes still
    /// stands: no change committed since, and none earlier in this batch.
    fn stale(&self, user_id: UserId, checked_at: u32) -> bool {
        self.changed.contains(&user_id)
            || self
                .directory
                .get(user_id)
                .is_some_and(|user| user.password_changes != checked_at)
    }

    pub fn decide(&mut self, command: &Command) -> Decision {
        match command {
            Command::Register {
                user_id,
                email,
                password_hash,
                imported,
            } => {
                if self.directory.by_email(email).is_some() {
                    return Decision::Reject(Rejection::EmailTaken);
                }
                if !self.claimed.insert(email.clone()) {
                    return Decision::Wait;
                }
                self.versions.insert(*user_id, 1);
                let event = Event::UserRegistered(UserRegistered {
                    user_id: *user_id,
                    email: email.clone(),
                    password_hash: password_hash.clone(),
                    imported: imported.clone(),
                });
                Decision::Append {
                    events: vec![(1, event)],
                    sessions: Vec::new(),
                    answer: Committed::User(UserSummary {
                        user_id: *user_id,
                        email: email.clone(),
                        roles: Box::default(),
                    }),
                }
            }
            Command::RecordLogin {
                user_id,
                rehash,
                session,
                checked_at,
            } => {
                if self.stale(*user_id, *checked_at) {
                    return Decision::Reject(Rejection::StaleCredentials);
                }
                let mut events = vec![Event::LoginSucceeded(LoginSucceeded { user_id: *user_id })];
                if let Some(password_hash) = rehash {
                    events.push(Event::PasswordRehashed(PasswordRehashed {
                        user_id: *user_id,
                        password_hash: password_hash.clone(),
                    }));
                }
                let mut writes = Vec::new();
                if let Some(session) = session {
                    self.started
                        .entry(*user_id)
                        .or_default()
                        .push(session.session_id);
                    events.push(Event::SessionStarted(SessionStarted {
                        user_id: *user_id,
                        session_id: session.session_id,
                        expires_at: session.expires_at,
                        idle_seconds: session.idle_seconds,
                    }));
                    writes.push(SessionWrite::Start {
                        session: session.session_id,
                        user_id: *user_id,
                        token_hash: session.token_hash,
                        started_at: session.now,
                        expires_at: session.expires_at,
                    });
                }
                self.append_with(*user_id, events, writes)
            }
            Command::EndSessions {
                user_id,
                scope,
                reason,
            } => {
                let (events, writes) = self.end_sessions(*user_id, *scope, *reason);
                self.append_with(*user_id, events, writes)
            }
            Command::ChangePassword {
                user_id,
                password_hash,
                keep,
                checked_at,
            } => {
                if self.stale(*user_id, *checked_at) {
                    return Decision::Reject(Rejection::StaleCredentials);
                }
                let mut events = vec![Event::PasswordChanged(PasswordChanged {
                    user_id: *user_id,
                    password_hash: password_hash.clone(),
                })];
                let scope = keep.map_or(SessionScope::All, SessionScope::AllBut);
                let (ended, writes) =
                    self.end_sessions(*user_id, scope, EndReason::PasswordChanged);
                events.extend(ended);
                let decision = self.append_with(*user_id, events, writes);
                if matches!(decision, Decision::Append { .. }) {
                    self.changed.insert(*user_id);
                }
                decision
            }
            Command::RecordLoginFailure { user_id } => self.append_to(
                *user_id,
                vec![Event::LoginFailed(LoginFailed { user_id: *user_id })],
            ),
            Command::ChangeKeys(KeyChange::Add {
                key,
                activate,
                after,
            }) => self.change_keys(self.keys.can_add(after.as_ref()), || {
                let mut events = vec![Event::SigningKeyAdded(key.clone())];
                if *activate {
                    events.push(Event::SigningKeyActivated(SigningKeyActivated {
                        key_id: key.key_id.clone(),
                    }));
                }
                events
            }),
            Command::ChangeKeys(KeyChange::Activate(key_id)) => {
                self.change_keys(self.keys.can_activate(key_id), || {
                    vec![Event::SigningKeyActivated(SigningKeyActivated {
                        key_id: key_id.clone(),
                    })]
                })
            }
            Command::ChangeKeys(KeyChange::Retire(key_id)) => {
                self.change_keys(self.keys.can_retire(key_id), || {
                    vec![Event::SigningKeyRetired(SigningKeyRetired {
                        key_id: key_id.clone(),
                    })]
                })
            }
            Command::Administer { user_id, change } => self.administer(*user_id, change),
            // The registry turns it into a `RotateLogKey`, naming the generation.
            Command::ChangeKeys(KeyChange::RotateLog) => Decision::Reject(Rejection::KeysChanged),
            Command::RotateLogKey(rotated) => {
                if self.keys_claimed {
                    return Decision::Wait;
                }
                self.keys_claimed = true;
                let version = i32::try_from(rotated.generation).unwrap_or(i32::MAX) - 1;
                Decision::Append {
                    events: vec![(version, Event::LogKeyRotated(rotated.clone()))],
                    sessions: Vec::new(),
                    answer: Committed::Keys,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::testing::{recorded, registered};

    fn email(raw: &str) -> Email {
        Email::parse(raw).expect("valid")
    }

    /// The keys of a log that has none.
    fn no_keys() -> &'static KeyRing {
        static NONE: std::sync::LazyLock<KeyRing> = std::sync::LazyLock::new(KeyRing::new);
        &NONE
    }

    fn register(raw: &str) -> Command {
        Command::Register {
            user_id: UserId::new(),
            email: email(raw),
            password_hash: PasswordHash::new("$2b$04$x".into()),
            imported: None,
        }
    }

    /// A directory holding one user whose stream is at `version`.
    fn directory_with(raw: &str, version: i32) -> (Directory, UserId) {
        let id = UserId::new();
        let mut directory = Directory::new();
        for v in 1..=version {
            let event = if v == 1 {
                registered(id, raw)
            } else {
                Event::LoginSucceeded(LoginSucceeded { user_id: id })
            };
            directory.apply(&recorded(i64::from(v), v, event));
        }
        (directory, id)
    }

    #[test]
    fn given_no_users_when_registering_then_user_registered_at_version_1() {
        let directory = Directory::new();
        let mut planner = BatchPlanner::new(&directory, no_keys());
        match planner.decide(&register("new@example.com")) {
            Decision::Append {
                events,
                answer: Committed::User(user),
                ..
            } => {
                assert_eq!(events.len(), 1);
                assert_eq!(events[0].0, 1);
                assert_eq!(events[0].1.event_type(), Event::USER_REGISTERED);
                assert_eq!(user.email, email("new@example.com"));
            }
            other => panic!("expected Append, got {other:?}"),
        }
    }

    #[test]
    fn given_a_registered_email_when_registering_it_again_then_rejected() {
        let (directory, _) = directory_with("taken@example.com", 1);
        let mut planner = BatchPlanner::new(&directory, no_keys());
        assert_eq!(
            planner.decide(&register("taken@example.com")),
            Decision::Reject(Rejection::EmailTaken)
        );
    }

    #[test]
    fn given_an_email_claimed_in_this_batch_when_registering_it_again_then_wait() {
        let directory = Directory::new();
        let mut planner = BatchPlanner::new(&directory, no_keys());
        assert!(matches!(
            planner.decide(&register("race@example.com")),
            Decision::Append { .. }
        ));
        assert_eq!(
            planner.decide(&register("race@example.com")),
            Decision::Wait
        );
        assert!(matches!(
            planner.decide(&register("other@example.com")),
            Decision::Append { .. }
        ));
    }

    #[test]
    fn given_a_user_at_version_3_when_two_logins_in_one_batch_then_versions_4_and_5() {
        let (directory, id) = directory_with("a@example.com", 3);
        let mut planner = BatchPlanner::new(&directory, no_keys());
        let versions: Vec<i32> = (0..2)
            .map(|_| {
                match planner.decide(&Command::RecordLogin {
                    user_id: id,
                    rehash: None,
                    session: None,
                    checked_at: 0,
                }) {
                    Decision::Append { events, .. } => events[0].0,
                    other => panic!("expected Append, got {other:?}"),
                }
            })
            .collect();
        assert_eq!(versions, [4, 5]);
    }

    #[test]
    fn given_an_unknown_user_when_recording_a_login_then_rejected() {
        let directory = Directory::new();
        let mut planner = BatchPlanner::new(&directory, no_keys());
        assert_eq!(
            planner.decide(&Command::RecordLogin {
                user_id: UserId::new(),
                rehash: None,
                session: None,
                checked_at: 0,
            }),
            Decision::Reject(Rejection::UnknownUser)
        );
    }

    #[test]
    fn a_failure_and_a_rehash_take_the_next_versions() {
        let mut directory = Directory::new();
        let id = UserId::new();
        directory.apply(&recorded(1, 1, registered(id, "a@example.com")));
        let mut planner = BatchPlanner::new(&directory, no_keys());
        let Decision::Append { events, .. } =
            planner.decide(&Command::RecordLoginFailure { user_id: id })
        else {
            panic!("appends");
        };
        assert_eq!(events[0].0, 2);
        assert_eq!(events[0].1.event_type(), Event::LOGIN_FAILED);
        let rehash = Some(PasswordHash::new("$2b$12$y".into()));
        let Decision::Append { events, .. } = planner.decide(&Command::RecordLogin {
            user_id: id,
            rehash,
            session: None,
            checked_at: 0,
        }) else {
            panic!("appends");
        };
        let versions: Vec<_> = events.iter().map(|(v, e)| (*v, e.event_type())).collect();
        assert_eq!(
            versions,
            [(3, Event::LOGIN_SUCCEEDED), (4, Event::PASSWORD_REHASHED)]
        );
    }

    #[test]
    fn a_check_made_before_a_password_change_is_refused_and_its_session_ends_with_the_others() {
        let (mut directory, id) = directory_with("a@example.com", 1);
        let session = |n: u8| NewSession {
            session_id: SessionId::new(),
            token_hash: TokenHash([n; 32]),
            now: chrono::Utc::now(),
            expires_at: chrono::Utc::now(),
            idle_seconds: 60,
        };
        let login = |checked_at, session| Command::RecordLogin {
            user_id: id,
            rehash: None,
            session: Some(session),
            checked_at,
        };
        let change = |checked_at| Command::ChangePassword {
            user_id: id,
            password_hash: PasswordHash::new("$2b$04$new".into()),
            keep: None,
            checked_at,
        };
        // In one batch: a login, then a change (which ends that login's new session too), then
        // a login and a change whose checks came before the change: both refused.
        let mut planner = BatchPlanner::new(&directory, no_keys());
        let early = session(1);
        assert!(matches!(
            planner.decide(&login(0, early.clone())),
            Decision::Append { .. }
        ));
        let Decision::Append { sessions, .. } = planner.decide(&change(0)) else {
            panic!("the change appends");
        };
        assert_eq!(sessions, [SessionWrite::End(early.session_id)]);
        for command in [login(0, session(2)), change(0)] {
            assert_eq!(
                planner.decide(&command),
                Decision::Reject(Rejection::StaleCredentials)
            );
        }
        // Once the change has committed, a check made before it is stale too.
        directory.apply(&recorded(
            2,
            2,
            Event::PasswordChanged(PasswordChanged {
                user_id: id,
                password_hash: PasswordHash::new("$2b$04$new".into()),
            }),
        ));
        let mut planner = BatchPlanner::new(&directory, no_keys());
        assert_eq!(
            planner.decide(&login(0, session(3))),
            Decision::Reject(Rejection::StaleCredentials)
        );
        assert!(matches!(
            planner.decide(&login(1, session(4))),
            Decision::Append { .. }
        ));
    }

    fn new_key(n: u8) -> SigningKeyAdded {
        SigningKeyAdded {
            key_id: KeyId::thumbprint_ed25519(&[n; 32]),
            algorithm: crate::domain::KeyAlgorithm::EdDSA,
            public_key: vec![n; 32],
            sealed_private_key: vec![0; 72],
        }
    }

    fn role(raw: &str) -> Role {
        Role::parse(raw).expect("valid")
    }

    fn change_role(user_id: UserId, raw: &str, grant: bool) -> Command {
        let change = if grant {
            UserChange::GrantRole(role(raw))
        } else {
            UserChange::RevokeRole(role(raw))
        };
        Command::Administer { user_id, change }
    }

    fn administer(user_id: UserId, change: UserChange) -> Command {
        Command::Administer { user_id, change }
    }

    /// Two users, `a` an admin with one live session, `b` an admin too if `both_admins`.
    fn admins(both_admins: bool) -> (Directory, UserId, UserId, SessionId) {
        let (a, b, session) = (UserId::new(), UserId::new(), SessionId::new());
        let mut directory = Directory::new();
        let mut events = vec![
            registered(a, "a@example.com"),
            registered(b, "b@example.com"),
            Event::RoleGranted(RoleGranted {
                user_id: a,
                role: Role::admin(),
            }),
            Event::SessionStarted(SessionStarted {
                user_id: a,
                session_id: session,
                expires_at: Utc::now() + chrono::Duration::days(1),
                idle_seconds: 3600,
            }),
        ];
        if both_admins {
            events.push(Event::RoleGranted(RoleGranted {
                user_id: b,
                role: Role::admin(),
            }));
        }
        let mut versions = HashMap::new();
        for (position, event) in (1..).zip(events) {
            let user = event.user_id().expect("a user's");
            let version = versions.entry(user).and_modify(|v| *v += 1).or_insert(1);
            directory.apply(&recorded(position, *version, event));
        }
        (directory, a, b, session)
    }

    #[test]
    fn granting_a_role_appends_it_once_and_again_is_unchanged() {
        let (directory, _, b, _) = admins(false);
        let mut planner = BatchPlanner::new(&directory, no_keys());
        let Decision::Append { events, answer, .. } =
            planner.decide(&change_role(b, "support", true))
        else {
            panic!("appends");
        };
        assert_eq!(
            events,
            vec![(
                2,
                Event::RoleGranted(RoleGranted {
                    user_id: b,
                    role: role("support")
                })
            )]
        );
        assert!(matches!(answer, Committed::User(user) if user.user_id == b));
        assert_eq!(
            planner.decide(&change_role(b, "other", true)),
            Decision::Wait,
            "a second change of one user's roles waits for the first to commit"
        );
        let (directory, a, _, _) = admins(false);
        let mut planner = BatchPlanner::new(&directory, no_keys());
        let Decision::Unchanged(Committed::User(user)) =
            planner.decide(&change_role(a, "admin", true))
        else {
            panic!("nothing to append");
        };
        assert_eq!(&*user.roles, &[Role::admin()]);
        assert!(matches!(
            planner.decide(&change_role(a, "support", false)),
            Decision::Unchanged(_)
        ));
        assert_eq!(
            planner.decide(&change_role(UserId::new(), "support", true)),
            Decision::Reject(Rejection::UnknownUser)
        );
    }

    #[test]
    fn revoking_a_role_ends_every_session_in_the_same_append() {
        let (directory, a, b, session) = admins(true);
        let mut planner = BatchPlanner::new(&directory, no_keys());
        let Decision::Append {
            events, sessions, ..
        } = planner.decide(&change_role(a, "admin", false))
        else {
            panic!("appends");
        };
        assert_eq!(
            events,
            vec![
                (
                    4,
                    Event::RoleRevoked(RoleRevoked {
                        user_id: a,
                        role: Role::admin()
                    })
                ),
                (
                    5,
                    Event::SessionEnded(SessionEnded {
                        user_id: a,
                        session_id: session,
                        reason: EndReason::RoleRevoked
                    })
                ),
            ]
        );
        assert_eq!(sessions, vec![SessionWrite::End(session)]);
        assert_eq!(
            planner.decide(&change_role(b, "admin", false)),
            Decision::Reject(Rejection::LastAdmin),
            "the other admin is the last once this batch commits"
        );
    }

    #[test]
    fn disabling_ends_every_session_and_counts_against_the_last_admin() {
        let (directory, a, b, session) = admins(true);
        let mut planner = BatchPlanner::new(&directory, no_keys());
        let Decision::Append {
            events, sessions, ..
        } = planner.decide(&administer(a, UserChange::Disable))
        else {
            panic!("appends");
        };
        assert_eq!(
            events,
            vec![
                (4, Event::UserDisabled(UserDisabled { user_id: a })),
                (
                    5,
                    Event::SessionEnded(SessionEnded {
                        user_id: a,
                        session_id: session,
                        reason: EndReason::Disabled
                    })
                ),
            ]
        );
        assert_eq!(sessions, vec![SessionWrite::End(session)]);
        assert_eq!(
            planner.decide(&administer(b, UserChange::Disable)),
            Decision::Reject(Rejection::LastAdmin),
            "b is the last enabled admin once this batch commits"
        );

        // Once a is disabled, b is the last enabled admin: b keeps admin and stays enabled,
        // while a disabled admin may lose the role, and be enabled again.
        let mut directory = directory;
        directory.apply(&recorded(
            9,
            4,
            Event::UserDisabled(UserDisabled { user_id: a }),
        ));
        let mut planner = BatchPlanner::new(&directory, no_keys());
        assert_eq!(
            planner.decide(&change_role(b, "admin", false)),
            Decision::Reject(Rejection::LastAdmin)
        );
        assert!(matches!(
            planner.decide(&administer(a, UserChange::Disable)),
            Decision::Unchanged(_)
        ));
        assert!(matches!(
            planner.decide(&change_role(a, "admin", false)),
            Decision::Append { .. }
        ));
        let mut planner = BatchPlanner::new(&directory, no_keys());
        let Decision::Append { events, .. } = planner.decide(&administer(a, UserChange::Enable))
        else {
            panic!("appends");
        };
        assert_eq!(
            events,
            vec![(5, Event::UserEnabled(UserEnabled { user_id: a }))]
        );
    }

    #[test]
    fn clearing_a_lockout_is_always_an_event() {
        let (directory, _, b, _) = admins(false);
        let mut planner = BatchPlanner::new(&directory, no_keys());
        let Decision::Append { events, .. } =
            planner.decide(&administer(b, UserChange::ClearLockout))
        else {
            panic!("appends");
        };
        assert_eq!(
            events,
            vec![(2, Event::LockoutCleared(LockoutCleared { user_id: b }))]
        );
        assert_eq!(
            planner.decide(&administer(UserId::new(), UserChange::ClearLockout)),
            Decision::Reject(Rejection::UnknownUser)
        );
    }

    #[test]
    fn the_last_admin_keeps_the_role() {
        let (directory, a, _, _) = admins(false);
        let mut planner = BatchPlanner::new(&directory, no_keys());
        assert_eq!(
            planner.decide(&change_role(a, "admin", false)),
            Decision::Reject(Rejection::LastAdmin)
        );
        // Other roles of the last admin may go.
        let (mut directory, a, _, _) = admins(false);
        directory.apply(&recorded(
            9,
            4,
            Event::RoleGranted(RoleGranted {
                user_id: a,
                role: role("support"),
            }),
        ));
        let mut planner = BatchPlanner::new(&directory, no_keys());
        assert!(matches!(
            planner.decide(&change_role(a, "support", false)),
            Decision::Append { .. }
        ));
    }

    #[test]
    fn given_no_keys_when_adding_an_active_key_then_added_and_activated_on_the_keys_stream() {
        let (directory, keys) = (Directory::new(), KeyRing::new());
        let mut planner = BatchPlanner::new(&directory, &keys);
        let Decision::Append { events, answer, .. } =
            planner.decide(&Command::ChangeKeys(KeyChange::Add {
                key: new_key(1),
                activate: true,
                after: None,
            }))
        else {
            panic!("appends");
        };
        assert_eq!(answer, Committed::Keys);
        let steps: Vec<_> = events.iter().map(|(v, e)| (*v, e.event_type())).collect();
        assert_eq!(
            steps,
            [
                (1, Event::SIGNING_KEY_ADDED),
                (2, Event::SIGNING_KEY_ACTIVATED)
            ]
        );
        assert!(
            events
                .iter()
                .all(|(_, e)| e.stream_id() == crate::events::SIGNING_KEYS_STREAM)
        );
    }

    #[test]
    fn given_a_key_added_meanwhile_when_adding_after_the_old_newest_then_keys_changed() {
        let directory = Directory::new();
        let mut keys = KeyRing::new();
        keys.apply(&recorded(1, 1, Event::SigningKeyAdded(new_key(1))));
        let mut planner = BatchPlanner::new(&directory, &keys);
        assert_eq!(
            planner.decide(&Command::ChangeKeys(KeyChange::Add {
                key: new_key(2),
                activate: false,
                after: None,
            })),
            Decision::Reject(Rejection::KeysChanged),
            "two instances deciding the first key: the second is refused"
        );
        let Decision::Append { events, .. } =
            planner.decide(&Command::ChangeKeys(KeyChange::Add {
                key: new_key(2),
                activate: false,
                after: Some(new_key(1).key_id),
            }))
        else {
            panic!("appends");
        };
        assert_eq!(events[0].0, 2, "the keys stream's next version");
        assert_eq!(
            planner.decide(&Command::ChangeKeys(KeyChange::Activate(new_key(1).key_id))),
            Decision::Wait,
            "one key change per batch"
        );
    }

    #[test]
    fn activating_or_retiring_against_the_states_is_refused() {
        let directory = Directory::new();
        let mut keys = KeyRing::new();
        keys.apply(&recorded(1, 1, Event::SigningKeyAdded(new_key(1))));
        keys.apply(&recorded(
            2,
            2,
            Event::SigningKeyActivated(SigningKeyActivated {
                key_id: new_key(1).key_id,
            }),
        ));
        let id = new_key(1).key_id;
        for command in [
            Command::ChangeKeys(KeyChange::Activate(id.clone())),
            Command::ChangeKeys(KeyChange::Retire(id)),
            Command::ChangeKeys(KeyChange::Retire(new_key(9).key_id)),
        ] {
            let mut planner = BatchPlanner::new(&directory, &keys);
            assert_eq!(
                planner.decide(&command),
                Decision::Reject(Rejection::KeysChanged),
                "{command:?}"
            );
        }
    }
}
