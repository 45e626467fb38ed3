//! Shared helpers for the benchmarks: timing child processes to their first output byte,
//! and statistics over samples.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run `cmd` with stdout piped; return the time from spawn to its first stdout byte, then
/// kill it (if still running) and reap it.
pub fn time_to_first_byte(cmd: &mut Command) -> std::io::Result<Duration> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut b = [0u8; 1];
    let n = stdout.read(&mut b)?;
    let elapsed = start.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    if n == 0 {
        return Err(std::io::Error::other(format!(
            "{cmd:?} exited without writing anything"
        )));
    }
    Ok(elapsed)
}

/// Median of `samples` (sorted copy).
pub fn median(samples: &[Duration]) -> Duration {
    percentile(samples, 50.0)
}

/// The `p`th percentile (nearest rank) of `samples`.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut s = samples.to_vec();
    s.sort();
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// `rss anon_kib=.. file_kib=.. shmem_kib=..` for process `pid`, from `/proc/PID/status`.
pub fn rss_line(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    format!(
        "rss anon_kib={} file_kib={} shmem_kib={}",
        field("RssAnon:"),
        field("RssFile:"),
        field("RssShmem:")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let s: Vec<_> = [5u64, 1, 3, 2, 4]
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect();
        assert_eq!(median(&s), Duration::from_millis(3));
        assert_eq!(percentile(&s, 100.0), Duration::from_millis(5));
        assert_eq!(percentile(&s, 0.0), Duration::from_millis(1));
    }

    #[test]
    fn first_byte_of_a_process() {
        let d = time_to_first_byte(Command::new("sh").args(["-c", "printf x; sleep 5"])).unwrap();
        assert!(d < Duration::from_secs(5));
        assert!(time_to_first_byte(&mut Command::new("true")).is_err());
    }
}
