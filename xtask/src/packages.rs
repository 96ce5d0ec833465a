//! The emulator tools the runs need: checks them and, as root, installs the Debian packages.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::bochs::{BIOS, VGA_BIOS};
use crate::runner::Emulator;

/// Every package the emulator runs use (installed together).
pub const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "bochs",
    "bochsbios",
    "vgabios",
    "grub-pc-bin",
    "grub-common",
    "xorriso",
    "mtools",
    "xz-utils",
    "e2fsprogs",
];

#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// A program on PATH.
    Tool(&'static str),
    /// A file or directory.
    Path(&'static str),
}

/// Something required and the Debian package that provides it.
#[derive(Clone, Copy, Debug)]
pub struct Requirement {
    pub need: Need,
    pub package: &'static str,
}

const fn tool(name: &'static str, package: &'static str) -> Requirement {
    Requirement {
        need: Need::Tool(name),
        package,
    }
}

const fn path(name: &'static str, package: &'static str) -> Requirement {
    Requirement {
        need: Need::Path(name),
        package,
    }
}

/// QEMU runs, and the Linux image (its `vmlinux` is unpacked from the bzImage's XZ payload).
const QEMU: &[Requirement] = &[
    tool("qemu-system-x86_64", "qemu-system-x86"),
    tool("xz", "xz-utils"),
];

const BOCHS: &[Requirement] = &[
    tool("bochs", "bochs"),
    tool("grub-mkrescue", "grub-common"),
    tool("xorriso", "xorriso"),
    tool("mformat", "mtools"),
    path(BIOS, "bochsbios"),
    path(VGA_BIOS, "vgabios"),
    path("/usr/lib/grub/i386-pc", "grub-pc-bin"),
];

/// The `disk` boot module (`disk_image`): an ext4 image made with `mke2fs -d`, its inode times
/// set with `debugfs` (in /usr/sbin, not on every user's PATH).
const DISK: &[Requirement] = &[
    path("/usr/sbin/mke2fs", "e2fsprogs"),
    path("/usr/sbin/debugfs", "e2fsprogs"),
];

/// What one emulator needs.
pub fn requirements(emulator: Emulator) -> Vec<Requirement> {
    let own = match emulator {
        Emulator::Qemu => QEMU,
        Emulator::Bochs | Emulator::BochsAmd | Emulator::BochsHaswell => BOCHS,
    };
    own.iter().chain(DISK).copied().collect()
}

/// What all emulators need.
pub fn all_requirements() -> Vec<Requirement> {
    QEMU.iter().chain(BOCHS).chain(DISK).copied().collect()
}

fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(paths) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&paths).any(|dir| {
        std::fs::metadata(dir.join(name))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

fn present(req: &Requirement) -> bool {
    match req.need {
        Need::Tool(name) => on_path(name),
        Need::Path(p) => Path::new(p).exists(),
    }
}

/// Names of the packages behind missing requirements (sorted, unique).
fn missing(reqs: &[Requirement]) -> Vec<&'static str> {
    let mut pkgs: Vec<&'static str> = reqs
        .iter()
        .filter(|r| !present(r))
        .map(|r| r.package)
        .collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    pkgs
}

fn install_command() -> String {
    format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
        PACKAGES.join(" ")
    )
}

/// Run one apt-get step under a spinner; on failure, show its last lines.
fn apt_step(message: &str, args: &[&str]) -> Result<()> {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
    );
    pb.set_message(message.to_string());
    pb.enable_steady_tick(Duration::from_millis(100));
    let output = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output();
    pb.finish_and_clear();
    let output = output.context("running apt-get")?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        bail!(
            "`apt-get {}` failed ({}):\n{}",
            args.join(" "),
            output.status,
            crate::console::tail(&lines, 20).join("\n")
        );
    }
    Ok(())
}

/// Make sure `reqs` are present: install the packages as root, otherwise say what to install.
pub fn ensure(reqs: &[Requirement]) -> Result<()> {
    let pkgs = missing(reqs);
    if pkgs.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        bail!(
            "missing packages: {}; install them with:\n  sudo sh -c '{}'",
            pkgs.join(" "),
            install_command()
        );
    }
    eprintln!("installing emulator packages (missing: {})", pkgs.join(" "));
    apt_step("apt-get update", &["update"])?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend_from_slice(PACKAGES);
    apt_step("apt-get install", &args)?;
    let still = missing(reqs);
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_requirement_names_a_listed_package() {
        for r in all_requirements() {
            assert!(PACKAGES.contains(&r.package), "{:?}", r);
        }
    }

    #[test]
    fn path_lookup() {
        assert!(on_path("sh"));
        assert!(!on_path("quercus-no-such-tool"));
    }
}
