//! `bench --only nodes --builder NAME`: what the registry cache saves a builder node.
//!
//! This engine builds every prod image, exporting the registry cache (`build.cache`
//! must be `type = "registry"`). Then on the node, cleared first each time (the project's
//! images and its build cache: the root image stays, it is pulled by digest either
//! way): a cold build with `--no-cache` (every step run, so the node needs the network),
//! then a cold build from the registry cache, its progress read as BuildKit's rawjson to
//! count the RUN and COPY steps it took from the cache. One run each: a cold build is
//! minutes, and clearing the node between runs is the measurement.

use anyhow::{Result, bail};
use serde::Deserialize;

use super::{Figure, clear_store, fig, sh, timed};
use crate::manifest::Cache;
use crate::project::Project;
use crate::{build, docker};

pub fn figures(project: &Project, xtask: &str, node: &str) -> Result<Vec<Figure>> {
    let m = &project.manifest;
    if !matches!(m.build.cache, Cache::Registry { .. }) {
        bail!(
            "--only nodes measures the registry cache: set `cache = {{ type = \"registry\", reference = \"REGISTRY/PROJECT/cache\" }}` under [build] in {}",
            project.manifest_path.display()
        );
    }
    let endpoint = build::node_endpoint(project, node)?;
    let clear_node = || docker::on_endpoint(Some(endpoint.clone()), || clear_store(project, false, |step| step));
    if let Err(why) = docker::on_endpoint(Some(endpoint.clone()), docker::engine_version) {
        bail!(
            "builder node `{node}` ({}) does not answer: {why}; `cargo xtask builders` says why",
            endpoint.via
        );
    }
    let root = &project.root;
    sh(
        "build on this engine, exporting the registry cache",
        &format!("{xtask} build --target prod"),
        root,
    )?;
    let build = format!("{xtask} build --target prod --builder {node}");
    clear_node()?;
    let without = timed(1, |_| {
        sh("cold build with --no-cache", &format!("{build} --no-cache"), root).map(|_| ())
    })?;
    clear_node()?;
    let mut progress = String::new();
    let with = timed(1, |_| {
        let ran = sh(
            "cold build from the registry cache",
            &format!("BUILDKIT_PROGRESS=rawjson {build}"),
            root,
        )?;
        progress = ran.stderr;
        Ok(())
    })?;
    let (steps, hits) = cache_hits(&progress);
    let share = if steps == 0 {
        0.0
    } else {
        100.0 * hits as f64 / steps as f64
    };
    Ok(vec![
        fig(
            &format!("node `{node}`: cold build of every prod image from the registry cache"),
            format!("(node cleared) {build}"),
            with,
            "s",
            1,
            Some(format!(
                "without the cache (`--no-cache`, node cleared): {without:.2} s ({:.1}x)",
                without / with
            )),
            "(no target)",
            None,
        ),
        fig(
            &format!("node `{node}`: RUN and COPY steps from the registry cache"),
            format!("(node cleared) BUILDKIT_PROGRESS=rawjson {build}"),
            share,
            "%",
            1,
            Some(format!("{hits} of {steps}")),
            ">= 90%",
            Some(steps > 0 && hits * 10 >= steps * 9),
        ),
    ])
}

/// One line of BuildKit's rawjson progress: a solve status.
#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    vertexes: Vec<Vertex>,
}

#[derive(Deserialize)]
struct Vertex {
    digest: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    cached: bool,
    completed: Option<String>,
}

/// Of a build's stderr (xtask's `==> bake` lines between bake's rawjson statuses): how
/// many RUN and COPY steps there were, and how many completed as cached. A step loaded
/// from the registry cache is said again, uncached, when its layer is pulled for the
/// image: a hit is any status completing it as cached.
fn cache_hits(progress: &str) -> (usize, usize) {
    let mut steps = std::collections::BTreeMap::new();
    let mut bake = 0;
    for line in progress.lines() {
        if line.starts_with("==> bake") {
            bake += 1;
        }
        let Ok(status) = serde_json::from_str::<Status>(line) else {
            continue;
        };
        for v in status.vertexes {
            let is_step = v.name.starts_with('[') && (v.name.contains("] RUN ") || v.name.contains("] COPY "));
            if is_step {
                *steps.entry((bake, v.digest)).or_insert(false) |= v.cached && v.completed.is_some();
            }
        }
    }
    (steps.len(), steps.values().filter(|hit| **hit).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_said_cached_once_is_a_hit_and_digests_count_per_bake() {
        let progress = r#"==> bake 1 of 2: os-base
{"vertexes":[{"digest":"sha256:a","name":"[os-base 2/3] RUN apt-get update"}]}
{"vertexes":[{"digest":"sha256:a","name":"[os-base 2/3] RUN apt-get update","cached":true,"started":"t","completed":"t"}]}
{"vertexes":[{"digest":"sha256:a","name":"[os-base 2/3] RUN apt-get update","started":"t","completed":"t"}]}
{"vertexes":[{"digest":"sha256:b","name":"[os-base 3/3] COPY x /x","started":"t","completed":"t"}]}
{"vertexes":[{"digest":"sha256:c","name":"[internal] load build definition from Dockerfile","cached":true,"completed":"t"}]}
not json
==> bake 2 of 2: agent
{"vertexes":[{"digest":"sha256:a","name":"[os-base 2/3] RUN apt-get update","cached":true,"completed":"t"}]}
"#;
        assert_eq!(cache_hits(progress), (3, 2));
    }
}
