//! The event log: what happened, how it is stored, and the `EventStore` seam every backend fills.
//!
//! Events are facts in the past tense. Each carries a type name and a schema version, stored in
//! their own columns, so that old payloads can be upcast before they are deserialised.

pub mod chain;
pub mod listen;
mod memory;
pub mod pager;
pub mod personal;
mod postgres;
pub mod signed;
mod sqlite;
#[cfg(test)]
pub(crate) mod testing;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{Email, KeyAlgorithm, KeyId, PasswordHash, Role, SessionId, UserId};
use crate::sessions::{Rotated, Rotation, SessionWrite};

pub use memory::InMemoryEventStore;
pub use pager::{Pager, READ_PAGE, events_after, linked_after, rows_after};
pub use postgres::{PostgresEventStore, PostgresSettings};
pub use sqlite::{SqliteEventStore, SqliteSettings};

/// Everything that can happen to a user, in the order it may happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    UserRegistered(UserRegistered),
    LoginSucceeded(LoginSucceeded),
    LoginFailed(LoginFailed),
    PasswordRehashed(PasswordRehashed),
    SessionStarted(SessionStarted),
    SessionEnded(SessionEnded),
    PasswordChanged(PasswordChanged),
    SigningKeyAdded(SigningKeyAdded),
    SigningKeyActivated(SigningKeyActivated),
    SigningKeyRetired(SigningKeyRetired),
    RoleGranted(RoleGranted),
    RoleRevoked(RoleRevoked),
    UserDisabled(UserDisabled),
    UserEnabled(UserEnabled),
    LockoutCleared(LockoutCleared),
    UserErased(UserErased),
    LogKeyRotated(LogKeyRotated),
    /// A user's event whose personal fields this reader cannot open (never appended).
    Redacted(Redacted),
}

/// The stream of the token signing keys: one for the whole log, so its stream versions order
/// every key change, and two instances deciding the same rotation cannot both append it. A
/// version-8 ("custom") UUID, so no random (version-4) user id can equal it; `6b657973` is
/// "keys" in ASCII.
pub const SIGNING_KEYS_STREAM: uuid::Uuid =
    uuid::Uuid::from_u128(0x6b65_7973_0000_8000_8000_0000_0000_0000);

/// The stream of the log-signing keys ([`signed`]): their rotations, in order. `6c6f676b` is
/// "logk" in ASCII.
pub const LOG_KEYS_STREAM: uuid::Uuid =
    uuid::Uuid::from_u128(0x6c6f_676b_0000_8000_8000_0000_0000_0000);

/// From the next append on, the log is signed by generation `generation`'s key, whose public
/// half this names. Appended alone, so the batch that carries it is signed by the key before:
/// the old key vouches for the new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogKeyRotated {
    pub generation: u32,
    /// Ed25519, base64url (as `authlog verify --public-key` takes it).
    pub public_key: String,
}

/// A new account: the first event of every user stream (stream version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: UserId,
    pub email: Email,
    pub password_hash: PasswordHash,
    /// Set when the user was brought from another system by `authlog import` rather than
    /// signing up; absent otherwise (and in every event written before imports existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<Imported>,
}

/// Where an imported user came from: which source, and which row of it.
///
/// Not personal data, so it stays readable after an erasure: that is how a second run of the
/// same import knows not to bring an erased user back (docs/decisions.md, "Importing users").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    /// The source as `authlog import --source` names it: by default `postgresql:<database>/<table>`,
    /// `jsonl:<file name>` or `csv:<file name>`.
    pub source: String,
    /// The source row's id (the tutorial table's `id`), if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The row's number in the source as read (1 is the first row; in a file, its line).
    pub row: u64,
    /// When the source says the account was created; the directory's `created_at` is this
    /// rather than the time of the import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

/// A password check passed and a token is about to be issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginSucceeded {
    pub user_id: UserId,
}

/// A password check failed for this user. The client address is in the metadata; the
/// throttling rules are derived from these events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginFailed {
    pub user_id: UserId,
}

/// A successful login found the stored hash weaker than the configured cost, and replaced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordRehashed {
    pub user_id: UserId,
    pub password_hash: PasswordHash,
}

/// A login started a session: its refresh token (kept beside the log, as a hash) and its access
/// tokens carry `session_id`. Where from is in the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStarted {
    pub user_id: UserId,
    pub session_id: SessionId,
    /// The absolute end of the session, however often it is refreshed.
    pub expires_at: DateTime<Utc>,
    /// The idle timeout in force when it started: unused this long, its refresh token expires.
    pub idle_seconds: u64,
}

/// A session ended before its time, and why. Its access and refresh tokens stop working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnded {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub reason: EndReason,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// `POST /logout` from this session.
    Logout,
    /// `POST /logout/all` from any session of the user.
    LogoutAll,
    /// `DELETE /sessions/{id}` from another session of the user.
    Revoked,
    /// The user changed their password from another session.
    PasswordChanged,
    /// A spent refresh token of this session was presented again after the grace: theft.
    RefreshTokenReused,
    /// One of the user's roles was revoked: no token may go on carrying it.
    RoleRevoked,
    /// An admin disabled the user.
    Disabled,
    /// The user was erased.
    Erased,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::LogoutAll => "logout_all",
            EndReason::Revoked => "revoked",
            EndReason::PasswordChanged => "password_changed",
            EndReason::RefreshTokenReused => "refresh_token_reused",
            EndReason::RoleRevoked => "role_revoked",
            EndReason::Disabled => "disabled",
            EndReason::Erased => "erased",
        }
    }
}

/// The user was given a role. Who gave it is the metadata's `actor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleGranted {
    pub user_id: UserId,
    pub role: Role,
}

/// The user lost a role, and with it every session (`SessionEnded`, `role_revoked`, in the same
/// append), so no token goes on carrying it. Who took it is the metadata's `actor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRevoked {
    pub user_id: UserId,
    pub role: Role,
}

/// An admin disabled the user: their logins fail as a wrong password does, and every session
/// of theirs ends (`SessionEnded`, `disabled`, in the same append).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDisabled {
    pub user_id: UserId,
}

/// An admin enabled a disabled user again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEnabled {
    pub user_id: UserId,
}

/// An admin cleared the user's login lockout: the failures that count towards it, from every
/// address, are forgotten as of this event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutCleared {
    pub user_id: UserId,
}

/// The user was erased, by their own request (`DELETE /account`) or an admin's: their data key
/// is destroyed in the same transaction, so every personal field they left in the log is
/// unreadable from now on, and their email may sign up again as a new user. Every session of
/// theirs ends in the same append (`SessionEnded`, `erased`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserErased {
    pub user_id: UserId,
}

/// A user's event read without the key to its personal fields: the user was erased, or the
/// reader has no master key. Its payload shows each such field as `"<erased>"` or
/// `"<sealed>"`; the projection ignores it (an erased user's `UserErased` follows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted {
    pub user_id: UserId,
    pub event_type: &'static str,
    pub event_version: i32,
    pub payload: Value,
    pub why: personal::Redaction,
}

/// The user changed their password (knowing the old one): the old one stops working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordChanged {
    pub user_id: UserId,
    pub password_hash: PasswordHash,
}

/// A token signing key was made. It is published (in `/.well-known/jwks.json`) from now on, and
/// signs only once a [`SigningKeyActivated`] names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyAdded {
    /// Its RFC 7638 thumbprint: the `kid` of every token it signs.
    pub key_id: KeyId,
    pub algorithm: KeyAlgorithm,
    /// The public key (Ed25519: 32 bytes), base64url.
    #[serde(with = "base64url")]
    pub public_key: Vec<u8>,
    /// The private key sealed under the master key ([`crate::vault`]: XChaCha20-Poly1305, bound
    /// to the key id), base64url. Useless without the master key, which is never in the log.
    #[serde(with = "base64url")]
    pub sealed_private_key: Vec<u8>,
}

/// From now on this key signs every new token; the key that signed before keeps verifying the
/// tokens it signed until it is retired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyActivated {
    pub key_id: KeyId,
}

/// This key is no longer published, and tokens it signed are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRetired {
    pub key_id: KeyId,
}

/// Bytes as base64url without padding, in event payloads.
mod base64url {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// A stored payload that could not be turned back into an [`Event`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {event_type:?} version {event_version}")]
    Unknown {
        event_type: String,
        event_version: i32,
    },
    #[error("malformed {event_type} payload")]
    Payload {
        event_type: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("malformed metadata")]
    Metadata(#[source] serde_json::Error),
    #[error(
        "the payload's stream (its user_id, or the signing keys') does not match the stream_id column"
    )]
    StreamMismatch,
    #[error("the sealed {0} does not open under its user's key")]
    Sealed(&'static str),
    #[error("malformed {column} column")]
    Column {
        column: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Event {
    pub const USER_REGISTERED: &'static str = "UserRegistered";
    pub const LOGIN_SUCCEEDED: &'static str = "LoginSucceeded";
    pub const LOGIN_FAILED: &'static str = "LoginFailed";
    pub const PASSWORD_REHASHED: &'static str = "PasswordRehashed";
    pub const SESSION_STARTED: &'static str = "SessionStarted";
    pub const SESSION_ENDED: &'static str = "SessionEnded";
    pub const PASSWORD_CHANGED: &'static str = "PasswordChanged";
    pub const SIGNING_KEY_ADDED: &'static str = "SigningKeyAdded";
    pub const SIGNING_KEY_ACTIVATED: &'static str = "SigningKeyActivated";
    pub const SIGNING_KEY_RETIRED: &'static str = "SigningKeyRetired";
    pub const ROLE_GRANTED: &'static str = "RoleGranted";
    pub const ROLE_REVOKED: &'static str = "RoleRevoked";
    pub const USER_DISABLED: &'static str = "UserDisabled";
    pub const USER_ENABLED: &'static str = "UserEnabled";
    pub const LOCKOUT_CLEARED: &'static str = "LockoutCleared";
    pub const USER_ERASED: &'static str = "UserErased";
    pub const LOG_KEY_ROTATED: &'static str = "LogKeyRotated";
    /// Every event type this build knows, for auditors' filters.
    pub const TYPES: [&'static str; 17] = [
        Self::USER_REGISTERED,
        Self::LOGIN_SUCCEEDED,
        Self::LOGIN_FAILED,
        Self::PASSWORD_REHASHED,
        Self::SESSION_STARTED,
        Self::SESSION_ENDED,
        Self::PASSWORD_CHANGED,
        Self::SIGNING_KEY_ADDED,
        Self::SIGNING_KEY_ACTIVATED,
        Self::SIGNING_KEY_RETIRED,
        Self::ROLE_GRANTED,
        Self::ROLE_REVOKED,
        Self::USER_DISABLED,
        Self::USER_ENABLED,
        Self::LOCKOUT_CLEARED,
        Self::USER_ERASED,
        Self::LOG_KEY_ROTATED,
    ];

    /// The `event_type` column.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::UserRegistered(_) => Self::USER_REGISTERED,
            Event::LoginSucceeded(_) => Self::LOGIN_SUCCEEDED,
            Event::LoginFailed(_) => Self::LOGIN_FAILED,
            Event::PasswordRehashed(_) => Self::PASSWORD_REHASHED,
            Event::SessionStarted(_) => Self::SESSION_STARTED,
            Event::SessionEnded(_) => Self::SESSION_ENDED,
            Event::PasswordChanged(_) => Self::PASSWORD_CHANGED,
            Event::SigningKeyAdded(_) => Self::SIGNING_KEY_ADDED,
            Event::SigningKeyActivated(_) => Self::SIGNING_KEY_ACTIVATED,
            Event::SigningKeyRetired(_) => Self::SIGNING_KEY_RETIRED,
            Event::RoleGranted(_) => Self::ROLE_GRANTED,
            Event::RoleRevoked(_) => Self::ROLE_REVOKED,
            Event::UserDisabled(_) => Self::USER_DISABLED,
            Event::UserEnabled(_) => Self::USER_ENABLED,
            Event::LockoutCleared(_) => Self::LOCKOUT_CLEARED,
            Event::UserErased(_) => Self::USER_ERASED,
            Event::LogKeyRotated(_) => Self::LOG_KEY_ROTATED,
            Event::Redacted(redacted) => redacted.event_type,
        }
    }

    /// The `event_version` column: bump it when a payload's shape changes, and add an upcaster.
    pub fn event_version(&self) -> i32 {
        match self {
            Event::UserRegistered(_)
            | Event::LoginSucceeded(_)
            | Event::LoginFailed(_)
            | Event::PasswordRehashed(_)
            | Event::SessionStarted(_)
            | Event::SessionEnded(_)
            | Event::PasswordChanged(_)
            | Event::SigningKeyAdded(_)
            | Event::SigningKeyActivated(_)
            | Event::SigningKeyRetired(_)
            | Event::RoleGranted(_)
            | Event::RoleRevoked(_)
            | Event::UserDisabled(_)
            | Event::UserEnabled(_)
            | Event::LockoutCleared(_)
            | Event::UserErased(_)
            | Event::LogKeyRotated(_) => 1,
            Event::Redacted(redacted) => redacted.event_version,
        }
    }

    /// The user this event is about, if it is about one (its stream is then the user's).
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Event::UserRegistered(e) => Some(e.user_id),
            Event::LoginSucceeded(e) => Some(e.user_id),
            Event::LoginFailed(e) => Some(e.user_id),
            Event::PasswordRehashed(e) => Some(e.user_id),
            Event::SessionStarted(e) => Some(e.user_id),
            Event::SessionEnded(e) => Some(e.user_id),
            Event::PasswordChanged(e) => Some(e.user_id),
            Event::RoleGranted(e) => Some(e.user_id),
            Event::RoleRevoked(e) => Some(e.user_id),
            Event::UserDisabled(e) => Some(e.user_id),
            Event::UserEnabled(e) => Some(e.user_id),
            Event::LockoutCleared(e) => Some(e.user_id),
            Event::UserErased(e) => Some(e.user_id),
            Event::Redacted(e) => Some(e.user_id),
            Event::SigningKeyAdded(_)
            | Event::SigningKeyActivated(_)
            | Event::SigningKeyRetired(_)
            | Event::LogKeyRotated(_) => None,
        }
    }

    /// The stream this event belongs to: its user's, [`LOG_KEYS_STREAM`] or
    /// [`SIGNING_KEYS_STREAM`].
    pub fn stream_id(&self) -> uuid::Uuid {
        match (self, self.user_id()) {
            (_, Some(user)) => user.as_uuid(),
            (Event::LogKeyRotated(_), None) => LOG_KEYS_STREAM,
            (_, None) => SIGNING_KEYS_STREAM,
        }
    }

    /// The `payload` column.
    pub fn payload(&self) -> Value {
        let encoded = match self {
            Event::UserRegistered(e) => serde_json::to_value(e),
            Event::LoginSucceeded(e) => serde_json::to_value(e),
            Event::LoginFailed(e) => serde_json::to_value(e),
            Event::PasswordRehashed(e) => serde_json::to_value(e),
            Event::SessionStarted(e) => serde_json::to_value(e),
            Event::SessionEnded(e) => serde_json::to_value(e),
            Event::PasswordChanged(e) => serde_json::to_value(e),
            Event::SigningKeyAdded(e) => serde_json::to_value(e),
            Event::SigningKeyActivated(e) => serde_json::to_value(e),
            Event::SigningKeyRetired(e) => serde_json::to_value(e),
            Event::RoleGranted(e) => serde_json::to_value(e),
            Event::RoleRevoked(e) => serde_json::to_value(e),
            Event::UserDisabled(e) => serde_json::to_value(e),
            Event::UserEnabled(e) => serde_json::to_value(e),
            Event::LockoutCleared(e) => serde_json::to_value(e),
            Event::UserErased(e) => serde_json::to_value(e),
            Event::LogKeyRotated(e) => serde_json::to_value(e),
            Event::Redacted(e) => Ok(e.payload.clone()),
        };
        // These structs hold only strings, numbers, times, UUIDs and bytes (as strings), whose
        // serialisation cannot fail.
        encoded.unwrap_or(Value::Null)
    }

    /// Rebuilds an event from its stored columns, upcasting older versions first.
    pub fn decode(
        event_type: &str,
        event_version: i32,
        payload: Value,
    ) -> Result<Self, DecodeError> {
        let (event_version, payload) = upcast(event_type, event_version, payload);
        match (event_type, event_version) {
            (Self::USER_REGISTERED, 1) => {
                parse(Self::USER_REGISTERED, payload, Event::UserRegistered)
            }
            (Self::LOGIN_SUCCEEDED, 1) => {
                parse(Self::LOGIN_SUCCEEDED, payload, Event::LoginSucceeded)
            }
            (Self::LOGIN_FAILED, 1) => parse(Self::LOGIN_FAILED, payload, Event::LoginFailed),
            (Self::PASSWORD_REHASHED, 1) => {
                parse(Self::PASSWORD_REHASHED, payload, Event::PasswordRehashed)
            }
            (Self::SESSION_STARTED, 1) => {
                parse(Self::SESSION_STARTED, payload, Event::SessionStarted)
            }
            (Self::SESSION_ENDED, 1) => parse(Self::SESSION_ENDED, payload, Event::SessionEnded),
            (Self::PASSWORD_CHANGED, 1) => {
                parse(Self::PASSWORD_CHANGED, payload, Event::PasswordChanged)
            }
            (Self::SIGNING_KEY_ADDED, 1) => {
                parse(Self::SIGNING_KEY_ADDED, payload, Event::SigningKeyAdded)
            }
            (Self::SIGNING_KEY_ACTIVATED, 1) => parse(
                Self::SIGNING_KEY_ACTIVATED,
                payload,
                Event::SigningKeyActivated,
            ),
            (Self::SIGNING_KEY_RETIRED, 1) => {
                parse(Self::SIGNING_KEY_RETIRED, payload, Event::SigningKeyRetired)
            }
            (Self::ROLE_GRANTED, 1) => parse(Self::ROLE_GRANTED, payload, Event::RoleGranted),
            (Self::ROLE_REVOKED, 1) => parse(Self::ROLE_REVOKED, payload, Event::RoleRevoked),
            (Self::USER_DISABLED, 1) => parse(Self::USER_DISABLED, payload, Event::UserDisabled),
            (Self::USER_ENABLED, 1) => parse(Self::USER_ENABLED, payload, Event::UserEnabled),
            (Self::LOCKOUT_CLEARED, 1) => {
                parse(Self::LOCKOUT_CLEARED, payload, Event::LockoutCleared)
            }
            (Self::USER_ERASED, 1) => parse(Self::USER_ERASED, payload, Event::UserErased),
            (Self::LOG_KEY_ROTATED, 1) => {
                parse(Self::LOG_KEY_ROTATED, payload, Event::LogKeyRotated)
            }
            _ => Err(DecodeError::Unknown {
                event_type: event_type.to_owned(),
                event_version,
            }),
        }
    }
}

/// Deserialises one event type's payload and wraps it as an [`Event`].
fn parse<T: serde::de::DeserializeOwned>(
    event_type: &'static str,
    payload: Value,
    wrap: fn(T) -> Event,
) -> Result<Event, DecodeError> {
    serde_json::from_value(payload)
        .map(wrap)
        .map_err(|source| DecodeError::Payload { event_type, source })
}

/// Turns an old payload into the current version's shape (`Value -> Value`), one step at a time.
///
/// Every event type is still at version 1, so nothing needs upcasting yet. When a payload changes,
/// add an arm here that rewrites version N into N+1, and bump [`Event::event_version`].
fn upcast(_event_type: &str, event_version: i32, payload: Value) -> (i32, Value) {
    (event_version, payload)
}

/// Where a request came from: kept with each event for auditors, never used for decisions here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// The TCP peer address. Proxy headers are not trusted yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<IpAddr>,
    /// Truncated to [`EventMetadata::MAX_USER_AGENT`] bytes, so a client cannot bloat the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Who or what made a change no request asked for: `authlog keys rotate`, or the rotation
    /// schedule. Absent for requests (their address says where they came from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Set on reading when the address and user agent were sealed and cannot be opened (the
    /// user was erased, or the reader has no master key): both then read as absent.
    #[serde(skip)]
    pub redacted: Option<personal::Redaction>,
}

impl EventMetadata {
    pub const MAX_USER_AGENT: usize = 256;

    pub fn new(client_ip: Option<IpAddr>, user_agent: Option<&str>) -> Self {
        let user_agent = user_agent.map(|agent| {
            let mut end = agent.len().min(Self::MAX_USER_AGENT);
            while !agent.is_char_boundary(end) {
                end -= 1;
            }
            agent[..end].to_owned()
        });
        Self {
            client_ip,
            user_agent,
            actor: None,
            redacted: None,
        }
    }

    /// The metadata of a change made by `actor` (a command, the rotation schedule), not by a
    /// request.
    pub fn by(actor: &str) -> Self {
        Self {
            actor: Some(actor.to_owned()),
            ..Self::default()
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// An event about to be appended, with the stream version it must take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique within the stream; the store rejects a second event with the same version, which is
    /// how two writers that decided on the same state find out about each other.
    pub stream_version: i32,
    pub event: Event,
    pub metadata: EventMetadata,
}

impl NewEvent {
    pub fn stream_id(&self) -> uuid::Uuid {
        self.event.stream_id()
    }
}

/// An event as it stands in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Global, strictly increasing order of the log: replay applies events in this order.
    pub position: i64,
    pub stream_version: i32,
    pub event: Event,
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    pub fn stream_id(&self) -> uuid::Uuid {
        self.event.stream_id()
    }

    /// Rebuilds an event from a row's columns, the same way for every backend: upcast and decode
    /// the payload, check it belongs to the row's stream, decode the metadata.
    pub fn from_columns(columns: StoredColumns) -> Result<Self, StoreError> {
        Self::from_opened(columns, None)
    }

    /// [`RecordedEvent::from_columns`] for a row whose sealed fields were opened
    /// ([`personal`]), or replaced by placeholders for `redaction`.
    pub fn from_opened(
        columns: StoredColumns,
        redaction: Option<personal::Redaction>,
    ) -> Result<Self, StoreError> {
        let position = columns.position;
        let corrupt = |source| StoreError::Corrupt { position, source };
        let payload_redacted = redaction.is_some()
            && personal::PERSONAL_FIELDS.iter().any(|field| {
                columns
                    .payload
                    .get(field)
                    .and_then(Value::as_str)
                    .is_some_and(|text| redaction.is_some_and(|r| text == r.placeholder()))
            });
        let event = match redaction {
            Some(why) if payload_redacted => {
                let event_type = Event::TYPES
                    .into_iter()
                    .find(|known| *known == columns.event_type)
                    .ok_or_else(|| {
                        corrupt(DecodeError::Unknown {
                            event_type: columns.event_type.clone(),
                            event_version: columns.event_version,
                        })
                    })?;
                Event::Redacted(Redacted {
                    user_id: UserId::from(columns.stream_id),
                    event_type,
                    event_version: columns.event_version,
                    payload: columns.payload,
                    why,
                })
            }
            _ => Event::decode(&columns.event_type, columns.event_version, columns.payload)
                .map_err(corrupt)?,
        };
        if event.stream_id() != columns.stream_id {
            return Err(corrupt(DecodeError::StreamMismatch));
        }
        let metadata_redacted = columns.metadata.get(personal::SEALED).is_some();
        let mut metadata: EventMetadata = serde_json::from_value(columns.metadata)
            .map_err(|e| corrupt(DecodeError::Metadata(e)))?;
        metadata.redacted = redaction.filter(|_| metadata_redacted);
        Ok(RecordedEvent {
            position,
            stream_version: columns.stream_version,
            event,
            metadata,
            recorded_at: columns.recorded_at,
        })
    }
}

/// One row of the `events` table as a backend reads it, before decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredColumns {
    pub position: i64,
    pub stream_id: uuid::Uuid,
    pub stream_version: i32,
    pub event_type: String,
    pub event_version: i32,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

/// Which database rule an append broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Another event already has this stream version: someone else wrote to the stream first.
    StreamVersion,
    /// The email in a `UserRegistered` is already registered.
    EmailTaken,
}

/// Why a store call failed. Every backend maps its own errors into these, in one place.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The whole batch was rejected by a uniqueness rule and nothing was written.
    #[error("append rejected: {0:?} conflict")]
    Conflict(Conflict),
    /// The store could not be reached, or failed part-way. Whether a failed append committed is
    /// unknown, so callers must re-read the log before trusting their state again.
    #[error("event store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The schema could not be brought up to date: a migration failed, or the recorded history
    /// of migrations disagrees with this build. Waiting does not fix it, so callers stop.
    #[error("the event log's schema cannot be migrated: {what}")]
    Migration { what: String },
    /// The store refuses this configuration (no such database, wrong credentials): waiting
    /// does not fix it, so callers stop, and the message says what to change.
    #[error("{0}")]
    Misconfigured(String),
    /// The log's head is a row no log-signing key holder appended (or whose signature does not
    /// verify): appending on top would sign it into the chain, so nothing is appended until an
    /// operator removes it (docs/auditing.md).
    #[error("the event log's row at position {position} cannot be trusted: {why}")]
    Untrusted { position: i64, why: signed::Why },
    /// A stored event could not be decoded: the log holds something this build does not understand.
    #[error("event at position {position} cannot be decoded")]
    Corrupt {
        position: i64,
        #[source]
        source: DecodeError,
    },
}

impl StoreError {
    pub fn unavailable(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Unavailable(source.into())
    }
}

/// How long a store call may take by default (connect, wait for a connection or for SQLite's
/// write lock, each statement) before it fails with [`StoreError::Unavailable`] and a 503.
pub const DEFAULT_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The future every store method returns: boxed, so `EventStore` can be used as `dyn EventStore`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What a store's change feed ([`EventStore::watch`]) tells the registry. Every item means "the
/// log may hold events you have not applied": read the tail after the last applied position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// An append committed (by any process); the log's head is now at least this position.
    Appended(i64),
    /// Listening, for the first time or again: whatever committed before may have been missed.
    Listening,
    /// The listening connection was lost; [`Change::Poll`] follows until it is back.
    Lost,
    /// About once a second while not listening, so the instance stays current meanwhile.
    Poll,
}

/// An endless stream of [`Change`]s.
pub type ChangeFeed = Pin<Box<dyn futures_util::Stream<Item = Change> + Send>>;

/// An append-only, globally ordered log of events.
///
/// Implementations must guarantee, in the store itself and not only in memory:
/// - `append` is atomic: all events of the call are written, or none;
/// - `(stream, stream_version)` is unique, and so is the email of every `UserRegistered`;
/// - positions strictly increase in the order events were appended by one caller.
pub trait EventStore: Send + Sync + 'static {
    /// Appends the events atomically and returns them as recorded, in position order.
    fn append(&self, events: Vec<NewEvent>) -> StoreFuture<'_, Vec<RecordedEvent>> {
        self.append_with(events, Vec::new())
    }

    /// [`EventStore::append`], writing the sessions' rows beside the log in the same
    /// transaction: a session's row exists exactly when its `SessionStarted` has committed and
    /// its `SessionEnded` has not.
    fn append_with(
        &self,
        events: Vec<NewEvent>,
        sessions: Vec<SessionWrite>,
    ) -> StoreFuture<'_, Vec<RecordedEvent>>;

    /// Carries out each rotation whose presented refresh token is its session's current one
    /// (and live), all at once (one statement on PostgreSQL, one transaction on SQLite), and
    /// says for each whether it did, with the row as it stands for those it did not. Single use
    /// is the store's rule: of two rotations of one token, from any processes, exactly one is
    /// `Done`.
    fn rotate(&self, rotations: Vec<Rotation>) -> StoreFuture<'_, Vec<Rotated>>;

    /// When each of these sessions' refresh tokens was last used (sessions with no row left
    /// are not in the answer).
    fn last_used(
        &self,
        sessions: Vec<SessionId>,
    ) -> StoreFuture<'_, Vec<(SessionId, DateTime<Utc>)>>;

    /// Removes the rows of sessions expired at `now` or unused since `idle_cutoff`; how many.
    fn prune_sessions(
        &self,
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreFuture<'_, u64>;

    /// Up to `limit` events with a position greater than `after`, in position order.
    fn read_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<RecordedEvent>>;

    /// [`EventStore::read_after`] with each row's chain links and signature, and whether its
    /// hash matches its contents: what a reader that applies only signed rows reads
    /// ([`signed::Guard`]).
    fn read_linked_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<signed::Linked>>;

    /// The position of the first row carrying a log signature; `None` while none does (a log
    /// written before signing, or an empty one).
    fn first_signed(&self) -> StoreFuture<'_, Option<i64>>;

    /// The log-signing keys this store appends with, when it holds the master key.
    fn log_signer(&self) -> Option<std::sync::Arc<signed::LogSigner>> {
        None
    }

    /// The positions of the snapshots kept beside the log ([`crate::snapshot`]), newest first.
    /// The default keeps none.
    fn snapshots(&self) -> StoreFuture<'_, Vec<i64>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// The snapshot at `position`, as written, if it is still kept.
    fn read_snapshot(&self, _position: i64) -> StoreFuture<'_, Option<Vec<u8>>> {
        Box::pin(async { Ok(None) })
    }

    /// Keeps `bytes` as the snapshot at `position`, and the newest [`crate::snapshot::KEEP`]
    /// snapshots only, unless a `UserErased` has been appended after `position` (the snapshot
    /// holds that user's data): whether it was kept. An append that erases a user deletes
    /// every snapshot, in the same transaction where the store has one.
    fn write_snapshot(&self, _position: i64, _bytes: Vec<u8>) -> StoreFuture<'_, bool> {
        Box::pin(async { Ok(false) })
    }

    /// Up to `limit` events of one stream with a stream version greater than `after_version`,
    /// in version order (the stores index `(stream_id, stream_version)`): one user's history
    /// without reading the log.
    fn read_stream(
        &self,
        stream_id: uuid::Uuid,
        after_version: i32,
        limit: usize,
    ) -> StoreFuture<'_, Vec<RecordedEvent>>;

    /// Up to `limit` rows after `after`, in position order, exactly as stored and with their
    /// chain links, undecoded: what `authlog verify` hashes.
    fn read_rows_after(&self, after: i64, limit: usize) -> StoreFuture<'_, Vec<chain::ChainedRow>>;

    /// Makes the store ready for use, such as applying schema migrations. Called before the
    /// first replay, and again on each retry while the store is unreachable. The default does
    /// nothing.
    fn prepare(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    /// Changes made by other processes: every append on PostgreSQL, which several instances
    /// serve; the `authlog keys` commands' on the embedded store, which one server serves.
    /// `None` where nothing but the serving process writes (the in-memory store).
    fn watch(&self) -> Option<ChangeFeed> {
        None
    }

    /// Whether other instances serve this log at the same time (PostgreSQL): a decision that
    /// their events could change (a login, a sign-up's rate) then waits for a catch-up first.
    /// The embedded store has a change feed for the operators' commands, but no other server.
    fn shared(&self) -> bool {
        false
    }

    /// The position of the log's last event (0 when empty), for stores other processes append
    /// to; `None` where the serving process is the only writer, so its own position is the head.
    fn head(&self) -> StoreFuture<'_, Option<i64>> {
        Box::pin(async { Ok(None) })
    }

    /// Refreshes the store's own metrics (such as connection pool gauges) before a scrape.
    fn observe(&self) {}

    /// Checks the store answers, for readiness probes: a read that returns nothing.
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async {
            self.read_after(i64::MAX, 1).await?;
            Ok(())
        })
    }
}

/// The `recorded_at` of a batch appended after an event recorded at `latest`: now, in
/// microseconds (what both SQL stores keep, so what is hashed is what is read back), and never
/// before `latest`. Stores call it while they hold the append lock, so times never go backwards
/// in position order, however many processes append and however their clocks drift.
pub(crate) fn append_time(latest: Option<DateTime<Utc>>) -> DateTime<Utc> {
    let now = Utc::now().trunc_subsecs(6);
    latest.map_or(now, |latest| now.max(latest))
}

/// The generation of a [`LogKeyRotated`] row's payload, as stores read it under the append lock.
pub(crate) fn rotated_generation(payload: &Value) -> u32 {
    payload
        .get("generation")
        .and_then(Value::as_u64)
        .and_then(|generation| u32::try_from(generation).ok())
        .unwrap_or(1)
}

/// Links `events` (sealed, to be stored at `first_position`, `first_position + 1`, …) after
/// `head`, returning each one's `(prev_hash, hash)`.
pub(crate) fn link_batch(
    head: &str,
    first_position: i64,
    events: &[personal::SealedColumns],
    recorded_at: DateTime<Utc>,
) -> Vec<(String, String)> {
    let mut prev = head.to_owned();
    events
        .iter()
        .zip(first_position..)
        .map(|(sealed, position)| {
            let hash = chain::hash_row(&prev, &sealed.at(position, recorded_at));
            let link = (prev.clone(), hash.clone());
            prev = hash;
            link
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered() -> Event {
        Event::UserRegistered(UserRegistered {
            user_id: UserId::new(),
            email: Email::parse("a@example.com").expect("valid"),
            password_hash: PasswordHash::new("$2b$04$hash".to_owned()),
            imported: None,
        })
    }

    #[test]
    fn payload_round_trips_through_decode() {
        for event in [
            registered(),
            Event::LoginSucceeded(LoginSucceeded {
                user_id: UserId::new(),
            }),
            Event::LoginFailed(LoginFailed {
                user_id: UserId::new(),
            }),
            Event::PasswordRehashed(PasswordRehashed {
                user_id: UserId::new(),
                password_hash: PasswordHash::new("$2b$12$hash".to_owned()),
            }),
            Event::SessionStarted(SessionStarted {
                user_id: UserId::new(),
                session_id: SessionId::new(),
                expires_at: Utc::now().trunc_subsecs(0),
                idle_seconds: 3600,
            }),
            Event::SessionEnded(SessionEnded {
                user_id: UserId::new(),
                session_id: SessionId::new(),
                reason: EndReason::RefreshTokenReused,
            }),
            Event::RoleGranted(RoleGranted {
                user_id: UserId::new(),
                role: Role::admin(),
            }),
            Event::RoleRevoked(RoleRevoked {
                user_id: UserId::new(),
                role: Role::parse("support").expect("valid"),
            }),
            Event::UserDisabled(UserDisabled {
                user_id: UserId::new(),
            }),
            Event::UserEnabled(UserEnabled {
                user_id: UserId::new(),
            }),
            Event::LockoutCleared(LockoutCleared {
                user_id: UserId::new(),
            }),
            Event::PasswordChanged(PasswordChanged {
                user_id: UserId::new(),
                password_hash: PasswordHash::new("$2b$12$other".to_owned()),
            }),
        ] {
            let decoded = Event::decode(event.event_type(), event.event_version(), event.payload())
                .expect("decodes");
            assert_eq!(decoded, event);
        }
    }

    #[test]
    fn payload_field_names_are_stable() {
        let payload = registered().payload();
        let mut keys: Vec<_> = payload
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        assert_eq!(keys, ["email", "password_hash", "user_id"]);
    }

    #[test]
    fn unknown_types_and_versions_are_errors_not_panics() {
        assert!(matches!(
            Event::decode("UserDeleted", 1, Value::Null),
            Err(DecodeError::Unknown { .. })
        ));
        assert!(matches!(
            Event::decode(Event::LOGIN_SUCCEEDED, 99, Value::Null),
            Err(DecodeError::Unknown { .. })
        ));
        assert!(matches!(
            Event::decode(Event::LOGIN_SUCCEEDED, 1, serde_json::json!({"user_id": 5})),
            Err(DecodeError::Payload { .. })
        ));
    }

    #[test]
    fn user_agent_is_truncated_on_a_char_boundary() {
        let agent = "é".repeat(200); // 400 bytes
        let metadata = EventMetadata::new(None, Some(&agent));
        let kept = metadata.user_agent.expect("kept");
        assert!(kept.len() <= EventMetadata::MAX_USER_AGENT);
        assert!(agent.starts_with(&kept));
    }
}
