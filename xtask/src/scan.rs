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

fn judge(project: &Project, reference: &str, report: &serde_json::Value) -> Result<Verdict> {
    let verdict = evaluate(report)?;
    let file = verdict_file(project, reference);
    std::fs::create_dir_all(file.parent().unwrap())?;
    let kept = serde_json::json!({ "image": reference, "passes": verdict.passes(), "verdict": verdict });
    crate::build::write_if_changed(&file, &(serde_json::to_string_pretty(&kept)? + "\n"))?;
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
            let name = self
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| report.display().to_string());
            let verdict = judge(project, &name, &value)?;
            return finish(&[verdict]);
        }
        let target = crate::manifest::target(self.target.as_deref(), "prod")?;
        let m = &project.manifest;
        let names = m.service_names(&self.names)?;
        if crate::plan::find_program("trivy").is_none() {
            bail!(
                "Trivy is not installed, so nothing can be scanned: install it (Aqua Security publishes \
                 Debian packages and static binaries; an offline site also needs its vulnerability \
                 database), or judge a report made elsewhere with `cargo xtask scan --report FILE`. \
                 `cargo xtask release` refuses to push unscanned images unless given --allow-unscanned"
            );
        }
        let mut verdicts = Vec::new();
        for name in &names {
            let reference = bake::service_ref(m, name, &target);
            let out = std::env::temp_dir().join(format!("slipway-trivy-{}-{name}.json", std::process::id()));
            let step = Step::new(format!("scan {reference}"), "trivy")
                .args(["image", "--quiet", "--format", "json", "--output", &out.display().to_string(), &reference])
                .output(Output::Capture)
                .timeout(Duration::from_secs(900))
                .on_fail("Trivy needs its vulnerability database: online it downloads it; offline, provide it (trivy --cache-dir)");
            if dry_run {
                println!("{}", step.command_line());
                continue;
            }
            step.run()?;
            let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
            let _ = std::fs::remove_file(&out);
            verdicts.push(judge(project, &reference, &value)?);
        }
        finish(&verdicts)
    }
}

fn finish(verdicts: &[Verdict]) -> Result<()> {
    let blocked: usize = verdicts.iter().map(|v| v.blocked.len()).sum();
    if blocked > 0 {
        bail!(
            "{blocked} critical or high vulnerabilities: the push is blocked until they are fixed (policy: seed 002)"
        );
    }
    Ok(())
}

/// Whether an image has a passing verdict on record (for release).
#[cfg_attr(not(test), expect(dead_code, reason = "read by `release`, which is not built yet"))]
pub fn passed(project: &Project, reference: &str) -> bool {
    let file = verdict_file(project, reference);
    let Ok(text) = std::fs::read_to_string(&file) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v["passes"] == true)
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

    #[test]
    fn verdicts_are_kept_for_release() {
        let mut project = Project::load().unwrap();
        let state = std::env::temp_dir().join(format!("slipway-scan-{}", std::process::id()));
        project.root = state.clone();
        let reference = "localhost:5000/platform/agent:0.1.0";
        assert!(!passed(&project, reference));
        judge(&project, reference, &report(&[("CVE-3", "MEDIUM")])).unwrap();
        assert!(passed(&project, reference));
        judge(&project, reference, &report(&[("CVE-1", "HIGH")])).unwrap();
        assert!(!passed(&project, reference));
        let _ = std::fs::remove_dir_all(&state);
    }
}
