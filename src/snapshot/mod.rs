//! Snapshots: the folded state written now and then beside the log, so that a start replays
//! only the log's tail. A cache, never the truth: each one names the position it covers and
//! the chain hash there, and is used only while the log still has that hash at that position.
//! `authlog replay` and `verify` never read one.
//!
//! A snapshot is built by folding the log (from the newest snapshot that matches, then its
//! tail), never by copying a running registry's state: it is a fold of a prefix of the log
//! whatever is appended meanwhile, and the registry never waits for it.
//!
//! Layout: a clear header (magic, format, position, hash, log-key generation, time), then the
//! body sealed with XChaCha20-Poly1305 under a key the master key derives, the header bound as
//! associated data. Personal data in a snapshot is as safe as in the log: only the master key
//! opens it, and a truncated or altered file does not open. An erasure deletes every snapshot
//! (the stores do it as they append the `UserErased`), since an older one still holds the
//! erased user's data.

pub mod codec;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;

use chrono::{DateTime, Utc};

use crate::actors::{GetLogHead, UserRegistry};
use crate::events::signed::{Guard, LogSigner};
use crate::events::{EventStore, StoreError};
use crate::state::State;
use crate::throttle::ThrottlePolicy;
use crate::vault::{Sealer, labels};
use codec::{Malformed, Reader, Writer};

/// The body's layout version. Any change to what a part of the state writes bumps it; a
/// snapshot of another version is ignored and rebuilt from the log.
pub const FORMAT: u32 = 1;
const MAGIC: &[u8; 16] = b"authlog snapshot";
/// Snapshots kept beside the log: the newest, and the one before in case the newest no longer
/// matches the log.
pub const KEEP: usize = 2;

/// What a snapshot says about itself, readable without the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub format: u32,
    /// The last position folded in.
    pub position: i64,
    /// The chain hash of the row at `position`.
    pub hash: String,
    /// The log-signing key generation that signs the rows after `position`.
    pub generation: u32,
    pub written_at: DateTime<Utc>,
    pub users: u64,
}

/// Why a snapshot was not used. Each is a warning at start-up; the log is replayed instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    NotASnapshot,
    /// Written by another version of authlog.
    Format(u32),
    /// The sealed body does not open: the file is truncated or altered, or another master key
    /// wrote it.
    DoesNotOpen,
    Malformed(Malformed),
    /// The log has no row at the snapshot's position (it was cut back, or is another log).
    NoSuchRow {
        position: i64,
    },
    /// The log's row at the position has another hash: the log is not the one folded.
    OtherHash {
        position: i64,
    },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::NotASnapshot => f.write_str("it is not an authlog snapshot"),
            Refused::Format(format) => write!(
                f,
                "it has format {format}, and this version reads format {FORMAT}"
            ),
            Refused::DoesNotOpen => f.write_str(
                "its sealed body does not open: the file is truncated or altered, or another \
                 master key wrote it",
            ),
            Refused::Malformed(malformed) => write!(f, "{malformed}"),
            Refused::NoSuchRow { position } => write!(
                f,
                "the log has no row at its position {position}: the log was cut back, or it \
                 is another log"
            ),
            Refused::OtherHash { position } => write!(
                f,
                "the log's row at its position {position} has another chain hash: the log is \
                 not the one it folded"
            ),
        }
    }
}

impl From<Malformed> for Refused {
    fn from(malformed: Malformed) -> Self {
        Refused::Malformed(malformed)
    }
}

fn sealer(signer: &LogSigner) -> Sealer {
    signer.master().sealer(labels::SNAPSHOT)
}

fn write_header(header: &Header) -> Vec<u8> {
    let mut w = Writer::with_capacity(128);
    w.raw(MAGIC);
    w.u32(header.format);
    w.i64(header.position);
    w.str(&header.hash);
    w.u32(header.generation);
    w.time(header.written_at);
    w.u64(header.users);
    let mut bytes = w.into_bytes();
    // Prefixed with its own length, so the body's start is known before the rest is parsed.
    let mut framed = Vec::with_capacity(bytes.len() + 4);
    framed.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    framed.append(&mut bytes);
    framed
}

/// The header of `bytes`, and where the sealed body starts.
pub fn header(bytes: &[u8]) -> Result<(Header, usize), Refused> {
    let mut r = Reader::new(bytes);
    let length = r.u32().map_err(|_| Refused::NotASnapshot)? as usize;
    let framed = r.raw(length).map_err(|_| Refused::NotASnapshot)?;
    let mut r = Reader::new(framed);
    if r.raw(MAGIC.len()).ok() != Some(MAGIC.as_slice()) {
        return Err(Refused::NotASnapshot);
    }
    let format = r.u32()?;
    if format != FORMAT {
        return Err(Refused::Format(format));
    }
    let header = Header {
        format,
        position: r.i64()?,
        hash: r.str()?.to_owned(),
        generation: r.u32()?,
        written_at: r.time()?,
        users: r.u64()?,
    };
    Ok((header, 4 + length))
}

/// `state` as a snapshot, sealed under the key `signer`'s master key derives. `None` if the
/// state has no chain hash to name (only after this process's own append, which a fold never
/// makes).
pub fn encode(state: &State, signer: &LogSigner, written_at: DateTime<Utc>) -> Option<Vec<u8>> {
    let (position, hash) = state.guard().head();
    let header = Header {
        format: FORMAT,
        position,
        hash: hash?.to_owned(),
        generation: state.guard().generation(),
        written_at,
        users: state.directory().len() as u64,
    };
    let mut body = Writer::with_capacity(state.directory().len() * 160 + 4096);
    state.write_snapshot(&mut body);
    let body = zeroize::Zeroizing::new(body.into_bytes());
    let mut bytes = write_header(&header);
    let sealed = sealer(signer).seal(&body, &bytes).ok()?;
    bytes.extend_from_slice(&sealed);
    Some(bytes)
}

/// The state a snapshot holds, checked against nothing but its own seal: the caller checks its
/// header against the log. The guard resumes after the snapshot's position.
pub fn decode(
    bytes: &[u8],
    signer: &Arc<LogSigner>,
    policy: ThrottlePolicy,
    first_signed: Option<i64>,
) -> Result<(Header, State), Refused> {
    decode_in_place(&mut bytes.to_vec(), signer, policy, first_signed)
}

/// [`decode`], opening the sealed body where it lies (a start touches no second copy of a
/// snapshot of a few hundred megabytes); the plaintext is wiped before returning.
pub fn decode_in_place(
    bytes: &mut [u8],
    signer: &Arc<LogSigner>,
    policy: ThrottlePolicy,
    first_signed: Option<i64>,
) -> Result<(Header, State), Refused> {
    let (header, start) = header(bytes)?;
    let (clear, sealed) = bytes.split_at_mut(start);
    let body = sealer(signer)
        .open_in_place(sealed, clear)
        .ok_or(Refused::DoesNotOpen)?;
    let mut r = Reader::new(body);
    let state = State::read_snapshot(&mut r, policy);
    let ended = r.is_empty();
    zeroize::Zeroize::zeroize(sealed);
    let mut state = state?;
    if !ended || state.position() != header.position {
        return Err(Refused::Malformed(Malformed(
            "its body does not end where it should",
        )));
    }
    state.set_guard(Guard::resume(
        Some(signer.trust()),
        first_signed,
        header.position,
        header.hash.clone(),
        header.generation,
    ));
    Ok((header, state))
}

/// How a start got its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// From the snapshot at `position`, then `tail` events.
    Snapshot { position: i64, tail: u64 },
    /// The whole log: there was no snapshot, or none that matched.
    Replay,
}

/// The state a start serves: the newest snapshot that matches the log, then the log's tail
/// (each refused snapshot is a warning naming why), or a full replay.
pub async fn restore(
    store: &dyn EventStore,
    policy: ThrottlePolicy,
) -> Result<(State, Restored), StoreError> {
    if let Some(signer) = store.log_signer() {
        let first_signed = store.first_signed().await?;
        for position in store.snapshots().await? {
            let started = Instant::now();
            let Some(mut bytes) = store.read_snapshot(position).await? else {
                continue;
            };
            let outcome = match decode_in_place(&mut bytes, &signer, policy, first_signed) {
                Ok((header, state)) => matches_log(store, &header).await?.map(|()| state),
                Err(refused) => Err(refused),
            };
            drop(bytes);
            match outcome {
                Ok(state) => {
                    let loaded = started.elapsed();
                    let before = state.position();
                    let state = state.catch_up(store).await?;
                    let tail = u64::try_from(state.position() - before).unwrap_or(0);
                    tracing::info!(
                        snapshot = position,
                        users = state.directory().len(),
                        tail,
                        loaded_ms = loaded.as_millis() as u64,
                        "started from a snapshot, then the log's tail"
                    );
                    return Ok((state, Restored::Snapshot { position, tail }));
                }
                Err(refused) => tracing::warn!(
                    snapshot = position,
                    "ignoring the snapshot at position {position}: {refused}; replaying the log"
                ),
            }
        }
    }
    Ok((State::replay(store, policy).await?, Restored::Replay))
}

/// Whether the log still has the header's hash at the header's position.
async fn matches_log(
    store: &dyn EventStore,
    header: &Header,
) -> Result<Result<(), Refused>, StoreError> {
    let position = header.position;
    if position == 0 {
        return Ok(Ok(()));
    }
    let rows = store.read_rows_after(position - 1, 1).await?;
    Ok(match rows.first() {
        Some(row) if row.columns.position == position => {
            if row.hash.as_deref() == Some(header.hash.as_str()) {
                Ok(())
            } else {
                Err(Refused::OtherHash { position })
            }
        }
        _ => Err(Refused::NoSuchRow { position }),
    })
}

/// What [`take`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub position: i64,
    pub users: u64,
    pub bytes: u64,
    /// Whether the store kept it: not if a user was erased after its position meanwhile.
    pub kept: bool,
    pub restored: Restored,
}

/// Folds the log (from the newest matching snapshot) and writes the result as a new snapshot,
/// unless it would cover nothing new. Needs the master key; `Ok(None)` without it.
pub async fn take(store: &dyn EventStore) -> Result<Option<Taken>, StoreError> {
    let Some(signer) = store.log_signer() else {
        return Ok(None);
    };
    let (state, restored) = restore(store, ThrottlePolicy::default()).await?;
    if matches!(restored, Restored::Snapshot { tail: 0, .. }) {
        return Ok(None);
    }
    let users = state.directory().len() as u64;
    let position = state.position();
    if position == 0 {
        return Ok(None);
    }
    let Some(bytes) = encode(&state, &signer, Utc::now()) else {
        return Ok(None);
    };
    drop(state);
    let size = bytes.len() as u64;
    let kept = store.write_snapshot(position, bytes).await?;
    Ok(Some(Taken {
        position,
        users,
        bytes: size,
        kept,
        restored,
    }))
}

/// When a server writes snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// After this many events past the newest snapshot (0: never by count).
    pub every_events: i64,
    /// After this long since the last one, if the log moved (zero: never by time).
    pub every: Duration,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self {
            every_events: 100_000,
            every: Duration::from_secs(3600),
        }
    }
}

impl SnapshotPolicy {
    pub fn never(&self) -> bool {
        self.every_events <= 0 && self.every.is_zero()
    }
}

/// Writes snapshots as the policy says, each time it is ticked. Runs on a thread of its own
/// (its fold takes seconds at a million users), beside the registry, never in its way.
pub struct Snapshotter {
    registry: Addr<UserRegistry>,
    store: Arc<dyn EventStore>,
    policy: SnapshotPolicy,
    last: Instant,
}

impl Snapshotter {
    pub fn new(
        registry: Addr<UserRegistry>,
        store: Arc<dyn EventStore>,
        policy: SnapshotPolicy,
    ) -> Self {
        Self {
            registry,
            store,
            policy,
            last: Instant::now(),
        }
    }

    /// Writes one if due, and says what it wrote.
    pub async fn tick(&mut self) -> Option<Taken> {
        let Ok(Some((head, _))) = self.registry.send(GetLogHead).await else {
            return None;
        };
        let newest = match self.store.snapshots().await {
            Ok(positions) => positions.first().copied().unwrap_or(0),
            Err(_) => return None,
        };
        let moved = head - newest;
        let due = moved > 0
            && ((self.policy.every_events > 0 && moved >= self.policy.every_events)
                || (!self.policy.every.is_zero() && self.last.elapsed() >= self.policy.every));
        if !due {
            return None;
        }
        self.last = Instant::now();
        let started = Instant::now();
        match take(self.store.as_ref()).await {
            Ok(Some(taken)) => {
                tracing::info!(
                    position = taken.position,
                    users = taken.users,
                    bytes = taken.bytes,
                    kept = taken.kept,
                    seconds = started.elapsed().as_secs_f64(),
                    "wrote a snapshot"
                );
                Some(taken)
            }
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(error = %crate::diagnostics::error_chain(&error), "no snapshot written");
                None
            }
        }
    }

    /// Ticks every `period` on a thread of its own until the returned arbiter is stopped.
    pub fn start(mut self, period: Duration) -> actix::Arbiter {
        let arbiter = actix::Arbiter::new();
        arbiter.spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                self.tick().await;
            }
        });
        arbiter
    }
}

#[cfg(test)]
mod tests;
