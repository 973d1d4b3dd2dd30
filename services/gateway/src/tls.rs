//! TLS configuration from PEM files, checked before the gateway listens: a missing or
//! unreadable file is one line naming it.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn require(path: &str, what: &str) -> Result<(), String> {
    if Path::new(path).is_file() {
        Ok(())
    } else {
        Err(format!(
            "cannot start: {what} {path} is missing (run `cargo xtask certs`, and mount the certificates directory)"
        ))
    }
}

fn certs(path: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    require(path, what)?;
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {what} {path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read {what} {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} {path} holds no certificate"));
    }
    Ok(certs)
}

fn key(path: &str, what: &str) -> Result<PrivateKeyDer<'static>, String> {
    require(path, what)?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("cannot read {what} {path}: {e}"))
}

/// The server side: its certificate and key; clients are not asked for certificates.
pub fn server_config(cert: &str, key_file: &str) -> Result<rustls::ServerConfig, String> {
    let chain = certs(cert, "the server certificate")?;
    let key = key(key_file, "the server key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the server certificate {cert} and key {key_file} do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The client side: trusts only the project Root CA, and presents the client
/// certificate when one is given.
pub fn client_config(root_ca: &str, client: Option<(&str, &str)>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(root_ca, "the Root CA")? {
        roots
            .add(cert)
            .map_err(|e| format!("the Root CA {root_ca} is not usable: {e}"))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match client {
        Some((cert, key_file)) => {
            let chain = certs(cert, "the client certificate")?;
            let key = key(key_file, "the client key")?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the client certificate {cert} and key {key_file} do not fit together: {e}"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str, content: &str) -> String {
        let dir = std::env::temp_dir().join(format!("gateway-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    }

    #[test]
    fn a_missing_file_is_named_with_the_fix() {
        let err = server_config("/nowhere/gateway.crt", "/nowhere/gateway.key").unwrap_err();
        assert!(
            err.contains("the server certificate /nowhere/gateway.crt is missing"),
            "{err}"
        );
        assert!(err.contains("cargo xtask certs"), "{err}");
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        let empty = scratch("empty.pem", "not a certificate\n");
        let err = client_config(&empty, None).unwrap_err();
        assert_eq!(err, format!("the Root CA {empty} holds no certificate"));
    }

    #[test]
    fn a_key_file_without_a_key_is_refused() {
        let cert = scratch(
            "one.pem",
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
        );
        let key = scratch("nokey.pem", "nothing here\n");
        let err = server_config(&cert, &key).unwrap_err();
        assert!(err.starts_with(&format!("cannot read the server key {key}")), "{err}");
    }
}
