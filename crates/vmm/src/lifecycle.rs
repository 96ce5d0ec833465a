//! A VM's lifecycle as a pure state machine: the state its vCPUs report, the request the
//! operator (or one of its vCPUs, for the whole VM) made of them, and how many of its vCPUs are
//! still handed to their pCPUs. Every change is a function from one [`Lifecycle`] to the next;
//! [`AtomicLifecycle`] applies them with one compare-and-swap, so that concurrent vCPUs and the
//! operator always agree on who decided what (exactly one vCPU reports a stop, a guest reset
//! racing an operator stop ends stopped).
//!
//! The per-vCPU part is [`VcpuRun`]: where one vCPU is, and [`VcpuRun::step`], what it does about
//! its VM's request (a vCPU parked waiting for an I/O completion abandons the access when the VM
//! is stopped or destroyed).

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

/// Where a VM is in its life, as its vCPUs last reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum VmState {
    /// Made and loaded, never started.
    Created = 0,
    Running = 1,
    /// Its vCPUs are held on their pCPUs outside the guest.
    Paused = 2,
    /// Stopped by the operator or powered off by the guest.
    Stopped = 3,
    /// Stopped by its own fault (triple fault, bad state...); the other VMs keep running.
    Crashed = 4,
    /// Taken out of the VM table; nothing applies to it any more.
    Destroyed = 5,
}

impl VmState {
    const ALL: [VmState; 6] = [
        VmState::Created,
        VmState::Running,
        VmState::Paused,
        VmState::Stopped,
        VmState::Crashed,
        VmState::Destroyed,
    ];

    /// The lower-case name messages use.
    pub const fn name(self) -> &'static str {
        match self {
            VmState::Created => "created",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopped => "stopped",
            VmState::Crashed => "crashed",
            VmState::Destroyed => "destroyed",
        }
    }

    /// Whether vCPUs of the VM may be in the guest (or held, paused).
    pub const fn is_live(self) -> bool {
        matches!(self, VmState::Running | VmState::Paused)
    }

    /// Whether the VM can be started (or destroyed): nothing of it runs.
    const fn is_down(self) -> bool {
        matches!(self, VmState::Created | VmState::Stopped | VmState::Crashed)
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a VM's vCPUs are asked to do, by the operator or by one of them for the whole VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Request {
    Run = 0,
    Pause = 1,
    /// Leave for good (the operator's stop, or a vCPU's report that the VM stopped).
    Stop = 2,
    /// The guest reset its platform: every vCPU leaves, the one that saw it loads the VM again.
    Reset = 3,
}

impl Request {
    const ALL: [Request; 4] = [Request::Run, Request::Pause, Request::Stop, Request::Reset];

    /// The words messages use ("being stopped").
    pub const fn name(self) -> &'static str {
        match self {
            Request::Run => "asked to run",
            Request::Pause => "being paused",
            Request::Stop => "being stopped",
            Request::Reset => "being reset by the guest",
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A change asked of a VM as a whole (the operator's, or a rebooting vCPU's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Start,
    Stop,
    Pause,
    Resume,
    Reset,
    Destroy,
    /// A vCPU that saw the guest reset boots the VM again.
    Reboot,
}

impl Op {
    /// The verb messages use.
    pub const fn verb(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Pause => "pause",
            Op::Resume => "resume",
            Op::Reset => "reset",
            Op::Destroy => "destroy",
            Op::Reboot => "reboot",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verb())
    }
}

/// How a vCPU says its VM ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopKind {
    /// It saw the operator's stop request.
    Operator,
    /// The guest powered itself off.
    PowerOff,
    /// The guest broke itself (or its vCPU could not run): the VM is [`VmState::Crashed`].
    Crash,
}

/// What a vCPU that saw the guest reset its platform does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestReset {
    /// It boots the VM again once the other vCPUs left ([`Lifecycle::relaunch`]).
    Reboot,
    /// The operator's stop came first: it reports that stop and leaves.
    StopInstead,
    /// Another vCPU already decided the VM's fate (a reboot or a stop): it leaves.
    Leave,
}

/// What [`Lifecycle::reset_plan`] says an operator reset takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetPlan {
    /// Stop the VM, wait for its vCPUs to leave, then start it.
    StopThenStart,
    /// Nothing runs: start it.
    Start,
}

/// What a vCPU leaving its pCPU did to the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Left {
    /// Others are still out, or the VM's end was already reported.
    Quietly,
    /// It was the last one out of a VM nobody reported stopped (every vCPU left before it
    /// entered the guest): the VM is now [`VmState::Stopped`] and the caller says so.
    StoppedTheVm,
}

/// Why a lifecycle change was refused: the operation and the state it was refused in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifecycleError {
    /// `op` does not apply to a VM in `state`.
    WrongState { op: Op, state: VmState },
    /// The VM is `state` but its vCPUs were already asked for something else (`request`).
    InTransition {
        op: Op,
        state: VmState,
        request: Request,
    },
    /// `vcpus` vCPUs of the VM are still on their pCPUs; `op` waits until they left.
    VcpusOut { op: Op, state: VmState, vcpus: u16 },
    /// A vCPU in `run` cannot take `event`.
    Vcpu { run: VcpuRun, event: VcpuEvent },
}

impl fmt::Display for LifecycleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LifecycleError::WrongState { op, state } => {
                write!(f, "cannot {op} a VM that is {state}")
            }
            LifecycleError::InTransition { op, state, request } => {
                write!(f, "cannot {op} a VM that is {state} and {request}")
            }
            LifecycleError::VcpusOut { op, state, vcpus } => write!(
                f,
                "cannot {op} the VM yet: it is {state} but {vcpus} vCPU(s) have not left their pCPUs"
            ),
            LifecycleError::Vcpu { run, event } => {
                write!(f, "a vCPU that is {run} cannot take {event:?}")
            }
        }
    }
}

/// A VM's lifecycle at one moment: plain data, every change a method that returns the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    state: VmState,
    request: Request,
    /// vCPUs handed to their pCPUs and not back yet: posted, in their run loop, or rebooting.
    active: u16,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A VM just made: created, nothing asked of it, no vCPU out.
    pub const fn new() -> Self {
        Lifecycle {
            state: VmState::Created,
            request: Request::Stop,
            active: 0,
        }
    }

    /// The state the vCPUs last reported.
    pub const fn state(&self) -> VmState {
        self.state
    }

    /// What the vCPUs are asked to do.
    pub const fn request(&self) -> Request {
        self.request
    }

    /// vCPUs still handed to their pCPUs.
    pub const fn active(&self) -> u16 {
        self.active
    }

    fn wrong(self, op: Op) -> LifecycleError {
        LifecycleError::WrongState {
            op,
            state: self.state,
        }
    }

    fn in_transition(self, op: Op) -> LifecycleError {
        LifecycleError::InTransition {
            op,
            state: self.state,
            request: self.request,
        }
    }

    fn vcpus_out(self, op: Op) -> LifecycleError {
        LifecycleError::VcpusOut {
            op,
            state: self.state,
            vcpus: self.active,
        }
    }

    /// The operator starts a created, stopped or crashed VM whose vCPUs all left: it runs, and
    /// its `vcpus` vCPUs are handed to their pCPUs.
    pub fn start(self, vcpus: u16) -> Result<Self, LifecycleError> {
        if !self.state.is_down() {
            return Err(self.wrong(Op::Start));
        }
        if self.active != 0 {
            return Err(self.vcpus_out(Op::Start));
        }
        debug_assert!(vcpus > 0, "a VM has at least one vCPU");
        Ok(Lifecycle {
            state: VmState::Running,
            request: Request::Run,
            active: vcpus,
        })
    }

    /// The operator stops a running or paused VM: its vCPUs are asked to leave (the first one
    /// out reports the stop). Stopping again while they leave changes nothing; a stop during a
    /// guest's reboot wins over the reboot.
    pub fn stop(self) -> Result<Self, LifecycleError> {
        if !self.state.is_live() {
            return Err(self.wrong(Op::Stop));
        }
        Ok(Lifecycle {
            request: Request::Stop,
            ..self
        })
    }

    /// The operator pauses a running VM (the first vCPU held reports it paused).
    pub fn pause(self) -> Result<Self, LifecycleError> {
        match (self.state, self.request) {
            (VmState::Running, Request::Run | Request::Pause) => Ok(Lifecycle {
                request: Request::Pause,
                ..self
            }),
            (VmState::Running, _) => Err(self.in_transition(Op::Pause)),
            _ => Err(self.wrong(Op::Pause)),
        }
    }

    /// The operator resumes a paused VM (the first vCPU released reports it running).
    pub fn resume(self) -> Result<Self, LifecycleError> {
        match (self.state, self.request) {
            (VmState::Paused, Request::Pause | Request::Run) => Ok(Lifecycle {
                request: Request::Run,
                ..self
            }),
            (VmState::Paused, _) => Err(self.in_transition(Op::Resume)),
            _ => Err(self.wrong(Op::Resume)),
        }
    }

    /// What an operator reset takes from here: a live VM is stopped first, then started from its
    /// kernel image; one that does not run is just started.
    pub fn reset_plan(self) -> Result<ResetPlan, LifecycleError> {
        match self.state {
            VmState::Running | VmState::Paused => Ok(ResetPlan::StopThenStart),
            VmState::Created | VmState::Stopped | VmState::Crashed => Ok(ResetPlan::Start),
            VmState::Destroyed => Err(self.wrong(Op::Reset)),
        }
    }

    /// The operator destroys a VM that does not run and whose vCPUs all left; a running or paused
    /// VM is refused (stop it first). A vCPU still out, for example parked waiting for an I/O
    /// completion, is asked to leave by the stop request ([`VcpuRun::step`] says it abandons
    /// the access): the caller wakes it and tries again.
    pub fn destroy(self) -> Result<Self, LifecycleError> {
        if !self.state.is_down() {
            return Err(self.wrong(Op::Destroy));
        }
        if self.active != 0 {
            return Err(self.vcpus_out(Op::Destroy));
        }
        Ok(Lifecycle {
            state: VmState::Destroyed,
            request: Request::Stop,
            active: 0,
        })
    }

    /// A vCPU was held by a pause request: the first one makes the VM paused (`true`: it says so).
    pub fn report_paused(self) -> (Self, bool) {
        match (self.state, self.request) {
            (VmState::Running, Request::Pause) => (
                Lifecycle {
                    state: VmState::Paused,
                    ..self
                },
                true,
            ),
            _ => (self, false),
        }
    }

    /// A held vCPU saw the resume request: the first one makes the VM running (`true`: it says so).
    pub fn report_resumed(self) -> (Self, bool) {
        match (self.state, self.request) {
            (VmState::Paused, Request::Run) => (
                Lifecycle {
                    state: VmState::Running,
                    ..self
                },
                true,
            ),
            _ => (self, false),
        }
    }

    /// A vCPU saw its VM end (`kind`): the first report of a live VM decides the final state and
    /// asks every other vCPU to leave (`true`: this vCPU says why); later ones change nothing.
    pub fn report_stop(self, kind: StopKind) -> (Self, bool) {
        if !self.state.is_live() {
            return (self, false);
        }
        let state = match kind {
            StopKind::Operator | StopKind::PowerOff => VmState::Stopped,
            StopKind::Crash => VmState::Crashed,
        };
        (
            Lifecycle {
                state,
                request: Request::Stop,
                ..self
            },
            true,
        )
    }

    /// A vCPU saw the guest reset its platform.
    pub fn guest_reset(self) -> (Self, GuestReset) {
        if !self.state.is_live() {
            return (self, GuestReset::Leave);
        }
        match self.request {
            Request::Run | Request::Pause => (
                Lifecycle {
                    request: Request::Reset,
                    ..self
                },
                GuestReset::Reboot,
            ),
            Request::Stop => (self, GuestReset::StopInstead),
            Request::Reset => (self, GuestReset::Leave),
        }
    }

    /// The rebooting vCPU, alone on its pCPU after the others left and the VM was loaded again,
    /// hands all `vcpus` vCPUs (itself included) to their pCPUs. Refused if others are still out
    /// (it waits), or if the operator stopped the VM meanwhile (it reports that stop instead).
    pub fn relaunch(self, vcpus: u16) -> Result<Self, LifecycleError> {
        if !self.state.is_live() {
            return Err(self.wrong(Op::Reboot));
        }
        if self.request != Request::Reset {
            return Err(self.in_transition(Op::Reboot));
        }
        if self.active > 1 {
            return Err(self.vcpus_out(Op::Reboot));
        }
        debug_assert!(vcpus > 0, "a VM has at least one vCPU");
        Ok(Lifecycle {
            state: VmState::Running,
            request: Request::Run,
            active: vcpus,
        })
    }

    /// A vCPU left its pCPU for good (or its task was never run).
    pub fn leave(self) -> (Self, Left) {
        debug_assert!(self.active > 0, "a vCPU left a VM with none out");
        let active = self.active.saturating_sub(1);
        if active == 0 && self.state.is_live() {
            let next = Lifecycle {
                state: VmState::Stopped,
                request: Request::Stop,
                active,
            };
            return (next, Left::StoppedTheVm);
        }
        (Lifecycle { active, ..self }, Left::Quietly)
    }

    fn encode(self) -> u32 {
        u32::from(self.state as u8)
            | u32::from(self.request as u8) << 8
            | u32::from(self.active) << 16
    }

    fn decode(word: u32) -> Self {
        let state = VmState::ALL
            .get(usize::from(word as u8))
            .copied()
            .unwrap_or(VmState::Stopped);
        let request = Request::ALL
            .get(usize::from((word >> 8) as u8))
            .copied()
            .unwrap_or(Request::Stop);
        Lifecycle {
            state,
            request,
            active: (word >> 16) as u16,
        }
    }
}

/// A [`Lifecycle`] shared by a VM's vCPUs and the operator: each change is one compare-and-swap
/// of the whole (state, request, vCPUs out) word.
#[derive(Debug)]
pub struct AtomicLifecycle(AtomicU32);

impl Default for AtomicLifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl AtomicLifecycle {
    /// A created VM.
    pub fn new() -> Self {
        AtomicLifecycle(AtomicU32::new(Lifecycle::new().encode()))
    }

    /// The lifecycle now.
    pub fn load(&self) -> Lifecycle {
        Lifecycle::decode(self.0.load(Ordering::Acquire))
    }

    /// Applies `change` atomically and returns its result; on an error nothing changes.
    pub fn apply<T, E>(
        &self,
        change: impl Fn(Lifecycle) -> Result<(Lifecycle, T), E>,
    ) -> Result<T, E> {
        let mut word = self.0.load(Ordering::Acquire);
        loop {
            let (next, out) = change(Lifecycle::decode(word))?;
            match self.0.compare_exchange_weak(
                word,
                next.encode(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(out),
                Err(now) => word = now,
            }
        }
    }

    /// Applies a change that cannot be refused (a vCPU's report).
    pub fn report<T>(&self, change: impl Fn(Lifecycle) -> (Lifecycle, T)) -> T {
        match self.apply(|l| Ok::<_, core::convert::Infallible>(change(l))) {
            Ok(out) => out,
            Err(never) => match never {},
        }
    }

    /// Applies an operation that may be refused.
    pub fn try_op(
        &self,
        op: impl Fn(Lifecycle) -> Result<Lifecycle, LifecycleError>,
    ) -> Result<(), LifecycleError> {
        self.apply(|l| op(l).map(|next| (next, ())))
    }
}

/// Where one vCPU is (written on its own pCPU, read by the shell).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum VcpuRun {
    /// Not on its pCPU (or posted there and not picked up yet).
    Off = 0,
    /// An AP waiting for INIT and a start-up IPI.
    WaitingForSipi = 1,
    Running = 2,
    /// In HLT, its pCPU asleep.
    Halted = 3,
    /// Parked outside the guest until an access it made completes (forwarded to a device model
    /// or an asynchronous backend).
    WaitingForIo = 4,
}

impl VcpuRun {
    const ALL: [VcpuRun; 5] = [
        VcpuRun::Off,
        VcpuRun::WaitingForSipi,
        VcpuRun::Running,
        VcpuRun::Halted,
        VcpuRun::WaitingForIo,
    ];

    /// The lower-case name messages use.
    pub const fn name(self) -> &'static str {
        match self {
            VcpuRun::Off => "off",
            VcpuRun::WaitingForSipi => "waiting for a start-up IPI",
            VcpuRun::Running => "running",
            VcpuRun::Halted => "halted",
            VcpuRun::WaitingForIo => "waiting for an I/O completion",
        }
    }

    /// The next place after `event`, or why a vCPU here cannot take it.
    pub fn on(self, event: VcpuEvent) -> Result<VcpuRun, LifecycleError> {
        use VcpuEvent as E;
        use VcpuRun as R;
        let next = match (self, event) {
            (R::Off | R::WaitingForSipi, E::Start) => R::Running,
            (R::Off | R::Running | R::Halted, E::Init) => R::WaitingForSipi,
            (R::Running, E::Halt) => R::Halted,
            (R::Halted, E::Wake) => R::Running,
            (R::Running, E::WaitForIo) => R::WaitingForIo,
            (R::WaitingForIo, E::IoDone) => R::Running,
            (_, E::Leave) => R::Off,
            _ => return Err(LifecycleError::Vcpu { run: self, event }),
        };
        Ok(next)
    }

    /// What a vCPU here does about its VM's `request`.
    pub const fn step(self, request: Request) -> VcpuStep {
        use VcpuRun as R;
        match (self, request) {
            (R::WaitingForIo, Request::Stop | Request::Reset) => VcpuStep::AbandonIo,
            (_, Request::Stop | Request::Reset) => VcpuStep::Leave,
            (R::Off | R::Running, Request::Run) => VcpuStep::Enter,
            (R::Halted | R::WaitingForSipi | R::WaitingForIo, Request::Run) => {
                VcpuStep::KeepWaiting
            }
            (R::Off | R::Running | R::Halted, Request::Pause) => VcpuStep::Hold,
            // An AP never started has nothing to hold; an access in flight completes first.
            (R::WaitingForSipi | R::WaitingForIo, Request::Pause) => VcpuStep::KeepWaiting,
        }
    }
}

impl fmt::Display for VcpuRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What happens to one vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuEvent {
    /// It starts executing: the BSP at the kernel's entry, an AP at its start-up vector.
    Start,
    /// An AP picked up by its pCPU, or a vCPU sent an INIT: it waits for a start-up IPI.
    Init,
    /// The guest ran HLT.
    Halt,
    /// A halted vCPU has an interrupt (or the hypervisor needs it).
    Wake,
    /// It made an access that completes later (parks outside the guest).
    WaitForIo,
    /// The access completed.
    IoDone,
    /// It leaves its pCPU for good.
    Leave,
}

/// What a vCPU does about its VM's request ([`VcpuRun::step`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuStep {
    /// Enter (or go on entering) the guest.
    Enter,
    /// Stay outside the guest on its pCPU until the request changes (a pause).
    Hold,
    /// Go on waiting for what it waits for (an interrupt, a start-up IPI, an I/O completion).
    KeepWaiting,
    /// Leave its pCPU.
    Leave,
    /// End the wait for the I/O completion (the access is dropped; nothing will complete it),
    /// then leave: a stop or a destroy never waits for a device model.
    AbandonIo,
}

/// A [`VcpuRun`] shared between the vCPU's pCPU and readers.
#[derive(Debug, Default)]
pub struct AtomicVcpuRun(AtomicU8);

impl AtomicVcpuRun {
    /// Off.
    pub const fn new() -> Self {
        AtomicVcpuRun(AtomicU8::new(VcpuRun::Off as u8))
    }

    /// Where the vCPU is.
    pub fn load(&self) -> VcpuRun {
        VcpuRun::ALL
            .get(usize::from(self.0.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or(VcpuRun::Off)
    }

    /// Moves the vCPU on with `event` (only its own pCPU calls this). A refused event is a bug
    /// in the run loop: it is caught in debug builds, and the vCPU's place is left unchanged.
    pub fn event(&self, event: VcpuEvent) -> VcpuRun {
        let now = self.load();
        match now.on(event) {
            Ok(next) => {
                self.0.store(next as u8, Ordering::Relaxed);
                next
            }
            Err(e) => {
                debug_assert!(false, "{e}");
                now
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::ToString;
    use std::vec::Vec;

    use super::*;

    fn running(vcpus: u16) -> Lifecycle {
        Lifecycle::new().start(vcpus).unwrap()
    }

    fn paused(vcpus: u16) -> Lifecycle {
        let (l, first) = running(vcpus).pause().unwrap().report_paused();
        assert!(first);
        l
    }

    /// Every vCPU out leaves.
    fn all_leave(mut l: Lifecycle) -> Lifecycle {
        while l.active() > 0 {
            l = l.leave().0;
        }
        l
    }

    fn stopped() -> Lifecycle {
        let (l, first) = running(1).stop().unwrap().report_stop(StopKind::Operator);
        assert!(first);
        all_leave(l)
    }

    fn crashed() -> Lifecycle {
        all_leave(running(2).report_stop(StopKind::Crash).0)
    }

    fn wrong(op: Op, state: VmState) -> LifecycleError {
        LifecycleError::WrongState { op, state }
    }

    #[test]
    fn a_new_vm_is_created_with_nothing_out() {
        let l = Lifecycle::new();
        assert_eq!(
            (l.state(), l.request(), l.active()),
            (VmState::Created, Request::Stop, 0)
        );
        assert_eq!(l, Lifecycle::default());
    }

    #[test]
    fn start_from_created_stopped_and_crashed_only() {
        for l in [Lifecycle::new(), stopped(), crashed()] {
            let s = l.start(2).unwrap();
            assert_eq!(
                (s.state(), s.request(), s.active()),
                (VmState::Running, Request::Run, 2)
            );
        }
        assert_eq!(running(1).start(1), Err(wrong(Op::Start, VmState::Running)));
        assert_eq!(paused(1).start(1), Err(wrong(Op::Start, VmState::Paused)));
        let gone = stopped().destroy().unwrap();
        assert_eq!(gone.start(1), Err(wrong(Op::Start, VmState::Destroyed)));
    }

    #[test]
    fn start_waits_for_vcpus_still_leaving() {
        // vCPU 0 powered the guest off; vCPU 1 has not left its pCPU yet.
        let (l, _) = running(2).report_stop(StopKind::PowerOff);
        let l = l.leave().0;
        assert_eq!(
            l.start(2),
            Err(LifecycleError::VcpusOut {
                op: Op::Start,
                state: VmState::Stopped,
                vcpus: 1
            })
        );
        assert!(l.leave().0.start(2).is_ok());
    }

    #[test]
    fn stop_of_a_running_vm_asks_its_vcpus_and_the_first_reports() {
        let l = running(2).stop().unwrap();
        assert_eq!((l.state(), l.request()), (VmState::Running, Request::Stop));
        let (l, first) = l.report_stop(StopKind::Operator);
        assert!(first);
        assert_eq!(l.state(), VmState::Stopped);
        let (l, second) = l.report_stop(StopKind::Operator);
        assert!(!second, "only one vCPU says the VM stopped");
        let (l, left) = l.leave();
        assert_eq!((left, l.active()), (Left::Quietly, 1));
        let (l, left) = l.leave();
        assert_eq!(
            (left, l.state(), l.active()),
            (Left::Quietly, VmState::Stopped, 0)
        );
    }

    #[test]
    fn stop_while_starting_ends_stopped_even_if_no_vcpu_entered() {
        // Started: both vCPUs posted, neither picked up yet; the operator stops at once.
        let l = running(2).stop().unwrap();
        // Each vCPU sees the stop at pick-up and leaves without running the guest.
        assert_eq!(VcpuRun::Off.step(l.request()), VcpuStep::Leave);
        let (l, left) = l.leave();
        assert_eq!((left, l.state()), (Left::Quietly, VmState::Running));
        let (l, left) = l.leave();
        assert_eq!(
            left,
            Left::StoppedTheVm,
            "the last one out says the VM stopped"
        );
        assert_eq!(
            (l.state(), l.request(), l.active()),
            (VmState::Stopped, Request::Stop, 0)
        );
    }

    #[test]
    fn double_stop() {
        // While the vCPUs leave, a second stop changes nothing...
        let l = running(1).stop().unwrap();
        assert_eq!(l.stop(), Ok(l));
        // ...once stopped, it is refused naming the state.
        assert_eq!(stopped().stop(), Err(wrong(Op::Stop, VmState::Stopped)));
        assert_eq!(crashed().stop(), Err(wrong(Op::Stop, VmState::Crashed)));
        assert_eq!(
            Lifecycle::new().stop(),
            Err(wrong(Op::Stop, VmState::Created))
        );
    }

    #[test]
    fn stop_of_a_paused_vm() {
        let l = paused(1).stop().unwrap();
        assert_eq!((l.state(), l.request()), (VmState::Paused, Request::Stop));
        assert_eq!(VcpuRun::Running.step(l.request()), VcpuStep::Leave);
        let (l, first) = l.report_stop(StopKind::Operator);
        assert!(first);
        assert_eq!(all_leave(l).state(), VmState::Stopped);
    }

    #[test]
    fn pause_and_resume() {
        let l = running(2).pause().unwrap();
        assert_eq!((l.state(), l.request()), (VmState::Running, Request::Pause));
        assert_eq!(
            l.pause(),
            Ok(l),
            "pausing again while it pauses changes nothing"
        );
        let (l, first) = l.report_paused();
        assert!(first);
        let (l, second) = l.report_paused();
        assert!(!second, "only one vCPU says the VM paused");
        assert_eq!(l.state(), VmState::Paused);
        let l = l.resume().unwrap();
        assert_eq!((l.state(), l.request()), (VmState::Paused, Request::Run));
        let (l, first) = l.report_resumed();
        assert!(first);
        assert!(!l.report_resumed().1);
        assert_eq!(
            (l.state(), l.request(), l.active()),
            (VmState::Running, Request::Run, 2)
        );
    }

    #[test]
    fn pause_and_resume_refused_where_they_make_no_sense() {
        assert_eq!(stopped().pause(), Err(wrong(Op::Pause, VmState::Stopped)));
        assert_eq!(crashed().pause(), Err(wrong(Op::Pause, VmState::Crashed)));
        assert_eq!(
            Lifecycle::new().pause(),
            Err(wrong(Op::Pause, VmState::Created))
        );
        assert_eq!(paused(1).pause(), Err(wrong(Op::Pause, VmState::Paused)));
        assert_eq!(
            running(1).resume(),
            Err(wrong(Op::Resume, VmState::Running))
        );
        assert_eq!(stopped().resume(), Err(wrong(Op::Resume, VmState::Stopped)));
        // A pause while a stop is under way is refused naming both.
        assert_eq!(
            running(1).stop().unwrap().pause(),
            Err(LifecycleError::InTransition {
                op: Op::Pause,
                state: VmState::Running,
                request: Request::Stop
            })
        );
        assert_eq!(
            paused(1).stop().unwrap().resume(),
            Err(LifecycleError::InTransition {
                op: Op::Resume,
                state: VmState::Paused,
                request: Request::Stop
            })
        );
    }

    #[test]
    fn reset_plans() {
        assert_eq!(running(1).reset_plan(), Ok(ResetPlan::StopThenStart));
        assert_eq!(paused(1).reset_plan(), Ok(ResetPlan::StopThenStart));
        for l in [Lifecycle::new(), stopped(), crashed()] {
            assert_eq!(l.reset_plan(), Ok(ResetPlan::Start));
        }
        let gone = stopped().destroy().unwrap();
        assert_eq!(gone.reset_plan(), Err(wrong(Op::Reset, VmState::Destroyed)));
    }

    #[test]
    fn reset_while_paused_stops_then_starts() {
        let l = paused(2);
        assert_eq!(l.reset_plan(), Ok(ResetPlan::StopThenStart));
        let l = l.stop().unwrap();
        // Held vCPUs leave; the first says the VM stopped.
        assert_eq!(VcpuRun::Running.step(l.request()), VcpuStep::Leave);
        let (l, first) = l.report_stop(StopKind::Operator);
        assert!(first);
        let l = l.leave().0;
        assert!(matches!(
            l.start(2),
            Err(LifecycleError::VcpusOut { vcpus: 1, .. })
        ));
        let l = l.leave().0.start(2).unwrap();
        assert_eq!(
            (l.state(), l.request(), l.active()),
            (VmState::Running, Request::Run, 2)
        );
    }

    #[test]
    fn destroy_only_what_does_not_run() {
        assert_eq!(
            running(1).destroy(),
            Err(wrong(Op::Destroy, VmState::Running))
        );
        assert_eq!(
            paused(1).destroy(),
            Err(wrong(Op::Destroy, VmState::Paused))
        );
        for l in [Lifecycle::new(), stopped(), crashed()] {
            let d = l.destroy().unwrap();
            assert_eq!(
                (d.state(), d.request(), d.active()),
                (VmState::Destroyed, Request::Stop, 0)
            );
            assert_eq!(d.destroy(), Err(wrong(Op::Destroy, VmState::Destroyed)));
            assert_eq!(d.stop(), Err(wrong(Op::Stop, VmState::Destroyed)));
            assert_eq!(d.pause(), Err(wrong(Op::Pause, VmState::Destroyed)));
            assert_eq!(d.resume(), Err(wrong(Op::Resume, VmState::Destroyed)));
            assert_eq!(d.report_stop(StopKind::Crash), (d, false));
            assert_eq!(d.guest_reset(), (d, GuestReset::Leave));
        }
    }

    #[test]
    fn destroy_while_an_io_waits() {
        // vCPU 1 of a running VM is parked waiting for an I/O completion.
        let mut l = running(2);
        let v1 = VcpuRun::Running.on(VcpuEvent::WaitForIo).unwrap();
        assert_eq!(v1, VcpuRun::WaitingForIo);
        assert_eq!(v1.step(l.request()), VcpuStep::KeepWaiting);
        // Destroying it running is refused; a pause does not disturb the wait.
        assert_eq!(l.destroy(), Err(wrong(Op::Destroy, VmState::Running)));
        assert_eq!(v1.step(Request::Pause), VcpuStep::KeepWaiting);
        // vCPU 0 powers the guest off: the VM is stopped, vCPU 1 still parked.
        l = l.report_stop(StopKind::PowerOff).0.leave().0;
        assert_eq!(l.state(), VmState::Stopped);
        assert_eq!(
            l.destroy(),
            Err(LifecycleError::VcpusOut {
                op: Op::Destroy,
                state: VmState::Stopped,
                vcpus: 1
            })
        );
        // The machine says the parked vCPU ends its wait and leaves.
        assert_eq!(v1.step(l.request()), VcpuStep::AbandonIo);
        assert_eq!(v1.on(VcpuEvent::Leave), Ok(VcpuRun::Off));
        l = l.leave().0;
        assert_eq!(l.destroy().map(|d| d.state()), Ok(VmState::Destroyed));
        // An operator stop ends the wait the same way.
        assert_eq!(
            v1.step(running(2).stop().unwrap().request()),
            VcpuStep::AbandonIo
        );
        assert_eq!(v1.step(Request::Reset), VcpuStep::AbandonIo);
    }

    #[test]
    fn guest_power_off_and_crash() {
        let (l, first) = running(1).report_stop(StopKind::PowerOff);
        assert!(first);
        assert_eq!((l.state(), l.request()), (VmState::Stopped, Request::Stop));
        let (l, first) = running(1).report_stop(StopKind::Crash);
        assert!(first);
        assert_eq!(l.state(), VmState::Crashed);
        // A crash of a paused VM (a vCPU that had not noticed the pause yet).
        assert_eq!(
            paused(2).report_stop(StopKind::Crash).0.state(),
            VmState::Crashed
        );
        // Reports after the end change nothing.
        assert_eq!(stopped().report_stop(StopKind::Crash), (stopped(), false));
        assert!(!Lifecycle::new().report_stop(StopKind::PowerOff).1);
    }

    #[test]
    fn guest_reset_reboots_through_one_vcpu() {
        let (l, r) = running(2).guest_reset();
        assert_eq!(r, GuestReset::Reboot);
        assert_eq!(l.request(), Request::Reset);
        // The other vCPU sees the reset: it leaves, and a second reset changes nothing.
        assert_eq!(VcpuRun::Halted.step(l.request()), VcpuStep::Leave);
        assert_eq!(l.guest_reset(), (l, GuestReset::Leave));
        assert!(matches!(
            l.relaunch(2),
            Err(LifecycleError::VcpusOut {
                op: Op::Reboot,
                vcpus: 2,
                ..
            })
        ));
        let l = l.leave().0;
        let l = l.relaunch(2).unwrap();
        assert_eq!(
            (l.state(), l.request(), l.active()),
            (VmState::Running, Request::Run, 2)
        );
        // A paused VM reset by a vCPU that had not noticed the pause reboots too.
        let (l, r) = running(1).pause().unwrap().guest_reset();
        assert_eq!((r, l.request()), (GuestReset::Reboot, Request::Reset));
    }

    #[test]
    fn guest_reset_racing_an_operator_stop() {
        // The operator's stop first: the vCPU that saw the reset reports the stop instead.
        let l = running(2).stop().unwrap();
        let (l, r) = l.guest_reset();
        assert_eq!(r, GuestReset::StopInstead);
        assert_eq!(
            l.report_stop(StopKind::Operator).0.state(),
            VmState::Stopped
        );
        // The guest's reset first: the operator's stop still wins, and the reboot is refused.
        let (l, r) = running(2).guest_reset();
        assert_eq!(r, GuestReset::Reboot);
        let l = l.stop().unwrap();
        assert_eq!(l.request(), Request::Stop);
        let l = l.leave().0; // the other vCPU leaves
        assert_eq!(
            l.relaunch(2),
            Err(LifecycleError::InTransition {
                op: Op::Reboot,
                state: VmState::Running,
                request: Request::Stop
            })
        );
        let (l, first) = l.report_stop(StopKind::Operator);
        assert!(first);
        let (l, left) = l.leave();
        assert_eq!(
            (left, l.state(), l.active()),
            (Left::Quietly, VmState::Stopped, 0)
        );
        // A reset of a stopped VM (a late vCPU) leaves.
        assert_eq!(stopped().guest_reset().1, GuestReset::Leave);
        assert!(matches!(
            stopped().relaunch(1),
            Err(LifecycleError::WrongState { .. })
        ));
    }

    #[test]
    fn init_sends_a_vcpu_back_to_wait_for_sipi() {
        let ap = VcpuRun::Off.on(VcpuEvent::Init).unwrap();
        assert_eq!(ap, VcpuRun::WaitingForSipi);
        assert_eq!(ap.step(Request::Run), VcpuStep::KeepWaiting);
        assert_eq!(ap.step(Request::Pause), VcpuStep::KeepWaiting);
        assert_eq!(ap.step(Request::Stop), VcpuStep::Leave);
        assert_eq!(ap.step(Request::Reset), VcpuStep::Leave);
        let ap = ap.on(VcpuEvent::Start).unwrap();
        assert_eq!(ap, VcpuRun::Running);
        let halted = ap.on(VcpuEvent::Halt).unwrap();
        assert_eq!(halted.on(VcpuEvent::Init), Ok(VcpuRun::WaitingForSipi));
        assert_eq!(halted.on(VcpuEvent::Wake), Ok(VcpuRun::Running));
        // The VM's lifecycle does not move: an INIT is the guest's business.
        let l = running(2);
        assert_eq!(l.guest_reset().1, GuestReset::Reboot);
    }

    #[test]
    fn vcpu_events_refused_name_the_place() {
        let io = VcpuRun::Running.on(VcpuEvent::WaitForIo).unwrap();
        assert_eq!(
            io.on(VcpuEvent::Init),
            Err(LifecycleError::Vcpu {
                run: VcpuRun::WaitingForIo,
                event: VcpuEvent::Init
            })
        );
        assert_eq!(io.on(VcpuEvent::IoDone), Ok(VcpuRun::Running));
        assert!(VcpuRun::Off.on(VcpuEvent::Halt).is_err());
        assert!(VcpuRun::Halted.on(VcpuEvent::WaitForIo).is_err());
        assert!(VcpuRun::WaitingForSipi.on(VcpuEvent::IoDone).is_err());
        for r in VcpuRun::ALL {
            assert_eq!(r.on(VcpuEvent::Leave), Ok(VcpuRun::Off));
        }
    }

    #[test]
    fn vcpu_steps_for_every_place_and_request() {
        use VcpuStep::*;
        let table: Vec<(VcpuRun, [VcpuStep; 4])> = VcpuRun::ALL
            .iter()
            .map(|&r| (r, Request::ALL.map(|q| r.step(q))))
            .collect();
        assert_eq!(
            table,
            [
                (VcpuRun::Off, [Enter, Hold, Leave, Leave]),
                (
                    VcpuRun::WaitingForSipi,
                    [KeepWaiting, KeepWaiting, Leave, Leave]
                ),
                (VcpuRun::Running, [Enter, Hold, Leave, Leave]),
                (VcpuRun::Halted, [KeepWaiting, Hold, Leave, Leave]),
                (
                    VcpuRun::WaitingForIo,
                    [KeepWaiting, KeepWaiting, AbandonIo, AbandonIo]
                ),
            ]
        );
    }

    #[test]
    fn the_last_vcpu_out_of_a_live_vm_stops_it() {
        // Nobody reported (e.g. every vCPU was asked to leave before it ran): the last one out
        // makes the VM stopped rather than leave it "running" with nothing on its pCPUs.
        let (l, left) = running(1).leave();
        assert_eq!((left, l.state()), (Left::StoppedTheVm, VmState::Stopped));
        let (l, left) = paused(1).leave();
        assert_eq!((left, l.state()), (Left::StoppedTheVm, VmState::Stopped));
        // A crashed VM stays crashed.
        let (l, left) = running(1).report_stop(StopKind::Crash).0.leave();
        assert_eq!((left, l.state()), (Left::Quietly, VmState::Crashed));
    }

    #[test]
    fn encoding_round_trips_every_lifecycle() {
        for state in VmState::ALL {
            for request in Request::ALL {
                for active in [0, 1, 2, 64, u16::MAX] {
                    let l = Lifecycle {
                        state,
                        request,
                        active,
                    };
                    assert_eq!(Lifecycle::decode(l.encode()), l);
                }
            }
        }
    }

    #[test]
    fn the_atomic_applies_or_refuses_whole() {
        let a = AtomicLifecycle::new();
        assert_eq!(
            a.try_op(|l| l.stop()),
            Err(wrong(Op::Stop, VmState::Created))
        );
        assert_eq!(
            a.load(),
            Lifecycle::new(),
            "a refused change leaves it as it was"
        );
        a.try_op(|l| l.start(2)).unwrap();
        assert!(a.report(|l| l.report_stop(StopKind::PowerOff)));
        assert!(!a.report(|l| l.report_stop(StopKind::PowerOff)));
        assert_eq!(a.report(Lifecycle::leave), Left::Quietly);
        assert_eq!(a.report(Lifecycle::leave), Left::Quietly);
        assert_eq!((a.load().state(), a.load().active()), (VmState::Stopped, 0));
    }

    #[test]
    fn concurrent_reports_have_one_winner() {
        use std::sync::Arc;
        let a = Arc::new(AtomicLifecycle::new());
        a.try_op(|l| l.start(8)).unwrap();
        let winners: usize = (0..8)
            .map(|i| {
                let a = Arc::clone(&a);
                std::thread::spawn(move || {
                    let kind = if i % 2 == 0 {
                        StopKind::Crash
                    } else {
                        StopKind::Operator
                    };
                    let first = a.report(|l| l.report_stop(kind));
                    a.report(Lifecycle::leave);
                    usize::from(first)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(winners, 1);
        assert_eq!(a.load().active(), 0);
        assert!(!a.load().state().is_live());
    }

    #[test]
    fn errors_are_one_line_and_name_the_state() {
        let errs = [
            wrong(Op::Pause, VmState::Stopped),
            LifecycleError::InTransition {
                op: Op::Pause,
                state: VmState::Running,
                request: Request::Stop,
            },
            LifecycleError::VcpusOut {
                op: Op::Destroy,
                state: VmState::Stopped,
                vcpus: 1,
            },
            LifecycleError::Vcpu {
                run: VcpuRun::WaitingForIo,
                event: VcpuEvent::Init,
            },
        ];
        let text: Vec<_> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "cannot pause a VM that is stopped",
                "cannot pause a VM that is running and being stopped",
                "cannot destroy the VM yet: it is stopped but 1 vCPU(s) have not left their pCPUs",
                "a vCPU that is waiting for an I/O completion cannot take Init",
            ]
        );
    }
}
