//! `cargo xtask deps SERVICE add|remove|lock|upgrade [PACKAGE...]`: a service's
//! dependencies changed by the tools of its builder image (uv for Python, cargo for
//! Rust), run against this checkout. A contributor needs neither Python, uv nor a Rust
//! toolchain on the host; the manifest and lock files change in place, owned by the host
//! user, and the next build rebuilds from the dependency layer on.
//!
//! The container runs as the host user (so the files it rewrites stay theirs) with the checkout at
//! `/src`, the tool's download cache in `.<brand>/cache/<tool>` (kept between runs), and
//! the extra CAs of `build.extra-ca` where `with-build-ca` looks for BuildKit's secret,
//! so it fetches through the same TLS-inspecting proxy the builds do.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::flags::DepsAction;
use crate::manifest::{Kind, Target};
use crate::plan::{Plan, Step};
use crate::{bake, build, certs, docker, flags, project::Project, ui};

/// A dependency change, checked against the service.
#[derive(Debug, Clone)]
pub struct Change {
    pub service: String,
    pub kind: Kind,
    /// The service's directory, relative to the root.
    pub path: String,
    pub action: DepsAction,
    pub packages: Vec<String>,
    pub dev: bool,
}

impl Change {
    /// The tool's command line, run in the service's directory.
    pub fn command(&self) -> Vec<String> {
        let mut cmd: Vec<String> = match (self.kind, self.action) {
            // --no-sync: only pyproject.toml and uv.lock change; no environment is made
            // in the checkout.
            (Kind::Python, DepsAction::Add) => vec!["uv".into(), "add".into(), "--no-sync".into()],
            (Kind::Python, DepsAction::Remove) => vec!["uv".into(), "remove".into(), "--no-sync".into()],
            (Kind::Python, DepsAction::Lock | DepsAction::Upgrade) => vec!["uv".into(), "lock".into()],
            (Kind::Rust, DepsAction::Add) => vec!["cargo".into(), "add".into()],
            (Kind::Rust, DepsAction::Remove) => vec!["cargo".into(), "remove".into()],
            // The lock file brought in line with the manifests, nothing upgraded.
            (Kind::Rust, DepsAction::Lock) => vec!["cargo".into(), "update".into(), "--workspace".into()],
            (Kind::Rust, DepsAction::Upgrade) => vec!["cargo".into(), "update".into()],
        };
        if self.dev && matches!(self.action, DepsAction::Add | DepsAction::Remove) {
            cmd.push("--dev".into());
        }
        match (self.kind, self.action) {
            (_, DepsAction::Add | DepsAction::Remove) => cmd.extend(self.packages.iter().cloned()),
            (Kind::Python, DepsAction::Upgrade) if self.packages.is_empty() => cmd.push("--upgrade".into()),
            (Kind::Python, DepsAction::Upgrade) => {
                for p in &self.packages {
                    cmd.extend(["--upgrade-package".into(), p.clone()]);
                }
            }
            (Kind::Rust, DepsAction::Upgrade) => {
                for p in &self.packages {
                    cmd.extend(["--package".into(), p.clone()]);
                }
            }
            (_, DepsAction::Lock) => {}
        }
        cmd
    }

    /// The builder image the tool comes from.
    pub fn builder(&self) -> &'static str {
        match self.kind {
            Kind::Python => "python-builder",
            Kind::Rust => "rust-builder",
        }
    }

    /// The files the change may rewrite, relative to the root.
    pub fn files(&self) -> Vec<String> {
        match self.kind {
            Kind::Python => vec![
                format!("{}/pyproject.toml", self.path),
                format!("{}/uv.lock", self.path),
            ],
            Kind::Rust => vec![format!("{}/Cargo.toml", self.path), "Cargo.lock".into()],
        }
    }
}

/// Check the request against the manifest: a known service, and packages where the
/// action needs them.
pub fn change(project: &Project, cmd: &flags::Deps) -> Result<Change> {
    let m = &project.manifest;
    m.service_names(std::slice::from_ref(&cmd.service))?;
    let service = &m.services[cmd.service.as_str()];
    match cmd.action {
        DepsAction::Add | DepsAction::Remove if cmd.packages.is_empty() => bail!(
            "`deps {} {}` needs the packages to {}: `cargo xtask deps {} {} PACKAGE...`",
            cmd.service,
            action_name(cmd.action),
            action_name(cmd.action),
            cmd.service,
            action_name(cmd.action),
        ),
        DepsAction::Lock if !cmd.packages.is_empty() => bail!(
            "`deps {} lock` takes no package: it locks what the manifest names; to move one \
             package to a newer version use `deps {} upgrade {}`",
            cmd.service,
            cmd.service,
            cmd.packages.join(" ")
        ),
        _ => {}
    }
    if cmd.dev && !matches!(cmd.action, DepsAction::Add | DepsAction::Remove) {
        bail!("--dev goes with add or remove");
    }
    if let Some(bad) = cmd.packages.iter().find(|p| p.starts_with('-')) {
        bail!("`{bad}` is not a package: options of uv or cargo are not passed through (only --dev is known)");
    }
    Ok(Change {
        service: cmd.service.clone(),
        kind: service.kind,
        path: service.path.get_ref().clone(),
        action: cmd.action,
        packages: cmd.packages.clone(),
        dev: cmd.dev,
    })
}

fn action_name(action: DepsAction) -> &'static str {
    match action {
        DepsAction::Add => "add",
        DepsAction::Remove => "remove",
        DepsAction::Lock => "lock",
        DepsAction::Upgrade => "upgrade",
    }
}

/// The `docker run` of the change's tool in its builder image.
pub fn step(project: &Project, change: &Change, extra_ca: Option<&Path>) -> Step {
    let m = &project.manifest;
    let image = bake::base_ref(m, change.builder());
    let (_, cache_env) = cache(change.kind);
    let cache_dir = cache_dir(project, change.kind);
    let mut extra: Vec<String> = vec![
        "--volume".into(),
        format!("{}:/cache", cache_dir.display()),
        "--env".into(),
        format!("{cache_env}=/cache"),
    ];
    if let Some(ca) = extra_ca {
        extra.extend(["--volume".into(), format!("{}:/run/secrets/extra-ca:ro", ca.display())]);
    }
    let mut command = vec!["with-build-ca".to_owned()];
    command.extend(change.command());
    let name = format!("{}: {}", change.service, change.command().join(" "));
    docker::run_in_checkout(name, &project.root, &image, &change.path, &extra, &command)
        .on_fail("the tool's own message is above")
}

/// Where the tool of a kind of service keeps its downloads between runs.
pub fn cache_dir(project: &Project, kind: Kind) -> PathBuf {
    project.state_dir().join("cache").join(cache(kind).0)
}

/// The tool of a kind of service, and the variable that points it at its cache.
fn cache(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Python => ("uv", "UV_CACHE_DIR"),
        Kind::Rust => ("cargo", "CARGO_HOME"),
    }
}

impl flags::Deps {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let change = change(project, &self)?;
        let extra_ca = build::extra_ca_bundle(project, &project.state_dir().join("build/extra-ca.pem"), dry_run)?;
        let step = step(project, &change, extra_ca.as_deref());
        if dry_run {
            println!("# the builder image {}, built or brought up to date", change.builder());
            print!("{}", Plan { steps: vec![step] }.render());
            return Ok(());
        }
        // The builder image bakes in the Root CA: certificates first.
        let spec = certs::Spec::from_manifest(&project.manifest);
        certs::ensure(&project.certs_dir(), &spec, None)?;
        // Built, or brought up to date (a no-op when it is): an image that merely exists
        // may hold an older tool than the one the project pins.
        ui::step(&format!("the {} image", change.builder()));
        build::build(
            project,
            &[change.builder().to_owned()],
            Target::Prod,
            None,
            build::Mode::default(),
        )?;
        std::fs::create_dir_all(cache_dir(project, change.kind))?;
        let before = contents(project, &change.files());
        ui::step(&step.name);
        step.run()?;
        let after = contents(project, &change.files());
        let changed: Vec<String> = change
            .files()
            .into_iter()
            .zip(before.into_iter().zip(after))
            .filter(|(_, (b, a))| b != a)
            .map(|(f, _)| f)
            .collect();
        if changed.is_empty() {
            ui::note("no file changed");
        } else {
            ui::note(&format!(
                "changed {}; `cargo xtask build {}` rebuilds from its dependency layer on",
                changed.join(", "),
                change.service
            ));
        }
        Ok(())
    }
}

fn contents(project: &Project, files: &[String]) -> Vec<Option<Vec<u8>>> {
    files.iter().map(|f| std::fs::read(project.root.join(f)).ok()).collect()
}
