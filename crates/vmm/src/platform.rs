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
/// Changes a VM's second-level tables at run time (passed-through BARs mapped where the guest
/// put them).
pub trait SlatEditor: Send + Sync {
    /// Maps guest-physical `[gpa, gpa + len)` to host-physical `host`, uncached, read-write.
    fn map_mmio(&self, gpa: u64, len: u64, host: u64) -> Result<(), alloc::string::String>;
    /// Removes the translation of `[gpa, gpa + len)`.
    fn unmap(&self, gpa: u64, len: u64) -> Result<(), alloc::string::String>;
    /// Maps guest-physical `[gpa, gpa + len)` to host-physical RAM at `host` (an inter-VM shared
    /// region), write-back, read-write or read-only.
    fn map_ram(
        &self,
        gpa: u64,
        len: u64,
        host: u64,
        writable: bool,
    ) -> Result<(), alloc::string::String>;
}

pub trait Platform: Send + Sync {
    /// A VM's RAM.
    /// A handle to a VM's RAM: clones reach the same memory, and access
    /// needs no lock (every vCPU holds its own clone).
    type Ram: GuestMemory + Clone + Send + Sync + 'static;
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
    /// request (it leaves the guest or its sleep). The `vmm` crate kicks a real-time VM's pCPUs
    /// only for the VM's lifecycle (start, stop, pause, resume, reset) and for its own vCPUs'
    /// needs; the platform delivers those kicks with an NMI (its guest may run with interrupts
    /// masked by a passthrough LAPIC).
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
    /// Whether real-time VM `cfg`'s LAPIC may be passed through (the machine has a physical
    /// x2APIC, the TSC-deadline timer and a backend that can, and the VM owns no PCI functions).
    fn lapic_passthrough_for(&self, _cfg: &scenario::VmConfig) -> bool {
        false
    }
    /// Gives this pCPU's LAPIC to the guest of the vCPU running here, starting from `h`.
    fn enter_lapic_passthrough(&self, _h: &vcpu::LapicHandover) {}
    /// Takes this pCPU's LAPIC back (no-op if it is the host's).
    fn leave_lapic_passthrough(&self) {}
    /// Sends fixed interrupt `vector` to pCPU `pcpu`'s physical LAPIC (its guest owns it).
    fn send_vector(&self, _pcpu: u16, _vector: u8) {}
    /// An EOI on this pCPU's physical LAPIC for its passthrough guest: the vector retired.
    fn physical_eoi(&self) -> Option<u8> {
        None
    }
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

/// Nanoseconds to TSC ticks at `hz` (exact; the reference for [`TscScale`]).
#[cfg(test)]
pub(crate) fn ns_to_tsc(hz: u64, ns: u64) -> u64 {
    let hz = hz.max(1);
    u64::try_from(u128::from(ns) * u128::from(hz) / 1_000_000_000).unwrap_or(u64::MAX)
}

/// TSC <-> nanosecond conversion at one rate as 32.32 fixed-point factors:
/// one multiplication each, for the paths that run before every guest entry
/// (a 128-bit division is a library call of dozens of instructions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TscScale {
    /// ns per tick << 32.
    ns_per_tick: u64,
    /// ticks per ns << 32.
    ticks_per_ns: u64,
}

impl TscScale {
    pub fn new(hz: u64) -> Self {
        let hz = u128::from(hz.max(1));
        let clamp = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
        TscScale {
            ns_per_tick: clamp((1_000_000_000u128 << 32) / hz),
            ticks_per_ns: clamp((hz << 32).div_ceil(1_000_000_000)),
        }
    }

    /// TSC ticks to nanoseconds (rounded down).
    pub fn to_ns(self, tsc: u64) -> u64 {
        u64::try_from((u128::from(tsc) * u128::from(self.ns_per_tick)) >> 32).unwrap_or(u64::MAX)
    }

    /// Nanoseconds to TSC ticks (rounded up: a timer armed with it never
    /// fires before the time in ns has come).
    pub fn to_tsc(self, ns: u64) -> u64 {
        let t = u128::from(ns) * u128::from(self.ticks_per_ns);
        u64::try_from(t.div_ceil(1 << 32)).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_point_scale_agrees_with_the_exact_conversion() {
        assert_eq!(
            TscScale::new(1).to_ns(5),
            5_000_000_000,
            "an uncalibrated clock: 1 Hz"
        );
        assert!(TscScale::new(0).to_tsc(5_000_000_000) >= 5, "rounded up");
        for hz in [200_000_000, 2_116_581_000, 5_000_000_000] {
            let s = TscScale::new(hz);
            for tsc in [0u64, 1, 999, 123_456_789, 1 << 40, 1 << 50] {
                let exact = tsc_to_ns(hz, tsc);
                let fast = s.to_ns(tsc);
                // Off by at most one ns per 2^32 ticks, never late.
                assert!(
                    fast <= exact && exact - fast <= 1 + (tsc >> 32),
                    "{hz} Hz {tsc}"
                );
            }
            for ns in [0u64, 1, 1_000, 1_000_000_007, 1 << 40] {
                let exact = ns_to_tsc(hz, ns);
                let fast = s.to_tsc(ns);
                assert!(
                    fast >= exact && fast - exact <= 1 + (ns >> 30),
                    "{hz} Hz {ns} ns"
                );
                // Back to ns: within the same bound.
                assert!(s.to_ns(fast) + 1 + (ns >> 30) >= ns, "{hz} Hz {ns} ns back");
            }
        }
        assert_eq!(
            TscScale::new(u64::MAX).to_tsc(u64::MAX),
            u64::MAX,
            "saturates"
        );
    }

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
