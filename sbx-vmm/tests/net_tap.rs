//! `FdNetBackend` over a real TAP device (`IFF_TAP | IFF_NO_PI`) in a network namespace the
//! test creates: frames the kernel sends come out of `recv` one at a time, and a frame given
//! to `send` is received by the kernel's interface. Needs root (CAP_NET_ADMIN, /dev/net/tun).

use std::fs::OpenOptions;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use sbx_vmm::{FdNetBackend, NetBackend};

const TAP: &str = "sbxtap0";

/// The interface's rx packet count in this thread's namespace.
fn rx_packets(iface: &str) -> u64 {
    let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
    let line = dev
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{iface}:")))
        .unwrap_or_else(|| panic!("{iface} in {dev}"));
    let fields: Vec<&str> = line.split(':').nth(1).unwrap().split_whitespace().collect();
    fields[1].parse().unwrap()
}

fn open_tap(name: &str) -> OwnedFd {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .expect("/dev/net/tun");
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, &b) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *d = b as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads an ifreq; `req` is live and the fd is ours.
    let r = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF as _, &mut req) };
    assert_eq!(r, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    OwnedFd::from(tun)
}

#[test]
fn tap_frames_both_ways() {
    std::thread::spawn(|| {
        // SAFETY: unshare(2) with CLONE_NEWNET only changes this thread's network namespace.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare: {}", std::io::Error::last_os_error());
        let mut be = FdNetBackend::new(open_tap(TAP)).unwrap();
        let st = Command::new("sh")
            .args([
                "-c",
                &format!("ip addr add 10.99.0.1/24 dev {TAP} && ip link set {TAP} up"),
            ])
            .status()
            .unwrap();
        assert!(st.success());

        // Kernel to backend: a datagram to a neighbour makes the kernel ask for its MAC.
        let mut buf = vec![0u8; 65536];
        let udp = UdpSocket::bind("10.99.0.1:0").unwrap();
        udp.send_to(b"x", "10.99.0.2:9").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let arp = loop {
            match be.recv(&mut buf) {
                Ok(n) if n >= 42 && buf[12..14] == [0x08, 0x06] => break buf[..n].to_vec(),
                Ok(_) => {} // e.g. IPv6 neighbour discovery
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no ARP request on the TAP");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("recv: {e}"),
            }
        };
        assert_eq!(&arp[..6], &[0xff; 6], "broadcast");
        assert_eq!(&arp[38..42], &[10, 99, 0, 2], "who has 10.99.0.2");

        // Backend to kernel: one frame counts as one received packet.
        let before = rx_packets(TAP);
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[0x02, 0x5b, 0x78, 0, 0, 9, 0x88, 0xb5]);
        frame.extend_from_slice(&[0u8; 46]);
        be.send(&frame).unwrap();
        assert_eq!(rx_packets(TAP), before + 1);
    })
    .join()
    .unwrap();
}
