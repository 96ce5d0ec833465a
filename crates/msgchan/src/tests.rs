extern crate std;

use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::Arc;
use std::vec::Vec;

use super::*;

/// A region in host memory: words with atomic access (bytes are reached inside their word).
#[derive(Clone)]
struct Heap(Arc<Vec<AtomicU32>>);

impl Heap {
    fn new(size: usize) -> Self {
        Heap(Arc::new((0..size / 4).map(|_| AtomicU32::new(0)).collect()))
    }

    fn byte(&self, off: usize) -> u8 {
        (self.0[off / 4].load(Ordering::Relaxed) >> (8 * (off % 4))) as u8
    }

    fn set_byte(&self, off: usize, b: u8) {
        let word = &self.0[off / 4];
        let shift = 8 * (off % 4);
        let mut cur = word.load(Ordering::Relaxed);
        loop {
            let new = (cur & !(0xFF << shift)) | u32::from(b) << shift;
            match word.compare_exchange(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
    }
}

impl Shared for Heap {
    fn size(&self) -> usize {
        self.0.len() * 4
    }
    fn load(&self, off: usize) -> u32 {
        assert!(off % 4 == 0 && off + 4 <= self.size(), "load at {off:#x}");
        self.0[off / 4].load(Ordering::Acquire)
    }
    fn store(&self, off: usize, value: u32) {
        assert!(off % 4 == 0 && off + 4 <= self.size(), "store at {off:#x}");
        self.0[off / 4].store(value, Ordering::Release);
    }
    fn read(&self, off: usize, buf: &mut [u8]) {
        assert!(
            off + buf.len() <= self.size(),
            "read at {off:#x}+{}",
            buf.len()
        );
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.byte(off + i);
        }
    }
    fn write(&self, off: usize, data: &[u8]) {
        assert!(
            off + data.len() <= self.size(),
            "write at {off:#x}+{}",
            data.len()
        );
        for (i, &b) in data.iter().enumerate() {
            self.set_byte(off + i, b);
        }
    }
    fn fence(&self) {
        fence(Ordering::SeqCst);
    }
}

const SIZE: usize = 0x400 + 2 * 1024;

fn pair(size: usize) -> (Heap, Channel<Heap>, Channel<Heap>) {
    let heap = Heap::new(size);
    let a = Channel::open(heap.clone(), 0).unwrap();
    let b = Channel::open(heap.clone(), 1).unwrap();
    (heap, a, b)
}

fn msg(i: usize) -> Vec<u8> {
    (0..(i * 7) % 200).map(|j| (i + j) as u8).collect()
}

#[test]
fn ring_sizes_fit_the_region() {
    assert_eq!(ring_bytes_for(0x400 + 2 * 256), Some(256));
    assert_eq!(ring_bytes_for(0x400 + 2 * 256 - 1), None);
    assert_eq!(
        ring_bytes_for(0x1_0000),
        Some(0x4000),
        "64 KiB: two 16 KiB rings"
    );
    assert_eq!(ring_bytes_for(0x400 + 2 * 1000), Some(512));
    assert_eq!(ring_bytes_for(0), None);
    assert_eq!(ring_bytes_for(usize::MAX), Some(1 << 31));
    let heap = Heap::new(0x400);
    assert!(matches!(
        Channel::open(heap, 0),
        Err(ChannelError::RegionTooSmall { size: 0x400 })
    ));
}

#[test]
fn peer_1_waits_for_peer_0s_format() {
    let heap = Heap::new(SIZE);
    assert!(matches!(
        Channel::open(heap.clone(), 1),
        Err(ChannelError::NotFormatted)
    ));
    assert!(matches!(
        Channel::open(heap.clone(), 2),
        Err(ChannelError::BadPeer(2))
    ));
    let a = Channel::open(heap.clone(), 0).unwrap();
    assert!(!a.peer_attached());
    let b = Channel::open(heap.clone(), 1).unwrap();
    assert!(a.peer_attached() && b.peer_attached());
    assert_eq!((a.ring_bytes(), a.max_message()), (1024, 256));
    b.close();
    assert!(!a.peer_attached());
    // A header of another size is not ours.
    heap.store(OFF_RING_BYTES, 512);
    assert!(matches!(
        Channel::open(heap.clone(), 1),
        Err(ChannelError::BadHeader {
            ring_bytes: 512,
            ..
        })
    ));
}

#[test]
fn messages_cross_in_order_both_ways_and_wrap_with_pads() {
    let (_, mut a, mut b) = pair(SIZE);
    let mut buf = [0u8; 256];
    for i in 0..5_000 {
        let m = msg(i);
        assert_eq!(a.send(&m), Ok(Some(Notify::NotNeeded)), "message {i}");
        assert_eq!(b.recv(&mut buf), Ok(Some(m.len())));
        assert_eq!(&buf[..m.len()], &m[..], "message {i}");
        assert_eq!(b.send(&m[..m.len() / 2]), Ok(Some(Notify::NotNeeded)));
        assert_eq!(a.recv(&mut buf), Ok(Some(m.len() / 2)));
    }
    assert_eq!(a.recv(&mut buf), Ok(None));
    assert_eq!(b.recv(&mut buf), Ok(None));
}

#[test]
fn a_full_ring_refuses_until_the_reader_reads() {
    let (_, mut a, mut b) = pair(SIZE);
    let m = [0xAB; 100]; // 104-byte records: 9 fit in 1 KiB
    let mut sent = 0;
    while a.send(&m).unwrap().is_some() {
        sent += 1;
    }
    assert_eq!(sent, 9);
    assert_eq!(a.send(&m), Ok(None), "still full");
    let mut buf = [0u8; 256];
    assert_eq!(b.recv(&mut buf), Ok(Some(100)));
    assert!(a.send(&m).unwrap().is_some());
    assert_eq!(
        a.send(&[0; 257]),
        Err(ChannelError::TooLong { len: 257, max: 256 })
    );
    // A short buffer keeps the message.
    assert_eq!(
        b.recv(&mut buf[..10]),
        Err(ChannelError::TooLong { len: 100, max: 10 })
    );
    assert_eq!(b.recv(&mut buf), Ok(Some(100)));
}

#[test]
fn a_sleeping_reader_asks_for_the_doorbell() {
    let (_, mut a, mut b) = pair(SIZE);
    assert!(b.prepare_wait(), "nothing waits: b may sleep");
    assert_eq!(a.send(b"x"), Ok(Some(Notify::Doorbell)));
    assert_eq!(
        a.send(b"y"),
        Ok(Some(Notify::NotNeeded)),
        "one doorbell per sleep"
    );
    b.end_wait();
    // A message already there: do not sleep.
    assert!(!b.prepare_wait());
    b.end_wait();
    let mut buf = [0u8; 8];
    assert_eq!(b.recv(&mut buf), Ok(Some(1)));
}

#[test]
fn a_new_attach_drops_what_waited_for_the_old_one() {
    let (heap, mut a, b) = pair(SIZE);
    a.send(b"stale").unwrap();
    drop(b);
    let mut b = Channel::open(heap.clone(), 1).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(b.recv(&mut buf), Ok(None));
    a.send(b"new").unwrap();
    assert_eq!(b.recv(&mut buf), Ok(Some(3)));
    // Peer 0 attaching again keeps the format and the ring it writes.
    let mut a = Channel::open(heap, 0).unwrap();
    a.send(b"again").unwrap();
    assert_eq!(b.recv(&mut buf), Ok(Some(5)));
}

#[test]
fn a_hostile_peer_breaks_only_the_channel() {
    let mut buf = [0u8; 256];
    // The writer's head far ahead.
    let (heap, _a, mut b) = pair(SIZE);
    heap.store(off_head(0), 4096);
    assert!(matches!(b.recv(&mut buf), Err(ChannelError::Corrupt(_))));
    assert!(
        matches!(b.send(b"x"), Err(ChannelError::Corrupt(_))),
        "broken for good"
    );
    // A record longer than allowed.
    let (heap, mut a, mut b) = pair(SIZE);
    a.send(b"hello").unwrap();
    heap.store(DATA_OFFSET, 10_000);
    assert!(matches!(b.recv(&mut buf), Err(ChannelError::Corrupt(_))));
    // A record past the head.
    let (heap, mut a, mut b) = pair(SIZE);
    a.send(b"hello").unwrap();
    heap.store(DATA_OFFSET, 200);
    assert!(matches!(b.recv(&mut buf), Err(ChannelError::Corrupt(_))));
    // A misaligned head.
    let (heap, _a, mut b) = pair(SIZE);
    heap.store(off_head(0), 3);
    assert!(matches!(b.recv(&mut buf), Err(ChannelError::Corrupt(_))));
    // The reader's tail moved ahead of our head.
    let (heap, mut a, _b) = pair(SIZE);
    heap.store(off_tail(0), 64);
    assert!(matches!(a.send(b"x"), Err(ChannelError::Corrupt(_))));
    // Counters garbled before an attach: the ring starts again.
    let heap = Heap::new(SIZE);
    drop(Channel::open(heap.clone(), 0).unwrap());
    heap.store(off_head(1), 0xDEAD_BEEF);
    let mut b = Channel::open(heap.clone(), 1).unwrap();
    let mut a = Channel::open(heap, 0).unwrap();
    b.send(b"ok").unwrap();
    assert_eq!(a.recv(&mut buf), Ok(Some(2)));
}

/// Random words anywhere in the region, between sends and receives: never a panic, never an
/// access outside the region (the heap asserts), and the channel either works or says corrupt.
#[test]
fn random_scribbles_never_escape_the_region() {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..300 {
        let (heap, mut a, mut b) = pair(SIZE);
        let mut buf = [0u8; 256];
        for _ in 0..50 {
            let r = next();
            match r % 4 {
                0 => {
                    let off = (next() as usize % (SIZE / 4)) * 4;
                    heap.store(off, next() as u32);
                }
                1 => {
                    let _ = a.send(&msg(r as usize % 300));
                }
                2 => {
                    let _ = b.recv(&mut buf);
                }
                _ => {
                    let _ = b.send(&msg(r as usize % 300));
                    let _ = a.recv(&mut buf);
                }
            }
        }
    }
}

#[test]
fn two_threads_exchange_100_000_messages_each_way() {
    let heap = Heap::new(0x400 + 2 * 4096);
    let a = Channel::open(heap.clone(), 0).unwrap();
    let b = Channel::open(heap, 1).unwrap();
    const N: usize = 100_000;
    let run = |mut ch: Channel<Heap>| {
        move || {
            let (mut sent, mut got) = (0usize, 0usize);
            let mut buf = [0u8; 256];
            let tag = ch.me() as u8;
            while sent < N || got < N {
                if sent < N {
                    let m: Vec<u8> = (0..sent % 61).map(|j| (sent + j) as u8 ^ tag).collect();
                    if ch.send(&m).unwrap().is_some() {
                        sent += 1;
                    }
                }
                if let Some(len) = ch.recv(&mut buf).unwrap() {
                    let want: Vec<u8> =
                        (0..got % 61).map(|j| (got + j) as u8 ^ (1 - tag)).collect();
                    assert_eq!(&buf[..len], &want[..], "message {got}");
                    got += 1;
                }
            }
        }
    };
    let ta = std::thread::spawn(run(a));
    let tb = std::thread::spawn(run(b));
    ta.join().unwrap();
    tb.join().unwrap();
}

#[test]
fn empty_messages_are_messages() {
    let (_, mut a, mut b) = pair(SIZE);
    let mut buf = [0u8; 4];
    assert_eq!(b.recv(&mut buf), Ok(None));
    assert!(a.send(&[]).unwrap().is_some());
    assert_eq!(b.recv(&mut buf), Ok(Some(0)));
    assert_eq!(b.recv(&mut buf), Ok(None));
}
