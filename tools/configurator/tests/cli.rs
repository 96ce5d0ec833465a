//! The `quercus-config` binary: exit codes, `ok: N VMs`, error lines, and the generated file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quercus-config"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn validate_ok() {
    let scenario = configs().join("partitioned.toml");
    let out = run(&[
        "validate",
        scenario.to_str().unwrap(),
        "--module",
        "test-guest",
        "--module",
        "linux",
        "--module",
        "initrd",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok: 3 VMs\n");
}

#[test]
fn validate_reports_every_error_and_fails() {
    let scenario = configs().join("partitioned.toml");
    let out = run(&["validate", scenario.to_str().unwrap(), "--module", "other"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("vm \"vm0\" (vm[0]): kernel.module: module \"test-guest\" is not built"),
        "{stderr}"
    );
    assert!(
        stderr.contains("vm \"vm1\" (vm[1]): kernel.module"),
        "{stderr}"
    );
    assert!(
        stderr.contains("vm \"linux\" (vm[2]): initrd: module \"initrd\" is not built"),
        "{stderr}"
    );
    assert!(stderr.ends_with("4 error(s)\n"), "{stderr}");
}

#[test]
fn generate_writes_the_static() {
    let scenario = configs().join("guest.toml");
    let output = std::env::temp_dir().join(format!(
        "quercus-config-cli-{}/scenario.rs",
        std::process::id()
    ));
    let out = run(&[
        "generate",
        scenario.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&output).unwrap();
    std::fs::remove_dir_all(output.parent().unwrap()).unwrap();
    assert!(text.contains("pub static SCENARIO: Scenario"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("module names not checked"));
}
