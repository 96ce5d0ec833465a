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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| Duration::from_millis(x)).collect()
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
