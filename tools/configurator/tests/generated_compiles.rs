//! The generator's output compiles against the `scenario` crate and means what the TOML says:
//! `shipped.rs` proves these golden files are exactly what `generate` produces today (from
//! `configs/` and, for `virtio.rs`, `tests/scenarios/virtio.toml`).

mod guest_scenario {
    include!("golden/guest.rs");
}

mod default_scenario {
    include!("golden/default.rs");
}

mod partitioned_scenario {
    include!("golden/partitioned.rs");
}

mod virtio_scenario {
    include!("golden/virtio.rs");
}

mod passthrough_nic_vtd_scenario {
    include!("golden/passthrough_nic_vtd.rs");
}

mod passthrough_nic_bochs_scenario {
    include!("golden/passthrough_nic_bochs.rs");
}

mod ipc_ivshmem_scenario {
    include!("golden/ipc_ivshmem.rs");
}

mod ipc_vuart_link_scenario {
    include!("golden/ipc_vuart_link.rs");
}

#[test]
fn ipc_vuart_link_means_what_the_toml_says() {
    let s = &ipc_vuart_link_scenario::SCENARIO;
    assert_eq!(s.vuart_links.len(), 1);
    let wire = &s.vuart_links[0];
    assert_eq!(wire.name, "wire");
    let com2 = scenario::VuartConfig {
        port: 0x2F8,
        irq: 3,
    };
    let (left, right) = (
        s.vm_by_name("left").unwrap(),
        s.vm_by_name("right").unwrap(),
    );
    assert_eq!(
        wire.ends,
        [
            scenario::VuartLinkEnd {
                vm: left.id,
                uart: com2
            },
            scenario::VuartLinkEnd {
                vm: right.id,
                uart: com2
            }
        ]
    );
    assert_eq!(
        wire.ends_of(right.id)
            .map(|(side, _)| side)
            .collect::<Vec<_>>(),
        [1]
    );
    // The consoles stay where they were.
    assert_eq!(left.console.map(|c| c.port), Some(0x3F8));
    assert!(ipc_ivshmem_scenario::SCENARIO.vuart_links.is_empty());
}

#[test]
fn ipc_ivshmem_regions_mean_what_the_toml_says() {
    use scenario::{ShmPeer, SHM_BAR2_BASE};
    let s = &ipc_ivshmem_scenario::SCENARIO;
    assert_eq!(s.shm.len(), 2);
    let (ipc0, ro0) = (&s.shm[0], &s.shm[1]);
    assert_eq!((ipc0.name, ipc0.size), ("ipc0", 0x10000));
    assert_eq!(
        ipc0.peers,
        [
            ShmPeer {
                vm: 0,
                readonly: false,
                slot: 31,
                bar2: SHM_BAR2_BASE
            },
            ShmPeer {
                vm: 1,
                readonly: false,
                slot: 31,
                bar2: SHM_BAR2_BASE
            },
        ]
    );
    // Each VM's second region: the next slot down, BAR 2 after the larger region's.
    assert_eq!((ro0.name, ro0.size), ("ro0", 0x1000));
    assert_eq!(
        ro0.peers,
        [
            ShmPeer {
                vm: 0,
                readonly: false,
                slot: 30,
                bar2: SHM_BAR2_BASE + 0x10000
            },
            ShmPeer {
                vm: 1,
                readonly: true,
                slot: 30,
                bar2: SHM_BAR2_BASE + 0x10000
            },
        ]
    );
    assert_eq!(
        ro0.peer_of(1).map(|(id, p)| (id, p.readonly)),
        Some((1, true))
    );
    assert!(ro0.peer_of(2).is_none(), "carol maps nothing");
    assert!(default_scenario::SCENARIO.shm.is_empty());
}

use scenario::{
    DmaIsolation, KernelKind, LoadOrder, PassthroughConfig, SwitchConfig, VirtioConfig, VirtioKind,
    VmType, VuartConfig, VIRTIO_FIRST_SLOT,
};

#[test]
fn guest_scenario_static() {
    let s = &guest_scenario::SCENARIO;
    assert_eq!((s.name, s.board, s.vms.len()), ("guest", "qemu", 1));
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
    assert!(vm.virtio.is_empty());
    assert!(s.switches.is_empty());
}

/// The demo: Linux with a virtio disk, NIC, rng and console; a responder on the same switch.
#[test]
fn default_scenario_static() {
    let s = &default_scenario::SCENARIO;
    assert_eq!((s.name, s.board, s.vms.len()), ("default", "qemu", 2));
    assert_eq!(s.switches, [SwitchConfig { name: "lan0" }]);
    let linux = s.vm_by_name("linux").unwrap();
    assert_eq!((linux.id, linux.pcpus), (0, &[1u16][..]));
    assert_eq!(
        (linux.kernel.module, linux.kernel.kind, linux.initrd),
        ("linux", KernelKind::BzImage, Some("initrd"))
    );
    assert!(linux.kernel.cmdline.contains("quercus.test=demo"));
    let kinds: Vec<VirtioKind> = linux.virtio.iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        [
            VirtioKind::Blk {
                module: "disk",
                readonly: false
            },
            VirtioKind::Net {
                switch: 0,
                mac: [0x02, 0x51, 0x00, 0x00, 0x00, 0x00]
            },
            VirtioKind::Rng,
            VirtioKind::Console,
        ]
    );
    let responder = s.vm_by_name("responder").unwrap();
    assert_eq!((responder.id, responder.pcpus), (1, &[2u16][..]));
    assert_eq!(
        (responder.kernel.module, responder.kernel.cmdline),
        ("test-guest", "net-responder ip=10.0.0.2")
    );
    assert_eq!(
        responder.virtio,
        [VirtioConfig {
            kind: VirtioKind::Net {
                switch: 0,
                mac: [0x02, 0x51, 0x00, 0x00, 0x01, 0x00]
            },
            slot: 8
        }]
    );
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

#[test]
fn virtio_scenario_static() {
    let s = &virtio_scenario::SCENARIO;
    assert_eq!(
        s.switches,
        [SwitchConfig { name: "lan0" }, SwitchConfig { name: "lan1" }]
    );
    let linux = s.vm_by_name("linux").unwrap();
    let kinds: Vec<VirtioKind> = linux.virtio.iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        [
            VirtioKind::Blk {
                module: "disk",
                readonly: false
            },
            VirtioKind::Net {
                switch: 0,
                mac: [0x02, 0x51, 0x00, 0x00, 0x00, 0x00]
            },
            VirtioKind::Net {
                switch: 1,
                mac: [0x02, 0x51, 0x00, 0x00, 0x00, 0x01]
            },
            VirtioKind::Console,
            VirtioKind::Rng,
            VirtioKind::Blk {
                module: "shared",
                readonly: true
            },
        ]
    );
    for (i, device) in linux.virtio.iter().enumerate() {
        assert_eq!(usize::from(device.slot), usize::from(VIRTIO_FIRST_SLOT) + i);
    }
    let peer = s.vm_by_name("peer").unwrap();
    assert_eq!(
        peer.virtio,
        [
            VirtioConfig {
                kind: VirtioKind::Net {
                    switch: 1,
                    mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
                },
                slot: 8
            },
            VirtioConfig {
                kind: VirtioKind::Net {
                    switch: 0,
                    mac: [0x02, 0x51, 0x00, 0x00, 0x01, 0x01]
                },
                slot: 9
            },
            VirtioConfig {
                kind: VirtioKind::Blk {
                    module: "shared",
                    readonly: true
                },
                slot: 10
            },
        ]
    );
}

#[test]
fn passthrough_scenario_statics() {
    let s = &passthrough_nic_vtd_scenario::SCENARIO;
    assert_eq!(
        (s.board, s.dma_isolation),
        ("qemu-vtd", DmaIsolation::Iommu)
    );
    let vm = s.vm_by_name("linux").unwrap();
    assert_eq!(
        vm.pci_devices,
        [
            PassthroughConfig {
                host_bdf: 5 << 3,
                guest_slot: 5,
                vendor_id: 0x8086,
                device_id: 0x10D3,
                host_gsi: Some(21)
            },
            PassthroughConfig {
                host_bdf: 6 << 3,
                guest_slot: 6,
                vendor_id: 0x1B36,
                device_id: 0x0010,
                host_gsi: Some(22)
            },
        ]
    );
    assert_eq!(vm.pci_devices[1].guest_bdf(), 0x30);
    let s = &passthrough_nic_bochs_scenario::SCENARIO;
    assert_eq!((s.board, s.dma_isolation), ("bochs", DmaIsolation::Off));
    let vm = s.vm_by_name("linux").unwrap();
    assert_eq!(
        vm.pci_devices,
        [PassthroughConfig {
            host_bdf: 2 << 3,
            guest_slot: 2,
            vendor_id: 0x8086,
            device_id: 0x100E,
            host_gsi: Some(9)
        }]
    );
    // Without an IOMMU its RAM sits at its host addresses; other VMs' does not.
    assert_eq!(vm.memory.host_base, Some(0x1000_0000));
    assert!(s.ram_at_host_addresses(vm));
    let vtd = &passthrough_nic_vtd_scenario::SCENARIO;
    assert!(!vtd.ram_at_host_addresses(vtd.vm_by_name("linux").unwrap()));
    // Scenarios without devices keep the default.
    assert!(guest_scenario::SCENARIO.vms[0].pci_devices.is_empty());
    assert_eq!(guest_scenario::SCENARIO.dma_isolation, DmaIsolation::Iommu);
}

#[test]
fn no_shipped_golden_scenario_asks_for_cache_allocation() {
    for cache in [
        &guest_scenario::CACHE,
        &default_scenario::CACHE,
        &partitioned_scenario::CACHE,
        &virtio_scenario::CACHE,
        &passthrough_nic_vtd_scenario::CACHE,
        &passthrough_nic_bochs_scenario::CACHE,
        &ipc_ivshmem_scenario::CACHE,
        &ipc_vuart_link_scenario::CACHE,
    ] {
        assert!(!cache.is_used());
        assert_eq!(*cache, scenario::CacheAllocation::NONE);
    }
}
