//! The VM-wide services the exit handlers use ([`vm::VmHost`]), for one vCPU on its pCPU: RAM,
//! the PC platform's devices, the console, the vCPU inboxes, the clock and the host CPU.

use alloc::vec::Vec;

use crate::lifecycle::{Request, VcpuEvent, VcpuRun};
use crate::platform::{Platform, TscScale};
use crate::vm::{VcpuSlot, Vm};

/// The VM-wide services the exit handlers use, for one vCPU on this pCPU.
pub(crate) struct Host<'a, P: Platform> {
    pub vm: &'a Vm<P>,
    pub pcpu: u16,
    pub slot: &'a VcpuSlot,
    pub p: &'a P,
    /// The TSC rate's conversions, computed once.
    pub scale: TscScale,
    /// A real-time VM's timer advance (`None` for other VMs).
    pub advance: Option<crate::timer_advance::TimerAdvance>,
}

impl<P: Platform> Host<'_, P> {
    fn tsc_to_ns(&self, tsc: u64) -> u64 {
        self.scale.to_ns(tsc)
    }

    fn ns_to_tsc(&self, ns: u64) -> u64 {
        self.scale.to_tsc(ns)
    }
}

impl<P: Platform> vm::VmHost for Host<'_, P> {
    type Ram = P::Ram;

    fn vm_id(&self) -> u16 {
        self.vm.id.0
    }

    fn with_ram<R>(&self, f: impl FnOnce(&mut P::Ram) -> R) -> R {
        f(&mut self.vm.ram.clone())
    }

    fn console(&self, bytes: &[u8]) {
        self.vm.console.push_out(bytes);
    }

    fn pio_read(&self, port: u16, size: u8) -> u32 {
        let now = self.tsc_to_ns(self.p.now());
        self.vm.platform.with(|p| p.pio_read(port, size, now))
    }

    fn pio_write(&self, port: u16, size: u8, value: u32) -> vm::PioEffect {
        let mut out = Vec::new();
        let now = self.tsc_to_ns(self.p.now());
        let (effect, slat) = self.vm.platform.with(|p| {
            let effect = p.pio_write(port, size, value, now);
            p.take_console_output(&mut out);
            (effect, p.take_slat_ops())
        });
        if !slat.is_empty() {
            self.vm.apply_slat_ops(slat, &|v| self.kick(v));
        }
        if !out.is_empty() {
            self.vm.console.push_out(&out);
        }
        effect
    }

    fn pio_read_deferrable(&self, vcpu: usize, port: u16, size: u8) -> vm::IoReply {
        let now = self.tsc_to_ns(self.p.now());
        let reply = self
            .vm
            .platform
            .with(|p| p.read_from(vcpu, vm::Space::Pio, u64::from(port), size, now));
        reply.unwrap_or(vm::IoReply::Ready(u64::from(vm::unmapped_read(size))))
    }

    fn mmio_read_deferrable(&self, vcpu: usize, gpa: u64, size: u8) -> vm::IoReply {
        let now = self.tsc_to_ns(self.p.now());
        let reply = self
            .vm
            .platform
            .with(|p| p.read_from(vcpu, vm::Space::Mmio, gpa, size, now));
        reply.unwrap_or(vm::IoReply::Ready(u64::MAX))
    }

    fn mmio_read(&self, gpa: u64, size: u8) -> Option<u64> {
        let now = self.tsc_to_ns(self.p.now());
        self.vm.platform.with(|p| p.mmio_read(gpa, size, now))
    }

    fn mmio_write(&self, gpa: u64, size: u8, value: u64) -> bool {
        let now = self.tsc_to_ns(self.p.now());
        let (done, slat) = self
            .vm
            .platform
            .with(|p| (p.mmio_write(gpa, size, value, now), p.take_slat_ops()));
        if !slat.is_empty() {
            self.vm.apply_slat_ops(slat, &|v| self.kick(v));
        }
        done
    }

    fn poll_devices(&self, deliver: &mut dyn FnMut(&vm::Delivery)) {
        let now = self.tsc_to_ns(self.p.now());
        // Input a backend brought (frames, console bytes) is served here.
        let news = self.vm.io.as_ref().is_some_and(|io| io.take_news());
        // Nothing due and nothing to hand out: no lock.
        if !news && !self.vm.platform.needs_poll(now) {
            return;
        }
        let (deliveries, answers) = self.vm.platform.with(|p| {
            if news {
                p.serve_backends();
            }
            p.poll(now);
            (p.take_deliveries(), p.take_completed_reads())
        });
        // Late device answers go to the vCPUs that wait for them.
        for (vcpu, ticket, value) in answers {
            if let Some(inbox) = self.vm.inboxes.get(vcpu) {
                inbox.complete_io(ticket, value);
                self.kick(vcpu);
            }
        }
        for d in &deliveries {
            log::debug!(
                "vm {}: IOAPIC delivers vector {:#x} to {:?} {}",
                self.vm.cfg.name,
                d.vector,
                d.dest_mode,
                d.dest
            );
            deliver(d);
        }
    }

    fn inboxes(&self) -> &[vm::VcpuInbox] {
        &self.vm.inboxes
    }

    fn kick(&self, vcpu: usize) {
        let Some(&p) = self.vm.cfg.pcpus.get(vcpu) else {
            return;
        };
        // A vCPU whose LAPIC is passed through takes edge-triggered interrupts from its
        // physical LAPIC, without an exit; only what needs its run loop is an NMI kick.
        if let Some(inbox) = self.vm.inboxes.get(vcpu).filter(|b| b.is_passthrough()) {
            inbox.take_edges(|v| self.p.send_vector(p, v));
            if !inbox.needs_owner() {
                return;
            }
        }
        self.p.kick(p);
    }

    fn raise_physical(&self, vector: u8) {
        self.p.send_vector(self.pcpu, vector);
    }

    fn physical_eoi(&self) -> Option<u8> {
        self.p.physical_eoi()
    }

    fn device_deadline(&self) -> Option<u64> {
        self.vm.platform.deadline_ns().map(|ns| self.ns_to_tsc(ns))
    }

    fn pic_interrupt(&self) -> bool {
        self.vm.platform.pic_interrupt()
    }

    fn pic_acknowledge(&self) -> Option<u8> {
        Some(self.vm.platform.with(|p| p.pic_acknowledge()))
    }

    fn eoi(&self, vector: u8) {
        self.vm.platform.with(|p| p.eoi(vector));
    }

    fn now(&self) -> u64 {
        self.p.now()
    }

    fn exit_count(&self) -> u64 {
        // The run loop records an exit before handling it.
        self.slot.stats.lock().total()
    }

    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        self.p.host_cpuid(leaf, subleaf)
    }

    fn xcr0_supported(&self) -> u64 {
        self.p.xcr0_supported()
    }

    fn load_xcr0(&mut self, value: u64) {
        // The dispatcher checked `value` against the CPU's components.
        self.p.load_xcr0(value);
    }

    fn host_rdmsr(&self, msr: u32) -> Option<u64> {
        self.p.host_rdmsr(msr)
    }

    fn host_wrmsr(&self, msr: u32, value: u64) -> bool {
        self.p.host_wrmsr(msr, value)
    }

    fn take_host_interrupt(&mut self) {
        self.p.take_host_interrupt();
    }

    fn idle(&mut self, deadline: Option<u64>) {
        use crate::timer_advance::Plan;
        let now = self.p.now();
        let plan = match (deadline, self.advance.as_ref()) {
            // A real-time vCPU wakes early by the learned cost, then spins to the deadline.
            (Some(d), Some(advance)) => Some(advance.plan(now, d)),
            _ => None,
        };
        match (deadline, plan) {
            (Some(d), Some(Plan::Spin)) => {
                while self.p.now() < d && !self.needs_attention() {
                    core::hint::spin_loop();
                }
                return;
            }
            (_, Some(Plan::Sleep { after })) => self.p.arm_timer(Some(after)),
            (Some(d), None) => self.p.arm_timer(Some(d.saturating_sub(now))),
            (None, _) => {}
        }
        // A vCPU parked on a deferred access stays "waiting for an I/O
        // completion" while its pCPU sleeps; a halted one is "halted".
        let halting = self.slot.run() == VcpuRun::Running;
        if halting {
            self.slot.event(VcpuEvent::Halt);
        }
        self.p.wait_for_interrupt();
        if halting {
            self.slot.event(VcpuEvent::Wake);
        }
        if let (Some(d), Some(a)) = (deadline, self.advance.as_mut()) {
            a.learn(d, self.p.now());
        }
    }

    fn stop_requested(&self) -> bool {
        matches!(self.vm.request(), Request::Stop | Request::Reset)
    }

    fn needs_attention(&self) -> bool {
        self.vm.request() != Request::Run || self.p.mailbox_pending(self.pcpu)
    }
}
