//! Terminal output: step headers, check marks and the closing summary. Colour only on a
//! terminal and never when `NO_COLOR` is set (<https://no-color.org>). Progress and
//! diagnostics go to stderr; results a program may read go to stdout.

use std::io::IsTerminal;
use std::time::Duration;

fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

fn paint(code: &str, text: &str) -> String {
    if color() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// The mark for a check's status: `ok`, `warn` or `FAIL`.
pub fn mark(status: &str) -> String {
    match status {
        "ok" => paint("32", "ok  "),
        "warn" => paint("33", "warn"),
        _ => paint("31;1", "FAIL"),
    }
}

/// Announce a step of a plan.
pub fn step(name: &str) {
    eprintln!("{} {name}", paint("36;1", "==>"));
}

/// A line of progress or advice.
pub fn note(text: &str) {
    eprintln!("{} {text}", paint("2", "   "));
}

/// A warning: something works, but not as it should.
pub fn warn(text: &str) {
    eprintln!("{} {text}", paint("33;1", "warning:"));
}

/// The error that ends a command.
pub fn error(text: &str) {
    eprintln!("{} {text}", paint("31;1", "error:"));
}

/// The closing line of every command: what it was and how long it took.
pub fn summary(command: &str, ok: bool, took: Duration) {
    let what = if ok { paint("32", "done") } else { paint("31", "failed") };
    eprintln!("{what}: `cargo xtask {command}` in {:.1}s", took.as_secs_f64());
}
