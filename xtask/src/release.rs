//! `cargo xtask release [NAME...] [--target T] [--push] [--sign] [--key K]
//! [--allow-unscanned]`: the release of the service images.
//!
//! 1. Build them (a no-op when they are up to date) and show the tags a push gives
//!    them (`git::push_tags`): `{version}`, `{version}-{sha7}` and `latest` from main,
//!    `{branch}-{sha7}` from any other branch.
//! 2. Check that each has a passing scan of *this build* on record (`scan` keeps the
//!    image id it judged). Critical or High blocks; no scan blocks unless
//!    `--allow-unscanned`. Without `--push`, stop here.
//! 3. Push with bake (`build --push`), and take each image's digest from bake's metadata
//!    file; the pushed configuration must be the image that was scanned. For platforms
//!    the builder nodes declare, each node builds, loads and pushes its share by digest,
//!    and the push joins them into one index (`build::distribute`).
//! 4. Write each pushed image's SBOM (`sbom.rs`, CycloneDX, read from the image that was
//!    scanned and pushed) to `.<brand>/sbom/`.
//! 5. With `--sign`, sign every pushed image as `name@sha256:...` (never a tag) with
//!    cosign: a key (file, `env://VAR`, KMS URI) or keyless where an OIDC token is there;
//!    and attest its SBOM by the same digest (`cosign attest --type cyclonedx`). The push
//!    itself carries BuildKit's provenance where the builder attaches it.
//!    Everything cosign needs is checked before anything is pushed.
//!
//! What was released is kept in `.<brand>/release/<target>.json`. [`Cosign`] is shared
//! with `verify`.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::build::{self, BuildPlan, Facts, distribute};
use crate::cosign::{self, Cosign};
use crate::scan::{self, Record};
use crate::{bake, flags, project::Project, ui};

impl flags::Release {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let target = self.target.unwrap_or(crate::manifest::Target::Prod);
        release(
            project,
            &Options {
                names: self.names,
                target,
                push: self.push,
                sign: self.sign,
                key: self.key,
                allow_unscanned: self.allow_unscanned,
            },
            dry_run,
        )?;
        Ok(())
    }
}

/// What `release` is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub names: Vec<String>,
    pub target: crate::manifest::Target,
    pub push: bool,
    pub sign: bool,
    pub key: Option<String>,
    pub allow_unscanned: bool,
}

/// One pushed image.
#[derive(Debug, Clone, Serialize)]
pub struct Released {
    /// `{registry}/{project}/{service}`: the record keeps the last release of each.
    pub repository: String,
    /// `{registry}/{project}/{service}@sha256:...`: what was signed, and what to deploy.
    pub image: String,
    pub tags: Vec<String>,
    pub signed: bool,
    /// For an image of several platforms (an image index): each platform's image,
    /// `os/arch` and `name@sha256:...`, signed by its own digest too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<(String, String)>,
    /// The SBOM written for it (`.<brand>/sbom/...`).
    pub sbom: String,
    /// For an image index: each platform's SBOM (`os/arch` and its file), attested by
    /// that platform's digest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platform_sboms: Vec<(String, String)>,
    /// Whether the SBOM was attested (signed, stored beside the image) by its digest.
    pub attested: bool,
    /// BuildKit's provenance, as written for its attestation (`.<brand>/provenance/...`),
    /// where the builder attached one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<String>,
    /// Whether that provenance was attested (signed) by the same digest.
    pub provenance_attested: bool,
}

/// The predicate type of the SBOM attestation (cosign's name for CycloneDX).
pub const SBOM_TYPE: &str = "cyclonedx";

/// A release, planned from the build's facts: the build that loads the images (to check
/// their scans), with `--push` the build that pushes them, and the signatures of what the
/// push reports. Pure: [`plan`] asks nothing of the engine.
#[derive(Debug, Clone)]
pub struct ReleasePlan {
    /// The images asked for.
    /// The images asked for, each with its service.
    pub wanted: Vec<(String, bake::Image)>,
    pub target: crate::manifest::Target,
    pub load: BuildPlan,
    pub push: Option<BuildPlan>,
    pub cosign: Option<Cosign>,
    /// Whether the push carries BuildKit's provenance, which signing attests too.
    pub provenance: bool,
    /// Whether the images are for several platforms: each is then an image index, signed
    /// with every platform's image (`cosign sign --recursive`).
    pub multi_platform: bool,
}

impl ReleasePlan {
    /// What a dry run shows, in order.
    pub fn render(&self, project: &Project) -> String {
        let mut out = String::from("# build (load), then check each image's scan verdict\n");
        out.push_str(&self.load.render(project));
        if let Some(push) = &self.push {
            out.push_str("# push\n");
            out.push_str(&push.render(project));
        }
        if let Some(c) = &self.cosign {
            out.push_str(
                "# sign each pushed image by the digest in bake's metadata file, and attest its SBOM by that digest\n",
            );
            for (service, image) in &self.wanted {
                let pushed = image.at("sha256:<digest>");
                let sbom = crate::sbom::default_file(project, service, self.target);
                out.push_str(&format!(
                    "{}\n",
                    c.sign_step(&pushed, self.multi_platform).command_line()
                ));
                out.push_str(&format!(
                    "{}\n",
                    c.attest_step(&pushed, SBOM_TYPE, &sbom).command_line()
                ));
                if self.multi_platform {
                    out.push_str(
                        "# and each platform's image (the index's manifests): pulled here by its digest, its own SBOM read and attested by that digest\n",
                    );
                }
                if self.provenance {
                    let slsa = provenance_file(project, service, self.target);
                    out.push_str("# BuildKit's provenance of it, read from the registry, attested by that digest\n");
                    out.push_str(&format!(
                        "{}\n",
                        c.attest_step(&pushed, "slsaprovenance", &slsa).command_line()
                    ));
                }
            }
        }
        out
    }
}

/// Where the provenance of service `name`'s pushed image is written for its attestation.
pub fn provenance_file(project: &Project, name: &str, target: crate::manifest::Target) -> std::path::PathBuf {
    project
        .state_dir()
        .join("provenance")
        .join(format!("{name}-{target}.slsa.json"))
}

/// Plan the release `o` from the facts, signing with `cosign` (already checked).
pub fn plan(project: &Project, facts: &Facts, o: &Options, cosign: Option<Cosign>) -> Result<ReleasePlan> {
    let m = &project.manifest;
    let names = m.service_names(&o.names)?;
    let request = build::Request {
        names: names.clone(),
        target: o.target,
        platforms: None,
        push: false,
        no_cache: false,
        share: None,
    };
    let load = build::plan(project, facts, &request)?;
    let push = if o.push {
        Some(build::plan(project, facts, &build::Request { push: true, ..request })?)
    } else {
        None
    };
    Ok(ReleasePlan {
        wanted: names
            .iter()
            .map(|n| (n.clone(), bake::service_image(m, n, o.target)))
            .collect(),
        target: o.target,
        cosign,
        provenance: o.push && facts.engine.capabilities.attestations.ok,
        multi_platform: load
            .definition
            .target
            .values()
            .any(|t| t.service.is_some() && t.platforms.len() > 1),
        load,
        push,
    })
}

/// Build, check, push and sign (or, with `dry_run`, print the plan); returns what was
/// pushed (nothing without `--push`).
pub fn release(project: &Project, o: &Options, dry_run: bool) -> Result<Vec<Released>> {
    let m = &project.manifest;
    // What the user typed, first: an unknown service is named before anything is asked.
    m.service_names(&o.names)?;
    if o.sign && !o.push {
        bail!(
            "--sign signs the digests that --push pushes: add --push (an image is never signed by tag, which can move)"
        );
    }
    let cosign = cosign::asked(project, o.sign, o.key.as_deref())?;
    if cosign.is_some() {
        cosign::require_installed("release")?;
    }
    // A push for platforms the builder nodes declare: each node builds, and pushes, its
    // share; the push joins them (`build::distribute`).
    let spread = o.push.then(|| distribute::spread(m, o.target, None)).flatten();
    if spread.is_some() {
        distribute::require_skopeo()?;
    }
    let facts = Facts::probe(project, dry_run)?;
    let mut plan = plan(project, &facts, o, cosign)?;
    let names: Vec<String> = plan.wanted.iter().map(|(n, _)| n.clone()).collect();
    if let Some(shares) = &spread {
        // What each node's share is: what runs instead of the one-node push.
        plan.push = None;
        if dry_run {
            print!("{}", plan.render(project));
            println!("# push: each node its share, by digest, then one index per image");
            distribute::show_push(project, shares, &names, o.target, false)?;
            return Ok(Vec::new());
        }
    }
    if dry_run {
        print!("{}", plan.render(project));
        return Ok(Vec::new());
    }
    let service_of = |image: &bake::Image| {
        plan.wanted
            .iter()
            .find(|(_, wanted)| wanted == image)
            .map(|(service, _)| service.as_str())
    };

    ui::step(&format!("build the {} images (what changed)", o.target));
    let built = match &spread {
        None => build::run(project, &facts, &plan.load, false)?,
        Some(shares) => {
            let _lock = project.lock("build")?;
            distribute::on_shares(project, shares, |share| {
                distribute::build_share(project, share, &names, o.target, false, false)
            })?
            .concat()
        }
    };
    let mut ids = BTreeMap::new();
    let (mut unscanned, mut blocked) = (Vec::new(), Vec::new());
    for image in built.iter().filter(|b| service_of(&b.image).is_some()) {
        let reference = image.image.reference();
        // What a push gives it (release tags from main only), not every local tag.
        let pushed_as = plan
            .load
            .definition
            .target
            .values()
            .find(|t| t.image == image.image)
            .map_or(&image.tags, |t| &t.push_tag_names);
        ui::note(&format!("{}: tags {}", image.image.repository, pushed_as.join(", ")));
        match scan::record(project, &reference, Some(&image.id)) {
            Record::Passed => {}
            Record::Blocked(n) => blocked.push(format!("{reference} ({n} critical or high)")),
            Record::Unscanned(why) => unscanned.push(format!("{reference} ({why})")),
        }
        // What identifies this image in the registry: its configuration's digest (on the
        // classic store that is also its id). (Spread over nodes, each node checks that
        // its share's archive is what it loaded: the pushed bytes are the archive's.)
        if spread.is_some() {
            continue;
        }
        ids.insert(
            reference,
            image.config_digest.clone().unwrap_or_else(|| image.id.clone()),
        );
    }
    if !blocked.is_empty() {
        bail!(
            "the vulnerability policy blocks the push of {}: fix them and scan again (`cargo xtask scan`)",
            blocked.join(", ")
        );
    }
    if !unscanned.is_empty() {
        let list = unscanned.join(", ");
        if !o.allow_unscanned {
            bail!(
                "no passing scan of {list}: run `cargo xtask scan` (Trivy) first, or judge a report with \
                 `cargo xtask scan NAME --report FILE`; --allow-unscanned pushes them anyway"
            );
        }
        ui::warn(&format!("--allow-unscanned: pushing without a scan: {list}"));
    }
    let pushed = match (&plan.push, &spread) {
        (_, Some(shares)) => {
            ui::step(&format!("push to {} from every node", m.registry.get_ref()));
            distribute::push(project, shares, &names, o.target, false)?
        }
        (Some(push), None) => {
            ui::step(&format!("push to {}", m.registry.get_ref()));
            build::run(project, &facts, push, false)?
        }
        (None, None) => {
            ui::note("nothing pushed: `--push` pushes these tags, `--push --sign` signs them too");
            return Ok(Vec::new());
        }
    };
    let read_sbom = |service: &str, image: &bake::Image| match &spread {
        // Read where the image is: the first node's store (this machine's, where it has
        // a share).
        Some(shares) => {
            distribute::on_shares(project, &shares[..1], |_| crate::sbom::make(service, image)).map(|mut s| s.remove(0))
        }
        None => crate::sbom::make(service, image),
    };
    finish(project, o, &plan, &pushed, &ids, &read_sbom)
}

/// After the push: each pushed image's SBOM (read by `read_sbom`, from a store that has
/// the image), with `--sign` its signature and attestations by digest, and the record.
/// `ids` are the configurations that were checked and scanned, by reference: a pushed
/// image with another one is refused.
pub fn finish(
    project: &Project,
    o: &Options,
    plan: &ReleasePlan,
    pushed: &[build::Built],
    ids: &BTreeMap<String, String>,
    read_sbom: &dyn Fn(&str, &bake::Image) -> Result<serde_json::Value>,
) -> Result<Vec<Released>> {
    let service_of = |image: &bake::Image| {
        plan.wanted
            .iter()
            .find(|(_, wanted)| wanted == image)
            .map(|(service, _)| service.as_str())
    };
    let mut released = Vec::new();
    let mut services = Vec::new();
    for (image, service) in pushed.iter().filter_map(|b| Some((b, service_of(&b.image)?))) {
        let reference = image.image.reference();
        let Some(digest) = &image.digest else {
            bail!("bake reports no digest for the pushed {reference}: nothing signed");
        };
        if let (Some(config), Some(id)) = (&image.config_digest, ids.get(&reference))
            && config != id
        {
            bail!(
                "the image pushed as {reference} (config {config}) is not the one checked and scanned ({id}): \
                 nothing was signed; run release again"
            );
        }
        // The SBOM of what was pushed: the local image has the configuration the
        // registry now serves (checked above).
        let sbom = read_sbom(service, &image.image)?;
        let sbom_file = crate::sbom::default_file(project, service, o.target);
        crate::sbom::write(&sbom_file, &sbom)?;
        ui::note(&format!(
            "SBOM of {reference}: {} -> {}",
            crate::sbom::summary(&sbom),
            sbom_file.display()
        ));
        released.push(Released {
            repository: image.image.repository.clone(),
            image: image.image.at(digest),
            tags: image.tags.clone(),
            signed: false,
            platforms: Vec::new(),
            sbom: sbom_file.display().to_string(),
            platform_sboms: Vec::new(),
            attested: false,
            provenance: None,
            provenance_attested: false,
        });
        services.push((service.to_owned(), image.image.clone()));
    }
    if let Some(c) = &plan.cosign {
        ui::step(&format!(
            "sign {} image(s) by digest ({})",
            released.len(),
            c.describe()
        ));
        for (r, (service, image)) in released.iter_mut().zip(&services) {
            c.sign_step(&r.image, plan.multi_platform).run()?;
            r.signed = true;
            if plan.multi_platform {
                r.platforms = crate::docker::platform_manifests(&r.image)
                    .map_err(|e| anyhow::anyhow!("the platforms of the pushed {}: {e}", r.image))?
                    .into_iter()
                    .map(|(platform, digest)| (platform, format!("{}@{digest}", r.repository)))
                    .collect();
                // Each platform's own SBOM, attested by its own digest: what a deploy on
                // that platform pulls is what its SBOM describes.
                for (platform, at) in &r.platforms {
                    let sbom = crate::sbom::make_platform(service, image, at, platform)?;
                    let file = crate::sbom::platform_file(project, service, o.target, platform);
                    crate::sbom::write(&file, &sbom)?;
                    ui::note(&format!(
                        "SBOM of {at} ({platform}): {} -> {}",
                        crate::sbom::summary(&sbom),
                        file.display()
                    ));
                    c.attest_step(at, SBOM_TYPE, &file).run()?;
                    r.platform_sboms.push((platform.clone(), file.display().to_string()));
                }
            }
            c.attest_step(&r.image, SBOM_TYPE, std::path::Path::new(&r.sbom))
                .run()?;
            r.attested = true;
            if plan.provenance {
                // BuildKit's provenance (unsigned, beside the image) signed by the
                // releaser: `cosign verify-attestation` then vouches for it too.
                let slsa = crate::docker::provenance(&r.image)
                    .map_err(|e| anyhow::anyhow!("the pushed {} carries no provenance to attest: {e}", r.image))?;
                let file = provenance_file(project, service, o.target);
                if let Some(dir) = file.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                crate::fs::write_if_changed(&file, &(serde_json::to_string_pretty(&slsa)? + "\n"))?;
                let (kind, _) = cosign::provenance_type(&slsa);
                c.attest_step(&r.image, kind, &file).run()?;
                r.provenance = Some(file.display().to_string());
                r.provenance_attested = true;
            }
        }
    }
    // The record keeps each repository's last release; a partial release updates its own.
    let record = project.state_dir().join("release").join(format!("{}.json", o.target));
    std::fs::create_dir_all(record.parent().expect("a file in a directory"))?;
    let mut kept: BTreeMap<String, serde_json::Value> = std::fs::read_to_string(&record)
        .ok()
        .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t).ok())
        .into_iter()
        .flatten()
        .filter_map(|v| {
            // Records written before `repository` was kept name it in `image` (`repo@digest`).
            let repository = v["repository"]
                .as_str()
                .or_else(|| v["image"].as_str()?.split('@').next())?
                .to_owned();
            Some((repository, v))
        })
        .collect();
    for r in &released {
        kept.insert(r.repository.clone(), serde_json::to_value(r)?);
    }
    let list: Vec<&serde_json::Value> = kept.values().collect();
    crate::fs::write_if_changed(&record, &(serde_json::to_string_pretty(&list)? + "\n"))?;
    for r in &released {
        ui::note(&format!(
            "{} {}",
            if r.provenance_attested {
                "pushed, signed, SBOM and provenance attested:"
            } else if r.attested {
                "pushed, signed, SBOM attested:"
            } else {
                "pushed:"
            },
            r.image
        ));
    }
    ui::note(&format!("recorded in {}", record.display()));
    Ok(released)
}
