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
        scenario: crate::base_scenario(&root),
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
                extra_bochsrc: String::new(),
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
                extra_bochsrc: String::new(),
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

/// One `BENCH <row> median=N min=N max=N` line of the test guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchRow {
    pub row: String,
    pub median: u64,
    pub min: u64,
    pub max: u64,
}

/// Parses a `BENCH` line (with or without the hypervisor's `[vm0] ` prefix);
/// `None` for any other line or a line missing one of the three numbers.
pub fn parse_bench_row(line: &str) -> Option<BenchRow> {
    let rest = &line[line.find("BENCH ")? + "BENCH ".len()..];
    let mut words = rest.split_whitespace();
    let row = words.next()?.to_string();
    let (mut median, mut min, mut max) = (None, None, None);
    for word in words {
        let (key, value) = word.split_once('=')?;
        let value: u64 = value.parse().ok()?;
        match key {
            "median" => median = Some(value),
            "min" => min = Some(value),
            "max" => max = Some(value),
            _ => {}
        }
    }
    Some(BenchRow {
        row,
        median: median?,
        min: min?,
        max: max?,
    })
}

/// The `reason=count` pairs after `vm <name>: exits ` (the hypervisor's
/// summary when a VM stops), in their order; `None` for other lines.
pub fn parse_exit_counts(line: &str, vm: &str) -> Option<Vec<(String, u64)>> {
    let marker = format!("vm {vm}: exits");
    let rest = &line[line.find(&marker)? + marker.len()..];
    rest.split_whitespace()
        .map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The native and Quercus runs of the bench scenario's test guest on one emulator.
struct GuestRuns {
    native: Option<runner::RunOutcome>,
    quercus: Option<runner::RunOutcome>,
}

/// What `bench cpuid` and `bench exits` boot: the test guest with `bench`,
/// natively with as many CPUs as the bench VM has vCPUs, and as vm0 of
/// `configs/bench.toml` under Quercus.
struct BenchSetup {
    guest: std::path::PathBuf,
    hv: std::path::PathBuf,
    modules: Vec<runner::BootModule>,
    native_cpus: u32,
    quercus_cpus: u32,
}

impl BenchSetup {
    fn build() -> Result<Self> {
        let root = workspace_root();
        packages::ensure(&packages::all_requirements())?;
        let scenario = root.join("configs/bench.toml");
        let opts = BuildOptions {
            profile: Profile::Release,
            scenario: Some(scenario.clone()),
        };
        let guest = build::build_baremetal("test-guest", "test-guest", &opts)?;
        let modules = build::scenario_modules(&root, &scenario, &opts)?;
        let hv = build::build_hypervisor(&opts)?;
        let (native_cpus, _) = build::first_vm_shape(&root, &scenario)?;
        let quercus_cpus = build::scenario_cpus(&root, &scenario)?;
        Ok(Self {
            guest,
            hv,
            modules,
            native_cpus,
            quercus_cpus,
        })
    }

    /// Boots natively (`expect` native) and under Quercus (`expect` quercus)
    /// on `emulator`; a run that did not match is reported and left `None`.
    fn run(
        &self,
        what: &str,
        emulator: Emulator,
        native_expect: &[Regex],
        quercus_expect: &[Regex],
        fail: &Regex,
        timeout: Duration,
    ) -> Result<GuestRuns> {
        let mut runs = GuestRuns {
            native: None,
            quercus: None,
        };
        for native in [true, false] {
            let label = if native { "native" } else { "quercus" };
            let cfg = RunConfig {
                name: format!("bench-{what}-{}-{label}", emulator.name()),
                kernel: if native { &self.guest } else { &self.hv }.clone(),
                emulator,
                cpus: if native {
                    self.native_cpus
                } else {
                    self.quercus_cpus
                },
                mem_mib: 512,
                cmdline: if native { "bench" } else { "" }.into(),
                modules: if native {
                    Vec::new()
                } else {
                    self.modules.clone()
                },
                extra_qemu_args: Vec::new(),
                extra_bochsrc: String::new(),
                expect: if native {
                    native_expect
                } else {
                    quercus_expect
                }
                .to_vec(),
                parallel: Vec::new(),
                input: Vec::new(),
                fail: Some(fail.clone()),
                timeout,
                echo: false,
            };
            if process::interrupted() {
                break;
            }
            let outcome = runner::run(&cfg)?;
            if outcome.matched {
                *(if native {
                    &mut runs.native
                } else {
                    &mut runs.quercus
                }) = Some(outcome);
            } else {
                println!("{:<10} {label:<8} FAIL {}", emulator.name(), outcome.reason);
                for line in &outcome.diagnostics {
                    println!("  {line}");
                }
                for line in crate::console::tail(&outcome.lines, 10) {
                    println!("  | {line}");
                }
            }
        }
        Ok(runs)
    }
}

/// Runs the test guest with `bench` natively and as vm0 of `configs/bench.toml`
/// on each emulator; prints the CPUID round-trip medians, their ratio and the
/// VM's exit counts.
pub fn bench_cpuid(emulators: &[Emulator]) -> Result<ExitCode> {
    let setup = BenchSetup::build()?;
    let fail = Regex::new(r"(?i)panic|fatal|TEST \S+ FAIL")?;
    let native_expect = vec![Regex::new("BENCH cpuid median=")?];
    let quercus_expect = vec![
        Regex::new(r"^\[vm0\] BENCH cpuid median=")?,
        Regex::new(r"vm vm0: exits ")?,
    ];
    let mut ok = true;
    for &emulator in emulators {
        let runs = setup.run(
            "cpuid",
            emulator,
            &native_expect,
            &quercus_expect,
            &fail,
            Duration::from_secs(300),
        )?;
        let mut medians = Vec::new();
        for (label, outcome) in [("native", &runs.native), ("quercus", &runs.quercus)] {
            let Some(outcome) = outcome else {
                ok = false;
                continue;
            };
            let bench = outcome.lines.iter().find(|l| l.contains("BENCH cpuid"));
            match bench.and_then(|l| cpuid_median(l)) {
                Some(m) => {
                    println!(
                        "{:<10} {label:<8} {}",
                        emulator.name(),
                        bench.map_or("", |l| l.trim())
                    );
                    medians.push(m);
                }
                None => {
                    ok = false;
                    println!(
                        "{:<10} {label:<8} FAIL no BENCH cpuid line",
                        emulator.name()
                    );
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

/// What the TSC of a guest on `emulator` measures, for the table's title.
fn tick_kind(emulator: Emulator) -> &'static str {
    match emulator {
        Emulator::Qemu => "QEMU TCG, AMD-V: wall-clock TSC ticks, noisy",
        Emulator::Bochs => {
            "Bochs VT-x (tigerlake): TSC ticks at the instruction rate, deterministic"
        }
        Emulator::BochsAmd => {
            "Bochs AMD-V (ryzen): TSC ticks at the instruction rate, deterministic"
        }
        Emulator::BochsHaswell => {
            "Bochs VT-x (haswell): TSC ticks at the instruction rate, deterministic"
        }
    }
}

/// The table of one emulator: each row's median natively, under Quercus
/// and the difference (`-` where a run has no such row), in the order the
/// rows first appear (native rows first).
pub fn exits_table(native: &[BenchRow], quercus: &[BenchRow]) -> Vec<String> {
    let mut names: Vec<&str> = Vec::new();
    for r in native.iter().chain(quercus) {
        if !names.contains(&r.row.as_str()) {
            names.push(&r.row);
        }
    }
    let find =
        |rows: &[BenchRow], name: &str| rows.iter().find(|r| r.row == name).map(|r| r.median);
    let cell = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let mut out = vec![format!(
        "{:<24} {:>10} {:>10} {:>15}",
        "row", "native", "Quercus", "Quercus-native"
    )];
    for name in names {
        let (n, q) = (find(native, name), find(quercus, name));
        let diff = match (n, q) {
            (Some(n), Some(q)) => (q as i64 - n as i64).to_string(),
            _ => "-".to_string(),
        };
        out.push(format!(
            "{name:<24} {:>10} {:>10} {diff:>15}",
            cell(n),
            cell(q)
        ));
    }
    out
}

/// `cargo xtask bench exits`: the test guest's exit round trips natively
/// and under Quercus on each emulator, a table per emulator and the VM's
/// exit counts by reason.
pub fn bench_exits(emulators: &[Emulator]) -> Result<ExitCode> {
    let setup = BenchSetup::build()?;
    // A failing benchmark row (a `TEST bench-* FAIL`) is reported, but the
    // rows that did print are still worth the minutes a Bochs run takes.
    let fail = Regex::new(r"(?i)panic|fatal")?;
    let native_expect = vec![Regex::new("TESTS DONE")?];
    let quercus_expect = vec![
        Regex::new(r"^\[vm0\] TESTS DONE")?,
        Regex::new(r"vm vm0: exits ")?,
    ];
    let mut ok = true;
    for &emulator in emulators {
        println!(
            "{} ({} CPUs natively, {} under Quercus for a VM of {})",
            emulator.name(),
            setup.native_cpus,
            setup.quercus_cpus,
            setup.native_cpus
        );
        let runs = setup.run(
            "exits",
            emulator,
            &native_expect,
            &quercus_expect,
            &fail,
            Duration::from_secs(900),
        )?;
        let rows = |o: &Option<runner::RunOutcome>| -> Vec<BenchRow> {
            o.iter()
                .flat_map(|o| o.lines.iter())
                .filter_map(|l| parse_bench_row(l))
                .collect()
        };
        let (native, quercus) = (rows(&runs.native), rows(&runs.quercus));
        ok &= runs.native.is_some() && runs.quercus.is_some();
        for (label, o) in [("native", &runs.native), ("quercus", &runs.quercus)] {
            for line in o.iter().flat_map(|o| o.lines.iter()) {
                if line.contains("TEST ") && line.contains(" FAIL") {
                    ok = false;
                    println!("{:<10} {label:<8} {}", emulator.name(), line.trim());
                }
            }
        }
        println!("{} — {}", emulator.name(), tick_kind(emulator));
        for line in exits_table(&native, &quercus) {
            println!("  {line}");
        }
        let counts = runs
            .quercus
            .iter()
            .flat_map(|o| o.lines.iter())
            .find_map(|l| parse_exit_counts(l, "vm0"));
        if let Some(counts) = counts {
            let total: u64 = counts.iter().map(|(_, c)| c).sum();
            let list: Vec<String> = counts.iter().map(|(k, c)| format!("{k}={c}")).collect();
            println!(
                "  vm0 exits over the whole run (tests and benchmarks): {} (total {total})",
                list.join(" ")
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
    fn bench_rows_parse_with_and_without_the_vm_prefix() {
        assert_eq!(
            parse_bench_row("[vm0] BENCH pio-claimed-read median=1200 min=1100 max=9000"),
            Some(BenchRow {
                row: "pio-claimed-read".into(),
                median: 1200,
                min: 1100,
                max: 9000
            })
        );
        let r = parse_bench_row("BENCH cpuid median=5 min=4 max=6").unwrap();
        assert_eq!((r.row.as_str(), r.median, r.min, r.max), ("cpuid", 5, 4, 6));
        // Every number is required, and must be a number.
        assert_eq!(parse_bench_row("BENCH cpuid median=5 min=4"), None);
        assert_eq!(parse_bench_row("BENCH cpuid median=5 min=x max=6"), None);
        assert_eq!(parse_bench_row("BENCH cpuid median=5 junk max=6"), None);
        assert_eq!(parse_bench_row("BENCH"), None);
        assert_eq!(parse_bench_row("TEST cpuid-bench PASS"), None);
    }

    #[test]
    fn exit_counts_parse_in_order() {
        let line = "[quercus] INFO vm vm0: exits io=1083 mmio=16396 cpuid=12 hlt=1";
        assert_eq!(
            parse_exit_counts(line, "vm0"),
            Some(vec![
                ("io".into(), 1083),
                ("mmio".into(), 16396),
                ("cpuid".into(), 12),
                ("hlt".into(), 1)
            ])
        );
        assert_eq!(parse_exit_counts("vm vm0: exits ", "vm0"), Some(vec![]));
        assert_eq!(parse_exit_counts(line, "vm1"), None);
        assert_eq!(parse_exit_counts("vm vm0: exits io=x", "vm0"), None);
    }

    #[test]
    fn exits_table_pairs_rows_and_marks_missing_ones() {
        let row = |name: &str, median| BenchRow {
            row: name.into(),
            median,
            min: 0,
            max: 0,
        };
        let native = [row("cpuid", 5), row("hlt-wake-oneshot", 40)];
        let quercus = [
            row("cpuid", 1070),
            row("hlt-wake-tsc-deadline", 900),
            row("hlt-wake-oneshot", 30),
        ];
        let table = exits_table(&native, &quercus);
        assert_eq!(table.len(), 4);
        assert!(table[0].starts_with("row"));
        let cols =
            |i: usize| -> Vec<String> { table[i].split_whitespace().map(str::to_string).collect() };
        assert_eq!(cols(1), ["cpuid", "5", "1070", "1065"]);
        assert_eq!(cols(2), ["hlt-wake-oneshot", "40", "30", "-10"]);
        assert_eq!(cols(3), ["hlt-wake-tsc-deadline", "-", "900", "-"]);
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
