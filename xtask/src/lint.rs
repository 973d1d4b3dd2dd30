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

use crate::manifest::Target;
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
pub fn dockerfile(text: &str, target: Target) -> Vec<String> {
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
    let mut next = stages.iter().find(|s| s.name.as_deref() == Some(target.name()));
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
    if target == Target::Prod {
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
pub fn image_config(inspect: &serde_json::Value, target: Target) -> Vec<String> {
    let config = &inspect["Config"];
    let mut v = Vec::new();
    let user = config["User"].as_str().unwrap_or("");
    if target == Target::Prod && is_root(user.split(':').next().unwrap_or("")) {
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
    /// The layers read, in the image's order: each one's diff id (`sha256:` of its
    /// uncompressed tar), as `docker image inspect` lists them in `RootFS.Layers`.
    pub layers: Vec<String>,
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

/// One layer of the archive, read whole: its diff id and its (path, mode) entries.
struct Layer {
    diff_id: String,
    entries: Vec<(String, u32)>,
}

/// Scan the `docker save` archive read from `archive`, in either layout: the classic
/// store's (`<id>/layer.tar`, uncompressed) or the containerd store's OCI layout
/// (`blobs/sha256/<digest>`, gzip or zstd). Every layer is searched for private keys and
/// secret-mount stubs (what a layer holds leaks even when a later layer deletes it); with
/// `prod`, the merged filesystem (later layers over earlier ones, whiteouts applied) is
/// checked for compilers, package managers and setuid/setgid files.
///
/// `expected` is the image's `RootFS.Layers`: every one of them must be read (same count,
/// same diff ids, same order), or the scan reports the layer it could not read. A scan
/// that read nothing is never a pass.
pub fn scan_archive(archive: impl Read, prod: bool, expected: &[String]) -> Result<Scan> {
    let mut scan = Scan::default();
    let mut outer = tar::Archive::new(archive);
    let mut layers: std::collections::HashMap<String, Layer> = Default::default();
    let mut unreadable: std::collections::HashMap<String, String> = Default::default();
    let mut manifest = None;
    for entry in outer.entries().context("reading the `docker save` archive")? {
        let entry = entry.context("reading the `docker save` archive")?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mut input = std::io::BufReader::with_capacity(1 << 16, entry);
        if name == "manifest.json" {
            let mut data = Vec::new();
            input.read_to_end(&mut data)?;
            manifest = Some(serde_json::from_slice::<serde_json::Value>(&data).context("reading manifest.json")?);
            continue;
        }
        if !(name.ends_with("/layer.tar") || name.starts_with("blobs/")) {
            continue;
        }
        match read_layer(&mut input, &name, &mut scan) {
            Ok(Some(layer)) => {
                layers.insert(name, layer);
            }
            Ok(None) => {}
            Err(err) => {
                unreadable.insert(name, format!("{err:#}"));
            }
        }
    }
    let manifest = manifest.ok_or_else(|| anyhow::anyhow!("the `docker save` archive has no manifest.json"))?;
    let order = strings(&manifest[0]["Layers"]);
    // Every layer the image lists must have been read, and be the layer inspect names.
    let mut merged_from = Vec::new();
    for (i, name) in order.iter().enumerate() {
        let which = format!("layer {} of {} ({name})", i + 1, order.len());
        match (layers.get(name), unreadable.get(name)) {
            (Some(layer), _) => {
                if let Some(want) = expected.get(i).filter(|want| **want != layer.diff_id) {
                    scan.violations.push(format!(
                        "{which} reads as {} where the image lists {want}: it was not read whole",
                        layer.diff_id
                    ));
                }
                scan.layers.push(layer.diff_id.clone());
                merged_from.push(layer);
            }
            (None, Some(err)) => scan.violations.push(format!("{which} could not be read: {err}")),
            (None, None) => scan
                .violations
                .push(format!("{which} is listed in manifest.json but not in the archive")),
        }
    }
    if !expected.is_empty() && order.len() != expected.len() {
        scan.violations.push(format!(
            "the archive lists {} layers where the image has {}: every layer must be scanned",
            order.len(),
            expected.len()
        ));
    }
    if scan.files == 0 {
        scan.violations
            .push("no file was found in any layer: nothing was scanned, so nothing is known".to_owned());
    }
    if prod {
        let mut merged: std::collections::BTreeMap<String, u32> = Default::default();
        for layer in merged_from {
            for (path, mode) in &layer.entries {
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

/// A JSON array of strings (manifest.json's `Layers`, inspect's `RootFS.Layers`); empty
/// when it is none.
fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect()
}

/// A blob of a `docker save` archive as an uncompressed tar stream, and whether it was
/// stored compressed (gzip or zstd); `None` for JSON (configs, manifests, indexes).
fn open_layer<'a>(input: &'a mut impl std::io::BufRead) -> Result<Option<(Box<dyn Read + 'a>, bool)>> {
    let head = input.fill_buf()?;
    Ok(Some(match head {
        [] | [b'{' | b'[', ..] => return Ok(None),
        [0x1f, 0x8b, ..] => (Box::new(flate2::read::MultiGzDecoder::new(input)), true),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => (
            Box::new(
                ruzstd::decoding::StreamingDecoder::new(input).map_err(|e| anyhow::anyhow!("a bad zstd frame: {e}"))?,
            ),
            true,
        ),
        _ => (Box::new(input), false),
    }))
}

/// An image's size measured the same way in either image store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    /// The root filesystem: every layer's tar, uncompressed.
    pub rootfs: u64,
    /// What a push sends and a pull fetches: every layer gzip-compressed (as the
    /// containerd store keeps it; compressed here, at gzip's default level, where the
    /// classic store keeps layers uncompressed).
    pub transfer: u64,
}

/// The [`Sizes`] of the image in a `docker save` archive (the layers its manifest.json
/// lists, whatever else the archive holds).
pub fn layer_sizes(archive: impl Read) -> Result<Sizes> {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut outer = tar::Archive::new(archive);
    let mut blobs: std::collections::HashMap<String, Sizes> = Default::default();
    let mut listed: Vec<String> = Vec::new();
    for entry in outer.entries()? {
        let entry = entry?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let stored = entry.size();
        let mut input = std::io::BufReader::with_capacity(1 << 16, entry);
        if name == "manifest.json" {
            let manifest: serde_json::Value = serde_json::from_reader(input)?;
            listed = strings(&manifest[0]["Layers"]);
            continue;
        }
        let Some((mut tar, compressed)) = open_layer(&mut input)? else {
            continue;
        };
        let sizes = if compressed {
            let rootfs = std::io::copy(&mut tar, &mut std::io::sink())?;
            Sizes {
                rootfs,
                transfer: stored,
            }
        } else {
            let mut gz = flate2::write::GzEncoder::new(Count(0), flate2::Compression::default());
            let rootfs = std::io::copy(&mut tar, &mut gz)?;
            Sizes {
                rootfs,
                transfer: gz.finish()?.0,
            }
        };
        blobs.insert(name, sizes);
    }
    let mut total = Sizes::default();
    for name in &listed {
        let s = blobs
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("the layer {name} listed in manifest.json is not in the archive"))?;
        total.rootfs += s.rootfs;
        total.transfer += s.transfer;
    }
    Ok(total)
}

/// A reader that hashes what passes through it (a layer's diff id is the SHA-256 of its
/// uncompressed tar).
struct Hashing<R> {
    inner: R,
    sha: ring::digest::Context,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

/// Read one blob of the archive as a layer: uncompress it (gzip, zstd, or none), scan
/// every file, and hash it. `None` for a blob that is not a layer (an OCI config, manifest
/// or index is JSON).
fn read_layer(input: &mut impl std::io::BufRead, name: &str, scan: &mut Scan) -> Result<Option<Layer>> {
    let Some((tar, _)) = open_layer(input)? else {
        return Ok(None);
    };
    let mut archive = tar::Archive::new(Hashing {
        inner: tar,
        sha: ring::digest::Context::new(&ring::digest::SHA256),
    });
    let mut entries = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        scan.files += 1;
        let path = String::from_utf8_lossy(&entry.path_bytes())
            .trim_start_matches("./")
            .to_owned();
        let mode = entry.header().mode().unwrap_or(0);
        if path.starts_with("run/secrets/") && path != "run/secrets/" {
            scan.violations
                .push(format!("{path} is left in a layer ({name}): a secret mount's stub"));
        }
        if entry.header().entry_type().is_file() {
            let mut content = Vec::new();
            entry.read_to_end(&mut content)?;
            if holds_private_key(&content) {
                scan.violations
                    .push(format!("{path} in layer {name} holds a private key"));
            }
        }
        entries.push((path, mode));
    }
    // The tar's end blocks (and any padding after them) are part of the diff id.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink())?;
    let diff_id = format!(
        "sha256:{}",
        rest.sha
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    Ok(Some(Layer { diff_id, entries }))
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

/// The whole policy for one service's image at `target`: its Dockerfile, the built
/// image's configuration, and every layer. Each violation is prefixed with the service.
pub fn check_image(project: &Project, name: &str, target: Target) -> Result<Vec<String>> {
    let m = &project.manifest;
    let file = project.root.join(m.services[name].path.get_ref()).join("Dockerfile");
    let reference = crate::bake::service_ref(m, name, target);
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let mut violations: Vec<String> = dockerfile(&text, target).into_iter().collect();
    let inspect = crate::docker::inspect_image(&reference)
        .with_context(|| format!("build it first: `cargo xtask build {name} --target {target}`"))?;
    violations.extend(image_config(&inspect, target));
    let layers = strings(&inspect["RootFS"]["Layers"]);
    let scan = save_and_scan(&reference, target == Target::Prod, &layers)?;
    ui::note(&format!(
        "{reference}: {} files in {} of its {} layers scanned",
        scan.files,
        scan.layers.len(),
        layers.len()
    ));
    violations.extend(scan.violations);
    Ok(violations.into_iter().map(|v| format!("{name}: {v}")).collect())
}

impl flags::Lint {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let target = self.target.unwrap_or(crate::manifest::Target::Prod);
        let m = &project.manifest;
        let mut violations = Vec::new();
        for name in &m.service_names(&self.names)? {
            if dry_run {
                let file = project
                    .root
                    .join(m.services[name.as_str()].path.get_ref())
                    .join("Dockerfile");
                let reference = crate::bake::service_ref(m, name, target);
                println!("check {} ({target}) and every layer of {reference}", file.display());
                continue;
            }
            violations.extend(check_image(project, name, target)?);
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

/// `docker save` an image and scan every layer of it (`lint::scan_archive`).
/// `layers` are the image's diff ids (`RootFS.Layers`), each of which must be read.
pub fn save_and_scan(reference: &str, prod: bool, layers: &[String]) -> anyhow::Result<Scan> {
    crate::docker::step(format!("save {reference}"), &["save", reference])
        .timeout(std::time::Duration::from_secs(600))
        .pipe(|out| scan_archive(out, prod, layers))
}

/// The uncompressed and compressed sizes of an image (`docker save`, read by
/// `lint::layer_sizes`): the same figures on either image store.
pub fn image_sizes(reference: &str) -> anyhow::Result<Sizes> {
    crate::docker::step(format!("save {reference}"), &["save", reference])
        .timeout(std::time::Duration::from_secs(600))
        .pipe(|out| layer_sizes(out))
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
        assert_eq!(dockerfile(GOOD, Target::Prod), Vec::<String>::new());
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
        let v = dockerfile(bad, Target::Prod);
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
            dockerfile("FROM debian:latest AS prod\n", Target::Prod)
                .iter()
                .any(|x| x.starts_with("DL3007"))
        );
        assert!(
            dockerfile("FROM alpine:3.20 AS prod\n", Target::Prod)
                .iter()
                .any(|x| x.contains("not Debian"))
        );
        assert!(
            dockerfile(&GOOD.replace("USER 10001:10001", "USER root"), Target::Prod)
                .iter()
                .any(|x| x.contains("runs as root"))
        );
        assert!(
            dockerfile(GOOD, Target::Dev)
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
        assert!(image_config(&good, Target::Prod).is_empty());
        let bad = serde_json::json!({"Config": {"User": "", "Env": ["DB_PASSWORD=x"], "Labels": {}}});
        let v = image_config(&bad, Target::Prod);
        assert_eq!(v.len(), 7, "{v:#?}");
        // Outside prod, root is allowed (local runs tools as root).
        assert!(!image_config(&bad, Target::Local).iter().any(|x| x.contains("non-root")));
    }

    fn tar(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, mode, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(*mode);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, name, *content).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn diff_id(layer: &[u8]) -> String {
        let sha = ring::digest::digest(&ring::digest::SHA256, layer);
        format!(
            "sha256:{}",
            sha.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }

    /// A `docker save` archive of the classic store: `<n>/layer.tar`, uncompressed.
    fn classic(layers: &[&[u8]]) -> (Vec<u8>, Vec<String>) {
        let names: Vec<String> = (0..layers.len()).map(|i| format!("{i}/layer.tar")).collect();
        let manifest = serde_json::json!([{ "Config": "config.json", "Layers": names }]).to_string();
        let mut entries: Vec<(&str, u32, &[u8])> = vec![("manifest.json", 0o644, manifest.as_bytes())];
        entries.extend(names.iter().zip(layers).map(|(n, l)| (n.as_str(), 0o644, *l)));
        (tar(&entries), layers.iter().map(|l| diff_id(l)).collect())
    }

    /// One of the containerd store's: an OCI layout whose blobs are compressed layers,
    /// JSON documents beside them, and manifest.json after the blobs.
    fn oci(layers: &[(&[u8], &str)]) -> (Vec<u8>, Vec<String>) {
        let blobs: Vec<Vec<u8>> = layers
            .iter()
            .map(|(layer, how)| match *how {
                "gzip" => {
                    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    std::io::Write::write_all(&mut gz, layer).unwrap();
                    gz.finish().unwrap()
                }
                "zstd" => ruzstd::encoding::compress_to_vec(*layer, ruzstd::encoding::CompressionLevel::Fastest),
                _ => layer.to_vec(),
            })
            .collect();
        let names: Vec<String> = blobs
            .iter()
            .map(|b| format!("blobs/sha256/{}", &diff_id(b)[7..]))
            .collect();
        let config = br#"{"architecture":"amd64","rootfs":{"type":"layers"}}"#;
        let manifest = serde_json::json!([{ "Config": "blobs/sha256/config", "Layers": names }]).to_string();
        let mut entries: Vec<(&str, u32, &[u8])> = vec![("blobs/sha256/config", 0o644, config)];
        entries.extend(names.iter().zip(&blobs).map(|(n, b)| (n.as_str(), 0o644, &b[..])));
        entries.push(("index.json", 0o644, b"{}"));
        entries.push(("manifest.json", 0o644, manifest.as_bytes()));
        (tar(&entries), layers.iter().map(|(l, _)| diff_id(l)).collect())
    }

    const KEY: &[u8] =
        b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";

    #[test]
    fn the_layer_scan_finds_keys_stubs_and_tools() {
        let layer = tar(&[
            ("etc/hostname", 0o644, b"x"),
            ("app/leak.pem", 0o600, KEY),
            // A PEM parser's string constant is not a key.
            (
                "usr/lib/libpem.so",
                0o644,
                b"\x00-----BEGIN RSA PRIVATE KEY-----\x00-----END",
            ),
            ("run/secrets/root-ca", 0o600, b""),
            ("usr/bin/gcc", 0o755, b"ELF"),
            ("usr/bin/su", 0o4755, b"ELF"),
        ]);
        let (archive, ids) = classic(&[&layer]);
        let scan = scan_archive(&archive[..], true, &ids).unwrap();
        assert_eq!(scan.files, 6);
        assert_eq!(scan.layers, ids);
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
        let (archive, ids) = classic(&[&layer, &fixed]);
        let v = scan_archive(&archive[..], true, &ids).unwrap().violations.join("\n");
        assert!(!v.contains("usr/bin/su") && !v.contains("usr/bin/gcc"), "{v}");
        assert!(v.contains("app/leak.pem"), "{v}");
        let (clean, ids) = classic(&[&tar(&[("etc/hostname", 0o644, b"x")])]);
        let scan = scan_archive(&clean[..], true, &ids).unwrap();
        assert!(scan.violations.is_empty(), "{:?}", scan.violations);
    }

    #[test]
    fn compressed_oci_layers_are_read_whole() {
        let base = tar(&[("etc/hostname", 0o644, b"x"), ("usr/bin/env", 0o755, b"ELF")]);
        let planted = tar(&[("tmp/leak.key", 0o600, KEY)]);
        let deleted = tar(&[("tmp/.wh.leak.key", 0o644, b"")]);
        // The key sits in a zstd layer that a later gzip layer deletes: still found.
        let (archive, ids) = oci(&[(&base, "gzip"), (&planted, "zstd"), (&deleted, "gzip")]);
        let scan = scan_archive(&archive[..], true, &ids).unwrap();
        assert_eq!(scan.layers, ids, "every layer is read, in order");
        assert_eq!(scan.files, 4);
        let v = scan.violations.join("\n");
        assert!(v.contains("tmp/leak.key") && v.contains("private key"), "{v}");
        // Without the key, the same layout passes.
        let (archive, ids) = oci(&[(&base, "gzip"), (&deleted, "zstd")]);
        let scan = scan_archive(&archive[..], true, &ids).unwrap();
        assert!(scan.violations.is_empty(), "{:?}", scan.violations);
    }

    #[test]
    fn sizes_mean_the_same_in_both_layouts() {
        let layer = tar(&[("etc/data", 0o644, &[7u8; 100_000][..])]);
        let (classic, _) = classic(&[&layer]);
        let (oci, _) = oci(&[(&layer, "gzip")]);
        let a = layer_sizes(&classic[..]).unwrap();
        let b = layer_sizes(&oci[..]).unwrap();
        assert_eq!(a.rootfs, layer.len() as u64);
        assert_eq!(b.rootfs, layer.len() as u64);
        // Both compressed: a few hundred bytes of a repeated byte, not 100 kB.
        assert!(a.transfer < 2_000 && b.transfer < 2_000, "{a:?} {b:?}");
    }

    #[test]
    fn a_layer_not_read_is_a_failure_never_a_pass() {
        let base = tar(&[("etc/hostname", 0o644, b"x")]);
        let (archive, mut ids) = oci(&[(&base, "gzip")]);
        // The image lists one more layer than the archive holds.
        ids.push("sha256:feed".into());
        let v = scan_archive(&archive[..], false, &ids).unwrap().violations.join("\n");
        assert!(v.contains("lists 1 layers where the image has 2"), "{v}");
        // A layer whose content is not the one the image names.
        let other = tar(&[("etc/passwd", 0o644, b"root")]);
        let (archive, _) = oci(&[(&other, "gzip")]);
        let v = scan_archive(&archive[..], false, &ids[..1])
            .unwrap()
            .violations
            .join("\n");
        assert!(v.contains("layer 1 of 1") && v.contains("not read whole"), "{v}");
        // A truncated gzip layer is named.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &base).unwrap();
        let mut blob = gz.finish().unwrap();
        blob.truncate(blob.len() / 2);
        let manifest = br#"[{"Layers": ["blobs/sha256/cut"]}]"#;
        let archive = tar(&[("blobs/sha256/cut", 0o644, &blob), ("manifest.json", 0o644, manifest)]);
        let v = scan_archive(&archive[..], false, &[]).unwrap().violations.join("\n");
        assert!(v.contains("layer 1 of 1 (blobs/sha256/cut) could not be read"), "{v}");
        // An archive with no file in any layer scanned nothing: that fails.
        let (empty, ids) = oci(&[(&tar(&[]), "gzip")]);
        let v = scan_archive(&empty[..], false, &ids).unwrap().violations.join("\n");
        assert!(v.contains("nothing was scanned"), "{v}");
    }
}
