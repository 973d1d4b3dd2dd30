//! `cargo xtask certs`: the Root CA, a server certificate per service and the mTLS client
//! certificates, under `.<brand>/certs/`. In Rust (rcgen signs, yasna reads,
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
//!
//! Here: what is wanted ([`Spec`]) and the command; `issue` makes certificates, `read`
//! reads them back (`x509` parses), `files` writes and locks them, `run` gives each service its own.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use rcgen::{KeyPair, PublicKeyData};
use serde::Serialize;

mod files;
mod issue;
mod read;
mod run;
mod x509;

pub use files::{count_pem_certificates, file_sha256};
pub use issue::{Change, ensure, plan};
pub use read::status;
pub use run::RunAs;
// Each part sees the others (and the tests see them) through `super::*`.
use {files::*, read::*};

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

/// The stem of a builder node's server certificate: `builder-<name>`.
pub fn builder_stem(name: &str) -> String {
    format!("builder-{name}")
}

/// The stem of the client certificate presented to every builder node.
pub const BUILDER_CLIENT: &str = "builder-client";

/// The directory the docker CLI reads a builder node's TLS files from
/// (`DOCKER_CERT_PATH`: `ca.pem`, `cert.pem`, `key.pem`): the Root CA and the builder
/// client's certificate and key, copied from the project's certificates (the key 0600,
/// the directory 0700), again every time (a rotation changes them).
pub fn builder_tls(project: &Project) -> Result<PathBuf> {
    let source = project.certs_dir();
    let dir = project.state_dir().join("builder-tls");
    make_dir(&dir)?;
    for (from, to) in [
        (CA_CERT.to_owned(), "ca.pem"),
        (format!("{BUILDER_CLIENT}.crt"), "cert.pem"),
        (format!("{BUILDER_CLIENT}.key"), "key.pem"),
    ] {
        let from = source.join(from);
        let text = fs::read_to_string(&from).map_err(|e| {
            anyhow::anyhow!(
                "{} ({e}): run `cargo xtask certs`, which issues the builder nodes' certificates",
                from.display()
            )
        })?;
        let to = dir.join(to);
        if fs::read_to_string(&to).is_ok_and(|old| old == text) {
            continue;
        }
        let tmp = stage(&to, &text, to.ends_with("key.pem"))?;
        fs::rename(&tmp, &to).map_err(|e| anyhow::anyhow!("writing {}: {e}", to.display()))?;
    }
    Ok(dir)
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
        // requires one (an mTLS server, and every Python service: the template requires
        // client certificates whoever calls it): its own health check must present one.
        let servers: BTreeSet<&String> = m.certs.mtls.iter().map(|p| p.server.get_ref()).collect();
        let python = m
            .services
            .iter()
            .filter(|(_, s)| s.kind == crate::manifest::Kind::Python)
            .map(|(n, _)| n.get_ref());
        let clients: BTreeSet<&String> = m
            .certs
            .mtls
            .iter()
            .map(|p| p.client.get_ref())
            .chain(servers)
            .chain(python)
            .collect();
        for client in clients {
            wanted.push(Wanted {
                role: Role::Client,
                service: Some(client.clone()),
                stem: format!("{client}-client"),
                sans: vec![client.clone()],
            });
        }
        // Builder nodes over TCP: each engine's server certificate (its endpoint's host),
        // and one client certificate the xtask presents to all of them (a node reached
        // through a docker context has the context's TLS).
        let over_tcp: Vec<_> = m
            .build
            .builders
            .iter()
            .filter(|(_, node)| node.endpoint.is_some())
            .collect();
        for (name, node) in &over_tcp {
            let mut sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
            if let Some((host, _)) = node.host_port()
                && !sans.iter().any(|s| s == host)
            {
                sans.insert(0, host.to_owned());
            }
            wanted.push(Wanted {
                role: Role::Server,
                service: None,
                stem: builder_stem(name.get_ref()),
                sans,
            });
        }
        if !over_tcp.is_empty() {
            wanted.push(Wanted {
                role: Role::Client,
                service: None,
                stem: BUILDER_CLIENT.to_owned(),
                sans: vec![BUILDER_CLIENT.to_owned()],
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
