//! Register offsets and bits (VT-d specification, chapter 11).

pub(crate) const VER: usize = 0x00;
pub(crate) const CAP: usize = 0x08;
pub(crate) const ECAP: usize = 0x10;
pub(crate) const GCMD: usize = 0x18;
pub(crate) const GSTS: usize = 0x1c;
pub(crate) const RTADDR: usize = 0x20;
pub(crate) const CCMD: usize = 0x28;
pub(crate) const FSTS: usize = 0x34;
pub(crate) const IQH: usize = 0x80;
pub(crate) const IQT: usize = 0x88;
pub(crate) const IQA: usize = 0x90;
pub(crate) const IRTA: usize = 0xb8;

// GCMD commands and the GSTS status bits at the same positions.
pub(crate) const TE: u32 = 1 << 31;
pub(crate) const SRTP: u32 = 1 << 30;
pub(crate) const WBF: u32 = 1 << 27;
pub(crate) const QIE: u32 = 1 << 26;
pub(crate) const IRE: u32 = 1 << 25;
pub(crate) const SIRTP: u32 = 1 << 24;
pub(crate) const CFI: u32 = 1 << 23;
/// GSTS bits that are states to keep when writing GCMD (TE, AFL, QIE, IRE,
/// CFI and the reserved low bits); the others (SRTP, SFL, WBF, SIRTP) are
/// one-shot commands that must not be written again by accident.
pub(crate) const GSTS_KEEP: u32 = 0x96ff_ffff;

// CCMD.
pub(crate) const ICC: u64 = 1 << 63;
pub(crate) const CIRG_SHIFT: u32 = 61;
pub(crate) const CCMD_SID_SHIFT: u32 = 16;

// IOTLB invalidate register (at ECAP.IRO * 16 + 8).
pub(crate) const IVT: u64 = 1 << 63;
pub(crate) const IIRG_SHIFT: u32 = 60;
pub(crate) const IOTLB_DR: u64 = 1 << 49;
pub(crate) const IOTLB_DW: u64 = 1 << 48;
pub(crate) const IOTLB_DID_SHIFT: u32 = 32;

// Invalidation granularities (CCMD.CIRG, IOTLB.IIRG, descriptor G fields).
pub(crate) const GRAN_GLOBAL: u64 = 1;
pub(crate) const GRAN_DOMAIN: u64 = 2;
pub(crate) const GRAN_DEVICE: u64 = 3;

// FSTS.
pub(crate) const PFO: u32 = 1 << 0;
pub(crate) const PPF: u32 = 1 << 1;
pub(crate) const IQE: u32 = 1 << 4;
pub(crate) const FRI_SHIFT: u32 = 8;

/// Fault recording register bit 127 (F), as bit 31 of its last dword.
pub(crate) const FRCD_F_DWORD3: u32 = 1 << 31;

// Queued invalidation descriptor types.
pub(crate) const DESC_CC: u64 = 0x1;
pub(crate) const DESC_IOTLB: u64 = 0x2;
pub(crate) const DESC_IEC: u64 = 0x4;
pub(crate) const DESC_WAIT: u64 = 0x5;
/// Wait descriptor: write the status data (SW) and fence (FN).
pub(crate) const WAIT_SW: u64 = 1 << 5;
pub(crate) const WAIT_FN: u64 = 1 << 6;
/// IEC descriptor: index-selective (G = 1) rather than global.
pub(crate) const IEC_INDEX: u64 = 1 << 4;

/// Descriptors in the invalidation queue (one 4 KiB page of 16-byte ones:
/// IQA.QS = 0, IQA.DW = 0).
pub(crate) const QUEUE_ENTRIES: u64 = 256;

// Root and context entries (legacy mode).
pub(crate) const PRESENT: u64 = 1;
pub(crate) const CTX_DID_SHIFT: u32 = 8;
