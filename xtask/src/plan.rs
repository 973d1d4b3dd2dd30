//! Plan, then run. A command that drives an external program first builds a [`Plan`]: a
//! list of [`Step`]s (program, arguments, environment, what to say on failure). `--dry-run`
//! prints the plan; tests assert on it with no engine; [`Plan::run`] executes it.
//!
//! Architecture invariant: this module is the only place that spawns a child process
//! (through duct). Every child runs in its own process group. On Ctrl-C (SIGINT), SIGTERM or SIGHUP the
//! runner forwards the signal to the whole group, waits for it to end (then SIGKILLs it),
//! and the command fails with [`Interrupted`], which `main` turns into exit code 130.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// The signal that asked us to stop (0: none yet).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP_SIGNAL.store(sig, Ordering::SeqCst);
}

/// Route SIGINT, SIGTERM and SIGHUP to a flag the runner polls, so that Ctrl-C stops the
/// child's whole process group instead of orphaning it. Called once, first thing in `main`.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic; sigaction is given a zeroed,
        // then filled, struct as POSIX requires.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// The signal received so far, if any.
pub fn stop_requested() -> Option<i32> {
    match STOP_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Clear the stop signal and return it, so that clean-up steps (taking a stack down)
/// can run after an interruption; put it back with [`restore_stop`].
pub fn take_stop() -> Option<i32> {
    match STOP_SIGNAL.swap(0, Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Put back a stop signal taken by [`take_stop`] (unless a new one arrived).
pub fn restore_stop(sig: Option<i32>) {
    if let Some(sig) = sig {
        let _ = STOP_SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// The error a command fails with when the user interrupted it.
#[derive(Debug)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted: every process this command started was stopped")
    }
}

impl std::error::Error for Interrupted {}

/// Fail with [`Interrupted`] when a stop signal has arrived (for loops between steps).
pub fn check_interrupted() -> Result<()> {
    match stop_requested() {
        Some(_) => Err(Interrupted.into()),
        None => Ok(()),
    }
}

/// What the runner does with a step's standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Straight to the terminal.
    Inherit,
    /// To the terminal, and kept for the caller to read.
    Tee,
    /// Kept only (stdout and stderr), for queries.
    Capture,
}

/// One prepared command.
#[derive(Debug, Clone)]
pub struct Step {
    /// What the step does, in a few words ("build the images").
    pub name: String,
    pub program: String,
    pub args: Vec<String>,
    /// Environment added to ours.
    pub env: Vec<(String, String)>,
    /// Values never printed (environment values or arguments), shown as `***`.
    pub secrets: BTreeSet<String>,
    pub cwd: Option<PathBuf>,
    /// What to tell the user when the step fails.
    pub on_fail: Option<String>,
    pub output: Output,
    /// Give up (and stop the group) after this long.
    pub timeout: Option<Duration>,
    /// Files this step makes that a plan stopped part-way (a failure, Ctrl-C) must not
    /// leave behind: removed when the plan stops at this step or after it.
    pub scratch: Vec<PathBuf>,
}

impl Step {
    pub fn new(name: impl Into<String>, program: impl Into<String>) -> Step {
        Step {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            secrets: BTreeSet::new(),
            cwd: None,
            on_fail: None,
            output: Output::Inherit,
            timeout: None,
            scratch: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Step {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Step
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Step {
        self.env.push((key.into(), value.into()));
        self
    }

    /// An environment variable whose value is never printed.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "for steps that set variables (compose, cosign)")
    )]
    pub fn secret_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Step {
        let value = value.into();
        self.secrets.insert(value.clone());
        self.env.push((key.into(), value));
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Step {
        self.cwd = Some(dir.into());
        self
    }

    /// `path` is this step's scratch: removed if the plan does not run to its end.
    pub fn scratch(mut self, path: impl Into<PathBuf>) -> Step {
        self.scratch.push(path.into());
        self
    }

    pub fn on_fail(mut self, advice: impl Into<String>) -> Step {
        self.on_fail = Some(advice.into());
        self
    }

    pub fn output(mut self, output: Output) -> Step {
        self.output = output;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Step {
        self.timeout = Some(timeout);
        self
    }

    fn mask<'a>(&self, value: &'a str) -> std::borrow::Cow<'a, str> {
        if self.secrets.iter().any(|s| !s.is_empty() && value.contains(s.as_str())) {
            let mut masked = value.to_owned();
            for secret in self.secrets.iter().filter(|s| !s.is_empty()) {
                masked = masked.replace(secret.as_str(), "***");
            }
            masked.into()
        } else {
            value.into()
        }
    }

    /// The command line as a shell would take it, secrets masked.
    pub fn command_line(&self) -> String {
        let mut out = String::new();
        for (key, value) in &self.env {
            out.push_str(&format!("{key}={} ", shell_quote(&self.mask(value))));
        }
        out.push_str(&shell_quote(&self.program));
        for arg in &self.args {
            out.push(' ');
            out.push_str(&shell_quote(&self.mask(arg)));
        }
        out
    }

    /// Run the step. Fails when the program cannot start, exits non-zero, times out or
    /// is interrupted.
    pub fn run(&self) -> Result<Ran> {
        let ran = self.run_unchecked()?;
        if !ran.status.success() {
            let mut msg = format!("step `{}` failed ({})", self.name, describe(ran.status));
            if self.output == Output::Capture {
                let tail = ran.stderr.trim();
                if !tail.is_empty() {
                    msg.push_str(&format!(": {}", last_lines(tail, 10)));
                }
            }
            if let Some(advice) = &self.on_fail {
                msg.push_str(&format!("\n  {advice}"));
            }
            bail!(msg);
        }
        Ok(ran)
    }

    /// Run the step and return its status whatever it is (a non-zero exit is not an
    /// error here); fails only when it cannot start, times out or is interrupted.
    pub fn run_unchecked(&self) -> Result<Ran> {
        check_interrupted()?;
        let expression = self.expression();
        let (status, stdout, stderr) = match self.output {
            Output::Inherit => {
                let handle = expression.start().map_err(|err| self.spawn_error(err))?;
                (wait_group(&handle, self.timeout), String::new(), String::new())
            }
            Output::Capture => {
                let handle = expression
                    .stdout_capture()
                    .stderr_capture()
                    .start()
                    .map_err(|err| self.spawn_error(err))?;
                let status = wait_group(&handle, self.timeout);
                let (out, err) = match handle.wait() {
                    Ok(output) => (
                        String::from_utf8_lossy(&output.stdout).into_owned(),
                        String::from_utf8_lossy(&output.stderr).into_owned(),
                    ),
                    Err(_) => Default::default(),
                };
                (status, out, err)
            }
            Output::Tee => {
                // Standard output shown as it comes and kept; standard error shown.
                let reader = std::sync::Arc::new(expression.reader().map_err(|err| self.spawn_error(err))?);
                let echo = read_in_background(Shared(std::sync::Arc::clone(&reader)), true);
                let status = wait_group(&*reader, self.timeout);
                (status, echo.join().unwrap_or_default(), String::new())
            }
        };
        match status {
            Waited::Exited(status) => Ok(Ran { status, stdout, stderr }),
            Waited::Interrupted => Err(Interrupted.into()),
            Waited::TimedOut(after) => bail!(
                "step `{}` did not finish within {}s and was stopped{}",
                self.name,
                after.as_secs(),
                self.on_fail.as_deref().map(|a| format!("\n  {a}")).unwrap_or_default()
            ),
        }
    }

    /// The step as a duct expression: its program, arguments, environment and directory,
    /// no standard input, a non-zero exit returned rather than raised, and its own
    /// process group (a signal to the group reaches grandchildren too: docker CLI
    /// plugins, cargo's rustc; the terminal's Ctrl-C reaches only us).
    fn expression(&self) -> duct::Expression {
        let mut expression = duct::cmd(&self.program, &self.args)
            .stdin_null()
            .unchecked()
            .before_spawn(|cmd| {
                cmd.process_group(0);
                Ok(())
            });
        for (k, v) in &self.env {
            expression = expression.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            expression = expression.dir(dir);
        }
        expression
    }

    /// Why the step could not start, with what to do.
    fn spawn_error(&self, err: std::io::Error) -> anyhow::Error {
        let mut msg = format!("cannot start `{}` for step `{}`: {err}", self.program, self.name);
        if err.kind() == std::io::ErrorKind::NotFound {
            msg.push_str(&format!("; is `{}` installed and on PATH?", self.program));
        }
        if let Some(advice) = &self.on_fail {
            msg.push_str(&format!("\n  {advice}"));
        }
        anyhow::anyhow!(msg)
    }
}

impl Step {
    /// Run the step with its standard output handed to `read` as a byte stream (for
    /// output too large or too binary to capture: `docker save`). Fails when the step
    /// exits non-zero, with its standard error.
    pub fn pipe<T>(&self, read: impl FnOnce(&mut dyn Read) -> Result<T>) -> Result<T> {
        check_interrupted()?;
        let reader = self
            .expression()
            .stderr_capture()
            .reader()
            .map_err(|err| self.spawn_error(err))?;
        let mut stdout = &reader;
        let result = read(&mut stdout);
        // Drain what `read` left, so the child is not blocked on a full pipe.
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        let status = wait_group(&reader, self.timeout);
        let stderr = match reader.try_wait() {
            Ok(Some(output)) => String::from_utf8_lossy(&output.stderr).into_owned(),
            _ => String::new(),
        };
        match status {
            Waited::Exited(status) if status.success() => result,
            Waited::Exited(status) => bail!("step `{}` failed ({}): {}", self.name, describe(status), stderr.trim()),
            Waited::Interrupted => Err(Interrupted.into()),
            Waited::TimedOut(after) => bail!("step `{}` did not finish within {}s", self.name, after.as_secs()),
        }
    }
}

/// What a finished step left behind.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    /// Captured standard output (empty with [`Output::Inherit`]).
    pub stdout: String,
    /// Captured standard error (only with [`Output::Capture`]).
    pub stderr: String,
}

fn read_in_background<R: Read + Send + 'static>(reader: R, echo: bool) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut kept = String::new();
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        while let Ok(n) = reader.read_until(b'\n', &mut line) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            if echo {
                print!("{text}");
            }
            kept.push_str(&text);
            line.clear();
        }
        kept
    })
}

enum Waited {
    Exited(ExitStatus),
    Interrupted,
    TimedOut(Duration),
}

/// A running duct expression, however its output is read.
trait Running {
    fn exited(&self) -> Option<ExitStatus>;
    fn pid(&self) -> Option<u32>;
}

impl Running for duct::Handle {
    fn exited(&self) -> Option<ExitStatus> {
        self.try_wait().ok().flatten().map(|o| o.status)
    }
    fn pid(&self) -> Option<u32> {
        self.pids().first().copied()
    }
}

impl Running for duct::ReaderHandle {
    fn exited(&self) -> Option<ExitStatus> {
        self.try_wait().ok().flatten().map(|o| o.status)
    }
    fn pid(&self) -> Option<u32> {
        self.pids().first().copied()
    }
}

/// A reader shared with the thread that waits (duct reads through `&ReaderHandle`).
struct Shared(std::sync::Arc<duct::ReaderHandle>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self.0).read(buf)
    }
}

/// Wait for the child, polling for stop signals. On a signal or a timeout the whole
/// group gets the signal (SIGINT on timeout), then SIGKILL after a grace period.
fn wait_group(child: &dyn Running, timeout: Option<Duration>) -> Waited {
    let started = Instant::now();
    // Quick children (docker and git queries) are seen at once; long ones cost little.
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.exited() {
            return Waited::Exited(status);
        }
        let stop = stop_requested();
        let timed_out = timeout.filter(|t| started.elapsed() >= *t);
        if stop.is_some() || timed_out.is_some() {
            stop_group(child, stop.unwrap_or(libc::SIGINT));
            return match timed_out {
                Some(after) if stop.is_none() => Waited::TimedOut(after),
                _ => Waited::Interrupted,
            };
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Signal the group, give it up to 10 s to exit, then SIGKILL whatever is left of it.
fn stop_group(child: &dyn Running, sig: i32) {
    let Some(pgid) = child.pid().map(|p| p as libc::pid_t) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals the process group we created.
    unsafe { libc::kill(-pgid, sig) };
    let deadline = Instant::now() + Duration::from_secs(10);
    // The leader's own exit counts (a zombie until duct reaps it): duct reports the
    // expression finished only once its output pipes close, which a grandchild that
    // ignores the signal may hold open until the SIGKILL below.
    while Instant::now() < deadline && child.exited().is_none() && !ended(pgid) {
        thread::sleep(Duration::from_millis(20));
    }
    // The leader may be gone while its children are not: kill the group either way.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && child.exited().is_none() {
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` has ended: gone, or a zombie not yet reaped.
fn ended(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.rsplit(") ").next().is_some_and(|rest| rest.starts_with('Z')))
        .unwrap_or(true)
}

/// An ordered list of steps: what `--dry-run` prints and what `run` executes.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn new() -> Plan {
        Plan::default()
    }

    pub fn push(&mut self, step: Step) {
        self.steps.push(step);
    }

    /// The plan as text: one numbered step a line, the command line indented below it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (i, step) in self.steps.iter().enumerate() {
            out.push_str(&format!("{}. {}\n   {}\n", i + 1, step.name, step.command_line()));
        }
        out
    }

    /// Print the plan (with `dry_run`) or run every step in order, stopping at the first
    /// failure. Returns what each step left behind (nothing on a dry run).
    pub fn execute(&self, dry_run: bool) -> Result<Vec<Ran>> {
        if dry_run {
            print!("{}", self.render());
            return Ok(Vec::new());
        }
        let mut ran = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            crate::ui::step(&step.name);
            match step.run() {
                Ok(r) => ran.push(r),
                Err(err) => {
                    // Nothing half-written: the scratch of every step run so far goes.
                    for path in self.steps[..=i].iter().flat_map(|s| &s.scratch) {
                        let _ = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir_all(path));
                    }
                    return Err(err.context(format!("while running: {}", step.command_line())));
                }
            }
        }
        Ok(ran)
    }
}

/// Quote a word for a POSIX shell only when it needs it.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A status in words: "exit code 2", "killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".to_owned(),
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n    ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_masks_secrets_and_quotes() {
        let step = Step::new("login", "docker")
            .args(["login", "--password", "hunter2", "reg istry"])
            .secret_env("TOKEN", "s3cret")
            .env("PLAIN", "yes");
        let line = step.command_line();
        assert_eq!(
            line,
            "TOKEN='***' PLAIN=yes docker login --password hunter2 'reg istry'"
        );
        let step = step.clone();
        let mut step = step;
        step.secrets.insert("hunter2".into());
        assert!(!step.command_line().contains("hunter2"));
        assert!(!step.command_line().contains("s3cret"));
    }

    #[test]
    fn dry_run_prints_and_runs_nothing() {
        let marker = std::env::temp_dir().join(format!("slipway-dry-run-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let mut plan = Plan::new();
        plan.push(Step::new("touch a file", "touch").arg(marker.display().to_string()));
        assert_eq!(
            plan.render(),
            format!("1. touch a file\n   touch {}\n", marker.display())
        );
        assert!(plan.execute(true).unwrap().is_empty());
        assert!(!marker.exists(), "a dry run ran the step");
        let ran = plan.execute(false).unwrap();
        assert!(ran[0].status.success() && marker.exists());
        std::fs::remove_file(&marker).unwrap();
    }

    #[test]
    fn failing_step_says_what_to_do() {
        let err = Step::new("always fails", "sh")
            .args(["-c", "echo oops >&2; exit 3"])
            .output(Output::Capture)
            .on_fail("try again later")
            .run()
            .unwrap_err()
            .to_string();
        assert!(err.contains("exit code 3"), "{err}");
        assert!(err.contains("oops"), "{err}");
        assert!(err.contains("try again later"), "{err}");
    }

    #[test]
    fn missing_program_is_named() {
        let err = Step::new("ghost", "slipway-no-such-program")
            .run()
            .unwrap_err()
            .to_string();
        assert!(err.contains("slipway-no-such-program"), "{err}");
        assert!(err.contains("installed"), "{err}");
    }

    #[test]
    fn a_plan_stopped_part_way_leaves_no_scratch() {
        let dir = std::env::temp_dir().join(format!("slipway-scratch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (made, kept) = (dir.join("half.tar"), dir.join("kept.txt"));
        let touch = |path: &std::path::Path| {
            Step::new("touch", "touch")
                .arg(path.display().to_string())
                .output(Output::Capture)
        };
        let plan = Plan {
            steps: vec![
                touch(&kept),
                touch(&made).scratch(&made),
                Step::new("fail", "false").output(Output::Capture),
            ],
        };
        assert!(plan.execute(false).is_err());
        assert!(!made.exists(), "a failed plan left its scratch");
        assert!(kept.exists(), "only scratch is removed");
        // Run to its end, a plan keeps what its steps made (the last step removes it).
        let plan = Plan {
            steps: vec![touch(&made).scratch(&made)],
        };
        plan.execute(false).unwrap();
        assert!(made.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn timeout_stops_the_whole_group() {
        // The grandchild (the inner sleep) must die with its parent shell.
        let marker = std::env::temp_dir().join(format!("slipway-timeout-{}", std::process::id()));
        let script = format!("sleep 30 & echo $! > {}; wait", marker.display());
        let err = Step::new("slow", "sh")
            .args(["-c", &script])
            .timeout(Duration::from_millis(300))
            .output(Output::Capture)
            .run()
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not finish"), "{err}");
        let pid: i32 = std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
        let _ = std::fs::remove_file(&marker);
        // Gone, or a zombie waiting for init to reap it: either way not running. (A
        // background job of `sh -c` ignores SIGINT; the SIGKILL that follows lands
        // asynchronously, so give it a moment.)
        let running = || {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            !state.is_empty() && state.rsplit(") ").next().is_some_and(|rest| !rest.starts_with('Z'))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while running() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!running(), "grandchild {pid} survived the group kill");
    }
}
