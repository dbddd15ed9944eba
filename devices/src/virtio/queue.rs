//! Processing a virtqueue with `virtio-queue`: take each available chain,
//! hand it to the device, put it in the used ring, and interrupt the guest
//! only as its notification suppression (EVENT_IDX) asks.

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::VirtioInterrupt;

/// A chain of descriptors in guest memory, as devices see it.
pub type Chain<'a> = DescriptorChain<&'a GuestMemoryMmap>;

/// Processes every chain available in `queue`: `handle` does the work and
/// returns how many bytes it wrote into the chain's device-writable
/// buffers, which go with the chain into the used ring. Notifications from
/// the guest are disabled while the queue is drained, and the guest is
/// interrupted once at the end if it asked to be.
///
/// An error means the queue's rings are unusable (an available index that
/// runs ahead of the queue size, a ring outside guest memory): the caller
/// marks the device broken.
pub fn drain_queue(
    queue: &mut Queue,
    memory: &GuestMemoryMmap,
    interrupt: &dyn VirtioInterrupt,
    mut handle: impl FnMut(Chain<'_>) -> u32,
) -> Result<(), virtio_queue::Error> {
    let mut used_any = false;
    loop {
        queue.disable_notification(memory)?;
        while let Some(chain) = queue.iter(memory)?.next() {
            let head = chain.head_index();
            let written = handle(chain);
            queue.add_used(memory, head, written)?;
            used_any = true;
        }
        // More chains may have arrived before notifications were back on.
        if !queue.enable_notification(memory)? {
            break;
        }
    }
    if used_any && queue.needs_notification(memory)? {
        interrupt.signal_used_queue();
    }
    Ok(())
}
