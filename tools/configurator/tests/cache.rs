//! The cache-allocation checks (`cache_mask`, the board's `[cache]`), each with a scenario that
//! passes and one that fails, on the test boards `cat` (12 ways, 4 CLOS), `nocat` (`cat = false`)
//! and `nocache` (no `[cache]` table) in `tests/boards/`.

use std::path::{Path, PathBuf};

use configurator::{generate, validate_str, ConfigError, ErrorKind, Modules, Validated};

const FILE: &str = "configs/rt.toml";

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
    validate(text).unwrap_or_else(|errors| {
        panic!(
            "{}\n--- input ---\n{text}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

/// The only error of `text`.
fn single(text: &str) -> ConfigError {
    let errors = validate(text).expect_err("expected an error");
    assert_eq!(errors.len(), 1, "{errors:#?}\n--- input ---\n{text}");
    errors.into_iter().next().unwrap()
}

fn vm(name: &str, pcpus: &str, extra: &str) -> String {
    format!(
        "[[vm]]\nname = \"{name}\"\nload_order = \"pre-launched\"\nvm_type = \"rt\"\npcpus = {pcpus}\n\
         memory_mib = 32\n{extra}\nkernel = {{ module = \"test-guest\", type = \"multiboot\" }}\n"
    )
}

fn on(board: &str, vms: &[String]) -> String {
    format!("board = \"{board}\"\n{}", vms.join("\n"))
}

#[test]
fn a_vm_mask_is_planned_per_pcpu_with_clos_0_keeping_the_rest() {
    let v = ok(&on(
        "cat",
        &[
            vm("rt0", "[1, 2]", "cache_mask = 0xF00"),
            vm("lin", "[3]", ""),
        ],
    ));
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    assert_eq!(v.cache.ways, 12);
    assert_eq!(v.cache.default_mask, 0x0FF);
    assert_eq!(v.cache.pcpus, [(1, 0, 1, 0xF00), (2, 0, 1, 0xF00)]);
    let out = generate(&v);
    assert!(
        out.contains("PcpuClos { pcpu: 2, vm: 0, clos: 1, mask: 0xf00 }"),
        "{out}"
    );
    assert!(out.contains("default_mask: 0xff,"), "{out}");
}

#[test]
fn per_vcpu_masks_get_a_clos_each_and_overlaps_between_vms_warn() {
    let v = ok(&on(
        "cat",
        &[
            vm("rt0", "[1, 2]", "cache_mask = [0xC00, 0x300]"),
            vm("rt1", "[3]", "cache_mask = 0x0F0"),
        ],
    ));
    assert_eq!(
        v.cache.pcpus,
        [(1, 0, 1, 0xC00), (2, 0, 2, 0x300), (3, 1, 3, 0x0F0)]
    );
    assert!(v.warnings.is_empty());
    let v = ok(&on(
        "cat",
        &[
            vm("rt0", "[1]", "cache_mask = 0xF00"),
            vm("rt1", "[2]", "cache_mask = 0x180"),
        ],
    ));
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    let w = v.warnings[0].to_string();
    assert!(
        w.contains("vm \"rt1\"") && w.contains("overlaps vm \"rt0\"") && w.contains("0x100"),
        "{w}"
    );
}

#[test]
fn taking_every_way_warns() {
    let v = ok(&on("cat", &[vm("rt0", "[1]", "cache_mask = 0xFFF")]));
    assert!(matches!(
        v.warnings[..],
        [ConfigError {
            kind: ErrorKind::CacheAllTaken { ways: 12 },
            ..
        }]
    ));
    assert_eq!(v.cache.default_mask, 0xFFF);
}

#[test]
fn cat_on_a_board_without_it_is_refused_naming_file_vm_and_field() {
    for (board, says) in [
        ("nocat", "`cat = false`"),
        ("nocache", "no `[cache]` table"),
    ] {
        let e = single(&on(board, &[vm("rt0", "[1]", "cache_mask = 0xF")]));
        let line = e.to_string();
        assert!(
            line.starts_with("configs/rt.toml: vm \"rt0\" (vm[0]): cache_mask: board "),
            "{line}"
        );
        assert!(
            line.contains("no L3 cache allocation") && line.contains(says),
            "{line}"
        );
    }
}

#[test]
fn bad_masks_are_refused() {
    for (mask, field, what) in [
        ("0x0", "cache_mask", "gives no cache"),
        ("0x505", "cache_mask", "not one contiguous run"),
        ("0x1000", "cache_mask", "beyond the L3's 12"),
        ("[0xF, 0x9]", "cache_mask[1]", "not one contiguous run"),
    ] {
        let pcpus = if mask.starts_with('[') {
            "[1, 2]"
        } else {
            "[1]"
        };
        let e = single(&on(
            "cat",
            &[vm("rt0", pcpus, &format!("cache_mask = {mask}"))],
        ));
        assert_eq!(e.field, field, "{e}");
        assert!(e.to_string().contains(what), "{e}");
    }
    let e = single(&on("cat", &[vm("rt0", "[1, 2]", "cache_mask = [0xF]")]));
    assert!(matches!(
        e.kind,
        ErrorKind::CacheMaskCount { count: 1, vcpus: 2 }
    ));
}

#[test]
fn more_masks_than_classes_of_service_are_refused() {
    // 4 CLOS: CLOS 0 and three masks.
    let three = [
        vm("a", "[1]", "cache_mask = 0x00F"),
        vm("b", "[2]", "cache_mask = 0x0F0"),
        vm("c", "[3]", "cache_mask = 0xF00"),
    ];
    ok(&on("cat", &three));
    let e = single(&on(
        "cat",
        &[
            vm("a", "[1]", "cache_mask = 0x00F"),
            vm("b", "[2]", "cache_mask = 0x0F0"),
            vm("c", "[3, 4]", "cache_mask = [0xF00, 0x300]"),
        ],
    ));
    assert!(
        matches!(e.kind, ErrorKind::TooManyClos { need: 4, have: 4 }),
        "{e}"
    );
}

#[test]
fn a_board_cache_table_is_checked() {
    let dir = std::env::temp_dir().join(format!("quercus-cat-boards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = "vendor = \"intel\"\npcpus = 4\nmemory_mib = 2048\nhv_memory_mib = 64\n";
    for (cache, field) in [
        ("l3_ways = 0", "cache.l3_ways"),
        ("l3_ways = 12\ncat = true", "cache.clos"),
        ("l3_ways = 12\ncat = true\nclos = 1", "cache.clos"),
        ("l3_ways = 12\nclos = 4", "cache.clos"),
    ] {
        std::fs::write(dir.join("b.toml"), format!("{base}[cache]\n{cache}\n")).unwrap();
        let errors = validate_str(
            Path::new(FILE),
            &on("b", &[vm("rt0", "[1]", "")]),
            &dir,
            Modules::Known(&["test-guest"]),
        )
        .expect_err(cache);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, field, "{}", errors[0]);
        assert!(errors[0].file.ends_with("b.toml"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
