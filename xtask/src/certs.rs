//! `cargo xtask certs`: the Root CA, a server certificate per service and the mTLS client
//! certificates, under `.<brand>/certs/`. In Rust (rcgen signs, x509-parser reads,
//! webpki verifies): no openssl CLI.
//!
//! Files: `rootCA.crt`/`rootCA.key`, `<service>.crt`/`<service>.key` (serverAuth only),
//! `<service>-client.crt`/`<service>-client.key` (clientAuth only) for each mTLS client.
//!
//! Invariants: keys are created 0600 (at open, never chmod after), the directory is 0700,
//! every file is written to a temporary file and renamed; everything a run makes is made
//! in memory first, then written. A valid certificate is kept; a file that is corrupt,
//! whose key does not match, or that another CA signed is an error naming it, never
//! silently replaced. An exclusive lock (`.<brand>/certs.lock`) serialises runs, so two
//! at once cannot sign leaves with two different CAs.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use time::OffsetDateTime;

mod run;
pub use run::RunAs;

use crate::manifest::{KeyType, Manifest};
use crate::{flags, project::Project, ui};

pub const CA_CERT: &str = "rootCA.crt";

/// What `--rotate` reissues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotate {
    /// Server and client certificates, signed by the current Root CA.
    Leaf,
    /// A new Root CA, and every leaf signed by it.
    All,
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    RootCa,
    Server,
    Client,
}

impl Role {
    fn describe(self) -> &'static str {
        match self {
            Role::RootCa => "root CA",
            Role::Server => "server certificate",
            Role::Client => "mTLS client certificate",
        }
    }
}

/// One certificate Slipway keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub role: Role,
    /// The service it belongs to (none for the CA).
    pub service: Option<String>,
    /// File stem: `rootCA`, `gateway`, `gateway-client`.
    pub stem: String,
    /// Subject alternative names it must carry.
    pub sans: Vec<String>,
}

impl Wanted {
    pub fn cert_file(&self) -> String {
        format!("{}.crt", self.stem)
    }
    pub fn key_file(&self) -> String {
        format!("{}.key", self.stem)
    }
}

/// Everything the manifest says about certificates, in plain values.
#[derive(Debug, Clone)]
pub struct Spec {
    pub brand: String,
    pub project: String,
    pub key_type: KeyType,
    pub ca_days: u32,
    pub leaf_days: u32,
    pub warn_days: u32,
    pub wanted: Vec<Wanted>,
}

impl Spec {
    pub fn from_manifest(m: &Manifest) -> Spec {
        let mut wanted = vec![Wanted {
            role: Role::RootCa,
            service: None,
            stem: "rootCA".into(),
            sans: vec![],
        }];
        for (name, service) in &m.services {
            let name = name.get_ref().clone();
            let mut sans = vec![name.clone(), "localhost".into(), "127.0.0.1".into()];
            for extra in &service.sans {
                if !sans.contains(extra.get_ref()) {
                    sans.push(extra.get_ref().clone());
                }
            }
            wanted.push(Wanted {
                role: Role::Server,
                service: Some(name.clone()),
                stem: name,
                sans,
            });
        }
        // Every mTLS client gets a client certificate, and so does every service that
        // requires one: its own health check must present one to it.
        let servers: BTreeSet<&String> = m.certs.mtls.iter().map(|p| p.server.get_ref()).collect();
        let clients: BTreeSet<&String> = m.certs.mtls.iter().map(|p| p.client.get_ref()).chain(servers).collect();
        for client in clients {
            wanted.push(Wanted {
                role: Role::Client,
                service: Some(client.clone()),
                stem: format!("{client}-client"),
                sans: vec![client.clone()],
            });
        }
        Spec {
            brand: m.brand().to_owned(),
            project: m.project.get_ref().clone(),
            key_type: m.certs.key_type,
            ca_days: *m.certs.ca_days.get_ref(),
            leaf_days: *m.certs.leaf_days.get_ref(),
            warn_days: *m.certs.warn_days.get_ref(),
            wanted,
        }
    }

    fn ca(&self) -> &Wanted {
        &self.wanted[0]
    }

    fn leaves(&self) -> impl Iterator<Item = &Wanted> {
        self.wanted.iter().filter(|w| w.role != Role::RootCa)
    }
}

impl flags::Make {
    /// The `--rotate` value, checked.
    pub fn rotation(&self) -> anyhow::Result<Option<Rotate>> {
        match self.rotate.as_deref() {
            None => Ok(None),
            Some("leaf") => Ok(Some(Rotate::Leaf)),
            Some("all") => Ok(Some(Rotate::All)),
            Some(other) => anyhow::bail!(
                "`--rotate {other}` is not a rotation: use `--rotate leaf` (server and client \
                 certificates) or `--rotate all` (a new Root CA too)"
            ),
        }
    }
}

impl flags::Make {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let rotate = self.rotation()?;
        let spec = Spec::from_manifest(&project.manifest);
        let dir = project.certs_dir();
        if dry_run {
            let plan = plan(&dir, &spec, rotate)?;
            for change in &plan {
                println!("{} {}", change.what, dir.join(&change.file).display());
            }
            return Ok(());
        }
        let changes = ensure(&dir, &spec, rotate)?;
        report_changes(&dir, &changes, rotate);
        Ok(())
    }
}

impl flags::Certs {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        match self.subcommand {
            flags::CertsCmd::Make(cmd) => cmd.run(project, dry_run),
            flags::CertsCmd::Status(cmd) => cmd.run(project),
        }
    }
}

fn report_changes(dir: &Path, changes: &[Change], rotate: Option<Rotate>) {
    let made: Vec<&Change> = changes.iter().filter(|c| c.what != "kept").collect();
    for c in changes {
        ui::note(&format!("{:<9} {}", c.what, dir.join(&c.file).display()));
    }
    if made.is_empty() {
        ui::note("every certificate is valid: nothing changed");
        return;
    }
    if changes.iter().any(|c| c.file == CA_CERT && c.what != "kept") && rotate == Some(Rotate::All) {
        ui::warn("a new Root CA: rebuild the images that bake it (`cargo xtask build`), then restart the services");
    } else if rotate.is_some() {
        ui::warn("new server and client certificates: restart the services to load them");
    }
}

/// One file's fate in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub file: String,
    /// `created`, `reissued (why)`, `kept`.
    pub what: String,
}

/// What `ensure` would do, without writing (for `--dry-run`).
pub fn plan(dir: &Path, spec: &Spec, rotate: Option<Rotate>) -> Result<Vec<Change>> {
    Ok(decide(dir, spec, rotate)?
        .into_iter()
        .map(|(w, fate)| Change {
            file: w.cert_file(),
            what: fate.word(),
        })
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    Keep,
    Create,
    Reissue(String),
}

impl Fate {
    fn word(&self) -> String {
        match self {
            Fate::Keep => "kept".into(),
            Fate::Create => "created".into(),
            Fate::Reissue(why) => format!("reissued ({why})"),
        }
    }
}

/// Decide each certificate's fate; fails (naming every file at fault) when a file is
/// corrupt, mismatched or from another CA.
fn decide(dir: &Path, spec: &Spec, rotate: Option<Rotate>) -> Result<Vec<(Wanted, Fate)>> {
    let ca = spec.ca();
    let ca_cert = dir.join(ca.cert_file());
    let ca_key = dir.join(ca.key_file());
    let mut errors: Vec<String> = Vec::new();
    let any_leaf_file = spec
        .leaves()
        .any(|w| dir.join(w.cert_file()).exists() || dir.join(w.key_file()).exists());
    let ca_fate = match (rotate, ca_cert.exists(), ca_key.exists()) {
        (Some(Rotate::All), _, _) => Fate::Reissue("--rotate all".into()),
        (_, false, false) if any_leaf_file => {
            errors.push(format!(
                "{} and {} are missing, but certificates signed by a Root CA are there: run `cargo xtask certs --rotate all` to start over with a new CA",
                ca_cert.display(), ca_key.display()
            ));
            Fate::Keep
        }
        (_, false, false) => Fate::Create,
        (_, true, false) | (_, false, true) => {
            let (have, missing) = if ca_cert.exists() {
                (&ca_cert, &ca_key)
            } else {
                (&ca_key, &ca_cert)
            };
            errors.push(format!(
                "{} is missing while {} is there: restore it, or run `cargo xtask certs --rotate all` for a new CA (images must then be rebuilt)",
                missing.display(), have.display()
            ));
            Fate::Keep
        }
        (_, true, true) => {
            let report = inspect(dir, spec, ca, None);
            if report.problems.is_empty() {
                Fate::Keep
            } else if report.fatal {
                errors.push(format!(
                    "{}: {}; run `cargo xtask certs --rotate all` for a new CA (images must then be rebuilt)",
                    ca_cert.display(),
                    report.problems.join("; ")
                ));
                Fate::Keep
            } else {
                // Expiring soon: keep it working, say so; `certs status` fails on it.
                ui::warn(&format!(
                    "{}: {}; plan `cargo xtask certs --rotate all`",
                    ca_cert.display(),
                    report.problems.join("; ")
                ));
                Fate::Keep
            }
        }
    };
    let new_ca = ca_fate != Fate::Keep;
    let ca_der = if new_ca { None } else { read_cert_der(&ca_cert).ok() };
    let mut out = vec![(ca.clone(), ca_fate)];
    for w in spec.leaves() {
        let cert = dir.join(w.cert_file());
        let key = dir.join(w.key_file());
        let fate = if new_ca {
            if cert.exists() {
                Fate::Reissue("new Root CA".into())
            } else {
                Fate::Create
            }
        } else if rotate == Some(Rotate::Leaf) {
            Fate::Reissue("--rotate leaf".into())
        } else {
            match (cert.exists(), key.exists()) {
                (false, false) => Fate::Create,
                (true, false) | (false, true) => {
                    let (have, missing) = if cert.exists() { (&cert, &key) } else { (&key, &cert) };
                    errors.push(format!(
                        "{} is missing while {} is there: remove {} or run `cargo xtask certs --rotate leaf`",
                        missing.display(),
                        have.display(),
                        have.display()
                    ));
                    Fate::Keep
                }
                (true, true) => {
                    let report = inspect(dir, spec, w, ca_der.as_deref());
                    if report.problems.is_empty() {
                        Fate::Keep
                    } else if report.fatal {
                        errors.push(format!(
                            "{}: {}; it was left as it is: run `cargo xtask certs --rotate leaf` to replace every leaf, or remove the file",
                            cert.display(), report.problems.join("; ")
                        ));
                        Fate::Keep
                    } else {
                        Fate::Reissue(report.problems.join("; "))
                    }
                }
            }
        };
        out.push((w.clone(), fate));
    }
    if !errors.is_empty() {
        bail!(
            "the certificates under {} need attention:\n  - {}",
            dir.display(),
            errors.join("\n  - ")
        );
    }
    Ok(out)
}

/// Make what is missing or due, keep what is valid. Holds the lock throughout.
pub fn ensure(dir: &Path, spec: &Spec, rotate: Option<Rotate>) -> Result<Vec<Change>> {
    let _lock = lock(dir)?;
    make_dir(dir)?;
    let decided = decide(dir, spec, rotate)?;
    // Make everything in memory first: a failure here writes nothing.
    let now = OffsetDateTime::now_utc();
    let mut files: Vec<(PathBuf, String, bool)> = Vec::new();
    let (ca_wanted, ca_fate) = &decided[0];
    let issuer = if *ca_fate == Fate::Keep {
        let key_path = dir.join(ca_wanted.key_file());
        let cert_path = dir.join(ca_wanted.cert_file());
        let key_pem = fs::read_to_string(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
        let cert_pem = fs::read_to_string(&cert_path).with_context(|| format!("reading {}", cert_path.display()))?;
        let key =
            KeyPair::from_pem(&key_pem).with_context(|| format!("{} is not a private key", key_path.display()))?;
        Issuer::from_ca_cert_pem(&cert_pem, key)
            .with_context(|| format!("{} cannot be read back as a CA", cert_path.display()))?
    } else {
        let key = new_key(spec.key_type)?;
        let params = ca_params(spec, now);
        let cert = params.self_signed(&key).context("signing the Root CA")?;
        files.push((dir.join(ca_wanted.cert_file()), cert.pem(), false));
        files.push((dir.join(ca_wanted.key_file()), key.serialize_pem(), true));
        Issuer::new(params, key)
    };
    for (w, fate) in &decided[1..] {
        if *fate == Fate::Keep {
            continue;
        }
        let key = new_key(spec.key_type)?;
        let params = leaf_params(spec, w, now)?;
        let cert = params
            .signed_by(&key, &issuer)
            .with_context(|| format!("signing {}", w.cert_file()))?;
        files.push((dir.join(w.cert_file()), cert.pem(), false));
        files.push((dir.join(w.key_file()), key.serialize_pem(), true));
    }
    // Then write: every file to a temporary name, then each renamed over its target.
    let mut staged = Vec::new();
    for (path, content, secret) in &files {
        staged.push((stage(path, content, *secret)?, path));
    }
    for (tmp, path) in staged {
        fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    }
    Ok(decided
        .into_iter()
        .map(|(w, fate)| Change {
            file: w.cert_file(),
            what: fate.word(),
        })
        .collect())
}

/// The exclusive lock every writer holds (`certs.lock` beside the directory).
fn lock(dir: &Path) -> Result<fs::File> {
    crate::project::lock_file(&dir.parent().unwrap_or(dir).join("certs.lock"), "certs")
}

fn make_dir(dir: &Path) -> Result<()> {
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
fn stage(path: &Path, content: &str, secret: bool) -> Result<PathBuf> {
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

fn new_key(key_type: KeyType) -> Result<KeyPair> {
    let alg = match key_type {
        KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyType::Ed25519 => &rcgen::PKCS_ED25519,
    };
    KeyPair::generate_for(alg).context("generating a key")
}

fn ca_params(spec: &Spec, now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // The date tells two generations of the CA apart at a glance.
    dn.push(DnType::CommonName, format!("{} Root CA {}", spec.brand, date(now)));
    dn.push(DnType::OrganizationName, spec.brand.clone());
    dn.push(
        DnType::OrganizationalUnitName,
        format!("{} (cargo xtask certs)", spec.project),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(i64::from(spec.ca_days));
    params
}

fn leaf_params(spec: &Spec, w: &Wanted, now: OffsetDateTime) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(w.sans.clone())
        .with_context(|| format!("the names {:?} for {}", w.sans, w.cert_file()))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, w.service.clone().unwrap_or_default());
    dn.push(DnType::OrganizationName, spec.brand.clone());
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match w.role {
        Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        _ => vec![ExtendedKeyUsagePurpose::ServerAuth],
    };
    params.use_authority_key_identifier_extension = true;
    // A few minutes back: a peer whose clock is slightly behind still accepts it.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(i64::from(spec.leaf_days));
    Ok(params)
}

fn date(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

fn date_of_unix(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .map(date)
        .unwrap_or_else(|_| secs.to_string())
}

/// Read the first certificate of a PEM file, as DER.
fn read_cert_der(path: &Path) -> Result<Vec<u8>> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a PEM certificate ({e}): it may be truncated or corrupt",
            path.display()
        )
    })?;
    if pem.label != "CERTIFICATE" {
        bail!(
            "{} holds a `{}` PEM block, not a CERTIFICATE",
            path.display(),
            pem.label
        );
    }
    x509_parser::parse_x509_certificate(&pem.contents).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a valid X.509 certificate ({e}): it may be truncated or corrupt",
            path.display()
        )
    })?;
    Ok(pem.contents)
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
    x509_parser::pem::Pem::iter_from_buffer(bytes)
        .filter_map(|p| p.ok())
        .filter(|p| p.label == "CERTIFICATE" && x509_parser::parse_x509_certificate(&p.contents).is_ok())
        .count()
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What `certs status` shows for one certificate.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub file: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    pub key_usage: Vec<String>,
    pub extended_key_usage: Vec<String>,
    pub not_after: String,
    pub days_left: i64,
    pub sha256: String,
    pub chains_to_root: bool,
    pub key_file: String,
    pub key_matches: bool,
    pub key_mode: String,
    pub problems: Vec<String>,
    /// A problem reissuing would hide (corrupt, another CA, a foreign key): not a
    /// certificate to replace without being asked.
    #[serde(skip)]
    pub fatal: bool,
}

/// Inspect one certificate and its key. `ca_der` is the current Root CA (for leaves);
/// `None` when the CA itself is inspected or cannot be read.
pub fn inspect(dir: &Path, spec: &Spec, w: &Wanted, ca_der: Option<&[u8]>) -> Report {
    let cert_path = dir.join(w.cert_file());
    let key_path = dir.join(w.key_file());
    let mut r = Report {
        file: w.cert_file(),
        role: w.role,
        service: w.service.clone(),
        subject: String::new(),
        issuer: String::new(),
        sans: vec![],
        key_usage: vec![],
        extended_key_usage: vec![],
        not_after: String::new(),
        days_left: 0,
        sha256: String::new(),
        chains_to_root: false,
        key_file: w.key_file(),
        key_matches: false,
        key_mode: String::new(),
        problems: vec![],
        fatal: false,
    };
    if !cert_path.exists() {
        r.problems.push("missing: run `cargo xtask certs`".into());
        return r;
    }
    let der = match read_cert_der(&cert_path) {
        Ok(der) => der,
        Err(err) => {
            r.problems.push(format!("{err:#}"));
            r.fatal = true;
            return r;
        }
    };
    r.sha256 = sha256_hex(&der);
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        unreachable!("parsed above")
    };
    r.subject = cert.subject().to_string();
    r.issuer = cert.issuer().to_string();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => r.sans.push(format!("DNS:{d}")),
                x509_parser::extensions::GeneralName::IPAddress(ip) => r.sans.push(format!("IP:{}", ip_text(ip))),
                other => r.sans.push(format!("{other:?}")),
            }
        }
    }
    if let Ok(Some(ku)) = cert.key_usage() {
        let ku = ku.value;
        for (on, name) in [
            (ku.digital_signature(), "digitalSignature"),
            (ku.key_encipherment(), "keyEncipherment"),
            (ku.key_cert_sign(), "keyCertSign"),
            (ku.crl_sign(), "cRLSign"),
        ] {
            if on {
                r.key_usage.push(name.into());
            }
        }
    }
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        if eku.value.server_auth {
            r.extended_key_usage.push("serverAuth".into());
        }
        if eku.value.client_auth {
            r.extended_key_usage.push("clientAuth".into());
        }
        if eku.value.any {
            r.extended_key_usage.push("any".into());
        }
    }
    let not_after = cert.validity().not_after.timestamp();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    r.not_after = date_of_unix(not_after);
    r.days_left = (not_after - now).div_euclid(86_400);
    if not_after <= now {
        r.problems.push(format!("expired on {}", r.not_after));
    } else if cert.validity().not_before.timestamp() > now {
        r.problems.push("not valid yet: is this machine's clock right?".into());
    } else if r.days_left < i64::from(spec.warn_days) {
        r.problems.push(format!(
            "expires in {} days (on {}), within the {}-day warning window",
            r.days_left, r.not_after, spec.warn_days
        ));
    }

    // The key: present, matching, private.
    let spki = cert.public_key().raw.to_vec();
    match fs::metadata(&key_path) {
        Err(_) => {
            r.problems.push(format!("its key {} is missing", w.key_file()));
            r.fatal = true;
        }
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            r.key_mode = format!("{mode:04o}");
            if mode & 0o077 != 0 {
                r.problems.push(format!(
                    "{} is mode {:04o}: others can read it (`chmod 600 {}`)",
                    w.key_file(),
                    mode,
                    key_path.display()
                ));
            }
            match fs::read_to_string(&key_path)
                .map_err(anyhow::Error::from)
                .and_then(|pem| KeyPair::from_pem(&pem).map_err(anyhow::Error::from))
            {
                Err(err) => {
                    r.problems.push(format!(
                        "its key {} cannot be read ({err}): truncated or corrupt",
                        w.key_file()
                    ));
                    r.fatal = true;
                }
                Ok(key) => {
                    r.key_matches = key.subject_public_key_info() == spki;
                    if !r.key_matches {
                        r.problems
                            .push(format!("its key {} does not match the certificate", w.key_file()));
                        r.fatal = true;
                    }
                }
            }
        }
    }

    // What it is for, and who signed it.
    let anchor_der = if w.role == Role::RootCa {
        Some(der.as_slice())
    } else {
        ca_der
    };
    match w.role {
        Role::RootCa => {
            let bc = cert
                .basic_constraints()
                .ok()
                .flatten()
                .map(|b| b.value.ca)
                .unwrap_or(false);
            if !bc || !r.key_usage.iter().any(|k| k == "keyCertSign") {
                r.problems
                    .push("not a CA certificate (CA:true and keyCertSign are required)".into());
                r.fatal = true;
            }
            r.chains_to_root = r.subject == r.issuer;
        }
        Role::Server | Role::Client => {
            let (want, other) = if w.role == Role::Server {
                ("serverAuth", "clientAuth")
            } else {
                ("clientAuth", "serverAuth")
            };
            if !r.extended_key_usage.iter().any(|e| e == want)
                || r.extended_key_usage.iter().any(|e| e == other || e == "any")
            {
                r.problems.push(format!(
                    "its extended key usage is {:?}: a {} needs {want} only",
                    r.extended_key_usage,
                    w.role.describe()
                ));
            }
            for san in &w.sans {
                let tagged = if san.parse::<std::net::IpAddr>().is_ok() {
                    format!("IP:{san}")
                } else {
                    format!("DNS:{san}")
                };
                if !r.sans.contains(&tagged) {
                    r.problems
                        .push(format!("it lacks the name {san} (the manifest asks for it)"));
                }
            }
        }
    }
    if let (Some(anchor), Role::Server | Role::Client) = (anchor_der, w.role) {
        let usage = if w.role == Role::Server {
            webpki::KeyUsage::server_auth()
        } else {
            webpki::KeyUsage::client_auth()
        };
        match verify_chain(&der, anchor, usage) {
            Ok(()) => r.chains_to_root = true,
            Err(webpki::Error::UnknownIssuer) | Err(webpki::Error::InvalidSignatureForPublicKey) => {
                r.problems.push("it is not signed by the current Root CA".into());
                r.fatal = true;
            }
            // Expiry and usage are reported above in words.
            Err(webpki::Error::CertExpired { .. } | webpki::Error::RequiredEkuNotFoundContext(_)) => {
                r.chains_to_root = true;
            }
            Err(other) => r.problems.push(format!("its chain does not verify: {other:?}")),
        }
    } else if w.role != Role::RootCa {
        r.problems
            .push("the Root CA cannot be read, so its chain cannot be checked".into());
    }
    r
}

/// Verify a leaf against the Root CA for a usage, as a TLS peer would (at this moment).
pub fn verify_chain(leaf: &[u8], ca: &[u8], usage: webpki::KeyUsage) -> std::result::Result<(), webpki::Error> {
    let ca = CertificateDer::from(ca.to_vec());
    let anchor = webpki::anchor_from_trusted_cert(&ca)?;
    let leaf = CertificateDer::from(leaf.to_vec());
    let ee = webpki::EndEntityCert::try_from(&leaf)?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        UnixTime::now(),
        usage,
        None,
        None,
    )?;
    Ok(())
}

#[cfg(test)]
/// Whether a server certificate is valid for `name` (a DNS name or an IP address).
pub fn valid_for_name(leaf: &[u8], name: &str) -> std::result::Result<(), webpki::Error> {
    let leaf = CertificateDer::from(leaf.to_vec());
    let ee = webpki::EndEntityCert::try_from(&leaf)?;
    let name =
        rustls_pki_types::ServerName::try_from(name.to_owned()).map_err(|_| webpki::Error::MalformedDnsIdentifier)?;
    ee.verify_is_valid_for_subject_name(&name)
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(bytes);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => format!("{bytes:?}"),
    }
}

/// Inspect every certificate the manifest asks for.
pub fn status(dir: &Path, spec: &Spec) -> Vec<Report> {
    let ca = inspect(dir, spec, spec.ca(), None);
    let ca_der = read_cert_der(&dir.join(spec.ca().cert_file()))
        .ok()
        .filter(|_| !ca.fatal);
    let mut out = vec![ca];
    for w in spec.leaves() {
        out.push(inspect(dir, spec, w, ca_der.as_deref()));
    }
    out
}

/// One line for `doctor`: `None` when no certificates exist yet, else the text and
/// whether every certificate is fine.
pub fn summary(project: &Project) -> Result<Option<(String, bool)>> {
    let dir = project.certs_dir();
    if !dir.join(CA_CERT).exists() {
        return Ok(None);
    }
    let reports = status(&dir, &Spec::from_manifest(&project.manifest));
    let bad: Vec<String> = reports
        .iter()
        .filter(|r| !r.problems.is_empty())
        .map(|r| format!("{}: {}", r.file, r.problems.join("; ")))
        .collect();
    if !bad.is_empty() {
        return Ok(Some((bad.join(" | "), false)));
    }
    let soonest = reports
        .iter()
        .min_by_key(|r| r.days_left)
        .expect("the CA is always reported");
    Ok(Some((
        format!(
            "{} certificates; the first to expire is {} in {} days",
            reports.len(),
            soonest.file,
            soonest.days_left
        ),
        true,
    )))
}

impl flags::Status {
    pub fn run(self, project: &Project) -> Result<()> {
        let dir = project.certs_dir();
        let spec = Spec::from_manifest(&project.manifest);
        let reports = status(&dir, &spec);
        if self.json {
            println!("{}", serde_json::to_string_pretty(&reports)?);
        } else {
            println!("certificates in {}", dir.display());
            for r in &reports {
                let state = if r.problems.is_empty() {
                    ui::mark("ok")
                } else {
                    ui::mark("fail")
                };
                let whose = r.service.as_deref().map(|s| format!(" for {s}")).unwrap_or_default();
                println!("{state} {} ({}{whose})", r.file, r.role.describe());
                if r.subject.is_empty() {
                    for p in &r.problems {
                        println!("       problem   {p}");
                    }
                    continue;
                }
                println!("       subject   {}", r.subject);
                println!("       issuer    {}", r.issuer);
                if !r.sans.is_empty() {
                    println!("       names     {}", r.sans.join(", "));
                }
                let eku = if r.extended_key_usage.is_empty() {
                    String::new()
                } else {
                    format!("; extended: {}", r.extended_key_usage.join(", "))
                };
                println!("       usage     {}{eku}", r.key_usage.join(", "));
                println!("       expires   {} ({} days left)", r.not_after, r.days_left);
                println!(
                    "       chain     {}",
                    if r.chains_to_root {
                        "to the current Root CA"
                    } else {
                        "NOT to the current Root CA"
                    }
                );
                println!(
                    "       key       {} {}, mode {}",
                    r.key_file,
                    if r.key_matches { "matches" } else { "does NOT match" },
                    r.key_mode
                );
                println!("       sha256    {}", r.sha256);
                for p in &r.problems {
                    println!("       problem   {p}");
                }
            }
        }
        let bad = reports.iter().filter(|r| !r.problems.is_empty()).count();
        if bad > 0 {
            bail!(
                "{bad} of {} certificates need attention (see above); `cargo xtask certs` makes missing ones, `--rotate leaf` reissues",
                reports.len()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
