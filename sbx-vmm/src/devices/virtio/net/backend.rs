//! Where a virtio-net device's frames come from and go to.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use nix::sys::stat::{fstat, SFlag};

/// A source and sink of Ethernet frames for a virtio-net device (the seam between the VMM and
/// a network stack).
///
/// Contract:
/// - one [`recv`](Self::recv) returns exactly one frame, without any virtio header; it returns
///   an error of kind [`io::ErrorKind::WouldBlock`] when no frame is waiting, and `Ok(0)` when
///   the peer is gone for good (the device then stops reading). A frame longer than `buf` may
///   be truncated; the device passes a buffer one byte longer than the largest frame it
///   accepts, so a full buffer means "too long" and the frame is dropped;
/// - one [`send`](Self::send) hands over exactly one frame and never blocks: a backend that
///   cannot take the frame now returns [`io::ErrorKind::WouldBlock`] (or any other error) and
///   the device drops the frame and counts it;
/// - readiness: the device's event loop polls [`as_raw_fd`](Self::as_raw_fd) for readability
///   (level-triggered) and calls `recv` until it would block. It only polls while the guest
///   has receive buffers; frames meanwhile stay in the backend.
///
/// All methods run on the VMM's device thread.
pub trait NetBackend: Send {
    /// Read one frame into `buf`; returns its length.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Send one frame, without blocking.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// The fd whose readability means `recv` has a frame (or end of file) to return.
    fn as_raw_fd(&self) -> RawFd;
}

/// A [`NetBackend`] over a "frame fd": a descriptor on which one `read` returns one frame and
/// one `write` sends one, such as a TAP device opened with `IFF_TAP | IFF_NO_PI`, or one end of
/// `socketpair(AF_UNIX, SOCK_SEQPACKET)` whose other end a userspace network stack holds.
///
/// [`new`](Self::new) puts the fd in non-blocking mode. Sends on a socket use `MSG_NOSIGNAL`, so
/// a closed peer is an error rather than `SIGPIPE`. An empty datagram on a socket is skipped
/// (it is no frame); `recv` returns `Ok(0)` only once the peer hung up.
///
/// A VM whose network card is one end of a socketpair; a userspace stack serves the other:
///
/// ```no_run
/// use sbx_vmm::{FdNetBackend, NetConfig, VmBuilder};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // The same as `FdNetBackend::new` over one end of a socketpair(AF_UNIX, SOCK_SEQPACKET).
/// let (backend, stack_end) = FdNetBackend::socketpair()?;
/// let vm = VmBuilder::new("vmlinuz")
///     .net(NetConfig::new([0x02, 0x5b, 0x78, 0, 0, 2], Box::new(backend)))
///     .start()?;
/// // Each read of `stack_end` is one Ethernet frame from the guest; each write is one to it.
/// # drop((vm, stack_end));
/// # Ok(())
/// # }
/// ```
pub struct FdNetBackend {
    fd: OwnedFd,
    socket: bool,
}

impl fmt::Debug for FdNetBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FdNetBackend")
            .field("fd", &self.fd.as_raw_fd())
            .field("socket", &self.socket)
            .finish()
    }
}

impl FdNetBackend {
    /// Take ownership of a frame fd and make it non-blocking.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
        let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
        fcntl(&fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
        let st = fstat(&fd).map_err(io::Error::from)?;
        let socket = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK;
        Ok(Self { fd, socket })
    }

    /// Whether the peer closed or shut down its sending side. `libc::poll` directly: nix's
    /// `PollFd::revents` is `None` when the kernel sets a bit nix does not name (`POLLRDHUP`).
    fn hung_up(&self) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        loop {
            // SAFETY: `pfd` is one valid, initialized pollfd that outlives the call, and the
            // count passed is 1; a zero timeout never blocks.
            let n = unsafe { libc::poll(&mut pfd, 1, 0) };
            if n >= 0 {
                return Ok(pfd.revents & (libc::POLLHUP | libc::POLLRDHUP) != 0);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// A new `socketpair(AF_UNIX, SOCK_SEQPACKET)` (both ends close-on-exec): a backend over
    /// one end, and the other end for the network stack (left blocking; the stack sets its own
    /// mode).
    pub fn socketpair() -> io::Result<(Self, OwnedFd)> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        Ok((Self::new(ours)?, theirs))
    }
}

impl NetBackend for FdNetBackend {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match nix::unistd::read(self.fd.as_fd(), buf) {
                Err(Errno::EINTR) => continue,
                // On a socket, 0 is also an empty datagram: not a frame, and not the end
                // unless the peer hung up.
                Ok(0) if self.socket && !self.hung_up()? => continue,
                r => return r.map_err(io::Error::from),
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        loop {
            let r = if self.socket {
                send(
                    self.fd.as_raw_fd(),
                    frame,
                    MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                )
            } else {
                nix::unistd::write(self.fd.as_fd(), frame)
            };
            match r {
                Err(Errno::EINTR) => continue,
                Ok(n) if n == frame.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short frame write ({n} of {} bytes)", frame.len()),
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (FdNetBackend, OwnedFd) {
        FdNetBackend::socketpair().unwrap()
    }

    #[test]
    fn frames_keep_their_boundaries() {
        let (mut be, peer) = pair();
        assert!(be.socket);
        let mut buf = [0u8; 64];
        let err = be.recv(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        nix::unistd::write(&peer, b"one").unwrap();
        nix::unistd::write(&peer, b"").unwrap();
        nix::unistd::write(&peer, b"second").unwrap();
        assert_eq!(be.recv(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"one");
        assert_eq!(be.recv(&mut buf).unwrap(), 6);
        be.send(b"reply").unwrap();
        let mut got = [0u8; 16];
        assert_eq!(nix::unistd::read(&peer, &mut got).unwrap(), 5);
        drop(peer);
        assert_eq!(be.recv(&mut buf).unwrap(), 0, "EOF after the peer closed");
        assert_eq!(be.recv(&mut buf).unwrap(), 0, "and it stays");
        assert!(be.send(b"x").is_err(), "no SIGPIPE, an error");
    }

    #[test]
    fn peer_shutting_down_its_side_is_the_end() {
        let (mut be, peer) = pair();
        nix::sys::socket::shutdown(peer.as_raw_fd(), nix::sys::socket::Shutdown::Write).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(be.recv(&mut buf).unwrap(), 0);
    }

    #[test]
    fn full_peer_would_block() {
        let (mut be, _peer) = pair();
        let frame = [0u8; 1500];
        let err = loop {
            if let Err(e) = be.send(&frame) {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
}
