//! `cargo xtask builders`: this machine's engine and every builder node slipway.toml
//! declares (`build.builders`), each asked on its own thread, side by side: reachable or
//! why not, the engine and its image store, the BuildKit builder and what it can do (the
//! probes of `engine.rs`, remembered per node), the platforms it builds natively and
//! through emulation, and its free disk.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::docker::{self, Endpoint, Via};
use crate::engine::Engine;
use crate::project::Project;
use crate::{disk, flags, ui};

/// What one node answered.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// `local` for this machine's engine, else its name in `build.builders`.
    pub name: String,
    /// Where it is reached: `tcp://HOST:PORT`, or `DOCKER_HOST` / the docker context.
    pub endpoint: String,
    /// The platforms slipway.toml says it builds natively.
    pub declared: Vec<String>,
    /// What it said, or the one line that says why it could not be asked.
    #[serde(flatten)]
    pub state: State,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "reachable", rename_all = "lowercase")]
pub enum State {
    #[serde(rename = "yes")]
    Up(Box<Answers>),
    #[serde(rename = "no")]
    Down { why: String },
}

/// A reachable node's answers.
#[derive(Debug, Clone, Serialize)]
pub struct Answers {
    pub engine: Engine,
    /// Its own platform (what it builds without emulation); `engine.platforms` are all
    /// its builder can build (natively and through emulation).
    pub native: String,
    pub cpus: u32,
    pub memory_gib: f64,
    /// Free space on its data root, when it can be read from here...
    pub free_gib: Option<f64>,
    /// ...and why not, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_unknown: Option<String>,
}

impl flags::Builders {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let wanted = wanted(project);
        if dry_run {
            for (name, endpoint, _) in &wanted {
                let at = match endpoint {
                    Ok(Some(e)) => e.via.to_string(),
                    Ok(None) => "this machine's engine".to_owned(),
                    Err(_) => "no client certificate yet".to_owned(),
                };
                println!(
                    "ask {name} ({at}): docker version, docker info, docker buildx inspect, the capability probes"
                );
            }
            return Ok(());
        }
        let nodes: Vec<Node> = std::thread::scope(|scope| {
            let asked: Vec<_> = wanted
                .into_iter()
                .map(|(name, endpoint, declared)| scope.spawn(move || ask(project, name, endpoint, declared)))
                .collect();
            asked.into_iter().map(|h| h.join().expect("a node's thread")).collect()
        });
        if self.json {
            println!("{}", serde_json::to_string_pretty(&nodes)?);
        } else {
            for node in &nodes {
                print!("{}", render(node));
            }
        }
        let down = nodes.iter().filter(|n| matches!(n.state, State::Down { .. })).count();
        if down > 0 {
            ui::warn(&format!(
                "{down} of {} builder(s) not reachable: `build --builder NAME` needs its engine up (over TCP, listening with the certificates `cargo xtask certs` issued; through a docker context, as the context says) (docs/building.md#builder-nodes-and-a-registry-cache)",
                nodes.len()
            ));
        }
        Ok(())
    }
}

/// The nodes to ask: this machine's engine first, then each declared node with the
/// client certificate `certs` issued (without one, that node's line says so).
type Wanted = (String, Result<Option<Endpoint>, String>, Vec<String>);

fn wanted(project: &Project) -> Vec<Wanted> {
    let m = &project.manifest;
    let defaults: Vec<String> = m.build.platforms.iter().map(|p| p.get_ref().clone()).collect();
    let mut out: Vec<Wanted> = vec![("local".into(), Ok(None), Vec::new())];
    if m.build.builders.is_empty() {
        return out;
    }
    for (name, node) in &m.build.builders {
        let declared = node
            .platforms
            .as_ref()
            .map(|ps| ps.iter().map(|p| p.get_ref().clone()).collect())
            .unwrap_or_else(|| defaults.clone());
        let endpoint = crate::build::node_via(project, node)
            .map(|via| {
                Some(Endpoint {
                    name: name.get_ref().clone(),
                    via,
                })
            })
            .map_err(|e| format!("{e:#}"));
        out.push((name.get_ref().clone(), endpoint, declared));
    }
    out
}

/// Where slipway.toml says a node is: its endpoint, or its docker context.
fn declared_at(node: &crate::manifest::BuilderNode) -> String {
    match (&node.endpoint, &node.context) {
        (Some(endpoint), _) => endpoint.get_ref().clone(),
        (None, Some(context)) => format!("docker context {}", context.get_ref()),
        (None, None) => String::new(),
    }
}

/// Ask one node everything, on the calling thread, its steps sent to it.
fn ask(project: &Project, name: String, endpoint: Result<Option<Endpoint>, String>, declared: Vec<String>) -> Node {
    let node = |endpoint: String, state| Node {
        name: name.clone(),
        endpoint,
        declared: declared.clone(),
        state,
    };
    let declared_at = project
        .manifest
        .build
        .builders
        .iter()
        .find(|(n, _)| *n.get_ref() == name)
        .map(|(_, b)| declared_at(b));
    let endpoint = match endpoint {
        Ok(e) => e,
        Err(why) => return node(declared_at.unwrap_or_default(), State::Down { why }),
    };
    // A context's host, as the context says (what is asked below goes through it).
    let context_host = match endpoint.as_ref().map(|e| &e.via) {
        Some(Via::Context(context)) => match docker::context_host(context) {
            Ok(host) => Some(host),
            Err(why) => return node(format!("docker context {context}"), State::Down { why }),
        },
        _ => None,
    };
    let (shown, loopback) = match (endpoint.as_ref().map(|e| &e.via), &context_host) {
        (None, _) => (
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the docker context's engine".into()),
            true,
        ),
        (Some(Via::Tls { host, .. }), _) => (host.clone(), is_loopback(host)),
        (Some(via), host) => {
            let host = host.as_deref().unwrap_or_default();
            (format!("{via} ({host})"), is_loopback(host))
        }
    };
    let state = docker::on_endpoint(endpoint, || {
        let version = match docker::server_version() {
            Ok(v) => v,
            Err(why) => return State::Down { why },
        };
        let builder = if name == "local" {
            project.manifest.build.builder.as_deref()
        } else {
            None
        };
        let (host, engine) = std::thread::scope(|scope| {
            let host = scope.spawn(docker::carried(docker::host));
            let engine = Engine::probe_version(project, builder, false, version);
            (host.join().ok().flatten(), engine)
        });
        let engine = match engine {
            Ok(e) => e,
            Err(err) => {
                return State::Down {
                    why: format!("{err:#}"),
                };
            }
        };
        let Some(host) = host else {
            return State::Down {
                why: "`docker info` did not answer".into(),
            };
        };
        // This machine's disk is read here; a remote node's, by `df` in a container there.
        let (free_gib, free_unknown) = if loopback {
            match disk::Place::engine(Path::new(&host.root_dir)).free_gib() {
                Some(gib) => (Some(gib), None),
                None => (None, Some(format!("{} cannot be read from here", host.root_dir))),
            }
        } else {
            match docker::free_gib_inside(&crate::bootstrap::root_image(project)) {
                Ok(gib) => (Some(gib), None),
                Err(why) => (None, Some(why)),
            }
        };
        State::Up(Box::new(Answers {
            engine,
            native: host.platform,
            cpus: host.cpus,
            memory_gib: host.memory_bytes as f64 / f64::from(1u32 << 30),
            free_gib,
            free_unknown,
        }))
    });
    node(shown, state)
}

/// Whether `tcp://HOST:PORT` (or a `unix://` socket) is this machine (its disk is ours
/// to read).
fn is_loopback(host: &str) -> bool {
    if host.starts_with("unix://") {
        return true;
    }
    let rest = host.strip_prefix("tcp://").unwrap_or(host);
    let name = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A node as lines of text: its name, endpoint and state, then what it can do.
pub fn render(node: &Node) -> String {
    let mut out = String::new();
    let answers = match &node.state {
        State::Down { why } => {
            out.push_str(&format!(
                "{} {}  {}\n      not reachable: {why}\n",
                ui::mark("fail"),
                node.name,
                node.endpoint
            ));
            return out;
        }
        State::Up(a) => a,
    };
    let e = &answers.engine;
    let mut problems = Vec::new();
    let foreign: Vec<&str> = node
        .declared
        .iter()
        .map(String::as_str)
        .filter(|p| *p != answers.native)
        .collect();
    if !foreign.is_empty() {
        problems.push(format!(
            "declared native for {}, but its engine runs {}: its builds of them are emulated",
            foreign.join(", "),
            answers.native
        ));
    }
    let free = match (answers.free_gib, &answers.free_unknown) {
        (Some(gib), _) => {
            if gib < disk::Place::engine(Path::new("")).min_gib {
                problems.push(format!("{gib:.1} GiB free on its data root"));
            }
            format!("{gib:.1} GiB free")
        }
        (None, why) => format!("free disk unknown ({})", why.as_deref().unwrap_or("not asked")),
    };
    let mark = if problems.is_empty() { "ok" } else { "warn" };
    out.push_str(&format!("{} {}  {}\n", ui::mark(mark), node.name, node.endpoint));
    out.push_str(&format!(
        "      engine {} ({} store), {} CPUs, {:.1} GiB memory, {free}\n",
        e.version,
        e.store.name(),
        answers.cpus,
        answers.memory_gib
    ));
    out.push_str(&format!(
        "      builder {} ({} driver, BuildKit {}), buildx {}\n",
        e.builder.as_deref().unwrap_or("default"),
        e.driver,
        e.buildkit,
        e.buildx
    ));
    let emulated: Vec<&str> = e
        .platforms
        .iter()
        .map(String::as_str)
        .filter(|p| *p != answers.native)
        .collect();
    out.push_str(&format!(
        "      platforms: {} native{}{}\n",
        answers.native,
        if emulated.is_empty() {
            String::new()
        } else {
            format!(", {} emulated", emulated.join(", "))
        },
        if node.declared.is_empty() {
            String::new()
        } else {
            format!("; declared {}", node.declared.join(", "))
        }
    ));
    let (can, cannot): (Vec<_>, Vec<_>) = e.capabilities.each().into_iter().partition(|(_, p, _)| p.ok);
    let can: Vec<&str> = can.iter().map(|(name, _, _)| *name).collect();
    out.push_str(&format!(
        "      can: {}\n",
        if can.is_empty() { "none".into() } else { can.join(", ") }
    ));
    for (name, probe, cost) in cannot {
        out.push_str(&format!("      cannot: {name} ({}): {cost}\n", probe.why));
    }
    for problem in problems {
        out.push_str(&format!("      {} {problem}\n", ui::mark("warn")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_endpoint_is_this_machine() {
        assert!(is_loopback("tcp://127.0.0.1:2376"));
        assert!(is_loopback("tcp://localhost:2376"));
        assert!(is_loopback("tcp://[::1]:2376"));
        assert!(!is_loopback("tcp://10.0.0.7:2376"));
        assert!(!is_loopback("tcp://builder.internal:2376"));
    }

    #[test]
    fn an_unreachable_node_says_why_and_a_mislabelled_one_is_warned() {
        let down = Node {
            name: "big".into(),
            endpoint: "tcp://10.0.0.7:2376".into(),
            declared: vec!["linux/arm64".into()],
            state: State::Down {
                why: "connection refused".into(),
            },
        };
        let text = render(&down);
        assert!(text.contains("big  tcp://10.0.0.7:2376") && text.contains("not reachable: connection refused"));
        let up = Node {
            state: State::Up(Box::new(Answers {
                engine: Engine {
                    platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
                    ..Engine::assumed(None, "a test")
                },
                native: "linux/amd64".into(),
                cpus: 2,
                memory_gib: 23.5,
                free_gib: Some(50.0),
                free_unknown: None,
            })),
            ..down
        };
        let text = render(&up);
        assert!(
            text.contains("platforms: linux/amd64 native, linux/arm64 emulated; declared linux/arm64"),
            "{text}"
        );
        assert!(
            text.contains("declared native for linux/arm64, but its engine runs linux/amd64"),
            "{text}"
        );
        assert!(text.contains("can: named contexts, cache export"), "{text}");
    }
}
