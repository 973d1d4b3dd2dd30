//! A bounded load on the running stack, for `cargo xtask bench`: N requests through the
//! gateway (which calls the agent over mTLS for each) at a fixed concurrency, from one
//! `curl --parallel` on loopback; each request's status and time as curl reports it,
//! and when it ended, as its line arrived. Also the memory of a container's processes
//! (`docker top`).

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};

use crate::docker;
use crate::plan::{Output, Step};

/// One request of a load run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// HTTP status (0: no answer: refused, reset, timed out).
    pub code: u16,
    /// When it ended (its line arrived) and how long it took (curl's `time_total`).
    pub end: SystemTime,
    pub secs: f64,
}

impl Sample {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.code)
    }

    pub fn start(&self) -> SystemTime {
        self.end - Duration::from_secs_f64(self.secs)
    }
}

/// What one load run measured.
#[derive(Debug, Clone)]
pub struct Run {
    pub samples: Vec<Sample>,
    pub wall: Duration,
}

impl Run {
    pub fn errors(&self) -> usize {
        self.samples.iter().filter(|s| !s.ok()).count()
    }

    /// The `q` quantile (0..=1) of the request times, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let mut times: Vec<f64> = self.samples.iter().map(|s| s.secs * 1000.0).collect();
        times.sort_by(|a, b| a.total_cmp(b));
        if times.is_empty() {
            return f64::NAN;
        }
        let rank = (q * times.len() as f64).ceil() as usize;
        times[rank.clamp(1, times.len()) - 1]
    }

    pub fn per_second(&self) -> f64 {
        self.samples.len() as f64 / self.wall.as_secs_f64()
    }
}

/// The line curl writes per request: a marker, then status and time.
const FORMAT: &str = "slipway-load %{http_code} %{time_total}\\n";

/// The load: `requests` GETs of `path` (a query `n=1..N` added) on
/// `https://localhost:PORT`, at most `concurrency` at once, trusting `ca`.
pub fn step(port: u16, ca: &Path, path: &str, requests: usize, concurrency: usize) -> Step {
    let separator = if path.contains('?') { '&' } else { '?' };
    let url = format!("https://localhost:{port}{path}{separator}n=[1-{requests}]");
    // stdbuf: curl's lines reach us as each request ends, not a buffer at a time. A
    // failed request makes curl exit non-zero; the lines say which, so the exit is not
    // the verdict.
    let line = format!(
        "stdbuf -oL curl --silent --no-progress-meter --parallel --parallel-max {concurrency} --max-time 10 \
         --cacert {ca} --output /dev/null --write-out '{FORMAT}' '{url}'; true",
        ca = crate::plan::shell_quote(&ca.display().to_string()),
    );
    Step::new(format!("{requests} requests, {concurrency} at a time"), "sh")
        .args(["-c", &line])
        .timeout(Duration::from_secs(600))
}

/// Run the load (`step`), reading each request's line as it ends.
pub fn run(step: &Step) -> Result<Run> {
    let started = SystemTime::now();
    let samples = step.pipe(|out| {
        let mut samples = Vec::new();
        for line in std::io::BufReader::new(out).lines() {
            let line = line?;
            let end = SystemTime::now();
            if let Some(sample) = parse(&line, end) {
                samples.push(sample);
            }
        }
        Ok(samples)
    })?;
    let wall = started.elapsed().unwrap_or_default();
    if samples.is_empty() {
        bail!("`{}` reported no request: is curl installed?", step.command_line());
    }
    Ok(Run { samples, wall })
}

fn parse(line: &str, end: SystemTime) -> Option<Sample> {
    let mut words = line.strip_prefix("slipway-load ")?.split_whitespace();
    let code = words.next()?.parse().ok()?;
    let secs = words.next()?.parse().ok()?;
    Some(Sample { code, end, secs })
}

/// The resident memory of every process in `container`, summed (`docker top`), in MiB.
pub fn rss_mib(container: &str) -> Result<f64> {
    let top = docker::step("top", &["top", container, "-o", "pid,rss"])
        .output(Output::Capture)
        .run()?
        .stdout;
    let kib: f64 = top
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum();
    Ok(kib / 1024.0)
}

/// Requests that failed outside `[from, to]`: ended before it, or started after it.
pub fn failed_outside(run: &Run, from: SystemTime, to: SystemTime) -> usize {
    run.samples
        .iter()
        .filter(|s| !s.ok() && (s.end < from || s.start() > to))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_times_and_quantiles() {
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(parse("slipway-load 200 0.012", end).unwrap().code, 200);
        assert_eq!(parse("slipway-load 000 10.0", end).unwrap().code, 0);
        assert!(parse("curl: (7) Failed to connect", end).is_none());
        let samples: Vec<Sample> = (1..=100)
            .map(|i| Sample {
                code: if i == 50 { 502 } else { 200 },
                end,
                secs: i as f64 / 1000.0,
            })
            .collect();
        let run = Run {
            samples,
            wall: Duration::from_secs(2),
        };
        assert_eq!(run.quantile_ms(0.5), 50.0);
        assert_eq!(run.quantile_ms(0.99), 99.0);
        assert_eq!(run.errors(), 1);
        assert_eq!(run.per_second(), 50.0);
        // The failure (ended at 100 s, started 50 ms before) is inside [99, 101], outside [100.5, 101].
        let at = |s: f64| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s);
        assert_eq!(failed_outside(&run, at(99.0), at(101.0)), 0);
        assert_eq!(failed_outside(&run, at(100.5), at(101.0)), 1);
        assert_eq!(failed_outside(&run, at(90.0), at(99.0)), 1);
    }
}
