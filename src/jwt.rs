//! Access tokens: compact JWS (RFC 7515) with the one validation policy authlog accepts. Pure
//! functions over prepared keys, so they can be tested alone; the [`crate::actors::TokenActor`]
//! runs them for callers, with the keys [`crate::signing::Keychain`] builds from the log.
//!
//! - Tokens are signed with the log's active Ed25519 key (`EdDSA`, RFC 8037), or with an HS256
//!   secret where the operator chose it; every header names its key: `{"alg","typ","kid"}`.
//! - A token is checked with the key its `kid` names, and only with that key's algorithm, so a
//!   token cannot choose how it is checked (RFC 8725 §3.1). A header with anything else (`jku`,
//!   `x5u`, `jwk`, `x5c`, `crit`, …) is refused before any key is looked at.
//! - A token without `kid` is one issued before keys had ids (HS256); it is checked with the
//!   HS256 secret if one is still configured, and refused otherwise.
//!
//! Signing and verifying are written here over `ed25519-dalek` and `hmac` rather than through
//! `jsonwebtoken`, which re-derives an Ed25519 key from its DER form on every token (a second
//! scalar multiplication per signature) and decompresses the public key on every check: held
//! prepared, a signature costs half as much (docs/decisions.md, "Token signing keys").

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ed25519_dalek::Signer as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::{Email, KeyAlgorithm, KeyId, Role, SessionId, UserId};
use crate::projection::UserSummary;

/// Clock skew tolerated on `exp` and `nbf`, in seconds. Small, because tokens are checked by the
/// same service (or its replicas) that issued them.
pub const LEEWAY_SECONDS: u64 = 30;
/// `iss` and `aud` when none are configured.
pub const DEFAULT_ISSUER: &str = "authlog";
/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
pub const MIN_SECRET_BYTES: usize = 32;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// The HMAC key. Never printed: `Debug` is redacted and the bytes are wiped on drop.
#[derive(Clone)]
pub struct JwtSecret(SecretString);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("AUTHLOG_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes, got {0}")]
pub struct JwtSecretError(pub usize);

impl JwtSecret {
    pub fn parse(secret: SecretString) -> Result<Self, JwtSecretError> {
        let len = secret.expose_secret().len();
        if len < MIN_SECRET_BYTES {
            return Err(JwtSecretError(len));
        }
        Ok(Self(secret))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }

    /// The `kid` of tokens signed with this secret: a tag of the secret under a fixed label,
    /// so instances sharing the secret agree on it and it reveals nothing of the secret.
    pub fn key_id(&self) -> KeyId {
        let mut mac = hmac_sha256(self.bytes());
        mac.update(b"authlog HS256 key id v1");
        let tag = mac.finalize().into_bytes();
        // base64url of 12 bytes: 16 characters of the key-id alphabet, always valid.
        KeyId::parse(&format!("hs256-{}", URL_SAFE_NO_PAD.encode(&tag[..12])))
            .unwrap_or_else(|_| KeyId::thumbprint_ed25519(&[0; 32]))
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret([redacted])")
    }
}

/// HMAC-SHA256 under `key`, of any length: the key as one SHA-256 block, as RFC 2104 prepares
/// it (a longer key is hashed first, a shorter one padded with zeros), so keying cannot fail.
pub(crate) fn hmac_sha256(key: &[u8]) -> HmacSha256 {
    use sha2::Digest as _;
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    <HmacSha256 as hmac::digest::KeyInit>::new(&block.into())
}

/// The claims authlog issues and requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The issuer, checked against the configured one.
    pub iss: String,
    /// The audience, checked against the configured one.
    pub aud: String,
    /// The user id. A token whose `sub` is not a UUID fails to decode.
    pub sub: UserId,
    pub email: Email,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Unique per token: two logins never get the same token.
    pub jti: uuid::Uuid,
    /// The session the token was issued for: it stops working when the session ends.
    pub sid: SessionId,
    /// The user's roles when it was issued, sorted. authlog refuses a token carrying a role its
    /// user no longer has; tokens issued before roles existed carry none.
    #[serde(default)]
    pub roles: Vec<Role>,
}

/// A signed token. Redacted from `Debug` so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String, i64);

impl AccessToken {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// Its `exp`, in Unix seconds.
    pub fn expires_at(&self) -> i64 {
        self.1
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

/// Why a token was refused, for logs and tests; every one is the same 401 to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not three base64url segments, or a signature that is not one.
    Malformed,
    /// The header's `alg` is not the algorithm of the key its `kid` names.
    Algorithm,
    Signature,
    /// The claims are not the ones authlog issues (missing, mistyped).
    Claims,
    Issuer,
    Audience,
    Expired,
    Immature,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid or expired token: {0:?}")]
    Invalid(Invalid),
    /// The JOSE header is not a JSON object of `alg`, `typ` (`JWT`) and `kid` alone: it names
    /// a key some other way (`jku`, `jwk`, `x5u`, `x5c`), or asks for something authlog does
    /// not do (`crit`). Refused before any key is looked at.
    #[error("unexpected token header")]
    UnexpectedHeader,
    /// The `kid` names no key this instance publishes (or the token has none, and no HS256
    /// secret is configured): retired, never ours, or added by another instance a moment ago.
    #[error("the token's key is not one of the published keys")]
    UnknownKey,
    /// No key signs yet: the log has no active key (EdDSA), so nothing can be issued.
    #[error("no signing key is active yet")]
    NoSigningKey,
    #[error("the system's random source failed")]
    Random(#[source] getrandom::Error),
}

/// `iss`, `aud` and the lifetime of issued tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    pub ttl: Duration,
    pub issuer: String,
    pub audience: String,
}

impl TokenPolicy {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_ISSUER.to_owned(),
        }
    }
}

/// A key that signs, prepared: its `kid`, and its header already encoded.
struct SigningKey {
    kid: KeyId,
    /// `base64url({"alg":…,"typ":"JWT","kid":…})`, the same for every token it signs.
    header: String,
    secret: Secret,
}

/// The private half, ready to sign.
enum Secret {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    Hs256(HmacSha256),
}

/// The public half (or the shared secret), ready to check.
#[derive(Clone)]
pub enum Verifier {
    Ed25519(Box<ed25519_dalek::VerifyingKey>),
    Hs256(HmacSha256),
}

impl Verifier {
    pub fn algorithm(&self) -> KeyAlgorithm {
        match self {
            Verifier::Ed25519(_) => KeyAlgorithm::EdDSA,
            Verifier::Hs256(_) => KeyAlgorithm::HS256,
        }
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Verifier::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify_strict(message, &signature).is_ok()),
            Verifier::Hs256(mac) => {
                let mut mac = mac.clone();
                mac.update(message);
                // Constant time.
                mac.verify_slice(signature).is_ok()
            }
        }
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({})", self.algorithm())
    }
}

/// Everything tokens are signed and checked with at one moment: the key that signs (if any),
/// every key that verifies by `kid`, and the HS256 secret for tokens from before `kid`s.
pub struct JwtKeys {
    signer: Option<SigningKey>,
    verifiers: HashMap<KeyId, Verifier>,
    /// Checks tokens without a `kid`: HS256 under the configured secret, if any.
    legacy: Option<Verifier>,
    policy: TokenPolicy,
}

impl JwtKeys {
    /// Keys that sign with nothing and verify nothing yet; add them with the builders below.
    pub fn empty(policy: TokenPolicy) -> Self {
        Self {
            signer: None,
            verifiers: HashMap::new(),
            legacy: None,
            policy,
        }
    }

    /// HS256 with `secret` alone, issuer and audience [`DEFAULT_ISSUER`]: signs with it (its
    /// `kid` is [`JwtSecret::key_id`]), and verifies tokens with that `kid` or none.
    pub fn new(secret: &JwtSecret, ttl: Duration) -> Self {
        Self::empty(TokenPolicy::new(ttl))
            .verifying_hs256(secret)
            .signing_hs256(secret)
    }

    /// Verifies tokens signed with `secret`: those with its `kid`, and those with none.
    pub fn verifying_hs256(mut self, secret: &JwtSecret) -> Self {
        let verifier = Verifier::Hs256(hmac_sha256(secret.bytes()));
        self.verifiers.insert(secret.key_id(), verifier.clone());
        self.legacy = Some(verifier);
        self
    }

    /// Signs with `secret` (HS256).
    pub fn signing_hs256(mut self, secret: &JwtSecret) -> Self {
        let kid = secret.key_id();
        self.signer = Some(SigningKey {
            header: encoded_header(KeyAlgorithm::HS256, &kid),
            kid,
            secret: Secret::Hs256(hmac_sha256(secret.bytes())),
        });
        self
    }

    /// Verifies tokens whose `kid` is `kid` with this Ed25519 public key.
    pub fn verifying_ed25519(mut self, kid: KeyId, key: ed25519_dalek::VerifyingKey) -> Self {
        self.verifiers.insert(kid, Verifier::Ed25519(Box::new(key)));
        self
    }

    /// Signs with this Ed25519 key, as `kid` (and verifies with it).
    pub fn signing_ed25519(mut self, kid: KeyId, key: ed25519_dalek::SigningKey) -> Self {
        self = self.verifying_ed25519(kid.clone(), key.verifying_key());
        self.signer = Some(SigningKey {
            header: encoded_header(KeyAlgorithm::EdDSA, &kid),
            kid,
            secret: Secret::Ed25519(Box::new(key)),
        });
        self
    }

    /// The access-token lifetime.
    pub fn ttl(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.policy.ttl).unwrap_or(chrono::Duration::MAX)
    }

    /// The key that signs new tokens, if any.
    pub fn signing_key(&self) -> Option<&KeyId> {
        self.signer.as_ref().map(|signer| &signer.kid)
    }

    /// The keys that verify, by `kid`.
    pub fn verifiers(&self) -> impl Iterator<Item = (&KeyId, &Verifier)> {
        self.verifiers.iter()
    }

    /// Signs a token for `user` in `session`, valid from `now` for the configured lifetime, and
    /// never past `not_after` (the session's own end).
    pub fn issue(
        &self,
        user: &UserSummary,
        session: SessionId,
        not_after: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<AccessToken, TokenError> {
        let signer = self.signer.as_ref().ok_or(TokenError::NoSigningKey)?;
        let iat = now.timestamp();
        let exp = (now + self.ttl()).min(not_after).timestamp().max(iat);
        let claims = Claims {
            iss: self.policy.issuer.clone(),
            aud: self.policy.audience.clone(),
            sub: user.user_id,
            email: user.email.clone(),
            iat,
            nbf: iat,
            exp,
            jti: uuid::Uuid::new_v4(),
            sid: session,
            roles: user.roles.to_vec(),
        };
        // Strings, numbers and UUIDs: serialising cannot fail.
        let payload = serde_json::to_vec(&claims).unwrap_or_default();
        let mut token = String::with_capacity(400);
        token.push_str(&signer.header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = match &signer.secret {
            Secret::Ed25519(key) => key.sign(token.as_bytes()).to_bytes().to_vec(),
            Secret::Hs256(mac) => {
                let mut mac = mac.clone();
                mac.update(token.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
        };
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(AccessToken(token, exp))
    }

    /// Checks the header (only `alg`, `typ` and `kid`), finds the key its `kid` names, checks
    /// that the header's `alg` is that key's, then the signature, the claims' types (RFC 8725),
    /// `iss`, `aud`, and `exp` and `nbf` at `now` (with [`LEEWAY_SECONDS`]).
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, TokenError> {
        let (signed, signature) = token
            .rsplit_once('.')
            .ok_or(TokenError::Invalid(Invalid::Malformed))?;
        let (header, payload) = signed
            .split_once('.')
            .filter(|(_, payload)| !payload.contains('.'))
            .ok_or(TokenError::Invalid(Invalid::Malformed))?;
        let header = Header::decode(header)?;
        let verifier = match &header.kid {
            Some(kid) => KeyId::parse(kid)
                .ok()
                .and_then(|kid| self.verifiers.get(&kid)),
            None => self.legacy.as_ref(),
        }
        .ok_or(TokenError::UnknownKey)?;
        if header.alg != verifier.algorithm().as_str() {
            return Err(TokenError::Invalid(Invalid::Algorithm));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Invalid(Invalid::Malformed))?;
        if !verifier.verify(signed.as_bytes(), &signature) {
            return Err(TokenError::Invalid(Invalid::Signature));
        }
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(TokenError::Invalid(Invalid::Claims))?;
        if claims.iss != self.policy.issuer {
            return Err(TokenError::Invalid(Invalid::Issuer));
        }
        if claims.aud != self.policy.audience {
            return Err(TokenError::Invalid(Invalid::Audience));
        }
        check_times(&claims, now.timestamp())?;
        Ok(claims)
    }
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("signing", &self.signing_key())
            .field("verifying", &self.verifiers.keys().collect::<Vec<_>>())
            .field("legacy", &self.legacy.is_some())
            .finish_non_exhaustive()
    }
}

/// The one header shape authlog writes and reads.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

impl Header {
    /// A base64url JSON object with `alg`, an optional `typ` of `JWT`, an optional `kid`, and
    /// nothing else (duplicate names are refused too).
    fn decode(segment: &str) -> Result<Self, TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(segment)
            .map_err(|_| TokenError::UnexpectedHeader)?;
        let header: Header =
            serde_json::from_slice(&bytes).map_err(|_| TokenError::UnexpectedHeader)?;
        if header.typ.as_deref().is_some_and(|typ| typ != "JWT") {
            return Err(TokenError::UnexpectedHeader);
        }
        Ok(header)
    }
}

fn encoded_header(algorithm: KeyAlgorithm, kid: &KeyId) -> String {
    let header = Header {
        alg: algorithm.as_str().to_owned(),
        typ: Some("JWT".to_owned()),
        kid: Some(kid.as_str().to_owned()),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default())
}

/// `exp` and `nbf` at `now` (Unix seconds), with the leeway: the rule for fresh and cached
/// tokens alike.
fn check_times(claims: &Claims, now: i64) -> Result<(), TokenError> {
    let leeway = LEEWAY_SECONDS as i64;
    if claims.exp < now - leeway {
        return Err(TokenError::Invalid(Invalid::Expired));
    }
    if claims.nbf > now + leeway {
        return Err(TokenError::Invalid(Invalid::Immature));
    }
    Ok(())
}

/// One public key as a JWK (RFC 7517, RFC 8037 for `OKP`), for `/.well-known/jwks.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    /// The public key, base64url.
    pub x: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub use_: String,
    pub alg: String,
}

/// The published keys: `{"keys": [...]}` (RFC 7517 §5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    /// The public keys among `keys`' verifiers, in `order` (oldest first). A symmetric key is
    /// never published: whoever holds it can mint tokens.
    pub fn of(keys: &JwtKeys, order: &[KeyId]) -> Self {
        let keys = order
            .iter()
            .filter_map(|kid| match keys.verifiers.get(kid) {
                Some(Verifier::Ed25519(public)) => Some(Jwk {
                    kty: "OKP".to_owned(),
                    crv: "Ed25519".to_owned(),
                    x: URL_SAFE_NO_PAD.encode(public.as_bytes()),
                    kid: kid.as_str().to_owned(),
                    use_: "sig".to_owned(),
                    alg: KeyAlgorithm::EdDSA.as_str().to_owned(),
                }),
                _ => None,
            })
            .collect();
        Self { keys }
    }
}

/// Tokens that verified recently, so a client presenting the same token again (as it does on
/// every request until the token expires) costs a hash lookup instead of a header check, a
/// signature check (about 50 µs for Ed25519) and three JSON parses. API gateways do the same
/// (Envoy's `jwt_authn` keeps such a cache).
///
/// Only tokens that passed [`JwtKeys::verify`] enter, keyed by the whole token, so a hit is the
/// same token byte for byte; `exp` and `nbf` are checked again on every hit, with the same
/// leeway. Bounded: when full, expired entries go, and if that frees nothing, all of them. The
/// owner clears it whenever the keys change, so a retired key's tokens leave with it.
/// Revocation is not the cache's business: a session check runs after it on every request.
pub struct VerifiedTokens {
    /// Keyed by the signature (the last segment: short, and unique to the token), so a lookup
    /// hashes a few dozen bytes; the whole token is compared on a hit.
    entries: HashMap<Box<str>, (Box<str>, Arc<Claims>)>,
    capacity: usize,
}

/// The signature segment of a JWT: what follows the last dot.
fn signature(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or(token)
}

impl VerifiedTokens {
    /// Holds at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The claims of `token` if it verified before and is still within its validity at `now`
    /// (Unix seconds).
    pub fn get(&self, token: &str, now: i64) -> Option<Arc<Claims>> {
        self.entries
            .get(signature(token))
            .filter(|(whole, claims)| **whole == *token && check_times(claims, now).is_ok())
            .map(|(_, claims)| Arc::clone(claims))
    }

    /// Remembers a token that has just verified.
    pub fn insert(&mut self, token: &str, claims: Arc<Claims>, now: i64) {
        if self.entries.len() >= self.capacity {
            let leeway = LEEWAY_SECONDS as i64;
            self.entries
                .retain(|_, (_, claims)| claims.exp >= now - leeway);
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        self.entries
            .insert(signature(token).into(), (token.into(), claims));
    }

    /// Forgets every token (the keys changed).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(30 * 60);

    /// Later than any token in these tests would expire.
    fn far() -> DateTime<Utc> {
        Utc::now() + chrono::Duration::days(365)
    }

    fn secret(raw: &str) -> JwtSecret {
        JwtSecret::parse(SecretString::from(raw.to_owned())).expect("long enough")
    }

    fn keys() -> JwtKeys {
        JwtKeys::new(&secret("0123456789abcdef0123456789abcdef"), TTL)
    }

    fn ed25519(seed: u8) -> (KeyId, ed25519_dalek::SigningKey) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        (
            KeyId::thumbprint_ed25519(key.verifying_key().as_bytes()),
            key,
        )
    }

    fn eddsa_keys(seed: u8) -> JwtKeys {
        let (kid, key) = ed25519(seed);
        JwtKeys::empty(TokenPolicy::new(TTL)).signing_ed25519(kid, key)
    }

    fn user() -> UserSummary {
        UserSummary {
            user_id: UserId::new(),
            email: Email::parse("user@example.com").expect("valid"),
            roles: Box::default(),
        }
    }

    fn invalid(result: Result<Claims, TokenError>) -> Invalid {
        match result {
            Err(TokenError::Invalid(why)) => why,
            other => panic!("expected an invalid token, got {other:?}"),
        }
    }

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    /// `header.payload` of `token` with another header, and the signature recomputed by
    /// `sign` over it.
    fn reheaded(token: &str, header: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let payload = token.split('.').nth(1).expect("three parts");
        let input = format!("{}.{payload}", b64(header));
        let signature = URL_SAFE_NO_PAD.encode(sign(input.as_bytes()));
        format!("{input}.{signature}")
    }

    fn hs256(key: &[u8]) -> impl Fn(&[u8]) -> Vec<u8> {
        let key = key.to_vec();
        move |input: &[u8]| {
            let mut mac = hmac_sha256(&key);
            mac.update(input);
            mac.finalize().into_bytes().to_vec()
        }
    }

    #[test]
    fn a_padded_key_is_the_same_hmac_key_as_the_slice_itself() {
        for key in [&b"short"[..], &[7u8; 64][..], &[9u8; 100][..]] {
            let direct = <HmacSha256 as Mac>::new_from_slice(key).expect("any length");
            let tag = |mut mac: HmacSha256| {
                mac.update(b"message");
                mac.finalize().into_bytes()
            };
            assert_eq!(tag(hmac_sha256(key)), tag(direct), "{} bytes", key.len());
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        let short = JwtSecret::parse(SecretString::from("x".repeat(31)));
        assert_eq!(short.err(), Some(JwtSecretError(31)));
    }

    #[test]
    fn issued_tokens_verify_with_all_claims_and_name_their_key() {
        for keys in [keys(), eddsa_keys(1)] {
            let user = user();
            let now = Utc::now();
            let token = keys
                .issue(&user, SessionId::new(), far(), now)
                .expect("sign");
            let claims = keys.verify(token.as_str(), Utc::now()).expect("valid");
            assert_eq!(claims.sub, user.user_id);
            assert_eq!(claims.email, user.email);
            assert_eq!(claims.iat, now.timestamp());
            assert_eq!(claims.nbf, now.timestamp());
            assert_eq!(claims.exp, now.timestamp() + 30 * 60);
            let header: serde_json::Value = serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(token.as_str().split('.').next().expect("header"))
                    .expect("base64url"),
            )
            .expect("json");
            let kid = keys.signing_key().expect("signs").as_str();
            assert_eq!(header["kid"], kid);
            assert_eq!(header["typ"], "JWT");
        }
    }

    #[test]
    fn the_hs256_key_id_is_stable_and_reveals_nothing() {
        let one = secret("0123456789abcdef0123456789abcdef");
        assert_eq!(one.key_id(), one.clone().key_id());
        assert!(one.key_id().as_str().starts_with("hs256-"));
        assert!(!one.key_id().as_str().contains("0123"));
        assert_ne!(
            one.key_id(),
            secret("another-secret-that-is-long-enough!!").key_id()
        );
    }

    #[test]
    fn expiry_honours_the_leeway_on_both_sides() {
        let keys = keys();
        let ttl = chrono::Duration::from_std(TTL).expect("fits");
        let inside = Utc::now() - ttl - chrono::Duration::seconds(LEEWAY_SECONDS as i64 - 10);
        let token = keys
            .issue(&user(), SessionId::new(), far(), inside)
            .expect("sign");
        assert!(keys.verify(token.as_str(), Utc::now()).is_ok());
        let outside = Utc::now() - ttl - chrono::Duration::seconds(LEEWAY_SECONDS as i64 + 10);
        let token = keys
            .issue(&user(), SessionId::new(), far(), outside)
            .expect("sign");
        assert_eq!(
            invalid(keys.verify(token.as_str(), Utc::now())),
            Invalid::Expired
        );
    }

    #[test]
    fn not_before_in_the_future_is_rejected() {
        let keys = eddsa_keys(2);
        let later = Utc::now() + chrono::Duration::seconds(LEEWAY_SECONDS as i64 + 30);
        let token = keys
            .issue(&user(), SessionId::new(), far(), later)
            .expect("sign");
        assert_eq!(
            invalid(keys.verify(token.as_str(), Utc::now())),
            Invalid::Immature
        );
    }

    #[test]
    fn another_key_with_the_same_id_is_a_bad_signature() {
        let (kid, _) = ed25519(1);
        let (_, impostor) = ed25519(2);
        let forged = JwtKeys::empty(TokenPolicy::new(TTL))
            .signing_ed25519(kid, impostor)
            .issue(&user(), SessionId::new(), far(), Utc::now())
            .expect("sign");
        assert_eq!(
            invalid(eddsa_keys(1).verify(forged.as_str(), Utc::now())),
            Invalid::Signature
        );
        let other_secret = JwtKeys::new(&secret("another-secret-that-is-long-enough!!"), TTL)
            .issue(&user(), SessionId::new(), far(), Utc::now())
            .expect("sign");
        assert!(matches!(
            keys().verify(other_secret.as_str(), Utc::now()),
            Err(TokenError::UnknownKey)
        ));
    }

    #[test]
    fn a_kid_that_names_no_key_is_unknown() {
        let token = eddsa_keys(1)
            .issue(&user(), SessionId::new(), far(), Utc::now())
            .expect("sign");
        for keys in [eddsa_keys(2), keys()] {
            assert!(matches!(
                keys.verify(token.as_str(), Utc::now()),
                Err(TokenError::UnknownKey)
            ));
        }
        // No `kid` and no HS256 secret: nothing can check it.
        let (_, key) = ed25519(1);
        let legacy = reheaded(token.as_str(), r#"{"alg":"EdDSA","typ":"JWT"}"#, |input| {
            key.sign(input).to_bytes().to_vec()
        });
        assert!(matches!(
            eddsa_keys(1).verify(&legacy, Utc::now()),
            Err(TokenError::UnknownKey)
        ));
    }

    #[test]
    fn the_algorithm_is_the_keys_never_the_tokens() {
        let keys = eddsa_keys(1);
        let (kid, key) = ed25519(1);
        let token = keys
            .issue(&user(), SessionId::new(), far(), Utc::now())
            .expect("sign");
        // HS256 "signed" with the public key's bytes, naming the Ed25519 key: the classic
        // key-confusion forgery.
        let public = key.verifying_key().to_bytes();
        for public_form in [public.to_vec(), URL_SAFE_NO_PAD.encode(public).into_bytes()] {
            let confused = reheaded(
                token.as_str(),
                &format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#),
                hs256(&public_form),
            );
            assert_eq!(
                invalid(keys.verify(&confused, Utc::now())),
                Invalid::Algorithm
            );
        }
        // And the other way round: an EdDSA header naming the HS256 key.
        let hs = keys_with_both();
        let hs_kid = secret("0123456789abcdef0123456789abcdef").key_id();
        let ed_on_hs = reheaded(
            token.as_str(),
            &format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{hs_kid}"}}"#),
            |input| key.sign(input).to_bytes().to_vec(),
        );
        assert_eq!(
            invalid(hs.verify(&ed_on_hs, Utc::now())),
            Invalid::Algorithm
        );
        // `none`, and algorithms authlog never uses, with and without a kid.
        for header in [
            format!(r#"{{"alg":"none","kid":"{kid}"}}"#),
            r#"{"alg":"none"}"#.to_owned(),
            format!(r#"{{"alg":"HS512","kid":"{kid}"}}"#),
            format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#),
        ] {
            let forged = reheaded(token.as_str(), &header, |_| Vec::new());
            assert!(keys.verify(&forged, Utc::now()).is_err(), "{header}");
        }
    }

    fn keys_with_both() -> JwtKeys {
        let (kid, key) = ed25519(1);
        JwtKeys::empty(TokenPolicy::new(TTL))
            .signing_ed25519(kid, key)
            .verifying_hs256(&secret("0123456789abcdef0123456789abcdef"))
    }

    #[test]
    fn tokens_from_before_key_ids_verify_only_with_their_secret() {
        let secret = secret("0123456789abcdef0123456789abcdef");
        let both = keys_with_both();
        let old = keys()
            .issue(&user(), SessionId::new(), far(), Utc::now())
            .expect("sign");
        let kidless = reheaded(
            old.as_str(),
            r#"{"alg":"HS256","typ":"JWT"}"#,
            hs256(secret.bytes()),
        );
        assert!(both.verify(&kidless, Utc::now()).is_ok(), "legacy HS256");
        assert!(both.verify(old.as_str(), Utc::now()).is_ok(), "HS256 kid");
        let wrong = reheaded(
            old.as_str(),
            r#"{"alg":"HS256","typ":"JWT"}"#,
            hs256(b"another-secret-that-is-long-enough!!"),
        );
        assert_eq!(invalid(both.verify(&wrong, Utc::now())), Invalid::Signature);
    }

    #[test]
    fn required_claims_must_be_present_and_typed() {
        let keys = keys();
        let key = secret("0123456789abcdef0123456789abcdef");
        let now = Utc::now().timestamp();
        let header = format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#, key.key_id());
        let sign = |claims: serde_json::Value| {
            let input = format!("{}.{}", b64(&header), b64(&claims.to_string()));
            let signature = URL_SAFE_NO_PAD.encode(hs256(key.bytes())(input.as_bytes()));
            format!("{input}.{signature}")
        };
        let id = UserId::new().to_string();
        let base = serde_json::json!({
            "iss": "authlog", "aud": "authlog", "sub": id, "email": "a@example.com",
            "iat": now, "nbf": now, "exp": now + 60, "jti": uuid::Uuid::new_v4(),
            "sid": SessionId::new(),
        });
        assert!(keys.verify(&sign(base.clone()), Utc::now()).is_ok());
        for (field, value) in [
            ("exp", serde_json::Value::Null),
            ("nbf", serde_json::Value::Null),
            ("sub", serde_json::json!("42")),
            ("exp", serde_json::json!("9999999999")),
            ("aud", serde_json::json!(["authlog"])),
        ] {
            let mut claims = base.clone();
            if value.is_null() {
                claims.as_object_mut().expect("object").remove(field);
            } else {
                claims[field] = value.clone();
            }
            assert_eq!(
                invalid(keys.verify(&sign(claims), Utc::now())),
                Invalid::Claims,
                "{field}: {value}"
            );
        }
        let mut elsewhere = base.clone();
        elsewhere["iss"] = serde_json::json!("someone-else");
        assert_eq!(
            invalid(keys.verify(&sign(elsewhere), Utc::now())),
            Invalid::Issuer
        );
        let mut other_audience = base;
        other_audience["aud"] = serde_json::json!("another-service");
        assert_eq!(
            invalid(keys.verify(&sign(other_audience), Utc::now())),
            Invalid::Audience
        );
    }

    #[test]
    fn debug_output_hides_secret_and_token() {
        let secret = secret("0123456789abcdef0123456789abcdef");
        assert!(!format!("{secret:?}").contains("0123"));
        let token = keys()
            .issue(&user(), SessionId::new(), far(), Utc::now())
            .expect("sign");
        assert!(!format!("{token:?}").contains("eyJ"));
        assert!(!format!("{:?}", keys()).contains("0123"));
    }

    #[test]
    fn tokens_carry_issuer_audience_and_a_unique_id() {
        let keys = eddsa_keys(3);
        let user = user();
        let first = keys
            .issue(&user, SessionId::new(), far(), Utc::now())
            .expect("sign");
        let second = keys
            .issue(&user, SessionId::new(), far(), Utc::now())
            .expect("sign");
        assert_ne!(first, second, "two logins, two tokens");
        let claims = keys.verify(first.as_str(), Utc::now()).expect("valid");
        assert_eq!(
            (claims.iss.as_str(), claims.aud.as_str()),
            ("authlog", "authlog")
        );
    }

    #[test]
    fn without_an_active_key_nothing_is_issued() {
        let keys = JwtKeys::empty(TokenPolicy::new(TTL));
        assert!(matches!(
            keys.issue(&user(), SessionId::new(), far(), Utc::now()),
            Err(TokenError::NoSigningKey)
        ));
    }

    #[test]
    fn the_cache_answers_only_for_the_same_token_while_it_is_valid() {
        let keys = eddsa_keys(4);
        let issued = Utc::now();
        let token = keys
            .issue(&user(), SessionId::new(), far(), issued)
            .expect("sign");
        let claims = keys.verify(token.as_str(), Utc::now()).expect("valid");
        let now = issued.timestamp();
        let mut cache = VerifiedTokens::new(2);
        assert!(cache.get(token.as_str(), now).is_none());
        cache.insert(token.as_str(), Arc::new(claims.clone()), now);
        assert_eq!(cache.get(token.as_str(), now).as_deref(), Some(&claims));
        // One byte off is another token: not in the cache, whichever byte it is.
        let mut shorter = token.as_str().to_owned();
        shorter.pop();
        assert!(cache.get(&shorter, now).is_none());
        let other_header = format!("x{}", &token.as_str()[1..]);
        assert!(cache.get(&other_header, now).is_none());
        // Past `exp` plus the leeway the cached token is refused, as verify would.
        let leeway = LEEWAY_SECONDS as i64;
        assert!(cache.get(token.as_str(), claims.exp + leeway).is_some());
        assert!(cache.get(token.as_str(), claims.exp + leeway + 1).is_none());
        assert!(cache.get(token.as_str(), claims.nbf - leeway - 1).is_none());
        cache.clear();
        assert!(cache.get(token.as_str(), now).is_none());
    }

    #[test]
    fn a_full_cache_drops_expired_tokens_first_then_everything() {
        let user = user();
        let expiring = |exp: i64| {
            Arc::new(Claims {
                iss: DEFAULT_ISSUER.to_owned(),
                aud: DEFAULT_ISSUER.to_owned(),
                sub: user.user_id,
                email: user.email.clone(),
                iat: exp - 1800,
                nbf: exp - 1800,
                exp,
                jti: uuid::Uuid::new_v4(),
                sid: SessionId::new(),
                roles: Vec::new(),
            })
        };
        let now = Utc::now().timestamp();
        let mut cache = VerifiedTokens::new(2);
        cache.insert("old", expiring(now - 3600), now);
        cache.insert("fresh", expiring(now + 600), now);
        cache.insert("third", expiring(now + 600), now);
        assert_eq!(cache.len(), 2, "the expired one made room");
        assert!(cache.get("fresh", now).is_some() && cache.get("old", now).is_none());
        cache.insert("fourth", expiring(now + 600), now);
        assert_eq!(
            cache.len(),
            1,
            "nothing had expired: cleared, then the new one"
        );
        assert!(cache.get("fourth", now).is_some());
    }

    #[test]
    fn unexpected_header_fields_are_rejected_before_the_signature() {
        let keys = eddsa_keys(5);
        let token = keys
            .issue(&user(), SessionId::new(), far(), Utc::now())
            .expect("sign");
        let kid = keys.signing_key().expect("signs").clone();
        let rest = token.as_str().split_once('.').expect("segments").1;
        for header in [
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","jku":"https://evil.example/keys"}}"#),
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","x5u":"https://evil.example/cert"}}"#),
            format!(
                r#"{{"alg":"EdDSA","kid":"{kid}","jwk":{{"kty":"OKP","crv":"Ed25519","x":"AAAA"}}}}"#
            ),
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","x5c":["MII"]}}"#),
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","crit":["exp"]}}"#),
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"at+jwt"}}"#),
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","kid":"other"}}"#),
            r#"["alg","EdDSA"]"#.to_owned(),
            r#"{"kid":"x"}"#.to_owned(),
        ] {
            let forged = format!("{}.{rest}", b64(&header));
            assert!(
                matches!(
                    keys.verify(&forged, Utc::now()),
                    Err(TokenError::UnexpectedHeader)
                ),
                "{header}"
            );
        }
    }

    #[test]
    fn malformed_tokens_are_refused_without_panicking() {
        let keys = eddsa_keys(6);
        let token = keys
            .issue(&user(), SessionId::new(), far(), Utc::now())
            .expect("sign");
        let parts: Vec<&str> = token.as_str().split('.').collect();
        for bad in [
            String::new(),
            "garbage".to_owned(),
            ".".to_owned(),
            "..".to_owned(),
            format!("{}.{}", parts[0], parts[1]),
            format!("{}.extra", token.as_str()),
            format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
            format!("{}.{}.", parts[0], parts[1]),
            format!("{}.{}.{}", parts[0], parts[1], &parts[2][..10]),
        ] {
            assert!(keys.verify(&bad, Utc::now()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_jwks_lists_public_keys_only_in_the_order_given() {
        let (kid1, key1) = ed25519(1);
        let (kid2, key2) = ed25519(2);
        let keys = JwtKeys::empty(TokenPolicy::new(TTL))
            .verifying_ed25519(kid1.clone(), key1.verifying_key())
            .signing_ed25519(kid2.clone(), key2)
            .verifying_hs256(&secret("0123456789abcdef0123456789abcdef"));
        let hs_kid = secret("0123456789abcdef0123456789abcdef").key_id();
        let set = JwkSet::of(&keys, &[kid1.clone(), hs_kid, kid2.clone()]);
        let ids: Vec<_> = set.keys.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(ids, [kid1.as_str(), kid2.as_str()]);
        let json = serde_json::to_value(&set).expect("json");
        assert_eq!(json["keys"][0]["kty"], "OKP");
        assert_eq!(json["keys"][0]["crv"], "Ed25519");
        assert_eq!(json["keys"][0]["use"], "sig");
        assert_eq!(json["keys"][0]["alg"], "EdDSA");
        assert_eq!(
            json["keys"][0]["x"],
            URL_SAFE_NO_PAD.encode(key1.verifying_key().as_bytes())
        );
    }
}
