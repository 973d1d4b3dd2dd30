//! `cargo xtask sbom [NAME...] [--target T] [--output FILE]`: a CycloneDX 1.5 SBOM of each
//! service's image, read from the image itself (its merged filesystem, `docker export`
//! of a container created and never started), never from the sources it was built from:
//!
//! - Debian packages: the package database (`var/lib/dpkg/status`), or the one-file-per-
//!   package entries a prod image built by copying carries (`var/lib/dpkg/status.d/`);
//! - Python distributions: each `*.dist-info/METADATA` (name, version, licence);
//! - Rust crates: the dependency list cargo-auditable embeds in a binary (its `.dep-v0`
//!   ELF section, zlib-compressed JSON).
//!
//! The document is a pure function of what was read and of the image's id: the same
//! image gives the same bytes (its serial number is derived from them, its timestamp is
//! the image's creation time). `release` attaches it to the pushed image by digest.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::manifest::Target;
use crate::{bake, docker, flags, project::Project, ui};

impl flags::Sbom {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let target = self.target.unwrap_or(Target::Prod);
        let names = project.manifest.service_names(&self.names)?;
        if self.output.is_some() && names.len() != 1 {
            bail!("--output names one file: give one service (such as `sbom gateway --output gateway.cdx.json`)");
        }
        for name in &names {
            let image = bake::service_image(&project.manifest, name, target);
            let out = self
                .output
                .clone()
                .unwrap_or_else(|| default_file(project, name, target));
            let container = container_name(name);
            if dry_run {
                println!("{}", create_step(&container, &image.reference(), None).command_line());
                println!("{}", export_step(&container).command_line());
                println!("# CycloneDX 1.5 -> {}", out.display());
                continue;
            }
            let sbom = make(name, &image)?;
            if out == Path::new("-") {
                println!("{}", serde_json::to_string_pretty(&sbom)?);
                ui::note(&format!("{}: {}", image.reference(), summary(&sbom)));
                continue;
            }
            write(&out, &sbom)?;
            ui::note(&format!(
                "{}: {} -> {}",
                image.reference(),
                summary(&sbom),
                out.display()
            ));
        }
        Ok(())
    }
}

/// Where `sbom` (and `release`) keep a service's SBOM: `.<brand>/sbom/<name>-<target>.cdx.json`.
pub fn default_file(project: &Project, name: &str, target: Target) -> PathBuf {
    project
        .state_dir()
        .join("sbom")
        .join(format!("{name}-{target}.cdx.json"))
}

/// Where the SBOM of one platform's image of an index is written:
/// `.<brand>/sbom/NAME-TARGET-OS-ARCH.cdx.json`.
pub fn platform_file(project: &Project, name: &str, target: Target, platform: &str) -> PathBuf {
    project
        .state_dir()
        .join("sbom")
        .join(format!("{name}-{target}-{}.cdx.json", platform.replace('/', "-")))
}

/// The SBOM of one platform's image of a pushed index, `at` its `name@sha256:...`:
/// pulled into this machine's store by that digest (it may have been built on another
/// node, or by another CI runner), then read there as [`make`] reads a local image.
pub fn make_platform(name: &str, image: &bake::Image, at: &str, platform: &str) -> Result<serde_json::Value> {
    docker::step(format!("pull {at}"), &["pull", "--quiet", "--platform", platform, at])
        .output(crate::plan::Output::Capture)
        .run()?;
    let config = docker::inspect_image(at)?;
    describe(name, image, &config, at, Some(platform))
}

/// The container an SBOM of service `name`'s image is read from (created, never started).
fn container_name(name: &str) -> String {
    format!("slipway-sbom-{}-{name}", std::process::id())
}

/// The SBOM of `image` (service `name`'s), read from the image in the local store.
pub fn make(name: &str, image: &bake::Image) -> Result<serde_json::Value> {
    let reference = image.reference();
    let config = docker::inspect_image(&reference)
        .with_context(|| format!("no image {reference} to describe: build it first (`cargo xtask build`)"))?;
    describe(name, image, &config, &reference, None)
}

/// The SBOM of what a container of `reference` (for `platform`, where given) holds:
/// created, never started, its filesystem exported and read, removed.
fn describe(
    name: &str,
    image: &bake::Image,
    config: &serde_json::Value,
    reference: &str,
    platform: Option<&str>,
) -> Result<serde_json::Value> {
    let container = container_name(name);
    let _removed = docker::Removed(container.clone());
    create_step(&container, reference, platform).run()?;
    let found = export_step(&container).pipe(|tar| read_filesystem(tar))?;
    Ok(document(&Subject::of(image, config), &found))
}

/// Write `sbom` to `out` whole (temporary file, then rename).
pub fn write(out: &Path, sbom: &serde_json::Value) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::fs::write_if_changed(out, &(serde_json::to_string_pretty(sbom)? + "\n"))
}

fn create_step(container: &str, reference: &str, platform: Option<&str>) -> crate::plan::Step {
    let mut args = vec!["create"];
    if let Some(platform) = platform {
        args.extend(["--platform", platform]);
    }
    args.extend(["--name", container, reference]);
    docker::step(format!("create a container of {reference} (never started)"), &args)
        .output(crate::plan::Output::Capture)
}

fn export_step(container: &str) -> crate::plan::Step {
    docker::step(format!("export the filesystem of {container}"), &["export", container])
        .timeout(std::time::Duration::from_secs(600))
}

/// "42 components (12 deb, 30 pypi)".
pub fn summary(sbom: &serde_json::Value) -> String {
    let components = sbom["components"].as_array().cloned().unwrap_or_default();
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for c in &components {
        let purl = c["purl"].as_str().unwrap_or_default();
        let kind = purl
            .strip_prefix("pkg:")
            .and_then(|p| p.split('/').next())
            .unwrap_or("other");
        *counts.entry(kind.to_owned()).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!("{} components ({})", components.len(), parts.join(", "))
}

/// A package ecosystem, as a purl type names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ecosystem {
    Deb,
    Pypi,
    Cargo,
}

/// One component found in the image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Component {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// Debian's architecture (`amd64`, `all`).
    pub arch: Option<String>,
    /// Licences as the package states them (names, or one SPDX expression).
    pub licenses: Vec<String>,
}

impl Component {
    /// Its package URL (purl spec): `pkg:deb/debian/libc6@2.41-12?arch=amd64&distro=debian-13`.
    pub fn purl(&self, distro: Option<&str>) -> String {
        match self.ecosystem {
            Ecosystem::Deb => {
                let mut qualifiers = Vec::new();
                if let Some(arch) = &self.arch {
                    qualifiers.push(format!("arch={}", encode(arch)));
                }
                if let Some(distro) = distro {
                    qualifiers.push(format!("distro={}", encode(distro)));
                }
                let q = if qualifiers.is_empty() {
                    String::new()
                } else {
                    format!("?{}", qualifiers.join("&"))
                };
                format!("pkg:deb/debian/{}@{}{q}", encode(&self.name), encode(&self.version))
            }
            // PyPI names are normalised: lowercase, runs of `-_.` as one `-`.
            Ecosystem::Pypi => format!(
                "pkg:pypi/{}@{}",
                encode(&normalise_python(&self.name)),
                encode(&self.version)
            ),
            Ecosystem::Cargo => format!("pkg:cargo/{}@{}", encode(&self.name), encode(&self.version)),
        }
    }
}

/// Percent-encode what a purl segment may not hold as is.
fn encode(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._~".contains(c) {
                c.to_string()
            } else {
                let mut buf = [0; 4];
                c.encode_utf8(&mut buf).bytes().map(|b| format!("%{b:02X}")).collect()
            }
        })
        .collect()
}

fn normalise_python(name: &str) -> String {
    let mut out = String::new();
    for c in name.to_lowercase().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What the image's filesystem says of itself.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    /// `ID` and `VERSION_ID` of its os-release (`debian`, `13`).
    pub os: Option<(String, String)>,
    pub components: BTreeSet<Component>,
    /// The binaries whose embedded dependency list was read.
    pub audited: Vec<String>,
}

/// Read a filesystem tar (`docker export`): the package database, Python metadata, and
/// the dependency list of every ELF executable that embeds one.
pub fn read_filesystem(tar: impl Read) -> Result<Found> {
    let mut found = Found::default();
    let mut os_release: Option<String> = None;
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().context("reading the image's filesystem")? {
        let mut entry = entry.context("reading the image's filesystem")?;
        let path = String::from_utf8_lossy(&entry.path_bytes())
            .trim_start_matches("./")
            .to_owned();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let mode = entry.header().mode().unwrap_or(0);
        let size = entry.header().size().unwrap_or(0);
        let wanted = path == "var/lib/dpkg/status"
            || path.starts_with("var/lib/dpkg/status.d/")
            || path == "usr/lib/os-release"
            || path == "etc/os-release"
            || (path.ends_with(".dist-info/METADATA"))
            || (mode & 0o111 != 0 && size > 64 && size < 512 << 20);
        if !wanted {
            continue;
        }
        let mut content = Vec::new();
        entry
            .read_to_end(&mut content)
            .with_context(|| format!("reading {path} from the image"))?;
        let text = || String::from_utf8_lossy(&content).into_owned();
        if path == "var/lib/dpkg/status" || path.starts_with("var/lib/dpkg/status.d/") {
            found.components.extend(dpkg_status(&text()));
        } else if path.ends_with("os-release") {
            os_release.get_or_insert_with(text);
        } else if path.ends_with(".dist-info/METADATA") {
            found.components.extend(python_metadata(&text()));
        } else if content.starts_with(b"\x7fELF")
            && let Some(crates) = auditable_crates(&content)?
        {
            found.components.extend(crates);
            found.audited.push(path);
        }
    }
    found.os = os_release.as_deref().and_then(parse_os_release);
    Ok(found)
}

fn parse_os_release(text: &str) -> Option<(String, String)> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_owned())
    };
    Some((field("ID")?, field("VERSION_ID").unwrap_or_default()))
}

/// The installed packages of a dpkg status file (or one status.d entry).
pub fn dpkg_status(text: &str) -> Vec<Component> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |key: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        };
        let (Some(name), Some(version)) = (field("Package"), field("Version")) else {
            continue;
        };
        // status.d entries of distroless-style images carry no Status line.
        if field("Status").is_some_and(|s| !s.ends_with(" installed")) {
            continue;
        }
        out.push(Component {
            ecosystem: Ecosystem::Deb,
            name,
            version,
            arch: field("Architecture"),
            licenses: Vec::new(),
        });
    }
    out
}

/// A Python distribution from its core metadata: name, version, and its licence
/// (`License-Expression`, else `License`, else the licence classifiers).
pub fn python_metadata(text: &str) -> Option<Component> {
    // The headers end at the first blank line (the description follows).
    let headers = text.split("\n\n").next().unwrap_or(text);
    let field = |key: &str| {
        headers
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty() && v != "UNKNOWN")
    };
    let name = field("Name")?;
    let version = field("Version")?;
    let licenses = if let Some(expression) = field("License-Expression") {
        vec![expression]
    } else if let Some(license) = field("License").filter(|l| !l.contains('\n') && l.len() < 100) {
        vec![license]
    } else {
        headers
            .lines()
            .filter_map(|l| l.strip_prefix("Classifier:"))
            .filter_map(|c| c.trim().strip_prefix("License :: "))
            .map(|c| c.rsplit(" :: ").next().unwrap_or(c).to_owned())
            .collect()
    };
    Some(Component {
        ecosystem: Ecosystem::Pypi,
        name,
        version,
        arch: None,
        licenses,
    })
}

/// The crates cargo-auditable embedded in an ELF binary (`.dep-v0`: zlib-compressed JSON,
/// `{"packages":[{"name","version","source","kind"?,...}]}`); build-time-only crates are
/// left out. `None` when the binary embeds no list.
pub fn auditable_crates(elf: &[u8]) -> Result<Option<Vec<Component>>> {
    let Some(section) = elf_section(elf, ".dep-v0") else {
        return Ok(None);
    };
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(section)
        .take(64 << 20)
        .read_to_end(&mut json)
        .context("the binary's .dep-v0 section (cargo-auditable) is not zlib data")?;
    let list: serde_json::Value =
        serde_json::from_slice(&json).context("the binary's .dep-v0 section (cargo-auditable) is not JSON")?;
    let crates = list["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["kind"].as_str() != Some("build"))
        // The binary's own crates (the workspace's, `local`) are the image's subject, not
        // dependencies of it.
        .filter(|p| p["source"].as_str() != Some("local") && p["root"] != true)
        .filter_map(|p| {
            Some(Component {
                ecosystem: Ecosystem::Cargo,
                name: p["name"].as_str()?.to_owned(),
                version: p["version"].as_str()?.to_owned(),
                arch: None,
                licenses: Vec::new(),
            })
        })
        .collect();
    Ok(Some(crates))
}

/// The bytes of the section `name` of a 64-bit little-endian ELF file, if it has one.
fn elf_section<'a>(elf: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    // ELFCLASS64, ELFDATA2LSB: what amd64 and arm64 Linux binaries are.
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return None;
    }
    let shoff = usize::try_from(u64_at(0x28)?).ok()?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let shstrndx = usize::from(u16_at(0x3e)?);
    let header = |i: usize| -> Option<(u32, usize, usize)> {
        let at = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let name = u32_at(at)?;
        let offset = usize::try_from(u64_at(at + 0x18)?).ok()?;
        let size = usize::try_from(u64_at(at + 0x20)?).ok()?;
        Some((name, offset, size))
    };
    let (_, names_at, names_size) = header(shstrndx)?;
    let names = elf.get(names_at..names_at.checked_add(names_size)?)?;
    for i in 0..shnum {
        let (name_at, offset, size) = header(i)?;
        let rest = names.get(name_at as usize..)?;
        let end = rest.iter().position(|b| *b == 0)?;
        if &rest[..end] == name.as_bytes() {
            return elf.get(offset..offset.checked_add(size)?);
        }
    }
    None
}

/// The image an SBOM describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub repository: String,
    pub tag: String,
    /// Its id in the local store (`sha256:...`).
    pub id: String,
    /// Its creation time, from its configuration (RFC 3339).
    pub created: String,
}

impl Subject {
    /// From the image's name and its `docker image inspect` configuration.
    pub fn of(image: &bake::Image, config: &serde_json::Value) -> Subject {
        Subject {
            repository: image.repository.clone(),
            tag: image.tag.clone(),
            id: config["Id"].as_str().unwrap_or_default().to_owned(),
            // The engine says UTC, to the nanosecond: whole seconds, CycloneDX's date-time.
            created: config["Created"]
                .as_str()
                .and_then(|c| c.get(..19))
                .map(|c| format!("{c}Z"))
                .unwrap_or_else(|| "1970-01-01T00:00:00Z".into()),
        }
    }
}

/// The CycloneDX 1.5 document: the image as the metadata's component, every component
/// found as a library with its purl and licences.
pub fn document(subject: &Subject, found: &Found) -> serde_json::Value {
    let distro = found.os.as_ref().map(|(id, version)| format!("{id}-{version}"));
    let mut seen = BTreeSet::new();
    let components: Vec<serde_json::Value> = found
        .components
        .iter()
        // One entry per package URL (a distribution installed twice is one component).
        .filter(|c| seen.insert(c.purl(distro.as_deref())))
        .map(|c| {
            let purl = c.purl(distro.as_deref());
            let mut value = serde_json::json!({
                "type": "library",
                "bom-ref": purl,
                "name": c.name,
                "version": c.version,
                "purl": purl,
            });
            if !c.licenses.is_empty() {
                value["licenses"] = c
                    .licenses
                    .iter()
                    .map(|l| serde_json::json!({ "license": { "name": l } }))
                    .collect();
            }
            value
        })
        .collect();
    // The serial number is derived from what the document says, so the same image
    // gives the same document.
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    digest.update(subject.id.as_bytes());
    for c in &components {
        digest.update(c["purl"].as_str().unwrap_or_default().as_bytes());
    }
    let d = digest.finish();
    let b = d.as_ref();
    let hex = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    // A version-4-shaped UUID (RFC 4122 variant) from the hash.
    let serial = format!(
        "urn:uuid:{}-{}-4{}-{:x}{}-{}",
        hex(0..4),
        hex(4..6),
        &hex(6..8)[1..],
        8 | (b[8] & 0x3),
        &hex(8..10)[1..],
        hex(10..16)
    );
    let mut container = serde_json::json!({
        "type": "container",
        "bom-ref": format!("{}:{}", subject.repository, subject.tag),
        "name": subject.repository,
        "version": subject.tag,
    });
    if let Some(hash) = subject.id.strip_prefix("sha256:") {
        container["hashes"] = serde_json::json!([{ "alg": "SHA-256", "content": hash }]);
    }
    let mut os = Vec::new();
    if let Some((id, version)) = &found.os {
        os.push(serde_json::json!({
            "type": "operating-system",
            "bom-ref": format!("os:{id}-{version}"),
            "name": id,
            "version": version,
        }));
    }
    serde_json::json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial,
        "version": 1,
        "metadata": {
            "timestamp": subject.created,
            "tools": { "components": [{
                "type": "application",
                "name": "slipway xtask",
                "version": env!("CARGO_PKG_VERSION"),
            }]},
            "component": container,
        },
        "components": os.into_iter().chain(components).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.41-12+deb13u5\n\
         Description: GNU C Library\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\n\
         Package: libgcc-s1\nArchitecture: amd64\nVersion: 14.2.0-19\n";

    #[test]
    fn installed_packages_are_read_from_the_status_file_and_its_distroless_form() {
        let found = dpkg_status(STATUS);
        let names: Vec<(&str, &str)> = found.iter().map(|c| (c.name.as_str(), c.version.as_str())).collect();
        assert_eq!(names, [("libc6", "2.41-12+deb13u5"), ("libgcc-s1", "14.2.0-19")]);
        assert_eq!(
            found[0].purl(Some("debian-13")),
            "pkg:deb/debian/libc6@2.41-12%2Bdeb13u5?arch=amd64&distro=debian-13"
        );
    }

    #[test]
    fn python_metadata_gives_name_version_and_licence() {
        let meta = "Metadata-Version: 2.4\nName: Uvicorn\nVersion: 0.38.0\nLicense-Expression: BSD-3-Clause\n\n\
                    Name: not-a-header\n";
        let c = python_metadata(meta).unwrap();
        assert_eq!((c.name.as_str(), c.version.as_str()), ("Uvicorn", "0.38.0"));
        assert_eq!(c.licenses, ["BSD-3-Clause"]);
        assert_eq!(c.purl(None), "pkg:pypi/uvicorn@0.38.0");
        let classic = "Name: typing_extensions\nVersion: 4.15.0\nClassifier: License :: OSI Approved :: Python \
                       Software Foundation License\n";
        let c = python_metadata(classic).unwrap();
        assert_eq!(c.licenses, ["Python Software Foundation License"]);
        assert_eq!(c.purl(None), "pkg:pypi/typing-extensions@4.15.0");
        assert!(python_metadata("Version: 1\n").is_none());
    }

    /// A minimal ELF64 file with one `.dep-v0` section holding `payload`.
    fn elf_with(payload: &[u8]) -> Vec<u8> {
        let names = b"\0.shstrtab\0.dep-v0\0";
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        let names_at = elf.len();
        elf.extend_from_slice(names);
        let data_at = elf.len();
        elf.extend_from_slice(payload);
        let shoff = elf.len();
        let header = |name: u32, offset: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(offset as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            h
        };
        elf.extend(header(0, 0, 0));
        elf.extend(header(1, names_at, names.len()));
        elf.extend(header(11, data_at, payload.len()));
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn the_crates_cargo_auditable_embeds_are_read_from_the_binary() {
        use std::io::Write;
        let list = br#"{"packages":[
            {"name":"gateway","version":"0.1.0","source":"local","root":true},
            {"name":"tokio","version":"1.48.0","source":"registry"},
            {"name":"cc","version":"1.2.0","source":"registry","kind":"build"}]}"#;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(list).unwrap();
        let elf = elf_with(&z.finish().unwrap());
        let crates = auditable_crates(&elf).unwrap().unwrap();
        let names: Vec<&str> = crates.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["tokio"]);
        assert_eq!(crates[0].purl(None), "pkg:cargo/tokio@1.48.0");
        // No section, no list; a section that is not zlib is an error that says so.
        assert!(auditable_crates(&elf_with(b"")[..64]).unwrap().is_none());
        let err = auditable_crates(&elf_with(b"not zlib")).unwrap_err();
        assert!(format!("{err:#}").contains("cargo-auditable"), "{err:#}");
    }

    #[test]
    fn the_document_is_the_same_for_the_same_image() {
        let mut found = Found {
            os: Some(("debian".into(), "13".into())),
            ..Found::default()
        };
        found.components.extend(dpkg_status(STATUS));
        let subject = Subject {
            repository: "localhost:5000/platform/gateway".into(),
            tag: "0.1.0".into(),
            id: format!("sha256:{}", "ab".repeat(32)),
            created: "2026-12-01T10:00:00Z".into(),
        };
        let doc = document(&subject, &found);
        assert_eq!(doc, document(&subject, &found));
        assert_eq!(doc["bomFormat"], "CycloneDX");
        assert_eq!(doc["metadata"]["component"]["type"], "container");
        assert_eq!(doc["components"][0]["type"], "operating-system");
        let serial = doc["serialNumber"].as_str().unwrap();
        assert_eq!(serial.len(), "urn:uuid:".len() + 36, "{serial}");
        assert_eq!(&serial[23..24], "4", "{serial}");
        assert_eq!(summary(&doc), "3 components (2 deb, 1 other)");
        let other = Subject {
            id: format!("sha256:{}", "cd".repeat(32)),
            ..subject
        };
        assert_ne!(document(&other, &found)["serialNumber"], doc["serialNumber"]);
    }
}
