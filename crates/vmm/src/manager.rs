//! [`Vmm`]: the VM table, the work posted to each pCPU, and the operator's lifecycle operations
//! (start, stop, pause, resume, reset, destroy), each a transition of the VM's
//! [`Lifecycle`](crate::Lifecycle) followed by a bounded wait for its vCPUs to carry it out.
//! Every VM is named by its [`VmId`], never by a position.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::Ordering;

use log::error;
use scenario::VmId;
use shell::Port;
use spin::Mutex;

use crate::lifecycle::{Lifecycle, LifecycleError, Op, ResetPlan, VmState};
use crate::platform::{spin_until, Platform};
use crate::table::{TableError, VmTable};
use crate::vm::Vm;

/// How long an operator operation waits for a VM's vCPUs, in microseconds.
pub const OPERATOR_WAIT_US: u64 = 2_000_000;

/// Work for one pCPU: run vCPU `vcpu` of VM `vm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Task {
    pub vm: VmId,
    pub vcpu: u16,
}

/// Why an operation on a VM failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlError {
    /// No VM with this id.
    NoSuchVm(VmId),
    /// The lifecycle refused the operation.
    Lifecycle { vm: VmId, error: LifecycleError },
    /// The VM's vCPUs did not carry out `op` in time; the VM is `state`.
    Timeout { vm: VmId, op: Op, state: VmState },
    /// Something else decided the VM's fate while `op` waited (a stop, a guest reset): it is
    /// now `state`.
    Overtaken { vm: VmId, op: Op, state: VmState },
    /// Loading the kernel again failed (the reason is in the log).
    LoadFailed(VmId),
    /// The VM table refused the change.
    Table(TableError),
    /// The VM has no virtio console (or not the machine's device backends).
    NoVirtioConsole(VmId),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::NoSuchVm(id) => write!(f, "no VM with id {id}"),
            ControlError::Lifecycle { vm, error } => write!(f, "VM {vm}: {error}"),
            ControlError::Timeout { vm, op, state } => write!(
                f,
                "VM {vm}: {op} did not finish within {} ms (it is {state})",
                OPERATOR_WAIT_US / 1000
            ),
            ControlError::Overtaken { vm, op, state } => {
                write!(f, "VM {vm}: {op} was overtaken; it is {state}")
            }
            ControlError::LoadFailed(vm) => {
                write!(f, "VM {vm}: reloading the kernel failed (see the log)")
            }
            ControlError::Table(e) => write!(f, "{e}"),
            ControlError::NoVirtioConsole(vm) => write!(f, "VM {vm} has no virtio console"),
        }
    }
}

/// The VMs and the pCPUs they run on.
pub struct Vmm<P: Platform> {
    pub(crate) platform: P,
    pub(crate) table: VmTable<Vm<P>>,
    /// Work posted to each pCPU, indexed by pCPU.
    tasks: Vec<Mutex<Option<Task>>>,
}

impl<P: Platform> Vmm<P> {
    /// No VMs yet, on a machine of `pcpus` pCPUs.
    pub fn new(platform: P, pcpus: usize) -> Self {
        Vmm {
            platform,
            table: VmTable::new(),
            tasks: (0..pcpus).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// The host services.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// Every VM, by id.
    pub fn table(&self) -> &VmTable<Vm<P>> {
        &self.table
    }

    /// The VM with this id.
    pub fn get(&self, id: VmId) -> Result<Arc<Vm<P>>, ControlError> {
        self.table.get(id).ok_or(ControlError::NoSuchVm(id))
    }

    /// Adds a VM that was made and loaded ([`Vm::new`], [`Vm::load`]); [`Vmm::start`] runs it.
    pub fn add(&self, vm: Vm<P>) -> Result<Arc<Vm<P>>, ControlError> {
        let vm = Arc::new(vm);
        self.table
            .insert(Arc::clone(&vm))
            .map_err(ControlError::Table)?;
        Ok(vm)
    }

    fn refused(id: VmId) -> impl Fn(LifecycleError) -> ControlError {
        move |error| ControlError::Lifecycle { vm: id, error }
    }

    /// Waits (bounded) until the VM's lifecycle satisfies `done`.
    fn wait(
        &self,
        vm: &Vm<P>,
        op: Op,
        done: impl Fn(Lifecycle) -> bool,
    ) -> Result<Lifecycle, ControlError> {
        if spin_until(&self.platform, OPERATOR_WAIT_US, || done(vm.lifecycle())) {
            Ok(vm.lifecycle())
        } else {
            Err(ControlError::Timeout {
                vm: vm.id,
                op,
                state: vm.state(),
            })
        }
    }

    /// Starts a created, stopped or crashed VM: a stopped or crashed one boots from a fresh load
    /// of its kernel (a created one was loaded when it was made).
    pub fn start(&self, id: VmId) -> Result<(), ControlError> {
        let vm = self.get(id)?;
        let vcpus = vm.cfg.vcpus;
        let now = vm.lifecycle();
        match now.start(vcpus) {
            Ok(_) => {}
            Err(LifecycleError::VcpusOut { .. }) => {
                self.wait(&vm, Op::Start, |l| l.active() == 0)?;
            }
            Err(e) => return Err(Self::refused(id)(e)),
        }
        if now.state() != VmState::Created {
            vm.load(&self.platform).map_err(|e| {
                error!("vm {}: reload failed: {e}", vm.name());
                ControlError::LoadFailed(id)
            })?;
        }
        vm.lifecycle
            .try_op(|l| l.start(vcpus))
            .map_err(Self::refused(id))?;
        self.post_vcpus(&vm);
        Ok(())
    }

    /// Stops a running or paused VM and waits until its vCPUs left their pCPUs.
    pub fn stop(&self, id: VmId) -> Result<(), ControlError> {
        let vm = self.get(id)?;
        vm.lifecycle
            .try_op(Lifecycle::stop)
            .map_err(Self::refused(id))?;
        self.kick_vcpus(&vm);
        self.wait(&vm, Op::Stop, |l| l.active() == 0)?;
        Ok(())
    }

    /// Pauses a running VM: its vCPUs wait on their pCPUs.
    pub fn pause(&self, id: VmId) -> Result<(), ControlError> {
        let vm = self.get(id)?;
        vm.lifecycle
            .try_op(Lifecycle::pause)
            .map_err(Self::refused(id))?;
        self.kick_vcpus(&vm);
        let l = self.wait(&vm, Op::Pause, |l| {
            l.state() != VmState::Running || l.request() != crate::Request::Pause
        })?;
        match l.state() {
            VmState::Paused => Ok(()),
            state => Err(ControlError::Overtaken {
                vm: id,
                op: Op::Pause,
                state,
            }),
        }
    }

    /// Resumes a paused VM.
    pub fn resume(&self, id: VmId) -> Result<(), ControlError> {
        let vm = self.get(id)?;
        vm.lifecycle
            .try_op(Lifecycle::resume)
            .map_err(Self::refused(id))?;
        self.kick_vcpus(&vm);
        let l = self.wait(&vm, Op::Resume, |l| {
            l.state() != VmState::Paused || l.request() != crate::Request::Run
        })?;
        match l.state() {
            VmState::Running => Ok(()),
            state => Err(ControlError::Overtaken {
                vm: id,
                op: Op::Resume,
                state,
            }),
        }
    }

    /// Stops (if needed) and starts again from the kernel image.
    pub fn reset(&self, id: VmId) -> Result<(), ControlError> {
        let vm = self.get(id)?;
        match vm.lifecycle().reset_plan().map_err(Self::refused(id))? {
            ResetPlan::StopThenStart => {
                self.stop(id)?;
                self.start(id)
            }
            ResetPlan::Start => self.start(id),
        }
    }

    /// Takes a VM that does not run out of the table (a vCPU still leaving its pCPU, even one
    /// parked waiting for an I/O completion, is woken and waited for). The caller gets the VM
    /// back to release what it holds once the last reference is gone.
    pub fn destroy(&self, id: VmId) -> Result<Arc<Vm<P>>, ControlError> {
        let vm = self.get(id)?;
        match vm.lifecycle().destroy() {
            Ok(_) => {}
            Err(LifecycleError::VcpusOut { .. }) => {
                self.kick_vcpus(&vm);
                self.wait(&vm, Op::Destroy, |l| l.active() == 0)?;
            }
            Err(e) => return Err(Self::refused(id)(e)),
        }
        vm.lifecycle
            .try_op(Lifecycle::destroy)
            .map_err(Self::refused(id))?;
        self.table.remove(id).map_err(ControlError::Table)
    }

    /// Queues a byte typed at the console for VM `id` (pCPU 0).
    pub fn input(&self, id: VmId, byte: u8) -> Result<(), ControlError> {
        self.get(id)?.console.input(byte);
        Ok(())
    }

    /// Gives bytes typed at the console to VM `id`'s virtio console (pCPU 0): they wait in its
    /// pipe until the device hands them to the guest, which the VM's vCPU 0 does when it next
    /// polls its devices; its pCPU is kicked for that. False if some bytes were dropped (the
    /// guest has not taken the earlier ones).
    pub fn input_hvc(&self, id: VmId, bytes: &[u8]) -> Result<bool, ControlError> {
        let vm = self.get(id)?;
        let (Some(io), Some(pipe)) = (vm.io.as_ref(), vm.hvc()) else {
            return Err(ControlError::NoVirtioConsole(id));
        };
        let all = pipe.lock().push_input(bytes);
        io.news.store(true, Ordering::Release);
        // A real-time VM takes console input at its next exit: its pCPU is not interrupted.
        if let (Some(&pcpu), false) = (vm.cfg.pcpus.first(), vm.is_rt()) {
            self.platform.kick(pcpu);
        }
        Ok(all)
    }

    /// pCPU 0's console work for every VM: typed bytes into its vUART, then its output (taken
    /// into `out`) handed to `show` with [`Port::Uart`], after which it counts as printed; then
    /// what it wrote to its virtio console, if it has one, with [`Port::Hvc`].
    pub fn pump_consoles(&self, out: &mut Vec<u8>, mut show: impl FnMut(&Vm<P>, Port, &[u8])) {
        for vm in self.table.snapshot() {
            // A halted vCPU sleeps until a host interrupt: wake it for the UART's, unless the
            // VM is real-time (it takes the bytes at its next exit: no kick reaches its pCPUs).
            if vm.feed_typed() && !vm.is_rt() {
                self.kick_vcpus(&vm);
            }
            out.clear();
            vm.console.take_output(out);
            if !out.is_empty() {
                show(&vm, Port::Uart, out);
                vm.console.printed(out.len());
            }
            if let Some(pipe) = vm.hvc() {
                out.clear();
                // The device appends under the same lock: hold it only to take.
                pipe.lock().take_output(out);
                if !out.is_empty() {
                    show(&vm, Port::Hvc, out);
                }
            }
        }
    }

    /// Interrupts every pCPU of `vm` so that its vCPUs look at the VM's request (lifecycle: the
    /// platform reaches a real-time VM's pCPUs with an NMI, see [`Platform::kick`]).
    pub(crate) fn kick_vcpus(&self, vm: &Vm<P>) {
        for &p in vm.cfg.pcpus {
            self.platform.kick(p);
        }
    }

    /// Hands each vCPU of `vm` to its pCPU (the lifecycle already counts them out).
    pub(crate) fn post_vcpus(&self, vm: &Vm<P>) {
        for (v, &pcpu) in (0u16..).zip(vm.cfg.pcpus) {
            let Some(slot) = self.tasks.get(usize::from(pcpu)) else {
                error!(
                    "vm {}: pCPU {pcpu} does not exist; vCPU {v} cannot run",
                    vm.name()
                );
                self.leave(vm);
                continue;
            };
            let stale = slot.lock().replace(Task { vm: vm.id, vcpu: v });
            if let Some(stale) = stale {
                // Never expected: a pCPU belongs to one VM, whose vCPUs all left before a start.
                debug_assert!(false, "pCPU {pcpu} still had {stale:?}");
                if let Some(other) = self.table.get(stale.vm) {
                    self.leave(&other);
                }
            }
            self.platform.kick(pcpu);
        }
    }

    /// The task posted to `pcpu`, if any.
    pub(crate) fn take_task(&self, pcpu: u16) -> Option<Task> {
        self.tasks.get(usize::from(pcpu))?.lock().take()
    }
}
