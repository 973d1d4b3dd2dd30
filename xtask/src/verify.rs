//! `cargo xtask verify [IMAGE...] [--key K] [--json]`: check images' cosign signatures
//! before a deploy. Each image is a reference (a tag or `name@sha256:...`) or a service
//! name (its prod image at the manifest's version). cosign resolves a tag to its digest
//! and checks a signature over that digest: an unsigned image, one signed with another
//! key, or a tag re-pointed at another image fails. Each verified image is printed with
//! its digest, which is what to deploy.
//!
//! Then, by that digest, its attestations: the CycloneDX SBOM `release` attests
//! (`cosign verify-attestation`, signed by the same key, its statement naming that
//! digest) and BuildKit's provenance beside it in the registry (`--no-provenance`
//! accepts images pushed by a builder that attaches none, such as Docker 20.10's). Each
//! one missing or wrong is named.

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
    /// For an image index of several platforms: each platform whose own image's
    /// signature and SBOM attestation were checked too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    platforms: Vec<String>,
    /// Components in the attested SBOM.
    sbom_components: Option<usize>,
    /// The provenance's build type (BuildKit's), when it was checked.
    provenance: Option<String>,
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
        // Keyless by an identity given here (the workflow's own), in place of the manifest's.
        let mut project = project.clone();
        match (&self.identity, &self.issuer) {
            (Some(identity), Some(issuer)) => {
                project.manifest.release.identity = Some(identity.clone());
                project.manifest.release.issuer = Some(issuer.clone());
            }
            (None, None) => {}
            _ => bail!("--identity and --issuer go together: the signer's identity and the issuer of its token"),
        }
        let cosign = Cosign::verifying(&project, self.key.as_deref(), &|k| std::env::var(k).ok())?;
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
            let outcome = check(&cosign, image, repository, !self.no_provenance)?;
            if !self.json {
                match (&outcome.digest, &outcome.error) {
                    (Some(d), None) => ui::note(&format!(
                        "verified  {image} -> {d} (signature{}; SBOM of {} components{})",
                        if outcome.platforms.is_empty() {
                            String::new()
                        } else {
                            format!(
                                ", and each platform's signature and SBOM: {}",
                                outcome.platforms.join(", ")
                            )
                        },
                        outcome.sbom_components.unwrap_or(0),
                        if outcome.provenance.is_some() {
                            "; provenance"
                        } else {
                            ""
                        }
                    )),
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
                "{failed} of {} failed verification: do not deploy them (unsigned, signed with another key, a tag that now points elsewhere, or an attestation missing)",
                plural(outcomes.len(), "image")
            );
        }
        Ok(())
    }
}

/// Verify one image: its signature, then by the signed digest its SBOM attestation and
/// (with `provenance`) its provenance. The first problem found is the outcome's error.
fn check(cosign: &Cosign, image: &str, repository: &str, provenance: bool) -> Result<Outcome> {
    let mut outcome = Outcome {
        image: image.to_owned(),
        verified: false,
        digest: None,
        platforms: Vec::new(),
        sbom_components: None,
        provenance: None,
        error: None,
    };
    let ran = cosign.verify_step(image).run_unchecked()?;
    // The digest the signature covers, or why there is none.
    let digest = match (ran.status.success(), signed_digest(&ran.stdout)) {
        (true, Some(digest)) => digest,
        (true, None) => {
            outcome.error = Some("cosign said yes but named no digest".to_owned());
            return Ok(outcome);
        }
        (false, _) => {
            outcome.error = Some(format!("signature: {}", why(&ran.stderr)));
            return Ok(outcome);
        }
    };
    let pinned = format!("{repository}@{digest}");
    outcome.digest = Some(pinned.clone());
    // An image for several platforms: each platform's image signed by its own digest too
    // (what a deploy on that platform pulls).
    let platforms = match crate::docker::platform_manifests(&pinned) {
        Ok(platforms) => platforms,
        Err(e) => {
            outcome.error = Some(format!("platforms: {e}"));
            return Ok(outcome);
        }
    };
    if platforms.len() > 1 {
        for (platform, platform_digest) in platforms {
            let image = format!("{repository}@{platform_digest}");
            let ran = cosign.verify_step(&image).run_unchecked()?;
            if !ran.status.success() {
                outcome.error = Some(format!(
                    "the {platform} image {image}: signature: {} (`cargo xtask release --push --sign` signs every platform)",
                    why(&ran.stderr)
                ));
                return Ok(outcome);
            }
            // Its own SBOM, attested by its own digest, naming it.
            if let Err(e) = attested_sbom(cosign, &image, &platform_digest)? {
                outcome.error = Some(format!(
                    "the {platform} image {image}: SBOM attestation: {e} (`cargo xtask release --push --sign` attests each platform's)"
                ));
                return Ok(outcome);
            }
            outcome.platforms.push(platform);
        }
    }
    match attested_sbom(cosign, &pinned, &digest)? {
        Ok(components) => outcome.sbom_components = Some(components),
        Err(e) => {
            outcome.error = Some(format!(
                "SBOM attestation: {e} (`cargo xtask release --push --sign` attests one)"
            ));
            return Ok(outcome);
        }
    }
    if provenance {
        // BuildKit's provenance beside the image, and the same predicate signed by the
        // releaser as a cosign attestation of the signed digest.
        let slsa = match crate::docker::provenance(&pinned) {
            Ok(slsa) => slsa,
            Err(e) => {
                outcome.error = Some(format!(
                    "provenance: {e} (push from a builder that attaches it, such as Docker's containerd image \
                     store; `--no-provenance` accepts images without)"
                ));
                return Ok(outcome);
            }
        };
        let (kind, predicate_type) = crate::cosign::provenance_type(&slsa);
        let ran = cosign.verify_attestation_step(&pinned, kind).run_unchecked()?;
        let signed = if ran.status.success() {
            statement(&ran.stdout, &digest, predicate_type, "provenance")
        } else {
            Err(why(&ran.stderr))
        };
        if let Err(e) = signed {
            outcome.error = Some(format!(
                "provenance attestation: {e} (`cargo xtask release --push --sign` signs BuildKit's provenance as one)"
            ));
            return Ok(outcome);
        }
        outcome.provenance = Some(
            slsa["buildType"]
                .as_str()
                .or_else(|| slsa["buildDefinition"]["buildType"].as_str())
                .unwrap_or("unknown")
                .to_owned(),
        );
    }
    outcome.verified = true;
    Ok(outcome)
}

/// The SBOM attestation of `image`, verified, its statement naming `digest`: the SBOM's
/// number of components, or why not.
fn attested_sbom(cosign: &Cosign, image: &str, digest: &str) -> Result<Result<usize, String>> {
    let ran = cosign
        .verify_attestation_step(image, crate::release::SBOM_TYPE)
        .run_unchecked()?;
    Ok(if ran.status.success() {
        sbom_statement(&ran.stdout, digest)
    } else {
        Err(why(&ran.stderr))
    })
}

/// The statement of `predicate_type` among cosign's verified attestations (one JSON
/// envelope a line, its payload a base64 in-toto statement) that names `digest` as its
/// subject: its predicate. `what` names the kind in messages.
fn statement(stdout: &str, digest: &str, predicate_type: &str, what: &str) -> Result<serde_json::Value, String> {
    let want = digest.strip_prefix("sha256:").unwrap_or(digest);
    let mut seen = Vec::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let envelope: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("cosign printed no JSON: {e}"))?;
        let payload = envelope["payload"].as_str().unwrap_or_default();
        let statement: serde_json::Value = base64_decode(payload)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or("an attestation whose payload is not a JSON statement")?;
        if statement["predicateType"] != predicate_type {
            continue;
        }
        let subjects: Vec<&str> = statement["subject"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["digest"]["sha256"].as_str())
            .collect();
        if !subjects.contains(&want) {
            seen.extend(subjects.iter().map(|s| format!("sha256:{s}")));
            continue;
        }
        return Ok(statement["predicate"].clone());
    }
    if seen.is_empty() {
        Err(format!("no {what} statement among the verified attestations"))
    } else {
        Err(format!(
            "the {what} statement names {} instead of {digest}",
            seen.join(", ")
        ))
    }
}

/// The CycloneDX statement that names `digest`: the number of components its SBOM lists.
fn sbom_statement(stdout: &str, digest: &str) -> Result<usize, String> {
    let predicate = statement(stdout, digest, "https://cyclonedx.org/bom", "CycloneDX")?;
    if predicate["bomFormat"] != "CycloneDX" {
        return Err("the attested predicate is not a CycloneDX document".to_owned());
    }
    Ok(predicate["components"].as_array().map_or(0, Vec::len))
}

/// Standard base64 (with or without padding), as in-toto envelopes carry payloads.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for byte in text.trim().bytes().filter(|b| *b != b'=') {
        let value = ALPHABET.iter().position(|a| *a == byte)? as u32;
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
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

    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        while !out.len().is_multiple_of(4) {
            out.push('=');
        }
        out
    }

    fn envelope(predicate_type: &str, digest: &str, predicate: serde_json::Value) -> String {
        let statement = serde_json::json!({
            "_type": "https://in-toto.io/Statement/v0.1",
            "subject": [{"name": "localhost:5000/platform/agent", "digest": {"sha256": digest}}],
            "predicateType": predicate_type,
            "predicate": predicate,
        });
        serde_json::json!({"payloadType": "application/vnd.in-toto+json",
            "payload": base64(statement.to_string().as_bytes()), "signatures": []})
        .to_string()
    }

    #[test]
    fn the_sbom_statement_must_name_the_signed_digest() {
        let sbom = serde_json::json!({"bomFormat": "CycloneDX", "components": [{"name": "a"}, {"name": "b"}]});
        let good = envelope("https://cyclonedx.org/bom", "ab12", sbom.clone());
        assert_eq!(sbom_statement(&good, "sha256:ab12"), Ok(2));
        // Another image's SBOM, signed by the same key, does not stand for this one.
        let err = sbom_statement(&good, "sha256:cd34").unwrap_err();
        assert!(err.contains("names sha256:ab12 instead of sha256:cd34"), "{err}");
        // Provenance alone is no SBOM; an SPDX-typed predicate that is not CycloneDX neither.
        let other = envelope("https://slsa.dev/provenance/v0.2", "ab12", serde_json::json!({}));
        assert!(
            sbom_statement(&other, "sha256:ab12")
                .unwrap_err()
                .contains("no CycloneDX statement")
        );
        let fake = envelope(
            "https://cyclonedx.org/bom",
            "ab12",
            serde_json::json!({"spdxVersion": "SPDX-2.3"}),
        );
        assert!(
            sbom_statement(&fake, "sha256:ab12")
                .unwrap_err()
                .contains("not a CycloneDX")
        );
        assert_eq!(base64_decode("aGk="), Some(b"hi".to_vec()));
        assert_eq!(base64_decode("aGk"), Some(b"hi".to_vec()));
        assert_eq!(base64_decode("a!"), None);
    }
}
