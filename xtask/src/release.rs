//! `cargo xtask release [NAME...] [--target T] [--push] [--sign] [--key K]
//! [--allow-unscanned]`: the release of the service images.
//!
//! 1. Build them (a no-op when they are up to date) and show the tags seed 002 gives
//!    them: `{version}`, `{version}-{sha7}`, `{branch}-{sha7}`, `latest` on main.
//! 2. Check that each has a passing scan of *this build* on record (`scan` keeps the
//!    image id it judged). Critical or High blocks; no scan blocks unless
//!    `--allow-unscanned`. Without `--push`, stop here.
//! 3. Push with bake (`build --push`), and take each image's digest from bake's metadata
//!    file; the pushed configuration must be the image that was scanned.
//! 4. With `--sign`, sign every pushed image as `name@sha256:...` (never a tag) with
//!    cosign: a key (file, `env://VAR`, KMS URI) or keyless where an OIDC token is there.
//!    Everything cosign needs is checked before anything is pushed.
//!
//! What was released is kept in `.<brand>/release/<target>.json`. [`Cosign`] is shared
//! with `verify`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::build::{self, Mode};
use crate::plan::{Output, Step};
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
                dry_run,
            },
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
    pub dry_run: bool,
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
}

/// Build, check, push and sign; returns what was pushed (nothing without `--push`).
pub fn release(project: &Project, o: &Options) -> Result<Vec<Released>> {
    let m = &project.manifest;
    let names = m.service_names(&o.names)?;
    if o.sign && !o.push {
        bail!(
            "--sign signs the digests that --push pushes: add --push (an image is never signed by tag, which can move)"
        );
    }
    let cosign = if o.sign {
        Some(Cosign::signing(project, o.key.as_deref(), &env)?)
    } else {
        None
    };
    if cosign.is_some() && which::which("cosign").is_err() {
        bail!(
            "cosign is not installed, so nothing can be signed: install it (Sigstore publishes static binaries and Debian packages), then run release again"
        );
    }
    let wanted: Vec<bake::Image> = names.iter().map(|n| bake::service_image(m, n, o.target)).collect();

    if o.dry_run {
        let load = Mode {
            dry_run: true,
            ..Mode::default()
        };
        println!("# build (load), then check each image's scan verdict");
        build::build(project, &names, o.target, None, load)?;
        if o.push {
            println!("# push");
            build::build(project, &names, o.target, None, Mode { push: true, ..load })?;
        }
        if let Some(c) = &cosign {
            println!("# sign each pushed image by the digest in bake's metadata file");
            for image in &wanted {
                println!("{}", c.sign_step(&image.at("sha256:<digest>")).command_line());
            }
        }
        return Ok(Vec::new());
    }

    ui::step(&format!("build the {} images (what changed)", o.target));
    let built = build::build(project, &names, o.target, None, Mode::default())?;
    let mut ids = BTreeMap::new();
    let (mut unscanned, mut blocked) = (Vec::new(), Vec::new());
    for image in built.iter().filter(|b| wanted.contains(&b.image)) {
        let reference = image.image.reference();
        ui::note(&format!("{}: tags {}", image.image.repository, image.tags.join(", ")));
        match scan::record(project, &reference, Some(&image.id)) {
            Record::Passed => {}
            Record::Blocked(n) => blocked.push(format!("{reference} ({n} critical or high)")),
            Record::Unscanned(why) => unscanned.push(format!("{reference} ({why})")),
        }
        // What identifies this image in the registry: its configuration's digest (on the
        // classic store that is also its id).
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
    if !o.push {
        ui::note("nothing pushed: `--push` pushes these tags, `--push --sign` signs them too");
        return Ok(Vec::new());
    }

    ui::step(&format!("push to {}", m.registry.get_ref()));
    let pushed = build::build(
        project,
        &names,
        o.target,
        None,
        Mode {
            push: true,
            ..Mode::default()
        },
    )?;
    let mut released = Vec::new();
    for image in pushed.iter().filter(|b| wanted.contains(&b.image)) {
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
        released.push(Released {
            repository: image.image.repository.clone(),
            image: image.image.at(digest),
            tags: image.tags.clone(),
            signed: false,
        });
    }
    if let Some(c) = &cosign {
        ui::step(&format!(
            "sign {} image(s) by digest ({})",
            released.len(),
            c.describe()
        ));
        for r in &mut released {
            c.sign_step(&r.image).run()?;
            r.signed = true;
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
            if r.signed { "pushed, signed:" } else { "pushed:        " },
            r.image
        ));
    }
    ui::note(&format!("recorded in {}", record.display()));
    Ok(released)
}

/// Whether the registry host is this machine (`localhost`, `127.0.0.0/8`, `[::1]`).
pub fn registry_is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.split(':').next().unwrap_or(registry),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An environment variable, set (possibly to an empty value) or not.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn set(env: &dyn Fn(&str) -> Option<String>, name: &str) -> bool {
    env(name).is_some_and(|v| !v.is_empty())
}

/// How cosign signs or verifies, from the flags, the manifest (`[release]`) and the
/// environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosign {
    /// `--key` for cosign; `None` is keyless.
    pub key: Option<String>,
    /// Where the key came from, for messages.
    pub from: String,
    /// Keyless verification: identity regexp and OIDC issuer.
    pub identity: Option<(String, String)>,
    /// Upload to (sign) or check against (verify) the transparency log.
    pub tlog: bool,
    /// The registry speaks plain HTTP (or has a certificate cosign cannot check).
    pub insecure: bool,
}

/// Whether the installed cosign signs through a signing config (`--use-signing-config`,
/// cosign 2.6+, the default in 3): its help says so. Asked once; no cosign, no flag.
fn cosign_has_signing_config() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        Step::new("cosign sign --help", "cosign")
            .args(["sign", "--help"])
            .output(Output::Capture)
            .timeout(Duration::from_secs(15))
            .run_unchecked()
            .is_ok_and(|ran| ran.stdout.contains("--use-signing-config") || ran.stderr.contains("--use-signing-config"))
    })
}

impl Cosign {
    fn base(project: &Project) -> Cosign {
        let r = &project.manifest.release;
        // A registry on this machine is a scratch or air-gapped one: plain HTTP, and no
        // public transparency log, unless the manifest says otherwise.
        let local = registry_is_loopback(project.manifest.registry.get_ref());
        Cosign {
            key: None,
            from: String::new(),
            identity: None,
            tlog: r.tlog.unwrap_or(!local),
            insecure: r.insecure_registry.unwrap_or(local),
        }
    }

    /// The signing side: `--key`, then `release.key`, then `COSIGN_PRIVATE_KEY`, then
    /// keyless where an OIDC token is at hand (GitHub Actions' `id-token: write`, or
    /// `SIGSTORE_ID_TOKEN`).
    pub fn signing(project: &Project, flag: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Result<Cosign> {
        let mut c = Cosign::base(project);
        let manifest = project.manifest_path.display();
        let key = &project.manifest.release.key;
        match choose_key(flag, key.as_ref(), "release.key", "COSIGN_PRIVATE_KEY", &manifest, env) {
            Some((key, from)) => {
                let resolved = key_ref(project, &key, &from, env)?;
                // A file or an env:// key is encrypted; a KMS key has no password.
                if (!resolved.contains("://") || resolved.starts_with("env://")) && env("COSIGN_PASSWORD").is_none() {
                    bail!(
                        "cosign reads the password of the key {key} (from {from}) from COSIGN_PASSWORD: set it \
                         (to an empty value for a key made without one)"
                    );
                }
                c.key = Some(resolved);
                c.from = from;
            }
            None => {
                let oidc = set(env, "SIGSTORE_ID_TOKEN") || set(env, "ACTIONS_ID_TOKEN_REQUEST_URL");
                if !oidc {
                    bail!(
                        "--sign has no key and no OIDC token: give --key FILE (make a pair with \
                         `cosign generate-key-pair`), set release.key in {manifest} or COSIGN_PRIVATE_KEY, or sign \
                         keyless from CI (GitHub Actions with `permissions: id-token: write`, or SIGSTORE_ID_TOKEN)"
                    );
                }
                if !c.tlog {
                    bail!(
                        "keyless signing is proven by the transparency log, and release.tlog = false in {manifest}: \
                         sign with a key instead, or turn the log on"
                    );
                }
                c.from = "keyless (OIDC)".into();
            }
        }
        Ok(c)
    }

    /// The verifying side: `--key`, then `release.public-key`, then `COSIGN_PUBLIC_KEY`,
    /// then keyless by `release.identity` and `release.issuer`.
    pub fn verifying(project: &Project, flag: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Result<Cosign> {
        let mut c = Cosign::base(project);
        let r = &project.manifest.release;
        let manifest = project.manifest_path.display();
        match choose_key(
            flag,
            r.public_key.as_ref(),
            "release.public-key",
            "COSIGN_PUBLIC_KEY",
            &manifest,
            env,
        ) {
            Some((key, from)) => {
                c.key = Some(key_ref(project, &key, &from, env)?);
                c.from = from;
            }
            None => match (&r.identity, &r.issuer) {
                (Some(identity), Some(issuer)) => {
                    c.identity = Some((identity.clone(), issuer.clone()));
                    c.from = format!("keyless: {identity} from {issuer}");
                }
                _ => bail!(
                    "verify has no public key and no keyless identity: give --key FILE (the .pub of the pair), set \
                     release.public-key (or release.identity and release.issuer) in {manifest}, or COSIGN_PUBLIC_KEY"
                ),
            },
        }
        Ok(c)
    }

    /// One line on how it signs or verifies.
    pub fn describe(&self) -> String {
        let mut text = match &self.key {
            Some(_) => format!("key from {}", self.from),
            None => self.from.clone(),
        };
        if !self.tlog {
            text.push_str(", no transparency log");
        }
        text
    }

    fn common(&self, mut step: Step) -> Step {
        if let Some(key) = &self.key {
            step = step.args(["--key", key]);
        }
        if self.insecure {
            step = step.arg("--allow-insecure-registry");
        }
        step
    }

    /// `cosign sign` of one `name@digest`.
    pub fn sign_step(&self, image: &str) -> Step {
        let mut step = self.common(Step::new(format!("sign {image}"), "cosign").args(["sign", "--yes"]));
        if !self.tlog {
            // cosign 3 signs through a signing config by default, which names a log: it
            // must be turned off for a signature without one. Older cosign lacks the flag.
            if cosign_has_signing_config() {
                step = step.arg("--use-signing-config=false");
            }
            step = step.arg("--tlog-upload=false");
        }
        step.arg(image)
            .output(Output::Capture)
            .timeout(Duration::from_secs(300))
            .on_fail(
                "cosign needs push access to the registry (`docker login`), and the key's password in COSIGN_PASSWORD",
            )
    }

    /// `cosign verify` of one image (tag or digest); JSON on stdout.
    pub fn verify_step(&self, image: &str) -> Step {
        let mut step = self.common(Step::new(format!("verify {image}"), "cosign").arg("verify"));
        if let Some((identity, issuer)) = &self.identity {
            step = step.args([
                "--certificate-identity-regexp",
                identity,
                "--certificate-oidc-issuer",
                issuer,
            ]);
        }
        if !self.tlog {
            step = step.arg("--insecure-ignore-tlog=true");
        }
        step.args(["--output", "json", image])
            .output(Output::Capture)
            .timeout(Duration::from_secs(120))
    }
}

/// The key to use and where it came from: the `--key` flag, then the manifest's `field`,
/// then the environment variable `var` (as `env://var`); `None` when none gives one.
fn choose_key(
    flag: Option<&str>,
    manifest_key: Option<&toml::Spanned<String>>,
    field: &str,
    var: &str,
    manifest: &dyn std::fmt::Display,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(String, String)> {
    match (flag, manifest_key) {
        (Some(k), _) => Some((k.to_owned(), "--key".to_owned())),
        (None, Some(k)) => Some((k.get_ref().clone(), format!("{field} in {manifest}"))),
        (None, None) => set(env, var).then(|| (format!("env://{var}"), "the environment".to_owned())),
    }
}

/// A key reference for cosign: a URI as given (`env://VAR` checked to be set), a file
/// made absolute from the root and checked to exist.
fn key_ref(project: &Project, key: &str, from: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    if let Some(var) = key.strip_prefix("env://") {
        if !set(env, var) {
            bail!("the cosign key {key} (from {from}) names the variable {var}, which is not set");
        }
        return Ok(key.to_owned());
    }
    if key.contains("://") {
        return Ok(key.to_owned());
    }
    let path = project.root.join(key);
    if !path.is_file() {
        bail!(
            "the cosign key {} (from {from}) does not exist: make a pair with `cosign generate-key-pair`, or name another",
            path.display()
        );
    }
    Ok(path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(release: &str) -> Project {
        let mut p = Project::load().unwrap();
        let text = std::fs::read_to_string(&p.manifest_path).unwrap();
        // The checkout's manifest ends with its own [release] table: replace it.
        let text = format!("{}\n[release]\n{release}\n", text.split("\n[release]").next().unwrap());
        p.manifest = crate::manifest::Manifest::parse(&text, &p.manifest_path).unwrap();
        p
    }

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn a_loopback_registry_is_known() {
        assert!(registry_is_loopback("localhost:5000"));
        assert!(registry_is_loopback("127.0.0.1:5391"));
        assert!(registry_is_loopback("[::1]:5000"));
        assert!(!registry_is_loopback("registry.example.com"));
        assert!(!registry_is_loopback("10.0.0.5:5000"));
    }

    #[test]
    fn the_signing_key_comes_from_flag_manifest_environment_or_oidc() {
        // A key file that exists, its password in the environment.
        let key = std::env::temp_dir().join(format!("slipway-cosign-{}.key", std::process::id()));
        std::fs::write(&key, "x").unwrap();
        let key = key.display().to_string();
        let with_password = env_of(&[("COSIGN_PASSWORD", "pw")]);
        let p = project("tlog = false");
        let c = Cosign::signing(&p, Some(&key), &with_password).unwrap();
        assert_eq!(c.key.as_deref(), Some(key.as_str()));
        assert!(!c.tlog && c.insecure, "{c:?}");
        let step = c.sign_step("localhost:5000/platform/agent@sha256:ab").command_line();
        // The signing config is turned off where the installed cosign has one.
        assert_eq!(
            step.contains(" --use-signing-config=false"),
            cosign_has_signing_config()
        );
        let step = step.replace(" --use-signing-config=false", "");
        assert!(
            step.ends_with("--allow-insecure-registry --tlog-upload=false localhost:5000/platform/agent@sha256:ab"),
            "{step}"
        );

        let from_manifest = project(&format!("key = \"{key}\""));
        assert!(
            Cosign::signing(&from_manifest, None, &with_password)
                .unwrap()
                .from
                .starts_with("release.key")
        );

        // The key in the environment; a password that is set but empty is a password.
        let in_env = Cosign::signing(
            &project(""),
            None,
            &env_of(&[("COSIGN_PRIVATE_KEY", "pem"), ("COSIGN_PASSWORD", "")]),
        )
        .unwrap();
        assert_eq!(in_env.key.as_deref(), Some("env://COSIGN_PRIVATE_KEY"));
        let no_password = Cosign::signing(&p, Some(&key), &env_of(&[])).unwrap_err().to_string();
        assert!(no_password.contains("COSIGN_PASSWORD"), "{no_password}");

        // The checkout's registry is on loopback: no transparency log unless asked for.
        assert!(!Cosign::signing(&project(""), Some(&key), &with_password).unwrap().tlog);
        let keyless = Cosign::signing(
            &project("tlog = true"),
            None,
            &env_of(&[("ACTIONS_ID_TOKEN_REQUEST_URL", "u")]),
        )
        .unwrap();
        assert_eq!(keyless.key, None);
        assert!(!keyless.sign_step("r@sha256:ab").command_line().contains("--key"));

        let none = Cosign::signing(&project(""), None, &env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(none.contains("no key and no OIDC token"), "{none}");
        let no_log = Cosign::signing(&project("tlog = false"), None, &env_of(&[("SIGSTORE_ID_TOKEN", "t")]));
        assert!(no_log.unwrap_err().to_string().contains("transparency log"));
        let missing = Cosign::signing(&p, Some("no/such.key"), &with_password)
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("no/such.key") && missing.contains("does not exist"),
            "{missing}"
        );
        let unset = Cosign::signing(&p, Some("env://NOPE"), &with_password)
            .unwrap_err()
            .to_string();
        assert!(unset.contains("NOPE") && unset.contains("not set"), "{unset}");
        let _ = std::fs::remove_file(&key);
    }

    #[test]
    fn verification_needs_a_public_key_or_a_keyless_identity() {
        let none = Cosign::verifying(&project(""), None, &env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(none.contains("no public key"), "{none}");
        let keyless = Cosign::verifying(
            &project("identity = \"^https://github.com/org/repo/\"\nissuer = \"https://issuer.example\"\ntlog = true"),
            None,
            &env_of(&[]),
        )
        .unwrap();
        let line = keyless.verify_step("r:1").command_line();
        assert!(
            line.contains("--certificate-identity-regexp '^https://github.com/org/repo/' --certificate-oidc-issuer https://issuer.example"),
            "{line}"
        );
        assert!(!line.contains("--insecure-ignore-tlog"), "{line}");
        let offline =
            Cosign::verifying(&project("tlog = false"), Some("env://PUB"), &env_of(&[("PUB", "pem")])).unwrap();
        assert!(
            offline
                .verify_step("r:1")
                .command_line()
                .contains("--key env://PUB --allow-insecure-registry --insecure-ignore-tlog=true")
        );
    }
}
