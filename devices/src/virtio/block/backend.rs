//! Where a disk's bytes live: the raw image file ([`ImageFile`]: opened,
//! size-checked and locked against a second VM), or memory
//! ([`MemoryDisk`], for unit tests and the fuzzer), behind
//! [`DiskBackend`].

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::device::BlockError;
use super::SECTOR_SIZE;

/// The operations a request needs. Offsets and lengths are in bytes and
/// already checked against the disk's size by the request parser.
pub trait DiskBackend: Send {
    /// Fills `buf` from `offset`.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> io::Result<()>;
    /// The range is no longer needed; it may read back as anything, or as
    /// it was.
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// The range reads back as zeroes afterwards; with `unmap` it may be
    /// deallocated.
    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()>;
}

/// A disk in memory, with counters of what the device asked of it.
#[derive(Debug, Default)]
pub struct MemoryDisk {
    /// The disk's bytes.
    pub bytes: Vec<u8>,
    /// Flushes so far.
    pub flushes: usize,
    /// Discards so far.
    pub discards: usize,
}

impl MemoryDisk {
    /// A zeroed disk of `sectors` sectors.
    pub fn new(sectors: usize) -> Self {
        MemoryDisk {
            bytes: vec![0; sectors * SECTOR_SIZE as usize],
            ..Default::default()
        }
    }

    fn range(&mut self, offset: u64, len: u64) -> io::Result<&mut [u8]> {
        let start = usize::try_from(offset).map_err(|_| past_the_end(offset, len))?;
        let len_usize = usize::try_from(len).map_err(|_| past_the_end(offset, len))?;
        let end = start
            .checked_add(len_usize)
            .ok_or_else(|| past_the_end(offset, len))?;
        self.bytes
            .get_mut(start..end)
            .ok_or_else(|| past_the_end(offset, len))
    }
}

fn past_the_end(offset: u64, len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("{len} bytes at {offset} are past the end of the disk"),
    )
}

impl DiskBackend for MemoryDisk {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        buf.copy_from_slice(self.range(offset, buf.len() as u64)?);
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.range(offset, buf.len() as u64)?.copy_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.range(offset, len)?;
        self.discards += 1;
        Ok(())
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, _unmap: bool) -> io::Result<()> {
        self.range(offset, len)?.fill(0);
        Ok(())
    }
}

/// A raw disk image: an open regular file whose size is a whole number of
/// sectors, holding an OFD lock on all of it (a write lock when writable, a
/// read lock when read-only) for as long as it is open.
#[derive(Debug)]
pub struct ImageFile {
    file: File,
    path: PathBuf,
    read_only: bool,
    size: u64,
    device: u64,
    inode: u64,
    block_size: u64,
}

impl ImageFile {
    /// Opens and locks the image at `path`: for reading only, or for
    /// reading and writing.
    pub fn open(path: &Path, read_only: bool) -> Result<ImageFile, BlockError> {
        // Opening a FIFO would block until a writer came, and opening a
        // device can have side effects: refuse them before opening. (The
        // type is checked again on the opened file.)
        if let Ok(metadata) = std::fs::metadata(path) {
            if !metadata.is_file() && !metadata.is_dir() {
                return Err(BlockError::NotRegularFile {
                    path: path.to_owned(),
                });
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| match source.raw_os_error() {
                Some(libc::EISDIR) => BlockError::Directory {
                    path: path.to_owned(),
                },
                _ => BlockError::Open {
                    path: path.to_owned(),
                    access: if read_only {
                        "reading"
                    } else {
                        "reading and writing"
                    },
                    source,
                },
            })?;
        let metadata = file.metadata().map_err(|source| BlockError::Metadata {
            path: path.to_owned(),
            source,
        })?;
        if metadata.is_dir() {
            return Err(BlockError::Directory {
                path: path.to_owned(),
            });
        }
        if !metadata.is_file() {
            return Err(BlockError::NotRegularFile {
                path: path.to_owned(),
            });
        }
        let size = metadata.len();
        if size % SECTOR_SIZE != 0 {
            return Err(BlockError::SizeNotSectors {
                path: path.to_owned(),
                size,
            });
        }
        let image = ImageFile {
            file,
            path: path.to_owned(),
            read_only,
            size,
            device: metadata.dev(),
            inode: metadata.ino(),
            block_size: metadata.blksize(),
        };
        image.lock()?;
        Ok(image)
    }

    /// The path it was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opened for reading only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Size in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.size / SECTOR_SIZE
    }

    /// The file's device and inode numbers.
    pub fn device_inode(&self) -> (u64, u64) {
        (self.device, self.inode)
    }

    /// The file system's preferred I/O size, in bytes.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    fn flock(&self, command: libc::c_int, kind: libc::c_short) -> io::Result<libc::flock> {
        // SAFETY: `flock` is a plain C struct for which all zeroes is a
        // valid value.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = kind;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        // l_start 0, l_len 0: the whole file, however it grows. OFD locks
        // require l_pid 0.
        // SAFETY: the descriptor is open for the life of `self.file`, and
        // the kernel reads and writes only the `flock` we pass.
        let ret = unsafe { libc::fcntl(self.file.as_raw_fd(), command, &mut lock) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(lock)
    }

    /// Takes the OFD lock. OFD locks belong to the open file description,
    /// so a second open of the same image conflicts even in this process.
    fn lock(&self) -> Result<(), BlockError> {
        let kind = if self.read_only {
            libc::F_RDLCK
        } else {
            libc::F_WRLCK
        } as libc::c_short;
        match self.flock(libc::F_OFD_SETLK, kind) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                Err(BlockError::Locked {
                    path: self.path.clone(),
                    holder: self.lock_holder(kind),
                })
            }
            Err(source) => Err(BlockError::Lock {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Who holds the lock that conflicts with ours, as well as can be found
    /// out: "pid N" or "another process".
    fn lock_holder(&self, kind: libc::c_short) -> String {
        // A classic POSIX lock reports its owner's pid; an OFD lock reports
        // -1 (here and in /proc/locks), so the holder is looked for among
        // the locks listed in every process's fdinfo.
        let pid = match self.flock(libc::F_OFD_GETLK, kind) {
            Ok(lock) if lock.l_pid > 0 => Some(lock.l_pid as u32),
            _ => find_ofd_lock_holder(self.device, self.inode),
        };
        match pid {
            Some(pid) => format!("pid {pid}"),
            None => "another process".to_string(),
        }
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let offset = libc::off_t::try_from(offset).map_err(|_| past_the_end(offset, len))?;
        let len_off = libc::off_t::try_from(len).map_err(|_| past_the_end(offset as u64, len))?;
        loop {
            // SAFETY: fallocate only changes the file's contents in the
            // given range; no memory of ours is involved.
            let ret = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset, len_off) };
            if ret == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn write_zeroes_by_writing(&self, offset: u64, len: u64) -> io::Result<()> {
        let zeroes = vec![0u8; len.min(64 << 10) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeroes.len() as u64);
            self.file
                .write_all_at(&zeroes[..n as usize], offset + done)?;
            done += n;
        }
        Ok(())
    }
}

/// The file system cannot do this `fallocate` mode.
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS))
}

impl DiskBackend for ImageFile {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        match self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            // A discard is a hint: without hole punching it does nothing.
            Err(e) if unsupported(&e) => Ok(()),
            result => result,
        }
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        if unmap {
            // A punched hole reads as zeroes.
            match self.fallocate(
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            ) {
                Err(e) if unsupported(&e) => {}
                result => return result,
            }
        }
        match self.fallocate(libc::FALLOC_FL_ZERO_RANGE, offset, len) {
            Err(e) if unsupported(&e) => self.write_zeroes_by_writing(offset, len),
            result => result,
        }
    }
}

/// Looks through `/proc/*/fdinfo/*` for the open file that holds an OFD lock
/// on the file `device`/`inode`; returns its process's pid.
fn find_ofd_lock_holder(device: u64, inode: u64) -> Option<u32> {
    // fdinfo lists a lock as "lock:\t1: OFDLCK ADVISORY  WRITE -1 fe:00:1234 0 EOF",
    // the device as hexadecimal major:minor.
    let id = format!(
        "{:02x}:{:02x}:{inode}",
        libc::major(device),
        libc::minor(device)
    );
    let holds_it = |fdinfo: &str| {
        fdinfo.lines().any(|line| {
            line.starts_with("lock:")
                && line.contains("OFDLCK")
                && line.split_whitespace().any(|field| field == id)
        })
    };
    for process in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(process.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_to_string(fd.path()).is_ok_and(|info| holds_it(&info)) {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_disk_refuses_ranges_past_its_end() {
        let mut disk = MemoryDisk::new(2);
        let mut buf = [0u8; 512];
        assert!(disk.read_at(&mut buf, 512).is_ok());
        assert!(disk.read_at(&mut buf, 513).is_err());
        assert!(disk.write_at(&buf, u64::MAX).is_err());
        assert!(disk.write_zeroes(1024, 1, false).is_err());
        assert!(disk.discard(u64::MAX, u64::MAX).is_err());
        disk.write_at(&[7; 512], 512).unwrap();
        disk.write_zeroes(600, 10, true).unwrap();
        assert_eq!(disk.bytes[599], 7);
        assert_eq!(&disk.bytes[600..610], &[0; 10]);
        assert_eq!(disk.bytes[610], 7);
    }
}
