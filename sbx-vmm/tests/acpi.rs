//! ACPI tables through the public API: linkage, checksums and lengths checked here, and every
//! table decoded (and recompiled) by ACPICA's `iasl` as an independent parser.
//!
//! `iasl` comes from Debian's `acpica-tools`; without it the iasl tests fail (CI installs it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sbx_vmm::acpi::{create_acpi_tables, AcpiConfig, AcpiError, VirtioMmioDevice};
use sbx_vmm::arch::x86_64::layout::{
    ACPI_TABLES_END, ACPI_TABLES_START, APIC_START, IOAPIC_START, RSDP_START,
};
use sbx_vmm::memory::{create_guest_memory, GuestMemory};
use vm_memory::{Bytes, GuestAddress};

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn slots(n: u32) -> impl Iterator<Item = VirtioMmioDevice> {
    (0..n).map(VirtioMmioDevice::in_slot)
}

/// The tables found by walking RSDP -> XSDT -> FADT -> DSDT, each checked on the way.
struct Tables {
    rsdp: Vec<u8>,
    /// Signature -> (guest address, bytes).
    by_sig: BTreeMap<String, (u64, Vec<u8>)>,
}

impl Tables {
    fn get(&self, sig: &str) -> &[u8] {
        &self.by_sig[sig].1
    }
}

/// Read one SDT at `addr`, checking its signature, length and checksum and that it lies in the
/// table area.
fn read_sdt(mem: &GuestMemory, addr: u64, sig: &str) -> Vec<u8> {
    assert!(
        addr >= ACPI_TABLES_START,
        "{sig} at {addr:#x} below the table area"
    );
    let mut header = [0u8; 36];
    mem.read_slice(&mut header, GuestAddress(addr)).unwrap();
    assert_eq!(&header[..4], sig.as_bytes(), "table at {addr:#x}");
    let len = u32_at(&header, 4) as u64;
    assert!(len >= 36, "{sig} length {len}");
    assert!(
        addr + len <= ACPI_TABLES_END,
        "{sig} ends past the table area"
    );
    let mut table = vec![0u8; len as usize];
    mem.read_slice(&mut table, GuestAddress(addr)).unwrap();
    assert_eq!(sum(&table), 0, "{sig} checksum");
    assert_eq!(&table[10..16], b"SBXVMM", "{sig} OEM ID");
    table
}

fn walk(mem: &GuestMemory, rsdp_addr: GuestAddress) -> Tables {
    assert_eq!(rsdp_addr, GuestAddress(RSDP_START));
    let mut rsdp = vec![0u8; 36];
    mem.read_slice(&mut rsdp, rsdp_addr).unwrap();
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(sum(&rsdp[..20]), 0, "RSDP v1 checksum");
    assert_eq!(rsdp[15], 2, "RSDP revision");
    assert_eq!(u32_at(&rsdp, 20), 36, "RSDP length");
    assert_eq!(sum(&rsdp), 0, "RSDP extended checksum");
    assert_eq!(u32_at(&rsdp, 16), 0, "no RSDT");

    let mut by_sig = BTreeMap::new();
    let xsdt_addr = u64_at(&rsdp, 24);
    let xsdt = read_sdt(mem, xsdt_addr, "XSDT");
    assert_eq!((xsdt.len() - 36) % 8, 0);
    let entries: Vec<u64> = (36..xsdt.len())
        .step_by(8)
        .map(|o| u64_at(&xsdt, o))
        .collect();
    assert_eq!(entries.len(), 2, "XSDT lists FADT and MADT");
    for (addr, sig) in entries.iter().zip(["FACP", "APIC"]) {
        by_sig.insert(sig.to_string(), (*addr, read_sdt(mem, *addr, sig)));
    }
    let fadt = &by_sig["FACP"].1;
    assert_eq!(u32_at(fadt, 40), 0, "32-bit DSDT pointer unused");
    let dsdt_addr = u64_at(fadt, 140);
    by_sig.insert("DSDT".into(), (dsdt_addr, read_sdt(mem, dsdt_addr, "DSDT")));
    by_sig.insert("XSDT".into(), (xsdt_addr, xsdt));

    // No two tables overlap.
    let mut spans: Vec<(u64, u64)> = by_sig
        .values()
        .map(|(a, t)| (*a, *a + t.len() as u64))
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "tables overlap: {spans:x?}");
    }
    Tables { rsdp, by_sig }
}

fn build(config: &AcpiConfig) -> (GuestMemory, Tables) {
    let mem = create_guest_memory(16 << 20).unwrap();
    let rsdp = create_acpi_tables(&mem, config).unwrap();
    let tables = walk(&mem, rsdp);
    (mem, tables)
}

/// MADT subtables as (type, bytes).
fn madt_entries(madt: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut off = 44;
    while off < madt.len() {
        let len = madt[off + 1] as usize;
        assert!(
            len >= 2 && off + len <= madt.len(),
            "MADT subtable at {off}"
        );
        out.push((madt[off], &madt[off..off + len]));
        off += len;
    }
    out
}

#[test]
fn tables_are_linked_checksummed_and_inside_the_area() {
    for (vcpus, devices, i8042) in [(1, 0, false), (2, 3, true), (8, 19, false), (255, 19, true)] {
        let config = AcpiConfig::new(vcpus)
            .with_virtio_devices(slots(devices))
            .with_i8042(i8042);
        let (_, tables) = build(&config);
        assert_eq!(tables.rsdp.len(), 36);
        let fadt = tables.get("FACP");
        assert_eq!(fadt.len(), 276);
        assert_eq!(fadt[8], 6, "FADT major version");
        assert_eq!(fadt[131], 5, "FADT minor version");
        let flags = u32_at(fadt, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        assert_eq!(
            &fadt[116..120],
            &[1, 8, 0, 1],
            "reset reg: I/O, 8 bits, byte access"
        );
        assert_eq!(u64_at(fadt, 120), 0x602);
        assert_eq!(&fadt[244..248], &[1, 8, 0, 1]);
        assert_eq!(u64_at(fadt, 248), 0x600);
        assert_eq!(&fadt[256..260], &[1, 8, 0, 1]);
        assert_eq!(u64_at(fadt, 260), 0x601);
        let boot_flags = u16::from_le_bytes(fadt[109..111].try_into().unwrap());
        assert_eq!(boot_flags & 2 != 0, i8042, "8042 boot flag");
    }
}

#[test]
fn madt_has_one_enabled_local_apic_per_vcpu_and_the_ioapic() {
    for vcpus in [1u8, 2, 8, 255] {
        let (_, tables) = build(&AcpiConfig::new(vcpus));
        let madt = tables.get("APIC");
        assert_eq!(u32_at(madt, 36) as u64, APIC_START);
        assert_eq!(u32_at(madt, 40) & 1, 1, "PCAT_COMPAT: KVM's PIC is there");
        let entries = madt_entries(madt);
        let lapics: Vec<_> = entries.iter().filter(|(t, _)| *t == 0).collect();
        assert_eq!(lapics.len(), vcpus as usize);
        for (i, (_, e)) in lapics.iter().enumerate() {
            assert_eq!(e.len(), 8);
            assert_eq!(
                (e[2], e[3]),
                (i as u8, i as u8),
                "processor UID and APIC ID"
            );
            assert_eq!(u32_at(e, 4) & 1, 1, "enabled");
        }
        let ioapics: Vec<_> = entries.iter().filter(|(t, _)| *t == 1).collect();
        assert_eq!(ioapics.len(), 1);
        let io = ioapics[0].1;
        assert_eq!(u32_at(io, 4) as u64, IOAPIC_START);
        assert_eq!(u32_at(io, 8), 0, "GSI base");
        // KVM's default routing is identity for ISA IRQs: no overrides.
        assert!(entries.iter().all(|(t, _)| *t != 2));
    }
}

#[test]
fn too_many_devices_is_a_clean_error_and_writes_nothing() {
    let mem = create_guest_memory(16 << 20).unwrap();
    let config = AcpiConfig::new(1).with_virtio_devices(slots(20));
    match create_acpi_tables(&mem, &config) {
        Err(AcpiError::TooManyDevices { count: 20, max: 19 }) => {}
        other => panic!("expected TooManyDevices, got {other:?}"),
    }
    let mut area = vec![0xaau8; (ACPI_TABLES_END - RSDP_START) as usize];
    mem.read_slice(&mut area, GuestAddress(RSDP_START)).unwrap();
    assert!(area.iter().all(|b| *b == 0), "nothing written on error");

    let gsi_clash = AcpiConfig::new(1)
        .with_virtio_device(VirtioMmioDevice::in_slot(0))
        .with_virtio_device(VirtioMmioDevice::new(0xd000_1000, 0x1000, 5));
    assert!(matches!(
        create_acpi_tables(&mem, &gsi_clash),
        Err(AcpiError::BadGsi { index: 1, gsi: 5 })
    ));
    assert!(matches!(
        create_acpi_tables(&mem, &AcpiConfig::new(0)),
        Err(AcpiError::NoVcpus)
    ));
}

#[test]
fn guest_ram_must_cover_the_table_area() {
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0xe0000 + 0x200)]).unwrap();
    let err = create_acpi_tables(&mem, &AcpiConfig::new(1)).unwrap_err();
    assert!(matches!(err, AcpiError::GuestMemory(_)), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// iasl: an independent decoder.

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sbx-acpi-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Keep the files of a failed test for a look.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn iasl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = match Command::new("iasl").args(args).current_dir(dir).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "iasl not found: install acpica-tools (apt-get install -y acpica-tools) \
             to run the ACPI tests"
        ),
        Err(e) => panic!("cannot run iasl: {e}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Disassemble `table` with `iasl -d`, reject any complaint, recompile the listing with
/// optimizations off and warnings as errors, and require the same bytes back (except the
/// checksum and compiler fields of the header, which iasl rewrites). Returns the listing.
fn iasl_roundtrip(dir: &Path, name: &str, table: &[u8]) -> Result<String, String> {
    let dat = format!("{name}.dat");
    std::fs::write(dir.join(&dat), table).unwrap();
    let (ok, out) = iasl(dir, &["-d", &dat]);
    let lower = out.to_lowercase();
    if !ok || lower.contains("error") || lower.contains("warning") {
        return Err(format!("iasl -d {name}: success={ok}\n{out}"));
    }
    let dsl = std::fs::read_to_string(dir.join(format!("{name}.dsl")))
        .map_err(|e| format!("no listing for {name}: {e}\n{out}"))?;
    for bad in ["Incorrect", "Invalid", "Unknown", "****"] {
        if dsl.contains(bad) {
            return Err(format!("iasl listing of {name} says {bad:?}:\n{dsl}"));
        }
    }
    let prefix = format!("{name}-re");
    let listing = format!("{name}.dsl");
    let (ok, out) = iasl(dir, &["-oa", "-we", "-p", &prefix, &listing]);
    if !ok || !out.contains("0 Errors, 0 Warnings") {
        return Err(format!("iasl cannot recompile {name}: success={ok}\n{out}"));
    }
    let aml = std::fs::read(dir.join(format!("{prefix}.aml"))).unwrap();
    let same = aml.len() == table.len()
        && aml[..9] == table[..9]
        && aml[10..28] == table[10..28]
        && aml[36..] == table[36..];
    if !same {
        return Err(format!("{name} recompiles to different bytes"));
    }
    Ok(dsl)
}

/// The text from `Device (name)` to the next `Device (`, whitespace runs squeezed to one
/// space so that the checks do not depend on iasl's column alignment.
fn device_block(dsl: &str, name: &str) -> String {
    let start = dsl
        .find(&format!("Device ({name})"))
        .unwrap_or_else(|| panic!("no Device ({name}) in\n{dsl}"));
    let rest = &dsl[start + 1..];
    let end = rest.find("Device (").map_or(rest.len(), |e| e + 1);
    squeeze(&dsl[start..start + end])
}

fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `Name : value` lines of an iasl data-table listing, e.g. ("Hardware Reduced (V5)", "1").
fn fields(dsl: &str) -> Vec<(String, String)> {
    dsl.lines()
        .filter_map(|l| {
            // Drop the "[offset length]" prefix; values may end in "[decoded]".
            let l = match l.trim_start().strip_prefix('[') {
                Some(rest) => rest.split_once(']').map_or(rest, |(_, r)| r),
                None => l,
            };
            let (k, v) = l.split_once(" : ")?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no field {key:?}"))
}

#[test]
fn iasl_decodes_and_recompiles_every_table() {
    for (vcpus, devices, i8042) in [(1u8, 0u32, false), (2, 3, true), (8, 19, false)] {
        let config = AcpiConfig::new(vcpus)
            .with_virtio_devices(slots(devices))
            .with_i8042(i8042);
        let (_, tables) = build(&config);
        let scratch = Scratch::new(&format!("{vcpus}-{devices}"));
        let mut listings = BTreeMap::new();
        for (sig, (_, table)) in &tables.by_sig {
            let dsl = iasl_roundtrip(&scratch.0, &sig.to_lowercase(), table)
                .unwrap_or_else(|e| panic!("{e}"));
            listings.insert(sig.as_str(), dsl);
        }

        let dsdt = &listings["DSDT"];
        assert!(
            squeeze(dsdt).contains(
                "Name (_S5, Package (0x04) // _S5_: S5 System State { 0x05, Zero, Zero, Zero })"
            ),
            "{dsdt}"
        );
        assert_eq!(dsdt.matches("\"LNRO0005\"").count(), devices as usize);
        for (i, dev) in slots(devices).enumerate() {
            let block = device_block(dsdt, &format!("VR{i:02X}"));
            assert!(block.contains("Name (_HID, \"LNRO0005\")"), "{block}");
            let base = format!("0x{:08X}, // Address Base", dev.mmio_base);
            let len = format!("0x{:08X}, // Address Length", dev.mmio_len);
            assert!(block.contains("Memory32Fixed (ReadWrite,"), "{block}");
            assert!(block.contains(&base) && block.contains(&len), "{block}");
            assert!(
                block.contains("Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )"),
                "{block}"
            );
            let irq = format!("Exclusive, ,, ) {{ 0x{:08X}, }}", dev.gsi);
            assert!(block.contains(&irq), "{block}");
        }
        let com1 = device_block(dsdt, "COM1");
        assert!(com1.contains("EisaId (\"PNP0501\")") && com1.contains("0x03F8,"));
        assert!(com1.contains("Exclusive, ,, ) { 0x00000004, }"), "{com1}");
        assert_eq!(dsdt.contains("EisaId (\"PNP0303\")"), i8042, "{dsdt}");

        let fadt = fields(&listings["FACP"]);
        assert_eq!(field(&fadt, "Hardware Reduced (V5)"), "1");
        assert_eq!(field(&fadt, "Reset Register Supported (V2)"), "1");
        assert_eq!(field(&fadt, "Control Method Power Button (V1)"), "1");
        assert_eq!(field(&fadt, "Value to cause reset"), "01");
        assert_eq!(field(&fadt, "VGA Not Present (V4)"), "1");
        assert_eq!(field(&fadt, "CMOS RTC Not Present (V5)"), "1");
        let kbd = if i8042 { "1" } else { "0" };
        assert_eq!(field(&fadt, "8042 Present on ports 60/64 (V2)"), kbd);
        let addresses: Vec<_> = fadt
            .iter()
            .filter(|(k, v)| k == "Address" && v != "0000000000000000")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(
            addresses,
            ["0000000000000602", "0000000000000600", "0000000000000601"],
            "reset, sleep control, sleep status"
        );
        let dsdt_addr = tables.by_sig["DSDT"].0;
        let dsdt_ptrs: Vec<_> = fadt
            .iter()
            .filter(|(k, _)| k == "DSDT Address")
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(
            dsdt_ptrs,
            ["00000000".to_string(), format!("{dsdt_addr:016X}")],
            "DSDT (32-bit, unused) and X_DSDT"
        );

        let madt = &listings["APIC"];
        assert_eq!(
            madt.matches("[Processor Local APIC]").count(),
            vcpus as usize
        );
        assert_eq!(madt.matches("[I/O APIC]").count(), 1);
        let madt_fields = fields(madt);
        assert_eq!(field(&madt_fields, "PC-AT Compatibility"), "1");
        assert_eq!(field(&madt_fields, "Address"), "FEC00000");

        let xsdt = fields(&listings["XSDT"]);
        let pointers: Vec<_> = xsdt
            .iter()
            .filter(|(k, _)| k.starts_with("ACPI Table Address"))
            .map(|(_, v)| v.clone())
            .collect();
        let expect: Vec<_> = ["FACP", "APIC"]
            .iter()
            .map(|s| format!("{:016X}", tables.by_sig[*s].0))
            .collect();
        assert_eq!(pointers, expect);
    }
}

/// The iasl check above must be able to fail: feed it broken tables.
#[test]
fn iasl_check_rejects_broken_tables() {
    let (_, tables) = build(&AcpiConfig::new(1).with_virtio_devices(slots(2)));
    let scratch = Scratch::new("broken");
    let good = tables.get("DSDT").to_vec();
    iasl_roundtrip(&scratch.0, "good", &good).unwrap();

    let mut bad_sum = good.clone();
    bad_sum[9] ^= 0x55;
    let err = iasl_roundtrip(&scratch.0, "badsum", &bad_sum).unwrap_err();
    assert!(
        err.contains("Incorrect") || err.contains("checksum"),
        "{err}"
    );

    // A corrupt AML name (checksum fixed up): iasl repairs it and warns.
    let at = good.windows(4).position(|w| w == b"VR01").unwrap();
    let mut bad_name = good;
    bad_name[at] = 0xff;
    bad_name[9] = 0;
    bad_name[9] = 0u8.wrapping_sub(sum(&bad_name));
    assert_eq!(sum(&bad_name), 0);
    assert!(iasl_roundtrip(&scratch.0, "badname", &bad_name).is_err());

    // A MADT whose last subtable is cut short (length and checksum fixed up).
    let madt = tables.get("APIC");
    let mut truncated = madt[..madt.len() - 3].to_vec();
    truncated[4] -= 3;
    truncated[9] = 0;
    truncated[9] = 0u8.wrapping_sub(sum(&truncated));
    assert!(iasl_roundtrip(&scratch.0, "truncated", &truncated).is_err());
}
