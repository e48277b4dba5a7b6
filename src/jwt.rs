//! Access tokens: HS256 JWTs with the one validation policy authlog accepts. Pure functions over
//! a key, so they can be tested alone; the [`crate::actors::TokenActor`] runs them for callers.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::domain::{Email, SessionId, UserId};
use crate::projection::UserSummary;
use crate::sessions::RefreshKey;

/// Clock skew tolerated on `exp` and `nbf`, in seconds. Small, because tokens are checked by the
/// same service (or its replicas) that issued them.
pub const LEEWAY_SECONDS: u64 = 30;
/// `iss` and `aud` when none are configured.
pub const DEFAULT_ISSUER: &str = "authlog";
/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
pub const MIN_SECRET_BYTES: usize = 32;

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
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret([redacted])")
    }
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

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot sign the token")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("invalid or expired token")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    /// The JOSE header has a field other than `alg` and `typ` (such as `kid`, `jku`, `jwk` or
    /// `crit`), or is not a JSON object: authlog never issues one, so it is not one of ours.
    #[error("unexpected token header")]
    UnexpectedHeader,
    #[error("the system's random source failed")]
    Random(#[source] getrandom::Error),
}

/// Signing and verification keys with the one validation policy authlog accepts.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: chrono::Duration,
    issuer: String,
    audience: String,
    /// Tags refresh tokens, under a key derived from the same secret.
    refresh: RefreshKey,
}

impl JwtKeys {
    /// Keys with issuer and audience [`DEFAULT_ISSUER`].
    pub fn new(secret: &JwtSecret, ttl: Duration) -> Self {
        Self::with_issuer(secret, ttl, DEFAULT_ISSUER, DEFAULT_ISSUER)
    }

    /// Keys that issue and accept tokens for this issuer and audience only.
    pub fn with_issuer(secret: &JwtSecret, ttl: Duration, issuer: &str, audience: &str) -> Self {
        let bytes = secret.0.expose_secret().as_bytes();
        // HS256 only: a token naming any other algorithm (`none`, RS256, HS512) is rejected.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        // Checked in `verify` against the caller's clock (the same rule as the library's), so
        // the service and its tests share one notion of now.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "sub", "iss", "aud"]);
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            refresh: RefreshKey::derive(bytes),
        }
    }

    /// Mints and reads refresh tokens.
    pub fn refresh(&self) -> &RefreshKey {
        &self.refresh
    }

    /// The access-token lifetime.
    pub fn ttl(&self) -> chrono::Duration {
        self.ttl
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
        let iat = now.timestamp();
        let exp = (now + self.ttl).min(not_after).timestamp().max(iat);
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.user_id,
            email: user.email.clone(),
            iat,
            nbf: iat,
            exp,
            jti: uuid::Uuid::new_v4(),
            sid: session,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map(|token| AccessToken(token, exp))
            .map_err(TokenError::Sign)
    }

    /// Checks the header holds only `alg` and `typ`, then signature, algorithm, `iss`, `aud`,
    /// the claims' types (RFC 8725 §3), and `exp` and `nbf` at `now` (with [`LEEWAY_SECONDS`]).
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, TokenError> {
        check_header(token)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(TokenError::Invalid)?;
        check_times(&claims, now.timestamp())?;
        Ok(claims)
    }
}

/// `exp` and `nbf` at `now` (Unix seconds), with the leeway: the rule for fresh and cached
/// tokens alike.
fn check_times(claims: &Claims, now: i64) -> Result<(), TokenError> {
    use jsonwebtoken::errors::ErrorKind;
    let leeway = LEEWAY_SECONDS as i64;
    if claims.exp < now - leeway {
        return Err(TokenError::Invalid(ErrorKind::ExpiredSignature.into()));
    }
    if claims.nbf > now + leeway {
        return Err(TokenError::Invalid(ErrorKind::ImmatureSignature.into()));
    }
    Ok(())
}

/// Tokens that verified recently, so a client presenting the same token again (as it does on
/// every request until the token expires) costs a hash lookup instead of a header check, an
/// HMAC and three JSON parses (about 5 µs, and far more for public-key signatures). API
/// gateways do the same (Envoy's `jwt_authn` keeps such a cache).
///
/// Only tokens that passed [`JwtKeys::verify`] enter, keyed by the whole token, so a hit is the
/// same token byte for byte; `exp` and `nbf` are checked again on every hit, with the same
/// leeway. Bounded: when full, expired entries go, and if that frees nothing, all of them.
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

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Accepts only the header authlog writes: a JSON object with `alg` and, optionally, `typ` of
/// `JWT`. Key-selection headers (`kid`, `jku`, `jwk`, `x5u`, `x5c`) and `crit` are refused before
/// the signature is looked at, so no header can steer which key is used.
fn check_header(token: &str) -> Result<(), TokenError> {
    let segment = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::UnexpectedHeader)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| TokenError::UnexpectedHeader)?;
    let expected = header.iter().all(|(key, value)| match key.as_str() {
        "alg" => value == "HS256",
        "typ" => value == "JWT",
        _ => false,
    });
    if expected {
        Ok(())
    } else {
        Err(TokenError::UnexpectedHeader)
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::errors::ErrorKind;

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

    fn user() -> UserSummary {
        UserSummary {
            user_id: UserId::new(),
            email: Email::parse("user@example.com").expect("valid"),
        }
    }

    fn kind(result: Result<Claims, TokenError>) -> ErrorKind {
        match result {
            Err(TokenError::Invalid(error)) => error.into_kind(),
            other => panic!("expected an invalid token, got {other:?}"),
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        let short = JwtSecret::parse(SecretString::from("x".repeat(31)));
        assert_eq!(short.err(), Some(JwtSecretError(31)));
    }

    #[test]
    fn issued_tokens_verify_with_all_claims() {
        let keys = keys();
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
            kind(keys.verify(token.as_str(), Utc::now())),
            ErrorKind::ExpiredSignature
        );
    }

    #[test]
    fn not_before_in_the_future_is_rejected() {
        let keys = keys();
        let later = Utc::now() + chrono::Duration::seconds(LEEWAY_SECONDS as i64 + 30);
        let token = keys
            .issue(&user(), SessionId::new(), far(), later)
            .expect("sign");
        assert_eq!(
            kind(keys.verify(token.as_str(), Utc::now())),
            ErrorKind::ImmatureSignature
        );
    }

    #[test]
    fn another_key_is_rejected() {
        let token = keys()
            .issue(&user(), SessionId::new(), far(), Utc::now())
            .expect("sign");
        let other = JwtKeys::new(&secret("another-secret-that-is-long-enough!!"), TTL);
        assert_eq!(
            kind(other.verify(token.as_str(), Utc::now())),
            ErrorKind::InvalidSignature
        );
    }

    #[test]
    fn other_algorithms_are_rejected_even_with_the_right_key() {
        let keys = keys();
        let user = user();
        let now = Utc::now().timestamp();
        let claims = Claims {
            iss: DEFAULT_ISSUER.to_owned(),
            aud: DEFAULT_ISSUER.to_owned(),
            sub: user.user_id,
            email: user.email,
            iat: now,
            nbf: now,
            exp: now + 600,
            jti: uuid::Uuid::new_v4(),
            sid: SessionId::new(),
        };
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .expect("sign");
        assert!(keys.verify(&hs512, Utc::now()).is_err());

        // {"alg":"none","typ":"JWT"} with the real payload and no signature.
        let valid = keys
            .issue(
                &UserSummary {
                    user_id: claims.sub,
                    email: claims.email,
                },
                SessionId::new(),
                far(),
                Utc::now(),
            )
            .expect("sign");
        let payload = valid.as_str().split('.').nth(1).expect("three parts");
        for alg_none in [
            format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}."),
            format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}"),
        ] {
            assert!(keys.verify(&alg_none, Utc::now()).is_err());
        }
    }

    #[test]
    fn required_claims_must_be_present_and_typed() {
        let keys = keys();
        let key = EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
        let now = Utc::now().timestamp();
        let sign = |claims: serde_json::Value| {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("sign")
        };
        let id = UserId::new().to_string();
        let no_exp =
            sign(serde_json::json!({"sub": id, "email": "a@example.com", "iat": now, "nbf": now}));
        assert!(keys.verify(&no_exp, Utc::now()).is_err());
        let no_nbf = sign(
            serde_json::json!({"sub": id, "email": "a@example.com", "iat": now, "exp": now + 60}),
        );
        assert!(keys.verify(&no_nbf, Utc::now()).is_err());
        let bad_sub = sign(
            serde_json::json!({"sub": "42", "email": "a@example.com", "iat": now, "nbf": now, "exp": now + 60}),
        );
        assert!(keys.verify(&bad_sub, Utc::now()).is_err());
        let string_exp = sign(
            serde_json::json!({"sub": id, "email": "a@example.com", "iat": now, "nbf": now, "exp": "9999999999"}),
        );
        assert!(keys.verify(&string_exp, Utc::now()).is_err());
    }

    #[test]
    fn debug_output_hides_secret_and_token() {
        let secret = secret("0123456789abcdef0123456789abcdef");
        assert!(!format!("{secret:?}").contains("0123"));
        let token = keys()
            .issue(&user(), SessionId::new(), far(), Utc::now())
            .expect("sign");
        assert!(!format!("{token:?}").contains("eyJ"));
    }

    #[test]
    fn tokens_carry_issuer_audience_and_a_unique_id() {
        let keys = keys();
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
        let elsewhere = JwtKeys::with_issuer(
            &secret("0123456789abcdef0123456789abcdef"),
            TTL,
            "authlog",
            "another-service",
        );
        assert_eq!(
            kind(elsewhere.verify(first.as_str(), Utc::now())),
            ErrorKind::InvalidAudience
        );
    }

    #[test]
    fn the_cache_answers_only_for_the_same_token_while_it_is_valid() {
        let keys = keys();
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
        let keys = keys();
        let token = keys
            .issue(&user(), SessionId::new(), far(), Utc::now())
            .expect("sign");
        let rest = token.as_str().split_once('.').expect("segments").1;
        for header in [
            r#"{"alg":"HS256","typ":"JWT","kid":"1"}"#,
            r#"{"alg":"HS256","jku":"https://evil.example/keys"}"#,
            r#"{"alg":"HS256","crit":["exp"]}"#,
            r#"{"alg":"HS256","typ":"at+jwt"}"#,
            r#"["alg","HS256"]"#,
        ] {
            let forged = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header));
            assert!(
                matches!(
                    keys.verify(&forged, Utc::now()),
                    Err(TokenError::UnexpectedHeader)
                ),
                "{header}"
            );
        }
    }
}
