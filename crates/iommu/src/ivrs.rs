//! The ACPI I/O Virtualization Reporting Structure (IVRS; AMD I/O
//! Virtualization Technology (IOMMU) Specification #48882, chapter 5): the
//! AMD-Vi units (IVHD blocks) with the device ids each one covers, and
//! memory ranges devices need (IVMD blocks).
//!
//! Layout: the standard header, IVinfo (u32 at 36), 8 reserved bytes, and
//! from byte 48 definition blocks `type: u8, flags: u8, length: u16, ...`.
//! IVHD types 0x10, 0x11 and 0x40 describe the same unit at growing detail
//! (firmware may list one unit once per type; [`Ivrs::iommus`] keeps the
//! most detailed); their device entries start at byte 24 (type 0x10) or 40.
//! Device entries are 4 bytes (types 0x00-0x3f), 8 bytes (0x40-0x7f), 16
//! bytes (0x80-0xbf) or variable (0xc0-0xff; only 0xf0, ACPI HID devices,
//! has a known length).

use alloc::vec::Vec;

use platform::HostPhysAddr;

use crate::bdf::Bdf;
use crate::sdt::{check_table, structures, u16_at, u32_at, u64_at, u8_at, TableError};

const SIGNATURE: [u8; 4] = *b"IVRS";
const FIXED_LEN: usize = 48;
const IVMD_LEN: usize = 32;

/// The IVinfo field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IvInfo {
    /// The raw field.
    pub raw: u32,
    /// Bit 0: the IVHD blocks' EFR images are valid.
    pub efr_supported: bool,
    /// Bit 1: firmware enabled DMA protection before boot.
    pub preboot_dma_protection: bool,
    /// Bits 7:5: guest virtual address size code.
    pub gva_size: u8,
    /// Bits 14:8: physical address size in bits.
    pub pa_size: u8,
    /// Bits 21:15: virtual address size in bits.
    pub va_size: u8,
    /// Bit 22: ATS response address range reserved.
    pub ht_ats_reserved: bool,
}

impl IvInfo {
    fn from_raw(raw: u32) -> Self {
        Self {
            raw,
            efr_supported: raw & 1 != 0,
            preboot_dma_protection: raw & 2 != 0,
            gva_size: ((raw >> 5) & 7) as u8,
            pa_size: ((raw >> 8) & 0x7f) as u8,
            va_size: ((raw >> 15) & 0x7f) as u8,
            ht_ats_reserved: raw & (1 << 22) != 0,
        }
    }
}

/// Consecutive device ids an IVHD covers, with the DTE setting byte firmware
/// gave them (INITPass, EIntPass, NMIPass, SysMgt, Lint0Pass, Lint1Pass).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRange {
    /// First device id.
    pub first: Bdf,
    /// Last device id (inclusive).
    pub last: Bdf,
    /// The DTE setting byte.
    pub dte_setting: u8,
    /// The requester id the IOMMU sees for these devices instead of their
    /// own (alias entries; e.g. devices behind a PCIe-to-PCI bridge).
    pub alias: Option<Bdf>,
}

impl DeviceRange {
    /// Whether `bdf` is in the range.
    pub fn contains(&self, bdf: Bdf) -> bool {
        (self.first..=self.last).contains(&bdf)
    }
}

/// What a special device entry (type 0x48) names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecialKind {
    /// Variety 1: an I/O APIC; the handle is its I/O APIC id.
    IoApic,
    /// Variety 2: an HPET; the handle is its number.
    Hpet,
    /// Any other variety.
    Other(u8),
}

/// A non-PCI interrupt source and the device id its requests carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Special {
    /// What it is.
    pub kind: SpecialKind,
    /// I/O APIC id or HPET number.
    pub handle: u8,
    /// The device id its interrupts carry.
    pub device: Bdf,
    /// The DTE setting byte.
    pub dte_setting: u8,
}

/// An IOMMU hardware definition block: one AMD-Vi unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ivhd {
    /// Offset of the block in the table.
    pub offset: usize,
    /// Block type: 0x10, 0x11 or 0x40.
    pub kind: u8,
    /// Flags (bit 0 HtTunEn, 1 PassPW, 2 ResPassPW, 3 Isoc, 4 IotlbSup,
    /// 5 Coherent, 6 PreFSup, 7 PPRSup).
    pub flags: u8,
    /// The IOMMU's own PCI device id.
    pub device_id: Bdf,
    /// Offset of the IOMMU capability block in its config space.
    pub capability_offset: u16,
    /// Base of the unit's MMIO registers (16 KiB).
    pub base: HostPhysAddr,
    /// PCI segment group.
    pub segment: u16,
    /// IOMMU info (bits 4:0 MSI number, 12:8 unit id).
    pub info: u16,
    /// Type 0x10: IOMMU feature reporting; types 0x11/0x40: IOMMU attributes.
    pub features: u32,
    /// Types 0x11/0x40: the extended feature register's image.
    pub efr_image: Option<u64>,
    /// Device ids the unit covers.
    pub ranges: Vec<DeviceRange>,
    /// I/O APICs and HPETs behind the unit.
    pub specials: Vec<Special>,
    /// Device ids of ACPI-named devices (entry type 0xf0).
    pub acpi_devices: Vec<Bdf>,
}

impl Ivhd {
    /// Whether DMA or interrupts from `bdf` go through this unit.
    pub fn covers(&self, bdf: Bdf) -> bool {
        self.ranges.iter().any(|r| r.contains(bdf))
            || self.specials.iter().any(|s| s.device == bdf)
            || self.acpi_devices.contains(&bdf)
    }

    /// The device id the unit looks `bdf` up by: its alias if an alias
    /// entry names one, else its own.
    pub fn requester_id(&self, bdf: Bdf) -> Bdf {
        self.ranges
            .iter()
            .find(|r| r.contains(bdf))
            .and_then(|r| r.alias)
            .unwrap_or(bdf)
    }

    /// The highest device id the unit needs a device table entry for
    /// (covered ids, aliases, special devices), or `None` if it covers
    /// nothing. The device table is sized from it.
    pub fn max_device_id(&self) -> Option<Bdf> {
        let ranges = self
            .ranges
            .iter()
            .flat_map(|r| [Some(r.last), r.alias])
            .flatten();
        let specials = self.specials.iter().map(|s| s.device);
        ranges
            .chain(specials)
            .chain(self.acpi_devices.iter().copied())
            .max()
    }
}

/// Which devices an IVMD block applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IvmdDevices {
    /// Type 0x20: every device.
    All,
    /// Type 0x21: one device.
    One(Bdf),
    /// Type 0x22: a range of devices (inclusive).
    Range(Bdf, Bdf),
}

/// An IVMD block: memory devices use behind the OS's back, to be
/// identity-mapped for them (unity) or excluded from translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ivmd {
    /// Offset of the block in the table.
    pub offset: usize,
    /// The devices concerned.
    pub devices: IvmdDevices,
    /// Flags bit 0: identity-map the range.
    pub unity: bool,
    /// Flags bit 1: reads allowed.
    pub read: bool,
    /// Flags bit 2: writes allowed.
    pub write: bool,
    /// Flags bit 3: exclusion range (not translated at all).
    pub exclusion: bool,
    /// First byte.
    pub start: HostPhysAddr,
    /// Length in bytes.
    pub len: u64,
}

/// A parsed IVRS table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ivrs {
    /// The IVinfo field.
    pub info: IvInfo,
    /// Every IVHD block, in table order (see [`iommus`](Self::iommus)).
    pub blocks: Vec<Ivhd>,
    /// The IVMD blocks.
    pub memory: Vec<Ivmd>,
}

impl Ivrs {
    /// Parses an IVRS table from its bytes (header included; bytes past the
    /// header's length are ignored).
    pub fn parse(bytes: &[u8]) -> Result<Self, TableError> {
        let table = check_table(bytes, SIGNATURE, FIXED_LEN)?;
        let mut ivrs = Self {
            info: IvInfo::from_raw(u32_at(table, 36)),
            blocks: Vec::new(),
            memory: Vec::new(),
        };
        structures(
            table,
            FIXED_LEN,
            "IVRS definition block",
            |block, offset| {
                match u8_at(block, 0) {
                    0x10 | 0x11 | 0x40 => ivrs.blocks.push(parse_ivhd(block, offset)?),
                    0x20..=0x22 => ivrs.memory.push(parse_ivmd(block, offset)?),
                    _ => {}
                }
                Ok(())
            },
        )?;
        Ok(ivrs)
    }

    /// One block per unit: where firmware lists a unit (same segment and
    /// IOMMU device id) in several IVHD types, the one of the highest type.
    pub fn iommus(&self) -> Vec<&Ivhd> {
        let mut out: Vec<&Ivhd> = Vec::new();
        for block in &self.blocks {
            let same = |b: &&Ivhd| b.segment == block.segment && b.device_id == block.device_id;
            match out.iter().position(same) {
                Some(i) if out[i].kind < block.kind => out[i] = block,
                Some(_) => {}
                None => out.push(block),
            }
        }
        out
    }

    /// The unit that covers `bdf` on `segment`.
    pub fn iommu_for(&self, segment: u16, bdf: Bdf) -> Option<&Ivhd> {
        self.iommus()
            .into_iter()
            .find(|unit| unit.segment == segment && unit.covers(bdf))
    }
}

fn parse_ivhd(block: &[u8], offset: usize) -> Result<Ivhd, TableError> {
    let kind = u8_at(block, 0);
    let header = if kind == 0x10 { 24 } else { 40 };
    if block.len() < header {
        return Err(TableError::BadStructLength {
            what: "IVHD",
            offset,
            length: block.len(),
            available: block.len(),
        });
    }
    let base = u64_at(block, 8);
    if base == 0 || base & 0x3fff != 0 {
        return Err(TableError::BadField {
            what: "IVHD IOMMU base address (16 KiB aligned)",
            offset,
            value: base,
        });
    }
    let mut ivhd = Ivhd {
        offset,
        kind,
        flags: u8_at(block, 1),
        device_id: Bdf(u16_at(block, 4)),
        capability_offset: u16_at(block, 6),
        base: HostPhysAddr(base),
        segment: u16_at(block, 16),
        info: u16_at(block, 18),
        features: u32_at(block, 20),
        efr_image: (kind != 0x10).then(|| u64_at(block, 24)),
        ranges: Vec::new(),
        specials: Vec::new(),
        acpi_devices: Vec::new(),
    };
    parse_device_entries(&mut ivhd, &block[header..], offset + header)?;
    Ok(ivhd)
}

/// A range start waiting for its end entry.
struct Pending {
    first: Bdf,
    dte_setting: u8,
    alias: Option<Bdf>,
}

fn parse_device_entries(ivhd: &mut Ivhd, bytes: &[u8], base: usize) -> Result<(), TableError> {
    let mut pending: Option<Pending> = None;
    let mut at = 0;
    while at < bytes.len() {
        let offset = base + at;
        let kind = bytes[at];
        let length = match kind {
            0x00..=0x3f => 4,
            0x40..=0x7f => 8,
            0x80..=0xbf => 16,
            0xf0 => 22 + usize::from(u8_at(bytes, at + 21)),
            _ => {
                return Err(TableError::BadField {
                    what: "IVHD device entry type (variable length, unknown)",
                    offset,
                    value: u64::from(kind),
                })
            }
        };
        let available = bytes.len() - at;
        if length > available {
            return Err(TableError::BadStructLength {
                what: "IVHD device entry",
                offset,
                length,
                available,
            });
        }
        let entry = &bytes[at..at + length];
        let device = Bdf(u16_at(entry, 1));
        let dte_setting = u8_at(entry, 3);
        let mut start = |alias| {
            if pending.is_some() {
                return Err(TableError::UnpairedRange { offset });
            }
            pending = Some(Pending {
                first: device,
                dte_setting,
                alias,
            });
            Ok(())
        };
        match kind {
            // All devices.
            0x01 => ivhd.ranges.push(DeviceRange {
                first: Bdf(0),
                last: Bdf(0xffff),
                dte_setting,
                alias: None,
            }),
            // Select, extended select.
            0x02 | 0x46 => ivhd.ranges.push(DeviceRange {
                first: device,
                last: device,
                dte_setting,
                alias: None,
            }),
            // Alias select.
            0x42 => ivhd.ranges.push(DeviceRange {
                first: device,
                last: device,
                dte_setting,
                alias: Some(Bdf(u16_at(entry, 5))),
            }),
            // Range start, extended range start, alias range start.
            0x03 | 0x47 => start(None)?,
            0x43 => start(Some(Bdf(u16_at(entry, 5))))?,
            // Range end.
            0x04 => {
                let Some(open) = pending.take() else {
                    return Err(TableError::UnpairedRange { offset });
                };
                if device < open.first {
                    return Err(TableError::BadField {
                        what: "IVHD range end (below its start)",
                        offset,
                        value: u64::from(device.0),
                    });
                }
                ivhd.ranges.push(DeviceRange {
                    first: open.first,
                    last: device,
                    dte_setting: open.dte_setting,
                    alias: open.alias,
                });
            }
            // Special device: handle at 4, device id at 5, variety at 7.
            0x48 => ivhd.specials.push(Special {
                kind: match u8_at(entry, 7) {
                    1 => SpecialKind::IoApic,
                    2 => SpecialKind::Hpet,
                    other => SpecialKind::Other(other),
                },
                handle: u8_at(entry, 4),
                device: Bdf(u16_at(entry, 5)),
                dte_setting,
            }),
            0xf0 => ivhd.acpi_devices.push(device),
            // Padding and reserved types.
            _ => {}
        }
        at += length;
    }
    if pending.is_some() {
        return Err(TableError::UnpairedRange {
            offset: base + bytes.len(),
        });
    }
    Ok(())
}

fn parse_ivmd(block: &[u8], offset: usize) -> Result<Ivmd, TableError> {
    if block.len() < IVMD_LEN {
        return Err(TableError::BadStructLength {
            what: "IVMD",
            offset,
            length: block.len(),
            available: block.len(),
        });
    }
    let flags = u8_at(block, 1);
    let device = Bdf(u16_at(block, 4));
    let devices = match u8_at(block, 0) {
        0x20 => IvmdDevices::All,
        0x21 => IvmdDevices::One(device),
        _ => IvmdDevices::Range(device, Bdf(u16_at(block, 6))),
    };
    let start = u64_at(block, 16);
    let len = u64_at(block, 24);
    if start.checked_add(len).is_none() {
        return Err(TableError::BadField {
            what: "IVMD memory block length (wraps)",
            offset,
            value: len,
        });
    }
    Ok(Ivmd {
        offset,
        devices,
        unity: flags & 1 != 0,
        read: flags & 2 != 0,
        write: flags & 4 != 0,
        exclusion: flags & 8 != 0,
        start: HostPhysAddr(start),
        len,
    })
}

/// Test helpers that build IVRS bytes.
#[cfg(any(test, feature = "test-utils"))]
pub mod build {
    use alloc::vec::Vec;

    use crate::sdt::build_table;

    /// A 4-byte device entry.
    pub fn entry4(kind: u8, devid: u16, dte: u8) -> Vec<u8> {
        let d = devid.to_le_bytes();
        alloc::vec![kind, d[0], d[1], dte]
    }

    /// An 8-byte device entry with `extra` in bytes 4..8.
    pub fn entry8(kind: u8, devid: u16, dte: u8, extra: [u8; 4]) -> Vec<u8> {
        let mut e = entry4(kind, devid, dte);
        e.extend_from_slice(&extra);
        e
    }

    /// A special device entry (type 0x48).
    pub fn special(handle: u8, devid: u16, variety: u8) -> Vec<u8> {
        let d = devid.to_le_bytes();
        alloc::vec![0x48, 0, 0, 0, handle, d[0], d[1], variety]
    }

    /// An IVHD block of `kind` with the given entries.
    pub fn ivhd(kind: u8, iommu_devid: u16, base: u64, efr: u64, entries: &[Vec<u8>]) -> Vec<u8> {
        let header = if kind == 0x10 { 24 } else { 40 };
        let body: Vec<u8> = entries.concat();
        let len = u16::try_from(header + body.len()).unwrap_or(u16::MAX);
        let mut b = alloc::vec![kind, 0xb0];
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&iommu_devid.to_le_bytes());
        b.extend_from_slice(&0x40u16.to_le_bytes());
        b.extend_from_slice(&base.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        if kind != 0x10 {
            b.extend_from_slice(&efr.to_le_bytes());
            b.extend_from_slice(&[0; 8]);
        }
        b.extend_from_slice(&body);
        b
    }

    /// An IVMD block.
    pub fn ivmd(kind: u8, flags: u8, devid: u16, aux: u16, start: u64, len: u64) -> Vec<u8> {
        let mut b = alloc::vec![kind, flags];
        b.extend_from_slice(&32u16.to_le_bytes());
        b.extend_from_slice(&devid.to_le_bytes());
        b.extend_from_slice(&aux.to_le_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&start.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b
    }

    /// A whole IVRS table.
    pub fn ivrs(info: u32, blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut body = info.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 8]);
        for b in blocks {
            body.extend_from_slice(b);
        }
        build_table(b"IVRS", 2, &body)
    }

    /// Shaped like QEMU 7.2's `-device amd-iommu` on q35: the unit at
    /// 0xfed80000 listed twice (types 0x10 and 0x11), covering every device
    /// id, with the I/O APIC as special device 00:14.0.
    pub fn qemu_like() -> Vec<u8> {
        let entries = [entry4(1, 0, 0), special(0, 0x00a0, 1)];
        let efr = 0x29d3;
        ivrs(
            (40 << 8) | (48 << 15),
            &[
                ivhd(0x10, 0x0010, 0xfed8_0000, 0, &entries),
                ivhd(0x11, 0x0010, 0xfed8_0000, efr, &entries),
            ],
        )
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
        let ivrs = Ivrs::parse(&qemu_like()).unwrap();
        assert_eq!(ivrs.info.pa_size, 40);
        assert_eq!(ivrs.info.va_size, 48);
        assert_eq!(ivrs.blocks.len(), 2);
        let units = ivrs.iommus();
        assert_eq!(units.len(), 1);
        let unit = units[0];
        assert_eq!(unit.kind, 0x11);
        assert_eq!(unit.efr_image, Some(0x29d3));
        assert_eq!(unit.base, HostPhysAddr(0xfed8_0000));
        assert_eq!(unit.device_id, Bdf::new(0, 2, 0));
        assert_eq!(unit.max_device_id(), Some(Bdf(0xffff)));
        assert!(unit.covers(Bdf::new(0, 3, 0)));
        assert_eq!(
            unit.specials,
            vec![Special {
                kind: SpecialKind::IoApic,
                handle: 0,
                device: Bdf::new(0, 0x14, 0),
                dte_setting: 0
            }]
        );
        assert_eq!(ivrs.blocks[0].efr_image, None);
        assert_eq!(
            ivrs.iommu_for(0, Bdf::new(0, 3, 0)).map(|u| u.kind),
            Some(0x11)
        );
    }

    #[test]
    fn every_entry_form() {
        let entries = [
            entry4(0, 0, 0), // padding
            entry4(2, 0x0008, 0x11),
            entry4(3, 0x0100, 0x22),
            entry4(4, 0x01ff, 0),
            entry8(0x42, 0x0300, 0, [0, 0x08, 0x02, 0]),
            entry8(0x43, 0x0400, 0, [0, 0x10, 0x04, 0]),
            entry4(4, 0x04ff, 0),
            entry8(0x46, 0x0500, 0x33, [1, 2, 3, 4]),
            entry8(0x47, 0x0600, 0, [0; 4]),
            entry4(4, 0x0607, 0),
            special(9, 0x00f8, 2),
            entry8(0x7f, 0xffff, 0, [0; 4]), // reserved 8-byte type, skipped
        ];
        let mut acpi = vec![0xf0, 0x08, 0x07, 0];
        acpi.extend_from_slice(b"AMDI0020");
        acpi.extend_from_slice(&[0; 8]);
        acpi.extend_from_slice(&[1, 2, b'I', b'D']);
        let mut all: Vec<Vec<u8>> = entries.to_vec();
        all.push(acpi);
        let bytes = ivrs(1, &[ivhd(0x40, 2, 0xfd00_0000, 7, &all)]);
        let ivrs = Ivrs::parse(&bytes).unwrap();
        assert!(ivrs.info.efr_supported);
        let u = &ivrs.blocks[0];
        let r = |first, last, dte, alias: Option<u16>| DeviceRange {
            first: Bdf(first),
            last: Bdf(last),
            dte_setting: dte,
            alias: alias.map(Bdf),
        };
        assert_eq!(
            u.ranges,
            vec![
                r(0x0008, 0x0008, 0x11, None),
                r(0x0100, 0x01ff, 0x22, None),
                r(0x0300, 0x0300, 0, Some(0x0208)),
                r(0x0400, 0x04ff, 0, Some(0x0410)),
                r(0x0500, 0x0500, 0x33, None),
                r(0x0600, 0x0607, 0, None),
            ]
        );
        assert_eq!(u.specials[0].kind, SpecialKind::Hpet);
        assert_eq!(u.specials[0].handle, 9);
        assert_eq!(u.acpi_devices, vec![Bdf(0x0708)]);
        assert_eq!(u.max_device_id(), Some(Bdf(0x0708)));
        assert_eq!(u.requester_id(Bdf(0x0420)), Bdf(0x0410));
        assert_eq!(u.requester_id(Bdf(0x0008)), Bdf(0x0008));
        assert!(u.covers(Bdf(0x01ff)) && !u.covers(Bdf(0x0200)));
        assert!(u.covers(Bdf(0x00f8)));
    }

    #[test]
    fn ivmd_blocks() {
        let bytes = ivrs(
            0,
            &[
                ivmd(0x20, 0b0111, 0, 0, 0xa_0000, 0x2_0000),
                ivmd(0x21, 0b1000, 0x18, 0, 0x1000, 0x1000),
                ivmd(0x22, 0b0011, 0x100, 0x1ff, 0x2000, 0x1000),
            ],
        );
        let ivrs = Ivrs::parse(&bytes).unwrap();
        assert_eq!(ivrs.memory.len(), 3);
        let m = ivrs.memory[0];
        assert!(m.unity && m.read && m.write && !m.exclusion);
        assert_eq!((m.start, m.len), (HostPhysAddr(0xa_0000), 0x2_0000));
        assert_eq!(ivrs.memory[1].devices, IvmdDevices::One(Bdf(0x18)));
        assert!(ivrs.memory[1].exclusion);
        assert_eq!(
            ivrs.memory[2].devices,
            IvmdDevices::Range(Bdf(0x100), Bdf(0x1ff))
        );
        let wraps = ivrs_bytes_with(ivmd(0x20, 1, 0, 0, u64::MAX, 2));
        assert!(matches!(
            Ivrs::parse(&wraps),
            Err(TableError::BadField {
                offset: 48,
                value: 2,
                ..
            })
        ));
    }

    fn ivrs_bytes_with(block: Vec<u8>) -> Vec<u8> {
        ivrs(0, &[block])
    }

    #[test]
    fn hostile_blocks() {
        // A block length past the end.
        let mut block = ivhd(0x10, 2, 0xfed8_0000, 0, &[entry4(1, 0, 0)]);
        block[2] = 0xff;
        assert!(matches!(
            Ivrs::parse(&ivrs_bytes_with(block)),
            Err(TableError::BadStructLength {
                what: "IVRS definition block",
                offset: 48,
                length: 255,
                ..
            })
        ));
        // An IVHD 0x11 whose length covers only the 0x10 header.
        let mut short = ivhd(0x10, 2, 0xfed8_0000, 0, &[]);
        short[0] = 0x11;
        assert!(matches!(
            Ivrs::parse(&ivrs_bytes_with(short)),
            Err(TableError::BadStructLength {
                what: "IVHD",
                offset: 48,
                length: 24,
                ..
            })
        ));
        // Misaligned base.
        assert!(matches!(
            Ivrs::parse(&ivrs_bytes_with(ivhd(0x10, 2, 0xfed8_1000, 0, &[]))),
            Err(TableError::BadField {
                value: 0xfed8_1000,
                ..
            })
        ));
        // An 8-byte entry cut off by the block end.
        let cut = ivhd(0x10, 2, 0xfed8_0000, 0, &[entry4(0x42, 1, 0)]);
        assert!(matches!(
            Ivrs::parse(&ivrs_bytes_with(cut)),
            Err(TableError::BadStructLength {
                what: "IVHD device entry",
                offset: 72,
                length: 8,
                available: 4
            })
        ));
        // Range end without start, start without end, start after start.
        for entries in [
            vec![entry4(4, 5, 0)],
            vec![entry4(3, 5, 0)],
            vec![entry4(3, 5, 0), entry8(0x47, 6, 0, [0; 4])],
        ] {
            let b = ivhd(0x10, 2, 0xfed8_0000, 0, &entries);
            assert!(matches!(
                Ivrs::parse(&ivrs_bytes_with(b)),
                Err(TableError::UnpairedRange { .. })
            ));
        }
        // Range end below its start.
        let b = ivhd(0x10, 2, 0xfed8_0000, 0, &[entry4(3, 5, 0), entry4(4, 4, 0)]);
        assert!(matches!(
            Ivrs::parse(&ivrs_bytes_with(b)),
            Err(TableError::BadField {
                offset: 76,
                value: 4,
                ..
            })
        ));
        // An unknown variable-length entry.
        let b = ivhd(0x10, 2, 0xfed8_0000, 0, &[entry4(0xc5, 0, 0)]);
        let err = Ivrs::parse(&ivrs_bytes_with(b)).unwrap_err();
        assert!(format!("{err}").contains("0xc5"), "{err}");
        // An ACPI HID entry whose UID runs past the block.
        let mut acpi = vec![0xf0, 0, 0, 0];
        acpi.extend_from_slice(&[0; 17]);
        acpi.push(200);
        let b = ivhd(0x10, 2, 0xfed8_0000, 0, &[acpi]);
        assert!(matches!(
            Ivrs::parse(&ivrs_bytes_with(b)),
            Err(TableError::BadStructLength { length: 222, .. })
        ));
        // A short IVMD.
        let mut m = ivmd(0x21, 0, 0, 0, 0, 0);
        m[2] = 16;
        m.truncate(16);
        assert!(matches!(
            Ivrs::parse(&ivrs_bytes_with(m)),
            Err(TableError::BadStructLength { what: "IVMD", .. })
        ));
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
            let _ = Ivrs::parse(&t);
        }
        for bit in 0..bytes.len() * 8 {
            let mut t = bytes.clone();
            t[bit / 8] ^= 1 << (bit % 8);
            fix_checksum(&mut t);
            if let Ok(ivrs) = Ivrs::parse(&t) {
                for unit in ivrs.iommus() {
                    let _ = unit.max_device_id();
                }
            }
        }
    }
}
