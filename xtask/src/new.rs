//! `cargo xtask new NAME --kind rust|python [--port N] [--calls SERVICE]`: a service
//! added from the project's templates ([`crate::scaffold`] plans every edit), then its
//! certificates.

use anyhow::Result;

use crate::manifest::{Kind, Manifest};
use crate::plan::Plan;
use crate::scaffold::{self, Edit, Sources};
use crate::{certs, flags, project::Project, ui};

impl flags::New {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let m = &project.manifest;
        let path = format!("services/{}", self.name);
        let sources = Sources::read(project, &[&path])?;
        let new = scaffold::check_new(m, &sources, &self)?;
        let edits = scaffold::plan_new(m, &scaffold::manifest_rel(project), &sources, &new)?;
        let mut steps = Vec::new();
        if new.kind == Kind::Rust {
            steps.push(scaffold::lock_step(project));
        }
        if dry_run {
            println!(
                "# new {} service `{}` on port {}, from `{}`",
                new.kind.name(),
                new.name,
                new.port,
                scaffold::template(new.kind)
            );
            scaffold::show(&edits, &sources);
            print!("{}", Plan { steps }.render());
            println!("# then its certificates (cargo xtask certs)");
            return Ok(());
        }
        // The manifest as it will be must load, before anything is written.
        let manifest_text = edits
            .iter()
            .find_map(|e| match e {
                Edit::Write { path, content } if *path == scaffold::manifest_rel(project) => Some(content.clone()),
                _ => None,
            })
            .expect("new edits the manifest");
        let next = Manifest::parse(&manifest_text, &project.manifest_path).map_err(|problems| {
            anyhow::anyhow!("the manifest `new` would write does not load, so nothing was written: {problems}")
        })?;
        scaffold::apply(&project.root, &edits)?;
        scaffold::show(&edits, &sources);
        Plan { steps }.execute(false)?;
        certs::ensure(&project.certs_dir(), &certs::Spec::from_manifest(&next), None)?;
        ui::note(&format!(
            "`{}` listens on {} (https://localhost:{}/health){}. Next: `cargo xtask dev`; \
             `cargo xtask check {}`; `cargo xtask remove {}` takes it out again",
            new.name,
            new.port,
            new.port,
            new.calls
                .as_ref()
                .map(|(c, _)| format!(" and calls {c} over mTLS"))
                .unwrap_or_default(),
            new.name,
            new.name
        ));
        Ok(())
    }
}
