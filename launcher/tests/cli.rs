//! The `mercury` binary end to end: exit codes on real guests, and clear
//! errors for bad input.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use mercury_tests::{
    guest_image, output_after, output_within, wait_within, TempDir, CHILD_TIMEOUT,
};

mod common;
use common::mercury;

fn stderr(out: &Output) -> String {
    common::text(&out.stderr)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn guest_reset_exits_zero_and_serial_reaches_stdout() {
    let kernel = guest_image("test-guest");
    let out = mercury(&[
        "run",
        "--kernel",
        path_str(&kernel),
        "--cmdline",
        "checks=serial,timer",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        stderr(&out)
    );
    assert!(
        stdout.contains("CHECK serial PASS scratch=5a,a5 lsr=0x60 loopback=mercury "),
        "{stdout}"
    );
    // The boot timer is logged with its value, the one the guest read back.
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("boot_timer_us="))
        .expect("timings line");
    let logged = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("boot_timer_us="))
        .unwrap();
    assert!(logged.parse::<u64>().is_ok_and(|us| us > 0), "{line}");
    let guest_line = format!("CHECK timer PASS boot_timer_us={logged}");
    assert!(
        stdout.lines().any(|l| l == guest_line),
        "want {guest_line:?} in:\n{stdout}"
    );
}

#[test]
fn config_file_run_with_serial_to_file() {
    let dir = TempDir::new("cli-config");
    let serial = dir.path().join("console.log");
    let toml = dir.path().join("node.toml");
    std::fs::write(
        &toml,
        format!(
            "kernel = \"{}\"\nvcpus = 2\nmemory_mib = 64\ncmdline = \"checks=smp,memory expect_mib=64\"\nserial = \"{}\"\n",
            guest_image("test-guest").display(),
            serial.display()
        ),
    )
    .unwrap();
    let out = mercury(&["run", "--config", path_str(&toml)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let console = std::fs::read_to_string(&serial).unwrap();
    assert!(console.contains("CHECK smp PASS cpus=2"), "{console}");
    assert!(
        console.contains("CHECK memory PASS mib=64 expect_mib=64\n"),
        "{console}"
    );
    assert!(out.stdout.is_empty(), "serial went to the file, not stdout");
}

#[test]
fn triple_fault_exits_nonzero_with_reason() {
    let kernel = guest_image("test-guest");
    let out = mercury(&[
        "run",
        "--kernel",
        path_str(&kernel),
        "--cmdline",
        "checks=triple-fault",
        "--serial",
        "none",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    // The vCPU's state is logged: the empty IDT the guest loaded before its
    // ud2 (the cause of the triple fault), unless KVM re-initialised the
    // vCPU before reporting (AMD SVM), which the line must then say.
    let state = err
        .lines()
        .find_map(|l| {
            l.split_once("vCPU 0 shut down (triple fault): ")
                .map(|(_, s)| s)
        })
        .unwrap_or_else(|| panic!("no vCPU state line: {err}"));
    assert!(
        state.contains(" idt=0x0+0x0 ") || state.contains("state at the fault is lost"),
        "{state}"
    );
    assert!(
        err.contains("guest failed: vCPU 0 shut down (triple fault)"),
        "{err}"
    );
}

/// Runs the test guest's `check` (which ends the VM) followed by `serial`,
/// and asserts mercury's exit code, that the guest said nothing after the
/// check's PASS line (so `serial` never ran), and `stderr_says` on stderr.
fn assert_check_ends_vm(check: &str, code: i32, stderr_says: &str) {
    let kernel = guest_image("test-guest");
    let cmdline = format!("checks={check},serial");
    let out = mercury(&["run", "--kernel", path_str(&kernel), "--cmdline", &cmdline]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{err}"
    );
    let pass = format!("CHECK {check} PASS");
    assert_eq!(output_after(&stdout, &pass), Some(""), "{stdout}");
    assert!(err.contains(stderr_says), "{err}");
}

#[test]
fn acpi_poweroff_exits_zero() {
    assert_check_ends_vm("poweroff", 0, "powered off");
}

#[test]
fn pvpanic_exits_three_and_says_the_guest_panicked() {
    assert_check_ends_vm("pvpanic", 3, "guest kernel panicked");
}

/// Asserts exit code 1 and that stderr names `needle`.
fn assert_input_error(args: &[&str], needle: &str) {
    let out = mercury(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: stderr does not name {needle:?}: {err}"
    );
    assert!(
        out.stdout.is_empty(),
        "{args:?}: guest output on a bad input"
    );
}

#[test]
fn missing_kernel_is_named() {
    assert_input_error(
        &["run", "--kernel", "/nonexistent/vmlinux"],
        "/nonexistent/vmlinux",
    );
}

#[test]
fn unreadable_initrd_is_named() {
    let kernel = guest_image("test-guest");
    assert_input_error(
        &[
            "run",
            "--kernel",
            path_str(&kernel),
            "--initrd",
            "/nonexistent/initrd.img",
        ],
        "/nonexistent/initrd.img",
    );
}

#[test]
fn kernel_that_is_neither_elf_nor_bzimage_is_named() {
    let dir = TempDir::new("cli-garbage");
    let kernel = dir.path().join("not-a-kernel");
    std::fs::write(&kernel, vec![0x5au8; 64 * 1024]).unwrap();
    assert_input_error(&["run", "--kernel", path_str(&kernel)], path_str(&kernel));
}

#[test]
fn memory_too_small_for_kernel_and_initrd() {
    let dir = TempDir::new("cli-small");
    let initrd = dir.path().join("big-initrd");
    std::fs::write(&initrd, vec![0u8; 40 << 20]).unwrap();
    let kernel = guest_image("test-guest");
    assert_input_error(
        &[
            "run",
            "--kernel",
            path_str(&kernel),
            "--initrd",
            path_str(&initrd),
            "--memory",
            "32",
        ],
        path_str(&initrd),
    );
}

#[test]
fn vcpu_counts_out_of_range_are_named() {
    let kernel = guest_image("test-guest");
    for bad in ["0", "33", "4096"] {
        assert_input_error(
            &["run", "--kernel", path_str(&kernel), "--vcpus", bad],
            &format!("vcpus {bad}"),
        );
    }
}

#[test]
fn memory_out_of_range_is_named() {
    let kernel = guest_image("test-guest");
    assert_input_error(
        &["run", "--kernel", path_str(&kernel), "--memory", "1"],
        "memory 1 MiB",
    );
}

/// 1 TiB passes the range check but no test host has that much RAM and
/// swap: refused before anything is mapped, naming both sizes.
#[test]
fn memory_the_host_cannot_back_is_refused() {
    let kernel = guest_image("test-guest");
    assert_input_error(
        &["run", "--kernel", path_str(&kernel), "--memory", "1048576"],
        "memory 1048576 MiB is more than this host can back (",
    );
}

/// A kernel built for another machine is named as such.
#[test]
fn kernel_for_another_machine_is_named() {
    let dir = TempDir::new("cli-arm64");
    let kernel = dir.path().join("vmlinux-arm64");
    // The first bytes of an AArch64 ELF: magic, 64-bit, little-endian,
    // version 1, then e_type EXEC and e_machine 183.
    let mut header = vec![0u8; 64];
    header[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    header[16..20].copy_from_slice(&[2, 0, 183, 0]);
    std::fs::write(&kernel, header).unwrap();
    assert_input_error(
        &["run", "--kernel", path_str(&kernel)],
        "is an ELF for AArch64 (64-bit, little-endian), not an x86-64 kernel",
    );
}

#[test]
fn bad_config_file_is_named() {
    let dir = TempDir::new("cli-badtoml");
    let toml = dir.path().join("node.toml");
    std::fs::write(&toml, "kernel = \"/k\"\nmemroy_mib = 64\n").unwrap();
    assert_input_error(&["run", "--config", path_str(&toml)], "memroy_mib");
    assert_input_error(
        &["run", "--config", "/nonexistent/node.toml"],
        "/nonexistent/node.toml",
    );
}

#[test]
fn no_access_to_dev_kvm_is_reported() {
    // Run as an unprivileged user who may not open /dev/kvm (mode 0600
    // root) but may read the kernel, which we copy to a world-readable place.
    const NOBODY: u32 = 65534;
    let kvm_mode = std::fs::metadata("/dev/kvm")
        .expect("/dev/kvm: this suite runs on KVM")
        .permissions()
        .mode();
    assert_eq!(
        kvm_mode & 0o006,
        0,
        "/dev/kvm is open to every user (mode {kvm_mode:o}): no user lacks access to it here"
    );
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let dir = TempDir::new("cli-nokvm");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let kernel = dir.path().join("guest");
    std::fs::copy(guest_image("test-guest"), &kernel).unwrap();
    std::fs::set_permissions(&kernel, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut command = if euid == 0 {
        let mut setpriv = Command::new("setpriv");
        setpriv
            .arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .args(["--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_mercury"));
        setpriv
    } else {
        // Not root: this user must be one without access, or the test
        // cannot show anything.
        assert!(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_err(),
            "run this test as root (it drops privileges) or as a user who cannot open /dev/kvm"
        );
        Command::new(env!("CARGO_BIN_EXE_mercury"))
    };
    let out = output_within(
        command.args(["run", "--kernel", path_str(&kernel)]),
        CHILD_TIMEOUT,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot open /dev/kvm"), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
}

#[test]
fn command_line_too_long_is_reported_with_its_length() {
    let kernel = guest_image("test-guest");
    let long = "a".repeat(3000);
    assert_input_error(
        &["run", "--kernel", path_str(&kernel), "--cmdline", &long],
        "kernel command line is 3000 bytes",
    );
}

/// SIGTERM and SIGINT stop a running VM: exit status 4, the signal named on
/// stderr, and the exit line says the VM was stopped.
#[test]
fn termination_signals_stop_the_vm_with_exit_4() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let kernel = guest_image("test-guest");
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mercury"))
            .args([
                "run",
                "--kernel",
                path_str(&kernel),
                "--cmdline",
                "checks=serial,halt",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mercury");
        // Wait until the guest runs (it prints its check line, then halts).
        let (lines_tx, lines) = std::sync::mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = String::new();
        let deadline = std::time::Instant::now() + CHILD_TIMEOUT;
        while !seen.contains("CHECK serial") {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => seen.push_str(&(line + "\n")),
                Err(_) => {
                    let _ = child.kill();
                    let out = wait_within(child, CHILD_TIMEOUT, "mercury");
                    panic!(
                        "{name}: the guest never reported its serial check\nguest output:\n{seen}\nstderr:\n{}",
                        stderr(&out)
                    );
                }
            }
        }
        assert!(seen.contains("CHECK serial PASS"), "guest output:\n{seen}");
        // SAFETY: kill(2) on the PID of a child we have not reaped.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({name})");
        let out = wait_within(child, CHILD_TIMEOUT, "mercury after a stop signal");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "{name}: stderr:\n{err}");
        assert!(
            err.contains(&format!("received {name}")),
            "{name}: stderr:\n{err}"
        );
        assert!(
            err.contains("exit=\"stopped by the host"),
            "{name}: stderr:\n{err}"
        );
    }
}

/// Starts `mercury run` on the test guest with `checks`, its console in a
/// file in `dir`, and waits until that console holds `ready`.
fn spawn_until(
    dir: &TempDir,
    checks: &str,
    ready: &str,
) -> (std::process::Child, std::path::PathBuf) {
    use std::process::Stdio;
    let kernel = guest_image("test-guest");
    let console = dir.path().join("console.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mercury"))
        .args([
            "run",
            "--kernel",
            path_str(&kernel),
            "--serial",
            path_str(&console),
        ])
        .args(["--cmdline", &format!("console=ttyS0 checks={checks}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mercury");
    let deadline = std::time::Instant::now() + CHILD_TIMEOUT;
    while !std::fs::read_to_string(&console)
        .unwrap_or_default()
        .contains(ready)
    {
        let exited = child.try_wait().expect("try_wait").is_some();
        if exited || std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = wait_within(child, CHILD_TIMEOUT, "mercury");
            panic!(
                "the guest never printed {ready:?}\nconsole:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&console).unwrap_or_default(),
                stderr(&out)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (child, console)
}

fn send(child: &std::process::Child, signal: libc::c_int) {
    // SAFETY: kill(2) on the PID of a child we have not reaped.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({signal})");
}

/// SIGPWR presses the guest's power button: the test guest, polling the
/// GED's event register, sees the press and powers off; mercury exits 0
/// with the power-off as its exit reason.
#[test]
fn sigpwr_presses_the_power_button_and_the_guest_powers_off() {
    let dir = TempDir::new("cli-sigpwr");
    let (child, console) = spawn_until(
        &dir,
        "power-button,poweroff",
        "TEST-GUEST POWER-BUTTON WAITING",
    );
    send(&child, libc::SIGPWR);
    let out = wait_within(child, CHILD_TIMEOUT, "mercury after SIGPWR");
    let err = stderr(&out);
    let console = std::fs::read_to_string(console).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{err}\nconsole:\n{console}"
    );
    assert!(
        err.contains("received SIGPWR, pressed the guest's power button"),
        "stderr:\n{err}"
    );
    assert!(err.contains("exit=\"guest powered off\""), "stderr:\n{err}");
    assert!(
        console.contains("CHECK power-button PASS events=0x1"),
        "console:\n{console}"
    );
}

/// A guest that ignores its power button keeps running after SIGPWR (the
/// press is a request, not a stop): its heartbeats go on, mercury has not
/// exited, and a SIGTERM then stops it with exit 4.
#[test]
fn sigpwr_leaves_a_guest_that_ignores_the_button_running() {
    let dir = TempDir::new("cli-sigpwr-ignored");
    let (mut child, console) = spawn_until(&dir, "heartbeat", "HEARTBEAT 1");
    send(&child, libc::SIGPWR);
    let beats = |path: &Path| mercury_tests::heartbeats(path);
    let after_press = beats(&console);
    let deadline = std::time::Instant::now() + CHILD_TIMEOUT;
    while beats(&console) < after_press + 3 {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "mercury exited after SIGPWR though the guest ignores the button"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the guest stopped beating"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "mercury exited after SIGPWR"
    );
    send(&child, libc::SIGTERM);
    let out = wait_within(child, CHILD_TIMEOUT, "mercury after SIGTERM");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "stderr:\n{err}");
    assert!(err.contains("received SIGPWR, pressed"), "stderr:\n{err}");
    assert!(err.contains("exit=\"stopped by the host"), "stderr:\n{err}");
}

/// Device flags with bad values: each error names the value, exit 1.
#[test]
fn bad_device_values_are_named() {
    let kernel = guest_image("test-guest");
    let k = path_str(&kernel);
    let dir = TempDir::new("cli-devices");
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let d = path_str(&disk);
    let cases: [(&[&str], &str); 7] = [
        (
            &["--disk", "/nonexistent/root.ext4"],
            "cannot read disk /nonexistent/root.ext4",
        ),
        (&["--disk", "/tmp"], "disk /tmp is not a regular file"),
        (&["--disk", d, "--disk", d], "is given twice"),
        (
            &["--disk", "x.img,rw"],
            "--disk x.img,rw: unknown option `rw`",
        ),
        (
            &["--net", "tap=t0,mac=01:00:5e:00:00:01"],
            "invalid MAC address `01:00:5e:00:00:01`",
        ),
        (
            &["--net", "tap=a-name-far-too-long"],
            "invalid TAP name `a-name-far-too-long`",
        ),
        (
            &["--vsock", "cid=2,uds=/tmp/v.sock"],
            "vsock cid 2 is out of range",
        ),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["run", "--kernel", k];
        args.extend_from_slice(flags);
        assert_input_error(&args, needle);
    }
}

/// A vsock socket path another process listens on is refused, naming it,
/// and the other process's socket is left alone.
#[test]
fn vsock_socket_in_use_is_refused_and_left_alone() {
    let kernel = guest_image("test-guest");
    let dir = TempDir::new("cli-vsock-busy");
    let path = dir.path().join("v.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let spec = format!("cid=3,uds={}", path.display());
    assert_input_error(
        &["run", "--kernel", path_str(&kernel), "--vsock", &spec],
        &path.display().to_string(),
    );
    assert!(path.exists(), "mercury removed another process's socket");
}

/// When a later device fails, the TAP mercury already created for an
/// earlier one is gone when mercury exits: nothing is left half-created.
/// Runs in a private network namespace (unshare), where the test looks for
/// the TAP afterwards.
#[test]
fn a_failed_start_leaves_no_tap_behind() {
    let kernel = guest_image("test-guest");
    let dir = TempDir::new("cli-leftover");
    let path = dir.path().join("v.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let script = format!(
        "{mercury} run --kernel {kernel} --net tap=left0 --vsock cid=3,uds={sock}; \
         echo \"rc=$?\"; ip link show left0 >/dev/null 2>&1 && echo tap-left || echo tap-gone",
        mercury = env!("CARGO_BIN_EXE_mercury"),
        kernel = kernel.display(),
        sock = path.display(),
    );
    let out = output_within(
        Command::new("unshare").args(["--net", "sh", "-c", &script]),
        CHILD_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err = stderr(&out);
    assert!(stdout.contains("rc=1"), "stdout:\n{stdout}\nstderr:\n{err}");
    assert!(
        stdout.contains("tap-gone"),
        "stdout:\n{stdout}\nstderr:\n{err}"
    );
    assert!(err.contains("virtio-vsock"), "{err}");
}
