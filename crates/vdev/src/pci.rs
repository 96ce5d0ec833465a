//! PCI configuration space as the guest reaches it through configuration
//! mechanism #1 (CONFIG_ADDRESS at port 0xCF8, CONFIG_DATA at 0xCFC..=0xCFF),
//! a table of functions keyed by bus/device/function, and the host bridge
//! every PC has at 00:00.0.
//!
//! Behaviour follows the PCI Local Bus Specification 3.0, 3.2.2.3.2:
//! - CONFIG_ADDRESS is a 32-bit register: only dword accesses at 0xCF8 reach
//!   it. Other widths there are ordinary I/O cycles that go nowhere (reads
//!   all ones), as on real chipsets; Linux's `pci_check_type1` byte write to
//!   0xCFB is one of those. Bits 30:24 (reserved) and 1:0 read as 0.
//! - CONFIG_DATA moves 1, 2 or 4 bytes at byte lane `port - 0xCFC` of the
//!   dword CONFIG_ADDRESS selects, when its enable bit (31) is set; an access
//!   that would run past 0xCFF goes nowhere. With the enable bit clear the
//!   data ports are ordinary I/O and read all ones.
//! - A function that does not exist reads all ones (vendor ID 0xFFFF, which
//!   is how the guest's scan knows) and ignores writes. Only bus 0 exists
//!   unless functions are added on other buses; there are no bridges.
//!
//! Devices are added as [`PciFunction`]s: anything that serves aligned dword
//! reads and byte-enabled dword writes. [`ConfigSpace`] (data plus write
//! masks, BAR sizing) is the usual implementation; a function can also
//! forward to an external device model. [`PciBus::config_read`] and
//! [`PciBus::config_write`] are the mechanism-independent entry points an
//! ECAM (MMCONFIG) window can share later.
//!
//! The host bridge ([`host_bridge`]) identifies as Intel 8086:29C0, the
//! 82G33/Q35 DRAM controller QEMU's q35 machine also shows, so Linux treats
//! it as a well-known, quirk-free host bridge; class 06/00/00, header type 0,
//! no BARs, no interrupt pin, no capabilities.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use crate::access::{all_ones, valid_size};
use crate::pci_config::{ConfigSpace, PciIds};

/// CONFIG_ADDRESS (32-bit).
pub const CONFIG_ADDRESS_PORT: u16 = 0xCF8;
/// CONFIG_DATA (byte lanes 0xCFC..=0xCFF).
pub const CONFIG_DATA_PORT: u16 = 0xCFC;
/// Configuration bytes per function an access may address (PCIe extended
/// space; mechanism #1 reaches the first 256).
pub const PCI_CONFIG_LIMIT: u16 = 4096;

const ADDRESS_ENABLE: u32 = 1 << 31;
/// CONFIG_ADDRESS bits that hold a value: enable, bus, device, function and
/// dword register number.
const ADDRESS_WRITABLE: u32 = 0x80FF_FFFC;

/// The host bridge's identity: Intel 82G33/Q35 DRAM controller, host bridge class.
pub const HOST_BRIDGE_IDS: PciIds = PciIds {
    vendor_id: 0x8086,
    device_id: 0x29C0,
    revision: 0,
    class: 0x06,
    subclass: 0x00,
    prog_if: 0x00,
    subsystem_vendor_id: 0,
    subsystem_id: 0,
};

/// The host bridge function for 00:00.0.
pub fn host_bridge() -> ConfigSpace {
    ConfigSpace::new(&HOST_BRIDGE_IDS)
}

/// A PCI function address: bus, device (0..32), function (0..8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf(u16);

impl Bdf {
    /// 00:00.0, where the host bridge lives.
    pub const HOST_BRIDGE: Bdf = Bdf(0);

    /// The address `bus:device.function`; None if device > 31 or function > 7.
    pub const fn new(bus: u8, device: u8, function: u8) -> Option<Bdf> {
        if device < 32 && function < 8 {
            Some(Bdf((bus as u16) << 8
                | (device as u16) << 3
                | function as u16))
        } else {
            None
        }
    }

    /// From the 16-bit routing ID (bus << 8 | device << 3 | function).
    pub const fn from_raw(raw: u16) -> Bdf {
        Bdf(raw)
    }

    /// The 16-bit routing ID.
    pub const fn raw(self) -> u16 {
        self.0
    }

    pub const fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }

    pub const fn device(self) -> u8 {
        ((self.0 >> 3) & 0x1F) as u8
    }

    pub const fn function(self) -> u8 {
        (self.0 & 7) as u8
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{}",
            self.bus(),
            self.device(),
            self.function()
        )
    }
}

/// One function's configuration space as the bus reaches it.
pub trait PciFunction {
    /// The dword at `offset` (a multiple of 4 below [`PCI_CONFIG_LIMIT`]).
    fn config_read(&mut self, offset: u16) -> u32;
    /// Writes the bytes of `value` selected by `byte_enables` (bit n: byte n)
    /// into the dword at `offset` (a multiple of 4 below [`PCI_CONFIG_LIMIT`]).
    fn config_write(&mut self, offset: u16, value: u32, byte_enables: u8);
}

impl<T: PciFunction + ?Sized> PciFunction for Box<T> {
    fn config_read(&mut self, offset: u16) -> u32 {
        (**self).config_read(offset)
    }

    fn config_write(&mut self, offset: u16, value: u32, byte_enables: u8) {
        (**self).config_write(offset, value, byte_enables)
    }
}

/// Why a function could not be added (a configuration error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// Another function already sits at this address.
    Duplicate { bdf: Bdf },
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PciError::Duplicate { bdf } => write!(f, "PCI function {bdf} is already present"),
        }
    }
}

/// What the configuration mechanism ignored, for the VM's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PciCounters {
    /// Accesses that reach no register: widths other than a dword at 0xCF8,
    /// data accesses past 0xCFF, impossible widths, undecoded ports.
    pub ignored_accesses: u64,
}

/// The configuration space of one VM's PCI hierarchy.
#[derive(Clone, Debug)]
pub struct PciBus<F> {
    address: u32,
    /// Sorted by address.
    functions: Vec<(Bdf, F)>,
    counters: PciCounters,
}

impl<F> Default for PciBus<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F> PciBus<F> {
    /// A bus with no functions (add the host bridge with [`PciBus::add`]).
    pub const fn new() -> Self {
        PciBus {
            address: 0,
            functions: Vec::new(),
            counters: PciCounters {
                ignored_accesses: 0,
            },
        }
    }

    /// Places `function` at `bdf`.
    pub fn add(&mut self, bdf: Bdf, function: F) -> Result<(), PciError> {
        match self.functions.binary_search_by_key(&bdf, |(b, _)| *b) {
            Ok(_) => Err(PciError::Duplicate { bdf }),
            Err(at) => {
                self.functions.insert(at, (bdf, function));
                Ok(())
            }
        }
    }

    /// The function at `bdf`.
    pub fn function(&self, bdf: Bdf) -> Option<&F> {
        let i = self.index(bdf)?;
        self.functions.get(i).map(|(_, f)| f)
    }

    /// The function at `bdf`, mutably (to read what the guest programmed).
    pub fn function_mut(&mut self, bdf: Bdf) -> Option<&mut F> {
        let i = self.index(bdf)?;
        self.functions.get_mut(i).map(|(_, f)| f)
    }

    /// The current CONFIG_ADDRESS value.
    pub fn config_address(&self) -> u32 {
        self.address
    }

    /// What was ignored so far.
    pub fn counters(&self) -> PciCounters {
        self.counters
    }

    fn index(&self, bdf: Bdf) -> Option<usize> {
        self.functions.binary_search_by_key(&bdf, |(b, _)| *b).ok()
    }

    fn ignore(&mut self) {
        self.counters.ignored_accesses = self.counters.ignored_accesses.saturating_add(1);
    }
}

/// Whether `size` bytes at `offset` stay inside one dword of config space.
fn config_access_ok(offset: u16, size: u8) -> bool {
    valid_size(size) && offset < PCI_CONFIG_LIMIT && (offset % 4) as u8 + size <= 4
}

impl<F: PciFunction> PciBus<F> {
    /// Reads `size` bytes at `offset` of `bdf`'s configuration space; all ones
    /// for a missing function or an access that is not within one dword.
    pub fn config_read(&mut self, bdf: Bdf, offset: u16, size: u8) -> u32 {
        if !config_access_ok(offset, size) {
            self.ignore();
            return all_ones(size);
        }
        let Some(i) = self.index(bdf) else {
            return all_ones(size);
        };
        let dword = self.functions[i].1.config_read(offset & !3);
        (dword >> (8 * u32::from(offset % 4))) & all_ones(size)
    }

    /// Writes `size` bytes of `value` at `offset` of `bdf`'s configuration
    /// space; ignored for a missing function or a bad access.
    pub fn config_write(&mut self, bdf: Bdf, offset: u16, size: u8, value: u32) {
        if !config_access_ok(offset, size) {
            self.ignore();
            return;
        }
        let Some(i) = self.index(bdf) else {
            return;
        };
        let lane = u32::from(offset % 4);
        let enables = (((1u16 << size) - 1) << lane) as u8;
        let shifted = (value & all_ones(size)) << (8 * lane);
        self.functions[i]
            .1
            .config_write(offset & !3, shifted, enables);
    }

    /// A guest read of `size` bytes at `port` (0xCF8..=0xCFF).
    pub fn read(&mut self, port: u16, size: u8) -> u32 {
        match self.data_target(port, size) {
            Target::Address => self.address,
            Target::Data { bdf, offset } => self.config_read(bdf, offset, size),
            Target::Disabled => all_ones(size),
            Target::Nowhere => {
                self.ignore();
                all_ones(size)
            }
        }
    }

    /// A guest write of `size` bytes at `port` (0xCF8..=0xCFF).
    pub fn write(&mut self, port: u16, size: u8, value: u32) {
        match self.data_target(port, size) {
            Target::Address => self.address = value & ADDRESS_WRITABLE,
            Target::Data { bdf, offset } => self.config_write(bdf, offset, size, value),
            Target::Disabled => {}
            Target::Nowhere => self.ignore(),
        }
    }

    fn data_target(&self, port: u16, size: u8) -> Target {
        if !valid_size(size) {
            return Target::Nowhere;
        }
        match port {
            CONFIG_ADDRESS_PORT if size == 4 => Target::Address,
            0xCFC..=0xCFF => {
                let lane = port - CONFIG_DATA_PORT;
                if lane + u16::from(size) > 4 {
                    Target::Nowhere
                } else if self.address & ADDRESS_ENABLE == 0 {
                    Target::Disabled
                } else {
                    Target::Data {
                        bdf: Bdf::from_raw((self.address >> 8) as u16),
                        offset: (self.address & 0xFC) as u16 + lane,
                    }
                }
            }
            _ => Target::Nowhere,
        }
    }
}

/// Where a mechanism #1 port access goes.
enum Target {
    Address,
    Data {
        bdf: Bdf,
        offset: u16,
    },
    /// CONFIG_DATA with the enable bit clear: an ordinary, unclaimed cycle.
    Disabled,
    Nowhere,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci_config::Bar;

    fn cf8(bus: u8, dev: u8, func: u8, reg: u8) -> u32 {
        0x8000_0000
            | u32::from(bus) << 16
            | u32::from(dev) << 11
            | u32::from(func) << 8
            | u32::from(reg)
    }

    fn bus_with_host_bridge() -> PciBus<ConfigSpace> {
        let mut bus = PciBus::new();
        bus.add(Bdf::HOST_BRIDGE, host_bridge()).unwrap();
        bus
    }

    fn read_dword(bus: &mut PciBus<ConfigSpace>, addr: u32) -> u32 {
        bus.write(0xCF8, 4, addr);
        bus.read(0xCFC, 4)
    }

    #[test]
    fn bdf_encoding_and_display() {
        let b = Bdf::new(1, 31, 7).unwrap();
        assert_eq!((b.bus(), b.device(), b.function()), (1, 31, 7));
        assert_eq!(b.raw(), 0x01FF);
        assert_eq!(alloc::format!("{b}"), "01:1f.7");
        assert_eq!(Bdf::new(0, 32, 0), None);
        assert_eq!(Bdf::new(0, 0, 8), None);
        assert_eq!(Bdf::from_raw(0x0010), Bdf::new(0, 2, 0).unwrap());
    }

    #[test]
    fn host_bridge_identifies_itself() {
        let mut bus = bus_with_host_bridge();
        assert_eq!(read_dword(&mut bus, cf8(0, 0, 0, 0x00)), 0x29C0_8086);
        assert_eq!(read_dword(&mut bus, cf8(0, 0, 0, 0x08)), 0x0600_0000);
        assert_eq!(
            read_dword(&mut bus, cf8(0, 0, 0, 0x0C)) & 0x00FF_0000,
            0,
            "header type 0"
        );
        for reg in (0x10..=0x24).step_by(4) {
            assert_eq!(
                read_dword(&mut bus, cf8(0, 0, 0, reg)),
                0,
                "no BAR at {reg:#x}"
            );
            bus.write(0xCFC, 4, 0xFFFF_FFFF);
            assert_eq!(bus.read(0xCFC, 4), 0, "BAR {reg:#x} sizes to nothing");
        }
        assert_eq!(
            read_dword(&mut bus, cf8(0, 0, 0, 0x34)),
            0,
            "no capabilities"
        );
    }

    #[test]
    fn absent_functions_read_all_ones() {
        let mut bus = bus_with_host_bridge();
        for (b, d, f) in [(0, 0, 1), (0, 1, 0), (0, 31, 7), (1, 0, 0), (255, 0, 0)] {
            assert_eq!(read_dword(&mut bus, cf8(b, d, f, 0)), 0xFFFF_FFFF);
            bus.write(0xCFC, 4, 0);
        }
        bus.write(0xCF8, 4, cf8(0, 5, 0, 0));
        assert_eq!(bus.read(0xCFC, 2), 0xFFFF, "vendor 0xFFFF");
        assert_eq!(bus.read(0xCFE, 1), 0xFF);
        assert_eq!(bus.counters(), PciCounters::default());
    }

    #[test]
    fn byte_and_word_lanes() {
        let mut bus = bus_with_host_bridge();
        bus.write(0xCF8, 4, cf8(0, 0, 0, 0x00));
        assert_eq!(bus.read(0xCFC, 2), 0x8086);
        assert_eq!(bus.read(0xCFE, 2), 0x29C0);
        assert_eq!(bus.read(0xCFD, 1), 0x80);
        assert_eq!(bus.read(0xCFF, 1), 0x29);
        // Command register: word write at 0xCFC, byte write at 0xCFD.
        bus.write(0xCF8, 4, cf8(0, 0, 0, 0x04));
        bus.write(0xCFC, 2, 0xFFFF);
        assert_eq!(bus.read(0xCFC, 2), 0x0547);
        bus.write(0xCFD, 1, 0x00);
        assert_eq!(bus.read(0xCFC, 2), 0x0047);
        // Read-only identity ignores writes.
        bus.write(0xCF8, 4, cf8(0, 0, 0, 0x00));
        bus.write(0xCFC, 4, 0x1234_5678);
        assert_eq!(bus.read(0xCFC, 4), 0x29C0_8086);
    }

    #[test]
    fn config_address_register_rules() {
        let mut bus = bus_with_host_bridge();
        bus.write(0xCF8, 4, 0xFFFF_FFFF);
        assert_eq!(bus.read(0xCF8, 4), 0x80FF_FFFC, "reserved bits read 0");
        // Linux's pci_check_type1: a byte write to 0xCFB goes nowhere.
        bus.write(0xCFB, 1, 0x01);
        bus.write(0xCF8, 4, 0x8000_0000);
        assert_eq!(bus.read(0xCF8, 4), 0x8000_0000);
        for (port, size) in [
            (0xCF8u16, 1u8),
            (0xCF8, 2),
            (0xCF9, 1),
            (0xCFA, 2),
            (0xCFB, 1),
        ] {
            assert_eq!(bus.read(port, size), all_ones(size));
            bus.write(port, size, 0);
        }
        assert_eq!(
            bus.read(0xCF8, 4),
            0x8000_0000,
            "unchanged by narrow writes"
        );
        assert_eq!(bus.counters().ignored_accesses, 11);
        // Enable bit clear: the data port is an unclaimed I/O port.
        bus.write(0xCF8, 4, 0);
        assert_eq!(bus.read(0xCFC, 4), 0xFFFF_FFFF);
    }

    #[test]
    fn bar_sizing_through_the_ports() {
        let mut bus = bus_with_host_bridge();
        let mut nic = ConfigSpace::new(&PciIds {
            vendor_id: 0x1AF4,
            device_id: 0x1041,
            revision: 1,
            class: 0x02,
            subclass: 0,
            prog_if: 0,
            subsystem_vendor_id: 0x1AF4,
            subsystem_id: 0x1100,
        });
        nic.set_bar(
            0,
            Bar::Memory32 {
                size: 0x4000,
                prefetchable: false,
            },
        )
        .unwrap();
        nic.set_bar(1, Bar::Io { size: 0x40 }).unwrap();
        let dev3 = Bdf::new(0, 3, 0).unwrap();
        bus.add(dev3, nic).unwrap();
        assert_eq!(
            bus.add(dev3, host_bridge()),
            Err(PciError::Duplicate { bdf: dev3 })
        );
        // Linux's __pci_read_base: save, write ~0, read, restore.
        bus.write(0xCF8, 4, cf8(0, 3, 0, 0x10));
        let saved = bus.read(0xCFC, 4);
        bus.write(0xCFC, 4, 0xFFFF_FFFF);
        assert_eq!(bus.read(0xCFC, 4), 0xFFFF_C000);
        bus.write(0xCFC, 4, 0xFEB0_0000);
        assert_eq!(bus.read(0xCFC, 4), 0xFEB0_0000);
        assert_ne!(saved, 0xFFFF_C000);
        bus.write(0xCF8, 4, cf8(0, 3, 0, 0x14));
        bus.write(0xCFC, 4, 0xFFFF_FFFF);
        assert_eq!(bus.read(0xCFC, 4), 0xFFFF_FFC1);
        bus.write(0xCFC, 4, 0xC040);
        bus.write(0xCF8, 4, cf8(0, 3, 0, 0x04));
        bus.write(0xCFC, 2, 0x0003);
        let nic = bus.function_mut(dev3).unwrap();
        assert_eq!(nic.bar_address(0), Some(0xFEB0_0000));
        assert_eq!(nic.bar_address(1), Some(0xC040));
        assert_eq!(nic.command(), 3);
        assert!(bus.function(Bdf::new(0, 4, 0).unwrap()).is_none());
    }

    #[test]
    fn trait_objects_can_share_a_bus() {
        struct Echo(u32);
        impl PciFunction for Echo {
            fn config_read(&mut self, offset: u16) -> u32 {
                self.0 ^ u32::from(offset)
            }
            fn config_write(&mut self, _offset: u16, value: u32, byte_enables: u8) {
                self.0 = value ^ u32::from(byte_enables);
            }
        }
        let mut bus: PciBus<Box<dyn PciFunction>> = PciBus::new();
        bus.add(Bdf::HOST_BRIDGE, Box::new(host_bridge())).unwrap();
        bus.add(Bdf::new(0, 1, 0).unwrap(), Box::new(Echo(0)))
            .unwrap();
        assert_eq!(bus.config_read(Bdf::HOST_BRIDGE, 0, 4), 0x29C0_8086);
        bus.config_write(Bdf::new(0, 1, 0).unwrap(), 0x41, 1, 0xAB);
        // Byte lane 1 of dword 0x40, byte enable 0b0010.
        assert_eq!(
            bus.config_read(Bdf::new(0, 1, 0).unwrap(), 0x40, 4),
            (0xAB00 ^ 0b0010) ^ 0x40
        );
    }

    #[test]
    fn hostile_ports_sizes_and_offsets_never_panic() {
        let mut bus = bus_with_host_bridge();
        for addr in [
            0u32,
            0x8000_0000,
            0xFFFF_FFFF,
            0x8000_00FF,
            0x80FF_FF00,
            0x7FFF_FFFF,
        ] {
            bus.write(0xCF8, 4, addr);
            for port in [
                0xCF7u16, 0xCF8, 0xCFC, 0xCFD, 0xCFE, 0xCFF, 0xD00, 0, 0xFFFF,
            ] {
                for size in [0u8, 1, 2, 3, 4, 8, 255] {
                    let _ = bus.read(port, size);
                    bus.write(port, size, 0xFFFF_FFFF);
                }
            }
        }
        // Wide accesses that would run past 0xCFF go nowhere.
        bus.write(0xCF8, 4, cf8(0, 0, 0, 0));
        assert_eq!(bus.read(0xCFD, 4), 0xFFFF_FFFF);
        assert_eq!(bus.read(0xCFE, 4), 0xFFFF_FFFF);
        assert_eq!(bus.read(0xCFF, 2), 0xFFFF);
        // Direct accesses crossing a dword or past the limit.
        for (off, size) in [
            (0x3u16, 2u8),
            (0x2, 4),
            (0xFFE, 4),
            (0x1000, 1),
            (0xFFFF, 4),
            (0, 3),
            (0, 0),
        ] {
            assert_eq!(bus.config_read(Bdf::HOST_BRIDGE, off, size), all_ones(size));
            bus.config_write(Bdf::HOST_BRIDGE, off, size, 0);
        }
        assert_eq!(
            bus.config_read(Bdf::HOST_BRIDGE, 0xFFC, 4),
            0,
            "extended space reads 0"
        );
        assert_eq!(bus.config_read(Bdf::HOST_BRIDGE, 0, 4), 0x29C0_8086);
    }
}
