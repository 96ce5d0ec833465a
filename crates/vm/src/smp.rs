//! Messages between the vCPUs of one VM: interrupts sent through a vLAPIC's
//! ICR, device interrupts routed by their destination, and the INIT / SIPI
//! pair that starts (or restarts) an application processor.
//!
//! Each vCPU owns a [`VcpuInbox`] that any pCPU may post to; only the owner
//! takes from it (before each guest entry). The inbox also publishes the
//! owner's APIC addressing state (APIC ID, LDR, DFR) so that senders can match
//! destinations without touching another vCPU's vLAPIC.
//!
//! Everything here takes guest-controlled values (ICR, redirection entries):
//! a destination that names nobody delivers nothing, an illegal vector sets
//! the sender's "send illegal vector" error, nothing panics.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

use vdev::{Delivery, DeliveryMode, DestinationMode};

use crate::VLapic;

/// Most vCPUs one VM can have (target sets are `u64` masks).
pub const MAX_VCPUS: usize = 64;

/// ICR delivery modes (bits 10:8).
const MODE_FIXED: u64 = 0;
const MODE_LOWEST: u64 = 1;
const MODE_SMI: u64 = 2;
const MODE_NMI: u64 = 4;
const MODE_INIT: u64 = 5;
const MODE_STARTUP: u64 = 6;
const ICR_LOGICAL: u64 = 1 << 11;
const ICR_LEVEL_ASSERT: u64 = 1 << 14;
const ICR_TRIGGER_LEVEL: u64 = 1 << 15;

/// `sipi` word: a start-up vector is waiting.
const SIPI_VALID: u32 = 1 << 8;

/// One vCPU's incoming messages and published addressing state.
#[derive(Debug)]
pub struct VcpuInbox {
    /// Fixed interrupts waiting for the vLAPIC's IRR.
    fixed: [AtomicU32; 8],
    /// Which of `fixed` are level-triggered (TMR).
    level: [AtomicU32; 8],
    /// Something was posted since the owner last looked.
    any: AtomicBool,
    /// NMIs posted since the owner last looked (saturates: the owner keeps
    /// at most two, one to deliver and one latched behind its handler).
    nmi: AtomicU8,
    init: AtomicBool,
    /// `SIPI_VALID | vector` of the last start-up IPI since the last INIT.
    sipi: AtomicU32,
    apic_id: AtomicU32,
    ldr: AtomicU32,
    dfr: AtomicU32,
    /// The ticket of a completed deferred access (0: none) and its value.
    io_ticket: AtomicU64,
    io_value: AtomicU64,
    /// The second-level tables lost a translation since the owner last entered.
    slat_flush: AtomicBool,
    /// The owner's LAPIC is passed through: senders deliver its edge-triggered fixed interrupts
    /// to its pCPU's physical LAPIC themselves ([`VcpuInbox::take_edges`]).
    passthrough: AtomicBool,
}

impl Default for VcpuInbox {
    fn default() -> Self {
        Self::new(0)
    }
}

/// What [`VcpuInbox::drain`] found besides fixed interrupts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Signals {
    /// An INIT arrived: the vCPU goes back to waiting for a start-up IPI.
    pub init: bool,
    /// How many NMIs arrived (0 to 2: more collapse, as on the NMI pin).
    pub nmi: u8,
}

/// How an interrupt names its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// An APIC ID; 0xFF is every vCPU.
    Physical(u8),
    /// A logical destination matched against each vCPU's LDR and DFR.
    Logical(u8),
    /// An x2APIC ID; 0xFFFF_FFFF is every vCPU.
    X2Physical(u32),
    /// An x2APIC logical destination: cluster in bits 31:16, members in 15:0.
    X2Logical(u32),
}

/// Why an IPI was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpiError {
    /// A fixed or lowest-priority IPI with a vector below 16 (ESR bit 5).
    IllegalVector(u8),
}

/// What one ICR write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpiOutcome {
    /// vCPUs that got a message (bit i: vCPU i) and must be woken.
    pub targets: u64,
    /// The message kind is not delivered (SMI: there is no SMM); counted by the caller.
    pub dropped: bool,
}

impl VcpuInbox {
    /// Asks the owner to flush its second-level TLB entries before its next entry.
    pub fn request_slat_flush(&self) {
        self.slat_flush.store(true, Ordering::Release);
        self.any.store(true, Ordering::Release);
    }

    /// Whether a flush was asked for since the last call.
    pub fn take_slat_flush(&self) -> bool {
        self.slat_flush.load(Ordering::Relaxed) && self.slat_flush.swap(false, Ordering::AcqRel)
    }

    /// An empty inbox for the vCPU whose APIC ID is `apic_id` (LDR 0, flat DFR).
    pub fn new(apic_id: u32) -> Self {
        VcpuInbox {
            fixed: Default::default(),
            level: Default::default(),
            any: AtomicBool::new(false),
            nmi: AtomicU8::new(0),
            init: AtomicBool::new(false),
            sipi: AtomicU32::new(0),
            apic_id: AtomicU32::new(apic_id),
            ldr: AtomicU32::new(0),
            dfr: AtomicU32::new(0xFFFF_FFFF),
            io_ticket: AtomicU64::new(0),
            io_value: AtomicU64::new(0),
            slat_flush: AtomicBool::new(false),
            passthrough: AtomicBool::new(false),
        }
    }

    /// Marks the owner's LAPIC as passed through (or not any more).
    pub fn set_passthrough(&self, on: bool) {
        self.passthrough.store(on, Ordering::SeqCst);
    }

    /// Whether the owner's LAPIC is passed through.
    pub fn is_passthrough(&self) -> bool {
        self.passthrough.load(Ordering::SeqCst)
    }

    /// Takes the posted edge-triggered fixed interrupts (any pCPU may: each is taken once),
    /// lowest vector first.
    pub fn take_edges(&self, mut f: impl FnMut(u8)) {
        for word in 0..8 {
            let edges = self.fixed[word].load(Ordering::Acquire)
                & !self.level[word].load(Ordering::Acquire);
            if edges == 0 {
                continue;
            }
            let taken = self.fixed[word].fetch_and(!edges, Ordering::AcqRel) & edges;
            for bit in 0..32 {
                if taken & (1 << bit) != 0 {
                    f((word * 32 + bit) as u8);
                }
            }
        }
    }

    /// Whether something posted needs the owner's run loop (besides edge interrupts a sender
    /// delivers itself): a level-triggered interrupt, an NMI, INIT, SIPI, a completed access, a
    /// flush.
    pub fn needs_owner(&self) -> bool {
        self.fixed.iter().any(|w| w.load(Ordering::Acquire) != 0)
            || self.nmi.load(Ordering::Acquire) != 0
            || self.init.load(Ordering::Acquire)
            || self.sipi.load(Ordering::Acquire) != 0
            || self.io_ticket.load(Ordering::Acquire) != 0
            || self.slat_flush.load(Ordering::Acquire)
    }

    /// Completes the deferred access `ticket` of this vCPU with `value` (a
    /// read's data; ignored for writes). Called from any pCPU; the caller
    /// then kicks the vCPU. A ticket the vCPU no longer waits for is
    /// ignored when it looks.
    pub fn complete_io(&self, ticket: u64, value: u64) {
        self.io_value.store(value, Ordering::Relaxed);
        self.io_ticket.store(ticket, Ordering::Release);
        self.any.store(true, Ordering::Release);
    }

    /// The value of deferred access `ticket` if it completed (owner only).
    pub fn take_io(&self, ticket: u64) -> Option<u64> {
        if ticket == 0 || self.io_ticket.load(Ordering::Acquire) != ticket {
            return None;
        }
        let value = self.io_value.load(Ordering::Relaxed);
        self.io_ticket.store(0, Ordering::Relaxed);
        Some(value)
    }

    /// Back to the power-on state (a VM reset): nothing pending.
    pub fn clear(&self, apic_id: u32) {
        for w in self.fixed.iter().chain(self.level.iter()) {
            w.store(0, Ordering::Relaxed);
        }
        self.nmi.store(0, Ordering::Relaxed);
        self.init.store(false, Ordering::Relaxed);
        self.sipi.store(0, Ordering::Relaxed);
        self.apic_id.store(apic_id, Ordering::Relaxed);
        self.ldr.store(0, Ordering::Relaxed);
        self.dfr.store(0xFFFF_FFFF, Ordering::Relaxed);
        self.io_ticket.store(0, Ordering::Relaxed);
        self.any.store(false, Ordering::Release);
    }

    /// Publishes the owner's addressing registers (after a vLAPIC write).
    pub fn publish(&self, lapic: &VLapic) {
        self.apic_id.store(lapic.id(), Ordering::Relaxed);
        self.ldr.store(lapic.ldr(), Ordering::Relaxed);
        self.dfr.store(lapic.dfr(), Ordering::Release);
    }

    fn post_fixed(&self, vector: u8, level: bool) {
        let (word, bit) = (usize::from(vector / 32), 1u32 << (vector % 32));
        if level {
            self.level[word].fetch_or(bit, Ordering::Relaxed);
        } else {
            self.level[word].fetch_and(!bit, Ordering::Relaxed);
        }
        self.fixed[word].fetch_or(bit, Ordering::Release);
        self.any.store(true, Ordering::Release);
    }

    fn post_init(&self) {
        // A start-up IPI sent before this INIT is void.
        self.sipi.store(0, Ordering::Relaxed);
        self.init.store(true, Ordering::Release);
        self.any.store(true, Ordering::Release);
    }

    fn post_sipi(&self, vector: u8) {
        self.sipi
            .store(SIPI_VALID | u32::from(vector), Ordering::Release);
        self.any.store(true, Ordering::Release);
    }

    fn post_nmi(&self) {
        let _ = self
            .nmi
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < 2).then_some(n + 1)
            });
        self.any.store(true, Ordering::Release);
    }

    /// Whether anything was posted since the last [`VcpuInbox::drain`].
    pub fn has_news(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Moves fixed interrupts into `lapic` and reports INIT and NMI (owner only).
    /// A start-up IPI stays for [`VcpuInbox::take_sipi`]: a running vCPU ignores it.
    pub fn drain(&self, lapic: &mut VLapic) -> Signals {
        self.drain_to(|vector, level| {
            lapic.raise(vector, level);
        })
    }

    /// Like [`VcpuInbox::drain`], with each fixed interrupt (vector, level-triggered) handed to
    /// `raise` (a passed-through LAPIC's owner raises them on the physical one).
    #[inline(always)]
    pub fn drain_to(&self, mut raise: impl FnMut(u8, bool)) -> Signals {
        if !self.any.swap(false, Ordering::AcqRel) {
            return Signals::default();
        }
        for word in 0..8 {
            let bits = self.fixed[word].swap(0, Ordering::AcqRel);
            if bits == 0 {
                continue;
            }
            let level = self.level[word].load(Ordering::Relaxed);
            for bit in 0..32 {
                if bits & (1 << bit) != 0 {
                    raise((word * 32 + bit) as u8, level & (1 << bit) != 0);
                }
            }
        }
        Signals {
            init: self.init.swap(false, Ordering::AcqRel),
            nmi: self.nmi.swap(0, Ordering::AcqRel),
        }
    }

    /// Takes a pending INIT (a vCPU waiting to be started).
    pub fn take_init(&self) -> bool {
        self.init.swap(false, Ordering::AcqRel)
    }

    /// Takes the start-up vector of a SIPI received since the last INIT.
    pub fn take_sipi(&self) -> Option<u8> {
        let v = self.sipi.swap(0, Ordering::AcqRel);
        (v & SIPI_VALID != 0).then_some(v as u8)
    }

    /// Whether this vCPU is named by `dest`.
    fn matches(&self, dest: Destination) -> bool {
        match dest {
            Destination::Physical(0xFF) => true,
            Destination::Physical(id) => self.apic_id.load(Ordering::Relaxed) == u32::from(id),
            Destination::Logical(mda) => {
                let ldr = self.ldr.load(Ordering::Relaxed) >> 24;
                let flat = self.dfr.load(Ordering::Acquire) >> 28 == 0xF;
                if flat {
                    ldr & u32::from(mda) != 0
                } else {
                    // Cluster model: high nibble selects the cluster (0xF: all).
                    let (cluster, members) = (u32::from(mda) >> 4, u32::from(mda) & 0xF);
                    (cluster == 0xF || cluster == ldr >> 4) && members & ldr & 0xF != 0
                }
            }
            Destination::X2Physical(u32::MAX) => true,
            Destination::X2Physical(id) => self.apic_id.load(Ordering::Relaxed) == id,
            Destination::X2Logical(mda) => {
                let ldr = self.ldr.load(Ordering::Relaxed);
                mda >> 16 == ldr >> 16 && mda & ldr & 0xFFFF != 0
            }
        }
    }
}

/// The vCPUs `dest` names, as a mask.
pub fn targets(inboxes: &[VcpuInbox], dest: Destination) -> u64 {
    inboxes
        .iter()
        .take(MAX_VCPUS)
        .enumerate()
        .filter(|(_, b)| b.matches(dest))
        .fold(0, |m, (i, _)| m | (1 << i))
}

/// Lowest-priority delivery: one of the named vCPUs (the first).
fn lowest(mask: u64) -> u64 {
    mask & mask.wrapping_neg()
}

/// Routes one device interrupt (from the IOAPIC) to the vCPUs it names;
/// returns the vCPUs to wake. Nobody named: nothing delivered (0).
pub fn route(inboxes: &[VcpuInbox], d: &Delivery) -> u64 {
    let dest = match d.dest_mode {
        DestinationMode::Physical => Destination::Physical(d.dest),
        DestinationMode::Logical => Destination::Logical(d.dest),
    };
    let mut mask = targets(inboxes, dest);
    match d.mode {
        DeliveryMode::LowestPriority => mask = lowest(mask),
        DeliveryMode::Nmi => {
            for_each(inboxes, mask, VcpuInbox::post_nmi);
            return mask;
        }
        DeliveryMode::Fixed | DeliveryMode::ExtInt => {}
    }
    for_each(inboxes, mask, |b| b.post_fixed(d.vector, d.level));
    mask
}

fn for_each(inboxes: &[VcpuInbox], mask: u64, f: impl Fn(&VcpuInbox)) {
    for (i, b) in inboxes.iter().take(MAX_VCPUS).enumerate() {
        if mask & (1 << i) != 0 {
            f(b);
        }
    }
}

/// Sends the IPI that vCPU `from` wrote to its ICR (`icr` = high << 32 | low;
/// the destination in bits 63:32 if `x2apic`, else 63:56).
pub fn send_ipi(
    inboxes: &[VcpuInbox],
    from: usize,
    icr: u64,
    x2apic: bool,
) -> Result<IpiOutcome, IpiError> {
    let vector = icr as u8;
    let mode = (icr >> 8) & 0b111;
    let self_bit = if from < MAX_VCPUS && from < inboxes.len() {
        1u64 << from
    } else {
        0
    };
    let all = if inboxes.len() >= MAX_VCPUS {
        u64::MAX
    } else {
        (1u64 << inboxes.len()) - 1
    };
    let mut mask = match (icr >> 18) & 0b11 {
        0 => {
            let logical = icr & ICR_LOGICAL != 0;
            let dest = match (x2apic, logical) {
                (false, false) => Destination::Physical((icr >> 56) as u8),
                (false, true) => Destination::Logical((icr >> 56) as u8),
                (true, false) => Destination::X2Physical((icr >> 32) as u32),
                (true, true) => Destination::X2Logical((icr >> 32) as u32),
            };
            targets(inboxes, dest)
        }
        1 => self_bit,
        2 => all,
        _ => all & !self_bit,
    };
    match mode {
        MODE_FIXED | MODE_LOWEST => {
            if vector < 16 {
                return Err(IpiError::IllegalVector(vector));
            }
            if mode == MODE_LOWEST {
                mask = lowest(mask);
            }
            for_each(inboxes, mask, |b| b.post_fixed(vector, false));
        }
        MODE_INIT => {
            // INIT level de-assert only synchronizes arbitration IDs.
            if icr & ICR_LEVEL_ASSERT == 0 && icr & ICR_TRIGGER_LEVEL != 0 {
                return Ok(IpiOutcome::default());
            }
            for_each(inboxes, mask, VcpuInbox::post_init);
        }
        MODE_STARTUP => for_each(inboxes, mask, |b| b.post_sipi(vector)),
        MODE_NMI => for_each(inboxes, mask, VcpuInbox::post_nmi),
        MODE_SMI => {
            return Ok(IpiOutcome {
                targets: 0,
                dropped: true,
            })
        }
        // Reserved modes (3, 7): nothing is sent.
        _ => return Ok(IpiOutcome::default()),
    }
    Ok(IpiOutcome {
        targets: mask,
        dropped: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn inboxes(n: u32) -> Vec<VcpuInbox> {
        (0..n).map(VcpuInbox::new).collect()
    }

    fn lapic(id: u32) -> VLapic {
        let mut l = VLapic::new(id, 1_000_000_000);
        l.write(0xF0, 0x1FF, 0); // software-enabled
        l
    }

    fn send(b: &[VcpuInbox], from: usize, icr: u64) -> Result<IpiOutcome, IpiError> {
        send_ipi(b, from, icr, false)
    }

    fn icr(dest: u8, flags: u64) -> u64 {
        (u64::from(dest) << 56) | flags
    }

    #[test]
    fn fixed_physical_ipi_reaches_only_its_target() {
        let b = inboxes(2);
        let out = send(&b, 0, icr(1, 0x41)).unwrap();
        assert_eq!(out.targets, 0b10);
        let (mut l0, mut l1) = (lapic(0), lapic(1));
        assert_eq!(b[0].drain(&mut l0), Signals::default());
        assert_eq!(l0.pending(), None);
        b[1].drain(&mut l1);
        assert_eq!(l1.pending(), Some(0x41));
        assert!(!b[1].has_news());
    }

    #[test]
    fn shorthands_pick_self_all_and_all_but_self() {
        let b = inboxes(3);
        assert_eq!(send(&b, 1, 1 << 18 | 0x30).unwrap().targets, 0b010);
        assert_eq!(send(&b, 1, 2 << 18 | 0x30).unwrap().targets, 0b111);
        assert_eq!(send(&b, 1, 3 << 18 | 0x30).unwrap().targets, 0b101);
        assert_eq!(send(&b, 0, icr(0xFF, 0x30)).unwrap().targets, 0b111);
    }

    #[test]
    fn logical_flat_and_cluster_destinations_follow_ldr_and_dfr() {
        let b = inboxes(3);
        for (i, inbox) in b.iter().enumerate() {
            let mut l = lapic(i as u32);
            l.write(0xD0, 1 << (24 + i), 0); // flat: one bit per CPU
            inbox.publish(&l);
        }
        assert_eq!(targets(&b, Destination::Logical(0b101)), 0b101);
        assert_eq!(
            send(&b, 0, icr(0b110, ICR_LOGICAL | 0x50)).unwrap().targets,
            0b110
        );
        // Cluster model: the high nibble is the cluster, the low one members.
        let c = inboxes(3);
        for (inbox, ldr) in c.iter().zip([0x11u32, 0x12, 0x21]) {
            let mut l = lapic(0);
            l.write(0xE0, 0x0FFF_FFFF, 0);
            l.write(0xD0, ldr << 24, 0);
            inbox.publish(&l);
        }
        assert_eq!(targets(&c, Destination::Logical(0x13)), 0b011);
        assert_eq!(targets(&c, Destination::Logical(0x22)), 0);
        assert_eq!(targets(&c, Destination::Logical(0xF1)), 0b101);
    }

    #[test]
    fn nmi_ipis_are_delivered_and_smis_dropped() {
        let b = inboxes(2);
        let out = send(&b, 0, icr(1, MODE_NMI << 8 | ICR_LEVEL_ASSERT)).unwrap();
        assert_eq!((out.targets, out.dropped), (0b10, false));
        let mut l1 = lapic(1);
        assert_eq!(b[1].drain(&mut l1).nmi, 1);
        assert_eq!(l1.pending(), None, "an NMI is not a vector in the IRR");
        let smi = send(&b, 0, icr(1, MODE_SMI << 8)).unwrap();
        assert_eq!((smi.targets, smi.dropped), (0, true));
        assert_eq!(b[1].drain(&mut l1).nmi, 0);
    }

    #[test]
    fn lowest_priority_delivers_to_exactly_one() {
        let b = inboxes(4);
        let out = send(&b, 0, icr(0xFF, 1 << 8 | 0x60)).unwrap();
        assert_eq!(out.targets.count_ones(), 1);
    }

    #[test]
    fn init_then_startup_starts_and_init_voids_earlier_sipis() {
        let b = inboxes(2);
        // A SIPI before the INIT is forgotten by the INIT.
        send(&b, 0, icr(1, 6 << 8 | 0x12)).unwrap();
        send(&b, 0, icr(1, 5 << 8 | ICR_LEVEL_ASSERT)).unwrap();
        assert_eq!(b[1].take_sipi(), None);
        // INIT de-assert is not an INIT.
        send(&b, 0, icr(1, 5 << 8 | ICR_TRIGGER_LEVEL)).unwrap();
        let mut l1 = lapic(1);
        assert_eq!(b[1].drain(&mut l1), Signals { init: true, nmi: 0 });
        assert!(!b[1].take_init());
        send(&b, 0, icr(1, 6 << 8 | 0x9A)).unwrap();
        send(&b, 0, icr(1, 6 << 8 | 0x9A)).unwrap();
        assert_eq!(b[1].take_sipi(), Some(0x9A));
        assert_eq!(b[1].take_sipi(), None, "the second SIPI is the same start");
    }

    #[test]
    fn device_interrupts_route_by_destination_and_keep_their_trigger() {
        let b = inboxes(2);
        let d = Delivery {
            pin: 4,
            dest: 1,
            dest_mode: DestinationMode::Physical,
            mode: DeliveryMode::Fixed,
            vector: 0x24,
            level: true,
        };
        assert_eq!(route(&b, &d), 0b10);
        let mut l1 = lapic(1);
        b[1].drain(&mut l1);
        assert_eq!(l1.pending(), Some(0x24));
        l1.accept(0x24);
        // Level-triggered: the EOI names the vector for the IOAPIC.
        assert_eq!(
            l1.write(0xB0, 0, 0),
            crate::LapicAction::Eoi { vector: 0x24 }
        );
        let nobody = Delivery { dest: 9, ..d };
        assert_eq!(route(&b, &nobody), 0);
        let nmi = Delivery {
            mode: DeliveryMode::Nmi,
            ..d
        };
        assert_eq!(route(&b, &nmi), 0b10);
        assert_eq!(b[1].drain(&mut l1).nmi, 1);
    }

    #[test]
    fn hostile_icr_values_never_panic_or_reach_missing_vcpus() {
        let b = inboxes(2);
        assert_eq!(send(&b, 0, icr(1, 0x05)), Err(IpiError::IllegalVector(5)));
        for from in [0usize, 1, 2, 63, 64, usize::MAX] {
            for raw in [
                0u64,
                u64::MAX,
                0xFF00_0000_000C_CFFF,
                icr(7, 0x41),
                icr(0xFE, ICR_LOGICAL | 0x41),
                icr(1, 3 << 8 | 0x41),
                icr(1, 7 << 8 | 0x41),
                icr(1, MODE_NMI << 8),
                icr(1, MODE_SMI << 8),
                icr(7, MODE_NMI << 8),
            ] {
                if let Ok(out) = send(&b, from, raw) {
                    assert_eq!(out.targets & !0b11, 0, "{raw:#x} from {from}");
                }
            }
        }
        // 64 vCPUs: the masks stay in range.
        let many = inboxes(64);
        assert_eq!(send(&many, 63, 2 << 18 | 0x40).unwrap().targets, u64::MAX);
        assert_eq!(
            send(&many, 63, 3 << 18 | 0x40).unwrap().targets,
            u64::MAX >> 1
        );
        // An empty VM: nobody to reach.
        assert_eq!(send(&[], 0, 2 << 18 | 0x40).unwrap().targets, 0);
    }

    #[test]
    fn x2apic_destinations_use_32_bit_ids_and_clusters() {
        let b = inboxes(3);
        for (i, inbox) in b.iter().enumerate() {
            let mut l = lapic(i as u32);
            let base = l.read_msr(0x1B, 0).unwrap();
            assert!(l.write_msr(0x1B, base | 1 << 10, 0).is_some());
            inbox.publish(&l);
        }
        let x2 = |dest: u32, flags: u64| (u64::from(dest) << 32) | flags;
        assert_eq!(send_ipi(&b, 0, x2(2, 0x40), true).unwrap().targets, 0b100);
        assert_eq!(
            send_ipi(&b, 0, x2(u32::MAX, 0x40), true).unwrap().targets,
            0b111
        );
        // 0xFF is an ordinary x2APIC ID, not a broadcast.
        assert_eq!(send_ipi(&b, 0, x2(0xFF, 0x40), true).unwrap().targets, 0);
        // Cluster 0, members 0 and 2 (LDR = 1 << (id & 0xF)).
        assert_eq!(
            send_ipi(&b, 0, x2(0b101, ICR_LOGICAL | 0x40), true)
                .unwrap()
                .targets,
            0b101
        );
        assert_eq!(
            send_ipi(&b, 0, x2(0x1_0001, ICR_LOGICAL | 0x40), true)
                .unwrap()
                .targets,
            0
        );
    }

    #[test]
    fn two_nmis_back_to_back_are_both_counted_and_a_third_collapses() {
        let b = inboxes(2);
        let mut l1 = lapic(1);
        for _ in 0..2 {
            send(&b, 0, icr(1, 4 << 8)).unwrap();
        }
        assert_eq!(b[1].drain(&mut l1).nmi, 2);
        for _ in 0..5 {
            send(&b, 0, icr(1, 4 << 8)).unwrap();
        }
        assert_eq!(b[1].drain(&mut l1).nmi, 2, "the pin latches no more");
    }

    #[test]
    fn a_sender_takes_edge_interrupts_once_and_leaves_the_rest_to_the_owner() {
        let b = inboxes(2);
        b[1].set_passthrough(true);
        assert!(b[1].is_passthrough());
        send(&b, 0, icr(1, 0x41)).unwrap();
        send(&b, 0, icr(1, 0x90)).unwrap();
        let d = Delivery {
            pin: 3,
            dest: 1,
            dest_mode: DestinationMode::Physical,
            mode: DeliveryMode::Fixed,
            vector: 0x70,
            level: true,
        };
        route(&b, &d);
        let mut taken = Vec::new();
        b[1].take_edges(|v| taken.push(v));
        assert_eq!(taken, [0x41, 0x90]);
        b[1].take_edges(|v| taken.push(v));
        assert_eq!(taken.len(), 2, "each vector is taken once");
        assert!(b[1].needs_owner(), "the level one is the owner's");
        let mut owner = Vec::new();
        b[1].drain_to(|v, level| owner.push((v, level)));
        assert_eq!(owner, [(0x70, true)]);
        assert!(!b[1].needs_owner());
        // An NMI, INIT or SIPI always needs the owner.
        send(&b, 0, icr(1, 0x400)).unwrap();
        assert!(b[1].needs_owner());
    }
}
