//! The ACPI DMA Remapping Reporting table (DMAR; Intel VT-d specification,
//! chapter 8): the VT-d units (DRHD), the devices each one covers (device
//! scopes), and the memory firmware devices keep using (RMRR).
//!
//! Layout: the standard header, then host address width (byte 36, the width
//! minus one), flags (byte 37: bit 0 INTR_REMAP, bit 1 X2APIC_OPT_OUT, bit 2
//! DMA_CTRL_PLATFORM_OPT_IN), 10 reserved bytes, and from byte 48 remapping
//! structures, each `type: u16, length: u16, ...`. Types other than DRHD (0)
//! and RMRR (1) (ATSR, RHSA, ANDD, SATC, SIDP...) are skipped by length.

use alloc::vec::Vec;

use platform::HostPhysAddr;

use crate::bdf::Bdf;
use crate::sdt::{check_table, structures, u16_at, u64_at, u8_at, TableError};

const SIGNATURE: [u8; 4] = *b"DMAR";
/// Header plus the DMAR's own fixed fields.
const FIXED_LEN: usize = 48;
const TYPE_DRHD: u16 = 0;
const TYPE_RMRR: u16 = 1;
/// Fixed bytes of a DRHD before its device scopes.
const DRHD_LEN: usize = 16;
/// Fixed bytes of an RMRR before its device scopes.
const RMRR_LEN: usize = 24;
/// Fixed bytes of a device scope before its path.
const SCOPE_LEN: usize = 6;

/// The DMAR table's flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmarFlags {
    /// Bit 0: the platform supports interrupt remapping.
    pub intr_remap: bool,
    /// Bit 1: firmware asks the OS not to enable x2APIC mode.
    pub x2apic_opt_out: bool,
    /// Bit 2: firmware set up DMA protection it expects the OS to keep.
    pub dma_ctrl_platform_opt_in: bool,
}

/// What a device scope entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeKind {
    /// 1: a PCI endpoint.
    Endpoint,
    /// 2: a PCI bridge and every device below it.
    Bridge,
    /// 3: an I/O APIC; its enumeration id is the I/O APIC id.
    IoApic,
    /// 4: an MSI-capable HPET; its enumeration id is the HPET number.
    Hpet,
    /// 5: an ACPI namespace device.
    AcpiNamespace,
    /// Any other type value.
    Other(u8),
}

impl ScopeKind {
    fn from_raw(raw: u8) -> Self {
        match raw {
            1 => Self::Endpoint,
            2 => Self::Bridge,
            3 => Self::IoApic,
            4 => Self::Hpet,
            5 => Self::AcpiNamespace,
            other => Self::Other(other),
        }
    }
}

/// One hop of a device scope path: a device and function on the current bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathEntry {
    /// PCI device number.
    pub device: u8,
    /// PCI function number.
    pub function: u8,
}

/// A device scope: a device (or a bridge's hierarchy) a DRHD or RMRR applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceScope {
    /// Offset of the entry in the table.
    pub offset: usize,
    /// What it names.
    pub kind: ScopeKind,
    /// I/O APIC id or HPET number (0 for PCI devices).
    pub enumeration_id: u8,
    /// The bus the path starts on.
    pub start_bus: u8,
    /// Device/function hops from `start_bus`; every hop but the last is a
    /// bridge whose secondary bus the next hop is on.
    pub path: Vec<PathEntry>,
}

impl DeviceScope {
    /// The requester id the scope names, following the path through
    /// bridges: `secondary_bus(bridge)` gives a bridge's secondary bus (read
    /// from its config space). `None` if the path is empty or a bridge is
    /// unknown. A one-hop path needs no lookup; I/O APIC and HPET scopes
    /// give the source id their interrupts carry.
    pub fn bdf(&self, mut secondary_bus: impl FnMut(Bdf) -> Option<u8>) -> Option<Bdf> {
        let (last, bridges) = self.path.split_last()?;
        let mut bus = self.start_bus;
        for hop in bridges {
            bus = secondary_bus(Bdf::new(bus, hop.device, hop.function))?;
        }
        Some(Bdf::new(bus, last.device, last.function))
    }
}

/// A DMA remapping hardware unit definition: one VT-d unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drhd {
    /// Offset of the structure in the table.
    pub offset: usize,
    /// Flags bit 0: the unit covers every PCI device of its segment that no
    /// other unit's scope lists (its scopes then list only I/O APICs and HPETs).
    pub include_pci_all: bool,
    /// PCI segment number.
    pub segment: u16,
    /// Base of the unit's register page.
    pub base: HostPhysAddr,
    /// Size of the register set: 2^N 4 KiB pages (0 on tables before VT-d 3.0).
    pub size_log2_pages: u8,
    /// The devices it covers.
    pub scopes: Vec<DeviceScope>,
}

/// A reserved memory region report: memory a device uses for DMA behind the
/// OS's back (USB legacy emulation, integrated graphics). Such devices need
/// an identity mapping of the region to keep working.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rmrr {
    /// Offset of the structure in the table.
    pub offset: usize,
    /// PCI segment number.
    pub segment: u16,
    /// First byte of the region (4 KiB aligned).
    pub base: HostPhysAddr,
    /// Last byte of the region (inclusive).
    pub limit: HostPhysAddr,
    /// The devices that use it.
    pub scopes: Vec<DeviceScope>,
}

/// A parsed DMAR table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dmar {
    /// Host (DMA) physical address width in bits (the field plus one).
    pub host_address_width: u8,
    /// The table's flags.
    pub flags: DmarFlags,
    /// The VT-d units, in table order (an INCLUDE_PCI_ALL unit comes last
    /// for its segment).
    pub units: Vec<Drhd>,
    /// The reserved memory regions.
    pub reserved_regions: Vec<Rmrr>,
}

impl Dmar {
    /// Parses a DMAR table from its bytes (header included; bytes past the
    /// header's length are ignored).
    pub fn parse(bytes: &[u8]) -> Result<Self, TableError> {
        let table = check_table(bytes, SIGNATURE, FIXED_LEN)?;
        let flags = u8_at(table, 37);
        let mut dmar = Self {
            host_address_width: u8_at(table, 36).saturating_add(1),
            flags: DmarFlags {
                intr_remap: flags & 1 != 0,
                x2apic_opt_out: flags & 2 != 0,
                dma_ctrl_platform_opt_in: flags & 4 != 0,
            },
            units: Vec::new(),
            reserved_regions: Vec::new(),
        };
        structures(table, FIXED_LEN, "remapping structure", |body, offset| {
            match u16_at(body, 0) {
                TYPE_DRHD => dmar.units.push(parse_drhd(body, offset)?),
                TYPE_RMRR => dmar.reserved_regions.push(parse_rmrr(body, offset)?),
                _ => {}
            }
            Ok(())
        })?;
        Ok(dmar)
    }

    /// The unit that remaps requests from `bdf` on `segment`: the unit whose
    /// scope lists it (as an endpoint, or below a listed bridge), else the
    /// segment's INCLUDE_PCI_ALL unit. `bridge_buses(bridge)` gives a
    /// bridge's secondary and subordinate bus numbers from its config space.
    pub fn unit_for(
        &self,
        segment: u16,
        bdf: Bdf,
        mut bridge_buses: impl FnMut(Bdf) -> Option<(u8, u8)>,
    ) -> Option<&Drhd> {
        let listed = self.units.iter().find(|unit| {
            unit.segment == segment
                && !unit.include_pci_all
                && unit.scopes.iter().any(|scope| {
                    let Some(dev) = scope.bdf(|b| bridge_buses(b).map(|(sec, _)| sec)) else {
                        return false;
                    };
                    match scope.kind {
                        ScopeKind::Endpoint => dev == bdf,
                        ScopeKind::Bridge => {
                            dev == bdf
                                || bridge_buses(dev)
                                    .is_some_and(|(sec, sub)| (sec..=sub).contains(&bdf.bus()))
                        }
                        _ => false,
                    }
                })
        });
        listed.or_else(|| {
            self.units
                .iter()
                .find(|unit| unit.segment == segment && unit.include_pci_all)
        })
    }
}

fn parse_drhd(body: &[u8], offset: usize) -> Result<Drhd, TableError> {
    if body.len() < DRHD_LEN {
        return Err(TableError::BadStructLength {
            what: "DRHD",
            offset,
            length: body.len(),
            available: body.len(),
        });
    }
    let base = u64_at(body, 8);
    if base == 0 || base & 0xfff != 0 {
        return Err(TableError::BadField {
            what: "DRHD register base address",
            offset,
            value: base,
        });
    }
    Ok(Drhd {
        offset,
        include_pci_all: u8_at(body, 4) & 1 != 0,
        size_log2_pages: u8_at(body, 5) & 0xf,
        segment: u16_at(body, 6),
        base: HostPhysAddr(base),
        scopes: parse_scopes(&body[DRHD_LEN..], offset + DRHD_LEN)?,
    })
}

fn parse_rmrr(body: &[u8], offset: usize) -> Result<Rmrr, TableError> {
    if body.len() < RMRR_LEN {
        return Err(TableError::BadStructLength {
            what: "RMRR",
            offset,
            length: body.len(),
            available: body.len(),
        });
    }
    let base = u64_at(body, 8);
    let limit = u64_at(body, 16);
    if base & 0xfff != 0 {
        return Err(TableError::BadField {
            what: "RMRR base address",
            offset,
            value: base,
        });
    }
    if limit < base || limit & 0xfff != 0xfff {
        return Err(TableError::BadField {
            what: "RMRR limit address",
            offset,
            value: limit,
        });
    }
    Ok(Rmrr {
        offset,
        segment: u16_at(body, 6),
        base: HostPhysAddr(base),
        limit: HostPhysAddr(limit),
        scopes: parse_scopes(&body[RMRR_LEN..], offset + RMRR_LEN)?,
    })
}

/// Device scopes filling `bytes`, which start at table offset `base`.
fn parse_scopes(bytes: &[u8], base: usize) -> Result<Vec<DeviceScope>, TableError> {
    let mut scopes = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let offset = base + at;
        let available = bytes.len() - at;
        let length = usize::from(u8_at(bytes, at + 1));
        if available < 2 || length < SCOPE_LEN || length > available {
            return Err(TableError::BadStructLength {
                what: "device scope",
                offset,
                length,
                available,
            });
        }
        if (length - SCOPE_LEN) % 2 != 0 {
            return Err(TableError::BadField {
                what: "device scope length (path entries are 2 bytes)",
                offset,
                value: length as u64,
            });
        }
        let entry = &bytes[at..at + length];
        let path = entry[SCOPE_LEN..]
            .chunks_exact(2)
            .map(|hop| PathEntry {
                device: hop[0],
                function: hop[1],
            })
            .collect();
        scopes.push(DeviceScope {
            offset,
            kind: ScopeKind::from_raw(entry[0]),
            enumeration_id: entry[4],
            start_bus: entry[5],
            path,
        });
        at += length;
    }
    Ok(scopes)
}

/// Test helpers that build DMAR bytes.
#[cfg(any(test, feature = "test-utils"))]
pub mod build {
    use alloc::vec::Vec;

    use crate::sdt::build_table;

    /// A device scope entry of `kind` with `path` ((device, function) hops).
    pub fn scope(kind: u8, enumeration_id: u8, start_bus: u8, path: &[(u8, u8)]) -> Vec<u8> {
        let len = u8::try_from(6 + 2 * path.len()).unwrap_or(u8::MAX);
        let mut s = alloc::vec![kind, len, 0, 0, enumeration_id, start_bus];
        for &(d, f) in path {
            s.extend_from_slice(&[d, f]);
        }
        s
    }

    /// A DRHD structure.
    pub fn drhd(flags: u8, segment: u16, base: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = scopes.concat();
        let len = u16::try_from(16 + body.len()).unwrap_or(u16::MAX);
        let mut s = Vec::new();
        s.extend_from_slice(&0u16.to_le_bytes());
        s.extend_from_slice(&len.to_le_bytes());
        s.extend_from_slice(&[flags, 0]);
        s.extend_from_slice(&segment.to_le_bytes());
        s.extend_from_slice(&base.to_le_bytes());
        s.extend_from_slice(&body);
        s
    }

    /// An RMRR structure.
    pub fn rmrr(segment: u16, base: u64, limit: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = scopes.concat();
        let len = u16::try_from(24 + body.len()).unwrap_or(u16::MAX);
        let mut s = Vec::new();
        s.extend_from_slice(&1u16.to_le_bytes());
        s.extend_from_slice(&len.to_le_bytes());
        s.extend_from_slice(&[0, 0]);
        s.extend_from_slice(&segment.to_le_bytes());
        s.extend_from_slice(&base.to_le_bytes());
        s.extend_from_slice(&limit.to_le_bytes());
        s.extend_from_slice(&body);
        s
    }

    /// A whole DMAR table.
    pub fn dmar(haw_minus_one: u8, flags: u8, structures: &[Vec<u8>]) -> Vec<u8> {
        let mut body = alloc::vec![haw_minus_one, flags];
        body.extend_from_slice(&[0; 10]);
        for s in structures {
            body.extend_from_slice(s);
        }
        build_table(b"DMAR", 1, &body)
    }

    /// What QEMU 7.2's `-device intel-iommu,intremap=on` reports on q35 (aw-bits
    /// 39, one INCLUDE_PCI_ALL unit at 0xfed90000 with the I/O APIC as 00:1f.7
    /// with id 0), plus an ATSR to skip.
    pub fn qemu_like() -> Vec<u8> {
        let ioapic = scope(3, 0, 0, &[(0x1f, 7)]);
        let unit = drhd(1, 0, 0xfed9_0000, &[ioapic]);
        let mut atsr = Vec::new();
        atsr.extend_from_slice(&2u16.to_le_bytes());
        atsr.extend_from_slice(&8u16.to_le_bytes());
        atsr.extend_from_slice(&[0; 4]);
        dmar(38, 1, &[unit, atsr])
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;
    use std::vec;

    use super::build::*;
    use super::*;
    use crate::sdt::fix_checksum;

    #[test]
    fn qemu_table() {
        let dmar = Dmar::parse(&qemu_like()).unwrap();
        assert_eq!(dmar.host_address_width, 39);
        assert!(dmar.flags.intr_remap && !dmar.flags.x2apic_opt_out);
        assert_eq!(dmar.units.len(), 1);
        let unit = &dmar.units[0];
        assert!(unit.include_pci_all);
        assert_eq!(unit.base, HostPhysAddr(0xfed9_0000));
        assert_eq!(unit.offset, 48);
        assert_eq!(unit.scopes.len(), 1);
        let ioapic = &unit.scopes[0];
        assert_eq!(ioapic.kind, ScopeKind::IoApic);
        assert_eq!(ioapic.bdf(|_| None), Some(Bdf::new(0, 0x1f, 7)));
        assert_eq!(ioapic.offset, 64);
        // Every device falls to the INCLUDE_PCI_ALL unit.
        let found = dmar.unit_for(0, Bdf::new(0, 3, 0), |_| None);
        assert_eq!(found.map(|u| u.base), Some(HostPhysAddr(0xfed9_0000)));
        assert!(dmar.unit_for(1, Bdf::new(0, 3, 0), |_| None).is_none());
    }

    #[test]
    fn scopes_bridges_and_rmrr() {
        let nic = scope(1, 0, 0, &[(2, 0)]);
        // A device behind the bridge at 00:1c.0 (secondary bus 5).
        let behind = scope(1, 0, 0, &[(0x1c, 0), (0, 1)]);
        let bridge = scope(2, 0, 0, &[(0x1d, 0)]);
        let hpet = scope(4, 3, 0, &[(0x1f, 0)]);
        let gfx_unit = drhd(0, 0, 0xfed9_1000, &[nic.clone(), behind, bridge]);
        let rest = drhd(1, 0, 0xfed9_0000, &[hpet]);
        let region = rmrr(0, 0x7a00_0000, 0x7a0f_ffff, &[nic]);
        let bytes = dmar(47, 0b110, &[gfx_unit, region, rest]);
        let dmar = Dmar::parse(&bytes).unwrap();
        assert_eq!(dmar.host_address_width, 48);
        assert!(!dmar.flags.intr_remap && dmar.flags.x2apic_opt_out);
        assert!(dmar.flags.dma_ctrl_platform_opt_in);
        assert_eq!(dmar.units.len(), 2);
        assert_eq!(dmar.reserved_regions.len(), 1);
        let r = &dmar.reserved_regions[0];
        assert_eq!(
            (r.base, r.limit),
            (HostPhysAddr(0x7a00_0000), HostPhysAddr(0x7a0f_ffff))
        );
        assert_eq!(r.scopes[0].bdf(|_| None), Some(Bdf::new(0, 2, 0)));
        let buses = |b: Bdf| match (b.device(), b.function()) {
            (0x1c, 0) => Some((5, 5)),
            (0x1d, 0) => Some((6, 9)),
            _ => None,
        };
        let hpet = &dmar.units[1].scopes[0];
        assert_eq!((hpet.kind, hpet.enumeration_id), (ScopeKind::Hpet, 3));
        let base_of = |bdf| dmar.unit_for(0, bdf, buses).map(|u| u.base.0);
        assert_eq!(base_of(Bdf::new(0, 2, 0)), Some(0xfed9_1000));
        assert_eq!(base_of(Bdf::new(5, 0, 1)), Some(0xfed9_1000));
        assert_eq!(base_of(Bdf::new(5, 0, 0)), Some(0xfed9_0000));
        assert_eq!(base_of(Bdf::new(7, 3, 0)), Some(0xfed9_1000));
        assert_eq!(base_of(Bdf::new(0, 0x1d, 0)), Some(0xfed9_1000));
        assert_eq!(base_of(Bdf::new(10, 0, 0)), Some(0xfed9_0000));
        // Without the bridge's bus numbers the path cannot be followed.
        assert_eq!(dmar.units[0].scopes[1].bdf(|_| None), None);
    }

    #[test]
    fn malformed_structures_are_named_with_their_offset() {
        // Structure length 2: below the 4-byte minimum.
        let mut bytes = dmar(38, 0, &[vec![0, 0, 2, 0]]);
        assert_eq!(
            Dmar::parse(&bytes),
            Err(TableError::BadStructLength {
                what: "remapping structure",
                offset: 48,
                length: 2,
                available: 4
            })
        );
        // A DRHD whose length runs past the table.
        let mut unit = drhd(1, 0, 0xfed9_0000, &[]);
        unit[2] = 200;
        bytes = dmar(38, 0, &[unit]);
        assert!(matches!(
            Dmar::parse(&bytes),
            Err(TableError::BadStructLength {
                offset: 48,
                length: 200,
                available: 16,
                ..
            })
        ));
        // A DRHD too short for its fixed fields.
        bytes = dmar(38, 0, &[vec![0, 0, 8, 0, 0, 0, 0, 0]]);
        assert!(matches!(
            Dmar::parse(&bytes),
            Err(TableError::BadStructLength {
                what: "DRHD",
                offset: 48,
                length: 8,
                ..
            })
        ));
        // Unaligned register base.
        bytes = dmar(38, 0, &[drhd(1, 0, 0xfed9_0010, &[])]);
        assert_eq!(
            Dmar::parse(&bytes),
            Err(TableError::BadField {
                what: "DRHD register base address",
                offset: 48,
                value: 0xfed9_0010
            })
        );
        // A device scope with an odd path length.
        let mut odd = scope(1, 0, 0, &[(1, 0)]);
        odd[1] = 7;
        odd.push(0);
        bytes = dmar(38, 0, &[drhd(0, 0, 0x1000, &[odd])]);
        assert!(matches!(
            Dmar::parse(&bytes),
            Err(TableError::BadField {
                offset: 64,
                value: 7,
                ..
            })
        ));
        // A device scope shorter than 6 bytes.
        bytes = dmar(38, 0, &[drhd(0, 0, 0x1000, &[vec![1, 2]])]);
        assert!(matches!(
            Dmar::parse(&bytes),
            Err(TableError::BadStructLength {
                what: "device scope",
                offset: 64,
                length: 2,
                ..
            })
        ));
        // RMRR with limit below base.
        bytes = dmar(38, 0, &[rmrr(0, 0x10_0000, 0xf_ffff, &[])]);
        assert!(matches!(
            Dmar::parse(&bytes),
            Err(TableError::BadField {
                what: "RMRR limit address",
                value: 0xf_ffff,
                ..
            })
        ));
        // The message names the offset.
        let err = Dmar::parse(&bytes).unwrap_err();
        assert!(format!("{err}").contains("offset 0x30"), "{err}");
        // Checksum and signature are checked first.
        let mut good = qemu_like();
        good[0] = b'X';
        assert!(matches!(
            Dmar::parse(&good),
            Err(TableError::BadSignature { .. })
        ));
        good[0] = b'D';
        good[40] ^= 0x40;
        assert!(matches!(
            Dmar::parse(&good),
            Err(TableError::BadChecksum { .. })
        ));
        fix_checksum(&mut good);
        assert!(Dmar::parse(&good).is_ok());
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error_or_a_table() {
        let bytes = qemu_like();
        for len in 0..bytes.len() {
            let mut t = bytes[..len].to_vec();
            if t.len() >= 8 {
                t[4..8].copy_from_slice(&u32::try_from(len).unwrap().to_le_bytes());
            }
            fix_checksum(&mut t);
            let _ = Dmar::parse(&t);
        }
        for bit in 0..bytes.len() * 8 {
            let mut t = bytes.clone();
            t[bit / 8] ^= 1 << (bit % 8);
            fix_checksum(&mut t);
            let _ = Dmar::parse(&t);
        }
    }
}
