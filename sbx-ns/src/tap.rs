//! The sandbox's only network path: a TAP device `eth0` inside its network namespace whose
//! descriptor the host keeps.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
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

impl Tap {
    /// The device's file descriptor, for a frame consumer such as sbx-net's `NetStack`
    /// (closing it removes the device).
    pub fn into_fd(self) -> OwnedFd {
        OwnedFd::from(self.file)
    }
}

impl From<Tap> for OwnedFd {
    fn from(tap: Tap) -> OwnedFd {
        tap.into_fd()
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
    let sock = inet_socket()?;
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

#[repr(C)]
struct IfReqMtu {
    name: [libc::c_char; libc::IFNAMSIZ],
    mtu: libc::c_int,
    _pad: [u8; 20],
}

/// Sets the MTU of interface `name` in the calling process's network namespace (a TAP takes
/// 68..=65535).
pub(crate) fn set_mtu(name: &str, mtu: u32) -> io::Result<()> {
    let sock = inet_socket()?;
    let req = IfReqMtu {
        name: ifreq(name)?.name,
        mtu: libc::c_int::try_from(mtu)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "MTU too large"))?,
        _pad: [0; 20],
    };
    // SAFETY: SIOCSIFMTU reads a `struct ifreq` whose union holds an int; `req` has that
    // layout (16-byte name, the int, padding to 40 bytes) and lives across the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[repr(C)]
struct IfReqAddr {
    name: [libc::c_char; libc::IFNAMSIZ],
    addr: libc::sockaddr_in,
    _pad: [u8; 8],
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn inet_socket() -> io::Result<OwnedFd> {
    Ok(nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// Gives interface `name` an IPv4 address and, with `gateway`, a default route (called by the
/// helper while it still has `CAP_NET_ADMIN` in the sandbox's network namespace).
pub(crate) fn configure_ipv4(
    name: &str,
    address: Ipv4Addr,
    prefix_len: u8,
    gateway: Option<Ipv4Addr>,
) -> io::Result<()> {
    let sock = inet_socket()?;
    let base = ifreq(name)?;
    let mask = if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len.min(32)))
    };
    for (req, ip) in [
        (libc::SIOCSIFADDR, address),
        (libc::SIOCSIFNETMASK, Ipv4Addr::from(mask)),
    ] {
        let r = IfReqAddr {
            name: base.name,
            addr: sockaddr(ip),
            _pad: [0; 8],
        };
        // SAFETY: both requests read a `struct ifreq` whose union holds a sockaddr_in; `r`
        // has that layout (16-byte name, 16-byte address, padding to 40 bytes).
        if unsafe { libc::ioctl(sock.as_raw_fd(), req, &r) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if let Some(gw) = gateway {
        let mut dev = base.name;
        // SAFETY: rtentry is plain data (integers, sockaddrs, pointers) for which all-zero
        // bytes are valid.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        let put = |ip| {
            let sa = sockaddr(ip);
            // SAFETY: sockaddr_in and sockaddr have the same size; this reinterprets one as
            // the other, as the routing ioctl expects.
            unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sa) }
        };
        rt.rt_dst = put(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = put(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = put(gw);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        rt.rt_dev = dev.as_mut_ptr();
        // SAFETY: SIOCADDRT reads the `rtentry` and the NUL-terminated device name it points
        // to; both live across the call.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &rt) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_layout_matches_kernel() {
        assert_eq!(std::mem::size_of::<IfReqFlags>(), 40);
        assert_eq!(std::mem::size_of::<IfReqAddr>(), 40);
        assert!(ifreq("eth0").is_ok());
        assert!(ifreq("a-very-long-interface-name").is_err());
    }
}
