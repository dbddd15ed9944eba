//! Per-boot evidence that the environment (L0's emulated SVM, L1's kernel),
//! not the VMM under test, failed a guest boot.
//!
//! Every `rig_vm` call is one numbered boot on L1's console: `RIG-BOOT n=N
//! vmm=NAME label=LABEL of=TOTAL` opens its span, and what the scenario
//! prints until the next `RIG-BOOT` (or `RIG-BOOTS-DONE`,
//! `RIG-SCENARIO-END`) belongs to it: `RIG-BOOT-END n=N rc=RC`, verdicts,
//! `RIG-BOOT-FAILED n=N ...`, the guest console, the VMM's stderr and L1's
//! KVM trace that `rig_show_kvm_trace` printed for it (the trace is cleared
//! before each boot). A failed boot is explained by the environment only by
//! a [`Sign`] in its own span that is proof ([`Sign::is_proof`]), never by
//! something elsewhere on the console.

use std::fmt;

/// One boot on L1's console and what its span says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Boot {
    pub n: u32,
    /// The VMM's command name (`mercury`, `control-vmm`).
    pub vmm: String,
    /// The scenario's label (`bzimage`, `vmlinux-smp2`, ...).
    pub label: String,
    /// `RIG-BOOT-END` seen (absent: L1 stopped while the boot ran).
    pub ended: bool,
    pub rc: Option<i32>,
    /// Why it failed: `RIG-BOOT-FAILED` details and FAIL verdicts in its span.
    pub failures: Vec<String>,
    /// Environment signs in its span.
    pub signs: Vec<Sign>,
}

impl Boot {
    pub fn failed(&self) -> bool {
        !self.failures.is_empty() || !self.ended
    }

    /// The first sign that proves the environment failed this boot.
    pub fn proof(&self) -> Option<&Sign> {
        self.signs.iter().find(|s| s.is_proof())
    }
}

/// Evidence of the environment failing, as found in one boot's span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sign {
    /// L1's own kernel reported failing (oops, BUG, panic): the console line.
    L1Kernel(String),
    /// A guest vCPU exited at an address inside one of L1's modules: the
    /// guest kernel has no modules, so L0 resumed it at an address of L1's.
    ExitInL1Module(String),
    /// A guest vCPU shut down delivering a #PF whose error code no x86 CPU
    /// produces: the reserved-bit flag without the present flag (a
    /// reserved bit can only be found in a present entry). The fault was
    /// made up on the way (L0's emulated SVM, or L1's KVM walking the
    /// guest's page tables to emulate an instruction), not by the guest's
    /// page tables, however wrong.
    ImpossibleFault(String),
    /// A guest vCPU shut down delivering a not-present instruction-fetch #PF
    /// in its kernel half. Seen when L0 derailed a guest, but a wrong memory
    /// map in the VMM looks the same: a hint, not proof.
    FetchFaultShutdown(String),
    /// The same, on a code page the same vCPU was executing moments before:
    /// an earlier exit in this boot's trace has its RIP on that page. A
    /// wrong memory map is wrong from the first access, so the page could
    /// not have run before; and the guest does not unmap the kernel text it
    /// is running. Its translation was lost under it, by the emulated host:
    /// proof (docs/RIG.md, "Reruns").
    FetchFaultOnRunningPage(String),
}

impl Sign {
    /// Whether this sign alone shows that the environment, not the VMM, failed.
    pub fn is_proof(&self) -> bool {
        !matches!(self, Sign::FetchFaultShutdown(_))
    }
}

/// The 4 KiB page of an address.
fn page(addr: u64) -> u64 {
    addr >> 12
}

impl fmt::Display for Sign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sign::L1Kernel(line) => write!(f, "L1's own kernel failed: {line}"),
            Sign::ExitInL1Module(what)
            | Sign::ImpossibleFault(what)
            | Sign::FetchFaultShutdown(what)
            | Sign::FetchFaultOnRunningPage(what) => f.write_str(what),
        }
    }
}

/// A console line without the rig's echo prefix.
fn bare(line: &str) -> &str {
    line.strip_prefix("L1| ").unwrap_or(line)
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// The boots on `console` (an L1 console log), in order, with their spans
/// classified.
pub fn boots(console: &str) -> Vec<Boot> {
    let mut boots: Vec<Boot> = Vec::new();
    let mut spans: Vec<Vec<&str>> = Vec::new();
    let mut open = false;
    for raw in console.lines() {
        let line = bare(raw);
        let marker = line.trim_start();
        if let Some(rest) = marker.strip_prefix("RIG-BOOT ") {
            boots.push(Boot {
                n: field(rest, "n").and_then(|v| v.parse().ok()).unwrap_or(0),
                vmm: field(rest, "vmm").unwrap_or("?").to_string(),
                label: field(rest, "label").unwrap_or("-").to_string(),
                ..Boot::default()
            });
            spans.push(Vec::new());
            open = true;
            continue;
        }
        if marker.starts_with("RIG-BOOTS-DONE") || marker.starts_with("RIG-SCENARIO-END") {
            open = false;
            continue;
        }
        if !open {
            continue;
        }
        let (Some(boot), Some(span)) = (boots.last_mut(), spans.last_mut()) else {
            continue;
        };
        span.push(line);
        if let Some(rest) = marker.strip_prefix("RIG-BOOT-END ") {
            boot.ended = true;
            boot.rc = field(rest, "rc").and_then(|v| v.parse().ok());
        } else if let Some(rest) = marker.strip_prefix("RIG-BOOT-FAILED ") {
            let detail: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with("n="))
                .collect();
            boot.failures.push(detail.join(" "));
        } else if let Some(rest) = marker.strip_prefix("RIG-RESULT ") {
            let mut words = rest.split_whitespace();
            let (check, status) = (words.next().unwrap_or("?"), words.next());
            if status != Some("PASS") {
                boot.failures.push(format!("FAIL {check}"));
            }
        }
    }
    for (boot, span) in boots.iter_mut().zip(&spans) {
        boot.signs = signs(span);
    }
    boots
}

/// The environment signs in one boot's span.
pub fn signs(span: &[&str]) -> Vec<Sign> {
    let mut found: Vec<Sign> = span
        .iter()
        .filter_map(|line| crate::report::l1_kernel_failure(line))
        .map(|line| Sign::L1Kernel(line.to_string()))
        .collect();
    found.extend(derailed_guest(span));
    found
}

/// One `kvm_exit` line of L1's KVM trace.
struct GuestExit {
    vcpu: String,
    reason: String,
    rip: u64,
    /// The event being delivered when the vCPU exited (SVM EXITINTINFO).
    intr_info: u64,
    error_code: u64,
}

/// `intr_info` of a #PF being delivered: valid, exception, error code valid.
const PF_DELIVERY: u64 = 0x8000_0b0e;
/// #PF error code bits: the page was present; a reserved bit was set; the
/// access was an instruction fetch.
const PF_PRESENT: u64 = 1 << 0;
const PF_RESERVED: u64 = 1 << 3;
const PF_FETCH: u64 = 1 << 4;
/// The lowest address of the kernel half of x86-64's address space.
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

fn hex(word: &str) -> Option<u64> {
    u64::from_str_radix(word.strip_prefix("0x")?, 16).ok()
}

fn guest_exit(line: &str) -> Option<GuestExit> {
    let rest = line.split_once("kvm_exit: vcpu ")?.1;
    let (vcpu, rest) = rest.split_once(" reason ")?;
    let (reason, rest) = rest.split_once(" rip ")?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let field = |name: &str| {
        let at = words.iter().position(|w| *w == name)?;
        hex(words.get(at + 1)?)
    };
    Some(GuestExit {
        vcpu: vcpu.to_string(),
        reason: reason.to_string(),
        rip: hex(words.first()?)?,
        intr_info: field("intr_info").unwrap_or(0),
        error_code: field("error_code").unwrap_or(0),
    })
}

/// From L1's KVM trace (`kvm_exit: vcpu N reason R rip ... intr_info ...
/// error_code ...`) and `/proc/modules` as `rig_show_kvm_trace` prints them
/// (docs/RIG.md, "Known defects of the environment"): the first exit at a
/// RIP inside one of L1's modules (proof), and the first shutdown while
/// delivering a not-present instruction-fetch #PF in the kernel half (a
/// hint).
fn derailed_guest(span: &[&str]) -> Vec<Sign> {
    let lines = || span.iter().map(|l| l.trim_start_matches([' ', '|']));
    let modules: Vec<(String, u64, u64)> = lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() < 6 || !matches!(words[4], "Live" | "Loading" | "Unloading") {
                return None;
            }
            Some((words[0].to_string(), hex(words[5])?, words[1].parse().ok()?))
        })
        .collect();
    let mut in_module = None;
    let mut impossible = None;
    let mut fetch_fault = None;
    let mut on_running_page = None;
    // (vCPU, page) of every exit that was not a shutdown: code that ran.
    let mut ran: Vec<(String, u64)> = Vec::new();
    for exit in lines().filter_map(guest_exit) {
        let GuestExit { vcpu, rip, .. } = &exit;
        if in_module.is_none() {
            if let Some((name, start, size)) = modules
                .iter()
                .find(|(_, start, size)| (*start..start.saturating_add(*size)).contains(rip))
            {
                in_module = Some(Sign::ExitInL1Module(format!(
                    "guest vCPU {vcpu} exited ({}) at rip {rip:#x}, inside L1's module {name} \
                     ({start:#x}+{size:#x}): the emulated SVM resumed the guest at an L1 address",
                    exit.reason
                )));
            }
        }
        let pf_shutdown = exit.reason == "shutdown" && exit.intr_info == PF_DELIVERY;
        if impossible.is_none()
            && pf_shutdown
            && exit.error_code & (PF_RESERVED | PF_PRESENT) == PF_RESERVED
        {
            impossible = Some(Sign::ImpossibleFault(format!(
                "guest vCPU {vcpu} shut down delivering a #PF at rip {rip:#x} with error code \
                 {:#x}: reserved bit set on a not-present page, which no x86 CPU reports; \
                 the fault was made up by the emulated host",
                exit.error_code
            )));
        }
        let fetch = exit.error_code & (PF_FETCH | PF_PRESENT) == PF_FETCH;
        let fetch_shutdown = exit.reason == "shutdown"
            && exit.intr_info == PF_DELIVERY
            && fetch
            && *rip >= KERNEL_HALF;
        if fetch_fault.is_none() && fetch_shutdown {
            fetch_fault = Some(Sign::FetchFaultShutdown(format!(
                "guest vCPU {vcpu} shut down delivering a not-present instruction-fetch #PF \
                 at rip {rip:#x} in its kernel half (error code {:#x})",
                exit.error_code
            )));
        }
        if on_running_page.is_none()
            && fetch_shutdown
            && ran.iter().any(|(v, p)| v == vcpu && *p == page(*rip))
        {
            on_running_page = Some(Sign::FetchFaultOnRunningPage(format!(
                "guest vCPU {vcpu} shut down delivering a not-present instruction-fetch #PF \
                 at rip {rip:#x} (error code {:#x}), on the code page it had just been running: \
                 an earlier exit of vCPU {vcpu} in this boot was on page {:#x}",
                exit.error_code,
                page(*rip) << 12
            )));
        }
        if exit.reason != "shutdown" {
            ran.push((vcpu.clone(), page(*rip)));
        }
    }
    in_module
        .into_iter()
        .chain(impossible)
        .chain(on_running_page)
        .chain(fetch_fault)
        .collect()
}

/// Boots per VMM and the failed ones, one line each, for `rig run`;
/// `l1_failure` is why the rig stopped L1, if it did (it explains the boot
/// it interrupted).
pub fn summary(boots: &[Boot], l1_failure: Option<&str>) -> String {
    let mut vmms: Vec<(&str, usize, usize)> = Vec::new();
    for boot in boots {
        let at = match vmms.iter().position(|(v, ..)| *v == boot.vmm) {
            Some(at) => at,
            None => {
                vmms.push((&boot.vmm, 0, 0));
                vmms.len() - 1
            }
        };
        vmms[at].1 += 1;
        vmms[at].2 += usize::from(boot.failed());
    }
    let counts: Vec<String> = vmms
        .iter()
        .map(|(vmm, all, failed)| format!("{vmm} {failed} failed of {all}"))
        .collect();
    let mut text = format!("boots: {}", counts.join(", "));
    for boot in boots.iter().filter(|b| b.failed()) {
        let verdict = match (boot.proof(), boot.signs.first()) {
            (Some(proof), _) => format!("environment: {proof}"),
            (None, _) if !boot.ended && l1_failure.is_some() => {
                format!("environment: {}", l1_failure.unwrap_or_default())
            }
            (None, Some(hint)) => format!("no proof of the environment; hint: {hint}"),
            (None, None) => "no sign of the environment".to_string(),
        };
        let why = if boot.ended {
            boot.failures.join("; ")
        } else {
            "never ended (L1 stopped during it)".to_string()
        };
        text.push_str(&format!(
            "\n  boot {} {} {} rc={}: {why}; {verdict}",
            boot.n,
            boot.vmm,
            boot.label,
            boot.rc.map_or("-".to_string(), |rc| rc.to_string()),
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULES: &str = "  | kvm_amd 155648 0 - Live 0xffffffffc0540000\n  \
                           | kvm 1146880 1 kvm_amd, Live 0xffffffffc0400000\n";

    fn boots_of(text: &str) -> Vec<Boot> {
        boots(text)
    }

    fn console(parts: &[&str]) -> String {
        parts.concat()
    }

    #[test]
    fn spans_run_from_one_boot_to_the_next() {
        let text = console(&[
            "RIG-INIT uptime=1\n",
            "RIG-BOOT n=1 vmm=mercury label=bzimage of=2\n",
            "RIG-BOOT-END n=1 rc=0 secs=3.1\n",
            "RIG-BOOT n=2 vmm=control-vmm label=control-bzimage of=2\n",
            "RIG-BOOT-END n=2 rc=3 secs=2.0\n",
            "RIG-BOOT-FAILED n=2 vmm=control-vmm rc=3\n",
            "  | vcpu1-4474 [000] 186.1: kvm_exit: vcpu 1 reason npf rip 0xffffffffc055bcfc info1 0x1\n",
            MODULES,
            "RIG-BOOTS-DONE\n",
            "RIG-RESULT stress-bzimage FAIL 1 of 1 failed\n",
        ]);
        let boots = boots(&text);
        assert_eq!(boots.len(), 2);
        assert!(!boots[0].failed() && boots[0].signs.is_empty() && boots[0].rc == Some(0));
        assert_eq!(
            (boots[1].vmm.as_str(), boots[1].rc),
            ("control-vmm", Some(3))
        );
        assert!(boots[1].failed());
        assert!(
            matches!(boots[1].proof(), Some(Sign::ExitInL1Module(w)) if w.contains("kvm_amd")),
            "{:?}",
            boots[1].signs
        );
        // The aggregate verdict after RIG-BOOTS-DONE belongs to no boot.
        assert_eq!(boots[1].failures, ["vmm=control-vmm rc=3"]);
    }

    #[test]
    fn evidence_in_another_boots_span_does_not_count() {
        // Boot 1 passed but its span holds an L1 address; boot 2 failed with
        // nothing: boot 2 is not explained by boot 1's evidence.
        let text = console(&[
            "RIG-BOOT n=1 vmm=mercury label=a of=2\n",
            "RIG-BOOT-END n=1 rc=0\n",
            "  | vcpu0-1 [000] 1.0: kvm_exit: vcpu 0 reason npf rip 0xffffffffc0541000 info1 0x1\n",
            MODULES,
            "RIG-BOOT n=2 vmm=mercury label=b of=2\n",
            "RIG-BOOT-END n=2 rc=3\n",
            "RIG-RESULT b-exit FAIL rc=3\n",
        ]);
        let boots = boots(&text);
        assert!(!boots[0].failed() && boots[0].proof().is_some());
        assert!(boots[1].failed() && boots[1].proof().is_none());
        assert_eq!(boots[1].failures, ["FAIL b-exit"]);
    }

    #[test]
    fn a_fetch_fault_shutdown_is_a_hint_not_proof() {
        let shutdown = |rip: &str, intr: &str, err: &str| {
            format!(
                "  |  vcpu1-1941 [000] 93.25: kvm_exit: vcpu 1 reason shutdown rip {rip} \
                 info1 0x0 info2 0x0 intr_info {intr} error_code {err}\n"
            )
        };
        let traced = shutdown("0xffffffff81271a82", "0x80000b0e", "0x00000010");
        let found = signs(&[traced.as_str()]);
        assert!(
            matches!(&found[..], [s @ Sign::FetchFaultShutdown(w)] if !s.is_proof() && w.contains("instruction-fetch")),
            "{found:?}"
        );
        // A data access, a present page, another exception, or a user or
        // identity-mapped address: not even a hint; nor an exit other than a shutdown.
        let npf = traced.replace("reason shutdown", "reason npf");
        assert_eq!(signs(&[npf.as_str()]), []);
        for (rip, intr, err) in [
            ("0xffffffff81271a82", "0x80000b0e", "0x00000002"),
            ("0xffffffff81271a82", "0x80000b0e", "0x00000011"),
            ("0xffffffff81271a82", "0x80000b0d", "0x00000010"),
            ("0x0000000001000500", "0x80000b0e", "0x00000010"),
        ] {
            let line = shutdown(rip, intr, err);
            assert_eq!(signs(&[line.as_str()]), [], "{rip} {intr} {err}");
        }
    }

    /// As traced in a CI check (QEMU 10, L1 6.12, linux-boot elf64-smp1):
    /// vCPU 0 left an I/O exit at 0x...a5f (the serial port), was resumed,
    /// and shut down delivering a not-present fetch #PF at 0x...a60, the
    /// next instruction on the same page. Proof; the same fault on a page
    /// no earlier exit of that vCPU was on, or only another vCPU was on,
    /// stays a hint.
    #[test]
    fn a_fetch_fault_on_the_page_the_vcpu_was_running_is_proof() {
        let io = "  |  vcpu0-401 [000] d..1. 12.600733: kvm_exit: vcpu 0 reason io rip 0xffffffff81271a5f \
                  info1 0x0000000003fd0011 info2 0xffffffff81271a60 intr_info 0x00000000 error_code 0x00000000";
        let shutdown = "  |  vcpu0-401 [000] d..1. 12.602255: kvm_exit: vcpu 0 reason shutdown rip 0xffffffff81271a60 \
                        info1 0x0 info2 0x0 intr_info 0x80000b0e error_code 0x00000010";
        let found = signs(&[io, shutdown]);
        assert!(
            matches!(&found[0], s @ Sign::FetchFaultOnRunningPage(w) if s.is_proof() && w.contains("0xffffffff81271000")),
            "{found:?}"
        );
        assert!(
            matches!(&found[1..], [Sign::FetchFaultShutdown(_)]),
            "{found:?}"
        );
        // Another page: a hint only.
        let elsewhere = io.replace("0xffffffff81271a5f", "0xffffffff81372a5f");
        let found = signs(&[elsewhere.as_str(), shutdown]);
        assert!(found.iter().all(|s| !s.is_proof()), "{found:?}");
        // The page ran on another vCPU: a hint only.
        let other_vcpu = io.replace("vcpu 0 reason", "vcpu 1 reason");
        let found = signs(&[other_vcpu.as_str(), shutdown]);
        assert!(found.iter().all(|s| !s.is_proof()), "{found:?}");
        // The exit after the shutdown does not count.
        let found = signs(&[shutdown, io]);
        assert!(found.iter().all(|s| !s.is_proof()), "{found:?}");
    }

    #[test]
    fn a_reserved_bit_fault_on_a_not_present_page_is_proof() {
        // As traced (QEMU 10, L1 6.12): vCPU 1 during the guest's reboot.
        let traced = "  |  vcpu1-8731 [000] d..1. 383.62: kvm_exit: vcpu 1 reason shutdown \
                      rip 0xffffffff8102e264 info1 0x0 info2 0x0 intr_info 0x80000b0e error_code 0x00000018";
        let found = signs(&[traced]);
        assert!(
            matches!(&found[0], s @ Sign::ImpossibleFault(w) if s.is_proof() && w.contains("0x18")),
            "{found:?}"
        );
        // It is also a not-present fetch: that hint is listed after the proof.
        assert!(
            matches!(&found[1..], [Sign::FetchFaultShutdown(_)]),
            "{found:?}"
        );
        // Reserved bit on a present page (0x19): a real fault; not proof.
        let real = traced.replace("0x00000018", "0x00000019");
        assert_eq!(signs(&[real.as_str()]), []);
    }

    #[test]
    fn an_exit_inside_an_l1_module_needs_the_module_list() {
        // As traced in a 1-vCPU boot that never ended: the vCPU loops on a
        // #PF it cannot deliver, at an L1 address.
        let looping = "  |  vcpu0-462 [001] 138.6: kvm_exit: vcpu 0 reason npf rip 0xffffffffc04a8cfc \
                       info1 0x20000000e info2 0x7e742fe0 intr_info 0x80000b0e error_code 0x00000010";
        assert_eq!(signs(&[looping]), []);
        let module = "  | kvm_amd 126976 0 - Live 0xffffffffc049a000";
        let found = signs(&[looping, module]);
        assert!(
            matches!(&found[..], [Sign::ExitInL1Module(w)] if w.contains("vCPU 0 exited (npf)")),
            "{found:?}"
        );
    }

    #[test]
    fn an_l1_oops_during_a_boot_is_proof_and_a_boot_without_end_failed() {
        let text = console(&[
            "RIG-BOOT n=7 vmm=mercury label=vmlinux of=9\n",
            "[   21.99] BUG: TASK stack guard page was hit\n",
            "  | [ 1.98] Kernel panic - not syncing: guest\n",
        ]);
        let boots = boots(&text);
        assert!(boots[0].failed() && !boots[0].ended);
        assert_eq!(
            boots[0].signs,
            [Sign::L1Kernel(
                "[   21.99] BUG: TASK stack guard page was hit".into()
            )]
        );
        let text = summary(&boots, None);
        assert!(text.starts_with("boots: mercury 1 failed of 1"), "{text}");
        assert!(
            text.contains("boot 7 mercury vmlinux rc=-: never ended"),
            "{text}"
        );
        assert!(
            text.contains("environment: L1's own kernel failed"),
            "{text}"
        );
        // Interrupted with no sign in its span: the rig's reason for stopping L1.
        let quiet = boots_of("RIG-BOOT n=3 vmm=mercury label=elf64 of=9\n");
        let text = summary(&quiet, Some("L1 ended without RIG-DONE"));
        assert!(
            text.ends_with(
                "never ended (L1 stopped during it); environment: L1 ended without RIG-DONE"
            ),
            "{text}"
        );
        assert!(summary(&quiet, None).ends_with("no sign of the environment"));
    }
}
