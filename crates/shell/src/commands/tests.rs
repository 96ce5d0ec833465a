//! Scripted sessions against the mock backend: every command's output, and every kind of bad
//! input answered with one line of error.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use log::LevelFilter;

use super::*;
use crate::backend::VirtioBackend;
use crate::console::Port;
use crate::mock::MockBackend;

/// Runs `line`; the output (CR LF as LF) or the error line.
fn run(b: &mut MockBackend, line: &str) -> Result<String, String> {
    let mut logs = VmLogs::new();
    run_with(b, &mut logs, line)
}

fn run_with(b: &mut MockBackend, logs: &mut VmLogs, line: &str) -> Result<String, String> {
    let mut out = Output::new();
    let r = execute(b, logs, line, &mut out);
    let text = String::from_utf8_lossy(out.as_bytes()).replace("\r\n", "\n");
    match r {
        Ok(_) => Ok(text),
        Err(e) => {
            assert!(out.is_empty(), "{line:?} failed after printing {text:?}");
            let msg = e.to_string();
            assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg:?}");
            Err(msg)
        }
    }
}

/// Runs `line`, which must fail; the error line.
fn fails(b: &mut MockBackend, line: &str) -> String {
    match run(b, line) {
        Ok(out) => panic!("{line:?} succeeded: {out:?}"),
        Err(e) => e,
    }
}

/// Runs `line`, which must succeed; its output.
fn ok(b: &mut MockBackend, line: &str) -> String {
    run(b, line).unwrap_or_else(|e| panic!("{line:?} failed: {e}"))
}

/// A command line and what to do to a fresh mock before it.
type Script = (&'static str, fn(&mut MockBackend));

/// A line for each command that succeeds on a fresh mock (after `prepare`).
fn valid_lines() -> Vec<Script> {
    fn nothing(_: &mut MockBackend) {}
    fn pause_linux(b: &mut MockBackend) {
        b.vms[1].state = VmState::Paused;
    }
    fn stop_linux(b: &mut MockBackend) {
        b.vms[1].state = VmState::Stopped;
    }
    alloc::vec![
        ("help vm_list", nothing),
        ("version", nothing),
        ("vm_list", nothing),
        ("vcpu_list linux", nothing),
        ("vcpu_dumpreg linux 1", pause_linux),
        ("vcpu_break_entry linux 1", nothing),
        ("dump_guest_mem linux 0x100 32", nothing),
        ("dump_host_mem 0x100000 16", nothing),
        ("vm_console linux", nothing),
        ("vm_log linux", nothing),
        ("vm_start linux", stop_linux),
        ("vm_stop linux", nothing),
        ("vm_pause linux", nothing),
        ("vm_resume linux", pause_linux),
        ("vm_reset linux", nothing),
        ("stats linux", nothing),
        ("int", nothing),
        ("mem", nothing),
        ("vioapic linux", nothing),
        ("dump_ioapic", nothing),
        ("virtio linux", nothing),
        ("switches", nothing),
        ("shm", nothing),
        ("vuart", nothing),
        ("pci", nothing),
        ("iommu", nothing),
        ("loglevel warn", nothing),
        ("cpuid 2 0x7 0", nothing),
        ("rdmsr 2 0x1b", nothing),
        ("wrmsr 2 0x10 0", nothing),
        ("reboot", nothing),
    ]
}

#[test]
fn the_valid_lines_cover_every_command() {
    let lines = valid_lines();
    for cmd in COMMANDS {
        assert!(
            lines
                .iter()
                .any(|(l, _)| l.split(' ').next() == Some(cmd.name)),
            "{} has no valid line",
            cmd.name
        );
    }
    for (line, prepare) in lines {
        let mut b = MockBackend::new();
        prepare(&mut b);
        ok(&mut b, line);
    }
}

#[test]
fn vcpu_break_entry_reaches_the_backend_and_checks_its_arguments() {
    let mut b = MockBackend::new();
    assert_eq!(
        ok(&mut b, "vcpu_break_entry linux 1"),
        "linux vCPU 1: its next VM entry will fail (fault injection)\n"
    );
    assert_eq!(b.calls.last().map(String::as_str), Some("break_entry 1 1"));
    let calls = b.calls.len();
    fails(&mut b, "vcpu_break_entry linux 9");
    fails(&mut b, "vcpu_break_entry nosuchvm 0");
    fails(&mut b, "vcpu_break_entry linux");
    assert_eq!(b.calls.len(), calls, "a bad line reaches no backend");
}

#[test]
fn help_lists_every_command_with_its_usage() {
    let mut b = MockBackend::new();
    let text = ok(&mut b, "help");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("COMMAND"));
    for cmd in COMMANDS {
        assert!(
            lines.iter().any(|l| l.starts_with(&cmd.usage())),
            "help misses {}",
            cmd.usage()
        );
    }
    assert!(text.contains("stats [vm]"));
    assert!(text.contains("(also: vmexit)"));
    assert!(text.contains("dump_guest_mem <vm> <gpa> [len]"));
    assert_eq!(lines.len(), COMMANDS.len() + 2);
    // Aliases work wherever names do.
    assert_eq!(ok(&mut b, "?"), text);
    assert_eq!(ok(&mut b, "vmexit"), ok(&mut b, "stats"));
}

#[test]
fn help_describes_each_command() {
    let mut b = MockBackend::new();
    for cmd in COMMANDS {
        let text = ok(&mut b, &alloc::format!("help {}", cmd.name));
        assert!(text.starts_with(&alloc::format!("usage: {}\n", cmd.usage())));
        assert!(text.contains(cmd.summary));
    }
    let text = ok(&mut b, "help vmexit");
    assert!(text.starts_with("usage: stats [vm]\n") && text.contains("also: vmexit"));
    assert!(ok(&mut b, "help vm_console").contains("Ctrl-A d returns to the shell"));
    assert_eq!(
        fails(&mut b, "help nope"),
        "help: unknown command \"nope\" (type help)"
    );
    assert_eq!(
        fails(&mut b, "help vm_list extra"),
        "help: unexpected argument \"extra\" (usage: help [command])"
    );
}

#[test]
fn unknown_commands_and_blank_lines() {
    let mut b = MockBackend::new();
    assert_eq!(
        fails(&mut b, "vmlist"),
        "unknown command \"vmlist\" (type help)"
    );
    assert_eq!(
        fails(&mut b, "VM_LIST"),
        "unknown command \"VM_LIST\" (type help)"
    );
    assert_eq!(ok(&mut b, ""), "");
    assert_eq!(ok(&mut b, "   \t "), "");
    assert_eq!(ok(&mut b, "  version  "), "Quercus 0.1.0 (mock)\n");
}

#[test]
fn missing_arguments_name_the_argument_and_show_the_usage() {
    let mut b = MockBackend::new();
    let mut checked = 0;
    for cmd in COMMANDS {
        let Some(first) = cmd.args.split(' ').find(|a| a.starts_with('<')) else {
            continue;
        };
        assert_eq!(
            fails(&mut b, cmd.name),
            alloc::format!("{}: missing {first} (usage: {})", cmd.name, cmd.usage())
        );
        checked += 1;
    }
    assert_eq!(checked, 16);
    // Later arguments too.
    assert_eq!(
        fails(&mut b, "dump_guest_mem linux"),
        "dump_guest_mem: missing <gpa> (usage: dump_guest_mem <vm> <gpa> [len])"
    );
    assert_eq!(
        fails(&mut b, "wrmsr 2 0x10"),
        "wrmsr: missing <value> (usage: wrmsr <pcpu> <msr> <value>)"
    );
    assert_eq!(
        fails(&mut b, "cpuid 2"),
        "cpuid: missing <leaf> (usage: cpuid <pcpu> <leaf> [subleaf])"
    );
    assert!(b.calls.is_empty());
}

#[test]
fn extra_arguments_are_refused_before_anything_runs() {
    for (line, prepare) in valid_lines() {
        let mut b = MockBackend::new();
        prepare(&mut b);
        let before = b.vms.clone();
        let name = line.split(' ').next().unwrap_or_default();
        let e = fails(&mut b, &alloc::format!("{line} extra"));
        assert!(
            e.starts_with(&alloc::format!(
                "{name}: unexpected argument \"extra\" (usage: "
            )),
            "{e}"
        );
        assert!(b.calls.is_empty(), "{line}: {:?}", b.calls);
        assert_eq!(b.vms, before);
        assert_eq!(b.level, LevelFilter::Info);
    }
}

#[test]
fn bad_numbers_are_named() {
    let mut b = MockBackend::new();
    for (line, bad) in [
        ("vcpu_dumpreg linux x", "x"),
        ("dump_guest_mem linux 0xZZ", "0xZZ"),
        ("dump_guest_mem linux 0 0xZZ", "0xZZ"),
        ("dump_guest_mem linux 0x10+q", "q"),
        ("dump_host_mem zz", "zz"),
        ("dump_host_mem 0x100000 -1", "-1"),
        ("cpuid x 1", "x"),
        ("cpuid 2 0xZZ", "0xZZ"),
        ("cpuid 2 1 1.5", "1.5"),
        ("rdmsr 2 msr", "msr"),
        ("wrmsr 2 0x10 0x", "0x"),
        ("vm_stop 1x", "1x"),
    ] {
        let name = line.split(' ').next().unwrap_or_default();
        assert_eq!(
            fails(&mut b, line),
            alloc::format!("{name}: bad number {bad:?}"),
            "{line}"
        );
    }
    assert_eq!(
        fails(&mut b, "loglevel 9"),
        "loglevel: bad log level \"9\" (off, error, warn, info, debug, trace or 0 to 5)"
    );
    assert!(b.calls.is_empty());
}

#[test]
fn numbers_too_large_for_their_argument() {
    let mut b = MockBackend::new();
    assert_eq!(
        fails(&mut b, "cpuid 70000 0"),
        "cpuid: number \"70000\" is too large (max 0xffff)"
    );
    assert_eq!(
        fails(&mut b, "rdmsr 2 0x100000000"),
        "rdmsr: number \"0x100000000\" is too large (max 0xffffffff)"
    );
    assert_eq!(
        fails(&mut b, "wrmsr 2 0x10 0x10000000000000000"),
        "wrmsr: number \"0x10000000000000000\" is too large (max 0xffffffffffffffff)"
    );
    assert_eq!(
        fails(&mut b, "vcpu_dumpreg linux 99999999999999999999"),
        "vcpu_dumpreg: number \"99999999999999999999\" is too large (max 0xffff)"
    );
}

#[test]
fn a_running_real_time_vm_is_never_interrupted_for_its_registers() {
    let mut b = MockBackend::new();
    assert_eq!(
        fails(&mut b, "vcpu_dumpreg rtvm 0"),
        "vcpu_dumpreg: rtvm is a running real-time VM: this would interrupt its pCPU 1; vm_pause it first"
    );
    assert_eq!(
        fails(&mut b, "rdmsr 1 0x1b"),
        "rdmsr: pCPU 1 belongs to a real-time VM; the shell does not run code there"
    );
    b.vms[0].state = VmState::Paused;
    let out = run(&mut b, "vcpu_dumpreg rtvm 0").unwrap();
    assert!(out.contains("rtvm (id 0) vCPU 0 on pCPU 1"), "{out}");
}

#[test]
fn out_of_range_vms_vcpus_and_pcpus() {
    let mut b = MockBackend::new();
    b.vms[1].state = VmState::Paused;
    assert_eq!(
        fails(&mut b, "vm_stop 9"),
        "vm_stop: no VM with id 9 (see vm_list)"
    );
    assert_eq!(
        fails(&mut b, "vm_console 65536"),
        "vm_console: no VM with id 65536 (see vm_list)"
    );
    assert_eq!(
        fails(&mut b, "vioapic windows"),
        "vioapic: no VM named \"windows\" (see vm_list)"
    );
    assert_eq!(
        fails(&mut b, "vcpu_dumpreg linux 2"),
        "vcpu_dumpreg: linux has no vCPU 2 (it has 2)"
    );
    assert_eq!(
        fails(&mut b, "cpuid 4 0"),
        "cpuid: no pCPU 4 (this machine has 4)"
    );
    assert_eq!(
        fails(&mut b, "rdmsr 65535 0x10"),
        "rdmsr: no pCPU 65535 (this machine has 4)"
    );
    assert_eq!(
        fails(&mut b, "stats 2"),
        "stats: no VM with id 2 (see vm_list)"
    );
    assert_eq!(
        fails(&mut b, "vcpu_list nobody"),
        "vcpu_list: no VM named \"nobody\" (see vm_list)"
    );
    assert!(b.calls.is_empty());
}

#[test]
fn out_of_range_addresses_and_huge_lengths() {
    let mut b = MockBackend::new();
    for (line, err) in [
        (
            "dump_guest_mem linux 0x20000",
            "dump_guest_mem: guest-physical 0x20000+0x40 is not RAM of VM 1",
        ),
        (
            "dump_guest_mem rtvm 0xfff0 32",
            "dump_guest_mem: guest-physical 0xfff0+0x20 is not RAM of VM 0",
        ),
        (
            "dump_guest_mem linux 0xffffffffffffffff",
            "dump_guest_mem: range 0xffffffffffffffff+0x40 passes the end of the address space",
        ),
        (
            "dump_guest_mem linux 0 4097",
            "dump_guest_mem: length 4097 is out of range (1 to 4096)",
        ),
        (
            "dump_guest_mem linux 0 0",
            "dump_guest_mem: length 0 is out of range (1 to 4096)",
        ),
        (
            "dump_guest_mem linux 0 0xffffffffffffffff",
            "dump_guest_mem: length 18446744073709551615 is out of range (1 to 4096)",
        ),
        (
            "dump_guest_mem linux 0..0x100000",
            "dump_guest_mem: length 1048576 is out of range (1 to 4096)",
        ),
        (
            "dump_guest_mem linux 0x100..0x80",
            "dump_guest_mem: range \"0x100..0x80\" is empty or backwards",
        ),
        (
            "dump_host_mem 0",
            "dump_host_mem: host-physical 0x0+0x40 is not readable host RAM",
        ),
        (
            "dump_host_mem 0x100ff8 16",
            "dump_host_mem: host-physical 0x100ff8+0x10 is not readable host RAM",
        ),
        (
            "dump_host_mem 0x100000 99999999999999999999999",
            "dump_host_mem: number \"99999999999999999999999\" is too large (max 0xffffffffffffffff)",
        ),
    ] {
        assert_eq!(fails(&mut b, line), err, "{line}");
    }
}

#[test]
fn memory_dumps_show_addresses_hex_and_ascii() {
    let mut b = MockBackend::new();
    b.ram[1][0x100..0x105].copy_from_slice(b"Hello");
    let text = ok(&mut b, "dump_guest_mem linux 0x100 20");
    assert_eq!(
        text,
        "0x0000000000000100  48 65 6c 6c 6f 0a 0b 0c  0d 0e 0f 10 11 12 13 14  |Hello...........|\n\
         0x0000000000000110  15 16 17 18                                       |....|\n"
    );
    assert_eq!(ok(&mut b, "dump_guest_mem 1 0x100+20"), text);
    assert_eq!(ok(&mut b, "dump_guest_mem linux 0x100..0x114"), text);
    // Defaults to 64 bytes; the last byte of RAM can be read.
    assert_eq!(ok(&mut b, "dump_guest_mem linux 0").lines().count(), 4);
    assert_eq!(
        ok(&mut b, "dump_guest_mem linux 0x1ffff 1").lines().count(),
        1
    );
    assert_eq!(
        ok(&mut b, "dump_guest_mem linux 0 4096").lines().count(),
        256
    );
    assert_eq!(
        ok(&mut b, "dump_host_mem 0x100ff8 8"),
        "0x0000000000100ff8  51 55 45 52 43 55 53 21                           |QUERCUS!|\n"
    );
}

#[test]
fn vm_and_vcpu_lists() {
    let mut b = MockBackend::new();
    b.vms[0].state = VmState::Paused;
    assert_eq!(
        ok(&mut b, "vm_list"),
        "ID  NAME   STATE    LOAD ORDER    TYPE      PCPUS  VCPUS  MEMORY\n\
         0   rtvm   paused   pre-launched  rt        1      1      64 KiB\n\
         1   linux  running  pre-launched  standard  2,3    2      128 KiB\n"
    );
    assert_eq!(
        ok(&mut b, "vcpu_list"),
        "VM     VCPU  PCPU  STATE    EXITS\n\
         rtvm   0     1     paused   100\n\
         linux  0     2     running  100\n\
         linux  1     3     halted   200\n"
    );
    assert_eq!(
        ok(&mut b, "vcpu_list 0"),
        "VM    VCPU  PCPU  STATE   EXITS\nrtvm  0     1     paused  100\n"
    );
}

#[test]
fn register_dump() {
    let mut b = MockBackend::new();
    assert_eq!(
        fails(&mut b, "vcpu_dumpreg linux 1"),
        "vcpu_dumpreg: VM 1 vCPU 1 is running; pause the VM first"
    );
    ok(&mut b, "vm_pause linux");
    let text = ok(&mut b, "vcpu_dumpreg linux 1");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10);
    assert_eq!(lines[0], "linux (id 1) vCPU 1 on pCPU 3");
    assert_eq!(
        lines[1],
        "rip    0x0000000000100001  rsp    0x0000000000007f00  rflags 0x0000000000000202"
    );
    assert_eq!(
        lines[2],
        "rax    0x000000000000aaaa  rbx    0x000000000000bbbb  rcx    0x000000000000cccc"
    );
    assert!(lines[6].ends_with("r15    0x0000000000000f15"));
    assert_eq!(
        lines[8],
        "efer   0x0000000000000500  cpl    0  mode   64-bit, paging"
    );
    assert_eq!(
        lines[9],
        "cs     selector 0x0008 base 0x0 limit 0xffffffff attributes 0xa9b"
    );
}

#[test]
fn lifecycle_follows_the_state_machine() {
    let mut b = MockBackend::new();
    assert_eq!(ok(&mut b, "vm_stop linux"), "linux: stopped\n");
    assert_eq!(
        fails(&mut b, "vm_stop linux"),
        "vm_stop: cannot stop linux: it is already stopped"
    );
    assert_eq!(
        fails(&mut b, "vm_pause 1"),
        "vm_pause: cannot pause linux: it is stopped"
    );
    assert_eq!(
        fails(&mut b, "vm_resume linux"),
        "vm_resume: cannot resume linux: it is stopped"
    );
    assert_eq!(ok(&mut b, "vm_start linux"), "linux: running\n");
    assert_eq!(
        fails(&mut b, "vm_start linux"),
        "vm_start: cannot start linux: it is already running"
    );
    assert_eq!(
        fails(&mut b, "vm_resume linux"),
        "vm_resume: cannot resume linux: it is already running"
    );
    assert_eq!(ok(&mut b, "vm_pause linux"), "linux: paused\n");
    assert_eq!(
        fails(&mut b, "vm_pause linux"),
        "vm_pause: cannot pause linux: it is already paused"
    );
    assert_eq!(
        fails(&mut b, "vm_start linux"),
        "vm_start: cannot start linux: it is paused"
    );
    assert_eq!(ok(&mut b, "vm_resume linux"), "linux: running\n");
    assert_eq!(ok(&mut b, "vm_reset linux"), "linux: running\n");
    b.vms[0].state = VmState::Crashed;
    assert_eq!(ok(&mut b, "vm_start rtvm"), "rtvm: running\n");
    assert_eq!(
        b.calls,
        [
            "lifecycle 1 stop",
            "lifecycle 1 start",
            "lifecycle 1 pause",
            "lifecycle 1 resume",
            "lifecycle 1 reset",
            "lifecycle 0 start",
        ]
    );
}

#[test]
fn lifecycle_is_for_pre_launched_vms_only() {
    let mut b = MockBackend::new();
    b.vms[1].load_order = LoadOrder::Service;
    assert_eq!(
        fails(&mut b, "vm_reset linux"),
        "vm_reset: linux is the Service VM; only pre-launched VMs are managed from this shell"
    );
    b.vms[1].load_order = LoadOrder::PostLaunched;
    assert_eq!(
        fails(&mut b, "vm_stop linux"),
        "vm_stop: linux is a post-launched VM; only pre-launched VMs are managed from this shell"
    );
    assert!(b.calls.is_empty());
}

#[test]
fn cpu_commands_are_refused_on_rt_pcpus() {
    let mut b = MockBackend::new();
    for line in ["cpuid 1 0", "rdmsr 1 0x10", "wrmsr 1 0x10 5"] {
        let name = line.split(' ').next().unwrap_or_default();
        assert_eq!(
            fails(&mut b, line),
            alloc::format!(
                "{name}: pCPU 1 belongs to a real-time VM; the shell does not run code there"
            )
        );
    }
    assert!(b.calls.is_empty());
    assert_eq!(
        ok(&mut b, "cpuid 0 0"),
        "pCPU 0 CPUID 0x0.0x0: eax 0x0000000d ebx 0x68747541 ecx 0x444d4163 edx 0x69746e65\n"
    );
    assert_eq!(
        ok(&mut b, "cpuid 2 0x80000001 3"),
        "pCPU 2 CPUID 0x80000001.0x3: eax 0x80000001 ebx 0x00000003 ecx 0x00000002 edx 0x12345678\n"
    );
    assert_eq!(
        ok(&mut b, "rdmsr 3 0x1b"),
        "pCPU 3 MSR 0x1b = 0x00000000fee00900\n"
    );
    assert_eq!(
        ok(&mut b, "wrmsr 2 0x10 0xffff_0000"),
        "pCPU 2 MSR 0x10 <- 0x00000000ffff0000\n"
    );
    assert_eq!(b.msrs[&(2, 0x10)], 0xffff_0000);
    assert_eq!(
        fails(&mut b, "rdmsr 2 0x1234"),
        "rdmsr: MSR 0x1234 raised #GP on pCPU 2"
    );
    assert_eq!(
        fails(&mut b, "wrmsr 0 0xc0000081 1"),
        "wrmsr: MSR 0xc0000081 raised #GP on pCPU 0"
    );
}

#[test]
fn statistics_per_vcpu_with_vm_totals() {
    let mut b = MockBackend::new();
    assert_eq!(
        ok(&mut b, "stats"),
        "VM     VCPU  EXITS  INJECTED  GUEST%  EXITS BY REASON\n\
         rtvm   0     12     5         90.0%   io=10 cpuid=1 hlt=1\n\
         linux  0     22     5         90.0%   io=20 cpuid=1 hlt=1\n\
         linux  1     23     6         81.8%   io=20 cpuid=1 hlt=2\n\
         linux  all   45     11        85.7%   io=40 cpuid=2 hlt=3\n"
    );
    assert_eq!(ok(&mut b, "stats rtvm").lines().count(), 2);
    assert_eq!(ok(&mut b, "vmexit linux").lines().count(), 4);
}

#[test]
fn interrupt_and_ioapic_tables() {
    let mut b = MockBackend::new();
    assert_eq!(
        ok(&mut b, "int"),
        "IRQ  VECTOR  CPU0  CPU1  CPU2  CPU3  OWNER\n\
         -    0xef    1000  10    0     3     hv timer\n\
         4    0x34    12    0     0     0     uart\n"
    );
    assert_eq!(
        ok(&mut b, "dump_ioapic"),
        "IOAPIC  PIN  VECTOR  DELIVERY  DESTMODE  DEST  TRIGGER  POLARITY  MASKED  IRR\n\
         0       0    0x00    fixed     physical  0x00  edge     high      yes     0\n\
         0       4    0x34    lowest    logical   0x03  level    low       no      1\n"
    );
    assert_eq!(
        ok(&mut b, "vioapic linux"),
        "IOAPIC  PIN  VECTOR  DELIVERY  DESTMODE  DEST  TRIGGER  POLARITY  MASKED  IRR\n\
         0       4    0x24    fixed     physical  0x00  edge     high      no      0\n"
    );
    assert_eq!(
        fails(&mut b, "vioapic rtvm"),
        "vioapic: VM 0 has no virtual IOAPIC"
    );
}

#[test]
fn log_level_shown_and_set() {
    let mut b = MockBackend::new();
    assert_eq!(ok(&mut b, "loglevel"), "log level: info (3)\n");
    assert_eq!(ok(&mut b, "loglevel DEBUG"), "log level: debug (4)\n");
    assert_eq!(b.level, LevelFilter::Debug);
    assert_eq!(ok(&mut b, "loglevel 0"), "log level: off (0)\n");
    assert_eq!(b.level, LevelFilter::Off);
}

#[test]
fn reboot_and_attach_are_outcomes() {
    let mut b = MockBackend::new();
    let mut logs = VmLogs::new();
    let mut out = Output::new();
    assert_eq!(
        execute(&mut b, &mut logs, "reboot", &mut out),
        Ok(Outcome::Reboot)
    );
    assert_eq!(
        execute(&mut b, &mut logs, "vm_console 1", &mut out),
        Ok(Outcome::Attach {
            vm: VmId(1),
            name: "linux".into(),
            port: Port::Uart,
        })
    );
    assert_eq!(
        execute(&mut b, &mut logs, "vm_console linux hvc", &mut out),
        Ok(Outcome::Attach {
            vm: VmId(1),
            name: "linux".into(),
            port: Port::Hvc,
        })
    );
    assert!(out.is_empty());
    let e = execute(&mut b, &mut logs, "vm_console", &mut out).unwrap_err();
    assert_eq!(e.command.map(|c| c.name), Some("vm_console"));
    assert_eq!(e.error, CmdError::Parse(ParseError::Missing("<vm>")));
}

#[test]
fn vm_log_reports_lost_output() {
    let mut b = MockBackend::new();
    let mut logs = VmLogs::new();
    logs.push(VmId(0), Port::Uart, &[b'x'; crate::RING_SIZE + 10], false);
    let text = run_with(&mut b, &mut logs, "vm_log rtvm").unwrap();
    assert!(
        text.starts_with("[10 bytes of rtvm output were overwritten before anyone saw them]\nxxxx")
    );
    // Seen now: asking again shows the same history without the note.
    let again = run_with(&mut b, &mut logs, "vm_log 0").unwrap();
    assert!(again.starts_with("xxxx"));
    assert_eq!(again.len(), crate::RING_SIZE + 1);
}

#[test]
fn vm_console_and_vm_log_take_the_virtio_console() {
    let mut b = MockBackend::new();
    // rtvm has no virtio console: refused, before anything is printed.
    assert_eq!(
        fails(&mut b, "vm_console rtvm hvc"),
        "vm_console: rtvm has no virtio console (hvc0)"
    );
    assert_eq!(
        fails(&mut b, "vm_log 0 hvc"),
        "vm_log: rtvm has no virtio console (hvc0)"
    );
    // A word that names no console, and a word too many.
    assert_eq!(
        fails(&mut b, "vm_console linux com2"),
        "vm_console: unexpected argument \"com2\" (usage: vm_console <vm> [hvc])"
    );
    assert_eq!(
        fails(&mut b, "vm_log linux hvc 1"),
        "vm_log: unexpected argument \"1\" (usage: vm_log <vm> [hvc])"
    );
    // A VM without a vUART may still have its virtio console attached.
    b.vms[1].console = false;
    assert_eq!(
        fails(&mut b, "vm_console linux"),
        "vm_console: linux has no virtual UART"
    );
    ok(&mut b, "vm_console linux hvc0");
    // Each console's history apart.
    let mut logs = VmLogs::new();
    logs.push(VmId(1), Port::Uart, b"com1 says\r\n", false);
    logs.push(VmId(1), Port::Hvc, &[b'h'; crate::RING_SIZE + 3], false);
    let text = run_with(&mut b, &mut logs, "vm_log linux hvc").unwrap();
    assert!(
        text.starts_with(
            "[3 bytes of linux hvc0 output were overwritten before anyone saw them]\nhhhh"
        ),
        "{text}"
    );
    assert!(!text.contains("com1"));
    assert_eq!(
        run_with(&mut b, &mut logs, "vm_log linux").unwrap(),
        "com1 says\n"
    );
    let mut empty = VmLogs::new();
    assert_eq!(
        run_with(&mut b, &mut empty, "vm_log linux HVC").unwrap(),
        "[linux hvc0 has printed nothing]\n"
    );
    // help shows the port word.
    assert!(ok(&mut b, "help").contains("vm_console <vm> [hvc]"));
    assert!(ok(&mut b, "help vm_log").contains("virtio console (hvc0)"));
}

#[test]
fn no_command_panics_on_hostile_words() {
    const WORDS: &[&str] = &[
        "",
        "0",
        "1",
        "2",
        "3",
        "4",
        "65535",
        "65536",
        "rtvm",
        "linux",
        "0x",
        "0xffffffffffffffff",
        "18446744073709551616",
        "..",
        "0..",
        "..0",
        "+",
        "0+0",
        "0xfffffffffffffff0+0x10",
        "-0",
        "\u{7f}",
        "é",
        "4096",
        "4097",
        "hvc",
    ];
    let mut b = MockBackend::new();
    let mut logs = VmLogs::new();
    for cmd in COMMANDS {
        for a in WORDS {
            for c in WORDS {
                for d in ["", "1", "0x10"] {
                    if cmd.name == "reboot" {
                        continue;
                    }
                    let line = alloc::format!("{} {a} {c} {d}", cmd.name);
                    let _ = run_with(&mut b, &mut logs, &line);
                }
            }
        }
    }
}

#[test]
fn mem_shows_frames_and_heap_in_kib() {
    let mut b = MockBackend::new();
    let out = run(&mut b, "mem").unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("POOL"), "{out}");
    let frames: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        frames,
        ["frames", "124288", "KiB", "400000", "KiB", "524288", "KiB"]
    );
    let heap: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        heap,
        ["heap", "3072", "KiB", "13312", "KiB", "16384", "KiB"]
    );
    assert!(fails(&mut b, "mem extra").contains("extra"));
}

#[test]
fn vm_ids_are_the_backends_not_positions() {
    // The scenario's VMs 0 and 2 were not started: the backend lists ids 1 and 3.
    let mut b = MockBackend::new();
    b.vms[0].id = VmId(1);
    b.vms[1].id = VmId(3);
    assert_eq!(ok(&mut b, "vm_stop 3"), "linux: stopped\n");
    assert_eq!(ok(&mut b, "vm_pause 1"), "rtvm: paused\n");
    assert_eq!(ok(&mut b, "vm_start linux"), "linux: running\n");
    assert_eq!(
        b.calls,
        ["lifecycle 3 stop", "lifecycle 1 pause", "lifecycle 3 start"]
    );
    // The holes are no VM at all.
    assert_eq!(
        fails(&mut b, "vm_stop 0"),
        "vm_stop: no VM with id 0 (see vm_list)"
    );
    assert_eq!(
        fails(&mut b, "vcpu_list 2"),
        "vcpu_list: no VM with id 2 (see vm_list)"
    );
}

#[test]
fn virtio_devices_with_their_queues() {
    let mut b = MockBackend::new();
    assert_eq!(
        ok(&mut b, "virtio linux"),
        "SLOT     DEVICE  BACKEND                    STATUS                                        \
         FEATURES     REQS  ERRS  BYTES IN  BYTES OUT  DROPPED  IRQS  NOTIFY/IGN  NEEDS RESET  \
         LAST FAULT\n\
         00:08.0  blk     disk0 rw                   ACK,DRIVER,FEATURES_OK,DRIVER_OK              \
         0x130000044  12    1     6144      512        0        13    14/0        0            -\n\
         00:09.0  net     02:00:00:00:00:0a on lan0  ACK,DRIVER,FEATURES_OK,DRIVER_OK,NEEDS_RESET  \
         0x130010020  40    2     3000      2400       3        41    30/5        1            \
         descriptor index 9 outside a table of 8\n\
         00:0a.0  rng     -                          ACK,DRIVER,FAILED                             \
         0x0          0     0     0         0          0        0     2/2         0            -\n\
         \x20 SLOT     QUEUE  SIZE  ENABLED  NOTIFIES  SERVED\n\
         \x20 00:08.0  0      128   yes      14        12\n\
         \x20 00:09.0  0      256   yes      10        20\n\
         \x20 00:09.0  1      256   no       20        20\n\
         \x20 00:0a.0  0      64    no       2         0\n"
    );
    // By id too; a VM without devices says so.
    assert_eq!(ok(&mut b, "virtio 1"), ok(&mut b, "virtio linux"));
    assert_eq!(ok(&mut b, "virtio rtvm"), "rtvm has no virtio devices\n");
    // A read-only disk, a status the driver has not touched, bits virtio does not define.
    b.virtio[1][0].backend = VirtioBackend::Disk {
        module: "iso".into(),
        readonly: true,
    };
    b.virtio[1][0].status = 0;
    b.virtio[1][2].status = 0x31;
    let text = ok(&mut b, "virtio linux");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().take(5).collect())
        .collect();
    assert_eq!(rows[1], ["00:08.0", "blk", "iso", "ro", "reset"]);
    assert_eq!(rows[3], ["00:0a.0", "rng", "-", "ACK,0x30", "0x0"]);
    // Devices without queues print no queue lines.
    for d in &mut b.virtio[1] {
        d.queues.clear();
    }
    assert_eq!(ok(&mut b, "virtio linux").lines().count(), 4);
}

#[test]
fn virtio_of_an_unknown_vm() {
    let mut b = MockBackend::new();
    assert_eq!(
        fails(&mut b, "virtio 7"),
        "virtio: no VM with id 7 (see vm_list)"
    );
    assert_eq!(
        fails(&mut b, "virtio windows"),
        "virtio: no VM named \"windows\" (see vm_list)"
    );
    assert_eq!(
        fails(&mut b, "virtio"),
        "virtio: missing <vm> (usage: virtio <vm>)"
    );
    assert_eq!(
        fails(&mut b, "virtio linux extra"),
        "virtio: unexpected argument \"extra\" (usage: virtio <vm>)"
    );
}

#[test]
fn switches_with_ports_and_learned_addresses() {
    let mut b = MockBackend::new();
    assert_eq!(
        ok(&mut b, "switches"),
        "switch lan0: 2 ports, 7 frames flooded\n\
         \x20 PORT        MAC                TX FRAMES  TX BYTES  RX FRAMES  RX BYTES  RX DROPPED  \
         TX MALFORMED  QUEUED\n\
         \x20 linux/eth0  02:00:00:00:00:0a  5          300       9          540       1           \
         2             3\n\
         \x20 uplink      02:00:00:00:00:01  11         1100      4          240       0           \
         0             0\n\
         \x20 LEARNED            ON PORT\n\
         \x20 02:00:00:00:00:0a  linux/eth0\n\
         \x20 02:00:00:00:00:01  uplink\n\
         \n\
         switch lan1: 0 ports, 0 frames flooded\n\
         \x20 no addresses learned\n"
    );
    b.switches[0].ports.truncate(1);
    assert!(ok(&mut b, "switches").starts_with("switch lan0: 1 port, 7 frames flooded\n"));
    b.switches.clear();
    assert_eq!(ok(&mut b, "switches"), "no virtual switches\n");
}

#[test]
fn pci_functions_with_owners_and_iommu_faults() {
    let mut b = MockBackend::new();
    let out = ok(&mut b, "pci");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for word in ["BDF", "OWNER", "VECTORS", "FAULTS"] {
        assert!(lines[0].contains(word), "{out}");
    }
    let edu: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        edu,
        [
            "00:04.0",
            "1234:11e8",
            "00ff00",
            "linux",
            "00:04.0",
            "msi",
            "0x30",
            "7",
            "1",
            "(none)",
            "2"
        ]
    );
    let nic: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        nic,
        [
            "00:05.0",
            "8086:10d3",
            "020000",
            "-",
            "-",
            "-",
            "-",
            "0",
            "-",
            "0"
        ]
    );
    assert_eq!(ok(&mut b, "lspci"), out);
    b.pci.clear();
    assert_eq!(ok(&mut b, "pci"), "no PCI functions found\n");

    assert_eq!(
        ok(&mut b, "iommu"),
        "VT-d dmar0 at 0xfed90000: translation on, interrupt remapping on, 1 domain; 2 fault(s)\n\
         \x20 00:04.0 write at 0x9000000: not present\n"
    );
    b.iommu.clear();
    assert!(ok(&mut b, "iommu").starts_with("no IOMMU"));
}

#[test]
fn vuart_links_with_their_ends_and_counters() {
    let mut b = MockBackend::new();
    assert_eq!(
        ok(&mut b, "vuart"),
        "vuart ctl: linux 0x2f8 <-> rtvm 0x2f8\n\
         \x20 VM     PORT   STATE     DTR  RTS  SENT  DELIVERED  DROPPED  STALLS  QUEUED\n\
         \x20 linux  0x2f8  attached  on   on   1200  1100       100      4       0\n\
         \x20 rtvm   0x2f8  absent    off  off  1100  1100       0        0       0\n"
    );
    assert_eq!(ok(&mut b, "links"), ok(&mut b, "vuart"));
    assert_eq!(
        fails(&mut b, "vuart x"),
        "vuart: unexpected argument \"x\" (usage: vuart)"
    );
    b.links.clear();
    assert_eq!(ok(&mut b, "vuart"), "no vUART links\n");
}

#[test]
fn shm_regions_with_their_vms_and_doorbell_counters() {
    let mut b = MockBackend::new();
    assert_eq!(
        ok(&mut b, "shm"),
        "shm ipc0: 64 KiB at host 0x40000000, 2 VMs\n\
         \x20 PEER  VM     ACCESS  SLOT  BAR2        STATE     SENT  RECEIVED  DELIVERED  \
         COALESCED  DROPPED  RATE-LIMITED  TRAPPED\n\
         \x20 0     linux  rw      31    0xd0000000  attached  7     3         3          \
         0          2        5             0\n\
         \x20 1     rtvm   ro      31    0xd0000000  absent    3     7         7          \
         1          0        0             4\n"
    );
    assert_eq!(
        fails(&mut b, "shm x"),
        "shm: unexpected argument \"x\" (usage: shm)"
    );
    b.shm.clear();
    assert_eq!(ok(&mut b, "shm"), "no shared-memory regions\n");
}
