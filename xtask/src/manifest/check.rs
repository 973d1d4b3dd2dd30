//! The checks serde cannot make: names, ports, paths and patterns, limits, references
//! between sections; each problem reported at its place in the text.

use super::parse::Source;
use super::*;

impl Manifest {
    /// The checks serde cannot make: names, ports, references between sections.
    pub(super) fn check(&self, src: &mut Source<'_>) {
        let name_rule = "use lowercase letters, digits and `-`, starting with a letter";
        if !is_name(self.brand.get_ref()) {
            src.report(
                self.brand.span(),
                format!("brand `{}`: {name_rule}", self.brand.get_ref()),
            );
        }
        if !self.project.get_ref().split('/').all(is_name) {
            src.report(
                self.project.span(),
                format!(
                    "project `{}`: {name_rule} (`/` may separate parts)",
                    self.project.get_ref()
                ),
            );
        }
        let registry = self.registry.get_ref();
        if registry.is_empty() || registry.contains("://") || registry.ends_with('/') || registry.contains(' ') {
            src.report(
                self.registry.span(),
                format!("registry `{registry}`: give a host and optional port, like `registry.example.com` or `localhost:5000`, with no scheme or trailing `/`"),
            );
        }
        for (name, node) in &self.build.builders {
            if !is_name(name.get_ref()) {
                src.report(name.span(), format!("builder `{}`: {name_rule}", name.get_ref()));
            } else if name.get_ref() == "local" {
                src.report(
                    name.span(),
                    "builder `local`: that name is this machine's engine (in `builders` and a spread push's build directories): name the node after the machine".to_owned(),
                );
            }
            match (&node.endpoint, &node.context) {
                (None, None) => src.report(
                    name.span(),
                    format!(
                        "builder `{}`: say how it is reached: `endpoint = \"tcp://HOST:PORT\"` (a Docker engine with mutual TLS, whose certificates `cargo xtask certs` issues) or `context = \"NAME\"` (a docker context, `docker context ls`)",
                        name.get_ref()
                    ),
                ),
                (Some(_), Some(context)) => src.report(
                    context.span(),
                    format!(
                        "builder `{}`: an endpoint or a context, not both: keep the one it is reached by",
                        name.get_ref()
                    ),
                ),
                (Some(endpoint), None) if node.host_port().is_none() => src.report(
                    endpoint.span(),
                    format!(
                        "builder `{}`: endpoint `{}` is not `tcp://HOST:PORT` (a Docker engine with mutual TLS, whose certificates `cargo xtask certs` issues; for `ssh://`, make a docker context and give `context = \"NAME\"`)",
                        name.get_ref(),
                        endpoint.get_ref()
                    ),
                ),
                (None, Some(context)) if !is_context_name(context.get_ref()) => src.report(
                    context.span(),
                    format!(
                        "builder `{}`: context `{}` is not a docker context's name: give one `docker context ls` lists",
                        name.get_ref(),
                        context.get_ref()
                    ),
                ),
                _ => {}
            }
        }
        if let Some(image) = &self.debian.image {
            let i = image.get_ref();
            if i.is_empty() || i.contains("://") || i.contains(' ') || i != &i.to_lowercase() || !i.contains(':') {
                src.report(
                    image.span(),
                    format!("debian.image `{i}`: give an image reference with its tag, lowercase, like `registry.example.com/team/debian:trixie-slim`"),
                );
            }
        }
        if let Some(ci) = &self.ci.registry {
            let r = ci.get_ref();
            if r.is_empty() || r.contains("://") || r.ends_with('/') || r.contains(' ') || r != &r.to_lowercase() {
                src.report(
                    ci.span(),
                    format!("ci.registry `{r}`: give a host and an optional path under it, lowercase, like `registry.example.com/team`, with no scheme or trailing `/`"),
                );
            } else if registry_is_loopback(r) {
                src.report(
                    ci.span(),
                    format!("ci.registry `{r}` is on loopback: the workflow pushes from a CI runner, where that names the runner itself; name a registry the runners reach, or leave it unset for GitHub's own"),
                );
            }
        }
        if !is_tag(self.version.get_ref()) {
            src.report(
                self.version.span(),
                format!(
                    "version `{}` cannot be an image tag: use letters, digits, `.`, `_` and `-` (at most 128)",
                    self.version.get_ref()
                ),
            );
        }
        let release = self.debian.release.get_ref();
        if release.is_empty() || !release.chars().all(|c| c.is_ascii_lowercase()) {
            src.report(
                self.debian.release.span(),
                format!("debian release `{release}`: use a code name such as `trixie` or `bookworm`"),
            );
        }
        let target_platforms = [&self.targets.local, &self.targets.dev, &self.targets.prod]
            .into_iter()
            .filter_map(|t| t.platforms.as_ref())
            .flatten();
        for platform in self.build.platforms.iter().chain(target_platforms) {
            let p = platform.get_ref();
            let parts: Vec<&str> = p.split('/').collect();
            if !(2..=3).contains(&parts.len()) || parts.iter().any(|s| s.is_empty()) {
                src.report(
                    platform.span(),
                    format!("platform `{p}`: use `os/arch`, like `linux/amd64` or `linux/arm64`"),
                );
            }
        }
        if self.services.is_empty() {
            src.report(
                0..0,
                "no services: add a `[services.NAME]` table with `kind` and `path`",
            );
        }
        let mut ports: BTreeMap<u16, &str> = BTreeMap::new();
        for (name, service) in &self.services {
            if !is_name(name.get_ref()) {
                src.report(name.span(), format!("service name `{}`: {name_rule}", name.get_ref()));
            }
            for path in std::iter::once(&service.path).chain(&service.depends_on) {
                if let Err(why) = check_relative(path.get_ref()) {
                    src.report(path.span(), format!("path `{}` {why}", path.get_ref()));
                }
            }
            let patterns = service.inputs.iter().map(|p| (p, true));
            for (pattern, is_input) in patterns.chain(service.exclude.iter().map(|p| (p, false))) {
                let text = pattern.get_ref();
                if let Err(err) = glob::Pattern::new(text) {
                    src.report(
                        pattern.span(),
                        format!(
                            "`{text}` is not a glob pattern ({}): write it like \"services/agent/**\"",
                            err.msg
                        ),
                    );
                } else if let Err(why) = check_relative(text) {
                    src.report(pattern.span(), format!("pattern `{text}` {why}"));
                } else if is_input
                    && text
                        .split('/')
                        .next()
                        .is_some_and(|first| first.contains(['*', '?', '[']))
                {
                    src.report(
                        pattern.span(),
                        format!(
                            "pattern `{text}` starts with a wildcard, so it reaches every directory of the repository \
                             (the state directory and its keys among them): start it with a directory, like \"services/agent/**\""
                        ),
                    );
                }
            }
            if service.publish.get_ref().parse::<std::net::IpAddr>().is_err() {
                src.report(
                    service.publish.span(),
                    format!(
                        "publish = \"{}\" is not an IP address: use \"127.0.0.1\" (this machine only, the default) \
                         or \"0.0.0.0\" (every interface)",
                        service.publish.get_ref()
                    ),
                );
            }
            let limits = &service.limits;
            if !is_memory(limits.memory.get_ref()) {
                src.report(
                    limits.memory.span(),
                    format!(
                        "memory = \"{}\" is not a size: write a number with m or g, like \"512m\" or \"1g\"",
                        limits.memory.get_ref()
                    ),
                );
            }
            if !limits.cpus.get_ref().is_finite() || *limits.cpus.get_ref() <= 0.0 {
                src.report(
                    limits.cpus.span(),
                    format!(
                        "cpus = {} is not a share of the machine: use a number above 0, like 0.5 or 2",
                        limits.cpus.get_ref()
                    ),
                );
            }
            for port in &service.ports {
                let p = *port.get_ref();
                if p == 0 {
                    src.report(port.span(), "port 0 is not a port: use 1 to 65535");
                } else if let Some(other) = ports.insert(p, name.get_ref()) {
                    src.report(
                        port.span(),
                        format!("port {p} is taken already by service `{other}`: give each service its own ports"),
                    );
                }
            }
            if !service.health.path.get_ref().starts_with('/') {
                src.report(
                    service.health.path.span(),
                    "health path must start with `/`, like `/health`",
                );
            }
            for san in &service.sans {
                if san.get_ref().is_empty() || san.get_ref().contains(char::is_whitespace) {
                    src.report(
                        san.span(),
                        "a subject alternative name is a DNS name or an IP address, with no spaces",
                    );
                }
            }
        }
        let names: Vec<&str> = self.services.keys().map(|k| k.get_ref().as_str()).collect();
        for pair in &self.certs.mtls {
            for end in [&pair.client, &pair.server] {
                if !self.services.contains_key(end.get_ref().as_str()) {
                    src.report(
                        end.span(),
                        format!(
                            "no service named `{}`: the services are {}",
                            end.get_ref(),
                            names.join(", ")
                        ),
                    );
                }
            }
            if pair.client.get_ref() == pair.server.get_ref() {
                src.report(pair.client.span(), "a service cannot be its own mTLS client");
            }
        }
        for days in [&self.certs.ca_days, &self.certs.leaf_days] {
            if *days.get_ref() == 0 {
                src.report(days.span(), "a certificate must be valid for at least one day");
            }
        }
        if self.certs.leaf_days.get_ref() > self.certs.ca_days.get_ref() {
            src.report(
                self.certs.leaf_days.span(),
                format!(
                    "leaf-days ({}) is longer than ca-days ({}): a certificate cannot outlive its CA",
                    self.certs.leaf_days.get_ref(),
                    self.certs.ca_days.get_ref()
                ),
            );
        }
    }
}

/// Whether `text` is a memory size compose takes: digits, then `b`, `k`, `m` or `g`.
pub(super) fn is_memory(text: &str) -> bool {
    let digits = text.trim_end_matches(['b', 'k', 'm', 'g']);
    text.len() - digits.len() <= 1
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u64>().is_ok_and(|n| n > 0)
}

/// A DNS-label-like name.
pub fn is_name(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A name the docker CLI accepts for a context (`[a-zA-Z0-9][a-zA-Z0-9_.+-]+`).
fn is_context_name(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-'))
}

/// A valid image tag (the OCI distribution spec's grammar).
pub fn is_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(['.', '-'])
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

pub(super) fn check_relative(path: &str) -> Result<(), &'static str> {
    let p = Path::new(path);
    if path.is_empty() {
        Err("is empty: give a directory or file relative to the repository root")
    } else if p.is_absolute() {
        Err("is absolute: give it relative to the repository root")
    } else if p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        Err("leaves the repository (`..`): give it relative to the repository root")
    } else if p.components().all(|c| matches!(c, std::path::Component::CurDir)) {
        Err("is the whole repository, whose state directory holds every key: name the service's own files")
    } else if p.components().find(|c| !matches!(c, std::path::Component::CurDir))
        == Some(std::path::Component::Normal("env".as_ref()))
    {
        Err("is under env/, the per-target environment files, which are never built into an image")
    } else {
        Ok(())
    }
}
