//! Hot paths of the legacy devices, called as the vCPU's PIO/MMIO exit
//! handling calls them: through `BusDevice::read`/`write`.
//!
//! Every guest console byte is an exit: the Linux 8250 console driver reads
//! LSR until THR is empty, then writes THR, so a byte costs one LSR read and
//! one THR write on the bus (two exits on KVM). These benches measure the
//! device side only, not the exits.

use std::hint::black_box;
use std::io;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use devices::legacy::{BootTimer, Serial, BOOT_TIMER_MAGIC, I8042};
use devices::BusDevice;

/// UART register offsets (8250).
const THR: u64 = 0;
const IER: u64 = 1;
const IIR: u64 = 2;
const LSR: u64 = 5;
/// IER bit: interrupt when the transmit holding register is empty.
const IER_THRE: u8 = 0x02;
/// i8042 command/status port offset from the data port.
const I8042_STATUS: u64 = 4;

fn serial(thre_interrupt: bool) -> Serial {
    let mut serial = Serial::new(Box::new(io::sink())).expect("serial");
    if thre_interrupt {
        serial.write(IER, &[IER_THRE]);
    }
    serial
}

fn bench_serial(c: &mut Criterion) {
    let mut group = c.benchmark_group("serial");
    group.throughput(Throughput::Bytes(1));

    let mut quiet = serial(false);
    group.bench_function("thr_write", |b| {
        b.iter(|| quiet.write(black_box(THR), black_box(b"x")))
    });

    // Interrupt-driven output: with the THRE interrupt on, a THR write
    // raises the interrupt (one write(2) on the irq eventfd) unless it is
    // still pending; the guest's handler reads IIR, which acknowledges it.
    let mut driven = serial(true);
    group.bench_function("thr_write_iir_read_thre_irq", |b| {
        let mut iir = [0u8];
        b.iter(|| {
            driven.write(black_box(THR), black_box(b"x"));
            driven.read(black_box(IIR), &mut iir);
            black_box(iir[0])
        })
    });

    let mut polled = serial(false);
    group.bench_function("lsr_read", |b| {
        let mut data = [0u8];
        b.iter(|| {
            polled.read(black_box(LSR), &mut data);
            black_box(data[0])
        })
    });

    // One console byte as Linux's 8250 console writes it.
    let mut console = serial(false);
    group.bench_function("console_byte_lsr_then_thr", |b| {
        let mut lsr = [0u8];
        b.iter(|| {
            console.read(LSR, &mut lsr);
            console.write(THR, black_box(b"x"));
        })
    });

    // A malformed access (two bytes wide) a guest might hammer: ignored and
    // rate-limit logged.
    let mut ignored = serial(false);
    group.bench_function("ignored_wide_write", |b| {
        b.iter(|| ignored.write(black_box(THR), black_box(b"xy")))
    });
    group.finish();
}

fn bench_boot_timer(c: &mut Criterion) {
    let mut group = c.benchmark_group("boot_timer");
    group.bench_function("first_magic_write", |b| {
        b.iter_batched(
            || BootTimer::new(Instant::now()),
            |mut timer| {
                timer.write(0, black_box(&[BOOT_TIMER_MAGIC]));
                timer
            },
            BatchSize::SmallInput,
        )
    });
    let mut timer = BootTimer::new(Instant::now());
    timer.write(0, &[BOOT_TIMER_MAGIC]);
    group.bench_function("later_magic_write", |b| {
        b.iter(|| timer.write(black_box(0), black_box(&[BOOT_TIMER_MAGIC])))
    });
    let mut other = BootTimer::new(Instant::now());
    group.bench_function("ignored_write", |b| {
        b.iter(|| other.write(black_box(0), black_box(&[0u8])))
    });
    group.finish();
}

fn bench_i8042(c: &mut Criterion) {
    let mut i8042 = I8042::new().expect("i8042");
    c.bench_function("i8042/status_read", |b| {
        let mut data = [0u8];
        b.iter(|| {
            i8042.read(black_box(I8042_STATUS), &mut data);
            black_box(data[0])
        })
    });
}

criterion_group!(benches, bench_serial, bench_boot_timer, bench_i8042);
criterion_main!(benches);
