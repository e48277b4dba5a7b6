//! Checkpoints anchored outside the database: every so many events or minutes, and at shutdown,
//! the instance signs the head it has applied (position, hash, time) and writes it where the
//! database's owner cannot reach, so that `authlog verify --checkpoints` can later prove the log
//! still holds every anchored head unchanged: a truncated tail, or a log rewritten before the
//! last checkpoint, is caught even if the whole chain was recomputed.

use std::fs::OpenOptions;
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;

use crate::actors::{GetLogHead, UserRegistry};
use crate::events::chain::hash_row;
use crate::events::signed::{Checkpoint, LogSigner};
use crate::events::{EventStore, StoreError};

/// Where checkpoints go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// A log line (`checkpoint=` and the JSON), for the log shipper to carry away.
    Log,
    /// One JSON line on standard output, nothing else on it.
    Stdout,
    /// Appended to this file, one JSON line each, flushed to disk: put it on a volume the
    /// database's owner cannot write.
    File(PathBuf),
}

impl Sink {
    /// `-` is standard output; anything else a file.
    pub fn parse(raw: &str) -> Self {
        match raw {
            "-" => Sink::Stdout,
            path => Sink::File(PathBuf::from(path)),
        }
    }
}

/// When a running instance writes checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointPolicy {
    pub sink: Sink,
    /// After this many events since the last one (0: never by count).
    pub every_events: i64,
    /// After this long, if the log moved (zero: never by time).
    pub every: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            sink: Sink::Log,
            every_events: 10_000,
            every: Duration::from_secs(600),
        }
    }
}

/// Why no checkpoint was made.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the log has no event at position {0}")]
    Missing(i64),
    #[error("the row at position {0} is not a signed head this key vouches for")]
    NotSigned(i64),
    #[error("cannot write the checkpoint")]
    Write(#[from] std::io::Error),
}

/// A checkpoint of the head at `position`, which ends a signed batch, signed by generation
/// `generation`'s key. The row is read back and checked first: its hash matches its contents,
/// and its signature is this key's (or the one before, if that batch rotated the key), so a
/// checkpoint never anchors a row someone else wrote.
pub async fn make(
    store: &dyn EventStore,
    signer: &Arc<LogSigner>,
    position: i64,
    generation: u32,
) -> Result<Checkpoint, CheckpointError> {
    let row = store
        .read_rows_after(position - 1, 1)
        .await?
        .into_iter()
        .find(|row| row.columns.position == position)
        .ok_or(CheckpointError::Missing(position))?;
    let (Some(prev), Some(hash), Some(signature)) = (&row.prev_hash, &row.hash, &row.signature)
    else {
        return Err(CheckpointError::NotSigned(position));
    };
    let trust = signer.trust();
    let vouched = hash_row(prev, &row.columns) == *hash
        && [generation, generation.saturating_sub(1)]
            .into_iter()
            .any(|by| trust.verifies(by, position, hash, signature));
    if !vouched {
        return Err(CheckpointError::NotSigned(position));
    }
    Ok(signer.checkpoint(generation, position, hash))
}

/// Writes `checkpoint` to `sink`.
pub fn write(sink: &Sink, checkpoint: &Checkpoint) -> std::io::Result<()> {
    let line = serde_json::to_string(checkpoint).map_err(std::io::Error::other)?;
    match sink {
        Sink::Log => {
            tracing::info!(checkpoint = %line, position = checkpoint.position, "log checkpoint");
            Ok(())
        }
        Sink::Stdout => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
            out.flush()
        }
        Sink::File(path) => {
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)?;
            writeln!(file, "{line}")?;
            file.sync_data()
        }
    }
}

/// The checkpoints in a file, in order: JSON lines as [`Sink::File`] writes them, or the log
/// lines [`Sink::Log`] writes, as text (`checkpoint={...}`) or as JSON (`"fields":
/// {"checkpoint": "{...}"}`). Other lines are skipped.
pub fn read(path: &Path) -> std::io::Result<Vec<Checkpoint>> {
    let file = std::fs::File::open(path)?;
    let mut found = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        let logged = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|value| value["fields"]["checkpoint"].as_str().map(str::to_owned));
        let json = match (&logged, line.split_once("checkpoint=")) {
            (Some(logged), _) => logged.as_str(),
            // A checkpoint's JSON holds no nested object: it ends at the first `}`.
            (None, Some((_, rest))) => rest.split_inclusive('}').next().unwrap_or(rest),
            (None, None) => line.as_str(),
        };
        if let Ok(checkpoint) = serde_json::from_str::<Checkpoint>(json) {
            found.push(checkpoint);
        }
    }
    Ok(found)
}

/// Writes checkpoints of what the registry has applied, as the policy says, each time it is
/// ticked.
pub struct Checkpointer {
    registry: Addr<UserRegistry>,
    store: Arc<dyn EventStore>,
    signer: Arc<LogSigner>,
    policy: CheckpointPolicy,
    last: Option<(i64, Instant)>,
}

impl Checkpointer {
    pub fn new(
        registry: Addr<UserRegistry>,
        store: Arc<dyn EventStore>,
        signer: Arc<LogSigner>,
        policy: CheckpointPolicy,
    ) -> Self {
        Self {
            registry,
            store,
            signer,
            policy,
            last: None,
        }
    }

    /// Writes one if due (or, with `force`, if the log moved since the last), and says which.
    pub async fn tick(&mut self, force: bool) -> Option<Checkpoint> {
        let Ok(Some((position, generation))) = self.registry.send(GetLogHead).await else {
            return None;
        };
        if position == 0 {
            return None;
        }
        let due = match self.last {
            None => true,
            Some((last, _)) if last == position => false,
            Some((last, at)) => {
                force
                    || (self.policy.every_events > 0 && position - last >= self.policy.every_events)
                    || (!self.policy.every.is_zero() && at.elapsed() >= self.policy.every)
            }
        };
        if !due {
            return None;
        }
        let made = make(self.store.as_ref(), &self.signer, position, generation).await;
        let written = made.and_then(|checkpoint| {
            write(&self.policy.sink, &checkpoint)?;
            Ok(checkpoint)
        });
        match written {
            Ok(checkpoint) => {
                self.last = Some((position, Instant::now()));
                Some(checkpoint)
            }
            Err(error) => {
                tracing::warn!(error = %crate::diagnostics::error_chain(&error), position, "no checkpoint written");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::MasterKey;

    #[test]
    fn checkpoints_are_read_back_from_every_sink_format() {
        let signer = LogSigner::new(&MasterKey::random());
        let checkpoint = signer.checkpoint(1, 42, crate::events::chain::GENESIS);
        let json = serde_json::to_string(&checkpoint).expect("json");
        let text_log = format!(
            "2026-12-05T18:00:00.000000Z  INFO authlog::checkpoint: log checkpoint checkpoint={json} position=42"
        );
        let json_log = serde_json::json!({
            "timestamp": "2026-12-05T18:00:00.000000Z",
            "level": "INFO",
            "fields": {"message": "log checkpoint", "checkpoint": json, "position": 42},
        })
        .to_string();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("checkpoints");
        std::fs::write(
            &path,
            format!("{json}\nsomething else\n{text_log}\n{json_log}\n"),
        )
        .expect("written");
        assert_eq!(read(&path).expect("read"), vec![checkpoint; 3]);
    }
}
