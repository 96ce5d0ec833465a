//! MMIO register offsets and bits, device table entry and command formats.

pub(crate) const DEV_TABLE_BASE: usize = 0x0000;
pub(crate) const CMD_BUF_BASE: usize = 0x0008;
pub(crate) const EVENT_LOG_BASE: usize = 0x0010;
pub(crate) const CONTROL: usize = 0x0018;
pub(crate) const EXCLUSION_BASE: usize = 0x0020;
pub(crate) const EXCLUSION_LIMIT: usize = 0x0028;
pub(crate) const EXT_FEATURES: usize = 0x0030;
pub(crate) const CMD_HEAD: usize = 0x2000;
pub(crate) const CMD_TAIL: usize = 0x2008;
pub(crate) const EVENT_HEAD: usize = 0x2010;
pub(crate) const EVENT_TAIL: usize = 0x2018;
pub(crate) const STATUS: usize = 0x2020;

// Control register.
pub(crate) const CTRL_IOMMU_EN: u64 = 1 << 0;
pub(crate) const CTRL_EVENT_LOG_EN: u64 = 1 << 2;
pub(crate) const CTRL_CMD_BUF_EN: u64 = 1 << 12;

// Status register.
pub(crate) const STATUS_EVENT_OVERFLOW: u64 = 1 << 0;
pub(crate) const STATUS_EVENT_LOG_RUN: u64 = 1 << 3;
pub(crate) const STATUS_CMD_BUF_RUN: u64 = 1 << 4;

/// Buffer length field (bits 59:56) for 256 entries of 16 bytes: 4 KiB.
pub(crate) const LEN_256: u64 = 8 << 56;
/// Entries in the command buffer and the event log.
pub(crate) const RING_ENTRIES: u64 = 256;
/// Head/tail pointer bits (18:4).
pub(crate) const RING_PTR_MASK: u64 = 0x7fff0;

// Device table entry, quadword 0.
pub(crate) const DTE_V: u64 = 1 << 0;
pub(crate) const DTE_TV: u64 = 1 << 1;
pub(crate) const DTE_MODE_SHIFT: u32 = 9;
pub(crate) const DTE_IR: u64 = 1 << 61;
pub(crate) const DTE_IW: u64 = 1 << 62;
// Quadword 2.
pub(crate) const DTE_IV: u64 = 1 << 0;
pub(crate) const DTE_INT_TAB_LEN_SHIFT: u32 = 1;
pub(crate) const DTE_INT_ROOT_MASK: u64 = 0x000f_ffff_ffff_ffc0;
/// IntCtl = 10b: remap fixed and arbitrated interrupts through the table.
pub(crate) const DTE_INT_CTL_REMAP: u64 = 2 << 60;
/// Bytes of one device table entry.
pub(crate) const DTE_SIZE: u64 = 32;

// Commands: opcode in bits 63:60 of the first quadword.
pub(crate) const CMD_COMPLETION_WAIT: u64 = 0x1;
pub(crate) const CMD_INVALIDATE_DEVTAB_ENTRY: u64 = 0x2;
pub(crate) const CMD_INVALIDATE_IOMMU_PAGES: u64 = 0x3;
pub(crate) const CMD_INVALIDATE_INTERRUPT_TABLE: u64 = 0x5;
pub(crate) const CMD_INVALIDATE_IOMMU_ALL: u64 = 0x8;
pub(crate) const OPCODE_SHIFT: u32 = 60;
/// COMPLETION_WAIT: store the data to the address (S).
pub(crate) const WAIT_STORE: u64 = 1 << 0;
/// INVALIDATE_IOMMU_PAGES: every page of the domain (S = 1, PDE = 1, the
/// address 0x7fff_ffff_ffff_f000).
pub(crate) const ALL_PAGES: u64 = 0x7fff_ffff_ffff_f000 | 0b11;

/// Extended feature register: INVALIDATE_IOMMU_ALL supported (IA).
pub(crate) const EFR_IA: u64 = 1 << 6;
