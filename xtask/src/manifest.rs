//! The typed manifest, `slipway.toml` at the repository root: brand, registry, project,
//! the Debian release, the services, the targets and the certificates.
//!
//! The structs are serde structs with `deny_unknown_fields`: a typo is an error. A
//! manifest is read so that *every* problem is reported at once, each with
//! `file:line:column` and what is allowed. serde stops at its first error, so
//! [`Manifest::parse`] deserializes the parsed document, records the error, removes the
//! key at fault from the document and tries again, until it goes through; then the
//! checks serde cannot make (names, ports, references) run over the result.
//!
//! Here: the types. `parse` reads the text and reports problems at their place; `check`
//! makes the checks serde cannot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// The manifest's file name, at the repository root. `SLIPWAY_MANIFEST` names another.
mod check;
mod parse;

#[cfg(test)]
pub(crate) use check::*;

pub const FILE: &str = "slipway.toml";

/// The whole manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// Prefix of the base images (`<brand>-os-base`) and of the state directory `.<brand>/`.
    #[serde(default = "default_brand")]
    pub brand: Spanned<String>,
    /// Registry host (and port) images are pushed to: `registry.example.com`.
    pub registry: Spanned<String>,
    /// Path under the registry: images are `{registry}/{project}/{service}:{tag}`.
    pub project: Spanned<String>,
    /// The release version, used for the `{version}` tags.
    pub version: Spanned<String>,
    /// The one Debian release every image is built on.
    #[serde(default)]
    pub debian: Debian,
    /// How images are built: builder, cache, platforms.
    #[serde(default)]
    pub build: Build,
    /// The services, by name.
    pub services: BTreeMap<Spanned<String>, Service>,
    /// Settings per build target.
    #[serde(default)]
    pub targets: Targets,
    /// Certificates for the Root CA, the servers and the mTLS clients.
    #[serde(default)]
    pub certs: Certs,
    /// How `release` signs and `verify` checks images (cosign).
    #[serde(default)]
    pub release: Release,
    /// How `ci run` builds.
    #[serde(default)]
    pub ci: Ci,
    /// What `cargo xtask prune` keeps in the registry.
    #[serde(default)]
    pub retention: Retention,
}

/// The registry's retention policy (seed 002), applied by `cargo xtask prune`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Retention {
    /// How many `{version}` tags to keep, the newest versions (10 by default); `latest`
    /// is always kept.
    #[serde(default = "default_keep_versions")]
    pub versions: usize,
    /// How many days a branch's `{branch}-{sha7}` builds (and main's
    /// `{version}-{sha7}` ones) are kept after they were made (7 by default). A deleted
    /// branch's builds go at once.
    #[serde(default = "default_branch_days")]
    pub branch_days: u32,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            versions: default_keep_versions(),
            branch_days: default_branch_days(),
        }
    }
}

fn default_keep_versions() -> usize {
    10
}

fn default_branch_days() -> u32 {
    7
}

fn default_brand() -> Spanned<String> {
    Spanned::new(0..0, "slipway".to_owned())
}

/// The Debian release shared by every image.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Debian {
    /// Release code name: `trixie` (Debian 13) by default.
    #[serde(default = "default_release")]
    pub release: Spanned<String>,
    /// Mirror for the air-gapped bootstrap (mmdebstrap); default: the host's apt mirror.
    #[serde(default)]
    pub mirror: Option<String>,
    /// How old the bases may grow (days since `bases.lock`'s refresh, and since the root
    /// image in the store was made) before `doctor` warns: 30 by default (seed 004's
    /// monthly refresh).
    #[serde(default = "default_max_age_days")]
    pub max_age_days: u32,
    /// The root image's name, where it is not `debian:<release>-slim`: the team's own
    /// copy in its registry (`registry.example.com/team/debian:trixie-slim`), which
    /// `bootstrap --push` fills and every other machine pulls by bases.lock's digest.
    #[serde(default)]
    pub image: Option<Spanned<String>>,
}

impl Default for Debian {
    fn default() -> Debian {
        Debian {
            release: default_release(),
            mirror: None,
            max_age_days: default_max_age_days(),
            image: None,
        }
    }
}

fn default_max_age_days() -> u32 {
    30
}

fn default_release() -> Spanned<String> {
    Spanned::new(0..0, "trixie".to_owned())
}

/// Build settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Build {
    /// The buildx builder to use; default: the current one.
    #[serde(default)]
    pub builder: Option<String>,
    /// Where BuildKit keeps its cache between runs.
    #[serde(default)]
    pub cache: Cache,
    /// Platforms to build for, `os/arch`.
    #[serde(default = "default_platforms")]
    pub platforms: Vec<Spanned<String>>,
    /// Extra CA files (PEM) trusted by build steps that fetch over HTTPS, such as a
    /// TLS-inspecting proxy's; `SLIPWAY_EXTRA_CA` adds more. Never baked into an image.
    #[serde(default)]
    pub extra_ca: Vec<Spanned<String>>,
    /// Where the Rust builder image comes from.
    #[serde(default)]
    pub rust_toolchain: RustToolchain,
    /// Builder nodes besides this machine's engine, by name (`build --builder NAME`).
    #[serde(default)]
    pub builders: BTreeMap<Spanned<String>, BuilderNode>,
}

impl Default for Build {
    fn default() -> Build {
        Build {
            builder: None,
            cache: Cache::default(),
            platforms: default_platforms(),
            extra_ca: Vec::new(),
            rust_toolchain: RustToolchain::default(),
            builders: BTreeMap::new(),
        }
    }
}

/// A builder node: a Docker engine reached over TCP with mutual TLS, whose server
/// certificate `cargo xtask certs` issues (`builder-<name>.crt`), as it issues the
/// client's (`builder-client.crt`); or one a docker context reaches, as that context
/// says (its `ssh://` host, or `tcp://` with TLS files of its own). One of the two.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BuilderNode {
    /// `tcp://HOST:PORT` of its engine.
    #[serde(default)]
    pub endpoint: Option<Spanned<String>>,
    /// A docker context's name (`docker context ls`).
    #[serde(default)]
    pub context: Option<Spanned<String>>,
    /// The platforms it builds natively (default: `build.platforms`).
    #[serde(default)]
    pub platforms: Option<Vec<Spanned<String>>>,
}

impl BuilderNode {
    /// `HOST` and `PORT` of its endpoint, when it is `tcp://HOST:PORT`.
    pub fn host_port(&self) -> Option<(&str, u16)> {
        let rest = self.endpoint.as_ref()?.get_ref().strip_prefix("tcp://")?;
        let (host, port) = rest.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (!host.is_empty() && !host.contains('/')).then_some(())?;
        Some((host, port.parse().ok()?))
    }
}

fn default_platforms() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "linux/amd64".to_owned())]
}

/// The BuildKit cache backend.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", tag = "type")]
pub enum Cache {
    /// No exported cache (the builder's own cache still works).
    #[default]
    None,
    /// A directory on this machine.
    Local { dir: String },
    /// An image reference in a registry (`ref`, as buildx spells it, is read too).
    Registry {
        #[serde(alias = "ref")]
        reference: String,
    },
    /// The GitHub Actions cache.
    Gha {
        #[serde(default)]
        scope: Option<String>,
    },
}

/// Which Rust toolchain builds the Rust services.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RustToolchain {
    /// Debian's rustc and cargo from the same release as every other image.
    #[default]
    Debian,
    /// The official Rust image.
    Official,
}

/// One service of the monorepo.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Service {
    /// `rust` or `python`: decides the base image and the Dockerfile's stages.
    pub kind: Kind,
    /// The service's directory, relative to the repository root.
    pub path: Spanned<String>,
    /// Other paths its image is built from (a shared package, the Cargo workspace files).
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    /// Glob patterns (relative to the root) of the files its image is built from; by
    /// default everything under `path` and each `depends-on`. See `crate::inputs`.
    #[serde(default)]
    pub inputs: Vec<Spanned<String>>,
    /// Glob patterns of files left out of its inputs, beside the defaults (build output,
    /// caches, `.env*`, `.git`).
    #[serde(default)]
    pub exclude: Vec<Spanned<String>>,
    /// Ports it listens on (published on the host by the local stack).
    #[serde(default)]
    pub ports: Vec<Spanned<u16>>,
    /// The host address its ports are published on: loopback unless opened on purpose
    /// (`"0.0.0.0"` for every interface).
    #[serde(default = "default_publish")]
    pub publish: Spanned<String>,
    /// Its health check.
    #[serde(default)]
    pub health: Health,
    /// What its container may use in the local stack.
    #[serde(default)]
    pub limits: Limits,
    /// Extra subject alternative names for its server certificate.
    #[serde(default)]
    pub sans: Vec<Spanned<String>>,
}

fn default_publish() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1".to_owned())
}

/// A service's language.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Rust,
    Python,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Rust => "rust",
            Kind::Python => "python",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    /// `new --kind` parses to this.
    fn from_str(text: &str) -> Result<Kind, String> {
        match text {
            "rust" => Ok(Kind::Rust),
            "python" => Ok(Kind::Python),
            _ => Err(format!("unknown kind `{text}`: use rust or python")),
        }
    }
}

/// A container's resource limits, as compose sets them (`mem_limit`, `cpus`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Limits {
    /// Memory, in compose's notation: `512m`, `1g`.
    #[serde(default = "default_memory")]
    pub memory: Spanned<String>,
    /// CPUs, fractions allowed: `0.5`, `2`.
    #[serde(default = "default_cpus")]
    pub cpus: Spanned<f64>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory: default_memory(),
            cpus: default_cpus(),
        }
    }
}

fn default_memory() -> Spanned<String> {
    Spanned::new(0..0, "512m".to_owned())
}
fn default_cpus() -> Spanned<f64> {
    Spanned::new(0..0, 1.0)
}

/// A health check, as Docker and compose run it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Health {
    /// The HTTP path that answers when the service is healthy.
    #[serde(default = "default_health_path")]
    pub path: Spanned<String>,
    /// Seconds between checks.
    #[serde(default = "default_interval")]
    pub interval_secs: u32,
    /// Seconds one check may take.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u32,
    /// Failed checks in a row before the service is unhealthy.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Seconds after start during which failures do not count.
    #[serde(default = "default_start_period")]
    pub start_period_secs: u32,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            path: default_health_path(),
            interval_secs: default_interval(),
            timeout_secs: default_timeout(),
            retries: default_retries(),
            start_period_secs: default_start_period(),
        }
    }
}

fn default_health_path() -> Spanned<String> {
    Spanned::new(0..0, "/health".to_owned())
}
fn default_interval() -> u32 {
    1
}
fn default_timeout() -> u32 {
    3
}
fn default_retries() -> u32 {
    5
}
fn default_start_period() -> u32 {
    10
}

/// The three build targets. Only these names exist; each may be tuned.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Targets {
    #[serde(default)]
    pub local: TargetSettings,
    #[serde(default)]
    pub dev: TargetSettings,
    #[serde(default)]
    pub prod: TargetSettings,
}

/// A build target: what `--target` names, each service's image has one stage of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Source mounted, hot reload, debugger, dev dependencies.
    Local,
    /// The code baked in, no reload.
    Dev,
    /// Non-root, no build tools, smallest.
    Prod,
}

impl Target {
    /// Every target, in the order they are listed.
    pub const ALL: [Target; 3] = [Target::Local, Target::Dev, Target::Prod];

    /// Its name: the Dockerfile stage, the bake group, the `-target` tag suffix.
    pub fn name(self) -> &'static str {
        match self {
            Target::Local => "local",
            Target::Dev => "dev",
            Target::Prod => "prod",
        }
    }

    /// What image tags append: nothing for prod, `-local` or `-dev` otherwise.
    pub fn tag_suffix(self) -> String {
        match self {
            Target::Prod => String::new(),
            other => format!("-{}", other.name()),
        }
    }

    /// The platforms its images are built for: the manifest's for this target, else the
    /// builder's own (`native`) for `local` and `dev`, and `build.platforms` for `prod`.
    pub fn platforms(self, m: &Manifest, native: &str) -> Vec<String> {
        match (&self.settings(m).platforms, self) {
            (Some(ps), _) => ps.iter().map(|p| p.get_ref().clone()).collect(),
            (None, Target::Local | Target::Dev) => vec![native.to_owned()],
            (None, Target::Prod) => m.build.platforms.iter().map(|p| p.get_ref().clone()).collect(),
        }
    }

    /// Its settings in the manifest.
    pub fn settings(self, m: &Manifest) -> &TargetSettings {
        match self {
            Target::Local => &m.targets.local,
            Target::Dev => &m.targets.dev,
            Target::Prod => &m.targets.prod,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Target {
    type Err = String;

    /// `--target` parses to this: any other name is an error that lists the targets.
    fn from_str(text: &str) -> Result<Target, String> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == text)
            .ok_or_else(|| format!("unknown target `{text}`: use local, dev or prod"))
    }
}

/// A build target's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TargetSettings {
    /// What the target is for, shown in the bake definition.
    #[serde(default)]
    pub description: Option<String>,
    /// Platforms for this target; default: the engine's own for `local` and `dev` (no
    /// emulated compile on a contributor's arm64 laptop), `build.platforms` for `prod`.
    #[serde(default)]
    pub platforms: Option<Vec<Spanned<String>>>,
}

/// Certificate settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Certs {
    /// Key algorithm of every key Slipway makes.
    #[serde(default)]
    pub key_type: KeyType,
    /// Validity of the Root CA, in days.
    #[serde(default = "default_ca_days")]
    pub ca_days: Spanned<u32>,
    /// Validity of server and client certificates, in days.
    #[serde(default = "default_leaf_days")]
    pub leaf_days: Spanned<u32>,
    /// `certs status` fails when a certificate expires within this many days.
    #[serde(default = "default_warn_days")]
    pub warn_days: Spanned<u32>,
    /// Service-to-service mTLS pairs: the client gets a client certificate.
    #[serde(default)]
    pub mtls: Vec<Mtls>,
}

impl Default for Certs {
    fn default() -> Certs {
        Certs {
            key_type: KeyType::default(),
            ca_days: default_ca_days(),
            leaf_days: default_leaf_days(),
            warn_days: default_warn_days(),
            mtls: Vec::new(),
        }
    }
}

// mkcert's choices: a CA for ten years, leaves for 825 days (the longest Apple platforms
// accept for a server certificate from a user-installed root).
fn default_ca_days() -> Spanned<u32> {
    Spanned::new(0..0, 3650)
}
fn default_leaf_days() -> Spanned<u32> {
    Spanned::new(0..0, 825)
}
fn default_warn_days() -> Spanned<u32> {
    Spanned::new(0..0, 30)
}

/// Key algorithms rcgen can generate with ring.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256: small, fast, accepted everywhere (step-ca's default).
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

/// One service-to-service mTLS pair.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Mtls {
    /// The service that calls, and holds the client certificate.
    pub client: Spanned<String>,
    /// The service that is called, and requires the client certificate.
    pub server: Spanned<String>,
}

/// Signing and verification with cosign.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Release {
    /// The key `release --sign` signs with: a file (relative to the root), `env://VAR`
    /// (the PEM in a variable), or a KMS URI. Unset: `COSIGN_PRIVATE_KEY` from the
    /// environment, else keyless (Sigstore) where an OIDC token is there.
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    /// The public key `verify` checks against (same forms). Unset: `COSIGN_PUBLIC_KEY`
    /// from the environment, else keyless by `identity` and `issuer`.
    #[serde(default)]
    pub public_key: Option<Spanned<String>>,
    /// Keyless verification: a regular expression the signer's identity must match
    /// (for GitHub Actions, the workflow's URL).
    #[serde(default)]
    pub identity: Option<String>,
    /// Keyless verification: the OIDC issuer of the signer's token.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Record signatures in the transparency log (default true). An air-gapped registry
    /// sets false; `verify` then skips the log too.
    #[serde(default)]
    pub tlog: Option<bool>,
    /// Speak plain HTTP to the registry. Default: only for a registry on loopback.
    #[serde(default)]
    pub insecure_registry: Option<bool>,
}

/// CI settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Ci {
    /// The BuildKit cache `ci run` uses inside GitHub Actions (default: the Actions cache).
    /// Elsewhere it uses `build.cache`.
    #[serde(default = "default_ci_cache")]
    pub cache: Cache,
    /// The registry the generated workflow pushes to, in place of `registry` (a host and
    /// a path under it: `registry.example.com/team`), logging in with the secrets
    /// REGISTRY_USERNAME and REGISTRY_PASSWORD. Unset: the workflow builds and tests
    /// every affected image and pushes none.
    pub registry: Option<Spanned<String>>,
}

impl Default for Ci {
    fn default() -> Ci {
        Ci {
            cache: default_ci_cache(),
            registry: None,
        }
    }
}

fn default_ci_cache() -> Cache {
    Cache::Gha { scope: None }
}

/// Whether the registry host is this machine (`localhost`, `127.0.0.0/8`, `[::1]`).
pub fn registry_is_loopback(registry: &str) -> bool {
    // The host: before any path under it, and before its port.
    let registry = registry.split('/').next().unwrap_or(registry);
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.split(':').next().unwrap_or(registry),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Manifest {
    /// `names` checked against the services, or every service when `names` is empty.
    pub fn service_names(&self, names: &[String]) -> anyhow::Result<Vec<String>> {
        if names.is_empty() {
            return Ok(self.services.keys().map(|k| k.get_ref().clone()).collect());
        }
        for name in names {
            if !self.services.contains_key(name.as_str()) {
                let known: Vec<&str> = self.services.keys().map(|k| k.get_ref().as_str()).collect();
                anyhow::bail!("no service named `{name}`: the services are {}", known.join(", "));
            }
        }
        Ok(names.to_vec())
    }

    /// The brand, as a plain string.
    pub fn brand(&self) -> &str {
        self.brand.get_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
registry = "localhost:5000"
project = "platform"
version = "0.1.0"

[services.gateway]
kind = "rust"
path = "services/gateway"
ports = [8443]

[services.agent]
kind = "python"
path = "services/agent"
depends-on = ["services/common"]
ports = [9443]

[[certs.mtls]]
client = "gateway"
server = "agent"
"#;

    fn problems(text: &str) -> Vec<String> {
        Manifest::parse(text, Path::new("slipway.toml"))
            .unwrap_err()
            .list
            .into_iter()
            .map(|p| format!("{}:{}: {}", p.line, p.column, p.message))
            .collect()
    }

    #[test]
    fn good_manifest_has_defaults() {
        let m = Manifest::parse(GOOD, Path::new("slipway.toml")).unwrap();
        assert_eq!(m.brand(), "slipway");
        assert_eq!(m.debian.release.get_ref(), "trixie");
        assert_eq!(m.certs.key_type, KeyType::EcdsaP256);
        assert_eq!(m.services["gateway"].kind, Kind::Rust);
        assert_eq!(m.services["agent"].health.path.get_ref(), "/health");
    }

    #[test]
    fn the_repository_manifest_is_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        Manifest::load(&root.join(FILE)).unwrap();
    }

    #[test]
    fn every_problem_at_once_with_line_and_column() {
        // A typo'd key, a wrong type and an unknown section, in three places.
        let text = GOOD
            .replace("kind = \"rust\"", "knd = \"rust\"")
            .replace("ports = [9443]", "ports = \"9443\"")
            + "\n[extra]\nx = 1\n";
        let found = problems(&text);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("7:1: unknown field `knd`, expected one of `kind`")),
            "{found:#?}"
        );
        assert!(
            found.iter().any(|p| p.ends_with("(did you mean `kind`?)")),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("15:9: invalid type: string \"9443\", expected a sequence")),
            "{found:#?}"
        );
        assert!(found.iter().any(|p| p.contains("unknown field `extra`")), "{found:#?}");
        // `kind` really is missing: a typo'd key leaves it unset.
        assert!(found.iter().any(|p| p.contains("missing field `kind`")), "{found:#?}");
    }

    #[test]
    fn bad_values_are_named_with_what_is_allowed() {
        let text = GOOD
            .replace("kind = \"python\"", "kind = \"go\"")
            .replace("[8443]", "[9443]")
            .replace("server = \"agent\"", "server = \"agnet\"");
        let found = problems(&text);
        assert!(
            found
                .iter()
                .any(|p| p.contains("unknown variant `go`, expected `rust` or `python`")),
            "{found:#?}"
        );
        // The variant error stops serde in that service; the checks after it need a
        // document serde accepts, so fix one round, then see the next.
        let text = text.replace("kind = \"go\"", "kind = \"python\"");
        let found = problems(&text);
        assert!(
            found
                .iter()
                .any(|p| p.contains("port 9443 is taken already by service `agent`")),
            "{found:#?}"
        );
        assert!(
            found.iter().any(|p| p.starts_with("19:10: no service named `agnet`")),
            "{found:#?}"
        );
    }

    /// The checkout's own manifest, mutated at random (a fixed seed, so a failure is
    /// repeatable): byte flips, deletions, and insertions of the characters TOML cares
    /// about. Parsing never panics, and every problem points inside the text with a line
    /// and column.
    #[test]
    fn mutated_manifests_never_panic_and_every_problem_has_a_place() {
        let original = std::fs::read_to_string(crate::project::root().join(FILE)).unwrap();
        let mut seed: u64 = 0x005e_ed51_f7a1_1ce5;
        let mut next = move |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        const SIGNIFICANT: &[u8] = b"[]{}=\"',.#\n -_0123456789aztrue";
        let mut problems_seen = 0;
        for case in 0..3000 {
            let mut bytes = original.clone().into_bytes();
            for _ in 0..1 + next(4) {
                let at = next(bytes.len().max(1));
                match next(3) {
                    0 if !bytes.is_empty() => {
                        bytes.remove(at.min(bytes.len() - 1));
                    }
                    1 => bytes.insert(at, SIGNIFICANT[next(SIGNIFICANT.len())]),
                    _ if !bytes.is_empty() => {
                        let at = at.min(bytes.len() - 1);
                        bytes[at] = SIGNIFICANT[next(SIGNIFICANT.len())];
                    }
                    _ => {}
                }
            }
            let Ok(text) = String::from_utf8(bytes) else { continue };
            let parsed = std::panic::catch_unwind(|| Manifest::parse(&text, Path::new("slipway.toml")));
            let Ok(parsed) = parsed else {
                panic!("case {case}: the parser panicked on:\n{text}");
            };
            if let Err(problems) = parsed {
                assert!(!problems.list.is_empty(), "case {case}: an error with no problem");
                let lines = text.lines().count().max(1);
                for p in &problems.list {
                    problems_seen += 1;
                    assert!(
                        p.line >= 1 && p.line <= lines + 1 && p.column >= 1,
                        "case {case}: {}:{} is outside the text: {}\n{text}",
                        p.line,
                        p.column,
                        p.message
                    );
                    assert!(!p.message.is_empty(), "case {case}: a problem with no message");
                }
            }
        }
        assert!(
            problems_seen > 1000,
            "the mutations found too few problems to mean anything"
        );
    }

    #[test]
    fn limits_have_defaults_and_bad_ones_are_named() {
        let m = Manifest::parse(GOOD, std::path::Path::new("slipway.toml")).unwrap();
        let gateway = &m.services["gateway"].limits;
        assert_eq!(
            (gateway.memory.get_ref().as_str(), *gateway.cpus.get_ref()),
            ("512m", 1.0)
        );
        let set = GOOD.replace(
            "ports = [8443]",
            "ports = [8443]\nlimits = { memory = \"1g\", cpus = 0.5 }",
        );
        let m = Manifest::parse(&set, std::path::Path::new("slipway.toml")).unwrap();
        assert_eq!(m.services["gateway"].limits.memory.get_ref(), "1g");
        let bad = GOOD.replace(
            "ports = [8443]",
            "ports = [8443]\nlimits = { memory = \"lots\", cpus = 0 }",
        );
        let found = problems(&bad).join("\n");
        assert!(found.contains("memory = \"lots\" is not a size"), "{found}");
        assert!(found.contains("cpus = 0 is not a share of the machine"), "{found}");
        for (text, ok) in [
            ("512m", true),
            ("2g", true),
            ("1048576", true),
            ("0m", false),
            ("m", false),
            ("1.5g", false),
            ("1gg", false),
        ] {
            assert_eq!(is_memory(text), ok, "{text}");
        }
    }

    #[test]
    fn ports_are_published_on_loopback_unless_opened_on_purpose() {
        let m = Manifest::parse(GOOD, std::path::Path::new("slipway.toml")).unwrap();
        assert!(m.services.values().all(|s| s.publish.get_ref() == "127.0.0.1"));
        let open = GOOD.replace("ports = [8443]", "ports = [8443]\npublish = \"0.0.0.0\"");
        let m = Manifest::parse(&open, std::path::Path::new("slipway.toml")).unwrap();
        assert_eq!(m.services["gateway"].publish.get_ref(), "0.0.0.0");
        let bad = GOOD.replace("ports = [8443]", "ports = [8443]\npublish = \"everywhere\"");
        let found = problems(&bad);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("10:11: publish = \"everywhere\" is not an IP address")),
            "{found:#?}"
        );
    }

    #[test]
    fn builder_nodes_are_engines_over_tcp() {
        let with = |node: &str| format!("{GOOD}\n[build.builders.{node}\n");
        let good = format!(
            "{GOOD}\n[build.builders.big]\nendpoint = \"tcp://10.0.0.7:2376\"\nplatforms = [\"linux/arm64\"]\n"
        );
        let m = Manifest::parse(&good, std::path::Path::new("slipway.toml")).unwrap();
        let (name, node) = m.build.builders.iter().next().unwrap();
        assert_eq!(name.get_ref(), "big");
        assert_eq!(node.host_port(), Some(("10.0.0.7", 2376)));
        // `local` is this machine's engine's name.
        let found = problems(&with("local]\nendpoint = \"tcp://10.0.0.7:2376\""));
        assert!(
            found
                .iter()
                .any(|p| p.contains("builder `local`: that name is this machine's engine")),
            "{found:?}"
        );
        for (endpoint, why) in [
            ("ssh://builder", "is not `tcp://HOST:PORT`"),
            ("tcp://10.0.0.7", "is not `tcp://HOST:PORT`"),
            ("tcp://:2376", "is not `tcp://HOST:PORT`"),
        ] {
            let bad = with(&format!("big]\nendpoint = \"{endpoint}\""));
            let found = problems(&bad);
            assert!(
                found.iter().any(|p| p.contains(why) && p.contains(endpoint)),
                "{endpoint}: {found:#?}"
            );
        }
        let found = problems(&with("Big]\nendpoint = \"tcp://h:1\""));
        assert!(found.iter().any(|p| p.contains("builder `Big`")), "{found:#?}");
        // Or a docker context; one of the two, never both or neither.
        let m = Manifest::parse(
            &with("big]\ncontext = \"big-ssh\""),
            std::path::Path::new("slipway.toml"),
        )
        .unwrap();
        assert_eq!(
            m.build
                .builders
                .values()
                .next()
                .unwrap()
                .context
                .as_ref()
                .unwrap()
                .get_ref(),
            "big-ssh"
        );
        for (node, why) in [
            (
                "big]\nplatforms = [\"linux/arm64\"]",
                "builder `big`: say how it is reached",
            ),
            (
                "big]\nendpoint = \"tcp://h:1\"\ncontext = \"big-ssh\"",
                "builder `big`: an endpoint or a context, not both",
            ),
            (
                "big]\ncontext = \"\"",
                "builder `big`: context `` is not a docker context's name",
            ),
        ] {
            let found = problems(&with(node));
            assert!(found.iter().any(|p| p.contains(why)), "{node}: {found:#?}");
        }
    }

    #[test]
    fn targets_and_service_names_are_checked_in_one_place() {
        assert_eq!("local".parse::<Target>(), Ok(Target::Local));
        assert_eq!(
            "staging".parse::<Target>(),
            Err("unknown target `staging`: use local, dev or prod".to_owned())
        );
        for t in Target::ALL {
            assert_eq!(t.name().parse::<Target>(), Ok(t));
        }
        assert_eq!(Target::Prod.tag_suffix(), "");
        assert_eq!(Target::Local.tag_suffix(), "-local");
        let m = Manifest::parse(GOOD, Path::new("slipway.toml")).unwrap();
        assert_eq!(m.service_names(&[]).unwrap(), ["agent", "gateway"]);
        assert_eq!(m.service_names(&["gateway".into()]).unwrap(), ["gateway"]);
        let err = m.service_names(&["gatewy".into()]).unwrap_err().to_string();
        assert_eq!(err, "no service named `gatewy`: the services are agent, gateway");
    }

    #[test]
    fn syntax_errors_are_located() {
        let found = problems("registry = \"unterminated\nproject = \"p\"\n");
        assert!(found.iter().any(|p| p.starts_with("1:")), "{found:#?}");
    }

    #[test]
    fn no_build_context_takes_the_environment_files_or_the_whole_repository() {
        for (path, why) in [
            ("env", "under env/"),
            ("./env/local.env", "under env/"),
            (".", "the whole repository"),
            ("./", "the whole repository"),
        ] {
            let text = GOOD.replace("path = \"services/agent\"", &format!("path = \"{path}\""));
            let err = Manifest::parse(&text, Path::new("slipway.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("path `{path}` is {why}")), "{err}");
        }
        assert!(check_relative("services/envoy").is_ok());
        assert!(check_relative("services/env").is_ok());
    }

    #[test]
    fn display_shows_the_line_and_a_caret() {
        let text = GOOD.replace("path = \"services/agent\"", "path = \"/abs\"");
        let err = Manifest::parse(&text, Path::new("slipway.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("slipway.toml:13:8: path `/abs` is absolute"), "{err}");
        assert!(err.contains("13 | path = \"/abs\""), "{err}");
        assert!(err.contains("   |        ^^^^^^"), "{err}");
    }
}
