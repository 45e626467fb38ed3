//! Child bookkeeping. PID 1 reaps every process that exits in the sandbox; statuses of the
//! children the agent started go to whoever waits for them.
//!
//! The registry lock is held across `fork`/`exec` and across `waitpid`, so a child can never be
//! reaped before it is registered (std's `spawn` also waits for a child whose `exec` failed,
//! which must not race with the reaper).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::sys;

/// Where one child's exit status goes.
#[derive(Debug)]
pub(crate) struct Waiter {
    status: Mutex<Option<i32>>,
    cond: Condvar,
    notify: File,
}

impl Waiter {
    fn complete(&self, status: i32) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
        self.cond.notify_all();
        // The pipe is non-blocking and read once; a full pipe already signals readiness.
        let _ = (&self.notify).write(&[1]);
    }

    /// The raw wait status, if the child has exited.
    pub(crate) fn status(&self) -> Option<i32> {
        *self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits up to `timeout` (forever if `None`) for the exit status.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Option<i32> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(s) = *st {
                return Some(s);
            }
            st = match deadline {
                None => self.cond.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    self.cond
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

/// A started child: its pid, its waiter, and a pipe that becomes readable when it exits.
#[derive(Debug)]
pub(crate) struct ChildHandle {
    pub(crate) pid: i32,
    pub(crate) waiter: Arc<Waiter>,
    pub(crate) exit_notify: File,
}

impl ChildHandle {
    /// Consumes the notification byte.
    pub(crate) fn drain_notify(&mut self) {
        let mut b = [0u8; 8];
        let _ = self.exit_notify.read(&mut b);
    }
}

/// The registry of children the agent waits for.
#[derive(Debug, Default)]
pub(crate) struct Reaper {
    children: Mutex<HashMap<i32, Arc<Waiter>>>,
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, HashMap<i32, Arc<Waiter>>> {
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spawns `cmd` and registers it.
    pub(crate) fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, ChildHandle)> {
        let (r, w): (OwnedFd, OwnedFd) = sys::pipe()?;
        let mut map = self.lock();
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        let waiter = Arc::new(Waiter {
            status: Mutex::new(None),
            cond: Condvar::new(),
            notify: File::from(w),
        });
        map.insert(pid, Arc::clone(&waiter));
        drop(map);
        Ok((
            child,
            ChildHandle {
                pid,
                waiter,
                exit_notify: File::from(r),
            },
        ))
    }

    /// Reaps every exited child; returns how many were reaped.
    pub(crate) fn reap(&self) -> usize {
        let mut map = self.lock();
        let mut n = 0;
        while let Some((pid, status)) = sys::reap_one() {
            n += 1;
            match map.remove(&pid) {
                Some(w) => w.complete(status),
                None => tracing::trace!(pid, status, "reaped orphan"),
            }
        }
        n
    }

    /// Pids of registered (still running) children.
    pub(crate) fn pids(&self) -> Vec<i32> {
        self.lock().keys().copied().collect()
    }
}
