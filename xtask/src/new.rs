//! `cargo xtask new NAME --kind rust|python [--port N] [--calls SERVICE]`: a service
//! added from the project's templates ([`crate::scaffold`] plans every edit), then its
//! certificates.

use anyhow::Result;

use crate::manifest::{Kind, Manifest, Target};
use crate::plan::Plan;
use crate::scaffold::{self, Edit, Sources};
use crate::{bake, build, certs, docker, flags, project::Project, ui};

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
        format(project, &new)?;
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

/// The renamed code formatted as `check` wants it (a longer or shorter name moves line
/// breaks), by the formatter the template's images carry: ruff from the template's local
/// image, rustfmt from the Rust builder. Without an engine, said and left to `check`.
fn format(project: &Project, new: &scaffold::NewService) -> Result<()> {
    if let Err(why) = docker::engine_version() {
        ui::warn(&format!(
            "the new files are not formatted yet: the Docker engine is not reachable ({why}); \
             `cargo xtask check {}` names what to format once it is",
            new.name
        ));
        return Ok(());
    }
    let m = &project.manifest;
    let template = scaffold::template(new.kind);
    let (image, build, target, command): (String, &str, Target, Vec<String>) = match new.kind {
        Kind::Python => (
            bake::service_image(m, template, Target::Local).reference(),
            template,
            Target::Local,
            vec![
                "sh".into(),
                "-c".into(),
                "ruff format --quiet --no-cache . && ruff check --fix --quiet --no-cache --exit-zero .".into(),
            ],
        ),
        Kind::Rust => (
            bake::base_ref(m, "rust-builder"),
            "rust-builder",
            Target::Prod,
            vec![
                "rustfmt".into(),
                "--edition".into(),
                "2024".into(),
                "src/main.rs".into(),
            ],
        ),
    };
    // Built, or brought up to date (a no-op when it is): an image that merely exists may
    // predate the formatter the template now pins.
    ui::step(&format!("{image}, whose formatter formats the new files"));
    build::build(project, &[build.to_owned()], target, None, build::Mode::default())?;
    let step = docker::run_in_checkout(
        format!("format services/{}", new.name),
        &project.root,
        &image,
        &format!("services/{}", new.name),
        &[],
        &command,
    );
    ui::step(&step.name);
    step.run()?;
    Ok(())
}
