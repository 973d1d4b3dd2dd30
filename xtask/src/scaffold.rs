//! `cargo xtask new NAME --kind rust|python [--port N] [--calls SERVICE]` and `cargo xtask
//! remove NAME`: a service added from the project's own templates, or taken out again.
//!
//! The templates are the sample services themselves (the gateway for Rust, the agent for
//! Python), kept buildable and tested like any service: `new` copies the template's
//! files, its manifest table and its compose entries, renaming the template's name
//! (`gateway`, `GATEWAY_...`) and port, and pairs the new service with the one it calls
//! (`[[certs.mtls]]`, `UPSTREAM_URL`, `depends_on`). Then it makes the certificates the
//! manifest now asks for. `remove` takes out the same pieces and the service's
//! directory; after `new` then `remove` the checkout is as it was, byte for byte.
//!
//! Planning is pure ([`plan_new`], [`plan_remove`] over the files read once into
//! [`Sources`]); [`apply`] writes every file whole and, when one write fails, puts back
//! those already written.

mod text;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::compose::var_prefix;
use crate::manifest::{Kind, Manifest};
use crate::plan::{Output, Step};
use crate::{flags, project::Project};
use text::Block;

/// The sample service a kind of service is made from.
pub fn template(kind: Kind) -> &'static str {
    match kind {
        Kind::Rust => "gateway",
        Kind::Python => "agent",
    }
}

/// Names a Python service cannot take: its module would be shadowed by the standard
/// library's (`python -m json` runs the standard one), or it is a dependency the
/// template uses.
const PYTHON_TAKEN: &[&str] = &[
    "abc",
    "argparse",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "cmd",
    "code",
    "codecs",
    "collections",
    "concurrent",
    "contextlib",
    "copy",
    "csv",
    "ctypes",
    "curses",
    "dataclasses",
    "datetime",
    "dbm",
    "decimal",
    "difflib",
    "dis",
    "email",
    "encodings",
    "enum",
    "fractions",
    "functools",
    "gc",
    "glob",
    "grp",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http",
    "imaplib",
    "importlib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "keyword",
    "locale",
    "logging",
    "mailbox",
    "math",
    "mimetypes",
    "multiprocessing",
    "numbers",
    "operator",
    "os",
    "pathlib",
    "pickle",
    "platform",
    "pprint",
    "profile",
    "pty",
    "pwd",
    "queue",
    "random",
    "re",
    "resource",
    "sched",
    "secrets",
    "select",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "site",
    "smtplib",
    "socket",
    "sqlite3",
    "ssl",
    "stat",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "sys",
    "tarfile",
    "tempfile",
    "test",
    "textwrap",
    "threading",
    "time",
    "token",
    "tokenize",
    "tomllib",
    "trace",
    "traceback",
    "tty",
    "types",
    "typing",
    "unittest",
    "urllib",
    "uuid",
    "venv",
    "warnings",
    "wave",
    "weakref",
    "xml",
    "zipfile",
    "zlib",
    "zoneinfo",
    "starlette",
    "uvicorn",
    "debugpy",
    "pytest",
    "mypy",
    "ruff",
    "httpx",
    "anyio",
    "click",
    "idna",
];

/// Names the project's own images or packages already use.
const PROJECT_TAKEN: &[&str] = &[
    "os-base",
    "python-base",
    "python-builder",
    "rust-builder",
    "xtask",
    "common",
];

/// A change to one file, relative to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Write {
        path: String,
        content: String,
    },
    /// A directory removed whole (the service's, with what it holds beside its tracked
    /// files: caches, a virtual environment). Applied last.
    RemoveDir {
        path: String,
    },
}

impl Edit {
    fn describe(&self, sources: &Sources) -> String {
        match self {
            Edit::Write { path, .. } if sources.exists(path) => format!("edit   {path}"),
            Edit::Write { path, .. } => format!("create {path}"),
            Edit::RemoveDir { path } => format!("delete {path}/ (the whole directory)"),
        }
    }
}

/// The files `new` and `remove` read, read once: path relative to the root -> content.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub files: BTreeMap<String, String>,
    /// Paths (files or directories) that exist, of those asked about.
    pub present: Vec<String>,
}

impl Sources {
    fn get(&self, path: &str) -> Result<&str> {
        self.files
            .get(path)
            .map(String::as_str)
            .ok_or_else(|| anyhow::anyhow!("{path} is missing from this checkout"))
    }

    fn exists(&self, path: &str) -> bool {
        self.files.contains_key(path) || self.present.iter().any(|p| p == path)
    }

    /// Read what a plan needs: the manifest, the compose files, the workspace Cargo.toml,
    /// and every file of the template services (their inputs under their directory).
    pub fn read(project: &Project, extra: &[&str]) -> Result<Sources> {
        let mut sources = Sources::default();
        let root = &project.root;
        let mut wanted: Vec<String> = vec![
            manifest_rel(project),
            COMPOSE.into(),
            COMPOSE_LOCAL.into(),
            "Cargo.toml".into(),
        ];
        let m = &project.manifest;
        for kind in [Kind::Rust, Kind::Python] {
            let name = template(kind);
            if let Some(service) = m.services.get(name) {
                let inputs = crate::inputs::Inputs::of(m, name, service);
                let dir = format!("{}/", service.path.get_ref().trim_end_matches('/'));
                for rel in inputs.files(root)?.into_keys() {
                    let rel = rel.to_string_lossy().into_owned();
                    if rel.starts_with(&dir) {
                        wanted.push(rel);
                    }
                }
            }
        }
        for rel in wanted {
            if let Ok(content) = std::fs::read_to_string(root.join(&rel)) {
                sources.files.insert(rel, content);
            }
        }
        for rel in extra {
            if root.join(rel).exists() {
                sources.present.push((*rel).to_owned());
            }
        }
        Ok(sources)
    }
}

const COMPOSE: &str = "compose.yaml";
const COMPOSE_LOCAL: &str = "compose.local.yaml";

pub fn manifest_rel(project: &Project) -> String {
    project
        .manifest_path
        .strip_prefix(&project.root)
        .unwrap_or(&project.manifest_path)
        .to_string_lossy()
        .into_owned()
}

/// What `new` is asked for, checked.
#[derive(Debug, Clone)]
pub struct NewService {
    pub name: String,
    pub kind: Kind,
    pub port: u16,
    /// The service it calls, and that service's port.
    pub calls: Option<(String, u16)>,
}

/// Check a request against the manifest and the checkout; pick the port when not given.
pub fn check_new(m: &Manifest, sources: &Sources, cmd: &flags::New) -> Result<NewService> {
    let name = cmd.name.as_str();
    valid_name(name, cmd.kind)?;
    if m.services.contains_key(name) {
        bail!("a service named `{name}` already exists in slipway.toml: choose another name");
    }
    let path = format!("services/{name}");
    if sources.exists(&path) {
        bail!("{path} already exists: choose another name, or move that directory away");
    }
    let template = template(cmd.kind);
    if !m.services.contains_key(template) {
        bail!(
            "a {} service is made from the sample service `{template}`, which this checkout no longer has: \
             restore it (git checkout -- services/{template} and its slipway.toml and compose entries)",
            cmd.kind.name()
        );
    }
    let used: BTreeMap<u16, String> = m
        .services
        .iter()
        .flat_map(|(n, s)| s.ports.iter().map(move |p| (*p.get_ref(), n.get_ref().clone())))
        .collect();
    let port = match cmd.port {
        Some(port) => {
            if port < 1024 {
                bail!(
                    "port {port} is privileged: services run without capabilities as a non-root user, \
                     so they listen above 1023; choose another --port"
                );
            }
            if let Some(owner) = used.get(&port) {
                bail!("port {port} is taken by `{owner}`: choose another --port, or leave it out to get a free one");
            }
            if port == DEBUGPY {
                bail!("port {DEBUGPY} is the debugger's (debugpy in the local target): choose another --port");
            }
            port
        }
        None => used.keys().max().map_or(8443, |p| p + 1),
    };
    let calls = match &cmd.calls {
        None => None,
        Some(callee) => {
            let Some(service) = m.services.get(callee.as_str()) else {
                let known: Vec<&str> = m.services.keys().map(|k| k.get_ref().as_str()).collect();
                bail!(
                    "--calls {callee}: no service of that name; the services are {}",
                    known.join(", ")
                );
            };
            let Some(port) = service.ports.first() else {
                bail!("--calls {callee}: `{callee}` listens on no port in slipway.toml, so nothing can call it");
            };
            Some((callee.clone(), *port.get_ref()))
        }
    };
    Ok(NewService {
        name: name.to_owned(),
        kind: cmd.kind,
        port,
        calls,
    })
}

/// The debugger's port inside a Python service's local container.
const DEBUGPY: u16 = 5678;

/// A service's name is its compose service and DNS name, its image's, its certificate's
/// subject and its crate's or Python module's: lowercase letters and digits, `-` inside
/// (not for Python, whose module name it also is).
pub fn valid_name(name: &str, kind: Kind) -> Result<()> {
    let why = if name.is_empty() {
        Some("it is empty".to_owned())
    } else if name.len() > 63 {
        Some("it is longer than 63 characters (a DNS label)".to_owned())
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("it must start with a lowercase letter".to_owned())
    } else if name.ends_with('-') {
        Some("it must not end with `-`".to_owned())
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        Some(format!(
            "`{c}` is not allowed: a service's name is a DNS label (lowercase letters, digits and `-`)"
        ))
    } else if name.contains("--") {
        Some("`--` is not allowed".to_owned())
    } else if kind == Kind::Python && name.contains('-') {
        Some(format!(
            "a Python service's name is also its module's, where `-` cannot go: try `{}`",
            name.replace('-', "")
        ))
    } else if kind == Kind::Python && PYTHON_TAKEN.contains(&name) {
        Some("a Python module of that name exists already (the standard library's, or a dependency's)".to_owned())
    } else if PROJECT_TAKEN.contains(&name) {
        Some("the project's own images or packages use it".to_owned())
    } else {
        None
    };
    match why {
        Some(why) => bail!("`{name}` cannot be a service's name: {why}"),
        None => Ok(()),
    }
}

/// How the template's names and port become the new service's.
struct Rename<'a> {
    from: &'a str,
    to: &'a str,
    from_port: u16,
    to_port: u16,
}

impl Rename<'_> {
    fn text(&self, s: &str) -> String {
        let s = text::replace_word(s, self.from, self.to);
        let s = text::replace_env_prefix(&s, &var_prefix(self.from), &var_prefix(self.to));
        text::replace_word(&s, &self.from_port.to_string(), &self.to_port.to_string())
    }

    fn path(&self, rel: &str) -> String {
        text::replace_word(rel, self.from, self.to)
    }
}

/// Every edit `new` makes, from what was read. Does no I/O.
pub fn plan_new(m: &Manifest, manifest_rel: &str, sources: &Sources, new: &NewService) -> Result<Vec<Edit>> {
    let template = template(new.kind);
    let t = &m.services[template];
    let from_port = t.ports.first().map_or(0, |p| *p.get_ref());
    let rename = Rename {
        from: template,
        to: &new.name,
        from_port,
        to_port: new.port,
    };
    let t_dir = format!("{}/", t.path.get_ref().trim_end_matches('/'));
    let mut edits = Vec::new();

    // The service's files.
    for (rel, content) in sources.files.iter().filter(|(rel, _)| rel.starts_with(&t_dir)) {
        let dest = format!("services/{}/{}", new.name, &rel[t_dir.len()..]);
        let dest = rename.path(&dest);
        let mut content = rename.text(content);
        if rel.ends_with("Cargo.toml") || rel.ends_with("pyproject.toml") {
            content = own_description(&content, &new.name);
        }
        edits.push(Edit::Write { path: dest, content });
    }

    // The manifest: the template's table renamed, after the last service; the pairing
    // after the last one.
    let mut lines = text::lines(sources.get(manifest_rel)?);
    let tables = text::toml_tables(&lines);
    let t_table = find(&tables, &format!("services.{template}"), manifest_rel)?;
    let mut table: Vec<String> = lines[t_table.start..t_table.end]
        .iter()
        .map(|l| rename.text(l))
        .collect();
    // The template's path may not be services/<template>.
    for l in &mut table {
        if l.trim_start().starts_with("path") {
            *l = format!("path = \"services/{}\"", new.name);
        }
    }
    let mut pairing = None;
    if let Some((callee, _)) = &new.calls {
        pairing = Some(vec![
            format!("# {} calls {callee} over mTLS with a client certificate.", new.name),
            "[[certs.mtls]]".to_owned(),
            format!("client = \"{}\"", new.name),
            format!("server = \"{callee}\""),
        ]);
    }
    // Insert from the bottom up, so the earlier positions stay right.
    let mut inserts = vec![(last(&tables, |k| k.starts_with("services."), manifest_rel)?.end, table)];
    if let Some(pairing) = pairing {
        let at = tables
            .iter()
            .rev()
            .find(|b| b.key == "certs.mtls" || b.key == "certs")
            .map(|b| b.end)
            .unwrap_or(lines.len());
        inserts.push((at, pairing));
    }
    inserts.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    for (at, block) in inserts {
        text::insert(&mut lines, at, &block);
    }
    edits.push(Edit::Write {
        path: manifest_rel.to_owned(),
        content: text::join(&lines),
    });

    // compose.yaml: the template's service, without its own upstream.
    let compose = sources.get(COMPOSE)?;
    let mut lines = text::lines(compose);
    let services = text::yaml_children(&lines, "services");
    let t_block = find(&services, template, COMPOSE)?;
    let mut block = compose_block(&lines[t_block.start..t_block.end], &rename);
    if let Some((callee, port)) = &new.calls {
        // Inside the stack's network the callee listens on its container port, which its
        // compose entry publishes (the manifest's port is the host's).
        let port = services
            .iter()
            .find(|b| b.key == *callee)
            .and_then(|b| container_port(&lines[b.start..b.end]))
            .unwrap_or(*port);
        add_upstream(&mut block, callee, port);
    }
    let at = services.last().map_or(lines.len(), |b| b.end);
    text::insert(&mut lines, at, &block);
    edits.push(Edit::Write {
        path: COMPOSE.into(),
        content: text::join(&lines),
    });

    // compose.local.yaml: the template's local settings, and its volumes.
    if let Ok(local) = sources.get(COMPOSE_LOCAL) {
        let mut lines = text::lines(local);
        let services = text::yaml_children(&lines, "services");
        if let Some(t_block) = services.iter().find(|b| b.key == template) {
            let mut block = compose_block(&lines[t_block.start..t_block.end], &rename);
            if new.kind == Kind::Python {
                let host = free_debug_port(local);
                for l in &mut block {
                    if l.trim_start().starts_with("- ") && l.contains(&format!(":{DEBUGPY}\"")) {
                        *l = format!(
                            "      - \"127.0.0.1:${{{}_DEBUGPY_PORT:-{host}}}:{DEBUGPY}\"",
                            var_prefix(&new.name)
                        );
                    }
                }
            }
            let volumes = text::yaml_children(&lines, "volumes");
            let new_volumes: Vec<String> = volumes
                .iter()
                .filter(|v| text::has_word(&v.key, template))
                .map(|v| format!("  {}:", rename.path(&v.key)))
                .collect();
            if let (false, Some(last_volume)) = (new_volumes.is_empty(), volumes.last()) {
                lines.splice(last_volume.end..last_volume.end, new_volumes);
            }
            let at = services.last().map_or(lines.len(), |b| b.end);
            text::insert(&mut lines, at, &block);
            edits.push(Edit::Write {
                path: COMPOSE_LOCAL.into(),
                content: text::join(&lines),
            });
        }
    }

    // A Rust service is a member of the Cargo workspace.
    if new.kind == Kind::Rust {
        let cargo = sources.get("Cargo.toml")?;
        edits.push(Edit::Write {
            path: "Cargo.toml".into(),
            content: members(cargo, &format!("services/{}", new.name), true)?,
        });
    }
    Ok(edits)
}

fn find<'a>(blocks: &'a [Block], key: &str, file: &str) -> Result<&'a Block> {
    blocks
        .iter()
        .find(|b| b.key == key)
        .ok_or_else(|| anyhow::anyhow!("{file} has no `{key}` entry to start from"))
}

fn last<'a>(blocks: &'a [Block], pred: impl Fn(&str) -> bool, file: &str) -> Result<&'a Block> {
    blocks
        .iter()
        .rev()
        .find(|b| pred(&b.key))
        .ok_or_else(|| anyhow::anyhow!("{file} has no service table"))
}

/// A template's compose block for a new service: renamed, without the template's own
/// comments (they speak of it) and without its upstream (`UPSTREAM_URL`, `depends_on`).
fn compose_block(lines: &[String], rename: &Rename) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_deeper_than: Option<usize> = None;
    for line in lines {
        let indent = line.len() - line.trim_start().len();
        if let Some(depth) = skip_deeper_than {
            if indent > depth || line.trim().is_empty() {
                continue;
            }
            skip_deeper_than = None;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.starts_with("UPSTREAM_URL:") {
            continue;
        }
        if trimmed == "depends_on:" {
            skip_deeper_than = Some(indent);
            continue;
        }
        out.push(rename.text(line));
    }
    out
}

/// The container port of a compose service: the last number of its first `ports` entry
/// (`"${X_PUBLISH:-127.0.0.1}:${X_PORT:-9443}:9443"` -> 9443).
fn container_port(block: &[String]) -> Option<u16> {
    let at = block.iter().position(|l| l.trim() == "ports:")?;
    let entry = block.get(at + 1)?.trim().strip_prefix("- ")?.trim_matches('"');
    entry.rsplit(':').next()?.split('/').next()?.parse().ok()
}

/// The upstream of a service that calls `callee`: its URL in `environment`, and
/// `depends_on` so compose starts the callee first.
fn add_upstream(block: &mut Vec<String>, callee: &str, port: u16) {
    let url = format!("      UPSTREAM_URL: https://{callee}:{port}");
    match block.iter().position(|l| l.trim() == "environment:") {
        Some(env) => {
            let end = (env + 1..block.len())
                .find(|&i| block[i].len() - block[i].trim_start().len() <= 4)
                .unwrap_or(block.len());
            block.insert(end, url);
        }
        None => {
            block.push("    environment:".into());
            block.push(url);
        }
    }
    let depends = [
        "    depends_on:".to_owned(),
        format!("      {callee}:"),
        "        condition: service_started".to_owned(),
    ];
    let at = block
        .iter()
        .position(|l| l.trim() == "healthcheck:")
        .unwrap_or(block.len());
    block.splice(at..at, depends);
}

/// The first host port from 5679 up that compose.local.yaml does not name.
fn free_debug_port(local: &str) -> u16 {
    (DEBUGPY + 1..)
        .find(|p| !text::has_word(local, &p.to_string()))
        .unwrap_or(DEBUGPY + 1)
}

/// A package description of the new service's own, in place of the template's.
fn own_description(content: &str, name: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for line in content.lines() {
        if line.starts_with("description = ") {
            out.push(format!("description = \"The {name} service.\""));
        } else {
            out.push(line.to_owned());
        }
    }
    text::join(&out)
}

/// The workspace Cargo.toml with `member` added to (or taken from) `members`, on one line
/// or one per line, as the file has it.
fn members(cargo: &str, member: &str, add: bool) -> Result<String> {
    let mut lines = text::lines(cargo);
    let Some(at) = lines.iter().position(|l| l.trim_start().starts_with("members")) else {
        bail!("Cargo.toml has no workspace `members` list to add {member} to");
    };
    let quoted = format!("\"{member}\"");
    if lines[at].contains(']') {
        let line = &lines[at];
        let (head, rest) = line.split_once('[').context("`members = [...]` in Cargo.toml")?;
        let (list, tail) = rest.rsplit_once(']').context("`members = [...]` in Cargo.toml")?;
        let mut items: Vec<String> = list
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if add {
            items.push(quoted);
        } else {
            items.retain(|i| *i != quoted);
        }
        lines[at] = format!("{head}[{}]{tail}", items.join(", "));
    } else {
        let close = (at..lines.len())
            .find(|&i| lines[i].trim_start().starts_with(']'))
            .context("the `members` list in Cargo.toml does not end")?;
        if add {
            lines.insert(close, format!("    {quoted},"));
        } else if let Some(i) = (at..close).find(|&i| lines[i].trim().trim_end_matches(',') == quoted) {
            lines.remove(i);
        }
    }
    Ok(text::join(&lines))
}

/// What `remove` is asked for, checked: a service nothing else needs.
pub fn check_remove(m: &Manifest, name: &str) -> Result<()> {
    m.service_names(&[name.to_owned()])?;
    let callers: Vec<&str> = m
        .certs
        .mtls
        .iter()
        .filter(|p| p.server.get_ref() == name && p.client.get_ref() != name)
        .map(|p| p.client.get_ref().as_str())
        .collect();
    if !callers.is_empty() {
        bail!(
            "`{name}` is called by {} ([[certs.mtls]] in slipway.toml, and their UPSTREAM_URL): \
             remove {} first, or make {} call something else",
            callers.join(", "),
            if callers.len() == 1 { "it" } else { "them" },
            if callers.len() == 1 { "it" } else { "them" },
        );
    }
    let path = m.services[name].path.get_ref().trim_end_matches('/');
    for (other, s) in &m.services {
        if other.get_ref() != name && s.depends_on.iter().any(|d| d.get_ref().trim_end_matches('/') == path) {
            bail!(
                "`{}` is built from {path} too (its depends-on in slipway.toml): change that first",
                other.get_ref()
            );
        }
    }
    Ok(())
}

/// Every edit `remove` makes. Does no I/O.
pub fn plan_remove(m: &Manifest, manifest_rel: &str, sources: &Sources, name: &str) -> Result<Vec<Edit>> {
    let service = &m.services[name];
    let mut edits = Vec::new();

    let mut lines = text::lines(sources.get(manifest_rel)?);
    // Bottom up, so the earlier blocks' positions stay right.
    for block in text::toml_tables(&lines).iter().rev() {
        let pairing = block.key == "certs.mtls" && text::toml_string(&lines, block, "client").as_deref() == Some(name);
        if block.key == format!("services.{name}") || pairing {
            text::remove(&mut lines, block);
        }
    }
    edits.push(Edit::Write {
        path: manifest_rel.to_owned(),
        content: text::join(&lines),
    });

    for file in [COMPOSE, COMPOSE_LOCAL] {
        let Ok(content) = sources.get(file) else { continue };
        let mut lines = text::lines(content);
        let mut changed = false;
        for block in text::yaml_children(&lines, "volumes").iter().rev() {
            if text::has_word(&block.key, name) {
                lines.drain(block.start..block.end);
                changed = true;
            }
        }
        if let Some(block) = text::yaml_children(&lines, "services").iter().find(|b| b.key == name) {
            text::remove(&mut lines, block);
            changed = true;
        }
        if changed {
            edits.push(Edit::Write {
                path: file.into(),
                content: text::join(&lines),
            });
        }
    }

    let path = service.path.get_ref().trim_end_matches('/').to_owned();
    if service.kind == Kind::Rust {
        let cargo = sources.get("Cargo.toml")?;
        let updated = members(cargo, &path, false)?;
        if updated != cargo {
            edits.push(Edit::Write {
                path: "Cargo.toml".into(),
                content: updated,
            });
        }
    }
    edits.push(Edit::RemoveDir { path });
    Ok(edits)
}

/// Apply edits: every file written whole; when one fails, the files already changed are
/// put back as they were and the error says which failed.
pub fn apply(root: &Path, edits: &[Edit]) -> Result<()> {
    let mut undo: Vec<(PathBuf, Option<Vec<u8>>)> = Vec::new();
    let result = (|| -> Result<()> {
        for edit in edits {
            match edit {
                Edit::Write { path, content } => {
                    let full = root.join(path);
                    undo.push((full.clone(), std::fs::read(&full).ok()));
                    if let Some(dir) = full.parent() {
                        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                    }
                    crate::fs::write_if_changed(&full, content)?;
                }
                Edit::RemoveDir { .. } => {}
            }
        }
        Ok(())
    })();
    if let Err(err) = result {
        for (path, before) in undo.into_iter().rev() {
            let _ = match before {
                Some(bytes) => std::fs::write(&path, bytes),
                None => std::fs::remove_file(&path),
            };
        }
        return Err(err.context("nothing was changed (the files already written were put back)"));
    }
    for edit in edits {
        if let Edit::RemoveDir { path } = edit {
            let full = root.join(path);
            if full.exists() {
                std::fs::remove_dir_all(&full).with_context(|| format!("deleting {}", full.display()))?;
            }
        }
    }
    Ok(())
}

/// The Cargo.lock brought in line with the workspace's members (a member added or
/// removed), offline: nothing else in it changes.
pub fn lock_step(project: &Project) -> Step {
    Step::new(
        "Cargo.lock: the workspace members",
        std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
    )
    .args(["update", "--workspace", "--offline", "--quiet"])
    .cwd(&project.root)
    .output(Output::Inherit)
}

pub fn show(edits: &[Edit], sources: &Sources) {
    for edit in edits {
        println!("  {}", edit.describe(sources));
    }
}
