//! `cargo xtask ci`: the CI jobs, and each job run here exactly as the workflow runs it.
//!
//! `ci matrix [--since REF] [--json]` lists the jobs (service x target x platform) as a
//! GitHub Actions matrix. With `--since`, only the images whose inputs changed between
//! REF and HEAD: a file under a service's paths affects that service; a base image's
//! directory affects every service built on it; the manifest affects every service;
//! anything else (docs, xtask/, compose files) affects no image.
//!
//! `ci run [JOB] [--since REF] [--push] [--sign] [--allow-unscanned]` (and bare `ci`)
//! runs jobs: certificates, the build of the job's image for its target and platform,
//! tests in that image (`local`: the service's own test suite; `dev` and `prod`: the
//! image started with its certificates until its own health check passes), the image
//! policy (`lint`), a Trivy scan where Trivy is installed, then `release` when asked to
//! push. With no JOB every job runs, each to its end, and the failures are listed last.
//! Inside GitHub Actions (its cache service exposed to the step) it builds with the
//! `ci.cache` backend.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;

use crate::manifest::{Cache, Kind, Manifest, Target};
use crate::plan::{Output, Plan, Step};
use crate::{bake, build, certs, docker, flags, lint, project::Project, release, scan, ui};

/// One CI job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    /// `gateway-prod-linux-amd64`: what `cargo xtask ci run` takes.
    pub job: String,
    pub service: String,
    pub target: Target,
    pub platform: String,
    /// The GitHub-hosted runner of that platform, so nothing is built under emulation:
    /// `ubuntu-24.04-arm` for arm64, `ubuntu-latest` otherwise.
    pub runner: String,
    /// Whether the job stands for its image on main: a prod job, the first of its
    /// image's platforms. For an image of one platform it pushes and signs; for one of
    /// several, every prod job pushes its platform by digest, and the image's join and
    /// verify run once, for this job's entry.
    pub pushes: bool,
}

/// The GitHub-hosted runner of a platform.
pub fn runner(platform: &str) -> &'static str {
    match platform {
        "linux/arm64" | "linux/arm64/v8" => "ubuntu-24.04-arm",
        _ => "ubuntu-latest",
    }
}

/// The services whose images are built from any of the `changed` paths.
pub fn affected(m: &Manifest, changed: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let under = |file: &str, dir: &str| file == dir || file.starts_with(&format!("{}/", dir.trim_end_matches('/')));
    for file in changed {
        for ((name, service), inputs) in m.services.iter().zip(crate::inputs::all(m)) {
            let base = match service.kind {
                Kind::Rust => "images/rust-builder",
                Kind::Python => "images/python-base",
            };
            let base_changed = under(file, "images/os-base") || under(file, base);
            let everyone = file == crate::manifest::FILE || file == crate::bases::FILE;
            if inputs.matches(file) || everyone || (base_changed && !crate::inputs::is_noise(file)) {
                out.insert(name.get_ref().clone());
            }
        }
    }
    out
}

/// Every job of `services`, for every target and its platforms.
pub fn jobs(m: &Manifest, services: &BTreeSet<String>) -> Vec<Job> {
    let mut out = Vec::new();
    for service in services {
        for target in Target::ALL {
            let settings = target.settings(m);
            let platforms = settings.platforms.as_ref().unwrap_or(&m.build.platforms);
            for (i, platform) in platforms.iter().enumerate() {
                let platform = platform.get_ref().clone();
                out.push(Job {
                    job: format!("{service}-{target}-{}", platform.replace('/', "-")),
                    service: service.clone(),
                    target: target.to_owned(),
                    runner: runner(&platform).to_owned(),
                    platform,
                    pushes: target == Target::Prod && i == 0,
                });
            }
        }
    }
    out
}

/// The services whose images changed since `since`. No revision to compare with (empty,
/// or the zeros GitHub sends as `github.event.before` for a new branch) means every one.
fn affected_since(project: &Project, since: &str) -> Result<BTreeSet<String>> {
    let m = &project.manifest;
    if since.trim().trim_matches('0').is_empty() {
        ui::note(&format!("no revision to compare with (`{since}`): every image"));
        return Ok(m.services.keys().map(|k| k.get_ref().clone()).collect());
    }
    let changed = changed_since(project, since)?;
    let hit = affected(m, &changed);
    ui::note(&format!(
        "{} files changed since {since}: {} affected",
        changed.len(),
        hit.len()
    ));
    Ok(hit)
}

/// The paths that changed between `since` (its merge base with HEAD) and HEAD.
fn changed_since(project: &Project, since: &str) -> Result<Vec<String>> {
    let range = format!("{since}...HEAD");
    let ran = Step::new("git diff", "git")
        .args(["diff", "--name-only", &range, "--"])
        .cwd(&project.root)
        .output(Output::Capture)
        .timeout(Duration::from_secs(60))
        .run_unchecked()?;
    if !ran.status.success() {
        bail!(
            "git cannot compare `{since}` with HEAD ({}): is the revision fetched? (in GitHub Actions, check out with fetch-depth: 0)",
            ran.stderr.trim()
        );
    }
    Ok(ran
        .stdout
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect())
}

impl flags::Ci {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        match self.subcommand {
            flags::CiCmd::Matrix(cmd) => cmd.run(project, dry_run),
            flags::CiCmd::Workflow(_) => {
                print!("{}", workflow(&project.manifest));
                Ok(())
            }
            flags::CiCmd::Run(cmd) => cmd.run(project, dry_run),
            flags::CiCmd::Join(cmd) => cmd.run(project, dry_run),
        }
    }
}

impl flags::Run {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let m = &project.manifest;
        let every: BTreeSet<String> = m.services.keys().map(|k| k.get_ref().clone()).collect();
        let all = jobs(m, &every);
        // `ci run JOB` and `ci JOB` are one command: `run` is the default subcommand, so
        // its name arrives as the first word when it is spelled out.
        let mut names = self.jobs.as_slice();
        if names.first().is_some_and(|n| n == "run") {
            names = &names[1..];
        }
        let selected: Vec<Job> = match (names, &self.since) {
            ([_, ..], Some(_)) => {
                bail!("--since chooses the jobs when none is named: name jobs or give --since, not both")
            }
            ([_, ..], None) => names.iter().map(|n| find(&all, n)).collect::<Result<_>>()?,
            ([], Some(since)) => jobs(m, &affected_since(project, since)?),
            ([], None) => all,
        };
        if selected.is_empty() {
            ui::note("no jobs: no image's inputs changed");
            return Ok(());
        }
        if self.sign && !self.push {
            bail!("--sign signs what --push pushes: add --push");
        }
        if let Some(job) = selected.iter().find(|j| self.sign && pushes_by_digest(m, j)) {
            bail!(
                "{} is one platform of an image of several: each platform's job pushes by digest (`ci run JOB \
                 --push`), then `cargo xtask ci join {} --sign` joins and signs the index; drop --sign here",
                job.job,
                job.service
            );
        }
        let project = &with_ci_cache(project);
        let options = JobOptions {
            push: self.push,
            sign: self.sign,
            key: self.key.clone(),
            allow_unscanned: self.allow_unscanned,
            trivy: scan::trivy_installed(),
        };
        if dry_run {
            // Every job planned from one probe of the facts.
            let facts = build::Facts::probe(project, true)?;
            let cosign = crate::cosign::asked(project, self.sign, self.key.as_deref())?;
            for job in &selected {
                print!("{}", job_plan(project, &facts, job, &options, cosign.as_ref())?);
            }
            return Ok(());
        }
        let mut ran = Vec::new();
        for job in &selected {
            ui::step(&format!("job {}", job.job));
            let started = Instant::now();
            let result = run_job(project, job, &options);
            if let Err(err) = &result
                && (err.is::<crate::plan::Interrupted>() || selected.len() == 1)
            {
                return result;
            }
            if let Err(err) = &result {
                ui::error(&format!("job {} failed: {err:#}", job.job));
            }
            ran.push((job.job.clone(), started.elapsed(), result.is_ok()));
        }
        for (job, took, ok) in &ran {
            ui::note(&format!(
                "{:<32} {:>7.1}s  {}",
                job,
                took.as_secs_f64(),
                if *ok { "ok" } else { "FAILED" }
            ));
        }
        let failed: Vec<&str> = ran.iter().filter(|r| !r.2).map(|r| r.0.as_str()).collect();
        if !failed.is_empty() {
            bail!("{} of {} jobs failed: {}", failed.len(), ran.len(), failed.join(", "));
        }
        Ok(())
    }
}

/// The job named `name`, or an error listing the jobs.
fn find(all: &[Job], name: &str) -> Result<Job> {
    if let Some(job) = all.iter().find(|j| j.job == name) {
        return Ok(job.clone());
    }
    let names: Vec<&str> = all.iter().map(|j| j.job.as_str()).collect();
    let close = names.iter().find(|n| n.starts_with(name) || name.starts_with(**n));
    let hint = close.map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
    bail!(
        "no job `{name}`{hint}: the jobs are {} (see `cargo xtask ci matrix`)",
        names.join(", ")
    )
}

/// The project with `ci.cache` as its build cache where that backend is reachable: the
/// Actions cache only inside GitHub Actions with its runtime exposed to the step.
fn with_ci_cache(project: &Project) -> Project {
    let mut project = project.clone();
    let cache = project.manifest.ci.cache.clone();
    let reachable = match &cache {
        Cache::Gha { .. } => {
            let var = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty());
            var("ACTIONS_RUNTIME_TOKEN") && (var("ACTIONS_CACHE_URL") || var("ACTIONS_RESULTS_URL"))
        }
        Cache::None => false,
        _ => true,
    };
    if reachable {
        project.manifest.build.cache = cache;
    } else if matches!(cache, Cache::Gha { .. }) && project.manifest.build.cache == Cache::None {
        ui::note("not inside GitHub Actions (no ACTIONS_RUNTIME_TOKEN): building with the builder's own cache");
    }
    project
}

/// How jobs run.
#[derive(Debug, Clone)]
pub struct JobOptions {
    pub push: bool,
    pub sign: bool,
    /// The signing key (`release --key`).
    pub key: Option<String>,
    pub allow_unscanned: bool,
    /// Whether Trivy is installed (the scan step runs only then).
    pub trivy: bool,
}

/// The release a job makes of its image, when it pushes.
fn job_release(job: &Job, o: &JobOptions) -> release::Options {
    release::Options {
        names: vec![job.service.clone()],
        target: job.target,
        push: true,
        sign: o.sign,
        key: o.key.clone(),
        allow_unscanned: o.allow_unscanned,
    }
}

/// The job's tests in its image: `local`, the service's checks (`cargo xtask check`);
/// `dev` and `prod`, the image started as it ships, until its own health check passes.
fn test_steps(project: &Project, job: &Job) -> Vec<Step> {
    if job.target == Target::Local {
        crate::check::steps(project, &job.service)
    } else {
        vec![smoke_start(project, job, &container_name(job))]
    }
}

/// What `ci run JOB` runs, as text (what `--dry-run` prints): planned from the build's
/// facts, with `cosign` when the job signs. Pure: nothing asked of the engine.
pub fn job_plan(
    project: &Project,
    facts: &build::Facts,
    job: &Job,
    o: &JobOptions,
    cosign: Option<&crate::cosign::Cosign>,
) -> Result<String> {
    let image = bake::service_image(&project.manifest, &job.service, job.target);
    let reference = image.reference();
    let request = build::Request {
        names: vec![job.service.clone()],
        target: job.target,
        platforms: Some(vec![job.platform.clone()]),
        push: false,
        no_cache: false,
        share: None,
    };
    let mut out = format!("# {}: certificates, then build\n", job.job);
    out.push_str(&build::plan(project, facts, &request)?.render(project));
    out.push_str("# tests in the image\n");
    out.push_str(
        &Plan {
            steps: test_steps(project, job),
        }
        .render(),
    );
    out.push_str(&format!(
        "# image policy: {}'s Dockerfile, {reference}'s configuration and layers\n",
        job.service
    ));
    if o.trivy {
        out.push_str(&format!(
            "{}\n",
            scan::trivy_step(&job.service, &image).0.command_line()
        ));
    } else {
        out.push_str(&format!("# no scan of {reference}: Trivy is not installed\n"));
    }
    if o.push && pushes_by_digest(&project.manifest, job) {
        out.push_str(&format!(
            "# push {} by digest alone (its tags are the joined index's), recorded in {} for `cargo xtask ci join`\n",
            job.platform,
            pushed_file(project, job).display()
        ));
        out.push_str(&build::plan(project, facts, &platform_push(job))?.render(project));
    } else if o.push {
        let plan = release::plan(project, facts, &job_release(job, o), cosign.cloned())?;
        out.push_str(&plan.render(project));
    }
    Ok(out)
}

/// Whether a job's push is one platform of several, by digest alone: its image is built
/// for more than one platform, each on its own runner, and `ci join` joins them.
pub fn pushes_by_digest(m: &Manifest, job: &Job) -> bool {
    let settings = job.target.settings(m);
    settings.platforms.as_ref().unwrap_or(&m.build.platforms).len() > 1
}

/// The build that pushes one platform's image by digest (a share of the image, named
/// after the job: its own build directory).
fn platform_push(job: &Job) -> build::Request {
    build::Request {
        names: vec![job.service.clone()],
        target: job.target,
        platforms: Some(vec![job.platform.clone()]),
        push: true,
        no_cache: false,
        share: Some(job.job.clone()),
    }
}

/// What a platform's job pushed, for `ci join` (`.<brand>/ci/pushed/<job>.json`; the
/// workflow carries these files from the image jobs to the join as artifacts).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Pushed {
    pub service: String,
    pub target: Target,
    pub platform: String,
    pub repository: String,
    pub digest: String,
}

fn pushed_dir(project: &Project) -> std::path::PathBuf {
    project.state_dir().join("ci").join("pushed")
}

fn pushed_file(project: &Project, job: &Job) -> std::path::PathBuf {
    pushed_dir(project).join(format!("{}.json", job.job))
}

/// Push the job's platform by digest, once its scan passed, and record it.
fn push_platform(project: &Project, job: &Job, o: &JobOptions) -> Result<()> {
    build::distribute::require_skopeo()?;
    let image = bake::service_image(&project.manifest, &job.service, job.target);
    if !o.trivy && !o.allow_unscanned {
        bail!(
            "no scan of {}: Trivy is not installed ({}); --allow-unscanned pushes it anyway",
            image.reference(),
            scan::INSTALL
        );
    }
    ui::step(&format!("push {} ({}) by digest", image.repository, job.platform));
    let facts = build::Facts::probe(project, false)?;
    let plan = build::plan(project, &facts, &platform_push(job))?;
    let built = build::run(project, &facts, &plan, false)?;
    let digest = built
        .iter()
        .find(|b| b.image == image)
        .and_then(|b| b.digest.clone())
        .ok_or_else(|| anyhow::anyhow!("the push of {} reports no digest", image.repository))?;
    let record = Pushed {
        service: job.service.clone(),
        target: job.target,
        platform: job.platform.clone(),
        repository: image.repository.clone(),
        digest,
    };
    let file = pushed_file(project, job);
    std::fs::create_dir_all(pushed_dir(project))?;
    crate::fs::write_if_changed(&file, &(serde_json::to_string_pretty(&record)? + "\n"))?;
    ui::note(&format!(
        "pushed {} ({}), recorded in {} for `cargo xtask ci join`",
        image.at(&record.digest),
        job.platform,
        file.display()
    ));
    Ok(())
}

impl flags::Join {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let m = &project.manifest;
        let dir = pushed_dir(project);
        let mut records: Vec<Pushed> = Vec::new();
        let mut files_of_records = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut files: Vec<_> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
            files.sort();
            for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "json")) {
                let text = std::fs::read_to_string(file)?;
                records.push(
                    serde_json::from_str(&text)
                        .map_err(|e| anyhow::anyhow!("{} is no record of `ci run --push` ({e})", file.display()))?,
                );
                files_of_records.push(file.clone());
            }
        }
        let services: Vec<String> = if self.services.is_empty() {
            let found: BTreeSet<String> = records.iter().map(|r| r.service.clone()).collect();
            found.into_iter().collect()
        } else {
            m.service_names(&self.services)?
        };
        if services.is_empty() {
            bail!(
                "nothing to join: no record in {} (`cargo xtask ci run JOB --push` writes one for each platform's job)",
                dir.display()
            );
        }
        let target = records
            .iter()
            .find(|r| services.contains(&r.service))
            .map_or(Target::Prod, |r| r.target);
        let cosign = crate::cosign::asked(project, self.sign, self.key.as_deref())?;
        if cosign.is_some() {
            crate::cosign::require_installed("`ci join`")?;
        }
        let spec = certs::Spec::from_manifest(m);
        certs::ensure(&project.certs_dir(), &spec, None)?;
        let o = release::Options {
            names: services.clone(),
            target,
            push: true,
            sign: self.sign,
            key: self.key.clone(),
            allow_unscanned: true,
        };
        let facts = build::Facts::probe(project, dry_run)?;
        let mut plan = release::plan(project, &facts, &o, cosign)?;
        let definition = &plan
            .push
            .as_ref()
            .expect("a release with --push plans its push")
            .definition;
        let mut pushed = Vec::new();
        for service in &services {
            let image = bake::service_image(m, service, target);
            let wanted = target.platforms(m, &docker::local_platform());
            let mine: Vec<&Pushed> = records
                .iter()
                .filter(|r| r.service == *service && r.target == target)
                .collect();
            let missing: Vec<&String> = wanted
                .iter()
                .filter(|p| !mine.iter().any(|r| r.platform == **p))
                .collect();
            if !missing.is_empty() && !dry_run {
                bail!(
                    "{service}: no pushed record for {} in {}: each platform's job (`ci run {service}-{target}-... \
                     --push`) must finish first",
                    missing.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "),
                    dir.display()
                );
            }
            let sources: Vec<String> = mine.iter().map(|r| image.at(&r.digest)).collect();
            let tag_names = definition
                .target
                .values()
                .find(|t| t.image == image)
                .map(|t| t.tag_names.clone())
                .unwrap_or_default();
            let tags: Vec<String> = tag_names.iter().map(|n| image.with_tag(n)).collect();
            let step = build::distribute::join_step(&image, &tags, &sources);
            if dry_run {
                println!("{}", step.command_line());
                continue;
            }
            ui::step(&format!("join {} ({})", image.repository, wanted.join(", ")));
            step.run()?;
            let digest = docker::index_digest(&tags[0]).map_err(|e| anyhow::anyhow!("the joined {service}: {e}"))?;
            ui::note(&format!("{} joined: {digest}", image.repository));
            pushed.push(build::Built {
                image,
                tags: tag_names,
                digest: Some(digest),
                ..build::Built::default()
            });
        }
        if dry_run {
            println!("# then the signatures and attestations, as `release --push --sign` makes them");
            return Ok(());
        }
        // Each platform's job attached BuildKit's provenance where its builder could.
        plan.provenance = plan.cosign.is_some()
            && pushed
                .iter()
                .all(|b| docker::provenance(&b.image.at(b.digest.as_deref().unwrap_or_default())).is_ok());
        plan.multi_platform = true;
        // The SBOM is read from the image: this runner's platform of the index, pulled.
        let read_sbom = |service: &str, image: &bake::Image| {
            let b = pushed.iter().find(|b| b.image == *image).expect("joined above");
            let at = image.at(b.digest.as_deref().unwrap_or_default());
            docker::step(format!("pull {at}"), &["pull", "--quiet", &at])
                .output(Output::Capture)
                .run()?;
            docker::step(
                format!("name it {}", image.reference()),
                &["tag", &at, &image.reference()],
            )
            .run()?;
            crate::sbom::make(service, image)
        };
        release::finish(project, &o, &plan, &pushed, &BTreeMap::new(), &read_sbom)?;
        // Joined: the records are spent (a later join must not join them again).
        for (record, file) in records.iter().zip(&files_of_records) {
            if services.contains(&record.service) && record.target == target {
                let _ = std::fs::remove_file(file);
            }
        }
        Ok(())
    }
}

fn run_job(project: &Project, job: &Job, o: &JobOptions) -> Result<()> {
    let name = job.service.as_str();
    let image = bake::service_image(&project.manifest, name, job.target);
    let reference = image.reference();
    let spec = certs::Spec::from_manifest(&project.manifest);
    certs::ensure(&project.certs_dir(), &spec, None)?;
    certs::RunAs::for_project(project).prepare(&spec)?;
    ui::step(&format!("build {reference} ({})", job.platform));
    build::build(
        project,
        std::slice::from_ref(&job.service),
        job.target,
        Some(vec![job.platform.clone()]),
        build::Mode::default(),
    )?;
    let tests = test_steps(project, job);
    if job.target == Target::Local {
        crate::check::run(&tests)?;
    } else {
        ui::step(&tests[0].name);
        smoke(project, job)?;
    }
    ui::step(&format!("image policy of {reference}"));
    let violations = lint::check_image(project, name, job.target)?;
    if !violations.is_empty() {
        bail!("the image policy failed:\n  - {}", violations.join("\n  - "));
    }
    if o.trivy {
        ui::step(&format!("scan {reference}"));
        scan::finish(&[scan::scan_image(project, name, job.target)?])?;
    } else {
        ui::warn(&format!(
            "Trivy is not installed, so {reference} is not scanned: {}",
            scan::INSTALL
        ));
    }
    if o.push && pushes_by_digest(&project.manifest, job) {
        push_platform(project, job, o)?;
    } else if o.push {
        release::release(project, &job_release(job, o), false)?;
    }
    Ok(())
}

fn container_name(job: &Job) -> String {
    format!("slipway-ci-{}-{}", job.job, std::process::id())
}

/// `docker run` of the image as it ships: its own user and entrypoint, a read-only root
/// filesystem, its own certificates mounted read-only; the job's platform named where it
/// is not this machine's (run through qemu-user, as a job off its own runner).
fn smoke_start(project: &Project, job: &Job, container: &str) -> Step {
    let reference = bake::service_image(&project.manifest, &job.service, job.target).reference();
    let mut extra = vec!["--read-only", "--tmpfs", "/tmp"];
    if job.platform != docker::local_platform() {
        extra.extend(["--platform", job.platform.as_str()]);
    }
    let mut step = docker::run_with_certs(
        container,
        &certs::RunAs::for_project(project),
        &job.service,
        &extra,
        &reference,
    );
    step.name = format!("{}: start {reference} until its health check passes", job.service);
    step
}

/// Start the image as it ships (its own user, read-only root filesystem, the
/// certificates mounted) and wait until Docker reports its HEALTHCHECK healthy. On
/// failure: the health log and the last lines of its output. The container is removed
/// however this ends.
fn smoke(project: &Project, job: &Job) -> Result<()> {
    let m = &project.manifest;
    let name = job.service.as_str();
    let reference = bake::service_image(m, name, job.target).reference();
    let container = container_name(job);
    let _removed = docker::Removed(container.clone());
    smoke_start(project, job, &container).run()?;
    let health = &m.services[name].health;
    let wait = Duration::from_secs(
        u64::from(health.start_period_secs)
            + u64::from(health.interval_secs + health.timeout_secs) * u64::from(health.retries)
            + 30,
    );
    let deadline = Instant::now() + wait;
    let started = Instant::now();
    loop {
        crate::plan::check_interrupted()?;
        let state = docker::step(
            "health",
            &[
                "inspect",
                "--format",
                "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                &container,
            ],
        )
        .output(Output::Capture)
        .run()?
        .stdout;
        let state = state.trim();
        if state == "running healthy" {
            ui::note(&format!(
                "{reference} is healthy after {:.1}s",
                started.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        if !state.starts_with("running") || state.ends_with("unhealthy") || Instant::now() > deadline {
            let logs = docker::step("logs", &["logs", "--tail", "20", &container])
                .output(Output::Capture)
                .run_unchecked()
                .map(|r| format!("{}{}", r.stdout, r.stderr))
                .unwrap_or_default();
            let checks = docker::step(
                "health log",
                &[
                    "inspect",
                    "--format",
                    "{{if .State.Health}}{{range .State.Health.Log}}{{.Output}}{{end}}{{end}}",
                    &container,
                ],
            )
            .output(Output::Capture)
            .run_unchecked()
            .map(|r| r.stdout)
            .unwrap_or_default();
            bail!(
                "{reference} did not become healthy (state: {state}, after {:.0}s).\nhealth checks said:\n{}\nlast lines of its output:\n{}",
                started.elapsed().as_secs_f64(),
                checks.trim(),
                logs.trim()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl flags::Matrix {
    pub fn run(self, project: &Project, _dry_run: bool) -> Result<()> {
        let m = &project.manifest;
        let services: BTreeSet<String> = match &self.since {
            Some(since) => affected_since(project, since)?,
            None => m.services.keys().map(|k| k.get_ref().clone()).collect(),
        };
        let jobs: Vec<Job> = jobs(m, &services)
            .into_iter()
            .filter(|j| self.target.is_none_or(|t| j.target == t))
            .filter(|j| !self.pushing || j.pushes)
            .collect();
        if self.json {
            println!("{}", serde_json::json!({ "include": jobs }));
        } else if jobs.is_empty() {
            println!("no jobs: no image's inputs changed");
        } else {
            for j in &jobs {
                println!("{:<32} {:<8} {:<6} {}", j.job, j.service, j.target, j.platform);
            }
        }
        Ok(())
    }
}

/// Where the workflow is written (by `cargo xtask codegen`).
pub const WORKFLOW: &str = ".github/workflows/ci.yml";

/// The `image` job's matrix and its set-up steps.
const IMAGE_STEPS: &str = r#"    strategy:
      fail-fast: false
      matrix: ${{ fromJSON(needs.matrix.outputs.jobs) }}
    steps:
      - uses: actions/checkout@v4
      # A docker-container builder: bake can export its cache, and attach provenance.
      - uses: docker/setup-buildx-action@v3
      # Exposes the Actions cache service to run steps (bake's `type=gha` cache).
      - uses: crazy-max/ghaction-github-runtime@v3
      # `cargo xtask ci run` scans with Trivy when it is installed.
      - uses: aquasecurity/setup-trivy@v0.2.2
        with:
          cache: true
"#;

/// The GitHub Actions workflow: every `run:` step is a `cargo xtask` command, so a
/// laptop runs what CI runs. `test` runs the test suite with what it needs installed;
/// `matrix` lists the jobs whose images changed (`ci matrix --since`); `image` runs each
/// with `ci run`, with the Actions cache for bake. Where the manifest names `ci.registry`,
/// `image` on `main` also pushes the prod images there, signs them and attests their
/// SBOMs, and `verify` checks each pushed image (signature, SBOM, provenance): what a
/// deploy or promotion job must need. Signing is keyless (the workflow's OIDC token, the
/// public transparency log) unless the manifest names a key or turns the log off: then
/// the key comes from the secrets COSIGN_PRIVATE_KEY and COSIGN_PASSWORD.
pub fn workflow(m: &Manifest) -> String {
    let push_to = m.ci.registry.as_ref().map(|r| r.get_ref().as_str());
    let keyed = m.release.key.is_some() || m.release.tlog == Some(false);
    let header = match push_to {
        Some(registry) => format!(
            "# Prod images are pushed on main to {registry} (ci.registry in slipway.toml), signed {}, and verified.",
            if keyed {
                "with the key in the secrets COSIGN_PRIVATE_KEY and COSIGN_PASSWORD"
            } else {
                "keyless (the workflow's OIDC token)"
            }
        ),
        None => "# No ci.registry in slipway.toml: every affected image is built and tested, none pushed.".to_owned(),
    };
    let mut text = format!(
        r#"# Generated by `cargo xtask codegen` from xtask/src/ci.rs: do not edit.
# Every `run:` step is a `cargo xtask` command; run the same one on your machine.
{header}
name: ci

on:
  push:
    branches: [main]
  pull_request:
  # Seed 004: the bases are refreshed monthly (the refresh-bases job), or by hand.
  schedule:
    - cron: "0 4 1 * *"
  workflow_dispatch:

permissions:
  contents: read

concurrency:
  group: ci-${{{{ github.ref }}}}
  cancel-in-progress: ${{{{ github.ref != 'refs/heads/main' }}}}

env:
  CARGO_TERM_COLOR: always

jobs:
  # Fresh bases: the root image made anew and recorded in bases.lock, the bases and
  # every prod image built from it, then a pull request with the new bases.lock. Its
  # CI tests every image (bases.lock is an input of all of them); merged, main pushes,
  # signs and verifies them. Pull requests opened with the workflow's own token start
  # no workflow: give a token in the secret REFRESH_TOKEN (docs/ci.md).
  refresh-bases:
    name: refresh the bases
    if: github.event_name == 'schedule' || github.event_name == 'workflow_dispatch'
    runs-on: ubuntu-latest
    timeout-minutes: 45
    permissions:
      contents: write
      pull-requests: write
    steps:
      - uses: actions/checkout@v4
      - uses: awalsh128/cache-apt-pkgs-action@v1
        with:
          packages: mmdebstrap
      - run: cargo xtask build --pull --target prod
      - uses: peter-evans/create-pull-request@v7
        with:
          token: ${{{{ secrets.REFRESH_TOKEN || github.token }}}}
          add-paths: bases.lock
          branch: refresh-bases
          commit-message: "Refresh the base images (bases.lock)"
          title: "Refresh the base images"
          body: "`cargo xtask build --pull` made the root image anew; bases.lock records it. Merging rebuilds, pushes and signs every image."

  test:
    name: cargo xtask test
    if: github.event_name != 'schedule'
    runs-on: ubuntu-latest
    timeout-minutes: 60
    steps:
      - uses: actions/checkout@v4
      # What the engine tests use beside Docker: a local registry and mmdebstrap (the
      # air-gapped bootstrap), skopeo (prune), cosign (signatures).
      - uses: awalsh128/cache-apt-pkgs-action@v1
        with:
          packages: docker-registry mmdebstrap skopeo
      - uses: sigstore/cosign-installer@v3
      - run: cargo xtask test

  matrix:
    name: affected images
    if: github.event_name != 'schedule'
    runs-on: ubuntu-latest
    timeout-minutes: 10
    outputs:
      jobs: ${{{{ steps.jobs.outputs.jobs }}}}
      prod: ${{{{ steps.prod.outputs.jobs }}}}
    env:
      # The pull request's base, or the commit before the push.
      SINCE: ${{{{ github.event.pull_request.base.sha || github.event.before }}}}
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0
      - id: jobs
        run: echo "jobs=$(cargo xtask ci matrix --json --since "$SINCE")" >> "$GITHUB_OUTPUT"
      - id: prod
        run: echo "jobs=$(cargo xtask ci matrix --json --since "$SINCE" --target prod --pushing)" >> "$GITHUB_OUTPUT"

  image:
    name: ${{{{ matrix.job }}}}
    needs: matrix
    if: fromJSON(needs.matrix.outputs.jobs).include[0] != null
    # Each platform's jobs on a runner of that platform: nothing built under emulation.
    runs-on: ${{{{ matrix.runner }}}}
    timeout-minutes: 45
"#
    );
    let Some(registry) = push_to else {
        text.push_str(IMAGE_STEPS);
        text.push_str(
            r#"      - name: cargo xtask ci run
        env:
          JOB: ${{ matrix.job }}
        run: cargo xtask ci run "$JOB"
"#,
        );
        return text;
    };
    let host = registry.split('/').next().unwrap_or(registry);
    let login = |indent: &str| {
        format!(
            "{indent}uses: docker/login-action@v3\n        with:\n          registry: {host}\n          \
             username: ${{{{ secrets.REGISTRY_USERNAME }}}}\n          password: ${{{{ secrets.REGISTRY_PASSWORD }}}}\n"
        )
    };
    let (id_token, sign_env, sign_key) = if keyed {
        (
            "",
            "          COSIGN_PRIVATE_KEY: ${{ secrets.COSIGN_PRIVATE_KEY }}\n          COSIGN_PASSWORD: ${{ secrets.COSIGN_PASSWORD }}\n",
            " --key env://COSIGN_PRIVATE_KEY",
        )
    } else {
        (
            "      # Keyless signing: cosign exchanges the workflow's OIDC token for a certificate.\n      id-token: write\n",
            "",
            "",
        )
    };
    // How verify knows the signer: the manifest's public key or identity, else the
    // public key secret (keyed), else this workflow's own identity (keyless).
    let (verify_env, verify_flags) = if m.release.public_key.is_some() || m.release.identity.is_some() {
        ("", "")
    } else if keyed {
        ("          COSIGN_PUBLIC_KEY: ${{ secrets.COSIGN_PUBLIC_KEY }}\n", "")
    } else {
        (
            "          IDENTITY: ^https://github.com/${{ github.repository }}/.github/workflows/ci.yml@\n          ISSUER: https://token.actions.githubusercontent.com\n",
            r#" --identity "$IDENTITY" --issuer "$ISSUER""#,
        )
    };
    let on_main = "github.event_name == 'push' && github.ref == 'refs/heads/main'";
    // An image of several platforms: each platform's job pushes its image by digest on
    // its own runner, and a join job per image joins, signs and attests the index.
    let spread = Target::Prod
        .settings(m)
        .platforms
        .as_ref()
        .unwrap_or(&m.build.platforms)
        .len()
        > 1;
    let pushes_here = if spread {
        format!("{on_main} && matrix.target == 'prod'")
    } else {
        format!("{on_main} && matrix.pushes")
    };
    // Every job runs `ci run`; the pushing ones push (and sign, or leave that to the join).
    let push_run = |flags: &str, env: &str| {
        format!(
            r#"      - name: cargo xtask ci run {flags}
        if: {pushes_here}
        env:
          JOB: ${{{{ matrix.job }}}}
{env}        run: cargo xtask ci run "$JOB" {flags}
"#
        )
    };
    let mut push_steps = format!(
        r#"      - name: cargo xtask ci run
        if: ${{{{ !({pushes_here}) }}}}
        env:
          JOB: ${{{{ matrix.job }}}}
        run: cargo xtask ci run "$JOB"
"#
    );
    let (join_job, verify_needs) = if spread {
        push_steps.push_str(&format!(
            r#"      # skopeo pushes the platform's image by digest; the join job joins them.
      - if: {pushes_here}
        uses: awalsh128/cache-apt-pkgs-action@v1
        with:
          packages: skopeo
"#
        ));
        push_steps.push_str(&push_run("--push", ""));
        push_steps.push_str(&format!(
            r#"      - if: {pushes_here}
        uses: actions/upload-artifact@v4
        with:
          name: pushed-${{{{ matrix.job }}}}
          path: .slipway/ci/pushed/
          include-hidden-files: true
"#
        ));
        (
            format!(
                r#"
  # Each image's platforms, pushed by digest by their jobs, joined into one index under
  # its tags, signed with every platform's image, its SBOM and provenance attested.
  join:
    name: join ${{{{ matrix.service }}}}
    needs: [matrix, image]
    if: {on_main} && fromJSON(needs.matrix.outputs.prod).include[0] != null
    runs-on: ubuntu-latest
    timeout-minutes: 20
    permissions:
      contents: read
{id_token}    env:
      SLIPWAY_REGISTRY: {registry}
    strategy:
      fail-fast: false
      matrix: ${{{{ fromJSON(needs.matrix.outputs.prod) }}}}
    steps:
      - uses: actions/checkout@v4
      - uses: sigstore/cosign-installer@v3
      - {login_first}      - uses: actions/download-artifact@v4
        with:
          pattern: pushed-${{{{ matrix.service }}}}-prod-*
          merge-multiple: true
          path: .slipway/ci/pushed/
      - name: cargo xtask ci join --sign
        env:
          SERVICE: ${{{{ matrix.service }}}}
{sign_env}        run: cargo xtask ci join "$SERVICE" --sign{sign_key}
"#,
                login_first = login(""),
            ),
            "join",
        )
    } else {
        push_steps.push_str(&push_run(&format!("--push --sign{sign_key}"), sign_env));
        (String::new(), "image")
    };
    // The image jobs sign only an image of one platform (else the join signs).
    let (image_id_token, cosign_step) = if spread {
        (String::new(), String::new())
    } else {
        (
            id_token.to_owned(),
            format!("      - if: {pushes_here}\n        uses: sigstore/cosign-installer@v3\n"),
        )
    };
    text.push_str(&format!(
        r#"    permissions:
      contents: read
{image_id_token}    env:
      # The registry the images are named in and pushed to: {{registry}}/{project}/{{service}}.
      SLIPWAY_REGISTRY: {registry}
{IMAGE_STEPS}{cosign_step}      - if: {pushes_here}
{login_step}{push_steps}{join_job}
  # The gate: a deploy or promotion job goes after this one (`needs: verify`) and deploys
  # the digests it prints.
  verify:
    name: verify ${{{{ matrix.service }}}}
    needs: [matrix, {verify_needs}]
    if: {on_main} && fromJSON(needs.matrix.outputs.prod).include[0] != null
    runs-on: ubuntu-latest
    timeout-minutes: 10
    env:
      SLIPWAY_REGISTRY: {registry}
    strategy:
      fail-fast: false
      matrix: ${{{{ fromJSON(needs.matrix.outputs.prod) }}}}
    steps:
      - uses: actions/checkout@v4
      - uses: sigstore/cosign-installer@v3
      - {login_first}      - name: cargo xtask verify
        env:
          SERVICE: ${{{{ matrix.service }}}}
{verify_env}        run: cargo xtask verify "$SERVICE"{verify_flags}
"#,
        project = m.project.get_ref(),
        login_step = login("        "),
        login_first = login(""),
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        crate::project::Project::load().unwrap().manifest
    }

    fn hit(files: &[&str]) -> Vec<String> {
        let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        affected(&manifest(), &files).into_iter().collect()
    }

    #[test]
    fn what_a_change_affects() {
        assert_eq!(hit(&["services/gateway/src/main.rs"]), ["gateway"]);
        assert_eq!(hit(&["Cargo.lock"]), ["gateway"]);
        assert_eq!(hit(&["services/common/src/slipway_common/log.py"]), ["agent"]);
        assert_eq!(hit(&["images/python-base/Dockerfile"]), ["agent"]);
        assert_eq!(hit(&["images/rust-builder/rust-dev-loop"]), ["gateway"]);
        assert_eq!(hit(&["images/os-base/Dockerfile"]), ["agent", "gateway"]);
        assert_eq!(hit(&["slipway.toml"]), ["agent", "gateway"]);
        // A refresh of the bases rebuilds every image.
        assert_eq!(hit(&["bases.lock"]), ["agent", "gateway"]);
        assert!(hit(&["docs/building.md", "README.md", "xtask/src/ci.rs", "compose.yaml"]).is_empty());
        // A path that only starts like a service's is not it.
        assert!(hit(&["services/gateway-old/x"]).is_empty());
    }

    #[test]
    fn jobs_are_service_by_target_by_platform() {
        let m = manifest();
        let jobs = jobs(&m, &["agent".to_owned()].into());
        let names: Vec<&str> = jobs.iter().map(|j| j.job.as_str()).collect();
        assert_eq!(
            names,
            [
                "agent-local-linux-amd64",
                "agent-dev-linux-amd64",
                "agent-prod-linux-amd64"
            ]
        );
        assert!(super::jobs(&m, &BTreeSet::new()).is_empty());
        // For two platforms: a job each, on a runner of that platform; the first prod
        // job pushes (its release builds both).
        let mut m = m;
        m.build
            .platforms
            .push(toml::Spanned::new(0..0, "linux/arm64".to_owned()));
        let jobs = super::jobs(&m, &["gateway".to_owned()].into());
        let prod: Vec<(&str, &str, bool)> = jobs
            .iter()
            .filter(|j| j.target == Target::Prod)
            .map(|j| (j.job.as_str(), j.runner.as_str(), j.pushes))
            .collect();
        assert_eq!(
            prod,
            [
                ("gateway-prod-linux-amd64", "ubuntu-latest", true),
                ("gateway-prod-linux-arm64", "ubuntu-24.04-arm", false)
            ]
        );
        assert!(jobs.iter().filter(|j| j.target != Target::Prod).all(|j| !j.pushes));
    }

    /// The plan of one job on the modern engine's facts, or the legacy one's.
    fn plan_of(name: &str, modern: bool, o: &JobOptions, cosign: Option<&crate::cosign::Cosign>) -> String {
        let project = crate::project::Project::load().unwrap();
        let facts = build::test_facts(&project, modern);
        let every = project.manifest.services.keys().map(|k| k.get_ref().clone()).collect();
        let job = find(&jobs(&project.manifest, &every), name).unwrap();
        job_plan(&project, &facts, &job, o, cosign).unwrap()
    }

    const NO_PUSH: JobOptions = JobOptions {
        push: false,
        sign: false,
        key: None,
        allow_unscanned: false,
        trivy: true,
    };

    #[test]
    fn a_job_is_planned_from_the_facts_with_no_engine() {
        for modern in [true, false] {
            let plan = plan_of("gateway-prod-linux-amd64", modern, &NO_PUSH, None);
            // One bake per layer (bases first): the job's own image loaded, without a
            // provenance attestation (it would change its id), for the job's platform.
            let bakes: Vec<&str> = plan.lines().filter(|l| l.contains("buildx bake")).collect();
            assert_eq!(bakes.len(), 3, "{plan}");
            // The modern builder exports the prod image stamped (reproducible), then
            // loads it; the legacy one loads what it built.
            let load = if modern {
                "gateway-prod.oci.tar,rewrite-timestamp=true --provenance=false "
            } else {
                "--provenance=false --load "
            };
            assert!(
                bakes.last().unwrap().contains(load) && bakes.last().unwrap().trim_end().ends_with(" gateway-prod"),
                "{plan}"
            );
            assert_eq!(plan.contains("docker load --input "), modern, "{plan}");
            for step in [
                "docker run --detach --name slipway-ci-gateway-prod-linux-amd64-",
                "--read-only",
                "# image policy: gateway's Dockerfile",
                "trivy image --quiet --format json",
            ] {
                assert!(plan.contains(step), "`{step}` missing from:\n{plan}");
            }
            assert!(!plan.contains("agent-prod"), "only the job's own image: {plan}");
            assert!(!plan.contains("--push"), "{plan}");
        }
        // A local job runs the service's own checks in its local image.
        let local = plan_of("agent-local-linux-amd64", true, &NO_PUSH, None);
        for check in ["ruff format --check", "mypy", "pytest"] {
            assert!(local.contains(check), "`{check}` missing from:\n{local}");
        }
        // No Trivy: the plan says the scan is skipped.
        let untried = plan_of(
            "agent-dev-linux-amd64",
            true,
            &JobOptions {
                trivy: false,
                ..NO_PUSH
            },
            None,
        );
        assert!(
            untried.contains("# no scan of localhost:5000/platform/agent:"),
            "{untried}"
        );
    }

    #[test]
    fn a_platform_job_of_an_image_of_two_pushes_by_digest_for_the_join() {
        let mut project = crate::project::Project::load().unwrap();
        project
            .manifest
            .build
            .platforms
            .push(toml::Spanned::new(0..0, "linux/arm64".to_owned()));
        let facts = build::test_facts(&project, true);
        let every = project.manifest.services.keys().map(|k| k.get_ref().clone()).collect();
        let job = find(&jobs(&project.manifest, &every), "gateway-prod-linux-arm64").unwrap();
        assert!(pushes_by_digest(&project.manifest, &job));
        let push = JobOptions { push: true, ..NO_PUSH };
        let plan = job_plan(&project, &facts, &job, &push, None).unwrap();
        // Its own platform, exported as an archive, pushed by digest alone: no tag moves
        // (the join gives the tags to the index), recorded for `ci join`.
        assert!(
            plan.contains("skopeo copy --quiet --all --preserve-digests")
                && plan.contains("docker://localhost:5000/platform/gateway@sha256:<digest>'"),
            "{plan}"
        );
        assert!(plan.contains("ci/pushed/gateway-prod-linux-arm64.json"), "{plan}");
        assert!(!plan.contains("docker push"), "{plan}");
    }

    #[test]
    fn a_pushing_job_releases_signs_by_digest_and_attests_where_the_builder_can() {
        let cosign = crate::cosign::Cosign {
            key: Some("env://COSIGN_PRIVATE_KEY".into()),
            from: "a plan test".into(),
            identity: None,
            tlog: false,
            insecure: true,
        };
        let push = JobOptions {
            push: true,
            sign: true,
            ..NO_PUSH
        };
        let modern = plan_of("agent-prod-linux-amd64", true, &push, Some(&cosign));
        // Stamped (an OCI export with rewrite-timestamp), then loaded and pushed by tag.
        assert!(
            modern.contains("output=type=oci,dest=")
                && modern.contains(",rewrite-timestamp=true --provenance=mode=max agent-prod"),
            "{modern}"
        );
        assert!(
            modern.contains("docker load --input ")
                && modern.contains("docker push --quiet localhost:5000/platform/agent:0.1.0"),
            "{modern}"
        );
        assert!(
            modern.contains("cosign sign --yes --key env://COSIGN_PRIVATE_KEY --allow-insecure-registry")
                && modern.contains("'localhost:5000/platform/agent@sha256:<digest>'"),
            "{modern}"
        );
        // Its SBOM attested by the same digest, with the same key.
        assert!(
            modern.contains("cosign attest --yes --type cyclonedx --predicate ")
                && modern.contains("sbom/agent-prod.cdx.json --key env://COSIGN_PRIVATE_KEY"),
            "{modern}"
        );
        // BuildKit's provenance attested (signed) by the same digest, where it attaches one.
        assert!(
            modern.contains("cosign attest --yes --type slsaprovenance --predicate ")
                && modern.contains("provenance/agent-prod.slsa.json --key env://COSIGN_PRIVATE_KEY"),
            "{modern}"
        );
        // The classic store attaches no attestation: the push asks for none.
        let legacy = plan_of("agent-prod-linux-amd64", false, &push, Some(&cosign));
        assert!(!legacy.contains("slsaprovenance"), "{legacy}");
        assert!(legacy.contains("--push agent-prod"), "{legacy}");
        assert!(!legacy.contains("--provenance=mode=max"), "{legacy}");
    }
}
