//! The scale benchmark (`bench --only scale`, and part of a full run): synthetic monorepos
//! of 10, 50 and 200 services (Rust and Python by turns, each with its own inputs, all on
//! this checkout's bases and root image), generated in a temporary directory and measured
//! with the same xtask side by side: planning (the bake definition, a dry run), the
//! no-op build, a one-line change in one service (and that only its image changed),
//! `ci matrix --since` after a commit to one service, the build after that commit (every
//! image tagged for it, only that one with a new id), and `dev --detach` to healthy (the
//! smallest only). The services are small on purpose: what grows with them is Slipway's
//! own work, which the figures are about; a service's own compile is the change's cost.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{Figure, fig, sh, timed};
use crate::manifest::Kind;
use crate::project::Project;
use crate::ui;

/// The sizes measured, smallest first; the smallest is also brought up with `dev`.
pub const SIZES: [usize; 3] = [10, 50, 200];

/// One synthetic monorepo.
pub struct Synthetic {
    pub dir: PathBuf,
    pub services: Vec<(String, Kind)>,
    /// `localhost:5000/scale-10`: every image of it starts so.
    pub prefix: String,
}

/// The dev images' tag that names their version alone (`version` in the manifest below).
const PRIMARY_TAG: &str = "0.1.0-dev";

fn service_name(i: usize) -> String {
    format!("svc-{i:03}")
}

/// The Rust services' program: an HTTP server on $PORT with std alone, and its own
/// health check (`svc health`), as the prod stage has no shell.
const RUST_MAIN: &str = r#"use std::io::{Read, Write};

fn main() {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8000);
    if std::env::args().nth(1).as_deref() == Some("health") {
        let answer = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.write_all(b"GET /health HTTP/1.0\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        });
        std::process::exit(if answer.is_ok_and(|t| t.starts_with("HTTP/1.0 200")) { 0 } else { 1 });
    }
    let listener = std::net::TcpListener::bind(("0.0.0.0", port)).expect("bind");
    for mut stream in listener.incoming().flatten() {
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
    }
}
"#;

const PYTHON_APP: &str = r#""""A synthetic service of Slipway's scale benchmark: HTTP on $PORT, `health` checks it."""
import http.server
import os
import sys
import urllib.request

PORT = int(os.environ.get("PORT", "8000"))

if __name__ == "__main__":
    if sys.argv[1:] == ["health"]:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=2) as r:
            sys.exit(0 if r.status == 200 else 1)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok\n")

    http.server.HTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
"#;

fn rust_dockerfile(name: &str, port: u16) -> String {
    format!(
        r#"# A synthetic Rust service (Slipway's scale benchmark).
ARG RUST_BUILDER=rust-builder
ARG OS_BASE=os-base

FROM ${{OS_BASE}} AS os

FROM ${{RUST_BUILDER}} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY services/{name} services/{name}
RUN cargo build --release --offline --package {name} && install -D -m 0755 target/release/{name} /out/svc

FROM os AS dev
COPY --from=build /out/svc /app/svc
ENV PORT={port}
USER 10001:10001
HEALTHCHECK --interval=1s --timeout=2s --retries=30 CMD ["/app/svc", "health"]
CMD ["/app/svc"]

FROM dev AS local

FROM dev AS prod
"#
    )
}

fn python_dockerfile(name: &str, port: u16) -> String {
    format!(
        r#"# A synthetic Python service (Slipway's scale benchmark).
ARG PYTHON_BASE=python-base

FROM ${{PYTHON_BASE}} AS dev
COPY services/{name}/app.py /app/app.py
ENV PORT={port}
USER 10001:10001
HEALTHCHECK --interval=1s --timeout=2s --retries=30 CMD ["python3", "/app/app.py", "health"]
CMD ["python3", "/app/app.py"]

FROM dev AS local

FROM dev AS prod
"#
    )
}

/// A section of the project's manifest (`[debian]`, `[build]`), as written there.
fn section(text: &str, name: &str) -> String {
    let header = format!("[{name}]");
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim_start().starts_with('[') {
            inside = line.trim() == header;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// Write a monorepo of `n` services under `dir` and commit it.
pub fn generate(project: &Project, dir: &Path, n: usize) -> Result<Synthetic> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let m = &project.manifest;
    let name = format!("scale-{n}");
    let own = std::fs::read_to_string(&project.manifest_path)?;
    let services: Vec<(String, Kind)> = (0..n)
        .map(|i| (service_name(i), if i % 2 == 0 { Kind::Python } else { Kind::Rust }))
        .collect();

    let mut manifest = format!(
        "# A synthetic monorepo of {n} services: `cargo xtask bench --only scale` made it.\n\
         brand = \"{}\"\nregistry = \"{}\"\nproject = \"{name}\"\nversion = \"0.1.0\"\n\n",
        m.brand(),
        m.registry.get_ref()
    );
    manifest.push_str(&section(&own, "debian"));
    manifest.push_str(&section(&own, "build"));
    let mut members = Vec::new();
    let mut lock = String::from("version = 4\n");
    let mut compose = String::from("# Generated by `cargo xtask bench --only scale`.\nservices:\n");
    for (i, (service, kind)) in services.iter().enumerate() {
        // Each its own port, as the manifest requires (not published by the dev stack).
        let port = 10_000 + i as u16;
        let path = format!("services/{service}");
        let src = dir.join(&path);
        std::fs::create_dir_all(&src)?;
        match kind {
            Kind::Rust => {
                std::fs::create_dir_all(src.join("src"))?;
                std::fs::write(
                    src.join("Cargo.toml"),
                    format!("[package]\nname = \"{service}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
                )?;
                std::fs::write(src.join("src/main.rs"), RUST_MAIN)?;
                std::fs::write(src.join("Dockerfile"), rust_dockerfile(service, port))?;
                members.push(format!("\"{path}\""));
                let _ = write!(lock, "\n[[package]]\nname = \"{service}\"\nversion = \"0.1.0\"\n");
                let _ = write!(
                    manifest,
                    "\n[services.{service}]\nkind = \"rust\"\npath = \"{path}\"\ndepends-on = [\"Cargo.toml\", \"Cargo.lock\"]\nports = [{port}]\n"
                );
            }
            Kind::Python => {
                std::fs::write(src.join("app.py"), PYTHON_APP)?;
                std::fs::write(src.join("Dockerfile"), python_dockerfile(service, port))?;
                let _ = write!(
                    manifest,
                    "\n[services.{service}]\nkind = \"python\"\npath = \"{path}\"\nports = [{port}]\n"
                );
            }
        }
        let _ = write!(
            compose,
            "  {service}:\n    image: ${{SLIPWAY_IMAGE_PREFIX}}/{service}:${{SLIPWAY_TAG}}\n    env_file: env/${{SLIPWAY_TARGET}}.env\n    read_only: true\n    cap_drop: [ALL]\n    healthcheck:\n      start_period: 30s\n"
        );
    }
    manifest.push_str(
        "\n[targets.local]\ndescription = \"as dev (synthetic)\"\n\n[targets.dev]\ndescription = \"code baked in\"\n\n[targets.prod]\ndescription = \"as dev (synthetic)\"\n",
    );
    std::fs::write(dir.join("slipway.toml"), manifest)?;
    std::fs::write(
        dir.join("Cargo.toml"),
        format!("[workspace]\nresolver = \"2\"\nmembers = [{}]\n", members.join(", ")),
    )?;
    std::fs::write(dir.join("Cargo.lock"), lock)?;
    std::fs::write(dir.join("compose.yaml"), compose)?;
    std::fs::write(dir.join("compose.local.yaml"), "services: {}\n")?;
    std::fs::create_dir_all(dir.join("env"))?;
    for target in ["local", "dev", "prod"] {
        std::fs::write(dir.join(format!("env/{target}.env")), format!("ENVIRONMENT={target}\n"))?;
    }
    std::fs::write(dir.join(".gitignore"), "/.slipway/\n/target/\n")?;
    for base in ["os-base", "python-base", "rust-builder"] {
        copy_dir(&project.root.join("images").join(base), &dir.join("images").join(base))?;
    }
    std::fs::copy(project.root.join(crate::bases::FILE), dir.join(crate::bases::FILE))?;
    sh(
        "commit the synthetic monorepo",
        "git init --quiet && git add -A && git -c user.name=bench -c user.email=bench@localhost commit --quiet -m synthetic",
        dir,
    )?;
    Ok(Synthetic {
        dir: dir.to_owned(),
        services,
        prefix: format!("{}/{name}/", m.registry.get_ref()),
    })
}

impl Synthetic {
    /// `SLIPWAY_ROOT=... xtask`: the same binary, pointed at this monorepo.
    fn xtask(&self, xtask: &str) -> String {
        format!(
            "env -u SLIPWAY_STATE_DIR -u SLIPWAY_MANIFEST SLIPWAY_ROOT={} {xtask}",
            self.dir.display()
        )
    }

    /// Every image of this monorepo in the store, with its id.
    fn images(&self) -> Result<Vec<String>> {
        let listed = sh(
            "list the images",
            "docker images --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}'",
            &self.dir,
        )?;
        let mut out: Vec<String> = listed
            .stdout
            .lines()
            .filter(|l| l.starts_with(&self.prefix))
            .map(str::to_owned)
            .collect();
        out.sort();
        Ok(out)
    }

    /// Remove this monorepo's images and its directory.
    pub fn remove(&self) {
        if let Ok(images) = self.images() {
            let refs: Vec<&str> = images.iter().filter_map(|l| l.split(' ').next()).collect();
            for chunk in refs.chunks(50) {
                let _ = sh(
                    "remove the images",
                    &format!("docker rmi --force {}", chunk.join(" ")),
                    &self.dir,
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Measure every size; each monorepo is removed (images and files) after its figures.
pub fn figures(project: &Project, xtask: &str, sizes: &[usize], runs: usize) -> Result<Vec<Figure>> {
    let scratch = std::env::temp_dir().join(format!("slipway-bench-scale-{}", std::process::id()));
    let mut rows: Vec<(usize, Row)> = Vec::new();
    for &n in sizes {
        ui::step(&format!("scale: {n} services"));
        let repo = generate(project, &scratch.join(format!("scale-{n}")), n)?;
        let row = measure(&repo, xtask, runs, n == sizes[0]);
        repo.remove();
        rows.push((n, row?));
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(table(&rows, runs))
}

#[derive(Debug, Clone, Default)]
struct Row {
    first: f64,
    plan: f64,
    noop: f64,
    change: f64,
    rebuilt: usize,
    matrix: f64,
    /// The build after that commit: the time, and how many images got a new id.
    committed: f64,
    committed_rebuilt: usize,
    dev: Option<f64>,
}

fn measure(repo: &Synthetic, xtask: &str, runs: usize, with_dev: bool) -> Result<Row> {
    let x = repo.xtask(xtask);
    let dir = &repo.dir;
    let build = format!("{x} build --target dev");
    sh(
        "certificates (the Root CA the bases bake in)",
        &format!("{x} certs"),
        dir,
    )?;
    let mut row = Row {
        first: timed(1, |_| sh("first build", &build, dir).map(drop))?,
        ..Row::default()
    };
    row.plan = timed(runs, |_| {
        sh("plan the build", &format!("{x} --dry-run build --target dev"), dir).map(drop)
    })?;
    row.noop = timed(runs, |_| sh("no-op build", &build, dir).map(drop))?;

    // One line in one Python service: only its image changes.
    let (edited, _) = repo
        .services
        .iter()
        .find(|(_, k)| *k == Kind::Python)
        .context("a Python service")?;
    let app = dir.join("services").join(edited).join("app.py");
    let original = std::fs::read_to_string(&app)?;
    let before = repo.images()?;
    row.change = timed(runs, |i| {
        std::fs::write(&app, format!("{original}# bench edit {i}\n"))?;
        sh("build after a one-line change", &build, dir).map(drop)
    })?;
    let after = repo.images()?;
    let changed: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    // Images, not tags: each has several.
    let mut repositories: Vec<&str> = changed
        .iter()
        .filter_map(|l| l.split(' ').next()?.rsplit_once(':').map(|(repo, _)| repo))
        .collect();
    repositories.dedup();
    row.rebuilt = repositories.len();
    if changed.iter().any(|l| !l.contains(&format!("/{edited}:"))) {
        bail!("a one-line change in {edited} rebuilt other images too: {changed:#?}");
    }

    // `ci matrix --since` after a commit to that service.
    sh(
        "commit the change",
        "git -c user.name=bench -c user.email=bench@localhost commit --quiet -am edit",
        dir,
    )?;
    row.matrix = timed(runs, |_| {
        sh("ci matrix", &format!("{x} ci matrix --since HEAD~1"), dir).map(drop)
    })?;

    // The build after that commit: every image gets the commit's tags, and only the
    // edited one new bytes (its revision label); the others are tagged, not baked.
    let ids = |lines: Vec<String>| -> BTreeMap<String, String> {
        lines
            .into_iter()
            .filter_map(|l| {
                let (reference, id) = l.split_once(' ')?;
                let repository = reference.strip_suffix(&format!(":{PRIMARY_TAG}"))?;
                Some((repository.to_owned(), id.to_owned()))
            })
            .collect()
    };
    let before = ids(repo.images()?);
    row.committed = timed(1, |_| sh("build after the commit", &build, dir).map(drop))?;
    let after = ids(repo.images()?);
    row.committed_rebuilt = after.iter().filter(|(r, id)| before.get(*r) != Some(*id)).count();

    if with_dev {
        row.dev = Some(timed(1, |_| {
            sh("dev --detach", &format!("{x} dev --target dev --detach"), dir).map(drop)
        })?);
        sh("down", &format!("{x} down"), dir).ok();
    }
    Ok(row)
}

fn table(rows: &[(usize, Row)], runs: usize) -> Vec<Figure> {
    let growth = |f: fn(&Row) -> f64| -> String {
        rows.iter()
            .map(|(n, r)| format!("{n}: {:.2} s", f(r)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    // A count at each size, in order: "1, 1, 1".
    let counts = |f: fn(&Row) -> usize| -> String {
        rows.iter()
            .map(|(_, r)| f(r).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Growth per 10x services: the ratio between the sizes 10x apart (10 and 100 are not
    // both measured, so from the first to the last, scaled to a factor of 10).
    let per_10x = |f: fn(&Row) -> f64| -> f64 {
        let (Some((n0, r0)), Some((n1, r1))) = (rows.first(), rows.last()) else {
            return f64::NAN;
        };
        let decades = (*n1 as f64 / *n0 as f64).log10();
        if decades <= 0.0 {
            return f64::NAN;
        }
        (f(r1) / f(r0)).powf(1.0 / decades)
    };
    let (largest, last) = rows.last().map(|(n, r)| (*n, r.clone())).unwrap_or_default();
    let (plan, noop, change, matrix, committed) = (
        per_10x(|r| r.plan),
        per_10x(|r| r.noop),
        per_10x(|r| r.change),
        per_10x(|r| r.matrix),
        per_10x(|r| r.committed),
    );
    // Flat, against a little noise: at most x1.5 per 10x services.
    let mut out = vec![
        fig(
            &format!("scale: planning (the bake definition), {largest} services"),
            "SLIPWAY_ROOT=(synthetic) cargo xtask --dry-run build --target dev".to_owned(),
            last.plan,
            "s",
            runs,
            Some(format!("{}; x{plan:.2} per 10x services", growth(|r| r.plan))),
            "linear at worst (x10 per 10x)",
            Some(plan <= 10.0),
        ),
        fig(
            &format!("scale: no-op build, {largest} services"),
            "SLIPWAY_ROOT=(synthetic) cargo xtask build --target dev".to_owned(),
            last.noop,
            "s",
            runs,
            Some(format!("{}; x{noop:.2} per 10x services", growth(|r| r.noop))),
            "flat (at most x1.5 per 10x)",
            Some(noop <= 1.5),
        ),
        fig(
            &format!("scale: one-line change in one service, {largest} services"),
            "(edit one service's app.py) SLIPWAY_ROOT=(synthetic) cargo xtask build --target dev".to_owned(),
            last.change,
            "s",
            runs,
            Some(format!(
                "{}; x{change:.2} per 10x services; images rebuilt: {}",
                growth(|r| r.change),
                counts(|r| r.rebuilt)
            )),
            "flat (at most x1.5 per 10x), that image only",
            Some(change <= 1.5 && rows.iter().all(|(_, r)| r.rebuilt == 1)),
        ),
        fig(
            &format!("scale: `ci matrix --since HEAD~1`, {largest} services"),
            "(commit the change) SLIPWAY_ROOT=(synthetic) cargo xtask ci matrix --since HEAD~1".to_owned(),
            last.matrix,
            "s",
            runs,
            Some(format!("{}; x{matrix:.2} per 10x services", growth(|r| r.matrix))),
            "linear at worst (x10 per 10x)",
            Some(matrix <= 10.0),
        ),
        fig(
            &format!("scale: build after a commit to one service, {largest} services"),
            "(commit the change) SLIPWAY_ROOT=(synthetic) cargo xtask build --target dev".to_owned(),
            last.committed,
            "s",
            1,
            Some(format!(
                "{}; x{committed:.2} per 10x services; images with a new id: {}",
                growth(|r| r.committed),
                counts(|r| r.committed_rebuilt)
            )),
            "that image only",
            Some(rows.iter().all(|(_, r)| r.committed_rebuilt == 1)),
        ),
        fig(
            &format!("scale: first build of every dev image, {largest} services"),
            "SLIPWAY_ROOT=(synthetic) cargo xtask build --target dev (bases cached)".to_owned(),
            last.first,
            "s",
            1,
            Some(growth(|r| r.first)),
            "(no target)",
            None,
        ),
    ];
    if let Some((n, dev)) = rows.iter().find_map(|(n, r)| r.dev.map(|d| (*n, d))) {
        out.push(fig(
            &format!("scale: `dev --detach` to healthy, {n} services"),
            "SLIPWAY_ROOT=(synthetic) cargo xtask dev --target dev --detach (images built)".to_owned(),
            dev,
            "s",
            1,
            None,
            "(no target)",
            None,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Manifest, Target};

    /// The generated monorepo is one the tool takes: its manifest loads, every service is
    /// in the build's last layer on the shared bases, each Rust service's context gets a
    /// workspace of its own, and the Dockerfiles pass the image policy for each target.
    #[test]
    fn a_synthetic_monorepo_is_a_valid_project() {
        let project = Project::load().unwrap();
        let dir = std::env::temp_dir().join(format!("slipway-scale-test-{}", std::process::id()));
        let repo = generate(&project, &dir, 6).unwrap();
        let m = Manifest::load(&dir.join("slipway.toml")).unwrap();
        assert_eq!(m.services.len(), 6);
        assert_eq!(m.project.get_ref(), "scale-6");
        let kinds: Vec<Kind> = m.services.values().map(|s| s.kind).collect();
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Rust).count(), 3);
        let layers = crate::bake::selection(&m, &[], Target::Dev).unwrap();
        assert_eq!(layers.last().unwrap().len(), 6, "{layers:?}");
        assert!(layers.concat().contains(&"rust-builder".to_owned()));
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert_eq!(
            crate::build::workspace_of(&cargo, &["services/svc-001".into()]),
            "[workspace]\nresolver = \"2\"\nmembers = [\"services/svc-001\"]\n"
        );
        for (service, _) in &repo.services {
            let text = std::fs::read_to_string(dir.join("services").join(service).join("Dockerfile")).unwrap();
            for target in [Target::Local, Target::Dev, Target::Prod] {
                let found = crate::lint::dockerfile::dockerfile(&text, target);
                assert!(found.is_empty(), "{service} ({target:?}): {found:#?}");
            }
        }
        // A commit: `ci matrix --since` has history to read.
        let log = sh("log", "git log --oneline", &dir).unwrap().stdout;
        assert_eq!(log.lines().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
