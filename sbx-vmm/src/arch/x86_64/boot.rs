//! Loading a kernel (bzImage, ELF vmlinux, PVH ELF) and writing the boot information the
//! kernel reads: the zero page or `hvm_start_info`, the memory map, command line and initrd.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use super::layout::{
    CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START, HIMEM_START, PVH_INFO_START, PVH_MEMMAP_START,
    RSDP_START, ZERO_PAGE_START,
};
use super::regs::EntryMode;
use crate::memory::{ram_ranges, GuestMemory};

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;
/// Offset of the 64-bit entry point in a loaded bzImage's protected-mode code.
const BZIMAGE_ENTRY_64: u64 = 0x200;
const PAGE_SIZE: u64 = 4096;

/// Errors loading a kernel or writing boot information.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// The kernel file cannot be opened or read.
    #[error("cannot read kernel {}", path.display())]
    KernelRead {
        /// The kernel path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is neither an ELF nor a bzImage.
    #[error("{} is not a Linux kernel (expected an ELF vmlinux, a PVH ELF or a bzImage)", path.display())]
    NotAKernel {
        /// The offending path.
        path: PathBuf,
    },
    /// linux-loader rejected the image.
    #[error("cannot load kernel {}", path.display())]
    Load {
        /// The kernel path.
        path: PathBuf,
        /// The loader's error.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// The initrd cannot be read.
    #[error("cannot read initrd {}", path.display())]
    InitrdRead {
        /// The initrd path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The initrd does not fit between the kernel and the end of low memory.
    #[error("initrd of {size} bytes does not fit in guest memory; give the VM more memory")]
    InitrdTooLarge {
        /// Size of the initrd.
        size: u64,
    },
    /// The command line is too long or contains a NUL byte.
    #[error(
        "kernel command line is invalid (longer than {CMDLINE_MAX_SIZE} bytes or contains NUL)"
    )]
    Cmdline,
    /// The kernel does not fit in guest memory.
    #[error("kernel does not fit in guest memory; give the VM more memory")]
    KernelTooLarge,
    /// Writing boot information into guest memory failed.
    #[error("cannot write the {0} into guest memory")]
    Write(&'static str),
}

/// Where and how the boot vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryPoint {
    /// Entry address.
    pub addr: u64,
    /// Register state convention.
    pub mode: EntryMode,
    /// Value of `rsi` (zero page) or `rbx` (`hvm_start_info`) at entry.
    pub boot_info: u64,
}

/// What kind of image the kernel file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelKind {
    /// ELF with a PVH note.
    PvhElf,
    /// ELF without a PVH note: entered in 64-bit mode.
    Elf64,
    /// A bzImage (Linux boot protocol).
    BzImage,
}

/// Sniff the kernel image format from its first bytes.
pub fn kernel_kind(path: &Path) -> Result<(File, bool), BootError> {
    let read_err = |source| BootError::KernelRead {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut head = [0u8; 0x206];
    let n = read_up_to(&mut file, &mut head).map_err(read_err)?;
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    if n >= 4 && head[..4] == *b"\x7fELF" {
        return Ok((file, true));
    }
    if n >= 0x206 && head[0x202..0x206] == *b"HdrS" {
        return Ok((file, false));
    }
    Err(BootError::NotAKernel {
        path: path.to_owned(),
    })
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            r => n += r,
        }
    }
    Ok(n)
}

/// Load the kernel, initrd and command line into `mem` and write the boot information.
pub fn load_kernel(
    mem: &GuestMemory,
    mem_size: u64,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
) -> Result<(KernelKind, EntryPoint), BootError> {
    let (mut file, is_elf) = kernel_kind(kernel)?;
    let file_len = file
        .metadata()
        .map_err(|source| BootError::KernelRead {
            path: kernel.to_owned(),
            source,
        })?
        .len();
    if file_len > mem_size.saturating_sub(HIMEM_START) {
        return Err(BootError::KernelTooLarge);
    }
    let load_err = |source| BootError::Load {
        path: kernel.to_owned(),
        source,
    };
    let result = if is_elf {
        Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(load_err)?
    } else {
        BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(load_err)?
    };

    let cmdline_bytes = cmdline.as_bytes();
    if cmdline_bytes.len() >= CMDLINE_MAX_SIZE || cmdline_bytes.contains(&0) {
        return Err(BootError::Cmdline);
    }
    let mut c = cmdline_bytes.to_vec();
    c.push(0);
    mem.write_slice(&c, GuestAddress(CMDLINE_START))
        .map_err(|_| BootError::Write("command line"))?;

    let initrd = match initrd {
        Some(path) => Some(load_initrd(mem, path, result.kernel_end)?),
        None => None,
    };

    match (is_elf, result.pvh_boot_cap) {
        (true, PvhBootCapability::PvhEntryPresent(entry)) => {
            write_pvh_info(mem, mem_size, cmdline_bytes.len(), initrd)?;
            Ok((
                KernelKind::PvhElf,
                EntryPoint {
                    addr: entry.raw_value(),
                    mode: EntryMode::Pvh,
                    boot_info: PVH_INFO_START,
                },
            ))
        }
        (true, _) => {
            write_zero_page(mem, mem_size, None, cmdline_bytes.len(), initrd)?;
            Ok((
                KernelKind::Elf64,
                EntryPoint {
                    addr: result.kernel_load.raw_value(),
                    mode: EntryMode::Long64,
                    boot_info: ZERO_PAGE_START,
                },
            ))
        }
        (false, _) => {
            write_zero_page(
                mem,
                mem_size,
                result.setup_header,
                cmdline_bytes.len(),
                initrd,
            )?;
            Ok((
                KernelKind::BzImage,
                EntryPoint {
                    addr: result.kernel_load.raw_value() + BZIMAGE_ENTRY_64,
                    mode: EntryMode::Long64,
                    boot_info: ZERO_PAGE_START,
                },
            ))
        }
    }
}

/// Place the initrd at the top of the first RAM region, page aligned, above the kernel.
fn load_initrd(mem: &GuestMemory, path: &Path, kernel_end: u64) -> Result<(u64, u64), BootError> {
    let read_err = |source| BootError::InitrdRead {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let low_end = mem
        .iter()
        .next()
        .map(|r| vm_memory::GuestMemoryRegion::last_addr(r).raw_value() + 1)
        .unwrap_or(0);
    let addr = low_end
        .checked_sub(size)
        .map(|a| a & !(PAGE_SIZE - 1))
        .filter(|a| *a >= kernel_end.max(HIMEM_START))
        .ok_or(BootError::InitrdTooLarge { size })?;
    let mut buf = Vec::with_capacity(size as usize);
    file.read_to_end(&mut buf).map_err(read_err)?;
    mem.write_slice(&buf, GuestAddress(addr))
        .map_err(|_| BootError::Write("initrd"))?;
    Ok((addr, buf.len() as u64))
}

/// The guest's memory map: RAM below the EBDA, the legacy area reserved (it holds the ACPI
/// tables), RAM from 1 MiB, and RAM above the MMIO hole.
pub fn memory_map(mem_size: u64) -> Vec<(u64, u64, u32)> {
    let mut map = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    for (start, len) in ram_ranges(mem_size) {
        let start = start.raw_value();
        if start == 0 {
            if len > HIMEM_START {
                map.push((HIMEM_START, len - HIMEM_START, E820_RAM));
            }
        } else {
            map.push((start, len, E820_RAM));
        }
    }
    map
}

fn write_pvh_info(
    mem: &GuestMemory,
    mem_size: u64,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
) -> Result<(), BootError> {
    let map = memory_map(mem_size);
    for (i, (addr, size, type_)) in map.iter().enumerate() {
        let entry = hvm_memmap_table_entry {
            addr: *addr,
            size: *size,
            type_: *type_,
            reserved: 0,
        };
        let at = PVH_MEMMAP_START + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        mem.write_obj(entry, GuestAddress(at))
            .map_err(|_| BootError::Write("PVH memory map"))?;
    }
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: if cmdline_len > 0 { CMDLINE_START } else { 0 },
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: map.len() as u32,
        rsdp_paddr: RSDP_START,
        ..Default::default()
    };
    if let Some((addr, size)) = initrd {
        let modlist = PVH_INFO_START + 0x100;
        let module = hvm_modlist_entry {
            paddr: addr,
            size,
            ..Default::default()
        };
        mem.write_obj(module, GuestAddress(modlist))
            .map_err(|_| BootError::Write("PVH module list"))?;
        info.nr_modules = 1;
        info.modlist_paddr = modlist;
    }
    mem.write_obj(info, GuestAddress(PVH_INFO_START))
        .map_err(|_| BootError::Write("hvm_start_info"))
}

fn write_zero_page(
    mem: &GuestMemory,
    mem_size: u64,
    header: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
) -> Result<(), BootError> {
    let mut params = boot_params::default();
    if let Some(hdr) = header {
        params.hdr = hdr;
    } else {
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    }
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32 + 1;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    params.acpi_rsdp_addr = RSDP_START;
    let map = memory_map(mem_size);
    for (i, (addr, size, type_)) in map.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *type_,
        };
    }
    params.e820_entries = map.len() as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(|_| BootError::Write("zero page"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_map_small_and_large() {
        let m = memory_map(64 << 20);
        assert_eq!(m.len(), 3);
        assert_eq!(m[2], (HIMEM_START, (64 << 20) - HIMEM_START, E820_RAM));
        let big = memory_map(super::super::layout::MMIO_GAP_START + (1 << 30));
        assert_eq!(big.len(), 4);
        assert_eq!(big[3].0, super::super::layout::MMIO_GAP_END);
    }

    #[test]
    fn non_kernels_are_rejected() {
        let dir = std::env::temp_dir().join(format!("sbx-boot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("not-a-kernel");
        std::fs::write(&p, b"hello world, definitely not a kernel").unwrap();
        assert!(matches!(kernel_kind(&p), Err(BootError::NotAKernel { .. })));
        let missing = dir.join("missing");
        assert!(matches!(
            kernel_kind(&missing),
            Err(BootError::KernelRead { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
