//! The sandbox's only network path: a TAP device `eth0` inside its network namespace whose
//! descriptor the host keeps.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// Frame-level access to a network device: what virtio-net's `NetBackend` seam carries. The
/// namespace backend's [`Tap`] implements it so sbx-net's userspace stack can serve both
/// backends. Defined here until sbx-net or sbx-vmm owns the seam.
pub trait FrameDevice: AsRawFd + Send {
    /// Reads one Ethernet frame into `buf`; `WouldBlock` when the device is non-blocking and
    /// none is queued. Returns the frame length.
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one Ethernet frame (delivered to the sandbox as received on `eth0`).
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()>;
}

/// The host's end of the sandbox's `eth0`. Closing it removes the device.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    pub(crate) fn from_fd(fd: OwnedFd, name: String) -> Self {
        Tap {
            file: File::from(fd),
            name,
        }
    }

    /// The interface name inside the sandbox.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Switches blocking mode, for use in an event loop.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        let fd = self.file.as_fd();
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let mut flags = nix::fcntl::OFlag::from_bits_retain(flags);
        flags.set(nix::fcntl::OFlag::O_NONBLOCK, on);
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl FrameDevice for Tap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // A TAP read returns exactly one frame (IFF_NO_PI: no packet-info header).
        self.file.read(buf)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let n = self.file.write(frame)?;
        if n != frame.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short frame write",
            ));
        }
        Ok(())
    }
}

// From <linux/if_tun.h> and <linux/sockios.h>.
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReqFlags {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn ifreq(name: &str) -> io::Result<IfReqFlags> {
    if name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    for (d, s) in req.name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(req)
}

/// Creates TAP `name` in the calling process's network namespace (called by the helper).
pub(crate) fn create(name: &str) -> io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = ifreq(name)?;
    req.flags = IFF_TAP | IFF_NO_PI;
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` has its layout (name, then a
    // short flags field, padded to the union's 24 bytes) and lives across the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}

/// Sets `IFF_UP` on interface `name` in the calling process's network namespace.
pub(crate) fn link_up(name: &str) -> io::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let mut req = ifreq(name)?;
    // SAFETY: SIOCGIFFLAGS fills the flags of the `struct ifreq` we pass; layout as above.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    req.flags |= libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the same `struct ifreq`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_layout_matches_kernel() {
        assert_eq!(std::mem::size_of::<IfReqFlags>(), 40);
        assert!(ifreq("eth0").is_ok());
        assert!(ifreq("a-very-long-interface-name").is_err());
    }
}
