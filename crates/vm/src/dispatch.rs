//! Exit handling: one small handler per normalized exit, shared by both
//! backends. The hypervisor supplies the VM-wide parts (RAM, devices, the
//! console, the host CPU) through [`VmHost`]; the per-vCPU parts (CPUID and
//! MSR policies, the vLAPIC) live in [`VcpuExits`].
//!
//! A device may answer a read later ([`IoReply::Later`]): the vCPU then parks
//! with the decoded access kept in [`VcpuExits`] (RIP not advanced), its pCPU
//! idle, until whoever serves the access posts the value to the vCPU's inbox
//! ([`VcpuInbox::complete_io`]) and kicks it; [`VcpuExits::before_entry`]
//! then completes the instruction. A stop request ends the wait.

use core::fmt;

use vcpu::{Event, GuestMemory, IoAccess, VcpuBackend, VmExit, GP, UD};

use crate::hypercall::{self, HypercallOutcome};
use crate::smp::{self, IpiError, Signals, VcpuInbox};
use crate::{CpuidPolicy, LapicAction, MsrPolicy, MsrRead, MsrWrite, PioEffect, VLapic};
use vdev::Delivery;

/// What the hypervisor provides to the exit handlers of one VM.
pub trait VmHost {
    /// The VM's RAM.
    type Ram: GuestMemory;
    /// The VM's id (hypercall 1).
    fn vm_id(&self) -> u16;
    /// Runs `f` with the VM's RAM.
    fn with_ram<R>(&self, f: impl FnOnce(&mut Self::Ram) -> R) -> R;
    /// Bytes the guest wrote to its console (hypercall 2).
    fn console(&self, bytes: &[u8]);
    /// A port read by the guest (`size` 1, 2 or 4); unclaimed ports read all-ones.
    fn pio_read(&self, port: u16, size: u8) -> u32;
    /// A port write by the guest; unclaimed ports drop it. The platform may
    /// ask for a power-off or a reset.
    fn pio_write(&self, port: u16, size: u8, value: u32) -> PioEffect;
    /// A port read by vCPU `vcpu` that the device may answer later; by
    /// default at once through [`VmHost::pio_read`].
    fn pio_read_deferrable(&self, _vcpu: usize, port: u16, size: u8) -> IoReply {
        IoReply::Ready(u64::from(self.pio_read(port, size)))
    }
    /// An MMIO read by vCPU `vcpu` that the device may answer later; by
    /// default at once through [`VmHost::mmio_read`] (all ones if unclaimed).
    fn mmio_read_deferrable(&self, _vcpu: usize, gpa: u64, size: u8) -> IoReply {
        IoReply::Ready(self.mmio_read(gpa, size).unwrap_or(u64::MAX))
    }
    /// A read of device MMIO outside the vLAPIC page; `None`: nothing there.
    fn mmio_read(&self, _gpa: u64, _size: u8) -> Option<u64> {
        None
    }
    /// A write of device MMIO; false: nothing there (the write is dropped).
    fn mmio_write(&self, _gpa: u64, _size: u8, _value: u64) -> bool {
        false
    }
    /// Advances device timers to now and hands over every interrupt message
    /// the VM's devices raised since the last call (they are routed to the
    /// vCPUs the messages name).
    fn poll_devices(&self, _deliver: &mut dyn FnMut(&Delivery)) {}
    /// Whether the 8259 pair's INT output is asserted (an interrupt waits
    /// for an INTA cycle).
    fn pic_interrupt(&self) -> bool {
        false
    }
    /// The INTA cycle: the vector the 8259 pair hands over now (its spurious
    /// vector if the request went away).
    fn pic_acknowledge(&self) -> Option<u8> {
        None
    }
    /// The inboxes of the VM's vCPUs, indexed by vCPU id.
    fn inboxes(&self) -> &[VcpuInbox];
    /// Wakes vCPU `vcpu` (on its own pCPU) to look at its inbox: it leaves the
    /// guest or its halt.
    fn kick(&self, _vcpu: usize) {}
    /// When a device timer needs attention next, in [`VmHost::now`] units.
    fn device_deadline(&self) -> Option<u64> {
        None
    }
    /// A vLAPIC retired `vector` (level-triggered lines may fire again).
    fn eoi(&self, _vector: u8) {}
    /// The host's monotonic clock in TSC ticks.
    fn now(&self) -> u64;
    /// VM exits of this vCPU so far (the statistics leaf 0x4000_0001).
    fn exit_count(&self) -> u64 {
        0
    }
    /// CPUID on the host CPU.
    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// XCR0 bits this CPU supports (0 without XSAVE).
    fn xcr0_supported(&self) -> u64;
    /// Loads a validated XCR0 on this pCPU.
    fn load_xcr0(&mut self, value: u64);
    /// RDMSR on this pCPU; `None` if it raised #GP.
    fn host_rdmsr(&self, _msr: u32) -> Option<u64> {
        None
    }
    /// WRMSR on this pCPU; false if it raised #GP.
    fn host_wrmsr(&self, _msr: u32, _value: u64) -> bool {
        false
    }
    /// Lets the host take an interrupt that arrived while the guest ran.
    fn take_host_interrupt(&mut self);
    /// Sleeps until the next host interrupt (an idle, halted vCPU), or until
    /// `deadline` ([`VmHost::now`] units) if there is one.
    fn idle(&mut self, deadline: Option<u64>);
    /// Whether the VM was asked to stop (by the operator, or another vCPU).
    fn stop_requested(&self) -> bool;
    /// Whether the hypervisor needs this vCPU's run loop (a stop or pause
    /// request, a question from another pCPU): a halted vCPU wakes up for it.
    fn needs_attention(&self) -> bool {
        self.stop_requested()
    }
    /// LAPIC passthrough: raises `vector` on this pCPU's physical LAPIC (a SELF IPI; the guest
    /// takes it after the next entry).
    fn raise_physical(&self, _vector: u8) {}
    /// LAPIC passthrough: an EOI on the physical LAPIC for the guest; the vector it retired.
    fn physical_eoi(&self) -> Option<u8> {
        None
    }
}

/// A real-time vCPU's LAPIC passthrough state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Passthrough {
    /// The VM may pass its LAPIC through (a real-time VM on a CPU that can).
    pub allowed: bool,
    /// The guest switched to x2APIC mode and its LAPIC is the physical one.
    pub active: bool,
    /// Level-triggered emulated interrupts delivered and not yet EOI'd (a bit per vector):
    /// while any is, EOI writes exit so that the virtual IOAPIC sees them.
    level: [u32; 8],
    /// EOI writes exit.
    eoi_exits: bool,
    /// Writes to IA32_APIC_BASE refused (leaving x2APIC mode, moving or disabling the LAPIC).
    pub refused_apic_base: u64,
}

impl Passthrough {
    fn has_level(&self) -> bool {
        self.level.iter().any(|&w| w != 0)
    }

    fn take_level(&mut self, vector: u8) -> bool {
        let (w, bit) = (usize::from(vector / 32), 1u32 << (vector % 32));
        let had = self.level[w] & bit != 0;
        self.level[w] &= !bit;
        had
    }
}

/// Why a vCPU stops for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    PowerOff,
    /// The guest reset its platform: the hypervisor boots it again.
    Reset,
    TripleFault {
        rip: u64,
    },
    HaltedWithInterruptsOff {
        rip: u64,
    },
    Undecodable {
        rip: u64,
    },
    UnsupportedMmio {
        gpa: u64,
        rip: u64,
    },
    EntryFailed {
        raw: u64,
    },
    Unhandled {
        exit: VmExit,
        rip: u64,
    },
    Requested,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::PowerOff => write!(f, "powered off by the guest"),
            StopReason::Reset => write!(f, "reset by the guest"),
            StopReason::TripleFault { rip } => write!(f, "triple fault (shutdown) at RIP {rip:#x}"),
            StopReason::HaltedWithInterruptsOff { rip } => {
                write!(
                    f,
                    "halted with interrupts disabled (HLT before RIP {rip:#x})"
                )
            }
            StopReason::Undecodable { rip } => {
                write!(f, "cannot decode the instruction at RIP {rip:#x}")
            }
            StopReason::UnsupportedMmio { gpa, rip } => {
                write!(f, "unsupported access to {gpa:#x} at RIP {rip:#x}")
            }
            StopReason::EntryFailed { raw } => {
                write!(f, "the CPU refused to enter the guest ({raw:#x})")
            }
            StopReason::Unhandled { exit, rip } => {
                write!(f, "unhandled exit {exit:?} at RIP {rip:#x}")
            }
            StopReason::Requested => write!(f, "stopped on request"),
        }
    }
}

/// What the run loop does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The vCPU waits for a deferred access: the run loop attends to its
    /// controls and calls [`VcpuExits::before_entry`] again without entering.
    Parked,
    /// Another vCPU sent this one an INIT: it waits for a start-up IPI.
    WaitForSipi,
    Stop(StopReason),
}

/// How a device answers a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoReply {
    /// The value, now.
    Ready(u64),
    /// Later: the value will be posted to the vCPU's inbox under this
    /// ticket (non-zero, unique among the vCPU's outstanding accesses).
    Later(u64),
}

/// A guest instruction waiting for its device read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PendingIo {
    Mmio {
        access: emulate::MmioAccess,
        gpa: u64,
        ticket: u64,
    },
    PortIn {
        size: u8,
        ticket: u64,
    },
}

impl PendingIo {
    fn ticket(&self) -> u64 {
        match *self {
            PendingIo::Mmio { ticket, .. } | PendingIo::PortIn { ticket, .. } => ticket,
        }
    }
}

/// How an emulated MMIO access ended.
enum MmioOutcome {
    Done,
    Parked,
    Unsupported,
}

/// The per-vCPU state of exit handling.
#[derive(Clone, Debug)]
pub struct VcpuExits {
    pub cpuid: CpuidPolicy,
    pub msrs: MsrPolicy,
    pub lapic: VLapic,
    /// Interrupts injected so far (NMIs included).
    pub injected: u64,
    /// SMIs sent by this vCPU (not delivered: there is no SMM).
    pub dropped_smis: u64,
    /// IPIs whose destination named no vCPU of this VM (another VM's APIC ID, a physical
    /// one, a broadcast with nobody else): dropped, counted.
    pub ipis_to_nobody: u64,
    /// One of the refusal counters (`refused_allocation_msrs`, `ipis_to_nobody`,
    /// `passthrough.refused_apic_base`) moved since the run loop last looked (one flag per
    /// exit for it to test).
    pub refused: bool,
    /// Guest writes to the cache-allocation MSRs (IA32_PQR_ASSOC, the L3/L2 QoS masks and
    /// configuration, [`rt::cat::is_allocation_msr`]) refused with #GP: a VM never picks its
    /// own class of service or changes another's ways.
    pub refused_allocation_msrs: u64,
    /// NMIs waiting for the guest to be able to take them: one to deliver
    /// and at most one more latched behind its handler.
    pub nmi_pending: u8,
    /// An instruction completed for the guest ran with RFLAGS.TF: its
    /// single-step #DB is raised before the next entry.
    single_step: bool,
    /// AMD's legacy performance MSRs (PERF_CTL0-3, PERF_CTR0-3): kept, not
    /// counting (every AMD CPU has them, whatever CPUID says).
    amd_perf: [u64; 4 * 2],
    /// This vCPU's index in the VM (its inbox).
    vcpu: usize,
    /// How long a blocked NMI waits before the hypervisor looks again, in
    /// TSC ticks (a backend without an NMI-window exit relies on it).
    nmi_retry: u64,
    /// The instruction waiting for a deferred read, if any.
    pending_io: Option<PendingIo>,
    /// LAPIC passthrough (real-time VMs).
    pub passthrough: Passthrough,
}

/// "AuthenticAMD" in CPUID 0 EBX, EDX, ECX.
const AUTHENTIC_AMD: [u32; 3] = [0x6874_7541, 0x6974_6E65, 0x444D_4163];
/// AMD PERF_CTR width.
const AMD_CTR_MASK: u64 = (1 << 48) - 1;

/// CR4.PCE: RDPMC allowed at any privilege level.
const CR4_PCE: u64 = 1 << 8;

/// RFLAGS.TF: single-step.
const RFLAGS_TF: u64 = 1 << 8;

/// A blocked NMI is looked at again after this many microseconds at most.
const NMI_RETRY_US: u64 = 50;

impl VcpuExits {
    /// Exit handling for vCPU `vcpu_id` of a VM with `vcpu_count` vCPUs.
    pub fn new(vcpu_id: u16, vcpu_count: u16, tsc_hz: u64) -> Self {
        VcpuExits {
            cpuid: CpuidPolicy {
                vcpu_id: u32::from(vcpu_id),
                vcpu_count: u32::from(vcpu_count),
                tsc_khz: u32::try_from(tsc_hz / 1000).unwrap_or(u32::MAX),
            },
            msrs: MsrPolicy,
            // The BSP's LAPIC as a PC BIOS leaves it (virtual wire): a guest
            // that never touches the LAPIC still gets the 8259's interrupts.
            lapic: if vcpu_id == 0 {
                VLapic::new_bsp_virtual_wire(tsc_hz)
            } else {
                VLapic::new(u32::from(vcpu_id), tsc_hz)
            },
            injected: 0,
            dropped_smis: 0,
            ipis_to_nobody: 0,
            refused: false,
            refused_allocation_msrs: 0,
            nmi_pending: 0,
            single_step: false,
            amd_perf: [0; 8],
            vcpu: usize::from(vcpu_id),
            nmi_retry: (tsc_hz / 1_000_000).max(1) * NMI_RETRY_US,
            pending_io: None,
            passthrough: Passthrough::default(),
        }
    }

    /// Whether the LAPIC should be passed through now: allowed, and the guest just switched to
    /// x2APIC mode.
    pub fn passthrough_due(&self) -> bool {
        self.passthrough.allowed && !self.passthrough.active && self.lapic.x2apic()
    }

    /// Starts LAPIC passthrough (the backend already agreed): the vLAPIC hands over its state,
    /// for the physical LAPIC. Level-triggered interrupts it had in service are retired now
    /// (their EOIs go to the physical LAPIC), those it had requested are watched.
    pub fn start_passthrough<H: VmHost>(&mut self, host: &H) -> vcpu::LapicHandover {
        let h = self.lapic.hand_over(host.now());
        self.passthrough.active = true;
        self.passthrough.level = h.level_pending;
        for v in 16..=255u8 {
            if h.level_in_service[usize::from(v / 32)] & (1 << (v % 32)) != 0 {
                host.eoi(v);
            }
        }
        h.lapic
    }

    /// The next time this vCPU needs an exit for a timer (vLAPIC or device), in
    /// [`VmHost::now`] units: the hypervisor arms a host timer for it.
    /// An NMI the guest could not take yet adds a deadline shortly after now:
    /// on SVM the end of what blocked it (an interrupt shadow, an event being
    /// delivered, the handler's IRET) causes no exit of its own.
    pub fn next_deadline<H: VmHost>(&self, host: &H) -> Option<u64> {
        let retry = (self.nmi_pending > 0).then(|| host.now().saturating_add(self.nmi_retry));
        [self.lapic.next_deadline(), host.device_deadline(), retry]
            .into_iter()
            .flatten()
            .min()
    }

    /// Routes device interrupts to the vCPUs they name, then takes what was
    /// posted to this vCPU: fixed interrupts into the vLAPIC, INIT and NMI out.
    fn pull<H: VmHost>(&mut self, host: &H) -> Signals {
        let inboxes = host.inboxes();
        let mut wake = 0u64;
        host.poll_devices(&mut |d| wake |= smp::route(inboxes, d));
        self.kick_others(host, wake);
        let Some(mine) = inboxes.get(self.vcpu) else {
            return Signals::default();
        };
        let signals = if self.passthrough.active {
            let pt = &mut self.passthrough;
            mine.drain_to(|vector, level| {
                if level {
                    pt.level[usize::from(vector / 32)] |= 1 << (vector % 32);
                }
                host.raise_physical(vector);
            })
        } else {
            mine.drain(&mut self.lapic)
        };
        self.nmi_pending = self.nmi_pending.saturating_add(signals.nmi).min(2);
        signals
    }

    /// Wakes the vCPUs in `mask` other than this one.
    fn kick_others<H: VmHost>(&self, host: &H, mask: u64) {
        let mut others = mask & !(1u64.checked_shl(self.vcpu as u32).unwrap_or(0));
        while others != 0 {
            host.kick(others.trailing_zeros() as usize);
            others &= others - 1;
        }
    }

    /// An INIT arrived: an application processor waits for a start-up IPI;
    /// the bootstrap processor (vCPU 0) would run the firmware from the
    /// reset vector again, which for a VM without firmware is a reset of the
    /// VM (a one-vCPU VM sending itself an INIT used to wait for a SIPI that
    /// nobody could send).
    fn on_init(&self) -> Flow {
        if self.cpuid.vcpu_id == 0 {
            Flow::Stop(StopReason::Reset)
        } else {
            Flow::WaitForSipi
        }
    }

    /// Before each entry: inject the highest pending vLAPIC interrupt if the
    /// guest can take it now, else ask for an exit when it can. An INIT from
    /// another vCPU ends this run ([`Flow::WaitForSipi`]).
    pub fn before_entry<B: VcpuBackend, H: VmHost>(&mut self, vcpu: &mut B, host: &mut H) -> Flow {
        if self.pending_io.is_some() {
            if let Some(flow) = self.wait_for_io(vcpu, host) {
                return flow;
            }
        }
        let now = host.now();
        if self.pull(host).init {
            return self.on_init();
        }
        if host
            .inboxes()
            .get(self.vcpu)
            .is_some_and(crate::VcpuInbox::take_slat_flush)
        {
            vcpu.flush_slat();
        }
        if self.passthrough.active {
            let want = self.passthrough.has_level();
            if want != self.passthrough.eoi_exits {
                vcpu.intercept_lapic_eoi(want);
                self.passthrough.eoi_exits = want;
            }
            // The physical LAPIC delivers; only NMIs and the 8259 are injected.
            self.inject_events(vcpu, host);
            return Flow::Continue;
        }
        self.lapic.poll(now);
        self.inject_events(vcpu, host);
        vcpu.set_hw_cr8(self.lapic.cr8(), self.lapic.tpr_blocked_class());
        Flow::Continue
    }

    /// Picks the event for this entry by the SDM's priorities: the
    /// single-step trap of an instruction Quercus completed, then an NMI,
    /// then the vLAPIC's highest interrupt, then the 8259's (ExtINT: the
    /// LAPIC is globally disabled or in virtual-wire mode). Whatever cannot
    /// be taken now asks for an exit when it can.
    fn inject_events<B: VcpuBackend, H: VmHost>(&mut self, vcpu: &mut B, host: &H) {
        // One NMI can wait behind a running handler, not two.
        if self.nmi_pending > 1 && vcpu.nmi_blocked() {
            self.nmi_pending = self.nmi_pending.min(1);
        }
        let extint = self.lapic.accepts_extint() && host.pic_interrupt();
        let maskable = self.lapic.pending().is_some() || extint;
        // This entry delivers a single-step trap or an NMI: whatever else
        // waits asks for an exit when it can be taken.
        let event = if core::mem::take(&mut self.single_step) {
            vcpu.single_step_trap();
            true
        } else if self.nmi_pending > 0 && vcpu.nmi_injectable() {
            // An NMI outranks every maskable interrupt.
            vcpu.inject(Event::Nmi);
            self.nmi_pending -= 1;
            self.injected += 1;
            true
        } else {
            false
        };
        if self.nmi_pending > 0 {
            vcpu.request_nmi_window(true);
        }
        if event {
            if maskable {
                vcpu.request_interrupt_window(true);
            }
            return;
        }
        if !maskable {
            return;
        }
        if !vcpu.interruptible() {
            vcpu.request_interrupt_window(true);
            return;
        }
        if let Some(vector) = self.lapic.pending() {
            vcpu.inject(Event::Interrupt { vector });
            self.lapic.accept(vector);
            self.injected += 1;
        } else if let Some(vector) = host.pic_acknowledge() {
            vcpu.inject(Event::Interrupt { vector });
            self.injected += 1;
        }
    }

    /// Whether this vCPU waits for a deferred access.
    pub fn waiting_for_io(&self) -> bool {
        self.pending_io.is_some()
    }

    /// A parked vCPU: completes its instruction if the value arrived (None:
    /// go on to enter), else sleeps once and reports [`Flow::Parked`]. A
    /// stop request abandons the access.
    fn wait_for_io<B: VcpuBackend, H: VmHost>(
        &mut self,
        vcpu: &mut B,
        host: &mut H,
    ) -> Option<Flow> {
        let pending = self.pending_io?;
        if host.stop_requested() {
            self.pending_io = None;
            return Some(Flow::Stop(StopReason::Requested));
        }
        // Device timers run (a late answer may come due) and interrupts keep
        // arriving in the vLAPIC while it waits.
        if self.pull(host).init {
            self.pending_io = None;
            return Some(self.on_init());
        }
        let done = host
            .inboxes()
            .get(self.vcpu)
            .and_then(|inbox| inbox.take_io(pending.ticket()));
        let Some(value) = done else {
            if !host.needs_attention() {
                let deadline = self.next_deadline(host);
                host.idle(deadline);
            }
            return Some(Flow::Parked);
        };
        self.pending_io = None;
        let ok = match pending {
            PendingIo::Mmio { access, gpa, .. } => {
                self.finish_mmio(vcpu, host, &access, gpa, value)
            }
            PendingIo::PortIn { size, .. } => {
                set_in_result(vcpu, size, value);
                self.retire(vcpu, host)
            }
        };
        if ok {
            None
        } else {
            Some(Flow::Stop(StopReason::Undecodable { rip: vcpu.rip() }))
        }
    }

    /// Handles one exit.
    pub fn handle<B: VcpuBackend, H: VmHost>(
        &mut self,
        vcpu: &mut B,
        host: &mut H,
        exit: VmExit,
    ) -> Flow {
        if host.stop_requested() {
            return Flow::Stop(StopReason::Requested);
        }
        if let Some(cr8) = vcpu.hw_cr8() {
            self.lapic.set_cr8(cr8);
        }
        let advance = match exit {
            VmExit::Io(io) => {
                if !io.write && !io.string {
                    match host.pio_read_deferrable(self.vcpu, io.port, io.size) {
                        IoReply::Ready(v) => set_in_result(vcpu, io.size, v),
                        IoReply::Later(ticket) => {
                            self.pending_io = Some(PendingIo::PortIn {
                                size: io.size,
                                ticket,
                            });
                            return Flow::Parked;
                        }
                    }
                    true
                } else {
                    match io_access(vcpu, host, io) {
                        PioEffect::None => true,
                        PioEffect::PowerOff => return Flow::Stop(StopReason::PowerOff),
                        PioEffect::Reset => return Flow::Stop(StopReason::Reset),
                    }
                }
            }
            VmExit::Cpuid => {
                let g = vcpu.gprs();
                let (leaf, sub) = (g.rax as u32, g.rcx as u32);
                let mut regs = self.cpuid.virtualize(leaf, sub, host.host_cpuid(leaf, sub));
                if leaf == crate::cpuid::LEAF_HV_STATS {
                    // This vCPU's exits (this one included) and the TSC: what a
                    // benchmark inside the guest, even in user space through
                    // /dev/cpu/N/cpuid, needs to count exits per operation.
                    let (exits, tsc) = (host.exit_count(), host.now());
                    regs = [
                        exits as u32,
                        (exits >> 32) as u32,
                        tsc as u32,
                        (tsc >> 32) as u32,
                    ];
                }
                if CpuidPolicy::mirrors_cr4(leaf) {
                    CpuidPolicy::reflect_guest_cr4(leaf, sub, &mut regs, vcpu.system_state().cr4);
                }
                let [a, b, c, d] = regs;
                let g = vcpu.gprs_mut();
                (g.rax, g.rbx, g.rcx, g.rdx) = (a.into(), b.into(), c.into(), d.into());
                true
            }
            VmExit::Msr(m) => self.msr(vcpu, host, m.write),
            VmExit::Hypercall => {
                let cpl = vcpu.system_state().cpl;
                let gprs = *vcpu.gprs();
                let id = host.vm_id();
                let outcome = host.with_ram(|ram| {
                    hypercall::handle(cpl, &gprs, id, &*ram, &mut |b| host.console(b))
                });
                match outcome {
                    HypercallOutcome::Return(v) => {
                        vcpu.gprs_mut().rax = v as u64;
                        true
                    }
                    HypercallOutcome::InjectGp => {
                        vcpu.inject(GP);
                        false
                    }
                    HypercallOutcome::PowerOff => return Flow::Stop(StopReason::PowerOff),
                }
            }
            VmExit::Mmio(fault) => match self.mmio(vcpu, host, fault.gpa) {
                MmioOutcome::Done => false,
                MmioOutcome::Parked => return Flow::Parked,
                MmioOutcome::Unsupported => {
                    return Flow::Stop(StopReason::UnsupportedMmio {
                        gpa: fault.gpa,
                        rip: vcpu.rip(),
                    })
                }
            },
            VmExit::Hlt => {
                if !self.retire(vcpu, host) {
                    return Flow::Stop(StopReason::Undecodable { rip: vcpu.rip() });
                }
                return self.halt(vcpu, host);
            }
            VmExit::InterruptWindow => false,
            VmExit::Xsetbv => xsetbv(vcpu, host),
            VmExit::Rdpmc => self.rdpmc(vcpu, host),
            VmExit::Forbidden { .. } => {
                vcpu.inject(UD);
                false
            }
            VmExit::ExternalInterrupt => {
                // With LAPIC passthrough this is a kick (an NMI): interrupts pending on this
                // pCPU are the guest's.
                if !self.passthrough.active {
                    host.take_host_interrupt();
                }
                false
            }
            VmExit::Shutdown => return Flow::Stop(StopReason::TripleFault { rip: vcpu.rip() }),
            VmExit::Exception { vector, error_code } => {
                vcpu.inject(Event::Exception { vector, error_code });
                false
            }
            VmExit::EntryFailed { raw } => return Flow::Stop(StopReason::EntryFailed { raw }),
            other @ (VmExit::CrAccess { .. } | VmExit::Unknown { .. }) => {
                return Flow::Stop(StopReason::Unhandled {
                    exit: other,
                    rip: vcpu.rip(),
                })
            }
        };
        if advance && !self.retire(vcpu, host) {
            return Flow::Stop(StopReason::Undecodable { rip: vcpu.rip() });
        }
        Flow::Continue
    }

    /// Moves past an instruction completed for the guest; with RFLAGS.TF
    /// set, its single-step trap follows.
    fn retire<B: VcpuBackend, H: VmHost>(&mut self, vcpu: &mut B, host: &H) -> bool {
        if !skip_instruction(vcpu, host) {
            return false;
        }
        self.note_single_step(vcpu);
        true
    }

    fn note_single_step<B: VcpuBackend>(&mut self, vcpu: &B) {
        if vcpu.rflags() & RFLAGS_TF != 0 {
            self.single_step = true;
        }
    }

    fn msr<B: VcpuBackend, H: VmHost>(&mut self, vcpu: &mut B, host: &H, write: bool) -> bool {
        let msr = vcpu.gprs().rcx as u32;
        let now = host.now();
        // The guest's TSC runs `offset` ahead of the host's (TSC-deadline values).
        let offset = vcpu.guest_tsc(now).wrapping_sub(now);
        let is_deadline = msr == crate::msr_numbers::IA32_TSC_DEADLINE;
        if write && self.passthrough.active {
            if let Some(ok) = self.passthrough_msr_write(host, msr, vcpu.gprs().edx_eax()) {
                if !ok {
                    vcpu.inject(GP);
                }
                return ok;
            }
        }
        if write {
            let value = vcpu.gprs().edx_eax();
            let ok = match self.msrs.write(msr, value) {
                MsrWrite::Backend => vcpu.write_state_msr(msr, value),
                MsrWrite::Ignore => true,
                MsrWrite::Host => host.host_wrmsr(msr, value),
                MsrWrite::Lapic => {
                    let value = if is_deadline && value != 0 {
                        value.wrapping_sub(offset).max(1)
                    } else {
                        value
                    };
                    match self.lapic.write_msr(msr, value, now) {
                        Some(action) => {
                            self.lapic_action(host, action);
                            true
                        }
                        None => false,
                    }
                }
                MsrWrite::AmdPerf(n) => match self.amd_perf_slot(host, n) {
                    Some(slot) => {
                        // The counters are 48 bits wide.
                        *slot = if n >= 4 { value & AMD_CTR_MASK } else { value };
                        true
                    }
                    None => false,
                },
                MsrWrite::Gp => {
                    if rt::cat::is_allocation_msr(msr) {
                        self.refused_allocation_msrs += 1;
                        self.refused = true;
                    }
                    false
                }
            };
            if !ok {
                vcpu.inject(GP);
            }
            ok
        } else {
            let value = match self.msrs.read(msr) {
                MsrRead::Value(v) => Some(v),
                MsrRead::Tsc => Some(vcpu.guest_tsc(now)),
                MsrRead::Backend => vcpu.read_state_msr(msr),
                MsrRead::Host => host.host_rdmsr(msr),
                MsrRead::Lapic => self.lapic.read_msr(msr, now).map(|v| {
                    if is_deadline && v != 0 {
                        v.wrapping_add(offset)
                    } else {
                        v
                    }
                }),
                MsrRead::AmdPerf(n) => self.amd_perf_slot(host, n).map(|v| *v),
                MsrRead::Gp => None,
            };
            match value {
                Some(v) => vcpu.gprs_mut().set_edx_eax(v),
                None => vcpu.inject(GP),
            }
            value.is_some()
        }
    }

    /// A WRMSR that exits while the LAPIC is passed through and needs more than the vLAPIC:
    /// the EOI of a level-triggered emulated interrupt, and IA32_APIC_BASE (the guest may not
    /// leave x2APIC mode, disable or move its LAPIC: refused, counted). `None`: the usual path.
    fn passthrough_msr_write<H: VmHost>(&mut self, host: &H, msr: u32, value: u64) -> Option<bool> {
        const EOI: u32 = 0x80B;
        match msr {
            EOI => {
                if value != 0 {
                    return Some(false);
                }
                if let Some(v) = host.physical_eoi() {
                    if self.passthrough.take_level(v) {
                        host.eoi(v);
                    }
                }
                Some(true)
            }
            crate::msr_numbers::IA32_APIC_BASE => {
                let same = self.lapic.read_msr(msr, host.now()) == Some(value);
                if !same {
                    self.passthrough.refused_apic_base += 1;
                    self.refused = true;
                }
                Some(same)
            }
            _ => None,
        }
    }

    /// RDPMC: counter ECX of the vCPU's own (non-counting) PMU: on AMD the
    /// legacy PERF_CTR0-3; anything else, or CPL > 0 without CR4.PCE, #GP.
    fn rdpmc<B: VcpuBackend, H: VmHost>(&mut self, vcpu: &mut B, host: &H) -> bool {
        let sys = vcpu.system_state();
        let index = vcpu.gprs().rcx as u32;
        let allowed = sys.cpl == 0 || sys.cr4 & CR4_PCE != 0;
        let value = match u8::try_from(index) {
            Ok(i @ 0..=3) if allowed => self.amd_perf_slot(host, 4 + i).map(|v| *v),
            _ => None,
        };
        match value {
            Some(v) => {
                vcpu.gprs_mut().set_edx_eax(v);
                true
            }
            None => {
                vcpu.inject(GP);
                false
            }
        }
    }

    /// AMD legacy performance MSR `n`, on an AMD CPU only.
    fn amd_perf_slot<H: VmHost>(&mut self, host: &H, n: u8) -> Option<&mut u64> {
        let [_, ebx, ecx, edx] = host.host_cpuid(0, 0);
        let amd = [ebx, edx, ecx] == AUTHENTIC_AMD;
        amd.then(|| self.amd_perf.get_mut(usize::from(n))).flatten()
    }

    /// HLT: the vCPU owns its pCPU, so it waits right here until a vLAPIC
    /// interrupt is pending. With interrupts off only an INIT (or the
    /// hypervisor) can wake it; in a one-vCPU VM nothing ever will: the VM stops.
    fn halt<B: VcpuBackend, H: VmHost>(&mut self, vcpu: &mut B, host: &mut H) -> Flow {
        let interrupts_on = vcpu.rflags() & (1 << 9) != 0;
        let alone = host.inboxes().len() <= 1;
        loop {
            if self.pull(host).init {
                return self.on_init();
            }
            // An NMI wakes a halted CPU whatever RFLAGS.IF says.
            if host.needs_attention() || self.nmi_pending > 0 {
                return Flow::Continue;
            }
            let now = host.now();
            self.lapic.poll(now);
            if !interrupts_on && !alone {
                // Parked (e.g. Linux's stopped CPUs): the pCPU sleeps.
                host.idle(None);
                continue;
            }
            if self.lapic.pending().is_some()
                || (self.lapic.accepts_extint() && host.pic_interrupt())
            {
                return Flow::Continue;
            }
            match self.next_deadline(host) {
                Some(deadline) => host.idle(Some(deadline)),
                None if !interrupts_on => {
                    return Flow::Stop(StopReason::HaltedWithInterruptsOff { rip: vcpu.rip() })
                }
                None => host.idle(None),
            }
        }
    }

    /// A write to this vCPU's vLAPIC page.
    fn lapic_write<H: VmHost>(&mut self, host: &H, offset: u32, value: u32, now: u64) {
        let action = self.lapic.write(offset, value, now);
        self.lapic_action(host, action);
    }

    /// After a vLAPIC write: EOIs go to the IOAPIC, ICR writes send IPIs, and
    /// the addressing registers are published for other senders.
    fn lapic_action<H: VmHost>(&mut self, host: &H, action: LapicAction) {
        match action {
            LapicAction::None => {}
            LapicAction::Eoi { vector } => host.eoi(vector),
            LapicAction::Ipi { icr, x2apic } => {
                match smp::send_ipi(host.inboxes(), self.vcpu, icr, x2apic) {
                    Ok(out) => {
                        if out.dropped {
                            self.dropped_smis += 1;
                        } else if out.targets == 0 {
                            self.ipis_to_nobody += 1;
                            self.refused = true;
                        }
                        self.kick_others(host, out.targets);
                    }
                    Err(IpiError::IllegalVector(_)) => self.lapic.send_illegal_vector(),
                }
            }
        }
        if let Some(mine) = host.inboxes().get(self.vcpu) {
            mine.publish(&self.lapic);
        }
    }

    /// An access to guest-physical memory outside RAM: the vLAPIC page, or
    /// nothing (reads return all-ones, writes are dropped, as on a PC bus).
    fn mmio<B: VcpuBackend, H: VmHost>(&mut self, vcpu: &mut B, host: &H, gpa: u64) -> MmioOutcome {
        let state = vcpu.system_state();
        let rip = vcpu.rip();
        let gprs = *vcpu.gprs();
        let Ok(access) = host.with_ram(|ram| emulate::emulate_mmio(&*ram, &state, rip, gpa, &gprs))
        else {
            return MmioOutcome::Unsupported;
        };
        let lapic_offset = self.lapic.mmio_offset(gpa);
        let read_value = match (access.needs_read(), lapic_offset) {
            (false, _) => 0,
            (true, Some(offset)) => u64::from(self.lapic.read(offset, host.now())),
            (true, None) => match host.mmio_read_deferrable(self.vcpu, gpa, access.size) {
                IoReply::Ready(v) => v,
                IoReply::Later(ticket) => {
                    self.pending_io = Some(PendingIo::Mmio {
                        access,
                        gpa,
                        ticket,
                    });
                    return MmioOutcome::Parked;
                }
            },
        };
        if self.finish_mmio(vcpu, host, &access, gpa, read_value) {
            MmioOutcome::Done
        } else {
            MmioOutcome::Unsupported
        }
    }

    /// Completes a decoded MMIO instruction with the value its read got:
    /// registers, the write-back of a read-modify-write, flags, RIP.
    fn finish_mmio<B: VcpuBackend, H: VmHost>(
        &mut self,
        vcpu: &mut B,
        host: &H,
        access: &emulate::MmioAccess,
        gpa: u64,
        read_value: u64,
    ) -> bool {
        let lapic_offset = self.lapic.mmio_offset(gpa);
        let rip = vcpu.rip();
        let rflags = vcpu.rflags();
        let Ok(done) = emulate::complete(access, read_value, vcpu.gprs_mut(), rflags) else {
            return false;
        };
        match (done.write_back, lapic_offset) {
            (Some(value), Some(offset)) => self.lapic_write(host, offset, value as u32, host.now()),
            (Some(value), None) => {
                let _ = host.mmio_write(gpa, access.size, value);
            }
            (None, _) => {}
        }
        vcpu.set_rflags(done.rflags);
        vcpu.set_rip(access.next_rip(rip));
        self.note_single_step(vcpu);
        true
    }
}

/// The register mask of a port access of `size` bytes.
fn port_mask(size: u8) -> u64 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    }
}

/// IN's result into RAX: IN EAX zero-extends, IN AL/AX merge.
fn set_in_result<B: VcpuBackend>(vcpu: &mut B, size: u8, value: u64) {
    let mask = port_mask(size);
    let g = vcpu.gprs_mut();
    g.rax = if size == 4 {
        value & mask
    } else {
        (g.rax & !mask) | (value & mask)
    };
}

/// OUT, and the string forms (not emulated: reads see all-ones, writes vanish).
fn io_access<B: VcpuBackend, H: VmHost>(vcpu: &mut B, host: &H, io: IoAccess) -> PioEffect {
    if io.string {
        return PioEffect::None;
    }
    if io.write {
        host.pio_write(
            io.port,
            io.size,
            (vcpu.gprs().rax & port_mask(io.size)) as u32,
        )
    } else {
        set_in_result(vcpu, io.size, u64::from(host.pio_read(io.port, io.size)));
        PioEffect::None
    }
}

/// XSETBV: a valid XCR0 is loaded for real on the vCPU's own pCPU; what the
/// CPU would refuse becomes #GP.
fn xsetbv<B: VcpuBackend, H: VmHost>(vcpu: &mut B, host: &mut H) -> bool {
    let g = vcpu.gprs();
    let (index, value) = (g.rcx as u32, g.edx_eax());
    let valid = index == 0
        && vcpu.system_state().cpl == 0
        && value & 1 != 0
        && value & !host.xcr0_supported() == 0
        && (value & 0b100 == 0 || value & 0b10 != 0);
    if valid {
        host.load_xcr0(value);
    } else {
        vcpu.inject(GP);
    }
    valid
}

/// Moves RIP past the instruction that exited: the hardware's length, or decoded.
fn skip_instruction<B: VcpuBackend, H: VmHost>(vcpu: &mut B, host: &H) -> bool {
    let len = vcpu.exit_instruction_len().or_else(|| {
        let state = vcpu.system_state();
        let rip = vcpu.rip();
        host.with_ram(|ram| {
            emulate::fetch(&*ram, &state, rip)
                .ok()
                .and_then(|(bytes, n)| {
                    emulate::instruction_len(&bytes[..n], emulate::bitness(&state))
                })
        })
    });
    match len {
        Some(l) => {
            vcpu.set_rip(vcpu.rip().wrapping_add(u64::from(l)));
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;
    use core::cell::{Cell, RefCell};

    use vcpu::{Gprs, MsrAccess, NptFault, SegmentState, SystemState, VecMemory};

    use super::*;
    use crate::XAPIC_BASE;

    /// A vCPU whose state is plain fields; `run` is never called here.
    #[derive(Default)]
    struct MockVcpu {
        gprs: Gprs,
        rip: u64,
        rflags: u64,
        sys: SystemState,
        injected: Vec<Event>,
        exit_len: Option<u8>,
        window: bool,
        state_msrs: Vec<(u32, u64)>,
        nmi_blocked: bool,
        nmi_window: bool,
        /// The hardware's CR8, when the mock plays a backend that keeps it.
        hw_cr8: Option<u8>,
        blocked_class: Option<u8>,
        /// LAPIC passthrough: whether the backend agrees, and whether EOI writes exit.
        can_pass: bool,
        eoi_exits: Option<bool>,
    }

    impl MockVcpu {
        /// 64-bit long mode with paging off is impossible; use 32-bit flat
        /// protected mode without paging so that RIP = guest-physical.
        fn protected() -> Self {
            MockVcpu {
                rflags: 0x2,
                sys: SystemState {
                    cr0: 0x11,
                    cs: SegmentState {
                        selector: 8,
                        base: 0,
                        limit: u32::MAX,
                        attrib: 0xC9B,
                    },
                    ..SystemState::default()
                },
                ..MockVcpu::default()
            }
        }
    }

    impl VcpuBackend for MockVcpu {
        fn run(&mut self) -> VmExit {
            unreachable!("tests drive handle() directly")
        }
        fn gprs(&self) -> &Gprs {
            &self.gprs
        }
        fn gprs_mut(&mut self) -> &mut Gprs {
            &mut self.gprs
        }
        fn rip(&self) -> u64 {
            self.rip
        }
        fn set_rip(&mut self, rip: u64) {
            self.rip = rip;
        }
        fn rsp(&self) -> u64 {
            0
        }
        fn rflags(&self) -> u64 {
            self.rflags
        }
        fn set_rflags(&mut self, rflags: u64) {
            self.rflags = rflags | 2;
        }
        fn system_state(&self) -> SystemState {
            self.sys
        }
        fn inject(&mut self, event: Event) {
            self.injected.push(event);
        }
        fn exit_instruction_len(&self) -> Option<u8> {
            self.exit_len
        }
        fn read_state_msr(&self, msr: u32) -> Option<u64> {
            self.state_msrs
                .iter()
                .find(|(m, _)| *m == msr)
                .map(|(_, v)| *v)
        }
        fn write_state_msr(&mut self, msr: u32, value: u64) -> bool {
            self.state_msrs.retain(|(m, _)| *m != msr);
            self.state_msrs.push((msr, value));
            true
        }
        fn guest_tsc(&self, host_tsc: u64) -> u64 {
            host_tsc + 5
        }
        fn interruptible(&self) -> bool {
            self.rflags & (1 << 9) != 0
        }
        fn request_interrupt_window(&mut self, on: bool) {
            self.window = on;
        }
        fn nmi_injectable(&self) -> bool {
            !self.nmi_blocked
        }
        fn request_nmi_window(&mut self, on: bool) {
            self.nmi_window = on;
        }
        fn nmi_blocked(&self) -> bool {
            self.nmi_blocked
        }
        fn hw_cr8(&self) -> Option<u8> {
            self.hw_cr8
        }
        fn set_hw_cr8(&mut self, cr8: u8, blocked_class: Option<u8>) {
            if self.hw_cr8.is_some() {
                self.hw_cr8 = Some(cr8);
            }
            self.blocked_class = blocked_class;
        }
        fn set_lapic_passthrough(&mut self) -> bool {
            self.can_pass
        }
        fn intercept_lapic_eoi(&mut self, on: bool) {
            self.eoi_exits = Some(on);
        }
    }

    struct MockHost {
        ram: RefCell<VecMemory>,
        console: RefCell<Vec<u8>>,
        writes: RefCell<Vec<(u16, u8, u32)>>,
        clock: Cell<u64>,
        xcr0: u64,
        stop: bool,
        inboxes: Vec<VcpuInbox>,
        kicked: RefCell<Vec<usize>>,
        /// Sleeps so far; from the tenth on the host wants attention.
        idles: Cell<u32>,
        /// The 8259's pending vector (INT asserted while Some).
        pic: Cell<Option<u8>>,
        /// CPUID 0 says AuthenticAMD.
        amd: bool,
        /// LAPIC passthrough: vectors raised on the "physical" LAPIC, the vectors it has in
        /// service (highest last), and EOIs passed to the virtual IOAPIC.
        raised: RefCell<Vec<u8>>,
        in_service: RefCell<Vec<u8>>,
        eois: RefCell<Vec<u8>>,
    }

    impl MockHost {
        fn new() -> Self {
            MockHost {
                ram: RefCell::new(VecMemory::new(1 << 20)),
                console: RefCell::new(Vec::new()),
                writes: RefCell::new(Vec::new()),
                clock: Cell::new(0),
                xcr0: 0,
                stop: false,
                inboxes: vec![VcpuInbox::new(0)],
                kicked: RefCell::new(Vec::new()),
                idles: Cell::new(0),
                pic: Cell::new(None),
                amd: false,
                raised: RefCell::new(Vec::new()),
                in_service: RefCell::new(Vec::new()),
                eois: RefCell::new(Vec::new()),
            }
        }
        fn with_vcpus(n: u32) -> Self {
            MockHost {
                inboxes: (0..n).map(VcpuInbox::new).collect(),
                ..Self::new()
            }
        }
        fn code(&self, at: u64, bytes: &[u8]) {
            self.ram.borrow_mut().write(at, bytes).unwrap();
        }
    }

    impl VmHost for MockHost {
        type Ram = VecMemory;
        fn vm_id(&self) -> u16 {
            7
        }
        fn with_ram<R>(&self, f: impl FnOnce(&mut VecMemory) -> R) -> R {
            f(&mut self.ram.borrow_mut())
        }
        fn console(&self, bytes: &[u8]) {
            self.console.borrow_mut().extend_from_slice(bytes);
        }
        fn pio_read(&self, port: u16, _size: u8) -> u32 {
            if port == 0x3FF {
                0x5A
            } else {
                u32::MAX
            }
        }
        fn pio_write(&self, port: u16, size: u8, value: u32) -> PioEffect {
            self.writes.borrow_mut().push((port, size, value));
            if port == 0xCF9 {
                PioEffect::Reset
            } else {
                PioEffect::None
            }
        }
        fn pio_read_deferrable(&self, vcpu: usize, port: u16, size: u8) -> IoReply {
            if port == DEFERRED_PORT {
                IoReply::Later(0x900 + vcpu as u64)
            } else {
                IoReply::Ready(u64::from(self.pio_read(port, size)))
            }
        }
        fn mmio_read_deferrable(&self, vcpu: usize, gpa: u64, _size: u8) -> IoReply {
            if gpa == DEFERRED_GPA {
                IoReply::Later(0x700 + vcpu as u64)
            } else {
                IoReply::Ready(u64::MAX)
            }
        }
        fn mmio_write(&self, gpa: u64, size: u8, value: u64) -> bool {
            self.writes
                .borrow_mut()
                .push((gpa as u16, size, value as u32));
            true
        }
        fn now(&self) -> u64 {
            // Time moves on every time anyone looks, so waits end.
            self.clock.set(self.clock.get() + 1000);
            self.clock.get()
        }
        fn pic_interrupt(&self) -> bool {
            self.pic.get().is_some()
        }
        fn pic_acknowledge(&self) -> Option<u8> {
            self.pic.take()
        }
        fn host_cpuid(&self, leaf: u32, _subleaf: u32) -> [u32; 4] {
            if leaf == 0 && self.amd {
                [0x10, AUTHENTIC_AMD[0], AUTHENTIC_AMD[2], AUTHENTIC_AMD[1]]
            } else if leaf == 1 {
                [0, 0, 1 << 5, 0] // VMX
            } else {
                [leaf, 0, 0, 0]
            }
        }
        fn xcr0_supported(&self) -> u64 {
            0b111
        }
        fn load_xcr0(&mut self, value: u64) {
            self.xcr0 = value;
        }
        fn take_host_interrupt(&mut self) {}
        fn idle(&mut self, _deadline: Option<u64>) {
            self.idles.set(self.idles.get() + 1);
        }
        fn stop_requested(&self) -> bool {
            self.stop
        }
        fn needs_attention(&self) -> bool {
            self.stop || self.idles.get() >= 10
        }
        fn inboxes(&self) -> &[VcpuInbox] {
            &self.inboxes
        }
        fn kick(&self, vcpu: usize) {
            self.kicked.borrow_mut().push(vcpu);
        }
        fn eoi(&self, vector: u8) {
            self.eois.borrow_mut().push(vector);
        }
        fn raise_physical(&self, vector: u8) {
            self.raised.borrow_mut().push(vector);
        }
        fn physical_eoi(&self) -> Option<u8> {
            self.in_service.borrow_mut().pop()
        }
    }

    fn exits() -> VcpuExits {
        VcpuExits::new(0, 1, 1_000_000_000)
    }

    /// Where the mock's devices answer later.
    const DEFERRED_GPA: u64 = 0xD100_0000;
    const DEFERRED_PORT: u16 = 0x510;

    fn mmio_fault(gpa: u64) -> VmExit {
        VmExit::Mmio(NptFault {
            gpa,
            write: false,
            fetch: false,
            present: false,
        })
    }

    #[test]
    fn a_deferred_mmio_read_parks_until_its_value_arrives() {
        let (mut v, mut h, mut e) = (MockVcpu::protected(), MockHost::new(), exits());
        h.code(0x1000, &[0x8B, 0x03]); // mov eax, [ebx]
        v.rip = 0x1000;
        v.gprs.rbx = DEFERRED_GPA;
        assert_eq!(
            e.handle(&mut v, &mut h, mmio_fault(DEFERRED_GPA)),
            Flow::Parked
        );
        assert!(e.waiting_for_io());
        assert_eq!(v.rip, 0x1000, "the instruction is not done");
        // Nothing yet: the vCPU sleeps and stays parked.
        let idles = h.idles.get();
        assert_eq!(e.before_entry(&mut v, &mut h), Flow::Parked);
        assert_eq!(
            h.idles.get(),
            idles + 1,
            "its pCPU idles instead of spinning"
        );
        // A completion for another ticket is not this access's.
        h.inboxes[0].complete_io(0x123, 5);
        assert_eq!(e.before_entry(&mut v, &mut h), Flow::Parked);
        h.inboxes[0].complete_io(0x700, 0xCAFE_F00D);
        assert_eq!(e.before_entry(&mut v, &mut h), Flow::Continue);
        assert_eq!(v.gprs.rax, 0xCAFE_F00D);
        assert_eq!(v.rip, 0x1002);
        assert!(!e.waiting_for_io());
        // The value is consumed once.
        assert_eq!(h.inboxes[0].take_io(0x700), None);
    }

    #[test]
    fn a_deferred_read_modify_write_writes_back_after_completion() {
        let (mut v, mut h, mut e) = (MockVcpu::protected(), MockHost::new(), exits());
        h.code(0x1000, &[0x01, 0x03]); // add [ebx], eax
        v.rip = 0x1000;
        v.gprs.rbx = DEFERRED_GPA;
        v.gprs.rax = 2;
        assert_eq!(
            e.handle(&mut v, &mut h, mmio_fault(DEFERRED_GPA)),
            Flow::Parked
        );
        assert!(
            h.writes.borrow().is_empty(),
            "no write before the read came back"
        );
        h.inboxes[0].complete_io(0x700, 40);
        assert_eq!(e.before_entry(&mut v, &mut h), Flow::Continue);
        assert_eq!(*h.writes.borrow(), [(DEFERRED_GPA as u16, 4, 42)]);
        assert_eq!(v.rip, 0x1002);
    }

    #[test]
    fn a_deferred_port_read_completes_into_al() {
        let (mut v, mut h, mut e) = (MockVcpu::protected(), MockHost::new(), exits());
        h.code(0x1000, &[0xEC]); // in al, dx
        v.rip = 0x1000;
        v.gprs.rax = 0x1234_5678;
        let exit = VmExit::Io(IoAccess {
            port: DEFERRED_PORT,
            size: 1,
            write: false,
            string: false,
            rep: false,
        });
        assert_eq!(e.handle(&mut v, &mut h, exit), Flow::Parked);
        h.inboxes[0].complete_io(0x900, 0xAB);
        assert_eq!(e.before_entry(&mut v, &mut h), Flow::Continue);
        assert_eq!(v.gprs.rax, 0x1234_56AB, "IN AL merges");
        assert_eq!(v.rip, 0x1001);
    }

    #[test]
    fn a_stop_ends_a_wait_for_io() {
        let (mut v, mut h, mut e) = (MockVcpu::protected(), MockHost::new(), exits());
        h.code(0x1000, &[0x8B, 0x03]);
        v.rip = 0x1000;
        v.gprs.rbx = DEFERRED_GPA;
        assert_eq!(
            e.handle(&mut v, &mut h, mmio_fault(DEFERRED_GPA)),
            Flow::Parked
        );
        h.stop = true;
        assert_eq!(
            e.before_entry(&mut v, &mut h),
            Flow::Stop(StopReason::Requested)
        );
        assert!(!e.waiting_for_io(), "the access is abandoned");
        // A late completion finds nobody waiting and changes nothing.
        h.inboxes[0].complete_io(0x700, 1);
        h.stop = false;
        assert_eq!(e.before_entry(&mut v, &mut h), Flow::Continue);
        assert_eq!(v.rip, 0x1000);
    }

    #[test]
    fn cpuid_is_virtualized_and_skipped_by_the_decoded_length() {
        let (mut v, mut h, mut e) = (MockVcpu::protected(), MockHost::new(), exits());
        h.code(0x1000, &[0x0F, 0xA2]); // cpuid
        v.rip = 0x1000;
        v.gprs.rax = 1;
        assert_eq!(e.handle(&mut v, &mut h, VmExit::Cpuid), Flow::Continue);
        assert_eq!(v.gprs.rcx & (1 << 5), 0, "VMX hidden");
        assert_ne!(v.gprs.rcx & (1 << 31), 0, "hypervisor bit");
        assert_eq!(v.rip, 0x1002);
    }

    #[test]
    fn the_statistics_leaf_reports_exits_and_the_tsc() {
        let (mut v, mut h, mut e) = (MockVcpu::protected(), MockHost::new(), exits());
        v.gprs.rax = u64::from(crate::cpuid::LEAF_HV_STATS);
        assert_eq!(e.handle(&mut v, &mut h, VmExit::Cpuid), Flow::Continue);
        // The mock counts no exits; its clock moves 1000 per look.
        assert_eq!((v.gprs.rax, v.gprs.rbx), (0, 0));
        let tsc = v.gprs.rcx | v.gprs.rdx << 32;
        assert!(tsc > 0 && tsc <= h.clock.get());
    }

    #[test]
    fn forbidden_msr_injects_gp_and_does_not_advance() {
        let (mut v, mut h, mut e) = (MockVcpu::protected(), MockHost::new(), exits());
        v.rip = 0x2000;
        v.exit_len = Some(2);
        v.gprs.rcx = 0x480; // IA32_VMX_BASIC
        assert_eq!(
            e.handle(&mut v, &mut h, VmExit::Msr(MsrAccess { write: false })),
            Flow::Continue
        );
        assert_eq!(v.injected, vec![GP]);
        assert_eq!(v.rip, 0x2000);
        v.gprs.rcx = 0x10; // IA32_TSC
        assert_eq!(
            e.handle(&mut v, &mut h, VmExit::Msr(MsrAccess { write: false })),
            Flow::Continue
        );
        assert_eq!(v.rip, 0x2002);
        assert_ne!(v.gprs.edx_eax(), 0);
    }

    #[test]
    fn port_reads_merge_into_al_and_writes_reach_the_bus() {
        let (mut v, mut h, mut e) = (MockVcpu::protected(), MockHost::new(), exits());
        v.exit_len = Some(1);
        v.gprs.rax = 0x1234_5678_9ABC_DEF0;
        let read = |port, size| {
            VmExit::Io(IoAccess {
                port,
                size,
                write: false,
                string: false,
                rep: false,
            })
        };
        e.handle(&mut v, &mut h, read(0x3FF, 1));
        assert_eq!(v.gprs.rax, 0x1234_5678_9ABC_DE5A);
        e.handle(&mut v, &mut h, read(0x80, 4));
        assert_eq!(v.gprs.rax, 0xFFFF_FFFF, "IN EAX zero-extends");
        v.gprs.rax = 0xAABB_CCDD;
        let write = VmExit::Io(IoAccess {
            port: 0x3F8,
            size: 2,
            write: true,
            string: false,
            rep: false,
        });
        e.handle(&mut v, &mut h, write);
        assert_eq!(*h.writes.borrow(), vec![(0x3F8, 2, 0xCCDD)]);
        let reset = VmExit::Io(IoAccess {
            port: 0xCF9,
            size: 1,
            write: true,
            string: false,
            rep: false,
        });
        assert_eq!(
            e.handle(&mut v, &mut h, reset),
            Flow::Stop(StopReason::Reset)
        );
    }

    #[test]
    fn hypercalls_reach_the_console_and_poweroff_stops() {
        let (mut v, mut h, mut e) = (MockVcpu::protected(), MockHost::new(), exits());
        v.exit_len = Some(3);
        h.ram.borrow_mut().write(0x5000, b"hi").unwrap();
        (v.gprs.rax, v.gprs.rdi, v.gprs.rsi) = (hypercall::HC_CONSOLE_WRITE, 0x5000, 2);
        assert_eq!(e.handle(&mut v, &mut h, VmExit::Hypercall), Flow::Continue);
        assert_eq!(v.gprs.rax, 2);
        assert_eq!(&*h.console.borrow(), b"hi");
        v.gprs.rax = hypercall::HC_VM_ID;
        e.handle(&mut v, &mut h, VmExit::Hypercall);
        assert_eq!(v.gprs.rax, 7);
        v.sys.cpl = 3;
        v.gprs.rax = hypercall::HC_POWER_OFF;
        assert_eq!(
            e.handle(&mut v, &mut h, VmExit::Hypercall),
            Flow::Continue,
            "CPL 3 gets #GP"
        );
        assert_eq!(v.injected, vec![GP]);
        v.sys.cpl = 0;
        assert_eq!(
            e.handle(&mut v, &mut h, VmExit::Hypercall),
            Flow::Stop(StopReason::PowerOff)
        );
    }

    #[test]
    fn unbacked_mmio_reads_all_ones_and_lapic_reads_its_registers() {
        let (mut v, mut h, mut e) = (MockVcpu::protected(), MockHost::new(), exits());
        h.code(0x1000, &[0x8B, 0x03]); // mov eax, [ebx]
        v.rip = 0x1000;
        v.gprs.rbx = 0xD000_0000;
        let fault = |gpa| {
            VmExit::Mmio(NptFault {
                gpa,
                write: false,
                fetch: false,
                present: false,
            })
        };
        assert_eq!(e.handle(&mut v, &mut h, fault(0xD000_0000)), Flow::Continue);
        assert_eq!(v.gprs.rax, 0xFFFF_FFFF);
        assert_eq!(v.rip, 0x1002);
        v.rip = 0x1000;
        v.gprs.rbx = XAPIC_BASE + 0x30;
        e.handle(&mut v, &mut h, fault(XAPIC_BASE + 0x30));
        assert_eq!(v.gprs.rax & 0xFF, 0x14, "LAPIC version register");
    }

    #[test]
    fn garbage_at_rip_stops_the_vm_instead_of_guessing() {
        let (mut v, mut h, mut e) = (MockVcpu::protected(), MockHost::new(), exits());
        h.code(0x1000, &[0x0F, 0xFF, 0xFF, 0xFF]);
        v.rip = 0x1000;
        let fault = VmExit::Mmio(NptFault {
            gpa: 0xD000_0000,
            write: true,
            fetch: false,
            present: false,
        });
        assert!(matches!(
            e.handle(&mut v, &mut h, fault),
            Flow::Stop(StopReason::UnsupportedMmio { .. })
        ));
        v.rip = (1 << 20) - 1; // RIP at the last byte of RAM, then nothing
        assert!(matches!(
            e.handle(&mut v, &mut h, VmExit::Cpuid),
            Flow::Stop(StopReason::Undecodable { .. })
        ));
        v.rip = u64::MAX;
        assert!(matches!(
            e.handle(&mut v, &mut h, VmExit::Hlt),
            Flow::Stop(StopReason::Undecodable { .. })
        ));
    }

    #[test]
    fn hlt_waits_for_the_timer_or_stops_when_nothing_can_wake_it() {
        let (mut v, mut h, mut e) = (MockVcpu::protected(), MockHost::new(), exits());
        v.exit_len = Some(1);
        v.rip = 0x1000;
        assert_eq!(
            e.handle(&mut v, &mut h, VmExit::Hlt),
            Flow::Stop(StopReason::HaltedWithInterruptsOff { rip: 0x1001 })
        );
        // Interrupts on, a one-shot timer armed: HLT returns once it fired.
        v.rflags |= 1 << 9;
        let now = h.now();
        e.lapic.write(0xF0, 0x1FF, now);
        e.lapic.write(0x320, 0x40, now);
        e.lapic.write(0x380, 100, now);
        assert_eq!(e.handle(&mut v, &mut h, VmExit::Hlt), Flow::Continue);
        e.before_entry(&mut v, &mut h);
        assert_eq!(v.injected, vec![Event::Interrupt { vector: 0x40 }]);
        // With interrupts masked, a pending vector asks for a window instead.
        v.rflags &= !(1 << 9);
        e.lapic.write(0xB0, 0, h.now()); // EOI the first one
        e.lapic.write(0x380, 1, h.now());
        h.clock.set(h.clock.get() + 1_000_000);
        e.before_entry(&mut v, &mut h);
        assert!(v.window);
    }

    #[test]
    fn xsetbv_loads_valid_values_and_rejects_the_rest() {
        let (mut v, mut h, mut e) = (MockVcpu::protected(), MockHost::new(), exits());
        v.exit_len = Some(3);
        for (rcx, value, ok) in [
            (0, 0b111, true),
            (0, 0b110, false),
            (0, 0b101, false),
            (1, 1, false),
            (0, 1 << 9, false),
        ] {
            v.injected.clear();
            (v.gprs.rcx, v.gprs.rax, v.gprs.rdx) = (rcx, value & 0xFFFF_FFFF, value >> 32);
            e.handle(&mut v, &mut h, VmExit::Xsetbv);
            assert_eq!(v.injected.is_empty(), ok, "xsetbv {rcx} {value:#x}");
        }
        assert_eq!(h.xcr0, 0b111);
    }

    #[test]
    fn triple_fault_entry_failure_and_stop_requests_end_the_vcpu() {
        let (mut v, mut h, mut e) = (MockVcpu::protected(), MockHost::new(), exits());
        v.rip = 0x42;
        assert_eq!(
            e.handle(&mut v, &mut h, VmExit::Shutdown),
            Flow::Stop(StopReason::TripleFault { rip: 0x42 })
        );
        assert_eq!(
            e.handle(&mut v, &mut h, VmExit::EntryFailed { raw: 33 }),
            Flow::Stop(StopReason::EntryFailed { raw: 33 })
        );
        h.stop = true;
        assert_eq!(
            e.handle(&mut v, &mut h, VmExit::Cpuid),
            Flow::Stop(StopReason::Requested)
        );
    }

    /// A 32-bit `mov [ebx], eax` at 0x1000 writing `value` to vLAPIC register `reg`.
    fn lapic_store(v: &mut MockVcpu, h: &mut MockHost, e: &mut VcpuExits, reg: u32, value: u32) {
        h.code(0x1000, &[0x89, 0x03]);
        v.rip = 0x1000;
        v.gprs.rbx = XAPIC_BASE + u64::from(reg);
        v.gprs.rax = u64::from(value);
        let exit = VmExit::Mmio(NptFault {
            gpa: XAPIC_BASE + u64::from(reg),
            write: true,
            fetch: false,
            present: false,
        });
        assert_eq!(e.handle(v, h, exit), Flow::Continue);
    }

    #[test]
    fn icr_writes_reach_the_other_vcpu_and_wake_it() {
        let mut h = MockHost::with_vcpus(2);
        let (mut v0, mut e0) = (MockVcpu::protected(), exits());
        let mut e1 = VcpuExits::new(1, 2, 1_000_000_000);
        let (mut v1, now) = (MockVcpu::protected(), h.now());
        e1.lapic.write(0xF0, 0x1FF, now);
        v1.rflags |= 1 << 9;
        lapic_store(&mut v0, &mut h, &mut e0, 0x310, 1 << 24);
        lapic_store(&mut v0, &mut h, &mut e0, 0x300, 0x0000_4051);
        assert_eq!(*h.kicked.borrow(), vec![1]);
        assert_eq!(e1.before_entry(&mut v1, &mut h), Flow::Continue);
        assert_eq!(v1.injected, vec![Event::Interrupt { vector: 0x51 }]);
        // An illegal vector is the sender's error, and nobody is woken.
        lapic_store(&mut v0, &mut h, &mut e0, 0x300, 0x0000_4005);
        assert_eq!(h.kicked.borrow().len(), 1);
        assert_ne!(e0.lapic.read(0x280, h.now()) & (1 << 5), 0);
    }

    #[test]
    fn init_to_the_bootstrap_processor_resets_the_vm() {
        // A one-vCPU VM sends itself an INIT (physical destination 0): reset.
        let mut h = MockHost::with_vcpus(1);
        let (mut v0, mut e0) = (MockVcpu::protected(), exits());
        lapic_store(&mut v0, &mut h, &mut e0, 0x310, 0);
        lapic_store(&mut v0, &mut h, &mut e0, 0x300, 0x0000_4500);
        assert_eq!(
            e0.before_entry(&mut v0, &mut h),
            Flow::Stop(StopReason::Reset)
        );
        // In an SMP VM an AP's INIT to the BSP resets it too, and the AP
        // itself waits for a start-up IPI after an INIT.
        let mut h = MockHost::with_vcpus(2);
        let (mut v0, mut e0) = (MockVcpu::protected(), exits());
        let (mut v1, mut e1) = (MockVcpu::protected(), VcpuExits::new(1, 2, 1_000_000_000));
        lapic_store(&mut v1, &mut h, &mut e1, 0x300, 0x0000_4500 | 2 << 18); // all incl. self
        assert_eq!(
            e0.before_entry(&mut v0, &mut h),
            Flow::Stop(StopReason::Reset)
        );
        assert_eq!(e1.before_entry(&mut v1, &mut h), Flow::WaitForSipi);
    }

    #[test]
    fn init_sends_a_running_vcpu_back_to_wait_for_startup() {
        let mut h = MockHost::with_vcpus(2);
        let (mut v0, mut e0) = (MockVcpu::protected(), exits());
        let (mut v1, mut e1) = (MockVcpu::protected(), VcpuExits::new(1, 2, 1_000_000_000));
        lapic_store(&mut v0, &mut h, &mut e0, 0x310, 1 << 24);
        lapic_store(&mut v0, &mut h, &mut e0, 0x300, 0x0000_4500); // INIT, assert
        assert_eq!(e1.before_entry(&mut v1, &mut h), Flow::WaitForSipi);
        lapic_store(&mut v0, &mut h, &mut e0, 0x300, 0x0000_4610); // SIPI, vector 0x10
        assert_eq!(h.inboxes[1].take_sipi(), Some(0x10));
    }

    #[test]
    fn a_parked_vcpu_of_an_smp_vm_waits_instead_of_stopping_the_vm() {
        let mut h = MockHost::with_vcpus(2);
        let (mut v, mut e) = (MockVcpu::protected(), VcpuExits::new(1, 2, 1_000_000_000));
        v.exit_len = Some(1);
        v.rip = 0x1000;
        // cli; hlt in a 2-vCPU VM: it sleeps until the hypervisor needs it.
        assert_eq!(e.handle(&mut v, &mut h, VmExit::Hlt), Flow::Continue);
        assert_eq!(h.idles.get(), 10);
        // ... or until an INIT arrives (an AP's: the BSP's would reset the VM).
        h.idles.set(0);
        let mut other = exits();
        let mut v1 = MockVcpu::protected();
        lapic_store(&mut v1, &mut h, &mut other, 0x300, 0x0000_4500 | 3 << 18);
        v.rip = 0x1000;
        assert_eq!(e.handle(&mut v, &mut h, VmExit::Hlt), Flow::WaitForSipi);
    }

    #[test]
    fn nmi_ipis_are_injected_first_and_wake_a_parked_vcpu() {
        let mut h = MockHost::with_vcpus(2);
        let (mut v0, mut e0) = (MockVcpu::protected(), exits());
        let (mut v1, mut e1) = (MockVcpu::protected(), VcpuExits::new(1, 2, 1_000_000_000));
        let now = h.now();
        e1.lapic.write(0xF0, 0x1FF, now);
        // vCPU 1 halts with interrupts off: a fixed IPI leaves it asleep...
        v1.exit_len = Some(1);
        v1.rip = 0x1000;
        lapic_store(&mut v0, &mut h, &mut e0, 0x310, 1 << 24);
        lapic_store(&mut v0, &mut h, &mut e0, 0x300, 0x0000_4051);
        assert_eq!(e1.handle(&mut v1, &mut h, VmExit::Hlt), Flow::Continue);
        assert_eq!(h.idles.get(), 10, "woken only by the hypervisor");
        // ... an NMI wakes it, and goes in before the pending interrupt.
        h.idles.set(0);
        lapic_store(&mut v0, &mut h, &mut e0, 0x300, 0x0000_4400);
        v1.rip = 0x1000;
        assert_eq!(e1.handle(&mut v1, &mut h, VmExit::Hlt), Flow::Continue);
        assert_eq!(h.idles.get(), 0);
        v1.rflags |= 1 << 9;
        e1.before_entry(&mut v1, &mut h);
        assert_eq!(v1.injected, vec![Event::Nmi]);
        assert!(v1.window, "the fixed interrupt waits for a window");
        // While NMIs are blocked (inside the handler) the next one waits.
        v1.nmi_blocked = true;
        lapic_store(&mut v0, &mut h, &mut e0, 0x300, 0x0000_4400);
        e1.before_entry(&mut v1, &mut h);
        assert_eq!(v1.injected.len(), 2, "the fixed IPI went in, not the NMI");
        assert_eq!(e1.nmi_pending, 1);
        assert!(v1.nmi_window, "an exit is asked for when NMIs unblock");
        // Without an NMI-window exit (SVM) a host timer ends the run soon.
        let soon = h.now() + 1_000_000_000 / 1_000_000 * NMI_RETRY_US;
        let retry = e1
            .next_deadline(&h)
            .expect("a deadline for the blocked NMI");
        assert!(retry <= soon + 1000, "retry at {retry}, now about {soon}");
        v1.nmi_blocked = false;
        e1.before_entry(&mut v1, &mut h);
        assert_eq!(v1.injected[2], Event::Nmi);
        assert_eq!(e1.next_deadline(&h), None, "nothing left to wait for");
    }

    const IF: u64 = 1 << 9;

    #[test]
    fn the_8259_reaches_a_virtual_wire_bsp_when_interrupts_are_on() {
        let mut h = MockHost::new();
        let (mut v, mut e) = (MockVcpu::protected(), exits());
        h.pic.set(Some(0x20));
        e.before_entry(&mut v, &mut h);
        assert!(v.injected.is_empty(), "IF clear: nothing injected");
        assert!(v.window, "an exit is asked for when IF allows");
        v.rflags |= IF;
        e.before_entry(&mut v, &mut h);
        assert_eq!(v.injected, [Event::Interrupt { vector: 0x20 }]);
        assert_eq!(h.pic.get(), None, "acknowledged (INTA)");
        // An AP's LINT0 is masked at reset: the 8259 does not reach it.
        let mut ap = VcpuExits::new(1, 2, 1_000_000_000);
        let mut v1 = MockVcpu::protected();
        v1.rflags |= IF;
        h.pic.set(Some(0x21));
        ap.before_entry(&mut v1, &mut h);
        assert!(v1.injected.is_empty());
        // The vLAPIC's own interrupt goes first; the 8259 waits its turn.
        e.lapic.raise(0x40, false);
        let mut v2 = MockVcpu::protected();
        v2.rflags |= IF;
        e.before_entry(&mut v2, &mut h);
        assert_eq!(v2.injected, [Event::Interrupt { vector: 0x40 }]);
        assert_eq!(h.pic.get(), Some(0x21));
    }

    #[test]
    fn a_halted_vcpu_wakes_for_the_8259_with_the_apic_disabled() {
        let mut h = MockHost::new();
        let (mut v, mut e) = (MockVcpu::protected(), exits());
        v.rflags |= IF;
        v.exit_len = Some(1);
        // IA32_APIC_BASE.EN = 0: the 8259 drives the core's INTR directly.
        v.gprs.rcx = 0x1B;
        v.gprs.rax = 0xFEE0_0000;
        assert_eq!(
            e.handle(&mut v, &mut h, VmExit::Msr(MsrAccess { write: true })),
            Flow::Continue
        );
        assert!(v.injected.is_empty(), "the disable is legal: no #GP");
        assert!(e.lapic.accepts_extint());
        h.pic.set(Some(0x08));
        assert_eq!(e.handle(&mut v, &mut h, VmExit::Hlt), Flow::Continue);
        e.before_entry(&mut v, &mut h);
        assert_eq!(v.injected, [Event::Interrupt { vector: 0x08 }]);
    }

    #[test]
    fn an_emulated_instruction_under_tf_raises_single_step_before_any_interrupt() {
        let mut h = MockHost::new();
        let (mut v, mut e) = (MockVcpu::protected(), exits());
        v.rflags |= IF | RFLAGS_TF;
        v.exit_len = Some(2);
        e.lapic.write(0xF0, 0x1FF, 0);
        e.lapic.raise(0x50, false);
        assert_eq!(e.handle(&mut v, &mut h, VmExit::Cpuid), Flow::Continue);
        assert_eq!(v.rip, 2);
        e.before_entry(&mut v, &mut h);
        assert_eq!(
            v.injected,
            [Event::Exception {
                vector: 1,
                error_code: None
            }]
        );
        assert!(v.window, "the interrupt waits for the next window");
        e.before_entry(&mut v, &mut h);
        assert_eq!(v.injected[1], Event::Interrupt { vector: 0x50 });
        // A faulting instruction is not completed: no single-step trap.
        let (mut v, mut e) = (MockVcpu::protected(), exits());
        v.rflags |= RFLAGS_TF;
        v.exit_len = Some(2);
        v.gprs.rcx = 0x2FFF; // unknown MSR: #GP
        e.handle(&mut v, &mut h, VmExit::Msr(MsrAccess { write: false }));
        e.before_entry(&mut v, &mut h);
        assert_eq!(v.injected, [GP]);
    }

    #[test]
    fn two_nmis_are_both_delivered_but_one_waits_behind_the_handler() {
        let mut h = MockHost::with_vcpus(2);
        let (mut v, mut e) = (MockVcpu::protected(), exits());
        // Two NMI IPIs to vCPU 0 before it runs again.
        for _ in 0..2 {
            smp::send_ipi(h.inboxes(), 1, 4 << 8, false).unwrap();
        }
        e.before_entry(&mut v, &mut h);
        assert_eq!(v.injected, [Event::Nmi]);
        assert_eq!(e.nmi_pending, 1, "the second is latched");
        assert!(v.nmi_window);
        // Inside the handler NMIs are blocked: the latch holds one, not two.
        v.nmi_blocked = true;
        smp::send_ipi(h.inboxes(), 1, 4 << 8, false).unwrap();
        e.before_entry(&mut v, &mut h);
        assert_eq!(e.nmi_pending, 1);
        assert_eq!(v.injected.len(), 1);
        v.nmi_blocked = false;
        e.before_entry(&mut v, &mut h);
        assert_eq!(v.injected, [Event::Nmi, Event::Nmi]);
        assert_eq!(e.nmi_pending, 0);
    }

    #[test]
    fn cr8_kept_by_the_hardware_is_the_vlapic_tpr() {
        let mut h = MockHost::new();
        let (mut v, mut e) = (MockVcpu::protected(), exits());
        v.hw_cr8 = Some(0xF);
        e.handle(&mut v, &mut h, VmExit::InterruptWindow);
        assert_eq!(e.lapic.tpr(), 0xF0);
        // A TPR written through the page goes back into the hardware's CR8,
        // with the class of an interrupt it holds back.
        e.lapic.write(0x80, 0x50, 0);
        e.lapic.write(0xF0, 0x1FF, 0);
        e.lapic.raise(0x45, false);
        e.before_entry(&mut v, &mut h);
        assert_eq!(v.hw_cr8, Some(5));
        assert_eq!(v.blocked_class, Some(4));
    }

    #[test]
    fn cache_allocation_msr_writes_are_refused_and_counted() {
        let mut h = MockHost::new();
        let (mut v, mut e) = (MockVcpu::protected(), exits());
        v.exit_len = Some(2);
        // IA32_PQR_ASSOC (CLOS 3), IA32_L3_QOS_MASK_0 and _5, IA32_L3_QOS_CFG.
        for (i, msr) in [0xC8Fu64, 0xC90, 0xC95, 0xC81].into_iter().enumerate() {
            v.gprs.rcx = msr;
            v.gprs.set_edx_eax(if msr == 0xC8F { 3 << 32 } else { 0xF });
            e.handle(&mut v, &mut h, VmExit::Msr(MsrAccess { write: true }));
            assert_eq!(v.injected.len(), i + 1, "{msr:#x}: #GP");
            assert_eq!(e.refused_allocation_msrs, i as u64 + 1);
        }
        assert!(v.injected.iter().all(|&ev| ev == GP));
        // Another refused MSR is not counted as one.
        v.gprs.rcx = 0xC8E;
        e.handle(&mut v, &mut h, VmExit::Msr(MsrAccess { write: true }));
        assert_eq!(e.refused_allocation_msrs, 4);
        assert_eq!(v.injected.len(), 5);
    }

    #[test]
    fn amd_legacy_counters_exist_on_amd_only_and_rdpmc_reads_them() {
        let mut h = MockHost::new();
        let (mut v, mut e) = (MockVcpu::protected(), exits());
        v.exit_len = Some(2);
        v.gprs.rcx = 0xC001_0004;
        v.gprs.set_edx_eax(u64::MAX);
        e.handle(&mut v, &mut h, VmExit::Msr(MsrAccess { write: true }));
        assert_eq!(v.injected, [GP], "an Intel CPU has no such MSR");
        h.amd = true;
        let (mut v, mut e) = (MockVcpu::protected(), exits());
        v.exit_len = Some(2);
        v.gprs.rcx = 0xC001_0005;
        v.gprs.set_edx_eax(u64::MAX);
        e.handle(&mut v, &mut h, VmExit::Msr(MsrAccess { write: true }));
        assert!(v.injected.is_empty());
        v.gprs.rcx = 1;
        e.handle(&mut v, &mut h, VmExit::Rdpmc);
        assert_eq!(v.gprs.edx_eax(), (1 << 48) - 1, "48-bit counters");
        v.gprs.rcx = 4;
        e.handle(&mut v, &mut h, VmExit::Rdpmc);
        assert_eq!(v.injected, [GP], "counter 4 does not exist");
        // CPL 3 without CR4.PCE: #GP.
        v.sys.cpl = 3;
        v.gprs.rcx = 0;
        e.handle(&mut v, &mut h, VmExit::Rdpmc);
        assert_eq!(v.injected, [GP, GP]);
    }

    /// WRMSR `msr` = `value` through an exit.
    fn wrmsr(e: &mut VcpuExits, v: &mut MockVcpu, h: &mut MockHost, msr: u32, value: u64) -> Flow {
        v.exit_len = Some(2);
        v.gprs.rcx = u64::from(msr);
        v.gprs.rax = value & 0xFFFF_FFFF;
        v.gprs.rdx = value >> 32;
        e.handle(v, h, VmExit::Msr(MsrAccess { write: true }))
    }

    const APIC_X2: u64 = 0xFEE0_0000 | (1 << 11) | (1 << 10) | (1 << 8);

    /// A real-time vCPU in x2APIC mode with its LAPIC passed through.
    fn passed_through() -> (VcpuExits, MockVcpu, MockHost) {
        let (mut v, mut h, mut e) = (MockVcpu::protected(), MockHost::with_vcpus(2), exits());
        v.can_pass = true;
        e.passthrough.allowed = true;
        assert_eq!(wrmsr(&mut e, &mut v, &mut h, 0x1B, APIC_X2), Flow::Continue);
        assert!(e.passthrough_due());
        e.start_passthrough(&h);
        assert!(!e.passthrough_due());
        (e, v, h)
    }

    #[test]
    fn passthrough_starts_in_x2apic_mode_with_the_vlapic_state_handed_over() {
        let (mut v, mut h, mut e) = (MockVcpu::protected(), MockHost::new(), exits());
        e.passthrough.allowed = true;
        e.lapic.write(0xF0, 0x1FF, 0);
        // TSC-deadline mode, vector 0x40, armed; one edge and one level interrupt requested,
        // a level one in service.
        e.lapic.write(0x320, (2 << 17) | 0x40, 0);
        e.lapic.write_msr(0x6E0, 50_000, 0);
        e.lapic.raise(0x41, false);
        e.lapic.raise(0x62, true);
        e.lapic.raise(0x70, true);
        e.lapic.accept(0x70);
        assert!(!e.passthrough_due(), "xAPIC mode: not yet");
        assert_eq!(wrmsr(&mut e, &mut v, &mut h, 0x1B, APIC_X2), Flow::Continue);
        assert!(v.injected.is_empty());
        assert!(e.passthrough_due());
        let handover = e.start_passthrough(&h);
        assert_eq!(handover.svr, 0x1FF);
        assert_eq!(handover.lvt_timer, (2 << 17) | 0x40);
        assert_eq!(handover.tsc_deadline, 50_000);
        let pending: Vec<u8> = handover.pending_vectors().collect();
        assert_eq!(pending, [0x41, 0x62]);
        assert_eq!(
            *h.eois.borrow(),
            [0x70],
            "the level one in service is retired now"
        );
        assert_eq!(
            e.lapic.next_deadline(),
            None,
            "the virtual timer is disarmed"
        );
        assert_eq!(e.lapic.pending(), None);
        assert!(e.passthrough.active);
        // Not allowed (a standard VM, or a CPU that cannot): never due.
        let mut other = exits();
        other.lapic.write_msr(0x1B, APIC_X2, 0);
        assert!(!other.passthrough_due());
    }

    #[test]
    fn passed_through_interrupts_go_to_the_physical_lapic_and_level_eois_exit_until_retired() {
        let (mut e, mut v, mut h) = passed_through();
        // An edge IPI to itself (ICR self shorthand) and a level-triggered IOAPIC message.
        assert_eq!(
            wrmsr(&mut e, &mut v, &mut h, 0x830, (1 << 18) | 0x45),
            Flow::Continue
        );
        let d = Delivery {
            pin: 10,
            dest: 0,
            dest_mode: vdev::DestinationMode::Physical,
            mode: vdev::DeliveryMode::Fixed,
            vector: 0x66,
            level: true,
        };
        smp::route(&h.inboxes, &d);
        assert_eq!(e.before_entry(&mut v, &mut h), Flow::Continue);
        assert_eq!(*h.raised.borrow(), [0x45, 0x66]);
        assert!(
            v.injected.is_empty(),
            "nothing is injected: the physical LAPIC delivers"
        );
        assert_eq!(
            v.eoi_exits,
            Some(true),
            "a level interrupt's EOI must be seen"
        );
        // The guest's EOI of the edge IPI: not the IOAPIC's business.
        h.in_service.borrow_mut().push(0x45);
        assert_eq!(wrmsr(&mut e, &mut v, &mut h, 0x80B, 0), Flow::Continue);
        assert!(h.eois.borrow().is_empty());
        // A non-zero EOI write is #GP, as on the hardware.
        assert_eq!(wrmsr(&mut e, &mut v, &mut h, 0x80B, 1), Flow::Continue);
        assert_eq!(v.injected, [GP]);
        v.injected.clear();
        h.in_service.borrow_mut().push(0x66);
        assert_eq!(wrmsr(&mut e, &mut v, &mut h, 0x80B, 0), Flow::Continue);
        assert_eq!(*h.eois.borrow(), [0x66]);
        e.before_entry(&mut v, &mut h);
        assert_eq!(
            v.eoi_exits,
            Some(false),
            "no level interrupt left: EOIs pass again"
        );
    }

    #[test]
    fn a_passed_through_guest_stays_in_x2apic_mode_and_reaches_only_its_own_vcpus() {
        let (mut e, mut v, mut h) = passed_through();
        // Leaving x2APIC mode, disabling or moving the LAPIC: #GP, counted.
        for value in [0xFEE0_0000 | (1 << 11), 0, APIC_X2 + 0x1000] {
            v.injected.clear();
            assert_eq!(wrmsr(&mut e, &mut v, &mut h, 0x1B, value), Flow::Continue);
            assert_eq!(v.injected, [GP], "{value:#x}");
        }
        assert_eq!(e.passthrough.refused_apic_base, 3);
        v.injected.clear();
        assert_eq!(wrmsr(&mut e, &mut v, &mut h, 0x1B, APIC_X2), Flow::Continue);
        assert!(v.injected.is_empty(), "writing the same value is no change");
        // IPIs to APIC IDs no vCPU of this VM has (another VM's, a physical one), an NMI to
        // them, an INIT and a SIPI: nobody.
        for icr in [
            (5u64 << 32) | 0x40,
            (0x55 << 32) | 0x400,
            (7 << 32) | 0x4500,
            (9 << 32) | 0x4610,
        ] {
            assert_eq!(wrmsr(&mut e, &mut v, &mut h, 0x830, icr), Flow::Continue);
        }
        assert!(h.kicked.borrow().is_empty());
        assert!(!h.inboxes[1].has_news());
        assert_eq!(e.ipis_to_nobody, 4);
        assert!(e.refused, "the run loop is told to report");
        // One to vCPU 1 (x2APIC ID 1) reaches it.
        assert_eq!(
            wrmsr(&mut e, &mut v, &mut h, 0x830, (1 << 32) | 0x40),
            Flow::Continue
        );
        assert_eq!(*h.kicked.borrow(), [1]);
        assert!(h.inboxes[1].has_news());
        // The guest reads its virtual APIC ID and LDR.
        v.gprs.rcx = 0x802;
        e.handle(&mut v, &mut h, VmExit::Msr(MsrAccess { write: false }));
        assert_eq!(v.gprs.rax, 0);
        v.gprs.rcx = 0x80D;
        e.handle(&mut v, &mut h, VmExit::Msr(MsrAccess { write: false }));
        assert_eq!(v.gprs.rax, 1);
    }
}
