//! The `newc` cpio format the kernel unpacks as an initramfs: a writer, and a reader to
//! check what was written.
//!
//! Each entry is a 110-byte ASCII header (`070701` and 13 eight-digit hex fields), the NUL
//! terminated name padded to four bytes, then the data padded to four bytes. The archive ends
//! with an entry named `TRAILER!!!`.

use std::io::{self, Write};

use crate::error::{Error, Result};

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

/// File type bits of `mode`.
const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Writes a `newc` archive. Owners are root, times are zero, so the same input always gives
/// the same bytes.
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        CpioWriter { out, next_ino: 1 }
    }

    /// A directory (`name` without a leading `/`, e.g. `lib/modules`).
    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.entry(name, S_IFDIR | (perm & 0o7777), &[], (0, 0))
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, S_IFREG | (perm & 0o7777), data, (0, 0))
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(name, S_IFLNK | 0o777, target.as_bytes(), (0, 0))
    }

    /// A character device node.
    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, S_IFCHR | (perm & 0o7777), &[], (major, minor))
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.raw(TRAILER, 0, 0, &[], (0, 0))?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) -> io::Result<()> {
        let name = name.trim_start_matches('/');
        if name.is_empty() || name == TRAILER || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad cpio entry name {name:?}"),
            ));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.raw(name, ino, mode, data, rdev)
    }

    fn raw(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        data: &[u8],
        rdev: (u32, u32),
    ) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cpio entry over 4 GiB"))?;
        let nlink = if mode & S_IFMT == S_IFDIR { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        let mut header = Vec::with_capacity(HEADER_LEN + name.len() + 4);
        header.extend_from_slice(MAGIC);
        for f in fields {
            header.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        header.extend_from_slice(name.as_bytes());
        header.push(0);
        header.resize(pad4(header.len()), 0);
        self.out.write_all(&header)?;
        self.out.write_all(data)?;
        let pad = pad4(data.len()) - data.len();
        self.out.write_all(&[0u8; 3][..pad])?;
        Ok(())
    }
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// One entry read back from a `newc` archive.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CpioEntry {
    /// The path inside the archive, without a leading `/`.
    pub name: String,
    /// Type and permission bits.
    pub mode: u32,
    /// File contents, or a symlink's target.
    pub data: Vec<u8>,
    /// Device numbers of a device node.
    pub rdev: (u32, u32),
}

impl CpioEntry {
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }

    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }

    /// The target, if this is a symbolic link.
    pub fn link_target(&self) -> Option<&str> {
        (self.mode & S_IFMT == S_IFLNK)
            .then(|| std::str::from_utf8(&self.data).ok())
            .flatten()
    }

    /// Whether this is a character device.
    pub fn is_char_device(&self) -> bool {
        self.mode & S_IFMT == S_IFCHR
    }
}

/// Parses a whole uncompressed `newc` archive (up to its trailer).
pub fn read_newc(bytes: &[u8]) -> Result<Vec<CpioEntry>> {
    let bad = |reason: String| Error::format("cpio archive", reason);
    let mut entries = Vec::new();
    let mut pos = 0usize;
    loop {
        let header = bytes
            .get(pos..pos + HEADER_LEN)
            .ok_or_else(|| bad(format!("truncated header at offset {pos}")))?;
        if &header[..6] != MAGIC {
            return Err(bad(format!("bad magic at offset {pos}")));
        }
        let field = |i: usize| -> Result<u32> {
            let s = std::str::from_utf8(&header[6 + i * 8..14 + i * 8])
                .map_err(|_| bad(format!("non-ASCII header at offset {pos}")))?;
            u32::from_str_radix(s, 16).map_err(|_| bad(format!("bad hex field at offset {pos}")))
        };
        let mode = field(1)?;
        let size = field(6)? as usize;
        let rdev = (field(9)?, field(10)?);
        let namesize = field(11)? as usize;
        if namesize == 0 {
            return Err(bad(format!("empty name at offset {pos}")));
        }
        let name_start = pos + HEADER_LEN;
        let name_bytes = bytes
            .get(name_start..name_start + namesize - 1)
            .ok_or_else(|| bad(format!("truncated name at offset {pos}")))?;
        let name = String::from_utf8(name_bytes.to_vec())
            .map_err(|_| bad(format!("non-UTF-8 name at offset {pos}")))?;
        let data_start = pos + pad4(HEADER_LEN + namesize);
        let data = bytes
            .get(data_start..data_start + size)
            .ok_or_else(|| bad(format!("truncated data of {name}")))?;
        pos = data_start + pad4(size);
        if name == TRAILER {
            return Ok(entries);
        }
        entries.push(CpioEntry {
            name,
            mode,
            data: data.to_vec(),
            rdev,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("bin", 0o755).unwrap();
        w.file("/bin/busybox", 0o755, b"\x7fELF12345").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        w.char_device("dev/console", 0o600, 5, 1).unwrap();
        w.file("empty", 0o644, b"").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(&bytes[..6], b"070701");
        let e = read_newc(&bytes).unwrap();
        assert_eq!(e.len(), 5);
        assert!(e[0].is_dir());
        assert_eq!(e[1].name, "bin/busybox");
        assert!(e[1].is_file());
        assert_eq!(e[1].mode & 0o7777, 0o755);
        assert_eq!(e[1].data, b"\x7fELF12345");
        assert_eq!(e[2].link_target(), Some("busybox"));
        assert!(e[3].is_char_device());
        assert_eq!(e[3].rdev, (5, 1));
        assert!(e[4].data.is_empty());
    }

    #[test]
    fn header_layout_matches_the_kernel_format() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("a", 0o644, b"xy").unwrap();
        let bytes = w.finish().unwrap();
        // 110-byte header + "a\0" = 112 (aligned), then "xy" padded to 4.
        let h = std::str::from_utf8(&bytes[..110]).unwrap();
        assert_eq!(&h[6..14], "00000001"); // ino
        assert_eq!(&h[14..22], "000081a4"); // mode 0100644
        assert_eq!(&h[54..62], "00000002"); // filesize
        assert_eq!(&h[94..102], "00000002"); // namesize incl. NUL
        assert_eq!(&bytes[110..112], b"a\0");
        assert_eq!(&bytes[112..116], b"xy\0\0");
        assert_eq!(&bytes[116..122], b"070701");
    }

    #[test]
    fn truncated_and_garbage_are_errors() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("a", 0o644, b"hello").unwrap();
        let bytes = w.finish().unwrap();
        assert!(read_newc(&bytes[..bytes.len() - 130]).is_err());
        assert!(read_newc(b"not a cpio archive at all, clearly not one, no no no no no no no no no no no no no no no no no no no").is_err());
        assert!(read_newc(&[]).is_err());
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("TRAILER!!!", 0o644, b"").is_err());
        assert!(w.file("", 0o644, b"").is_err());
    }
}
