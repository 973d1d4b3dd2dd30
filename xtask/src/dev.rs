//! `cargo xtask dev`: the local stack, the first command a new contributor runs. Makes
//! the certificates if needed, builds what is out of date, reports a busy port before
//! anything starts, starts the stack with `docker compose`, waits until every service is
//! healthy (saying which are still starting), then prints where each one listens. In
//! the foreground it streams the logs, and Ctrl-C takes the stack down; with `--detach`
//! it returns once healthy. A stack that does not become healthy is left up for
//! inspection, with each failing service's last health-check outputs and log lines.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::compose::{ServiceState, Stack};
use crate::manifest::Target;
use crate::plan;
use crate::{build, certs, docker, flags, ports, project::Project, ui};

impl flags::Dev {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let target = self.target.unwrap_or(crate::manifest::Target::Local);
        let timeout = Duration::from_secs(self.timeout.unwrap_or(120));
        let stack = Stack::new(project, Some(target))?;
        let services: Vec<String> = project.manifest.services.keys().map(|k| k.get_ref().clone()).collect();
        if self.config {
            let config = stack.step(format!("the {target} stack's compose file"), &["config"]);
            if dry_run {
                println!("{}", config.command_line());
            } else {
                config.output(plan::Output::Inherit).run()?;
            }
            return Ok(());
        }
        if dry_run {
            let spec = certs::Spec::from_manifest(&project.manifest);
            for change in certs::plan(&project.certs_dir(), &spec, None)? {
                println!("certificate {} {}", change.what, change.file);
            }
            build::show(
                project,
                &build::Request {
                    names: Vec::new(),
                    target,
                    platforms: None,
                    push: false,
                    no_cache: false,
                    share: None,
                },
            )?;
            let up = stack.step("start the stack", &["up", "--detach", "--no-build", "--remove-orphans"]);
            println!(
                "{}",
                crate::plan::Plan { steps: vec![up] }.render().replacen("1.", "*.", 1)
            );
            return Ok(());
        }

        // In the order a user fixes things: the engine and its compose plugin, then the
        // certificates, the ports, and (in `build`) the disk.
        docker::require_engine()?;
        if docker::compose_version().is_none() {
            bail!(
                "`docker compose` is missing: install the compose plugin (Debian: `apt-get install docker-compose`; \
                 Docker's packages: docker-compose-plugin), then run `cargo xtask doctor`"
            );
        }
        // Already up and healthy: nothing to do.
        let states = stack.ps().unwrap_or_default();
        if stack_is_healthy(&states, &services) && stack_target(project) == Some(target) {
            ui::note(&format!("the stack `{}` is up and healthy already", stack.name));
            print_endpoints(project, &states);
            return Ok(());
        }

        let spec = certs::Spec::from_manifest(&project.manifest);
        let changes = certs::ensure(&project.certs_dir(), &spec, None)?;
        certs::RunAs::for_project(project).prepare(&spec)?;
        let made = changes.iter().filter(|c| c.what != "kept").count();
        if made > 0 {
            ui::note(&format!(
                "made {made} certificates in {}",
                project.certs_dir().display()
            ));
        }
        check_ports(project, &states)?;
        ui::step(&format!("build the {target} images (what changed)"));
        build::build(project, &[], target, None, build::Mode::default())?;
        stack.remember(project)?;
        let stack = stack.with_start_interval(project)?;

        let started = Instant::now();
        let up = stack
            .step(
                format!("start the stack `{}` ({target})", stack.name),
                &["up", "--detach", "--no-build", "--remove-orphans"],
            )
            .timeout(timeout);
        ui::step(&up.name);
        match up.run_unchecked() {
            Err(err) if err.is::<plan::Interrupted>() => return take_down(&stack, &err),
            Err(err) => return Err(err),
            // A non-zero `up` (a dependency that never became healthy) is diagnosed below;
            // one that created nothing has nothing to diagnose.
            Ok(ran) if !ran.status.success() && stack.ps().unwrap_or_default().is_empty() => {
                bail!(
                    "`docker compose up` failed ({}) and started nothing: its output is above",
                    plan::describe(ran.status)
                )
            }
            Ok(_) => {}
        }
        match wait_healthy(&stack, &services, timeout.saturating_sub(started.elapsed())) {
            Ok(states) => {
                ui::note(&format!(
                    "every service is healthy ({:.1}s)",
                    started.elapsed().as_secs_f64()
                ));
                print_endpoints(project, &states);
            }
            Err(err) if err.is::<plan::Interrupted>() => return take_down(&stack, &err),
            Err(err) => return Err(err),
        }
        if self.detach {
            ui::note("`cargo xtask logs --follow` streams the logs; `cargo xtask down` stops the stack");
            return Ok(());
        }
        ui::note("streaming the logs; Ctrl-C stops the stack");
        let logs = stack.step("stream the logs", &["logs", "--follow", "--tail", "20"]);
        match logs.run_unchecked() {
            Err(err) if err.is::<plan::Interrupted>() => take_down(&stack, &err),
            Err(err) => Err(err),
            Ok(_) => Ok(()),
        }
    }
}

/// The user asked to stop: take the stack down, then report the interruption.
fn take_down(stack: &Stack, err: &anyhow::Error) -> Result<()> {
    let signal = plan::take_stop();
    ui::note(&format!("stopping the stack `{}`", stack.name));
    let down = stack
        .step("take the stack down", &["down", "--remove-orphans", "--timeout", "5"])
        .run_unchecked();
    plan::restore_stop(signal.or(Some(libc::SIGINT)));
    down?;
    Err(anyhow::anyhow!("{err}"))
}

fn stack_target(project: &Project) -> Option<Target> {
    Stack::new(project, None).ok().map(|s| s.target)
}

fn stack_is_healthy(states: &[ServiceState], services: &[String]) -> bool {
    services.iter().all(|s| {
        states
            .iter()
            .any(|st| &st.service == s && st.state == "running" && st.health == "healthy")
    })
}

/// Fail, before anything starts, when a port the stack publishes is held by something
/// other than this stack.
fn check_ports(project: &Project, states: &[ServiceState]) -> Result<()> {
    let mut busy = Vec::new();
    for (name, service) in &project.manifest.services {
        for port in &service.ports {
            let port = *port.get_ref();
            let ours = states
                .iter()
                .any(|s| s.state == "running" && s.ports.iter().any(|p| p.contains(&format!(":{port} "))));
            if ours {
                continue;
            }
            if let Some(holder) = ports::in_use(port) {
                busy.push(format!("port {port} (for {}) is in use by {holder}", name.get_ref()));
            }
        }
    }
    if !busy.is_empty() {
        bail!(
            "{}: stop what holds it, or give the service another port in {}",
            busy.join("; "),
            project.manifest_path.display()
        );
    }
    Ok(())
}

/// Poll the stack until every service is healthy; say which are still starting when
/// that changes; fail early when a container exits, and at the timeout.
fn wait_healthy(stack: &Stack, services: &[String], timeout: Duration) -> Result<Vec<ServiceState>> {
    let started = Instant::now();
    let mut last_waiting = String::new();
    loop {
        plan::check_interrupted()?;
        let states = stack.ps()?;
        if stack_is_healthy(&states, services) {
            return Ok(states);
        }
        let mut waiting = Vec::new();
        let mut failed = Vec::new();
        for service in services {
            match states.iter().find(|s| &s.service == service) {
                None => waiting.push(format!("{service} (not created)")),
                Some(s) if s.state == "exited" || s.state == "dead" => failed.push(s.clone()),
                Some(s) if s.health == "unhealthy" => failed.push(s.clone()),
                Some(s) if s.health != "healthy" => waiting.push(format!(
                    "{service} ({})",
                    if s.health.is_empty() { &s.state } else { &s.health }
                )),
                Some(_) => {}
            }
        }
        let timed_out = started.elapsed() >= timeout;
        if !failed.is_empty() || timed_out {
            let culprits: Vec<ServiceState> = if failed.is_empty() {
                services
                    .iter()
                    .filter_map(|svc| {
                        states
                            .iter()
                            .find(|s| &s.service == svc && s.health != "healthy")
                            .cloned()
                    })
                    .collect()
            } else {
                failed
            };
            return Err(report_unhealthy(stack, &culprits, timed_out.then_some(timeout)));
        }
        let text = waiting.join(", ");
        if text != last_waiting {
            ui::note(&format!("waiting for {text}"));
            last_waiting = text;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn report_unhealthy(stack: &Stack, culprits: &[ServiceState], timeout: Option<Duration>) -> anyhow::Error {
    let mut msg = String::new();
    let names: Vec<&str> = culprits.iter().map(|c| c.service.as_str()).collect();
    match timeout {
        Some(t) => msg.push_str(&format!(
            "{} did not become healthy within {}s",
            names.join(", "),
            t.as_secs()
        )),
        None => msg.push_str(&format!("{} failed", names.join(", "))),
    }
    for c in culprits {
        msg.push_str(&format!(
            "\n\n{} ({}): state {}, health {}",
            c.service,
            c.container,
            c.state,
            if c.health.is_empty() { "-" } else { &c.health }
        ));
        if c.state == "exited" {
            msg.push_str(&format!(", exit code {}", c.exit_code));
        }
        let health = stack.health_log(&c.container);
        if !health.is_empty() {
            msg.push_str("\n  last health checks:");
            for h in health.iter().rev().take(3).rev() {
                msg.push_str(&format!("\n    {h}"));
            }
        }
        let logs = stack.last_logs(&c.service, 15);
        if !logs.trim().is_empty() {
            msg.push_str("\n  last log lines:");
            for line in logs.lines() {
                msg.push_str(&format!("\n    {line}"));
            }
        }
    }
    msg.push_str(&format!(
        "\n\nThe stack `{}` is left up for inspection (`cargo xtask ps`, `cargo xtask logs SERVICE`); `cargo xtask down` takes it down.",
        stack.name
    ));
    anyhow::anyhow!(msg)
}

fn print_endpoints(project: &Project, states: &[ServiceState]) {
    let certs = project.certs_dir();
    let ca = certs.join(certs::CA_CERT);
    for (name, service) in &project.manifest.services {
        let name = name.get_ref();
        let published: Vec<String> = states
            .iter()
            .filter(|s| &s.service == name)
            .flat_map(|s| s.ports.clone())
            .collect();
        let Some(port) = service.ports.first().map(|p| *p.get_ref()) else {
            continue;
        };
        let health = service.health.path.get_ref();
        // A server that requires client certificates (an mTLS server, every Python
        // service) is called with one of its clients', or its own.
        let caller = match project.manifest.certs.mtls.iter().find(|p| p.server.get_ref() == name) {
            Some(pair) => Some(pair.client.get_ref().as_str()),
            None if service.kind == crate::manifest::Kind::Python => Some(name.as_str()),
            None => None,
        };
        let client = caller
            .map(|c| format!(" --cert {0}/{c}-client.crt --key {0}/{c}-client.key", certs.display()))
            .unwrap_or_default();
        println!("{name:<10} https://localhost:{port}  ({})", published.join(", "));
        println!(
            "{:<10} curl --cacert {}{client} https://localhost:{port}{health}",
            "",
            ca.display()
        );
    }
}
