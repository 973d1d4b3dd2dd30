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

use anyhow::{Context, Result};

pub(crate) mod dockerfile;
mod layers;

pub use dockerfile::{dockerfile, image_config};
pub use layers::image_sizes;
use layers::{save_and_scan, strings};

use crate::manifest::Target;
use crate::{flags, project::Project, ui};

/// The whole policy for one service's image at `target`: its Dockerfile, the built
/// image's configuration, and every layer. Each violation is prefixed with the service.
pub fn check_image(project: &Project, name: &str, target: Target) -> Result<Vec<String>> {
    let m = &project.manifest;
    let file = project.root.join(m.services[name].path.get_ref()).join("Dockerfile");
    let reference = crate::bake::service_image(m, name, target).reference();
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
    if target == Target::Prod {
        reproducible(&reference, &inspect, &scan);
        if scan.superseded > 0 {
            let largest: Vec<String> = scan
                .largest_superseded
                .iter()
                .map(|(path, size)| format!("{path} ({size} B)"))
                .collect();
            ui::warn(&format!(
                "{reference}: {} bytes of files a later layer rewrites or removes, carried by every pull and                  seen by nothing (largest: {}): write each file once, in the layer that keeps it",
                scan.superseded,
                largest.join(", ")
            ));
        }
    }
    violations.extend(scan.violations);
    Ok(violations.into_iter().map(|v| format!("{name}: {v}")).collect())
}

/// Why two builds of one commit would give another image: files that carry a time after
/// the commit's (the image's `org.opencontainers.image.created`, its SOURCE_DATE_EPOCH),
/// which a builder that stamps file times never leaves. A warning: the oldest engines
/// cannot stamp them.
fn reproducible(reference: &str, inspect: &serde_json::Value, scan: &layers::Scan) {
    let Some(created) = inspect["Config"]["Labels"]["org.opencontainers.image.created"].as_str() else {
        return;
    };
    let Ok(epoch) = crate::bases::parse_utc(created) else {
        return;
    };
    let epoch = u64::try_from(epoch.unix_timestamp()).unwrap_or(0);
    let after = scan.after(epoch);
    if let (true, Some((path, time))) = (after > 0, &scan.newest) {
        ui::warn(&format!(
            "{reference} is not reproducible: {after} files carry a time after its commit's ({created}),              such as {path} ({}); two builds of this commit give other layers. The builder did not stamp              them: `cargo xtask doctor` shows whether it can (reproducible timestamps)",
            crate::bases::format_utc(
                time::OffsetDateTime::from_unix_timestamp(*time as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            )
        ));
    }
}

/// Bytes of `reference`'s files that a later layer rewrites or removes (what dive counts
/// as wasted): read from every layer of its `docker save`.
pub fn superseded_bytes(reference: &str) -> Result<u64> {
    let inspect = crate::docker::inspect_image(reference)?;
    let layers = strings(&inspect["RootFS"]["Layers"]);
    Ok(save_and_scan(reference, false, &layers)?.superseded)
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
                let reference = crate::bake::service_image(m, name, target).reference();
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

#[cfg(test)]
mod tests {
    use super::layers::{layer_sizes, scan_archive};
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
        crate::digest::sha256(layer)
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
        let (clean, ids) = classic(&[&tar(&[
            ("etc/hostname", 0o644, b"x"),
            ("usr/lib/os-release", 0o644, b"ID=debian"),
            ("var/lib/dpkg/status.d/libc6", 0o644, b"Package: libc6"),
        ])]);
        let scan = scan_archive(&clean[..], true, &ids).unwrap();
        assert!(scan.violations.is_empty(), "{:?}", scan.violations);
    }

    #[test]
    fn a_prod_image_keeps_the_package_database_and_loses_the_package_manager() {
        let base = tar(&[
            ("usr/lib/os-release", 0o644, b"ID=debian"),
            ("var/lib/dpkg/status", 0o644, b"Package: apt"),
            ("usr/bin/apt-get", 0o755, b"ELF"),
            ("usr/bin/dpkg", 0o755, b"ELF"),
            ("usr/bin/dpkg-query", 0o755, b"ELF"),
            ("app/.venv/bin/pip3.13", 0o755, b"#!"),
            ("usr/bin/python3", 0o755, b"ELF"),
            ("usr/bin/aptly-notes", 0o644, b"not apt"),
        ]);
        let (archive, ids) = classic(&[&base]);
        let v = scan_archive(&archive[..], true, &ids).unwrap().violations;
        let named: Vec<&str> = v.iter().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(
            named,
            [
                "app/.venv/bin/pip3.13",
                "usr/bin/apt-get",
                "usr/bin/dpkg",
                "usr/bin/dpkg-query"
            ],
            "{v:#?}"
        );
        // The programs removed in the same image and the database with them: the
        // programs pass, the missing database and release are each named.
        let gone = tar(&[
            ("usr/bin/.wh.apt-get", 0o644, b""),
            ("usr/bin/.wh.dpkg", 0o644, b""),
            ("usr/bin/.wh.dpkg-query", 0o644, b""),
            ("app/.venv/bin/.wh.pip3.13", 0o644, b""),
            ("var/lib/dpkg/.wh.status", 0o644, b""),
            ("usr/lib/.wh.os-release", 0o644, b""),
        ]);
        let (archive, ids) = classic(&[&base, &gone]);
        let v = scan_archive(&archive[..], true, &ids).unwrap().violations.join("\n");
        assert!(!v.contains("carries no compiler"), "{v}");
        assert!(v.contains("no os-release") && v.contains("no package database"), "{v}");
        // Outside prod neither applies.
        let v = scan_archive(&archive[..], false, &ids).unwrap().violations;
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn bytes_a_later_layer_rewrites_or_removes_are_counted() {
        let first = tar(&[
            ("etc/ca.crt", 0o644, &[1u8; 100][..]),
            ("var/log/x.log", 0o644, &[2u8; 50][..]),
            ("usr/lib/x/a.so", 0o644, &[3u8; 30][..]),
            ("app/kept", 0o644, &[4u8; 7][..]),
        ]);
        let second = tar(&[
            ("etc/ca.crt", 0o644, &[5u8; 10][..]),
            ("var/log/.wh.x.log", 0o644, b""),
            ("usr/lib/.wh.x", 0o644, b""),
        ]);
        let (archive, ids) = classic(&[&first, &second]);
        let scan = scan_archive(&archive[..], false, &ids).unwrap();
        assert_eq!(scan.superseded, 180);
        assert_eq!(
            scan.largest_superseded,
            [
                ("etc/ca.crt".to_owned(), 100),
                ("var/log/x.log".to_owned(), 50),
                ("usr/lib/x/a.so".to_owned(), 30)
            ]
        );
        // One layer writes nothing twice.
        let (archive, ids) = classic(&[&first]);
        assert_eq!(scan_archive(&archive[..], false, &ids).unwrap().superseded, 0);
    }

    #[test]
    fn files_newer_than_the_commit_are_counted() {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, time) in [("app/a", 100u64), ("app/b", 200), ("etc/c", 50)] {
            let mut header = tar::Header::new_gnu();
            header.set_size(1);
            header.set_mode(0o644);
            header.set_mtime(time);
            builder.append_data(&mut header, name, &b"x"[..]).unwrap();
        }
        let layer = builder.into_inner().unwrap();
        let (archive, ids) = classic(&[&layer]);
        let scan = scan_archive(&archive[..], false, &ids).unwrap();
        assert_eq!(scan.newest, Some(("app/b".to_owned(), 200)));
        assert_eq!((scan.after(100), scan.after(200), scan.after(0)), (1, 0, 3));
    }

    #[test]
    fn compressed_oci_layers_are_read_whole() {
        let base = tar(&[
            ("etc/hostname", 0o644, b"x"),
            ("usr/bin/env", 0o755, b"ELF"),
            ("etc/os-release", 0o644, b"ID=debian"),
            ("var/lib/dpkg/status", 0o644, b"Package: libc6"),
        ]);
        let planted = tar(&[("tmp/leak.key", 0o600, KEY)]);
        let deleted = tar(&[("tmp/.wh.leak.key", 0o644, b"")]);
        // The key sits in a zstd layer that a later gzip layer deletes: still found.
        let (archive, ids) = oci(&[(&base, "gzip"), (&planted, "zstd"), (&deleted, "gzip")]);
        let scan = scan_archive(&archive[..], true, &ids).unwrap();
        assert_eq!(scan.layers, ids, "every layer is read, in order");
        assert_eq!(scan.files, 6);
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
