//! `cargo xtask bootstrap`: the Debian root image (`debian:<release>-slim`), pulled where
//! a registry answers, else built from a Debian mirror with mmdebstrap and imported into
//! the engine under the name the Dockerfiles use: the air-gapped path, for machines that
//! reach no container registry. Like the official slim image: variant minbase, no
//! documentation, man pages or locales (dpkg path excludes, kept in the image so later
//! installs follow them). What was made is recorded in `bases.lock` (`bases.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::bases::{self, Lock, Source};
use crate::plan::{Output, Plan, Step};
use crate::{docker, flags, project::Project, ui};

impl flags::Bootstrap {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let image = root_image(project);
        let lock = Lock::read(project)?;
        if dry_run {
            let pinned = lock.as_ref().and_then(|l| pinned(l, self.refresh));
            print!("{}", show(project, pinned.as_deref())?.render());
            return Ok(());
        }
        if !self.refresh && docker::image_id(&image).is_some() {
            let hint = if lock.is_none() {
                format!(
                    "; no {} records it yet: `--refresh` makes it anew and records it",
                    bases::FILE
                )
            } else {
                " (`--refresh` makes it anew and records it in bases.lock)".to_owned()
            };
            ui::note(&format!("{image} is already in the image store{hint}"));
        } else {
            make(project, self.refresh)?;
        }
        if self.push {
            push(project)?;
        }
        Ok(())
    }
}

/// The image every Dockerfile starts from: `debian.image`, else `debian:<release>-slim`.
pub fn root_image(project: &Project) -> String {
    let d = &project.manifest.debian;
    match &d.image {
        Some(image) => image.get_ref().clone(),
        None => format!("debian:{}-slim", d.release.get_ref()),
    }
}

/// The digest a pull asks for: the lock's (a pulled root, or a bootstrapped one pushed
/// to the team's registry), unless this is a refresh.
fn pinned(lock: &Lock, refresh: bool) -> Option<String> {
    (!refresh).then(|| lock.root.digest.clone()).flatten()
}

/// What a dry run shows: the pull, then the bootstrap where no registry answers.
pub fn show(project: &Project, digest: Option<&str>) -> Result<Plan> {
    let image = root_image(project);
    let from = digest.map_or(image.clone(), |d| format!("{image}@{d}"));
    let mut plan = Plan::new();
    plan.push(
        docker::step(format!("pull {from} where a registry answers"), &["pull", &from])
            .on_fail("where none answers, the bootstrap steps below"),
    );
    plan.steps.extend(plan_bootstrap(project)?.steps);
    Ok(plan)
}

/// Make sure the root image is in the image store (a build calls this when it is not):
/// pulled where a registry answers (by the lock's digest when it has one), bootstrapped
/// where none does. The lock is written when there is none yet.
pub fn ensure_root_image(project: &Project) -> Result<()> {
    if docker::image_id(&root_image(project)).is_some() {
        return Ok(());
    }
    make(project, false).map(drop)
}

/// The root image made anew: pulled (`SLIPWAY_OFFLINE=1` skips that) or bootstrapped,
/// then recorded in bases.lock with `refresh`, or when there is no lock yet. Without
/// `refresh`, a lock that records another root is kept, and the difference said.
/// Returns what was made.
pub fn make(project: &Project, refresh: bool) -> Result<Lock> {
    let image = root_image(project);
    let lock = Lock::read(project)?;
    let made = match pull(project, lock.as_ref().and_then(|l| pinned(l, refresh)))? {
        Some(made) => made,
        None => {
            ui::note(&format!(
                "building {image} from the Debian mirror with mmdebstrap instead (what `cargo xtask bootstrap` does)"
            ));
            bootstrap(project)?
        }
    };
    let path = Lock::path(project);
    match &lock {
        Some(old) if !refresh => {
            let same = old.root.digest == made.root.digest && old.root.snapshot == made.root.snapshot;
            if !same {
                ui::note(&format!(
                    "{image} made now ({}) is not the one {} records ({}): `cargo xtask bootstrap --refresh` records it",
                    identity(&made),
                    path.display(),
                    identity(old)
                ));
            }
        }
        _ => {
            made.write(project)?;
            ui::note(&format!("{} records {image} ({})", path.display(), identity(&made)));
        }
    }
    Ok(made)
}

/// Push the root image to its registry (`debian.image` names one) and record the digest
/// the registry gives it in bases.lock, beside what the bootstrap recorded: every other
/// machine (a CI runner, a builder node) then pulls exactly it, never bootstrapping a
/// root of its own, so the bases they build match this machine's.
fn push(project: &Project) -> Result<()> {
    let image = root_image(project);
    if project.manifest.debian.image.is_none() {
        bail!(
            "`bootstrap --push` pushes the root image to the team's registry: name it in debian.image in {} (such as `registry.example.com/team/debian:trixie-slim`)",
            project.manifest_path.display()
        );
    }
    docker::step(format!("push {image}"), &["push", "--quiet", &image])
        .output(Output::Capture)
        .on_fail("the registry must be up and reachable, and `docker login` done where it asks for credentials")
        .run()?;
    let digest = docker::repo_digest(&image)?
        .ok_or_else(|| anyhow::anyhow!("the registry gave {image} no digest (`docker image inspect` lists none)"))?;
    let mut lock = Lock::read(project)?.unwrap_or_else(|| Lock {
        root: bases::Root {
            image: image.clone(),
            source: Source::Registry,
            digest: None,
            snapshot: None,
            refreshed: bases::format_utc(time::OffsetDateTime::now_utc()),
            packages: Vec::new(),
        },
    });
    lock.root.image = image.clone();
    lock.root.digest = Some(digest.clone());
    lock.write(project)?;
    ui::note(&format!(
        "pushed {image} ({digest}); {} pins it: other machines pull it by that digest",
        Lock::path(project).display()
    ));
    Ok(())
}

/// The root's identity, for messages: its digest, or the mirror's snapshot.
fn identity(lock: &Lock) -> String {
    match (&lock.root.digest, &lock.root.snapshot) {
        (Some(digest), _) => format!("digest {digest}"),
        (None, Some(snapshot)) => format!("mirror snapshot of {snapshot}"),
        (None, None) => "no snapshot date".to_owned(),
    }
}

/// Pull the root image (by `digest` when given, then tagged with its name); `None` when
/// no registry answers.
fn pull(project: &Project, digest: Option<String>) -> Result<Option<Lock>> {
    let image = root_image(project);
    if std::env::var_os("SLIPWAY_OFFLINE").is_some_and(|v| !v.is_empty() && v != "0") {
        return Ok(None);
    }
    let from = digest.as_ref().map_or(image.clone(), |d| format!("{image}@{d}"));
    let pulled = docker::step(format!("pull {from}"), &["pull", &from])
        .output(Output::Capture)
        .timeout(Duration::from_secs(300))
        .run_unchecked()?;
    if !pulled.status.success() {
        let why = pulled
            .stderr
            .lines()
            .last()
            .unwrap_or("no registry answered")
            .trim()
            .to_owned();
        ui::note(&format!("{from} cannot be pulled ({why})"));
        return Ok(None);
    }
    if digest.is_some() {
        docker::step(format!("name it {image}"), &["tag", &from, &image]).run()?;
    }
    ui::note(&format!("pulled {from}"));
    let digest = docker::repo_digest(&image)?;
    Ok(Some(Lock {
        root: bases::Root {
            image,
            source: Source::Registry,
            digest,
            snapshot: None,
            refreshed: bases::format_utc(time::OffsetDateTime::now_utc()),
            packages: Vec::new(),
        },
    }))
}

/// The files mmdebstrap's hooks leave beside the tarball: the mirror's Release date and
/// the package list.
fn records(project: &Project) -> (PathBuf, PathBuf) {
    let dir = crate::bake::build_dir(&project.state_dir());
    let release = project.manifest.debian.release.get_ref();
    (
        dir.join(format!("debian-{release}-snapshot.txt")),
        dir.join(format!("debian-{release}-packages.txt")),
    )
}

/// Run the bootstrap steps, then read what they recorded.
fn bootstrap(project: &Project) -> Result<Lock> {
    plan_bootstrap(project)?.execute(false)?;
    let (snapshot_file, packages_file) = records(project);
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let snapshot_text = read(&snapshot_file)?;
    let packages = read(&packages_file)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let _ = std::fs::remove_file(&snapshot_file);
    let _ = std::fs::remove_file(&packages_file);
    let snapshot = release_date(&snapshot_text).map(bases::format_utc);
    if snapshot.is_none() {
        ui::warn(&format!(
            "the mirror's Release file gave no date ({:?}): bases.lock records no snapshot",
            snapshot_text.trim()
        ));
    }
    Ok(Lock {
        root: bases::Root {
            image: root_image(project),
            source: Source::Mmdebstrap,
            digest: None,
            snapshot,
            refreshed: bases::format_utc(time::OffsetDateTime::now_utc()),
            packages,
        },
    })
}

/// A Release file's `Date:` (RFC 2822, `Sat, 29 Nov 2026 08:12:34 UTC`), the first one.
fn release_date(text: &str) -> Option<time::OffsetDateTime> {
    let line = text.lines().next()?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let [_, day, month, year, clock, ..] = words.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? + 1;
    bases::parse_utc(&format!("{year}-{month:02}-{day:0>2}T{clock}Z")).ok()
}

/// The steps: mmdebstrap to a tarball under `.<brand>/build/` (its hooks record the
/// mirror's Release date and every package's version beside it), then `docker import`.
pub fn plan_bootstrap(project: &Project) -> Result<Plan> {
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
    let (snapshot_file, packages_file) = records(project);
    let mut plan = Plan::new();
    // Reproducible: what mmdebstrap itself stamps (file times, the password database's
    // change dates) is bases.lock's commit time, not today's, so the same packages give
    // the same root filesystem whenever it is made.
    let epoch = crate::git::inputs_revision(&project.root, &[bases::FILE.to_owned()]).epoch;
    let mut mm = Step::new(format!("bootstrap {image} from {mirror}"), "mmdebstrap")
        .args(["--variant=minbase", "--mode=auto", "--format=tar"])
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
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
        // What bases.lock records, read before the lists go: the snapshot's date and
        // every package's version.
        .arg(format!(
            "--customize-hook=sed -n 's/^Date: //p' \"$1\"/var/lib/apt/lists/*Release > '{}'",
            snapshot_file.display()
        ))
        .arg(format!(
            "--customize-hook=dpkg-query --admindir=\"$1\"/var/lib/dpkg --show --showformat='${{Package}} ${{Version}}\\n' > '{}'",
            packages_file.display()
        ))
        .arg("--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*.bin")
        .arg(format!("--customize-hook=printf 'Types: deb\\nURIs: {mirror}\\nSuites: {release} {release}-updates\\nComponents: main\\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\\n' > \"$1\"/etc/apt/sources.list.d/debian.sources"))
        .arg("--customize-hook=rm -f \"$1\"/etc/apt/sources.list")
        .arg(release)
        .arg(tarball.display().to_string())
        .arg(&mirror)
        // Stopped part-way (Ctrl-C, a mirror gone), no tarball is left: mmdebstrap
        // removes its own temporary directory, and leaves an empty or partial file.
        .scratch(&tarball)
        .scratch(&snapshot_file)
        .scratch(&packages_file);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_files_date_is_read() {
        let t = release_date("Sat, 29 Nov 2026 08:12:34 UTC\n").unwrap();
        assert_eq!(bases::format_utc(t), "2026-11-29T08:12:34Z");
        let t = release_date("Mon, 1 Dec 2026 20:16:08 UTC").unwrap();
        assert_eq!(bases::format_utc(t), "2026-12-01T20:16:08Z");
        assert!(release_date("").is_none());
        assert!(release_date("yesterday").is_none());
    }
}
