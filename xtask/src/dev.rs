//! `cargo xtask dev`: the local stack. Until the stack lands, it makes what it already
//! can (the certificates) and says plainly that the rest is not there yet.

use anyhow::{Result, bail};

use crate::{certs, flags, project::Project, ui};

impl flags::Dev {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let spec = certs::Spec::from_manifest(&project.manifest);
        let dir = project.certs_dir();
        if dry_run {
            for change in certs::plan(&dir, &spec, None)? {
                println!("{} {}", change.what, dir.join(&change.file).display());
            }
        } else {
            let changes = certs::ensure(&dir, &spec, None)?;
            let made = changes.iter().filter(|c| c.what != "kept").count();
            ui::note(&format!(
                "certificates in {}: {made} made, {} kept",
                dir.display(),
                changes.len() - made
            ));
        }
        bail!(
            "not yet: the local stack (images, compose, health checks) is not built in this \
             checkout yet; `cargo xtask doctor` checks that this machine is ready for it"
        )
    }
}
