//! The architectural state a vCPU starts in, common to both backends and every loader.

use crate::{Gprs, SegmentState};

/// Where and how a vCPU starts.
#[derive(Clone, Copy, Debug)]
pub struct InitialState {
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub gprs: Gprs,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cs: SegmentState,
    /// DS, ES, SS, FS, GS.
    pub data: SegmentState,
    pub tr: SegmentState,
    pub gdtr: SegmentState,
    pub idtr: SegmentState,
}
