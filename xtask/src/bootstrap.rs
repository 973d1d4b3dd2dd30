//! `cargo xtask bootstrap`: the Debian root image (`debian:<release>-slim`), pulled where
//! a registry answers, else built from a Debian mirror with mmdebstrap and imported into
//! the engine under the name the Dockerfiles use: the air-gapped path, for machines that
//! reach no container registry. Like the official slim image: variant minbase, no
//! documentation, man pages or locales (dpkg path excludes, kept in the image so later
//! installs follow them), dpkg's unsafe-io and apt without translations. What was made is recorded in `bases.lock` (`bases.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::bases::{self, Lock, Source};
use crate::plan::{Output, Plan, Step};
use crate::{docker, flags, project::Project, ui};

mod oci;

impl flags::Bootstrap {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let image = root_image(project);
        let lock = Lock::read(project)?;
        let platforms = [docker::local_platform()];
        if dry_run {
            let pinned = lock.as_ref().and_then(|l| pinned(l, self.refresh));
            print!("{}", show(project, pinned.as_deref(), &platforms)?);
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
            make(project, self.refresh, &platforms)?;
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
pub fn show(project: &Project, digest: Option<&str>, platforms: &[String]) -> Result<String> {
    let image = root_image(project);
    let from = digest.map_or(image.clone(), |d| format!("{image}@{d}"));
    let mut plan = Plan::new();
    plan.push(
        docker::step(format!("pull {from} where a registry answers"), &["pull", &from])
            .on_fail("where none answers, the bootstrap steps below"),
    );
    // With no engine to ask, a modern one (the containerd store), as a build's plan assumes.
    let store = match docker::engine_version() {
        Ok(_) => docker::image_store(),
        Err(_) => docker::Store::Containerd,
    };
    let bootstrap = plan_bootstrap(project, platforms, store)?;
    plan.steps.extend(bootstrap.make.steps.iter().cloned());
    let mut out = plan.render();
    let mut n = plan.steps.len();
    if let Some(archive) = &bootstrap.archive {
        n += 1;
        out.push_str(&format!(
            "{n}. write {} (in xtask): an OCI image layout, each platform's root filesystem one layer, one index named {image}\n",
            archive.path.display()
        ));
    }
    for step in &bootstrap.load.steps {
        n += 1;
        out.push_str(&format!("{n}. {}\n   {}\n", step.name, step.command_line()));
    }
    Ok(out)
}

/// Make sure the root image is in the image store for every platform of `platforms`
/// (the builder's own first; a build calls this when it is not): pulled where a
/// registry answers (by the lock's digest when it has one; a registry's image holds
/// every platform), bootstrapped where none does. The lock is written when there is
/// none yet.
pub fn ensure_root_image(project: &Project, platforms: &[String]) -> Result<()> {
    // One at a time: the nodes of a distributed push each ask on a thread of their
    // own, and a root is made in this checkout (its archives, bases.lock).
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = MAKING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let image = root_image(project);
    let present = match platforms {
        [] | [_] => docker::image_id(&image).is_some(),
        _ => platforms.iter().all(|p| docker::image_has_platform(&image, p)),
    };
    if present {
        return Ok(());
    }
    make(project, false, platforms).map(drop)
}

/// The root image made anew: pulled (`SLIPWAY_OFFLINE=1` skips that) or bootstrapped,
/// then recorded in bases.lock with `refresh`, or when there is no lock yet. Without
/// `refresh`, a lock that records another root is kept, and the difference said.
/// Returns what was made.
pub fn make(project: &Project, refresh: bool, platforms: &[String]) -> Result<Lock> {
    let image = root_image(project);
    let lock = Lock::read(project)?;
    let made = match pull(project, lock.as_ref().and_then(|l| pinned(l, refresh)), platforms)? {
        Some(made) => made,
        None => {
            ui::note(&format!(
                "building {image} for {} from the Debian mirror with mmdebstrap instead (what `cargo xtask bootstrap` does)",
                platforms.join(", ")
            ));
            bootstrap(project, platforms)?
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
fn pull(project: &Project, digest: Option<String>, platforms: &[String]) -> Result<Option<Lock>> {
    let image = root_image(project);
    if std::env::var_os("SLIPWAY_OFFLINE").is_some_and(|v| !v.is_empty() && v != "0") {
        return Ok(None);
    }
    let from = digest.as_ref().map_or(image.clone(), |d| format!("{image}@{d}"));
    // A pull fetches the engine's own platform; for several, each is asked for (the
    // containerd store keeps them all under the one name).
    let mut pulled = None;
    for platform in platforms.iter().filter(|_| platforms.len() > 1) {
        let ran = docker::step(
            format!("pull {from} for {platform}"),
            &["pull", "--platform", platform, &from],
        )
        .output(Output::Capture)
        .timeout(Duration::from_secs(300))
        .run_unchecked()?;
        let failed = !ran.status.success();
        pulled = Some(ran);
        if failed {
            break;
        }
    }
    let pulled = match pulled {
        Some(ran) => ran,
        None => docker::step(format!("pull {from}"), &["pull", &from])
            .output(Output::Capture)
            .timeout(Duration::from_secs(300))
            .run_unchecked()?,
    };
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
fn bootstrap(project: &Project, platforms: &[String]) -> Result<Lock> {
    let plan = plan_bootstrap(project, platforms, docker::image_store())?;
    make_roots(&plan.make)?;
    let (snapshot_file, _) = records(project);
    if let Some(archive) = &plan.archive {
        // Created: the mirror's snapshot, so the same packages give the same image.
        let created = std::fs::read_to_string(&snapshot_file)
            .ok()
            .and_then(|t| release_date(&t))
            .map_or_else(|| "1970-01-01T00:00:00Z".to_owned(), bases::format_utc);
        let written = archive.write(&created);
        for rootfs in &archive.roots {
            let _ = std::fs::remove_file(&rootfs.tarball);
        }
        if let Err(err) = written {
            let _ = std::fs::remove_file(&archive.path);
            return Err(err);
        }
    }
    plan.load.execute(false)?;
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

/// Run the steps that make the root filesystems: the directory, then one mmdebstrap per
/// platform, side by side where there are several (an emulated one is CPU-bound for
/// minutes; the native one finishes within it), each one's output kept and shown only
/// when it fails. Stopped part-way, every tarball goes.
fn make_roots(make: &Plan) -> Result<()> {
    let [dir, roots @ ..] = &make.steps[..] else {
        return Ok(());
    };
    if roots.len() < 2 {
        return make.execute(false).map(drop);
    }
    ui::step(&dir.name);
    dir.run()?;
    ui::step(&format!(
        "{} mmdebstraps side by side (their output is shown if one fails)",
        roots.len()
    ));
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let running: Vec<_> = roots
            .iter()
            .map(|step| {
                scope.spawn(move || {
                    let started = std::time::Instant::now();
                    let ran = step.clone().output(Output::Capture).run();
                    if ran.is_ok() {
                        ui::note(&format!("{}: {:.0} s", step.name, started.elapsed().as_secs_f64()));
                    }
                    ran.map(drop)
                })
            })
            .collect();
        running
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a bootstrap thread panicked")))
            })
            .collect()
    });
    if let Some(err) = results.into_iter().find_map(Result::err) {
        for path in roots.iter().flat_map(|s| &s.scratch) {
            let _ = std::fs::remove_file(path);
        }
        return Err(err);
    }
    Ok(())
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

/// How a root image is made: mmdebstrap's steps (one tarball per platform), then, on
/// the containerd store, an OCI archive written here of them all, then its load.
#[derive(Debug)]
pub struct BootstrapPlan {
    pub make: Plan,
    pub archive: Option<oci::Archive>,
    pub load: Plan,
}

/// The steps: mmdebstrap to a tarball per platform under `.<brand>/build/` (the first
/// one's hooks record the mirror's Release date and every package's version beside it),
/// then on the containerd store one OCI archive of them all (`oci::Archive`: one image
/// index, loaded under the root's name; the same tarballs give the same image id), on
/// the classic store, which holds one platform per name, `docker import`.
pub fn plan_bootstrap(project: &Project, platforms: &[String], store: docker::Store) -> Result<BootstrapPlan> {
    let m = &project.manifest;
    let release = m.debian.release.get_ref();
    let image = root_image(project);
    let native = docker::local_platform();
    let platforms: Vec<String> = if platforms.is_empty() {
        vec![native.clone()]
    } else {
        platforms.to_vec()
    };
    if store == docker::Store::Classic && platforms.iter().any(|p| *p != native) {
        bail!(
            "a root image for {} needs the containerd image store, which holds an image for several platforms under one name \
             (this engine's classic store holds one): enable it (`\"features\": {{\"containerd-snapshotter\": true}}` in \
             /etc/docker/daemon.json), or build for {native} alone",
            platforms.join(", ")
        );
    }
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
    for platform in platforms.iter().filter(|p| **p != native) {
        emulation(platform).map_err(|why| anyhow::anyhow!("the root image for {platform}: {why}"))?;
    }
    let dir = crate::bake::build_dir(&project.state_dir());
    let (snapshot_file, packages_file) = records(project);
    let mut make = Plan::new();
    make.push(Step::new("prepare the build directory", "mkdir").args(["-p", &dir.display().to_string()]));
    // Reproducible: what mmdebstrap itself stamps (file times, the password database's
    // change dates) is bases.lock's commit time, not today's, so the same packages give
    // the same root filesystem whenever it is made.
    let epoch = crate::git::inputs_revision(&project.root, &[bases::FILE.to_owned()]).epoch;
    let mut roots = Vec::new();
    for (i, platform) in platforms.iter().enumerate() {
        let arch = platform.rsplit('/').next().unwrap_or(platform).to_owned();
        let tarball = dir.join(format!("debian-{release}-slim-{arch}.tar"));
        let mut mm = Step::new(format!("bootstrap {image} for {platform} from {mirror}"), "mmdebstrap")
            .args(["--variant=minbase", "--mode=auto", "--format=tar"])
            .arg(format!("--architectures={arch}"))
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .on_fail(
                "check that the mirror answers (`apt-get update` on this host) and that mmdebstrap runs as root or with user namespaces",
            );
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
        // The official image's apt and dpkg settings for containers, kept in the image
        // like the excludes: dpkg without a sync per file (a layer is written whole or
        // not at all; the rust builder's install 8.8 -> 7.9 s), apt without translations.
        mm = mm
            .arg("--dpkgopt=force-unsafe-io")
            .arg("--aptopt=Acquire::Languages \"none\"");
        if i == 0 {
            // What bases.lock records, read before the lists go: the snapshot's date
            // and every package's version (of the first platform: the same mirror).
            mm = mm
                .arg(format!(
                    "--customize-hook=sed -n 's/^Date: //p' \"$1\"/var/lib/apt/lists/*Release > '{}'",
                    snapshot_file.display()
                ))
                .arg(format!(
                    "--customize-hook=dpkg-query --admindir=\"$1\"/var/lib/dpkg --show --showformat='${{Package}} ${{Version}}\\n' > '{}'",
                    packages_file.display()
                ))
                .scratch(&snapshot_file)
                .scratch(&packages_file);
        }
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
        make.push(mm);
        roots.push(oci::Rootfs { arch, tarball });
    }
    let labels = [
        ("dev.slipway.bootstrap".to_owned(), "mmdebstrap".to_owned()),
        ("org.opencontainers.image.version".to_owned(), release.clone()),
    ];
    let mut load = Plan::new();
    let archive = match store {
        docker::Store::Containerd => {
            let archive = oci::Archive {
                path: dir.join(format!("debian-{release}-slim.oci.tar")),
                image: image.clone(),
                roots,
                labels: labels.into_iter().collect(),
            };
            let path = archive.path.display().to_string();
            load.push(
                docker::step(format!("load it as {image}"), &["load", "--quiet", "--input", &path])
                    .output(Output::Capture)
                    // A failed or interrupted load leaves no archive behind.
                    .scratch(&archive.path),
            );
            load.push(Step::new("remove the archive", "rm").args(["-f", &path]));
            Some(archive)
        }
        docker::Store::Classic => {
            let tarball = roots[0].tarball.display().to_string();
            let mut args = vec!["import".to_owned(), "--change".into(), "CMD [\"bash\"]".into()];
            for (key, value) in &labels {
                args.extend(["--change".into(), format!("LABEL {key}={value}")]);
            }
            args.extend([tarball.clone(), image.clone()]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            load.push(docker::step(format!("import it as {image}"), &args).output(Output::Capture));
            load.push(Step::new("remove the tarball", "rm").args(["-f", &tarball]));
            None
        }
    };
    Ok(BootstrapPlan { make, archive, load })
}

/// Whether this machine runs `platform`'s programs (mmdebstrap's package scripts, an
/// image's RUN steps) through binfmt_misc, or why not and how to make it so.
pub fn emulation(platform: &str) -> Result<(), String> {
    let arch = platform.rsplit('/').next().unwrap_or(platform);
    let qemu = match arch {
        "arm64" => "aarch64",
        "amd64" => "x86_64",
        "arm" => "arm",
        "386" => "i386",
        other => other,
    };
    let entry = Path::new("/proc/sys/fs/binfmt_misc").join(format!("qemu-{qemu}"));
    match std::fs::read_to_string(&entry) {
        Ok(text) if text.starts_with("enabled") && text.lines().any(|l| l.starts_with("flags:") && l.contains('F')) => {
            Ok(())
        }
        Ok(_) => Err(format!(
            "{} is registered but not enabled with the F flag (usable inside containers): `update-binfmts --enable qemu-{qemu}`",
            entry.display()
        )),
        Err(_) => Err(format!(
            "no emulator for {arch} in binfmt_misc ({} is missing): `apt-get install qemu-user-static binfmt-support arch-test`, \
             then as root `mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc` (where it is not mounted) and \
             `update-binfmts --enable qemu-{qemu}`",
            entry.display()
        )),
    }
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
    fn roots_made_side_by_side_leave_nothing_when_one_fails() {
        let dir = std::env::temp_dir().join(format!("slipway-roots-{}", std::process::id()));
        let file = |name: &str| dir.join(name).display().to_string();
        let make = |second: &str| Plan {
            steps: vec![
                Step::new("prepare the build directory", "mkdir").args(["-p", &dir.display().to_string()]),
                Step::new("make one root", "sh")
                    .args(["-c", &format!("echo a > {}", file("a.tar"))])
                    .scratch(dir.join("a.tar")),
                Step::new("make another root", "sh")
                    .args(["-c", &format!("echo b > {}; {second}", file("b.tar"))])
                    .scratch(dir.join("b.tar")),
            ],
        };
        make_roots(&make("true")).unwrap();
        assert!(dir.join("a.tar").is_file() && dir.join("b.tar").is_file());
        let err = make_roots(&make("echo 'E: no mirror' >&2; exit 25")).unwrap_err();
        assert!(format!("{err:#}").contains("E: no mirror"), "{err:#}");
        assert!(!dir.join("a.tar").exists() && !dir.join("b.tar").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
