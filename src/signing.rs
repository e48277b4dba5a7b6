//! The token signing keys' private halves: made and sealed under the master key for the log
//! ([`KeyVault`]), and opened again by every instance's [`Keychain`], which turns the log's key
//! set into the [`JwtKeys`] its TokenActors sign and verify with.
//!
//! A key is trusted only if its private half opens under this instance's master key and matches
//! the public half and id the log records. A `SigningKeyAdded` written by anyone without the
//! master key (with only database access, say) therefore neither signs, verifies nor appears in
//! the JWKS; the keychain reports it.

use std::sync::{Arc, Mutex};

use crate::clock::Clock;
use crate::domain::{KeyAlgorithm, KeyId};
use crate::events::SigningKeyAdded;
use crate::jwt::{Claims, JwkSet, JwtKeys, JwtSecret, TokenError, TokenPolicy, VerifiedTokens};
use crate::keyring::{KeyRecord, KeySet, KeyState, KeysView};
use crate::vault::{MasterKey, SealError, Sealer, labels};

/// Makes new signing keys and opens the log's, under the master key.
#[derive(Debug, Clone)]
pub struct KeyVault {
    sealer: Sealer,
}

/// Why a key in the log cannot be used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Its private half does not open: sealed under another master key, or not by authlog.
    #[error("its private half does not open under this master key")]
    Sealed,
    /// It opens, but is not the key its public half and id say.
    #[error("its private half does not match its public half and id")]
    Mismatch,
    /// Not an algorithm the log's keys use.
    #[error("the log's keys are Ed25519; this one is not")]
    Algorithm,
}

/// What a sealed private key is bound to: its id, so it cannot be moved to another key's event.
fn context(key_id: &KeyId) -> Vec<u8> {
    let mut context = b"authlog signing key ".to_vec();
    context.extend_from_slice(key_id.as_str().as_bytes());
    context
}

impl KeyVault {
    pub fn new(master: &MasterKey) -> Self {
        Self {
            sealer: master.sealer(labels::SIGNING_KEY_WRAP),
        }
    }

    /// A new Ed25519 key from the OS random source, its private half sealed for the log.
    pub fn make(&self) -> Result<SigningKeyAdded, SealError> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice()).map_err(SealError::Random)?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public_key = key.verifying_key().to_bytes();
        let key_id = KeyId::thumbprint_ed25519(&public_key);
        let sealed_private_key = self.sealer.seal(seed.as_slice(), &context(&key_id))?;
        Ok(SigningKeyAdded {
            key_id,
            algorithm: KeyAlgorithm::EdDSA,
            public_key: public_key.to_vec(),
            sealed_private_key,
        })
    }

    /// The private half of `key`, if it opens under this master key and is the key its public
    /// half and id name.
    pub fn open(&self, key: &KeyRecord) -> Result<ed25519_dalek::SigningKey, OpenError> {
        if key.algorithm != KeyAlgorithm::EdDSA {
            return Err(OpenError::Algorithm);
        }
        let seed = self
            .sealer
            .open(&key.sealed_private_key, &context(&key.key_id))
            .ok_or(OpenError::Sealed)?;
        let seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| OpenError::Mismatch)?;
        let private = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public = private.verifying_key().to_bytes();
        if public[..] != key.public_key[..] || KeyId::thumbprint_ed25519(&public) != key.key_id {
            return Err(OpenError::Mismatch);
        }
        Ok(private)
    }
}

/// How this instance signs tokens, from its settings.
#[derive(Debug, Clone)]
pub struct SigningSettings {
    /// `EdDSA`: the log's active key signs. `HS256`: the secret signs.
    pub algorithm: KeyAlgorithm,
    /// The HS256 secret, if one is configured: it signs when `algorithm` is HS256, and verifies
    /// tokens it signed (with its `kid`, or none, from before `kid`s) either way.
    pub hs256: Option<JwtSecret>,
    pub policy: TokenPolicy,
}

/// The keys as built from one version of the log's key set.
#[derive(Debug)]
pub struct Built {
    /// The [`KeysView::generation`] it was built from.
    pub generation: u64,
    pub keys: Arc<JwtKeys>,
    /// `/.well-known/jwks.json`, rendered once.
    pub jwks: Arc<[u8]>,
    /// Keys in the log this instance cannot use, and why.
    pub unusable: Vec<(KeyId, OpenError)>,
}

/// Builds the [`JwtKeys`] from the log's key set, once per change of the set, for every
/// TokenActor of the process to share.
#[derive(Debug)]
pub struct Keychain {
    vault: KeyVault,
    view: KeysView,
    settings: SigningSettings,
    built: Mutex<Arc<Built>>,
}

/// Why the keychain cannot serve this log.
#[derive(Debug, thiserror::Error)]
pub enum KeychainError {
    #[error(
        "AUTHLOG_MASTER_KEY does not open any of the {0} signing keys in the event log: it is \
         not the master key this log was written with (on the embedded store, the data \
         directory's master-key file)"
    )]
    WrongMasterKey(usize),
    #[error(
        "the active signing key {0} cannot be used: {1}; give the master key this log was \
         written with, or run `authlog keys rotate --now` with this one"
    )]
    ActiveKey(KeyId, OpenError),
}

impl Keychain {
    pub fn new(vault: KeyVault, view: KeysView, settings: SigningSettings) -> Self {
        let built = Arc::new(build(&vault, &view.current(), view.generation(), &settings));
        Self {
            vault,
            view,
            settings,
            built: Mutex::new(built),
        }
    }

    /// Changes whenever the log's keys change: a TokenActor compares it with the generation of
    /// the keys it holds, one atomic load per token.
    pub fn generation(&self) -> u64 {
        self.view.generation()
    }

    /// The keys for the log's key set as it stands, built now if it changed.
    pub fn current(&self) -> Arc<Built> {
        let generation = self.view.generation();
        let Ok(mut built) = self.built.lock() else {
            return Arc::new(build(
                &self.vault,
                &self.view.current(),
                generation,
                &self.settings,
            ));
        };
        if built.generation != generation {
            let fresh = build(
                &self.vault,
                &self.view.current(),
                generation,
                &self.settings,
            );
            for (key_id, why) in &fresh.unusable {
                tracing::error!(
                    key_id = %key_id,
                    "a signing key in the event log is not trusted: {why}; it neither signs, \
                     verifies nor is published (written with another master key, or not by \
                     authlog)"
                );
            }
            *built = Arc::new(fresh);
        }
        Arc::clone(&built)
    }

    /// Whether this master key fits the log: it opens at least one of its keys, and the active
    /// one if this instance signs with it. Checked at start-up, so a wrong master key stops the
    /// service with a clear message instead of serving tokens nobody can check.
    pub fn check(&self) -> Result<(), KeychainError> {
        let set = self.view.current();
        let built = self.current();
        let published = set.published().count();
        if published > 0 && built.unusable.len() == published {
            return Err(KeychainError::WrongMasterKey(published));
        }
        if self.settings.algorithm == KeyAlgorithm::EdDSA
            && let Some(active) = set.active()
            && let Some((_, why)) = built.unusable.iter().find(|(id, _)| *id == active.key_id)
        {
            return Err(KeychainError::ActiveKey(active.key_id.clone(), *why));
        }
        Ok(())
    }

    /// The log's keys as this instance has applied them.
    pub fn key_set(&self) -> Arc<KeySet> {
        self.view.current()
    }

    pub fn vault(&self) -> &KeyVault {
        &self.vault
    }

    pub fn settings(&self) -> &SigningSettings {
        &self.settings
    }
}

/// Tokens each verifier remembers as verified (a few hundred bytes each).
pub const VERIFIED_TOKENS: usize = 4096;

/// Checks bearer tokens with the keychain's current keys, and remembers the ones that verified.
/// Plain and single-threaded: the TokenActor holds one (its `VerifyToken`), and each HTTP worker
/// holds its own for the hot path, so a request's token check is a function call on the
/// worker's thread, with no lock shared between workers and no message (docs/decisions.md,
/// "Token signing keys").
pub struct TokenVerifier {
    keychain: Arc<Keychain>,
    /// The keys it checks with, and the keychain generation they are for.
    built: Arc<Built>,
    /// Emptied when the keys change, so a retired key's tokens leave with it.
    verified: VerifiedTokens,
    clock: Clock,
}

impl TokenVerifier {
    pub fn new(keychain: Arc<Keychain>, clock: Clock) -> Self {
        Self {
            built: keychain.current(),
            keychain,
            verified: VerifiedTokens::new(VERIFIED_TOKENS),
            clock,
        }
    }

    /// The keys for the log's keys as they stand now: one atomic load, and the keychain's new
    /// build when they changed.
    pub fn keys(&mut self) -> &JwtKeys {
        if self.keychain.generation() != self.built.generation {
            self.built = self.keychain.current();
            self.verified.clear();
        }
        &self.built.keys
    }

    /// The claims of `token` if it verifies now: from the cache for a token that verified
    /// before (the same bytes, `exp` and `nbf` checked again), else checked and remembered.
    /// [`TokenError::UnknownKey`] may mean the key was added by another instance a moment ago:
    /// the caller may catch up with the log and ask again.
    pub fn verify(&mut self, token: &str) -> Result<Arc<Claims>, TokenError> {
        let now = self.clock.now();
        // First, so a change of keys empties the cache before it is read.
        self.keys();
        if let Some(claims) = self.verified.get(token, now.timestamp()) {
            return Ok(claims);
        }
        let claims = Arc::new(self.built.keys.verify(token, now)?);
        self.verified
            .insert(token, Arc::clone(&claims), now.timestamp());
        Ok(claims)
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn keychain(&self) -> Arc<Keychain> {
        Arc::clone(&self.keychain)
    }
}

/// The keys for `set`: the HS256 secret if configured, and every published key that opens; the
/// active one signs if this instance signs with EdDSA.
fn build(vault: &KeyVault, set: &KeySet, generation: u64, settings: &SigningSettings) -> Built {
    let mut keys = JwtKeys::empty(settings.policy.clone());
    if let Some(secret) = &settings.hs256 {
        keys = keys.verifying_hs256(secret);
        if settings.algorithm == KeyAlgorithm::HS256 {
            keys = keys.signing_hs256(secret);
        }
    }
    let mut unusable = Vec::new();
    let mut order = Vec::new();
    for record in set.published() {
        match vault.open(record) {
            Ok(private) => {
                let signs =
                    settings.algorithm == KeyAlgorithm::EdDSA && record.state() == KeyState::Active;
                keys = if signs {
                    keys.signing_ed25519(record.key_id.clone(), private)
                } else {
                    keys.verifying_ed25519(record.key_id.clone(), private.verifying_key())
                };
                order.push(record.key_id.clone());
            }
            Err(why) => unusable.push((record.key_id.clone(), why)),
        }
    }
    let jwks = serde_json::to_vec(&JwkSet::of(&keys, &order)).unwrap_or_default();
    Built {
        generation,
        keys: Arc::new(keys),
        jwks: jwks.into(),
        unusable,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use secrecy::SecretString;

    use super::*;
    use crate::domain::{Email, SessionId, UserId};
    use crate::events::testing::recorded;
    use crate::events::{Event, SigningKeyActivated};
    use crate::jwt::TokenError;
    use crate::keyring::KeyRing;
    use crate::projection::UserSummary;

    fn master(raw: &str) -> MasterKey {
        MasterKey::parse(&SecretString::from(raw.to_owned())).expect("long enough")
    }

    const MASTER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn settings(algorithm: KeyAlgorithm) -> SigningSettings {
        SigningSettings {
            algorithm,
            hs256: None,
            policy: TokenPolicy::new(Duration::from_secs(1800)),
        }
    }

    fn record(added: &SigningKeyAdded) -> KeyRecord {
        let mut ring = KeyRing::new();
        ring.apply(&recorded(1, 1, Event::SigningKeyAdded(added.clone())));
        ring.find(&added.key_id).expect("added").clone()
    }

    fn user() -> UserSummary {
        UserSummary {
            user_id: UserId::new(),
            email: Email::parse("user@example.com").expect("valid"),
            roles: Box::default(),
        }
    }

    #[test]
    fn a_made_key_opens_only_under_its_master_key_and_as_itself() {
        let vault = KeyVault::new(&master(MASTER));
        let added = vault.make().expect("made");
        assert_eq!(added.algorithm, KeyAlgorithm::EdDSA);
        assert_eq!(added.public_key.len(), 32);
        let public: [u8; 32] = added.public_key.clone().try_into().expect("32 bytes");
        assert_eq!(added.key_id, KeyId::thumbprint_ed25519(&public));
        let opened = vault.open(&record(&added)).expect("opens");
        assert_eq!(opened.verifying_key().to_bytes(), public);

        let other = KeyVault::new(&master(&MASTER.replace('0', "f")));
        assert_eq!(other.open(&record(&added)), Err(OpenError::Sealed));
        // The sealed half moved under another key's id does not open there.
        let mut moved = record(&vault.make().expect("made"));
        moved.sealed_private_key = added.sealed_private_key.clone();
        assert_eq!(vault.open(&moved), Err(OpenError::Sealed));
        // A public half that is not the private half's: refused.
        let mut swapped = record(&added);
        swapped.public_key = vec![9; 32];
        assert_eq!(vault.open(&swapped), Err(OpenError::Mismatch));
    }

    #[test]
    fn the_sealed_key_holds_no_plaintext_of_the_private_half() {
        let vault = KeyVault::new(&master(MASTER));
        let added = vault.make().expect("made");
        let private = vault.open(&record(&added)).expect("opens").to_bytes();
        assert!(
            !added
                .sealed_private_key
                .windows(8)
                .any(|window| private.windows(8).any(|p| p == window))
        );
        let json = serde_json::to_string(&added).expect("json");
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(private);
        assert!(!json.contains(&b64[..16]));
    }

    #[test]
    fn the_keychain_signs_with_the_active_key_and_publishes_what_opens() {
        let vault = KeyVault::new(&master(MASTER));
        let mut ring = KeyRing::new();
        let first = vault.make().expect("made");
        ring.apply(&recorded(1, 1, Event::SigningKeyAdded(first.clone())));
        let keychain = Keychain::new(vault.clone(), ring.view(), settings(KeyAlgorithm::EdDSA));
        assert!(matches!(
            keychain.current().keys.issue(
                &user(),
                SessionId::new(),
                Utc::now() + chrono::Duration::days(1),
                Utc::now()
            ),
            Err(TokenError::NoSigningKey)
        ));
        ring.apply(&recorded(
            2,
            2,
            Event::SigningKeyActivated(SigningKeyActivated {
                key_id: first.key_id.clone(),
            }),
        ));
        // A key only someone with another master key could have added.
        let foreign = KeyVault::new(&master(&MASTER.replace('1', "e")))
            .make()
            .expect("made");
        ring.apply(&recorded(3, 3, Event::SigningKeyAdded(foreign.clone())));
        let built = keychain.current();
        assert_eq!(built.keys.signing_key(), Some(&first.key_id));
        assert_eq!(
            built.unusable,
            [(foreign.key_id.clone(), OpenError::Sealed)]
        );
        let jwks: serde_json::Value = serde_json::from_slice(&built.jwks).expect("json");
        let published: Vec<_> = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|key| key["kid"].as_str().expect("kid").to_owned())
            .collect();
        assert_eq!(published, [first.key_id.as_str()]);
        assert!(keychain.check().is_ok(), "the active key opens");
    }

    #[test]
    fn a_wrong_master_key_is_refused_by_the_check() {
        let vault = KeyVault::new(&master(MASTER));
        let mut ring = KeyRing::new();
        let key = vault.make().expect("made");
        ring.apply(&recorded(1, 1, Event::SigningKeyAdded(key.clone())));
        ring.apply(&recorded(
            2,
            2,
            Event::SigningKeyActivated(SigningKeyActivated {
                key_id: key.key_id.clone(),
            }),
        ));
        let wrong = Keychain::new(
            KeyVault::new(&master(&MASTER.replace('a', "b"))),
            ring.view(),
            settings(KeyAlgorithm::EdDSA),
        );
        let error = wrong.check().expect_err("refused").to_string();
        assert!(
            error.contains("AUTHLOG_MASTER_KEY does not open"),
            "{error}"
        );
        let empty = Keychain::new(vault, KeyRing::new().view(), settings(KeyAlgorithm::EdDSA));
        assert!(empty.check().is_ok(), "nothing to open yet");
    }
}
