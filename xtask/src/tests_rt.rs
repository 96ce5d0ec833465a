//! The `rt-*` emulator cases: the test guest's `rt-latency` test (timer-interrupt latency, see
//! guests/test-guest/src/tests/rt.rs) natively on the emulator first, then in a real-time VM
//! (`vm_type = "rt"`) under Quercus, its figures checked against the native run's.

use std::path::Path;

use crate::runner::{self, Emulator};
use crate::tests::{boot, Fail, Native, PostCheck, TestCase, GUEST_FAIL};

/// The figures of one `RT latency` line (TSC ticks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtFigures {
    pub samples: u64,
    pub min: u64,
    pub mean: u64,
    pub p999: u64,
    pub max: u64,
    /// VM exits over the measurement (`None` natively).
    pub exits: Option<u64>,
    /// Timers whose deadline passed before the guest halted for them (0 if not printed).
    pub overruns: u64,
}

impl RtFigures {
    /// Exits per timer interrupt, if known.
    pub fn exits_per_sample(&self) -> Option<f64> {
        self.exits.map(|e| e as f64 / self.samples.max(1) as f64)
    }
}

/// The figures of the first `RT latency ...` line in `lines` (any prefix before `RT`).
pub fn parse_latency(lines: &[String]) -> Option<RtFigures> {
    let line = lines.iter().find_map(|l| {
        let at = l.find("RT latency ")?;
        Some(&l[at + "RT latency ".len()..])
    })?;
    let field = |key: &str| -> Option<&str> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    };
    let num = |key: &str| field(key)?.parse::<u64>().ok();
    let exits = match field("exits")? {
        "-" => None,
        n => Some(n.parse().ok()?),
    };
    Some(RtFigures {
        samples: num("samples")?,
        min: num("min")?,
        mean: num("mean")?,
        p999: num("p99.9")?,
        max: num("max")?,
        exits,
        overruns: num("overruns").unwrap_or(0),
    })
}

/// The histogram of `lines`: `(lo, hi, count)` per `RT hist` line, in order.
pub fn parse_histogram(lines: &[String]) -> Vec<(u64, u64, u64)> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = &l[l.find("RT hist ")? + "RT hist ".len()..];
            let mut it = rest
                .split_whitespace()
                .map(|w| w.split_once('=').and_then(|(_, v)| v.parse::<u64>().ok()));
            Some((it.next()??, it.next()??, it.next()??))
        })
        .collect()
}

/// How far an RT VM's figures may be from the native run's on one emulator.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// The 99.9th percentile and the maximum may be at most `percent`% of native's value plus
    /// `extra` ticks (the virtual LAPIC's path: the exits of the timer and its EOI, which a
    /// passthrough LAPIC does not take).
    pub percent: u64,
    pub extra: u64,
    /// Whether the latency is bounded at all (the exits always are).
    pub latency: bool,
    /// At most this many VM exits per timer interrupt over the measurement (the timer's own:
    /// under the virtual LAPIC the TSC-deadline write, the HLT and the EOI).
    pub exits_per_timer: f64,
    /// Spare exits over the whole measurement (under the virtual LAPIC), plus
    /// `spare_per_mille` of the samples.
    pub spare: u64,
    pub spare_per_mille: u64,
}

/// Checks an RT VM's figures against the native run's.
pub fn check_against_native(
    native: &RtFigures,
    vm: &RtFigures,
    bound: &Bound,
) -> Result<(), String> {
    if vm.samples != native.samples {
        return Err(format!(
            "the RT VM took {} samples, the native run {}",
            vm.samples, native.samples
        ));
    }
    let latencies = [
        ("99.9th percentile", native.p999, vm.p999),
        ("maximum", native.max, vm.max),
    ];
    for (what, n, v) in latencies.into_iter().filter(|_| bound.latency) {
        let limit = (n.saturating_mul(bound.percent) / 100).saturating_add(bound.extra);
        if v > limit {
            return Err(format!(
                "{what} latency {v} TSC ticks in the RT VM, native {n}: more than {}% of native + {} = {limit}",
                bound.percent, bound.extra
            ));
        }
    }
    let Some(exits) = vm.exits else {
        return Err("the RT VM's line has no exit count (not under Quercus?)".into());
    };
    // Plus the spares and, under the virtual LAPIC, two per overrun: a timer already due before
    // the guest halted exits as a host interrupt and then for the interrupt window instead of
    // on the HLT. With LAPIC passthrough: none at all.
    let most = if bound.exits_per_timer == 0.0 {
        0
    } else {
        (vm.samples as f64 * bound.exits_per_timer) as u64
            + bound.spare
            + vm.samples * bound.spare_per_mille / 1000
            + 2 * vm.overruns
    };
    if exits > most {
        return Err(format!(
            "{exits} VM exits over {} timer interrupts ({:.3} each; at most {} expected: the \
             deadline write, the HLT, the EOI; {} overruns allowed {} more)",
            vm.samples,
            vm.exits_per_sample().unwrap_or(0.0),
            bound.exits_per_timer,
            vm.overruns,
            2 * vm.overruns
        ));
    }
    Ok(())
}

/// The rt guest's hostile probes (before it measures) were refused and counted by the
/// hypervisor: the class-of-service write, the five IPIs naming nobody and, with LAPIC
/// passthrough, the write leaving x2APIC mode.
fn hostile_refused(lines: &[String], passthrough: bool) -> Result<(), String> {
    let mut needed = vec![
        "[rt0] RT hostile probes refused",
        "vm rt0: vCPU 0: write to a cache-allocation MSR refused (#GP); 1 so far",
        "vm rt0: vCPU 0: IPI naming no vCPU of this VM dropped; 4 so far",
    ];
    if passthrough {
        needed.push("vm rt0: vCPU 0: IA32_APIC_BASE write refused (#GP): a passed-through LAPIC stays in x2APIC mode; 1 so far");
    }
    match needed
        .iter()
        .find(|n| !lines.iter().any(|l| l.contains(**n)))
    {
        Some(missing) => Err(format!("missing console line: {missing}")),
        None => Ok(()),
    }
}

/// The native run's console log of case `case` in this process's run directory.
fn native_log(case: &str) -> Result<Vec<String>, String> {
    let path = runner::run_dir(&format!("{case}-native")).join("console.log");
    read_lines(&path)
}

fn read_lines(path: &Path) -> Result<Vec<String>, String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_string).collect())
        .map_err(|e| format!("reading {}: {e}", path.display()))
}

/// The post-check of case `case`: the Quercus run's `RT latency` line against the native run's.
fn compare(case: &str, lines: &[String], bound: &Bound) -> Result<(), String> {
    hostile_refused(lines, bound.exits_per_timer == 0.0)?;
    let vm = parse_latency(lines).ok_or("no `RT latency` line from the RT VM")?;
    let counted: u64 = parse_histogram(lines).iter().map(|b| b.2).sum();
    if counted != vm.samples {
        return Err(format!(
            "the RT VM's histogram holds {counted} samples, its latency line {}",
            vm.samples
        ));
    }
    let native_lines = native_log(case)?;
    let native =
        parse_latency(&native_lines).ok_or("no `RT latency` line in the native run's log")?;
    check_against_native(&native, &vm, bound)
}

/// The bound on Bochs (deterministic ticks; see README "Real-time VMs"): native plus 1,500
/// ticks. Measured: VT-x 1,045 in the VM against 36 natively, AMD-V 980 against 59 (the virtual
/// LAPIC's path: HLT exit, the host timer, the injection, the entry); a path 50% longer fails.
pub const BOCHS_BOUND: Bound = Bound {
    latency: true,
    percent: 100,
    extra: 1_500,
    exits_per_timer: 3.0,
    spare: 1,
    spare_per_mille: 0,
};

/// The bound on Bochs VT-x, where the rt VM's LAPIC is passed through (the issue's goal): the
/// 99.9th percentile and the maximum within 1.2x native plus the tick granularity Bochs
/// delivers interrupts at, and not one VM exit over the measurement.
pub const BOCHS_PASSTHROUGH_BOUND: Bound = Bound {
    latency: true,
    percent: 120,
    extra: 0,
    exits_per_timer: 0.0,
    spare: 0,
    spare_per_mille: 0,
};

/// The bound on QEMU (wall-clock TSC at the host's rate, noisy: loose): 4x native plus
/// 20,000,000 ticks (about 10 ms at 2.1 GHz). Measured on this shared 2-core machine: max 5.1 M
/// in the VM against 9.1 M natively in one run, 9.3 M against 2.1 M in another (QEMU's own
/// timers are that late under host load); what it catches is a timer late by whole periods.
/// The spares: QEMU's host scheduling can also fire a timer between its arming and the guest's
/// HLT without an overrun (a host-interrupt exit and an interrupt-window exit instead of the
/// HLT's): 2% of the timers (seen with the Bochs lane beside it: 9,004 exits for 3,000 timers
/// and 1 overrun; 9,023 and 3, with 19 host-interrupt exits).
pub const QEMU_BOUND: Bound = Bound {
    latency: true,
    percent: 400,
    extra: 20_000_000,
    exits_per_timer: 3.0,
    spare: 1,
    spare_per_mille: 20,
};

/// The boot lines that say how rt0's LAPIC is provided on `emulator`: passed through on Bochs
/// VT-x (`tigerlake` has an x2APIC and the TSC-deadline timer) once the guest switches to x2APIC
/// mode, virtual elsewhere (QEMU's TCG and Bochs `ryzen` have no x2APIC).
fn mode_lines(emulator: Emulator) -> Vec<String> {
    match emulator {
        Emulator::Bochs => vec![
            r"vm rt0: real-time VM: LAPIC passthrough once it switches to x2APIC mode".into(),
            r"vm rt0: vCPU 0: x2APIC mode: LAPIC passthrough on pCPU 1 ".into(),
        ],
        _ => vec![r"vm rt0: real-time VM: keeps a virtual LAPIC \(the CPU has no x2APIC\)".into()],
    }
}

/// The scenario's command line for the test guest (also the native run's).
pub const QEMU_CMDLINE: &str = "rt-latency samples=1000 period=2000000";
pub const BOCHS_CMDLINE: &str = "rt-latency samples=2000 period=100000";

/// What the test guest prints in the `rt-latency` mode, each line after `prefix` (`\[rt0\] `
/// under Quercus, where the shell's prompt may precede a line: then unanchored).
fn rt_lines(prefix: &str, quercus: bool) -> Vec<String> {
    let (exits, start) = if quercus { (r"\d+", "") } else { ("-", "^") };
    vec![
        format!(
            r"{start}{prefix}RT config timer=(tsc-deadline|oneshot) apic=(x2apic|xapic) wait=hlt "
        ),
        format!(
            r"{start}{prefix}RT latency samples=\d+ min=\d+ mean=\d+ p99\.9=\d+ max=\d+ exits={exits} overruns=\d+$"
        ),
        format!(r"{start}{prefix}TEST rt-latency PASS$"),
        format!(r"{start}{prefix}TESTS DONE 1 passed 0 failed$"),
    ]
}

/// `rt-latency-*` on `emulator`: natively, then in VM `rt0` of the `rt` (QEMU) or `rt-bochs`
/// scenario, whose figures must stay within `bound` of the native ones. The case name is passed
/// to the post-check through a non-capturing closure per case (the table holds `fn` pointers).
fn latency(name: &'static str, emulator: Emulator) -> TestCase {
    let qemu = emulator == Emulator::Qemu;
    let mut expect = mode_lines(emulator);
    expect.extend(rt_lines(r"\[rt0\] ", true));
    expect.push(r"vm rt0: stopped: .*powered off by the guest".into());
    let post_check: crate::tests::PostCheck = match emulator {
        Emulator::Qemu => |l| compare("rt-latency-qemu-svm", l, &QEMU_BOUND),
        Emulator::BochsAmd => |l| compare("rt-latency-bochs-svm", l, &BOCHS_BOUND),
        _ => |l| compare("rt-latency-bochs-vmx", l, &BOCHS_PASSTHROUGH_BOUND),
    };
    TestCase {
        scenario: if qemu { "rt" } else { "rt-bochs" },
        expect,
        post_check: Some(post_check),
        fail: Fail::Custom(GUEST_FAIL),
        timeout_secs: if qemu { 90 } else { 400 },
        // QEMU's latency is wall clock and bounded: alone on the cores, after the two lanes.
        solo: qemu,
        native: Some(Native {
            kernel: "test-guest",
            cmdline: if qemu { QEMU_CMDLINE } else { BOCHS_CMDLINE },
            cpus: 1,
            expect: rt_lines("", false),
            ..Default::default()
        }),
        ..boot(name, emulator, 2)
    }
}

/// The shell and the lifecycle against a running real-time VM (`rt-shell` scenario): commands
/// that would run on its pCPU are refused and say why, a stop reaches it by NMI while its guest
/// spins without exits, it starts and resets again, and the standard VM beside it keeps running.
/// The host's NMI path is what this proves: before it, an NMI on a host pCPU was fatal.
fn shell(name: &'static str, emulator: Emulator) -> TestCase {
    TestCase {
        scenario: "rt-shell",
        cpus: 3,
        input: vec![
            (r"\[rt0\] heartbeat 2 ", "vcpu_dumpreg rt0 0\r"),
            (r"vm_pause it first", "rdmsr 1 0x1b\r"),
            (r"does not run code there", "vm_stop rt0\r"),
            (r"^rt0: stopped$", "vm_start rt0\r"),
            (r"\[rt0\] heartbeat 1 ", "vm_reset rt0\r"),
        ],
        // The shell's prompt may precede a VM's line: rt0's lines are not anchored.
        expect: [
            mode_lines(emulator),
            vec![r"\[rt0\] heartbeat 2 ".into()],
        ]
        .concat()
        .into_iter()
        .chain([
            r"^vcpu_dumpreg: rt0 is a running real-time VM: this would interrupt its pCPU 1; vm_pause it first$".into(),
            r"^rdmsr: pCPU 1 belongs to a real-time VM; the shell does not run code there$".into(),
            r"vm rt0: stopped: vCPU 0: stopped by the operator".into(),
            r"^rt0: stopped$".into(),
            r"\[rt0\] test-guest: vendor=".into(),
            r"\[rt0\] heartbeat 1 ".into(),
            r"\[rt0\] test-guest: vendor=".into(),
            r"\[rt0\] heartbeat 2 ".into(),
            r"^\[vm2\] tick".into(),
        ])
        .collect(),
        // With LAPIC passthrough: each of the three boots (first, after the stop, after the
        // reset) passes the LAPIC through, and the stop and the reset take it back.
        post_check: (emulator == Emulator::Bochs).then_some(passthrough_lifecycle as PostCheck),
        fail: Fail::Custom(GUEST_FAIL),
        timeout_secs: if emulator == Emulator::Qemu { 120 } else { 600 },
        ..boot(name, emulator, 3)
    }
}

/// The rt-shell case's check on Bochs VT-x: the LAPIC was passed through at each of rt0's three
/// boots and given back to the host at the stop and the reset.
fn passthrough_lifecycle(lines: &[String]) -> Result<(), String> {
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    let on = count("vm rt0: vCPU 0: x2APIC mode: LAPIC passthrough on pCPU 1 ");
    let off = count("vm rt0: vCPU 0: LAPIC passthrough ended; pCPU 1 has its LAPIC back");
    if on != 3 || off < 2 {
        return Err(format!(
            "rt0's LAPIC was passed through {on} times (3 expected: boot, start, reset) and given back {off} times (at least 2: stop, reset)"
        ));
    }
    Ok(())
}

/// Cache allocation asked for on a board file that claims CAT this CPU lacks (`rt-cat-refused`
/// on `qemu-cat-claim`): the hypervisor reads CPUID at boot, refuses the masked VM with the
/// reason, and the VM without a mask starts and runs.
fn cat_refused() -> TestCase {
    TestCase {
        scenario: "rt-cat-refused",
        cpus: 3,
        expect: vec![
            r"vm rt0: not started: its cache_mask asks for cache allocation, and (the CPU has no CPUID leaf 0x10|CPUID\.\(.*is clear).*: refused".into(),
            r"^\[vm2\] tick 2$".into(),
        ],
        post_check: Some(|lines| match lines.iter().find(|l| l.starts_with("[rt0]")) {
            Some(l) => Err(format!("the refused VM ran: {l}")),
            None => Ok(()),
        }),
        fail: Fail::Custom(GUEST_FAIL),
        ..boot("rt-cat-refused-qemu-svm", Emulator::Qemu, 3)
    }
}

/// The load the Linux VM runs beside the rt VM: random data into /tmp and its checksum, in a
/// loop (CPU, memory, the page cache), then a marker line.
const LINUX_LOAD: &str = "(while :; do dd if=/dev/urandom of=/tmp/x bs=64k count=32 2>/dev/null; \
     md5sum /tmp/x; cat /proc/interrupts; done) >/dev/null 2>&1 & echo load-$((6*7))\r";

/// The interference test (`rt-interference` scenario, QEMU): Linux starts a CPU, memory and /tmp
/// load, then the rt VM is told to measure while the operator runs `vm_list`, `stats` and `mem`.
/// Its figures must stay within the QEMU bound of the native run's, and its vCPU must take no exit
/// but its timer's own (3 per timer): nothing of the load or the shell reached its pCPU.
fn interference(name: &'static str, emulator: Emulator) -> TestCase {
    let qemu = emulator == Emulator::Qemu;
    TestCase {
        scenario: if qemu {
            "rt-interference"
        } else {
            "rt-interference-bochs"
        },
        cpus: 3,
        input: vec![
            (r"^\[linux\] QUERCUS-GUEST: shell$", "vm_console linux\r"),
            (r"attached to linux", LINUX_LOAD),
            (r"^load-42", "\x01d"),
            (r"^\[detached from linux\]$", "vm_console rt0\r"),
            (r"attached to rt0", "go\r"),
            (r"^RT measuring$", "\x01d"),
            (r"^\[detached from rt0\]$", "vm_list\r"),
            (r"^1\s+linux\s+running", "stats\r"),
            (r"^VM\s+VCPU\s+EXITS", "mem\r"),
            (r"^POOL\s+USED", "stats rt0\r"),
        ],
        expect: vec![
            r"\[rt0\] RT waiting for go$".into(),
            r"^\[linux\] QUERCUS-GUEST: shell$".into(),
            r"^load-42".into(),
            r"^RT measuring$".into(),
            r"^POOL\s+USED".into(),
            // The shell's prompt may precede the VM's line.
            r"\[rt0\] RT latency samples=3000 ".into(),
            r"\[rt0\] TESTS DONE 1 passed 0 failed$".into(),
        ],
        post_check: Some(match emulator {
            Emulator::Qemu => |l| compare("rt-interference-qemu-svm", l, &QEMU_INTERFERENCE_BOUND),
            Emulator::BochsAmd => |l| compare("rt-interference-bochs-svm", l, &BOCHS_BOUND),
            _ => |l| compare("rt-interference-bochs-vmx", l, &BOCHS_PASSTHROUGH_BOUND),
        }),
        fail: Fail::Custom(GUEST_FAIL),
        timeout_secs: if qemu { 300 } else { 1200 },
        native: Some(Native {
            kernel: "test-guest",
            cmdline: if qemu {
                "rt-latency samples=3000 period=2000000"
            } else {
                "rt-latency samples=3000 period=100000"
            },
            cpus: 1,
            expect: rt_lines("", false),
            ..Default::default()
        }),
        ..boot(name, emulator, 3)
    }
}

/// The interference case's bound on QEMU: exits only. QEMU runs each emulated CPU on a host thread,
/// and this machine's two cores are shared by the rt VM's thread, the Linux VM's busy one and
/// QEMU's own: the rt vCPU's thread is descheduled for up to hundreds of milliseconds (seen: max
/// 1,067,098,118 ticks), which is the emulator's, not the hypervisor's. What the hypervisor controls
/// is checked exactly: no exit but the timer's own reached the rt vCPU.
pub const QEMU_INTERFERENCE_BOUND: Bound = Bound {
    latency: false,
    ..QEMU_BOUND
};

/// The `rt-*` cases.
pub fn cases() -> Vec<TestCase> {
    vec![
        shell("rt-shell-qemu-svm", Emulator::Qemu),
        shell("rt-shell-bochs-vmx", Emulator::Bochs),
        shell("rt-shell-bochs-svm", Emulator::BochsAmd),
        cat_refused(),
        interference("rt-interference-qemu-svm", Emulator::Qemu),
        interference("rt-interference-bochs-vmx", Emulator::Bochs),
        interference("rt-interference-bochs-svm", Emulator::BochsAmd),
        latency("rt-latency-qemu-svm", Emulator::Qemu),
        latency("rt-latency-bochs-vmx", Emulator::Bochs),
        latency("rt-latency-bochs-svm", Emulator::BochsAmd),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_latency_line_and_histogram_parse() {
        let l = lines(&[
            "[rt0] RT config timer=tsc-deadline apic=x2apic wait=hlt samples=4 period=100000",
            "[rt0] RT latency samples=4 min=10 mean=12 p99.9=20 max=20 exits=8",
            "[rt0] RT hist lo=8 hi=16 count=3",
            "[rt0] RT hist lo=16 hi=32 count=1",
        ]);
        let f = parse_latency(&l).unwrap();
        assert_eq!(
            f,
            RtFigures {
                samples: 4,
                min: 10,
                mean: 12,
                p999: 20,
                max: 20,
                exits: Some(8),
                overruns: 0,
            }
        );
        assert_eq!(f.exits_per_sample(), Some(2.0));
        assert_eq!(parse_histogram(&l), vec![(8, 16, 3), (16, 32, 1)]);
        let native = parse_latency(&lines(&[
            "RT latency samples=4 min=1 mean=2 p99.9=3 max=3 exits=-",
        ]))
        .unwrap();
        assert_eq!(native.exits, None);
        assert!(parse_latency(&lines(&["RT latency samples=4 min=x"])).is_none());
        let late = parse_latency(&lines(&[
            "[rt0] RT latency samples=4 min=1 mean=2 p99.9=3 max=3 exits=14 overruns=1",
        ]))
        .unwrap();
        assert_eq!((late.exits, late.overruns), (Some(14), 1));
    }

    #[test]
    fn with_lapic_passthrough_one_exit_or_more_than_1_2x_native_fails() {
        let fig = |max: u64, exits: Option<u64>| RtFigures {
            samples: 100,
            min: 30,
            mean: 30,
            p999: 30,
            max,
            exits,
            overruns: 0,
        };
        let native = fig(42, None);
        let b = &BOCHS_PASSTHROUGH_BOUND;
        assert_eq!(check_against_native(&native, &fig(30, Some(0)), b), Ok(()));
        assert_eq!(check_against_native(&native, &fig(50, Some(0)), b), Ok(()));
        let late = check_against_native(&native, &fig(51, Some(0)), b).unwrap_err();
        assert!(late.contains("maximum latency 51"), "{late}");
        let exited = check_against_native(&native, &fig(30, Some(1)), b).unwrap_err();
        assert!(exited.contains("1 VM exits"), "{exited}");
    }

    #[test]
    fn the_hostile_probes_must_be_refused_and_counted() {
        let mut l = lines(&[
            "[rt0] RT hostile probes refused",
            "[ 0.4] cpu1 WARN  vm rt0: vCPU 0: write to a cache-allocation MSR refused (#GP); 1 so far",
            "[ 0.5] cpu1 WARN  vm rt0: vCPU 0: IPI naming no vCPU of this VM dropped; 4 so far",
        ]);
        assert_eq!(hostile_refused(&l, false), Ok(()));
        assert!(hostile_refused(&l, true)
            .unwrap_err()
            .contains("IA32_APIC_BASE"));
        l.remove(2);
        assert!(hostile_refused(&l, false)
            .unwrap_err()
            .contains("IPI naming"));
    }

    #[test]
    fn the_bound_passes_and_fails() {
        let native = RtFigures {
            samples: 100,
            min: 50,
            mean: 60,
            p999: 90,
            max: 100,
            exits: None,
            overruns: 0,
        };
        let bound = Bound {
            latency: true,
            percent: 100,
            extra: 1000,
            exits_per_timer: 3.0,
            spare: 1,
            spare_per_mille: 0,
        };
        let good = RtFigures {
            max: 1100,
            p999: 1090,
            exits: Some(300),
            ..native
        };
        assert!(check_against_native(&native, &good, &bound).is_ok());
        let slow = RtFigures { max: 1101, ..good };
        assert!(check_against_native(&native, &slow, &bound)
            .unwrap_err()
            .contains("maximum"));
        let chatty = RtFigures {
            exits: Some(303),
            ..good
        };
        assert!(check_against_native(&native, &chatty, &bound)
            .unwrap_err()
            .contains("VM exits over 100 timer interrupts"));
        let unknown = RtFigures {
            exits: None,
            ..good
        };
        assert!(check_against_native(&native, &unknown, &bound).is_err());
        let fewer = RtFigures {
            samples: 99,
            ..good
        };
        assert!(check_against_native(&native, &fewer, &bound).is_err());
    }

    #[test]
    fn every_case_has_a_native_baseline_and_a_check() {
        for c in cases() {
            assert!(c.name.starts_with("rt-"), "{}", c.name);
            if !c.name.starts_with("rt-latency-") {
                continue;
            }
            let n = c.native.as_ref().unwrap();
            assert!(n.cmdline.starts_with("rt-latency"));
            assert!(c.post_check.is_some());
        }
    }

    #[test]
    fn the_scenarios_give_the_native_command_line() {
        let root = crate::workspace_root();
        for (file, cmdline) in [("rt.toml", QEMU_CMDLINE), ("rt-bochs.toml", BOCHS_CMDLINE)] {
            let text = std::fs::read_to_string(root.join("configs").join(file)).unwrap();
            assert!(
                text.contains(&format!("cmdline = \"{cmdline}\"")),
                "{file} must give the test guest {cmdline:?}"
            );
            assert!(text.contains("vm_type = \"rt\""), "{file}");
        }
    }
}
