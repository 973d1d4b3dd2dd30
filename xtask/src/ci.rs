//! `cargo xtask ci matrix [--since REF] [--json]`: the CI jobs (service x target x
//! platform) as a GitHub Actions matrix. With `--since`, only the images whose inputs
//! changed between REF and HEAD: a file under a service's paths affects that service; a
//! base image's directory affects every service built on it; the manifest affects every
//! service; anything else (docs, xtask/, compose files) affects no image.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::manifest::{Kind, Manifest, TARGETS};
use crate::plan::{Output, Step};
use crate::{flags, project::Project, ui};

/// One CI job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    /// `gateway-prod-linux-amd64`: what `cargo xtask ci run` takes.
    pub job: String,
    pub service: String,
    pub target: String,
    pub platform: String,
}

/// The services whose images are built from any of the `changed` paths.
pub fn affected(m: &Manifest, changed: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let under = |file: &str, dir: &str| file == dir || file.starts_with(&format!("{}/", dir.trim_end_matches('/')));
    for file in changed {
        for (name, service) in &m.services {
            let name = name.get_ref();
            let base = match service.kind {
                Kind::Rust => "images/rust-builder",
                Kind::Python => "images/python-base",
            };
            let own = std::iter::once(&service.path)
                .chain(&service.depends_on)
                .any(|p| under(file, p.get_ref()));
            if own || file == crate::manifest::FILE || under(file, "images/os-base") || under(file, base) {
                out.insert(name.clone());
            }
        }
    }
    out
}

/// Every job of `services`, for every target and its platforms.
pub fn jobs(m: &Manifest, services: &BTreeSet<String>) -> Vec<Job> {
    let mut out = Vec::new();
    for service in services {
        for target in TARGETS {
            let settings = match target {
                "local" => &m.targets.local,
                "dev" => &m.targets.dev,
                _ => &m.targets.prod,
            };
            let platforms = settings.platforms.as_ref().unwrap_or(&m.build.platforms);
            for platform in platforms {
                let platform = platform.get_ref().clone();
                out.push(Job {
                    job: format!("{service}-{target}-{}", platform.replace('/', "-")),
                    service: service.clone(),
                    target: target.to_owned(),
                    platform,
                });
            }
        }
    }
    out
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
        }
    }
}

impl flags::Matrix {
    pub fn run(self, project: &Project, _dry_run: bool) -> Result<()> {
        let m = &project.manifest;
        let services: BTreeSet<String> = match &self.since {
            Some(since) => {
                let changed = changed_since(project, since)?;
                let hit = affected(m, &changed);
                ui::note(&format!(
                    "{} files changed since {since}: {} affected",
                    changed.len(),
                    hit.len()
                ));
                hit
            }
            None => m.services.keys().map(|k| k.get_ref().clone()).collect(),
        };
        let jobs = jobs(m, &services);
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
    }
}
