//! `--help`, one command at a time. xflags renders the whole CLI as one text (sections
//! headed `xtask`, `xtask build`, `xtask ci matrix`, ...); this cuts it up: the root
//! `--help` lists the commands with their first line, and `COMMAND --help` prints that
//! command's own section, its subcommands listed, and the global options. docs/cli.md is
//! the same sections, one per command.

use crate::flags;

/// Every command path, for `--help` and the CLI reference (a test checks it against the
/// commands flags.rs declares).
pub const COMMANDS: &[&[&str]] = &[
    &[],
    &["doctor"],
    &["test"],
    &["build"],
    &["builders"],
    &["bootstrap"],
    &["lint"],
    &["dev"],
    &["down"],
    &["logs"],
    &["ps"],
    &["new"],
    &["remove"],
    &["check"],
    &["deps"],
    &["ci"],
    &["ci", "matrix"],
    &["ci", "join"],
    &["ci", "workflow"],
    &["scan"],
    &["sbom"],
    &["release"],
    &["verify"],
    &["prune"],
    &["bench"],
    &["certs"],
    &["certs", "status"],
    &["codegen"],
];

/// Subcommands xflags shows under their parent's name (`default cmd`): what a user may
/// also type.
const DEFAULTS: &[(&str, &str)] = &[("ci", "run"), ("certs", "make")];

/// xflags's whole help text.
fn full() -> String {
    match flags::Xtask::from_vec(vec!["--help".into()]) {
        Err(err) if err.is_help() => err.to_string(),
        _ => unreachable!("--help always yields the help text"),
    }
}

/// The sections of the whole text: (command path, text), the root first.
fn sections(text: &str) -> Vec<(Vec<String>, String)> {
    let mut out: Vec<(Vec<String>, String)> = Vec::new();
    for line in text.lines() {
        if line == "xtask" || line.starts_with("xtask ") {
            let path = line.split_whitespace().skip(1).map(str::to_owned).collect();
            out.push((path, String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// A section's description in a few words: its first sentence, cut at a word before
/// the line would pass 80 columns.
fn summary(body: &str) -> String {
    let paragraph: Vec<&str> = body
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let text = paragraph.join(" ");
    let sentence = text.split(". ").next().unwrap_or("").trim_end_matches('.');
    const MAX: usize = 64;
    if sentence.chars().count() <= MAX {
        return sentence.to_owned();
    }
    let mut cut = String::new();
    for word in sentence.split(' ') {
        if cut.chars().count() + word.chars().count() + 1 > MAX - 3 {
            break;
        }
        if !cut.is_empty() {
            cut.push(' ');
        }
        cut.push_str(word);
    }
    format!("{}...", cut.trim_end_matches([',', ':', ';']))
}

/// Undo xflags's indentation of a subcommand's section (two spaces).
fn dedent(body: &str) -> String {
    body.lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The help of one command path (`[]` for the root).
pub fn for_command(path: &[&str]) -> String {
    let text = full();
    let all = sections(&text);
    let (_, root) = &all[0];
    let global = root
        .split("OPTIONS:")
        .nth(1)
        .and_then(|o| o.split("SUBCOMMANDS:").next())
        .unwrap_or("")
        .trim_end();
    let children: Vec<&(Vec<String>, String)> = all
        .iter()
        .filter(|(p, _)| p.len() == path.len() + 1 && p.iter().zip(path).all(|(a, b)| a == b))
        .collect();
    let mut out = String::new();
    if path.is_empty() {
        out.push_str("cargo xtask [--dry-run] COMMAND [FLAGS]\n");
        out.push_str(root.split("OPTIONS:").next().unwrap_or("").trim_end());
        out.push_str("\n\nOPTIONS:");
        out.push_str(global);
        out.push_str("\n\nCOMMANDS:\n");
    } else {
        let Some((_, body)) = all
            .iter()
            .find(|(p, _)| p.iter().map(String::as_str).eq(path.iter().copied()))
        else {
            return for_command(&[]);
        };
        out.push_str(&format!("cargo xtask {}\n\n", path.join(" ")));
        out.push_str(dedent(body).trim_end());
        if let Some((_, sub)) = DEFAULTS.iter().find(|(parent, _)| path == [*parent]) {
            out.push_str(&format!(
                "\n\n`cargo xtask {0} {sub}` is the same command, named.",
                path.join(" ")
            ));
        }
        out.push_str("\n\nGLOBAL OPTIONS:");
        out.push_str(global);
        out.push('\n');
        if children.is_empty() {
            return out;
        }
        out.push_str("\nSUBCOMMANDS:\n");
    }
    let width = children
        .iter()
        .map(|(p, _)| p.last().map_or(0, String::len))
        .max()
        .unwrap_or(0);
    for (p, body) in &children {
        let name = p.last().map(String::as_str).unwrap_or("");
        out.push_str(&format!("  {name:width$}  {}\n", summary(body)));
    }
    out.push_str(&format!(
        "\n`cargo xtask {}{}COMMAND --help` for each one's flags.\n",
        path.join(" "),
        if path.is_empty() { "" } else { " " }
    ));
    out
}

/// The command path the arguments name (the longest known one), for `--help`.
pub fn path_of(args: &[String]) -> Vec<&'static str> {
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    COMMANDS
        .iter()
        .filter(|p| p.len() <= words.len() && p.iter().zip(&words).all(|(a, b)| a == b))
        .max_by_key(|p| p.len())
        .map(|p| p.to_vec())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_command_has_its_own_help() {
        let root = for_command(&[]);
        assert!(root.contains("COMMANDS:") && root.contains("  build "), "{root}");
        assert!(
            !root.contains("--no-engine"),
            "the root help repeats every flag:\n{root}"
        );
        let build = for_command(&["build"]);
        assert!(build.starts_with("cargo xtask build\n\n"), "{build}");
        assert!(build.contains("--target") && build.contains("--dry-run"), "{build}");
        assert!(!build.contains("--no-engine"), "{build}");
        let ci = for_command(&["ci"]);
        assert!(
            ci.contains("`cargo xtask ci run` is the same command") && ci.contains("  matrix  "),
            "{ci}"
        );
        assert!(!ci.contains("--json"), "ci matrix's flags in ci's help:\n{ci}");
        for path in COMMANDS {
            assert!(for_command(path).starts_with(&format!("cargo xtask {}", path.join(" ")).trim_end().to_owned()));
        }
    }

    #[test]
    fn every_command_flags_declares_is_listed() {
        let declared: Vec<Vec<String>> = sections(&full()).into_iter().map(|(p, _)| p).collect();
        let listed: Vec<Vec<String>> = COMMANDS
            .iter()
            .map(|p| p.iter().map(|s| s.to_string()).collect())
            .collect();
        assert_eq!(declared, listed);
    }

    #[test]
    fn the_path_is_the_longest_command_named() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            path_of(&args(&["--dry-run", "certs", "status", "--help"])),
            ["certs", "status"]
        );
        assert_eq!(path_of(&args(&["ci", "gateway-prod-linux-amd64", "-h"])), ["ci"]);
        assert_eq!(path_of(&args(&["--help"])), Vec::<&str>::new());
        assert_eq!(path_of(&args(&["nope", "--help"])), Vec::<&str>::new());
    }
}
