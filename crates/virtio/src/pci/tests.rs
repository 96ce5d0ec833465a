//! The transport and the devices driven the way a guest driver does: through
//! BAR accesses, rings in guest memory, interrupts out.

use super::*;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use spin::Mutex;
use vcpu::{GuestMemError, GuestMemory};
use vdev::PciFunction;

use crate::blk::{self, Blk, MemDisk};
use crate::console::{Console, ConsolePipe};
use crate::net::{Net, NET_HDR_LEN};
use crate::queue::{VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use crate::rng::{EntropySource, Rng};
use crate::switch::{PortWaker, Switch};

const RAM: usize = 0x10_0000;

/// Guest RAM the test (the driver) and the device share.
#[derive(Clone)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl GuestMemory for Shared {
    fn size(&self) -> u64 {
        RAM as u64
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemError> {
        let m = self.0.lock();
        let at = gpa as usize;
        match m.get(at..at.wrapping_add(buf.len())) {
            Some(s) if at.checked_add(buf.len()).is_some() => {
                buf.copy_from_slice(s);
                Ok(())
            }
            _ => Err(GuestMemError {
                gpa,
                len: buf.len(),
            }),
        }
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), GuestMemError> {
        let mut m = self.0.lock();
        let at = gpa as usize;
        match m.get_mut(at..at.wrapping_add(data.len())) {
            Some(s) if at.checked_add(data.len()).is_some() => {
                s.copy_from_slice(data);
                Ok(())
            }
            _ => Err(GuestMemError {
                gpa,
                len: data.len(),
            }),
        }
    }
}

/// Where the driver puts queue `q`'s structures.
fn ring(q: u16) -> (u64, u64, u64) {
    let base = 0x1_0000 + u64::from(q) * 0x4000;
    (base, base + 0x1000, base + 0x2000)
}

const QSIZE: u16 = 16;

/// A minimal modern virtio-pci driver.
struct Driver {
    dev: VirtioPci,
    mem: Shared,
    out: Vec<MsiMessage>,
    /// Per queue: next free descriptor, avail idx, used idx seen.
    next_desc: Vec<u16>,
    avail_idx: Vec<u16>,
    used_seen: Vec<u16>,
    /// Next free buffer address.
    heap: u64,
}

impl Driver {
    fn new(device: Box<dyn VirtioDevice>) -> Self {
        let mem = Shared(Arc::new(Mutex::new(vec![0; RAM])));
        let dev = VirtioPci::new(device, Box::new(mem.clone()), 0xC000_0000, 0xC000_4000);
        let n = usize::from(dev.device().queue_count());
        Driver {
            dev,
            mem,
            out: Vec::new(),
            next_desc: vec![0; n],
            avail_idx: vec![0; n],
            used_seen: vec![0; n],
            heap: 0x8_0000,
        }
    }

    fn r(&mut self, off: u64, size: u8) -> u64 {
        self.dev.bar_read(0, off, size, &mut self.out)
    }

    fn w(&mut self, off: u64, size: u8, v: u64) {
        let mut out = core::mem::take(&mut self.out);
        self.dev.bar_write(0, off, size, v, &mut out);
        self.out = out;
    }

    fn features(&mut self) -> u64 {
        self.w(DEVICE_FEATURE_SELECT, 4, 0);
        let lo = self.r(DEVICE_FEATURE, 4);
        self.w(DEVICE_FEATURE_SELECT, 4, 1);
        lo | self.r(DEVICE_FEATURE, 4) << 32
    }

    /// Negotiates `accept` (masked by what is offered); whether FEATURES_OK stuck.
    fn negotiate(&mut self, accept: u64) -> bool {
        self.w(DEVICE_STATUS, 1, 0);
        self.w(
            DEVICE_STATUS,
            1,
            u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER),
        );
        let f = self.features() & accept;
        self.w(DRIVER_FEATURE_SELECT, 4, 0);
        self.w(DRIVER_FEATURE, 4, f & 0xFFFF_FFFF);
        self.w(DRIVER_FEATURE_SELECT, 4, 1);
        self.w(DRIVER_FEATURE, 4, f >> 32);
        self.w(
            DEVICE_STATUS,
            1,
            u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK),
        );
        self.r(DEVICE_STATUS, 1) as u8 & STATUS_FEATURES_OK != 0
    }

    fn setup_queue(&mut self, q: u16, size: u16) {
        let (d, a, u) = ring(q);
        self.w(QUEUE_SELECT, 2, u64::from(q));
        self.w(QUEUE_SIZE, 2, u64::from(size));
        for (field, addr) in [(QUEUE_DESC, d), (QUEUE_DRIVER, a), (QUEUE_DEVICE, u)] {
            self.w(field, 4, addr & 0xFFFF_FFFF);
            self.w(field + 4, 4, addr >> 32);
        }
        self.w(QUEUE_ENABLE, 2, 1);
    }

    /// Up with `accept` features and every queue of size QSIZE.
    fn start(&mut self, accept: u64) {
        assert!(self.negotiate(accept));
        for q in 0..self.dev.device().queue_count() {
            self.setup_queue(q, QSIZE);
        }
        self.w(
            DEVICE_STATUS,
            1,
            u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK),
        );
    }

    fn put(&mut self, gpa: u64, data: &[u8]) {
        self.mem.0.lock()[gpa as usize..gpa as usize + data.len()].copy_from_slice(data);
    }

    fn get(&self, gpa: u64, len: usize) -> Vec<u8> {
        self.mem.0.lock()[gpa as usize..gpa as usize + len].to_vec()
    }

    fn u16_at(&self, gpa: u64) -> u16 {
        let b = self.get(gpa, 2);
        u16::from_le_bytes([b[0], b[1]])
    }

    fn alloc(&mut self, len: usize) -> u64 {
        let at = self.heap;
        self.heap += (len as u64).next_multiple_of(16).max(16);
        at
    }

    fn desc(&mut self, q: u16, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let (d, _, _) = ring(q);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..16].copy_from_slice(&next.to_le_bytes());
        self.put(d + 16 * u64::from(i), &b);
    }

    /// Makes a chain of readable `data` buffers then writable buffers of
    /// `lens` available (without notifying); the writable buffers' addresses.
    fn offer(&mut self, q: u16, data: &[&[u8]], lens: &[u32]) -> (u16, Vec<u64>) {
        let total = data.len() + lens.len();
        let first = self.next_desc[usize::from(q)];
        let mut wr = Vec::new();
        for i in 0..total {
            let idx = (first + i as u16) % QSIZE;
            let next = (idx + 1) % QSIZE;
            let more = if i + 1 < total { VIRTQ_DESC_F_NEXT } else { 0 };
            if i < data.len() {
                let at = self.alloc(data[i].len());
                self.put(at, data[i]);
                self.desc(q, idx, at, data[i].len() as u32, more, next);
            } else {
                let len = lens[i - data.len()];
                let at = self.alloc(len as usize);
                wr.push(at);
                self.desc(q, idx, at, len, more | VIRTQ_DESC_F_WRITE, next);
            }
        }
        self.next_desc[usize::from(q)] = (first + total as u16) % QSIZE;
        let (_, a, _) = ring(q);
        let slot = self.avail_idx[usize::from(q)] % QSIZE;
        self.put(a + 4 + 2 * u64::from(slot), &first.to_le_bytes());
        self.avail_idx[usize::from(q)] = self.avail_idx[usize::from(q)].wrapping_add(1);
        let idx = self.avail_idx[usize::from(q)];
        self.put(a + 2, &idx.to_le_bytes());
        (first, wr)
    }

    fn kick(&mut self, q: u16) {
        self.w(
            NOTIFY_OFFSET + u64::from(NOTIFY_MULTIPLIER) * u64::from(q),
            2,
            u64::from(q),
        );
    }

    /// The used entries added since last asked: (head, len).
    fn used(&mut self, q: u16) -> Vec<(u16, u32)> {
        let (_, _, u) = ring(q);
        let idx = self.u16_at(u + 2);
        let mut v = Vec::new();
        while self.used_seen[usize::from(q)] != idx {
            let slot = u64::from(self.used_seen[usize::from(q)] % QSIZE);
            let b = self.get(u + 4 + 8 * slot, 8);
            v.push((
                u16::from_le_bytes([b[0], b[1]]),
                u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            ));
            self.used_seen[usize::from(q)] = self.used_seen[usize::from(q)].wrapping_add(1);
        }
        v
    }
}

fn disk(bytes: usize) -> MemDisk {
    let data: Vec<u8> = (0..bytes).map(|i| (i / 512) as u8 ^ (i as u8)).collect();
    MemDisk::from_vec(data, "quercus-disk0")
}

fn blk_request(kind: u32, sector: u64) -> Vec<u8> {
    let mut h = vec![0u8; 16];
    h[..4].copy_from_slice(&kind.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    h
}

const ALL: u64 = u64::MAX;

#[test]
fn pci_identity_and_capabilities() {
    let mut d = Driver::new(Box::new(Blk::new(Box::new(disk(4096)))));
    let id = d.dev.config_mut().config_read(0);
    assert_eq!(id, 0x1042 << 16 | 0x1AF4);
    assert_eq!(
        d.dev.config_mut().config_read(8) >> 24,
        0x01,
        "mass storage"
    );
    assert_eq!(d.dev.config_mut().config_read(8) & 0xFF, 1, "revision 1");
    // Walk the capability list: four vendor capabilities, then MSI-X.
    let mut at = (d.dev.config_mut().config_read(0x34) & 0xFF) as u16;
    let mut kinds = Vec::new();
    while at != 0 {
        let dw = d.dev.config_mut().config_read(at);
        if dw & 0xFF == 0x09 {
            kinds.push((dw >> 24) as u8);
            let bar = d.dev.config_mut().config_read(at + 4) & 0xFF;
            assert_eq!(bar, 0);
        }
        at = ((dw >> 8) & 0xFF) as u16;
    }
    assert_eq!(kinds, [CFG_COMMON, CFG_NOTIFY, CFG_ISR, CFG_DEVICE]);
    assert_eq!(d.r(NUM_QUEUES, 2), 1);
    assert_eq!(d.features() & VIRTIO_F_VERSION_1, VIRTIO_F_VERSION_1);
}

#[test]
fn features_ok_needs_version_1_and_a_subset() {
    let mut d = Driver::new(Box::new(Blk::new(Box::new(disk(4096)))));
    assert!(
        !d.negotiate(ALL & !VIRTIO_F_VERSION_1),
        "legacy drivers are refused"
    );
    // A bit the device never offered.
    d.w(DEVICE_STATUS, 1, 0);
    d.w(DRIVER_FEATURE_SELECT, 4, 1);
    d.w(DRIVER_FEATURE, 4, 1 | 1 << 20);
    d.w(DEVICE_STATUS, 1, u64::from(STATUS_FEATURES_OK));
    assert_eq!(d.r(DEVICE_STATUS, 1) as u8 & STATUS_FEATURES_OK, 0);
    assert!(d.negotiate(ALL));
    // Features are frozen after FEATURES_OK.
    d.w(DRIVER_FEATURE_SELECT, 4, 0);
    d.w(DRIVER_FEATURE, 4, 0);
    assert_ne!(d.dev.driver_features() as u32, 0);
}

#[test]
fn features_ok_stays_until_a_reset() {
    let mut d = Driver::new(Box::new(Blk::new(Box::new(disk(4096)))));
    d.start(ALL);
    let negotiated = d.dev.driver_features();
    assert_ne!(negotiated & VIRTIO_F_INDIRECT_DESC, 0);
    // A second negotiation without a reset: FEATURES_OK (and DRIVER_OK)
    // cleared by a status write, fewer features, FEATURES_OK set again.
    d.w(
        DEVICE_STATUS,
        1,
        u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER),
    );
    assert_eq!(
        d.dev.status(),
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        "only a reset clears FEATURES_OK"
    );
    d.w(DRIVER_FEATURE_SELECT, 4, 0);
    d.w(DRIVER_FEATURE, 4, 0);
    d.w(DRIVER_FEATURE_SELECT, 4, 1);
    d.w(DRIVER_FEATURE, 4, VIRTIO_F_VERSION_1 >> 32);
    d.w(
        DEVICE_STATUS,
        1,
        u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK),
    );
    assert_eq!(d.dev.driver_features(), negotiated, "still frozen");
    // The queue was enabled with INDIRECT_DESC and the device still
    // reports it: an indirect read is served, not a ring error.
    let table = d.alloc(48);
    let header = d.alloc(16);
    let data = d.alloc(513);
    d.put(header, &blk_request(blk::VIRTIO_BLK_T_IN, 1));
    let mut t = Vec::new();
    for (addr, len, flags, next) in [
        (header, 16u32, VIRTQ_DESC_F_NEXT, 1u16),
        (data, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2),
        (data + 512, 1, VIRTQ_DESC_F_WRITE, 0),
    ] {
        t.extend_from_slice(&addr.to_le_bytes());
        t.extend_from_slice(&len.to_le_bytes());
        t.extend_from_slice(&flags.to_le_bytes());
        t.extend_from_slice(&next.to_le_bytes());
    }
    d.put(table, &t);
    d.desc(0, 0, table, 48, crate::queue::VIRTQ_DESC_F_INDIRECT, 0);
    let (_, a, _) = ring(0);
    d.put(a + 4, &0u16.to_le_bytes());
    d.put(a + 2, &1u16.to_le_bytes());
    d.kick(0);
    assert_eq!(d.dev.status() & STATUS_NEEDS_RESET, 0);
    assert_eq!(d.used(0), [(0, 513)]);
    assert_eq!(d.get(data + 512, 1), [blk::VIRTIO_BLK_S_OK]);
    let sector1: Vec<u8> = (512..1024).map(|i| (i / 512) as u8 ^ (i as u8)).collect();
    assert_eq!(d.get(data, 512), sector1);
    // A reset clears it; the features can be negotiated anew.
    d.w(DEVICE_STATUS, 1, 0);
    assert_eq!(d.dev.status(), 0);
    assert!(d.negotiate(VIRTIO_F_VERSION_1));
    assert_eq!(d.dev.driver_features(), VIRTIO_F_VERSION_1);
}

#[test]
fn block_read_write_and_every_bad_request() {
    let mut d = Driver::new(Box::new(Blk::new(Box::new(disk(8 * 512)))));
    d.start(ALL);
    assert_eq!(d.r(DEVICE_OFFSET, 4), 8, "capacity in sectors");
    // Read sectors 2..4 split over two buffers.
    let (h, wr) = d.offer(0, &[&blk_request(blk::VIRTIO_BLK_T_IN, 2)], &[600, 424, 1]);
    d.kick(0);
    assert_eq!(d.used(0), [(h, 1025)]);
    let got = [d.get(wr[0], 600), d.get(wr[1], 424)].concat();
    let want: Vec<u8> = (1024..2048).map(|i| (i / 512) as u8 ^ (i as u8)).collect();
    assert_eq!(got, want);
    assert_eq!(d.get(wr[2], 1), [blk::VIRTIO_BLK_S_OK]);
    // Write sector 7, read it back.
    let data = [0x5Au8; 512];
    let (_, wr) = d.offer(0, &[&blk_request(blk::VIRTIO_BLK_T_OUT, 7), &data], &[1]);
    d.kick(0);
    assert_eq!(d.get(wr[0], 1), [blk::VIRTIO_BLK_S_OK]);
    let (_, wr) = d.offer(0, &[&blk_request(blk::VIRTIO_BLK_T_IN, 7)], &[513]);
    d.kick(0);
    assert_eq!(d.get(wr[0], 512), data);
    d.used(0);
    // Each of these gets an error status and the device goes on.
    let cases: [(Vec<u8>, Vec<u8>, u32, u8); 7] = [
        // past the end
        (
            blk_request(blk::VIRTIO_BLK_T_IN, 8),
            vec![],
            513,
            blk::VIRTIO_BLK_S_IOERR,
        ),
        (
            blk_request(blk::VIRTIO_BLK_T_OUT, 7),
            vec![1; 1024],
            1,
            blk::VIRTIO_BLK_S_IOERR,
        ),
        (
            blk_request(blk::VIRTIO_BLK_T_IN, u64::MAX),
            vec![],
            513,
            blk::VIRTIO_BLK_S_IOERR,
        ),
        // not whole sectors
        (
            blk_request(blk::VIRTIO_BLK_T_IN, 0),
            vec![],
            100,
            blk::VIRTIO_BLK_S_IOERR,
        ),
        // unknown type
        (blk_request(77, 0), vec![], 1, blk::VIRTIO_BLK_S_UNSUPP),
        // short header
        (vec![0; 7], vec![], 1, blk::VIRTIO_BLK_S_IOERR),
        // discard with a segment past the end
        (
            blk_request(blk::VIRTIO_BLK_T_DISCARD, 0),
            [
                6u64.to_le_bytes().as_slice(),
                &4u32.to_le_bytes(),
                &0u32.to_le_bytes(),
            ]
            .concat(),
            1,
            blk::VIRTIO_BLK_S_IOERR,
        ),
    ];
    for (hdr, data, wlen, want) in cases {
        let readable: Vec<&[u8]> = if data.is_empty() {
            vec![&hdr]
        } else {
            vec![&hdr, &data]
        };
        let (_, wr) = d.offer(0, &readable, &[wlen]);
        d.kick(0);
        assert_eq!(d.get(wr[0] + u64::from(wlen) - 1, 1), [want]);
    }
    assert_eq!(d.dev.device_stats().errors, 7);
    assert_eq!(d.dev.status() & STATUS_NEEDS_RESET, 0);
    // get-id, flush, discard that fits.
    let (_, wr) = d.offer(0, &[&blk_request(blk::VIRTIO_BLK_T_GET_ID, 0)], &[20, 1]);
    d.kick(0);
    assert_eq!(&d.get(wr[0], 13), b"quercus-disk0");
    assert_eq!(d.get(wr[1], 1), [0]);
    let seg = [
        0u64.to_le_bytes().as_slice(),
        &1u32.to_le_bytes(),
        &0u32.to_le_bytes(),
    ]
    .concat();
    let (_, wr) = d.offer(0, &[&blk_request(blk::VIRTIO_BLK_T_DISCARD, 0), &seg], &[1]);
    d.kick(0);
    assert_eq!(d.get(wr[0], 1), [0]);
    let (_, wr) = d.offer(0, &[&blk_request(blk::VIRTIO_BLK_T_IN, 0)], &[513]);
    d.kick(0);
    assert_eq!(d.get(wr[0], 512), [0u8; 512], "discarded sectors read zero");
}

#[test]
fn a_read_only_disk_refuses_writes_and_keeps_its_data() {
    let disk = disk(4 * 512);
    let mut d = Driver::new(Box::new(Blk::new(Box::new(disk.read_only()))));
    assert_ne!(d.features() & blk::VIRTIO_BLK_F_RO, 0);
    assert_eq!(d.features() & blk::VIRTIO_BLK_F_DISCARD, 0);
    d.start(ALL);
    let (_, wr) = d.offer(
        0,
        &[&blk_request(blk::VIRTIO_BLK_T_OUT, 0), &[9u8; 512]],
        &[1],
    );
    d.kick(0);
    assert_eq!(d.get(wr[0], 1), [blk::VIRTIO_BLK_S_IOERR]);
    let mut b = [0u8; 512];
    blk::BlockBackend::read(&disk, 0, &mut b);
    assert_ne!(b, [9u8; 512]);
}

#[test]
fn the_disk_outlives_the_device() {
    let disk = disk(4 * 512);
    let mut d = Driver::new(Box::new(Blk::new(Box::new(disk.clone()))));
    d.start(ALL);
    d.offer(
        0,
        &[&blk_request(blk::VIRTIO_BLK_T_OUT, 1), &[7u8; 512]],
        &[1],
    );
    d.kick(0);
    drop(d);
    // A VM reboot makes a new device on the same disk.
    let mut d = Driver::new(Box::new(Blk::new(Box::new(disk))));
    d.start(ALL);
    let (_, wr) = d.offer(0, &[&blk_request(blk::VIRTIO_BLK_T_IN, 1)], &[513]);
    d.kick(0);
    assert_eq!(d.get(wr[0], 512), [7u8; 512]);
}

#[test]
fn notifications_before_driver_ok_are_ignored() {
    let mut d = Driver::new(Box::new(Blk::new(Box::new(disk(4096)))));
    assert!(d.negotiate(ALL));
    d.setup_queue(0, QSIZE);
    d.offer(0, &[&blk_request(blk::VIRTIO_BLK_T_IN, 0)], &[513]);
    d.kick(0);
    d.kick(5);
    assert!(d.used(0).is_empty());
    assert_eq!(d.dev.stats().ignored_notifies, 2);
}

#[test]
fn a_queue_size_that_is_not_a_power_of_two_needs_a_reset() {
    let mut d = Driver::new(Box::new(Blk::new(Box::new(disk(4096)))));
    assert!(d.negotiate(ALL));
    d.setup_queue(0, 12);
    assert_ne!(d.r(DEVICE_STATUS, 1) as u8 & STATUS_NEEDS_RESET, 0);
    // INTx: the configuration-change bit, and the line is up until the ISR is read.
    assert!(d.dev.intx_asserted());
    assert_eq!(d.r(ISR_OFFSET, 1), u64::from(ISR_CONFIG));
    assert!(!d.dev.intx_asserted());
    assert_eq!(d.r(ISR_OFFSET, 1), 0);
    // Too big for the device is refused too.
    assert!(d.negotiate(ALL));
    d.setup_queue(0, 512);
    assert_eq!(
        d.dev.fault(),
        Some(QueueError::TooBig {
            size: 512,
            max: 256
        })
    );
    // Rings that do not lie in RAM are refused when the queue is enabled.
    assert!(d.negotiate(ALL));
    d.w(QUEUE_SELECT, 2, 0);
    d.w(QUEUE_SIZE, 2, u64::from(QSIZE));
    d.w(QUEUE_DEVICE, 4, RAM as u64 - 8);
    d.w(QUEUE_ENABLE, 2, 1);
    assert_eq!(d.r(QUEUE_ENABLE, 2), 0);
    assert!(matches!(d.dev.fault(), Some(QueueError::OutsideRam { .. })));
}

#[test]
fn a_descriptor_loop_needs_a_reset_and_a_reset_recovers() {
    let mut d = Driver::new(Box::new(Blk::new(Box::new(disk(4096)))));
    d.start(ALL);
    let (h, _) = d.offer(0, &[&blk_request(blk::VIRTIO_BLK_T_IN, 0)], &[513]);
    // Make the chain's last descriptor point back at its head.
    let (dt, _, _) = ring(0);
    let last = h + 1;
    let mut b = d.get(dt + 16 * u64::from(last), 16);
    b[12..14].copy_from_slice(&(VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE).to_le_bytes());
    b[14..16].copy_from_slice(&last.to_le_bytes());
    d.put(dt + 16 * u64::from(last), &b);
    d.kick(0);
    assert_ne!(d.dev.status() & STATUS_NEEDS_RESET, 0);
    assert_eq!(d.dev.fault(), Some(QueueError::ChainTooLong));
    // The driver cannot clear NEEDS_RESET by writing the status...
    d.w(DEVICE_STATUS, 1, 0x0F);
    assert_ne!(d.dev.status() & STATUS_NEEDS_RESET, 0);
    // ...only a reset does, and the device works again.
    d.w(DEVICE_STATUS, 1, 0);
    let (_, a, u) = ring(0);
    d.put(a + 2, &[0, 0]);
    d.put(u + 2, &[0, 0]);
    d.next_desc[0] = 0;
    d.avail_idx[0] = 0;
    d.used_seen[0] = 0;
    d.start(ALL);
    let (_, wr) = d.offer(0, &[&blk_request(blk::VIRTIO_BLK_T_IN, 0)], &[513]);
    d.kick(0);
    assert_eq!(d.get(wr[0] + 512, 1), [blk::VIRTIO_BLK_S_OK]);
}

#[test]
fn rings_outside_ram_and_index_jumps_need_a_reset() {
    for case in 0..3 {
        let mut d = Driver::new(Box::new(Blk::new(Box::new(disk(4096)))));
        d.start(ALL);
        let (h, _) = d.offer(0, &[&blk_request(blk::VIRTIO_BLK_T_IN, 0)], &[513]);
        let (dt, a, _) = ring(0);
        match case {
            // A buffer past the end of RAM.
            0 => d.put(dt + 16 * u64::from(h), &(RAM as u64 - 4).to_le_bytes()),
            // The available index jumps by more than the queue.
            1 => d.put(a + 2, &(QSIZE * 3).to_le_bytes()),
            // A head outside the table.
            _ => d.put(a + 4, &(QSIZE + 1).to_le_bytes()),
        }
        d.kick(0);
        assert_ne!(d.dev.status() & STATUS_NEEDS_RESET, 0, "case {case}");
        assert_eq!(d.dev.stats().needs_reset, 1);
        // Further notifications are ignored until the reset.
        d.kick(0);
        assert_eq!(d.dev.stats().ignored_notifies, 1);
        d.w(DEVICE_STATUS, 1, 0);
        assert_eq!(d.dev.status(), 0);
        assert_eq!(d.dev.fault(), None);
    }
}

#[test]
fn msix_vectors_per_queue_and_intx_without_msix() {
    let mut d = Driver::new(Box::new(Blk::new(Box::new(disk(4096)))));
    d.start(ALL & !VIRTIO_F_EVENT_IDX);
    // INTx first.
    d.offer(0, &[&blk_request(blk::VIRTIO_BLK_T_FLUSH, 0)], &[1]);
    d.kick(0);
    assert!(d.dev.intx_asserted());
    assert_eq!(d.r(ISR_OFFSET, 1), u64::from(ISR_QUEUE));
    // Enable MSI-X (control bit 15) and program entry 1, unmasked.
    let cap = d.dev.msix.offset() as u16;
    d.dev.config_mut().config_write(cap, 1 << 31, 0b1100);
    let mut out = Vec::new();
    d.dev.bar_write(1, 16, 4, 0xFEE0_0000, &mut out);
    d.dev.bar_write(1, 24, 4, 0x41, &mut out);
    d.dev.bar_write(1, 28, 4, 0, &mut out);
    d.w(QUEUE_SELECT, 2, 0);
    d.w(QUEUE_MSIX_VECTOR, 2, 1);
    assert_eq!(d.r(QUEUE_MSIX_VECTOR, 2), 1);
    d.w(QUEUE_MSIX_VECTOR, 2, 40);
    assert_eq!(
        d.r(QUEUE_MSIX_VECTOR, 2),
        u64::from(NO_VECTOR),
        "no such entry"
    );
    d.w(QUEUE_MSIX_VECTOR, 2, 1);
    d.out.clear();
    d.offer(0, &[&blk_request(blk::VIRTIO_BLK_T_FLUSH, 0)], &[1]);
    d.kick(0);
    assert_eq!(d.out.len(), 1);
    assert_eq!(d.out[0].data, 0x41);
    assert!(!d.dev.intx_asserted());
}

#[test]
fn the_event_index_asks_for_one_notification_per_batch() {
    let mut d = Driver::new(Box::new(Blk::new(Box::new(disk(8 * 512)))));
    d.start(ALL);
    for s in 0..3 {
        d.offer(0, &[&blk_request(blk::VIRTIO_BLK_T_IN, s)], &[513]);
    }
    d.kick(0);
    assert_eq!(d.used(0).len(), 3, "one notification served the batch");
    let (_, _, u) = ring(0);
    // avail_event: the driver notifies again once it makes chain 3 available.
    assert_eq!(d.u16_at(u + 4 + 8 * u64::from(QSIZE)), 3);
    assert_eq!(d.dev.queue_stats()[0].notifies, 1);
    assert_eq!(d.dev.queue_stats()[0].served, 3);
}

#[test]
fn common_config_accepts_split_and_odd_width_accesses() {
    let mut d = Driver::new(Box::new(Blk::new(Box::new(disk(4096)))));
    assert!(d.negotiate(ALL));
    d.w(QUEUE_SELECT, 2, 0);
    // A 64-bit address written as two halves, read back as bytes.
    d.w(QUEUE_DESC, 4, 0x1234_5000);
    d.w(QUEUE_DESC + 4, 4, 0x1);
    assert_eq!(d.r(QUEUE_DESC + 4, 1), 1);
    assert_eq!(d.r(QUEUE_DESC + 1, 2), 0x3450);
    // One 8-byte access (virtio-drivers writes the addresses that way).
    d.w(QUEUE_DRIVER, 8, 0x2_0000_3000);
    assert_eq!(d.r(QUEUE_DRIVER, 8), 0x2_0000_3000);
    assert_eq!(d.r(QUEUE_DESC, 8), 0x1_1234_5000);
    // Widths the structure does not have read all ones and are counted.
    assert_eq!(d.r(QUEUE_DESC, 3), 0xFF_FFFF);
    assert_eq!(d.r(QUEUE_DESC, 16), u64::MAX);
    assert_eq!(d.dev.stats().bad_accesses, 2);
    // A queue that does not exist reads size 0 and takes no configuration.
    d.w(QUEUE_SELECT, 2, 9);
    assert_eq!(d.r(QUEUE_SIZE, 2), 0);
    d.w(QUEUE_ENABLE, 2, 1);
    assert_eq!(d.r(QUEUE_ENABLE, 2), 0);
    // Outside every structure.
    assert_eq!(d.r(0x3_FFF0, 4), 0xFFFF_FFFF);
}

struct Wake;
impl PortWaker for Wake {
    fn wake(&self) {}
}

fn frame(dst: [u8; 6], src: [u8; 6], n: usize) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xB5]);
    f.extend((0..n).map(|i| i as u8));
    f
}

#[test]
fn two_interfaces_on_a_switch_exchange_frames() {
    let sw = Switch::new("lan0");
    let ma = [2, 0, 0, 0, 0, 1];
    let mb = [2, 0, 0, 0, 0, 2];
    let mut a = Driver::new(Box::new(Net::new(
        ma,
        Box::new(sw.attach("a", ma, Box::new(Wake))),
    )));
    let mut b = Driver::new(Box::new(Net::new(
        mb,
        Box::new(sw.attach("b", mb, Box::new(Wake))),
    )));
    a.start(ALL);
    b.start(ALL);
    assert_eq!(a.r(DEVICE_OFFSET, 4), 0x0000_0002);
    // B posts two receive buffers; A sends one frame.
    let (_, rx) = b.offer(0, &[], &[1526]);
    b.kick(0);
    let f = frame(mb, ma, 100);
    let hdr = [0u8; NET_HDR_LEN];
    a.offer(1, &[&hdr, &f], &[]);
    a.kick(1);
    assert_eq!(a.used(1).len(), 1);
    assert!(b.dev.has_input());
    let mut out = Vec::new();
    b.dev.poll(&mut out);
    let used = b.used(0);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].1 as usize, NET_HDR_LEN + f.len());
    assert_eq!(b.get(rx[0] + NET_HDR_LEN as u64, f.len()), f);
    assert_eq!(b.get(rx[0] + 10, 2), [1, 0], "num_buffers");
    // A frame for which B has no buffer waits; one too big for the buffer is dropped.
    a.offer(1, &[&hdr, &frame(mb, ma, 3000)], &[]);
    a.kick(1);
    b.dev.poll(&mut out);
    assert!(b.used(0).is_empty() && b.dev.has_input());
    b.offer(0, &[], &[1526]);
    b.kick(0);
    assert_eq!(b.used(0), [(1, 0)]);
    assert_eq!(b.dev.device_stats().dropped, 1);
    // A runt from the guest is counted, not forwarded.
    a.offer(1, &[&hdr, &[1, 2, 3]], &[]);
    a.kick(1);
    assert_eq!(a.dev.device_stats().errors, 1);
    assert!(!b.dev.has_input());
}

#[test]
fn console_output_and_input_go_through_the_pipe() {
    let pipe = ConsolePipe::new();
    let mut d = Driver::new(Box::new(Console::new(pipe.clone())));
    d.start(ALL);
    d.offer(1, &[b"hello ", b"hvc0\n"], &[]);
    d.kick(1);
    let mut out = Vec::new();
    pipe.lock().take_output(&mut out);
    assert_eq!(out, b"hello hvc0\n");
    // Input waits for a buffer, then arrives.
    pipe.lock().push_input(b"ls\n");
    assert!(d.dev.has_input());
    let (_, rx) = d.offer(0, &[], &[2]);
    let mut msgs = Vec::new();
    d.dev.poll(&mut msgs);
    assert_eq!(d.used(0), [(0, 2)]);
    assert_eq!(d.get(rx[0], 2), b"ls");
    assert!(d.dev.has_input());
}

struct Counter(u8);
impl EntropySource for Counter {
    fn fill(&mut self, buf: &mut [u8]) -> usize {
        // Half of what was asked: a generator that ran dry.
        let n = buf.len() / 2;
        for b in &mut buf[..n] {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
        n
    }
}

#[test]
fn entropy_fills_what_the_source_gives() {
    let mut d = Driver::new(Box::new(Rng::new(Box::new(Counter(0)))));
    d.start(ALL);
    let (h, wr) = d.offer(0, &[], &[64]);
    d.kick(0);
    assert_eq!(d.used(0), [(h, 32)]);
    assert_eq!(d.get(wr[0], 3), [1, 2, 3]);
    assert_eq!(d.dev.device_stats().bytes_in, 32);
}
