//! The aarch64 checks named by `checks=a,b,c`, with the x86 guest's line
//! protocol: one `CHECK <name> PASS|FAIL <detail>` line each, a PASS only on
//! what the guest observed (a value read back from the VMM's device, or the
//! platform in the FDT compared with what the command line announced).

use core::arch::asm;
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use super::fdt::{self, Fdt, Node};
use super::psci::{self, Conduit};
use super::uart::{self, println, Bytes, Kind};
use super::{Boot, MAX_CPUS};

/// `timer`: the FDT node of the VMM's boot timer, and the address used
/// without one: Firecracker's aarch64 boot timer, at the start of its MMIO
/// space (1 GiB). Never used when that address is RAM (QEMU's `virt`).
const BOOT_TIMER_COMPATIBLE: &[u8] = b"mercury,boot-timer";
const BOOT_TIMER_DEFAULT: u64 = 0x4000_0000;
const BOOT_TIMER_MAGIC: u8 = 123;
/// `serial` (16550): scratch patterns, loopback token and bits, as on x86.
const SCRATCH_PATTERNS: [u8; 2] = [0x5a, 0xa5];
const LOOPBACK_TOKEN: &[u8] = b"mercury";
const MCR_LOOPBACK: u8 = 1 << 4;
const LSR_DATA_READY: u8 = 1 << 0;
const LSR_TX_IDLE: u8 = (1 << 5) | (1 << 6);
const RX_DRAIN_LIMIT: usize = 256;
/// `serial` (PL011): the identification registers' expected values.
const PL011_PART: u32 = 0x011;
const PRIMECELL_ID: u32 = 0xb105_f00d;
/// `smp`: how long the boot CPU waits for the others, in µs.
const SMP_WAIT_US: u64 = 3_000_000;
/// `poweroff`: how long the VM may survive SYSTEM_OFF before FAIL, in µs.
const SURVIVE_US: u64 = 5_000_000;
/// `heartbeat`: interval between lines, in µs.
const HEARTBEAT_US: u64 = 200_000;
/// MPIDR_EL1's affinity fields (Aff3, Aff2..Aff0), as the FDT's cpu `reg`.
const MPIDR_AFFINITY: u64 = 0xff_00ff_ffff;
/// A secondary's check-in word: its MPIDR affinity with this bit set.
const CHECKED_IN: u64 = 1 << 63;

/// What each secondary CPU reported (`CHECKED_IN | MPIDR`), by index.
static mut CHECKIN: [u64; MAX_CPUS] = [0; MAX_CPUS];

/// Runs every requested check in order.
pub fn run_all(boot: &Boot) {
    for name in crate::cmdline::requested(boot.cmdline) {
        match name {
            b"serial" => serial(),
            b"memory" => memory(boot),
            b"cpu" => cpu(boot),
            b"smp" => smp(boot),
            b"timer" => timer(boot),
            b"compute" => compute(),
            b"poweroff" => poweroff(boot.conduit),
            b"heartbeat" => heartbeat(),
            b"halt" => loop {
                // SAFETY: waits for an event; no memory is touched.
                unsafe { asm!("wfi", options(nomem, nostack)) }
            },
            other => println!("CHECK {} FAIL unknown-check", Bytes(other)),
        }
    }
}

/// The generic timer's frequency (Hz) and virtual count.
fn counter() -> (u64, u64) {
    let (freq, count): (u64, u64);
    // SAFETY: reading CNTFRQ_EL0 and CNTVCT_EL0 has no side effects; EL1
    // may read them (the VMM cannot trap CNTFRQ).
    unsafe {
        asm!("mrs {}, cntfrq_el0", out(reg) freq, options(nomem, nostack));
        asm!("isb; mrs {}, cntvct_el0", out(reg) count, options(nomem, nostack));
    }
    (freq.max(1), count)
}

/// Microseconds of counter time since an arbitrary origin.
fn now_us() -> u64 {
    let (freq, count) = counter();
    ((u128::from(count) * 1_000_000) / u128::from(freq)) as u64
}

/// This CPU's MPIDR_EL1 affinity.
pub fn mpidr() -> u64 {
    let value: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) value, options(nomem, nostack)) };
    value & MPIDR_AFFINITY
}

/// The exception level the guest runs at.
fn current_el() -> u64 {
    let value: u64;
    // SAFETY: reading CurrentEL has no side effects.
    unsafe { asm!("mrs {}, currentel", out(reg) value, options(nomem, nostack)) };
    (value >> 2) & 3
}

/// `serial`: a 16550 as on x86 (scratch register, loopback); a PL011 by
/// its identification registers.
fn serial() {
    let Some(uart) = uart::console() else {
        // Nobody can read this, but the VMM's MMIO log may.
        return;
    };
    match uart.kind {
        Kind::Pl011 => {
            let id = |first: usize| {
                (0..4).fold(0u32, |acc, i| {
                    acc | (uart.read32(first + i * 4) & 0xff) << (8 * i)
                })
            };
            let (periph, cell) = (id(uart::PL011_PERIPH_ID0), id(uart::PL011_CELL_ID0));
            let ok = periph & 0xfff == PL011_PART && cell == PRIMECELL_ID;
            println!(
                "CHECK serial {} uart=pl011 base={:#x} periph_id={periph:#010x} cell_id={cell:#010x}",
                verdict(ok),
                uart.base
            );
        }
        Kind::Ns16550 => {
            let mut scratch = [0u8; 2];
            for (i, &pattern) in SCRATCH_PATTERNS.iter().enumerate() {
                uart.write(uart::UART_SCR, pattern);
                scratch[i] = uart.read(uart::UART_SCR);
            }
            let lsr = uart.read(uart::UART_LSR);
            let mcr = uart.read(uart::UART_MCR);
            uart.write(uart::UART_MCR, mcr | MCR_LOOPBACK);
            let mut discarded = 0;
            while uart.read(uart::UART_LSR) & LSR_DATA_READY != 0 && discarded < RX_DRAIN_LIMIT {
                uart.read(uart::UART_THR);
                discarded += 1;
            }
            for &b in LOOPBACK_TOKEN {
                uart.write(uart::UART_THR, b);
            }
            let mut back = [0u8; RX_DRAIN_LIMIT];
            let mut n = 0;
            while uart.read(uart::UART_LSR) & LSR_DATA_READY != 0 && n < RX_DRAIN_LIMIT {
                back[n] = uart.read(uart::UART_THR);
                n += 1;
            }
            uart.write(uart::UART_MCR, mcr);
            let ok = scratch == SCRATCH_PATTERNS
                && lsr & LSR_TX_IDLE == LSR_TX_IDLE
                && &back[..n] == LOOPBACK_TOKEN;
            println!(
                "CHECK serial {} uart=ns16550 base={:#x} scratch={:02x},{:02x} lsr={lsr:#04x} loopback={} loopback_bytes={n} rx_discarded={discarded}",
                verdict(ok),
                uart.base,
                scratch[0],
                scratch[1],
                Bytes(&back[..n])
            );
        }
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

/// The RAM ranges of the FDT's `memory` nodes, passed to `visit` in order.
fn for_each_ram(fdt: &Fdt, mut visit: impl FnMut(u64, u64)) {
    let Some(root) = fdt.root() else { return };
    fdt.children(root, |node| {
        let name = fdt.name(node);
        let is_memory = fdt.prop(node, b"device_type").map(fdt::text) == Some(b"memory")
            || name == b"memory"
            || name.starts_with(b"memory@");
        if is_memory {
            for i in 0..fdt.reg_count(node) {
                if let Some((base, size)) = fdt.reg(node, i) {
                    visit(base, size);
                }
            }
        }
        false
    });
}

/// `memory`: the FDT's RAM, in MiB, against `expect_mib=`.
fn memory(boot: &Boot) {
    let (mut total, mut ranges, mut first) = (0u64, 0u32, None);
    for_each_ram(&boot.fdt, |base, size| {
        total = total.saturating_add(size);
        ranges += 1;
        first.get_or_insert(base);
    });
    let mib = (total + (1 << 19)) >> 20;
    let expect = crate::cmdline::expect_mib(boot.cmdline);
    let base = first.unwrap_or(0);
    if ranges == 0 {
        let expect = expect.map_or(&b"none"[..], |e| e);
        println!(
            "CHECK memory FAIL no-memory-node expect_mib={}",
            Bytes(expect)
        );
        return;
    }
    match expect {
        None => println!(
            "CHECK memory FAIL mib={mib} expect_mib=none reason=no-expected-size-announced"
        ),
        Some(word) => match parse_u64(word) {
            Some(want) if want == mib => {
                println!("CHECK memory PASS mib={mib} expect_mib={want} base={base:#x} ranges={ranges}")
            }
            Some(want) => println!(
                "CHECK memory FAIL mib={mib} expect_mib={want} base={base:#x} ranges={ranges} reason=mismatch"
            ),
            None => println!(
                "CHECK memory FAIL mib={mib} expect_mib={} reason=bad-expect_mib",
                Bytes(word)
            ),
        },
    }
}

fn parse_u64(word: &[u8]) -> Option<u64> {
    if word.is_empty() || word.len() > 19 {
        return None;
    }
    word.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// The FDT's CPUs (`/cpus/cpu@*` with `device_type = "cpu"`): their `reg`
/// (MPIDR affinity), at most [`MAX_CPUS`], and how many there are in all.
fn fdt_cpus(fdt: &Fdt) -> ([u64; MAX_CPUS], usize, usize) {
    let mut regs = [0u64; MAX_CPUS];
    let (mut kept, mut all) = (0, 0);
    let cpus = fdt.root().and_then(|root| fdt.child(root, b"cpus"));
    if let Some(cpus) = cpus {
        fdt.children(cpus, |node: Node| {
            if fdt.prop(node, b"device_type").map(fdt::text) == Some(b"cpu") {
                if let Some((reg, _)) = fdt.reg(node, 0) {
                    if kept < MAX_CPUS {
                        regs[kept] = reg & MPIDR_AFFINITY;
                        kept += 1;
                    }
                    all += 1;
                }
            }
            false
        });
    }
    (regs, kept, all)
}

/// `cpu`: the boot CPU's MPIDR is one of the FDT's CPUs; reports the
/// exception level, the PSCI conduit and PSCI version.
fn cpu(boot: &Boot) {
    let me = mpidr();
    let (regs, kept, all) = fdt_cpus(&boot.fdt);
    let listed = regs[..kept].contains(&me);
    let version = boot.conduit.call(psci::PSCI_VERSION, 0, 0, 0);
    let (major, minor) = ((version >> 16) & 0x7fff, version & 0xffff);
    let ok = listed && version >= 0x2; // PSCI 0.2 or later
    println!(
        "CHECK cpu {} mpidr={me:#x} fdt_cpus={all} in_fdt={} el={} psci={} psci_version={major}.{minor}",
        verdict(ok),
        u8::from(listed),
        current_el(),
        boot.conduit.name()
    );
}

/// Called on each secondary CPU (index 1..) by its entry stub.
pub fn secondary_checkin(index: usize, conduit: Conduit) -> ! {
    if index < MAX_CPUS {
        // SAFETY: each secondary writes only its own slot; the boot CPU
        // reads it with volatile loads. With the MMU off the accesses are
        // Device memory, ordered and uncached, so no atomics are needed.
        unsafe {
            write_volatile(addr_of_mut!(CHECKIN[index]), CHECKED_IN | mpidr());
            asm!("dsb sy", options(nostack));
        }
    }
    conduit.call(psci::CPU_OFF, 0, 0, 0);
    loop {
        // SAFETY: waits for an event; no memory is touched.
        unsafe { asm!("wfe", options(nomem, nostack)) }
    }
}

/// `smp`: PSCI CPU_ON for every FDT CPU but the boot CPU; each checks in
/// with its MPIDR and turns itself off (CPU_OFF).
fn smp(boot: &Boot) {
    let me = mpidr();
    let (regs, kept, all) = fdt_cpus(&boot.fdt);
    if kept == 0 {
        println!("CHECK smp FAIL no-cpus-in-fdt");
        return;
    }
    let entry = super::entry::secondary_entry as *const () as usize as u64;
    let mut started = [0i64; MAX_CPUS];
    let slots = addr_of_mut!(CHECKIN).cast::<u64>();
    for index in 0..MAX_CPUS {
        // SAFETY: `index` is within CHECKIN; the slots are reset before
        // any secondary is started, so nothing else writes them now.
        unsafe { write_volatile(slots.add(index), 0) };
    }
    let deadline = now_us() + SMP_WAIT_US;
    for (index, &reg) in regs[..kept].iter().enumerate() {
        if reg != me {
            // A CPU from an earlier `smp` may still be on its way off.
            while boot.conduit.call(psci::AFFINITY_INFO_64, reg, 0, 0) != psci::AFFINITY_OFF
                && now_us() < deadline
            {
                core::hint::spin_loop();
            }
            started[index] = boot.conduit.call(psci::CPU_ON_64, reg, entry, index as u64);
        }
    }
    let arrived = |index: usize| {
        // SAFETY: a volatile read of a slot the secondary writes.
        unsafe { read_volatile(addr_of!(CHECKIN[index])) }
    };
    let pending = || {
        regs[..kept]
            .iter()
            .enumerate()
            .any(|(i, &reg)| reg != me && started[i] == 0 && arrived(i) & CHECKED_IN == 0)
    };
    while pending() && now_us() < deadline {
        core::hint::spin_loop();
    }
    let mut seen = [0u64; MAX_CPUS];
    let mut cpus = 0;
    let mut mismatch = None;
    for (index, &reg) in regs[..kept].iter().enumerate() {
        let found = if reg == me {
            Some(me)
        } else {
            let word = arrived(index);
            (word & CHECKED_IN != 0).then_some(word & MPIDR_AFFINITY)
        };
        if let Some(mpidr) = found {
            if mpidr != reg {
                mismatch.get_or_insert((reg, mpidr));
            }
            seen[cpus] = mpidr;
            cpus += 1;
        }
    }
    let failed_on = regs[..kept]
        .iter()
        .zip(started)
        .find(|&(&reg, ret)| reg != me && ret != 0);
    let ok = cpus == all && mismatch.is_none() && failed_on.is_none() && regs[..kept].contains(&me);
    let mut line = Line::new();
    for (i, m) in seen[..cpus].iter().enumerate() {
        line.push_hex(*m, i > 0);
    }
    let reason = match (failed_on, mismatch, regs[..kept].contains(&me)) {
        (_, _, false) => " reason=boot-cpu-not-in-fdt",
        (Some(_), _, _) => " reason=cpu-on-failed",
        (None, Some(_), _) => " reason=mpidr-mismatch",
        (None, None, true) if !ok => " reason=timeout",
        _ => "",
    };
    let psci_ret = failed_on.map_or(0, |(_, ret)| ret);
    println!(
        "CHECK smp {} cpus={cpus} expected={all} mpidrs={} psci={}{reason}{}",
        verdict(ok),
        line.as_str(),
        boot.conduit.name(),
        PsciRet(psci_ret)
    );
}

/// ` cpu_on_ret=<n>` when a CPU_ON failed.
struct PsciRet(i64);

impl core::fmt::Display for PsciRet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0 != 0 {
            write!(f, " cpu_on_ret={}", self.0)
        } else {
            Ok(())
        }
    }
}

/// A small fixed buffer for a comma-separated hex list.
struct Line {
    buf: [u8; 160],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line {
            buf: [0; 160],
            len: 0,
        }
    }

    fn push_hex(&mut self, value: u64, comma: bool) {
        let mut digits = [0u8; 18];
        let mut n = 0;
        let mut v = value;
        loop {
            digits[n] = b"0123456789abcdef"[(v & 0xf) as usize];
            n += 1;
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        let need = n + 2 + usize::from(comma);
        if self.len + need > self.buf.len() {
            return;
        }
        if comma {
            self.buf[self.len] = b',';
            self.len += 1;
        }
        self.buf[self.len..self.len + 2].copy_from_slice(b"0x");
        self.len += 2;
        for i in (0..n).rev() {
            self.buf[self.len] = digits[i];
            self.len += 1;
        }
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

/// `timer`: writes the magic byte to the VMM's boot timer and reads back the
/// boot time it recorded (8 bytes, µs). The timer's address comes from a
/// node compatible `mercury,boot-timer`, else [`BOOT_TIMER_DEFAULT`],
/// unless that is RAM.
fn timer(boot: &Boot) {
    let from_fdt = boot
        .fdt
        .find_compatible(BOOT_TIMER_COMPATIBLE)
        .and_then(|node| boot.fdt.reg(node, 0))
        .map(|(addr, _)| addr);
    let (addr, source) = match from_fdt {
        Some(addr) => (addr, "fdt"),
        None => (BOOT_TIMER_DEFAULT, "default"),
    };
    let mut in_ram = false;
    for_each_ram(&boot.fdt, |base, size| {
        in_ram |= addr >= base && addr - base < size;
    });
    if in_ram || !addr.is_multiple_of(8) {
        println!("CHECK timer FAIL at={addr:#x} from={source} reason=address-is-ram-or-unaligned");
        return;
    }
    // SAFETY: `addr` is the boot timer's MMIO register (from the FDT, or
    // the documented default), checked above not to be RAM: a store and an
    // 8-byte load there reach the VMM's device, not memory.
    let micros = unsafe {
        write_volatile(addr as *mut u8, BOOT_TIMER_MAGIC);
        read_volatile(addr as *const u64)
    };
    println!(
        "CHECK timer {} boot_timer_us={micros} at={addr:#x} from={source}",
        verdict(micros != 0)
    );
}

/// `compute`: the x86 guest's sieve and FNV-1a ([`crate::compute`]), plain
/// integer code.
fn compute() {
    let c = crate::compute::run();
    println!(
        "CHECK compute {} primes={} fnv1a={:016x}",
        verdict(c.ok()),
        c.primes,
        c.fnv1a
    );
}

/// `poweroff`: PSCI SYSTEM_OFF; the PASS line comes first, nothing after it
/// unless the VM survives (then a FAIL line, and the checks go on).
fn poweroff(conduit: Conduit) {
    println!(
        "CHECK poweroff PASS calling=SYSTEM_OFF function={:#x} via={}",
        psci::SYSTEM_OFF,
        conduit.name()
    );
    let ret = conduit.call(psci::SYSTEM_OFF, 0, 0, 0);
    let deadline = now_us() + SURVIVE_US;
    while now_us() < deadline {
        core::hint::spin_loop();
    }
    println!("CHECK poweroff FAIL still-running ret={ret}");
}

/// `heartbeat`: `HEARTBEAT <n>` about every 0.2 s, forever.
fn heartbeat() -> ! {
    let mut n = 0u64;
    loop {
        n += 1;
        println!("HEARTBEAT {n}");
        let next = now_us() + HEARTBEAT_US;
        while now_us() < next {
            core::hint::spin_loop();
        }
    }
}
