//! One test per kind of scenario error: each asserts the file, VM and field the error names.

use std::path::{Path, PathBuf};

use configurator::{
    generate, validate_str, ConfigError, ErrorKind, Modules, Validated, Virtio, VirtioDevice, VmRef,
};

const FILE: &str = "configs/bad.toml";
const MODULES: &[&str] = &[
    "test-guest",
    "test-guest-crash",
    "linux",
    "rootfs",
    "testdata",
    "disk",
    "shared",
];

fn boards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/boards")
}

fn validate(text: &str) -> Result<Validated, Vec<ConfigError>> {
    validate_str(Path::new(FILE), text, &boards(), Modules::Known(MODULES))
}

fn errors(text: &str) -> Vec<ConfigError> {
    match validate(text) {
        Ok(v) => panic!("expected errors, got {v:#?}\n--- input ---\n{text}"),
        Err(errors) => errors,
    }
}

/// The only error of `text`, which must be at `vm` (index) and `field`.
fn single(text: &str, vm: Option<usize>, field: &str) -> ErrorKind {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:#?}\n--- input ---\n{text}");
    let error = errors.into_iter().next().unwrap();
    assert_eq!(error.file, Path::new(FILE));
    assert_eq!(error.vm.as_ref().map(|v| v.index), vm, "{error}");
    assert_eq!(error.field, field, "{error}");
    error.kind
}

/// A `[[vm]]` table with sensible defaults; `overrides` replace (or, with value `-`, remove)
/// keys, and `kernel.X` / `console.X` keys go to the sub-tables.
fn vm(overrides: &[(&str, &str)]) -> String {
    let mut fields: Vec<(String, String)> = [
        ("name", "\"a\""),
        ("load_order", "\"pre-launched\""),
        ("pcpus", "[1]"),
        ("memory_mib", "32"),
        ("kernel.module", "\"test-guest\""),
        ("kernel.type", "\"multiboot\""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (key, value) in overrides {
        match fields.iter_mut().find(|(k, _)| k == key) {
            Some(field) => field.1 = value.to_string(),
            None => fields.push((key.to_string(), value.to_string())),
        }
    }
    fields.retain(|(_, v)| v != "-");
    let mut out = String::from("[[vm]]\n");
    for table in ["", "kernel.", "console."] {
        let in_table: Vec<_> = fields
            .iter()
            .filter(|(k, _)| match table {
                "" => !k.contains('.'),
                prefix => k.starts_with(prefix),
            })
            .collect();
        if !table.is_empty() && !in_table.is_empty() {
            out += &format!("[vm.{}]\n", table.trim_end_matches('.'));
        }
        for (key, value) in in_table {
            out += &format!("{} = {value}\n", key.trim_start_matches(table));
        }
    }
    out
}

/// [`vm`] followed by one `[[vm.virtio]]` table per device, each given as `key = value` lines
/// separated by `;`.
fn vm_with(overrides: &[(&str, &str)], devices: &[&str]) -> String {
    let mut out = vm(overrides);
    for device in devices {
        out += "[[vm.virtio]]\n";
        for line in device.split(';') {
            out += line.trim();
            out += "\n";
        }
    }
    out
}

/// The second VM's name and pCPU, for two-VM scenarios.
const B: &[(&str, &str)] = &[("name", "\"b\""), ("pcpus", "[2]")];
/// A net device on switch `lan`.
const LAN: &str = "type = \"net\"; switch = \"lan\"";

fn scenario(vms: &[String]) -> String {
    format!("board = \"qemu\"\n\n{}", vms.join("\n"))
}

#[test]
fn valid_scenario_passes() {
    let text = scenario(&[
        vm(&[("console.vuart", "\"com2\""), ("restart_on_reset", "true")]),
        vm(&[
            ("name", "\"b\""),
            ("pcpus", "[2, 3]"),
            ("vm_type", "\"rt\""),
            ("host_base", "0x10000000"),
            ("modules", "[\"testdata a=1  b\", \"rootfs\", \"testdata\"]"),
        ]),
    ]);
    let v = validate(&text).unwrap();
    assert_eq!(v.name, "bad", "defaults to the file stem");
    assert_eq!(v.board.name, "qemu");
    assert_eq!(v.vms.len(), 2);
    assert_eq!(
        v.vms[1]
            .modules
            .iter()
            .map(|m| (m.name.as_str(), m.cmdline.as_str()))
            .collect::<Vec<_>>(),
        [
            ("testdata", "testdata a=1  b"),
            ("rootfs", "rootfs"),
            ("testdata", "testdata")
        ]
    );
    assert!(v.vms[0].modules.is_empty());
    assert_eq!(v.vms[1].id, 1);
    assert_eq!(v.vms[1].pcpus, [2, 3]);
    assert_eq!(v.vms[1].host_base, Some(0x1000_0000));
    assert_eq!(v.vms[0].memory_bytes, 32 << 20);
    assert_eq!(v.vms[0].console.map(|c| (c.port, c.irq)), Some((0x2F8, 3)));
    assert!(v.vms[0].restart_on_reset);
    assert_eq!(v.modules(), ["test-guest", "testdata", "rootfs"]);
}

#[test]
fn syntax_error_has_line_and_column() {
    let text = "board = \"qemu\"\n[[vm]]\nname = \"a\nload_order = 1\n";
    let errors = errors(text);
    assert!(errors.iter().all(|e| e.vm.is_none()));
    match &errors[0].kind {
        ErrorKind::Syntax { line, column, .. } => assert_eq!((*line, *column), (3, 10)),
        other => panic!("{other:?}"),
    }
    assert!(errors[0]
        .to_string()
        .starts_with("configs/bad.toml: TOML syntax error at line 3, column 10: "));
}

#[test]
fn unknown_top_level_field() {
    let text = format!("bord = \"qemu\"\n{}", vm(&[]));
    let errors = errors(&text);
    assert_eq!(errors[0].field, "bord");
    assert!(
        matches!(&errors[0].kind, ErrorKind::UnknownField { line: 1, column: 1, expected } if expected.contains("`board`")),
        "{errors:?}"
    );
}

#[test]
fn unknown_vm_field() {
    let text = scenario(&[vm(&[]), vm(&[("name", "\"b\""), ("memory", "\"32M\"")])]);
    let kind = single(&text, Some(1), "memory");
    assert!(matches!(kind, ErrorKind::UnknownField { .. }), "{kind:?}");
}

#[test]
fn unknown_kernel_field() {
    let text = scenario(&[vm(&[("kernel.entry_point", "0x1000")])]);
    let kind = single(&text, Some(0), "kernel.entry_point");
    assert!(matches!(kind, ErrorKind::UnknownField { .. }), "{kind:?}");
}

#[test]
fn missing_required_fields() {
    let kind = single(&scenario(&[vm(&[("pcpus", "-")])]), Some(0), "pcpus");
    assert_eq!(kind, ErrorKind::MissingField);
    let kind = single(
        &scenario(&[vm(&[("kernel.module", "-")])]),
        Some(0),
        "kernel.module",
    );
    assert_eq!(kind, ErrorKind::KernelMissing);
    let kind = single(
        &scenario(&[vm(&[("kernel.type", "-")])]),
        Some(0),
        "kernel.type",
    );
    assert_eq!(kind, ErrorKind::TypeRequired);
    let kind = single(&vm(&[]), None, "board");
    assert_eq!(kind, ErrorKind::MissingField);
}

#[test]
fn wrong_value_type_names_field_and_position() {
    let text = scenario(&[vm(&[("memory_mib", "\"32\"")])]);
    let kind = single(&text, Some(0), "memory_mib");
    assert!(
        matches!(&kind, ErrorKind::BadValue { line: 7, message, .. } if message.contains("invalid type")),
        "{kind:?}"
    );
    let kind = single(&scenario(&[vm(&[("pcpus", "[1, -2]")])]), Some(0), "pcpus");
    assert!(matches!(kind, ErrorKind::BadValue { .. }), "{kind:?}");
}

#[test]
fn vm_entry_not_a_table() {
    let kind = single("board = \"qemu\"\nvm = [1]\n", Some(0), "");
    assert_eq!(kind, ErrorKind::VmNotTable("an integer"));
}

#[test]
fn zero_vms() {
    assert_eq!(single("board = \"qemu\"\n", None, "vm"), ErrorKind::NoVms);
    assert_eq!(
        single("board = \"qemu\"\nvm = []\n", None, "vm"),
        ErrorKind::NoVms
    );
}

#[test]
fn duplicate_vm_names() {
    let text = scenario(&[vm(&[]), vm(&[("pcpus", "[2]")])]);
    let kind = single(&text, Some(1), "name");
    assert_eq!(
        kind,
        ErrorKind::DuplicateName {
            name: "a".into(),
            first: VmRef {
                index: 0,
                name: Some("a".into())
            }
        }
    );
}

#[test]
fn invalid_vm_names() {
    let long = format!("\"{}\"", "x".repeat(33));
    for name in ["\"\"", "\"Rt0\"", "\"a b\"", &long] {
        let kind = single(&scenario(&[vm(&[("name", name)])]), Some(0), "name");
        assert!(
            matches!(kind, ErrorKind::InvalidName { .. }),
            "{name}: {kind:?}"
        );
    }
}

#[test]
fn invalid_scenario_name() {
    let text = format!("name = \"My Scenario\"\n{}", scenario(&[vm(&[])]));
    let kind = single(&text, None, "name");
    assert!(matches!(kind, ErrorKind::InvalidName { .. }), "{kind:?}");
}

#[test]
fn empty_pcpus() {
    let kind = single(&scenario(&[vm(&[("pcpus", "[]")])]), Some(0), "pcpus");
    assert_eq!(kind, ErrorKind::EmptyPcpus);
}

#[test]
fn pcpu_out_of_range() {
    let kind = single(&scenario(&[vm(&[("pcpus", "[1, 4]")])]), Some(0), "pcpus");
    assert_eq!(
        kind,
        ErrorKind::PcpuOutOfRange {
            pcpu: 4,
            board: "qemu".into(),
            count: 4
        }
    );
}

#[test]
fn pcpu_zero_is_the_hypervisors() {
    let kind = single(&scenario(&[vm(&[("pcpus", "[0, 1]")])]), Some(0), "pcpus");
    assert_eq!(kind, ErrorKind::PcpuZero);
    assert!(kind.to_string().contains("management CPU"));
}

#[test]
fn overlapping_pcpus_between_vms() {
    let text = scenario(&[
        vm(&[("name", "\"lin\""), ("pcpus", "[1, 2]")]),
        vm(&[
            ("name", "\"rt0\""),
            ("pcpus", "[2, 3]"),
            ("vm_type", "\"rt\""),
        ]),
    ]);
    let errors = errors(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        "configs/bad.toml: vm \"rt0\" (vm[1]): pcpus: pCPU 2 is already owned by vm \"lin\" (vm[0]) (pCPUs are never shared)"
    );
}

#[test]
fn duplicate_pcpu_within_vm() {
    let kind = single(
        &scenario(&[vm(&[("pcpus", "[1, 2, 1]")])]),
        Some(0),
        "pcpus",
    );
    assert_eq!(kind, ErrorKind::PcpuDuplicate(1));
}

#[test]
fn memory_zero_and_unaligned() {
    let kind = single(
        &scenario(&[vm(&[("memory_mib", "0")])]),
        Some(0),
        "memory_mib",
    );
    assert_eq!(kind, ErrorKind::MemoryZero);
    let kind = single(
        &scenario(&[vm(&[("memory_mib", "33")])]),
        Some(0),
        "memory_mib",
    );
    assert_eq!(kind, ErrorKind::MemoryNotAligned(33));
}

#[test]
fn total_memory_exceeds_board() {
    // qemu: 2048 MiB, 64 reserved: 1024 + 960 fits exactly, 2 MiB more does not.
    let fits = scenario(&[
        vm(&[("memory_mib", "1024")]),
        vm(&[("name", "\"b\""), ("pcpus", "[2]"), ("memory_mib", "960")]),
    ]);
    assert!(validate(&fits).is_ok());
    let text = scenario(&[
        vm(&[("memory_mib", "1024")]),
        vm(&[("name", "\"b\""), ("pcpus", "[2]"), ("memory_mib", "962")]),
    ]);
    let kind = single(&text, Some(1), "memory_mib");
    assert_eq!(
        kind,
        ErrorKind::MemoryExceeded {
            vms_mib: 1986,
            hv_mib: 64,
            total_mib: 2050,
            board_mib: 2048,
            board: "qemu".into()
        }
    );
}

#[test]
fn host_base_misaligned() {
    let kind = single(
        &scenario(&[vm(&[("host_base", "0x10100000")])]),
        Some(0),
        "host_base",
    );
    assert_eq!(kind, ErrorKind::HostBaseNotAligned(0x1010_0000));
}

#[test]
fn host_base_past_board_memory() {
    // 2048 MiB = 0x8000_0000; 0x7F00_0000 + 32 MiB ends at 0x8100_0000.
    let kind = single(
        &scenario(&[vm(&[("host_base", "0x7F000000")])]),
        Some(0),
        "host_base",
    );
    assert!(
        matches!(
            kind,
            ErrorKind::HostBasePastMemory {
                base: 0x7F00_0000,
                end: 0x8100_0000,
                ..
            }
        ),
        "{kind:?}"
    );
}

#[test]
fn host_base_overlapping_other_vm() {
    let text = scenario(&[
        vm(&[("host_base", "0x10000000")]),
        vm(&[
            ("name", "\"b\""),
            ("pcpus", "[2]"),
            ("host_base", "0x11000000"),
        ]),
    ]);
    let kind = single(&text, Some(1), "host_base");
    assert!(
        matches!(&kind, ErrorKind::HostBaseOverlap { other, other_base: 0x1000_0000, other_end: 0x1200_0000, .. } if other.index == 0),
        "{kind:?}"
    );
}

#[test]
fn unknown_kernel_type() {
    let kind = single(
        &scenario(&[vm(&[("kernel.type", "\"pe32\"")])]),
        Some(0),
        "kernel.type",
    );
    assert!(
        matches!(&kind, ErrorKind::UnknownValue { value, .. } if value == "pe32"),
        "{kind:?}"
    );
}

#[test]
fn raw_kernel_needs_addresses() {
    let text = scenario(&[vm(&[
        ("kernel.type", "\"raw\""),
        ("kernel.load_addr", "0x100000"),
    ])]);
    assert_eq!(
        single(&text, Some(0), "kernel.entry"),
        ErrorKind::RawNeedsAddress
    );
    let errors = errors(&scenario(&[vm(&[("kernel.type", "\"raw\"")])]));
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["kernel.load_addr", "kernel.entry"]);
}

#[test]
fn raw_kernel_addresses_inside_ram() {
    let text = scenario(&[vm(&[
        ("kernel.type", "\"raw\""),
        ("kernel.load_addr", "0x100000"),
        ("kernel.entry", "0x2000000"),
    ])]);
    let kind = single(&text, Some(0), "kernel.entry");
    assert_eq!(
        kind,
        ErrorKind::AddressOutsideRam {
            addr: 0x200_0000,
            mib: 32
        }
    );
}

#[test]
fn addresses_only_for_raw_kernels() {
    let text = scenario(&[vm(&[("kernel.entry", "0x100000")])]);
    let kind = single(&text, Some(0), "kernel.entry");
    assert_eq!(
        kind,
        ErrorKind::AddressNotRaw {
            kind: "multiboot".into()
        }
    );
}

#[test]
fn kernel_and_initrd_modules_must_exist() {
    let text = scenario(&[vm(&[
        ("kernel.module", "\"nope\""),
        ("kernel.type", "\"pvh\""),
        ("initrd", "\"\""),
    ])]);
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].field, "kernel.module");
    assert!(
        matches!(&errors[0].kind, ErrorKind::UnknownModule { module, known } if module == "nope" && known.contains("test-guest")),
        "{errors:?}"
    );
    assert_eq!(errors[1].field, "initrd");
    assert_eq!(errors[1].kind, ErrorKind::EmptyModule);
}

#[test]
fn multiboot_modules_must_exist() {
    let text = scenario(&[
        vm(&[]),
        vm(&[
            ("name", "\"b\""),
            ("pcpus", "[2]"),
            ("modules", "[\"testdata x\", \"nope testdata\", \"  \"]"),
        ]),
    ]);
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors
        .iter()
        .all(|e| e.vm.as_ref().map(|v| v.index) == Some(1)));
    assert_eq!(errors[0].field, "modules[1]");
    assert!(
        matches!(&errors[0].kind, ErrorKind::UnknownModule { module, known } if module == "nope" && known.contains("testdata")),
        "{errors:?}"
    );
    assert_eq!(
        errors[0].to_string(),
        format!(
            "configs/bad.toml: vm \"b\" (vm[1]): modules[1]: module \"nope\" is not built (known modules: {})",
            MODULES.join(", ")
        )
    );
    assert_eq!(errors[1].field, "modules[2]");
    assert_eq!(errors[1].kind, ErrorKind::EmptyModule);
}

#[test]
fn multiboot_module_strings_and_count() {
    let long = format!("\"testdata {}\"", "x".repeat(1015));
    let text = scenario(&[vm(&[(
        "modules",
        &format!("[{long}, \"testdata \\u0000\"]"),
    )])]);
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].field, "modules[0]");
    assert_eq!(
        errors[0].kind,
        ErrorKind::ModuleCmdlineTooLong {
            len: 1024,
            max: 1023
        }
    );
    assert_eq!(errors[1].field, "modules[1]");
    assert_eq!(errors[1].kind, ErrorKind::CmdlineNul(9));
    // The longest string passes.
    let longest = format!("\"testdata {}\"", "x".repeat(1014));
    validate(&scenario(&[vm(&[("modules", &format!("[{longest}]"))])])).unwrap();

    let many = vec!["\"testdata\""; 33].join(", ");
    let kind = single(
        &scenario(&[vm(&[("modules", &format!("[{many}]"))])]),
        Some(0),
        "modules",
    );
    assert_eq!(kind, ErrorKind::TooManyModules { count: 33, max: 32 });
    let most = vec!["\"testdata\""; 32].join(", ");
    validate(&scenario(&[vm(&[("modules", &format!("[{most}]"))])])).unwrap();
    // Not a list of strings.
    let kind = single(
        &scenario(&[vm(&[("modules", "\"testdata\"")])]),
        Some(0),
        "modules",
    );
    assert!(matches!(kind, ErrorKind::BadValue { .. }), "{kind:?}");
}

#[test]
fn modules_only_for_multiboot_and_initrd_only_for_linux() {
    let text = scenario(&[vm(&[
        ("kernel.module", "\"linux\""),
        ("kernel.type", "\"bzimage\""),
        ("modules", "[\"testdata\"]"),
    ])]);
    let kind = single(&text, Some(0), "modules");
    assert_eq!(
        kind,
        ErrorKind::ModulesNotMultiboot {
            kind: "bzimage".into()
        }
    );
    assert!(kind.to_string().contains("initrd"), "{kind}");
    let text = scenario(&[vm(&[
        ("kernel.type", "\"elf64\""),
        ("modules", "[\"testdata\"]"),
    ])]);
    assert_eq!(
        single(&text, Some(0), "modules"),
        ErrorKind::ModulesNotMultiboot {
            kind: "elf64".into()
        }
    );
    let text = scenario(&[vm(&[("initrd", "\"rootfs\"")])]);
    let kind = single(&text, Some(0), "initrd");
    assert_eq!(
        kind,
        ErrorKind::InitrdNotLinux {
            kind: "multiboot".into()
        }
    );
    assert!(kind.to_string().contains("`modules`"), "{kind}");
    // An empty list is no modules, whatever the kernel.
    let text = scenario(&[vm(&[
        ("kernel.module", "\"linux\""),
        ("kernel.type", "\"pvh\""),
        ("modules", "[]"),
    ])]);
    assert!(validate(&text).unwrap().vms[0].modules.is_empty());
}

#[test]
fn unchecked_modules_accept_any_name() {
    let text = scenario(&[vm(&[("kernel.module", "\"anything\"")])]);
    assert!(validate_str(Path::new(FILE), &text, &boards(), Modules::Unchecked).is_ok());
}

#[test]
fn cmdline_with_nul() {
    let text = scenario(&[vm(&[("kernel.cmdline", "\"a\\u0000b\"")])]);
    assert_eq!(
        single(&text, Some(0), "kernel.cmdline"),
        ErrorKind::CmdlineNul(1)
    );
}

#[test]
fn unknown_vuart() {
    let kind = single(
        &scenario(&[vm(&[("console.vuart", "\"com3\"")])]),
        Some(0),
        "console.vuart",
    );
    assert!(matches!(kind, ErrorKind::UnknownValue { .. }), "{kind:?}");
}

#[test]
fn unknown_vm_type_and_load_order() {
    let kind = single(
        &scenario(&[vm(&[("vm_type", "\"realtime\"")])]),
        Some(0),
        "vm_type",
    );
    assert!(
        matches!(&kind, ErrorKind::UnknownValue { value, expected } if value == "realtime" && expected.contains("rt")),
        "{kind:?}"
    );
    let kind = single(
        &scenario(&[vm(&[("load_order", "\"prelaunched\"")])]),
        Some(0),
        "load_order",
    );
    assert!(matches!(kind, ErrorKind::UnknownValue { .. }), "{kind:?}");
}

#[test]
fn rt_vm_must_be_pre_launched() {
    let text = scenario(&[
        vm(&[("name", "\"sos\""), ("load_order", "\"service\"")]),
        vm(&[
            ("name", "\"rt1\""),
            ("pcpus", "[2]"),
            ("load_order", "\"post-launched\""),
            ("vm_type", "\"rt\""),
        ]),
    ]);
    let kind = single(&text, Some(1), "vm_type");
    assert_eq!(
        kind,
        ErrorKind::RtNotPreLaunched {
            load_order: "post-launched"
        }
    );
}

#[test]
fn at_most_one_service_vm() {
    let text = scenario(&[
        vm(&[("name", "\"sos\""), ("load_order", "\"service\"")]),
        vm(&[
            ("name", "\"sos2\""),
            ("pcpus", "[2]"),
            ("load_order", "\"service\""),
        ]),
    ]);
    let kind = single(&text, Some(1), "load_order");
    assert!(matches!(kind, ErrorKind::SecondServiceVm { first } if first.index == 0));
}

#[test]
fn post_launched_needs_a_service_vm() {
    let text = scenario(&[vm(&[("load_order", "\"post-launched\"")])]);
    assert_eq!(
        single(&text, Some(0), "load_order"),
        ErrorKind::PostLaunchedWithoutService
    );
}

#[test]
fn unknown_board() {
    let text = format!("board = \"rpi\"\n{}", vm(&[]));
    let kind = single(&text, None, "board");
    assert!(
        matches!(&kind, ErrorKind::UnknownBoard { board, available, .. } if board == "rpi" && available == "bochs, bochs-smp, qemu, qemu-8g, qemu-amdvi, qemu-cat-claim, qemu-vtd"),
        "{kind:?}"
    );
    // A board name cannot walk out of the boards directory.
    let text = format!("board = \"../qemu\"\n{}", vm(&[]));
    assert!(matches!(
        single(&text, None, "board"),
        ErrorKind::InvalidName { .. }
    ));
}

#[test]
fn board_dependent_checks_use_the_named_board() {
    // Bochs has 2 pCPUs and 512 MiB, 64 of them reserved.
    let text = format!(
        "board = \"bochs\"\n{}",
        vm(&[("pcpus", "[1, 2]"), ("memory_mib", "450")])
    );
    let errors = errors(&text);
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["pcpus", "memory_mib"], "{errors:?}");
}

#[test]
fn broken_board_file_is_reported_against_the_board_file() {
    let dir = std::env::temp_dir().join(format!("quercus-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("tiny.toml"),
        "vendor = \"arm\"\npcpus = 2\nmemory_mib = 64\nhv_memory_mib = 64\n",
    )
    .unwrap();
    let text = format!("board = \"tiny\"\n{}", vm(&[]));
    let errors = validate_str(Path::new(FILE), &text, &dir, Modules::Known(MODULES)).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    let places: Vec<_> = errors
        .iter()
        .map(|e| {
            (
                e.file.file_name().unwrap().to_str().unwrap(),
                e.field.as_str(),
            )
        })
        .collect();
    assert_eq!(
        places,
        [("tiny.toml", "vendor"), ("tiny.toml", "hv_memory_mib")],
        "{errors:?}"
    );
}

#[test]
fn all_errors_are_collected() {
    let text = format!(
        "board = \"qemu\"\nextra = 1\n{}\n{}\n{}",
        vm(&[("name", "\"A\""), ("pcpus", "[0]")]),
        vm(&[
            ("name", "\"b\""),
            ("pcpus", "[1, 9]"),
            ("memory_mib", "3"),
            ("kernel.type", "\"exe\"")
        ]),
        vm(&[("name", "\"c\""), ("pcpus", "[2]"), ("typo", "1")]),
    );
    let errors = errors(&text);
    let places: Vec<_> = errors
        .iter()
        .map(|e| (e.vm.as_ref().map(|v| v.index), e.field.as_str()))
        .collect();
    assert_eq!(
        places,
        [
            (None, "extra"),
            (Some(0), "name"),
            (Some(0), "pcpus"),
            (Some(1), "pcpus"),
            (Some(1), "memory_mib"),
            (Some(1), "kernel.type"),
            (Some(2), "typo"),
        ],
        "{errors:#?}"
    );
    assert_eq!(
        errors[1].to_string(),
        "configs/bad.toml: vm \"A\" (vm[0]): name: invalid name \"A\": character 'A' is not allowed (allowed: 1 to 32 characters from [a-z0-9_-])"
    );
}

#[test]
fn virtio_devices_resolve_and_generate() {
    let text = scenario(&[
        vm_with(
            &[],
            &[
                "type = \"blk\"; module = \"disk\"",
                LAN,
                "type = \"net\"; switch = \"wan\"",
                "type = \"console\"",
                "type = \"rng\"",
                "type = \"blk\"; module = \"shared\"; readonly = true",
            ],
        ),
        vm_with(
            B,
            &[
                LAN,
                "type = \"net\"; switch = \"wan\"; mac = \"52:54:00:AB:cd:01\"",
                "type = \"blk\"; module = \"shared\"; readonly = true",
            ],
        ),
    ]);
    let v = validate(&text).unwrap();
    assert_eq!(v.switches, ["lan", "wan"]);
    let net = |switch, mac| VirtioDevice::Net { switch, mac };
    let blk = |module: &str, readonly| VirtioDevice::Blk {
        module: module.into(),
        readonly,
    };
    let kinds = |vm: usize| -> Vec<(VirtioDevice, u8)> {
        v.vms[vm]
            .virtio
            .iter()
            .map(|Virtio { kind, slot }| (kind.clone(), *slot))
            .collect()
    };
    assert_eq!(
        kinds(0),
        [
            (blk("disk", false), 8),
            (net(0, [0x02, 0x51, 0x00, 0x00, 0x00, 0x00]), 9),
            (net(1, [0x02, 0x51, 0x00, 0x00, 0x00, 0x01]), 10),
            (VirtioDevice::Console, 11),
            (VirtioDevice::Rng, 12),
            (blk("shared", true), 13),
        ]
    );
    assert_eq!(
        kinds(1),
        [
            (net(0, [0x02, 0x51, 0x00, 0x00, 0x01, 0x00]), 8),
            (net(1, [0x52, 0x54, 0x00, 0xAB, 0xCD, 0x01]), 9),
            (blk("shared", true), 10),
        ]
    );
    assert_eq!(v.modules(), ["test-guest", "disk", "shared"]);

    let out = generate(&v);
    for fragment in [
        "virtio: &[VirtioConfig { kind: VirtioKind::Blk { module: \"disk\", readonly: false }, slot: 8 }, \
         VirtioConfig { kind: VirtioKind::Net { switch: 0, mac: [0x02, 0x51, 0x00, 0x00, 0x00, 0x00] }, slot: 9 }, \
         VirtioConfig { kind: VirtioKind::Net { switch: 1, mac: [0x02, 0x51, 0x00, 0x00, 0x00, 0x01] }, slot: 10 }, \
         VirtioConfig { kind: VirtioKind::Console, slot: 11 }, \
         VirtioConfig { kind: VirtioKind::Rng, slot: 12 }, \
         VirtioConfig { kind: VirtioKind::Blk { module: \"shared\", readonly: true }, slot: 13 }],\n",
        "virtio: &[VirtioConfig { kind: VirtioKind::Net { switch: 0, mac: [0x02, 0x51, 0x00, 0x00, 0x01, 0x00] }, slot: 8 }, \
         VirtioConfig { kind: VirtioKind::Net { switch: 1, mac: [0x52, 0x54, 0x00, 0xab, 0xcd, 0x01] }, slot: 9 }, \
         VirtioConfig { kind: VirtioKind::Blk { module: \"shared\", readonly: true }, slot: 10 }],\n",
        "\n    switches: &[SwitchConfig { name: \"lan\" }, SwitchConfig { name: \"wan\" }],\n",
    ] {
        assert!(out.contains(fragment), "missing {fragment:?} in\n{out}");
    }
}

#[test]
fn virtio_as_inline_array_and_empty() {
    let text = scenario(&[
        vm(&[("virtio", "[{ type = \"rng\" }, { type = \"console\" }]")]),
        vm(&[("name", "\"b\""), ("pcpus", "[2]"), ("virtio", "[]")]),
    ]);
    let v = validate(&text).unwrap();
    assert_eq!(v.vms[0].virtio.len(), 2);
    assert_eq!(v.vms[0].virtio[1].slot, 9);
    assert!(v.vms[1].virtio.is_empty());
    assert!(v.switches.is_empty());
    assert!(generate(&v).contains("    switches: &[],\n"));
}

#[test]
fn virtio_unknown_type() {
    let text = scenario(&[vm_with(&[], &["type = \"rng\"", "type = \"scsi\""])]);
    let kind = single(&text, Some(0), "virtio[1].type");
    assert_eq!(
        kind,
        ErrorKind::UnknownValue {
            value: "scsi".into(),
            expected: "blk, net, console, rng"
        }
    );
}

#[test]
fn virtio_unknown_key() {
    let text = scenario(&[vm_with(
        &[],
        &["type = \"rng\"", "type = \"blk\"; size = 1"],
    )]);
    let kind = single(&text, Some(0), "virtio[1].size");
    assert!(
        matches!(&kind, ErrorKind::UnknownField { line: 15, column: 1, expected } if expected.contains("`readonly`")),
        "{kind:?}"
    );
}

#[test]
fn virtio_wrong_value_type() {
    let text = scenario(&[vm_with(
        &[],
        &["type = \"blk\"; module = \"disk\"; readonly = \"yes\""],
    )]);
    let kind = single(&text, Some(0), "virtio[0].readonly");
    assert!(matches!(kind, ErrorKind::BadValue { .. }), "{kind:?}");
}

#[test]
fn virtio_missing_required_fields() {
    let text = scenario(&[vm(&[]), vm_with(B, &["type = \"rng\"", "readonly = true"])]);
    assert_eq!(
        single(&text, Some(1), "virtio[1].type"),
        ErrorKind::MissingField
    );
    let text = scenario(&[vm_with(&[], &["type = \"blk\"; readonly = true"])]);
    let errors = errors(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        "configs/bad.toml: vm \"a\" (vm[0]): virtio[0].module: missing: a blk device needs `module` \
         (a boot module the build makes) or `file` (a disk image file, relative to the scenario file)"
    );
    let text = scenario(&[vm_with(
        &[],
        &["type = \"net\"; mac = \"02:00:00:00:00:01\""],
    )]);
    assert_eq!(
        single(&text, Some(0), "virtio[0].switch"),
        ErrorKind::MissingField
    );
}

#[test]
fn virtio_unknown_or_empty_module() {
    let text = scenario(&[
        vm(&[]),
        vm_with(
            B,
            &[
                "type = \"blk\"; module = \"nope\"; readonly = true",
                "type = \"blk\"; module = \"\"",
            ],
        ),
    ]);
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        format!(
            "configs/bad.toml: vm \"b\" (vm[1]): virtio[0].module: module \"nope\" is not built (known modules: {})",
            MODULES.join(", ")
        )
    );
    assert_eq!(errors[1].field, "virtio[1].module");
    assert_eq!(errors[1].kind, ErrorKind::EmptyModule);
}

#[test]
fn virtio_field_not_for_type() {
    for (device, field, kind, fields) in [
        (
            "type = \"net\"; switch = \"lan\"; module = \"disk\"",
            "virtio[0].module",
            "net",
            "type, switch, mac",
        ),
        (
            "type = \"blk\"; module = \"disk\"; mac = \"02:00:00:00:00:01\"",
            "virtio[0].mac",
            "blk",
            "type, module or file, readonly",
        ),
        (
            "type = \"console\"; readonly = true",
            "virtio[0].readonly",
            "console",
            "type only",
        ),
        (
            "type = \"rng\"; switch = \"lan\"",
            "virtio[0].switch",
            "rng",
            "type only",
        ),
    ] {
        // A second port keeps `lan` from being a one-port switch.
        let text = scenario(&[vm_with(&[], &[device]), vm_with(B, &[LAN])]);
        let errors = errors(&text);
        let places: Vec<_> = errors
            .iter()
            .map(|e| {
                (
                    e.file.to_str(),
                    e.vm.as_ref().map(|v| v.index),
                    e.field.as_str(),
                )
            })
            .collect();
        if kind == "net" {
            assert_eq!(places, [(Some(FILE), Some(0), field)], "{errors:?}");
        } else {
            // The other VM's `lan` port is then alone on its switch.
            assert_eq!(
                places,
                [
                    (Some(FILE), Some(0), field),
                    (Some(FILE), Some(1), "virtio[0].switch")
                ],
                "{errors:?}"
            );
        }
        assert_eq!(
            errors[0].kind,
            ErrorKind::VirtioFieldNotForType { kind, fields },
            "{device}"
        );
    }
    let text = scenario(&[vm_with(&[], &["type = \"rng\"; mac = \"x\""])]);
    assert_eq!(
        single(&text, Some(0), "virtio[0].mac").to_string(),
        "not a field of a \"rng\" virtio device (fields: type only)"
    );
}

#[test]
fn virtio_bad_mac() {
    for (mac, expected) in [
        (
            "02:00:00:00:00",
            ErrorKind::MacSyntax("02:00:00:00:00".into()),
        ),
        (
            "02-00-00-00-00-01",
            ErrorKind::MacSyntax("02-00-00-00-00-01".into()),
        ),
        (
            "02:00:00:00:00:0g",
            ErrorKind::MacSyntax("02:00:00:00:00:0g".into()),
        ),
        (
            "01:00:5E:00:00:01",
            ErrorKind::MacMulticast("01:00:5e:00:00:01".into()),
        ),
        (
            "ff:ff:ff:ff:ff:ff",
            ErrorKind::MacMulticast("ff:ff:ff:ff:ff:ff".into()),
        ),
        ("00:00:00:00:00:00", ErrorKind::MacZero),
    ] {
        let device = format!("{LAN}; mac = \"{mac}\"");
        let text = scenario(&[vm_with(&[], &[&device, LAN])]);
        assert_eq!(single(&text, Some(0), "virtio[0].mac"), expected, "{mac}");
    }
    let text = scenario(&[vm_with(
        &[],
        &[LAN, &format!("{LAN}; mac = \"03:00:00:00:00:00\"")],
    )]);
    let errors = errors(&text);
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["configs/bad.toml: vm \"a\" (vm[0]): virtio[1].mac: MAC address 03:00:00:00:00:00 is multicast (bit 0 of the first byte is set): an interface needs a unicast address"]
    );
}

#[test]
fn virtio_invalid_switch_name() {
    let text = scenario(&[vm_with(&[], &["type = \"net\"; switch = \"Lan 0\""])]);
    let kind = single(&text, Some(0), "virtio[0].switch");
    assert!(
        matches!(&kind, ErrorKind::InvalidName { name, .. } if name == "Lan 0"),
        "{kind:?}"
    );
    let long = format!("type = \"net\"; switch = \"{}\"", "s".repeat(33));
    let kind = single(
        &scenario(&[vm_with(&[], &[&long])]),
        Some(0),
        "virtio[0].switch",
    );
    assert!(matches!(kind, ErrorKind::InvalidName { .. }), "{kind:?}");
}

#[test]
fn virtio_at_most_one_console_and_one_rng() {
    let text = scenario(&[
        vm(&[]),
        vm_with(
            B,
            &[
                "type = \"console\"",
                "type = \"rng\"",
                "type = \"console\"",
                "type = \"rng\"",
            ],
        ),
    ]);
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        "configs/bad.toml: vm \"b\" (vm[1]): virtio[2].type: a VM has at most one console device, and virtio[0] is already one"
    );
    assert_eq!(errors[1].field, "virtio[3].type");
    assert_eq!(
        errors[1].kind,
        ErrorKind::SecondVirtioDevice {
            kind: "rng",
            first: 1
        }
    );
    // One of each in every VM is fine.
    let one_each = ["type = \"console\"", "type = \"rng\""];
    validate(&scenario(&[vm_with(&[], &one_each), vm_with(B, &one_each)])).unwrap();
}

#[test]
fn virtio_at_most_24_devices() {
    let disk = "type = \"blk\"; module = \"disk\"; readonly = true";
    let most = validate(&scenario(&[vm_with(&[], &[disk; 24])])).unwrap();
    assert_eq!(most.vms[0].virtio.last().map(|d| d.slot), Some(31));
    let text = scenario(&[vm_with(&[], &[disk; 25])]);
    let kind = single(&text, Some(0), "virtio");
    assert_eq!(kind, ErrorKind::TooManyVirtio { count: 25, max: 24 });
    assert_eq!(
        kind.to_string(),
        "25 virtio devices, more than the 24 a VM may have (PCI slots 8 to 31)"
    );
}

#[test]
fn writable_disk_used_twice() {
    let writable = "type = \"blk\"; module = \"disk\"";
    let readonly = "type = \"blk\"; module = \"disk\"; readonly = true";
    let explicit_writable = "type = \"blk\"; module = \"disk\"; readonly = false";
    // Writable in two VMs.
    let text = scenario(&[vm_with(&[], &[writable]), vm_with(B, &[explicit_writable])]);
    let errors = errors(&text);
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["configs/bad.toml: vm \"b\" (vm[1]): virtio[0].module: disk module \"disk\" is also attached to vm \"a\" (vm[0]) at virtio[0].module (writable, this one writable): a disk used more than once must be read-only everywhere"]
    );
    // Twice in one VM.
    let text = scenario(&[vm_with(&[], &["type = \"rng\"", writable, writable])]);
    let kind = single(&text, Some(0), "virtio[2].module");
    assert_eq!(
        kind,
        ErrorKind::DiskShared {
            module: "disk".into(),
            readonly: false,
            other: VmRef {
                index: 0,
                name: Some("a".into())
            },
            other_field: "virtio[1].module".into(),
            other_readonly: false,
        }
    );
    // Writable in one VM, read-only in the other, either way round.
    let text = scenario(&[vm_with(&[], &[writable]), vm_with(B, &[readonly])]);
    let kind = single(&text, Some(1), "virtio[0].module");
    assert!(
        matches!(&kind, ErrorKind::DiskShared { readonly: true, other, other_readonly: false, .. } if other.index == 0),
        "{kind:?}"
    );
    assert!(kind.to_string().contains("vm \"a\" (vm[0])"), "{kind}");
    let text = scenario(&[vm_with(&[], &[readonly]), vm_with(B, &[writable])]);
    let kind = single(&text, Some(1), "virtio[0].module");
    assert!(
        matches!(&kind, ErrorKind::DiskShared { readonly: false, other, other_readonly: true, .. } if other.index == 0),
        "{kind:?}"
    );
    // Read-only everywhere is fine, as are two different writable disks.
    validate(&scenario(&[
        vm_with(&[], &[readonly, readonly]),
        vm_with(B, &[readonly]),
    ]))
    .unwrap();
    let other = "type = \"blk\"; module = \"shared\"";
    validate(&scenario(&[
        vm_with(&[], &[writable]),
        vm_with(B, &[other]),
    ]))
    .unwrap();
}

#[test]
fn disk_that_is_a_kernel_or_initrd() {
    let text = scenario(&[vm_with(
        &[],
        &["type = \"blk\"; module = \"test-guest\"; readonly = true"],
    )]);
    let errors = errors(&text);
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["configs/bad.toml: vm \"a\" (vm[0]): virtio[0].module: module \"test-guest\" is also the kernel.module of vm \"a\" (vm[0]): a disk module cannot be a kernel or an initrd"]
    );
    let text = scenario(&[
        vm_with(
            &[],
            &["type = \"blk\"; module = \"rootfs\"; readonly = true"],
        ),
        vm(&[
            ("name", "\"lin\""),
            ("pcpus", "[2]"),
            ("kernel.module", "\"linux\""),
            ("kernel.type", "\"bzimage\""),
            ("initrd", "\"rootfs\""),
        ]),
    ]);
    let kind = single(&text, Some(0), "virtio[0].module");
    assert_eq!(
        kind,
        ErrorKind::DiskIsBootModule {
            module: "rootfs".into(),
            user: VmRef {
                index: 1,
                name: Some("lin".into())
            },
            field: "initrd",
        }
    );
}

#[test]
fn duplicate_mac_addresses() {
    // Given in vm b, derived for vm a's first net device.
    let text = scenario(&[
        vm_with(&[], &["type = \"rng\"", LAN]),
        vm_with(B, &[&format!("{LAN}; mac = \"02:51:00:00:00:00\"")]),
    ]);
    let errors = errors(&text);
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["configs/bad.toml: vm \"b\" (vm[1]): virtio[0].mac: MAC address 02:51:00:00:00:00 is already used by vm \"a\" (vm[0]) at virtio[1].mac (derived from the VM id and port: no mac given) (MAC addresses are unique in a scenario)"]
    );
    // Given in vm a, derived for vm b.
    let text = scenario(&[
        vm_with(&[], &[&format!("{LAN}; mac = \"02:51:00:00:01:00\"")]),
        vm_with(B, &[LAN]),
    ]);
    let kind = single(&text, Some(1), "virtio[0].mac");
    assert_eq!(
        kind,
        ErrorKind::DuplicateMac {
            mac: "02:51:00:00:01:00".into(),
            derived: true,
            other: VmRef {
                index: 0,
                name: Some("a".into())
            },
            other_field: "virtio[0].mac".into(),
            other_derived: false,
        }
    );
    // Given twice in one VM, in different case.
    let text = scenario(&[vm_with(
        &[],
        &[
            &format!("{LAN}; mac = \"52:54:00:aa:bb:cc\""),
            &format!("{LAN}; mac = \"52:54:00:AA:BB:CC\""),
        ],
    )]);
    let kind = single(&text, Some(0), "virtio[1].mac");
    assert!(
        matches!(&kind, ErrorKind::DuplicateMac { mac, derived: false, other, other_field, .. } if mac == "52:54:00:aa:bb:cc" && other.index == 0 && other_field == "virtio[0].mac"),
        "{kind:?}"
    );
}

#[test]
fn switch_needs_two_ports() {
    let text = scenario(&[
        vm_with(&[], &[LAN, "type = \"net\"; switch = \"dmz\""]),
        vm_with(B, &[LAN]),
    ]);
    let errors = errors(&text);
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["configs/bad.toml: vm \"a\" (vm[0]): virtio[1].switch: switch \"dmz\" has no other port in the scenario: a switch needs at least two ports"]
    );
    let text = scenario(&[vm(&[]), vm_with(B, &["type = \"rng\"", LAN])]);
    assert_eq!(
        single(&text, Some(1), "virtio[1].switch"),
        ErrorKind::SwitchOnePort {
            switch: "lan".into()
        }
    );
    // Two ports of one VM make a switch.
    let v = validate(&scenario(&[vm_with(&[], &[LAN, LAN])])).unwrap();
    assert_eq!(v.switches, ["lan"]);
}
