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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::signed::LogSigner;
use super::{DecodeError, Event, NewEvent, RecordedEvent, StoreError, StoredColumns};
use crate::domain::{Email, UserId};
use crate::jwt::{HmacSha256, hmac_sha256};
use crate::vault::{MasterKey, Sealer, labels};

/// The payload fields that hold personal data, in any event type that has them.
pub const PERSONAL_FIELDS: [&str; 2] = ["email", "password_hash"];
/// The metadata fields that hold personal data, sealed together.
pub const PERSONAL_METADATA: [&str; 2] = ["client_ip", "user_agent"];
/// Enough for any sealed value (the longest, a user agent of 256 bytes with its address, sealed
/// and base64-decoded) without growing the buffer.
const SEALED_CAPACITY: usize = 512;

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
    /// HMAC-SHA256 keyed once for the email blind index, cloned for each email.
    index: HmacSha256,
    /// The users' keys unwrapped so far, shared by every clone (a store and its readers):
    /// each key is read and unwrapped once, not once per page of the log it appears in. The
    /// process holds every user's email and hash in its directory anyway; an erased user's key
    /// leaves with their `UserErased`, as this process appends it or reads it.
    cache: Arc<Mutex<HashMap<uuid::Uuid, RawKey>>>,
    /// The log-signing keys of the same master key: a store that seals also signs
    /// ([`super::signed`]).
    log: Arc<LogSigner>,
}

/// A data key's 32 bytes, wiped when dropped, never printed.
#[derive(Clone)]
struct RawKey(Zeroizing<[u8; 32]>);

impl RawKey {
    fn sealer(&self) -> DataKey {
        DataKey(Sealer::from_key(&self.0))
    }
}

impl std::fmt::Debug for RawKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawKey([redacted])")
    }
}

impl std::fmt::Debug for Shredder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shredder([redacted])")
    }
}

/// One user's data key, unwrapped.
struct DataKey(Sealer);

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
    /// The new keys unwrapped, for the cache once the batch has committed.
    fresh: Vec<(uuid::Uuid, RawKey)>,
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
            index: hmac_sha256(master.derive(labels::EMAIL_INDEX).as_slice()),
            cache: Arc::default(),
            log: Arc::new(LogSigner::new(master)),
        }
    }

    /// The log-signing keys derived from the same master key.
    pub fn log_signer(&self) -> Arc<LogSigner> {
        Arc::clone(&self.log)
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<uuid::Uuid, RawKey>> {
        // The map is consistent between statements: a panic elsewhere cannot poison it
        // half-written.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Those of `users` whose keys are not unwrapped here yet: what a store must read.
    pub fn uncached(&self, mut users: Vec<uuid::Uuid>) -> Vec<uuid::Uuid> {
        let cache = self.cache();
        users.retain(|user| !cache.contains_key(user));
        users
    }

    /// After `batch` has committed: its new keys are known, and its erased users' forgotten.
    /// (An append whose outcome is unknown is followed by a re-read of the log, whose
    /// `UserErased` rows forget those keys if it did commit.)
    pub fn committed(&self, batch: SealedBatch) {
        let mut cache = self.cache();
        // Fresh keys first: a batch that erases a user also unwrapped their key to seal their
        // last events (the sessions it ends), and that key must not outlive the erasure here.
        cache.extend(batch.fresh);
        for user in &batch.erased {
            cache.remove(user);
        }
    }

    /// A shredder under a random master key: for the in-memory store, whose log dies with it.
    pub fn ephemeral() -> Self {
        Self::new(&MasterKey::random())
    }

    /// The blind index of an email: HMAC-SHA256 of its normalised form.
    pub fn email_index(&self, email: &Email) -> [u8; 32] {
        let mut mac = self.index.clone();
        mac.update(email.canonical().as_str().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A fresh data key for `user`, and the same wrapped for storage.
    fn generate_raw(
        &self,
        user: uuid::Uuid,
        entropy: &mut Entropy,
    ) -> Result<(RawKey, Vec<u8>), StoreError> {
        let raw = RawKey(Zeroizing::new(entropy.take::<32>()?));
        let wrapped = self
            .wrap
            .seal_with(entropy.take()?, raw.0.as_slice(), &key_context(user))
            .map_err(StoreError::unavailable)?;
        Ok((raw, wrapped))
    }

    /// The data key wrapped in `wrapped`, if this master key wrapped it for `user`.
    fn unwrap_raw(&self, user: uuid::Uuid, wrapped: &[u8]) -> Option<RawKey> {
        let raw = self.wrap.open(wrapped, &key_context(user))?;
        let key: [u8; 32] = raw.as_slice().try_into().ok()?;
        Some(RawKey(Zeroizing::new(key)))
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
        let mut entropy = Entropy::default();
        let mut cache = self.cache();
        for new in events {
            let Some(user) = new.event.user_id() else {
                batch.columns.push(clear(new));
                continue;
            };
            let stream = user.as_uuid();
            let key = match keys.entry(stream) {
                Entry::Occupied(known) => known.into_mut(),
                Entry::Vacant(vacant) => {
                    let registers = matches!(new.event, Event::UserRegistered(_));
                    let key = match (cache.get(&stream), stored.get(&stream)) {
                        (Some(raw), _) if !registers => raw.sealer(),
                        (None, Some(wrapped)) if !registers => {
                            let raw = self
                                .unwrap_raw(stream, wrapped)
                                .ok_or_else(|| wrong_master_key(user))?;
                            let key = raw.sealer();
                            cache.insert(stream, raw);
                            key
                        }
                        // A registration, or a user registered before sealing began.
                        _ => {
                            let (raw, wrapped) = self.generate_raw(stream, &mut entropy)?;
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
                            let key = raw.sealer();
                            batch.fresh.push((stream, raw));
                            key
                        }
                    };
                    vacant.insert(key)
                }
            };
            batch.columns.push(seal(new, key, &mut entropy)?);
            if matches!(new.event, Event::UserErased(_)) {
                batch.erased.push(stream);
            }
        }
        Ok(batch)
    }

    /// Opens a page of rows read from the store, given the wrapped keys it holds for those of
    /// their streams not cached here ([`sealed_streams`], [`Shredder::uncached`]): a stream
    /// with neither was erased.
    pub fn open_rows(
        &self,
        rows: Vec<StoredColumns>,
        stored: &HashMap<uuid::Uuid, Vec<u8>>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let keys = self.page_keys_for(sealed_streams(&rows), stored)?;
        let erased = erased_streams(&rows);
        let opened = keys.open(rows);
        self.forget(&erased);
        opened
    }

    /// The keys these streams' rows need, unwrapped (and cached) under the cache's lock once,
    /// so that their page can then be opened on several threads without it (a stream whose rows
    /// hold nothing sealed has no key, and costs a lookup).
    pub fn page_keys_for(
        &self,
        streams: Vec<uuid::Uuid>,
        stored: &HashMap<uuid::Uuid, Vec<u8>>,
    ) -> Result<PageKeys, StoreError> {
        let mut cache = self.cache();
        let mut keys = HashMap::new();
        for stream in streams {
            let raw = match (cache.get(&stream), stored.get(&stream)) {
                (Some(raw), _) => raw.clone(),
                (None, Some(wrapped)) => {
                    let raw = self
                        .unwrap_raw(stream, wrapped)
                        .ok_or_else(|| wrong_master_key(UserId::from(stream)))?;
                    cache.insert(stream, raw.clone());
                    raw
                }
                // Erased: its rows open as redacted.
                (None, None) => continue,
            };
            keys.insert(stream, raw);
        }
        Ok(PageKeys(keys))
    }

    /// Forgets the keys of users whose `UserErased` was just read.
    pub fn forget(&self, erased: &[uuid::Uuid]) {
        if erased.is_empty() {
            return;
        }
        let mut cache = self.cache();
        for stream in erased {
            cache.remove(stream);
        }
    }
}

/// The streams of `rows` that a `UserErased` in them ends: their keys go once the page is
/// read ([`Shredder::forget`]).
pub fn erased_streams(rows: &[StoredColumns]) -> Vec<uuid::Uuid> {
    rows.iter()
        .filter(|row| row.event_type == Event::USER_ERASED)
        .map(|row| row.stream_id)
        .collect()
}

/// The unwrapped keys of one page's users ([`Shredder::page_keys_for`]); an erased user has none.
pub struct PageKeys(HashMap<uuid::Uuid, RawKey>);

impl PageKeys {
    /// Opens and decodes `rows` (any part of the page, on any thread).
    pub fn open(&self, rows: Vec<StoredColumns>) -> Result<Vec<RecordedEvent>, StoreError> {
        rows.into_iter()
            .map(|mut row| {
                if !has_sealed(&row) {
                    return RecordedEvent::from_columns(row);
                }
                let redaction = match self.0.get(&row.stream_id) {
                    Some(raw) => open(&mut row, Opening::Key(&raw.sealer()))?,
                    None => open(&mut row, Opening::Erased)?,
                };
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
    sealed_streams_of(rows.iter())
}

/// [`sealed_streams`] of rows held elsewhere.
pub fn sealed_streams_of<'r>(rows: impl Iterator<Item = &'r StoredColumns>) -> Vec<uuid::Uuid> {
    let mut streams: Vec<uuid::Uuid> = rows
        .filter(|row| has_sealed(row))
        .map(|row| row.stream_id)
        .collect();
    streams.sort_unstable();
    streams.dedup();
    streams
}

/// Random bytes from the OS, drawn a few kilobytes at a time: a batch of registrations needs
/// 56 bytes per key and 24 per sealed value, and one system call per value cost a third of the
/// embedded store's sign-up rate. Wiped when dropped (it holds keys before they are used).
#[derive(Default)]
struct Entropy {
    pool: Zeroizing<Vec<u8>>,
    at: usize,
}

impl Entropy {
    const REFILL: usize = 4096;

    /// `N` fresh bytes, never handed out before.
    fn take<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        if self.pool.len() < self.at + N {
            self.pool.resize(Self::REFILL.max(N), 0);
            getrandom::fill(&mut self.pool).map_err(StoreError::unavailable)?;
            self.at = 0;
        }
        let mut bytes = [0u8; N];
        bytes.copy_from_slice(&self.pool[self.at..self.at + N]);
        self.at += N;
        Ok(bytes)
    }
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

/// `authlog personal v1|<stream>|<version>|<field>`, built without the formatter: it is made
/// for every value sealed or opened.
fn field_context(stream: uuid::Uuid, version: i32, field: &str) -> Vec<u8> {
    let mut context = Vec::with_capacity(CONTEXT_BYTES);
    write_context(&mut context, stream, version, field);
    context
}

/// Room for any field's context: the prefix, a UUID, an `i32` and the longest field name.
const CONTEXT_BYTES: usize = 20 + 36 + 11 + 8 + 2;

fn write_context(context: &mut Vec<u8>, stream: uuid::Uuid, version: i32, field: &str) {
    const PREFIX: &[u8] = b"authlog personal v1|";
    context.extend_from_slice(PREFIX);
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    context.extend_from_slice(stream.hyphenated().encode_lower(&mut id).as_bytes());
    context.push(b'|');
    let mut digits = [0u8; 11];
    let mut at = digits.len();
    let (negative, mut rest) = (version < 0, version.unsigned_abs());
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if negative {
        context.push(b'-');
    }
    context.extend_from_slice(&digits[at..]);
    context.push(b'|');
    context.extend_from_slice(field.as_bytes());
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

fn seal(new: &NewEvent, key: &DataKey, entropy: &mut Entropy) -> Result<SealedColumns, StoreError> {
    let mut columns = clear(new);
    let (stream, version) = (columns.stream_id, columns.stream_version);
    let mut seal_bytes = |plain: &[u8], field: &str| -> Result<Value, StoreError> {
        let sealed = key
            .0
            .seal_with(
                entropy.take()?,
                plain,
                &field_context(stream, version, field),
            )
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
    // One buffer for every value of the row: base64-decoded, then decrypted where it lies.
    let mut buffer = Zeroizing::new(Vec::with_capacity(SEALED_CAPACITY));
    let mut context = Vec::with_capacity(CONTEXT_BYTES);
    fn open_value<'b>(
        key: &DataKey,
        value: &Value,
        (stream, version, field): (uuid::Uuid, i32, &str),
        buffer: &'b mut Vec<u8>,
        context: &mut Vec<u8>,
    ) -> Option<&'b [u8]> {
        buffer.clear();
        URL_SAFE_NO_PAD.decode_vec(value.as_str()?, buffer).ok()?;
        context.clear();
        write_context(context, stream, version, field);
        key.0.open_in_place(buffer, context)
    }
    let key = match opening {
        Opening::Key(key) => Some(key),
        Opening::Erased | Opening::Sealed => None,
    };
    let redaction = match opening {
        Opening::Key(_) => None,
        Opening::Erased => Some(Redaction::Erased),
        Opening::Sealed => Some(Redaction::Sealed),
    };
    let mut redacted = false;
    if let Value::Object(payload) = &mut row.payload {
        for field in PERSONAL_FIELDS {
            let Some(value) = payload.get_mut(field) else {
                continue;
            };
            let Value::Object(sealed) = &*value else {
                continue;
            };
            let opened = match redaction {
                Some(redaction) => {
                    redacted = true;
                    Value::String(redaction.placeholder().to_owned())
                }
                None => {
                    let plain = sealed
                        .get(SEALED)
                        .zip(key)
                        .and_then(|(text, key)| {
                            open_value(
                                key,
                                text,
                                (stream, version, field),
                                &mut buffer,
                                &mut context,
                            )
                        })
                        .ok_or_else(|| corrupt(field))?;
                    let text = std::str::from_utf8(plain).map_err(|_| corrupt(field))?;
                    Value::String(text.to_owned())
                }
            };
            *value = opened;
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
                let plain = key
                    .and_then(|key| {
                        open_value(
                            key,
                            &sealed,
                            (stream, version, "metadata"),
                            &mut buffer,
                            &mut context,
                        )
                    })
                    .ok_or_else(|| corrupt("metadata"))?;
                let personal: Map<String, Value> =
                    serde_json::from_slice(plain).map_err(|_| corrupt("metadata"))?;
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
                imported: None,
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

        // Erased: the key is gone (read by another process, which has cached nothing).
        let erased = Shredder::new(&master("a"))
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
    fn a_cached_key_is_forgotten_when_its_erasure_commits_or_is_read() {
        let writer = Shredder::new(&master("a"));
        let user = UserId::new();
        let first = writer
            .seal_batch(&[registration(user)], &HashMap::new())
            .expect("sealed");
        let (mut rows, keys) = stored(&first);
        writer.committed(first);
        assert!(writer.uncached(vec![user.as_uuid()]).is_empty(), "cached");
        let erase = NewEvent {
            stream_version: 2,
            event: Event::UserErased(UserErased { user_id: user }),
            metadata: EventMetadata::by("test"),
        };
        let erasure = writer
            .seal_batch(std::slice::from_ref(&erase), &keys)
            .expect("sealed");
        assert!(
            writer.uncached(vec![user.as_uuid()]).is_empty(),
            "kept until the erasure commits: a failed append leaves the key in the store"
        );
        let erased_row = erasure.columns[0].at(2, Utc::now());
        writer.committed(erasure);
        assert_eq!(writer.uncached(vec![user.as_uuid()]), vec![user.as_uuid()]);

        // A reader that cached the key while the user lived forgets it on reading UserErased.
        let reader = Shredder::new(&master("a"));
        reader.open_rows(rows.clone(), &keys).expect("opens");
        assert!(reader.uncached(vec![user.as_uuid()]).is_empty());
        rows.push(erased_row);
        reader
            .open_rows(rows.split_off(1), &HashMap::new())
            .expect("reads");
        assert_eq!(reader.uncached(vec![user.as_uuid()]), vec![user.as_uuid()]);
        let again = reader.open_rows(rows, &HashMap::new()).expect("reads");
        assert!(matches!(&again[0].event, Event::Redacted(r) if r.why == Redaction::Erased));
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
    fn the_field_context_reads_as_documented() {
        let stream = uuid::Uuid::parse_str("5f1c0e9a-0000-4000-8000-00000000000a").expect("uuid");
        for (version, text) in [(1, "1"), (120, "120"), (i32::MAX, "2147483647"), (-3, "-3")] {
            assert_eq!(
                String::from_utf8(field_context(stream, version, "email")).expect("utf-8"),
                format!("authlog personal v1|5f1c0e9a-0000-4000-8000-00000000000a|{text}|email")
            );
        }
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
