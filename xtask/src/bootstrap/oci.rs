//! The root image as an OCI image layout archive, written here from mmdebstrap's
//! tarballs, for `docker load` into the containerd image store: one image per platform
//! (its tarball, as mmdebstrap wrote it, the one uncompressed layer), one image index
//! naming them all, that index named as the root image. Nothing in it depends on when or
//! where it is written: the same tarballs and creation time give the same image id
//! (`docker import`, which the classic store still uses, stamps the time of the import).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

/// One platform's root filesystem, as mmdebstrap made it.
#[derive(Debug, Clone)]
pub struct Rootfs {
    /// `arm64`.
    pub arch: String,
    pub tarball: PathBuf,
}

/// What is written, and where.
#[derive(Debug, Clone)]
pub struct Archive {
    pub path: PathBuf,
    /// The root image's name (`debian:trixie-slim`, `registry.example.com/team/debian:x`).
    pub image: String,
    pub roots: Vec<Rootfs>,
    pub labels: BTreeMap<String, String>,
}

/// A blob of the layout: its digest, size and media type.
struct Blob {
    digest: String,
    size: u64,
    media_type: &'static str,
}

impl Blob {
    fn descriptor(&self) -> serde_json::Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size })
    }
}

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

impl Archive {
    /// Write the archive, every image `created` at that time (RFC 3339).
    pub fn write(&self, created: &str) -> Result<()> {
        let file = File::create(&self.path).with_context(|| format!("creating {}", self.path.display()))?;
        let mut tar = tar::Builder::new(BufWriter::new(file));
        tar.mode(tar::HeaderMode::Deterministic);
        let mut manifests = Vec::new();
        for root in &self.roots {
            let layer = Blob {
                digest: sha256_file(&root.tarball)?,
                size: std::fs::metadata(&root.tarball)
                    .with_context(|| format!("reading {}", root.tarball.display()))?
                    .len(),
                media_type: LAYER,
            };
            let mut blob = File::open(&root.tarball).with_context(|| format!("opening {}", root.tarball.display()))?;
            append(&mut tar, &blob_path(&layer.digest), layer.size, &mut blob)?;
            let config = json!({
                "architecture": root.arch,
                "os": "linux",
                "created": created,
                "config": { "Cmd": ["bash"], "Labels": self.labels },
                "rootfs": { "type": "layers", "diff_ids": [layer.digest] },
                "history": [{ "created": created, "created_by": "mmdebstrap --variant=minbase (cargo xtask bootstrap)" }],
            });
            let config = put(&mut tar, CONFIG, &config)?;
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": config.descriptor(),
                "layers": [layer.descriptor()],
            });
            let manifest = put(&mut tar, MANIFEST, &manifest)?;
            let mut descriptor = manifest.descriptor();
            descriptor["platform"] = json!({ "architecture": root.arch, "os": "linux" });
            manifests.push(descriptor);
        }
        let index = put(
            &mut tar,
            INDEX,
            &json!({ "schemaVersion": 2, "mediaType": INDEX, "manifests": manifests }),
        )?;
        let mut named = index.descriptor();
        named["annotations"] = json!({
            "io.containerd.image.name": crate::docker::full_name(&self.image),
            "org.opencontainers.image.ref.name": self.image.rsplit_once(':').map_or("latest", |(_, tag)| tag),
        });
        let top = json!({ "schemaVersion": 2, "mediaType": INDEX, "manifests": [named] });
        let top = serde_json::to_vec(&top)?;
        append(&mut tar, "index.json", top.len() as u64, &mut &top[..])?;
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        append(&mut tar, "oci-layout", layout.len() as u64, &mut &layout[..])?;
        tar.into_inner()?
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))?;
        Ok(())
    }
}

/// Add one JSON blob under its digest.
fn put<W: Write>(tar: &mut tar::Builder<W>, media_type: &'static str, value: &serde_json::Value) -> Result<Blob> {
    let bytes = serde_json::to_vec(value)?;
    let blob = Blob {
        digest: crate::digest::sha256(&bytes),
        size: bytes.len() as u64,
        media_type,
    };
    append(tar, &blob_path(&blob.digest), blob.size, &mut &bytes[..])?;
    Ok(blob)
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, size: u64, data: &mut dyn Read) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, data)
        .with_context(|| format!("writing {path} into the root image's archive"))
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", crate::digest::hex(ctx.finish().as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_tarballs_give_the_same_archive() {
        let dir = std::env::temp_dir().join(format!("slipway-oci-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tarball = dir.join("root.tar");
        std::fs::write(&tarball, b"not really a tarball, only bytes").unwrap();
        let archive = |name: &str| Archive {
            path: dir.join(name),
            image: "debian:trixie-slim".into(),
            roots: ["amd64", "arm64"]
                .into_iter()
                .map(|arch| Rootfs {
                    arch: arch.into(),
                    tarball: tarball.clone(),
                })
                .collect(),
            labels: BTreeMap::from([("a".to_owned(), "b".to_owned())]),
        };
        archive("one.tar").write("2026-12-01T00:00:00Z").unwrap();
        archive("two.tar").write("2026-12-01T00:00:00Z").unwrap();
        let one = std::fs::read(dir.join("one.tar")).unwrap();
        assert_eq!(one, std::fs::read(dir.join("two.tar")).unwrap());
        // Both platforms are in the index, and the index is named.
        let mut names = Vec::new();
        let mut index = String::new();
        for entry in tar::Archive::new(&one[..]).entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            if path == "index.json" {
                entry.read_to_string(&mut index).unwrap();
            }
            names.push(path);
        }
        assert!(names.contains(&"oci-layout".to_owned()), "{names:?}");
        assert!(index.contains("docker.io/library/debian:trixie-slim"), "{index}");
        let text = String::from_utf8_lossy(&one);
        assert!(
            text.contains(r#""platform":{"architecture":"arm64","os":"linux"}"#),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
