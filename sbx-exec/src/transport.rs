//! How the host reaches the agent: a Unix socket (namespace sandboxes) or a VMM's hybrid vsock
//! socket (`CONNECT <port>\n` / `OK <port>\n`, then the byte stream).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// A connected byte stream to the agent.
pub trait Stream: Read + Write + Send + fmt::Debug {
    /// A second handle to the same stream (for a reader and a writer thread).
    fn try_clone_stream(&self) -> io::Result<Box<dyn Stream>>;
    /// Shuts down one or both directions.
    fn shutdown_stream(&self, how: Shutdown) -> io::Result<()>;
    /// Bounds blocking reads (`None`: wait forever).
    fn set_stream_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}

impl Stream for UnixStream {
    fn try_clone_stream(&self) -> io::Result<Box<dyn Stream>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn shutdown_stream(&self, how: Shutdown) -> io::Result<()> {
        self.shutdown(how)
    }
    fn set_stream_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)
    }
}

/// Opens a new connection to the agent. The client opens one per exec.
pub trait Transport: Send + Sync + fmt::Debug {
    /// Connects.
    fn connect(&self) -> Result<Box<dyn Stream>>;
}

/// The agent listens on a Unix socket at `path` (a namespace sandbox).
#[derive(Clone, Debug)]
pub struct UnixTransport {
    path: PathBuf,
}

impl UnixTransport {
    /// A transport to the socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Transport for UnixTransport {
    fn connect(&self) -> Result<Box<dyn Stream>> {
        let s = UnixStream::connect(&self.path).map_err(|source| Error::Connect {
            path: self.path.clone(),
            source,
        })?;
        Ok(Box::new(s))
    }
}

/// A VMM's host-side vsock socket: connect to `path`, send `CONNECT <port>\n`, expect
/// `OK <port>\n` (Firecracker's "hybrid vsock"), then the stream is the guest's port.
#[derive(Clone, Debug)]
pub struct HybridVsockTransport {
    path: PathBuf,
    port: u32,
    timeout: Duration,
}

impl HybridVsockTransport {
    /// A transport to guest `port` through the VMM socket at `path`.
    pub fn new(path: impl Into<PathBuf>, port: u32) -> Self {
        Self {
            path: path.into(),
            port,
            timeout: Duration::from_secs(10),
        }
    }

    /// How long to wait for the `OK` line (default 10 s).
    #[must_use]
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

impl Transport for HybridVsockTransport {
    fn connect(&self) -> Result<Box<dyn Stream>> {
        let mut s = UnixStream::connect(&self.path).map_err(|source| Error::Connect {
            path: self.path.clone(),
            source,
        })?;
        s.set_read_timeout(Some(self.timeout))?;
        s.write_all(format!("CONNECT {}\n", self.port).as_bytes())?;
        // Byte at a time: anything after the newline already belongs to the agent's stream.
        let mut line = Vec::new();
        loop {
            let mut b = [0u8; 1];
            match s.read(&mut b) {
                Ok(0) => return Err(Error::Handshake("connection closed".into())),
                Ok(_) if b[0] == b'\n' => break,
                Ok(_) => {
                    line.push(b[0]);
                    if line.len() > 64 {
                        return Err(Error::Handshake("reply line too long".into()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let line = String::from_utf8_lossy(&line);
        let ok = line
            .strip_prefix("OK ")
            .is_some_and(|rest| rest.trim().parse::<u32>().is_ok());
        if !ok {
            return Err(Error::Handshake(line.chars().take(64).collect()));
        }
        s.set_read_timeout(None)?;
        Ok(Box::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    fn fake_vmm(reply: &'static str) -> (tempdir::Dir, std::thread::JoinHandle<String>) {
        let dir = tempdir::Dir::new();
        let l = UnixListener::bind(dir.0.join("v.sock")).unwrap();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = io::BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut w = s;
            w.write_all(reply.as_bytes()).unwrap();
            // The client may already have hung up after a refusal.
            let _ = w.write_all(b"payload");
            line
        });
        (dir, h)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "sbx-exec-t-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn hybrid_vsock_handshake() {
        let (dir, h) = fake_vmm("OK 1073741824\n");
        let t = HybridVsockTransport::new(dir.0.join("v.sock"), 52);
        let mut s = t.connect().unwrap();
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"payload");
        assert_eq!(h.join().unwrap(), "CONNECT 52\n");
    }

    #[test]
    fn hybrid_vsock_refusal() {
        let (dir, h) = fake_vmm("NO\n");
        let t = HybridVsockTransport::new(dir.0.join("v.sock"), 52);
        assert!(matches!(t.connect(), Err(Error::Handshake(_))));
        h.join().unwrap();
    }
}
