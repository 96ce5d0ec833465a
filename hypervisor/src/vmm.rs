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
use vcpu::{Event, Gprs, SegmentState, VcpuBackend, VmExit, GP, UD};

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
    vm.stopped.store(true, Ordering::Release);
    error!("vm {}: stopped: {why}; other VMs keep running", vm.cfg.name);
    info!("vm {}: exits {}", vm.cfg.name, vm.stats.lock());
}

/// Advances RIP past the instruction that exited: the hardware's length, or decoded.
fn skip_instruction<B: VcpuBackend>(vm: &Vm, vcpu: &mut B) -> bool {
    let len = match vcpu.exit_instruction_len() {
        Some(l) => Some(l),
        None => {
            let state = vcpu.system_state();
            let ram = vm.ram.lock();
            emulate::fetch(&*ram, &state, vcpu.rip())
                .ok()
                .and_then(|(bytes, n)| {
                    emulate::instruction_len(&bytes[..n], emulate::bitness(&state))
                })
        }
    };
    match len {
        Some(l) => {
            vcpu.set_rip(vcpu.rip().wrapping_add(u64::from(l)));
            true
        }
        None => false,
    }
}

fn run_loop<B: VcpuBackend>(vm: &Vm, vcpu_id: u16, vcpu: &mut B) {
    let cpuid = vm::CpuidPolicy {
        vcpu_id: u32::from(vcpu_id),
        vcpu_count: vm.cfg.vcpus.into(),
        tsc_khz: (arch_x86::time::tsc_hz() / 1000) as u32,
    };
    let msrs = vm::MsrPolicy {
        apic_base: vm::XAPIC_BASE | (1 << 11) | if vcpu_id == 0 { 1 << 8 } else { 0 },
    };
    let mut lapic = vm::VLapic::new(u32::from(vcpu_id), arch_x86::time::tsc_hz());
    loop {
        deliver_interrupts(&mut lapic, vcpu);
        let exit = vcpu.run();
        vm.stats.lock().record(&exit);
        let advance = match exit {
            VmExit::Io(io) => {
                handle_io(vm, vcpu, io);
                true
            }
            VmExit::Cpuid => {
                let g = vcpu.gprs();
                let (leaf, sub) = (g.rax as u32, g.rcx as u32);
                let [a, b, c, d] = cpuid.virtualize(leaf, sub, cpu::cpuid(leaf, sub));
                let g = vcpu.gprs_mut();
                (g.rax, g.rbx, g.rcx, g.rdx) = (a.into(), b.into(), c.into(), d.into());
                true
            }
            VmExit::Msr(m) => handle_msr(&msrs, vcpu, m.write),
            VmExit::Hypercall => {
                let cpl = vcpu.system_state().cpl;
                let gprs = *vcpu.gprs();
                let outcome = {
                    let ram = vm.ram.lock();
                    vm::hypercall::handle(cpl, &gprs, vm.id, &*ram, &mut |bytes| {
                        console_out(vm, bytes)
                    })
                };
                match outcome {
                    vm::HypercallOutcome::Return(v) => {
                        vcpu.gprs_mut().rax = v as u64;
                        true
                    }
                    vm::HypercallOutcome::InjectGp => {
                        vcpu.inject(GP);
                        false
                    }
                    vm::HypercallOutcome::PowerOff => {
                        flush_console(vm);
                        stop(vm, format_args!("powered off by the guest"));
                        return;
                    }
                }
            }
            VmExit::Mmio(fault) => {
                if !emulate_mmio(vm, vcpu, &mut lapic, fault.gpa) {
                    stop(
                        vm,
                        format_args!(
                            "unsupported access to {:#x} at RIP {:#x}",
                            fault.gpa,
                            vcpu.rip()
                        ),
                    );
                    return;
                }
                false
            }
            VmExit::Hlt => {
                if !skip_instruction(vm, vcpu) {
                    stop(
                        vm,
                        format_args!("cannot decode the instruction at RIP {:#x}", vcpu.rip()),
                    );
                    return;
                }
                if !halt_until_interrupt(vm, &mut lapic, vcpu) {
                    flush_console(vm);
                    stop(
                        vm,
                        format_args!(
                            "vCPU {vcpu_id} halted with interrupts disabled (HLT at {:#x})",
                            vcpu.rip()
                        ),
                    );
                    return;
                }
                false
            }
            VmExit::InterruptWindow => false,
            VmExit::Xsetbv => handle_xsetbv(vcpu),
            VmExit::Forbidden { .. } => {
                vcpu.inject(UD);
                false
            }
            VmExit::ExternalInterrupt => {
                cpu::wait_for_interrupt_pending();
                false
            }
            VmExit::Shutdown => {
                flush_console(vm);
                stop(
                    vm,
                    format_args!("triple fault (shutdown) at RIP {:#x}", vcpu.rip()),
                );
                return;
            }
            VmExit::Exception { vector, error_code } => {
                vcpu.inject(Event::Exception { vector, error_code });
                false
            }
            other => {
                stop(
                    vm,
                    format_args!("unhandled exit {other:?} at RIP {:#x}", vcpu.rip()),
                );
                return;
            }
        };
        if advance && !skip_instruction(vm, vcpu) {
            stop(
                vm,
                format_args!("cannot decode the instruction at RIP {:#x}", vcpu.rip()),
            );
            return;
        }
    }
}

/// XSETBV: the pCPU belongs to this vCPU, so a valid XCR0 is loaded for real
/// (the host saves only x87/SSE state and never uses AVX); anything the CPU
/// would refuse becomes #GP, as it would on hardware.
fn handle_xsetbv<B: VcpuBackend>(vcpu: &mut B) -> bool {
    let g = vcpu.gprs();
    let (index, value) = (g.rcx as u32, g.edx_eax());
    let supported = cpu::xcr0_supported();
    let valid = index == 0
        && vcpu.system_state().cpl == 0
        && value & 1 != 0
        && value & !supported == 0
        && (value & 0b100 == 0 || value & 0b10 != 0);
    if !valid {
        vcpu.inject(GP);
        return false;
    }
    #[allow(unsafe_code)]
    // SAFETY: OSXSAVE is on (`enable_xsave` runs on every pCPU before it runs
    // a vCPU, and `supported` is 0 without XSAVE, which fails the check above),
    // and the value was checked against the CPU's components.
    unsafe {
        cpu::xsetbv(value)
    };
    true
}

fn handle_msr<B: VcpuBackend>(policy: &vm::MsrPolicy, vcpu: &mut B, write: bool) -> bool {
    let msr = vcpu.gprs().rcx as u32;
    if write {
        let value = vcpu.gprs().edx_eax();
        match policy.write(msr, value) {
            vm::MsrWrite::Backend if vcpu.write_state_msr(msr, value) => true,
            vm::MsrWrite::Ignore => true,
            _ => {
                vcpu.inject(GP);
                false
            }
        }
    } else {
        let value = match policy.read(msr) {
            vm::MsrRead::Value(v) => Some(v),
            vm::MsrRead::Tsc => Some(vcpu.guest_tsc(cpu::rdtsc())),
            vm::MsrRead::Backend => vcpu.read_state_msr(msr),
            vm::MsrRead::Gp => None,
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
}

const COM1: u16 = 0x3F8;

fn handle_io<B: VcpuBackend>(vm: &Vm, vcpu: &mut B, io: vcpu::IoAccess) {
    let uart_base = vm.cfg.console.map(|c| c.port);
    let in_uart = uart_base.is_some_and(|b| (b..b + 8).contains(&io.port));
    if io.string {
        // INS/OUTS are not emulated yet: reads see all-ones, writes vanish.
        return;
    }
    if io.write {
        let value = vcpu.gprs().rax;
        if in_uart {
            let off = (io.port - uart_base.unwrap_or(COM1)) as u8;
            let mut out = Vec::new();
            {
                let mut uart = vm.uart.lock();
                uart.write(off, value as u8);
                uart.take_output(&mut |b| out.push(b));
            }
            if !out.is_empty() {
                console_out(vm, &out);
            }
        }
    } else {
        let value = if in_uart && io.size == 1 {
            let off = (io.port - uart_base.unwrap_or(COM1)) as u8;
            u32::from(vm.uart.lock().read(off))
        } else {
            vm::unmapped_read(io.size)
        };
        let g = vcpu.gprs_mut();
        let mask: u64 = match io.size {
            1 => 0xFF,
            2 => 0xFFFF,
            _ => 0xFFFF_FFFF,
        };
        g.rax = if io.size == 4 {
            u64::from(value)
        } else {
            (g.rax & !mask) | (u64::from(value) & mask)
        };
    }
}

/// Injects the highest pending vLAPIC interrupt if the guest can take it now,
/// or asks for an exit when it can.
fn deliver_interrupts<B: VcpuBackend>(lapic: &mut vm::VLapic, vcpu: &mut B) {
    lapic.poll(cpu::rdtsc());
    let Some(vector) = lapic.pending() else {
        return;
    };
    if vcpu.interruptible() {
        vcpu.inject(Event::Interrupt { vector });
        lapic.accept(vector);
    } else {
        vcpu.request_interrupt_window(true);
    }
}

/// HLT: the vCPU owns its pCPU, so it waits right here for the next vLAPIC
/// interrupt (timer deadline). Returns false if nothing can ever wake it
/// (interrupts disabled and nothing pending).
fn halt_until_interrupt<B: VcpuBackend>(vm: &Vm, lapic: &mut vm::VLapic, vcpu: &mut B) -> bool {
    let interrupts_on = vcpu.rflags() & (1 << 9) != 0;
    loop {
        lapic.poll(cpu::rdtsc());
        if lapic.pending().is_some() {
            return true;
        }
        if vm.stopped.load(Ordering::Acquire) {
            return true;
        }
        match lapic.next_deadline() {
            Some(_) => core::hint::spin_loop(),
            None if !interrupts_on => return false,
            // Idle with interrupts on and no timer: only an outside event
            // (none exists yet) could wake it; sleep between host interrupts.
            None => cpu::wait_for_interrupt(),
        }
    }
}

/// An access to guest-physical memory outside RAM: the vLAPIC page, or
/// nothing (reads return all-ones, writes are dropped, as on a PC bus).
fn emulate_mmio<B: VcpuBackend>(vm: &Vm, vcpu: &mut B, lapic: &mut vm::VLapic, gpa: u64) -> bool {
    let state = vcpu.system_state();
    let rip = vcpu.rip();
    let access = {
        let ram = vm.ram.lock();
        emulate::emulate_mmio(&*ram, &state, rip, gpa, vcpu.gprs())
    };
    let Ok(access) = access else { return false };
    let in_lapic = (vm::XAPIC_BASE..vm::XAPIC_BASE + 0x1000).contains(&gpa);
    let offset = (gpa - vm::XAPIC_BASE) as u32;
    let now = cpu::rdtsc();
    let read_value = if !access.needs_read() {
        0
    } else if in_lapic {
        u64::from(lapic.read(offset, now))
    } else {
        u64::MAX
    };
    let rflags = vcpu.rflags();
    let Ok(done) = emulate::complete(&access, read_value, vcpu.gprs_mut(), rflags) else {
        return false;
    };
    if let (Some(value), true) = (done.write_back, in_lapic) {
        let _ = lapic.write(offset, value as u32, now);
    }
    vcpu.set_rflags(done.rflags);
    vcpu.set_rip(access.next_rip(rip));
    true
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
