//! Every command and flag of `cargo xtask`, in one place. The `///` lines are the help
//! text; `docs/cli.md` is generated from them (`cargo xtask codegen`).

#![allow(unreachable_pub)]

use std::path::PathBuf;

use crate::manifest::{Kind, Target};

/// What `deps` does to a service's dependencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepsAction {
    Add,
    Remove,
    Lock,
    Upgrade,
}

impl std::str::FromStr for DepsAction {
    type Err = String;

    fn from_str(text: &str) -> Result<DepsAction, String> {
        match text {
            "add" => Ok(DepsAction::Add),
            "remove" => Ok(DepsAction::Remove),
            "lock" => Ok(DepsAction::Lock),
            "upgrade" => Ok(DepsAction::Upgrade),
            _ => Err(format!("unknown action `{text}`: use add, remove, lock or upgrade")),
        }
    }
}

xflags::xflags! {
    src "./src/flags.rs"

    /// Slipway: typed tasks around Docker for this service monorepo.
    ///
    /// Start with `cargo xtask dev` (the local stack) and `cargo xtask test`.
    /// Every command takes --help. NO_COLOR turns colour off.
    cmd xtask {
        /// Print the steps (programs, arguments, environment with secrets masked)
        /// and run nothing.
        optional --dry-run

        /// Check this machine: Docker engine, buildx, compose, mmdebstrap,
        /// certificates, free disk, the stack's ports. Each problem says how to fix it.
        cmd doctor {
            /// Print the checks as JSON.
            optional --json
        }

        /// Run every test: the workspace's, and those that need the Docker engine.
        /// Ends with one line `N passed, N failed`.
        cmd test {
            /// Run only the tests that need no Docker engine (they are skipped, and said so).
            optional --no-engine
        }

        /// Build images with `docker buildx bake`, from a bake definition generated from
        /// slipway.toml: the bases (with the Root CA baked in), then the services.
        cmd build {
            /// Services or bases to build (default: every service, and the bases it needs).
            repeated names: String
            /// The stage to build: local, dev or prod (default: prod).
            optional --target target: Target
            /// Show what bake resolves from the generated definition; build nothing.
            optional --print
            /// Push the images to the registry instead of loading them. Platforms that
            /// nodes of build.builders declare are built there, each node's images
            /// pushed by digest and joined into one index under the tags.
            optional --push
            /// Platforms to build for, `os/arch[,os/arch]` (default: build.platforms).
            optional --platform platform: String
            /// Build every step again, reusing no cached layer (the root image is kept).
            optional --no-cache
            /// Refresh the bases first: the root image pulled or bootstrapped anew
            /// (`bootstrap --refresh`, recorded in bases.lock), and the bases built again
            /// with no cached layer, so their packages are the mirror's current ones.
            optional --pull
            /// Build on the builder node NAME of build.builders (its engine over TCP with
            /// mutual TLS, or its docker context) instead of this machine's engine.
            optional --builder name: String
        }

        /// List this machine's engine and every builder node of build.builders, asked
        /// side by side: reachable or why not, engine and image store, BuildKit and what
        /// it can do, platforms (native and emulated), free disk.
        cmd builders {
            /// Print them as JSON.
            optional --json
        }

        /// Make the Debian root image (`debian:<release>-slim`) every base starts from:
        /// pulled where a registry answers, else built from a Debian mirror with
        /// mmdebstrap and imported. The first one is recorded in bases.lock.
        cmd bootstrap {
            /// Make it anew even when the image store has it, and record it in
            /// bases.lock (its digest, or the mirror's snapshot and package versions).
            optional --refresh
            /// Push it to the registry debian.image names, and pin its digest in
            /// bases.lock: other machines pull it instead of bootstrapping their own.
            optional --push
        }

        /// Check the image policy: Dockerfile rules, the built images' configuration,
        /// and every layer searched for keys and secrets.
        cmd lint {
            /// Services to check (default: every service).
            repeated names: String
            /// The stage to check: local, dev or prod (default: prod).
            optional --target target: Target
        }

        /// Bring the local stack up (the main job for a new contributor): certificates,
        /// images, `docker compose up`, then wait until every service is healthy and say
        /// where each listens. In the foreground it streams the logs; Ctrl-C stops it.
        cmd dev {
            /// local (default: source mounted, hot reload, debugger), dev or prod.
            optional --target target: Target
            /// Return once every service is healthy, leaving the stack running.
            optional --detach
            /// Seconds to wait for every service to be healthy (default 120).
            optional --timeout secs: u64
            /// Print the target's compose file as `dev` would run it (`docker compose
            /// config`, with the variables `dev` sets) and start nothing.
            optional --config
        }

        /// Stop the stack and remove its containers and network.
        cmd down {
            /// Remove its volumes too.
            optional --volumes
        }

        /// Show the stack's logs.
        cmd logs {
            /// One service's logs (default: every service's).
            optional service: String
            /// Keep streaming new lines.
            optional --follow
        }

        /// Show the stack's services: state, health and ports.
        cmd ps {
            /// Print them as JSON.
            optional --json
        }

        /// Add a service from the project's own templates (the sample services): its
        /// directory, Dockerfile, manifest entry, compose entries, certificates and, with
        /// --calls, the mTLS pairing. Nothing else to edit; `remove` takes it out again.
        cmd new {
            /// The service's name: a DNS label that is also a crate or module name
            /// (lowercase letters and digits; `-` inside a Rust service's name).
            required name: String
            /// rust (from the gateway) or python (from the agent).
            required --kind kind: Kind
            /// The port it listens on (default: one above the highest port in use).
            optional --port port: u16
            /// A service it calls over mTLS (its UPSTREAM_URL, and a client certificate).
            optional --calls service: String
        }

        /// Remove a service: its directory, manifest entry, mTLS pairings, compose
        /// entries, workspace membership, its certificates and its images.
        cmd remove {
            /// The service to remove.
            required name: String
        }

        /// Check services as CI does, inside each one's local image: formatting and lints
        /// (ruff and mypy; rustfmt and clippy with warnings denied), then its tests
        /// (pytest; cargo test). One line per service, then the count.
        cmd check {
            /// Services to check (default: every service).
            repeated names: String
        }

        /// Change a service's dependencies with the tools in its builder image (uv or
        /// cargo) against this checkout: no Python, uv or cargo needed on the host. The
        /// manifest and lock files change in place.
        cmd deps {
            /// The service whose dependencies change.
            required service: String
            /// add, remove, lock (the lock file again, from the manifest) or upgrade
            /// (every package, or those named).
            required action: DepsAction
            /// Packages (`starlette==1.10.0`, `serde@1`), for add, remove and upgrade.
            repeated packages: String
            /// The dependency is a development one (uv's dev group; cargo's
            /// dev-dependencies).
            optional --dev
        }

        /// Continuous integration: the jobs, each run here exactly as CI runs it.
        cmd ci {
            /// Run CI jobs as the workflow does: build the job's image (target and
            /// platform), test it in the image, check the image policy, scan it where
            /// Trivy is installed, then push and sign when asked. With no JOB, every job.
            default cmd run {
                /// Jobs of `cargo xtask ci matrix`, such as `gateway-prod-linux-amd64`.
                repeated jobs: String
                /// With no JOB: only the jobs whose images changed since this revision.
                optional --since rev: String
                /// Push the job's image (`release --push`). An image of several platforms
                /// is pushed by digest alone, its platform's, and recorded in
                /// .slipway/ci/pushed/ for `ci join`.
                optional --push
                /// Sign what was pushed, by digest (`release --sign`).
                optional --sign
                /// The signing key, as `release --key` takes it (`env://VAR`, a file, a
                /// KMS URI).
                optional --key key: String
                /// Push even where no passing scan of the image is on record.
                optional --allow-unscanned
            }

            /// The jobs (service x target x platform) as a GitHub Actions matrix.
            cmd matrix {
                /// Only the images whose inputs changed since this revision (from its
                /// merge base with HEAD); a docs-only change gives no job.
                optional --since rev: String
                /// Print `{"include": [...]}` for a workflow's `strategy.matrix`.
                optional --json
                /// Only the jobs of this target (local, dev or prod).
                optional --target target: Target
                /// One prod job per image (the first of its platforms): the one that
                /// pushes and signs an image of one platform, and the one each image's
                /// join and verify run for.
                optional --pushing
            }

            /// Join what each platform's job pushed by digest (.slipway/ci/pushed/) into
            /// one index per service under its tags, then sign it and every platform's
            /// image, and attest the SBOM and provenance, as `release --push` does.
            cmd join {
                /// Services to join (default: every one with a pushed record).
                repeated services: String
                /// Sign the joined index and each platform's image, by digest.
                optional --sign
                /// The signing key, as `release --key` takes it.
                optional --key key: String
            }

            /// Print the GitHub Actions workflow this manifest gives (what `cargo xtask
            /// codegen` writes to .github/workflows/ci.yml).
            cmd workflow {}
        }

        /// Scan the built images with Trivy: Critical or High blocks the push, Medium
        /// warns, Low is recorded (seed 002's policy).
        cmd scan {
            /// Services to scan (default: every service).
            repeated names: String
            /// The stage to scan: local, dev or prod (default: prod).
            optional --target target: Target
            /// Judge this Trivy JSON report instead of running Trivy.
            optional --report file: PathBuf
        }

        /// Write a CycloneDX SBOM of each service's image, read from the image itself:
        /// Debian packages, Python distributions, the Rust crates cargo-auditable
        /// embedded in its binaries (to .<brand>/sbom/NAME-TARGET.cdx.json).
        cmd sbom {
            /// Services to describe (default: every service).
            repeated names: String
            /// The stage to describe: local, dev or prod (default: prod).
            optional --target target: Target
            /// Write the SBOM here instead (one service); `-` prints it.
            optional --output file: PathBuf
        }

        /// Release the service images: compute their tags (seed 002), push them, then
        /// sign each pushed image by the digest bake recorded, never by tag (cosign).
        /// Refuses an image without a passing scan of that very build.
        cmd release {
            /// Services to release (default: every service).
            repeated names: String
            /// The stage to release: local, dev or prod (default: prod).
            optional --target target: Target
            /// Push the images (without it: show the tags and checks, push nothing).
            optional --push
            /// Sign every pushed image with cosign (needs --push).
            optional --sign
            /// The signing key: a file, `env://VAR` or a KMS URI (default: release.key,
            /// then COSIGN_PRIVATE_KEY, then keyless where an OIDC token is there).
            optional --key key: String
            /// Push images that have no passing scan on record (Trivy not installed).
            /// A scan that found Critical or High still blocks.
            optional --allow-unscanned
        }

        /// Verify the cosign signature of images before deploying them; fails on an
        /// unsigned image, or one whose tag now points at something else.
        cmd verify {
            /// Image references, or service names (default: every service's prod image).
            repeated images: String
            /// The public key: a file, `env://VAR` or a KMS URI (default:
            /// release.public-key, then COSIGN_PUBLIC_KEY, then keyless by
            /// release.identity and release.issuer).
            optional --key key: String
            /// Keyless: a regular expression the signer's identity must match (for
            /// GitHub Actions, the workflow's URL), in place of release.identity.
            optional --identity regexp: String
            /// Keyless: the issuer of the signer's OIDC token, in place of release.issuer.
            optional --issuer url: String
            /// Print the verified digests as JSON.
            optional --json
            /// Accept images without a provenance attestation (pushed by a builder that
            /// attaches none, such as Docker 20.10's classic image store).
            optional --no-provenance
        }

        /// Apply the retention policy ([retention] in slipway.toml) to each service's
        /// repository in the registry: the newest versions, latest, recent builds of live
        /// branches stay; the rest, with their signatures, is deleted by digest. An image
        /// a kept tag names is never deleted. Run with --dry-run first.
        cmd prune {
            /// Services whose repositories to prune (default: every service).
            repeated names: String
            /// Print every verdict as JSON.
            optional --json
        }

        /// Measure every target of the spec on this machine, each beside its comparison,
        /// and write docs/benchmarks.md and docs/benchmarks.json. No figure fails it.
        cmd bench {
            /// Fewer runs, and no cold build (which clears the images and the build cache).
            optional --quick
            /// Print the figures as JSON.
            optional --json
            /// Also measure the no-op and the cold build on a second engine, side by side
            /// in the same run: its DOCKER_HOST (`unix:///run/legacy.sock`).
            optional --also-on host: String
            /// Measure one group only and print it (stack, load, prod, cold, xtask, scale,
            /// or nodes with `--builder`); a full run writes docs/benchmarks.md.
            optional --only group: String
            /// With `--only nodes`: the builder node (`build.builders.NAME`) to measure
            /// the registry cache on. Clears that node's build cache and project images.
            optional --builder name: String
        }

        /// Make what is missing under `.<brand>/certs/`: the Root CA, a server
        /// certificate per service, the mTLS client certificates. Valid files are kept.
        cmd certs {
            /// Make what is missing; keep what is valid.
            default cmd make {
                /// Reissue certificates: `leaf` (server and client), or `all` (a new Root CA too).
                optional --rotate what: String
            }

            /// Show each certificate: subject, SANs, usages, issuer, expiry, chain, key.
            /// Exits non-zero when something is expired, mismatched or about to expire.
            cmd status {
                /// Print the report as JSON.
                optional --json
            }
        }

        /// Regenerate the files generated from code (docs/cli.md).
        cmd codegen {
            /// Fail, writing nothing, when a generated file is out of date.
            optional --check
        }
    }
}

// generated start
// The following code is generated by `xflags` macro.
// Run `env UPDATE_XFLAGS=1 cargo build` to regenerate.
#[derive(Debug)]
pub struct Xtask {
    pub dry_run: bool,
    pub subcommand: XtaskCmd,
}

#[derive(Debug)]
pub enum XtaskCmd {
    Doctor(Doctor),
    Test(Test),
    Build(Build),
    Builders(Builders),
    Bootstrap(Bootstrap),
    Lint(Lint),
    Dev(Dev),
    Down(Down),
    Logs(Logs),
    Ps(Ps),
    New(New),
    Remove(Remove),
    Check(Check),
    Deps(Deps),
    Ci(Ci),
    Scan(Scan),
    Sbom(Sbom),
    Release(Release),
    Verify(Verify),
    Prune(Prune),
    Bench(Bench),
    Certs(Certs),
    Codegen(Codegen),
}

#[derive(Debug)]
pub struct Doctor {
    pub json: bool,
}

#[derive(Debug)]
pub struct Test {
    pub no_engine: bool,
}

#[derive(Debug)]
pub struct Build {
    pub names: Vec<String>,

    pub target: Option<Target>,
    pub print: bool,
    pub push: bool,
    pub platform: Option<String>,
    pub no_cache: bool,
    pub pull: bool,
    pub builder: Option<String>,
}

#[derive(Debug)]
pub struct Builders {
    pub json: bool,
}

#[derive(Debug)]
pub struct Bootstrap {
    pub refresh: bool,
    pub push: bool,
}

#[derive(Debug)]
pub struct Lint {
    pub names: Vec<String>,

    pub target: Option<Target>,
}

#[derive(Debug)]
pub struct Dev {
    pub target: Option<Target>,
    pub detach: bool,
    pub timeout: Option<u64>,
    pub config: bool,
}

#[derive(Debug)]
pub struct Down {
    pub volumes: bool,
}

#[derive(Debug)]
pub struct Logs {
    pub service: Option<String>,

    pub follow: bool,
}

#[derive(Debug)]
pub struct Ps {
    pub json: bool,
}

#[derive(Debug)]
pub struct New {
    pub name: String,

    pub kind: Kind,
    pub port: Option<u16>,
    pub calls: Option<String>,
}

#[derive(Debug)]
pub struct Remove {
    pub name: String,
}

#[derive(Debug)]
pub struct Check {
    pub names: Vec<String>,
}

#[derive(Debug)]
pub struct Deps {
    pub service: String,
    pub action: DepsAction,
    pub packages: Vec<String>,

    pub dev: bool,
}

#[derive(Debug)]
pub struct Ci {
    pub subcommand: CiCmd,
}

#[derive(Debug)]
pub enum CiCmd {
    Run(Run),
    Matrix(Matrix),
    Join(Join),
    Workflow(Workflow),
}

#[derive(Debug)]
pub struct Run {
    pub jobs: Vec<String>,

    pub since: Option<String>,
    pub push: bool,
    pub sign: bool,
    pub key: Option<String>,
    pub allow_unscanned: bool,
}

#[derive(Debug)]
pub struct Matrix {
    pub since: Option<String>,
    pub json: bool,
    pub target: Option<Target>,
    pub pushing: bool,
}

#[derive(Debug)]
pub struct Join {
    pub services: Vec<String>,

    pub sign: bool,
    pub key: Option<String>,
}

#[derive(Debug)]
pub struct Workflow;

#[derive(Debug)]
pub struct Scan {
    pub names: Vec<String>,

    pub target: Option<Target>,
    pub report: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Sbom {
    pub names: Vec<String>,

    pub target: Option<Target>,
    pub output: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Release {
    pub names: Vec<String>,

    pub target: Option<Target>,
    pub push: bool,
    pub sign: bool,
    pub key: Option<String>,
    pub allow_unscanned: bool,
}

#[derive(Debug)]
pub struct Verify {
    pub images: Vec<String>,

    pub key: Option<String>,
    pub identity: Option<String>,
    pub issuer: Option<String>,
    pub json: bool,
    pub no_provenance: bool,
}

#[derive(Debug)]
pub struct Prune {
    pub names: Vec<String>,

    pub json: bool,
}

#[derive(Debug)]
pub struct Bench {
    pub quick: bool,
    pub json: bool,
    pub also_on: Option<String>,
    pub only: Option<String>,
    pub builder: Option<String>,
}

#[derive(Debug)]
pub struct Certs {
    pub subcommand: CertsCmd,
}

#[derive(Debug)]
pub enum CertsCmd {
    Make(Make),
    Status(Status),
}

#[derive(Debug)]
pub struct Make {
    pub rotate: Option<String>,
}

#[derive(Debug)]
pub struct Status {
    pub json: bool,
}

#[derive(Debug)]
pub struct Codegen {
    pub check: bool,
}

impl Xtask {
    #[allow(dead_code)]
    pub fn from_env_or_exit() -> Self {
        Self::from_env_or_exit_()
    }

    #[allow(dead_code)]
    pub fn from_env() -> xflags::Result<Self> {
        Self::from_env_()
    }

    #[allow(dead_code)]
    pub fn from_vec(args: Vec<std::ffi::OsString>) -> xflags::Result<Self> {
        Self::from_vec_(args)
    }
}
// generated end
