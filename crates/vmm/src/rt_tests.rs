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

#[test]
fn a_passed_through_vcpu_gets_edge_interrupts_as_physical_ipis_and_the_rest_by_nmi_kick() {
    use vm::VmHost;
    let vmm = Arc::new(Vmm::new(MockPlatform::new(), 4));
    let made = vm(vmm.platform(), rt_config(0, "rt0", &[1, 2]));
    let p = vmm.platform();
    let host = crate::host::Host {
        vm: &made,
        pcpu: 1,
        slot: &made.vcpus[0],
        p,
        scale: crate::platform::TscScale::new(crate::Platform::tsc_hz(p)),
        advance: None,
    };
    let inbox = &made.inboxes[1];
    inbox.set_passthrough(true);
    // vCPU 0 sends vCPU 1 (APIC ID 1) a fixed IPI, vector 0x45: its pCPU 2 gets the vector on
    // its physical LAPIC, and no kick.
    let out = vm::smp::send_ipi(&made.inboxes, 0, (1 << 56) | 0x45, false).unwrap();
    assert_eq!(out.targets, 0b10);
    let kicks = p.kicks(2);
    host.kick(1);
    assert_eq!(*p.sent_vectors.lock(), [(2, 0x45)]);
    assert_eq!(p.kicks(2), kicks, "an edge interrupt needs no kick");
    // An NMI needs the vCPU's run loop: an NMI kick (the platform's kick), no vector.
    vm::smp::send_ipi(&made.inboxes, 0, (1 << 56) | 0x400, false).unwrap();
    host.kick(1);
    assert_eq!(p.kicks(2), kicks + 1);
    assert_eq!(p.sent_vectors.lock().len(), 1);
    // Without passthrough every interrupt is a kick, as before.
    inbox.set_passthrough(false);
    vm::smp::send_ipi(&made.inboxes, 0, (1 << 56) | 0x46, false).unwrap();
    host.kick(1);
    assert_eq!(p.kicks(2), kicks + 2);
    assert_eq!(p.sent_vectors.lock().len(), 1);
}
