//! virtio-blk, virtio-net and virtio-vsock on real KVM with the test
//! guest's driver; each test asserts on what the host observed: the image
//! file's bytes after the VM ended, the frames on the TAP (inside a network
//! namespace the test creates), the bytes on the vsock Unix sockets.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use mercury_tests::netns::{self, PacketSocket};
use mercury_tests::{config_with_serial_file, detail_value, guest_image, TempDir, GUEST_TIMEOUT};
use vmm_core::{DiskConfig, NetConfig, Vm, VmConfig, VmExit, VsockConfig};

const SECTOR: usize = 512;

/// Byte `i` of sector `s` in the guest's write pattern (test guest,
/// virtio/blk.rs).
fn pattern(sector: u64, i: usize) -> u8 {
    ((sector as usize * 31 + i) % 256) as u8 ^ 0xa5
}

fn config(dir: &TempDir, cmdline: &str) -> VmConfig {
    let mut config = config_with_serial_file(&guest_image("test-guest"), dir);
    config.cmdline = cmdline.to_string();
    config
}

fn disk(path: &std::path::Path, read_only: bool, id: Option<&str>) -> DiskConfig {
    DiskConfig {
        path: path.to_path_buf(),
        read_only,
        id: id.map(Into::into),
    }
}

/// Boots, waits, returns the serial output and the exit.
fn run(config: VmConfig) -> (VmExit, String) {
    let run = mercury_tests::run_guest(config);
    (run.exit, run.serial)
}

fn check<'a>(serial: &'a str, name: &str) -> &'a str {
    let prefix = format!("CHECK {name} PASS");
    serial
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("check {name} did not pass:\n{serial}"))
}

#[test]
fn blk_writes_reach_the_image_file_and_read_back() {
    let dir = TempDir::new("virtio-blk");
    let image = dir.path().join("disk.img");
    let sectors = 2048u64; // 1 MiB
    std::fs::write(&image, vec![0u8; sectors as usize * SECTOR]).unwrap();
    let mut config = config(&dir, "checks=virtio-blk");
    config.disks = vec![disk(&image, false, Some("mercury-disk-0"))];
    let (exit, serial) = run(config);
    assert_eq!(exit, VmExit::Reset, "serial:\n{serial}");
    let detail = check(&serial, "virtio-blk");
    assert_eq!(detail_value(detail, "capacity"), Some("2048"), "{detail}");
    assert_eq!(
        detail_value(detail, "id"),
        Some("mercury-disk-0"),
        "{detail}"
    );
    assert_eq!(detail_value(detail, "flush"), Some("ok"), "{detail}");
    // What the guest wrote is in the file, exactly where it wrote it.
    let bytes = std::fs::read(&image).unwrap();
    for sector in [0, 1, sectors - 1] {
        let at = sector as usize * SECTOR;
        let expected: Vec<u8> = (0..SECTOR).map(|i| pattern(sector, i)).collect();
        assert_eq!(&bytes[at..at + SECTOR], &expected[..], "sector {sector}");
    }
    // And nothing else.
    assert!(
        bytes[2 * SECTOR..(sectors as usize - 1) * SECTOR]
            .iter()
            .all(|&b| b == 0),
        "bytes outside the written sectors changed"
    );
}

#[test]
fn a_read_only_disk_refuses_writes_and_keeps_its_bytes() {
    let dir = TempDir::new("virtio-blk-ro");
    let rw = dir.path().join("rw.img");
    let ro = dir.path().join("ro.img");
    std::fs::write(&rw, vec![0u8; 64 * SECTOR]).unwrap();
    let original: Vec<u8> = (0..64 * SECTOR).map(|i| (i % 251) as u8).collect();
    std::fs::write(&ro, &original).unwrap();
    let mut config = config(&dir, "checks=virtio-blk-ro,virtio-blk");
    config.disks = vec![disk(&rw, false, None), disk(&ro, true, None)];
    let (exit, serial) = run(config);
    assert_eq!(exit, VmExit::Reset, "serial:\n{serial}");
    let detail = check(&serial, "virtio-blk-ro");
    assert_eq!(detail_value(detail, "write_status"), Some("1"), "{detail}");
    assert_eq!(
        std::fs::read(&ro).unwrap(),
        original,
        "the read-only image changed"
    );
    // The writable disk beside it still works.
    check(&serial, "virtio-blk");
}

#[test]
fn a_locked_image_cannot_be_opened_by_a_second_vm() {
    let dir = TempDir::new("virtio-blk-lock");
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![0u8; 8 * SECTOR]).unwrap();
    let mut first = config(&dir, "checks=halt");
    first.disks = vec![disk(&image, false, None)];
    let second = first.clone();
    let vm = Vm::new(first).expect("first VM");
    let err = match Vm::new(second) {
        Ok(_) => panic!("a second VM opened a locked image"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&image.display().to_string()), "{err}");
    drop(vm);
}

/// The guest sends a frame; the host sees it on the TAP and answers with
/// one the guest must receive.
#[test]
fn net_frames_cross_the_tap_both_ways() {
    let handle = std::thread::spawn(|| {
        netns::enter_new_netns().expect("a private network namespace (run as root)");
        let dir = TempDir::new("virtio-net");
        let tap = "mtap0";
        let mut config = config(&dir, "checks=virtio-net");
        config.nets = vec![NetConfig {
            tap: tap.into(),
            mac: Some("52:54:00:aa:bb:01".into()),
        }];
        let mut vm = Vm::new(config).expect("build VM");
        netns::ip(&["link", "set", tap, "up"]).unwrap();
        let socket = PacketSocket::bind(tap).unwrap();
        vm.start().unwrap();
        let serial_path = dir.path().join("serial.log");
        let mut guest_frame = None;
        for _ in 0..60 {
            match socket.recv(Duration::from_secs(1)).unwrap() {
                Some(frame) if frame.len() >= 14 && frame[12..14] == [0x88, 0xb5] => {
                    guest_frame = Some(frame);
                    break;
                }
                _ => {}
            }
        }
        let frame = guest_frame.unwrap_or_else(|| {
            panic!(
                "no frame from the guest on {tap}; serial:\n{}",
                std::fs::read_to_string(&serial_path).unwrap_or_default()
            )
        });
        assert_eq!(&frame[0..6], &[0xff; 6], "destination");
        assert_eq!(
            &frame[6..12],
            &[0x52, 0x54, 0x00, 0xaa, 0xbb, 0x01],
            "source = the configured MAC"
        );
        assert_eq!(&frame[14..14 + 21], b"mercury-test-guest tx");
        let mut reply = Vec::new();
        reply.extend_from_slice(&frame[6..12]);
        reply.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        reply.extend_from_slice(&[0x88, 0xb5]);
        reply.extend_from_slice(b"mercury-host rx 4242");
        reply.resize(60, 0);
        socket.send(&reply).unwrap();
        let exit = vm.wait_timeout(GUEST_TIMEOUT);
        let serial = std::fs::read_to_string(&serial_path).unwrap_or_default();
        assert_eq!(exit, Some(VmExit::Reset), "serial:\n{serial}");
        let detail = check(&serial, "virtio-net").to_string();
        assert_eq!(
            detail_value(&detail, "mac"),
            Some("52:54:00:aa:bb:01"),
            "{detail}"
        );
        assert!(
            detail.contains("rx_payload=mercury-host rx 4242"),
            "{detail}"
        );
        drop(vm);
        // mercury created the TAP; it is gone with the VM.
        assert!(!netns::link_exists(tap), "the TAP outlived the VM");
    });
    handle.join().expect("net test thread");
}

/// The guest connects to host port 52: mercury connects to `<uds>_52`,
/// where the test listens; a message goes each way.
#[test]
fn vsock_guest_to_host_connection_carries_bytes_both_ways() {
    let dir = TempDir::new("virtio-vsock");
    let uds = dir.path().join("v.sock");
    let port_path = vmm_core::vsock_port_path(&uds, 52);
    let listener = UnixListener::bind(&port_path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("mercury connects for the guest");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut got = [0u8; 23];
        stream.read_exact(&mut got).unwrap();
        stream.write_all(b"mercury-host pong reply").unwrap();
        got
    });
    let mut config = config(&dir, "vsock_port=52 checks=virtio-vsock");
    config.vsock = Some(VsockConfig {
        cid: 42,
        uds: uds.clone(),
    });
    let (exit, serial) = run(config);
    assert_eq!(exit, VmExit::Reset, "serial:\n{serial}");
    let detail = check(&serial, "virtio-vsock");
    assert_eq!(detail_value(detail, "cid"), Some("42"), "{detail}");
    assert!(detail.contains("reply=mercury-host pong reply"), "{detail}");
    assert_eq!(&server.join().unwrap(), b"mercury-test-guest ping");
    assert!(!uds.exists(), "the vsock socket outlived the VM");
}
