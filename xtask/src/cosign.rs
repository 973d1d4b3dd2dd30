//! How cosign is called: [`Cosign`] decides, from the flags, the manifest (`[release]`)
//! and the environment, whether to sign or verify with a key (a file, `env://VAR`, a KMS
//! URI) or keyless, against the transparency log or not; `release` signs with it and
//! `verify` checks with it.

use std::time::Duration;

use anyhow::{Result, bail};

use crate::plan::{Output, Step};
use crate::project::Project;

/// An environment variable, set (possibly to an empty value) or not.
pub fn env(name: &str) -> Option<String> {
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

/// cosign's attestation type for a BuildKit provenance predicate, and the in-toto
/// predicate type it is stored under: SLSA 1.0 (a `buildDefinition`) or 0.2.
/// The signer `--sign` asks for (`--key`, else the manifest's key, else keyless), none
/// without `--sign`: checked before anything is built or pushed.
pub fn asked(project: &Project, sign: bool, key: Option<&str>) -> Result<Option<Cosign>> {
    if !sign {
        return Ok(None);
    }
    Cosign::signing(project, key, &env).map(Some)
}

/// cosign on PATH, or what to do about it; `command` is the one to run again.
pub fn require_installed(command: &str) -> Result<()> {
    if which::which("cosign").is_err() {
        bail!(
            "cosign is not installed, so nothing can be signed: install it (Sigstore publishes static binaries and Debian packages), then run {command} again"
        );
    }
    Ok(())
}

pub fn provenance_type(slsa: &serde_json::Value) -> (&'static str, &'static str) {
    if slsa.get("buildDefinition").is_some() {
        ("slsaprovenance1", "https://slsa.dev/provenance/v1")
    } else {
        ("slsaprovenance", "https://slsa.dev/provenance/v0.2")
    }
}

impl Cosign {
    fn base(project: &Project) -> Cosign {
        let r = &project.manifest.release;
        // A registry on this machine is a scratch or air-gapped one: plain HTTP, and no
        // public transparency log, unless the manifest says otherwise.
        let local = crate::manifest::registry_is_loopback(project.manifest.registry.get_ref());
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

    /// `cosign sign` of one `name@digest`; of an image index for several platforms,
    /// `recursive` signs each platform's image by its own digest too.
    pub fn sign_step(&self, image: &str, recursive: bool) -> Step {
        let mut step = Step::new(format!("sign {image}"), "cosign").args(["sign", "--yes"]);
        if recursive {
            step = step.arg("--recursive");
        }
        self.writing(step, image)
    }

    /// `cosign attest` of one `name@digest`: the file `predicate` as an in-toto statement
    /// of `kind` (`cyclonedx`), signed like the image and stored beside it.
    pub fn attest_step(&self, image: &str, kind: &str, predicate: &std::path::Path) -> Step {
        let step = Step::new(format!("attest the {kind} SBOM of {image}"), "cosign")
            .args(["attest", "--yes", "--type", kind, "--predicate"])
            .arg(predicate.display().to_string());
        self.writing(step, image)
    }

    /// What every signature written passes: the key, the registry, and, where there is no
    /// transparency log, the flags that keep it out of one.
    fn writing(&self, step: Step, image: &str) -> Step {
        let mut step = self.common(step);
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

    /// `cosign verify-attestation --type kind` of one image: each verified statement, one
    /// JSON document a line, on stdout.
    pub fn verify_attestation_step(&self, image: &str, kind: &str) -> Step {
        let step = Step::new(format!("verify the {kind} attestation of {image}"), "cosign").args([
            "verify-attestation",
            "--type",
            kind,
        ]);
        self.checking(step).arg(image)
    }

    /// `cosign verify` of one image (tag or digest); JSON on stdout.
    pub fn verify_step(&self, image: &str) -> Step {
        let step = Step::new(format!("verify {image}"), "cosign").arg("verify");
        self.checking(step).args(["--output", "json", image])
    }

    /// What every verification passes: the key or the keyless identity, and the log.
    fn checking(&self, step: Step) -> Step {
        let mut step = self.common(step);
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
        step.output(Output::Capture).timeout(Duration::from_secs(120))
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
    use crate::manifest::registry_is_loopback;

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
        assert!(registry_is_loopback("localhost:5000/team"));
        assert!(!registry_is_loopback("registry.example.com/team"));
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
        let step = c
            .sign_step("localhost:5000/platform/agent@sha256:ab", false)
            .command_line();
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
        assert!(!keyless.sign_step("r@sha256:ab", true).command_line().contains("--key"));

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
