//! What git says about the checkout: the commit, the branch, and the last commit that
//! touched a set of paths (an image's inputs). Image tags and OCI labels come from here.

use std::path::Path;

/// The checkout's commit and branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Full commit id, or `unknown` outside a git checkout / before the first commit.
    pub sha: String,
    /// Branch name; `None` on a detached HEAD.
    pub branch: Option<String>,
}

impl Head {
    pub fn sha7(&self) -> &str {
        &self.sha[..self.sha.len().min(7)]
    }
}

/// A short git query at `root` (xshell: its arguments never pass through a shell), its
/// trimmed output; `None` when git fails or says nothing.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    let sh = xshell::Shell::new().ok()?;
    sh.change_dir(root);
    xshell::cmd!(sh, "git {args...}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .map(|out| out.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// HEAD of the checkout at `root`. CI systems that check out a detached commit name the
/// branch in `GITHUB_REF_NAME` (or `SLIPWAY_BRANCH`), which wins when set.
pub fn head(root: &Path) -> Head {
    let sha = git(root, &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let from_env = ["SLIPWAY_BRANCH", "GITHUB_REF_NAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    let branch = from_env.or_else(|| git(root, &["symbolic-ref", "--short", "--quiet", "HEAD"]));
    Head { sha, branch }
}

/// Every branch this checkout knows, local and remote-tracking (`git fetch --prune`
/// first to learn of deleted ones), as the tags name them ([`tag_safe`]); `None` when git
/// names none (not a checkout), so that nothing is judged "deleted" for want of an answer.
pub fn branches(root: &Path) -> Option<std::collections::BTreeSet<String>> {
    let local = git(root, &["for-each-ref", "--format=%(refname:lstrip=2)", "refs/heads"]).unwrap_or_default();
    let remote = git(root, &["for-each-ref", "--format=%(refname:lstrip=3)", "refs/remotes"]).unwrap_or_default();
    let names: std::collections::BTreeSet<String> = local
        .lines()
        .chain(remote.lines())
        .map(str::trim)
        .filter(|b| !b.is_empty() && *b != "HEAD")
        .map(tag_safe)
        .collect();
    (!names.is_empty()).then_some(names)
}

/// The last commit that touched an image's inputs: what its labels and its
/// `SOURCE_DATE_EPOCH` are made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// The commit id, with `-dirty` when an input has uncommitted changes.
    pub sha: String,
    /// Its commit time, ISO 8601.
    pub time: String,
    /// The same, in seconds since the epoch (`SOURCE_DATE_EPOCH`).
    pub epoch: u64,
}

impl Revision {
    /// Outside a git checkout, or before the first commit.
    pub fn unknown() -> Revision {
        Revision {
            sha: "unknown".into(),
            time: "1970-01-01T00:00:00Z".into(),
            epoch: 0,
        }
    }
}

/// The last commit that touched any of `paths`, with `-dirty` when one of them has
/// uncommitted changes. Labels built from this stay the same while an image's inputs
/// do, so they never invalidate a cached image.
pub fn inputs_revision(root: &Path, paths: &[String]) -> Revision {
    let mut args = vec!["log", "-1", "--format=%H %cI %ct", "--"];
    args.extend(paths.iter().map(String::as_str));
    let mut revision = git(root, &args)
        .and_then(|line| {
            let mut words = line.split(' ');
            Some(Revision {
                sha: words.next()?.to_owned(),
                time: words.next()?.to_owned(),
                epoch: words.next()?.parse().ok()?,
            })
        })
        .unwrap_or_else(Revision::unknown);
    let mut status = vec!["status", "--porcelain", "--"];
    status.extend(paths.iter().map(String::as_str));
    if git(root, &status).is_some() {
        revision.sha.push_str("-dirty");
    }
    revision
}

/// A branch name made into a valid tag: lowercase, `[a-z0-9._-]`, no leading `.`/`-`,
/// at most 100 characters (room for `-{sha7}`).
pub fn tag_safe(branch: &str) -> String {
    let mut out: String = branch
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let out = out.trim_start_matches(['.', '-']).trim_end_matches('-');
    let out: String = out.chars().take(100).collect();
    if out.is_empty() { "branch".into() } else { out }
}

/// The tags of seed 002: `{version}`, `{version}-{sha7}`, `{branch}-{sha7}`, and `latest`
/// on `main` only. `suffix` (`-dev`, `-local`) marks the non-prod targets.
pub fn tags(version: &str, head: &Head, suffix: &str) -> Vec<String> {
    let mut tags = vec![format!("{version}{suffix}")];
    if head.sha != "unknown" {
        tags.push(format!("{version}-{}{suffix}", head.sha7()));
        if let Some(branch) = &head.branch {
            tags.push(format!("{}-{}{suffix}", tag_safe(branch), head.sha7()));
        }
    }
    if head.branch.as_deref() == Some("main") {
        tags.push(format!("latest{suffix}"));
    }
    tags
}

/// The tags a push gives an image (seed 002's registry rules): `{version}`,
/// `{version}-{sha7}` and `latest` from `main` only, so that no other branch moves a
/// release tag; `{branch}-{sha7}` from any other branch; `{version}-{sha7}` from a
/// checkout on no branch. `cargo xtask prune` reads the same names back.
pub fn push_tags(version: &str, head: &Head, suffix: &str) -> Vec<String> {
    let sha = (head.sha != "unknown").then(|| head.sha7());
    match (head.branch.as_deref(), sha) {
        (Some("main"), Some(sha)) => vec![
            format!("{version}{suffix}"),
            format!("{version}-{sha}{suffix}"),
            format!("latest{suffix}"),
        ],
        (Some("main"), None) => vec![format!("{version}{suffix}"), format!("latest{suffix}")],
        (Some(branch), Some(sha)) => vec![format!("{}-{sha}{suffix}", tag_safe(branch))],
        (None, Some(sha)) => vec![format!("{version}-{sha}{suffix}")],
        (_, None) => vec![format!("{version}{suffix}")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_moves_release_tags_from_main_only() {
        assert_eq!(
            push_tags("1.2.0", &head(Some("main")), ""),
            ["1.2.0", "1.2.0-0123456", "latest"]
        );
        assert_eq!(
            push_tags("1.2.0", &head(Some("feature/Login")), "-dev"),
            ["feature-login-0123456-dev"]
        );
        assert_eq!(push_tags("1.2.0", &head(None), ""), ["1.2.0-0123456"]);
    }

    fn head(branch: Option<&str>) -> Head {
        Head {
            sha: "0123456789abcdef".into(),
            branch: branch.map(str::to_owned),
        }
    }

    #[test]
    fn seed_tags_with_latest_on_main_only() {
        assert_eq!(
            tags("1.2.0", &head(Some("main")), ""),
            ["1.2.0", "1.2.0-0123456", "main-0123456", "latest"]
        );
        assert_eq!(
            tags("1.2.0", &head(Some("feature/Login_Page")), "-dev"),
            ["1.2.0-dev", "1.2.0-0123456-dev", "feature-login_page-0123456-dev"]
        );
        assert_eq!(tags("1.2.0", &head(None), ""), ["1.2.0", "1.2.0-0123456"]);
    }

    #[test]
    fn branches_become_valid_tags() {
        assert_eq!(tag_safe("Feature/ÜBER--fix"), "feature-ber-fix");
        assert_eq!(tag_safe("-.weird"), "weird");
        assert_eq!(tag_safe("///"), "branch");
        assert!(crate::manifest::is_tag(&format!(
            "{}-0123456",
            tag_safe(&"x".repeat(300))
        )));
    }
}
