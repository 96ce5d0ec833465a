//! A two-VM [`ShellBackend`] for host tests (this crate's and the hypervisor's): RAM, registers,
//! MSRs, lifecycle state, virtio devices and switches in plain vectors, and a log of every call
//! that asks for an action.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use log::LevelFilter;
use paging::GuestPhysAddr;
use platform::HostPhysAddr;
use scenario::{LoadOrder, VmType};
use vcpu::{ExitKind, Gprs, IoAccess, SegmentState, SystemState, VmExit};
use vm::ExitStats;

use crate::backend::{
    BackendError, IoapicLine, IommuLine, IrqLine, Lifecycle, LinkEndLine, LinkLine, MemUsage,
    PciLine, RegDump, ShellBackend, ShmLine, ShmPeerLine, StatsLine, SwitchLine, SwitchPortLine,
    VcpuInfo, VcpuState, VirtioBackend, VirtioLine, VirtioQueueLine, VmId, VmInfo, VmState,
};

/// Where [`MockBackend`]'s readable host memory starts.
pub const MOCK_HOST_BASE: u64 = 0x10_0000;
/// How many bytes of host memory it lets the shell read.
pub const MOCK_HOST_SIZE: usize = 0x1000;
/// MSR numbers it knows (others fault): IA32_TIME_STAMP_COUNTER, IA32_APIC_BASE, IA32_EFER.
pub const MOCK_MSRS: [u32; 3] = [0x10, 0x1b, 0xc000_0080];

/// The mock: 4 pCPUs; `rtvm` (id 0, real-time, pCPU 1, 64 KiB, a vUART) and `linux` (id 1,
/// standard, pCPUs 2-3, 128 KiB, a vUART and a virtio console), both pre-launched and running. Fields are public so a test can reshape
/// the machine.
#[derive(Clone, Debug)]
pub struct MockBackend {
    pub vms: Vec<VmInfo>,
    /// Guest RAM of `vms[i]`, filled with `(gpa % 251) as u8`.
    pub ram: Vec<Vec<u8>>,
    pub host: Vec<u8>,
    pub pcpus: u16,
    pub level: LevelFilter,
    pub msrs: BTreeMap<(u16, u32), u64>,
    /// Every call that acts on a pCPU or VM, as text ("lifecycle 1 stop", "wrmsr 2 0x10 0x5").
    pub calls: Vec<String>,
    /// The virtio devices of `vms[i]`: none for `rtvm`; a disk, a network interface that needs
    /// a reset and a failed entropy device for `linux` ([`mock_virtio`]).
    pub virtio: Vec<Vec<VirtioLine>>,
    /// `lan0` (two ports, two learned addresses) and `lan1` (empty) ([`mock_switches`]).
    pub switches: Vec<SwitchLine>,
    /// `ipc0` ([`mock_shm`]).
    pub shm: Vec<ShmLine>,
    /// `ctl` ([`mock_links`]).
    pub links: Vec<LinkLine>,
    /// Two physical functions: edu passed to `linux` as 00:04.0, a hidden NIC.
    pub pci: Vec<PciLine>,
    /// One VT-d unit with one fault.
    pub iommu: Vec<IommuLine>,
}

/// `linux`'s virtio devices in the mock: every counter distinct and non-zero somewhere.
pub fn mock_virtio() -> Vec<VirtioLine> {
    let queue = |index, size, enabled, notifies, served| VirtioQueueLine {
        index,
        size,
        enabled,
        notifies,
        served,
    };
    vec![
        VirtioLine {
            slot: "00:08.0".into(),
            kind: "blk".into(),
            backend: VirtioBackend::Disk {
                module: "disk0".into(),
                readonly: false,
            },
            status: 0x0f,
            features: 0x1_3000_0044,
            requests: 12,
            errors: 1,
            bytes_in: 6144,
            bytes_out: 512,
            dropped: 0,
            interrupts: 13,
            notifies: 14,
            ignored_notifies: 0,
            needs_reset: 0,
            fault: None,
            queues: vec![queue(0, 128, true, 14, 12)],
        },
        VirtioLine {
            slot: "00:09.0".into(),
            kind: "net".into(),
            backend: VirtioBackend::Switch {
                mac: [2, 0, 0, 0, 0, 0x0a],
                switch: "lan0".into(),
            },
            status: 0x4f,
            features: 0x1_3001_0020,
            requests: 40,
            errors: 2,
            bytes_in: 3000,
            bytes_out: 2400,
            dropped: 3,
            interrupts: 41,
            notifies: 30,
            ignored_notifies: 5,
            needs_reset: 1,
            fault: Some("descriptor index 9 outside a table of 8".into()),
            queues: vec![queue(0, 256, true, 10, 20), queue(1, 256, false, 20, 20)],
        },
        VirtioLine {
            slot: "00:0a.0".into(),
            kind: "rng".into(),
            backend: VirtioBackend::None,
            status: 0x83,
            features: 0,
            requests: 0,
            errors: 0,
            bytes_in: 0,
            bytes_out: 0,
            dropped: 0,
            interrupts: 0,
            notifies: 2,
            ignored_notifies: 2,
            needs_reset: 0,
            fault: None,
            queues: vec![queue(0, 64, false, 2, 0)],
        },
    ]
}

/// The mock's shared region: `ipc0`, 64 KiB, linux (rw) and rtvm (ro, not loaded).
pub fn mock_shm() -> Vec<ShmLine> {
    let peer = |vm: &str, readonly, attached, sent, received| ShmPeerLine {
        vm: vm.into(),
        readonly,
        slot: 31,
        bar2: 0xD000_0000,
        attached,
        sent,
        received,
        delivered: received,
        coalesced: 0,
        dropped: 0,
        rate_limited: 0,
        trapped: 0,
    };
    vec![ShmLine {
        name: "ipc0".into(),
        size: 0x10000,
        host: 0x4000_0000,
        peers: vec![
            ShmPeerLine {
                dropped: 2,
                rate_limited: 5,
                ..peer("linux", false, true, 7, 3)
            },
            ShmPeerLine {
                coalesced: 1,
                trapped: 4,
                ..peer("rtvm", true, false, 3, 7)
            },
        ],
    }]
}

/// The mock's vUART link: `ctl`, linux COM2 (open) to rtvm COM2 (stopped).
pub fn mock_links() -> Vec<LinkLine> {
    vec![LinkLine {
        name: "ctl".into(),
        ends: [
            LinkEndLine {
                vm: "linux".into(),
                port: 0x2F8,
                attached: true,
                dtr: true,
                rts: true,
                sent: 1200,
                delivered: 1100,
                dropped: 100,
                stalls: 4,
                queued: 0,
            },
            LinkEndLine {
                vm: "rtvm".into(),
                port: 0x2F8,
                attached: false,
                dtr: false,
                rts: false,
                sent: 1100,
                delivered: 1100,
                dropped: 0,
                stalls: 0,
                queued: 0,
            },
        ],
    }]
}

/// The mock's switches.
pub fn mock_switches() -> Vec<SwitchLine> {
    vec![
        SwitchLine {
            name: "lan0".into(),
            flooded: 7,
            ports: vec![
                SwitchPortLine {
                    name: "linux/eth0".into(),
                    mac: [2, 0, 0, 0, 0, 0x0a],
                    tx_frames: 5,
                    tx_bytes: 300,
                    rx_frames: 9,
                    rx_bytes: 540,
                    rx_dropped: 1,
                    tx_malformed: 2,
                    queued: 3,
                },
                SwitchPortLine {
                    name: "uplink".into(),
                    mac: [2, 0, 0, 0, 0, 1],
                    tx_frames: 11,
                    tx_bytes: 1100,
                    rx_frames: 4,
                    rx_bytes: 240,
                    rx_dropped: 0,
                    tx_malformed: 0,
                    queued: 0,
                },
            ],
            learned: vec![
                ([2, 0, 0, 0, 0, 0x0a], "linux/eth0".into()),
                ([2, 0, 0, 0, 0, 1], "uplink".into()),
            ],
        },
        SwitchLine {
            name: "lan1".into(),
            flooded: 0,
            ports: Vec::new(),
            learned: Vec::new(),
        },
    ]
}

impl Default for MockBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MockBackend {
    /// The machine described above.
    pub fn new() -> Self {
        let vm = |id: u16, name: &str, vm_type, pcpus: Vec<u16>, memory: u64| VmInfo {
            id: VmId(id),
            name: name.into(),
            state: VmState::Running,
            load_order: LoadOrder::PreLaunched,
            vm_type,
            vcpus: pcpus.len() as u16,
            pcpus,
            memory,
            console: true,
            hvc: id == 1,
        };
        let vms = vec![
            vm(0, "rtvm", VmType::Rt, vec![1], 0x1_0000),
            vm(1, "linux", VmType::Standard, vec![2, 3], 0x2_0000),
        ];
        let ram = vms
            .iter()
            .map(|v| (0..v.memory).map(|a| (a % 251) as u8).collect())
            .collect();
        let pcpus = 4;
        let mut msrs = BTreeMap::new();
        for p in 0..pcpus {
            msrs.insert((p, MOCK_MSRS[0]), 0x1000 * u64::from(p));
            msrs.insert((p, MOCK_MSRS[1]), 0xfee0_0900);
            msrs.insert((p, MOCK_MSRS[2]), 0xd01);
        }
        MockBackend {
            vms,
            ram,
            host: b"QUERCUS!"
                .iter()
                .copied()
                .cycle()
                .take(MOCK_HOST_SIZE)
                .collect(),
            pcpus,
            level: LevelFilter::Info,
            msrs,
            calls: Vec::new(),
            virtio: vec![Vec::new(), mock_virtio()],
            switches: mock_switches(),
            shm: mock_shm(),
            links: mock_links(),
            pci: vec![
                PciLine {
                    bdf: "00:04.0".into(),
                    vendor_id: 0x1234,
                    device_id: 0x11e8,
                    class: 0x00ff00,
                    owner: Some(("linux".into(), "00:04.0".into())),
                    state: "msi".into(),
                    vectors: vec![0x30],
                    interrupts: 7,
                    resets: 1,
                    reset_method: "none".into(),
                    dma_faults: 2,
                },
                PciLine {
                    bdf: "00:05.0".into(),
                    vendor_id: 0x8086,
                    device_id: 0x10d3,
                    class: 0x020000,
                    ..PciLine::default()
                },
            ],
            iommu: vec![IommuLine {
                name: "VT-d dmar0 at 0xfed90000".into(),
                state: "translation on, interrupt remapping on, 1 domain".into(),
                faults: 2,
                recent: vec!["00:04.0 write at 0x9000000: not present".into()],
            }],
        }
    }

    fn vm(&self, vm: VmId) -> Result<(usize, &VmInfo), BackendError> {
        self.vms
            .iter()
            .enumerate()
            .find(|(_, v)| v.id == vm)
            .ok_or(BackendError::NoSuchVm(vm))
    }

    fn check_pcpu(&self, pcpu: u16) -> Result<(), BackendError> {
        if pcpu < self.pcpus {
            Ok(())
        } else {
            Err(BackendError::NoSuchPcpu(pcpu))
        }
    }
}

impl ShellBackend for MockBackend {
    fn version(&self) -> &str {
        "Quercus 0.1.0 (mock)"
    }

    fn vms(&self) -> Vec<VmInfo> {
        self.vms.clone()
    }

    fn vcpus(&self, vm: VmId) -> Result<Vec<VcpuInfo>, BackendError> {
        let (_, info) = self.vm(vm)?;
        Ok(info
            .pcpus
            .iter()
            .enumerate()
            .map(|(i, &pcpu)| VcpuInfo {
                index: i as u16,
                pcpu,
                state: match info.state {
                    VmState::Running if i > 0 => VcpuState::Halted,
                    VmState::Running => VcpuState::Running,
                    VmState::Paused => VcpuState::Paused,
                    VmState::Stopped | VmState::Crashed => VcpuState::Stopped,
                },
                exits: 100 * (i as u64 + 1),
            })
            .collect())
    }

    fn break_entry(&mut self, vm: VmId, vcpu: u16) -> Result<(), BackendError> {
        let (_, info) = self.vm(vm)?;
        if vcpu >= info.vcpus {
            return Err(BackendError::NoSuchVcpu { vm, vcpu });
        }
        self.calls.push(format!("break_entry {} {vcpu}", vm.0));
        Ok(())
    }

    fn vcpu_regs(&self, vm: VmId, vcpu: u16) -> Result<RegDump, BackendError> {
        let (_, info) = self.vm(vm)?;
        if vcpu >= info.vcpus {
            return Err(BackendError::NoSuchVcpu { vm, vcpu });
        }
        if info.state == VmState::Running {
            return Err(BackendError::VcpuRunning { vm, vcpu });
        }
        let v = u64::from(vcpu);
        Ok(RegDump {
            gprs: Gprs {
                rax: 0xaaaa,
                rbx: 0xbbbb,
                rcx: 0xcccc,
                rdx: 0xdddd,
                r15: 0xf15,
                ..Gprs::default()
            },
            rsp: 0x8000 - 0x100 * v,
            rip: 0x10_0000 + v,
            rflags: 0x202,
            system: SystemState {
                cr0: 0x8000_0011,
                cr3: 0x1000,
                cr4: 0x20,
                efer: 0x500,
                cpl: 0,
                cs: SegmentState {
                    selector: 0x8,
                    base: 0,
                    limit: 0xffff_ffff,
                    attrib: 0xa9b,
                },
            },
        })
    }

    fn read_guest(&self, vm: VmId, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), BackendError> {
        let (i, _) = self.vm(vm)?;
        let err = BackendError::GuestRange {
            vm,
            gpa,
            len: buf.len(),
        };
        let ram = &self.ram[i];
        let start = usize::try_from(gpa.0).map_err(|_| err.clone())?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| ram.get(start..end))
            .ok_or(err)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn read_host(&self, hpa: HostPhysAddr, buf: &mut [u8]) -> Result<(), BackendError> {
        let err = BackendError::HostRange {
            hpa,
            len: buf.len(),
        };
        let start = hpa
            .0
            .checked_sub(MOCK_HOST_BASE)
            .and_then(|o| usize::try_from(o).ok())
            .ok_or(err.clone())?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.host.get(start..end))
            .ok_or(err)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn lifecycle(&mut self, vm: VmId, op: Lifecycle) -> Result<(), BackendError> {
        let (i, info) = self.vm(vm)?;
        if !op.allowed_from(info.state) {
            return Err(BackendError::BadState {
                vm,
                op,
                state: info.state,
            });
        }
        self.vms[i].state = op.target();
        self.calls.push(format!("lifecycle {} {}", vm.0, op.verb()));
        Ok(())
    }

    fn stats(&self, vm: Option<VmId>) -> Result<Vec<StatsLine>, BackendError> {
        if let Some(vm) = vm {
            self.vm(vm)?;
        }
        let io = VmExit::Io(IoAccess {
            port: 0x3f8,
            size: 1,
            write: true,
            string: false,
            rep: false,
        });
        let mut lines = Vec::new();
        for info in self.vms.iter().filter(|v| vm.is_none_or(|id| id == v.id)) {
            for v in 0..info.vcpus {
                let mut exits = ExitStats::new();
                for _ in 0..=v {
                    exits.record(&VmExit::Hlt);
                }
                for _ in 0..10 * (u64::from(info.id.0) + 1) {
                    exits.record(&io);
                }
                exits.record(&VmExit::Cpuid);
                debug_assert!(exits.get(ExitKind::Cpuid) == 1);
                lines.push(StatsLine {
                    vm: info.id,
                    vcpu: v,
                    exits,
                    injected: 5 + u64::from(v),
                    guest_cycles: 9_000,
                    hv_cycles: 1_000 * (u64::from(v) + 1),
                });
            }
        }
        Ok(lines)
    }

    fn pcpu_count(&self) -> u16 {
        self.pcpus
    }

    fn pcpu_is_rt(&self, pcpu: u16) -> bool {
        self.vms
            .iter()
            .any(|v| v.vm_type == VmType::Rt && v.pcpus.contains(&pcpu))
    }

    fn cpuid(&mut self, pcpu: u16, leaf: u32, sub: u32) -> Result<[u32; 4], BackendError> {
        self.check_pcpu(pcpu)?;
        self.calls.push(format!("cpuid {pcpu} {leaf:#x} {sub:#x}"));
        Ok(match leaf {
            // "AuthenticAMD" in EBX, EDX, ECX.
            0 => [0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65],
            _ => [leaf, sub, u32::from(pcpu), 0x1234_5678],
        })
    }

    fn rdmsr(&mut self, pcpu: u16, msr: u32) -> Result<u64, BackendError> {
        self.check_pcpu(pcpu)?;
        self.calls.push(format!("rdmsr {pcpu} {msr:#x}"));
        self.msrs
            .get(&(pcpu, msr))
            .copied()
            .ok_or(BackendError::MsrFault { pcpu, msr })
    }

    fn wrmsr(&mut self, pcpu: u16, msr: u32, value: u64) -> Result<(), BackendError> {
        self.check_pcpu(pcpu)?;
        self.calls.push(format!("wrmsr {pcpu} {msr:#x} {value:#x}"));
        match self.msrs.get_mut(&(pcpu, msr)) {
            Some(v) => {
                *v = value;
                Ok(())
            }
            None => Err(BackendError::MsrFault { pcpu, msr }),
        }
    }

    fn log_level(&self) -> LevelFilter {
        self.level
    }

    fn set_log_level(&mut self, level: LevelFilter) {
        self.level = level;
    }

    fn ioapic(&self, vm: Option<VmId>) -> Result<Vec<IoapicLine>, BackendError> {
        match vm {
            None => Ok(vec![
                IoapicLine {
                    ioapic: 0,
                    pin: 0,
                    rte: 1 << 16,
                },
                IoapicLine {
                    ioapic: 0,
                    pin: 4,
                    // Vector 0x34, lowest priority, logical, level, active low, remote IRR, dest 0x3.
                    rte: (3 << 56)
                        | (1 << 15)
                        | (1 << 14)
                        | (1 << 13)
                        | (1 << 11)
                        | (1 << 8)
                        | 0x34,
                },
            ]),
            Some(vm) => {
                let (_, info) = self.vm(vm)?;
                if info.vm_type == VmType::Rt {
                    return Err(BackendError::NoVioapic(vm));
                }
                Ok(vec![IoapicLine {
                    ioapic: 0,
                    pin: 4,
                    rte: 0x24,
                }])
            }
        }
    }

    fn mem_usage(&self) -> MemUsage {
        MemUsage {
            frames_total: 131_072,
            frames_free: 100_000,
            heap_used: 3 << 20,
            heap_total: 16 << 20,
        }
    }

    fn virtio(&self, vm: VmId) -> Result<Vec<VirtioLine>, BackendError> {
        let (i, _) = self.vm(vm)?;
        Ok(self.virtio.get(i).cloned().unwrap_or_default())
    }

    fn switches(&self) -> Vec<SwitchLine> {
        self.switches.clone()
    }

    fn shm(&self) -> Vec<ShmLine> {
        self.shm.clone()
    }

    fn vuart_links(&self) -> Vec<LinkLine> {
        self.links.clone()
    }

    fn pci(&self) -> Vec<PciLine> {
        self.pci.clone()
    }

    fn iommu(&self) -> Vec<IommuLine> {
        self.iommu.clone()
    }

    fn interrupts(&self) -> Vec<IrqLine> {
        vec![
            IrqLine {
                irq: None,
                vector: 0xef,
                counts: vec![1000, 10, 0, 3],
                owner: "hv timer".into(),
            },
            IrqLine {
                irq: Some(4),
                vector: 0x34,
                counts: vec![12],
                owner: "uart".into(),
            },
        ]
    }
}
