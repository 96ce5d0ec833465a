//! Driver tests against the simulated unit: what a device's DMA and
//! interrupts do after each driver call.

extern crate std;

use std::format;
use std::vec::Vec;

use paging::{Format, MemType, PageSizes, Perms, SecondLevelTables};

use super::*;
use crate::bdf::Bdf;
use crate::hw::{DmaMemory, Regs};
use crate::sim::{Dma, Interrupt, SimMemory, SimVtd};
use crate::HostPhysAddr;

const NIC: Bdf = Bdf::new(0, 3, 0);
const DISK: Bdf = Bdf::new(0, 4, 0);
const OTHER_BUS: Bdf = Bdf::new(2, 0, 0);
const RAM_A: u64 = 0x4000_0000;
const RAM_B: u64 = 0x8000_0000;
const MIB: u64 = 1 << 20;

fn qemu(aw: u8, ir: bool) -> (SimMemory, SimVtd) {
    let mem = SimMemory::new(0x100_0000);
    let sim = SimVtd::new(mem.clone(), SimVtd::qemu_cap(aw, 1), SimVtd::qemu_ecap(ir));
    (mem, sim)
}

/// A VM's DMA tables: guest 0..4 MiB at `ram`, plus one read-only page at
/// guest 8 MiB.
fn vm_tables(mem: &SimMemory, ram: u64) -> SecondLevelTables<SimMemory> {
    let mut t = SecondLevelTables::new(Format::VtdSl, PageSizes::default(), mem.clone()).unwrap();
    t.map(
        paging::GuestPhysAddr(0),
        HostPhysAddr(ram),
        4 * MIB,
        Perms::RW,
        MemType::WriteBack,
    )
    .unwrap();
    t.map(
        paging::GuestPhysAddr(8 * MIB),
        HostPhysAddr(ram + 8 * MIB),
        0x1000,
        Perms::R,
        MemType::WriteBack,
    )
    .unwrap();
    t
}

fn faults(unit: &mut Unit<SimVtd>) -> Vec<FaultRecord> {
    let mut out = Vec::new();
    unit.poll_faults(|f| out.push(f));
    out
}

#[test]
fn init_on_qemu_defaults() {
    let (mut mem, sim) = qemu(39, true);
    let mut unit = Unit::init(sim, &mut mem, Config::default()).unwrap();
    assert_eq!(unit.levels(), 3);
    assert!(unit.queued() && unit.ir_enabled());
    let gsts = unit.regs().read32(0x1c);
    // TES, RTPS, QIES, IRES, IRTPS; CFIS clear.
    assert_eq!(
        gsts & 0xff80_0000,
        (1 << 31) | (1 << 30) | (1 << 26) | (1 << 25) | (1 << 24)
    );
    let sim = unit.regs();
    assert_eq!(sim.register_invalidations_under_qi, 0);
    // Global context and IOTLB through the registers, IEC and wait via the queue.
    assert_eq!(sim.invalidations, [1, 1, 1, 1]);
    // QEMU's walks are not snooped (ECAP.C = 0): table writes were flushed.
    let before = mem.flushes();
    let mut t = vm_tables(&mem, RAM_A);
    let root = t.dma_root(3).unwrap();
    unit.attach(&mut mem, NIC, 1, root, 3).unwrap();
    assert!(mem.flushes() > before);
    let text = format!("{unit}");
    assert!(
        text.starts_with("VT-d 1.0: 3-level tables (SAGAW 0x2, MGAW 39), 65536 domains"),
        "{text}"
    );
    assert!(
        text.contains("queued invalidation, interrupt remapping on (256 entries)"),
        "{text}"
    );
    assert!(text.contains("1 devices attached, 0 faults"), "{text}");
}

#[test]
fn attached_device_translates_inside_its_domain_and_faults_outside() {
    for (aw, levels) in [(39, 3), (48, 4)] {
        let (mut mem, sim) = qemu(aw, false);
        let mut unit = Unit::init(sim, &mut mem, Config::default()).unwrap();
        assert_eq!(unit.levels(), levels);
        let mut a = vm_tables(&mem, RAM_A);
        let root = a.dma_root(levels).unwrap();
        unit.attach(&mut mem, NIC, 1, root, levels).unwrap();
        let sim = unit.regs();
        assert_eq!(sim.dma(NIC, 0x1234, true), Dma::Ok(RAM_A + 0x1234));
        assert_eq!(
            sim.dma(NIC, 3 * MIB + 8, false),
            Dma::Ok(RAM_A + 3 * MIB + 8)
        );
        assert_eq!(sim.dma(NIC, 8 * MIB, false), Dma::Ok(RAM_A + 8 * MIB));
        // Outside the VM's RAM: not mapped.
        assert_eq!(sim.dma(NIC, 4 * MIB, true), Dma::Blocked(5));
        let got = faults(&mut unit);
        assert_eq!(
            got,
            [FaultRecord {
                source: NIC,
                reason: 5,
                address: 4 * MIB,
                write: true
            }]
        );
        assert_eq!(
            format!("{}", got[0]),
            "00:03.0: DMA write fault 0x05 (write not allowed) at 0x400000"
        );
        // A read-only page refuses writes.
        assert_eq!(unit.regs().dma(NIC, 8 * MIB + 16, true), Dma::Blocked(5));
        assert_eq!(faults(&mut unit).len(), 1);
        // Reads outside RAM fault as reads.
        assert_eq!(unit.regs().dma(NIC, 16 * MIB, false), Dma::Blocked(6));
        let f = faults(&mut unit);
        assert!(!f[0].write && f[0].address == 16 * MIB);
        assert_eq!(unit.fault_counts(), (3, 0));
        assert!(unit.regs().pending_faults().is_empty());
        // Beyond the walk's width.
        let beyond = 1u64 << (12 + 9 * u32::from(levels));
        assert_eq!(unit.regs().dma(NIC, beyond, false), Dma::Blocked(4));
    }
}

#[test]
fn never_attached_devices_are_blocked() {
    let (mut mem, sim) = qemu(48, true);
    let mut unit = Unit::init(sim, &mut mem, Config::default()).unwrap();
    // Root entry not present (nothing on bus 0 yet).
    assert_eq!(unit.regs().dma(NIC, 0x1000, false), Dma::Blocked(1));
    let mut a = vm_tables(&mem, RAM_A);
    let root = a.dma_root(4).unwrap();
    unit.attach(&mut mem, NIC, 1, root, 4).unwrap();
    // Same bus, no context entry; other bus, no root entry.
    assert_eq!(unit.regs().dma(DISK, 0x1000, false), Dma::Blocked(2));
    assert_eq!(unit.regs().dma(OTHER_BUS, 0x1000, true), Dma::Blocked(1));
    let reasons: Vec<u8> = faults(&mut unit).iter().map(|f| f.reason).collect();
    assert_eq!(reasons, [1]);
    // One fault recording register: the next two overflowed.
    assert_eq!(unit.fault_counts(), (1, 1));
}

#[test]
fn detach_and_move_invalidate_what_the_unit_cached() {
    let (mut mem, sim) = qemu(48, false);
    let mut unit = Unit::init(sim, &mut mem, Config::default()).unwrap();
    let mut a = vm_tables(&mem, RAM_A);
    let mut b = vm_tables(&mem, RAM_B);
    let (ra, rb) = (a.dma_root(4).unwrap(), b.dma_root(4).unwrap());
    unit.attach(&mut mem, NIC, 1, ra, 4).unwrap();
    assert_eq!(unit.regs().dma(NIC, 0x2000, true), Dma::Ok(RAM_A + 0x2000));
    // Move to domain 2: the cached context and translation must go.
    unit.attach(&mut mem, NIC, 2, rb, 4).unwrap();
    assert_eq!(unit.regs().dma(NIC, 0x2000, true), Dma::Ok(RAM_B + 0x2000));
    // Attaching again the same way changes nothing.
    unit.attach(&mut mem, NIC, 2, rb, 4).unwrap();
    assert_eq!(unit.detach(&mut mem, NIC), Ok(true));
    assert_eq!(unit.regs().dma(NIC, 0x2000, true), Dma::Blocked(2));
    assert_eq!(unit.detach(&mut mem, NIC), Ok(false));
    assert_eq!(unit.detach(&mut mem, OTHER_BUS), Ok(false));
    assert_eq!(unit.regs().register_invalidations_under_qi, 0);
    assert!(format!("{unit}").contains("0 devices attached"));
}

#[test]
fn unmap_needs_a_domain_flush() {
    let (mut mem, sim) = qemu(48, false);
    let mut unit = Unit::init(sim, &mut mem, Config::default()).unwrap();
    let mut a = vm_tables(&mem, RAM_A);
    let root = a.dma_root(4).unwrap();
    unit.attach(&mut mem, NIC, 7, root, 4).unwrap();
    assert_eq!(unit.regs().dma(NIC, 0x5000, false), Dma::Ok(RAM_A + 0x5000));
    a.unmap(paging::GuestPhysAddr(0), 4 * MIB).unwrap();
    // The unit still holds the translation (as hardware may) until flushed.
    assert_eq!(unit.regs().dma(NIC, 0x5000, false), Dma::Ok(RAM_A + 0x5000));
    unit.flush_domain(&mut mem, 7).unwrap();
    assert_eq!(unit.regs().dma(NIC, 0x5000, false), Dma::Blocked(6));
}

#[test]
fn register_based_invalidation_without_a_queue() {
    let mem = SimMemory::new(0x100_0000);
    // A unit without QI and without IR, coherent walks.
    let ecap = 1 | (0xf << 8);
    let sim = SimVtd::new(mem.clone(), SimVtd::qemu_cap(48, 2), ecap);
    let mut m = mem.clone();
    let mut unit = Unit::init(sim, &mut m, Config::default()).unwrap();
    assert!(!unit.queued() && !unit.ir_enabled());
    let mut a = vm_tables(&mem, RAM_A);
    let root = a.dma_root(4).unwrap();
    let flushes = mem.flushes();
    unit.attach(&mut m, NIC, 1, root, 4).unwrap();
    assert_eq!(mem.flushes(), flushes, "coherent unit: no cache flushes");
    assert_eq!(unit.regs().dma(NIC, 0x1000, false), Dma::Ok(RAM_A + 0x1000));
    unit.detach(&mut m, NIC).unwrap();
    assert_eq!(unit.regs().dma(NIC, 0x1000, false), Dma::Blocked(2));
    // Context: global + 2 device-selective; IOTLB: global + 2 domain.
    assert_eq!(unit.regs().invalidations, [3, 3, 0, 0]);
    assert!(format!("{unit}").contains("register invalidation, interrupt remapping unsupported"));
    assert_eq!(
        unit.set_irte(&mut m, 0, &Irte::fixed(0x30, 0, NIC)),
        Err(Error::IrOff)
    );
}

#[test]
fn interrupt_remapping() {
    let (mut mem, sim) = qemu(39, true);
    let mut unit = Unit::init(sim, &mut mem, Config::default()).unwrap();
    let msi = unit
        .set_irte(&mut mem, 5, &Irte::fixed(0x41, 2, NIC))
        .unwrap();
    assert_eq!(msi, remapped_msi(5));
    let sim = unit.regs();
    assert_eq!(
        sim.msi(NIC, msi.address, msi.data),
        Interrupt::Delivered {
            vector: 0x41,
            dest: 2
        }
    );
    // Another device using the same handle is refused (source id check).
    assert_eq!(
        sim.msi(DISK, msi.address, msi.data),
        Interrupt::Blocked(0x26)
    );
    // Compatibility format is blocked (CFI clear).
    assert_eq!(sim.msi(NIC, 0xfee0_0000, 0x41), Interrupt::Blocked(0x25));
    // Entries not written, and beyond the table.
    assert_eq!(
        sim.msi(NIC, remapped_msi(6).address, 0),
        Interrupt::Blocked(0x22)
    );
    assert_eq!(
        sim.msi(NIC, remapped_msi(300).address, 0),
        Interrupt::Blocked(0x21)
    );
    let f = faults(&mut unit);
    assert_eq!(
        (f[0].source, f[0].reason, f[0].interrupt_index()),
        (DISK, 0x26, Some(5))
    );
    // Rewriting the entry for another vector and CPU takes effect at once.
    unit.set_irte(&mut mem, 5, &Irte::fixed(0x42, 1, NIC))
        .unwrap();
    assert_eq!(
        unit.regs().msi(NIC, msi.address, 0),
        Interrupt::Delivered {
            vector: 0x42,
            dest: 1
        }
    );
    // A device behind a bridge: accepted from any bus in the range.
    let bridged = Irte {
        source: SourceCheck::Buses { first: 2, last: 3 },
        ..Irte::fixed(0x50, 0, NIC)
    };
    unit.set_irte(&mut mem, 6, &bridged).unwrap();
    assert!(matches!(
        unit.regs().msi(OTHER_BUS, remapped_msi(6).address, 0),
        Interrupt::Delivered { vector: 0x50, .. }
    ));
    assert_eq!(
        unit.regs().msi(NIC, remapped_msi(6).address, 0),
        Interrupt::Blocked(0x26)
    );
    unit.clear_irte(&mut mem, 5).unwrap();
    assert_eq!(
        unit.regs().msi(NIC, msi.address, 0),
        Interrupt::Blocked(0x22)
    );
    assert_eq!(
        unit.set_irte(&mut mem, 256, &bridged),
        Err(Error::BadIrteIndex {
            index: 256,
            entries: 256
        })
    );
    assert_eq!(unit.regs().register_invalidations_under_qi, 0);
}

#[test]
fn configuration_errors() {
    // IR offered but the queue turned off.
    let (mut mem, sim) = qemu(39, true);
    let config = Config {
        queued_invalidation: false,
        ..Config::default()
    };
    assert_eq!(
        Unit::init(sim, &mut mem, config).err(),
        Some(Error::IrNeedsQueuedInvalidation)
    );
    let (mut mem, sim) = qemu(39, true);
    let config = Config {
        irte_entries: 100,
        ..Config::default()
    };
    assert_eq!(
        Unit::init(sim, &mut mem, config).err(),
        Some(Error::BadIrteCount { entries: 100 })
    );
    // IR off by configuration.
    let (mut mem, sim) = qemu(39, true);
    let config = Config {
        irte_entries: 0,
        ..Config::default()
    };
    let mut unit = Unit::init(sim, &mut mem, config).unwrap();
    assert!(!unit.ir_enabled());
    assert!(format!("{unit}").contains("interrupt remapping off"));
    let root = HostPhysAddr(0x100_0000);
    assert_eq!(
        unit.attach(&mut mem, NIC, 1, root, 4),
        Err(Error::LevelsUnsupported {
            levels: 4,
            sagaw: 2
        })
    );
    assert_eq!(
        unit.attach(&mut mem, NIC, 0, root, 3),
        Err(Error::BadDomain {
            domain: 0,
            supported: 65536
        })
    );
    assert_eq!(
        unit.attach(&mut mem, NIC, 1, HostPhysAddr(1 << 40), 3),
        Err(Error::BadRoot {
            root: HostPhysAddr(1 << 40),
            width: 39
        })
    );
    assert_eq!(
        unit.attach(&mut mem, NIC, 1, HostPhysAddr(0x1008), 3),
        Err(Error::BadRoot {
            root: HostPhysAddr(0x1008),
            width: 39
        })
    );
    let text = format!(
        "{}",
        Error::BadDomain {
            domain: 0,
            supported: 256
        }
    );
    assert!(
        text.contains("domain id 0") && text.contains("256"),
        "{text}"
    );
    // No unit at that address.
    let mem2 = SimMemory::new(0x100_0000);
    let mut none = SimVtd::new(mem2.clone(), 0, 0);
    none.poke(0, 4, 0);
    let mut m2 = mem2.clone();
    assert!(matches!(
        Unit::init(&mut none, &mut m2, Config::default()),
        Err(Error::NoUnit { .. })
    ));
    // Out of memory for the root table.
    let (mut mem, sim) = qemu(39, true);
    mem.set_limit(0);
    assert_eq!(
        Unit::init(sim, &mut mem, Config::default()).err(),
        Some(Error::OutOfMemory { what: "root table" })
    );
}

#[test]
fn a_unit_that_never_answers_times_out() {
    let (mut mem, mut sim) = qemu(39, true);
    sim.stuck = true;
    let config = Config {
        wait_budget: 50,
        ..Config::default()
    };
    let err = Unit::init(sim, &mut mem, config).err();
    assert_eq!(
        err,
        Some(Error::Timeout {
            what: "root table pointer set",
            register: 0x1c,
            value: 0
        })
    );
    let text = format!("{}", err.unwrap());
    assert!(
        text.contains("root table pointer set") && text.contains("0x1c"),
        "{text}"
    );
    // A unit that stops answering after init: invalidations time out.
    let (mut mem, sim) = qemu(48, false);
    let mut unit = Unit::init(sim, &mut mem, config).unwrap();
    unit.regs().stuck = true;
    let mut a = vm_tables(&mem, RAM_A);
    let root = a.dma_root(4).unwrap();
    assert!(matches!(
        unit.attach(&mut mem, NIC, 1, root, 4),
        Err(Error::Timeout {
            what: "invalidation wait descriptor",
            ..
        })
    ));
}

#[test]
fn refused_descriptor_is_an_error() {
    let (mut mem, sim) = qemu(48, false);
    let mut unit = Unit::init(sim, &mut mem, Config::default()).unwrap();
    assert_eq!(unit.regs().read32(0x34) & (1 << 4), 0);
    // A wait descriptor with a reserved bit, queued behind the driver's
    // back: the unit stops at it with FSTS.IQE, and the driver's next wait
    // reports the error instead of spinning.
    let err = {
        let sim = unit.regs();
        let base = sim.read64(0x90) & !0xfff;
        let tail = sim.read64(0x88);
        mem.clone()
            .write_u64(HostPhysAddr(base + tail), 0x5 | (1 << 7));
        mem.clone().write_u64(HostPhysAddr(base + tail + 8), 0);
        sim.write64(0x88, tail + 16);
        sim.read32(0x34) & (1 << 4)
    };
    assert_ne!(err, 0);
    let mut a = vm_tables(&mem, RAM_A);
    let root = a.dma_root(4).unwrap();
    assert!(matches!(
        unit.attach(&mut mem, NIC, 1, root, 4),
        Err(Error::QueueError { .. })
    ));
}
