//! CPUID normalization: start from what KVM supports on this host and make
//! each vCPU describe itself (APIC id) and the VM's topology consistently.
//!
//! Topology: one package of `num_cpus` cores, one thread per core, APIC id
//! = vCPU id (the MP table says the same). Leaves KVM did not report are not
//! added; leaves not mentioned here (including the KVM paravirt leaves
//! 0x4000_0000.., with their "KVMKVMKVM" signature) are kept as KVM gave them.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// Highest basic leaf and vendor string.
const LEAF_VENDOR: u32 = 0x0;
/// Version and feature information.
const LEAF_FEATURES: u32 = 0x1;
/// Deterministic cache parameters (Intel).
const LEAF_CACHE_PARAMS: u32 = 0x4;
/// Thermal and power management.
const LEAF_POWER: u32 = 0x6;
/// Extended topology enumeration.
const LEAF_TOPOLOGY: u32 = 0xb;
/// V2 extended topology enumeration (same layout as 0xB).
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
/// Address sizes and, on AMD, the core count.
const LEAF_AMD_SIZES: u32 = 0x8000_0008;
/// Cache topology (AMD's leaf 4).
const LEAF_AMD_CACHE_TOPOLOGY: u32 = 0x8000_001d;
/// Extended APIC id, compute unit and node (AMD).
const LEAF_AMD_EXT_APIC_ID: u32 = 0x8000_001e;

/// Leaf 0 EBX, EDX, ECX of AMD CPUs: "AuthenticAMD".
const AMD_VENDOR: [u32; 3] = [0x6874_7541, 0x6974_6e65, 0x444d_4163];

/// Leaf 1 EBX[15:8]: CLFLUSH line size, in 8-byte units.
const CLFLUSH_SHIFT: u32 = 8;
/// A 64-byte cache line in CLFLUSH units.
const CLFLUSH_LINE_SIZE: u32 = 64 / 8;
/// Leaf 1 EBX[23:16]: addressable logical processor ids per package.
const LOGICAL_COUNT_SHIFT: u32 = 16;
/// Leaf 1 EBX[31:24]: initial APIC id.
const INITIAL_APIC_ID_SHIFT: u32 = 24;
/// Leaf 1 EBX bits this module sets.
const LEAF1_EBX_OURS: u32 = 0xffff_ff00;
/// Leaf 1 ECX bit 31: running under a hypervisor.
const HYPERVISOR_BIT: u32 = 1 << 31;
/// Leaf 1 EDX bit 28: the logical processor count in EBX is valid.
const HTT_BIT: u32 = 1 << 28;

/// Leaf 4 / 0x8000_001D EAX[4:0]: cache type, 0 = no more caches.
const CACHE_TYPE_MASK: u32 = 0x1f;
/// Leaf 4 / 0x8000_001D EAX[7:5]: cache level.
const CACHE_LEVEL_SHIFT: u32 = 5;
/// See [`CACHE_LEVEL_SHIFT`].
const CACHE_LEVEL_MASK: u32 = 0x7;
/// First cache level shared by all cores (L1 and L2 are per core).
const SHARED_CACHE_LEVEL: u32 = 3;
/// EAX[25:14]: logical processors sharing this cache, minus 1.
const CACHE_SHARING_SHIFT: u32 = 14;
/// See [`CACHE_SHARING_SHIFT`].
const CACHE_SHARING_MASK: u32 = 0xfff;
/// Leaf 4 EAX[31:26]: cores per package, minus 1.
const CORES_PER_PACKAGE_SHIFT: u32 = 26;
/// See [`CORES_PER_PACKAGE_SHIFT`].
const CORES_PER_PACKAGE_MASK: u32 = 0x3f;

/// Leaf 6 EAX bit 1: Turbo Boost, which the guest cannot control.
const TURBO_BOOST_BIT: u32 = 1 << 1;
/// Leaf 6 EAX bits 11:7: HWP, whose MSRs KVM does not virtualize.
const HWP_BITS: u32 = 0x1f << 7;
/// Leaf 6 ECX bit 3: energy-performance bias MSR, not virtualized.
const ENERGY_PERF_BIAS_BIT: u32 = 1 << 3;

/// Leaf 0xB ECX[15:8]: level type.
const LEVEL_TYPE_SHIFT: u32 = 8;
/// Level type of the SMT (thread) level.
const LEVEL_TYPE_SMT: u32 = 1;
/// Level type of the core level.
const LEVEL_TYPE_CORE: u32 = 2;
/// Leaf 0xB ECX[7:0]: the level number (= subleaf).
const LEVEL_NUMBER_MASK: u32 = 0xff;

/// Leaf 0x8000_0008 ECX[7:0]: cores per package, minus 1.
const AMD_NC_MASK: u32 = 0xff;
/// Leaf 0x8000_0008 ECX[15:12]: APIC id bits for the core id.
const AMD_APIC_ID_SIZE_SHIFT: u32 = 12;
/// See [`AMD_APIC_ID_SIZE_SHIFT`].
const AMD_APIC_ID_SIZE_MASK: u32 = 0xf;

/// Bits needed to number `count` ids.
fn id_bits(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        u32::BITS - (count - 1).leading_zeros()
    }
}

fn set_field(reg: &mut u32, shift: u32, mask: u32, value: u32) {
    *reg = (*reg & !(mask << shift)) | ((value.min(mask)) << shift);
}

fn is_amd(entries: &[kvm_cpuid_entry2]) -> bool {
    entries
        .iter()
        .find(|e| e.function == LEAF_VENDOR)
        .is_some_and(|e| [e.ebx, e.edx, e.ecx] == AMD_VENDOR)
}

/// Rewrites `cpuid` (KVM's supported entries) for vCPU `vcpu_id` of
/// `num_cpus` (0 is taken as 1).
pub(crate) fn normalize_cpuid(cpuid: &mut CpuId, vcpu_id: u8, num_cpus: u8) {
    let id = u32::from(vcpu_id);
    let cpus = u32::from(num_cpus.max(1));
    let amd = is_amd(cpuid.as_slice());
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx = (entry.ebx & !LEAF1_EBX_OURS)
                    | (CLFLUSH_LINE_SIZE << CLFLUSH_SHIFT)
                    | (cpus << LOGICAL_COUNT_SHIFT)
                    | (id << INITIAL_APIC_ID_SHIFT);
                // TSC-deadline (ECX bit 24) stays as KVM reports it: KVM
                // supports it with the in-kernel LAPIC, which we always create.
                entry.ecx |= HYPERVISOR_BIT;
                if cpus > 1 {
                    entry.edx |= HTT_BIT;
                } else {
                    entry.edx &= !HTT_BIT;
                }
            }
            LEAF_CACHE_PARAMS => {
                set_cache_sharing(entry, cpus);
                if entry.eax & CACHE_TYPE_MASK != 0 {
                    set_field(
                        &mut entry.eax,
                        CORES_PER_PACKAGE_SHIFT,
                        CORES_PER_PACKAGE_MASK,
                        cpus - 1,
                    );
                }
            }
            LEAF_POWER => {
                entry.eax &= !(TURBO_BOOST_BIT | HWP_BITS);
                entry.ecx &= !ENERGY_PERF_BIAS_BIT;
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => set_topology_level(entry, id, cpus),
            LEAF_AMD_SIZES if amd => {
                set_field(&mut entry.ecx, 0, AMD_NC_MASK, cpus - 1);
                set_field(
                    &mut entry.ecx,
                    AMD_APIC_ID_SIZE_SHIFT,
                    AMD_APIC_ID_SIZE_MASK,
                    id_bits(cpus),
                );
            }
            LEAF_AMD_CACHE_TOPOLOGY => set_cache_sharing(entry, cpus),
            LEAF_AMD_EXT_APIC_ID => {
                entry.eax = id;
                // Compute unit id = core id; one thread per compute unit.
                entry.ebx = id & 0xff;
                // Node 0, one node per package.
                entry.ecx = 0;
                entry.edx = 0;
            }
            _ => {}
        }
    }
}

/// Caches up to L2 belong to one core (one thread); L3 and up are shared by
/// the whole package.
fn set_cache_sharing(entry: &mut kvm_cpuid_entry2, cpus: u32) {
    if entry.eax & CACHE_TYPE_MASK == 0 {
        return;
    }
    let level = (entry.eax >> CACHE_LEVEL_SHIFT) & CACHE_LEVEL_MASK;
    let sharing = if level >= SHARED_CACHE_LEVEL {
        cpus - 1
    } else {
        0
    };
    set_field(
        &mut entry.eax,
        CACHE_SHARING_SHIFT,
        CACHE_SHARING_MASK,
        sharing,
    );
}

/// One subleaf of 0xB/0x1F: level 0 is SMT (one thread), level 1 is core
/// (`cpus` of them), higher levels are invalid. EDX is the x2APIC id at
/// every level.
fn set_topology_level(entry: &mut kvm_cpuid_entry2, id: u32, cpus: u32) {
    let level = entry.index & LEVEL_NUMBER_MASK;
    let (shift, count, level_type) = match level {
        0 => (0, 1, LEVEL_TYPE_SMT),
        1 => (id_bits(cpus), cpus, LEVEL_TYPE_CORE),
        _ => (0, 0, 0),
    };
    entry.eax = shift;
    entry.ebx = count;
    entry.ecx = (level_type << LEVEL_TYPE_SHIFT) | level;
    entry.edx = id;
}

#[cfg(test)]
mod tests {
    use kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX;

    use super::*;

    fn leaf(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            flags: if index > 0 || function == LEAF_CACHE_PARAMS {
                KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            } else {
                0
            },
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    /// A cache descriptor for leaf 4 / 0x8000_001D: type 1 (data) or 3
    /// (unified) at `level`, with made-up sharing/core fields to overwrite.
    fn cache(level: u32, kind: u32) -> u32 {
        (0x3f << CORES_PER_PACKAGE_SHIFT) | (0x7 << CACHE_SHARING_SHIFT) | (level << 5) | kind
    }

    /// What KVM could report on an AMD host, trimmed.
    fn host_cpuid(vendor: [u32; 3]) -> CpuId {
        let entries = [
            leaf(LEAF_VENDOR, 0, [0x1f, vendor[0], vendor[2], vendor[1]]),
            // Family/model in EAX; host's APIC id 0x0b, count 0x10, brand 0x5.
            leaf(
                LEAF_FEATURES,
                0,
                [0x00a0_0f11, 0x0b10_0805, 0x0000_0001, 0x0000_0001],
            ),
            leaf(LEAF_CACHE_PARAMS, 0, [cache(1, 1), 0, 0, 0]),
            leaf(LEAF_CACHE_PARAMS, 1, [cache(2, 3), 0, 0, 0]),
            leaf(LEAF_CACHE_PARAMS, 2, [cache(3, 3), 0, 0, 0]),
            leaf(LEAF_CACHE_PARAMS, 3, [0, 0, 0, 0]),
            leaf(LEAF_POWER, 0, [0x0000_0f86, 0, 0x9, 0]),
            leaf(LEAF_TOPOLOGY, 0, [1, 2, 0x100, 0x0b]),
            leaf(LEAF_TOPOLOGY, 1, [5, 32, 0x201, 0x0b]),
            leaf(LEAF_TOPOLOGY, 2, [0, 0, 0x2, 0x0b]),
            leaf(LEAF_TOPOLOGY_V2, 1, [5, 32, 0x201, 0x0b]),
            // "KVMKVMKVM\0\0\0", max leaf 0x4000_0001.
            leaf(
                0x4000_0000,
                0,
                [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d],
            ),
            leaf(LEAF_AMD_SIZES, 0, [0x3030, 0, 0x0000_700f, 0]),
            leaf(LEAF_AMD_CACHE_TOPOLOGY, 2, [cache(3, 3), 0, 0, 0]),
            leaf(LEAF_AMD_EXT_APIC_ID, 0, [0x0b, 0x105, 0x301, 0]),
        ];
        CpuId::from_entries(&entries).unwrap()
    }

    fn find(cpuid: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    fn normalized(vcpu_id: u8, num_cpus: u8) -> CpuId {
        let mut cpuid = host_cpuid(AMD_VENDOR);
        normalize_cpuid(&mut cpuid, vcpu_id, num_cpus);
        cpuid
    }

    #[test]
    fn leaf1_has_apic_id_count_clflush_and_hypervisor_bit() {
        for (id, cpus) in [(0, 1), (0, 4), (3, 4), (31, 32)] {
            let e = find(&normalized(id, cpus), LEAF_FEATURES, 0);
            assert_eq!(e.ebx >> 24, u32::from(id), "initial APIC id");
            assert_eq!((e.ebx >> 16) & 0xff, u32::from(cpus), "logical count");
            assert_eq!((e.ebx >> 8) & 0xff, 8, "CLFLUSH line size");
            assert_eq!(e.ebx & 0xff, 0x05, "brand index kept");
            assert_ne!(e.ecx & HYPERVISOR_BIT, 0);
            assert_eq!(e.ecx & 1, 1, "other features kept");
            assert_eq!(e.edx & HTT_BIT != 0, cpus > 1);
            assert_eq!(e.eax, 0x00a0_0f11);
        }
    }

    #[test]
    fn leaf4_describes_one_package() {
        let cpuid = normalized(2, 4);
        for index in 0..3 {
            let e = find(&cpuid, LEAF_CACHE_PARAMS, index);
            assert_eq!(e.eax >> CORES_PER_PACKAGE_SHIFT, 3, "cores per package - 1");
            let sharing = (e.eax >> CACHE_SHARING_SHIFT) & CACHE_SHARING_MASK;
            assert_eq!(sharing, if index == 2 { 3 } else { 0 }, "subleaf {index}");
        }
        // The terminating null descriptor stays null.
        assert_eq!(find(&cpuid, LEAF_CACHE_PARAMS, 3).eax, 0);
    }

    #[test]
    fn topology_leaves_carry_the_x2apic_id() {
        for (id, cpus, shift) in [(0u8, 1u8, 0), (1, 2, 1), (3, 4, 2), (17, 32, 5), (4, 5, 3)] {
            let cpuid = normalized(id, cpus);
            for function in [LEAF_TOPOLOGY, LEAF_TOPOLOGY_V2] {
                for e in cpuid.as_slice().iter().filter(|e| e.function == function) {
                    assert_eq!(
                        e.edx,
                        u32::from(id),
                        "x2APIC id in {function:#x}.{}",
                        e.index
                    );
                }
            }
            let smt = find(&cpuid, LEAF_TOPOLOGY, 0);
            assert_eq!((smt.eax, smt.ebx, smt.ecx), (0, 1, 0x100));
            let core = find(&cpuid, LEAF_TOPOLOGY, 1);
            assert_eq!(
                (core.eax, core.ebx, core.ecx),
                (shift, u32::from(cpus), 0x201)
            );
            let invalid = find(&cpuid, LEAF_TOPOLOGY, 2);
            assert_eq!((invalid.eax, invalid.ebx, invalid.ecx), (0, 0, 2));
            let v2 = find(&cpuid, LEAF_TOPOLOGY_V2, 1);
            assert_eq!((v2.eax, v2.ebx), (shift, u32::from(cpus)));
        }
    }

    #[test]
    fn amd_topology_leaves() {
        let cpuid = normalized(5, 8);
        let sizes = find(&cpuid, LEAF_AMD_SIZES, 0);
        assert_eq!(sizes.ecx & 0xff, 7, "cores - 1");
        assert_eq!((sizes.ecx >> 12) & 0xf, 3, "APIC id bits");
        assert_eq!(sizes.eax, 0x3030, "address sizes kept");
        let ext = find(&cpuid, LEAF_AMD_EXT_APIC_ID, 0);
        assert_eq!((ext.eax, ext.ebx, ext.ecx), (5, 5, 0));
        let l3 = find(&cpuid, LEAF_AMD_CACHE_TOPOLOGY, 2);
        assert_eq!((l3.eax >> CACHE_SHARING_SHIFT) & CACHE_SHARING_MASK, 7);
    }

    #[test]
    fn amd_core_count_left_alone_on_other_vendors() {
        // "GenuineIntel".
        let mut cpuid = host_cpuid([0x756e_6547, 0x4965_6e69, 0x6c65_746e]);
        normalize_cpuid(&mut cpuid, 1, 8);
        assert_eq!(find(&cpuid, LEAF_AMD_SIZES, 0).ecx, 0x0000_700f);
    }

    #[test]
    fn power_features_that_cannot_be_virtualized_are_dropped() {
        let e = find(&normalized(0, 1), LEAF_POWER, 0);
        assert_eq!(e.eax, 0x4, "only ARAT is left");
        assert_eq!(e.ecx, 0x1, "EPB dropped, hardware feedback kept");
    }

    #[test]
    fn kvm_paravirt_leaf_is_kept() {
        let before = find(&host_cpuid(AMD_VENDOR), 0x4000_0000, 0);
        let after = find(&normalized(3, 4), 0x4000_0000, 0);
        assert_eq!(before, after);
        let signature: Vec<u8> = [after.ebx, after.ecx, after.edx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        assert_eq!(&signature, b"KVMKVMKVM\0\0\0");
    }

    #[test]
    fn zero_cpus_is_taken_as_one() {
        let e = find(&normalized(0, 0), LEAF_FEATURES, 0);
        assert_eq!((e.ebx >> 16) & 0xff, 1);
    }
}
