//! The `xtask` binary as a user runs it: help, bad input, an engine that is down,
//! Ctrl-C in the middle of a step, two `certs` runs at once. Tests marked
//! `#[ignore = "needs the Docker engine..."]` run under `cargo xtask test`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn xtask() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.env("NO_COLOR", "1").stdin(Stdio::null());
    cmd
}

/// The xtask with no engine to reach and the state directory `state` (no certificates
/// yet): a fresh clone on a machine whose engine is down.
fn engine_down_fresh_state(state: &Path) -> impl Fn(&[&str]) -> Output + '_ {
    move |args| {
        xtask()
            .args(args)
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env("SLIPWAY_STATE_DIR", state)
            .output()
            .unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("slipway-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn help_on_every_command() {
    for args in [
        &[][..],
        &["doctor"],
        &["test"],
        &["dev"],
        &["certs"],
        &["certs", "status"],
        &["codegen"],
    ] {
        let out = xtask().args(args).arg("--help").output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("Usage:") || help.contains("USAGE") || help.contains("OPTIONS"),
            "{args:?}: {help}"
        );
    }
    let top = xtask().arg("--help").output().unwrap();
    let top = String::from_utf8_lossy(&top.stdout);
    for command in [
        "doctor",
        "test",
        "build",
        "bootstrap",
        "lint",
        "dev",
        "certs",
        "codegen",
    ] {
        assert!(top.contains(command), "{command} missing from --help:\n{top}");
    }
}

#[test]
fn an_unknown_command_is_named() {
    let out = xtask().arg("deploy").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("deploy"), "{}", text(&out));
    let out = xtask()
        .args(["certs", "--rotate", "some"])
        .env("SLIPWAY_STATE_DIR", scratch("rotate"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("`--rotate some` is not a rotation"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_bad_manifest_lists_every_problem_and_fails() {
    let dir = scratch("manifest");
    let good = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../slipway.toml")).unwrap();
    let bad = good
        .replacen("kind = \"rust\"", "knd = \"rust\"", 1)
        .replacen("ports = [9443]", "ports = \"9443\"", 1)
        .replacen("[debian]", "[debain]", 1);
    let path = dir.join("slipway.toml");
    std::fs::write(&path, &bad).unwrap();
    let line_of = |needle: &str| bad.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
    let out = xtask()
        .args(["certs", "status"])
        .env("SLIPWAY_MANIFEST", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let msg = text(&out);
    let file = path.display();
    assert!(
        msg.contains(&format!("{file}:{}:1: unknown field `knd`", line_of("knd"))),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "{file}:{}:9: invalid type: string \"9443\"",
            line_of("ports = \"9443\"")
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("{file}:{}:2: unknown field `debain`", line_of("[debain]"))),
        "{msg}"
    );
    assert!(msg.contains("(did you mean `debian`?)"), "{msg}");
}

#[test]
fn with_the_engine_down_and_no_certificates_build_names_the_engine_first() {
    // The order a user fixes things in: the engine, then the certificates.
    let state = scratch("engine-first");
    let run = engine_down_fresh_state(&state);
    let out = run(&["build", "--target", "prod"]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("the Docker engine is not reachable"), "{said}");
    assert!(said.contains("start the Docker daemon"), "{said}");
    assert!(!said.contains("Root CA"), "the certificates before the engine: {said}");

    // `dev` too: the engine is named, and no certificate is made before it answers.
    let out = run(&["dev", "--detach"]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("the Docker engine is not reachable"), "{said}");
    assert!(
        !state.join("certs").exists(),
        "certificates made before the engine: {said}"
    );
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn doctor_with_the_engine_down_says_so_in_one_line() {
    let out = xtask()
        .arg("doctor")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let engine: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("engine ") && l.contains("not reachable"))
        .collect();
    assert_eq!(engine.len(), 1, "{stdout}");
    assert!(
        engine[0].contains("Cannot connect") || engine[0].contains("nonexistent"),
        "{stdout}"
    );
    assert!(stdout.contains("fix: start the Docker daemon"), "{stdout}");
    // The JSON says the same.
    let out = xtask()
        .args(["doctor", "--json"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let engine = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "engine")
        .unwrap();
    assert_eq!(engine["status"], "fail");
}

/// A copy of the manifest in `dir` (with `edit` applied) and, when given, a bases.lock
/// beside it refreshed `days_ago`.
fn manifest_with_lock(dir: &Path, edit: impl Fn(String) -> String, days_ago: Option<u64>) -> PathBuf {
    let good = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../slipway.toml")).unwrap();
    let path = dir.join("slipway.toml");
    std::fs::write(&path, edit(good)).unwrap();
    let lock = dir.join("bases.lock");
    let _ = std::fs::remove_file(&lock);
    if let Some(days) = days_ago {
        // `date` prints the time the lock records, as `bootstrap --refresh` writes it.
        let out = Command::new("date")
            .args(["--utc", &format!("--date=-{days} days"), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap();
        let when = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        std::fs::write(
            &lock,
            format!(
                "[root]\nimage = \"debian:trixie-slim\"\nsource = \"mmdebstrap\"\nsnapshot = \"{when}\"\nrefreshed = \"{when}\"\npackages = [\"apt 3.0.4\"]\n"
            ),
        )
        .unwrap();
    }
    path
}

/// doctor's `bases` checks, as `doctor --json` reports them.
fn bases_checks(out: &Output) -> Vec<serde_json::Value> {
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(out)));
    checks
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "bases")
        .cloned()
        .collect()
}

#[test]
fn doctor_warns_when_the_bases_are_older_than_the_limit() {
    let dir = scratch("bases-age");
    let doctor = |manifest: &Path| {
        xtask()
            .args(["doctor", "--json"])
            .env("SLIPWAY_MANIFEST", manifest)
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .output()
            .unwrap()
    };
    // Refreshed 40 days ago, the limit 30 (the default): a warning that says both, and
    // how to refresh.
    let manifest = manifest_with_lock(&dir, |m| m, Some(40));
    let bases = bases_checks(&doctor(&manifest));
    assert_eq!(bases.len(), 1, "{bases:#?}");
    assert_eq!(bases[0]["status"], "warn", "{bases:#?}");
    let detail = bases[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("refreshed 40 days ago") && detail.contains("older than debian.max-age-days = 30"),
        "{detail}"
    );
    assert!(
        bases[0]["fix"].as_str().unwrap().contains("cargo xtask build --pull"),
        "{bases:#?}"
    );
    // Refreshed 2 days ago: fine.
    let manifest = manifest_with_lock(&dir, |m| m, Some(2));
    let bases = bases_checks(&doctor(&manifest));
    assert_eq!(bases[0]["status"], "ok", "{bases:#?}");
    // The same lock with a limit of 1 day: a warning again.
    let manifest = manifest_with_lock(&dir, |m| m.replace("max-age-days = 30", "max-age-days = 1"), Some(2));
    let bases = bases_checks(&doctor(&manifest));
    assert_eq!(bases[0]["status"], "warn", "{bases:#?}");
    // No lock at all: said, with what makes one.
    let manifest = manifest_with_lock(&dir, |m| m, None);
    let bases = bases_checks(&doctor(&manifest));
    assert_eq!(bases[0]["status"], "warn", "{bases:#?}");
    assert!(bases[0]["detail"].as_str().unwrap().contains("no "), "{bases:#?}");
    assert!(
        bases[0]["fix"].as_str().unwrap().contains("bootstrap --refresh"),
        "{bases:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_refresh_of_the_bases_is_planned_with_no_engine() {
    let state = scratch("refresh-plan");
    let run = engine_down_fresh_state(&state);
    let have_mmdebstrap = Command::new("mmdebstrap").arg("--version").output().is_ok();
    for args in [
        &["--dry-run", "build", "--pull"][..],
        &["--dry-run", "bootstrap", "--refresh"][..],
    ] {
        let out = run(args);
        if !have_mmdebstrap {
            // The plan needs mmdebstrap to be there: said, with the fix.
            assert!(text(&out).contains("apt-get install mmdebstrap"), "{}", text(&out));
            continue;
        }
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        let plan = text(&out);
        for step in [
            "pull debian:trixie-slim where a registry answers",
            "bootstrap debian:trixie-slim for linux/",
            // What bases.lock records, and the reproducible root.
            "debian-trixie-snapshot.txt",
            "debian-trixie-packages.txt",
            "SOURCE_DATE_EPOCH=",
            // With no engine to ask, a modern one is assumed: the containerd store, where
            // the root is loaded from an OCI archive written by xtask.
            "debian-trixie-slim.oci.tar (in xtask)",
            "load it as debian:trixie-slim",
        ] {
            assert!(plan.contains(step), "{args:?}: `{step}` missing from:\n{plan}");
        }
        // Nothing was made.
        assert!(!state.join("build/debian-trixie-slim-amd64.tar").exists());
    }
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn test_without_an_engine_fails_and_says_why() {
    let out = xtask()
        .args(["--dry-run", "test"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(msg.contains("not reachable") && msg.contains("--no-engine"), "{msg}");
    let out = xtask().args(["--dry-run", "test", "--no-engine"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("1. workspace tests (no engine)") && plan.contains("cargo test --workspace"),
        "{plan}"
    );
}

#[test]
fn ctrl_c_stops_the_child_group_and_exits_130() {
    // A `docker` that hangs (as one talking to a stuck daemon does), with a grandchild.
    let dir = scratch("sigint");
    let marker = dir.join("grandchild.pid");
    let fake = dir.join("docker");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\nsleep 60 &\necho $! > {}\nwait\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    let child = xtask()
        .arg("doctor")
        .env("PATH", path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !marker.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the fake docker never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let grandchild: i32 = std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
    let interrupted = Instant::now();
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(
        interrupted.elapsed() < Duration::from_secs(5),
        "took {:?}",
        interrupted.elapsed()
    );
    assert!(text(&out).contains("interrupted"), "{}", text(&out));
    // Gone, or a zombie for init to reap; the group's SIGKILL lands asynchronously.
    let running = || {
        let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        !stat.is_empty() && !stat.rsplit(") ").next().unwrap_or("").starts_with('Z')
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!running(), "the grandchild {grandchild} outlived Ctrl-C");
}

#[test]
fn two_certs_runs_at_once_share_one_ca() {
    let state = scratch("certs-race");
    let runs: Vec<_> = (0..3)
        .map(|_| {
            xtask()
                .arg("certs")
                .env("SLIPWAY_STATE_DIR", &state)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let certs = state.join("certs");
    for leaf in ["gateway.crt", "agent.crt", "gateway-client.crt", "agent-client.crt"] {
        let ok = Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(certs.join("rootCA.crt"))
            .arg(certs.join(leaf))
            .output()
            .unwrap();
        assert!(ok.status.success(), "{leaf}: {}", text(&ok));
    }
    let out = xtask()
        .args(["certs", "status", "--json"])
        .env("SLIPWAY_STATE_DIR", &state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reports.as_array().unwrap().len(), 5);
    // Status fails on a problem: a truncated certificate.
    std::fs::write(certs.join("agent.crt"), "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
    let out = xtask()
        .args(["certs", "status"])
        .env("SLIPWAY_STATE_DIR", &state)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("agent.crt"), "{}", text(&out));
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn doctor_with_the_engine_up_finds_the_plugins() {
    let state = scratch("doctor-up");
    let out = xtask()
        .args(["doctor", "--json"])
        .env("SLIPWAY_STATE_DIR", &state)
        .output()
        .unwrap();
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    let status = |name: &str| {
        checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check: {checks}"))["status"]
            .clone()
    };
    for required in ["engine", "buildx", "compose", "image store", "builder"] {
        assert_eq!(status(required), "ok", "{checks:#}");
    }
    // Each capability is found by a build, and said either way: the modern engine has
    // them all; Docker 20.10's BuildKit 0.8 takes no named contexts (a warning, with its
    // cost, not a failure).
    for capability in ["named contexts", "cache export", "attestations", "multi-platform load"] {
        assert_ne!(status(capability), "fail", "{checks:#}");
    }
    // Required checks pass, so doctor passes (certs are only a warning before `certs`).
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(status("certs"), "warn");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn ci_matrix_takes_only_the_affected_images() {
    let dir = scratch("matrix");
    let clone = dir.join("repo");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=Slipway test", "-c", "user.email=test@slipway.invalid"])
            .args(args)
            .current_dir(&clone)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out));
    };
    let out = Command::new("git")
        .args(["clone", "--quiet"])
        .arg(root)
        .arg(&clone)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let commit_edit = |file: &str| {
        let path = clone.join(file);
        let mut content = std::fs::read_to_string(&path).unwrap();
        content.push_str("\n# an edit\n");
        std::fs::write(&path, content).unwrap();
        git(&["commit", "--quiet", "--all", "--message", &format!("edit {file}")]);
    };
    let matrix = |since: &str| -> Vec<String> {
        let out = xtask()
            .args(["ci", "matrix", "--since", since, "--json"])
            .env("SLIPWAY_ROOT", &clone)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        value["include"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job"].as_str().unwrap().to_owned())
            .collect()
    };
    commit_edit("services/agent/src/agent/app.py");
    assert_eq!(
        matrix("HEAD~1"),
        [
            "agent-local-linux-amd64",
            "agent-dev-linux-amd64",
            "agent-prod-linux-amd64"
        ]
    );
    commit_edit("docs/README.md");
    assert!(matrix("HEAD~1").is_empty(), "a docs-only change gave jobs");
    commit_edit("images/os-base/Dockerfile");
    assert_eq!(matrix("HEAD~1").len(), 6, "a base image change affects every service");
    // Across all three commits: both services.
    assert_eq!(matrix("HEAD~3").len(), 6);
    // The full matrix, with no --since.
    let out = xtask()
        .args(["ci", "matrix", "--json"])
        .env("SLIPWAY_ROOT", &clone)
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["include"].as_array().unwrap().len(), 6);
    let out = xtask()
        .args(["ci", "matrix", "--since", "no-such-rev"])
        .env("SLIPWAY_ROOT", &clone)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no-such-rev") && text(&out).contains("fetch-depth"),
        "{}",
        text(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scan_needs_the_image_a_report_is_of_and_says_when_trivy_is_missing() {
    let dir = scratch("scan");
    let report = dir.join("report.json");
    let json = serde_json::json!({"SchemaVersion": 2, "Results": [{"Target": "debian 13", "Vulnerabilities": [
        {"VulnerabilityID": "CVE-2026-0001", "PkgName": "libssl3t64", "InstalledVersion": "3.5.1-1", "FixedVersion": "3.5.1-2", "Severity": "LOW"}
    ]}]});
    std::fs::write(&report, json.to_string()).unwrap();
    // A report judges one image, named: never a report on its own.
    let out = xtask()
        .args(["scan", "--report"])
        .arg(&report)
        .env("SLIPWAY_STATE_DIR", dir.join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("name it"), "{}", text(&out));
    assert!(!dir.join("state/scan").exists(), "a verdict was kept");
    // No Trivy on PATH: the command says so and how to go on.
    let empty = dir.join("bin");
    std::fs::create_dir_all(&empty).unwrap();
    let git_dir = Command::new("sh")
        .args(["-c", "dirname $(command -v git)"])
        .output()
        .unwrap();
    let path = format!(
        "{}:{}",
        empty.display(),
        String::from_utf8_lossy(&git_dir.stdout).trim()
    );
    let out = xtask().arg("scan").env("PATH", path).output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("Trivy is not installed") && text(&out).contains("--report"),
        "{}",
        text(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `cargo xtask` with no signing key or OIDC token in its environment.
fn xtask_without_keys() -> Command {
    let mut cmd = xtask();
    for var in [
        "COSIGN_PRIVATE_KEY",
        "COSIGN_PUBLIC_KEY",
        "COSIGN_PASSWORD",
        "SIGSTORE_ID_TOKEN",
        "ACTIONS_ID_TOKEN_REQUEST_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn release_and_verify_refuse_what_they_cannot_do_before_anything_runs() {
    let out = xtask_without_keys().args(["release", "--sign"]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("add --push"), "{}", text(&out));

    let out = xtask_without_keys()
        .args(["release", "--push", "--sign"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("no key and no OIDC token"), "{}", text(&out));

    let out = xtask_without_keys()
        .args(["release", "--push", "--sign", "--key", "no/such/cosign.key"])
        .env("COSIGN_PASSWORD", "x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no/such/cosign.key") && text(&out).contains("does not exist"),
        "{}",
        text(&out)
    );

    let out = xtask_without_keys().args(["release", "nosuch"]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("nosuch"), "{}", text(&out));

    let out = xtask_without_keys().args(["verify"]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("no public key"), "{}", text(&out));

    let out = xtask_without_keys().args(["verify", "gatewya"]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("`gatewya` is neither a service"), "{}", text(&out));

    // The verification plan: a service name is its prod image, checked by cosign.
    let out = xtask_without_keys()
        .args(["--dry-run", "verify", "gateway", "--key", "env://SLIPWAY_TEST_PUB"])
        .env("SLIPWAY_TEST_PUB", "pem")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(
            "cosign verify --key env://SLIPWAY_TEST_PUB --allow-insecure-registry --insecure-ignore-tlog=true --output json localhost:5000/platform/gateway:0.1.0"
        ),
        "{}",
        text(&out)
    );
}

#[test]
fn ci_run_names_the_jobs_there_are() {
    let out = xtask().args(["ci", "run", "gateway-prod"]).output().unwrap();
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("no job `gateway-prod` (did you mean `gateway-prod-linux-amd64`?)"),
        "{said}"
    );
    let out = xtask()
        .args(["ci", "run", "gateway-prod-linux-amd64", "--since", "HEAD"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("not both"), "{}", text(&out));
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn the_plans_of_ci_run_and_release() {
    // Plans are made from the Root CA's fingerprint: certificates of the test's own.
    let state = scratch("plans");
    let made = xtask().arg("certs").env("SLIPWAY_STATE_DIR", &state).output().unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let out = xtask()
        .args(["--dry-run", "ci", "run", "gateway-prod-linux-amd64"])
        .env("SLIPWAY_STATE_DIR", &state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let plan = text(&out);
    // The state directory lies outside the checkout: bake is granted exactly the files
    // and contexts it reads there.
    let root_ca = format!("--allow=fs.read={}", state.join("certs/rootCA.crt").display());
    let context = format!("--allow=fs.read={}", state.join("build/context/gateway").display());
    // One bake per layer, or one on a builder that links named contexts: either way the
    // job's image is loaded, without a provenance attestation (it would change its id);
    // where the builder stamps file times, exported stamped, then loaded.
    let stamped = format!(
        "--set=gateway-prod.output=type=oci,dest={},rewrite-timestamp=true --provenance=false ",
        state.join("build/export/gateway-prod.oci.tar").display()
    );
    assert!(
        plan.lines()
            .any(|l| (l.contains("--provenance=false --load ") || l.contains(&stamped))
                && l.trim_end().ends_with(" gateway-prod")),
        "{plan}"
    );
    assert_eq!(
        plan.contains(&stamped),
        plan.contains("docker load --input "),
        "a stamped export is loaded: {plan}"
    );
    for step in [
        &root_ca,
        &context,
        "docker run --detach --name slipway-ci-gateway-prod-linux-amd64-",
        "--read-only",
        "image policy",
    ] {
        assert!(plan.contains(step), "`{step}` missing from:\n{plan}");
    }
    assert!(!plan.contains("BUILDX_BAKE_ENTITLEMENTS_FS"), "{plan}");
    assert!(
        !plan.contains("context/agent"),
        "only the job's own context is granted: {plan}"
    );
    let key = scratch("release-key").join("cosign.key");
    std::fs::write(&key, "a key").unwrap();
    let out = xtask()
        .args(["--dry-run", "release", "agent", "--push", "--sign", "--key"])
        .arg(&key)
        .env("COSIGN_PASSWORD", "")
        .env("SLIPWAY_STATE_DIR", &state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // cosign 3 also needs its signing config off for a signature with no log.
    let plan = text(&out).replace(" --use-signing-config=false", "");
    // With a full provenance attestation where the builder attaches one. Where it stamps
    // file times: exported stamped, loaded, and pushed as loaded, tag by tag.
    let stamped_push = plan.contains("rewrite-timestamp=true --provenance=mode=max agent-prod")
        && plan.contains("docker push --quiet localhost:5000/platform/agent:0.1.0");
    assert!(
        plan.contains("--push agent-prod") || plan.contains("--push --provenance=mode=max agent-prod") || stamped_push,
        "{plan}"
    );
    // Each pushed image's SBOM attested by the same digest.
    assert!(
        plan.contains("cosign attest --yes --type cyclonedx --predicate "),
        "{plan}"
    );
    assert!(
        plan.contains(&format!(
            "cosign sign --yes --key {} --allow-insecure-registry --tlog-upload=false 'localhost:5000/platform/agent@sha256:<digest>'",
            key.display()
        )),
        "{plan}"
    );
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_dir_all(key.parent().unwrap());
}

#[test]
fn each_checkout_is_found_when_the_xtask_runs_never_from_where_it_was_built() {
    // A second checkout (its manifest and its xtask package), run by the binary built for
    // this one, as `cargo xtask` does there when two clones share one CARGO_TARGET_DIR:
    // cargo names that checkout's package in CARGO_MANIFEST_DIR.
    let other = scratch("other-clone");
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    std::fs::copy(here.join("slipway.toml"), other.join("slipway.toml")).unwrap();
    std::fs::create_dir_all(other.join("xtask")).unwrap();
    std::fs::copy(here.join("xtask/Cargo.toml"), other.join("xtask/Cargo.toml")).unwrap();
    let out = xtask()
        .args(["certs"])
        .env("CARGO_MANIFEST_DIR", other.join("xtask"))
        .env_remove("SLIPWAY_ROOT")
        .env_remove("SLIPWAY_STATE_DIR")
        .env_remove("SLIPWAY_MANIFEST")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(other.join(".slipway/certs/rootCA.crt").is_file(), "{}", text(&out));

    // Run directly from inside it (no cargo): found by walking up from the directory.
    std::fs::remove_dir_all(other.join(".slipway")).unwrap();
    let out = xtask()
        .args(["certs"])
        .current_dir(other.join("xtask"))
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("SLIPWAY_ROOT")
        .env_remove("SLIPWAY_STATE_DIR")
        .env_remove("SLIPWAY_MANIFEST")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(other.join(".slipway/certs/rootCA.crt").is_file(), "{}", text(&out));
    let _ = std::fs::remove_dir_all(&other);
}

#[test]
fn a_fresh_clone_shows_its_plans_with_no_certificates_and_no_engine() {
    let state = scratch("fresh-plans");
    let run = engine_down_fresh_state(&state);
    let out = run(&["--dry-run", "dev"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("assumes a modern engine") && said.contains("placeholder"),
        "{said}"
    );
    assert!(
        said.contains("docker buildx bake") && said.contains("docker compose"),
        "{said}"
    );
    assert!(!state.join("certs").exists(), "a dry run made certificates");

    // `build --print` asks bake itself (the buildx plugin, no engine).
    let buildx = Command::new("docker").args(["buildx", "version"]).output();
    if !buildx.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped `build --print`: no docker CLI with the buildx plugin here");
        return;
    }
    let out = run(&["build", "--print"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let args = printed["target"]["os-base"]["args"].to_string();
    assert!(args.contains("placeholder-no-root-ca-yet"), "{printed:#}");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn a_target_that_does_not_exist_is_refused_by_the_flags_with_the_targets_there_are() {
    for command in ["build", "dev", "lint", "scan", "release"] {
        let out = xtask().args([command, "--target", "staging"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{command}: {}", text(&out));
        assert!(
            text(&out).contains("unknown target `staging`: use local, dev or prod"),
            "{command}: {}",
            text(&out)
        );
    }
}
