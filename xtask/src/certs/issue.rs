//! Making certificates: what a run would change ([`plan`]), then doing it ([`ensure`]):
//! the Root CA and the leaves, in memory first, then written.

use std::path::Path;

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

use super::*;

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
pub(super) enum Fate {
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
pub(super) fn decide(dir: &Path, spec: &Spec, rotate: Option<Rotate>) -> Result<Vec<(Wanted, Fate)>> {
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
        let params = pem::parse(&cert_pem)
            .map_err(anyhow::Error::from)
            .and_then(|pem| Ok(x509::parse(pem.contents())?))
            .and_then(|cert| cert.issuer_params())
            .with_context(|| format!("{} cannot be read back as a CA", cert_path.display()))?;
        Issuer::new(params, key)
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

pub(super) fn new_key(key_type: KeyType) -> Result<KeyPair> {
    let alg = match key_type {
        KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyType::Ed25519 => &rcgen::PKCS_ED25519,
    };
    KeyPair::generate_for(alg).context("generating a key")
}

pub(super) fn ca_params(spec: &Spec, now: OffsetDateTime) -> CertificateParams {
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

pub(super) fn leaf_params(spec: &Spec, w: &Wanted, now: OffsetDateTime) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(w.sans.clone())
        .with_context(|| format!("the names {:?} for {}", w.sans, w.cert_file()))?;
    let mut dn = DistinguishedName::new();
    // A service's name, or (a builder node's certificates) the file stem.
    dn.push(DnType::CommonName, w.service.clone().unwrap_or_else(|| w.stem.clone()));
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
