//! `cargo xtask doctor`: is this machine ready? The engine, buildx, compose, mmdebstrap,
//! the certificates, free disk and the stack's ports. Every problem comes with its fix;
//! the exit code is non-zero when something required is missing.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::disk::Place;
use crate::{docker, flags, ports, project::Project, ui};

/// The oldest buildx with `bake --print`, secrets in bake files and `--metadata-file`.
const MIN_BUILDX: (u32, u32, u32) = (0, 10, 0);
/// The oldest compose v2 with `up --wait`, `watch` and `include`.
const MIN_COMPOSE: (u32, u32, u32) = (2, 20, 0);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(name: &str, status: Status, detail: impl Into<String>, fix: Option<&str>) -> Check {
    Check {
        name: name.to_owned(),
        status,
        detail: detail.into(),
        fix: fix.map(str::to_owned),
    }
}

impl flags::Doctor {
    pub fn run(self, dry_run: bool) -> Result<()> {
        if dry_run {
            ui::note("doctor only reads (it starts, writes and changes nothing): running it as usual");
        }
        let checks = checks();
        if self.json {
            println!("{}", serde_json::to_string_pretty(&checks)?);
        } else {
            for c in &checks {
                let status = match c.status {
                    Status::Ok => "ok",
                    Status::Warn => "warn",
                    Status::Fail => "fail",
                };
                println!("{} {:<19} {}", ui::mark(status), c.name, c.detail);
                if let Some(fix) = &c.fix {
                    println!("     {:<19} fix: {fix}", "");
                }
            }
        }
        let failed: Vec<&str> = checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.name.as_str())
            .collect();
        if !failed.is_empty() {
            anyhow::bail!("required: {} (see the fixes above)", failed.join(", "));
        }
        Ok(())
    }
}

/// Every check, in the order they are shown.
pub fn checks() -> Vec<Check> {
    let mut out = Vec::new();
    let project = Project::load();
    match &project {
        Ok(p) => {
            let services: Vec<String> = p
                .manifest
                .services
                .iter()
                .map(|(name, s)| format!("{} ({:?})", name.get_ref(), s.kind).to_lowercase())
                .collect();
            out.push(check(
                "manifest",
                Status::Ok,
                format!("{} is valid: {}", p.manifest_path.display(), services.join(", ")),
                None,
            ))
        }
        Err(err) => out.push(check(
            "manifest",
            Status::Fail,
            format!("{err:#}"),
            Some("fix the problems listed, then run `cargo xtask doctor`"),
        )),
    }

    let engine = docker::engine_version();
    match &engine {
        Ok(version) => out.push(check("engine", Status::Ok, format!("Docker Engine {version}"), None)),
        Err(why) => out.push(check(
            "engine",
            Status::Fail,
            format!("not reachable: {why}"),
            Some(docker::START_ENGINE),
        )),
    }

    if docker::cli_present() {
        out.push(plugin_check(
            "buildx",
            docker::buildx_version(),
            MIN_BUILDX,
            "install the buildx plugin (Debian: `apt-get install docker-buildx`; or Docker's docker-buildx-plugin)",
        ));
        out.push(plugin_check(
            "compose",
            docker::compose_version(),
            MIN_COMPOSE,
            "install compose v2 (Debian: `apt-get install docker-compose`; or Docker's docker-compose-plugin)",
        ));
        if engine.is_ok()
            && let Ok(p) = &project
        {
            out.extend(builder_checks(p));
        }
    }

    // Debian packages the optional commands run: a warning when missing, with the fix.
    for (program, what) in [
        ("mmdebstrap", "builds the root image where no registry is reachable"),
        ("skopeo", "is how `cargo xtask prune` talks to the registry"),
    ] {
        out.push(match which::which(program) {
            Ok(path) => check(program, Status::Ok, format!("{}: {what}", path.display()), None),
            Err(_) => check(
                program,
                Status::Warn,
                format!("missing: it {what}"),
                Some(&format!("`apt-get install {program}`")),
            ),
        });
    }

    if let Ok(project) = &project {
        out.push(emulation_check(project));
        out.extend(bases_checks(project, engine.is_ok()));
        out.push(certs_check(project));
        out.push(disk_check("disk", &Place::state(&project.state_dir())));
        if engine.is_ok()
            && let Some(dir) = docker::root_dir().filter(|d| Path::new(d).exists())
        {
            out.push(disk_check("engine disk", &Place::engine(Path::new(&dir))));
        }
        out.extend(port_checks(project));
    }
    out
}

/// Whether the platforms the manifest builds for that are not this machine's can run
/// their few emulated steps here (the arm64 root's package scripts, the RUN steps of its
/// bases): Debian's qemu-user-static through binfmt_misc. Compiles never run emulated.
fn emulation_check(project: &Project) -> Check {
    let m = &project.manifest;
    let native = docker::local_platform();
    let mut foreign: Vec<String> = m
        .build
        .platforms
        .iter()
        .chain(
            crate::manifest::Target::ALL
                .iter()
                .flat_map(|t| t.settings(m).platforms.iter().flatten()),
        )
        .map(|p| p.get_ref().clone())
        .filter(|p| *p != native)
        .collect();
    foreign.sort();
    foreign.dedup();
    if foreign.is_empty() {
        return check(
            "emulation",
            Status::Ok,
            format!("not needed: every platform in the manifest is this machine's ({native})"),
            None,
        );
    }
    let missing: Vec<String> = foreign
        .iter()
        .filter_map(|p| crate::bootstrap::emulation(p).err().map(|why| format!("{p}: {why}")))
        .collect();
    if missing.is_empty() {
        check(
            "emulation",
            Status::Ok,
            format!("{} through qemu-user-static (binfmt_misc)", foreign.join(", ")),
            None,
        )
    } else {
        check(
            "emulation",
            Status::Warn,
            format!(
                "the manifest builds for {}, which this machine cannot run",
                foreign.join(", ")
            ),
            Some(&missing.join("; ")),
        )
    }
}

/// The builder, the image store and each capability (probed by builds, remembered in the
/// state directory), with what a missing one costs.
fn builder_checks(project: &Project) -> Vec<Check> {
    let builder = project.manifest.build.builder.as_deref();
    let engine = match crate::engine::Engine::probe(project, builder, true) {
        Ok(engine) => engine,
        Err(err) => {
            return vec![check(
                "builder",
                Status::Fail,
                format!("{err:#}"),
                Some("run `docker buildx ls`; `docker buildx use default` selects the engine's own builder"),
            )];
        }
    };
    let mut out = vec![
        check(
            "image store",
            Status::Ok,
            format!("{} (engine {})", engine.store.name(), engine.version),
            None,
        ),
        check(
            "builder",
            Status::Ok,
            format!(
                "{} (driver {}, BuildKit {})",
                engine.builder.as_deref().unwrap_or("current"),
                engine.driver,
                engine.buildkit
            ),
            None,
        ),
    ];
    for (name, probe, cost) in engine.capabilities.each() {
        out.push(if probe.ok {
            check(name, Status::Ok, "yes", None)
        } else {
            check(name, Status::Warn, format!("no ({}): {cost}", probe.why), None)
        });
    }
    out
}

fn plugin_check(name: &str, version: Option<String>, min: (u32, u32, u32), install: &str) -> Check {
    let min_text = format!("{}.{}.{}", min.0, min.1, min.2);
    match version {
        None => check(name, Status::Fail, "missing", Some(install)),
        Some(v) => match docker::parse_version(&v) {
            Some(found) if found >= min => check(name, Status::Ok, v, None),
            _ => check(
                name,
                Status::Fail,
                format!("{v} is older than {min_text}"),
                Some(install),
            ),
        },
    }
}

/// How fresh the bases are (seed 004: refreshed monthly): bases.lock's last refresh, and
/// the root image in the store, each against `debian.max-age-days`.
fn bases_checks(project: &Project, engine: bool) -> Vec<Check> {
    use crate::bases::{self, Lock};
    let limit = project.manifest.debian.max_age_days;
    let limit_secs = i64::from(limit) * 86_400;
    let now = time::OffsetDateTime::now_utc();
    let refresh = "`cargo xtask build --pull` (makes the root image anew, records it in bases.lock and rebuilds the bases), then commit bases.lock; CI's monthly refresh job does the same";
    let old = |what: String, secs: i64, when: &str| {
        check(
            "bases",
            Status::Warn,
            format!(
                "{what} {} days ago ({when}), older than debian.max-age-days = {limit}",
                bases::days(secs)
            ),
            Some(refresh),
        )
    };
    let path = Lock::path(project);
    let mut out = Vec::new();
    match Lock::read(project) {
        Err(err) => out.push(check("bases", Status::Warn, format!("{err:#}"), None)),
        Ok(None) => out.push(check(
            "bases",
            Status::Warn,
            format!(
                "no {} yet: nothing records which root image the bases are built from",
                path.display()
            ),
            Some("`cargo xtask bootstrap --refresh` records it (a first build does too); commit it"),
        )),
        Ok(Some(lock)) => {
            let age = lock.age_secs(now);
            let when = match &lock.root.snapshot {
                Some(snapshot) => format!("{}, mirror snapshot {snapshot}", lock.root.refreshed),
                None => lock.root.refreshed.clone(),
            };
            out.push(if age > limit_secs {
                old(format!("{} refreshed", bases::FILE), age, &when)
            } else {
                check(
                    "bases",
                    Status::Ok,
                    format!("{} refreshed {} days ago ({when})", lock.root.image, bases::days(age)),
                    None,
                )
            });
        }
    }
    let image = crate::bootstrap::root_image(project);
    if engine
        && let Ok(inspect) = docker::inspect_image(&image)
        && let Some(created) = inspect["Created"].as_str()
        && let Ok(t) = bases::parse_utc(created)
    {
        let age = (now - t).whole_seconds();
        if age > limit_secs {
            out.push(old(format!("{image} in the image store was made"), age, created));
        }
    }
    out
}

fn certs_check(project: &Project) -> Check {
    match crate::certs::summary(project) {
        Ok(None) => check(
            "certs",
            Status::Warn,
            format!("none yet under {}", project.certs_dir().display()),
            Some("`cargo xtask certs` (`cargo xtask dev` makes them for you)"),
        ),
        Ok(Some((detail, true))) => check("certs", Status::Ok, detail, None),
        Ok(Some((detail, false))) => check(
            "certs",
            Status::Fail,
            detail,
            Some("`cargo xtask certs status` for details; `cargo xtask certs --rotate leaf` reissues"),
        ),
        Err(err) => check(
            "certs",
            Status::Fail,
            format!("{err:#}"),
            Some("`cargo xtask certs status` for details"),
        ),
    }
}

/// The same limits `build` and `dev` require ([`crate::disk`]); below twice as much, warn.
fn disk_check(name: &str, place: &Place) -> Check {
    let path = place.path.display();
    match place.free_gib() {
        Some(gib) if gib < place.min_gib => check(
            name,
            Status::Fail,
            format!(
                "{gib:.1} GiB free at {path} ({}; needs {} GiB)",
                place.what, place.min_gib
            ),
            Some(place.fix()),
        ),
        Some(gib) if gib < 2.0 * place.min_gib => check(
            name,
            Status::Warn,
            format!(
                "{gib:.1} GiB free at {path} ({}; needs {} GiB)",
                place.what, place.min_gib
            ),
            Some(place.fix()),
        ),
        Some(gib) => check(name, Status::Ok, format!("{gib:.1} GiB free at {path}"), None),
        None => check(name, Status::Warn, format!("cannot read free space at {path}"), None),
    }
}

fn port_checks(project: &Project) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, service) in &project.manifest.services {
        for port in &service.ports {
            let port = *port.get_ref();
            let label = format!("port {port}");
            out.push(match ports::in_use(port) {
                None => check(&label, Status::Ok, format!("free for {}", name.get_ref()), None),
                Some(holder) => check(&label, Status::Warn,
                    format!("in use by {holder}; {} needs it", name.get_ref()),
                    Some("if it is this stack already up, `cargo xtask ps` shows it; otherwise stop that process or change the port in slipway.toml")),
            });
        }
    }
    out
}
