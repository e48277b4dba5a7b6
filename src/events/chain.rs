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

use super::pager::rows_after;
use super::{EventStore, StoreError, StoredColumns};

/// The `prev_hash` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The canonical encoding of one event, as hashed.
pub fn canonical(row: &StoredColumns) -> String {
    // A tuple serialises as a JSON array; serde_json keeps object keys sorted and writes no
    // whitespace. Borrowed, so the payload is not copied to be hashed.
    let mut uuid = uuid::Uuid::encode_buffer();
    let columns = (
        row.position,
        &*row.stream_id.hyphenated().encode_lower(&mut uuid),
        row.stream_version,
        &row.event_type,
        row.event_version,
        &row.payload,
        &row.metadata,
        row.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
    );
    serde_json::to_string(&columns).unwrap_or_default()
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
    let mut pager = rows_after(store, 0);
    loop {
        let page = match pager.next_page().await {
            Ok(Some(page)) => page,
            Ok(None) => return Ok(verifier),
            Err(StoreError::Corrupt { position, .. }) => {
                verifier.broken = Some((position, Break::Unreadable));
                return Ok(verifier);
            }
            Err(error) => return Err(error),
        };
        if !page.iter().all(|row| verifier.check(row)) {
            return Ok(verifier);
        }
    }
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
        if hash_row(prev_hash, &row.columns) != *hash {
            return fail(self, Break::HashMismatch);
        }
        if let Some(stored) = &row.stored
            && !(is_canonical(&stored.payload, &row.columns.payload)
                && is_canonical(&stored.metadata, &row.columns.metadata))
        {
            return fail(self, Break::NotCanonical);
        }
        self.count += 1;
        self.head_position = position;
        self.head_hash = hash.clone();
        true
    }
}

/// Whether `text` is exactly the canonical encoding of `value`.
fn is_canonical(text: &str, value: &serde_json::Value) -> bool {
    serde_json::to_string(value).is_ok_and(|canonical| canonical == text)
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
