//! `cargo xtask prune [NAME...] [--json]`: the registry's retention policy (seed 002,
//! `[retention]` in slipway.toml) applied to each service's repository, through the
//! registry's API (skopeo: it speaks the registry protocol with Docker's credentials).
//!
//! Tags are read back by the names `release` gives them (`git::push_tags`): `latest` is
//! kept; of the `{version}` tags, the newest `retention.versions`; `{branch}-{sha7}`
//! (and main's `{version}-{sha7}`) builds for `retention.branch-days` after they were
//! made, and a deleted branch's at once; a name Slipway does not give is left alone.
//! A registry deletes images, not tags (by digest): an image is deleted only when no kept
//! tag names it, so a signed image a kept tag still names is never deleted. cosign's
//! signatures and attestations (`sha256-<digest>[.sig|.att]` tags) go with the image they
//! sign, and stay while it stays (or any image that lists it, such as a platform of an
//! index).
//!
//! Facts first (the tags, each image's digest, creation time and, for an index, the
//! images it lists; the branches git knows), then [`plan`], a pure function of them, then
//! the deletions. `--dry-run` prints the verdicts and deletes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use time::OffsetDateTime;

use crate::manifest::{Retention, Target};
use crate::plan::{Output, Step};
use crate::{bake, bases, flags, git, project::Project, ui};

impl flags::Prune {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let m = &project.manifest;
        let names = m.service_names(&self.names)?;
        if which::which("skopeo").is_err() {
            anyhow::bail!(
                "prune talks to the registry through skopeo, which is not installed: `apt-get install skopeo`"
            );
        }
        let insecure = m
            .release
            .insecure_registry
            .unwrap_or_else(|| crate::manifest::registry_is_loopback(m.registry.get_ref()));
        let branches = git::branches(&project.root);
        if branches.is_none() {
            ui::warn("git names no branch here: no build is judged to be of a deleted branch (age alone decides)");
        }
        let now = OffsetDateTime::now_utc();
        let mut plans = Vec::new();
        for name in &names {
            let repository = bake::repository(m, name);
            let registry = Registry {
                repository: &repository,
                insecure,
            };
            let tags = registry.read()?;
            plans.push(plan(&repository, &tags, &m.retention, branches.as_ref(), now));
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&plans)?);
        } else {
            for p in &plans {
                print!("{}", p.render());
            }
        }
        if dry_run {
            let n: usize = plans.iter().map(|p| p.delete.len()).sum();
            ui::note(&format!("dry run: {n} images would be deleted; nothing was"));
            return Ok(());
        }
        for p in &plans {
            let registry = Registry {
                repository: &p.repository,
                insecure,
            };
            for digest in &p.delete {
                registry.delete(digest)?;
            }
            if !p.delete.is_empty() {
                ui::note(&format!(
                    "{}: {} images deleted (the registry frees their layers at its next garbage collection)",
                    p.repository,
                    p.delete.len()
                ));
            }
        }
        Ok(())
    }
}

/// One tag as the registry has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    pub tag: String,
    /// The digest of the manifest (or index) it names.
    pub digest: String,
    /// When the image was made (its `org.opencontainers.image.created` label, else its
    /// configuration's time); `None` when it could not be read (a signature, an index of
    /// other platforms).
    pub created: Option<OffsetDateTime>,
    /// For an index: the manifests it lists (what a platform's signature signs).
    pub lists: Vec<String>,
}

/// What a tag is, by the names `release` gives.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    Latest,
    Version(String),
    /// `{branch}-{sha7}` (`branch: Some`), or main's `{version}-{sha7}` (`None`).
    Build {
        branch: Option<String>,
    },
    /// cosign's tag for what it stores about the image `sha256:<hex>`.
    Signature(String),
    Other,
}

/// The tag's name without a target's suffix (`-dev`, `-local`), and the suffix.
fn split_suffix(tag: &str) -> (&str, String) {
    for target in Target::ALL {
        let suffix = target.tag_suffix();
        if !suffix.is_empty()
            && let Some(rest) = tag.strip_suffix(&suffix)
        {
            return (rest, suffix);
        }
    }
    (tag, String::new())
}

fn classify(tag: &str) -> (Name, String) {
    if let Some(rest) = tag.strip_prefix("sha256-") {
        let hex = rest.split('.').next().unwrap_or(rest);
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return (Name::Signature(format!("sha256:{hex}")), String::new());
        }
    }
    let (name, suffix) = split_suffix(tag);
    let looks_like_version = |s: &str| s.starts_with(|c: char| c.is_ascii_digit()) && s.contains('.');
    let kind = if name == "latest" {
        Name::Latest
    } else if let Some((head, sha)) = name.rsplit_once('-')
        && sha.len() == 7
        && sha.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Name::Build {
            branch: (!looks_like_version(head)).then(|| head.to_owned()),
        }
    } else if looks_like_version(name) {
        Name::Version(name.to_owned())
    } else {
        Name::Other
    };
    (kind, suffix)
}

/// Versions in order: numbers as numbers (`0.10.0` after `0.9.0`), the rest as text.
fn version_key(v: &str) -> Vec<(u64, String)> {
    v.split(['.', '-', '+'])
        .map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            (digits.parse().unwrap_or(0), part[digits.len()..].to_owned())
        })
        .collect()
}

/// The verdict on one tag.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub tag: String,
    pub digest: String,
    pub keep: bool,
    pub why: String,
}

/// One repository's verdicts, and the images to delete.
#[derive(Debug, Clone, Serialize)]
pub struct RepoPlan {
    pub repository: String,
    pub verdicts: Vec<Verdict>,
    /// Digests, each named by no kept tag.
    pub delete: Vec<String>,
}

impl RepoPlan {
    pub fn render(&self) -> String {
        let mut out = format!("{}\n", self.repository);
        if self.verdicts.is_empty() {
            out.push_str("  no tags\n");
        }
        for v in &self.verdicts {
            let short = v
                .digest
                .strip_prefix("sha256:")
                .map_or(&v.digest[..], |h| &h[..h.len().min(12)]);
            out.push_str(&format!(
                "  {} {:<40} {short}  {}\n",
                if v.keep { "keep  " } else { "delete" },
                v.tag,
                v.why
            ));
        }
        out
    }
}

/// The retention policy applied to one repository's tags: a pure function of them, the
/// branches git knows (`None`: unknown, so none is judged deleted) and the time.
pub fn plan(
    repository: &str,
    tags: &[Tagged],
    retention: &Retention,
    branches: Option<&BTreeSet<String>>,
    now: OffsetDateTime,
) -> RepoPlan {
    let limit = i64::from(retention.branch_days) * 86_400;
    // The newest versions, per target suffix.
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in tags {
        if let (Name::Version(v), suffix) = classify(&t.tag) {
            versions.entry(suffix).or_default().push(v);
        }
    }
    let mut newest: BTreeSet<(String, String)> = BTreeSet::new();
    for (suffix, mut list) in versions {
        list.sort_by_key(|v| std::cmp::Reverse(version_key(v)));
        newest.extend(list.into_iter().take(retention.versions).map(|v| (suffix.clone(), v)));
    }
    // Each tag on its own merits.
    let mut verdicts: Vec<Verdict> = Vec::new();
    let mut signatures = Vec::new();
    for t in tags {
        let (name, suffix) = classify(&t.tag);
        let age = t.created.map(|c| (now - c).whole_seconds());
        let (keep, why) = match name {
            Name::Signature(subject) => {
                signatures.push((t, subject));
                continue;
            }
            Name::Latest => (true, "latest".to_owned()),
            Name::Version(v) if newest.contains(&(suffix.clone(), v.clone())) => {
                (true, format!("one of the {} newest versions", retention.versions))
            }
            Name::Version(_) => (false, format!("older than the {} newest versions", retention.versions)),
            Name::Build { branch: Some(branch) } if branches.is_some_and(|b| !b.contains(&branch)) => {
                (false, format!("branch {branch} is gone"))
            }
            Name::Build { .. } => match age {
                None => (true, "its time cannot be read: left alone".to_owned()),
                Some(age) if age <= limit => (
                    true,
                    format!(
                        "a build {} days old (kept {} days)",
                        bases::days(age),
                        retention.branch_days
                    ),
                ),
                Some(age) => (
                    false,
                    format!(
                        "a build {} days old, past {} days",
                        bases::days(age),
                        retention.branch_days
                    ),
                ),
            },
            Name::Other => (true, "not a name release gives: left alone".to_owned()),
        };
        verdicts.push(Verdict {
            tag: t.tag.clone(),
            digest: t.digest.clone(),
            keep,
            why,
        });
    }
    // A registry deletes images, not tags: an image a kept tag names stays, with every
    // tag on it.
    let mut kept: BTreeMap<String, String> = BTreeMap::new();
    for v in verdicts.iter().filter(|v| v.keep) {
        kept.entry(v.digest.clone()).or_insert_with(|| v.tag.clone());
    }
    for v in verdicts.iter_mut().filter(|v| !v.keep) {
        if let Some(by) = kept.get(&v.digest) {
            v.keep = true;
            v.why = format!("{}; but the same image as {by}, which is kept", v.why);
        }
    }
    let mut delete: BTreeSet<String> = verdicts.iter().filter(|v| !v.keep).map(|v| v.digest.clone()).collect();
    // What a kept image lists (an index's platforms) stays too, with its signatures.
    let mut alive: BTreeSet<String> = kept.keys().cloned().collect();
    for t in tags.iter().filter(|t| kept.contains_key(&t.digest)) {
        alive.extend(t.lists.iter().cloned());
    }
    for (t, subject) in signatures {
        let (keep, why) = if alive.contains(&subject) {
            (true, "signs a kept image".to_owned())
        } else if delete.contains(&subject) {
            (false, "signs an image deleted here".to_owned())
        } else {
            (false, "signs no image here".to_owned())
        };
        if !keep {
            delete.insert(t.digest.clone());
        }
        verdicts.push(Verdict {
            tag: t.tag.clone(),
            digest: t.digest.clone(),
            keep,
            why,
        });
    }
    delete.retain(|d| !alive.contains(d));
    verdicts.sort_by(|a, b| a.tag.cmp(&b.tag));
    RepoPlan {
        repository: repository.to_owned(),
        verdicts,
        delete: delete.into_iter().collect(),
    }
}

/// What skopeo said went wrong: the message of its last log line
/// (`time=... level=fatal msg="..."`), or the line itself.
fn said(stderr: &str) -> String {
    let line = stderr.trim().lines().last().unwrap_or("no reason given");
    match line.split_once("msg=\"") {
        Some((_, msg)) => msg.strip_suffix('"').unwrap_or(msg).replace("\\\"", "\""),
        None => line.to_owned(),
    }
}

/// One repository in the registry, through skopeo.
struct Registry<'a> {
    repository: &'a str,
    insecure: bool,
}

impl Registry<'_> {
    fn skopeo(&self, what: String, args: &[&str], reference: &str) -> Step {
        let mut step = Step::new(what, "skopeo").args(args.iter().copied());
        if self.insecure {
            step = step.arg("--tls-verify=false");
        }
        step.arg(format!("docker://{reference}"))
            .output(Output::Capture)
            .timeout(Duration::from_secs(120))
    }

    /// Every tag with its digest, time and listed manifests. A repository the registry
    /// does not have has no tags.
    fn read(&self) -> Result<Vec<Tagged>> {
        let ran = self
            .skopeo(
                format!("list the tags of {}", self.repository),
                &["list-tags"],
                self.repository,
            )
            .run_unchecked()?;
        if !ran.status.success() {
            if ran.stderr.contains("404") || ran.stderr.contains("NAME_UNKNOWN") {
                return Ok(Vec::new());
            }
            anyhow::bail!(
                "the registry did not list the tags of {}: {}; is it up, and are you logged in (`docker login`)?",
                self.repository,
                said(&ran.stderr)
            );
        }
        let listed: serde_json::Value =
            serde_json::from_str(&ran.stdout).context("skopeo list-tags printed no JSON")?;
        let names: Vec<String> = listed["Tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect();
        // A few at a time: each tag is two round trips.
        let mut out = Vec::new();
        for chunk in names.chunks(4) {
            let read: Vec<Result<Tagged>> = std::thread::scope(|scope| {
                let handles: Vec<_> = chunk.iter().map(|tag| scope.spawn(move || self.tag(tag))).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a tag read does not panic"))
                    .collect()
            });
            for tagged in read {
                out.push(tagged?);
            }
        }
        Ok(out)
    }

    fn tag(&self, tag: &str) -> Result<Tagged> {
        let reference = format!("{}:{tag}", self.repository);
        let raw = self
            .skopeo(format!("read {reference}"), &["inspect", "--raw"], &reference)
            .run_unchecked()?;
        if !raw.status.success() {
            anyhow::bail!(
                "the registry did not give the manifest of {reference}: {}",
                said(&raw.stderr)
            );
        }
        let digest = crate::digest::sha256(raw.stdout.as_bytes());
        let manifest: serde_json::Value = serde_json::from_str(&raw.stdout).unwrap_or_default();
        let lists = manifest["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["digest"].as_str().map(str::to_owned))
            .collect();
        let created = if matches!(classify(tag).0, Name::Signature(_)) {
            None
        } else {
            let ran = self
                .skopeo(format!("inspect {reference}"), &["inspect"], &reference)
                .run_unchecked()?;
            serde_json::from_str::<serde_json::Value>(&ran.stdout)
                .ok()
                .and_then(|i| {
                    let label = i["Labels"]["org.opencontainers.image.created"]
                        .as_str()
                        .map(str::to_owned);
                    label.or_else(|| i["Created"].as_str().map(str::to_owned))
                })
                .and_then(|t| bases::parse_utc(&t).ok())
        };
        Ok(Tagged {
            tag: tag.to_owned(),
            digest,
            created,
            lists,
        })
    }

    fn delete(&self, digest: &str) -> Result<()> {
        let reference = format!("{}@{digest}", self.repository);
        self.skopeo(format!("delete {reference}"), &["delete"], &reference)
            .on_fail("the registry must allow deletes (distribution: storage.delete.enabled = true), and your login may delete")
            .run()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(date: &str) -> Option<OffsetDateTime> {
        Some(bases::parse_utc(date).unwrap())
    }

    fn tagged(tag: &str, digest: &str, created: &str) -> Tagged {
        Tagged {
            tag: tag.into(),
            digest: digest.into(),
            created: at(created),
            lists: Vec::new(),
        }
    }

    fn sig(of: &str, digest: &str) -> Tagged {
        let hex = of.strip_prefix("sha256:").unwrap();
        Tagged {
            tag: format!("sha256-{hex}.sig"),
            digest: digest.into(),
            created: None,
            lists: Vec::new(),
        }
    }

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    #[test]
    fn skopeos_complaint_is_its_message() {
        let stderr = "time=\"2026-12-02T02:59:53Z\" level=fatal msg=\"Error listing repository tags: Get \\\"http://127.0.0.1:5998/v2/\\\": connection refused\"\n";
        assert_eq!(
            said(stderr),
            "Error listing repository tags: Get \"http://127.0.0.1:5998/v2/\": connection refused"
        );
        assert_eq!(said("plain words"), "plain words");
    }

    #[test]
    fn names_are_read_back_as_release_gives_them() {
        assert_eq!(classify("latest"), (Name::Latest, String::new()));
        assert_eq!(classify("latest-dev"), (Name::Latest, "-dev".into()));
        assert_eq!(classify("1.10.0"), (Name::Version("1.10.0".into()), String::new()));
        assert_eq!(
            classify("1.0.0-rc1"),
            (Name::Version("1.0.0-rc1".into()), String::new())
        );
        assert_eq!(classify("1.2.0-0123abc"), (Name::Build { branch: None }, String::new()));
        assert_eq!(
            classify("feature-login-0123abc-local"),
            (
                Name::Build {
                    branch: Some("feature-login".into())
                },
                "-local".into()
            )
        );
        assert_eq!(
            classify(&format!("sha256-{}.sig", "ab".repeat(32))).0,
            Name::Signature(format!("sha256:{}", "ab".repeat(32)))
        );
        assert_eq!(classify("nightly").0, Name::Other);
        assert!(version_key("0.10.0") > version_key("0.9.1"));
    }

    #[test]
    fn the_retention_policy_keeps_what_it_says() {
        let now = bases::parse_utc("2026-12-02T00:00:00Z").unwrap();
        let recent = "2026-11-30T00:00:00Z";
        let old = "2026-11-01T00:00:00Z";
        let mut tags: Vec<Tagged> = (1..=12).map(|i| tagged(&format!("0.{i}.0"), &d(i), old)).collect();
        tags.extend([
            tagged("latest", &d(12), old),
            tagged("0.12.0-0123abc", &d(12), old),
            // 0.1.0's image is also a live branch's recent build: it stays.
            tagged("live-1111111", &d(1), recent),
            tagged("live-2222222", &d(20), old),
            tagged("gone-3333333", &d(21), recent),
            tagged("0.11.0-4444444", &d(22), old),
            tagged("nightly", &d(23), old),
            sig(&d(2), &d(30)),
            sig(&d(12), &d(31)),
            sig(&d(99), &d(32)),
        ]);
        let branches: BTreeSet<String> = ["main".to_owned(), "live".to_owned()].into();
        let retention = Retention {
            versions: 10,
            branch_days: 7,
        };
        let p = plan("r/gateway", &tags, &retention, Some(&branches), now);
        let verdict = |tag: &str| p.verdicts.iter().find(|v| v.tag == tag).unwrap();
        for kept in [
            "0.3.0",
            "0.12.0",
            "latest",
            "0.12.0-0123abc",
            "live-1111111",
            "nightly",
            "0.1.0",
        ] {
            assert!(verdict(kept).keep, "{kept}: {:?}", verdict(kept));
        }
        assert!(verdict("0.1.0").why.contains("the same image as live-1111111"));
        for gone in ["0.2.0", "live-2222222", "gone-3333333", "0.11.0-4444444"] {
            assert!(!verdict(gone).keep, "{gone}: {:?}", verdict(gone));
        }
        assert_eq!(verdict("gone-3333333").why, "branch gone is gone");
        assert!(verdict(&sig(&d(12), "").tag).keep);
        assert_eq!(verdict(&sig(&d(2), "").tag).why, "signs an image deleted here");
        assert_eq!(verdict(&sig(&d(99), "").tag).why, "signs no image here");
        assert_eq!(p.delete, [d(2), d(20), d(21), d(22), d(30), d(32)]);
        // Branches unknown: no build is judged deleted, age alone decides.
        let p = plan("r/gateway", &tags, &retention, None, now);
        assert!(!p.delete.contains(&d(21)), "{:?}", p.delete);
        // A platform of a kept index keeps its signature.
        let mut index = tagged("0.13.0", &d(40), old);
        index.lists = vec![d(41)];
        let p = plan("r/gateway", &[index, sig(&d(41), &d(42))], &retention, None, now);
        assert!(p.delete.is_empty(), "{:?}", p.verdicts);
    }
}
