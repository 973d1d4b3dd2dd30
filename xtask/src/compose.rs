//! The local stack under `docker compose`: which files (`compose.yaml`, plus
//! `compose.local.yaml` for the `local` target, `compose.override.yaml` when a checkout
//! has one, and `SLIPWAY_COMPOSE_FILES`), the project name, the variables the files
//! read, and the state of the stack's containers.
//!
//! The compose project is named explicitly (`<brand>-<project>` from the manifest;
//! `SLIPWAY_STACK_NAME` overrides it per checkout), so `down` always finds what `dev`
//! started and two checkouts can run side by side. The target of the last `dev` is kept
//! in `.<brand>/stack-target`, for `down`, `logs` and `ps`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::manifest::Target;
use crate::plan::{Output, Step};
use crate::{docker, project::Project};

/// A stack: how to address it with `docker compose`.
#[derive(Debug, Clone)]
pub struct Stack {
    pub name: String,
    pub target: Target,
    pub files: Vec<PathBuf>,
    pub env: Vec<(String, String)>,
    pub root: PathBuf,
}

/// The prefix of a service's variables (compose's, and those its image reads):
/// `billing-api` -> `BILLING_API`.
pub fn var_prefix(service: &str) -> String {
    service.to_uppercase().replace('-', "_")
}

/// The compose variable that carries a service's host port: `gateway` -> `GATEWAY_PORT`.
pub fn port_var(service: &str) -> String {
    format!("{}_PORT", var_prefix(service))
}

/// The compose variable that carries the host address a service's ports are published
/// on: `gateway` -> `GATEWAY_PUBLISH`.
pub fn publish_var(service: &str) -> String {
    format!("{}_PUBLISH", var_prefix(service))
}

impl Stack {
    /// The stack for `target`, or for the target of the last `dev` (default `local`).
    pub fn new(project: &Project, target: Option<Target>) -> Result<Stack> {
        let m = &project.manifest;
        let target = match target {
            Some(t) => t,
            None => std::fs::read_to_string(Stack::target_file(project))
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(Target::Local),
        };
        let name = std::env::var("SLIPWAY_STACK_NAME")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| format!("{}-{}", m.brand(), m.project.get_ref().replace('/', "-")));
        let mut files = vec![project.root.join("compose.yaml")];
        if target == Target::Local {
            files.push(project.root.join("compose.local.yaml"));
        }
        let override_file = project.root.join("compose.override.yaml");
        if override_file.exists() {
            files.push(override_file);
        }
        if let Ok(extra) = std::env::var("SLIPWAY_COMPOSE_FILES") {
            files.extend(extra.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
        }
        for file in &files {
            if !file.exists() {
                anyhow::bail!("the compose file {} does not exist", file.display());
            }
        }
        let env_file = project.root.join("env").join(format!("{target}.env"));
        if !env_file.is_file() {
            anyhow::bail!(
                "the `{target}` target has no environment file {}: create it with `ENVIRONMENT={target}` \
                 and the target's settings (compose reads it; it is never built into an image)",
                env_file.display()
            );
        }
        let run = crate::certs::RunAs::for_project(project);
        let mut env = vec![
            (
                "SLIPWAY_IMAGE_PREFIX".to_owned(),
                format!("{}/{}", m.registry.get_ref(), m.project.get_ref()),
            ),
            (
                "SLIPWAY_TAG".to_owned(),
                format!("{}{}", m.version.get_ref(), target.tag_suffix()),
            ),
            ("SLIPWAY_TARGET".to_owned(), target.name().to_owned()),
            ("SLIPWAY_CERTS".to_owned(), run.dir.display().to_string()),
            ("RUN_UID".to_owned(), run.uid.to_string()),
            ("RUN_GID".to_owned(), run.gid.to_string()),
            // The local Rust services compile in their container: every host CPU.
            (
                "LOCAL_BUILD_CPUS".to_owned(),
                std::thread::available_parallelism().map_or(1, |n| n.get()).to_string(),
            ),
        ];
        for (service, s) in &m.services {
            if let Some(port) = s.ports.first() {
                env.push((port_var(service.get_ref()), port.get_ref().to_string()));
            }
            env.push((publish_var(service.get_ref()), s.publish.get_ref().clone()));
            // The health-check timings compose.yaml reads, from the manifest.
            let prefix = var_prefix(service.get_ref());
            let h = &s.health;
            env.push((format!("{prefix}_HEALTH_INTERVAL"), format!("{}s", h.interval_secs)));
            env.push((format!("{prefix}_HEALTH_TIMEOUT"), format!("{}s", h.timeout_secs)));
            env.push((format!("{prefix}_HEALTH_RETRIES"), h.retries.to_string()));
            env.push((
                format!("{prefix}_HEALTH_START_PERIOD"),
                format!("{}s", h.start_period_secs),
            ));
            env.push((format!("{prefix}_MEMORY"), s.limits.memory.get_ref().clone()));
            env.push((format!("{prefix}_CPUS"), s.limits.cpus.get_ref().to_string()));
        }
        Ok(Stack {
            name,
            target,
            files,
            env,
            root: project.root.clone(),
        })
    }

    /// On engines that have it (Docker 25+, API 1.44), health checks run every
    /// [`docker::START_INTERVAL`] during the start period: without `start_interval` they
    /// would run at the engine's default of 5 s until the first success, and each
    /// service (the gateway waits for the agent) would wait that long to be called
    /// healthy. Older engines refuse the key, so it lives in a file of its own
    /// (`.<brand>/compose.start-interval.yaml`), added only for them.
    pub fn with_start_interval(mut self, project: &Project) -> Result<Stack> {
        if !docker::has_start_interval() {
            return Ok(self);
        }
        let mut yaml = String::from(
            "# Generated by `cargo xtask dev` for Docker 25+ (health checks during the start period); do not edit.\nservices:\n",
        );
        for service in project.manifest.services.keys() {
            yaml.push_str(&format!(
                "  {}:\n    healthcheck:\n      start_interval: {}\n",
                service.get_ref(),
                docker::START_INTERVAL
            ));
        }
        let file = project.state_dir().join("compose.start-interval.yaml");
        std::fs::create_dir_all(project.state_dir())?;
        crate::fs::write_if_changed(&file, &yaml)?;
        self.files.push(file);
        Ok(self)
    }

    fn target_file(project: &Project) -> PathBuf {
        project.state_dir().join("stack-target")
    }

    /// Remember the target this stack runs, for `down`, `logs` and `ps`.
    pub fn remember(&self, project: &Project) -> Result<()> {
        std::fs::create_dir_all(project.state_dir())?;
        crate::fs::write_if_changed(&Stack::target_file(project), &format!("{}\n", self.target))
    }

    /// A `docker compose` step on this stack.
    pub fn step(&self, name: impl Into<String>, args: &[&str]) -> Step {
        let mut all: Vec<String> = vec!["compose".into(), "--project-name".into(), self.name.clone()];
        for file in &self.files {
            all.push("--file".into());
            all.push(file.display().to_string());
        }
        all.extend(args.iter().map(|a| a.to_string()));
        let mut step = docker::step(name, &all.iter().map(String::as_str).collect::<Vec<_>>()).cwd(&self.root);
        for (k, v) in &self.env {
            step = step.env(k, v);
        }
        step
    }

    /// The state of every container of the stack (running or not).
    pub fn ps(&self) -> Result<Vec<ServiceState>> {
        let ran = self
            .step("list the stack's containers", &["ps", "--all", "--format", "json"])
            .output(Output::Capture)
            .run()?;
        parse_ps(&ran.stdout)
    }

    /// The last health-check outputs of a container (newest last).
    pub fn health_log(&self, container: &str) -> Vec<String> {
        let ran = docker::step(
            "read a health log",
            &["inspect", "--format", "{{json .State.Health}}", container],
        )
        .output(Output::Capture)
        .run();
        let Ok(ran) = ran else { return Vec::new() };
        let health: serde_json::Value = serde_json::from_str(ran.stdout.trim()).unwrap_or_default();
        health["Log"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|entry| {
                format!(
                    "exit {}: {}",
                    entry["ExitCode"],
                    entry["Output"].as_str().unwrap_or("").trim().replace('\n', " | ")
                )
            })
            .collect()
    }

    /// The last `lines` log lines of a service.
    pub fn last_logs(&self, service: &str, lines: usize) -> String {
        self.step(
            "read the logs",
            &["logs", "--no-color", "--tail", &lines.to_string(), service],
        )
        .output(Output::Capture)
        .run()
        .map(|r| format!("{}{}", r.stdout, r.stderr))
        .unwrap_or_default()
    }
}

/// One container of the stack, as `docker compose ps` sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceState {
    pub service: String,
    pub container: String,
    /// `running`, `exited`, `created`, ...
    pub state: String,
    /// `healthy`, `starting`, `unhealthy`, or empty without a health check.
    pub health: String,
    pub exit_code: i64,
    /// Published ports, `host -> container`.
    pub ports: Vec<String>,
}

/// `docker compose ps --format json`: one JSON object a line (compose >= 2.21) or one
/// array (older).
pub fn parse_ps(text: &str) -> Result<Vec<ServiceState>> {
    let text = text.trim();
    let values: Vec<serde_json::Value> = if text.starts_with('[') {
        serde_json::from_str(text).context("reading `docker compose ps` output")?
    } else {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .context("reading `docker compose ps` output")?
    };
    Ok(values
        .iter()
        .map(|v| ServiceState {
            service: v["Service"].as_str().unwrap_or("").to_owned(),
            container: v["Name"].as_str().unwrap_or("").to_owned(),
            state: v["State"].as_str().unwrap_or("").to_owned(),
            health: v["Health"].as_str().unwrap_or("").to_owned(),
            exit_code: v["ExitCode"].as_i64().unwrap_or(0),
            ports: v["Publishers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["PublishedPort"].as_u64().unwrap_or(0) > 0)
                .map(|p| {
                    format!(
                        "{}:{} -> {}",
                        p["URL"].as_str().unwrap_or("0.0.0.0"),
                        p["PublishedPort"],
                        p["TargetPort"]
                    )
                })
                .collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_output_in_both_shapes() {
        let line = r#"{"Name":"s-agent-1","Service":"agent","State":"running","Health":"healthy","ExitCode":0,"Publishers":[{"URL":"0.0.0.0","TargetPort":9443,"PublishedPort":9443,"Protocol":"tcp"},{"URL":"","TargetPort":5678,"PublishedPort":0,"Protocol":"tcp"}]}"#;
        let states = parse_ps(&format!("{line}\n")).unwrap();
        assert_eq!(states[0].service, "agent");
        assert_eq!(states[0].health, "healthy");
        assert_eq!(states[0].ports, ["0.0.0.0:9443 -> 9443"]);
        assert_eq!(parse_ps(&format!("[{line}]")).unwrap(), states);
        assert!(parse_ps("").unwrap().is_empty());
    }

    #[test]
    fn the_stack_is_named_and_fed_from_the_manifest() {
        let project = Project::load().unwrap();
        let stack = Stack::new(&project, Some(crate::manifest::Target::Local)).unwrap();
        assert_eq!(stack.name, "slipway-platform");
        assert!(stack.files[1].ends_with("compose.local.yaml"));
        let env: std::collections::BTreeMap<_, _> = stack.env.iter().cloned().collect();
        assert_eq!(env["SLIPWAY_TAG"], "0.1.0-local");
        assert_eq!(env["SLIPWAY_TARGET"], "local");
        assert_eq!(env["GATEWAY_PORT"], "8443");
        assert_eq!(env["AGENT_PORT"], "9443");
        assert_eq!(env["AGENT_PUBLISH"], "127.0.0.1");
        assert_eq!(env["GATEWAY_PUBLISH"], "127.0.0.1");
        assert_eq!(env["AGENT_MEMORY"], "512m");
        assert_eq!(env["GATEWAY_CPUS"], "1");
        assert_eq!(env["AGENT_HEALTH_INTERVAL"], "1s");
        assert_eq!(env["GATEWAY_HEALTH_RETRIES"], "5");
        let prod = Stack::new(&project, Some(crate::manifest::Target::Prod)).unwrap();
        assert_eq!(
            prod.files.len(),
            1 + usize::from(project.root.join("compose.override.yaml").exists())
        );
        let line = prod.step("up", &["up", "--detach"]).command_line();
        assert!(
            line.contains("compose --project-name slipway-platform --file"),
            "{line}"
        );
        assert!(line.contains("SLIPWAY_TAG=0.1.0 "), "{line}");
    }
}
