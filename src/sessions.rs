//! Sessions as pure rules: what a refresh token is, how one is judged when presented, and how
//! long a session lives. No I/O here; the stores keep the rows, the registry applies the rules.
//!
//! A refresh token is `base64url(session id ‖ generation ‖ secret ‖ tag)`:
//! - the secret is 32 bytes from the OS random source, and only its SHA-256 is stored;
//! - the tag is an HMAC over the rest under a key derived from the master key
//!   ([`crate::vault`]), so a token authlog did not mint is refused before any lookup, and one
//!   that carries a valid tag but an old generation is known to be a spent token of ours: a
//!   reuse. Tokens minted before the master key existed carry a tag under a key derived from
//!   the HS256 secret; they are read while that secret is configured ([`RefreshKeys`]);
//! - the generation counts rotations: each refresh spends generation `g` and mints `g + 1`.
//!
//! The exact rotation rule is [`judge`], and `docs/decisions.md` states it in prose.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac as _};
use sha2::{Digest, Sha256};

use crate::domain::{SessionId, UserId};
use crate::jwt::hmac_sha256;
use crate::vault::{MasterKey, labels};

/// Lifetimes and the reuse grace, stated once (the CLI's defaults are these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// A refresh token unused this long expires with its session.
    pub idle: Duration,
    /// No session outlives this, however often it is refreshed.
    pub lifetime: Duration,
    /// Two refreshes of one token this close together are one client racing itself.
    pub grace: Duration,
}

impl SessionPolicy {
    /// NIST SP 800-63B (AAL1) asks for reauthentication at least every 30 days; a week without
    /// use means the device is probably not in use any more (docs/decisions.md).
    pub const DEFAULT: Self = Self {
        idle: Duration::from_secs(7 * 24 * 3600),
        lifetime: Duration::from_secs(30 * 24 * 3600),
        grace: Duration::from_secs(10),
    };
}

impl SessionPolicy {
    /// The absolute end of a session started at `now`, in whole seconds (as `SessionStarted`
    /// records it).
    pub fn expires_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        use chrono::SubsecRound as _;
        now.checked_add_signed(delta(self.lifetime))
            .unwrap_or(now)
            .trunc_subsecs(0)
    }

    /// When a session last used at `last_used` goes idle.
    pub fn idle_at(&self, last_used: DateTime<Utc>) -> DateTime<Utc> {
        last_used
            .checked_add_signed(delta(self.idle))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Sessions last used at or before this are idle at `now`.
    pub fn idle_cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.checked_sub_signed(delta(self.idle))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

const SECRET_BYTES: usize = 32;
const TAG_BYTES: usize = 16;
const BODY_BYTES: usize = 16 + 4 + SECRET_BYTES;
/// The decoded length of every refresh token.
pub const TOKEN_BYTES: usize = BODY_BYTES + TAG_BYTES;
/// The encoded length: anything longer is refused before decoding.
pub const TOKEN_CHARS: usize = (TOKEN_BYTES * 4).div_ceil(3);

/// SHA-256 of a refresh token's secret: what the store keeps instead of the token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash([redacted])")
    }
}

impl TokenHash {
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }
}

/// A refresh token as handed to a client. Redacted from `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken([redacted])")
    }
}

/// A token just minted: what the client gets, and what the store keeps.
#[derive(Debug, Clone)]
pub struct MintedRefresh {
    pub token: RefreshToken,
    pub session: SessionId,
    pub generation: u32,
    pub hash: TokenHash,
}

/// A presented token whose tag verified: authlog minted it, for this session and generation.
#[derive(Clone)]
pub struct PresentedRefresh {
    pub session: SessionId,
    pub generation: u32,
    pub hash: TokenHash,
    secret: [u8; SECRET_BYTES],
}

impl fmt::Debug for PresentedRefresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedRefresh")
            .field("session", &self.session)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Mints and reads refresh tokens under one key. Every instance derives the same key from the
/// master key, so each reads the others' refresh tokens.
#[derive(Clone)]
pub struct RefreshKey {
    /// HMAC-SHA256 keyed once, cloned for each tag.
    mac: HmacSha256,
}

impl fmt::Debug for RefreshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshKey([redacted])")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl RefreshKey {
    /// The key refresh tokens are minted with: derived from the master key for this purpose
    /// alone, so a tag never doubles as anything else.
    pub fn from_master(master: &MasterKey) -> Self {
        Self {
            mac: hmac_sha256(master.derive(labels::REFRESH_TOKEN_TAG).as_slice()),
        }
    }

    /// The key refresh tokens were minted with before the master key: derived from the HS256
    /// signing secret (HMAC as a KDF with a fixed label).
    pub fn derive(secret: &[u8]) -> Self {
        let mut kdf = hmac_sha256(secret);
        kdf.update(b"authlog refresh-token tag v1");
        let key: [u8; 32] = kdf.finalize().into_bytes().into();
        Self {
            mac: hmac_sha256(&key),
        }
    }

    fn mac(&self) -> HmacSha256 {
        self.mac.clone()
    }

    /// A new token for `session` at `generation`, with a fresh secret from the OS.
    pub fn mint(
        &self,
        session: SessionId,
        generation: u32,
    ) -> Result<MintedRefresh, getrandom::Error> {
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut secret)?;
        Ok(self.assemble(session, generation, secret))
    }

    fn assemble(
        &self,
        session: SessionId,
        generation: u32,
        secret: [u8; SECRET_BYTES],
    ) -> MintedRefresh {
        let mut bytes = Vec::with_capacity(TOKEN_BYTES);
        bytes.extend_from_slice(session.as_uuid().as_bytes());
        bytes.extend_from_slice(&generation.to_be_bytes());
        bytes.extend_from_slice(&secret);
        let mut mac = self.mac();
        mac.update(&bytes);
        let tag = mac.finalize().into_bytes();
        bytes.extend_from_slice(&tag[..TAG_BYTES]);
        MintedRefresh {
            token: RefreshToken(URL_SAFE_NO_PAD.encode(&bytes)),
            session,
            generation,
            hash: hash_secret(&secret),
        }
    }

    /// The token's session, generation and hash, if authlog minted it (the tag is compared in
    /// constant time); `None` for anything else, whatever it holds.
    pub fn read(&self, raw: &str) -> Option<PresentedRefresh> {
        if raw.len() != TOKEN_CHARS {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        if bytes.len() != TOKEN_BYTES {
            return None;
        }
        let (body, tag) = bytes.split_at(BODY_BYTES);
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_truncated_left(tag).ok()?;
        let session = uuid::Uuid::from_slice(&body[..16]).ok()?;
        let generation = u32::from_be_bytes(body[16..20].try_into().ok()?);
        let secret: [u8; SECRET_BYTES] = body[20..].try_into().ok()?;
        Some(PresentedRefresh {
            session: SessionId::from(session),
            generation,
            hash: hash_secret(&secret),
            secret,
        })
    }
}

/// The key refresh tokens are minted with, and the one they were minted with before the master
/// key existed (derived from the HS256 secret), read for as long as that secret is configured:
/// sessions started before an upgrade keep refreshing, and their next token carries the new tag.
#[derive(Debug, Clone)]
pub struct RefreshKeys {
    current: RefreshKey,
    legacy: Option<RefreshKey>,
}

impl RefreshKeys {
    pub fn new(current: RefreshKey, legacy: Option<RefreshKey>) -> Self {
        Self { current, legacy }
    }

    /// [`RefreshKey::mint`], under the current key.
    pub fn mint(
        &self,
        session: SessionId,
        generation: u32,
    ) -> Result<MintedRefresh, getrandom::Error> {
        self.current.mint(session, generation)
    }

    /// [`RefreshKey::read`], under the current key or the legacy one.
    pub fn read(&self, raw: &str) -> Option<PresentedRefresh> {
        self.current
            .read(raw)
            .or_else(|| self.legacy.as_ref()?.read(raw))
    }

    /// The successor sealed under `presented`, opened: the token another refresh of the same
    /// token received, if it is one of ours for this session.
    pub fn open(&self, sealed: &[u8], presented: &PresentedRefresh) -> Option<RefreshToken> {
        let bytes = xor_pad(sealed, presented);
        let raw = String::from_utf8(bytes).ok()?;
        let successor = self.read(&raw)?;
        (successor.session == presented.session
            && successor.generation == presented.generation.wrapping_add(1))
        .then_some(RefreshToken(raw))
    }
}

fn hash_secret(secret: &[u8; SECRET_BYTES]) -> TokenHash {
    TokenHash(Sha256::digest(secret).into())
}

/// The successor token, sealed so that only a holder of `presented` can read it back: XOR with
/// a pad derived from the presented token's secret. Each secret seals exactly one successor, so
/// the pad is used once; the store sees neither token.
pub fn seal(successor: &RefreshToken, presented: &PresentedRefresh) -> Vec<u8> {
    xor_pad(successor.as_str().as_bytes(), presented)
}

fn xor_pad(data: &[u8], presented: &PresentedRefresh) -> Vec<u8> {
    data.chunks(32)
        .zip(0u32..)
        .flat_map(|(chunk, block)| {
            let mut hasher = Sha256::new();
            hasher.update(b"authlog refresh-token grace pad v1");
            hasher.update(presented.secret);
            hasher.update(block.to_be_bytes());
            let pad: [u8; 32] = hasher.finalize().into();
            chunk
                .iter()
                .zip(pad)
                .map(|(byte, pad)| byte ^ pad)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A session's row beside the log: its current refresh token, and what the grace needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub session: SessionId,
    pub user_id: UserId,
    pub generation: u32,
    pub token_hash: TokenHash,
    /// The token spent by the last rotation, and that rotation's successor sealed under it.
    pub previous_hash: Option<TokenHash>,
    pub sealed: Option<Vec<u8>>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What the store writes beside the log, in the same transaction as the events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionWrite {
    /// A session started: its row, holding the first token's hash.
    Start {
        session: SessionId,
        user_id: UserId,
        token_hash: TokenHash,
        started_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    /// A session ended: its row goes, so no token of it can be refreshed again.
    End(SessionId),
}

/// One refresh for the store to carry out, if the presented token is the session's current one.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub presented: PresentedRefresh,
    pub successor: TokenHash,
    /// The successor sealed under the presented token, for a racing refresh within the grace.
    pub sealed: Vec<u8>,
    pub now: DateTime<Utc>,
    /// Tokens last used at or before this are idle-expired.
    pub idle_cutoff: DateTime<Utc>,
}

/// What the store did with one [`Rotation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotated {
    /// The presented token was current and is spent now; the successor is current.
    Done,
    /// It was not current: the session's row as it stands (none if there is no such session).
    Unmatched(Option<SessionRow>),
}

/// Why a presented token that is not current was refused, or how it is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Spent by a refresh less than the grace ago: answer with that refresh's successor.
    Grace(Vec<u8>),
    /// A spent token presented after the grace: theft, so the session ends.
    Reused,
    /// No such session (ended, pruned, never committed), or it has expired.
    Invalid,
}

/// The rule for a token the store did not rotate, given the session's row.
///
/// - The generation just before the current one, with the hash the last rotation spent, within
///   the grace of that rotation: the same client racing itself ([`Judgement::Grace`]).
/// - Any older generation of a live session, or that one after the grace: [`Judgement::Reused`].
///   The tag proves authlog minted it, so it is a spent token, not a guess.
/// - Anything else (no row, expired, a generation the store never made current): invalid.
pub fn judge(
    row: Option<&SessionRow>,
    presented: &PresentedRefresh,
    now: DateTime<Utc>,
    policy: &SessionPolicy,
) -> Judgement {
    let Some(row) = row else {
        return Judgement::Invalid;
    };
    if row.expires_at <= now || policy.idle_at(row.last_used_at) <= now {
        return Judgement::Invalid;
    }
    if presented.generation >= row.generation {
        return Judgement::Invalid;
    }
    let grace = delta(policy.grace);
    let just_spent = presented.generation + 1 == row.generation
        && row.previous_hash == Some(presented.hash)
        && row
            .rotated_at
            .is_some_and(|at| now - at <= grace && !policy.grace.is_zero());
    match (&row.sealed, just_spent) {
        (Some(sealed), true) => Judgement::Grace(sealed.clone()),
        _ => Judgement::Reused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RefreshKeys {
        RefreshKeys::new(
            RefreshKey::derive(b"0123456789abcdef0123456789abcdef"),
            None,
        )
    }

    fn row(minted: &MintedRefresh, now: DateTime<Utc>) -> SessionRow {
        SessionRow {
            session: minted.session,
            user_id: UserId::new(),
            generation: minted.generation,
            token_hash: minted.hash,
            previous_hash: None,
            sealed: None,
            rotated_at: None,
            last_used_at: now,
            expires_at: now + TimeDelta::days(30),
        }
    }

    #[test]
    fn a_minted_token_reads_back_and_nothing_else_does() {
        let key = key();
        let session = SessionId::new();
        let minted = key.mint(session, 7).expect("random");
        assert_eq!(minted.token.as_str().len(), TOKEN_CHARS);
        let read = key.read(minted.token.as_str()).expect("ours");
        assert_eq!(
            (read.session, read.generation, read.hash),
            (session, 7, minted.hash)
        );
        assert!(
            RefreshKey::derive(b"another secret, just as long!!!!")
                .read(minted.token.as_str())
                .is_none()
        );
        let mut flipped = minted.token.as_str().to_owned().into_bytes();
        flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
        assert!(
            key.read(&String::from_utf8(flipped).expect("ascii"))
                .is_none()
        );
        for junk in [
            "",
            "x",
            &"A".repeat(TOKEN_CHARS),
            &"é".repeat(TOKEN_CHARS / 2),
        ] {
            assert!(key.read(junk).is_none(), "{junk:?}");
        }
        assert!(!format!("{minted:?}").contains(minted.token.as_str()));
    }

    #[test]
    fn a_sealed_successor_opens_only_with_the_token_it_was_sealed_under() {
        let key = key();
        let session = SessionId::new();
        let first = key.mint(session, 1).expect("random");
        let presented = key.read(first.token.as_str()).expect("ours");
        let successor = key.mint(session, 2).expect("random");
        let sealed = seal(&successor.token, &presented);
        assert_ne!(sealed, successor.token.as_str().as_bytes());
        assert_eq!(key.open(&sealed, &presented), Some(successor.token.clone()));
        let other = key
            .read(key.mint(session, 1).expect("random").token.as_str())
            .expect("ours");
        assert_eq!(key.open(&sealed, &other), None);
    }

    #[test]
    fn the_rule_for_tokens_that_are_not_current() {
        let key = key();
        let policy = SessionPolicy::DEFAULT;
        let now = Utc::now();
        let session = SessionId::new();
        let first = key.mint(session, 1).expect("random");
        let second = key.mint(session, 2).expect("random");
        let presented = key.read(first.token.as_str()).expect("ours");
        let mut rotated = row(&second, now);
        rotated.previous_hash = Some(first.hash);
        rotated.sealed = Some(seal(&second.token, &presented));
        rotated.rotated_at = Some(now);
        // Within the grace: the racing refresh gets the same successor.
        let soon = now + TimeDelta::seconds(5);
        assert!(matches!(
            judge(Some(&rotated), &presented, soon, &policy),
            Judgement::Grace(_)
        ));
        // After it, or with no grace at all: a reuse.
        let late = now + TimeDelta::seconds(11);
        assert_eq!(
            judge(Some(&rotated), &presented, late, &policy),
            Judgement::Reused
        );
        let no_grace = SessionPolicy {
            grace: Duration::ZERO,
            ..policy
        };
        assert_eq!(
            judge(Some(&rotated), &presented, now, &no_grace),
            Judgement::Reused
        );
        // An older generation is a reuse whenever it comes.
        let mut later = rotated.clone();
        later.generation = 3;
        assert_eq!(
            judge(Some(&later), &presented, soon, &policy),
            Judgement::Reused
        );
        // No row, an expired session, or a generation never made current: invalid.
        assert_eq!(judge(None, &presented, now, &policy), Judgement::Invalid);
        let mut expired = rotated.clone();
        expired.expires_at = now;
        assert_eq!(
            judge(Some(&expired), &presented, soon, &policy),
            Judgement::Invalid
        );
        let idle = now + TimeDelta::days(8);
        assert_eq!(
            judge(Some(&rotated), &presented, idle, &policy),
            Judgement::Invalid
        );
        let ahead = key
            .read(key.mint(session, 5).expect("random").token.as_str())
            .expect("ours");
        assert_eq!(
            judge(Some(&rotated), &ahead, now, &policy),
            Judgement::Invalid
        );
    }
}
