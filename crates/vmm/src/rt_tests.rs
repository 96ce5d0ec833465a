//! Real-time VMs: nothing but their lifecycle kicks their pCPUs (console input and another
//! VM's traffic wait for the VM's next exit).

use alloc::sync::Arc;

use scenario::{VmConfig, VmId, VmType};

use crate::mock::{config, vm, MockPlatform, Pcpus};
use crate::Vmm;

fn rt_config(id: u16, name: &'static str, pcpus: &'static [u16]) -> &'static VmConfig {
    let mut cfg = *config(id, name, pcpus);
    cfg.vm_type = VmType::Rt;
    alloc::boxed::Box::leak(alloc::boxed::Box::new(cfg))
}

#[test]
fn console_input_kicks_a_standard_vm_but_never_a_real_time_one() {
    let vmm = Arc::new(Vmm::new(MockPlatform::new(), 4));
    vmm.add(vm(vmm.platform(), rt_config(0, "rt0", &[1])))
        .unwrap();
    vmm.add(vm(vmm.platform(), config(1, "std", &[2]))).unwrap();
    let _pcpus = Pcpus::start(&vmm, &[1, 2]);
    vmm.start(VmId(0)).unwrap();
    vmm.start(VmId(1)).unwrap();
    assert!(vmm.get(VmId(0)).unwrap().is_rt());
    let (rt_kicks, std_kicks) = (vmm.platform().kicks(1), vmm.platform().kicks(2));
    for id in [VmId(0), VmId(1)] {
        vmm.input(id, b'x').unwrap();
    }
    let mut out = alloc::vec::Vec::new();
    vmm.pump_consoles(&mut out, |_, _, _| {});
    assert_eq!(
        vmm.platform().kicks(1),
        rt_kicks,
        "typing at an rt VM must not interrupt its pCPU"
    );
    assert!(
        vmm.platform().kicks(2) > std_kicks,
        "a standard VM is woken for its input"
    );
    // Its lifecycle still reaches it (the hypervisor's platform sends an NMI).
    let before = vmm.platform().kicks(1);
    vmm.stop(VmId(0)).unwrap();
    assert!(
        vmm.platform().kicks(1) > before,
        "stop kicks the rt VM's pCPU"
    );
    // Every vCPU leaves before the pCPU threads are joined.
    vmm.stop(VmId(1)).unwrap();
}
