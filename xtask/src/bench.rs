//! `cargo xtask bench [--quick] [--json]`: every measured target of the spec, each beside
//! its comparison in the same run, medians of several runs (hyperfine where a command
//! can be repeated as is; the tool's own timer where each run needs a fresh edit). Writes
//! `docs/benchmarks.md` (table, date, machine) and `docs/benchmarks.json`. A benchmark, not
//! a test: no figure fails the command; the table says which target each meets.
//!
//! Method, figure by figure (the code below is the method):
//! - xtask first build: a fresh `git clone` of HEAD, `cargo build -p xtask` into an empty
//!   target directory with the dependencies already fetched; floor: an empty binary crate
//!   built the same way. The peer (rust-analyzer's xtask) is not built here: its code
//!   and a script that builds it stay out of the repository, so docs/benchmarks.md
//!   keeps a dated comparison measured by hand, side by side, below the table.
//! - warm `cargo xtask --help`: hyperfine.
//! - no-op build of every image vs the same images built one by one with plain
//!   `docker buildx build` (what a Makefile does), all cached: hyperfine, both.
//! - one-line change -> prod image: an edit appended to the service's source, then
//!   `cargo xtask build SERVICE --target prod`; the edit is undone after each run.
//! - a change under `xtask/` -> build: an untracked file there, then a build; the image ids
//!   before and after are compared.
//! - cold build (not with `--quick`): the project's images, the root image and the build
//!   cache removed, then `cargo xtask build --target prod`, bootstrap included.
//! - with `--also-on DOCKER_HOST`: the cold build and the no-op build on a second engine
//!   too (its own state directory, `.<brand>/bench-also-on`), in the same run: the no-op
//!   in the same hyperfine call, the cold build right after this engine's. docs/
//!   benchmarks.md was measured with Docker 20.10 (classic store) beside Docker 28: a
//!   second `dockerd` with its own `--data-root`, `--exec-root`, `--pidfile`, socket
//!   (`-H unix:///run/legacy.sock`) and bridge (`--bridge br-legacy`, made with `ip link`
//!   beforehand). A second dockerd rewrites the nat table: check that each bridge still
//!   has its MASQUERADE rule, or builds on the first engine cannot resolve names.
//! - `dev --detach` to healthy with images cached: `down`, then the command, timed.
//! - edit-to-served: an edit to the running local stack, polled through the gateway
//!   until the new answer arrives.
//! - load (xtask/src/load.rs): on the `dev` stack, N requests through the gateway (an mTLS
//!   call to the agent each) at a fixed concurrency from one `curl --parallel` on
//!   loopback: p50/p99 of curl's own request times (medians over the runs), errors, RSS
//!   of each container before and after. On the `local` stack, the same load with an
//!   edit to the agent one second in: failures outside the reload window (from the edit
//!   to the new code answering through the gateway).
//! - prod sizes (`docker image inspect`), the bytes a later layer rewrites or removes
//!   (dive's "wasted space", from every layer of `docker save`), idle RSS (`docker top`, after 5 s idle, the
//!   processes of the container summed), start-to-healthy (`docker run` of the prod image
//!   to its first passing health check).
//! - clone to healthy (not with `--quick`; `--only cold`): a fresh clone, no image, root
//!   image, build cache or target directory, then `cargo xtask dev --detach`, timed by
//!   phase from the lines it prints.
//! - scale (`--only scale`; 10 and 50 services with `--quick`): `bench/scale.rs`.
//! - a builder node's registry cache (`--only nodes --builder NAME`, not in a full run:
//!   it clears the node): `bench/nodes.rs`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::manifest::Target;
use crate::plan::{Output, Step};
use crate::{bake, docker, flags, project::Project, ui};

mod nodes;
mod scale;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    /// How it is measured: the command line (with what it is run after, in brackets).
    pub command: String,
    /// Median (seconds, MB or MiB, as `unit` says).
    pub value: f64,
    pub unit: String,
    pub runs: usize,
    /// What it is measured against, in the same run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<String>,
    /// The spec's target, in words.
    pub target: String,
    /// Whether it meets the target (None: nothing to meet).
    pub meets: Option<bool>,
}

#[allow(clippy::too_many_arguments, reason = "Figure's fields, in their order")]
fn fig(
    name: &str,
    command: String,
    value: f64,
    unit: &str,
    runs: usize,
    comparison: Option<String>,
    target: &str,
    meets: Option<bool>,
) -> Figure {
    Figure {
        name: name.into(),
        command,
        value,
        unit: unit.into(),
        runs,
        comparison,
        target: target.into(),
        meets,
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// A second engine (`--also-on`): its DOCKER_HOST, a state directory of its own (its
/// certificates and up-to-date stamps), and how it describes itself.
struct Other {
    host: String,
    state: PathBuf,
    label: String,
}

impl Other {
    fn new(project: &Project, host: &str, xtask: &str) -> Result<Other> {
        let ask = |args: &[&str]| {
            docker::step("the second engine", args)
                .env("DOCKER_HOST", host)
                .output(Output::Capture)
                .timeout(Duration::from_secs(15))
                .run()
                .map(|r| r.stdout.trim().to_owned())
        };
        let version = ask(&["version", "--format", "{{.Server.Version}}"])
            .with_context(|| format!("--also-on {host}: no engine answers there; start it first"))?;
        let store =
            crate::docker::Store::from_driver_status(&ask(&["info", "--format", "{{json .DriverStatus}}"])?).name();
        let other = Other {
            host: host.to_owned(),
            state: project.state_dir().join("bench-also-on"),
            label: format!("Docker Engine {version} ({store} image store)"),
        };
        sh(
            "certificates for the second engine",
            &format!("{}{xtask} certs", other.env()),
            &project.root,
        )?;
        Ok(other)
    }

    /// The environment a command line runs on this engine with.
    fn env(&self) -> String {
        format!(
            "env DOCKER_HOST={} SLIPWAY_STATE_DIR={} ",
            self.host,
            self.state.display()
        )
    }
}

/// Run a shell command line (for hyperfine-style repetition we give hyperfine the line).
fn sh(name: &str, line: &str, cwd: &Path) -> Result<crate::plan::Ran> {
    Step::new(name, "sh")
        .args(["-c", line])
        .cwd(cwd)
        .output(Output::Capture)
        .run()
}

/// hyperfine's median for each command, run side by side.
fn hyperfine(cwd: &Path, runs: usize, commands: &[&str]) -> Result<Vec<f64>> {
    let json = std::env::temp_dir().join(format!("slipway-hyperfine-{}.json", std::process::id()));
    let mut step = Step::new("hyperfine", "hyperfine")
        .args([
            "--warmup",
            "1",
            "--runs",
            &runs.to_string(),
            "--export-json",
            &json.display().to_string(),
            "--style",
            "basic",
        ])
        .cwd(cwd)
        .output(Output::Capture)
        .on_fail("hyperfine is Debian's `hyperfine` package");
    for c in commands {
        step = step.arg(*c);
    }
    step.run()?;
    let data: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let _ = std::fs::remove_file(&json);
    Ok(data["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["median"].as_f64().unwrap_or(f64::NAN))
        .collect())
}

/// Time `f` `runs` times; the median in seconds.
fn timed(runs: usize, mut f: impl FnMut(usize) -> Result<()>) -> Result<f64> {
    let mut xs = Vec::new();
    for i in 0..runs {
        crate::plan::check_interrupted()?;
        let started = Instant::now();
        f(i)?;
        xs.push(started.elapsed().as_secs_f64());
    }
    Ok(median(xs))
}

impl flags::Bench {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        if dry_run {
            println!(
                "cargo xtask bench measures on this machine and writes docs/benchmarks.md and docs/benchmarks.json"
            );
            return Ok(());
        }
        if let Some(node) = &self.builder
            && self.only.as_deref() != Some("nodes")
        {
            bail!(
                "--builder {node} is for `--only nodes` (a builder node's registry cache): add `--only nodes`, or drop --builder"
            );
        }
        if let Err(why) = docker::engine_version() {
            bail!(
                "the benchmarks need the Docker engine ({why}): {}",
                docker::START_ENGINE
            );
        }
        let runs = if self.quick { 3 } else { 5 };
        let root = &project.root;
        let xtask = std::env::current_exe()?.display().to_string();
        let mut figures = Vec::new();
        let note = |f: &Figure| {
            ui::note(&format!(
                "{}: {:.2} {} {}",
                f.name,
                f.value,
                f.unit,
                f.comparison.clone().unwrap_or_default()
            ))
        };

        sh("certificates", &format!("{xtask} certs"), root)?;
        if let Some(group) = self.only.as_deref() {
            let figures = match group {
                "stack" => stack_figures(project, &xtask, runs.min(3))?,
                "load" => load_figures(project, &xtask, runs.min(3))?,
                "prod" => prod_figures(project, runs.min(3))?,
                "cold" => vec![clone_to_healthy(project, &xtask)?],
                "xtask" => xtask_build(project, if self.quick { 1 } else { 3 })?,
                "nodes" => match self.builder.as_deref() {
                    Some(node) => nodes::figures(project, &xtask, node)?,
                    None => bail!(
                        "--only nodes needs --builder NAME: the node (build.builders.NAME) to measure the registry cache on"
                    ),
                },
                "scale" => scale::figures(
                    project,
                    &xtask,
                    if self.quick {
                        &scale::SIZES[..2]
                    } else {
                        &scale::SIZES[..]
                    },
                    runs.min(3),
                )?,
                other => bail!(
                    "--only {other}: the groups are stack, load, prod, cold (clone to healthy), xtask (its first build), scale (synthetic monorepos) and nodes (a builder node's registry cache, with --builder NAME); a full run measures the builds"
                ),
            };
            print!("{}", markdown(&figures, "now", &machine_summary(), self.quick));
            ui::note("--only: docs/benchmarks.md is written by a full run only");
            return Ok(());
        }
        let other = self
            .also_on
            .as_deref()
            .map(|host| Other::new(project, host, &xtask))
            .transpose()?;
        if !self.quick {
            ui::step("cold build of every image, bootstrap included");
            let cold = cold_build(project, &xtask, None)?;
            let cold_other = other
                .as_ref()
                .map(|o| cold_build(project, &xtask, Some(o)).map(|t| (o, t)))
                .transpose()?;
            let f = fig(
                "cold build of every prod image (bootstrap included)",
                "cargo xtask build --target prod (images, root image and build cache removed first)".to_owned(),
                cold,
                "s",
                1,
                cold_other.map(|(o, t)| format!("{}: {t:.2} s", o.label)),
                "(no target)",
                None,
            );
            note(&f);
            figures.push(f);
            ui::step("clone to healthy: the README's main command on a fresh clone, cold");
            let f = clone_to_healthy(project, &xtask)?;
            note(&f);
            figures.push(f);
        }
        sh("warm the images", &format!("{xtask} build --target prod"), root)?;
        if let Some(o) = &other {
            sh(
                "warm the images on the second engine",
                &format!("{}{xtask} build --target prod", o.env()),
                root,
            )?;
        }
        sh("warm the local images", &format!("{xtask} build --target local"), root)?;

        ui::step("the xtask: first build and warm --help");
        figures.extend(xtask_build(project, if self.quick { 1 } else { 3 })?);
        let help = hyperfine(root, 10, &["cargo xtask --help"])?[0];
        figures.push(fig(
            "warm `cargo xtask --help`",
            "hyperfine 'cargo xtask --help'".to_owned(),
            help,
            "s",
            10,
            None,
            "< 0.2 s",
            Some(help < 0.2),
        ));
        note(figures.last().unwrap());

        ui::step("no-op build of every image vs plain docker build, one by one");
        let plain = plain_docker_builds(project)?;
        let script = std::env::temp_dir().join(format!("slipway-plain-build-{}.sh", std::process::id()));
        std::fs::write(&script, plain.join("\n") + "\n")?;
        let mut commands = vec![
            format!("{xtask} build --target prod"),
            format!("sh {}", script.display()),
        ];
        commands.extend(
            other
                .as_ref()
                .map(|o| format!("{}{xtask} build --target prod", o.env())),
        );
        let both = hyperfine(root, runs, &commands.iter().map(String::as_str).collect::<Vec<_>>())?;
        let _ = std::fs::remove_file(&script);
        let ratio = both[1] / both[0];
        let mut comparison = format!("plain `docker build` one by one: {:.2} s ({ratio:.1}x)", both[1]);
        if let (Some(o), Some(t)) = (&other, both.get(2)) {
            comparison.push_str(&format!("; {}: {t:.2} s", o.label));
        }
        figures.push(fig(
            "no-op `cargo xtask build` of every prod image",
            format!("hyperfine '{xtask} build --target prod' 'sh plain-docker-builds.sh'"),
            both[0],
            "s",
            runs,
            Some(comparison),
            "< 3 s and >= 2x faster",
            Some(both[0] < 3.0 && ratio >= 2.0),
        ));
        note(figures.last().unwrap());

        ui::step("one-line changes -> prod image");
        let gateway_src = root.join("services/gateway/src/main.rs");
        let rust = edit_and_build(
            &gateway_src,
            &format!("{xtask} build gateway --target prod"),
            root,
            runs.min(3),
            "//",
        )?;
        figures.push(fig(
            "one-line change in the Rust service -> prod image",
            format!("(edit services/gateway/src/main.rs) {xtask} build gateway --target prod"),
            rust,
            "s",
            runs.min(3),
            None,
            "< 30 s warm",
            Some(rust < 30.0),
        ));
        note(figures.last().unwrap());
        let agent_src = root.join("services/agent/src/agent/app.py");
        let python = edit_and_build(
            &agent_src,
            &format!("{xtask} build agent --target prod"),
            root,
            runs,
            "#",
        )?;
        figures.push(fig(
            "one-line change in the Python service -> prod image",
            format!("(edit services/agent/...) {xtask} build agent --target prod"),
            python,
            "s",
            runs,
            None,
            "< 5 s",
            Some(python < 5.0),
        ));
        note(figures.last().unwrap());

        ui::step("a change under xtask/ -> build");
        figures.push(xtask_change(project, &xtask, runs)?);
        note(figures.last().unwrap());

        ui::step("the local stack");
        figures.extend(stack_figures(project, &xtask, runs.min(3))?);
        for f in figures.iter().rev().take(3) {
            note(f);
        }

        ui::step("load on the stack: latency, errors, memory; the agent reloaded under load");
        figures.extend(load_figures(project, &xtask, runs.min(3))?);

        ui::step("prod images: sizes, idle memory, start to healthy");
        figures.extend(prod_figures(project, runs.min(3))?);

        ui::step("scale: synthetic monorepos");
        let sizes = if self.quick {
            &scale::SIZES[..2]
        } else {
            &scale::SIZES[..]
        };
        figures.extend(scale::figures(project, &xtask, sizes, runs.min(3))?);

        let machine = machine_summary();
        let date = sh("date", "date -u +%Y-%m-%dT%H:%MZ", root)?.stdout.trim().to_owned();
        let report = serde_json::json!({ "date": date, "machine": machine, "quick": self.quick, "figures": figures });
        crate::fs::write_if_changed(
            &root.join("docs/benchmarks.json"),
            &(serde_json::to_string_pretty(&report)? + "\n"),
        )?;
        let page = root.join("docs/benchmarks.md");
        let kept = std::fs::read_to_string(&page)
            .ok()
            .and_then(|old| old.find(BY_HAND).map(|at| old[at..].to_owned()))
            .unwrap_or_else(|| format!("{BY_HAND}\n"));
        crate::fs::write_if_changed(
            &page,
            &format!("{}\n{kept}", markdown(&figures, &date, &machine, self.quick)),
        )?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", markdown(&figures, &date, &machine, self.quick));
        }
        Ok(())
    }
}

fn markdown(figures: &[Figure], date: &str, machine: &str, quick: bool) -> String {
    let mut out = String::from(
        "<!-- Written by `cargo xtask bench`; the method is in xtask/src/bench.rs. -->\n\n# Benchmarks\n\n",
    );
    out.push_str(&format!(
        "Measured {date} on {machine}{}. Medians of the runs shown; each comparison in the same run.\n\n",
        if quick { " (`--quick`)" } else { "" }
    ));
    out.push_str(
        "| figure | median | runs | comparison | spec target | meets | command |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for f in figures {
        let meets = match f.meets {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        out.push_str(&format!(
            "| {} | {:.2} {} | {} | {} | {} | {} | `{}` |\n",
            f.name,
            f.value,
            f.unit,
            f.runs,
            f.comparison.clone().unwrap_or_else(|| "-".into()),
            f.target,
            meets,
            f.command.replace('|', "\\|")
        ));
    }
    out
}

/// Where docs/benchmarks.md stops being written by `bench`: what follows (comparisons
/// measured by hand, such as the xtask's first build beside a peer's) is kept as it is.
const BY_HAND: &str = "<!-- Kept by hand from here on: `cargo xtask bench` rewrites only what is above. -->";

fn machine_summary() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|kib| format!("{:.0} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_default();
    let engine = docker::engine_version().unwrap_or_default();
    let store = docker::image_store().name();
    let commit = crate::git::head(&crate::project::root()).sha;
    format!(
        "{cores} cores, {mem} memory, Docker Engine {engine} ({store} image store), commit {}",
        &commit[..commit.len().min(7)]
    )
}

/// A fresh clone of HEAD in a scratch directory of its own (`slipway-bench-NAME-PID`),
/// its crates fetched: the scratch directory and the clone in it.
fn fresh_clone(project: &Project, name: &str) -> Result<(PathBuf, PathBuf)> {
    let scratch = std::env::temp_dir().join(format!("slipway-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let clone = scratch.join("slipway");
    sh(
        "clone",
        &format!("git clone --quiet {} {}", project.root.display(), clone.display()),
        &scratch,
    )?;
    sh("fetch the crates", "cargo fetch --quiet", &clone)?;
    Ok((scratch, clone))
}

/// The first build of the xtask from a fresh clone, beside the floor (an empty crate).
fn xtask_build(project: &Project, runs: usize) -> Result<Vec<Figure>> {
    let (scratch, clone) = fresh_clone(project, "clone")?;
    let first = timed(runs, |i| {
        let target = scratch.join(format!("target-{i}"));
        sh(
            "build the xtask",
            &format!(
                "CARGO_TARGET_DIR={} cargo build --quiet --package xtask",
                target.display()
            ),
            &clone,
        )?;
        std::fs::remove_dir_all(&target).ok();
        Ok(())
    })?;
    sh("an empty crate", "cargo new --quiet --bin empty", &scratch)?;
    let floor = timed(runs, |i| {
        let target = scratch.join(format!("empty-target-{i}"));
        sh(
            "build an empty crate",
            &format!("CARGO_TARGET_DIR={} cargo build --quiet", target.display()),
            &scratch.join("empty"),
        )?;
        std::fs::remove_dir_all(&target).ok();
        Ok(())
    })?;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(vec![fig(
        "first build of the xtask (fresh clone, dependencies fetched)",
        "git clone; cargo fetch; CARGO_TARGET_DIR=(empty) cargo build --package xtask".to_owned(),
        first,
        "s",
        runs,
        Some(format!("an empty binary crate built the same way: {floor:.2} s")),
        "<= 0.8x rust-analyzer's xtask (a dated comparison below the table)",
        None,
    )])
}

/// The same images as `build --target prod`, each with its own plain `docker buildx
/// build` (the args, secrets and stage bake would use), in dependency order.
fn plain_docker_builds(project: &Project) -> Result<Vec<String>> {
    let build_dir = bake::build_dir(&project.state_dir());
    let text = std::fs::read_to_string(build_dir.join("bake.json")).context("run `cargo xtask build` first")?;
    let def: serde_json::Value = serde_json::from_str(&text)?;
    let order = [
        "os-base",
        "python-base",
        "python-builder",
        "rust-builder",
        "agent-prod",
        "gateway-prod",
    ];
    let mut lines = Vec::new();
    for name in order {
        let t = &def["target"][name];
        let context = t["context"].as_str().unwrap_or(".");
        let context = if Path::new(context).is_absolute() {
            PathBuf::from(context)
        } else {
            project.root.join(context)
        };
        let dockerfile = project.root.join(t["dockerfile"].as_str().unwrap_or("Dockerfile"));
        let dockerfile = if t["dockerfile"].as_str() == Some("Dockerfile") {
            context.join("Dockerfile")
        } else {
            dockerfile
        };
        let mut line = format!(
            "docker buildx build --quiet --load --file {} --target {}",
            dockerfile.display(),
            t["target"].as_str().unwrap_or("")
        );
        for (k, v) in t["args"].as_object().into_iter().flatten() {
            line.push_str(&format!(" --build-arg {k}={}", v.as_str().unwrap_or("")));
        }
        // Where bake links a base by named context, a plain build names it by tag.
        for (base, link) in t["contexts"].as_object().into_iter().flatten() {
            if link.as_str().is_some_and(|l| l.starts_with("target:")) {
                line.push_str(&format!(
                    " --build-arg {}={}",
                    bake::base_arg(base),
                    bake::base_ref(&project.manifest, base)
                ));
            }
        }
        for s in t["secret"].as_array().into_iter().flatten() {
            line.push_str(&format!(" --secret {}", s.as_str().unwrap_or("")));
        }
        if let Some(tag) = t["tags"][0].as_str() {
            line.push_str(&format!(" --tag {tag}"));
        }
        line.push_str(&format!(" {} > /dev/null", context.display()));
        lines.push(line);
    }
    Ok(lines)
}

/// Append a one-line comment to `file`, run `command`, undo the edit: the median time.
fn edit_and_build(file: &Path, command: &str, root: &Path, runs: usize, comment: &str) -> Result<f64> {
    let original = std::fs::read_to_string(file)?;
    let result = timed(runs, |i| {
        std::fs::write(
            file,
            format!("{original}{comment} bench edit {i} {}\n", std::process::id()),
        )?;
        sh("build after an edit", command, root).map(|_| ())
    });
    std::fs::write(file, &original)?;
    // Leave the images as the checkout builds them.
    sh("rebuild as checked out", command, root)?;
    result
}

fn image_ids(project: &Project) -> Vec<String> {
    let m = &project.manifest;
    let mut refs: Vec<String> = ["os-base", "python-base", "python-builder", "rust-builder"]
        .iter()
        .map(|b| bake::base_ref(m, b))
        .collect();
    refs.extend(
        m.services
            .keys()
            .map(|s| bake::service_image(m, s.get_ref(), crate::manifest::Target::Prod).reference()),
    );
    refs.iter().map(|r| docker::image_id(r).unwrap_or_default()).collect()
}

fn xtask_change(project: &Project, xtask: &str, runs: usize) -> Result<Figure> {
    let before = image_ids(project);
    let marker = project.root.join("xtask/bench-marker.txt");
    let took = timed(runs, |i| {
        std::fs::write(&marker, format!("bench {i}\n"))?;
        sh(
            "build after a change under xtask/",
            &format!("{xtask} build --target prod"),
            &project.root,
        )
        .map(|_| ())
    });
    let _ = std::fs::remove_file(&marker);
    let took = took?;
    let same = image_ids(project) == before;
    Ok(fig(
        "a change under xtask/ -> `cargo xtask build`",
        format!("(touch xtask/...) {xtask} build --target prod"),
        took,
        "s",
        runs,
        Some(format!("image ids unchanged: {}", if same { "yes" } else { "NO" })),
        "a no-op for every image",
        Some(same),
    ))
}

fn cold_build(project: &Project, xtask: &str, on: Option<&Other>) -> Result<f64> {
    cold_clear(project, xtask, on)?;
    let env = on.map(Other::env).unwrap_or_default();
    timed(1, |_| {
        sh(
            "cold build",
            &format!("{env}{xtask} build --target prod"),
            &project.root,
        )
        .map(|_| ())
    })
}

/// Take the stack down and remove the project's images, the root image and the build
/// cache (on the second engine with `on`).
fn cold_clear(project: &Project, xtask: &str, on: Option<&Other>) -> Result<()> {
    let env = on.map(Other::env).unwrap_or_default();
    sh("take any stack down", &format!("{env}{xtask} down"), &project.root).ok();
    clear_store(project, true, |step: Step| match on {
        Some(o) => step.env("DOCKER_HOST", &o.host),
        None => step,
    })
}

/// Remove the project's images (and the root image with `root`) and the build cache from
/// the engine `on_engine` sends a docker step to (this thread's, as it stands).
fn clear_store(project: &Project, root: bool, on_engine: impl Fn(Step) -> Step) -> Result<()> {
    let m = &project.manifest;
    let prefix = format!("{}/{}/", m.registry.get_ref(), m.project.get_ref());
    let images = on_engine(docker::step(
        "list images",
        &["images", "--format", "{{.Repository}}:{{.Tag}}"],
    ))
    .output(Output::Capture)
    .run()?
    .stdout;
    let root_image = crate::bootstrap::root_image(project);
    let mut doomed: Vec<String> = images
        .lines()
        .filter(|l| l.starts_with(&prefix) && !l.starts_with(&root_image))
        .map(str::to_owned)
        .collect();
    if root {
        doomed.push(root_image);
    }
    for image in doomed {
        let _ = on_engine(docker::step("remove an image", &["rmi", "--force", &image]))
            .output(Output::Capture)
            .run_unchecked();
    }
    on_engine(docker::step(
        "clear the build cache",
        &["builder", "prune", "--all", "--force"],
    ))
    .output(Output::Capture)
    .run()?;
    Ok(())
}

/// The README's main command from a fresh clone with nothing cached: no image of the
/// project, no root image, no build cache, an empty target directory (crates already
/// downloaded, as `cargo fetch` leaves them). Timed by the lines it prints, so the phases
/// show: the xtask's compile, the root image (pull or bootstrap), the images, compose.
fn clone_to_healthy(project: &Project, xtask: &str) -> Result<Figure> {
    use std::io::BufRead;
    let (scratch, clone) = fresh_clone(project, "cold")?;
    // What the cold build clears, and the stack of this checkout (same ports, same name).
    cold_clear(project, xtask, None)?;
    let started = Instant::now();
    let mut marks: Vec<(&str, f64)> = Vec::new();
    let mut tail = Vec::new();
    let ran = Step::new("cargo xtask dev --detach, on the fresh clone", "sh")
        // The clone's own target directory and root, whatever this run was given.
        .args([
            "-c",
            "unset CARGO_TARGET_DIR SLIPWAY_ROOT SLIPWAY_STATE_DIR; exec cargo xtask dev --detach 2>&1",
        ])
        .cwd(&clone)
        .pipe(|out| {
            for line in std::io::BufReader::new(out).lines() {
                let line = line?;
                let at = started.elapsed().as_secs_f64();
                let mark = if line.contains("Running `target/debug/xtask") {
                    Some("xtask compile")
                } else if line.starts_with("==> bake") {
                    Some("root image")
                } else if line.starts_with("==> start the stack") {
                    Some("images")
                } else {
                    None
                };
                if let Some(mark) = mark.filter(|m| !marks.iter().any(|(n, _)| n == m)) {
                    marks.push((mark, at));
                }
                tail.push(line);
                if tail.len() > 20 {
                    tail.remove(0);
                }
            }
            Ok(())
        });
    let total = started.elapsed().as_secs_f64();
    marks.push(("compose to healthy", total));
    sh("take the clone's stack down", "cargo xtask down", &clone).ok();
    let _ = std::fs::remove_dir_all(&scratch);
    if let Err(err) = ran.and_then(|()| {
        if marks.len() < 4 {
            bail!("it did not get as far as the stack");
        }
        Ok(())
    }) {
        bail!(
            "`cargo xtask dev --detach` on a fresh clone failed ({err:#}); it ended with:\n{}",
            tail.join("\n")
        );
    }
    let mut last = 0.0;
    let phases: Vec<String> = marks
        .iter()
        .map(|(name, at)| {
            let phase = format!("{name} {:.1} s", at - last);
            last = *at;
            phase
        })
        .collect();
    Ok(fig(
        "clone to healthy: `cargo xtask dev --detach` on a fresh clone, cold",
        "git clone; cargo fetch; (no image, root image, build cache or target dir) cargo xtask dev --detach".to_owned(),
        total,
        "s",
        1,
        Some(phases.join("; ")),
        "< 60 s",
        Some(total < 60.0),
    ))
}

fn https_status(port: u16, ca: &Path, path: &str) -> String {
    let line = format!(
        "curl --silent --max-time 2 --cacert {} https://localhost:{port}{path}",
        ca.display()
    );
    Step::new("curl", "sh")
        .args(["-c", &line])
        .output(Output::Capture)
        .run_unchecked()
        .map(|r| r.stdout)
        .unwrap_or_default()
}

/// The Root CA to trust and the gateway's host port: where the stack is called.
fn gateway_endpoint(project: &Project) -> (PathBuf, u16) {
    let port = project
        .manifest
        .services
        .get("gateway")
        .and_then(|s| s.ports.first())
        .map(|p| *p.get_ref())
        .unwrap_or(8443);
    (project.certs_dir().join(crate::certs::CA_CERT), port)
}

fn stack_figures(project: &Project, xtask: &str, runs: usize) -> Result<Vec<Figure>> {
    let root = &project.root;
    let (ca, gateway_port) = gateway_endpoint(project);
    let mut ups = Vec::new();
    for _ in 0..runs {
        sh("down", &format!("{xtask} down"), root)?;
        let started = Instant::now();
        sh("dev --detach", &format!("{xtask} dev --detach --target local"), root)?;
        ups.push(started.elapsed().as_secs_f64());
    }
    let up = median(ups);
    let mut out = vec![fig(
        "`cargo xtask dev --detach` to every service healthy (images cached)",
        "cargo xtask down; cargo xtask dev --detach".to_owned(),
        up,
        "s",
        runs,
        None,
        "< 5 s",
        Some(up < 5.0),
    )];
    let edit_served = |file: &Path, from: &str, to: &str, path: &str, want: &str| -> Result<f64> {
        let original = std::fs::read_to_string(file)?;
        let result = timed(runs, |i| {
            let marker = format!("{want}{i}");
            std::fs::write(file, original.replace(from, &to.replace("{}", &marker)))?;
            let deadline = Instant::now() + Duration::from_secs(120);
            while !https_status(gateway_port, &ca, path).contains(&marker) {
                if Instant::now() > deadline {
                    bail!("the edit to {} was not served within 120 s", file.display());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        });
        std::fs::write(file, &original)?;
        result
    };
    // The stack comes down whatever the edits do.
    let edits = (|| -> Result<()> {
        let python = edit_served(
            &root.join("services/agent/src/agent/app.py"),
            "GREETING = \"hello from the agent\"",
            "GREETING = \"hello {}\"",
            "/api/hello",
            "bench-python-",
        )?;
        out.push(fig(
            "edit-to-served, Python (local stack, reload)",
            "cargo xtask dev --target local --detach; (edit the agent; poll through the gateway)".to_owned(),
            python,
            "s",
            runs,
            None,
            "(no target)",
            None,
        ));
        let rust = edit_served(
            &root.join("services/gateway/src/main.rs"),
            "\"no route for {method} {path}\"",
            "\"{} no route for {method} {path}\"",
            "/bench-probe",
            "bench-rust-",
        )?;
        out.push(fig(
            "edit-to-served, Rust (local stack, incremental rebuild + restart)",
            "cargo xtask dev --target local --detach; (edit the gateway; poll through it)".to_owned(),
            rust,
            "s",
            runs,
            None,
            "(no target)",
            None,
        ));
        Ok(())
    })();
    sh("down", &format!("{xtask} down"), root)?;
    edits?;
    Ok(out)
}

/// How many requests each load run makes, and how many are in flight at once.
const LOAD_REQUESTS: usize = 2000;
const LOAD_CONCURRENCY: usize = 16;

/// The load on the stack (see [`crate::load`]). On the `dev` target (release binaries, no
/// reload): `runs` runs of [`LOAD_REQUESTS`] at [`LOAD_CONCURRENCY`], their p50 and p99
/// (medians over the runs), errors, and each container's RSS before the first and after
/// the last. On the `local` target: the same load while the agent reloads (an edit to
/// its source one second in); the reload window runs from the edit until the new code
/// answers through the gateway, and every failure outside it is counted.
fn load_figures(project: &Project, xtask: &str, runs: usize) -> Result<Vec<Figure>> {
    let root = &project.root;
    let (ca, port) = gateway_endpoint(project);
    let load = crate::load::step(port, &ca, "/api/echo?msg=load", LOAD_REQUESTS, LOAD_CONCURRENCY);
    let container = |target: Target, service: &str| -> Result<String> {
        let stack = crate::compose::Stack::new(project, Some(target))?;
        stack
            .ps()?
            .into_iter()
            .find(|s| s.service == service)
            .map(|s| s.container)
            .ok_or_else(|| anyhow::anyhow!("no {service} container in the {target} stack"))
    };
    let mut out = Vec::new();
    let shape = format!("{LOAD_REQUESTS} requests, {LOAD_CONCURRENCY} at a time");

    sh("down", &format!("{xtask} down"), root)?;
    sh(
        "dev --detach --target dev",
        &format!("{xtask} dev --detach --target dev"),
        root,
    )?;
    let measured = (|| -> Result<()> {
        let (gateway, agent) = (container(Target::Dev, "gateway")?, container(Target::Dev, "agent")?);
        let before = (crate::load::rss_mib(&gateway)?, crate::load::rss_mib(&agent)?);
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        let mut rate = Vec::new();
        let mut errors = 0;
        for _ in 0..runs {
            let run = crate::load::run(&load)?;
            p50.push(run.quantile_ms(0.5));
            p99.push(run.quantile_ms(0.99));
            rate.push(run.per_second());
            errors += run.errors();
        }
        let after = (crate::load::rss_mib(&gateway)?, crate::load::rss_mib(&agent)?);
        let (p50, p99, rate) = (median(p50), median(p99), median(rate));
        out.push(fig(
            "load through the gateway to the agent (dev, mTLS), p50",
            "cargo xtask load (curl --parallel through the gateway)".to_owned(),
            p50,
            "ms",
            runs,
            Some(format!("p99 {p99:.1} ms; {rate:.0} requests/s; {shape}")),
            "(no target)",
            None,
        ));
        out.push(fig(
            "load through the gateway to the agent (dev, mTLS), p99",
            "cargo xtask load (curl --parallel through the gateway)".to_owned(),
            p99,
            "ms",
            runs,
            None,
            "(no target)",
            None,
        ));
        out.push(fig(
            "load: failed requests",
            "cargo xtask load (curl --parallel through the gateway)".to_owned(),
            errors as f64,
            "requests",
            runs,
            Some(format!("of {} ({shape}, {runs} runs)", runs * LOAD_REQUESTS)),
            "0",
            Some(errors == 0),
        ));
        for (service, (b, a)) in [("gateway", (before.0, after.0)), ("agent", (before.1, after.1))] {
            out.push(fig(
                &format!("{service} RSS after the load (dev)"),
                "docker stats --no-stream (after cargo xtask load)".to_owned(),
                a,
                "MiB",
                1,
                Some(format!("before: {b:.1} MiB")),
                "(no target)",
                None,
            ));
        }
        Ok(())
    })();
    if let Err(err) = measured {
        let _ = sh("down", &format!("{xtask} down"), root);
        return Err(err);
    }

    sh(
        "dev --detach --target local",
        &format!("{xtask} dev --detach --target local"),
        root,
    )?;
    let app = root.join("services/agent/src/agent/app.py");
    let original = std::fs::read_to_string(&app)?;
    let reloaded = (|| -> Result<Figure> {
        let (from, to) = (
            "GREETING = \"hello from the agent\"",
            "GREETING = \"hello from the reloaded agent\"",
        );
        if !original.contains(from) {
            bail!("{} no longer holds `{from}`: the bench edits that line", app.display());
        }
        let edit = std::thread::scope(|scope| -> Result<(crate::load::Run, SystemTime, SystemTime)> {
            let running = scope.spawn(|| crate::load::run(&load));
            std::thread::sleep(Duration::from_secs(1));
            let edited = SystemTime::now();
            std::fs::write(&app, original.replace(from, to))?;
            // The window ends when the new code answers (through the gateway).
            let deadline = Instant::now() + Duration::from_secs(60);
            while !https_status(port, &ca, "/api/hello").contains("hello from the reloaded agent") {
                if Instant::now() > deadline {
                    bail!("the agent's edit was not served within 60 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let served = SystemTime::now();
            let run = running
                .join()
                .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
            Ok((run, edited, served))
        });
        std::fs::write(&app, &original)?;
        let (run, edited, served) = edit?;
        if served > run.samples.iter().map(|s| s.end).max().unwrap_or(served) {
            bail!("the load ended before the reload did: make it longer (LOAD_REQUESTS)");
        }
        let outside = crate::load::failed_outside(&run, edited, served);
        let window = served.duration_since(edited).unwrap_or_default().as_secs_f64();
        Ok(fig(
            "agent reload under load (local): requests failed outside the reload window",
            "cargo xtask load on the local stack, the agent edited 1 s in".to_owned(),
            outside as f64,
            "requests",
            1,
            Some(format!(
                "{} failed inside the window of {window:.2} s (edit to the new code answering); {} requests, {LOAD_CONCURRENCY} at a time",
                run.errors() - outside,
                run.samples.len()
            )),
            "0",
            Some(outside == 0),
        ))
    })();
    sh("down", &format!("{xtask} down"), root)?;
    out.push(reloaded?);
    Ok(out)
}

fn prod_figures(project: &Project, runs: usize) -> Result<Vec<Figure>> {
    let m = &project.manifest;
    let mut out = Vec::new();
    let limits = [("gateway", 25.0, 20.0), ("agent", 130.0, 80.0)];
    let run = crate::certs::RunAs::for_project(project);
    run.prepare(&crate::certs::Spec::from_manifest(m))?;
    let network = format!("slipway-bench-{}", std::process::id());
    docker::step("network", &["network", "create", &network])
        .output(Output::Capture)
        .run()?;
    let result = (|| -> Result<()> {
        for (service, size_limit, rss_limit) in limits {
            let reference = bake::service_image(m, service, crate::manifest::Target::Prod).reference();
            // `docker images` and `inspect` disagree between stores (the containerd store
            // counts compressed content): both sizes are measured from the layers.
            let sizes = crate::lint::image_sizes(&reference)?;
            let rootfs = sizes.rootfs as f64 / 1e6;
            out.push(fig(
                &format!("{service} prod image: root filesystem (uncompressed layers)"),
                "docker image inspect (sum of layer sizes)".to_owned(),
                rootfs,
                "MB",
                1,
                None,
                &format!("< {size_limit} MB"),
                Some(rootfs < size_limit),
            ));
            out.push(fig(
                &format!("{service} prod image: transfer size (gzip-compressed layers)"),
                "docker save (gzip of each layer)".to_owned(),
                sizes.transfer as f64 / 1e6,
                "MB",
                1,
                None,
                "(no target)",
                None,
            ));
            // dive's "wasted space": bytes a later layer rewrites or removes.
            let wasted = crate::lint::superseded_bytes(&reference)?;
            out.push(fig(
                &format!("{service} prod image: bytes a later layer rewrites or removes"),
                "docker save (every layer's files against the later layers')".to_owned(),
                wasted as f64,
                "B",
                1,
                None,
                "0",
                Some(wasted == 0),
            ));
            let mut healthy = Vec::new();
            let mut rss = Vec::new();
            for i in 0..runs {
                let name = format!("{network}-{service}-{i}");
                let _remove = docker::Removed(name.clone());
                let started = Instant::now();
                docker::run_with_certs(
                    &name,
                    &run,
                    service,
                    &["--network", &network, "--network-alias", service],
                    &reference,
                )
                .run()?;
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let status = docker::step("health", &["inspect", "--format", "{{.State.Health.Status}}", &name])
                        .output(Output::Capture)
                        .run()?
                        .stdout;
                    if status.trim() == "healthy" {
                        healthy.push(started.elapsed().as_secs_f64());
                        break;
                    }
                    if Instant::now() > deadline {
                        bail!("{service} did not become healthy in 60 s");
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                std::thread::sleep(Duration::from_secs(5));
                rss.push(crate::load::rss_mib(&name)?);
            }
            let h = median(healthy);
            out.push(fig(
                &format!("{service}: `docker run` of the prod image to healthy"),
                "docker run (the prod image), polled until healthy".to_owned(),
                h,
                "s",
                runs,
                None,
                "(no target)",
                None,
            ));
            let r = median(rss);
            out.push(fig(
                &format!("{service} idle RSS (prod, 5 s after healthy)"),
                "docker top (5 s after healthy), RSS summed".to_owned(),
                r,
                "MiB",
                runs,
                None,
                &format!("< {rss_limit} MB"),
                Some(r < rss_limit),
            ));
        }
        Ok(())
    })();
    let _ = docker::step("network", &["network", "rm", &network])
        .output(Output::Capture)
        .run();
    result?;
    Ok(out)
}
