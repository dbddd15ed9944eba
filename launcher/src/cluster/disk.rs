//! Each node's root disk: a copy of the node image that costs as little as
//! the host's filesystem allows.
//!
//! 1. A reflink (`FICLONE`): on XFS, Btrfs, bcachefs and OCFS2 the copy shares
//!    every block with the image until either side writes it; instant and
//!    free whatever the image's size.
//! 2. Otherwise a sparse copy: only the image's data extents are copied
//!    (`SEEK_DATA`/`SEEK_HOLE`, `copy_file_range`), holes stay holes, so a
//!    2 GiB image holding 700 MiB of files costs 700 MiB and the time to copy
//!    them.
//!
//! qcow2 and other overlay formats are not used: mercury's virtio-blk serves
//! raw files only, which keeps the I/O path (and its fuzzing surface) small.
//! docs/BENCHMARKS.md gives the measured cost per node.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd as _;
use std::path::Path;

/// `FICLONE` = `_IOW(0x94, 9, int)` (linux/fs.h).
const FICLONE: libc::c_ulong = 0x4004_9409;

/// How a root disk was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    Reflink,
    /// `bytes` of data copied; the rest are holes.
    Sparse {
        bytes: u64,
    },
}

impl std::fmt::Display for CopyMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyMethod::Reflink => f.write_str("reflink"),
            CopyMethod::Sparse { bytes } => write!(f, "sparse copy of {} MiB", bytes >> 20),
        }
    }
}

/// Copies `image` to `dest` (which must not exist), by reflink where the
/// filesystem can and as a sparse copy otherwise. On failure `dest` is
/// removed.
pub fn copy_image(image: &Path, dest: &Path) -> io::Result<CopyMethod> {
    let src = File::open(image)?;
    let dst = OpenOptions::new().write(true).create_new(true).open(dest)?;
    let result = clone_or_copy(&src, &dst).and_then(|method| dst.sync_all().map(|()| method));
    if result.is_err() {
        let _ = fs::remove_file(dest);
    }
    result
}

fn clone_or_copy(src: &File, dst: &File) -> io::Result<CopyMethod> {
    // SAFETY: FICLONE takes the source descriptor as its argument; both
    // descriptors are open for the duration of the call.
    if unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) } == 0 {
        return Ok(CopyMethod::Reflink);
    }
    let len = src.metadata()?.len();
    dst.set_len(len)?;
    let mut copied = 0;
    let mut offset: i64 = 0;
    let end = i64::try_from(len).map_err(|_| io::Error::other("image too large"))?;
    while offset < end {
        let data = match seek(src, offset, libc::SEEK_DATA) {
            Ok(data) => data,
            // ENXIO: no data after `offset`, the rest is a hole.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(e) => return Err(e),
        };
        let hole = seek(src, data, libc::SEEK_HOLE)?.min(end);
        copy_range(src, dst, data, hole - data)?;
        copied += (hole - data) as u64;
        offset = hole;
    }
    Ok(CopyMethod::Sparse { bytes: copied })
}

fn seek(file: &File, offset: i64, whence: libc::c_int) -> io::Result<i64> {
    // SAFETY: lseek on an open descriptor; no memory is passed.
    let r = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Copies `len` bytes at `offset` from `src` to the same offset of `dst`.
fn copy_range(src: &File, dst: &File, offset: i64, len: i64) -> io::Result<()> {
    let mut off_in = offset;
    let mut off_out = offset;
    let mut left = len;
    while left > 0 {
        let chunk = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
        // SAFETY: both descriptors are open; the offsets are plain integers
        // the kernel advances.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                chunk,
                0,
            )
        };
        match n {
            n if n < 0 => return Err(io::Error::last_os_error()),
            0 => return Err(io::Error::other("the image shrank while it was copied")),
            n => left -= n as i64,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn a_sparse_image_copies_its_data_and_keeps_its_holes() {
        let dir = std::env::temp_dir().join(format!("mercury-disk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let image = dir.join("image.ext4");
        let mut f = File::create(&image).unwrap();
        // 64 MiB with data at the start, in the middle and at the very end.
        f.set_len(64 << 20).unwrap();
        for (at, byte) in [(0u64, 0xa1u8), (32 << 20, 0xb2), ((64 << 20) - 4096, 0xc3)] {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&vec![byte; 4096]).unwrap();
        }
        f.sync_all().unwrap();
        let copy = dir.join("root.img");
        let method = copy_image(&image, &copy).unwrap();
        let mut a = Vec::new();
        let mut b = Vec::new();
        File::open(&image).unwrap().read_to_end(&mut a).unwrap();
        File::open(&copy).unwrap().read_to_end(&mut b).unwrap();
        assert!(a == b, "the copy's bytes differ from the image's");
        let used = fs::metadata(&copy).unwrap().blocks() * 512;
        match method {
            CopyMethod::Reflink => {}
            CopyMethod::Sparse { bytes } => {
                assert!(bytes < 16 << 20, "copied {bytes} bytes of a 12 KiB image");
                assert!(
                    used < 16 << 20,
                    "the copy uses {used} bytes: holes were filled"
                );
            }
        }
        // The destination must be new; an existing one is left alone.
        let err = copy_image(&image, &copy).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::metadata(&copy).unwrap().len(), 64 << 20);
        fs::remove_dir_all(&dir).unwrap();
    }
}
