//! `cargo xtask scan [NAME...] [--target T] [--report FILE]`: vulnerability scan of the
//! built images with Trivy, judged by the seed's policy: Critical or High blocks the push,
//! Medium is a warning, Low is recorded. `--report` judges a Trivy JSON report already
//! made (`trivy image --format json`). Where Trivy is missing, it says so and how to get
//! it. Each verdict is kept in `.<brand>/scan/<image>.json`, for release to check.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::plan::{Output, Step};
use crate::{bake, flags, project::Project, ui};

/// One vulnerability of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub id: String,
    pub package: String,
    pub installed: String,
    pub fixed: String,
    pub severity: String,
    /// What Trivy scanned (an OS package set, a Python environment, ...).
    pub target: String,
}

/// The policy's verdict on one report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Critical and High: the push is blocked.
    pub blocked: Vec<Finding>,
    /// Medium: a warning, to fix by the next release.
    pub warned: Vec<Finding>,
    /// Low and unknown: recorded.
    pub recorded: Vec<Finding>,
}

impl Verdict {
    pub fn passes(&self) -> bool {
        self.blocked.is_empty()
    }
}

/// Judge a Trivy JSON report (`Results[].Vulnerabilities[]`).
pub fn evaluate(report: &serde_json::Value) -> Result<Verdict> {
    let results = report["Results"].as_array();
    if results.is_none() && report.get("SchemaVersion").is_none() {
        bail!("this is not a Trivy JSON report (no SchemaVersion, no Results)");
    }
    let mut verdict = Verdict::default();
    for result in results.into_iter().flatten() {
        let target = result["Target"].as_str().unwrap_or("").to_owned();
        for v in result["Vulnerabilities"].as_array().into_iter().flatten() {
            let text = |k: &str| v[k].as_str().unwrap_or("").to_owned();
            let finding = Finding {
                id: text("VulnerabilityID"),
                package: text("PkgName"),
                installed: text("InstalledVersion"),
                fixed: text("FixedVersion"),
                severity: text("Severity").to_uppercase(),
                target: target.clone(),
            };
            match finding.severity.as_str() {
                "CRITICAL" | "HIGH" => verdict.blocked.push(finding),
                "MEDIUM" => verdict.warned.push(finding),
                _ => verdict.recorded.push(finding),
            }
        }
    }
    Ok(verdict)
}

/// The image a report must be of: its reference and its layers' diff ids, as the local
/// store has them (the same on either image store, unlike the image id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub reference: String,
    pub diff_ids: Vec<String>,
}

impl Subject {
    /// The image `reference` as the local store has it; an error naming what to do when
    /// it is not there.
    pub fn local(reference: &str) -> Result<Subject> {
        let config = crate::docker::inspect_image(reference).map_err(|_| {
            anyhow::anyhow!(
                "no image {reference} in the local store: a report is judged against the image it is of; build it first \
                 (`cargo xtask build`)"
            )
        })?;
        let diff_ids = config["RootFS"]["Layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(str::to_owned))
            .collect();
        Ok(Subject {
            reference: reference.to_owned(),
            diff_ids,
        })
    }
}

/// A report is accepted only for the image it judges: a container image report
/// (`ArtifactType`), named as the image (`ArtifactName`), of this very build (its
/// `Metadata.DiffIDs` are the image's layers), that saw something (a report with no
/// result found no package set, so it can judge nothing).
pub fn bind(report: &serde_json::Value, subject: &Subject) -> Result<()> {
    let reference = &subject.reference;
    if report.get("SchemaVersion").is_none() {
        bail!(
            "this is not a Trivy JSON report (no SchemaVersion): make it with `trivy image --format json {reference}`"
        );
    }
    match report["ArtifactType"].as_str() {
        Some("container_image") => {}
        Some(other) => bail!("the report is of a `{other}`, not of a container image: scan the image {reference}"),
        None => bail!(
            "the report names no artifact (no ArtifactType): make it with `trivy image --format json {reference}`"
        ),
    }
    let named = report["ArtifactName"].as_str().unwrap_or("");
    if named != reference {
        bail!("the report is of `{named}`, not of {reference}: scan {reference} itself");
    }
    let layers: Vec<&str> = report["Metadata"]["DiffIDs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str())
        .collect();
    if layers.is_empty() {
        bail!("the report of {reference} lists no layers (Metadata.DiffIDs): it cannot be matched to this build");
    }
    if layers != subject.diff_ids {
        bail!("the report is of another build of {reference} (its layers differ from the image here): scan this build");
    }
    if report["Results"].as_array().is_none_or(|r| r.is_empty()) {
        bail!(
            "the scanner saw nothing in {reference} (no package set in Results): a scan that finds no package cannot \
             pass it; check the image carries its package database (/var/lib/dpkg/status, Python dist-info)"
        );
    }
    Ok(())
}

/// Where the verdict on an image is kept.
pub fn verdict_file(project: &Project, reference: &str) -> PathBuf {
    let name: String = reference
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    project.state_dir().join("scan").join(format!("{name}.json"))
}

/// Judge `report` on the image `reference` and keep the verdict, with the id of the image
/// judged (`image_id`, when it is in the local store) so that release can tell a verdict
/// on this very image from one on an older build of the same tag.
fn judge(project: &Project, reference: &str, image_id: Option<&str>, report: &serde_json::Value) -> Result<Verdict> {
    let verdict = evaluate(report)?;
    let file = verdict_file(project, reference);
    std::fs::create_dir_all(file.parent().unwrap())?;
    let kept =
        serde_json::json!({ "image": reference, "image-id": image_id, "passes": verdict.passes(), "verdict": verdict });
    crate::fs::write_if_changed(&file, &(serde_json::to_string_pretty(&kept)? + "\n"))?;
    let line = format!(
        "{reference}: {} critical/high, {} medium, {} low",
        verdict.blocked.len(),
        verdict.warned.len(),
        verdict.recorded.len()
    );
    if verdict.passes() {
        ui::note(&line)
    } else {
        ui::warn(&line)
    }
    for (label, list) in [("BLOCKS", &verdict.blocked), ("warn  ", &verdict.warned)] {
        for f in list {
            let fixed = if f.fixed.is_empty() { "no fix yet" } else { &f.fixed };
            ui::note(&format!(
                "  {label} {} {} {} -> {fixed} ({})",
                f.id, f.package, f.installed, f.severity
            ));
        }
    }
    Ok(verdict)
}

impl flags::Scan {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        if let Some(report) = &self.report {
            let text =
                std::fs::read_to_string(report).with_context(|| format!("reading the report {}", report.display()))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", report.display()))?;
            let target = self.target.unwrap_or(crate::manifest::Target::Prod);
            // The image the report is about: a service (its image at --target), or a reference.
            let reference = match self.names.as_slice() {
                [name] if project.manifest.services.contains_key(name.as_str()) => {
                    bake::service_image(&project.manifest, name, target).reference()
                }
                [name] => name.clone(),
                _ => bail!(
                    "--report judges one report of one image: name it (a service, such as `scan agent --report FILE`, \
                     or a reference)"
                ),
            };
            let subject = Subject::local(&reference)?;
            bind(&value, &subject).with_context(|| format!("{} is refused", report.display()))?;
            let id = crate::docker::image_id(&reference);
            let verdict = judge(project, &reference, id.as_deref(), &value)?;
            return finish(&[verdict]);
        }
        let target = self.target.unwrap_or(crate::manifest::Target::Prod);
        let names = project.manifest.service_names(&self.names)?;
        if !trivy_installed() {
            bail!(
                "Trivy is not installed, so nothing can be scanned: {INSTALL}. Or judge a report made elsewhere \
                 with `cargo xtask scan NAME --report FILE`. `cargo xtask release` refuses to push unscanned \
                 images unless given --allow-unscanned"
            );
        }
        if dry_run {
            for name in &names {
                println!(
                    "{}",
                    trivy_step(name, &bake::service_image(&project.manifest, name, target))
                        .0
                        .command_line()
                );
            }
            return Ok(());
        }
        let mut verdicts = Vec::new();
        for name in &names {
            verdicts.push(scan_image(project, name, target)?);
        }
        finish(&verdicts)
    }
}

/// How to get Trivy.
pub const INSTALL: &str = "install it (Aqua Security publishes Debian packages and static binaries; an offline \
     site also needs its vulnerability database)";

pub fn trivy_installed() -> bool {
    which::which("trivy").is_ok()
}

/// The Trivy step that scans `image` (service `name`'s), and the report file it writes.
pub fn trivy_step(name: &str, image: &bake::Image) -> (Step, std::path::PathBuf) {
    let reference = image.reference();
    let out = std::env::temp_dir().join(format!("slipway-trivy-{}-{name}.json", std::process::id()));
    let step = Step::new(format!("scan {reference}"), "trivy")
        .args([
            "image",
            "--quiet",
            "--format",
            "json",
            "--output",
            &out.display().to_string(),
            &reference,
        ])
        .output(Output::Capture)
        .timeout(Duration::from_secs(900))
        .scratch(&out)
        .on_fail(
            "Trivy needs its vulnerability database: online it downloads it; offline, provide it (trivy --cache-dir)",
        );
    (step, out)
}

/// Scan one service's image at `target` with Trivy and keep the verdict.
pub fn scan_image(project: &Project, name: &str, target: crate::manifest::Target) -> Result<Verdict> {
    let image = bake::service_image(&project.manifest, name, target);
    let reference = image.reference();
    let (step, out) = trivy_step(name, &image);
    let id = crate::docker::image_id(&reference).ok_or_else(|| {
        anyhow::anyhow!("no image {reference} to scan: build it first (`cargo xtask build {name} --target {target}`)")
    })?;
    let subject = Subject::local(&reference)?;
    step.run()?;
    let text = std::fs::read_to_string(&out);
    let _ = std::fs::remove_file(&out);
    let value: serde_json::Value = serde_json::from_str(&text?)?;
    bind(&value, &subject)?;
    judge(project, &reference, Some(&id), &value)
}

/// Fail when any verdict blocks the push.
pub fn finish(verdicts: &[Verdict]) -> Result<()> {
    let blocked: usize = verdicts.iter().map(|v| v.blocked.len()).sum();
    if blocked > 0 {
        bail!(
            "{blocked} critical or high vulnerabilities: the push is blocked until they are fixed (policy: seed 002)"
        );
    }
    Ok(())
}

/// What the record says of an image, for release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// No verdict on record, or one on another build of the tag (not this image id).
    Unscanned(String),
    /// Scanned, and Critical or High findings block it.
    Blocked(usize),
    Passed,
}

/// The kept verdict on `reference`, checked against the image id it has now (`None`:
/// accept any, for a report judged without the image at hand).
pub fn record(project: &Project, reference: &str, image_id: Option<&str>) -> Record {
    let file = verdict_file(project, reference);
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Record::Unscanned("never scanned".into());
    };
    let Ok(kept) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Record::Unscanned(format!("{} is not a verdict", file.display()));
    };
    if let Some(id) = image_id
        && kept["image-id"].as_str() != Some(id)
    {
        return Record::Unscanned("scanned, but as another build (its image id differs)".into());
    }
    match kept["verdict"]["blocked"].as_array().map_or(0, Vec::len) {
        0 if kept["passes"] == true => Record::Passed,
        n => Record::Blocked(n.max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(vulns: &[(&str, &str)]) -> serde_json::Value {
        let list: Vec<serde_json::Value> = vulns
            .iter()
            .map(|(id, sev)| serde_json::json!({"VulnerabilityID": id, "PkgName": "openssl", "InstalledVersion": "3.0.1", "FixedVersion": "3.0.2", "Severity": sev}))
            .collect();
        serde_json::json!({"SchemaVersion": 2, "Results": [{"Target": "debian 13", "Class": "os-pkgs", "Vulnerabilities": list}]})
    }

    #[test]
    fn critical_and_high_block_medium_warns_low_is_recorded() {
        let v = evaluate(&report(&[
            ("CVE-1", "CRITICAL"),
            ("CVE-2", "HIGH"),
            ("CVE-3", "MEDIUM"),
            ("CVE-4", "LOW"),
            ("CVE-5", "UNKNOWN"),
        ]))
        .unwrap();
        assert_eq!(
            v.blocked.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
            ["CVE-1", "CVE-2"]
        );
        assert_eq!(v.warned.len(), 1);
        assert_eq!(v.recorded.len(), 2);
        assert!(!v.passes());
        assert!(finish(&[v]).unwrap_err().to_string().contains("2 critical or high"));
    }

    #[test]
    fn medium_and_low_pass() {
        let v = evaluate(&report(&[("CVE-3", "MEDIUM"), ("CVE-4", "LOW")])).unwrap();
        assert!(v.passes());
        // A clean image: Trivy leaves Vulnerabilities out.
        let clean = serde_json::json!({"SchemaVersion": 2, "Results": [{"Target": "debian 13", "Class": "os-pkgs"}]});
        assert_eq!(evaluate(&clean).unwrap(), Verdict::default());
        assert!(evaluate(&serde_json::json!({"foo": 1})).is_err());
    }

    /// A report as `trivy image --format json` writes it, of `name` with `layers`.
    fn trivy(name: &str, layers: &[&str], results: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "SchemaVersion": 2, "CreatedAt": "2026-11-25T12:00:00Z",
            "ArtifactName": name, "ArtifactType": "container_image",
            "Metadata": {"OS": {"Family": "debian", "Name": "13.2"}, "ImageID": "sha256:c0ffee",
                "DiffIDs": layers, "RepoTags": [name]},
            "Results": results,
        })
    }

    #[test]
    fn a_report_is_accepted_only_for_the_image_it_judges() {
        let subject = Subject {
            reference: "localhost:5000/platform/agent:0.1.0".into(),
            diff_ids: vec!["sha256:aa".into(), "sha256:bb".into()],
        };
        let results = serde_json::json!([{"Target": "debian 13.2", "Class": "os-pkgs", "Type": "debian"}]);
        let good = trivy(&subject.reference, &["sha256:aa", "sha256:bb"], results.clone());
        bind(&good, &subject).unwrap();
        let refused = |report: serde_json::Value, why: &str| {
            let err = bind(&report, &subject).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        };
        refused(serde_json::json!({"SchemaVersion": 2}), "names no artifact");
        refused(serde_json::json!({"Results": []}), "not a Trivy JSON report");
        refused(
            trivy(
                "localhost:5000/platform/gateway:0.1.0",
                &["sha256:aa", "sha256:bb"],
                results.clone(),
            ),
            "not of localhost:5000/platform/agent:0.1.0",
        );
        refused(
            trivy(&subject.reference, &["sha256:aa", "sha256:old"], results.clone()),
            "another build",
        );
        refused(
            trivy(&subject.reference, &["sha256:aa", "sha256:bb"], serde_json::json!([])),
            "saw nothing",
        );
        let mut repo = good.clone();
        repo["ArtifactType"] = "repository".into();
        refused(repo, "not of a container image");
    }

    #[test]
    fn verdicts_are_kept_for_release() {
        let mut project = Project::load().unwrap();
        let state = std::env::temp_dir().join(format!("slipway-scan-{}", std::process::id()));
        project.root = state.clone();
        let reference = "localhost:5000/platform/agent:0.1.0";
        let id = Some("sha256:aaaa");
        assert!(matches!(record(&project, reference, id), Record::Unscanned(_)));
        judge(&project, reference, id, &report(&[("CVE-3", "MEDIUM")])).unwrap();
        assert_eq!(record(&project, reference, id), Record::Passed);
        // Another build of the same tag is not the image that was scanned.
        assert!(matches!(
            record(&project, reference, Some("sha256:bbbb")),
            Record::Unscanned(_)
        ));
        judge(&project, reference, id, &report(&[("CVE-1", "HIGH")])).unwrap();
        assert_eq!(record(&project, reference, id), Record::Blocked(1));
        let _ = std::fs::remove_dir_all(&state);
    }
}
