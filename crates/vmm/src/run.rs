//! The per-vCPU run loop each pCPU runs for the vCPU posted to it: enter the guest, handle the
//! exit, look at the VM's request; hold while paused, wait for a start-up IPI after an INIT,
//! report how the VM ended, and boot it again after the guest reset it.

use core::fmt;
use core::sync::atomic::Ordering;

use log::{error, info, warn};
use vcpu::{InitialState, VcpuBackend};
use vm::{Flow, StopReason};

use crate::host::Host;
use crate::lifecycle::{
    GuestReset, Left, Lifecycle, Request, StopKind, VcpuEvent, VcpuRun, VcpuStep,
};
use crate::manager::Vmm;
use crate::platform::{spin_until, Platform, TscScale, VcpuSpec, WithVcpu};
use crate::vm::{initial_state, Vm};

/// How long the guest's last console bytes may hold up the report of its end, and how long a
/// rebooting vCPU waits for the others to leave, in microseconds.
const REPORT_WAIT_US: u64 = 2_000_000;

/// How a vCPU's time on its pCPU ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunEnd {
    /// The VM stopped, crashed, or another vCPU is rebooting it.
    Left,
    /// This vCPU saw the guest reset the platform: it boots the VM again.
    Reboot,
    /// Another vCPU sent an INIT: wait for a start-up IPI.
    WaitForSipi,
}

/// The run loop as the code the platform runs with a new vCPU.
struct RunLoop<'a, P: Platform> {
    vmm: &'a Vmm<P>,
    vm: &'a Vm<P>,
    vcpu_id: u16,
}

impl<P: Platform> WithVcpu for RunLoop<'_, P> {
    type Output = RunEnd;

    fn run<B: VcpuBackend>(self, vcpu: &mut B) -> RunEnd {
        self.vmm.run_loop(self.vm, self.vcpu_id, vcpu)
    }
}

impl<P: Platform> Vmm<P> {
    /// Called by an idle pCPU: runs the vCPUs posted to it, if any.
    pub fn run_posted(&self, pcpu: u16) {
        while let Some(task) = self.take_task(pcpu) {
            // The task keeps its VM out of reach of a destroy: it is still in the table.
            let Some(vm) = self.table.get(task.vm) else {
                continue;
            };
            self.platform.prepare_pcpu();
            let end = self.run_vcpu(&vm, task.vcpu, pcpu);
            if let Some(slot) = vm.vcpus.get(usize::from(task.vcpu)) {
                slot.event(VcpuEvent::Leave);
            }
            if end == RunEnd::Reboot {
                self.reboot(&vm, task.vcpu);
            } else {
                self.leave(&vm);
            }
        }
    }

    /// A vCPU of `vm` left its pCPU for good.
    pub(crate) fn leave(&self, vm: &Vm<P>) {
        if vm.lifecycle.report(Lifecycle::leave) == Left::StoppedTheVm {
            info!("vm {}: stopped: every vCPU left", vm.cfg.name);
            info!("vm {}: exits {}", vm.cfg.name, vm.exit_totals());
        }
        // The last vCPU out of a stopped VM: its vUART links' peers see the cable go dead (and
        // never wait on it). Idempotent, so two last vCPUs racing here do no harm.
        let l = vm.lifecycle();
        if l.active() == 0 && l.state() == crate::lifecycle::VmState::Stopped {
            vm.platform.with(|p| p.disconnect_links());
        }
    }

    /// Runs vCPU `vcpu_id` of `vm` on pCPU `pcpu`: the BSP from the kernel's
    /// entry, an AP from each start-up IPI the guest sends it.
    fn run_vcpu(&self, vm: &Vm<P>, vcpu_id: u16, pcpu: u16) -> RunEnd {
        // A VM stopped (or reset) before this vCPU got to its pCPU does not run the guest.
        if VcpuRun::Off.step(vm.request()) == VcpuStep::Leave {
            if vm.request() == Request::Stop {
                self.report_stop(
                    vm,
                    StopKind::Operator,
                    format_args!("vCPU {vcpu_id}: stopped by the operator"),
                );
            }
            return RunEnd::Left;
        }
        let mut start = if vcpu_id == 0 {
            let Some(entry) = vm.entry() else {
                return RunEnd::Left;
            };
            Some(initial_state(&entry))
        } else {
            None
        };
        loop {
            let slot = vm.vcpus.get(usize::from(vcpu_id));
            let init = match start.take() {
                Some(s) => s,
                None => match self.wait_for_sipi(vm, vcpu_id, pcpu) {
                    Some(vector) => InitialState::startup_ipi(vector),
                    None => return RunEnd::Left,
                },
            };
            info!(
                "vm {}: vCPU {} starts at {:#x}",
                vm.cfg.name,
                vcpu_id,
                init.cs.base + init.rip
            );
            if let Some(slot) = slot {
                slot.event(VcpuEvent::Start);
            }
            let spec = VcpuSpec {
                vm: vm.id,
                vcpu: vcpu_id,
                slat_root: vm.slat_root,
            };
            let body = RunLoop {
                vmm: self,
                vm,
                vcpu_id,
            };
            let end = match self.platform.with_new_vcpu(spec, &init, body) {
                Ok(end) => end,
                Err(e) => {
                    self.report_stop(vm, StopKind::Crash, format_args!("{e}"));
                    RunEnd::Left
                }
            };
            if end != RunEnd::WaitForSipi {
                return end;
            }
        }
    }

    /// Runs vCPU `vcpu_id` until it leaves the guest for good or is sent an INIT; a LAPIC it
    /// passed through is the host's again afterwards.
    fn run_loop<B: VcpuBackend>(&self, vm: &Vm<P>, vcpu_id: u16, vcpu: &mut B) -> RunEnd {
        let end = self.run_guest(vm, vcpu_id, vcpu);
        if let Some(inbox) = vm.inboxes.get(usize::from(vcpu_id)) {
            if inbox.is_passthrough() {
                inbox.set_passthrough(false);
                self.platform.leave_lapic_passthrough();
                info!(
                    "vm {}: vCPU {vcpu_id}: LAPIC passthrough ended; pCPU {} has its LAPIC back",
                    vm.cfg.name,
                    vm.pcpu_of(vcpu_id).unwrap_or(0)
                );
            }
        }
        end
    }

    #[cold]
    #[inline(never)]
    /// The guest switched to x2APIC mode and may have its LAPIC: the backend stops the LAPIC's
    /// exits, the physical LAPIC takes over the virtual one's state, senders deliver to it.
    fn start_passthrough<B: VcpuBackend>(
        &self,
        vm: &Vm<P>,
        vcpu_id: u16,
        vcpu: &mut B,
        exits: &mut vm::VcpuExits,
        host: &Host<'_, P>,
    ) {
        let pcpu = vm.pcpu_of(vcpu_id).unwrap_or(0);
        if !vcpu.set_lapic_passthrough() {
            exits.passthrough.allowed = false;
            warn!(
                "vm {}: vCPU {vcpu_id}: the backend cannot pass the LAPIC through; it stays virtual",
                vm.cfg.name
            );
            return;
        }
        let handover = exits.start_passthrough(host);
        self.platform.enter_lapic_passthrough(&handover);
        if let Some(inbox) = vm.inboxes.get(usize::from(vcpu_id)) {
            inbox.set_passthrough(true);
        }
        info!(
            "vm {}: vCPU {vcpu_id}: x2APIC mode: LAPIC passthrough on pCPU {pcpu} (timer, EOI, TPR and interrupts without exits)",
            vm.cfg.name
        );
    }

    /// The run loop proper (see [`Vmm::run_loop`]).
    fn run_guest<B: VcpuBackend>(&self, vm: &Vm<P>, vcpu_id: u16, vcpu: &mut B) -> RunEnd {
        let p = &self.platform;
        let mut exits = vm::VcpuExits::new(vcpu_id, vm.cfg.vcpus, p.tsc_hz());
        exits.passthrough.allowed = vm.is_rt() && p.lapic_passthrough_for(vm.cfg);
        let pcpu = vm.pcpu_of(vcpu_id).unwrap_or(0);
        let Some(slot) = vm.vcpus.get(usize::from(vcpu_id)) else {
            return RunEnd::Left;
        };
        let mut host = Host {
            vm,
            pcpu,
            slot,
            p,
            scale: TscScale::new(p.tsc_hz()),
            // At most 50 us early (a wake-up never costs that much on real hardware).
            advance: vm
                .is_rt()
                .then(|| crate::timer_advance::TimerAdvance::new(p.tsc_hz() / 20_000)),
        };
        let mut left_guest = p.now();
        // This vCPU waits for a deferred access (shown as such by the shell).
        let mut parked = false;
        // Exits taken in this boot (for the fault-injection hook).
        let mut exit_count = 0u64;
        // Refused guest requests already reported.
        let mut refusals = Refusals::default();
        loop {
            let mut flow = Flow::Continue;
            // The guest is entered only while the VM is asked to run: a vCPU that was asked to
            // pause or stop before its (next) entry does not run the guest first.
            if vm.request() == Request::Run {
                flow = exits.before_entry(vcpu, &mut host);
                if flow == Flow::Continue {
                    let entered = p.now();
                    // A host timer ends the guest's run at the next virtual timer deadline
                    // (not with LAPIC passthrough: the timer is the guest's).
                    if !exits.passthrough.active {
                        p.arm_timer(
                            exits
                                .next_deadline(&host)
                                .map(|d| d.saturating_sub(entered)),
                        );
                    }
                    slot.hv_cycles
                        .fetch_add(entered.wrapping_sub(left_guest), Ordering::Relaxed);
                    let break_after = slot.break_entry_after.load(Ordering::Relaxed);
                    if break_after != 0 && exit_count >= break_after {
                        slot.break_entry_after.store(0, Ordering::Relaxed);
                        // Not inside the log macro: its arguments run only when it logs.
                        let broken = vcpu.break_next_entry();
                        warn!(
                            "vm {}: vCPU {vcpu_id}: fault injection: the next entry is made to fail{}",
                            vm.cfg.name,
                            if broken { "" } else { " (not supported by this backend)" }
                        );
                    }
                    let exit = vcpu.run();
                    exit_count += 1;
                    left_guest = p.now();
                    slot.guest_cycles
                        .fetch_add(left_guest.wrapping_sub(entered), Ordering::Relaxed);
                    slot.stats.lock().record(&exit);
                    slot.injected.store(exits.injected, Ordering::Relaxed);
                    flow = exits.handle(vcpu, &mut host, exit);
                    if exits.passthrough_due() {
                        self.start_passthrough(vm, vcpu_id, vcpu, &mut exits, &host);
                    }
                    // One flag per exit; the reports themselves are out of line.
                    if exits.refused {
                        exits.refused = false;
                        refusals.report(&exits, vm.cfg.name, vcpu_id);
                    }
                }
                // The shell shows a vCPU parked on a deferred access as such
                // (tracked locally: the common exit pays no atomic load).
                match (flow, parked) {
                    (Flow::Parked, false) => {
                        parked = true;
                        slot.event(VcpuEvent::WaitForIo);
                    }
                    // Completed, or abandoned for an INIT or a stop.
                    (f, true) if f != Flow::Parked => {
                        parked = false;
                        slot.event(VcpuEvent::IoDone);
                    }
                    _ => {}
                }
            }
            p.service_mailbox(pcpu, Some(&*vcpu));
            match (flow, vm.request()) {
                // Another vCPU (or pCPU 0) already decided the VM's fate.
                (_, Request::Reset) => return RunEnd::Left,
                (_, Request::Stop) if !vm.state().is_live() => return RunEnd::Left,
                (Flow::Stop(StopReason::Requested), _) | (_, Request::Stop) => {
                    self.report_stop(
                        vm,
                        StopKind::Operator,
                        format_args!("vCPU {vcpu_id}: stopped by the operator"),
                    );
                    return RunEnd::Left;
                }
                (Flow::Stop(StopReason::Reset), _) => return self.guest_reset(vm, vcpu_id),
                (Flow::Stop(reason @ StopReason::PowerOff), _) => {
                    self.report_stop(
                        vm,
                        StopKind::PowerOff,
                        format_args!("vCPU {vcpu_id}: {reason}"),
                    );
                    return RunEnd::Left;
                }
                (Flow::Stop(reason), _) => {
                    self.report_stop(
                        vm,
                        StopKind::Crash,
                        format_args!("vCPU {vcpu_id}: {reason}"),
                    );
                    return RunEnd::Left;
                }
                (Flow::WaitForSipi, _) => {
                    info!(
                        "vm {}: vCPU {vcpu_id}: INIT; waiting for a start-up IPI",
                        vm.cfg.name
                    );
                    return RunEnd::WaitForSipi;
                }
                (Flow::Continue | Flow::Parked, Request::Pause) => {
                    if !self.pause_here(vm, pcpu, &*vcpu) {
                        return RunEnd::Left;
                    }
                }
                // Parked: waiting for a deferred access; before_entry looks again.
                (Flow::Continue | Flow::Parked, Request::Run) => {}
            }
        }
    }

    /// The guest reset its platform (seen by vCPU `vcpu_id`): unless the VM's fate was already
    /// decided, every other vCPU leaves and this one boots it again.
    fn guest_reset(&self, vm: &Vm<P>, vcpu_id: u16) -> RunEnd {
        match vm.lifecycle.report(Lifecycle::guest_reset) {
            GuestReset::Reboot => {
                info!(
                    "vm {}: vCPU {vcpu_id}: reset by the guest; booting it again",
                    vm.cfg.name
                );
                self.kick_vcpus(vm);
                RunEnd::Reboot
            }
            GuestReset::StopInstead => {
                self.report_stop(
                    vm,
                    StopKind::Operator,
                    format_args!("vCPU {vcpu_id}: stopped by the operator"),
                );
                RunEnd::Left
            }
            GuestReset::Leave => RunEnd::Left,
        }
    }

    /// Waits on this pCPU while the VM is paused (answering mailbox requests);
    /// false if it was stopped or reset instead of resumed.
    fn pause_here(&self, vm: &Vm<P>, pcpu: u16, vcpu: &dyn VcpuBackend) -> bool {
        let p = &self.platform;
        if vm.lifecycle.report(Lifecycle::report_paused) {
            info!("vm {}: paused", vm.cfg.name);
        }
        loop {
            p.service_mailbox(pcpu, Some(vcpu));
            match vm.request() {
                Request::Pause => p.wait_for_interrupt(),
                Request::Run => {
                    if vm.lifecycle.report(Lifecycle::report_resumed) {
                        info!("vm {}: resumed", vm.cfg.name);
                    }
                    return true;
                }
                Request::Stop => {
                    self.report_stop(
                        vm,
                        StopKind::Operator,
                        format_args!("stopped by the operator"),
                    );
                    return false;
                }
                Request::Reset => return false,
            }
        }
    }

    /// An application processor before (or after an INIT): it waits on its pCPU
    /// for a start-up IPI; `None` if the VM stops or reboots first.
    fn wait_for_sipi(&self, vm: &Vm<P>, vcpu_id: u16, pcpu: u16) -> Option<u8> {
        let p = &self.platform;
        let inbox = vm.inboxes.get(usize::from(vcpu_id))?;
        if let Some(slot) = vm.vcpus.get(usize::from(vcpu_id)) {
            slot.event(VcpuEvent::Init);
        }
        loop {
            p.service_mailbox(pcpu, None);
            if VcpuRun::WaitingForSipi.step(vm.request()) == VcpuStep::Leave {
                return None;
            }
            // A second INIT just keeps it waiting.
            inbox.take_init();
            if let Some(vector) = inbox.take_sipi() {
                return Some(vector);
            }
            // Interrupts are off here: a kick that lands before the HLT wakes it.
            p.wait_for_interrupt();
        }
    }

    /// A vCPU saw its VM end (`kind`, `why`): the first report of a live VM decides its state,
    /// asks the other vCPUs to leave and says why; later reports change nothing.
    fn report_stop(&self, vm: &Vm<P>, kind: StopKind, why: fmt::Arguments<'_>) {
        if !vm.state().is_live() {
            return;
        }
        // Let pCPU 0 show the guest's last words before the verdict (bounded).
        // Not for an operator stop: pCPU 0 asked for it and waits for it, so it
        // prints nothing meanwhile (the bytes stay queued and follow).
        if kind != StopKind::Operator {
            spin_until(&self.platform, REPORT_WAIT_US, || {
                vm.console.unprinted() == 0
            });
        }
        if !vm.lifecycle.report(|l| l.report_stop(kind)) {
            return;
        }
        self.kick_vcpus(vm);
        if kind == StopKind::Crash {
            error!("vm {}: stopped: {why}; other VMs keep running", vm.cfg.name);
        } else {
            info!("vm {}: stopped: {why}", vm.cfg.name);
        }
        info!("vm {}: exits {}", vm.cfg.name, vm.exit_totals());
    }

    /// The guest reset the platform (seen by vCPU `vcpu_id`, now off its pCPU): the other vCPUs
    /// leave, the VM is loaded again from its images and every vCPU starts over. An operator
    /// stop meanwhile wins.
    fn reboot(&self, vm: &Vm<P>, vcpu_id: u16) {
        let alone = spin_until(&self.platform, REPORT_WAIT_US, || {
            let l = vm.lifecycle();
            l.active() <= 1 || l.request() != Request::Reset
        });
        let stopped_meanwhile = |vmm: &Self| {
            vmm.report_stop(
                vm,
                StopKind::Operator,
                format_args!("vCPU {vcpu_id}: stopped by the operator"),
            );
            vmm.leave(vm);
        };
        if vm.request() != Request::Reset {
            return stopped_meanwhile(self);
        }
        if !alone {
            self.report_stop(
                vm,
                StopKind::Crash,
                format_args!("reset: other vCPUs did not leave"),
            );
            return self.leave(vm);
        }
        if let Err(e) = vm.load(&self.platform) {
            self.report_stop(vm, StopKind::Crash, format_args!("reboot failed: {e}"));
            return self.leave(vm);
        }
        match vm.lifecycle.try_op(|l| l.relaunch(vm.cfg.vcpus)) {
            Ok(()) => self.post_vcpus(vm),
            Err(_) => stopped_meanwhile(self),
        }
    }
}

/// Guest requests refused and counted by the exit handlers, as far as the console was told:
/// each kind is logged at its 1st, 2nd, 4th, 8th... refusal.
#[derive(Default)]
struct Refusals {
    cat: u64,
    apic_base: u64,
    ipis: u64,
}

impl Refusals {
    #[cold]
    #[inline(never)]
    fn report(&mut self, exits: &vm::VcpuExits, vm: &str, vcpu_id: u16) {
        let now = (
            exits.refused_allocation_msrs,
            exits.passthrough.refused_apic_base,
            exits.ipis_to_nobody,
        );
        if now.0 != self.cat && now.0.is_power_of_two() {
            warn!(
                "vm {vm}: vCPU {vcpu_id}: write to a cache-allocation MSR refused (#GP); {} so far",
                now.0
            );
        }
        if now.1 != self.apic_base && now.1.is_power_of_two() {
            warn!(
                "vm {vm}: vCPU {vcpu_id}: IA32_APIC_BASE write refused (#GP): a passed-through LAPIC stays in x2APIC mode; {} so far",
                now.1
            );
        }
        if now.2 != self.ipis && now.2.is_power_of_two() {
            warn!(
                "vm {vm}: vCPU {vcpu_id}: IPI naming no vCPU of this VM dropped; {} so far",
                now.2
            );
        }
        (self.cat, self.apic_base, self.ipis) = now;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use core::sync::atomic::Ordering;
    use std::thread;
    use std::time::Duration;

    use vcpu::VmExit;
    use vm::hypercall::HC_POWER_OFF;

    use crate::lifecycle::{LifecycleError, Op, VcpuRun, VmState};
    use crate::manager::{ControlError, Vmm};
    use crate::mock::{config, eventually, vm, MockPlatform, Pcpus, Step};
    use crate::VmId;

    /// A machine of 4 pCPUs with the scenario VMs `(id, name, pcpus)` made and loaded.
    fn machine(vms: &[(u16, &'static str, &'static [u16])]) -> Arc<Vmm<MockPlatform>> {
        let vmm = Arc::new(Vmm::new(MockPlatform::new(), 4));
        for &(id, name, pcpus) in vms {
            vmm.add(vm(vmm.platform(), config(id, name, pcpus)))
                .unwrap();
        }
        vmm
    }

    fn state(vmm: &Vmm<MockPlatform>, id: u16) -> VmState {
        vmm.get(VmId(id)).unwrap().state()
    }

    fn active(vmm: &Vmm<MockPlatform>, id: u16) -> u16 {
        vmm.get(VmId(id)).unwrap().lifecycle().active()
    }

    /// pCPU 0's console pump until `done`, collecting what VM `id` printed.
    fn pump_until(vmm: &Vmm<MockPlatform>, id: u16, mut done: impl FnMut() -> bool) -> Vec<u8> {
        let (mut out, mut seen) = (Vec::new(), Vec::new());
        eventually("the VMs", || {
            vmm.pump_consoles(&mut out, |vm, _, bytes| {
                if vm.id == VmId(id) {
                    seen.extend_from_slice(bytes);
                }
            });
            done()
        });
        seen
    }

    fn out(text: &[u8]) -> Vec<Step> {
        text.iter()
            .map(|&value| Step::Out { port: 0x3F8, value })
            .collect()
    }

    #[test]
    fn a_vm_runs_until_the_guest_powers_off() {
        let vmm = machine(&[(0, "vm0", &[1])]);
        let mut steps = out(b"bye\n");
        steps.push(Step::Hypercall { rax: HC_POWER_OFF });
        vmm.platform().script(0, 0, &steps);
        let _pcpus = Pcpus::start(&vmm, &[1]);
        vmm.start(VmId(0)).unwrap();
        let printed = pump_until(&vmm, 0, || state(&vmm, 0) == VmState::Stopped);
        assert_eq!(printed, b"bye\n", "the guest's last words reach pCPU 0");
        eventually("the vCPU to leave", || active(&vmm, 0) == 0);
        let vm = vmm.get(VmId(0)).unwrap();
        assert_eq!(vm.vcpus[0].run(), VcpuRun::Off);
        assert!(vm.exit_totals().total() >= 5);
        // Stopped by its guest, it starts again from its image.
        vmm.start(VmId(0)).unwrap();
        eventually("a second vCPU", || {
            vmm.platform().created.load(Ordering::Acquire) == 2
        });
        vmm.stop(VmId(0)).unwrap();
        assert_eq!(state(&vmm, 0), VmState::Stopped);
    }

    #[test]
    fn the_operator_pauses_resumes_and_stops() {
        let vmm = machine(&[(0, "vm0", &[1])]);
        let _pcpus = Pcpus::start(&vmm, &[1]);
        let id = VmId(0);
        vmm.start(id).unwrap();
        vmm.pause(id).unwrap();
        assert_eq!(state(&vmm, 0), VmState::Paused);
        // Held: no exits while paused.
        let vm = vmm.get(id).unwrap();
        let exits = vm.exit_totals().total();
        thread::sleep(Duration::from_millis(20));
        assert_eq!(
            vm.exit_totals().total(),
            exits,
            "a paused vCPU does not enter the guest"
        );
        assert!(matches!(
            vmm.pause(id),
            Err(ControlError::Lifecycle {
                error: LifecycleError::WrongState {
                    op: Op::Pause,
                    state: VmState::Paused
                },
                ..
            })
        ));
        vmm.resume(id).unwrap();
        assert_eq!(state(&vmm, 0), VmState::Running);
        eventually("exits again", || vm.exit_totals().total() > exits);
        assert!(matches!(
            vmm.resume(id),
            Err(ControlError::Lifecycle {
                error: LifecycleError::WrongState {
                    op: Op::Resume,
                    state: VmState::Running
                },
                ..
            })
        ));
        vmm.stop(id).unwrap();
        assert_eq!((state(&vmm, 0), active(&vmm, 0)), (VmState::Stopped, 0));
        assert!(matches!(
            vmm.stop(id),
            Err(ControlError::Lifecycle {
                error: LifecycleError::WrongState {
                    op: Op::Stop,
                    state: VmState::Stopped
                },
                ..
            })
        ));
        assert!(matches!(
            vmm.pause(id),
            Err(ControlError::Lifecycle {
                error: LifecycleError::WrongState {
                    state: VmState::Stopped,
                    ..
                },
                ..
            })
        ));
    }

    #[test]
    fn stop_while_starting_never_runs_the_guest() {
        let vmm = machine(&[(0, "vm0", &[1, 2])]);
        vmm.start(VmId(0)).unwrap();
        // The pCPUs have not picked their vCPUs up yet when the stop comes.
        let stopper = {
            let vmm = Arc::clone(&vmm);
            thread::spawn(move || vmm.stop(VmId(0)))
        };
        thread::sleep(Duration::from_millis(20));
        assert_eq!(active(&vmm, 0), 2, "the stop waits for the posted vCPUs");
        let _pcpus = Pcpus::start(&vmm, &[1, 2]);
        stopper.join().unwrap().unwrap();
        assert_eq!((state(&vmm, 0), active(&vmm, 0)), (VmState::Stopped, 0));
        assert_eq!(vmm.platform().created.load(Ordering::Acquire), 0);
    }

    #[test]
    fn an_operator_reset_of_a_paused_vm_boots_it_again() {
        let vmm = machine(&[(0, "vm0", &[1])]);
        let _pcpus = Pcpus::start(&vmm, &[1]);
        vmm.start(VmId(0)).unwrap();
        vmm.pause(VmId(0)).unwrap();
        vmm.reset(VmId(0)).unwrap();
        assert_eq!(state(&vmm, 0), VmState::Running);
        eventually("the second boot", || {
            vmm.platform().created.load(Ordering::Acquire) == 2
        });
        vmm.stop(VmId(0)).unwrap();
    }

    #[test]
    fn a_guest_reset_boots_the_vm_again() {
        let vmm = machine(&[(0, "vm0", &[1, 2])]);
        vmm.platform().script(
            0,
            0,
            &[
                Step::Out {
                    port: 0xCF9,
                    value: 0x06,
                },
                Step::Hypercall { rax: HC_POWER_OFF },
            ],
        );
        let _pcpus = Pcpus::start(&vmm, &[1, 2]);
        vmm.start(VmId(0)).unwrap();
        eventually("the power-off after the reboot", || {
            state(&vmm, 0) == VmState::Stopped && active(&vmm, 0) == 0
        });
        // vCPU 0 twice (the AP waits for a start-up IPI that never comes).
        assert_eq!(vmm.platform().created.load(Ordering::Acquire), 2);
    }

    #[test]
    fn a_guest_reset_racing_an_operator_stop_ends_stopped() {
        let vmm = machine(&[(0, "vm0", &[1, 2])]);
        let _pcpus = Pcpus::start(&vmm, &[1, 2]);
        for round in 0..20 {
            vmm.platform().script(
                0,
                0,
                &[Step::Out {
                    port: 0xCF9,
                    value: 0x06,
                }],
            );
            vmm.start(VmId(0)).unwrap();
            thread::sleep(Duration::from_micros(round * 20));
            vmm.stop(VmId(0)).unwrap();
            assert_eq!((state(&vmm, 0), active(&vmm, 0)), (VmState::Stopped, 0));
            let made = vmm.platform().created.load(Ordering::Acquire);
            thread::sleep(Duration::from_millis(2));
            assert_eq!(
                vmm.platform().created.load(Ordering::Acquire),
                made,
                "round {round}: nothing boots after the stop"
            );
            assert_eq!(state(&vmm, 0), VmState::Stopped);
        }
    }

    #[test]
    fn a_crash_stops_only_that_vm() {
        let vmm = machine(&[(0, "vm0", &[1]), (1, "vm1", &[2])]);
        vmm.platform().script(1, 0, &[Step::Exit(VmExit::Shutdown)]);
        let _pcpus = Pcpus::start(&vmm, &[1, 2]);
        vmm.start(VmId(0)).unwrap();
        vmm.start(VmId(1)).unwrap();
        eventually("vm1 to crash", || state(&vmm, 1) == VmState::Crashed);
        eventually("vm1's vCPU to leave", || active(&vmm, 1) == 0);
        assert_eq!(state(&vmm, 0), VmState::Running);
        // A crashed VM starts again.
        vmm.start(VmId(1)).unwrap();
        assert_eq!(state(&vmm, 1), VmState::Running);
        vmm.stop(VmId(1)).unwrap();
        vmm.stop(VmId(0)).unwrap();
    }

    #[test]
    fn an_injected_entry_failure_stops_only_that_vm() {
        let vmm = machine(&[(0, "vm0", &[1]), (1, "vm1", &[2])]);
        // vm1 takes a few exits, then its next entry is made to fail.
        vmm.platform().script(
            1,
            0,
            &[
                Step::Hypercall { rax: 0 },
                Step::Hypercall { rax: 0 },
                Step::Hypercall { rax: 0 },
            ],
        );
        let vm1 = vmm.get(VmId(1)).unwrap();
        vm1.vcpus[0].break_entry_after.store(2, Ordering::Relaxed);
        let _pcpus = Pcpus::start(&vmm, &[1, 2]);
        vmm.start(VmId(0)).unwrap();
        vmm.start(VmId(1)).unwrap();
        eventually("vm1 to crash", || state(&vmm, 1) == VmState::Crashed);
        eventually("vm1's vCPU to leave", || active(&vmm, 1) == 0);
        assert_eq!(vm1.vcpus[0].break_entry_after.load(Ordering::Relaxed), 0);
        assert_eq!(
            vm1.exit_totals().total(),
            3,
            "two hypercalls, then the failed entry"
        );
        assert_eq!(state(&vmm, 0), VmState::Running);
        // Started again, it runs: the hook was taken.
        vmm.start(VmId(1)).unwrap();
        assert_eq!(state(&vmm, 1), VmState::Running);
        vmm.stop(VmId(1)).unwrap();
        vmm.stop(VmId(0)).unwrap();
    }

    #[test]
    fn a_vcpu_that_cannot_be_made_crashes_its_vm() {
        let vmm = machine(&[(0, "vm0", &[1])]);
        vmm.platform().fail_vcpus.store(true, Ordering::Release);
        let _pcpus = Pcpus::start(&vmm, &[1]);
        vmm.start(VmId(0)).unwrap();
        eventually("the crash", || {
            state(&vmm, 0) == VmState::Crashed && active(&vmm, 0) == 0
        });
    }

    #[test]
    fn an_ap_waits_for_its_startup_ipi_and_leaves_on_stop() {
        let vmm = machine(&[(0, "vm0", &[1, 2])]);
        let _pcpus = Pcpus::start(&vmm, &[1, 2]);
        vmm.start(VmId(0)).unwrap();
        let vm = vmm.get(VmId(0)).unwrap();
        eventually("the AP to wait", || {
            vm.vcpus[1].run() == VcpuRun::WaitingForSipi
        });
        // A pause holds the BSP; the AP goes on waiting.
        vmm.pause(VmId(0)).unwrap();
        assert_eq!(vm.vcpus[1].run(), VcpuRun::WaitingForSipi);
        vmm.stop(VmId(0)).unwrap();
        assert_eq!((vm.state(), vm.lifecycle().active()), (VmState::Stopped, 0));
        assert_eq!(vm.vcpus[1].run(), VcpuRun::Off);
        assert_eq!(vm.vcpus[0].run(), VcpuRun::Off);
    }

    #[test]
    fn destroy_takes_a_stopped_vm_out_of_the_table() {
        let vmm = machine(&[(0, "vm0", &[1]), (1, "vm1", &[2])]);
        let _pcpus = Pcpus::start(&vmm, &[1, 2]);
        vmm.start(VmId(0)).unwrap();
        assert!(matches!(
            vmm.destroy(VmId(0)),
            Err(ControlError::Lifecycle {
                error: LifecycleError::WrongState {
                    op: Op::Destroy,
                    state: VmState::Running
                },
                ..
            })
        ));
        vmm.stop(VmId(0)).unwrap();
        let gone = vmm.destroy(VmId(0)).unwrap();
        assert_eq!(gone.state(), VmState::Destroyed);
        assert!(vmm.table().get(VmId(0)).is_none());
        assert_eq!(vmm.start(VmId(0)), Err(ControlError::NoSuchVm(VmId(0))));
        // A created VM that never ran goes too; the ids left are not dense.
        vmm.add(vm(vmm.platform(), config(5, "vm5", &[3]))).unwrap();
        assert_eq!(vmm.table().ids(), [VmId(1), VmId(5)]);
        vmm.destroy(VmId(1)).unwrap();
        assert_eq!(vmm.table().ids(), [VmId(5)]);
    }
}
