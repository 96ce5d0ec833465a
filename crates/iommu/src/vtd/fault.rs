//! [`FaultRecord`]: one primary fault recording register, decoded, and the
//! names of the fault reasons (VT-d specification, chapter 7 and appendix).

use core::fmt;

use crate::bdf::Bdf;

/// A DMA or interrupt remapping fault the unit recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// Requester id of the faulting request.
    pub source: Bdf,
    /// Fault reason code.
    pub reason: u8,
    /// DMA faults: the page address (bits 63:12); interrupt faults: the
    /// interrupt index in bits 63:48 as the unit reports it.
    pub address: u64,
    /// The request was a write (DMA faults; false for reads).
    pub write: bool,
}

impl FaultRecord {
    /// Decodes the two quadwords of a fault recording register (F set).
    /// Bits: 63:12 fault info; 79:64 source id; 103:96 reason; 126 T1
    /// (with T2, bit 92: 00 write, 01 read, 10 page request, 11 atomic).
    pub fn decode(lo: u64, hi: u64) -> Self {
        let t1 = hi & (1 << 62) != 0;
        let t2 = hi & (1 << 28) != 0;
        Self {
            source: Bdf((hi & 0xffff) as u16),
            reason: ((hi >> 32) & 0xff) as u8,
            address: lo & !0xfff,
            write: !t1 && !t2,
        }
    }

    /// Whether this is an interrupt remapping fault (reasons 0x20-0x2f).
    pub fn is_interrupt(&self) -> bool {
        (0x20..0x30).contains(&self.reason)
    }

    /// The interrupt index of an interrupt remapping fault.
    pub fn interrupt_index(&self) -> Option<u16> {
        self.is_interrupt().then_some((self.address >> 48) as u16)
    }
}

/// The name of a legacy-mode fault reason code.
pub fn reason_name(reason: u8) -> &'static str {
    match reason {
        0x01 => "root entry not present",
        0x02 => "context entry not present",
        0x03 => "invalid context entry",
        0x04 => "address beyond the context's width",
        0x05 => "write not allowed",
        0x06 => "read not allowed",
        0x07 => "page table entry unreadable",
        0x08 => "root table unreadable",
        0x09 => "context table unreadable",
        0x0a => "reserved bit set in a root entry",
        0x0b => "reserved bit set in a context entry",
        0x0c => "reserved bit set in a page table entry",
        0x0d => "request blocked by the context's translation type",
        0x20 => "reserved field set in an interrupt request",
        0x21 => "interrupt index beyond the remapping table",
        0x22 => "interrupt remapping entry not present",
        0x23 => "interrupt remapping table unreadable",
        0x24 => "reserved bit set in an interrupt remapping entry",
        0x25 => "compatibility-format interrupt blocked",
        0x26 => "interrupt source id check failed",
        0x27 => "posted interrupt entry unreadable",
        _ => "unknown reason",
    }
}

impl fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(index) = self.interrupt_index() {
            write!(
                f,
                "{}: interrupt fault {:#04x} ({}), index {index}",
                self.source,
                self.reason,
                reason_name(self.reason)
            )
        } else {
            write!(
                f,
                "{}: DMA {} fault {:#04x} ({}) at {:#x}",
                self.source,
                if self.write { "write" } else { "read" },
                self.reason,
                reason_name(self.reason),
                self.address
            )
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;

    use super::*;

    #[test]
    fn decode_dma_and_interrupt_faults() {
        // QEMU's encoding: F | T(read) | FR << 32 | SID.
        let read = FaultRecord::decode(0x1234_5678, (1 << 63) | (1 << 62) | (6 << 32) | 0x0018);
        assert_eq!(read.source, Bdf::new(0, 3, 0));
        assert_eq!(
            (read.reason, read.address, read.write),
            (6, 0x1234_5000, false)
        );
        assert_eq!(
            format!("{read}"),
            "00:03.0: DMA read fault 0x06 (read not allowed) at 0x12345000"
        );
        let write = FaultRecord::decode(0x7000, (1 << 63) | (5 << 32) | 0x0100);
        assert!(write.write);
        assert_eq!(write.interrupt_index(), None);
        let irq = FaultRecord::decode(42 << 48, (1 << 63) | (0x22 << 32) | 0x00ff);
        assert_eq!(irq.interrupt_index(), Some(42));
        assert!(format!("{irq}").contains("not present), index 42"));
        assert_eq!(reason_name(0xee), "unknown reason");
    }
}
