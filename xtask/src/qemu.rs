//! QEMU command lines: TCG with AMD SVM + nested paging, the image booted with `-kernel` (multiboot1).
//!
//! Note: QEMU's multiboot loader passes `<kernel path> <cmdline>` as the command line, and each
//! module's whole `-initrd` entry (`<path> <args>`) as that module's string.

use crate::runner::{BootModule, RunConfig};

pub const BINARY: &str = "qemu-system-x86_64";

/// The `-initrd` value for multiboot modules: `"path1 args,path2 args"` (commas inside doubled).
pub fn initrd_arg(modules: &[BootModule]) -> String {
    modules
        .iter()
        .map(|m| {
            let entry = format!("{} {}", m.path.display(), m.cmdline);
            entry.trim_end().replace(',', ",,")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Arguments for `qemu-system-x86_64` (never `-accel kvm`: KVM does not run guests here).
pub fn args(cfg: &RunConfig) -> Vec<String> {
    let mut args: Vec<String> = [
        "-M",
        "q35",
        "-cpu",
        "qemu64,+svm,+npt,+rdrand",
        "-smp",
        &cfg.cpus.to_string(),
        "-m",
        &cfg.mem_mib.to_string(),
        "-kernel",
        &cfg.kernel.display().to_string(),
        "-append",
        &cfg.cmdline,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if !cfg.modules.is_empty() {
        args.push("-initrd".into());
        args.push(initrd_arg(&cfg.modules));
    }
    args.extend(
        [
            "-display",
            "none",
            "-no-reboot",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args.extend(cfg.extra_qemu_args.iter().cloned());
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::Emulator;
    use std::path::PathBuf;
    use std::time::Duration;

    fn config() -> RunConfig {
        RunConfig {
            name: "t".into(),
            kernel: PathBuf::from("/k/quercus"),
            emulator: Emulator::Qemu,
            cpus: 4,
            mem_mib: 256,
            cmdline: "a=1 b".into(),
            modules: Vec::new(),
            extra_qemu_args: vec!["-machine".into(), "acpi=off".into()],
            extra_bochsrc: String::new(),
            expect: Vec::new(),
            parallel: Vec::new(),
            input: Vec::new(),
            fail: None,
            timeout: Duration::from_secs(1),
            echo: false,
        }
    }

    #[test]
    fn basic_args() {
        let a = args(&config());
        let joined = a.join(" ");
        assert!(joined
            .starts_with("-M q35 -cpu qemu64,+svm,+npt,+rdrand -smp 4 -m 256 -kernel /k/quercus"));
        assert!(a.windows(2).any(|w| w == ["-append", "a=1 b"]));
        assert!(joined.contains("-display none -no-reboot -monitor none -serial stdio"));
        assert!(joined.contains("-device isa-debug-exit,iobase=0xf4,iosize=0x04"));
        assert!(joined.ends_with("-machine acpi=off"), "extra args last");
        assert!(!joined.contains("kvm"));
        assert!(!joined.contains("-initrd"));
    }

    #[test]
    fn modules_become_initrd() {
        let mut cfg = config();
        cfg.modules = vec![
            BootModule {
                path: "/g/linux".into(),
                cmdline: "console=ttyS0,115200".into(),
            },
            BootModule {
                path: "/g/initrd".into(),
                cmdline: String::new(),
            },
        ];
        let a = args(&cfg);
        let i = a.iter().position(|x| x == "-initrd").unwrap();
        assert_eq!(a[i + 1], "/g/linux console=ttyS0,,115200,/g/initrd");
    }
}
