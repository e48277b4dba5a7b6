//! Personal data at rest, erasable without breaking the chain (crypto-shredding): each user's
//! email, password hashes and request details are sealed in the log under a data key of that
//! user's own. The keys live beside the log (`personal_keys`), wrapped by the master key, and
//! erasing a user destroys theirs: the sealed bytes stay in the log, still covered by the hash
//! chain, which therefore still verifies, but nothing opens them any more.
//!
//! What is sealed (docs/security.md, "Personal data and erasure"):
//! - the payload fields [`PERSONAL_FIELDS`] (`email`, `password_hash`), each replaced by
//!   `{"sealed": "<base64url>"}`;
//! - the metadata's `client_ip` and `user_agent`, together, as `"sealed": "<base64url>"`.
//!
//! Each sealed value is XChaCha20-Poly1305 under the user's key, bound to its stream, stream
//! version and field, so it opens nowhere else. One account per email is enforced without the
//! email: `personal_keys.email_index` is an HMAC of the normalised address under a key derived
//! from the master key (a keyed blind index), unique in the database, and deleted with the key.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::{DecodeError, Event, NewEvent, RecordedEvent, StoreError, StoredColumns};
use crate::domain::{Email, UserId};
use crate::jwt::hmac_sha256;
use crate::vault::{MasterKey, Sealer, labels};

/// The payload fields that hold personal data, in any event type that has them.
pub const PERSONAL_FIELDS: [&str; 2] = ["email", "password_hash"];
/// The metadata fields that hold personal data, sealed together.
pub const PERSONAL_METADATA: [&str; 2] = ["client_ip", "user_agent"];
/// The key under which sealed values are stored.
pub(crate) const SEALED: &str = "sealed";

/// What a reader sees instead of a personal field it cannot open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redaction {
    /// The user was erased: their key is destroyed, and nobody can open it any more.
    Erased,
    /// This reader has no master key (an auditor given only the log).
    Sealed,
}

impl Redaction {
    /// The placeholder shown in place of the value.
    pub fn placeholder(self) -> &'static str {
        match self {
            Redaction::Erased => "<erased>",
            Redaction::Sealed => "<sealed>",
        }
    }
}

/// The master key's part in personal data: it wraps the users' data keys and keys the email
/// blind index. Never printed.
#[derive(Clone)]
pub struct Shredder {
    wrap: Sealer,
    index: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Shredder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shredder([redacted])")
    }
}

/// One user's data key, unwrapped.
#[derive(Clone)]
pub struct DataKey(Sealer);

/// A data key made for a user, to store beside the log in the append that needs it first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    pub user_id: uuid::Uuid,
    /// The blind index of the email it was made for; `None` for a user registered before
    /// personal data was sealed, whose email the log holds in clear.
    pub email_index: Option<[u8; 32]>,
    pub wrapped: Vec<u8>,
}

/// A batch ready to store: each event's sealed payload and metadata (in order), the keys to
/// insert and the users whose keys to destroy, all in the same transaction.
#[derive(Debug, Default)]
pub struct SealedBatch {
    pub columns: Vec<SealedColumns>,
    pub new_keys: Vec<NewKey>,
    pub erased: Vec<uuid::Uuid>,
}

/// The columns of one event as stored, but for its position and time, which the store assigns
/// under its append lock.
#[derive(Debug, Clone)]
pub struct SealedColumns {
    pub stream_id: uuid::Uuid,
    pub stream_version: i32,
    pub event_type: &'static str,
    pub event_version: i32,
    pub payload: Value,
    pub metadata: Value,
}

impl SealedColumns {
    pub fn at(&self, position: i64, recorded_at: chrono::DateTime<chrono::Utc>) -> StoredColumns {
        StoredColumns {
            position,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
            event_type: self.event_type.to_owned(),
            event_version: self.event_version,
            payload: self.payload.clone(),
            metadata: self.metadata.clone(),
            recorded_at,
        }
    }
}

impl Shredder {
    pub fn new(master: &MasterKey) -> Self {
        Self {
            wrap: master.sealer(labels::PERSONAL_KEY_WRAP),
            index: master.derive(labels::EMAIL_INDEX),
        }
    }

    /// A shredder under a random master key: for the in-memory store, whose log dies with it.
    pub fn ephemeral() -> Self {
        Self::new(&MasterKey::random())
    }

    /// The blind index of an email: HMAC-SHA256 of its normalised form.
    pub fn email_index(&self, email: &Email) -> [u8; 32] {
        let mut mac = hmac_sha256(self.index.as_slice());
        mac.update(email.canonical().as_str().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A fresh data key for `user`, and the same wrapped for storage.
    pub fn generate(&self, user: uuid::Uuid) -> Result<(DataKey, Vec<u8>), StoreError> {
        let mut raw = Zeroizing::new([0u8; 32]);
        getrandom::fill(raw.as_mut_slice()).map_err(StoreError::unavailable)?;
        let wrapped = self
            .wrap
            .seal(raw.as_slice(), &key_context(user))
            .map_err(StoreError::unavailable)?;
        Ok((DataKey(Sealer::from_key(&raw)), wrapped))
    }

    /// The data key wrapped in `wrapped`, if this master key wrapped it for `user`.
    pub fn unwrap(&self, user: uuid::Uuid, wrapped: &[u8]) -> Option<DataKey> {
        let raw = self.wrap.open(wrapped, &key_context(user))?;
        let key: [u8; 32] = raw.as_slice().try_into().ok()?;
        let key = Zeroizing::new(key);
        Some(DataKey(Sealer::from_key(&key)))
    }

    /// Seals a batch. `stored` holds the wrapped keys the store has for the batch's users
    /// ([`keys_needed`]); a user registering in the batch gets a new key, and so does one
    /// registered before sealing began (their key has no email index).
    pub fn seal_batch(
        &self,
        events: &[NewEvent],
        stored: &HashMap<uuid::Uuid, Vec<u8>>,
    ) -> Result<SealedBatch, StoreError> {
        let mut keys: HashMap<uuid::Uuid, DataKey> = HashMap::new();
        let mut batch = SealedBatch::default();
        for new in events {
            let Some(user) = new.event.user_id() else {
                batch.columns.push(clear(new));
                continue;
            };
            let stream = user.as_uuid();
            let key = match keys.entry(stream) {
                Entry::Occupied(known) => known.into_mut(),
                Entry::Vacant(vacant) => {
                    let key = match (&new.event, stored.get(&stream)) {
                        (Event::UserRegistered(_), _) | (_, None) => {
                            let (key, wrapped) = self.generate(stream)?;
                            let email_index = match &new.event {
                                Event::UserRegistered(registered) => {
                                    Some(self.email_index(&registered.email))
                                }
                                _ => None,
                            };
                            batch.new_keys.push(NewKey {
                                user_id: stream,
                                email_index,
                                wrapped,
                            });
                            key
                        }
                        (_, Some(wrapped)) => self
                            .unwrap(stream, wrapped)
                            .ok_or_else(|| wrong_master_key(user))?,
                    };
                    vacant.insert(key)
                }
            };
            batch.columns.push(seal(new, key)?);
            if matches!(new.event, Event::UserErased(_)) {
                batch.erased.push(stream);
            }
        }
        Ok(batch)
    }

    /// Opens a page of rows read from the store, given the wrapped keys it holds for their
    /// streams ([`sealed_streams`]): a stream with no key was erased.
    pub fn open_rows(
        &self,
        rows: Vec<StoredColumns>,
        stored: &HashMap<uuid::Uuid, Vec<u8>>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut keys: HashMap<uuid::Uuid, DataKey> = HashMap::new();
        rows.into_iter()
            .map(|mut row| {
                if !has_sealed(&row) {
                    return RecordedEvent::from_columns(row);
                }
                let stream = row.stream_id;
                let opening = match stored.get(&stream) {
                    None => Opening::Erased,
                    Some(wrapped) => Opening::Key(match keys.entry(stream) {
                        Entry::Occupied(known) => known.into_mut(),
                        Entry::Vacant(vacant) => vacant.insert(
                            self.unwrap(stream, wrapped)
                                .ok_or_else(|| wrong_master_key(UserId::from(stream)))?,
                        ),
                    }),
                };
                let redaction = open(&mut row, opening)?;
                RecordedEvent::from_opened(row, redaction)
            })
            .collect()
    }
}

/// Opens rows for a reader without the master key: every personal field reads `<sealed>`.
pub fn open_rows_sealed(rows: Vec<StoredColumns>) -> Result<Vec<RecordedEvent>, StoreError> {
    rows.into_iter()
        .map(|mut row| {
            let redaction = open(&mut row, Opening::Sealed)?;
            RecordedEvent::from_opened(row, redaction)
        })
        .collect()
}

/// The users whose stored keys an append of `events` needs: every user with an event in it
/// but no registration in it.
pub fn keys_needed(events: &[NewEvent]) -> Vec<uuid::Uuid> {
    let mut needed: Vec<uuid::Uuid> = events
        .iter()
        .filter(|new| !matches!(new.event, Event::UserRegistered(_)))
        .filter_map(|new| new.event.user_id().map(|user| user.as_uuid()))
        .collect();
    needed.sort_unstable();
    needed.dedup();
    needed
}

/// The streams of `rows` that hold sealed values, whose keys a reader needs.
pub fn sealed_streams(rows: &[StoredColumns]) -> Vec<uuid::Uuid> {
    let mut streams: Vec<uuid::Uuid> = rows
        .iter()
        .filter(|row| has_sealed(row))
        .map(|row| row.stream_id)
        .collect();
    streams.sort_unstable();
    streams.dedup();
    streams
}

/// How a row's sealed values can be opened.
enum Opening<'a> {
    Key(&'a DataKey),
    Erased,
    Sealed,
}

fn key_context(user: uuid::Uuid) -> Vec<u8> {
    format!("authlog personal key v1|{user}").into_bytes()
}

fn field_context(stream: uuid::Uuid, version: i32, field: &str) -> Vec<u8> {
    format!("authlog personal v1|{stream}|{version}|{field}").into_bytes()
}

/// An append by a store opened without the master key (as the auditors' commands open it).
pub fn no_master_key() -> StoreError {
    StoreError::Misconfigured(
        "this store was opened without the master key, so it cannot seal personal data: \
         appends need AUTHLOG_MASTER_KEY (or the data directory's master-key file)"
            .to_owned(),
    )
}

fn wrong_master_key(user: UserId) -> StoreError {
    StoreError::Misconfigured(format!(
        "the master key does not open the personal-data key of user {user}: this log was \
         written under another master key (check AUTHLOG_MASTER_KEY, or the data directory's \
         master-key file)"
    ))
}

/// An event with no user: nothing personal in it.
fn clear(new: &NewEvent) -> SealedColumns {
    SealedColumns {
        stream_id: new.stream_id(),
        stream_version: new.stream_version,
        event_type: new.event.event_type(),
        event_version: new.event.event_version(),
        payload: new.event.payload(),
        metadata: new.metadata.to_json(),
    }
}

fn seal(new: &NewEvent, key: &DataKey) -> Result<SealedColumns, StoreError> {
    let mut columns = clear(new);
    let (stream, version) = (columns.stream_id, columns.stream_version);
    let seal_bytes = |plain: &[u8], field: &str| -> Result<Value, StoreError> {
        let sealed = key
            .0
            .seal(plain, &field_context(stream, version, field))
            .map_err(StoreError::unavailable)?;
        Ok(Value::String(URL_SAFE_NO_PAD.encode(sealed)))
    };
    if let Value::Object(payload) = &mut columns.payload {
        for field in PERSONAL_FIELDS {
            if let Some(Value::String(plain)) = payload.get(field) {
                let mut sealed = Map::new();
                sealed.insert(SEALED.to_owned(), seal_bytes(plain.as_bytes(), field)?);
                payload.insert(field.to_owned(), Value::Object(sealed));
            }
        }
    }
    if let Value::Object(metadata) = &mut columns.metadata {
        let mut personal = Map::new();
        for field in PERSONAL_METADATA {
            if let Some(value) = metadata.remove(field) {
                personal.insert(field.to_owned(), value);
            }
        }
        if !personal.is_empty() {
            let plain = Value::Object(personal).to_string();
            metadata.insert(SEALED.to_owned(), seal_bytes(plain.as_bytes(), "metadata")?);
        }
    }
    Ok(columns)
}

/// Whether a stored row holds sealed values.
fn has_sealed(row: &StoredColumns) -> bool {
    PERSONAL_FIELDS
        .iter()
        .any(|field| row.payload.get(field).is_some_and(Value::is_object))
        || row.metadata.get(SEALED).is_some()
}

/// Opens a row's sealed values in place. What cannot be opened (erased, or no master key)
/// becomes the redaction's placeholder, and is returned as the row's redaction.
fn open(row: &mut StoredColumns, opening: Opening<'_>) -> Result<Option<Redaction>, StoreError> {
    let (stream, version, position) = (row.stream_id, row.stream_version, row.position);
    let corrupt = |field: &'static str| StoreError::Corrupt {
        position,
        source: DecodeError::Sealed(field),
    };
    let open_bytes = |value: &Value, field: &'static str| -> Result<Vec<u8>, StoreError> {
        let Opening::Key(key) = opening else {
            return Err(corrupt(field));
        };
        let sealed = value
            .as_str()
            .and_then(|text| URL_SAFE_NO_PAD.decode(text).ok())
            .ok_or_else(|| corrupt(field))?;
        key.0
            .open(&sealed, &field_context(stream, version, field))
            .map(|plain| plain.to_vec())
            .ok_or_else(|| corrupt(field))
    };
    let redaction = match opening {
        Opening::Key(_) => None,
        Opening::Erased => Some(Redaction::Erased),
        Opening::Sealed => Some(Redaction::Sealed),
    };
    let mut redacted = false;
    if let Value::Object(payload) = &mut row.payload {
        for field in PERSONAL_FIELDS {
            let Some(Value::Object(sealed)) = payload.get(field) else {
                continue;
            };
            let value = match redaction {
                Some(redaction) => {
                    redacted = true;
                    Value::String(redaction.placeholder().to_owned())
                }
                None => {
                    let text = sealed.get(SEALED).ok_or_else(|| corrupt(field))?;
                    let plain = open_bytes(text, field)?;
                    Value::String(String::from_utf8(plain).map_err(|_| corrupt(field))?)
                }
            };
            payload.insert(field.to_owned(), value);
        }
    }
    if let Value::Object(metadata) = &mut row.metadata
        && let Some(sealed) = metadata.remove(SEALED)
    {
        match redaction {
            // Left as the placeholder, so the decoded metadata says what it lacks.
            Some(redaction) => {
                redacted = true;
                metadata.insert(
                    SEALED.to_owned(),
                    Value::String(redaction.placeholder().to_owned()),
                );
            }
            None => {
                let plain = open_bytes(&sealed, "metadata")?;
                let Ok(Value::Object(personal)) = serde_json::from_slice::<Value>(&plain) else {
                    return Err(corrupt("metadata"));
                };
                metadata.extend(personal);
            }
        }
    }
    Ok(redaction.filter(|_| redacted))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use chrono::Utc;

    use super::*;
    use crate::domain::PasswordHash;
    use crate::events::{EventMetadata, LoginSucceeded, UserErased, UserRegistered};

    fn master(raw: &str) -> MasterKey {
        MasterKey::parse(&secrecy::SecretString::from(raw.repeat(64))).expect("long enough")
    }

    fn registration(user: UserId) -> NewEvent {
        NewEvent {
            stream_version: 1,
            event: Event::UserRegistered(UserRegistered {
                user_id: user,
                email: Email::parse("Alice@Example.com").expect("valid"),
                password_hash: PasswordHash::new("$2b$04$abcdefghijklmnopqrstuv".into()),
            }),
            metadata: EventMetadata::new(Some(IpAddr::from([192, 0, 2, 7])), Some("curl/8")),
        }
    }

    fn stored(batch: &SealedBatch) -> (Vec<StoredColumns>, HashMap<uuid::Uuid, Vec<u8>>) {
        let rows = (1..)
            .zip(&batch.columns)
            .map(|(position, columns)| columns.at(position, Utc::now()))
            .collect();
        let keys = batch
            .new_keys
            .iter()
            .map(|key| (key.user_id, key.wrapped.clone()))
            .collect();
        (rows, keys)
    }

    #[test]
    fn sealed_rows_hold_no_personal_data_and_open_with_the_key() {
        let shredder = Shredder::new(&master("a"));
        let user = UserId::new();
        let events = vec![
            registration(user),
            NewEvent {
                stream_version: 2,
                event: Event::LoginSucceeded(LoginSucceeded { user_id: user }),
                metadata: EventMetadata::new(Some(IpAddr::from([192, 0, 2, 7])), None),
            },
        ];
        let batch = shredder
            .seal_batch(&events, &HashMap::new())
            .expect("sealed");
        assert_eq!(batch.new_keys.len(), 1);
        assert!(batch.new_keys[0].email_index.is_some());
        let (rows, keys) = stored(&batch);
        let text =
            serde_json::to_string(&rows.iter().map(chain_text).collect::<Vec<_>>()).expect("json");
        for secret in ["alice", "192.0.2.7", "curl", "abcdefghijklmnop"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let opened = shredder.open_rows(rows.clone(), &keys).expect("opens");
        assert_eq!(opened[0].event, events[0].event);
        assert_eq!(opened[0].metadata, events[0].metadata);
        assert_eq!(opened[1].metadata, events[1].metadata);

        // Erased: the key is gone.
        let erased = shredder
            .open_rows(rows.clone(), &HashMap::new())
            .expect("reads");
        assert!(matches!(&erased[0].event, Event::Redacted(r) if r.why == Redaction::Erased));
        assert_eq!(erased[1].event, events[1].event, "nothing personal in it");
        assert_eq!(erased[1].metadata.redacted, Some(Redaction::Erased));
        assert_eq!(erased[1].metadata.client_ip, None);

        // No master key at all.
        let sealed = open_rows_sealed(rows.clone()).expect("reads");
        assert!(matches!(&sealed[0].event, Event::Redacted(r) if r.why == Redaction::Sealed));

        // Another master key is an error, not an erasure.
        let other = Shredder::new(&master("b"));
        assert!(matches!(
            other.open_rows(rows, &keys),
            Err(StoreError::Misconfigured(_))
        ));
    }

    #[test]
    fn a_sealed_value_opens_only_where_it_was_sealed() {
        let shredder = Shredder::new(&master("a"));
        let user = UserId::new();
        let batch = shredder
            .seal_batch(&[registration(user)], &HashMap::new())
            .expect("sealed");
        let (mut rows, keys) = stored(&batch);
        // Moved to another stream version: the context differs, so it does not open.
        rows[0].stream_version = 2;
        assert!(matches!(
            shredder.open_rows(rows, &keys),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn erasure_destroys_the_key_in_the_same_batch_and_later_events_reuse_the_stored_key() {
        let shredder = Shredder::new(&master("a"));
        let user = UserId::new();
        let first = shredder
            .seal_batch(&[registration(user)], &HashMap::new())
            .expect("sealed");
        let (_, keys) = stored(&first);
        let erase = NewEvent {
            stream_version: 2,
            event: Event::UserErased(UserErased { user_id: user }),
            metadata: EventMetadata::by("test"),
        };
        assert_eq!(
            keys_needed(std::slice::from_ref(&erase)),
            vec![user.as_uuid()]
        );
        let batch = shredder.seal_batch(&[erase], &keys).expect("sealed");
        assert!(batch.new_keys.is_empty(), "the stored key is used");
        assert_eq!(batch.erased, vec![user.as_uuid()]);
    }

    #[test]
    fn the_blind_index_is_keyed_and_normalised() {
        let one = Shredder::new(&master("a"));
        let email = |raw| Email::parse(raw).expect("valid");
        assert_eq!(
            one.email_index(&email("bob@example.com")),
            one.email_index(&email("bob@EXAMPLE.com"))
        );
        assert_ne!(
            one.email_index(&email("bob@example.com")),
            Shredder::new(&master("b")).email_index(&email("bob@example.com"))
        );
    }

    fn chain_text(row: &StoredColumns) -> String {
        crate::events::chain::canonical(row)
    }
}
