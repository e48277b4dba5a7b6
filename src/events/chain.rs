//! The hash chain over the log: each event's hash covers its canonical encoding and the hash
//! before it, so changing, removing or reordering any event breaks the chain from there on.
//!
//! ```text
//! canonical(e) = compact JSON array, object keys sorted, UTF-8, no spaces:
//!                [position, "stream_id", stream_version, "event_type", event_version,
//!                 payload, metadata, "recorded_at"]
//!                recorded_at as RFC 3339 UTC with 6 fractional digits and "Z"
//! hash(e)      = lowercase hex of SHA-256( prev_hash || canonical(e) )
//!                prev_hash is the previous event's hash as 64 ASCII hex characters,
//!                and 64 "0" before the first event
//! ```
//!
//! `docs/auditing.md` shows the same in a dozen lines of Python.

use chrono::SecondsFormat;
use sha2::{Digest, Sha256};

use std::ops::ControlFlow;

use super::{EventStore, StoreError, StoredColumns};

/// The `prev_hash` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The canonical encoding of one event, as hashed.
pub fn canonical(row: &StoredColumns) -> String {
    canonical_parts(row).0
}

/// [`canonical`], and the canonical text of the payload and the metadata within it (what a
/// store that keeps JSON as text must hold, exactly).
fn canonical_parts(
    row: &StoredColumns,
) -> (String, std::ops::Range<usize>, std::ops::Range<usize>) {
    // The JSON array serde_json writes for the tuple of the columns (compact, object keys
    // sorted), built piece by piece so that the two JSON columns' text can be compared too.
    use std::fmt::Write as _;
    let json = |value: &str| serde_json::to_string(value).unwrap_or_default();
    let payload = serde_json::to_string(&row.payload).unwrap_or_default();
    let metadata = serde_json::to_string(&row.metadata).unwrap_or_default();
    let mut out = String::with_capacity(payload.len() + metadata.len() + 160);
    let _ = write!(
        out,
        "[{},\"{}\",{},{},{},",
        row.position,
        row.stream_id.hyphenated(),
        row.stream_version,
        json(&row.event_type),
        row.event_version
    );
    let payload_at = out.len()..out.len() + payload.len();
    out.push_str(&payload);
    out.push(',');
    let metadata_at = out.len()..out.len() + metadata.len();
    out.push_str(&metadata);
    out.push(',');
    out.push_str(&json(
        &row.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
    ));
    out.push(']');
    (out, payload_at, metadata_at)
}

/// `hex(SHA-256(prev_hash || canonical))`.
pub fn link(prev_hash: &str, canonical: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::new()
        .chain_update(prev_hash.as_bytes())
        .chain_update(canonical.as_bytes())
        .finalize();
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    hex
}

/// The hash of a stored row, from its columns exactly as stored.
pub fn hash_row(prev_hash: &str, row: &StoredColumns) -> String {
    link(prev_hash, &canonical(row))
}

/// A stored row with its links, as `verify` reads it.
#[derive(Debug, Clone)]
pub struct ChainedRow {
    pub columns: StoredColumns,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
    /// The log signature over the chain head, on the last row of each append ([`super::signed`]).
    pub signature: Option<String>,
    /// The JSON columns' text as stored, where the store keeps text (SQLite). PostgreSQL's
    /// `jsonb` keeps the parsed value, so there is no other text to compare.
    pub stored: Option<StoredText>,
}

/// The `payload` and `metadata` columns exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredText {
    pub payload: String,
    pub metadata: String,
}

/// Why the chain breaks at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// Positions must strictly increase.
    OutOfOrder,
    /// The stored `prev_hash` is not the previous event's hash: an event before it was removed,
    /// inserted or changed, or rows were swapped.
    PrevHashMismatch,
    /// The stored `hash` does not match the event's contents: the event was altered.
    HashMismatch,
    /// No hash stored.
    Missing,
    /// The row cannot be read as an event row (for example, its payload is not JSON).
    Unreadable,
    /// The stored JSON text is not the canonical encoding of its value: whitespace, key order
    /// or a duplicate key was edited in. The hash covers the value, so this is checked apart.
    NotCanonical,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Break::OutOfOrder => "position out of order",
            Break::PrevHashMismatch => {
                "prev_hash does not match the previous event: an event before it was removed, \
                 inserted, altered or moved"
            }
            Break::HashMismatch => {
                "hash does not match the event's contents: the event was altered"
            }
            Break::Missing => "no hash stored",
            Break::Unreadable => "the row cannot be read",
            Break::NotCanonical => {
                "the stored JSON is not the canonical encoding of its value: it was edited \
                 (whitespace, key order or a duplicate key)"
            }
        })
    }
}

/// Recomputes the whole chain from the store, page by page, stopping at the first break.
pub async fn verify(store: &dyn EventStore) -> Result<Verifier, StoreError> {
    let mut verifier = Verifier::default();
    let walked = hashed_after(store, 0)
        .for_each(|row| {
            if verifier.check_hashed(&row) {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        })
        .await;
    match walked {
        Ok(_) => Ok(verifier),
        Err(StoreError::Corrupt { position, .. }) => {
            verifier.broken = Some((position, Break::Unreadable));
            Ok(verifier)
        }
        Err(error) => Err(error),
    }
}

/// A stored row and what its contents hash to after its stored `prev_hash`: each page's rows
/// are hashed on two threads at once ([`hashed_after`]), and then checked in order.
#[derive(Debug, Clone)]
pub struct Hashed {
    pub row: ChainedRow,
    /// `None` without a stored `prev_hash`.
    computed: Option<String>,
    /// Whether the stored JSON text, where the store keeps text, is the canonical encoding.
    canonical: bool,
}

impl Hashed {
    pub fn new(row: ChainedRow) -> Self {
        let Some(prev_hash) = &row.prev_hash else {
            return Self {
                row,
                computed: None,
                canonical: true,
            };
        };
        let (canonical, payload, metadata) = canonical_parts(&row.columns);
        let is_canonical = row.stored.as_ref().is_none_or(|stored| {
            canonical[payload] == stored.payload && canonical[metadata] == stored.metadata
        });
        Self {
            computed: Some(link(prev_hash, &canonical)),
            canonical: is_canonical,
            row,
        }
    }
}

impl super::pager::Paged for Hashed {
    fn position(&self) -> i64 {
        self.row.columns.position
    }

    fn read(store: &dyn EventStore, after: i64, limit: usize) -> super::StoreFuture<'_, Vec<Self>> {
        let rows = store.read_rows_after(after, limit);
        Box::pin(async move {
            super::pager::in_halves(rows.await?, |rows| {
                Ok(rows.into_iter().map(Self::new).collect())
            })
            .await
        })
    }
}

/// Rows after `after`, hashed, as `verify` walks them.
pub fn hashed_after(store: &dyn EventStore, after: i64) -> super::pager::Pager<'_, Hashed> {
    super::pager::Pager::new(store, after)
}

/// Recomputes the chain one row at a time, stopping at the first break.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub count: u64,
    pub head_position: i64,
    pub head_hash: String,
    pub broken: Option<(i64, Break)>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self {
            count: 0,
            head_position: 0,
            head_hash: GENESIS.to_owned(),
            broken: None,
        }
    }
}

impl Verifier {
    /// Checks the next row; returns `false` once the chain is broken.
    pub fn check(&mut self, row: &ChainedRow) -> bool {
        self.check_hashed(&Hashed::new(row.clone()))
    }

    /// [`Verifier::check`] of a row already hashed.
    pub fn check_hashed(&mut self, hashed: &Hashed) -> bool {
        let row = &hashed.row;
        if self.broken.is_some() {
            return false;
        }
        let position = row.columns.position;
        let fail = |this: &mut Self, why| {
            this.broken = Some((position, why));
            false
        };
        if position <= self.head_position {
            return fail(self, Break::OutOfOrder);
        }
        let (Some(prev_hash), Some(hash)) = (&row.prev_hash, &row.hash) else {
            return fail(self, Break::Missing);
        };
        if *prev_hash != self.head_hash {
            return fail(self, Break::PrevHashMismatch);
        }
        if hashed.computed.as_ref() != Some(hash) {
            return fail(self, Break::HashMismatch);
        }
        if !hashed.canonical {
            return fail(self, Break::NotCanonical);
        }
        self.count += 1;
        self.head_position = position;
        self.head_hash = hash.clone();
        true
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn the_encoding_is_stable() {
        let at = DateTime::parse_from_rfc3339("2026-11-27T07:19:17.123456Z")
            .expect("time")
            .with_timezone(&Utc);
        let id = Uuid::parse_str("5f1c0e9a-0000-4000-8000-000000000001").expect("uuid");
        let text = canonical(&StoredColumns {
            position: 1,
            stream_id: id,
            stream_version: 1,
            event_type: "LoginSucceeded".to_owned(),
            event_version: 1,
            payload: json!({"user_id": id, "a": "é"}),
            metadata: json!({"client_ip": "127.0.0.1"}),
            recorded_at: at,
        });
        assert_eq!(
            text,
            r#"[1,"5f1c0e9a-0000-4000-8000-000000000001",1,"LoginSucceeded",1,{"a":"é","user_id":"5f1c0e9a-0000-4000-8000-000000000001"},{"client_ip":"127.0.0.1"},"2026-11-27T07:19:17.123456Z"]"#
        );
        // sha256("0"*64 + "abc"), checked with Python's hashlib.
        assert_eq!(
            link(GENESIS, "abc"),
            "b64374d04ef9c4f39fddb1e0d6be38a0130f6c057fc0f4ee467ea0e18bc758f1"
        );
    }
}
