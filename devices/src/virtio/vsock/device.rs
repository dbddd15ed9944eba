//! The virtio-vsock device: configuration (the guest CID), features,
//! queues, the listening socket at `PATH`, and the [`VirtioDevice`] glue
//! that moves packets between the queues and the [`Muxer`].

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::warn;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;

use super::muxer::Muxer;
use super::packet::{read_tx, RxBuffers, HOST_CID};
use super::uds::bind;
use super::{VsockConfig, VsockError};
use crate::legacy::LogLimiter;
use crate::virtio::queue::drain_queue;
use crate::virtio::{
    device_type, ActivateError, FdWatch, VirtioDevice, VirtioInterrupt, VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};

/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the RX queue: device → guest packets.
pub const RX_QUEUE: usize = 0;
/// Index of the TX queue: guest → device packets.
pub const TX_QUEUE: usize = 1;
/// Index of the event queue: device → guest events (unused, see the
/// module doc).
pub const EVENT_QUEUE: usize = 2;

struct Active {
    memory: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    // Held so the device owns every queue it was given; never used.
    _event: Queue,
    interrupt: Arc<dyn VirtioInterrupt>,
    muxer: Muxer,
}

/// The vsock device.
pub struct Vsock {
    guest_cid: u64,
    uds_path: PathBuf,
    /// (device, inode) of the socket file bound, so that drop removes it
    /// and not a file someone else put there since.
    socket_file: Option<(u64, u64)>,
    listener: UnixListener,
    active: Option<Active>,
    bad_packets: LogLimiter,
}

/// Lowest guest CID: 0-2 are the hypervisor, the loopback and the host.
pub const MIN_GUEST_CID: u64 = HOST_CID + 1;
/// Highest guest CID: `u32::MAX` is `VMADDR_CID_ANY`.
pub const MAX_GUEST_CID: u64 = u32::MAX as u64 - 1;

/// Refuses the reserved CIDs; the VMM's configuration validation calls
/// this too, before anything is created.
pub fn check_guest_cid(cid: u64) -> Result<(), VsockError> {
    if (MIN_GUEST_CID..=MAX_GUEST_CID).contains(&cid) {
        Ok(())
    } else {
        Err(VsockError::ReservedCid(cid))
    }
}

impl Vsock {
    /// A new, inactive device listening on `config.uds_path`.
    pub fn new(config: &VsockConfig) -> Result<Vsock, VsockError> {
        let cid = config.guest_cid;
        check_guest_cid(cid)?;
        let listener = bind(&config.uds_path)?;
        let socket_file = file_id(&config.uds_path);
        Ok(Vsock {
            guest_cid: cid,
            uds_path: config.uds_path.clone(),
            socket_file,
            listener,
            active: None,
            bad_packets: LogLimiter::default(),
        })
    }

    /// The guest's context id.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// Host connections while the device is not active are refused (and
    /// must be taken off the backlog, or the level-triggered watch would
    /// fire forever).
    fn refuse_pending_accepts(&self) {
        while let Ok((stream, _)) = self.listener.accept() {
            drop(stream);
        }
    }

    fn broken(&mut self, why: String, fds: &mut FdWatch) {
        if let Some(mut active) = self.active.take() {
            active.interrupt.device_broken(&why);
            for stream in active.muxer.close_all(fds) {
                fds.close_after(stream);
            }
        }
    }

    fn process_tx(&mut self, fds: &mut FdWatch) {
        let Some(active) = &mut self.active else {
            return;
        };
        let memory = &active.memory;
        let muxer = &mut active.muxer;
        let limiter = &self.bad_packets;
        let cid = self.guest_cid;
        let result = drain_queue(&mut active.tx, memory, active.interrupt.as_ref(), |chain| {
            match read_tx(chain, memory, cid) {
                Ok(pkt) => muxer.guest_packet(pkt, fds),
                Err(e) => {
                    if let Some(count) = limiter.hit() {
                        warn!("virtio-vsock: bad TX packet: {e} ({count} so far)");
                    }
                    if let Some(rst) = e.rst_reply() {
                        muxer.refuse(rst, fds);
                    }
                }
            }
            0
        });
        if let Err(e) = result {
            self.broken(format!("virtio-vsock TX queue: {e}"), fds);
        }
    }

    /// Fills the guest's RX buffers with what the muxer has for it; what
    /// does not fit waits for the next RX notification.
    fn process_rx(&mut self, fds: &mut FdWatch) {
        let Some(active) = &mut self.active else {
            return;
        };
        match fill_rx(active, &self.bad_packets, fds) {
            Ok(true) => active.interrupt.signal_used_queue(),
            Ok(false) => {}
            Err(e) => self.broken(format!("virtio-vsock RX queue: {e}"), fds),
        }
    }
}

/// Returns whether the guest should be interrupted.
fn fill_rx(
    active: &mut Active,
    limiter: &LogLimiter,
    fds: &mut FdWatch,
) -> Result<bool, virtio_queue::Error> {
    let memory = &active.memory;
    let mut used_any = false;
    loop {
        active.rx.disable_notification(memory)?;
        while active.muxer.has_rx() {
            let Some(chain) = active.rx.iter(memory)?.next() else {
                break;
            };
            let head = chain.head_index();
            let written = match RxBuffers::from_chain(chain, memory) {
                Ok(buffers) => match active.muxer.next_rx(buffers.max_payload(), fds) {
                    Some(pkt) => buffers.write(memory, &pkt.header, &pkt.data),
                    None => 0,
                },
                Err(e) => {
                    if let Some(count) = limiter.hit() {
                        warn!("virtio-vsock: bad RX buffer: {e} ({count} so far)");
                    }
                    0
                }
            };
            active.rx.add_used(memory, head, written)?;
            used_any = true;
        }
        // Buffers that arrived before notifications were back on, while
        // packets still wait, are used now.
        if !active.rx.enable_notification(memory)? || !active.muxer.has_rx() {
            break;
        }
    }
    Ok(used_any && active.rx.needs_notification(memory)?)
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl Drop for Vsock {
    fn drop(&mut self) {
        if self.socket_file.is_some() && file_id(&self.uds_path) == self.socket_file {
            let _ = std::fs::remove_file(&self.uds_path);
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn features(&self) -> u64 {
        VERSION_1 | (1 << VIRTIO_RING_F_EVENT_IDX)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_vsock_config { le64 guest_cid; }
        crate::virtio::read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn activate(
        &mut self,
        memory: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<dyn VirtioInterrupt>,
        _fds: &mut FdWatch,
    ) -> Result<(), ActivateError> {
        if let Some(index) = (0..3).find(|&i| !queues.get(i).is_some_and(|q| q.ready())) {
            return Err(ActivateError::QueueNotReady { index });
        }
        let mut queues = queues.into_iter();
        let (Some(rx), Some(tx), Some(event)) = (queues.next(), queues.next(), queues.next())
        else {
            return Err(ActivateError::QueueNotReady { index: 0 });
        };
        self.active = Some(Active {
            memory,
            rx,
            tx,
            _event: event,
            interrupt,
            muxer: Muxer::new(self.guest_cid, self.uds_path.clone()),
        });
        Ok(())
    }

    fn queue_notified(&mut self, index: usize, fds: &mut FdWatch) {
        let Some(active) = &mut self.active else {
            return;
        };
        active.muxer.release_closed();
        match index {
            TX_QUEUE => {
                self.process_tx(fds);
                self.process_rx(fds);
            }
            RX_QUEUE => self.process_rx(fds),
            _ => {}
        }
    }

    fn host_fds(&self) -> Vec<(RawFd, EventSet)> {
        vec![(self.listener.as_raw_fd(), EventSet::IN)]
    }

    fn host_event(&mut self, fd: RawFd, events: EventSet, fds: &mut FdWatch) {
        let Some(active) = &mut self.active else {
            if fd == self.listener.as_raw_fd() {
                self.refuse_pending_accepts();
            }
            return;
        };
        active.muxer.release_closed();
        if fd == self.listener.as_raw_fd() {
            active.muxer.accept(&self.listener, fds);
        } else {
            active.muxer.host_event(fd, events, fds);
        }
        self.process_rx(fds);
    }

    fn reset(&mut self, fds: &mut FdWatch) {
        // The event queue is gone with the session, so there is no queue
        // to send VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on: the guest driver
        // drops its connections when it resets the device.
        if let Some(mut active) = self.active.take() {
            for stream in active.muxer.close_all(fds) {
                fds.close_after(stream);
            }
        }
    }
}
