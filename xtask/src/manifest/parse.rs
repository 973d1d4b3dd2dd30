//! Reading slipway.toml: serde over a spanned TOML document, then every problem at
//! once, each with its line and column and a caret under the text at fault (an unknown
//! key with the nearest known one).

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::*;

/// A problem found in the manifest, located in its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The source line, for the excerpt under the message.
    pub source_line: String,
    /// How many characters to underline from `column`.
    pub width: usize,
}

/// Every problem of one manifest file.
#[derive(Debug)]
pub struct Problems {
    pub file: PathBuf,
    pub list: Vec<Problem>,
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.list.len();
        writeln!(
            f,
            "{} has {n} problem{}:",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.list {
            writeln!(f, "{}:{}:{}: {}", self.file.display(), p.line, p.column, p.message)?;
            if !p.source_line.is_empty() {
                let gutter = p.line.to_string().len();
                writeln!(f, "{:>gutter$} | {}", p.line, p.source_line)?;
                let pad: String = p
                    .source_line
                    .chars()
                    .take(p.column - 1)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                writeln!(f, "{:>gutter$} | {pad}{}", "", "^".repeat(p.width.max(1)))?;
            }
        }
        write!(f, "Fix the manifest and run the command again.")
    }
}

impl std::error::Error for Problems {}

/// Turns byte spans into lines and columns.
pub(super) struct Source<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Source<'_> {
    pub(super) fn report(&mut self, span: Range<usize>, message: impl Into<String>) {
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..].find('\n').map_or(self.text.len(), |i| start + i);
        let line = self.text[..start].matches('\n').count() + 1;
        let column = self.text[line_start..start].chars().count() + 1;
        let end = span.end.clamp(start, line_end);
        let width = self.text[start..end].chars().count();
        let problem = Problem {
            line,
            column,
            message: message.into(),
            source_line: self.text[line_start..line_end].trim_end().to_owned(),
            width,
        };
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }
}

impl Manifest {
    /// Read and check the manifest file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            anyhow::anyhow!(
                "cannot read the manifest {}: {err}; every Slipway checkout has one at its root",
                path.display()
            )
        })?;
        Manifest::parse(&text, path).map_err(anyhow::Error::new)
    }

    /// Parse and check a manifest's text; `file` only names it in messages.
    pub fn parse(text: &str, file: &Path) -> Result<Manifest, Problems> {
        let mut src = Source {
            text,
            problems: Vec::new(),
        };
        let (mut doc, syntax) = DeTable::parse_recoverable(text);
        for err in &syntax {
            src.report(err.span().unwrap_or(0..0), err.message().trim().to_owned());
        }
        let mut manifest = None;
        if syntax.is_empty() {
            let mut removed: Vec<String> = Vec::new();
            // Each round removes one key from the document: bounded by its size.
            for _ in 0..256 {
                match Manifest::deserialize(toml::de::Deserializer::from(doc.clone())) {
                    Ok(m) => {
                        manifest = Some(m);
                        break;
                    }
                    Err(err) => {
                        let message = err.message().trim().to_owned();
                        // A field we removed ourselves is not missing in the user's file.
                        if removed.iter().any(|k| message == format!("missing field `{k}`")) {
                            break;
                        }
                        let span = err.span().unwrap_or(0..0);
                        src.report(span.clone(), explain(&message));
                        match remove_at(doc.get_mut(), &span) {
                            Some(key) => removed.push(key),
                            None => break,
                        }
                    }
                }
            }
        }
        if let (Some(m), true) = (&manifest, src.problems.is_empty()) {
            m.check(&mut src);
        }
        match manifest {
            Some(m) if src.problems.is_empty() => Ok(m),
            _ => {
                if src.problems.is_empty() {
                    src.report(0..0, "the manifest could not be read");
                }
                src.problems.sort_by_key(|p| (p.line, p.column));
                Err(Problems {
                    file: file.to_owned(),
                    list: src.problems,
                })
            }
        }
    }
}

/// Make serde's messages say what is allowed where they do not already.
pub(super) fn explain(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        if rest.contains("there are no fields") {
            return format!(
                "unknown field {}: this table takes no keys",
                rest.split(',').next().unwrap_or(rest)
            );
        }
        // "`knd`, expected one of `kind`, `path`": suggest the nearest allowed key.
        let mut names = rest.split('`').skip(1).step_by(2);
        if let Some(typo) = names.next() {
            let nearest = names
                .min_by_key(|n| edit_distance(typo, n))
                .filter(|n| edit_distance(typo, n) <= 2);
            if let Some(nearest) = nearest {
                return format!("unknown field {rest} (did you mean `{nearest}`?)");
            }
        }
        return format!("unknown field {rest}");
    }
    if message.starts_with("missing field") {
        return format!("{message}: add it to this table");
    }
    message.to_owned()
}

/// Remove the key whose key or value holds `span`, as deep as it goes; returns its name.
/// Tables are searched whatever their own span: a table made by a `[header]` has a span
/// that does not cover the keys under it.
pub(super) fn remove_at(table: &mut DeTable<'_>, span: &Range<usize>) -> Option<String> {
    for (_, value) in table.iter_mut() {
        let deeper = match value.get_mut() {
            DeValue::Table(inner) => remove_at(inner, span),
            DeValue::Array(items) => items.iter_mut().find_map(|item| match item.get_mut() {
                DeValue::Table(inner) => remove_at(inner, span),
                _ => None,
            }),
            _ => None,
        };
        if deeper.is_some() {
            return deeper;
        }
    }
    let hit = |range: Range<usize>| range.start <= span.start && span.start < range.end.max(range.start + 1);
    let key = table
        .iter()
        .find(|(k, v)| hit(k.span()) || hit(v.span()))
        .map(|(k, _)| k.clone())?;
    table.remove(&key);
    Some(key.get_ref().to_string())
}

/// Levenshtein distance, for "did you mean".
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + usize::from(ca != *cb));
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}
