//! Every layer of an image, read from `docker save` (the classic layout or the containerd
//! store's OCI layout; gzip, zstd or plain tar), each checked against its diff id and
//! scanned for private keys, secret stubs and, in prod, tools it must not carry; and the
//! layers' sizes, for the benchmarks.

use std::io::Read;

use anyhow::{Context, Result};

/// What a layer scan found.
#[derive(Debug, Default)]
pub struct Scan {
    pub violations: Vec<String>,
    /// Paths in the image, for the caller's own checks.
    pub files: usize,
    /// The layers read, in the image's order: each one's diff id (`sha256:` of its
    /// uncompressed tar), as `docker image inspect` lists them in `RootFS.Layers`.
    pub layers: Vec<String>,
    /// The entry with the latest modification time in any layer, and that time (seconds
    /// since the epoch): what tells whether the files were stamped with the commit's time.
    pub newest: Option<(String, u64)>,
    /// Every entry's modification time, in layer order.
    pub mtimes: Vec<u64>,
    /// Bytes of files a later layer rewrites or removes: carried by every pull, seen by
    /// nothing (what dive counts as wasted).
    pub superseded: u64,
    /// The largest of them (path, bytes), at most three.
    pub largest_superseded: Vec<(String, u64)>,
}

impl Scan {
    /// How many entries carry a time after `epoch` (the image's SOURCE_DATE_EPOCH): none
    /// when the builder stamped every file with it, so two builds of one commit agree.
    pub fn after(&self, epoch: u64) -> usize {
        self.mtimes.iter().filter(|t| **t > epoch).count()
    }
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

/// Package managers a prod image must not carry, by program name in a `bin`/`sbin`
/// directory: apt and dpkg (and their helpers, `apt-get`, `dpkg-query`...), pip in any
/// Python's version (`pip3.13`), uv. Their database stays (see [`package_database`]).
fn package_manager(path: &str) -> bool {
    let Some((dir, name)) = path.rsplit_once('/') else {
        return false;
    };
    let in_bin = matches!(
        dir,
        "bin" | "sbin" | "usr/bin" | "usr/sbin" | "usr/local/bin" | "usr/local/sbin"
    ) || dir.ends_with("/bin");
    let family =
        |stem: &str| name == stem || name.starts_with(&format!("{stem}-")) || name.starts_with(&format!("{stem}3"));
    in_bin && (family("apt") || family("dpkg") || family("pip") || name == "uv" || name == "easy_install")
}

/// What scanners read to know an image's packages, in a merged prod filesystem: the
/// release (os-release) and dpkg's database (`var/lib/dpkg/status`, or one file per
/// package in `status.d/`, distroless's layout). Each missing one is a violation: a
/// scanner that sees no package lets every vulnerability through.
fn package_database(merged: &std::collections::BTreeMap<String, Merged>) -> Vec<String> {
    let mut out = Vec::new();
    if !merged.contains_key("usr/lib/os-release") && !merged.contains_key("etc/os-release") {
        out.push(
            "no os-release (usr/lib/os-release or etc/os-release): a scanner cannot tell the distribution, so it judges none of its packages; copy it into the image".to_owned(),
        );
    }
    let status_d = |p: &String| p.starts_with("var/lib/dpkg/status.d/") && !p.ends_with('/');
    if !merged.contains_key("var/lib/dpkg/status") && !merged.keys().any(status_d) {
        out.push(
            "no package database (var/lib/dpkg/status or var/lib/dpkg/status.d/): a scanner sees none of the image's packages; remove the package manager's programs, never its database".to_owned(),
        );
    }
    out
}

/// One layer of the archive, read whole: its diff id and its (path, mode) entries.
struct Layer {
    diff_id: String,
    /// Each entry's path, mode and size.
    entries: Vec<(String, u32, u64)>,
}

/// One entry of the merged filesystem: its mode, and its size in the layer it came from.
#[derive(Clone, Copy)]
struct Merged {
    mode: u32,
    size: u64,
}

/// Scan the `docker save` archive read from `archive`, in either layout: the classic
/// store's (`<id>/layer.tar`, uncompressed) or the containerd store's OCI layout
/// (`blobs/sha256/<digest>`, gzip or zstd). Every layer is searched for private keys and
/// secret-mount stubs (what a layer holds leaks even when a later layer deletes it); with
/// `prod`, the merged filesystem (later layers over earlier ones, whiteouts applied) is
/// checked for compilers, package managers and setuid/setgid files, and for what
/// scanners read (os-release and the package database).
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
    // The merged filesystem (later layers over earlier ones, whiteouts applied), and the
    // bytes a later layer rewrites or removes: shipped, and never seen.
    let mut merged: std::collections::BTreeMap<String, Merged> = Default::default();
    let mut superseded: Vec<(String, u64)> = Vec::new();
    fn gone(
        merged: &mut std::collections::BTreeMap<String, Merged>,
        superseded: &mut Vec<(String, u64)>,
        keep: &dyn Fn(&String) -> bool,
    ) {
        merged.retain(|p, m| {
            let keep = keep(p);
            if !keep && m.size > 0 {
                superseded.push((p.clone(), m.size));
            }
            keep
        });
    }
    for layer in merged_from {
        for (path, mode, size) in &layer.entries {
            let (dir, file) = path.rsplit_once('/').map_or(("", path.as_str()), |(d, f)| (d, f));
            if file == ".wh..wh..opq" {
                let prefix = format!("{dir}/");
                gone(&mut merged, &mut superseded, &|p| !p.starts_with(&prefix));
            } else if let Some(name) = file.strip_prefix(".wh.") {
                let name = if dir.is_empty() {
                    name.to_owned()
                } else {
                    format!("{dir}/{name}")
                };
                let prefix = format!("{name}/");
                gone(&mut merged, &mut superseded, &|p| p != &name && !p.starts_with(&prefix));
            } else if let Some(old) = merged.insert(
                path.clone(),
                Merged {
                    mode: *mode,
                    size: *size,
                },
            ) && old.size > 0
            {
                superseded.push((path.clone(), old.size));
            }
        }
    }
    scan.superseded = superseded.iter().map(|(_, size)| size).sum();
    superseded.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    superseded.truncate(3);
    scan.largest_superseded = superseded;
    if prod {
        for (path, m) in &merged {
            if PROD_FORBIDDEN.contains(&path.as_str()) || package_manager(path) {
                scan.violations
                    .push(format!("{path}: a prod image carries no compiler or package manager"));
            }
            if m.mode & 0o6000 != 0 && !path.ends_with('/') {
                scan.violations.push(format!("CIS-DI-0008: {path} is setuid/setgid"));
            }
        }
        if scan.files > 0 {
            scan.violations.extend(package_database(&merged));
        }
    }
    Ok(scan)
}

/// A JSON array of strings (manifest.json's `Layers`, inspect's `RootFS.Layers`); empty
/// when it is none.
pub(super) fn strings(value: &serde_json::Value) -> Vec<String> {
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
        let mtime = entry.header().mtime().unwrap_or(0);
        scan.mtimes.push(mtime);
        if scan.newest.as_ref().is_none_or(|(_, t)| mtime > *t) {
            scan.newest = Some((path.clone(), mtime));
        }
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
        let size = if entry.header().entry_type().is_file() {
            entry.size()
        } else {
            0
        };
        entries.push((path, mode, size));
    }
    // The tar's end blocks (and any padding after them) are part of the diff id.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink())?;
    let diff_id = format!("sha256:{}", crate::digest::hex(rest.sha.finish().as_ref()));
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
