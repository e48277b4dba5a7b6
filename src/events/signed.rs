//! Who wrote the log: the hash chain proves the log was not changed, and these signatures prove
//! a key holder appended it. Every append's last row carries an Ed25519 signature over the new
//! chain head, with a log-signing key derived from the master key (which never enters the
//! database), and every reader applies a row only once a signature covers it.
//!
//! ```text
//! key(g)          = Ed25519 key from the seed HKDF(master, "authlog log-signing key v1 g<g>")
//! head message    = "authlog log head v1\n<position>\n<hash>"        signed by the batch's key
//! checkpoint msg  = "authlog checkpoint v1\n<position>\n<hash>\n<time>"
//! ```
//!
//! A batch is signed by the key in force before it: generation 1 at first, and after a
//! [`LogKeyRotated`] (appended alone, so signed by the old key) the generation it names.
//! `docs/auditing.md` says what this proves, and against whom.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::chain::{ChainedRow, hash_row};
use super::{Event, LogKeyRotated, RecordedEvent, StoreError};
use crate::vault::MasterKey;

/// What every head signature signs, before the position and hash.
const HEAD_CONTEXT: &str = "authlog log head v1";
/// What every checkpoint signs, before the position, hash and time.
const CHECKPOINT_CONTEXT: &str = "authlog checkpoint v1";

/// The bytes a batch's signature covers.
pub fn head_message(position: i64, hash: &str) -> String {
    format!("{HEAD_CONTEXT}\n{position}\n{hash}")
}

/// The seed label of generation `generation`'s key.
fn label(generation: u32) -> Vec<u8> {
    format!("authlog log-signing key v1 g{generation}").into_bytes()
}

/// A public key as authlog prints and reads it: the 32 bytes, base64url without padding (as a
/// JWK's `x`).
pub fn encode_key(key: &VerifyingKey) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

/// Reads a public key printed by [`encode_key`].
pub fn parse_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim().as_bytes())
        .map_err(|_| "a log public key is 43 characters of base64url".to_owned())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "a log public key is 32 bytes".to_owned())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "not an Ed25519 public key".to_owned())
}

fn verify(key: &VerifyingKey, message: &str, signature: &str) -> bool {
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(signature.as_bytes()) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(&bytes) else {
        return false;
    };
    key.verify_strict(message.as_bytes(), &signature).is_ok()
}

/// The log-signing keys of one master key, derived on first use. Never printed.
pub struct LogSigner {
    master: MasterKey,
    keys: Mutex<HashMap<u32, SigningKey>>,
    /// The head this process last appended or checked: the next append on top of it need not
    /// check it again.
    known_head: Mutex<Option<(i64, String, u32)>>,
}

impl std::fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogSigner([redacted])")
    }
}

impl LogSigner {
    pub fn new(master: &MasterKey) -> Self {
        Self {
            master: master.clone(),
            keys: Mutex::default(),
            known_head: Mutex::default(),
        }
    }

    fn key(&self, generation: u32) -> SigningKey {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.entry(generation)
            .or_insert_with(|| SigningKey::from_bytes(&self.master.derive(&label(generation))))
            .clone()
    }

    /// The master key the signing keys are derived from (snapshots are sealed under another
    /// key it derives).
    pub(crate) fn master(&self) -> &MasterKey {
        &self.master
    }

    /// Generation `generation`'s public key.
    pub fn public_key(&self, generation: u32) -> VerifyingKey {
        self.key(generation).verifying_key()
    }

    /// The signature of a batch whose last row is `position` with `hash`.
    pub fn sign_head(&self, generation: u32, position: i64, hash: &str) -> String {
        let signature = self
            .key(generation)
            .sign(head_message(position, hash).as_bytes());
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    }

    /// Trust in exactly the keys this master key derives.
    pub fn trust(self: &Arc<Self>) -> Trust {
        Trust {
            root: Root::Master(Arc::clone(self)),
            rotated: BTreeMap::new(),
        }
    }

    /// The generation that signs the next append, if `head` (the log's last position and
    /// hash, read under the append lock) is the head this process last appended or checked:
    /// then it needs no check, and neither its whole row nor the log's rotations need reading.
    /// An empty log starts with generation 1.
    pub fn known_generation(&self, head: Option<(i64, &str)>) -> Option<u32> {
        let Some((position, hash)) = head else {
            return Some(1);
        };
        let known = self
            .known_head
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        known
            .as_ref()
            .filter(|(known, known_hash, _)| *known == position && known_hash == hash)
            .map(|(_, _, generation)| *generation)
    }

    /// Whether an append may go on top of `head`, the log's last row read under the append lock
    /// and not known here ([`LogSigner::known_generation`]), and with which generation to sign
    /// it. `rotation` is the log's latest [`LogKeyRotated`] (its position and generation);
    /// `any_signed` says whether any row carries a signature (asked for an unsigned head), and
    /// `batch_start` is the position of the signed row before the head (asked to see whether
    /// the rotation is in the head's own batch, signed by the key before it). Refuses a head no
    /// key holder signed: appending on top would sign a forged row into the chain.
    pub fn check_head(
        &self,
        head: &ChainedRow,
        rotation: Option<(i64, u32)>,
        any_signed: impl FnOnce() -> Result<bool, StoreError>,
        batch_start: impl FnOnce() -> Result<i64, StoreError>,
    ) -> Result<u32, StoreError> {
        let current = rotation.map_or(1, |(_, generation)| generation);
        let position = head.columns.position;
        let hash = head.hash.clone().unwrap_or_default();
        let untrusted = |why: Why| StoreError::Untrusted { position, why };
        match head.signature.as_deref() {
            None if any_signed()? => return Err(untrusted(Why::Unsigned)),
            // A log written before signing: the first signed append covers it (docs/auditing.md).
            None => return Ok(current),
            Some(signature) => {
                let prev = head.prev_hash.as_deref().unwrap_or_default();
                if head.hash.is_none() || hash_row(prev, &head.columns) != hash {
                    return Err(untrusted(Why::Altered));
                }
                let signed_by = match rotation {
                    Some((at, generation)) if at > batch_start()? => generation.saturating_sub(1),
                    _ => current,
                };
                if !verify(
                    &self.public_key(signed_by),
                    &head_message(position, &hash),
                    signature,
                ) {
                    return Err(untrusted(Why::BadSignature));
                }
            }
        }
        self.remember(position, hash, current);
        Ok(current)
    }

    /// The head this process just appended or checked, and the generation that signs next.
    pub fn remember(&self, position: i64, hash: String, next_generation: u32) {
        *self
            .known_head
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((position, hash, next_generation));
    }

    /// The generation that signs after a batch of `events` signed by `generation`.
    pub fn after_batch<'a>(generation: u32, events: impl IntoIterator<Item = &'a Event>) -> u32 {
        events
            .into_iter()
            .filter_map(|event| match event {
                Event::LogKeyRotated(rotated) => Some(rotated.generation),
                _ => None,
            })
            .last()
            .unwrap_or(generation)
    }

    /// A checkpoint of `position` and `hash` (a head already checked), signed now.
    pub fn checkpoint(&self, generation: u32, position: i64, hash: &str) -> Checkpoint {
        let time = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let key = self.key(generation);
        let message = checkpoint_message(position, hash, &time);
        Checkpoint {
            position,
            hash: hash.to_owned(),
            time,
            key_generation: generation,
            public_key: encode_key(&key.verifying_key()),
            signature: URL_SAFE_NO_PAD.encode(key.sign(message.as_bytes()).to_bytes()),
        }
    }
}

/// Why a row is not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// No signature covers it: nothing signed follows it in the log.
    Unsigned,
    /// Its batch's signature does not verify under the log-signing key in force.
    BadSignature,
    /// Its contents do not match its stored hash.
    Altered,
    /// Its `prev_hash` is not the hash of the row before it.
    Unlinked,
    /// A key rotation names a public key that is not the generation's.
    WrongRotation,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Why::Unsigned => "no log signature covers it",
            Why::BadSignature => {
                "its batch's signature does not verify under the log-signing key (forged, or \
                 this instance's master key is not the log's)"
            }
            Why::Altered => "its contents do not match its hash",
            Why::Unlinked => "its prev_hash is not the previous row's hash",
            Why::WrongRotation => "a log-key rotation names a key that is not the generation's",
        })
    }
}

/// A row a reader refused, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Untrusted {
    pub position: i64,
    pub why: Why,
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the row at position {} is not applied: {}",
            self.position, self.why
        )
    }
}

enum Root {
    /// An instance or auditor with the master key: generation g's key is derived.
    Master(Arc<LogSigner>),
    /// An auditor given the first public key: later ones are learnt from signed rotations.
    PublicKey(VerifyingKey),
}

/// The keys a reader accepts signatures from.
pub struct Trust {
    root: Root,
    /// Keys named by rotations already verified (for a [`Root::PublicKey`]).
    rotated: BTreeMap<u32, VerifyingKey>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Trust")
    }
}

impl Trust {
    /// Trust rooted in generation 1's public key, as an auditor is given it.
    pub fn public_key(key: VerifyingKey) -> Self {
        Self {
            root: Root::PublicKey(key),
            rotated: BTreeMap::new(),
        }
    }

    /// Generation `generation`'s key, if known.
    pub fn key(&self, generation: u32) -> Option<VerifyingKey> {
        match &self.root {
            Root::Master(signer) => Some(signer.public_key(generation)),
            Root::PublicKey(first) if generation == 1 => Some(*first),
            Root::PublicKey(_) => self.rotated.get(&generation).copied(),
        }
    }

    /// Whether `signature` is generation `generation`'s over the head.
    pub fn verifies(&self, generation: u32, position: i64, hash: &str, signature: &str) -> bool {
        self.key(generation)
            .is_some_and(|key| verify(&key, &head_message(position, hash), signature))
    }

    /// Takes in a rotation from a batch whose signature verified.
    pub fn rotate(&mut self, rotated: &LogKeyRotated) -> Result<(), Why> {
        let named = parse_key(&rotated.public_key).map_err(|_| Why::WrongRotation)?;
        match &self.root {
            Root::Master(signer) if signer.public_key(rotated.generation) != named => {
                Err(Why::WrongRotation)
            }
            Root::Master(_) => Ok(()),
            Root::PublicKey(_) => {
                self.rotated.insert(rotated.generation, named);
                Ok(())
            }
        }
    }

    /// Whether `checkpoint`'s signature is by a key this trust knows, for its generation.
    pub fn verifies_checkpoint(&self, checkpoint: &Checkpoint) -> bool {
        self.key(checkpoint.key_generation).is_some_and(|key| {
            encode_key(&key) == checkpoint.public_key
                && verify(
                    &key,
                    &checkpoint_message(checkpoint.position, &checkpoint.hash, &checkpoint.time),
                    &checkpoint.signature,
                )
        })
    }
}

/// One decoded row with its chain links and signature, as the registry reads the log.
#[derive(Debug, Clone)]
pub struct Linked {
    pub event: RecordedEvent,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
    /// Set on the last row of each batch.
    pub signature: Option<String>,
    /// Whether the stored hash is the hash of the row's contents (as stored, sealed).
    pub intact: bool,
}

/// A row's links and signature, and whether its hash matches its contents: all of [`Linked`]
/// but the decoded event.
#[derive(Debug, Clone)]
pub struct Link {
    prev_hash: Option<String>,
    hash: Option<String>,
    signature: Option<String>,
    intact: bool,
}

impl Link {
    /// Splits rows as stored into their columns (to decode) and their links, checking each
    /// row's hash against its contents on the way.
    pub fn split(rows: Vec<ChainedRow>) -> (Vec<super::StoredColumns>, Vec<Link>) {
        rows.into_iter()
            .map(|row| {
                let intact = match (&row.prev_hash, &row.hash) {
                    (Some(prev), Some(hash)) => hash_row(prev, &row.columns) == *hash,
                    _ => false,
                };
                let link = Link {
                    prev_hash: row.prev_hash,
                    hash: row.hash,
                    signature: row.signature,
                    intact,
                };
                (row.columns, link)
            })
            .unzip()
    }

    /// A page read from a store, with its streams and the wrapped keys the store holds for
    /// those not cached: each row parsed, hashed and checked against its stored hash, opened and
    /// decoded, half of the page on the blocking pool meanwhile. A store's own thread then only
    /// reads, and a replay uses both cores.
    pub async fn open_in_parallel<R: Send + 'static>(
        rows: Vec<R>,
        parse: fn(R) -> Result<ChainedRow, StoreError>,
        streams: Vec<uuid::Uuid>,
        shredder: Option<Arc<super::personal::Shredder>>,
        stored: HashMap<uuid::Uuid, Vec<u8>>,
    ) -> Result<Vec<Linked>, StoreError> {
        let keys = match &shredder {
            Some(shredder) => Some(Arc::new(shredder.page_keys_for(streams, &stored)?)),
            None => None,
        };
        let linked = super::pager::in_halves(rows, move |rows: Vec<R>| {
            let rows = rows.into_iter().map(parse).collect::<Result<Vec<_>, _>>()?;
            let (columns, links) = Self::split(rows);
            let events = match keys.as_deref() {
                Some(keys) => keys.open(columns)?,
                None => super::personal::open_rows_sealed(columns)?,
            };
            Ok(Self::join(links, events))
        })
        .await?;
        if let Some(shredder) = &shredder {
            let erased: Vec<uuid::Uuid> = linked
                .iter()
                .filter(|row| matches!(row.event.event, Event::UserErased(_)))
                .map(|row| row.event.stream_id())
                .collect();
            shredder.forget(&erased);
        }
        Ok(linked)
    }

    /// The links joined again with the decoded events, in the same order.
    pub fn join(links: Vec<Link>, events: Vec<RecordedEvent>) -> Vec<Linked> {
        links
            .into_iter()
            .zip(events)
            .map(|(link, event)| Linked {
                event,
                prev_hash: link.prev_hash,
                hash: link.hash,
                signature: link.signature,
                intact: link.intact,
            })
            .collect()
    }
}

/// Rows from before the log was signed, held at most this many at a time (see [`Guard::push`]).
const LEGACY_HOLD: usize = super::READ_PAGE;

/// A reader checks one signature per this many rows (and at the end of each read, and at each
/// key rotation), the last signed row's, which covers all before it.
const VERIFY_EVERY: usize = super::READ_PAGE;

/// What a [`Guard`] step gives: the rows it releases, checked, in order, and the row it refused,
/// after which nothing is released until a later read gets past it.
pub type Step = (Vec<RecordedEvent>, Option<Untrusted>);

/// Applies only rows a signature covers: reads rows in position order, holds each batch until
/// its signed last row verifies, then releases it. Start-up replay, the live tail and `authlog
/// replay` all read through one.
#[derive(Debug)]
pub struct Guard {
    /// `None`: nothing is checked (an auditor with neither the master key nor a public key).
    trust: Option<Trust>,
    position: i64,
    /// The hash at `position`; `None` after this process's own append, whose link the next
    /// appender checks under the append lock.
    hash: Option<String>,
    /// The key generation that signs the next batch.
    generation: u32,
    /// Rows before this position are from before the log was signed, and are released as they
    /// come (the first signature covers them through the chain).
    legacy_until: i64,
    pending: Vec<Linked>,
    /// The index in `pending` of the last signed row.
    last_signed: Option<usize>,
    /// Whether `pending` holds a key rotation.
    rotation_pending: bool,
    alarm: Option<Untrusted>,
    signatures: u64,
}

impl Guard {
    /// A guard for a read from the start of a log whose first signed row is `first_signed`.
    pub fn new(trust: Option<Trust>, first_signed: Option<i64>) -> Self {
        Self {
            trust,
            position: 0,
            hash: Some(super::chain::GENESIS.to_owned()),
            generation: 1,
            legacy_until: first_signed.unwrap_or(i64::MAX),
            pending: Vec::new(),
            last_signed: None,
            rotation_pending: false,
            alarm: None,
            signatures: 0,
        }
    }

    /// A guard reading on after `position`, whose row has `hash`, known from a snapshot this
    /// process's master key sealed: rows after it must link to `hash`, and are signed by
    /// generation `generation` until a rotation.
    pub fn resume(
        trust: Option<Trust>,
        first_signed: Option<i64>,
        position: i64,
        hash: String,
        generation: u32,
    ) -> Self {
        Self {
            position,
            hash: Some(hash),
            generation,
            ..Self::new(trust, first_signed)
        }
    }

    /// The last row released: its position and chain hash (`None` after this process's own
    /// append, whose hash the store knows).
    pub fn head(&self) -> (i64, Option<&str>) {
        (self.position, self.hash.as_deref())
    }

    /// Whether signatures are checked at all.
    pub fn checks(&self) -> bool {
        self.trust.is_some()
    }

    /// The row refused last, until a later read gets past it.
    pub fn alarm(&self) -> Option<Untrusted> {
        self.alarm
    }

    /// Signatures verified so far.
    pub fn signatures(&self) -> u64 {
        self.signatures
    }

    /// The generation that signs the next batch.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// A replay reached the end of the log: rows from now on must be signed, even on a log that
    /// had no signature yet (this version signs every append).
    pub fn end_of_replay(&mut self) {
        self.legacy_until = self.legacy_until.min(self.position + 1);
    }

    /// This process appended `event` (its own store signed it).
    pub fn follow(&mut self, event: &RecordedEvent) {
        if event.position <= self.position {
            return;
        }
        self.position = event.position;
        self.hash = None;
        self.pending.clear();
        if let Event::LogKeyRotated(rotated) = &event.event {
            self.generation = rotated.generation;
        }
    }

    /// Takes the next row read. Returns the rows it completes, checked, in order (a page of
    /// appends once a signature covering them verifies, or rows from before signing), and the
    /// reason to stop reading, if any: nothing after a refused row is applied.
    pub fn push(&mut self, row: Linked) -> Step {
        let last = self
            .pending
            .last()
            .map_or(self.position, |p| p.event.position);
        if row.event.position <= last {
            return (Vec::new(), None);
        }
        let position = row.event.position;
        if self.trust.is_none() {
            self.position = position;
            self.hash = row.hash;
            if let Event::LogKeyRotated(rotated) = &row.event.event {
                self.generation = rotated.generation;
            }
            return (vec![row.event], None);
        }
        if !row.intact {
            return (Vec::new(), Some(self.refuse(position, Why::Altered)));
        }
        let expected = match self.pending.last() {
            Some(previous) => previous.hash.as_ref(),
            None => self.hash.as_ref(),
        };
        if expected.is_some_and(|hash| row.prev_hash.as_ref() != Some(hash)) {
            return (Vec::new(), Some(self.refuse(position, Why::Unlinked)));
        }
        let rotation = matches!(row.event.event, Event::LogKeyRotated(_));
        let signed = row.signature.is_some();
        self.pending.push(row);
        self.rotation_pending |= rotation;
        if signed {
            self.last_signed = Some(self.pending.len() - 1);
            // A rotation is checked under the key before it, as its own append ends, so that
            // the key it names is trusted before anything it signed is checked.
            if self.rotation_pending || self.pending.len() >= VERIFY_EVERY {
                return self.release_signed();
            }
        } else if self.last_signed.is_none()
            && position < self.legacy_until
            && self.pending.len() >= LEGACY_HOLD
        {
            // Before the first signature: held like any append's rows, so a new log's first
            // append is checked whole, but released unsigned once a long prefix written before
            // signing would otherwise all be held in memory.
            let held = std::mem::take(&mut self.pending);
            return (self.release(held), None);
        }
        (Vec::new(), None)
    }

    /// Checks the signature of the last signed row held, and releases it and every row before
    /// it: the head it signs commits to all of them through the chain, each row's hash and link
    /// checked on the way in. One check per page of rows rather than one per append, since a
    /// log of small appends has nearly as many signatures as rows. If it fails, the signatures
    /// before it are checked one by one: what the last good one covers is released, and the
    /// first bad one is refused.
    fn release_signed(&mut self) -> Step {
        let Some(index) = self.last_signed.take() else {
            return (Vec::new(), None);
        };
        let Some(trust) = &self.trust else {
            return (Vec::new(), None);
        };
        let generation = self.generation;
        let verifies = |row: &Linked| {
            trust.verifies(
                generation,
                row.event.position,
                row.hash.as_deref().unwrap_or_default(),
                row.signature.as_deref().unwrap_or_default(),
            )
        };
        if !verifies(&self.pending[index]) {
            let bad = self.pending[..=index]
                .iter()
                .position(|row| row.signature.is_some() && !verifies(row))
                .unwrap_or(index);
            let position = self.pending[bad].event.position;
            let good = self.pending[..bad]
                .iter()
                .rposition(|row| row.signature.is_some());
            let (released, _) = match good {
                Some(good) => {
                    self.pending.truncate(good + 1);
                    self.last_signed = Some(good);
                    self.release_signed()
                }
                None => (Vec::new(), None),
            };
            return (released, Some(self.refuse(position, Why::BadSignature)));
        }
        self.signatures += 1;
        let rest = self.pending.split_off(index + 1);
        let signed = std::mem::replace(&mut self.pending, rest);
        self.rotation_pending = false;
        for row in &signed {
            if let Event::LogKeyRotated(rotated) = &row.event.event {
                let rotate = self.trust.as_mut().map(|trust| trust.rotate(rotated));
                if let Some(Err(why)) = rotate {
                    return (Vec::new(), Some(self.refuse(row.event.position, why)));
                }
                self.generation = rotated.generation;
            }
        }
        (self.release(signed), None)
    }

    /// Applies `rows`, checked, from the guard's point of view: its position moves past them.
    fn release(&mut self, rows: Vec<Linked>) -> Vec<RecordedEvent> {
        if let Some(last) = rows.last() {
            self.position = last.event.position;
            self.hash = last.hash.clone();
            if self
                .alarm
                .is_some_and(|alarm| alarm.position <= self.position)
            {
                self.alarm = None;
            }
        }
        rows.into_iter().map(|row| row.event).collect()
    }

    /// Drops what is held and raises the alarm for `position`.
    fn refuse(&mut self, position: i64, why: Why) -> Untrusted {
        self.pending.clear();
        self.last_signed = None;
        self.rotation_pending = false;
        let untrusted = Untrusted { position, why };
        self.alarm = Some(untrusted);
        untrusted
    }

    /// Ends a read at the end of the log: the rows up to the last signed one are checked and
    /// released. Rows after it have no signature after them: those from before the log was
    /// signed (a log never signed yet) are released; any other stays unapplied, raising the
    /// alarm, and the next read (from the last row released) sees it again.
    pub fn finish_read(&mut self) -> Step {
        let (mut released, refused) = self.release_signed();
        if refused.is_some() {
            return (released, refused);
        }
        let Some(first) = self.pending.first().map(|row| row.event.position) else {
            return (released, None);
        };
        let last = self.pending.last().map_or(first, |row| row.event.position);
        if last < self.legacy_until {
            let held = std::mem::take(&mut self.pending);
            released.extend(self.release(held));
            return (released, None);
        }
        (released, Some(self.refuse(first, Why::Unsigned)))
    }
}

/// A signed checkpoint: anchors the log's head outside the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub position: i64,
    pub hash: String,
    /// When it was made, RFC 3339 UTC.
    pub time: String,
    pub key_generation: u32,
    /// The signing key's public half (base64url), for convenience: a verifier checks it is the
    /// generation's key it trusts.
    pub public_key: String,
    pub signature: String,
}

fn checkpoint_message(position: i64, hash: &str, time: &str) -> String {
    format!("{CHECKPOINT_CONTEXT}\n{position}\n{hash}\n{time}")
}

impl Checkpoint {
    pub fn time(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.time)
            .ok()
            .map(|at| at.with_timezone(&Utc))
    }
}

/// Checks signatures row by row over rows as stored, for `authlog verify`, after the chain check
/// has passed each row: every row must be covered by a later signed row, and each signature be
/// the key's in force (rotations take effect after the batch that carries them).
#[derive(Debug)]
pub struct RowSignatures {
    trust: Trust,
    generation: u32,
    /// The first row since the last signature.
    pending_from: Option<i64>,
    pending_rotations: Vec<LogKeyRotated>,
    checked: u64,
}

impl RowSignatures {
    pub fn new(trust: Trust) -> Self {
        Self {
            trust,
            generation: 1,
            pending_from: None,
            pending_rotations: Vec::new(),
            checked: 0,
        }
    }

    pub fn checked(&self) -> u64 {
        self.checked
    }

    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The key generation in force after the rows checked so far.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Checks the next row, whose hash has been checked against its contents.
    pub fn check(&mut self, row: &ChainedRow) -> Result<(), Untrusted> {
        let position = row.columns.position;
        if row.columns.event_type == Event::LOG_KEY_ROTATED {
            let rotated = serde_json::from_value::<LogKeyRotated>(row.columns.payload.clone())
                .map_err(|_| Untrusted {
                    position,
                    why: Why::WrongRotation,
                })?;
            self.pending_rotations.push(rotated);
        }
        let Some(signature) = &row.signature else {
            self.pending_from.get_or_insert(position);
            return Ok(());
        };
        let hash = row.hash.as_deref().unwrap_or_default();
        if !self
            .trust
            .verifies(self.generation, position, hash, signature)
        {
            return Err(Untrusted {
                position,
                why: Why::BadSignature,
            });
        }
        self.checked += 1;
        for rotated in std::mem::take(&mut self.pending_rotations) {
            self.trust
                .rotate(&rotated)
                .map_err(|why| Untrusted { position, why })?;
            self.generation = rotated.generation;
        }
        self.pending_from = None;
        Ok(())
    }

    /// At the end of the log: rows after the last signature are covered by none.
    pub fn finish(&self) -> Result<(), Untrusted> {
        match self.pending_from {
            Some(position) => Err(Untrusted {
                position,
                why: Why::Unsigned,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;
    use crate::events::chain::GENESIS;
    use crate::events::testing::recorded;
    use crate::events::{LoginSucceeded, StoredColumns};

    /// Builds a log row by row as an appender would: each batch's last row signed by `signer`.
    struct Log {
        signer: Arc<LogSigner>,
        rows: Vec<Linked>,
        head: String,
    }

    impl Log {
        fn new() -> Self {
            Self {
                signer: Arc::new(LogSigner::new(&MasterKey::random())),
                rows: Vec::new(),
                head: GENESIS.to_owned(),
            }
        }

        /// Appends `events` as one batch, signed by `generation` (or unsigned with `None`).
        fn append(&mut self, events: Vec<Event>, generation: Option<u32>) -> &mut Self {
            let count = events.len();
            for (n, event) in events.into_iter().enumerate() {
                let position = self.rows.len() as i64 + 1;
                let event = recorded(position, position as i32, event);
                let row = ChainedRow {
                    columns: StoredColumns {
                        position,
                        stream_id: event.event.stream_id(),
                        stream_version: event.stream_version,
                        event_type: event.event.event_type().to_owned(),
                        event_version: 1,
                        payload: event.event.payload(),
                        metadata: serde_json::json!({}),
                        recorded_at: event.recorded_at,
                    },
                    prev_hash: Some(self.head.clone()),
                    hash: None,
                    signature: None,
                    stored: None,
                };
                let hash = hash_row(&self.head, &row.columns);
                let signature = generation
                    .filter(|_| n + 1 == count)
                    .map(|generation| self.signer.sign_head(generation, position, &hash));
                let row = ChainedRow {
                    hash: Some(hash.clone()),
                    signature,
                    ..row
                };
                self.head = hash;
                let (_, links) = Link::split(vec![row]);
                self.rows.extend(Link::join(links, vec![event]));
            }
            self
        }

        fn guard(&self) -> Guard {
            let first_signed = self
                .rows
                .iter()
                .find(|row| row.signature.is_some())
                .map(|row| row.event.position);
            Guard::new(Some(self.signer.trust()), first_signed)
        }
    }

    fn login() -> Event {
        Event::LoginSucceeded(LoginSucceeded {
            user_id: UserId::new(),
        })
    }

    fn push_all(guard: &mut Guard, rows: &[Linked]) -> (Vec<i64>, Option<Untrusted>) {
        let mut released = Vec::new();
        for row in rows {
            let (batch, refused) = guard.push(row.clone());
            released.extend(batch.iter().map(|event| event.position));
            if refused.is_some() {
                return (released, refused);
            }
        }
        let (batch, alarm) = guard.finish_read();
        released.extend(batch.iter().map(|event| event.position));
        (released, alarm)
    }

    #[test]
    fn rows_are_held_until_a_signature_covering_them_verifies_once_per_read() {
        let mut log = Log::new();
        log.append(vec![login(), login(), login()], Some(1))
            .append(vec![login()], Some(1));
        let mut guard = log.guard();
        for row in &log.rows {
            let (released, refused) = guard.push(row.clone());
            assert!(
                released.is_empty() && refused.is_none(),
                "held to the end of the read"
            );
        }
        let (released, refused) = guard.finish_read();
        assert_eq!(released.len(), 4);
        assert_eq!(refused, None);
        // The last signature covers the whole read: one check, not one per append.
        assert_eq!(guard.signatures(), 1);
    }

    #[test]
    fn a_bad_signature_among_good_ones_is_found_and_what_comes_before_released() {
        let mut log = Log::new();
        log.append(vec![login()], Some(1))
            .append(vec![login()], Some(1));
        let mut stranger = Log::new();
        stranger.head = log.head.clone();
        stranger.rows = log.rows.clone();
        stranger.append(vec![login()], Some(1));
        stranger.append(vec![login()], Some(1));
        let rows = stranger.rows.clone();
        let (released, alarm) = push_all(&mut log.guard(), &rows);
        assert_eq!(released, vec![1, 2]);
        assert_eq!(
            alarm.map(|a| (a.position, a.why)),
            Some((3, Why::BadSignature))
        );
    }

    #[test]
    fn an_unsigned_tail_is_held_and_raises_the_alarm() {
        let mut log = Log::new();
        log.append(vec![login()], Some(1))
            .append(vec![login()], None);
        let (released, alarm) = push_all(&mut log.guard(), &log.rows);
        assert_eq!(released, vec![1]);
        assert_eq!(
            alarm,
            Some(Untrusted {
                position: 2,
                why: Why::Unsigned
            })
        );
    }

    #[test]
    fn a_signature_by_another_key_an_altered_row_and_a_broken_link_are_refused() {
        let mut log = Log::new();
        log.append(vec![login()], Some(1));
        let mut stranger = Log::new();
        stranger.head = log.head.clone();
        stranger.rows = log.rows.clone();
        stranger.append(vec![login()], Some(1));
        let (released, alarm) = push_all(&mut log.guard(), &stranger.rows);
        assert_eq!(released, vec![1]);
        assert_eq!(alarm.map(|a| a.why), Some(Why::BadSignature));

        log.append(vec![login()], Some(1));
        let mut altered = log.rows.clone();
        altered[1].intact = false;
        let (_, alarm) = push_all(&mut log.guard(), &altered);
        assert_eq!(alarm.map(|a| (a.position, a.why)), Some((2, Why::Altered)));

        let mut unlinked = log.rows.clone();
        unlinked[1].prev_hash = Some(GENESIS.to_owned());
        let (_, alarm) = push_all(&mut log.guard(), &unlinked);
        assert_eq!(alarm.map(|a| (a.position, a.why)), Some((2, Why::Unlinked)));
    }

    #[test]
    fn a_rotation_hands_signing_to_the_next_generation_after_its_batch() {
        let mut log = Log::new();
        let rotated = |log: &Log| {
            Event::LogKeyRotated(LogKeyRotated {
                generation: 2,
                public_key: encode_key(&log.signer.public_key(2)),
            })
        };
        let rotation = rotated(&log);
        log.append(vec![login()], Some(1))
            .append(vec![rotation], Some(1))
            .append(vec![login()], Some(2));
        let mut guard = log.guard();
        let (released, alarm) = push_all(&mut guard, &log.rows);
        assert_eq!((released, alarm), (vec![1, 2, 3], None));
        assert_eq!(guard.generation(), 2);

        // The old key signs nothing after the rotation.
        let mut stale = Log::new();
        let rotation = rotated(&stale);
        stale
            .append(vec![rotation], Some(1))
            .append(vec![login()], Some(1));
        let (released, alarm) = push_all(&mut stale.guard(), &stale.rows);
        assert_eq!(released, vec![1]);
        assert_eq!(
            alarm.map(|a| (a.position, a.why)),
            Some((2, Why::BadSignature))
        );

        // An auditor pinning generation 1 learns generation 2 from the log.
        let mut auditor = Guard::new(Some(Trust::public_key(log.signer.public_key(1))), Some(1));
        let (released, alarm) = push_all(&mut auditor, &log.rows);
        assert_eq!((released, alarm), (vec![1, 2, 3], None));
    }

    #[test]
    fn rows_from_before_signing_are_covered_by_the_first_signature() {
        let mut log = Log::new();
        log.append(vec![login()], None)
            .append(vec![login()], None)
            .append(vec![login()], Some(1));
        let (released, alarm) = push_all(&mut log.guard(), &log.rows);
        assert_eq!((released, alarm), (vec![1, 2, 3], None));

        // A log never signed yet is released at its end, and signed rows are required after.
        let mut unsigned = Log::new();
        unsigned.append(vec![login(), login()], None);
        let mut guard = unsigned.guard();
        assert_eq!(push_all(&mut guard, &unsigned.rows), (vec![1, 2], None));
        guard.end_of_replay();
        unsigned.append(vec![login()], None);
        let (released, alarm) = push_all(&mut guard, &unsigned.rows[2..]);
        assert_eq!(released, Vec::<i64>::new());
        assert_eq!(alarm.map(|a| (a.position, a.why)), Some((3, Why::Unsigned)));
    }

    #[test]
    fn the_alarm_clears_once_a_read_gets_past_the_refused_row() {
        let mut log = Log::new();
        log.append(vec![login()], Some(1))
            .append(vec![login()], None);
        let mut guard = log.guard();
        let (_, alarm) = push_all(&mut guard, &log.rows);
        assert!(alarm.is_some());
        // The operator removes the row; an honest append takes its place.
        log.rows.pop();
        log.head = log.rows[0].hash.clone().expect("a hash");
        log.append(vec![login()], Some(1));
        let (released, alarm) = push_all(&mut guard, &log.rows[1..]);
        assert_eq!((released, alarm), (vec![2], None));
        assert_eq!(guard.alarm(), None);
    }

    #[test]
    fn checkpoints_verify_under_the_key_that_made_them_only() {
        let signer = Arc::new(LogSigner::new(&MasterKey::random()));
        let checkpoint = signer.checkpoint(1, 7, GENESIS);
        assert!(signer.trust().verifies_checkpoint(&checkpoint));
        let moved = Checkpoint {
            position: 8,
            ..checkpoint.clone()
        };
        assert!(!signer.trust().verifies_checkpoint(&moved));
        let stranger = Arc::new(LogSigner::new(&MasterKey::random()));
        assert!(!stranger.trust().verifies_checkpoint(&checkpoint));
    }
}
