//! The net device end to end under KVM: the `net` test guest drives it through the real
//! virtio-mmio transport, ioeventfds and the device event loop, while this test plays the
//! network stack on the other end of a `SOCK_SEQPACKET` socketpair.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use sbx_vmm::{require_kvm, FdNetBackend, NetConfig, VmBuilder, VmExit};

const GUEST_MAC: [u8; 6] = [0x02, 0x5b, 0x78, 0, 0, 2];
const HOST_MAC: [u8; 6] = [0x02, 0x5b, 0x78, 0, 0, 1];

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Wait up to `timeout` for one frame on the non-blocking `fd`.
fn recv_frame(fd: &OwnedFd, timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(n) => return Some(buf[..n].to_vec()),
            Err(Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => return None,
        }
    }
}

#[test]
fn guest_driver_sends_and_receives_a_frame() {
    require_kvm!();
    let (ours, stack) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .unwrap();
    let out = Capture::default();
    let vm = VmBuilder::new(sbx_test_guests::NET)
        .memory_mib(16)
        .net(NetConfig::new(
            GUEST_MAC,
            Box::new(FdNetBackend::new(ours).unwrap()),
        ))
        .serial_output(Box::new(out.clone()))
        .start()
        .unwrap();
    let metrics = vm.net_metrics().expect("the VM has a net device");
    let stop = vm.stop_handle();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(90));
        stop.stop();
    });

    let frame = recv_frame(&stack, Duration::from_secs(60)).expect("a frame from the guest");
    let mut want = vec![0xff; 6];
    want.extend_from_slice(&GUEST_MAC);
    want.extend_from_slice(&[0x88, 0xb5]);
    want.extend_from_slice(b"ping from guest");
    assert_eq!(frame, want, "{}", out.text());
    // Answer at once: the guest posts its receive buffers only after the ping completed, so
    // the answer may have to wait in the socket.
    let mut reply = GUEST_MAC.to_vec();
    reply.extend_from_slice(&HOST_MAC);
    reply.extend_from_slice(&[0x88, 0xb5]);
    reply.extend_from_slice(b"pong from host");
    nix::unistd::write(&stack, &reply).unwrap();

    let start = Instant::now();
    let exit = vm.wait();
    let elapsed = start.elapsed();
    let text = out.text();
    assert_eq!(exit, VmExit::Poweroff, "{text}");
    assert!(
        elapsed < Duration::from_secs(85),
        "watchdog stopped the VM: {text}"
    );
    drop(watchdog);
    let expected = "sbx-test-guest: net\n\
         net: mac=02:5b:78:00:00:02 status=1\n\
         net: sent 29 bytes\n\
         net: got 28 bytes from 02:5b:78:00:00:01: pong from host\n\
         net: done errors=0\n";
    assert!(text.starts_with(expected), "{text}");
    assert_eq!(metrics.tx_frames.get(), 1);
    assert_eq!(metrics.tx_bytes.get(), 29);
    assert_eq!(metrics.rx_frames.get(), 1);
    assert_eq!(metrics.rx_bytes.get(), 28);
    assert_eq!(metrics.tx_bad_chains.get() + metrics.rx_bad_chains.get(), 0);
}
