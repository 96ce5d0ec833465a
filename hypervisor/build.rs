//! Link the bare-metal image with its own linker script and no C runtime, and
//! turn the scenario (validated on the host) into the static config it runs.

use std::path::PathBuf;

fn main() {
    generate_scenario();
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-env-changed=QUERCUS_SCENARIO");
    println!("cargo:rerun-if-env-changed=QUERCUS_BOARDS");
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-z,max-page-size=0x1000",
        "-Wl,--gc-sections",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/linker.ld");
}

/// Validates `QUERCUS_SCENARIO` (default `configs/guest.toml`, one test-guest VM) with the boards
/// of `QUERCUS_BOARDS` (default: `boards/` beside it) and writes `$OUT_DIR/scenario.rs`; a bad
/// scenario fails the build naming file, VM and field.
fn generate_scenario() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest
        .parent()
        .expect("hypervisor/ lives in the workspace root");
    let path = std::env::var_os("QUERCUS_SCENARIO")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("configs/guest.toml"));
    println!("cargo:rerun-if-changed={}", path.display());
    let boards = std::env::var_os("QUERCUS_BOARDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| configurator::boards_dir_for(&path));
    let validated = match configurator::load(&path, &boards, configurator::Modules::Unchecked) {
        Ok(v) => v,
        Err(errors) => {
            for e in &errors {
                println!("cargo:warning={e}");
            }
            panic!(
                "scenario {} is invalid ({} error(s))",
                path.display(),
                errors.len()
            );
        }
    };
    println!("cargo:rerun-if-changed={}", validated.board.file.display());
    // A kernel file's detected type is compiled in.
    for file in &validated.files {
        println!("cargo:rerun-if-changed={}", file.path.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("scenario.rs");
    std::fs::write(&out, configurator::generate(&validated)).expect("write scenario.rs");
}
