//! The bake definition, generated from the manifest as JSON (never hand-written HCL):
//! one target per image, groups per build target (`local`, `dev`, `prod`) and per
//! layer, secrets on every target that needs them, and the links from each image to
//! the bases it is built `FROM`.
//!
//! Three ways to link an image to its bases, chosen by what the builder can do
//! (`build::linking_of`):
//! - [`Linking::Contexts`] (BuildKit >= 0.10): named contexts, `"os-base": "target:os-base"`,
//!   and one bake builds everything;
//! - [`Linking::Layers`] (older BuildKit, such as Docker 20.10's, which refuses named
//!   contexts; and every builder that stamps prod images): bases are built first and
//!   loaded into the image store, and later layers name them by exact tag in the `ARG`s
//!   their Dockerfiles `FROM`;
//! - [`Linking::Joined`] (local images, where the builder takes named contexts): as in
//!   layers, but the services reach their bases after os-base as named contexts, solved
//!   in their own bake (os-base, loaded by then, by tag).
//!
//! The Dockerfiles read `FROM ${OS_BASE}` with `OS_BASE=os-base` by default, so the same
//! files serve both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::git::{self, Head};
use crate::manifest::{self, Kind, Manifest, RustToolchain};

/// How images reach their bases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linking {
    /// One bake; every image reaches its bases as named contexts.
    Contexts,
    /// One bake per layer; every image names its bases by tag, loaded by an earlier bake.
    Layers,
    /// As [`Linking::Layers`], except that the services reach the bases after os-base
    /// ([`joins_services`]) as named contexts, solved inside the services' bake (and
    /// exported only when asked for by name, `build::plan`): a service's steps start
    /// when its bases' steps end, not when their export into the store ends (the rust
    /// builder's 783 MB layer, 9 s on a cold `dev`).
    Joined,
}

/// A base image: its bake target, the Dockerfile stage, and the bases it needs.
struct Base {
    target: &'static str,
    dir: &'static str,
    stage: &'static str,
    needs: &'static [&'static str],
    layer: usize,
    /// A service's prod image starts FROM it ([`is_runtime_base`]).
    runtime: bool,
}

const BASES: &[Base] = &[
    Base {
        target: "os-base",
        dir: "images/os-base",
        stage: "os-base",
        needs: &[],
        layer: 0,
        runtime: false,
    },
    Base {
        target: "python-base",
        dir: "images/python-base",
        stage: "python-base",
        needs: &["os-base"],
        layer: 1,
        runtime: true,
    },
    Base {
        target: "python-builder",
        dir: "images/python-base",
        stage: "python-builder",
        needs: &["os-base"],
        layer: 1,
        runtime: false,
    },
    Base {
        target: "rust-builder",
        dir: "images/rust-builder",
        stage: "rust-builder-debian",
        needs: &["os-base"],
        layer: 1,
        runtime: false,
    },
];

/// The build argument that makes a build reproducible: every image's is the commit time
/// of its inputs. BuildKit stamps the image's creation time and (with the exporter's
/// `rewrite-timestamp`) its files' times with it; a stage that declares it hands it to
/// its RUN steps (Python writes hash-checked bytecode then).
pub const EPOCH_ARG: &str = "SOURCE_DATE_EPOCH";

/// The layer of the services (after every base).
pub const SERVICE_LAYER: usize = 2;

/// Whether `target` is a base that prod images start FROM (python-base; a Rust service's
/// prod image starts from scratch). Its layers become theirs as they are: stamping a
/// prod image, BuildKit's exporter leaves alone the layers of its base read from the
/// store (and re-tars every other). So its Dockerfile stamps its files' times itself (the
/// same bytes from every build of one commit), and it is loaded compressed: that blob
/// goes into their archives and pushes.
pub fn is_runtime_base(target: &str) -> bool {
    BASES.iter().any(|b| b.target == target && b.runtime)
}

/// Whether a bake target is a base image (else a service's).
pub fn is_base(target: &str) -> bool {
    BASES.iter().any(|b| b.target == target)
}

/// Whether a service's bake builds `base` beside the service with [`Linking::Joined`]:
/// every base but os-base, which the others start from by tag (so it is loaded first).
pub fn joins_services(base: &str) -> bool {
    BASES.iter().any(|b| b.target == base && b.layer > 0)
}

/// The `ARG` through which a Dockerfile names a base: `os-base` -> `OS_BASE`.
pub fn base_arg(target: &str) -> String {
    target.to_uppercase().replace('-', "_")
}

/// The bases a service of this kind is built from.
pub fn bases_of(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Rust => &["rust-builder", "os-base"],
        Kind::Python => &["python-builder", "python-base"],
    }
}

/// Everything `build` needs to generate the definition, besides the manifest.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// Where each service's minimal build context is staged.
    pub context_dir: PathBuf,
    pub head: Head,
    /// SHA-256 of the Root CA file passed as the `root-ca` secret.
    pub ca_sha256: String,
    pub ca_file: PathBuf,
    /// The checked bundle of extra CAs, when there are any.
    pub extra_ca: Option<PathBuf>,
    pub linking: Linking,
    /// The platforms of this build's services: `--platform`, else the build target's
    /// ([`manifest::Target::platforms`]). The bases are for these and the builder's own...
    pub platforms: Vec<String>,
    /// ...platform, the rust builder for that one alone: it cross-compiles for the others.
    pub native: String,
    /// The root image the Dockerfiles start from: `debian:<release>-slim`.
    pub debian_image: String,
    /// Each image's revision and time (its labels), by its input paths: asked of git
    /// before planning ([`revision_paths`] lists what to ask).
    pub revisions: Revisions,
    /// Where the source lives (`org.opencontainers.image.source`).
    pub source: String,
}

/// The JSON bake reads (`docker buildx bake --file bake.json`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Definition {
    pub group: BTreeMap<String, Group>,
    pub target: BTreeMap<String, Target>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Group {
    pub targets: Vec<String>,
}

/// An image's name: its repository and its first tag. Built once, in [`definition`],
/// and carried as is: nothing takes a reference apart again.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Image {
    /// `{registry}/{project}/{name}`.
    pub repository: String,
    /// `{version}[-target]`.
    pub tag: String,
}

impl Image {
    /// `repository:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }

    /// `repository:other`.
    pub fn with_tag(&self, tag: &str) -> String {
        format!("{}:{tag}", self.repository)
    }

    /// `repository@digest`: what is signed and verified.
    pub fn at(&self, digest: &str) -> String {
        format!("{}@{digest}", self.repository)
    }
}

/// One bake target (one image), in bake's own field names (and, not serialised, what
/// Slipway knows of it: the image, its tag names, the service it builds).
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Target {
    #[serde(skip)]
    pub image: Image,
    /// Its tags' names (seed 002's rules); `tags` are the same as references.
    #[serde(skip)]
    pub tag_names: Vec<String>,
    /// The names a push gives it instead (`git::push_tags`: release tags from main only).
    #[serde(skip)]
    pub push_tag_names: Vec<String>,
    /// The service it builds (none for a base).
    #[serde(skip)]
    pub service: Option<String>,
    /// The build target of a service's image (none for a base).
    #[serde(skip)]
    pub build_target: Option<manifest::Target>,
    pub description: String,
    pub context: String,
    pub dockerfile: String,
    pub target: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub contexts: BTreeMap<String, String>,
    pub args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub secret: Vec<String>,
    pub platforms: Vec<String>,
    #[serde(rename = "cache-from", skip_serializing_if = "Vec::is_empty")]
    pub cache_from: Vec<String>,
    #[serde(rename = "cache-to", skip_serializing_if = "Vec::is_empty")]
    pub cache_to: Vec<String>,
}

/// The name of an image (without tag): `{registry}/{project}/{name}`.
pub fn repository(m: &Manifest, name: &str) -> String {
    format!("{}/{}/{name}", m.registry.get_ref(), m.project.get_ref())
}

/// The repository of a base image: `{registry}/{project}/{brand}-os-base`.
pub fn base_repository(m: &Manifest, base: &str) -> String {
    repository(m, &format!("{}-{base}", m.brand()))
}

/// The tag later layers `FROM` a base by: the manifest's version.
pub fn base_ref(m: &Manifest, base: &str) -> String {
    format!("{}:{}", base_repository(m, base), m.version.get_ref())
}

/// The bake target of a service at a build target: `gateway-prod`.
pub fn service_target(service: &str, target: manifest::Target) -> String {
    format!("{service}-{target}")
}

/// The image of a service at a build target.
pub fn service_image(m: &Manifest, service: &str, target: manifest::Target) -> Image {
    Image {
        repository: repository(m, service),
        tag: format!("{}{}", m.version.get_ref(), target.tag_suffix()),
    }
}

/// The paths whose last commit is an image's revision: its own files, its bases', and
/// the manifest.
fn inputs_of(m: &Manifest, base_dirs: &[&str], service: Option<&str>) -> Vec<String> {
    // The manifest, and the record of the root image every base starts from.
    let mut paths: Vec<String> = vec![crate::manifest::FILE.to_owned(), crate::bases::FILE.to_owned()];
    paths.extend(base_dirs.iter().map(|d| d.to_string()));
    if let Some(name) = service {
        let s = &m.services[name];
        paths.push(s.path.get_ref().clone());
        paths.extend(s.depends_on.iter().map(|p| p.get_ref().clone()));
    }
    paths
}

/// Each image's revision and time, by its input paths: the three targets of a service,
/// and the bases built from one directory, share theirs (asked of git once).
pub type Revisions = BTreeMap<Vec<String>, git::Revision>;

/// The input paths of a base image: its directory and its bases' directories.
fn base_paths(m: &Manifest, base: &Base) -> Vec<String> {
    let mut dirs = vec![base.dir];
    dirs.extend(
        base.needs
            .iter()
            .map(|n| BASES.iter().find(|b| b.target == *n).expect("known base").dir),
    );
    inputs_of(m, &dirs, None)
}

/// The input paths of a service's images: its own, and its bases' directories.
fn service_paths(m: &Manifest, name: &str, kind: Kind) -> Vec<String> {
    let base_dir = match kind {
        Kind::Rust => "images/rust-builder",
        Kind::Python => "images/python-base",
    };
    inputs_of(m, &["images/os-base", base_dir], Some(name))
}

/// Every set of input paths whose revision the definition's labels name, each once:
/// what to ask git (`git::inputs_revision`) before [`definition`].
pub fn revision_paths(m: &Manifest) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = BASES.iter().map(|b| base_paths(m, b)).collect();
    out.extend(
        m.services
            .iter()
            .map(|(name, s)| service_paths(m, name.get_ref(), s.kind)),
    );
    out.sort();
    out.dedup();
    out
}

/// The revision of the image built from `paths` (unknown when git was not asked).
fn revision(inputs: &Inputs, paths: &[String]) -> git::Revision {
    inputs
        .revisions
        .get(paths)
        .cloned()
        .unwrap_or_else(git::Revision::unknown)
}

fn labels(m: &Manifest, inputs: &Inputs, paths: &[String], title: &str) -> BTreeMap<String, String> {
    let git::Revision {
        sha: revision,
        time: created,
        ..
    } = revision(inputs, paths);
    BTreeMap::from([
        ("org.opencontainers.image.title".into(), title.to_owned()),
        ("org.opencontainers.image.source".into(), inputs.source.clone()),
        ("org.opencontainers.image.revision".into(), revision),
        ("org.opencontainers.image.version".into(), m.version.get_ref().clone()),
        ("org.opencontainers.image.created".into(), created),
        ("dev.slipway.brand".into(), m.brand().to_owned()),
    ])
}

/// The name of one image's cache at one set of platforms: `{target}-{os}-{arch}` (several
/// platforms joined by `_`), within a tag's 128 characters. One reference per image,
/// target and platform, so two builds never write each other's cache (a build of one
/// platform on each node, then joined, writes one per node); [`shared_caches`] finds
/// any two targets that would.
pub fn cache_name(name: &str, platforms: &[String]) -> String {
    let platforms: Vec<String> = platforms.iter().map(|p| p.replace('/', "-")).collect();
    let mut out = format!("{name}-{}", platforms.join("_"));
    out.truncate(128);
    out
}

/// Where a target's cache is imported from and exported to. A build for several
/// platforms imports each platform's own cache too (what a build of that platform alone,
/// such as a CI job on a runner of that platform, exported), and exports one for them all.
fn cache(m: &Manifest, name: &str, platforms: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut from, to) = cache_at(m, name, platforms);
    if platforms.len() > 1 {
        for platform in platforms {
            from.extend(cache_at(m, name, std::slice::from_ref(platform)).0);
        }
    }
    (from, to)
}

/// [`cache`] of one name at one set of platforms.
fn cache_at(m: &Manifest, name: &str, platforms: &[String]) -> (Vec<String>, Vec<String>) {
    use crate::manifest::Cache;
    let name = cache_name(name, platforms);
    match &m.build.cache {
        Cache::None => (vec![], vec![]),
        Cache::Local { dir } => {
            let dir = format!("{dir}/{name}");
            (
                vec![format!("type=local,src={dir}")],
                vec![format!("type=local,dest={dir},mode=max")],
            )
        }
        Cache::Registry { reference } => {
            let r = format!("{reference}:{name}");
            (
                vec![format!("type=registry,ref={r}")],
                vec![format!("type=registry,ref={r},mode=max")],
            )
        }
        Cache::Gha { scope } => {
            let scope = format!("{}-{name}", scope.as_deref().unwrap_or("slipway"));
            (
                vec![format!("type=gha,scope={scope}")],
                vec![format!("type=gha,scope={scope},mode=max")],
            )
        }
    }
}

/// Every cache two or more targets of `targets` would export to, with those targets:
/// each would overwrite the other's, and both builds would miss. `build` refuses such a
/// definition; the fix is a shorter service name.
pub fn shared_caches(definition: &Definition, targets: &[String]) -> Vec<(String, Vec<String>)> {
    let mut writers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for name in targets {
        for to in definition.target.get(name).map(|t| &t.cache_to[..]).unwrap_or(&[]) {
            let entry = writers.entry(to.as_str()).or_default();
            if !entry.contains(name) {
                entry.push(name.clone());
            }
        }
    }
    writers
        .into_iter()
        .filter(|(_, w)| w.len() > 1)
        .map(|(to, w)| (to.to_owned(), w))
        .collect()
}

/// How an image (a service's with `service`) reaches the bases it needs: named
/// contexts, or `ARG`s naming tags.
fn link(m: &Manifest, inputs: &Inputs, needs: &[&str], service: bool, target: &mut Target) {
    for base in needs {
        let named = match inputs.linking {
            Linking::Contexts => true,
            Linking::Layers => false,
            Linking::Joined => service && joins_services(base),
        };
        if named {
            target.contexts.insert(base.to_string(), format!("target:{base}"));
        } else {
            target.args.insert(base_arg(base), base_ref(m, base));
        }
    }
}

/// The secrets of a target: the extra CA always; the Root CA for os-base, and for every
/// target where bases are named contexts. There os-base's trust step is solved inside
/// the builds that use it, shared between them, and runs with the secrets of whichever
/// build reached it first: with fifty services in one bake, a service without the Root
/// CA got there first and the step failed ("secret root-ca: not found"). It is the
/// public certificate, not a key.
fn secrets(inputs: &Inputs, os_base: bool) -> Vec<String> {
    let mut out = Vec::new();
    if os_base || inputs.linking == Linking::Contexts {
        out.push(format!("id=root-ca,src={}", inputs.ca_file.display()));
    }
    if let Some(extra) = &inputs.extra_ca {
        out.push(format!("id=extra-ca,src={}", extra.display()));
    }
    out
}

/// Give the targets `pushed` the tags a push gives them (`push_tag_names`).
pub fn tag_for_push(definition: &mut Definition, pushed: &[String]) {
    for name in pushed {
        if let Some(t) = definition.target.get_mut(name) {
            t.tag_names = t.push_tag_names.clone();
            t.tags = t.tag_names.iter().map(|n| t.image.with_tag(n)).collect();
        }
    }
}

/// The platforms a base is built for: the rust builder runs where the build runs, for
/// the builder's own platform alone; the other bases are for that one (the rust
/// builder's base) and every platform of the services.
fn base_platforms(inputs: &Inputs, base: &str) -> Vec<String> {
    let own = std::iter::once(&inputs.native);
    if base == "rust-builder" {
        return own.cloned().collect();
    }
    own.chain(inputs.platforms.iter().filter(|p| **p != inputs.native))
        .cloned()
        .collect()
}

/// Generate the whole definition: every base, and every service at every target.
pub fn definition(m: &Manifest, inputs: &Inputs) -> Definition {
    let head = &inputs.head;
    let platforms = &inputs.platforms;
    let mut targets = BTreeMap::new();
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut layer_groups: BTreeMap<usize, Vec<String>> = BTreeMap::new();

    for base in BASES {
        let paths = base_paths(m, base);
        let repo = base_repository(m, base.target);
        let stage = if base.target == "rust-builder" && m.build.rust_toolchain == RustToolchain::Official {
            "rust-builder-official"
        } else {
            base.stage
        };
        let platforms = &base_platforms(inputs, base.target)[..];
        let (mut cache_from, cache_to) = cache(m, base.target, platforms);
        // A base's own steps come from its bases' caches too (a named context is solved
        // inside the build that uses it, which imports only what it lists).
        cache_from.extend(
            base.needs
                .iter()
                .flat_map(|b| cache(m, b, &base_platforms(inputs, b)).0),
        );
        let tag_names = git::tags(m.version.get_ref(), head, "");
        let image = Image {
            repository: repo.clone(),
            tag: m.version.get_ref().clone(),
        };
        let mut t = Target {
            description: format!("{}-{}: {}", m.brand(), base.target, base_description(base.target)),
            context: base.dir.to_owned(),
            dockerfile: "Dockerfile".into(),
            target: stage.into(),
            labels: labels(m, inputs, &paths, &format!("{}-{}", m.brand(), base.target)),
            tags: tag_names.iter().map(|t| image.with_tag(t)).collect(),
            push_tag_names: tag_names.clone(),
            tag_names,
            image,
            secret: secrets(inputs, base.target == "os-base"),
            platforms: platforms.to_vec(),
            cache_from,
            cache_to,
            ..Target::default()
        };
        t.args.insert("BRAND".into(), m.brand().to_owned());
        t.args
            .insert(EPOCH_ARG.into(), revision(inputs, &paths).epoch.to_string());
        if base.target == "os-base" {
            t.args.insert("DEBIAN_IMAGE".into(), inputs.debian_image.clone());
            t.args.insert("CA_SHA256".into(), inputs.ca_sha256.clone());
        }
        link(m, inputs, base.needs, false, &mut t);
        targets.insert(base.target.to_owned(), t);
        layer_groups.entry(base.layer).or_default().push(base.target.to_owned());
    }

    for target in manifest::Target::ALL {
        let target_settings = target.settings(m);
        let mut members = Vec::new();
        for (name, service) in &m.services {
            let name = name.get_ref();
            let needs = bases_of(service.kind);
            let paths = service_paths(m, name, service.kind);
            let bake_name = service_target(name, target);
            let (mut cache_from, cache_to) = cache(m, &bake_name, platforms);
            cache_from.extend(
                needs
                    .iter()
                    .chain(&["os-base"])
                    .flat_map(|b| cache(m, b, &base_platforms(inputs, b)).0),
            );
            // Each once, in order (os-base is a base of the base too).
            let mut seen = std::collections::BTreeSet::new();
            cache_from.retain(|c| seen.insert(c.clone()));
            let tag_names = git::tags(m.version.get_ref(), head, &target.tag_suffix());
            let push_tag_names = git::push_tags(m.version.get_ref(), head, &target.tag_suffix());
            let image = service_image(m, name, target);
            let mut t = Target {
                description: format!(
                    "{name} ({}), {target}: {}",
                    format!("{:?}", service.kind).to_lowercase(),
                    target_settings
                        .description
                        .clone()
                        .unwrap_or_else(|| format!("the {target} stage"))
                ),
                context: inputs.context_dir.join(name).display().to_string(),
                dockerfile: format!("{}/Dockerfile", service.path.get_ref()),
                target: target.name().to_owned(),
                labels: labels(m, inputs, &paths, name),
                tags: tag_names.iter().map(|t| image.with_tag(t)).collect(),
                tag_names,
                push_tag_names,
                image,
                service: Some(name.clone()),
                build_target: Some(target),
                secret: secrets(inputs, false),
                platforms: platforms.clone(),
                cache_from,
                cache_to,
                ..Target::default()
            };
            t.args
                .insert(EPOCH_ARG.into(), revision(inputs, &paths).epoch.to_string());
            t.labels.insert("dev.slipway.service".into(), name.clone());
            t.labels.insert("dev.slipway.target".into(), target.name().to_owned());
            link(m, inputs, needs, true, &mut t);
            targets.insert(bake_name.clone(), t);
            members.push(bake_name);
        }
        groups.insert(target.name().to_owned(), Group { targets: members });
    }
    for (layer, members) in layer_groups {
        groups.insert(format!("layer-{layer}"), Group { targets: members });
    }
    groups.insert(
        "bases".into(),
        Group {
            targets: BASES.iter().map(|b| b.target.to_owned()).collect(),
        },
    );
    groups.insert(
        "default".into(),
        Group {
            targets: groups["prod"].targets.clone(),
        },
    );
    Definition {
        group: groups,
        target: targets,
    }
}

fn base_description(base: &str) -> &'static str {
    match base {
        "os-base" => "the one Debian base, with the project Root CA trusted",
        "python-base" => "os-base + Debian's Python 3 (the Python runtime)",
        "python-builder" => "python-base + uv, for installing dependencies",
        _ => "the Rust toolchain for the Rust services",
    }
}

/// The bake targets to build, in layers (one bake each with [`Linking::Layers`], all at
/// once with [`Linking::Contexts`], the services with the last with [`Linking::Joined`]):
/// the bases the chosen services need, then them.
pub fn selection(m: &Manifest, names: &[String], target: manifest::Target) -> anyhow::Result<Vec<Vec<String>>> {
    let mut services: Vec<&str> = Vec::new();
    let mut bases: Vec<&str> = Vec::new();
    for name in names {
        if let Some(base) = BASES.iter().find(|b| b.target == name) {
            bases.push(base.target);
        } else if m.services.contains_key(name.as_str()) {
            services.push(name);
        } else {
            let known: Vec<&str> = m
                .services
                .keys()
                .map(|k| k.get_ref().as_str())
                .chain(BASES.iter().map(|b| b.target))
                .collect();
            anyhow::bail!(
                "no image named `{name}`: the services and bases are {}",
                known.join(", ")
            );
        }
    }
    if names.is_empty() {
        services = m.services.keys().map(|k| k.get_ref().as_str()).collect();
    }
    for s in &services {
        bases.extend(bases_of(m.services[*s].kind));
    }
    // Every base needs its own bases.
    let mut i = 0;
    while i < bases.len() {
        let needs = BASES
            .iter()
            .find(|b| b.target == bases[i])
            .map(|b| b.needs)
            .unwrap_or(&[]);
        bases.extend(needs.iter().copied());
        i += 1;
    }
    let mut layers: Vec<Vec<String>> = vec![Vec::new(); SERVICE_LAYER + 1];
    for base in BASES.iter().filter(|b| bases.contains(&b.target)) {
        layers[base.layer].push(base.target.to_owned());
    }
    for s in services {
        layers[SERVICE_LAYER].push(service_target(s, target));
    }
    layers.retain(|l| !l.is_empty());
    Ok(layers)
}

/// The definition as the file bake reads, pretty-printed with a trailing newline.
pub fn to_json(def: &Definition) -> String {
    let mut text = serde_json::to_string_pretty(def).expect("a definition always serializes");
    text.push('\n');
    text
}

/// The local paths bake reads for `targets` that lie outside `root` (bake's working
/// directory): secret files and contexts, each once, in order. Buildx 0.20+ builds them
/// only when each is granted (`--allow fs.read=PATH`).
pub fn reads_outside(definition: &Definition, targets: &[String], root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for t in targets.iter().filter_map(|name| definition.target.get(name)) {
        let secrets = t
            .secret
            .iter()
            .filter_map(|s| s.split(',').find_map(|kv| kv.strip_prefix("src=").map(PathBuf::from)));
        let context = Some(PathBuf::from(&t.context)).filter(|c| c.is_absolute());
        for path in secrets.chain(context) {
            if !path.starts_with(root) && !out.contains(&path) {
                out.push(path);
            }
        }
    }
    out
}

/// Where `build` keeps what it generates: `.<brand>/build/`.
pub fn build_dir(state: &Path) -> PathBuf {
    state.join("build")
}

/// The checkout's manifest and fixed inputs (a HEAD on main, a made-up CA fingerprint),
/// for the plan tests of bake and build.
#[cfg(test)]
pub fn test_inputs(linking: Linking) -> (Manifest, Inputs) {
    let root = crate::project::root();
    let m = Manifest::load(&root.join(crate::manifest::FILE)).unwrap();
    let inputs = Inputs {
        context_dir: root.join(".slipway/build/context"),
        head: Head {
            sha: "0123456789abcdef".into(),
            branch: Some("main".into()),
        },
        ca_sha256: "ab".repeat(32),
        ca_file: root.join(".slipway/certs/rootCA.crt"),
        extra_ca: Some(root.join(".slipway/build/extra-ca.pem")),
        linking,
        platforms: vec!["linux/amd64".into()],
        native: "linux/amd64".into(),
        debian_image: "debian:trixie-slim".into(),
        revisions: Revisions::new(),
        source: format!("file://{}", root.display()),
    };
    (m, inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(linking: Linking) -> (Manifest, Inputs) {
        test_inputs(linking)
    }

    #[test]
    fn each_image_target_and_platform_has_a_cache_of_its_own() {
        let (mut m, mut inputs) = inputs(Linking::Layers);
        m.build.cache = crate::manifest::Cache::Registry {
            reference: "registry.test/team/cache".into(),
        };
        inputs.platforms = vec!["linux/arm64".into()];
        let def = definition(&m, &inputs);
        let gw = &def.target["gateway-prod"];
        assert_eq!(
            gw.cache_to,
            ["type=registry,ref=registry.test/team/cache:gateway-prod-linux-arm64,mode=max"]
        );
        // Its own cache, then its bases': the rust builder for the builder's own
        // platform (it cross-compiles), the others for that one and the image's.
        assert_eq!(
            gw.cache_from,
            [
                "type=registry,ref=registry.test/team/cache:gateway-prod-linux-arm64",
                "type=registry,ref=registry.test/team/cache:rust-builder-linux-amd64",
                "type=registry,ref=registry.test/team/cache:os-base-linux-amd64_linux-arm64",
                "type=registry,ref=registry.test/team/cache:os-base-linux-amd64",
                "type=registry,ref=registry.test/team/cache:os-base-linux-arm64",
            ]
        );
        assert_eq!(def.target["rust-builder"].platforms, ["linux/amd64"]);
        assert_eq!(def.target["python-base"].platforms, ["linux/amd64", "linux/arm64"]);
        // A base for both platforms imports each one's own cache too (what a build of
        // one platform exported), and exports one for both.
        let python_base = &def.target["python-base"];
        assert_eq!(
            python_base.cache_from[..3],
            [
                "type=registry,ref=registry.test/team/cache:python-base-linux-amd64_linux-arm64",
                "type=registry,ref=registry.test/team/cache:python-base-linux-amd64",
                "type=registry,ref=registry.test/team/cache:python-base-linux-arm64",
            ]
        );
        assert_eq!(
            python_base.cache_to,
            ["type=registry,ref=registry.test/team/cache:python-base-linux-amd64_linux-arm64,mode=max"]
        );
        let all: Vec<String> = def.target.keys().cloned().collect();
        assert_eq!(shared_caches(&def, &all), vec![]);
        assert_eq!(
            cache_name("agent-prod", &["linux/amd64".into(), "linux/arm64".into()]),
            "agent-prod-linux-amd64_linux-arm64"
        );

        // Two services whose cache names meet in a tag's 128 characters share a cache.
        let long = "s".repeat(130);
        let mut two = def.clone();
        for suffix in ["a", "b"] {
            let mut t = gw.clone();
            t.cache_to = cache(&m, &format!("{long}{suffix}-prod"), &inputs.platforms).1;
            two.target.insert(format!("{suffix}-prod"), t);
        }
        let names = vec!["a-prod".to_owned(), "b-prod".to_owned()];
        let shared = shared_caches(&two, &names);
        assert_eq!(shared.len(), 1, "{shared:?}");
        assert_eq!(shared[0].1, names);
    }

    #[test]
    fn each_target_carries_its_image_its_tags_and_its_service() {
        let (m, inputs) = inputs(Linking::Contexts);
        let def = definition(&m, &inputs);
        for (name, t) in &def.target {
            assert_eq!(t.tags[0], t.image.reference(), "{name}");
            let named: Vec<String> = t.tag_names.iter().map(|n| t.image.with_tag(n)).collect();
            assert_eq!(named, t.tags, "{name}");
        }
        let gw = &def.target["gateway-dev"];
        assert_eq!(gw.service.as_deref(), Some("gateway"));
        assert_eq!(gw.image, service_image(&m, "gateway", manifest::Target::Dev));
        assert_eq!(gw.image.tag, "0.1.0-dev");
        assert_eq!(def.target["os-base"].service, None);
    }

    #[test]
    fn contexts_link_services_to_their_bases() {
        let (m, inputs) = inputs(Linking::Contexts);
        let def = definition(&m, &inputs);
        let gw = &def.target["gateway-prod"];
        assert_eq!(gw.contexts["rust-builder"], "target:rust-builder");
        assert_eq!(gw.contexts["os-base"], "target:os-base");
        assert_eq!(def.target["python-base"].contexts["os-base"], "target:os-base");
        assert_eq!(gw.dockerfile, "services/gateway/Dockerfile");
        assert_eq!(gw.target, "prod");
        assert!(gw.context.ends_with(".slipway/build/context/gateway"), "{}", gw.context);
        assert_eq!(def.group["prod"].targets, ["agent-prod", "gateway-prod"]);
        assert_eq!(def.group["default"], def.group["prod"]);
        assert!(def.group["local"].targets.contains(&"agent-local".to_owned()));
    }

    #[test]
    fn layers_name_bases_by_tag() {
        let (m, inputs) = inputs(Linking::Layers);
        let def = definition(&m, &inputs);
        let agent = &def.target["agent-dev"];
        assert!(agent.contexts.is_empty());
        assert_eq!(
            agent.args["PYTHON_BASE"],
            "localhost:5000/platform/slipway-python-base:0.1.0"
        );
        assert_eq!(
            agent.args["PYTHON_BUILDER"],
            "localhost:5000/platform/slipway-python-builder:0.1.0"
        );
        assert_eq!(
            def.target["rust-builder"].args["OS_BASE"],
            "localhost:5000/platform/slipway-os-base:0.1.0"
        );
        assert_eq!(def.group["layer-0"].targets, ["os-base"]);
    }

    #[test]
    fn trust_travels_as_secrets_on_every_target_that_needs_it() {
        let (m, inputs) = inputs(Linking::Contexts);
        let def = definition(&m, &inputs);
        let os = &def.target["os-base"];
        assert!(
            os.secret
                .iter()
                .any(|s| s.starts_with("id=root-ca,src=") && s.ends_with("rootCA.crt"))
        );
        assert_eq!(os.args["CA_SHA256"], "ab".repeat(32));
        for (name, t) in &def.target {
            // The extra CA reaches every target, the bases reached only through
            // `target:` contexts included.
            assert!(t.secret.iter().any(|s| s.starts_with("id=extra-ca,")), "{name}");
            // No secret in a build argument or a label.
            assert!(
                !t.args.values().chain(t.labels.values()).any(|v| v.contains("BEGIN")),
                "{name}"
            );
            // The Root CA too: any of them may be the build that runs os-base's trust
            // step.
            assert!(t.secret.iter().any(|s| s.starts_with("id=root-ca,")), "{name}");
        }
        // In layers, os-base is built alone: only it is given the Root CA.
        let (m, layered) = self::inputs(Linking::Layers);
        for (name, t) in &definition(&m, &layered).target {
            let root_ca = t.secret.iter().any(|s| s.starts_with("id=root-ca,"));
            assert_eq!(root_ca, name == "os-base", "{name}");
        }
    }

    #[test]
    fn tags_names_and_labels_follow_the_seed() {
        let (m, inputs) = inputs(Linking::Contexts);
        let def = definition(&m, &inputs);
        assert_eq!(
            def.target["gateway-prod"].tags,
            [
                "localhost:5000/platform/gateway:0.1.0",
                "localhost:5000/platform/gateway:0.1.0-0123456",
                "localhost:5000/platform/gateway:main-0123456",
                "localhost:5000/platform/gateway:latest"
            ]
        );
        assert_eq!(
            def.target["gateway-dev"].tags[0],
            "localhost:5000/platform/gateway:0.1.0-dev"
        );
        assert_eq!(
            def.target["os-base"].tags[0],
            "localhost:5000/platform/slipway-os-base:0.1.0"
        );
        for t in def.target.values() {
            for key in ["source", "revision", "version", "created"] {
                assert!(
                    t.labels.contains_key(&format!("org.opencontainers.image.{key}")),
                    "{key}"
                );
            }
        }
    }

    #[test]
    fn selection_pulls_in_the_bases_needed() {
        let (m, _) = inputs(Linking::Layers);
        let layers = selection(&m, &["agent".into()], crate::manifest::Target::Dev).unwrap();
        assert_eq!(
            layers,
            [
                vec!["os-base"],
                vec!["python-base", "python-builder"],
                vec!["agent-dev"]
            ]
        );
        let layers = selection(&m, &[], crate::manifest::Target::Prod).unwrap();
        assert_eq!(layers[2], ["agent-prod", "gateway-prod"]);
        let err = selection(&m, &["gatewy".into()], crate::manifest::Target::Prod)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no image named `gatewy`") && err.contains("gateway"),
            "{err}"
        );
    }

    #[test]
    fn reads_outside_the_checkout_are_exactly_the_secrets_and_contexts_there() {
        let (m, inputs) = inputs(Linking::Contexts);
        let all: Vec<String> = definition(&m, &inputs).target.keys().cloned().collect();
        // The state directory inside the checkout: nothing to grant.
        assert!(reads_outside(&definition(&m, &inputs), &all, &crate::project::root()).is_empty());
        // Elsewhere (SLIPWAY_STATE_DIR): the two CA files and each staged context, once.
        let state = PathBuf::from("/tmp/state");
        let outside = Inputs {
            context_dir: state.join("build/context"),
            ca_file: state.join("certs/rootCA.crt"),
            extra_ca: Some(state.join("build/extra-ca.pem")),
            ..inputs.clone()
        };
        let def = definition(&m, &outside);
        let reads = reads_outside(&def, &all, &crate::project::root());
        for secret in ["certs/rootCA.crt", "build/extra-ca.pem"] {
            assert_eq!(
                reads.iter().filter(|p| **p == state.join(secret)).count(),
                1,
                "{reads:?}"
            );
        }
        for service in m.services.keys() {
            assert!(
                reads.contains(&state.join("build/context").join(service.get_ref())),
                "{reads:?}"
            );
        }
        assert!(reads.iter().all(|p| p.starts_with(&state)), "{reads:?}");
        // Only what the targets asked for: os-base alone reads no staged context.
        let os_base = reads_outside(&def, &["os-base".to_owned()], &crate::project::root());
        assert_eq!(
            os_base,
            [state.join("certs/rootCA.crt"), state.join("build/extra-ca.pem")]
        );
    }
}
