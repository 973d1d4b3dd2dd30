//! What the engine and its buildx builder can do: probed by real builds, once per engine
//! and builder, and remembered in the state directory (`engine.json`).
//!
//! Version strings are not trusted for this: distribution-built engines report BuildKit
//! `v0.0.0+unknown`. Each capability is a tiny bake of a `FROM scratch` image (nothing is
//! pulled, nothing runs, any platform builds), run the way Slipway's own builds run.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::docker::{self, BuilderInfo};
use crate::plan::Output;
use crate::project::Project;

/// One capability: whether the probe build passed, and if not the line that says why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
}

/// What the builder can do, each found by a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `contexts = { base = "target:base" }`: one bake builds bases and services.
    pub named_contexts: Probe,
    /// `cache-to`: a cache exported for other machines and runs.
    pub cache_export: Probe,
    /// `attest`: provenance (and SBOM) attached to the image.
    pub attestations: Probe,
    /// `--load` of an image for two platforms at once.
    pub multi_platform_load: Probe,
    /// `rewrite-timestamp` in the exporter: every file of the image stamped with
    /// `SOURCE_DATE_EPOCH`, so two builds of one commit give the same layers.
    pub rewrite_timestamps: Probe,
}

impl Capabilities {
    /// Each capability: its name, the probe, and what its absence costs the user.
    pub fn each(&self) -> [(&'static str, &Probe, &'static str); 5] {
        [
            (
                "named contexts",
                &self.named_contexts,
                "`build` bakes in layers, bases first (one bake per layer, bases loaded into the store between them)",
            ),
            (
                "cache export",
                &self.cache_export,
                "build.cache cannot export a cache: use a docker-container builder, or the containerd image store",
            ),
            (
                "attestations",
                &self.attestations,
                "images carry no provenance or SBOM attestation: use the containerd image store or a docker-container builder",
            ),
            (
                "multi-platform load",
                &self.multi_platform_load,
                "an image for several platforms can be pushed but not loaded into the local store",
            ),
            (
                "reproducible timestamps",
                &self.rewrite_timestamps,
                "two builds of one commit push other images (file times): use the containerd image store, or a docker-container builder (BuildKit 0.13 or later) in build.builder",
            ),
        ]
    }
}

/// The revision of the probes: a change to what a probe builds makes every recorded
/// answer stale (2: reproducible timestamps probed through an OCI export).
const PROBES: u32 = 2;

/// The engine, its builder, and what they can do: probed once, passed along.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Engine {
    pub version: String,
    pub store: crate::docker::Store,
    pub buildx: String,
    /// The builder's name (`build.builder`, or the current one).
    pub builder: Option<String>,
    pub driver: String,
    pub buildkit: String,
    /// The platforms its builder can build, its own first (`buildx inspect`): `local`
    /// and `dev` images are built for that one unless the manifest says otherwise.
    #[serde(default)]
    pub platforms: Vec<String>,
    pub capabilities: Capabilities,
}

impl Engine {
    /// The engine and builder as they are now; their capabilities from the state
    /// directory's record when the same engine, buildx and builder were probed before,
    /// else probed now (a few seconds, once) and recorded. `fresh` probes again whatever
    /// the record says (`doctor` does, so a probe that failed for a passing reason is
    /// never believed for good).
    pub fn probe(project: &Project, builder: Option<&str>, fresh: bool) -> Result<Engine> {
        Engine::probe_version(project, builder, fresh, docker::require_engine()?)
    }

    /// [`Engine::probe`] of an engine that answered with `version` (the engine of this
    /// thread's steps: `builders` asks each node on its own thread).
    pub fn probe_version(project: &Project, builder: Option<&str>, fresh: bool, version: String) -> Result<Engine> {
        // Three queries of ~0.1 s each, on every build: asked side by side.
        let (store, buildx, info) = std::thread::scope(|scope| {
            let store = scope.spawn(docker::carried(docker::image_store));
            let buildx = scope.spawn(docker::carried(docker::buildx_version));
            let info = docker::builder_info(builder);
            (
                store.join().unwrap_or(crate::docker::Store::Classic),
                buildx.join().ok().flatten(),
                info,
            )
        });
        let buildx = buildx.ok_or_else(|| {
            anyhow::anyhow!(
                "the buildx plugin is missing: install it (Debian: `apt-get install docker-buildx`), then run `cargo xtask doctor`"
            )
        })?;
        let BuilderInfo {
            driver,
            buildkit,
            platforms,
        } = info.ok_or_else(|| {
            anyhow::anyhow!("the buildx builder does not answer: run `docker buildx ls`, then `cargo xtask doctor`")
        })?;
        let key = format!(
            "probes {PROBES}: engine {version} ({}), buildx {buildx}, builder {} ({driver}, BuildKit {buildkit}), host {}",
            store.name(),
            builder.unwrap_or("current"),
            docker::host_label(),
        );
        let record_file = project.state_dir().join("engine.json");
        let mut record: BTreeMap<String, Capabilities> = fs::read_to_string(&record_file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let capabilities = match record.get(&key).filter(|_| !fresh) {
            Some(caps) => caps.clone(),
            None => {
                crate::ui::note(&format!("probing what the builder can do (once for {key})"));
                // A directory per probe: two commands, or two nodes in one, may probe at once.
                static PROBES_RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let n = PROBES_RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let dir = project.state_dir().join(format!("probe-{}-{n}", std::process::id()));
                let caps = probe_capabilities(&dir, builder)?;
                record.insert(key, caps.clone());
                if let Some(dir) = record_file.parent() {
                    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                }
                crate::fs::write_if_changed(&record_file, &(serde_json::to_string_pretty(&record)? + "\n"))?;
                caps
            }
        };
        Ok(Engine {
            version,
            store,
            buildx,
            builder: builder.map(str::to_owned),
            driver,
            buildkit,
            platforms,
            capabilities,
        })
    }

    /// What a plan may assume when the engine does not answer (a dry run or `--print` on
    /// a machine without one): a modern engine, whose builder can do everything, and the
    /// buildx plugin as the CLI reports it. Each capability says it was assumed.
    pub fn assumed(builder: Option<&str>, why: &str) -> Engine {
        let assumed = Probe {
            ok: true,
            why: format!("assumed: {why}"),
        };
        Engine {
            version: "unknown".into(),
            store: crate::docker::Store::Containerd,
            buildx: docker::buildx_version().unwrap_or_else(|| "unknown".into()),
            builder: builder.map(str::to_owned),
            driver: "unknown".into(),
            buildkit: "unknown".into(),
            platforms: vec![docker::local_platform()],
            capabilities: Capabilities {
                named_contexts: assumed.clone(),
                cache_export: assumed.clone(),
                attestations: assumed.clone(),
                multi_platform_load: assumed.clone(),
                rewrite_timestamps: assumed,
            },
        }
    }

    /// The platform the builder builds without emulation: the first it lists, else this
    /// machine's.
    pub fn native_platform(&self) -> String {
        self.platforms.first().cloned().unwrap_or_else(docker::local_platform)
    }

    /// Whether buildx checks bake's filesystem entitlements (`--allow fs.read=PATH`),
    /// which it does from 0.19 (a warning) and 0.20 (an error).
    pub fn bake_checks_fs(&self) -> bool {
        docker::parse_version(&self.buildx).is_some_and(|v| v >= (0, 19, 0))
    }
}

/// The probe's files: a Dockerfile whose `b` stage is built `FROM ${BASE}`, as the
/// project's own Dockerfiles are, and a bake file linking `b` to `a` by named context.
const PROBE_DOCKERFILE: &str =
    "ARG BASE=base\nFROM scratch AS a\nCOPY probe.txt /a.txt\n\nFROM ${BASE} AS b\nCOPY probe.txt /b.txt\n";

fn probe_capabilities(dir: &Path, builder: Option<&str>) -> Result<Capabilities> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(dir.join("Dockerfile"), PROBE_DOCKERFILE)?;
    fs::write(dir.join("probe.txt"), "slipway capability probe\n")?;
    let bake = serde_json::json!({
        "target": {
            "a": { "context": ".", "dockerfile": "Dockerfile", "target": "a" },
            "b": { "context": ".", "dockerfile": "Dockerfile", "target": "b", "contexts": { "base": "target:a" } },
        }
    });
    fs::write(dir.join("probe.json"), serde_json::to_string_pretty(&bake)?)?;
    let run = |what: &str, sets: &[&str], target: &str| -> Probe {
        let mut args = vec!["buildx", "bake"];
        if let Some(b) = builder {
            args.extend(["--builder", b]);
        }
        args.extend(["--file", "probe.json", "--progress", "plain"]);
        for set in sets {
            args.extend(["--set", set]);
        }
        args.push(target);
        let ran = docker::step(format!("probe {what}"), &args)
            .cwd(dir)
            .output(Output::Capture)
            .timeout(Duration::from_secs(120))
            .run_unchecked();
        match ran {
            Ok(ran) if ran.status.success() => Probe {
                ok: true,
                why: String::new(),
            },
            Ok(ran) => Probe {
                ok: false,
                why: why_failed(&ran.stderr),
            },
            Err(err) => Probe {
                ok: false,
                why: format!("{err:#}"),
            },
        }
    };
    // The five builds side by side, each writing its own output (a fresh clone's first
    // `--dry-run build`, probes included: 2.0 s one after the other, 1.1 s together).
    let tag = format!("slipway-probe:{}", std::process::id());
    let archive = dir.join("out-epoch.tar");
    let archive_output = format!("a.output=type=oci,dest={},rewrite-timestamp=true", archive.display());
    let load_output = format!("a.output=type=docker,name={tag}");
    let run = &run;
    let (named_contexts, cache_export, mut attestations, multi_platform_load, mut rewrite_timestamps) =
        std::thread::scope(|scope| {
            let spawn = |what: &'static str, sets: &[&str], target: &'static str| {
                let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
                scope.spawn(docker::carried(move || {
                    run(what, &sets.iter().map(String::as_str).collect::<Vec<_>>(), target)
                }))
            };
            let named = spawn("named contexts", &["b.output=type=local,dest=out-contexts"], "b");
            let cache = spawn(
                "cache export",
                &[
                    "a.output=type=local,dest=out-cache",
                    "a.cache-to=type=local,dest=cache,mode=max",
                ],
                "a",
            );
            let attest = spawn(
                "attestations",
                &[
                    "a.output=type=local,dest=out-attest",
                    "a.attest=type=provenance,mode=min",
                ],
                "a",
            );
            let load = spawn(
                "multi-platform load",
                &["a.platform=linux/amd64,linux/arm64", &load_output],
                "a",
            );
            // Exported with every file stamped SOURCE_DATE_EPOCH (0 here), as a
            // reproducible push exports (an OCI archive, which the engine then loads and
            // pushes): the probe's file must come back from the archive with that time,
            // or the option was ignored. (The image exporter of the docker driver on the
            // containerd store refuses the option, as it unpacks what it stores,
            // moby/buildkit#4230; BuildKit 0.8 predates it.)
            let epoch = spawn(
                "reproducible timestamps",
                &["a.args.SOURCE_DATE_EPOCH=0", &archive_output],
                "a",
            );
            let joined = |h: std::thread::ScopedJoinHandle<'_, Probe>| {
                h.join().unwrap_or_else(|_| Probe {
                    ok: false,
                    why: "the probe's thread panicked".into(),
                })
            };
            (
                joined(named),
                joined(cache),
                joined(attest),
                joined(load),
                joined(epoch),
            )
        });
    // An engine that ignores `attest` builds without error: the statement must be there.
    if attestations.ok && !dir.join("out-attest/provenance.json").exists() {
        attestations = Probe {
            ok: false,
            why: "the build wrote no provenance.json: the builder ignores `attest`".into(),
        };
    }
    if multi_platform_load.ok {
        let _ = docker::step("remove the probe image", &["image", "rm", &tag])
            .output(Output::Capture)
            .run_unchecked();
    }
    if rewrite_timestamps.ok {
        match file_time(&archive, "a.txt") {
            Ok(0) => {}
            Ok(time) => {
                rewrite_timestamps = Probe {
                    ok: false,
                    why: format!("the builder ignores rewrite-timestamp (a file came back stamped {time}, not 0)"),
                }
            }
            Err(err) => {
                rewrite_timestamps = Probe {
                    ok: false,
                    why: format!("{err:#}"),
                }
            }
        }
    }
    let _ = fs::remove_dir_all(dir);
    Ok(Capabilities {
        named_contexts,
        cache_export,
        attestations,
        multi_platform_load,
        rewrite_timestamps,
    })
}

/// The modification time of `path` in the layers of a `docker save` archive (either
/// layout; gzip-compressed or plain layers).
fn file_time(archive: &Path, path: &str) -> Result<u64> {
    let file = fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    for blob in tar::Archive::new(file).entries()? {
        let mut blob = blob?;
        let name = blob.path()?.to_string_lossy().into_owned();
        if !(name.starts_with("blobs/") || name.ends_with("/layer.tar")) {
            continue;
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut blob, &mut bytes)?;
        let layer: Box<dyn std::io::Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::GzDecoder::new(&bytes[..]))
        } else {
            Box::new(&bytes[..])
        };
        let mut layer = tar::Archive::new(layer);
        let Ok(entries) = layer.entries() else {
            continue;
        };
        for entry in entries.flatten() {
            if entry
                .path()
                .is_ok_and(|p| p.to_string_lossy().trim_start_matches("./") == path)
            {
                return Ok(entry.header().mtime()?);
            }
        }
    }
    anyhow::bail!("{path} is in no layer of {}", archive.display())
}

/// The line of a failed bake's output that says why.
fn why_failed(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("ERROR") || l.starts_with("error"))
        .or(lines.last())
        .map(|l| l.trim_start_matches("ERROR:").trim().to_owned())
        .unwrap_or_else(|| "the probe build failed".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_bakes_error_line() {
        let stderr = "#1 [internal] load local bake definitions\n#1 DONE 0.0s\n\
            ERROR: Cache export is not supported for the docker driver.\nSwitch to a different driver\n";
        assert_eq!(
            why_failed(stderr),
            "Cache export is not supported for the docker driver."
        );
        assert_eq!(why_failed(""), "the probe build failed");
    }
}
