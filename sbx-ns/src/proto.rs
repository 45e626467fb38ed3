//! The control channel between the launcher and the helper: JSON messages on a
//! `SOCK_SEQPACKET` socket pair (one message per packet), file descriptors as `SCM_RIGHTS`.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::{Error, Result};

/// Largest message we accept; the config with its environment is far below this.
const MAX_MSG: usize = 256 * 1024;
/// Most descriptors one message carries.
const MAX_FDS: usize = 16;

/// The environment variable that tells a process it is the helper, and on which fd the
/// control socket is.
pub(crate) const HELPER_ENV: &str = "SBX_NS_HELPER_FD";

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToHelper {
    /// The sandbox to build; the message carries the descriptors for `fd_targets`, in order.
    Start {
        config: Box<Config>,
        fd_targets: Vec<RawFd>,
    },
    /// uid/gid maps are written; go on.
    Mapped,
    /// Check what this host supports, using scratch directories under `dir`.
    Probe { dir: String },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromHelper {
    /// New namespaces exist; write the id maps for this process.
    Unshared,
    /// The TAP device's descriptor is attached.
    Tap { name: String },
    /// PID 1 exists; its pid in the host's pid namespace. Carries a pidfd for it.
    Started { pid: i32 },
    /// Something did not work and the sandbox goes on without it.
    Warning { message: String },
    /// PID 1 ended (exit code or signal number).
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// The answer to `Probe`.
    Probed(crate::support::ProbeResult),
    /// PID 1 finished its setup and is about to exec the init program.
    Ready,
    /// Setup failed.
    Failed { message: String },
}

pub(crate) fn pair() -> Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::Sys("socketpair", e))
}

pub(crate) fn send<T: Serialize>(sock: BorrowedFd<'_>, msg: &T, fds: &[RawFd]) -> Result<()> {
    let body = serde_json::to_vec(msg).map_err(|e| Error::Protocol(e.to_string()))?;
    if body.len() > MAX_MSG {
        return Err(Error::Protocol("message too large".into()));
    }
    let iov = [IoSlice::new(&body)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(Error::Sys("send on control socket", e)),
        }
    }
}

/// Receives one message; `Ok(None)` when the peer closed the socket.
pub(crate) fn recv<T: for<'de> Deserialize<'de>>(
    sock: BorrowedFd<'_>,
) -> Result<Option<(T, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MSG];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (len, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => {
                let mut fds = Vec::new();
                for c in m.cmsgs().map_err(|e| Error::Sys("recvmsg", e))? {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        // SAFETY: the kernel just installed these descriptors in our table
                        // for us; nothing else owns them.
                        fds.extend(raw.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                    }
                }
                if m.flags.contains(MsgFlags::MSG_TRUNC) || m.flags.contains(MsgFlags::MSG_CTRUNC) {
                    return Err(Error::Protocol("truncated message".into()));
                }
                break (m.bytes, fds);
            }
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(Error::Sys("recv on control socket", e)),
        }
    };
    if len == 0 {
        return Ok(None);
    }
    let msg = serde_json::from_slice(&buf[..len]).map_err(|e| Error::Protocol(e.to_string()))?;
    Ok(Some((msg, fds)))
}
