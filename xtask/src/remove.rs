//! `cargo xtask remove NAME`: a service taken out of the checkout ([`crate::scaffold`]
//! plans every edit), with its certificates.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::manifest::Kind;
use crate::plan::Plan;
use crate::scaffold::{self, Sources};
use crate::{certs, flags, project::Project, ui};

impl flags::Remove {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let m = &project.manifest;
        scaffold::check_remove(m, &self.name)?;
        let service = &m.services[self.name.as_str()];
        let sources = Sources::read(project, &[service.path.get_ref()])?;
        let edits = scaffold::plan_remove(m, &scaffold::manifest_rel(project), &sources, &self.name)?;
        let mut steps = Vec::new();
        if service.kind == Kind::Rust {
            steps.push(scaffold::lock_step(project));
        }
        let certs_dir = project.certs_dir();
        let cert_files: Vec<PathBuf> = [self.name.clone(), format!("{}-client", self.name)]
            .iter()
            .flat_map(|stem| [format!("{stem}.crt"), format!("{stem}.key")])
            .map(|f| certs_dir.join(f))
            .collect();
        let run_dir = certs::RunAs::for_project(project).service_dir(&self.name);
        if dry_run {
            println!("# remove the {} service `{}`", service.kind.name(), self.name);
            scaffold::show(&edits, &sources);
            print!("{}", Plan { steps }.render());
            println!("# then its certificates under {}", certs_dir.display());
            return Ok(());
        }
        scaffold::apply(&project.root, &edits)?;
        scaffold::show(&edits, &sources);
        Plan { steps }.execute(false)?;
        for file in cert_files.iter().filter(|f| f.exists()) {
            std::fs::remove_file(file).with_context(|| format!("deleting {}", file.display()))?;
        }
        if run_dir.exists() {
            std::fs::remove_dir_all(&run_dir).with_context(|| format!("deleting {}", run_dir.display()))?;
        }
        ui::note(&format!(
            "`{}` is gone from the checkout and its certificates; its images stay in the image store \
             (`docker image ls '*/{}'`)",
            self.name, self.name
        ));
        Ok(())
    }
}
