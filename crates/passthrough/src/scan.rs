//! Enumeration of the physical PCI segment 0: every function the firmware left visible, its
//! identity, BARs (addresses as assigned, sizes found by the all-ones probe), the capabilities
//! passthrough needs, and the buses behind PCI-to-PCI bridges.
//!
//! Facts used (PCI Local Bus Specification 3.0; PCI Express Base 3.0, 7.8): a missing function
//! reads vendor 0xFFFF; header type bit 7 marks a multi-function device (functions 1-7 exist
//! only then); type 0 headers have six BARs, type 1 (bridges) two plus primary/secondary/
//! subordinate bus numbers at 0x18; a BAR is sized by writing all ones with decoding off and
//! reading back the mask; capabilities are a list from offset 0x34 when status bit 4 is set;
//! the PCI Express capability's Device Capabilities bit 28 says the function supports Function
//! Level Reset; the PM capability's PMCSR (offset 4) bit 3 is No_Soft_Reset.

use alloc::vec::Vec;
use core::fmt;

use vdev::Bdf;

/// Reads and writes of physical configuration space (dwords, offsets below 4096; a mechanism
/// that reaches only 256 bytes reads the rest as all ones and drops writes).
pub trait ConfigAccess {
    fn read32(&mut self, bdf: Bdf, offset: u16) -> u32;
    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32);
}

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mem32 { prefetchable: bool },
    Mem64 { prefetchable: bool },
}

/// One implemented BAR of a physical function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarInfo {
    /// BAR register index (0..6; a 64-bit BAR also takes index + 1).
    pub index: u8,
    pub kind: BarKind,
    /// Address the firmware assigned (0: unassigned).
    pub base: u64,
    /// Bytes it decodes (a power of two).
    pub size: u64,
}

/// Where the capabilities passthrough cares about sit, and what they say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// MSI capability offset, whether its address is 64-bit and whether it masks per vector.
    pub msi: Option<MsiCap>,
    /// MSI-X capability offset and layout.
    pub msix: Option<MsixCap>,
    /// PCI Express capability offset, and whether the function supports FLR.
    pub pcie: Option<u8>,
    pub flr: bool,
    /// Power-management capability offset, and whether D3hot->D0 leaves state alone
    /// (No_Soft_Reset: a PM reset does nothing then).
    pub pm: Option<u8>,
    pub no_soft_reset: bool,
}

/// A physical MSI capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiCap {
    pub offset: u8,
    pub addr64: bool,
    pub maskable: bool,
}

/// A physical MSI-X capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixCap {
    pub offset: u8,
    /// Table entries.
    pub entries: u16,
    pub table_bar: u8,
    pub table_offset: u32,
    pub pba_bar: u8,
    pub pba_offset: u32,
}

/// One physical function as enumeration found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhysFunction {
    pub bdf: Bdf,
    pub vendor_id: u16,
    pub device_id: u16,
    pub revision: u8,
    /// Base class << 16 | subclass << 8 | programming interface.
    pub class: u32,
    pub subsystem_vendor_id: u16,
    pub subsystem_id: u16,
    /// Header type without the multi-function bit (0: endpoint, 1: PCI-to-PCI bridge).
    pub header_type: u8,
    /// For a bridge: its secondary and subordinate bus numbers.
    pub secondary_bus: Option<(u8, u8)>,
    /// The bridge it sits behind (None: on bus 0).
    pub parent_bridge: Option<Bdf>,
    pub bars: Vec<BarInfo>,
    /// Interrupt pin (0: none, 1..=4: INTA#..INTD#) and the line firmware wrote.
    pub interrupt_pin: u8,
    pub interrupt_line: u8,
    pub caps: Capabilities,
}

impl PhysFunction {
    /// Whether it is a PCI-to-PCI bridge.
    pub fn is_bridge(&self) -> bool {
        self.header_type == 1
    }

    /// Whether it is a host bridge (class 06/00).
    pub fn is_host_bridge(&self) -> bool {
        self.class >> 8 == 0x0600
    }

    /// The BAR at register `index`.
    pub fn bar(&self, index: u8) -> Option<&BarInfo> {
        self.bars.iter().find(|b| b.index == index)
    }
}

impl fmt::Display for PhysFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04x}:{:04x} class {:06x}",
            self.bdf, self.vendor_id, self.device_id, self.class
        )?;
        if self.is_bridge() {
            if let Some((sec, sub)) = self.secondary_bus {
                write!(f, " bridge {sec:02x}-{sub:02x}")?;
            }
        }
        for b in &self.bars {
            let kind = match b.kind {
                BarKind::Io => "io",
                BarKind::Mem32 { .. } => "mem32",
                BarKind::Mem64 { .. } => "mem64",
            };
            write!(f, " bar{}={kind}@{:#x}+{:#x}", b.index, b.base, b.size)?;
        }
        if self.interrupt_pin != 0 {
            // The line is what the firmware routed the pin to (its ISA IRQ or GSI), for the board.
            write!(
                f,
                " int{} line {}",
                char::from(b'A' + self.interrupt_pin - 1),
                self.interrupt_line
            )?;
        }
        if let Some(m) = self.caps.msi {
            write!(f, " msi@{:#x}", m.offset)?;
        }
        if let Some(m) = self.caps.msix {
            write!(f, " msix@{:#x}x{}", m.offset, m.entries)?;
        }
        if self.caps.flr {
            f.write_str(" flr")?;
        }
        Ok(())
    }
}

/// Capability IDs.
const CAP_PM: u8 = 0x01;
const CAP_MSI: u8 = 0x05;
const CAP_PCIE: u8 = 0x10;
const CAP_MSIX: u8 = 0x11;
/// Devices Capabilities bit 28: Function Level Reset capable.
const DEVCAP_FLR: u32 = 1 << 28;
/// Capability list entries walked at most (a loop in a broken list ends here).
const MAX_CAPS: usize = 48;
/// Command register bits that make BARs decode.
const COMMAND_DECODE: u32 = 0b11;

/// Enumerates segment 0 from bus 0, following bridges to their secondary buses (each bus
/// scanned once, in bus number order as found).
pub fn scan(access: &mut dyn ConfigAccess) -> Vec<PhysFunction> {
    let mut found = Vec::new();
    let mut buses: Vec<(u8, Option<Bdf>)> = alloc::vec![(0, None)];
    let mut seen = [false; 256];
    while let Some((bus, parent)) = buses.pop() {
        if core::mem::replace(&mut seen[usize::from(bus)], true) {
            continue;
        }
        for device in 0..32 {
            for function in 0..8 {
                let Some(bdf) = Bdf::new(bus, device, function) else {
                    continue;
                };
                let id = access.read32(bdf, 0);
                if id & 0xFFFF == 0xFFFF {
                    if function == 0 {
                        break;
                    }
                    continue;
                }
                let header = (access.read32(bdf, 0x0C) >> 16) as u8;
                let f = probe(access, bdf, id, header, parent);
                if let Some((sec, _)) = f.secondary_bus {
                    if sec > bus {
                        buses.push((sec, Some(bdf)));
                    }
                }
                found.push(f);
                if function == 0 && header & 0x80 == 0 {
                    break;
                }
            }
        }
    }
    found.sort_by_key(|f| f.bdf);
    found
}

fn probe(
    access: &mut dyn ConfigAccess,
    bdf: Bdf,
    id: u32,
    header: u8,
    parent: Option<Bdf>,
) -> PhysFunction {
    let class_rev = access.read32(bdf, 0x08);
    let header_type = header & 0x7F;
    let (bar_count, secondary_bus, subsystem) = match header_type {
        0 => (6, None, access.read32(bdf, 0x2C)),
        1 => {
            let buses = access.read32(bdf, 0x18);
            (2, Some(((buses >> 8) as u8, (buses >> 16) as u8)), 0)
        }
        _ => (0, None, 0),
    };
    let int = access.read32(bdf, 0x3C);
    PhysFunction {
        bdf,
        vendor_id: id as u16,
        device_id: (id >> 16) as u16,
        revision: class_rev as u8,
        class: class_rev >> 8,
        subsystem_vendor_id: subsystem as u16,
        subsystem_id: (subsystem >> 16) as u16,
        header_type,
        secondary_bus,
        parent_bridge: parent,
        bars: size_bars(access, bdf, bar_count),
        interrupt_pin: if header_type <= 1 {
            (int >> 8) as u8
        } else {
            0
        },
        interrupt_line: int as u8,
        caps: capabilities(access, bdf),
    }
}

/// Sizes the BARs with decoding off, restoring every register after.
fn size_bars(access: &mut dyn ConfigAccess, bdf: Bdf, count: u8) -> Vec<BarInfo> {
    let mut bars = Vec::new();
    if count == 0 {
        return bars;
    }
    let command = access.read32(bdf, 0x04);
    access.write32(bdf, 0x04, command & !COMMAND_DECODE & 0xFFFF);
    let mut index = 0;
    while index < count {
        let reg = 0x10 + 4 * u16::from(index);
        let orig = access.read32(bdf, reg);
        access.write32(bdf, reg, u32::MAX);
        let mask = access.read32(bdf, reg);
        access.write32(bdf, reg, orig);
        if orig & 1 == 1 {
            let size_mask = mask & 0xFFFF_FFFC;
            // I/O BARs may implement only 16 address bits.
            let size = (!(size_mask | 0xFFFF_0000)).wrapping_add(1) & 0xFFFF;
            if size_mask != 0 && size != 0 {
                bars.push(BarInfo {
                    index,
                    kind: BarKind::Io,
                    base: u64::from(orig & 0xFFFF_FFFC),
                    size: u64::from(size),
                });
            }
            index += 1;
            continue;
        }
        let prefetchable = orig & 0x8 != 0;
        let is64 = (orig >> 1) & 3 == 2 && index + 1 < count;
        let (base, size_mask) = if is64 {
            let hi_reg = reg + 4;
            let orig_hi = access.read32(bdf, hi_reg);
            access.write32(bdf, hi_reg, u32::MAX);
            let mask_hi = access.read32(bdf, hi_reg);
            access.write32(bdf, hi_reg, orig_hi);
            (
                u64::from(orig_hi) << 32 | u64::from(orig & 0xFFFF_FFF0),
                u64::from(mask_hi) << 32 | u64::from(mask & 0xFFFF_FFF0),
            )
        } else {
            (
                u64::from(orig & 0xFFFF_FFF0),
                u64::from(mask & 0xFFFF_FFF0) | 0xFFFF_FFFF_0000_0000,
            )
        };
        if size_mask != 0 && size_mask != 0xFFFF_FFFF_0000_0000 {
            let size = (!size_mask).wrapping_add(1);
            if size.is_power_of_two() {
                bars.push(BarInfo {
                    index,
                    kind: if is64 {
                        BarKind::Mem64 { prefetchable }
                    } else {
                        BarKind::Mem32 { prefetchable }
                    },
                    base,
                    size,
                });
            }
        }
        index += if is64 { 2 } else { 1 };
    }
    access.write32(bdf, 0x04, command & 0xFFFF);
    bars
}

fn capabilities(access: &mut dyn ConfigAccess, bdf: Bdf) -> Capabilities {
    let mut caps = Capabilities::default();
    let status = access.read32(bdf, 0x04) >> 16;
    if status & 0x10 == 0 {
        return caps;
    }
    let mut at = (access.read32(bdf, 0x34) & 0xFC) as u8;
    for _ in 0..MAX_CAPS {
        if at < 0x40 {
            break;
        }
        let head = access.read32(bdf, u16::from(at));
        let id = head as u8;
        let control = (head >> 16) as u16;
        match id {
            CAP_MSI if caps.msi.is_none() => {
                caps.msi = Some(MsiCap {
                    offset: at,
                    addr64: control & (1 << 7) != 0,
                    maskable: control & (1 << 8) != 0,
                });
            }
            CAP_MSIX if caps.msix.is_none() => {
                let table = access.read32(bdf, u16::from(at) + 4);
                let pba = access.read32(bdf, u16::from(at) + 8);
                caps.msix = Some(MsixCap {
                    offset: at,
                    entries: (control & 0x7FF) + 1,
                    table_bar: (table & 7) as u8,
                    table_offset: table & !7,
                    pba_bar: (pba & 7) as u8,
                    pba_offset: pba & !7,
                });
            }
            CAP_PCIE if caps.pcie.is_none() => {
                caps.pcie = Some(at);
                caps.flr = access.read32(bdf, u16::from(at) + 4) & DEVCAP_FLR != 0;
            }
            CAP_PM if caps.pm.is_none() => {
                caps.pm = Some(at);
                caps.no_soft_reset = access.read32(bdf, u16::from(at) + 4) & (1 << 3) != 0;
            }
            _ => {}
        }
        at = ((head >> 8) & 0xFC) as u8;
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimBus, SimFunction};

    #[test]
    fn finds_functions_bars_and_capabilities() {
        let mut bus = SimBus::default();
        bus.add(Bdf::new(0, 0, 0).unwrap(), SimFunction::host_bridge());
        bus.add(Bdf::new(0, 4, 0).unwrap(), SimFunction::edu());
        bus.add(Bdf::new(0, 5, 0).unwrap(), SimFunction::nic());
        let found = scan(&mut bus);
        assert_eq!(found.len(), 3);
        assert!(found[0].is_host_bridge());
        let edu = &found[1];
        assert_eq!((edu.vendor_id, edu.device_id), (0x1234, 0x11e8));
        assert_eq!(edu.class, 0x00ff00);
        assert_eq!(
            edu.bars,
            [BarInfo {
                index: 0,
                kind: BarKind::Mem32 {
                    prefetchable: false
                },
                base: 0xfea0_0000,
                size: 1 << 20
            }]
        );
        assert_eq!(edu.interrupt_pin, 1);
        assert!(edu.caps.msi.is_some_and(|m| m.offset == 0x40 && m.addr64));
        let nic = &found[2];
        assert_eq!(nic.bars.len(), 3);
        assert_eq!(
            nic.bar(2),
            Some(&BarInfo {
                index: 2,
                kind: BarKind::Io,
                base: 0xc000,
                size: 32
            })
        );
        assert_eq!(
            nic.bar(3).map(|b| (b.kind, b.base, b.size)),
            Some((
                BarKind::Mem64 {
                    prefetchable: false
                },
                0x8_0000_0000,
                0x4000
            ))
        );
        let msix = nic.caps.msix.unwrap();
        assert_eq!(
            (msix.entries, msix.table_bar, msix.pba_offset),
            (5, 3, 0x2000)
        );
        assert!(nic.caps.flr);
        // Sizing restored every BAR and the command register.
        assert_eq!(bus.read32(nic.bdf, 0x10), 0xfeb0_0000);
        assert_eq!(bus.read32(nic.bdf, 0x04) & 0xFFFF, 0x0007);
    }

    #[test]
    fn functions_beyond_zero_only_when_multi_function() {
        let mut bus = SimBus::default();
        bus.add(Bdf::new(0, 2, 0).unwrap(), SimFunction::edu());
        // Single-function device: a function 1 answering anyway is not looked at.
        bus.add(Bdf::new(0, 2, 1).unwrap(), SimFunction::edu());
        assert_eq!(scan(&mut bus).len(), 1);
        let mut multi = SimFunction::edu();
        multi.set_multi_function();
        bus.add(Bdf::new(0, 2, 0).unwrap(), multi);
        assert_eq!(scan(&mut bus).len(), 2);
    }

    #[test]
    fn follows_bridges_and_names_the_parent() {
        let mut bus = SimBus::default();
        let bridge = Bdf::new(0, 0x1e, 0).unwrap();
        bus.add(bridge, SimFunction::bridge(1, 1));
        bus.add(Bdf::new(1, 0, 0).unwrap(), SimFunction::edu());
        let found = scan(&mut bus);
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].bdf, Bdf::new(1, 0, 0).unwrap());
        assert_eq!(found[1].parent_bridge, Some(bridge));
        assert_eq!(found[0].secondary_bus, Some((1, 1)));
    }

    #[test]
    fn hostile_config_space_terminates() {
        // A capability list that loops, a bridge whose secondary bus is itself, a BAR whose
        // mask is not a power of two.
        let mut bus = SimBus::default();
        let mut f = SimFunction::edu();
        f.poke(0x40, 0x0040_4005); // MSI at 0x40 pointing to itself.
        f.set_bar_mask(0, 0xFFF0_FFF0);
        bus.add(Bdf::new(0, 1, 0).unwrap(), f);
        bus.add(Bdf::new(0, 2, 0).unwrap(), SimFunction::bridge(0, 0));
        let found = scan(&mut bus);
        assert_eq!(found.len(), 2);
        assert!(found[0].bars.is_empty());
        assert!(found[0].caps.msi.is_some());
    }
}
