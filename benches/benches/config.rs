//! `VmConfig::validate`, run once per VM before anything is built. It opens
//! the kernel (and initrd) to check they are readable files, so it costs a
//! few syscalls; this keeps an eye on it staying that cheap.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use vmm_core::VmConfig;

/// A small file standing in for a kernel image; removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("mercury-bench-{}-{name}", std::process::id()));
        std::fs::write(&path, [0u8; 4096]).expect("write temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn bench_validate(c: &mut Criterion) {
    let kernel = TempFile::new("vmlinux");
    let initrd = TempFile::new("initrd");

    let plain = VmConfig::new(&kernel.0);
    c.bench_function("vm_config/validate", |b| {
        b.iter(|| black_box(&plain).validate())
    });

    let mut full = VmConfig::new(&kernel.0);
    full.initrd = Some(initrd.0.clone());
    full.vcpus = 4;
    full.memory_mib = 4096;
    full.cmdline = format!("{} {}", vmm_core::DEFAULT_CMDLINE, "x=1 ".repeat(200));
    c.bench_function("vm_config/validate_with_initrd_long_cmdline", |b| {
        b.iter(|| black_box(&full).validate())
    });

    let missing = VmConfig::new("/nonexistent/vmlinux");
    c.bench_function("vm_config/validate_missing_kernel", |b| {
        b.iter(|| black_box(&missing).validate().is_err())
    });
}

criterion_group!(benches, bench_validate);
criterion_main!(benches);
