//! UserRegistry: owns the email→user directory and is the only writer of the event log.
//!
//! Commands are queued and appended in batches, with at most one append in flight. Commands that
//! arrive meanwhile share the next transaction (group commit), stream versions are handed out
//! from committed state without gaps, and our own appends commit in position order. An event
//! reaches the directory only after its append has committed, and a caller hears back only then.
//!
//! A registry can also start before the log is reachable (database down at boot): it then answers
//! every command with [`RegistryError::Loading`] (503), never a 401 from an empty directory, and
//! retries the replay in the background until it succeeds.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use tokio::sync::oneshot;

use crate::decide::{BatchPlanner, Command, Decision, Rejection};
use crate::domain::{Email, Password, PasswordHash, UserId};
use crate::error::error_chain;
use crate::events::{
    Conflict, EventMetadata, EventStore, NewEvent, RecordedEvent, StoreError, for_each_after,
};
use crate::hashing::{HashError, PasswordHasher};
use crate::metrics::METRICS;
use crate::projection::{Directory, UserSummary};
use crate::throttle::{Subject, Throttle, ThrottlePolicy, Throttled};

/// Most commands in one append, so one transaction stays small even under a burst.
pub const MAX_BATCH: usize = 512;
/// `send` waits when a mailbox is full; the default of 16 would throttle a busy server.
const MAILBOX_CAPACITY: usize = 4096;
/// Waits between replay attempts while the log is unreachable: short at first, then capped.
const RELOAD_FIRST_DELAY: Duration = Duration::from_millis(250);
const RELOAD_MAX_DELAY: Duration = Duration::from_secs(2);
/// How often an attempt waiting for its turn asks again.
const TURN_POLL: Duration = Duration::from_millis(10);
/// How often throttle state that can no longer matter is dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

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
/// as a wrong password. Throttled attempts are refused before any check
/// ([`crate::throttle`]).
#[derive(Message)]
#[rtype(result = "Result<UserSummary, RegistryError>")]
pub struct Authenticate {
    pub email: Email,
    pub password: Password,
    pub metadata: EventMetadata,
}

/// Looks a user up by id, as the log stands now. [`RegistryError::Loading`] until the log has
/// been replayed, so that "unknown user" is never answered from an empty directory.
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
}

/// A copy of the committed directory, for tests and diagnostics (costs O(users)).
#[derive(Message)]
#[rtype(result = "Directory")]
pub struct GetDirectory;

type Reply = Result<UserSummary, RegistryError>;

/// A command waiting for its batch.
struct Pending {
    command: Command,
    metadata: EventMetadata,
    reply: oneshot::Sender<Reply>,
    /// Append alone: set after a batch was rejected by the database, so one command's conflict
    /// cannot fail the others.
    solo: bool,
    /// Already retried once after a stream-version conflict.
    retried: bool,
}

/// A command decided into events, waiting for them to commit.
struct Planned {
    pending: Pending,
    events: Vec<NewEvent>,
    user: UserSummary,
}

pub struct UserRegistry {
    store: Arc<dyn EventStore>,
    /// Committed state only: an event is applied after its append returned Ok.
    directory: Directory,
    hasher: PasswordHasher,
    /// Verified against when the email is unknown, so unknown emails cost a full bcrypt check.
    dummy_hash: PasswordHash,
    /// Commands not yet in a batch, in arrival order.
    queue: VecDeque<Pending>,
    /// An append or a catch-up read is in flight. Only one at a time.
    busy: bool,
    /// The log may hold events the directory lacks: an append's outcome is unknown, or another
    /// process wrote. The next flush re-reads the log tail before deciding anything.
    stale: bool,
    /// `false` until the log has been replayed; commands are refused with `Loading` meanwhile.
    loaded: bool,
    /// Why the last replay attempt failed, for readiness probes and logs.
    load_error: Option<String>,
    reload_delay: Duration,
    /// Brute-force limits, derived from the same events as the directory.
    throttle: Throttle,
    /// Password checks running per account (or unknown email) and address. A check starts only
    /// while failures so far plus checks running stay under `login_max_failures`; others wait
    /// their turn, then face the throttle again. So a burst of parallel guesses gets exactly as
    /// many checks as the limit allows, and parallel logins with the right password are only
    /// queued, never refused.
    checks_running: HashMap<(Subject, Option<IpAddr>), u32>,
}

impl UserRegistry {
    /// Prepares the store (migrations), replays the log into a fresh directory, and prepares the
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
        let (directory, throttle) = replay(store.as_ref()).await?;
        let mut registry = Self::new(store, directory, hasher, dummy_hash);
        registry.throttle = throttle;
        Ok(registry)
    }

    /// Sets the brute-force limits (the default is [`ThrottlePolicy::default`]).
    pub fn with_throttle_policy(mut self, policy: ThrottlePolicy) -> Self {
        self.throttle.set_policy(policy);
        self
    }

    /// A registry that has not replayed the log yet, because the store could not be reached.
    /// Once started, it retries the replay in the background and serves as soon as it succeeds.
    pub fn unloaded(
        store: Arc<dyn EventStore>,
        hasher: PasswordHasher,
        dummy_hash: PasswordHash,
        error: &StoreError,
    ) -> Self {
        let mut registry = Self::new(store, Directory::default(), hasher, dummy_hash);
        registry.loaded = false;
        registry.load_error = Some(error_chain(error));
        registry
    }

    pub fn new(
        store: Arc<dyn EventStore>,
        directory: Directory,
        hasher: PasswordHasher,
        dummy_hash: PasswordHash,
    ) -> Self {
        Self {
            store,
            directory,
            hasher,
            dummy_hash,
            queue: VecDeque::new(),
            busy: false,
            stale: false,
            loaded: true,
            load_error: None,
            reload_delay: RELOAD_FIRST_DELAY,
            throttle: Throttle::new(ThrottlePolicy::default()),
            checks_running: HashMap::new(),
        }
    }

    /// Applies one of our own committed events to the directory and the throttle. Sign-ups were
    /// counted when admitted, so only events read back from the log count them again.
    fn apply(&mut self, event: &RecordedEvent, replayed: bool) {
        if event.position <= self.directory.position() {
            return;
        }
        if replayed {
            self.throttle.replayed(event);
        } else {
            self.throttle.apply(event);
        }
        self.directory.apply(event);
    }

    /// Forgets throttle state that can no longer matter.
    fn prune(&mut self) {
        self.throttle.prune(Utc::now());
    }

    /// Starts the password check of `attempt` if its turn has come, or waits and asks again.
    fn take_turn(&mut self, attempt: Authenticate) -> ResponseActFuture<Self, Reply> {
        let client = attempt.metadata.client_ip;
        let subject = self.directory.by_email(&attempt.email).map_or_else(
            || Subject::Unknown(attempt.email.clone()),
            |u| Subject::User(u.id),
        );
        // Refused at once while locked out, without waiting in line.
        if let Err(throttled) = self.throttle.check_login(&subject, client, Utc::now()) {
            return Box::pin(actix::fut::ready(Err(RegistryError::Throttled(throttled))));
        }
        let limit = self.throttle.policy().login_max_failures;
        if limit == 0 {
            return self.check_password(attempt, None);
        }
        let failures = self.throttle.streak(&subject, client);
        let key = (subject, client);
        let running = self.checks_running.entry(key.clone()).or_default();
        if failures.saturating_add(*running) < limit {
            *running += 1;
            return self.check_password(attempt, Some(key));
        }
        Box::pin(
            actix::clock::sleep(TURN_POLL)
                .into_actor(self)
                .then(move |(), act, _ctx| act.take_turn(attempt)),
        )
    }

    /// Checks a password once this attempt's turn has come: bcrypt runs on the blocking pool,
    /// then success or failure is appended. The turn (`running`) ends only once the outcome is
    /// committed and applied, so the next attempt in line sees it.
    fn check_password(
        &mut self,
        attempt: Authenticate,
        running: Option<(Subject, Option<IpAddr>)>,
    ) -> ResponseActFuture<Self, Reply> {
        let Authenticate {
            email,
            password,
            metadata,
        } = attempt;
        let client = metadata.client_ip;
        let user = self
            .directory
            .by_email(&email)
            .map(|u| (u.id, u.password_hash.clone()));
        let user_id = user.as_ref().map(|(id, _)| *id);
        // A hash weaker than the configured cost is replaced on the next successful login.
        let rehash = user
            .as_ref()
            .is_some_and(|(_, hash)| hash.cost().is_some_and(|cost| cost < self.hasher.cost()));
        let hash = user.map_or_else(|| self.dummy_hash.clone(), |(_, hash)| hash);
        let hasher = self.hasher.clone();
        let verify = async move { hasher.verify_and_rehash(password, hash, rehash).await };
        Box::pin(verify.into_actor(self).then(move |verified, act, ctx| {
            let outcome = match (verified, user_id) {
                (Ok((true, rehash)), Some(user_id)) => {
                    let command = Command::RecordLogin { user_id, rehash };
                    Ok((act.enqueue(command, metadata, ctx), true))
                }
                // The failure is an event, committed before the caller hears "invalid".
                (Ok(_), Some(user_id)) => {
                    let command = Command::RecordLoginFailure { user_id };
                    Ok((act.enqueue(command, metadata, ctx), false))
                }
                (Ok(_), None) => {
                    act.throttle.unknown_failed(email, client, Utc::now());
                    Err(RegistryError::InvalidCredentials)
                }
                (Err(error), _) => Err(RegistryError::Hashing(error)),
            };
            async move {
                let (queued, succeeded) = outcome?;
                match (answer(queued).await?, succeeded) {
                    (user, true) => Ok(user),
                    (_, false) => Err(RegistryError::InvalidCredentials),
                }
            }
            .into_actor(act)
            .map(move |reply, act, _ctx| {
                if let Some(key) = running
                    && let Some(count) = act.checks_running.get_mut(&key)
                {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        act.checks_running.remove(&key);
                    }
                }
                reply
            })
        }))
    }

    /// Whether the directory has been rebuilt from the log.
    pub fn readiness(&self) -> Readiness {
        if self.loaded {
            Readiness::Ready {
                users: self.directory.len(),
                position: self.directory.position(),
            }
        } else {
            Readiness::Loading {
                last_error: self.load_error.clone(),
            }
        }
    }

    /// One replay attempt; on failure, another after a growing delay.
    fn reload(&mut self, ctx: &mut Context<Self>) {
        let store = Arc::clone(&self.store);
        let replay = async move {
            store.prepare().await?;
            replay(store.as_ref()).await
        };
        ctx.spawn(replay.into_actor(self).map(|result, act, ctx| match result {
            Ok((directory, throttle)) => {
                act.throttle.replace_state(throttle);
                tracing::info!(
                    users = directory.len(),
                    position = directory.position(),
                    "replayed the event log; ready"
                );
                act.directory = directory;
                act.loaded = true;
                act.load_error = None;
                METRICS.projection_users.set(gauge(act.directory.len()));
                METRICS.registry_ready.set(1);
                act.flush(ctx);
            }
            Err(error) => {
                let message = error_chain(&error);
                if act.load_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(error = %message, "cannot replay the event log yet; retrying");
                }
                act.load_error = Some(message);
                let delay = act.reload_delay;
                act.reload_delay = (delay * 2).min(RELOAD_MAX_DELAY);
                ctx.run_later(delay, |act, ctx| act.reload(ctx));
            }
        }));
    }

    /// The directory as replayed so far (before the actor starts: the state it will serve).
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    fn enqueue(
        &mut self,
        command: Command,
        metadata: EventMetadata,
        ctx: &mut Context<Self>,
    ) -> oneshot::Receiver<Reply> {
        let (reply, receiver) = oneshot::channel();
        if !self.loaded {
            let _ = reply.send(Err(RegistryError::Loading));
            return receiver;
        }
        self.queue.push_back(Pending {
            command,
            metadata,
            reply,
            solo: false,
            retried: false,
        });
        METRICS.registry_queue_depth.set(gauge(self.queue.len()));
        self.flush(ctx);
        receiver
    }

    /// Starts the next append if none is in flight, re-reading the log first if it is stale.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        if self.stale {
            self.catch_up(ctx);
            return;
        }
        if self.queue.is_empty() {
            return;
        }
        let batch = self.take_batch();
        METRICS.registry_queue_depth.set(gauge(self.queue.len()));
        if batch.is_empty() {
            return;
        }
        self.busy = true;
        METRICS.append_batch_size.observe(batch.len() as f64);
        let events: Vec<NewEvent> = batch.iter().flat_map(|p| p.events.clone()).collect();
        let store = Arc::clone(&self.store);
        let append = async move {
            let _timer = METRICS.append_duration.start_timer();
            store.append(events).await
        };
        ctx.spawn(append.into_actor(self).map(move |result, act, ctx| {
            act.busy = false;
            act.finish(batch, result);
            act.flush(ctx);
        }));
    }

    /// Decides queued commands into one batch. Rejections are answered at once; commands that
    /// must wait for this batch's outcome stay at the front of the queue.
    fn take_batch(&mut self) -> Vec<Planned> {
        let mut planner = BatchPlanner::new(&self.directory);
        let mut batch: Vec<Planned> = Vec::new();
        let mut waiting = Vec::new();
        while let Some(pending) = self.queue.pop_front() {
            let full = batch.len() >= MAX_BATCH || batch.first().is_some_and(|p| p.pending.solo);
            if full || (pending.solo && !batch.is_empty()) {
                self.queue.push_front(pending);
                break;
            }
            match planner.decide(&pending.command) {
                Decision::Append { events, user } => {
                    let events = events
                        .into_iter()
                        .map(|(stream_version, event)| NewEvent {
                            stream_version,
                            event,
                            metadata: pending.metadata.clone(),
                        })
                        .collect();
                    batch.push(Planned {
                        pending,
                        events,
                        user,
                    });
                }
                Decision::Reject(rejection) => {
                    let error = match rejection {
                        Rejection::EmailTaken => RegistryError::EmailTaken,
                        Rejection::UnknownUser => RegistryError::InvalidCredentials,
                    };
                    let _ = pending.reply.send(Err(error));
                }
                Decision::Wait => waiting.push(pending),
            }
        }
        for pending in waiting.into_iter().rev() {
            self.queue.push_front(pending);
        }
        batch
    }

    /// Applies a committed batch and answers its callers, or sorts out why it failed.
    fn finish(&mut self, batch: Vec<Planned>, result: Result<Vec<RecordedEvent>, StoreError>) {
        match result {
            Ok(recorded) => {
                for event in &recorded {
                    self.apply(event, false);
                    METRICS
                        .events_appended
                        .with_label_values(&[event.event.event_type()])
                        .inc();
                }
                METRICS.projection_users.set(gauge(self.directory.len()));
                for planned in batch {
                    let _ = planned.pending.reply.send(Ok(planned.user));
                }
            }
            Err(StoreError::Conflict(conflict)) => {
                // Our decisions never conflict with each other, so another process wrote to the
                // log. Learn what it wrote before deciding again.
                self.stale = true;
                tracing::info!(
                    ?conflict,
                    commands = batch.len(),
                    "append conflicted with another writer"
                );
                if batch.len() > 1 {
                    // Retry each command on its own, so only the conflicting one fails.
                    for planned in batch.into_iter().rev() {
                        let mut pending = planned.pending;
                        pending.solo = true;
                        self.queue.push_front(pending);
                    }
                    return;
                }
                for planned in batch {
                    let mut pending = planned.pending;
                    match conflict {
                        Conflict::EmailTaken => {
                            let _ = pending.reply.send(Err(RegistryError::EmailTaken));
                        }
                        Conflict::StreamVersion if !pending.retried => {
                            pending.retried = true;
                            pending.solo = true;
                            self.queue.push_front(pending);
                        }
                        Conflict::StreamVersion => {
                            let _ = pending.reply.send(Err(RegistryError::Contention));
                        }
                    }
                }
            }
            Err(error) => {
                // The append may have committed before the connection dropped: re-read the log
                // before trusting the directory again.
                self.stale = true;
                tracing::warn!(
                    error = %error_chain(&error),
                    commands = batch.len(),
                    "append failed; answering 503"
                );
                let error = Arc::new(error);
                for planned in batch {
                    let reply = Err(RegistryError::Unavailable(Arc::clone(&error)));
                    let _ = planned.pending.reply.send(reply);
                }
            }
        }
    }

    /// Applies whatever the log holds past the directory's position, then resumes flushing.
    ///
    /// Runs as soon as the directory goes stale, so that logins (which read the directory before
    /// queueing anything) see what another writer added. If the read fails, queued commands fail
    /// fast instead of piling up, and the next command tries again: nothing retries in a loop
    /// against a database that is down.
    fn catch_up(&mut self, ctx: &mut Context<Self>) {
        self.busy = true;
        let store = Arc::clone(&self.store);
        let after = self.directory.position();
        let read = async move {
            let mut events = Vec::new();
            for_each_after(store.as_ref(), after, |event| events.push(event)).await?;
            Ok::<_, StoreError>(events)
        };
        ctx.spawn(read.into_actor(self).map(|result, act, ctx| {
            act.busy = false;
            match result {
                Ok(events) => {
                    if !events.is_empty() {
                        tracing::info!(events = events.len(), "caught up with the log");
                    }
                    for event in &events {
                        act.apply(event, true);
                    }
                    METRICS.projection_users.set(gauge(act.directory.len()));
                    act.stale = false;
                }
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "cannot re-read the log; answering 503");
                    let error = Arc::new(error);
                    for pending in act.queue.drain(..) {
                        let reply = Err(RegistryError::Unavailable(Arc::clone(&error)));
                        let _ = pending.reply.send(reply);
                    }
                    return;
                }
            }
            act.flush(ctx);
        }));
    }
}

impl Actor for UserRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        METRICS.registry_ready.set(i64::from(self.loaded));
        METRICS.projection_users.set(gauge(self.directory.len()));
        ctx.run_interval(PRUNE_EVERY, |act, _ctx| act.prune());
        if !self.loaded {
            self.reload(ctx);
        }
    }
}

fn gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Turns a reply channel into the caller's answer; a dropped channel means the actor stopped.
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
        };
        Box::pin(answer(self.enqueue(command, msg.metadata, ctx)))
    }
}

impl Handler<AdmitSignup> for UserRegistry {
    type Result = Result<(), RegistryError>;

    fn handle(&mut self, msg: AdmitSignup, _ctx: &mut Self::Context) -> Self::Result {
        if !self.loaded {
            return Err(RegistryError::Loading);
        }
        self.throttle
            .admit_signup(msg.client, Utc::now())
            .map_err(RegistryError::Throttled)
    }
}

impl Handler<Authenticate> for UserRegistry {
    /// Not atomic: other messages are handled while an attempt waits its turn or bcrypt runs.
    type Result = ResponseActFuture<Self, Reply>;

    fn handle(&mut self, msg: Authenticate, _ctx: &mut Self::Context) -> Self::Result {
        if !self.loaded {
            return Box::pin(actix::fut::ready(Err(RegistryError::Loading)));
        }
        self.take_turn(msg)
    }
}

impl Handler<FindUser> for UserRegistry {
    type Result = Result<Option<UserSummary>, RegistryError>;

    fn handle(&mut self, msg: FindUser, _ctx: &mut Self::Context) -> Self::Result {
        if !self.loaded {
            return Err(RegistryError::Loading);
        }
        Ok(self.directory.get(msg.user_id).map(UserSummary::from))
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
        MessageResult(self.directory.clone())
    }
}

/// Reads the whole log into a directory and the throttle state, in position order.
async fn replay(store: &dyn EventStore) -> Result<(Directory, Throttle), StoreError> {
    let mut directory = Directory::new();
    let mut throttle = Throttle::new(ThrottlePolicy::default());
    for_each_after(store, 0, |event| {
        throttle.replayed(&event);
        directory.apply(&event);
    })
    .await?;
    Ok((directory, throttle))
}
