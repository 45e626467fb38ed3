//! The vsock device end to end under KVM: the `vsock` test guest drives it through the real
//! virtio-mmio transport, ioeventfds and the device event loop, while this test plays the
//! host processes on the Unix sockets.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sbx_vmm::devices::virtio::vsock::connect_guest_port;
use sbx_vmm::{require_kvm, VmBuilder, VmExit};

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

#[test]
fn guest_driver_talks_to_host_sockets_both_ways() {
    require_kvm!();
    let dir = std::env::temp_dir().join(format!("sbx-vsock-guest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vm.sock");

    // The host service for guest connections to port 53.
    let svc = UnixListener::bind(format!("{}_53", path.display())).unwrap();
    let service = std::thread::spawn(move || {
        let (mut s, _) = svc.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut hello = [0u8; 16];
        s.read_exact(&mut hello).unwrap();
        s.write_all(b"hello from host").unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        (hello, rest)
    });

    let out = Capture::default();
    let vm = VmBuilder::new(sbx_test_guests::VSOCK)
        .memory_mib(16)
        .vsock(42, &path)
        .serial_output(Box::new(out.clone()))
        .start()
        .unwrap();
    let stop = vm.stop_handle();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(90));
        stop.stop();
    });

    // Host-initiated: the device asks the guest, which accepts.
    let (mut host, port) = connect_guest_port(&path, 52, Duration::from_secs(60)).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    host.write_all(b"ping").unwrap();
    let mut pong = [0u8; 9];
    host.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"pong:ping");
    drop(host);

    let start = Instant::now();
    let exit = vm.wait();
    let elapsed = start.elapsed();
    let (hello, rest) = service.join().unwrap();
    let text = out.text();
    assert_eq!(exit, VmExit::Poweroff, "{text}");
    assert!(
        elapsed < Duration::from_secs(85),
        "watchdog stopped the VM: {text}"
    );
    drop(watchdog);
    assert_eq!(&hello, b"hello from guest");
    assert!(rest.is_empty(), "the guest's shutdown ends the host stream");
    let expected = format!(
        "sbx-test-guest: vsock\n\
         vsock: cid=42\n\
         vsock: accepted host port={port}\n\
         vsock: got ping\n\
         vsock: host closed\n\
         vsock: connected to host port 53\n\
         vsock: got hello from host\n\
         vsock: closed\n\
         vsock: done errors=0\n"
    );
    assert!(text.starts_with(&expected), "{text}");
    assert!(!path.exists(), "socket removed after the VM ended");
    let _ = std::fs::remove_dir_all(&dir);
}
