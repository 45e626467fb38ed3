//! Guest network setup: the interface's IPv4 address, MTU and default route (classic
//! `SIOCSIF*` / `SIOCADDRT` ioctls, no `ip` binary needed), `/etc/resolv.conf`, and the
//! sandbox CA in the system trust store.

use std::ffi::{CString, OsString};
use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Where [`install_ca_cert`] puts the sandbox CA (a path inside the guest root).
pub const CA_CERT_PATH: &str = "/usr/local/share/ca-certificates/sbx-sandbox-ca.crt";
/// The Debian system bundle [`install_ca_cert`] appends the CA to when it exists.
pub const CA_BUNDLE_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Environment variables that point TLS clients at the trust store.
pub const CA_ENV_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "CURL_CA_BUNDLE",
];

/// Default MTU of the guest interface.
pub const DEFAULT_MTU: u32 = 1500;
/// How long [`configure_network`] waits for the interface by default.
pub const DEFAULT_IFACE_WAIT: Duration = Duration::from_secs(5);

/// A static IPv4 configuration of one interface (`--net ADDR/PREFIX[,GATEWAY]`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetSetup {
    /// Interface name (default `eth0`).
    pub iface: String,
    /// The interface's address.
    pub address: Ipv4Addr,
    /// Prefix length of the on-link network (1 to 32).
    pub prefix_len: u8,
    /// Default gateway, on the on-link network.
    pub gateway: Option<Ipv4Addr>,
    /// MTU to set.
    pub mtu: u32,
    /// How long to wait for the interface to appear (the driver may still be probing).
    pub wait: Duration,
}

impl NetSetup {
    /// `eth0` with `address/prefix_len`, no gateway, MTU 1500, a 5 s wait. Fails when the
    /// prefix length is outside 1 to 32.
    pub fn new(address: Ipv4Addr, prefix_len: u8) -> Result<Self> {
        if !(1..=32).contains(&prefix_len) {
            return Err(Error::Usage(format!(
                "prefix length {prefix_len} is not between 1 and 32"
            )));
        }
        Ok(Self {
            iface: "eth0".into(),
            address,
            prefix_len,
            gateway: None,
            mtu: DEFAULT_MTU,
            wait: DEFAULT_IFACE_WAIT,
        })
    }

    /// Parse `ADDR/PREFIX[,GATEWAY]`, e.g. `10.77.0.2/24,10.77.0.1`. The gateway must lie in
    /// the on-link network and differ from the address.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |why: &str| Error::Usage(format!("--net {spec}: {why}"));
        let (cidr, gateway) = match spec.split_once(',') {
            Some((c, g)) => (c, Some(g)),
            None => (spec, None),
        };
        let (addr, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| bad("expected ADDR/PREFIX[,GATEWAY]"))?;
        let address: Ipv4Addr = addr.parse().map_err(|_| bad("bad IPv4 address"))?;
        let prefix_len: u8 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
        let mut s = Self::new(address, prefix_len).map_err(|_| bad("prefix not in 1..=32"))?;
        if let Some(g) = gateway {
            let g: Ipv4Addr = g.parse().map_err(|_| bad("bad gateway address"))?;
            if g == address || !s.on_link(g) {
                return Err(bad("gateway is not another address of the on-link network"));
            }
            s.gateway = Some(g);
        }
        Ok(s)
    }

    /// The netmask of [`prefix_len`](Self::prefix_len).
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix_len))
                .unwrap_or(0),
        )
    }

    fn on_link(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(self.netmask());
        u32::from(ip) & m == u32::from(self.address) & m
    }
}

/// Bring up `lo`, wait for the interface, set its address, netmask and MTU, bring it up and
/// add the default route (an existing identical route is fine). Needs `CAP_NET_ADMIN` in the
/// network namespace.
pub fn configure_network(setup: &NetSetup) -> Result<()> {
    let ctl = Ctl::new().map_err(Error::io("open a socket for interface ioctls"))?;
    let err = |what: &'static str| {
        let iface = setup.iface.clone();
        move |source| Error::Network {
            what,
            iface,
            source,
        }
    };
    ctl.set_up("lo").map_err(err("bring up lo"))?;
    let deadline = Instant::now() + setup.wait;
    loop {
        match ctl.flags(&setup.iface) {
            Ok(_) => break,
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                if Instant::now() >= deadline {
                    return Err(Error::NoInterface {
                        iface: setup.iface.clone(),
                        waited: setup.wait,
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(err("look up")(e)),
        }
    }
    ctl.set_addr(&setup.iface, libc::SIOCSIFADDR, setup.address)
        .map_err(err("set the address of"))?;
    ctl.set_addr(&setup.iface, libc::SIOCSIFNETMASK, setup.netmask())
        .map_err(err("set the netmask of"))?;
    ctl.set_mtu(&setup.iface, setup.mtu)
        .map_err(err("set the MTU of"))?;
    ctl.set_up(&setup.iface).map_err(err("bring up"))?;
    if let Some(gw) = setup.gateway {
        match ctl.add_default_route(&setup.iface, gw) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            r => r.map_err(err("add the default route through"))?,
        }
    }
    tracing::info!(
        iface = %setup.iface,
        address = %setup.address,
        prefix = setup.prefix_len,
        gateway = ?setup.gateway,
        "network configured"
    );
    Ok(())
}

/// Write `<root>/etc/resolv.conf` naming `nameserver`, replacing whatever was there (also a
/// symlink, e.g. to a resolver stub that does not run in the sandbox).
pub fn write_resolv_conf(root: &Path, nameserver: IpAddr) -> Result<()> {
    let etc = root.join("etc");
    fs::create_dir_all(&etc).map_err(Error::io("create /etc"))?;
    write_replacing(
        &etc.join("resolv.conf"),
        format!("nameserver {nameserver}\n").as_bytes(),
    )
    .map_err(Error::io("write /etc/resolv.conf"))
}

/// Install the PEM certificate(s) `pem` as the sandbox CA under `root`: as [`CA_CERT_PATH`],
/// and appended to [`CA_BUNDLE_PATH`] when that bundle exists (once: a bundle that already
/// holds it is left alone, so a restarted sandbox does not grow it). `update-ca-certificates`
/// is not run (it takes seconds). Returns the environment for every command: each of
/// [`CA_ENV_VARS`] names the bundle (or the certificate itself when there is no bundle), except
/// `NODE_EXTRA_CA_CERTS`, which names the certificate (Node adds it to its own roots).
pub fn install_ca_cert(root: &Path, pem: &[u8]) -> Result<Vec<(OsString, OsString)>> {
    let pem = trim_ascii(pem);
    if !pem.starts_with(b"-----BEGIN CERTIFICATE-----")
        || !pem.ends_with(b"-----END CERTIFICATE-----")
    {
        return Err(Error::BadCertificate);
    }
    let mut pem = pem.to_vec();
    pem.push(b'\n');
    let cert = under(root, CA_CERT_PATH);
    if let Some(dir) = cert.parent() {
        fs::create_dir_all(dir).map_err(Error::io("create the CA certificate folder"))?;
    }
    write_replacing(&cert, &pem).map_err(Error::io("write the CA certificate"))?;
    let bundle = under(root, CA_BUNDLE_PATH);
    let trust_file = if bundle.is_file() {
        append_once(&bundle, &pem).map_err(Error::io("append the CA to the system bundle"))?;
        CA_BUNDLE_PATH
    } else {
        CA_CERT_PATH
    };
    Ok(CA_ENV_VARS
        .iter()
        .map(|&k| {
            let v = if k == "NODE_EXTRA_CA_CERTS" {
                CA_CERT_PATH
            } else {
                trust_file
            };
            (OsString::from(k), OsString::from(v))
        })
        .collect())
}

fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    &b[start..end]
}

/// Write `data` to a temporary file next to `path` (mode 0644) and rename it over `path`.
fn write_replacing(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".sbx-tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.set_permissions(fs::Permissions::from_mode(0o644))?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)
}

fn append_once(bundle: &Path, pem: &[u8]) -> io::Result<()> {
    let current = fs::read(bundle)?;
    let needle = trim_ascii(pem);
    if current.windows(needle.len()).any(|w| w == needle) {
        return Ok(());
    }
    let mut f = fs::OpenOptions::new().append(true).open(bundle)?;
    if current.last().is_some_and(|&c| c != b'\n') {
        f.write_all(b"\n")?;
    }
    f.write_all(pem)?;
    f.sync_all()
}

/// `struct rtentry` of `<linux/route.h>` (libc has it only for musl).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// An `AF_INET` socket address, built without pointer casts.
fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr {
    let mut data = [0 as libc::c_char; 14];
    // sa_data of an AF_INET address: port (2 bytes), then the address, network order.
    for (d, b) in data[2..6].iter_mut().zip(ip.octets()) {
        *d = b as libc::c_char;
    }
    libc::sockaddr {
        sa_family: libc::AF_INET as libc::sa_family_t,
        sa_data: data,
    }
}

/// A datagram socket for interface and routing ioctls.
struct Ctl(OwnedFd);

impl Ctl {
    fn new() -> io::Result<Self> {
        // SAFETY: plain socket(2) call with constant arguments.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: socket(2) returned a new fd that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ifreq(name: &str) -> io::Result<libc::ifreq> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad interface name",
            ));
        }
        // SAFETY: ifreq is plain data (arrays, integers, a union of those and a raw pointer);
        // all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, &b) in req.ifr_name.iter_mut().zip(bytes) {
            *d = b as libc::c_char;
        }
        Ok(req)
    }

    /// ioctl(2) on the socket with a pointer to `arg`.
    fn ioctl<T>(&self, request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
        // SAFETY: the fd is ours and open; `arg` is a live, exclusively borrowed value of the
        // type the kernel expects for `request` (callers pair ifreq with SIOC*IF* and
        // RtEntry with SIOCADDRT).
        let r = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                request as _,
                arg as *mut T as *mut libc::c_void,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn flags(&self, name: &str) -> io::Result<libc::c_short> {
        let mut req = Self::ifreq(name)?;
        self.ioctl(libc::SIOCGIFFLAGS, &mut req)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        Ok(unsafe { req.ifr_ifru.ifru_flags })
    }

    fn set_up(&self, name: &str) -> io::Result<()> {
        let flags = self.flags(name)?;
        let mut req = Self::ifreq(name)?;
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        self.ioctl(libc::SIOCSIFFLAGS, &mut req)
    }

    fn set_addr(&self, name: &str, request: libc::c_ulong, ip: Ipv4Addr) -> io::Result<()> {
        let mut req = Self::ifreq(name)?;
        req.ifr_ifru.ifru_addr = sockaddr_in(ip);
        self.ioctl(request, &mut req)
    }

    fn set_mtu(&self, name: &str, mtu: u32) -> io::Result<()> {
        let mut req = Self::ifreq(name)?;
        req.ifr_ifru.ifru_mtu = libc::c_int::try_from(mtu)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "MTU too large"))?;
        self.ioctl(libc::SIOCSIFMTU, &mut req)
    }

    fn add_default_route(&self, name: &str, gateway: Ipv4Addr) -> io::Result<()> {
        let dev = CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"))?;
        let mut rt = RtEntry {
            rt_pad1: 0,
            rt_dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
            rt_gateway: sockaddr_in(gateway),
            rt_genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
            rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
            rt_pad2: 0,
            rt_pad3: 0,
            rt_pad4: std::ptr::null_mut(),
            rt_metric: 0,
            // The kernel only reads the name; `dev` outlives the ioctl.
            rt_dev: dev.as_ptr().cast_mut(),
            rt_mtu: 0,
            rt_window: 0,
            rt_irtt: 0,
        };
        self.ioctl(libc::SIOCADDRT, &mut rt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_specs() {
        let s = NetSetup::parse("10.77.0.2/24,10.77.0.1").unwrap();
        assert_eq!(s.address, Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(s.prefix_len, 24);
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(s.gateway, Some(Ipv4Addr::new(10, 77, 0, 1)));
        assert_eq!(s.iface, "eth0");
        assert_eq!(s.mtu, 1500);
        let s = NetSetup::parse("192.168.1.7/32").unwrap();
        assert_eq!(s.netmask(), Ipv4Addr::BROADCAST);
        assert_eq!(s.gateway, None);
        assert_eq!(
            NetSetup::parse("10.0.0.1/1").unwrap().netmask(),
            Ipv4Addr::new(128, 0, 0, 0)
        );
        for bad in [
            "10.77.0.2",
            "10.77.0.2/",
            "10.77.0.2/0",
            "10.77.0.2/33",
            "10.77.0.300/24",
            "10.77.0.2/24,10.78.0.1",
            "10.77.0.2/24,10.77.0.2",
            "10.77.0.2/24,x",
            "::1/64",
        ] {
            assert!(
                matches!(NetSetup::parse(bad), Err(Error::Usage(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn sockaddr_layout() {
        let sa = sockaddr_in(Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        let bytes: Vec<u8> = sa.sa_data.iter().map(|&c| c as u8).collect();
        assert_eq!(&bytes[..6], &[0, 0, 10, 77, 0, 1]);
        // The kernel's struct rtentry is 120 bytes on 64-bit Linux.
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(Ctl::ifreq("eth0").is_ok());
        assert!(Ctl::ifreq("").is_err());
        assert!(Ctl::ifreq("a-very-long-name0").is_err());
        assert!(Ctl::ifreq("a\0b").is_err());
    }
}
