//! Passwords and their bcrypt hashes, typed so that neither can be logged or compared by accident.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Shortest password accepted at sign-up (NIST SP 800-63B's floor).
pub const MIN_BYTES: usize = 8;
/// bcrypt reads only the first 72 bytes; anything longer would be silently truncated.
pub const MAX_BYTES: usize = 72;

/// A plaintext password, held in memory that is wiped on drop and redacted from `Debug`.
///
/// Never trimmed or normalised: the bytes the user typed are the bytes we hash.
pub struct Password(SecretString);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("must be at least {MIN_BYTES} bytes")]
    TooShort,
    #[error("must be at most {MAX_BYTES} bytes (bcrypt ignores the rest)")]
    TooLong,
    #[error("is one of the most common passwords; choose another")]
    Common,
}

impl Password {
    /// Applies the sign-up policy: 8 to 72 bytes, any content (NUL and any Unicode included,
    /// compared exactly), and not one of the ~100,000 most common passwords (ASVS V6.2.4; the
    /// list ships with the `passwords` crate).
    pub fn parse(raw: String) -> Result<Self, PasswordError> {
        match raw.len() {
            n if n < MIN_BYTES => Err(PasswordError::TooShort),
            n if n > MAX_BYTES => Err(PasswordError::TooLong),
            _ if passwords::analyzer::is_common_password(&raw) => Err(PasswordError::Common),
            _ => Ok(Self(raw.into())),
        }
    }

    /// Accepts a password offered at login if bcrypt can compare it exactly.
    ///
    /// Only the 72-byte bound applies: a longer one could match on its first 72 bytes alone, so it
    /// can never be right. The sign-up minimum is not applied, so that a future change of policy
    /// never locks out users whose passwords met the old one.
    pub fn for_login(raw: String) -> Option<Self> {
        (raw.len() <= MAX_BYTES).then(|| Self(raw.into()))
    }

    /// 32 random hex digits, for hashes nobody can log in with.
    pub(crate) fn random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string().into())
    }

    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// A bcrypt hash in its modular-crypt form (`$2b$12$...`), as stored in `UserRegistered`.
///
/// Not a secret in the cryptographic sense, but still redacted from `Debug` so it never reaches a
/// log line: an offline guessing attack needs exactly this string.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasswordHash(String);

impl PasswordHash {
    pub(crate) fn new(hash: String) -> Self {
        Self(hash)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The bcrypt cost recorded in the hash (`$2b$12$…` → 12), if it has the usual form.
    pub fn cost(&self) -> Option<u32> {
        let mut parts = self.0.split('$');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(""), Some(_variant), Some(cost)) if cost.len() == 2 => cost.parse().ok(),
            _ => None,
        }
    }
}

/// Why a password hash brought from another system cannot be used ([`PasswordHash::import`]).
/// The messages never quote the hash: at most the name of its scheme.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsupportedHash {
    #[error("the password hash is empty")]
    Empty,
    #[error(
        "the password hash is {0}, not bcrypt: only $2a$, $2b$ and $2y$ bcrypt hashes can be imported"
    )]
    OtherScheme(String),
    #[error("the bcrypt cost {0} is outside 4 to 31")]
    Cost(u32),
    #[error(
        "the password hash is not a well-formed bcrypt hash ($2b$, a two-digit cost, '$', then 53 \
         characters of bcrypt's base64: 60 in all)"
    )]
    Malformed,
}

/// The bcrypt versions whose hashes are the same computation for every password of at most 72
/// bytes: OpenBSD's `2a` and `2b`, and `2y` (crypt_blowfish's name for the correct algorithm).
/// `2x` marks crypt_blowfish's old sign-extension bug, which no correct implementation repeats.
const IMPORTABLE_BCRYPT: [&str; 3] = ["2a", "2b", "2y"];

impl PasswordHash {
    /// A hash another system stored for a user (the FastAPI tutorial's passlib writes
    /// `$2b$12$…`), checked to be one authlog can verify: bcrypt `$2a$`, `$2b$` or `$2y$` at a
    /// cost of 4 to 31, in its 60-character modular-crypt form. Surrounding whitespace is
    /// dropped (a CSV export may pad it).
    pub fn import(raw: &str) -> Result<Self, UnsupportedHash> {
        let hash = raw.trim();
        if hash.is_empty() {
            return Err(UnsupportedHash::Empty);
        }
        let mut parts = hash.splitn(4, '$');
        let (Some(""), Some(scheme), Some(cost), Some(rest)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(other_scheme(hash));
        };
        if !IMPORTABLE_BCRYPT.contains(&scheme) {
            return Err(other_scheme(hash));
        }
        if cost.len() != 2 || !cost.bytes().all(|b| b.is_ascii_digit()) {
            return Err(UnsupportedHash::Malformed);
        }
        let cost: u32 = cost.parse().map_err(|_| UnsupportedHash::Malformed)?;
        if !(4..=31).contains(&cost) {
            return Err(UnsupportedHash::Cost(cost));
        }
        let bcrypt_base64 = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'/';
        if rest.len() != 53 || !rest.bytes().all(bcrypt_base64) {
            return Err(UnsupportedHash::Malformed);
        }
        Ok(Self(hash.to_owned()))
    }
}

/// Names the scheme of a modular-crypt hash (`$argon2id$…` is "an $argon2id$ hash") when it has
/// that shape; anything else is only "not bcrypt", so a plaintext password stored by mistake is
/// never echoed.
fn other_scheme(hash: &str) -> UnsupportedHash {
    let named = hash
        .strip_prefix('$')
        .and_then(|rest| rest.split_once('$'))
        .map(|(scheme, _)| scheme)
        .filter(|scheme| {
            (1..=16).contains(&scheme.len())
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    UnsupportedHash::OtherScheme(match named {
        Some(scheme) => format!("a ${scheme}$ hash"),
        None => "not in a modular-crypt form ($scheme$...)".to_owned(),
    })
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_passwords_are_refused_and_the_tutorials_is_not() {
        for common in [
            "password",
            "12345678",
            "password123",
            "qwertyuiop",
            "aaaaaaaa",
        ] {
            assert_eq!(
                Password::parse(common.to_owned()).err(),
                Some(PasswordError::Common),
                "{common}"
            );
        }
        assert!(Password::parse("mypassword123".to_owned()).is_ok());
        // Exact comparison: NUL and case make it another password.
        assert!(Password::parse("pass\0word".to_owned()).is_ok());
    }

    #[test]
    fn hash_cost_is_read_from_the_hash() {
        assert_eq!(PasswordHash::new("$2b$12$abc".to_owned()).cost(), Some(12));
        assert_eq!(PasswordHash::new("$2y$04$abc".to_owned()).cost(), Some(4));
        assert_eq!(PasswordHash::new("plain".to_owned()).cost(), None);
    }

    #[test]
    fn imports_take_bcrypt_2a_2b_2y_at_any_valid_cost_and_nothing_else() {
        let digest = "abcdefghijklmnopqrstuuJ3YdsgWvRzXKJe1NVvOQ8Cs3vZ5u3Dq";
        for variant in ["2a", "2b", "2y"] {
            for cost in ["04", "10", "12", "31"] {
                let hash = format!("${variant}${cost}${digest}");
                let imported = PasswordHash::import(&format!(" {hash}\n")).expect("bcrypt");
                assert_eq!(imported.as_str(), hash);
            }
        }
        let refused = |raw: &str| PasswordHash::import(raw).expect_err(raw);
        assert_eq!(refused(""), UnsupportedHash::Empty);
        assert_eq!(refused("  "), UnsupportedHash::Empty);
        assert_eq!(
            refused(&format!("$2b$03${digest}")),
            UnsupportedHash::Cost(3)
        );
        assert_eq!(
            refused(&format!("$2b$32${digest}")),
            UnsupportedHash::Cost(32)
        );
        assert_eq!(
            refused(&format!("$2b$4${digest}")),
            UnsupportedHash::Malformed
        );
        assert_eq!(
            refused(&format!("$2b$1a${digest}")),
            UnsupportedHash::Malformed
        );
        assert_eq!(refused("$2b$12$short"), UnsupportedHash::Malformed);
        assert_eq!(
            refused(&format!("$2b$12${}", digest.replace('a', "!"))),
            UnsupportedHash::Malformed
        );
        assert_eq!(
            refused(&format!("$2x$12${digest}")),
            UnsupportedHash::OtherScheme("a $2x$ hash".to_owned())
        );
        assert_eq!(
            refused("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"),
            UnsupportedHash::OtherScheme("a $argon2id$ hash".to_owned())
        );
        // A password stored in the clear is never repeated in the message.
        let message = refused("hunter2hunter2").to_string();
        assert!(!message.contains("hunter2"), "{message}");
        let message = refused("$Hunter2$secret").to_string();
        assert!(!message.contains("unter2"), "{message}");
    }

    #[test]
    fn bounds_are_in_bytes() {
        assert_eq!(
            Password::parse("a".repeat(7)).err(),
            Some(PasswordError::TooShort)
        );
        assert!(Password::parse("q7".repeat(4)).is_ok());
        assert!(Password::parse("a".repeat(72)).is_ok());
        assert_eq!(
            Password::parse("a".repeat(73)).err(),
            Some(PasswordError::TooLong)
        );
        // 24 three-byte characters are 72 bytes; one more straddles the limit.
        assert!(Password::parse("€".repeat(24)).is_ok());
        assert_eq!(
            Password::parse("€".repeat(25)).err(),
            Some(PasswordError::TooLong)
        );
        // Four characters, but 12 bytes.
        assert!(Password::parse("€€€€".to_string()).is_ok());
    }

    #[test]
    fn keeps_spaces_and_nul_bytes() {
        let password = Password::parse("  pass\0word  ".to_string()).expect("valid");
        assert_eq!(password.expose(), "  pass\0word  ");
    }

    #[test]
    fn login_accepts_only_what_bcrypt_compares_exactly() {
        assert!(Password::for_login("short".to_string()).is_some());
        assert!(Password::for_login("a".repeat(72)).is_some());
        assert!(Password::for_login("a".repeat(73)).is_none());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let password = Password::parse("hunter2hunter2".to_string()).expect("valid");
        assert!(!format!("{password:?}").contains("hunter2"));
        let hash = PasswordHash::new("$2b$04$abcdefghijklmnopqrstuv".to_string());
        assert!(!format!("{hash:?}").contains("abcdef"));
    }
}
