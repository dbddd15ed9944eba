//! The VMM's memory overhead, from `/proc/<pid>/smaps` and `/proc/<pid>/status`.
//!
//! Overhead = total Rss − Rss of the guest-memory mapping(s). Guest memory is
//! one anonymous mapping per RAM region: one of the guest's size when it fits
//! below the 32-bit MMIO gap, else two (the part below the gap and the rest),
//! as `vmm-core`'s x86_64 memory layout splits it. Kernel memory KVM allocates
//! for the VM (its page tables, vCPU state) is not in any process's Rss and so
//! not in these numbers.

use serde::Serialize;

/// Guest RAM below the 32-bit MMIO gap ends here (3.25 GiB); the rest is
/// mapped above 4 GiB as a second region. Mirrors vmm-core's x86_64 layout.
pub const MMIO_GAP_START: u64 = 0xd000_0000;

/// One mapping of `/proc/<pid>/smaps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Inode of the backing file, 0 for anonymous memory.
    pub inode: u64,
    /// Backing path or pseudo-name (`[heap]`, `[stack]`,
    /// `anon_inode:kvm-vcpu:0`); empty for plain anonymous memory.
    pub path: String,
    /// Resident set, in KiB.
    pub rss_kib: u64,
    /// Anonymous pages, including copy-on-write copies of file pages
    /// (relocated data): memory only this process holds, in KiB.
    pub anonymous_kib: u64,
}

impl Mapping {
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.end - self.start
    }

    /// Plain anonymous memory: no backing file, no pseudo-name.
    pub fn is_plain_anonymous(&self) -> bool {
        self.inode == 0 && self.path.is_empty()
    }

    /// Backed by a file on disk (the binary, shared libraries).
    pub fn is_file(&self) -> bool {
        self.path.starts_with('/')
    }
}

/// Parses the text of `/proc/<pid>/smaps`. Lines it does not understand
/// are skipped.
pub fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut mappings: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        if let Some(mapping) = parse_header(line) {
            mappings.push(mapping);
        } else if let Some(last) = mappings.last_mut() {
            if let Some(value) = line.strip_prefix("Rss:") {
                last.rss_kib = parse_kib(value).unwrap_or(0);
            } else if let Some(value) = line.strip_prefix("Anonymous:") {
                last.anonymous_kib = parse_kib(value).unwrap_or(0);
            }
        }
    }
    mappings
}

/// `"7f..-7f.. rw-p 00000000 00:00 0    [heap]"` → a mapping with no Rss yet.
fn parse_header(line: &str) -> Option<Mapping> {
    let mut fields = line.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    let _perms = fields.next()?;
    let _offset = fields.next()?;
    let _device = fields.next()?;
    let inode = fields.next()?.parse().ok()?;
    // The path may contain spaces: take the rest of the line after the inode.
    let path = fields.collect::<Vec<_>>().join(" ");
    (end >= start).then_some(Mapping {
        start,
        end,
        inode,
        path,
        rss_kib: 0,
        anonymous_kib: 0,
    })
}

/// `"   1234 kB"` → 1234.
fn parse_kib(value: &str) -> Option<u64> {
    value.split_whitespace().next()?.parse().ok()
}

/// A field of `/proc/<pid>/status` given in kB (`VmRSS`, `VmHWM`).
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == field).then(|| parse_kib(value)).flatten()
    })
}

/// The sizes of the guest-memory mappings for `memory_bytes` of guest RAM.
pub fn guest_region_sizes(memory_bytes: u64) -> Vec<u64> {
    if memory_bytes <= MMIO_GAP_START {
        vec![memory_bytes]
    } else {
        vec![MMIO_GAP_START, memory_bytes - MMIO_GAP_START]
    }
}

/// Indices of the mappings that hold guest memory: for each region size, the
/// plain anonymous mapping of exactly that size (the one with the most Rss if
/// several match). Two regions that were mapped next to each other show up
/// as one mapping (the kernel merges adjacent anonymous mappings with equal
/// flags), so one mapping of the whole memory size counts too. `None` unless
/// every region was found.
pub fn find_guest_mappings(mappings: &[Mapping], memory_bytes: u64) -> Option<Vec<usize>> {
    let regions = guest_region_sizes(memory_bytes);
    find_mappings_of_sizes(mappings, &regions)
        .or_else(|| find_mappings_of_sizes(mappings, &[memory_bytes]))
}

fn find_mappings_of_sizes(mappings: &[Mapping], sizes: &[u64]) -> Option<Vec<usize>> {
    let mut found: Vec<usize> = Vec::new();
    for &size in sizes {
        let best = mappings
            .iter()
            .enumerate()
            .filter(|(i, m)| m.is_plain_anonymous() && m.size() == size && !found.contains(i))
            .max_by_key(|(_, m)| m.rss_kib)?;
        found.push(best.0);
    }
    Some(found)
}

/// The memory a VMM process uses besides guest memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryReport {
    /// Sum of Rss over all mappings, KiB.
    pub total_rss_kib: u64,
    /// Rss of the guest-memory mapping(s), KiB.
    pub guest_rss_kib: u64,
    /// `total_rss_kib - guest_rss_kib`: the VMM's own memory.
    pub overhead_kib: u64,
    /// The part of the overhead in file-backed mappings (binary, libraries).
    pub overhead_file_kib: u64,
    /// The rest of the overhead: heap, stacks, other anonymous memory, the
    /// vCPUs' `kvm_run` pages.
    pub overhead_anon_kib: u64,
    /// Anonymous pages outside guest memory (heap, stacks, copy-on-write
    /// data of the binary and libraries): what each further VMM process
    /// costs for certain. The other file-backed pages are page cache, shared
    /// by every process running the same binary. (Private_Dirty would also
    /// count the text of a freshly built binary whose page cache has not
    /// been written back yet.)
    pub overhead_anonymous_kib: u64,
    /// `VmRSS` from `/proc/<pid>/status`, KiB.
    pub vm_rss_kib: Option<u64>,
    /// `VmHWM` (peak Rss) from `/proc/<pid>/status`, KiB.
    pub vm_hwm_kib: Option<u64>,
}

/// Builds the report from smaps and status texts; `None` when the guest
/// memory mapping(s) are not (yet) there.
pub fn memory_report(smaps: &str, status: &str, memory_bytes: u64) -> Option<MemoryReport> {
    let mappings = parse_smaps(smaps);
    let guest = find_guest_mappings(&mappings, memory_bytes)?;
    let mut report = MemoryReport {
        total_rss_kib: 0,
        guest_rss_kib: 0,
        overhead_kib: 0,
        overhead_file_kib: 0,
        overhead_anon_kib: 0,
        overhead_anonymous_kib: 0,
        vm_rss_kib: status_kib(status, "VmRSS"),
        vm_hwm_kib: status_kib(status, "VmHWM"),
    };
    for (i, m) in mappings.iter().enumerate() {
        report.total_rss_kib += m.rss_kib;
        if guest.contains(&i) {
            report.guest_rss_kib += m.rss_kib;
            continue;
        }
        report.overhead_anonymous_kib += m.anonymous_kib;
        if m.is_file() {
            report.overhead_file_kib += m.rss_kib;
        } else {
            report.overhead_anon_kib += m.rss_kib;
        }
    }
    report.overhead_kib = report.total_rss_kib - report.guest_rss_kib;
    Some(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// A trimmed smaps of a VMM with 128 MiB of guest memory.
    const SMAPS: &str = "\
55d0c0a00000-55d0c0b00000 r-xp 00000000 08:01 1234                       /usr/bin/mercury
Size:               1024 kB
Rss:                 800 kB
Pss:                 800 kB
VmFlags: rd ex mr mw me dw
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
Rss:                  40 kB
Anonymous:            40 kB
7f0000000000-7f0008000000 rw-p 00000000 00:00 0 
Size:             131072 kB
Rss:                1200 kB
Anonymous:          1200 kB
THPeligible:    0
VmFlags: rd wr mr mw me nr dd
7f0010000000-7f0010200000 rw-p 00000000 00:00 0 
Size:               2048 kB
Rss:                  16 kB
7f0020000000-7f0020003000 rw-s 00000000 00:0e 5678                       anon_inode:kvm-vcpu:0
Size:                 12 kB
Rss:                   4 kB
7f0030000000-7f0030010000 rw-p 00000000 08:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
Size:                 64 kB
Rss:                  60 kB
Private_Dirty:        60 kB
Anonymous:             8 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                  12 kB
Anonymous:            12 kB
";

    const STATUS: &str = "Name:\tmercury\nVmPeak:\t  200000 kB\nVmHWM:\t    2500 kB\nVmRSS:\t    2132 kB\nThreads:\t3\n";

    #[test]
    fn parses_headers_and_rss() {
        let maps = parse_smaps(SMAPS);
        assert_eq!(maps.len(), 7);
        assert_eq!(maps[0].path, "/usr/bin/mercury");
        assert_eq!(maps[0].rss_kib, 800);
        assert!(maps[0].is_file());
        assert_eq!(maps[2].size(), 128 * MIB);
        assert!(maps[2].is_plain_anonymous());
        assert_eq!(maps[2].rss_kib, 1200);
        assert!(!maps[1].is_plain_anonymous(), "[heap] is named");
        assert!(
            !maps[4].is_plain_anonymous(),
            "kvm-vcpu mapping has an inode"
        );
    }

    #[test]
    fn header_paths_with_spaces_and_deleted_files() {
        let maps =
            parse_smaps("1000-2000 r--p 00000000 08:01 7    /tmp/a b (deleted)\nRss: 4 kB\n");
        assert_eq!(maps[0].path, "/tmp/a b (deleted)");
        assert_eq!(maps[0].rss_kib, 4);
    }

    #[test]
    fn status_fields() {
        assert_eq!(status_kib(STATUS, "VmRSS"), Some(2132));
        assert_eq!(status_kib(STATUS, "VmHWM"), Some(2500));
        assert_eq!(status_kib(STATUS, "VmSwap"), None);
        assert_eq!(
            status_kib(STATUS, "Threads"),
            Some(3),
            "unitless numbers parse too"
        );
    }

    #[test]
    fn region_sizes_around_the_gap() {
        assert_eq!(guest_region_sizes(128 * MIB), vec![128 * MIB]);
        assert_eq!(guest_region_sizes(MMIO_GAP_START), vec![MMIO_GAP_START]);
        assert_eq!(
            guest_region_sizes(4096 * MIB),
            vec![MMIO_GAP_START, 4096 * MIB - MMIO_GAP_START]
        );
    }

    #[test]
    fn overhead_excludes_guest_memory() {
        let r = memory_report(SMAPS, STATUS, 128 * MIB).unwrap();
        assert_eq!(r.total_rss_kib, 800 + 40 + 1200 + 16 + 4 + 60 + 12);
        assert_eq!(r.guest_rss_kib, 1200);
        assert_eq!(r.overhead_kib, 800 + 40 + 16 + 4 + 60 + 12);
        assert_eq!(r.overhead_file_kib, 860);
        assert_eq!(r.overhead_anon_kib, 40 + 16 + 4 + 12);
        assert_eq!(
            r.overhead_anonymous_kib,
            40 + 12 + 8,
            "guest memory's own is excluded"
        );
        assert_eq!(r.vm_rss_kib, Some(2132));
        assert_eq!(r.vm_hwm_kib, Some(2500));
    }

    #[test]
    fn no_report_until_guest_memory_is_mapped() {
        assert_eq!(memory_report(SMAPS, STATUS, 256 * MIB), None);
        assert_eq!(memory_report("", "", 128 * MIB), None);
    }

    #[test]
    fn two_regions_above_the_gap() {
        let low = MMIO_GAP_START;
        let high = 4096 * MIB - MMIO_GAP_START;
        let smaps = format!(
            "{:x}-{:x} rw-p 00000000 00:00 0\nRss: 100 kB\n\
             {:x}-{:x} rw-p 00000000 00:00 0\nRss: 30 kB\n\
             1000-3000 rw-p 00000000 00:00 0\nRss: 8 kB\n",
            0x7000_0000_0000u64,
            0x7000_0000_0000u64 + high,
            0x7100_0000_0000u64,
            0x7100_0000_0000u64 + low,
        );
        let maps = parse_smaps(&smaps);
        assert_eq!(find_guest_mappings(&maps, 4096 * MIB), Some(vec![1, 0]));
        let r = memory_report(&smaps, "", 4096 * MIB).unwrap();
        assert_eq!((r.guest_rss_kib, r.overhead_kib), (130, 8));
        assert_eq!(r.vm_rss_kib, None);
    }

    #[test]
    fn merged_regions_count_as_one_mapping() {
        let size = 4096 * MIB;
        let smaps = format!(
            "{:x}-{:x} rw-p 00000000 00:00 0\nRss: 100 kB\n1000-3000 rw-p 00000000 00:00 0\nRss: 8 kB\n",
            0x7000_0000_0000u64,
            0x7000_0000_0000u64 + size
        );
        let r = memory_report(&smaps, "", size).unwrap();
        assert_eq!((r.guest_rss_kib, r.overhead_kib), (100, 8));
    }

    #[test]
    fn equal_sized_regions_are_not_counted_twice() {
        // 6.5 GiB: both regions are 3.25 GiB; one such mapping is not enough.
        let size = MMIO_GAP_START;
        let smaps = format!(
            "{:x}-{:x} rw-p 00000000 00:00 0\nRss: 1 kB\n",
            0x7000_0000_0000u64,
            0x7000_0000_0000u64 + size
        );
        assert_eq!(find_guest_mappings(&parse_smaps(&smaps), 2 * size), None);
    }
}
