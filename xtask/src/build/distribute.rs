//! A push for several platforms spread over the builder nodes that declare them
//! (`build --platform A,B --push` and `release --push`, with no `--builder`): each
//! platform goes to the first node of `build.builders` (by name) whose `platforms` list
//! it, the rest to this machine's engine (which builds them as a one-node build does,
//! cross-compiling and emulating where it must). Each node builds its share side by
//! side with the others, from a build directory of its own, and pushes its images by
//! digest alone; then `docker buildx imagetools create` joins each image's per-node
//! indexes into one index under the image's tags. Nothing here schedules: BuildKit on
//! each node builds, the registry carries the results.
//!
//! Everything but the shares (which node builds what) is the one-node build: the same
//! plan and run, on the node's endpoint.

use anyhow::{Result, bail};

use super::{Built, Facts, Request, plan, run_locked, show};
use crate::docker::{self, Endpoint};
use crate::manifest::{Manifest, Target};
use crate::project::Project;
use crate::{bake, ui};

/// The platforms one node builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Its name in `build.builders`; `None` for this machine's engine.
    pub node: Option<String>,
    pub platforms: Vec<String>,
}

impl Share {
    /// `local`, or the node's name: also its build directory's.
    pub fn label(&self) -> &str {
        self.node.as_deref().unwrap_or("local")
    }
}

/// Which node builds which of `platforms`: the first node (by name) whose declared
/// platforms (its `platforms`, else `build.platforms`) list it, else this machine's
/// engine. In the order the platforms were asked for; this machine's engine first.
/// Pure: a function of the manifest alone.
pub fn shares(m: &Manifest, platforms: &[String]) -> Vec<Share> {
    let declared = |node: &crate::manifest::BuilderNode| -> Vec<String> {
        node.platforms
            .iter()
            .flatten()
            .chain(if node.platforms.is_none() {
                &m.build.platforms[..]
            } else {
                &[]
            })
            .map(|p| p.get_ref().clone())
            .collect()
    };
    let mut out: Vec<Share> = Vec::new();
    for platform in platforms {
        let node = m
            .build
            .builders
            .iter()
            .find(|(_, node)| declared(node).contains(platform))
            .map(|(name, _)| name.get_ref().clone());
        match out.iter_mut().find(|s| s.node == node) {
            Some(share) => share.platforms.push(platform.clone()),
            None => out.push(Share {
                node,
                platforms: vec![platform.clone()],
            }),
        }
    }
    out.sort_by_key(|s| s.node.is_some());
    out
}

/// The shares of a push of `platforms` (the target's when `None`), when it spreads over
/// more than one node; `None` when one node builds it all (the one-node build).
pub fn spread(m: &Manifest, target: Target, platforms: Option<&[String]>) -> Option<Vec<Share>> {
    let asked = platforms
        .map(<[String]>::to_vec)
        .unwrap_or_else(|| target.platforms(m, &docker::local_platform()));
    let shares = shares(m, &asked);
    (shares.len() > 1).then_some(shares)
}

/// What one node's share of a build is asked.
fn request(share: &Share, names: &[String], target: Target, push: bool, no_cache: bool) -> Request {
    Request {
        names: names.to_vec(),
        target,
        platforms: Some(share.platforms.clone()),
        push,
        no_cache,
        share: Some(share.label().to_owned()),
    }
}

/// Run `work` for every share at once, one thread each, its docker steps sent to its
/// node; every node's failure is named.
pub fn on_shares<T: Send>(
    project: &Project,
    shares: &[Share],
    work: impl Fn(&Share) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let endpoints: Vec<Option<Endpoint>> = shares
        .iter()
        .map(|s| s.node.as_deref().map(|n| super::node_endpoint(project, n)).transpose())
        .collect::<Result<_>>()?;
    let work = &work;
    let results: Vec<Result<T>> = std::thread::scope(|scope| {
        let running: Vec<_> = shares
            .iter()
            .zip(endpoints)
            .map(|(share, endpoint)| scope.spawn(move || docker::on_endpoint(endpoint, || work(share))))
            .collect();
        running
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("its thread panicked"))))
            .collect()
    });
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for (share, result) in shares.iter().zip(results) {
        match result {
            Ok(v) => out.push(v),
            // Ctrl-C stops every node's steps: said as itself (exit 130), once.
            Err(err) if err.is::<crate::plan::Interrupted>() => return Err(err),
            Err(err) => failed.push(format!("{} ({}): {err:#}", share.label(), share.platforms.join(", "))),
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(out)
}

/// One node's share, built (and with `push`, pushed by digest) on the calling thread's
/// node, the build lock already held.
pub fn build_share(
    project: &Project,
    share: &Share,
    names: &[String],
    target: Target,
    push: bool,
    no_cache: bool,
) -> Result<Vec<Built>> {
    ui::step(&format!("{}: {}", share.label(), share.platforms.join(", ")));
    let facts = Facts::probe(project, false)?;
    let plan = plan(project, &facts, &request(share, names, target, push, no_cache))?;
    run_locked(project, &facts, &plan, false)
}

/// skopeo pushes each node's images by digest: said before anything is built.
pub fn require_skopeo() -> Result<()> {
    if which::which("skopeo").is_err() {
        bail!(
            "a push spread over several builder nodes pushes each node's images by digest through skopeo, \
             which is not installed: `apt-get install skopeo` (or build on one node: `--builder NAME`)"
        );
    }
    Ok(())
}

/// Build and push `names` over `shares`, then join each image's platforms into one index
/// under its tags. Returns each image pushed, its digest the joined index's.
pub fn push(
    project: &Project,
    shares: &[Share],
    names: &[String],
    target: Target,
    no_cache: bool,
) -> Result<Vec<Built>> {
    require_skopeo()?;
    let _lock = project.lock("build")?;
    let per_node = on_shares(project, shares, |share| {
        build_share(project, share, names, target, true, no_cache)
    })?;
    join(shares, &per_node)
}

/// The join: for each image every node pushed, one index of all their platforms under
/// the image's tags (`imagetools create`, registry to registry: nothing is pulled here).
pub fn join(shares: &[Share], per_node: &[Vec<Built>]) -> Result<Vec<Built>> {
    let Some(first) = per_node.first() else {
        return Ok(Vec::new());
    };
    let mut joined = Vec::new();
    for image in first.iter().filter(|b| b.digest.is_some()) {
        let mut sources = Vec::new();
        for (share, built) in shares.iter().zip(per_node) {
            let digest = built
                .iter()
                .find(|b| b.image == image.image)
                .and_then(|b| b.digest.as_deref())
                .ok_or_else(|| anyhow::anyhow!("{} pushed no {} to join", share.label(), image.image.repository))?;
            sources.push(image.image.at(digest));
        }
        let tags: Vec<String> = image.tags.iter().map(|t| image.image.with_tag(t)).collect();
        join_step(&image.image, &tags, &sources).run()?;
        let digest = docker::index_digest(&tags[0])
            .map_err(|e| anyhow::anyhow!("the joined {}: {e}", image.image.repository))?;
        ui::note(&format!(
            "{} joined from {}: {}",
            image.image.repository,
            shares
                .iter()
                .map(|s| format!("{} ({})", s.label(), s.platforms.join(", ")))
                .collect::<Vec<_>>()
                .join(" and "),
            digest
        ));
        joined.push(Built {
            image: image.image.clone(),
            tags: image.tags.clone(),
            digest: Some(digest),
            ..Built::default()
        });
    }
    Ok(joined)
}

/// `docker buildx imagetools create`: one index of every source's platforms (each
/// source a node's index, pushed by digest), under every tag.
pub fn join_step(image: &bake::Image, tags: &[String], sources: &[String]) -> crate::plan::Step {
    let mut args = vec!["buildx", "imagetools", "create", "--progress", "plain"];
    for tag in tags {
        args.extend(["--tag", tag]);
    }
    args.extend(sources.iter().map(String::as_str));
    docker::step(format!("join {}'s platforms", image.repository), &args)
        .output(crate::plan::Output::Capture)
        .on_fail("imagetools reads every node's index from the registry and pushes the joined one: the registry must be up, and `docker login` done where it asks")
}

/// What a dry run of a spread push shows: each node's share and its plan, then the joins.
pub fn show_push(project: &Project, shares: &[Share], names: &[String], target: Target, no_cache: bool) -> Result<()> {
    for share in shares {
        let endpoint = share
            .node
            .as_deref()
            .map(|n| super::node_endpoint(project, n))
            .transpose()?;
        println!(
            "# {} on {}",
            share.platforms.join(", "),
            endpoint
                .as_ref()
                .map_or("this machine's engine".to_owned(), |e| format!(
                    "{} ({})",
                    e.name, e.via
                ))
        );
        docker::on_endpoint(endpoint, || {
            show(project, &request(share, names, target, true, no_cache))
        })?;
    }
    println!("# then, for each image pushed, one index of every node's platforms under its tags");
    for name in project.manifest.service_names(names)? {
        let image = bake::service_image(&project.manifest, &name, target);
        let sources: Vec<String> = shares
            .iter()
            .map(|s| image.at(&format!("sha256:<digest from {}>", s.label())))
            .collect();
        println!("{}", join_step(&image, &[image.reference()], &sources).command_line());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_platform_goes_to_the_first_node_declaring_it_the_rest_to_this_engine() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../slipway.toml")).unwrap();
        let with =
            |nodes: &str| Manifest::parse(&format!("{text}\n{nodes}"), std::path::Path::new("slipway.toml")).unwrap();
        let asked = [
            "linux/amd64".to_owned(),
            "linux/arm64".to_owned(),
            "linux/riscv64".to_owned(),
        ];
        let local = |platforms: &[&str]| Share {
            node: None,
            platforms: platforms.iter().map(|p| p.to_string()).collect(),
        };
        let node = |name: &str, platforms: &[&str]| Share {
            node: Some(name.to_owned()),
            platforms: platforms.iter().map(|p| p.to_string()).collect(),
        };
        // No node: one share, this engine's (the one-node build).
        let m = with("");
        assert_eq!(
            shares(&m, &asked),
            [local(&["linux/amd64", "linux/arm64", "linux/riscv64"])]
        );
        // A node for arm64 (and one after it, by name, for arm64 and amd64).
        let m = with(
            "[build.builders.zeta]\nendpoint = \"tcp://10.0.0.9:2376\"\nplatforms = [\"linux/arm64\", \"linux/amd64\"]\n\
             [build.builders.graviton]\nendpoint = \"tcp://10.0.0.8:2376\"\nplatforms = [\"linux/arm64\"]\n",
        );
        assert_eq!(
            shares(&m, &asked),
            [
                local(&["linux/riscv64"]),
                node("zeta", &["linux/amd64"]),
                node("graviton", &["linux/arm64"]),
            ]
        );
    }
}
