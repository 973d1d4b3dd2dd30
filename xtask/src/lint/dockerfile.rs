//! The rules over a Dockerfile's text (per stage, following `FROM` chains to the stage
//! that runs) and over a built image's configuration: each returns every violation.

use crate::manifest::Target;

/// One Dockerfile instruction, continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instruction {
    line: usize,
    keyword: String,
    rest: String,
}

fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current: Option<Instruction> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if current.is_none() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if current.is_some() && line.starts_with('#') {
            continue;
        }
        let (body, continues) = match line.strip_suffix('\\') {
            Some(b) => (b.trim_end(), true),
            None => (line, false),
        };
        match &mut current {
            Some(inst) => {
                inst.rest.push(' ');
                inst.rest.push_str(body);
            }
            None => {
                let (keyword, rest) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
                current = Some(Instruction {
                    line: i + 1,
                    keyword: keyword.to_uppercase(),
                    rest: rest.trim().to_owned(),
                });
            }
        }
        if !continues {
            out.extend(current.take());
        }
    }
    out.extend(current);
    out
}

/// A stage: its name, what it starts `FROM`, and its instructions.
struct Stage {
    name: Option<String>,
    from: String,
    body: Vec<Instruction>,
}

fn stages(insts: &[Instruction]) -> Vec<Stage> {
    let mut out: Vec<Stage> = Vec::new();
    for inst in insts {
        if inst.keyword == "FROM" {
            let words: Vec<&str> = inst.rest.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            out.push(Stage {
                name,
                from: words.first().unwrap_or(&"").to_string(),
                body: Vec::new(),
            });
        } else if let Some(stage) = out.last_mut() {
            stage.body.push(inst.clone());
        }
    }
    out
}

const SECRET_NAMES: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "PRIVATE_KEY",
    "API_KEY",
    "ACCESS_KEY",
];

fn secret_like(name: &str) -> bool {
    let upper = name.to_uppercase();
    SECRET_NAMES.iter().any(|s| upper.contains(s))
}

/// Every violation of the Dockerfile rules, for the stage `target` (the one that runs).
pub fn dockerfile(text: &str, target: Target) -> Vec<String> {
    let insts = instructions(text);
    let stages = stages(&insts);
    let args: Vec<String> = insts
        .iter()
        .filter(|i| i.keyword == "ARG")
        .map(|i| i.rest.split('=').next().unwrap_or("").trim().to_owned())
        .collect();
    let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
    let mut v = Vec::new();
    for stage in &stages {
        let from = stage.from.as_str();
        let is_arg = from.starts_with('$');
        let is_stage = names.contains(&from);
        if !is_arg && !is_stage && from != "scratch" {
            let image = from.rsplit('/').next().unwrap_or(from);
            if !image.contains(':') && !image.contains('@') {
                v.push(format!("DL3006: `FROM {from}` has no tag: pin one"));
            } else if image.ends_with(":latest") {
                v.push(format!("DL3007: `FROM {from}` uses latest: pin a version"));
            }
            if from.contains("alpine") {
                v.push(format!("one Debian base: `FROM {from}` is not Debian"));
            }
        }
        if is_arg
            && !args.iter().any(|a| {
                from.trim_start_matches("${")
                    .trim_start_matches('$')
                    .trim_end_matches('}')
                    == a
            })
        {
            v.push(format!("`FROM {from}` names an ARG that is never declared"));
        }
    }
    for inst in &insts {
        let at = format!("line {}", inst.line);
        match inst.keyword.as_str() {
            "ADD" => v.push(format!("DL3020 ({at}): use COPY for files, not ADD")),
            "CMD" | "ENTRYPOINT" if !inst.rest.starts_with('[') => v.push(format!(
                "DL3025 ({at}): {} in JSON form, so signals reach the process",
                inst.keyword
            )),
            "RUN" => {
                let r = &inst.rest;
                if r.contains("apt-get install") && !r.contains("--no-install-recommends") {
                    v.push(format!(
                        "DL3015 ({at}): apt-get install without --no-install-recommends"
                    ));
                }
                if (r.contains("apt-get update") || r.contains("apt-get install"))
                    && !r.contains("rm -rf /var/lib/apt/lists")
                    && !r.contains("target=/var/lib/apt/lists")
                {
                    v.push(format!(
                        "DL3009 ({at}): apt lists stay in the layer: mount a cache at /var/lib/apt/lists or remove them"
                    ));
                }
                let pipes = r.replace("||", "").contains('|');
                if pipes && !r.contains("pipefail") {
                    v.push(format!(
                        "DL4006 ({at}): a pipe without `set -o pipefail` hides the failure of its first command"
                    ));
                }
            }
            "ENV" | "ARG" => {
                let name = inst.rest.split(['=', ' ']).next().unwrap_or("");
                if secret_like(name) {
                    v.push(format!(
                        "CIS-DI-0010 ({at}): {} {name} looks like a secret: pass it as a BuildKit secret",
                        inst.keyword
                    ));
                }
            }
            // From the build context (not from another stage): no key, no certificates dir.
            "COPY"
                if !inst.rest.contains("--from=")
                    && (inst.rest.contains(".key")
                        || inst.rest.contains("certs/")
                        || inst.rest.contains(".slipway")) =>
            {
                v.push(format!(
                    "({at}): COPY of key or certificate files: only the CA travels, as a secret"
                ))
            }
            _ => {}
        }
    }
    // The stage that runs, and the stages it descends from.
    let mut chain: Vec<&Stage> = Vec::new();
    let mut next = stages.iter().find(|s| s.name.as_deref() == Some(target.name()));
    while let Some(stage) = next {
        chain.push(stage);
        next = stages.iter().find(|s| s.name.as_deref() == Some(stage.from.as_str()));
    }
    if chain.is_empty() {
        v.push(format!(
            "no stage named `{target}`: the Dockerfile needs base -> deps -> local | dev | prod"
        ));
        return v;
    }
    let find = |kw: &str| chain.iter().find_map(|s| s.body.iter().rev().find(|i| i.keyword == kw));
    if find("HEALTHCHECK").is_none_or(|h| h.rest.trim().eq_ignore_ascii_case("NONE")) {
        v.push(format!("DL3057/CIS-DI-0006: stage `{target}` has no HEALTHCHECK"));
    }
    if target == Target::Prod {
        match find("USER") {
            None => v.push("DL3002/CIS-DI-0001: stage `prod` sets no USER: it would run as root".into()),
            Some(u) if is_root(u.rest.split(':').next().unwrap_or("")) => v.push(format!(
                "DL3002/CIS-DI-0001 (line {}): stage `prod` runs as root",
                u.line
            )),
            Some(_) => {}
        }
    }
    v
}

fn is_root(user: &str) -> bool {
    let user = user.trim();
    user.is_empty() || user == "root" || user == "0"
}

/// Every violation of the rules over a built image's configuration
/// (`docker image inspect`), for the stage `target`.
pub fn image_config(inspect: &serde_json::Value, target: Target) -> Vec<String> {
    let config = &inspect["Config"];
    let mut v = Vec::new();
    let user = config["User"].as_str().unwrap_or("");
    if target == Target::Prod && is_root(user.split(':').next().unwrap_or("")) {
        v.push(format!(
            "CIS-DI-0001: the image runs as `{}`: prod runs as a non-root user",
            if user.is_empty() { "root" } else { user }
        ));
    }
    let health = config["Healthcheck"]["Test"].as_array();
    if health.is_none_or(|t| t.is_empty() || t[0] == "NONE") {
        v.push("CIS-DI-0006: the image has no HEALTHCHECK".into());
    }
    for env in config["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str())
    {
        let name = env.split('=').next().unwrap_or("");
        if secret_like(name) {
            v.push(format!("CIS-DI-0010: ENV {name} looks like a secret"));
        }
    }
    for key in ["source", "revision", "version", "created"] {
        if config["Labels"][format!("org.opencontainers.image.{key}")].is_null() {
            v.push(format!("the OCI label org.opencontainers.image.{key} is missing"));
        }
    }
    v
}
