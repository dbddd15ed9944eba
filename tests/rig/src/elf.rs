//! Just enough ELF64 (little-endian) reading for the rig: a section's bytes
//! (a kernel module's `.modinfo`) and whether an executable asks for a
//! dynamic loader (`PT_INTERP`), which a binary copied into L1 must not.

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const PT_INTERP: u32 = 3;
/// `e_machine` of x86_64.
pub const EM_X86_64: u16 = 62;
/// `e_machine` of an aarch64 ELF.
pub const EM_AARCH64: u16 = 183;

/// Errors from reading an ELF image.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("not a 64-bit little-endian ELF file")]
    NotElf64,
    #[error("ELF {what} table at {offset:#x} (+{len:#x}) lies outside the {file_len}-byte file")]
    OutOfBounds {
        what: &'static str,
        offset: u64,
        len: u64,
        file_len: usize,
    },
}

/// A borrowed ELF64 image.
pub struct Elf<'a> {
    bytes: &'a [u8],
}

impl<'a> Elf<'a> {
    /// Checks the identification bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ElfError> {
        if bytes.len() < 64
            || &bytes[..4] != ELF_MAGIC
            || bytes[4] != ELFCLASS64
            || bytes[5] != ELFDATA2LSB
        {
            return Err(ElfError::NotElf64);
        }
        Ok(Elf { bytes })
    }

    /// `e_machine`.
    pub fn machine(&self) -> u16 {
        self.u16_at(0x12)
    }

    /// Whether a program header of type `PT_INTERP` exists (a dynamic executable).
    pub fn has_interpreter(&self) -> Result<bool, ElfError> {
        let phoff = self.u64_at(0x20);
        let phentsize = u64::from(self.u16_at(0x36));
        let phnum = u64::from(self.u16_at(0x38));
        self.check("program header", phoff, phentsize * phnum)?;
        Ok((0..phnum).any(|i| self.u32_at((phoff + i * phentsize) as usize) == PT_INTERP))
    }

    /// The contents of the section called `name`, if there is one.
    pub fn section(&self, name: &str) -> Result<Option<&'a [u8]>, ElfError> {
        let shoff = self.u64_at(0x28);
        let shentsize = u64::from(self.u16_at(0x3a));
        let shnum = u64::from(self.u16_at(0x3c));
        let shstrndx = u64::from(self.u16_at(0x3e));
        self.check("section header", shoff, shentsize * shnum)?;
        if shnum == 0 || shstrndx >= shnum {
            return Ok(None);
        }
        let header = |i: u64| (shoff + i * shentsize) as usize;
        let (names_off, names_len) = (
            self.u64_at(header(shstrndx) + 24),
            self.u64_at(header(shstrndx) + 32),
        );
        self.check("section name", names_off, names_len)?;
        let names = &self.bytes[names_off as usize..(names_off + names_len) as usize];
        for i in 0..shnum {
            let name_at = self.u32_at(header(i)) as usize;
            let section_name = names
                .get(name_at..)
                .and_then(|rest| rest.split(|&b| b == 0).next())
                .unwrap_or_default();
            if section_name == name.as_bytes() {
                let (off, len) = (self.u64_at(header(i) + 24), self.u64_at(header(i) + 32));
                self.check("section", off, len)?;
                return Ok(Some(&self.bytes[off as usize..(off + len) as usize]));
            }
        }
        Ok(None)
    }

    fn check(&self, what: &'static str, offset: u64, len: u64) -> Result<(), ElfError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.bytes.len() as u64 => Ok(()),
            _ => Err(ElfError::OutOfBounds {
                what,
                offset,
                len,
                file_len: self.bytes.len(),
            }),
        }
    }

    fn u16_at(&self, at: usize) -> u16 {
        self.bytes
            .get(at..at + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32_at(&self, at: usize) -> u32 {
        self.bytes
            .get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
    }

    fn u64_at(&self, at: usize) -> u64 {
        self.bytes
            .get(at..at + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds an ELF64 with one `PT_LOAD` or `PT_INTERP` program header and
    /// the sections `.shstrtab` plus `(name, contents)` pairs.
    pub(crate) fn build(interp: bool, sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut names = vec![0u8];
        let mut name_offsets = Vec::new();
        for (name, _) in sections.iter().copied().chain([(".shstrtab", &[][..])]) {
            name_offsets.push(names.len() as u32);
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        let mut file = vec![0u8; 64];
        file[..4].copy_from_slice(ELF_MAGIC);
        file[4] = ELFCLASS64;
        file[5] = ELFDATA2LSB;
        file[0x12..0x14].copy_from_slice(&EM_X86_64.to_le_bytes());
        // One program header at 64.
        file[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        file[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        file[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let mut phdr = vec![0u8; 56];
        phdr[..4].copy_from_slice(&(if interp { PT_INTERP } else { 1 }).to_le_bytes());
        file.extend_from_slice(&phdr);
        // Section contents, then the headers.
        let mut placed = Vec::new();
        for (_, data) in sections.iter().copied().chain([(".shstrtab", &names[..])]) {
            placed.push((file.len() as u64, data.len() as u64));
            file.extend_from_slice(data);
        }
        let shoff = file.len() as u64;
        file.extend_from_slice(&[0u8; 64]); // SHN_UNDEF
        for (i, (off, len)) in placed.iter().enumerate() {
            let mut sh = vec![0u8; 64];
            sh[..4].copy_from_slice(&name_offsets[i].to_le_bytes());
            sh[24..32].copy_from_slice(&off.to_le_bytes());
            sh[32..40].copy_from_slice(&len.to_le_bytes());
            file.extend_from_slice(&sh);
        }
        let shnum = placed.len() as u16 + 1;
        file[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        file[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        file[0x3c..0x3e].copy_from_slice(&shnum.to_le_bytes());
        file[0x3e..0x40].copy_from_slice(&(shnum - 1).to_le_bytes());
        file
    }

    #[test]
    fn finds_sections_and_interpreter() {
        let image = build(
            false,
            &[(".text", b"\x90\x90"), (".modinfo", b"depends=kvm\0")],
        );
        let elf = Elf::parse(&image).unwrap();
        assert_eq!(elf.machine(), EM_X86_64);
        assert!(!elf.has_interpreter().unwrap());
        assert_eq!(
            elf.section(".modinfo").unwrap(),
            Some(&b"depends=kvm\0"[..])
        );
        assert_eq!(elf.section(".text").unwrap(), Some(&b"\x90\x90"[..]));
        assert_eq!(elf.section(".data").unwrap(), None);

        let dynamic = build(true, &[]);
        assert!(Elf::parse(&dynamic).unwrap().has_interpreter().unwrap());
    }

    #[test]
    fn rejects_non_elf_and_truncated_tables() {
        assert!(matches!(
            Elf::parse(b"#!/bin/sh\n"),
            Err(ElfError::NotElf64)
        ));
        let mut image = build(false, &[(".modinfo", b"x\0")]);
        image.truncate(image.len() - 10);
        let elf = Elf::parse(&image).unwrap();
        assert!(matches!(
            elf.section(".modinfo"),
            Err(ElfError::OutOfBounds { .. })
        ));
    }
}
