//! A microVM whose network card is one end of a socketpair, with this program as the "network"
//! on the other end: it boots the `net` test guest (a tiny polling virtio-net driver), prints
//! the Ethernet frame the guest sends and answers it with a frame back, which the guest prints
//! on the serial console (shown here on stdout).
//!
//! ```text
//! cargo run -p sbx-examples --example net_echo
//! ```
//! Needs `/dev/kvm`. Exits 0 when the guest got the answer and powered off.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs::File;
use std::io::{Read, Write};
use std::process::ExitCode;

use sbx_vmm::{FdNetBackend, NetConfig, VmBuilder, VmExit};

const GUEST_MAC: [u8; 6] = [0x02, 0x5b, 0x78, 0, 0, 2];
const HOST_MAC: [u8; 6] = [0x02, 0x5b, 0x78, 0, 0, 1];

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn main() -> ExitCode {
    let (backend, stack_end) = match FdNetBackend::socketpair() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("net_echo: socketpair: {e}");
            return ExitCode::FAILURE;
        }
    };
    let vm = VmBuilder::new(sbx_test_guests::NET)
        .memory_mib(16)
        .net(NetConfig::new(GUEST_MAC, Box::new(backend)))
        .serial_output(Box::new(std::io::stdout()))
        .start();
    let vm = match vm {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("net_echo: cannot start the VM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = vm.net_metrics();
    // Blocking reads and writes of whole frames: a SOCK_SEQPACKET socket keeps boundaries.
    let mut wire = File::from(stack_end);
    let mut frame = vec![0u8; 65536];
    let n = match wire.read(&mut frame) {
        Ok(n) if n >= 14 => n,
        other => {
            eprintln!("net_echo: no frame from the guest: {other:?}");
            return ExitCode::FAILURE;
        }
    };
    let frame = &frame[..n];
    println!(
        "[host] {n} bytes {} -> {} type {:02x}{:02x}: {}",
        mac(&frame[6..12]),
        mac(&frame[..6]),
        frame[12],
        frame[13],
        String::from_utf8_lossy(&frame[14..])
    );
    let mut reply = frame[6..12].to_vec();
    reply.extend_from_slice(&HOST_MAC);
    reply.extend_from_slice(&frame[12..14]);
    reply.extend_from_slice(b"pong from host");
    if let Err(e) = wire.write_all(&reply) {
        eprintln!("net_echo: cannot answer: {e}");
        return ExitCode::FAILURE;
    }
    let exit = vm.wait();
    if let Some(m) = metrics {
        println!(
            "[host] device: tx {} frames / {} bytes, rx {} frames / {} bytes, drops {}",
            m.tx_frames.get(),
            m.tx_bytes.get(),
            m.rx_frames.get(),
            m.rx_bytes.get(),
            m.tx_dropped.get() + m.rx_dropped.get()
        );
    }
    if exit == VmExit::Poweroff {
        ExitCode::SUCCESS
    } else {
        eprintln!("net_echo: VM ended: {exit}");
        ExitCode::FAILURE
    }
}
