//! The virtio-mmio transport, version 2 (virtio 1.2, 4.2): the register
//! file a driver programs, feature negotiation, the driver-status state
//! machine, queue configuration, interrupt status and device reset.
//!
//! One [`MmioTransport`] per device, on the MMIO bus at its window. The
//! transport validates everything the guest writes before the device sees
//! it: features are masked to what the device offers, a driver that does
//! not accept `VIRTIO_F_VERSION_1` never gets `FEATURES_OK`, queue sizes
//! must be powers of two within the maximum, and queues must lie in guest
//! memory when the driver sets `DRIVER_OK`; otherwise the device is not
//! activated and `DEVICE_NEEDS_RESET` is set.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use log::{debug, warn};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::handler::{DeviceEventHandler, PendingFdChanges};
use super::{FdWatch, VirtioDevice, VirtioInterrupt, VERSION_1};
use crate::legacy::LogLimiter;
use crate::BusDevice;

/// Size of one device's MMIO window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// Offset of the QueueNotify register, where ioeventfds are registered.
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x50;

/// "virt" in little-endian: the MagicValue register.
const MAGIC_VALUE: u32 = 0x7472_6976;
/// The modern (virtio 1.x) transport.
const MMIO_VERSION: u32 = 2;
/// VendorID: mercury has no PCI vendor id; QEMU's is as good as any.
const VENDOR_ID: u32 = 0x554d_4551;
/// Device-specific configuration space starts here.
const CONFIG_OFFSET: u64 = 0x100;

/// Register offsets (virtio 1.2, 4.2.2).
mod reg {
    pub(super) const MAGIC_VALUE: u64 = 0x000;
    pub(super) const VERSION: u64 = 0x004;
    pub(super) const DEVICE_ID: u64 = 0x008;
    pub(super) const VENDOR_ID: u64 = 0x00c;
    pub(super) const DEVICE_FEATURES: u64 = 0x010;
    pub(super) const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub(super) const DRIVER_FEATURES: u64 = 0x020;
    pub(super) const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub(super) const QUEUE_SEL: u64 = 0x030;
    pub(super) const QUEUE_NUM_MAX: u64 = 0x034;
    pub(super) const QUEUE_NUM: u64 = 0x038;
    pub(super) const QUEUE_READY: u64 = 0x044;
    pub(super) const QUEUE_NOTIFY: u64 = super::QUEUE_NOTIFY_OFFSET;
    pub(super) const INTERRUPT_STATUS: u64 = 0x060;
    pub(super) const INTERRUPT_ACK: u64 = 0x064;
    pub(super) const STATUS: u64 = 0x070;
    pub(super) const QUEUE_DESC_LOW: u64 = 0x080;
    pub(super) const QUEUE_DESC_HIGH: u64 = 0x084;
    pub(super) const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub(super) const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub(super) const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub(super) const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub(super) const CONFIG_GENERATION: u64 = 0x0fc;
}

const ACK: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE;
const DRIVER: u32 = VIRTIO_CONFIG_S_DRIVER;
const FEATURES_OK: u32 = VIRTIO_CONFIG_S_FEATURES_OK;
const DRIVER_OK: u32 = VIRTIO_CONFIG_S_DRIVER_OK;
const FAILED: u32 = VIRTIO_CONFIG_S_FAILED;
const NEEDS_RESET: u32 = VIRTIO_CONFIG_S_NEEDS_RESET;

/// The driver-status state machine: the status a driver may write next,
/// given the current one (virtio 1.2, 3.1.1). Writing 0 (reset) and
/// adding FAILED are allowed from any state; everything else is ignored.
const STATUS_TRANSITIONS: &[(u32, u32)] = &[
    (0, ACK),
    (ACK, ACK | DRIVER),
    (ACK | DRIVER, ACK | DRIVER | FEATURES_OK),
    (
        ACK | DRIVER | FEATURES_OK,
        ACK | DRIVER | FEATURES_OK | DRIVER_OK,
    ),
];

/// The transport's interrupt: interrupt status bits, the device status
/// (for DEVICE_NEEDS_RESET) and the irqfd KVM injects from.
pub struct MmioInterrupt {
    interrupt_status: AtomicU32,
    device_status: AtomicU32,
    config_generation: AtomicU32,
    irq: EventFd,
    failures: LogLimiter,
}

impl MmioInterrupt {
    fn new() -> io::Result<Self> {
        Ok(MmioInterrupt {
            interrupt_status: AtomicU32::new(0),
            device_status: AtomicU32::new(0),
            config_generation: AtomicU32::new(0),
            irq: EventFd::new(libc::EFD_NONBLOCK)?,
            failures: LogLimiter::default(),
        })
    }

    fn raise(&self, bit: u32) {
        self.interrupt_status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.irq.write(1) {
            if let Some(count) = self.failures.hit() {
                warn!("virtio-mmio: cannot signal the interrupt: {e} ({count} failures)");
            }
        }
    }
}

impl VirtioInterrupt for MmioInterrupt {
    fn signal_used_queue(&self) {
        self.raise(VIRTIO_MMIO_INT_VRING);
    }

    fn signal_config_changed(&self) {
        self.config_generation.fetch_add(1, Ordering::SeqCst);
        self.raise(VIRTIO_MMIO_INT_CONFIG);
    }

    fn device_broken(&self, why: &str) {
        let before = self.device_status.fetch_or(NEEDS_RESET, Ordering::SeqCst);
        if before & NEEDS_RESET == 0 {
            warn!("virtio device needs a reset: {why}");
            self.raise(VIRTIO_MMIO_INT_CONFIG);
        }
    }
}

/// A virtio device behind its MMIO registers: a [`BusDevice`].
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    memory: GuestMemoryMmap,
    interrupt: Arc<MmioInterrupt>,
    /// One per queue: the transport signals them for QueueNotify writes
    /// that reach it as MMIO exits (no ioeventfd matched).
    queue_evts: Vec<EventFd>,
    fd_changes: Arc<PendingFdChanges>,
    queues: Vec<Queue>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    ignored: LogLimiter,
}

/// Everything a VMM needs to put one virtio device in a VM.
pub struct MmioDevice {
    /// The register file, for the MMIO bus.
    pub transport: MmioTransport,
    /// The event-manager subscriber that runs the device's I/O on the VMM
    /// thread.
    pub handler: DeviceEventHandler,
    /// One per queue, to register with KVM as ioeventfds on
    /// [`QUEUE_NOTIFY_OFFSET`] with the queue index as datamatch.
    pub queue_evts: Vec<EventFd>,
    /// To register with KVM as the device's irqfd.
    pub irq_evt: EventFd,
}

impl MmioDevice {
    /// Builds the transport and event handler of `device`, whose queues
    /// will live in `memory`.
    pub fn new(device: Arc<Mutex<dyn VirtioDevice>>, memory: GuestMemoryMmap) -> io::Result<Self> {
        let max_sizes: Vec<u16> = lock(&device).queue_max_sizes().to_vec();
        let mut queues = Vec::with_capacity(max_sizes.len());
        for &max in &max_sizes {
            queues.push(Queue::new(max).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("queue size {max}: {e}"),
                )
            })?);
        }
        let queue_evts = (0..queues.len())
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<io::Result<Vec<_>>>()?;
        let clone_all = |evts: &[EventFd]| -> io::Result<Vec<EventFd>> {
            evts.iter().map(EventFd::try_clone).collect()
        };
        let interrupt = Arc::new(MmioInterrupt::new()?);
        let fd_changes = Arc::new(PendingFdChanges::new()?);
        let handler =
            DeviceEventHandler::new(device.clone(), clone_all(&queue_evts)?, fd_changes.clone());
        Ok(MmioDevice {
            irq_evt: interrupt.irq.try_clone()?,
            queue_evts: clone_all(&queue_evts)?,
            handler,
            transport: MmioTransport {
                device,
                memory,
                interrupt,
                queue_evts,
                fd_changes,
                queues,
                device_features_sel: 0,
                driver_features_sel: 0,
                driver_features: 0,
                queue_sel: 0,
                ignored: LogLimiter::default(),
            },
        })
    }
}

fn lock(device: &Arc<Mutex<dyn VirtioDevice>>) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
    device.lock().unwrap_or_else(|e| e.into_inner())
}

impl MmioTransport {
    /// The device status register.
    pub fn status(&self) -> u32 {
        self.interrupt.device_status.load(Ordering::SeqCst)
    }

    fn set_status(&self, status: u32) {
        self.interrupt.device_status.store(status, Ordering::SeqCst);
    }

    fn ignore(&self, what: &str, offset: u64, len: usize) {
        if let Some(count) = self.ignored.hit() {
            debug!(
                "virtio-mmio (type {}): ignored {what} of {len} bytes at {offset:#x} ({count} so far)",
                lock(&self.device).device_type()
            );
        }
    }

    /// The selected queue, while the driver may configure queues: after
    /// FEATURES_OK, before DRIVER_OK.
    fn configurable_queue(&mut self) -> Option<&mut Queue> {
        let status = self.status();
        if status & FEATURES_OK == 0 || status & DRIVER_OK != 0 {
            return None;
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn read_register(&self, offset: u64) -> Option<u32> {
        let queue = self.queues.get(self.queue_sel as usize);
        Some(match offset {
            reg::MAGIC_VALUE => MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => lock(&self.device).device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => {
                let features = lock(&self.device).features();
                match self.device_features_sel {
                    0 => features as u32,
                    1 => (features >> 32) as u32,
                    _ => 0,
                }
            }
            reg::QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt.interrupt_status.load(Ordering::SeqCst),
            reg::STATUS => self.status(),
            reg::CONFIG_GENERATION => self.interrupt.config_generation.load(Ordering::SeqCst),
            _ => return None,
        })
    }

    fn write_register(&mut self, offset: u64, value: u32) -> bool {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => return self.write_driver_features(value),
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM => match self.configurable_queue() {
                Some(queue) => {
                    let valid = u16::try_from(value).is_ok_and(|n| queue.try_set_size(n).is_ok());
                    if !valid {
                        // Stays at its previous size; activation checks it.
                        return false;
                    }
                }
                None => return false,
            },
            reg::QUEUE_READY => match self.configurable_queue() {
                Some(queue) => queue.set_ready(value == 1),
                None => return false,
            },
            reg::QUEUE_NOTIFY => return self.notify(value),
            reg::INTERRUPT_ACK => {
                self.interrupt
                    .interrupt_status
                    .fetch_and(!value, Ordering::SeqCst);
            }
            reg::STATUS => return self.write_status(value),
            reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => return self.write_queue_address(offset, value),
            _ => return false,
        }
        true
    }

    fn write_queue_address(&mut self, offset: u64, value: u32) -> bool {
        let Some(queue) = self.configurable_queue() else {
            return false;
        };
        let (low, high) = if offset.is_multiple_of(8) {
            (Some(value), None)
        } else {
            (None, Some(value))
        };
        // virtio-queue keeps the old address (and logs) for a misaligned one;
        // activation then finds the queue invalid.
        match offset & !0x7 {
            reg::QUEUE_DESC_LOW => queue.set_desc_table_address(low, high),
            reg::QUEUE_DRIVER_LOW => queue.set_avail_ring_address(low, high),
            _ => queue.set_used_ring_address(low, high),
        }
        true
    }

    fn write_driver_features(&mut self, value: u32) -> bool {
        // Features are negotiated after DRIVER and before FEATURES_OK.
        if self.status() != ACK | DRIVER {
            return false;
        }
        let shift = match self.driver_features_sel {
            0 => 0,
            1 => 32,
            _ => return false,
        };
        let offered = lock(&self.device).features();
        let mask = 0xffff_ffffu64 << shift;
        let accepted = (u64::from(value) << shift) & offered;
        if accepted != u64::from(value) << shift {
            debug!(
                "virtio-mmio: the driver accepted features {:#x} the device does not offer; ignored",
                (u64::from(value) << shift) & !offered
            );
        }
        self.driver_features = (self.driver_features & !mask) | accepted;
        true
    }

    /// A QueueNotify write that reached the VMM (no ioeventfd matched it):
    /// passed on to the device's event handler like an ioeventfd.
    fn notify(&mut self, index: u32) -> bool {
        if self.status() & DRIVER_OK == 0 {
            return false;
        }
        match self.queue_evts.get(index as usize) {
            Some(evt) => {
                let _ = evt.write(1);
                true
            }
            None => false,
        }
    }

    fn write_status(&mut self, value: u32) -> bool {
        let current = self.status();
        if value == 0 {
            self.reset();
            return true;
        }
        if value & FAILED != 0 && value & !FAILED == current & !FAILED {
            // The driver gave up on the device.
            self.set_status(current | FAILED);
            return true;
        }
        let needs_reset = current & NEEDS_RESET;
        let allowed = STATUS_TRANSITIONS
            .iter()
            .any(|&(from, to)| from == current & !NEEDS_RESET && to == value);
        if !allowed || needs_reset != 0 {
            return false;
        }
        if value & DRIVER_OK != 0 {
            self.set_status(value);
            self.activate();
        } else if value & FEATURES_OK != 0 {
            if self.driver_features & VERSION_1 == 0 {
                // A legacy driver: FEATURES_OK stays clear, so it sees the
                // device refused its features.
                warn!("virtio-mmio: the driver did not accept VIRTIO_F_VERSION_1; the device stays unconfigured");
                return false;
            }
            lock(&self.device).ack_features(self.driver_features);
            self.set_status(value);
        } else {
            self.set_status(value);
        }
        true
    }

    fn activate(&mut self) {
        let invalid = self
            .queues
            .iter()
            .position(|q| q.ready() && !q.is_valid(&self.memory));
        if let Some(index) = invalid {
            self.interrupt.device_broken(&format!(
                "queue {index} does not fit in guest memory or is misaligned"
            ));
            return;
        }
        let event_idx = self.driver_features & (1 << super::VIRTIO_RING_F_EVENT_IDX) != 0;
        // The device gets its own copies; the transport keeps the registers'
        // view for the driver to read back.
        let copies: Result<Vec<Queue>, _> = self
            .queues
            .iter()
            .map(|q| {
                Queue::try_from(q.state()).map(|mut q| {
                    q.set_event_idx(event_idx);
                    q
                })
            })
            .collect();
        let queues = match copies {
            Ok(queues) => queues,
            Err(e) => {
                self.interrupt
                    .device_broken(&format!("invalid queue configuration: {e}"));
                return;
            }
        };
        let mut fds = FdWatch::default();
        let interrupt: Arc<dyn VirtioInterrupt> = self.interrupt.clone();
        let result = lock(&self.device).activate(self.memory.clone(), queues, interrupt, &mut fds);
        self.fd_changes.push(fds);
        if let Err(e) = result {
            self.interrupt
                .device_broken(&format!("cannot activate the device: {e}"));
        }
    }

    /// Status 0: the device and the transport back to their initial state.
    fn reset(&mut self) {
        let mut fds = FdWatch::default();
        lock(&self.device).reset(&mut fds);
        self.fd_changes.push(fds);
        for queue in &mut self.queues {
            queue.reset();
        }
        for evt in &self.queue_evts {
            // Drop notifications of the old session.
            let _ = evt.read();
        }
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.interrupt.interrupt_status.store(0, Ordering::SeqCst);
        self.set_status(0);
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_OFFSET {
            lock(&self.device).read_config(offset - CONFIG_OFFSET, data);
            return;
        }
        // Registers are 32 bits wide and read whole (virtio 1.2, 4.2.2.2).
        let value = match data.len() {
            4 if offset.is_multiple_of(4) => self.read_register(offset),
            _ => None,
        };
        match value {
            Some(value) => data.copy_from_slice(&value.to_le_bytes()),
            None => {
                data.fill(0);
                self.ignore("read", offset, data.len());
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_OFFSET {
            if self.status() & DRIVER != 0 {
                lock(&self.device).write_config(offset - CONFIG_OFFSET, data);
            } else {
                self.ignore("config write", offset, data.len());
            }
            return;
        }
        let handled = match (offset % 4, <[u8; 4]>::try_from(data)) {
            (0, Ok(bytes)) => self.write_register(offset, u32::from_le_bytes(bytes)),
            _ => false,
        };
        if !handled {
            self.ignore("write", offset, data.len());
        }
    }
}

impl fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmioTransport")
            .field("status", &self.status())
            .field("queues", &self.queues.len())
            .field("driver_features", &self.driver_features)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "mmio_tests.rs"]
mod tests;
