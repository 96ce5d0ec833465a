//! The shell's view of the hypervisor ([`shell::ShellBackend`]): every question about a VM is
//! answered from the VM table by the VM's id; questions about the machine itself (pCPUs, host
//! memory, the log level, physical IOAPICs) go to the hypervisor through [`Machine`].

use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use log::LevelFilter;
use paging::GuestPhysAddr;
use platform::HostPhysAddr;
use scenario::VirtioKind;
use shell::{
    Action, BackendError, IoapicLine, IommuLine, IrqLine, Lifecycle as ShellOp, MemUsage, PciLine,
    Port, RegDump, ShellBackend, StatsLine, SwitchLine, SwitchPortLine, VcpuInfo, VcpuState,
    VirtioBackend, VirtioLine, VirtioQueueLine, VmInfo, VmState as ShellState,
};
use vcpu::GuestMemory;
use virtio::switch::Switch;
use virtio::VirtioPci;

use crate::io::IoHub;

use crate::lifecycle::{LifecycleError, VcpuRun, VmState};
use crate::manager::{ControlError, Vmm};
use crate::platform::Platform;
use crate::vm::Vm;
use crate::VmId;

/// What the shell asks of the machine rather than of a VM (the hypervisor answers).
pub trait Machine {
    /// One line: name and version.
    fn version(&self) -> &str;
    /// The registers of the vCPU held on `pcpu` (its VM is paused), asked of that pCPU.
    fn vcpu_regs(&self, pcpu: u16) -> Result<RegDump, BackendError>;
    /// Copies host RAM the shell may read, all or nothing.
    fn read_host(&self, hpa: HostPhysAddr, buf: &mut [u8]) -> Result<(), BackendError>;
    /// How many pCPUs the machine has.
    fn pcpu_count(&self) -> u16;
    /// Whether `pcpu` belongs to a real-time VM of the scenario.
    fn pcpu_is_rt(&self, pcpu: u16) -> bool;
    /// CPUID on `pcpu`.
    fn cpuid(&mut self, pcpu: u16, leaf: u32, sub: u32) -> Result<[u32; 4], BackendError>;
    /// RDMSR on `pcpu`.
    fn rdmsr(&mut self, pcpu: u16, msr: u32) -> Result<u64, BackendError>;
    /// WRMSR on `pcpu`.
    fn wrmsr(&mut self, pcpu: u16, msr: u32, value: u64) -> Result<(), BackendError>;
    /// The log level.
    fn log_level(&self) -> LevelFilter;
    /// Sets the log level.
    fn set_log_level(&mut self, level: LevelFilter);
    /// The physical IOAPICs' redirection tables.
    fn host_ioapics(&self) -> Vec<IoapicLine>;
    /// The host's interrupt vectors and their counts.
    fn interrupts(&self) -> Vec<IrqLine>;
    /// The frame allocator's and the heap's usage.
    fn mem_usage(&self) -> MemUsage;
    /// The physical PCI functions and their owners.
    fn pci(&self) -> Vec<PciLine>;
    /// The IOMMUs.
    fn iommu(&self) -> Vec<IommuLine>;
}

/// The shell's backend: the VMs of a [`Vmm`] plus the [`Machine`].
pub struct VmmShell<'a, P: Platform, M> {
    vmm: &'a Vmm<P>,
    machine: M,
}

/// The state the shell shows (it does not tell a created VM from a stopped one).
pub fn shell_state(state: VmState) -> ShellState {
    match state {
        VmState::Created | VmState::Stopped | VmState::Destroyed => ShellState::Stopped,
        VmState::Running => ShellState::Running,
        VmState::Paused => ShellState::Paused,
        VmState::Crashed => ShellState::Crashed,
    }
}

/// One `vm_list` line.
pub fn vm_info<P: Platform>(vm: &Vm<P>) -> VmInfo {
    VmInfo {
        id: vm.id,
        name: vm.cfg.name.into(),
        state: shell_state(vm.state()),
        load_order: vm.cfg.load_order,
        vm_type: vm.cfg.vm_type,
        pcpus: vm.cfg.pcpus.to_vec(),
        vcpus: vm.cfg.vcpus,
        memory: vm.cfg.memory.size,
        console: vm.cfg.console.is_some(),
        hvc: vm.hvc().is_some(),
    }
}

/// One `virtio` line: device `dev` at `slot`, which the VM's configuration gives `kind` (none if
/// the configuration does not list the slot); switch names come from `hub`.
pub fn virtio_line(
    slot: String,
    dev: &VirtioPci,
    kind: Option<VirtioKind>,
    hub: &IoHub,
) -> VirtioLine {
    let backend = match kind {
        Some(VirtioKind::Blk { module, readonly }) => VirtioBackend::Disk {
            module: module.into(),
            readonly,
        },
        Some(VirtioKind::Net { switch, mac }) => VirtioBackend::Switch {
            mac,
            switch: hub
                .switches
                .get(usize::from(switch))
                .map_or_else(|| format!("switch {switch}"), |s| String::from(s.name())),
        },
        Some(VirtioKind::Console | VirtioKind::Rng) | None => VirtioBackend::None,
    };
    let t = dev.stats();
    let d = dev.device_stats();
    VirtioLine {
        slot,
        kind: dev.device().name().into(),
        backend,
        status: dev.status(),
        features: dev.driver_features(),
        requests: d.requests,
        errors: d.errors,
        bytes_in: d.bytes_in,
        bytes_out: d.bytes_out,
        dropped: d.dropped,
        interrupts: t.interrupts,
        notifies: t.notifies,
        ignored_notifies: t.ignored_notifies,
        needs_reset: t.needs_reset,
        fault: dev.fault().map(|e| e.to_string()),
        queues: (0u16..)
            .zip(dev.queue_stats())
            .map(|(index, q)| VirtioQueueLine {
                index,
                size: q.size,
                enabled: q.enabled,
                notifies: q.notifies,
                served: q.served,
            })
            .collect(),
    }
}

/// One `switches` entry.
pub fn switch_line(s: &Switch) -> SwitchLine {
    SwitchLine {
        name: s.name().into(),
        flooded: s.flooded(),
        ports: s
            .ports()
            .into_iter()
            .map(|p| SwitchPortLine {
                name: p.name,
                mac: p.mac,
                tx_frames: p.counters.tx_frames,
                tx_bytes: p.counters.tx_bytes,
                rx_frames: p.counters.rx_frames,
                rx_bytes: p.counters.rx_bytes,
                rx_dropped: p.counters.rx_dropped,
                tx_malformed: p.counters.tx_malformed,
                queued: u64::try_from(p.queued).unwrap_or(u64::MAX),
            })
            .collect(),
        learned: s.learned(),
    }
}

impl<'a, P: Platform, M: Machine> VmmShell<'a, P, M> {
    /// The shell's backend over `vmm`'s VMs and `machine`.
    pub fn new(vmm: &'a Vmm<P>, machine: M) -> Self {
        VmmShell { vmm, machine }
    }

    /// The VM with this id.
    fn vm(&self, id: VmId) -> Result<alloc::sync::Arc<Vm<P>>, BackendError> {
        self.vmm.get(id).map_err(|_| BackendError::NoSuchVm(id))
    }

    /// Carries out what the shell asked for that concerns a VM: typed bytes go to the console
    /// the action names (its vUART or its virtio console) of the VM with the id it names. Every
    /// other action is handed back to the caller.
    pub fn route(&self, action: Action) -> Option<Action> {
        match action {
            // A VM that went away meanwhile, or whose queue is full, just loses the byte.
            Action::ToGuest(id, Port::Uart, byte) => {
                let _ = self.vmm.input(id, byte);
                None
            }
            Action::ToGuest(id, Port::Hvc, byte) => {
                let _ = self.vmm.input_hvc(id, &[byte]);
                None
            }
            other => Some(other),
        }
    }
}

impl<P: Platform, M: Machine> ShellBackend for VmmShell<'_, P, M> {
    fn version(&self) -> &str {
        self.machine.version()
    }

    fn vms(&self) -> Vec<VmInfo> {
        self.vmm
            .table()
            .snapshot()
            .iter()
            .map(|vm| vm_info(vm))
            .collect()
    }

    fn vcpus(&self, id: VmId) -> Result<Vec<VcpuInfo>, BackendError> {
        let vm = self.vm(id)?;
        let state = vm.state();
        Ok((0u16..)
            .zip(vm.cfg.pcpus.iter().zip(&vm.vcpus))
            .map(|(i, (&p, slot))| VcpuInfo {
                index: i,
                pcpu: p,
                state: match (state, slot.run()) {
                    (s, _) if !s.is_live() => VcpuState::Stopped,
                    (_, VcpuRun::Off) => VcpuState::Stopped,
                    (VmState::Paused, _) => VcpuState::Paused,
                    (_, VcpuRun::WaitingForSipi) => VcpuState::WaitingForStartup,
                    (_, VcpuRun::Halted) => VcpuState::Halted,
                    (_, VcpuRun::WaitingForIo) => VcpuState::WaitingForIo,
                    (_, VcpuRun::Running) => VcpuState::Running,
                },
                exits: slot.stats.lock().total(),
            })
            .collect())
    }

    fn break_entry(&mut self, id: VmId, vcpu: u16) -> Result<(), BackendError> {
        let vm = self.vm(id)?;
        let slot = vm
            .vcpus
            .get(usize::from(vcpu))
            .ok_or(BackendError::NoSuchVcpu { vm: id, vcpu })?;
        slot.break_entry_after.store(1, Ordering::Relaxed);
        Ok(())
    }

    fn vcpu_regs(&self, id: VmId, vcpu: u16) -> Result<RegDump, BackendError> {
        let vm = self.vm(id)?;
        let pcpu = vm
            .pcpu_of(vcpu)
            .ok_or(BackendError::NoSuchVcpu { vm: id, vcpu })?;
        if vm.state() != VmState::Paused {
            return Err(BackendError::VcpuRunning { vm: id, vcpu });
        }
        self.machine.vcpu_regs(pcpu)
    }

    fn read_guest(&self, id: VmId, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), BackendError> {
        let vm = self.vm(id)?;
        let read = vm.ram.read(gpa.0, buf);
        read.map_err(|_| BackendError::GuestRange {
            vm: id,
            gpa,
            len: buf.len(),
        })
    }

    fn read_host(&self, hpa: HostPhysAddr, buf: &mut [u8]) -> Result<(), BackendError> {
        self.machine.read_host(hpa, buf)
    }

    fn lifecycle(&mut self, id: VmId, op: ShellOp) -> Result<(), BackendError> {
        let vm = self.vm(id)?;
        let result = match op {
            ShellOp::Start => self.vmm.start(id),
            ShellOp::Stop => self.vmm.stop(id),
            ShellOp::Pause => self.vmm.pause(id),
            ShellOp::Resume => self.vmm.resume(id),
            ShellOp::Reset => self.vmm.reset(id),
        };
        result.map_err(|e| match e {
            ControlError::NoSuchVm(_) | ControlError::Table(_) => BackendError::NoSuchVm(id),
            ControlError::Lifecycle {
                error:
                    LifecycleError::WrongState { .. }
                    | LifecycleError::InTransition { .. }
                    | LifecycleError::Vcpu { .. },
                ..
            }
            | ControlError::Overtaken { .. } => BackendError::BadState {
                vm: id,
                op,
                state: shell_state(vm.state()),
            },
            ControlError::Lifecycle {
                error: LifecycleError::VcpusOut { .. },
                ..
            }
            | ControlError::Timeout { .. } => {
                BackendError::PcpuTimeout(vm.cfg.pcpus.first().copied().unwrap_or(0))
            }
            ControlError::LoadFailed(_) => {
                BackendError::Unsupported("reloading the kernel failed (see the log)")
            }
            // Not a lifecycle answer; named for completeness.
            ControlError::NoVirtioConsole(_) => {
                BackendError::Unsupported("the VM has no virtio console")
            }
        })
    }

    fn stats(&self, vm: Option<VmId>) -> Result<Vec<StatsLine>, BackendError> {
        let vms = match vm {
            Some(id) => vec![self.vm(id)?],
            None => self.vmm.table().snapshot(),
        };
        Ok(vms
            .iter()
            .flat_map(|vm| {
                (0u16..).zip(&vm.vcpus).map(|(i, v)| StatsLine {
                    vm: vm.id,
                    vcpu: i,
                    exits: *v.stats.lock(),
                    injected: v.injected.load(Ordering::Relaxed),
                    guest_cycles: v.guest_cycles.load(Ordering::Relaxed),
                    hv_cycles: v.hv_cycles.load(Ordering::Relaxed),
                })
            })
            .collect())
    }

    fn pcpu_count(&self) -> u16 {
        self.machine.pcpu_count()
    }

    fn pcpu_is_rt(&self, pcpu: u16) -> bool {
        self.machine.pcpu_is_rt(pcpu)
    }

    fn cpuid(&mut self, pcpu: u16, leaf: u32, sub: u32) -> Result<[u32; 4], BackendError> {
        self.machine.cpuid(pcpu, leaf, sub)
    }

    fn rdmsr(&mut self, pcpu: u16, msr: u32) -> Result<u64, BackendError> {
        self.machine.rdmsr(pcpu, msr)
    }

    fn wrmsr(&mut self, pcpu: u16, msr: u32, value: u64) -> Result<(), BackendError> {
        self.machine.wrmsr(pcpu, msr, value)
    }

    fn log_level(&self) -> LevelFilter {
        self.machine.log_level()
    }

    fn set_log_level(&mut self, level: LevelFilter) {
        self.machine.set_log_level(level);
    }

    fn ioapic(&self, vm: Option<VmId>) -> Result<Vec<IoapicLine>, BackendError> {
        match vm {
            Some(id) => {
                let vm = self.vm(id)?;
                Ok(vm
                    .vioapic_table()
                    .into_iter()
                    .enumerate()
                    .map(|(pin, rte)| IoapicLine {
                        ioapic: 0,
                        pin: pin as u8,
                        rte,
                    })
                    .collect())
            }
            None => Ok(self.machine.host_ioapics()),
        }
    }

    fn virtio(&self, id: VmId) -> Result<Vec<VirtioLine>, BackendError> {
        let vm = self.vm(id)?;
        // Only a VM given the machine's backends has virtio devices.
        let Some(io) = &vm.io else {
            return Ok(Vec::new());
        };
        let mut lines = Vec::new();
        vm.platform.with(|p| {
            p.for_each_pci_device(|bdf, dev| {
                let Some(v) = dev.as_any().and_then(|a| a.downcast_ref::<VirtioPci>()) else {
                    return;
                };
                let kind = (bdf.bus() == 0 && bdf.function() == 0)
                    .then(|| vm.cfg.virtio.iter().find(|c| c.slot == bdf.device()))
                    .flatten()
                    .map(|c| c.kind);
                lines.push(virtio_line(bdf.to_string(), v, kind, &io.hub));
            });
        });
        // "bb:dd.f" in fixed-width hex sorts as the address does.
        lines.sort_by(|a, b| a.slot.cmp(&b.slot));
        Ok(lines)
    }

    fn switches(&self) -> Vec<SwitchLine> {
        // The switches live in the machine's backends, which every VM holds: each switch once,
        // in the order of its hub.
        let mut seen: Vec<Arc<Switch>> = Vec::new();
        for vm in self.vmm.table().snapshot() {
            let Some(io) = &vm.io else { continue };
            for s in &io.hub.switches {
                if !seen.iter().any(|x| Arc::ptr_eq(x, s)) {
                    seen.push(s.clone());
                }
            }
        }
        seen.iter().map(|s| switch_line(s)).collect()
    }

    fn shm(&self) -> Vec<shell::ShmLine> {
        // Like the switches: each region once, in the order of its hub.
        let mut seen: Vec<crate::shm::SharedRegion> = Vec::new();
        for vm in self.vmm.table().snapshot() {
            let Some(io) = &vm.io else { continue };
            for r in &io.hub.shm {
                if !seen.iter().any(|x| Arc::ptr_eq(&x.region, &r.region)) {
                    seen.push(r.clone());
                }
            }
        }
        seen.iter().map(crate::shm::region_line).collect()
    }

    fn vuart_links(&self) -> Vec<shell::LinkLine> {
        // Each link once, in the order of its hub.
        let mut seen: Vec<(Arc<crate::uart_link::UartLink>, [scenario::VuartLinkEnd; 2])> =
            Vec::new();
        for vm in self.vmm.table().snapshot() {
            let Some(io) = &vm.io else { continue };
            for (l, ends) in &io.hub.links {
                if !seen.iter().any(|(x, _)| Arc::ptr_eq(x, l)) {
                    seen.push((l.clone(), *ends));
                }
            }
        }
        let name_of = |id: u16| {
            self.vmm
                .table()
                .snapshot()
                .iter()
                .find(|vm| vm.cfg.id == id)
                .map_or_else(|| alloc::format!("vm{id}"), |vm| String::from(vm.cfg.name))
        };
        seen.iter()
            .map(|(l, ends)| {
                let info = l.info();
                let end = |i: usize| shell::LinkEndLine {
                    vm: name_of(ends[i].vm),
                    port: ends[i].uart.port,
                    attached: info[i].attached,
                    dtr: info[i].dtr,
                    rts: info[i].rts,
                    sent: info[i].counters.sent,
                    delivered: info[i].counters.delivered,
                    dropped: info[i].counters.dropped,
                    stalls: info[i].counters.stalls,
                    queued: info[i].queued,
                };
                shell::LinkLine {
                    name: String::from(l.name()),
                    ends: [end(0), end(1)],
                }
            })
            .collect()
    }

    fn interrupts(&self) -> Vec<IrqLine> {
        self.machine.interrupts()
    }

    fn mem_usage(&self) -> MemUsage {
        self.machine.mem_usage()
    }

    fn pci(&self) -> Vec<PciLine> {
        self.machine.pci()
    }

    fn iommu(&self) -> Vec<IommuLine> {
        self.machine.iommu()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use alloc::string::String;
    use alloc::sync::Arc;
    use alloc::vec::Vec;

    use shell::{Action, Console, ShellBackend};

    use super::*;
    use crate::mock::{config, eventually, vm, vm_with_io, MockPlatform, Pcpus};

    /// A machine with nothing to say beyond its VMs.
    struct NoMachine;

    impl Machine for NoMachine {
        fn version(&self) -> &str {
            "Quercus test"
        }
        fn vcpu_regs(&self, pcpu: u16) -> Result<RegDump, BackendError> {
            Err(BackendError::PcpuTimeout(pcpu))
        }
        fn read_host(&self, hpa: HostPhysAddr, buf: &mut [u8]) -> Result<(), BackendError> {
            Err(BackendError::HostRange {
                hpa,
                len: buf.len(),
            })
        }
        fn pcpu_count(&self) -> u16 {
            4
        }
        fn pcpu_is_rt(&self, _pcpu: u16) -> bool {
            false
        }
        fn cpuid(&mut self, pcpu: u16, _leaf: u32, _sub: u32) -> Result<[u32; 4], BackendError> {
            Err(BackendError::NoSuchPcpu(pcpu))
        }
        fn rdmsr(&mut self, pcpu: u16, _msr: u32) -> Result<u64, BackendError> {
            Err(BackendError::NoSuchPcpu(pcpu))
        }
        fn wrmsr(&mut self, pcpu: u16, _msr: u32, _value: u64) -> Result<(), BackendError> {
            Err(BackendError::NoSuchPcpu(pcpu))
        }
        fn log_level(&self) -> LevelFilter {
            LevelFilter::Info
        }
        fn set_log_level(&mut self, _level: LevelFilter) {}
        fn host_ioapics(&self) -> Vec<IoapicLine> {
            Vec::new()
        }
        fn interrupts(&self) -> Vec<IrqLine> {
            Vec::new()
        }
        fn mem_usage(&self) -> MemUsage {
            MemUsage::default()
        }
        fn pci(&self) -> Vec<PciLine> {
            Vec::new()
        }
        fn iommu(&self) -> Vec<IommuLine> {
            Vec::new()
        }
    }

    /// Types `text` at the shell; returns what it printed. Typed bytes for VMs are routed.
    fn type_in(
        con: &mut Console,
        sh: &mut VmmShell<'_, MockPlatform, NoMachine>,
        text: &str,
    ) -> String {
        let mut printed = Vec::new();
        for &b in text.as_bytes() {
            for a in con.feed_input(sh, b) {
                match sh.route(a) {
                    Some(Action::Print(bytes)) => printed.extend(bytes),
                    Some(other) => panic!("unexpected {other:?}"),
                    None => {}
                }
            }
        }
        String::from_utf8_lossy(&printed).into_owned()
    }

    /// The scenario's VM 0 (`sos`) and VM 2 (`post`) were not started: the table holds VM 1
    /// (`b`, pCPU 1) and VM 3 (`d`, pCPU 2), both running.
    fn gap() -> (Arc<Vmm<MockPlatform>>, Pcpus) {
        let vmm = Arc::new(Vmm::new(MockPlatform::new(), 4));
        for (id, name, pcpus) in [(1, "b", &[1u16][..]), (3, "d", &[2][..])] {
            let pcpus: &'static [u16] = alloc::boxed::Box::leak(pcpus.into());
            vmm.add(vm(vmm.platform(), config(id, name, pcpus)))
                .unwrap();
        }
        let pcpus = Pcpus::start(&vmm, &[1, 2]);
        vmm.start(VmId(1)).unwrap();
        vmm.start(VmId(3)).unwrap();
        (vmm, pcpus)
    }

    #[test]
    fn commands_reach_the_vm_with_the_scenario_id_not_the_position() {
        let (vmm, _pcpus) = gap();
        let mut sh = VmmShell::new(&*vmm, NoMachine);
        let mut con = Console::new();
        con.start(&sh);
        let list = type_in(&mut con, &mut sh, "vm_list\r");
        let rows: Vec<Vec<&str>> = list
            .lines()
            .map(|l| l.split_whitespace().take(3).collect())
            .filter(|r: &Vec<&str>| r.len() == 3 && r[2] == "running")
            .collect();
        assert_eq!(
            rows,
            [["1", "b", "running"], ["3", "d", "running"]],
            "{list}"
        );
        let ids: Vec<VmId> = sh.vms().iter().map(|v| v.id).collect();
        assert_eq!(ids, [VmId(1), VmId(3)]);
        // `vm_stop 1` stops the scenario's VM 1 (`b`, the first in the table), not the second
        // entry of the table (`d`): a positional lookup would have stopped `d`.
        let said = type_in(&mut con, &mut sh, "vm_stop 1\r");
        assert!(said.contains("b: stopped"), "{said}");
        assert_eq!(vmm.get(VmId(1)).unwrap().state(), VmState::Stopped);
        assert_eq!(vmm.get(VmId(3)).unwrap().state(), VmState::Running);
        // By name, and by the id 3 that no position reaches.
        let said = type_in(&mut con, &mut sh, "vm_pause d\r");
        assert!(said.contains("d: paused"), "{said}");
        assert_eq!(vmm.get(VmId(3)).unwrap().state(), VmState::Paused);
        let said = type_in(&mut con, &mut sh, "vm_resume 3\r");
        assert!(said.contains("d: running"), "{said}");
        let said = type_in(&mut con, &mut sh, "vcpu_list 3\r");
        assert!(said.lines().any(|l| l.starts_with("d ")), "{said}");
        let said = type_in(&mut con, &mut sh, "dump_guest_mem 3 0x1000 1\r");
        assert!(said.to_lowercase().contains("f4"), "{said}");
        // Ids that are holes answer as such.
        let said = type_in(&mut con, &mut sh, "vm_start 0\r");
        assert!(said.contains("no VM with id 0"), "{said}");
        let said = type_in(&mut con, &mut sh, "vm_stop 2\r");
        assert!(said.contains("no VM with id 2"), "{said}");
        assert!(matches!(
            sh.vcpus(VmId(2)),
            Err(BackendError::NoSuchVm(VmId(2)))
        ));
        vmm.stop(VmId(3)).unwrap();
    }

    #[test]
    fn typed_bytes_reach_the_attached_vm_by_id() {
        let (vmm, _pcpus) = gap();
        let mut sh = VmmShell::new(&*vmm, NoMachine);
        let mut con = Console::new();
        con.start(&sh);
        // Attach to `d` (id 3, the second VM in the table) and type.
        let said = type_in(&mut con, &mut sh, "vm_console d\r");
        assert!(said.contains("attached to d"), "{said}");
        type_in(&mut con, &mut sh, "hi");
        let (b, d) = (vmm.get(VmId(1)).unwrap(), vmm.get(VmId(3)).unwrap());
        assert!(d.console.has_typed(), "the bytes wait for d's vUART");
        assert!(!b.console.has_typed(), "nothing went to b");
        // pCPU 0's pump moves them into d's vUART receive FIFO.
        let mut out = Vec::new();
        vmm.pump_consoles(&mut out, |_, _, _| {});
        assert!(!d.console.has_typed());
        let mut got = Vec::new();
        d.platform.with(|platform| {
            // RBR at COM1, LSR bit 0: data ready.
            while platform.pio_read(0x3FD, 1, 0) & 1 != 0 {
                got.push(platform.pio_read(0x3F8, 1, 0) as u8);
            }
        });
        assert_eq!(got, b"hi");
        // Input for an id that is not in the table goes nowhere and harms nothing.
        assert_eq!(sh.route(Action::ToGuest(VmId(0), Port::Uart, b'x')), None);
        assert!(!b.console.has_typed());
        vmm.stop(VmId(1)).unwrap();
        vmm.stop(VmId(3)).unwrap();
        eventually("both stopped", || {
            vmm.table()
                .snapshot()
                .iter()
                .all(|v| v.lifecycle().active() == 0)
        });
    }

    #[test]
    fn break_entry_arms_the_hook_of_that_vcpu() {
        let (vmm, _pcpus) = gap();
        let mut sh = VmmShell::new(&*vmm, NoMachine);
        assert_eq!(
            sh.break_entry(VmId(1), 1),
            Err(BackendError::NoSuchVcpu {
                vm: VmId(1),
                vcpu: 1
            })
        );
        assert_eq!(
            sh.break_entry(VmId(9), 0),
            Err(BackendError::NoSuchVm(VmId(9)))
        );
        // VM 1 stops on its next entry; VM 3 goes on.
        assert_eq!(sh.break_entry(VmId(1), 0), Ok(()));
        eventually("VM 1 to crash", || {
            vmm.get(VmId(1))
                .is_ok_and(|v| v.state() == VmState::Crashed)
        });
        assert_eq!(vmm.get(VmId(3)).map(|v| v.state()), Ok(VmState::Running));
        vmm.stop(VmId(3)).unwrap();
    }

    #[test]
    fn shell_states_and_lifecycle_errors() {
        assert_eq!(shell_state(VmState::Created), ShellState::Stopped);
        assert_eq!(shell_state(VmState::Crashed), ShellState::Crashed);
        let (vmm, _pcpus) = gap();
        let mut sh = VmmShell::new(&*vmm, NoMachine);
        assert_eq!(
            sh.lifecycle(VmId(1), ShellOp::Resume),
            Err(BackendError::BadState {
                vm: VmId(1),
                op: ShellOp::Resume,
                state: ShellState::Running
            })
        );
        assert_eq!(
            sh.lifecycle(VmId(9), ShellOp::Stop),
            Err(BackendError::NoSuchVm(VmId(9)))
        );
        assert_eq!(sh.lifecycle(VmId(1), ShellOp::Reset), Ok(()));
        assert_eq!(
            sh.vcpu_regs(VmId(1), 0),
            Err(BackendError::VcpuRunning {
                vm: VmId(1),
                vcpu: 0
            })
        );
        assert_eq!(
            sh.vcpu_regs(VmId(1), 1),
            Err(BackendError::NoSuchVcpu {
                vm: VmId(1),
                vcpu: 1
            })
        );
        let stats = sh.stats(None).unwrap();
        assert_eq!(
            stats.iter().map(|s| s.vm).collect::<Vec<_>>(),
            [VmId(1), VmId(3)]
        );
        vmm.stop(VmId(1)).unwrap();
        vmm.stop(VmId(3)).unwrap();
    }

    /// Entropy that is always 0x5a.
    struct Fixed;

    impl virtio::rng::EntropySource for Fixed {
        fn fill(&mut self, buf: &mut [u8]) -> usize {
            buf.fill(0x5a);
            buf.len()
        }
    }

    struct NoWake;

    impl virtio::switch::PortWaker for NoWake {
        fn wake(&self) {}
    }

    const IO_MAC: [u8; 6] = [2, 0, 0, 0, 5, 1];
    const UPLINK_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x99];

    /// VM 5 (`io`) with an entropy device at 00:08.0, a read-only disk at 00:09.0 and a port on
    /// `lan0` at 00:0a.0; VM 6 (`plain`) without the machine's backends; VM 7 (`bare`) with them
    /// but no virtio devices. Nothing runs.
    fn io_vms() -> (Arc<Vmm<MockPlatform>>, Arc<IoHub>) {
        let mut hub = IoHub::empty(|_| {});
        hub.entropy = Some(|| alloc::boxed::Box::new(Fixed));
        hub.switches = vec![Switch::new("lan0")];
        let image: &'static mut [u8] = alloc::boxed::Box::leak(vec![0u8; 8 * 512].into());
        hub.disks
            .push(("disk0", virtio::blk::MemDisk::new(image, "disk0")));
        let hub = Arc::new(hub);
        let mut cfg = *config(5, "io", &[1]);
        cfg.virtio = alloc::boxed::Box::leak(alloc::boxed::Box::new([
            scenario::VirtioConfig {
                kind: VirtioKind::Rng,
                slot: 8,
            },
            scenario::VirtioConfig {
                kind: VirtioKind::Blk {
                    module: "disk0",
                    readonly: true,
                },
                slot: 9,
            },
            scenario::VirtioConfig {
                kind: VirtioKind::Net {
                    switch: 0,
                    mac: IO_MAC,
                },
                slot: 10,
            },
        ]));
        let cfg = alloc::boxed::Box::leak(alloc::boxed::Box::new(cfg));
        let vmm = Arc::new(Vmm::new(MockPlatform::new(), 4));
        let p = vmm.platform();
        vmm.add(vm_with_io(p, cfg, Some(hub.clone()))).unwrap();
        vmm.add(vm(p, config(6, "plain", &[2]))).unwrap();
        vmm.add(vm_with_io(p, config(7, "bare", &[3]), Some(hub.clone())))
            .unwrap();
        (vmm, hub)
    }

    /// Runs one shell command line against `sh`: its output, or its error line.
    fn run_line(sh: &mut VmmShell<'_, MockPlatform, NoMachine>, line: &str) -> String {
        let mut logs = shell::VmLogs::new();
        let mut out = shell::Output::new();
        match shell::execute(sh, &mut logs, line, &mut out) {
            Ok(_) => String::from_utf8_lossy(out.as_bytes()).replace("\r\n", "\n"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_virtio_devices_of_a_vm_as_plugged_in() {
        let (vmm, _hub) = io_vms();
        let sh = VmmShell::new(&*vmm, NoMachine);
        let lines = sh.virtio(VmId(5)).unwrap();
        let seen: Vec<(&str, &str, &VirtioBackend)> = lines
            .iter()
            .map(|l| (l.slot.as_str(), l.kind.as_str(), &l.backend))
            .collect();
        assert_eq!(
            seen,
            [
                ("00:08.0", "rng", &VirtioBackend::None),
                (
                    "00:09.0",
                    "blk",
                    &VirtioBackend::Disk {
                        module: "disk0".into(),
                        readonly: true
                    }
                ),
                (
                    "00:0a.0",
                    "net",
                    &VirtioBackend::Switch {
                        mac: IO_MAC,
                        switch: "lan0".into()
                    }
                ),
            ]
        );
        for l in &lines {
            // Nothing touched them yet.
            assert_eq!(
                (l.status, l.features, l.notifies, l.needs_reset),
                (0, 0, 0, 0)
            );
            assert_eq!(l.fault, None);
            assert!(!l.queues.is_empty(), "{l:?}");
            for (i, q) in (0u16..).zip(&l.queues) {
                assert_eq!((q.index, q.enabled, q.notifies, q.served), (i, false, 0, 0));
                assert!(q.size.is_power_of_two(), "{q:?}");
            }
        }
        assert_eq!(lines[2].queues.len(), 2, "net: receive and transmit");
        // Without the machine's backends, or without virtio devices: none. No such VM: an error.
        assert_eq!(sh.virtio(VmId(6)), Ok(Vec::new()));
        assert_eq!(sh.virtio(VmId(7)), Ok(Vec::new()));
        assert_eq!(sh.virtio(VmId(9)), Err(BackendError::NoSuchVm(VmId(9))));
    }

    #[test]
    fn a_broken_driver_shows_in_the_virtio_line() {
        let (vmm, _hub) = io_vms();
        let mut sh = VmmShell::new(&*vmm, NoMachine);
        // A driver of the entropy device (BAR 0 = common configuration) acknowledges it,
        // accepts VERSION_1, notifies too early and enables a queue of 3 entries.
        let common = u64::from(::vm::pc::layout::device_bars(8).0);
        let io = vmm.get(VmId(5)).unwrap();
        io.platform.with(|p| {
            for (offset, size, value) in [
                (0x14, 1, 0x03), // device_status: ACK | DRIVER
                (0x08, 4, 1),    // driver_feature_select: bits 32..63
                (0x0C, 4, 1),    // driver_feature: VERSION_1
                (0x14, 1, 0x0B), // device_status: + FEATURES_OK
                (0x3000, 2, 0),  // notify queue 0 before DRIVER_OK: ignored
                (0x16, 2, 0),    // queue_select 0
                (0x18, 2, 3),    // queue_size 3: not a power of two
                (0x1C, 2, 1),    // queue_enable: the device needs a reset
            ] {
                assert!(p.mmio_write(common + offset, size, value, 0), "{offset:#x}");
            }
        });
        let line = sh.virtio(VmId(5)).unwrap().remove(0);
        assert_eq!(line.kind, "rng");
        assert_eq!(line.status, 0x4B, "ACK, DRIVER, FEATURES_OK, NEEDS_RESET");
        assert_eq!(line.features, 1 << 32);
        assert_eq!((line.notifies, line.ignored_notifies), (1, 1));
        assert_eq!(line.needs_reset, 1);
        assert_eq!(line.interrupts, 1, "the configuration-change interrupt");
        assert_eq!(
            line.fault.as_deref(),
            Some("queue size 3 is not a power of two in 1..=32768")
        );
        assert_eq!((line.queues[0].size, line.queues[0].enabled), (3, false));
        // The shell's table shows it.
        let text = run_line(&mut sh, "virtio io");
        let row = text
            .lines()
            .find(|l| l.starts_with("00:08.0"))
            .unwrap_or_default();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells[..5],
            [
                "00:08.0",
                "rng",
                "-",
                "ACK,DRIVER,FEATURES_OK,NEEDS_RESET",
                "0x100000000"
            ],
            "{text}"
        );
        // Requests, errors, bytes in and out, dropped; interrupts, notifications, needs reset.
        assert_eq!(
            cells[5..13],
            ["0", "0", "0", "0", "0", "1", "1/1", "1"],
            "{text}"
        );
        assert!(
            row.ends_with("  queue size 3 is not a power of two in 1..=32768"),
            "{text}"
        );
        assert!(
            text.contains("\n  00:08.0  0      3     no       0         0\n"),
            "{text}"
        );
        assert_eq!(
            run_line(&mut sh, "virtio bare"),
            "bare has no virtio devices\n"
        );
        assert_eq!(
            run_line(&mut sh, "virtio 4"),
            "virtio: no VM with id 4 (see vm_list)"
        );
        // A driver reset clears the fault but not the count.
        io.platform.with(|p| p.mmio_write(common + 0x14, 1, 0, 0));
        let line = sh.virtio(VmId(5)).unwrap().remove(0);
        assert_eq!((line.status, line.needs_reset, line.fault), (0, 1, None));
    }

    #[test]
    fn switches_with_their_ports_and_learned_addresses() {
        use virtio::switch::NetBackend;
        let (vmm, hub) = io_vms();
        let mut sh = VmmShell::new(&*vmm, NoMachine);
        // An uplink on lan0 broadcasts (the VM's port queues it: no driver takes it) and sends
        // a runt.
        let mut uplink =
            hub.switches[0].attach("uplink", UPLINK_MAC, alloc::boxed::Box::new(NoWake));
        let mut frame = vec![0xFF; 6];
        frame.extend_from_slice(&UPLINK_MAC);
        frame.extend_from_slice(&[0x88, 0xB5, 1]);
        uplink.send(&frame);
        uplink.send(&[0; 13]);
        // VMs 5 and 7 share the hub: the switch is listed once.
        assert_eq!(
            sh.switches(),
            [SwitchLine {
                name: "lan0".into(),
                flooded: 1,
                ports: vec![
                    SwitchPortLine {
                        name: "io/eth0".into(),
                        mac: IO_MAC,
                        tx_frames: 0,
                        tx_bytes: 0,
                        rx_frames: 1,
                        rx_bytes: 15,
                        rx_dropped: 0,
                        tx_malformed: 0,
                        queued: 1,
                    },
                    SwitchPortLine {
                        name: "uplink".into(),
                        mac: UPLINK_MAC,
                        tx_frames: 1,
                        tx_bytes: 15,
                        rx_frames: 0,
                        rx_bytes: 0,
                        rx_dropped: 0,
                        tx_malformed: 1,
                        queued: 0,
                    },
                ],
                learned: vec![(UPLINK_MAC, "uplink".into())],
            }]
        );
        let text = run_line(&mut sh, "switches");
        assert!(
            text.starts_with("switch lan0: 2 ports, 1 frames flooded\n"),
            "{text}"
        );
        assert!(text.contains("\n  02:00:00:00:00:99  uplink\n"), "{text}");
        // A machine whose VMs hold no backends shows no switches.
        let (bare, _pcpus) = gap();
        let mut sh = VmmShell::new(&*bare, NoMachine);
        assert!(sh.switches().is_empty());
        assert_eq!(run_line(&mut sh, "switches"), "no virtual switches\n");
        bare.stop(VmId(1)).unwrap();
        bare.stop(VmId(3)).unwrap();
    }

    /// Where the test's virtio console driver keeps queue `q` (descriptors, available ring,
    /// used ring) in guest RAM, and its buffers.
    const fn hvc_ring(q: u16) -> (u64, u64, u64) {
        let base = 0x10_000 + q as u64 * 0x4000;
        (base, base + 0x1000, base + 0x2000)
    }
    const HVC_BUFS: u64 = 0x18_000;

    /// VM 4 (`con`, pCPU 2) with a virtio console at 00:08.0 and VM 6 (`plain`, pCPU 3)
    /// without one. Nothing runs.
    fn hvc_vms() -> Arc<Vmm<MockPlatform>> {
        let hub = Arc::new(IoHub::empty(|_| {}));
        let mut cfg = *config(4, "con", &[2]);
        cfg.virtio = alloc::boxed::Box::leak(alloc::boxed::Box::new([scenario::VirtioConfig {
            kind: VirtioKind::Console,
            slot: 8,
        }]));
        let cfg = alloc::boxed::Box::leak(alloc::boxed::Box::new(cfg));
        let vmm = Arc::new(Vmm::new(MockPlatform::new(), 4));
        let p = vmm.platform();
        vmm.add(vm_with_io(p, cfg, Some(hub.clone()))).unwrap();
        vmm.add(vm_with_io(p, config(6, "plain", &[3]), Some(hub)))
            .unwrap();
        vmm
    }

    /// A guest's virtio console driver, as far as the tests need one: through BAR 0 of
    /// 00:08.0 and rings in guest RAM.
    struct HvcDriver {
        vm: Arc<Vm<MockPlatform>>,
        common: u64,
        /// Buffers offered so far, per queue.
        offered: [u16; 2],
    }

    impl HvcDriver {
        /// Brings the device up: VERSION_1, both queues of 4 entries, DRIVER_OK.
        fn start(vm: Arc<Vm<MockPlatform>>) -> Self {
            let common = u64::from(::vm::pc::layout::device_bars(8).0);
            let d = HvcDriver {
                vm,
                common,
                offered: [0; 2],
            };
            d.w(0x14, 1, 0x03); // device_status: ACK | DRIVER
            d.w(0x08, 4, 1); // driver_feature_select: bits 32..63
            d.w(0x0C, 4, 1); // driver_feature: VERSION_1
            d.w(0x14, 1, 0x0B); // + FEATURES_OK
            for q in 0..2 {
                let (desc, avail, used) = hvc_ring(q);
                d.w(0x16, 2, u64::from(q)); // queue_select
                d.w(0x18, 2, 4); // queue_size
                for (field, addr) in [(0x20, desc), (0x28, avail), (0x30, used)] {
                    d.w(field, 4, addr & 0xFFFF_FFFF);
                    d.w(field + 4, 4, addr >> 32);
                }
                d.w(0x1C, 2, 1); // queue_enable
            }
            d.w(0x14, 1, 0x0F); // + DRIVER_OK
            d
        }

        fn w(&self, offset: u64, size: u8, value: u64) {
            let ok = self
                .vm
                .platform
                .with(|p| p.mmio_write(self.common + offset, size, value, 0));
            assert!(ok, "BAR 0 + {offset:#x}");
        }

        fn put(&self, gpa: u64, data: &[u8]) {
            self.vm.ram.clone().write(gpa, data).unwrap();
        }

        fn get(&self, gpa: u64, len: usize) -> Vec<u8> {
            let mut buf = vec![0; len];
            self.vm.ram.read(gpa, &mut buf).unwrap();
            buf
        }

        /// The buffer of descriptor `i` of queue `q`.
        fn buffer(q: u16, i: u16) -> u64 {
            HVC_BUFS + u64::from(q) * 0x1000 + u64::from(i) * 0x100
        }

        /// Offers one buffer on queue `q` (transmit: holding `data`; receive: `data.len()`
        /// writable bytes) and notifies the device; the buffer's address.
        fn offer(&mut self, q: u16, data: &[u8]) -> u64 {
            let i = self.offered[usize::from(q)];
            let (desc, avail, _) = hvc_ring(q);
            let at = Self::buffer(q, i);
            let flags: u16 = if q == 0 { 2 } else { 0 }; // VIRTQ_DESC_F_WRITE to receive
            if q == 1 {
                self.put(at, data);
            }
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&at.to_le_bytes());
            d[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            self.put(desc + 16 * u64::from(i), &d);
            self.put(avail + 4 + 2 * u64::from(i), &i.to_le_bytes());
            self.offered[usize::from(q)] = i + 1;
            self.put(avail + 2, &(i + 1).to_le_bytes());
            self.w(0x3000 + 4 * u64::from(q), 2, u64::from(q));
            at
        }

        /// The used ring's index of queue `q` and the length of its entry `i`.
        fn used(&self, q: u16, i: u16) -> (u16, u32) {
            let (_, _, used) = hvc_ring(q);
            let idx = self.get(used + 2, 2);
            let len = self.get(used + 4 + 8 * u64::from(i) + 4, 4);
            (
                u16::from_le_bytes([idx[0], idx[1]]),
                u32::from_le_bytes([len[0], len[1], len[2], len[3]]),
            )
        }
    }

    #[test]
    fn pump_consoles_shows_what_the_guest_wrote_to_hvc0_with_its_port() {
        let vmm = hvc_vms();
        let con = vmm.get(VmId(4)).unwrap();
        let mut driver = HvcDriver::start(Arc::clone(&con));
        con.console.push_out(b"com1 line\n");
        driver.offer(1, b"hello hvc0\n");
        assert_eq!(
            driver.used(1, 0).0,
            1,
            "the device took the transmit buffer"
        );
        assert!(con.hvc().is_some_and(|p| p.lock().has_output()));
        let mut shown = Vec::new();
        let mut out = Vec::new();
        vmm.pump_consoles(&mut out, |vm, port, bytes| {
            shown.push((vm.id, port, bytes.to_vec()));
        });
        assert_eq!(
            shown,
            [
                (VmId(4), Port::Uart, b"com1 line\n".to_vec()),
                (VmId(4), Port::Hvc, b"hello hvc0\n".to_vec()),
            ]
        );
        assert_eq!(con.console.unprinted(), 0);
        assert!(con.hvc().is_some_and(|p| !p.lock().has_output()), "taken");
        // Taken once: the next pump shows nothing.
        shown.clear();
        vmm.pump_consoles(&mut out, |vm, port, bytes| {
            shown.push((vm.id, port, bytes.to_vec()));
        });
        assert!(shown.is_empty(), "{shown:?}");
        // Through the shell: in shell mode the hvc0 ring keeps it, apart from the vUART's.
        driver.offer(1, b"# ");
        let mut c = Console::new();
        vmm.pump_consoles(&mut out, |vm, port, bytes| {
            assert!(c.vm_output(vm.id, port, bytes).is_empty());
        });
        let ring = c.logs().get(VmId(4), Port::Hvc).map(|r| r.len());
        assert_eq!(ring, Some(2));
        assert!(c.logs().get(VmId(4), Port::Uart).is_none());
    }

    #[test]
    fn typed_bytes_for_hvc0_wait_in_the_pipe_and_wake_vcpu0() {
        let vmm = hvc_vms();
        let mut sh = VmmShell::new(&*vmm, NoMachine);
        let con = vmm.get(VmId(4)).unwrap();
        let io = con.io.as_ref().unwrap();
        let mut driver = HvcDriver::start(Arc::clone(&con));
        let rx = driver.offer(0, &[0; 16]);
        assert_eq!(driver.used(0, 0).0, 0, "no input yet");
        assert!(!io.take_news());
        // The shell knows which VMs have a virtio console.
        let hvc: Vec<(VmId, bool)> = sh.vms().iter().map(|v| (v.id, v.hvc)).collect();
        assert_eq!(hvc, [(VmId(4), true), (VmId(6), false)]);
        let mut c = Console::new();
        c.start(&sh);
        let said = type_in(&mut c, &mut sh, "vm_console plain hvc\r");
        assert!(
            said.contains("vm_console: plain has no virtio console (hvc0)"),
            "{said}"
        );
        let said = type_in(&mut c, &mut sh, "vm_console con hvc\r");
        assert!(said.contains("[attached to con hvc0 (id 4);"), "{said}");
        let kicks = vmm.platform().kicks(2);
        type_in(&mut c, &mut sh, "hi");
        // Not the vUART's queue: the pipe's, with news for the vCPU and a kick per byte.
        assert!(!con.console.has_typed());
        assert_eq!(vmm.platform().kicks(2), kicks + 2);
        assert_eq!(vmm.platform().kicks(3), 0, "not the other VM's pCPU");
        assert!(io.take_news());
        // What vCPU 0 does with the news: the device hands the bytes to the guest.
        con.platform.with(|p| p.serve_backends());
        assert_eq!(driver.used(0, 0), (1, 2));
        assert_eq!(driver.get(rx, 2), b"hi");
        // Running, vCPU 0 serves typed bytes on its own.
        let _pcpus = Pcpus::start(&vmm, &[2]);
        vmm.start(VmId(4)).unwrap();
        let rx = driver.offer(0, &[0; 16]);
        type_in(&mut c, &mut sh, "!\r");
        eventually("the guest received the typed bytes", || {
            driver.used(0, 1) == (2, 2)
        });
        assert_eq!(driver.get(rx, 2), b"!\r");
        vmm.stop(VmId(4)).unwrap();
        // Neither a VM without a virtio console nor a missing VM takes any.
        assert_eq!(
            vmm.input_hvc(VmId(6), b"x"),
            Err(ControlError::NoVirtioConsole(VmId(6)))
        );
        assert_eq!(
            vmm.input_hvc(VmId(9), b"x"),
            Err(ControlError::NoSuchVm(VmId(9)))
        );
        assert_eq!(sh.route(Action::ToGuest(VmId(6), Port::Hvc, b'x')), None);
        assert!(!vmm.get(VmId(6)).unwrap().console.has_typed());
        // A full pipe drops bytes and says so.
        assert_eq!(
            vmm.input_hvc(VmId(4), &[b'z'; virtio::console::INPUT_LIMIT + 1]),
            Ok(false)
        );
    }

    #[test]
    fn the_shell_decodes_status_bits_as_virtio_defines_them() {
        use virtio::pci::*;
        let bits: Vec<u8> = shell::VIRTIO_STATUS_BITS.iter().map(|b| b.0).collect();
        assert_eq!(
            bits,
            [
                STATUS_ACKNOWLEDGE,
                STATUS_DRIVER,
                STATUS_FEATURES_OK,
                STATUS_DRIVER_OK,
                STATUS_NEEDS_RESET,
                STATUS_FAILED
            ]
        );
    }
}
