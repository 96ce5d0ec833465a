//! The shipped boards and scenarios under `configs/` validate, and they (with the test scenarios
//! under `tests/scenarios/`) generate the golden files that `generated_compiles.rs` builds against
//! the `scenario` crate.
//!
//! After an intended change to the generator, refresh the golden files with
//! `QUERCUS_BLESS=1 cargo test -p configurator --test shipped`.

use std::fs;
use std::path::{Path, PathBuf};

use configurator::{
    generate, load, load_and_validate, Bdf, Board, Iommu, Modules, Validated, Vendor,
};

/// The module names xtask builds for the shipped scenarios.
const GUESTS: &[&str] = &[
    "test-guest",
    "test-guest-crash",
    "linux",
    "initrd",
    "vmlinux",
    "lowload",
    "testdisk",
    "testdisk2",
    "disk",
];

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

#[test]
fn every_shipped_scenario_validates() {
    let mut count = 0;
    for entry in fs::read_dir(configs()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(errors) = load_and_validate(&path, GUESTS) {
                panic!(
                    "{}",
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            count += 1;
        }
    }
    assert!(
        count >= 3,
        "expected default.toml, guest.toml and partitioned.toml"
    );
}

#[test]
fn shipped_boards() {
    let boards = configs().join("boards");
    let here = Path::new("scenario.toml");
    let qemu = Board::load(&boards, "qemu", here).unwrap();
    assert_eq!(
        (qemu.vendor, qemu.pcpus, qemu.memory_mib, qemu.hv_memory_mib),
        (Vendor::Amd, 4, 2048, 64)
    );
    assert_eq!(qemu.uarts.com1, Some(0x3F8));
    let bochs = Board::load(&boards, "bochs", here).unwrap();
    assert_eq!(
        (bochs.vendor, bochs.pcpus, bochs.memory_mib),
        (Vendor::IntelOrAmd, 2, 512)
    );
    assert_eq!(bochs.iommu, Iommu::None);
    let e1000 = bochs.pci_function(Bdf::parse("00:02.0").unwrap()).unwrap();
    assert_eq!(
        (e1000.vendor, e1000.device, e1000.class),
        (0x8086, 0x100E, 0x02_0000)
    );
}

/// The passthrough boards: the qemu board plus an IOMMU and the devices at fixed addresses.
#[test]
fn passthrough_boards() {
    let boards = configs().join("boards");
    let here = Path::new("scenario.toml");
    for (name, iommu, count) in [("qemu-vtd", Iommu::Intel, 8), ("qemu-amdvi", Iommu::Amd, 9)] {
        let board = Board::load(&boards, name, here).unwrap();
        assert_eq!(
            (board.vendor, board.pcpus, board.memory_mib, board.iommu),
            (Vendor::Amd, 4, 2048, iommu),
            "{name}"
        );
        assert_eq!(board.pci.len(), count, "{name}");
        let ids: Vec<(String, u16, u16, u32)> = ["00:04.0", "00:05.0", "00:06.0"]
            .iter()
            .map(|bdf| {
                let f = board.pci_function(Bdf::parse(bdf).unwrap()).unwrap();
                (f.bdf.to_string(), f.vendor, f.device, f.class)
            })
            .collect();
        assert_eq!(
            ids,
            [
                ("00:04.0".to_owned(), 0x1234, 0x11E8, 0x00_FF00),
                ("00:05.0".to_owned(), 0x8086, 0x10D3, 0x02_0000),
                ("00:06.0".to_owned(), 0x1B36, 0x0010, 0x01_0802),
            ],
            "{name}"
        );
    }
    let amd = Board::load(&boards, "qemu-amdvi", here).unwrap();
    let iommu = amd.pci_function(Bdf::parse("00:02.0").unwrap()).unwrap();
    assert_eq!((iommu.vendor, iommu.class), (0x1022, 0x08_0600));
}

#[test]
fn guest_scenario() {
    let v = load_and_validate(&configs().join("guest.toml"), GUESTS).unwrap();
    assert_eq!((v.name.as_str(), v.board.name.as_str()), ("guest", "qemu"));
    let vm = &v.vms[0];
    assert_eq!(
        (vm.name.as_str(), vm.pcpus.as_slice(), vm.memory_bytes),
        ("vm0", &[1u16][..], 32 << 20)
    );
    assert_eq!(v.modules(), ["test-guest"]);
}

/// The demo `cargo xtask run` boots: Linux and the responder on one switch.
#[test]
fn default_scenario() {
    let v = load_and_validate(&configs().join("default.toml"), GUESTS).unwrap();
    assert_eq!(
        (v.name.as_str(), v.board.name.as_str()),
        ("default", "qemu")
    );
    let vms: Vec<_> = v
        .vms
        .iter()
        .map(|vm| (vm.name.as_str(), vm.pcpus.clone(), vm.memory_bytes >> 20))
        .collect();
    assert_eq!(vms, [("linux", vec![1], 128), ("responder", vec![2], 32)]);
    let mut modules = v.modules();
    modules.sort_unstable();
    assert_eq!(modules, ["disk", "initrd", "linux", "test-guest"]);
}

#[test]
fn partitioned_scenario() {
    let v = load_and_validate(&configs().join("partitioned.toml"), GUESTS).unwrap();
    let summary: Vec<_> = v
        .vms
        .iter()
        .map(|vm| {
            (
                vm.id,
                vm.pcpus.clone(),
                vm.kernel.module.as_str(),
                vm.kernel.cmdline.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (0, vec![1], "test-guest", ""),
            (1, vec![2], "test-guest", "crash"),
            (2, vec![3], "linux", "console=ttyS0 quiet")
        ]
    );
}

/// Test scenarios that are not shipped (`tests/scenarios/`), checked with the shipped boards.
fn test_scenario(name: &str) -> Validated {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/scenarios/{name}.toml"));
    let modules: Vec<&str> = GUESTS.iter().copied().chain(["disk", "shared"]).collect();
    load(&path, &configs().join("boards"), Modules::Known(&modules)).unwrap()
}

#[test]
fn generated_files_match_golden() {
    for name in [
        "guest",
        "default",
        "partitioned",
        "virtio",
        "passthrough-nic-vtd",
        "passthrough-nic-bochs",
        "ipc-ivshmem",
        "ipc-vuart-link",
    ] {
        let v = match name {
            "virtio" => test_scenario(name),
            _ => load_and_validate(&configs().join(format!("{name}.toml")), GUESTS).unwrap(),
        };
        let generated = generate(&v);
        let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/golden/{}.rs", name.replace('-', "_")));
        if std::env::var_os("QUERCUS_BLESS").is_some() {
            fs::write(&golden, &generated).unwrap();
        }
        let expected = fs::read_to_string(&golden).unwrap_or_default();
        assert!(
            generated == expected,
            "{} is stale: rerun with QUERCUS_BLESS=1\n--- generated ---\n{generated}",
            golden.display()
        );
    }
}
