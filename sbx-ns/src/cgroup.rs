//! cgroup limits for a sandbox, on whichever hierarchy the host offers (v2, or the v1
//! `memory`, `cpu` and `pids` controllers), and an honest report when it offers none.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::config::Limits;

/// What happened to one requested limit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitState {
    /// No limit was requested.
    NotRequested,
    /// The limit is enforced by the cgroup at `path`.
    Applied {
        /// The cgroup directory.
        path: PathBuf,
    },
    /// The host did not let us apply it; the sandbox runs without it.
    Unavailable {
        /// Why.
        reason: String,
    },
}

/// Which cgroup limits are in force for a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitsReport {
    /// Memory.
    pub memory: LimitState,
    /// CPU bandwidth.
    pub cpu: LimitState,
    /// Process count.
    pub pids: LimitState,
}

impl LimitsReport {
    /// Whether every requested limit is in force.
    pub fn all_applied(&self) -> bool {
        [&self.memory, &self.cpu, &self.pids]
            .iter()
            .all(|s| !matches!(s, LimitState::Unavailable { .. }))
    }
}

/// The cgroups created for one sandbox; removed on [`Cgroups::remove`].
#[derive(Debug, Default)]
pub(crate) struct Cgroups {
    dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Memory,
    Cpu,
    Pids,
}

impl Resource {
    fn v1_controller(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::Cpu => "cpu",
            Resource::Pids => "pids",
        }
    }

    /// `(file, value)` pairs to write for this limit.
    fn settings(self, limits: &Limits, v2: bool) -> Option<Vec<(&'static str, String)>> {
        const PERIOD: u64 = 100_000;
        match self {
            Resource::Memory => limits.memory_bytes.map(|b| {
                let file = if v2 {
                    "memory.max"
                } else {
                    "memory.limit_in_bytes"
                };
                vec![(file, b.to_string())]
            }),
            Resource::Pids => limits.pids.map(|n| vec![("pids.max", n.to_string())]),
            Resource::Cpu => limits.cpus.map(|c| {
                let quota = ((c * PERIOD as f64) as u64).max(1000);
                if v2 {
                    vec![("cpu.max", format!("{quota} {PERIOD}"))]
                } else {
                    vec![
                        ("cpu.cfs_period_us", PERIOD.to_string()),
                        ("cpu.cfs_quota_us", quota.to_string()),
                    ]
                }
            }),
        }
    }
}

struct Mount {
    point: PathBuf,
    fstype: String,
    superopts: String,
}

fn mounts() -> Vec<Mount> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let point = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            let fstype = post.next()?.to_string();
            let _source = post.next()?;
            let superopts = post.next().unwrap_or("").to_string();
            Some(Mount {
                point: PathBuf::from(point),
                fstype,
                superopts,
            })
        })
        .collect()
}

/// Where a controller for `res` lives: `(dir to create our group in, is v2)`.
fn hierarchy_for(res: Resource, all: &[Mount]) -> Option<(PathBuf, bool)> {
    let ctl = res.v1_controller();
    for m in all.iter().filter(|m| m.fstype == "cgroup2") {
        let controllers =
            fs::read_to_string(m.point.join("cgroup.controllers")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == ctl) {
            return Some((m.point.clone(), true));
        }
    }
    all.iter()
        .find(|m| m.fstype == "cgroup" && m.superopts.split(',').any(|o| o == ctl))
        .map(|m| (m.point.clone(), false))
}

fn unique_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "sbx-ns-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn apply_one(
    res: Resource,
    limits: &Limits,
    name: &str,
    pid: u32,
    all: &[Mount],
    created: &mut Vec<PathBuf>,
) -> LimitState {
    if res.settings(limits, false).is_none() {
        return LimitState::NotRequested;
    }
    let Some((root, v2)) = hierarchy_for(res, all) else {
        return LimitState::Unavailable {
            reason: format!(
                "no cgroup hierarchy with the {} controller",
                res.v1_controller()
            ),
        };
    };
    let settings = res.settings(limits, v2).unwrap_or_default();
    let dir = root.join(name);
    let result = (|| -> std::io::Result<()> {
        if v2 {
            // Controllers must be enabled in the parent for the child to get the files.
            let _ = fs::write(
                root.join("cgroup.subtree_control"),
                format!("+{}", res.v1_controller()),
            );
        }
        if !created.contains(&dir) {
            match fs::create_dir(&dir) {
                Ok(()) => created.push(dir.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        for (file, value) in &settings {
            fs::write(dir.join(file), value)?;
        }
        fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        Ok(())
    })();
    match result {
        Ok(()) => LimitState::Applied { path: dir },
        Err(e) => LimitState::Unavailable {
            reason: format!("{}: {e}", dir.display()),
        },
    }
}

/// Removes empty groups left by launchers that died without stopping their sandbox (the
/// monitor kills the sandbox, but cannot remove the group it sits in).
fn sweep_stale(all: &[Mount]) {
    for m in all
        .iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
    {
        let Ok(entries) = fs::read_dir(&m.point) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("sbx-ns-")) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                // Fails harmlessly while processes remain in it.
                let _ = fs::remove_dir(e.path());
            }
        }
    }
}

/// Why limits would not apply on this host (empty when memory, cpu and pids all can).
pub(crate) fn missing_controllers() -> Vec<String> {
    let all = mounts();
    [Resource::Memory, Resource::Cpu, Resource::Pids]
        .into_iter()
        .filter_map(|r| match hierarchy_for(r, &all) {
            None => Some(format!(
                "no cgroup {} controller: that limit cannot apply",
                r.v1_controller()
            )),
            Some((root, _))
                if nix::unistd::access(&root, nix::unistd::AccessFlags::W_OK).is_err() =>
            {
                Some(format!(
                    "cannot create cgroups under {}: limits will not apply",
                    root.display()
                ))
            }
            Some(_) => None,
        })
        .collect()
}

impl Cgroups {
    /// Creates the groups for `limits` and moves `pid` into them.
    pub(crate) fn apply(limits: &Limits, pid: u32) -> (Cgroups, LimitsReport) {
        let all = mounts();
        if limits != &Limits::default() {
            sweep_stale(&all);
        }
        let name = unique_name();
        let mut created = Vec::new();
        let mut one = |res| apply_one(res, limits, &name, pid, &all, &mut created);
        let report = LimitsReport {
            memory: one(Resource::Memory),
            cpu: one(Resource::Cpu),
            pids: one(Resource::Pids),
        };
        for (what, s) in [
            ("memory", &report.memory),
            ("cpu", &report.cpu),
            ("pids", &report.pids),
        ] {
            if let LimitState::Unavailable { reason } = s {
                tracing::warn!(limit = what, %reason, "cgroup limit not applied");
            }
        }
        (Cgroups { dirs: created }, report)
    }

    /// Removes the groups; they must be empty, which takes a moment after the last process died.
    pub(crate) fn remove(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        for dir in std::mem::take(&mut self.dirs) {
            loop {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() >= deadline => {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove cgroup");
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }

    pub(crate) fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_for_v1_and_v2() {
        let l = Limits::default().with_cpus(1.5).with_memory_bytes(1 << 20);
        assert_eq!(
            Resource::Cpu.settings(&l, true).unwrap(),
            vec![("cpu.max", "150000 100000".to_string())]
        );
        assert_eq!(
            Resource::Memory.settings(&l, false).unwrap(),
            vec![("memory.limit_in_bytes", (1u64 << 20).to_string())]
        );
        assert!(Resource::Pids.settings(&l, false).is_none());
    }
}
