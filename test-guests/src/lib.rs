//! Tiny x86-64 test guests for sbx-vmm, compiled from `guests/*.S` and `guests/*.c` by this
//! crate's build script with the system toolchain (`cc` + `ld`; `SBX_TEST_GUESTS_CC` overrides
//! the compiler). Nothing prebuilt is committed. Each constant is the absolute path of one
//! ELF64 image in `OUT_DIR`; all are linked at 1 MiB and are a few KiB.
//!
//! Guest code runs about 1000x slower than native under `kvm_pvm` (measured: ~1.1 µs per
//! iteration of a two-instruction loop), so the guests do very little work, and every wait
//! is bounded by the TSC (which runs at real speed there) rather than by counting loops.
//!
//! # Entry paths
//! - **PVH** guests carry a `Xen` note of type `XEN_ELFNOTE_PHYS32_ENTRY` (18) and run in
//!   32-bit protected mode with paging off; `%ebx` should point at `hvm_start_info`.
//! - **Long64** guests have no note and start at `e_entry` in 64-bit long mode with the
//!   VMM's identity map of 0..4 GiB. They set up their own stack.
//!
//! # What each guest prints on COM1 (0x3f8) and how it ends
//! Every line ends in `\n`. "poweroff" means one write of `0x34` to port 0x600 (ACPI S5,
//! hardware-reduced sleep control); "reset" means `0xfe` to port 0x64 (i8042). After either
//! write the guest loops on `hlt`.
//!
//! | constant | entry | output | ends with |
//! |---|---|---|---|
//! | [`HELLO_PVH`] | PVH | [`expect::HELLO_PVH`] | poweroff |
//! | [`HELLO_64`] | Long64 | [`expect::HELLO_64`] | poweroff |
//! | [`HELLO_I8042_PVH`] | PVH | [`expect::HELLO_I8042_PVH`] | reset |
//! | [`HELLO_I8042_64`] | Long64 | [`expect::HELLO_I8042_64`] | reset |
//! | [`MINIMAL`] | PVH | the single byte `S` ([`expect::MINIMAL`]), no newline | poweroff |
//! | [`SMP`] | PVH | [`expect::smp`] | poweroff |
//! | [`MISBEHAVE`] | PVH | [`expect::MISBEHAVE`] (after touching unknown ports/MMIO) | poweroff |
//! | [`CRASH`] | PVH | [`expect::CRASH`], then a triple fault | crash |
//! | [`SPIN`] | PVH | [`expect::SPIN`], then a busy loop | never (host stop) |
//! | [`VIRTIO`] | Long64 | see below | poweroff |
//! | [`VSOCK`] | Long64 | see below | poweroff |
//! | [`NET`] | Long64 | see below | poweroff |
//!
//! The PVH hello guests print `start_info=bad` instead of `start_info=ok` when `%ebx` does
//! not point at the `hvm_start_info` magic `0x336ec578`.
//!
//! ## `SMP`
//! ```text
//! sbx-test-guest: smp
//! sbx-test-guest: madt-cpus=<M>
//! sbx-test-guest: cpus=<N>
//! sbx-test-guest: poweroff
//! ```
//! `M` counts the enabled Local APIC (type 0) and Local x2APIC (type 9) entries of the MADT,
//! found through `hvm_start_info.rsdp_paddr` or a scan of 0xe0000..0xfffff for `"RSD PTR "`
//! (checksummed), then the XSDT (RSDT for revision 0 RSDPs). `N` is measured: the BSP copies
//! a real-mode trampoline to 0x10000, enables its LAPIC (SVR) and sends INIT, SIPI, SIPI
//! (vector 0x10) to all-excluding-self through the xAPIC ICR at 0xfee0_0300; each AP that
//! runs the trampoline does `lock incl` on a counter and halts with interrupts off (the VMM
//! must be able to stop vCPUs parked in an in-kernel `hlt`). The BSP waits until `M - 1` APs
//! checked in plus 50M TSC ticks of grace, or at most 4e9 TSC ticks (about 1.5 s at 2.6 GHz),
//! and prints `1 + counter`. Failures add lines before `madt-cpus`:
//! `sbx-test-guest: error no RSDP`, `... error no MADT` (then `madt-cpus=0`), and
//! `... error bad MADT checksum`.
//!
//! ## `VIRTIO`
//! A polling virtio-mmio driver (version 2 registers, split queues of 8, no interrupts).
//! It probes windows `0xd000_0000 + i * 0x1000` for `i` in 0..8 (magic 0 or device id 0 is
//! skipped silently) and stops probing once it has a block and an rng device. Output with a
//! read-write disk whose sector 0 starts with [`expect::VIRTIO_SECTOR0`]:
//! ```text
//! sbx-test-guest: virtio
//! virtio: slot 0 id=2 version=2
//! virtio: slot 1 id=4 version=2
//! blk: features=0x<offered features, hex>
//! blk: capacity=<sectors> sector0=SBX-DISK-SECTOR0
//! blk: wrote sector1=written-by-guest
//! blk: sector1=written-by-guest
//! blk: flush ok
//! rng: features=0x<offered features, hex>
//! rng: bytes=<32 lowercase hex digits>
//! virtio: done errors=0
//! sbx-test-guest: poweroff
//! ```
//! - `sector0=` shows the first 16 bytes of sector 0 with unprintable bytes as `.`.
//! - The write puts `written-by-guest` followed by 496 zero bytes into sector 1 (byte offset
//!   512 of the disk); `sector1=` is the first 16 bytes read back after it.
//! - The driver accepts `VIRTIO_F_VERSION_1` (required), plus `VIRTIO_BLK_F_FLUSH` (bit 9)
//!   and `VIRTIO_BLK_F_RO` (bit 5) when offered. Without FLUSH it prints
//!   `blk: flush not offered`; with RO it prints `blk: read-only, no write` instead of the
//!   `wrote` line (and `sector1=` shows the disk's own bytes).
//! - Every failure prints `virtio: error <what>` and bumps the count in the `done` line:
//!   `no virtio-blk device`, `no virtio-rng device`, `bad magic 0x.. in slot N`,
//!   `only the version 2 (virtio 1.x) register layout is supported`,
//!   `VIRTIO_F_VERSION_1 not offered`, `FEATURES_OK rejected`, `queue 0 already ready`,
//!   `queue 0 not available`, `device reset did not complete`,
//!   `timeout waiting for <read sector0|write sector1|read sector1|flush|entropy>`
//!   (deadline 5e9 TSC ticks per request), `<request> status=<n>`,
//!   `used element names descriptor <id> for <request>`, `rng returned too few bytes`,
//!   `rng used length larger than the buffer`, `rng returned only zeros`.
//!
//! ## `VSOCK`
//! A polling virtio-vsock driver (virtio-mmio version 2, three split queues of 8, no
//! interrupts) for sbx-vmm's vsock device; it uses the first device with id 19. It waits
//! about 10 s (25e9 TSC ticks) for a host connection to guest port 52, accepts it, answers
//! every chunk of data `X` with `pong:X`, and sends RST once the host closes (SHUTDOWN). Then
//! it connects from guest port 1024 to host port 53, sends `hello from guest`, prints the
//! first chunk the host answers, shuts down both directions and waits for the device's RST.
//! Output when the host sends `ping` and the port-53 service answers `hello from host`:
//! ```text
//! sbx-test-guest: vsock
//! vsock: cid=<guest CID>
//! vsock: accepted host port=<the device's host-side port, as in its OK line>
//! vsock: got ping
//! vsock: host closed
//! vsock: connected to host port 53
//! vsock: got hello from host
//! vsock: closed
//! vsock: done errors=0
//! sbx-test-guest: poweroff
//! ```
//! Failures print `vsock: error <what>` and bump the count in the `done` line.
//!
//! ## `NET`
//! A polling virtio-net driver (virtio-mmio version 2, two split queues of 8, no interrupts)
//! for sbx-vmm's net device; it uses the first device with id 1 and accepts exactly
//! `VIRTIO_F_VERSION_1`, `VIRTIO_NET_F_MAC` and `VIRTIO_NET_F_STATUS`. It sends one frame
//! (12-byte zero header, then broadcast destination, its MAC, EtherType 0x88b5 and the 15
//! bytes `ping from guest`: 29 bytes), and only then posts eight 1536-byte receive buffers,
//! so the answer has to wait in the backend. It waits about 4 s (1e10 TSC ticks) for the
//! first received frame, checks its header (zero except `num_buffers = 1`), destination
//! (its MAC) and EtherType, and prints its payload (unprintable bytes as `.`). Output when
//! the host answers from `02:5b:78:00:00:01` with payload `pong from host`:
//! ```text
//! sbx-test-guest: net
//! net: mac=<the device's MAC, lowercase hex with colons> status=1
//! net: sent 29 bytes
//! net: got 28 bytes from 02:5b:78:00:00:01: pong from host
//! net: done errors=0
//! sbx-test-guest: poweroff
//! ```
//! Failures print `net: error <what>` and bump the count in the `done` line.
//!
//! # QEMU check variants
//! [`qemu`] holds the 64-bit guests wrapped for QEMU, which boots ELF kernels only via PVH:
//! a PVH shim builds sbx-vmm's 64-bit entry state and jumps to the same guest code. Run with
//! `qemu-system-x86_64 -M microvm -enable-kvm -cpu host,-arch-capabilities -nodefaults
//! -no-user-config -nographic -serial stdio -device isa-debug-exit,iobase=0x600,iosize=1
//! -kernel <file>`; the `isa-debug-exit` device turns the poweroff write into QEMU exit
//! status 105.

#![forbid(unsafe_code)]

mod elf;

pub use elf::{inspect, ElfInfo, LoadSegment, EM_X86_64, ET_EXEC};

/// Errors of [`inspect`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The image does not start with the ELF magic.
    #[error("not an ELF image")]
    NotElf,
    /// Only ELF64 images are loadable by linux-loader.
    #[error("unsupported ELF class {0}")]
    UnsupportedClass(u8),
    /// Only little-endian images are expected.
    #[error("not a little-endian ELF image")]
    NotLittleEndian,
    /// A header or note is inconsistent with the file.
    #[error("malformed ELF image: {0}")]
    Malformed(&'static str),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Prints the greeting, `entry=pvh32 start_info=ok`, then powers off. PVH entry.
pub const HELLO_PVH: &str = concat!(env!("OUT_DIR"), "/hello-pvh.elf");
/// Prints the greeting, `entry=long64`, then powers off. 64-bit entry.
pub const HELLO_64: &str = concat!(env!("OUT_DIR"), "/hello-64.elf");
/// Like [`HELLO_PVH`] but ends through the i8042 reset line.
pub const HELLO_I8042_PVH: &str = concat!(env!("OUT_DIR"), "/hello-i8042-pvh.elf");
/// Like [`HELLO_64`] but ends through the i8042 reset line.
pub const HELLO_I8042_64: &str = concat!(env!("OUT_DIR"), "/hello-i8042-64.elf");
/// Cold-start benchmark guest: its first instructions write `S` to COM1, then it powers off.
/// PVH entry; also boots under QEMU microvm.
pub const MINIMAL: &str = concat!(env!("OUT_DIR"), "/minimal.elf");
/// Touches an unknown port, unknown MMIO and a virtio window with wrong access sizes, then
/// prints [`expect::MISBEHAVE`] and powers off. PVH entry.
pub const MISBEHAVE: &str = concat!(env!("OUT_DIR"), "/misbehave.elf");
/// Prints [`expect::CRASH`], loads an empty IDT and executes `int3` with `eax = 0x5bc0ffee`:
/// a triple fault. PVH entry.
pub const CRASH: &str = concat!(env!("OUT_DIR"), "/crash.elf");
/// Prints [`expect::SPIN`] and then spins forever with interrupts off. PVH entry.
pub const SPIN: &str = concat!(env!("OUT_DIR"), "/spin.elf");
/// Counts CPUs through the MADT and by starting the APs with INIT-SIPI-SIPI. PVH entry.
pub const SMP: &str = concat!(env!("OUT_DIR"), "/smp.elf");
/// Polling virtio-mmio driver for virtio-blk and virtio-rng. 64-bit entry.
pub const VIRTIO: &str = concat!(env!("OUT_DIR"), "/virtio.elf");
/// Polling virtio-vsock driver: one host-initiated and one guest-initiated connection.
/// 64-bit entry.
pub const VSOCK: &str = concat!(env!("OUT_DIR"), "/vsock.elf");
/// Polling virtio-net driver: one frame out, one frame back. 64-bit entry.
pub const NET: &str = concat!(env!("OUT_DIR"), "/net.elf");

/// The 64-bit guests behind a PVH-to-long-mode shim, for checking them under QEMU.
pub mod qemu {
    /// [`HELLO_64`](crate::HELLO_64) with a PVH entry; prints [`crate::expect::HELLO_64`].
    pub const HELLO_64: &str = concat!(env!("OUT_DIR"), "/hello-64-qemu.elf");
    /// [`VIRTIO`](crate::VIRTIO) with a PVH entry, probing QEMU microvm's 24 virtio-mmio
    /// windows at `0xfeb0_0000 + i * 0x200` (QEMU fills them from the last one down).
    /// Needs `-global virtio-mmio.force-legacy=false` for the version 2 register layout.
    pub const VIRTIO: &str = concat!(env!("OUT_DIR"), "/virtio-qemu.elf");
}

/// Expected serial output.
pub mod expect {
    /// First line of every hello guest.
    pub const HELLO_LINE: &str = "sbx-test-guest: hello\n";
    /// Whole output of [`crate::HELLO_PVH`].
    pub const HELLO_PVH: &str = "sbx-test-guest: hello\n\
        sbx-test-guest: entry=pvh32 start_info=ok\n\
        sbx-test-guest: poweroff\n";
    /// Whole output of [`crate::HELLO_64`].
    pub const HELLO_64: &str = "sbx-test-guest: hello\n\
        sbx-test-guest: entry=long64\n\
        sbx-test-guest: poweroff\n";
    /// Whole output of [`crate::HELLO_I8042_PVH`].
    pub const HELLO_I8042_PVH: &str = "sbx-test-guest: hello\n\
        sbx-test-guest: entry=pvh32 start_info=ok\n\
        sbx-test-guest: reset\n";
    /// Whole output of [`crate::HELLO_I8042_64`].
    pub const HELLO_I8042_64: &str = "sbx-test-guest: hello\n\
        sbx-test-guest: entry=long64\n\
        sbx-test-guest: reset\n";
    /// Whole output of [`crate::MINIMAL`].
    pub const MINIMAL: &[u8] = b"S";
    /// Whole output of [`crate::MISBEHAVE`].
    pub const MISBEHAVE: &str = "sbx-test-guest: misbehaved\nsbx-test-guest: poweroff\n";
    /// Whole output of [`crate::CRASH`].
    pub const CRASH: &str = "sbx-test-guest: crashing\n";
    /// `eax` at the time [`crate::CRASH`] faults.
    pub const CRASH_EAX: u64 = 0x5bc0_ffee;
    /// Whole output of [`crate::SPIN`].
    pub const SPIN: &str = "sbx-test-guest: spinning\n";
    /// What a test should write at the start of sector 0 for [`crate::VIRTIO`].
    pub const VIRTIO_SECTOR0: &str = "SBX-DISK-SECTOR0";
    /// What [`crate::VIRTIO`] writes at the start of sector 1 (the rest of it is zeroed).
    pub const VIRTIO_SECTOR1: &str = "written-by-guest";
    /// Last driver line of a [`crate::VIRTIO`] run without errors.
    pub const VIRTIO_DONE: &str = "virtio: done errors=0\n";
    /// Last line of every guest that powers off, except [`crate::MINIMAL`].
    pub const POWEROFF_LINE: &str = "sbx-test-guest: poweroff\n";

    /// Whole output of [`crate::SMP`] when nothing fails.
    pub fn smp(madt_cpus: u32, cpus: u32) -> String {
        format!(
            "sbx-test-guest: smp\nsbx-test-guest: madt-cpus={madt_cpus}\n\
             sbx-test-guest: cpus={cpus}\nsbx-test-guest: poweroff\n"
        )
    }
}

/// How a VMM has to start a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Entry {
    /// 32-bit PVH entry from the `XEN_ELFNOTE_PHYS32_ENTRY` note.
    Pvh,
    /// 64-bit long-mode entry at `e_entry` (no PVH note).
    Long64,
}

/// One built guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Guest {
    /// Short name (the file name without `.elf`).
    pub name: &'static str,
    /// Absolute path of the ELF image.
    pub path: &'static str,
    /// How it is entered.
    pub entry: Entry,
}

const fn guest(name: &'static str, path: &'static str, entry: Entry) -> Guest {
    Guest { name, path, entry }
}

/// Every guest meant for sbx-vmm.
pub const GUESTS: &[Guest] = &[
    guest("hello-pvh", HELLO_PVH, Entry::Pvh),
    guest("hello-64", HELLO_64, Entry::Long64),
    guest("hello-i8042-pvh", HELLO_I8042_PVH, Entry::Pvh),
    guest("hello-i8042-64", HELLO_I8042_64, Entry::Long64),
    guest("minimal", MINIMAL, Entry::Pvh),
    guest("misbehave", MISBEHAVE, Entry::Pvh),
    guest("crash", CRASH, Entry::Pvh),
    guest("spin", SPIN, Entry::Pvh),
    guest("smp", SMP, Entry::Pvh),
    guest("virtio", VIRTIO, Entry::Long64),
    guest("vsock", VSOCK, Entry::Long64),
    guest("net", NET, Entry::Long64),
];

/// The QEMU check variants (all PVH).
pub const QEMU_GUESTS: &[Guest] = &[
    guest("hello-64-qemu", qemu::HELLO_64, Entry::Pvh),
    guest("virtio-qemu", qemu::VIRTIO, Entry::Pvh),
];

#[cfg(test)]
mod tests {
    use super::*;

    const HIMEM_START: u64 = 0x10_0000;
    const MAX_IMAGE_BYTES: usize = 64 * 1024;

    fn read(path: &str) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// The file bytes at guest physical address `addr`.
    fn bytes_at<'a>(image: &'a [u8], info: &ElfInfo, addr: u64, len: usize) -> &'a [u8] {
        let seg = info
            .segment_containing(addr)
            .expect("address in a loaded segment");
        let start = usize::try_from(seg.offset + (addr - seg.paddr)).unwrap();
        &image[start..start + len]
    }

    #[test]
    fn guests_are_small_x86_64_executables_with_the_right_entry() {
        for g in GUESTS.iter().chain(QEMU_GUESTS) {
            let image = read(g.path);
            assert!(
                image.len() <= MAX_IMAGE_BYTES,
                "{}: {} bytes",
                g.name,
                image.len()
            );
            let info = inspect(&image).unwrap_or_else(|e| panic!("{}: {e}", g.name));
            assert_eq!(info.machine, EM_X86_64, "{}", g.name);
            assert_eq!(info.elf_type, ET_EXEC, "{}", g.name);
            assert!(!info.load_segments.is_empty(), "{}", g.name);
            for seg in &info.load_segments {
                assert!(seg.paddr >= HIMEM_START, "{}: segment below 1 MiB", g.name);
                assert!(
                    seg.paddr + seg.memsz < 2 * HIMEM_START,
                    "{}: too large",
                    g.name
                );
            }
            // linux-loader rejects entries below the high-memory start it is given.
            assert!(
                info.entry >= HIMEM_START,
                "{}: e_entry {:#x}",
                g.name,
                info.entry
            );
            assert!(info.segment_containing(info.entry).is_some(), "{}", g.name);
            match g.entry {
                Entry::Pvh => {
                    let pvh = info
                        .pvh_entry
                        .unwrap_or_else(|| panic!("{}: no PVH note", g.name));
                    assert!(u64::from(pvh) >= HIMEM_START, "{}", g.name);
                    assert!(info.segment_containing(pvh.into()).is_some(), "{}", g.name);
                    // linux-loader keeps only the last PT_NOTE's verdict.
                    assert_eq!(info.note_segments, 1, "{}", g.name);
                }
                Entry::Long64 => {
                    assert_eq!(info.pvh_entry, None, "{}: unexpected PVH note", g.name);
                }
            }
        }
    }

    #[test]
    fn minimal_writes_the_serial_byte_first() {
        let image = read(MINIMAL);
        let info = inspect(&image).unwrap();
        let entry = u64::from(info.pvh_entry.unwrap());
        // mov $0x3f8, %edx; mov $'S', %al; out %al, %dx
        let expected = [0xba, 0xf8, 0x03, 0x00, 0x00, 0xb0, expect::MINIMAL[0], 0xee];
        assert_eq!(bytes_at(&image, &info, entry, expected.len()), expected);
    }

    #[test]
    fn images_hold_the_documented_strings() {
        let hello: &[&str] = &["sbx-test-guest: hello\n", "sbx-test-guest: entry="];
        let cases: &[(&str, &[&str])] = &[
            (HELLO_PVH, hello),
            (HELLO_64, hello),
            (HELLO_I8042_PVH, hello),
            (HELLO_I8042_64, hello),
            (
                HELLO_PVH,
                &[" start_info=ok\n", "sbx-test-guest: poweroff\n"],
            ),
            (HELLO_64, &["entry=long64\n", "sbx-test-guest: poweroff\n"]),
            (HELLO_I8042_PVH, &["sbx-test-guest: reset\n"]),
            (HELLO_I8042_64, &["sbx-test-guest: reset\n"]),
            (
                SMP,
                &["sbx-test-guest: madt-cpus=", "sbx-test-guest: cpus="],
            ),
            (
                VIRTIO,
                &[
                    "blk: capacity=",
                    " sector0=",
                    "blk: wrote sector1=",
                    "written-by-guest",
                    "blk: flush ok\n",
                    "rng: bytes=",
                    "virtio: done errors=",
                ],
            ),
        ];
        for (path, strings) in cases {
            let image = read(path);
            for s in *strings {
                assert!(contains(&image, s.as_bytes()), "{path} lacks {s:?}");
            }
        }
        assert!(!contains(&read(HELLO_PVH), b"sbx-test-guest: reset\n"));
        assert!(!contains(
            &read(HELLO_I8042_64),
            b"sbx-test-guest: poweroff\n"
        ));
    }

    #[test]
    fn expected_outputs_are_consistent() {
        assert!(expect::HELLO_PVH.starts_with(expect::HELLO_LINE));
        assert!(expect::HELLO_64.ends_with(expect::POWEROFF_LINE));
        assert_eq!(
            expect::smp(2, 2),
            "sbx-test-guest: smp\nsbx-test-guest: madt-cpus=2\nsbx-test-guest: cpus=2\n\
             sbx-test-guest: poweroff\n"
        );
        assert_eq!(expect::VIRTIO_SECTOR0.len(), 16);
        assert_eq!(expect::VIRTIO_SECTOR1.len(), 16);
    }
}
