//! Certificate tests on real files: chains checked by webpki, real mTLS handshakes with
//! rustls over loopback sockets (with data exchanged, since a TLS 1.3 client "connects"
//! before the server has judged its certificate), and Debian's openssl CLI agreeing.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::thread;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::*;

/// A scratch directory removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("slipway-certs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn certs(&self) -> PathBuf {
        self.0.join("certs")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn spec() -> Spec {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let manifest = Manifest::load(&root.join(crate::manifest::FILE)).unwrap();
    Spec::from_manifest(&manifest)
}

fn der(dir: &Path, file: &str) -> Vec<u8> {
    read_cert_der(&dir.join(file)).unwrap()
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn fresh_run_makes_everything_with_safe_modes() {
    let s = Scratch::new("fresh");
    let spec = spec();
    let changes = ensure(&s.certs(), &spec, None).unwrap();
    assert!(changes.iter().all(|c| c.what == "created"), "{changes:?}");
    let names: Vec<String> = snapshot(&s.certs()).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "agent-client.crt",
            "agent-client.key",
            "agent.crt",
            "agent.key",
            "gateway-client.crt",
            "gateway-client.key",
            "gateway.crt",
            "gateway.key",
            "rootCA.crt",
            "rootCA.key"
        ]
    );
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.certs()), 0o700);
    for (name, _) in snapshot(&s.certs()) {
        let want = if name.ends_with(".key") { 0o600 } else { 0o644 };
        assert_eq!(mode(&s.certs().join(&name)), want, "{name}");
    }
    let reports = status(&s.certs(), &spec);
    for r in &reports {
        assert!(r.problems.is_empty(), "{}: {:?}", r.file, r.problems);
        assert!(r.chains_to_root && r.key_matches, "{r:?}");
    }
    let ca = &reports[0];
    assert_eq!(ca.key_usage, ["keyCertSign", "cRLSign"]);
    let gateway = reports.iter().find(|r| r.file == "gateway.crt").unwrap();
    assert_eq!(gateway.sans, ["DNS:gateway", "DNS:localhost", "IP:127.0.0.1"]);
    assert_eq!(gateway.extended_key_usage, ["serverAuth"]);
    let client = reports.iter().find(|r| r.file == "gateway-client.crt").unwrap();
    assert_eq!(client.extended_key_usage, ["clientAuth"]);
    assert!(client.days_left >= 824, "{client:?}");
}

#[test]
fn chains_verify_for_every_name_and_usage() {
    let s = Scratch::new("chains");
    let spec = spec();
    ensure(&s.certs(), &spec, None).unwrap();
    let ca = der(&s.certs(), "rootCA.crt");
    for w in spec.leaves() {
        let leaf = der(&s.certs(), &w.cert_file());
        match w.role {
            Role::Server => {
                verify_chain(&leaf, &ca, webpki::KeyUsage::server_auth()).unwrap();
                for san in &w.sans {
                    valid_for_name(&leaf, san).unwrap_or_else(|e| panic!("{} for {san}: {e:?}", w.cert_file()));
                }
                valid_for_name(&leaf, "elsewhere.example").unwrap_err();
                // A server certificate cannot authenticate a client.
                verify_chain(&leaf, &ca, webpki::KeyUsage::client_auth()).unwrap_err();
            }
            Role::Client => {
                // Through rustls's own client-certificate verifier, as a server would.
                let mut roots = RootCertStore::empty();
                roots.add(CertificateDer::from(ca.clone())).unwrap();
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .unwrap();
                verifier
                    .verify_client_cert(
                        &CertificateDer::from(leaf.clone()),
                        &[],
                        rustls::pki_types::UnixTime::now(),
                    )
                    .unwrap();
                // And it cannot serve.
                verify_chain(&leaf, &ca, webpki::KeyUsage::server_auth()).unwrap_err();
            }
            Role::RootCa => unreachable!(),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn chain(dir: &Path, stem: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let cert = CertificateDer::from_pem_file(dir.join(format!("{stem}.crt"))).unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{stem}.key"))).unwrap();
    (vec![cert], key)
}

fn roots(dir: &Path) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("rootCA.crt")).unwrap())
        .unwrap();
    Arc::new(roots)
}

/// One mTLS exchange over a loopback socket: the server (trusting `server_trust`, and
/// requiring a client certificate) answers "world" to "hello". Returns what the client
/// read, or the first error either side saw.
fn exchange(
    server_dir: &Path,
    server_stem: &str,
    server_trust: &Path,
    client: Option<(&Path, &str)>,
    client_trust: &Path,
    name: &str,
) -> Result<String, String> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(server_trust), provider())
        .build()
        .unwrap();
    let (certs, key) = chain(server_dir, server_stem);
    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(client_trust));
    let client_config = match client {
        Some((dir, stem)) => {
            let (certs, key) = chain(dir, stem);
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server_side = thread::spawn(move || -> Result<(), String> {
        let (tcp, _) = listener.accept().map_err(|e| e.to_string())?;
        let conn = rustls::ServerConnection::new(Arc::new(server)).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).map_err(|e| format!("server: {e}"))?;
        tls.write_all(b"world").map_err(|e| format!("server: {e}"))?;
        tls.flush().map_err(|e| format!("server: {e}"))?;
        Ok(())
    });
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let conn =
        rustls::ClientConnection::new(Arc::new(client_config), ServerName::try_from(name.to_owned()).unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let client_result = (|| -> Result<String, String> {
        tls.write_all(b"hello").map_err(|e| format!("client: {e}"))?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).map_err(|e| format!("client: {e}"))?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    })();
    drop(tls);
    let server_result = server_side.join().unwrap();
    match (client_result, server_result) {
        (Ok(answer), Ok(())) => Ok(answer),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

#[test]
fn real_mtls_handshakes_accept_and_refuse() {
    let s = Scratch::new("mtls");
    let other = Scratch::new("mtls-other");
    let spec = spec();
    ensure(&s.certs(), &spec, None).unwrap();
    ensure(&other.certs(), &spec, None).unwrap();
    let (d, o) = (s.certs(), other.certs());

    // The gateway's client certificate is accepted by the agent, for every SAN.
    for name in ["agent", "localhost", "127.0.0.1"] {
        assert_eq!(
            exchange(&d, "agent", &d, Some((&d, "gateway-client")), &d, name).unwrap(),
            "world"
        );
    }
    // No client certificate: refused.
    let err = exchange(&d, "agent", &d, None, &d, "agent").unwrap_err();
    assert!(err.contains("CertificateRequired"), "{err}");
    // A client certificate from another CA: refused.
    let err = exchange(&d, "agent", &d, Some((&o, "gateway-client")), &d, "agent").unwrap_err();
    // Both CAs carry the same name, so the signature check is what fails (DecryptError).
    assert!(
        ["UnknownIssuer", "BadCertificate", "DecryptError"]
            .iter()
            .any(|e| err.contains(e)),
        "{err}"
    );
    // A client certificate presented as a server certificate: the client refuses it.
    let err = exchange(&d, "gateway-client", &d, Some((&d, "gateway-client")), &d, "gateway").unwrap_err();
    assert!(
        err.contains("does not allow extended key usage for server authentication"),
        "{err}"
    );
    // A server certificate presented as a client certificate: the server refuses it.
    let err = exchange(&d, "agent", &d, Some((&d, "gateway")), &d, "agent").unwrap_err();
    assert!(err.contains("UnsupportedCertificate"), "{err}");
}

#[test]
fn builder_nodes_get_a_server_certificate_and_the_xtask_a_client_one() {
    let s = Scratch::new("builders");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let text = fs::read_to_string(root.join(crate::manifest::FILE)).unwrap()
        + "\n[build.builders.big]\nendpoint = \"tcp://builder.internal:2376\"\n";
    let manifest = Manifest::parse(&text, Path::new("slipway.toml")).unwrap();
    let with_builder = Spec::from_manifest(&manifest);
    ensure(&s.certs(), &with_builder, None).unwrap();
    let d = s.certs();
    // A real handshake: the node's certificate for its endpoint's host (and loopback),
    // the xtask's client certificate accepted by it.
    for name in ["builder.internal", "localhost", "127.0.0.1"] {
        assert_eq!(
            exchange(&d, "builder-big", &d, Some((&d, BUILDER_CLIENT)), &d, name).unwrap(),
            "world"
        );
    }
    let err = exchange(&d, "builder-big", &d, Some((&d, "builder-big")), &d, "localhost").unwrap_err();
    assert!(err.contains("UnsupportedCertificate"), "{err}");
    // No builder, no builder certificates; nor for a node reached through a docker
    // context (the context has its own TLS).
    assert!(!spec().wanted.iter().any(|w| w.stem.starts_with("builder-")));
    let text = fs::read_to_string(root.join(crate::manifest::FILE)).unwrap()
        + "\n[build.builders.graviton]\ncontext = \"graviton\"\n";
    let manifest = Manifest::parse(&text, Path::new("slipway.toml")).unwrap();
    assert!(
        !Spec::from_manifest(&manifest)
            .wanted
            .iter()
            .any(|w| w.stem.starts_with("builder-"))
    );
}

#[test]
fn openssl_agrees() {
    let s = Scratch::new("openssl");
    let spec = spec();
    ensure(&s.certs(), &spec, None).unwrap();
    let d = s.certs();
    let verify = |purpose: &str, file: &str| -> bool {
        Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(d.join("rootCA.crt"))
            .args(["-purpose", purpose])
            .arg(d.join(file))
            .output()
            .expect("Debian's openssl CLI (`apt-get install openssl`)")
            .status
            .success()
    };
    for w in spec.leaves() {
        let file = w.cert_file();
        let (yes, no) = if w.role == Role::Server {
            ("sslserver", "sslclient")
        } else {
            ("sslclient", "sslserver")
        };
        assert!(verify(yes, &file), "openssl verify -purpose {yes} {file}");
        assert!(!verify(no, &file), "openssl verify -purpose {no} {file} should fail");
    }
    // The CA is a CA with path length 0, as openssl reads it.
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(d.join("rootCA.crt"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
}

#[test]
fn second_run_changes_nothing_and_rotation_renews() {
    let s = Scratch::new("idem");
    let spec = spec();
    ensure(&s.certs(), &spec, None).unwrap();
    let first = snapshot(&s.certs());
    let changes = ensure(&s.certs(), &spec, None).unwrap();
    assert!(changes.iter().all(|c| c.what == "kept"), "{changes:?}");
    assert_eq!(snapshot(&s.certs()), first);

    let changes = ensure(&s.certs(), &spec, Some(Rotate::Leaf)).unwrap();
    assert_eq!(changes[0].what, "kept");
    assert!(
        changes[1..].iter().all(|c| c.what.starts_with("reissued")),
        "{changes:?}"
    );
    let leafed = snapshot(&s.certs());
    assert_eq!(
        leafed.iter().find(|(n, _)| n == "rootCA.crt"),
        first.iter().find(|(n, _)| n == "rootCA.crt")
    );
    assert_ne!(
        leafed.iter().find(|(n, _)| n == "gateway.key"),
        first.iter().find(|(n, _)| n == "gateway.key")
    );
    assert!(status(&s.certs(), &spec).iter().all(|r| r.problems.is_empty()));

    let changes = ensure(&s.certs(), &spec, Some(Rotate::All)).unwrap();
    assert!(changes.iter().all(|c| c.what.starts_with("reissued")), "{changes:?}");
    let all = snapshot(&s.certs());
    assert_ne!(
        all.iter().find(|(n, _)| n == "rootCA.crt"),
        leafed.iter().find(|(n, _)| n == "rootCA.crt")
    );
    assert!(status(&s.certs(), &spec).iter().all(|r| r.problems.is_empty()));
}

#[test]
fn two_runs_at_once_share_one_ca() {
    let s = Scratch::new("race");
    let spec = spec();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (dir, spec) = (s.certs(), spec.clone());
            thread::spawn(move || ensure(&dir, &spec, None).unwrap())
        })
        .collect();
    let created: usize = runs
        .into_iter()
        .map(|r| r.join().unwrap().iter().filter(|c| c.what == "created").count())
        .sum();
    assert_eq!(created, spec.wanted.len(), "each file made exactly once");
    assert!(
        status(&s.certs(), &spec)
            .iter()
            .all(|r| r.problems.is_empty() && r.chains_to_root)
    );
}

#[test]
fn bad_files_are_named_and_left_alone() {
    let spec = spec();

    // A truncated certificate.
    let s = Scratch::new("truncated");
    ensure(&s.certs(), &spec, None).unwrap();
    let path = s.certs().join("gateway.crt");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, &text[..text.len() / 2]).unwrap();
    let before = snapshot(&s.certs());
    let err = format!("{:#}", ensure(&s.certs(), &spec, None).unwrap_err());
    assert!(
        err.contains("gateway.crt") && err.contains("truncated or corrupt"),
        "{err}"
    );
    assert_eq!(snapshot(&s.certs()), before, "nothing was overwritten");
    let report = status(&s.certs(), &spec)
        .into_iter()
        .find(|r| r.file == "gateway.crt")
        .unwrap();
    assert!(!report.problems.is_empty());

    // A truncated key: named, with the way out.
    let s = Scratch::new("truncated-key");
    ensure(&s.certs(), &spec, None).unwrap();
    let path = s.certs().join("agent.key");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, &text[..text.len() / 3]).unwrap();
    let before = snapshot(&s.certs());
    let err = format!("{:#}", ensure(&s.certs(), &spec, None).unwrap_err());
    assert!(
        err.contains("agent.key") && err.contains("truncated or corrupt") && err.contains("certs --rotate"),
        "{err}"
    );
    assert_eq!(snapshot(&s.certs()), before, "nothing was overwritten");

    // A key that belongs to another certificate.
    let s = Scratch::new("mismatch");
    ensure(&s.certs(), &spec, None).unwrap();
    fs::copy(s.certs().join("agent.key"), s.certs().join("gateway.key")).unwrap();
    let before = snapshot(&s.certs());
    let err = format!("{:#}", ensure(&s.certs(), &spec, None).unwrap_err());
    assert!(
        err.contains("gateway.crt") && err.contains("gateway.key does not match"),
        "{err}"
    );
    assert_eq!(snapshot(&s.certs()), before);

    // A certificate (with its key) from another CA.
    let s = Scratch::new("foreign");
    let other = Scratch::new("foreign-other");
    ensure(&s.certs(), &spec, None).unwrap();
    ensure(&other.certs(), &spec, None).unwrap();
    for f in ["agent.crt", "agent.key"] {
        fs::copy(other.certs().join(f), s.certs().join(f)).unwrap();
    }
    let before = snapshot(&s.certs());
    let err = format!("{:#}", ensure(&s.certs(), &spec, None).unwrap_err());
    assert!(
        err.contains("agent.crt") && err.contains("not signed by the current Root CA"),
        "{err}"
    );
    assert_eq!(snapshot(&s.certs()), before);
    // `--rotate leaf` is the way out, and says so.
    assert!(err.contains("--rotate leaf"), "{err}");
    ensure(&s.certs(), &spec, Some(Rotate::Leaf)).unwrap();
    assert!(status(&s.certs(), &spec).iter().all(|r| r.problems.is_empty()));

    // A directory that cannot be made: a file stands where it should be.
    let s = Scratch::new("blocked");
    fs::write(s.certs(), "not a directory").unwrap();
    let err = format!("{:#}", ensure(&s.certs(), &spec, None).unwrap_err());
    assert!(err.contains(&s.certs().display().to_string()), "{err}");
    assert_eq!(fs::read_to_string(s.certs()).unwrap(), "not a directory");

    // A readable key is reported, not silently fixed.
    let s = Scratch::new("mode");
    ensure(&s.certs(), &spec, None).unwrap();
    fs::set_permissions(s.certs().join("agent.key"), fs::Permissions::from_mode(0o644)).unwrap();
    let report = status(&s.certs(), &spec)
        .into_iter()
        .find(|r| r.file == "agent.crt")
        .unwrap();
    assert!(report.problems.iter().any(|p| p.contains("mode 0644")), "{report:?}");
}

#[test]
fn expiring_leaves_are_reissued_and_flagged() {
    let s = Scratch::new("expiring");
    let mut spec = spec();
    ensure(&s.certs(), &spec, None).unwrap();
    // With a warning window longer than a leaf's life, every leaf is due.
    spec.warn_days = spec.leaf_days + 1;
    let reports = status(&s.certs(), &spec);
    let gateway = reports.iter().find(|r| r.file == "gateway.crt").unwrap();
    assert!(
        gateway.problems.iter().any(|p| p.contains("warning window")),
        "{gateway:?}"
    );
    let changes = ensure(&s.certs(), &spec, None).unwrap();
    assert!(
        changes[1..].iter().all(|c| c.what.contains("warning window")),
        "{changes:?}"
    );
    assert_eq!(changes[0].what, "kept", "the CA is only warned about");
}

#[test]
fn a_new_san_in_the_manifest_reissues_that_leaf() {
    let s = Scratch::new("san");
    let mut spec = spec();
    ensure(&s.certs(), &spec, None).unwrap();
    let agent = spec.wanted.iter_mut().find(|w| w.stem == "agent").unwrap();
    agent.sans.push("agent.internal".into());
    let changes = ensure(&s.certs(), &spec, None).unwrap();
    let agent = changes.iter().find(|c| c.file == "agent.crt").unwrap();
    assert!(agent.what.contains("agent.internal"), "{changes:?}");
    assert!(
        changes
            .iter()
            .filter(|c| c.file != "agent.crt")
            .all(|c| c.what == "kept"),
        "{changes:?}"
    );
}
