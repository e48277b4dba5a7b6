//! The PostgreSQL `EventStore`: the production log, with its guarantees enforced by the database.
//!
//! Schema and rules live in `sql/postgres/`, applied at start-up by refinery under an advisory
//! lock, so several instances starting together migrate once.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

use chrono::{DateTime, Utc};

use super::chain::{self, ChainedRow};
use super::personal::{self, Shredder, keys_needed, sealed_streams};
use super::signed::{Link, Linked, LogSigner};
use super::{
    Conflict, EventStore, NewEvent, RecordedEvent, StoreError, StoreFuture, StoredColumns,
    link_batch,
};
use crate::domain::{SessionId, UserId};
use crate::sessions::{Rotated, Rotation, SessionRow, SessionWrite, TokenHash};

refinery::embed_migrations!("sql/postgres");

/// Key of the session-level advisory lock held while migrating ("authlog" in ASCII).
const MIGRATION_LOCK: i64 = 0x0061_7574_686c_6f67;

/// Names given in `sql/postgres`; a unique violation is mapped to a domain conflict by name here,
/// and nowhere else.
const STREAM_VERSION_CONSTRAINT: &str = "events_stream_version_key";
const REGISTERED_EMAIL_INDEX: &str = "events_registered_email_key";
const PERSONAL_KEY_CONSTRAINT: &str = "personal_keys_pkey";
const EMAIL_INDEX_CONSTRAINT: &str = "personal_keys_email_index_key";

const KEYS_SQL: &str = "SELECT user_id, wrapped_key FROM personal_keys WHERE user_id = ANY($1)";

const INSERT_KEYS_SQL: &str = "\
    INSERT INTO personal_keys (user_id, email_index, wrapped_key)
    SELECT * FROM UNNEST($1::uuid[], $2::bytea[], $3::bytea[])";

const ERASE_KEYS_SQL: &str = "DELETE FROM personal_keys WHERE user_id = ANY($1)";
/// Snapshots ([`crate::snapshot`]): an erasure deletes them all, since they hold the user.
const ERASE_SNAPSHOTS_SQL: &str = "DELETE FROM snapshots";
const SNAPSHOTS_SQL: &str = "SELECT position FROM snapshots ORDER BY position DESC";
const SNAPSHOT_SIZE_SQL: &str = "SELECT bytes FROM snapshots WHERE position = $1";
const READ_SNAPSHOT_SQL: &str = "SELECT body FROM snapshot_chunks WHERE position = $1 ORDER BY seq";
const WRITE_SNAPSHOT_SQL: &str =
    "INSERT INTO snapshots (position, bytes) VALUES ($1, $2) ON CONFLICT (position) DO NOTHING";
const WRITE_CHUNK_SQL: &str =
    "INSERT INTO snapshot_chunks (position, seq, body) VALUES ($1, $2, $3)";
/// The size of a snapshot's pieces: big enough that a round trip each costs nothing, small
/// enough that no connection grows a buffer the size of the snapshot.
const SNAPSHOT_CHUNK: usize = 4 << 20;
const ERASED_SINCE_SQL: &str = "\
    SELECT EXISTS (SELECT 1 FROM events WHERE position > $1 AND event_type = 'UserErased')";
const DROP_SNAPSHOT_SQL: &str = "DELETE FROM snapshots WHERE position = $1";
const KEEP_SNAPSHOTS_SQL: &str = "\
    DELETE FROM snapshots WHERE position NOT IN \
    (SELECT position FROM snapshots ORDER BY position DESC LIMIT $1)";
/// A snapshot is a few hundred megabytes at millions of users: more than a request's timeout.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Key of the transaction-level advisory lock every append takes ("chain" in ASCII): appends
/// from all processes are serialised, so positions commit in chain order.
const APPEND_LOCK: i64 = 0x0063_6861_696e;

const LOCK_SQL: &str = "SELECT pg_advisory_xact_lock($1)";

const LAST_POSITION_SQL: &str = "SELECT coalesce(max(position), 0) FROM events";

const HEAD_SQL: &str =
    "SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1";

/// One row, whole: an append checks a head another process wrote before chaining onto it.
const ROW_SQL: &str = "\
    SELECT position, stream_id, stream_version, event_type, event_version, payload, metadata,
           recorded_at, prev_hash, hash, signature
    FROM events WHERE position = $1";

const ROTATION_SQL: &str = "\
    SELECT position, payload FROM events WHERE event_type = 'LogKeyRotated'
    ORDER BY position DESC LIMIT 1";

const ANY_SIGNED_SQL: &str = "SELECT EXISTS (SELECT 1 FROM events WHERE signature IS NOT NULL)";

const BATCH_START_SQL: &str =
    "SELECT coalesce(max(position), 0) FROM events WHERE signature IS NOT NULL AND position < $1";

const FIRST_SIGNED_SQL: &str = "SELECT min(position) FROM events WHERE signature IS NOT NULL";

const APPEND_SQL: &str = "\
    INSERT INTO events (position, stream_id, stream_version, event_type, event_version, payload,
                        metadata, recorded_at, prev_hash, hash, signature)
    SELECT * FROM UNNEST($1::int8[], $2::uuid[], $3::int4[], $4::text[], $5::int4[],
                         $6::jsonb[], $7::jsonb[], $8::timestamptz[], $9::text[], $10::text[],
                         $11::text[])";

const START_SESSIONS_SQL: &str = "\
    INSERT INTO sessions (session_id, user_id, generation, token_hash, last_used_at, expires_at)
    SELECT session_id, user_id, 1, token_hash, started_at, expires_at
    FROM UNNEST($1::uuid[], $2::uuid[], $3::bytea[], $4::timestamptz[], $5::timestamptz[])
         AS s(session_id, user_id, token_hash, started_at, expires_at)";

const END_SESSIONS_SQL: &str = "DELETE FROM sessions WHERE session_id = ANY($1)";

/// Spends each presented token that is its session's current, live one: a conditional UPDATE,
/// so of two rotations of one token (from any processes) exactly one matches. The row lock
/// makes the second wait for the first and re-check against what it committed.
const ROTATE_SQL: &str = "\
    UPDATE sessions AS s
    SET generation = s.generation + 1, previous_hash = s.token_hash, token_hash = r.successor,
        sealed = r.sealed, rotated_at = r.now, last_used_at = r.now
    FROM UNNEST($1::uuid[], $2::int4[], $3::bytea[], $4::bytea[], $5::bytea[],
                $6::timestamptz[], $7::timestamptz[])
         AS r(session_id, generation, presented, successor, sealed, now, idle_cutoff)
    WHERE s.session_id = r.session_id AND s.generation = r.generation
      AND s.token_hash = r.presented AND s.expires_at > r.now AND s.last_used_at > r.idle_cutoff
    RETURNING s.session_id";

const SESSION_ROWS_SQL: &str = "\
    SELECT session_id, user_id, generation, token_hash, previous_hash, sealed, rotated_at,
           last_used_at, expires_at
    FROM sessions WHERE session_id = ANY($1)";

const LAST_USED_SQL: &str =
    "SELECT session_id, last_used_at FROM sessions WHERE session_id = ANY($1)";

const PRUNE_SESSIONS_SQL: &str =
    "DELETE FROM sessions WHERE expires_at <= $1 OR last_used_at <= $2";

const READ_AFTER_SQL: &str = "\
    SELECT position, stream_id, stream_version, event_type, event_version, payload, metadata,
           recorded_at, prev_hash, hash, signature
    FROM events WHERE position > $1 ORDER BY position LIMIT $2";

const READ_STREAM_SQL: &str = "\
    SELECT position, stream_id, stream_version, event_type, event_version, payload, metadata,
           recorded_at, prev_hash, hash, signature
    FROM events WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version LIMIT $3";

/// How to reach PostgreSQL.
#[derive(Clone)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/dbname`; secret because it may hold a password.
    pub url: SecretString,
    /// Connections kept open. The registry has one append in flight at a time, so a few suffice.
    pub pool_size: usize,
    /// Bound on connecting, waiting for a pooled connection, and each statement: past it a
    /// request gets 503 instead of hanging while the database is unreachable.
    pub timeout: Duration,
}

impl PostgresSettings {
    /// The registry has one append in flight at a time; the rest serve catch-up reads, readiness
    /// probes and the listener.
    pub const DEFAULT_POOL_SIZE: usize = 4;

    pub fn new(url: SecretString) -> Self {
        Self {
            url,
            pool_size: Self::DEFAULT_POOL_SIZE,
            timeout: super::DEFAULT_STORE_TIMEOUT,
        }
    }
}

pub struct PostgresEventStore {
    pool: Pool,
    /// For the listening session, which is not pooled ([`super::listen`]).
    config: tokio_postgres::Config,
    /// Bounds each statement, so a database that stops answering cannot wedge the registry.
    timeout: Duration,
    /// `user@host:port/dbname`, for log lines; never includes the password.
    description: String,
    /// The arguments of a `createdb` for this database, for the hint when it does not exist.
    createdb: String,
    /// Seals and opens personal data; `None` for an auditor without the master key, who reads
    /// `<sealed>` in its place and cannot append.
    personal: Option<Shredder>,
    /// The page after the last full page read, already asked for ([`PostgresEventStore::read_rows_ahead`]).
    prefetched: Arc<std::sync::Mutex<Option<Prefetch>>>,
}

/// A page's query sent ahead: the rows after `after`, at most `limit`.
struct Prefetch {
    after: i64,
    limit: usize,
    rows: tokio::task::JoinHandle<Result<Vec<Row>, StoreError>>,
}

impl PostgresEventStore {
    /// Builds the connection pool. Connections are opened lazily, so this does not touch the
    /// database; [`PostgresEventStore::migrate`] is the first call that does.
    pub fn connect(settings: &PostgresSettings) -> anyhow::Result<Self> {
        Self::connect_with(settings, false)
    }

    /// [`PostgresEventStore::connect`] for the auditors' commands: every transaction of its
    /// connections is read-only (`default_transaction_read_only`), so nothing is migrated or
    /// written, whatever the database user may do.
    pub fn connect_read_only(settings: &PostgresSettings) -> anyhow::Result<Self> {
        Self::connect_with(settings, true)
    }

    fn connect_with(settings: &PostgresSettings, read_only: bool) -> anyhow::Result<Self> {
        let mut config = tokio_postgres::Config::from_str(settings.url.expose_secret())
            .context("DATABASE_URL is not a valid PostgreSQL connection string")?;
        if read_only {
            let options = config.get_options().unwrap_or_default().to_owned();
            config.options(format!("{options} -c default_transaction_read_only=on").trim());
        }
        config.connect_timeout(settings.timeout);
        if config.get_application_name().is_none() {
            config.application_name("authlog");
        }
        let description = describe(&config);
        let createdb = createdb_arguments(&config);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // A closed connection is noticed here; one that dies later fails its statement,
                // which answers 503 and is then discarded.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.timeout))
            .create_timeout(Some(settings.timeout))
            .recycle_timeout(Some(settings.timeout))
            .build()
            .context("cannot build the PostgreSQL connection pool")?;
        Ok(Self {
            pool,
            config,
            timeout: settings.timeout,
            description,
            createdb,
            personal: None,
            prefetched: Arc::default(),
        })
    }

    /// Seals personal data on append and opens it on read with the master key's shredder.
    #[must_use]
    pub fn with_personal_data(mut self, shredder: Shredder) -> Self {
        self.personal = Some(shredder);
        self
    }

    /// Applies the numbered migrations in `sql/postgres/` that have not run yet.
    ///
    /// Refinery records them in `refinery_schema_history`; the advisory lock makes concurrent
    /// start-ups wait for each other instead of racing. A database that cannot be reached is
    /// [`StoreError::Unavailable`] (worth retrying); one that refuses a migration is
    /// [`StoreError::Migration`], naming the migration and the database's message.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|error| self.connect_error(error))?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(map_error)?;
        let applied = migrations::runner().run_async(&mut **client).await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        let report = applied.map_err(migration_error)?;
        unlocked.map_err(map_error)?;
        for migration in report.applied_migrations() {
            tracing::info!(migration = %migration, "applied migration");
        }
        Ok(())
    }

    /// Why connecting failed: a refusal no retry can fix (no such database, wrong credentials)
    /// says what to change; anything else is an outage.
    fn connect_error(&self, error: deadpool_postgres::PoolError) -> StoreError {
        if let deadpool_postgres::PoolError::Backend(backend) = &error
            && let Some(db) = backend.as_db_error()
        {
            let code = db.code();
            if *code == SqlState::INVALID_CATALOG_NAME {
                return StoreError::Misconfigured(format!(
                    "PostgreSQL at {} says: {}. Create it (`createdb {}`) or point \
                     DATABASE_URL at a database that exists",
                    self.description,
                    db.message(),
                    self.createdb
                ));
            }
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                return StoreError::Misconfigured(format!(
                    "PostgreSQL at {} says: {}. Check the user and password in DATABASE_URL",
                    self.description,
                    db.message()
                ));
            }
        }
        StoreError::unavailable(anyhow::anyhow!(
            "cannot connect to PostgreSQL at {}: {error}",
            self.description
        ))
    }

    /// `user@host:port/dbname`, safe to log.
    pub fn description(&self) -> &str {
        &self.description
    }

    async fn append_batch(
        &self,
        events: Vec<NewEvent>,
        sessions: Vec<SessionWrite>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let shredder = self.personal.as_ref().ok_or_else(personal::no_master_key)?;
        let mut client = self.pool.get().await.map_err(StoreError::unavailable)?;
        let transaction = client.transaction().await.map_err(map_error)?;
        // Sealed before the lock, which then covers only linking and writing. A key erased
        // meanwhile cannot be used: its UserErased took the stream version this append needs.
        let stored = stored_keys(&transaction, shredder.uncached(keys_needed(&events))).await?;
        let mut sealed = shredder.seal_batch(&events, &stored)?;
        transaction
            .execute(LOCK_SQL, &[&APPEND_LOCK])
            .await
            .map_err(map_error)?;
        let (last, head, latest) = match transaction
            .query_opt(HEAD_SQL, &[])
            .await
            .map_err(map_error)?
        {
            Some(row) => (
                row.try_get(0).map_err(map_error)?,
                row.try_get::<_, Option<String>>(1).map_err(map_error)?,
                Some(row.try_get(2).map_err(map_error)?),
            ),
            None => (0, None, None),
        };
        let head = head.unwrap_or_else(|| chain::GENESIS.to_owned());
        let signer = shredder.log_signer();
        let known = signer.known_generation((last > 0).then_some((last, head.as_str())));
        let generation = match known {
            Some(generation) => generation,
            // Another process wrote the head: read it whole and check it before chaining onto it.
            None => {
                let row = transaction
                    .query_one(ROW_SQL, &[&last])
                    .await
                    .map_err(map_error)?;
                self.check_head(&transaction, &signer, &chained_row(&row)?)
                    .await?
            }
        };
        // Taken under the lock, and never before the head's: times never go backwards in
        // position order, whichever process appends.
        let recorded_at = super::append_time(latest);
        let links = link_batch(&head, last + 1, &sealed.columns, recorded_at);
        let last_position = last + i64::try_from(links.len()).unwrap_or(i64::MAX);
        let new_head = links
            .last()
            .map(|(_, hash)| hash.clone())
            .unwrap_or_default();
        let signature = signer.sign_head(generation, last_position, &new_head);
        let next_generation =
            LogSigner::after_batch(generation, events.iter().map(|new| &new.event));

        let count = events.len();
        let mut positions = Vec::with_capacity(count);
        let mut stream_ids = Vec::with_capacity(count);
        let mut versions = Vec::with_capacity(count);
        let mut types = Vec::with_capacity(count);
        let mut event_versions = Vec::with_capacity(count);
        let mut payloads = Vec::with_capacity(count);
        let mut metadata = Vec::with_capacity(count);
        let mut prev_hashes = Vec::with_capacity(count);
        let mut hashes = Vec::with_capacity(count);
        let mut signatures = Vec::with_capacity(count);
        for ((columns, position), (prev_hash, hash)) in std::mem::take(&mut sealed.columns)
            .into_iter()
            .zip(last + 1..)
            .zip(links)
        {
            positions.push(position);
            stream_ids.push(columns.stream_id);
            versions.push(columns.stream_version);
            types.push(columns.event_type);
            event_versions.push(columns.event_version);
            payloads.push(columns.payload);
            metadata.push(columns.metadata);
            prev_hashes.push(prev_hash);
            hashes.push(hash);
            signatures.push((position == last_position).then(|| signature.clone()));
        }
        let times = vec![recorded_at; count];
        let statement = transaction
            .prepare_cached(APPEND_SQL)
            .await
            .map_err(map_error)?;
        transaction
            .execute(
                &statement,
                &[
                    &positions,
                    &stream_ids,
                    &versions,
                    &types,
                    &event_versions,
                    &payloads,
                    &metadata,
                    &times,
                    &prev_hashes,
                    &hashes,
                    &signatures,
                ],
            )
            .await
            .map_err(map_error)?;
        if !sealed.new_keys.is_empty() {
            let users: Vec<uuid::Uuid> = sealed.new_keys.iter().map(|key| key.user_id).collect();
            let indexes: Vec<Option<&[u8]>> = sealed
                .new_keys
                .iter()
                .map(|key| key.email_index.as_ref().map(|index| &index[..]))
                .collect();
            let wrapped: Vec<&[u8]> = sealed.new_keys.iter().map(|key| &key.wrapped[..]).collect();
            let statement = transaction
                .prepare_cached(INSERT_KEYS_SQL)
                .await
                .map_err(map_error)?;
            transaction
                .execute(&statement, &[&users, &indexes, &wrapped])
                .await
                .map_err(map_error)?;
        }
        if !sealed.erased.is_empty() {
            transaction
                .execute(ERASE_KEYS_SQL, &[&sealed.erased])
                .await
                .map_err(map_error)?;
            transaction
                .execute(ERASE_SNAPSHOTS_SQL, &[])
                .await
                .map_err(map_error)?;
        }
        write_sessions(&transaction, sessions).await?;
        // The batch commits whole or not at all; the advisory lock is released with it.
        transaction.commit().await.map_err(map_error)?;
        signer.remember(last_position, new_head, next_generation);
        shredder.committed(sealed);
        Ok(events
            .into_iter()
            .zip(positions)
            .map(|(new, position)| RecordedEvent {
                position,
                stream_version: new.stream_version,
                event: new.event,
                metadata: new.metadata,
                recorded_at,
            })
            .collect())
    }

    /// Checks a head another process appended ([`LogSigner::check_head`]), under the append
    /// lock, and says which generation signs next: the queries it needs, asked only as needed.
    async fn check_head(
        &self,
        transaction: &tokio_postgres::Transaction<'_>,
        signer: &LogSigner,
        head: &ChainedRow,
    ) -> Result<u32, StoreError> {
        let rotation = match transaction
            .query_opt(ROTATION_SQL, &[])
            .await
            .map_err(map_error)?
        {
            Some(row) => Some((
                row.try_get::<_, i64>(0).map_err(map_error)?,
                super::rotated_generation(
                    &row.try_get::<_, serde_json::Value>(1).map_err(map_error)?,
                ),
            )),
            None => None,
        };
        let (mut any_signed, mut batch_start) = (false, 0);
        if head.signature.is_none() {
            any_signed = transaction
                .query_one(ANY_SIGNED_SQL, &[])
                .await
                .map_err(map_error)?
                .try_get(0)
                .map_err(map_error)?;
        } else if rotation.is_some() {
            batch_start = transaction
                .query_one(BATCH_START_SQL, &[&head.columns.position])
                .await
                .map_err(map_error)?
                .try_get(0)
                .map_err(map_error)?;
        }
        signer.check_head(head, rotation, || Ok(any_signed), || Ok(batch_start))
    }

    async fn rotate_batch(&self, rotations: Vec<Rotation>) -> Result<Vec<Rotated>, StoreError> {
        if rotations.is_empty() {
            return Ok(Vec::new());
        }
        // One statement, committed on its own: single use needs only the UPDATE's own atomicity
        // (its row locks), and a transaction around it would cost two more round trips. The
        // rows of unmatched sessions are read after it, as any later statement would see them.
        let client = self.pool.get().await.map_err(StoreError::unavailable)?;
        let ids: Vec<uuid::Uuid> = rotations
            .iter()
            .map(|r| r.presented.session.as_uuid())
            .collect();
        let generations: Vec<i32> = rotations
            .iter()
            .map(|r| i32::try_from(r.presented.generation).unwrap_or(i32::MAX))
            .collect();
        let presented: Vec<&[u8]> = rotations.iter().map(|r| &r.presented.hash.0[..]).collect();
        let successors: Vec<&[u8]> = rotations.iter().map(|r| &r.successor.0[..]).collect();
        let sealed: Vec<&[u8]> = rotations.iter().map(|r| &r.sealed[..]).collect();
        let now: Vec<DateTime<Utc>> = rotations.iter().map(|r| r.now).collect();
        let cutoffs: Vec<DateTime<Utc>> = rotations.iter().map(|r| r.idle_cutoff).collect();
        let statement = client.prepare_cached(ROTATE_SQL).await.map_err(map_error)?;
        let done: HashSet<uuid::Uuid> = client
            .query(
                &statement,
                &[
                    &ids,
                    &generations,
                    &presented,
                    &successors,
                    &sealed,
                    &now,
                    &cutoffs,
                ],
            )
            .await
            .map_err(map_error)?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(map_error)?;
        let unmatched: Vec<uuid::Uuid> = ids
            .iter()
            .copied()
            .filter(|id| !done.contains(id))
            .collect();
        let mut rows = HashMap::new();
        if !unmatched.is_empty() {
            for row in client
                .query(SESSION_ROWS_SQL, &[&unmatched])
                .await
                .map_err(map_error)?
            {
                let row = session_row(&row)?;
                rows.insert(row.session, row);
            }
        }
        Ok(rotations
            .iter()
            .map(|r| {
                if done.contains(&r.presented.session.as_uuid()) {
                    Rotated::Done
                } else {
                    Rotated::Unmatched(rows.get(&r.presented.session).cloned())
                }
            })
            .collect())
    }

    async fn read_rows(&self, after: i64, limit: usize) -> Result<Vec<ChainedRow>, StoreError> {
        chained_rows(fetch_rows(self.pool.clone(), after, limit).await?).await
    }

    /// [`PostgresEventStore::read_rows`] for a reader walking the log page by page. Once a full
    /// page has arrived, the next one is asked for at once, on a task of its own, so that the
    /// database works on it while this one is decoded and folded, instead of the two taking
    /// turns; the next call takes it if it asks for that page (otherwise it is dropped).
    fn read_rows_ahead(
        &self,
        after: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ChainedRow>, StoreError>> + Send + 'static {
        let prefetched = self
            .prefetched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .filter(|prefetch| prefetch.after == after && prefetch.limit == limit);
        let (pool, timeout, slot) = (
            self.pool.clone(),
            self.timeout,
            Arc::clone(&self.prefetched),
        );
        let fetch = move |pool: Pool, after: i64| {
            tokio::spawn(async move {
                tokio::time::timeout(timeout, fetch_rows(pool, after, limit))
                    .await
                    .unwrap_or_else(|elapsed| Err(StoreError::unavailable(elapsed)))
            })
        };
        let rows = match prefetched {
            Some(prefetch) => prefetch.rows,
            None => fetch(pool.clone(), after),
        };
        async move {
            let rows = match rows.await {
                Ok(rows) => rows?,
                // A prefetch's runtime went away (another thread's reader that stopped): ask
                // again here.
                Err(_) => fetch(pool.clone(), after)
                    .await
                    .map_err(StoreError::unavailable)??,
            };
            // Only for walks page by page (a one-row read, such as a snapshot's check, is not).
            if limit >= super::READ_PAGE
                && rows.len() == limit
                && let Some(last) = rows.last()
                && let Ok(next) = last.try_get::<_, i64>(0)
            {
                let ahead = Prefetch {
                    after: next,
                    limit,
                    rows: fetch(pool, next),
                };
                *slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ahead);
            }
            chained_rows(rows).await
        }
    }

    /// Links the rows written before the chain existed (V2), once, in position order. The
    /// append-only trigger is disabled around it, inside one transaction.
    async fn link_unchained(&self) -> anyhow::Result<()> {
        let mut client = self.pool.get().await?;
        let unchained: i64 = client
            .query_one("SELECT count(*) FROM events WHERE hash IS NULL", &[])
            .await?
            .try_get(0)?;
        if unchained == 0 {
            return Ok(());
        }
        let transaction = client.transaction().await?;
        transaction.execute(LOCK_SQL, &[&APPEND_LOCK]).await?;
        transaction
            .batch_execute("ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete")
            .await?;
        let rows = transaction
            .query(READ_AFTER_SQL, &[&0_i64, &i64::MAX])
            .await?;
        let mut prev = chain::GENESIS.to_owned();
        for row in &rows {
            let row = chained_row(row)?;
            let hash = chain::hash_row(&prev, &row.columns);
            transaction
                .execute(
                    "UPDATE events SET prev_hash = $1, hash = $2 WHERE position = $3",
                    &[&prev, &hash, &row.columns.position],
                )
                .await?;
            prev = hash;
        }
        transaction
            .batch_execute("ALTER TABLE events ENABLE TRIGGER events_no_update_or_delete")
            .await?;
        transaction.commit().await?;
        tracing::info!(
            events = rows.len(),
            "linked the events written before the hash chain"
        );
        Ok(())
    }

    /// Decodes rows read from the log, opening their sealed values with the keys stored now
    /// (read after the rows, so every key a row needs is there unless its user was erased
    /// since: then the row reads as erased, which by then it is).
    async fn open_rows(&self, rows: Vec<StoredColumns>) -> Result<Vec<RecordedEvent>, StoreError> {
        let Some(shredder) = &self.personal else {
            return personal::open_rows_sealed(rows);
        };
        let streams = shredder.uncached(sealed_streams(&rows));
        let keys = if streams.is_empty() {
            HashMap::new()
        } else {
            let client = self.pool.get().await.map_err(StoreError::unavailable)?;
            stored_keys(&client, streams).await?
        };
        shredder.open_rows(rows, &keys)
    }

    async fn bounded<T>(
        &self,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, operation)
            .await
            .unwrap_or_else(|elapsed| Err(StoreError::unavailable(elapsed)))
    }
}

impl EventStore for PostgresEventStore {
    fn append_with(
        &self,
        events: Vec<NewEvent>,
        sessions: Vec<SessionWrite>,
    ) -> StoreFuture<'_, Vec<RecordedEvent>> {
        Box::pin(self.bounded(self.append_batch(events, sessions)))
    }

    fn rotate(&self, rotations: Vec<Rotation>) -> StoreFuture<'_, Vec<Rotated>> {
        Box::pin(self.bounded(self.rotate_batch(rotations)))
    }

    fn last_used(
        &self,
        sessions: Vec<SessionId>,
    ) -> StoreFuture<'_, Vec<(SessionId, DateTime<Utc>)>> {
        Box::pin(self.bounded(async move {
            let ids: Vec<uuid::Uuid> = sessions.iter().map(SessionId::as_uuid).collect();
            let client = self.pool.get().await.map_err(StoreError::unavailable)?;
            let rows = client
                .query(LAST_USED_SQL, &[&ids])
                .await
                .map_err(map_error)?;
            rows.iter()
                .map(|row| {
                    let id: uuid::Uuid = row.try_get(0).map_err(map_error)?;
                    Ok((SessionId::from(id), row.try_get(1).map_err(map_error)?))
                })
                .collect()
        }))
    }

    fn prune_sessions(
        &self,
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreFuture<'_, u64> {
        Box::pin(self.bounded(async move {
            let client = self.pool.get().await.map_err(StoreError::unavailable)?;
            client
                .execute(PRUNE_SESSIONS_SQL, &[&now, &idle_cutoff])
                .await
                .map_err(map_error)
        }))
    }

    fn read_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<RecordedEvent>> {
        Box::pin(self.bounded(async move {
            let rows = self.read_rows(after, limit).await?;
            self.open_rows(rows.into_iter().map(|row| row.columns).collect())
                .await
        }))
    }

    fn read_rows_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<ChainedRow>> {
        Box::pin(self.read_rows_ahead(after, limit))
    }

    fn read_linked_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<Linked>> {
        let read = self.read_rows_ahead(after, limit);
        Box::pin(self.bounded(async move {
            let rows = read.await?;
            let streams = personal::sealed_streams_of(rows.iter().map(|row| &row.columns));
            let keys = match &self.personal {
                Some(shredder) => {
                    let uncached = shredder.uncached(streams.clone());
                    if uncached.is_empty() {
                        HashMap::new()
                    } else {
                        let client = self.pool.get().await.map_err(StoreError::unavailable)?;
                        stored_keys(&client, uncached).await?
                    }
                }
                None => HashMap::new(),
            };
            Link::open_in_parallel(rows, Ok, streams, self.personal.clone().map(Arc::new), keys)
                .await
        }))
    }

    fn first_signed(&self) -> StoreFuture<'_, Option<i64>> {
        Box::pin(self.bounded(async move {
            let client = self.pool.get().await.map_err(StoreError::unavailable)?;
            client
                .query_one(FIRST_SIGNED_SQL, &[])
                .await
                .map_err(map_error)?
                .try_get(0)
                .map_err(map_error)
        }))
    }

    fn log_signer(&self) -> Option<Arc<LogSigner>> {
        self.personal.as_ref().map(|shredder| shredder.log_signer())
    }

    fn read_stream(
        &self,
        stream_id: uuid::Uuid,
        after_version: i32,
        limit: usize,
    ) -> StoreFuture<'_, Vec<RecordedEvent>> {
        Box::pin(self.bounded(async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let client = self.pool.get().await.map_err(StoreError::unavailable)?;
            let statement = client
                .prepare_cached(READ_STREAM_SQL)
                .await
                .map_err(map_error)?;
            let rows = client
                .query(&statement, &[&stream_id, &after_version, &limit])
                .await
                .map_err(map_error)?;
            let rows = rows
                .iter()
                .map(|row| Ok(chained_row(row)?.columns))
                .collect::<Result<Vec<_>, StoreError>>()?;
            self.open_rows(rows).await
        }))
    }

    fn snapshots(&self) -> StoreFuture<'_, Vec<i64>> {
        Box::pin(self.bounded(async move {
            let client = self.pool.get().await.map_err(StoreError::unavailable)?;
            let rows = client.query(SNAPSHOTS_SQL, &[]).await.map_err(map_error)?;
            rows.iter()
                .map(|row| row.try_get(0).map_err(map_error))
                .collect()
        }))
    }

    /// Read in one repeatable-read transaction, piece by piece, into one buffer of the size
    /// recorded.
    fn read_snapshot(&self, position: i64) -> StoreFuture<'_, Option<Vec<u8>>> {
        Box::pin(snapshot_bounded(async move {
            let mut client = self.pool.get().await.map_err(StoreError::unavailable)?;
            let transaction = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(map_error)?;
            let Some(size) = transaction
                .query_opt(SNAPSHOT_SIZE_SQL, &[&position])
                .await
                .map_err(map_error)?
            else {
                return Ok(None);
            };
            let size: i64 = size.try_get(0).map_err(map_error)?;
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            let chunks = transaction
                .query_raw(
                    READ_SNAPSHOT_SQL,
                    [&position as &(dyn tokio_postgres::types::ToSql + Sync)],
                )
                .await
                .map_err(map_error)?;
            let mut chunks = std::pin::pin!(chunks);
            while let Some(row) = futures_util::StreamExt::next(&mut chunks).await {
                let row = row.map_err(map_error)?;
                let chunk: &[u8] = row.try_get(0).map_err(map_error)?;
                bytes.extend_from_slice(chunk);
            }
            transaction.commit().await.map_err(map_error)?;
            Ok(Some(bytes))
        }))
    }

    /// Inserted first, then checked under the append lock against erasures appended after its
    /// position: an erasure that committed before the check is seen by it (and the snapshot
    /// dropped), one after it deletes the snapshot itself.
    fn write_snapshot(&self, position: i64, bytes: Vec<u8>) -> StoreFuture<'_, bool> {
        Box::pin(snapshot_bounded(async move {
            let mut client = self.pool.get().await.map_err(StoreError::unavailable)?;
            let transaction = client.transaction().await.map_err(map_error)?;
            let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
            let inserted = transaction
                .execute(WRITE_SNAPSHOT_SQL, &[&position, &size])
                .await
                .map_err(map_error)?;
            if inserted == 1 {
                let statement = transaction
                    .prepare(WRITE_CHUNK_SQL)
                    .await
                    .map_err(map_error)?;
                for (seq, chunk) in bytes.chunks(SNAPSHOT_CHUNK).enumerate() {
                    let seq = i32::try_from(seq).unwrap_or(i32::MAX);
                    transaction
                        .execute(&statement, &[&position, &seq, &chunk])
                        .await
                        .map_err(map_error)?;
                }
            }
            transaction.commit().await.map_err(map_error)?;
            drop(bytes);
            let transaction = client.transaction().await.map_err(map_error)?;
            transaction
                .execute(LOCK_SQL, &[&APPEND_LOCK])
                .await
                .map_err(map_error)?;
            let erased: bool = transaction
                .query_one(ERASED_SINCE_SQL, &[&position])
                .await
                .and_then(|row| row.try_get(0))
                .map_err(map_error)?;
            if erased {
                transaction
                    .execute(DROP_SNAPSHOT_SQL, &[&position])
                    .await
                    .map_err(map_error)?;
            } else {
                let keep = crate::snapshot::KEEP as i64;
                transaction
                    .execute(KEEP_SNAPSHOTS_SQL, &[&keep])
                    .await
                    .map_err(map_error)?;
            }
            transaction.commit().await.map_err(map_error)?;
            Ok(!erased)
        }))
    }

    fn shared(&self) -> bool {
        true
    }

    fn watch(&self) -> Option<super::ChangeFeed> {
        Some(super::listen::feed(self.config.clone()))
    }

    fn head(&self) -> StoreFuture<'_, Option<i64>> {
        Box::pin(self.bounded(async move {
            let client = self.pool.get().await.map_err(StoreError::unavailable)?;
            let row = client
                .query_one(LAST_POSITION_SQL, &[])
                .await
                .map_err(map_error)?;
            Ok(Some(row.try_get(0).map_err(map_error)?))
        }))
    }

    fn observe(&self) {
        let status = self.pool.status();
        let pool = &crate::metrics::METRICS.db_pool;
        for (state, value) in [
            ("max", status.max_size),
            ("open", status.size),
            ("idle", status.available),
            ("waiting", status.waiting),
        ] {
            pool.with_label_values(&[state])
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    /// Migrates, then links rows written before the hash chain. An unreachable database is
    /// `Unavailable` (the registry retries); a refused migration is `Migration` (it stops).
    fn prepare(&self) -> StoreFuture<'_, ()> {
        Box::pin(async {
            self.migrate().await?;
            self.link_unchained()
                .await
                .map_err(|error| StoreError::unavailable(error.into_boxed_dyn_error()))
        })
    }
}

async fn snapshot_bounded<T>(
    operation: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(SNAPSHOT_TIMEOUT, operation)
        .await
        .unwrap_or_else(|elapsed| Err(StoreError::unavailable(elapsed)))
}

/// The one place where PostgreSQL errors become domain conflicts (SQLSTATE 23505) or outages.
fn map_error(error: tokio_postgres::Error) -> StoreError {
    if let Some(db_error) = error.as_db_error()
        && db_error.code() == &SqlState::UNIQUE_VIOLATION
    {
        match db_error.constraint() {
            Some(STREAM_VERSION_CONSTRAINT) => {
                return StoreError::Conflict(Conflict::StreamVersion);
            }
            Some(REGISTERED_EMAIL_INDEX | EMAIL_INDEX_CONSTRAINT) => {
                return StoreError::Conflict(Conflict::EmailTaken);
            }
            // Two appends both making a key for a user registered before V5: like two
            // writers of one stream version.
            Some(PERSONAL_KEY_CONSTRAINT) => return StoreError::Conflict(Conflict::StreamVersion),
            _ => {}
        }
    }
    StoreError::unavailable(error)
}

/// Tells a database that could not be reached or went away (retry) from one that refused a
/// migration, or whose recorded migrations disagree with this build (stop).
fn migration_error(error: refinery::Error) -> StoreError {
    use refinery::error::Kind;
    let Kind::Connection(step, source) = error.kind() else {
        return StoreError::Migration {
            what: error.to_string(),
        };
    };
    let database = source
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::as_db_error);
    match database {
        Some(db) if !transient(db.code()) => StoreError::Migration {
            what: format!(
                "{step}: {}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            ),
        },
        _ => StoreError::unavailable(error),
    }
}

/// SQLSTATE classes that say "not now" rather than "not this": connection trouble (08), a
/// conflict to retry (40), insufficient resources (53), operator intervention such as a
/// shutdown or a cancelled statement (57), a system error (58).
fn transient(code: &SqlState) -> bool {
    matches!(code.code().get(..2), Some("08" | "40" | "53" | "57" | "58"))
}

/// The wrapped keys the store holds for `users`.
async fn stored_keys(
    client: &impl deadpool_postgres::GenericClient,
    users: Vec<uuid::Uuid>,
) -> Result<HashMap<uuid::Uuid, Vec<u8>>, StoreError> {
    if users.is_empty() {
        return Ok(HashMap::new());
    }
    let statement = client.prepare_cached(KEYS_SQL).await.map_err(map_error)?;
    client
        .query(&statement, &[&users])
        .await
        .map_err(map_error)?
        .iter()
        .map(|row| {
            Ok((
                row.try_get(0).map_err(map_error)?,
                row.try_get(1).map_err(map_error)?,
            ))
        })
        .collect()
}

/// Inserts the rows of sessions that started and deletes those of sessions that ended, inside
/// the append's transaction.
async fn write_sessions(
    transaction: &tokio_postgres::Transaction<'_>,
    sessions: Vec<SessionWrite>,
) -> Result<(), StoreError> {
    let (mut ids, mut users, mut hashes, mut started, mut expires) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut ended = Vec::new();
    for write in sessions {
        match write {
            SessionWrite::Start {
                session,
                user_id,
                token_hash,
                started_at,
                expires_at,
            } => {
                ids.push(session.as_uuid());
                users.push(user_id.as_uuid());
                hashes.push(token_hash.0.to_vec());
                started.push(started_at);
                expires.push(expires_at);
            }
            SessionWrite::End(session) => ended.push(session.as_uuid()),
        }
    }
    if !ids.is_empty() {
        transaction
            .execute(
                START_SESSIONS_SQL,
                &[&ids, &users, &hashes, &started, &expires],
            )
            .await
            .map_err(map_error)?;
    }
    if !ended.is_empty() {
        transaction
            .execute(END_SESSIONS_SQL, &[&ended])
            .await
            .map_err(map_error)?;
    }
    Ok(())
}

fn session_row(row: &Row) -> Result<SessionRow, StoreError> {
    let hash = |column: &'static str,
                bytes: Option<Vec<u8>>|
     -> Result<Option<TokenHash>, StoreError> {
        bytes
            .map(|bytes| {
                TokenHash::from_slice(&bytes).ok_or_else(|| {
                    StoreError::unavailable(anyhow::anyhow!("sessions.{column} is not 32 bytes"))
                })
            })
            .transpose()
    };
    let session: uuid::Uuid = row.try_get("session_id").map_err(map_error)?;
    let user: uuid::Uuid = row.try_get("user_id").map_err(map_error)?;
    let generation: i32 = row.try_get("generation").map_err(map_error)?;
    Ok(SessionRow {
        session: SessionId::from(session),
        user_id: UserId::from(user),
        generation: u32::try_from(generation).unwrap_or(0),
        token_hash: hash(
            "token_hash",
            Some(row.try_get("token_hash").map_err(map_error)?),
        )?
        .unwrap_or(TokenHash([0; 32])),
        previous_hash: hash(
            "previous_hash",
            row.try_get("previous_hash").map_err(map_error)?,
        )?,
        sealed: row.try_get("sealed").map_err(map_error)?,
        rotated_at: row.try_get("rotated_at").map_err(map_error)?,
        last_used_at: row.try_get("last_used_at").map_err(map_error)?,
        expires_at: row.try_get("expires_at").map_err(map_error)?,
    })
}

/// A row of a SELECT naming the events table's columns in the order of [`READ_AFTER_SQL`]
/// (every one here does), read by index: by name costs a string comparison per column per row.
fn chained_row(row: &Row) -> Result<ChainedRow, StoreError> {
    Ok(ChainedRow {
        columns: StoredColumns {
            position: row.try_get(0).map_err(map_error)?,
            stream_id: row.try_get(1).map_err(map_error)?,
            stream_version: row.try_get(2).map_err(map_error)?,
            event_type: row.try_get(3).map_err(map_error)?,
            event_version: row.try_get(4).map_err(map_error)?,
            payload: row.try_get(5).map_err(map_error)?,
            metadata: row.try_get(6).map_err(map_error)?,
            recorded_at: row.try_get(7).map_err(map_error)?,
        },
        prev_hash: row.try_get(8).map_err(map_error)?,
        hash: row.try_get(9).map_err(map_error)?,
        signature: row.try_get(10).map_err(map_error)?,
        stored: None,
    })
}

/// Up to `limit` rows after `after`, undecoded.
async fn fetch_rows(pool: Pool, after: i64, limit: usize) -> Result<Vec<Row>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let client = pool.get().await.map_err(StoreError::unavailable)?;
    let statement = client
        .prepare_cached(READ_AFTER_SQL)
        .await
        .map_err(map_error)?;
    client
        .query(&statement, &[&after, &limit])
        .await
        .map_err(map_error)
}

/// [`chained_row`] for a page ([`super::pager::in_halves`]): decoding `jsonb` into values is
/// most of a read's work on this side.
async fn chained_rows(rows: Vec<Row>) -> Result<Vec<ChainedRow>, StoreError> {
    super::pager::in_halves(rows, |rows| rows.iter().map(chained_row).collect()).await
}

/// `-h HOST -p PORT -U USER NAME`, from the configuration.
fn createdb_arguments(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let mut arguments = Vec::new();
    match config.get_hosts().first() {
        Some(Host::Tcp(host)) => arguments.push(format!("-h {host}")),
        Some(Host::Unix(path)) => arguments.push(format!("-h {}", path.display())),
        None => {}
    }
    if let Some(port) = config.get_ports().first() {
        arguments.push(format!("-p {port}"));
    }
    if let Some(user) = config.get_user() {
        arguments.push(format!("-U {user}"));
    }
    arguments.push(
        config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("authlog")
            .to_owned(),
    );
    arguments.join(" ")
}

fn describe(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("?");
    let dbname = config.get_dbname().unwrap_or(user);
    format!("{user}@{host}:{port}/{dbname}")
}
