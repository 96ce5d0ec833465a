//! The machine's PCI functions: enumerated once at boot, the ones the scenario gives to VMs
//! checked against what is there, each given host vectors for its messages, reset and handed
//! to its VM as a [`PassthroughDevice`] at every load of that VM.
//!
//! A function that fails a check is not given to anyone: its VM does not start, with the
//! reason on the console. Functions no VM owns stay as firmware left them and no VM sees them.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use arch_x86::ioapic::IoapicInput;
use arch_x86::pci::{config_read32, config_write32, port_read, port_write, MmioRegion};
use arch_x86::trap::TrapFrame;
use log::{error, info, warn};
use passthrough::{
    place_bars, scan, BarKind, ConfigAccess, HostFunction, IrqPending, PassthroughDevice,
    PhysFunction, StormGuard,
};
use platform::{BootInfo, MemoryKind, Priority};
use scenario::{DmaIsolation, PassthroughConfig, VmConfig};
use spin::Once;
use vdev::{Bdf, MsiMessage};

use crate::vmm::SCENARIO;

/// Guest-physical window of passthrough memory BARs (inside the VM's PCI MMIO window, above
/// the test and virtio devices).
const GUEST_MEM_WINDOW: core::ops::Range<u64> = 0xD000_0000..0xE000_0000;
/// Guest port window of passthrough I/O BARs.
const GUEST_IO_WINDOW: core::ops::Range<u64> = 0xD000..0x1_0000;
/// How long a Function Level Reset takes at most (PCIe: 100 ms).
const FLR_WAIT_US: u64 = 100_000;
/// D3hot to D0 recovery time (PCI PM 1.2: 10 ms).
const PM_WAIT_US: u64 = 10_000;

/// Physical configuration space through the arch tier.
struct HostConfig;

impl ConfigAccess for HostConfig {
    fn read32(&mut self, bdf: Bdf, offset: u16) -> u32 {
        config_read32(bdf.raw(), offset)
    }

    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32) {
        config_write32(bdf.raw(), offset, value)
    }
}

/// A function a VM owns.
pub struct Owned {
    pub vm: &'static VmConfig,
    pub cfg: &'static PassthroughConfig,
    pub phys: Option<PhysFunction>,
    /// Why it cannot be given to its VM (checked at boot).
    pub problem: Option<String>,
    irq: Arc<IrqPending>,
    /// Host vector of message n.
    pub vectors: Vec<u8>,
    /// The LAPIC its messages go to (vCPU 0's pCPU).
    pub dest_apic: u32,
    /// What the real function sends for each message: through an interrupt remapping entry
    /// when the IOMMU remaps interrupts, else the plain message to `dest_apic`.
    messages: Vec<MsiMessage>,
    /// Whether `messages` go through interrupt remapping.
    pub remapped: bool,
    /// The I/O APIC input its INTx drives, routed to the hypervisor (None: INTx not given),
    /// and the host vector it raises.
    intx: Option<IoapicInput>,
    pub intx_vector: Option<u8>,
    news: Once<Arc<AtomicBool>>,
    /// Host interrupts taken.
    pub interrupts: AtomicU64,
    /// DMA faults the IOMMU reported for it.
    pub dma_faults: AtomicU64,
    /// Interrupt storm detection; whether pCPU 0 logged the storm.
    storm: StormGuard,
    storm_reported: AtomicBool,
    /// Resets done, and how.
    pub resets: AtomicU64,
    pub reset_method: &'static str,
}

/// Everything known about the machine's PCI functions.
pub struct PciHost {
    pub functions: Vec<PhysFunction>,
    pub owned: Vec<Owned>,
}

static PCI: Once<PciHost> = Once::new();
/// The message number of a route that is the function's INTx.
const INTX_ROUTE: u32 = 0xFF;
/// Host vector -> (owned index + 1) << 8 | message (or [`INTX_ROUTE`]).
static ROUTES: [AtomicU32; 256] = [const { AtomicU32::new(0) }; 256];

/// Enumerates the functions and prepares the scenario's passthrough: call before the VMs are
/// made. `iommu` says whether DMA remapping is active.
pub fn init(boot: &BootInfo, iommu: bool, apic_of: impl Fn(usize) -> Option<u32>) {
    let limit = boot.cmdline.as_deref().and_then(|c| {
        c.split_whitespace()
            .find_map(|w| w.strip_prefix("quercus.storm_limit="))
            .and_then(|n| n.parse::<u32>().ok())
    });
    if let Some(n) = limit.filter(|&n| n > 0) {
        STORM_LIMIT.store(n, Ordering::Relaxed);
        info!("PCI: interrupt storm limit {n} per {STORM_WINDOW_MS} ms");
    }
    let functions = scan(&mut HostConfig);
    let mechanism = match arch_x86::pci::ecam() {
        Some(base) => format!("ECAM at {base:#x}"),
        None => "mechanism #1 (0xCF8)".to_string(),
    };
    info!("PCI: {} functions ({mechanism})", functions.len());
    for f in &functions {
        let owner = SCENARIO
            .vms
            .iter()
            .find(|vm| vm.pci_devices.iter().any(|d| d.host_bdf == f.bdf.raw()))
            .map_or("-", |vm| vm.name);
        info!("PCI {f} owner {owner}");
    }
    let any = SCENARIO.vms.iter().any(|vm| !vm.pci_devices.is_empty());
    if any && !iommu && SCENARIO.dma_isolation == DmaIsolation::Off {
        warn!("DMA isolation is OFF (scenario dma_isolation = \"off\"): passed-through devices can read and write all of memory");
    }
    let mut owned = Vec::new();
    for vm in SCENARIO.vms {
        for cfg in vm.pci_devices {
            let bdf = Bdf::from_raw(cfg.host_bdf);
            let phys = functions.iter().find(|f| f.bdf == bdf).cloned();
            let mut o = Owned {
                vm,
                cfg,
                phys: None,
                problem: None,
                irq: Arc::new(IrqPending::default()),
                vectors: Vec::new(),
                dest_apic: vm
                    .pcpus
                    .first()
                    .and_then(|&p| apic_of(usize::from(p)))
                    .unwrap_or(0),
                messages: Vec::new(),
                remapped: false,
                intx: None,
                intx_vector: None,
                news: Once::new(),
                interrupts: AtomicU64::new(0),
                dma_faults: AtomicU64::new(0),
                storm: StormGuard::new(),
                storm_reported: AtomicBool::new(false),
                resets: AtomicU64::new(0),
                reset_method: "none",
            };
            o.problem = check(boot, cfg, phys.as_ref(), iommu).err();
            if let Some(p) = phys {
                o.reset_method = reset_method(&p);
                o.phys = Some(p);
            }
            owned.push(o);
        }
    }
    // Host vectors, then the routes the handler follows.
    for (i, o) in owned.iter_mut().enumerate() {
        let Some(phys) = &o.phys else { continue };
        if o.problem.is_some() {
            continue;
        }
        let count = match (phys.caps.msix, phys.caps.msi) {
            (Some(m), _) => usize::from(m.entries).min(passthrough::device::MAX_MESSAGES),
            (None, Some(_)) => 1,
            (None, None) => 0,
        };
        for n in 0..count {
            match arch_x86::trap::allocate("passthrough MSI", Priority::Device, passthrough_irq) {
                Ok(v) => {
                    ROUTES[usize::from(v)]
                        .store(((i as u32 + 1) << 8) | n as u32, Ordering::Release);
                    o.vectors.push(v);
                }
                Err(e) => {
                    o.problem = Some(format!("{e}"));
                    break;
                }
            }
        }
        if let Err(e) = route_intx(o, i) {
            o.problem = Some(e);
        }
        for &v in &o.vectors {
            let plain = MsiMessage {
                address: 0xFEE0_0000 | u64::from(o.dest_apic & 0xFF) << 12,
                data: u32::from(v),
            };
            match crate::iommu_host::remap_msi(o.cfg.host_bdf, v, o.dest_apic) {
                None => o.messages.push(plain),
                Some(Ok(m)) => {
                    o.remapped = true;
                    o.messages.push(m);
                }
                Some(Err(e)) => {
                    o.problem = Some(e);
                    break;
                }
            }
        }
    }
    for o in &owned {
        let bdf = Bdf::from_raw(o.cfg.host_bdf);
        match &o.problem {
            Some(p) => error!("vm {}: PCI {bdf} cannot be passed through: {p}", o.vm.name),
            None => info!(
                "vm {}: owns PCI {bdf} as 00:{:02x}.{} ({} host vector(s) to APIC {}{}, reset: {})",
                o.vm.name,
                o.cfg.guest_slot,
                bdf.function(),
                o.vectors.len(),
                o.dest_apic,
                if o.remapped {
                    " through interrupt remapping"
                } else {
                    ""
                },
                o.reset_method
            ),
        }
    }
    PCI.call_once(|| PciHost { functions, owned });
}

/// Routes the INTx of owned function `o` (index `i`) to a host vector when the board names its
/// GSI: the I/O APIC input is programmed masked (level, active-low, to vCPU 0's pCPU) and
/// unmasked when its VM gets the function.
fn route_intx(o: &mut Owned, i: usize) -> Result<(), String> {
    let (Some(gsi), Some(phys)) = (o.cfg.host_gsi, &o.phys) else {
        return Ok(());
    };
    if phys.interrupt_pin == 0 {
        return Ok(());
    }
    let gsi = u32::from(gsi);
    let ioapic = crate::boot::ioapics()
        .iter()
        .filter(|a| a.gsi_base <= gsi)
        .max_by_key(|a| a.gsi_base)
        .ok_or_else(|| format!("no I/O APIC serves its GSI {gsi}"))?;
    let input = IoapicInput::new(ioapic.addr.0, gsi - ioapic.gsi_base)
        .ok_or_else(|| format!("I/O APIC {} has no input for GSI {gsi}", ioapic.id))?;
    let v = arch_x86::trap::allocate("passthrough INTx", Priority::Device, passthrough_intx)
        .map_err(|e| format!("{e}"))?;
    ROUTES[usize::from(v)].store(((i as u32 + 1) << 8) | INTX_ROUTE, Ordering::Release);
    let rte = match crate::iommu_host::remap_ioapic(ioapic.id, v, o.dest_apic) {
        Some(r) => r?,
        // Fixed, physical destination, active-low (bit 13), level (bit 15), masked (bit 16).
        None => u64::from(v) | 1 << 13 | 1 << 15 | 1 << 16 | u64::from(o.dest_apic & 0xFF) << 56,
    };
    input.program(rte);
    o.intx = Some(input);
    o.intx_vector = Some(v);
    Ok(())
}

/// Why `cfg` cannot be passed through as found (`phys`).
fn check(
    boot: &BootInfo,
    cfg: &PassthroughConfig,
    phys: Option<&PhysFunction>,
    iommu: bool,
) -> Result<(), String> {
    let Some(f) = phys else {
        return Err("no such function on this machine".into());
    };
    if (f.vendor_id, f.device_id) != (cfg.vendor_id, cfg.device_id) {
        return Err(format!(
            "the board file says {:04x}:{:04x}, the machine has {:04x}:{:04x}",
            cfg.vendor_id, cfg.device_id, f.vendor_id, f.device_id
        ));
    }
    if f.is_bridge() || f.is_host_bridge() || f.header_type > 1 {
        return Err("a bridge cannot be passed through".into());
    }
    if !iommu && SCENARIO.dma_isolation == DmaIsolation::Iommu {
        return Err("no IOMMU is active, so its DMA could reach all of memory; a scenario that accepts that says dma_isolation = \"off\"".into());
    }
    for b in &f.bars {
        if b.base == 0 {
            return Err(format!("BAR {} was not assigned by the firmware", b.index));
        }
        if b.kind == BarKind::Io {
            if b.base + b.size > 0x1_0000 {
                return Err(format!(
                    "I/O BAR {} at {:#x} is past port 0xFFFF",
                    b.index, b.base
                ));
            }
            continue;
        }
        let end = b.base.saturating_add(b.size);
        if end > arch_x86::boot::IDENTITY_MAPPED_GIB << 30 {
            return Err(format!(
                "BAR {} at {:#x} lies above the hypervisor's identity map",
                b.index, b.base
            ));
        }
        let ram = boot.memory_map.iter().find(|r| {
            r.kind != MemoryKind::Reserved && r.range.start.0 < end && b.base < r.range.end.0
        });
        if let Some(r) = ram {
            return Err(format!(
                "BAR {} at {:#x}+{:#x} overlaps memory {}..{}",
                b.index, b.base, b.size, r.range.start, r.range.end
            ));
        }
    }
    Ok(())
}

/// How a function is reset between owners.
fn reset_method(f: &PhysFunction) -> &'static str {
    if f.caps.flr {
        "FLR"
    } else if f.caps.pm.is_some() && !f.caps.no_soft_reset {
        "D3hot-D0"
    } else {
        "none (the device has neither FLR nor a soft PM reset)"
    }
}

/// Resets `f` by the method it supports, keeping the firmware's BAR assignment.
fn reset(f: &PhysFunction) {
    let bdf = f.bdf.raw();
    let saved: Vec<u32> = (0x10..0x28)
        .step_by(4)
        .map(|o| config_read32(bdf, o))
        .collect();
    let line = config_read32(bdf, 0x3C);
    if let (true, Some(pcie)) = (f.caps.flr, f.caps.pcie) {
        let devctl = u16::from(pcie) + 8;
        // Quiet first (no bus mastering), then Initiate FLR (Device Control bit 15).
        config_write32(bdf, 0x04, config_read32(bdf, 0x04) & 0xFFFF & !0x4);
        let v = config_read32(bdf, devctl);
        config_write32(bdf, devctl, (v & 0xFFFF) | 1 << 15);
        arch_x86::time::delay_us(FLR_WAIT_US);
    } else if let (Some(pm), false) = (f.caps.pm, f.caps.no_soft_reset) {
        let pmcsr = u16::from(pm) + 4;
        let v = config_read32(bdf, pmcsr);
        config_write32(bdf, pmcsr, (v & !3) | 3);
        arch_x86::time::delay_us(PM_WAIT_US);
        config_write32(bdf, pmcsr, v & !3);
        arch_x86::time::delay_us(PM_WAIT_US);
    } else {
        return;
    }
    for (i, v) in saved.into_iter().enumerate() {
        config_write32(bdf, 0x10 + 4 * i as u16, v);
    }
    config_write32(bdf, 0x3C, line);
}

/// More host interrupts than this from one function within [`STORM_WINDOW_MS`] is a storm
/// (the hypervisor command line's `quercus.storm_limit=N` sets another).
static STORM_LIMIT: AtomicU32 = AtomicU32::new(20_000);
const STORM_WINDOW_MS: u64 = 100;

/// The owned function a host vector is routed from, after the storm check: None when the
/// interrupt is to be dropped (no route, or the function floods and was silenced).
fn routed(vector: u64) -> Option<(&'static Owned, u32)> {
    let route = ROUTES
        .get(vector as usize)
        .map_or(0, |r| r.load(Ordering::Acquire));
    let pci = PCI.get()?;
    let o = pci.owned.get(((route >> 8).checked_sub(1))? as usize)?;
    o.interrupts.fetch_add(1, Ordering::Relaxed);
    let window = arch_x86::time::tsc_hz() / 1000 * STORM_WINDOW_MS;
    let limit = STORM_LIMIT.load(Ordering::Relaxed);
    if o.storm.tripped() || o.storm.note(arch_x86::cpu::rdtsc(), window, limit) {
        silence(o);
        return None;
    }
    Some((o, route & 0xFF))
}

/// Stops a flooding function's interrupts at the source (MSI and MSI-X off, INTx disabled and
/// its I/O APIC input masked) until its VM restarts; pCPU 0 reports it.
fn silence(o: &Owned) {
    let Some(phys) = &o.phys else { return };
    let bdf = phys.bdf.raw();
    if let Some(input) = &o.intx {
        input.set_masked(true);
    }
    let command = config_read32(bdf, 0x04) & 0xFFFF;
    config_write32(bdf, 0x04, command | 1 << 10);
    if let Some(m) = phys.caps.msi {
        let c = config_read32(bdf, u16::from(m.offset));
        config_write32(bdf, u16::from(m.offset), c & !(1 << 16));
    }
    if let Some(m) = phys.caps.msix {
        let c = config_read32(bdf, u16::from(m.offset));
        config_write32(bdf, u16::from(m.offset), (c & !(1 << 31)) | 1 << 30);
    }
}

/// Logs (on pCPU 0) each function silenced for an interrupt storm since the last call.
pub fn report_storms() {
    let Some(pci) = PCI.get() else { return };
    for o in &pci.owned {
        if o.storm.tripped() && !o.storm_reported.swap(true, Ordering::AcqRel) {
            error!(
                "vm {}: PCI {} floods interrupts (more than {} in {STORM_WINDOW_MS} ms): silenced until the VM restarts",
                o.vm.name,
                Bdf::from_raw(o.cfg.host_bdf),
                STORM_LIMIT.load(Ordering::Relaxed)
            );
        }
    }
}

/// The handler of every passthrough vector: the message's pending bit, the VM's news.
fn passthrough_irq(frame: &mut TrapFrame) {
    let Some((o, message)) = routed(frame.vector) else {
        return;
    };
    let route = message;
    o.irq.raise(route);
    if let Some(news) = o.news.get() {
        news.store(true, Ordering::Release);
    }
}

/// The handler of a passed-through function's INTx: its input stays masked until the guest's
/// EOI (a level that would fire again at once otherwise), the VM hears of it.
fn passthrough_intx(frame: &mut TrapFrame) {
    let Some((o, _)) = routed(frame.vector) else {
        return;
    };
    if let Some(input) = &o.intx {
        input.set_masked(true);
    }
    o.irq.raise_intx();
    if let Some(news) = o.news.get() {
        news.store(true, Ordering::Release);
    }
}

/// The real function behind a [`PassthroughDevice`].
struct Function {
    bdf: u16,
    mem: Vec<(u8, MmioRegion)>,
    io: Vec<(u8, u16, u16)>,
    intx: Option<IoapicInput>,
}

impl HostFunction for Function {
    fn config_read(&mut self, offset: u16) -> u32 {
        config_read32(self.bdf, offset)
    }

    fn config_write(&mut self, offset: u16, value: u32) {
        config_write32(self.bdf, offset, value)
    }

    fn bar_read(&mut self, bar: u8, offset: u64, size: u8) -> u64 {
        if let Some((_, r)) = self.mem.iter().find(|(i, _)| *i == bar) {
            return r.read(offset, size);
        }
        match self.port(bar, offset, size) {
            Some(port) => u64::from(port_read(port, size)),
            None => u64::MAX >> (64 - 8 * u32::from(size.clamp(1, 8))),
        }
    }

    fn intx_unmask(&mut self) {
        if let Some(input) = &self.intx {
            input.set_masked(false);
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, size: u8, value: u64) {
        if let Some((_, r)) = self.mem.iter().find(|(i, _)| *i == bar) {
            r.write(offset, size, value);
        } else if let Some(port) = self.port(bar, offset, size) {
            port_write(port, size, value as u32);
        }
    }
}

impl Function {
    /// The port of an I/O access inside BAR `bar` (1, 2 or 4 bytes, inside the BAR).
    fn port(&self, bar: u8, offset: u64, size: u8) -> Option<u16> {
        let &(_, base, len) = self.io.iter().find(|(i, _, _)| *i == bar)?;
        (matches!(size, 1 | 2 | 4) && offset + u64::from(size) <= u64::from(len))
            .then(|| base + offset as u16)
    }
}

/// Hands out the functions to their VMs.
pub struct Provider;

pub static PROVIDER: Provider = Provider;

impl ::vmm::io::PassthroughProvider for Provider {
    fn device(
        &self,
        vm: &VmConfig,
        dev: &PassthroughConfig,
        news: &Arc<AtomicBool>,
    ) -> Result<Box<dyn vdev::PciDevice>, String> {
        let pci = PCI.get().ok_or("PCI was not enumerated")?;
        let o = pci
            .owned
            .iter()
            .find(|o| o.vm.id == vm.id && o.cfg.host_bdf == dev.host_bdf)
            .ok_or("not in the scenario")?;
        if let Some(p) = &o.problem {
            return Err(p.clone());
        }
        let phys = o.phys.clone().ok_or("no such function")?;
        let mine: Vec<&PhysFunction> = pci
            .owned
            .iter()
            .filter(|x| x.vm.id == vm.id)
            .filter_map(|x| x.phys.as_ref())
            .collect();
        let placement =
            place_bars(&mine, GUEST_MEM_WINDOW, GUEST_IO_WINDOW).map_err(|e| format!("{e}"))?;
        let at = mine
            .iter()
            .position(|f| f.bdf == phys.bdf)
            .ok_or("placement lost the function")?;
        o.news.call_once(|| news.clone());
        reset(&phys);
        o.storm.reset();
        o.storm_reported.store(false, Ordering::Release);
        o.resets.fetch_add(1, Ordering::Relaxed);
        let mut function = Function {
            bdf: phys.bdf.raw(),
            mem: Vec::new(),
            io: Vec::new(),
            intx: o.intx,
        };
        for b in &phys.bars {
            if b.kind == BarKind::Io {
                function.io.push((b.index, b.base as u16, b.size as u16));
            } else {
                #[allow(unsafe_code)]
                // SAFETY: `check` made sure this BAR lies in the identity map and overlaps no
                // memory the firmware reported; the function belongs to this VM alone.
                let region = unsafe { MmioRegion::new(b.base, b.size) };
                function.mem.push((b.index, region));
            }
        }
        let messages = o.messages.clone();
        let device = PassthroughDevice::new(
            phys,
            Box::new(function),
            &placement[at],
            messages,
            o.irq.clone(),
            o.intx.is_some(),
        )
        .map_err(|e| format!("{e}"))?;
        // The function is quiet now (INTx disabled in its command register until the guest
        // enables it): its input may be open.
        if let Some(input) = &o.intx {
            input.set_masked(false);
        }
        Ok(Box::new(device))
    }
}

/// The `pci` shell command's lines.
pub fn shell_lines() -> Vec<shell::PciLine> {
    let Some(pci) = PCI.get() else {
        return Vec::new();
    };
    pci.functions
        .iter()
        .map(|f| {
            let o = pci.owned.iter().find(|o| o.cfg.host_bdf == f.bdf.raw());
            let mut line = shell::PciLine {
                bdf: f.bdf.to_string(),
                vendor_id: f.vendor_id,
                device_id: f.device_id,
                class: f.class,
                ..shell::PciLine::default()
            };
            if let Some(o) = o {
                line.owner = Some((
                    o.vm.name.into(),
                    Bdf::from_raw(o.cfg.guest_bdf()).to_string(),
                ));
                line.state = match &o.problem {
                    Some(p) => format!("refused: {p}"),
                    None if o.storm.tripped() => "silenced (interrupt storm)".into(),
                    None if o.irq.mode() == "off" && o.intx.is_some() => "intx".into(),
                    None => o.irq.mode().into(),
                };
                line.vectors = o.vectors.iter().copied().chain(o.intx_vector).collect();
                line.interrupts = o.interrupts.load(Ordering::Relaxed);
                line.resets = o.resets.load(Ordering::Relaxed);
                line.reset_method = o.reset_method.into();
                line.dma_faults = o.dma_faults.load(Ordering::Relaxed);
            }
            line
        })
        .collect()
}

/// The IOMMU reported a fault from requester `bdf`: counted on the function that has it.
pub fn count_dma_fault(bdf: u16) {
    if let Some(o) = PCI
        .get()
        .and_then(|p| p.owned.iter().find(|o| o.cfg.host_bdf == bdf))
    {
        o.dma_faults.fetch_add(1, Ordering::Relaxed);
    }
}
