//! A PCI function's 256-byte configuration space as data plus write masks:
//! which bits the guest may set, which it clears by writing 1, and the BARs
//! whose sizes those masks encode.
//!
//! Every guest write goes through the masks, byte by byte: bits outside the
//! writable mask keep their value (read-only fields such as the IDs, class
//! code and header type ignore writes), bits in the write-1-to-clear mask
//! (the status register's error bits) clear where the guest writes 1. BAR
//! sizing falls out of the masks: a BAR's low address bits are read-only
//! zero and its type bits read-only, so writing all ones reads back the
//! size mask, as the PCI Local Bus Specification (6.2.5.1) describes.
//!
//! The host builds a space with [`ConfigSpace::new`], adds BARs and an
//! interrupt pin, and reads what the guest programmed with
//! [`ConfigSpace::bar_address`] and [`ConfigSpace::command`].

use core::fmt;

use crate::pci::PciFunction;

/// Bytes of conventional configuration space.
pub const CONFIG_SPACE_SIZE: usize = 256;
/// Base address registers in a type 0 header.
pub const BAR_COUNT: usize = 6;

// Type 0 header offsets.
const VENDOR_ID: usize = 0x00;
const DEVICE_ID: usize = 0x02;
const COMMAND: usize = 0x04;
const STATUS: usize = 0x06;
const REVISION: usize = 0x08;
const PROG_IF: usize = 0x09;
const SUBCLASS: usize = 0x0A;
const CLASS: usize = 0x0B;
const HEADER_TYPE: usize = 0x0E;
const BAR0: usize = 0x10;
const SUBSYSTEM_VENDOR_ID: usize = 0x2C;
const SUBSYSTEM_ID: usize = 0x2E;
const CAPABILITIES_POINTER: usize = 0x34;
const INTERRUPT_LINE: usize = 0x3C;
const INTERRUPT_PIN: usize = 0x3D;
/// Where the first capability goes: right after the type 0 header.
const FIRST_CAPABILITY: usize = 0x40;
/// Status bit 4: the function has a capability list.
pub const STATUS_CAPABILITIES: u16 = 1 << 4;
/// Status bit 3: the function asserts its INTx pin (PCI 2.3).
pub const STATUS_INTERRUPT: u16 = 1 << 3;
/// Command bit 0: I/O space decode.
pub const COMMAND_IO: u16 = 1 << 0;
/// Command bit 1: memory space decode.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command bit 2: bus master (DMA and MSI writes).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command bit 10: INTx disable (PCI 2.3).
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;

/// Command bits a guest may set: I/O space, memory space, bus master,
/// parity error response, SERR# enable, interrupt disable.
pub const COMMAND_WRITABLE: u16 = 0x0547;
/// Status bits cleared by writing 1: master data parity error, signaled and
/// received target abort, received master abort, signaled system error,
/// detected parity error.
const STATUS_WRITE_1_CLEAR: u16 = 0xF900;
/// Header type bit 7: the device has more functions than function 0.
pub const HEADER_MULTI_FUNCTION: u8 = 0x80;

/// The identity registers of a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciIds {
    pub vendor_id: u16,
    pub device_id: u16,
    pub revision: u8,
    /// Base class, subclass and programming interface.
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub subsystem_vendor_id: u16,
    pub subsystem_id: u16,
}

/// A base address register: what kind of space and how many bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bar {
    /// I/O space, 4..=256 bytes.
    Io { size: u32 },
    /// 32-bit memory space, 16 bytes..=2 GiB.
    Memory32 { size: u32, prefetchable: bool },
    /// 64-bit memory space (this BAR and the next), 16 bytes..=2^63.
    Memory64 { size: u64, prefetchable: bool },
}

/// Why a BAR could not be added (host configuration errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// BAR index past 5, or a 64-bit BAR at index 5 (it needs two).
    BarIndex { index: usize },
    /// The size is not a power of two within the BAR type's limits.
    BarSize { index: usize, size: u64 },
    /// The BAR (or its upper half) is already in use.
    BarInUse { index: usize },
    /// Interrupt pin other than 1..=4 (INTA#..INTD#).
    InterruptPin { pin: u8 },
    /// No room left below 256 bytes for a capability of `len` bytes.
    CapabilitySpace { id: u8, len: usize },
    /// A capability's parameters are out of range (e.g. an MSI vector count
    /// that is not a power of two up to 32).
    CapabilityParameter { id: u8, value: u32 },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfigError::BarIndex { index } => write!(f, "BAR index {index} does not exist"),
            ConfigError::BarSize { index, size } => {
                write!(f, "BAR {index} size {size:#x} is not a valid power of two")
            }
            ConfigError::BarInUse { index } => write!(f, "BAR {index} is already in use"),
            ConfigError::InterruptPin { pin } => {
                write!(f, "interrupt pin {pin} is not 1..=4 (INTA#..INTD#)")
            }
            ConfigError::CapabilitySpace { id, len } => {
                write!(f, "no room for capability {id:#04x} of {len} bytes")
            }
            ConfigError::CapabilityParameter { id, value } => {
                write!(
                    f,
                    "capability {id:#04x}: parameter {value:#x} is out of range"
                )
            }
        }
    }
}

/// What a BAR slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BarSlot {
    Unused,
    Bar(Bar),
    /// The upper dword of the 64-bit BAR before it.
    Upper,
}

/// One function's configuration space.
#[derive(Clone, Debug)]
pub struct ConfigSpace {
    data: [u8; CONFIG_SPACE_SIZE],
    writable: [u8; CONFIG_SPACE_SIZE],
    write_1_clear: [u8; CONFIG_SPACE_SIZE],
    bars: [BarSlot; BAR_COUNT],
    /// Where the next capability goes; the last one's next pointer.
    next_capability: usize,
    last_capability: Option<usize>,
}

impl ConfigSpace {
    /// A type 0 header with `ids`, command register 0 with
    /// [`COMMAND_WRITABLE`] bits, no BARs, no interrupt pin, no capabilities.
    pub fn new(ids: &PciIds) -> Self {
        let mut c = ConfigSpace {
            data: [0; CONFIG_SPACE_SIZE],
            writable: [0; CONFIG_SPACE_SIZE],
            write_1_clear: [0; CONFIG_SPACE_SIZE],
            bars: [BarSlot::Unused; BAR_COUNT],
            next_capability: FIRST_CAPABILITY,
            last_capability: None,
        };
        c.put(VENDOR_ID, &ids.vendor_id.to_le_bytes());
        c.put(DEVICE_ID, &ids.device_id.to_le_bytes());
        c.put(
            REVISION,
            &[ids.revision, ids.prog_if, ids.subclass, ids.class],
        );
        debug_assert_eq!(
            (PROG_IF, SUBCLASS, CLASS),
            (REVISION + 1, REVISION + 2, REVISION + 3)
        );
        c.put(SUBSYSTEM_VENDOR_ID, &ids.subsystem_vendor_id.to_le_bytes());
        c.put(SUBSYSTEM_ID, &ids.subsystem_id.to_le_bytes());
        c.writable[COMMAND..COMMAND + 2].copy_from_slice(&COMMAND_WRITABLE.to_le_bytes());
        c.write_1_clear[STATUS..STATUS + 2].copy_from_slice(&STATUS_WRITE_1_CLEAR.to_le_bytes());
        c
    }

    /// Sets bit 7 of the header type (the device has functions 1..=7).
    pub fn set_multi_function(&mut self, multi: bool) {
        if multi {
            self.data[HEADER_TYPE] |= HEADER_MULTI_FUNCTION;
        } else {
            self.data[HEADER_TYPE] &= !HEADER_MULTI_FUNCTION;
        }
    }

    /// Adds BAR `index`; its address starts at 0 (unassigned).
    pub fn set_bar(&mut self, index: usize, bar: Bar) -> Result<(), ConfigError> {
        let slot = self
            .bars
            .get(index)
            .ok_or(ConfigError::BarIndex { index })?;
        if *slot != BarSlot::Unused {
            return Err(ConfigError::BarInUse { index });
        }
        let size_err = |size: u64| ConfigError::BarSize { index, size };
        let (low_flags, mask): (u32, u64) = match bar {
            Bar::Io { size } => {
                if !size.is_power_of_two() || !(4..=256).contains(&size) {
                    return Err(size_err(u64::from(size)));
                }
                (0b01, !(u64::from(size) - 1) & 0xFFFF_FFFC)
            }
            Bar::Memory32 { size, prefetchable } => {
                if !size.is_power_of_two() || !(16..=1 << 31).contains(&size) {
                    return Err(size_err(u64::from(size)));
                }
                (
                    u32::from(prefetchable) << 3,
                    !(u64::from(size) - 1) & 0xFFFF_FFF0,
                )
            }
            Bar::Memory64 { size, prefetchable } => {
                if !size.is_power_of_two() || !(16..=1 << 63).contains(&size) {
                    return Err(size_err(size));
                }
                match self.bars.get(index + 1) {
                    None => return Err(ConfigError::BarIndex { index }),
                    Some(BarSlot::Unused) => {}
                    Some(_) => return Err(ConfigError::BarInUse { index: index + 1 }),
                }
                (0b100 | u32::from(prefetchable) << 3, !(size - 1) & !0xF)
            }
        };
        let at = BAR0 + 4 * index;
        self.put(at, &low_flags.to_le_bytes());
        self.writable[at..at + 4].copy_from_slice(&(mask as u32).to_le_bytes());
        if let Bar::Memory64 { .. } = bar {
            self.writable[at + 4..at + 8].copy_from_slice(&((mask >> 32) as u32).to_le_bytes());
            self.bars[index + 1] = BarSlot::Upper;
        }
        self.bars[index] = BarSlot::Bar(bar);
        Ok(())
    }

    /// Gives the function interrupt pin `pin` (1 = INTA# .. 4 = INTD#); the
    /// interrupt line register becomes writable.
    pub fn set_interrupt_pin(&mut self, pin: u8) -> Result<(), ConfigError> {
        if !(1..=4).contains(&pin) {
            return Err(ConfigError::InterruptPin { pin });
        }
        self.data[INTERRUPT_PIN] = pin;
        self.writable[INTERRUPT_LINE] = 0xFF;
        Ok(())
    }

    /// Appends a capability with ID `id` of `len` bytes (header included) to
    /// the list and returns its offset. Its body starts read-only zero: the
    /// caller fills it with [`put`](Self::put) and opens guest-writable bits
    /// with [`set_writable`](Self::set_writable).
    pub fn add_capability(&mut self, id: u8, len: usize) -> Result<usize, ConfigError> {
        let at = self.next_capability;
        let end = at + len.max(2);
        if end > CONFIG_SPACE_SIZE {
            return Err(ConfigError::CapabilitySpace { id, len });
        }
        self.data[at] = id;
        self.data[at + 1] = 0;
        match self.last_capability {
            Some(prev) => self.data[prev + 1] = at as u8,
            None => self.data[CAPABILITIES_POINTER] = at as u8,
        }
        self.set_status_bits(STATUS_CAPABILITIES);
        self.last_capability = Some(at);
        // 16-byte steps keep each capability at a round offset.
        self.next_capability = end.next_multiple_of(16);
        Ok(at)
    }

    /// Host-side: which bits of the bytes at `offset` the guest may write.
    pub fn set_writable(&mut self, offset: usize, mask: &[u8]) {
        for (i, m) in mask.iter().enumerate() {
            if let Some(w) = self.writable.get_mut(offset + i) {
                *w = *m;
            }
        }
    }

    /// Host-side read of `N` bytes at `offset` (zeros past the end).
    pub fn bytes<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut b = [0u8; N];
        for (i, v) in b.iter_mut().enumerate() {
            *v = self.data.get(offset + i).copied().unwrap_or(0);
        }
        b
    }

    /// Host-side 16-bit read at `offset`.
    pub fn read_u16(&self, offset: usize) -> u16 {
        u16::from_le_bytes(self.bytes(offset))
    }

    /// Host-side 32-bit read at `offset`.
    pub fn read_u32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.bytes(offset))
    }

    /// Clears status bits from the device side (e.g. the interrupt status
    /// when the device deasserts INTx).
    pub fn clear_status_bits(&mut self, bits: u16) {
        for (i, b) in bits.to_le_bytes().into_iter().enumerate() {
            self.data[STATUS + i] &= !b;
        }
    }

    /// The BAR definition at `index` (None: unused or the upper half of a
    /// 64-bit BAR).
    pub fn bar(&self, index: usize) -> Option<Bar> {
        match self.bars.get(index)? {
            BarSlot::Bar(b) => Some(*b),
            BarSlot::Unused | BarSlot::Upper => None,
        }
    }

    /// Host-side placement of BAR `index` at `address` (what firmware does
    /// before the guest runs); the type bits are kept.
    pub fn set_bar_address(&mut self, index: usize, address: u64) {
        let at = BAR0 + 4 * index;
        let (low_mask, is64) = match self.bar(index) {
            Some(Bar::Io { .. }) => (!0b11u32, false),
            Some(Bar::Memory32 { .. }) => (!0xFu32, false),
            Some(Bar::Memory64 { .. }) => (!0xFu32, true),
            None => return,
        };
        let low = (self.dword(at) & !low_mask) | (address as u32 & low_mask);
        self.put(at, &low.to_le_bytes());
        if is64 {
            self.put(at + 4, &((address >> 32) as u32).to_le_bytes());
        }
    }

    /// Host-side write of the command register (firmware enabling decode).
    pub fn set_command(&mut self, command: u16) {
        self.put(COMMAND, &(command & COMMAND_WRITABLE).to_le_bytes());
    }

    /// The status register.
    pub fn status(&self) -> u16 {
        self.read_u16(STATUS)
    }

    /// Host-side write of the interrupt line register (firmware routing).
    pub fn set_interrupt_line(&mut self, line: u8) {
        self.data[INTERRUPT_LINE] = line;
    }

    /// The interrupt pin (0: none, 1..=4: INTA#..INTD#).
    pub fn interrupt_pin(&self) -> u8 {
        self.data[INTERRUPT_PIN]
    }

    /// The address the guest programmed into BAR `index` (None: no BAR).
    /// Whether the function decodes it depends on [`command`](Self::command).
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let at = BAR0 + 4 * index;
        match self.bars.get(index)? {
            BarSlot::Bar(Bar::Io { .. }) => Some(u64::from(self.dword(at) & !0b11)),
            BarSlot::Bar(Bar::Memory32 { .. }) => Some(u64::from(self.dword(at) & !0xF)),
            BarSlot::Bar(Bar::Memory64 { .. }) => {
                Some(u64::from(self.dword(at) & !0xF) | u64::from(self.dword(at + 4)) << 32)
            }
            BarSlot::Unused | BarSlot::Upper => None,
        }
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        u16::from_le_bytes([self.data[COMMAND], self.data[COMMAND + 1]])
    }

    /// The interrupt line register (what the guest routed the pin to).
    pub fn interrupt_line(&self) -> u8 {
        self.data[INTERRUPT_LINE]
    }

    /// Sets status bits from the device side (e.g. a master abort), which
    /// the guest then clears by writing 1.
    pub fn set_status_bits(&mut self, bits: u16) {
        for (i, b) in bits.to_le_bytes().into_iter().enumerate() {
            self.data[STATUS + i] |= b;
        }
    }

    /// Host-side store of `bytes` at `offset`, bypassing the masks (for
    /// device-specific read-only registers); bytes past the end are dropped.
    pub fn put(&mut self, offset: usize, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            if let Some(d) = self.data.get_mut(offset + i) {
                *d = *b;
            }
        }
    }

    fn dword(&self, at: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.data[at..at + 4]);
        u32::from_le_bytes(b)
    }
}

impl PciFunction for ConfigSpace {
    fn config_read(&mut self, offset: u16) -> u32 {
        let at = usize::from(offset & !3);
        if at + 4 > CONFIG_SPACE_SIZE {
            // Extended space (ECAM) of a conventional function reads 0.
            return 0;
        }
        self.dword(at)
    }

    fn config_write(&mut self, offset: u16, value: u32, byte_enables: u8) {
        let at = usize::from(offset & !3);
        if at + 4 > CONFIG_SPACE_SIZE {
            return;
        }
        for (i, v) in value.to_le_bytes().into_iter().enumerate() {
            if byte_enables & (1 << i) == 0 {
                continue;
            }
            let o = at + i;
            let w = self.writable[o];
            let kept = self.data[o] & !w;
            self.data[o] = (kept | (v & w)) & !(v & self.write_1_clear[o]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: PciIds = PciIds {
        vendor_id: 0x1234,
        device_id: 0x5678,
        revision: 2,
        class: 0x02,
        subclass: 0x00,
        prog_if: 0x00,
        subsystem_vendor_id: 0xABCD,
        subsystem_id: 0x0001,
    };

    fn size_probe(c: &mut ConfigSpace, offset: u16) -> u32 {
        let saved = c.config_read(offset);
        c.config_write(offset, 0xFFFF_FFFF, 0xF);
        let probed = c.config_read(offset);
        c.config_write(offset, saved, 0xF);
        probed
    }

    #[test]
    fn identity_is_read_only() {
        let mut c = ConfigSpace::new(&IDS);
        assert_eq!(c.config_read(0x00), 0x5678_1234);
        assert_eq!(c.config_read(0x08), 0x0200_0002);
        assert_eq!(c.config_read(0x2C), 0x0001_ABCD);
        for off in (0..256).step_by(4) {
            if off != 0x04 {
                let before = c.config_read(off);
                c.config_write(off, 0xFFFF_FFFF, 0xF);
                assert_eq!(c.config_read(off), before, "offset {off:#x} is read-only");
            }
        }
    }

    #[test]
    fn command_is_masked_and_status_clears_on_one() {
        let mut c = ConfigSpace::new(&IDS);
        c.config_write(0x04, 0x0000_FFFF, 0b0011);
        assert_eq!(c.command(), COMMAND_WRITABLE);
        c.set_status_bits(0x2000 | 0x0100);
        assert_eq!(c.config_read(0x04) >> 16, 0x2100);
        // Writing the command word back with status 0 clears nothing.
        c.config_write(0x04, u32::from(c.command()), 0xF);
        assert_eq!(c.config_read(0x04) >> 16, 0x2100);
        c.config_write(0x04, 0x2000_0000 | u32::from(c.command()), 0xF);
        assert_eq!(c.config_read(0x04) >> 16, 0x0100);
        // Byte enables: only byte 0 of the command register.
        c.config_write(0x04, 0, 0b0001);
        assert_eq!(c.command(), COMMAND_WRITABLE & 0xFF00);
    }

    #[test]
    fn bar_sizing_protocol() {
        let mut c = ConfigSpace::new(&IDS);
        c.set_bar(
            0,
            Bar::Memory32 {
                size: 0x1000,
                prefetchable: false,
            },
        )
        .unwrap();
        c.set_bar(1, Bar::Io { size: 0x20 }).unwrap();
        c.set_bar(
            2,
            Bar::Memory64 {
                size: 0x2_0000_0000,
                prefetchable: true,
            },
        )
        .unwrap();
        assert_eq!(size_probe(&mut c, 0x10), 0xFFFF_F000);
        assert_eq!(size_probe(&mut c, 0x14), 0xFFFF_FFE1);
        assert_eq!(size_probe(&mut c, 0x18), 0x0000_000C);
        assert_eq!(size_probe(&mut c, 0x1C), 0xFFFF_FFFE);
        assert_eq!(size_probe(&mut c, 0x20), 0, "BAR 4 absent");
        // Programming addresses; low bits ignored.
        c.config_write(0x10, 0xFEBF_1234, 0xF);
        c.config_write(0x14, 0xC0FF, 0xF);
        c.config_write(0x18, 0xFFFF_FFFF, 0xF);
        c.config_write(0x1C, 0x0000_0004, 0xF);
        assert_eq!(c.bar_address(0), Some(0xFEBF_1000));
        assert_eq!(c.bar_address(1), Some(0xC0E0));
        assert_eq!(c.bar_address(2), Some(0x4_0000_0000));
        assert_eq!(c.bar_address(3), None);
        assert_eq!(c.bar_address(6), None);
    }

    #[test]
    fn bad_bar_and_pin_configuration_is_rejected() {
        let mut c = ConfigSpace::new(&IDS);
        assert_eq!(
            c.set_bar(6, Bar::Io { size: 4 }),
            Err(ConfigError::BarIndex { index: 6 })
        );
        assert_eq!(
            c.set_bar(
                5,
                Bar::Memory64 {
                    size: 16,
                    prefetchable: false
                }
            ),
            Err(ConfigError::BarIndex { index: 5 })
        );
        assert_eq!(
            c.set_bar(0, Bar::Io { size: 512 }),
            Err(ConfigError::BarSize {
                index: 0,
                size: 512
            })
        );
        assert_eq!(
            c.set_bar(
                0,
                Bar::Memory32 {
                    size: 0x1800,
                    prefetchable: false
                }
            ),
            Err(ConfigError::BarSize {
                index: 0,
                size: 0x1800
            })
        );
        assert_eq!(
            c.set_bar(
                0,
                Bar::Memory64 {
                    size: 0,
                    prefetchable: false
                }
            ),
            Err(ConfigError::BarSize { index: 0, size: 0 })
        );
        c.set_bar(1, Bar::Io { size: 4 }).unwrap();
        assert_eq!(
            c.set_bar(
                0,
                Bar::Memory64 {
                    size: 16,
                    prefetchable: false
                }
            ),
            Err(ConfigError::BarInUse { index: 1 })
        );
        assert_eq!(
            c.set_bar(1, Bar::Io { size: 4 }),
            Err(ConfigError::BarInUse { index: 1 })
        );
        assert_eq!(
            c.set_interrupt_pin(5),
            Err(ConfigError::InterruptPin { pin: 5 })
        );
        c.set_interrupt_pin(1).unwrap();
        c.config_write(0x3C, 0xFFFF_FF0B, 0xF);
        assert_eq!(c.config_read(0x3C), 0x0000_010B);
        assert_eq!(c.interrupt_line(), 0x0B);
        let msg = alloc::format!("{}", ConfigError::BarSize { index: 2, size: 3 });
        assert!(msg.contains("BAR 2") && msg.contains("0x3"));
    }

    #[test]
    fn out_of_range_offsets_are_harmless() {
        let mut c = ConfigSpace::new(&IDS);
        for off in [0x100u16, 0xFFC, 0xFFFF] {
            assert_eq!(c.config_read(off), 0);
            c.config_write(off, u32::MAX, 0xFF);
        }
        c.put(0xFE, &[1, 2, 3, 4]);
        assert_eq!(c.config_read(0xFC), 0x0201_0000);
        // Unaligned offsets address their dword.
        assert_eq!(c.config_read(0x03), c.config_read(0x00));
        c.set_multi_function(true);
        assert_eq!(c.config_read(0x0C), 0x0080_0000);
    }
}
