//! The checkout Slipway runs in: its root, its manifest, and its state directory
//! `.<brand>/` (git-ignored: certificates, build metadata, locks).

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::manifest::{self, Manifest};

/// A loaded checkout.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    pub manifest_path: PathBuf,
    pub manifest: Manifest,
}

/// The repository root: the parent of the `xtask/` crate.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

impl Project {
    /// Load the manifest at the root (or the file `SLIPWAY_MANIFEST` names).
    pub fn load() -> Result<Project> {
        let root = root();
        let manifest_path = match std::env::var_os("SLIPWAY_MANIFEST") {
            Some(path) => root.join(path),
            None => root.join(manifest::FILE),
        };
        let manifest = Manifest::load(&manifest_path)?;
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

    /// `.<brand>/certs/`.
    pub fn certs_dir(&self) -> PathBuf {
        self.state_dir().join("certs")
    }
}
