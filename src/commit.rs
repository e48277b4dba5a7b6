//! Group commit as a plain struct: commands queue, at most one append (or catch-up read) is in
//! flight, and whatever queued meanwhile shares the next transaction.
//!
//! The registry owns one [`CommitQueue`] and does the I/O; this type decides what to do next
//! ([`CommitQueue::next`]) and what each caller hears once an append returns
//! ([`CommitQueue::finish`]). No actix and no store here, so it is tested alone, given/when/then.
//!
//! - **No version gaps.** Stream versions are handed out from committed state plus the batch
//!   being built ([`BatchPlanner`]), never reserved ahead.
//! - **Committed before answered.** A caller hears back only after its events committed and
//!   were applied, or once it is known they will not be.
//! - **One conflict fails one command.** A batch the database rejects is retried command by
//!   command, after re-reading the log.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::decide::{BatchPlanner, Command, Committed, Decision, Rejection};
use crate::events::{Conflict, EventMetadata, NewEvent, RecordedEvent, StoreError};
use crate::projection::UserSummary;
use crate::sessions::SessionWrite;
use crate::state::State;

/// Most commands in one append, so one transaction stays small even under a burst.
pub const MAX_BATCH: usize = 512;

/// How often a command is retried, each time after re-reading the log, when another process
/// wrote to its stream first. Several instances logging one account's attempts at once can
/// collide more than once in a row; each retry follows a catch-up, so it starts from their
/// latest event, and a sixth collision in a row means something keeps writing to the stream.
pub const MAX_STREAM_RETRIES: u32 = 5;

/// Why a queued command was not carried out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    #[error("refused: {0:?}")]
    Rejected(Rejection),
    /// Nothing was applied. The append may or may not have committed; the queue re-reads the
    /// log before its next decision.
    #[error("the event store is unavailable")]
    Unavailable(#[source] Arc<StoreError>),
    /// Another process kept writing to this user's stream; retrying is safe.
    #[error("another writer changed this user's stream")]
    Contention,
}

/// What the caller of a queued command hears.
pub type Outcome = Result<Committed, CommitError>;

/// The user a user command's outcome names. A user command is always answered with its user;
/// a key command's answer here would be a bug, refused rather than trusted.
pub fn user_of(outcome: Outcome) -> Result<UserSummary, CommitError> {
    match outcome? {
        Committed::User(user) => Ok(user),
        Committed::Keys => Err(CommitError::Rejected(Rejection::UnknownUser)),
    }
}

/// Hears a command's outcome, once. Whatever it owns lives until then: the registry keeps a
/// login's turn in it, so the turn ends only once its outcome is committed and applied.
pub type Responder = Box<dyn FnOnce(Outcome)>;

/// A command waiting for its batch.
struct Pending {
    command: Command,
    metadata: EventMetadata,
    respond: Responder,
    /// Append alone: set after a batch was rejected by the database, so one command's conflict
    /// cannot fail the others.
    solo: bool,
    /// Times retried after a stream-version conflict.
    retries: u32,
}

impl Pending {
    fn answer(self, outcome: Outcome) {
        (self.respond)(outcome);
    }
}

/// A command decided into events, waiting for them to commit.
struct Planned {
    pending: Pending,
    events: Vec<NewEvent>,
    sessions: Vec<SessionWrite>,
    answer: Committed,
}

/// Commands decided into one append.
pub struct Batch {
    planned: Vec<Planned>,
}

impl Batch {
    /// The events to append, in order, in one transaction.
    pub fn events(&self) -> Vec<NewEvent> {
        self.planned
            .iter()
            .flat_map(|planned| planned.events.iter().cloned())
            .collect()
    }

    /// The sessions' rows to write in the same transaction.
    pub fn sessions(&self) -> Vec<SessionWrite> {
        self.planned
            .iter()
            .flat_map(|planned| planned.sessions.iter().cloned())
            .collect()
    }

    /// Commands in the batch.
    pub fn len(&self) -> usize {
        self.planned.len()
    }

    pub fn is_empty(&self) -> bool {
        self.planned.is_empty()
    }
}

/// What the owner of the queue should do now.
pub enum Next {
    /// Nothing: the queue is empty, or an append or catch-up is already in flight.
    Idle,
    /// Re-read the log after the last applied position, then call [`CommitQueue::caught_up`]
    /// (or [`CommitQueue::catch_up_failed`]).
    CatchUp,
    /// Append these events, then call [`CommitQueue::finish`].
    Append(Batch),
}

#[derive(Default)]
pub struct CommitQueue {
    /// Commands not yet in a batch, in arrival order.
    queue: VecDeque<Pending>,
    /// An append or a catch-up read is in flight. Only one at a time.
    busy: bool,
    /// The log may hold events the directory lacks: an append's outcome is unknown, or another
    /// process wrote. The next step re-reads the log tail before deciding anything.
    stale: bool,
}

impl CommitQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a command; `respond` hears its outcome.
    pub fn push(
        &mut self,
        command: Command,
        metadata: EventMetadata,
        respond: impl FnOnce(Outcome) + 'static,
    ) {
        self.queue.push_back(Pending {
            command,
            metadata,
            respond: Box::new(respond),
            solo: false,
            retries: 0,
        });
    }

    /// Commands waiting for a batch.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The log may hold events the directory lacks (another writer): re-read it before the next
    /// decision.
    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// The next step: a catch-up if the state may be behind the log, else a batch decided
    /// against `state`, else nothing. Rejections are answered at once; commands that must
    /// wait for this batch's outcome stay at the front of the queue.
    pub fn next(&mut self, state: &State) -> Next {
        self.next_unless_behind(state, false)
    }

    /// [`CommitQueue::next`], with a catch-up first if `behind`: the log is known to hold events
    /// the directory lacks (another writer's notification), as judged at this moment.
    pub fn next_unless_behind(&mut self, state: &State, behind: bool) -> Next {
        if self.busy {
            return Next::Idle;
        }
        if self.stale || behind {
            // Cleared as the read starts: whatever marks the queue stale while it is in
            // flight (a notification, a waiter) gets a read of its own after this one.
            self.stale = false;
            self.busy = true;
            return Next::CatchUp;
        }
        let batch = self.take_batch(state);
        if batch.is_empty() {
            return Next::Idle;
        }
        self.busy = true;
        Next::Append(batch)
    }

    fn take_batch(&mut self, state: &State) -> Batch {
        let mut planner = BatchPlanner::new(state.directory(), state.keys());
        let mut planned: Vec<Planned> = Vec::new();
        let mut waiting = Vec::new();
        while let Some(pending) = self.queue.pop_front() {
            let full =
                planned.len() >= MAX_BATCH || planned.first().is_some_and(|p| p.pending.solo);
            if full || (pending.solo && !planned.is_empty()) {
                self.queue.push_front(pending);
                break;
            }
            match planner.decide(&pending.command) {
                Decision::Append {
                    events,
                    sessions,
                    answer,
                } => {
                    let events = events
                        .into_iter()
                        .map(|(stream_version, event)| NewEvent {
                            stream_version,
                            event,
                            metadata: pending.metadata.clone(),
                        })
                        .collect();
                    planned.push(Planned {
                        pending,
                        events,
                        sessions,
                        answer,
                    });
                }
                Decision::Reject(rejection) => {
                    pending.answer(Err(CommitError::Rejected(rejection)))
                }
                Decision::Unchanged(answer) => pending.answer(Ok(answer)),
                Decision::Wait => waiting.push(pending),
            }
        }
        for pending in waiting.into_iter().rev() {
            self.queue.push_front(pending);
        }
        Batch { planned }
    }

    /// The append of `batch` returned. On success every recorded event goes through `apply`
    /// first, then every caller is answered; otherwise sorts out why it failed.
    pub fn finish(
        &mut self,
        batch: Batch,
        result: Result<Vec<RecordedEvent>, StoreError>,
        mut apply: impl FnMut(&RecordedEvent),
    ) {
        self.busy = false;
        match result {
            Ok(recorded) => {
                recorded.iter().for_each(&mut apply);
                for planned in batch.planned {
                    planned.pending.answer(Ok(planned.answer));
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
                    for planned in batch.planned.into_iter().rev() {
                        let mut pending = planned.pending;
                        pending.solo = true;
                        self.queue.push_front(pending);
                    }
                    return;
                }
                for planned in batch.planned {
                    let mut pending = planned.pending;
                    match conflict {
                        Conflict::EmailTaken => {
                            pending.answer(Err(CommitError::Rejected(Rejection::EmailTaken)));
                        }
                        Conflict::StreamVersion if pending.retries < MAX_STREAM_RETRIES => {
                            pending.retries += 1;
                            pending.solo = true;
                            self.queue.push_front(pending);
                        }
                        Conflict::StreamVersion => pending.answer(Err(CommitError::Contention)),
                    }
                }
            }
            Err(error) => {
                // The append may have committed before the connection dropped: re-read the log
                // before trusting the directory again.
                self.stale = true;
                tracing::warn!(
                    error = %crate::diagnostics::error_chain(&error),
                    commands = batch.len(),
                    "append failed; answering 503"
                );
                let error = Arc::new(error);
                for planned in batch.planned {
                    planned
                        .pending
                        .answer(Err(CommitError::Unavailable(Arc::clone(&error))));
                }
            }
        }
    }

    /// The catch-up read succeeded and its events were applied.
    pub fn caught_up(&mut self) {
        self.busy = false;
    }

    /// The catch-up read failed: queued commands fail fast instead of piling up against a store
    /// that is down, and the next command tries again (nothing retries in a loop).
    pub fn catch_up_failed(&mut self, error: Arc<StoreError>) {
        self.busy = false;
        self.stale = true;
        for pending in self.queue.drain(..) {
            pending.answer(Err(CommitError::Unavailable(Arc::clone(&error))));
        }
    }
}

/// Single-flight catch-up: what waits for the registry to have read the log to its head.
///
/// A waiter must be served by a read that *started* after it arrived, or it could miss what
/// committed just before. So waiters that arrive while a read is in flight wait for the next
/// one, which serves all of them at once: at most one read in flight, and one to follow,
/// however many requests wait.
#[derive(Debug)]
pub struct Syncs<T> {
    /// Arrived since the read in flight started (or with none in flight).
    waiting: Vec<T>,
    /// Served by the read in flight.
    reading: Vec<T>,
}

impl<T> Default for Syncs<T> {
    fn default() -> Self {
        Self {
            waiting: Vec::new(),
            reading: Vec::new(),
        }
    }
}

impl<T> Syncs<T> {
    /// `waiter` needs a read that starts from now on.
    pub fn push(&mut self, waiter: T) {
        self.waiting.push(waiter);
    }

    /// A read starts now: it serves everything waiting so far.
    pub fn started(&mut self) {
        let waiting = std::mem::take(&mut self.waiting);
        self.reading.extend(waiting);
    }

    /// The read that started last has finished: the waiters it serves, in arrival order.
    pub fn finished(&mut self) -> Vec<T> {
        std::mem::take(&mut self.reading)
    }

    /// Whether anything waits for a read that has not started yet.
    pub fn wants_read(&self) -> bool {
        !self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chrono::Utc;

    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::domain::{Email, PasswordHash, UserId};
    use crate::state::State;
    use crate::throttle::ThrottlePolicy;

    fn register(raw: &str) -> Command {
        Command::Register {
            user_id: UserId::new(),
            email: Email::parse(raw).expect("valid"),
            password_hash: PasswordHash::new("$2b$04$x".into()),
            imported: None,
        }
    }

    /// Where a test reads an outcome once it is answered.
    type Reply = Rc<RefCell<Option<Outcome>>>;

    /// Queues `command`; the returned cell holds its outcome once answered.
    fn push(queue: &mut CommitQueue, command: Command) -> Reply {
        let reply: Reply = Rc::default();
        let cell = Rc::clone(&reply);
        queue.push(command, EventMetadata::default(), move |outcome| {
            *cell.borrow_mut() = Some(outcome);
        });
        reply
    }

    fn outcome(reply: &Reply) -> Option<Outcome> {
        reply.borrow_mut().take()
    }

    /// What a store would record for `batch`, from position `after + 1`.
    fn recorded(batch: &Batch, after: i64) -> Vec<RecordedEvent> {
        batch
            .events()
            .into_iter()
            .zip(after + 1..)
            .map(|(new, position)| RecordedEvent {
                position,
                stream_version: new.stream_version,
                event: new.event,
                metadata: new.metadata,
                recorded_at: Utc::now(),
            })
            .collect()
    }

    fn append(next: Next) -> Batch {
        match next {
            Next::Append(batch) => batch,
            Next::Idle => panic!("expected an append, got Idle"),
            Next::CatchUp => panic!("expected an append, got CatchUp"),
        }
    }

    fn conflict() -> StoreError {
        StoreError::Conflict(Conflict::StreamVersion)
    }

    #[test]
    fn given_commands_queued_while_idle_then_one_batch_commits_them_and_answers_after_apply() {
        let mut state = State::new(ThrottlePolicy::off());
        let mut queue = CommitQueue::new();
        let first = push(&mut queue, register("a@example.com"));
        let second = push(&mut queue, register("b@example.com"));
        let batch = append(queue.next(&state));
        assert_eq!(batch.len(), 2);
        assert!(
            matches!(queue.next(&state), Next::Idle),
            "one append at a time"
        );
        assert!(
            outcome(&first).is_none(),
            "nobody is answered before the commit"
        );
        let events = recorded(&batch, 0);
        queue.finish(batch, Ok(events), |event| {
            state.apply(event);
        });
        assert_eq!(state.directory().len(), 2);
        assert!(
            matches!(outcome(&first), Some(Ok(Committed::User(user))) if user.email.as_str() == "a@example.com")
        );
        assert!(matches!(outcome(&second), Some(Ok(_))));
    }

    #[test]
    fn given_an_email_claimed_in_the_batch_then_its_duplicate_waits_and_is_refused_after_commit() {
        let mut state = State::new(ThrottlePolicy::off());
        let mut queue = CommitQueue::new();
        let first = push(&mut queue, register("a@example.com"));
        let again = push(&mut queue, register("a@example.com"));
        let batch = append(queue.next(&state));
        assert_eq!((batch.len(), queue.len()), (1, 1));
        let events = recorded(&batch, 0);
        queue.finish(batch, Ok(events), |event| {
            state.apply(event);
        });
        assert!(matches!(outcome(&first), Some(Ok(_))));
        assert!(matches!(queue.next(&state), Next::Idle));
        assert!(matches!(
            outcome(&again),
            Some(Err(CommitError::Rejected(Rejection::EmailTaken)))
        ));
    }

    #[test]
    fn given_a_rejected_batch_then_the_log_is_reread_and_each_command_retried_alone() {
        let state = State::new(ThrottlePolicy::off());
        let mut queue = CommitQueue::new();
        let _replies: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|name| {
                let email = format!("{name}@example.com");
                push(&mut queue, register(&email))
            })
            .collect();
        let batch = append(queue.next(&state));
        queue.finish(batch, Err(conflict()), |_| {});
        assert!(matches!(queue.next(&state), Next::CatchUp));
        queue.caught_up();
        for _ in 0..3 {
            let solo = append(queue.next(&state));
            assert_eq!(solo.len(), 1, "each command alone");
            let events = recorded(&solo, 0);
            queue.finish(solo, Ok(events), |_| {});
        }
        assert!(queue.is_empty());
    }

    #[test]
    fn given_a_solo_command_that_keeps_conflicting_then_it_fails_with_contention() {
        let state = State::new(ThrottlePolicy::off());
        let mut queue = CommitQueue::new();
        let reply = push(&mut queue, register("a@example.com"));
        for attempt in 0..=MAX_STREAM_RETRIES {
            let batch = append(queue.next(&state));
            queue.finish(batch, Err(conflict()), |_| {});
            assert!(matches!(queue.next(&state), Next::CatchUp));
            queue.caught_up();
            if attempt < MAX_STREAM_RETRIES {
                assert!(
                    outcome(&reply).is_none(),
                    "retried after conflict {attempt}"
                );
            }
        }
        assert!(matches!(
            outcome(&reply),
            Some(Err(CommitError::Contention))
        ));
    }

    #[test]
    fn given_an_outage_then_the_batch_fails_whole_applies_nothing_and_the_log_is_reread() {
        let mut state = State::new(ThrottlePolicy::off());
        let mut queue = CommitQueue::new();
        let reply = push(&mut queue, register("a@example.com"));
        let batch = append(queue.next(&state));
        let unavailable = StoreError::unavailable("connection reset");
        queue.finish(batch, Err(unavailable), |event| {
            state.apply(event);
        });
        assert!(state.directory().is_empty());
        assert!(matches!(
            outcome(&reply),
            Some(Err(CommitError::Unavailable(_)))
        ));
        // Queued meanwhile: the catch-up fails too, and the queue answers rather than piling up.
        let queued = push(&mut queue, register("b@example.com"));
        assert!(matches!(queue.next(&state), Next::CatchUp));
        queue.catch_up_failed(Arc::new(StoreError::unavailable("still down")));
        assert!(matches!(
            outcome(&queued),
            Some(Err(CommitError::Unavailable(_)))
        ));
        assert!(matches!(queue.next(&state), Next::CatchUp));
    }

    /// Counts its drops: stands for a login's turn, held until the command is answered.
    struct Hold(Arc<AtomicUsize>);

    impl Drop for Hold {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn given_a_responder_then_what_it_holds_is_released_only_after_apply() {
        let mut state = State::new(ThrottlePolicy::off());
        let released = Arc::new(AtomicUsize::new(0));
        let mut queue = CommitQueue::new();
        let hold = Hold(Arc::clone(&released));
        queue.push(
            register("a@example.com"),
            EventMetadata::default(),
            move |_| drop(hold),
        );
        let batch = append(queue.next(&state));
        assert_eq!(released.load(Ordering::SeqCst), 0);
        let events = recorded(&batch, 0);
        queue.finish(batch, Ok(events), |event| {
            assert_eq!(
                released.load(Ordering::SeqCst),
                0,
                "applied before released"
            );
            state.apply(event);
        });
        assert_eq!(released.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn given_a_read_in_flight_when_a_waiter_arrives_then_the_next_read_serves_it() {
        let mut syncs = Syncs::default();
        syncs.push("before");
        syncs.started();
        syncs.push("during");
        assert!(syncs.wants_read());
        assert_eq!(syncs.finished(), ["before"]);
        syncs.started();
        assert!(!syncs.wants_read());
        assert_eq!(syncs.finished(), ["during"]);
        assert!(syncs.finished().is_empty());
    }

    #[test]
    fn given_a_catch_up_in_flight_when_the_queue_is_marked_stale_then_another_read_follows() {
        let mut queue = CommitQueue::new();
        let state = State::new(ThrottlePolicy::off());
        queue.mark_stale();
        assert!(matches!(queue.next(&state), Next::CatchUp));
        queue.mark_stale(); // a notification arrives while the read is in flight
        queue.caught_up();
        assert!(matches!(queue.next(&state), Next::CatchUp));
        queue.caught_up();
        assert!(matches!(queue.next(&state), Next::Idle));
    }

    #[test]
    fn given_an_append_in_flight_when_the_log_is_ahead_then_the_catch_up_waits_for_it() {
        let state = State::new(ThrottlePolicy::off());
        let mut queue = CommitQueue::new();
        let _reply = push(&mut queue, register("a@example.com"));
        let batch = append(queue.next(&state));
        // A notification arrives for the append in flight itself: nothing to read yet.
        assert!(matches!(queue.next_unless_behind(&state, true), Next::Idle));
        queue.finish(batch, Ok(Vec::new()), |_| {});
        // Once it returned, only a log still ahead of the state is read.
        assert!(matches!(
            queue.next_unless_behind(&state, false),
            Next::Idle
        ));
        assert!(matches!(
            queue.next_unless_behind(&state, true),
            Next::CatchUp
        ));
    }
}
