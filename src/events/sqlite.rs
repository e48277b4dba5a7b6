//! The embedded `EventStore`: the event log in one SQLite file, so authlog runs with nothing else
//! installed, with the same guarantees as PostgreSQL enforced by SQLite itself.
//!
//! SQLite calls block, so one dedicated thread owns the connection and runs every call in turn;
//! async callers (the registry) hand it a job and await the answer. SQLite allows one writer at a
//! time anyway, so a single thread costs no write throughput, and the registry's group commit
//! turns many sign-ups into one transaction and one fsync.

use std::fs::OpenOptions;
use std::future::Future;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::chain::{self, ChainedRow, StoredText};
use super::personal::{self, Shredder, keys_needed, sealed_streams};
use super::signed::{Link, Linked, LogSigner};
use super::{
    Conflict, DecodeError, EventStore, NewEvent, RecordedEvent, StoreError, StoreFuture,
    StoredColumns, link_batch,
};
use crate::domain::{SessionId, UserId};
use crate::sessions::{Rotated, Rotation, SessionRow, SessionWrite, TokenHash};

/// The schema, one numbered step per file in `sql/sqlite/`. The number applied so far is kept in
/// SQLite's `user_version` header field.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../sql/sqlite/V1__event_log.sql")),
    (2, include_str!("../../sql/sqlite/V2__hash_chain.sql")),
    (3, include_str!("../../sql/sqlite/V3__sessions.sql")),
    (4, include_str!("../../sql/sqlite/V4__personal_keys.sql")),
    (5, include_str!("../../sql/sqlite/V5__log_signatures.sql")),
];

/// V1's UPDATE trigger, dropped and recreated around linking the rows written before V2.
const NO_UPDATE_TRIGGER: &str = "\
    CREATE TRIGGER events_no_update
        BEFORE UPDATE ON events
    BEGIN
        SELECT RAISE(ABORT, 'events is append-only: UPDATE is not allowed');
    END;";

/// Names given in `sql/sqlite`. SQLite reports a unique violation as text, from the constraint
/// itself or from the triggers that stop `INSERT OR REPLACE` first; both are mapped here only.
const STREAM_VERSION_VIOLATION: &str = "events.stream_id, events.stream_version";
const REGISTERED_EMAIL_INDEX: &str = "events_registered_email_key";
const PERSONAL_KEY_VIOLATION: &str = "personal_keys.user_id";
const EMAIL_INDEX_VIOLATION: &str = "personal_keys.email_index";

const KEY_SQL: &str = "SELECT wrapped_key FROM personal_keys WHERE user_id = ?1";
const INSERT_KEY_SQL: &str = "\
    INSERT INTO personal_keys (user_id, email_index, wrapped_key, created_at)
    VALUES (?1, ?2, ?3, ?4)";
const ERASE_KEY_SQL: &str = "DELETE FROM personal_keys WHERE user_id = ?1";

const APPEND_SQL: &str = "\
    INSERT INTO events (position, stream_id, stream_version, event_type, event_version, payload,
                        metadata, recorded_at, prev_hash, hash, signature)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

const HEAD_SQL: &str =
    "SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1";

const ROTATION_SQL: &str = "\
    SELECT position, payload FROM events WHERE event_type = 'LogKeyRotated'
    ORDER BY position DESC LIMIT 1";

const ANY_SIGNED_SQL: &str = "SELECT EXISTS (SELECT 1 FROM events WHERE signature IS NOT NULL)";

const BATCH_START_SQL: &str =
    "SELECT coalesce(max(position), 0) FROM events WHERE signature IS NOT NULL AND position < ?1";

const FIRST_SIGNED_SQL: &str = "SELECT min(position) FROM events WHERE signature IS NOT NULL";

const READ_AFTER_SQL: &str = "\
    SELECT position, stream_id, stream_version, event_type, event_version, payload, metadata,
           recorded_at, prev_hash, hash, signature
    FROM events WHERE position > ?1 ORDER BY position LIMIT ?2";

const READ_STREAM_SQL: &str = "\
    SELECT position, stream_id, stream_version, event_type, event_version, payload, metadata,
           recorded_at, prev_hash, hash, signature
    FROM events WHERE stream_id = ?1 AND stream_version > ?2 ORDER BY stream_version LIMIT ?3";

/// Where the embedded log lives.
#[derive(Debug, Clone)]
pub struct SqliteSettings {
    /// The database file; its directory is created (mode 0700) if missing.
    pub path: PathBuf,
    /// How long a call may wait, for another process holding the write lock or in the queue,
    /// before it fails with [`StoreError::Unavailable`].
    pub timeout: Duration,
}

impl SqliteSettings {
    /// The file name of the log inside a data directory.
    pub const FILE_NAME: &'static str = "events.db";

    pub fn in_dir(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(Self::FILE_NAME),
            timeout: super::DEFAULT_STORE_TIMEOUT,
        }
    }
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// How often a server on the embedded log looks for commits by another process (`authlog
/// keys`): one `PRAGMA data_version` on the SQLite thread.
pub const WATCH_EVERY: Duration = Duration::from_millis(500);

pub struct SqliteEventStore {
    /// `None` only while dropping, so that the worker sees the channel close. Shared (weakly)
    /// with the change feed, which must not keep the worker alive.
    jobs: Option<Arc<mpsc::Sender<Job>>>,
    worker: Option<JoinHandle<()>>,
    path: PathBuf,
    timeout: Duration,
    /// Seals and opens personal data; `None` for an auditor without the master key, who reads
    /// `<sealed>` in its place and cannot append.
    personal: Option<Arc<Shredder>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the SQLite worker thread has stopped")]
struct WorkerStopped;

impl SqliteEventStore {
    /// Opens (creating if needed) the log file, applies the schema, and starts the thread that
    /// owns the connection.
    pub async fn open(settings: &SqliteSettings) -> anyhow::Result<Self> {
        let timeout = settings.timeout;
        Self::start(settings.path.clone(), timeout, move |path| {
            open_connection(path, timeout)
        })
        .await
    }

    /// Opens an existing log for reading only, as the auditors' commands do: nothing is
    /// created, migrated or written, and a missing file is an error. A copy on read-only media
    /// (where SQLite cannot keep its shared-memory file) is opened as immutable.
    pub async fn open_read_only(path: &Path) -> anyhow::Result<Self> {
        anyhow::ensure!(
            path.is_file(),
            "there is no event log at {} (is --data-dir or AUTHLOG_DATA_DIR right?)",
            path.display()
        );
        Self::start(
            path.to_owned(),
            super::DEFAULT_STORE_TIMEOUT,
            open_read_only_connection,
        )
        .await
    }

    /// Starts the thread that owns the connection `open` makes.
    async fn start(
        path: PathBuf,
        timeout: Duration,
        open: impl FnOnce(&Path) -> anyhow::Result<Connection> + Send + 'static,
    ) -> anyhow::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (opened, ready) = oneshot::channel();
        let worker_path = path.clone();
        let worker = std::thread::Builder::new()
            .name("authlog-sqlite".to_owned())
            .spawn(move || {
                let mut connection = match open(&worker_path) {
                    Ok(connection) => {
                        let _ = opened.send(Ok(()));
                        connection
                    }
                    Err(error) => {
                        let _ = opened.send(Err(error));
                        return;
                    }
                };
                while let Ok(job) = queue.recv() {
                    job(&mut connection);
                }
                // Dropping the connection closes it; the last one to close checkpoints the WAL.
            })
            .context("cannot start the SQLite thread")?;
        let opened = ready
            .await
            .map_err(|_| anyhow::anyhow!("the SQLite thread stopped while opening"));
        let store = Self {
            jobs: Some(Arc::new(jobs)),
            worker: Some(worker),
            path,
            timeout,
            personal: None,
        };
        opened?.with_context(|| format!("cannot open the event log {}", store.path.display()))?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where snapshots are kept: `snapshots/` in the data directory, beside the log.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.path.with_file_name("snapshots")
    }

    /// Seals personal data on append and opens it on read with the master key's shredder.
    #[must_use]
    pub fn with_personal_data(mut self, shredder: Shredder) -> Self {
        self.personal = Some(Arc::new(shredder));
        self
    }

    /// Runs `job` on the SQLite thread and waits for its answer, at most `timeout` (after which the
    /// job may still run: the caller gets `Unavailable`, which means "outcome unknown").
    fn call<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = self.jobs.as_ref().map(|jobs| {
            jobs.send(Box::new(move |connection: &mut Connection| {
                let _ = reply.send(job(connection));
            }))
        });
        let timeout = self.timeout;
        async move {
            if !matches!(sent, Some(Ok(()))) {
                return Err(StoreError::unavailable(WorkerStopped));
            }
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(StoreError::unavailable(WorkerStopped)),
                Err(elapsed) => Err(StoreError::unavailable(elapsed)),
            }
        }
    }
}

impl Drop for SqliteEventStore {
    /// Closes the queue and waits for the thread to finish its last job and close the file, so
    /// the store can be reopened at once by this process or another.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl EventStore for SqliteEventStore {
    fn append_with(
        &self,
        events: Vec<NewEvent>,
        sessions: Vec<SessionWrite>,
    ) -> StoreFuture<'_, Vec<RecordedEvent>> {
        let personal = self.personal.clone();
        let snapshots = self.snapshot_dir();
        Box::pin(self.call(move |connection| {
            append_batch(
                connection,
                events,
                sessions,
                personal.as_deref(),
                &snapshots,
            )
        }))
    }

    fn rotate(&self, rotations: Vec<Rotation>) -> StoreFuture<'_, Vec<Rotated>> {
        Box::pin(self.call(move |connection| rotate_batch(connection, rotations)))
    }

    fn last_used(
        &self,
        sessions: Vec<SessionId>,
    ) -> StoreFuture<'_, Vec<(SessionId, DateTime<Utc>)>> {
        Box::pin(self.call(move |connection| {
            let mut found = Vec::new();
            let mut query = connection
                .prepare_cached("SELECT last_used_at FROM sessions WHERE session_id = ?1")
                .map_err(map_error)?;
            for session in sessions {
                let used: Option<String> = query
                    .query_row(params![uuid_text(session.as_uuid())], |row| row.get(0))
                    .optional()
                    .map_err(map_error)?;
                if let Some(used) = used {
                    found.push((session, parse_time("last_used_at", &used)?));
                }
            }
            Ok(found)
        }))
    }

    fn prune_sessions(
        &self,
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreFuture<'_, u64> {
        Box::pin(self.call(move |connection| {
            let removed = connection
                .execute(
                    "DELETE FROM sessions WHERE expires_at <= ?1 OR last_used_at <= ?2",
                    params![stamp(now), stamp(idle_cutoff)],
                )
                .map_err(map_error)?;
            Ok(removed as u64)
        }))
    }

    fn read_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<RecordedEvent>> {
        let personal = self.personal.clone();
        Box::pin(self.call(move |connection| {
            // One read transaction for the page and its keys: one snapshot, and SQLite takes
            // its file lock once rather than for every key looked up.
            let transaction = connection.transaction().map_err(map_error)?;
            let rows = read_rows(&transaction, after, limit, false)?
                .into_iter()
                .map(|row| row.columns)
                .collect();
            open_rows(&transaction, rows, personal.as_deref())
        }))
    }

    /// Read on the SQLite thread, parsed on the reader's side (on two threads).
    fn read_rows_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<ChainedRow>> {
        let read = self.call(move |connection| read_raw(connection, after, limit));
        Box::pin(async move {
            super::pager::in_halves(read.await?, |rows| {
                rows.into_iter().map(|row| row.parse(true)).collect()
            })
            .await
        })
    }

    /// The SQLite thread reads the page and the keys it needs, in one transaction; parsing,
    /// hashing, opening and decoding happen on the reader's side, on two threads.
    fn read_linked_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<Linked>> {
        let personal = self.personal.clone();
        let read = self.call(move |connection| {
            let transaction = connection.transaction().map_err(map_error)?;
            let rows = read_raw(&transaction, after, limit)?;
            let mut streams: Vec<Uuid> = rows.iter().filter_map(RawRow::stream).collect();
            streams.sort_unstable();
            streams.dedup();
            let keys = match &personal {
                Some(shredder) => stored_keys(&transaction, shredder.uncached(streams.clone()))?,
                None => std::collections::HashMap::new(),
            };
            Ok((rows, streams, keys))
        });
        let personal = self.personal.clone();
        Box::pin(async move {
            let (rows, streams, keys) = read.await?;
            Link::open_in_parallel(rows, |row| row.parse(false), streams, personal, keys).await
        })
    }

    fn first_signed(&self) -> StoreFuture<'_, Option<i64>> {
        Box::pin(self.call(|connection| {
            connection
                .query_row(FIRST_SIGNED_SQL, [], |row| row.get(0))
                .map_err(map_error)
        }))
    }

    fn log_signer(&self) -> Option<Arc<LogSigner>> {
        self.personal.as_ref().map(|shredder| shredder.log_signer())
    }

    fn snapshots(&self) -> StoreFuture<'_, Vec<i64>> {
        let dir = self.snapshot_dir();
        Box::pin(async move {
            let mut positions = snapshot_files(&dir)
                .map_err(StoreError::unavailable)?
                .into_iter()
                .map(|(position, _)| position)
                .collect::<Vec<_>>();
            positions.sort_unstable_by_key(|position| std::cmp::Reverse(*position));
            Ok(positions)
        })
    }

    fn read_snapshot(&self, position: i64) -> StoreFuture<'_, Option<Vec<u8>>> {
        let path = self.snapshot_dir().join(snapshot_name(position));
        Box::pin(async move {
            let read = tokio::task::spawn_blocking(move || match std::fs::read(&path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(error),
            });
            match read.await {
                Ok(result) => result.map_err(StoreError::unavailable),
                Err(error) => Err(StoreError::unavailable(error)),
            }
        })
    }

    /// Written to a temporary file and synced off the SQLite thread; then, on it (so in order
    /// with appends), dropped if a user was erased after `position`, or else renamed into place
    /// with the older snapshots removed.
    fn write_snapshot(&self, position: i64, bytes: Vec<u8>) -> StoreFuture<'_, bool> {
        let dir = self.snapshot_dir();
        let temporary = dir.join(format!(".{}.tmp", snapshot_name(position)));
        let written = temporary.clone();
        Box::pin(async move {
            let write = tokio::task::spawn_blocking(move || write_synced(&written, &bytes));
            match write.await {
                Ok(result) => result.map_err(StoreError::unavailable)?,
                Err(error) => return Err(StoreError::unavailable(error)),
            }
            // Sent to the SQLite thread only now that the file is written.
            self.call(move |connection| {
                let erased: bool = connection
                    .query_row(ERASED_SINCE_SQL, params![position], |row| row.get(0))
                    .map_err(map_error)?;
                let kept = if erased {
                    std::fs::remove_file(&temporary)
                } else {
                    std::fs::rename(&temporary, dir.join(snapshot_name(position)))
                        .and_then(|()| remove_snapshots(&dir, Some(crate::snapshot::KEEP)))
                        .and_then(|()| std::fs::File::open(&dir)?.sync_all())
                };
                kept.map_err(StoreError::unavailable)?;
                Ok(!erased)
            })
            .await
        })
    }

    fn read_stream(
        &self,
        stream_id: Uuid,
        after_version: i32,
        limit: usize,
    ) -> StoreFuture<'_, Vec<RecordedEvent>> {
        let personal = self.personal.clone();
        Box::pin(self.call(move |connection| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let stream = stream_id.hyphenated().to_string();
            let read = read_raw_with(
                connection,
                READ_STREAM_SQL,
                params![stream, after_version, limit],
            )?
            .into_iter()
            .map(|row| row.parse(false).map(|row| row.columns))
            .collect::<Result<Vec<_>, _>>()?;
            open_rows(connection, read, personal.as_deref())
        }))
    }

    /// The embedded log is one server's, but `authlog keys` may append to it while it runs:
    /// SQLite's `data_version` changes when another connection commits, and the feed then asks
    /// for a read of the tail. Every `WATCH_EVERY` (half a second), until the store is dropped.
    fn watch(&self) -> Option<super::ChangeFeed> {
        let jobs = Arc::downgrade(self.jobs.as_ref()?);
        let (changes, mut feed) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(watch_data_version(jobs, changes));
        Some(Box::pin(futures_util::stream::poll_fn(move |cx| {
            feed.poll_recv(cx)
        })))
    }
}

/// Sends [`super::Change::Poll`] whenever another connection has committed since the last look.
async fn watch_data_version(
    jobs: Weak<mpsc::Sender<Job>>,
    changes: tokio::sync::mpsc::UnboundedSender<super::Change>,
) {
    let mut ticker = tokio::time::interval(WATCH_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        ticker.tick().await;
        if changes.is_closed() {
            return;
        }
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |connection: &mut Connection| {
            let _ = reply.send(
                connection.pragma_query_value(None, "data_version", |row| row.get::<_, i64>(0)),
            );
        });
        // Held only while handing over the job: a dropped store ends the feed.
        let sent = jobs.upgrade().map(|jobs| jobs.send(job));
        if !matches!(sent, Some(Ok(()))) {
            return;
        }
        if let Ok(Ok(version)) = answer.await {
            if last.is_some_and(|last| last != version)
                && changes.send(super::Change::Poll).is_err()
            {
                return;
            }
            last = Some(version);
        }
    }
}

/// Creates the directory and file if needed (readable by this user only: the log holds password
/// hashes), opens it in WAL mode with `synchronous=FULL`, and migrates it.
fn open_connection(path: &Path, timeout: Duration) -> anyhow::Result<Connection> {
    crate::data_dir::create_parent_dir(path)?;
    // SQLite gives its -wal and -shm files the database file's permissions.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;

    let mut connection = Connection::open(path)?;
    connection.busy_timeout(timeout)?;
    let journal: String =
        connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    anyhow::ensure!(
        journal.eq_ignore_ascii_case("wal"),
        "SQLite refused WAL mode (journal_mode is {journal})"
    );
    // FULL: every commit is fsynced before it returns, so an acknowledged event survives a crash
    // or power loss, not only a process kill.
    connection.pragma_update(None, "synchronous", "FULL")?;
    let synchronous: i64 = connection.pragma_query_value(None, "synchronous", |row| row.get(0))?;
    anyhow::ensure!(synchronous == 2, "SQLite refused synchronous=FULL");
    // Deleted rows (an erased user's wrapped key) are overwritten with zeros, not left in a
    // free page for a file-level reader to find.
    connection.pragma_update(None, "secure_delete", "ON")?;
    migrate(&mut connection)?;
    Ok(connection)
}

/// A read-only connection to an existing log at the schema this build knows: `mode=ro`, or
/// `immutable` when even reading needs to write SQLite's shared-memory file (a read-only copy).
fn open_read_only_connection(path: &Path) -> anyhow::Result<Connection> {
    let readable = |connection: Connection| -> anyhow::Result<Connection> {
        // A reader of a WAL log can find it busy for a moment (the server checkpointing or
        // truncating the WAL): wait, as the server's own connection does, rather than fail.
        connection.busy_timeout(super::DEFAULT_STORE_TIMEOUT)?;
        let version: i32 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        connection.query_row("SELECT count(*) FROM events WHERE 0", [], |_| Ok(()))?;
        let latest = MIGRATIONS.last().map_or(0, |(version, _)| *version);
        anyhow::ensure!(
            version == latest,
            "the event log has schema version {version}, this build reads {latest}: {}",
            if version < latest {
                "the service migrates it when it next starts on it"
            } else {
                "upgrade authlog"
            }
        );
        Ok(connection)
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
    let uri = |query: &str| format!("file:{}?{query}", uri_path(path));
    match Connection::open_with_flags(uri("mode=ro"), flags).map_err(anyhow::Error::from) {
        Ok(connection) => match readable(connection) {
            Ok(connection) => Ok(connection),
            Err(error) if is_cannot_open(&error) => readable(Connection::open_with_flags(
                uri("mode=ro&immutable=1"),
                flags,
            )?),
            Err(error) => Err(error),
        },
        Err(error) => Err(error),
    }
    .with_context(|| format!("cannot read the event log {}", path.display()))
}

/// SQLite could not open or map a file it needs (on read-only media: the `-shm` file).
fn is_cannot_open(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<rusqlite::Error>()
        .and_then(rusqlite::Error::sqlite_error_code)
        .is_some_and(|code| matches!(code, ErrorCode::CannotOpen | ErrorCode::ReadOnly))
}

/// `path` for a `file:` URI: the characters with a meaning there are escaped.
fn uri_path(path: &Path) -> String {
    path.to_string_lossy()
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23")
}

/// Applies the steps of [`MIGRATIONS`] not applied yet, in one write transaction, so that two
/// processes opening a new file at once migrate it exactly once.
fn migrate(connection: &mut Connection) -> anyhow::Result<()> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i32 = transaction.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let latest = MIGRATIONS.last().map_or(0, |(version, _)| *version);
    anyhow::ensure!(
        current <= latest,
        "the event log has schema version {current}, newer than this build knows ({latest}); \
         upgrade authlog"
    );
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > current) {
        transaction
            .execute_batch(sql)
            .with_context(|| format!("migration V{version} failed"))?;
        transaction.pragma_update(None, "user_version", version)?;
        tracing::info!(migration = version, "applied migration");
    }
    // After every step, so that the rows are read with today's columns.
    if current < 2 {
        link_unchained(&transaction)?;
    }
    transaction.commit()?;
    Ok(())
}

/// Links the rows written before the chain existed, in position order. The UPDATE trigger is
/// dropped and recreated around it, inside the migration's transaction.
fn link_unchained(transaction: &rusqlite::Transaction<'_>) -> anyhow::Result<()> {
    let rows = read_rows(transaction, 0, usize::MAX, false).map_err(anyhow::Error::new)?;
    if rows.is_empty() {
        return Ok(());
    }
    transaction.execute_batch("DROP TRIGGER events_no_update")?;
    let mut prev = chain::GENESIS.to_owned();
    for row in &rows {
        let hash = chain::hash_row(&prev, &row.columns);
        transaction.execute(
            "UPDATE events SET prev_hash = ?1, hash = ?2 WHERE position = ?3",
            params![prev, hash, row.columns.position],
        )?;
        prev = hash;
    }
    transaction.execute_batch(NO_UPDATE_TRIGGER)?;
    tracing::info!(
        events = rows.len(),
        "linked the events written before the hash chain"
    );
    Ok(())
}

const ERASED_SINCE_SQL: &str =
    "SELECT EXISTS (SELECT 1 FROM events WHERE position > ?1 AND event_type = 'UserErased')";

fn snapshot_name(position: i64) -> String {
    format!("snapshot-{position:020}.bin")
}

/// The snapshots in `dir` (none if it does not exist), with their paths.
fn snapshot_files(dir: &Path) -> std::io::Result<Vec<(i64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let position = name
            .to_str()
            .and_then(|name| name.strip_prefix("snapshot-")?.strip_suffix(".bin"))
            .and_then(|digits| digits.parse().ok());
        if let Some(position) = position {
            files.push((position, entry.path()));
        }
    }
    Ok(files)
}

/// Removes every snapshot in `dir` but the newest `keep` (all of them for `None`).
fn remove_snapshots(dir: &Path, keep: Option<usize>) -> std::io::Result<()> {
    let mut files = snapshot_files(dir)?;
    files.sort_unstable_by_key(|file| std::cmp::Reverse(file.0));
    for (_, path) in files.into_iter().skip(keep.unwrap_or(0)) {
        std::fs::remove_file(path)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` (mode 0600, in a directory made with the data directory's mode)
/// and syncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    crate::data_dir::create_parent_dir(path).map_err(std::io::Error::other)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// One transaction for the whole batch: all events are written and fsynced, or none.
fn append_batch(
    connection: &mut Connection,
    events: Vec<NewEvent>,
    sessions: Vec<SessionWrite>,
    personal: Option<&Shredder>,
    snapshots: &Path,
) -> Result<Vec<RecordedEvent>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let shredder = personal.ok_or_else(personal::no_master_key)?;
    // IMMEDIATE takes the write lock first: the head read here is still the head at commit.
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_error)?;
    let stored = stored_keys(&transaction, shredder.uncached(keys_needed(&events)))?;
    let sealed = shredder.seal_batch(&events, &stored)?;
    let (last, head, latest): (i64, Option<String>, Option<String>) = transaction
        .query_row(HEAD_SQL, [], |row| {
            Ok((row.get(0)?, row.get(1)?, Some(row.get(2)?)))
        })
        .optional()
        .map_err(map_error)?
        .unwrap_or((0, None, None));
    let head = head.unwrap_or_else(|| chain::GENESIS.to_owned());
    let signer = shredder.log_signer();
    let known = signer.known_generation((last > 0).then_some((last, head.as_str())));
    let generation = match known {
        Some(generation) => generation,
        // Another process wrote the head: read it whole and check it before chaining onto it.
        None => {
            let rows = read_rows(&transaction, last - 1, 1, false)?;
            let head_row = rows
                .iter()
                .find(|row| row.columns.position == last)
                .ok_or_else(|| StoreError::unavailable(anyhow::anyhow!("the head moved")))?;
            let rotation = transaction
                .query_row(ROTATION_SQL, [], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })
                .optional()
                .map_err(map_error)?
                .map(|(position, payload)| {
                    let payload = serde_json::from_str(&payload).unwrap_or(Value::Null);
                    (position, super::rotated_generation(&payload))
                });
            signer.check_head(
                head_row,
                rotation,
                || {
                    transaction
                        .query_row(ANY_SIGNED_SQL, [], |row| row.get(0))
                        .map_err(map_error)
                },
                || {
                    transaction
                        .query_row(BATCH_START_SQL, [last], |row| row.get(0))
                        .map_err(map_error)
                },
            )?
        }
    };
    // Under the write lock, and never before the head's time (see `append_time`).
    let latest = latest
        .and_then(|text| DateTime::parse_from_rfc3339(&text).ok())
        .map(|at| at.with_timezone(&Utc));
    let recorded_at = super::append_time(latest);
    let stamp = recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let links = link_batch(&head, last + 1, &sealed.columns, recorded_at);
    let last_position = last + i64::try_from(links.len()).unwrap_or(i64::MAX);
    let new_head = links
        .last()
        .map(|(_, hash)| hash.clone())
        .unwrap_or_default();
    let signature = signer.sign_head(generation, last_position, &new_head);
    let next_generation = LogSigner::after_batch(generation, events.iter().map(|new| &new.event));
    let mut recorded = Vec::with_capacity(events.len());
    {
        let mut insert = transaction.prepare_cached(APPEND_SQL).map_err(map_error)?;
        for (((new, position), columns), (prev_hash, hash)) in events
            .into_iter()
            .zip(last + 1..)
            .zip(&sealed.columns)
            .zip(links)
        {
            insert
                .execute(params![
                    position,
                    columns.stream_id.hyphenated().to_string(),
                    columns.stream_version,
                    columns.event_type,
                    columns.event_version,
                    columns.payload.to_string(),
                    columns.metadata.to_string(),
                    stamp,
                    prev_hash,
                    hash,
                    (position == last_position).then_some(&signature),
                ])
                .map_err(map_error)?;
            recorded.push(RecordedEvent {
                position,
                stream_version: new.stream_version,
                event: new.event,
                metadata: new.metadata,
                recorded_at,
            });
        }
    }
    for key in &sealed.new_keys {
        transaction
            .prepare_cached(INSERT_KEY_SQL)
            .and_then(|mut insert| {
                insert.execute(params![
                    uuid_text(key.user_id),
                    key.email_index.as_ref().map(|index| &index[..]),
                    &key.wrapped,
                    stamp,
                ])
            })
            .map_err(map_error)?;
    }
    for user in &sealed.erased {
        transaction
            .prepare_cached(ERASE_KEY_SQL)
            .and_then(|mut delete| delete.execute(params![uuid_text(*user)]))
            .map_err(map_error)?;
    }
    write_sessions(&transaction, sessions)?;
    if !sealed.erased.is_empty() {
        // Every snapshot holds the user: gone before the erasure commits (a snapshot is only a
        // cache, so losing them to a failed commit costs a longer start, nothing more).
        remove_snapshots(snapshots, None).map_err(StoreError::unavailable)?;
    }
    // On any error above, dropping the transaction rolls it back.
    transaction.commit().map_err(map_error)?;
    signer.remember(last_position, new_head, next_generation);
    let erased = !sealed.erased.is_empty();
    shredder.committed(sealed);
    if erased {
        // The erased keys' rows were zeroed in the database file (secure_delete), but the WAL
        // still holds the pages they were written in: checkpoint it into the file and
        // truncate it. Best effort: a reader in another process can hold the WAL for now, and
        // the next erasure's checkpoint, or the last connection's close, finishes the job.
        if let Err(error) = connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            row.get::<_, i64>(0)
        }) {
            tracing::warn!(%error, "cannot truncate the write-ahead log after an erasure");
        }
    }
    Ok(recorded)
}

/// The wrapped keys the store holds for `users`.
fn stored_keys(
    connection: &Connection,
    users: Vec<Uuid>,
) -> Result<std::collections::HashMap<Uuid, Vec<u8>>, StoreError> {
    let mut keys = std::collections::HashMap::with_capacity(users.len());
    if users.is_empty() {
        return Ok(keys);
    }
    let mut select = connection.prepare_cached(KEY_SQL).map_err(map_error)?;
    for user in users {
        let wrapped: Option<Vec<u8>> = select
            .query_row(params![uuid_text(user)], |row| row.get(0))
            .optional()
            .map_err(map_error)?;
        if let Some(wrapped) = wrapped {
            keys.insert(user, wrapped);
        }
    }
    Ok(keys)
}

/// Decodes rows read from the log, opening their sealed values with the keys stored now (read
/// after the rows, so every key a row needs is there unless its user was erased since).
fn open_rows(
    connection: &Connection,
    rows: Vec<StoredColumns>,
    personal: Option<&Shredder>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    match personal {
        None => personal::open_rows_sealed(rows),
        Some(shredder) => {
            let keys = stored_keys(connection, shredder.uncached(sealed_streams(&rows)))?;
            shredder.open_rows(rows, &keys)
        }
    }
}

/// A time as the sessions table keeps it: RFC 3339, UTC, microseconds, so text order is time
/// order.
fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn uuid_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

fn parse_time(column: &'static str, text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|error| StoreError::unavailable(anyhow::anyhow!("sessions.{column}: {error}")))
}

/// The sessions' rows, inside the append's transaction.
fn write_sessions(
    transaction: &rusqlite::Transaction<'_>,
    sessions: Vec<SessionWrite>,
) -> Result<(), StoreError> {
    for write in sessions {
        match write {
            SessionWrite::Start {
                session,
                user_id,
                token_hash,
                started_at,
                expires_at,
            } => transaction
                .prepare_cached(
                    "INSERT INTO sessions (session_id, user_id, generation, token_hash,
                                           last_used_at, expires_at)
                     VALUES (?1, ?2, 1, ?3, ?4, ?5)",
                )
                .and_then(|mut insert| {
                    insert.execute(params![
                        uuid_text(session.as_uuid()),
                        uuid_text(user_id.as_uuid()),
                        &token_hash.0[..],
                        stamp(started_at),
                        stamp(expires_at),
                    ])
                })
                .map_err(map_error)?,
            SessionWrite::End(session) => transaction
                .prepare_cached("DELETE FROM sessions WHERE session_id = ?1")
                .and_then(|mut delete| delete.execute(params![uuid_text(session.as_uuid())]))
                .map_err(map_error)?,
        };
    }
    Ok(())
}

/// Each rotation whose token is current and live, in one write transaction (see
/// [`EventStore::rotate`]); the others get their session's row.
fn rotate_batch(
    connection: &mut Connection,
    rotations: Vec<Rotation>,
) -> Result<Vec<Rotated>, StoreError> {
    if rotations.is_empty() {
        return Ok(Vec::new());
    }
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_error)?;
    let mut outcomes = Vec::with_capacity(rotations.len());
    for rotation in &rotations {
        let id = uuid_text(rotation.presented.session.as_uuid());
        let now = stamp(rotation.now);
        let changed = transaction
            .prepare_cached(
                "UPDATE sessions
                 SET generation = generation + 1, previous_hash = token_hash, token_hash = ?1,
                     sealed = ?2, rotated_at = ?3, last_used_at = ?3
                 WHERE session_id = ?4 AND generation = ?5 AND token_hash = ?6
                   AND expires_at > ?3 AND last_used_at > ?7",
            )
            .and_then(|mut update| {
                update.execute(params![
                    &rotation.successor.0[..],
                    &rotation.sealed,
                    now,
                    id,
                    rotation.presented.generation,
                    &rotation.presented.hash.0[..],
                    stamp(rotation.idle_cutoff),
                ])
            })
            .map_err(map_error)?;
        if changed == 1 {
            outcomes.push(Rotated::Done);
            continue;
        }
        let row = transaction
            .prepare_cached(
                "SELECT session_id, user_id, generation, token_hash, previous_hash, sealed,
                        rotated_at, last_used_at, expires_at
                 FROM sessions WHERE session_id = ?1",
            )
            .and_then(|mut select| {
                select
                    .query_row(params![id], |row| {
                        Ok((
                            row.get::<_, String>(1)?,
                            row.get::<_, u32>(2)?,
                            row.get::<_, Vec<u8>>(3)?,
                            row.get::<_, Option<Vec<u8>>>(4)?,
                            row.get::<_, Option<Vec<u8>>>(5)?,
                            row.get::<_, Option<String>>(6)?,
                            row.get::<_, String>(7)?,
                            row.get::<_, String>(8)?,
                        ))
                    })
                    .optional()
            })
            .map_err(map_error)?;
        let row = match row {
            None => None,
            Some((user, generation, token, previous, sealed, rotated, used, expires)) => {
                let corrupt = || StoreError::unavailable(anyhow::anyhow!("malformed sessions row"));
                Some(SessionRow {
                    session: rotation.presented.session,
                    user_id: UserId::from(Uuid::parse_str(&user).map_err(|_| corrupt())?),
                    generation,
                    token_hash: TokenHash::from_slice(&token).ok_or_else(corrupt)?,
                    previous_hash: previous.as_deref().and_then(TokenHash::from_slice),
                    sealed,
                    rotated_at: rotated
                        .map(|at| parse_time("rotated_at", &at))
                        .transpose()?,
                    last_used_at: parse_time("last_used_at", &used)?,
                    expires_at: parse_time("expires_at", &expires)?,
                })
            }
        };
        outcomes.push(Rotated::Unmatched(row));
    }
    transaction.commit().map_err(map_error)?;
    Ok(outcomes)
}

/// Rows after `after`; with `keep_text`, also the JSON columns exactly as stored (for `verify`).
fn read_rows(
    connection: &Connection,
    after: i64,
    limit: usize,
    keep_text: bool,
) -> Result<Vec<ChainedRow>, StoreError> {
    read_raw(connection, after, limit)?
        .into_iter()
        .map(|row| row.parse(keep_text))
        .collect()
}

/// A row as the SQLite thread reads it, its text unparsed: parsing (JSON above all) happens on
/// the reader's side, where it can use the other core ([`parse_in_parallel`]).
struct RawRow {
    position: i64,
    stream_id: String,
    stream_version: i32,
    event_type: String,
    event_version: i32,
    payload: String,
    metadata: String,
    recorded_at: String,
    prev_hash: Option<String>,
    hash: Option<String>,
    signature: Option<String>,
}

/// Up to `limit` rows after `after`, as stored.
fn read_raw(connection: &Connection, after: i64, limit: usize) -> Result<Vec<RawRow>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    read_raw_with(connection, READ_AFTER_SQL, params![after, limit])
}

/// The rows `sql` selects, which names the events table's columns in the order of
/// [`READ_AFTER_SQL`] (by index: looking a column up by name costs a string comparison per
/// column per row).
fn read_raw_with(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RawRow>, StoreError> {
    let mut select = connection.prepare_cached(sql).map_err(map_error)?;
    let mut rows = select.query(params).map_err(map_error)?;
    let mut read = Vec::new();
    while let Some(row) = rows.next().map_err(map_error)? {
        read.push(RawRow {
            position: row.get(0).map_err(map_error)?,
            stream_id: row.get(1).map_err(map_error)?,
            stream_version: row.get(2).map_err(map_error)?,
            event_type: row.get(3).map_err(map_error)?,
            event_version: row.get(4).map_err(map_error)?,
            payload: row.get(5).map_err(map_error)?,
            metadata: row.get(6).map_err(map_error)?,
            recorded_at: row.get(7).map_err(map_error)?,
            prev_hash: row.get(8).map_err(map_error)?,
            hash: row.get(9).map_err(map_error)?,
            signature: row.get(10).map_err(map_error)?,
        });
    }
    Ok(read)
}

impl RawRow {
    /// The row's stream, for looking its key up before it is parsed (unparsable: none).
    fn stream(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.stream_id).ok()
    }

    /// Parsed as [`columns`] parses, keeping the JSON text when `keep_text`.
    fn parse(self, keep_text: bool) -> Result<ChainedRow, StoreError> {
        let position = self.position;
        let column = |column: &'static str, source: Box<dyn std::error::Error + Send + Sync>| {
            StoreError::Corrupt {
                position,
                source: DecodeError::Column { column, source },
            }
        };
        let columns = StoredColumns {
            position,
            stream_id: Uuid::parse_str(&self.stream_id)
                .map_err(|e| column("stream_id", e.into()))?,
            stream_version: self.stream_version,
            event_type: self.event_type,
            event_version: self.event_version,
            payload: serde_json::from_str(&self.payload)
                .map_err(|e| column("payload", e.into()))?,
            metadata: serde_json::from_str(&self.metadata)
                .map_err(|e| column("metadata", e.into()))?,
            recorded_at: DateTime::parse_from_rfc3339(&self.recorded_at)
                .map_err(|e| column("recorded_at", e.into()))?
                .with_timezone(&Utc),
        };
        Ok(ChainedRow {
            columns,
            prev_hash: self.prev_hash,
            hash: self.hash,
            signature: self.signature,
            stored: keep_text.then_some(StoredText {
                payload: self.payload,
                metadata: self.metadata,
            }),
        })
    }
}

/// The one place where SQLite errors become domain conflicts or outages.
fn map_error(error: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, Some(message)) = &error
        && failure.code == ErrorCode::ConstraintViolation
    {
        if message.contains(STREAM_VERSION_VIOLATION) {
            return StoreError::Conflict(Conflict::StreamVersion);
        }
        if message.contains(REGISTERED_EMAIL_INDEX) || message.contains(EMAIL_INDEX_VIOLATION) {
            return StoreError::Conflict(Conflict::EmailTaken);
        }
        if message.contains(PERSONAL_KEY_VIOLATION) {
            return StoreError::Conflict(Conflict::StreamVersion);
        }
    }
    StoreError::unavailable(error)
}
