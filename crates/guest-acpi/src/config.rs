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
const PCI_CONFIG_PORTS: (u16, u16) = (0xCF8, 0xD00);

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
/// - With `pci_host_bridge`, PCI configuration space through ports
///   0xCF8/0xCFC, bus 0.
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
    /// Declare a PCI host bridge (`\_SB_.PCI0`, PNP0A03) in the DSDT. Without
    /// it Linux still scans PCI bus 0 through 0xCF8 if the ports answer.
    pub pci_host_bridge: bool,
}

impl AcpiConfig {
    /// `vcpus` vCPUs with the defaults: I/O APIC, PM1a blocks at 0x600 and
    /// 0x604, no PM timer, SCI on IRQ 9, S5 SLP_TYP 5, a CMOS RTC, no PCI
    /// host bridge.
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
            pci_host_bridge: false,
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
                    second: "PCI configuration / reset",
                });
            }
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
}
