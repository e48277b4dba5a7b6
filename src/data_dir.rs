//! The data directory of the embedded store: created readable by this user only, because it
//! holds the event log (password hashes) and the generated token key. The SQLite store and the
//! key file both put their files there through [`create_parent_dir`].

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use anyhow::Context as _;

/// Creates the directory `path` lives in, if missing, with mode 0700.
pub fn create_parent_dir(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    }
    Ok(())
}
