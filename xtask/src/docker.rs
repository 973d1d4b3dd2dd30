//! Everything Slipway asks of Docker: the steps that run `docker` and its plugins
//! (buildx, compose), and the queries `doctor` and `test` make.
//!
//! Architecture invariant: only this module names the `docker` program. Other modules
//! ask it for a [`Step`] and put that step in their plan.

use std::time::Duration;

use crate::plan::{Output, Step};

/// Where the engine keeps images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    /// The graph drivers of Docker <= 28's default (`overlay2`): `docker save` writes
    /// `layer.tar` files, images cannot hold attestations or several platforms.
    Classic,
    /// The containerd image store (`io.containerd.snapshotter.v1`): OCI layouts,
    /// compressed blobs, image indexes.
    Containerd,
}

impl Store {
    /// The store an engine runs, from its `docker info` `DriverStatus`: the containerd
    /// store names the snapshotter as its driver type.
    pub fn from_driver_status(driver_status: &str) -> Store {
        if driver_status.contains("io.containerd.snapshotter") {
            Store::Containerd
        } else {
            Store::Classic
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Store::Classic => "classic",
            Store::Containerd => "containerd",
        }
    }
}

/// How to get an engine, said wherever one is missing.
pub const START_ENGINE: &str =
    "start the Docker daemon (`sudo systemctl start docker`, or `sudo dockerd &`), then run `cargo xtask doctor`";

/// A builder node's engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its name in slipway.toml (`build.builders.NAME`).
    pub name: String,
    pub via: Via,
}

/// How a builder node's engine is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// `tcp://HOST:PORT` with mutual TLS: the client's files (`ca.pem`, `cert.pem`,
    /// `key.pem`) in `cert_path`.
    Tls {
        host: String,
        cert_path: std::path::PathBuf,
    },
    /// A docker context of this name: its host and TLS as the context says.
    Context(String),
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Tls { host, .. } => f.write_str(host),
            Via::Context(name) => write!(f, "docker context {name}"),
        }
    }
}

/// The engine every docker step of this process talks to, when it is a builder node
/// (`build --builder NAME`); else the environment's (`DOCKER_HOST`, the docker context).
static ENDPOINT: std::sync::OnceLock<Endpoint> = std::sync::OnceLock::new();

/// Talk to `endpoint` from now on: said once, before the first docker step.
pub fn use_endpoint(endpoint: Endpoint) -> anyhow::Result<()> {
    let name = endpoint.name.clone();
    ENDPOINT
        .set(endpoint)
        .map_err(|_| anyhow::anyhow!("a second builder ({name}) asked for in one command"))
}

std::thread_local! {
    /// The engine this thread's docker steps talk to, over the process's: `builders`
    /// asks every node at once, one thread each ([`on_endpoint`]).
    static THREAD_ENDPOINT: std::cell::RefCell<Option<Endpoint>> = const { std::cell::RefCell::new(None) };
}

/// Run `f` with this thread's docker steps sent to `endpoint` (this machine's engine, as
/// the environment says, when `None`).
pub fn on_endpoint<T>(endpoint: Option<Endpoint>, f: impl FnOnce() -> T) -> T {
    let before = THREAD_ENDPOINT.with(|e| e.replace(endpoint));
    let out = f();
    THREAD_ENDPOINT.with(|e| e.replace(before));
    out
}

/// `f`, made to run on another thread with this thread's endpoint: a thread-local is not
/// inherited, so a query spawned beside another (`std::thread::scope`) would otherwise
/// ask this machine's engine instead of the node's.
pub fn carried<T>(f: impl FnOnce() -> T + Send) -> impl FnOnce() -> T + Send {
    let endpoint = THREAD_ENDPOINT.with(|e| e.borrow().clone());
    move || on_endpoint(endpoint, f)
}

/// `f` on `items` in chunks of at least `min_chunk`, at most `threads` chunks side by
/// side, each on this thread's endpoint ([`carried`]); the answers in the chunks' order.
/// The engine answers each request on one core: a long list asked in a few requests at
/// once is answered sooner than in one.
pub fn side_by_side<I: Sync, T: Send>(
    items: &[I],
    threads: usize,
    min_chunk: usize,
    f: impl Fn(&[I]) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let per_chunk = min_chunk.max(items.len().div_ceil(threads.max(1))).max(1);
    let f = &f;
    std::thread::scope(|scope| {
        let running: Vec<_> = items
            .chunks(per_chunk)
            .map(|chunk| scope.spawn(carried(move || f(chunk))))
            .collect();
        running
            .into_iter()
            .map(|r| {
                r.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a request to the engine panicked")))
            })
            .collect()
    })
}

/// The endpoint the calling thread's steps go to, when it is a builder node.
fn endpoint() -> Option<Endpoint> {
    THREAD_ENDPOINT
        .with(|e| e.borrow().clone())
        .or_else(|| ENDPOINT.get().cloned())
}

/// Which engine the steps talk to, for records keyed by it (`engine.json`).
pub fn host_label() -> String {
    match endpoint() {
        Some(e) => format!("{} ({})", e.via, e.name),
        None => std::env::var("DOCKER_HOST").unwrap_or_default(),
    }
}

/// A `docker` step with the given arguments, to the chosen engine.
pub fn step(name: impl Into<String>, args: &[&str]) -> Step {
    let step = Step::new(name, "docker").args(args.iter().copied());
    match endpoint().map(|e| e.via) {
        Some(Via::Tls { host, cert_path }) => step
            .env("DOCKER_HOST", host)
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", cert_path.display().to_string()),
        // The docker CLI takes a non-empty DOCKER_HOST over any context: emptied, the
        // context decides (its host, its TLS).
        Some(Via::Context(name)) => step
            .env("DOCKER_HOST", "")
            .env("DOCKER_TLS_VERIFY", "")
            .env("DOCKER_CERT_PATH", "")
            .env("DOCKER_CONTEXT", name),
        None => step,
    }
}

/// A quick query: captured output, bounded in time, never an interactive prompt.
fn query(args: &[&str], secs: u64) -> anyhow::Result<crate::plan::Ran> {
    step(format!("docker {}", args.join(" ")), args)
        .output(Output::Capture)
        .timeout(Duration::from_secs(secs))
        .run_unchecked()
}

/// The engine host a docker context points at (`docker context inspect`), or why not.
pub fn context_host(context: &str) -> Result<String, String> {
    let ran = Step::new(format!("docker context inspect {context}"), "docker")
        .args(["context", "inspect", context, "--format", "{{.Endpoints.docker.Host}}"])
        .output(Output::Capture)
        .timeout(Duration::from_secs(10))
        .run_unchecked()
        .map_err(|e| format!("{e:#}"))?;
    match ran.stdout.trim() {
        host if ran.status.success() && !host.is_empty() => Ok(host.to_owned()),
        _ => Err(format!(
            "no docker context `{context}` here (`docker context ls` lists them): make it with `docker context create {context} --docker host=...`"
        )),
    }
}

/// Whether the docker CLI is on PATH.
pub fn cli_present() -> bool {
    which::which("docker").is_ok()
}

/// The engine's version, or one line saying why it cannot be reached: asked once per
/// process.
pub fn engine_version() -> Result<String, String> {
    static VERSION: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    VERSION.get_or_init(server_version).clone()
}

/// The engine's version, or the error that names it unreachable and how to start it:
/// what every command that needs the engine says first.
pub fn require_engine() -> anyhow::Result<String> {
    engine_version().map_err(|why| anyhow::anyhow!("the Docker engine is not reachable ({why}): {START_ENGINE}"))
}

/// How often a health check runs during a container's start period, where the engine
/// lets us say (Docker 25+): often enough that a service is called healthy within half a
/// second of being ready, for the few seconds a start lasts.
pub const START_INTERVAL: &str = "500ms";

/// Whether the engine runs health checks at their own interval during the start period
/// when asked (`--health-start-interval`, `start_interval`: Docker 25+, API 1.44). Older
/// engines refuse the setting; newer ones default it to 5 s.
pub fn has_start_interval() -> bool {
    engine_version()
        .ok()
        .and_then(|v| parse_version(&v))
        .is_some_and(|v| v >= (25, 0, 0))
}

/// The engine's version as it is now (not remembered), or why it cannot be reached.
pub fn server_version() -> Result<String, String> {
    if !cli_present() {
        return Err(
            "the `docker` CLI is not on PATH: install Docker Engine (Debian: `apt-get install docker.io`)".into(),
        );
    }
    match query(&["version", "--format", "{{.Server.Version}}"], 15) {
        Ok(ran) if ran.status.success() && !ran.stdout.trim().is_empty() => Ok(ran.stdout.trim().to_owned()),
        Ok(ran) => Err(first_error_line(&ran.stderr)),
        Err(err) => Err(format!("{err}")),
    }
}

/// The one line of docker's stderr that says what is wrong.
fn first_error_line(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .find(|l| l.contains("Cannot connect") || l.contains("permission denied") || l.starts_with("error"))
        .or_else(|| stderr.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("the engine did not answer")
        .to_owned()
}

/// `docker buildx version`: the plugin's version, e.g. `0.13.1`.
pub fn buildx_version() -> Option<String> {
    let ran = query(&["buildx", "version"], 15).ok().filter(|r| r.status.success())?;
    // "github.com/docker/buildx 0.13.1+ds1 0.13.1+ds1-3"
    ran.stdout
        .split_whitespace()
        .nth(1)
        .map(|v| v.trim_start_matches('v').to_owned())
}

/// What `docker buildx inspect` says of a builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderInfo {
    pub driver: String,
    pub buildkit: String,
    /// The platforms it can build, `os/arch` (variants folded): natively, and through
    /// emulation where binfmt_misc has an interpreter for them.
    pub platforms: Vec<String>,
}

/// The builder's driver and BuildKit version, in one query.
pub fn builder_info(builder: Option<&str>) -> Option<BuilderInfo> {
    let mut args = vec!["buildx", "inspect"];
    args.extend(builder);
    let ran = query(&args, 20).ok().filter(|r| r.status.success())?;
    let field = |names: &[&str]| {
        ran.stdout.lines().find_map(|l| {
            let (key, value) = l.split_once(':')?;
            names.contains(&key.trim()).then(|| value.trim().to_owned())
        })
    };
    let mut platforms: Vec<String> = Vec::new();
    for platform in field(&["Platforms"]).unwrap_or_default().split(',') {
        let os_arch: Vec<&str> = platform.trim().split('/').take(2).collect();
        let os_arch = os_arch.join("/");
        if os_arch.contains('/') && !platforms.contains(&os_arch) {
            platforms.push(os_arch);
        }
    }
    Some(BuilderInfo {
        driver: field(&["Driver"]).unwrap_or_default(),
        buildkit: field(&["BuildKit version", "Buildkit"])?,
        platforms,
    })
}

/// What `docker info` says of the engine's machine, in one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Its own platform, `os/arch` as OCI spells it (`linux/amd64`, not `x86_64`).
    pub platform: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    /// Its data root: images, containers and the build cache.
    pub root_dir: String,
}

/// The engine's platform, CPUs, memory and data root.
pub fn host() -> Option<Host> {
    let ran = query(
        &[
            "info",
            "--format",
            "{{.OSType}} {{.Architecture}} {{.NCPU}} {{.MemTotal}} {{.DockerRootDir}}",
        ],
        15,
    )
    .ok()
    .filter(|r| r.status.success())?;
    let mut words = ran.stdout.trim().splitn(5, ' ');
    let os = words.next()?.to_owned();
    let arch = oci_arch(words.next()?);
    Some(Host {
        platform: format!("{os}/{arch}"),
        cpus: words.next()?.parse().ok()?,
        memory_bytes: words.next()?.parse().ok()?,
        root_dir: words.next()?.to_owned(),
    })
}

/// Free space (GiB) where the engine keeps its images, asked of the engine itself: `df`
/// in a throwaway container of `image` (no network, removed after), whose root is an
/// overlay on that filesystem. For a node whose disk this machine cannot read.
pub fn free_gib_inside(image: &str) -> Result<f64, String> {
    let present = query(&["image", "inspect", "--format", "{{.Id}}", image], 15).map_err(|e| format!("{e:#}"))?;
    if !present.status.success() {
        return Err(format!("no {image} on it to run `df` in: a build there pulls it"));
    }
    let ran = query(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "df",
            image,
            "-Pk",
            "/",
        ],
        30,
    )
    .map_err(|e| format!("{e:#}"))?;
    if !ran.status.success() {
        return Err(format!("`df` in a container of {image}: {}", ran.stderr.trim()));
    }
    available_gib(&ran.stdout).ok_or_else(|| format!("`df -Pk` said {:?}", ran.stdout.trim()))
}

/// The available space of `df -Pk`'s one filesystem, in GiB.
fn available_gib(df: &str) -> Option<f64> {
    let kib: f64 = df.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib / f64::from(1u32 << 20))
}

/// This machine's platform, `linux/<arch>` as OCI spells it.
pub fn local_platform() -> String {
    format!("linux/{}", oci_arch(std::env::consts::ARCH))
}

/// The OCI name of a machine architecture as the kernel names it.
pub fn oci_arch(machine: &str) -> &str {
    match machine {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "armv7l" => "arm",
        "i686" | "i386" => "386",
        other => other,
    }
}

/// `docker compose version --short`, e.g. `2.26.1`.
pub fn compose_version() -> Option<String> {
    let ran = query(&["compose", "version", "--short"], 15)
        .ok()
        .filter(|r| r.status.success())?;
    Some(ran.stdout.trim().trim_start_matches('v').to_owned()).filter(|v| !v.is_empty())
}

/// The engine's image store.
pub fn image_store() -> Store {
    let status = query(&["info", "--format", "{{json .DriverStatus}}"], 15)
        .ok()
        .filter(|r| r.status.success())
        .map(|r| r.stdout)
        .unwrap_or_default();
    Store::from_driver_status(&status)
}

/// The engine's data directory, for the disk check.
pub fn root_dir() -> Option<String> {
    let ran = query(&["info", "--format", "{{.DockerRootDir}}"], 15)
        .ok()
        .filter(|r| r.status.success())?;
    Some(ran.stdout.trim().to_owned()).filter(|v| !v.is_empty())
}

/// `major.minor.patch` from a version string with any suffix (`0.13.1+ds1`, `v2.26.1-4`).
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let core: String = text
        .trim_start_matches('v')
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = core.split('.').map(|p| p.parse::<u32>());
    let major = parts.next()?.ok()?;
    let minor = parts.next().unwrap_or(Ok(0)).ok()?;
    let patch = parts.next().unwrap_or(Ok(0)).ok()?;
    Some((major, minor, patch))
}

/// The name as containerd keeps it (the other way from [`familiar`]): `debian:x` is
/// `docker.io/library/debian:x`, a name whose first part is no host is on Docker Hub.
pub fn full_name(image: &str) -> String {
    let (first, rest) = image.split_once('/').unwrap_or(("", image));
    let is_host = first.contains('.') || first.contains(':') || first == "localhost";
    match (first.is_empty(), is_host) {
        (true, _) => format!("docker.io/library/{rest}"),
        (false, true) => image.to_owned(),
        (false, false) => format!("docker.io/{image}"),
    }
}

/// `reference` as `docker` shows and the engine matches it: docker.io's images without
/// their registry, and its official ones without `library/` (`docker.io/library/debian:13`
/// -> `debian:13`); any other registry's as they are.
pub fn familiar(reference: &str) -> String {
    let Some(rest) = reference.strip_prefix("docker.io/") else {
        return reference.to_owned();
    };
    match rest.strip_prefix("library/") {
        Some(official) if !official.contains('/') => official.to_owned(),
        _ => rest.to_owned(),
    }
}

/// The id of an image in the store, if it is there.
pub fn image_id(reference: &str) -> Option<String> {
    let ran = query(&["image", "inspect", "--format", "{{.Id}}", reference], 20).ok()?;
    ran.status
        .success()
        .then(|| ran.stdout.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Whether the store holds `reference` for `platform` (`docker image inspect --platform`,
/// Docker 28: an image index in the containerd store holds several).
pub fn image_has_platform(reference: &str, platform: &str) -> bool {
    query(
        &[
            "image",
            "inspect",
            "--platform",
            platform,
            "--format",
            "{{.Id}}",
            reference,
        ],
        20,
    )
    .is_ok_and(|ran| ran.status.success())
}

/// The platform images of an image index in its registry, each `(os/arch, digest)`
/// (BuildKit's attestation manifests, `unknown/unknown`, left out): empty for an image
/// that is no index. Asked with `docker buildx imagetools inspect --raw`.
pub fn platform_manifests(reference: &str) -> Result<Vec<(String, String)>, String> {
    Ok(index_platforms(&imagetools_inspect(&["--raw"], reference)?))
}

/// The digest of what `reference` names in its registry (an index or a manifest).
pub fn index_digest(reference: &str) -> Result<String, String> {
    let manifest = imagetools_inspect(&["--format", "{{json .Manifest}}"], reference)?;
    manifest["digest"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("imagetools names no digest for {reference}"))
}

/// `docker buildx imagetools inspect ARGS REFERENCE`: the JSON it prints, or why the
/// registry gave none.
fn imagetools_inspect(args: &[&str], reference: &str) -> Result<serde_json::Value, String> {
    let mut all = vec!["buildx", "imagetools", "inspect"];
    all.extend(args);
    all.push(reference);
    let ran = query(&all, 60).map_err(|e| format!("{e:#}"))?;
    if !ran.status.success() {
        return Err(format!(
            "the registry did not answer for {reference}: {}",
            ran.stderr.trim().lines().last().unwrap_or("no reason given")
        ));
    }
    serde_json::from_str(ran.stdout.trim()).map_err(|e| format!("imagetools printed no JSON: {e}"))
}

/// The platform images an index names (see [`platform_manifests`]).
pub fn index_platforms(raw: &serde_json::Value) -> Vec<(String, String)> {
    raw["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let p = &m["platform"];
            let (os, arch) = (p["os"].as_str()?, p["architecture"].as_str()?);
            if os == "unknown" || arch == "unknown" {
                return None;
            }
            let platform = match p["variant"].as_str() {
                Some(v) => format!("{os}/{arch}/{v}"),
                None => format!("{os}/{arch}"),
            };
            Some((platform, m["digest"].as_str()?.to_owned()))
        })
        .collect()
}

/// The BuildKit provenance attached to an image in its registry (`docker buildx
/// imagetools inspect`): the SLSA predicate, or why there is none.
pub fn provenance(reference: &str) -> Result<serde_json::Value, String> {
    let value = imagetools_inspect(&["--format", "{{json .Provenance}}"], reference)?;
    // One platform: `{"SLSA": ...}`; several: one such object per platform.
    let slsa = value
        .get("SLSA")
        .cloned()
        .or_else(|| value.as_object()?.values().find_map(|p| p.get("SLSA").cloned()));
    slsa.ok_or_else(|| "no provenance attestation beside it".to_owned())
}

/// The digest a registry gave `reference` (`name:tag`), from the image's `RepoDigests`:
/// the entry of its own repository. `None` when it was never pushed or pulled.
pub fn repo_digest(reference: &str) -> anyhow::Result<Option<String>> {
    let inspect = inspect_image(reference)?;
    let repository = reference.rsplit_once(':').map_or(reference, |(r, _)| r);
    let prefix = format!("{repository}@");
    Ok(inspect["RepoDigests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str()?.strip_prefix(&prefix).map(str::to_owned))
        .next())
}

/// `docker image inspect` of one image, as JSON.
pub fn inspect_image(reference: &str) -> anyhow::Result<serde_json::Value> {
    let ran = query(&["image", "inspect", reference], 30)?;
    if !ran.status.success() {
        anyhow::bail!("no image {reference} in the image store: {}", ran.stderr.trim());
    }
    let mut list: Vec<serde_json::Value> = serde_json::from_str(&ran.stdout)?;
    list.pop()
        .ok_or_else(|| anyhow::anyhow!("`docker image inspect {reference}` returned nothing"))
}

/// `docker run --detach --name NAME` of `reference` as the run user, with `service`'s
/// certificates ([`crate::certs::RunAs::prepare`] makes them) mounted read-only at
/// `/certs`, and `extra` flags before the image.
pub fn run_with_certs(name: &str, run: &crate::certs::RunAs, service: &str, extra: &[&str], reference: &str) -> Step {
    let mount = format!("{}:/certs:ro", run.service_dir(service).display());
    step(
        format!("start {reference}"),
        &[
            "run",
            "--detach",
            "--name",
            name,
            "--user",
            &run.user(),
            "--volume",
            &mount,
        ],
    )
    .args(has_start_interval().then(|| format!("--health-start-interval={START_INTERVAL}")))
    .args(extra.iter().copied())
    .arg(reference)
    .output(Output::Capture)
    .timeout(Duration::from_secs(60))
}

/// `docker run --rm` of `image` as the host user (the files it writes stay theirs), with
/// the checkout at `/src` and `/src/<workdir>` as its working directory, `HOME` in `/tmp`:
/// a tool of an image (uv, cargo, ruff, rustfmt) run on the checkout.
pub fn run_in_checkout(
    name: impl Into<String>,
    root: &std::path::Path,
    image: &str,
    workdir: &str,
    extra: &[String],
    command: &[String],
) -> Step {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let user = format!("{uid}:{gid}");
    let mount = format!("{}:/src", root.display());
    let workdir = format!("/src/{workdir}");
    step(
        name,
        &[
            "run",
            "--rm",
            "--user",
            &user,
            "--volume",
            &mount,
            "--env",
            "HOME=/tmp",
            "--workdir",
            &workdir,
        ],
    )
    .args(extra.iter().cloned())
    .arg(image)
    .args(command.iter().cloned())
    .output(Output::Inherit)
}

/// A container removed (`docker rm --force`) however the code that started it ends:
/// an error, an early return, a Ctrl-C.
pub struct Removed(pub String);

impl Drop for Removed {
    fn drop(&mut self) {
        // Ctrl-C may have asked every step to stop: the removal must still run.
        let stop = crate::plan::take_stop();
        let _ = step("remove", &["rm", "--force", "--volumes", &self.0])
            .output(Output::Capture)
            .timeout(Duration::from_secs(30))
            .run();
        crate::plan::restore_stop(stop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_by_side_answers_in_order_in_at_most_so_many_chunks() {
        let items: Vec<u32> = (0..10).collect();
        let chunks = side_by_side(&items, 4, 1, |c| Ok(c.to_vec())).unwrap();
        assert_eq!(chunks, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8], vec![9]]);
        // A short list stays one request.
        assert_eq!(side_by_side(&items, 4, 50, |c| Ok(c.len())).unwrap(), vec![10]);
        assert!(side_by_side(&[] as &[u32], 4, 1, |c| Ok(c.len())).unwrap().is_empty());
        let failed = side_by_side(&items, 4, 1, |c| {
            if c.contains(&4) {
                anyhow::bail!("no answer for 4")
            } else {
                Ok(())
            }
        });
        assert_eq!(failed.unwrap_err().to_string(), "no answer for 4");
    }

    #[test]
    fn names_are_as_containerd_keeps_them() {
        assert_eq!(full_name("debian:trixie-slim"), "docker.io/library/debian:trixie-slim");
        assert_eq!(full_name("team/debian:trixie"), "docker.io/team/debian:trixie");
        assert_eq!(
            full_name("localhost:5000/platform/debian:trixie-slim"),
            "localhost:5000/platform/debian:trixie-slim"
        );
        assert_eq!(
            full_name("registry.example.com/team/debian:trixie-slim"),
            "registry.example.com/team/debian:trixie-slim"
        );
    }

    #[test]
    fn references_are_matched_as_docker_shows_them() {
        assert_eq!(familiar("docker.io/library/debian:trixie-slim"), "debian:trixie-slim");
        assert_eq!(familiar("docker.io/team/gateway:0.1.0"), "team/gateway:0.1.0");
        assert_eq!(familiar("docker.io/library/team/x:1"), "library/team/x:1");
        assert_eq!(
            familiar("localhost:5000/platform/gateway:0.1.0-local"),
            "localhost:5000/platform/gateway:0.1.0-local"
        );
        assert_eq!(
            familiar("registry.example.com/team/agent:1"),
            "registry.example.com/team/agent:1"
        );
    }

    #[test]
    fn df_says_the_available_space() {
        let df = "Filesystem     1024-blocks     Used Available Capacity Mounted on\noverlay           61607856 17386960  44196412      29% /\n";
        let gib = available_gib(df).unwrap();
        assert!((gib - 42.15).abs() < 0.01, "{gib}");
        assert_eq!(available_gib("df: /: No such file"), None);
    }

    #[test]
    fn an_index_names_its_platform_images_not_its_attestations() {
        let raw = serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                { "digest": "sha256:a", "platform": { "os": "linux", "architecture": "amd64" } },
                { "digest": "sha256:b", "platform": { "os": "linux", "architecture": "arm64", "variant": "v8" } },
                { "digest": "sha256:c", "platform": { "os": "unknown", "architecture": "unknown" },
                  "annotations": { "vnd.docker.reference.type": "attestation-manifest" } },
            ],
        });
        assert_eq!(
            index_platforms(&raw),
            [
                ("linux/amd64".to_owned(), "sha256:a".to_owned()),
                ("linux/arm64/v8".to_owned(), "sha256:b".to_owned())
            ]
        );
        // A single image (no index) names none.
        assert!(index_platforms(&serde_json::json!({ "config": {}, "layers": [] })).is_empty());
    }

    #[test]
    fn versions_with_distribution_suffixes() {
        assert_eq!(parse_version("0.13.1+ds1"), Some((0, 13, 1)));
        assert_eq!(parse_version("v2.26.1-4"), Some((2, 26, 1)));
        assert_eq!(parse_version("v0.8+unknown"), Some((0, 8, 0)));
        assert_eq!(parse_version("devel"), None);
    }

    #[test]
    fn the_daemon_down_line_is_picked() {
        let stderr = "Client: ...\nCannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n";
        assert!(first_error_line(stderr).starts_with("Cannot connect to the Docker daemon"));
    }
}
