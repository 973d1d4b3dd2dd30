//! `cargo xtask build [NAME...] [--target T]`: generate the bake definition from the
//! manifest (`bake.rs`), stage each service's minimal build context, make sure the root
//! image is there (pull, or bootstrap), run `docker buildx bake`, keep bake's metadata
//! (digests) in `.<brand>/build/metadata.json`, and check the image policy (`lint.rs`).
//!
//! A missing Root CA stops the build before bake runs. Two builds on one checkout do not
//! race: the second waits for the first (`.<brand>/build.lock`) and says so.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::bake::{self, Inputs, Linking};
use crate::engine::Engine;
use crate::manifest::{Cache, Kind, Target};
use crate::plan::Step;
use crate::{bootstrap, certs, docker, flags, git, lint, project::Project, ui};

pub mod distribute;

impl flags::Build {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let target = self.target.unwrap_or(crate::manifest::Target::Prod);
        let platforms = self
            .platform
            .as_ref()
            .map(|p| p.split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>());
        if let Some(name) = &self.builder {
            use_builder(project, name, target, platforms.as_deref())?;
        }
        // A push for platforms the builder nodes declare: each node builds its share.
        let spread = (self.push && self.builder.is_none() && !self.print)
            .then(|| distribute::spread(&project.manifest, target, platforms.as_deref()))
            .flatten();
        if let Some(shares) = &spread {
            bake::selection(&project.manifest, &self.names, target)?;
            if dry_run {
                return distribute::show_push(project, shares, &self.names, target, self.no_cache);
            }
            if self.pull {
                bail!(
                    "--pull makes this machine's root image anew, which the other builder nodes would not see: \
                     run `cargo xtask bootstrap --refresh --push` (every node then pulls that root), then build"
                );
            }
            for image in distribute::push(project, shares, &self.names, target, self.no_cache)? {
                ui::note(&format!(
                    "{} {}",
                    image.image.reference(),
                    image.digest.unwrap_or_default()
                ));
            }
            return Ok(());
        }
        if dry_run {
            if self.pull {
                print!("{}", bootstrap::show(project, None, &[docker::local_platform()])?);
                ui::note("then the build below, with no cached layer where the root image did not change");
            }
            return show(
                project,
                &Request {
                    names: self.names,
                    target,
                    platforms,
                    push: self.push,
                    no_cache: self.no_cache,
                    share: None,
                },
            );
        }
        let mut no_cache = self.no_cache;
        if self.pull {
            // Fresh bases: the root made anew and recorded. A new root changes every
            // base's first step; the same root (a registry whose image has not moved)
            // would leave the apt layers cached, so then nothing cached is reused.
            bake::selection(&project.manifest, &self.names, target)?;
            let before = docker::image_id(&bootstrap::root_image(project));
            bootstrap::make(project, true, &[docker::local_platform()])?;
            let after = docker::image_id(&bootstrap::root_image(project));
            if before.is_some() && before == after {
                ui::note(
                    "the root image did not change: building with no cached layer, so the bases' packages are current",
                );
                no_cache = true;
            }
        }
        let built = build(
            project,
            &self.names,
            target,
            platforms,
            Mode {
                print: self.print,
                push: self.push,
                no_cache,
            },
        )?;
        if built.is_empty() {
            return Ok(());
        }
        for image in &built {
            ui::note(&format!(
                "{:<58} {:>8}",
                image.image.reference(),
                human_size(image.size)
            ));
        }
        Ok(())
    }
}

/// Send every docker step of this command to the builder node `name` (slipway.toml's
/// `build.builders`): its engine over TCP with the client certificate `certs` issued, or
/// through its docker context.
/// Refused, naming what to do, when no such node is declared or it does not build one
/// of the platforms asked for (`local` and `dev` build for the node's own).
pub fn use_builder(project: &Project, name: &str, target: Target, platforms: Option<&[String]>) -> Result<()> {
    let m = &project.manifest;
    let endpoint = node_endpoint(project, name)?;
    let (_, node) = m
        .build
        .builders
        .iter()
        .find(|(n, _)| n.get_ref() == name)
        .expect("node_endpoint found it");
    let own = node
        .platforms
        .iter()
        .flatten()
        .chain(&m.build.platforms)
        .next()
        .map(|p| p.get_ref().clone())
        .unwrap_or_default();
    let asked: Vec<String> = platforms
        .map(<[String]>::to_vec)
        .unwrap_or_else(|| target.platforms(m, &own));
    if let Some(native) = &node.platforms {
        let native: Vec<&str> = native.iter().map(|p| p.get_ref().as_str()).collect();
        let foreign: Vec<&str> = asked
            .iter()
            .map(String::as_str)
            .filter(|p| !native.contains(p))
            .collect();
        if !foreign.is_empty() {
            bail!(
                "builder `{name}` builds {} natively, not {}: pick a builder that declares them (its `platforms` in slipway.toml)",
                native.join(", "),
                foreign.join(", ")
            );
        }
    }
    if let docker::Via::Context(context) = &endpoint.via {
        docker::context_host(context).map_err(|why| anyhow::anyhow!("builder `{name}`: {why}"))?;
    }
    docker::use_endpoint(endpoint)
}

/// The builder node `name` of `build.builders`: its engine over TCP with the client
/// certificate `certs` issued, or through its docker context. Refused, naming what to do, when no such node is declared.
pub fn node_endpoint(project: &Project, name: &str) -> Result<docker::Endpoint> {
    let m = &project.manifest;
    let Some((_, node)) = m.build.builders.iter().find(|(n, _)| n.get_ref() == name) else {
        let known: Vec<&str> = m.build.builders.keys().map(|k| k.get_ref().as_str()).collect();
        bail!(
            "no builder named `{name}` in {}: {}",
            project.manifest_path.display(),
            if known.is_empty() {
                "declare one under [build.builders.NAME] (endpoint = \"tcp://HOST:PORT\", or context = \"NAME\")"
                    .to_owned()
            } else {
                format!("the builders are {}", known.join(", "))
            }
        );
    };
    node_via(project, node).map(|via| docker::Endpoint {
        name: name.to_owned(),
        via,
    })
}

/// How `node` is reached: its TCP endpoint with the client certificate `certs` issued
/// (copied where the docker CLI reads it), or its docker context.
pub fn node_via(project: &Project, node: &crate::manifest::BuilderNode) -> Result<docker::Via> {
    Ok(match (&node.endpoint, &node.context) {
        (Some(endpoint), _) => docker::Via::Tls {
            host: endpoint.get_ref().clone(),
            cert_path: certs::builder_tls(project)?,
        },
        (None, Some(context)) => docker::Via::Context(context.get_ref().clone()),
        (None, None) => unreachable!("the manifest check asks every builder for an endpoint or a context"),
    })
}

/// What `build` is asked to do besides building.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    /// Only show what bake resolves (`bake --print`).
    pub print: bool,
    /// Reuse no cached step.
    pub no_cache: bool,
    pub push: bool,
}

/// An image `build` made.
#[derive(Debug, Clone, Default)]
pub struct Built {
    /// Its name: `{registry}/{project}/{name}` and its first tag, `{version}[-target]`.
    pub image: bake::Image,
    /// The names of every tag bake gave it (seed 002's rules).
    pub tags: Vec<String>,
    pub size: u64,
    /// Its id in the local image store (empty when a push left no local image).
    pub id: String,
    /// With `--push`: the digest of the manifest pushed, from bake's metadata file.
    pub digest: Option<String>,
    /// The digest of its configuration (bake's metadata, kept in the up-to-date stamp):
    /// the same image has the same one in either image store and in a registry, where
    /// the image id of the containerd store is its manifest's digest instead.
    pub config_digest: Option<String>,
}

/// The Root CA fingerprint a plan shows when no CA has been made yet.
pub const NO_CA_YET: &str = "placeholder-no-root-ca-yet";

/// What a build is asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// Services or bases (every service when empty).
    pub names: Vec<String>,
    pub target: Target,
    /// `--platform`, overriding the manifest.
    pub platforms: Option<Vec<String>>,
    /// Push the images asked for (their bases are loaded).
    pub push: bool,
    /// Reuse no cached step (bake's `--no-cache`).
    pub no_cache: bool,
    /// One node's share of a push distributed over the builder nodes (`distribute`):
    /// the node's name. Its images are pushed by digest (the tags are the joined
    /// index's), from a build directory of its own.
    pub share: Option<String>,
}

/// Every fact a build is planned from, asked once of the engine, git and the files
/// ([`Facts::probe`]); tests make their own. [`plan`] asks nothing more.
#[derive(Debug, Clone)]
pub struct Facts {
    pub engine: Engine,
    /// The Root CA's fingerprint ([`NO_CA_YET`] in a plan shown before there is one).
    pub ca_sha256: String,
    /// The file bake passes as the `root-ca` secret.
    pub ca_file: PathBuf,
    pub head: git::Head,
    /// Each image's revision, by its input paths (its labels).
    pub revisions: bake::Revisions,
    /// Where the source lives (`org.opencontainers.image.source`).
    pub source: String,
    /// The checked bundle of extra CAs (`build.extra-ca`, `SLIPWAY_EXTRA_CA`), when there
    /// are any.
    pub extra_ca: Option<String>,
    /// The root image's id in the store; `None` when it must be pulled or bootstrapped.
    pub root_image_id: Option<String>,
    /// bases.lock, when there is one.
    pub bases: Option<crate::bases::Lock>,
}

impl Facts {
    /// Ask the engine, git and the files, side by side. A plan that only shows
    /// (`shows_only`: a dry run, `--print`) needs neither an engine nor a Root CA: it
    /// says what it assumed instead, and marks its placeholders.
    pub fn probe(project: &Project, shows_only: bool) -> Result<Facts> {
        let m = &project.manifest;
        let builder = m.build.builder.as_deref();
        let root_image = bootstrap::root_image(project);
        let (engine, (head, revisions), root_image_id) = std::thread::scope(|scope| {
            let git = scope.spawn(|| {
                let head = git::head(&project.root);
                let sets = bake::revision_paths(m);
                let revisions: bake::Revisions = git::inputs_revisions(&project.root, &sets)
                    .into_iter()
                    .zip(sets)
                    .map(|(revision, paths)| (paths, revision))
                    .collect();
                (head, revisions)
            });
            let root = scope.spawn(docker::carried(|| docker::image_id(&root_image)));
            let engine = Engine::probe(project, builder, false);
            (
                engine,
                git.join().expect("the git queries do not panic"),
                root.join().ok().flatten(),
            )
        });
        // In the order a user fixes things: the engine first, then the certificates.
        let engine = match engine {
            Ok(engine) => engine,
            Err(err) if shows_only => {
                ui::warn(&format!(
                    "{err:#}\n    the plan below assumes a modern engine (named contexts; buildx as installed)"
                ));
                Engine::assumed(builder, "the engine did not answer")
            }
            Err(err) => return Err(err),
        };
        let ca_file = project.certs_dir().join(certs::CA_CERT);
        let (ca_sha256, ca_file) = match certs::file_sha256(&ca_file) {
            Ok(sha) => (sha, ca_file),
            Err(_) if shows_only => {
                ui::warn(&format!(
                    "no Root CA at {} yet (`cargo xtask certs` makes it): its fingerprint below is the placeholder {NO_CA_YET}",
                    ca_file.display()
                ));
                // bake --print reads every file it names: a placeholder stands in, said so.
                let placeholder = bake::build_dir(&project.state_dir()).join(format!("{NO_CA_YET}.pem"));
                (NO_CA_YET.to_owned(), placeholder)
            }
            Err(err) => bail!(
                "the Root CA {} is missing or unreadable ({err:#}): run `cargo xtask certs` first; every image bakes it into its trust store",
                ca_file.display()
            ),
        };
        Ok(Facts {
            engine,
            ca_sha256,
            ca_file,
            head,
            revisions,
            source: std::env::var("SLIPWAY_SOURCE_URL")
                .unwrap_or_else(|_| format!("file://{}", project.root.display())),
            extra_ca: extra_ca_text(project)?,
            root_image_id,
            bases: crate::bases::Lock::read(project)?,
        })
    }
}

/// A build, planned: every decision made, nothing run. [`plan`] makes it from the
/// facts; [`run`] carries it out; a dry run prints [`BuildPlan::render`].
#[derive(Debug, Clone)]
pub struct BuildPlan {
    pub definition: bake::Definition,
    /// The selection, in layers (bases first, the services last).
    pub layers: Vec<Vec<String>>,
    pub linking: Linking,
    pub build_dir: PathBuf,
    pub bake_file: PathBuf,
    /// Where the checked extra CA bundle is written, when there is one.
    pub extra_ca_file: Option<PathBuf>,
    /// The up-to-date stamp of this selection at this target.
    pub stamp_file: PathBuf,
    /// The services whose build contexts are staged.
    pub contexts: Vec<String>,
    /// The root image, when it is not in the store (pulled, or bootstrapped).
    pub root_image_missing: Option<String>,
    /// The platforms the root image must hold: the builder's own (its tools run there:
    /// the rust builder, cross-compiling), then each of the images'.
    pub root_platforms: Vec<String>,
    /// The digest bases.lock pins the root image to, when it was pulled.
    pub root_digest: Option<String>,
    /// The bakes, each with the metadata file it writes and what follows it.
    pub bakes: Vec<Bake>,
    /// `bake --print` of the whole selection (what `build --print` runs).
    pub print: Step,
    pub target: Target,
    /// Whether the images asked for are pushed.
    pub push: bool,
    /// Whether every step runs again (`--no-cache`).
    pub no_cache: bool,
    /// Whether the images asked for are pushed by digest alone, no tag (one node's share
    /// of a distributed push), through skopeo from the archive bake exported...
    pub by_digest: bool,
    /// ...over plain HTTP where the registry is (`release.insecure-registry`).
    pub insecure_registry: bool,
    /// The node whose share of a distributed push this is ([`Request::share`]).
    pub share: Option<String>,
}

impl BuildPlan {
    /// Every bake target of the selection, bases first.
    pub fn all(&self) -> Vec<String> {
        self.layers.concat()
    }

    /// What a dry run shows: the root image's fate, then the bakes, numbered.
    pub fn render(&self, project: &Project) -> String {
        let mut plan = crate::plan::Plan::new();
        let mut out = String::new();
        if self.root_image_missing.is_some()
            && let Ok(root) = bootstrap::show(project, self.root_digest.as_deref(), &self.root_platforms)
        {
            out.push_str(&root);
        }
        plan.steps.extend(self.bakes.iter().flat_map(Bake::steps).cloned());
        for (name, archive) in self.bakes.iter().flat_map(|b| &b.by_digest) {
            let t = &self.definition.target[name];
            plan.push(push_by_digest(
                &t.image,
                archive,
                t.tag_names.first().unwrap_or(&t.image.tag),
                "sha256:<digest>",
                self.insecure_registry,
            ));
        }
        out.push_str(&plan.render());
        out
    }
}

/// The push of one image by its digest alone, no tag moved: skopeo copies the archive
/// bake exported to `repository@digest` byte for byte (`--preserve-digests`; `--all`:
/// every platform's image and attestation). The docker driver pushes by tag only
/// (buildx: "push-by-digest is currently not implemented for docker driver").
///
/// The archive names the image once per tag (`org.opencontainers.image.ref.name`), all
/// the same digest: `tag` picks one.
pub fn push_by_digest(image: &bake::Image, archive: &Path, tag: &str, digest: &str, insecure: bool) -> Step {
    let mut step = Step::new(format!("push {} by digest", image.repository), "skopeo").args([
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
    ]);
    if insecure {
        step = step.arg("--dest-tls-verify=false");
    }
    step.arg(format!("oci-archive:{}:{tag}", archive.display()))
        .arg(format!("docker://{}", image.at(digest)))
        .output(crate::plan::Output::Capture)
        .scratch(archive)
        .on_fail(format!(
            "a push needs the registry of {} up and reachable, and its credentials where it asks for them \
             (`docker login`, which skopeo reads too)",
            image.repository
        ))
}

/// Plan a build from the facts: the definition, the selection in layers, the bakes. A
/// pure function: it asks neither the engine nor git nor the files.
pub fn plan(project: &Project, facts: &Facts, request: &Request) -> Result<BuildPlan> {
    let m = &project.manifest;
    let caps = &facts.engine.capabilities;
    let native = facts.engine.native_platform();
    let platforms = request
        .platforms
        .clone()
        .unwrap_or_else(|| request.target.platforms(m, &native));
    let foreign: Vec<&str> = platforms.iter().map(String::as_str).filter(|p| *p != native).collect();
    if !foreign.is_empty() && facts.engine.store == docker::Store::Classic {
        bail!(
            "images for {} need the containerd image store, which holds an image (and its bases) for several \
             platforms under one name; this engine's classic store holds one: enable it (`\"features\": \
             {{\"containerd-snapshotter\": true}}` in /etc/docker/daemon.json, Docker 24+), or build for {native} alone",
            foreign.join(", ")
        );
    }
    let linking = linking_of(&facts.engine, m, &platforms, request.target);
    if m.build.cache != Cache::None && !caps.cache_export.ok {
        bail!(
            "build.cache in {} asks for an exported cache, which this builder cannot write ({}): use the \
             containerd image store, or create a docker-container builder (`docker buildx create --use --driver \
             docker-container`) and name it in build.builder; or set cache = {{ type = \"none\" }}",
            project.manifest_path.display(),
            caps.cache_export.why
        );
    }
    let build_dir = match &request.share {
        Some(node) => bake::build_dir(&project.state_dir()).join("nodes").join(node),
        None => bake::build_dir(&project.state_dir()),
    };
    let by_digest = request.push && request.share.is_some();
    let extra_ca_file = facts.extra_ca.as_ref().map(|_| build_dir.join("extra-ca.pem"));
    let inputs = Inputs {
        context_dir: build_dir.join("context"),
        head: facts.head.clone(),
        ca_sha256: facts.ca_sha256.clone(),
        ca_file: facts.ca_file.clone(),
        extra_ca: extra_ca_file.clone(),
        linking,
        native: native.clone(),
        platforms: platforms.clone(),
        debian_image: bootstrap::root_image(project),
        revisions: facts.revisions.clone(),
        source: facts.source.clone(),
    };
    let mut definition = bake::definition(m, &inputs);
    let mut layers = bake::selection(m, &request.names, request.target)?;
    if linking == Linking::Joined {
        // The bases the services reach as named contexts are solved inside the services'
        // bake, and exported only when asked for by name: a local image needs none of
        // them in the store, and their export (the rust builder's 783 MB) ran beside
        // the gateway's compile on the same two cores.
        for layer in &mut layers {
            layer.retain(|t| !bake::joins_services(t) || request.names.contains(t));
        }
        layers.retain(|l| !l.is_empty());
    }
    if let Some((to, targets)) = bake::shared_caches(&definition, &layers.concat()).first() {
        bail!(
            "{} would export their build caches to one place ({to}), each overwriting the other's:              give the services shorter names in {} (a cache is named after its image, target and platform,              within a tag's 128 characters)",
            targets.join(" and "),
            project.manifest_path.display()
        );
    }
    if request.push {
        // What a push pushes (the last layer) gets the push's tags: release tags from
        // main only.
        bake::tag_for_push(&mut definition, layers.last().map_or(&[][..], |l| &l[..]));
    }
    let all: Vec<String> = layers.concat();
    let bake_file = build_dir.join("bake.json");
    let contexts = layers
        .last()
        .into_iter()
        .flatten()
        .filter_map(|t| definition.target[t].service.clone())
        .collect();
    // One record per build directory, image by image: whichever build made an image
    // (`build --target prod` a base, `dev` a local image), it is up to date for the next.
    let stamp_file = build_dir.join("stamp.json");
    let inputs_of_bakes = Bakes {
        manifest: m,
        engine: &facts.engine,
        definition: &definition,
        layers: &layers,
        build_dir: &build_dir,
        root: &project.root,
        no_cache: request.no_cache,
        linking,
        by_digest,
    };
    let mut bakes = bake_steps(&inputs_of_bakes, request.push);
    name_share(&mut bakes, request.share.as_deref());
    let mut args = vec![
        "buildx".to_owned(),
        "bake".into(),
        "--file".into(),
        bake_file.display().to_string(),
        "--print".into(),
    ];
    args.extend(allow_reads(&facts.engine, &definition, &all, &project.root));
    args.extend(all);
    let print = docker::step(
        "show what bake resolves",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .cwd(&project.root);
    Ok(BuildPlan {
        definition,
        layers,
        linking,
        build_dir,
        bake_file,
        extra_ca_file,
        stamp_file,
        contexts,
        root_image_missing: facts.root_image_id.is_none().then(|| bootstrap::root_image(project)),
        root_platforms: std::iter::once(native.clone())
            .chain(platforms.iter().filter(|p| **p != native).cloned())
            .collect(),
        root_digest: facts.bases.as_ref().and_then(|l| l.root.digest.clone()),
        bakes,
        print,
        target: request.target,
        push: request.push,
        no_cache: request.no_cache,
        by_digest,
        share: request.share.clone(),
        insecure_registry: m
            .release
            .insecure_registry
            .unwrap_or_else(|| crate::manifest::registry_is_loopback(m.registry.get_ref())),
    })
}

/// Build `names` (every service when empty) at `target`; returns what was built (nothing
/// for `--print`). Probes the facts, plans, then runs the plan.
pub fn build(
    project: &Project,
    names: &[String],
    target: Target,
    platforms: Option<Vec<String>>,
    mode: Mode,
) -> Result<Vec<Built>> {
    // What the user typed, first: an unknown image is named before anything is asked.
    bake::selection(&project.manifest, names, target)?;
    let facts = Facts::probe(project, mode.print)?;
    let request = Request {
        names: names.to_vec(),
        target,
        platforms,
        push: mode.push,
        no_cache: mode.no_cache,
        share: None,
    };
    let plan = plan(project, &facts, &request)?;
    run(project, &facts, &plan, mode.print)
}

/// What a dry run of the build `request` prints: the plan, made from facts probed as a
/// plan that only shows them (no engine or Root CA needed), and nothing run.
pub fn show(project: &Project, request: &Request) -> Result<()> {
    bake::selection(&project.manifest, &request.names, request.target)?;
    let facts = Facts::probe(project, true)?;
    print!("{}", plan(project, &facts, request)?.render(project));
    Ok(())
}

/// Carry out a build plan: room to write, the lock, the generated files and staged
/// contexts, then (unless every image is up to date) the root image and the bakes, and
/// the image policy of what was built. With `print`, only bake's own view of the
/// definition.
pub fn run(project: &Project, facts: &Facts, plan: &BuildPlan, print: bool) -> Result<Vec<Built>> {
    let _lock = project.lock("build")?;
    run_locked(project, facts, plan, print)
}

/// [`run`], the build lock already held (a distributed push holds it for every node's
/// share).
pub fn run_locked(project: &Project, facts: &Facts, plan: &BuildPlan, print: bool) -> Result<Vec<Built>> {
    // Room to write: the state directory and the engine's data root.
    let mut places = vec![crate::disk::Place::state(&project.state_dir())];
    places.extend(
        crate::docker::root_dir()
            .map(|dir| crate::disk::Place::engine(Path::new(&dir)))
            .filter(|p| p.path.exists()),
    );
    crate::disk::require(&places)?;
    let build_dir = &plan.build_dir;
    fs::create_dir_all(build_dir).with_context(|| format!("creating {}", build_dir.display()))?;
    if facts.ca_sha256 == NO_CA_YET {
        crate::fs::write_if_changed(
            &facts.ca_file,
            "# A placeholder for the Root CA, which `cargo xtask certs` makes: shown by `build --print` only.\n",
        )?;
    }
    if let (Some(file), Some(text)) = (&plan.extra_ca_file, &facts.extra_ca) {
        crate::fs::write_if_changed(file, text)?;
    }
    crate::fs::write_if_changed(&plan.bake_file, &bake::to_json(&plan.definition))?;
    let context_dir = build_dir.join("context");
    for service in &plan.contexts {
        stage_context(project, service, &context_dir.join(service))?;
    }
    if print {
        plan.print.run()?;
        return Ok(Vec::new());
    }
    let definition = &plan.definition;
    let all = plan.all();

    // Up to date, image by image: an image whose inputs (its definition, its context,
    // its bases' inputs) are those of its last successful build, and which is still there
    // with the same id, is not built again. A one-line change bakes its own image (and
    // what is built from it), not the repository's hundreds: bake solving every target
    // again grew with the services (2.7 s at 10, 8.8 s at 50, `bench --only scale`).
    // `--no-cache` asks for every step to run again, and a push for every image.
    let hashes = if plan.push || plan.no_cache {
        None
    } else {
        Some(target_hashes(project, facts, plan)?)
    };
    let stamp_file = &plan.stamp_file;
    let mut stamp = Stamp::read(stamp_file);
    let mut fresh: BTreeMap<String, Built> = BTreeMap::new();
    // Up-to-date images' new references: (target, its reference, the new one).
    let mut retags: Vec<(String, String, String)> = Vec::new();
    if let Some(hashes) = &hashes {
        let refs: Vec<String> = all
            .iter()
            .map(|name| definition.target[name].image.reference())
            .collect();
        for ((name, reference), id) in all.iter().zip(&refs).zip(image_ids(&refs)?) {
            let t = &definition.target[name];
            let same =
                |last: &&StampEntry| !id.is_empty() && last.image == id && Some(&last.inputs) == hashes.get(name);
            if let Some(last) = stamp.targets.get(name).filter(same) {
                retags.extend(
                    t.tags
                        .iter()
                        .filter(|tag| !last.tags.contains(tag))
                        .map(|tag| (name.clone(), reference.clone(), tag.clone())),
                );
                fresh.insert(
                    name.clone(),
                    Built {
                        image: t.image.clone(),
                        tags: t.tag_names.clone(),
                        size: last.size,
                        id,
                        config_digest: last.config.clone(),
                        ..Built::default()
                    },
                );
            } else if !id.is_empty() && stamp.targets.contains_key(name) {
                ui::note(&format!("{reference}: new inputs since its last build"));
            }
        }
        if !retags.is_empty() {
            tag_images(&retags)?;
            for (name, _, tag) in &retags {
                if let Some(entry) = stamp.targets.get_mut(name) {
                    entry.tags.push(tag.clone());
                }
            }
            stamp.write(stamp_file)?;
        }
        if fresh.len() == all.len() {
            ui::note("every image is up to date (same inputs as the last build, same image ids): bake not needed");
            return Ok(all.iter().filter_map(|name| fresh.remove(name)).collect());
        }
    }
    let bakes: Vec<Bake> = if fresh.is_empty() {
        plan.bakes.clone()
    } else {
        let stale: Vec<Vec<String>> = plan
            .layers
            .iter()
            .map(|layer| {
                layer
                    .iter()
                    .filter(|n| !fresh.contains_key(*n))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .filter(|layer| !layer.is_empty())
            .collect();
        ui::note(&format!(
            "{} of {} images up to date; baking {}",
            fresh.len(),
            all.len(),
            stale.concat().join(", ")
        ));
        let mut bakes = bake_steps(
            &Bakes {
                manifest: &project.manifest,
                engine: &facts.engine,
                definition,
                layers: &stale,
                build_dir,
                root: &project.root,
                no_cache: plan.no_cache,
                linking: plan.linking,
                by_digest: plan.by_digest,
            },
            plan.push,
        );
        name_share(&mut bakes, plan.share.as_deref());
        bakes
    };

    if plan.root_image_missing.is_some() || plan.root_platforms.len() > 1 {
        bootstrap::ensure_root_image(project, &plan.root_platforms)?;
    }
    let mut steps = crate::plan::Plan::new();
    let metadata_files: Vec<PathBuf> = bakes.iter().map(|bake| bake.metadata.clone()).collect();
    steps.steps.extend(bakes.iter().flat_map(Bake::steps).cloned());
    if bakes.iter().any(|bake| !bake.then.is_empty()) {
        let dir = build_dir.join("export");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if plan.linking == Linking::Layers && !facts.engine.capabilities.named_contexts.ok {
        ui::note(&format!(
            "the builder takes no named contexts ({}): building in layers, bases first",
            facts.engine.capabilities.named_contexts.why
        ));
    }
    // Nothing from an earlier run may stand for this one: bake's per-run metadata files
    // are removed first (metadata.json, the digests of every image built so far, is
    // only merged into after a bake succeeds), and no stamp is written until every
    // image is checked. A bake that fails, or an engine that stops, part-way claims
    // nothing.
    for file in &metadata_files {
        let _ = fs::remove_file(file);
    }
    steps.execute(false)?;

    let metadata = merge_metadata(&metadata_files, &build_dir.join("metadata.json"))?;
    let mut built = Vec::new();
    let mut problems = Vec::new();
    // A push pushes the last layer (the images asked for), in either linking.
    let pushed: Vec<&String> = if plan.push {
        plan.layers.last().into_iter().flatten().collect()
    } else {
        Vec::new()
    };
    for name in &all {
        if let Some(image) = fresh.remove(name) {
            built.push(image);
            continue;
        }
        let t = &definition.target[name];
        let reference = t.image.reference();
        let entry = metadata.get(name.as_str());
        let (digest, config_digest) = if pushed.contains(&name) {
            let digest = meta_field(entry, "containerimage.digest").ok_or_else(|| {
                anyhow::anyhow!(
                    "bake pushed {reference} but its metadata file names no digest (containerimage.digest): \
                     nothing can be signed by digest; check `docker buildx version`"
                )
            })?;
            (Some(digest), meta_field(entry, "containerimage.config.digest"))
        } else {
            (None, meta_field(entry, "containerimage.config.digest"))
        };
        // A builder that pushes without loading (docker-container) leaves nothing to
        // inspect: the policy was checked on the loaded image before the push.
        let config = match docker::inspect_image(&reference) {
            Ok(config) => config,
            Err(_) if digest.is_some() => {
                built.push(Built {
                    image: t.image.clone(),
                    tags: t.tag_names.clone(),
                    digest,
                    config_digest,
                    ..Built::default()
                });
                continue;
            }
            Err(err) => return Err(err),
        };
        let size = config["Size"].as_u64().unwrap_or(0);
        if let Some(service) = &t.service {
            let dockerfile = project.root.join(&t.dockerfile);
            let text = fs::read_to_string(&dockerfile).with_context(|| format!("reading {}", dockerfile.display()))?;
            for v in lint::dockerfile(&text, plan.target)
                .into_iter()
                .chain(lint::image_config(&config, plan.target))
            {
                problems.push(format!("{service} ({reference}): {v}"));
            }
        }
        built.push(Built {
            image: t.image.clone(),
            tags: t.tag_names.clone(),
            size,
            id: config["Id"].as_str().unwrap_or_default().to_owned(),
            digest,
            config_digest,
        });
    }
    if !metadata.is_empty() {
        ui::note(&format!("digests in {}", build_dir.join("metadata.json").display()));
    }
    let archives: Vec<&(String, PathBuf)> = bakes.iter().flat_map(|b| &b.by_digest).collect();
    if !problems.is_empty() {
        // Nothing this build made or checked is claimed up to date: the next build bakes
        // it again. Other images' records stay.
        let cleared = all.iter().filter(|name| stamp.targets.remove(*name).is_some()).count();
        if cleared > 0 {
            stamp.write(stamp_file)?;
        }
        for (_, archive) in &archives {
            let _ = fs::remove_file(archive);
        }
        bail!("the image policy failed:\n  - {}", problems.join("\n  - "));
    }
    // A push by digest, once the policy passed: what each archive holds goes to the
    // registry under the digest bake's metadata gave it.
    for (i, (name, archive)) in archives.iter().enumerate() {
        let t = &definition.target[name];
        let pushed = built
            .iter()
            .find(|b| b.image == t.image)
            .and_then(|b| b.digest.as_deref());
        let result = match pushed {
            Some(digest) => {
                let mut step = push_by_digest(
                    &t.image,
                    archive,
                    t.tag_names.first().unwrap_or(&t.image.tag),
                    digest,
                    plan.insecure_registry,
                );
                if let Some(node) = &plan.share {
                    step.name = format!("{node}: {}", step.name);
                }
                step.run().map(drop)
            }
            None => Err(anyhow::anyhow!(
                "bake's metadata names no digest for {}",
                t.image.reference()
            )),
        };
        let _ = fs::remove_file(archive);
        if let Err(err) = result {
            for (_, rest) in &archives[i + 1..] {
                let _ = fs::remove_file(rest);
            }
            return Err(err);
        }
    }
    if let Some(mut hashes) = hashes {
        // The ids were read with each image's configuration above.
        for (name, b) in all.iter().zip(&built) {
            if let Some(inputs) = hashes.remove(name) {
                stamp.targets.insert(
                    name.clone(),
                    StampEntry {
                        inputs,
                        image: b.id.clone(),
                        config: b.config_digest.clone(),
                        size: b.size,
                        tags: definition.target[name].tags.clone(),
                    },
                );
            }
        }
        stamp.write(stamp_file)?;
    }
    Ok(built)
}

/// What the last successful build of each image was made from, and what it gave: the
/// up-to-date record of a build directory, by image.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Stamp {
    /// By bake target.
    targets: BTreeMap<String, StampEntry>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StampEntry {
    /// [`target_hashes`]' hash of its inputs.
    inputs: String,
    /// Its id in the image store.
    image: String,
    /// The digest of its configuration (bake's metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<String>,
    /// Its size in the store when built (what `build` shows for it while up to date).
    size: u64,
    /// The references it was given (an up-to-date image is given the ones a new commit
    /// adds, such as `{version}-{sha7}`, without a bake).
    #[serde(default)]
    tags: Vec<String>,
}

impl Stamp {
    /// The record, or none (missing, or an older format: everything is built once).
    fn read(path: &Path) -> Stamp {
        fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    /// Write the record (only when it changed).
    fn write(&self, path: &Path) -> Result<()> {
        crate::fs::write_if_changed(path, &(serde_json::to_string_pretty(self)? + "\n"))
    }
}

/// bake's `--push`, with every file stamped with the image's `SOURCE_DATE_EPOCH`.
/// What the bake steps are made from: every fact already probed, nothing asked here.
pub struct Bakes<'a> {
    pub manifest: &'a crate::manifest::Manifest,
    pub engine: &'a Engine,
    pub definition: &'a bake::Definition,
    /// The selection, in layers (bases first, the services last).
    pub layers: &'a [Vec<String>],
    pub build_dir: &'a Path,
    pub root: &'a Path,
    /// Reuse no cached step.
    pub no_cache: bool,
    pub linking: Linking,
    /// A push by digest alone (one node's share of a distributed push).
    pub by_digest: bool,
}

/// How images reach their bases: named contexts where the builder takes them, unless a
/// registry cache is shared between machines. Then in layers, each base loaded and named
/// by its tag: a named context is solved inside the build that uses it, and its steps'
/// cache keys there are not the ones another machine's build of the base exports, so a
/// second node would miss the cache from the first named context on (found with two
/// engines: a base built alone hits every step, the same base inside a service's build
/// misses its first RUN).
///
/// In layers too when an image is for another platform than the builder's own: the rust
/// builder is always the builder's own (it cross-compiles), and bake links a named
/// context only to a target built for the same platforms.
///
/// And in layers where the builder stamps prod images (`rewrite-timestamp`): its exporter
/// leaves alone the layers of an image's base read from the store, but re-tars every
/// layer of an image built FROM a named context, the python-base's 124 MB with it, at
/// each export (8.5 s of a one-line Python change's 11.7 s, against 0.2 s in layers).
/// Dev and prod alike, so a dev build and a prod build share their steps' cache (the
/// gateway's release compile). Local images share next to nothing with them and are
/// never stamped: they are [`Linking::Joined`], each service's bake solving its bases
/// inside it, so a cold `dev` compiles the gateway as soon as the rust builder's steps
/// end, with no export of it beside the compile.
pub fn linking_of(engine: &Engine, m: &crate::manifest::Manifest, platforms: &[String], target: Target) -> Linking {
    let native = engine.native_platform();
    if !engine.capabilities.named_contexts.ok
        || matches!(m.build.cache, Cache::Registry { .. })
        || platforms.iter().any(|p| *p != native)
    {
        Linking::Layers
    } else if !engine.capabilities.rewrite_timestamps.ok {
        Linking::Contexts
    } else if target == Target::Local {
        Linking::Joined
    } else {
        Linking::Layers
    }
}

/// Each step of a node's share named after the node (`arm: bake 1 of 3: os-base`): the
/// nodes build side by side, their output on one terminal.
fn name_share(bakes: &mut [Bake], share: Option<&str>) {
    let Some(node) = share else { return };
    for bake in bakes {
        for step in std::iter::once(&mut bake.step).chain(&mut bake.then) {
            step.name = format!("{node}: {}", step.name);
        }
    }
}

/// Where a stamped image is exported (an OCI archive) before the engine loads it.
pub fn export_archive(build_dir: &Path, target: &str) -> PathBuf {
    build_dir.join("export").join(format!("{target}.oci.tar"))
}

/// One `docker buildx bake`, the metadata file it writes, and what follows it: the
/// stamped images it exported loaded into the store (and pushed, when it pushes).
#[derive(Debug, Clone)]
pub struct Bake {
    pub step: Step,
    pub metadata: PathBuf,
    pub then: Vec<Step>,
    /// A push by digest: each image pushed and the archive it is pushed from, once its
    /// digest is read from the metadata file ([`push_by_digest`]).
    pub by_digest: Vec<(String, PathBuf)>,
}

impl Bake {
    /// The bake, then what follows it, in the order they run.
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        std::iter::once(&self.step).chain(&self.then)
    }
}

/// Whether an image is loaded with uncompressed layers: on the docker driver with the
/// containerd store, which keeps the blobs it is given and unpacks them anyway. Gzip
/// there is pure cost (16.2 s to load the rust builder, 7.7 s uncompressed; on a cold
/// `dev` it ran beside the gateway's compile, on the same two cores). What is pushed is
/// compressed by its own export.
fn loads_uncompressed(engine: &Engine) -> bool {
    engine.driver == "docker" && engine.store == crate::docker::Store::Containerd
}

/// The targets of `batch` a bake exports stamped (every file's time the image's
/// SOURCE_DATE_EPOCH, so two builds of one commit give the same image): where the builder
/// can, what a push pushes, and the prod images a load loads (what is scanned, released
/// and compared across builds; the bases and the local and dev images load as they are).
/// The base prod images start from needs no stamping: its Dockerfile stamps its one
/// layer's files ([`bake::is_runtime_base`]).
/// A push by digest exports every image it pushes as an archive (stamped where the
/// builder can): the docker driver pushes by tag only.
fn stamped(b: &Bakes<'_>, batch: &[String], pushes: bool) -> Vec<String> {
    if pushes && b.by_digest {
        return batch.to_vec();
    }
    if !b.engine.capabilities.rewrite_timestamps.ok {
        return Vec::new();
    }
    batch
        .iter()
        .filter(|name| pushes || b.definition.target[*name].build_target == Some(Target::Prod))
        .cloned()
        .collect()
}

/// The most targets one bake builds. The engine's BuildKit loses track of builds when
/// about two hundred start at once (a 200-service monorepo's bake failed with "failed
/// to receive status: ... no such job", `bench --only scale`; 54 built), so a larger
/// selection is baked in turns, bases first: the later bakes find the bases in the cache.
pub const TARGETS_PER_BAKE: usize = 32;

/// The targets of each bake, in order, each with whether it is of the last layer (what a
/// push pushes): all at once where bases are named contexts (a push: the images asked
/// for), else layer by layer, the services with the bases they join where they join
/// them (a push: layer by layer); either way at most [`TARGETS_PER_BAKE`] in one.
fn batches(layers: &[Vec<String>], linking: Linking, push: bool) -> Vec<(Vec<String>, bool)> {
    let layered = || -> Vec<(Vec<String>, bool)> {
        layers
            .iter()
            .enumerate()
            .map(|(i, layer)| (layer.clone(), i + 1 == layers.len()))
            .collect()
    };
    let whole: Vec<(Vec<String>, bool)> = match (linking, push) {
        (Linking::Contexts, false) => vec![(layers.concat(), true)],
        (Linking::Contexts, true) => vec![(layers.last().cloned().unwrap_or_default(), true)],
        (Linking::Joined, false) => {
            let mut out = layered();
            let services = |layer: &[String]| layer.iter().all(|n| !bake::is_base(n));
            let joins = |layer: &[String]| layer.iter().all(|n| bake::joins_services(n));
            if let [.., (bases, _), (last, true)] = &mut out[..]
                && services(last)
                && joins(bases)
            {
                bases.append(last);
                out.pop();
                if let Some(joined) = out.last_mut() {
                    joined.1 = true;
                }
            }
            out
        }
        (Linking::Joined, true) | (Linking::Layers, _) => layered(),
    };
    whole
        .into_iter()
        .flat_map(|(batch, last)| {
            batch
                .chunks(TARGETS_PER_BAKE)
                .map(|chunk| (chunk.to_vec(), last))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The `docker buildx bake` steps of a build. A pure function of the facts: one bake of
/// everything where the builder takes named contexts, else one per layer; with `push`,
/// the images asked for are pushed (the last bake), with a full provenance attestation
/// where the builder attaches one, and the bases they need are loaded or built as their
/// named contexts; a load asks for no provenance (it carries the build's time, so a
/// cached rebuild would get a new image id on the containerd store).
///
/// Stamped images ([`stamped`]) are exported as OCI archives with `rewrite-timestamp`
/// (the image exporter of the docker driver on the containerd store refuses the option,
/// as it unpacks what it stores, moby/buildkit#4230), then loaded (the containerd store
/// keeps their manifests byte for byte, so the digests are bake's) and, for a push,
/// pushed tag by tag: what is pushed is what was loaded.
pub fn bake_steps(b: &Bakes<'_>, push: bool) -> Vec<Bake> {
    let linking = b.linking;
    let batches = batches(b.layers, linking, push);
    let registry = b.manifest.registry.get_ref();
    let on_push_fail = format!(
        "a push needs the registry {registry} up and reachable, and `docker login {registry}` where it asks for credentials"
    );
    let bake_file = b.build_dir.join("bake.json");
    let mut out = Vec::new();
    for (i, (batch, last_layer)) in batches.iter().enumerate() {
        let pushes = push && *last_layer;
        let stamped = stamped(b, batch, pushes);
        let uncompressed = !pushes && loads_uncompressed(b.engine);
        let meta = b.build_dir.join(format!("metadata-{i}.json"));
        let mut args: Vec<String> = vec!["buildx".into(), "bake".into()];
        if let Some(builder) = &b.engine.builder {
            args.extend(["--builder".into(), builder.clone()]);
        }
        args.extend(["--file".into(), bake_file.display().to_string()]);
        args.extend(["--metadata-file".into(), meta.display().to_string()]);
        if b.no_cache {
            args.push("--no-cache".into());
        }
        args.extend(allow_reads(b.engine, b.definition, batch, b.root));
        for name in batch {
            if stamped.contains(name) {
                let archive = export_archive(b.build_dir, name);
                let rewrite = if b.engine.capabilities.rewrite_timestamps.ok {
                    ",rewrite-timestamp=true"
                } else {
                    ""
                };
                args.push(format!(
                    "--set={name}.output=type=oci,dest={}{rewrite}",
                    archive.display()
                ));
            } else if uncompressed && !bake::is_runtime_base(name) {
                args.push(format!("--set={name}.output=type=docker,compression=uncompressed"));
            } else if uncompressed || (!pushes && !stamped.is_empty()) {
                // The base prod images start from is loaded compressed: its layer goes
                // into their archives and pushes as it is stored.
                args.push(format!("--set={name}.output=type=docker"));
            }
        }
        if pushes {
            if stamped.is_empty() {
                args.push("--push".into());
            }
            // What was built, from what, how: a provenance attestation (SLSA, every
            // build step) beside the pushed image, where the builder can attach one.
            if b.engine.capabilities.attestations.ok {
                args.push("--provenance=mode=max".into());
            }
        } else {
            args.push("--provenance=false".into());
            if stamped.is_empty() && !uncompressed {
                args.push("--load".into());
            }
        }
        args.extend(batch.iter().cloned());
        let what = if batches.len() > 1 {
            format!("bake {} of {}: {}", i + 1, batches.len(), batch.join(", "))
        } else {
            format!("bake {}", batch.join(", "))
        };
        let mut step = docker::step(what, &args.iter().map(String::as_str).collect::<Vec<_>>()).cwd(b.root);
        let mut then = Vec::new();
        let mut by_digest = Vec::new();
        for name in &stamped {
            let archive = export_archive(b.build_dir, name);
            let archive_text = archive.display().to_string();
            step = step.scratch(&archive);
            then.push(
                docker::step(format!("load {name} (stamped)"), &["load", "--input", &archive_text])
                    .output(crate::plan::Output::Capture)
                    .scratch(&archive),
            );
            if pushes && b.by_digest {
                // Kept for the push by digest, which removes it.
                by_digest.push((name.clone(), archive));
                continue;
            }
            if pushes {
                for reference in &b.definition.target[name].tags {
                    then.push(
                        docker::step(format!("push {reference}"), &["push", "--quiet", reference])
                            .output(crate::plan::Output::Capture)
                            .on_fail(on_push_fail.clone()),
                    );
                }
            }
            then.push(Step::new(format!("remove {name}'s archive"), "rm").args(["-f", &archive_text]));
        }
        let step = step.on_fail(if pushes {
            format!("the output above names the failing step; {on_push_fail}")
        } else {
            "the build output above names the failing step; `cargo xtask doctor` checks the engine".to_owned()
        });
        out.push(Bake {
            step,
            metadata: meta,
            then,
            by_digest,
        });
    }
    out
}

/// `--allow=fs.read=PATH` for each file or directory outside the checkout that bake
/// reads for `targets` (a state directory elsewhere: secrets, staged contexts), where
/// buildx checks bake's filesystem entitlements. Exactly those paths, never a blanket
/// switch.
fn allow_reads(engine: &Engine, definition: &bake::Definition, targets: &[String], root: &Path) -> Vec<String> {
    if !engine.bake_checks_fs() {
        return Vec::new();
    }
    bake::reads_outside(definition, targets, root)
        .into_iter()
        .map(|p| format!("--allow=fs.read={}", p.display()))
        .collect()
}

/// SHA-256 over everything a build reads: the bake definition, every file of every
/// context it sends (staged service contexts, base image directories), the extra CA
/// bundle, and the root image's id. (The Root CA's fingerprint is in the definition.)
fn target_hashes(project: &Project, facts: &Facts, plan: &BuildPlan) -> Result<BTreeMap<String, String>> {
    let definition = &plan.definition;
    // What every image is built from: the extra CA, and the root image as it is now
    // (`run` may just have pulled or bootstrapped it).
    let mut common = ring::digest::Context::new(&ring::digest::SHA256);
    if let Some(extra) = &facts.extra_ca {
        common.update(extra.as_bytes());
    }
    common.update(
        facts
            .root_image_id
            .clone()
            .or_else(|| docker::image_id(&bootstrap::root_image(project)))
            .unwrap_or_default()
            .as_bytes(),
    );
    let common = common.finish();
    let mut contexts: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    // Bases first (the layers' order), so each image's bases are hashed before it.
    for name in plan.all() {
        let t = &definition.target[&name];
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(common.as_ref());
        // Not its tags: a commit that leaves its inputs alone gives it new names
        // (`{version}-{sha7}`), not new bytes; an up-to-date image is tagged, not baked.
        let untagged = bake::Target {
            tags: Vec::new(),
            ..t.clone()
        };
        ctx.update(serde_json::to_string(&untagged)?.as_bytes());
        let dir = if Path::new(&t.context).is_absolute() {
            PathBuf::from(&t.context)
        } else {
            project.root.join(&t.context)
        };
        if !contexts.contains_key(&dir) {
            contexts.insert(dir.clone(), context_hash(&dir)?);
        }
        ctx.update(&contexts[&dir]);
        // Its bases, whichever way they are linked: a named context, or a tag in an
        // argument.
        for (base, hash) in &out {
            let b = &definition.target[base];
            let reference = b.image.reference();
            if t.contexts.values().any(|c| c == &format!("target:{base}")) || t.args.values().any(|a| a == &reference) {
                ctx.update(hash.as_bytes());
            }
        }
        out.insert(name, crate::digest::hex(ctx.finish().as_ref()));
    }
    Ok(out)
}

/// The files of a build context: names, bytes and modes.
fn context_hash(dir: &Path) -> Result<Vec<u8>> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut files = BTreeMap::new();
    collect(dir, Path::new(""), &mut files)?;
    for (rel, path) in files {
        ctx.update(rel.to_string_lossy().as_bytes());
        ctx.update(&[0]);
        ctx.update(&fs::read(&path)?);
        use std::os::unix::fs::PermissionsExt;
        ctx.update(&fs::metadata(&path)?.permissions().mode().to_le_bytes());
    }
    Ok(ctx.finish().as_ref().to_vec())
}

/// The image ids of `refs` (a missing image's: empty), from listings of exactly them:
/// `docker image ls` with a `reference` filter for each. The containerd store sizes every
/// image it lists, but only those the filters match, where `image inspect` costs more
/// per image and is asked one image at a time: of 250 images in the store, 200 listed
/// in 0.92 s against 2.4-2.65 s inspected, 41 listed in 0.10 s against 0.70 s. The
/// engine answers one listing on one core: a long list is asked in a few listings side
/// by side (200 of 1,095 images: 1.44 s in one, 0.91 s in four).
fn image_ids(refs: &[String]) -> Result<Vec<String>> {
    // The engine lists and matches names as `docker` shows them (docker.io's familiar).
    let familiar: Vec<String> = refs.iter().map(|r| docker::familiar(r)).collect();
    // Up to four listings of at least 50 references each.
    let listed = docker::side_by_side(&familiar, 4, 50, list_ids)?;
    let ids: BTreeMap<&str, &str> = listed
        .iter()
        .flat_map(|l| l.lines())
        .filter_map(|l| l.rsplit_once(' '))
        .collect();
    Ok(familiar
        .iter()
        .map(|r| ids.get(r.as_str()).map(|id| id.to_string()).unwrap_or_default())
        .collect())
}

/// `docker image ls` of exactly `familiar` (references in docker's form): one
/// `reference id` line each that is there.
fn list_ids(familiar: &[String]) -> Result<String> {
    let filters: Vec<String> = familiar.iter().map(|r| format!("reference={r}")).collect();
    let mut args = vec![
        "image",
        "ls",
        "--no-trunc",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ID}}",
    ];
    for filter in &filters {
        args.extend(["--filter", filter]);
    }
    Ok(docker::step("the images' ids", &args)
        .output(crate::plan::Output::Capture)
        .run()?
        .stdout)
}

/// Give up-to-date images the references they lack, `(target, reference, new)` each:
/// one `docker tag` a reference, up to four side by side.
fn tag_images(retags: &[(String, String, String)]) -> Result<()> {
    docker::side_by_side(retags, 4, 1, |chunk| {
        chunk.iter().try_for_each(|(_, from, to)| {
            docker::step(format!("tag {to}"), &["tag", from, to])
                .output(crate::plan::Output::Capture)
                .run()
                .map(drop)
        })
    })
    .map(drop)
}

/// One field of a target's entry in bake's metadata.
fn meta_field(entry: Option<&serde_json::Value>, key: &str) -> Option<String> {
    entry.and_then(|e| e[key].as_str()).map(str::to_owned)
}

/// Combine the metadata bake wrote per layer into one file: bake target -> its entry
/// (with `containerimage.digest`). Returns this run's entries only.
fn merge_metadata(files: &[PathBuf], out: &Path) -> Result<BTreeMap<String, serde_json::Value>> {
    let mut merged: BTreeMap<String, serde_json::Value> = match fs::read_to_string(out) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_default(),
        Err(_) => BTreeMap::new(),
    };
    let mut this_run = BTreeMap::new();
    for file in files {
        let Ok(text) = fs::read_to_string(file) else { continue };
        let entries: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&text).with_context(|| format!("reading bake's metadata {}", file.display()))?;
        this_run.extend(entries.into_iter().filter(|(k, _)| !k.starts_with("buildx.")));
        let _ = fs::remove_file(file);
    }
    merged.extend(this_run.clone());
    crate::fs::write_if_changed(out, &(serde_json::to_string_pretty(&merged)? + "\n"))?;
    Ok(this_run)
}

/// The extra CAs for build steps (a TLS-inspecting proxy's): the files `build.extra-ca`
/// names, then those in `SLIPWAY_EXTRA_CA` (`:`-separated), each checked to hold
/// certificates, bundled into one text. `None` when there are none.
pub fn extra_ca_text(project: &Project) -> Result<Option<String>> {
    let mut files: Vec<(PathBuf, String)> = project
        .manifest
        .build
        .extra_ca
        .iter()
        .map(|p| {
            (
                project.root.join(p.get_ref()),
                format!("build.extra-ca in {}", project.manifest_path.display()),
            )
        })
        .collect();
    if let Ok(env) = std::env::var("SLIPWAY_EXTRA_CA") {
        files.extend(
            env.split(':')
                .filter(|s| !s.is_empty())
                .map(|p| (PathBuf::from(p), "SLIPWAY_EXTRA_CA".to_owned())),
        );
    }
    if files.is_empty() {
        return Ok(None);
    }
    let mut bundle = String::new();
    for (file, from) in &files {
        let text = fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("the extra CA file {} (from {from}) cannot be read: {e}", file.display()))?;
        let count = certs::count_pem_certificates(text.as_bytes());
        if count == 0 {
            bail!(
                "the extra CA file {} (from {from}) holds no PEM certificate",
                file.display()
            );
        }
        bundle.push_str(text.trim_end());
        bundle.push('\n');
    }
    Ok(Some(bundle))
}

/// The extra CA bundle ([`extra_ca_text`]) written to `out` (unless `dry_run`); its path,
/// or `None` when there are no extra CAs.
pub fn extra_ca_bundle(project: &Project, out: &Path, dry_run: bool) -> Result<Option<PathBuf>> {
    let Some(bundle) = extra_ca_text(project)? else {
        return Ok(None);
    };
    if !dry_run {
        if let Some(dir) = out.parent() {
            fs::create_dir_all(dir)?;
        }
        crate::fs::write_if_changed(out, &bundle)?;
    }
    Ok(Some(out.to_owned()))
}

/// Stage `service`'s build context in `dest`: its inputs ([`crate::inputs`]), mirrored
/// from the checkout, and nothing else. Files are rewritten only when their content
/// changes; files gone from the checkout are removed. A Rust service's copy of the
/// workspace `Cargo.toml` lists only the members present in the context.
pub fn stage_context(project: &Project, service: &str, dest: &Path) -> Result<()> {
    let m = &project.manifest;
    let s = &m.services[service];
    let mut members = Vec::new();
    for rel in std::iter::once(&s.path).chain(&s.depends_on) {
        let rel = rel.get_ref();
        let src = project.root.join(rel);
        if !src.exists() {
            bail!(
                "`{rel}` (a path of service `{service}` in {}) does not exist in the checkout",
                project.manifest_path.display()
            );
        }
        if src.join("Cargo.toml").exists() {
            members.push(rel.clone());
        }
    }
    let wanted = crate::inputs::Inputs::of(m, service, s).files(&project.root)?;
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    for (rel, src) in &wanted {
        let to = dest.join(rel);
        if let Some(dir) = to.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut content = fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        if s.kind == Kind::Rust && rel == Path::new("Cargo.toml") {
            content = workspace_of(&String::from_utf8_lossy(&content), &members).into_bytes();
        }
        if fs::read(&to).ok().as_deref() != Some(&content[..]) {
            fs::write(&to, &content).with_context(|| format!("writing {}", to.display()))?;
        }
        let mode = fs::metadata(src)?.permissions();
        if fs::metadata(&to)?.permissions() != mode {
            fs::set_permissions(&to, mode)?;
        }
    }
    remove_stale(dest, dest, &wanted)?;
    Ok(())
}

fn collect(src: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, PathBuf>) -> Result<()> {
    if src.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(src)
            .with_context(|| format!("reading {}", src.display()))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let child = rel.join(&name);
            // Build output, caches, environment files: never part of an image's inputs
            // (a directory is noise when anything inside it would be).
            let probe = if entry.path().is_dir() {
                format!("{}/x", child.to_string_lossy())
            } else {
                child.to_string_lossy().into_owned()
            };
            if crate::inputs::is_noise(&probe) {
                continue;
            }
            collect(&entry.path(), &child, out)?;
        }
    } else if src.is_file() {
        out.insert(rel.to_owned(), src.to_owned());
    }
    Ok(())
}

fn remove_stale(dir: &Path, dest: &Path, wanted: &BTreeMap<PathBuf, PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        let rel = path.strip_prefix(dest).unwrap_or(&path).to_owned();
        if path.is_dir() {
            remove_stale(&path, dest, wanted)?;
            if fs::read_dir(&path)?.next().is_none() {
                fs::remove_dir(&path)?;
            }
        } else if !wanted.contains_key(&rel) {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// The workspace manifest with `members = [...]` narrowed to `members`.
pub(crate) fn workspace_of(cargo_toml: &str, members: &[String]) -> String {
    let list: Vec<String> = members.iter().map(|m| format!("\"{m}\"")).collect();
    let mut out = String::new();
    let mut skipping = false;
    for line in cargo_toml.lines() {
        if skipping {
            if line.contains(']') {
                skipping = false;
            }
            continue;
        }
        if line.trim_start().starts_with("members") && line.contains('=') {
            out.push_str(&format!("members = [{}]\n", list.join(", ")));
            skipping = !line.contains(']');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn human_size(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Fixed facts for plan tests, asked of nothing: a modern engine (named contexts,
/// attestations) or one like Docker 20.10's (neither), a made-up Root CA fingerprint,
/// HEAD on main, an extra CA, and the root image in the store.
#[cfg(test)]
pub fn test_facts(project: &Project, modern: bool) -> Facts {
    let mut engine = Engine::assumed(None, "a plan test");
    engine.buildx = "0.29.1".into();
    engine.capabilities.named_contexts.ok = modern;
    engine.capabilities.attestations.ok = modern;
    engine.capabilities.cache_export.ok = modern;
    engine.capabilities.rewrite_timestamps.ok = modern;
    Facts {
        engine,
        ca_sha256: "ab".repeat(32),
        ca_file: project.certs_dir().join(certs::CA_CERT),
        head: git::Head {
            sha: "0123456789abcdef".into(),
            branch: Some("main".into()),
        },
        revisions: bake::Revisions::new(),
        source: "file:///checkout".into(),
        extra_ca: Some("-----BEGIN CERTIFICATE-----\n".into()),
        root_image_id: Some("sha256:root".into()),
        bases: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bake steps of `build --target prod` on an engine with (or without) named
    /// contexts and a buildx of `buildx`: from fixed facts, no engine asked.
    fn steps(contexts: bool, buildx: &str, push: bool) -> Vec<String> {
        steps_with_state(contexts, buildx, push, None)
    }

    /// The same, with the state directory at `state` (outside the checkout) when given.
    fn steps_with_state(contexts: bool, buildx: &str, push: bool, state: Option<&Path>) -> Vec<String> {
        let (m, mut inputs) = bake::test_inputs(if contexts { Linking::Contexts } else { Linking::Layers });
        if let Some(state) = state {
            inputs.context_dir = state.join("build/context");
            inputs.ca_file = state.join("certs/rootCA.crt");
            inputs.extra_ca = Some(state.join("build/extra-ca.pem"));
        }
        let definition = bake::definition(&m, &inputs);
        let layers = bake::selection(&m, &[], Target::Prod).unwrap();
        let mut engine = Engine::assumed(None, "a plan test");
        engine.buildx = buildx.into();
        engine.capabilities.named_contexts.ok = contexts;
        // The engines here: the modern one does all three, the legacy one none.
        engine.capabilities.attestations.ok = contexts;
        engine.capabilities.rewrite_timestamps.ok = contexts;
        engine.driver = "docker".into();
        engine.store = if contexts {
            crate::docker::Store::Containerd
        } else {
            crate::docker::Store::Classic
        };
        let root = crate::project::root();
        let build_dir = root.join(".slipway/build");
        let facts = Bakes {
            manifest: &m,
            engine: &engine,
            definition: &definition,
            layers: &layers,
            build_dir: &build_dir,
            root: &root,
            no_cache: false,
            linking: if contexts { Linking::Contexts } else { Linking::Layers },
            by_digest: false,
        };
        bake_steps(&facts, push)
            .iter()
            .map(|bake| bake.step.command_line())
            .collect()
    }

    #[test]
    fn local_and_dev_build_for_the_builders_own_platform_prod_for_the_manifests() {
        let mut project = Project::load().unwrap();
        project.manifest.build.platforms = vec![toml::Spanned::new(0..0, "linux/arm64".to_owned())];
        let mut facts = test_facts(&project, true);
        // A contributor's arm64 laptop, a manifest that ships amd64: no emulated compile.
        facts.engine.platforms = vec!["linux/amd64".into(), "linux/386".into()];
        let platforms_of = |target: Target, asked: Option<Vec<String>>| {
            let request = Request {
                names: vec![],
                target,
                platforms: asked,
                push: false,
                no_cache: false,
                share: None,
            };
            let plan = plan(&project, &facts, &request).unwrap();
            let mut seen: Vec<Vec<String>> = plan
                .layers
                .last()
                .unwrap()
                .iter()
                .map(|t| plan.definition.target[t].platforms.clone())
                .collect();
            seen.dedup();
            (seen, plan)
        };
        assert_eq!(platforms_of(Target::Local, None).0, [["linux/amd64"]]);
        assert_eq!(platforms_of(Target::Dev, None).0, [["linux/amd64"]]);
        let (prod, prod_plan) = platforms_of(Target::Prod, None);
        assert_eq!(prod, [["linux/arm64"]]);
        // The bases are for the image's platform and the builder's own (the rust
        // builder's, which cross-compiles, for that alone); linked in layers, and the
        // root image is asked for both.
        let base = |name: &str| prod_plan.definition.target[name].platforms.clone();
        assert_eq!(base("os-base"), ["linux/amd64", "linux/arm64"]);
        assert_eq!(base("rust-builder"), ["linux/amd64"]);
        assert_eq!(prod_plan.linking, Linking::Layers);
        assert_eq!(prod_plan.root_platforms, ["linux/amd64", "linux/arm64"]);
        assert_eq!(
            platforms_of(Target::Local, Some(vec!["linux/arm64".into()])).0,
            [["linux/arm64"]]
        );
        // A target's own setting wins over the builder's platform.
        project.manifest.targets.dev.platforms = Some(vec![toml::Spanned::new(0..0, "linux/riscv64".to_owned())]);
        let request = Request {
            names: vec![],
            target: Target::Dev,
            platforms: None,
            push: false,
            no_cache: false,
            share: None,
        };
        let plan = plan(&project, &facts, &request).unwrap();
        assert_eq!(plan.definition.target["gateway-dev"].platforms, ["linux/riscv64"]);
    }

    #[test]
    fn a_builder_that_stamps_builds_in_layers() {
        let project = Project::load().unwrap();
        let mut facts = test_facts(&project, true);
        facts.engine.driver = "docker".into();
        facts.engine.store = crate::docker::Store::Containerd;
        for target in [Target::Local, Target::Dev, Target::Prod] {
            let request = Request {
                names: vec!["agent".into()],
                target,
                platforms: None,
                push: false,
                no_cache: false,
                share: None,
            };
            let plan = plan(&project, &facts, &request).unwrap();
            // Dev and prod alike, so a dev build and a prod build share their steps;
            // local images are baked beside their bases.
            let expected = if target == Target::Local {
                Linking::Joined
            } else {
                Linking::Layers
            };
            assert_eq!(plan.linking, expected, "{target:?}");
            let bakes: Vec<String> = plan.bakes.iter().map(|b| b.step.command_line()).collect();
            if target == Target::Local {
                assert_eq!(bakes.len(), 2, "{bakes:#?}");
                continue;
            }
            assert_eq!(bakes.len(), 3, "{bakes:#?}");
            // The python base prod images start from is loaded compressed (its blob
            // goes into their archives), the other bases uncompressed; none stamped.
            assert!(
                bakes[1].contains("--set=python-base.output=type=docker ")
                    && bakes[1].contains("--set=python-builder.output=type=docker,compression=uncompressed"),
                "{bakes:#?}"
            );
            assert!(!bakes[..2].concat().contains("rewrite-timestamp"), "{bakes:#?}");
            assert_eq!(
                bakes.last().unwrap().contains("--set=agent-prod.output=type=oci,dest="),
                target == Target::Prod,
                "{bakes:#?}"
            );
        }
    }

    #[test]
    fn local_images_are_baked_beside_the_bases_they_join() {
        let project = Project::load().unwrap();
        let facts = test_facts(&project, true);
        let request = Request {
            names: Vec::new(),
            target: Target::Local,
            platforms: None,
            push: false,
            no_cache: false,
            share: None,
        };
        let plan = plan(&project, &facts, &request).unwrap();
        assert_eq!(plan.linking, Linking::Joined);
        let bakes: Vec<String> = plan.bakes.iter().map(|b| b.step.command_line()).collect();
        // os-base first (the others start from it by tag), then the services, whose
        // bake solves the bases they reach as named contexts, and exports none of them.
        assert_eq!(bakes.len(), 2, "{bakes:#?}");
        assert!(bakes[0].ends_with(" os-base"), "{}", bakes[0]);
        assert!(bakes[1].ends_with(" agent-local gateway-local"), "{}", bakes[1]);
        assert!(!bakes[1].contains("rust-builder"), "{}", bakes[1]);
        assert_eq!(plan.all(), ["os-base", "agent-local", "gateway-local"]);
        // A base asked for by name is exported, in the services' bake.
        let named = Request {
            names: vec!["rust-builder".into(), "gateway".into()],
            ..request.clone()
        };
        let bakes: Vec<String> = super::plan(&project, &facts, &named)
            .unwrap()
            .bakes
            .iter()
            .map(|b| b.step.command_line())
            .collect();
        assert!(bakes[1].ends_with(" rust-builder gateway-local"), "{bakes:#?}");
        let plan = super::plan(
            &project,
            &facts,
            &Request {
                names: vec![
                    "python-base".into(),
                    "python-builder".into(),
                    "rust-builder".into(),
                    "agent".into(),
                    "gateway".into(),
                ],
                ..request
            },
        )
        .unwrap();
        let gateway = &plan.definition.target["gateway-local"];
        assert_eq!(gateway.contexts["rust-builder"], "target:rust-builder");
        assert!(!gateway.contexts.contains_key("os-base"));
        assert!(gateway.args["OS_BASE"].contains("slipway-os-base:"));
        // The bases themselves are linked as in layers, so their steps are those of a
        // dev or prod build.
        assert!(plan.definition.target["rust-builder"].contexts.is_empty());
        // A push goes layer by layer: no base is pushed with the services.
        let pushed = batches(&plan.layers, Linking::Joined, true);
        assert_eq!(pushed.len(), 3, "{pushed:?}");
        assert!(pushed[..2].iter().all(|(_, last)| !last));
        // Bases alone, or services whose bases are up to date, bake as they are.
        let bases = plan.layers[..2].to_vec();
        assert_eq!(batches(&bases, Linking::Joined, false).len(), 2);
        let services = plan.layers[2..].to_vec();
        assert_eq!(
            batches(&services, Linking::Joined, false),
            vec![(services[0].clone(), true)]
        );
        // A changed os-base is loaded before anything that names it by tag.
        let root_and_services = vec![plan.layers[0].clone(), plan.layers[2].clone()];
        assert_eq!(batches(&root_and_services, Linking::Joined, false).len(), 2);
    }

    #[test]
    fn a_shared_registry_cache_builds_in_layers() {
        let mut project = Project::load().unwrap();
        let mut facts = test_facts(&project, true);
        // A builder that takes named contexts but cannot stamp (BuildKit 0.10 to 0.12).
        facts.engine.capabilities.rewrite_timestamps.ok = false;
        let request = Request {
            names: vec!["agent".into()],
            target: Target::Prod,
            platforms: None,
            push: false,
            no_cache: false,
            share: None,
        };
        assert_eq!(plan(&project, &facts, &request).unwrap().linking, Linking::Contexts);
        project.manifest.build.cache = Cache::Registry {
            reference: "registry.example.com/team/cache".into(),
        };
        let plan = plan(&project, &facts, &request).unwrap();
        assert_eq!(plan.linking, Linking::Layers);
        assert_eq!(plan.bakes.len(), bake::SERVICE_LAYER + 1);
        // Each image imports its own cache and its bases', and exports its own.
        let agent = &plan.definition.target["agent-prod"];
        assert_eq!(
            agent.cache_from,
            [
                "type=registry,ref=registry.example.com/team/cache:agent-prod-linux-amd64",
                "type=registry,ref=registry.example.com/team/cache:python-builder-linux-amd64",
                "type=registry,ref=registry.example.com/team/cache:python-base-linux-amd64",
                "type=registry,ref=registry.example.com/team/cache:os-base-linux-amd64",
            ]
        );
        assert_eq!(
            agent.cache_to,
            ["type=registry,ref=registry.example.com/team/cache:agent-prod-linux-amd64,mode=max"]
        );
    }

    #[test]
    fn a_build_is_planned_from_the_facts_alone() {
        let project = Project::load().unwrap();
        let mut facts = test_facts(&project, true);
        let request = Request {
            names: vec!["agent".into()],
            target: Target::Dev,
            platforms: None,
            push: false,
            no_cache: false,
            share: None,
        };
        let plan = plan(&project, &facts, &request).unwrap();
        assert_eq!(plan.contexts, ["agent"]);
        assert_eq!(plan.all(), ["os-base", "python-base", "python-builder", "agent-dev"]);
        assert!(plan.stamp_file.starts_with(&plan.build_dir), "{plan:?}");
        assert_eq!(plan.extra_ca_file, Some(plan.build_dir.join("extra-ca.pem")));
        assert!(plan.root_image_missing.is_none());
        let shown = plan.render(&project);
        assert!(shown.starts_with("1. bake "), "{shown}");
        assert!(!shown.contains("gateway"), "{shown}");
        // The fingerprint and HEAD reach the definition; an unknown revision is said so.
        let os_base = &plan.definition.target["os-base"];
        assert_eq!(os_base.args["CA_SHA256"], "ab".repeat(32));
        assert_eq!(os_base.labels["org.opencontainers.image.revision"], "unknown");
        // No root image in the store: the pull comes first, then the bootstrap.
        facts.root_image_id = None;
        let plan = super::plan(&project, &facts, &request).unwrap();
        assert_eq!(plan.root_image_missing.as_deref(), Some("debian:trixie-slim"));
        assert!(
            plan.render(&project).starts_with("1. pull debian:trixie-slim"),
            "{}",
            plan.render(&project)
        );
        // An exported cache on a builder that cannot write one is refused by the plan.
        let legacy = test_facts(&project, false);
        let mut cached = project.clone();
        cached.manifest.build.cache = Cache::Local {
            dir: "/tmp/cache".into(),
        };
        let err = super::plan(&cached, &legacy, &request).unwrap_err().to_string();
        assert!(err.contains("cannot write"), "{err}");
    }

    #[test]
    fn a_large_selection_is_baked_in_turns_bases_first() {
        let bases: Vec<String> = ["os-base", "rust-builder"].iter().map(|s| s.to_string()).collect();
        let services: Vec<String> = (0..70).map(|i| format!("svc-{i:03}-dev")).collect();
        let layers = vec![bases.clone(), services.clone()];
        let turns = batches(&layers, Linking::Contexts, false);
        assert_eq!(turns.len(), 3, "{turns:?}");
        assert!(turns.iter().all(|(t, _)| t.len() <= TARGETS_PER_BAKE));
        assert_eq!(turns[0].0[..2], bases[..]);
        assert_eq!(
            turns.iter().flat_map(|(t, _)| t.clone()).collect::<Vec<_>>(),
            layers.concat()
        );
        // A push pushes every turn of the images asked for, and builds no base alone.
        let pushed = batches(&layers, Linking::Contexts, true);
        assert_eq!(pushed.iter().flat_map(|(t, _)| t.clone()).collect::<Vec<_>>(), services);
        assert!(pushed.iter().all(|(_, last)| *last));
        // In layers: the bases' turn pushes nothing.
        let layered = batches(&layers, Linking::Layers, true);
        assert_eq!(layered[0], (bases.clone(), false));
        assert!(layered[1..].iter().all(|(_, last)| *last));
        assert_eq!(
            batches(std::slice::from_ref(&bases), Linking::Contexts, false),
            vec![(bases, true)]
        );
    }

    #[test]
    fn one_bake_with_named_contexts_layers_without() {
        let one = steps(true, "0.29.1", false);
        assert_eq!(one.len(), 1, "{one:#?}");
        // The bases loaded uncompressed (the containerd store), the prod images exported
        // stamped.
        assert!(
            one[0].contains("--set=os-base.output=type=docker,compression=uncompressed ")
                && one[0].contains("--set=agent-prod.output=type=oci,dest=")
                && one[0].contains("--provenance=false ")
                && !one[0].contains("--load"),
            "{}",
            one[0]
        );
        assert!(one[0].ends_with("agent-prod gateway-prod"), "{}", one[0]);
        assert!(one[0].contains(" os-base "), "{}", one[0]);
        let layered = steps(false, "0.29.1", false);
        assert_eq!(layered.len(), bake::SERVICE_LAYER + 1, "{layered:#?}");
        assert!(layered[0].ends_with(" os-base"), "{}", layered[0]);
        assert!(layered.last().unwrap().ends_with("agent-prod gateway-prod"));
        // The classic store: `--load`, as docker load takes it.
        assert!(
            layered
                .iter()
                .all(|l| l.contains("--load") && !l.contains("compression")),
            "{layered:#?}"
        );
    }

    #[test]
    fn a_push_pushes_only_the_images_asked_for() {
        let one = steps(true, "0.29.1", true);
        assert_eq!(one.len(), 1);
        assert!(!one[0].contains("type=docker"), "{}", one[0]);
        // Stamped: each pushed image exported as an OCI archive with rewrite-timestamp.
        for name in ["agent-prod", "gateway-prod"] {
            let archive = export_archive(&crate::project::root().join(".slipway/build"), name);
            let set = format!(
                "--set={name}.output=type=oci,dest={},rewrite-timestamp=true",
                archive.display()
            );
            assert!(
                one[0].contains(&crate::plan::shell_quote(&set)),
                "{set} missing: {}",
                one[0]
            );
        }
        assert!(!one[0].contains("--push"), "{}", one[0]);
        assert!(
            one[0].ends_with("--provenance=mode=max agent-prod gateway-prod"),
            "{}",
            one[0]
        );
        let layered = steps(false, "0.29.1", true);
        assert!(
            layered[..layered.len() - 1]
                .iter()
                .all(|l| l.contains("--load") && !l.contains("--push"))
        );
        assert!(layered.last().unwrap().contains("--push"));
        // No attestation where the builder cannot attach one.
        assert!(!layered.last().unwrap().contains("--provenance"), "{layered:#?}");
    }

    #[test]
    fn reads_outside_the_checkout_are_allowed_only_where_buildx_checks_them() {
        // Everything in the checkout: no --allow at all.
        assert!(steps(true, "0.29.1", false).iter().all(|l| !l.contains("--allow")));
        // A state directory elsewhere: exactly its secrets and staged contexts, each named.
        let elsewhere = Path::new("/var/tmp/slipway-state");
        let bakes = steps_with_state(true, "0.29.1", false, Some(elsewhere));
        for path in [
            "certs/rootCA.crt",
            "build/extra-ca.pem",
            "build/context/agent",
            "build/context/gateway",
        ] {
            let flag = format!("--allow=fs.read={}", elsewhere.join(path).display());
            assert!(bakes[0].contains(&flag), "{flag} missing: {}", bakes[0]);
        }
        assert!(!bakes[0].contains("fs.read=/var/tmp/slipway-state "), "{}", bakes[0]);
        // An older buildx does not check, and does not know the flag.
        let old = steps_with_state(true, "0.12.0", false, Some(elsewhere));
        assert!(old.iter().all(|l| !l.contains("--allow")), "{old:#?}");
    }

    #[test]
    fn the_workspace_is_narrowed_to_the_members_in_the_context() {
        let text =
            "[workspace]\nresolver = \"3\"\nmembers = [\"xtask\", \"services/gateway\"]\n\n[profile.dev]\ndebug = 0\n";
        let narrowed = workspace_of(text, &["services/gateway".into()]);
        assert_eq!(
            narrowed,
            "[workspace]\nresolver = \"3\"\nmembers = [\"services/gateway\"]\n\n[profile.dev]\ndebug = 0\n"
        );
        let multi = "[workspace]\nmembers = [\n  \"xtask\",\n  \"services/gateway\",\n]\nresolver = \"3\"\n";
        assert_eq!(
            workspace_of(multi, &["services/gateway".into()]),
            "[workspace]\nmembers = [\"services/gateway\"]\nresolver = \"3\"\n"
        );
    }

    #[test]
    fn a_context_holds_only_the_services_paths() {
        let project = Project::load().unwrap();
        let dest = std::env::temp_dir().join(format!("slipway-context-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dest);
        stage_context(&project, "agent", &dest).unwrap();
        let top: Vec<String> = fs::read_dir(dest.join("services"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut top = top;
        top.sort();
        assert_eq!(top, ["agent", "common"]);
        assert!(!dest.join("xtask").exists() && !dest.join("Cargo.toml").exists());
        // A stale file is removed; an unchanged one is not rewritten.
        fs::write(dest.join("services/agent/stale.txt"), "x").unwrap();
        let lock = dest.join("services/agent/pyproject.toml");
        let before = fs::metadata(&lock).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        stage_context(&project, "agent", &dest).unwrap();
        assert!(!dest.join("services/agent/stale.txt").exists());
        assert_eq!(fs::metadata(&lock).unwrap().modified().unwrap(), before);
        fs::remove_dir_all(&dest).unwrap();
    }
}
