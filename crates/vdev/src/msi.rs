//! Message-signalled interrupts of an emulated PCI function: the MSI and
//! MSI-X capabilities, the MSI-X table and pending-bit array, and the
//! translation of a message (address, data) into a local-APIC delivery.
//!
//! The capability registers live in the function's [`ConfigSpace`] with
//! their write masks (the guest programs them by ordinary config writes);
//! the structures here know where they are, answer the table's MMIO, and
//! decide whether a signal becomes a message now or a pending bit. After
//! every guest write that may unmask something, the caller asks for the
//! pending messages ([`Msi::release_pending`], [`MsiX::release_pending`]).
//!
//! Facts used (PCI Local Bus Specification 3.0, 6.8): MSI Message Control
//! bit 0 enable, bits 3:1 Multiple Message Capable, bits 6:4 Multiple
//! Message Enable, bit 7 64-bit address, bit 8 per-vector masking; with
//! several vectors the function puts the vector number into the low bits of
//! the data. MSI-X Message Control bits 10:0 table size - 1, bit 14 function
//! mask, bit 15 enable; table entries of 16 bytes (address low, address
//! high, data, vector control with bit 0 = mask, set at reset); the PBA has
//! one bit per entry. Entries and PBA take dword or aligned qword accesses.
//! Intel SDM vol. 3, 11.11: the address is 0xFEEx_xxxx with the destination
//! ID in bits 19:12 and the destination mode in bit 2; the data holds the
//! vector (7:0), the delivery mode (10:8) and the trigger mode (15).

use alloc::vec;
use alloc::vec::Vec;

use crate::access::all_ones;
use crate::ioapic::{Delivery, DeliveryMode, DestinationMode};
use crate::pci_config::{ConfigError, ConfigSpace};

/// Capability ID of MSI.
pub const CAP_ID_MSI: u8 = 0x05;
/// Capability ID of MSI-X.
pub const CAP_ID_MSIX: u8 = 0x11;
/// Bytes of a 64-bit MSI capability with per-vector masking (a 32-bit one
/// has 4 fewer: no upper address dword).
const MSI_CAP_LEN: usize = 0x18;
/// Bytes of the MSI-X capability.
const MSIX_CAP_LEN: usize = 0x0C;
/// Bytes of one MSI-X table entry.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// Most MSI-X entries a function may have.
pub const MSIX_MAX_ENTRIES: u16 = 2048;
/// The interrupt window every MSI address must fall in.
const MSI_WINDOW: u64 = 0xFEE0_0000;
/// The address bits that select within the window.
const MSI_WINDOW_OFFSETS: u64 = 0x000F_FFFF;
/// The `pin` of a delivery that came from a message, not an IOAPIC pin.
pub const MSI_PIN: u8 = 0xFF;

/// One message a function writes to signal an interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

/// Why a message reaches no local APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsiError {
    /// The address is outside 0xFEE0_0000..0xFEF0_0000 (the write would go
    /// to memory; the VM gets no interrupt).
    Address(u64),
    /// A delivery mode an interrupt message may not use here (SMI, INIT,
    /// reserved), by its 3-bit value.
    DeliveryMode(u8),
}

impl core::fmt::Display for MsiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MsiError::Address(a) => write!(f, "MSI address {a:#x} is outside the interrupt window"),
            MsiError::DeliveryMode(m) => write!(f, "MSI delivery mode {m} is not supported"),
        }
    }
}

impl MsiMessage {
    /// The local-APIC delivery this message asks for.
    pub fn delivery(&self) -> Result<Delivery, MsiError> {
        if self.address & !MSI_WINDOW_OFFSETS != MSI_WINDOW {
            return Err(MsiError::Address(self.address));
        }
        let mode = match (self.data >> 8) & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            4 => DeliveryMode::Nmi,
            7 => DeliveryMode::ExtInt,
            m => return Err(MsiError::DeliveryMode(m as u8)),
        };
        Ok(Delivery {
            pin: MSI_PIN,
            dest: (self.address >> 12) as u8,
            dest_mode: if self.address & (1 << 2) != 0 {
                DestinationMode::Logical
            } else {
                DestinationMode::Physical
            },
            mode,
            vector: self.data as u8,
            // A message has no line to re-deliver: its EOI ends it.
            level: false,
        })
    }
}

// MSI capability register offsets (64-bit layout with masking; the 32-bit
// layout has no upper address dword, so data, mask and pending come 4 earlier).
const MSI_CONTROL: usize = 2;
const MSI_ADDRESS_LO: usize = 4;
const MSI_ADDRESS_HI: usize = 8;
const MSI_DATA: usize = 0x0C;
const MSI_MASK: usize = 0x10;
const MSI_PENDING: usize = 0x14;
const MSI_CONTROL_ENABLE: u16 = 1 << 0;
const MSI_CONTROL_64BIT: u16 = 1 << 7;
const MSI_CONTROL_MASKABLE: u16 = 1 << 8;

/// An MSI capability (32- or 64-bit address, per-vector masking) in a
/// function's configuration space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msi {
    at: usize,
    /// Vectors the function can use (Multiple Message Capable): 1..=32.
    vectors: u32,
    /// The capability has the upper address dword (64-bit addresses).
    addr64: bool,
}

impl Msi {
    /// Adds the capability for `vectors` vectors (a power of two, 1..=32),
    /// with 64-bit message addresses if `addr64`, else 32-bit ones.
    pub fn install(cfg: &mut ConfigSpace, vectors: u32, addr64: bool) -> Result<Msi, ConfigError> {
        if !vectors.is_power_of_two() || vectors > 32 {
            return Err(ConfigError::CapabilityParameter {
                id: CAP_ID_MSI,
                value: vectors,
            });
        }
        let len = if addr64 { MSI_CAP_LEN } else { MSI_CAP_LEN - 4 };
        let at = cfg.add_capability(CAP_ID_MSI, len)?;
        let msi = Msi {
            at,
            vectors,
            addr64,
        };
        let mmc = vectors.trailing_zeros() as u16;
        let wide = if addr64 { MSI_CONTROL_64BIT } else { 0 };
        let control = wide | MSI_CONTROL_MASKABLE | mmc << 1;
        cfg.put(at + MSI_CONTROL, &control.to_le_bytes());
        // Enable and Multiple Message Enable are the guest's.
        cfg.set_writable(at + MSI_CONTROL, &[0x71, 0x00]);
        cfg.set_writable(at + MSI_ADDRESS_LO, &[0xFC, 0xFF, 0xFF, 0xFF]);
        if addr64 {
            cfg.set_writable(at + MSI_ADDRESS_HI, &[0xFF; 4]);
        }
        cfg.set_writable(msi.reg(MSI_DATA), &[0xFF, 0xFF, 0, 0]);
        let mask = if vectors == 32 {
            u32::MAX
        } else {
            (1u32 << vectors) - 1
        };
        cfg.set_writable(msi.reg(MSI_MASK), &mask.to_le_bytes());
        Ok(msi)
    }

    /// The offset of register `reg` (a 64-bit-layout offset) in this layout.
    fn reg(&self, reg: usize) -> usize {
        if self.addr64 || reg < MSI_DATA {
            self.at + reg
        } else {
            self.at + reg - 4
        }
    }

    /// The capability's offset in configuration space.
    pub fn offset(&self) -> usize {
        self.at
    }

    /// Whether the guest enabled MSI.
    pub fn enabled(&self, cfg: &ConfigSpace) -> bool {
        cfg.read_u16(self.at + MSI_CONTROL) & MSI_CONTROL_ENABLE != 0
    }

    /// Vectors the guest enabled: 2^MME, never more than the function has
    /// (a larger MME is the guest's error; the function uses what it has).
    pub fn enabled_vectors(&self, cfg: &ConfigSpace) -> u32 {
        let mme = (cfg.read_u16(self.at + MSI_CONTROL) >> 4) & 7;
        (1u32 << mme.min(5)).min(self.vectors)
    }

    fn message(&self, cfg: &ConfigSpace, n: u32) -> MsiMessage {
        let lo = u64::from(cfg.read_u32(self.at + MSI_ADDRESS_LO));
        let hi = if self.addr64 {
            u64::from(cfg.read_u32(self.at + MSI_ADDRESS_HI))
        } else {
            0
        };
        let data = u32::from(cfg.read_u16(self.reg(MSI_DATA)));
        let low_bits = self.enabled_vectors(cfg) - 1;
        MsiMessage {
            address: hi << 32 | lo,
            data: (data & !low_bits) | (n & low_bits),
        }
    }

    /// Signals vector `n`: the message to send, or None (MSI disabled, `n`
    /// not enabled, or masked: then its pending bit is set).
    pub fn signal(&self, cfg: &mut ConfigSpace, n: u32) -> Option<MsiMessage> {
        if !self.enabled(cfg) || n >= self.enabled_vectors(cfg) {
            return None;
        }
        if cfg.read_u32(self.reg(MSI_MASK)) & (1 << n) != 0 {
            let pending = cfg.read_u32(self.reg(MSI_PENDING)) | 1 << n;
            cfg.put(self.reg(MSI_PENDING), &pending.to_le_bytes());
            return None;
        }
        Some(self.message(cfg, n))
    }

    /// Sends (into `out`) and clears every pending vector that is no longer
    /// masked; call after each guest configuration write.
    pub fn release_pending(&self, cfg: &mut ConfigSpace, out: &mut Vec<MsiMessage>) {
        let pending = cfg.read_u32(self.reg(MSI_PENDING));
        if pending == 0 || !self.enabled(cfg) {
            return;
        }
        let ready = pending & !cfg.read_u32(self.reg(MSI_MASK));
        for n in (0..32).filter(|n| ready & (1 << n) != 0) {
            out.push(self.message(cfg, n));
        }
        cfg.put(self.reg(MSI_PENDING), &(pending & !ready).to_le_bytes());
    }
}

// MSI-X capability register offsets.
const MSIX_CONTROL: usize = 2;
const MSIX_TABLE: usize = 4;
const MSIX_PBA: usize = 8;
const MSIX_CONTROL_ENABLE: u16 = 1 << 15;
const MSIX_CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Vector control bit 0: the entry is masked.
const ENTRY_MASKED: u32 = 1;

/// Which MSI-X structure a BAR offset falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsixRegion {
    /// Offset into the table.
    Table(u64),
    /// Offset into the pending-bit array.
    Pba(u64),
}

/// An MSI-X capability and its table and PBA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsiX {
    at: usize,
    /// Each entry: address low, address high, data, vector control.
    table: Vec<[u32; 4]>,
    pba: Vec<u64>,
    table_bar: u8,
    table_offset: u64,
    pba_bar: u8,
    pba_offset: u64,
}

impl MsiX {
    /// Adds the capability with `entries` vectors (1..=2048), the table at
    /// `table_offset` of BAR `table_bar` and the PBA at `pba_offset` of BAR
    /// `pba_bar` (offsets 8-byte aligned). Every entry starts masked.
    pub fn install(
        cfg: &mut ConfigSpace,
        entries: u16,
        (table_bar, table_offset): (u8, u32),
        (pba_bar, pba_offset): (u8, u32),
    ) -> Result<MsiX, ConfigError> {
        let bad = |value: u32| ConfigError::CapabilityParameter {
            id: CAP_ID_MSIX,
            value,
        };
        if !(1..=MSIX_MAX_ENTRIES).contains(&entries) {
            return Err(bad(u32::from(entries)));
        }
        if table_bar > 5 || pba_bar > 5 {
            return Err(bad(u32::from(table_bar.max(pba_bar))));
        }
        if table_offset % 8 != 0 || pba_offset % 8 != 0 {
            return Err(bad(table_offset | pba_offset));
        }
        let at = cfg.add_capability(CAP_ID_MSIX, MSIX_CAP_LEN)?;
        cfg.put(at + MSIX_CONTROL, &(entries - 1).to_le_bytes());
        cfg.set_writable(at + MSIX_CONTROL, &[0x00, 0xC0]);
        cfg.put(
            at + MSIX_TABLE,
            &(table_offset | u32::from(table_bar)).to_le_bytes(),
        );
        cfg.put(
            at + MSIX_PBA,
            &(pba_offset | u32::from(pba_bar)).to_le_bytes(),
        );
        Ok(MsiX {
            at,
            table: vec![[0, 0, 0, ENTRY_MASKED]; usize::from(entries)],
            pba: vec![0; usize::from(entries).div_ceil(64)],
            table_bar,
            table_offset: u64::from(table_offset),
            pba_bar,
            pba_offset: u64::from(pba_offset),
        })
    }

    /// The capability's offset in configuration space.
    pub fn offset(&self) -> usize {
        self.at
    }

    /// Table entries.
    pub fn entries(&self) -> usize {
        self.table.len()
    }

    fn control(&self, cfg: &ConfigSpace) -> u16 {
        cfg.read_u16(self.at + MSIX_CONTROL)
    }

    /// Whether the guest enabled MSI-X.
    pub fn enabled(&self, cfg: &ConfigSpace) -> bool {
        self.control(cfg) & MSIX_CONTROL_ENABLE != 0
    }

    fn masked(&self, cfg: &ConfigSpace, n: usize) -> bool {
        self.control(cfg) & MSIX_CONTROL_FUNCTION_MASK != 0
            || self.table.get(n).is_none_or(|e| e[3] & ENTRY_MASKED != 0)
    }

    fn message(&self, n: usize) -> Option<MsiMessage> {
        let e = self.table.get(n)?;
        Some(MsiMessage {
            address: u64::from(e[1]) << 32 | u64::from(e[0]),
            data: e[2],
        })
    }

    fn set_pending(&mut self, n: usize, on: bool) {
        if let Some(word) = self.pba.get_mut(n / 64) {
            if on {
                *word |= 1 << (n % 64);
            } else {
                *word &= !(1 << (n % 64));
            }
        }
    }

    /// Whether entry `n`'s pending bit is set.
    pub fn pending(&self, n: usize) -> bool {
        self.pba
            .get(n / 64)
            .is_some_and(|w| w & (1 << (n % 64)) != 0)
    }

    /// Signals entry `n`: the message to send, or None (MSI-X disabled, no
    /// such entry, or masked: then its pending bit is set).
    pub fn signal(&mut self, cfg: &ConfigSpace, n: usize) -> Option<MsiMessage> {
        if !self.enabled(cfg) || n >= self.table.len() {
            return None;
        }
        if self.masked(cfg, n) {
            self.set_pending(n, true);
            return None;
        }
        self.message(n)
    }

    /// Sends (into `out`) and clears every pending entry that is no longer
    /// masked; call after guest writes to the capability or the table.
    pub fn release_pending(&mut self, cfg: &ConfigSpace, out: &mut Vec<MsiMessage>) {
        if !self.enabled(cfg) || self.pba.iter().all(|w| *w == 0) {
            return;
        }
        for n in 0..self.table.len() {
            if self.pending(n) && !self.masked(cfg, n) {
                self.set_pending(n, false);
                out.extend(self.message(n));
            }
        }
    }

    /// Where `offset` of BAR `bar` falls: the table, the PBA, or neither.
    pub fn region(&self, bar: u8, offset: u64) -> Option<MsixRegion> {
        let table_len = self.table.len() as u64 * MSIX_ENTRY_SIZE;
        let pba_len = self.pba.len() as u64 * 8;
        if bar == self.table_bar
            && (self.table_offset..self.table_offset + table_len).contains(&offset)
        {
            return Some(MsixRegion::Table(offset - self.table_offset));
        }
        if bar == self.pba_bar && (self.pba_offset..self.pba_offset + pba_len).contains(&offset) {
            return Some(MsixRegion::Pba(offset - self.pba_offset));
        }
        None
    }

    /// A guest read of the table or PBA (dword or aligned qword; other
    /// accesses read all ones).
    pub fn read(&self, region: MsixRegion, size: u8) -> u64 {
        let (words, off): (&dyn Fn(usize) -> u32, u64) = match region {
            MsixRegion::Table(off) => (
                &|i| self.table.get(i / 4).map_or(u32::MAX, |e| e[i % 4]),
                off,
            ),
            MsixRegion::Pba(off) => (
                &|i| {
                    self.pba
                        .get(i / 2)
                        .map_or(u32::MAX, |w| (w >> (32 * (i % 2))) as u32)
                },
                off,
            ),
        };
        let i = (off / 4) as usize;
        match size {
            4 if off % 4 == 0 => u64::from(words(i)),
            8 if off % 8 == 0 => u64::from(words(i)) | u64::from(words(i + 1)) << 32,
            _ => u64::from(all_ones(4)) | u64::from(all_ones(4)) << 32,
        }
    }

    /// A guest write to the table (dword or aligned qword; the PBA is read
    /// only, other accesses are ignored). An entry that becomes unmasked
    /// with its pending bit set sends its message into `out`.
    pub fn write(
        &mut self,
        cfg: &ConfigSpace,
        region: MsixRegion,
        size: u8,
        value: u64,
        out: &mut Vec<MsiMessage>,
    ) {
        let MsixRegion::Table(off) = region else {
            return;
        };
        let dwords: &[(u64, u32)] = match size {
            4 if off % 4 == 0 => &[(off, value as u32)],
            8 if off % 8 == 0 => &[(off, value as u32), (off + 4, (value >> 32) as u32)],
            _ => return,
        };
        for &(o, v) in dwords {
            let Some(entry) = self.table.get_mut((o / MSIX_ENTRY_SIZE) as usize) else {
                continue;
            };
            let word = ((o % MSIX_ENTRY_SIZE) / 4) as usize;
            // Vector control: only the mask bit exists.
            entry[word] = if word == 3 { v & ENTRY_MASKED } else { v };
        }
        self.release_pending(cfg, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::PciFunction;
    use crate::pci_config::PciIds;

    const IDS: PciIds = PciIds {
        vendor_id: 0x5143,
        device_id: 1,
        revision: 1,
        class: 0xFF,
        subclass: 0,
        prog_if: 0,
        subsystem_vendor_id: 0,
        subsystem_id: 0,
    };

    fn msi_function(vectors: u32) -> (ConfigSpace, Msi) {
        let mut cfg = ConfigSpace::new(&IDS);
        let msi = Msi::install(&mut cfg, vectors, true).unwrap();
        (cfg, msi)
    }

    fn w(cfg: &mut ConfigSpace, off: usize, v: u32) {
        cfg.config_write(off as u16, v, 0xF);
    }

    #[test]
    fn msi_capability_is_linked_and_shaped() {
        let (mut cfg, msi) = msi_function(2);
        assert_eq!(msi.offset(), 0x40);
        assert_eq!(cfg.config_read(0x34) & 0xFF, 0x40);
        assert_ne!(
            cfg.config_read(0x04) >> 16 & 0x10,
            0,
            "status: capability list"
        );
        let head = cfg.config_read(0x40);
        assert_eq!(head & 0xFF, 0x05);
        assert_eq!(head >> 8 & 0xFF, 0, "last in the list");
        // 64-bit, maskable, MMC = 1 (2 vectors); MME and enable clear.
        assert_eq!(head >> 16, 0x0182);
        // Read-only bits stay, writable ones take.
        w(&mut cfg, 0x40, 0xFFFF_FFFF);
        assert_eq!(cfg.config_read(0x40) >> 16, 0x01F3);
        assert_eq!(msi.enabled_vectors(&cfg), 2, "MME 7 is clamped to MMC");
    }

    #[test]
    fn msi_bad_vector_counts_are_refused() {
        let mut cfg = ConfigSpace::new(&IDS);
        for v in [0, 3, 64] {
            assert!(Msi::install(&mut cfg, v, true).is_err(), "{v}");
        }
    }

    #[test]
    fn msi_sends_masks_and_releases() {
        let (mut cfg, msi) = msi_function(2);
        assert_eq!(msi.signal(&mut cfg, 0), None, "disabled");
        w(&mut cfg, 0x44, 0xFEE0_1003);
        w(&mut cfg, 0x48, 0);
        w(&mut cfg, 0x4C, 0xFFFF_0041);
        w(&mut cfg, 0x40, 0x0011 << 16); // enable, MME = 1
        let m = msi.signal(&mut cfg, 1).unwrap();
        assert_eq!(m.address, 0xFEE0_1000, "low two address bits are read-only");
        assert_eq!(
            m.data, 0x41,
            "vector 1 replaces the low bit; data is 16 bits"
        );
        assert_eq!(msi.signal(&mut cfg, 2), None, "only two vectors enabled");
        w(&mut cfg, 0x50, 0b01);
        assert_eq!(msi.signal(&mut cfg, 0), None, "masked");
        assert_eq!(cfg.config_read(0x54), 1, "pending");
        w(&mut cfg, 0x54, 0);
        assert_eq!(cfg.config_read(0x54), 1, "pending bits are read-only");
        let mut out = Vec::new();
        msi.release_pending(&mut cfg, &mut out);
        assert!(out.is_empty(), "still masked");
        w(&mut cfg, 0x50, 0);
        msi.release_pending(&mut cfg, &mut out);
        assert_eq!(
            out,
            [MsiMessage {
                address: 0xFEE0_1000,
                data: 0x40
            }]
        );
        assert_eq!(cfg.config_read(0x54), 0);
    }

    #[test]
    fn msi_with_32_bit_addresses_has_the_short_layout() {
        let mut cfg = ConfigSpace::new(&IDS);
        let msi = Msi::install(&mut cfg, 1, false).unwrap();
        assert_eq!(
            cfg.config_read(0x40) >> 16,
            0x0100,
            "maskable, not 64-bit, 1 vector"
        );
        w(&mut cfg, 0x44, 0xFEE0_2000);
        w(&mut cfg, 0x48, 0x0000_0033); // data at +8
        w(&mut cfg, 0x40, 1 << 16);
        assert_eq!(
            msi.signal(&mut cfg, 0),
            Some(MsiMessage {
                address: 0xFEE0_2000,
                data: 0x33
            })
        );
        w(&mut cfg, 0x4C, 1); // mask at +0xC
        assert_eq!(msi.signal(&mut cfg, 0), None);
        assert_eq!(cfg.config_read(0x50), 1, "pending at +0x10");
        w(&mut cfg, 0x4C, 0);
        let mut out = Vec::new();
        msi.release_pending(&mut cfg, &mut out);
        assert_eq!(out.len(), 1);
        // The next capability starts after the 20-byte structure.
        assert_eq!(
            cfg.add_capability(0x09, 4).unwrap(),
            0x60,
            "16-byte steps from 0x40 + 0x14"
        );
    }

    fn msix_function() -> (ConfigSpace, MsiX) {
        let mut cfg = ConfigSpace::new(&IDS);
        let x = MsiX::install(&mut cfg, 4, (1, 0), (1, 0x800)).unwrap();
        (cfg, x)
    }

    #[test]
    fn msix_capability_and_regions() {
        let (mut cfg, x) = msix_function();
        let at = x.offset();
        assert_eq!(cfg.config_read(at as u16), 0x0003_0011);
        assert_eq!(cfg.config_read(at as u16 + 4), 1);
        assert_eq!(cfg.config_read(at as u16 + 8), 0x801);
        assert_eq!(x.region(1, 0x30), Some(MsixRegion::Table(0x30)));
        assert_eq!(x.region(1, 0x40), None);
        assert_eq!(x.region(1, 0x800), Some(MsixRegion::Pba(0)));
        assert_eq!(x.region(0, 0), None);
        // Every entry starts masked.
        for n in 0..4 {
            assert_eq!(x.read(MsixRegion::Table(n * 16 + 12), 4), 1);
        }
        assert!(MsiX::install(&mut cfg, 0, (1, 0), (1, 0x800)).is_err());
        assert!(MsiX::install(&mut cfg, 4, (6, 0), (1, 0x800)).is_err());
        assert!(MsiX::install(&mut cfg, 4, (1, 4), (1, 0x800)).is_err());
    }

    #[test]
    fn msix_masking_pba_and_release() {
        let (mut cfg, mut x) = msix_function();
        let ctl = x.offset() as u16;
        let mut out = Vec::new();
        x.write(&cfg, MsixRegion::Table(16), 8, 0xFEE0_0000, &mut out);
        x.write(&cfg, MsixRegion::Table(24), 4, 0x51, &mut out);
        assert_eq!(x.signal(&cfg, 1), None, "disabled");
        cfg.config_write(ctl, 0xC000 << 16, 0xF); // enable + function mask
        x.write(&cfg, MsixRegion::Table(28), 4, 0xFFFF_FFFE, &mut out); // unmask entry 1
        assert_eq!(
            x.read(MsixRegion::Table(28), 4),
            0,
            "only the mask bit exists"
        );
        assert_eq!(x.signal(&cfg, 1), None, "function mask");
        assert!(x.pending(1));
        assert_eq!(x.read(MsixRegion::Pba(0), 8), 0b10);
        cfg.config_write(ctl, 0x8000 << 16, 0xF);
        x.release_pending(&cfg, &mut out);
        assert_eq!(
            out,
            [MsiMessage {
                address: 0xFEE0_0000,
                data: 0x51
            }]
        );
        assert!(!x.pending(1));
        out.clear();
        assert_eq!(
            x.signal(&cfg, 1),
            Some(MsiMessage {
                address: 0xFEE0_0000,
                data: 0x51
            })
        );
        assert_eq!(x.signal(&cfg, 9), None, "no such entry");
        // Entry mask, then unmasking through the table releases.
        x.write(&cfg, MsixRegion::Table(28), 4, 1, &mut out);
        assert_eq!(x.signal(&cfg, 1), None);
        x.write(&cfg, MsixRegion::Table(28), 4, 0, &mut out);
        assert_eq!(out.len(), 1);
        // The PBA ignores writes.
        x.write(&cfg, MsixRegion::Pba(0), 8, u64::MAX, &mut out);
        assert_eq!(x.read(MsixRegion::Pba(0), 8), 0);
    }

    #[test]
    fn msix_hostile_accesses_never_panic() {
        let (cfg, mut x) = msix_function();
        let mut out = Vec::new();
        for off in [0u64, 1, 3, 7, 60, 62, 63, 64, u64::MAX - 3] {
            for size in [0u8, 1, 2, 3, 4, 8, 16] {
                x.write(&cfg, MsixRegion::Table(off), size, u64::MAX, &mut out);
                let _ = x.read(MsixRegion::Table(off), size);
                let _ = x.read(MsixRegion::Pba(off), size);
            }
        }
        assert!(out.is_empty(), "disabled function sends nothing");
    }

    #[test]
    fn messages_become_deliveries_or_errors() {
        let d = MsiMessage {
            address: 0xFEE0_3004,
            data: 0x0000_0130,
        }
        .delivery()
        .unwrap();
        assert_eq!((d.dest, d.vector), (3, 0x30));
        assert_eq!(d.dest_mode, DestinationMode::Logical);
        assert_eq!(d.mode, DeliveryMode::LowestPriority);
        let nmi = MsiMessage {
            address: 0xFEE0_0000,
            data: 0x400,
        }
        .delivery()
        .unwrap();
        assert_eq!(nmi.mode, DeliveryMode::Nmi);
        assert_eq!(
            MsiMessage {
                address: 0x1000,
                data: 0x30
            }
            .delivery(),
            Err(MsiError::Address(0x1000))
        );
        assert_eq!(
            MsiMessage {
                address: 0x1_FEE0_0000,
                data: 0x30
            }
            .delivery(),
            Err(MsiError::Address(0x1_FEE0_0000))
        );
        assert_eq!(
            MsiMessage {
                address: 0xFEE0_0000,
                data: 0x500
            }
            .delivery(),
            Err(MsiError::DeliveryMode(5))
        );
    }
}
