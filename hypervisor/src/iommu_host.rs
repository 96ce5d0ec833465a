//! The machine's IOMMUs: found in the firmware's DMAR (Intel VT-d) or IVRS (AMD-Vi) at boot and
//! turned on; one DMA domain per VM that owns devices, whose tables map exactly that VM's RAM
//! (own tables in the IOMMU's format, built from the same RAM layout as the CPU's second-level
//! tables: NPT and EPT entries differ from both IOMMU formats, so sharing would work only for
//! EPT with VT-d); each owned function attached to its VM's domain; message interrupts remapped
//! where the unit can, so a device can only raise the vectors the hypervisor gave it; faults
//! drained on pCPU 0, counted per function, logged rate-limited and kept for the shell.
//!
//! A unit that fails to start is logged and left off: then no DMA isolation exists, and VMs
//! that own devices do not start unless the scenario says `dma_isolation = "off"`.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use arch_x86::dma::DmaFrames;
use arch_x86::guest_ram::FrameTables;
use arch_x86::pci::{config_read32, MmioRegion};
use iommu::{amdvi, dmar::Dmar, ivrs::Ivhd, ivrs::Ivrs, vtd, Bdf};
use log::{error, info, warn};
use paging::{Format, GuestPhysAddr, MemType, PageSizes, Perms, SecondLevelTables};
use platform::HostPhysAddr;
use scenario::VmConfig;
use spin::Mutex;

use crate::boot::FRAMES;

/// Bytes of a VT-d unit's register window (one page covers QEMU's; real units give their
/// fault-recording and IOTLB registers' offsets inside the first pages).
const VTD_REGS: u64 = 0x1000;
/// Bytes of an AMD-Vi unit's register window.
const AMDVI_REGS: u64 = 0x4000;
/// Fault lines logged before the log falls silent (the counters go on).
const LOGGED_FAULTS: u64 = 32;
/// Faults kept for the shell.
const RECENT_FAULTS: usize = 16;

type Frames = DmaFrames<fn(usize, u64) -> Option<u64>>;
type Tables = SecondLevelTables<FrameTables<fn() -> Option<u64>>>;

fn alloc_frames(frames: usize, align: u64) -> Option<u64> {
    FRAMES.lock().alloc_aligned(frames, align).map(|a| a.0)
}

fn alloc_table() -> Option<u64> {
    FRAMES.lock().alloc(1).map(|a| a.0)
}

fn frames() -> Frames {
    #[allow(unsafe_code)]
    // SAFETY: the allocator hands out identity-mapped frames that are never freed: they belong
    // to the IOMMU driver for the life of the hypervisor.
    unsafe {
        DmaFrames::new(alloc_frames as fn(usize, u64) -> Option<u64>)
    }
}

enum Units {
    Vtd(Dmar, Vec<vtd::Unit<MmioRegion>>),
    AmdVi(Vec<(Ivhd, amdvi::Unit<MmioRegion>)>),
}

/// A VM's DMA domain.
struct Domain {
    vm: u16,
    id: u16,
    tables: Tables,
}

struct State {
    units: Units,
    mem: Frames,
    domains: Vec<Domain>,
    faults: u64,
    recent: VecDeque<String>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Whether DMA remapping is on.
pub fn active() -> bool {
    STATE.lock().is_some()
}

/// Finds and starts the IOMMUs; true when DMA remapping is on.
pub fn init() -> bool {
    let fw = crate::boot::firmware_pci();
    let mut mem = frames();
    let units = if let Some(bytes) = &fw.dmar {
        match Dmar::parse(bytes) {
            Ok(dmar) => start_vtd(dmar, &mut mem),
            Err(e) => {
                error!("iommu: DMAR unusable: {e}; no DMA remapping");
                None
            }
        }
    } else if let Some(bytes) = &fw.ivrs {
        match Ivrs::parse(bytes) {
            Ok(ivrs) => start_amdvi(&ivrs, &mut mem),
            Err(e) => {
                error!("iommu: IVRS unusable: {e}; no DMA remapping");
                None
            }
        }
    } else {
        info!("iommu: none (no DMAR or IVRS table)");
        None
    };
    let Some(units) = units else { return false };
    *STATE.lock() = Some(State {
        units,
        mem,
        domains: Vec::new(),
        faults: 0,
        recent: VecDeque::new(),
    });
    true
}

fn start_vtd(dmar: Dmar, mem: &mut Frames) -> Option<Units> {
    let mut units = Vec::new();
    for drhd in &dmar.units {
        #[allow(unsafe_code)]
        // SAFETY: the DMAR names this page as the unit's registers (device memory, not RAM);
        // only this driver touches them.
        let regs = unsafe { MmioRegion::new(drhd.base.0, VTD_REGS) };
        let config = vtd::Config::default();
        match vtd::Unit::init(regs, mem, config) {
            Ok(u) if u.caps().large_pages() & 1 == 0 => {
                error!(
                    "iommu: VT-d unit at {:#x} lacks 2 MiB pages, which the DMA tables use; left off",
                    drhd.base.0
                );
            }
            Ok(u) => {
                info!("iommu: VT-d unit at {:#x}: {u}", drhd.base.0);
                units.push(u);
            }
            Err(e) => error!(
                "iommu: VT-d unit at {:#x} failed to start: {e}",
                drhd.base.0
            ),
        }
    }
    if units.len() != dmar.units.len() {
        error!("iommu: not every VT-d unit started; no DMA remapping");
        return None;
    }
    Some(Units::Vtd(dmar, units))
}

fn start_amdvi(ivrs: &Ivrs, mem: &mut Frames) -> Option<Units> {
    let mut units = Vec::new();
    for ivhd in ivrs.iommus() {
        let Some(max) = ivhd.max_device_id() else {
            warn!("iommu: AMD-Vi unit at {:#x} covers no device", ivhd.base.0);
            continue;
        };
        #[allow(unsafe_code)]
        // SAFETY: the IVRS names this window as the unit's registers (device memory).
        let regs = unsafe { MmioRegion::new(ivhd.base.0, AMDVI_REGS) };
        match amdvi::Unit::init(regs, mem, amdvi::Config::new(max)) {
            Ok(u) => {
                info!("iommu: AMD-Vi unit at {:#x}: {u}", ivhd.base.0);
                units.push((ivhd.clone(), u));
            }
            Err(e) => {
                error!(
                    "iommu: AMD-Vi unit at {:#x} failed to start: {e}; no DMA remapping",
                    ivhd.base.0
                );
                return None;
            }
        }
    }
    (!units.is_empty()).then_some(Units::AmdVi(units))
}

/// The secondary and subordinate buses of bridge `b` (for the DMAR's device scopes).
fn bridge_buses(b: Bdf) -> Option<(u8, u8)> {
    let buses = config_read32(b.0, 0x18);
    (config_read32(b.0, 0) & 0xFFFF != 0xFFFF).then_some(((buses >> 8) as u8, (buses >> 16) as u8))
}

impl State {
    /// VM `vm`'s domain, made on first use with its RAM mapped.
    fn domain(
        &mut self,
        vm: &VmConfig,
        ram: HostPhysAddr,
        layout: &vcpu::RamLayout,
    ) -> Result<usize, String> {
        if let Some(i) = self.domains.iter().position(|d| d.vm == vm.id) {
            return Ok(i);
        }
        let format = match self.units {
            Units::Vtd(..) => Format::VtdSl,
            Units::AmdVi(..) => Format::AmdVi,
        };
        #[allow(unsafe_code)]
        // SAFETY: every frame comes from the allocator and belongs to these tables for the life
        // of the hypervisor; entries are flushed for units that do not snoop.
        let mem = unsafe { FrameTables::for_iommu(alloc_table as fn() -> Option<u64>) };
        let mut tables = SecondLevelTables::new(format, PageSizes { huge_1g: false }, mem)
            .map_err(|e| format!("DMA tables: {e}"))?;
        for r in layout.ranges() {
            tables
                .map(
                    GuestPhysAddr(r.gpa.0),
                    HostPhysAddr(ram.0 + r.offset),
                    r.len,
                    Perms::RW,
                    MemType::WriteBack,
                )
                .map_err(|e| format!("DMA tables: {e}"))?;
        }
        self.domains.push(Domain {
            vm: vm.id,
            id: vm.id + 1,
            tables,
        });
        Ok(self.domains.len() - 1)
    }

    fn attach(&mut self, d: usize, bdf: Bdf) -> Result<(), String> {
        let domain = &mut self.domains[d];
        match &mut self.units {
            Units::Vtd(dmar, units) => {
                let drhd = dmar
                    .unit_for(0, bdf, bridge_buses)
                    .ok_or_else(|| format!("no VT-d unit covers {bdf}"))?;
                let i = dmar
                    .units
                    .iter()
                    .position(|u| core::ptr::eq(u, drhd))
                    .ok_or("VT-d unit lost")?;
                let unit = &mut units[i];
                let levels = unit.levels();
                let root = domain
                    .tables
                    .dma_root(levels)
                    .map_err(|e| format!("DMA tables: {e}"))?;
                unit.attach(&mut self.mem, bdf, domain.id, root, levels)
                    .map_err(|e| format!("VT-d: {e}"))
            }
            Units::AmdVi(units) => {
                let (ivhd, unit) = units
                    .iter_mut()
                    .find(|(h, _)| h.covers(bdf))
                    .ok_or_else(|| format!("no AMD-Vi unit covers {bdf}"))?;
                let levels = unit.levels();
                let root = domain
                    .tables
                    .dma_root(levels)
                    .map_err(|e| format!("DMA tables: {e}"))?;
                let rid = ivhd.requester_id(bdf);
                unit.attach(&mut self.mem, rid, domain.id, root, levels)
                    .map_err(|e| format!("AMD-Vi: {e}"))
            }
        }
    }

    fn note_fault(&mut self, line: String, bdf: Bdf) {
        self.faults += 1;
        crate::pci_host::count_dma_fault(bdf.0);
        if self.faults <= LOGGED_FAULTS {
            warn!("iommu: {line}");
            if self.faults == LOGGED_FAULTS {
                warn!("iommu: further faults are counted, not logged (see `iommu` and `pci`)");
            }
        }
        if self.recent.len() == RECENT_FAULTS {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }
}

/// Gives VM `vm` (its RAM at host `ram`, laid out as `layout`) a DMA domain and attaches each
/// function it owns. Err when DMA remapping is off or an attach failed.
pub fn attach_vm(vm: &VmConfig, ram: HostPhysAddr, layout: &vcpu::RamLayout) -> Result<(), String> {
    if vm.pci_devices.is_empty() {
        return Ok(());
    }
    let mut guard = STATE.lock();
    let Some(state) = guard.as_mut() else {
        return Err("no IOMMU".into());
    };
    let d = state.domain(vm, ram, layout)?;
    for dev in vm.pci_devices {
        let bdf = Bdf(dev.host_bdf);
        state
            .attach(d, bdf)
            .map_err(|e| format!("pci_devices {}: {e}", vdev::Bdf::from_raw(bdf.0)))?;
    }
    info!(
        "iommu: vm {} has DMA domain {} with {} function(s)",
        vm.name,
        vm.id + 1,
        vm.pci_devices.len()
    );
    Ok(())
}

/// The message function `bdf` must send to raise host `vector` on the CPU with APIC id `dest`
/// through an interrupt remapping entry (the entry's index is the vector; VT-d checks the
/// requester id): None when no unit remaps interrupts (the plain message is used then).
pub fn remap_msi(bdf: u16, vector: u8, dest: u32) -> Option<Result<vdev::MsiMessage, String>> {
    let mut guard = STATE.lock();
    let state = guard.as_mut()?;
    let r = match &mut state.units {
        Units::Vtd(dmar, units) => {
            let drhd = dmar.unit_for(0, Bdf(bdf), bridge_buses)?;
            let i = dmar.units.iter().position(|u| core::ptr::eq(u, drhd))?;
            let unit = &mut units[i];
            if !unit.ir_enabled() {
                return None;
            }
            unit.set_irte(
                &mut state.mem,
                u16::from(vector),
                &vtd::Irte::fixed(vector, dest, Bdf(bdf)),
            )
            .map_err(|e| format!("VT-d interrupt remapping: {e}"))
        }
        Units::AmdVi(units) => {
            let (ivhd, unit) = units.iter_mut().find(|(h, _)| h.covers(Bdf(bdf)))?;
            let rid = ivhd.requester_id(Bdf(bdf));
            let dest = u8::try_from(dest).ok()?;
            unit.enable_irq_remapping(&mut state.mem, rid)
                .and_then(|()| {
                    unit.set_irte(
                        &mut state.mem,
                        rid,
                        u16::from(vector),
                        &amdvi::Irte::fixed(vector, dest),
                    )
                })
                .map_err(|e| format!("AMD-Vi interrupt remapping: {e}"))
        }
    };
    Some(r.map(|m| vdev::MsiMessage {
        address: m.address,
        data: m.data,
    }))
}

/// The redirection entry (masked) that raises host `vector` on the CPU with APIC id `dest` from
/// the I/O APIC with id `ioapic`, level-triggered and active-low (a PCI INTx), through an
/// interrupt remapping entry when a VT-d unit remaps the I/O APIC's interrupts (it blocks the
/// plain format then): None when the plain entry is the one to use.
pub fn remap_ioapic(ioapic: u8, vector: u8, dest: u32) -> Option<Result<u64, String>> {
    let mut guard = STATE.lock();
    let state = guard.as_mut()?;
    let Units::Vtd(dmar, units) = &mut state.units else {
        // AMD-Vi remaps per device, and the I/O APIC's interrupts are not switched to it.
        return None;
    };
    let (i, source) = dmar.units.iter().enumerate().find_map(|(i, u)| {
        u.scopes
            .iter()
            .find(|s| s.kind == iommu::dmar::ScopeKind::IoApic && s.enumeration_id == ioapic)
            .and_then(|s| s.bdf(|b| bridge_buses(b).map(|(sec, _)| sec)))
            .map(|bdf| (i, bdf))
    })?;
    let unit = &mut units[i];
    if !unit.ir_enabled() {
        return None;
    }
    let irte = vtd::Irte {
        vector,
        dest,
        logical: false,
        level: true,
        delivery: vtd::Delivery::Fixed,
        source: vtd::SourceCheck::Exact(source),
    };
    Some(
        unit.set_irte(&mut state.mem, u16::from(vector), &irte)
            .map(|_| vtd::ioapic_rte(u16::from(vector), vector, true, true, true))
            .map_err(|e| format!("VT-d interrupt remapping of I/O APIC {ioapic}: {e}")),
    )
}

/// Drains every unit's faults (pCPU 0 calls this from its loop).
pub fn poll_faults() {
    let Some(mut guard) = STATE.try_lock() else {
        return;
    };
    let Some(state) = guard.as_mut() else { return };
    let mut found: Vec<(String, Bdf)> = Vec::new();
    match &mut state.units {
        Units::Vtd(_, units) => {
            for u in units.iter_mut() {
                u.poll_faults(|f| {
                    let what = if f.is_interrupt() {
                        format!("interrupt request (index {:?})", f.interrupt_index())
                    } else {
                        format!(
                            "DMA fault: {} {} at {:#x}",
                            vdev::Bdf::from_raw(f.source.0),
                            if f.write { "write" } else { "read" },
                            f.address
                        )
                    };
                    found.push((
                        format!(
                            "{what}: {} (reason {:#x})",
                            vtd::reason_name(f.reason),
                            f.reason
                        ),
                        f.source,
                    ));
                });
            }
        }
        Units::AmdVi(units) => {
            for (_, u) in units.iter_mut() {
                let r = u.poll_events(&mut state.mem, |e| {
                    let line = match e {
                        amdvi::Event::IoPageFault {
                            device, address, ..
                        } => format!(
                            "DMA fault: {} {} at {address:#x}: {}",
                            vdev::Bdf::from_raw(device.0),
                            if e.is_write() { "write" } else { "read" },
                            e.name()
                        ),
                        other => format!(
                            "event {} from {}",
                            other.name(),
                            vdev::Bdf::from_raw(other.device().0)
                        ),
                    };
                    found.push((line, e.device()));
                });
                if let Err(e) = r {
                    found.push((format!("event log: {e}"), Bdf(u16::MAX)));
                }
            }
        }
    }
    for (line, bdf) in found {
        state.note_fault(line, bdf);
    }
}

/// The `iommu` shell command's lines.
pub fn shell_lines() -> Vec<shell::IommuLine> {
    let guard = STATE.lock();
    let Some(state) = guard.as_ref() else {
        return Vec::new();
    };
    let domains = state.domains.len();
    let recent: Vec<String> = state.recent.iter().cloned().collect();
    let mut lines = Vec::new();
    match &state.units {
        Units::Vtd(dmar, units) => {
            for (drhd, u) in dmar.units.iter().zip(units) {
                lines.push(shell::IommuLine {
                    name: format!("VT-d at {:#x}", drhd.base.0),
                    state: format!(
                        "DMA remapping on ({} levels), interrupt remapping {}, {domains} domain(s)",
                        u.levels(),
                        if u.ir_enabled() { "on" } else { "off" }
                    ),
                    faults: u.fault_counts().0,
                    recent: Vec::new(),
                });
            }
        }
        Units::AmdVi(units) => {
            for (h, u) in units {
                lines.push(shell::IommuLine {
                    name: format!("AMD-Vi at {:#x}", h.base.0),
                    state: format!(
                        "DMA remapping on ({} levels), {domains} domain(s)",
                        u.levels()
                    ),
                    faults: u.event_counts().0,
                    recent: Vec::new(),
                });
            }
        }
    }
    if let Some(first) = lines.first_mut() {
        first.recent = recent;
    }
    lines
}
