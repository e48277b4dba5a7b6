//! UserRegistry: owns the state (directory and throttle) and is the only writer of the event log.
//!
//! A thin actor: its messages, their handlers and its lifecycle. What it decides lives in plain
//! types: [`CommitQueue`] (group commit), [`Turns`] (login turn-taking), [`State`] (the one
//! fold), [`crate::decide`]. An event reaches the state only after its append has committed, and
//! a caller hears back only then.
//!
//! Readers do not queue behind commands: the directory is a concurrent map that the registry
//! writes in place after each commit, published as a [`RegistryView`] that HTTP workers read on
//! their own threads.
//!
//! Several instances may share one PostgreSQL log. Each applies every committed event in position
//! order, whoever wrote it: the store's change feed ([`EventStore::watch`]) wakes a tail read,
//! and an own append that lands past events not applied yet first reads those. Before a decision
//! that other instances' events could change (a login, a sign-up's rate, an unknown user), the
//! registry catches up to the log's head, one read shared by every request that waits for it
//! ([`Syncs`]).
//!
//! A registry can also start before the log is reachable (database down at boot): it then answers
//! every command with [`RegistryError::Loading`] (503), never a 401 from an empty directory, and
//! retries the replay in the background until it succeeds.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use tokio::sync::oneshot;

use super::reply::Cancellable;
use crate::clock::Clock;
use crate::commit::{Batch, CommitError, CommitQueue, MAX_BATCH, Next, Outcome, Syncs, user_of};
use crate::decide::{Command, KeyChange, NewSession, Rejection, SessionScope, UserChange};
use crate::diagnostics::error_chain;
use crate::domain::{Email, Password, PasswordHash, SessionId, UserId};
use crate::events::signed::{Linked, Untrusted};
use crate::events::{
    Change, EndReason, EventMetadata, EventStore, Imported, RecordedEvent, StoreError, linked_after,
};
use crate::hashing::{HashError, PasswordHasher};
use crate::keyring::KeysView;
use crate::metrics::METRICS;
use crate::projection::{
    Directory, DirectoryView, SessionEntry, SessionLife, UserEntry, UserSummary,
};
use crate::sessions::{
    Judgement, PresentedRefresh, Rotated, Rotation, SessionPolicy, TokenHash, judge,
};
use crate::state::State;
use crate::throttle::turns::{Admission, TurnKey, Turns, Waiter};
use crate::throttle::{LoginStanding, Subject, ThrottlePolicy, Throttled};

/// `send` waits when a mailbox is full; the default of 16 would throttle a busy server.
const MAILBOX_CAPACITY: usize = 4096;
/// Waits between replay attempts while the log is unreachable: short at first, then capped.
const RELOAD_FIRST_DELAY: Duration = Duration::from_millis(250);
const RELOAD_MAX_DELAY: Duration = Duration::from_secs(2);
/// How often throttle state that can no longer matter is dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// `Retry-After` for an attempt refused because too many of its kind are in flight.
const BUSY_RETRY: Duration = Duration::from_secs(1);
/// How often the lag gauge is refreshed.
const LAG_EVERY: Duration = Duration::from_secs(1);
/// Rotation batches sent to the store at once: a second one fills the first's round trip and
/// commit, and on PostgreSQL their commits can share a WAL flush.
const ROTATIONS_IN_FLIGHT: usize = 2;
/// Known-email login outcomes whose commit waits are kept, to pad unknown-email failures with.
const KEPT_WAITS: usize = 64;

/// Why the registry refused or could not carry out a command.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("a user with this email already exists")]
    EmailTaken,
    /// Unknown email or wrong password: deliberately indistinguishable.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Nothing was applied. An append may or may not have committed; the registry re-reads the
    /// log before its next decision.
    #[error("the event store is unavailable")]
    Unavailable(#[source] Arc<StoreError>),
    /// Another process kept writing to this user's stream; retrying is safe.
    #[error("another writer changed this user's stream")]
    Contention,
    #[error("password hashing failed")]
    Hashing(#[source] HashError),
    #[error("the registry stopped before answering")]
    Stopped,
    /// The log has not been replayed yet (the store was unreachable at start-up); retrying later
    /// is safe.
    #[error("the event log has not been replayed yet")]
    Loading,
    /// Too many failed logins (or sign-ups) from this address; retry after the given time.
    #[error("too many attempts; retry in {:?}", .0.retry_after)]
    Throttled(Throttled),
    /// Too many logins for this account from this address are already being checked or waiting
    /// ([`crate::throttle::turns`]); refused at once instead of queueing without limit.
    #[error("too many login attempts in parallel; retry in {:?}", .0.retry_after)]
    Busy(Throttled),
    /// Too many logins from this address, all accounts together, are waiting, or it has made
    /// too many this minute.
    #[error("too many login attempts from this address; retry in {:?}", .0.retry_after)]
    AddressBusy(Throttled),
    /// The refresh token is unknown, expired, revoked or spent (and, if spent after the grace,
    /// its session has just been revoked).
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// Too many failed refreshes from this address; retry after the given time.
    #[error("too many failed refreshes; retry in {:?}", .0.retry_after)]
    RefreshThrottled(Throttled),
    /// The signing keys are no longer as a key change assumed: another instance or command
    /// took this step, or another one, first.
    #[error("the signing keys changed meanwhile")]
    KeysChanged,
    /// No user has this id.
    #[error("no such user")]
    UnknownUser,
    /// The change would leave no user with the `admin` role.
    #[error("the last admin cannot lose the admin role")]
    LastAdmin,
}

impl From<CommitError> for RegistryError {
    fn from(error: CommitError) -> Self {
        match error {
            CommitError::Rejected(Rejection::EmailTaken) => RegistryError::EmailTaken,
            CommitError::Rejected(Rejection::UnknownUser | Rejection::StaleCredentials) => {
                RegistryError::InvalidCredentials
            }
            CommitError::Rejected(Rejection::KeysChanged) => RegistryError::KeysChanged,
            CommitError::Rejected(Rejection::LastAdmin) => RegistryError::LastAdmin,
            CommitError::Unavailable(error) => RegistryError::Unavailable(error),
            CommitError::Contention => RegistryError::Contention,
        }
    }
}

/// Why the registry could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot replay the event log")]
    Replay(#[from] StoreError),
    #[error("cannot prepare the dummy password hash")]
    Hash(#[from] HashError),
}

/// Asks whether `client` may sign up now, and counts the attempt if so. The HTTP layer sends
/// it before hashing the password, so a flood of sign-ups is refused before it costs bcrypt.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct AdmitSignup {
    pub client: Option<IpAddr>,
}

/// Registers a user whose password is already hashed (see [`PasswordHasher::hash`]).
/// Answers after `UserRegistered` has committed.
#[derive(Message)]
#[rtype(result = "Result<UserSummary, RegistryError>")]
pub struct Register {
    pub email: Email,
    pub password_hash: PasswordHash,
    pub metadata: EventMetadata,
}

/// Registers a user brought from another system with the bcrypt hash it kept for them
/// (`authlog import`): as [`Register`], with `imported` in the `UserRegistered` saying where
/// from. [`RegistryError::EmailTaken`] if the email is registered already.
#[derive(Message)]
#[rtype(result = "Result<UserSummary, RegistryError>")]
pub struct Import {
    pub email: Email,
    pub password_hash: PasswordHash,
    pub imported: Imported,
    pub metadata: EventMetadata,
}

/// Checks a password; on success appends `LoginSucceeded` (and `PasswordRehashed` if the stored
/// hash is weaker than the configured cost), on failure `LoginFailed`, and answers after they
/// have committed. An unknown email is checked against a dummy hash, so it costs the same time
/// as a wrong password.
///
/// Throttled attempts are refused before any check ([`crate::throttle`]); attempts for one
/// account from one address take turns ([`crate::throttle::turns`]). If the caller stops
/// waiting (the HTTP client went away), an attempt that has not started its check never does.
#[derive(Message)]
#[rtype(result = "Result<UserSummary, RegistryError>")]
pub struct Authenticate {
    pub email: Email,
    pub password: Password,
    pub metadata: EventMetadata,
    /// The session a successful login starts (`SessionStarted`, in the same append), with the
    /// hash of its first refresh token; `None` logs in without one.
    pub session: Option<SessionGrant>,
}

/// A session for a login to start: its id and its first refresh token's hash.
#[derive(Debug, Clone)]
pub struct SessionGrant {
    pub session_id: SessionId,
    pub token_hash: TokenHash,
}

/// Changes a password: the current one is checked like a login (same turns, throttle and
/// `LoginFailed` on a mismatch); if it matches, `new_password` is hashed and `PasswordChanged`
/// is appended with a `SessionEnded` for every session of the user but `keep`.
#[derive(Message)]
#[rtype(result = "Result<UserSummary, RegistryError>")]
pub struct ChangePassword {
    pub user_id: UserId,
    pub keep: Option<SessionId>,
    pub current_password: Password,
    pub new_password: Password,
    pub metadata: EventMetadata,
}

/// Erases the caller's own account (`DELETE /account`): the password is checked like a login
/// (same turns, throttle and `LoginFailed` on a mismatch); if it matches, every session ends
/// and `UserErased` is appended, destroying the user's data key in the same transaction.
/// [`RegistryError::LastAdmin`] if the user is the last enabled admin.
#[derive(Message)]
#[rtype(result = "Result<UserSummary, RegistryError>")]
pub struct EraseAccount {
    pub user_id: UserId,
    pub password: Password,
    pub metadata: EventMetadata,
}

/// Spends a refresh token and makes `successor` the session's current one (see
/// [`crate::sessions::judge`] for tokens that are not current). Nothing is appended unless the
/// token was reused, which ends the session.
#[derive(Message)]
#[rtype(result = "Result<Refreshed, RegistryError>")]
pub struct Refresh {
    pub presented: PresentedRefresh,
    /// The hash of the token minted to succeed it (generation + 1).
    pub successor: TokenHash,
    /// That token sealed under the presented one ([`crate::sessions::seal`]).
    pub sealed: Vec<u8>,
    pub client: Option<IpAddr>,
}

/// A presented refresh token that is not one of authlog's: counted against the address like any
/// failed refresh. Answers why it was refused ([`RegistryError::RefreshThrottled`] once the
/// address has failed too often, else [`RegistryError::InvalidRefreshToken`]).
#[derive(Message)]
#[rtype(result = "RegistryError")]
pub struct RejectRefresh {
    pub client: Option<IpAddr>,
}

/// A refresh that succeeded.
#[derive(Debug, Clone)]
pub struct Refreshed {
    pub user: UserSummary,
    pub session: SessionId,
    pub expires_at: chrono::DateTime<Utc>,
    pub successor: Successor,
}

/// Which refresh token the caller now holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Successor {
    /// The one it minted: this refresh rotated the session.
    Minted,
    /// Another refresh of the same token rotated it within the grace; this is its successor,
    /// sealed under the presented token.
    Sealed(Vec<u8>),
}

/// Ends the user's sessions in `scope` (`SessionEnded`, one per session); Ok once committed.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct EndSessions {
    pub user_id: UserId,
    pub scope: SessionScope,
    pub reason: EndReason,
    pub metadata: EventMetadata,
}

/// One change to the token signing keys, appended on the keys' stream; Ok once committed,
/// [`RegistryError::KeysChanged`] if the keys are no longer as `change` assumed (another
/// instance or command got there first). On a store other instances write, it is decided after
/// catching up with the log.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct ChangeSigningKeys {
    pub change: KeyChange,
    /// Who asks: `actor` names the command or the schedule.
    pub metadata: EventMetadata,
}

/// An admin's change to one user ([`UserChange`]: a role, disabling, enabling, clearing the
/// login lockout). Decided after catching up with every instance's events; answers with the
/// user once the change has committed, or at once if the log already says so (idempotent).
/// [`RegistryError::UnknownUser`] for an unknown id, [`RegistryError::LastAdmin`] when it would
/// leave no enabled user with `admin`.
#[derive(Message)]
#[rtype(result = "Result<UserSummary, RegistryError>")]
pub struct Administer {
    pub user_id: UserId,
    pub change: UserChange,
    /// Who asks: `actor` names the admin or the command.
    pub metadata: EventMetadata,
}

/// Forgets sessions past their absolute lifetime or idle timeout (checked beside the log) now,
/// as the registry does every minute; answers how many went.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ExpireSessions;

/// Looks a user up by id, as the log stands now. [`RegistryError::Loading`] until the log has
/// been replayed, so that "unknown user" is never answered from an empty directory. HTTP
/// handlers ask the [`RegistryView`] instead, without a message.
#[derive(Message)]
#[rtype(result = "Result<Option<UserSummary>, RegistryError>")]
pub struct FindUser {
    pub user_id: UserId,
}

/// Catches up with the log's head, then answers: whatever any instance committed before this
/// message was sent is applied once it returns Ok. For a reader that found no user where a
/// token names one (read-your-writes). Answers at once on a store this process alone writes.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct CatchUp;

/// Whether the directory has been rebuilt from the log, and if not, why.
#[derive(Message)]
#[rtype(result = "Readiness")]
pub struct GetReadiness;

/// Where a user stands with the login throttle now ([`Throttle::standing`]): their failure
/// streaks, recent failures and lockouts, as this instance has applied the log.
#[derive(Message)]
#[rtype(result = "Result<LoginStanding, RegistryError>")]
pub struct GetStanding {
    pub user_id: UserId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// The log has been replayed; the directory is at this position. `untrusted`: a row after
    /// it that no valid log signature covers, which this instance refuses to apply.
    Ready {
        users: usize,
        position: i64,
        untrusted: Option<Untrusted>,
    },
    /// Still replaying, or waiting for the store; the last attempt's error, if any.
    Loading { last_error: Option<String> },
    /// The log cannot be served by this build (a migration failed, or an event cannot be
    /// decoded): waiting will not fix it, so the registry stopped trying.
    Failed { error: String },
}

impl std::fmt::Display for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Readiness::Ready {
                users,
                position,
                untrusted: None,
            } => write!(f, "ready: {users} users, log at position {position}"),
            Readiness::Ready {
                users,
                position,
                untrusted: Some(untrusted),
            } => write!(
                f,
                "serving {users} users as of position {position}; {untrusted}"
            ),
            Readiness::Loading { last_error: None } => f.write_str("replaying the log"),
            Readiness::Loading {
                last_error: Some(error),
            } => write!(f, "waiting for the event store ({error})"),
            Readiness::Failed { error } => write!(f, "failed: {error}"),
        }
    }
}

/// A copy of the committed directory, for tests and diagnostics (costs O(users)).
#[derive(Message)]
#[rtype(result = "Directory")]
pub struct GetDirectory;

/// A login's password check finished (sent by the attempt itself, never by callers).
#[derive(Message)]
#[rtype(result = "()")]
struct RecordAttempt {
    check: Check,
    email: Email,
    metadata: EventMetadata,
    verified: Result<(bool, Option<PasswordHash>), HashError>,
    purpose: Purpose,
    reply: oneshot::Sender<Reply>,
}

/// What a password check is for.
enum Purpose {
    /// A login, starting this session if any.
    Login(Option<SessionGrant>),
    /// A password change, keeping this session.
    ChangePassword {
        keep: Option<SessionId>,
        new: NewPassword,
    },
    /// The user erasing their own account.
    Erase,
}

/// A password change's new password: as given, until the current one has matched; then hashed.
enum NewPassword {
    Given(Password),
    Hashed(PasswordHash),
}

/// A login's turn ended ([`TurnGuard`]): the next attempt of its key may start.
#[derive(Message)]
#[rtype(result = "()")]
struct EndTurn(TurnKey);

type Reply = Result<UserSummary, RegistryError>;

/// What readers get without queueing behind commands: the directory as committed so far, and
/// whether the log has been replayed.
#[derive(Debug, Clone)]
pub struct RegistryView {
    directory: DirectoryView,
    loaded: Arc<AtomicBool>,
}

impl RegistryView {
    /// Whether the log has been replayed.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// [`FindUser`], answered on the caller's own thread.
    pub fn find_user(&self, user_id: UserId) -> Result<Option<UserSummary>, RegistryError> {
        if !self.loaded.load(Ordering::Acquire) {
            return Err(RegistryError::Loading);
        }
        Ok(self.directory.find(user_id))
    }

    /// The session, if the log says it is live (its absolute expiry is the caller's to check).
    pub fn session(&self, id: SessionId) -> Result<Option<SessionLife>, RegistryError> {
        if !self.loaded.load(Ordering::Acquire) {
            return Err(RegistryError::Loading);
        }
        Ok(self.directory.session(id))
    }

    /// The user's live sessions, oldest first.
    pub fn sessions_of(&self, user: UserId) -> Vec<(SessionId, SessionEntry)> {
        self.directory.sessions_of(user)
    }

    /// The user as the log describes them, in full.
    pub fn user(&self, user_id: UserId) -> Result<Option<UserEntry>, RegistryError> {
        if !self.loaded.load(Ordering::Acquire) {
            return Err(RegistryError::Loading);
        }
        Ok(self.directory.get(user_id))
    }

    /// A page of users in email order ([`DirectoryView::page`]); scans every user, so call it
    /// off the request thread.
    pub fn users_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<UserEntry>, bool), RegistryError> {
        if !self.loaded.load(Ordering::Acquire) {
            return Err(RegistryError::Loading);
        }
        Ok(self.directory.page(prefix, after, limit))
    }
}

/// A reserved login turn. Dropped, wherever that happens (the check finished and its outcome
/// was answered, or the caller went away), it tells the registry the turn is over, so no turn
/// can be lost.
struct TurnGuard {
    key: Option<TurnKey>,
    registry: Addr<UserRegistry>,
}

impl TurnGuard {
    /// Ends nothing: the registry takes the turn back itself.
    fn disarm(mut self) -> Option<TurnKey> {
        self.key.take()
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            // Unbounded on purpose: at most one message per turn, and a turn must never leak.
            self.registry.do_send(EndTurn(key));
        }
    }
}

/// A password check whose turn has come.
struct Check {
    turn: TurnGuard,
    user_id: Option<UserId>,
    /// The user's hash, or the dummy hash for an unknown email.
    hash: PasswordHash,
    /// The stored hash is weaker than the configured cost: hash anew if the password matches.
    rehash: bool,
    /// The user's password changes when the check was granted: its outcome stands only if
    /// there has been none since.
    checked_at: u32,
}

/// A login waiting for its turn: costs nothing until [`Turns::next`] hands it out.
struct WaitingLogin {
    email: Email,
    grant: oneshot::Sender<Result<Check, RegistryError>>,
}

impl Waiter for WaitingLogin {
    fn is_gone(&self) -> bool {
        self.grant.is_closed()
    }
}

/// Where a login hears that its turn has come (or why it will not).
type Grant = oneshot::Sender<Result<Check, RegistryError>>;

/// Whether a login checks now or waits for a turn.
enum Turn {
    Now(Check),
    Wait(TurnKey),
}

/// What waits until the registry has caught up with the log's head ([`Syncs`]), on a store
/// other processes write too.
enum AfterSync {
    /// A login, admitted once the state holds every instance's events.
    Login {
        email: Email,
        client: Option<IpAddr>,
        grant: Grant,
    },
    /// A sign-up's rate check.
    Signup {
        client: Option<IpAddr>,
        reply: oneshot::Sender<Result<(), RegistryError>>,
    },
    /// Turns freed at this address, to hand to its waiters.
    Handoff(Option<IpAddr>),
    /// A reader's [`CatchUp`].
    Reply(oneshot::Sender<Result<(), RegistryError>>),
    /// A refresh whose session this instance had not seen yet.
    Refresh(Refresh, RefreshReply),
    /// A key change, decided against every instance's key events.
    Keys(
        ChangeSigningKeys,
        oneshot::Sender<Result<(), RegistryError>>,
    ),
    /// An admin's change, decided against every instance's events.
    Administer(
        Administer,
        oneshot::Sender<Result<UserSummary, RegistryError>>,
    ),
}

type RefreshReply = oneshot::Sender<Result<Refreshed, RegistryError>>;

/// A refresh waiting for its rotation to be carried out by the store.
struct PendingRotation {
    rotation: Rotation,
    user: UserSummary,
    expires_at: chrono::DateTime<Utc>,
    client: Option<IpAddr>,
    reply: RefreshReply,
}

enum Load {
    Ready,
    Loading {
        last_error: Option<String>,
        delay: Duration,
    },
    Failed(String),
}

pub struct UserRegistry {
    store: Arc<dyn EventStore>,
    /// Committed state only: an event is applied after its append returned Ok.
    state: State,
    /// Set once the log has been replayed; shared with every [`RegistryView`].
    loaded: Arc<AtomicBool>,
    load: Load,
    commits: CommitQueue,
    turns: Turns<WaitingLogin>,
    hasher: PasswordHasher,
    /// Verified against when the email is unknown, so unknown emails cost a full bcrypt check.
    dummy_hash: PasswordHash,
    /// Other servers serve this store (PostgreSQL): catch up before every decision their events
    /// could change.
    shared: bool,
    /// The store has a change feed: other processes may append to it (servers on PostgreSQL,
    /// operator commands on either store).
    watched: bool,
    syncs: Syncs<AfterSync>,
    /// The highest position this registry knows the log holds.
    head: i64,
    /// Since when it has known of events it has not applied.
    behind_since: Option<Instant>,
    /// How long recent known-email logins waited for their outcome to commit, newest last: an
    /// unknown-email failure, which commits nothing, waits as long as one of them.
    waits: Arc<std::sync::Mutex<VecDeque<Duration>>>,
    /// Session lifetimes and the reuse grace.
    sessions: SessionPolicy,
    clock: Clock,
    /// Refreshes waiting for the store, and the sessions of the rotation batches in flight.
    rotations: VecDeque<PendingRotation>,
    rotating: Vec<std::collections::HashSet<SessionId>>,
}

impl UserRegistry {
    /// Prepares the store (migrations), replays the log into a fresh state, and prepares the
    /// dummy hash.
    pub async fn load(
        store: Arc<dyn EventStore>,
        hasher: PasswordHasher,
    ) -> Result<Self, LoadError> {
        let dummy_hash = hasher.dummy_hash().await?;
        Self::load_with(store, hasher, dummy_hash).await
    }

    /// [`UserRegistry::load`] with a dummy hash made beforehand.
    pub async fn load_with(
        store: Arc<dyn EventStore>,
        hasher: PasswordHasher,
        dummy_hash: PasswordHash,
    ) -> Result<Self, LoadError> {
        store.prepare().await?;
        let (state, _) =
            crate::snapshot::restore(store.as_ref(), ThrottlePolicy::default()).await?;
        Ok(Self::new(store, state, hasher, dummy_hash, Load::Ready))
    }

    /// A registry that has not replayed the log yet, because the store could not be reached.
    /// Once started, it retries the replay in the background and serves as soon as it succeeds.
    pub fn unloaded(
        store: Arc<dyn EventStore>,
        hasher: PasswordHasher,
        dummy_hash: PasswordHash,
        error: &StoreError,
    ) -> Self {
        let load = Load::Loading {
            last_error: Some(error_chain(error)),
            delay: RELOAD_FIRST_DELAY,
        };
        let state = State::new(ThrottlePolicy::default());
        Self::new(store, state, hasher, dummy_hash, load)
    }

    fn new(
        store: Arc<dyn EventStore>,
        state: State,
        hasher: PasswordHasher,
        dummy_hash: PasswordHash,
        load: Load,
    ) -> Self {
        Self {
            store,
            state,
            loaded: Arc::new(AtomicBool::new(matches!(load, Load::Ready))),
            load,
            commits: CommitQueue::new(),
            turns: Turns::new(u32::try_from(hasher.parallelism()).unwrap_or(u32::MAX)),
            hasher,
            dummy_hash,
            shared: false,
            watched: false,
            syncs: Syncs::default(),
            head: 0,
            behind_since: None,
            waits: Arc::default(),
            sessions: SessionPolicy::DEFAULT,
            clock: Clock::system(),
            rotations: VecDeque::new(),
            rotating: Vec::new(),
        }
    }

    /// Sets session lifetimes and the grace (the default is [`SessionPolicy::DEFAULT`]).
    pub fn with_session_policy(mut self, policy: SessionPolicy) -> Self {
        self.sessions = policy;
        self
    }

    /// Reads the time from `clock` for session decisions (a settable one in tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the brute-force limits (the default is [`ThrottlePolicy::default`]).
    pub fn with_throttle_policy(mut self, policy: ThrottlePolicy) -> Self {
        self.state.throttle_mut().set_policy(policy);
        self
    }

    /// The view readers use instead of messages; it follows this registry once started.
    pub fn view(&self) -> RegistryView {
        RegistryView {
            directory: self.state.directory().view(),
            loaded: Arc::clone(&self.loaded),
        }
    }

    /// The signing keys as published to readers (the TokenActors); it follows this registry
    /// once started.
    pub fn keys(&self) -> KeysView {
        self.state.keys().view()
    }

    /// The directory as replayed so far (before the actor starts: the state it will serve).
    pub fn directory(&self) -> &Directory {
        self.state.directory()
    }

    /// Whether the directory has been rebuilt from the log.
    pub fn readiness(&self) -> Readiness {
        match &self.load {
            Load::Ready => Readiness::Ready {
                users: self.state.directory().len(),
                position: self.state.position(),
                untrusted: self.state.untrusted(),
            },
            Load::Loading { last_error, .. } => Readiness::Loading {
                last_error: last_error.clone(),
            },
            Load::Failed(error) => Readiness::Failed {
                error: error.clone(),
            },
        }
    }

    fn is_loaded(&self) -> bool {
        matches!(self.load, Load::Ready)
    }

    /// Queues a command for the next batch; `respond` hears its outcome after commit.
    fn enqueue(
        &mut self,
        command: Command,
        metadata: EventMetadata,
        respond: impl FnOnce(Outcome) + 'static,
        ctx: &mut Context<Self>,
    ) {
        self.commits.push(command, metadata, respond);
        self.flush(ctx);
    }

    /// Starts the next append or catch-up, unless one is in flight.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        // Judged now, not when a notification arrived: the notification of this registry's own
        // append often arrives before the append returns, and by now that append is applied.
        // Rows past a refused one are not applied, so the head stays ahead of the state until
        // they go: that is not "behind" (each decision would read the log again, forever).
        let behind = self.head > self.state.position() && self.state.untrusted().is_none();
        let next = self.commits.next_unless_behind(&self.state, behind);
        METRICS.registry_queue_depth.set(gauge(self.commits.len()));
        match next {
            Next::Idle => {}
            Next::CatchUp => {
                self.syncs.started();
                self.catch_up(ctx);
            }
            Next::Append(batch) => {
                METRICS.append_batch_size.observe(batch.len() as f64);
                let store = Arc::clone(&self.store);
                let events = batch.events();
                let sessions = batch.sessions();
                let append = async move {
                    let _timer = METRICS.append_duration.start_timer();
                    store.append_with(events, sessions).await
                };
                ctx.spawn(
                    append
                        .into_actor(self)
                        .map(move |result, act, ctx| match result {
                            Ok(recorded) if act.lands_past_a_gap(&recorded) => {
                                act.fill_gap(batch, recorded, ctx);
                            }
                            result => act.finish_append(batch, result, ctx),
                        }),
                );
            }
        }
    }

    /// Whether an append committed past events this registry has not applied: another
    /// instance appended in between. Those must be applied first, in position order, or a
    /// catch-up after this append's position would never read them.
    fn lands_past_a_gap(&self, recorded: &[RecordedEvent]) -> bool {
        recorded
            .first()
            .is_some_and(|first| first.position > self.state.position() + 1)
    }

    /// Reads and applies the events between the applied position and an own append that
    /// landed past them, then finishes that append. If the read fails, the append's callers
    /// hear 503 (their events committed, but this registry cannot apply them in order yet) and
    /// the next step re-reads the log.
    fn fill_gap(&mut self, batch: Batch, recorded: Vec<RecordedEvent>, ctx: &mut Context<Self>) {
        let store = Arc::clone(&self.store);
        let after = self.state.position();
        let first = recorded.first().map_or(after + 1, |event| event.position);
        let read = async move {
            let mut gap = Vec::new();
            linked_after(store.as_ref(), after)
                .for_each(|row| {
                    let reached = row.event.position + 1 >= first;
                    if row.event.position < first {
                        gap.push(row);
                    }
                    if reached {
                        std::ops::ControlFlow::Break(())
                    } else {
                        std::ops::ControlFlow::Continue(())
                    }
                })
                .await?;
            Ok::<_, StoreError>(gap)
        };
        ctx.spawn(
            read.into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(gap) => {
                        act.admit_tail(gap);
                        act.finish_append(batch, Ok(recorded), ctx);
                    }
                    Err(error) => act.finish_append(batch, Err(error), ctx),
                }),
        );
    }

    /// An append returned (and any gap before it was applied): apply, answer, go on.
    fn finish_append(
        &mut self,
        batch: Batch,
        result: Result<Vec<RecordedEvent>, StoreError>,
        ctx: &mut Context<Self>,
    ) {
        if let Ok(recorded) = &result {
            for event in recorded {
                METRICS
                    .events_appended
                    .with_label_values(&[event.event.event_type()])
                    .inc();
            }
        }
        self.commits.finish(batch, result, |event| {
            self.state.apply(event);
        });
        self.applied();
        self.flush(ctx);
    }

    /// Applies the rows read from the log that a log signature covers, and raises the alarm
    /// for the first that is not: an error line (once per position), the metrics, and
    /// readiness. The instance goes on serving the state it has.
    fn admit_tail(&mut self, rows: Vec<Linked>) {
        let before = self.state.untrusted();
        let (events, refused) = self.state.admit(rows);
        self.apply_tail(&events);
        match refused {
            Some(untrusted) if before != Some(untrusted) => {
                tracing::error!(
                    position = untrusted.position,
                    applied = self.state.position(),
                    "{untrusted}; serving the log as of position {}",
                    self.state.position()
                );
                METRICS.log_untrusted_rows.inc();
            }
            // The gauge: `apply_tail` (through `applied`) set it from the state.
            _ => {}
        }
    }

    /// Applies events read from the log (written by any process), timing how long each took
    /// to get here since its append.
    fn apply_tail(&mut self, events: &[RecordedEvent]) {
        let now = Utc::now();
        for event in events {
            if self.state.apply(event) {
                let delay = (now - event.recorded_at).to_std().unwrap_or_default();
                let seconds = delay.as_secs_f64();
                METRICS.tail_delay.observe(seconds);
                if seconds > METRICS.tail_delay_max.get() {
                    METRICS.tail_delay_max.set(seconds);
                }
            }
        }
        self.applied();
    }

    /// The state moved on: refresh what the gauges and the lag say.
    fn applied(&mut self) {
        let position = self.state.position();
        self.head = self.head.max(position);
        if position >= self.head {
            self.behind_since = None;
        }
        METRICS.log_applied_position.set(position);
        METRICS.log_head_position.set(self.head);
        METRICS
            .projection_users
            .set(gauge(self.state.directory().len()));
        METRICS
            .sessions_live
            .set(gauge(self.state.directory().session_count()));
        METRICS.log_untrusted_position.set(
            self.state
                .untrusted()
                .map_or(0, |untrusted| untrusted.position),
        );
    }

    /// The log holds at least `head`.
    fn learn_head(&mut self, head: i64) {
        self.head = self.head.max(head);
        if self.head > self.state.position() && self.behind_since.is_none() {
            self.behind_since = Some(Instant::now());
        }
        METRICS.log_head_position.set(self.head);
    }

    /// Applies whatever the log holds past the state's position, then resumes flushing.
    ///
    /// Runs as soon as the state may be stale (another writer's notification, a decision that
    /// waits for the head, an append whose outcome is unknown). If the read fails, queued
    /// commands and waiters fail fast, and the next command tries again.
    fn catch_up(&mut self, ctx: &mut Context<Self>) {
        let store = Arc::clone(&self.store);
        let after = self.state.position();
        let read = async move { linked_after(store.as_ref(), after).collect().await };
        ctx.spawn(read.into_actor(self).map(|result, act, ctx| match result {
            Ok(rows) => {
                if rows.len() > 1_000 {
                    tracing::info!(events = rows.len(), "caught up with the log");
                }
                act.admit_tail(rows);
                act.commits.caught_up();
                for waiter in act.syncs.finished() {
                    act.after_sync(waiter, Ok(()), ctx);
                }
                act.flush(ctx);
            }
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "cannot re-read the log; answering 503");
                let error = Arc::new(error);
                act.commits.catch_up_failed(Arc::clone(&error));
                for waiter in act.syncs.finished() {
                    act.after_sync(waiter, Err(RegistryError::Unavailable(Arc::clone(&error))), ctx);
                }
                METRICS.registry_queue_depth.set(gauge(act.commits.len()));
            }
        }));
    }

    /// Runs `waiter` once the state holds everything committed so far: after a catch-up on a
    /// store other processes write, at once on one this process alone writes.
    fn sync(&mut self, waiter: AfterSync, ctx: &mut Context<Self>) {
        if !self.shared {
            self.after_sync(waiter, Ok(()), ctx);
            return;
        }
        self.sync_now(waiter, ctx);
    }

    /// Runs `waiter` after a catch-up with the log's head, on any store (one read shared by
    /// every waiter that arrives meanwhile).
    fn sync_now(&mut self, waiter: AfterSync, ctx: &mut Context<Self>) {
        if !self.is_loaded() {
            self.after_sync(waiter, Ok(()), ctx);
            return;
        }
        self.syncs.push(waiter);
        self.commits.mark_stale();
        self.flush(ctx);
    }

    fn after_sync(
        &mut self,
        waiter: AfterSync,
        synced: Result<(), RegistryError>,
        ctx: &mut Context<Self>,
    ) {
        match (waiter, synced) {
            (
                AfterSync::Login {
                    email,
                    client,
                    grant,
                },
                Ok(()),
            ) => self.admit_login(email, client, grant, ctx),
            (AfterSync::Login { grant, .. }, Err(error)) => {
                let _ = grant.send(Err(error));
            }
            (AfterSync::Signup { client, reply }, Ok(())) => {
                let _ = reply.send(self.admit_signup(client));
            }
            (AfterSync::Signup { reply, .. }, Err(error))
            | (AfterSync::Reply(reply), Err(error)) => {
                let _ = reply.send(Err(error));
            }
            // A freed turn is handed on even if the read failed: its check then fails on the
            // store, instead of waiting forever.
            (AfterSync::Handoff(address), _) => self.hand_turns(address, ctx),
            (AfterSync::Refresh(msg, reply), Ok(())) => self.start_refresh(msg, reply, ctx),
            (AfterSync::Refresh(_, reply), Err(error)) => {
                let _ = reply.send(Err(error));
            }
            (AfterSync::Keys(msg, reply), Ok(())) => self.change_keys(msg, reply, ctx),
            (AfterSync::Keys(_, reply), Err(error)) => {
                let _ = reply.send(Err(error));
            }
            (AfterSync::Administer(msg, reply), Ok(())) => self.administer(msg, reply, ctx),
            (AfterSync::Administer(_, reply), Err(error)) => {
                let _ = reply.send(Err(error));
            }
            (AfterSync::Reply(reply), Ok(())) => {
                let _ = reply.send(if self.is_loaded() {
                    Ok(())
                } else {
                    Err(RegistryError::Loading)
                });
            }
        }
    }

    fn admit_signup(&mut self, client: Option<IpAddr>) -> Result<(), RegistryError> {
        if !self.is_loaded() {
            return Err(RegistryError::Loading);
        }
        self.state
            .throttle_mut()
            .admit_signup(client, Utc::now())
            .map_err(RegistryError::Throttled)
    }

    /// One replay attempt; on failure, another after a growing delay, unless waiting cannot
    /// help (a failed migration, an undecodable event).
    fn reload(&mut self, ctx: &mut Context<Self>) {
        let store = Arc::clone(&self.store);
        let policy = *self.state.throttle().policy();
        let replay = async move {
            store.prepare().await?;
            crate::snapshot::restore(store.as_ref(), policy)
                .await
                .map(|(state, _)| state)
        };
        ctx.spawn(replay.into_actor(self).map(|result, act, ctx| match result {
            Ok(state) => {
                act.state.adopt(state);
                tracing::info!(
                    users = act.state.directory().len(),
                    position = act.state.position(),
                    "replayed the event log; ready"
                );
                act.load = Load::Ready;
                act.loaded.store(true, Ordering::Release);
                act.applied();
                METRICS.registry_ready.set(1);
                act.flush(ctx);
            }
            Err(
                error @ (StoreError::Migration { .. }
                | StoreError::Misconfigured(_)
                | StoreError::Corrupt { .. }),
            ) => {
                let message = error_chain(&error);
                tracing::error!(error = %message, "cannot serve this event log; not retrying");
                act.load = Load::Failed(message);
            }
            Err(error) => {
                let message = error_chain(&error);
                let Load::Loading { last_error, delay } = &mut act.load else {
                    return;
                };
                if last_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(error = %message, "cannot replay the event log yet; retrying");
                }
                *last_error = Some(message);
                let wait = *delay;
                *delay = (wait * 2).min(RELOAD_MAX_DELAY);
                ctx.run_later(wait, |act, ctx| act.reload(ctx));
            }
        }));
    }

    /// Who a login names.
    fn subject(&self, email: &Email) -> Subject {
        self.state.directory().by_email(email).map_or_else(
            || Subject::Unknown(email.clone()),
            |user| Subject::User(user.id),
        )
    }

    /// Decides whether a login may be checked now, must wait its turn, or is refused, and
    /// tells it through `grant` (now, or once its turn comes).
    fn admit_login(
        &mut self,
        email: Email,
        client: Option<IpAddr>,
        grant: Grant,
        ctx: &mut Context<Self>,
    ) {
        match self.try_admit(&email, client, ctx) {
            // If its caller has left meanwhile, the check is dropped here and its turn ends.
            Ok(Turn::Now(check)) => {
                let _ = grant.send(Ok(check));
            }
            Ok(Turn::Wait(key)) => self.turns.wait(key, WaitingLogin { email, grant }),
            Err(error) => {
                let _ = grant.send(Err(error));
            }
        }
        METRICS.login_waiting.set(gauge(self.turns.waiting()));
    }

    fn try_admit(
        &mut self,
        email: &Email,
        client: Option<IpAddr>,
        ctx: &mut Context<Self>,
    ) -> Result<Turn, RegistryError> {
        if !self.is_loaded() {
            return Err(RegistryError::Loading);
        }
        let subject = self.subject(email);
        let now = Utc::now();
        // Refused at once while locked out, without waiting in line.
        self.state
            .throttle()
            .check_login(&subject, client, now)
            .map_err(RegistryError::Throttled)?;
        self.state
            .throttle_mut()
            .admit_login(client, now)
            .map_err(RegistryError::AddressBusy)?;
        let allowance = allowance(self.state.throttle(), self.shared, &subject, client);
        let key = (subject, client);
        match self.turns.admit(&key, allowance) {
            Admission::Go => Ok(Turn::Now(self.check(email, key, ctx))),
            Admission::Wait => Ok(Turn::Wait(key)),
            Admission::AccountFull => Err(RegistryError::Busy(Throttled {
                retry_after: BUSY_RETRY,
            })),
            Admission::AddressFull => Err(RegistryError::AddressBusy(Throttled {
                retry_after: BUSY_RETRY,
            })),
        }
    }

    /// What a check whose turn has come compares the password with.
    fn check(&self, email: &Email, key: TurnKey, ctx: &Context<Self>) -> Check {
        let user = self.state.directory().by_email(email);
        // A hash weaker than the configured cost is replaced on the next successful login.
        let rehash = user.as_ref().is_some_and(|user| {
            user.password_hash
                .cost()
                .is_some_and(|cost| cost < self.hasher.cost())
        });
        Check {
            turn: TurnGuard {
                key: Some(key),
                registry: ctx.address(),
            },
            user_id: user.as_ref().map(|user| user.id),
            checked_at: user.as_ref().map_or(0, |user| user.password_changes),
            hash: user.map_or_else(|| self.dummy_hash.clone(), |user| user.password_hash),
            rehash,
        }
    }

    /// Hands turns to the waiters of `address` while there is room and the throttle allows,
    /// and refuses those it now locks out.
    fn hand_turns(&mut self, address: Option<IpAddr>, ctx: &mut Context<Self>) {
        loop {
            let now = Utc::now();
            let throttle = self.state.throttle();
            let shared = self.shared;
            let handed = self.turns.next(address, |key| {
                throttle.check_login(&key.0, key.1, now)?;
                Ok(allowance(throttle, shared, &key.0, key.1))
            });
            let mut freed = false;
            for (key, waiter, outcome) in handed {
                if let Err(throttled) = outcome {
                    let _ = waiter.grant.send(Err(RegistryError::Throttled(throttled)));
                    continue;
                }
                let check = self.check(&waiter.email, key.clone(), ctx);
                if let Err(Ok(check)) = waiter.grant.send(Ok(check)) {
                    // Its caller left just now: take the turn back here, without a message.
                    check.turn.disarm();
                    self.turns.end(&key);
                    freed = true;
                }
            }
            if !freed {
                break;
            }
        }
        METRICS.login_waiting.set(gauge(self.turns.waiting()));
    }

    /// Turns a finished check into its events (or, for an unknown email, its in-memory count),
    /// and answers once they are committed. The check's turn ends after that answer.
    fn record_attempt(&mut self, attempt: RecordAttempt, ctx: &mut Context<Self>) {
        let RecordAttempt {
            check,
            email,
            metadata,
            verified,
            purpose,
            reply,
        } = attempt;
        let Check {
            turn,
            user_id,
            checked_at,
            ..
        } = check;
        // A disabled user's right password is refused exactly as a wrong one would be, with
        // nothing appended (it proves nothing the log needs) and after as long a wait as a
        // committed failure: the answer does not tell that the password was right.
        let disabled = user_id.is_some_and(|id| self.state.directory().is_disabled(id));
        if disabled && matches!(verified, Ok((true, _))) {
            ctx.run_later(self.commit_wait_sample(), move |_, _| {
                let _ = reply.send(Err(RegistryError::InvalidCredentials));
                drop(turn);
            });
            return;
        }
        let (command, succeeded) = match (verified, user_id) {
            (Ok((true, rehash)), Some(user_id)) => match purpose {
                Purpose::Login(session) => {
                    let session = session.map(|grant| self.new_session(grant));
                    (
                        Command::RecordLogin {
                            user_id,
                            rehash,
                            session,
                            checked_at,
                        },
                        true,
                    )
                }
                Purpose::ChangePassword {
                    keep,
                    new: NewPassword::Hashed(password_hash),
                } => (
                    Command::ChangePassword {
                        user_id,
                        password_hash,
                        keep,
                        checked_at,
                    },
                    true,
                ),
                Purpose::Erase => (
                    Command::Administer {
                        user_id,
                        change: UserChange::Erase,
                    },
                    true,
                ),
                // The attempt hashes the new password whenever the current one matched, so this
                // cannot happen; if it did, nothing would be recorded.
                Purpose::ChangePassword {
                    new: NewPassword::Given(_),
                    ..
                } => {
                    let _ = reply.send(Err(RegistryError::InvalidCredentials));
                    return;
                }
            },
            // The failure is an event, committed before the caller hears "invalid".
            (Ok(_), Some(user_id)) => (Command::RecordLoginFailure { user_id }, false),
            (Ok(_), None) => {
                let client = metadata.client_ip;
                self.state
                    .throttle_mut()
                    .unknown_failed(email, client, Utc::now());
                // Nothing to commit, so wait as long as a known email's failure waits for its
                // commit: the answer's timing does not tell whether the account exists.
                ctx.run_later(self.commit_wait_sample(), move |_, _| {
                    let _ = reply.send(Err(RegistryError::InvalidCredentials));
                    drop(turn);
                });
                return;
            }
            (Err(error), _) => {
                let _ = reply.send(Err(RegistryError::Hashing(error)));
                return;
            }
        };
        let enqueued = Instant::now();
        let waits = Arc::clone(&self.waits);
        let respond = move |outcome: Outcome| {
            if let Ok(mut waits) = waits.lock() {
                if waits.len() >= KEPT_WAITS {
                    waits.pop_front();
                }
                waits.push_back(enqueued.elapsed());
            }
            let answer = match user_of(outcome) {
                Ok(user) if succeeded => Ok(user),
                Ok(_) => Err(RegistryError::InvalidCredentials),
                Err(error) => Err(error.into()),
            };
            let _ = reply.send(answer);
            // The next attempt of this key starts only now, and sees this outcome applied.
            drop(turn);
        };
        self.enqueue(command, metadata, respond, ctx);
    }
}

impl UserRegistry {
    /// The session a successful login starts now, under the session policy.
    fn new_session(&self, grant: SessionGrant) -> NewSession {
        let now = self.clock.now();
        NewSession {
            session_id: grant.session_id,
            token_hash: grant.token_hash,
            now,
            expires_at: self.sessions.expires_at(now),
            idle_seconds: self.sessions.idle.as_secs(),
        }
    }

    /// A password check (for a login or a password change), as a task of its own outside the
    /// registry: waiting for a turn or for bcrypt costs the registry nothing, and the attempt
    /// stops if its caller goes away.
    fn attempt(
        &mut self,
        email: Email,
        password: Password,
        metadata: EventMetadata,
        purpose: Purpose,
        ctx: &mut Context<Self>,
    ) -> Cancellable<Reply> {
        let (grant, granted) = oneshot::channel();
        let client = metadata.client_ip;
        let waiter = AfterSync::Login {
            email: email.clone(),
            client,
            grant,
        };
        // On a log only this server serves but others may append to (the embedded store, under
        // `authlog import` or `authlog admin`), an email it does not know may have just been
        // appended: read the tail first, so an imported user logs in at once.
        if self.watched && self.state.directory().by_email(&email).is_none() {
            self.sync_now(waiter, ctx);
        } else {
            self.sync(waiter, ctx);
        }
        let hasher = self.hasher.clone();
        let registry = ctx.address();
        Cancellable::new(async move {
            let check = granted.await.unwrap_or(Err(RegistryError::Stopped))?;
            let verified = hasher
                .verify_and_rehash(password, check.hash.clone(), check.rehash)
                .await;
            let purpose = match (purpose, &verified) {
                (
                    Purpose::ChangePassword {
                        keep,
                        new: NewPassword::Given(new_password),
                    },
                    Ok((true, _)),
                ) => match hasher.hash(new_password).await {
                    Ok(hash) => Purpose::ChangePassword {
                        keep,
                        new: NewPassword::Hashed(hash),
                    },
                    Err(error) => return Err(RegistryError::Hashing(error)),
                },
                (purpose, _) => purpose,
            };
            // Once checked, the outcome is recorded even if the caller leaves now: the log
            // holds every password check that ran.
            let (reply, replied) = oneshot::channel();
            registry.do_send(RecordAttempt {
                check,
                email,
                metadata,
                verified,
                purpose,
                reply,
            });
            answer(replied).await
        })
    }

    /// Checks what memory can about a refresh (loaded, not throttled, the session live), then
    /// queues its rotation for the store.
    fn start_refresh(&mut self, msg: Refresh, reply: RefreshReply, ctx: &mut Context<Self>) {
        if !self.is_loaded() {
            let _ = reply.send(Err(RegistryError::Loading));
            return;
        }
        let now = self.clock.now();
        if let Err(throttled) = self.state.throttle_mut().check_refresh(msg.client, now) {
            METRICS.refreshes.with_label_values(&["throttled"]).inc();
            let _ = reply.send(Err(RegistryError::RefreshThrottled(throttled)));
            return;
        }
        let session = msg.presented.session;
        let live = self
            .state
            .directory()
            .session(session)
            .filter(|entry| entry.expires_at > now)
            .and_then(|entry| {
                let user = self.state.directory().view().find(entry.user_id)?;
                Some((user, entry.expires_at))
            });
        let Some((user, expires_at)) = live else {
            tracing::debug!(session_id = %session, "a refresh for a session that is not live");
            self.refresh_failed(msg.client, "invalid", reply);
            return;
        };
        let rotation = Rotation {
            presented: msg.presented,
            successor: msg.successor,
            sealed: msg.sealed,
            now,
            idle_cutoff: self.sessions.idle_cutoff(now),
        };
        self.rotations.push_back(PendingRotation {
            rotation,
            user,
            expires_at,
            client: msg.client,
            reply,
        });
        self.flush_rotations(ctx);
    }

    fn refresh_failed(&mut self, client: Option<IpAddr>, outcome: &str, reply: RefreshReply) {
        METRICS.refreshes.with_label_values(&[outcome]).inc();
        self.state
            .throttle_mut()
            .refresh_failed(client, self.clock.now());
        let _ = reply.send(Err(RegistryError::InvalidRefreshToken));
    }

    /// Sends the queued rotations to the store as one batch, with at most
    /// [`ROTATIONS_IN_FLIGHT`] batches in flight. A session is in at most one of them: a second
    /// rotation of it waits for the batch that has the first, so it is judged against that
    /// batch's outcome.
    fn flush_rotations(&mut self, ctx: &mut Context<Self>) {
        if self.rotating.len() >= ROTATIONS_IN_FLIGHT || self.rotations.is_empty() {
            return;
        }
        let mut batch = Vec::new();
        let mut later = VecDeque::new();
        let mut sessions = std::collections::HashSet::new();
        while let Some(pending) = self.rotations.pop_front() {
            if pending.reply.is_closed() {
                continue;
            }
            let session = pending.rotation.presented.session;
            let busy = self.rotating.iter().any(|batch| batch.contains(&session));
            if batch.len() >= MAX_BATCH || busy || !sessions.insert(session) {
                later.push_back(pending);
            } else {
                batch.push(pending);
            }
        }
        self.rotations = later;
        if batch.is_empty() {
            return;
        }
        self.rotating.push(sessions);
        let store = Arc::clone(&self.store);
        let rotations = batch.iter().map(|p| p.rotation.clone()).collect();
        let rotate = async move { store.rotate(rotations).await };
        ctx.spawn(rotate.into_actor(self).map(move |result, act, ctx| {
            let first = batch.first().map(|p| p.rotation.presented.session);
            act.rotating
                .retain(|sessions| first.is_none_or(|first| !sessions.contains(&first)));
            act.finish_rotations(batch, result, ctx);
            act.flush_rotations(ctx);
        }));
    }

    /// Answers each refresh of a batch the store has carried out (or not).
    fn finish_rotations(
        &mut self,
        batch: Vec<PendingRotation>,
        result: Result<Vec<Rotated>, StoreError>,
        ctx: &mut Context<Self>,
    ) {
        let outcomes = match result {
            Ok(outcomes) if outcomes.len() == batch.len() => outcomes,
            Ok(_) => {
                let error = Arc::new(StoreError::unavailable(anyhow::anyhow!(
                    "the store answered a different number of rotations"
                )));
                for pending in batch {
                    let _ = pending
                        .reply
                        .send(Err(RegistryError::Unavailable(Arc::clone(&error))));
                }
                return;
            }
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "cannot rotate refresh tokens; answering 503");
                let error = Arc::new(error);
                for pending in batch {
                    let _ = pending
                        .reply
                        .send(Err(RegistryError::Unavailable(Arc::clone(&error))));
                }
                return;
            }
        };
        for (pending, outcome) in batch.into_iter().zip(outcomes) {
            let PendingRotation {
                rotation,
                user,
                expires_at,
                client,
                reply,
            } = pending;
            let session = rotation.presented.session;
            let refreshed = |successor| Refreshed {
                user: user.clone(),
                session,
                expires_at,
                successor,
            };
            let judgement = match outcome {
                Rotated::Done => {
                    METRICS.refreshes.with_label_values(&["rotated"]).inc();
                    let _ = reply.send(Ok(refreshed(Successor::Minted)));
                    continue;
                }
                Rotated::Unmatched(row) => {
                    let judgement = judge(
                        row.as_ref(),
                        &rotation.presented,
                        rotation.now,
                        &self.sessions,
                    );
                    tracing::debug!(
                        session_id = %session,
                        presented = rotation.presented.generation,
                        current = row.as_ref().map(|row| row.generation),
                        ?judgement,
                        "a refresh token that is not current"
                    );
                    judgement
                }
            };
            match judgement {
                Judgement::Grace(sealed) => {
                    METRICS.refreshes.with_label_values(&["grace"]).inc();
                    let _ = reply.send(Ok(refreshed(Successor::Sealed(sealed))));
                }
                Judgement::Invalid => self.refresh_failed(client, "invalid", reply),
                Judgement::Reused => {
                    METRICS.refreshes.with_label_values(&["reused"]).inc();
                    self.state
                        .throttle_mut()
                        .refresh_failed(client, rotation.now);
                    tracing::warn!(
                        user_id = %user.user_id,
                        session_id = %session,
                        "a spent refresh token was presented again; ending its session"
                    );
                    let command = Command::EndSessions {
                        user_id: user.user_id,
                        scope: SessionScope::One(session),
                        reason: EndReason::RefreshTokenReused,
                    };
                    let metadata = EventMetadata::new(client, None);
                    self.enqueue(
                        command,
                        metadata,
                        move |outcome: Outcome| {
                            let _ = reply.send(match outcome {
                                Ok(_) | Err(CommitError::Rejected(_)) => {
                                    Err(RegistryError::InvalidRefreshToken)
                                }
                                Err(error) => Err(error.into()),
                            });
                        },
                        ctx,
                    );
                }
            }
        }
    }

    /// Forgets sessions past their absolute lifetime now, then those whose rows beside the log
    /// say they are idle-expired (or that have no row any more); removes expired rows too.
    fn expire_sessions(&mut self, done: Option<oneshot::Sender<usize>>, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        let expired = self.state.directory_mut().expire_sessions(now, &[]);
        let cutoff = self.sessions.idle_cutoff(now);
        let candidates = self.state.directory().sessions_started_before(cutoff);
        let store = Arc::clone(&self.store);
        let check = async move {
            if let Err(error) = store.prune_sessions(now, cutoff).await {
                tracing::debug!(error = %error_chain(&error), "cannot prune expired session rows");
            }
            let mut idle = Vec::new();
            for chunk in candidates.chunks(1_000) {
                let used = store.last_used(chunk.to_vec()).await?;
                let recent: std::collections::HashSet<SessionId> = used
                    .into_iter()
                    .filter(|(_, at)| *at > cutoff)
                    .map(|(id, _)| id)
                    .collect();
                idle.extend(chunk.iter().filter(|id| !recent.contains(id)));
            }
            Ok::<_, StoreError>(idle)
        };
        ctx.spawn(check.into_actor(self).map(move |result, act, _ctx| {
            let idle = match result {
                Ok(idle) => act.state.directory_mut().expire_sessions(now, &idle),
                Err(error) => {
                    tracing::debug!(error = %error_chain(&error), "cannot check idle sessions");
                    0
                }
            };
            METRICS
                .sessions_live
                .set(gauge(act.state.directory().session_count()));
            if let Some(done) = done {
                let _ = done.send(expired + idle);
            }
        }));
    }

    /// Queues a key change; `reply` hears once it has committed, or why not.
    fn change_keys(
        &mut self,
        msg: ChangeSigningKeys,
        reply: oneshot::Sender<Result<(), RegistryError>>,
        ctx: &mut Context<Self>,
    ) {
        if !self.is_loaded() {
            let _ = reply.send(Err(RegistryError::Loading));
            return;
        }
        let command = match msg.change {
            KeyChange::RotateLog => {
                let Some(signer) = self.store.log_signer() else {
                    let _ = reply.send(Err(RegistryError::Unavailable(Arc::new(
                        crate::events::personal::no_master_key(),
                    ))));
                    return;
                };
                let generation = self.state.log_key_generation() + 1;
                Command::RotateLogKey(crate::events::LogKeyRotated {
                    generation,
                    public_key: crate::events::signed::encode_key(&signer.public_key(generation)),
                })
            }
            change => Command::ChangeKeys(change),
        };
        let respond = move |outcome: Outcome| {
            let _ = reply.send(outcome.map(|_| ()).map_err(RegistryError::from));
        };
        self.enqueue(command, msg.metadata, respond, ctx);
    }

    /// Queues an admin's change; `reply` hears once it has committed, or why not.
    fn administer(
        &mut self,
        msg: Administer,
        reply: oneshot::Sender<Result<UserSummary, RegistryError>>,
        ctx: &mut Context<Self>,
    ) {
        if !self.is_loaded() {
            let _ = reply.send(Err(RegistryError::Loading));
            return;
        }
        let respond = move |outcome: Outcome| {
            let _ = reply.send(match user_of(outcome) {
                Err(CommitError::Rejected(Rejection::UnknownUser)) => {
                    Err(RegistryError::UnknownUser)
                }
                answer => answer.map_err(RegistryError::from),
            });
        };
        let command = Command::Administer {
            user_id: msg.user_id,
            change: msg.change,
        };
        self.enqueue(command, msg.metadata, respond, ctx);
    }

    /// One of the recent known-email commit waits, chosen at random (none yet: no wait).
    fn commit_wait_sample(&self) -> Duration {
        let Ok(waits) = self.waits.lock() else {
            return Duration::ZERO;
        };
        if waits.is_empty() {
            return Duration::ZERO;
        }
        let pick = uuid::Uuid::new_v4().as_u128() % waits.len() as u128;
        waits
            .get(usize::try_from(pick).unwrap_or(0))
            .copied()
            .unwrap_or_default()
    }
}

/// How many checks of `subject` from `client` may run at once on this instance. On a shared
/// store, with lockouts on, one: every check then starts from a state that holds every earlier
/// outcome of this instance, so N instances run at most `max_failures + N - 1` checks before
/// a lockout (one each may be in flight unseen by the others).
fn allowance(
    throttle: &crate::throttle::Throttle,
    shared: bool,
    subject: &Subject,
    client: Option<IpAddr>,
) -> u32 {
    if shared && throttle.policy().login_max_failures > 0 {
        1
    } else {
        throttle.allowance(subject, client)
    }
}

impl Actor for UserRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        METRICS.registry_ready.set(i64::from(self.is_loaded()));
        METRICS
            .projection_users
            .set(gauge(self.state.directory().len()));
        ctx.run_interval(PRUNE_EVERY, |act, ctx| {
            act.state.throttle_mut().prune(Utc::now());
            if act.is_loaded() {
                act.expire_sessions(None, ctx);
            }
        });
        ctx.run_interval(LAG_EVERY, |act, _ctx| {
            let lag = act
                .behind_since
                .map_or(0.0, |since| since.elapsed().as_secs_f64());
            METRICS.log_lag_seconds.set(lag);
        });
        if let Some(feed) = self.store.watch() {
            self.shared = self.store.shared();
            self.watched = true;
            ctx.add_stream(feed);
        }
        self.applied();
        if matches!(self.load, Load::Loading { .. }) {
            self.reload(ctx);
        }
    }
}

impl StreamHandler<Change> for UserRegistry {
    /// Another process (or this one) appended, or the feed asks for a poll: read the tail.
    fn handle(&mut self, change: Change, ctx: &mut Self::Context) {
        if !self.is_loaded() {
            // The replay in progress reads everything anyway.
            return;
        }
        match change {
            // Read the tail if this is still ahead of the state when the queue next decides.
            // While a refused row stands, the head stays past the state for good: each new
            // append (an operator's repair, say) gets one read, not a read per decision.
            Change::Appended(head) if self.state.untrusted().is_some() => {
                self.learn_head(head);
                self.commits.mark_stale();
            }
            Change::Appended(head) => self.learn_head(head),
            Change::Lost => return,
            Change::Listening | Change::Poll => self.commits.mark_stale(),
        }
        self.flush(ctx);
    }

    /// The feed never ends while the store lives; if it does, the registry keeps serving.
    fn finished(&mut self, _ctx: &mut Self::Context) {
        tracing::warn!(
            "the store's change feed ended; other instances' appends are read only before decisions"
        );
    }
}

fn gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// A reply channel's answer; a dropped channel means the registry stopped.
async fn answer(receiver: oneshot::Receiver<Reply>) -> Reply {
    receiver.await.unwrap_or(Err(RegistryError::Stopped))
}

impl Handler<Register> for UserRegistry {
    type Result = ResponseFuture<Reply>;

    fn handle(&mut self, msg: Register, ctx: &mut Self::Context) -> Self::Result {
        let command = Command::Register {
            user_id: UserId::new(),
            email: msg.email,
            password_hash: msg.password_hash,
            imported: None,
        };
        self.register(command, msg.metadata, ctx)
    }
}

impl Handler<Import> for UserRegistry {
    type Result = ResponseFuture<Reply>;

    fn handle(&mut self, msg: Import, ctx: &mut Self::Context) -> Self::Result {
        let command = Command::Register {
            user_id: UserId::new(),
            email: msg.email,
            password_hash: msg.password_hash,
            imported: Some(msg.imported),
        };
        self.register(command, msg.metadata, ctx)
    }
}

impl UserRegistry {
    /// Queues a sign-up or an import; answers once its `UserRegistered` has committed.
    fn register(
        &mut self,
        command: Command,
        metadata: EventMetadata,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Reply> {
        if !self.is_loaded() {
            return Box::pin(std::future::ready(Err(RegistryError::Loading)));
        }
        let (reply, receiver) = oneshot::channel();
        let respond = move |outcome: Outcome| {
            let _ = reply.send(user_of(outcome).map_err(RegistryError::from));
        };
        self.enqueue(command, metadata, respond, ctx);
        Box::pin(answer(receiver))
    }
}

impl Handler<AdmitSignup> for UserRegistry {
    type Result = ResponseFuture<Result<(), RegistryError>>;

    /// Only the per-address rate reads the state, so with it off there is nothing to catch up.
    fn handle(&mut self, msg: AdmitSignup, ctx: &mut Self::Context) -> Self::Result {
        if self.state.throttle().policy().signups_per_minute == 0 {
            return Box::pin(std::future::ready(self.admit_signup(msg.client)));
        }
        let (reply, replied) = oneshot::channel();
        self.sync(
            AfterSync::Signup {
                client: msg.client,
                reply,
            },
            ctx,
        );
        Box::pin(async move { replied.await.unwrap_or(Err(RegistryError::Stopped)) })
    }
}

impl Handler<CatchUp> for UserRegistry {
    type Result = ResponseFuture<Result<(), RegistryError>>;

    fn handle(&mut self, _msg: CatchUp, ctx: &mut Self::Context) -> Self::Result {
        let (reply, replied) = oneshot::channel();
        self.sync(AfterSync::Reply(reply), ctx);
        Box::pin(async move { replied.await.unwrap_or(Err(RegistryError::Stopped)) })
    }
}

impl Handler<Authenticate> for UserRegistry {
    /// Runs as a task of its own, outside the registry: waiting for a turn or for bcrypt costs
    /// the registry nothing, and the attempt stops if its caller goes away.
    type Result = Cancellable<Reply>;

    fn handle(&mut self, msg: Authenticate, ctx: &mut Self::Context) -> Self::Result {
        let Authenticate {
            email,
            password,
            metadata,
            session,
        } = msg;
        self.attempt(email, password, metadata, Purpose::Login(session), ctx)
    }
}

impl Handler<ChangePassword> for UserRegistry {
    type Result = Cancellable<Reply>;

    fn handle(&mut self, msg: ChangePassword, ctx: &mut Self::Context) -> Self::Result {
        let Some(user) = self.state.directory().get(msg.user_id) else {
            return Cancellable::new(std::future::ready(Err(RegistryError::InvalidCredentials)));
        };
        let purpose = Purpose::ChangePassword {
            keep: msg.keep,
            new: NewPassword::Given(msg.new_password),
        };
        self.attempt(user.email, msg.current_password, msg.metadata, purpose, ctx)
    }
}

impl Handler<EraseAccount> for UserRegistry {
    type Result = Cancellable<Reply>;

    fn handle(&mut self, msg: EraseAccount, ctx: &mut Self::Context) -> Self::Result {
        let Some(user) = self.state.directory().get(msg.user_id) else {
            return Cancellable::new(std::future::ready(Err(RegistryError::InvalidCredentials)));
        };
        self.attempt(user.email, msg.password, msg.metadata, Purpose::Erase, ctx)
    }
}

impl Handler<Refresh> for UserRegistry {
    type Result = ResponseFuture<Result<Refreshed, RegistryError>>;

    /// A session this instance has not seen may have just started on another: catch up first.
    fn handle(&mut self, msg: Refresh, ctx: &mut Self::Context) -> Self::Result {
        let (reply, replied) = oneshot::channel();
        let known = self
            .state
            .directory()
            .session(msg.presented.session)
            .is_some();
        if known || !self.shared {
            self.start_refresh(msg, reply, ctx);
        } else {
            self.sync(AfterSync::Refresh(msg, reply), ctx);
        }
        Box::pin(async move { replied.await.unwrap_or(Err(RegistryError::Stopped)) })
    }
}

impl Handler<RejectRefresh> for UserRegistry {
    type Result = MessageResult<RejectRefresh>;

    fn handle(&mut self, msg: RejectRefresh, _ctx: &mut Self::Context) -> Self::Result {
        let now = self.clock.now();
        let throttle = self.state.throttle_mut();
        if let Err(throttled) = throttle.check_refresh(msg.client, now) {
            METRICS.refreshes.with_label_values(&["throttled"]).inc();
            return MessageResult(RegistryError::RefreshThrottled(throttled));
        }
        throttle.refresh_failed(msg.client, now);
        METRICS.refreshes.with_label_values(&["invalid"]).inc();
        MessageResult(RegistryError::InvalidRefreshToken)
    }
}

impl Handler<EndSessions> for UserRegistry {
    type Result = ResponseFuture<Result<(), RegistryError>>;

    fn handle(&mut self, msg: EndSessions, ctx: &mut Self::Context) -> Self::Result {
        if !self.is_loaded() {
            return Box::pin(std::future::ready(Err(RegistryError::Loading)));
        }
        let command = Command::EndSessions {
            user_id: msg.user_id,
            scope: msg.scope,
            reason: msg.reason,
        };
        let (reply, replied) = oneshot::channel();
        let respond = move |outcome: Outcome| {
            let _ = reply.send(outcome.map(|_| ()).map_err(RegistryError::from));
        };
        self.enqueue(command, msg.metadata, respond, ctx);
        Box::pin(async move { replied.await.unwrap_or(Err(RegistryError::Stopped)) })
    }
}

impl Handler<ChangeSigningKeys> for UserRegistry {
    type Result = ResponseFuture<Result<(), RegistryError>>;

    fn handle(&mut self, msg: ChangeSigningKeys, ctx: &mut Self::Context) -> Self::Result {
        let (reply, replied) = oneshot::channel();
        self.sync(AfterSync::Keys(msg, reply), ctx);
        Box::pin(async move { replied.await.unwrap_or(Err(RegistryError::Stopped)) })
    }
}

impl Handler<Administer> for UserRegistry {
    type Result = ResponseFuture<Result<UserSummary, RegistryError>>;

    fn handle(&mut self, msg: Administer, ctx: &mut Self::Context) -> Self::Result {
        let (reply, replied) = oneshot::channel();
        self.sync(AfterSync::Administer(msg, reply), ctx);
        Box::pin(async move { replied.await.unwrap_or(Err(RegistryError::Stopped)) })
    }
}

impl Handler<ExpireSessions> for UserRegistry {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _msg: ExpireSessions, ctx: &mut Self::Context) -> Self::Result {
        let (done, finished) = oneshot::channel();
        if self.is_loaded() {
            self.expire_sessions(Some(done), ctx);
        } else {
            let _ = done.send(0);
        }
        Box::pin(async move { finished.await.unwrap_or(0) })
    }
}

impl Handler<RecordAttempt> for UserRegistry {
    type Result = ();

    fn handle(&mut self, msg: RecordAttempt, ctx: &mut Self::Context) {
        self.record_attempt(msg, ctx);
    }
}

impl Handler<EndTurn> for UserRegistry {
    type Result = ();

    /// On a shared store the freed turn is handed on after a catch-up, so the next check
    /// starts from every instance's outcomes.
    fn handle(&mut self, msg: EndTurn, ctx: &mut Self::Context) {
        self.turns.end(&msg.0);
        self.sync(AfterSync::Handoff(msg.0.1), ctx);
    }
}

impl Handler<FindUser> for UserRegistry {
    type Result = Result<Option<UserSummary>, RegistryError>;

    fn handle(&mut self, msg: FindUser, _ctx: &mut Self::Context) -> Self::Result {
        if !self.is_loaded() {
            return Err(RegistryError::Loading);
        }
        Ok(self
            .state
            .directory()
            .get(msg.user_id)
            .as_ref()
            .map(UserSummary::from))
    }
}

/// The last position this registry applied, which ends a batch a log signature covers (or its
/// own), and the log-signing key generation in force: what a checkpoint anchors. `None` until
/// the log has been replayed.
#[derive(Message)]
#[rtype(result = "Option<(i64, u32)>")]
pub struct GetLogHead;

impl Handler<GetLogHead> for UserRegistry {
    type Result = MessageResult<GetLogHead>;

    fn handle(&mut self, _msg: GetLogHead, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.is_loaded()
                .then(|| (self.state.position(), self.state.log_key_generation())),
        )
    }
}

impl Handler<GetReadiness> for UserRegistry {
    type Result = MessageResult<GetReadiness>;

    fn handle(&mut self, _msg: GetReadiness, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.readiness())
    }
}

impl Handler<GetStanding> for UserRegistry {
    type Result = Result<LoginStanding, RegistryError>;

    fn handle(&mut self, msg: GetStanding, _ctx: &mut Self::Context) -> Self::Result {
        if !self.is_loaded() {
            return Err(RegistryError::Loading);
        }
        Ok(self.state.throttle().standing(msg.user_id, Utc::now()))
    }
}

impl Handler<GetDirectory> for UserRegistry {
    type Result = MessageResult<GetDirectory>;

    fn handle(&mut self, _msg: GetDirectory, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.state.directory().clone())
    }
}
