//! The text edits `new` and `remove` make, on lines, so that the comments and layout of
//! hand-written files survive: a TOML table (with the comment lines right above its
//! header) or a compose service is a [`Block`]; a block is inserted after another with one
//! blank line before it, and removing it takes that blank line away again, so `remove`
//! after `new` gives back the very bytes.

/// Lines `start..end` of a file: a block's comment lines, its header and its body,
/// without the blank lines after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// `services.agent`, `certs.mtls` (TOML), or `agent` (a compose service).
    pub key: String,
    pub start: usize,
    pub end: usize,
}

pub fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

pub fn join(lines: &[String]) -> String {
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

/// Where a block that starts with `header` at `at` really starts: at the comment lines
/// right above it.
fn with_comments(lines: &[String], at: usize) -> usize {
    let mut start = at;
    while start > 0 && is_comment(&lines[start - 1]) {
        start -= 1;
    }
    start
}

/// Back off the blank lines before `end`.
fn trim_end(lines: &[String], start: usize, mut end: usize) -> usize {
    while end > start + 1 && is_blank(&lines[end - 1]) {
        end -= 1;
    }
    end
}

/// The tables of a TOML file, in order: `[name]` and `[[name]]` headers.
pub fn toml_tables(lines: &[String]) -> Vec<Block> {
    let headers: Vec<(usize, String)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, line)| {
            let t = line.trim();
            let key = t
                .strip_prefix("[[")
                .and_then(|r| r.strip_suffix("]]"))
                .or_else(|| t.strip_prefix('[').and_then(|r| r.strip_suffix(']')))?;
            Some((i, key.trim().to_owned()))
        })
        .collect();
    blocks(lines, &headers, lines.len())
}

/// The services of a compose file: the keys indented by two spaces under the top-level
/// `section:` (`services`, `volumes`).
pub fn yaml_children(lines: &[String], section: &str) -> Vec<Block> {
    let Some(top) = lines.iter().position(|l| l.trim_end() == format!("{section}:")) else {
        return Vec::new();
    };
    // The section ends at the next top-level key (or the comment lines above it).
    let next_top = (top + 1..lines.len())
        .find(|&i| {
            let l = &lines[i];
            !is_blank(l) && !l.starts_with(' ') && !is_comment(l)
        })
        .map(|i| with_comments(lines, i))
        .unwrap_or(lines.len());
    let headers: Vec<(usize, String)> = (top + 1..next_top)
        .filter_map(|i| {
            let l = &lines[i];
            let rest = l.strip_prefix("  ")?;
            if rest.starts_with(' ') || is_comment(rest) || is_blank(rest) {
                return None;
            }
            let key = rest.trim_end().strip_suffix(':')?;
            Some((i, key.to_owned()))
        })
        .collect();
    blocks(lines, &headers, next_top)
}

fn blocks(lines: &[String], headers: &[(usize, String)], limit: usize) -> Vec<Block> {
    let starts: Vec<usize> = headers.iter().map(|(i, _)| with_comments(lines, *i)).collect();
    headers
        .iter()
        .enumerate()
        .map(|(n, (_, key))| {
            let start = starts[n];
            let end = starts.get(n + 1).copied().unwrap_or(limit);
            Block {
                key: key.clone(),
                start,
                end: trim_end(lines, start, end),
            }
        })
        .collect()
}

/// Insert `block` after line `after` (exclusive end of the block before it), with one
/// blank line in between.
pub fn insert(lines: &mut Vec<String>, after: usize, block: &[String]) {
    let mut new = vec![String::new()];
    new.extend(block.iter().cloned());
    lines.splice(after..after, new);
}

/// Remove a block and the one blank line that [`insert`] put before it (or, for a first
/// block, the one after it).
pub fn remove(lines: &mut Vec<String>, block: &Block) {
    let (mut start, mut end) = (block.start, block.end);
    if start > 0 && is_blank(&lines[start - 1]) {
        start -= 1;
    } else if end < lines.len() && is_blank(&lines[end]) {
        end += 1;
    }
    lines.drain(start..end);
}

/// `key = "value"` in a TOML block's lines.
pub fn toml_string(lines: &[String], block: &Block, key: &str) -> Option<String> {
    lines[block.start..block.end].iter().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// Whether `word` occurs in `text` as a whole word (not inside a longer name: letters and
/// digits around it end it; `_`, `-`, `.` and `/` separate).
pub fn has_word(text: &str, word: &str) -> bool {
    replace_word(text, word, "\u{0}") != text
}

/// Replace whole-word occurrences of `from` (see [`has_word`]).
pub fn replace_word(text: &str, from: &str, to: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(pos) = text[i..].find(from) {
        let at = i + pos;
        let end = at + from.len();
        let before_ok = at == 0 || !bytes[at - 1].is_ascii_alphanumeric();
        let after_ok = end == bytes.len() || !bytes[end].is_ascii_alphanumeric();
        out.push_str(&text[i..at]);
        out.push_str(if before_ok && after_ok { to } else { from });
        i = end;
    }
    out.push_str(&text[i..]);
    out
}

/// Replace the environment-variable prefix `FROM_` by `TO_` (`GATEWAY_LISTEN`), never
/// inside a longer name (`BAD_GATEWAY`).
pub fn replace_env_prefix(text: &str, from: &str, to: &str) -> String {
    let from = format!("{from}_");
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(pos) = text[i..].find(&from) {
        let at = i + pos;
        let before_ok = at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        out.push_str(&text[i..at]);
        if before_ok {
            out.push_str(to);
            out.push('_');
        } else {
            out.push_str(&from);
        }
        i = at + from.len();
    }
    out.push_str(&text[i..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = "# top\nbrand = \"x\"\n\n[services.a]\nkind = \"rust\"\n\n[services.b]\n# inside\nkind = \"python\"\n\n# The a calls b.\n[[certs.mtls]]\nclient = \"a\"\nserver = \"b\"\n\n# release\n[release]\n";

    #[test]
    fn tables_hold_their_comments_and_not_the_blank_lines_after() {
        let lines = lines(TOML);
        let tables = toml_tables(&lines);
        let keys: Vec<&str> = tables.iter().map(|b| b.key.as_str()).collect();
        assert_eq!(keys, ["services.a", "services.b", "certs.mtls", "release"]);
        assert_eq!(
            lines[tables[1].start..tables[1].end].join("|"),
            "[services.b]|# inside|kind = \"python\""
        );
        assert_eq!(lines[tables[2].start], "# The a calls b.");
        assert_eq!(toml_string(&lines, &tables[2], "server").as_deref(), Some("b"));
    }

    #[test]
    fn remove_undoes_insert_to_the_byte() {
        let mut edited = lines(TOML);
        let tables = toml_tables(&edited);
        let block: Vec<String> = ["[services.c]".to_owned(), "kind = \"rust\"".to_owned()].into();
        insert(&mut edited, tables[1].end, &block);
        assert!(join(&edited).contains("kind = \"python\"\n\n[services.c]\nkind = \"rust\"\n\n# The a"));
        let c = toml_tables(&edited)
            .into_iter()
            .find(|b| b.key == "services.c")
            .unwrap();
        remove(&mut edited, &c);
        assert_eq!(join(&edited), TOML);
        // The first block goes with the blank line after it.
        let mut first = lines(TOML);
        let a = toml_tables(&first)[0].clone();
        remove(&mut first, &a);
        assert!(join(&first).starts_with("# top\nbrand = \"x\"\n\n[services.b]"));
    }

    #[test]
    fn compose_services_end_at_the_next_top_level_key() {
        let text = "services:\n  a:\n    image: a\n\n  b:\n    image: b\n    x:\n      y: 1\n\n# vols\nvolumes:\n  a-target:\n";
        let lines = lines(text);
        let services = yaml_children(&lines, "services");
        assert_eq!(services.iter().map(|b| b.key.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(services[1].end, 8);
        let volumes = yaml_children(&lines, "volumes");
        assert_eq!(volumes[0].key, "a-target");
    }

    #[test]
    fn words_are_whole() {
        assert_eq!(
            replace_word("agent agents test_agent agent.app magent agent-client", "agent", "bill"),
            "bill agents test_bill bill.app magent bill-client"
        );
        assert!(has_word("services/agent/src", "agent"));
        assert!(!has_word("services/agents", "agent"));
        assert_eq!(
            replace_env_prefix("BAD_GATEWAY GATEWAY_LISTEN ${GATEWAY_PORT:-1}", "GATEWAY", "LEDGER"),
            "BAD_GATEWAY LEDGER_LISTEN ${LEDGER_PORT:-1}"
        );
    }
}
