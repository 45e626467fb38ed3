//! Just enough ELF64 parsing to check what the VMM's loader will see: the entry point, the
//! loadable segments and the PVH entry note (`XEN_ELFNOTE_PHYS32_ENTRY`).

use crate::{Error, Result};

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const NOTE_HEADER_SIZE: usize = 12;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// `e_machine` of x86-64.
pub const EM_X86_64: u16 = 62;
/// `e_type` of a static executable.
pub const ET_EXEC: u16 = 2;

/// A `PT_LOAD` program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    /// Offset of the segment's bytes in the file.
    pub offset: u64,
    /// Guest physical load address (`p_paddr`, what linux-loader uses).
    pub paddr: u64,
    /// Bytes present in the file.
    pub filesz: u64,
    /// Bytes occupied in memory (the rest is zero-filled `.bss`).
    pub memsz: u64,
}

/// What [`inspect`] found in an ELF64 little-endian image.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ElfInfo {
    /// `e_type`.
    pub elf_type: u16,
    /// `e_machine`.
    pub machine: u16,
    /// `e_entry`: where a VMM enters a note-less image (in 64-bit mode for sbx-vmm).
    pub entry: u64,
    /// The `PT_LOAD` segments in file order.
    pub load_segments: Vec<LoadSegment>,
    /// Number of `PT_NOTE` segments (linux-loader only honours the last one).
    pub note_segments: usize,
    /// The 32-bit PVH entry from a `Xen` note of type `XEN_ELFNOTE_PHYS32_ENTRY`, if any.
    pub pvh_entry: Option<u32>,
}

impl ElfInfo {
    /// The segment whose file-backed bytes contain guest physical address `addr`.
    pub fn segment_containing(&self, addr: u64) -> Option<&LoadSegment> {
        self.load_segments
            .iter()
            .find(|s| addr >= s.paddr && addr - s.paddr < s.filesz)
    }
}

/// Parses the ELF header, program headers and notes of `image`.
pub fn inspect(image: &[u8]) -> Result<ElfInfo> {
    if image.len() < EHDR_SIZE || image[..4] != ELF_MAGIC {
        return Err(Error::NotElf);
    }
    if image[4] != ELFCLASS64 {
        return Err(Error::UnsupportedClass(image[4]));
    }
    if image[5] != ELFDATA2LSB {
        return Err(Error::NotLittleEndian);
    }
    let elf_type = read_u16(image, 16)?;
    let machine = read_u16(image, 18)?;
    let entry = read_u64(image, 24)?;
    let phoff = to_usize(read_u64(image, 32)?)?;
    let phentsize = usize::from(read_u16(image, 54)?);
    let phnum = usize::from(read_u16(image, 56)?);
    if phentsize != PHDR_SIZE {
        return Err(Error::Malformed("program header size"));
    }

    let mut info = ElfInfo {
        elf_type,
        machine,
        entry,
        load_segments: Vec::new(),
        note_segments: 0,
        pvh_entry: None,
    };
    for i in 0..phnum {
        let ph = phoff
            .checked_add(i * PHDR_SIZE)
            .ok_or(Error::Malformed("program header offset"))?;
        let p_type = read_u32(image, ph)?;
        let offset = read_u64(image, ph + 8)?;
        let paddr = read_u64(image, ph + 24)?;
        let filesz = read_u64(image, ph + 32)?;
        let memsz = read_u64(image, ph + 40)?;
        match p_type {
            PT_LOAD => info.load_segments.push(LoadSegment {
                offset,
                paddr,
                filesz,
                memsz,
            }),
            PT_NOTE => {
                info.note_segments += 1;
                let start = to_usize(offset)?;
                let end = start
                    .checked_add(to_usize(filesz)?)
                    .filter(|&end| end <= image.len())
                    .ok_or(Error::Malformed("note segment outside the file"))?;
                // Like linux-loader, the last note segment decides.
                info.pvh_entry = find_pvh_note(&image[start..end])?;
            }
            _ => {}
        }
    }
    Ok(info)
}

/// Walks the notes of one `PT_NOTE` segment (4-byte aligned name and descriptor).
fn find_pvh_note(notes: &[u8]) -> Result<Option<u32>> {
    let mut pos = 0;
    while pos + NOTE_HEADER_SIZE <= notes.len() {
        let namesz = to_usize(u64::from(read_u32(notes, pos)?))?;
        let descsz = to_usize(u64::from(read_u32(notes, pos + 4)?))?;
        let note_type = read_u32(notes, pos + 8)?;
        let name_start = pos + NOTE_HEADER_SIZE;
        let desc_start = name_start
            .checked_add(align4(namesz)?)
            .ok_or(Error::Malformed("note name size"))?;
        let next = desc_start
            .checked_add(align4(descsz)?)
            .ok_or(Error::Malformed("note descriptor size"))?;
        if next > notes.len() {
            return Err(Error::Malformed("note runs past its segment"));
        }
        if note_type == XEN_ELFNOTE_PHYS32_ENTRY
            && &notes[name_start..name_start + namesz] == b"Xen\0"
        {
            if descsz < 4 {
                return Err(Error::Malformed("PVH note descriptor shorter than 4 bytes"));
            }
            return Ok(Some(read_u32(notes, desc_start)?));
        }
        pos = next;
    }
    Ok(None)
}

fn align4(n: usize) -> Result<usize> {
    n.checked_add(3)
        .map(|n| n & !3)
        .ok_or(Error::Malformed("note size"))
}

fn to_usize(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::Malformed("offset does not fit in usize"))
}

fn bytes<const N: usize>(data: &[u8], at: usize) -> Result<[u8; N]> {
    at.checked_add(N)
        .and_then(|end| data.get(at..end))
        .and_then(|s| s.try_into().ok())
        .ok_or(Error::Malformed("truncated"))
}

fn read_u16(data: &[u8], at: usize) -> Result<u16> {
    bytes(data, at).map(u16::from_le_bytes)
}

fn read_u32(data: &[u8], at: usize) -> Result<u32> {
    bytes(data, at).map(u32::from_le_bytes)
}

fn read_u64(data: &[u8], at: usize) -> Result<u64> {
    bytes(data, at).map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made ELF64 with one PT_LOAD and one PT_NOTE holding `notes`.
    fn synthetic(notes: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; EHDR_SIZE + 2 * PHDR_SIZE];
        img[..4].copy_from_slice(&ELF_MAGIC);
        img[4] = ELFCLASS64;
        img[5] = ELFDATA2LSB;
        img[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        img[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        img[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes());
        img[32..40].copy_from_slice(&(EHDR_SIZE as u64).to_le_bytes());
        img[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        img[56..58].copy_from_slice(&2u16.to_le_bytes());
        let note_off = img.len() as u64;
        let load = EHDR_SIZE;
        img[load..load + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        img[load + 24..load + 32].copy_from_slice(&0x10_0000u64.to_le_bytes());
        img[load + 32..load + 40].copy_from_slice(&16u64.to_le_bytes());
        img[load + 40..load + 48].copy_from_slice(&16u64.to_le_bytes());
        let note = EHDR_SIZE + PHDR_SIZE;
        img[note..note + 4].copy_from_slice(&PT_NOTE.to_le_bytes());
        img[note + 8..note + 16].copy_from_slice(&note_off.to_le_bytes());
        img[note + 32..note + 40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        img.extend_from_slice(notes);
        img
    }

    fn note(name: &[u8], note_type: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&note_type.to_le_bytes());
        n.extend_from_slice(name);
        n.resize(n.len().next_multiple_of(4), 0);
        n.extend_from_slice(desc);
        n.resize(n.len().next_multiple_of(4), 0);
        n
    }

    #[test]
    fn finds_pvh_note_after_other_notes() {
        let mut notes = note(b"GNU\0", 3, &[1, 2, 3, 4, 5]);
        notes.extend(note(
            b"Xen\0",
            XEN_ELFNOTE_PHYS32_ENTRY,
            &0x10_0040u32.to_le_bytes(),
        ));
        let info = inspect(&synthetic(&notes)).unwrap();
        assert_eq!(info.pvh_entry, Some(0x10_0040));
        assert_eq!(info.note_segments, 1);
        assert_eq!(info.entry, 0x10_0000);
        assert_eq!(info.load_segments.len(), 1);
    }

    #[test]
    fn ignores_notes_with_other_name_or_type() {
        let mut notes = note(b"Xen\0", 17, &0x10_0040u32.to_le_bytes());
        notes.extend(note(
            b"Xem\0",
            XEN_ELFNOTE_PHYS32_ENTRY,
            &0x10_0040u32.to_le_bytes(),
        ));
        assert_eq!(inspect(&synthetic(&notes)).unwrap().pvh_entry, None);
    }

    #[test]
    fn rejects_short_descriptor_and_overrun() {
        let short = note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &[1, 2]);
        assert!(matches!(
            inspect(&synthetic(&short)),
            Err(Error::Malformed(_))
        ));
        let mut overrun = note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &[0; 4]);
        overrun[4..8].copy_from_slice(&64u32.to_le_bytes());
        assert!(matches!(
            inspect(&synthetic(&overrun)),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn rejects_non_elf64() {
        let mut img = synthetic(&[]);
        img[4] = 1;
        assert!(matches!(inspect(&img), Err(Error::UnsupportedClass(1))));
        assert!(matches!(inspect(b"\x7fELF"), Err(Error::NotElf)));
        let mut truncated = synthetic(&[]);
        truncated.truncate(EHDR_SIZE + 10);
        assert!(matches!(inspect(&truncated), Err(Error::Malformed(_))));
    }
}
