//! A node's cloud-init NoCloud seed disk: a small FAT12 image (a sparse
//! file of [`SEED_SIZE`] bytes) labelled `CIDATA` holding `meta-data`,
//! `network-config` and `user-data`, made with the `fatfs` crate. The guest
//! sees it as its read-only `vdb`; cloud-init finds it by the label (its
//! kernel needs vfat).
//!
//! The image holds the cluster's token and, on control-plane nodes, the
//! CA key: it is written mode 0600, to a temporary file renamed into place,
//! so a reader never sees half of one. Its volume id and file times are
//! fixed, so the same documents always make the same bytes.

use std::fs;
use std::io::{self, Cursor, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::cloudinit::NodeDocuments;

/// The image's size: 2 MiB, far more than the documents need (a few KiB).
pub const SEED_SIZE: u64 = 2 << 20;
/// The volume label cloud-init looks for (it accepts `cidata` or `CIDATA`).
pub const SEED_LABEL: &str = "CIDATA";

/// Writes `docs` as a seed image at `path` (replacing one that is there),
/// mode 0600: it holds the cluster's bootstrap secrets.
pub fn write_seed(path: &Path, docs: &NodeDocuments) -> io::Result<()> {
    let image = build_image(docs).map_err(|e| with_path(path, e))?;
    super::state::replace_file(path, 0o600, |f| write_sparse(f, &image))
        .map_err(|e| with_path(path, e))
}

/// Reads the three documents back from the seed image at `path`.
#[cfg(test)]
pub fn read_seed(path: &Path) -> io::Result<NodeDocuments> {
    let image = fs::read(path).map_err(|e| with_path(path, e))?;
    read_image(image).map_err(|e| with_path(path, e))
}

/// The whole image, in memory (2 MiB).
fn build_image(docs: &NodeDocuments) -> io::Result<Vec<u8>> {
    let mut image = Cursor::new(vec![0u8; SEED_SIZE as usize]);
    let mut label = [b' '; 11];
    label[..SEED_LABEL.len()].copy_from_slice(SEED_LABEL.as_bytes());
    fatfs::format_volume(
        &mut image,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat12)
            .volume_label(label)
            .volume_id(volume_id(docs)),
    )?;
    image.set_position(0);
    {
        let fs = fatfs::FileSystem::new(&mut image, fatfs::FsOptions::new())?;
        let root = fs.root_dir();
        for (name, text) in docs.files() {
            let mut f = root.create_file(name)?;
            f.truncate()?;
            f.write_all(text.as_bytes())?;
            f.flush()?;
        }
        drop(root);
        fs.unmount()?;
    }
    Ok(image.into_inner())
}

#[cfg(test)]
fn read_image(image: Vec<u8>) -> io::Result<NodeDocuments> {
    use std::io::Read as _;
    let fs = fatfs::FileSystem::new(Cursor::new(image), fatfs::FsOptions::new())?;
    let label = fs.volume_label();
    if !label.trim_end().eq_ignore_ascii_case(SEED_LABEL) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("volume label is {label:?}, not {SEED_LABEL}"),
        ));
    }
    let root = fs.root_dir();
    let read = |name: &str| -> io::Result<String> {
        let mut text = String::new();
        root.open_file(name)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?;
        Ok(text)
    };
    Ok(NodeDocuments {
        meta_data: read("meta-data")?,
        network_config: read("network-config")?,
        user_data: read("user-data")?,
    })
}

/// A volume id from the documents: the same seed, the same bytes.
fn volume_id(docs: &NodeDocuments) -> u32 {
    let mut h = Sha256::new();
    for (name, text) in docs.files() {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// Writes `image` to the empty file `f`, skipping all-zero 4 KiB blocks
/// (holes), then sets the full length.
fn write_sparse(f: &mut fs::File, image: &[u8]) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    const BLOCK: usize = 4096;
    for (i, block) in image.chunks(BLOCK).enumerate() {
        if block.iter().any(|&b| b != 0) {
            f.seek(SeekFrom::Start((i * BLOCK) as u64))?;
            f.write_all(block)?;
        }
    }
    f.set_len(image.len() as u64)
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("seed {}: {e}", path.display()))
}

#[cfg(test)]
#[path = "seed_tests.rs"]
mod tests;
