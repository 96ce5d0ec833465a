//! Cache allocation on this CPU: CPUID leaf 0x10 read for [`rt::cat::L3Cat`], and the real
//! `WRMSR`s behind [`rt::cat::MsrWriter`] (a write the CPU refuses with #GP is reported, not
//! fatal: [`crate::safe_msr`]). The rules themselves live in the host-tested `rt` crate.

use rt::cat::{L3Cat, MsrWriter, NoCat};

/// This CPU's L3 allocation (CPUID 0, 7 and 0x10), or why it has none.
pub fn l3_cat() -> Result<L3Cat, NoCat> {
    L3Cat::from_cpuid(crate::cpu::cpuid)
}

/// The running CPU's MSRs.
pub struct PhysMsrs;

impl MsrWriter for PhysMsrs {
    fn wrmsr(&mut self, msr: u32, value: u64) -> bool {
        crate::safe_msr::wrmsr(msr, value)
    }
}
