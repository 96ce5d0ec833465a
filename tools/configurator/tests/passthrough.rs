//! The passthrough checks (`pci_devices`, `dma_isolation`), each with a scenario that passes and
//! one that fails, on the test boards in `tests/boards/` (`pt`: one function of each kind, with an
//! IOMMU; `pt-noiommu`: the same without).

use std::path::{Path, PathBuf};

use configurator::{validate_str, Bdf, ConfigError, ErrorKind, Modules, Passthrough, Validated};
use scenario::DmaIsolation;

const FILE: &str = "configs/pt.toml";

fn boards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/boards")
}

fn validate(text: &str) -> Result<Validated, Vec<ConfigError>> {
    validate_str(
        Path::new(FILE),
        text,
        &boards(),
        Modules::Known(&["test-guest"]),
    )
}

fn ok(text: &str) -> Validated {
    match validate(text) {
        Ok(v) => v,
        Err(errors) => panic!(
            "{}\n--- input ---\n{text}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn errors(text: &str) -> Vec<ConfigError> {
    match validate(text) {
        Ok(v) => panic!("expected errors, got {v:#?}\n--- input ---\n{text}"),
        Err(errors) => errors,
    }
}

/// The only error of `text`, which must be at VM `vm` (index) and `field`.
fn single(text: &str, vm: Option<usize>, field: &str) -> ConfigError {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:#?}\n--- input ---\n{text}");
    let error = errors.into_iter().next().unwrap();
    assert_eq!(error.file, Path::new(FILE));
    assert_eq!(error.vm.as_ref().map(|v| v.index), vm, "{error}");
    assert_eq!(error.field, field, "{error}");
    error
}

/// A pre-launched test-guest VM named `name` on pCPU `pcpu` with these extra `key = value` lines.
fn vm(name: &str, pcpu: u16, extra: &str) -> String {
    format!(
        "[[vm]]\nname = \"{name}\"\nload_order = \"pre-launched\"\npcpus = [{pcpu}]\nmemory_mib = 32\n\
         {extra}\nkernel = {{ module = \"test-guest\", type = \"multiboot\" }}\n"
    )
}

/// A scenario on `board` with `top` lines and these VMs.
fn on(board: &str, top: &str, vms: &[String]) -> String {
    format!("board = \"{board}\"\n{top}\n{}", vms.join("\n"))
}

fn pt(vms: &[String]) -> String {
    on("pt", "", vms)
}

fn bdf(text: &str) -> Bdf {
    Bdf::parse(text).unwrap()
}

#[test]
fn plain_and_table_forms() {
    let v = ok(&pt(&[
        vm("a", 1, "pci_devices = [\"00:02.0\", { bdf = \"00:03.0\", slot = 9 }, { bdf = \"00:03.1\", slot = 9 }]"),
        vm("b", 2, "pci_devices = [{ bdf = \"00:08.0\" }]"),
    ]));
    assert_eq!(
        v.vms[0].pci_devices,
        [
            Passthrough {
                host: bdf("00:02.0"),
                guest_slot: 2,
                vendor: 0x8086,
                device: 0x10D3,
                gsi: Some(20),
            },
            Passthrough {
                host: bdf("00:03.0"),
                guest_slot: 9,
                vendor: 0x1234,
                device: 0x0001,
                gsi: None,
            },
            Passthrough {
                host: bdf("00:03.1"),
                guest_slot: 9,
                vendor: 0x1234,
                device: 0x0002,
                gsi: None,
            },
        ]
    );
    assert_eq!(
        v.vms[1].pci_devices[0].guest_slot, 8,
        "no slot: the host device number"
    );
    assert_eq!(v.dma_isolation, DmaIsolation::Iommu, "the default");
    assert!(v.warnings.is_empty());
}

#[test]
fn malformed_bdf() {
    let error = single(
        &pt(&[vm("a", 1, "pci_devices = [\"0:2.0\"]")]),
        Some(0),
        "pci_devices[0]",
    );
    assert_eq!(error.kind, ErrorKind::BdfSyntax("0:2.0".into()));
    assert!(error.to_string().starts_with(
        "configs/pt.toml: vm \"a\" (vm[0]): pci_devices[0]: invalid PCI function \"0:2.0\""
    ));
    let error = single(
        &pt(&[vm(
            "a",
            1,
            "pci_devices = [\"00:02.0\", { bdf = \"00:02.9\", slot = 5 }]",
        )]),
        Some(0),
        "pci_devices[1].bdf",
    );
    assert_eq!(error.kind, ErrorKind::BdfSyntax("00:02.9".into()));
}

#[test]
fn bad_entry_shapes() {
    let error = single(
        &pt(&[vm("a", 1, "pci_devices = [4]")]),
        Some(0),
        "pci_devices",
    );
    assert!(matches!(error.kind, ErrorKind::BadValue { .. }), "{error}");
    let error = single(
        &pt(&[vm(
            "a",
            1,
            "pci_devices = [{ bdf = \"00:02.0\", sloth = 5 }]",
        )]),
        Some(0),
        "pci_devices[0].sloth",
    );
    assert!(
        matches!(error.kind, ErrorKind::UnknownField { .. }),
        "{error}"
    );
}

#[test]
fn function_not_on_board() {
    let error = single(
        &pt(&[vm("a", 1, "pci_devices = [\"00:07.0\"]")]),
        Some(0),
        "pci_devices[0]",
    );
    assert!(
        matches!(&error.kind, ErrorKind::PciNotOnBoard { bdf: b, board, available }
            if *b == bdf("00:07.0") && board == "pt" && available.contains("00:02.0 nic")),
        "{error}"
    );
}

#[test]
fn function_given_to_two_vms() {
    let text = pt(&[
        vm("a", 1, "pci_devices = [\"00:02.0\"]"),
        vm("b", 2, "pci_devices = [\"00:08.0\", \"00:02.0\"]"),
    ]);
    let error = single(&text, Some(1), "pci_devices[1]");
    assert!(
        matches!(&error.kind, ErrorKind::PciTaken { bdf: b, owner } if *b == bdf("00:02.0") && owner.index == 0),
        "{error}"
    );
    assert!(error
        .to_string()
        .contains("already owned by vm \"a\" (vm[0])"));
}

#[test]
fn intx_line_shared_by_two_vms() {
    // 00:02.0 and 00:09.0 both drive GSI 20 on the test board.
    let text = pt(&[
        vm("a", 1, "pci_devices = [\"00:02.0\"]"),
        vm("b", 2, "pci_devices = [\"00:09.0\"]"),
    ]);
    let error = single(&text, Some(1), "pci_devices[0]");
    assert!(
        matches!(&error.kind, ErrorKind::PciGsiShared { bdf: b, gsi: 20, other, owner }
            if *b == bdf("00:09.0") && *other == bdf("00:02.0") && owner.index == 0),
        "{error}"
    );
    assert!(error.to_string().contains("GSI 20"), "{error}");
    // One VM may own both.
    ok(&pt(&[vm(
        "a",
        1,
        "pci_devices = [\"00:02.0\", \"00:09.0\"]",
    )]));
}

#[test]
fn function_listed_twice() {
    let error = single(
        &pt(&[vm(
            "a",
            1,
            "pci_devices = [\"00:02.0\", { bdf = \"00:02.0\", slot = 5 }]",
        )]),
        Some(0),
        "pci_devices[1].bdf",
    );
    assert_eq!(
        error.kind,
        ErrorKind::PciListedTwice {
            bdf: bdf("00:02.0"),
            first: 0
        }
    );
}

#[test]
fn console_uart_function() {
    let error = single(
        &pt(&[vm(
            "a",
            1,
            "pci_devices = [{ bdf = \"00:16.0\", slot = 5 }]",
        )]),
        Some(0),
        "pci_devices[0].bdf",
    );
    assert!(
        matches!(error.kind, ErrorKind::PciConsoleUart { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("console UART"));
}

#[test]
fn bridges_and_platform_functions() {
    for (function, what) in [
        ("00:00.0", "host bridge"),
        ("00:1e.0", "PCI-to-PCI bridge"),
        ("00:1f.0", "ISA/LPC bridge"),
        ("00:19.0", "IOMMU"),
    ] {
        // Slot 5: the host bridge's own slot 0 would be a second error.
        let text = pt(&[vm(
            "a",
            1,
            &format!("pci_devices = [{{ bdf = \"{function}\", slot = 5 }}]"),
        )]);
        let error = single(&text, Some(0), "pci_devices[0].bdf");
        assert!(
            matches!(&error.kind, ErrorKind::PciNotAssignable { what: w, .. } if w.contains(what)),
            "{function}: {error}"
        );
    }
}

#[test]
fn functions_behind_a_bridge_are_passed_whole() {
    ok(&pt(&[vm(
        "a",
        1,
        "pci_devices = [{ bdf = \"01:00.0\", slot = 4 }, \"01:01.0\"]",
    )]));
    let error = single(
        &pt(&[vm("a", 1, "pci_devices = [\"01:01.0\"]")]),
        Some(0),
        "pci_devices[0]",
    );
    assert_eq!(
        error.kind,
        ErrorKind::PciNotWhole {
            bdf: bdf("01:01.0"),
            bridge: bdf("00:1e.0"),
            other: bdf("01:00.0"),
            other_owner: None
        }
    );
    assert!(
        error
            .to_string()
            .contains("01:00.0 is not given to this VM"),
        "{error}"
    );
    let split = errors(&pt(&[
        vm("a", 1, "pci_devices = [{ bdf = \"01:00.0\", slot = 4 }]"),
        vm("b", 2, "pci_devices = [\"01:01.0\"]"),
    ]));
    assert_eq!(split.len(), 2, "{split:#?}");
    assert!(
        split[1]
            .to_string()
            .contains("01:00.0 is owned by vm \"a\" (vm[0])"),
        "{}",
        split[1]
    );
}

#[test]
fn non_zero_function_needs_function_zero() {
    let error = single(
        &pt(&[vm("a", 1, "pci_devices = [\"00:03.1\"]")]),
        Some(0),
        "pci_devices[0]",
    );
    assert_eq!(
        error.kind,
        ErrorKind::PciNoFunctionZero {
            bdf: bdf("00:03.1"),
            function0: bdf("00:03.0"),
            slot: 3,
            elsewhere: false
        }
    );
    let error = single(
        &pt(&[vm(
            "a",
            1,
            "pci_devices = [\"00:03.0\", { bdf = \"00:03.1\", slot = 9 }]",
        )]),
        Some(0),
        "pci_devices[1].bdf",
    );
    assert!(
        error.to_string().contains("00:03.0 is at another slot"),
        "{error}"
    );
    ok(&pt(&[vm(
        "a",
        1,
        "pci_devices = [\"00:03.1\", \"00:03.0\"]",
    )]));
}

#[test]
fn reserved_guest_slots() {
    for (entry, extra, slot) in [
        ("{ bdf = \"00:02.0\", slot = 0 }", "", 0),
        ("{ bdf = \"00:02.0\", slot = 32 }", "", 32),
        (
            "{ bdf = \"00:02.0\", slot = 3 }",
            "pci_test_device = true",
            3,
        ),
    ] {
        let text = pt(&[vm("a", 1, &format!("pci_devices = [{entry}]\n{extra}"))]);
        let error = single(&text, Some(0), "pci_devices[0].slot");
        assert!(
            matches!(error.kind, ErrorKind::GuestSlotReserved { slot: s, .. } if s == slot),
            "{error}"
        );
    }
    // Slot 3 is free without the test device.
    ok(&pt(&[vm(
        "a",
        1,
        "pci_devices = [{ bdf = \"00:02.0\", slot = 3 }]",
    )]));
    // A plain entry for a function at device 0 (common behind a bridge) would land on slot 0.
    let error = single(
        &pt(&[vm("a", 1, "pci_devices = [\"01:00.0\", \"01:01.0\"]")]),
        Some(0),
        "pci_devices[0]",
    );
    assert!(
        matches!(error.kind, ErrorKind::GuestSlotReserved { slot: 0, .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .ends_with("choose another with { bdf = \"01:00.0\", slot = N }"),
        "{error}"
    );
}

#[test]
fn guest_slot_of_a_virtio_device() {
    let virtio = "virtio = [{ type = \"rng\" }, { type = \"console\" }]";
    let error = single(
        &pt(&[vm(
            "a",
            1,
            &format!("pci_devices = [\"00:08.0\"]\n{virtio}"),
        )]),
        Some(0),
        "pci_devices[0]",
    );
    assert_eq!(
        error.kind,
        ErrorKind::GuestSlotVirtio {
            slot: 8,
            virtio: 0,
            bdf: bdf("00:08.0")
        }
    );
    assert!(error.to_string().contains("taken by virtio[0]"), "{error}");
    let error = single(
        &pt(&[vm(
            "a",
            1,
            &format!("pci_devices = [{{ bdf = \"00:08.0\", slot = 9 }}]\n{virtio}"),
        )]),
        Some(0),
        "pci_devices[0].slot",
    );
    assert!(
        matches!(error.kind, ErrorKind::GuestSlotVirtio { virtio: 1, .. }),
        "{error}"
    );
    ok(&pt(&[vm(
        "a",
        1,
        &format!("pci_devices = [{{ bdf = \"00:08.0\", slot = 10 }}]\n{virtio}"),
    )]));
}

#[test]
fn two_functions_on_one_guest_slot() {
    let error = single(
        &pt(&[vm(
            "a",
            1,
            "pci_devices = [\"00:02.0\", { bdf = \"00:08.0\", slot = 2 }]",
        )]),
        Some(0),
        "pci_devices[1].slot",
    );
    assert_eq!(
        error.kind,
        ErrorKind::GuestSlotTaken {
            slot: 2,
            function: 0,
            other: 0,
            other_bdf: bdf("00:02.0")
        }
    );
}

#[test]
fn too_many_functions() {
    let list = vec!["\"00:02.0\""; scenario::MAX_PASSTHROUGH_DEVICES + 1].join(", ");
    let errors = errors(&pt(&[vm("a", 1, &format!("pci_devices = [{list}]"))]));
    assert!(
        errors.iter().any(|e| e.field == "pci_devices"
            && e.kind == ErrorKind::TooManyPassthrough { count: 17, max: 16 }),
        "{errors:#?}"
    );
}

#[test]
fn only_pre_launched_vms_own_functions() {
    let service = vm("s", 1, "pci_devices = [\"00:02.0\"]").replace("pre-launched", "service");
    let error = single(&pt(&[service]), Some(0), "pci_devices");
    assert_eq!(
        error.kind,
        ErrorKind::PassthroughNotPreLaunched {
            load_order: "service"
        }
    );
    assert!(error.to_string().contains("not yet"));
}

#[test]
fn no_iommu_needs_dma_isolation_off() {
    let vms = [vm("a", 1, "pci_devices = [\"00:02.0\"]")];
    let error = single(&on("pt-noiommu", "", &vms), Some(0), "pci_devices");
    assert_eq!(
        error.kind,
        ErrorKind::PassthroughWithoutIommu {
            board: "pt-noiommu".into()
        }
    );
    assert!(
        error.to_string().contains("add `dma_isolation = \"off\"`"),
        "{error}"
    );
    let explicit = single(
        &on("pt-noiommu", "dma_isolation = \"iommu\"", &vms),
        Some(0),
        "pci_devices",
    );
    assert_eq!(explicit.kind, error.kind);
    let at_host = [linux_at_host("a", 1, "host_base = 0x10000000")];
    let v = ok(&on("pt-noiommu", "dma_isolation = \"off\"", &at_host));
    assert_eq!(v.dma_isolation, DmaIsolation::Off);
    assert!(v.warnings.is_empty());
    // No devices, no IOMMU needed.
    ok(&on("pt-noiommu", "", &[vm("a", 1, "")]));
}

/// A Linux VM owning 00:02.0 with these extra lines: with DMA isolation off its RAM sits at its
/// host addresses.
fn linux_at_host(name: &str, pcpu: u16, extra: &str) -> String {
    vm(name, pcpu, &format!("pci_devices = [\"00:02.0\"]\n{extra}"))
        .replace("type = \"multiboot\"", "type = \"bzimage\"")
}

#[test]
fn without_dma_isolation_ram_sits_at_its_host_addresses() {
    let off = |vms: &[String]| on("pt-noiommu", "dma_isolation = \"off\"", vms);
    let v = ok(&off(&[linux_at_host("a", 1, "host_base = 0x10000000")]));
    assert_eq!(v.vms[0].host_base, Some(0x1000_0000));
    // Without a host base there is nowhere to put it.
    let error = single(&off(&[linux_at_host("a", 1, "")]), Some(0), "host_base");
    assert_eq!(
        error.kind,
        ErrorKind::HostAddressesNeedHostBase { memory_mib: 32 }
    );
    assert!(error.to_string().contains("guest-physical = host-physical"));
    // Not below 2 MiB (the guest's low MiB is its own) nor into the guest's PCI hole.
    let high = "host_base = 0xbf000000\nmemory_mib = 32".to_owned();
    let text = off(&[linux_at_host("a", 1, &high).replacen("memory_mib = 32\n", "", 1)]);
    let errors = errors(&text);
    assert!(
        errors.iter().any(|e| e.field == "host_base"
            && e.kind
                == ErrorKind::HostAddressesOutOfRange {
                    base: 0xBF00_0000,
                    end: 0xC100_0000
                }),
        "{errors:#?}"
    );
    // Only a relocatable bzImage can start above 1 MiB at a host address.
    let multiboot = vm(
        "a",
        1,
        "pci_devices = [\"00:02.0\"]\nhost_base = 0x10000000",
    );
    let error = single(&off(&[multiboot]), Some(0), "kernel.type");
    assert_eq!(
        error.kind,
        ErrorKind::HostAddressesNeedBzImage {
            kind: "multiboot".into()
        }
    );
    // A VM without devices keeps its ordinary layout and needs none of it.
    ok(&off(&[
        linux_at_host("a", 1, "host_base = 0x10000000"),
        vm("b", 2, ""),
    ]));
}

#[test]
fn dma_isolation_off_with_an_iommu_is_a_warning() {
    let v = ok(&on(
        "pt",
        "dma_isolation = \"off\"",
        &[linux_at_host("a", 1, "host_base = 0x10000000")],
    ));
    assert_eq!(v.dma_isolation, DmaIsolation::Off);
    assert_eq!(v.warnings.len(), 1);
    assert_eq!(v.warnings[0].field, "dma_isolation");
    assert!(matches!(
        v.warnings[0].kind,
        ErrorKind::DmaIsolationOffWithIommu { iommu: "intel", .. }
    ));
}

#[test]
fn dma_isolation_word() {
    let error = single(
        &on("pt", "dma_isolation = \"none\"", &[vm("a", 1, "")]),
        None,
        "dma_isolation",
    );
    assert!(
        matches!(error.kind, ErrorKind::UnknownValue { .. }),
        "{error}"
    );
}
