//! Secrets at rest: the master key, the keys derived from it, and sealing bytes under one of them,
//! so that what the log's database holds (signing keys' private halves) is useless without it.
//!
//! - The master key comes from `AUTHLOG_MASTER_KEY`, or from a file generated once into the
//!   embedded store's data directory. It never enters the database.
//! - Each use gets a key of its own, derived with HKDF-SHA256 under a fixed label
//!   ([`MasterKey::derive`]): one key never serves two purposes.
//! - [`Sealer`] seals with XChaCha20-Poly1305: a random 192-bit nonce per message (safe to draw at
//!   random for any number of messages), and associated data naming what the bytes are, so a
//!   sealed value moved to another place in the log does not open there.

use std::fmt;

use chacha20poly1305::aead::{Aead, AeadInOut, Payload};
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The shortest master key accepted, in bytes: 256 bits of key material, written as
/// `openssl rand -hex 32` gives it (64 characters) or as any longer string.
pub const MIN_MASTER_KEY_BYTES: usize = 32;

/// HKDF's salt: fixed, so every instance given the same master key derives the same keys.
const SALT: &[u8] = b"authlog master key v1";

/// Labels of the derived keys: one per purpose, never reused for another.
pub mod labels {
    /// Seals signing keys' private halves in the log.
    pub const SIGNING_KEY_WRAP: &[u8] = b"authlog signing-key wrap v1";
    /// Tags refresh tokens (HMAC-SHA256).
    pub const REFRESH_TOKEN_TAG: &[u8] = b"authlog refresh-token tag v2";
    /// Wraps each user's personal-data key ([`crate::events::personal`]).
    pub const PERSONAL_KEY_WRAP: &[u8] = b"authlog personal-key wrap v1";
    /// Keys the email blind index (HMAC-SHA256 of the normalised address).
    pub const EMAIL_INDEX: &[u8] = b"authlog email blind index v1";
    /// Seals snapshots of the folded state ([`crate::snapshot`]).
    pub const SNAPSHOT: &[u8] = b"authlog snapshot v1";
}

/// The root of every key authlog keeps at rest. Never printed: `Debug` is redacted, and the
/// extracted key is wiped on drop.
#[derive(Clone)]
pub struct MasterKey {
    /// HKDF's pseudorandom key, extracted once from the configured bytes.
    prk: Zeroizing<[u8; 32]>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("AUTHLOG_MASTER_KEY must be at least {MIN_MASTER_KEY_BYTES} bytes, got {0}")]
pub struct MasterKeyError(pub usize);

impl MasterKey {
    /// At least [`MIN_MASTER_KEY_BYTES`] bytes of any kind (a hex string from `openssl rand -hex
    /// 32` is 64): HKDF extracts a uniform key from whatever is given.
    pub fn parse(secret: &SecretString) -> Result<Self, MasterKeyError> {
        let bytes = secret.expose_secret().as_bytes();
        if bytes.len() < MIN_MASTER_KEY_BYTES {
            return Err(MasterKeyError(bytes.len()));
        }
        let (prk, _) = Hkdf::<Sha256>::extract(Some(SALT), bytes);
        Ok(Self {
            prk: Zeroizing::new(prk.into()),
        })
    }

    /// A master key of 32 random bytes, for a log that lives and dies in memory. Should the
    /// system's random source fail, the key is all zeros: acceptable only because nothing
    /// sealed under it outlives the process.
    pub fn random() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        let _ = getrandom::fill(bytes.as_mut_slice());
        let (prk, _) = Hkdf::<Sha256>::extract(Some(SALT), bytes.as_slice());
        Self {
            prk: Zeroizing::new(prk.into()),
        }
    }

    /// The 32-byte key for one purpose, named by its label ([`labels`]).
    pub fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut okm = Zeroizing::new([0u8; 32]);
        // `from_prk` fails only for a PRK shorter than the hash, and `expand` only past 255
        // hash lengths: neither can happen with these sizes.
        if let Ok(hkdf) = Hkdf::<Sha256>::from_prk(self.prk.as_slice()) {
            let _ = hkdf.expand(label, okm.as_mut_slice());
        }
        okm
    }

    /// Seals and opens under the key derived for `label`.
    pub fn sealer(&self, label: &[u8]) -> Sealer {
        Sealer::new(&self.derive(label))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// The random part of every sealed value.
pub const NONCE_BYTES: usize = 24;
/// Poly1305's tag.
const TAG_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the system's random source failed")]
    Random(#[source] getrandom::Error),
    #[error("cannot seal")]
    Seal,
}

/// XChaCha20-Poly1305 under one derived key. A sealed value is `nonce ‖ ciphertext ‖ tag`.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// Seals under `key` itself (a per-user data key), rather than one derived from the master.
    pub fn from_key(key: &[u8; 32]) -> Self {
        Self::new(key)
    }

    fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&(*key).into()),
        }
    }

    /// `plaintext` sealed with a fresh random nonce, bound to `context` (authenticated, not
    /// stored): opening it needs the same context.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(SealError::Random)?;
        self.seal_with(nonce, plaintext, context)
    }

    /// [`Sealer::seal`] with a nonce the caller drew from the OS random source (in bulk, for
    /// many values at once): it must never be used twice under one key.
    pub fn seal_with(
        &self,
        nonce: [u8; NONCE_BYTES],
        plaintext: &[u8],
        context: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let ciphertext = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .map_err(|_| SealError::Seal)?;
        let mut sealed = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// [`Sealer::open`] without allocating: decrypts `sealed` where it lies and returns the
    /// plaintext part of it (the caller wipes it when done).
    pub fn open_in_place<'a>(&self, sealed: &'a mut [u8], context: &[u8]) -> Option<&'a [u8]> {
        if sealed.len() < NONCE_BYTES + TAG_BYTES {
            return None;
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_BYTES);
        let (ciphertext, tag) = rest.split_at_mut(rest.len() - TAG_BYTES);
        let nonce = XNonce::try_from(&*nonce).ok()?;
        let tag = Tag::try_from(&*tag).ok()?;
        self.cipher
            .decrypt_inout_detached(&nonce, context, ciphertext.into(), &tag)
            .ok()?;
        Some(ciphertext)
    }

    /// The plaintext, if `sealed` was sealed under this key with this `context` and not
    /// changed since; `None` otherwise (another master key, another context, altered bytes).
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_BYTES + TAG_BYTES {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        let nonce = XNonce::try_from(nonce).ok()?;
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(raw: &str) -> MasterKey {
        MasterKey::parse(&SecretString::from(raw.to_owned())).expect("long enough")
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn short_master_keys_are_refused_without_echoing_them() {
        let error = MasterKey::parse(&SecretString::from("x".repeat(31))).expect_err("short");
        assert_eq!(error, MasterKeyError(31));
        assert!(!error.to_string().contains("xxx"));
        assert!(!format!("{:?}", master(KEY)).contains("0123"));
    }

    #[test]
    fn derived_keys_differ_by_label_and_by_master_key_and_repeat_otherwise() {
        let one = master(KEY);
        assert_eq!(
            *one.derive(labels::SIGNING_KEY_WRAP),
            *master(KEY).derive(labels::SIGNING_KEY_WRAP)
        );
        assert_ne!(
            *one.derive(labels::SIGNING_KEY_WRAP),
            *one.derive(labels::REFRESH_TOKEN_TAG)
        );
        let other = master(&KEY.replace('0', "1"));
        assert_ne!(
            *one.derive(labels::SIGNING_KEY_WRAP),
            *other.derive(labels::SIGNING_KEY_WRAP)
        );
    }

    #[test]
    fn sealed_bytes_open_only_with_the_same_key_and_context_and_unchanged() {
        let sealer = master(KEY).sealer(labels::SIGNING_KEY_WRAP);
        let sealed = sealer.seal(b"private", b"key-1").expect("sealed");
        assert_eq!(sealed.len(), NONCE_BYTES + b"private".len() + TAG_BYTES);
        assert!(!sealed.windows(7).any(|w| w == b"private"));
        assert_eq!(
            sealer.open(&sealed, b"key-1").as_deref().map(Vec::as_slice),
            Some(&b"private"[..])
        );
        assert!(sealer.open(&sealed, b"key-2").is_none(), "another context");
        let other = master(&KEY.replace('a', "b")).sealer(labels::SIGNING_KEY_WRAP);
        assert!(
            other.open(&sealed, b"key-1").is_none(),
            "another master key"
        );
        for at in [0, NONCE_BYTES, sealed.len() - 1] {
            let mut changed = sealed.clone();
            changed[at] ^= 1;
            assert!(
                sealer.open(&changed, b"key-1").is_none(),
                "byte {at} changed"
            );
        }
        assert!(sealer.open(&sealed[..NONCE_BYTES], b"key-1").is_none());
        let again = sealer.seal(b"private", b"key-1").expect("sealed");
        assert_ne!(sealed, again, "a fresh nonce each time");
    }
}
