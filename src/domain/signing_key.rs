//! What names a token signing key (`kid`) and which algorithm it signs with: parsed once, so a
//! header's `kid` or a CLI argument is checked before it reaches any lookup.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A key's id, as access tokens carry it in their `kid` header: 1 to 64 characters of the
/// base64url alphabet. An Ed25519 key's id is its RFC 7638 JWK thumbprint, so anyone holding the
/// public key can recompute it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a key id is 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'")]
pub struct KeyIdError;

impl KeyId {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, KeyIdError> {
        let valid = (1..=Self::MAX_CHARS).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(KeyIdError)
        }
    }

    /// The RFC 7638 thumbprint of an Ed25519 public key: SHA-256 over its canonical JWK
    /// (`crv`, `kty`, `x` in that order, no spaces), base64url without padding.
    pub fn thumbprint_ed25519(public_key: &[u8; 32]) -> Self {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let canonical = format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            b64.encode(public_key)
        );
        Self(b64.encode(Sha256::digest(canonical.as_bytes())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyId {
    type Error = KeyIdError;

    fn try_from(raw: String) -> Result<Self, KeyIdError> {
        Self::parse(&raw)
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> Self {
        id.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for KeyId {
    type Err = KeyIdError;

    fn from_str(raw: &str) -> Result<Self, KeyIdError> {
        Self::parse(raw)
    }
}

/// The JWS algorithms authlog signs access tokens with, named as in their `alg` header
/// (RFC 7518, RFC 8037). Each key signs with exactly one, and a token is checked only with the
/// algorithm its key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    /// Ed25519 (RFC 8037): a public key anyone may have; the default.
    EdDSA,
    /// HMAC-SHA256 under a shared secret: whoever can check a token can also mint one.
    HS256,
}

impl KeyAlgorithm {
    /// The `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EdDSA => "EdDSA",
            KeyAlgorithm::HS256 => "HS256",
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_base64url_words_of_bounded_length() {
        for good in ["a", "hs256-AbC_9", &"x".repeat(64)] {
            assert!(KeyId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", &"x".repeat(65), "a b", "a/b", "ключ", "a.b", "../x"] {
            assert_eq!(KeyId::parse(bad), Err(KeyIdError), "{bad}");
        }
    }

    #[test]
    fn the_thumbprint_is_rfc_7638s() {
        // RFC 8037 Appendix A.3: the thumbprint of the example Ed25519 key.
        use base64::Engine as _;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .expect("base64url");
        let x: [u8; 32] = x.try_into().expect("32 bytes");
        assert_eq!(
            KeyId::thumbprint_ed25519(&x).as_str(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn algorithms_serialise_as_their_alg_names() {
        assert_eq!(
            serde_json::to_value(KeyAlgorithm::EdDSA).expect("json"),
            "EdDSA"
        );
        assert_eq!(KeyAlgorithm::HS256.as_str(), "HS256");
    }
}
