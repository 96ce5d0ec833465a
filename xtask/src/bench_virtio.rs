//! `cargo xtask bench virtio`: the hypervisor's virtio-blk and virtio-net inside Linux, next to
//! the same Linux on QEMU's own virtio devices.
//!
//! The Linux guest's benchmark modes (`quercus.test=bench-blk`, `bench-net-server`,
//! `bench-net-client`; see [`crate::linux_image::INIT_SCRIPT`]) print `QUERCUS-BENCH:` lines: each
//! measured step with its bytes, requests (or packets) and nanoseconds of the guest's clock, and
//! under Quercus the VM exits and TSC ticks the step cost its vCPU (Quercus's statistics leaf
//! 0x4000_0001, read through `/dev/cpu/0/cpuid` before and after the step), plus the requests
//! (or packets) and virtio interrupts the guest's kernel counted meanwhile. The table's times,
//! exits and ticks are net of the measurement's own cost: the median of the guest's three empty
//! (`null`) steps is subtracted.
//!
//! Runs: on QEMU natively with QEMU's own virtio-blk and virtio-net (two QEMUs joined by a
//! socket), the reference, which has no exit counts; and under Quercus
//! (`configs/bench-virtio-blk.toml`, `configs/bench-virtio-net.toml`). On Bochs the disk part
//! only, under Quercus only (`configs/bench-virtio-blk-bochs.toml`, smaller sizes): Bochs has no
//! virtio devices of its own, and the Bochs board's two pCPUs leave room for one VM, not the two
//! a VM-to-VM transfer needs.
//! On QEMU the disk run also types `stats linux` and `virtio linux` at the hypervisor's shell at
//! each of the guest's pauses between steps: each step's exits by reason, and the notifications,
//! requests and interrupts the hypervisor's disk counted (whether one notification served a
//! batch of requests).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;

use crate::build::{self, BuildOptions, Profile};
use crate::runner::{self, BootModule, Emulator, RunOutcome};
use crate::tests::{Fail, Native, NativeDevice, TestCase};
use crate::{packages, process, workspace_root};

/// The kernel command line of `configs/bench-virtio-blk.toml`'s VM and of its native reference.
pub const BLK_CMDLINE: &str = "console=ttyS0 quiet quercus.modules=1 quercus.test=bench-blk quercus.bench_mib=16 quercus.bench_4k=4096 quercus.bench_pause=2";
/// The server VM of `configs/bench-virtio-net.toml` (and its native reference).
pub const NET_SERVER_CMDLINE: &str =
    "console=ttyS0 quiet quercus.modules=1 quercus.test=bench-net-server quercus.ip=10.0.0.1/24";
/// The client VM of `configs/bench-virtio-net.toml` (and its native reference).
pub const NET_CLIENT_CMDLINE: &str = "console=ttyS0 quiet quercus.modules=1 quercus.test=bench-net-client quercus.ip=10.0.0.2/24 quercus.peer=10.0.0.1 quercus.bench_mib=16";
/// The `QUERCUS-BENCH: pause` lines of one disk run: two before the first step, one after each
/// step of [`BLK_STEPS`].
pub const BLK_PAUSES: usize = BLK_STEPS.len() + 2;
/// The hypervisor shell's prompt, which a VM line may follow on the same console line (after
/// the output of a typed command).
const PROMPT: &str = "quercus> ";

/// Failure lines of the Quercus runs.
const FAIL: &str = r"quercus: fatal|stopped: .*(?:unhandled|cannot|unsupported|refused|triple)|Kernel panic|Attempted to kill init|general protection fault|QUERCUS-GUEST: (?:bench|blk|net) error|QUERCUS-GUEST: unknown quercus\.test";
/// Failure lines of the native runs.
const NATIVE_FAIL: &str = r"Kernel panic|Attempted to kill init|general protection fault|QUERCUS-GUEST: (?:bench|blk|net) error|QUERCUS-GUEST: unknown quercus\.test";
/// The disk guest's pause line under Quercus (after any shell prompts).
const PAUSE: &str = r"^(?:quercus> )*\[linux\] QUERCUS-BENCH: pause$";
/// A row of the hypervisor shell's `stats linux`: VM, vCPU 0, exits.
const STATS_ROW: &str = r"^linux\s+0\s+\d+";
/// The disk's row of the hypervisor shell's `virtio linux`.
const VIRTIO_BLK_ROW: &str = r"^\S+\s+blk\s";
/// Typed at each pause: the VM's exits by reason, and its virtio devices' counters.
const PAUSE_INPUT: &str = "stats linux\rvirtio linux\r";

/// What a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Sequential reads and writes of the raw virtio disk (dd, direct I/O).
    Blk,
    /// TCP from one VM to another (nc).
    Net,
}

// ---------------------------------------------------------------------------------------------
// The guest's lines
// ---------------------------------------------------------------------------------------------

/// One `QUERCUS-BENCH:` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchLine {
    /// The words before the first `key=value` (`blk read`, `net rx`, `null`...; may be empty).
    pub what: String,
    /// The `key=value` words, in order.
    pub fields: Vec<(String, String)>,
}

impl BenchLine {
    /// The value of `key` as a number.
    pub fn num(&self, key: &str) -> Option<u64> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse().ok())
    }

    /// The value of `key` as written.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a `QUERCUS-BENCH:` line (with anything before the marker: a VM prefix, a native run's
/// terminal codes); `None` for other lines and for a plain word after a `key=value` one.
pub fn parse_bench_line(line: &str) -> Option<BenchLine> {
    const MARK: &str = "QUERCUS-BENCH:";
    let rest = &line[line.find(MARK)? + MARK.len()..];
    let mut what = Vec::new();
    let mut fields = Vec::new();
    for word in rest.split_whitespace() {
        match word.split_once('=') {
            Some((k, v)) if !k.is_empty() => fields.push((k.to_string(), v.to_string())),
            Some(_) => return None,
            None if fields.is_empty() => what.push(word),
            None => return None,
        }
    }
    Some(BenchLine {
        what: what.join(" "),
        fields,
    })
}

/// The `QUERCUS-BENCH:` lines among `lines`.
pub fn bench_lines<S: AsRef<str>>(lines: &[S]) -> Vec<BenchLine> {
    lines
        .iter()
        .filter_map(|l| parse_bench_line(l.as_ref()))
        .collect()
}

/// The lines of VM `vm` in a Quercus log (those starting `[vm] `, after any shell prompts),
/// without the prefix.
pub fn vm_lines(lines: &[String], vm: &str) -> Vec<String> {
    let prefix = format!("[{vm}] ");
    lines
        .iter()
        .filter_map(|l| {
            let mut l = l.as_str();
            while let Some(rest) = l.strip_prefix(PROMPT) {
                l = rest;
            }
            l.strip_prefix(&prefix).map(str::to_string)
        })
        .collect()
}

/// A regex for VM `vm`'s console line `text` (a regex itself) under Quercus, shell prompts
/// before it allowed.
fn vm_line(vm: &str, text: &str) -> String {
    format!(
        "^(?:{})*{}{text}",
        regex::escape(PROMPT),
        regex::escape(&format!("[{vm}] "))
    )
}

/// One measured step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub bytes: u64,
    /// dd blocks (`count=`); 0 for a network step.
    pub blocks: u64,
    /// Requests the kernel completed on the disk (`reqs=`), or packets (`packets=`).
    pub units: u64,
    /// Interrupts of the guest's virtio devices (`irqs=`).
    pub irqs: Option<u64>,
    /// Guest clock.
    pub ns: u64,
    /// Under Quercus: the vCPU's VM exits and TSC ticks.
    pub exits: Option<u64>,
    pub tsc: Option<u64>,
}

impl Step {
    fn of(line: &BenchLine) -> Option<Step> {
        Some(Step {
            bytes: line.num("bytes")?,
            blocks: line.num("count").unwrap_or(0),
            units: line.num("reqs").or_else(|| line.num("packets"))?,
            irqs: line.num("irqs"),
            ns: line.num("ns")?,
            exits: line.num("exits"),
            tsc: line.num("tsc"),
        })
    }
}

/// The first step `what` (with block size `bs`, if given) among `lines`.
pub fn find_step(lines: &[BenchLine], what: &str, bs: Option<u64>) -> Option<Step> {
    lines
        .iter()
        .filter(|l| l.what == what && bs.is_none_or(|bs| l.num("bs") == Some(bs)))
        .find_map(Step::of)
}

/// The median (the lower middle one for an even count); `None` when empty.
pub fn median_u64(values: &[u64]) -> Option<u64> {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get(v.len().saturating_sub(1) / 2).copied()
}

/// What the measurement itself costs: the median nanoseconds, exits and TSC ticks of the
/// `null` lines (0 when there are none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NullCost {
    pub ns: u64,
    pub exits: u64,
    pub tsc: u64,
}

pub fn null_cost(lines: &[BenchLine]) -> NullCost {
    let of = |key: &str| {
        let v: Vec<u64> = lines
            .iter()
            .filter(|l| l.what == "null")
            .filter_map(|l| l.num(key))
            .collect();
        median_u64(&v).unwrap_or(0)
    };
    NullCost {
        ns: of("ns"),
        exits: of("exits"),
        tsc: of("tsc"),
    }
}

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

const MIB: f64 = 1024.0 * 1024.0;

/// A number derived from one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// MiB per second of the guest's clock (net of the null cost).
    MibPerSec,
    /// Requests (or packets) per second.
    UnitsPerSec,
    /// Requests per dd block.
    UnitsPerBlock,
    /// Exits (net of the null cost) per MiB moved.
    ExitsPerMib,
    /// Exits per dd block.
    ExitsPerBlock,
    /// Exits per request (or packet).
    ExitsPerUnit,
    /// TSC ticks (net of the null cost) per request.
    TscPerUnit,
    /// Virtio interrupts per dd block.
    IrqsPerBlock,
    /// Virtio interrupts per request (or packet).
    IrqsPerUnit,
}

/// `metric` of `step`; `None` when the step lacks what it needs (exits natively) or would
/// divide by zero.
pub fn metric(step: &Step, null: NullCost, metric: Metric) -> Option<f64> {
    let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
    let secs = step.ns.saturating_sub(null.ns) as f64 / 1e9;
    let exits = || step.exits.map(|e| e.saturating_sub(null.exits) as f64);
    match metric {
        Metric::MibPerSec => ratio(step.bytes as f64 / MIB, secs),
        Metric::UnitsPerSec => ratio(step.units as f64, secs),
        Metric::UnitsPerBlock => ratio(step.units as f64, step.blocks as f64),
        Metric::ExitsPerMib => ratio(exits()?, step.bytes as f64 / MIB),
        Metric::ExitsPerBlock => ratio(exits()?, step.blocks as f64),
        Metric::ExitsPerUnit => ratio(exits()?, step.units as f64),
        Metric::IrqsPerBlock => ratio(step.irqs? as f64, step.blocks as f64),
        Metric::IrqsPerUnit => ratio(step.irqs? as f64, step.units as f64),
        Metric::TscPerUnit => ratio(step.tsc?.saturating_sub(null.tsc) as f64, step.units as f64),
    }
}

/// Which step of a column a row reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `blk read`, `blk read-split` or `blk write` with this block size.
    Blk(&'static str, u64),
    /// The server's `net rx`.
    NetRx,
    /// The client's `net tx`.
    NetTx,
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub label: &'static str,
    pub source: Source,
    pub metric: Metric,
}

const M: u64 = 1 << 20;
const K4: u64 = 4096;
const RD: Source = Source::Blk("blk read", M);
/// The 1M direct reads in requests of at most 64 KiB (`max_sectors_kb=64`).
const SPLIT: Source = Source::Blk("blk read-split", M);
/// Buffered 1M reads, 1 MiB of readahead in 64 KiB requests.
const AHEAD: Source = Source::Blk("blk read-ahead", M);
const WR: Source = Source::Blk("blk write", M);
const RD4: Source = Source::Blk("blk read", K4);
const WR4: Source = Source::Blk("blk write", K4);
const RX: Source = Source::NetRx;
const TX: Source = Source::NetTx;

/// The rows, in order.
#[rustfmt::skip]
pub const ROWS: &[Row] = &[
    row("blk read 1M: MiB/s",                             RD,    Metric::MibPerSec),
    row("blk read 1M/64K: MiB/s",                        SPLIT, Metric::MibPerSec),
    row("blk read 1M buffered/ra: MiB/s",                 AHEAD, Metric::MibPerSec),
    row("blk write 1M: MiB/s",                            WR,    Metric::MibPerSec),
    row("blk read 4k: MiB/s",                             RD4,   Metric::MibPerSec),
    row("blk write 4k: MiB/s",                            WR4,   Metric::MibPerSec),
    row("blk read 4k: requests/s",                        RD4,   Metric::UnitsPerSec),
    row("blk write 4k: requests/s",                       WR4,   Metric::UnitsPerSec),
    row("blk read 1M: requests per 1M block",             RD,    Metric::UnitsPerBlock),
    row("blk read 1M/64K: requests per 1M block",        SPLIT, Metric::UnitsPerBlock),
    row("blk read 1M buffered/ra: requests per 1M block", AHEAD, Metric::UnitsPerBlock),
    row("blk write 1M: requests per 1M block",            WR,    Metric::UnitsPerBlock),
    row("blk read 1M: virtio irqs per 1M block",          RD,    Metric::IrqsPerBlock),
    row("blk read 1M/64K: virtio irqs per 1M block",     SPLIT, Metric::IrqsPerBlock),
    row("blk read 1M buffered/ra: virtio irqs per 1M block", AHEAD, Metric::IrqsPerBlock),
    row("blk read 4k: virtio irqs per request",           RD4,   Metric::IrqsPerUnit),
    row("blk write 4k: virtio irqs per request",          WR4,   Metric::IrqsPerUnit),
    row("blk read 1M: exits per MiB",                     RD,    Metric::ExitsPerMib),
    row("blk read 1M/64K: exits per MiB",                SPLIT, Metric::ExitsPerMib),
    row("blk read 1M buffered/ra: exits per MiB",         AHEAD, Metric::ExitsPerMib),
    row("blk write 1M: exits per MiB",                    WR,    Metric::ExitsPerMib),
    row("blk read 4k: exits per MiB",                     RD4,   Metric::ExitsPerMib),
    row("blk write 4k: exits per MiB",                    WR4,   Metric::ExitsPerMib),
    row("blk read 1M: exits per 1M block",                RD,    Metric::ExitsPerBlock),
    row("blk read 1M/64K: exits per 1M block",           SPLIT, Metric::ExitsPerBlock),
    row("blk read 1M buffered/ra: exits per 1M block",    AHEAD, Metric::ExitsPerBlock),
    row("blk write 1M: exits per 1M block",               WR,    Metric::ExitsPerBlock),
    row("blk read 1M/64K: exits per request",            SPLIT, Metric::ExitsPerUnit),
    row("blk read 1M buffered/ra: exits per request",     AHEAD, Metric::ExitsPerUnit),
    row("blk read 4k: exits per request",                 RD4,   Metric::ExitsPerUnit),
    row("blk write 4k: exits per request",                WR4,   Metric::ExitsPerUnit),
    row("blk read 4k: TSC ticks per request",             RD4,   Metric::TscPerUnit),
    row("blk write 4k: TSC ticks per request",            WR4,   Metric::TscPerUnit),
    row("net TCP: MiB/s (receiver)",                      RX,    Metric::MibPerSec),
    row("net sender: packets/s",                          TX,    Metric::UnitsPerSec),
    row("net sender: virtio irqs per packet",             TX,    Metric::IrqsPerUnit),
    row("net receiver: virtio irqs per packet",           RX,    Metric::IrqsPerUnit),
    row("net sender: exits per MiB",                      TX,    Metric::ExitsPerMib),
    row("net receiver: exits per MiB",                    RX,    Metric::ExitsPerMib),
    row("net sender: exits per packet",                   TX,    Metric::ExitsPerUnit),
    row("net receiver: exits per packet",                 RX,    Metric::ExitsPerUnit),
];

const fn row(label: &'static str, source: Source, metric: Metric) -> Row {
    Row {
        label,
        source,
        metric,
    }
}

/// What one environment printed: a disk run and a network run (server and client).
#[derive(Clone, Debug, Default)]
pub struct Column {
    /// `qemu native`, `qemu quercus`, `bochs quercus`...
    pub label: String,
    /// The emulator's name: a native column and a Quercus one of the same emulator get a ratio
    /// column.
    pub emulator: String,
    pub native: bool,
    pub blk: Vec<BenchLine>,
    pub server: Vec<BenchLine>,
    pub client: Vec<BenchLine>,
}

impl Column {
    /// `row`'s value in this column.
    pub fn value(&self, row: &Row) -> Option<f64> {
        let (lines, what, bs) = match row.source {
            Source::Blk(what, bs) => (&self.blk, what, Some(bs)),
            Source::NetRx => (&self.server, "net rx", None),
            Source::NetTx => (&self.client, "net tx", None),
        };
        let step = find_step(lines, what, bs)?;
        metric(&step, null_cost(lines), row.metric)
    }
}

/// A table cell: 3 significant digits or so.
pub fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The table: one column per environment, plus `quercus/native` after a Quercus column that
/// follows a native column of the same emulator (its value over the native one, where both
/// have one).
pub fn virtio_table(columns: &[Column]) -> Vec<String> {
    // (header, the column's index, the native column's index for a ratio).
    let mut cols: Vec<(String, usize, Option<usize>)> = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        cols.push((c.label.clone(), i, None));
        if !c.native {
            if let Some(n) = columns[..i]
                .iter()
                .rposition(|n| n.native && n.emulator == c.emulator)
            {
                cols.push(("quercus/native".into(), i, Some(n)));
            }
        }
    }
    let width = ROWS.iter().map(|r| r.label.len()).max().unwrap_or(0);
    let mut out = vec![cols
        .iter()
        .fold(format!("{:<width$}", "metric"), |s, (h, _, _)| {
            format!("{s} {h:>14}")
        })];
    for row in ROWS {
        let mut line = format!("{:<width$}", row.label);
        for (_, i, native) in &cols {
            let v = columns[*i].value(row);
            let cell = match native {
                None => v.map(fmt_num),
                Some(n) => match (v, columns[*n].value(row)) {
                    (Some(q), Some(n)) if n > 0.0 => Some(format!("{:.2}", q / n)),
                    _ => None,
                },
            };
            line.push_str(&format!(" {:>14}", cell.as_deref().unwrap_or("-")));
        }
        out.push(line.trim_end().to_string());
    }
    out
}

/// The batching summary of a Quercus column: for the 1M reads and the 1M reads in 64K
/// requests (several requests the guest queues at once), requests and exits per 1M dd block,
/// against the exits of a 4k read (one request at a time); `None` without exit counts.
pub fn batch_summary(c: &Column) -> Option<String> {
    let null = null_cost(&c.blk);
    let small = find_step(&c.blk, "blk read", Some(K4))?;
    let per_small = metric(&small, null, Metric::ExitsPerUnit)?;
    let mut parts = Vec::new();
    for (label, what) in [
        ("1M direct reads", "blk read"),
        ("the same in 64K requests", "blk read-split"),
        (
            "buffered 1M reads, readahead in 64K requests",
            "blk read-ahead",
        ),
    ] {
        let Some(big) = find_step(&c.blk, what, Some(M)) else {
            continue;
        };
        let (Some(reqs), Some(per_block)) = (
            metric(&big, null, Metric::UnitsPerBlock),
            metric(&big, null, Metric::ExitsPerBlock),
        ) else {
            continue;
        };
        parts.push(format!(
            "{label}: {} requests and {} exits per 1M block",
            fmt_num(reqs),
            fmt_num(per_block)
        ));
    }
    Some(format!(
        "{}: {}; 4k reads (one request at a time): {} exits per request",
        c.label,
        parts.join("; "),
        fmt_num(per_small)
    ))
}

// ---------------------------------------------------------------------------------------------
// Exits by reason (the hypervisor shell's `stats`)
// ---------------------------------------------------------------------------------------------

/// One `stats` row of a vCPU: total exits, interrupts injected, exits by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsRow {
    pub exits: u64,
    pub injected: u64,
    pub reasons: Vec<(String, u64)>,
}

/// Parses `VM VCPU EXITS INJECTED GUEST% reason=N...` for `vm`'s vCPU `vcpu`.
pub fn parse_stats_row(line: &str, vm: &str, vcpu: u16) -> Option<StatsRow> {
    let mut w = line.split_whitespace();
    if w.next()? != vm || w.next()?.parse::<u16>().ok()? != vcpu {
        return None;
    }
    let exits = w.next()?.parse().ok()?;
    let injected = w.next()?.parse().ok()?;
    w.next()?; // GUEST%
    let reasons = w
        .map(|r| {
            let (k, v) = r.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(StatsRow {
        exits,
        injected,
        reasons,
    })
}

impl StatsRow {
    /// Exits of `reason` (0 if not listed).
    pub fn get(&self, reason: &str) -> u64 {
        self.reasons
            .iter()
            .find(|(k, _)| k == reason)
            .map_or(0, |(_, v)| *v)
    }

    /// `later - self`, reason by reason (in `later`'s order; counters never go down, a smaller
    /// one gives 0).
    pub fn delta(&self, later: &StatsRow) -> StatsRow {
        StatsRow {
            exits: later.exits.saturating_sub(self.exits),
            injected: later.injected.saturating_sub(self.injected),
            reasons: later
                .reasons
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(self.get(k))))
                .collect(),
        }
    }
}

/// The blk steps in the order the guest runs them, after the first (idle) interval.
pub const BLK_STEPS: [(&str, u64); 6] = [
    ("blk read", M),
    ("blk read-split", M),
    ("blk read-ahead", M),
    ("blk write", M),
    ("blk read", K4),
    ("blk write", K4),
];

/// The exits by reason of each interval between two `stats` snapshots: the first interval is
/// a pause alone, then one per step of [`BLK_STEPS`]; then the same per dd block, net of the
/// idle interval. `blocks[i]` is step i's dd block count.
pub fn reasons_table(snapshots: &[StatsRow], blocks: &[u64]) -> Vec<String> {
    let deltas: Vec<StatsRow> = snapshots.windows(2).map(|w| w[0].delta(&w[1])).collect();
    let Some(idle) = deltas.first() else {
        return Vec::new();
    };
    let mut reasons: Vec<String> = Vec::new();
    for d in &deltas {
        for (k, v) in &d.reasons {
            if *v > 0 && !reasons.contains(k) {
                reasons.push(k.clone());
            }
        }
    }
    let name = |i: usize| match i {
        0 => "pause alone".to_string(),
        i => BLK_STEPS.get(i - 1).map_or_else(
            || format!("interval {i}"),
            |(what, bs)| format!("{what} {}", if *bs == M { "1M" } else { "4k" }),
        ),
    };
    let header = reasons.iter().fold(
        format!("{:<28} {:>9} {:>9}", "interval", "exits", "injected"),
        |s, r| format!("{s} {r:>10}"),
    );
    let mut out = vec![header];
    for (i, d) in deltas.iter().enumerate() {
        let mut line = format!("{:<28} {:>9} {:>9}", name(i), d.exits, d.injected);
        for r in &reasons {
            line.push_str(&format!(" {:>10}", d.get(r)));
        }
        out.push(line);
    }
    for (i, d) in deltas.iter().enumerate().skip(1) {
        let Some(&n) = blocks.get(i - 1).filter(|&&n| n > 0) else {
            continue;
        };
        let per = |v: u64, idle: u64| fmt_num((v as f64 - idle as f64) / n as f64);
        let mut line = format!(
            "{:<28} {:>9} {:>9}",
            format!("{}, per block", name(i)),
            per(d.exits, idle.exits),
            per(d.injected, idle.injected)
        );
        for r in &reasons {
            line.push_str(&format!(" {:>10}", per(d.get(r), idle.get(r))));
        }
        out.push(line);
    }
    out
}

/// The counters of the device row of kind `kind` in the hypervisor shell's `virtio <vm>`
/// (`SLOT DEVICE BACKEND... STATUS FEATURES REQS ERRS IN OUT DROPPED IRQS NOTIFY/IGN ...`), as
/// `<kind>-notify` (notifications from the driver), `<kind>-reqs` (requests served) and
/// `<kind>-irqs` (interrupts sent).
pub fn parse_virtio_row(line: &str, kind: &str) -> Option<Vec<(String, u64)>> {
    let w: Vec<&str> = line.split_whitespace().collect();
    if w.get(1) != Some(&kind) {
        return None;
    }
    // NOTIFY/IGN is the first `N/M` word (the backend's words come before it).
    let at = w.iter().position(|x| {
        x.split_once('/')
            .is_some_and(|(a, b)| a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok())
    })?;
    let num = |i: Option<usize>| -> Option<u64> { w.get(i?)?.parse().ok() };
    let notifies = w[at].split_once('/')?.0.parse().ok()?;
    Some(vec![
        (format!("{kind}-notify"), notifies),
        (format!("{kind}-reqs"), num(at.checked_sub(6))?),
        (format!("{kind}-irqs"), num(at.checked_sub(1))?),
    ])
}

/// The snapshots of a disk run's log: each `stats` row of vCPU 0 of VM `linux`, with the
/// counters of the `virtio` row of its disk that followed it appended (when every stats row
/// has one).
pub fn snapshots(lines: &[String]) -> Vec<StatsRow> {
    let mut rows: Vec<StatsRow> = lines
        .iter()
        .filter_map(|l| parse_stats_row(l, "linux", 0))
        .collect();
    let devices: Vec<Vec<(String, u64)>> = lines
        .iter()
        .filter_map(|l| parse_virtio_row(l, "blk"))
        .collect();
    if devices.len() == rows.len() {
        for (row, device) in rows.iter_mut().zip(devices) {
            row.reasons.extend(device);
        }
    }
    rows
}

// ---------------------------------------------------------------------------------------------
// The runs
// ---------------------------------------------------------------------------------------------

/// The disk case on `emulator`: the Quercus run (and on QEMU the native reference first).
fn blk_case(emulator: Emulator) -> TestCase {
    let qemu = emulator == Emulator::Qemu;
    TestCase {
        name: if qemu {
            "bench-virtio-blk-qemu"
        } else {
            "bench-virtio-blk-bochs"
        },
        emulator,
        cpus: 2,
        mem_mib: 1024,
        cmdline: "",
        extra_qemu_args: &[],
        extra_bochsrc: "",
        modules: Vec::new(),
        scenario: if qemu {
            "bench-virtio-blk"
        } else {
            "bench-virtio-blk-bochs"
        },
        expect: vec![vm_line("linux", "QUERCUS-BENCH: done$")],
        // Every pause's `stats` and `virtio` answers (QEMU: Bochs's serial port takes no input).
        parallel: if qemu {
            vec![[STATS_ROW, VIRTIO_BLK_ROW]
                .iter()
                .cycle()
                .take(2 * BLK_PAUSES)
                .map(|s| s.to_string())
                .collect()]
        } else {
            Vec::new()
        },
        input: if qemu {
            vec![(PAUSE, PAUSE_INPUT); BLK_PAUSES]
        } else {
            Vec::new()
        },
        post_check: None,
        fail: Fail::Custom(FAIL),
        timeout_secs: if qemu { 900 } else { 3600 },
        native: qemu.then(|| Native {
            kernel: build::LINUX_MODULE,
            cmdline: BLK_CMDLINE,
            modules: vec![(build::LINUX_INITRD_MODULE, "")],
            cpus: 1,
            mem_mib: Some(256),
            devices: vec![NativeDevice::Blk(build::DISK_MODULE)],
            expect: vec!["QUERCUS-BENCH: done$".into()],
            fail: Some(NATIVE_FAIL),
            ..Default::default()
        }),
        native_check: None,
        setup: None,
        dir_check: None,
        solo: true,
    }
}

/// The network case (QEMU only: the Bochs board's two pCPUs hold one VM): server and client,
/// natively first (two QEMUs joined by a socket netdev).
fn net_case() -> TestCase {
    let native = |cmdline, listen, mac, expect: &str| Native {
        kernel: build::LINUX_MODULE,
        cmdline,
        modules: vec![(build::LINUX_INITRD_MODULE, "")],
        cpus: 1,
        mem_mib: Some(128),
        devices: vec![NativeDevice::NetLink {
            link: 0,
            listen,
            mac,
        }],
        expect: vec![expect.into()],
        fail: Some(NATIVE_FAIL),
        ..Default::default()
    };
    TestCase {
        name: "bench-virtio-net-qemu",
        emulator: Emulator::Qemu,
        cpus: 3,
        mem_mib: 1024,
        cmdline: "",
        extra_qemu_args: &[],
        extra_bochsrc: "",
        modules: Vec::new(),
        scenario: "bench-virtio-net",
        expect: vec![vm_line("server", "QUERCUS-BENCH: net rx ")],
        parallel: vec![vec![vm_line("client", "QUERCUS-BENCH: net tx ")]],
        input: Vec::new(),
        post_check: None,
        fail: Fail::Custom(FAIL),
        timeout_secs: 900,
        native: Some(Native {
            companions: vec![native(
                NET_CLIENT_CMDLINE,
                false,
                2,
                "QUERCUS-BENCH: net tx ",
            )],
            ..native(NET_SERVER_CMDLINE, true, 1, "QUERCUS-BENCH: net rx ")
        }),
        native_check: None,
        setup: None,
        dir_check: None,
        solo: true,
    }
}

/// The value of `key=` on a kernel command line.
pub fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// The hypervisor image and boot modules of `scenario`.
pub(crate) fn image(root: &Path, scenario: &str) -> Result<(PathBuf, Vec<BootModule>)> {
    let path = root.join("configs").join(format!("{scenario}.toml"));
    let opts = BuildOptions {
        profile: Profile::Release,
        scenario: Some(path.clone()),
    };
    let modules = build::scenario_modules(root, &path, &opts)?;
    Ok((build::build_hypervisor(&opts)?, modules))
}

/// Reports a run that failed; `true` if it passed.
pub(crate) fn passed(label: &str, outcome: &RunOutcome) -> bool {
    if outcome.matched {
        if let Err(why) = crate::tests::all_modules_loaded(&outcome.lines) {
            println!("{label}: FAIL {why}");
            return false;
        }
        return true;
    }
    println!("{label}: FAIL {}", outcome.reason);
    for line in &outcome.diagnostics {
        println!("  {line}");
    }
    for line in crate::console::tail(&outcome.lines, 15) {
        println!("  | {line}");
    }
    false
}

/// `hv=` of the guest's first benchmark line: `quercus` under Quercus, `none` natively.
fn hv_check(label: &str, lines: &[BenchLine], want: &str) -> bool {
    let hv = lines.iter().find_map(|l| l.get("hv"));
    if hv == Some(want) {
        return true;
    }
    println!(
        "{label}: FAIL the guest found hv={} (expected {want})",
        hv.unwrap_or("nothing")
    );
    false
}

/// `cargo xtask bench virtio`.
pub fn bench_virtio(emulators: &[Emulator], parts: &[Part]) -> Result<ExitCode> {
    let root = workspace_root();
    packages::ensure(&packages::all_requirements())?;
    let mut columns = Vec::new();
    let mut reasons = Vec::new();
    let mut ok = true;
    for &emulator in emulators {
        let qemu = emulator == Emulator::Qemu;
        let name = emulator.name();
        let mut native = Column {
            label: format!("{name} native"),
            emulator: name.into(),
            native: true,
            ..Default::default()
        };
        let mut quercus = Column {
            label: format!("{name} quercus"),
            emulator: name.into(),
            ..Default::default()
        };
        for &part in parts {
            if process::interrupted() {
                return Ok(ExitCode::from(130));
            }
            let case = match part {
                Part::Blk => blk_case(emulator),
                Part::Net if qemu => net_case(),
                Part::Net => {
                    println!(
                        "{name}: no network part: the Bochs board's two pCPUs leave room for one VM"
                    );
                    continue;
                }
            };
            let (kernel, modules) = image(&root, case.scenario)?;
            if case.native.is_some() {
                println!("{}: native run(s) on QEMU's own virtio devices", case.name);
                let (_, runs) = crate::tests::run_native(&case, &modules)?;
                let logs: Vec<Vec<BenchLine>> =
                    runs.iter().map(|(_, o)| bench_lines(&o.lines)).collect();
                for ((run, outcome), lines) in runs.iter().zip(&logs) {
                    ok &= passed(run, outcome) && hv_check(run, lines, "none");
                }
                match part {
                    Part::Blk => native.blk = logs.first().cloned().unwrap_or_default(),
                    Part::Net => {
                        native.server = logs.first().cloned().unwrap_or_default();
                        native.client = logs.get(1).cloned().unwrap_or_default();
                    }
                }
            }
            println!("{}: under Quercus ({})", case.name, case.scenario);
            let outcome = runner::run(&case.run_config(&kernel, &modules)?)?;
            ok &= passed(case.name, &outcome);
            match part {
                Part::Blk => {
                    quercus.blk = bench_lines(&vm_lines(&outcome.lines, "linux"));
                    ok &= hv_check(case.name, &quercus.blk, "quercus");
                    let snapshots = snapshots(&outcome.lines);
                    if qemu && snapshots.len() == BLK_PAUSES {
                        let blocks: Vec<u64> = BLK_STEPS
                            .iter()
                            .map(|(what, bs)| {
                                find_step(&quercus.blk, what, Some(*bs)).map_or(0, |s| s.blocks)
                            })
                            .collect();
                        reasons.push((quercus.label.clone(), reasons_table(&snapshots, &blocks)));
                    } else if qemu {
                        ok = false;
                        println!(
                            "{}: FAIL {} `stats` answers at the guest's pauses, {BLK_PAUSES} expected",
                            case.name,
                            snapshots.len()
                        );
                    }
                }
                Part::Net => {
                    quercus.server = bench_lines(&vm_lines(&outcome.lines, "server"));
                    quercus.client = bench_lines(&vm_lines(&outcome.lines, "client"));
                    ok &= hv_check(case.name, &quercus.server, "quercus")
                        & hv_check(case.name, &quercus.client, "quercus");
                }
            }
        }
        if qemu {
            columns.push(native);
        }
        columns.push(quercus);
    }
    println!();
    println!("The guests' lines:");
    for c in &columns {
        for (side, lines) in [
            ("blk", &c.blk),
            ("server", &c.server),
            ("client", &c.client),
        ] {
            for l in lines.iter() {
                let fields: Vec<String> =
                    l.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let text = [l.what.clone(), fields.join(" ")].join(" ");
                println!("  {:<14} {side:<6} {}", c.label, text.trim());
            }
        }
    }
    println!();
    println!(
        "virtio inside Linux (1 vCPU per VM; MiB/s by the guest's clock; times, exits and TSC ticks net of the measurement's own cost; 1M/64K: 1M direct reads in 64 KiB requests; buffered/ra: 1M buffered reads, 1 MiB readahead in 64 KiB requests; QEMU's TSC is wall clock and noisy, Bochs's counts instructions)"
    );
    for line in virtio_table(&columns) {
        println!("  {line}");
    }
    for c in columns.iter().filter(|c| !c.native) {
        if let Some(s) = batch_summary(c) {
            println!("{s}");
        }
    }
    for (label, table) in &reasons {
        println!();
        println!(
            "{label}: exits by reason between the guest's pauses (the hypervisor shell's `stats linux`; blk-*: its `virtio linux` counters of the disk; each interval holds a {} s pause and console lines)",
            cmdline_value(BLK_CMDLINE, "quercus.bench_pause").unwrap_or("?")
        );
        for line in table {
            println!("  {line}");
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

    fn line(text: &str) -> BenchLine {
        parse_bench_line(text).unwrap_or_else(|| panic!("not a bench line: {text}"))
    }

    #[test]
    fn bench_lines_parse_with_prefixes_and_without_exits() {
        let l = line(
            "[linux] QUERCUS-BENCH: blk read bs=4096 count=1024 bytes=4194304 reqs=1024 ns=5 exits=7 tsc=9",
        );
        assert_eq!(l.what, "blk read");
        assert_eq!(l.num("bs"), Some(4096));
        assert_eq!(l.num("exits"), Some(7));
        assert_eq!(l.get("tsc"), Some("9"));
        assert_eq!(l.num("nothing"), None);
        // Natively: terminal codes before the marker, no exits.
        let n = line("\x1b[2JQUERCUS-BENCH: net rx bytes=10 packets=2 ns=3");
        assert_eq!(n.what, "net rx");
        assert_eq!(n.num("exits"), None);
        let hv = line("QUERCUS-BENCH: hv=quercus cpus=1 clocksource=tsc");
        assert_eq!((hv.what.as_str(), hv.get("hv")), ("", Some("quercus")));
        assert_eq!(line("QUERCUS-BENCH: done").fields, []);
        // A value that is not a number is kept as text, but is no number.
        assert_eq!(line("QUERCUS-BENCH: null ns=x").num("ns"), None);
        // Malformed: a plain word after a field, an empty key; other lines.
        assert_eq!(parse_bench_line("QUERCUS-BENCH: blk bs=1 read"), None);
        assert_eq!(parse_bench_line("QUERCUS-BENCH: blk =1"), None);
        assert_eq!(parse_bench_line("QUERCUS-GUEST: up"), None);
        assert_eq!(bench_lines(&["x", "QUERCUS-BENCH: done", "y"]).len(), 1);
    }

    #[test]
    fn vm_lines_drop_shell_prompts() {
        let log: Vec<String> = [
            "[linux] QUERCUS-BENCH: pause",
            "quercus> [linux] QUERCUS-BENCH: done",
            "quercus> quercus> [linux] a",
            "[other] b",
            "linux  0  5  1  99.0%  io=5",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            vm_lines(&log, "linux"),
            ["QUERCUS-BENCH: pause", "QUERCUS-BENCH: done", "a"]
        );
        let re = regex::Regex::new(&vm_line("linux", "QUERCUS-BENCH: done$")).unwrap();
        assert!(re.is_match(&log[1]));
        assert!(!re.is_match("[other] QUERCUS-BENCH: done"));
        let pause = regex::Regex::new(PAUSE).unwrap();
        assert!(pause.is_match(&log[0]) && pause.is_match("quercus> [linux] QUERCUS-BENCH: pause"));
        assert!(!pause.is_match(&log[1]));
    }

    #[test]
    fn steps_are_found_by_name_and_block_size() {
        let lines = bench_lines(&[
            "QUERCUS-BENCH: blk read bs=1048576 count=16 bytes=16777216 reqs=16 ns=100",
            "QUERCUS-BENCH: blk read bs=4096 count=8 bytes=32768 reqs=8 ns=50 exits=20 tsc=800",
            "QUERCUS-BENCH: net tx bytes=100 packets=4 ns=9",
        ]);
        let big = find_step(&lines, "blk read", Some(1 << 20)).unwrap();
        assert_eq!((big.blocks, big.units, big.exits), (16, 16, None));
        let small = find_step(&lines, "blk read", Some(4096)).unwrap();
        assert_eq!(
            (small.units, small.exits, small.tsc),
            (8, Some(20), Some(800))
        );
        assert_eq!(find_step(&lines, "blk write", Some(4096)), None);
        let tx = find_step(&lines, "net tx", None).unwrap();
        assert_eq!((tx.bytes, tx.blocks, tx.units), (100, 0, 4));
        // A step without its numbers is no step.
        assert_eq!(
            find_step(
                &bench_lines(&["QUERCUS-BENCH: net rx bytes=1 ns=2"]),
                "net rx",
                None
            ),
            None
        );
    }

    #[test]
    fn null_cost_is_the_median_of_the_null_lines() {
        let lines = bench_lines(&[
            "QUERCUS-BENCH: null ns=30 exits=212 tsc=140",
            "QUERCUS-BENCH: null ns=10 exits=185 tsc=116",
            "QUERCUS-BENCH: null ns=20 exits=213 tsc=143",
            "QUERCUS-BENCH: blk read bs=4096 count=1 bytes=4096 reqs=1 ns=1 exits=1 tsc=1",
        ]);
        assert_eq!(
            null_cost(&lines),
            NullCost {
                ns: 20,
                exits: 212,
                tsc: 140
            }
        );
        // Natively: no exits, no ticks.
        let native = bench_lines(&["QUERCUS-BENCH: null ns=7", "QUERCUS-BENCH: null ns=5"]);
        assert_eq!(
            null_cost(&native),
            NullCost {
                ns: 5,
                exits: 0,
                tsc: 0
            }
        );
        assert_eq!(null_cost(&[]), NullCost::default());
        assert_eq!(median_u64(&[]), None);
        assert_eq!(median_u64(&[4, 1, 3, 2]), Some(2));
    }

    #[test]
    fn metrics_subtract_the_null_cost() {
        let null = NullCost {
            ns: 1_000_000,
            exits: 100,
            tsc: 1000,
        };
        // 16 MiB in 0.5 s (plus the null's 1 ms), 32 requests, 16 blocks, 900 exits.
        let step = Step {
            bytes: 16 << 20,
            blocks: 16,
            units: 32,
            irqs: Some(8),
            ns: 501_000_000,
            exits: Some(900),
            tsc: Some(33_000),
        };
        let m = |which| metric(&step, null, which).unwrap();
        assert!((m(Metric::MibPerSec) - 32.0).abs() < 1e-9);
        assert!((m(Metric::UnitsPerSec) - 64.0).abs() < 1e-9);
        assert_eq!(m(Metric::UnitsPerBlock), 2.0);
        assert_eq!(m(Metric::ExitsPerMib), 50.0);
        assert_eq!(m(Metric::ExitsPerBlock), 50.0);
        assert_eq!(m(Metric::ExitsPerUnit), 25.0);
        assert_eq!(m(Metric::TscPerUnit), 1000.0);
        assert_eq!(m(Metric::IrqsPerBlock), 0.5);
        assert_eq!(m(Metric::IrqsPerUnit), 0.25);
        // Natively there are no exits or ticks; nothing divides by zero.
        let native = Step {
            exits: None,
            tsc: None,
            ..step
        };
        assert_eq!(metric(&native, null, Metric::ExitsPerMib), None);
        assert_eq!(metric(&native, null, Metric::TscPerUnit), None);
        // Interrupts are counted natively too: no null cost is taken off.
        assert_eq!(metric(&native, null, Metric::IrqsPerBlock), Some(0.5));
        let empty = Step {
            units: 0,
            blocks: 0,
            ns: 0,
            ..step
        };
        assert_eq!(metric(&empty, null, Metric::MibPerSec), None);
        assert_eq!(metric(&empty, null, Metric::ExitsPerUnit), None);
        assert_eq!(metric(&empty, null, Metric::UnitsPerBlock), None);
        // Fewer exits than the null cost count as none.
        let cheap = Step {
            exits: Some(50),
            ..step
        };
        assert_eq!(metric(&cheap, null, Metric::ExitsPerUnit), Some(0.0));
    }

    fn column(label: &str, native: bool, blk: &[&str]) -> Column {
        Column {
            label: label.into(),
            emulator: label.split(' ').next().unwrap().into(),
            native,
            blk: bench_lines(blk),
            ..Default::default()
        }
    }

    #[test]
    fn table_has_ratio_columns_and_dashes() {
        let native = column(
            "qemu native",
            true,
            &["QUERCUS-BENCH: blk read bs=1048576 count=4 bytes=4194304 reqs=4 ns=100000000"],
        );
        let quercus = column(
            "qemu quercus",
            false,
            &[
                "QUERCUS-BENCH: null ns=0 exits=10 tsc=0",
                "QUERCUS-BENCH: blk read bs=1048576 count=4 bytes=4194304 reqs=8 ns=400000000 exits=50 tsc=0",
            ],
        );
        let bochs = column(
            "bochs quercus",
            false,
            &["QUERCUS-BENCH: blk read bs=1048576 count=4 bytes=4194304 reqs=4 ns=200000000 exits=8 tsc=0"],
        );
        let table = virtio_table(&[native, quercus, bochs]);
        assert_eq!(table.len(), ROWS.len() + 1);
        let head: Vec<&str> = table[0].split_whitespace().collect();
        // `bochs quercus` has no native column of its emulator: no ratio after it.
        assert_eq!(
            head,
            [
                "metric",
                "qemu",
                "native",
                "qemu",
                "quercus",
                "quercus/native",
                "bochs",
                "quercus"
            ]
        );
        let cells = |label: &str| -> Vec<String> {
            let row = table
                .iter()
                .find(|l| l.starts_with(&format!("{label} ")))
                .unwrap_or_else(|| panic!("no row {label}"));
            row[label.len()..]
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        // 4 MiB in 0.1 s, 0.4 s and 0.2 s.
        assert_eq!(
            cells("blk read 1M: MiB/s"),
            ["40.0", "10.0", "0.25", "20.0"]
        );
        assert_eq!(
            cells("blk read 1M: requests per 1M block"),
            ["1.00", "2.00", "2.00", "1.00"]
        );
        // Exits: none natively; (50 - 10) / 4 MiB under Quercus; 8 / 4 on Bochs (no null lines).
        assert_eq!(
            cells("blk read 1M: exits per MiB"),
            ["-", "10.0", "-", "2.00"]
        );
        assert_eq!(
            cells("blk read 1M/64K: exits per 1M block"),
            ["-", "-", "-", "-"]
        );
        assert_eq!(cells("net TCP: MiB/s (receiver)"), ["-", "-", "-", "-"]);
    }

    #[test]
    fn net_rows_read_the_server_and_the_client() {
        let c = Column {
            label: "x".into(),
            server: bench_lines(&[
                "QUERCUS-BENCH: null ns=0 exits=2 tsc=0",
                "QUERCUS-BENCH: net rx bytes=2097152 packets=100 ns=1000000000 exits=302 tsc=0",
            ]),
            client: bench_lines(&[
                "QUERCUS-BENCH: net tx bytes=2097152 packets=50 irqs=25 ns=900000000 exits=100 tsc=0",
            ]),
            ..Default::default()
        };
        let value = |label: &str| c.value(ROWS.iter().find(|r| r.label == label).unwrap());
        assert_eq!(value("net TCP: MiB/s (receiver)"), Some(2.0));
        assert_eq!(value("net receiver: exits per MiB"), Some(150.0));
        assert_eq!(value("net receiver: exits per packet"), Some(3.0));
        assert_eq!(value("net sender: exits per MiB"), Some(50.0));
        assert_eq!(value("net sender: exits per packet"), Some(2.0));
        assert_eq!(value("net sender: virtio irqs per packet"), Some(0.5));
        assert_eq!(value("net receiver: virtio irqs per packet"), None);
    }

    #[test]
    fn rows_are_unique_and_name_existing_steps() {
        for (i, r) in ROWS.iter().enumerate() {
            assert!(
                ROWS[i + 1..].iter().all(|o| o.label != r.label),
                "{}",
                r.label
            );
            if let Source::Blk(what, bs) = r.source {
                assert!(BLK_STEPS.contains(&(what, bs)), "{}", r.label);
            }
        }
    }

    #[test]
    fn numbers_keep_three_digits_or_so() {
        assert_eq!(fmt_num(1234.4), "1234");
        assert_eq!(fmt_num(99.94), "99.9");
        assert_eq!(fmt_num(0.126), "0.13");
        assert_eq!(fmt_num(-12.34), "-12.3");
    }

    #[test]
    fn batch_summary_needs_exit_counts() {
        let steps = [
            "QUERCUS-BENCH: null ns=0 exits=4 tsc=0",
            "QUERCUS-BENCH: blk read bs=1048576 count=2 bytes=2097152 reqs=2 ns=9 exits=10 tsc=0",
            "QUERCUS-BENCH: blk read-ahead bs=1048576 count=2 bytes=2097152 reqs=16 ns=9 exits=12 tsc=0",
            "QUERCUS-BENCH: blk read bs=4096 count=10 bytes=40960 reqs=10 ns=9 exits=34 tsc=0",
        ];
        let s = batch_summary(&column("q", false, &steps)).unwrap();
        assert!(
            s.contains("1M direct reads: 1.00 requests and 3.00 exits per 1M block"),
            "{s}"
        );
        assert!(
            s.contains("readahead in 64K requests: 8.00 requests and 4.00 exits"),
            "{s}"
        );
        assert!(!s.contains("the same in 64K"), "{s}");
        assert!(s.ends_with("3.00 exits per request"), "{s}");
        let native: Vec<String> = steps
            .iter()
            .map(|l| l.split(" exits=").next().unwrap().to_string())
            .collect();
        let native: Vec<&str> = native.iter().map(String::as_str).collect();
        assert_eq!(batch_summary(&column("n", true, &native)), None);
    }

    #[test]
    fn stats_rows_parse_and_subtract() {
        let a = parse_stats_row(
            "linux  0     50593  1800      94.0%   io=42617 mmio=3873 hlt=3",
            "linux",
            0,
        )
        .unwrap();
        assert_eq!(
            (a.exits, a.injected, a.get("mmio"), a.get("msr")),
            (50593, 1800, 3873, 0)
        );
        let b = parse_stats_row(
            "linux  0  52495  1958  73.3%  io=43727 mmio=4206 msr=7 hlt=3",
            "linux",
            0,
        )
        .unwrap();
        let d = a.delta(&b);
        assert_eq!((d.exits, d.injected), (1902, 158));
        assert_eq!(
            d.reasons,
            [
                ("io".into(), 1110),
                ("mmio".into(), 333),
                ("msr".into(), 7),
                ("hlt".into(), 0)
            ]
        );
        assert_eq!(
            parse_stats_row("linux  1  5  1  9.0%  io=5", "linux", 0),
            None
        );
        assert_eq!(
            parse_stats_row("other  0  5  1  9.0%  io=5", "linux", 0),
            None
        );
        assert_eq!(
            parse_stats_row("VM  VCPU  EXITS  INJECTED  GUEST%", "VM", 0),
            None
        );
        assert_eq!(
            parse_stats_row("linux  0  5  1  9.0%  io=x", "linux", 0),
            None
        );
        assert_eq!(
            parse_stats_row("linux  0  0  0  -", "linux", 0),
            Some(StatsRow::default())
        );
    }

    #[test]
    fn virtio_rows_and_snapshots() {
        let row = "00:08.0  blk     disk rw  ACK,DRIVER,FEATURES_OK,DRIVER_OK  0x130000244  1234  0     5000  6000  0  321  400/2  0  -";
        assert_eq!(
            parse_virtio_row(row, "blk"),
            Some(vec![
                ("blk-notify".into(), 400),
                ("blk-reqs".into(), 1234),
                ("blk-irqs".into(), 321)
            ])
        );
        assert_eq!(parse_virtio_row(row, "net"), None);
        assert_eq!(parse_virtio_row("SLOT DEVICE BACKEND STATUS", "blk"), None);
        assert_eq!(parse_virtio_row("00:08.0 blk disk rw", "blk"), None);
        let log: Vec<String> = [
            "linux  0  10  1  90.0%  io=10",
            row,
            "linux  0  20  2  90.0%  io=20",
            &row.replace("400/2", "401/2"),
        ]
        .map(String::from)
        .to_vec();
        let snaps = snapshots(&log);
        assert_eq!(snaps.len(), 2);
        assert_eq!((snaps[1].get("io"), snaps[1].get("blk-notify")), (20, 401));
        // Without a device row for every stats row: the stats alone.
        let snaps = snapshots(&log[..3]);
        assert_eq!(snaps.len(), 2);
        assert_eq!(snaps[0].get("blk-notify"), 0);
        let input = regex::Regex::new(VIRTIO_BLK_ROW).unwrap();
        assert!(input.is_match(row) && !input.is_match(&log[0]));
    }

    #[test]
    fn reasons_table_per_interval_and_per_block() {
        let snap = |exits, injected, mmio| StatsRow {
            exits,
            injected,
            reasons: vec![("mmio".into(), mmio), ("hlt".into(), 0)],
        };
        // Idle: 10 exits, 2 injected, 4 mmio; the first step: 10 + 40 exits over 4 blocks.
        let snapshots = [snap(100, 10, 50), snap(110, 12, 54), snap(160, 22, 78)];
        let table = reasons_table(&snapshots, &[4]);
        let cols =
            |i: usize| -> Vec<String> { table[i].split_whitespace().map(str::to_string).collect() };
        // A reason that never moved gets no column.
        assert_eq!(cols(0), ["interval", "exits", "injected", "mmio"]);
        assert_eq!(cols(1), ["pause", "alone", "10", "2", "4"]);
        assert_eq!(cols(2), ["blk", "read", "1M", "50", "10", "24"]);
        assert_eq!(
            cols(3),
            ["blk", "read", "1M,", "per", "block", "10.0", "2.00", "5.00"]
        );
        assert_eq!(table.len(), 4);
        assert!(reasons_table(&snapshots[..1], &[]).is_empty());
    }

    #[test]
    fn cmdline_values() {
        assert_eq!(cmdline_value(BLK_CMDLINE, "quercus.bench_pause"), Some("2"));
        assert_eq!(cmdline_value("a=1 ab=2", "a"), Some("1"));
        assert_eq!(cmdline_value("ab=2", "a"), None);
    }

    /// The native references boot what the QEMU scenarios give their VMs.
    #[test]
    fn scenarios_match_the_native_runs() {
        let read = |name: &str| {
            std::fs::read_to_string(workspace_root().join(format!("configs/{name}.toml"))).unwrap()
        };
        let blk = read("bench-virtio-blk");
        assert!(blk.contains(&format!("cmdline = \"{BLK_CMDLINE}\"")));
        assert!(blk.contains("memory_mib = 256"));
        let net = read("bench-virtio-net");
        for cmdline in [NET_SERVER_CMDLINE, NET_CLIENT_CMDLINE] {
            assert!(
                net.contains(&format!("cmdline = \"{cmdline}\"")),
                "{cmdline}"
            );
        }
        assert_eq!(net.matches("memory_mib = 128").count(), 2);
        assert_eq!(
            blk_case(Emulator::Qemu).native.unwrap().cmdline,
            BLK_CMDLINE
        );
        let native = net_case().native.unwrap();
        let cmdlines: Vec<&str> = native.runs().iter().map(|r| r.cmdline).collect();
        assert_eq!(cmdlines, [NET_SERVER_CMDLINE, NET_CLIENT_CMDLINE]);
        // Bochs: no native run; the same guest mode.
        assert!(blk_case(Emulator::Bochs).native.is_none());
        assert!(read("bench-virtio-blk-bochs").contains("quercus.test=bench-blk "));
        // The guest pauses as often as the disk run expects.
        assert_eq!(
            crate::linux_image::INIT_SCRIPT
                .lines()
                .filter(|l| l.trim() == "bench_pause")
                .count(),
            BLK_PAUSES
        );
    }
}
