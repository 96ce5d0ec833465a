//! VMs from the scenario: RAM, second-level tables, kernel loading, vCPUs
//! handed to their pCPUs, and the exit loop each pCPU runs for its vCPU.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};

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
use vcpu::{Gprs, GuestMemory, VcpuBackend};

use crate::boot::{FRAMES, MAX_CPUS};

mod config {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/scenario.rs"));
}
pub use config::SCENARIO;

/// Vector of the host timer that ends a guest's run at its next virtual timer deadline.
const GUEST_TIMER_VECTOR: u8 = 0xEE;

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
    /// The VM's legacy devices and console vUART.
    platform: Mutex<vm::PcPlatform>,
    /// Console bytes the guest wrote, waiting for pCPU 0 to show them.
    out: Mutex<alloc::collections::VecDeque<u8>>,
    /// Bytes queued in `out` or taken but not yet printed by pCPU 0.
    unprinted: AtomicU64,
    /// Bytes typed for the guest, fed to its vUART as its FIFO drains.
    typed: Mutex<alloc::collections::VecDeque<u8>>,
    /// The line being assembled for the prefixed overview (pCPU 0 only).
    line: Mutex<String>,
    /// Counters and run state of each vCPU.
    pub vcpus: Vec<VcpuSlot>,
    /// Lifecycle state, as the vCPU last reported it ([`VmState`]).
    state: AtomicU8,
    /// What the operator asked for ([`Control`]).
    control: AtomicU8,
    /// The kernel image and how to load it (again, on start or reset).
    image: &'static [u8],
    /// How to load `image`.
    kind: ImageKind,
    /// The initial ramdisk of a Linux kernel.
    initrd: Option<&'static [u8]>,
    entry: Mutex<Option<Entry>>,
    /// vCPUs currently inside their run loop.
    running_vcpus: AtomicU32,
    /// Messages for each vCPU (IPIs, device interrupts, INIT/SIPI).
    inboxes: Vec<vm::VcpuInbox>,
}

/// One vCPU's counters and where it is (written on its pCPU, read by the shell).
pub struct VcpuSlot {
    pub stats: Mutex<vm::ExitStats>,
    /// TSC ticks spent in the guest and in the hypervisor for it.
    pub guest_cycles: AtomicU64,
    pub hv_cycles: AtomicU64,
    /// Interrupts injected.
    pub injected: AtomicU64,
    run: AtomicU8,
}

/// Where a vCPU is in its life ([`VcpuSlot::run`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum VcpuRun {
    /// Not on its pCPU.
    Off = 0,
    /// An AP waiting for INIT and a start-up IPI.
    WaitingForSipi = 1,
    Running = 2,
    /// In HLT, its pCPU asleep.
    Halted = 3,
}

impl VcpuSlot {
    fn new() -> Self {
        VcpuSlot {
            stats: Mutex::new(vm::ExitStats::default()),
            guest_cycles: AtomicU64::new(0),
            hv_cycles: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            run: AtomicU8::new(VcpuRun::Off as u8),
        }
    }

    /// Where the vCPU is.
    pub fn run(&self) -> VcpuRun {
        match self.run.load(Ordering::Relaxed) {
            1 => VcpuRun::WaitingForSipi,
            2 => VcpuRun::Running,
            3 => VcpuRun::Halted,
            _ => VcpuRun::Off,
        }
    }

    fn set_run(&self, run: VcpuRun) {
        self.run.store(run as u8, Ordering::Relaxed);
    }
}

/// A VM's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum VmState {
    Stopped = 0,
    Running = 1,
    Paused = 2,
    /// Stopped by its own fault (triple fault, bad state...).
    Crashed = 3,
}

impl VmState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => VmState::Running,
            2 => VmState::Paused,
            3 => VmState::Crashed,
            _ => VmState::Stopped,
        }
    }
}

/// What the operator asked a VM to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Control {
    Run = 0,
    Pause = 1,
    Stop = 2,
    /// The guest reset the platform: every vCPU leaves, one reloads the VM.
    Reset = 3,
}

impl Vm {
    /// The lifecycle state.
    pub fn state(&self) -> VmState {
        VmState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn control(&self) -> Control {
        match self.control.load(Ordering::Acquire) {
            1 => Control::Pause,
            2 => Control::Stop,
            3 => Control::Reset,
            _ => Control::Run,
        }
    }

    /// Exits of all its vCPUs.
    pub fn exit_totals(&self) -> vm::ExitStats {
        let mut total = vm::ExitStats::default();
        for v in &self.vcpus {
            total.add(&v.stats.lock());
        }
        total
    }

    /// Zeroes RAM and loads the kernel: the state of a fresh boot.
    fn load(&self) -> Result<Entry, String> {
        let mut ram = self.ram.lock();
        ram.zero();
        let entry = match self.kind {
            ImageKind::Loader(kind) => {
                // Every VM has ACPI tables in the BIOS area (bare-metal guests
                // find the MCFG there by the RSDP scan).
                write_acpi_tables(self.cfg, &mut ram)?;
                Entry::Multiboot(
                    loader::load(kind, self.image, self.cfg.kernel.cmdline, &mut *ram)
                        .map_err(|e| alloc::format!("{e}"))?,
                )
            }
            linux => {
                // Linux: the boot protocol or PVH, with the ECAM window reserved
                // in its memory map (Linux trusts the MCFG only then).
                let tables = write_acpi_tables(self.cfg, &mut ram)?;
                let ecam = [loader::ReservedRange {
                    start: vm::pc::layout::ECAM_BASE,
                    len: (u64::from(vm::pc::layout::BUS_END) + 1) << 20,
                    kind: loader::ReservedKind::Reserved,
                }];
                let layout = loader::VmLayout {
                    ram_size: self.cfg.memory.size,
                    reserved: &ecam,
                    acpi_rsdp: Some(tables.rsdp_gpa),
                };
                let (image, cmdline, initrd) = (self.image, self.cfg.kernel.cmdline, self.initrd);
                if linux == ImageKind::Pvh {
                    loader::load_pvh(image, cmdline, initrd, &layout, &mut *ram)
                        .map(Entry::Pvh)
                        .map_err(|e| alloc::format!("{e}"))?
                } else {
                    loader::load_bzimage(image, cmdline, initrd, &layout, &mut *ram)
                        .map(Entry::Linux)
                        .map_err(|e| alloc::format!("{e}"))?
                }
            }
        };
        *self.entry.lock() = Some(entry);
        *self.platform.lock() = new_platform(self.cfg);
        for (id, inbox) in (0u32..).zip(&self.inboxes) {
            inbox.clear(id);
        }
        Ok(entry)
    }
}

/// Builds the VM's ACPI tables (MADT, FADT, DSDT with the PCI host bridge and
/// its `_PRT`, MCFG) and writes them at 0xE0000.
fn write_acpi_tables(cfg: &VmConfig, ram: &mut GuestRam) -> Result<guest_acpi::AcpiTables, String> {
    use vm::pc::layout;
    let mut acpi_cfg = guest_acpi::AcpiConfig::new(cfg.vcpus.min(254) as u8);
    acpi_cfg.pm_tmr = Some(vm::pc::PM_TMR);
    acpi_cfg.pci = Some(guest_acpi::PciHost {
        ecam_base: layout::ECAM_BASE,
        bus_end: layout::BUS_END,
        mmio_window: (layout::MMIO_WINDOW.0 as u32, layout::MMIO_WINDOW.1 as u32),
        io_window: (layout::IO_WINDOW.0 as u16, layout::IO_WINDOW.1 as u16),
        intx_gsi_base: layout::INTX_GSI_BASE,
    });
    let tables = guest_acpi::build(&acpi_cfg, guest_acpi::ACPI_TABLES_GPA)
        .map_err(|e| alloc::format!("ACPI tables: {e}"))?;
    ram.write(tables.base_gpa, &tables.bytes)
        .map_err(|e| alloc::format!("ACPI tables: {e}"))?;
    Ok(tables)
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
    arch_x86::trap::set_handler(GUEST_TIMER_VECTOR, |_| {});
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
    for i in 0..vms.len() {
        launch(i);
    }
}

/// Every VM, in id order.
pub fn vms() -> &'static [Vm] {
    VMS.get().map_or(&[], Vec::as_slice)
}

/// Hands each vCPU of VM `index` to its pCPU.
fn launch(index: usize) {
    let Some(vm) = vms().get(index) else { return };
    vm.control.store(Control::Run as u8, Ordering::Release);
    vm.state.store(VmState::Running as u8, Ordering::Release);
    for (v, &pcpu) in vm.cfg.pcpus.iter().enumerate() {
        let task = alloc::boxed::Box::into_raw(alloc::boxed::Box::new(Task {
            vm: index,
            vcpu: v as u16,
        }));
        let old = TASKS[usize::from(pcpu)].swap(task, Ordering::AcqRel);
        if !old.is_null() {
            #[allow(unsafe_code)]
            // SAFETY: every pointer in TASKS comes from `Box::into_raw` and is taken once.
            drop(unsafe { alloc::boxed::Box::from_raw(old) });
        }
        kick(usize::from(pcpu));
    }
}

/// Interrupts pCPU `pcpu` so that it looks at its mailbox and its VM's controls.
pub fn kick(pcpu: usize) {
    if let Some(apic) = crate::boot::apic_of(pcpu) {
        lapic::send_ipi(apic, WAKE_VECTOR);
    }
}

/// Interrupts every pCPU of `vm` so that its vCPUs look at the VM's controls.
fn kick_vcpus(vm: &Vm) {
    for &p in vm.cfg.pcpus {
        kick(usize::from(p));
    }
}

/// Why a lifecycle request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifecycleError {
    NoSuchVm,
    WrongState(VmState),
    Timeout,
    LoadFailed,
}

/// Operator lifecycle operations (from the shell, on pCPU 0).
pub mod lifecycle {
    use super::*;

    fn wait_for(vm: &Vm, ok: impl Fn(&Vm) -> bool) -> Result<(), LifecycleError> {
        let deadline = arch_x86::time::deadline_after_us(2_000_000);
        while !ok(vm) {
            if arch_x86::time::passed(deadline) {
                return Err(LifecycleError::Timeout);
            }
            core::hint::spin_loop();
        }
        Ok(())
    }

    fn vm(index: usize) -> Result<&'static Vm, LifecycleError> {
        vms().get(index).ok_or(LifecycleError::NoSuchVm)
    }

    /// Starts a stopped or crashed VM from a fresh load of its kernel.
    pub fn start(index: usize) -> Result<(), LifecycleError> {
        let vm = vm(index)?;
        match vm.state() {
            VmState::Stopped | VmState::Crashed => {}
            s => return Err(LifecycleError::WrongState(s)),
        }
        wait_for(vm, |vm| vm.running_vcpus.load(Ordering::Acquire) == 0)?;
        vm.load().map_err(|e| {
            error!("vm {}: reload failed: {e}", vm.cfg.name);
            LifecycleError::LoadFailed
        })?;
        launch(index);
        Ok(())
    }

    /// Stops a running or paused VM (its vCPUs leave their run loops).
    pub fn stop(index: usize) -> Result<(), LifecycleError> {
        let vm = vm(index)?;
        match vm.state() {
            VmState::Running | VmState::Paused => {}
            s => return Err(LifecycleError::WrongState(s)),
        }
        vm.control.store(Control::Stop as u8, Ordering::Release);
        kick_vcpus(vm);
        wait_for(vm, |vm| vm.running_vcpus.load(Ordering::Acquire) == 0)
    }

    /// Pauses a running VM: its vCPUs wait on their pCPUs.
    pub fn pause(index: usize) -> Result<(), LifecycleError> {
        let vm = vm(index)?;
        if vm.state() != VmState::Running {
            return Err(LifecycleError::WrongState(vm.state()));
        }
        vm.control.store(Control::Pause as u8, Ordering::Release);
        kick_vcpus(vm);
        wait_for(vm, |vm| vm.state() != VmState::Running)
    }

    /// Resumes a paused VM.
    pub fn resume(index: usize) -> Result<(), LifecycleError> {
        let vm = vm(index)?;
        if vm.state() != VmState::Paused {
            return Err(LifecycleError::WrongState(vm.state()));
        }
        vm.control.store(Control::Run as u8, Ordering::Release);
        kick_vcpus(vm);
        wait_for(vm, |vm| vm.state() != VmState::Paused)
    }

    /// Stops (if needed) and starts again from the kernel image.
    pub fn reset(index: usize) -> Result<(), LifecycleError> {
        let vm = vm(index)?;
        if matches!(vm.state(), VmState::Running | VmState::Paused) {
            stop(index)?;
        }
        start(index)
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
    let ram = unsafe { GuestRam::new(hpa.0, size) };

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
        KernelKind::Multiboot1 => ImageKind::Loader(loader::KernelKind::Multiboot1),
        KernelKind::Elf64 => ImageKind::Loader(loader::KernelKind::Elf64),
        KernelKind::Raw {
            load_gpa,
            entry_gpa,
        } => ImageKind::Loader(loader::KernelKind::Raw {
            load_gpa,
            entry_gpa,
        }),
        KernelKind::BzImage => ImageKind::BzImage,
        KernelKind::Pvh => ImageKind::Pvh,
    };
    let initrd = match cfg.initrd {
        None => None,
        Some(name) => {
            let m = boot
                .modules
                .iter()
                .find(|m| m.cmdline.split_whitespace().any(|w| w == name))
                .ok_or_else(|| format!("initrd module {name:?} not found"))?;
            #[allow(unsafe_code)]
            // SAFETY: boot modules are excluded from the frame allocator and never written.
            let bytes = unsafe { arch_x86::phys::borrow(m.range.start.0, m.range.len() as usize) }
                .ok_or_else(|| format!("module {name:?} lies outside mapped memory"))?;
            Some(bytes)
        }
    };

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
        "vm {} (id {}): {} MiB at host {:#x}, kernel {:?}, pCPUs {:?}",
        cfg.name,
        cfg.id,
        size >> 20,
        hpa.0,
        cfg.kernel.module,
        cfg.pcpus
    );
    let vm = Vm {
        id: cfg.id,
        cfg,
        ram: Mutex::new(ram),
        slat_root,
        platform: Mutex::new(new_platform(cfg)),
        out: Mutex::new(alloc::collections::VecDeque::new()),
        unprinted: AtomicU64::new(0),
        typed: Mutex::new(alloc::collections::VecDeque::new()),
        line: Mutex::new(String::new()),
        vcpus: (0..cfg.vcpus).map(|_| VcpuSlot::new()).collect(),
        state: AtomicU8::new(VmState::Stopped as u8),
        control: AtomicU8::new(Control::Stop as u8),
        image,
        kind,
        initrd,
        entry: Mutex::new(None),
        running_vcpus: AtomicU32::new(0),
        inboxes: (0..u32::from(cfg.vcpus)).map(vm::VcpuInbox::new).collect(),
    };
    vm.load()?;
    Ok(vm)
}

/// Called by an idle pCPU: runs the vCPUs posted to it, if any.
pub fn run_posted(cpu_index: usize) {
    let Some(slot) = TASKS.get(cpu_index) else {
        return;
    };
    loop {
        let task = slot.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if task.is_null() {
            return;
        }
        #[allow(unsafe_code)]
        // SAFETY: `launch` stores pointers from `Box::into_raw` and each is taken once (swap).
        let task = unsafe { alloc::boxed::Box::from_raw(task) };
        let Some(vm) = VMS.get().and_then(|v| v.get(task.vm)) else {
            return;
        };
        cpu::enable_xsave();
        vm.running_vcpus.fetch_add(1, Ordering::AcqRel);
        let end = run_vcpu(vm, task.vcpu, cpu_index);
        if let Some(slot) = vm.vcpus.get(usize::from(task.vcpu)) {
            slot.set_run(VcpuRun::Off);
        }
        if end == RunEnd::Reboot {
            reboot(vm, task.vm);
        }
        vm.running_vcpus.fetch_sub(1, Ordering::AcqRel);
    }
}

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

/// Runs vCPU `vcpu_id` of `vm` on pCPU `pcpu`: the BSP from the kernel's
/// entry, an AP from each start-up IPI the guest sends it.
fn run_vcpu(vm: &Vm, vcpu_id: u16, pcpu: usize) -> RunEnd {
    let mut start = if vcpu_id == 0 {
        let Some(entry) = *vm.entry.lock() else {
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
            None => match wait_for_sipi(vm, vcpu_id, pcpu) {
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
            slot.set_run(VcpuRun::Running);
        }
        let end = match BACKEND.get() {
            Some(Backend::Svm) => {
                svm::enable_on_this_cpu();
                let mut vcpu = SvmVcpu::new(u32::from(vm.id) + 1, vm.slat_root, &init);
                run_loop(vm, vcpu_id, &mut vcpu)
            }
            Some(Backend::Vmx) => {
                let vcpu = vmx::enable_on_this_cpu()
                    .and_then(|()| VmxVcpu::new(vm.id + 1, vm.slat_root, &init));
                match vcpu {
                    Ok(mut vcpu) => run_loop(vm, vcpu_id, &mut vcpu),
                    Err(e) => {
                        stop(vm, VmState::Crashed, format_args!("VMX setup failed: {e}"));
                        RunEnd::Left
                    }
                }
            }
            None => RunEnd::Left,
        };
        if end != RunEnd::WaitForSipi {
            return end;
        }
    }
}

/// An application processor before (or after an INIT): it waits on its pCPU
/// for a start-up IPI; `None` if the VM stops or reboots first.
fn wait_for_sipi(vm: &Vm, vcpu_id: u16, pcpu: usize) -> Option<u8> {
    let inbox = vm.inboxes.get(usize::from(vcpu_id))?;
    if let Some(slot) = vm.vcpus.get(usize::from(vcpu_id)) {
        slot.set_run(VcpuRun::WaitingForSipi);
    }
    loop {
        crate::mailbox::service(pcpu, None);
        if matches!(vm.control(), Control::Stop | Control::Reset) {
            return None;
        }
        // A second INIT just keeps it waiting.
        inbox.take_init();
        if let Some(vector) = inbox.take_sipi() {
            return Some(vector);
        }
        // Interrupts are off here: a kick that lands before the HLT wakes it.
        cpu::wait_for_interrupt();
    }
}

/// The guest reset the platform (from this pCPU): the other vCPUs leave, the
/// VM is loaded again from its images and every vCPU starts over.
fn reboot(vm: &Vm, index: usize) {
    let deadline = arch_x86::time::deadline_after_us(2_000_000);
    while vm.running_vcpus.load(Ordering::Acquire) > 1 {
        if arch_x86::time::passed(deadline) {
            stop(
                vm,
                VmState::Crashed,
                format_args!("reset: other vCPUs did not leave"),
            );
            return;
        }
        core::hint::spin_loop();
    }
    if let Err(e) = vm.load() {
        stop(vm, VmState::Crashed, format_args!("reboot failed: {e}"));
        return;
    }
    launch(index);
}

/// How a VM's kernel image is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ImageKind {
    /// Multiboot1, ELF64 or raw, through [`loader::load`].
    Loader(loader::KernelKind),
    /// A Linux bzImage (64-bit boot protocol).
    BzImage,
    /// An ELF kernel entered through its PVH note.
    Pvh,
}

/// How a VM's kernel is entered.
#[derive(Clone, Copy, Debug)]
enum Entry {
    Multiboot(loader::BootSetup),
    Linux(loader::LinuxBoot),
    Pvh(loader::PvhBoot),
}

fn initial_state(entry: &Entry) -> InitialState {
    match entry {
        Entry::Multiboot(b) => multiboot_state(b),
        Entry::Linux(l) => l.entry_state(),
        Entry::Pvh(p) => p.entry_state(),
    }
}

/// Multiboot1 entry: 32-bit protected mode, paging off, flat segments,
/// EAX = the boot loader magic, EBX = the information structure.
fn multiboot_state(entry: &loader::BootSetup) -> InitialState {
    InitialState::protected_flat(
        entry.entry,
        Gprs {
            rax: u64::from(loader::BOOTLOADER_MAGIC),
            rbx: entry.info_gpa,
            ..Gprs::default()
        },
    )
}

fn stop(vm: &Vm, state: VmState, why: core::fmt::Arguments<'_>) {
    // Let pCPU 0 show the guest's last words before the verdict (bounded).
    let deadline = arch_x86::time::deadline_after_us(2_000_000);
    while vm.unprinted.load(Ordering::Acquire) != 0 && !arch_x86::time::passed(deadline) {
        core::hint::spin_loop();
    }
    vm.control.store(Control::Stop as u8, Ordering::Release);
    vm.state.store(state as u8, Ordering::Release);
    kick_vcpus(vm);
    if state == VmState::Crashed {
        error!("vm {}: stopped: {why}; other VMs keep running", vm.cfg.name);
    } else {
        info!("vm {}: stopped: {why}", vm.cfg.name);
    }
    info!("vm {}: exits {}", vm.cfg.name, vm.exit_totals());
}

/// The VM-wide services the exit handlers use, for one vCPU on this pCPU.
struct Host<'a> {
    vm: &'a Vm,
    pcpu: usize,
    slot: &'a VcpuSlot,
}

/// The RTC's idea of "now" when a VM's platform is made (2026-01-01 UTC):
/// the host's own clock is not read yet.
const GUEST_EPOCH_UNIX_SECS: u64 = 1_767_225_600;

fn tsc_to_ns(tsc: u64) -> u64 {
    let hz = arch_x86::time::tsc_hz().max(1);
    (u128::from(tsc) * 1_000_000_000 / u128::from(hz)) as u64
}

fn ns_to_tsc(ns: u64) -> u64 {
    let hz = arch_x86::time::tsc_hz().max(1);
    u64::try_from(u128::from(ns) * u128::from(hz) / 1_000_000_000).unwrap_or(u64::MAX)
}

fn new_platform(cfg: &VmConfig) -> vm::PcPlatform {
    let uart = cfg.console.map(|c| vm::UartPlace {
        port: c.port,
        irq: c.irq,
    });
    // The IOAPIC's ID follows the vCPUs' APIC IDs, as the VM's MADT says.
    let ioapic_id = cfg.vcpus.min(254) as u8;
    vm::PcPlatform::new(&vm::PlatformConfig {
        now_ns: tsc_to_ns(cpu::rdtsc()),
        unix_secs: GUEST_EPOCH_UNIX_SECS,
        ioapic_id,
        uart,
        pci_test_device: cfg.pci_test_device,
    })
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
        self.vm
            .platform
            .lock()
            .pio_read(port, size, tsc_to_ns(cpu::rdtsc()))
    }

    fn pio_write(&self, port: u16, size: u8, value: u32) -> vm::PioEffect {
        let mut out = Vec::new();
        let effect = {
            let mut p = self.vm.platform.lock();
            let effect = p.pio_write(port, size, value, tsc_to_ns(cpu::rdtsc()));
            p.take_console_output(&mut out);
            effect
        };
        if !out.is_empty() {
            console_out(self.vm, &out);
        }
        effect
    }

    fn mmio_read(&self, gpa: u64, size: u8) -> Option<u64> {
        self.vm
            .platform
            .lock()
            .mmio_read(gpa, size, tsc_to_ns(cpu::rdtsc()))
    }

    fn mmio_write(&self, gpa: u64, size: u8, value: u64) -> bool {
        self.vm
            .platform
            .lock()
            .mmio_write(gpa, size, value, tsc_to_ns(cpu::rdtsc()))
    }

    fn poll_devices(&self, deliver: &mut dyn FnMut(&vm::Delivery)) {
        let deliveries = {
            let mut p = self.vm.platform.lock();
            p.poll(tsc_to_ns(cpu::rdtsc()));
            p.take_deliveries()
        };
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
        if let Some(&p) = self.vm.cfg.pcpus.get(vcpu) {
            kick(usize::from(p));
        }
    }

    fn device_deadline(&self) -> Option<u64> {
        self.vm.platform.lock().next_deadline().map(ns_to_tsc)
    }

    fn eoi(&self, vector: u8) {
        self.vm.platform.lock().eoi(vector);
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

    fn host_rdmsr(&self, msr: u32) -> Option<u64> {
        arch_x86::safe_msr::rdmsr(msr)
    }

    fn host_wrmsr(&self, msr: u32, value: u64) -> bool {
        arch_x86::safe_msr::wrmsr(msr, value)
    }

    fn take_host_interrupt(&mut self) {
        cpu::wait_for_interrupt_pending();
    }

    fn idle(&mut self, deadline: Option<u64>) {
        if let Some(d) = deadline {
            lapic::arm_oneshot(GUEST_TIMER_VECTOR, Some(d.saturating_sub(cpu::rdtsc())));
        }
        self.slot.set_run(VcpuRun::Halted);
        cpu::wait_for_interrupt();
        self.slot.set_run(VcpuRun::Running);
    }

    fn stop_requested(&self) -> bool {
        matches!(self.vm.control(), Control::Stop | Control::Reset)
    }

    fn needs_attention(&self) -> bool {
        self.vm.control() != Control::Run || crate::mailbox::pending(self.pcpu)
    }
}

/// Runs vCPU `vcpu_id` until it leaves the guest for good or is sent an INIT.
fn run_loop<B: VcpuBackend>(vm: &Vm, vcpu_id: u16, vcpu: &mut B) -> RunEnd {
    let mut exits = vm::VcpuExits::new(vcpu_id, vm.cfg.vcpus, arch_x86::time::tsc_hz());
    let pcpu = usize::from(vm.cfg.pcpus.get(usize::from(vcpu_id)).copied().unwrap_or(0));
    let Some(slot) = vm.vcpus.get(usize::from(vcpu_id)) else {
        return RunEnd::Left;
    };
    let mut host = Host { vm, pcpu, slot };
    let mut left_guest = cpu::rdtsc();
    loop {
        let mut flow = exits.before_entry(vcpu, &mut host);
        if flow == vm::Flow::Continue {
            let entered = cpu::rdtsc();
            // A host timer ends the guest's run at the next virtual timer deadline.
            lapic::arm_oneshot(
                GUEST_TIMER_VECTOR,
                exits
                    .next_deadline(&host)
                    .map(|d| d.saturating_sub(entered)),
            );
            slot.hv_cycles
                .fetch_add(entered.wrapping_sub(left_guest), Ordering::Relaxed);
            let exit = vcpu.run();
            left_guest = cpu::rdtsc();
            slot.guest_cycles
                .fetch_add(left_guest.wrapping_sub(entered), Ordering::Relaxed);
            slot.stats.lock().record(&exit);
            slot.injected.store(exits.injected, Ordering::Relaxed);
            flow = exits.handle(vcpu, &mut host, exit);
        }
        crate::mailbox::service(pcpu, Some(&*vcpu));
        match (flow, vm.control()) {
            // Another vCPU (or pCPU 0) already decided the VM's fate.
            (_, Control::Reset) => return RunEnd::Left,
            (_, Control::Stop) if !matches!(vm.state(), VmState::Running | VmState::Paused) => {
                return RunEnd::Left
            }
            (vm::Flow::Stop(vm::StopReason::Requested), _) | (_, Control::Stop) => {
                stop(
                    vm,
                    VmState::Stopped,
                    format_args!("vCPU {vcpu_id}: stopped by the operator"),
                );
                return RunEnd::Left;
            }
            (vm::Flow::Stop(vm::StopReason::Reset), _) => {
                info!(
                    "vm {}: vCPU {vcpu_id}: reset by the guest; booting it again",
                    vm.cfg.name
                );
                vm.control.store(Control::Reset as u8, Ordering::Release);
                kick_vcpus(vm);
                return RunEnd::Reboot;
            }
            (vm::Flow::Stop(reason @ vm::StopReason::PowerOff), _) => {
                stop(
                    vm,
                    VmState::Stopped,
                    format_args!("vCPU {vcpu_id}: {reason}"),
                );
                return RunEnd::Left;
            }
            (vm::Flow::Stop(reason), _) => {
                stop(
                    vm,
                    VmState::Crashed,
                    format_args!("vCPU {vcpu_id}: {reason}"),
                );
                return RunEnd::Left;
            }
            (vm::Flow::WaitForSipi, _) => {
                info!(
                    "vm {}: vCPU {vcpu_id}: INIT; waiting for a start-up IPI",
                    vm.cfg.name
                );
                return RunEnd::WaitForSipi;
            }
            (vm::Flow::Continue | vm::Flow::Parked, Control::Pause) => {
                if !pause_here(vm, pcpu, &*vcpu) {
                    return RunEnd::Left;
                }
            }
            // Parked: waiting for a deferred access; before_entry looks again.
            (vm::Flow::Continue | vm::Flow::Parked, Control::Run) => {}
        }
    }
}

/// Waits on this pCPU while the VM is paused (answering mailbox requests);
/// false if it was stopped or reset instead of resumed.
fn pause_here(vm: &Vm, pcpu: usize, vcpu: &dyn VcpuBackend) -> bool {
    let first = vm
        .state
        .compare_exchange(
            VmState::Running as u8,
            VmState::Paused as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok();
    if first {
        info!("vm {}: paused", vm.cfg.name);
    }
    loop {
        crate::mailbox::service(pcpu, Some(vcpu));
        match vm.control() {
            Control::Pause => cpu::wait_for_interrupt(),
            Control::Run => {
                let first = vm
                    .state
                    .compare_exchange(
                        VmState::Paused as u8,
                        VmState::Running as u8,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok();
                if first {
                    info!("vm {}: resumed", vm.cfg.name);
                }
                return true;
            }
            Control::Stop => {
                if vm.state() == VmState::Paused {
                    stop(
                        vm,
                        VmState::Stopped,
                        format_args!("stopped by the operator"),
                    );
                }
                return false;
            }
            Control::Reset => return false,
        }
    }
}

/// Most console bytes a VM may have waiting for pCPU 0; beyond that the
/// oldest are dropped (a VM never waits for its console to be read).
const OUT_QUEUE_MAX: usize = 64 * 1024;

/// Queues a VM's console bytes for pCPU 0 (called on the VM's pCPU).
fn console_out(vm: &Vm, bytes: &[u8]) {
    let mut q = vm.out.lock();
    for &b in bytes {
        if q.len() >= OUT_QUEUE_MAX {
            q.pop_front();
            vm.unprinted.fetch_sub(1, Ordering::AcqRel);
        }
        q.push_back(b);
        vm.unprinted.fetch_add(1, Ordering::AcqRel);
    }
}

/// pCPU 0 printed (or stored) `n` bytes taken with [`take_output`].
pub fn printed(vm: &Vm, n: usize) {
    vm.unprinted.fetch_sub(n as u64, Ordering::AcqRel);
}

/// Takes the console bytes VM `vm` has waiting (pCPU 0).
pub fn take_output(vm: &Vm, into: &mut Vec<u8>) {
    into.extend(vm.out.lock().drain(..));
}

/// Prints a VM's console bytes as whole lines prefixed with its name: the
/// overview shown while no VM console is attached (pCPU 0).
pub fn print_prefixed(vm: &Vm, bytes: &[u8]) {
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

/// The redirection table of a VM's virtual IOAPIC.
pub fn vioapic_table(vm: &Vm) -> Vec<u64> {
    let p = vm.platform.lock();
    (0..)
        .map_while(|pin| p.ioapic().redirection_entry(pin))
        .collect()
}

/// Most typed bytes kept for a VM whose vUART is not reading.
const TYPED_MAX: usize = 4096;

/// Queues a byte typed at the console for VM `vm` (pCPU 0).
pub fn input(vm: &Vm, byte: u8) {
    let mut q = vm.typed.lock();
    if q.len() < TYPED_MAX {
        q.push_back(byte);
    }
}

/// Moves typed bytes into the VM's vUART while its receive FIFO has room (pCPU 0).
pub fn feed_typed(vm: &Vm) {
    let mut q = vm.typed.lock();
    if q.is_empty() {
        return;
    }
    let mut platform = vm.platform.lock();
    let mut fed = false;
    while let Some(&b) = q.front() {
        if !platform.console_input(b) {
            break;
        }
        q.pop_front();
        fed = true;
    }
    drop(platform);
    if fed {
        // A halted vCPU sleeps until a host interrupt: wake it for the UART's.
        kick_vcpus(vm);
    }
}
