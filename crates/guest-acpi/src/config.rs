//! What a VM's ACPI tables describe, and the checks that the description is
//! one Linux can use.

use core::fmt;

/// Local APIC register base every vCPU sees.
pub const LOCAL_APIC_ADDR: u32 = 0xFEE0_0000;
/// The VM's I/O APIC register base (GSIs 0..23).
pub const IOAPIC_ADDR: u32 = 0xFEC0_0000;
/// Most vCPUs: xAPIC IDs run 0..=0xFE (0xFF is the broadcast ID), and the
/// I/O APIC takes the ID after the last vCPU's.
pub const MAX_VCPUS: u8 = 254;
/// Default PM1a event block (PM1_STS at +0, PM1_EN at +2).
pub const DEFAULT_PM1A_EVT: u16 = 0x600;
/// Default PM1a control block.
pub const DEFAULT_PM1A_CNT: u16 = 0x604;
/// Suggested PM timer port, for a VM that emulates one (none by default).
pub const DEFAULT_PM_TMR: u16 = 0x608;
/// Default SCI: ISA IRQ 9, as on PC chipsets.
pub const DEFAULT_SCI_IRQ: u8 = 9;
/// Default SLP_TYP value for S5 (soft off).
pub const DEFAULT_S5_SLP_TYP: u8 = 5;
/// Bytes of the PM1 event block: two 16-bit registers.
pub const PM1_EVT_LEN: u8 = 4;
/// Bytes of the PM1 control block: one 16-bit register.
pub const PM1_CNT_LEN: u8 = 2;
/// Bytes of the PM timer block: one 32-bit register (24 bits counting).
pub const PM_TMR_LEN: u8 = 4;
/// The reset register: the PC chipsets' reset control port.
pub const RESET_PORT: u16 = 0xCF9;
/// Value written to [`RESET_PORT`] to reset (hard reset + reset CPU).
pub const RESET_VALUE: u8 = 0x06;
/// The PCI configuration mechanism #1 ports, which hold [`RESET_PORT`]: no
/// PM block may overlap them.
pub(crate) const PCI_CONFIG_PORTS: (u16, u16) = (0xCF8, 0xD00);
/// ECAM bytes per PCI bus: 32 devices x 8 functions x 4 KiB.
pub const ECAM_BUS_SIZE: u64 = 1 << 20;
/// Pins of the VM's I/O APIC: GSIs 0..24.
pub const IOAPIC_PINS: u32 = 24;
/// GSIs 0..16 belong to the ISA IRQs (the PIT, the SCI, the RTC...).
pub const ISA_GSIS: u32 = 16;
/// INTx pins per PCI function: INTA..INTD.
pub const INTX_PINS: u32 = 4;
/// The layout the hypervisor gives its PCI segment: ECAM for bus 0 at
/// 0xE000_0000, 512 MiB of 32-bit BAR space from 0xC000_0000, I/O BARs in
/// 0xC000..0x10000, INTx on GSIs 16..=19.
pub const DEFAULT_PCI_HOST: PciHost = PciHost {
    ecam_base: 0xE000_0000,
    bus_end: 0,
    mmio_window: (0xC000_0000, 0x2000_0000),
    io_window: (0xC000, 0x4000),
    intx_gsi_base: 16,
};
/// The 4 GiB limit of 32-bit addresses.
const FOUR_GIB: u64 = 1 << 32;
/// The legacy PC area below 1 MiB (RAM, VGA hole, BIOS area with the ACPI
/// tables): no PCI window may reach into it.
const LOW_MEMORY: (u64, u64) = (0, 0x10_0000);
/// Bytes of the I/O APIC's and the local APIC's register pages.
const APIC_PAGE: u64 = 0x1000;

/// One PCI segment (segment group 0) behind a host bridge at bus 0, the way
/// the DSDT's `\_SB_.PCI0` and the MCFG describe it.
///
/// The hypervisor's PCI segment must implement exactly this:
/// - ECAM (PCI Express enhanced configuration access) at `ecam_base`:
///   bus `b`, device `d`, function `f`, register `r` at
///   `ecam_base + (b << 20 | d << 15 | f << 12 | r)`, for buses
///   `0..=bus_end`; the window is [`PciHost::ecam_len`] bytes. The legacy
///   ports 0xCF8/0xCFC reach the same configuration space.
/// - 32-bit non-prefetchable memory BARs inside `mmio_window`, I/O BARs
///   inside `io_window` (both `(base, length)`); the host bridge's `_CRS`
///   forwards the whole MMIO window and every I/O port but the
///   configuration ports 0xCF8..=0xCFF.
/// - INTx routing (the `_PRT`): device `s` (0..32) on bus 0, pin `p`
///   (0 = INTA .. 3 = INTD) raises GSI `intx_gsi_base + (s + p) % 4`
///   ([`PciHost::intx_gsi`]), on the I/O APIC, level triggered and active
///   low (what the `_PRT`'s GSI form means). Device 0 is the host bridge,
///   which has no interrupt pin and no `_PRT` entry.
///
/// ```
/// use guest_acpi::{PciHost, DEFAULT_PCI_HOST};
/// let pci: PciHost = DEFAULT_PCI_HOST;
/// assert_eq!(pci.ecam_len(), 1 << 20);
/// assert_eq!(pci.intx_gsi(1, 0), 17); // device 1, INTA
/// assert_eq!(pci.intx_gsi(3, 2), 17); // device 3, INTC
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciHost {
    /// ECAM base: 1 MiB aligned; the window ends at or below 4 GiB.
    pub ecam_base: u64,
    /// Last bus number: buses `0..=bus_end` (segment 0, starting at bus 0).
    pub bus_end: u8,
    /// (base, length) of the 32-bit non-prefetchable BAR window.
    pub mmio_window: (u32, u32),
    /// (base, length) of the I/O BAR window.
    pub io_window: (u16, u16),
    /// GSI of INTA on device 0; the four INTx GSIs
    /// `intx_gsi_base..intx_gsi_base + 4` lie within 16..24.
    pub intx_gsi_base: u32,
}

impl PciHost {
    /// Bytes of the ECAM window: 1 MiB per bus.
    pub const fn ecam_len(&self) -> u64 {
        (self.bus_end as u64 + 1) * ECAM_BUS_SIZE
    }

    /// The GSI that pin `pin` (0 = INTA .. 3 = INTD) of device `slot`
    /// (0..32) raises: `intx_gsi_base + (slot + pin) % 4`.
    pub const fn intx_gsi(&self, slot: u8, pin: u8) -> u32 {
        self.intx_gsi_base + (slot as u32 + pin as u32) % INTX_PINS
    }

    /// Checks the segment on its own and against the APIC pages, the low
    /// MiB and `ports` (the VM's other port blocks: name, base, length).
    fn check(&self, ioapic: bool, ports: &[(&'static str, u16, u32)]) -> Result<(), ConfigError> {
        if self.ecam_base % ECAM_BUS_SIZE != 0 {
            return Err(ConfigError::EcamMisaligned {
                base: self.ecam_base,
            });
        }
        let ecam = (
            "ECAM",
            self.ecam_base,
            self.ecam_base.saturating_add(self.ecam_len()),
        );
        let (mmio_base, mmio_len) = self.mmio_window;
        let mmio_base = u64::from(mmio_base);
        let mmio = ("PCI MMIO", mmio_base, mmio_base + u64::from(mmio_len));
        if mmio_len == 0 {
            return Err(ConfigError::EmptyWindow { window: mmio.0 });
        }
        if self.io_window.1 == 0 {
            return Err(ConfigError::EmptyWindow {
                window: PCI_IO_WINDOW,
            });
        }
        for (window, base, end) in [ecam, mmio] {
            if end > FOUR_GIB {
                return Err(ConfigError::WindowAbove4GiB { window, base, end });
            }
        }
        let ioapic_page = u64::from(IOAPIC_ADDR);
        let lapic_page = u64::from(LOCAL_APIC_ADDR);
        let fixed = [
            ("I/O APIC", ioapic_page, ioapic_page + APIC_PAGE),
            ("local APIC", lapic_page, lapic_page + APIC_PAGE),
            ("first MiB", LOW_MEMORY.0, LOW_MEMORY.1),
            mmio,
        ];
        for (window, base, end) in [ecam, mmio] {
            for &(other, o_base, o_end) in &fixed {
                if other != window && base < o_end && o_base < end {
                    return Err(ConfigError::MemoryOverlap {
                        window,
                        base,
                        end,
                        other,
                    });
                }
            }
        }
        let (io_base, io_len) = self.io_window;
        let io_end = u32::from(io_base) + u32::from(io_len);
        if io_end > 0x1_0000 {
            return Err(ConfigError::PortsWrap {
                block: PCI_IO_WINDOW,
                port: io_base,
            });
        }
        for &(block, port, len) in ports {
            if u32::from(port) < io_end && u32::from(io_base) < u32::from(port) + len {
                return Err(ConfigError::PortsOverlap {
                    first: block,
                    second: PCI_IO_WINDOW,
                });
            }
        }
        if !ioapic {
            return Err(ConfigError::PciWithoutIoapic);
        }
        let base = self.intx_gsi_base;
        if !(ISA_GSIS..=IOAPIC_PINS - INTX_PINS).contains(&base) {
            return Err(ConfigError::IntxGsis { base });
        }
        Ok(())
    }
}

/// Name of the PCI I/O window in errors.
const PCI_IO_WINDOW: &str = "PCI I/O";

/// The VM the tables describe.
///
/// The hypervisor's devices must match it:
/// - vCPU `i` has local APIC ID `i` (ACPI processor UID `i`); the local APIC
///   is at [`LOCAL_APIC_ADDR`], its LINT1 is wired to NMI.
/// - With `ioapic`, one I/O APIC with ID `vcpus` at [`IOAPIC_ADDR`] serving
///   GSIs from 0, ISA IRQ 0 (the PIT) arriving on GSI 2, every other ISA IRQ
///   on the GSI of its number; the SCI is level-triggered, active high. Dual
///   8259 PICs are present either way (MADT PCAT_COMPAT).
/// - PM1a event block at `pm1a_evt` (4 bytes: PM1_STS, write 1 to clear,
///   then PM1_EN), PM1a control block at `pm1a_cnt` (2 bytes). There is no
///   SMI command port, so the VM is always in ACPI mode: PM1_CNT.SCI_EN
///   (bit 0) must read 1. A write to PM1_CNT with SLP_EN (bit 13) set and
///   SLP_TYP (bits 12:10) equal to `s5_slp_typ` powers the VM off.
/// - A byte write of [`RESET_VALUE`] to port [`RESET_PORT`] resets the VM.
/// - The SCI is ISA IRQ `sci_irq` (GSI `sci_irq` with the I/O APIC).
/// - With `pm_tmr`, a 24-bit ACPI PM timer (3.579545 MHz) at that port;
///   without, Linux uses other clock sources.
/// - No i8042 keyboard controller (Linux then does not probe ports 0x60/0x64),
///   no VGA; a CMOS RTC at 0x70/0x71 if `cmos_rtc`.
/// - With `pci`, a PCI segment as [`PciHost`] describes: configuration
///   space through ECAM and ports 0xCF8/0xCFC, INTx on I/O APIC GSIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// vCPUs, 1..=[`MAX_VCPUS`].
    pub vcpus: u8,
    /// The VM has an I/O APIC.
    pub ioapic: bool,
    /// PM1a event block port (2-byte aligned, not 0).
    pub pm1a_evt: u16,
    /// PM1a control block port (2-byte aligned, not 0).
    pub pm1a_cnt: u16,
    /// PM timer port (4-byte aligned, not 0), if the VM has one.
    pub pm_tmr: Option<u16>,
    /// ISA IRQ of the SCI (1, 3..=15: not the timer, not the cascade).
    pub sci_irq: u8,
    /// SLP_TYP value the DSDT's `\_S5_` gives for soft off (0..=7).
    pub s5_slp_typ: u8,
    /// The VM has a CMOS RTC at ports 0x70/0x71.
    pub cmos_rtc: bool,
    /// A PCI segment: the MCFG, and in the DSDT a PCI Express host bridge
    /// (`\_SB_.PCI0`, PNP0A08) with its resources and INTx routing, and a
    /// motherboard resource (`\_SB_.MRES`, PNP0C02) reserving the ECAM
    /// window. Needs `ioapic`. Without it Linux still scans PCI bus 0
    /// through 0xCF8 if the ports answer, with no interrupt routing.
    pub pci: Option<PciHost>,
}

impl AcpiConfig {
    /// `vcpus` vCPUs with the defaults: I/O APIC, PM1a blocks at 0x600 and
    /// 0x604, no PM timer, SCI on IRQ 9, S5 SLP_TYP 5, a CMOS RTC, no PCI
    /// segment.
    pub const fn new(vcpus: u8) -> Self {
        AcpiConfig {
            vcpus,
            ioapic: true,
            pm1a_evt: DEFAULT_PM1A_EVT,
            pm1a_cnt: DEFAULT_PM1A_CNT,
            pm_tmr: None,
            sci_irq: DEFAULT_SCI_IRQ,
            s5_slp_typ: DEFAULT_S5_SLP_TYP,
            cmos_rtc: true,
            pci: None,
        }
    }

    /// The I/O APIC's ID: the one after the last vCPU's APIC ID.
    pub fn ioapic_id(&self) -> u8 {
        self.vcpus
    }

    /// Checks everything [`crate::build`] relies on.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::VcpuCount {
                vcpus: self.vcpus,
                max: MAX_VCPUS,
            });
        }
        if !(1..16).contains(&self.sci_irq) || self.sci_irq == 2 {
            return Err(ConfigError::SciIrq { irq: self.sci_irq });
        }
        if self.s5_slp_typ > 7 {
            return Err(ConfigError::SlpTyp {
                value: self.s5_slp_typ,
            });
        }
        let mut blocks = [("PM1a event", self.pm1a_evt, PM1_EVT_LEN, 2); 3];
        blocks[1] = ("PM1a control", self.pm1a_cnt, PM1_CNT_LEN, 2);
        let count = match self.pm_tmr {
            Some(port) => {
                blocks[2] = ("PM timer", port, PM_TMR_LEN, 4);
                3
            }
            None => 2,
        };
        let blocks = &blocks[..count];
        for &(block, port, len, align) in blocks {
            if port == 0 || port % align != 0 {
                return Err(ConfigError::BadPort { block, port, align });
            }
            let end = u32::from(port) + u32::from(len);
            if end > 0x1_0000 {
                return Err(ConfigError::PortsWrap { block, port });
            }
            let (pci_start, pci_end) = PCI_CONFIG_PORTS;
            if u32::from(port) < u32::from(pci_end) && u32::from(pci_start) < end {
                return Err(ConfigError::PortsOverlap {
                    first: block,
                    second: PCI_CONFIG,
                });
            }
        }
        if let Some(pci) = &self.pci {
            let mut ports = [("", 0, 0); 4];
            for (slot, &(block, port, len, _)) in ports.iter_mut().zip(blocks) {
                *slot = (block, port, u32::from(len));
            }
            let (cfg_start, cfg_end) = PCI_CONFIG_PORTS;
            ports[count] = (PCI_CONFIG, cfg_start, u32::from(cfg_end - cfg_start));
            pci.check(self.ioapic, &ports[..=count])?;
        }
        for (i, a) in blocks.iter().enumerate() {
            for b in &blocks[i + 1..] {
                let (a_end, b_end) = (
                    u32::from(a.1) + u32::from(a.2),
                    u32::from(b.1) + u32::from(b.2),
                );
                if u32::from(a.1) < b_end && u32::from(b.1) < a_end {
                    return Err(ConfigError::PortsOverlap {
                        first: a.0,
                        second: b.0,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Name of the PCI configuration ports in errors.
const PCI_CONFIG: &str = "PCI configuration / reset";

/// Why an [`AcpiConfig`] describes no usable VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// No vCPU, or more than xAPIC IDs allow.
    VcpuCount { vcpus: u8, max: u8 },
    /// The SCI is not an ISA IRQ a device can use (0 is the timer, 2 the
    /// cascade).
    SciIrq { irq: u8 },
    /// SLP_TYP is a 3-bit field.
    SlpTyp { value: u8 },
    /// A port block at 0 (which the FADT reads as "absent") or misaligned.
    BadPort {
        block: &'static str,
        port: u16,
        align: u16,
    },
    /// A port block runs past port 0xFFFF.
    PortsWrap { block: &'static str, port: u16 },
    /// Two port blocks share ports.
    PortsOverlap {
        first: &'static str,
        second: &'static str,
    },
    /// The ECAM base is not 1 MiB aligned.
    EcamMisaligned { base: u64 },
    /// The PCI MMIO or I/O window has length 0.
    EmptyWindow { window: &'static str },
    /// A PCI memory window (ECAM or MMIO) ends above 4 GiB.
    WindowAbove4GiB {
        window: &'static str,
        base: u64,
        end: u64,
    },
    /// A PCI memory window `base..end` overlaps another range.
    MemoryOverlap {
        window: &'static str,
        base: u64,
        end: u64,
        other: &'static str,
    },
    /// INTx GSIs `base..base + 4` are not all I/O APIC pins above the ISA
    /// IRQs (16..24).
    IntxGsis { base: u32 },
    /// A PCI segment routes INTx to I/O APIC GSIs: it needs the I/O APIC.
    PciWithoutIoapic,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfigError::VcpuCount { vcpus, max } => {
                write!(f, "{vcpus} vCPUs: the ACPI tables describe 1 to {max}")
            }
            ConfigError::SciIrq { irq } => write!(
                f,
                "SCI on IRQ {irq}: it must be an ISA IRQ from 1 to 15 other than 2"
            ),
            ConfigError::SlpTyp { value } => {
                write!(f, "S5 SLP_TYP {value} does not fit the 3-bit field")
            }
            ConfigError::BadPort { block, port, align } => write!(
                f,
                "{block} block at port {port:#x}: it must be non-zero and {align}-byte aligned"
            ),
            ConfigError::PortsWrap { block, port } => {
                write!(f, "{block} block at port {port:#x} runs past port 0xffff")
            }
            ConfigError::PortsOverlap { first, second } => {
                write!(f, "the {first} and {second} port blocks overlap")
            }
            ConfigError::EcamMisaligned { base } => {
                write!(f, "ECAM at {base:#x}: it must be 1 MiB aligned")
            }
            ConfigError::EmptyWindow { window } => write!(f, "the {window} window is empty"),
            ConfigError::WindowAbove4GiB { window, base, end } => write!(
                f,
                "the {window} window {base:#x}..{end:#x} must end at or below 4 GiB"
            ),
            ConfigError::MemoryOverlap {
                window,
                base,
                end,
                other,
            } => write!(
                f,
                "the {window} window {base:#x}..{end:#x} overlaps the {other}"
            ),
            ConfigError::IntxGsis { base } => write!(
                f,
                "PCI INTx on GSIs {base}..={}: they must lie in {ISA_GSIS}..{IOAPIC_PINS}, \
                 I/O APIC pins above the ISA IRQs",
                base.saturating_add(INTX_PINS - 1)
            ),
            ConfigError::PciWithoutIoapic => {
                write!(f, "a PCI segment needs the I/O APIC for its INTx GSIs")
            }
        }
    }
}

impl core::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn defaults_are_valid() {
        for vcpus in [1, 2, 8, MAX_VCPUS] {
            AcpiConfig::new(vcpus).check().unwrap();
        }
        let mut c = AcpiConfig::new(2);
        c.pm_tmr = Some(DEFAULT_PM_TMR);
        c.check().unwrap();
        assert_eq!(c.ioapic_id(), 2);
    }

    #[test]
    fn bad_configs_are_named() {
        let ok = AcpiConfig::new(2);
        let with = |f: fn(&mut AcpiConfig)| {
            let mut c = ok;
            f(&mut c);
            c.check()
        };
        assert_eq!(
            with(|c| c.vcpus = 0),
            Err(ConfigError::VcpuCount { vcpus: 0, max: 254 })
        );
        assert_eq!(
            with(|c| c.vcpus = 255),
            Err(ConfigError::VcpuCount {
                vcpus: 255,
                max: 254
            })
        );
        for irq in [0, 2, 16, 200] {
            let mut c = ok;
            c.sci_irq = irq;
            assert_eq!(c.check(), Err(ConfigError::SciIrq { irq }));
        }
        assert_eq!(
            with(|c| c.s5_slp_typ = 8),
            Err(ConfigError::SlpTyp { value: 8 })
        );
        assert_eq!(
            with(|c| c.pm1a_evt = 0),
            Err(ConfigError::BadPort {
                block: "PM1a event",
                port: 0,
                align: 2
            })
        );
        assert_eq!(
            with(|c| c.pm1a_cnt = 0x605),
            Err(ConfigError::BadPort {
                block: "PM1a control",
                port: 0x605,
                align: 2
            })
        );
        assert_eq!(
            with(|c| c.pm_tmr = Some(0x60A)),
            Err(ConfigError::BadPort {
                block: "PM timer",
                port: 0x60A,
                align: 4
            })
        );
        assert_eq!(
            with(|c| c.pm1a_evt = 0xFFFE),
            Err(ConfigError::PortsWrap {
                block: "PM1a event",
                port: 0xFFFE
            })
        );
        assert_eq!(
            with(|c| c.pm1a_cnt = 0x602),
            Err(ConfigError::PortsOverlap {
                first: "PM1a event",
                second: "PM1a control"
            })
        );
        assert_eq!(
            with(|c| c.pm_tmr = Some(0x604)),
            Err(ConfigError::PortsOverlap {
                first: "PM1a control",
                second: "PM timer"
            })
        );
        let err = with(|c| c.pm1a_cnt = 0xCFA).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the PM1a control and PCI configuration / reset port blocks overlap"
        );
    }

    #[test]
    fn pci_host_layout() {
        let mut c = AcpiConfig::new(2);
        c.pci = Some(DEFAULT_PCI_HOST);
        c.check().unwrap();
        c.pm_tmr = Some(DEFAULT_PM_TMR);
        c.check().unwrap();
        let pci = DEFAULT_PCI_HOST;
        assert_eq!(pci.ecam_len(), 0x10_0000);
        // The rule, for every device and pin.
        for slot in 0..32u8 {
            for pin in 0..4u8 {
                let gsi = pci.intx_gsi(slot, pin);
                assert_eq!(gsi, 16 + (u32::from(slot) + u32::from(pin)) % 4);
            }
        }
        assert_eq!(
            [pci.intx_gsi(0, 0), pci.intx_gsi(1, 3), pci.intx_gsi(31, 1)],
            [16, 16, 16]
        );
        let all = PciHost {
            ecam_base: 0xF000_0000,
            bus_end: 0xEB, // ends right below the I/O APIC
            mmio_window: (0x8000_0000, 0x7000_0000),
            io_window: (0x1000, 0xF000),
            intx_gsi_base: 20,
        };
        assert_eq!(all.ecam_len(), 0xEC0_0000);
        c.pci = Some(all);
        c.check().unwrap();
    }

    #[test]
    fn bad_pci_configs_are_named() {
        let mut ok = AcpiConfig::new(2);
        ok.pci = Some(DEFAULT_PCI_HOST);
        ok.pm_tmr = Some(DEFAULT_PM_TMR);
        let with = |f: fn(&mut PciHost)| {
            let mut c = ok;
            f(c.pci.as_mut().unwrap());
            c.check()
        };
        assert_eq!(
            with(|p| p.ecam_base = 0xE008_0000),
            Err(ConfigError::EcamMisaligned { base: 0xE008_0000 })
        );
        assert_eq!(
            with(|p| p.ecam_base = 0x1_0000_0000),
            Err(ConfigError::WindowAbove4GiB {
                window: "ECAM",
                base: 0x1_0000_0000,
                end: 0x1_0010_0000
            })
        );
        assert_eq!(
            with(|p| {
                p.ecam_base = 0xF800_0000;
                p.bus_end = 0xFF;
            }),
            Err(ConfigError::WindowAbove4GiB {
                window: "ECAM",
                base: 0xF800_0000,
                end: 0x1_0800_0000
            })
        );
        assert_eq!(
            with(|p| {
                p.ecam_base = 0xF000_0000;
                p.bus_end = 0xFF; // ends at 4 GiB, over both APICs
            }),
            Err(ConfigError::MemoryOverlap {
                window: "ECAM",
                base: 0xF000_0000,
                end: 0x1_0000_0000,
                other: "I/O APIC"
            })
        );
        assert_eq!(
            with(|p| p.ecam_base = 0xFEE0_0000),
            Err(ConfigError::MemoryOverlap {
                window: "ECAM",
                base: 0xFEE0_0000,
                end: 0xFEF0_0000,
                other: "local APIC"
            })
        );
        assert_eq!(
            with(|p| p.ecam_base = 0),
            Err(ConfigError::MemoryOverlap {
                window: "ECAM",
                base: 0,
                end: 0x10_0000,
                other: "first MiB"
            })
        );
        assert_eq!(
            with(|p| p.ecam_base = 0xC010_0000),
            Err(ConfigError::MemoryOverlap {
                window: "ECAM",
                base: 0xC010_0000,
                end: 0xC020_0000,
                other: "PCI MMIO"
            })
        );
        assert_eq!(
            with(|p| p.mmio_window = (0xF000_0000, 0x1000_0000)),
            Err(ConfigError::MemoryOverlap {
                window: "PCI MMIO",
                base: 0xF000_0000,
                end: 0x1_0000_0000,
                other: "I/O APIC"
            })
        );
        assert_eq!(
            with(|p| p.mmio_window = (0xF000_0000, 0x2000_0000)),
            Err(ConfigError::WindowAbove4GiB {
                window: "PCI MMIO",
                base: 0xF000_0000,
                end: 0x1_1000_0000
            })
        );
        assert_eq!(
            with(|p| p.mmio_window = (0xC000_0000, 0)),
            Err(ConfigError::EmptyWindow { window: "PCI MMIO" })
        );
        assert_eq!(
            with(|p| p.io_window = (0xC000, 0)),
            Err(ConfigError::EmptyWindow { window: "PCI I/O" })
        );
        assert_eq!(
            with(|p| p.io_window = (0xC000, 0x4001)),
            Err(ConfigError::PortsWrap {
                block: "PCI I/O",
                port: 0xC000
            })
        );
        assert_eq!(
            with(|p| p.io_window = (0xC00, 0x100)),
            Err(ConfigError::PortsOverlap {
                first: "PCI configuration / reset",
                second: "PCI I/O"
            })
        );
        assert_eq!(
            with(|p| p.io_window = (0x400, 0x201)),
            Err(ConfigError::PortsOverlap {
                first: "PM1a event",
                second: "PCI I/O"
            })
        );
        assert_eq!(
            with(|p| p.io_window = (0x605, 0x1)),
            Err(ConfigError::PortsOverlap {
                first: "PM1a control",
                second: "PCI I/O"
            })
        );
        assert_eq!(
            with(|p| p.io_window = (0x60B, 0x10)),
            Err(ConfigError::PortsOverlap {
                first: "PM timer",
                second: "PCI I/O"
            })
        );
        for base in [0, 9, 15, 21, 24, u32::MAX] {
            let mut c = ok;
            c.pci.as_mut().unwrap().intx_gsi_base = base;
            assert_eq!(c.check(), Err(ConfigError::IntxGsis { base }));
        }
        let mut c = ok;
        c.ioapic = false;
        assert_eq!(c.check(), Err(ConfigError::PciWithoutIoapic));

        let msg = |f: fn(&mut PciHost)| with(f).unwrap_err().to_string();
        assert_eq!(
            msg(|p| p.intx_gsi_base = 21),
            "PCI INTx on GSIs 21..=24: they must lie in 16..24, I/O APIC pins above the ISA IRQs"
        );
        assert_eq!(
            msg(|p| p.ecam_base = 0xFEC0_0000),
            "the ECAM window 0xfec00000..0xfed00000 overlaps the I/O APIC"
        );
        assert_eq!(
            msg(|p| p.ecam_base = 0xE000_1000),
            "ECAM at 0xe0001000: it must be 1 MiB aligned"
        );
        assert_eq!(
            msg(|p| p.mmio_window = (0xFFFF_0000, 0x2_0000)),
            "the PCI MMIO window 0xffff0000..0x100010000 must end at or below 4 GiB"
        );
        assert_eq!(msg(|p| p.io_window.1 = 0), "the PCI I/O window is empty");
    }
}
