//! A [`Platform`] for the host tests: real time from the host clock, pCPUs as threads that sleep
//! briefly for "wait for interrupt", and vCPUs that play a script of exits per (VM, vCPU) and
//! otherwise exit with an external interrupt now and then, as a running guest would.

extern crate std;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use scenario::{
    KernelConfig, KernelKind, LoadOrder, MemoryConfig, VmConfig, VmId, VmType, VuartConfig,
};
use spin::Mutex;
use vcpu::{
    Event, Gprs, GuestMemError, GuestMemory, InitialState, IoAccess, SystemState, VcpuBackend,
    VecMemory, VmExit,
};

use crate::platform::{Platform, VcpuSpec, WithVcpu};
use crate::{GuestImage, ImageKind, Vm, Vmm};

/// One thing a mock vCPU does when entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `OUT port, AL` with AL = `value`.
    Out { port: u16, value: u8 },
    /// VMCALL with RAX = `rax` at CPL 0.
    Hypercall { rax: u64 },
    /// This exit as is.
    Exit(VmExit),
}

/// The mock platform.
pub struct MockPlatform {
    epoch: Instant,
    scripts: Mutex<BTreeMap<(VmId, u16), VecDeque<Step>>>,
    /// vCPUs made so far.
    pub created: AtomicU32,
    /// Making a vCPU fails (as a VMX setup can).
    pub fail_vcpus: AtomicBool,
    /// Kicks so far, per pCPU.
    kicks: Mutex<BTreeMap<u16, u64>>,
    /// Fixed interrupts sent to passed-through LAPICs: (pCPU, vector).
    pub sent_vectors: Mutex<Vec<(u16, u8)>>,
}

impl MockPlatform {
    pub fn new() -> Self {
        MockPlatform {
            epoch: Instant::now(),
            scripts: Mutex::new(BTreeMap::new()),
            created: AtomicU32::new(0),
            fail_vcpus: AtomicBool::new(false),
            kicks: Mutex::new(BTreeMap::new()),
            sent_vectors: Mutex::new(Vec::new()),
        }
    }

    /// How often `pcpu` was kicked.
    pub fn kicks(&self, pcpu: u16) -> u64 {
        self.kicks.lock().get(&pcpu).copied().unwrap_or(0)
    }

    /// vCPU `vcpu` of VM `vm` does `steps` next.
    pub fn script(&self, vm: u16, vcpu: u16, steps: &[Step]) {
        self.scripts
            .lock()
            .entry((VmId(vm), vcpu))
            .or_default()
            .extend(steps.iter().copied());
    }

    fn next_step(&self, key: (VmId, u16)) -> Option<Step> {
        self.scripts.lock().get_mut(&key)?.pop_front()
    }
}

/// Why a mock vCPU was not made.
#[derive(Debug)]
pub struct MockVcpuError;

impl core::fmt::Display for MockVcpuError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("mock setup failed")
    }
}

/// Test RAM as the hypervisor's is: a handle whose clones reach the same bytes.
#[derive(Clone)]
pub struct SharedMemory(std::sync::Arc<spin::Mutex<VecMemory>>);

impl SharedMemory {
    pub fn new(size: usize) -> Self {
        SharedMemory(std::sync::Arc::new(spin::Mutex::new(VecMemory::new(size))))
    }
}

impl GuestMemory for SharedMemory {
    fn size(&self) -> u64 {
        self.0.lock().size()
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemError> {
        self.0.lock().read(gpa, buf)
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), GuestMemError> {
        self.0.lock().write(gpa, data)
    }
}

impl Platform for MockPlatform {
    type Ram = SharedMemory;
    type VcpuError = MockVcpuError;

    fn zero_ram(&self, ram: &SharedMemory) {
        ram.0.lock().0.fill(0);
    }

    fn with_new_vcpu<W: WithVcpu>(
        &self,
        spec: VcpuSpec,
        init: &InitialState,
        body: W,
    ) -> Result<W::Output, MockVcpuError> {
        if self.fail_vcpus.load(Ordering::Acquire) {
            return Err(MockVcpuError);
        }
        self.created.fetch_add(1, Ordering::AcqRel);
        let mut vcpu = MockVcpu {
            platform: self,
            key: (spec.vm, spec.vcpu),
            gprs: init.gprs,
            rip: init.rip,
            rflags: init.rflags | 1 << 9,
            sys: SystemState::default(),
            broken: false,
        };
        Ok(body.run(&mut vcpu))
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn tsc_hz(&self) -> u64 {
        1_000_000_000
    }

    fn kick(&self, pcpu: u16) {
        *self.kicks.lock().entry(pcpu).or_default() += 1;
    }

    fn send_vector(&self, pcpu: u16, vector: u8) {
        self.sent_vectors.lock().push((pcpu, vector));
    }

    fn arm_timer(&self, _after: Option<u64>) {}

    fn wait_for_interrupt(&self) {
        thread::sleep(Duration::from_micros(50));
    }

    fn take_host_interrupt(&self) {}

    fn prepare_pcpu(&self) {}

    fn service_mailbox(&self, _pcpu: u16, _vcpu: Option<&dyn VcpuBackend>) {}

    fn mailbox_pending(&self, _pcpu: u16) -> bool {
        false
    }

    fn host_cpuid(&self, leaf: u32, _subleaf: u32) -> [u32; 4] {
        [leaf, 0, 0, 0]
    }

    fn xcr0_supported(&self) -> u64 {
        0b11
    }

    fn load_xcr0(&self, _value: u64) {}

    fn host_rdmsr(&self, _msr: u32) -> Option<u64> {
        None
    }

    fn host_wrmsr(&self, _msr: u32, _value: u64) -> bool {
        false
    }
}

/// A vCPU that plays its script.
pub struct MockVcpu<'a> {
    platform: &'a MockPlatform,
    key: (VmId, u16),
    gprs: Gprs,
    rip: u64,
    rflags: u64,
    sys: SystemState,
    /// Fault injection asked for: the next entry fails.
    broken: bool,
}

impl VcpuBackend for MockVcpu<'_> {
    fn break_next_entry(&mut self) -> bool {
        self.broken = true;
        true
    }

    fn run(&mut self) -> VmExit {
        if self.broken {
            return VmExit::EntryFailed { raw: 0xBAD };
        }
        match self.platform.next_step(self.key) {
            Some(Step::Out { port, value }) => {
                self.gprs.rax = u64::from(value);
                VmExit::Io(IoAccess {
                    port,
                    size: 1,
                    write: true,
                    string: false,
                    rep: false,
                })
            }
            Some(Step::Hypercall { rax }) => {
                self.gprs.rax = rax;
                VmExit::Hypercall
            }
            Some(Step::Exit(exit)) => exit,
            None => {
                // The guest runs a little, then a host interrupt ends its run.
                thread::sleep(Duration::from_micros(50));
                VmExit::ExternalInterrupt
            }
        }
    }
    fn gprs(&self) -> &Gprs {
        &self.gprs
    }
    fn gprs_mut(&mut self) -> &mut Gprs {
        &mut self.gprs
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn set_rip(&mut self, rip: u64) {
        self.rip = rip;
    }
    fn rsp(&self) -> u64 {
        0
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn set_rflags(&mut self, rflags: u64) {
        self.rflags = rflags | 2;
    }
    fn system_state(&self) -> SystemState {
        self.sys
    }
    fn inject(&mut self, _event: Event) {}
    fn exit_instruction_len(&self) -> Option<u8> {
        Some(1)
    }
    fn read_state_msr(&self, _msr: u32) -> Option<u64> {
        None
    }
    fn write_state_msr(&mut self, _msr: u32, _value: u64) -> bool {
        false
    }
    fn guest_tsc(&self, host_tsc: u64) -> u64 {
        host_tsc
    }
    fn interruptible(&self) -> bool {
        self.rflags & (1 << 9) != 0
    }
    fn request_interrupt_window(&mut self, _on: bool) {}
    fn nmi_injectable(&self) -> bool {
        true
    }
}

/// A one-byte raw kernel (HLT) at 0x1000.
static KERNEL: [u8; 1] = [0xF4];

/// The scenario VM `id` called `name` on `pcpus`, 2 MiB, with a COM1 console.
pub fn config(id: u16, name: &'static str, pcpus: &'static [u16]) -> &'static VmConfig {
    Box::leak(Box::new(VmConfig {
        id,
        name,
        load_order: LoadOrder::PreLaunched,
        vm_type: VmType::Standard,
        pcpus,
        vcpus: pcpus.len() as u16,
        memory: MemoryConfig {
            size: 2 << 20,
            host_base: None,
        },
        kernel: KernelConfig {
            module: "raw",
            kind: KernelKind::Raw {
                load_gpa: 0x1000,
                entry_gpa: 0x1000,
            },
            cmdline: "",
        },
        initrd: None,
        modules: &[],
        console: Some(VuartConfig {
            port: 0x3F8,
            irq: 4,
        }),
        restart_on_reset: false,
        pci_test_device: false,
        virtio: &[],
        pci_devices: &[],
    }))
}

/// A made and loaded VM of `cfg`.
pub fn vm(p: &MockPlatform, cfg: &'static VmConfig) -> Vm<MockPlatform> {
    vm_with_io(p, cfg, None)
}

/// A made and loaded VM of `cfg`, given `hub`'s backends first (its virtio devices are
/// plugged in).
pub fn vm_with_io(
    p: &MockPlatform,
    cfg: &'static VmConfig,
    hub: Option<Arc<crate::io::IoHub>>,
) -> Vm<MockPlatform> {
    let image = GuestImage {
        kernel: &KERNEL,
        kind: ImageKind::of(cfg.kernel.kind),
        initrd: None,
        modules: Vec::new(),
    };
    let mut vm = Vm::new(p, cfg, SharedMemory::new(2 << 20), 0, image);
    if let Some(hub) = hub {
        vm.attach_io(hub);
    }
    vm.load(p).expect("the raw kernel loads");
    vm
}

/// pCPUs as threads, each running whatever is posted to it until dropped.
pub struct Pcpus {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Pcpus {
    pub fn start(vmm: &Arc<Vmm<MockPlatform>>, pcpus: &[u16]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = pcpus
            .iter()
            .map(|&pcpu| {
                let (vmm, stop) = (Arc::clone(vmm), Arc::clone(&stop));
                thread::spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        vmm.run_posted(pcpu);
                        thread::sleep(Duration::from_micros(100));
                    }
                })
            })
            .collect();
        Pcpus { stop, threads }
    }
}

impl Drop for Pcpus {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if thread::panicking() {
            // A failed test may leave a vCPU running: do not wait for it.
            return;
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Waits up to 5 s for `done`.
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}
