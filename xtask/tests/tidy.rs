//! Tidy: the repository checks itself. Formatting, clippy with warnings denied, a `//!`
//! doc on every xtask module, one file per command, generated files up to date, and the
//! documents a newcomer reads first in place.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(mut cmd: Command, fix: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}\n{fix}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn formatting() {
    let mut cmd = cargo();
    cmd.args(["fmt", "--all", "--check"]);
    run(cmd, "run `cargo fmt --all` and commit");
}

#[test]
fn clippy_denies_warnings() {
    // Its own target directory: the `cargo test` that runs us holds the main one.
    let mut cmd = cargo();
    cmd.args(["clippy", "--workspace", "--all-targets", "--target-dir"])
        .arg(root().join("target/tidy-clippy"))
        .args(["--", "--deny", "warnings"]);
    run(cmd, "fix what clippy says (warnings are errors here)");
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_xtask_module_has_a_doc() {
    let mut files = Vec::new();
    rust_files(&root().join("xtask"), &mut files);
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().trim_start().starts_with("//!"))
        .map(|f| f.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "start these with a `//!` doc saying what the module is for: {missing:?}"
    );
}

#[test]
fn one_file_per_command() {
    let flags = std::fs::read_to_string(root().join("xtask/src/flags.rs")).unwrap();
    let grammar = &flags[..flags.find("// generated start").unwrap()];
    let commands: Vec<&str> = grammar
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("cmd ")
                .or_else(|| l.trim().strip_prefix("default cmd "))
        })
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "xtask")
        .collect();
    assert!(commands.contains(&"doctor"), "{commands:?}");
    // Subcommands (`certs status`, `certs make`) live in their parent's file.
    let nested = ["make", "status", "matrix"];
    for command in commands.iter().filter(|c| !nested.contains(c)) {
        let file = root().join(format!("xtask/src/{command}.rs"));
        assert!(file.exists(), "command `{command}` has no file {}", file.display());
    }
}

#[test]
fn generated_files_are_current() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["codegen", "--check"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_documents_a_newcomer_reads_exist() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains("cargo xtask dev") && readme.contains("cargo xtask test"));
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    // The codemap names files that exist.
    for name in arch
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|n| n.starts_with("xtask/") && n.ends_with(".rs"))
    {
        assert!(
            root().join(name).exists(),
            "ARCHITECTURE.md names {name}, which does not exist"
        );
    }
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        ci.contains("cargo xtask test"),
        ".ci/run must run the README's test command"
    );
}

#[test]
fn no_registry_host_is_written_into_the_project() {
    // The project builds where no registry is reachable; a host name written in would
    // hide that. The manifest's `registry` (a local one) is the only name allowed.
    // (`docker.io` alone is Debian's package name for the engine, not a host.)
    let forbidden = [
        "registry-1.docker.io",
        "index.docker.io",
        "hub.docker.com",
        "deb.debian.org",
        "security.debian.org",
        "ghcr.io",
        "quay.io",
        "pypi.org",
        "pythonhosted.org",
        "crates.io",
    ];
    let out = Command::new("git")
        .args(["ls-files"])
        .current_dir(root())
        .output()
        .unwrap();
    for file in String::from_utf8_lossy(&out.stdout).lines() {
        if file == "xtask/tests/tidy.rs" || file.ends_with("Cargo.lock") || file.ends_with("uv.lock") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(root().join(file)) else {
            continue;
        };
        for host in forbidden {
            assert!(!text.contains(host), "{file} names the registry host {host}");
        }
    }
}
