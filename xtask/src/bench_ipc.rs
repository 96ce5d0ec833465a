//! `cargo xtask bench ipc` (issue 14): inter-VM communication between two bare-metal test guests
//! (scenario `bench-ipc`, `bench-ipc-bochs` on the four-CPU Bochs board): round trips and streams
//! through the message channel (polling, and with the reader halted until the doorbell) and
//! through the vUART link, in guest TSC ticks (deterministic on Bochs) and microseconds, with the
//! measuring VM's exits per operation (Quercus's statistics leaf). One column per emulator.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;

use crate::bench_virtio::image;
use crate::runner::{self, Emulator};
use crate::tests::{boot, Fail, TestCase, GUEST_FAIL};
use crate::{packages, workspace_root};

/// One `BENCH ipc-<row> key=value...` line of the `ping` VM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row {
    pub name: String,
    pub fields: BTreeMap<String, u64>,
}

/// The rows of `ping`'s console lines.
pub fn rows(lines: &[String]) -> Vec<Row> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l.split("[ping] BENCH ipc-").nth(1)?;
            let mut words = rest.split_whitespace();
            let name = words.next()?.to_string();
            let fields = words
                .filter_map(|w| {
                    let (k, v) = w.split_once('=')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect();
            (name != "done").then_some(Row { name, fields })
        })
        .collect()
}

/// The guest's TSC rate in kHz from its banner line.
fn tsc_khz(lines: &[String]) -> Option<u64> {
    lines
        .iter()
        .find(|l| l.contains("[ping] test-guest:"))?
        .split("tsc-khz=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A row's cells: ticks per operation, microseconds, exits per operation; streams in MiB/s or
/// KiB/s.
pub fn cells(row: &Row, khz: u64) -> (String, String, String) {
    let f = |k: &str| row.fields.get(k).copied();
    let ops = f("ops").unwrap_or(1).max(1);
    let exits = f("exits").map_or("-".into(), |e| format!("{:.2}", e as f64 / ops as f64));
    let us = |ticks: u64| ticks as f64 * 1000.0 / khz.max(1) as f64;
    match (f("median"), f("bytes"), f("ticks")) {
        (Some(median), _, _) => (
            format!(
                "{median} (min {} max {})",
                f("min").unwrap_or(0),
                f("max").unwrap_or(0)
            ),
            format!("{:.1} us", us(median)),
            exits,
        ),
        (None, Some(bytes), Some(ticks)) => {
            let secs = us(ticks) / 1e6;
            let rate = bytes as f64 / secs.max(1e-9);
            let speed = if rate >= 1024.0 * 1024.0 {
                format!("{:.1} MiB/s", rate / 1024.0 / 1024.0)
            } else {
                format!("{:.1} KiB/s", rate / 1024.0)
            };
            (format!("{} per op", ticks / ops), speed, exits)
        }
        _ => ("-".into(), "-".into(), exits),
    }
}

fn case(emulator: Emulator) -> TestCase {
    let qemu = emulator == Emulator::Qemu;
    TestCase {
        scenario: if qemu { "bench-ipc" } else { "bench-ipc-bochs" },
        cpus: 4,
        expect: vec![r"^\[ping\] BENCH ipc-done$".into()],
        parallel: vec![vec![r"^\[pong\] TESTS DONE 1 passed 0 failed$".into()]],
        fail: Fail::Custom(GUEST_FAIL),
        timeout_secs: if qemu { 600 } else { 1800 },
        ..boot(
            if qemu {
                "bench-ipc-qemu"
            } else if emulator == Emulator::Bochs {
                "bench-ipc-bochs-vmx"
            } else {
                "bench-ipc-bochs-svm"
            },
            emulator,
            4,
        )
    }
}

pub fn bench_ipc(emulators: &[Emulator]) -> Result<ExitCode> {
    let root = workspace_root();
    packages::ensure(&packages::all_requirements())?;
    let mut ok = true;
    for &emulator in emulators {
        let case = case(emulator);
        let (kernel, modules) = image(&root, case.scenario)?;
        println!("{}: under Quercus ({})", case.name, case.scenario);
        let outcome = runner::run(&case.run_config(&kernel, &modules)?)?;
        if !outcome.matched {
            ok = false;
            println!("{}: FAIL {}", case.name, outcome.reason);
            for line in crate::console::tail(&outcome.lines, 15) {
                println!("  | {line}");
            }
        }
        let khz = tsc_khz(&outcome.lines).unwrap_or(0);
        println!(
            "{} (guest TSC {khz} kHz; ticks are {})",
            emulator.name(),
            if emulator == Emulator::Qemu {
                "wall-clock and noisy"
            } else {
                "deterministic"
            }
        );
        println!(
            "  {:<20} {:>36} {:>14} {:>12}",
            "row", "ticks per op", "time / rate", "exits/op"
        );
        let rows = rows(&outcome.lines);
        ok &= rows.len() == 5;
        for row in &rows {
            let (ticks, time, exits) = cells(row, khz);
            println!("  {:<20} {ticks:>36} {time:>14} {exits:>12}", row.name);
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

    #[test]
    fn rows_and_cells_from_the_guest_lines() {
        let lines: Vec<String> = [
            "quercus> [ping] test-guest: vendor=GenuineIntel quercus=yes native=no tsc-khz=200000 ram-mapped=32MiB",
            "[ping] BENCH ipc-chan-rtt-poll median=4000 min=3000 max=9000 ops=1000 exits=0",
            "[ping] BENCH ipc-chan-stream bytes=10240000 ticks=200000000 ops=10000 exits=3",
            "[pong] BENCH ipc-chan-rtt-poll median=1 min=1 max=1 ops=1 exits=1",
            "[ping] BENCH ipc-done",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let rows = rows(&lines);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].name, "chan-rtt-poll");
        assert_eq!(tsc_khz(&lines), Some(200_000));
        let (ticks, time, exits) = cells(&rows[0], 200_000);
        assert_eq!(ticks, "4000 (min 3000 max 9000)");
        assert_eq!(time, "20.0 us");
        assert_eq!(exits, "0.00");
        // 10,240,000 bytes in one second at 200 MHz.
        let (_, rate, exits) = cells(&rows[1], 200_000);
        assert_eq!(rate, "9.8 MiB/s");
        assert_eq!(exits, "0.00");
    }
}
