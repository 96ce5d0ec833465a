//! `cargo xtask test`: host unit tests, then the table of emulator boot cases.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use regex::Regex;

use crate::build::{self, BuildOptions, Profile};
use crate::runner::{self, BootModule, Emulator, RunConfig};
use crate::{console, packages, process, workspace_root};

/// Failure pattern of every case that does not set its own.
pub const DEFAULT_FAIL: &str = r"(?i)panic|fatal|exception|TEST \S+ FAIL";

/// Failure pattern of cases that expect a `quercus: fatal:` line: a panic (the panic handler
/// prints `quercus: fatal: panic on cpuN: ...`) or a CPU exception still fails them.
pub const BAD_INPUT_FAIL: &str = r"(?i)panic|exception";

/// The banner line of each emulator flavour (names the virtualization support found).
const BANNER_SVM: &str = r"SVM.*NPT";
const BANNER_VMX: &str = r"VMX.*EPT";

#[derive(Clone, Debug)]
pub enum Fail {
    /// [`DEFAULT_FAIL`].
    Default,
    /// No failure pattern: only the expected lines, the timeout or the emulator's exit decide.
    #[allow(dead_code)] // for cases whose expected output looks like a failure
    Disabled,
    Custom(&'static str),
}

/// A check of a whole console log: `Err` says what is wrong.
pub type PostCheck = fn(&[String]) -> Result<(), String>;

#[derive(Clone, Debug)]
pub struct TestCase {
    pub name: &'static str,
    pub emulator: Emulator,
    pub cpus: u32,
    pub mem_mib: u32,
    pub cmdline: &'static str,
    pub extra_qemu_args: &'static [&'static str],
    pub modules: Vec<BootModule>,
    /// The scenario (`configs/<name>.toml`) the image is built with; its guest modules are added.
    pub scenario: &'static str,
    /// Console regexes, all required, in order.
    pub expect: Vec<String>,
    /// Further expected-line lists awaited side by side with `expect` (one per VM).
    pub parallel: Vec<Vec<String>>,
    /// Typed at the console (QEMU): when a line matches the regex, send the text.
    pub input: Vec<(&'static str, &'static str)>,
    /// A check of the whole console log once the expected lines were seen.
    pub post_check: Option<PostCheck>,
    pub fail: Fail,
    pub timeout_secs: u64,
    /// A native companion run, before the Quercus run: the case passes only if both pass.
    pub native: Option<Native>,
}

/// A run of one of the scenario's guests booted directly by the case's emulator (no
/// hypervisor), with [`NATIVE_FAIL`] as its failure pattern: the baseline that shows the guest's
/// expectations hold on the emulated CPU itself.
#[derive(Clone, Debug)]
pub struct Native {
    /// The scenario's boot module booted as the kernel (a multiboot guest, e.g. `test-guest`):
    /// the same ELF the Quercus run embeds.
    pub kernel: &'static str,
    pub cmdline: &'static str,
    /// Boot modules of the native run: (a scenario module name, its module command line).
    pub modules: Vec<(&'static str, &'static str)>,
    /// Emulated CPUs of the native run.
    pub cpus: u32,
    /// Console regexes, all required, in order.
    pub expect: Vec<String>,
    /// QEMU arguments of the native run only, after the case's own `extra_qemu_args` (e.g. QEMU's
    /// own devices standing in for the hypervisor's). `{module:NAME}` becomes the path of the
    /// scenario's boot module NAME (commas doubled for QEMU's option syntax); a relative file
    /// name is a file in the run's directory (QEMU's working directory, [`runner::run_dir`]).
    pub extra_qemu_args: Vec<&'static str>,
    /// Files the native run writes in its run directory (e.g. a `-chardev file`), each with
    /// regexes that lines of it must match, in order, once the console's expectations were met.
    pub files: Vec<(&'static str, Vec<String>)>,
}

/// Failure pattern of native companion runs.
pub const NATIVE_FAIL: &str = r"(?i)panic|fatal|TEST \S+ FAIL";

pub fn ready(cpus: u32) -> String {
    format!("^quercus: ready, {cpus} pCPUs online$")
}

/// A plain boot to the ready line.
fn boot(name: &'static str, emulator: Emulator, cpus: u32) -> TestCase {
    let qemu = emulator == Emulator::Qemu;
    TestCase {
        name,
        emulator,
        cpus,
        mem_mib: 512,
        cmdline: "",
        extra_qemu_args: &[],
        modules: Vec::new(),
        scenario: "default",
        expect: vec![ready(cpus)],
        parallel: Vec::new(),
        input: Vec::new(),
        post_check: None,
        fail: Fail::Default,
        timeout_secs: if qemu { 60 } else { 180 },
        native: None,
    }
}

/// The test guest's tests, in the order it runs them (guests/test-guest).
pub const GUEST_TESTS: [&str; 14] = [
    "cpuid-basic",
    "cpuid-hv-leaves",
    "msr-allowed",
    "msr-forbidden",
    "pio-uart",
    "mmio-unbacked",
    "memory-isolation",
    "hlt-timer",
    "lapic-tsc-deadline",
    "hypercall-version",
    "hypercall-vm-id",
    "hypercall-console",
    "hypercall-unknown",
    "hypercall-user",
];

/// Under Quercus no guest test may skip or fail.
const GUEST_FAIL: &str = r"(?i)panic|fatal|exception|TEST \S+ (FAIL|SKIP)|stopped: .*(?:unhandled|cannot|unsupported|refused)";

/// The test guest's tests of a second vCPU (cmdline word `smp`), after [`GUEST_TESTS`].
pub const GUEST_SMP_TESTS: [&str; 2] = ["smp-ap-start", "smp-ap-restart"];

/// The test guest's PCI tests (cmdline word `pci`, a VM with the PCI test device), after the
/// others but before [`GUEST_LATE_TESTS`].
pub const GUEST_PCI_TESTS: [&str; 8] = [
    "pci-cf8-enum",
    "pci-ecam-enum",
    "pci-bar-size",
    "pci-bar-move",
    "pci-msi",
    "pci-msix",
    "pci-intx",
    "pci-deferred",
];

/// The test guest's tests that run after all others (x2APIC mode lasts until a reset).
pub const GUEST_LATE_TESTS: [&str; 1] = ["lapic-x2apic"];

/// Every guest test passing in VM `vm` (with the optional groups `extra`, e.g. the `smp-*` ones),
/// then its summary and its power-off.
fn guest_passes(vm: &str, extra: &[&str]) -> Vec<String> {
    let tests: Vec<&str> = GUEST_TESTS
        .iter()
        .chain(extra)
        .chain(&GUEST_LATE_TESTS)
        .copied()
        .collect();
    let mut v: Vec<String> = tests
        .iter()
        .map(|t| format!(r"^\[{vm}\] TEST {t} PASS$"))
        .collect();
    v.push(format!(
        r"^\[{vm}\] TESTS DONE {} passed 0 failed$",
        tests.len()
    ));
    v.push(format!(r"vm {vm}: stopped: .*powered off by the guest"));
    v
}

/// The `smp` scenario's test guest (vm0, two vCPUs on pCPUs 1 and 2) under `emulator`.
fn guest(name: &'static str, emulator: Emulator) -> TestCase {
    TestCase {
        scenario: "smp",
        expect: guest_passes("vm0", &GUEST_SMP_TESTS),
        fail: Fail::Custom(GUEST_FAIL),
        ..boot(name, emulator, 3)
    }
}

/// The `pci` scenario's test guest (one vCPU, the PCI test device) under `emulator`: enumeration
/// through 0xCF8 and ECAM (the MCFG), BAR sizing and moving, MSI, MSI-X and INTx.
fn pci(name: &'static str, emulator: Emulator) -> TestCase {
    TestCase {
        scenario: "pci",
        expect: guest_passes("vm0", &GUEST_PCI_TESTS),
        fail: Fail::Custom(GUEST_FAIL),
        ..boot(name, emulator, 2)
    }
}

/// The test guest's `pic-only` tests (a legacy guest: 8259, 8254 and RTC only, issue 10), in
/// the order it runs them: virtual-wire mode first, while the local APIC is still enabled.
pub const GUEST_PIC_ONLY_TESTS: [&str; 5] = [
    "pic-virtual-wire",
    "pic-init",
    "pic-pit-irq0",
    "pic-rtc-irq8",
    "pic-mask-priority",
];

/// The test guest's first line (it shows up again after a reset).
const GUEST_BANNER: &str = "test-guest: vendor=";

/// What a `pic-only kbd-reset` test guest prints, each line after `prefix` (`[vm0] ` under
/// Quercus, nothing natively): every `pic-*` test passing, the summary, the armed reset through
/// the 8042 and, proving the reset, its banner again.
fn pic_only_lines(prefix: &str) -> Vec<String> {
    let p = regex::escape(prefix);
    let mut v: Vec<String> = GUEST_PIC_ONLY_TESTS
        .iter()
        .map(|t| format!(r"^{p}TEST {t} PASS$"))
        .collect();
    v.push(format!(
        r"^{p}TESTS DONE {} passed 0 failed$",
        GUEST_PIC_ONLY_TESTS.len()
    ));
    v.push(format!(r"^{p}TEST kbd-reset ARMED$"));
    v.push(format!(r"^{p}{GUEST_BANNER}"));
    v
}

/// The `pic-only` scenario under `emulator`: the test guest (one vCPU) with only the 8259 pair,
/// the 8254 and the RTC, its local APIC globally disabled (and in virtual-wire mode once), then a
/// reset through the 8042 that must boot the VM again. The same guest runs natively first.
fn pic_only(name: &'static str, emulator: Emulator) -> TestCase {
    let qemu = emulator == Emulator::Qemu;
    TestCase {
        scenario: "pic-only",
        // The 8042 reset must reboot the native QEMU machine rather than end it (`-no-reboot`).
        extra_qemu_args: &["-action", "reboot=reset"],
        expect: pic_only_lines("[vm0] "),
        parallel: vec![vec![
            r"vm vm0: vCPU 0: reset by the guest; booting it again".into(),
        ]],
        fail: Fail::Custom(GUEST_FAIL),
        native: Some(Native {
            kernel: "test-guest",
            cmdline: "pic-only kbd-reset",
            modules: Vec::new(),
            cpus: 1,
            expect: pic_only_lines(""),
            extra_qemu_args: Vec::new(),
            files: Vec::new(),
        }),
        timeout_secs: if qemu { 60 } else { 400 },
        ..boot(name, emulator, 2)
    }
}

/// The test guest's `arch-*` tests (cmdline word `arch`, run alone), in the order it runs them.
pub const GUEST_ARCH_TESTS: [&str; 12] = [
    "arch-cpuid-msrs",
    "arch-mmio-alu",
    "arch-cr8-tpr",
    "arch-single-step",
    "arch-nmi-pair",
    "arch-timer-mode",
    "arch-amd-perfctr",
    "arch-multiboot",
    "arch-apic-relocate",
    "arch-apic-id",
    "arch-x2apic-mmio",
    "arch-apic-disable",
];

/// The `arch` scenario's test guest under `emulator`: natively first (the emulated CPU itself,
/// the test guest as its own boot module), where the tests in `native_skips` print `SKIP` (the
/// emulated CPU lacks the feature, e.g. QEMU TCG's x2APIC), then as vm0 under Quercus, where
/// every `arch-*` test must pass.
fn arch(name: &'static str, emulator: Emulator, native_skips: &[&str]) -> TestCase {
    let prefixed = |vm: &str| {
        let mut v: Vec<String> = GUEST_ARCH_TESTS
            .iter()
            .map(|t| {
                let outcome = if vm.is_empty() && native_skips.contains(t) {
                    "SKIP"
                } else {
                    "PASS"
                };
                format!(r"^{vm}TEST {t} {outcome}")
            })
            .collect();
        let skipped = if vm.is_empty() { native_skips.len() } else { 0 };
        v.push(format!(
            r"^{vm}TESTS DONE {} passed 0 failed$",
            GUEST_ARCH_TESTS.len() - skipped
        ));
        v
    };
    let mut expect = prefixed(r"\[vm0\] ");
    expect.push(r"vm vm0: stopped: .*powered off by the guest".into());
    let qemu = emulator == Emulator::Qemu;
    TestCase {
        scenario: "arch",
        expect,
        fail: Fail::Custom(GUEST_FAIL),
        timeout_secs: if qemu { 60 } else { 300 },
        native: Some(Native {
            kernel: "test-guest",
            cmdline: "arch module=arch-module",
            modules: vec![("test-guest", "arch-module")],
            cpus: 1,
            expect: prefixed(""),
            extra_qemu_args: Vec::new(),
            files: Vec::new(),
        }),
        ..boot(name, emulator, 2)
    }
}

/// The `lowload` scenario under `emulator`: a Multiboot kernel loaded at 0x8000 whose BSS covers the
/// page at 0x9000 must boot, with its Multiboot information placed elsewhere (`LOWLOAD OK`), then
/// halt with interrupts off. Under Quercus only: natively neither loader can load it (QEMU 7.2 puts
/// its own Multiboot information at 0x9000; GRUB lives at 0x8000).
fn lowload(name: &'static str, emulator: Emulator) -> TestCase {
    TestCase {
        scenario: "lowload",
        expect: vec![
            // The shell's prompt may precede it on the line.
            r"\[vm0\] LOWLOAD OK$".into(),
            r"vm vm0: stopped: .*halted with interrupts disabled".into(),
        ],
        fail: Fail::Custom(r"(?i)panic|fatal|exception|LOWLOAD FAIL|cannot|refused"),
        ..boot(name, emulator, 2)
    }
}

/// The virtio devices of the `virtio-drivers` scenarios, in their slot order (the scenario's
/// order from slot 8): slot, modern PCI device ID, the test guest's name for the type.
const VIRTIO_DEVICES: [(&str, &str, &str); 5] = [
    ("08", "1042", "blk"),
    ("09", "1044", "rng"),
    ("0a", "1041", "net"),
    ("0b", "1041", "net"),
    ("0c", "1043", "console"),
];

/// The test guest's `virtio-*` tests (cmdline word `virtio`, run alone), in the order it runs them.
pub const GUEST_VIRTIO_TESTS: [&str; 6] = [
    "virtio-enum",
    "virtio-blk",
    "virtio-rng",
    "virtio-net",
    "virtio-net-peer-loop",
    "virtio-console",
];

/// What `virtio-console` writes to port 0 of the virtio console (never on COM1).
const VIRTIO_CONSOLE_LINE: &str = "VIRTIO-CONSOLE-PORT0 hello from the test guest";

/// The native run's stand-ins for the hypervisor's virtio devices: QEMU's own modern virtio-pci
/// devices at the same slots (the disk is the `testdisk` module, its writes kept in a temporary
/// overlay), the rng without MSI-X (INTx only), the two NICs on one hub, the console's port 0
/// in a file of the run directory. Then a read-only copy of the disk at 00:0d.0, which the
/// scenario does not have: the test guest's read-only checks.
const VIRTIO_NATIVE_QEMU_ARGS: &[&str] = &[
    "-device",
    "virtio-blk-pci,drive=d0,disable-legacy=on,addr=08.0",
    "-drive",
    "file={module:testdisk},if=none,id=d0,format=raw,snapshot=on",
    "-device",
    "virtio-rng-pci,disable-legacy=on,vectors=0,addr=09.0",
    "-netdev",
    "hubport,hubid=0,id=n1",
    "-netdev",
    "hubport,hubid=0,id=n2",
    "-device",
    "virtio-net-pci,netdev=n1,disable-legacy=on,addr=0a.0",
    "-device",
    "virtio-net-pci,netdev=n2,disable-legacy=on,addr=0b.0",
    "-device",
    "virtio-serial-pci,disable-legacy=on,addr=0c.0,id=vser0",
    "-chardev",
    "file,id=vcon0,path=virtio-console.out",
    "-device",
    "virtconsole,bus=vser0.0,chardev=vcon0",
    "-device",
    "virtio-blk-pci,drive=d1,disable-legacy=on,addr=0d.0",
    "-drive",
    "file={module:testdisk},if=none,id=d1,format=raw,readonly=on",
];

/// The native run's read-only disk (see [`VIRTIO_NATIVE_QEMU_ARGS`]).
const VIRTIO_NATIVE_RO_DISK: (&str, &str, &str) = ("0d", "1042", "blk");

/// The `virtio-*` lines of the test guest, each after `prefix`: every device of `devices` listed
/// by `virtio-enum`, the disks' capacities (and, on a read-only disk, the refused write), every
/// test passing, the summary.
fn virtio_lines(prefix: &str, devices: &[(&str, &str, &str)], readonly: &[&str]) -> Vec<String> {
    let p = regex::escape(prefix);
    let mut v: Vec<String> = devices
        .iter()
        .map(|(slot, id, kind)| format!(r"^{p}virtio-enum: 00:{slot}\.0 1af4:{id} rev \d+ {kind}$"))
        .collect();
    for t in GUEST_VIRTIO_TESTS {
        if t == "virtio-blk" {
            for (slot, _, _) in devices.iter().filter(|d| d.2 == "blk") {
                let ro = readonly.contains(slot);
                let mode = if ro { "read-only" } else { "read-write" };
                v.push(format!(
                    r"^{p}virtio-blk: 00:{slot}\.0 capacity={} sectors {mode}$",
                    build::TESTDISK_SECTORS
                ));
                if ro {
                    v.push(format!(
                        r"^{p}virtio-blk: 00:{slot}\.0 write to the read-only device refused"
                    ));
                }
            }
        }
        v.push(format!(r"^{p}TEST {t} PASS$"));
    }
    v.push(format!(
        r"^{p}TESTS DONE {} passed 0 failed$",
        GUEST_VIRTIO_TESTS.len()
    ));
    v
}

/// vm0 lists exactly the scenario's virtio devices (no more than the expected lines name).
fn virtio_enum_check(lines: &[String]) -> Result<(), String> {
    let listed: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("[vm0] virtio-enum: "))
        .collect();
    if listed.len() == VIRTIO_DEVICES.len() {
        Ok(())
    } else {
        Err(format!(
            "vm0 lists {} virtio devices, the scenario has {}: {listed:?}",
            listed.len(),
            VIRTIO_DEVICES.len()
        ))
    }
}

/// The `virtio-drivers` scenario (QEMU) or `virtio-drivers-bochs` (the Bochs board) under
/// `emulator`: the test guest's `virtio` mode, in which the `virtio-drivers` crate drives the
/// hypervisor's virtio-blk (the `testdisk` module), virtio-rng, two virtio-net ports on one switch
/// and virtio-console; the console's line must show on the hypervisor's console. Under QEMU the
/// same guest first runs natively against QEMU's own virtio devices ([`VIRTIO_NATIVE_QEMU_ARGS`]);
/// Bochs has no virtio devices, so its cases are Quercus runs only.
fn virtio_drivers(name: &'static str, emulator: Emulator) -> TestCase {
    let qemu = emulator == Emulator::Qemu;
    let mut expect = virtio_lines("[vm0] ", &VIRTIO_DEVICES, &[]);
    expect.push(r"vm vm0: stopped: .*powered off by the guest".into());
    let native = qemu.then(|| {
        let mut devices = VIRTIO_DEVICES.to_vec();
        devices.push(VIRTIO_NATIVE_RO_DISK);
        Native {
            kernel: "test-guest",
            cmdline: "virtio",
            modules: Vec::new(),
            cpus: 1,
            expect: virtio_lines("", &devices, &[VIRTIO_NATIVE_RO_DISK.0]),
            extra_qemu_args: VIRTIO_NATIVE_QEMU_ARGS.to_vec(),
            files: vec![(
                "virtio-console.out",
                vec![format!("^{}$", regex::escape(VIRTIO_CONSOLE_LINE))],
            )],
        }
    });
    TestCase {
        scenario: if qemu {
            "virtio-drivers"
        } else {
            "virtio-drivers-bochs"
        },
        expect,
        // The line the guest wrote to its virtio console, on the hypervisor's console for vm0
        // (whatever prefix it gets there; COM1 never carries it).
        parallel: vec![vec![format!("{}$", regex::escape(VIRTIO_CONSOLE_LINE))]],
        post_check: Some(virtio_enum_check),
        fail: Fail::Custom(GUEST_FAIL),
        timeout_secs: if qemu { 90 } else { 400 },
        native,
        ..boot(name, emulator, 2)
    }
}

/// The test guest's tests in `virtio-net-peer` mode, in the order it runs them.
pub const GUEST_VIRTIO_PEER_TESTS: [&str; 2] = ["virtio-enum", "virtio-net-peer"];

/// What VM `vm` of the `virtio-drivers-peer` scenario prints: its one virtio-net port listed,
/// both tests passing, the summary and its power-off.
fn virtio_peer_lines(vm: &str) -> Vec<String> {
    let mut v = vec![format!(
        r"^\[{vm}\] virtio-enum: 00:08\.0 1af4:1041 rev \d+ net$"
    )];
    v.extend(
        GUEST_VIRTIO_PEER_TESTS
            .iter()
            .map(|t| format!(r"^\[{vm}\] TEST {t} PASS$")),
    );
    v.push(format!(
        r"^\[{vm}\] TESTS DONE {} passed 0 failed$",
        GUEST_VIRTIO_PEER_TESTS.len()
    ));
    v.push(format!(r"vm {vm}: stopped: .*powered off by the guest"));
    v
}

/// The `virtio-drivers-peer` scenario: two VMs, one virtio-net port each on one switch, exchange
/// frames naming themselves until each has heard the other and been acknowledged. Under Quercus
/// only (natively it would take two emulators; the test guest's `virtio-net-peer-loop` runs the
/// same protocol between two ports of one VM, natively too).
fn virtio_peer() -> TestCase {
    TestCase {
        scenario: "virtio-drivers-peer",
        cpus: 3,
        expect: virtio_peer_lines("vm0"),
        parallel: vec![virtio_peer_lines("vm1")],
        fail: Fail::Custom(GUEST_FAIL),
        ..boot("virtio-drivers-peer-qemu-svm", Emulator::Qemu, 3)
    }
}

/// The exits total of each `stats vm0` table row, in order.
fn vm0_exit_totals(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("vm0") && f.next() == Some("0")).then(|| f.next()?.parse().ok())?
        })
        .collect()
}

/// Index of the first line matching `pred` at or after `from`.
fn find(lines: &[String], from: usize, pred: impl Fn(&str) -> bool) -> Option<usize> {
    lines
        .iter()
        .skip(from)
        .position(|l| pred(l))
        .map(|i| i + from)
}

/// What the scripted shell session must show beyond its expected lines:
/// exit counts grow, a paused VM prints nothing, a stopped VM stays silent
/// while the other goes on.
fn shell_session_check(lines: &[String]) -> Result<(), String> {
    let totals = vm0_exit_totals(lines);
    match totals[..] {
        [first, .., last] if last > first => {}
        _ => {
            return Err(format!(
                "vm0's exit count did not grow across `stats` calls: {totals:?}"
            ))
        }
    }
    let paused = find(lines, 0, |l| l == "vm0: paused").ok_or("no `vm0: paused`")?;
    let resumed =
        find(lines, paused, |l| l == "vm0: running").ok_or("no `vm0: running` after the pause")?;
    if let Some(i) =
        find(lines, paused + 1, |l| l.starts_with("[vm0] tick")).filter(|&i| i < resumed)
    {
        return Err(format!("vm0 printed while paused: {}", lines[i]));
    }
    let stopped = find(lines, resumed, |l| l == "vm1: stopped").ok_or("no `vm1: stopped`")?;
    if let Some(i) = find(lines, stopped + 1, |l| l.starts_with("[vm1] tick")) {
        return Err(format!("vm1 printed after it was stopped: {}", lines[i]));
    }
    find(lines, stopped + 1, |l| l.starts_with("[vm0] tick"))
        .ok_or("vm0 did not go on after vm1 stopped")?;
    Ok(())
}

/// Failure lines of Linux runs (a Linux log may say "panic" in passing).
const LINUX_FAIL: &str = r"quercus: fatal|stopped: .*(?:unhandled|cannot|unsupported|refused|triple)|TEST \S+ (FAIL|SKIP)|Attempted to kill init|general protection fault";

/// The memory Linux reports must match the VM's 128 MiB, less what the kernel
/// keeps for itself (its image, page structures, the initramfs): between 64
/// and 128 MiB.
fn linux_memory_check(lines: &[String]) -> Result<(), String> {
    let kb: Vec<u64> = lines
        .iter()
        .filter_map(|l| {
            l.split("mem_kb=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    match kb.first() {
        Some(&k) if (64 * 1024..=128 * 1024).contains(&k) => Ok(()),
        Some(&k) => Err(format!(
            "Linux sees {k} KiB of memory; the scenario gives it 128 MiB"
        )),
        None => Err("no mem_kb= line from the Linux guest".into()),
    }
}

/// [`linux_memory_check`], and Linux did not refuse the MCFG's ECAM window.
fn linux_memory_and_mmconfig_check(lines: &[String]) -> Result<(), String> {
    linux_memory_check(lines)?;
    match lines.iter().find(|l| {
        l.contains("not using MMCONFIG") || l.contains("not reserved in ACPI motherboard")
    }) {
        Some(l) => Err(format!("Linux refused the VM's ECAM window: {l}")),
        None => Ok(()),
    }
}

/// Linux in one pre-launched VM: userspace, a command typed through the
/// shell's `vm_console`, `reboot` (the VM boots again), `poweroff` (it stops).
fn linux_lifecycle() -> TestCase {
    TestCase {
        scenario: "linux",
        cpus: 2,
        input: vec![
            (r"^\[linux\] QUERCUS-GUEST: shell$", "vm_console linux\r"),
            (r"attached to linux", "echo hello-$((6*7))\r"),
            (r"^hello-42", "reboot -f\r"),
            (r"^QUERCUS-GUEST: shell$", "poweroff -f\r"),
        ],
        expect: vec![
            r"^\[linux\] QUERCUS-GUEST: up$".into(),
            r"^\[linux\] QUERCUS-GUEST: cpus=1 mem_kb=\d+".into(),
            // The VM's PCI segment: the host bridge alone, config space through MMCONFIG.
            r"^\[linux\] QUERCUS-GUEST: pci devices=0000:00:00\.0 $".into(),
            r"^\[linux\] QUERCUS-GUEST: dmesg: .*MMCONFIG at \[mem 0xe0000000-0xe00fffff\] reserved (in E820|as ACPI motherboard resource)".into(),
            r"attached to linux".into(),
            r"^hello-42".into(),
            r"vm linux: vCPU 0: reset by the guest".into(),
            r"^QUERCUS-GUEST: up$".into(),
            r"vm linux: stopped: .*powered off by the guest".into(),
        ],
        post_check: Some(linux_memory_and_mmconfig_check),
        fail: Fail::Custom(LINUX_FAIL),
        timeout_secs: 240,
        ..boot("linux-qemu-svm", Emulator::Qemu, 2)
    }
}

/// The counts of one `/proc/interrupts` row (`LOC:`, `RES:`...) as Linux printed it, per CPU.
fn interrupt_row(lines: &[String], name: &str) -> Option<Vec<u64>> {
    lines.iter().rev().find_map(|l| {
        let rest = l.trim_start().strip_prefix(name)?;
        let counts: Vec<u64> = rest
            .split_whitespace()
            .map_while(|w| w.parse().ok())
            .collect();
        (!counts.is_empty()).then_some(counts)
    })
}

/// Both vCPUs of the SMP guest took timer interrupts, and the guest's
/// cross-CPU interrupts (rescheduling and function-call IPIs) arrived.
fn linux_smp_check(lines: &[String]) -> Result<(), String> {
    linux_memory_check(lines)?;
    let loc = interrupt_row(lines, "LOC:").ok_or("no LOC: row from /proc/interrupts")?;
    if loc.len() != 2 || loc.contains(&0) {
        return Err(format!(
            "local timer interrupts per CPU {loc:?}: expected two CPUs, both ticking"
        ));
    }
    let res = interrupt_row(lines, "RES:").ok_or("no RES: row")?;
    let cal = interrupt_row(lines, "CAL:").ok_or("no CAL: row")?;
    let ipis: u64 = res.iter().chain(&cal).sum();
    if ipis == 0 {
        return Err(format!("no IPI reached a CPU (RES {res:?}, CAL {cal:?})"));
    }
    // The shell counts each vCPU's own exits (`vcpu_list`, then `stats`).
    let per_vcpu: Vec<u64> = lines
        .iter()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let vcpu = (f.next() == Some("linux")).then(|| f.next())??;
            if vcpu != "0" && vcpu != "1" {
                return None;
            }
            // vcpu_list: VM VCPU PCPU STATE EXITS; stats: VM VCPU EXITS ...
            let rest: Vec<&str> = f.collect();
            match rest[..] {
                [_, "running" | "halted", exits, ..] => exits.parse().ok(),
                [exits, ..] => exits.parse().ok(),
                _ => None,
            }
        })
        .collect();
    if per_vcpu.len() < 4 || per_vcpu.contains(&0) {
        return Err(format!(
            "vcpu_list and stats should show exits for both vCPUs: {per_vcpu:?}"
        ));
    }
    no_leak_across_restarts(lines)
}

/// The KiB in use of `pool` ("frames", "heap") in each `mem` table, in order.
fn mem_used_kib(lines: &[String], pool: &str) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(pool)).then(|| f.next()?.parse().ok())?
        })
        .collect()
}

/// `mem` before the reboot / poweroff / `vm_start` cycles and after them: the
/// same frames in use, and the heap within less than one SVM vCPU's pages (28 KiB)
/// of where it was.
fn no_leak_across_restarts(lines: &[String]) -> Result<(), String> {
    let frames = mem_used_kib(lines, "frames");
    let heap = mem_used_kib(lines, "heap");
    match (&frames[..], &heap[..]) {
        ([f0, .., f1], [h0, .., h1]) if f0 == f1 && *h1 < h0 + 28 => Ok(()),
        _ => Err(format!(
            "memory in use grew across VM restarts: frames {frames:?} KiB, heap {heap:?} KiB"
        )),
    }
}

/// The `stats` row of the SMP Linux VM's vCPU 1: exits, injected, guest share.
const STATS_VCPU1: &str = r"^linux\s+1\s+\d+\s+\d+\s+[\d.]+%";

/// Linux with two vCPUs: both come up (the AP through INIT/SIPI), both take
/// interrupts, IPIs flow; `reboot` brings both back, `poweroff` stops the VM,
/// and the operator's `vm_start` boots both vCPUs again.
fn linux_smp() -> TestCase {
    TestCase {
        scenario: "linux-smp",
        cpus: 3,
        input: vec![
            (r"^\[linux\] QUERCUS-GUEST: shell$", "mem\r"),
            (r"^heap\s+\d+ KiB", "vcpu_list linux\r"),
            (r"^linux\s+1\s+2\s+(running|halted)\s", "stats linux\r"),
            (STATS_VCPU1, "vm_console linux\r"),
            (
                r"attached to linux",
                "grep -E '^ *(LOC|RES|CAL):' /proc/interrupts; echo done-$((6*7))\r",
            ),
            (r"^done-42", "reboot -f\r"),
            (r"^QUERCUS-GUEST: shell$", "poweroff -f\r"),
            (r"vm linux: stopped: .*powered off by the guest", "\x01d"),
            (r"^\[detached from linux\]$", "vm_start linux\r"),
            (r"^\[linux\] QUERCUS-GUEST: shell$", "mem\r"),
        ],
        expect: vec![
            r"vm linux: vCPU 1 starts at 0x".into(),
            r"^\[linux\] QUERCUS-GUEST: cpus=2 mem_kb=\d+".into(),
            r"^linux\s+0\s+1\s+(running|halted)\s+\d+".into(),
            r"^linux\s+1\s+2\s+(running|halted)\s+\d+".into(),
            STATS_VCPU1.into(),
            r"attached to linux".into(),
            r"^done-42".into(),
            r"vm linux: vCPU 0: reset by the guest".into(),
            r"vm linux: vCPU 1 starts at 0x".into(),
            r"^QUERCUS-GUEST: cpus=2 ".into(),
            r"vm linux: stopped: .*powered off by the guest".into(),
            r"^\[detached from linux\]$".into(),
            r"vm linux: vCPU 1 starts at 0x".into(),
            r"^\[linux\] QUERCUS-GUEST: cpus=2 ".into(),
            r"^heap\s+\d+ KiB".into(),
        ],
        post_check: Some(linux_smp_check),
        fail: Fail::Custom(LINUX_FAIL),
        timeout_secs: 300,
        ..boot("linux-smp-qemu-svm", Emulator::Qemu, 3)
    }
}

/// The same kernel as an ELF vmlinux through its PVH entry (32-bit protected mode, start info).
fn linux_pvh() -> TestCase {
    TestCase {
        scenario: "linux-pvh",
        expect: vec![
            r"vm linux: vCPU 0 starts at 0x".into(),
            r"^\[linux\] QUERCUS-GUEST: up$".into(),
            r"^\[linux\] QUERCUS-GUEST: cpus=1 mem_kb=\d+".into(),
        ],
        post_check: Some(linux_memory_check),
        fail: Fail::Custom(LINUX_FAIL),
        timeout_secs: 180,
        ..boot("linux-pvh-qemu-svm", Emulator::Qemu, 2)
    }
}

/// Linux must see the 4 GiB the `linux-highmem` VM has, less what the kernel keeps (its image,
/// page structures, the initramfs): more than the 3 GiB below the PCI hole, so the 1 GiB above
/// 4 GiB is in use.
fn linux_highmem_check(lines: &[String]) -> Result<(), String> {
    let kb = lines
        .iter()
        .find_map(|l| {
            l.split("mem_kb=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .ok_or("no mem_kb= line from the Linux guest")?;
    if (3 * 1024 * 1024 + 512 * 1024..=4 * 1024 * 1024).contains(&kb) {
        Ok(())
    } else {
        Err(format!(
            "Linux sees {kb} KiB of memory; the VM has 4 GiB (3 GiB below its PCI hole, 1 GiB from 4 GiB)"
        ))
    }
}

/// A Linux VM whose RAM runs past the PCI hole: 1 GiB of it lives above 4 GiB.
fn linux_highmem() -> TestCase {
    TestCase {
        scenario: "linux-highmem",
        mem_mib: 8192,
        expect: vec![
            r"^\[linux\] QUERCUS-GUEST: up$".into(),
            r"^\[linux\] QUERCUS-GUEST: cpus=1 mem_kb=\d+".into(),
        ],
        post_check: Some(linux_highmem_check),
        fail: Fail::Custom(LINUX_FAIL),
        timeout_secs: 240,
        ..boot("linux-highmem-qemu-svm", Emulator::Qemu, 2)
    }
}

/// Linux with two vCPUs to userspace under Bochs (Intel VT-x or AMD-V): the slow ones (minutes).
/// The AP starts in real mode through INIT/SIPI (under VMX: unrestricted guest).
fn linux_bochs(name: &'static str, emulator: Emulator) -> TestCase {
    TestCase {
        scenario: "linux-smp",
        cpus: 3,
        mem_mib: 1024,
        expect: vec![
            r"vm linux: vCPU 1 starts at 0x".into(),
            r"^\[linux\] QUERCUS-GUEST: up$".into(),
            r"^\[linux\] QUERCUS-GUEST: cpus=2 mem_kb=\d+".into(),
        ],
        post_check: Some(linux_memory_check),
        fail: Fail::Custom(LINUX_FAIL),
        timeout_secs: 1200,
        ..boot(name, emulator, 3)
    }
}

/// A kernel panic in the Linux VM leaves the bare-metal VM running.
fn linux_panic() -> TestCase {
    TestCase {
        scenario: "linux-panic",
        cpus: 3,
        expect: vec![
            r"^\[linux\] QUERCUS-GUEST: panicking$".into(),
            r"^\[linux\] .*Kernel panic".into(),
            r"^\[vm1\] tick \d+$".into(),
        ],
        parallel: vec![vec![format!(
            r"^\[vm1\] TESTS DONE {} passed 0 failed$",
            GUEST_TESTS.len() + GUEST_LATE_TESTS.len()
        )]],
        fail: Fail::Custom(LINUX_FAIL),
        timeout_secs: 240,
        ..boot("linux-panic-qemu-svm", Emulator::Qemu, 3)
    }
}

/// The scripted shell session on the `shell` scenario (two VMs that stay up).
fn shell_session() -> TestCase {
    const STATS_VM0: &str = r"^vm0\s+0\s+\d+\s";
    TestCase {
        scenario: "shell",
        cpus: 3,
        input: vec![
            (r"^\[vm1\] tick 2$", "vm_list\r"),
            (r"^1\s+vm1\s+running\s", "vm_console vm0\r"),
            (r"attached to vm0", "hello quercus\r"),
            (r"^got: hello quercus$", "\x01d"),
            (r"^\[detached from vm0\]$", "stats vm0\r"),
            (STATS_VM0, "vm_pause vm0\r"),
            (r"^vm0: paused$", "vcpu_dumpreg vm0 0\r"),
            (r"^rip\s+0x", "stats vm0\r"),
            (STATS_VM0, "vm_resume vm0\r"),
            (r"^vm0: running$", "vm_stop vm1\r"),
            (r"^vm1: stopped$", "bogus 0xZZ\r"),
            (r"unknown command", "dump_guest_mem vm0 0xFFFFFFFFFFFF 16\r"),
            (r"not RAM of VM", "stats vm0\r"),
        ],
        expect: vec![
            r"^0\s+vm0\s+running\s+pre-launched".into(),
            r"attached to vm0".into(),
            r"^got: hello quercus$".into(),
            r"^\[detached from vm0\]$".into(),
            STATS_VM0.into(),
            r"^vm0: paused$".into(),
            r"^rip\s+0x[0-9a-f]+".into(),
            STATS_VM0.into(),
            r"^vm0: running$".into(),
            r"^vm1: stopped$".into(),
            r"unknown command".into(),
            r"not RAM of VM".into(),
            STATS_VM0.into(),
            r"^\[vm0\] tick".into(),
        ],
        post_check: Some(shell_session_check),
        fail: Fail::Custom(GUEST_FAIL),
        ..boot("shell-session-qemu", Emulator::Qemu, 3)
    }
}

/// After `vm1: stopped` vm1 prints nothing more and vm2 goes on: the stop reached the VM with
/// id 1, not the second VM running.
fn shell_gap_check(lines: &[String]) -> Result<(), String> {
    let stopped = find(lines, 0, |l| l == "vm1: stopped").ok_or("no `vm1: stopped`")?;
    if let Some(i) = find(lines, stopped + 1, |l| l.starts_with("[vm1] tick")) {
        return Err(format!("vm1 printed after it was stopped: {}", lines[i]));
    }
    find(lines, stopped + 1, |l| l.starts_with("[vm2] tick"))
        .ok_or("vm2 did not go on after vm1 stopped")?;
    Ok(())
}

/// The shell by VM id on the `shell-gap` scenario, whose VM 0 (a Service VM) is not started:
/// typing into vm2 (id 2) reaches vm2, and `vm_stop 1` stops vm1 (id 1) while vm2 runs on.
fn shell_gap() -> TestCase {
    TestCase {
        scenario: "shell-gap",
        cpus: 4,
        input: vec![
            (r"^\[vm2\] tick 2$", "vm_list\r"),
            (r"^2\s+vm2\s+running\s", "vm_console 2\r"),
            (r"attached to vm2", "hello gap\r"),
            (r"^got: hello gap$", "\x01d"),
            (r"^\[detached from vm2\]$", "vm_stop 1\r"),
        ],
        expect: vec![
            r"^1\s+vm1\s+running\s+pre-launched".into(),
            r"^2\s+vm2\s+running\s+pre-launched".into(),
            r"attached to vm2".into(),
            r"^got: hello gap$".into(),
            r"^\[detached from vm2\]$".into(),
            r"vm vm1: stopped: vCPU 0: stopped by the operator".into(),
            r"^vm1: stopped$".into(),
            r"^\[vm2\] tick".into(),
        ],
        post_check: Some(shell_gap_check),
        fail: Fail::Custom(GUEST_FAIL),
        ..boot("shell-gap-qemu", Emulator::Qemu, 4)
    }
}

/// The emulator test table, run in this order.
pub fn cases() -> Vec<TestCase> {
    vec![
        shell_session(),
        shell_gap(),
        linux_lifecycle(),
        linux_smp(),
        linux_pvh(),
        linux_highmem(),
        linux_panic(),
        linux_bochs("linux-smp-bochs-vmx", Emulator::Bochs),
        linux_bochs("linux-smp-bochs-svm", Emulator::BochsAmd),
        guest("guest-qemu-svm", Emulator::Qemu),
        guest("guest-bochs-svm", Emulator::BochsAmd),
        guest("guest-bochs-vmx", Emulator::Bochs),
        guest("guest-bochs-haswell-vmx", Emulator::BochsHaswell),
        pci("pci-qemu-svm", Emulator::Qemu),
        pci("pci-bochs-vmx", Emulator::Bochs),
        pci("pci-bochs-svm", Emulator::BochsAmd),
        pic_only("pic-only-qemu-svm", Emulator::Qemu),
        pic_only("pic-only-bochs-vmx", Emulator::Bochs),
        pic_only("pic-only-bochs-svm", Emulator::BochsAmd),
        // QEMU's TCG and Bochs's `ryzen` have no x2APIC.
        arch("arch-qemu-svm", Emulator::Qemu, &["arch-x2apic-mmio"]),
        arch("arch-bochs-vmx", Emulator::Bochs, &[]),
        arch("arch-bochs-svm", Emulator::BochsAmd, &["arch-x2apic-mmio"]),
        lowload("lowload-qemu-svm", Emulator::Qemu),
        lowload("lowload-bochs-vmx", Emulator::Bochs),
        lowload("lowload-bochs-svm", Emulator::BochsAmd),
        virtio_drivers("virtio-drivers-qemu-svm", Emulator::Qemu),
        virtio_drivers("virtio-drivers-bochs-vmx", Emulator::Bochs),
        virtio_drivers("virtio-drivers-bochs-svm", Emulator::BochsAmd),
        virtio_peer(),
        TestCase {
            scenario: "partitioned",
            cpus: 4,
            expect: guest_passes("vm0", &[]),
            parallel: vec![
                vec![
                    r"^\[vm1\] TEST triple-fault ARMED$".into(),
                    r"vm vm1: stopped: .*triple fault".into(),
                ],
                vec![
                    r"^\[linux\] QUERCUS-GUEST: up$".into(),
                    r"^\[linux\] QUERCUS-GUEST: cpus=1 mem_kb=\d+".into(),
                ],
            ],
            fail: Fail::Custom(GUEST_FAIL),
            timeout_secs: 180,
            ..boot("partitioned-qemu-svm", Emulator::Qemu, 4)
        },
        TestCase {
            // The Linux VM boots alongside; under Bochs only the bare-metal VMs are awaited.
            scenario: "partitioned",
            cpus: 4,
            expect: guest_passes("vm0", &[]),
            parallel: vec![vec![
                r"^\[vm1\] TEST triple-fault ARMED$".into(),
                r"vm vm1: stopped: .*triple fault".into(),
            ]],
            fail: Fail::Custom(GUEST_FAIL),
            timeout_secs: 300,
            ..boot("partitioned-bochs-vmx", Emulator::Bochs, 4)
        },
        TestCase {
            expect: vec![BANNER_SVM.into(), ready(2)],
            ..boot("boot-qemu-2cpu", Emulator::Qemu, 2)
        },
        boot("boot-qemu-4cpu", Emulator::Qemu, 4),
        boot("boot-qemu-1cpu", Emulator::Qemu, 1),
        TestCase {
            expect: vec![BANNER_VMX.into(), ready(2)],
            ..boot("boot-bochs-vmx-2cpu", Emulator::Bochs, 2)
        },
        TestCase {
            expect: vec![BANNER_SVM.into(), ready(2)],
            ..boot("boot-bochs-svm-2cpu", Emulator::BochsAmd, 2)
        },
        // `-machine acpi=off` cannot remove the tables: with no tables from QEMU, SeaBIOS builds
        // its own (MADT included). The hypervisor's test hook breaks the MADT signature instead.
        TestCase {
            cmdline: "quercus.test.corrupt_madt",
            expect: vec!["fatal: .*ACPI".into()],
            fail: Fail::Custom(BAD_INPUT_FAIL),
            ..boot("bad-acpi-madt", Emulator::Qemu, 2)
        },
        TestCase {
            cmdline: "quercus.test.corrupt_mmap",
            expect: vec!["fatal: .*memory map".into()],
            fail: Fail::Custom(BAD_INPUT_FAIL),
            ..boot("bad-memory-map", Emulator::Qemu, 2)
        },
    ]
}

impl TestCase {
    pub fn run_config(&self, kernel: &Path, scenario_modules: &[BootModule]) -> Result<RunConfig> {
        let expect = self
            .expect
            .iter()
            .map(|s| Regex::new(s).with_context(|| format!("{}: bad regex `{s}`", self.name)))
            .collect::<Result<Vec<_>>>()?;
        let fail = match self.fail {
            Fail::Default => Some(DEFAULT_FAIL),
            Fail::Disabled => None,
            Fail::Custom(s) => Some(s),
        }
        .map(Regex::new)
        .transpose()?;
        let parallel = self
            .parallel
            .iter()
            .map(|g| {
                g.iter()
                    .map(|s| Regex::new(s))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{}: bad regex", self.name))?;
        let input = self
            .input
            .iter()
            .map(|(re, text)| Ok((Regex::new(re)?, text.as_bytes().to_vec())))
            .collect::<Result<Vec<_>, regex::Error>>()
            .with_context(|| format!("{}: bad input regex", self.name))?;
        Ok(RunConfig {
            parallel,
            input,
            name: self.name.to_string(),
            kernel: kernel.to_path_buf(),
            emulator: self.emulator,
            cpus: self.cpus,
            mem_mib: self.mem_mib,
            cmdline: self.cmdline.to_string(),
            modules: scenario_modules
                .iter()
                .chain(&self.modules)
                .cloned()
                .collect(),
            extra_qemu_args: self.extra_qemu_args.iter().map(|s| s.to_string()).collect(),
            expect,
            fail,
            timeout: Duration::from_secs(self.timeout_secs),
            echo: false,
        })
    }
}

impl Native {
    /// The native run of `case`: its kernel and modules are looked up by name among the
    /// scenario's boot modules (each carries its name as its command line).
    pub fn run_config(
        &self,
        case: &TestCase,
        scenario_modules: &[BootModule],
    ) -> Result<RunConfig> {
        let find = |name: &str| {
            scenario_modules
                .iter()
                .find(|m| m.cmdline == name)
                .map(|m| m.path.clone())
                .with_context(|| {
                    format!(
                        "{}: native run: scenario `{}` has no boot module `{name}`",
                        case.name, case.scenario
                    )
                })
        };
        let modules = self
            .modules
            .iter()
            .map(|&(name, cmdline)| {
                Ok(BootModule {
                    path: find(name)?,
                    cmdline: cmdline.to_string(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let expect = self
            .expect
            .iter()
            .map(|s| {
                Regex::new(s).with_context(|| format!("{}: bad native regex `{s}`", case.name))
            })
            .collect::<Result<Vec<_>>>()?;
        // The same machine as the Quercus run (e.g. `-action reboot=reset`), then the native run's
        // own devices.
        let mut extra_qemu_args: Vec<String> =
            case.extra_qemu_args.iter().map(|s| s.to_string()).collect();
        for arg in &self.extra_qemu_args {
            extra_qemu_args.push(substitute_modules(arg, |name| {
                find(name).map(|p| p.display().to_string().replace(',', ",,"))
            })?);
        }
        Ok(RunConfig {
            name: format!("{}-native", case.name),
            kernel: find(self.kernel)?,
            emulator: case.emulator,
            cpus: self.cpus,
            mem_mib: case.mem_mib,
            cmdline: self.cmdline.to_string(),
            modules,
            extra_qemu_args,
            expect,
            parallel: Vec::new(),
            input: Vec::new(),
            fail: Some(Regex::new(NATIVE_FAIL)?),
            timeout: Duration::from_secs(case.timeout_secs),
            echo: false,
        })
    }
}

/// `arg` with each `{module:NAME}` replaced by `path(NAME)`.
fn substitute_modules(arg: &str, path: impl Fn(&str) -> Result<String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(at) = rest.find("{module:") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + "{module:".len()..];
        let end = tail
            .find('}')
            .with_context(|| format!("unterminated `{{module:` in `{arg}`"))?;
        out.push_str(&path(&tail[..end])?);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks the files a passed native run wrote: each regex of a file matches one of its lines,
/// in order. `Err` says which file or regex failed.
fn check_native_files(dir: &Path, files: &[(&'static str, Vec<String>)]) -> Result<(), String> {
    for (name, regexes) in files {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{} not readable: {e}", path.display()))?;
        let mut lines = text.lines();
        for re in regexes {
            let re = Regex::new(re).map_err(|e| format!("bad regex `{re}`: {e}"))?;
            if !lines.any(|l| re.is_match(l)) {
                return Err(format!(
                    "{}: no line (after the earlier matches) matches `{re}`; it holds {:?}",
                    path.display(),
                    text.chars().take(400).collect::<String>()
                ));
            }
        }
    }
    Ok(())
}

/// Workspace packages whose manifest lies under `guests/` (bare-metal test guests).
fn guest_packages(root: &Path) -> Result<Vec<String>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(root)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("parsing cargo metadata")?;
    Ok(guests_in_metadata(&meta, &root.join("guests")))
}

fn guests_in_metadata(meta: &serde_json::Value, guests_dir: &Path) -> Vec<String> {
    meta["packages"]
        .as_array()
        .map(|pkgs| {
            pkgs.iter()
                .filter(|p| {
                    p["manifest_path"]
                        .as_str()
                        .is_some_and(|m| Path::new(m).starts_with(guests_dir))
                })
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn unit_tests(root: &Path) -> Result<()> {
    let mut excluded = vec!["hypervisor".to_string()];
    excluded.extend(guest_packages(root)?);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).args(["test", "--workspace"]);
    for pkg in &excluded {
        cmd.args(["--exclude", pkg]);
    }
    let status = cmd.status().context("running cargo test")?;
    if !status.success() {
        bail!("unit tests failed ({status})");
    }
    Ok(())
}

/// `cargo xtask test`.
pub fn run_tests(unit: bool, emulator: bool, filter: Option<&str>) -> Result<ExitCode> {
    let root = workspace_root();
    if unit {
        unit_tests(&root)?;
    }
    if !emulator {
        return Ok(ExitCode::SUCCESS);
    }
    let selected: Vec<TestCase> = cases()
        .into_iter()
        .filter(|c| filter.is_none_or(|f| c.name.contains(f)))
        .collect();
    if selected.is_empty() {
        bail!("no emulator test case matches the filter");
    }
    packages::ensure(&packages::all_requirements())?;
    let mut images: std::collections::HashMap<&str, (std::path::PathBuf, Vec<BootModule>)> =
        std::collections::HashMap::new();
    let (mut passed, mut failed) = (0usize, 0usize);
    for case in &selected {
        if process::interrupted() {
            eprintln!("interrupted");
            break;
        }
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
        );
        pb.set_message(case.name);
        pb.enable_steady_tick(Duration::from_millis(100));
        let result = image_for(&root, case.scenario, &mut images)
            .and_then(|(kernel, modules)| run_case(case, &kernel, &modules));
        pb.finish_and_clear();
        match result {
            Ok(Verdict::Pass(secs)) => {
                passed += 1;
                println!("PASS {} ({secs:.1} s)", case.name);
            }
            Ok(Verdict::Fail {
                why,
                diagnostics,
                tail,
            }) => {
                failed += 1;
                println!("FAIL {}: {why}", case.name);
                for line in &diagnostics {
                    println!("  {line}");
                }
                for line in &tail {
                    println!("  | {line}");
                }
            }
            Err(err) => {
                failed += 1;
                println!("FAIL {}: {err:#}", case.name);
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 && !process::interrupted() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// How one case ended.
enum Verdict {
    /// Seconds to the last expected line (of the Quercus run).
    Pass(f64),
    Fail {
        why: String,
        diagnostics: Vec<String>,
        /// The last console lines of the failed run.
        tail: Vec<String>,
    },
}

/// One run's verdict; `label` ("native run: ", "quercus run: " or "") prefixes a failure.
fn judge(label: &str, outcome: runner::RunOutcome, post_check: Option<PostCheck>) -> Verdict {
    let tail = console::tail(&outcome.lines, 40).to_vec();
    if !outcome.matched {
        return Verdict::Fail {
            why: format!("{label}{}", outcome.reason),
            diagnostics: outcome.diagnostics,
            tail,
        };
    }
    if let Some(Err(why)) = post_check.map(|check| check(&outcome.lines)) {
        return Verdict::Fail {
            why: format!("{label}{why}"),
            diagnostics: Vec::new(),
            tail,
        };
    }
    Verdict::Pass(outcome.elapsed_to_match.unwrap_or_default().as_secs_f64())
}

/// Runs `case`: its native companion run first if it has one, then the Quercus run.
fn run_case(case: &TestCase, kernel: &Path, modules: &[BootModule]) -> Result<Verdict> {
    let label = if let Some(native) = &case.native {
        let cfg = native.run_config(case, modules)?;
        if let v @ Verdict::Fail { .. } = judge("native run: ", runner::run(&cfg)?, None) {
            return Ok(v);
        }
        if let Err(why) = check_native_files(&runner::run_dir(&cfg.name), &native.files) {
            return Ok(Verdict::Fail {
                why: format!("native run: {why}"),
                diagnostics: Vec::new(),
                tail: Vec::new(),
            });
        }
        "quercus run: "
    } else {
        ""
    };
    let cfg = case.run_config(kernel, modules)?;
    Ok(judge(label, runner::run(&cfg)?, case.post_check))
}

/// The hypervisor image and guest modules for `scenario`, built once per test run.
/// (Images of different scenarios share one target directory, so each build
/// is copied aside.)
fn image_for<'a>(
    root: &Path,
    scenario: &'a str,
    cache: &mut std::collections::HashMap<&'a str, (std::path::PathBuf, Vec<BootModule>)>,
) -> Result<(std::path::PathBuf, Vec<BootModule>)> {
    if let Some(hit) = cache.get(scenario) {
        return Ok(hit.clone());
    }
    let path = root.join("configs").join(format!("{scenario}.toml"));
    let opts = BuildOptions {
        profile: Profile::Release,
        scenario: Some(path.clone()),
    };
    let modules = build::scenario_modules(root, &path, &opts)?;
    let built = build::build_hypervisor(&opts)?;
    let kept = built.with_file_name(format!("quercus-{scenario}"));
    std::fs::copy(&built, &kept).with_context(|| format!("copying {}", built.display()))?;
    cache.insert(scenario, (kept.clone(), modules.clone()));
    Ok((kept, modules))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn table_is_well_formed() {
        let cases = cases();
        for (i, c) in cases.iter().enumerate() {
            assert!(
                cases[..i].iter().all(|o| o.name != c.name),
                "duplicate {}",
                c.name
            );
            assert!(!c.expect.is_empty(), "{} expects nothing", c.name);
            c.run_config(Path::new("/k"), &[]).expect("regexes compile");
            if let Some(n) = &c.native {
                assert!(
                    !n.expect.is_empty(),
                    "{}: the native run expects nothing",
                    c.name
                );
                let mut names = vec![n.kernel];
                names.extend(n.modules.iter().map(|&(m, _)| m));
                // Modules named by `{module:NAME}` in the native QEMU arguments.
                names.extend(n.extra_qemu_args.iter().flat_map(|a| {
                    a.split("{module:")
                        .skip(1)
                        .filter_map(|t| t.split_once('}').map(|(name, _)| name))
                }));
                let modules: Vec<BootModule> = names
                    .iter()
                    .map(|m| BootModule {
                        path: format!("/m/{m}").into(),
                        cmdline: m.to_string(),
                    })
                    .collect();
                let cfg = n.run_config(c, &modules).expect("native regexes compile");
                assert_eq!(cfg.kernel, Path::new(&format!("/m/{}", n.kernel)));
            }
        }
    }

    #[test]
    fn pic_only_lines_need_the_banner_after_the_reset() {
        let case = pic_only("p", Emulator::Qemu);
        let lines = pic_only_lines("[vm0] ");
        assert_eq!(lines.len(), GUEST_PIC_ONLY_TESTS.len() + 3);
        let armed = Regex::new(&lines[lines.len() - 2]).unwrap();
        let banner = Regex::new(&lines[lines.len() - 1]).unwrap();
        assert!(armed.is_match("[vm0] TEST kbd-reset ARMED"));
        assert!(banner.is_match(r#"[vm0] test-guest: vendor=GenuineIntel hypervisor-bit=1"#));
        assert!(!banner.is_match("test-guest: vendor=GenuineIntel"));
        let native = case.native.as_ref().unwrap();
        let first = Regex::new(&native.expect[0]).unwrap();
        assert!(first.is_match("TEST pic-virtual-wire PASS"));
        assert!(!first.is_match("[vm0] TEST pic-virtual-wire PASS"));
        // Neither run's failure pattern trips on the lines the guest prints when all is well.
        let fail = Regex::new(GUEST_FAIL).unwrap();
        let native_fail = Regex::new(NATIVE_FAIL).unwrap();
        for line in [
            "[vm0] TEST kbd-reset ARMED",
            "[vm0] pic-only: local APIC globally disabled (IA32_APIC_BASE 0xfee00100)",
            "[vm0] pic-only: IRQ0: 51 interrupts in 50 ms of PIT channel 2 time (nominal 50)",
        ] {
            assert!(!fail.is_match(line), "{line}");
            assert!(!native_fail.is_match(line), "{line}");
        }
        assert!(native_fail.is_match("TEST kbd-reset FAIL no reset"));
        assert_eq!(
            native
                .run_config(
                    &case,
                    &[BootModule {
                        path: "/g/test-guest".into(),
                        cmdline: "test-guest".into(),
                    }]
                )
                .unwrap()
                .extra_qemu_args,
            ["-action", "reboot=reset"]
        );
    }

    #[test]
    fn native_run_needs_the_scenario_modules() {
        let case = TestCase {
            native: Some(Native {
                kernel: "test-guest",
                cmdline: "arch",
                modules: vec![("test-guest", "arch-module")],
                cpus: 1,
                expect: vec!["TESTS DONE".into()],
                extra_qemu_args: vec!["-drive", "file={module:test-guest},if=none,id=d0"],
                files: Vec::new(),
            }),
            ..boot("n", Emulator::Qemu, 2)
        };
        let native = case.native.as_ref().unwrap();
        assert!(native.run_config(&case, &[]).is_err());
        let modules = [BootModule {
            path: "/g/test-guest".into(),
            cmdline: "test-guest".into(),
        }];
        let cfg = native.run_config(&case, &modules).unwrap();
        assert_eq!(cfg.kernel, Path::new("/g/test-guest"));
        assert_eq!(cfg.cmdline, "arch");
        assert_eq!(cfg.cpus, 1);
        assert_eq!(cfg.modules.len(), 1);
        assert_eq!(cfg.modules[0].cmdline, "arch-module");
        assert_eq!(cfg.name, "n-native");
        assert_eq!(
            cfg.extra_qemu_args,
            ["-drive", "file=/g/test-guest,if=none,id=d0"]
        );
    }

    #[test]
    fn module_placeholders() {
        let path = |name: &str| -> Result<String> {
            match name {
                "disk" => Ok("/t/a,b.img".replace(',', ",,")),
                _ => bail!("no module {name}"),
            }
        };
        assert_eq!(
            substitute_modules("file={module:disk},if=none", path).unwrap(),
            "file=/t/a,,b.img,if=none"
        );
        assert_eq!(
            substitute_modules("{module:disk}{module:disk}", path).unwrap(),
            "/t/a,,b.img/t/a,,b.img"
        );
        assert_eq!(substitute_modules("plain", path).unwrap(), "plain");
        assert!(substitute_modules("{module:other}", path).is_err());
        assert!(substitute_modules("{module:disk", path).is_err());
    }

    #[test]
    fn native_files_are_checked_in_order() {
        let dir = std::env::temp_dir().join(format!("quercus-native-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("out"), "noise\nfirst\nsecond\n").unwrap();
        let files = |res: &[&str]| vec![("out", res.iter().map(|s| s.to_string()).collect())];
        assert!(check_native_files(&dir, &files(&["^first$", "^second$"])).is_ok());
        assert!(check_native_files(&dir, &files(&["^second$", "^first$"])).is_err());
        assert!(check_native_files(&dir, &files(&["^third$"])).is_err());
        assert!(check_native_files(&dir, &[("missing", vec![])]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What the test guest printed in `virtio` mode natively on QEMU 7.2 (the read-only disk at
    /// 00:0d.0 included), MACs and sequence numbers as they came.
    const VIRTIO_NATIVE_LOG: &str = "\
test-guest: vendor=AuthenticAMD hypervisor-bit=1 hv-signature=\"TCGTCGTCGTCG\" native=yes
virtio-enum: 00:08.0 1af4:1042 rev 1 blk
virtio-enum: 00:09.0 1af4:1044 rev 1 rng
virtio-enum: 00:0a.0 1af4:1041 rev 1 net
virtio-enum: 00:0b.0 1af4:1041 rev 1 net
virtio-enum: 00:0c.0 1af4:1043 rev 1 console
virtio-enum: 00:0d.0 1af4:1042 rev 1 blk
TEST virtio-enum PASS
virtio-blk: 00:08.0 capacity=2048 sectors read-write
virtio-blk: 00:0d.0 capacity=2048 sectors read-only
virtio-blk: 00:0d.0 write to the read-only device refused with an I/O error, data unchanged
TEST virtio-blk PASS
virtio-rng: 00:09.0 2 x 256 bytes, 159 distinct values in the first
TEST virtio-rng PASS
virtio-net: 00:0a.0 (52:54:00:12:34:56) -> 00:0b.0 (52:54:00:12:34:57): 64-byte frame seq 446758913 intact after 1 send(s)
virtio-net: frames sent 2 / 2, received 2 / 2
TEST virtio-net PASS
virtio-net-peer: 00:0b.0 id 2: heard peer 1 (52:54:00:12:34:56)
TEST virtio-net-peer-loop PASS
virtio-console: 00:0c.0 port 0 took 47 bytes
TEST virtio-console PASS
TESTS DONE 6 passed 0 failed";

    /// Matches `lines` against `expect` in order, as the runner does; the index of the first
    /// regex left unmatched.
    fn unmatched(expect: &[String], lines: &[String]) -> Option<usize> {
        let mut next = 0;
        for l in lines {
            if next < expect.len() && Regex::new(&expect[next]).unwrap().is_match(l) {
                next += 1;
            }
        }
        (next < expect.len()).then_some(next)
    }

    #[test]
    fn virtio_lines_match_the_guest() {
        let case = virtio_drivers("v", Emulator::Qemu);
        let native = case.native.as_ref().unwrap();
        let lines: Vec<String> = VIRTIO_NATIVE_LOG.lines().map(String::from).collect();
        assert_eq!(unmatched(&native.expect, &lines), None);
        // Under Quercus: the same lines after `[vm0] `, without the native read-only disk.
        let quercus: Vec<String> = lines
            .iter()
            .filter(|l| !l.contains("00:0d.0"))
            .map(|l| format!("[vm0] {l}"))
            .chain(["quercus: vm vm0: stopped: vCPU 0: powered off by the guest".to_string()])
            .collect();
        assert_eq!(unmatched(&case.expect, &quercus), None);
        assert_eq!(virtio_enum_check(&quercus), Ok(()));
        // A missing device, a failed test or a missing line is caught.
        for drop in ["00:0c.0 1af4:1043", "TEST virtio-net PASS", "read-write"] {
            let fewer: Vec<String> = quercus
                .iter()
                .filter(|l| !l.contains(drop))
                .cloned()
                .collect();
            assert!(unmatched(&case.expect, &fewer).is_some(), "{drop}");
        }
        let mut extra = quercus.clone();
        extra.insert(1, "[vm0] virtio-enum: 00:10.0 1af4:1041 rev 1 net".into());
        assert!(virtio_enum_check(&extra).is_err());
        // Neither failure pattern trips on the guest's informational lines.
        let fail = Regex::new(GUEST_FAIL).unwrap();
        let native_fail = Regex::new(NATIVE_FAIL).unwrap();
        for l in &lines {
            assert!(!native_fail.is_match(l), "{l}");
        }
        for l in &quercus {
            assert!(!fail.is_match(l), "{l}");
        }
        // The console line: in the native run's file, and on the hypervisor's console.
        let file_re = Regex::new(&native.files[0].1[0]).unwrap();
        assert!(file_re.is_match(VIRTIO_CONSOLE_LINE));
        let console_re = Regex::new(&case.parallel[0][0]).unwrap();
        assert!(console_re.is_match(&format!("[vm0:hvc0] {VIRTIO_CONSOLE_LINE}")));
        assert!(!lines.iter().any(|l| console_re.is_match(l)), "not on COM1");
        // The Bochs cases have no native run (no virtio devices in Bochs).
        let bochs = virtio_drivers("b", Emulator::Bochs);
        assert!(bochs.native.is_none());
        assert_eq!(bochs.scenario, "virtio-drivers-bochs");
    }

    #[test]
    fn virtio_peer_lines_match_the_guest() {
        let case = virtio_peer();
        let vm1: Vec<String> = [
            "[vm1] test-guest: vendor=AuthenticAMD cmdline=\"virtio-net-peer self-id=2 peer-id=1\"",
            "[vm1] virtio-enum: 00:08.0 1af4:1041 rev 1 net",
            "[vm1] TEST virtio-enum PASS",
            "[vm1] virtio-net-peer: 00:08.0 id 2: heard peer 1 (02:00:00:00:00:01)",
            "[vm1] virtio-net-peer: 00:08.0 id 2: acknowledged by peer 1",
            "[vm1] TEST virtio-net-peer PASS",
            "[vm1] TESTS DONE 2 passed 0 failed",
            "quercus: vm vm1: stopped: vCPU 0: powered off by the guest",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(unmatched(&case.parallel[0], &vm1), None);
        assert!(
            unmatched(&case.expect, &vm1).is_some(),
            "vm0's lines are vm0's"
        );
        let fail = Regex::new(GUEST_FAIL).unwrap();
        assert!(vm1.iter().all(|l| !fail.is_match(l)));
        assert!(fail.is_match("[vm0] TEST virtio-net-peer FAIL 00:08.0: no exchange"));
    }

    #[test]
    fn native_run_gets_the_virtio_devices() {
        let case = virtio_drivers("v", Emulator::Qemu);
        let native = case.native.as_ref().unwrap();
        let modules = [
            BootModule {
                path: "/g/test-guest".into(),
                cmdline: "test-guest".into(),
            },
            BootModule {
                path: "/m/testdisk.img".into(),
                cmdline: "testdisk".into(),
            },
        ];
        let cfg = native.run_config(&case, &modules).unwrap();
        let args = cfg.extra_qemu_args.join(" ");
        assert!(args.contains("file=/m/testdisk.img,if=none,id=d0,format=raw,snapshot=on"));
        assert!(args.contains("file=/m/testdisk.img,if=none,id=d1,format=raw,readonly=on"));
        assert!(!args.contains("{module:"));
        for slot in ["08", "09", "0a", "0b", "0c", "0d"] {
            assert!(args.contains(&format!("addr={slot}.0")), "{slot}");
        }
        assert_eq!(cfg.cmdline, "virtio");
        // Without the disk module the native run cannot start.
        assert!(native.run_config(&case, &modules[..1]).is_err());
    }

    #[test]
    fn native_fail_pattern() {
        let re = Regex::new(NATIVE_FAIL).unwrap();
        assert!(re.is_match("TEST arch-apic-id FAIL x"));
        assert!(re.is_match("test-guest: FATAL unexpected exception"));
        assert!(!re.is_match("TEST arch-apic-id SKIP native"));
        assert!(!re.is_match("TEST arch-apic-id PASS"));
    }

    #[test]
    fn default_fail_pattern() {
        let re = Regex::new(DEFAULT_FAIL).unwrap();
        assert!(re.is_match("panicked at src/main.rs:1"));
        assert!(re.is_match("Fatal: no ACPI"));
        assert!(re.is_match("page fault EXCEPTION"));
        assert!(re.is_match("TEST vmexit-cpuid FAIL"));
        assert!(!re.is_match("quercus: ready, 2 pCPUs online"));
        assert!(!re.is_match("TEST vmexit-cpuid PASS"));
    }

    #[test]
    fn bad_input_fail_pattern() {
        let re = Regex::new(BAD_INPUT_FAIL).unwrap();
        assert!(re.is_match("quercus: fatal: panic on cpu0: oops"));
        assert!(!re.is_match("quercus: fatal: ACPI MADT unusable: bad signature"));
        assert!(!re.is_match("quercus: fatal: memory map from the boot loader is unusable"));
    }

    #[test]
    fn ready_line() {
        let re = Regex::new(&ready(2)).unwrap();
        assert!(re.is_match("quercus: ready, 2 pCPUs online"));
        assert!(!re.is_match("quercus: ready, 20 pCPUs online"));
    }

    #[test]
    fn guests_from_metadata() {
        let meta = serde_json::json!({"packages": [
            {"name": "hypervisor", "manifest_path": "/w/hypervisor/Cargo.toml"},
            {"name": "guest-hello", "manifest_path": "/w/guests/hello/Cargo.toml"},
            {"name": "guestsish", "manifest_path": "/w/guestsish/Cargo.toml"},
        ]});
        assert_eq!(
            guests_in_metadata(&meta, Path::new("/w/guests")),
            vec!["guest-hello"]
        );
    }
}
