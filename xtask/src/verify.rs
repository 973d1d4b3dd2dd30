//! `cargo xtask verify [IMAGE...] [--key K] [--json]`: check images' cosign signatures
//! before a deploy. Each image is a reference (a tag or `name@sha256:...`) or a service
//! name (its prod image at the manifest's version). cosign resolves a tag to its digest
//! and checks a signature over that digest: an unsigned image, one signed with another
//! key, or a tag re-pointed at another image fails. Each verified image is printed with
//! its digest, which is what to deploy.

use anyhow::{Result, bail};
use serde::Serialize;

use crate::cosign::Cosign;
use crate::{bake, flags, project::Project, ui};

/// One image's outcome.
#[derive(Debug, Clone, Serialize)]
struct Outcome {
    image: String,
    verified: bool,
    /// `name@sha256:...` that the signature covers.
    digest: Option<String>,
    error: Option<String>,
}

impl flags::Verify {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let m = &project.manifest;
        let wanted: Vec<Wanted> = if self.images.is_empty() {
            m.services
                .keys()
                .map(|s| Wanted::of(bake::service_image(m, s.get_ref(), crate::manifest::Target::Prod)))
                .collect()
        } else {
            self.images.iter().map(|i| expand(m, i)).collect()
        };
        let images: Vec<&str> = wanted.iter().map(|w| w.reference.as_str()).collect();
        for image in &images {
            // A bare word that is no service is a typo more often than an image on Docker Hub.
            if !image.contains('/') && !image.contains(':') {
                let services: Vec<&str> = m.services.keys().map(|k| k.get_ref().as_str()).collect();
                bail!(
                    "`{image}` is neither a service ({}) nor an image reference (registry/project/name:tag)",
                    services.join(", ")
                );
            }
        }
        let cosign = Cosign::verifying(project, self.key.as_deref(), &|k| std::env::var(k).ok())?;
        if dry_run {
            for image in &images {
                println!("{}", cosign.verify_step(image).command_line());
            }
            return Ok(());
        }
        if which::which("cosign").is_err() {
            bail!(
                "cosign is not installed, so no signature can be checked: install it (Sigstore publishes static binaries and Debian packages)"
            );
        }
        ui::step(&format!(
            "verify {} ({})",
            plural(images.len(), "image"),
            cosign.describe()
        ));
        let mut outcomes = Vec::new();
        for Wanted {
            reference: image,
            repository,
        } in &wanted
        {
            let ran = cosign.verify_step(image).run_unchecked()?;
            // The digest the signature covers, or why there is none.
            let checked = match (ran.status.success(), signed_digest(&ran.stdout)) {
                (true, Some(digest)) => Ok(format!("{repository}@{digest}")),
                (true, None) => Err("cosign said yes but named no digest".to_owned()),
                (false, _) => Err(why(&ran.stderr)),
            };
            let outcome = Outcome {
                image: image.clone(),
                verified: checked.is_ok(),
                digest: checked.clone().ok(),
                error: checked.err(),
            };
            if !self.json {
                match (&outcome.digest, &outcome.error) {
                    (Some(d), _) => ui::note(&format!("verified  {image} -> {d}")),
                    (_, Some(e)) => ui::warn(&format!("FAILED    {image}: {e}")),
                    _ => {}
                }
            }
            outcomes.push(outcome);
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&outcomes)?);
        }
        let failed = outcomes.iter().filter(|o| !o.verified).count();
        if failed > 0 {
            bail!(
                "{failed} of {} failed verification: do not deploy them (unsigned, signed with another key, or a tag that now points elsewhere)",
                plural(outcomes.len(), "image")
            );
        }
        Ok(())
    }
}

/// An image to verify: the reference cosign checks, and the repository the signed
/// digest belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    reference: String,
    repository: String,
}

impl Wanted {
    /// A service's image, as the build names it.
    fn of(image: bake::Image) -> Wanted {
        Wanted {
            reference: image.reference(),
            repository: image.repository,
        }
    }
}

/// A service name stands for its prod image; `SERVICE@sha256:...` and `SERVICE:TAG` for
/// that digest or tag of its repository. Anything else is a reference as given, split
/// once into its repository.
fn expand(m: &crate::manifest::Manifest, image: &str) -> Wanted {
    if m.services.contains_key(image) {
        return Wanted::of(bake::service_image(m, image, crate::manifest::Target::Prod));
    }
    let cut = image.find(['@', ':']).unwrap_or(image.len());
    let (name, rest) = image.split_at(cut);
    if !name.contains('/') && m.services.contains_key(name) {
        let repository = bake::repository(m, name);
        return Wanted {
            reference: format!("{repository}{rest}"),
            repository,
        };
    }
    Wanted {
        reference: image.to_owned(),
        repository: repository_of(image).to_owned(),
    }
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// The digest the verified signature covers, from cosign's JSON output.
fn signed_digest(stdout: &str) -> Option<String> {
    let list: serde_json::Value = serde_json::from_str(stdout.trim()).ok()?;
    list.as_array()?
        .iter()
        .find_map(|sig| sig["critical"]["image"]["docker-manifest-digest"].as_str())
        .map(str::to_owned)
}

/// cosign's reason, without its banner and warnings.
fn why(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("WARNING") && !l.starts_with("error during command execution"))
        .map(|l| l.trim_start_matches("Error: "))
        .next_back()
        .unwrap_or("cosign failed without saying why")
        .to_owned()
}

/// `registry/project/name:tag` -> `registry/project/name` (a registry port is kept).
/// (For the references a user names on the command line.)
fn repository_of(reference: &str) -> &str {
    let reference = reference.split('@').next().unwrap_or(reference);
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[slash..].find(':') {
        Some(colon) => &reference[..slash + colon],
        None => reference,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_named_by_a_user_splits_into_its_repository() {
        assert_eq!(
            repository_of("localhost:5000/platform/agent:0.1.0"),
            "localhost:5000/platform/agent"
        );
        assert_eq!(
            repository_of("localhost:5000/platform/agent@sha256:ab"),
            "localhost:5000/platform/agent"
        );
        assert_eq!(repository_of("registry.example.com/p/gw"), "registry.example.com/p/gw");
    }

    #[test]
    fn the_digest_and_the_reason_are_read_from_cosign() {
        let out = r#"[{"critical":{"identity":{"docker-reference":"127.0.0.1:5391/platform/t"},"image":{"docker-manifest-digest":"sha256:72df"},"type":"cosign container image signature"},"optional":null}]"#;
        assert_eq!(signed_digest(out).as_deref(), Some("sha256:72df"));
        assert_eq!(signed_digest("not json"), None);
        let err = "WARNING: Skipping tlog verification is an insecure practice\nError: no signatures found\nerror during command execution: no signatures found\n";
        assert_eq!(why(err), "no signatures found");
    }

    #[test]
    fn service_names_stand_for_their_repository() {
        let p = Project::load().unwrap();
        let m = &p.manifest;
        let reference = |i: &str| expand(m, i).reference;
        assert_eq!(reference("gateway"), "localhost:5000/platform/gateway:0.1.0");
        assert_eq!(reference("agent@sha256:ab"), "localhost:5000/platform/agent@sha256:ab");
        assert_eq!(reference("agent:0.1.0-dev"), "localhost:5000/platform/agent:0.1.0-dev");
        assert_eq!(reference("other.example/x/y:1"), "other.example/x/y:1");
        assert_eq!(reference("nginx:1"), "nginx:1");
        assert_eq!(expand(m, "agent:0.1.0-dev").repository, "localhost:5000/platform/agent");
        assert_eq!(expand(m, "other.example/x/y:1").repository, "other.example/x/y");
    }
}
