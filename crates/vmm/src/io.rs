//! The backends behind the virtio devices the hypervisor serves, shared by
//! every VM: disk images in hypervisor memory, the scenario's switches and
//! an entropy source; and how a VM's devices are plugged into its platform.
//!
//! Backends outlive the devices: a VM that reboots gets a new platform and
//! new devices on the same disk (it sees what it wrote) and the same switch
//! port (emptied). A switch port's owner is woken by a [`VmWaker`]: it marks
//! the VM's backend news and kicks the pCPU of its vCPU 0, which serves the
//! frames before its next guest entry.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use scenario::{PassthroughConfig, VirtioKind, VmConfig};
use spin::Mutex;
use vcpu::GuestMemory;
use virtio::blk::{Blk, MemDisk};
use virtio::console::{Console, ConsolePipe};
use virtio::net::Net;
use virtio::rng::{EntropySource, Rng};
use virtio::switch::{PortWaker, Switch};
use virtio::{VirtioDevice, VirtioPci};

/// The machine-wide backends.
pub struct IoHub {
    /// Disk images by boot-module name (writable handles; a read-only VM
    /// gets a read-only view).
    pub disks: Vec<(&'static str, MemDisk)>,
    /// The scenario's switches, by index.
    pub switches: Vec<Arc<Switch>>,
    /// Makes an entropy source (None: the CPU has no RDSEED or RDRAND).
    pub entropy: Option<fn() -> Box<dyn EntropySource>>,
    /// Kicks a pCPU out of the guest or its halt.
    pub kick: fn(u16),
    /// Hands out the physical PCI functions VMs own (None: the machine passes none through).
    pub passthrough: Option<&'static dyn PassthroughProvider>,
    /// The scenario's shared-memory regions, each with its configuration.
    pub shm: Vec<crate::shm::SharedRegion>,
    /// The scenario's vUART links, each with its two ends.
    pub links: Vec<(Arc<crate::uart_link::UartLink>, [scenario::VuartLinkEnd; 2])>,
}

/// Gives VMs the physical functions they own.
pub trait PassthroughProvider: Sync {
    /// VM `vm`'s view of its function `dev`, made at each load of the VM (the function is
    /// reset first, so the VM never inherits its earlier state). `news` is the VM's backend
    /// flag: the function's interrupts set it.
    fn device(
        &self,
        vm: &VmConfig,
        dev: &PassthroughConfig,
        news: &Arc<AtomicBool>,
    ) -> Result<Box<dyn vdev::PciDevice>, String>;
}

impl IoHub {
    /// No backends.
    pub fn empty(kick: fn(u16)) -> Self {
        IoHub {
            disks: Vec::new(),
            switches: Vec::new(),
            entropy: None,
            kick,
            passthrough: None,
            shm: Vec::new(),
            links: Vec::new(),
        }
    }

    /// The disk of boot module `name`.
    pub fn disk(&self, name: &str) -> Option<&MemDisk> {
        self.disks.iter().find(|(n, _)| *n == name).map(|(_, d)| d)
    }
}

/// A VM's own I/O state that outlives its platform.
pub struct VmIo {
    pub hub: Arc<IoHub>,
    /// Set by a backend that brought input (a frame, console bytes).
    pub news: Arc<AtomicBool>,
    /// The virtio console's pipe, if the VM has one.
    pub console: Option<Arc<Mutex<ConsolePipe>>>,
}

impl VmIo {
    pub fn new(hub: Arc<IoHub>, cfg: &VmConfig) -> Self {
        let console = cfg
            .virtio
            .iter()
            .any(|v| v.kind == VirtioKind::Console)
            .then(ConsolePipe::new);
        VmIo {
            hub,
            news: Arc::new(AtomicBool::new(false)),
            console,
        }
    }

    /// Whether a backend brought input since the last call.
    pub fn take_news(&self) -> bool {
        self.news.load(Ordering::Relaxed) && self.news.swap(false, Ordering::Acquire)
    }
}

/// Tells a VM that its switch port has frames (or a shared region's doorbell rang).
pub(crate) struct VmWaker {
    pub(crate) news: Arc<AtomicBool>,
    pub(crate) pcpu: u16,
    pub(crate) kick: fn(u16),
}

impl PortWaker for VmWaker {
    fn wake(&self) {
        // One kick until the VM served what came.
        if !self.news.swap(true, Ordering::Release) {
            (self.kick)(self.pcpu);
        }
    }
}

impl crate::uart_link::LinkWaker for VmWaker {
    fn wake(&self) {
        PortWaker::wake(self);
    }
}

/// Plugs the UARTs VM `cfg` has on vUART links into `platform`, each attached to its link for
/// this load of the VM.
pub fn attach_links(
    cfg: &VmConfig,
    io: &VmIo,
    platform: &mut vm::PcPlatform,
) -> Result<(), String> {
    for (link, ends) in &io.hub.links {
        for (side, end) in ends.iter().enumerate().filter(|(_, e)| e.vm == cfg.id) {
            let waker = Arc::new(VmWaker {
                news: io.news.clone(),
                pcpu: cfg.pcpus.first().copied().unwrap_or(0),
                kick: io.hub.kick,
            });
            let place = vm::UartPlace {
                port: end.uart.port,
                irq: end.uart.irq,
            };
            platform
                .add_linked_uart(place, crate::uart_link::boxed(link.attach(side, waker)))
                .map_err(|e| format!("vUART link {:?}: {e}", link.name()))?;
        }
    }
    Ok(())
}

/// Plugs VM `cfg`'s virtio devices into `platform`, each reaching the VM's
/// RAM through its own handle.
pub fn attach_virtio<M: GuestMemory + Clone + Send + 'static>(
    cfg: &VmConfig,
    io: &VmIo,
    ram: &M,
    platform: &mut vm::PcPlatform,
) -> Result<(), String> {
    let mut net_index = 0;
    for (i, v) in cfg.virtio.iter().enumerate() {
        let device: Box<dyn VirtioDevice> = match v.kind {
            VirtioKind::Blk { module, readonly } => {
                let disk = io
                    .hub
                    .disk(module)
                    .ok_or_else(|| format!("virtio[{i}]: disk module {module:?} not loaded"))?;
                let disk = if readonly {
                    disk.read_only()
                } else {
                    disk.clone()
                };
                Box::new(Blk::new(Box::new(disk)))
            }
            VirtioKind::Net { switch, mac } => {
                let sw = io
                    .hub
                    .switches
                    .get(usize::from(switch))
                    .ok_or_else(|| format!("virtio[{i}]: switch {switch} does not exist"))?;
                let waker = VmWaker {
                    news: io.news.clone(),
                    pcpu: cfg.pcpus.first().copied().unwrap_or(0),
                    // A real-time VM's pCPU is never interrupted for another VM's frames: it
                    // takes them at its next exit (its own timer at the latest).
                    kick: if cfg.vm_type == scenario::VmType::Rt {
                        |_| {}
                    } else {
                        io.hub.kick
                    },
                };
                let port = sw.reattach(
                    &format!("{}/eth{net_index}", cfg.name),
                    mac,
                    Box::new(waker),
                );
                net_index += 1;
                Box::new(Net::new(mac, Box::new(port)))
            }
            VirtioKind::Console => {
                let pipe = io
                    .console
                    .clone()
                    .ok_or_else(|| format!("virtio[{i}]: no console pipe"))?;
                Box::new(Console::new(pipe))
            }
            VirtioKind::Rng => {
                let Some(make) = io.hub.entropy else {
                    log::warn!(
                        "vm {}: virtio[{i}] (rng) left out: the CPU has neither RDSEED nor RDRAND",
                        cfg.name
                    );
                    continue;
                };
                Box::new(Rng::new(make()))
            }
        };
        let (bar0, bar1) = vm::pc::layout::device_bars(v.slot);
        let dev = VirtioPci::new(device, Box::new(ram.clone()), bar0, bar1);
        platform
            .add_pci_device(v.slot, Box::new(dev))
            .map_err(|e| format!("virtio[{i}]: {e}"))?;
    }
    Ok(())
}

/// Plugs VM `cfg`'s physical functions into `platform`.
pub fn attach_passthrough(
    cfg: &VmConfig,
    io: &VmIo,
    platform: &mut vm::PcPlatform,
) -> Result<(), String> {
    if cfg.pci_devices.is_empty() {
        return Ok(());
    }
    let provider = io
        .hub
        .passthrough
        .ok_or_else(|| String::from("PCI passthrough is not available on this machine"))?;
    for dev in cfg.pci_devices {
        let bdf = vdev::Bdf::from_raw(dev.host_bdf);
        let device = provider
            .device(cfg, dev, &io.news)
            .map_err(|e| format!("pci_devices {bdf}: {e}"))?;
        platform
            .add_pci_function(vdev::Bdf::from_raw(dev.guest_bdf()), device)
            .map_err(|e| format!("pci_devices {bdf}: {e}"))?;
    }
    Ok(())
}
