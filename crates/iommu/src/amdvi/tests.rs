//! Driver tests against the simulated unit.

extern crate std;

use std::format;
use std::vec::Vec;

use paging::{Format, GuestPhysAddr, MemType, PageSizes, Perms, SecondLevelTables};

use super::*;
use crate::bdf::Bdf;
use crate::hw::Regs;
use crate::sim::{Dma, Interrupt, SimAmdVi, SimMemory};
use crate::{HostPhysAddr, MsiMessage};

const NIC: Bdf = Bdf::new(0, 3, 0);
const DISK: Bdf = Bdf::new(0, 4, 0);
const RAM_A: u64 = 0x4000_0000;
const RAM_B: u64 = 0x8000_0000;
const MIB: u64 = 1 << 20;
const QEMU_EFR: u64 = 0x29d3;

fn qemu(max: u16) -> (SimMemory, Unit<SimAmdVi>) {
    let mut mem = SimMemory::new(0x100_0000);
    let sim = SimAmdVi::new(mem.clone(), QEMU_EFR);
    let unit = Unit::init(sim, &mut mem, Config::new(Bdf(max))).unwrap();
    (mem, unit)
}

fn vm(mem: &SimMemory, ram: u64) -> SecondLevelTables<SimMemory> {
    let mut t = SecondLevelTables::new(Format::AmdVi, PageSizes::default(), mem.clone()).unwrap();
    t.map(
        GuestPhysAddr(0),
        HostPhysAddr(ram),
        4 * MIB,
        Perms::RW,
        MemType::WriteBack,
    )
    .unwrap();
    t.map(
        GuestPhysAddr(8 * MIB),
        HostPhysAddr(ram + 8 * MIB),
        0x1000,
        Perms::R,
        MemType::WriteBack,
    )
    .unwrap();
    t
}

fn events(unit: &mut Unit<SimAmdVi>, mem: &mut SimMemory) -> Vec<Event> {
    let mut out = Vec::new();
    unit.poll_events(mem, |e| out.push(e)).unwrap();
    out
}

#[test]
fn init_blocks_every_covered_device() {
    let (mut mem, mut unit) = qemu(0xffff);
    // Control: IommuEn, EventLogEn, CmdBufEn; both buffers running.
    assert_eq!(unit.regs().read64(0x18) & 0x1005, 0x1005);
    assert_eq!(unit.regs().read64(0x2020) & 0x18, 0x18);
    // Device table size field: 2 MiB = 512 pages.
    assert_eq!(unit.regs().read64(0x0) & 0x1ff, 511);
    for dev in [Bdf(0), NIC, Bdf(0xffff)] {
        assert_eq!(
            unit.regs().dma(dev, 0x1000, false),
            Dma::Blocked(2),
            "{dev}"
        );
    }
    let ev = events(&mut unit, &mut mem);
    assert_eq!(ev.len(), 3);
    assert!(matches!(
        ev[1],
        Event::IoPageFault {
            device: NIC,
            address: 0x1000,
            ..
        }
    ));
    assert!(!ev[1].is_write());
    assert_eq!(
        unit.regs().commands.get(&8),
        Some(&1),
        "INVALIDATE_IOMMU_ALL"
    );
    let text = format!("{unit}");
    assert!(
        text.starts_with("AMD-Vi: EFR 0x29d3 (up to 6-level tables, invalidate-all yes)"),
        "{text}"
    );
    assert!(
        text.contains("ids 00:00.0..=ff:1f.7") && text.contains("3 events"),
        "{text}"
    );
}

#[test]
fn attached_device_translates_inside_its_domain_and_faults_outside() {
    let (mut mem, mut unit) = qemu(0xff);
    let mut a = vm(&mem, RAM_A);
    let root = a.dma_root(4).unwrap();
    unit.attach(&mut mem, NIC, 1, root, 4).unwrap();
    let sim = unit.regs();
    assert_eq!(sim.dma(NIC, 0x1234, true), Dma::Ok(RAM_A + 0x1234));
    assert_eq!(
        sim.dma(NIC, 3 * MIB + 8, false),
        Dma::Ok(RAM_A + 3 * MIB + 8)
    );
    assert_eq!(sim.dma(NIC, 8 * MIB, false), Dma::Ok(RAM_A + 8 * MIB));
    assert_eq!(sim.dma(NIC, 4 * MIB, true), Dma::Blocked(2));
    assert_eq!(sim.dma(NIC, 8 * MIB, true), Dma::Blocked(2));
    assert_eq!(sim.dma(DISK, 0x1000, false), Dma::Blocked(2));
    let ev = events(&mut unit, &mut mem);
    assert_eq!(
        ev[0],
        Event::IoPageFault {
            device: NIC,
            domain: 1,
            address: 4 * MIB,
            flags: 1 << 5
        }
    );
    assert!(ev[0].is_write());
    // A present read-only page: PR and PE flags.
    assert!(matches!(ev[1], Event::IoPageFault { flags, .. } if flags & 0x70 == 0x70));
    assert_eq!(ev[2].device(), DISK);
    assert_eq!(unit.event_counts(), (3, 0));
    // A 3-level walk works too (Mode 3, root under PML4[0]).
    let mut b = vm(&mem, RAM_B);
    let root3 = b.dma_root(3).unwrap();
    unit.attach(&mut mem, DISK, 2, root3, 3).unwrap();
    assert_eq!(
        unit.regs().dma(DISK, 0x1000, false),
        Dma::Ok(RAM_B + 0x1000)
    );
    assert_eq!(unit.regs().dma(DISK, 1 << 39, false), Dma::Blocked(2));
}

#[test]
fn detach_move_and_flush_invalidate_what_the_unit_cached() {
    let (mut mem, mut unit) = qemu(0xff);
    let mut a = vm(&mem, RAM_A);
    let mut b = vm(&mem, RAM_B);
    let (ra, rb) = (a.dma_root(4).unwrap(), b.dma_root(4).unwrap());
    unit.attach(&mut mem, NIC, 1, ra, 4).unwrap();
    assert_eq!(unit.regs().dma(NIC, 0x2000, true), Dma::Ok(RAM_A + 0x2000));
    unit.attach(&mut mem, NIC, 2, rb, 4).unwrap();
    assert_eq!(unit.regs().dma(NIC, 0x2000, true), Dma::Ok(RAM_B + 0x2000));
    b.unmap(GuestPhysAddr(0), 4 * MIB).unwrap();
    assert_eq!(
        unit.regs().dma(NIC, 0x2000, true),
        Dma::Ok(RAM_B + 0x2000),
        "stale until flushed"
    );
    unit.flush_domain(&mut mem, 2).unwrap();
    assert_eq!(unit.regs().dma(NIC, 0x2000, true), Dma::Blocked(2));
    assert_eq!(unit.detach(&mut mem, NIC), Ok(true));
    assert_eq!(unit.regs().dma(NIC, 8 * MIB, false), Dma::Blocked(2));
    assert_eq!(unit.detach(&mut mem, NIC), Ok(false));
    // No command was refused.
    let refused = events(&mut unit, &mut mem)
        .iter()
        .filter(|e| e.name() == "ILLEGAL_COMMAND_ERROR" || e.name() == "ILLEGAL_DEV_TABLE_ENTRY")
        .count();
    assert_eq!(refused, 0);
    assert!(format!("{unit}").contains("0 devices attached"));
}

#[test]
fn interrupt_remapping_per_device() {
    let (mut mem, mut unit) = qemu(0xff);
    // Before: interrupts pass unmapped.
    assert_eq!(unit.regs().msi(NIC, 0xfee0_0000, 0x41), Interrupt::Unmapped);
    assert_eq!(
        unit.set_irte(&mut mem, NIC, 0, &Irte::fixed(0x41, 1)),
        Err(Error::IrOff { device: NIC })
    );
    unit.enable_irq_remapping(&mut mem, NIC).unwrap();
    let msi = unit
        .set_irte(&mut mem, NIC, 3, &Irte::fixed(0x41, 1))
        .unwrap();
    assert_eq!(
        msi,
        MsiMessage {
            address: 0xfee0_0000,
            data: 3
        }
    );
    assert_eq!(
        unit.regs().msi(NIC, msi.address, msi.data),
        Interrupt::Delivered {
            vector: 0x41,
            dest: 1
        }
    );
    // An index never written, and one the guest made up: refused.
    assert_eq!(unit.regs().msi(NIC, 0xfee0_0000, 4), Interrupt::Blocked(2));
    assert_eq!(
        unit.regs().msi(NIC, 0xfee0_0000, 0x7ff),
        Interrupt::Blocked(2)
    );
    // Rewrite and clear take effect (the cached entry is invalidated).
    unit.set_irte(&mut mem, NIC, 3, &Irte::fixed(0x42, 0))
        .unwrap();
    assert_eq!(
        unit.regs().msi(NIC, 0xfee0_0000, 3),
        Interrupt::Delivered {
            vector: 0x42,
            dest: 0
        }
    );
    unit.clear_irte(&mut mem, NIC, 3).unwrap();
    assert_eq!(unit.regs().msi(NIC, 0xfee0_0000, 3), Interrupt::Blocked(2));
    assert_eq!(
        unit.set_irte(&mut mem, NIC, 256, &Irte::fixed(0x41, 1)),
        Err(Error::BadIrteIndex {
            index: 256,
            entries: 256
        })
    );
    // Attaching DMA keeps the interrupt fields; blocking refuses everything.
    let mut a = vm(&mem, RAM_A);
    let root = a.dma_root(4).unwrap();
    unit.set_irte(&mut mem, NIC, 3, &Irte::fixed(0x43, 0))
        .unwrap();
    unit.attach(&mut mem, NIC, 1, root, 4).unwrap();
    assert_eq!(
        unit.regs().msi(NIC, 0xfee0_0000, 3),
        Interrupt::Delivered {
            vector: 0x43,
            dest: 0
        }
    );
    unit.block_interrupts(&mut mem, NIC).unwrap();
    assert_eq!(unit.regs().msi(NIC, 0xfee0_0000, 3), Interrupt::Blocked(2));
    assert!(format!("{unit}").contains("interrupt remapping on 0 devices"));
}

#[test]
fn argument_errors() {
    let (mut mem, mut unit) = qemu(0xff);
    let root = HostPhysAddr(0x100_0000);
    assert_eq!(
        unit.attach(&mut mem, Bdf(0x100), 1, root, 4),
        Err(Error::DeviceOutOfRange {
            device: Bdf(0x100),
            max: Bdf(0xff)
        })
    );
    assert_eq!(
        unit.attach(&mut mem, NIC, 0, root, 4),
        Err(Error::BadDomain { domain: 0 })
    );
    assert_eq!(
        unit.attach(&mut mem, NIC, 1, root, 7),
        Err(Error::BadLevels { levels: 7, max: 6 })
    );
    assert_eq!(
        unit.attach(&mut mem, NIC, 1, HostPhysAddr(0x1010), 4),
        Err(Error::BadRoot {
            root: HostPhysAddr(0x1010)
        })
    );
    let text = format!(
        "{}",
        Error::DeviceOutOfRange {
            device: Bdf(0x100),
            max: Bdf(0xff)
        }
    );
    assert!(
        text.contains("01:00.0") && text.contains("00:1f.7"),
        "{text}"
    );
    // No unit.
    let mut m = SimMemory::new(0x100_0000);
    let mut none = SimAmdVi::new(m.clone(), u64::MAX);
    none.write64(0x18, u64::MAX);
    assert_eq!(
        Unit::init(none, &mut m, Config::new(Bdf(0xff))).err(),
        Some(Error::NoUnit)
    );
    // Out of memory for the device table.
    let mut m = SimMemory::new(0x100_0000);
    m.set_limit(10);
    let sim = SimAmdVi::new(m.clone(), QEMU_EFR);
    assert_eq!(
        Unit::init(sim, &mut m, Config::new(Bdf(0xffff))).err(),
        Some(Error::OutOfMemory {
            what: "device table"
        })
    );
    // Without INVALIDATE_IOMMU_ALL, every entry is invalidated one by one.
    let mut m = SimMemory::new(0x100_0000);
    let sim = SimAmdVi::new(m.clone(), 0);
    let mut unit = Unit::init(sim, &mut m, Config::new(Bdf(0x3ff))).unwrap();
    assert_eq!(unit.regs().commands.get(&2), Some(&0x400));
    assert_eq!(unit.max_levels(), 4);
}

#[test]
fn a_unit_that_never_answers_times_out() {
    let mut mem = SimMemory::new(0x100_0000);
    let mut sim = SimAmdVi::new(mem.clone(), QEMU_EFR);
    sim.stuck = true;
    let config = Config {
        wait_budget: 20,
        ..Config::new(Bdf(0xff))
    };
    assert_eq!(
        Unit::init(sim, &mut mem, config).err(),
        Some(Error::Timeout {
            what: "command buffer and event log start",
            register: 0x2020,
            value: 0
        })
    );
    let (mut mem, mut unit) = qemu(0xff);
    unit.regs().stuck = true;
    let err = unit.flush_domain(&mut mem, 1).unwrap_err();
    assert!(matches!(
        err,
        Error::Timeout {
            what: "completion wait",
            ..
        }
    ));
    assert!(format!("{err}").contains("completion wait"));
}

#[test]
fn event_log_overflow_is_counted_and_the_log_restarted() {
    let (mut mem, mut unit) = qemu(0xff);
    // 256 entries hold 255 events; the next one overflows.
    for i in 0..300u64 {
        unit.regs().dma(NIC, i << 12, false);
    }
    let ev = events(&mut unit, &mut mem);
    assert_eq!(ev.len(), 255);
    assert_eq!(unit.event_counts(), (255, 1));
    // Logging works again after the restart.
    unit.regs().dma(NIC, 0x1000, true);
    let ev = events(&mut unit, &mut mem);
    assert_eq!(ev.len(), 1);
    assert!(ev[0].is_write());
}
