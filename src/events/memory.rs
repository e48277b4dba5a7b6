//! An in-memory `EventStore` for tests and programs that drive the actors without a database.
//!
//! It enforces the same uniqueness rules as PostgreSQL, seals personal data the same way (under
//! a master key of its own, made at random), and can be switched "offline" to show how the
//! actors behave when the store is unreachable.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use super::chain::{self, ChainedRow};
use super::personal::{Shredder, keys_needed};
use super::signed::{Link, Linked, LogSigner};
use super::{
    Conflict, EventStore, NewEvent, RecordedEvent, StoreError, StoreFuture, StoredColumns,
    link_batch,
};
use crate::domain::SessionId;
use crate::sessions::{Rotated, Rotation, SessionRow, SessionWrite};

pub struct InMemoryEventStore {
    log: Mutex<Log>,
    /// When set, every call fails as if the database were down.
    offline: AtomicBool,
    shredder: Shredder,
}

impl Default for InMemoryEventStore {
    fn default() -> Self {
        Self {
            log: Mutex::default(),
            offline: AtomicBool::default(),
            shredder: Shredder::ephemeral(),
        }
    }
}

#[derive(Default)]
struct Log {
    /// Mirrors the `UNIQUE (stream_id, stream_version)` constraint.
    versions: HashSet<(uuid::Uuid, i32)>,
    /// Mirrors `personal_keys`: each user's wrapped data key, and the unique email index.
    keys: HashMap<uuid::Uuid, Vec<u8>>,
    email_index: HashMap<[u8; 32], uuid::Uuid>,
    /// The rows as stored (sealed), with their chain links.
    rows: Vec<ChainedRow>,
    /// The sessions' rows beside the log.
    sessions: HashMap<SessionId, SessionRow>,
    /// Snapshots by position ([`crate::snapshot`]).
    snapshots: std::collections::BTreeMap<i64, Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
#[error("in-memory store is offline")]
struct Offline;

impl InMemoryEventStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later call fail with [`StoreError::Unavailable`] (or succeed again).
    /// A new, empty store under the same master key as `other` (tests of logs that differ).
    #[cfg(test)]
    pub(crate) fn sharing_keys_with(other: &Self) -> Self {
        Self {
            shredder: Shredder::new(other.shredder.log_signer().master()),
            ..Self::default()
        }
    }

    /// Puts `bytes` in place of the snapshot at `position`, unchecked (tests of bad snapshots).
    #[cfg(test)]
    pub(crate) fn replace_snapshot(&self, position: i64, bytes: Vec<u8>) {
        self.lock().snapshots.insert(position, bytes);
    }

    pub fn set_offline(&self, offline: bool) {
        self.offline.store(offline, Ordering::SeqCst);
    }

    /// The whole log, decoded, for assertions.
    pub fn events(&self) -> Vec<RecordedEvent> {
        let log = self.lock();
        self.decode(
            &log,
            log.rows.iter().map(|row| row.columns.clone()).collect(),
        )
        .unwrap_or_default()
    }

    /// Opens rows with the keys the log holds now.
    fn decode(
        &self,
        log: &Log,
        rows: Vec<StoredColumns>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.shredder.open_rows(rows, &log.keys)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        // A panic while holding the lock cannot leave the log half-written (appends validate
        // first, then push), so a poisoned lock is still consistent.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_online(&self) -> Result<(), StoreError> {
        if self.offline.load(Ordering::SeqCst) {
            Err(StoreError::unavailable(Offline))
        } else {
            Ok(())
        }
    }

    fn append_now(
        &self,
        events: Vec<NewEvent>,
        sessions: Vec<SessionWrite>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.check_online()?;
        let mut log = self.lock();
        let stored: HashMap<uuid::Uuid, Vec<u8>> = self
            .shredder
            .uncached(keys_needed(&events))
            .into_iter()
            .filter_map(|user| log.keys.get(&user).map(|key| (user, key.clone())))
            .collect();
        let sealed = self.shredder.seal_batch(&events, &stored)?;
        // Validate the whole batch before writing anything, so a conflict leaves no trace.
        let mut versions = HashSet::new();
        for new in &events {
            let key = (new.stream_id(), new.stream_version);
            if log.versions.contains(&key) || !versions.insert(key) {
                return Err(StoreError::Conflict(Conflict::StreamVersion));
            }
        }
        let mut indexes = HashSet::new();
        for key in &sealed.new_keys {
            if log.keys.contains_key(&key.user_id) {
                return Err(StoreError::Conflict(Conflict::StreamVersion));
            }
            if let Some(index) = key.email_index
                && (log.email_index.contains_key(&index) || !indexes.insert(index))
            {
                return Err(StoreError::Conflict(Conflict::EmailTaken));
            }
        }
        let latest = log.rows.last().map(|row| row.columns.recorded_at);
        let recorded_at = super::append_time(latest);
        let first = log.rows.last().map_or(0, |row| row.columns.position) + 1;
        let head = log
            .rows
            .last()
            .and_then(|row| row.hash.clone())
            .unwrap_or_else(|| chain::GENESIS.to_owned());
        // Nothing but this process writes here, so the head is always the one it remembers.
        let signer = self.shredder.log_signer();
        let head_link = log.rows.last().map(|row| {
            (
                row.columns.position,
                row.hash.as_deref().unwrap_or_default(),
            )
        });
        let generation = signer.known_generation(head_link).unwrap_or(1);
        let links = link_batch(&head, first, &sealed.columns, recorded_at);
        let last = first + i64::try_from(links.len()).unwrap_or(i64::MAX) - 1;
        let new_head = links
            .last()
            .map(|(_, hash)| hash.clone())
            .unwrap_or_default();
        let signature = signer.sign_head(generation, last, &new_head);
        let next_generation =
            LogSigner::after_batch(generation, events.iter().map(|new| &new.event));
        let mut recorded = Vec::with_capacity(events.len());
        for (((position, new), columns), (prev_hash, hash)) in
            (first..).zip(events).zip(&sealed.columns).zip(links)
        {
            log.rows.push(ChainedRow {
                columns: columns.at(position, recorded_at),
                prev_hash: Some(prev_hash),
                hash: Some(hash),
                signature: (position == last).then(|| signature.clone()),
                stored: None,
            });
            log.versions.insert((new.stream_id(), new.stream_version));
            recorded.push(RecordedEvent {
                position,
                stream_version: new.stream_version,
                event: new.event,
                metadata: new.metadata,
                recorded_at,
            });
        }
        for key in &sealed.new_keys {
            if let Some(index) = key.email_index {
                log.email_index.insert(index, key.user_id);
            }
            log.keys.insert(key.user_id, key.wrapped.clone());
        }
        for user in &sealed.erased {
            log.keys.remove(user);
            log.email_index.retain(|_, owner| owner != user);
            log.snapshots.clear();
        }
        self.shredder.committed(sealed);
        signer.remember(last, new_head, next_generation);
        for write in sessions {
            match write {
                SessionWrite::Start {
                    session,
                    user_id,
                    token_hash,
                    started_at,
                    expires_at,
                } => {
                    log.sessions.insert(
                        session,
                        SessionRow {
                            session,
                            user_id,
                            generation: 1,
                            token_hash,
                            previous_hash: None,
                            sealed: None,
                            rotated_at: None,
                            last_used_at: started_at,
                            expires_at,
                        },
                    );
                }
                SessionWrite::End(session) => {
                    log.sessions.remove(&session);
                }
            }
        }
        Ok(recorded)
    }

    fn rotate_now(&self, rotations: Vec<Rotation>) -> Result<Vec<Rotated>, StoreError> {
        self.check_online()?;
        let mut log = self.lock();
        Ok(rotations
            .into_iter()
            .map(|rotation| {
                let presented = &rotation.presented;
                match log.sessions.get_mut(&presented.session) {
                    Some(row)
                        if row.generation == presented.generation
                            && row.token_hash == presented.hash
                            && row.expires_at > rotation.now
                            && row.last_used_at > rotation.idle_cutoff =>
                    {
                        row.generation += 1;
                        row.previous_hash = Some(row.token_hash);
                        row.token_hash = rotation.successor;
                        row.sealed = Some(rotation.sealed);
                        row.rotated_at = Some(rotation.now);
                        row.last_used_at = rotation.now;
                        Rotated::Done
                    }
                    row => Rotated::Unmatched(row.cloned()),
                }
            })
            .collect())
    }

    fn read_now(&self, after: i64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.check_online()?;
        let log = self.lock();
        // Positions are dense from 1 here, so the first event after `after` is at index `after`.
        let start = usize::try_from(after.max(0)).unwrap_or(usize::MAX);
        let rows = log
            .rows
            .iter()
            .skip(start)
            .take(limit)
            .map(|row| row.columns.clone())
            .collect();
        self.decode(&log, rows)
    }

    fn read_linked_now(&self, after: i64, limit: usize) -> Result<Vec<Linked>, StoreError> {
        let (columns, links) = Link::split(self.read_rows_now(after, limit)?);
        let log = self.lock();
        let events = self.decode(&log, columns)?;
        Ok(Link::join(links, events))
    }

    fn read_rows_now(&self, after: i64, limit: usize) -> Result<Vec<ChainedRow>, StoreError> {
        self.check_online()?;
        let log = self.lock();
        let start = usize::try_from(after.max(0)).unwrap_or(usize::MAX);
        Ok(log.rows.iter().skip(start).take(limit).cloned().collect())
    }
}

impl EventStore for InMemoryEventStore {
    fn append_with(
        &self,
        events: Vec<NewEvent>,
        sessions: Vec<SessionWrite>,
    ) -> StoreFuture<'_, Vec<RecordedEvent>> {
        let result = self.append_now(events, sessions);
        Box::pin(async move { result })
    }

    fn rotate(&self, rotations: Vec<Rotation>) -> StoreFuture<'_, Vec<Rotated>> {
        let result = self.rotate_now(rotations);
        Box::pin(async move { result })
    }

    fn last_used(
        &self,
        sessions: Vec<SessionId>,
    ) -> StoreFuture<'_, Vec<(SessionId, DateTime<Utc>)>> {
        let result = self.check_online().map(|()| {
            let log = self.lock();
            sessions
                .into_iter()
                .filter_map(|id| log.sessions.get(&id).map(|row| (id, row.last_used_at)))
                .collect()
        });
        Box::pin(async move { result })
    }

    fn prune_sessions(
        &self,
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreFuture<'_, u64> {
        let result = self.check_online().map(|()| {
            let mut log = self.lock();
            let before = log.sessions.len();
            log.sessions
                .retain(|_, row| row.expires_at > now && row.last_used_at > idle_cutoff);
            (before - log.sessions.len()) as u64
        });
        Box::pin(async move { result })
    }

    fn read_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<RecordedEvent>> {
        let result = self.read_now(after, limit);
        Box::pin(async move { result })
    }

    fn read_linked_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<Linked>> {
        let result = self.read_linked_now(after, limit);
        Box::pin(async move { result })
    }

    fn first_signed(&self) -> StoreFuture<'_, Option<i64>> {
        let result = self.check_online().map(|()| {
            self.lock()
                .rows
                .iter()
                .find(|row| row.signature.is_some())
                .map(|row| row.columns.position)
        });
        Box::pin(async move { result })
    }

    fn log_signer(&self) -> Option<std::sync::Arc<LogSigner>> {
        Some(self.shredder.log_signer())
    }

    fn read_rows_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<ChainedRow>> {
        let result = self.read_rows_now(after, limit);
        Box::pin(async move { result })
    }

    fn snapshots(&self) -> StoreFuture<'_, Vec<i64>> {
        let result = self
            .check_online()
            .map(|()| self.lock().snapshots.keys().rev().copied().collect());
        Box::pin(async move { result })
    }

    fn read_snapshot(&self, position: i64) -> StoreFuture<'_, Option<Vec<u8>>> {
        let result = self
            .check_online()
            .map(|()| self.lock().snapshots.get(&position).cloned());
        Box::pin(async move { result })
    }

    fn write_snapshot(&self, position: i64, bytes: Vec<u8>) -> StoreFuture<'_, bool> {
        let result = self.check_online().map(|()| {
            let mut log = self.lock();
            let erased_since = log
                .rows
                .iter()
                .rev()
                .take_while(|row| row.columns.position > position)
                .any(|row| row.columns.event_type == "UserErased");
            if erased_since {
                return false;
            }
            log.snapshots.insert(position, bytes);
            while log.snapshots.len() > crate::snapshot::KEEP {
                log.snapshots.pop_first();
            }
            true
        });
        Box::pin(async move { result })
    }

    fn read_stream(
        &self,
        stream_id: uuid::Uuid,
        after_version: i32,
        limit: usize,
    ) -> StoreFuture<'_, Vec<RecordedEvent>> {
        let result = self.check_online().and_then(|()| {
            let log = self.lock();
            let rows = log
                .rows
                .iter()
                .map(|row| &row.columns)
                .filter(|row| row.stream_id == stream_id && row.stream_version > after_version)
                .take(limit)
                .cloned()
                .collect();
            self.decode(&log, rows)
        });
        Box::pin(async move { result })
    }
}
