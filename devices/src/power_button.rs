//! The machine's power button, whichever device presses it: the ACPI GED on
//! x86_64 ([`crate::acpi_ged`]), a PL061 GPIO line under `gpio-keys` on
//! arm64 ([`crate::legacy::Pl061`]). `vmm-core` keeps one [`PowerButton`]
//! per VM and the launcher presses it (SIGPWR, `cluster down`) without
//! knowing which it is.

use std::fmt;
use std::io;
use std::sync::Arc;

/// How one device presses its button.
pub(crate) trait Press: Send + Sync + fmt::Debug {
    fn press(&self) -> io::Result<()>;
}

/// Presses a VM's power button; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct PowerButton(Arc<dyn Press>);

impl PowerButton {
    pub(crate) fn new(device: impl Press + 'static) -> PowerButton {
        PowerButton(Arc::new(device))
    }

    /// Presses the button. What happens then is the guest's decision (its
    /// driver reports `KEY_POWER`; logind or acpid power it off).
    pub fn press(&self) -> io::Result<()> {
        self.0.press()
    }
}

impl fmt::Debug for PowerButton {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PowerButton").field(&self.0).finish()
    }
}
