//! `[[vuart_link]]`: a valid link becomes the two ends' VM ids and UARTs; each kind of error
//! names the file, the link and the field.

use std::path::{Path, PathBuf};

use configurator::{validate_str, ConfigError, ErrorKind, LinkError, Modules, Validated};
use scenario::{VuartConfig, VuartLinkEnd};

const FILE: &str = "configs/link.toml";
const COM1: VuartConfig = VuartConfig {
    port: 0x3F8,
    irq: 4,
};
const COM2: VuartConfig = VuartConfig {
    port: 0x2F8,
    irq: 3,
};

fn boards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/boards")
}

/// VMs a (console com1), b (console com1), c (no console), then `links`.
fn scenario(links: &str) -> String {
    let vm = |name: &str, pcpu: u32, console: bool| {
        let console = if console {
            "[vm.console]\nvuart = \"com1\"\n"
        } else {
            ""
        };
        format!(
            "[[vm]]\nname = \"{name}\"\nload_order = \"pre-launched\"\npcpus = [{pcpu}]\nmemory_mib = 32\n[vm.kernel]\nmodule = \"test-guest\"\ntype = \"multiboot\"\n{console}"
        )
    };
    format!(
        "board = \"qemu\"\n{}{}{}{links}",
        vm("a", 1, true),
        vm("b", 2, true),
        vm("c", 3, false)
    )
}

fn link(name: &str, ends: &str) -> String {
    format!("[[vuart_link]]\nname = \"{name}\"\nends = [{ends}]\n")
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

#[test]
fn valid_links_name_both_ends() {
    let text = scenario(
        &(link(
            "ab",
            r#"{ vm = "a", uart = "com2" }, { vm = "b", uart = "com2" }"#,
        ) + &link(
            "loop",
            r#"{ vm = "c", uart = "com1" }, { vm = "c", uart = "com2" }"#,
        )),
    );
    let v = validate(&text).unwrap();
    assert_eq!(v.vuart_links.len(), 2);
    assert_eq!(v.vuart_links[0].name, "ab");
    assert_eq!(
        v.vuart_links[0].ends,
        [
            VuartLinkEnd { vm: 0, uart: COM2 },
            VuartLinkEnd { vm: 1, uart: COM2 }
        ]
    );
    assert_eq!(
        v.vuart_links[1].ends,
        [
            VuartLinkEnd { vm: 2, uart: COM1 },
            VuartLinkEnd { vm: 2, uart: COM2 }
        ]
    );
    let out = configurator::generate(&v);
    assert!(
        out.contains("VuartLinkEnd { vm: 1, uart: VuartConfig { port: 0x2f8, irq: 3 } }"),
        "{out}"
    );
    // No links: an empty list.
    let v = validate(&scenario("")).unwrap();
    assert!(v.vuart_links.is_empty());
    assert!(configurator::generate(&v).contains("    vuart_links: &[],\n"));
}

#[test]
fn each_error_names_the_link_and_field() {
    let ab = |a: &str, b: &str| {
        scenario(&link(
            "x",
            &format!("{{ vm = \"a\", uart = \"{a}\" }}, {{ vm = \"b\", uart = \"{b}\" }}"),
        ))
    };
    let (field, kind) = single(&ab("com1", "com2"));
    assert_eq!(field, "vuart_link \"x\" (vuart_link[0]): ends[0].uart");
    assert_eq!(
        kind,
        ErrorKind::VuartLink(LinkError::ConsoleUart {
            uart: "com1".into(),
            vm: "a".into()
        })
    );
    assert!(kind.to_string().contains("console"), "{kind}");
    let (field, kind) = single(&ab("com2", "com9"));
    assert_eq!(field, "vuart_link \"x\" (vuart_link[0]): ends[1].uart");
    assert!(matches!(
        kind,
        ErrorKind::VuartLink(LinkError::UnknownUart { .. })
    ));
    let (field, kind) = single(&scenario(&link(
        "x",
        r#"{ vm = "a", uart = "com2" }, { vm = "zz", uart = "com2" }"#,
    )));
    assert_eq!(field, "vuart_link \"x\" (vuart_link[0]): ends[1].vm");
    assert_eq!(
        kind,
        ErrorKind::VuartLink(LinkError::UnknownVm {
            name: "zz".into(),
            available: "a, b, c".into()
        })
    );
    let (field, kind) = single(&scenario(&link("x", r#"{ vm = "a", uart = "com2" }"#)));
    assert_eq!(field, "vuart_link \"x\" (vuart_link[0]): ends");
    assert_eq!(kind, ErrorKind::VuartLink(LinkError::EndCount { count: 1 }));
    let (field, kind) = single(&scenario(&link(
        "x",
        r#"{ vm = "c", uart = "com2" }, { vm = "c", uart = "com2" }"#,
    )));
    assert_eq!(field, "vuart_link \"x\" (vuart_link[0]): ends[1]");
    assert!(matches!(
        kind,
        ErrorKind::VuartLink(LinkError::SameEnd { .. })
    ));
    // A UART has one wire; names are unique.
    let two = link(
        "x",
        r#"{ vm = "a", uart = "com2" }, { vm = "b", uart = "com2" }"#,
    ) + &link(
        "y",
        r#"{ vm = "c", uart = "com2" }, { vm = "b", uart = "com2" }"#,
    );
    let (field, kind) = single(&scenario(&two));
    assert_eq!(field, "vuart_link \"y\" (vuart_link[1]): ends[1].uart");
    assert_eq!(
        kind,
        ErrorKind::VuartLink(LinkError::UartTaken {
            uart: "com2".into(),
            vm: "b".into(),
            other: "vuart_link \"x\" (vuart_link[0])".into()
        })
    );
    let dup = link(
        "x",
        r#"{ vm = "a", uart = "com2" }, { vm = "c", uart = "com1" }"#,
    ) + &link(
        "x",
        r#"{ vm = "b", uart = "com2" }, { vm = "c", uart = "com2" }"#,
    );
    let (field, kind) = single(&scenario(&dup));
    assert_eq!(field, "vuart_link \"x\" (vuart_link[1]): name");
    assert!(matches!(
        kind,
        ErrorKind::VuartLink(LinkError::DuplicateName { first: 0, .. })
    ));
    // Unknown keys are errors.
    let errors = validate(&scenario(
        "[[vuart_link]]\nname = \"x\"\nspeed = 9600\nends = []\n",
    ))
    .unwrap_err();
    assert!(
        errors.iter().any(|e| e.field.contains("vuart_link[0]")),
        "{errors:#?}"
    );
}
