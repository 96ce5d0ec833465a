//! `[[shm]]` regions: each kind of error names the file, the region and the field (and the VM
//! where one is concerned); a valid region places each VM's ivshmem device.

use std::path::{Path, PathBuf};

use configurator::{validate_str, ConfigError, ErrorKind, Modules, ShmError, Validated};

const FILE: &str = "configs/ipc.toml";

fn boards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/boards")
}

/// VMs a (pCPU 1), b (pCPU 2, a virtio-rng at slot 8), c (pCPU 3, `extra_c` appended to its
/// table), then `shm`.
fn scenario(mib_c: u64, extra_c: &str, shm: &str) -> String {
    let vm = |name: &str, pcpu: u32, mib: u64, extra: &str| {
        format!(
            "[[vm]]\nname = \"{name}\"\nload_order = \"pre-launched\"\npcpus = [{pcpu}]\nmemory_mib = {mib}\n{extra}\n[vm.kernel]\nmodule = \"test-guest\"\ntype = \"multiboot\"\n"
        )
    };
    format!(
        "board = \"qemu\"\n{}{}[[vm.virtio]]\ntype = \"rng\"\n{}{}",
        vm("a", 1, 32, ""),
        vm("b", 2, 32, ""),
        vm("c", 3, mib_c, extra_c),
        shm
    )
}

fn validate(text: &str) -> Result<Validated, Vec<ConfigError>> {
    validate_str(
        Path::new(FILE),
        text,
        &boards(),
        Modules::Known(&["test-guest"]),
    )
}

/// The only error of `text`: its field and kind.
fn single(text: &str) -> (String, ErrorKind) {
    let errors = validate(text).expect_err(text);
    assert_eq!(errors.len(), 1, "{errors:#?}\n{text}");
    let e = errors.into_iter().next().unwrap();
    assert_eq!(e.file, Path::new(FILE));
    assert!(e.vm.is_none(), "{e}");
    (e.field.clone(), e.kind)
}

fn region(name: &str, size: &str, vms: &str) -> String {
    format!("[[shm]]\nname = \"{name}\"\nsize = {size}\nvms = [{vms}]\n")
}

#[test]
fn a_valid_region_places_each_vms_device() {
    let text = scenario(
        32,
        "",
        &(region(
            "big",
            "0x200000",
            "\"a\", { vm = \"c\", readonly = true }, \"b\"",
        ) + &region("small", "0x1000", "\"c\", { vm = \"a\", slot = 5 }")),
    );
    let v = validate(&text).unwrap();
    let big = &v.shm[0];
    assert_eq!((big.name.as_str(), big.size), ("big", 0x20_0000));
    let summary: Vec<(u16, bool, u8, u64)> = big
        .peers
        .iter()
        .map(|p| (p.vm, p.readonly, p.slot, p.bar2))
        .collect();
    assert_eq!(
        summary,
        [
            (0, false, 31, 0xD000_0000),
            (2, true, 31, 0xD000_0000),
            (1, false, 31, 0xD000_0000)
        ]
    );
    let small: Vec<(u16, u8, u64)> = v.shm[1]
        .peers
        .iter()
        .map(|p| (p.vm, p.slot, p.bar2))
        .collect();
    // c's second region takes slot 30; a chose 5; both BARs follow the 2 MiB one.
    assert_eq!(small, [(2, 30, 0xD020_0000), (0, 5, 0xD020_0000)]);
    let generated = configurator::generate(&v);
    assert!(generated.contains("ShmPeer { vm: 2, readonly: true, slot: 31, bar2: 0xd0000000 }"));
}

#[test]
fn an_unknown_vm_is_named_with_the_ones_there_are() {
    let (field, kind) = single(&scenario(32, "", &region("r", "0x1000", "\"a\", \"zz\"")));
    assert_eq!(field, "shm \"r\" (shm[0]): vms[1]");
    assert_eq!(
        kind,
        ErrorKind::Shm(ShmError::UnknownVm {
            name: "zz".into(),
            available: "a, b, c".into()
        })
    );
}

#[test]
fn sizes_must_be_whole_pages_powers_of_two_and_not_too_big() {
    for (size, problem) in [
        ("0x1800", "not a multiple of 4 KiB (4096)"),
        ("0", "less than the 4 KiB (4096 bytes) a region needs"),
        ("0x3000", "not a power of two (it is the size of a PCI BAR)"),
        (
            "0x20000000",
            "more than the largest region, 256 MiB (268435456)",
        ),
    ] {
        let (field, kind) = single(&scenario(32, "", &region("r", size, "\"a\", \"b\"")));
        assert_eq!(field, "shm \"r\" (shm[0]): size");
        match kind {
            ErrorKind::Shm(ShmError::BadSize { problem: p, .. }) => assert_eq!(p, problem),
            other => panic!("{size}: {other:?}"),
        }
    }
}

#[test]
fn a_vm_listed_twice_and_a_lonely_vm_are_refused() {
    let (field, kind) = single(&scenario(
        32,
        "",
        &region("r", "0x1000", "\"a\", { vm = \"a\", readonly = true }"),
    ));
    assert_eq!(field, "shm \"r\" (shm[0]): vms[1].vm");
    assert_eq!(
        kind,
        ErrorKind::Shm(ShmError::VmTwice {
            name: "a".into(),
            first: 0
        })
    );
    let (field, kind) = single(&scenario(32, "", &region("r", "0x1000", "\"a\"")));
    assert_eq!(field, "shm \"r\" (shm[0]): vms");
    assert_eq!(kind, ErrorKind::Shm(ShmError::TooFewVms { count: 1 }));
}

#[test]
fn the_regions_count_against_the_boards_memory() {
    // 32 + 32 + 1920 MiB of VMs and 64 MiB of reserve fill the 2048 MiB board exactly.
    let (field, kind) = single(&scenario(1920, "", &region("r", "0x1000", "\"a\", \"b\"")));
    assert_eq!(field, "shm \"r\" (shm[0]): size");
    assert!(
        matches!(
            kind,
            ErrorKind::Shm(ShmError::MemoryExceeded {
                shm_bytes: 0x1000,
                board_mib: 2048,
                ..
            })
        ),
        "{kind:?}"
    );
    assert!(validate(&scenario(1918, "", &region("r", "0x1000", "\"a\", \"b\""))).is_ok());
}

#[test]
fn slots_other_devices_take_are_refused() {
    let (field, kind) = single(&scenario(
        32,
        "",
        &region("r", "0x1000", "\"a\", { vm = \"b\", slot = 8 }"),
    ));
    assert_eq!(field, "shm \"r\" (shm[0]): vms[1].slot");
    assert_eq!(
        kind,
        ErrorKind::Shm(ShmError::BadSlot {
            slot: 8,
            name: "b".into(),
            reason: "is taken by its virtio[0]".into()
        })
    );
    let (_, kind) = single(&scenario(
        32,
        "pci_test_device = true",
        &region("r", "0x1000", "\"a\", { vm = \"c\", slot = 3 }"),
    ));
    assert!(
        matches!(kind, ErrorKind::Shm(ShmError::BadSlot { slot: 3, .. })),
        "{kind:?}"
    );
    let (_, kind) = single(&scenario(
        32,
        "",
        &region("r", "0x1000", "\"a\", { vm = \"c\", slot = 32 }"),
    ));
    assert!(
        matches!(kind, ErrorKind::Shm(ShmError::BadSlot { slot: 32, .. })),
        "{kind:?}"
    );
}

#[test]
fn a_vms_regions_share_256_mib_of_window() {
    let text = scenario(
        32,
        "",
        &(region("r1", "0x10000000", "\"a\", \"b\"") + &region("r2", "0x1000", "\"a\", \"c\"")),
    );
    let errors = validate(&text).expect_err("too much");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].field, "shm \"r2\" (shm[1]): size");
    assert_eq!(
        errors[0].to_string(),
        "configs/ipc.toml: shm \"r2\" (shm[1]): size: vm \"a\" maps 268439552 bytes of regions in all, more than the 268435456 bytes (256 MiB) of PCI memory window they share"
    );
}

#[test]
fn duplicate_names_unknown_fields_and_post_launched_vms() {
    let (field, kind) = single(&scenario(
        32,
        "",
        &(region("r", "0x1000", "\"a\", \"b\"") + &region("r", "0x1000", "\"b\", \"c\"")),
    ));
    assert_eq!(field, "shm \"r\" (shm[1]): name");
    assert_eq!(
        kind,
        ErrorKind::Shm(ShmError::DuplicateName {
            name: "r".into(),
            first: 0
        })
    );
    let (field, kind) = single(&scenario(
        32,
        "",
        "[[shm]]\nname = \"r\"\nsize = 4096\nvms = [\"a\", \"b\"]\nreadonly = true\n",
    ));
    assert_eq!(field, "shm \"r\" (shm[0]): readonly");
    assert!(matches!(kind, ErrorKind::UnknownField { .. }), "{kind:?}");
}
