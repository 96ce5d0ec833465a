//! The management shell on pCPU 0: the physical console's input goes to the
//! shell or to the attached VM's vUART; VM output is shown (prefixed with the
//! VM name while no VM is attached, raw while its console is attached) and
//! kept in per-VM rings. [`Host`] answers the shell's questions.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use arch_x86::{console, cpu, lapic};
use log::LevelFilter;
use paging::GuestPhysAddr;
use platform::{HostPhysAddr, PhysRange};
use scenario::VmType;
use shell::{
    Action, BackendError, Console, IoapicLine, IrqLine, Lifecycle, MemUsage, Mode, RegDump,
    ShellBackend, StatsLine, VcpuInfo, VcpuState, VmId, VmInfo, VmState,
};
use spin::{Mutex, Once};
use vcpu::GuestMemory;

use crate::mailbox::{self, Reply, Request};
use crate::vmm::{self, LifecycleError, VcpuRun};

/// Vector of pCPU 0's periodic console poll.
const POLL_VECTOR: u8 = 0xEF;
/// LAPIC timer count (bus ticks / 16) between polls: a few milliseconds.
const POLL_COUNT: u32 = 200_000;
/// How long the shell waits for another pCPU to answer.
const PCPU_TIMEOUT_US: u64 = 500_000;

/// Host RAM the shell may dump (usable memory from the boot memory map).
static HOST_RAM: Once<Vec<PhysRange>> = Once::new();

/// Records which host ranges `dump_host_mem` may read.
pub fn set_host_ram(ranges: Vec<PhysRange>) {
    HOST_RAM.call_once(|| ranges);
}

struct Host {
    version: String,
    pcpus: u16,
}

fn vm_ref(id: VmId) -> Result<&'static vmm::Vm, BackendError> {
    vmm::vms()
        .get(usize::from(id.0))
        .ok_or(BackendError::NoSuchVm(id))
}

fn state(vm: &vmm::Vm) -> VmState {
    match vm.state() {
        vmm::VmState::Stopped => VmState::Stopped,
        vmm::VmState::Running => VmState::Running,
        vmm::VmState::Paused => VmState::Paused,
        vmm::VmState::Crashed => VmState::Crashed,
    }
}

impl ShellBackend for Host {
    fn version(&self) -> &str {
        &self.version
    }

    fn vms(&self) -> Vec<VmInfo> {
        vmm::vms()
            .iter()
            .map(|vm| VmInfo {
                id: VmId(vm.id),
                name: vm.cfg.name.into(),
                state: state(vm),
                load_order: vm.cfg.load_order,
                vm_type: vm.cfg.vm_type,
                pcpus: vm.cfg.pcpus.to_vec(),
                vcpus: vm.cfg.vcpus,
                memory: vm.cfg.memory.size,
                console: vm.cfg.console.is_some(),
            })
            .collect()
    }

    fn vcpus(&self, id: VmId) -> Result<Vec<VcpuInfo>, BackendError> {
        let vm = vm_ref(id)?;
        Ok(vm
            .cfg
            .pcpus
            .iter()
            .zip(&vm.vcpus)
            .enumerate()
            .map(|(i, (&p, slot))| VcpuInfo {
                index: i as u16,
                pcpu: p,
                state: match (vm.state(), slot.run()) {
                    (vmm::VmState::Stopped | vmm::VmState::Crashed, _) | (_, VcpuRun::Off) => {
                        VcpuState::Stopped
                    }
                    (vmm::VmState::Paused, _) => VcpuState::Paused,
                    (_, VcpuRun::WaitingForSipi) => VcpuState::WaitingForStartup,
                    (_, VcpuRun::Halted) => VcpuState::Halted,
                    (_, VcpuRun::Running) => VcpuState::Running,
                },
                exits: slot.stats.lock().total(),
            })
            .collect())
    }

    fn vcpu_regs(&self, id: VmId, vcpu: u16) -> Result<RegDump, BackendError> {
        let vm = vm_ref(id)?;
        let &pcpu = vm
            .cfg
            .pcpus
            .get(usize::from(vcpu))
            .ok_or(BackendError::NoSuchVcpu { vm: id, vcpu })?;
        if vm.state() != vmm::VmState::Paused {
            return Err(BackendError::VcpuRunning { vm: id, vcpu });
        }
        match mailbox::call(usize::from(pcpu), Request::Regs, PCPU_TIMEOUT_US, 0) {
            Some(Reply::Regs(Some(r))) => Ok(RegDump {
                gprs: r.gprs,
                rsp: r.rsp,
                rip: r.rip,
                rflags: r.rflags,
                system: r.system,
            }),
            Some(_) => Err(BackendError::Unsupported("the vCPU is not on its pCPU")),
            None => Err(BackendError::PcpuTimeout(pcpu)),
        }
    }

    fn read_guest(&self, id: VmId, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), BackendError> {
        let vm = vm_ref(id)?;
        vm.ram
            .lock()
            .read(gpa.0, buf)
            .map_err(|_| BackendError::GuestRange {
                vm: id,
                gpa,
                len: buf.len(),
            })
    }

    fn read_host(&self, hpa: HostPhysAddr, buf: &mut [u8]) -> Result<(), BackendError> {
        let err = BackendError::HostRange {
            hpa,
            len: buf.len(),
        };
        let end = hpa.0.checked_add(buf.len() as u64).ok_or(err.clone())?;
        let inside = HOST_RAM
            .get()
            .is_some_and(|r| r.iter().any(|r| r.start.0 <= hpa.0 && end <= r.end.0));
        if !inside || !arch_x86::phys::read(hpa.0, buf) {
            return Err(err);
        }
        Ok(())
    }

    fn lifecycle(&mut self, id: VmId, op: Lifecycle) -> Result<(), BackendError> {
        let vm = vm_ref(id)?;
        let index = usize::from(id.0);
        let result = match op {
            Lifecycle::Start => vmm::lifecycle::start(index),
            Lifecycle::Stop => vmm::lifecycle::stop(index),
            Lifecycle::Pause => vmm::lifecycle::pause(index),
            Lifecycle::Resume => vmm::lifecycle::resume(index),
            Lifecycle::Reset => vmm::lifecycle::reset(index),
        };
        result.map_err(|e| match e {
            LifecycleError::NoSuchVm => BackendError::NoSuchVm(id),
            LifecycleError::WrongState(_) => BackendError::BadState {
                vm: id,
                op,
                state: state(vm),
            },
            LifecycleError::Timeout => {
                BackendError::PcpuTimeout(vm.cfg.pcpus.first().copied().unwrap_or(0))
            }
            LifecycleError::LoadFailed => {
                BackendError::Unsupported("reloading the kernel failed (see the log)")
            }
        })
    }

    fn stats(&self, vm: Option<VmId>) -> Result<Vec<StatsLine>, BackendError> {
        let vms: Vec<&vmm::Vm> = match vm {
            Some(id) => alloc::vec![vm_ref(id)?],
            None => vmm::vms().iter().collect(),
        };
        Ok(vms
            .into_iter()
            .flat_map(|vm| {
                vm.vcpus.iter().enumerate().map(|(i, v)| StatsLine {
                    vm: VmId(vm.id),
                    vcpu: i as u16,
                    exits: *v.stats.lock(),
                    injected: v.injected.load(Ordering::Relaxed),
                    guest_cycles: v.guest_cycles.load(Ordering::Relaxed),
                    hv_cycles: v.hv_cycles.load(Ordering::Relaxed),
                })
            })
            .collect())
    }

    fn pcpu_count(&self) -> u16 {
        self.pcpus
    }

    fn pcpu_is_rt(&self, pcpu: u16) -> bool {
        vmm::SCENARIO
            .vm_for_pcpu(pcpu)
            .is_some_and(|vm| vm.vm_type == VmType::Rt)
    }

    fn cpuid(&mut self, pcpu: u16, leaf: u32, sub: u32) -> Result<[u32; 4], BackendError> {
        match mailbox::call(
            usize::from(pcpu),
            Request::Cpuid { leaf, subleaf: sub },
            PCPU_TIMEOUT_US,
            0,
        ) {
            Some(Reply::Cpuid(r)) => Ok(r),
            _ => Err(BackendError::PcpuTimeout(pcpu)),
        }
    }

    fn rdmsr(&mut self, pcpu: u16, msr: u32) -> Result<u64, BackendError> {
        match mailbox::call(usize::from(pcpu), Request::Rdmsr(msr), PCPU_TIMEOUT_US, 0) {
            Some(Reply::Msr(Some(v))) => Ok(v),
            Some(Reply::Msr(None)) => Err(BackendError::MsrFault { pcpu, msr }),
            _ => Err(BackendError::PcpuTimeout(pcpu)),
        }
    }

    fn wrmsr(&mut self, pcpu: u16, msr: u32, value: u64) -> Result<(), BackendError> {
        match mailbox::call(
            usize::from(pcpu),
            Request::Wrmsr(msr, value),
            PCPU_TIMEOUT_US,
            0,
        ) {
            Some(Reply::Wrote(true)) => Ok(()),
            Some(Reply::Wrote(false)) => Err(BackendError::MsrFault { pcpu, msr }),
            _ => Err(BackendError::PcpuTimeout(pcpu)),
        }
    }

    fn log_level(&self) -> LevelFilter {
        log::max_level()
    }

    fn set_log_level(&mut self, level: LevelFilter) {
        console::set_level(level);
    }

    fn ioapic(&self, vm: Option<VmId>) -> Result<Vec<IoapicLine>, BackendError> {
        match vm {
            Some(id) => {
                let vm = vm_ref(id)?;
                Ok(vmm::vioapic_table(vm)
                    .into_iter()
                    .enumerate()
                    .map(|(pin, rte)| IoapicLine {
                        ioapic: 0,
                        pin: pin as u8,
                        rte,
                    })
                    .collect())
            }
            None => Ok(crate::boot::ioapics()
                .iter()
                .enumerate()
                .flat_map(|(i, io)| {
                    arch_x86::ioapic::redirection_table(io.addr.0)
                        .into_iter()
                        .enumerate()
                        .map(move |(pin, rte)| IoapicLine {
                            ioapic: i as u8,
                            pin: pin as u8,
                            rte,
                        })
                })
                .collect()),
        }
    }

    fn mem_usage(&self) -> MemUsage {
        let frames = crate::boot::FRAMES.lock().stats();
        let (heap_used, heap_total) = arch_x86::heap::usage();
        MemUsage {
            frames_total: frames.total_frames,
            frames_free: frames.free_frames,
            heap_used: heap_used as u64,
            heap_total: heap_total as u64,
        }
    }

    fn interrupts(&self) -> Vec<IrqLine> {
        arch_x86::trap::vector_counts()
            .into_iter()
            .filter(|&(_, n)| n > 0)
            .map(|(vector, n)| IrqLine {
                irq: None,
                vector,
                counts: alloc::vec![n],
                owner: String::from(match vector {
                    POLL_VECTOR => "console poll (pCPU 0 LAPIC timer)",
                    0xF0 => "pCPU wake-up IPI",
                    0xFF => "LAPIC spurious",
                    _ => "other",
                }),
            })
            .collect()
    }
}

static CONSOLE: Mutex<Console> = Mutex::new(Console::new());

fn perform(actions: Vec<Action>) {
    for a in actions {
        match a {
            Action::Print(bytes) => console::with_console(|u| {
                for b in bytes {
                    u.write_byte(b);
                }
            }),
            Action::ToGuest(id, byte) => {
                if let Some(vm) = vmm::vms().get(usize::from(id.0)) {
                    vmm::input(vm, byte);
                }
            }
            Action::Reboot => reboot(),
        }
    }
}

fn reboot() -> ! {
    arch_x86::println!("quercus: rebooting");
    arch_x86::io::outb(0xCF9, 0x02);
    arch_x86::io::outb(0xCF9, 0x06);
    arch_x86::io::outb(0x64, 0xFE);
    arch_x86::time::delay_us(100_000);
    crate::fatal!("reboot did not happen (no 0xCF9 reset or 8042)")
}

/// pCPU 0's loop after bring-up: the shell, VM output, and nothing else.
pub fn run(pcpus: u16) -> ! {
    arch_x86::trap::set_handler(POLL_VECTOR, |_| {});
    lapic::start_periodic_timer(POLL_VECTOR, POLL_COUNT);
    let mut host = Host {
        version: alloc::format!("Quercus {}", env!("CARGO_PKG_VERSION")),
        pcpus,
    };
    perform(CONSOLE.lock().start(&host));
    let mut out = Vec::new();
    loop {
        while let Some(byte) = console::try_read_byte() {
            let actions = CONSOLE.lock().feed_input(&mut host, byte);
            perform(actions);
        }
        for vm in vmm::vms() {
            vmm::feed_typed(vm);
            out.clear();
            vmm::take_output(vm, &mut out);
            if out.is_empty() {
                continue;
            }
            let mut con = CONSOLE.lock();
            let overview = con.mode() == Mode::Shell;
            let actions = con.vm_output(VmId(vm.id), &out);
            drop(con);
            if overview {
                vmm::print_prefixed(vm, &out);
            }
            perform(actions);
            vmm::printed(vm, out.len());
        }
        mailbox::service(0, None);
        cpu::wait_for_interrupt();
    }
}
