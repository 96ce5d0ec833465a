//! `cargo xtask bench boot`: wall time from emulator start to the ready line, per emulator.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use regex::Regex;

use crate::build::{self, BuildOptions, Profile};
use crate::runner::{self, Emulator, RunConfig};
use crate::tests::{ready, DEFAULT_FAIL};
use crate::{packages, process, workspace_root};

/// The median (mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[Duration]) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2
    })
}

pub fn bench_boot(runs: usize) -> Result<ExitCode> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let root = workspace_root();
    packages::ensure(&packages::all_requirements())?;
    let kernel = build::build_hypervisor(&BuildOptions {
        profile: Profile::Release,
        scenario: crate::default_scenario(&root),
    })?;
    let size = std::fs::metadata(&kernel)?.len();
    println!("image {}: {size} bytes", kernel.display());
    let cpus = 2;
    let mut ok = true;
    let expect = Regex::new(&ready(cpus))?;
    let fail = Regex::new(DEFAULT_FAIL)?;
    for emulator in [Emulator::Qemu, Emulator::Bochs, Emulator::BochsAmd] {
        let mut times = Vec::new();
        for i in 1..=runs {
            if process::interrupted() {
                return Ok(ExitCode::from(130));
            }
            let cfg = RunConfig {
                name: format!("bench-{}-{i}", emulator.name()),
                kernel: kernel.clone(),
                emulator,
                cpus,
                mem_mib: 512,
                cmdline: String::new(),
                modules: Vec::new(),
                extra_qemu_args: Vec::new(),
                expect: vec![expect.clone()],
                parallel: Vec::new(),
                input: Vec::new(),
                fail: Some(fail.clone()),
                timeout: Duration::from_secs(180),
                echo: false,
            };
            let outcome = runner::run(&cfg)?;
            match outcome.elapsed_to_match {
                Some(t) if outcome.matched => {
                    println!("{:<10} run {i}: {:.3} s", emulator.name(), t.as_secs_f64());
                    times.push(t);
                }
                _ => {
                    ok = false;
                    println!("{:<10} run {i}: FAIL {}", emulator.name(), outcome.reason);
                }
            }
        }
        if let Some(m) = median(&times) {
            println!(
                "{:<10} median: {:.3} s ({} of {runs} runs)",
                emulator.name(),
                m.as_secs_f64(),
                times.len()
            );
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Boots Debian's kernel with the busybox initramfs `runs` times natively and
/// as the `linux` scenario's VM on `emulator`; prints each time to the
/// userspace banner, both medians and their ratio, and the VM's exits by
/// reason (read with the shell's `stats` once the guest's shell is up).
pub fn bench_linux(runs: usize, emulator: Emulator) -> Result<ExitCode> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let root = workspace_root();
    packages::ensure(&packages::all_requirements())?;
    let image = crate::linux_image::linux_guest(&root)?;
    let scenario = root.join("configs/linux.toml");
    let opts = BuildOptions {
        profile: Profile::Release,
        scenario: Some(scenario.clone()),
    };
    let modules = build::scenario_modules(&root, &scenario, &opts)?;
    // Native Linux gets the VM's CPUs and RAM (plus room for the firmware's
    // and GRUB's own use); Quercus also needs pCPU 0 for itself.
    let (vm_cpus, vm_mib) = build::first_vm_shape(&root, &scenario)?;
    let native_mib = vm_mib + 16;
    let quercus_cpus = build::scenario_cpus(&root, &scenario)?;
    println!(
        "native: {vm_cpus} CPU(s), {native_mib} MiB, `{}`; quercus: {quercus_cpus} CPUs, VM with {vm_cpus} vCPU(s) and {vm_mib} MiB",
        crate::NATIVE_LINUX_CMDLINE
    );
    let hv = build::build_hypervisor(&opts)?;
    let fail = Regex::new(r"quercus: fatal|Kernel panic|Attempted to kill init")?;
    let native_up = vec![Regex::new("QUERCUS-GUEST: up")?];
    let vm_up_and_stats = vec![
        Regex::new(r"^\[linux\] QUERCUS-GUEST: up$")?,
        Regex::new(r"^linux\s+0\s+\d+")?,
    ];
    let vm_shell = Regex::new(r"^\[linux\] QUERCUS-GUEST: shell$")?;
    // Bochs's serial port takes no input: there, the time only.
    let (quercus_expect, quercus_input) = if emulator == Emulator::Qemu {
        (vm_up_and_stats, vec![(vm_shell, b"stats linux\r".to_vec())])
    } else {
        (vm_up_and_stats[..1].to_vec(), Vec::new())
    };
    let mut medians = Vec::new();
    for native in [true, false] {
        let label = if native { "native" } else { "quercus" };
        let mut times = Vec::new();
        for i in 1..=runs {
            if process::interrupted() {
                return Ok(ExitCode::from(130));
            }
            let (kernel, mods, cmdline, expect, input) = if native {
                (
                    image.bzimage.clone(),
                    vec![runner::BootModule {
                        path: image.initrd.clone(),
                        cmdline: String::new(),
                    }],
                    crate::NATIVE_LINUX_CMDLINE.to_string(),
                    native_up.clone(),
                    Vec::new(),
                )
            } else {
                (
                    hv.clone(),
                    modules.clone(),
                    String::new(),
                    quercus_expect.clone(),
                    quercus_input.clone(),
                )
            };
            let cfg = RunConfig {
                name: format!("bench-linux-{}-{label}-{i}", emulator.name()),
                kernel,
                emulator,
                cpus: if native { vm_cpus } else { quercus_cpus },
                mem_mib: if native { native_mib } else { 1024 },
                cmdline,
                modules: mods,
                extra_qemu_args: Vec::new(),
                expect,
                parallel: Vec::new(),
                input,
                fail: Some(fail.clone()),
                timeout: Duration::from_secs(1200),
                echo: false,
            };
            let outcome = runner::run(&cfg)?;
            let up = outcome
                .lines
                .iter()
                .position(|l| l.contains("QUERCUS-GUEST: up"))
                .and_then(|i| outcome.line_times.get(i).copied());
            let (true, Some(t)) = (outcome.matched, up) else {
                println!("{label:<8} run {i}: FAIL {}", outcome.reason);
                continue;
            };
            println!("{label:<8} run {i}: {:.2} s", t.as_secs_f64());
            if let Some(stats) = outcome.lines.iter().find(|l| l.starts_with("linux ")) {
                println!("{label:<8} run {i}: stats {}", stats.trim());
            }
            times.push(t);
        }
        if let Some(m) = median(&times) {
            println!(
                "{label:<8} median: {:.2} s ({} of {runs} runs)",
                m.as_secs_f64(),
                times.len()
            );
            medians.push(m);
        }
    }
    if let [native, quercus] = medians[..] {
        println!(
            "{} Linux boot to userspace under Quercus / native: {:.2}",
            emulator.name(),
            quercus.as_secs_f64() / native.as_secs_f64().max(1e-9)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The number after `median=` on a `BENCH cpuid` line.
pub fn cpuid_median(line: &str) -> Option<u64> {
    let rest = &line[line.find("BENCH cpuid median=")? + "BENCH cpuid median=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Runs the test guest with `bench` natively and as vm0 of `configs/bench.toml`
/// on each emulator; prints the CPUID round-trip medians, their ratio and the
/// VM's exit counts.
pub fn bench_cpuid() -> Result<ExitCode> {
    let root = workspace_root();
    packages::ensure(&packages::all_requirements())?;
    let opts = BuildOptions {
        profile: Profile::Release,
        scenario: Some(root.join("configs/bench.toml")),
    };
    let guest = build::build_baremetal("test-guest", "test-guest", &opts)?;
    let modules = build::scenario_modules(&root, &root.join("configs/bench.toml"), &opts)?;
    let hv = build::build_hypervisor(&opts)?;
    let fail = Regex::new(r"(?i)panic|fatal|TEST \S+ FAIL")?;
    let native_expect = vec![Regex::new("BENCH cpuid median=")?];
    let quercus_expect = vec![
        Regex::new(r"^\[vm0\] BENCH cpuid median=")?,
        Regex::new(r"vm vm0: exits ")?,
    ];
    let mut ok = true;
    for emulator in [Emulator::Qemu, Emulator::Bochs, Emulator::BochsAmd] {
        let mut medians = Vec::new();
        for (label, kernel, modules, cmdline, expect) in [
            ("native", &guest, Vec::new(), "bench", native_expect.clone()),
            ("quercus", &hv, modules.clone(), "", quercus_expect.clone()),
        ] {
            let cfg = RunConfig {
                name: format!("bench-cpuid-{}-{label}", emulator.name()),
                kernel: kernel.clone(),
                emulator,
                cpus: 2,
                mem_mib: 512,
                cmdline: cmdline.into(),
                modules,
                extra_qemu_args: Vec::new(),
                expect,
                parallel: Vec::new(),
                input: Vec::new(),
                fail: Some(fail.clone()),
                timeout: Duration::from_secs(300),
                echo: false,
            };
            let outcome = runner::run(&cfg)?;
            let bench = outcome.lines.iter().find(|l| l.contains("BENCH cpuid"));
            match bench.and_then(|l| cpuid_median(l)) {
                Some(m) if outcome.matched => {
                    println!(
                        "{:<10} {label:<8} {}",
                        emulator.name(),
                        bench.map_or("", |l| l.trim())
                    );
                    medians.push(m);
                }
                _ => {
                    ok = false;
                    println!("{:<10} {label:<8} FAIL {}", emulator.name(), outcome.reason);
                }
            }
            if let Some(exits) = outcome.lines.iter().find(|l| l.contains("vm vm0: exits ")) {
                println!("{:<10} {label:<8} {}", emulator.name(), exits.trim());
            }
        }
        if let [native, quercus] = medians[..] {
            println!(
                "{:<10} cpuid round trip under Quercus: {quercus} ticks vs {native} native = {:.1}x",
                emulator.name(),
                quercus as f64 / native.max(1) as f64
            );
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| Duration::from_millis(x)).collect()
    }

    #[test]
    fn native_linux_boots_with_the_linux_vms_command_line() {
        // The benchmark compares like with like only while these agree.
        let scenario =
            std::fs::read_to_string(workspace_root().join("configs/linux.toml")).unwrap();
        let line = format!("cmdline = \"{}\"", crate::NATIVE_LINUX_CMDLINE);
        assert!(
            scenario.lines().any(|l| l.trim() == line),
            "configs/linux.toml has no `{line}`"
        );
    }

    #[test]
    fn cpuid_median_parses_the_guest_line() {
        assert_eq!(
            cpuid_median("[vm0] BENCH cpuid median=123 min=9 max=400"),
            Some(123)
        );
        assert_eq!(cpuid_median("BENCH cpuid median=9"), Some(9));
        assert_eq!(cpuid_median("BENCH cpuid median=x"), None);
        assert_eq!(cpuid_median("nothing"), None);
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&ms(&[5])), Some(Duration::from_millis(5)));
        assert_eq!(median(&ms(&[9, 1, 5])), Some(Duration::from_millis(5)));
        assert_eq!(
            median(&ms(&[4, 1, 3, 2])),
            Some(Duration::from_micros(2500))
        );
    }
}
