//! The modern virtio-pci transport (virtio 1.x, 4.1) around one
//! [`VirtioDevice`]: a PCI function 1AF4:(1040 + device id) revision 1 that
//! plugs into a VM's [`vdev::PciSegment`] like any emulated device.
//!
//! BAR 0 (16 KiB memory) holds the four structures the vendor capabilities
//! point at: common configuration at 0x0000, ISR status at 0x1000,
//! device-specific configuration at 0x2000 and the notification area at
//! 0x3000 (queue `q` notifies at 0x3000 + 4q: multiplier 4). BAR 1 (4 KiB)
//! holds the MSI-X table (queues + 1 entries) and its PBA at 0x800.
//! Without MSI-X the function signals INTx (INTA#) and sets ISR bits, which
//! a read of the ISR clears (deasserting the line).
//!
//! Device status follows 2.1 and 3.1: writing 0 resets the function;
//! FEATURES_OK sticks only if the driver accepted a subset of the offered
//! features including VERSION_1, and then only a reset clears it (the
//! features stay frozen); notifications before DRIVER_OK are
//! ignored and counted. Any error in the rings the guest owns sets
//! DEVICE_NEEDS_RESET, sends a configuration-change interrupt and stops the
//! device until the driver resets it: the VM goes on, nothing outside its
//! RAM is touched.
//!
//! Notifications: every queue uses the event index when the driver accepts
//! it (`VIRTIO_F_EVENT_IDX`), so the driver notifies only when the device
//! asked to be told, and each notification serves everything available: one
//! VM exit per batch of requests.

use alloc::boxed::Box;
use alloc::vec::Vec;

use vcpu::GuestMemory;
use vdev::{Bar, ConfigSpace, MsiMessage, MsiX, PciDevice, PciIds, COMMAND_MEMORY};

use crate::device::{pushed, DeviceStats, QueueIo, QueueSlot, VirtioDevice};
use crate::queue::{Queue, QueueError, VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC};

/// The transport's feature bits.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Vendor ID of every virtio device.
pub const VIRTIO_VENDOR: u16 = 0x1AF4;
/// `queue_msix_vector` / `config_msix_vector` value: no vector.
pub const NO_VECTOR: u16 = 0xFFFF;

/// Device status bits (2.1).
pub const STATUS_ACKNOWLEDGE: u8 = 1;
pub const STATUS_DRIVER: u8 = 2;
pub const STATUS_DRIVER_OK: u8 = 4;
pub const STATUS_FEATURES_OK: u8 = 8;
pub const STATUS_NEEDS_RESET: u8 = 64;
pub const STATUS_FAILED: u8 = 128;

/// ISR bits.
const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;

/// BAR 0 layout.
pub const BAR0_SIZE: u32 = 0x4000;
pub const COMMON_OFFSET: u64 = 0x0000;
pub const COMMON_LEN: u64 = 0x40;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_OFFSET: u64 = 0x2000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const NOTIFY_MULTIPLIER: u32 = 4;
/// BAR 1: the MSI-X table and PBA.
pub const BAR1_SIZE: u32 = 0x1000;
const MSIX_PBA_OFFSET: u32 = 0x800;

/// Vendor capability `cfg_type`s (4.1.4).
const CAP_VENDOR: u8 = 0x09;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;

// Common configuration fields: (offset, length).
const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0C;
const CONFIG_MSIX_VECTOR: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
const DEVICE_STATUS: u64 = 0x14;
const CONFIG_GENERATION: u64 = 0x15;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1A;
const QUEUE_ENABLE: u64 = 0x1C;
const QUEUE_NOTIFY_OFF: u64 = 0x1E;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;
const QUEUE_NOTIFY_DATA: u64 = 0x38;
const QUEUE_RESET: u64 = 0x3A;

/// Fields in order, with their lengths.
const FIELDS: &[(u64, u64)] = &[
    (DEVICE_FEATURE_SELECT, 4),
    (DEVICE_FEATURE, 4),
    (DRIVER_FEATURE_SELECT, 4),
    (DRIVER_FEATURE, 4),
    (CONFIG_MSIX_VECTOR, 2),
    (NUM_QUEUES, 2),
    (DEVICE_STATUS, 1),
    (CONFIG_GENERATION, 1),
    (QUEUE_SELECT, 2),
    (QUEUE_SIZE, 2),
    (QUEUE_MSIX_VECTOR, 2),
    (QUEUE_ENABLE, 2),
    (QUEUE_NOTIFY_OFF, 2),
    (QUEUE_DESC, 4),
    (QUEUE_DESC + 4, 4),
    (QUEUE_DRIVER, 4),
    (QUEUE_DRIVER + 4, 4),
    (QUEUE_DEVICE, 4),
    (QUEUE_DEVICE + 4, 4),
    (QUEUE_NOTIFY_DATA, 2),
    (QUEUE_RESET, 2),
];

/// The PCI identity of a virtio device of type `device_id`.
pub fn pci_ids(device_id: u16) -> PciIds {
    let (class, subclass) = match device_id {
        crate::device::DEVICE_NET => (0x02, 0x00),
        crate::device::DEVICE_BLOCK => (0x01, 0x00),
        crate::device::DEVICE_CONSOLE => (0x07, 0x80),
        _ => (0xFF, 0x00),
    };
    PciIds {
        vendor_id: VIRTIO_VENDOR,
        device_id: 0x1040 + device_id,
        revision: 1,
        class,
        subclass,
        prog_if: 0,
        subsystem_vendor_id: VIRTIO_VENDOR,
        subsystem_id: 0x1040 + device_id,
    }
}

/// The driver's view of one queue before it is enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct QueueConf {
    size: u16,
    vector: u16,
    desc: u64,
    driver: u64,
    device: u64,
}

/// What the transport counted, for the shell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Notifications the driver sent.
    pub notifies: u64,
    /// Notifications before DRIVER_OK, to a queue that does not exist or
    /// is not enabled, or while the device needs a reset.
    pub ignored_notifies: u64,
    /// Interrupts sent (MSI-X messages or INTx assertions).
    pub interrupts: u64,
    /// Times the device marked itself DEVICE_NEEDS_RESET.
    pub needs_reset: u64,
    /// Driver resets.
    pub resets: u64,
    /// Register accesses that reach nothing (bad width, offset).
    pub bad_accesses: u64,
}

/// One queue's counters, for the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueStats {
    pub size: u16,
    pub enabled: bool,
    pub notifies: u64,
    pub served: u64,
}

/// A virtio device on the PCI plane.
pub struct VirtioPci {
    cfg: ConfigSpace,
    msix: MsiX,
    device: Box<dyn VirtioDevice>,
    mem: Box<dyn GuestMemory + Send>,
    offered: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    generation: u8,
    config_vector: u16,
    queue_select: u16,
    conf: Vec<QueueConf>,
    slots: Vec<QueueSlot>,
    isr: u8,
    stats: TransportStats,
    /// The ring error that last made the device need a reset.
    fault: Option<QueueError>,
}

impl VirtioPci {
    /// `device` as a PCI function whose firmware placed BAR 0 at `bar0` and
    /// BAR 1 at `bar1` (memory decode on), reaching the guest's RAM through
    /// `mem`.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: Box<dyn GuestMemory + Send>,
        bar0: u32,
        bar1: u32,
    ) -> Self {
        let mut cfg = ConfigSpace::new(&pci_ids(device.device_id()));
        let queues = device.queue_count();
        let built = cfg
            .set_bar(
                0,
                Bar::Memory32 {
                    size: BAR0_SIZE,
                    prefetchable: false,
                },
            )
            .and(cfg.set_bar(
                1,
                Bar::Memory32 {
                    size: BAR1_SIZE,
                    prefetchable: false,
                },
            ))
            .and(cfg.set_interrupt_pin(1));
        debug_assert_eq!(built, Ok(()));
        cfg.set_bar_address(0, u64::from(bar0));
        cfg.set_bar_address(1, u64::from(bar1));
        cfg.set_command(COMMAND_MEMORY);
        let device_len = device.config_len().max(4) as u32;
        let caps = [
            (CFG_COMMON, COMMON_OFFSET as u32, COMMON_LEN as u32, 16),
            (CFG_NOTIFY, NOTIFY_OFFSET as u32, 4 * u32::from(queues), 20),
            (CFG_ISR, ISR_OFFSET as u32, 4, 16),
            (CFG_DEVICE, DEVICE_OFFSET as u32, device_len, 16),
        ];
        for (kind, offset, len, cap_len) in caps {
            let Ok(at) = cfg.add_capability(CAP_VENDOR, cap_len) else {
                unreachable!("four vendor capabilities fit an empty configuration space")
            };
            cfg.put(at + 2, &[cap_len as u8, kind, 0, 0, 0, 0]);
            cfg.put(at + 8, &offset.to_le_bytes());
            cfg.put(at + 12, &len.to_le_bytes());
            if kind == CFG_NOTIFY {
                cfg.put(at + 16, &NOTIFY_MULTIPLIER.to_le_bytes());
            }
        }
        // Entries: one per queue and one for configuration changes.
        let Ok(msix) = MsiX::install(&mut cfg, queues + 1, (1, 0), (1, MSIX_PBA_OFFSET)) else {
            unreachable!("the MSI-X capability fits after the vendor capabilities")
        };
        let offered =
            device.features() | VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_F_INDIRECT_DESC;
        let mut v = VirtioPci {
            cfg,
            msix,
            device,
            mem,
            offered,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            generation: 0,
            config_vector: NO_VECTOR,
            queue_select: 0,
            conf: Vec::new(),
            slots: Vec::new(),
            isr: 0,
            stats: TransportStats::default(),
            fault: None,
        };
        v.reset_function();
        v
    }

    /// The device's logic.
    pub fn device(&self) -> &dyn VirtioDevice {
        &*self.device
    }

    /// Device status as the driver last set it.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// The negotiated features.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    pub fn stats(&self) -> TransportStats {
        self.stats
    }

    pub fn device_stats(&self) -> DeviceStats {
        self.device.stats()
    }

    /// The ring error that last made the device need a reset.
    pub fn fault(&self) -> Option<QueueError> {
        self.fault
    }

    /// Each queue's size, state and counters.
    pub fn queue_stats(&self) -> Vec<QueueStats> {
        self.conf
            .iter()
            .zip(&self.slots)
            .map(|(c, s)| QueueStats {
                size: c.size,
                enabled: s.queue.is_some(),
                notifies: s.notifies,
                served: s.served,
            })
            .collect()
    }

    /// Back to the power-up state of the function (not of its PCI header).
    fn reset_function(&mut self) {
        self.device.reset();
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.status = 0;
        self.config_vector = NO_VECTOR;
        self.queue_select = 0;
        let queues = self.device.queue_count();
        self.conf = (0..queues)
            .map(|q| QueueConf {
                size: self.device.queue_max_size(q),
                vector: NO_VECTOR,
                desc: 0,
                driver: 0,
                device: 0,
            })
            .collect();
        self.slots = (0..queues).map(|_| QueueSlot::default()).collect();
        self.isr = 0;
    }

    fn selected(&self) -> Option<usize> {
        let q = usize::from(self.queue_select);
        (q < self.conf.len()).then_some(q)
    }

    fn live(&self) -> bool {
        self.status & STATUS_DRIVER_OK != 0 && self.status & STATUS_NEEDS_RESET == 0
    }

    /// The value of the common-configuration field at `offset`.
    fn common_field(&self, offset: u64) -> u32 {
        let q = self.selected();
        let conf = q.map(|q| self.conf[q]);
        match offset {
            DEVICE_FEATURE_SELECT => self.device_feature_select,
            DEVICE_FEATURE => match self.device_feature_select {
                0 => self.offered as u32,
                1 => (self.offered >> 32) as u32,
                _ => 0,
            },
            DRIVER_FEATURE_SELECT => self.driver_feature_select,
            DRIVER_FEATURE => match self.driver_feature_select {
                0 => self.driver_features as u32,
                1 => (self.driver_features >> 32) as u32,
                _ => 0,
            },
            CONFIG_MSIX_VECTOR => u32::from(self.config_vector),
            NUM_QUEUES => self.conf.len() as u32,
            DEVICE_STATUS => u32::from(self.status),
            CONFIG_GENERATION => u32::from(self.generation),
            QUEUE_SELECT => u32::from(self.queue_select),
            QUEUE_SIZE => conf.map_or(0, |c| u32::from(c.size)),
            QUEUE_MSIX_VECTOR => conf.map_or(u32::from(NO_VECTOR), |c| u32::from(c.vector)),
            QUEUE_ENABLE => q.map_or(0, |q| u32::from(self.slots[q].queue.is_some())),
            QUEUE_NOTIFY_OFF | QUEUE_NOTIFY_DATA => u32::from(self.queue_select),
            QUEUE_DESC => conf.map_or(0, |c| c.desc as u32),
            o if o == QUEUE_DESC + 4 => conf.map_or(0, |c| (c.desc >> 32) as u32),
            QUEUE_DRIVER => conf.map_or(0, |c| c.driver as u32),
            o if o == QUEUE_DRIVER + 4 => conf.map_or(0, |c| (c.driver >> 32) as u32),
            QUEUE_DEVICE => conf.map_or(0, |c| c.device as u32),
            o if o == QUEUE_DEVICE + 4 => conf.map_or(0, |c| (c.device >> 32) as u32),
            _ => 0,
        }
    }

    /// The driver wrote `value` to the common-configuration field at `offset`.
    fn set_common_field(&mut self, offset: u64, value: u32, out: &mut Vec<MsiMessage>) {
        // Queue configuration is frozen once the queue is enabled (4.1.4.3).
        let q = self.selected();
        let editable = q.filter(|&q| self.slots[q].queue.is_none());
        let set_half = |v: &mut u64, high: bool| {
            *v = if high {
                (*v & 0xFFFF_FFFF) | u64::from(value) << 32
            } else {
                (*v & !0xFFFF_FFFF) | u64::from(value)
            }
        };
        match offset {
            DEVICE_FEATURE_SELECT => self.device_feature_select = value,
            DRIVER_FEATURE_SELECT => self.driver_feature_select = value,
            // Frozen once FEATURES_OK is set.
            DRIVER_FEATURE if self.status & STATUS_FEATURES_OK == 0 => {
                match self.driver_feature_select {
                    0 => set_half(&mut self.driver_features, false),
                    1 => set_half(&mut self.driver_features, true),
                    _ => {}
                }
            }
            CONFIG_MSIX_VECTOR => self.config_vector = self.vector_or_none(value as u16),
            DEVICE_STATUS => self.set_status(value as u8, out),
            QUEUE_SELECT => self.queue_select = value as u16,
            QUEUE_SIZE => {
                if let Some(q) = editable {
                    self.conf[q].size = value as u16;
                }
            }
            QUEUE_MSIX_VECTOR => {
                if let Some(q) = q {
                    self.conf[q].vector = self.vector_or_none(value as u16);
                }
            }
            QUEUE_ENABLE => {
                if let (Some(q), 1) = (editable, value) {
                    self.enable_queue(q, out);
                }
            }
            QUEUE_DESC | QUEUE_DRIVER | QUEUE_DEVICE => {
                if let Some(q) = editable {
                    let c = &mut self.conf[q];
                    let field = match offset {
                        QUEUE_DESC => &mut c.desc,
                        QUEUE_DRIVER => &mut c.driver,
                        _ => &mut c.device,
                    };
                    set_half(field, false);
                }
            }
            o if o == QUEUE_DESC + 4 || o == QUEUE_DRIVER + 4 || o == QUEUE_DEVICE + 4 => {
                if let Some(q) = editable {
                    let c = &mut self.conf[q];
                    let field = match o - 4 {
                        QUEUE_DESC => &mut c.desc,
                        QUEUE_DRIVER => &mut c.driver,
                        _ => &mut c.device,
                    };
                    set_half(field, true);
                }
            }
            // Read only: device features, queue count, generation,
            // notify offset and data; queue reset is not offered.
            _ => {}
        }
    }

    /// A vector the MSI-X table has, or [`NO_VECTOR`] (4.1.5.1.2: the
    /// device answers NO_VECTOR when it cannot map the vector).
    fn vector_or_none(&self, v: u16) -> u16 {
        if usize::from(v) < self.msix.entries() {
            v
        } else {
            NO_VECTOR
        }
    }

    fn set_status(&mut self, value: u8, out: &mut Vec<MsiMessage>) {
        if value == 0 {
            self.stats.resets += 1;
            self.reset_function();
            self.fault = None;
            return;
        }
        // NEEDS_RESET is the device's; the driver cannot set or clear it.
        // Nor can it take FEATURES_OK back once the device accepted it (a
        // driver never clears a status bit, 3.1.1; only a reset does): the
        // features stay frozen, so they remain the ones the enabled queues
        // were made with (a queue keeps INDIRECT_DESC and EVENT_IDX from its
        // enable) and a second negotiation without a reset cannot make the
        // device report one feature set while its queues use another.
        let kept = self.status & (STATUS_NEEDS_RESET | STATUS_FEATURES_OK);
        let mut next = (value & !STATUS_NEEDS_RESET) | kept;
        if value & STATUS_FEATURES_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
            let acceptable = self.driver_features & !self.offered == 0
                && self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if acceptable {
                self.device.set_features(self.driver_features);
            } else {
                next &= !STATUS_FEATURES_OK;
            }
        }
        let going_live = next & STATUS_DRIVER_OK != 0 && self.status & STATUS_DRIVER_OK == 0;
        self.status = next;
        if going_live && self.live() {
            // Input that waited for the driver (frames, console bytes).
            self.poll(out);
        }
    }

    fn enable_queue(&mut self, q: usize, out: &mut Vec<MsiMessage>) {
        if self.status & STATUS_FEATURES_OK == 0 {
            self.stats.bad_accesses += 1;
            return;
        }
        let c = self.conf[q];
        let max = self.device.queue_max_size(q as u16);
        let made = if c.size > max {
            Err(QueueError::TooBig { size: c.size, max })
        } else {
            Queue::new(c.size, c.desc, c.driver, c.device, self.driver_features)
                .and_then(|queue| queue.check_rings(&*self.mem).map(|()| queue))
        };
        match made {
            Ok(queue) => self.slots[q].queue = Some(queue),
            Err(e) => self.needs_reset(e, out),
        }
    }

    /// The guest broke a ring: stop serving and tell the driver.
    fn needs_reset(&mut self, e: QueueError, out: &mut Vec<MsiMessage>) {
        if self.status & STATUS_NEEDS_RESET != 0 {
            return;
        }
        // A guest can break its rings in a loop: the first few and then
        // every 1,000th are logged; the shell's `virtio` shows the count.
        if self.stats.needs_reset < 4 || self.stats.needs_reset % 1000 == 0 {
            log::warn!(
                "virtio-{}: {e}: device needs reset ({} so far)",
                self.device.name(),
                self.stats.needs_reset + 1
            );
        }
        self.fault = Some(e);
        self.stats.needs_reset += 1;
        self.status |= STATUS_NEEDS_RESET;
        self.generation = self.generation.wrapping_add(1);
        self.interrupt(self.config_vector, ISR_CONFIG, out);
    }

    /// Signals `vector` (MSI-X) or sets `isr` and asserts INTx.
    fn interrupt(&mut self, vector: u16, isr: u8, out: &mut Vec<MsiMessage>) {
        if self.msix.enabled(&self.cfg) {
            if vector != NO_VECTOR {
                if let Some(m) = self.msix.signal(&self.cfg, usize::from(vector)) {
                    out.push(m);
                }
                self.stats.interrupts += 1;
            }
        } else {
            if self.isr == 0 {
                self.stats.interrupts += 1;
            }
            self.isr |= isr;
        }
    }

    /// After the device used chains: interrupts for the queues whose driver
    /// wants them.
    fn signal_used(&mut self, out: &mut Vec<MsiMessage>) {
        for q in pushed(&self.slots) {
            let slot = &mut self.slots[usize::from(q)];
            slot.pushed = false;
            let Some(queue) = slot.queue.as_mut() else {
                continue;
            };
            match queue.needs_interrupt(&*self.mem) {
                Ok(true) => {
                    let v = self.conf[usize::from(q)].vector;
                    self.interrupt(v, ISR_QUEUE, out);
                }
                Ok(false) => {}
                Err(e) => self.needs_reset(e, out),
            }
        }
    }

    /// The driver notified queue `q`.
    fn notify(&mut self, q: u16, out: &mut Vec<MsiMessage>) {
        self.stats.notifies += 1;
        let slot_ok = self
            .slots
            .get(usize::from(q))
            .is_some_and(|s| s.queue.is_some());
        if !self.live() || !slot_ok {
            self.stats.ignored_notifies += 1;
            return;
        }
        self.slots[usize::from(q)].notifies += 1;
        let mut io = QueueIo::new(&mut *self.mem, &mut self.slots);
        let r = self.device.notify(q, &mut io);
        self.finish(r, out);
    }

    fn finish(&mut self, r: Result<(), QueueError>, out: &mut Vec<MsiMessage>) {
        self.signal_used(out);
        if let Err(e) = r {
            self.needs_reset(e, out);
        }
    }

    /// Serves input that arrived from the backend; call when
    /// [`VirtioPci::has_input`] says so.
    pub fn poll(&mut self, out: &mut Vec<MsiMessage>) {
        if !self.live() || !self.device.has_input() {
            return;
        }
        let mut io = QueueIo::new(&mut *self.mem, &mut self.slots);
        let r = self.device.poll(&mut io);
        self.finish(r, out);
    }

    /// Whether the backend has input for the guest.
    pub fn has_input(&self) -> bool {
        self.live() && self.device.has_input()
    }

    fn bar0_read(&mut self, offset: u64, size: u8) -> u64 {
        let ones = u64::MAX >> (64 - 8 * u32::from(size.clamp(1, 8)));
        match offset {
            o if o < COMMON_LEN => {
                // 8-byte accesses are not the spec's (4.1.3.1) but some
                // drivers write the 64-bit queue addresses that way.
                if !matches!(size, 1 | 2 | 4 | 8) {
                    self.stats.bad_accesses += 1;
                    return ones;
                }
                let mut v = 0u64;
                for i in 0..u64::from(size) {
                    let at = o + i;
                    let Some(&(f, len)) = FIELDS.iter().find(|(f, l)| at >= *f && at < f + l)
                    else {
                        continue;
                    };
                    let _ = len;
                    let byte = (self.common_field(f) >> (8 * (at - f))) as u8;
                    v |= u64::from(byte) << (8 * i);
                }
                v
            }
            o if (ISR_OFFSET..ISR_OFFSET + 4).contains(&o) => {
                // Reading the ISR clears it and deasserts INTx (4.1.4.5).
                let v = if o == ISR_OFFSET { self.isr } else { 0 };
                if o == ISR_OFFSET {
                    self.isr = 0;
                }
                u64::from(v)
            }
            o if (DEVICE_OFFSET..DEVICE_OFFSET + 0x1000).contains(&o) => {
                if !matches!(size, 1 | 2 | 4 | 8) {
                    self.stats.bad_accesses += 1;
                    return ones;
                }
                let mut b = [0u8; 8];
                self.device
                    .read_config(o - DEVICE_OFFSET, &mut b[..usize::from(size)]);
                u64::from_le_bytes(b)
            }
            o if (NOTIFY_OFFSET..NOTIFY_OFFSET + 0x1000).contains(&o) => 0,
            _ => {
                self.stats.bad_accesses += 1;
                ones
            }
        }
    }

    fn bar0_write(&mut self, offset: u64, size: u8, value: u64, out: &mut Vec<MsiMessage>) {
        match offset {
            o if o < COMMON_LEN => {
                if !matches!(size, 1 | 2 | 4 | 8) {
                    self.stats.bad_accesses += 1;
                    return;
                }
                // Each field the access touches: merge the written bytes into
                // its current value, then apply it.
                let end = o + u64::from(size);
                for &(f, len) in FIELDS {
                    if f + len <= o || f >= end {
                        continue;
                    }
                    let mut v = self.common_field(f);
                    for at in f.max(o)..(f + len).min(end) {
                        let byte = (value >> (8 * (at - o))) as u8;
                        debug_assert!(at - o < 8);
                        let shift = 8 * (at - f);
                        v = (v & !(0xFF << shift)) | u32::from(byte) << shift;
                    }
                    self.set_common_field(f, v, out);
                }
            }
            o if (DEVICE_OFFSET..DEVICE_OFFSET + 0x1000).contains(&o) => {
                if matches!(size, 1 | 2 | 4 | 8) {
                    let b = value.to_le_bytes();
                    self.device
                        .write_config(o - DEVICE_OFFSET, &b[..usize::from(size)]);
                } else {
                    self.stats.bad_accesses += 1;
                }
            }
            o if (NOTIFY_OFFSET..NOTIFY_OFFSET + 0x1000).contains(&o) => {
                let q = (o - NOTIFY_OFFSET) / u64::from(NOTIFY_MULTIPLIER);
                match u16::try_from(q) {
                    Ok(q) => self.notify(q, out),
                    Err(_) => self.stats.ignored_notifies += 1,
                }
            }
            _ => self.stats.bad_accesses += 1,
        }
    }
}

impl PciDevice for VirtioPci {
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }

    fn config_written(&mut self, _offset: u16, out: &mut Vec<MsiMessage>) {
        self.msix.release_pending(&self.cfg, out);
    }

    fn bar_read(&mut self, bar: usize, offset: u64, size: u8, _out: &mut Vec<MsiMessage>) -> u64 {
        match bar {
            0 => self.bar0_read(offset, size),
            1 => match self.msix.region(1, offset) {
                Some(r) => self.msix.read(r, size),
                None => u64::MAX >> (64 - 8 * u32::from(size.clamp(1, 8))),
            },
            _ => u64::MAX,
        }
    }

    fn bar_write(
        &mut self,
        bar: usize,
        offset: u64,
        size: u8,
        value: u64,
        out: &mut Vec<MsiMessage>,
    ) {
        match bar {
            0 => self.bar0_write(offset, size, value, out),
            1 => {
                if let Some(r) = self.msix.region(1, offset) {
                    self.msix.write(&self.cfg, r, size, value, out);
                }
            }
            _ => {}
        }
    }

    fn intx_asserted(&self) -> bool {
        self.isr != 0 && !self.msix.enabled(&self.cfg)
    }

    fn poll(&mut self, out: &mut Vec<MsiMessage>) {
        VirtioPci::poll(self, out);
    }

    fn has_input(&self) -> bool {
        VirtioPci::has_input(self)
    }

    fn as_any(&self) -> Option<&dyn core::any::Any> {
        Some(self)
    }
}

#[cfg(test)]
mod tests;
