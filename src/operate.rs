//! The operators' commands that change the log: the token signing keys (`authlog keys list`,
//! `rotate` and `retire`), users' roles (`authlog admin grant-role` and `revoke-role`), and
//! the log-signing key (`authlog log-key`, `authlog checkpoint`).
//!
//! They change the log the way a server does: through a [`UserRegistry`] of
//! their own, replayed from the log and started for the one command, so the change is decided
//! against the log and appended through the same decisions, chain and lock as a server's.
//! Running servers apply it like any other writer's event.

use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Arc;

use actix::Actor as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::actors::{
    Administer, ChangeSigningKeys, KeyChange, RegistryError, UserChange, UserRegistry,
};
use crate::domain::{Email, KeyAlgorithm, KeyId, PasswordHash, Role};
use crate::events::signed::encode_key;
use crate::events::{EventMetadata, EventStore, events_after};
use crate::hashing::PasswordHasher;
use crate::jwt::TokenPolicy;
use crate::keyring::{KeyRing, KeyState, KeysView};
use crate::signing::{KeyVault, Keychain, KeychainError, SigningSettings};
use crate::throttle::ThrottlePolicy;
use crate::vault::MasterKey;

/// What an operator's command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Not done; the message says why.
    Refused(String),
}

/// The keys as the log holds them: only the keys' stream is folded.
pub async fn key_ring(store: &dyn EventStore) -> Result<KeyRing, crate::events::StoreError> {
    let mut ring = KeyRing::new();
    events_after(store, 0)
        .for_each(|event| {
            ring.apply(&event);
            ControlFlow::Continue(())
        })
        .await?;
    Ok(ring)
}

fn time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |at| at.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// `authlog keys list`: every key, oldest first, as a table or JSON lines. No key material.
pub fn list(ring: &KeyRing, jsonl: bool, out: &mut impl Write) -> std::io::Result<()> {
    if !jsonl {
        writeln!(
            out,
            "{:<43}  {:<5}  {:<8}  {:<20}  {:<20}  {:<20}  retired",
            "key", "alg", "state", "added", "activated", "superseded"
        )?;
    }
    for key in ring.keys() {
        if jsonl {
            let line = json!({
                "key_id": key.key_id,
                "algorithm": key.algorithm,
                "state": key.state().as_str(),
                "added_at": key.added_at,
                "activated_at": key.activated_at,
                "superseded_at": key.superseded_at,
                "retired_at": key.retired_at,
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "{:<43}  {:<5}  {:<8}  {:<20}  {:<20}  {:<20}  {}",
                key.key_id.as_str(),
                key.algorithm.as_str(),
                key.state().as_str(),
                time(Some(key.added_at)),
                time(key.activated_at),
                time(key.superseded_at),
                time(key.retired_at),
            )?;
        }
    }
    Ok(())
}

/// A registry over `store`, replayed and started for one command, and its keys. It hashes no
/// password, so its dummy hash is a placeholder.
async fn registry(
    store: Arc<dyn EventStore>,
) -> anyhow::Result<(actix::Addr<UserRegistry>, KeysView)> {
    let registry = replayed(store).await?;
    let keys = registry.keys();
    Ok((registry.start(), keys))
}

/// A registry over `store`, replayed from the log but not started yet.
pub(crate) async fn replayed(store: Arc<dyn EventStore>) -> anyhow::Result<UserRegistry> {
    let placeholder = PasswordHash::new("$2b$04$placeholderplaceholderplacehold".to_owned());
    Ok(UserRegistry::load_with(store, PasswordHasher::new(4, 1), placeholder).await?)
}

/// `authlog keys rotate`: adds a key, sealed under `master`, to follow the newest; activates it
/// at once if `now`.
pub async fn rotate(
    store: Arc<dyn EventStore>,
    master: &MasterKey,
    now: bool,
    force: bool,
    actor: &str,
    out: &mut impl Write,
) -> anyhow::Result<Outcome> {
    let vault = KeyVault::new(master);
    let (registry, keys) = registry(store).await?;
    // A key sealed under a master key that is not the log's would be useless to servers given
    // the log's: make sure it is, unless told this is the way back from a lost one.
    let keychain = Keychain::new(
        vault.clone(),
        keys.clone(),
        SigningSettings {
            algorithm: KeyAlgorithm::EdDSA,
            hs256: None,
            policy: TokenPolicy::new(std::time::Duration::from_secs(60)),
        },
    );
    if let Err(error @ KeychainError::WrongMasterKey(_)) = keychain.check()
        && !force
    {
        return Ok(Outcome::Refused(format!(
            "{error}. If that master key is lost, `authlog keys rotate --now --force` adds a \
             key this one opens, which signs at once; every refresh token then stops working"
        )));
    }
    let set = keys.current();
    let replaced = set.active().map(|key| key.key_id.clone());
    let key = vault.make()?;
    let key_id = key.key_id.clone();
    let change = KeyChange::Add {
        key,
        activate: now,
        after: set.newest().map(|key| key.key_id.clone()),
    };
    let sent = registry
        .send(ChangeSigningKeys {
            change,
            metadata: EventMetadata::by(actor),
        })
        .await?;
    match sent {
        Ok(()) if now => {
            writeln!(
                out,
                "added signing key {key_id} (EdDSA) and activated it: new tokens are signed \
                 with it from now on."
            )?;
            if let Some(replaced) = replaced {
                writeln!(
                    out,
                    "The key it replaces, {replaced}, keeps verifying the tokens it signed, and \
                     a running server retires it once they have expired."
                )?;
            }
            Ok(Outcome::Done)
        }
        Ok(()) => {
            writeln!(
                out,
                "added signing key {key_id} (EdDSA): it is in the JWKS now, and a running \
                 server activates it once AUTHLOG_JWKS_MAX_AGE_SECONDS have passed, so that \
                 verifiers caching the JWKS have it before the first token it signs."
            )?;
            Ok(Outcome::Done)
        }
        Err(RegistryError::KeysChanged) => Ok(Outcome::Refused(
            "another instance or command changed the keys at the same moment; run it again if \
             a new key is still wanted"
                .to_owned(),
        )),
        Err(error) => Err(error.into()),
    }
}

/// `authlog keys retire`: withdraws a pending or retiring key.
pub async fn retire(
    store: Arc<dyn EventStore>,
    key_id: &KeyId,
    actor: &str,
    out: &mut impl Write,
) -> anyhow::Result<Outcome> {
    let (registry, keys) = registry(store).await?;
    let sent = registry
        .send(ChangeSigningKeys {
            change: KeyChange::Retire(key_id.clone()),
            metadata: EventMetadata::by(actor),
        })
        .await?;
    match sent {
        Ok(()) => {
            writeln!(
                out,
                "retired signing key {key_id}: it is no longer published, and tokens it signed \
                 are refused from now on."
            )?;
            Ok(Outcome::Done)
        }
        Err(RegistryError::KeysChanged) => {
            let keys = keys.current();
            let why = match keys.find(key_id).map(|key| key.state()) {
                None => format!("there is no key {key_id} in the log"),
                Some(KeyState::Active) => format!(
                    "{key_id} is the active key: run `authlog keys rotate --now` first, then \
                     retire it"
                ),
                Some(KeyState::Retired) => format!("{key_id} is already retired"),
                Some(KeyState::Pending | KeyState::Retiring) => format!(
                    "another instance or command changed the keys at the same moment; run it \
                     again if {key_id} is still to be retired"
                ),
            };
            Ok(Outcome::Refused(why))
        }
        Err(error) => Err(error.into()),
    }
}

/// A change the registry refused, as the admin commands report it: the last admin, or a user
/// erased meanwhile; anything else is an error.
fn refused(error: RegistryError, email: &Email) -> anyhow::Result<Outcome> {
    match error {
        RegistryError::LastAdmin => Ok(Outcome::Refused(format!(
            "{email} is the last admin: grant admin to someone else first"
        ))),
        RegistryError::UnknownUser => {
            Ok(Outcome::Refused(format!("no user has the email {email}")))
        }
        error => Err(error.into()),
    }
}

/// `authlog admin erase`: erases the user `email` names, as `DELETE /admin/users/{id}` does.
pub async fn erase(
    store: Arc<dyn EventStore>,
    email: &Email,
    actor: &str,
    out: &mut impl Write,
) -> anyhow::Result<Outcome> {
    let registry = replayed(store).await?;
    let Some(user) = registry.directory().by_email(email) else {
        return Ok(Outcome::Refused(format!("no user has the email {email}")));
    };
    let sent = registry
        .start()
        .send(Administer {
            user_id: user.id,
            change: UserChange::Erase,
            metadata: EventMetadata::by(actor),
        })
        .await?;
    match sent {
        Ok(_) => {
            writeln!(
                out,
                "erased {email} ({}): their sessions have ended and their data key is destroyed.",
                user.id
            )?;
            Ok(Outcome::Done)
        }
        Err(error) => refused(error, email),
    }
}

/// `authlog admin grant-role` (`grant`) and `revoke-role`: one role of the user `email` names.
pub async fn change_role(
    store: Arc<dyn EventStore>,
    email: &Email,
    role: &Role,
    grant: bool,
    actor: &str,
    out: &mut impl Write,
) -> anyhow::Result<Outcome> {
    let registry = replayed(store).await?;
    let Some(user) = registry.directory().by_email(email) else {
        return Ok(Outcome::Refused(format!("no user has the email {email}")));
    };
    let had = user.has_role(role);
    let sent = registry
        .start()
        .send(Administer {
            user_id: user.id,
            change: if grant {
                UserChange::GrantRole(role.clone())
            } else {
                UserChange::RevokeRole(role.clone())
            },
            metadata: EventMetadata::by(actor),
        })
        .await?;
    match sent {
        Ok(_) if had == grant => {
            let state = if grant {
                "already has"
            } else {
                "does not have"
            };
            writeln!(
                out,
                "{email} ({}) {state} the role {role}: nothing to do.",
                user.id
            )?;
            Ok(Outcome::Done)
        }
        Ok(_) if grant => {
            writeln!(out, "granted {role} to {email} ({}).", user.id)?;
            Ok(Outcome::Done)
        }
        Ok(_) => {
            writeln!(
                out,
                "revoked {role} from {email} ({}); their sessions have ended.",
                user.id
            )?;
            Ok(Outcome::Done)
        }
        Err(error) => refused(error, email),
    }
}

/// `authlog log-key show`: every log-signing public key up to the one in force.
pub async fn show_log_keys(
    store: Arc<dyn EventStore>,
    out: &mut impl Write,
) -> anyhow::Result<Outcome> {
    let signer = store
        .log_signer()
        .ok_or_else(|| anyhow::anyhow!("the log-signing keys need the master key"))?;
    let state = crate::snapshot::restore(store.as_ref(), ThrottlePolicy::default())
        .await?
        .0;
    for generation in 1..=state.log_key_generation() {
        writeln!(
            out,
            "generation {generation}: {}",
            encode_key(&signer.public_key(generation))
        )?;
    }
    Ok(Outcome::Done)
}

/// `authlog log-key rotate`: the next generation signs from the next append on.
pub async fn rotate_log_key(
    store: Arc<dyn EventStore>,
    actor: &str,
    out: &mut impl Write,
) -> anyhow::Result<Outcome> {
    let signer = store
        .log_signer()
        .ok_or_else(|| anyhow::anyhow!("the log-signing keys need the master key"))?;
    let registry = replayed(Arc::clone(&store)).await?.start();
    let sent = registry
        .send(ChangeSigningKeys {
            change: KeyChange::RotateLog,
            metadata: EventMetadata::by(actor),
        })
        .await?;
    match sent {
        Ok(()) => {
            let state = crate::snapshot::restore(store.as_ref(), ThrottlePolicy::default())
                .await?
                .0;
            let generation = state.log_key_generation();
            writeln!(
                out,
                "the log is signed by generation {generation} from the next append on: {}",
                encode_key(&signer.public_key(generation))
            )?;
            writeln!(
                out,
                "The rotation is signed by generation {}; auditors pinning generation 1 follow it.",
                generation - 1
            )?;
            Ok(Outcome::Done)
        }
        Err(RegistryError::KeysChanged) => Ok(Outcome::Refused(
            "another instance or command rotated the log key at the same moment".to_owned(),
        )),
        Err(error) => Err(error.into()),
    }
}

/// `authlog checkpoint`: replays the log (checking its signatures), then signs its head.
/// `authlog snapshot`: folds the log from the newest matching snapshot and writes the result.
pub async fn snapshot(store: Arc<dyn EventStore>, out: &mut impl Write) -> anyhow::Result<Outcome> {
    store.prepare().await?;
    let started = std::time::Instant::now();
    let taken = crate::snapshot::take(store.as_ref()).await?;
    let seconds = started.elapsed().as_secs_f64();
    match taken {
        None => {
            let newest = store.snapshots().await?.first().copied();
            match newest {
                Some(position) => writeln!(
                    out,
                    "the snapshot of position {position} is up to date: nothing to write"
                )?,
                None => writeln!(out, "the log is empty: nothing to write")?,
            }
            Ok(Outcome::Done)
        }
        Some(taken) if !taken.kept => Ok(Outcome::Refused(format!(
            "a user was erased after position {} while the snapshot was made, so it holds their \
             data and was dropped; run it again",
            taken.position
        ))),
        Some(taken) => {
            let from = match taken.restored {
                crate::snapshot::Restored::Snapshot { position, tail } => {
                    format!("the snapshot of position {position} and {tail} events after it")
                }
                crate::snapshot::Restored::Replay => "the whole log".to_owned(),
            };
            writeln!(
                out,
                "snapshot of position {} written: {} users, {} bytes, folded from {from} in \
                 {seconds:.1} s",
                taken.position, taken.users, taken.bytes
            )?;
            Ok(Outcome::Done)
        }
    }
}

pub async fn checkpoint(
    store: Arc<dyn EventStore>,
    sink: &crate::checkpoint::Sink,
    out: &mut impl Write,
) -> anyhow::Result<Outcome> {
    let signer = store
        .log_signer()
        .ok_or_else(|| anyhow::anyhow!("a checkpoint is signed with the master key's log key"))?;
    let state = crate::snapshot::restore(store.as_ref(), ThrottlePolicy::default())
        .await?
        .0;
    if let Some(untrusted) = state.untrusted() {
        writeln!(
            out,
            "warning: {untrusted}; the checkpoint anchors the head before it"
        )?;
    }
    if state.position() == 0 {
        return Ok(Outcome::Refused("the log is empty".to_owned()));
    }
    let checkpoint = crate::checkpoint::make(
        store.as_ref(),
        &signer,
        state.position(),
        state.log_key_generation(),
    )
    .await?;
    crate::checkpoint::write(sink, &checkpoint)?;
    if *sink != crate::checkpoint::Sink::Stdout {
        writeln!(
            out,
            "checkpoint of position {} ({}) written",
            checkpoint.position, checkpoint.hash
        )?;
    }
    Ok(Outcome::Done)
}
