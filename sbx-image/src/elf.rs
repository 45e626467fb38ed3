//! Just enough ELF64 (little-endian) reading: the program interpreter of an executable and
//! a named section of a kernel module.

use crate::error::{Error, Result};

const PT_INTERP: u32 = 3;

struct Elf<'a> {
    what: &'a str,
    b: &'a [u8],
}

impl<'a> Elf<'a> {
    fn parse(what: &'a str, b: &'a [u8]) -> Result<Self> {
        if b.len() < 64 || &b[..4] != b"\x7fELF" {
            return Err(Error::format(what, "not an ELF file"));
        }
        if b[4] != 2 || b[5] != 1 {
            return Err(Error::format(what, "not a 64-bit little-endian ELF file"));
        }
        Ok(Elf { what, b })
    }

    fn bad(&self, reason: &str) -> Error {
        Error::format(self.what, reason)
    }

    fn u16(&self, off: usize) -> Result<u16> {
        let s = self
            .b
            .get(off..off + 2)
            .ok_or_else(|| self.bad("truncated"))?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }

    fn u32(&self, off: usize) -> Result<u32> {
        let s = self
            .b
            .get(off..off + 4)
            .ok_or_else(|| self.bad("truncated"))?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u64(&self, off: usize) -> Result<usize> {
        let s = self
            .b
            .get(off..off + 8)
            .ok_or_else(|| self.bad("truncated"))?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        usize::try_from(u64::from_le_bytes(a)).map_err(|_| self.bad("offset too large"))
    }

    fn slice(&self, off: usize, len: usize) -> Result<&'a [u8]> {
        off.checked_add(len)
            .and_then(|end| self.b.get(off..end))
            .ok_or_else(|| self.bad("truncated"))
    }

    fn interpreter(&self) -> Result<Option<String>> {
        let phoff = self.u64(0x20)?;
        let phentsize = usize::from(self.u16(0x36)?);
        for i in 0..usize::from(self.u16(0x38)?) {
            let ph = phoff + i * phentsize;
            if self.u32(ph)? == PT_INTERP {
                let data = self.slice(self.u64(ph + 8)?, self.u64(ph + 0x20)?)?;
                let path = data.split(|&c| c == 0).next().unwrap_or_default();
                let path =
                    std::str::from_utf8(path).map_err(|_| self.bad("non-UTF-8 PT_INTERP"))?;
                return Ok(Some(path.to_owned()));
            }
        }
        Ok(None)
    }

    fn section(&self, wanted: &str) -> Result<Option<&'a [u8]>> {
        let shoff = self.u64(0x28)?;
        let shentsize = usize::from(self.u16(0x3a)?);
        let shnum = usize::from(self.u16(0x3c)?);
        let shstrndx = usize::from(self.u16(0x3e)?);
        if shoff == 0 || shstrndx >= shnum {
            return Ok(None);
        }
        let sh = |i: usize| shoff + i * shentsize;
        let strtab = self.slice(
            self.u64(sh(shstrndx) + 0x18)?,
            self.u64(sh(shstrndx) + 0x20)?,
        )?;
        for i in 0..shnum {
            let name_off = self.u32(sh(i))? as usize;
            let name = strtab
                .get(name_off..)
                .and_then(|s| s.split(|&c| c == 0).next())
                .unwrap_or_default();
            if name == wanted.as_bytes() {
                return Ok(Some(
                    self.slice(self.u64(sh(i) + 0x18)?, self.u64(sh(i) + 0x20)?)?,
                ));
            }
        }
        Ok(None)
    }
}

/// The `PT_INTERP` path of a dynamically linked executable, `None` for a static one.
pub(crate) fn interpreter(what: &str, bytes: &[u8]) -> Result<Option<String>> {
    Elf::parse(what, bytes)?.interpreter()
}

/// The `key=value` strings of a kernel module's `.modinfo` section.
pub(crate) fn modinfo(what: &str, bytes: &[u8]) -> Result<Vec<(String, String)>> {
    let elf = Elf::parse(what, bytes)?;
    let Some(section) = elf.section(".modinfo")? else {
        return Err(Error::format(what, "no .modinfo section"));
    };
    Ok(section
        .split(|&c| c == 0)
        .filter_map(|kv| {
            let kv = std::str::from_utf8(kv).ok()?;
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreter_of_a_host_binary() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let interp = interpreter("test exe", &exe).unwrap();
        // Rust test binaries on glibc hosts are dynamically linked.
        let interp = interp.expect("a dynamically linked test binary");
        assert!(
            interp.starts_with('/') && interp.contains("ld-"),
            "{interp}"
        );
    }

    #[test]
    fn rejects_non_elf() {
        assert!(interpreter("x", b"#!/bin/sh\n").is_err());
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 1;
        assert!(interpreter("x", &b).is_err());
        // A 64-bit header pointing past the end.
        b[4] = 2;
        b[5] = 1;
        b[0x20] = 0xff;
        b[0x38] = 1;
        assert!(interpreter("x", &b).is_err());
    }
}
