//! The L1 architectures: what differs between an x86_64 L1 (QEMU's TCG
//! emulating an AMD CPU with SVM, L1's kvm_amd) and an aarch64 L1 (QEMU's
//! `virt` machine with EL2, L1's built-in KVM in VHE mode). A scenario picks
//! one with `# rig-arch:` (default x86_64); everything else in a run is the
//! same machinery.

use std::fmt;
use std::str::FromStr;

use crate::elf::{EM_AARCH64, EM_X86_64};

/// An L1 architecture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Arch {
    /// `qemu-system-x86_64`, Debian's cloud-amd64 kernel, `kvm_amd`.
    #[default]
    X86_64,
    /// `qemu-system-aarch64 -M virt,virtualization=on`, Debian's arm64 kernel.
    Aarch64,
}

/// An unknown `# rig-arch:` value.
#[derive(Debug, thiserror::Error)]
#[error("unknown architecture `{0}` (x86_64 or aarch64)")]
pub struct UnknownArch(pub String);

impl FromStr for Arch {
    type Err = UnknownArch;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "x86_64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            other => Err(UnknownArch(other.to_string())),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        })
    }
}

/// The architecture the rig itself runs on: the development and CI
/// machines are x86_64 (docs/HOSTS.md); an aarch64 L1 is emulated there.
pub const HOST: Arch = Arch::X86_64;

/// aarch64 L1's machine: QEMU's `virt` board with EL2 (so L1's kernel boots
/// at EL2 and runs KVM) and a GIC of [`AARCH64_GIC`]'s version (KVM's
/// vGICv3 needs the GIC's system register interface) unless the scenario
/// asks for a GICv2 (`# rig-gic: 2`: a host without GICv3, whose KVM offers
/// only a vGICv2).
pub const AARCH64_MACHINE: &str = "virt,virtualization=on";
/// aarch64 L1's default GIC version.
pub const AARCH64_GIC: u32 = 3;
/// aarch64 L1's CPU: everything TCG emulates, with QEMU's own
/// pointer-authentication algorithm instead of the architected QARMA5,
/// which TCG computes several times slower (L1 reached /init in 12–17 s
/// with QARMA5, 2–4 s with `pauth-impdef=on`).
pub const AARCH64_CPU: &str = "max,pauth-impdef=on";
/// aarch64 L1's kernel command line: the `virt` board's PL011 console.
pub const AARCH64_CMDLINE: &str = "console=ttyAMA0 panic=-1 quiet";
/// ext4 in the aarch64 L1, for scratch disks and loop-mounted images: the
/// module and the checksum it requests by name.
pub const AARCH64_EXT4_MODULES: [&str; 3] = ["virtio_blk", "crc32c_generic", "ext4"];
/// aarch64 L1's kernel, pinned: Debian's generic arm64 6.12 from
/// bookworm-backports, the same ABI as the x86_64 L1 (the cloud-arm64
/// flavour is not needed: the generic one boots to /init in about 3 s on
/// `virt` and has KVM built in).
pub const AARCH64_KERNEL_PACKAGE: &str = "linux-image-6.12.117+deb12-arm64-unsigned";
/// The pinned aarch64 kernel's series, as [`crate::debian::L1_KERNEL_SERIES`].
pub const AARCH64_KERNEL_SERIES: (&str, &str) = ("linux-image-6.12.", "+deb12-arm64-unsigned");
/// The QEMU for an aarch64 L1 (package `qemu-system-arm`).
pub const AARCH64_QEMU: &str = "qemu-system-aarch64";

impl Arch {
    /// Debian's name of the architecture (`dpkg --print-architecture`).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// `package` qualified with this architecture (`busybox-static:arm64`),
    /// unless it already names one, for `apt-get download`.
    pub fn qualify(self, package: &str) -> String {
        if package.contains(':') {
            package.to_string()
        } else {
            format!("{package}:{}", self.debian())
        }
    }

    /// The QEMU binary looked up in `PATH`.
    pub fn qemu(self) -> &'static str {
        match self {
            Arch::X86_64 => crate::qemu::QEMU,
            Arch::Aarch64 => AARCH64_QEMU,
        }
    }

    /// QEMU's `-M`, when the default machine is not the one; `gic` picks an
    /// aarch64 L1's GIC version ([`AARCH64_GIC`] when `None`).
    pub fn machine(self, gic: Option<u32>) -> Option<String> {
        match self {
            Arch::X86_64 => None,
            Arch::Aarch64 => Some(format!(
                "{AARCH64_MACHINE},gic-version={}",
                gic.unwrap_or(AARCH64_GIC)
            )),
        }
    }

    /// QEMU's `-cpu`.
    pub fn cpu(self) -> &'static str {
        match self {
            Arch::X86_64 => crate::qemu::L1_CPU,
            Arch::Aarch64 => AARCH64_CPU,
        }
    }

    /// L1's kernel command line (before `rig run --l1-append`).
    pub fn cmdline(self) -> &'static str {
        match self {
            Arch::X86_64 => crate::qemu::L1_CMDLINE,
            Arch::Aarch64 => AARCH64_CMDLINE,
        }
    }

    /// The pinned L1 kernel package (unqualified).
    pub fn kernel_package(self) -> &'static str {
        match self {
            Arch::X86_64 => crate::debian::L1_KERNEL_PACKAGE,
            Arch::Aarch64 => AARCH64_KERNEL_PACKAGE,
        }
    }

    /// The pinned kernel's series, `(prefix, suffix)` around its ABI number.
    pub fn kernel_series(self) -> (&'static str, &'static str) {
        match self {
            Arch::X86_64 => crate::debian::L1_KERNEL_SERIES,
            Arch::Aarch64 => AARCH64_KERNEL_SERIES,
        }
    }

    /// Modules every scenario gets: the KVM ones where KVM is modular
    /// (arm64 KVM is always built in).
    pub fn kvm_modules(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &crate::KVM_MODULES,
            Arch::Aarch64 => &[],
        }
    }

    /// Modules a scenario with a scratch disk gets: virtio-blk, and ext4
    /// where the L1 kernel has it as a module (Debian's arm64 kernel; the
    /// x86_64 one has it built in) with the crc32c its metadata checksums
    /// load through the crypto API (no depends= names it).
    pub fn disk_modules(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["virtio_blk"],
            Arch::Aarch64 => &AARCH64_EXT4_MODULES,
        }
    }

    /// The ELF `e_machine` of this architecture's binaries.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => EM_X86_64,
            Arch::Aarch64 => EM_AARCH64,
        }
    }

    /// The Rust target whose binaries run in L1 without a dynamic loader.
    pub fn musl_target(self) -> &'static str {
        match self {
            Arch::X86_64 => crate::inputs::MUSL_TARGET,
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            assert_eq!(arch.to_string().parse::<Arch>().unwrap(), arch);
        }
        assert_eq!("arm64".parse::<Arch>().unwrap(), Arch::Aarch64);
        let err = "riscv64".parse::<Arch>().unwrap_err();
        assert!(err.to_string().contains("riscv64"), "{err}");
    }

    #[test]
    fn packages_are_qualified_once() {
        assert_eq!(
            Arch::Aarch64.qualify("busybox-static"),
            "busybox-static:arm64"
        );
        assert_eq!(
            Arch::X86_64.qualify("busybox-static"),
            "busybox-static:amd64"
        );
        assert_eq!(
            Arch::X86_64.qualify("busybox-static:arm64"),
            "busybox-static:arm64"
        );
        let (prefix, suffix) = Arch::Aarch64.kernel_series();
        assert!(
            AARCH64_KERNEL_PACKAGE.starts_with(prefix) && AARCH64_KERNEL_PACKAGE.ends_with(suffix)
        );
    }
}
