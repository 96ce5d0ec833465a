//! Fuzz target: a guest RAM image the fuzzer fills (descriptor table, rings,
//! indirect tables), a queue size and features from the first bytes; every
//! pop must end in a chain whose buffers lie in RAM, or an error; never a
//! panic, and never more descriptors than the queue allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vcpu::{GuestMemory, VecMemory};
use virtio::queue::{Queue, VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC};

const RAM: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    // Small queues keep the table (at 0) and the rings (0x100, 0x200) within
    // the first bytes of input, where the fuzzer can reach them.
    let size = 1u16 << (head % 5); // 1..=16
    let features = (u64::from(head >> 5) << 28) & (VIRTIO_F_INDIRECT_DESC | VIRTIO_F_EVENT_IDX);
    let mut mem = VecMemory::new(RAM);
    let n = rest.len().min(RAM);
    mem.write(0, &rest[..n]).unwrap();
    let Ok(mut q) = Queue::new(size, 0x000, 0x100, 0x200, features) else {
        return;
    };
    for _ in 0..(2 * usize::from(size)) {
        match q.pop(&mem) {
            Ok(Some(chain)) => {
                assert!(chain.descriptors.len() <= 2 * usize::from(size));
                for d in &chain.descriptors {
                    assert!(mem.layout().locate(d.addr, u64::from(d.len)).is_some());
                }
                let _ = q.push_used(&mut mem, chain.head, 0);
                let _ = q.needs_interrupt(&mem);
            }
            Ok(None) | Err(_) => break,
        }
    }
});
