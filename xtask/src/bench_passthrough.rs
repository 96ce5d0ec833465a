//! `cargo xtask bench passthrough`: Linux on passed-through devices (QEMU's e1000e and NVMe
//! behind its intel-iommu or amd-iommu), natively on the same emulated devices and as the
//! pre-launched VM `linux` of `configs/passthrough-bench-{vtd,amdvi}.toml` under Quercus.
//!
//! The guest (`quercus.test=bench-passthrough`, linux_image.rs) downloads 16 MiB from xtask's
//! file server over the NIC (the URL comes with the DHCP offer, see passthrough_data.rs), then
//! reads and writes 16 MiB of the NVMe drive with direct I/O, each step bracketed by the
//! kernel's clock and, under Quercus, by two reads of the statistics leaf 0x4000_0001 (this
//! vCPU's VM exits). The table gives MiB/s, the device's interrupts per MiB, and the exits per
//! MiB and per interrupt.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::bench_virtio::{
    bench_lines, fmt_num, image, null_cost, passed, vm_lines, BenchLine, NullCost,
};
use crate::board::UserNet;
use crate::build;
use crate::passthrough_data as data;
use crate::runner::{self, Emulator};
use crate::tests::{boot, Fail, Native, TestCase};
use crate::tests_passthrough::{device_args_net, LINUX_PT_FAIL, LINUX_PT_NATIVE_FAIL};
use crate::{packages, process, workspace_root};

/// The IOMMU of the emulated board.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Iommu {
    /// QEMU's intel-iommu (board qemu-vtd).
    Intel,
    /// QEMU's amd-iommu (board qemu-amdvi).
    Amd,
}

impl Iommu {
    fn board(self) -> &'static str {
        match self {
            Iommu::Intel => "qemu-vtd",
            Iommu::Amd => "qemu-amdvi",
        }
    }

    fn scenario(self) -> &'static str {
        match self {
            Iommu::Intel => "passthrough-bench-vtd",
            Iommu::Amd => "passthrough-bench-amdvi",
        }
    }

    fn case_name(self) -> &'static str {
        match self {
            Iommu::Intel => "bench-passthrough-intel-iommu",
            Iommu::Amd => "bench-passthrough-amd-iommu",
        }
    }
}

/// The kernel command line of both bench scenarios (and of the native runs).
pub const BENCH_CMDLINE: &str = "console=ttyS0 quiet quercus.modules=1 quercus.test=bench-passthrough quercus.fetch=dhcp quercus.bench_mib=16";

/// The run directory: the NVMe drive, the server with the 16 MiB file named in the DHCP offer.
fn bench_setup(dir: &Path) -> Result<Box<dyn std::any::Any>> {
    Ok(Box::new(data::prepare(dir, data::BENCH_FILE, false)?))
}

fn bench_case(iommu: Iommu) -> TestCase {
    TestCase {
        scenario: iommu.scenario(),
        mem_mib: 1024,
        extra_qemu_args: device_args_net(iommu.board(), UserNet::Config(data::QEMU_NET_CONFIG)),
        setup: Some(bench_setup),
        expect: vec![r"^\[linux\] QUERCUS-BENCH: done$".into()],
        fail: Fail::Custom(LINUX_PT_FAIL),
        timeout_secs: 900,
        native: Some(Native {
            kernel: build::LINUX_MODULE,
            cmdline: BENCH_CMDLINE,
            modules: vec![(build::LINUX_INITRD_MODULE, "")],
            cpus: 1,
            mem_mib: Some(256),
            expect: vec!["QUERCUS-BENCH: done$".into()],
            fail: Some(LINUX_PT_NATIVE_FAIL),
            ..Default::default()
        }),
        ..boot(iommu.case_name(), Emulator::Qemu, 2)
    }
}

/// One measured step of a column.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PtStep {
    pub bytes: u64,
    pub irqs: u64,
    pub ns: u64,
    pub exits: Option<u64>,
}

/// The step `what` (`nic fetch`, `nvme read`, `nvme write`) among `lines`, net of the
/// measurement's own cost.
pub fn pt_step(lines: &[BenchLine], what: &str, null: NullCost) -> Option<PtStep> {
    let l = lines.iter().find(|l| l.what == what)?;
    Some(PtStep {
        bytes: l.num("bytes")?,
        irqs: l.num("irqs")?,
        ns: l.num("ns")?.saturating_sub(null.ns),
        exits: l.num("exits").map(|e| e.saturating_sub(null.exits)),
    })
}

/// The rows: (label, the step, the value).
type Metric = fn(&PtStep) -> Option<f64>;
const STEPS: [(&str, &str); 3] = [
    ("nic fetch", "NIC download (wget)"),
    ("nvme read", "NVMe read (dd, 1M direct)"),
    ("nvme write", "NVMe write (dd, 1M direct)"),
];
const METRICS: [(&str, Metric); 4] = [
    ("MiB/s", |s| {
        (s.ns > 0).then(|| s.bytes as f64 / MIB / (s.ns as f64 / 1e9))
    }),
    ("irqs/MiB", |s| {
        (s.bytes > 0).then(|| s.irqs as f64 / (s.bytes as f64 / MIB))
    }),
    ("exits/MiB", |s| {
        let exits = s.exits? as f64;
        (s.bytes > 0).then(|| exits / (s.bytes as f64 / MIB))
    }),
    ("exits/irq", |s| {
        let exits = s.exits? as f64;
        (s.irqs > 0).then(|| exits / s.irqs as f64)
    }),
];
const MIB: f64 = 1024.0 * 1024.0;

/// One column: its label and the guest's benchmark lines.
pub struct Column {
    pub label: String,
    pub lines: Vec<BenchLine>,
}

/// The table, one row per step and metric, one column per run.
pub fn table(columns: &[Column]) -> Vec<String> {
    let width = columns
        .iter()
        .map(|c| c.label.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let mut out = vec![format!(
        "{:<38}{}",
        "",
        columns
            .iter()
            .map(|c| format!("{:>w$}", c.label, w = width + 2))
            .collect::<String>()
    )];
    for (what, label) in STEPS {
        for (name, metric) in METRICS {
            let cells: String = columns
                .iter()
                .map(|c| {
                    let v = pt_step(&c.lines, what, null_cost(&c.lines))
                        .and_then(|s| metric(&s))
                        .map_or("-".to_string(), fmt_num);
                    format!("{v:>w$}", w = width + 2)
                })
                .collect();
            out.push(format!("{:<38}{cells}", format!("{label} {name}")));
        }
    }
    out
}

/// `cargo xtask bench passthrough`.
pub fn bench_passthrough(iommus: &[Iommu]) -> Result<ExitCode> {
    let root = workspace_root();
    packages::ensure(&packages::all_requirements())?;
    let mut columns = Vec::new();
    let mut ok = true;
    for &iommu in iommus {
        if process::interrupted() {
            return Ok(ExitCode::from(130));
        }
        let case = bench_case(iommu);
        let (kernel, modules) = image(&root, case.scenario)?;
        println!(
            "{}: natively on QEMU's devices ({})",
            case.name,
            iommu.board()
        );
        let (_, runs) = crate::tests::run_native(&case, &modules)?;
        for (run, outcome) in &runs {
            ok &= passed(run, outcome);
        }
        columns.push(Column {
            label: format!("{} native", iommu.board()),
            lines: runs
                .first()
                .map(|(_, o)| bench_lines(&o.lines))
                .unwrap_or_default(),
        });
        println!("{}: under Quercus ({})", case.name, case.scenario);
        let cfg = case.run_config(&kernel, &modules)?;
        let dir = runner::fresh_run_dir(&cfg.name)?;
        let guard = bench_setup(&dir).with_context(|| format!("setting up {}", dir.display()))?;
        let outcome = runner::run_in(&cfg, &dir)?;
        drop(guard);
        ok &= passed(case.name, &outcome);
        columns.push(Column {
            label: format!("{} quercus", iommu.board()),
            lines: bench_lines(&vm_lines(&outcome.lines, "linux")),
        });
    }
    println!();
    println!("The guests' lines:");
    for c in &columns {
        for l in &c.lines {
            let fields: Vec<String> = l.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("  {:<22} {} {}", c.label, l.what, fields.join(" "));
        }
    }
    println!();
    println!(
        "Linux on passed-through devices (1 vCPU; {} MiB over the e1000e from xtask's server through QEMU's user network, {} MiB of the NVMe drive; MiB/s by the guest's clock; exits of the vCPU net of the measurement's own cost; QEMU's clock is wall time and noisy)",
        data::BENCH_BYTES >> 20,
        crate::bench_virtio::cmdline_value(BENCH_CMDLINE, "quercus.bench_mib").unwrap_or("?")
    );
    for line in table(&columns) {
        println!("  {line}");
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
    fn scenarios_carry_the_bench_cmdline() {
        for iommu in [Iommu::Intel, Iommu::Amd] {
            let path = workspace_root().join(format!("configs/{}.toml", iommu.scenario()));
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.contains(&format!("cmdline = \"{BENCH_CMDLINE}\"\n")),
                "{}",
                path.display()
            );
            assert!(text.contains(&format!("board = \"{}\"", iommu.board())));
        }
    }

    #[test]
    fn steps_and_table() {
        let lines = bench_lines(&[
            "QUERCUS-BENCH: hv=quercus cpus=1 clocksource=tsc",
            "QUERCUS-BENCH: null ns=1000 exits=2 tsc=10",
            "QUERCUS-BENCH: nic fetch bytes=16777216 packets=11000 irqs=800 kind=PCI-MSI ns=2000001000 exits=1602 tsc=5",
            "QUERCUS-BENCH: nvme read bs=1048576 count=16 bytes=16777216 reqs=64 irqs=64 kind=PCI-MSI ns=500001000 exits=130 tsc=5",
        ]);
        let null = null_cost(&lines);
        let s = pt_step(&lines, "nic fetch", null).unwrap();
        assert_eq!(
            s,
            PtStep {
                bytes: 16 << 20,
                irqs: 800,
                ns: 2_000_000_000,
                exits: Some(1600)
            }
        );
        assert_eq!(METRICS[0].1(&s), Some(8.0));
        assert_eq!(METRICS[1].1(&s), Some(50.0));
        assert_eq!(METRICS[2].1(&s), Some(100.0));
        assert_eq!(METRICS[3].1(&s), Some(2.0));
        assert_eq!(pt_step(&lines, "nvme write", null), None);
        let native = bench_lines(&["QUERCUS-BENCH: nvme read bytes=1048576 irqs=4 ns=1000000"]);
        let n = pt_step(&native, "nvme read", null_cost(&native)).unwrap();
        assert_eq!(n.exits, None);
        assert_eq!(METRICS[2].1(&n), None);
        let t = table(&[
            Column {
                label: "qemu-vtd native".into(),
                lines: native,
            },
            Column {
                label: "qemu-vtd quercus".into(),
                lines,
            },
        ]);
        assert_eq!(t.len(), 1 + STEPS.len() * METRICS.len());
        assert!(t[0].contains("qemu-vtd native") && t[0].contains("qemu-vtd quercus"));
        let row = |label: &str| t.iter().find(|l| l.starts_with(label)).unwrap().clone();
        let fetch = row("NIC download (wget) MiB/s");
        assert!(fetch.trim_end().ends_with("8.00"), "{fetch}");
        assert!(row("NIC download (wget) exits/irq")
            .trim_end()
            .ends_with("2.00"));
        let read = row("NVMe read (dd, 1M direct) MiB/s");
        assert!(read.contains("1000") && read.contains("32.0"), "{read}");
        assert!(row("NVMe write (dd, 1M direct) MiB/s").contains('-'));
    }
}
