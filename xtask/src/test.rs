//! `cargo xtask test`: the single test entry point. Runs the workspace's tests and, when
//! the Docker engine is reachable, the tests that need it (`#[ignore]`d in plain
//! `cargo test`, with a reason naming this command). Ends with one line
//! `N passed, N failed` (`, N skipped` when some were skipped).

use anyhow::{Result, bail};

use crate::plan::{Output, Plan, Step};
use crate::{docker, flags, project::Project, ui};

impl flags::Test {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let engine = if self.no_engine {
            None
        } else {
            Some(docker::engine_version())
        };
        if let Some(Err(why)) = &engine {
            bail!(
                "the Docker engine is not reachable ({why}). The engine tests need it: {}; \
                 or run `cargo xtask test --no-engine` to run only the tests that need none",
                docker::START_ENGINE
            );
        }
        if let Some(Ok(version)) = &engine {
            ui::note(&format!("Docker Engine {version}: the engine tests run too"));
        } else {
            ui::warn("--no-engine: the tests that need the Docker engine are skipped");
        }
        let plan = plan(project, engine.is_some());
        if dry_run {
            print!("{}", plan.render());
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut total = Counts::default();
        let mut failed_steps = Vec::new();
        for step in &plan.steps {
            ui::step(&step.name);
            let ran = step.run_unchecked()?;
            let counts = Counts::parse(&ran.stdout);
            total.add(&counts);
            if !ran.status.success() {
                // A step that failed without a failing test (a build error) still counts.
                if counts.failed == 0 {
                    total.failed += 1;
                }
                failed_steps.push(step.name.clone());
            }
        }
        if !failed_steps.is_empty() {
            ui::error(&format!("failed: {}", failed_steps.join(", ")));
        }
        ui::note(&format!(
            "`cargo xtask test` took {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        println!("{}", total.line());
        if failed_steps.is_empty() {
            Ok(())
        } else {
            Err(Failed.into())
        }
    }
}

/// The test command failed; its output already said why.
#[derive(Debug)]
pub struct Failed;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("some tests failed (see above)")
    }
}

impl std::error::Error for Failed {}

/// The steps: the workspace's tests, with the engine tests included when asked; with the
/// engine, every service's checks and tests inside its `local` image (`cargo xtask check`).
pub fn plan(project: &Project, engine: bool) -> Plan {
    let mut plan = Plan::new();
    let xtask = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "xtask".into());
    let mut step = Step::new(
        if engine {
            "workspace tests, engine tests included"
        } else {
            "workspace tests (no engine)"
        },
        std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
    )
    // Every test binary runs even when one fails, so the closing count is whole.
    .args(["test", "--workspace", "--no-fail-fast"])
    .cwd(&project.root)
    .output(Output::Tee)
    .on_fail("a test failed or did not build: its output is above");
    if engine {
        step = step.args(["--", "--include-ignored"]);
    }
    plan.push(step);
    if !engine {
        return plan;
    }
    // Every service checked in its local image as CI checks it (`cargo xtask check`):
    // formatting, lints, then its own tests; certificates first, for the TLS tests.
    plan.push(
        Step::new("certificates for the service tests", &xtask)
            .arg("certs")
            .cwd(&project.root),
    );
    plan.push(
        Step::new("check every service in its local image", &xtask)
            .arg("check")
            .cwd(&project.root)
            .output(Output::Tee),
    );
    plan
}

/// Test counts gathered from the runners' summary lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl Counts {
    /// Sum libtest's `test result: ok. 3 passed; 0 failed; 1 ignored; ...` lines and
    /// pytest's `==== 4 passed, 1 failed in 0.52s ====` lines.
    pub fn parse(output: &str) -> Counts {
        let mut c = Counts::default();
        for line in output.lines() {
            let line = line.trim().trim_matches('=').trim();
            let Some((counts, _)) = line.rsplit_once(" in ") else {
                continue;
            };
            let parts: Vec<(u64, &str)> = counts
                .split(", ")
                .filter_map(|p| p.split_once(' ').and_then(|(n, w)| Some((n.parse().ok()?, w))))
                .collect();
            if parts.is_empty() || parts.len() != counts.split(", ").count() {
                continue;
            }
            for (n, what) in parts {
                match what {
                    "passed" => c.passed += n,
                    "failed" | "error" | "errors" => c.failed += n,
                    "skipped" | "deselected" | "xfailed" => c.skipped += n,
                    _ => {}
                }
            }
        }
        for line in output.lines().filter_map(|l| l.trim().strip_prefix("test result: ")) {
            for part in line.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(what), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(n) = n.parse::<u64>() else { continue };
                match what {
                    "passed" => c.passed += n,
                    "failed" => c.failed += n,
                    "ignored" => c.skipped += n,
                    _ => {}
                }
            }
        }
        c
    }

    fn add(&mut self, other: &Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }

    /// The closing line.
    pub fn line(&self) -> String {
        let mut line = format!("{} passed, {} failed", self.passed, self.failed);
        if self.skipped > 0 {
            line.push_str(&format!(", {} skipped", self.skipped));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_over_binaries() {
        let out = "running 3 tests\n\
                   test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\
                   test result: FAILED. 5 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s\n";
        let c = Counts::parse(out);
        assert_eq!(
            c,
            Counts {
                passed: 8,
                failed: 2,
                skipped: 1
            }
        );
        assert_eq!(c.line(), "8 passed, 2 failed, 1 skipped");
        let pytest =
            "..F.\n=================== 1 failed, 3 passed, 1 skipped in 0.52s ===================\n4 passed in 0.1s\n";
        assert_eq!(
            Counts::parse(pytest),
            Counts {
                passed: 7,
                failed: 1,
                skipped: 1
            }
        );
    }

    #[test]
    fn the_plan_includes_engine_tests_only_with_an_engine() {
        let project = Project::load().unwrap();
        let with = plan(&project, true).render();
        let without = plan(&project, false).render();
        assert!(
            with.contains("test --workspace --no-fail-fast -- --include-ignored"),
            "{with}"
        );
        assert!(!without.contains("--include-ignored"), "{without}");
    }
}
