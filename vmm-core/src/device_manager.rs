//! Creates devices, places them on the buses, wires their interrupts to KVM
//! and their host-side events to the VMM thread's event loop.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use devices::acpi_ged::AcpiGed;
use devices::legacy::{
    AcpiPowerControl, BootTimer, BootTimerHandle, Pl061, PvPanic, Rtc, Serial, SerialInput, I8042,
};
use devices::PowerButton;
use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::arch::{layout, BusKind, PlatformDevice, PowerButtonDevice, PowerButtonKind};
use crate::bus::{Bus, BusError, SharedDevice};
use crate::config::{SerialSink, VmConfig};
use crate::lifecycle::{Lifecycle, VmExit};
use crate::vmm_thread::ExitEvents;

/// The event loop of the VMM thread.
pub(crate) type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;
/// The event manager type used by the VMM thread.
pub(crate) type VmmEventManager = EventManager<Subscriber>;

/// Errors attaching devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A device could not be placed on a bus.
    #[error("cannot place {device} on the bus: {source}")]
    Bus {
        /// Which device.
        device: &'static str,
        /// Why.
        #[source]
        source: BusError,
    },
    /// A device's host side (image file, TAP, socket) could not be set up;
    /// the message names the file, TAP or path.
    #[error("{device}: {source}")]
    Backend {
        /// Which device.
        device: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A device's configuration is invalid.
    #[error(transparent)]
    Config(crate::config::ConfigError),
    /// A device could not be created.
    #[error("cannot create {device}: {source}")]
    Create {
        /// Which device.
        device: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Registering a queue-notify eventfd with KVM failed.
    #[error("cannot register the queue-notify ioeventfd of {device} at {addr:#x}: {source}")]
    Ioeventfd {
        /// Which device.
        device: &'static str,
        /// The QueueNotify register's address.
        addr: u64,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A planned device has no configuration (a bug in the planner).
    #[error("internal error: {0} was planned without its configuration")]
    Unconfigured(&'static str),
    /// The event loop could not be created or a subscriber added.
    #[error("event loop: {0}")]
    EventManager(#[source] event_manager::Error),
    /// Registering an interrupt eventfd with KVM failed.
    #[error("cannot register irqfd for {device} on GSI {gsi}: {source}")]
    Irqfd {
        /// Which device.
        device: &'static str,
        /// The GSI.
        gsi: u32,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The serial output file could not be opened.
    #[error("cannot open serial output file {path}: {source}")]
    SerialFile {
        /// The path given.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The devices of one VM and the buses they sit on.
pub(crate) struct DeviceManager {
    pub(crate) pio: Bus,
    pub(crate) mmio: Bus,
    pub(crate) boot_timer: BootTimerHandle,
    /// The power button (the ACPI GED's on x86, a PL061 line on arm64).
    pub(crate) power_button: PowerButton,
    pub(crate) event_manager: VmmEventManager,
}

fn serial_output(sink: &SerialSink) -> Result<Box<dyn Write + Send>, DeviceError> {
    Ok(match sink {
        SerialSink::Stdout => Box::new(std::io::stdout()),
        SerialSink::None => Box::new(std::io::sink()),
        SerialSink::File(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| DeviceError::SerialFile {
                    path: path.clone(),
                    source,
                })?,
        ),
    })
}

impl DeviceManager {
    /// Creates the legacy devices where the architecture has them: the
    /// console UART, i8042, the ACPI power-control register, the RTC,
    /// pvpanic, the boot timer and the power button's device. Their
    /// reset, power-off and panic events end the VM from the VMM thread.
    pub(crate) fn attach_legacy_devices(
        vm: &VmFd,
        config: &VmConfig,
        lifecycle: &Arc<Lifecycle>,
        origin: Instant,
    ) -> Result<Self, DeviceError> {
        let mut event_manager = VmmEventManager::new().map_err(DeviceError::EventManager)?;
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let mut exit_events = ExitEvents::new(lifecycle.clone());

        let serial = Serial::new(serial_output(&config.serial)?).map_err(created("serial"))?;
        vm.register_irqfd(serial.interrupt_evt(), layout::SERIAL_IRQ)
            .map_err(|source| DeviceError::Irqfd {
                device: "serial",
                gsi: layout::SERIAL_IRQ,
                source,
            })?;
        let serial = Arc::new(Mutex::new(serial));
        place_platform(
            &mut pio,
            &mut mmio,
            "serial",
            serial.clone(),
            layout::SERIAL,
        )?;
        if config.serial_stdin {
            let input = SerialInput::new(serial, Box::new(std::io::stdin()))
                .map_err(created("serial input"))?;
            event_manager.add_subscriber(Arc::new(Mutex::new(input)));
        }

        if let Some(at) = layout::I8042 {
            let i8042 = I8042::new().map_err(created("i8042"))?;
            exit_events.watch(clone_evt("i8042", i8042.reset_evt())?, VmExit::Reset);
            place_platform(
                &mut pio,
                &mut mmio,
                "i8042",
                Arc::new(Mutex::new(i8042)),
                at,
            )?;
        }

        if let Some(at) = layout::ACPI_POWER {
            let power = AcpiPowerControl::new().map_err(created("ACPI power control"))?;
            exit_events.watch(
                clone_evt("ACPI power control", power.reset_evt())?,
                VmExit::Reset,
            );
            exit_events.watch(
                clone_evt("ACPI power control", power.poweroff_evt())?,
                VmExit::PowerOff,
            );
            let power = Arc::new(Mutex::new(power));
            place_platform(&mut pio, &mut mmio, "ACPI power control", power, at)?;
        }

        if let Some(at) = layout::RTC {
            let rtc = Arc::new(Mutex::new(Rtc::new()));
            place_platform(&mut pio, &mut mmio, "RTC", rtc, at)?;
        }

        let pvpanic = PvPanic::new().map_err(created("pvpanic"))?;
        exit_events.watch(
            clone_evt("pvpanic", pvpanic.panic_evt())?,
            VmExit::GuestPanic,
        );
        let pvpanic = Arc::new(Mutex::new(pvpanic));
        place_platform(&mut pio, &mut mmio, "pvpanic", pvpanic, layout::PVPANIC)?;

        event_manager.add_subscriber(Arc::new(Mutex::new(exit_events)));

        let boot_timer = BootTimer::new(origin);
        let boot_timer_handle = boot_timer.handle();
        place(
            &mut mmio,
            "boot timer",
            Arc::new(Mutex::new(boot_timer)),
            layout::BOOT_TIMER_ADDR,
            layout::BOOT_TIMER_SIZE,
        )?;

        let power_button = attach_power_button(vm, &mut pio, &mut mmio, layout::POWER_BUTTON)?;

        Ok(DeviceManager {
            pio,
            mmio,
            boot_timer: boot_timer_handle,
            power_button,
            event_manager,
        })
    }
}

impl DeviceManager {
    /// Creates the planned virtio devices and wires each into the VM.
    pub(crate) fn attach_virtio_devices(
        &mut self,
        vm: &VmFd,
        memory: &vm_memory::GuestMemoryMmap,
        config: &VmConfig,
        planned: &[crate::virtio_devices::PlannedDevice],
    ) -> Result<(), DeviceError> {
        crate::virtio_devices::attach_all(
            vm,
            memory,
            config,
            planned,
            &mut self.mmio,
            &mut self.event_manager,
        )
    }
}

/// The power button's device where the layout puts it (the ACPI Generic
/// Event Device, or a PL061 GPIO controller), its interrupt an irqfd on
/// its GSI; returns the handle that presses the button.
fn attach_power_button(
    vm: &VmFd,
    pio: &mut Bus,
    mmio: &mut Bus,
    button: PowerButtonDevice,
) -> Result<PowerButton, DeviceError> {
    let (name, device, interrupt, handle): (_, SharedDevice, _, _) = match button.kind {
        PowerButtonKind::AcpiGed => {
            let name = "ACPI GED";
            let ged = AcpiGed::new().map_err(created(name))?;
            let interrupt = clone_evt(name, ged.interrupt_evt())?;
            let handle = ged.power_button().map_err(created(name))?;
            (name, Arc::new(Mutex::new(ged)), interrupt, handle)
        }
        PowerButtonKind::Pl061 => {
            let name = "PL061 GPIO";
            let gpio = Pl061::new().map_err(created(name))?;
            let interrupt = gpio.interrupt_evt().map_err(created(name))?;
            let handle = gpio.power_button();
            (name, Arc::new(Mutex::new(gpio)), interrupt, handle)
        }
    };
    vm.register_irqfd(&interrupt, button.irq)
        .map_err(|source| DeviceError::Irqfd {
            device: name,
            gsi: button.irq,
            source,
        })?;
    place_platform(pio, mmio, name, device, button.at)?;
    Ok(handle)
}

/// A duplicate of a device's exit `EventFd` for the VMM thread to watch.
fn clone_evt(device: &'static str, evt: &EventFd) -> Result<EventFd, DeviceError> {
    evt.try_clone().map_err(created(device))
}

/// Maps an error creating `device` (or a resource of it).
fn created(device: &'static str) -> impl FnOnce(std::io::Error) -> DeviceError {
    move |source| DeviceError::Create { device, source }
}

/// Puts a platform device where the architecture's layout says.
fn place_platform(
    pio: &mut Bus,
    mmio: &mut Bus,
    name: &'static str,
    device: SharedDevice,
    at: PlatformDevice,
) -> Result<(), DeviceError> {
    let bus = match at.bus {
        BusKind::Pio => pio,
        BusKind::Mmio => mmio,
    };
    place(bus, name, device, at.base, at.len)
}

/// Puts `device` on `bus` at `base..base + len`.
fn place(
    bus: &mut Bus,
    name: &'static str,
    device: SharedDevice,
    base: u64,
    len: u64,
) -> Result<(), DeviceError> {
    bus.insert(device, base, len)
        .map_err(|source| DeviceError::Bus {
            device: name,
            source,
        })
}
