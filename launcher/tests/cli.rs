//! The `mercury` binary end to end: exit codes on real guests, and clear
//! errors for bad input.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use mercury_tests::{guest_image, output_after, TempDir};

fn mercury(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mercury"))
        .args(args)
        .output()
        .expect("run mercury")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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
    assert!(stdout.contains("CHECK serial PASS"), "{stdout}");
    // The boot timer is logged with its value.
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("boot_timer_us="))
        .expect("timings line");
    assert!(!line.contains("boot_timer_us=none"), "{line}");
}

#[test]
fn config_file_run_with_serial_to_file() {
    let dir = TempDir::new("cli-config");
    let serial = dir.path().join("console.log");
    let toml = dir.path().join("node.toml");
    std::fs::write(
        &toml,
        format!(
            "kernel = \"{}\"\nvcpus = 2\nmemory_mib = 64\ncmdline = \"checks=smp,memory\"\nserial = \"{}\"\n",
            guest_image("test-guest").display(),
            serial.display()
        ),
    )
    .unwrap();
    let out = mercury(&["run", "--config", path_str(&toml)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let console = std::fs::read_to_string(&serial).unwrap();
    assert!(console.contains("CHECK smp PASS cpus=2"), "{console}");
    assert!(console.contains("CHECK memory PASS mib=64"), "{console}");
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
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // As non-root, /dev/kvm access is the environment's: covered when
        // the suite runs as root, as CI does.
        eprintln!("skipping: needs root to drop privileges");
        return;
    }
    let dir = TempDir::new("cli-nokvm");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let kernel = dir.path().join("guest");
    std::fs::copy(guest_image("test-guest"), &kernel).unwrap();
    std::fs::set_permissions(&kernel, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_mercury"))
        .args(["run", "--kernel", path_str(&kernel)])
        .output()
        .expect("run setpriv");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/dev/kvm"), "{err}");
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
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut seen = String::new();
        let mut line = String::new();
        while stdout.read_line(&mut line).expect("read guest output") > 0 {
            seen.push_str(&line);
            if line.starts_with("CHECK serial") {
                break;
            }
            line.clear();
        }
        assert!(seen.contains("CHECK serial PASS"), "guest output:\n{seen}");
        // SAFETY: kill(2) on the PID of a child we have not reaped.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({name})");
        let out = child.wait_with_output().expect("wait for mercury");
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
