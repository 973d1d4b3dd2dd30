//! `cargo xtask check [SERVICE...]`: each service checked the way CI checks it, inside its
//! own `local` image (the toolchain and dev dependencies the service declares, not the
//! host's): formatting, lints, type checks, then its tests. One line per service, then
//! the count. `ci run` and `cargo xtask test` run the same steps ([`steps`]).
//!
//! Python: `ruff format --check`, `ruff check`, `mypy` (configured in the service's
//! pyproject.toml), `pytest` with the certificates mounted. Rust: `cargo fmt --check`
//! (with the workspace's rustfmt.toml), `cargo clippy --all-targets -- -D warnings`,
//! `cargo test`, offline against the crates baked into the image.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::manifest::{Kind, Target};
use crate::plan::{Output, Plan, Step};
use crate::{bake, build, certs, docker, flags, project::Project, ui};

/// The steps that check `service` in its built `local` image, in order.
pub fn steps(project: &Project, service: &str) -> Vec<Step> {
    let m = &project.manifest;
    let image = bake::service_image(m, service, Target::Local).reference();
    let run = |tool: &str, extra: &[&str], command: &[&str]| {
        docker::step(format!("{service}: {tool}"), &["run", "--rm"])
            .args(extra.iter().copied())
            .arg(&image)
            .args(command.iter().copied())
            .output(Output::Tee)
            .timeout(Duration::from_secs(1800))
    };
    match m.services[service].kind {
        Kind::Python => vec![
            run("ruff format", &[], &["ruff", "format", "--check", "--no-cache", "."]),
            run("ruff check", &[], &["ruff", "check", "--no-cache", "."]),
            run("mypy", &[], &["mypy", "--cache-dir=/dev/null"]),
            pytest(project, service),
        ],
        Kind::Rust => {
            // rustfmt.toml sits at the workspace root, outside the image's context.
            let rustfmt = project.root.join("rustfmt.toml");
            let mount = format!("{}:/src/rustfmt.toml:ro", rustfmt.display());
            let fmt_extra: Vec<&str> = if rustfmt.is_file() {
                vec!["--volume", &mount]
            } else {
                vec![]
            };
            vec![
                run(
                    "rustfmt",
                    &fmt_extra,
                    &["cargo", "fmt", "--check", "--package", service],
                ),
                run(
                    "clippy",
                    &[],
                    &[
                        "cargo",
                        "clippy",
                        "--package",
                        service,
                        "--all-targets",
                        "--",
                        "-D",
                        "warnings",
                    ],
                ),
                run("cargo test", &[], &["cargo", "test", "--package", service]),
            ]
        }
    }
}

/// A Python service's pytest suite, inside its `local` image (the Python that ships),
/// with the certificates mounted, reload and the debugger off.
pub fn pytest(project: &Project, service: &str) -> Step {
    let mount = format!("{}:/certs:ro", project.certs_dir().display());
    let image = bake::service_image(&project.manifest, service, Target::Local).reference();
    let reload = format!("{}_RELOAD=0", crate::compose::var_prefix(service));
    docker::step(
        format!("{service}: pytest"),
        &[
            "run",
            "--rm",
            "--volume",
            &mount,
            "--env",
            &reload,
            "--env",
            "DEBUGPY_PORT=",
            &image,
        ],
    )
    .args(["python3", "-m", "pytest", "-p", "no:cacheprovider", "-q"])
    .output(Output::Tee)
    .timeout(Duration::from_secs(1800))
}

/// Run a service's checks ([`steps`]); the first failing step ends them. `Err` names
/// that step.
pub fn run(steps: &[Step]) -> Result<()> {
    for step in steps {
        ui::step(&step.name);
        step.run()?;
    }
    Ok(())
}

impl flags::Check {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let names = project.manifest.service_names(&self.names)?;
        if dry_run {
            println!("# certificates, then the local images of {}", names.join(", "));
            let steps = names.iter().flat_map(|n| steps(project, n)).collect();
            print!("{}", Plan { steps }.render());
            return Ok(());
        }
        let spec = certs::Spec::from_manifest(&project.manifest);
        certs::ensure(&project.certs_dir(), &spec, None)?;
        build::build(project, &names, Target::Local, None, build::Mode::default())?;
        let mut lines = Vec::new();
        let mut failed = 0;
        for name in &names {
            let started = Instant::now();
            let result = run(&steps(project, name));
            crate::plan::check_interrupted()?;
            let took = started.elapsed().as_secs_f64();
            match result {
                Ok(()) => lines.push(format!("{name}: ok ({took:.1}s)")),
                Err(err) => {
                    failed += 1;
                    lines.push(format!("{name}: FAILED: {err:#}"));
                }
            }
        }
        for line in &lines {
            println!("{line}");
        }
        println!(
            "{} checked: {} passed, {failed} failed",
            names.len(),
            names.len() - failed
        );
        if failed > 0 {
            bail!("{failed} of {} services failed their checks (see above)", names.len());
        }
        Ok(())
    }
}
