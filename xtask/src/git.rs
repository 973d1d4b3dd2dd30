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
    git_raw(root, args)
        .map(|out| out.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The same, its output as git wrote it (for `-z` lists, whose first entry may begin with
/// a space).
fn git_raw(root: &Path, args: &[&str]) -> Option<String> {
    let sh = xshell::Shell::new().ok()?;
    sh.change_dir(root);
    xshell::cmd!(sh, "git {args...}").quiet().ignore_stderr().read().ok()
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

/// How many commits [`inputs_revisions`] reads in one go before asking path set by path set.
const RECENT: &str = "256";

/// Whether `file` (a path git printed) is one of `paths` or under one, or a directory
/// holding one (`git status` shows an untracked directory, not its files).
fn touches(file: &str, paths: &[String]) -> bool {
    // Component by component: `services/one` does not hold `services/one-more`.
    let file = Path::new(file);
    paths
        .iter()
        .any(|p| file.starts_with(p) || Path::new(p).starts_with(file))
}

/// [`inputs_revision`] of every path set, with two git queries whatever their number:
/// one `git status` for every path, one `git log` of the recent commits that touched any
/// of them; a set none of those touched is asked alone. A monorepo's hundreds of
/// services cost the same two queries as two services (a no-op build asks on every run).
pub fn inputs_revisions(root: &Path, sets: &[Vec<String>]) -> Vec<Revision> {
    let mut union: Vec<&str> = sets.iter().flatten().map(String::as_str).collect();
    union.sort_unstable();
    union.dedup();
    let mut status = vec!["status", "--porcelain", "-z", "--"];
    status.extend(&union);
    let dirty: Vec<String> = {
        let out = git_raw(root, &status).unwrap_or_default();
        let mut files = Vec::new();
        let mut entries = out.split('\0').filter(|e| !e.is_empty());
        while let Some(entry) = entries.next() {
            let (code, file) = entry.split_at(entry.len().min(3));
            files.push(file.to_owned());
            // A rename or copy names its source next.
            if code.starts_with('R') || code.starts_with('C') {
                files.extend(entries.next().map(str::to_owned));
            }
        }
        files
    };
    let mut log = vec![
        "-c",
        "core.quotePath=false",
        "log",
        "-n",
        RECENT,
        "--no-renames",
        "--name-only",
        "--format=%x01%H %cI %ct",
        "--",
    ];
    log.extend(&union);
    let history = git_raw(root, &log).unwrap_or_default();
    let commits: Vec<(Revision, Vec<&str>)> = history
        .split('\x01')
        .filter_map(|block| {
            let mut lines = block.lines();
            let mut words = lines.next()?.split(' ');
            let revision = Revision {
                sha: words.next()?.to_owned(),
                time: words.next()?.to_owned(),
                epoch: words.next()?.parse().ok()?,
            };
            Some((revision, lines.filter(|l| !l.is_empty()).collect()))
        })
        .collect();
    sets.iter()
        .map(|paths| {
            let found = commits
                .iter()
                .find(|(_, files)| files.iter().any(|f| touches(f, paths)))
                .map(|(revision, _)| revision.clone());
            match found {
                Some(mut revision) => {
                    if dirty.iter().any(|f| touches(f, paths)) {
                        revision.sha.push_str("-dirty");
                    }
                    revision
                }
                // Older than the recent commits (or none): asked alone.
                None => inputs_revision(root, paths),
            }
        })
        .collect()
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

    /// The batched query answers as one query per set does: sets touched by the last
    /// commit, by an older one, by none, dirty by an edit, an untracked directory or a
    /// staged rename, and a set older than the batch reaches.
    #[test]
    fn revisions_in_two_queries_are_those_asked_one_by_one() {
        let dir = std::env::temp_dir().join(format!("slipway-git-revisions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sh = xshell::Shell::new().unwrap();
        sh.change_dir(&dir);
        let commit = |file: &str, n: u64| {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("{n}\n")).unwrap();
            let date = format!("@{} +0000", 1_700_000_000 + n * 60);
            xshell::cmd!(sh, "git add -A").quiet().run().unwrap();
            xshell::cmd!(
                sh,
                "git -c user.name=t -c user.email=t@localhost commit --quiet -m {file}"
            )
            .env("GIT_COMMITTER_DATE", &date)
            .quiet()
            .run()
            .unwrap();
        };
        xshell::cmd!(sh, "git init --quiet").quiet().run().unwrap();
        commit("old/a.txt", 0);
        for n in 1..=300 {
            commit(&format!("busy/{}.txt", n % 3), n);
        }
        commit("services/one/main.rs", 301);
        commit("services/two/app.py", 302);
        commit("services/one-more/x", 303);
        commit("top.toml", 304);
        std::fs::write(dir.join("services/two/app.py"), "edited\n").unwrap();
        std::fs::create_dir_all(dir.join("fresh/deep")).unwrap();
        std::fs::write(dir.join("fresh/deep/new.txt"), "new\n").unwrap();
        xshell::cmd!(sh, "git mv busy/1.txt moved.txt").quiet().run().unwrap();
        let sets: Vec<Vec<String>> = [
            vec!["services/one"],
            vec!["services/two", "top.toml"],
            vec!["services/one-more"],
            vec!["old"],
            vec!["fresh/deep/new.txt"],
            vec!["busy/1.txt"],
            vec!["moved.txt"],
            vec!["nothing/here"],
            vec!["services"],
        ]
        .iter()
        .map(|set| set.iter().map(|p| p.to_string()).collect())
        .collect();
        let one_by_one: Vec<Revision> = sets.iter().map(|set| inputs_revision(&dir, set)).collect();
        assert_eq!(inputs_revisions(&dir, &sets), one_by_one);
        assert!(one_by_one[1].sha.ends_with("-dirty") && !one_by_one[0].sha.ends_with("-dirty"));
        assert_eq!(one_by_one[3].epoch, 1_700_000_000, "the oldest commit, past the batch");
        std::fs::remove_dir_all(&dir).unwrap();
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
