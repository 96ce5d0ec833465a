//! What the shell asks of the hypervisor: the [`ShellBackend`] trait and the plain records it returns.
//!
//! The shell never touches hardware or VM state itself; the hypervisor implements this trait and
//! decides what each request may do (which host memory may be dumped, whether a running vCPU's
//! registers can be read, how a VM is stopped). Every method answers with data or a
//! [`BackendError`]; none may panic on any argument, since every argument comes from the operator.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use log::LevelFilter;
use paging::GuestPhysAddr;
use platform::HostPhysAddr;
use scenario::{LoadOrder, VmType};
use vcpu::{Gprs, SystemState};
use vm::ExitStats;

/// A VM's id: the scenario's id (see [`scenario::VmId`]), the same type end to end.
pub use scenario::VmId;

/// Where a VM is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmState {
    /// Not running: never started, or stopped by the operator.
    Stopped,
    /// Its vCPUs are scheduled.
    Running,
    /// Its vCPUs are held outside the guest until resumed; its state is kept.
    Paused,
    /// It broke itself (triple fault, entry failure) and stopped alone.
    Crashed,
}

impl VmState {
    /// The lower-case name the shell prints.
    pub const fn name(self) -> &'static str {
        match self {
            VmState::Stopped => "stopped",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Crashed => "crashed",
        }
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a vCPU is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuState {
    /// In the guest or about to enter it.
    Running,
    /// The guest ran HLT and waits for an interrupt.
    Halted,
    /// An application processor waiting for the guest's INIT and start-up IPI.
    WaitingForStartup,
    /// Parked outside the guest until an access it made completes (forwarded I/O).
    WaitingForIo,
    /// Held outside the guest (its VM is paused).
    Paused,
    /// Not running (its VM is stopped or crashed).
    Stopped,
}

impl VcpuState {
    /// The lower-case name the shell prints.
    pub const fn name(self) -> &'static str {
        match self {
            VcpuState::Running => "running",
            VcpuState::Halted => "halted",
            VcpuState::WaitingForStartup => "wait-sipi",
            VcpuState::WaitingForIo => "wait-io",
            VcpuState::Paused => "paused",
            VcpuState::Stopped => "stopped",
        }
    }
}

/// A lifecycle request for a pre-launched VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// Stopped or crashed -> running, booting from its kernel again.
    Start,
    /// Running, paused or crashed -> stopped.
    Stop,
    /// Running -> paused.
    Pause,
    /// Paused -> running.
    Resume,
    /// Any state -> running, from a fresh boot.
    Reset,
}

impl Lifecycle {
    /// The verb the shell prints ("cannot stop vm0: ...").
    pub const fn verb(self) -> &'static str {
        match self {
            Lifecycle::Start => "start",
            Lifecycle::Stop => "stop",
            Lifecycle::Pause => "pause",
            Lifecycle::Resume => "resume",
            Lifecycle::Reset => "reset",
        }
    }

    /// Whether the request makes sense for a VM in `state`.
    pub const fn allowed_from(self, state: VmState) -> bool {
        matches!(
            (self, state),
            (Lifecycle::Start, VmState::Stopped | VmState::Crashed)
                | (
                    Lifecycle::Stop,
                    VmState::Running | VmState::Paused | VmState::Crashed
                )
                | (Lifecycle::Pause, VmState::Running)
                | (Lifecycle::Resume, VmState::Paused)
                | (Lifecycle::Reset, _)
        )
    }

    /// The state the request leads to.
    pub const fn target(self) -> VmState {
        match self {
            Lifecycle::Start | Lifecycle::Resume | Lifecycle::Reset => VmState::Running,
            Lifecycle::Stop => VmState::Stopped,
            Lifecycle::Pause => VmState::Paused,
        }
    }
}

/// One line of `vm_list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmInfo {
    pub id: VmId,
    pub name: String,
    pub state: VmState,
    pub load_order: LoadOrder,
    pub vm_type: VmType,
    /// Physical CPUs the VM owns; vCPU `i` runs on `pcpus[i]`.
    pub pcpus: Vec<u16>,
    pub vcpus: u16,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// Whether the VM has a virtual UART `vm_console` can attach to.
    pub console: bool,
    /// Whether the VM has a virtio console (`hvc0`) `vm_console <vm> hvc` can attach to.
    pub hvc: bool,
}

/// One line of `vcpu_list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuInfo {
    pub index: u16,
    pub pcpu: u16,
    pub state: VcpuState,
    /// VM exits of every kind since the VM started.
    pub exits: u64,
}

/// A vCPU's registers, as `vcpu_dumpreg` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegDump {
    pub gprs: Gprs,
    pub rsp: u64,
    pub rip: u64,
    pub rflags: u64,
    pub system: SystemState,
}

/// Counters of one vCPU, as `stats` shows them (the shell sums a VM's vCPUs itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatsLine {
    pub vm: VmId,
    pub vcpu: u16,
    pub exits: ExitStats,
    /// Interrupts and exceptions injected into the guest.
    pub injected: u64,
    /// TSC cycles spent in the guest.
    pub guest_cycles: u64,
    /// TSC cycles spent in the hypervisor on this vCPU's behalf (exit handling).
    pub hv_cycles: u64,
}

/// One redirection-table entry of a physical IOAPIC or a VM's virtual IOAPIC; the shell decodes
/// the raw entry itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoapicLine {
    /// The IOAPIC's id (0 for a virtual IOAPIC).
    pub ioapic: u8,
    pub pin: u8,
    /// The 64-bit redirection-table entry as the (v)IOAPIC holds it.
    pub rte: u64,
}

/// One line of `int`: a vector the hypervisor has set up and how often it fired on each pCPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrqLine {
    /// The global system interrupt behind the vector, if any (LAPIC timer, IPIs: none).
    pub irq: Option<u32>,
    pub vector: u8,
    /// Deliveries per pCPU, indexed by pCPU.
    pub counts: Vec<u64>,
    /// Who handles it ("hv timer", "vm1 passthrough", ...).
    pub owner: String,
}

/// What `mem` shows: the hypervisor's own memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemUsage {
    /// 4 KiB frames the frame allocator manages, and how many are free.
    pub frames_total: u64,
    pub frames_free: u64,
    /// Heap bytes in use (rounded as the allocator hands them out) and managed.
    pub heap_used: u64,
    pub heap_total: u64,
}

/// The virtio device status bits (virtio 1.x, 2.1) and the words the shell prints for them, in
/// the order it prints them.
pub const VIRTIO_STATUS_BITS: [(u8, &str); 6] = [
    (1, "ACK"),
    (2, "DRIVER"),
    (8, "FEATURES_OK"),
    (4, "DRIVER_OK"),
    (64, "NEEDS_RESET"),
    (128, "FAILED"),
];

/// What backs a virtio device, as `virtio` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VirtioBackend {
    /// A disk image: the boot module's name, and whether the guest may not write it.
    Disk { module: String, readonly: bool },
    /// A port on a virtual switch: the interface's MAC address and the switch's name.
    Switch { mac: [u8; 6], switch: String },
    /// Nothing worth naming (console, entropy).
    None,
}

/// One queue of a virtio device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioQueueLine {
    pub index: u16,
    /// The size the driver chose (or the maximum, before it chose).
    pub size: u16,
    pub enabled: bool,
    /// Notifications the driver sent for it.
    pub notifies: u64,
    /// Chains the device served from it.
    pub served: u64,
}

/// One virtio device of a VM, as `virtio` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtioLine {
    /// Its PCI address on the VM's segment ("00:08.0").
    pub slot: String,
    /// The device's short name ("blk", "net", "console", "rng").
    pub kind: String,
    pub backend: VirtioBackend,
    /// The device status byte as the driver last set it (see [`VIRTIO_STATUS_BITS`]).
    pub status: u8,
    /// The features the driver accepted.
    pub features: u64,
    /// Requests (chains) served, and those answered with an error or dropped as malformed.
    pub requests: u64,
    pub errors: u64,
    /// Bytes to the guest (disk reads, frames received, entropy) and from it.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Input lost for want of guest buffers.
    pub dropped: u64,
    /// Interrupts sent (MSI-X messages or INTx assertions).
    pub interrupts: u64,
    /// Notifications from the driver, and how many of them were ignored (before DRIVER_OK, to
    /// a queue that is not enabled, while the device needs a reset).
    pub notifies: u64,
    pub ignored_notifies: u64,
    /// Times the device marked itself DEVICE_NEEDS_RESET, and the ring error that last did.
    pub needs_reset: u64,
    pub fault: Option<String>,
    pub queues: Vec<VirtioQueueLine>,
}

/// One port of a virtual switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchPortLine {
    /// "vm1/eth0".
    pub name: String,
    pub mac: [u8; 6],
    /// Frames and bytes the port sent into the switch.
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames and bytes the switch queued for the port.
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames for the port dropped because its queue was full.
    pub rx_dropped: u64,
    /// Frames the port sent that were too short or too long.
    pub tx_malformed: u64,
    /// Frames waiting for the port's owner.
    pub queued: u64,
}

/// One virtual switch, as `switches` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchLine {
    pub name: String,
    /// Frames sent to every other port (broadcast, multicast, unknown unicast).
    pub flooded: u64,
    pub ports: Vec<SwitchPortLine>,
    /// Learned addresses and the name of the port each was learned on, oldest first.
    pub learned: Vec<([u8; 6], String)>,
}

/// One inter-VM shared-memory region, as `shm` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShmLine {
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Host-physical base.
    pub host: u64,
    /// Its VMs, by peer id.
    pub peers: Vec<ShmPeerLine>,
}

/// One vUART link, as `vuart` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkLine {
    pub name: String,
    /// Its two ends.
    pub ends: [LinkEndLine; 2],
}

/// One end of a vUART link, with the bytes it sent toward the other end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkEndLine {
    pub vm: String,
    /// The UART's I/O port in that VM.
    pub port: u16,
    /// Whether the VM is loaded (not stopped) and its DTR and RTS outputs.
    pub attached: bool,
    pub dtr: bool,
    pub rts: bool,
    /// Bytes the link took from it, those the other end read, those discarded (the other end
    /// was not there), and the times it waited for room.
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub stalls: u64,
    /// Bytes waiting for the other end.
    pub queued: usize,
}

/// One VM of a shared region, with its doorbell counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShmPeerLine {
    pub vm: String,
    pub readonly: bool,
    /// Its ivshmem device's slot and where firmware put BAR 2.
    pub slot: u8,
    pub bar2: u64,
    /// Whether its device is attached (the VM is loaded).
    pub attached: bool,
    /// Doorbells it rang that were accepted, and those accepted for it.
    pub sent: u64,
    pub received: u64,
    /// Interrupts its device raised for them; those merged into a pending vector.
    pub delivered: u64,
    pub coalesced: u64,
    /// Doorbells it rang to no peer, no vector or an absent peer; those over its rate.
    pub dropped: u64,
    pub rate_limited: u64,
    /// Its accesses to the region that exited (a read-only VM's writes, dropped).
    pub trapped: u64,
}

/// One physical PCI function, as `pci` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PciLine {
    /// `bus:device.function` on segment 0.
    pub bdf: String,
    pub vendor_id: u16,
    pub device_id: u16,
    /// Base class << 16 | subclass << 8 | programming interface.
    pub class: u32,
    /// The VM that owns it and where it sees it (None: hidden from every VM).
    pub owner: Option<(String, String)>,
    /// How the owner uses it: `msi-x`, `msi`, `off`, or why it could not be given.
    pub state: String,
    /// Host vectors its messages arrive on.
    pub vectors: Vec<u8>,
    /// Host interrupts taken, resets done and how, DMA faults the IOMMU reported.
    pub interrupts: u64,
    pub resets: u64,
    pub reset_method: String,
    pub dma_faults: u64,
}

/// One IOMMU, as `iommu` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IommuLine {
    /// E.g. `VT-d dmar0 at 0xfed90000`.
    pub name: String,
    /// What is on: translation, interrupt remapping, domains.
    pub state: String,
    pub faults: u64,
    /// The most recent faults, oldest first, one line each.
    pub recent: Vec<String>,
}

/// Why the hypervisor refused or failed a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendError {
    NoSuchVm(VmId),
    NoSuchVcpu {
        vm: VmId,
        vcpu: u16,
    },
    NoSuchPcpu(u16),
    /// The vCPU is in the guest; its registers cannot be read until the VM is paused.
    VcpuRunning {
        vm: VmId,
        vcpu: u16,
    },
    /// Part of the range is not the VM's RAM.
    GuestRange {
        vm: VmId,
        gpa: GuestPhysAddr,
        len: usize,
    },
    /// Part of the range is not host RAM the hypervisor lets the shell read.
    HostRange {
        hpa: HostPhysAddr,
        len: usize,
    },
    /// The VM cannot go through this transition now.
    BadState {
        vm: VmId,
        op: Lifecycle,
        state: VmState,
    },
    /// RDMSR or WRMSR raised #GP on the pCPU.
    MsrFault {
        pcpu: u16,
        msr: u32,
    },
    /// The pCPU did not answer a cross-CPU request in time.
    PcpuTimeout(u16),
    /// The VM has no virtual IOAPIC.
    NoVioapic(VmId),
    /// Anything else, said in a few words ("post-launched VMs are not supported yet").
    Unsupported(&'static str),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::NoSuchVm(vm) => write!(f, "no VM with id {vm}"),
            BackendError::NoSuchVcpu { vm, vcpu } => write!(f, "VM {vm} has no vCPU {vcpu}"),
            BackendError::NoSuchPcpu(p) => write!(f, "no pCPU {p}"),
            BackendError::VcpuRunning { vm, vcpu } => {
                write!(f, "VM {vm} vCPU {vcpu} is running; pause the VM first")
            }
            BackendError::GuestRange { vm, gpa, len } => {
                write!(f, "guest-physical {gpa}+{len:#x} is not RAM of VM {vm}")
            }
            BackendError::HostRange { hpa, len } => {
                write!(f, "host-physical {hpa}+{len:#x} is not readable host RAM")
            }
            BackendError::BadState { vm, op, state } => {
                write!(f, "cannot {} VM {vm}: it is {state}", op.verb())
            }
            BackendError::MsrFault { pcpu, msr } => {
                write!(f, "MSR {msr:#x} raised #GP on pCPU {pcpu}")
            }
            BackendError::PcpuTimeout(p) => write!(f, "pCPU {p} did not answer"),
            BackendError::NoVioapic(vm) => write!(f, "VM {vm} has no virtual IOAPIC"),
            BackendError::Unsupported(what) => f.write_str(what),
        }
    }
}

/// The hypervisor as the shell sees it. Object-safe: the shell holds a `&mut dyn ShellBackend`.
///
/// Methods taking `&mut self` may run code on another pCPU (CPUID, MSRs) or change a VM; the
/// implementation must bound every wait (answer [`BackendError::PcpuTimeout`] rather than hang).
pub trait ShellBackend {
    /// One line: name, version, build ("Quercus 0.1.0 (svm)").
    fn version(&self) -> &str;
    /// Every VM the hypervisor knows, in id order.
    fn vms(&self) -> Vec<VmInfo>;
    /// The vCPUs of `vm`, in index order.
    fn vcpus(&self, vm: VmId) -> Result<Vec<VcpuInfo>, BackendError>;
    /// The registers of one vCPU (the backend may require the VM to be paused).
    fn vcpu_regs(&self, vm: VmId, vcpu: u16) -> Result<RegDump, BackendError>;
    /// Fault injection: the next VM entry of `vcpu` of `vm` fails (its VMCB or VMCS is corrupted
    /// on its pCPU just before that entry), which stops that VM alone.
    fn break_entry(&mut self, vm: VmId, vcpu: u16) -> Result<(), BackendError>;
    /// Copies guest RAM at `gpa` into `buf`, all or nothing.
    fn read_guest(&self, vm: VmId, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), BackendError>;
    /// Copies host memory at `hpa` into `buf`, all or nothing; the backend decides which host
    /// ranges may be read (RAM only, never MMIO with read side effects).
    fn read_host(&self, hpa: HostPhysAddr, buf: &mut [u8]) -> Result<(), BackendError>;
    /// Starts, stops, pauses, resumes or resets a pre-launched VM.
    fn lifecycle(&mut self, vm: VmId, op: Lifecycle) -> Result<(), BackendError>;
    /// Per-vCPU counters of `vm`, or of every VM.
    fn stats(&self, vm: Option<VmId>) -> Result<Vec<StatsLine>, BackendError>;
    /// How many pCPUs the machine has (numbered 0..count).
    fn pcpu_count(&self) -> u16;
    /// Whether `pcpu` belongs to a real-time VM (the shell runs nothing there).
    fn pcpu_is_rt(&self, pcpu: u16) -> bool;
    /// CPUID `leaf`.`sub` executed on `pcpu`: EAX, EBX, ECX, EDX.
    fn cpuid(&mut self, pcpu: u16, leaf: u32, sub: u32) -> Result<[u32; 4], BackendError>;
    /// RDMSR on `pcpu`.
    fn rdmsr(&mut self, pcpu: u16, msr: u32) -> Result<u64, BackendError>;
    /// WRMSR on `pcpu`.
    fn wrmsr(&mut self, pcpu: u16, msr: u32, value: u64) -> Result<(), BackendError>;
    /// The hypervisor's log level.
    fn log_level(&self) -> LevelFilter;
    /// Sets the hypervisor's log level.
    fn set_log_level(&mut self, level: LevelFilter);
    /// Redirection tables of the physical IOAPICs (`None`) or of `vm`'s virtual IOAPIC.
    fn ioapic(&self, vm: Option<VmId>) -> Result<Vec<IoapicLine>, BackendError>;
    /// The vectors the hypervisor has set up, with delivery counts.
    fn interrupts(&self) -> Vec<IrqLine>;
    /// The frame allocator's and the heap's usage.
    fn mem_usage(&self) -> MemUsage;
    /// The virtio devices the hypervisor serves `vm`, in slot order (none: an empty list).
    fn virtio(&self, vm: VmId) -> Result<Vec<VirtioLine>, BackendError>;
    /// The virtual switches, in the scenario's order.
    fn switches(&self) -> Vec<SwitchLine>;
    /// The inter-VM shared-memory regions, in the scenario's order.
    fn shm(&self) -> Vec<ShmLine>;
    /// The vUART links, in the scenario's order.
    fn vuart_links(&self) -> Vec<LinkLine>;
    /// The physical PCI functions, in address order, with their owners.
    fn pci(&self) -> Vec<PciLine>;
    /// The IOMMUs (none: an empty list).
    fn iommu(&self) -> Vec<IommuLine>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn lifecycle_transitions() {
        use Lifecycle::*;
        use VmState::*;
        let ops = [Start, Stop, Pause, Resume, Reset];
        let states = [Stopped, Running, Paused, Crashed];
        let allowed: Vec<(Lifecycle, VmState)> = ops
            .iter()
            .flat_map(|&o| states.iter().map(move |&s| (o, s)))
            .filter(|&(o, s)| o.allowed_from(s))
            .collect();
        assert_eq!(
            allowed,
            [
                (Start, Stopped),
                (Start, Crashed),
                (Stop, Running),
                (Stop, Paused),
                (Stop, Crashed),
                (Pause, Running),
                (Resume, Paused),
                (Reset, Stopped),
                (Reset, Running),
                (Reset, Paused),
                (Reset, Crashed),
            ]
        );
        assert_eq!(Stop.target(), Stopped);
        assert_eq!(Pause.target(), Paused);
        assert_eq!(Reset.target(), Running);
    }

    #[test]
    fn errors_are_one_line_and_name_the_value() {
        let errs = [
            BackendError::NoSuchVm(VmId(7)),
            BackendError::NoSuchVcpu {
                vm: VmId(1),
                vcpu: 9,
            },
            BackendError::NoSuchPcpu(12),
            BackendError::VcpuRunning {
                vm: VmId(0),
                vcpu: 0,
            },
            BackendError::GuestRange {
                vm: VmId(1),
                gpa: GuestPhysAddr(0x1000),
                len: 64,
            },
            BackendError::HostRange {
                hpa: HostPhysAddr(0xfee0_0000),
                len: 16,
            },
            BackendError::BadState {
                vm: VmId(0),
                op: Lifecycle::Pause,
                state: VmState::Stopped,
            },
            BackendError::MsrFault {
                pcpu: 2,
                msr: 0xc000_0080,
            },
            BackendError::PcpuTimeout(3),
            BackendError::NoVioapic(VmId(0)),
            BackendError::Unsupported("not yet"),
        ];
        for e in errs {
            let s = e.to_string();
            assert!(!s.is_empty() && !s.contains('\n'), "{s:?}");
        }
        assert_eq!(
            BackendError::GuestRange {
                vm: VmId(1),
                gpa: GuestPhysAddr(0x1000),
                len: 64,
            }
            .to_string(),
            "guest-physical 0x1000+0x40 is not RAM of VM 1"
        );
        assert_eq!(
            BackendError::MsrFault {
                pcpu: 2,
                msr: 0xc000_0080
            }
            .to_string(),
            "MSR 0xc0000080 raised #GP on pCPU 2"
        );
    }
}
