//! The Fixed ACPI Description Table, revision 6 (ACPI 6.5, 5.2.9), for a
//! legacy PC-style VM: PM1a event and control blocks in I/O space, no SMI
//! command port (always in ACPI mode), SCI on an ISA IRQ, reset through port
//! 0xCF9, legacy devices present but no i8042 and no VGA.
//!
//! Every address field is written in both its 32-bit and its 64-bit ("X_")
//! form with the same value, which ACPICA (Linux) accepts without warnings.

use alloc::vec::Vec;

use crate::config::{AcpiConfig, PM1_CNT_LEN, PM1_EVT_LEN, PM_TMR_LEN, RESET_PORT, RESET_VALUE};
use crate::sdt::{io_gas, Sdt};

/// Bytes of a revision 6 FADT.
pub(crate) const FADT_LEN: usize = 276;
const REVISION: u8 = 6;
const MINOR_REVISION: u8 = 5;

/// `Flags` bits.
const WBINVD: u32 = 1 << 0;
const PROC_C1: u32 = 1 << 2;
/// No fixed-feature power button (the VM has none).
const PWR_BUTTON: u32 = 1 << 4;
/// No fixed-feature sleep button.
const SLP_BUTTON: u32 = 1 << 5;
/// RTC wake status is not in the fixed registers.
const FIX_RTC: u32 = 1 << 6;
/// The PM timer counts 32 bits (unset: 24 bits, as this VM's would).
#[cfg(test)]
const TMR_VAL_EXT: u32 = 1 << 8;
const RESET_REG_SUP: u32 = 1 << 10;
#[cfg(test)]
const HW_REDUCED_ACPI: u32 = 1 << 20;

/// `IAPC_BOOT_ARCH` bits.
const LEGACY_DEVICES: u16 = 1 << 0;
/// Set only if an i8042 exists. Clear, Linux marks the controller "firmware
/// absent" and does not probe ports 0x60/0x64 without a PNP0303 device.
#[cfg(test)]
const I8042: u16 = 1 << 1;
const VGA_NOT_PRESENT: u16 = 1 << 2;
const CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

/// P_LVL2_LAT above 100 and P_LVL3_LAT above 1000: no C2, no C3.
const NO_C2: u16 = 101;
const NO_C3: u16 = 1001;

/// The FADT for `cfg`, pointing at the FACS and DSDT at the given addresses
/// (below 4 GiB).
pub(crate) fn fadt(cfg: &AcpiConfig, facs: u32, dsdt: u32) -> Vec<u8> {
    let mut t = Sdt::new(b"FACP", REVISION);
    let (tmr_port, tmr_len) = match cfg.pm_tmr {
        Some(p) => (p, PM_TMR_LEN),
        None => (0, 0),
    };
    let mut boot_arch = LEGACY_DEVICES | VGA_NOT_PRESENT;
    if !cfg.cmos_rtc {
        boot_arch |= CMOS_RTC_NOT_PRESENT;
    }
    t.u32(facs) // 36 FIRMWARE_CTRL
        .u32(dsdt) // 40 DSDT
        .u8(0) // 44 reserved (ACPI 1.0 INT_MODEL)
        .u8(0) // 45 Preferred_PM_Profile: unspecified
        .u16(u16::from(cfg.sci_irq)) // 46 SCI_INT
        .u32(0) // 48 SMI_CMD: none, always in ACPI mode
        .u8(0) // 52 ACPI_ENABLE
        .u8(0) // 53 ACPI_DISABLE
        .u8(0) // 54 S4BIOS_REQ
        .u8(0) // 55 PSTATE_CNT
        .u32(u32::from(cfg.pm1a_evt)) // 56 PM1a_EVT_BLK
        .u32(0) // 60 PM1b_EVT_BLK
        .u32(u32::from(cfg.pm1a_cnt)) // 64 PM1a_CNT_BLK
        .u32(0) // 68 PM1b_CNT_BLK
        .u32(0) // 72 PM2_CNT_BLK
        .u32(u32::from(tmr_port)) // 76 PM_TMR_BLK
        .u32(0) // 80 GPE0_BLK
        .u32(0) // 84 GPE1_BLK
        .u8(PM1_EVT_LEN) // 88 PM1_EVT_LEN
        .u8(PM1_CNT_LEN) // 89 PM1_CNT_LEN
        .u8(0) // 90 PM2_CNT_LEN
        .u8(tmr_len) // 91 PM_TMR_LEN
        .u8(0) // 92 GPE0_BLK_LEN
        .u8(0) // 93 GPE1_BLK_LEN
        .u8(0) // 94 GPE1_BASE
        .u8(0) // 95 CST_CNT
        .u16(NO_C2) // 96 P_LVL2_LAT
        .u16(NO_C3) // 98 P_LVL3_LAT
        .u16(0) // 100 FLUSH_SIZE
        .u16(0) // 102 FLUSH_STRIDE
        .u8(0) // 104 DUTY_OFFSET
        .u8(0) // 105 DUTY_WIDTH
        .u8(0) // 106 DAY_ALRM
        .u8(0) // 107 MON_ALRM
        .u8(0) // 108 CENTURY: no century register
        .u16(boot_arch) // 109 IAPC_BOOT_ARCH
        .u8(0) // 111 reserved
        .u32(WBINVD | PROC_C1 | PWR_BUTTON | SLP_BUTTON | FIX_RTC | RESET_REG_SUP) // 112 Flags
        .bytes(&io_gas(RESET_PORT, 8, 1)) // 116 RESET_REG
        .u8(RESET_VALUE) // 128 RESET_VALUE
        .u16(0) // 129 ARM_BOOT_ARCH
        .u8(MINOR_REVISION) // 131 FADT Minor Version
        .u64(u64::from(facs)) // 132 X_FIRMWARE_CTRL
        .u64(u64::from(dsdt)) // 140 X_DSDT
        .bytes(&io_gas(cfg.pm1a_evt, PM1_EVT_LEN * 8, 2)) // 148 X_PM1a_EVT_BLK
        .bytes(&[0; 12]) // 160 X_PM1b_EVT_BLK
        .bytes(&io_gas(cfg.pm1a_cnt, PM1_CNT_LEN * 8, 2)) // 172 X_PM1a_CNT_BLK
        .bytes(&[0; 12]) // 184 X_PM1b_CNT_BLK
        .bytes(&[0; 12]); // 196 X_PM2_CNT_BLK
    match cfg.pm_tmr {
        Some(p) => t.bytes(&io_gas(p, PM_TMR_LEN * 8, 4)), // 208 X_PM_TMR_BLK
        None => t.bytes(&[0; 12]),
    };
    t.bytes(&[0; 12]) // 220 X_GPE0_BLK
        .bytes(&[0; 12]) // 232 X_GPE1_BLK
        .bytes(&[0; 12]) // 244 SLEEP_CONTROL_REG (hardware-reduced only)
        .bytes(&[0; 12]) // 256 SLEEP_STATUS_REG
        .bytes(b"QUERCUS\0"); // 268 Hypervisor Vendor Identity
    debug_assert_eq!(t.len(), FADT_LEN);
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_PM_TMR;
    use crate::sdt::tests::assert_table;

    fn u16_at(t: &[u8], off: usize) -> u16 {
        u16::from_le_bytes(t[off..off + 2].try_into().unwrap())
    }

    fn u32_at(t: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(t[off..off + 4].try_into().unwrap())
    }

    fn u64_at(t: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(t[off..off + 8].try_into().unwrap())
    }

    #[test]
    fn fields_at_their_spec_offsets() {
        let cfg = AcpiConfig::new(2);
        let t = fadt(&cfg, 0xE_0100, 0xE_0140);
        assert_table(&t, b"FACP", 6);
        assert_eq!(t.len(), 276);
        assert_eq!((u32_at(&t, 36), u64_at(&t, 132)), (0xE_0100, 0xE_0100));
        assert_eq!((u32_at(&t, 40), u64_at(&t, 140)), (0xE_0140, 0xE_0140));
        assert_eq!(u16_at(&t, 46), 9);
        assert_eq!(u32_at(&t, 48), 0, "no SMI command port");
        assert_eq!(u32_at(&t, 56), 0x600);
        assert_eq!(u32_at(&t, 64), 0x604);
        assert_eq!(u32_at(&t, 76), 0, "no PM timer");
        assert_eq!((t[88], t[89], t[91]), (4, 2, 0));
        assert_eq!(u16_at(&t, 96), 101);
        assert_eq!(u16_at(&t, 98), 1001);
        let boot_arch = u16_at(&t, 109);
        assert_eq!(boot_arch & LEGACY_DEVICES, LEGACY_DEVICES);
        assert_eq!(boot_arch & I8042, 0);
        assert_eq!(boot_arch & CMOS_RTC_NOT_PRESENT, 0);
        let flags = u32_at(&t, 112);
        assert_eq!(flags & (WBINVD | RESET_REG_SUP), WBINVD | RESET_REG_SUP);
        assert_eq!(flags & (HW_REDUCED_ACPI | TMR_VAL_EXT), 0);
        assert_eq!(&t[116..128], &io_gas(0xCF9, 8, 1));
        assert_eq!(t[128], 6);
        assert_eq!(t[131], 5);
        assert_eq!(&t[148..160], &io_gas(0x600, 32, 2));
        assert_eq!(&t[172..184], &io_gas(0x604, 16, 2));
        assert!(t[208..220].iter().all(|&b| b == 0));
        assert_eq!(&t[268..276], b"QUERCUS\0");
    }

    #[test]
    fn pm_timer_and_no_rtc() {
        let mut cfg = AcpiConfig::new(1);
        cfg.pm_tmr = Some(DEFAULT_PM_TMR);
        cfg.cmos_rtc = false;
        cfg.sci_irq = 11;
        let t = fadt(&cfg, 0x1000, 0x2000);
        assert_table(&t, b"FACP", 6);
        assert_eq!(u32_at(&t, 76), 0x608);
        assert_eq!(t[91], 4);
        assert_eq!(&t[208..220], &io_gas(0x608, 32, 4));
        assert_eq!(u16_at(&t, 109) & CMOS_RTC_NOT_PRESENT, CMOS_RTC_NOT_PRESENT);
        assert_eq!(u16_at(&t, 46), 11);
    }
}
