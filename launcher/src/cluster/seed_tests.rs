use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use mercury_tests::TempDir;

use super::*;

fn docs() -> NodeDocuments {
    NodeDocuments {
        meta_data: "instance-id: edge1-cp-0-0123456789ab\nlocal-hostname: edge1-cp-0\n".to_string(),
        network_config: "{\n  \"version\": 2\n}\n".to_string(),
        // Bigger than a cluster (4 KiB) and than one FAT directory sector.
        user_data: format!(
            "#cloud-config\nhostname: edge1-cp-0\n# {}\n",
            "x".repeat(9000)
        ),
    }
}

/// A tool's output, or `None` when this host does not have it.
fn tool(program: &str, args: &[&str]) -> Option<std::process::Output> {
    match Command::new(program).args(args).output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!("SKIP {program}: not installed (dosfstools / util-linux)");
            None
        }
        Err(e) => panic!("{program}: {e}"),
    }
}

#[test]
fn written_and_read_back() {
    let tmp = TempDir::new("seed");
    let path = tmp.path().join("seed.img");
    let d = docs();
    write_seed(&path, &d).unwrap();
    assert_eq!(read_seed(&path).unwrap(), d);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), SEED_SIZE);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(
        meta.blocks() * 512 < SEED_SIZE / 4,
        "sparse: {} blocks allocated",
        meta.blocks()
    );
    // Same documents, same bytes; a rewrite replaces the file whole.
    let first = fs::read(&path).unwrap();
    write_seed(&path, &d).unwrap();
    assert_eq!(fs::read(&path).unwrap(), first);
    let mut other = d.clone();
    other.meta_data = "instance-id: edge1-cp-0-ba9876543210\n".to_string();
    write_seed(&path, &other).unwrap();
    assert_eq!(read_seed(&path).unwrap(), other);
    let names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["seed.img"], "no temporary file left");
}

/// dosfstools finds nothing wrong and lists the three long names; blkid
/// (libblkid, what cloud-init's `blkid -tLABEL=CIDATA` uses) sees a vfat
/// filesystem labelled CIDATA.
#[test]
fn linux_tools_see_a_clean_cidata_volume() {
    let tmp = TempDir::new("seed-tools");
    let path = tmp.path().join("seed.img");
    write_seed(&path, &docs()).unwrap();
    let p = path.to_str().unwrap();
    if let Some(out) = tool("fsck.vfat", &["-n", "-v", "-l", p]) {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "fsck.vfat -n: {out:?}");
        assert!(
            !text.contains("differences") && !text.contains("Free cluster summary wrong"),
            "{text}"
        );
        for name in ["/meta-data", "/network-config", "/user-data"] {
            assert!(text.contains(name), "fsck.vfat -l lists {name}: {text}");
        }
    }
    if let Some(out) = tool("blkid", &["-p", "-o", "export", p]) {
        assert!(out.status.success(), "blkid -p: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.lines().any(|l| l == "LABEL=CIDATA"), "{text}");
        assert!(text.lines().any(|l| l == "TYPE=vfat"), "{text}");
        assert!(text.lines().any(|l| l == "VERSION=FAT12"), "{text}");
    }
    if let Some(out) = tool(
        "blkid",
        &["-c", "/dev/null", "-t", "LABEL=CIDATA", "-o", "device", p],
    ) {
        assert!(out.status.success(), "blkid -t LABEL=CIDATA: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), p);
    }
}

#[test]
fn a_file_that_is_not_a_seed_is_named_in_the_error() {
    let tmp = TempDir::new("seed-bad");
    let path = tmp.path().join("seed.img");
    let e = read_seed(&path).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(e.to_string().contains("seed.img"), "{e}");
    fs::write(&path, vec![0u8; 4096]).unwrap();
    let e = read_seed(&path).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("seed {}", path.display())),
        "{e}"
    );
    // A FAT volume with another label.
    let mut image = Cursor::new(vec![0u8; SEED_SIZE as usize]);
    fatfs::format_volume(
        &mut image,
        fatfs::FormatVolumeOptions::new().volume_label(*b"OTHER      "),
    )
    .unwrap();
    fs::write(&path, image.into_inner()).unwrap();
    let e = read_seed(&path).unwrap_err();
    assert!(e.to_string().contains("not CIDATA"), "{e}");
    let e = write_seed(&tmp.path().join("missing-dir/seed.img"), &docs()).unwrap_err();
    assert!(e.to_string().contains("missing-dir/seed.img"), "{e}");
}
