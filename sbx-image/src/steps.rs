//! Running a build: numbered steps reported to a progress callback, and every command's
//! output kept in the build log.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Where a build is, for a progress display.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Step<'a> {
    /// 1-based number of the current step.
    pub index: usize,
    /// Number of steps in this build.
    pub total: usize,
    /// What the step does, e.g. `install packages (mmdebstrap)`.
    pub label: &'a str,
    /// The latest output line of the running tool, if any.
    pub detail: Option<&'a str>,
}

/// The build log's name inside a finished image.
pub(crate) const BUILD_LOG: &str = "build.log";

/// Receives [`Step`]s as a build goes.
pub type Progress<'a> = &'a mut dyn FnMut(&Step<'_>);

pub(crate) struct Ctx<'p> {
    log: File,
    log_path: PathBuf,
    label: String,
    index: usize,
    total: usize,
    started: std::time::Instant,
    progress: Progress<'p>,
}

impl<'p> Ctx<'p> {
    pub(crate) fn new(log_path: &Path, total: usize, progress: Progress<'p>) -> Result<Self> {
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir).map_err(Error::io("create the log directory", dir))?;
        }
        let log = File::create(log_path).map_err(Error::io("create the build log", log_path))?;
        Ok(Ctx {
            log,
            log_path: log_path.to_owned(),
            label: String::new(),
            index: 0,
            total,
            started: std::time::Instant::now(),
            progress,
        })
    }

    /// Copies the log so far to `to` (the image keeps the log of its own build).
    pub(crate) fn copy_log(&mut self, to: &Path) -> Result<()> {
        let _ = self.log.flush();
        std::fs::copy(&self.log_path, to)
            .map(|_| ())
            .map_err(Error::io("copy the build log", to))
    }

    /// Starts the next step.
    pub(crate) fn step(&mut self, label: &str) {
        self.index += 1;
        self.label = label.to_owned();
        let at = self.started.elapsed().as_secs_f64();
        self.note(&format!(
            "=== step {}/{}: {label} (at {at:.1}s)",
            self.index, self.total
        ));
        tracing::info!(step = self.index, total = self.total, "{label}");
        self.report(None);
    }

    fn report(&mut self, detail: Option<&str>) {
        (self.progress)(&Step {
            index: self.index,
            total: self.total,
            label: &self.label,
            detail,
        });
    }

    /// Appends a line to the build log (best effort: the log is an aid, not the result).
    pub(crate) fn note(&mut self, text: &str) {
        let _ = writeln!(self.log, "{text}");
    }

    /// A build failure at the current step.
    pub(crate) fn fail(&mut self, reason: impl Into<String>) -> Error {
        let reason = reason.into();
        self.note(&format!("=== failed: {reason}"));
        let _ = self.log.flush();
        Error::Build {
            step: self.label.clone(),
            reason,
            log: self.log_path.clone(),
        }
    }

    /// Turns any error of a step into an [`Error::Build`] naming the step and the log.
    pub(crate) fn wrap(&mut self, e: Error) -> Error {
        if matches!(e, Error::Build { .. }) {
            return e;
        }
        let mut reason = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            reason.push_str(": ");
            reason.push_str(&s.to_string());
            src = s.source();
        }
        self.fail(reason)
    }

    /// Runs `cmd` with stdout and stderr in the log; stderr lines also go to the progress
    /// callback as details.
    pub(crate) fn run(&mut self, cmd: &mut Command) -> Result<()> {
        let out = self
            .log
            .try_clone()
            .map_err(Error::io("open the build log", &self.log_path))?;
        self.spawn_and_wait(cmd, Stdio::from(out)).map(|_| ())
    }

    /// Runs `cmd` and returns its stdout; stderr goes to the log.
    pub(crate) fn output(&mut self, cmd: &mut Command) -> Result<String> {
        let mut tmp = tempfile_in(self.log_path.parent().unwrap_or(Path::new("/tmp")))?;
        let stdout = tmp
            .0
            .try_clone()
            .map_err(Error::io("open a temp file", &tmp.1))?;
        let res = self.spawn_and_wait(cmd, Stdio::from(stdout));
        let mut text = String::new();
        let read = tmp
            .0
            .seek(SeekFrom::Start(0))
            .and_then(|_| tmp.0.read_to_string(&mut text));
        let _ = std::fs::remove_file(&tmp.1);
        res?;
        read.map_err(Error::io("read command output", &tmp.1))?;
        Ok(text)
    }

    fn spawn_and_wait(&mut self, cmd: &mut Command, stdout: Stdio) -> Result<()> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        self.note(&format!("$ {cmd:?}"));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .env("LC_ALL", "C.UTF-8")
            .spawn()
            .map_err(|source| Error::Tool {
                tool: program.clone(),
                source,
            })?;
        let mut tail: Vec<String> = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                self.note(&line);
                self.report(Some(line.trim()));
                if tail.len() == 4 {
                    tail.remove(0);
                }
                tail.push(line);
            }
        }
        let status = child.wait().map_err(|source| Error::Tool {
            tool: program.clone(),
            source,
        })?;
        if status.success() {
            return Ok(());
        }
        let last = tail
            .iter()
            .rev()
            .find(|l| l.starts_with("E:") || l.contains("rror"))
            .or(tail.last())
            .map(|l| format!(": {}", l.trim()))
            .unwrap_or_default();
        Err(self.fail(format!("{program} failed ({status}){last}")))
    }
}

fn tempfile_in(dir: &Path) -> Result<(File, PathBuf)> {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".out-{}-{n}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(Error::io("create a temp file", &path))?;
    Ok((f, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_logs_and_failures() {
        let dir = std::env::temp_dir().join(format!("sbx-image-steps-{}", std::process::id()));
        let log = dir.join("logs/b.log");
        let mut seen = Vec::new();
        let mut cb = |s: &Step<'_>| seen.push((s.index, s.total, s.label.to_owned()));
        let mut ctx = Ctx::new(&log, 2, &mut cb).unwrap();
        ctx.step("one");
        let out = ctx
            .output(Command::new("sh").args(["-c", "echo out; echo err >&2"]))
            .unwrap();
        assert_eq!(out, "out\n");
        ctx.step("two");
        let err = ctx
            .run(
                Command::new("sh")
                    .args(["-c", "echo 'E: Unable to locate package nope' >&2; exit 3"]),
            )
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("step \"two\""), "{msg}");
        assert!(msg.contains("Unable to locate package nope"), "{msg}");
        assert!(msg.contains(&log.display().to_string()), "{msg}");
        let missing = ctx
            .run(&mut Command::new("/nonexistent/sbx-tool"))
            .unwrap_err();
        assert!(matches!(missing, Error::Tool { .. }));
        drop(ctx);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("=== step 1/2: one") && text.contains("err\n"),
            "{text}"
        );
        assert_eq!(seen.first().unwrap(), &(1, 2, "one".to_owned()));
        assert!(seen.iter().any(|s| s.0 == 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
