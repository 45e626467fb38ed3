//! One `flock` per sandbox. The supervisor holds it for its whole life, so two `sbx`
//! processes never start the same sandbox twice, and a supervisor that dies (even by SIGKILL)
//! releases it: the kernel drops the lock with the last descriptor.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// A held sandbox lock; released on drop.
#[derive(Debug)]
pub struct SandboxLock {
    _lock: Flock<File>,
}

impl SandboxLock {
    /// Takes the lock if nobody holds it. `Ok(None)`: someone does.
    pub fn try_acquire(path: &Path) -> anyhow::Result<Option<SandboxLock>> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening the lock {}", path.display()))?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(Some(SandboxLock { _lock: l })),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => {
                Err(anyhow::Error::new(e).context(format!("locking {}", path.display())))
            }
        }
    }

    /// Waits up to `timeout` for the lock.
    pub fn acquire_within(path: &Path, timeout: Duration) -> anyhow::Result<Option<SandboxLock>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = Self::try_acquire(path)? {
                return Ok(Some(l));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let a = SandboxLock::try_acquire(&p).unwrap().expect("free");
        assert!(SandboxLock::try_acquire(&p).unwrap().is_none());
        assert!(SandboxLock::acquire_within(&p, Duration::from_millis(50))
            .unwrap()
            .is_none());
        drop(a);
        assert!(SandboxLock::try_acquire(&p).unwrap().is_some());
    }
}
