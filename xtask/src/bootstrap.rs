//! `cargo xtask bootstrap`: the Debian root image (`debian:<release>-slim`) built from a
//! Debian mirror with mmdebstrap and imported into the engine under the name the
//! Dockerfiles use: the air-gapped path, for machines that reach no container registry.
//! Like the official slim image: variant minbase, no documentation, man pages or
//! locales (dpkg path excludes, kept in the image so later installs follow them).

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::plan::{Output, Plan, Step};
use crate::{docker, flags, project::Project, ui};

impl flags::Bootstrap {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let image = root_image(project);
        if !self.force && !dry_run && docker::image_id(&image).is_some() {
            ui::note(&format!(
                "{image} is already in the image store (`--force` builds it again)"
            ));
            return Ok(());
        }
        plan(project)?.execute(dry_run)?;
        if !dry_run {
            ui::note(&format!("{image} is in the image store"));
        }
        Ok(())
    }
}

/// The image every Dockerfile starts from.
pub fn root_image(project: &Project) -> String {
    format!("debian:{}-slim", project.manifest.debian.release.get_ref())
}

/// Make sure the root image is in the image store: pull it where a registry answers,
/// bootstrap it where none does (and say so). `SLIPWAY_OFFLINE=1` skips the pull.
pub fn ensure_root_image(project: &Project) -> Result<Plan> {
    let image = root_image(project);
    if docker::image_id(&image).is_some() {
        return Ok(Plan::new());
    }
    if std::env::var_os("SLIPWAY_OFFLINE").is_none_or(|v| v.is_empty() || v == "0") {
        let pulled = docker::step(format!("pull {image}"), &["pull", &image])
            .output(Output::Capture)
            .timeout(Duration::from_secs(300))
            .run_unchecked()?;
        if pulled.status.success() {
            ui::note(&format!("pulled {image}"));
            return Ok(Plan::new());
        }
        let why = pulled
            .stderr
            .lines()
            .last()
            .unwrap_or("no registry answered")
            .trim()
            .to_owned();
        ui::note(&format!("{image} cannot be pulled ({why})"));
    }
    ui::note(&format!(
        "building {image} from the Debian mirror with mmdebstrap instead (what `cargo xtask bootstrap` does)"
    ));
    plan(project)
}

/// The steps: mmdebstrap to a tarball under `.<brand>/build/`, then `docker import`.
pub fn plan(project: &Project) -> Result<Plan> {
    let m = &project.manifest;
    let release = m.debian.release.get_ref();
    let image = root_image(project);
    let mirror = match &m.debian.mirror {
        Some(mirror) => mirror.clone(),
        None => host_mirror().ok_or_else(|| {
            anyhow::anyhow!(
                "no Debian mirror: this host's apt sources name none; set `mirror` under [debian] in {}",
                project.manifest_path.display()
            )
        })?,
    };
    if which::which("mmdebstrap").is_err() {
        bail!("mmdebstrap is not installed, and {image} must be built with it here: `apt-get install mmdebstrap`");
    }
    let tarball = crate::bake::build_dir(&project.state_dir()).join(format!("debian-{release}-slim.tar"));
    let mut plan = Plan::new();
    let mut mm = Step::new(format!("bootstrap {image} from {mirror}"), "mmdebstrap")
        .args(["--variant=minbase", "--mode=auto", "--format=tar"])
        .on_fail("check that the mirror answers (`apt-get update` on this host) and that mmdebstrap runs as root or with user namespaces");
    for exclude in [
        "/usr/share/doc/*",
        "/usr/share/man/*",
        "/usr/share/info/*",
        "/usr/share/locale/*",
        "/usr/share/lintian/*",
    ] {
        mm = mm.arg(format!("--dpkgopt=path-exclude={exclude}"));
    }
    // Licences stay, as in the official image.
    mm = mm.arg("--dpkgopt=path-include=/usr/share/doc/*/copyright");
    mm = mm
        .arg("--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*.bin")
        .arg(format!("--customize-hook=printf 'Types: deb\\nURIs: {mirror}\\nSuites: {release} {release}-updates\\nComponents: main\\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\\n' > \"$1\"/etc/apt/sources.list.d/debian.sources"))
        .arg("--customize-hook=rm -f \"$1\"/etc/apt/sources.list")
        .arg(release)
        .arg(tarball.display().to_string())
        .arg(&mirror)
        // Stopped part-way (Ctrl-C, a mirror gone), no tarball is left: mmdebstrap
        // removes its own temporary directory, and leaves an empty or partial file.
        .scratch(&tarball);
    plan.push(
        Step::new("prepare the build directory", "mkdir")
            .args(["-p", &tarball.parent().unwrap().display().to_string()]),
    );
    plan.push(mm);
    plan.push(
        docker::step(
            format!("import it as {image}"),
            &[
                "import",
                "--change",
                "CMD [\"bash\"]",
                "--change",
                "LABEL dev.slipway.bootstrap=mmdebstrap",
                "--change",
                &format!("LABEL org.opencontainers.image.version={release}"),
                &tarball.display().to_string(),
                &image,
            ],
        )
        .output(Output::Capture),
    );
    plan.push(Step::new("remove the tarball", "rm").args(["-f", &tarball.display().to_string()]));
    Ok(plan)
}

/// The host's Debian mirror, from apt's sources (deb822 `.sources` files first, then
/// `sources.list`): the first URI that is a Debian archive, not its security archive.
pub fn host_mirror() -> Option<String> {
    let mut uris = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<_> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "sources"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            uris.extend(
                text.lines()
                    .filter_map(|l| l.strip_prefix("URIs:"))
                    .flat_map(|l| l.split_whitespace().map(str::to_owned)),
            );
        }
    }
    if let Ok(text) = std::fs::read_to_string(Path::new("/etc/apt/sources.list")) {
        uris.extend(text.lines().filter_map(|l| {
            let mut words = l.split_whitespace().filter(|w| !w.starts_with('['));
            (words.next()? == "deb").then(|| words.next().map(str::to_owned))?
        }));
    }
    uris.into_iter().find(|u| {
        let u = u.trim_end_matches('/');
        u.ends_with("/debian") && !u.contains("security")
    })
}
