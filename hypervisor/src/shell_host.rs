//! The management shell on pCPU 0: the physical console's input goes to the
//! shell or to the attached VM console (its vUART, or its virtio console
//! `hvc0`); VM output is shown (prefixed with the VM name, `[linux] ...`, or
//! with the name and port, `[linux/hvc0] ...`, while no VM console is
//! attached; raw while its console is attached) and kept in per-VM, per-port
//! rings. The VM table answers the shell's questions about VMs, by id
//! ([`VmmShell`]); [`Machine`] those about the machine.

use alloc::string::String;
use alloc::vec::Vec;

use ::vmm::shell::VmmShell;
use arch_x86::{console, cpu, lapic};
use log::LevelFilter;
use platform::{HostPhysAddr, PhysRange};
use scenario::VmType;
use shell::{Action, BackendError, Console, IoapicLine, IrqLine, MemUsage, Mode, RegDump};
use spin::{Mutex, Once};

use crate::mailbox::{self, Reply, Request};

/// Vector of pCPU 0's periodic console poll.
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

/// The machine as the shell sees it besides its VMs (those are answered from the VM table by
/// id, in [`::vmm::shell::VmmShell`]).
struct Machine {
    version: String,
    pcpus: u16,
}

/// The shell's backend: the VMs by id, and this machine.
type Backend = VmmShell<'static, crate::vmm::X86, Machine>;

impl ::vmm::shell::Machine for Machine {
    fn version(&self) -> &str {
        &self.version
    }

    fn vcpu_regs(&self, pcpu: u16) -> Result<RegDump, BackendError> {
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

    fn pcpu_count(&self) -> u16 {
        self.pcpus
    }

    fn pcpu_is_rt(&self, pcpu: u16) -> bool {
        crate::vmm::SCENARIO
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

    fn host_ioapics(&self) -> Vec<IoapicLine> {
        crate::boot::ioapics()
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
            .collect()
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

    fn pci(&self) -> Vec<shell::PciLine> {
        crate::pci_host::shell_lines()
    }

    fn iommu(&self) -> Vec<shell::IommuLine> {
        crate::iommu_host::shell_lines()
    }

    fn interrupts(&self) -> Vec<IrqLine> {
        arch_x86::trap::vector_counts()
            .into_iter()
            .filter(|&(_, n)| n > 0)
            .map(|(vector, n)| IrqLine {
                irq: None,
                vector,
                counts: alloc::vec![n],
                owner: String::from(arch_x86::trap::vector_owner(vector).unwrap_or("unowned")),
            })
            .collect()
    }
}

static CONSOLE: Mutex<Console> = Mutex::new(Console::new());

fn perform(backend: &Backend, actions: Vec<Action>) {
    for a in actions {
        match backend.route(a) {
            Some(Action::Print(bytes)) => console::with_console(|u| {
                for b in bytes {
                    u.write_byte(b);
                }
            }),
            Some(Action::Reboot) => reboot(),
            // Typed bytes went to the VM the action names (by id).
            Some(Action::ToGuest(..)) | None => {}
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
    match arch_x86::trap::allocate(
        "console poll (pCPU 0 LAPIC timer)",
        platform::Priority::System,
        |_| {},
    ) {
        Ok(v) => lapic::start_periodic_timer(v, POLL_COUNT),
        Err(e) => log::error!("{e}: the shell polls without a timer"),
    }
    let vmm = crate::vmm::vmm();
    let machine = Machine {
        version: alloc::format!("Quercus {}", env!("CARGO_PKG_VERSION")),
        pcpus,
    };
    let mut host = VmmShell::new(vmm, machine);
    perform(&host, CONSOLE.lock().start(&host));
    let mut out = Vec::new();
    loop {
        while let Some(byte) = console::try_read_byte() {
            let actions = CONSOLE.lock().feed_input(&mut host, byte);
            perform(&host, actions);
        }
        vmm.pump_consoles(&mut out, |vm, port, bytes| {
            let mut con = CONSOLE.lock();
            let overview = con.mode() == Mode::Shell;
            let actions = con.vm_output(vm.id, port, bytes);
            drop(con);
            if overview {
                vm.console.lines(port, bytes, |line| {
                    arch_x86::println!("[{}{}] {}", vm.cfg.name, port.overview_suffix(), line)
                });
            }
            perform(&host, actions);
        });
        mailbox::service(0, None);
        crate::iommu_host::poll_faults();
        crate::pci_host::report_storms();
        cpu::wait_for_interrupt();
    }
}
