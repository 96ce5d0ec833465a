//! The VM object: its configuration, RAM, devices, console queues, vCPU slots and lifecycle, and
//! how it is loaded from its kernel image (at creation, at every start and at every reboot).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::AtomicU64;

use scenario::{KernelKind, VmConfig, VmId};
use spin::Mutex;
use vcpu::{Gprs, GuestMemory, InitialState};
use virtio::console::ConsolePipe;

use alloc::sync::Arc;

use crate::console::ConsoleQueues;
use crate::io::{attach_passthrough, attach_virtio, IoHub, VmIo};
use crate::lifecycle::{AtomicLifecycle, AtomicVcpuRun, Request, VcpuEvent, VcpuRun, VmState};
use crate::platform::{tsc_to_ns, Platform, SlatEditor};
use crate::platform_cell::PlatformCell;
use crate::table::TableEntry;

/// How a VM's kernel image is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// Multiboot1, ELF64 or raw, through [`loader::load`].
    Loader(loader::KernelKind),
    /// A Linux bzImage (64-bit boot protocol).
    BzImage,
    /// An ELF kernel entered through its PVH note.
    Pvh,
}

impl ImageKind {
    /// How the scenario's kernel `kind` is loaded.
    pub const fn of(kind: KernelKind) -> Self {
        match kind {
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
        }
    }
}

/// The images a VM boots from (boot modules, never written).
#[derive(Clone, Debug)]
pub struct GuestImage {
    /// The kernel.
    pub kernel: &'static [u8],
    /// How to load `kernel`.
    pub kind: ImageKind,
    /// The initial ramdisk of a Linux kernel.
    pub initrd: Option<&'static [u8]>,
    /// The bytes of each of the scenario's `modules` for a Multiboot kernel, in the same order.
    pub modules: Vec<&'static [u8]>,
}

/// How a VM's kernel is entered.
#[derive(Clone, Copy, Debug)]
pub enum Entry {
    Multiboot(loader::BootSetup),
    Linux(loader::LinuxBoot),
    Pvh(loader::PvhBoot),
}

/// The state vCPU 0 starts in.
pub fn initial_state(entry: &Entry) -> InitialState {
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

// The configurator checks the scenario against the limits the loader has.
const _: () = assert!(scenario::MAX_MODULES == loader::MAX_MODULES);
const _: () = assert!(scenario::MODULE_CMDLINE_MAX == loader::MODULE_CMDLINE_MAX);

/// The RTC's idea of "now" when a VM's platform is made (2026-01-01 UTC):
/// the host's own clock is not read yet.
const GUEST_EPOCH_UNIX_SECS: u64 = 1_767_225_600;

/// The VM's PC platform as it is at power-on; its clocks read `now_ns`.
pub fn new_platform(cfg: &VmConfig, now_ns: u64) -> vm::PcPlatform {
    let uart = cfg.console.map(|c| vm::UartPlace {
        port: c.port,
        irq: c.irq,
    });
    // The IOAPIC's ID follows the vCPUs' APIC IDs, as the VM's MADT says.
    let ioapic_id = cfg.vcpus.min(254) as u8;
    vm::PcPlatform::new(&vm::PlatformConfig {
        now_ns,
        unix_secs: GUEST_EPOCH_UNIX_SECS,
        ioapic_id,
        uart,
        pci_test_device: cfg.pci_test_device,
    })
}

/// Builds the VM's ACPI tables (MADT, FADT, DSDT with the PCI host bridge and
/// its `_PRT`, MCFG) and writes them at 0xE0000.
fn write_acpi_tables<M: GuestMemory>(
    cfg: &VmConfig,
    ram: &mut M,
) -> Result<guest_acpi::AcpiTables, String> {
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
        .map_err(|e| format!("ACPI tables: {e}"))?;
    ram.write(tables.base_gpa, &tables.bytes)
        .map_err(|e| format!("ACPI tables: {e}"))?;
    Ok(tables)
}

/// One vCPU's counters and where it is (written on its pCPU, read by the shell).
#[derive(Debug)]
pub struct VcpuSlot {
    pub stats: Mutex<vm::ExitStats>,
    /// TSC ticks spent in the guest and in the hypervisor for it.
    pub guest_cycles: AtomicU64,
    pub hv_cycles: AtomicU64,
    /// Interrupts injected.
    pub injected: AtomicU64,
    run: AtomicVcpuRun,
    /// Fault injection: non-zero N makes the vCPU's next entry fail once it
    /// has taken N exits in its current boot (the backend corrupts its
    /// VMCS/VMCB); taken (zeroed) when done.
    pub break_entry_after: AtomicU64,
}

impl Default for VcpuSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl VcpuSlot {
    /// A vCPU that never ran.
    pub fn new() -> Self {
        VcpuSlot {
            stats: Mutex::new(vm::ExitStats::default()),
            guest_cycles: AtomicU64::new(0),
            hv_cycles: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            run: AtomicVcpuRun::new(),
            break_entry_after: AtomicU64::new(0),
        }
    }

    /// Where the vCPU is.
    pub fn run(&self) -> VcpuRun {
        self.run.load()
    }

    /// Moves the vCPU on (its own pCPU only).
    pub(crate) fn event(&self, event: VcpuEvent) -> VcpuRun {
        self.run.event(event)
    }
}

/// A VM.
pub struct Vm<P: Platform> {
    pub id: VmId,
    pub cfg: &'static VmConfig,
    /// The VM's RAM (a handle; no lock).
    pub ram: P::Ram,
    /// nCR3 (SVM) or EPTP (VMX) of the VM's second-level tables.
    pub(crate) slat_root: u64,
    /// The VM's legacy devices and console vUART.
    pub(crate) platform: PlatformCell,
    /// Console bytes between the guest and pCPU 0.
    pub console: ConsoleQueues,
    /// Counters and run state of each vCPU.
    pub vcpus: Vec<VcpuSlot>,
    /// State, request and vCPUs out ([`crate::Lifecycle`]).
    pub(crate) lifecycle: AtomicLifecycle,
    /// The kernel image and how to load it (again, on start or reset).
    image: GuestImage,
    entry: Mutex<Option<Entry>>,
    /// Messages for each vCPU (IPIs, device interrupts, INIT/SIPI).
    pub(crate) inboxes: Vec<vm::VcpuInbox>,
    /// The backends of its virtio devices ([`Vm::attach_io`]).
    pub io: Option<VmIo>,
    /// Edits its second-level tables at run time ([`Vm::set_slat_editor`]).
    slat_editor: Option<alloc::boxed::Box<dyn SlatEditor>>,
    /// Direct BAR ranges mapped now (guest-physical start, length).
    direct: Mutex<Vec<(u64, u64)>>,
}

impl<P: Platform> TableEntry for Vm<P> {
    fn id(&self) -> VmId {
        self.id
    }

    fn name(&self) -> &str {
        self.cfg.name
    }
}

impl<P: Platform> Vm<P> {
    /// A VM of scenario VM `cfg` with its RAM, second-level tables (`slat_root`) and images; it
    /// is [`VmState::Created`] and not loaded yet ([`Vm::load`]).
    pub fn new(
        p: &P,
        cfg: &'static VmConfig,
        ram: P::Ram,
        slat_root: u64,
        image: GuestImage,
    ) -> Self {
        Vm {
            id: cfg.vm_id(),
            cfg,
            ram,
            slat_root,
            platform: PlatformCell::new(new_platform(cfg, tsc_to_ns(p.tsc_hz(), p.now()))),
            console: ConsoleQueues::new(),
            vcpus: (0..cfg.vcpus).map(|_| VcpuSlot::new()).collect(),
            lifecycle: AtomicLifecycle::new(),
            image,
            entry: Mutex::new(None),
            slat_editor: None,
            direct: Mutex::new(Vec::new()),
            inboxes: (0..u32::from(cfg.vcpus)).map(vm::VcpuInbox::new).collect(),
            io: None,
        }
    }

    /// Lets the VM's passed-through BARs be mapped into its second-level tables (without it
    /// every access to them exits and is forwarded).
    pub fn set_slat_editor(&mut self, editor: alloc::boxed::Box<dyn SlatEditor>) {
        self.slat_editor = Some(editor);
    }

    /// Applies the second-level changes the platform asked for; after an unmap every vCPU
    /// flushes its TLB before its next entry (the caller's own vCPU included; the others are
    /// kicked by `kick`).
    pub(crate) fn apply_slat_ops(&self, ops: Vec<vdev::SlatOp>, kick: &dyn Fn(usize)) {
        let Some(editor) = &self.slat_editor else {
            return;
        };
        let mut direct = self.direct.lock();
        let mut flush = false;
        for op in ops {
            match op {
                vdev::SlatOp::Unmap { gpa, len } => {
                    if let Err(e) = editor.unmap(gpa, len) {
                        log::error!(
                            "vm {}: unmapping BAR range {gpa:#x}+{len:#x}: {e}",
                            self.cfg.name
                        );
                    }
                    direct.retain(|&r| r != (gpa, len));
                    flush = true;
                }
                vdev::SlatOp::Map { gpa, len, host } => match editor.map_mmio(gpa, len, host) {
                    Ok(()) => direct.push((gpa, len)),
                    Err(e) => log::warn!(
                        "vm {}: BAR range {gpa:#x}+{len:#x} stays trapped: {e}",
                        self.cfg.name
                    ),
                },
                vdev::SlatOp::MapRam {
                    gpa,
                    len,
                    host,
                    writable,
                } => match editor.map_ram(gpa, len, host, writable) {
                    Ok(()) => direct.push((gpa, len)),
                    Err(e) => log::warn!(
                        "vm {}: shared memory {gpa:#x}+{len:#x} not mapped (its accesses exit): {e}",
                        self.cfg.name
                    ),
                },
            }
        }
        drop(direct);
        if flush {
            for (i, inbox) in self.inboxes.iter().enumerate() {
                inbox.request_slat_flush();
                kick(i);
            }
        }
    }

    /// Unmaps every direct BAR range (the platform they came from is gone).
    fn unmap_direct(&self) {
        let ops: Vec<vdev::SlatOp> = self
            .direct
            .lock()
            .iter()
            .map(|&(gpa, len)| vdev::SlatOp::Unmap { gpa, len })
            .collect();
        if !ops.is_empty() {
            self.apply_slat_ops(ops, &|_| {});
        }
    }

    /// Gives the VM the machine's device backends: its virtio devices are
    /// plugged in from the next [`Vm::load`] on.
    pub fn attach_io(&mut self, hub: Arc<IoHub>) {
        self.io = Some(VmIo::new(hub, self.cfg));
    }

    /// The platform at power-on, with the VM's virtio devices.
    fn fresh_platform(&self, p: &P) -> Result<vm::PcPlatform, String> {
        let mut platform = new_platform(self.cfg, tsc_to_ns(p.tsc_hz(), p.now()));
        if let Some(io) = &self.io {
            attach_virtio(self.cfg, io, &self.ram, &mut platform)?;
            attach_passthrough(self.cfg, io, &mut platform)?;
            crate::shm::attach_shm(self.cfg, io, &mut platform)?;
            crate::io::attach_links(self.cfg, io, &mut platform)?;
        } else if !self.cfg.pci_devices.is_empty() {
            return Err("its PCI functions have no provider".into());
        }
        Ok(platform)
    }

    /// A real-time VM (`vm_type = "rt"`): nothing but its lifecycle reaches its pCPUs.
    pub fn is_rt(&self) -> bool {
        self.cfg.vm_type == scenario::VmType::Rt
    }

    /// The VM's name.
    pub fn name(&self) -> &'static str {
        self.cfg.name
    }

    /// The lifecycle state.
    pub fn state(&self) -> VmState {
        self.lifecycle.load().state()
    }

    /// What the vCPUs are asked to do.
    pub fn request(&self) -> Request {
        self.lifecycle.load().request()
    }

    /// The whole lifecycle now.
    pub fn lifecycle(&self) -> crate::Lifecycle {
        self.lifecycle.load()
    }

    /// The pCPU vCPU `vcpu` runs on.
    pub fn pcpu_of(&self, vcpu: u16) -> Option<u16> {
        self.cfg.pcpus.get(usize::from(vcpu)).copied()
    }

    /// How vCPU 0 starts, once loaded.
    pub(crate) fn entry(&self) -> Option<Entry> {
        *self.entry.lock()
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
    pub fn load(&self, p: &P) -> Result<Entry, String> {
        // The VM is not running: nothing else touches its RAM now.
        let mut ram = self.ram.clone();
        p.zero_ram(&ram);
        let entry = match self.image.kind {
            ImageKind::Loader(kind) => {
                // Every VM has ACPI tables in the BIOS area (bare-metal guests
                // find the MCFG there by the RSDP scan).
                write_acpi_tables(self.cfg, &mut ram)?;
                let modules = self.boot_modules()?;
                Entry::Multiboot(
                    loader::load(
                        kind,
                        self.image.kernel,
                        self.cfg.kernel.cmdline,
                        &modules,
                        &mut ram,
                    )
                    .map_err(|e| self.load_error(&e))?,
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
                    ram: ram.layout(),
                    reserved: &ecam,
                    acpi_rsdp: Some(tables.rsdp_gpa),
                };
                let (image, cmdline, initrd) = (
                    self.image.kernel,
                    self.cfg.kernel.cmdline,
                    self.image.initrd,
                );
                if linux == ImageKind::Pvh {
                    loader::load_pvh(image, cmdline, initrd, &layout, &mut ram)
                        .map(Entry::Pvh)
                        .map_err(|e| format!("{e}"))?
                } else {
                    loader::load_bzimage(image, cmdline, initrd, &layout, &mut ram)
                        .map(Entry::Linux)
                        .map_err(|e| format!("{e}"))?
                }
            }
        };
        let platform = self.fresh_platform(p)?;
        *self.entry.lock() = Some(entry);
        self.platform.replace(platform);
        self.unmap_direct();
        // BARs firmware placed with direct ranges (shared memory) are mapped before the guest
        // runs.
        let initial = self.platform.with(|p| p.take_slat_ops());
        if !initial.is_empty() {
            self.apply_slat_ops(initial, &|_| {});
        }
        for (id, inbox) in (0u32..).zip(&self.inboxes) {
            inbox.clear(id);
        }
        Ok(entry)
    }

    /// The scenario's modules with their bytes, for [`loader::load`].
    fn boot_modules(&self) -> Result<Vec<loader::Module<'static>>, String> {
        if self.image.modules.len() != self.cfg.modules.len() {
            return Err(format!(
                "the scenario lists {} boot modules but {} were provided",
                self.cfg.modules.len(),
                self.image.modules.len()
            ));
        }
        Ok(self
            .cfg
            .modules
            .iter()
            .zip(&self.image.modules)
            .map(|(m, &data)| loader::Module {
                data,
                cmdline: m.cmdline,
            })
            .collect())
    }

    /// A loader error as a message; one about a module names it as the scenario does.
    fn load_error(&self, e: &loader::LoadError) -> String {
        let index = match e {
            loader::LoadError::Module(
                loader::ModuleError::CmdlineTooLong { index, .. }
                | loader::ModuleError::CmdlineHasNul { index, .. }
                | loader::ModuleError::DoesNotFit { index, .. },
            ) => Some(*index),
            _ => None,
        };
        match index.and_then(|i| self.cfg.modules.get(i)) {
            Some(m) => format!("{e} (module {:?}: {:?})", m.name, m.cmdline),
            None => format!("{e}"),
        }
    }

    /// Moves typed bytes into the VM's vUART while its receive FIFO has room (pCPU 0); true if
    /// any moved (a halted vCPU must be woken for the UART's interrupt).
    pub fn feed_typed(&self) -> bool {
        if !self.console.has_typed() {
            return false;
        }
        self.platform
            .with(|platform| self.console.feed_typed(|b| platform.console_input(b)))
    }

    /// The pipe of the VM's virtio console (`hvc0`), if it has one (and the machine's backends).
    pub fn hvc(&self) -> Option<&Arc<Mutex<ConsolePipe>>> {
        self.io.as_ref()?.console.as_ref()
    }

    /// The redirection table of the VM's virtual IOAPIC.
    pub fn vioapic_table(&self) -> Vec<u64> {
        self.platform.with(|p| {
            (0..)
                .map_while(|pin| p.ioapic().redirection_entry(pin))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{config, MockPlatform, SharedMemory};
    use alloc::boxed::Box;
    use alloc::vec;
    use scenario::ModuleConfig;

    static KERNEL: [u8; 1] = [0xF4];

    /// `cfg` with `modules`, loaded from the one-byte raw kernel with `bytes` as the modules.
    fn load_with(
        modules: &'static [ModuleConfig],
        bytes: Vec<&'static [u8]>,
    ) -> (Result<Entry, String>, SharedMemory) {
        let mut cfg = *config(0, "mb", &[1]);
        cfg.modules = modules;
        let cfg: &'static VmConfig = Box::leak(Box::new(cfg));
        let p = MockPlatform::new();
        let ram = SharedMemory::new(2 << 20);
        let image = GuestImage {
            kernel: &KERNEL,
            kind: ImageKind::of(cfg.kernel.kind),
            initrd: None,
            modules: bytes,
        };
        let vm = Vm::new(&p, cfg, ram.clone(), 0, image);
        (vm.load(&p), ram)
    }

    /// Records what the VM asks of its second-level tables.
    struct RecordingSlat(Arc<Mutex<Vec<vdev::SlatOp>>>);

    impl SlatEditor for RecordingSlat {
        fn map_mmio(&self, gpa: u64, len: u64, host: u64) -> Result<(), String> {
            if host == 0xBAD {
                return Err("refused".into());
            }
            self.0.lock().push(vdev::SlatOp::Map { gpa, len, host });
            Ok(())
        }

        fn unmap(&self, gpa: u64, len: u64) -> Result<(), String> {
            self.0.lock().push(vdev::SlatOp::Unmap { gpa, len });
            Ok(())
        }

        fn map_ram(&self, gpa: u64, len: u64, host: u64, writable: bool) -> Result<(), String> {
            self.0.lock().push(vdev::SlatOp::MapRam {
                gpa,
                len,
                host,
                writable,
            });
            Ok(())
        }
    }

    #[test]
    fn direct_bar_ranges_follow_the_platform_and_unmaps_flush_every_vcpu() {
        let p = MockPlatform::new();
        let cfg = config(0, "pt", &[1, 2]);
        let image = GuestImage {
            kernel: &KERNEL,
            kind: ImageKind::of(cfg.kernel.kind),
            initrd: None,
            modules: Vec::new(),
        };
        let mut vm = Vm::new(&p, cfg, SharedMemory::new(2 << 20), 0, image);
        let log = Arc::new(Mutex::new(Vec::new()));
        vm.set_slat_editor(Box::new(RecordingSlat(log.clone())));
        let kicked = Mutex::new(Vec::new());
        let kick = |v: usize| kicked.lock().push(v);
        let map = vdev::SlatOp::Map {
            gpa: 0xD000_0000,
            len: 0x2_0000,
            host: 0xFEB0_0000,
        };
        // A map needs no flush; a refused map stays trapped (not remembered).
        vm.apply_slat_ops(
            vec![
                map,
                vdev::SlatOp::Map {
                    gpa: 0xD010_0000,
                    len: 0x1000,
                    host: 0xBAD,
                },
            ],
            &kick,
        );
        assert_eq!(*log.lock(), [map]);
        assert!(kicked.lock().is_empty());
        assert!(vm.inboxes.iter().all(|i| !i.take_slat_flush()));
        // An unmap flushes both vCPUs.
        vm.apply_slat_ops(
            vec![vdev::SlatOp::Unmap {
                gpa: 0xD000_0000,
                len: 0x2_0000,
            }],
            &kick,
        );
        assert_eq!(*kicked.lock(), [0, 1]);
        assert!(vm.inboxes.iter().all(|i| i.take_slat_flush()));
        // A reload unmaps whatever the old platform had mapped.
        vm.apply_slat_ops(vec![map], &kick);
        log.lock().clear();
        vm.load(&p).unwrap();
        assert_eq!(
            *log.lock(),
            [vdev::SlatOp::Unmap {
                gpa: 0xD000_0000,
                len: 0x2_0000
            }]
        );
        assert!(vm.inboxes.iter().all(|i| i.take_slat_flush()));
    }

    #[test]
    fn a_shared_region_is_mapped_at_each_load_and_its_device_reattached() {
        use crate::io::IoHub;
        use crate::shm::SharedRegion;
        use scenario::{ShmConfig, ShmPeer};
        static SHM: ShmConfig = ShmConfig {
            name: "ipc0",
            size: 0x2000,
            peers: &[
                ShmPeer {
                    vm: 0,
                    readonly: true,
                    slot: 31,
                    bar2: 0xD000_0000,
                },
                ShmPeer {
                    vm: 1,
                    readonly: false,
                    slot: 31,
                    bar2: 0xD000_0000,
                },
            ],
        };
        let p = MockPlatform::new();
        let cfg = config(0, "a", &[1]);
        let mut hub = IoHub::empty(|_| {});
        let peers = [
            ivshmem::PeerInfo {
                vm: 0,
                name: "a",
                readonly: true,
            },
            ivshmem::PeerInfo {
                vm: 1,
                name: "b",
                readonly: false,
            },
        ];
        let region = ivshmem::Region::new("ipc0", 0x2000, 0x80_0000, &peers, || 0);
        hub.shm.push(SharedRegion {
            cfg: &SHM,
            region: region.clone(),
        });
        let image = GuestImage {
            kernel: &KERNEL,
            kind: ImageKind::of(cfg.kernel.kind),
            initrd: None,
            modules: Vec::new(),
        };
        let mut vm = Vm::new(&p, cfg, SharedMemory::new(2 << 20), 0, image);
        let log = Arc::new(Mutex::new(Vec::new()));
        vm.set_slat_editor(Box::new(RecordingSlat(log.clone())));
        vm.attach_io(Arc::new(hub));
        let map = vdev::SlatOp::MapRam {
            gpa: 0xD000_0000,
            len: 0x2000,
            host: 0x80_0000,
            writable: false,
        };
        // Mapped (read-only) before the guest runs; the device is attached.
        vm.load(&p).unwrap();
        assert_eq!(*log.lock(), [map]);
        assert!(region.peers()[0].2 && !region.peers()[1].2);
        // A reload unmaps and maps again; the new device is the attached one.
        log.lock().clear();
        vm.load(&p).unwrap();
        assert_eq!(
            *log.lock(),
            [
                vdev::SlatOp::Unmap {
                    gpa: 0xD000_0000,
                    len: 0x2000
                },
                map
            ]
        );
        assert!(
            region.peers()[0].2,
            "the old device's drop left the new one attached"
        );
    }

    #[test]
    fn scenario_modules_reach_the_multiboot_information() {
        static MODS: [ModuleConfig; 2] = [
            ModuleConfig {
                name: "testdata",
                cmdline: "testdata a b",
            },
            ModuleConfig {
                name: "other",
                cmdline: "other",
            },
        ];
        let (entry, ram) = load_with(&MODS, vec![b"hello", b"xy"]);
        let Ok(Entry::Multiboot(setup)) = entry else {
            panic!("{entry:?}");
        };
        let info = setup.info_gpa;
        assert_eq!(ram.read_u32(info + 20).unwrap(), 2, "mods_count");
        let list = u64::from(ram.read_u32(info + 24).unwrap());
        let start = u64::from(ram.read_u32(list).unwrap());
        let mut buf = [0u8; 5];
        ram.read(start, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        let string = u64::from(ram.read_u32(list + 8).unwrap());
        let mut s = [0u8; 13];
        ram.read(string, &mut s).unwrap();
        assert_eq!(&s, b"testdata a b\0");
    }

    #[test]
    fn module_errors_name_the_module() {
        static MODS: [ModuleConfig; 1] = [ModuleConfig {
            name: "big",
            cmdline: "big arg",
        }];
        static BIG: [u8; 3 << 20] = [0; 3 << 20];
        let err = load_with(&MODS, vec![&BIG]).0.unwrap_err();
        assert!(err.contains("module 0 of 0x300000 bytes"), "{err}");
        assert!(err.contains("(module \"big\": \"big arg\")"), "{err}");
        let err = load_with(&MODS, Vec::new()).0.unwrap_err();
        assert_eq!(err, "the scenario lists 1 boot modules but 0 were provided");
    }
}
