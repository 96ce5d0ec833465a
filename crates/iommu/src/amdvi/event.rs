//! [`Event`]: one event log entry (16 bytes), decoded. The event code is in
//! bits 63:60 of the first quadword, the device id in 15:0, and most events
//! carry an address in the second quadword.

use core::fmt;

use crate::bdf::Bdf;

/// An entry of the event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// 0x1: a device table entry with reserved bits or an invalid
    /// combination.
    IllegalDevTableEntry {
        /// The device.
        device: Bdf,
        /// The address of the request.
        address: u64,
    },
    /// 0x2: a DMA the page tables (or the DTE) did not allow.
    IoPageFault {
        /// The device.
        device: Bdf,
        /// The domain (bits 31:16), when the unit reports it.
        domain: u16,
        /// The DMA address.
        address: u64,
        /// Bits 59:48 of the first quadword: GN, NX, US, I, PR, RW, PE, RZ, TR
        /// (bits 0..=8).
        flags: u16,
    },
    /// Any other event code (3 device table hardware error, 4 page table
    /// hardware error, 5 illegal command, 6 command hardware error, 7 IOTLB
    /// invalidation timeout, 8 invalid device request...).
    Other {
        /// The event code.
        code: u8,
        /// The device id field.
        device: Bdf,
        /// The second quadword.
        address: u64,
    },
}

impl Event {
    /// Decodes an entry from its two quadwords.
    pub fn decode(q0: u64, q1: u64) -> Self {
        let device = Bdf((q0 & 0xffff) as u16);
        match (q0 >> 60) as u8 {
            0x1 => Self::IllegalDevTableEntry {
                device,
                address: q1,
            },
            0x2 => Self::IoPageFault {
                device,
                domain: ((q0 >> 16) & 0xffff) as u16,
                address: q1,
                flags: ((q0 >> 48) & 0xfff) as u16,
            },
            code => Self::Other {
                code,
                device,
                address: q1,
            },
        }
    }

    /// The event code's name.
    pub fn name(&self) -> &'static str {
        let code = match self {
            Self::IllegalDevTableEntry { .. } => 1,
            Self::IoPageFault { .. } => 2,
            Self::Other { code, .. } => *code,
        };
        match code {
            0x1 => "ILLEGAL_DEV_TABLE_ENTRY",
            0x2 => "IO_PAGE_FAULT",
            0x3 => "DEV_TAB_HARDWARE_ERROR",
            0x4 => "PAGE_TAB_HARDWARE_ERROR",
            0x5 => "ILLEGAL_COMMAND_ERROR",
            0x6 => "COMMAND_HARDWARE_ERROR",
            0x7 => "IOTLB_INV_TIMEOUT",
            0x8 => "INVALID_DEVICE_REQUEST",
            0x9 => "INVALID_PPR_REQUEST",
            0xa => "EVENT_COUNTER_ZERO",
            0xb => "GUEST_EVENT_FAULT",
            _ => "unknown event",
        }
    }

    /// The device the event is about.
    pub fn device(&self) -> Bdf {
        match self {
            Self::IllegalDevTableEntry { device, .. }
            | Self::IoPageFault { device, .. }
            | Self::Other { device, .. } => *device,
        }
    }

    /// For an IO_PAGE_FAULT: whether the request was a write (flag RW).
    pub fn is_write(&self) -> bool {
        matches!(self, Self::IoPageFault { flags, .. } if flags & (1 << 5) != 0)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IoPageFault {
                device,
                domain,
                address,
                flags,
            } => write!(
                f,
                "{device}: IO_PAGE_FAULT domain {domain} address {address:#x} flags {flags:#x} ({})",
                if self.is_write() { "write" } else { "read" }
            ),
            Self::IllegalDevTableEntry { device, address } => {
                write!(f, "{device}: ILLEGAL_DEV_TABLE_ENTRY address {address:#x}")
            }
            Self::Other {
                code,
                device,
                address,
            } => write!(f, "{device}: {} ({code:#x}) {address:#x}", self.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;

    use super::*;

    #[test]
    fn decode_events() {
        let pf = Event::decode((2 << 60) | (0x28 << 48) | (5 << 16) | 0x0018, 0x40_0000);
        assert_eq!(
            pf,
            Event::IoPageFault {
                device: Bdf::new(0, 3, 0),
                domain: 5,
                address: 0x40_0000,
                flags: 0x28
            }
        );
        assert!(pf.is_write());
        assert_eq!(
            format!("{pf}"),
            "00:03.0: IO_PAGE_FAULT domain 5 address 0x400000 flags 0x28 (write)"
        );
        let bad = Event::decode((1 << 60) | 0x20, 0x1000);
        assert_eq!(bad.name(), "ILLEGAL_DEV_TABLE_ENTRY");
        assert_eq!(bad.device(), Bdf(0x20));
        let cmd = Event::decode(5 << 60, 0x7000);
        assert_eq!(cmd.name(), "ILLEGAL_COMMAND_ERROR");
        assert!(!cmd.is_write());
        assert!(format!("{cmd}").contains("ILLEGAL_COMMAND_ERROR (0x5) 0x7000"));
        assert_eq!(Event::decode(0xf << 60, 0).name(), "unknown event");
    }
}
