//! Opening an image: the lock, the errors, the default id.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::*;
use crate::virtio::block::test_support::TempImage;

const SECTORS: u64 = 64;

#[test]
fn the_default_id_is_the_files_device_and_inode() {
    let image = TempImage::new(512);
    let block = Block::new(&image.config(true)).unwrap();
    let metadata = std::fs::metadata(&image.path).unwrap();
    let expected = format!("{:x}-{:x}", metadata.dev(), metadata.ino());
    assert_eq!(&block.id()[..expected.len()], expected.as_bytes());
    assert!(block.id()[expected.len()..].iter().all(|&b| b == 0));
    assert_eq!(default_id(0xfe00, 0x98_be26), "fe00-98be26");
    // Too long to read: a 16-digit hash, different for different files.
    let long = default_id(u64::MAX, u64::MAX - 1);
    assert_eq!(long.len(), 16);
    assert_ne!(long, default_id(u64::MAX, u64::MAX - 2));
    assert_eq!(long, default_id(u64::MAX, u64::MAX - 1));
}

#[test]
fn a_second_open_of_a_locked_image_fails_naming_the_holder() {
    let image = TempImage::new(SECTORS * 512);
    let first = Block::new(&image.config(false)).unwrap();
    for read_only in [false, true] {
        let error = match Block::new(&image.config(read_only)) {
            Err(e) => e,
            Ok(_) => panic!("a second open (read_only {read_only}) succeeded"),
        };
        let message = error.to_string();
        assert!(matches!(error, BlockError::Locked { .. }), "{message}");
        assert!(
            message.contains(&image.path.display().to_string()),
            "{message}"
        );
        // OFD locks report no pid; the holder is found through fdinfo.
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
    }
    drop(first);
    // Read-only opens share the image; a writer is then kept out.
    let reader = Block::new(&image.config(true)).unwrap();
    let second_reader = Block::new(&image.config(true)).unwrap();
    assert!(matches!(
        Block::new(&image.config(false)),
        Err(BlockError::Locked { .. })
    ));
    drop((reader, second_reader));
    Block::new(&image.config(false)).unwrap();
}

/// The error `Block::new` gives for `config`, and its message, which must
/// name `path`.
fn new_error(config: &BlockConfig) -> (BlockError, String) {
    let error = match Block::new(config) {
        Err(e) => e,
        Ok(_) => panic!("{} opened", config.path.display()),
    };
    let message = error.to_string();
    assert!(
        message.contains(&config.path.display().to_string()),
        "{message}"
    );
    (error, message)
}

fn config_for(path: &Path, read_only: bool) -> BlockConfig {
    BlockConfig {
        path: path.to_owned(),
        read_only,
        id: None,
    }
}

#[test]
fn bad_images_are_refused_naming_the_file() {
    let odd = TempImage::new(1000);
    let (error, message) = new_error(&odd.config(false));
    assert!(matches!(
        error,
        BlockError::SizeNotSectors { size: 1000, .. }
    ));
    assert!(message.contains("1000"), "{message}");

    let missing = std::env::temp_dir().join("mercury-blk-test-no-such-file.img");
    let (error, _) = new_error(&config_for(&missing, true));
    assert!(
        matches!(&error, BlockError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    );

    let dir = std::env::temp_dir();
    for read_only in [false, true] {
        let (error, _) = new_error(&config_for(&dir, read_only));
        assert!(matches!(error, BlockError::Directory { .. }), "{error}");
    }
    let (error, _) = new_error(&config_for(Path::new("/dev/null"), true));
    assert!(
        matches!(error, BlockError::NotRegularFile { .. }),
        "{error}"
    );
    // A FIFO is refused, not opened (which would block).
    let fifo = TempImage::new(0);
    std::fs::remove_file(&fifo.path).unwrap();
    let c_path = std::ffi::CString::new(fifo.path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    // Read-only: opening a FIFO for reading blocks until a writer comes.
    let (error, _) = new_error(&config_for(&fifo.path, true));
    assert!(
        matches!(error, BlockError::NotRegularFile { .. }),
        "{error}"
    );

    let image = TempImage::new(512);
    let long_id = BlockConfig {
        id: Some("x".repeat(21)),
        ..image.config(false)
    };
    let (error, _) = new_error(&long_id);
    assert!(matches!(error, BlockError::IdTooLong { len: 21, .. }));
}

/// A file this process may open read-only but not read-write: a 0444 file,
/// or, for root (whom file modes do not stop), a read-only sysfs attribute.
fn unwritable_file(image: &TempImage) -> PathBuf {
    if is_root() {
        return PathBuf::from("/sys/kernel/uevent_seqnum");
    }
    set_mode(&image.path, 0o444);
    image.path.clone()
}

/// A file this process may not open at all: a 0000 file, or for root a
/// write-only sysfs attribute.
fn unreadable_file(image: &TempImage) -> PathBuf {
    if is_root() {
        return PathBuf::from("/sys/bus/platform/drivers_probe");
    }
    set_mode(&image.path, 0o000);
    image.path.clone()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn images_that_cannot_be_opened_as_asked_are_refused() {
    let image = TempImage::new(4096);
    let path = unwritable_file(&image);
    let (error, message) = new_error(&config_for(&path, false));
    assert!(matches!(error, BlockError::Open { .. }), "{message}");
    assert!(message.contains("reading and writing"), "{message}");
    // The same file opens read-only: it was the writing that failed.
    Block::new(&config_for(&path, true)).unwrap();

    let image = TempImage::new(4096);
    let path = unreadable_file(&image);
    let (error, message) = new_error(&config_for(&path, true));
    assert!(
        matches!(&error, BlockError::Open { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied),
        "{message}"
    );
}
