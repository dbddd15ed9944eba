//! A writer for the "newc" cpio format, the one the Linux kernel unpacks as
//! an initramfs (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Each entry is a 110-byte ASCII header (magic `070701` and thirteen 8-digit
//! hex fields), the NUL-terminated name padded to 4 bytes, then the data
//! padded to 4 bytes. The archive ends with an entry named `TRAILER!!!`.
//! Parent directories are emitted automatically, once, before their first
//! child, because the kernel does not create missing parents.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Errors from writing a cpio archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("cpio entry `{path}` is too large for newc ({size} bytes, limit 4 GiB)")]
    EntryTooLarge { path: String, size: u64 },
    #[error("invalid cpio entry path `{0}` (must be relative, without `..`, empty or NUL parts)")]
    InvalidPath(String),
    #[error("cannot read `{path}` for the cpio archive")]
    ReadSource {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cpio entry `{0}` was added twice")]
    Duplicate(String),
    #[error("writing the cpio archive failed")]
    Write(#[source] io::Error),
}

/// Streams a newc archive into `W`.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
    entries: BTreeSet<String>,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive.
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            written: 0,
            next_ino: 1,
            entries: BTreeSet::new(),
        }
    }

    /// Adds a directory (and its missing parents).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<(), CpioError> {
        let path = normalize(path)?;
        if self.entries.contains(&path) {
            return Ok(());
        }
        self.parents(&path)?;
        self.entry(
            &path,
            S_IFDIR | (mode & 0o7777),
            2,
            (0, 0),
            &mut io::empty(),
            0,
        )
    }

    /// Adds a regular file with the given contents.
    pub fn file_bytes(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<(), CpioError> {
        let path = self.new_leaf(path)?;
        let mut reader = data;
        self.entry(
            &path,
            S_IFREG | (mode & 0o7777),
            1,
            (0, 0),
            &mut reader,
            data.len() as u64,
        )
    }

    /// Adds a regular file copied from the host file `source`, streamed.
    pub fn file_from(&mut self, path: &str, mode: u32, source: &Path) -> Result<(), CpioError> {
        let read_err = |err: io::Error| CpioError::ReadSource {
            path: source.display().to_string(),
            source: err,
        };
        let file = File::open(source).map_err(read_err)?;
        let size = file.metadata().map_err(read_err)?.len();
        let path = self.new_leaf(path)?;
        let mut reader = file.take(size);
        self.entry(
            &path,
            S_IFREG | (mode & 0o7777),
            1,
            (0, 0),
            &mut reader,
            size,
        )
    }

    /// Adds a symbolic link `path` pointing at `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        let path = self.new_leaf(path)?;
        let mut reader = target.as_bytes();
        self.entry(
            &path,
            S_IFLNK | 0o777,
            1,
            (0, 0),
            &mut reader,
            target.len() as u64,
        )
    }

    /// Adds a character device node.
    pub fn char_dev(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        let path = self.new_leaf(path)?;
        self.entry(
            &path,
            S_IFCHR | (mode & 0o7777),
            1,
            (major, minor),
            &mut io::empty(),
            0,
        )
    }

    /// Writes the trailer and returns the sink and the archive size in bytes.
    pub fn finish(mut self) -> Result<(W, u64), CpioError> {
        self.header(TRAILER, 0, 0, 1, (0, 0), 0)?;
        self.pad()?;
        self.out.flush().map_err(CpioError::Write)?;
        Ok((self.out, self.written))
    }

    fn new_leaf(&mut self, path: &str) -> Result<String, CpioError> {
        let path = normalize(path)?;
        if self.entries.contains(&path) {
            return Err(CpioError::Duplicate(path));
        }
        self.parents(&path)?;
        Ok(path)
    }

    fn parents(&mut self, path: &str) -> Result<(), CpioError> {
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if !self.entries.contains(&prefix) {
                let dir = prefix.clone();
                self.entry(&dir, S_IFDIR | 0o755, 2, (0, 0), &mut io::empty(), 0)?;
            }
        }
        Ok(())
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &mut dyn Read,
        size: u64,
    ) -> Result<(), CpioError> {
        let size32 = u32::try_from(size).map_err(|_| CpioError::EntryTooLarge {
            path: path.to_string(),
            size,
        })?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(path, ino, mode, nlink, rdev, size32)?;
        let copied = io::copy(data, &mut self.out).map_err(CpioError::Write)?;
        if copied != size {
            return Err(CpioError::ReadSource {
                path: path.to_string(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("expected {size} bytes, read {copied}"),
                ),
            });
        }
        self.written += copied;
        self.pad()?;
        self.entries.insert(path.to_string());
        Ok(())
    }

    fn header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        (rmajor, rminor): (u32, u32),
        size: u32,
    ) -> Result<(), CpioError> {
        let namesize = name.len() as u32 + 1;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rmajor, rminor, namesize, 0,
        ];
        let mut header = String::with_capacity(110 + name.len() + 1);
        header.push_str(MAGIC);
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        header.push_str(name);
        header.push('\0');
        self.out
            .write_all(header.as_bytes())
            .map_err(CpioError::Write)?;
        self.written += header.len() as u64;
        self.pad()
    }

    fn pad(&mut self) -> Result<(), CpioError> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.out
            .write_all(&[0u8; 3][..pad])
            .map_err(CpioError::Write)?;
        self.written += pad as u64;
        Ok(())
    }
}

/// Strips leading `/` and `./`, rejects `..`, empty parts and NULs.
fn normalize(path: &str) -> Result<String, CpioError> {
    let trimmed = path.trim_start_matches("./").trim_start_matches('/');
    let invalid = trimmed.is_empty()
        || trimmed.contains('\0')
        || trimmed
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if invalid {
        return Err(CpioError::InvalidPath(path.to_string()));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed newc entry: (name, mode, rdev major, rdev minor, data).
    type Entry = (String, u32, u32, u32, Vec<u8>);

    /// A minimal newc reader, independent of the writer's code paths.
    fn parse(archive: &[u8]) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut pos = 0;
        loop {
            assert_eq!(&archive[pos..pos + 6], b"070701", "magic at offset {pos}");
            let field = |i: usize| {
                let start = pos + 6 + i * 8;
                u32::from_str_radix(std::str::from_utf8(&archive[start..start + 8]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, rmajor, rminor, namesize) = (
                field(1),
                field(6) as usize,
                field(9),
                field(10),
                field(11) as usize,
            );
            let name_start = pos + 110;
            let name = std::str::from_utf8(&archive[name_start..name_start + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(archive[name_start + namesize - 1], 0, "name NUL");
            let data_start = (name_start + namesize + 3) & !3;
            let data = archive[data_start..data_start + size].to_vec();
            pos = (data_start + size + 3) & !3;
            if name == TRAILER {
                assert_eq!(pos, archive.len(), "trailer ends the archive");
                return entries;
            }
            entries.push((name, mode, rmajor, rminor, data));
        }
    }

    #[test]
    fn writes_parents_files_links_and_nodes() {
        let mut w = CpioWriter::new(Vec::new());
        w.file_bytes("/bin/busybox", 0o755, b"ELF....").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        w.char_dev("/dev/console", 0o600, 5, 1).unwrap();
        w.dir("/proc", 0o555).unwrap();
        w.file_bytes("init", 0o755, b"#!/bin/sh\n").unwrap();
        let (bytes, size) = w.finish().unwrap();
        assert_eq!(size as usize, bytes.len());
        assert_eq!(bytes.len() % 4, 0);

        let entries = parse(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "dev",
                "dev/console",
                "proc",
                "init"
            ]
        );
        assert_eq!(entries[0].1, S_IFDIR | 0o755);
        assert_eq!(entries[1].1, S_IFREG | 0o755);
        assert_eq!(entries[1].4, b"ELF....");
        assert_eq!(entries[2].1, S_IFLNK | 0o777);
        assert_eq!(entries[2].4, b"busybox");
        assert_eq!(
            (entries[4].1, entries[4].2, entries[4].3),
            (S_IFCHR | 0o600, 5, 1)
        );
        assert_eq!(entries[5].1, S_IFDIR | 0o555);
    }

    #[test]
    fn header_layout_matches_the_kernel_format() {
        let mut w = CpioWriter::new(Vec::new());
        w.file_bytes("a", 0o644, b"xyz").unwrap();
        let (bytes, _) = w.finish().unwrap();
        // Header (110) + "a\0" (2) = 112, already aligned; data 3 bytes + 1 pad.
        let header = std::str::from_utf8(&bytes[..110]).unwrap();
        assert_eq!(
            header,
            "070701\
             00000001000081a4000000000000000000000001000000000000000300000000\
             00000000000000000000000000000002\
             00000000"
        );
        assert_eq!(&bytes[110..112], b"a\0");
        assert_eq!(&bytes[112..116], b"xyz\0");
        assert_eq!(&bytes[116..122], b"070701");
    }

    #[test]
    fn streams_host_files() {
        let dir = std::env::temp_dir().join(format!("rig-cpio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("payload");
        let payload: Vec<u8> = (0..10_001u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &payload).unwrap();
        let mut w = CpioWriter::new(Vec::new());
        w.file_from("/images/kernel", 0o644, &src).unwrap();
        let (bytes, _) = w.finish().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let entries = parse(&bytes);
        assert_eq!(entries[1].0, "images/kernel");
        assert_eq!(entries[1].4, payload);
    }

    #[test]
    fn rejects_bad_paths_and_duplicates() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(matches!(
            w.file_bytes("../x", 0o644, b""),
            Err(CpioError::InvalidPath(_))
        ));
        assert!(matches!(
            w.file_bytes("/", 0o644, b""),
            Err(CpioError::InvalidPath(_))
        ));
        assert!(matches!(
            w.file_bytes("a//b", 0o644, b""),
            Err(CpioError::InvalidPath(_))
        ));
        w.file_bytes("x", 0o644, b"1").unwrap();
        assert!(matches!(
            w.file_bytes("/x", 0o644, b"2"),
            Err(CpioError::Duplicate(_))
        ));
        // Directories may be declared again (e.g. explicitly after an implicit parent).
        w.file_bytes("d/f", 0o644, b"").unwrap();
        w.dir("d", 0o700).unwrap();
    }

    #[test]
    fn missing_source_file_names_the_path() {
        let mut w = CpioWriter::new(Vec::new());
        let err = w
            .file_from("x", 0o644, Path::new("/nonexistent/rig-file"))
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/rig-file"), "{err}");
    }
}
