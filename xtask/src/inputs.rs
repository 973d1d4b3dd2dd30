//! A service's inputs: the files its image is built from, declared in slipway.toml as
//! glob patterns (`inputs`, by default everything under `path` and each `depends-on`;
//! `exclude`, beside the defaults below). One reading, used three ways: `build` stages
//! exactly these files as the service's build context (so its up-to-date stamp, a hash
//! of the staged context, covers exactly them), and `ci matrix --since` calls a service
//! affected when a changed path matches them (by pattern, so a deleted file counts).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use glob::{MatchOptions, Pattern};

use crate::manifest::{Manifest, Service};

/// Never inputs, whatever a service declares: build output, caches, local environments,
/// environment files (`.env*`), version control.
pub const DEFAULT_EXCLUDE: &[&str] = &[
    "**/target/**",
    "**/__pycache__/**",
    "**/.venv/**",
    "**/.pytest_cache/**",
    "**/.mypy_cache/**",
    "**/.ruff_cache/**",
    "**/node_modules/**",
    "**/.git/**",
    "**/.env*",
];

/// `*` and `?` stop at `/`; only `**` crosses directories. Hidden files match like any.
const OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// A service's inputs, as patterns.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub service: String,
    pub include: Vec<Pattern>,
    pub exclude: Vec<Pattern>,
    /// Whether `include` is the service's own `inputs` (each must name a file), rather
    /// than the default pair per path (`X`, `X/**`: one of them names nothing).
    pub declared: bool,
}

impl Inputs {
    /// From the manifest (whose patterns were checked when it was read).
    pub fn of(m: &Manifest, name: &str, service: &Service) -> Inputs {
        let pattern = |text: &str| Pattern::new(text).expect("checked when the manifest was read");
        let include: Vec<Pattern> = if service.inputs.is_empty() {
            std::iter::once(&service.path)
                .chain(&service.depends_on)
                .flat_map(|p| {
                    let p = p.get_ref().trim_end_matches('/');
                    // The file itself, or everything under the directory.
                    [
                        pattern(&Pattern::escape(p)),
                        pattern(&format!("{}/**", Pattern::escape(p))),
                    ]
                })
                .collect()
        } else {
            service.inputs.iter().map(|p| pattern(p.get_ref())).collect()
        };
        let state_dir = format!(".{}/**", m.brand());
        let exclude = default_excludes()
            .iter()
            .cloned()
            .chain(std::iter::once(pattern(&state_dir)))
            .chain(service.exclude.iter().map(|p| pattern(p.get_ref())))
            .collect();
        Inputs {
            service: name.to_owned(),
            include,
            exclude,
            declared: !service.inputs.is_empty(),
        }
    }

    /// Whether `rel` (a path relative to the root, `/`-separated) is one of the inputs.
    pub fn matches(&self, rel: &str) -> bool {
        self.include.iter().any(|p| p.matches_with(rel, OPTIONS))
            && !self.exclude.iter().any(|p| p.matches_with(rel, OPTIONS))
    }

    /// Every input file in the checkout at `root`: relative path -> absolute path,
    /// sorted. A declared pattern that names nothing is an error (a typo would otherwise build
    /// an image without the files meant).
    pub fn files(&self, root: &Path) -> Result<BTreeMap<PathBuf, PathBuf>> {
        let mut out = BTreeMap::new();
        for pattern in &self.include {
            let mut named = 0;
            for entry in glob::glob_with(&walk(root, pattern), OPTIONS)
                .with_context(|| format!("reading the inputs of `{}`", self.service))?
            {
                let path = entry.with_context(|| format!("reading the inputs of `{}`", self.service))?;
                named += 1;
                if !path.is_file() {
                    continue;
                }
                let rel = path.strip_prefix(root).unwrap_or(&path).to_owned();
                if self.matches(&rel.to_string_lossy()) {
                    out.insert(rel, path);
                }
            }
            // A declared pattern that names nothing is a typo. The default pair's paths
            // were checked to exist (`build::stage_context`); one of each pair is empty.
            if named == 0 && self.declared {
                bail!(
                    "the inputs of `{}` name no file: `{}` matches nothing in {}; check `inputs` in slipway.toml",
                    self.service,
                    pattern.as_str(),
                    root.display()
                );
            }
        }
        Ok(out)
    }
}

/// What to hand `glob::glob` for `pattern` under `root`: a trailing `**` there yields
/// only directories, so files are asked for with `**/*`.
fn walk(root: &Path, pattern: &Pattern) -> String {
    let full = root.join(pattern.as_str()).to_string_lossy().into_owned();
    if full.ends_with("/**") {
        format!("{full}/*")
    } else {
        full
    }
}

/// [`DEFAULT_EXCLUDE`], compiled once.
fn default_excludes() -> &'static [Pattern] {
    static PATTERNS: std::sync::OnceLock<Vec<Pattern>> = std::sync::OnceLock::new();
    PATTERNS.get_or_init(|| {
        DEFAULT_EXCLUDE
            .iter()
            .map(|p| Pattern::new(p).expect("a valid pattern"))
            .collect()
    })
}

/// Whether `rel` is one of [`DEFAULT_EXCLUDE`] (for the base images' directories, which
/// have no declared inputs).
pub fn is_noise(rel: &str) -> bool {
    default_excludes().iter().any(|p| p.matches_with(rel, OPTIONS))
}

/// Every service's inputs, by name.
pub fn all(m: &Manifest) -> Vec<Inputs> {
    m.services
        .iter()
        .map(|(name, service)| Inputs::of(m, name.get_ref(), service))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(extra: &str) -> Manifest {
        let text = std::fs::read_to_string(crate::project::root().join(crate::manifest::FILE))
            .unwrap()
            .replace(
                "depends-on = [\"services/common\"]",
                &format!("depends-on = [\"services/common\"]\n{extra}"),
            );
        Manifest::parse(&text, Path::new("slipway.toml")).unwrap()
    }

    #[test]
    fn by_default_a_service_is_its_directory_and_its_dependencies_less_the_noise() {
        let m = manifest("");
        let agent = Inputs::of(&m, "agent", &m.services["agent"]);
        assert!(agent.matches("services/agent/src/agent/app.py"));
        assert!(agent.matches("services/agent/Dockerfile"));
        assert!(agent.matches("services/common/src/slipway_common/tls.py"));
        assert!(!agent.matches("services/agentx/app.py"));
        assert!(!agent.matches("services/gateway/src/main.rs"));
        assert!(!agent.matches("services/agent/.env"));
        assert!(!agent.matches("services/agent/.env.local"));
        assert!(!agent.matches("services/agent/src/agent/__pycache__/app.cpython-313.pyc"));
        assert!(!agent.matches("services/agent/.venv/bin/python"));
        assert!(!agent.matches("docs/stack.md"));
        let gateway = Inputs::of(&m, "gateway", &m.services["gateway"]);
        assert!(gateway.matches("Cargo.lock") && gateway.matches("Cargo.toml"));
        assert!(!gateway.matches("services/gateway/target/debug/gateway"));
        assert!(!gateway.matches("xtask/src/main.rs"));
    }

    #[test]
    fn declared_patterns_and_excludes() {
        let m =
            manifest("inputs = [\"services/agent/src/**\", \"services/agent/*.toml\"]\nexclude = [\"**/*_test.py\"]");
        let agent = Inputs::of(&m, "agent", &m.services["agent"]);
        assert!(agent.matches("services/agent/src/agent/app.py"));
        assert!(agent.matches("services/agent/pyproject.toml"));
        assert!(!agent.matches("services/agent/src/agent/app_test.py"));
        assert!(!agent.matches("services/agent/Dockerfile"));
        // `*` does not cross directories.
        assert!(!agent.matches("services/agent/sub/x.toml"));
    }

    #[test]
    fn the_files_of_the_checkout() {
        let m = manifest("");
        let root = crate::project::root();
        let files = Inputs::of(&m, "agent", &m.services["agent"]).files(&root).unwrap();
        assert!(
            files.contains_key(Path::new("services/agent/src/agent/app.py")),
            "{files:?}"
        );
        assert!(
            files.contains_key(Path::new("services/common/pyproject.toml")),
            "{files:?}"
        );
        assert!(files.keys().all(|k| !k.to_string_lossy().contains("__pycache__")));
        let typo = manifest("inputs = [\"services/agent/**\", \"services/agnet/**\"]");
        let err = Inputs::of(&typo, "agent", &typo.services["agent"])
            .files(&root)
            .unwrap_err();
        assert!(err.to_string().contains("services/agnet/**"), "{err}");
    }

    #[test]
    fn bad_patterns_are_named_in_the_manifest() {
        let text = std::fs::read_to_string(crate::project::root().join(crate::manifest::FILE))
            .unwrap()
            .replace(
                "depends-on = [\"services/common\"]",
                "depends-on = [\"services/common\"]\ninputs = [\"services/[agent\", \"env/**\", \"**/*.py\"]",
            );
        let err = Manifest::parse(&text, Path::new("slipway.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`services/[agent` is not a glob pattern"), "{err}");
        assert!(err.contains("pattern `env/**` is under env/"), "{err}");
        assert!(err.contains("pattern `**/*.py` starts with a wildcard"), "{err}");
    }
}
