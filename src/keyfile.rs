//! The embedded store's keys: generated once into the data directory, so that a newcomer needs
//! no secret to start authlog, and keys and tokens still survive restarts.
//!
//! - `master-key`: the master key ([`crate::vault`]), used exactly as an `AUTHLOG_MASTER_KEY`
//!   value would be: `AUTHLOG_MASTER_KEY="$(cat authlog-data/master-key)"` opens the same log.
//! - `jwt-secret`: the HS256 secret, made only when tokens are signed with HS256, and read (to
//!   keep tokens issued before EdDSA valid) when a data directory from before has one.
//!
//! Each file holds 32 random bytes, hex-encoded (64 characters).

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::Context as _;
use secrecy::{ExposeSecret, SecretString};

use crate::data_dir::create_parent_dir;

/// The HS256 secret's file name inside the data directory.
pub const FILE_NAME: &str = "jwt-secret";
/// The master key's file name inside the data directory.
pub const MASTER_KEY_FILE_NAME: &str = "master-key";
/// The shortest key either file may hold.
const MIN_KEY_BYTES: usize = 32;

const KEY_BYTES: usize = 32;

/// Whether [`load_or_generate`] found a key or made one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    Loaded,
    Generated,
}

/// Reads the key at `path`, or generates it there (mode 0600) if there is none.
///
/// Refuses a key file that other users may read, as ssh does, rather than sign with a key that
/// may have leaked. Two processes starting at once agree on one key: the file is written under a
/// temporary name and linked into place only if no key is there yet.
pub fn load_or_generate(path: &Path) -> anyhow::Result<(SecretString, KeyOrigin)> {
    create_parent_dir(path)?;
    match load(path) {
        Err(error) if is_not_found(&error) => {}
        loaded => return loaded.map(|secret| (secret, KeyOrigin::Loaded)),
    }
    if generate(path)? {
        Ok((load(path)?, KeyOrigin::Generated))
    } else {
        // Another process generated it first; use theirs.
        Ok((load(path)?, KeyOrigin::Loaded))
    }
}

/// Reads the key at `path` if there is one (with the same checks as [`load_or_generate`]).
pub fn load_if_present(path: &Path) -> anyhow::Result<Option<SecretString>> {
    match load(path) {
        Err(error) if is_not_found(&error) => Ok(None),
        loaded => loaded.map(Some),
    }
}

fn is_not_found(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == ErrorKind::NotFound)
}

fn load(path: &Path) -> anyhow::Result<SecretString> {
    let mode = fs::metadata(path)?.mode() & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "the key file {} may be read by other users (mode {mode:03o}); \
         run `chmod 600 {}` if it has not leaked, or delete it to make a new one",
        path.display(),
        path.display()
    );
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read the key file {}", path.display()))?;
    let key = SecretString::from(text.trim_end().to_owned());
    let len = key.expose_secret().len();
    anyhow::ensure!(
        len >= MIN_KEY_BYTES,
        "the key file {} is too short ({len} bytes, at least {MIN_KEY_BYTES}); delete it to \
         make a new one, which invalidates what it protected",
        path.display(),
    );
    Ok(key)
}

/// Writes a new key to `path`. Returns `false` if a key appeared there meanwhile.
fn generate(path: &Path) -> anyhow::Result<bool> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
    let mut hex = String::with_capacity(KEY_BYTES * 2 + 1);
    for byte in bytes {
        let _ = write!(hex, "{byte:02x}");
    }
    hex.push('\n');

    let temporary = path.with_extension(format!("{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(hex.as_bytes())?;
        file.sync_all()?;
        // A hard link fails if `path` exists, so a key already in place is never replaced.
        match fs::hard_link(&temporary, path) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(error),
        }
    })();
    let _ = fs::remove_file(&temporary);
    let created =
        written.with_context(|| format!("cannot write the key file {}", path.display()))?;
    if created && let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        // Make the new directory entry durable too, not only the file's contents.
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("cannot sync {}", dir.display()))?;
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn generates_once_with_mode_0600_then_reuses() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("data").join(FILE_NAME);
        let (_, origin) = load_or_generate(&path).expect("generated");
        assert_eq!(origin, KeyOrigin::Generated);
        let mode = fs::metadata(&path).expect("exists").mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().expect("dir"))
            .expect("exists")
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let first = fs::read_to_string(&path).expect("readable");
        assert_eq!(first.trim_end().len(), 64);
        assert!(first.trim_end().bytes().all(|b| b.is_ascii_hexdigit()));

        let (_, origin) = load_or_generate(&path).expect("loaded");
        assert_eq!(origin, KeyOrigin::Loaded);
        assert_eq!(fs::read_to_string(&path).expect("readable"), first);
        let leftovers = fs::read_dir(path.parent().expect("dir"))
            .expect("listable")
            .count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[test]
    fn refuses_a_key_others_can_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(FILE_NAME);
        load_or_generate(&path).expect("generated");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = load_or_generate(&path).expect_err("refused").to_string();
        assert!(error.contains("mode 644"), "{error}");
    }

    #[test]
    fn refuses_a_short_key_without_printing_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, "tooshort-secret\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let error = format!("{:#}", load_or_generate(&path).expect_err("refused"));
        assert!(error.contains("too short (15 bytes"), "{error}");
        assert!(!error.contains("tooshort-secret"), "{error}");
    }
}
