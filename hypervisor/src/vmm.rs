//! VMs from the scenario: RAM, second-level tables, kernel loading, vCPUs
//! handed to their pCPUs, and the exit loop each pCPU runs for its vCPU.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use arch_x86::guest_ram::{FrameTables, GuestRam};
use arch_x86::guest_state::InitialState;
use arch_x86::svm::{self, SvmVcpu};
use arch_x86::virt_caps::VirtCaps;
use arch_x86::vmx::{self, VmxVcpu};
use arch_x86::{cpu, lapic};
use log::{error, info, warn};
use paging::{Format, GuestPhysAddr, MemType, PageSizes, Perms, SecondLevelTables};
use platform::{BootInfo, HostPhysAddr};
use scenario::{KernelKind, LoadOrder, VmConfig};
use spin::{Mutex, Once};
use vcpu::{Gprs, SegmentState, VcpuBackend};

use crate::boot::{FRAMES, MAX_CPUS};

mod config {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/scenario.rs"));
}
pub use config::SCENARIO;

/// Vector used to wake a parked pCPU when work is posted.
const WAKE_VECTOR: u8 = 0xF0;

/// Which backend this machine runs guests with (chosen once at boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Svm,
    Vmx,
}

static BACKEND: Once<Backend> = Once::new();

/// A running VM.
pub struct Vm {
    pub id: u16,
    pub cfg: &'static VmConfig,
    pub ram: Mutex<GuestRam>,
    /// nCR3 (SVM) or EPTP (VMX) of the VM's second-level tables.
    slat_root: u64,
    pio: vm::PioBus<PioDevice>,
    uart: Mutex<vm::Uart16550>,
    line: Mutex<String>,
    pub stats: Mutex<vm::ExitStats>,
    pub stopped: AtomicBool,
    entry: loader::BootSetup,
}

/// Work for one pCPU: run vCPU `vcpu` of VM `vm`.
struct Task {
    vm: usize,
    vcpu: u16,
}

static VMS: Once<Vec<Vm>> = Once::new();
static TASKS: [AtomicPtr<Task>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];

/// Creates every pre-launched VM of the scenario and starts its vCPUs.
pub fn start(boot: &BootInfo, caps: VirtCaps, online: &[bool]) {
    arch_x86::trap::set_handler(WAKE_VECTOR, |_| {});
    info!(
        "scenario {:?} on board {:?}: {} VM(s)",
        SCENARIO.name,
        SCENARIO.board,
        SCENARIO.vms.len()
    );
    let backend = match caps {
        VirtCaps::Svm(c) if c.npt && !c.disabled_by_firmware => Backend::Svm,
        VirtCaps::Vmx(c) if c.ept && c.unrestricted_guest && c.vpid && !c.disabled_by_firmware => {
            Backend::Vmx
        }
        _ => {
            error!("no usable backend: {caps}; Quercus needs SVM with NPT, or VMX with EPT, VPID and unrestricted guest; VMs are not started");
            return;
        }
    };
    BACKEND.call_once(|| backend);
    let mut vms = Vec::new();
    for cfg in SCENARIO.vms {
        if cfg.load_order != LoadOrder::PreLaunched {
            warn!(
                "vm {}: load order {:?} is not supported yet; not started",
                cfg.name, cfg.load_order
            );
            continue;
        }
        if let Some(&p) = cfg
            .pcpus
            .iter()
            .find(|&&p| !online.get(usize::from(p)).copied().unwrap_or(false))
        {
            error!("vm {}: pCPU {p} is not online; VM not started", cfg.name);
            continue;
        }
        match create(cfg, boot, backend) {
            Ok(vm) => vms.push(vm),
            Err(e) => error!("vm {}: not started: {e}", cfg.name),
        }
    }
    let vms = VMS.call_once(|| vms);
    for (i, vm) in vms.iter().enumerate() {
        for (v, &pcpu) in vm.cfg.pcpus.iter().enumerate() {
            let task = alloc::boxed::Box::into_raw(alloc::boxed::Box::new(Task {
                vm: i,
                vcpu: v as u16,
            }));
            TASKS[usize::from(pcpu)].store(task, Ordering::Release);
            if let Some(apic) = crate::boot::apic_of(usize::from(pcpu)) {
                lapic::send_ipi(apic, WAKE_VECTOR);
            }
        }
    }
}

fn create(cfg: &'static VmConfig, boot: &BootInfo, backend: Backend) -> Result<Vm, String> {
    use alloc::format;
    let size = cfg.memory.size;
    let frames = (size / 4096) as usize;
    let hpa = FRAMES.lock().alloc(frames).ok_or_else(|| {
        format!(
            "no {} MiB of contiguous free memory for its RAM",
            size >> 20
        )
    })?;
    #[allow(unsafe_code)]
    // SAFETY: the frames were just taken from the allocator for this VM alone.
    let mut ram = unsafe { GuestRam::new(hpa.0, size) };
    ram.zero();

    let module = boot
        .modules
        .iter()
        .find(|m| m.cmdline.split_whitespace().any(|w| w == cfg.kernel.module))
        .ok_or_else(|| format!("boot module {:?} not found", cfg.kernel.module))?;
    let len = module.range.len() as usize;
    #[allow(unsafe_code)]
    // SAFETY: boot modules are excluded from the frame allocator and never written.
    let image = unsafe { arch_x86::phys::borrow(module.range.start.0, len) }
        .ok_or_else(|| format!("module {:?} lies outside mapped memory", cfg.kernel.module))?;
    let kind = match cfg.kernel.kind {
        KernelKind::Multiboot1 => loader::KernelKind::Multiboot1,
        KernelKind::Elf64 => loader::KernelKind::Elf64,
        KernelKind::Raw {
            load_gpa,
            entry_gpa,
        } => loader::KernelKind::Raw {
            load_gpa,
            entry_gpa,
        },
        KernelKind::BzImage => return Err("bzImage kernels are not supported yet".into()),
    };
    let entry =
        loader::load(kind, image, cfg.kernel.cmdline, &mut ram).map_err(|e| format!("{e}"))?;

    #[allow(unsafe_code)]
    // SAFETY: every frame handed to the tables comes from the allocator and
    // belongs to these tables for the life of the VM.
    let mem = unsafe { FrameTables::new(|| FRAMES.lock().alloc(1).map(|a| a.0)) };
    let format = match backend {
        Backend::Svm => Format::Npt,
        Backend::Vmx => Format::Ept,
    };
    let mut slat = SecondLevelTables::new(format, PageSizes { huge_1g: false }, mem)
        .map_err(|e| format!("second-level tables: {e}"))?;
    slat.map(
        GuestPhysAddr(0),
        HostPhysAddr(hpa.0),
        size,
        Perms::RWX,
        MemType::WriteBack,
    )
    .map_err(|e| format!("second-level tables: {e}"))?;
    let slat_root = match backend {
        Backend::Svm => slat.ncr3(),
        Backend::Vmx => slat.eptp(false),
    }
    .ok_or("second-level tables have no root")?;
    let mut pio = vm::PioBus::new();
    if let Some(console) = cfg.console {
        pio.register(console.port, 8, PioDevice::Uart)
            .map_err(|e| format!("console vUART: {e}"))?;
    }
    info!(
        "vm {} (id {}): {} MiB at host {:#x}, kernel {:?} entry {:#x}, pCPUs {:?}",
        cfg.name,
        cfg.id,
        size >> 20,
        hpa.0,
        cfg.kernel.module,
        entry.entry,
        cfg.pcpus
    );
    Ok(Vm {
        id: cfg.id,
        cfg,
        ram: Mutex::new(ram),
        slat_root,
        pio,
        uart: Mutex::new(vm::Uart16550::new()),
        line: Mutex::new(String::new()),
        stats: Mutex::new(vm::ExitStats::default()),
        stopped: AtomicBool::new(false),
        entry,
    })
}

/// Called by an idle pCPU: runs the vCPU posted to it, if any.
pub fn run_posted(cpu_index: usize) {
    let Some(slot) = TASKS.get(cpu_index) else {
        return;
    };
    let task = slot.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if task.is_null() {
        return;
    }
    #[allow(unsafe_code)]
    // SAFETY: `start` stores pointers from `Box::into_raw` and each is taken once (swap).
    let task = unsafe { alloc::boxed::Box::from_raw(task) };
    let Some(vm) = VMS.get().and_then(|v| v.get(task.vm)) else {
        return;
    };
    cpu::enable_xsave();
    let init = initial_state(&vm.entry);
    info!(
        "vm {}: vCPU {} starts at {:#x}",
        vm.cfg.name, task.vcpu, vm.entry.entry
    );
    match BACKEND.get() {
        Some(Backend::Svm) => {
            svm::enable_on_this_cpu();
            let mut vcpu = SvmVcpu::new(u32::from(vm.id) + 1, vm.slat_root, &init);
            run_loop(vm, task.vcpu, &mut vcpu);
        }
        Some(Backend::Vmx) => {
            let vcpu = vmx::enable_on_this_cpu()
                .and_then(|()| VmxVcpu::new(vm.id + 1, vm.slat_root, &init));
            match vcpu {
                Ok(mut vcpu) => run_loop(vm, task.vcpu, &mut vcpu),
                Err(e) => stop(vm, format_args!("VMX setup failed: {e}")),
            }
        }
        None => {}
    }
}

/// Multiboot1 entry: 32-bit protected mode, paging off, flat segments.
fn initial_state(entry: &loader::BootSetup) -> InitialState {
    let flat_code = SegmentState {
        selector: 0x10,
        base: 0,
        limit: 0xFFFF_FFFF,
        attrib: 0xC9B,
    };
    let flat_data = SegmentState {
        selector: 0x18,
        base: 0,
        limit: 0xFFFF_FFFF,
        attrib: 0xC93,
    };
    InitialState {
        rip: entry.entry,
        rsp: 0,
        rflags: 0x2,
        gprs: Gprs {
            rax: 0x2BAD_B002,
            rbx: entry.info_gpa,
            ..Gprs::default()
        },
        cr0: 0x11,
        cr3: 0,
        cr4: 0,
        efer: 0,
        cs: flat_code,
        data: flat_data,
        tr: SegmentState {
            selector: 0,
            base: 0,
            limit: 0xFFFF,
            attrib: 0x08B,
        },
        gdtr: SegmentState {
            selector: 0,
            base: 0,
            limit: 0xFFFF,
            attrib: 0,
        },
        idtr: SegmentState {
            selector: 0,
            base: 0,
            limit: 0xFFFF,
            attrib: 0,
        },
    }
}

fn stop(vm: &Vm, why: core::fmt::Arguments<'_>) {
    flush_console(vm);
    vm.stopped.store(true, Ordering::Release);
    error!("vm {}: stopped: {why}; other VMs keep running", vm.cfg.name);
    info!("vm {}: exits {}", vm.cfg.name, vm.stats.lock());
}

/// The VM-wide services the exit handlers use, for one VM on this pCPU.
struct Host<'a> {
    vm: &'a Vm,
}

/// Devices on a VM's port-I/O bus.
#[derive(Clone, Copy, Debug)]
enum PioDevice {
    Uart,
}

impl vm::VmHost for Host<'_> {
    type Ram = GuestRam;

    fn vm_id(&self) -> u16 {
        self.vm.id
    }

    fn with_ram<R>(&self, f: impl FnOnce(&mut GuestRam) -> R) -> R {
        f(&mut self.vm.ram.lock())
    }

    fn console(&self, bytes: &[u8]) {
        console_out(self.vm, bytes);
    }

    fn pio_read(&self, port: u16, size: u8) -> u32 {
        match self.vm.pio.dispatch(port) {
            Some((slot, offset)) if size == 1 => match self.vm.pio.get(slot) {
                Some(PioDevice::Uart) => u32::from(self.vm.uart.lock().read(offset as u8)),
                None => vm::unmapped_read(size),
            },
            _ => vm::unmapped_read(size),
        }
    }

    fn pio_write(&self, port: u16, size: u8, value: u32) {
        let Some((slot, offset)) = self.vm.pio.dispatch(port) else {
            return;
        };
        if size != 1 {
            return;
        }
        match self.vm.pio.get(slot) {
            Some(PioDevice::Uart) => {
                let mut out = Vec::new();
                {
                    let mut uart = self.vm.uart.lock();
                    uart.write(offset as u8, value as u8);
                    uart.take_output(&mut |b| out.push(b));
                }
                if !out.is_empty() {
                    console_out(self.vm, &out);
                }
            }
            None => {}
        }
    }

    fn now(&self) -> u64 {
        cpu::rdtsc()
    }

    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        cpu::cpuid(leaf, subleaf)
    }

    fn xcr0_supported(&self) -> u64 {
        cpu::xcr0_supported()
    }

    fn load_xcr0(&mut self, value: u64) {
        #[allow(unsafe_code)]
        // SAFETY: OSXSAVE is on (`enable_xsave` ran on this pCPU before the
        // vCPU), and the dispatcher checked `value` against the CPU's components.
        unsafe {
            cpu::xsetbv(value)
        };
    }

    fn take_host_interrupt(&mut self) {
        cpu::wait_for_interrupt_pending();
    }

    fn idle(&mut self) {
        cpu::wait_for_interrupt();
    }

    fn stop_requested(&self) -> bool {
        self.vm.stopped.load(Ordering::Acquire)
    }
}

fn run_loop<B: VcpuBackend>(vm: &Vm, vcpu_id: u16, vcpu: &mut B) {
    let mut exits = vm::VcpuExits::new(vcpu_id, vm.cfg.vcpus, arch_x86::time::tsc_hz());
    let mut host = Host { vm };
    loop {
        exits.before_entry(vcpu, cpu::rdtsc());
        let exit = vcpu.run();
        vm.stats.lock().record(&exit);
        if let vm::Flow::Stop(reason) = exits.handle(vcpu, &mut host, exit) {
            stop(vm, format_args!("vCPU {vcpu_id}: {reason}"));
            return;
        }
    }
}

/// Forwards a VM's console bytes to the physical console, one prefixed line at a time.
fn console_out(vm: &Vm, bytes: &[u8]) {
    let mut line = vm.line.lock();
    for &b in bytes {
        match b {
            b'\n' => {
                arch_x86::println!("[{}] {}", vm.cfg.name, line.as_str());
                line.clear();
            }
            b'\r' => {}
            b if line.len() < 512 => line.push(if b.is_ascii() && !b.is_ascii_control() {
                b as char
            } else {
                '.'
            }),
            _ => {}
        }
    }
}

fn flush_console(vm: &Vm) {
    let mut line = vm.line.lock();
    if !line.is_empty() {
        arch_x86::println!("[{}] {}", vm.cfg.name, line.as_str());
        line.clear();
    }
}
