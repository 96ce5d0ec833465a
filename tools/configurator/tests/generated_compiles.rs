//! The generator's output compiles against the `scenario` crate and means what the TOML says:
//! `shipped.rs` proves these golden files are exactly what `generate` produces today.

mod default_scenario {
    include!("golden/default.rs");
}

mod partitioned_scenario {
    include!("golden/partitioned.rs");
}

use scenario::{KernelKind, LoadOrder, VmType, VuartConfig};

#[test]
fn default_scenario_static() {
    let s = &default_scenario::SCENARIO;
    assert_eq!((s.name, s.board, s.vms.len()), ("default", "qemu", 1));
    let vm = s.vm_by_name("vm0").unwrap();
    assert_eq!((vm.id, vm.pcpus, vm.vcpus), (0, &[1u16][..], 1));
    assert_eq!(
        (vm.load_order, vm.vm_type),
        (LoadOrder::PreLaunched, VmType::Standard)
    );
    assert_eq!((vm.memory.size, vm.memory.host_base), (32 << 20, None));
    assert_eq!(
        (vm.kernel.module, vm.kernel.kind, vm.kernel.cmdline),
        ("test-guest", KernelKind::Multiboot1, "")
    );
    assert_eq!(
        vm.console,
        Some(VuartConfig {
            port: 0x3F8,
            irq: 4
        })
    );
    assert_eq!((vm.initrd, vm.restart_on_reset), (None, false));
}

#[test]
fn partitioned_scenario_static() {
    let s = &partitioned_scenario::SCENARIO;
    assert_eq!((s.name, s.vms.len()), ("partitioned", 3));
    for (id, vm) in s.vms.iter().enumerate() {
        assert_eq!(usize::from(vm.id), id);
    }
    assert_eq!(s.vm_for_pcpu(2).map(|vm| vm.name), Some("vm1"));
    let crash = s.vm_by_name("vm1").unwrap();
    assert_eq!(
        (crash.kernel.module, crash.kernel.cmdline),
        ("test-guest", "crash")
    );
    let linux = s.vm_by_name("linux").unwrap();
    assert_eq!(
        (linux.kernel.module, linux.initrd),
        ("linux", Some("initrd"))
    );
    assert_eq!(linux.kernel.kind, KernelKind::BzImage);
}
