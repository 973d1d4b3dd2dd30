//! The certificates' files: the lock, the 0700 directory, keys 0600 from the moment they
//! exist (written beside their place, then renamed), and reading a certificate back.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::x509;

/// The exclusive lock every writer holds (`certs.lock` beside the directory).
pub(super) fn lock(dir: &Path) -> Result<fs::File> {
    crate::project::lock_file(&dir.parent().unwrap_or(dir).join("certs.lock"), "certs")
}

pub(super) fn make_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!(
            "{} is a file, not a directory: move it away, then run `cargo xtask certs`",
            dir.display()
        );
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}: check that it is writable by you", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set {} to mode 0700", dir.display()))?;
    Ok(())
}

/// Write `content` to a new temporary file beside `path` (0600 for keys, from the
/// moment it exists; 0644 for certificates), flushed to disk. Returns its path.
pub(super) fn stage(path: &Path, content: &str, secret: bool) -> Result<PathBuf> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .with_context(|| {
            format!(
                "cannot write in {}: check that it is writable by you",
                path.parent().unwrap_or(path).display()
            )
        })?;
    file.write_all(content.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    Ok(tmp)
}

/// Read the first certificate of a PEM file, as DER.
pub(super) fn read_cert_der(path: &Path) -> Result<Vec<u8>> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let pem = pem::parse(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a PEM certificate ({e}): it may be truncated or corrupt",
            path.display()
        )
    })?;
    if pem.tag() != "CERTIFICATE" {
        bail!(
            "{} holds a `{}` PEM block, not a CERTIFICATE",
            path.display(),
            pem.tag()
        );
    }
    x509::parse(pem.contents()).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a valid X.509 certificate ({e}): it may be truncated or corrupt",
            path.display()
        )
    })?;
    Ok(pem.into_contents())
}

/// The SHA-256 of a certificate file's bytes (hex), after checking it is one: the
/// fingerprint images carry as `CA_SHA256`, computed from the very file passed as the
/// `root-ca` secret.
pub fn file_sha256(path: &Path) -> Result<String> {
    read_cert_der(path)?;
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(sha256_hex(&bytes))
}

/// How many PEM certificates a bundle holds.
pub fn count_pem_certificates(bytes: &[u8]) -> usize {
    // Block by block: one damaged block does not hide the others.
    String::from_utf8_lossy(bytes)
        .split_inclusive("-----END CERTIFICATE-----")
        .filter_map(|block| pem::parse(block).ok())
        .filter(|p| p.tag() == "CERTIFICATE" && x509::parse(p.contents()).is_ok())
        .count()
}

pub(super) use crate::digest::sha256_hex;
