use alloc::vec;

use vcpu::VecMemory;

use super::*;

const RAM: usize = 1 << 20;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const SIZE: u16 = 8;
const ALL: u64 = VIRTIO_F_INDIRECT_DESC | VIRTIO_F_EVENT_IDX;

fn mem() -> VecMemory {
    VecMemory::new(RAM)
}

fn desc(m: &mut VecMemory, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&addr.to_le_bytes());
    b[8..12].copy_from_slice(&len.to_le_bytes());
    b[12..14].copy_from_slice(&flags.to_le_bytes());
    b[14..].copy_from_slice(&next.to_le_bytes());
    m.write(table + 16 * u64::from(i), &b).unwrap();
}

/// Makes `heads` available (slots from 0) and sets the available index.
fn offer(m: &mut VecMemory, heads: &[u16], idx: u16) {
    for (slot, h) in heads.iter().enumerate() {
        m.write(AVAIL + 4 + 2 * slot as u64, &h.to_le_bytes())
            .unwrap();
    }
    m.write(AVAIL + 2, &idx.to_le_bytes()).unwrap();
}

fn u16_at(m: &VecMemory, gpa: u64) -> u16 {
    let mut b = [0u8; 2];
    m.read(gpa, &mut b).unwrap();
    u16::from_le_bytes(b)
}

fn queue(features: u64) -> Queue {
    Queue::new(SIZE, DESC, AVAIL, USED, features).unwrap()
}

#[test]
fn sizes_must_be_powers_of_two_up_to_32768() {
    for bad in [0u16, 3, 6, 100, 32767, 65535] {
        assert_eq!(
            Queue::new(bad, DESC, AVAIL, USED, 0),
            Err(QueueError::BadSize(bad))
        );
    }
    for good in [1u16, 2, 256, 32768] {
        assert!(Queue::new(good, DESC, AVAIL, USED, 0).is_ok());
    }
}

#[test]
fn a_chain_is_popped_used_and_signalled() {
    let mut m = mem();
    let mut q = queue(0);
    assert_eq!(q.pop(&m), Ok(None), "nothing available yet");
    // A request header (readable), then a status byte (writable).
    desc(&mut m, DESC, 2, 0x8000, 16, VIRTQ_DESC_F_NEXT, 5);
    desc(&mut m, DESC, 5, 0x9000, 1, VIRTQ_DESC_F_WRITE, 0);
    offer(&mut m, &[2], 1);
    let chain = q.pop(&m).unwrap().unwrap();
    assert_eq!(chain.head, 2);
    assert_eq!(
        chain.descriptors,
        vec![
            Descriptor {
                addr: 0x8000,
                len: 16,
                writable: false
            },
            Descriptor {
                addr: 0x9000,
                len: 1,
                writable: true
            },
        ]
    );
    assert_eq!(chain.readable().count(), 1);
    assert_eq!(chain.writable().count(), 1);
    assert_eq!(q.pop(&m), Ok(None), "taken once");
    q.push_used(&mut m, chain.head, 1).unwrap();
    assert_eq!(u16_at(&m, USED + 2), 1);
    assert_eq!(u16_at(&m, USED + 4), 2, "the used element names the head");
    assert!(q.needs_interrupt(&m).unwrap());
    assert!(!q.needs_interrupt(&m).unwrap(), "nothing new since");
    // The driver asks for no interrupts.
    m.write(AVAIL, &VIRTQ_AVAIL_F_NO_INTERRUPT.to_le_bytes())
        .unwrap();
    offer(&mut m, &[2, 2], 2);
    let c = q.pop(&m).unwrap().unwrap();
    q.push_used(&mut m, c.head, 0).unwrap();
    assert!(!q.needs_interrupt(&m).unwrap());
}

#[test]
fn the_event_index_batches_interrupts_and_notifications() {
    let mut m = mem();
    let mut q = queue(VIRTIO_F_EVENT_IDX);
    desc(&mut m, DESC, 0, 0x8000, 4, VIRTQ_DESC_F_WRITE, 0);
    // used_event = 2: interrupt only once the used index passes 2.
    m.write(AVAIL + 4 + 2 * u64::from(SIZE), &2u16.to_le_bytes())
        .unwrap();
    offer(&mut m, &[0, 0, 0], 3);
    let mut interrupts = 0;
    for _ in 0..3 {
        let c = q.pop(&m).unwrap().unwrap();
        q.push_used(&mut m, c.head, 4).unwrap();
        interrupts += u32::from(q.needs_interrupt(&m).unwrap());
    }
    assert_eq!(
        interrupts, 1,
        "one interrupt for the batch, when used passed 2"
    );
    // avail_event tells the driver which index to notify at.
    assert_eq!(u16_at(&m, USED + 4 + 8 * u64::from(SIZE)), 3);
    assert!(need_event(0xFFFF, 0, 0xFFFE), "wraps around 2^16");
    assert!(!need_event(5, 5, 4));
    assert!(need_event(4, 5, 4));
}

#[test]
fn indirect_tables_are_followed_when_negotiated() {
    let mut m = mem();
    let table = 0x5000;
    desc(&mut m, table, 0, 0x8000, 16, VIRTQ_DESC_F_NEXT, 1);
    desc(
        &mut m,
        table,
        1,
        0x8100,
        512,
        VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
        2,
    );
    desc(&mut m, table, 2, 0x8400, 1, VIRTQ_DESC_F_WRITE, 0);
    desc(&mut m, DESC, 0, table, 48, VIRTQ_DESC_F_INDIRECT, 0);
    offer(&mut m, &[0], 1);
    let mut q = queue(ALL);
    let c = q.pop(&m).unwrap().unwrap();
    assert_eq!(c.descriptors.len(), 3);
    assert_eq!(c.writable().map(|d| d.len).sum::<u32>(), 513);
    // Without the feature the same ring is an error.
    let mut q = queue(VIRTIO_F_EVENT_IDX);
    assert_eq!(q.pop(&m), Err(QueueError::IndirectNotNegotiated));
}

/// One hostile ring: `setup` writes it, the pop must fail with `want`.
fn hostile(want: QueueError, setup: impl FnOnce(&mut VecMemory)) {
    let mut m = mem();
    setup(&mut m);
    let mut q = queue(ALL);
    assert_eq!(q.pop(&m), Err(want));
    // The queue did not move past the bad chain: a reset is the way out.
    assert_eq!(q.used_idx(), 0);
}

#[test]
fn hostile_rings_are_errors_never_panics_nor_out_of_ram_accesses() {
    // A head outside the table.
    hostile(
        QueueError::IndexOutOfRange {
            index: 8,
            size: SIZE,
        },
        |m| offer(m, &[8], 1),
    );
    // A next index outside the table.
    hostile(
        QueueError::IndexOutOfRange {
            index: 200,
            size: SIZE,
        },
        |m| {
            desc(m, DESC, 0, 0x8000, 1, VIRTQ_DESC_F_NEXT, 200);
            offer(m, &[0], 1);
        },
    );
    // A loop: 0 -> 1 -> 0.
    hostile(QueueError::ChainTooLong, |m| {
        desc(m, DESC, 0, 0x8000, 1, VIRTQ_DESC_F_NEXT, 1);
        desc(m, DESC, 1, 0x8000, 1, VIRTQ_DESC_F_NEXT, 0);
        offer(m, &[0], 1);
    });
    // A buffer outside RAM, and one that wraps the address space.
    hostile(
        QueueError::OutsideRam {
            gpa: RAM as u64 - 1,
            len: 2,
        },
        |m| {
            desc(m, DESC, 0, RAM as u64 - 1, 2, 0, 0);
            offer(m, &[0], 1);
        },
    );
    hostile(
        QueueError::OutsideRam {
            gpa: u64::MAX,
            len: 0xFFFF_FFFF,
        },
        |m| {
            desc(m, DESC, 0, u64::MAX, u32::MAX, 0, 0);
            offer(m, &[0], 1);
        },
    );
    // Device-readable after device-writable.
    hostile(QueueError::ReadableAfterWritable, |m| {
        desc(
            m,
            DESC,
            0,
            0x8000,
            1,
            VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
            1,
        );
        desc(m, DESC, 1, 0x8000, 1, 0, 0);
        offer(m, &[0], 1);
    });
    // The available index jumps by more than the queue size.
    hostile(
        QueueError::IndexJump {
            avail_idx: 9,
            last_seen: 0,
        },
        |m| offer(m, &[0], 9),
    );
    hostile(
        QueueError::IndexJump {
            avail_idx: 0xFFFF,
            last_seen: 0,
        },
        |m| offer(m, &[0], 0xFFFF),
    );
    // Indirect: with NEXT, nested, empty, ragged, longer than the queue, looping, out of RAM.
    hostile(QueueError::BadIndirect, |m| {
        desc(
            m,
            DESC,
            0,
            0x5000,
            16,
            VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT,
            1,
        );
        offer(m, &[0], 1);
    });
    hostile(QueueError::BadIndirect, |m| {
        desc(m, 0x5000, 0, 0x6000, 16, VIRTQ_DESC_F_INDIRECT, 0);
        desc(m, DESC, 0, 0x5000, 16, VIRTQ_DESC_F_INDIRECT, 0);
        offer(m, &[0], 1);
    });
    for len in [0u32, 17, 16 * (u32::from(SIZE) + 1)] {
        hostile(QueueError::BadIndirectLength(len), |m| {
            desc(m, DESC, 0, 0x5000, len, VIRTQ_DESC_F_INDIRECT, 0);
            offer(m, &[0], 1);
        });
    }
    hostile(QueueError::ChainTooLong, |m| {
        desc(m, 0x5000, 0, 0x8000, 1, VIRTQ_DESC_F_NEXT, 1);
        desc(m, 0x5000, 1, 0x8000, 1, VIRTQ_DESC_F_NEXT, 0);
        desc(m, DESC, 0, 0x5000, 32, VIRTQ_DESC_F_INDIRECT, 0);
        offer(m, &[0], 1);
    });
    hostile(QueueError::IndexOutOfRange { index: 2, size: 2 }, |m| {
        desc(m, 0x5000, 0, 0x8000, 1, VIRTQ_DESC_F_NEXT, 2);
        desc(m, DESC, 0, 0x5000, 32, VIRTQ_DESC_F_INDIRECT, 0);
        offer(m, &[0], 1);
    });
    hostile(
        QueueError::OutsideRam {
            gpa: RAM as u64 - 16,
            len: 32,
        },
        |m| {
            desc(m, DESC, 0, RAM as u64 - 16, 32, VIRTQ_DESC_F_INDIRECT, 0);
            offer(m, &[0], 1);
        },
    );
}

#[test]
fn rings_outside_ram_are_errors() {
    let m = mem();
    let mut q = Queue::new(SIZE, DESC, RAM as u64, USED, 0).unwrap();
    assert_eq!(
        q.pop(&m),
        Err(QueueError::OutsideRam {
            gpa: RAM as u64 + 2,
            len: 2
        })
    );
    let mut m = mem();
    let mut q = Queue::new(SIZE, DESC, AVAIL, u64::MAX - 4, 0).unwrap();
    assert!(matches!(
        q.push_used(&mut m, 0, 0),
        Err(QueueError::OutsideRam { .. })
    ));
    // Zero-length buffers are the device's to judge, not the queue's.
    let mut m = mem();
    desc(&mut m, DESC, 0, 0x8000, 0, 0, 0);
    offer(&mut m, &[0], 1);
    let mut q = queue(0);
    assert_eq!(q.pop(&m).unwrap().unwrap().descriptors[0].len, 0);
}
