//! Bochs runs: a GRUB rescue ISO (multiboot2 + module2), a bochsrc per run, com1 written to a file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::runner::{BootModule, Emulator, RunConfig};

pub const BIOS: &str = "/usr/share/bochs/BIOS-bochs-latest";
pub const VGA_BIOS: &str = "/usr/share/bochs/VGABIOS-lgpl-latest";
/// The name the image gets inside the ISO.
const KERNEL_NAME: &str = "quercus.elf";
/// The name a Linux bzImage gets inside the ISO.
const LINUX_NAME: &str = "bzImage";

/// `boot/grub/grub.cfg`: boot at once, the image by multiboot2 (or by
/// Multiboot1 for an image with only that header, e.g. a test guest booted
/// natively), one module line per module.
pub fn grub_cfg(cmdline: &str, modules: &[(String, String)], mb2: bool) -> String {
    let (kernel_cmd, module_cmd) = if mb2 {
        ("multiboot2", "module2")
    } else {
        ("multiboot", "module")
    };
    let mut cfg = String::from("set timeout=0\nset default=0\n\nmenuentry \"quercus\" {\n");
    cfg.push_str(&line(&format!(
        "    {kernel_cmd} /boot/{KERNEL_NAME} {cmdline}"
    )));
    for (name, args) in modules {
        cfg.push_str(&line(&format!("    {module_cmd} /boot/{name} {args}")));
    }
    cfg.push_str("    boot\n}\n");
    cfg
}

/// `boot/grub/grub.cfg` for a Linux bzImage (booted natively, for comparison): the kernel by
/// GRUB's `linux` command with `cmdline`, the modules as its initrds.
pub fn grub_cfg_linux(cmdline: &str, initrds: &[(String, String)]) -> String {
    let mut cfg = String::from("set timeout=0\nset default=0\n\nmenuentry \"linux\" {\n");
    cfg.push_str(&line(&format!("    linux /boot/{LINUX_NAME} {cmdline}")));
    if !initrds.is_empty() {
        let paths: Vec<String> = initrds.iter().map(|(n, _)| format!("/boot/{n}")).collect();
        cfg.push_str(&line(&format!("    initrd {}", paths.join(" "))));
    }
    cfg.push_str("    boot\n}\n");
    cfg
}

/// Whether `image` is a Linux bzImage (boot protocol magic `HdrS` at 0x202).
pub fn is_bzimage(image: &[u8]) -> bool {
    image.get(0x202..0x206) == Some(b"HdrS")
}

/// Whether `image` has a Multiboot2 header (magic 0xE85250D6, 8-byte aligned,
/// in the first 32 KiB).
pub fn has_multiboot2_header(image: &[u8]) -> bool {
    image
        .chunks_exact(8)
        .take(32 * 1024 / 8)
        .any(|c| c[..4] == 0xE852_50D6u32.to_le_bytes())
}

fn line(s: &str) -> String {
    format!("{}\n", s.trim_end())
}

/// The Bochs CPU model for an emulator flavour.
pub fn cpu_model(emulator: Emulator) -> &'static str {
    match emulator {
        Emulator::BochsAmd => "ryzen",
        Emulator::BochsHaswell => "corei7_haswell_4770",
        _ => "tigerlake",
    }
}

/// Everything a bochsrc names.
pub struct BochsrcParams<'a> {
    pub model: &'a str,
    pub cpus: u32,
    pub mem_mib: u32,
    pub iso: &'a Path,
    pub serial: &'a Path,
    /// COM1 on a TCP connection Bochs makes to this loopback port (console input and
    /// output) instead of the `serial` file: the runs that type at the console.
    pub serial_socket: Option<u16>,
    pub log: &'a Path,
    /// Further lines (e.g. PCI devices), appended as they are.
    pub extra: &'a str,
}

/// The bochsrc of one run. `fastboot` skips the BIOS's "Press F12" wait: 3 emulated seconds that
/// cost ~20 s of wall time with two CPUs (Bochs cannot skip idle time while another CPU is halted).
pub fn bochsrc(p: &BochsrcParams) -> String {
    let com1 = match p.serial_socket {
        Some(port) => format!("com1: enabled=1, mode=socket-client, dev=127.0.0.1:{port}"),
        None => format!("com1: enabled=1, mode=file, dev={}", p.serial.display()),
    };
    format!(
        "\
memory: guest={mem}, host={mem}
cpu: model={model}, count={cpus}, ips=200000000
romimage: file={BIOS}, options=fastboot
vgaromimage: file={VGA_BIOS}
ata0-master: type=cdrom, path={iso}, status=inserted
boot: cdrom
{com1}
clock: sync=none, time0=local
display_library: rfb, options=\"timeout=0\"
speaker: enabled=0
sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy
log: {log}
panic: action=fatal
error: action=report
info: action=ignore
",
        mem = p.mem_mib,
        model = p.model,
        cpus = p.cpus,
        iso = p.iso.display(),
        log = p.log.display(),
    ) + p.extra
}

/// Names of the modules inside the ISO's `boot/` directory (their file names, which must differ).
fn module_names(modules: &[BootModule]) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for m in modules {
        let name = m
            .path
            .file_name()
            .with_context(|| format!("module path {} has no file name", m.path.display()))?
            .to_string_lossy()
            .into_owned();
        // The kernel is copied as quercus.elf (or bzImage for a native Linux
        // run, which has no module of that name).
        if name == KERNEL_NAME || name == "grub" || out.iter().any(|(n, _)| *n == name) {
            bail!("boot module file name `{name}` is used twice");
        }
        out.push((name, m.cmdline.clone()));
    }
    Ok(out)
}

/// Stage `boot/` in `dir` and run grub-mkrescue; returns the ISO path.
pub fn make_iso(cfg: &RunConfig, dir: &Path) -> Result<PathBuf> {
    let staging = dir.join("iso-root");
    let boot = staging.join("boot");
    std::fs::create_dir_all(boot.join("grub"))?;
    let image =
        std::fs::read(&cfg.kernel).with_context(|| format!("reading {}", cfg.kernel.display()))?;
    let linux = is_bzimage(&image);
    let kernel_name = if linux { LINUX_NAME } else { KERNEL_NAME };
    std::fs::write(boot.join(kernel_name), &image)?;
    let names = module_names(&cfg.modules)?;
    for (m, (name, _)) in cfg.modules.iter().zip(&names) {
        std::fs::copy(&m.path, boot.join(name))
            .with_context(|| format!("copying module {}", m.path.display()))?;
    }
    let grub = if linux {
        grub_cfg_linux(&cfg.cmdline, &names)
    } else {
        grub_cfg(&cfg.cmdline, &names, has_multiboot2_header(&image))
    };
    std::fs::write(boot.join("grub/grub.cfg"), grub)?;
    let iso = dir.join("quercus.iso");
    let spinner = cfg.echo.then(|| {
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
        );
        pb.set_message("grub-mkrescue");
        pb.enable_steady_tick(Duration::from_millis(100));
        pb
    });
    let output = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&iso)
        .arg(&staging)
        .output()
        .context("running grub-mkrescue");
    if let Some(pb) = spinner {
        pb.finish_and_clear();
    }
    let output = output?;
    if !output.status.success() || !iso.is_file() {
        let text = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        bail!(
            "grub-mkrescue failed ({}):\n{}",
            output.status,
            crate::console::tail(&lines, 20).join("\n")
        );
    }
    Ok(iso)
}

/// The files of one Bochs run.
pub struct BochsFiles {
    pub bochsrc: PathBuf,
    pub rc: PathBuf,
    pub serial: PathBuf,
    pub log: PathBuf,
    /// Bochs's own stdout and stderr.
    pub stdout: PathBuf,
}

/// The debugger commands of a run: `c` (continue) at the start, and once more for one reset of
/// the emulated machine, which stops in the debugger again. A guest that resets through the 8042
/// (0xFE to port 0x64) needs it. Seen with the `pic-only kbd-reset` test guest run natively: after
/// that reset IA32_FEATURE_CONTROL keeps its lock bit, the BIOS's WRMSR to it takes a #GP with
/// no IDT, and the triple fault resets the machine (the stop), which then boots the guest again.
/// A second reset ends Bochs (stdin is /dev/null).
pub const DEBUGGER_RC: &str = "c\nc\n";

/// Write the bochsrc and the debugger rc file ([`DEBUGGER_RC`]) into `dir`.
pub fn write_config(
    cfg: &RunConfig,
    dir: &Path,
    iso: &Path,
    serial_socket: Option<u16>,
) -> Result<BochsFiles> {
    let files = BochsFiles {
        bochsrc: dir.join("bochsrc"),
        rc: dir.join("rc"),
        serial: dir.join("serial.out"),
        log: dir.join("bochs.log"),
        stdout: dir.join("bochs.out"),
    };
    let text = bochsrc(&BochsrcParams {
        model: cpu_model(cfg.emulator),
        cpus: cfg.cpus,
        mem_mib: cfg.mem_mib,
        iso,
        serial: &files.serial,
        serial_socket,
        log: &files.log,
        extra: &cfg.extra_bochsrc,
    });
    std::fs::write(&files.bochsrc, text)?;
    std::fs::write(&files.rc, DEBUGGER_RC)?;
    Ok(files)
}

/// `bochs -q -f bochsrc -rc rc` (the caller sets stdio and the process group).
pub fn command(files: &BochsFiles) -> Command {
    let mut cmd = Command::new("bochs");
    cmd.arg("-q")
        .arg("-f")
        .arg(&files.bochsrc)
        .arg("-rc")
        .arg(&files.rc);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_cfg_without_modules() {
        let cfg = grub_cfg("", &[], true);
        assert_eq!(
            cfg,
            "set timeout=0\nset default=0\n\nmenuentry \"quercus\" {\n    multiboot2 /boot/quercus.elf\n    boot\n}\n"
        );
    }

    #[test]
    fn grub_cfg_with_cmdline_and_modules() {
        let cfg = grub_cfg(
            "quercus.test.corrupt_mmap",
            &[
                ("bzImage".into(), "console=ttyS0".into()),
                ("initrd.gz".into(), String::new()),
            ],
            true,
        );
        let lines: Vec<&str> = cfg.lines().map(str::trim).collect();
        let mb = lines
            .iter()
            .position(|l| l.starts_with("multiboot2"))
            .unwrap();
        assert_eq!(
            lines[mb],
            "multiboot2 /boot/quercus.elf quercus.test.corrupt_mmap"
        );
        assert_eq!(lines[mb + 1], "module2 /boot/bzImage console=ttyS0");
        assert_eq!(lines[mb + 2], "module2 /boot/initrd.gz");
        assert_eq!(lines[mb + 3], "boot");
    }

    #[test]
    fn multiboot1_images_get_multiboot_commands() {
        let cfg = grub_cfg("bench", &[("m".into(), "x".into())], false);
        assert!(
            cfg.contains("    multiboot /boot/quercus.elf bench\n"),
            "{cfg}"
        );
        assert!(cfg.contains("    module /boot/m x\n"), "{cfg}");
    }

    #[test]
    fn grub_cfg_for_linux() {
        let cfg = grub_cfg_linux(
            "console=ttyS0 quiet",
            &[("initrd.gz".into(), String::new())],
        );
        assert_eq!(
            cfg,
            "set timeout=0\nset default=0\n\nmenuentry \"linux\" {\n    linux /boot/bzImage console=ttyS0 quiet\n    initrd /boot/initrd.gz\n    boot\n}\n"
        );
        assert!(!grub_cfg_linux("", &[]).contains("initrd"));
    }

    #[test]
    fn bzimage_detection() {
        let mut image = vec![0u8; 0x400];
        assert!(!is_bzimage(&image));
        image[0x202..0x206].copy_from_slice(b"HdrS");
        assert!(is_bzimage(&image));
        assert!(!is_bzimage(&image[..0x204]));
    }

    #[test]
    fn multiboot2_header_detection() {
        let mut image = vec![0u8; 8192];
        assert!(!has_multiboot2_header(&image));
        image[0x1008..0x100C].copy_from_slice(&0xE852_50D6u32.to_le_bytes());
        assert!(has_multiboot2_header(&image));
        let mut unaligned = vec![0u8; 8192];
        unaligned[0x1004..0x1008].copy_from_slice(&0xE852_50D6u32.to_le_bytes());
        assert!(!has_multiboot2_header(&unaligned));
    }

    #[test]
    fn module_names_must_differ() {
        let m = |p: &str| BootModule {
            path: p.into(),
            cmdline: String::new(),
        };
        assert!(module_names(&[m("/a/x"), m("/b/y")]).is_ok());
        assert!(module_names(&[m("/a/x"), m("/b/x")]).is_err());
    }

    #[test]
    fn bochsrc_contents() {
        let text = bochsrc(&BochsrcParams {
            model: cpu_model(Emulator::BochsAmd),
            cpus: 2,
            mem_mib: 512,
            iso: Path::new("/r/q.iso"),
            serial: Path::new("/r/serial.out"),
            serial_socket: None,
            log: Path::new("/r/bochs.log"),
            extra: "pci: enabled=1\n",
        });
        for expected in [
            "memory: guest=512, host=512",
            "cpu: model=ryzen, count=2, ips=200000000",
            "romimage: file=/usr/share/bochs/BIOS-bochs-latest, options=fastboot",
            "vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest",
            "ata0-master: type=cdrom, path=/r/q.iso, status=inserted",
            "boot: cdrom",
            "com1: enabled=1, mode=file, dev=/r/serial.out",
            "clock: sync=none, time0=local",
            "display_library: rfb, options=\"timeout=0\"",
            "speaker: enabled=0",
            "sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy",
            "log: /r/bochs.log",
            "panic: action=fatal",
            "error: action=report",
            "info: action=ignore",
            "pci: enabled=1",
        ] {
            assert!(text.lines().any(|l| l == expected), "missing `{expected}`");
        }
        assert_eq!(cpu_model(Emulator::Bochs), "tigerlake");
    }

    #[test]
    fn bochsrc_with_a_console_socket() {
        let text = bochsrc(&BochsrcParams {
            model: cpu_model(Emulator::Bochs),
            cpus: 3,
            mem_mib: 512,
            iso: Path::new("/r/q.iso"),
            serial: Path::new("/r/serial.out"),
            serial_socket: Some(40123),
            log: Path::new("/r/bochs.log"),
            extra: "",
        });
        assert!(text
            .lines()
            .any(|l| l == "com1: enabled=1, mode=socket-client, dev=127.0.0.1:40123"));
        assert!(!text.contains("serial.out"));
    }
}
