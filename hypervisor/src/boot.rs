//! Bring-up of the BSP and the APs.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use arch_x86::percpu::PerCpu;
use arch_x86::virt_caps::{self, VirtCaps};
use arch_x86::{console, cpu, lapic, phys, smp, time};
use log::{error, info, warn};
use platform::{
    BootInfo, FrameAllocator, HostPhysAddr, MemoryMap, PhysMemory, PhysRange, PhysReadError,
    Topology,
};

use crate::fatal;

/// Upper bound on pCPUs Quercus manages.
pub const MAX_CPUS: usize = 64;
const MB1_MAGIC: u32 = 0x2BAD_B002;
const MB2_MAGIC: u32 = 0x36D7_6289;
/// Heap size once the memory map is known (on top of the bootstrap heap).
const HEAP_BYTES: u64 = 16 << 20;
/// How long the BSP waits for one AP to report in.
const AP_TIMEOUT_MS: u64 = 500;
/// Command-line flag of the boot-input test: corrupt the loader's memory map.
const TEST_CORRUPT_MMAP: &str = "quercus.test.corrupt_mmap";
/// Command-line flag of the boot-input test: hide the firmware's MADT.
const TEST_CORRUPT_MADT: &str = "quercus.test.corrupt_madt";
/// Command-line flag of the emulator-quirk test: SVM VMCBs without the #DF intercept.
const TEST_SVM_NO_DF_INTERCEPT: &str = "quercus.test.svm_no_df_intercept";

fn has_flag(boot: &BootInfo, flag: &str) -> bool {
    boot.cmdline
        .as_deref()
        .is_some_and(|c| c.split_whitespace().any(|w| w == flag))
}

static ONLINE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static ONLINE_COUNT: AtomicU32 = AtomicU32::new(0);
/// APIC ID of each online pCPU, by index.
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];
/// The physical frame allocator, shared by everything that needs frames after boot.
pub static FRAMES: spin::Mutex<FrameAllocator> = spin::Mutex::new(FrameAllocator::new());

static IOAPICS: spin::Once<Vec<platform::IoApic>> = spin::Once::new();

/// The physical IOAPICs from the MADT.
pub fn ioapics() -> &'static [platform::IoApic] {
    IOAPICS.get().map_or(&[], Vec::as_slice)
}

/// The APIC ID of online pCPU `index`.
pub fn apic_of(index: usize) -> Option<u32> {
    APIC_IDS
        .get(index)
        .map(|a| a.load(Ordering::Acquire))
        .filter(|&a| a != u32::MAX)
}

/// Physical memory as the boot page tables map it.
struct IdentityMemory;

impl PhysMemory for IdentityMemory {
    fn read(&self, addr: HostPhysAddr, buf: &mut [u8]) -> Result<(), PhysReadError> {
        if phys::read(addr.0, buf) {
            Ok(())
        } else {
            Err(PhysReadError {
                addr,
                len: buf.len(),
            })
        }
    }
}

fn parse_boot_info(magic: u32, info: u32) -> BootInfo {
    let addr = HostPhysAddr(u64::from(info));
    let parsed = match magic {
        MB1_MAGIC => BootInfo::parse_mb1(addr, &IdentityMemory),
        MB2_MAGIC => BootInfo::parse_mb2(addr, &IdentityMemory),
        other => fatal!(
            "boot loader magic {other:#x} is neither Multiboot1 ({MB1_MAGIC:#x}) nor Multiboot2 ({MB2_MAGIC:#x})"
        ),
    };
    match parsed {
        Ok(b) => b,
        Err(e) => fatal!("multiboot information at {addr} is unusable: {e}"),
    }
}

pub fn bsp_main(magic: u32, info: u32) -> ! {
    time::mark_boot();
    arch_x86::heap::init_bootstrap();
    lapic::register_cpu(lapic::cpuid_apic_id(), 0);
    arch_x86::pic::disable();
    console::init(log::LevelFilter::Info);
    let tsc_source = time::calibrate();
    println_banner();
    if tsc_source == time::TscSource::Assumed {
        warn!("PIT did not count: assuming a 1 GHz TSC; timestamps and timeouts are approximate");
    }
    info!(
        "TSC {}.{:03} MHz (PIT calibrated)",
        time::tsc_hz() / 1_000_000,
        time::tsc_hz() / 1000 % 1000
    );

    let mut boot = parse_boot_info(magic, info);
    if let Some(level) = boot.cmdline.as_deref().and_then(|c| {
        c.split_whitespace()
            .find_map(|w| w.strip_prefix("quercus.loglevel="))
    }) {
        match level.parse::<log::LevelFilter>() {
            Ok(l) => console::set_level(l),
            Err(_) => warn!(
                "quercus.loglevel={level}: not a level (off, error, warn, info, debug, trace)"
            ),
        }
    }
    if has_flag(&boot, TEST_CORRUPT_MMAP) {
        warn!("test hook {TEST_CORRUPT_MMAP}: corrupting the loader's memory map before parsing it again");
        if magic != MB1_MAGIC || !phys::corrupt_mb1_memory_map(u64::from(info)) {
            fatal!("test hook {TEST_CORRUPT_MMAP} needs a Multiboot1 loader with a memory map");
        }
        boot = parse_boot_info(magic, info);
    }
    info!(
        "boot loader: {:?}{}, command line: {:?}, {} module(s)",
        boot.loader,
        boot.loader_name
            .as_deref()
            .map(|n| alloc::format!(" ({n})"))
            .unwrap_or_default(),
        boot.cmdline.as_deref().unwrap_or(""),
        boot.modules.len()
    );
    for (i, m) in boot.modules.iter().enumerate() {
        info!(
            "module {i}: {}..{} {:?}",
            m.range.start, m.range.end, m.cmdline
        );
    }

    let frames = init_memory(&boot);
    let stats = frames.stats();
    *FRAMES.lock() = frames;
    info!(
        "memory: {} MiB usable for the frame allocator, {} MiB heap",
        (stats.total_frames * 4096) >> 20,
        HEAP_BYTES >> 20
    );

    let bsp_apic = lapic::cpuid_apic_id();
    PerCpu::new(0, bsp_apic).install();
    lapic::init_this_cpu();
    ONLINE[0].store(true, Ordering::Release);
    APIC_IDS[0].store(bsp_apic, Ordering::Release);
    ONLINE_COUNT.store(1, Ordering::Release);

    let topology = read_topology(&boot);
    let caps = virt_caps::probe();
    let vendor = virt_caps::vendor();
    info!(
        "CPU vendor {}",
        core::str::from_utf8(&vendor).unwrap_or("?")
    );
    info!("virtualization: {caps}");
    match caps {
        VirtCaps::None => warn!("this CPU has no hardware virtualization: guests cannot run"),
        VirtCaps::Vmx(c) if c.disabled_by_firmware => {
            warn!("VMX is locked off in IA32_FEATURE_CONTROL")
        }
        VirtCaps::Svm(c) if c.disabled_by_firmware => {
            warn!("SVM is disabled by firmware (VM_CR.SVMDIS)")
        }
        _ => {}
    }

    lapic::calibrate_timer();
    start_aps(&topology, bsp_apic);
    let online = ONLINE_COUNT.load(Ordering::Acquire);
    let cpus = topology
        .cpus
        .iter()
        .filter(|c| c.enabled || c.online_capable)
        .count();
    info!(
        "{online} of {cpus} CPUs online, {} MiB usable memory",
        (stats.total_frames * 4096) >> 20
    );
    arch_x86::println!("quercus: ready, {online} pCPUs online");
    let online: Vec<bool> = ONLINE.iter().map(|o| o.load(Ordering::Acquire)).collect();
    IOAPICS.call_once(|| topology.ioapics.clone());
    if has_flag(&boot, TEST_SVM_NO_DF_INTERCEPT) {
        warn!(
            "test hook {TEST_SVM_NO_DF_INTERCEPT}: SVM guests' double faults are not intercepted"
        );
        arch_x86::svm::test_disable_df_intercept();
    }
    crate::vmm::start(&boot, caps, &online);
    crate::shell_host::run(online.iter().filter(|&&o| o).count() as u16)
}

fn println_banner() {
    arch_x86::println!(
        "Quercus {} - a type-1 hypervisor for embedded and edge systems",
        env!("CARGO_PKG_VERSION")
    );
}

/// Memory map -> frame allocator -> heap. Returns the allocator.
fn init_memory(boot: &BootInfo) -> FrameAllocator {
    let map = match MemoryMap::new(&boot.memory_map) {
        Ok(m) => m,
        Err(e) => fatal!("memory map from the boot loader is unusable: {e}"),
    };
    for r in map.regions() {
        info!("e820 {}..{} {:?}", r.range.start, r.range.end, r.kind);
    }
    let (img_start, img_end) = phys::image_range();
    let mut exclude: Vec<PhysRange> = boot.reserved_ranges();
    exclude.push(PhysRange::new(
        HostPhysAddr(img_start),
        HostPhysAddr(img_end),
    ));
    let usable = match map.usable_ranges(&exclude) {
        Ok(u) => u,
        Err(e) => fatal!("memory map from the boot loader is unusable: {e}"),
    };
    // VMs placed at a fixed host address (scenario `host_base`) get exactly that range, kept
    // out of the frame allocator; one that is not free RAM does not start.
    let mut fixed = Vec::new();
    for vm in crate::vmm::SCENARIO.vms {
        let Some(base) = vm.memory.host_base else {
            continue;
        };
        let range = PhysRange::from_base_len(HostPhysAddr(base), vm.memory.size);
        let placed = match range {
            Some(r) if usable.iter().any(|u| u.contains_range(&r)) => {
                exclude.push(r);
                Ok(r.start)
            }
            _ => Err(alloc::format!(
                "its host_base {base:#x}+{:#x} is not free RAM on this machine",
                vm.memory.size
            )),
        };
        fixed.push((vm.id, placed));
    }
    let usable = if fixed.iter().any(|(_, p)| p.is_ok()) {
        match map.usable_ranges(&exclude) {
            Ok(u) => u,
            Err(e) => fatal!("memory map from the boot loader is unusable: {e}"),
        }
    } else {
        usable
    };
    FIXED_RAM.call_once(|| fixed);
    crate::shell_host::set_host_ram(
        map.regions()
            .iter()
            .filter(|r| r.kind == platform::MemoryKind::Usable)
            .map(|r| r.range)
            .collect(),
    );
    let limit = HostPhysAddr(arch_x86::boot::IDENTITY_MAPPED_GIB << 30);
    let mut frames = FrameAllocator::new();
    for r in &usable {
        if r.start >= limit {
            warn!(
                "memory {}..{} lies above the identity map and is not used yet",
                r.start, r.end
            );
            continue;
        }
        let r = PhysRange::new(r.start, r.end.min(limit));
        if let Err(e) = frames.add_range(r) {
            warn!("memory {}..{} not usable: {e}", r.start, r.end);
        }
    }
    let heap_frames = (HEAP_BYTES / 4096) as usize;
    let Some(heap) = frames.alloc(heap_frames) else {
        fatal!(
            "memory map: not enough contiguous usable memory for the {} MiB heap ({} frames free)",
            HEAP_BYTES >> 20,
            frames.stats().free_frames
        )
    };
    info!("heap: {:#x}..{:#x}", heap.0, heap.0 + HEAP_BYTES);
    #[allow(unsafe_code)]
    // SAFETY: these frames were just taken from the allocator and are never freed.
    unsafe {
        arch_x86::heap::grow(heap.0, HEAP_BYTES)
    };
    frames
}

fn read_topology(boot: &BootInfo) -> Topology {
    let rsdp = boot.rsdp.as_ref().map(|r| r.addr.0);
    let tables = match arch_x86::acpi_handler::find_tables(rsdp) {
        Ok(t) => t,
        Err(e) => fatal!(
            "ACPI tables not found: {e}; Quercus needs the MADT to find the CPUs and IOAPICs"
        ),
    };
    if has_flag(boot, TEST_CORRUPT_MADT) {
        warn!("test hook {TEST_CORRUPT_MADT}: breaking the MADT signature before reading it");
        if !arch_x86::acpi_handler::corrupt_madt_signature(&tables) {
            fatal!("test hook {TEST_CORRUPT_MADT}: the firmware has no MADT to break");
        }
    }
    read_pci_tables(&tables);
    let topo = match Topology::from_acpi_via(&tables, &IdentityMemory) {
        Ok(t) => t,
        Err(e) => fatal!("ACPI MADT unusable: {e}"),
    };
    info!(
        "ACPI: LAPIC at {}, {} CPU(s) in the MADT, {} IOAPIC(s), 8259 {}",
        topo.local_apic_addr,
        topo.cpus.len(),
        topo.ioapics.len(),
        if topo.pcat_compat {
            "present"
        } else {
            "absent"
        }
    );
    for io in &topo.ioapics {
        info!(
            "IOAPIC id {} at {} GSI base {}",
            io.id, io.addr, io.gsi_base
        );
    }
    topo
}

/// RAM of the VMs with a fixed host address: (VM id, its base or why it cannot have it).
static FIXED_RAM: spin::Once<Vec<(u16, Result<HostPhysAddr, alloc::string::String>)>> =
    spin::Once::new();

/// The fixed host base of VM `id`'s RAM (None: it has none, the frame allocator places it).
pub fn fixed_ram(id: u16) -> Option<Result<HostPhysAddr, alloc::string::String>> {
    FIXED_RAM
        .get()?
        .iter()
        .find(|(vm, _)| *vm == id)
        .map(|(_, r)| r.clone())
}

/// Copies of the firmware's DMAR (VT-d) and IVRS (AMD-Vi) tables for the IOMMU drivers.
pub struct FirmwarePci {
    pub dmar: Option<Vec<u8>>,
    pub ivrs: Option<Vec<u8>>,
}

static FIRMWARE_PCI: spin::Once<FirmwarePci> = spin::Once::new();

/// The firmware's PCI tables (empty before the ACPI tables are read).
pub fn firmware_pci() -> &'static FirmwarePci {
    FIRMWARE_PCI.call_once(|| FirmwarePci {
        dmar: None,
        ivrs: None,
    })
}

fn read_pci_tables(tables: &acpi::AcpiTables<arch_x86::acpi_handler::IdentityMapped>) {
    use arch_x86::acpi_handler::{ecam_window, table_bytes, RawTable};
    let ecam = ecam_window(tables);
    if let Some((base, last_bus)) = ecam {
        arch_x86::pci::set_ecam(base, last_bus);
        info!("PCI: ECAM at {base:#x} for buses 0-{last_bus}");
    } else {
        info!("PCI: no MCFG, configuration mechanism #1 (0xCF8)");
    }
    FIRMWARE_PCI.call_once(|| FirmwarePci {
        dmar: table_bytes(tables, RawTable::Dmar),
        ivrs: table_bytes(tables, RawTable::Ivrs),
    });
}

fn start_aps(topology: &Topology, bsp_apic: u32) {
    let aps = topology
        .cpus
        .iter()
        .filter(|c| c.enabled && c.apic_id != bsp_apic);
    for (i, cpu) in aps.enumerate() {
        let index = i as u32 + 1;
        if index as usize >= MAX_CPUS {
            warn!(
                "more than {MAX_CPUS} CPUs: APIC {} and later stay offline",
                cpu.apic_id
            );
            break;
        }
        let percpu = PerCpu::new(index, cpu.apic_id);
        let boot = smp::ApBoot {
            apic_id: cpu.apic_id,
            stack_top: arch_x86::percpu::alloc_ap_stack(),
            entry: ap_trampoline_target,
            arg: percpu as *const PerCpu as u64,
        };
        match smp::start_ap(&boot, &ONLINE[index as usize], AP_TIMEOUT_MS) {
            Ok(()) => {
                ONLINE_COUNT.fetch_add(1, Ordering::AcqRel);
                APIC_IDS[index as usize].store(cpu.apic_id, Ordering::Release);
            }
            Err(e) => error!("cpu{index} (APIC {}) failed to start: {e}", cpu.apic_id),
        }
    }
}

extern "C" fn ap_trampoline_target(percpu: u64) -> ! {
    ap_main(percpu)
}

fn ap_main(percpu: u64) -> ! {
    let Some(pc) = arch_x86::percpu::from_trampoline_arg(percpu) else {
        fatal!("AP started without its per-CPU area")
    };
    pc.install();
    lapic::init_this_cpu();
    info!("online (APIC {})", pc.apic_id);
    ONLINE[pc.index as usize].store(true, Ordering::Release);
    idle(pc.index as usize)
}

/// The idle loop of every pCPU: sleep until woken, run any vCPU posted here.
fn idle(index: usize) -> ! {
    loop {
        crate::vmm::run_posted(index);
        crate::mailbox::service(index, None);
        cpu::wait_for_interrupt();
    }
}
