//! Reading certificates back (`certs status`): subject, SANs, usages, issuer, expiry, the
//! chain to the current CA (webpki, as TLS peers check it) and whether the key matches.

use std::path::Path;

use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use time::OffsetDateTime;

use super::*;

pub(super) fn date(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

pub(super) fn date_of_unix(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .map(date)
        .unwrap_or_else(|_| secs.to_string())
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
    let Ok(cert) = x509::parse(&der) else {
        unreachable!("parsed above")
    };
    r.subject = cert.subject.to_string();
    r.issuer = cert.issuer.to_string();
    r.sans = cert.sans.clone();
    if let Some(ku) = cert.key_usage {
        for (on, name) in [
            (ku.digital_signature, "digitalSignature"),
            (ku.key_encipherment, "keyEncipherment"),
            (ku.key_cert_sign, "keyCertSign"),
            (ku.crl_sign, "cRLSign"),
        ] {
            if on {
                r.key_usage.push(name.into());
            }
        }
    }
    for (oid, name) in [
        (x509::SERVER_AUTH, "serverAuth"),
        (x509::CLIENT_AUTH, "clientAuth"),
        (x509::ANY_EXTENDED_KEY_USAGE, "any"),
    ] {
        if cert.extended_key_usage.iter().any(|o| o == oid) {
            r.extended_key_usage.push(name.into());
        }
    }
    let not_after = cert.not_after;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    r.not_after = date_of_unix(not_after);
    r.days_left = (not_after - now).div_euclid(86_400);
    if not_after <= now {
        r.problems.push(format!("expired on {}", r.not_after));
    } else if cert.not_before > now {
        r.problems.push("not valid yet: is this machine's clock right?".into());
    } else if r.days_left < i64::from(spec.warn_days) {
        r.problems.push(format!(
            "expires in {} days (on {}), within the {}-day warning window",
            r.days_left, r.not_after, spec.warn_days
        ));
    }

    // The key: present, matching, private.
    let spki = cert.spki.clone();
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
            let bc = cert.ca.is_some();
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

pub(super) fn ip_text(bytes: &[u8]) -> String {
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
