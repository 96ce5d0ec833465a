//! The Multiple APIC Description Table (ACPI 6.5, 5.2.12): the local APIC
//! address, PC-AT compatibility (dual 8259s present), one enabled Processor
//! Local APIC entry per vCPU, the I/O APIC, the ISA interrupt source
//! overrides and the local APIC NMI pin.

use alloc::vec::Vec;

use crate::config::{AcpiConfig, IOAPIC_ADDR, LOCAL_APIC_ADDR};
use crate::sdt::Sdt;

const REVISION: u8 = 5;
/// MADT flag: the system also has dual 8259 PICs.
const PCAT_COMPAT: u32 = 1 << 0;

/// Entry types.
const LOCAL_APIC: u8 = 0;
const IO_APIC: u8 = 1;
const INTERRUPT_OVERRIDE: u8 = 2;
const LOCAL_APIC_NMI: u8 = 4;
/// Processor Local APIC flag: usable.
const LAPIC_ENABLED: u32 = 1 << 0;

/// MPS INTI flags: polarity in bits 1:0, trigger mode in bits 3:2.
/// "Conforms to the bus" for both: for ISA, active high, edge.
const INTI_CONFORMS: u16 = 0;
/// Active high (01), level triggered (11 << 2).
const INTI_HIGH_LEVEL: u16 = 0b01 | 0b11 << 2;
/// Processor UID meaning "all processors" in a Local APIC NMI entry.
const ALL_PROCESSORS: u8 = 0xFF;
/// The LINT pin NMI arrives on.
const NMI_LINT: u8 = 1;

/// The MADT for `cfg` (which [`AcpiConfig::check`] accepted).
pub(crate) fn madt(cfg: &AcpiConfig) -> Vec<u8> {
    let mut t = Sdt::new(b"APIC", REVISION);
    t.u32(LOCAL_APIC_ADDR).u32(PCAT_COMPAT);
    for i in 0..cfg.vcpus {
        // Processor UID = APIC ID = vCPU index.
        t.u8(LOCAL_APIC).u8(8).u8(i).u8(i).u32(LAPIC_ENABLED);
    }
    if cfg.ioapic {
        t.u8(IO_APIC)
            .u8(12)
            .u8(cfg.ioapic_id())
            .u8(0)
            .u32(IOAPIC_ADDR)
            .u32(0); // GSI base
                     // The PIT's IRQ 0 arrives on I/O APIC pin 2, as on every PC.
        override_entry(&mut t, 0, 2, INTI_CONFORMS);
        // The SCI: level triggered; active high, as the PM device drives it.
        override_entry(&mut t, cfg.sci_irq, u32::from(cfg.sci_irq), INTI_HIGH_LEVEL);
    }
    t.u8(LOCAL_APIC_NMI)
        .u8(6)
        .u8(ALL_PROCESSORS)
        .u16(INTI_CONFORMS)
        .u8(NMI_LINT);
    t.finish()
}

/// An ISA (bus 0) interrupt source override.
fn override_entry(t: &mut Sdt, irq: u8, gsi: u32, flags: u16) {
    t.u8(INTERRUPT_OVERRIDE)
        .u8(10)
        .u8(0)
        .u8(irq)
        .u32(gsi)
        .u16(flags);
}

/// Bytes of the MADT for `cfg`.
#[cfg(test)]
pub(crate) fn madt_len(cfg: &AcpiConfig) -> usize {
    44 + 8 * usize::from(cfg.vcpus) + if cfg.ioapic { 12 + 2 * 10 } else { 0 } + 6
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdt::tests::assert_table;

    #[test]
    fn one_entry_per_vcpu_then_ioapic_overrides_and_nmi() {
        let cfg = AcpiConfig::new(2);
        let t = madt(&cfg);
        assert_table(&t, b"APIC", 5);
        assert_eq!(t.len(), madt_len(&cfg));
        assert_eq!(&t[36..44], &[0, 0, 0xE0, 0xFE, 1, 0, 0, 0]);
        assert_eq!(&t[44..52], &[0, 8, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&t[52..60], &[0, 8, 1, 1, 1, 0, 0, 0]);
        assert_eq!(&t[60..72], &[1, 12, 2, 0, 0, 0, 0xC0, 0xFE, 0, 0, 0, 0]);
        assert_eq!(&t[72..82], &[2, 10, 0, 0, 2, 0, 0, 0, 0, 0]);
        assert_eq!(&t[82..92], &[2, 10, 0, 9, 9, 0, 0, 0, 0x0D, 0]);
        assert_eq!(&t[92..98], &[4, 6, 0xFF, 0, 0, 1]);
    }

    #[test]
    fn without_ioapic_only_cpus_and_nmi() {
        let mut cfg = AcpiConfig::new(1);
        cfg.ioapic = false;
        let t = madt(&cfg);
        assert_table(&t, b"APIC", 5);
        assert_eq!(t.len(), 44 + 8 + 6);
        assert_eq!(t[52], LOCAL_APIC_NMI);
    }

    #[test]
    fn many_vcpus() {
        for vcpus in [8, 254] {
            let cfg = AcpiConfig::new(vcpus);
            let t = madt(&cfg);
            assert_table(&t, b"APIC", 5);
            assert_eq!(t.len(), madt_len(&cfg));
            let last = 44 + 8 * (usize::from(vcpus) - 1);
            assert_eq!(&t[last..last + 4], &[0, 8, vcpus - 1, vcpus - 1]);
            assert_eq!(t[last + 8 + 2], vcpus, "I/O APIC ID after the last APIC ID");
        }
    }
}
