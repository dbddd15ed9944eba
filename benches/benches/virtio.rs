//! Hot paths of the virtio devices, without KVM: parsing a virtio-blk
//! request from a descriptor chain, executing it against an in-memory disk,
//! and draining a virtqueue (virtio-rng) with virtio-queue's mock rings.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use devices::virtio::block::{parse, process_request, MemoryDisk, RequestContext, ID_BYTES};
use devices::virtio::rng::Rng;
use devices::virtio::{FdWatch, VirtioDevice, VirtioInterrupt};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const HEADER: u64 = 0x10_0000;
const DATA: u64 = 0x11_0000;
const STATUS: u64 = 0x12_0000;
const DISK_SECTORS: usize = 2048;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap()
}

/// A read (type 0) of `len` bytes at sector 8: header, data, status.
fn read_request(memory: &GuestMemoryMmap, len: u32) -> [Descriptor; 3] {
    let mut header = [0u8; 16];
    header[8..16].copy_from_slice(&8u64.to_le_bytes());
    memory.write_slice(&header, GuestAddress(HEADER)).unwrap();
    [
        Descriptor::new(HEADER, 16, VRING_DESC_F_NEXT as u16, 1),
        Descriptor::new(
            DATA,
            len,
            (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
            2,
        ),
        Descriptor::new(STATUS, 1, VRING_DESC_F_WRITE as u16, 0),
    ]
}

fn bench_block(c: &mut Criterion) {
    let memory = memory();
    let mut group = c.benchmark_group("virtio_blk");
    let chain = read_request(&memory, 4096);
    group.bench_function("parse_read_4k", |b| {
        b.iter(|| parse(black_box(chain), &memory, DISK_SECTORS as u64, 0).unwrap())
    });
    let mut disk = MemoryDisk::new(DISK_SECTORS);
    let id = [0u8; ID_BYTES];
    let mut bounce = Vec::new();
    group.throughput(Throughput::Bytes(4096));
    group.bench_function("read_4k_in_memory", |b| {
        b.iter(|| {
            let mut ctx = RequestContext {
                backend: &mut disk,
                capacity_sectors: DISK_SECTORS as u64,
                features: 0,
                id: &id,
                bounce: &mut bounce,
            };
            process_request(black_box(chain), &memory, &mut ctx)
        })
    });
    group.finish();
}

/// Counts nothing: the benchmark measures the device side only.
struct NoInterrupt;

impl VirtioInterrupt for NoInterrupt {
    fn signal_used_queue(&self) {}
    fn signal_config_changed(&self) {}
    fn device_broken(&self, _why: &str) {}
}

fn bench_queue(c: &mut Criterion) {
    let memory = memory();
    let mut group = c.benchmark_group("virtqueue");
    // 8 chains of one 64-byte buffer each, drained in one notification.
    group.throughput(Throughput::Elements(8));
    group.bench_function("rng_drain_8_chains", |b| {
        b.iter_batched(
            || {
                let mock = MockSplitQueue::new(&memory, 16);
                let chains: Vec<RawDescriptor> = (0..8)
                    .map(|i| {
                        RawDescriptor::from(Descriptor::new(
                            0x18_0000 + i * 64,
                            64,
                            VRING_DESC_F_WRITE as u16,
                            0,
                        ))
                    })
                    .collect();
                mock.add_desc_chains(&chains, 0).unwrap();
                let mut rng = Rng::new();
                rng.activate(
                    memory.clone(),
                    vec![mock.create_queue().unwrap()],
                    Arc::new(NoInterrupt),
                    &mut FdWatch::default(),
                )
                .unwrap();
                rng
            },
            |mut rng| rng.queue_notified(0, &mut FdWatch::default()),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_block, bench_queue);
criterion_main!(benches);
