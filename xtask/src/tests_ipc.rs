//! The `ipc-*` emulator cases (issue 14, inter-VM communication): the `ipc-ivshmem` scenario's
//! three test guests in `ivshmem` mode. alice and bob share `ipc0` (and `ro0`, read-only for bob)
//! through their ivshmem devices and exchange a pattern with doorbells, by MSI-X and by INTx;
//! carol, outside every region, must not see a device. alice then rings peers and vectors that do
//! not exist and floods bob: the hypervisor's console must show those dropped and rate-limited,
//! and the shell's `shm` command the counters.

use crate::runner::Emulator;
use crate::tests::{boot, Fail, TestCase, GUEST_FAIL};

/// The test guest's `ivshmem-*` tests (guests/test-guest/src/tests/ivshmem.rs), in order.
pub const IVSHMEM_TESTS: [&str; 5] = [
    "ivshmem-enum",
    "ivshmem-msix",
    "ivshmem-intx",
    "ivshmem-pingpong",
    "ivshmem-readonly",
];

/// A member VM's lines: every test passes, then it powers off.
fn member_lines(vm: &str) -> Vec<String> {
    let mut v: Vec<String> = IVSHMEM_TESTS
        .iter()
        .map(|t| format!(r"^\[{vm}\] TEST {t} PASS$"))
        .collect();
    v.push(format!(
        r"^\[{vm}\] TESTS DONE {} passed 0 failed$",
        IVSHMEM_TESTS.len()
    ));
    v.push(format!(r"vm {vm}: stopped: .*powered off by the guest"));
    v
}

/// The `ipc-ivshmem` scenario (QEMU) or `ipc-ivshmem-bochs` (the four-CPU Bochs board).
fn ivshmem(name: &'static str, emulator: Emulator) -> TestCase {
    let qemu = emulator == Emulator::Qemu;
    let mut expect = member_lines("alice");
    // The shell, once alice is done: both regions, alice's doorbells dropped and rate-limited.
    expect.extend([
        r"^shm ipc0: 64 KiB at host 0x[0-9a-f]+, 2 VMs$".to_string(),
        r"^\s+PEER\s+VM\s+ACCESS\s+SLOT\s+BAR2\s+STATE\s+SENT\s+RECEIVED\s+DELIVERED\s+COALESCED\s+DROPPED\s+RATE-LIMITED\s+TRAPPED$".into(),
        r"^\s+0\s+alice\s+rw\s+31\s+0xd0000000\s+\w+\s+[1-9]\d*\s+[1-9]\d*\s+[1-9]\d*\s+\d+\s+[1-9]\d*\s+[1-9]\d*\s+0$".into(),
        r"^\s+1\s+bob\s+rw\s+31\s+0xd0000000\s+\w+\s+[1-9]\d*\s+[1-9]\d*\s+[1-9]\d*\s+\d+\s+0\s+0\s+0$".into(),
        r"^shm ro0: 4 KiB at host 0x[0-9a-f]+, 2 VMs$".into(),
        // bob's two writes to the read-only region exited and were dropped.
        r"^\s+1\s+bob\s+ro\s+30\s+0xd0010000\s+\w+(?:\s+0){6}\s+2$".into(),
    ]);
    TestCase {
        scenario: if qemu {
            "ipc-ivshmem"
        } else {
            "ipc-ivshmem-bochs"
        },
        cpus: 4,
        expect,
        parallel: vec![
            member_lines("bob"),
            vec![
                r"^\[carol\] ivshmem: no ivshmem device on bus 0, nothing at 0xd0000000$".into(),
                r"^\[carol\] TEST ivshmem-enum PASS$".into(),
                r"^\[carol\] TESTS DONE 1 passed 0 failed$".into(),
            ],
            vec![
                r"shm ipc0: vm alice rang peer 5 vector 0: NoSuchPeer \(1 dropped so far\)".into(),
                r"shm ipc0: vm alice rings doorbells faster than 10000/s: 1 dropped so far".into(),
            ],
        ],
        input: vec![(r"vm alice: stopped: ", "shm\r")],
        fail: Fail::Custom(GUEST_FAIL),
        timeout_secs: if qemu { 120 } else { 600 },
        ..boot(name, emulator, 4)
    }
}

/// The test guest's `vuart-link-*` tests (guests/test-guest/src/tests/vuart_link.rs) on each side.
pub const LINK_LEFT_TESTS: [&str; 4] = [
    "vuart-link-open",
    "vuart-link-send",
    "vuart-link-receive",
    "vuart-link-peer-gone",
];
pub const LINK_RIGHT_TESTS: [&str; 3] =
    ["vuart-link-open", "vuart-link-receive", "vuart-link-send"];

/// `vm`'s lines: `tests` pass in order, then it powers off.
fn link_lines(vm: &str, tests: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = tests
        .iter()
        .map(|t| format!(r"^\[{vm}\] TEST {t} PASS$"))
        .collect();
    v.push(format!(
        r"^\[{vm}\] TESTS DONE {} passed 0 failed$",
        tests.len()
    ));
    v.push(format!(r"vm {vm}: stopped: .*powered off by the guest"));
    v
}

/// The `ipc-vuart-link` scenario (QEMU) or `ipc-vuart-link-bochs` (the four-CPU Bochs board):
/// left and right exchange 32 KiB each way through the link (left must wait for the slow
/// reader: flow control, every byte checked), right powers off, left keeps sending into the dead
/// cable without being held; then the shell's `vuart` shows the counters: nothing dropped while
/// both were there, left's last 64 KiB dropped, left stalled at least once.
fn vuart_link(name: &'static str, emulator: Emulator) -> TestCase {
    let qemu = emulator == Emulator::Qemu;
    let mut expect = link_lines("left", &LINK_LEFT_TESTS);
    expect.extend([
        r"^vuart wire: left 0x2f8 <-> right 0x2f8$".to_string(),
        r"^\s+VM\s+PORT\s+STATE\s+DTR\s+RTS\s+SENT\s+DELIVERED\s+DROPPED\s+STALLS\s+QUEUED$".into(),
        // left sent 32 KiB, all delivered, then 64 KiB into the dead cable, after waiting.
        r"^\s+left\s+0x2f8\s+absent\s+off\s+off\s+32768\s+32768\s+65536\s+[1-9]\d*\s+0$".into(),
        r"^\s+right\s+0x2f8\s+absent\s+off\s+off\s+32768\s+32768\s+0\s+\d+\s+0$".into(),
    ]);
    TestCase {
        scenario: if qemu {
            "ipc-vuart-link"
        } else {
            "ipc-vuart-link-bochs"
        },
        cpus: 4,
        expect,
        parallel: vec![link_lines("right", &LINK_RIGHT_TESTS)],
        input: vec![(r"vm left: stopped: ", "vuart\r")],
        fail: Fail::Custom(GUEST_FAIL),
        timeout_secs: if qemu { 120 } else { 600 },
        ..boot(name, emulator, 4)
    }
}

/// Failure lines of the cases with Linux VMs (`ipc-ivshmem-linux`, `ipc-channel`).
const LINUX_IPC_FAIL: &str = r"quercus: fatal|stopped: .*(?:unhandled|cannot|unsupported|refused|triple)|TEST \S+ (FAIL|SKIP)|Attempted to kill init|general protection fault|QUERCUS-GUEST: (?:ivshmem|msgchan) error|QUERCUS-GUEST: qmsg: error|QUERCUS-GUEST: unknown quercus\.test";

/// The `ipc-ivshmem-linux` scenario: two Linux VMs exchange a 1,536-byte file through the region with
/// the stock `uio_pci_generic` and INTx doorbells (each side takes exactly one interrupt); the
/// file's SHA-256 is the same on both sides. carol, outside the region, sees no device.
fn ivshmem_linux() -> TestCase {
    TestCase {
        scenario: "ipc-ivshmem-linux",
        cpus: 4,
        mem_mib: 1024,
        expect: vec![
            r"^\[alice\] QUERCUS-GUEST: ivshmem 0000:00:1f\.0 regs=0x[0-9a-f]+ shm=0x[0-9a-f]+ /dev/uio0 id=0x0+$".into(),
            r"^\[alice\] QUERCUS-GUEST: ivshmem sent bytes=1536 sha256=(?P<sum>[0-9a-f]{64}) irqs=1$".into(),
            r"vm alice: stopped: .*powered off by the guest".into(),
        ],
        parallel: vec![
            vec![
                r"^\[bob\] QUERCUS-GUEST: ivshmem 0000:00:1f\.0 regs=0x[0-9a-f]+ shm=0x[0-9a-f]+ /dev/uio0 id=0x0+1$".into(),
                r"^\[bob\] QUERCUS-GUEST: ivshmem received bytes=1536 sha256=[0-9a-f]{64} irqs=1$".into(),
                r"vm bob: stopped: .*powered off by the guest".into(),
            ],
            vec![
                r"^\[carol\] ivshmem: no ivshmem device on bus 0, nothing at 0xd0000000$".into(),
                r"^\[carol\] TESTS DONE 1 passed 0 failed$".into(),
            ],
        ],
        post_check: Some(same_file_both_sides),
        fail: Fail::Custom(LINUX_IPC_FAIL),
        timeout_secs: 600,
        ..boot("ipc-ivshmem-linux-qemu-svm", Emulator::Qemu, 4)
    }
}

/// The sha256 alice sent is the one bob received.
fn same_file_both_sides(lines: &[String]) -> Result<(), String> {
    let sum = |tag: &str| {
        lines
            .iter()
            .find_map(|l| l.split(tag).nth(1)?.split("sha256=").nth(1)?.get(..64))
            .map(str::to_owned)
    };
    let sent = sum("[alice] QUERCUS-GUEST: ivshmem sent ").ok_or("no sent line")?;
    let received = sum("[bob] QUERCUS-GUEST: ivshmem received ").ok_or("no received line")?;
    if sent == received {
        Ok(())
    } else {
        Err(format!("alice sent sha256 {sent}, bob received {received}"))
    }
}

/// The `ipc-channel` scenario: Linux (`qmsg exchange` under `uio_pci_generic`) and the bare-metal
/// test guest (`msgchan`) exchange 10,000 checked messages each way through the channel on
/// `chan0`; Linux sleeps on doorbells, which the bare-metal side rings.
fn channel() -> TestCase {
    TestCase {
        scenario: "ipc-channel",
        cpus: 4,
        mem_mib: 1024,
        expect: vec![
            r"^\[linux\] QUERCUS-GUEST: qmsg: exchange peer=0 sent=10000 received=10000 doorbells=\d+ waits=\d+ irqs=\d+ ms=\d+$".into(),
            r"vm linux: stopped: .*powered off by the guest".into(),
        ],
        parallel: vec![vec![
            r"^\[rt\] msgchan: peer=1 sent=10000 received=10000 doorbells=\d+ ring-full=\d+ ticks=\d+$".into(),
            r"^\[rt\] TEST msgchan-exchange PASS$".into(),
            r"^\[rt\] TESTS DONE 1 passed 0 failed$".into(),
        ]],
        fail: Fail::Custom(LINUX_IPC_FAIL),
        timeout_secs: 600,
        ..boot("ipc-channel-qemu-svm", Emulator::Qemu, 4)
    }
}

/// The `ipc-*` cases.
pub fn cases() -> Vec<TestCase> {
    vec![
        channel(),
        ivshmem_linux(),
        ivshmem("ipc-ivshmem-qemu-svm", Emulator::Qemu),
        ivshmem("ipc-ivshmem-bochs-vmx", Emulator::Bochs),
        ivshmem("ipc-ivshmem-bochs-svm", Emulator::BochsAmd),
        vuart_link("ipc-vuart-link-qemu-svm", Emulator::Qemu),
        vuart_link("ipc-vuart-link-bochs-vmx", Emulator::Bochs),
        vuart_link("ipc-vuart-link-bochs-svm", Emulator::BochsAmd),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    #[test]
    fn the_link_lines_match_what_the_guests_and_the_shell_print() {
        let case = vuart_link("x", Emulator::Bochs);
        assert_eq!(case.scenario, "ipc-vuart-link-bochs");
        let mut lines: Vec<String> = LINK_LEFT_TESTS
            .iter()
            .map(|t| format!("[left] TEST {t} PASS"))
            .collect();
        lines.extend([
            "[left] TESTS DONE 4 passed 0 failed".to_string(),
            "quercus: vm left: stopped: vCPU 0: powered off by the guest".into(),
            "vuart wire: left 0x2f8 <-> right 0x2f8".into(),
            "  VM     PORT   STATE   DTR  RTS  SENT   DELIVERED  DROPPED  STALLS  QUEUED".into(),
            "  left   0x2f8  absent  off  off  32768  32768      65536    17      0".into(),
            "  right  0x2f8  absent  off  off  32768  32768      0        0       0".into(),
        ]);
        let mut at = 0;
        for re in &case.expect {
            let re = Regex::new(re).unwrap();
            at += lines[at..]
                .iter()
                .position(|l| re.is_match(l))
                .unwrap_or_else(|| panic!("{re} not matched after line {at}"))
                + 1;
        }
        // A left that never waited (no flow control) or lost bytes does not pass.
        let left = Regex::new(&case.expect[8]).unwrap();
        assert!(!left
            .is_match("  left   0x2f8  absent  off  off  32768  32768      65536    0       0"));
        assert!(!left
            .is_match("  left   0x2f8  absent  off  off  32768  32000      66304    3       0"));
    }

    #[test]
    fn the_expected_lines_match_what_the_guests_and_the_shell_print() {
        let case = ivshmem("x", Emulator::Qemu);
        let lines = [
            "[alice] TEST ivshmem-enum PASS",
            "[alice] TEST ivshmem-msix PASS",
            "[alice] TEST ivshmem-intx PASS",
            "[alice] TEST ivshmem-pingpong PASS",
            "[alice] TEST ivshmem-readonly PASS",
            "[alice] TESTS DONE 5 passed 0 failed",
            "quercus: vm alice: stopped: vCPU 0: powered off by the guest",
            "shm ipc0: 64 KiB at host 0x7e00000, 2 VMs",
            "  PEER  VM     ACCESS  SLOT  BAR2        STATE     SENT  RECEIVED  DELIVERED  COALESCED  DROPPED  RATE-LIMITED  TRAPPED",
            "  0     alice  rw      31    0xd0000000  attached  266   202       202        0          3        4734          0",
            "  1     bob    rw      31    0xd0000000  attached  202   266       203        63         0        0             0",
            "shm ro0: 4 KiB at host 0x7f00000, 2 VMs",
            "  PEER  VM     ACCESS  SLOT  BAR2        STATE     SENT  RECEIVED  DELIVERED  COALESCED  DROPPED  RATE-LIMITED  TRAPPED",
            "  0     alice  rw      30    0xd0010000  attached  0     0         0          0          0        0             0",
            "  1     bob    ro      30    0xd0010000  attached  0     0         0          0          0        0             2",
        ];
        let mut at = 0;
        for re in &case.expect {
            let re = Regex::new(re).unwrap();
            at += lines[at..]
                .iter()
                .position(|l| re.is_match(l))
                .unwrap_or_else(|| panic!("{re} not matched after line {at}"))
                + 1;
        }
        let fail = Regex::new(GUEST_FAIL).unwrap();
        assert!(lines.iter().all(|l| !fail.is_match(l)));
        assert!(fail.is_match("[bob] TEST ivshmem-intx FAIL no interrupt"));
        let warn = Regex::new(&case.parallel[2][1]).unwrap();
        assert!(warn.is_match(
            "[    1.234567] cpu1 WARN  shm ipc0: vm alice rings doorbells faster than 10000/s: 1 dropped so far"
        ));
    }

    #[test]
    fn the_linux_case_compares_both_sides() {
        let line = |s: &str| s.to_string();
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let ok = [
            line(&format!(
                "[alice] QUERCUS-GUEST: ivshmem sent bytes=1536 sha256={a} irqs=1"
            )),
            line(&format!(
                "[bob] QUERCUS-GUEST: ivshmem received bytes=1536 sha256={a} irqs=1"
            )),
        ];
        assert_eq!(same_file_both_sides(&ok), Ok(()));
        let bad = [ok[0].clone(), ok[1].replace(&a, &b)];
        assert!(same_file_both_sides(&bad).is_err());
        assert!(same_file_both_sides(&ok[..1]).is_err());
        let case = ivshmem_linux();
        let re = Regex::new(&case.expect[1]).unwrap();
        assert!(re.is_match(&ok[0]));
        let fail = Regex::new(LINUX_IPC_FAIL).unwrap();
        assert!(
            fail.is_match("[bob] QUERCUS-GUEST: ivshmem error no doorbell interrupt within 60 s")
        );
        assert!(!fail.is_match(&ok[1]));
    }
}
