//! `cargo xtask`: Slipway's typed tasks around Docker.
//!
//! `main` finds the repository root, loads the manifest, and dispatches with one `match`
//! over the parsed flags (declared in `flags.rs`). Each command lives in its own file as
//! `impl flags::Command { fn run(self, ...) }`.

mod bake;
mod bases;
mod bench;
mod bootstrap;
mod build;
mod builders;
mod certs;
mod check;
mod ci;
mod codegen;
mod compose;
mod cosign;
mod deps;
mod dev;
mod digest;
mod disk;
mod docker;
mod doctor;
mod down;
mod engine;
mod flags;
mod fs;
mod git;
mod help;
mod inputs;
mod lint;
mod load;
mod logs;
mod manifest;
mod new;
mod plan;
mod ports;
mod project;
mod prune;
mod ps;
mod release;
mod remove;
mod sbom;
mod scaffold;
mod scan;
mod test;
mod ui;
mod verify;

use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    plan::install_signal_handlers();
    let flags = match flags::Xtask::from_env() {
        Ok(flags) => flags,
        Err(err) => {
            if err.is_help() {
                let args: Vec<String> = std::env::args().skip(1).collect();
                print!("{}", help::for_command(&help::path_of(&args)));
                return ExitCode::SUCCESS;
            }
            ui::error(&format!(
                "{err}\nRun `cargo xtask --help` for the commands and their flags."
            ));
            return ExitCode::from(2);
        }
    };
    let name = flags.command_name();
    let started = Instant::now();
    let result = run(flags);
    let took = started.elapsed();
    // A command that caught the stop and finished anyway was still interrupted.
    if plan::stop_requested().is_some() {
        ui::error(&plan::Interrupted.to_string());
        return ExitCode::from(130);
    }
    match result {
        // `test` ends with its count line; `certs status` is a report.
        Ok(()) => {
            if !matches!(name, "status" | "test") {
                ui::summary(name, true, took);
            }
            ExitCode::SUCCESS
        }
        // The test run has said what failed, and must end with its count line.
        Err(err) if err.is::<test::Failed>() => ExitCode::FAILURE,
        Err(err) if err.is::<plan::Interrupted>() => {
            ui::error(&plan::Interrupted.to_string());
            ExitCode::from(130)
        }
        Err(err) => {
            // The chain in one message: "what failed: why".
            ui::error(&format!("{err:#}"));
            ui::summary(name, false, took);
            ExitCode::FAILURE
        }
    }
}

fn run(flags: flags::Xtask) -> anyhow::Result<()> {
    let dry_run = flags.dry_run;
    match flags.subcommand {
        flags::XtaskCmd::Doctor(cmd) => cmd.run(dry_run),
        flags::XtaskCmd::Test(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Build(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Builders(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Bootstrap(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Lint(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Dev(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::New(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Remove(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Check(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Deps(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Ci(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Scan(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Sbom(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Release(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Verify(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Prune(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Bench(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Down(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Logs(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Ps(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Certs(cmd) => cmd.run(&project::Project::load()?, dry_run),
        flags::XtaskCmd::Codegen(cmd) => cmd.run(&project::root(), dry_run),
    }
}

impl flags::Xtask {
    /// The command's name, for the closing summary.
    fn command_name(&self) -> &'static str {
        match &self.subcommand {
            flags::XtaskCmd::Doctor(_) => "doctor",
            flags::XtaskCmd::Test(_) => "test",
            flags::XtaskCmd::Build(_) => "build",
            flags::XtaskCmd::Builders(_) => "builders",
            flags::XtaskCmd::Bootstrap(_) => "bootstrap",
            flags::XtaskCmd::Lint(_) => "lint",
            flags::XtaskCmd::Dev(_) => "dev",
            flags::XtaskCmd::New(_) => "new",
            flags::XtaskCmd::Remove(_) => "remove",
            flags::XtaskCmd::Check(_) => "check",
            flags::XtaskCmd::Deps(_) => "deps",
            flags::XtaskCmd::Ci(_) => "ci",
            flags::XtaskCmd::Scan(_) => "scan",
            flags::XtaskCmd::Sbom(_) => "sbom",
            flags::XtaskCmd::Release(_) => "release",
            flags::XtaskCmd::Verify(_) => "verify",
            flags::XtaskCmd::Prune(_) => "prune",
            flags::XtaskCmd::Bench(_) => "bench",
            flags::XtaskCmd::Down(_) => "down",
            flags::XtaskCmd::Logs(_) => "logs",
            flags::XtaskCmd::Ps(_) => "ps",
            flags::XtaskCmd::Certs(c) => match c.subcommand {
                flags::CertsCmd::Make(_) => "certs",
                flags::CertsCmd::Status(_) => "status",
            },
            flags::XtaskCmd::Codegen(_) => "codegen",
        }
    }
}
