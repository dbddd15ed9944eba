//! Boot a kernel with vmm-core and report how the guest ended.
//!
//! ```text
//! cargo run -p vmm-core --example boot -- "$(guest-images/build test-guest)" "checks=serial,smp,timer" 2
//! ```

use std::time::Duration;

use vmm_core::{Vm, VmConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let kernel = args.next().ok_or("usage: boot KERNEL [CMDLINE] [VCPUS]")?;
    let mut config = VmConfig::new(kernel);
    if let Some(cmdline) = args.next() {
        config.cmdline = cmdline;
    }
    if let Some(vcpus) = args.next() {
        config.vcpus = vcpus.parse()?;
    }

    let mut vm = Vm::new(config)?;
    vm.start()?;
    let exit = vm
        .wait_timeout(Duration::from_secs(60))
        .ok_or("the guest did not exit within 60 s")?;
    eprintln!("guest exit: {exit}");
    if let Some(first) = vm.first_run() {
        eprintln!(
            "first KVM_RUN after {:?} (process CPU {:?})",
            first.wall, first.cpu
        );
    }
    if let Some(boot) = vm.boot_time() {
        eprintln!("boot timer written after {boot:?}");
    }
    if exit.is_clean() {
        Ok(())
    } else {
        Err(format!("guest failed: {exit}").into())
    }
}
