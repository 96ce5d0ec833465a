//! `cargo xtask bench rt`: timer-interrupt latency (the test guest's `rt-latency` mode)
//! natively and in a real-time VM on each emulator, quiet and under interference (the
//! `rt-interference-*` cases' runs: a loaded Linux VM beside it, the operator's shell commands),
//! as a table on stdout and a histogram picture (`target/bench/rt-latency.svg`).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use regex::Regex;

use crate::build::{self, BuildOptions, Profile};
use crate::runner::{self, Emulator, RunConfig};
use crate::tests_rt::{parse_histogram, parse_latency, RtFigures, BOCHS_CMDLINE, QEMU_CMDLINE};
use crate::{packages, process, workspace_root};

/// One run's result.
struct Row {
    emulator: Emulator,
    label: &'static str,
    timer: String,
    figures: RtFigures,
    hist: Vec<(u64, u64, u64)>,
}

/// The `RT config` line's `timer=` and `apic=` words.
fn timer_of(lines: &[String]) -> String {
    let Some(line) = lines.iter().find(|l| l.contains("RT config ")) else {
        return "?".into();
    };
    let word = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or("?")
            .to_string()
    };
    format!("{} {}", word("timer="), word("apic="))
}

pub fn bench_rt(emulators: &[Emulator], interference: bool) -> Result<ExitCode> {
    let root = workspace_root();
    packages::ensure(&packages::all_requirements())?;
    let fail = Regex::new(r"(?i)panic|fatal|TEST \S+ FAIL")?;
    let mut rows = Vec::new();
    let mut loaded = Vec::new();
    let mut ok = true;
    for &emulator in emulators {
        let qemu = emulator == Emulator::Qemu;
        let scenario = root.join(if qemu {
            "configs/rt.toml"
        } else {
            "configs/rt-bochs.toml"
        });
        let opts = BuildOptions {
            profile: Profile::Release,
            scenario: Some(scenario.clone()),
        };
        let guest = build::build_baremetal("test-guest", "test-guest", &opts)?;
        let modules = build::scenario_modules(&root, &scenario, &opts)?;
        let hv = build::build_hypervisor(&opts)?;
        for (label, native) in [("native", true), ("rt VM", false)] {
            if process::interrupted() {
                break;
            }
            let prefix = if native { "" } else { r"\[rt0\] " };
            let cfg = RunConfig {
                name: format!(
                    "bench-rt-{}-{}",
                    emulator.name(),
                    if native { "native" } else { "quercus" }
                ),
                kernel: if native { &guest } else { &hv }.clone(),
                emulator,
                cpus: if native { 1 } else { 2 },
                mem_mib: 512,
                cmdline: if native {
                    if qemu {
                        QEMU_CMDLINE
                    } else {
                        BOCHS_CMDLINE
                    }
                } else {
                    ""
                }
                .into(),
                modules: if native { Vec::new() } else { modules.clone() },
                extra_qemu_args: Vec::new(),
                extra_bochsrc: String::new(),
                expect: vec![
                    Regex::new(&format!(r"^{prefix}RT latency "))?,
                    Regex::new(&format!(r"^{prefix}TESTS DONE 1 passed 0 failed"))?,
                ],
                parallel: Vec::new(),
                input: Vec::new(),
                fail: Some(fail.clone()),
                timeout: Duration::from_secs(if qemu { 120 } else { 600 }),
                echo: false,
            };
            let outcome = runner::run(&cfg)?;
            let figures = parse_latency(&outcome.lines);
            match (outcome.matched, figures) {
                (true, Some(figures)) => rows.push(Row {
                    emulator,
                    label,
                    timer: timer_of(&outcome.lines),
                    figures,
                    hist: parse_histogram(&outcome.lines),
                }),
                _ => {
                    ok = false;
                    println!("{:<10} {label:<7} FAIL {}", emulator.name(), outcome.reason);
                    for line in crate::console::tail(&outcome.lines, 10) {
                        println!("  | {line}");
                    }
                }
            }
        }
        // After the quiet runs: the interference scenario's build replaces the hypervisor image
        // they booted.
        if interference {
            match under_interference(emulator)? {
                Ok(row) => loaded.push(row),
                Err(why) => {
                    ok = false;
                    println!("{:<10} rt+load FAIL {why}", emulator.name());
                }
            }
        }
    }
    rows.extend(loaded);
    print_table(&rows);
    let svg = root.join("target/bench/rt-latency.svg");
    std::fs::create_dir_all(svg.parent().context("no parent")?)?;
    std::fs::write(&svg, histogram_svg(&rows)).with_context(|| svg.display().to_string())?;
    println!("histograms: {}", svg.display());
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The Quercus run of `emulator`'s `rt-interference-*` case (its scenario, inputs and
/// expectations), as a row.
fn under_interference(emulator: Emulator) -> Result<Result<Row, String>> {
    let case = crate::tests_rt::cases()
        .into_iter()
        .find(|c| c.emulator == emulator && c.name.starts_with("rt-interference-"))
        .with_context(|| format!("no rt-interference case on {}", emulator.name()))?;
    let mut images = std::collections::HashMap::new();
    let (kernel, modules) = crate::tests::image_for(&workspace_root(), case.scenario, &mut images)?;
    let cfg = case.run_config(&kernel, &modules)?;
    let outcome = runner::run(&cfg)?;
    if !outcome.matched {
        return Ok(Err(outcome.reason));
    }
    Ok(match parse_latency(&outcome.lines) {
        Some(figures) => Ok(Row {
            emulator: case.emulator,
            label: "rt+load",
            timer: timer_of(&outcome.lines),
            figures,
            hist: parse_histogram(&outcome.lines),
        }),
        None => Err("no `RT latency` line".into()),
    })
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<10} {:<7} {:<20} {:>7} {:>11} {:>11} {:>11} {:>11} {:>10} {:>12}",
        "emulator",
        "run",
        "timer",
        "samples",
        "min",
        "mean",
        "p99.9",
        "max",
        "exits/irq",
        "max/native"
    );
    for r in rows {
        let f = &r.figures;
        let native = rows
            .iter()
            .find(|n| n.emulator == r.emulator && n.label == "native");
        let ratio = native.map_or("-".to_string(), |n| {
            format!("{:.2}", f.max as f64 / n.figures.max.max(1) as f64)
        });
        println!(
            "{:<10} {:<7} {:<20} {:>7} {:>11} {:>11} {:>11} {:>11} {:>10} {:>12}",
            r.emulator.name(),
            r.label,
            r.timer,
            f.samples,
            f.min,
            f.mean,
            f.p999,
            f.max,
            f.exits_per_sample()
                .map_or("-".into(), |e| format!("{e:.3}")),
            ratio
        );
    }
}

/// One panel per run: a bar per power-of-two bucket (x: log2 of the ticks, y: share of samples).
fn histogram_svg(rows: &[Row]) -> String {
    const W: u64 = 520;
    const H: u64 = 160;
    const BUCKETS: u64 = 32;
    let mut out = String::new();
    let height = H * rows.len().max(1) as u64 + 20;
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="monospace" font-size="11">"#
    );
    for (i, r) in rows.iter().enumerate() {
        let top = i as u64 * H + 10;
        let _ = writeln!(
            out,
            r#"<text x="4" y="{}">{} {} ({}): max {} ticks</text>"#,
            top + 10,
            r.emulator.name(),
            r.label,
            r.timer,
            r.figures.max
        );
        let base = top + H - 30;
        let _ = writeln!(
            out,
            r#"<line x1="40" y1="{base}" x2="{}" y2="{base}" stroke="black"/>"#,
            40 + BUCKETS * 14
        );
        let total = r.hist.iter().map(|b| b.2).sum::<u64>().max(1);
        for &(lo, _, count) in &r.hist {
            let k = if lo == 0 {
                0
            } else {
                63 - u64::from(lo.leading_zeros())
            };
            let x = 40 + k.min(BUCKETS - 1) * 14;
            let h = (count * (H - 50)).div_ceil(total);
            let _ = writeln!(
                out,
                r#"<rect x="{x}" y="{}" width="12" height="{h}" fill="{}"/>"#,
                base - h,
                if r.label == "native" { "#4a7" } else { "#c54" }
            );
        }
        for k in (0..BUCKETS).step_by(4) {
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}">2^{k}</text>"#,
                40 + k * 14,
                base + 14
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_svg_has_a_bar_per_bucket_and_a_panel_per_run() {
        let figures = RtFigures {
            samples: 3,
            min: 1,
            mean: 2,
            p999: 3,
            max: 3,
            exits: None,
            overruns: 0,
        };
        let rows = [Row {
            emulator: Emulator::Bochs,
            label: "native",
            timer: "tsc-deadline x2apic".into(),
            figures,
            hist: vec![(0, 2, 1), (2, 4, 2)],
        }];
        let svg = histogram_svg(&rows);
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("bochs native (tsc-deadline x2apic): max 3 ticks"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        let lines = vec!["RT config timer=oneshot apic=xapic wait=hlt samples=3".to_string()];
        assert_eq!(timer_of(&lines), "oneshot xapic");
    }
}
