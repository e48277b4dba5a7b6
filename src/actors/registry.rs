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
//! A registry can also start before the log is reachable (database down at boot): it then answers
//! every command with [`RegistryError::Loading`] (503), never a 401 from an empty directory, and
//! retries the replay in the background until it succeeds.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use tokio::sync::oneshot;

use super::reply::Cancellable;
use crate::commit::{CommitError, CommitQueue, Next, Outcome};
use crate::decide::{Command, Rejection};
use crate::diagnostics::error_chain;
use crate::domain::{Email, Password, PasswordHash, UserId};
use crate::events::{EventMetadata, EventStore, StoreError, events_after};
use crate::hashing::{HashError, PasswordHasher};
use crate::metrics::METRICS;
use crate::projection::{Directory, DirectoryView, UserSummary};
use crate::state::State;
use crate::throttle::turns::{Admission, TurnKey, Turns, Waiter};
use crate::throttle::{Subject, ThrottlePolicy, Throttled};

/// `send` waits when a mailbox is full; the default of 16 would throttle a busy server.
const MAILBOX_CAPACITY: usize = 4096;
/// Waits between replay attempts while the log is unreachable: short at first, then capped.
const RELOAD_FIRST_DELAY: Duration = Duration::from_millis(250);
const RELOAD_MAX_DELAY: Duration = Duration::from_secs(2);
/// How often throttle state that can no longer matter is dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// `Retry-After` for an attempt refused because too many of its kind are in flight.
const BUSY_RETRY: Duration = Duration::from_secs(1);

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
}

impl From<CommitError> for RegistryError {
    fn from(error: CommitError) -> Self {
        match error {
            CommitError::Rejected(Rejection::EmailTaken) => RegistryError::EmailTaken,
            CommitError::Rejected(Rejection::UnknownUser) => RegistryError::InvalidCredentials,
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
}

/// Looks a user up by id, as the log stands now. [`RegistryError::Loading`] until the log has
/// been replayed, so that "unknown user" is never answered from an empty directory. HTTP
/// handlers ask the [`RegistryView`] instead, without a message.
#[derive(Message)]
#[rtype(result = "Result<Option<UserSummary>, RegistryError>")]
pub struct FindUser {
    pub user_id: UserId,
}

/// Whether the directory has been rebuilt from the log, and if not, why.
#[derive(Message)]
#[rtype(result = "Readiness")]
pub struct GetReadiness;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// The log has been replayed; the directory is at this position.
    Ready { users: usize, position: i64 },
    /// Still replaying, or waiting for the store; the last attempt's error, if any.
    Loading { last_error: Option<String> },
    /// The log cannot be served by this build (a migration failed, or an event cannot be
    /// decoded): waiting will not fix it, so the registry stopped trying.
    Failed { error: String },
}

impl std::fmt::Display for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Readiness::Ready { users, position } => {
                write!(f, "ready: {users} users, log at position {position}")
            }
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
    reply: oneshot::Sender<Reply>,
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
    /// [`FindUser`], answered on the caller's own thread.
    pub fn find_user(&self, user_id: UserId) -> Result<Option<UserSummary>, RegistryError> {
        if !self.loaded.load(Ordering::Acquire) {
            return Err(RegistryError::Loading);
        }
        Ok(self.directory.find(user_id))
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

/// Whether a login checks now or later.
enum Turn {
    Now(Check),
    Later(oneshot::Receiver<Result<Check, RegistryError>>),
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
        let state = State::replay(store.as_ref(), ThrottlePolicy::default()).await?;
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
        }
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
        let next = self.commits.next(self.state.directory());
        METRICS.registry_queue_depth.set(gauge(self.commits.len()));
        match next {
            Next::Idle => {}
            Next::CatchUp => self.catch_up(ctx),
            Next::Append(batch) => {
                METRICS.append_batch_size.observe(batch.len() as f64);
                let store = Arc::clone(&self.store);
                let events = batch.events();
                let append = async move {
                    let _timer = METRICS.append_duration.start_timer();
                    store.append(events).await
                };
                ctx.spawn(append.into_actor(self).map(move |result, act, ctx| {
                    if let Ok(recorded) = &result {
                        for event in recorded {
                            METRICS
                                .events_appended
                                .with_label_values(&[event.event.event_type()])
                                .inc();
                        }
                    }
                    act.commits.finish(batch, result, |event| {
                        act.state.apply(event);
                    });
                    METRICS
                        .projection_users
                        .set(gauge(act.state.directory().len()));
                    act.flush(ctx);
                }));
            }
        }
    }

    /// Applies whatever the log holds past the state's position, then resumes flushing.
    ///
    /// Runs as soon as the state may be stale (another writer, or an append whose outcome is
    /// unknown), so that logins, which read the directory before queueing anything, see what
    /// another writer added. If the read fails, queued commands fail fast and the next command
    /// tries again.
    fn catch_up(&mut self, ctx: &mut Context<Self>) {
        let store = Arc::clone(&self.store);
        let after = self.state.position();
        let read = async move { events_after(store.as_ref(), after).collect().await };
        ctx.spawn(read.into_actor(self).map(|result, act, ctx| match result {
            Ok(events) => {
                if !events.is_empty() {
                    tracing::info!(events = events.len(), "caught up with the log");
                }
                for event in &events {
                    act.state.apply(event);
                }
                METRICS.projection_users.set(gauge(act.state.directory().len()));
                act.commits.caught_up();
                act.flush(ctx);
            }
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "cannot re-read the log; answering 503");
                act.commits.catch_up_failed(error);
                METRICS.registry_queue_depth.set(gauge(act.commits.len()));
            }
        }));
    }

    /// One replay attempt; on failure, another after a growing delay, unless waiting cannot
    /// help (a failed migration, an undecodable event).
    fn reload(&mut self, ctx: &mut Context<Self>) {
        let store = Arc::clone(&self.store);
        let policy = *self.state.throttle().policy();
        let replay = async move {
            store.prepare().await?;
            State::replay(store.as_ref(), policy).await
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
                METRICS.projection_users.set(gauge(act.state.directory().len()));
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

    /// Decides whether a login may be checked now, must wait its turn, or is refused.
    fn admit_login(
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
        let allowance = self.state.throttle().allowance(&subject, client);
        let key = (subject, client);
        let turn = match self.turns.admit(&key, allowance) {
            Admission::Go => Turn::Now(self.check(email, key, ctx)),
            Admission::Wait => {
                let (grant, granted) = oneshot::channel();
                self.turns.wait(
                    key,
                    WaitingLogin {
                        email: email.clone(),
                        grant,
                    },
                );
                Turn::Later(granted)
            }
            Admission::AccountFull => {
                return Err(RegistryError::Busy(Throttled {
                    retry_after: BUSY_RETRY,
                }));
            }
            Admission::AddressFull => {
                return Err(RegistryError::AddressBusy(Throttled {
                    retry_after: BUSY_RETRY,
                }));
            }
        };
        METRICS.login_waiting.set(gauge(self.turns.waiting()));
        Ok(turn)
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
            hash: user.map_or_else(|| self.dummy_hash.clone(), |user| user.password_hash),
            rehash,
        }
    }

    /// A turn of `key` ended: hands turns to the waiters of its address while there is room and
    /// the throttle allows, and refuses those it now locks out.
    fn end_turn(&mut self, key: &TurnKey, ctx: &mut Context<Self>) {
        self.turns.end(key);
        loop {
            let now = Utc::now();
            let throttle = self.state.throttle();
            let handed = self.turns.next(key.1, |key| {
                throttle.check_login(&key.0, key.1, now)?;
                Ok(throttle.allowance(&key.0, key.1))
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
            reply,
        } = attempt;
        let Check { turn, user_id, .. } = check;
        let (command, succeeded) = match (verified, user_id) {
            (Ok((true, rehash)), Some(user_id)) => (Command::RecordLogin { user_id, rehash }, true),
            // The failure is an event, committed before the caller hears "invalid".
            (Ok(_), Some(user_id)) => (Command::RecordLoginFailure { user_id }, false),
            (Ok(_), None) => {
                let client = metadata.client_ip;
                self.state
                    .throttle_mut()
                    .unknown_failed(email, client, Utc::now());
                let _ = reply.send(Err(RegistryError::InvalidCredentials));
                return;
            }
            (Err(error), _) => {
                let _ = reply.send(Err(RegistryError::Hashing(error)));
                return;
            }
        };
        let respond = move |outcome: Outcome| {
            let answer = match outcome {
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

impl Actor for UserRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        METRICS.registry_ready.set(i64::from(self.is_loaded()));
        METRICS
            .projection_users
            .set(gauge(self.state.directory().len()));
        ctx.run_interval(PRUNE_EVERY, |act, _ctx| {
            act.state.throttle_mut().prune(Utc::now());
        });
        if matches!(self.load, Load::Loading { .. }) {
            self.reload(ctx);
        }
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
        if !self.is_loaded() {
            return Box::pin(std::future::ready(Err(RegistryError::Loading)));
        }
        let command = Command::Register {
            user_id: UserId::new(),
            email: msg.email,
            password_hash: msg.password_hash,
        };
        let (reply, receiver) = oneshot::channel();
        let respond = move |outcome: Outcome| {
            let _ = reply.send(outcome.map_err(RegistryError::from));
        };
        self.enqueue(command, msg.metadata, respond, ctx);
        Box::pin(answer(receiver))
    }
}

impl Handler<AdmitSignup> for UserRegistry {
    type Result = Result<(), RegistryError>;

    fn handle(&mut self, msg: AdmitSignup, _ctx: &mut Self::Context) -> Self::Result {
        if !self.is_loaded() {
            return Err(RegistryError::Loading);
        }
        self.state
            .throttle_mut()
            .admit_signup(msg.client, Utc::now())
            .map_err(RegistryError::Throttled)
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
        } = msg;
        let turn = self.admit_login(&email, metadata.client_ip, ctx);
        let hasher = self.hasher.clone();
        let registry = ctx.address();
        Cancellable::new(async move {
            let check = match turn? {
                Turn::Now(check) => check,
                Turn::Later(granted) => granted.await.unwrap_or(Err(RegistryError::Stopped))?,
            };
            let verified = hasher
                .verify_and_rehash(password, check.hash.clone(), check.rehash)
                .await;
            // Once checked, the outcome is recorded even if the caller leaves now: the log
            // holds every password check that ran.
            let (reply, replied) = oneshot::channel();
            registry.do_send(RecordAttempt {
                check,
                email,
                metadata,
                verified,
                reply,
            });
            answer(replied).await
        })
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

    fn handle(&mut self, msg: EndTurn, ctx: &mut Self::Context) {
        self.end_turn(&msg.0, ctx);
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

impl Handler<GetReadiness> for UserRegistry {
    type Result = MessageResult<GetReadiness>;

    fn handle(&mut self, _msg: GetReadiness, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.readiness())
    }
}

impl Handler<GetDirectory> for UserRegistry {
    type Result = MessageResult<GetDirectory>;

    fn handle(&mut self, _msg: GetDirectory, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.state.directory().clone())
    }
}
