//! `cargo xtask fuzz [TARGET] [--seconds N]`: every cargo-fuzz target of the workspace under
//! libFuzzer on the nightly toolchain, one after the other, with a summary table.
//!
//! Targets are discovered, not listed: every `crates/*/fuzz/Cargo.toml` and `tools/*/fuzz/Cargo.toml`
//! with `[package.metadata] cargo-fuzz = true` contributes its `[[bin]]` targets, so a target
//! added with `cargo fuzz add` joins without a change here. Builds share `target/fuzz`; each
//! target's corpus lives in `target/fuzz-corpus/<crate>/<target>/` (kept between runs, seeded from
//! committed seeds in `fuzz/seeds/<target>/` when there are any), its crash artifacts in
//! `target/fuzz-artifacts/<crate>/<target>/` and its libFuzzer output in
//! `target/fuzz-logs/<crate>-<target>.log`. Any crash, leak or timeout artifact fails the command.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// The toolchain libFuzzer's instrumentation needs.
const NIGHTLY: &str = "+nightly";

/// One fuzz target: the crate directory that holds `fuzz/` and the `[[bin]]` name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The crate's directory (`crates/loader`), where `cargo fuzz` runs.
    pub crate_dir: PathBuf,
    /// The crate's name for messages and paths (`loader`).
    pub crate_name: String,
    /// The target (`pvh`).
    pub name: String,
}

impl Target {
    fn label(&self) -> String {
        format!("{}/{}", self.crate_name, self.name)
    }
}

/// The fuzz targets of every `<root>/{crates,tools}/*/fuzz/Cargo.toml` that is a cargo-fuzz
/// package, sorted by crate then target.
pub fn discover(root: &Path) -> Result<Vec<Target>> {
    let mut targets = Vec::new();
    for group in ["crates", "tools"] {
        let Ok(entries) = std::fs::read_dir(root.join(group)) else {
            continue;
        };
        for entry in entries.flatten() {
            let crate_dir = entry.path();
            let manifest = crate_dir.join("fuzz/Cargo.toml");
            if !manifest.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("reading {}", manifest.display()))?;
            let crate_name = entry.file_name().to_string_lossy().into_owned();
            for name in bins(&text).with_context(|| format!("{}", manifest.display()))? {
                targets.push(Target {
                    crate_dir: crate_dir.clone(),
                    crate_name: crate_name.clone(),
                    name,
                });
            }
        }
    }
    targets.sort_by(|a, b| (&a.crate_name, &a.name).cmp(&(&b.crate_name, &b.name)));
    Ok(targets)
}

/// The `[[bin]]` names of a fuzz manifest, if it is a cargo-fuzz package.
fn bins(manifest: &str) -> Result<Vec<String>> {
    let doc: toml::Table = manifest.parse().context("not valid TOML")?;
    let is_fuzz = doc
        .get("package")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("cargo-fuzz"))
        .and_then(toml::Value::as_bool)
        .unwrap_or(false);
    if !is_fuzz {
        return Ok(Vec::new());
    }
    Ok(doc
        .get("bin")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|bin| bin.get("name").and_then(toml::Value::as_str))
        .map(str::to_owned)
        .collect())
}

/// Whether `cargo +nightly fuzz` works; installs cargo-fuzz with `cargo install` when it does not.
fn ensure_cargo_fuzz() -> Result<()> {
    let nightly = Command::new("rustc")
        .args([NIGHTLY, "--version"])
        .output()
        .context("running rustc +nightly")?;
    if !nightly.status.success() {
        bail!(
            "no nightly toolchain (libFuzzer needs it): `rustup toolchain install nightly` ({})",
            String::from_utf8_lossy(&nightly.stderr).trim()
        );
    }
    let present = Command::new("cargo")
        .args([NIGHTLY, "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("cargo-fuzz is not installed: cargo install cargo-fuzz --locked");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("running cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("`cargo install cargo-fuzz --locked` failed ({status})");
    }
    Ok(())
}

/// `cargo fuzz` with the options every build and run shares: optimized with debug assertions
/// (overflow checks find bugs too), AddressSanitizer, one target directory.
fn cargo_fuzz(root: &Path, target: &Target, verb: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&target.crate_dir)
        .args([NIGHTLY, "fuzz", verb, "-O", "-a", "--target-dir"])
        .arg(root.join("target/fuzz"));
    // The bare-metal flags of a surrounding build must not leak into the fuzz build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// What one target's run gave.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Inputs executed (libFuzzer's `stat::number_of_executed_units`).
    pub runs: u64,
    /// Seconds the run took.
    pub seconds: f64,
    /// Inputs in the corpus afterwards.
    pub corpus: usize,
    /// Crash, leak, timeout or out-of-memory inputs written.
    pub artifacts: Vec<PathBuf>,
    /// `ok`, or what went wrong.
    pub result: String,
}

/// libFuzzer's `stat::number_of_executed_units`, or the last `#N` status line's count.
pub fn executed_units(log: &str) -> Option<u64> {
    let stat = log.lines().find_map(|l| {
        l.strip_prefix("stat::number_of_executed_units:")
            .and_then(|v| v.trim().parse().ok())
    });
    stat.or_else(|| {
        log.lines().rev().find_map(|l| {
            let rest = l.strip_prefix('#')?;
            let end = rest.find(|c: char| !c.is_ascii_digit())?;
            rest[..end].parse().ok()
        })
    })
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn run_one(root: &Path, target: &Target, seconds: u64) -> Result<Outcome> {
    let corpus = root
        .join("target/fuzz-corpus")
        .join(&target.crate_name)
        .join(&target.name);
    let artifacts = root
        .join("target/fuzz-artifacts")
        .join(&target.crate_name)
        .join(&target.name);
    let logs = root.join("target/fuzz-logs");
    for dir in [&corpus, &artifacts, &logs] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Artifacts of an earlier run were reported then; this run's are what count.
    for old in files_in(&artifacts) {
        let _ = std::fs::remove_file(old);
    }
    let log_path = logs.join(format!("{}-{}.log", target.crate_name, target.name));
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = cargo_fuzz(root, target, "run");
    cmd.arg(&target.name).arg(&corpus);
    let seeds = target.crate_dir.join("fuzz/seeds").join(&target.name);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-timeout=10")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdout(log.try_clone()?)
        .stderr(log);
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("running cargo fuzz run {}", target.name))?;
    let elapsed = start.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let found = files_in(&artifacts);
    let result = if !found.is_empty() {
        format!("FOUND {} artifact(s)", found.len())
    } else if !status.success() {
        format!("FAILED ({status}; see {})", log_path.display())
    } else {
        "ok".to_owned()
    };
    Ok(Outcome {
        runs: executed_units(&text).unwrap_or(0),
        seconds: elapsed,
        corpus: files_in(&corpus).len(),
        artifacts: found,
        result,
    })
}

/// Runs `only` (a target name or `crate/target`; all when `None`) for `seconds` each and prints
/// the table; fails when any target found something or did not run.
pub fn fuzz(root: &Path, only: Option<&str>, seconds: u64) -> Result<std::process::ExitCode> {
    let all = discover(root)?;
    let targets: Vec<Target> = all
        .iter()
        .filter(|t| only.is_none_or(|o| o == t.name || o == t.label()))
        .cloned()
        .collect();
    if targets.is_empty() {
        let names: Vec<String> = all.iter().map(Target::label).collect();
        bail!(
            "no fuzz target {:?} (targets: {})",
            only.unwrap_or(""),
            names.join(", ")
        );
    }
    ensure_cargo_fuzz()?;
    let build_start = Instant::now();
    let mut built: Vec<&Path> = Vec::new();
    for target in &targets {
        if built.contains(&target.crate_dir.as_path()) {
            continue;
        }
        eprintln!("building the fuzz targets of {}", target.crate_name);
        let mut cmd = cargo_fuzz(root, target, "build");
        if only.is_some() {
            cmd.arg(&target.name);
        }
        let status = cmd.status().context("running cargo fuzz build")?;
        if !status.success() {
            bail!(
                "cargo fuzz build in {} failed ({status})",
                target.crate_dir.display()
            );
        }
        built.push(&target.crate_dir);
    }
    let build_secs = build_start.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    for target in &targets {
        eprintln!("fuzzing {} for {seconds} s", target.label());
        let outcome = run_one(root, target, seconds)?;
        for artifact in &outcome.artifacts {
            eprintln!("  artifact: {}", artifact.display());
        }
        eprintln!("  {} runs, {}", outcome.runs, outcome.result);
        rows.push((target.label(), outcome));
    }
    println!();
    println!(
        "{:<24} {:>12} {:>8} {:>8}  result",
        "target", "runs", "seconds", "corpus"
    );
    for (label, o) in &rows {
        println!(
            "{:<24} {:>12} {:>8.1} {:>8}  {}",
            label, o.runs, o.seconds, o.corpus, o.result
        );
    }
    println!("builds: {build_secs:.0} s; logs in target/fuzz-logs/");
    let bad = rows.iter().filter(|(_, o)| o.result != "ok").count();
    if bad > 0 {
        eprintln!(
            "{bad} target(s) found something or failed: reproduce with `cd <crate> && cargo +nightly fuzz run <target> <artifact>`"
        );
        return Ok(std::process::ExitCode::FAILURE);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workspace_fuzz_target_is_found() {
        let targets = discover(&crate::workspace_root()).unwrap();
        let labels: Vec<String> = targets.iter().map(Target::label).collect();
        for expected in [
            "emulate/fetch_walk",
            "emulate/mmio_decode",
            "ivshmem/doorbell",
            "loader/load",
            "loader/pvh",
            "vdev/pci_segment",
            "vdev/platform",
            "virtio/devices",
            "virtio/queue",
        ] {
            assert!(
                labels.iter().any(|l| l == expected),
                "{expected} not in {labels:?}"
            );
        }
    }

    #[test]
    fn only_cargo_fuzz_manifests_count() {
        let fuzz = "[package]\nname = \"x\"\n[package.metadata]\ncargo-fuzz = true\n[[bin]]\nname = \"a\"\npath = \"a.rs\"\n[[bin]]\nname = \"b\"\n";
        assert_eq!(bins(fuzz).unwrap(), ["a", "b"]);
        assert!(bins("[package]\nname = \"x\"\n[[bin]]\nname = \"a\"\n")
            .unwrap()
            .is_empty());
        assert!(bins("not toml [").is_err());
    }

    #[test]
    fn executed_units_from_libfuzzer_output() {
        let log = "#2\tINITED cov: 10\n#4096\tpulse  cov: 12\n#98765\tDONE   cov: 40 exec/s: 6583\nDone 98765 runs in 15 second(s)\nstat::number_of_executed_units: 98765\nstat::average_exec_per_sec:     6584\n";
        assert_eq!(executed_units(log), Some(98765));
        // A run cut short by a crash prints no final stats: the last status line counts.
        assert_eq!(
            executed_units("#2\tINITED\n#512\tNEW cov: 3\n==1== ERROR"),
            Some(512)
        );
        assert_eq!(executed_units("nothing"), None);
    }
}
