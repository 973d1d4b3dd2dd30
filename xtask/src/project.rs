//! The checkout Slipway runs in: its root, its manifest, and its state directory
//! `.<brand>/` (git-ignored: certificates, build metadata, locks).

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::manifest::{self, Manifest};

/// Lock `path` exclusively (creating it and its directory, 0700), waiting for another
/// holder and saying so. `what` names the holder in the message.
pub fn lock_file(path: &Path, what: &str) -> Result<std::fs::File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(path);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}; check that it is writable by you", dir.display()))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot open the lock {}: {e}; check that {} is writable by you",
                path.display(),
                dir.display()
            )
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            crate::ui::note(&format!(
                "waiting for another `cargo xtask {what}` on this checkout to finish (lock {})",
                path.display()
            ));
            file.lock()
                .map_err(|e| anyhow::anyhow!("locking {}: {e}", path.display()))?;
        }
        Err(std::fs::TryLockError::Error(e)) => anyhow::bail!("locking {}: {e}", path.display()),
    }
    Ok(file)
}

/// A loaded checkout.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    pub manifest_path: PathBuf,
    pub manifest: Manifest,
}

/// The repository root, found when the xtask runs (never a path compiled into it, so
/// two clones sharing one CARGO_TARGET_DIR each act on their own checkout):
/// `SLIPWAY_ROOT` when set (another checkout of the project, such as a scratch clone in a
/// test); else the parent of the `xtask/` package `cargo run` (the `cargo xtask` alias)
/// names in `CARGO_MANIFEST_DIR`; else the nearest directory above the current one that
/// holds slipway.toml and `xtask/`.
pub fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLIPWAY_ROOT").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let from_cargo = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.file_name().is_some_and(|n| n == "xtask") && dir.join("Cargo.toml").is_file())
        .and_then(|dir| dir.parent().map(Path::to_owned));
    if let Some(root) = from_cargo {
        return root;
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    cwd.ancestors()
        .find(|dir| is_checkout(dir))
        .map(Path::to_owned)
        // Not inside a checkout: the manifest's absence is reported where it is read.
        .unwrap_or(cwd)
}

/// A directory that is a Slipway checkout: its manifest and the xtask beside it.
fn is_checkout(dir: &Path) -> bool {
    dir.join(manifest::FILE).is_file() && dir.join("xtask/Cargo.toml").is_file()
}

impl Project {
    /// Load the manifest at the root (or the file `SLIPWAY_MANIFEST` names).
    pub fn load() -> Result<Project> {
        let root = root();
        let manifest_path = match std::env::var_os("SLIPWAY_MANIFEST") {
            Some(path) => root.join(path),
            None => root.join(manifest::FILE),
        };
        let mut manifest = Manifest::load(&manifest_path)?;
        // CI pushes somewhere else than a laptop's registry: `SLIPWAY_REGISTRY` (which the
        // generated workflow sets) replaces `registry`. References are lowercase.
        if let Some(registry) = std::env::var("SLIPWAY_REGISTRY").ok().filter(|r| !r.trim().is_empty()) {
            manifest.registry = toml::Spanned::new(0..0, registry.trim().to_lowercase());
        }
        Ok(Project {
            root,
            manifest_path,
            manifest,
        })
    }

    /// `.<brand>/` at the root, where Slipway keeps what it makes; `SLIPWAY_STATE_DIR`
    /// puts it elsewhere (a scratch checkout, a CI cache).
    pub fn state_dir(&self) -> PathBuf {
        match std::env::var_os("SLIPWAY_STATE_DIR").filter(|v| !v.is_empty()) {
            Some(dir) => self.root.join(dir),
            None => self.root.join(format!(".{}", self.manifest.brand())),
        }
    }

    /// Take the exclusive lock `.<brand>/<name>.lock`; a second taker waits and says so.
    /// The lock lasts as long as the returned file is open.
    pub fn lock(&self, name: &str) -> Result<std::fs::File> {
        lock_file(&self.state_dir().join(format!("{name}.lock")), name)
    }

    /// `.<brand>/certs/`.
    pub fn certs_dir(&self) -> PathBuf {
        self.state_dir().join("certs")
    }
}
