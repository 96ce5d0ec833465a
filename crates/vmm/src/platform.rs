//! What the hypervisor's arch tier supplies to the VMs: making a vCPU of the machine's backend
//! (VMX or SVM, chosen once at boot), the clock, the host timer and IPIs, sleeping a pCPU, the
//! cross-pCPU mailbox and the host CPU's own registers. Nothing in this crate names VMX, SVM or
//! a hardware register; a mock implements [`Platform`] for the tests.

use core::fmt;

use scenario::VmId;
use vcpu::{GuestMemory, InitialState, VcpuBackend};

/// Which vCPU the platform makes, and what it needs for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuSpec {
    pub vm: VmId,
    /// The vCPU's index in its VM.
    pub vcpu: u16,
    /// The root of the VM's second-level tables, as the backend takes it.
    pub slat_root: u64,
}

/// Code that runs with a vCPU of whatever type the backend makes (static dispatch: the run loop
/// is compiled once per backend type, as if it named it).
pub trait WithVcpu {
    type Output;
    fn run<B: VcpuBackend>(self, vcpu: &mut B) -> Self::Output;
}

/// The host services the VMs run on. Every method is called on the pCPU it concerns unless it
/// takes a `pcpu`.
pub trait Platform: Send + Sync {
    /// A VM's RAM.
    /// A handle to a VM's RAM: clones reach the same memory, and access
    /// needs no lock (every vCPU holds its own clone).
    type Ram: GuestMemory + Clone + Send + Sync;
    /// Why a vCPU could not be made; shown as the crashed VM's reason.
    type VcpuError: fmt::Display;

    /// Zeroes all of `ram` (a fresh boot).
    fn zero_ram(&self, ram: &Self::Ram);
    /// Makes the vCPU `spec` names on this pCPU, in `init`, and runs `body` with it.
    fn with_new_vcpu<W: WithVcpu>(
        &self,
        spec: VcpuSpec,
        init: &InitialState,
        body: W,
    ) -> Result<W::Output, Self::VcpuError>;
    /// The host's monotonic clock, in TSC ticks.
    fn now(&self) -> u64;
    /// Ticks of [`Platform::now`] per second.
    fn tsc_hz(&self) -> u64;
    /// Interrupts pCPU `pcpu` so that it looks at its posted work, its mailbox and its VM's
    /// request (it leaves the guest or its sleep).
    fn kick(&self, pcpu: u16);
    /// Arms this pCPU's one-shot host timer `after` ticks from now (`None`: disarmed): it ends
    /// the guest's run at its next timer deadline.
    fn arm_timer(&self, after: Option<u64>);
    /// Sleeps this pCPU until an interrupt (a kick, the host timer). May return early.
    fn wait_for_interrupt(&self);
    /// Lets the host take an interrupt that arrived while the guest ran.
    fn take_host_interrupt(&self);
    /// Readies this pCPU for guests before a vCPU runs on it (XSAVE on).
    fn prepare_pcpu(&self);
    /// Answers a question another pCPU posted for `pcpu` (call on that pCPU); `vcpu` is the vCPU
    /// it runs, while it is outside the guest.
    fn service_mailbox(&self, pcpu: u16, vcpu: Option<&dyn VcpuBackend>);
    /// Whether a question waits for `pcpu`.
    fn mailbox_pending(&self, pcpu: u16) -> bool;
    /// CPUID on this CPU.
    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// XCR0 bits this CPU supports (0 without XSAVE).
    fn xcr0_supported(&self) -> u64;
    /// Loads a validated XCR0 on this pCPU.
    fn load_xcr0(&self, value: u64);
    /// RDMSR on this pCPU; `None` if it raised #GP.
    fn host_rdmsr(&self, msr: u32) -> Option<u64>;
    /// WRMSR on this pCPU; false if it raised #GP.
    fn host_wrmsr(&self, msr: u32, value: u64) -> bool;
}

/// A point `us` microseconds from now, in [`Platform::now`] ticks, for bounded waits.
pub(crate) fn deadline_after_us<P: Platform>(p: &P, us: u64) -> u64 {
    p.now()
        .saturating_add(us.saturating_mul(p.tsc_hz().max(1_000_000) / 1_000_000))
}

/// Spins until `done` holds (true) or `us` microseconds passed (false).
pub(crate) fn spin_until<P: Platform>(p: &P, us: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = deadline_after_us(p, us);
    loop {
        if done() {
            return true;
        }
        if p.now() >= deadline {
            return false;
        }
        core::hint::spin_loop();
    }
}

/// TSC ticks to nanoseconds at `hz`.
pub(crate) fn tsc_to_ns(hz: u64, tsc: u64) -> u64 {
    let hz = hz.max(1);
    (u128::from(tsc) * 1_000_000_000 / u128::from(hz)) as u64
}

/// Nanoseconds to TSC ticks at `hz`.
pub(crate) fn ns_to_tsc(hz: u64, ns: u64) -> u64 {
    let hz = hz.max(1);
    u64::try_from(u128::from(ns) * u128::from(hz) / 1_000_000_000).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_and_ns_convert_both_ways() {
        assert_eq!(tsc_to_ns(2_000_000_000, 2_000), 1_000);
        assert_eq!(ns_to_tsc(2_000_000_000, 1_000), 2_000);
        assert_eq!(
            tsc_to_ns(0, 5),
            5_000_000_000,
            "an uncalibrated clock counts at 1 Hz"
        );
        assert_eq!(ns_to_tsc(u64::MAX, u64::MAX), u64::MAX, "saturates");
    }
}
