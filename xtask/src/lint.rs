//! The image policy, as pure functions: rules over a Dockerfile's text and over a built
//! image's configuration, each returning every violation (the caller fails once with all
//! of them), and a scan of every layer of an image for private keys, secret stubs and,
//! in prod, tools it must not carry. `build` applies the text and configuration rules on
//! every build; `cargo xtask lint` adds the layer scan.
//!
//! Rules (hadolint / dockle / CIS Docker Benchmark section 4 names):
//! DL3006/DL3007 tagged bases, never `latest`; DL3020 COPY, not ADD; DL3015 and DL3009 apt
//! without recommends and without lists left in a layer; DL3025 JSON CMD/ENTRYPOINT;
//! DL4006 pipefail where a RUN pipes; DL3002/CIS-DI-0001 prod runs as a non-root user;
//! DL3057/CIS-DI-0006 a HEALTHCHECK in every stage that runs; CIS-DI-0010/DKL-DI-0005 no
//! secret in ENV, ARG or a layer; CIS-DI-0008 no setuid/setgid file in prod; one Debian
//! base: every image starts from the root image's first layer.

use std::io::Read;

use anyhow::{Context, Result};

use crate::{flags, project::Project, ui};

/// One Dockerfile instruction, continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instruction {
    line: usize,
    keyword: String,
    rest: String,
}

fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current: Option<Instruction> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if current.is_none() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if current.is_some() && line.starts_with('#') {
            continue;
        }
        let (body, continues) = match line.strip_suffix('\\') {
            Some(b) => (b.trim_end(), true),
            None => (line, false),
        };
        match &mut current {
            Some(inst) => {
                inst.rest.push(' ');
                inst.rest.push_str(body);
            }
            None => {
                let (keyword, rest) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
                current = Some(Instruction {
                    line: i + 1,
                    keyword: keyword.to_uppercase(),
                    rest: rest.trim().to_owned(),
                });
            }
        }
        if !continues {
            out.extend(current.take());
        }
    }
    out.extend(current);
    out
}

/// A stage: its name, what it starts `FROM`, and its instructions.
struct Stage {
    name: Option<String>,
    from: String,
    body: Vec<Instruction>,
}

fn stages(insts: &[Instruction]) -> Vec<Stage> {
    let mut out: Vec<Stage> = Vec::new();
    for inst in insts {
        if inst.keyword == "FROM" {
            let words: Vec<&str> = inst.rest.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            out.push(Stage {
                name,
                from: words.first().unwrap_or(&"").to_string(),
                body: Vec::new(),
            });
        } else if let Some(stage) = out.last_mut() {
            stage.body.push(inst.clone());
        }
    }
    out
}

const SECRET_NAMES: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "PRIVATE_KEY",
    "API_KEY",
    "ACCESS_KEY",
];

fn secret_like(name: &str) -> bool {
    let upper = name.to_uppercase();
    SECRET_NAMES.iter().any(|s| upper.contains(s))
}

/// Every violation of the Dockerfile rules, for the stage `target` (the one that runs).
pub fn dockerfile(text: &str, target: &str) -> Vec<String> {
    let insts = instructions(text);
    let stages = stages(&insts);
    let args: Vec<String> = insts
        .iter()
        .filter(|i| i.keyword == "ARG")
        .map(|i| i.rest.split('=').next().unwrap_or("").trim().to_owned())
        .collect();
    let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
    let mut v = Vec::new();
    for stage in &stages {
        let from = stage.from.as_str();
        let is_arg = from.starts_with('$');
        let is_stage = names.contains(&from);
        if !is_arg && !is_stage && from != "scratch" {
            let image = from.rsplit('/').next().unwrap_or(from);
            if !image.contains(':') && !image.contains('@') {
                v.push(format!("DL3006: `FROM {from}` has no tag: pin one"));
            } else if image.ends_with(":latest") {
                v.push(format!("DL3007: `FROM {from}` uses latest: pin a version"));
            }
            if from.contains("alpine") {
                v.push(format!("one Debian base: `FROM {from}` is not Debian"));
            }
        }
        if is_arg
            && !args.iter().any(|a| {
                from.trim_start_matches("${")
                    .trim_start_matches('$')
                    .trim_end_matches('}')
                    == a
            })
        {
            v.push(format!("`FROM {from}` names an ARG that is never declared"));
        }
    }
    for inst in &insts {
        let at = format!("line {}", inst.line);
        match inst.keyword.as_str() {
            "ADD" => v.push(format!("DL3020 ({at}): use COPY for files, not ADD")),
            "CMD" | "ENTRYPOINT" if !inst.rest.starts_with('[') => v.push(format!(
                "DL3025 ({at}): {} in JSON form, so signals reach the process",
                inst.keyword
            )),
            "RUN" => {
                let r = &inst.rest;
                if r.contains("apt-get install") && !r.contains("--no-install-recommends") {
                    v.push(format!(
                        "DL3015 ({at}): apt-get install without --no-install-recommends"
                    ));
                }
                if (r.contains("apt-get update") || r.contains("apt-get install"))
                    && !r.contains("rm -rf /var/lib/apt/lists")
                    && !r.contains("target=/var/lib/apt/lists")
                {
                    v.push(format!(
                        "DL3009 ({at}): apt lists stay in the layer: mount a cache at /var/lib/apt/lists or remove them"
                    ));
                }
                let pipes = r.replace("||", "").contains('|');
                if pipes && !r.contains("pipefail") {
                    v.push(format!(
                        "DL4006 ({at}): a pipe without `set -o pipefail` hides the failure of its first command"
                    ));
                }
            }
            "ENV" | "ARG" => {
                let name = inst.rest.split(['=', ' ']).next().unwrap_or("");
                if secret_like(name) {
                    v.push(format!(
                        "CIS-DI-0010 ({at}): {} {name} looks like a secret: pass it as a BuildKit secret",
                        inst.keyword
                    ));
                }
            }
            // From the build context (not from another stage): no key, no certificates dir.
            "COPY"
                if !inst.rest.contains("--from=")
                    && (inst.rest.contains(".key")
                        || inst.rest.contains("certs/")
                        || inst.rest.contains(".slipway")) =>
            {
                v.push(format!(
                    "({at}): COPY of key or certificate files: only the CA travels, as a secret"
                ))
            }
            _ => {}
        }
    }
    // The stage that runs, and the stages it descends from.
    let mut chain: Vec<&Stage> = Vec::new();
    let mut next = stages.iter().find(|s| s.name.as_deref() == Some(target));
    while let Some(stage) = next {
        chain.push(stage);
        next = stages.iter().find(|s| s.name.as_deref() == Some(stage.from.as_str()));
    }
    if chain.is_empty() {
        v.push(format!(
            "no stage named `{target}`: the Dockerfile needs base -> deps -> local | dev | prod"
        ));
        return v;
    }
    let find = |kw: &str| chain.iter().find_map(|s| s.body.iter().rev().find(|i| i.keyword == kw));
    if find("HEALTHCHECK").is_none_or(|h| h.rest.trim().eq_ignore_ascii_case("NONE")) {
        v.push(format!("DL3057/CIS-DI-0006: stage `{target}` has no HEALTHCHECK"));
    }
    if target == "prod" {
        match find("USER") {
            None => v.push("DL3002/CIS-DI-0001: stage `prod` sets no USER: it would run as root".into()),
            Some(u) if is_root(u.rest.split(':').next().unwrap_or("")) => v.push(format!(
                "DL3002/CIS-DI-0001 (line {}): stage `prod` runs as root",
                u.line
            )),
            Some(_) => {}
        }
    }
    v
}

fn is_root(user: &str) -> bool {
    let user = user.trim();
    user.is_empty() || user == "root" || user == "0"
}

/// Every violation of the rules over a built image's configuration
/// (`docker image inspect`), for the stage `target`.
pub fn image_config(inspect: &serde_json::Value, target: &str) -> Vec<String> {
    let config = &inspect["Config"];
    let mut v = Vec::new();
    let user = config["User"].as_str().unwrap_or("");
    if target == "prod" && is_root(user.split(':').next().unwrap_or("")) {
        v.push(format!(
            "CIS-DI-0001: the image runs as `{}`: prod runs as a non-root user",
            if user.is_empty() { "root" } else { user }
        ));
    }
    let health = config["Healthcheck"]["Test"].as_array();
    if health.is_none_or(|t| t.is_empty() || t[0] == "NONE") {
        v.push("CIS-DI-0006: the image has no HEALTHCHECK".into());
    }
    for env in config["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str())
    {
        let name = env.split('=').next().unwrap_or("");
        if secret_like(name) {
            v.push(format!("CIS-DI-0010: ENV {name} looks like a secret"));
        }
    }
    for key in ["source", "revision", "version", "created"] {
        if config["Labels"][format!("org.opencontainers.image.{key}")].is_null() {
            v.push(format!("the OCI label org.opencontainers.image.{key} is missing"));
        }
    }
    v
}

/// What a layer scan found.
#[derive(Debug, Default)]
pub struct Scan {
    pub violations: Vec<String>,
    /// Paths in the image, for the caller's own checks.
    pub files: usize,
}

/// Tools a prod image must not carry (it needs no compiler or language package manager).
const PROD_FORBIDDEN: &[&str] = &[
    "usr/bin/gcc",
    "usr/bin/cc",
    "usr/bin/rustc",
    "usr/bin/cargo",
    "usr/bin/make",
    "usr/bin/pip",
    "usr/bin/pip3",
    "usr/local/bin/uv",
    "usr/bin/uv",
];

/// Scan the `docker save` archive read from `archive`. Every layer is searched for
/// private keys and secret-mount stubs (what a layer holds leaks even when a later layer
/// deletes it); with `prod`, the merged filesystem (later layers over earlier ones,
/// whiteouts applied) is checked for compilers, package managers and setuid/setgid files.
pub fn scan_archive(archive: impl Read, prod: bool) -> Result<Scan> {
    let mut scan = Scan::default();
    let mut outer = TarReader::new(archive);
    // Each layer's (path, mode) entries, by the layer's name in the archive.
    let mut layers: std::collections::HashMap<String, Vec<(String, u32)>> = Default::default();
    let mut order: Vec<String> = Vec::new();
    while let Some((name, _, data)) = outer.next_entry()? {
        if name == "manifest.json" {
            let manifest: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
            order = manifest[0]["Layers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect();
            continue;
        }
        let is_layer = name.ends_with("layer.tar") || name.starts_with("blobs/sha256/");
        if !is_layer || data.len() < 512 {
            continue;
        }
        let mut entries = Vec::new();
        let mut inner = TarReader::new(&data[..]);
        // An OCI blob may be a config or a manifest, not a tar: stop at the first error.
        while let Ok(Some((path, mode, content))) = inner.next_entry() {
            scan.files += 1;
            let path = path.trim_start_matches("./").to_owned();
            if path.starts_with("run/secrets/") && path != "run/secrets/" {
                scan.violations
                    .push(format!("{path} is left in a layer ({name}): a secret mount's stub"));
            }
            if holds_private_key(&content) {
                scan.violations
                    .push(format!("{path} in layer {name} holds a private key"));
            }
            entries.push((path, mode));
        }
        layers.insert(name, entries);
    }
    if prod {
        if order.is_empty() {
            let mut names: Vec<String> = layers.keys().cloned().collect();
            names.sort();
            order = names;
        }
        let mut merged: std::collections::BTreeMap<String, u32> = Default::default();
        for layer in order.iter().filter_map(|name| layers.get(name)) {
            for (path, mode) in layer {
                let (dir, file) = path.rsplit_once('/').map_or(("", path.as_str()), |(d, f)| (d, f));
                if file == ".wh..wh..opq" {
                    let prefix = format!("{dir}/");
                    merged.retain(|p, _| !p.starts_with(&prefix));
                } else if let Some(gone) = file.strip_prefix(".wh.") {
                    let gone = if dir.is_empty() {
                        gone.to_owned()
                    } else {
                        format!("{dir}/{gone}")
                    };
                    let prefix = format!("{gone}/");
                    merged.retain(|p, _| p != &gone && !p.starts_with(&prefix));
                } else {
                    merged.insert(path.clone(), *mode);
                }
            }
        }
        for (path, mode) in &merged {
            if PROD_FORBIDDEN.contains(&path.as_str()) {
                scan.violations
                    .push(format!("{path}: a prod image carries no compiler or package manager"));
            }
            if mode & 0o6000 != 0 && !path.ends_with('/') {
                scan.violations.push(format!("CIS-DI-0008: {path} is setuid/setgid"));
            }
        }
    }
    Ok(scan)
}

/// Whether `content` holds a PEM private key: a `-----BEGIN ... PRIVATE KEY-----` line
/// followed by a line of base64. (Libraries that parse PEM carry the marker alone, as a
/// string constant: that is not a key.)
pub fn holds_private_key(content: &[u8]) -> bool {
    const MARKER: &[u8] = b"PRIVATE KEY-----";
    let mut from = 0;
    while let Some(at) = find(&content[from..], MARKER).map(|i| from + i) {
        let after = &content[at + MARKER.len()..];
        let after = after.strip_prefix(b"\r").unwrap_or(after);
        if let Some(body) = after.strip_prefix(b"\n") {
            let line_len = body
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
                .count();
            let begins = content[..at]
                .rsplit(|b| *b == b'\n')
                .next()
                .is_some_and(|l| l.starts_with(b"-----BEGIN "));
            if begins && line_len >= 40 {
                return true;
            }
        }
        from = at + 1;
    }
    false
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut i = 0;
    while let Some(pos) = haystack[i..].iter().position(|b| *b == first) {
        let at = i + pos;
        if haystack.len() - at < needle.len() {
            return None;
        }
        if &haystack[at..at + needle.len()] == needle {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// A minimal tar reader (ustar, GNU long names, PAX paths): entries as
/// (path, mode, content).
struct TarReader<R> {
    inner: R,
    long_name: Option<String>,
}

impl<R: Read> TarReader<R> {
    fn new(inner: R) -> Self {
        TarReader { inner, long_name: None }
    }

    fn next_entry(&mut self) -> Result<Option<(String, u32, Vec<u8>)>> {
        loop {
            let mut header = [0u8; 512];
            if let Err(err) = self.inner.read_exact(&mut header) {
                if err.kind() == std::io::ErrorKind::UnexpectedEof {
                    return Ok(None);
                }
                return Err(err.into());
            }
            if header.iter().all(|b| *b == 0) {
                return Ok(None);
            }
            let field = |range: std::ops::Range<usize>| {
                let raw = &header[range];
                let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
                String::from_utf8_lossy(&raw[..end]).trim().to_owned()
            };
            let size = u64::from_str_radix(&field(124..136), 8).context("a tar header with a bad size")?;
            let mode = u32::from_str_radix(&field(100..108), 8).unwrap_or(0);
            let kind = header[156];
            let mut name = field(0..100);
            let prefix = field(345..500);
            if !prefix.is_empty() && &header[257..262] == b"ustar" {
                name = format!("{prefix}/{name}");
            }
            let mut content = vec![0u8; size as usize];
            self.inner.read_exact(&mut content)?;
            let pad = (512 - (size % 512)) % 512;
            std::io::copy(&mut (&mut self.inner).take(pad), &mut std::io::sink())?;
            match kind {
                b'L' => {
                    self.long_name = Some(String::from_utf8_lossy(&content).trim_end_matches('\0').to_owned());
                    continue;
                }
                b'x' => {
                    let pax = String::from_utf8_lossy(&content);
                    self.long_name = pax
                        .lines()
                        .find_map(|l| l.split_once(" path=").map(|(_, p)| p.to_owned()));
                    continue;
                }
                b'g' => continue,
                _ => {}
            }
            let name = self.long_name.take().unwrap_or(name);
            let content = if kind == b'0' || kind == 0 { content } else { Vec::new() };
            return Ok(Some((name, mode, content)));
        }
    }
}

/// The whole policy for one service's image at `target`: its Dockerfile, the built
/// image's configuration, and every layer. Each violation is prefixed with the service.
pub fn check_image(project: &Project, name: &str, target: &str) -> Result<Vec<String>> {
    let m = &project.manifest;
    let file = project.root.join(m.services[name].path.get_ref()).join("Dockerfile");
    let reference = crate::bake::service_ref(m, name, target);
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let mut violations: Vec<String> = dockerfile(&text, target).into_iter().collect();
    let inspect = crate::docker::inspect_image(&reference)
        .with_context(|| format!("build it first: `cargo xtask build {name} --target {target}`"))?;
    violations.extend(image_config(&inspect, target));
    let scan = crate::docker::save_and_scan(&reference, target == "prod")?;
    ui::note(&format!("{reference}: {} files in its layers scanned", scan.files));
    violations.extend(scan.violations);
    Ok(violations.into_iter().map(|v| format!("{name}: {v}")).collect())
}

impl flags::Lint {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let target = crate::manifest::target(self.target.as_deref(), "prod")?;
        let m = &project.manifest;
        let mut violations = Vec::new();
        for name in &m.service_names(&self.names)? {
            if dry_run {
                let file = project
                    .root
                    .join(m.services[name.as_str()].path.get_ref())
                    .join("Dockerfile");
                let reference = crate::bake::service_ref(m, name, &target);
                println!("check {} ({target}) and every layer of {reference}", file.display());
                continue;
            }
            violations.extend(check_image(project, name, &target)?);
        }
        if !violations.is_empty() {
            anyhow::bail!(
                "the image policy failed ({} problems):\n  - {}",
                violations.len(),
                violations.join("\n  - ")
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
ARG OS_BASE=os-base
FROM ${OS_BASE} AS base
RUN --mount=type=cache,target=/var/lib/apt/lists apt-get update && \
    apt-get install --yes --no-install-recommends curl
FROM base AS prod
COPY app /app
USER 10001:10001
HEALTHCHECK CMD ["/app/gateway", "healthcheck"]
CMD ["/app/gateway"]
"#;

    #[test]
    fn a_good_dockerfile_passes() {
        assert_eq!(dockerfile(GOOD, "prod"), Vec::<String>::new());
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let bad = r#"
FROM debian AS base
RUN apt-get update && apt-get install -y curl | tee log
ADD app.tar /app
ENV API_TOKEN=abc
COPY .slipway/certs/agent.key /app/
FROM base AS prod
CMD /app/gateway
"#;
        let v = dockerfile(bad, "prod");
        for rule in [
            "DL3006",
            "DL3015",
            "DL3009",
            "DL4006",
            "DL3020",
            "CIS-DI-0010",
            "DL3025",
            "DL3057",
            "DL3002",
        ] {
            assert!(v.iter().any(|x| x.starts_with(rule)), "{rule} missing from {v:#?}");
        }
        assert!(
            dockerfile("FROM debian:latest AS prod\n", "prod")
                .iter()
                .any(|x| x.starts_with("DL3007"))
        );
        assert!(
            dockerfile("FROM alpine:3.20 AS prod\n", "prod")
                .iter()
                .any(|x| x.contains("not Debian"))
        );
        assert!(
            dockerfile(&GOOD.replace("USER 10001:10001", "USER root"), "prod")
                .iter()
                .any(|x| x.contains("runs as root"))
        );
        assert!(
            dockerfile(GOOD, "dev")
                .iter()
                .any(|x| x.contains("no stage named `dev`"))
        );
    }

    #[test]
    fn image_config_rules() {
        let good = serde_json::json!({"Config": {
            "User": "10001:10001",
            "Healthcheck": {"Test": ["CMD", "/app/gateway", "healthcheck"]},
            "Env": ["PATH=/usr/bin"],
            "Labels": {
                "org.opencontainers.image.source": "s", "org.opencontainers.image.revision": "r",
                "org.opencontainers.image.version": "v", "org.opencontainers.image.created": "c"
            }
        }});
        assert!(image_config(&good, "prod").is_empty());
        let bad = serde_json::json!({"Config": {"User": "", "Env": ["DB_PASSWORD=x"], "Labels": {}}});
        let v = image_config(&bad, "prod");
        assert_eq!(v.len(), 7, "{v:#?}");
        // Outside prod, root is allowed (local runs tools as root).
        assert!(!image_config(&bad, "local").iter().any(|x| x.contains("non-root")));
    }

    fn tar(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, mode, content) in entries {
            let mut h = [0u8; 512];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[100..107].copy_from_slice(format!("{mode:07o}").as_bytes());
            h[124..135].copy_from_slice(format!("{:011o}", content.len()).as_bytes());
            h[156] = b'0';
            h[257..262].copy_from_slice(b"ustar");
            out.extend_from_slice(&h);
            out.extend_from_slice(content);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    #[test]
    fn the_layer_scan_finds_keys_stubs_and_tools() {
        let layer = tar(&[
            ("etc/hostname", 0o644, b"x"),
            (
                "app/leak.pem",
                0o600,
                b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n",
            ),
            // A PEM parser's string constant is not a key.
            ("usr/lib/libpem.so", 0o644, b"\x00-----BEGIN RSA PRIVATE KEY-----\x00-----END"),
            ("run/secrets/root-ca", 0o600, b""),
            ("usr/bin/gcc", 0o755, b"ELF"),
            ("usr/bin/su", 0o4755, b"ELF"),
        ]);
        let archive = tar(&[("manifest.json", 0o644, b"[]"), ("abc/layer.tar", 0o644, &layer)]);
        let scan = scan_archive(&archive[..], true).unwrap();
        assert_eq!(scan.files, 6);
        let v = scan.violations.join("\n");
        assert!(!v.contains("libpem"), "{v}");
        for needle in [
            "app/leak.pem",
            "run/secrets/root-ca",
            "usr/bin/gcc",
            "usr/bin/su is setuid",
        ] {
            assert!(v.contains(needle), "{needle} not found in:\n{v}");
        }
        // A later layer that removes the setuid bit, and one that deletes gcc: clean, in
        // the merged view; the key in an early layer still counts.
        let fixed = tar(&[("usr/bin/su", 0o755, b"ELF"), ("usr/bin/.wh.gcc", 0o644, b"")]);
        let manifest = br#"[{"Layers": ["abc/layer.tar", "def/layer.tar"]}]"#;
        let archive = tar(&[
            ("abc/layer.tar", 0o644, &layer),
            ("def/layer.tar", 0o644, &fixed),
            ("manifest.json", 0o644, manifest),
        ]);
        let v = scan_archive(&archive[..], true).unwrap().violations.join("\n");
        assert!(!v.contains("usr/bin/su") && !v.contains("usr/bin/gcc"), "{v}");
        assert!(v.contains("app/leak.pem"), "{v}");
        let clean = tar(&[("abc/layer.tar", 0o644, &tar(&[("etc/hostname", 0o644, b"x")]))]);
        assert!(scan_archive(&clean[..], true).unwrap().violations.is_empty());
    }
}
