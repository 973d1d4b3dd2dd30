//! Tests on the real Docker engine: images built by `cargo xtask build` (bake), the Root
//! CA in their trust stores, the policy, the cache across unrelated changes, CA rotation,
//! and the prod services talking mTLS. `#[ignore]`d in plain `cargo test`; `cargo xtask
//! test` runs them when the engine answers.
//!
//! They share the checkout's images and state, so they run one at a time (`serial`);
//! the tests that change the CA use a state directory and a project name of their own.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

static SERIAL: Mutex<()> = Mutex::new(());

/// One engine test at a time; when it ends, how long it took (from when its turn came)
/// goes straight to stderr, past libtest's capture, so CI's log shows where its time
/// goes.
struct Serial {
    _turn: MutexGuard<'static, ()>,
    started: Instant,
}

impl Drop for Serial {
    fn drop(&mut self) {
        let name = std::thread::current().name().unwrap_or("an engine test").to_owned();
        let _ = writeln!(
            std::io::stderr(),
            "engine test {name}: {:.1}s{}",
            self.started.elapsed().as_secs_f64(),
            if std::thread::panicking() { " (failed)" } else { "" }
        );
    }
}

fn serial() -> Serial {
    let turn = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    Serial {
        _turn: turn,
        started: Instant::now(),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn xtask(args: &[&str]) -> Output {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    said_if_slow(args, started);
    out
}

fn xtask_ok(args: &[&str]) -> String {
    let out = xtask(args);
    assert!(out.status.success(), "cargo xtask {args:?} failed:\n{}", text(&out));
    text(&out)
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).stdin(Stdio::null()).output().unwrap()
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn image_id(reference: &str) -> String {
    docker_ok(&["image", "inspect", "--format", "{{.Id}}", reference])
}

fn layers(reference: &str) -> Vec<String> {
    let json = docker_ok(&["image", "inspect", "--format", "{{json .RootFS.Layers}}", reference]);
    serde_json::from_str(&json).unwrap()
}

const IMAGES: &[&str] = &[
    "localhost:5000/platform/slipway-os-base:0.1.0",
    "localhost:5000/platform/slipway-python-base:0.1.0",
    "localhost:5000/platform/slipway-python-builder:0.1.0",
    "localhost:5000/platform/slipway-rust-builder:0.1.0",
    "localhost:5000/platform/gateway:0.1.0",
    "localhost:5000/platform/agent:0.1.0",
];

/// Certificates, then every prod image (a no-op once built).
fn built() -> PathBuf {
    xtask_ok(&["certs"]);
    xtask_ok(&["build", "--target", "prod"]);
    // python-base is reached by the services' build only as a base: build it by name too.
    xtask_ok(&["build", "python-base"]);
    root().join(".slipway/certs")
}

/// A file out of an image, through `docker create` + `docker cp` (the prod gateway has
/// no shell to `cat` with).
fn file_in_image(reference: &str, path: &str) -> Vec<u8> {
    let id = docker_ok(&["create", reference]);
    let out = docker(&["cp", &format!("{id}:{path}"), "-"]);
    docker_ok(&["rm", &id]);
    assert!(out.status.success(), "{path} in {reference}: {}", text(&out));
    out.stdout
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn every_image_trusts_the_root_ca_and_holds_no_key() {
    let _serial = serial();
    let certs = built();
    let ca = std::fs::read_to_string(certs.join("rootCA.crt")).unwrap();
    let body = ca.lines().nth(1).unwrap().as_bytes().to_vec();
    let sha = {
        let out = Command::new("sha256sum")
            .arg(certs.join("rootCA.crt"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    for image in IMAGES {
        let bundle = file_in_image(image, "/etc/ssl/certs/ca-certificates.crt");
        assert!(
            contains(&bundle, &body),
            "{image}: the Root CA is not in its trust store"
        );
    }
    let label = docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"dev.slipway.ca-sha256\"}}",
        IMAGES[0],
    ]);
    assert_eq!(label, sha, "os-base carries the fingerprint of the CA file it baked");
    // No private key (the CA's, a server's, a client's, or any other) in any layer.
    let keys: Vec<Vec<u8>> = std::fs::read_dir(&certs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "key"))
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .nth(1)
                .unwrap()
                .as_bytes()
                .to_vec()
        })
        .collect();
    assert!(keys.len() >= 5);
    // grep, not a byte loop: the builders' archives are hundreds of megabytes.
    let patterns = scratch("key-patterns").join("keys.txt");
    std::fs::write(
        &patterns,
        keys.iter()
            .map(|k| format!("{}\n", String::from_utf8_lossy(k)))
            .collect::<String>(),
    )
    .unwrap();
    for image in IMAGES {
        let archive = patterns.with_file_name("image.tar");
        docker_ok(&["save", "--output", &archive.display().to_string(), image]);
        assert!(
            std::fs::metadata(&archive).unwrap().len() > 1_000_000,
            "{image}: docker save wrote too little"
        );
        let found = Command::new("grep")
            .arg("--count")
            .arg("--fixed-strings")
            .arg("--file")
            .arg(&patterns)
            .arg(&archive)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&found.stdout).trim(),
            "0",
            "{image}: a project key is in a layer"
        );
        std::fs::remove_file(&archive).unwrap();
    }
    let _ = std::fs::remove_dir_all(patterns.parent().unwrap());
    // The policy passes, with every layer of the prod services scanned.
    let out = xtask_ok(&["lint"]);
    assert_every_layer_scanned(&out, 2);
}

/// Each `N files in R of its L layers scanned` line of lint's output says R == L > 0 and
/// N > 0; there are `images` of them.
fn assert_every_layer_scanned(out: &str, images: usize) {
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("layers scanned")).collect();
    assert_eq!(lines.len(), images, "{out}");
    for line in lines {
        let numbers: Vec<usize> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        let [files, read, of] = numbers[numbers.len() - 3..] else {
            panic!("{line}")
        };
        assert!(files > 0 && read > 0 && read == of, "{line}");
    }
}

/// A scratch project of its own: a copy of the manifest with `project = NAME` (so its
/// images are named apart from the checkout's) and a state directory of its own (its own
/// CA), both in a temporary directory outside the checkout.
fn own_project(name: &str) -> (PathBuf, impl Fn(&[&str]) -> Output) {
    let dir = scratch(name);
    let manifest = std::fs::read_to_string(root().join("slipway.toml"))
        .unwrap()
        .replace("project = \"platform\"", &format!("project = \"{name}\""));
    std::fs::write(dir.join("slipway.toml"), manifest).unwrap();
    let run_dir = dir.clone();
    let run = move |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .env("SLIPWAY_STATE_DIR", run_dir.join("state"))
            .env("SLIPWAY_MANIFEST", run_dir.join("slipway.toml"))
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    (dir, run)
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn lint_catches_a_key_in_a_deleted_layer_of_either_store() {
    let _serial = serial();
    built();
    // A project of its own, whose agent image is the checkout's with a key planted in
    // one layer and deleted in the next (the merged filesystem has no key).
    let (dir, lint) = own_project("lint-test");
    std::fs::write(
        dir.join("leak.key"),
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {}\nUSER root\nCOPY leak.key /tmp/leak.key\nRUN rm /tmp/leak.key\nUSER 10001:10001\n",
            IMAGES[5]
        ),
    )
    .unwrap();
    let planted = "localhost:5000/lint-test/agent:0.1.0";
    docker_ok(&[
        "buildx",
        "build",
        "--load",
        "--provenance=false",
        "--tag",
        planted,
        &dir.display().to_string(),
    ]);
    let out = lint(&["lint", "agent"]);
    docker_ok(&["image", "rm", planted]);
    let msg = text(&out);
    assert!(
        !out.status.success(),
        "lint passed an image with a key in a layer:\n{msg}"
    );
    assert!(
        msg.contains("tmp/leak.key") && msg.contains("holds a private key"),
        "{msg}"
    );
    assert_every_layer_scanned(&msg, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn unrelated_changes_rebuild_no_layer() {
    let _serial = serial();
    built();
    let before: Vec<String> = IMAGES.iter().map(|i| image_id(i)).collect();
    // A new file under xtask/ and under docs/: outside every image's inputs.
    let markers = [
        root().join("xtask/engine-test-marker.txt"),
        root().join("docs/engine-test-marker.md"),
    ];
    for m in &markers {
        std::fs::write(m, "unrelated").unwrap();
    }
    let out = xtask(&["build", "--target", "prod"]);
    for m in &markers {
        let _ = std::fs::remove_file(m);
    }
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("every image is up to date"),
        "bake ran for an unrelated change: {}",
        text(&out)
    );
    let after: Vec<String> = IMAGES.iter().map(|i| image_id(i)).collect();
    assert_eq!(before, after, "a change under xtask/ or docs/ changed an image");

    // A new commit or branch gives every image new names (`{branch}-{sha7}`), not new
    // inputs: the images are tagged, not baked.
    let branch = "engine-test-branch";
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["build", "--target", "prod"])
        .env("NO_COLOR", "1")
        .env("SLIPWAY_BRANCH", branch)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let new_tags: Vec<String> = docker_ok(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
        .lines()
        .filter(|r| r.contains(&format!(":{branch}-")))
        .map(str::to_owned)
        .collect();
    for tag in &new_tags {
        docker_ok(&["image", "rm", tag]);
    }
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("every image is up to date"),
        "bake ran for a branch of the same inputs: {}",
        text(&out)
    );
    for image in IMAGES {
        let repository = image.rsplit_once(':').unwrap().0;
        assert!(
            new_tags
                .iter()
                .any(|t| t.starts_with(&format!("{repository}:{branch}-"))),
            "{image} was not given its {branch}-<sha> tag: {new_tags:?}\n{}",
            text(&out)
        );
    }

    // An edit in the agent bakes the agent alone (the bases and the gateway are up to
    // date), and changes no layer of the gateway.
    let (app, original, _restore) = edit_agent();
    std::fs::write(&app, format!("{original}\n# engine test edit\n")).unwrap();
    let said = xtask_ok(&["build", "--target", "prod"]);
    assert!(
        said.contains("images up to date; baking agent-prod\n"),
        "more than the agent was baked: {said}"
    );
    assert_eq!(image_id(IMAGES[4]), before[4], "the gateway changed with an agent edit");
    assert_ne!(
        image_id(IMAGES[5]),
        before[5],
        "the agent did not change with its own edit"
    );
}

/// Puts a file of the checkout back as it was, however the test ends.
struct Restore(PathBuf, String);

impl Drop for Restore {
    fn drop(&mut self) {
        std::fs::write(&self.0, &self.1).unwrap();
    }
}

/// The agent's app.py, its text, and the guard that restores it: for edit tests.
fn edit_agent() -> (PathBuf, String, Restore) {
    let app = root().join("services/agent/src/agent/app.py");
    let original = std::fs::read_to_string(&app).unwrap();
    let restore = Restore(app.clone(), original.clone());
    (app, original, restore)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("slipway-engine-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn a_missing_ca_stops_the_build_before_bake() {
    let _serial = serial();
    let state = scratch("no-ca");
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["build", "--target", "prod"])
        .env("SLIPWAY_STATE_DIR", &state)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains(&state.join("certs/rootCA.crt").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("cargo xtask certs"), "{msg}");
    assert!(!msg.contains("==> bake") && !msg.contains("#1 "), "bake ran: {msg}");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn rotating_the_ca_rebuilds_the_trust_layer_and_nothing_before_it() {
    let _serial = serial();
    built();
    // A project of its own, so the checkout's images keep their CA; its state directory
    // lies outside the checkout, as SLIPWAY_STATE_DIR may put it (bake's entitlements).
    let (dir, xtask_in) = own_project("rotation-test");
    let run = |args: &[&str]| {
        let out = xtask_in(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        text(&out)
    };
    let image = "localhost:5000/rotation-test/slipway-os-base:0.1.0";
    run(&["certs"]);
    run(&["build", "os-base"]);
    let first = layers(image);
    // A no-op build keeps every layer.
    run(&["build", "os-base"]);
    assert_eq!(layers(image), first);
    let rotated = run(&["certs", "--rotate", "all"]);
    assert!(rotated.contains("rebuild the images"), "{rotated}");
    run(&["build", "os-base"]);
    let second = layers(image);
    assert_eq!(first.len(), second.len());
    let n = first.len();
    assert_eq!(
        first[..n - 1],
        second[..n - 1],
        "layers before the trust layer were rebuilt"
    );
    assert_ne!(
        first[n - 1],
        second[n - 1],
        "the trust layer was not rebuilt for the new CA"
    );
    let tags = docker_ok(&[
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        "localhost:5000/rotation-test/slipway-os-base",
    ]);
    for tag in tags.lines() {
        docker_ok(&["rmi", tag]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn every_target_builds_and_passes_the_policy() {
    let _serial = serial();
    built();
    for target in ["local", "dev"] {
        xtask_ok(&["build", "--target", target]);
        xtask_ok(&["lint", "--target", target]);
    }
    // The prod images write each file once: no byte a later layer rewrites or removes.
    let out = xtask(&["lint", "--target", "prod"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("rewrites or removes"), "{}", text(&out));
    let user = docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}}",
        "localhost:5000/platform/agent:0.1.0-dev",
    ]);
    assert_eq!(user, "10001:10001");
    // Each stage says which it is (the environment files say it again at run time).
    for (service, target, suffix) in [
        ("agent", "local", "-local"),
        ("agent", "dev", "-dev"),
        ("agent", "prod", ""),
        ("gateway", "local", "-local"),
        ("gateway", "dev", "-dev"),
        ("gateway", "prod", ""),
    ] {
        let env = docker_ok(&[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Env}}",
            &format!("localhost:5000/platform/{service}:0.1.0{suffix}"),
        ]);
        assert!(
            env.contains(&format!("\"ENVIRONMENT={target}\"")),
            "{service} {target}: {env}"
        );
    }
    // --print is bake's own view of the generated definition.
    // Read as JSON: buildx versions print secrets as `id=..,src=..` strings or as objects.
    let out = xtask(&["build", "--print", "gateway"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("--print is not JSON ({e}): {}", text(&out)));
    assert_eq!(printed["target"]["gateway-prod"]["target"], "prod", "{printed:#}");
    // The Root CA reaches the trust layer (os-base), which the gateway is built on.
    let secrets: Vec<String> = printed["target"]["os-base"]["secret"]
        .as_array()
        .unwrap_or_else(|| panic!("no secrets: {printed:#}"))
        .iter()
        .map(|s| match s {
            serde_json::Value::String(text) => text
                .split(',')
                .find_map(|kv| kv.strip_prefix("id="))
                .unwrap_or_default()
                .to_owned(),
            other => other["id"].as_str().unwrap_or_default().to_owned(),
        })
        .collect();
    assert!(secrets.iter().any(|id| id == "root-ca"), "{printed:#}");
}

/// A Python with CycloneDX's own validator (`cyclonedx-python-lib`, which carries the
/// published JSON schemas), in a virtual environment of the test's, installed once.
fn cyclonedx_validator() -> PathBuf {
    let venv = std::env::temp_dir().join("slipway-cyclonedx-validator");
    let python = venv.join("bin/python");
    if !python.exists() {
        let made = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .output()
            .unwrap();
        assert!(made.status.success(), "python3 -m venv: {}", text(&made));
        let pip = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "cyclonedx-python-lib[json-validation]==11.12.0"])
            .output()
            .unwrap();
        assert!(pip.status.success(), "pip install cyclonedx-python-lib: {}", text(&pip));
    }
    python
}

/// CycloneDX's strict validator's verdict on `file` against the 1.5 schema: `None` when valid.
fn cyclonedx_errors(file: &Path) -> Option<String> {
    let script = "import sys\n\
from cyclonedx.schema import SchemaVersion\n\
from cyclonedx.validation.json import JsonStrictValidator\n\
error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())\n\
print('valid' if error is None else error)\n";
    let out = Command::new(cyclonedx_validator())
        .args(["-c", script])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "the validator failed to run: {}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (said != "valid").then_some(said)
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn the_sbom_of_each_prod_image_lists_what_it_carries_and_is_valid_cyclonedx() {
    let _serial = serial();
    built();
    let dir = scratch("sbom");
    let mut purls = BTreeMap::new();
    for service in ["gateway", "agent"] {
        let file = dir.join(format!("{service}.cdx.json"));
        let out = xtask_ok(&["sbom", service, "--output", file.to_str().unwrap()]);
        assert!(out.contains(&format!("-> {}", file.display())), "{out}");
        let sbom: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(
            cyclonedx_errors(&file),
            None,
            "{service}'s SBOM is not valid CycloneDX 1.5"
        );
        assert_eq!(
            sbom["metadata"]["component"]["name"],
            format!("localhost:5000/platform/{service}")
        );
        // It describes this very image.
        let id = image_id(&format!("localhost:5000/platform/{service}:0.1.0"));
        assert_eq!(
            sbom["metadata"]["component"]["hashes"][0]["content"].as_str(),
            id.strip_prefix("sha256:"),
            "{service}"
        );
        let list: Vec<String> = sbom["components"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["purl"].as_str().map(str::to_owned))
            .collect();
        purls.insert(service, list);
        // The same image gives the same document.
        let again = dir.join(format!("{service}-again.cdx.json"));
        xtask_ok(&["sbom", service, "--output", again.to_str().unwrap()]);
        assert_eq!(
            std::fs::read(&file).unwrap(),
            std::fs::read(&again).unwrap(),
            "{service}"
        );
    }
    // The gateway (FROM scratch): its crates from the binary, its libraries' packages.
    let has = |service: &str, prefix: &str| {
        purls[service]
            .iter()
            .any(|p| p.starts_with(prefix) && p[prefix.len()..].chars().next().is_some_and(|c| c.is_ascii_digit()))
    };
    for krate in ["hyper", "tokio", "rustls"] {
        assert!(
            has("gateway", &format!("pkg:cargo/{krate}@")),
            "{krate}: {:?}",
            purls["gateway"]
        );
    }
    assert!(has("gateway", "pkg:deb/debian/libc6@"), "{:?}", purls["gateway"]);
    assert!(
        purls["gateway"].iter().all(|p| !p.starts_with("pkg:deb/debian/apt@")),
        "the gateway holds no apt: {:?}",
        purls["gateway"]
    );
    // The agent: Debian's Python and the locked distributions.
    assert!(has("agent", "pkg:deb/debian/python3@"), "{:?}", purls["agent"]);
    for dist in ["uvicorn", "starlette"] {
        assert!(
            has("agent", &format!("pkg:pypi/{dist}@")),
            "{dist}: {:?}",
            purls["agent"]
        );
    }
    // `-` prints it; a device is never replaced by a file.
    let printed = xtask(&["sbom", "gateway", "--output", "-"]);
    assert!(printed.status.success(), "{}", text(&printed));
    let from_stdout: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(from_stdout["bomFormat"], "CycloneDX");
    let out = xtask(&["sbom", "gateway", "--output", "/dev/null"]);
    assert!(
        !out.status.success() && text(&out).contains("/dev/null is not a regular file"),
        "{}",
        text(&out)
    );
    assert!(
        !std::fs::metadata("/dev/null").unwrap().is_file(),
        "/dev/null was replaced"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A container removed when the test ends, however it ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "--force", &self.0]);
    }
}

struct Network(String);

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.0]);
    }
}

fn host_port(container: &str, port: &str) -> u16 {
    let mapping = docker_ok(&["port", container, port]);
    mapping
        .lines()
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn wait_healthy(container: &str) -> Duration {
    let started = Instant::now();
    loop {
        let status = docker_ok(&["inspect", "--format", "{{.State.Health.Status}}", container]);
        if status == "healthy" {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{container} is {status}: {}",
            docker_ok(&["logs", container])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// GET over TLS with rustls, trusting `ca`, presenting `client` when given; data is
/// exchanged, so a refused client certificate shows as an error.
fn https_get(port: u16, name: &str, certs: &Path, client: Option<&str>, path: &str) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(certs.join("rootCA.crt")).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(stem) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(certs.join(format!("{stem}.crt"))).unwrap()],
                PrivateKeyDer::from_pem_file(certs.join(format!("{stem}.key"))).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), ServerName::try_from(name.to_owned()).unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    match tls.read_to_string(&mut response) {
        Ok(_) => {}
        // Servers that close without close_notify still sent their answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    if response.is_empty() {
        return Err("no answer".into());
    }
    Ok(response)
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn prod_services_talk_mtls_and_stop_on_sigterm() {
    let _serial = serial();
    let certs = built();
    let tag = format!("slipway-engine-{}", std::process::id());
    let _net = Network(docker_ok(&["network", "create", &tag]));
    let uid = format!("{}:{}", unsafe { libc::getuid() }, unsafe { libc::getgid() });
    let mount = format!("{}:/certs:ro", certs.display());
    let agent = Container(format!("{tag}-agent"));
    docker_ok(&[
        "run",
        "--detach",
        "--name",
        &agent.0,
        "--network",
        &tag,
        "--network-alias",
        "agent",
        "--user",
        &uid,
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--volume",
        &mount,
        "--publish",
        "127.0.0.1::9443",
        "localhost:5000/platform/agent:0.1.0",
    ]);
    let gateway = Container(format!("{tag}-gateway"));
    docker_ok(&[
        "run",
        "--detach",
        "--name",
        &gateway.0,
        "--network",
        &tag,
        "--user",
        &uid,
        "--read-only",
        "--volume",
        &mount,
        "--env",
        "UPSTREAM_URL=https://agent:9443",
        "--publish",
        "127.0.0.1::8443",
        "localhost:5000/platform/gateway:0.1.0",
    ]);
    wait_healthy(&agent.0);
    wait_healthy(&gateway.0);
    let gw = host_port(&gateway.0, "8443");
    let ag = host_port(&agent.0, "9443");

    // Through the gateway: its /health sees the agent, /api reaches it over mTLS.
    let health = https_get(gw, "localhost", &certs, None, "/health").unwrap();
    assert!(
        health.starts_with("HTTP/1.1 200")
            && health.contains("\"status\":\"ok\"")
            && health.contains("\"upstream\":{\"host\":\"agent\",\"status\":\"ok\"}"),
        "{health}"
    );
    let hello = https_get(gw, "localhost", &certs, None, "/api/hello").unwrap();
    assert!(hello.contains("hello from the agent"), "{hello}");
    // The agent directly: the gateway's client certificate is accepted, none is refused.
    let direct = https_get(ag, "localhost", &certs, Some("gateway-client"), "/api/hello").unwrap();
    assert!(direct.contains("hello from the agent"), "{direct}");
    let refused = https_get(ag, "localhost", &certs, None, "/api/hello");
    assert!(
        refused.is_err(),
        "the agent answered a client with no certificate: {refused:?}"
    );
    // A server certificate is not a client certificate.
    let refused = https_get(ag, "localhost", &certs, Some("gateway"), "/api/hello");
    assert!(
        refused.is_err(),
        "the agent took a server certificate as a client's: {refused:?}"
    );

    // SIGTERM: both drain and exit 0, well before docker's 10 s SIGKILL.
    for c in [&gateway.0, &agent.0] {
        let started = Instant::now();
        docker_ok(&["stop", c]);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "{c} took {took:?} to stop");
        assert_eq!(
            docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", c]),
            "0",
            "{}",
            docker_ok(&["logs", c])
        );
    }
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn a_service_without_its_certificates_refuses_to_start_in_one_line() {
    let _serial = serial();
    built();
    for (image, missing) in [
        ("localhost:5000/platform/gateway:0.1.0", "/certs/gateway.crt"),
        ("localhost:5000/platform/agent:0.1.0", "/certs/agent.crt"),
    ] {
        let out = docker(&["run", "--rm", image]);
        assert!(!out.status.success(), "{image} started with no certificates");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{image}: {stderr}");
        assert!(
            lines[0].contains(missing) && lines[0].contains("missing"),
            "{image}: {stderr}"
        );
    }
}

/// A stack of the tests' own: its own compose project name and host ports (a copy of the
/// manifest), the checkout's images and certificates.
struct TestStack {
    name: String,
    manifest: PathBuf,
    gateway_port: u16,
    agent_port: u16,
}

impl TestStack {
    fn new(tag: &str) -> TestStack {
        let dir = scratch(&format!("stack-{tag}"));
        let base = 20000 + (std::process::id() % 20000) as u16;
        let (gateway_port, agent_port) = (base, base + 1);
        let manifest = std::fs::read_to_string(root().join("slipway.toml"))
            .unwrap()
            .replace("ports = [8443]", &format!("ports = [{gateway_port}]"))
            .replace("ports = [9443]", &format!("ports = [{agent_port}]"));
        std::fs::write(dir.join("slipway.toml"), manifest).unwrap();
        TestStack {
            name: format!("slipway-test-{tag}-{}", std::process::id()),
            manifest: dir.join("slipway.toml"),
            gateway_port,
            agent_port,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.args(args)
            .env("SLIPWAY_MANIFEST", &self.manifest)
            .env("SLIPWAY_STACK_NAME", &self.name)
            // The debugger port of the local target, away from a developer's stack.
            .env("DEBUGPY_HOST_PORT", (self.agent_port + 1).to_string())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// No container and no network of the stack is left (`down` keeps volumes: see
    /// [`TestStack::volumes`]).
    fn assert_nothing_left(&self) {
        let containers = self.containers();
        assert!(containers.is_empty(), "containers left: {containers:?}");
        let networks = self.networks();
        assert!(networks.is_empty(), "networks left: {networks:?}");
    }

    /// The stack's volumes (the local gateway's build output).
    fn volumes(&self) -> Vec<String> {
        let filter = format!("label=com.docker.compose.project={}", self.name);
        docker_ok(&["volume", "ls", "--quiet", "--filter", &filter])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn containers(&self) -> Vec<String> {
        let filter = format!("label=com.docker.compose.project={}", self.name);
        docker_ok(&["ps", "--all", "--quiet", "--filter", &filter])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn networks(&self) -> Vec<String> {
        docker_ok(&["network", "ls", "--quiet", "--filter", &format!("name={}", self.name)])
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        let _ = self.run(&["down", "--volumes"]);
        let _ = std::fs::remove_dir_all(self.manifest.parent().unwrap());
    }
}

/// `docker compose config` of the checkout's `files` for `target`, as JSON, with the
/// variables `dev` would set that have no default.
fn compose_config(files: &[&str], target: &str) -> serde_json::Value {
    let mut args = vec!["compose"];
    for f in files {
        args.extend(["--file", f]);
    }
    args.extend(["config", "--format", "json"]);
    let out = Command::new("docker")
        .args(&args)
        .current_dir(root())
        .env("SLIPWAY_IMAGE_PREFIX", "registry/project")
        .env("SLIPWAY_TAG", "tag")
        .env("SLIPWAY_TARGET", target)
        .env("SLIPWAY_CERTS", "/certs")
        .output()
        .unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn the_compose_file_and_the_manifest_name_the_same_services() {
    let _serial = serial();
    let config = compose_config(&["compose.yaml", "compose.local.yaml"], "local");
    let mut in_compose: Vec<String> = config["services"].as_object().unwrap().keys().cloned().collect();
    in_compose.sort();
    let manifest = std::fs::read_to_string(root().join("slipway.toml")).unwrap();
    let mut in_manifest: Vec<String> = manifest
        .lines()
        .filter_map(|l| {
            l.strip_prefix("[services.")
                .and_then(|r| r.strip_suffix(']'))
                .map(str::to_owned)
        })
        .collect();
    in_manifest.sort();
    assert_eq!(
        in_compose, in_manifest,
        "compose.yaml and slipway.toml disagree on the services"
    );
    for (name, service) in config["services"].as_object().unwrap() {
        assert_eq!(
            service["init"], true,
            "{name}: init: true, so signals reach the process"
        );
        let mounts = service["volumes"].to_string();
        assert!(
            mounts.contains("\"target\":\"/certs\"") && mounts.contains("\"read_only\":true"),
            "{name}: {mounts}"
        );
        assert!(service["healthcheck"]["test"].is_array(), "{name} has no health check");
    }
    // Every published port, the debugger's included, is on loopback, in every target
    // (`local` adds compose.local.yaml; dev and prod use compose.yaml alone).
    for (target, files) in [
        ("local", &["compose.yaml", "compose.local.yaml"][..]),
        ("dev", &["compose.yaml"]),
        ("prod", &["compose.yaml"]),
    ] {
        let config = compose_config(files, target);
        let mut published = 0;
        for (name, service) in config["services"].as_object().unwrap() {
            // Least privilege: no capability, nothing gained through setuid, bounded memory
            // and CPU, a read-only root filesystem, and the host user (never root), the
            // local gateway's toolchain included (its output is in a volume).
            assert_eq!(service["cap_drop"], serde_json::json!(["ALL"]), "{target}: {name}");
            assert_eq!(
                service["security_opt"],
                serde_json::json!(["no-new-privileges:true"]),
                "{target}: {name}"
            );
            assert!(
                service["mem_limit"].as_str().is_some_and(|m| !m.is_empty() && m != "0"),
                "{target}: {name}: {service}"
            );
            assert!(
                service["cpus"].as_f64().is_some_and(|c| c > 0.0),
                "{target}: {name}: {service}"
            );
            assert_eq!(service["read_only"], true, "{target}: {name}");
            let user = service["user"].as_str().unwrap_or("");
            assert!(
                !user.is_empty() && !user.starts_with("0:") && user != "0" && user != "root",
                "{target}: {name} runs as `{user}`"
            );
            // The target's environment file, read by compose (never baked).
            assert_eq!(service["environment"]["ENVIRONMENT"], target, "{target}: {name}");
            for port in service["ports"].as_array().into_iter().flatten() {
                assert_eq!(
                    port["host_ip"], "127.0.0.1",
                    "{target}: {name} publishes {port} beyond loopback"
                );
                published += 1;
            }
        }
        assert!(published >= 2, "{target}: {config:#}");
        // What a user reads: `dev --config`, with the variables `dev` sets.
        let shown = xtask_ok(&["dev", "--target", target, "--config"]);
        assert_eq!(
            shown.matches("host_ip: 127.0.0.1").count(),
            published,
            "{target}:\n{shown}"
        );
        assert!(
            !shown.contains("user: 0:") && shown.contains("user: "),
            "{target}:\n{shown}"
        );
        assert!(shown.contains(&format!("ENVIRONMENT: {target}")), "{target}:\n{shown}");
        assert!(
            !shown.contains("certs:/certs") && shown.contains("run-certs/agent"),
            "{target}:\n{shown}"
        );
    }
    // Started after the agent, and healthy beside it (not after it): `dev` waits for both.
    assert_eq!(
        config["services"]["gateway"]["depends_on"]["agent"]["condition"],
        "service_started"
    );
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn dev_brings_the_stack_up_healthy_and_down_leaves_nothing() {
    let _serial = serial();
    let certs = built();
    let stack = TestStack::new("up");
    let out = stack.run(&["dev", "--detach"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("every service is healthy"), "{said}");
    assert!(
        said.contains(&format!("https://localhost:{}", stack.gateway_port)),
        "{said}"
    );

    // Through the gateway, over mTLS, to the agent.
    let hello = https_get(stack.gateway_port, "localhost", &certs, None, "/api/hello").unwrap();
    assert!(hello.contains("hello from the agent"), "{hello}");
    let direct = https_get(stack.agent_port, "localhost", &certs, None, "/health");
    assert!(direct.is_err(), "the agent answered without a client certificate");

    // A second `dev` is a no-op that says the stack is healthy.
    let again = stack.run(&["dev", "--detach"]);
    assert!(
        again.status.success() && text(&again).contains("up and healthy already"),
        "{}",
        text(&again)
    );
    let ps = stack.run(&["ps", "--json"]);
    let states: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(states.as_array().unwrap().len(), 2, "{states}");

    // A Python edit is served without a restart (local target: reload).
    let agent = format!("{}-agent-1", stack.name);
    let started = docker_ok(&["inspect", "--format", "{{.State.StartedAt}}", &agent]);
    let (app, original, _restore) = edit_agent();
    std::fs::write(
        &app,
        original.replace("hello from the agent", "hello from the edited agent"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = https_get(stack.gateway_port, "localhost", &certs, None, "/api/hello").unwrap_or_default();
        if answer.contains("hello from the edited agent") {
            break;
        }
        assert!(Instant::now() < deadline, "the edit was not served: {answer}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        docker_ok(&["inspect", "--format", "{{.State.StartedAt}}", &agent]),
        started,
        "the agent was restarted"
    );

    // The target's environment file reached both services.
    let health = https_get(stack.gateway_port, "localhost", &certs, None, "/health").unwrap();
    assert!(health.contains("\"environment\":\"local\""), "{health}");

    let down = stack.run(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    stack.assert_nothing_left();
    // `down` keeps the local gateway's build output (the next `dev` reuses it);
    // `down --volumes` removes it.
    let kept = stack.volumes();
    assert!(kept.iter().any(|v| v.ends_with("gateway-target")), "{kept:?}");
    let down = stack.run(&["down", "--volumes"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(stack.volumes().is_empty(), "{:?}", stack.volumes());
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn an_unhealthy_service_is_named_with_its_health_log_and_left_up() {
    let _serial = serial();
    built();
    let stack = TestStack::new("sick");
    let sick = stack.manifest.with_file_name("sick.yaml");
    std::fs::write(
        &sick,
        "services:\n  agent:\n    healthcheck:\n      test: [\"CMD\", \"python3\", \"-c\", \"print('agent is sick'); raise SystemExit(1)\"]\n      interval: 1s\n      retries: 2\n      start_period: 0s\n",
    )
    .unwrap();
    let out = stack
        .command(&["dev", "--detach", "--timeout", "60"])
        .env("SLIPWAY_COMPOSE_FILES", &sick)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("agent") && said.contains("unhealthy"), "{said}");
    assert!(
        said.contains("last health checks") && said.contains("agent is sick"),
        "{said}"
    );
    assert!(said.contains("last log lines"), "{said}");
    assert!(said.contains("cargo xtask down"), "{said}");
    assert!(
        !stack.containers().is_empty(),
        "the stack was not left up for inspection"
    );
    let down = stack
        .command(&["down"])
        .env("SLIPWAY_COMPOSE_FILES", &sick)
        .output()
        .unwrap();
    assert!(down.status.success(), "{}", text(&down));
    assert!(stack.containers().is_empty());
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn a_busy_port_is_reported_before_anything_starts() {
    let _serial = serial();
    built();
    let stack = TestStack::new("busy");
    let _holder = std::net::TcpListener::bind(("0.0.0.0", stack.gateway_port)).unwrap();
    let out = stack.run(&["dev", "--detach"]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains(&format!("port {} (for gateway) is in use by", stack.gateway_port)),
        "{said}"
    );
    assert!(said.contains(&format!("pid {}", std::process::id())), "{said}");
    assert!(stack.containers().is_empty(), "containers were started");
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn ctrl_c_in_the_foreground_takes_the_stack_down() {
    let _serial = serial();
    built();
    let stack = TestStack::new("fg");
    let mut child = stack
        .command(&["dev"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        let mut reader = std::io::BufReader::new(stderr);
        let mut line = String::new();
        while std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) > 0 {
            all.push_str(&line);
            if line.contains("streaming the logs") {
                let _ = tx.send(());
            }
            line.clear();
        }
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("dev never got to streaming the logs");
    assert_eq!(stack.containers().len(), 2);
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    stack.assert_nothing_left();
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn ci_runs_one_job_as_the_workflow_does() {
    let _serial = serial();
    built();
    let out = xtask_ok(&["ci", "run", "agent-prod-linux-amd64"]);
    for expected in [
        "job agent-prod-linux-amd64",
        "localhost:5000/platform/agent:0.1.0 is healthy after",
        "image policy of localhost:5000/platform/agent:0.1.0",
        "agent-prod-linux-amd64",
    ] {
        assert!(out.contains(expected), "`{expected}` missing from:\n{out}");
    }
    // The job's container is gone.
    let left = docker_ok(&["ps", "--all", "--quiet", "--filter", "name=slipway-ci-"]);
    assert_eq!(left, "", "ci run left containers behind");
    // The same command with a job that does not exist names the jobs there are.
    let out = xtask(&["ci", "run", "agent-prod"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("did you mean `agent-prod-linux-amd64`?"),
        "{}",
        text(&out)
    );
}

/// A registry on a loopback port (Debian's `docker-registry`), its storage in a scratch
/// directory; stopped, and the images tagged for it removed, however the test ends.
struct Registry {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

impl Registry {
    fn start() -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = scratch("registry");
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  delete:\n    enabled: true\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let child = Registry::spawn(&dir);
        let registry = Registry { child, port, dir };
        registry.wait_up();
        registry
    }

    fn spawn(dir: &Path) -> std::process::Child {
        Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("log"))
                    .unwrap(),
            )
            .spawn()
            .expect("docker-registry (../shared/tools/engine-up.sh installs it)")
    }

    fn wait_up(&self) {
        let started = Instant::now();
        while self.get("/v2/").is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "the registry did not answer"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kill the registry (its storage stays).
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again on the same port, with the same storage.
    fn restart(&mut self) {
        self.stop();
        self.child = Registry::spawn(&self.dir);
        self.wait_up();
    }

    /// A GET of the registry API: the headers and the body.
    fn get(&self, path: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json\r\nConnection: close\r\n\r\n",
            self.host()
        )?;
        let mut out = String::new();
        stream.read_to_string(&mut out)?;
        Ok(out)
    }

    /// The manifest (or index) the registry serves for `repository:tag`, as JSON.
    fn manifest(&self, repository: &str, tag: &str) -> serde_json::Value {
        let response = self.get(&format!("/v2/{repository}/manifests/{tag}")).unwrap();
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{repository}:{tag}: {e}: {response}"))
    }

    /// The digest the registry serves for `repository:tag`.
    fn digest(&self, repository: &str, tag: &str) -> String {
        let response = self.get(&format!("/v2/{repository}/manifests/{tag}")).unwrap();
        response
            .lines()
            .find_map(|l| l.strip_prefix("Docker-Content-Digest: "))
            .unwrap_or_else(|| panic!("no digest for {repository}:{tag}:\n{response}"))
            .trim()
            .to_owned()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let prefix = format!("{}/", self.host());
        let listed = docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
        let ours: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .map(str::to_owned)
            .collect();
        if !ours.is_empty() {
            let mut args = vec!["image", "rm", "--force"];
            args.extend(ours.iter().map(String::as_str));
            let _ = docker(&args);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // The verdicts and the release record the test made for this registry.
        let state = root().join(".slipway");
        let mangled = self.host().replace([':', '/'], "_");
        for entry in std::fs::read_dir(state.join("scan")).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&mangled) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let record = state.join("release/prod.json");
        if let Ok(text) = std::fs::read_to_string(&record) {
            let kept: Vec<serde_json::Value> = serde_json::from_str::<Vec<serde_json::Value>>(&text)
                .unwrap_or_default()
                .into_iter()
                .filter(|r| !r["image"].as_str().unwrap_or("").starts_with(&prefix))
                .collect();
            let _ = std::fs::write(&record, serde_json::to_string_pretty(&kept).unwrap());
        }
    }
}

/// doctor's verdict on one capability of the builder: `ok`, `warn`, and its detail.
fn capability(name: &str) -> (String, String) {
    let out = xtask(&["doctor", "--json"]);
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    let check = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check: {checks:#}"));
    (
        check["status"].as_str().unwrap().to_owned(),
        check["detail"].as_str().unwrap().to_owned(),
    )
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn two_builds_of_one_commit_with_no_cache_give_the_same_prod_image() {
    let _serial = serial();
    built();
    let agent = "localhost:5000/platform/agent:0.1.0";
    let (status, detail) = capability("reproducible timestamps");
    if status != "ok" {
        // Docker 20.10's BuildKit 0.8 cannot stamp file times: doctor says so, and why
        // two builds differ.
        assert!(
            detail.starts_with("no (") && detail.contains("two builds of one commit"),
            "{detail}"
        );
        return;
    }
    let config = |reference: &str| docker_ok(&["image", "inspect", "--format", "{{json .RootFS.Layers}}", reference]);
    let before = (image_id(agent), config(agent));
    // Every step run again (a second or more after the cached build, so anything stamped
    // with the build's time would differ): the same image, the same layers.
    std::thread::sleep(Duration::from_millis(1100));
    xtask_ok(&["build", "agent", "--target", "prod", "--no-cache"]);
    assert_eq!(
        (image_id(agent), config(agent)),
        before,
        "a build with no cache gave another image"
    );
    // Its files carry the commit's time, not the build's.
    let created = docker_ok(&["image", "inspect", "--format", "{{.Created}}", agent]);
    let out = xtask(&["lint", "agent", "--target", "prod"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("not reproducible"), "{created}: {}", text(&out));
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn doctor_warns_when_the_root_image_in_the_store_is_older_than_the_limit() {
    let _serial = serial();
    built();
    // A limit of 0 days: the root image the build made (or found) is older than that.
    let dir = scratch("doctor-root-age");
    let manifest = dir.join("slipway.toml");
    let text_of_manifest = std::fs::read_to_string(root().join("slipway.toml"))
        .unwrap()
        .replace("max-age-days = 30", "max-age-days = 0");
    std::fs::write(&manifest, text_of_manifest).unwrap();
    std::fs::copy(root().join("bases.lock"), dir.join("bases.lock")).unwrap();
    let warnings = |out: &Output| -> Vec<String> {
        let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(out)));
        checks
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["name"] == "bases" && c["status"] == "warn")
            .map(|c| c["detail"].as_str().unwrap().to_owned())
            .collect()
    };
    let said = warnings(&xtask_with(&manifest, &["doctor", "--json"]));
    assert!(
        said.iter()
            .any(|d| d.starts_with("debian:trixie-slim in the image store was made") && d.ends_with("max-age-days = 0")),
        "{said:#?}"
    );
    // Within the limit, it is not named.
    let lenient = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("max-age-days = 0", "max-age-days = 36500");
    std::fs::write(&manifest, lenient).unwrap();
    let said = warnings(&xtask_with(&manifest, &["doctor", "--json"]));
    assert!(
        !said.iter().any(|d| d.contains("in the image store was made")),
        "{said:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A second Docker engine on this machine, a builder node: the modern dockerd with its
/// own data root, exec root, pid file and bridge, listening on a loopback TCP port with
/// mutual TLS (the certificates `cargo xtask certs` issued for `build.builders.NAME`).
/// Stopped, its bridge and directories removed, however the test ends.
struct Node {
    child: std::process::Child,
    dir: PathBuf,
    exec_root: PathBuf,
    bridge: String,
}

impl Node {
    const DOCKERD: &'static str = "/opt/slipway-engine/modern/bin/dockerd";

    fn start(name: &str, port: u16, certs: &Path) -> Node {
        let dir = scratch(&format!("node-{name}"));
        let exec_root = PathBuf::from(format!("/run/slipway-{name}"));
        let bridge = format!("slw-{name}");
        let _ = Command::new("ip").args(["link", "delete", &bridge]).output();
        for args in [
            vec!["link", "add", &bridge, "type", "bridge"],
            vec!["addr", "add", "10.231.7.1/24", "dev", &bridge],
            vec!["link", "set", &bridge, "up"],
        ] {
            let out = Command::new("ip").args(&args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {}", text(&out));
        }
        let config = serde_json::json!({
            "features": { "containerd-snapshotter": true },
            "data-root": dir.join("data"),
            "exec-root": exec_root,
            "pidfile": dir.join("docker.pid"),
            "hosts": [format!("tcp://127.0.0.1:{port}")],
            "tlsverify": true,
            "tlscacert": certs.join("rootCA.crt"),
            "tlscert": certs.join(format!("builder-{name}.crt")),
            "tlskey": certs.join(format!("builder-{name}.key")),
            "bridge": bridge,
            "iptables": false,
        });
        std::fs::write(dir.join("daemon.json"), config.to_string()).unwrap();
        let path = format!("/opt/slipway-engine/modern/bin:{}", std::env::var("PATH").unwrap());
        let child = Command::new(Node::DOCKERD)
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("dockerd.log")).unwrap())
            .spawn()
            .expect("the modern dockerd (../shared/tools/engine-up.sh installs it)");
        Node {
            child,
            dir,
            exec_root,
            bridge,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SAFETY: signalling the dockerd this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip").args(["link", "delete", &self.bridge]).output();
        let _ = std::fs::remove_dir_all(&self.exec_root);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Of a build's rawjson progress (`BUILDKIT_PROGRESS=rawjson`): how many RUN and COPY
/// steps, and the ones BuildKit ran again, each as `bake N: [stage k/n] INSTRUCTION` cut
/// to 100 characters. A step is a cache hit when BuildKit completed it as cached: one
/// loaded from the registry cache is said again, uncached, when its layer is pulled for
/// the image, which plain progress prints or not as its batches fall (a hit there may
/// show no `CACHED` line). Vertex digests are per bake (`==> bake ...` lines between).
fn cached_steps(progress: &str) -> (usize, Vec<String>) {
    let mut steps: BTreeMap<(usize, String), (String, bool)> = BTreeMap::new();
    let mut bake = 0;
    for line in progress.lines() {
        if line.starts_with("==> bake") {
            bake += 1;
            continue;
        }
        let Ok(status) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        for vertex in status["vertexes"].as_array().into_iter().flatten() {
            let (Some(digest), Some(name)) = (vertex["digest"].as_str(), vertex["name"].as_str()) else {
                continue;
            };
            if !(name.starts_with('[') && (name.contains("] RUN ") || name.contains("] COPY "))) {
                continue;
            }
            let said: String = name.chars().take(100).collect();
            let step = steps
                .entry((bake, digest.to_owned()))
                .or_insert((format!("bake {bake}: {said}"), false));
            step.1 |= vertex["cached"] == true && vertex["completed"].is_string();
        }
    }
    let ran = steps
        .values()
        .filter(|(_, cached)| !cached)
        .map(|(said, _)| said.clone());
    (steps.len(), ran.collect())
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn a_builder_node_builds_from_the_registry_cache_the_same_images() {
    let _serial = serial();
    built();
    let (status, detail) = capability("cache export");
    if status != "ok" {
        // Docker 20.10's builder cannot export a cache: the manifest's registry cache is
        // refused, naming the engine setting to change.
        assert!(detail.starts_with("no ("), "{detail}");
        return;
    }
    let registry = Registry::start();
    let dir = registry.dir.clone();
    let host = registry.host();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The team's registry holds the root image and the cache; node-b is declared.
    let manifest = dir.join("slipway.toml");
    let text_of_manifest = std::fs::read_to_string(root().join("slipway.toml"))
        .unwrap()
        .replace("registry = \"localhost:5000\"", &format!("registry = \"{host}\""))
        .replace(
            "release = \"trixie\"",
            &format!("release = \"trixie\"\nimage = \"{host}/platform/debian:trixie-slim\""),
        )
        .replace(
            "cache = { type = \"none\" }",
            &format!(
                "cache = {{ type = \"registry\", reference = \"{host}/platform/cache\" }}\n\n[build.builders.nodeb]\nendpoint = \"tcp://127.0.0.1:{port}\"\nplatforms = [\"linux/amd64\"]"
            ),
        );
    std::fs::write(&manifest, &text_of_manifest).unwrap();
    let certs = root().join(".slipway/certs");
    let out = xtask_with(&manifest, &["certs"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(certs.join("builder-nodeb.crt").is_file() && certs.join("builder-client.key").is_file());

    // Node A (this engine): its root image in the team's registry, pinned in the lock.
    docker_ok(&[
        "tag",
        "debian:trixie-slim",
        &format!("{host}/platform/debian:trixie-slim"),
    ]);
    let out = xtask_with(&manifest, &["bootstrap", "--push"]);
    assert!(out.status.success(), "{}", text(&out));
    let lock = std::fs::read_to_string(dir.join("bases.lock")).unwrap();
    assert!(lock.contains("digest = \"sha256:"), "{lock}");
    // Node A builds, exporting the cache.
    let out = xtask_with(&manifest, &["build", "agent", "--target", "prod"]);
    assert!(out.status.success(), "{}", text(&out));
    let agent = format!("{host}/platform/agent:0.1.0");
    let on_a = image_id(&agent);

    // Before node B starts, `builders` lists it as not reachable, and says why.
    let out = xtask_with(&manifest, &["builders"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("nodeb  tcp://127.0.0.1:{port}")) && said.contains("not reachable:"),
        "{said}"
    );

    // Node B: an empty engine. Its root image comes from the registry by the lock's
    // digest, every step from the cache node A exported.
    let _node = Node::start("nodeb", port, &certs);
    let started = Instant::now();
    loop {
        let out = xtask_with(&manifest, &["--dry-run", "build", "agent", "--builder", "nodeb"]);
        if out.status.success() && !text(&out).contains("not reachable") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "node B never answered: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Now both nodes answer, each with its own store, builder and what it can do.
    let out = xtask_with(&manifest, &["builders", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodeb = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "nodeb")
        .unwrap_or_else(|| panic!("no nodeb in {nodes:#}"));
    assert_eq!(nodeb["reachable"], "yes", "{nodeb:#}");
    assert_eq!(nodeb["engine"]["store"], "containerd", "{nodeb:#}");
    assert_eq!(nodeb["engine"]["capabilities"]["cache_export"]["ok"], true, "{nodeb:#}");
    assert_eq!(nodeb["native"], "linux/amd64", "{nodeb:#}");
    assert!(nodeb["free_gib"].as_f64().is_some_and(|g| g > 0.0), "{nodeb:#}");
    // Progress as BuildKit's rawjson, to count the cache hits from.
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["build", "agent", "--target", "prod", "--builder", "nodeb"])
        .env("NO_COLOR", "1")
        .env("SLIPWAY_MANIFEST", &manifest)
        .env("BUILDKIT_PROGRESS", "rawjson")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("pulled {host}/platform/debian:trixie-slim@sha256:")),
        "{said}"
    );
    // Node B's RUN steps reach no network (its bridge has no NAT): every install step
    // (apt, pip, uv) came from the cache, or the build would have failed. At least 90%
    // of the RUN and COPY steps are cache hits.
    let (steps, ran) = cached_steps(&said);
    let cached = steps - ran.len();
    // Said in CI's log too (past libtest's capture), with the steps that ran again.
    let _ = writeln!(
        std::io::stderr(),
        "node B: {cached} of {steps} RUN and COPY steps cached{}",
        ran.iter()
            .map(|step| format!("\n  ran again: {step}"))
            .collect::<String>()
    );
    assert!(
        steps >= 12 && cached * 10 >= steps * 9,
        "{cached} of {steps} steps cached; ran again:\n  {}\n{said}",
        ran.join("\n  ")
    );
    // The same prod image: the same manifest (config and layers) on both nodes.
    let tls = root().join(".slipway/builder-tls");
    let on_node_b = |args: &[&str]| {
        let out = Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", format!("tcp://127.0.0.1:{port}"))
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", &tls)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let on_b = on_node_b(&["image", "inspect", "--format", "{{.Id}}", &agent]);
    assert_eq!(on_b, on_a, "node B built another agent image");

    // The same node declared through a docker context (as an `ssh://` host would be):
    // `builders` asks it through the context, and a build goes there (the agent image,
    // removed from node B first, is back in node B's store).
    let context = DockerContext::create(
        &format!("slipway-test-nodeb-{port}"),
        &format!("tcp://127.0.0.1:{port}"),
        &tls,
    );
    std::fs::write(
        &manifest,
        format!(
            "{text_of_manifest}\n[build.builders.nodeb-ctx]\ncontext = \"{}\"\nplatforms = [\"linux/amd64\"]\n",
            context.0
        ),
    )
    .unwrap();
    let out = xtask_with(&manifest, &["builders"]);
    let said = text(&out);
    assert!(
        out.status.success()
            && said.contains(&format!(
                "nodeb-ctx  docker context {} (tcp://127.0.0.1:{port})",
                context.0
            )),
        "{said}"
    );
    on_node_b(&["image", "rm", &agent]);
    let out = xtask_with(
        &manifest,
        &["build", "agent", "--target", "prod", "--builder", "nodeb-ctx"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        on_node_b(&["image", "inspect", "--format", "{{.Id}}", &agent]),
        on_a,
        "the build through the context did not reach node B"
    );
    // An unknown builder, and a platform node B does not declare, are refused by name.
    let out = xtask_with(&manifest, &["build", "agent", "--builder", "nodec"]);
    assert!(
        !out.status.success() && text(&out).contains("no builder named `nodec`"),
        "{}",
        text(&out)
    );
    let out = xtask_with(
        &manifest,
        &["build", "agent", "--builder", "nodeb", "--platform", "linux/arm64"],
    );
    assert!(
        !out.status.success() && text(&out).contains("builds linux/amd64 natively, not linux/arm64"),
        "{}",
        text(&out)
    );
    let _ = docker(&["image", "rm", &format!("{host}/platform/debian:trixie-slim")]);
}

/// A docker context of this machine's CLI, for as long as it lives: `tcp://` with the
/// TLS files in `tls` (`ca.pem`, `cert.pem`, `key.pem`).
struct DockerContext(String);

impl DockerContext {
    fn create(name: &str, host: &str, tls: &Path) -> DockerContext {
        let _ = docker(&["context", "rm", "--force", name]);
        let file = |f: &str| tls.join(f).display().to_string();
        docker_ok(&[
            "context",
            "create",
            name,
            "--docker",
            &format!(
                "host={host},ca={},cert={},key={}",
                file("ca.pem"),
                file("cert.pem"),
                file("key.pem")
            ),
        ]);
        DockerContext(name.to_owned())
    }
}

impl Drop for DockerContext {
    fn drop(&mut self) {
        let _ = docker(&["context", "rm", "--force", &self.0]);
    }
}

/// A branch of this checkout for as long as it lives.
struct Branch(String);

impl Branch {
    fn new(name: &str) -> Branch {
        let out = Command::new("git")
            .args(["branch", "--force", name])
            .current_dir(root())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        Branch(name.to_owned())
    }
}

impl Drop for Branch {
    fn drop(&mut self) {
        let _ = Command::new("git")
            .args(["branch", "--delete", "--force", &self.0])
            .current_dir(root())
            .output();
    }
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn prune_applies_the_retention_policy_and_never_deletes_a_kept_signed_image() {
    let _serial = serial();
    let registry = Registry::start();
    let dir = registry.dir.clone();
    let live = Branch::new("slipway-prune-live");
    let repo = format!("{}/platform/gateway", registry.host());
    let manifest = dir.join("slipway.toml");
    let text_of_manifest = std::fs::read_to_string(root().join("slipway.toml")).unwrap().replace(
        "registry = \"localhost:5000\"",
        &format!("registry = \"{}\"", registry.host()),
    );
    std::fs::write(
        &manifest,
        format!("{text_of_manifest}\n[retention]\nversions = 2\nbranch-days = 7\n"),
    )
    .unwrap();
    let days_ago = |days: u64| {
        let out = Command::new("date")
            .args(["--utc", &format!("--date=-{days} days"), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // Small images of their own, each made `days` ago (their created label), pushed
    // under every tag given.
    let push = |n: u32, days: u64, tags: &[&str]| -> String {
        let content = dir.join(format!("image-{n}"));
        std::fs::create_dir_all(&content).unwrap();
        std::fs::write(content.join("n"), n.to_string()).unwrap();
        let tarball = dir.join(format!("image-{n}.tar"));
        let out = Command::new("tar")
            .arg("--create")
            .arg("--file")
            .arg(&tarball)
            .arg("--directory")
            .arg(&content)
            .arg("n")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let first = format!("{repo}:{}", tags[0]);
        docker_ok(&[
            "import",
            "--change",
            &format!("LABEL org.opencontainers.image.created={}", days_ago(days)),
            &tarball.display().to_string(),
            &first,
        ]);
        for tag in tags {
            let reference = format!("{repo}:{tag}");
            docker_ok(&["tag", &first, &reference]);
            docker_ok(&["push", "--quiet", &reference]);
        }
        registry.digest("platform/gateway", tags[0])
    };
    // Versions 0.4.0 and 0.3.0 are the two newest; 0.1.0's image is also an old build
    // of the live branch, so both its tags go.
    let v1 = push(1, 40, &["0.1.0", "slipway-prune-live-1111111"]);
    let v2 = push(2, 30, &["0.2.0"]);
    push(3, 20, &["0.3.0"]);
    let v4 = push(4, 10, &["0.4.0", "latest", "0.4.0-4444444"]);
    let live_old = push(5, 10, &["slipway-prune-live-5555555"]);
    let gone = push(6, 1, &["slipway-prune-gone-6666666"]);
    push(7, 1, &["slipway-prune-live-7777777"]);
    // An old version whose image a recent live build names: it stays.
    push(8, 2, &["0.0.9", "slipway-prune-live-8888888"]);
    // Signatures on a kept image and on one to delete.
    let (key, public) = cosign_key_pair(&dir, "prune");
    let sign = |digest: &str| {
        let out = cosign_sign(&key, &format!("{repo}@{digest}"));
        assert!(out.status.success(), "{}", text(&out));
    };
    sign(&v4);
    sign(&v2);
    let tags = || -> Vec<String> {
        let response = registry.get("/v2/platform/gateway/tags/list").unwrap();
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
        let listed: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"));
        let mut tags: Vec<String> = listed["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        tags.sort();
        tags
    };
    let signature_of = |digest: &str| format!("sha256-{}", &digest[7..]);
    let before = tags();
    assert!(before.iter().any(|t| t.starts_with(&signature_of(&v2))), "{before:?}");

    // The dry run: every verdict, nothing deleted.
    let out = xtask_with(&manifest, &["--dry-run", "prune", "gateway", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let plans: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    let verdicts = plans[0]["verdicts"].as_array().unwrap();
    let verdict = |tag: &str| {
        verdicts
            .iter()
            .find(|v| v["tag"] == tag)
            .unwrap_or_else(|| panic!("no verdict on {tag}: {plans:#}"))
            .clone()
    };
    for (tag, keep) in [
        ("latest", true),
        ("0.4.0", true),
        ("0.4.0-4444444", true),
        ("0.3.0", true),
        ("0.2.0", false),
        ("0.1.0", false),
        ("0.0.9", true),
        ("slipway-prune-live-1111111", false),
        ("slipway-prune-live-5555555", false),
        ("slipway-prune-live-7777777", true),
        ("slipway-prune-live-8888888", true),
        ("slipway-prune-gone-6666666", false),
    ] {
        assert_eq!(verdict(tag)["keep"], keep, "{tag}: {:#}", verdict(tag));
    }
    assert!(
        verdict("0.1.0")["why"]
            .as_str()
            .unwrap()
            .contains("older than the 2 newest versions"),
        "{plans:#}"
    );
    assert_eq!(
        verdict("slipway-prune-gone-6666666")["why"],
        "branch slipway-prune-gone is gone"
    );
    assert_eq!(tags(), before, "a dry run deleted something");

    // The real run.
    let out = xtask_with(&manifest, &["prune", "gateway"]);
    assert!(out.status.success(), "{}", text(&out));
    let after = tags();
    for kept in [
        "latest",
        "0.4.0",
        "0.4.0-4444444",
        "0.3.0",
        "0.0.9",
        "slipway-prune-live-7777777",
        "slipway-prune-live-8888888",
    ] {
        assert!(after.contains(&kept.to_owned()), "{kept} was deleted: {after:?}");
    }
    for deleted in [
        "0.2.0",
        "0.1.0",
        "slipway-prune-live-1111111",
        "slipway-prune-live-5555555",
        "slipway-prune-gone-6666666",
    ] {
        assert!(
            !after.contains(&deleted.to_owned()),
            "{deleted} is still there: {after:?}"
        );
    }
    assert!(!after.iter().any(|t| t.starts_with(&signature_of(&v2))), "{after:?}");
    assert!(after.iter().any(|t| t.starts_with(&signature_of(&v4))), "{after:?}");
    for digest in [&v1, &v2, &live_old, &gone] {
        let response = registry
            .get(&format!("/v2/platform/gateway/manifests/{digest}"))
            .unwrap();
        assert!(
            response.starts_with("HTTP/1.1 404"),
            "{digest} is still served: {response}"
        );
    }
    // The kept signed image still verifies.
    let out = Command::new("cosign")
        .args(["verify", "--key"])
        .arg(&public)
        .args([
            "--allow-insecure-registry",
            "--insecure-ignore-tlog=true",
            &format!("{repo}@{v4}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // A second run finds nothing more to delete.
    let out = xtask_with(&manifest, &["prune", "gateway"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("images deleted"), "{}", text(&out));
    drop(live);
}

/// `cargo xtask` against the test's manifest (the registry on loopback, a key of its own).
fn xtask_with(manifest: &Path, args: &[&str]) -> Output {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("NO_COLOR", "1")
        .env("SLIPWAY_MANIFEST", manifest)
        .env("COSIGN_PASSWORD", "slipway-test")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    said_if_slow(args, started);
    out
}

/// A command of 30 s or more, said in CI's log past libtest's capture (the test's name
/// is its thread's): where a slow test spends its time.
fn said_if_slow(args: &[&str], started: Instant) {
    let took = started.elapsed();
    if took >= Duration::from_secs(30) {
        let test = std::thread::current().name().unwrap_or("?").to_owned();
        let _ = writeln!(
            std::io::stderr(),
            "  {test}: `xtask {}` {:.1}s",
            args.join(" "),
            took.as_secs_f64()
        );
    }
}

/// The checkout's manifest for a test's registry (`edit` changes it further), signing
/// with a key pair of its own and no transparency log: the manifest, the key and its
/// public half, in the registry's directory.
fn release_manifest(registry: &Registry, edit: impl Fn(String) -> String) -> (PathBuf, PathBuf, PathBuf) {
    let dir = &registry.dir;
    let (key, public) = cosign_key_pair(dir, "release");
    let text_of_manifest = edit(std::fs::read_to_string(root().join("slipway.toml")).unwrap().replace(
        "registry = \"localhost:5000\"",
        &format!("registry = \"{}\"", registry.host()),
    ));
    // The manifest ends with its own [release] table: the test's replaces it.
    let text_of_manifest = text_of_manifest.split("\n[release]").next().unwrap().to_owned();
    let manifest = dir.join("slipway.toml");
    std::fs::write(
        &manifest,
        format!(
            "{text_of_manifest}\n[release]\nkey = \"{}\"\npublic-key = \"{}\"\ntlog = false\n",
            key.display(),
            public.display()
        ),
    )
    .unwrap();
    (manifest, key, public)
}

fn cosign_key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let out = Command::new("cosign")
        .args(["generate-key-pair", "--output-key-prefix"])
        .arg(dir.join(name))
        .env("COSIGN_PASSWORD", "slipway-test")
        .stdin(Stdio::null())
        .output()
        .expect("cosign (../shared/tools/engine-up.sh installs it)");
    assert!(out.status.success(), "{}", text(&out));
    (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")))
}

/// `cosign sign` of `reference` with a key of [`cosign_key_pair`], to the loopback
/// registry, with no transparency log.
fn cosign_sign(key: &Path, reference: &str) -> Output {
    Command::new("cosign")
        .args(["sign", "--yes", "--key"])
        .arg(key)
        .args([
            "--allow-insecure-registry",
            "--use-signing-config=false",
            "--tlog-upload=false",
            reference,
        ])
        .env("COSIGN_PASSWORD", "slipway-test")
        .output()
        .unwrap()
}

/// A Trivy report (`trivy image --format json`, Trivy is not installed here) of the
/// image `reference` as the local store has it (its name and its layers' diff ids), with
/// one finding of `severity`; `layers_of` makes it claim another image's layers.
fn trivy_report(path: &Path, severity: &str, reference: &str, layers_of: &str) {
    let layers: serde_json::Value = serde_json::from_str(&docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .RootFS.Layers}}",
        layers_of,
    ]))
    .unwrap();
    let report = serde_json::json!({"SchemaVersion": 2, "ArtifactName": reference,
        "ArtifactType": "container_image",
        "Metadata": {"OS": {"Family": "debian", "Name": "13.2"}, "DiffIDs": layers, "RepoTags": [reference]},
        "Results": [{
        "Target": "debian 13.2", "Class": "os-pkgs", "Type": "debian",
        "Vulnerabilities": [{"VulnerabilityID": "CVE-2025-0001", "PkgName": "libc6",
            "InstalledVersion": "2.41-12", "FixedVersion": "", "Severity": severity}]}]});
    std::fs::write(path, report.to_string()).unwrap();
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn release_signs_by_digest_and_verify_catches_a_moved_tag() {
    let _serial = serial();
    built();
    let registry = Registry::start();
    let dir = registry.dir.clone();
    let (manifest, key, public) = release_manifest(&registry, |text| text);
    let (_, foreign) = cosign_key_pair(&dir, "foreign");
    let run = |args: &[&str]| {
        let out = xtask_with(&manifest, args);
        (out.status.success(), text(&out))
    };

    // Nothing scanned: refused, and nothing reaches the registry.
    let (ok, out) = run(&["release", "--push", "--sign"]);
    assert!(!ok && out.contains("no passing scan of"), "{out}");
    assert!(registry.get("/v2/_catalog").unwrap().contains("\"repositories\":[]"));

    // A report of another image, or of another build of this one, is refused: no verdict.
    let agent = format!("{}/platform/agent:0.1.0", registry.host());
    let gateway = format!("{}/platform/gateway:0.1.0", registry.host());
    let wrong = dir.join("wrong.json");
    trivy_report(&wrong, "LOW", &gateway, &gateway);
    let (ok, out) = run(&["scan", "agent", "--report", wrong.to_str().unwrap()]);
    assert!(
        !ok && out.contains(&format!("the report is of `{gateway}`, not of {agent}")),
        "{out}"
    );
    trivy_report(&wrong, "LOW", &agent, &gateway);
    let (ok, out) = run(&["scan", "agent", "--report", wrong.to_str().unwrap()]);
    assert!(!ok && out.contains("another build"), "{out}");
    let (ok, out) = run(&["release", "agent", "--push"]);
    assert!(!ok && out.contains("no passing scan of"), "{out}");

    // A report with High findings blocks, even with --allow-unscanned.
    let high = dir.join("high.json");
    trivy_report(&high, "HIGH", &agent, &agent);
    assert!(!run(&["scan", "agent", "--report", high.to_str().unwrap()]).0);
    let (ok, out) = run(&["release", "agent", "--push", "--allow-unscanned"]);
    assert!(!ok && out.contains("vulnerability policy blocks the push"), "{out}");

    // Passing verdicts on these very builds: pushed, and signed by digest.
    let low = dir.join("low.json");
    for (service, reference) in [("agent", &agent), ("gateway", &gateway)] {
        trivy_report(&low, "LOW", reference, reference);
        let (ok, out) = run(&["scan", service, "--report", low.to_str().unwrap()]);
        assert!(ok, "{out}");
    }
    let (ok, out) = run(&["release", "--push", "--sign"]);
    assert!(ok, "{out}");
    // Where the builder attaches attestations (the containerd store), the image comes
    // with its provenance: an attestation manifest in the pushed index.
    let attested = docker_ok(&["info", "--format", "{{json .DriverStatus}}"]).contains("io.containerd.snapshotter");
    let record: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(root().join(".slipway/release/prod.json")).unwrap()).unwrap();
    let record: Vec<serde_json::Value> = record
        .into_iter()
        .filter(|r| r["image"].as_str().unwrap().starts_with(&registry.host()))
        .collect();
    assert_eq!(record.len(), 2, "{record:?}");
    for service in ["agent", "gateway"] {
        let repository = format!("platform/{service}");
        let digest = registry.digest(&repository, "0.1.0");
        let signed = format!("{}/{repository}@{digest}", registry.host());
        assert!(
            record
                .iter()
                .any(|r| r["image"] == signed.as_str() && r["signed"] == true && r["attested"] == true),
            "{signed} not in {record:?}"
        );
        let said = if attested {
            "pushed, signed, SBOM and provenance attested:"
        } else {
            "pushed, signed, SBOM attested:"
        };
        assert!(out.contains(&format!("{said} {signed}")), "{out}");
        // cosign itself accepts the SBOM and (where BuildKit attached one) the
        // provenance, as attestations signed by the release key for that digest.
        let mut kinds = vec!["cyclonedx"];
        if attested {
            kinds.push("slsaprovenance");
        }
        for kind in kinds {
            let checked = Command::new("cosign")
                .args(["verify-attestation", "--type", kind, "--key"])
                .arg(&public)
                .args(["--insecure-ignore-tlog=true", "--allow-insecure-registry", &signed])
                .output()
                .unwrap();
            assert!(checked.status.success(), "{kind} of {signed}: {}", text(&checked));
        }
        // Every seed-002 tag points at that one digest, and the signature sits beside it.
        for tag in record.iter().find(|r| r["image"] == signed.as_str()).unwrap()["tags"]
            .as_array()
            .unwrap()
        {
            let tag = tag.as_str().unwrap().rsplit(':').next().unwrap();
            assert_eq!(registry.digest(&repository, tag), digest, "{service}:{tag}");
        }
        let pushed = registry.manifest(&repository, "0.1.0");
        let attestations = pushed["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["annotations"]["vnd.docker.reference.type"] == "attestation-manifest")
            .count();
        assert_eq!(attestations > 0, attested, "{service}: {pushed:#}");
        // cosign 2 tags the signature `sha256-<digest>.sig`; cosign 3 stores a bundle as an
        // OCI referrer, which a registry without the referrers API finds by the fallback
        // tag `sha256-<digest>`.
        let tags = registry.get(&format!("/v2/{repository}/tags/list")).unwrap();
        let by_digest = digest.replace(':', "-");
        assert!(
            tags.contains(&format!("\"{by_digest}.sig\"")) || tags.contains(&format!("\"{by_digest}\"")),
            "no signature beside {digest}: {tags}"
        );
    }

    // verify: the signature, then by its digest the SBOM attestation and the provenance
    // (which Docker 20.10's classic store cannot attach: there, it is asked for and named
    // missing, then accepted with --no-provenance).
    let verify: &[&str] = if attested {
        &["verify"]
    } else {
        &["verify", "--no-provenance"]
    };
    if !attested {
        let (ok, out) = run(&["verify", "agent"]);
        assert!(!ok && out.contains("provenance: no provenance attestation"), "{out}");
    }
    let (ok, out) = run(verify);
    assert!(ok, "{out}");
    assert!(out.matches("verified  ").count() == 2, "{out}");
    assert!(out.contains("(signature; SBOM of "), "{out}");
    if attested {
        assert!(out.matches("; provenance)").count() == 2, "{out}");
    }
    // Signed, but with no SBOM attested: named, and it fails.
    let bare = format!("{}/platform/bare:1", registry.host());
    docker_ok(&["tag", "localhost:5000/platform/agent:0.1.0", &bare]);
    docker_ok(&["push", &bare]);
    let signed = cosign_sign(&key, &bare);
    assert!(signed.status.success(), "{}", text(&signed));
    let (ok, out) = run(&["verify", &bare, "--no-provenance"]);
    assert!(!ok && out.contains("SBOM attestation: "), "{out}");
    docker_ok(&["rmi", &bare]);
    // Another key's public half does not verify them.
    let (ok, out) = run(&["verify", "agent", "--key", foreign.to_str().unwrap()]);
    assert!(!ok && out.contains("FAILED"), "{out}");

    // Re-point the gateway's tag at another image: verification fails for it alone.
    let moved = format!("{}/platform/gateway:0.1.0", registry.host());
    docker_ok(&["tag", "localhost:5000/platform/agent:0.1.0", &moved]);
    docker_ok(&["push", &moved]);
    let (ok, out) = run(verify);
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("FAILED    {moved}")), "{out}");
    assert!(
        out.contains("verified  ") && out.contains("1 of 2 images failed verification"),
        "{out}"
    );

    // The CI job pushes and signs its image again; the tag verifies again.
    docker_ok(&["rmi", &moved]);
    let (ok, out) = run(&["ci", "run", "gateway-prod-linux-amd64", "--push", "--sign"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&[verify, &["gateway"]].concat());
    assert!(ok, "{out}");
}

/// The processes named `name` (their `comm`) running now.
fn processes_named(name: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == name)
                && !std::fs::read_to_string(e.path().join("stat"))
                    .unwrap_or_default()
                    .rsplit(") ")
                    .next()
                    .unwrap_or("")
                    .starts_with('Z')
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// mmdebstrap's temporary directories under /tmp.
fn mmdebstrap_dirs() -> Vec<PathBuf> {
    std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("mmdebstrap."))
        .map(|e| e.path())
        .collect()
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn ctrl_c_during_bootstrap_leaves_no_tarball_and_the_root_image_as_it_was() {
    let _serial = serial();
    built();
    let root_image = "debian:trixie-slim";
    let before = image_id(root_image);
    let dirs_before = mmdebstrap_dirs();
    let state = scratch("bootstrap-ctrl-c");
    // mmdebstrap's tarballs: `debian-trixie-slim-<arch>.tar`, one per platform.
    let tarballs = || -> Vec<PathBuf> {
        std::fs::read_dir(state.join("build"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with("debian-trixie-slim") && name.ends_with(".tar")
            })
            .collect()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bootstrap", "--refresh"])
        .env("SLIPWAY_STATE_DIR", &state)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupted while mmdebstrap works: once it runs, a few seconds into its download.
    let started = Instant::now();
    while processes_named("mmdebstrap").is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "mmdebstrap never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert_eq!(tarballs(), Vec::<PathBuf>::new(), "Ctrl-C left a tarball");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_named("mmdebstrap").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        processes_named("mmdebstrap"),
        Vec::<String>::new(),
        "mmdebstrap outlived Ctrl-C"
    );
    let left: Vec<PathBuf> = mmdebstrap_dirs()
        .into_iter()
        .filter(|d| !dirs_before.contains(d))
        .collect();
    assert!(left.is_empty(), "mmdebstrap's temporary directories left: {left:?}");
    assert_eq!(image_id(root_image), before, "the root image changed: a half import?");
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn a_second_build_on_one_checkout_waits_for_the_first() {
    let _serial = serial();
    built();
    // The first build, as far as the second can tell: it holds the checkout's build lock.
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(root().join(".slipway/build.lock"))
        .unwrap();
    lock.lock().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(["build", "--target", "prod"]).env("NO_COLOR", "1");
    let (mut child, said, reader) = spawn_reading(cmd);
    let started = Instant::now();
    while !said.lock().unwrap().contains("waiting for another `cargo xtask build`") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the second build did not say it waits: {}",
            said.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // While the lock is held it does nothing more: no bake, no image written.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.try_wait().unwrap().is_none(),
        "it did not wait: {}",
        said.lock().unwrap()
    );
    let so_far = said.lock().unwrap().clone();
    assert!(!so_far.contains("bake") && !so_far.contains("up to date"), "{so_far}");
    lock.unlock().unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "{}", said.lock().unwrap());
    assert!(
        said.lock().unwrap().contains("every image is up to date"),
        "{}",
        said.lock().unwrap()
    );
}

/// `cmd` started with its output (stdout and stderr, as they come) gathered in a string
/// the test can read while it runs; the reader ends with the child.
fn spawn_reading(mut cmd: Command) -> (std::process::Child, Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let said = Arc::new(Mutex::new(String::new()));
    let readers: Vec<Box<dyn Read + Send>> = vec![
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    let handles: Vec<_> = readers
        .into_iter()
        .map(|stream| {
            let said = Arc::clone(&said);
            std::thread::spawn(move || {
                let mut lines = std::io::BufReader::new(stream);
                let mut line = String::new();
                while std::io::BufRead::read_line(&mut lines, &mut line).unwrap_or(0) > 0 {
                    said.lock().unwrap().push_str(&line);
                    line.clear();
                }
            })
        })
        .collect();
    let reader = std::thread::spawn(move || handles.into_iter().for_each(|h| h.join().unwrap()));
    (child, said, reader)
}

/// Wait until `said` holds `what` (or the child ends, or `secs` pass).
fn wait_for_line(child: &mut std::process::Child, said: &Mutex<String>, what: &str, secs: u64) {
    let started = Instant::now();
    while !said.lock().unwrap().contains(what) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "it ended before `{what}`: {}",
            said.lock().unwrap()
        );
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "no `{what}` in {secs} s: {}",
            said.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The child's exit, or a failure (and the child killed) after `secs`.
fn wait_at_most(child: &mut std::process::Child, secs: u64, said: &Mutex<String>) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            panic!("still running after {secs} s: {}", said.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether this test process may do what only root can (restart the engine, mount).
fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The running `dockerd`, as it was started: to stop it and start it again the same
/// way (its arguments, environment, working directory and log), whoever started it.
struct Daemon {
    pid: i32,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    log: Option<PathBuf>,
}

impl Daemon {
    /// The one dockerd serving the default socket (one started without `-H`, when
    /// several run).
    fn find() -> Daemon {
        let read = |pid: &str, file: &str| -> Vec<String> {
            std::fs::read(format!("/proc/{pid}/{file}"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        };
        let pids = processes_named("dockerd");
        let pid = pids
            .iter()
            .find(|pid| {
                !read(pid, "cmdline")
                    .iter()
                    .any(|a| a == "-H" || a.starts_with("--host"))
            })
            .unwrap_or_else(|| panic!("no dockerd on the default socket among {pids:?}"));
        Daemon {
            pid: pid.parse().unwrap(),
            argv: read(pid, "cmdline"),
            env: read(pid, "environ")
                .into_iter()
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
                .collect(),
            // Its working directory may be gone (a checkout removed since): dockerd's paths
            // are absolute, so it starts again from `/` when so.
            cwd: std::fs::read_link(format!("/proc/{pid}/cwd"))
                .ok()
                .filter(|dir| dir.is_dir())
                .unwrap_or_else(|| "/".into()),
            log: std::fs::read_link(format!("/proc/{pid}/fd/1"))
                .ok()
                .filter(|p| p.is_absolute() && p.is_file()),
        }
    }

    /// Whether it can be started again as it was: its program is still there.
    fn restartable(&self) -> bool {
        let program = Path::new(&self.argv[0]);
        program.is_absolute() && program.is_file()
    }

    /// SIGTERM (what `systemctl restart` sends), then start it again as it was, and
    /// wait until it answers.
    fn restart(&self) {
        // SAFETY: signalling a process by its pid.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while processes_named("dockerd").contains(&self.pid.to_string()) {
            assert!(Instant::now() < deadline, "dockerd did not stop in 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = |append: bool| -> Stdio {
            match &self.log {
                Some(path) => std::fs::OpenOptions::new()
                    .create(true)
                    .append(append)
                    .write(true)
                    .open(path)
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
                None => Stdio::null(),
            }
        };
        use std::os::unix::process::CommandExt;
        // The engine outlives the test: it is never waited for (when the test process
        // ends, it is adopted by init).
        #[expect(clippy::zombie_processes, reason = "a daemon that outlives the test")]
        let _daemon = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(log(true))
            .stderr(log(true))
            .process_group(0)
            .spawn()
            .expect("starting dockerd again");
        let deadline = Instant::now() + Duration::from_secs(90);
        while !docker(&["version", "--format", "{{.Server.Version}}"]).status.success() {
            assert!(Instant::now() < deadline, "dockerd did not come back in 90 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The state files a build writes when it succeeds, with their modification times.
fn build_records() -> Vec<(PathBuf, std::time::SystemTime)> {
    std::fs::read_dir(root().join(".slipway/build"))
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("stamp") || name.starts_with("metadata")
        })
        .map(|e| (e.path(), e.metadata().unwrap().modified().unwrap()))
        .collect()
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn an_engine_restarted_mid_build_fails_clearly_claims_nothing_and_the_next_build_completes() {
    let _serial = serial();
    built();
    if !is_root() {
        eprintln!("skipped: restarting dockerd needs root");
        return;
    }
    let daemon = Daemon::find();
    if !daemon.restartable() {
        eprintln!(
            "skipped: dockerd was started as `{}`, which cannot be started again as it was",
            daemon.argv[0]
        );
        return;
    }
    let before = image_id(IMAGES[5]);
    let records = build_records();
    // An agent edit: real work for bake to do when the engine goes away.
    let (app, original, _restore) = edit_agent();
    std::fs::write(&app, format!("{original}\n# engine restart test\n")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(["build", "agent", "--target", "prod"]).env("NO_COLOR", "1");
    let (mut child, said, reader) = spawn_reading(cmd);
    wait_for_line(&mut child, &said, "bake ", 120);
    daemon.restart();
    let status = wait_at_most(&mut child, 120, &said);
    reader.join().unwrap();
    let out = said.lock().unwrap().clone();
    if status.success() {
        // The bake finished before the engine stopped: nothing was interrupted.
        panic!("the build outran the restart; nothing was tested:\n{out}");
    }
    assert!(
        out.contains("`cargo xtask doctor` checks the engine") || out.contains("not reachable"),
        "no clear error:\n{out}"
    );
    // No stamp or metadata file written by the failed build: nothing claims it.
    assert_eq!(build_records(), records, "a failed build left a record:\n{out}");
    // The next run completes, with the edit in the image.
    let next = xtask(&["build", "agent", "--target", "prod"]);
    assert!(next.status.success(), "{}", text(&next));
    assert!(text(&next).contains("bake"), "{}", text(&next));
    assert_ne!(image_id(IMAGES[5]), before, "the edit is not in the image");
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn a_registry_gone_mid_push_records_no_release_and_the_next_run_completes() {
    let _serial = serial();
    built();
    let mut registry = Registry::start();
    let manifest = registry.dir.join("slipway.toml");
    let text_of_manifest = std::fs::read_to_string(root().join("slipway.toml")).unwrap().replace(
        "registry = \"localhost:5000\"",
        &format!("registry = \"{}\"", registry.host()),
    );
    std::fs::write(&manifest, text_of_manifest).unwrap();
    let record = root().join(".slipway/release/prod.json");
    let host = registry.host();
    let released_here = || std::fs::read_to_string(&record).unwrap_or_default().contains(&host);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(["release", "agent", "--push", "--allow-unscanned"])
        .env("NO_COLOR", "1")
        .env("SLIPWAY_MANIFEST", &manifest);
    let (mut child, said, reader) = spawn_reading(cmd);
    // Stopped as the first upload begins.
    let uploads = registry.dir.join("data/docker/registry/v2/repositories");
    let started = Instant::now();
    while !uploads.exists() {
        assert!(child.try_wait().unwrap().is_none(), "{}", said.lock().unwrap());
        assert!(started.elapsed() < Duration::from_secs(300), "no upload began");
        std::thread::sleep(Duration::from_millis(5));
    }
    registry.stop();
    let status = wait_at_most(&mut child, 300, &said);
    reader.join().unwrap();
    let out = said.lock().unwrap().clone();
    assert!(!status.success(), "the push succeeded with the registry gone:\n{out}");
    assert!(
        out.contains(&format!(
            "a push needs the registry {} up and reachable",
            registry.host()
        )),
        "{out}"
    );
    assert!(!released_here(), "a failed push was recorded as released:\n{out}");

    // The registry back (same port, same storage): the next run completes.
    registry.restart();
    let again = xtask_with(&manifest, &["release", "agent", "--push", "--allow-unscanned"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(released_here(), "{}", text(&again));
    let repository = format!("{}/platform/agent", registry.host());
    let pushed = registry.digest("platform/agent", "0.1.0");
    let recorded = std::fs::read_to_string(&record).unwrap();
    assert!(recorded.contains(&format!("{repository}@{pushed}")), "{recorded}");
}

/// A small filesystem mounted for a test, unmounted however it ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn a_nearly_full_disk_is_named_before_anything_is_written() {
    let _serial = serial();
    built();
    if !is_root() {
        eprintln!("skipped: mounting a small filesystem needs root");
        return;
    }
    // The state directory on a filesystem of 16 MiB: room for certificates, not for a build.
    let (dir, run) = own_project("disk-test");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount -t tmpfs");
    let _mounted = Mounted(state.clone());
    let certs = run(&["certs"]);
    assert!(certs.status.success(), "{}", text(&certs));
    let out = run(&["build", "--target", "prod"]);
    let msg = text(&out);
    assert!(!out.status.success(), "{msg}");
    assert!(
        msg.contains("the disk is nearly full")
            && msg.contains(&state.display().to_string())
            && msg.contains("the state directory"),
        "{msg}"
    );
    assert!(!msg.contains("bake"), "a bake started:\n{msg}");
    assert!(!state.join("build").exists(), "the build wrote in the state directory");
    drop(_mounted);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A scratch clone of the checkout as it is (uncommitted edits included), committed, with
/// the checkout's certificates (so the base images, which bake in the Root CA, are the
/// ones already built) and the stack's host ports moved away from a developer's.
fn scratch_clone(name: &str) -> PathBuf {
    let dir = scratch(name);
    let clone = dir.join("repo");
    let git = |dir: &Path, args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=Slipway test", "-c", "user.email=test@slipway.invalid"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    git(
        &root(),
        &["clone", "--quiet", root().to_str().unwrap(), clone.to_str().unwrap()],
    );
    for file in git(&root(), &["ls-files", "--cached", "--others", "--exclude-standard"]).lines() {
        let (from, to) = (root().join(file), clone.join(file));
        if from.is_file() {
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&from, &to).unwrap();
        }
    }
    let base = 21000 + (std::process::id() % 20000) as u16;
    let manifest = std::fs::read_to_string(clone.join("slipway.toml"))
        .unwrap()
        .replace("ports = [8443]", &format!("ports = [{base}]"))
        .replace("ports = [9443]", &format!("ports = [{}]", base + 1));
    std::fs::write(clone.join("slipway.toml"), manifest).unwrap();
    git(&clone, &["add", "--all"]);
    git(
        &clone,
        &["commit", "--quiet", "--allow-empty", "--message", "as the checkout is"],
    );
    let certs = clone.join(".slipway/certs");
    std::fs::create_dir_all(&certs).unwrap();
    for entry in std::fs::read_dir(root().join(".slipway/certs")).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            std::fs::copy(entry.path(), certs.join(entry.file_name())).unwrap();
        }
    }
    clone
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn a_new_service_joins_the_stack_over_mtls_and_remove_gives_the_tree_back() {
    let _serial = serial();
    xtask_ok(&["certs"]);
    let clone = scratch_clone("new");
    let stack = format!("slipway-test-new-{}", std::process::id());
    let run = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .env("SLIPWAY_ROOT", &clone)
            .env("SLIPWAY_STACK_NAME", &stack)
            .env("DEBUGPY_HOST_PORT", (25000 + std::process::id() % 20000).to_string())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| -> String {
        let out = run(args);
        assert!(out.status.success(), "cargo xtask {args:?} failed:\n{}", text(&out));
        text(&out)
    };
    struct Down<'a>(&'a dyn Fn(&[&str]) -> Output);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["down", "--volumes"]);
        }
    }
    let ports: u16 = 21000 + (std::process::id() % 20000) as u16;
    let (billing_port, ledger_port) = (ports + 2, ports + 3);
    ok(&["new", "billing", "--kind", "python", "--calls", "agent"]);
    ok(&["new", "ledger", "--kind", "rust", "--port", &ledger_port.to_string()]);

    // What `new` refuses, with the reason, writing nothing.
    for (args, says) in [
        (&["new", "billing", "--kind", "python"][..], "already exists"),
        (&["new", "Billing2", "--kind", "rust"][..], "cannot be a service's name"),
        (&["new", "pay-ments", "--kind", "python"][..], "module"),
        (&["new", "json", "--kind", "python"][..], "standard library"),
        (
            &["new", "audit", "--kind", "rust", "--port", &billing_port.to_string()][..],
            "taken by `billing`",
        ),
        (
            &["new", "audit", "--kind", "rust", "--calls", "nobody"][..],
            "no service of that name",
        ),
    ] {
        let out = run(args);
        assert!(
            !out.status.success() && text(&out).contains(says),
            "{args:?}:\n{}",
            text(&out)
        );
    }
    assert!(!clone.join("services/audit").exists() && !clone.join("services/json").exists());

    // The stack comes up with four services; the new Python one calls the agent over
    // mTLS with its own client certificate; the new Rust one answers on its own.
    let _down = Down(&run);
    ok(&["dev", "--detach", "--timeout", "600"]);
    let certs = clone.join(".slipway/certs");
    let via = https_get(
        billing_port,
        "localhost",
        &certs,
        Some("billing-client"),
        "/api/upstream/hello",
    )
    .unwrap();
    assert!(
        via.starts_with("HTTP/1.1 200") && via.contains("hello from the agent"),
        "{via}"
    );
    let health = https_get(ledger_port, "localhost", &certs, None, "/health").unwrap();
    assert!(
        health.contains("\"service\":\"ledger\"") && health.contains("\"status\":\"ok\""),
        "{health}"
    );
    // Without a client certificate the Python service refuses.
    let refused = https_get(billing_port, "localhost", &certs, None, "/health");
    assert!(
        refused.as_ref().map_or(true, |r| !r.starts_with("HTTP/1.1 200")),
        "{refused:?}"
    );

    let matrix = ok(&["ci", "matrix"]);
    for job in ["billing-local-linux-amd64", "ledger-prod-linux-amd64"] {
        assert!(matrix.contains(job), "{matrix}");
    }
    let checked = ok(&["check", "billing", "ledger"]);
    assert!(checked.contains("2 checked: 2 passed, 0 failed"), "{checked}");
    ok(&["down", "--volumes"]);

    // A dependency added in the builder image: only the new service's files change, and
    // the rebuild reuses the base layers.
    let before = layers("localhost:5000/platform/billing:0.1.0-local");
    ok(&["deps", "billing", "add", "itsdangerous==2.2.0"]);
    let pyproject = std::fs::read_to_string(clone.join("services/billing/pyproject.toml")).unwrap();
    assert!(pyproject.contains("itsdangerous==2.2.0"), "{pyproject}");
    ok(&["build", "billing", "--target", "local"]);
    let after = layers("localhost:5000/platform/billing:0.1.0-local");
    let python_base = layers("localhost:5000/platform/slipway-python-builder:0.1.0");
    assert!(
        after.starts_with(&python_base),
        "the rebuild starts from the builder's layers"
    );
    assert_ne!(before, after, "the new dependency is in a new layer");

    ok(&["remove", "billing"]);
    ok(&["remove", "ledger"]);
    let out = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=all"])
        .current_dir(&clone)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.trim().is_empty(), "remove left the tree changed:\n{status}");
    assert!(!certs.join("billing.key").exists() && !certs.join("ledger.crt").exists());
    // The images the test made go too (remove leaves a service's images in the store).
    for repository in ["localhost:5000/platform/billing", "localhost:5000/platform/ledger"] {
        let tags = docker_ok(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repository]);
        for tag in tags.lines() {
            docker_ok(&["image", "rm", "--force", tag]);
        }
    }
    let _ = std::fs::remove_dir_all(clone.parent().unwrap());
}

/// The platforms an image index names, `os/arch` (attestation manifests left out).
fn index_platforms(index: &serde_json::Value) -> BTreeMap<String, String> {
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["platform"]["os"] != "unknown")
        .map(|m| {
            (
                format!(
                    "{}/{}",
                    m["platform"]["os"].as_str().unwrap(),
                    m["platform"]["architecture"].as_str().unwrap()
                ),
                m["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs the Docker engine: run `cargo xtask test`"]
fn an_arm64_release_is_built_on_its_own_node_joined_with_amd64_and_signed_per_platform() {
    let _serial = serial();
    built();
    let registry = Registry::start();
    let dir = registry.dir.clone();
    let host = registry.host();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A root image of its own name (made here for both platforms), so the other tests'
    // `debian:trixie-slim`, and what is built from it, stay as they are; the team's
    // registry cache; node `arm` declared for linux/arm64.
    let (manifest, _, public) = release_manifest(&registry, |text| {
        text.replace(
            "platforms = [\"linux/amd64\"]",
            "platforms = [\"linux/amd64\", \"linux/arm64\"]",
        )
        .replace(
            "release = \"trixie\"",
            &format!("release = \"trixie\"\nimage = \"{host}/platform/debian:trixie-slim\""),
        )
        .replace(
            "cache = { type = \"none\" }",
            &format!(
                "cache = {{ type = \"registry\", reference = \"{host}/platform/cache\" }}\n\n[build.builders.arm]\nendpoint = \"tcp://127.0.0.1:{port}\"\nplatforms = [\"linux/arm64\"]"
            ),
        )
    });
    let run = |args: &[&str]| {
        let out = xtask_with(&manifest, args);
        (out.status.success(), text(&out))
    };
    if !docker_ok(&["info", "--format", "{{json .DriverStatus}}"]).contains("io.containerd.snapshotter") {
        // The classic store holds one platform under a name: refused before anything runs.
        let (ok, out) = run(&["build", "gateway"]);
        assert!(
            !ok && out.contains("linux/arm64 need the containerd image store"),
            "{out}"
        );
        return;
    }
    let (ok, out) = run(&["certs"]);
    assert!(ok, "{out}");
    let certs = root().join(".slipway/certs");

    // This engine builds the arm64 gateway once (cross-compiled; its arm64 base's few RUN
    // steps under qemu), exporting the cache to the team's registry, and pushes the
    // root image (both platforms), pinned in the lock: what a CI runner would find.
    let (ok, out) = run(&["build", "gateway", "--platform", "linux/arm64"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["bootstrap", "--push"]);
    assert!(ok, "{out}");

    // Node `arm`: an empty engine, whose RUN steps reach no network (its bridge has no
    // NAT): it builds the arm64 share from the root and the cache in the registry.
    let _node = Node::start("arm", port, &certs);
    let started = Instant::now();
    loop {
        let (ok, out) = run(&[
            "--dry-run",
            "build",
            "gateway",
            "--builder",
            "arm",
            "--platform",
            "linux/arm64",
        ]);
        if ok && !out.contains("not reachable") && !out.contains("did not answer") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "node arm never answered: {out}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // A dry run says which node builds what, then the join.
    let (ok, out) = run(&["--dry-run", "build", "gateway", "--push"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("# linux/amd64 on this machine's engine")
            && out.contains(&format!("# linux/arm64 on arm (tcp://127.0.0.1:{port})"))
            && out.contains("docker buildx imagetools create"),
        "{out}"
    );

    // The release: amd64 here, arm64 on node `arm`, side by side, each pushed by digest,
    // then joined in one index under the tags, signed with each platform's image.
    let (ok, out) = run(&["release", "gateway", "--push", "--sign", "--allow-unscanned"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "{host}/platform/gateway joined from local (linux/amd64) and arm (linux/arm64)"
        )),
        "{out}"
    );
    // The arm64 image is in node arm's store, where it was built.
    let tls = root().join(".slipway/builder-tls");
    let on_arm = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            &format!("{host}/platform/gateway:0.1.0"),
        ])
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{port}"))
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", &tls)
        .output()
        .unwrap();
    assert!(on_arm.status.success(), "{}", text(&on_arm));
    let record: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(root().join(".slipway/release/prod.json")).unwrap()).unwrap();
    let mut digests = BTreeMap::new();
    for service in ["gateway"] {
        let repository = format!("platform/{service}");
        let platforms = index_platforms(&registry.manifest(&repository, "0.1.0"));
        assert_eq!(
            platforms.keys().collect::<Vec<_>>(),
            ["linux/amd64", "linux/arm64"],
            "{service}"
        );
        let signed = format!("{host}/{repository}@{}", registry.digest(&repository, "0.1.0"));
        let released = record
            .iter()
            .find(|r| r["image"] == signed.as_str())
            .unwrap_or_else(|| {
                panic!("{signed} not in {record:#?}");
            });
        assert_eq!(released["platforms"].as_array().map(Vec::len), Some(2), "{released:#}");
        // cosign itself accepts each platform's image, by its own digest.
        for digest in platforms.values() {
            let checked = Command::new("cosign")
                .args(["verify", "--key"])
                .arg(&public)
                .args([
                    "--insecure-ignore-tlog=true",
                    "--allow-insecure-registry",
                    &format!("{host}/{repository}@{digest}"),
                ])
                .output()
                .unwrap();
            assert!(checked.status.success(), "{service} {digest}: {}", text(&checked));
        }
        digests.insert(service, platforms);
    }

    // The arm64 gateway is an aarch64 binary, and runs here through qemu-user.
    let gateway = format!("{host}/platform/gateway:0.1.0");
    let arm64 = format!("{host}/platform/gateway@{}", digests["gateway"]["linux/arm64"]);
    docker_ok(&["pull", "--platform", "linux/arm64", &arm64]);
    let container = docker_ok(&["create", "--platform", "linux/arm64", &arm64]);
    let binary = dir.join("gateway-arm64");
    let copied = docker(&["cp", &format!("{container}:/app/gateway"), binary.to_str().unwrap()]);
    let _ = docker(&["rm", &container]);
    assert!(copied.status.success(), "{}", text(&copied));
    let elf = std::fs::read(&binary).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(&elf[18..20], &[0xb7, 0x00], "e_machine is not aarch64");
    let ran = docker_ok(&["run", "--rm", "--platform", "linux/arm64", &arm64, "--help"]);
    assert!(ran.contains("usage: gateway"), "{ran}");

    // Each platform's SBOM describes that platform's image: the arm64 one lists arm64
    // packages only.
    let sbom = std::fs::read_to_string(root().join(".slipway/sbom/gateway-prod-linux-arm64.cdx.json")).unwrap();
    assert!(
        sbom.contains("?arch=arm64") && !sbom.contains("?arch=amd64"),
        "the arm64 SBOM:\n{sbom}"
    );

    // verify checks the index and every platform's image: signature and SBOM.
    let (ok, out) = run(&["verify", "gateway"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("and each platform's signature and SBOM: linux/amd64, linux/arm64"),
        "{out}"
    );

    // As the generated workflow runs it: each platform's job builds, tests and pushes
    // its image by digest (the arm64 one run here through qemu-user, as off its own
    // runner), then `ci join` joins and signs the index. The same commit gives the same
    // platform images as the release's, built on the other node (reproducible builds).
    for job in ["gateway-prod-linux-amd64", "gateway-prod-linux-arm64"] {
        let (ok, out) = run(&["ci", "run", job, "--push", "--allow-unscanned"]);
        assert!(ok, "{out}");
        assert!(out.contains(&format!("ci/pushed/{job}.json")), "{out}");
    }
    let (ok, out) = run(&["ci", "join", "gateway", "--sign"]);
    assert!(ok, "{out}");
    assert_eq!(
        index_platforms(&registry.manifest("platform/gateway", "0.1.0")),
        digests["gateway"],
        "the jobs' platform images are not the release's"
    );
    let (ok, out) = run(&["verify", "gateway"]);
    assert!(
        ok && out.contains("and each platform's signature and SBOM: linux/amd64, linux/arm64"),
        "{out}"
    );

    // The gateway's arm64 image replaced (an index joining its amd64 image with another
    // arm64 one, the arm64 root image, pushed under its tag): verification fails.
    let other = format!("{host}/platform/other:arm64");
    docker_ok(&["tag", &format!("{host}/platform/debian:trixie-slim"), &other]);
    docker_ok(&["push", "--platform", "linux/arm64", &other]);
    let _ = docker(&["rmi", &other]);
    let other_arm64 = registry.digest("platform/other", "arm64");
    let out = docker(&[
        "buildx",
        "imagetools",
        "create",
        "--tag",
        &gateway,
        &format!("{host}/platform/gateway@{}", digests["gateway"]["linux/amd64"]),
        &format!("{host}/platform/other@{other_arm64}"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let platforms = index_platforms(&registry.manifest("platform/gateway", "0.1.0"));
    assert_eq!(platforms["linux/arm64"], other_arm64);
    let (ok, out) = run(&["verify", "gateway"]);
    assert!(!ok && out.contains("FAILED    "), "{out}");
}
