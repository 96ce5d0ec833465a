//! VMs from the scenario on this machine: the [`::vmm::Platform`] the arch tier gives them
//! (SVM or VMX vCPUs, the LAPIC timer, wake-up IPIs, the mailbox) and the creation of each
//! pre-launched VM (RAM, second-level tables, boot modules). The VMs themselves, their
//! lifecycle and their run loop live in the `vmm` crate.

use alloc::string::String;

use ::vmm::io::IoHub;
use ::vmm::{GuestImage, ImageKind, VcpuSpec, WithVcpu};
use arch_x86::guest_ram::{FrameTables, GuestRam};
use arch_x86::guest_state::InitialState;
use arch_x86::svm::{self, SvmVcpu};
use arch_x86::virt_caps::VirtCaps;
use arch_x86::vmx::{self, VmxError, VmxVcpu};
use arch_x86::{cpu, lapic};
use core::sync::atomic::{AtomicU8, Ordering};
use log::{error, info, warn};
use paging::{Format, GuestPhysAddr, MemType, PageSizes, Perms, SecondLevelTables};
use platform::{AsidGrant, AsidSpace, BootInfo, HostPhysAddr, Priority};
use scenario::{LoadOrder, VmConfig};
use spin::Once;
use vcpu::VcpuBackend;
use virtio::blk::MemDisk;

use crate::boot::{FRAMES, MAX_CPUS};

mod config {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/scenario.rs"));
}
pub use config::{CACHE, SCENARIO};

/// Vector of the host timer that ends a guest's run at its next virtual timer deadline
/// (allocated in [`start`]; 0 before).
static GUEST_TIMER_VECTOR: AtomicU8 = AtomicU8::new(0);

/// Vector used to wake a parked pCPU when work is posted (allocated in [`start`]).
static WAKE_VECTOR: AtomicU8 = AtomicU8::new(0);

/// Which backend this machine runs guests with (chosen once at boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    /// SVM with this many ASIDs (CPUID 0x8000_000A EBX).
    Svm {
        asids: u32,
    },
    Vmx,
}

/// Each pCPU's SVM ASIDs: an ASID tags TLB entries of one core, so it only has to be unique
/// among the vCPUs made on that pCPU; when a pCPU runs out, its grants start over from 1 and the
/// first run flushes the whole TLB ([`platform::AsidSpace`]).
static ASIDS: [spin::Mutex<Option<AsidSpace>>; MAX_CPUS] =
    [const { spin::Mutex::new(None) }; MAX_CPUS];

/// An ASID for a vCPU about to be made on this pCPU.
fn asid_here(count: u32) -> AsidGrant {
    let pcpu = arch_x86::percpu::current().map_or(0, |c| c.index as usize);
    let Some(slot) = ASIDS.get(pcpu) else {
        return AsidSpace::new(count).assign();
    };
    let mut space = slot.lock();
    space.get_or_insert_with(|| AsidSpace::new(count)).assign()
}

/// This machine as the VMs see it.
pub struct X86 {
    /// `None`: no usable virtualization; no VM is made.
    backend: Option<Backend>,
}

/// A VM on this machine.
pub type Vm = ::vmm::Vm<X86>;

/// The VMs and the pCPUs they run on.
pub type Vmm = ::vmm::Vmm<X86>;

static VMM: Once<Vmm> = Once::new();

/// The VMs (none before [`start`]).
pub fn vmm() -> &'static Vmm {
    VMM.call_once(|| Vmm::new(X86 { backend: None }, MAX_CPUS))
}

/// Why a vCPU could not be made.
#[derive(Clone, Copy, Debug)]
pub enum VcpuSetupError {
    Vmx(VmxError),
    NoBackend,
}

impl core::fmt::Display for VcpuSetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VcpuSetupError::Vmx(e) => write!(f, "VMX setup failed: {e}"),
            VcpuSetupError::NoBackend => f.write_str("no usable virtualization backend"),
        }
    }
}

impl ::vmm::Platform for X86 {
    type Ram = GuestRam;
    type VcpuError = VcpuSetupError;

    fn zero_ram(&self, ram: &GuestRam) {
        ram.zero();
    }

    fn with_new_vcpu<W: WithVcpu>(
        &self,
        spec: VcpuSpec,
        init: &InitialState,
        body: W,
    ) -> Result<W::Output, VcpuSetupError> {
        match self.backend {
            Some(Backend::Svm { asids }) => {
                svm::enable_on_this_cpu();
                // Every new vCPU flushes the whole TLB on its first run (SvmVcpu::new), which
                // also covers a grant that wrapped.
                let grant = asid_here(asids);
                let mut vcpu = SvmVcpu::new(grant.asid, spec.slat_root, init);
                Ok(body.run(&mut vcpu))
            }
            Some(Backend::Vmx) => {
                let mut vcpu = vmx::enable_on_this_cpu()
                    .and_then(|()| VmxVcpu::new(spec.vm.0 + 1, spec.slat_root, init))
                    .map_err(VcpuSetupError::Vmx)?;
                Ok(body.run(&mut vcpu))
            }
            None => Err(VcpuSetupError::NoBackend),
        }
    }

    fn now(&self) -> u64 {
        cpu::rdtsc()
    }

    fn tsc_hz(&self) -> u64 {
        arch_x86::time::tsc_hz()
    }

    fn kick(&self, pcpu: u16) {
        kick(usize::from(pcpu));
    }

    fn arm_timer(&self, after: Option<u64>) {
        // The vector and mode were set when the pCPU took up guests. (Never called for a vCPU
        // whose LAPIC is passed through: the timer is the guest's.)
        lapic::arm_oneshot_count(after);
    }

    fn wait_for_interrupt(&self) {
        if lapic::passthrough_here() {
            // Interrupts pending here are the guest's: only an NMI (a kick) wakes this pCPU.
            cpu::wait_for_nmi();
        } else {
            cpu::wait_for_interrupt();
        }
    }

    fn take_host_interrupt(&self) {
        // Not called for a vCPU whose LAPIC is passed through (its pending interrupts are the
        // guest's: the exit handler knows).
        cpu::wait_for_interrupt_pending();
    }

    fn lapic_passthrough_for(&self, cfg: &VmConfig) -> bool {
        crate::rt_host::lapic_mode(cfg, self.backend == Some(Backend::Vmx))
            == rt::lapic_mode::LapicMode::Passthrough
    }

    fn enter_lapic_passthrough(&self, h: &vcpu::LapicHandover) {
        lapic::enter_passthrough(h);
    }

    fn leave_lapic_passthrough(&self) {
        lapic::leave_passthrough();
        lapic::set_oneshot_vector(GUEST_TIMER_VECTOR.load(Ordering::Relaxed));
    }

    fn send_vector(&self, pcpu: u16, vector: u8) {
        if let Some(apic) = crate::boot::apic_of(usize::from(pcpu)) {
            lapic::send_ipi(apic, vector);
        }
    }

    fn physical_eoi(&self) -> Option<u8> {
        lapic::passthrough_eoi()
    }

    fn prepare_pcpu(&self) {
        cpu::enable_xsave();
        crate::rt_host::program_this_pcpu();
        lapic::set_oneshot_vector(GUEST_TIMER_VECTOR.load(Ordering::Relaxed));
    }

    fn service_mailbox(&self, pcpu: u16, vcpu: Option<&dyn VcpuBackend>) {
        crate::mailbox::service(usize::from(pcpu), vcpu);
    }

    fn mailbox_pending(&self, pcpu: u16) -> bool {
        crate::mailbox::pending(usize::from(pcpu))
    }

    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        cpu::cpuid(leaf, subleaf)
    }

    fn xcr0_supported(&self) -> u64 {
        cpu::xcr0_supported()
    }

    fn load_xcr0(&self, value: u64) {
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
}

/// Creates every pre-launched VM of the scenario and starts its vCPUs.
pub fn start(boot: &BootInfo, caps: VirtCaps, online: &[bool]) {
    for (slot, owner) in [
        (&WAKE_VECTOR, "pCPU wake-up IPI"),
        (&GUEST_TIMER_VECTOR, "guest timer deadline (LAPIC timer)"),
    ] {
        match arch_x86::trap::allocate(owner, Priority::System, |_| {}) {
            Ok(v) => slot.store(v, Ordering::Relaxed),
            Err(e) => {
                error!("{e}; VMs are not started");
                return;
            }
        }
    }
    arch_x86::trap::set_nmi_kick_vector(WAKE_VECTOR.load(Ordering::Relaxed));
    info!(
        "scenario {:?} on board {:?}: {} VM(s)",
        SCENARIO.name,
        SCENARIO.board,
        SCENARIO.vms.len()
    );
    let backend = match caps {
        VirtCaps::Svm(c) if c.npt && !c.disabled_by_firmware => Backend::Svm { asids: c.asids },
        VirtCaps::Vmx(c) if c.ept && c.unrestricted_guest && c.vpid && !c.disabled_by_firmware => {
            Backend::Vmx
        }
        _ => {
            error!("no usable backend: {caps}; Quercus needs SVM with NPT, or VMX with EPT, VPID and unrestricted guest; VMs are not started");
            return;
        }
    };
    let vmm = VMM.call_once(|| {
        Vmm::new(
            X86 {
                backend: Some(backend),
            },
            MAX_CPUS,
        )
    });
    let iommu = crate::iommu_host::init();
    crate::pci_host::init(boot, iommu, crate::boot::apic_of);
    let hub = alloc::sync::Arc::new(io_hub(boot));
    let cat_refusal = crate::rt_host::init();
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
        if let Some(why) = crate::rt_host::refused(cfg, &cat_refusal) {
            error!("vm {}: not started: {why}", cfg.name);
            continue;
        }
        crate::rt_host::announce(cfg, backend == Backend::Vmx);
        let added = create(vmm.platform(), backend, cfg, boot, &hub)
            .and_then(|vm| vmm.add(vm).map_err(|e| alloc::format!("{e}")));
        if let Err(e) = added {
            error!("vm {}: not started: {e}", cfg.name);
        }
    }
    arm_fault_injection(vmm, boot);
    for vm in vmm.table().snapshot() {
        if let Err(e) = vmm.start(vm.id) {
            error!("vm {}: not started: {e}", vm.cfg.name);
        }
    }
}

/// The fault-injection test hook: `quercus.test.break_entry=VM@N` on the command line makes
/// vCPU 0 of VM `VM` fail its VM entry (a corrupted VMCB/VMCS) once it has taken `N` exits in
/// its first boot, to show that such a failure stops that VM alone.
const TEST_BREAK_ENTRY: &str = "quercus.test.break_entry=";

fn arm_fault_injection(vmm: &Vmm, boot: &BootInfo) {
    let cmdline = boot.cmdline.as_deref().unwrap_or("");
    for arg in cmdline.split_whitespace() {
        let Some(spec) = arg.strip_prefix(TEST_BREAK_ENTRY) else {
            continue;
        };
        let parsed = spec
            .split_once('@')
            .and_then(|(name, n)| Some((name, n.parse::<u64>().ok().filter(|&n| n > 0)?)));
        let Some((name, exits)) = parsed else {
            warn!("{arg}: want {TEST_BREAK_ENTRY}VM@EXITS (EXITS > 0); ignored");
            continue;
        };
        match vmm
            .table()
            .snapshot()
            .into_iter()
            .find(|vm| vm.cfg.name == name)
        {
            Some(vm) => {
                if let Some(slot) = vm.vcpus.first() {
                    slot.break_entry_after.store(exits, Ordering::Relaxed);
                    warn!("vm {name}: fault injection armed: vCPU 0's entry fails after {exits} exits");
                }
            }
            None => warn!("{arg}: no VM {name:?}; ignored"),
        }
    }
}

/// The backends of the scenario's virtio devices: each disk module borrowed
/// once (writable; read-only users get a read-only view), the switches, the
/// CPU's random-number instruction.
fn io_hub(boot: &BootInfo) -> IoHub {
    use alloc::vec::Vec;
    use scenario::VirtioKind;
    let mut hub = IoHub::empty(|pcpu| kick(usize::from(pcpu)));
    hub.passthrough = Some(&crate::pci_host::PROVIDER);
    let mut names: Vec<&'static str> = Vec::new();
    for v in SCENARIO.vms.iter().flat_map(|vm| vm.virtio) {
        if let VirtioKind::Blk { module, .. } = v.kind {
            if !names.contains(&module) {
                names.push(module);
            }
        }
    }
    for name in names {
        let Some(m) = boot
            .modules
            .iter()
            .find(|m| m.cmdline.split_whitespace().any(|w| w == name))
        else {
            error!("disk module {name:?} not found among the boot modules; its VMs get no disk");
            continue;
        };
        #[allow(unsafe_code)]
        // SAFETY: boot modules are kept out of the frame allocator; the
        // configurator forbids using a disk module as a kernel or initrd, and
        // each disk module is borrowed here once.
        let bytes = unsafe { arch_x86::phys::borrow_mut(m.range.start.0, m.range.len() as usize) };
        let Some(bytes) = bytes else {
            error!("disk module {name:?} lies outside mapped memory; its VMs get no disk");
            continue;
        };
        info!(
            "disk {name:?}: {} KiB at host {:#x}",
            bytes.len() >> 10,
            m.range.start.0
        );
        hub.disks.push((name, MemDisk::new(bytes, name)));
    }
    hub.switches = SCENARIO
        .switches
        .iter()
        .map(|s| virtio::switch::Switch::new(s.name))
        .collect();
    hub.shm = shared_regions();
    hub.links = SCENARIO
        .vuart_links
        .iter()
        .map(|l| (vmm::uart_link::UartLink::new(l.name), l.ends))
        .collect();
    match cpu::hw_random() {
        Some(cpu::HwRandom::Rdseed) => {
            hub.entropy = Some(|| alloc::boxed::Box::new(HwEntropy(cpu::HwRandom::Rdseed)))
        }
        Some(cpu::HwRandom::Rdrand) => {
            hub.entropy = Some(|| alloc::boxed::Box::new(HwEntropy(cpu::HwRandom::Rdrand)))
        }
        None => {
            if SCENARIO
                .vms
                .iter()
                .flat_map(|vm| vm.virtio)
                .any(|v| v.kind == VirtioKind::Rng)
            {
                warn!("the CPU has neither RDSEED nor RDRAND: virtio-rng devices are left out");
            }
        }
    }
    hub
}

/// Reserves and zeroes the memory of each of the scenario's shared regions (contiguous frames,
/// aligned to the region's size where the allocator can) and makes its doorbells. A region that
/// does not fit is left out with an error: its VMs run without its device.
fn shared_regions() -> alloc::vec::Vec<::vmm::shm::SharedRegion> {
    use alloc::vec::Vec;
    let mut regions = Vec::new();
    for shm in SCENARIO.shm {
        let frames = (shm.size / 4096) as usize;
        let block = {
            let mut f = FRAMES.lock();
            f.alloc_aligned(frames, shm.size)
                .or_else(|| f.alloc(frames))
        };
        let Some(host) = block else {
            error!(
                "shm {}: no {} KiB of contiguous free memory; its VMs do not get it",
                shm.name,
                shm.size >> 10
            );
            continue;
        };
        {
            #[allow(unsafe_code)]
            // SAFETY: the frames were just allocated for this region and are never freed; no
            // VM maps them yet (VMs are created after the hub), and the slice is dropped at the
            // end of this block.
            let bytes = unsafe { arch_x86::phys::owned_slice(host.0, shm.size as usize) };
            bytes.fill(0);
        }
        let peers: Vec<ivshmem::PeerInfo> = shm
            .peers
            .iter()
            .map(|p| ivshmem::PeerInfo {
                vm: p.vm,
                name: SCENARIO.vm_by_id(p.vm).map_or("?", |vm| vm.name),
                readonly: p.readonly,
            })
            .collect();
        info!(
            "shm {}: {} KiB at host {:#x}, VMs {:?}",
            shm.name,
            shm.size >> 10,
            host.0,
            peers.iter().map(|p| p.name).collect::<Vec<_>>()
        );
        regions.push(::vmm::shm::SharedRegion {
            cfg: shm,
            region: ivshmem::Region::new(shm.name, shm.size, host.0, &peers, || {
                arch_x86::time::uptime_us().saturating_mul(1000)
            }),
        });
    }
    regions
}

/// Entropy from the CPU's RDSEED or RDRAND.
struct HwEntropy(cpu::HwRandom);

impl virtio::rng::EntropySource for HwEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        for chunk in buf.chunks_mut(8) {
            let Some(v) = cpu::hw_random_u64(self.0) else {
                break;
            };
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
            n += chunk.len();
        }
        n
    }
}

/// Called by an idle pCPU: runs the vCPUs posted to it, if any.
pub fn run_posted(cpu_index: usize) {
    if let (Some(vmm), Ok(pcpu)) = (VMM.get(), u16::try_from(cpu_index)) {
        vmm.run_posted(pcpu);
    }
}

/// Interrupts pCPU `pcpu` so that it looks at its mailbox and its VM's controls: a wake-up IPI,
/// or an NMI on a real-time VM's pCPU (the `vmm` crate kicks those only for their lifecycle and
/// their own vCPUs; the NMI handler turns it into the wake-up vector pending on that pCPU, see
/// `arch_x86::trap::set_nmi_kick_vector`).
pub fn kick(pcpu: usize) {
    let vector = WAKE_VECTOR.load(Ordering::Relaxed);
    let Some(apic) = crate::boot::apic_of(pcpu) else {
        return;
    };
    if vector == 0 {
        return;
    }
    if crate::rt_host::is_rt_pcpu(pcpu) {
        lapic::send_nmi(apic);
    } else {
        lapic::send_ipi(apic, vector);
    }
}

/// Makes scenario VM `cfg`: its RAM, second-level tables and boot images, loaded.
fn create(
    x86: &X86,
    backend: Backend,
    cfg: &'static VmConfig,
    boot: &BootInfo,
    hub: &alloc::sync::Arc<IoHub>,
) -> Result<Vm, String> {
    use alloc::format;
    let size = cfg.memory.size;
    let frames = (size / 4096) as usize;
    let hpa = match crate::boot::fixed_ram(cfg.id) {
        Some(placed) => placed?,
        None => FRAMES.lock().alloc(frames).ok_or_else(|| {
            format!(
                "no {} MiB of contiguous free memory for its RAM",
                size >> 20
            )
        })?,
    };
    // A VM driving devices without an IOMMU has its RAM at its host addresses (the devices
    // DMA to the guest's physical addresses as if they were host ones).
    let layout = if SCENARIO.ram_at_host_addresses(cfg) {
        let layout = vcpu::RamLayout::identity(hpa.0, size).ok_or_else(|| {
            format!(
                "its RAM at host {hpa}+{size:#x} cannot have guest-physical = host-physical \
                 addresses (it must lie between 2 MiB and 3 GiB)"
            )
        })?;
        info!(
            "vm {}: RAM at host {hpa}..{:#x}, guest-physical = host-physical above 1 MiB \
             (its devices DMA without an IOMMU)",
            cfg.name,
            hpa.0 + size
        );
        layout
    } else {
        vcpu::RamLayout::new(size)
    };
    #[allow(unsafe_code)]
    // SAFETY: the frames were just taken from the allocator for this VM alone, or are its
    // fixed range, which boot kept out of the allocator and gives to this VM only.
    let ram = unsafe { GuestRam::new(hpa.0, layout) };
    if !cfg.pci_devices.is_empty() && crate::iommu_host::active() {
        crate::iommu_host::attach_vm(cfg, hpa, &vcpu::GuestMemory::layout(&ram))?;
    }

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
    let initrd = match cfg.initrd {
        None => None,
        Some(name) => Some(module_bytes(boot, "initrd", name)?),
    };
    let modules = cfg
        .modules
        .iter()
        .map(|m| module_bytes(boot, "Multiboot", m.name))
        .collect::<Result<alloc::vec::Vec<_>, String>>()?;

    #[allow(unsafe_code)]
    // SAFETY: every frame handed to the tables comes from the allocator and
    // belongs to these tables for the life of the VM.
    let mem = unsafe { FrameTables::new(|| FRAMES.lock().alloc(1).map(|a| a.0)) };
    let format = match backend {
        Backend::Svm { .. } => Format::Npt,
        Backend::Vmx => Format::Ept,
    };
    let mut slat = SecondLevelTables::new(format, PageSizes { huge_1g: false }, mem)
        .map_err(|e| format!("second-level tables: {e}"))?;
    // The tables map exactly the RAM ranges of the VM's layout (the list the
    // memory maps are made from); everything else exits as MMIO.
    for r in vcpu::GuestMemory::layout(&ram).ranges() {
        slat.map(
            GuestPhysAddr(r.gpa.0),
            HostPhysAddr(hpa.0 + r.offset),
            r.len,
            Perms::RWX,
            MemType::WriteBack,
        )
        .map_err(|e| format!("second-level tables: {e}"))?;
    }
    let slat_root = match backend {
        Backend::Svm { .. } => slat.ncr3(),
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
    let image = GuestImage {
        kernel: image,
        kind: ImageKind::of(cfg.kernel.kind),
        initrd,
        modules,
    };
    let mut vm = Vm::new(x86, cfg, ram, slat_root, image);
    if !cfg.pci_devices.is_empty() || SCENARIO.shm.iter().any(|r| r.peer_of(cfg.id).is_some()) {
        // Passed-through BARs and shared regions go straight into the tables where the guest
        // puts them.
        vm.set_slat_editor(alloc::boxed::Box::new(VmSlat(spin::Mutex::new(slat))));
    }
    vm.attach_io(hub.clone());
    vm.load(x86)?;
    Ok(vm)
}

/// A VM's second-level tables, kept for its passed-through BARs.
struct VmSlat<M: paging::TableMemory>(spin::Mutex<SecondLevelTables<M>>);

impl<M: paging::TableMemory + Send> ::vmm::SlatEditor for VmSlat<M> {
    fn map_mmio(&self, gpa: u64, len: u64, host: u64) -> Result<(), String> {
        self.0
            .lock()
            .map(
                GuestPhysAddr(gpa),
                HostPhysAddr(host),
                len,
                Perms::RW,
                MemType::Uncacheable,
            )
            .map(|_| ())
            .map_err(|e| alloc::format!("{e}"))
    }

    fn map_ram(&self, gpa: u64, len: u64, host: u64, writable: bool) -> Result<(), String> {
        self.0
            .lock()
            .map(
                GuestPhysAddr(gpa),
                HostPhysAddr(host),
                len,
                if writable { Perms::RW } else { Perms::R },
                MemType::WriteBack,
            )
            .map(|_| ())
            .map_err(|e| alloc::format!("{e}"))
    }

    fn unmap(&self, gpa: u64, len: u64) -> Result<(), String> {
        self.0
            .lock()
            .unmap(GuestPhysAddr(gpa), len)
            .map(|_| ())
            .map_err(|e| alloc::format!("{e}"))
    }
}

/// The bytes of the boot module called `name` (a word of its command line), which the scenario
/// gives a VM as its `role` (initrd, Multiboot) module.
fn module_bytes(boot: &BootInfo, role: &str, name: &str) -> Result<&'static [u8], String> {
    use alloc::format;
    let m = boot
        .modules
        .iter()
        .find(|m| m.cmdline.split_whitespace().any(|w| w == name))
        .ok_or_else(|| format!("{role} module {name:?} not found among the boot modules"))?;
    #[allow(unsafe_code)]
    // SAFETY: boot modules are excluded from the frame allocator and never written.
    unsafe { arch_x86::phys::borrow(m.range.start.0, m.range.len() as usize) }
        .ok_or_else(|| format!("module {name:?} lies outside mapped memory"))
}
