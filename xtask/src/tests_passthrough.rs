//! The `passthrough-*` emulator cases: physical PCI functions of QEMU's emulated board given to
//! VMs behind QEMU's intel-iommu (VT-d) and amd-iommu (AMD-Vi), and Bochs' e1000 without an IOMMU.

use std::path::Path;

use anyhow::{Context, Result};

use crate::board::{self, UserNet};
use crate::build;
use crate::passthrough_data::{self as data, NVME_BYTES, NVME_IMAGE};
use crate::runner::Emulator;
use crate::tests::{all_modules_loaded, boot, Fail, Native, PostCheck, TestCase, GUEST_FAIL};

/// The edu tests of the test guest (guests/test-guest/src/tests/edu.rs), in order.
pub const EDU_TESTS: [&str; 6] = [
    "edu-config",
    "edu-registers",
    "edu-msi",
    "edu-intx",
    "edu-dma",
    "edu-dma-foreign",
];

/// The board's QEMU device arguments, for the `'static` case table.
fn device_args(board: &str) -> &'static [&'static str] {
    device_args_net(board, UserNet::Plain)
}

/// The board's QEMU device arguments with the e1000e's user network defined as `net` says.
pub(crate) fn device_args_net(board: &str, net: UserNet) -> &'static [&'static str] {
    let args = board::qemu_device_args_net(board, Path::new(NVME_IMAGE), net).unwrap_or_default();
    let args: Vec<&'static str> = args
        .into_iter()
        .map(|a| &*Box::leak(a.into_boxed_str()))
        .collect();
    Box::leak(args.into_boxed_slice())
}

/// A blank NVMe drive for the board's NVMe function.
fn blank_nvme(dir: &Path) -> Result<Box<dyn std::any::Any>> {
    let f = std::fs::File::create(dir.join(NVME_IMAGE)).context("creating the NVMe image")?;
    f.set_len(NVME_BYTES)?;
    Ok(Box::new(()))
}

/// edu passed to VM `dma` behind `board`'s IOMMU, VM `victim` beside it.
fn edu(name: &'static str, board: &'static str, scenario: &'static str) -> TestCase {
    let mut expect: Vec<String> = EDU_TESTS
        .iter()
        .map(|t| format!(r"^\[dma\] TEST {t} PASS$"))
        .collect();
    expect.push(format!(
        r"^\[dma\] TESTS DONE {} passed 0 failed$",
        EDU_TESTS.len()
    ));
    expect.push(r"vm dma: stopped: .*powered off by the guest".into());
    // A check the victim made after the DMA VM finished.
    expect.push(r"^\[victim\] victim: check \d+ intact$".into());
    TestCase {
        scenario,
        cpus: 3,
        extra_qemu_args: device_args(board),
        setup: Some(blank_nvme),
        expect,
        parallel: vec![vec![
            r"^\[victim\] victim: pattern at 0x1000000\+0x10000 ready$".into(),
        ]],
        // QEMU 7.2's AMD IOMMU reports no blocked DMA at all: its page walk stops silently at a
        // zero (not present) entry, and its event log is never written (`amdvi_test_mask` ORs
        // where it should AND; both fixed upstream in 2024-25). Behind it the case proves the
        // blocking itself: the victim stays intact, a read brings none of its bytes, and edu
        // still works for its own VM.
        post_check: (board == "qemu-vtd").then_some(edu_faults_reported as PostCheck),
        fail: Fail::Custom(Box::leak(
            format!("{GUEST_FAIL}|CORRUPTED").into_boxed_str(),
        )),
        timeout_secs: 120,
        ..boot(name, Emulator::Qemu, 3)
    }
}

/// The IOMMU reported the DMA the edu tests aimed at the victim and at the hypervisor.
fn edu_faults_reported(lines: &[String]) -> Result<(), String> {
    for (what, addr) in [("victim", "0x9000000"), ("hypervisor", "0x1800000")] {
        let seen = lines
            .iter()
            .any(|l| l.contains("DMA fault") && l.contains("00:04.0") && l.contains(addr));
        if !seen {
            return Err(format!(
                "no IOMMU DMA fault reported for edu's DMA at the {what} ({addr})"
            ));
        }
    }
    Ok(())
}

/// edu flooding its VM with MSIs: silenced by the hypervisor, the victim untouched.
fn edu_storm() -> TestCase {
    TestCase {
        scenario: "passthrough-edu-storm",
        cpus: 3,
        cmdline: "quercus.storm_limit=50",
        extra_qemu_args: device_args("qemu-vtd"),
        setup: Some(blank_nvme),
        expect: vec![
            r"^\[dma\] TEST edu-config PASS$".into(),
            r"vm dma: PCI 00:04.0 floods interrupts \(more than 50 in 100 ms\): silenced until the VM restarts".into(),
            r"^\[dma\] TEST edu-storm PASS$".into(),
            r"^\[dma\] TESTS DONE 2 passed 0 failed$".into(),
            r"vm dma: stopped: .*powered off by the guest".into(),
            r"^\[victim\] victim: check \d+ intact$".into(),
        ],
        fail: Fail::Custom(Box::leak(format!("{GUEST_FAIL}|CORRUPTED").into_boxed_str())),
        timeout_secs: 120,
        // The storm must outrun 50 interrupts per 100 ms of wall clock: alone on the cores.
        solo: true,
        ..boot("passthrough-edu-storm-intel-iommu", Emulator::Qemu, 3)
    }
}

// ---------------------------------------------------------------------------------------------
// Linux owns the NIC and the NVMe drive
// ---------------------------------------------------------------------------------------------

/// The kernel command line of the `passthrough-nic-vtd` and `passthrough-nic-amdvi` scenarios
/// (and of their native runs): the NIC, then the NVMe drive, the URL from the DHCP offer.
pub const NIC_CMDLINE: &str =
    "console=ttyS0 quiet quercus.modules=1 quercus.test=passthrough quercus.fetch=dhcp";
/// `passthrough-nic-intx-vtd`: the same without MSI and MSI-X (INTx only).
pub const NIC_INTX_CMDLINE: &str =
    "console=ttyS0 quiet pci=nomsi quercus.modules=1 quercus.test=passthrough quercus.fetch=dhcp";
/// `passthrough-nic-bochs`: the NIC only (Bochs has no NVMe).
#[cfg(test)]
pub const NIC_BOCHS_CMDLINE: &str =
    "console=ttyS0 quiet quercus.modules=1 quercus.test=passthrough-nic quercus.fetch=dhcp";

/// Failure lines of the Linux passthrough cases under Quercus (a DMA fault of the IOMMU too).
pub(crate) const LINUX_PT_FAIL: &str = r"quercus: fatal|stopped: .*(?:unhandled|cannot|unsupported|refused|triple)|Kernel panic|Attempted to kill init|general protection fault|DMA fault|QUERCUS-GUEST: passthrough error|QUERCUS-GUEST: unknown quercus\.test";
/// Failure lines of their native runs.
pub(crate) const LINUX_PT_NATIVE_FAIL: &str = r"Kernel panic|Attempted to kill init|general protection fault|QUERCUS-GUEST: passthrough error|QUERCUS-GUEST: unknown quercus\.test";

/// The interrupt chips the guest may report: MSI or MSI-X (remapped or not), or the IOAPIC.
const KIND_MSI: &str = r"(?:IR-)?PCI-MSIX?";
const KIND_INTX: &str = r"(?:IR-)?IO-APIC";

/// Which devices a case's guest drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Devices {
    /// e1000e then NVMe (QEMU).
    NicAndNvme,
    /// Bochs' e1000 alone.
    NicOnly,
}

/// What the guest prints, each line after `prefix` (`[linux] ` under Quercus): the hashes are
/// the ones xtask computed from the bytes it served and wrote; `kind` the interrupt chips allowed.
fn linux_pt_lines(prefix: &str, devices: Devices, kind: &str) -> Vec<String> {
    let p = if prefix.is_empty() {
        String::new()
    } else {
        format!("^{}", regex::escape(prefix))
    };
    let (fetched, read, written) = data::expected_hashes();
    let driver = match devices {
        Devices::NicAndNvme => "e1000e",
        Devices::NicOnly => "e1000",
    };
    let mut v = vec![
        format!(r"{p}QUERCUS-GUEST: up$"),
        format!(r"{p}QUERCUS-GUEST: modules loaded=\d+ of \d+$"),
        format!(r"{p}QUERCUS-GUEST: nic \S+ driver={driver} addr=10\.0\.2\.\d+/24$"),
        format!(
            r"{p}QUERCUS-GUEST: nic fetched bytes={} sha256={fetched}$",
            data::FETCH_BYTES
        ),
        format!(r"{p}QUERCUS-GUEST: nic irqs=[1-9]\d* kind={kind}$"),
    ];
    if devices == Devices::NicAndNvme {
        v.extend([
            format!(r"{p}QUERCUS-GUEST: nvme read sha256={read}$"),
            format!(r"{p}QUERCUS-GUEST: nvme wrote sha256={written}$"),
            format!(r"{p}QUERCUS-GUEST: nvme irqs=[1-9]\d* kind={kind}$"),
        ]);
    }
    v.push(format!(r"{p}QUERCUS-GUEST: passthrough done$"));
    v
}

/// The run directory of a QEMU case: the NVMe drive with xtask's pattern, the file server, the
/// user network's `-readconfig` file naming the served file as the DHCP boot file.
fn qemu_setup(dir: &Path) -> Result<Box<dyn std::any::Any>> {
    Ok(Box::new(data::prepare(dir, data::FETCH_FILE, false)?))
}

/// The same for Bochs (its slirp file instead of QEMU's).
fn bochs_setup(dir: &Path) -> Result<Box<dyn std::any::Any>> {
    Ok(Box::new(data::prepare(dir, data::FETCH_FILE, true)?))
}

/// After a passing run: the guest's MiB at 8 MiB on the drive, xtask's first MiB unchanged.
fn nvme_written(dir: &Path) -> Result<(), String> {
    data::check_nvme_image(&dir.join(NVME_IMAGE))
}

/// Linux in VM `linux` owns `board`'s e1000e and NVMe drive (scenario `scenario`, kernel command
/// line `cmdline`): DHCP, a download checked against xtask's file, the drive's pattern read,
/// another written and checked on the host. The same kernel and initramfs first boot natively on
/// the same QEMU devices.
fn linux_nic(
    name: &'static str,
    board: &'static str,
    scenario: &'static str,
    cmdline: &'static str,
    kind: &'static str,
) -> TestCase {
    let mut expect = linux_pt_lines("[linux] ", Devices::NicAndNvme, kind);
    expect.push(r"vm linux: stopped: .*powered off by the guest".into());
    TestCase {
        scenario,
        // The VM's 256 MiB in one piece next to the hypervisor's own memory.
        mem_mib: 1024,
        extra_qemu_args: device_args_net(board, UserNet::Config(data::QEMU_NET_CONFIG)),
        setup: Some(qemu_setup),
        dir_check: Some(nvme_written),
        expect,
        post_check: Some(all_modules_loaded),
        fail: Fail::Custom(LINUX_PT_FAIL),
        timeout_secs: 300,
        native: Some(Native {
            kernel: build::LINUX_MODULE,
            cmdline,
            modules: vec![(build::LINUX_INITRD_MODULE, "")],
            cpus: 1,
            mem_mib: Some(256),
            expect: linux_pt_lines("", Devices::NicAndNvme, kind),
            fail: Some(LINUX_PT_NATIVE_FAIL),
            ..Default::default()
        }),
        native_check: Some(|logs| logs.iter().try_for_each(|l| all_modules_loaded(l))),
        ..boot(name, Emulator::Qemu, 2)
    }
}

/// Linux owns Bochs' e1000 with DMA isolation off (Bochs VT-x; no native run: Debian's kernel
/// does not boot natively on Bochs' `tigerlake`, and Linux boots take minutes there). Without an
/// IOMMU the e1000 DMAs to guest-physical addresses as host ones: the VM's RAM sits at its host
/// addresses (scenario host_base). The e1000 has no MSI capability: its interrupt is INTx through
/// the IOAPIC (GSI 9, from the Bochs board file).
fn linux_nic_bochs() -> TestCase {
    let lines = board::bochs_pci_lines_slirp("bochs", Some(data::SLIRP_CONFIG)).unwrap_or_default();
    let mut expect = vec![
        r"WARN .*DMA isolation is OFF".to_string(),
        r"vm linux: owns PCI 00:02\.0 as 00:02\.0 \(0 host vector".to_string(),
        r"vm linux: RAM at host 0x10000000\.\.0x20000000, guest-physical = host-physical above 1 MiB"
            .to_string(),
    ];
    expect.extend(linux_pt_lines("[linux] ", Devices::NicOnly, KIND_INTX));
    expect.push(r"vm linux: stopped: .*powered off by the guest".into());
    TestCase {
        scenario: "passthrough-nic-bochs",
        mem_mib: 1024,
        extra_bochsrc: Box::leak(lines.into_boxed_str()),
        setup: Some(bochs_setup),
        expect,
        post_check: Some(all_modules_loaded),
        fail: Fail::Custom(LINUX_PT_FAIL),
        timeout_secs: 2400,
        ..boot("passthrough-nic-no-iommu-bochs-vmx", Emulator::Bochs, 2)
    }
}

/// The passthrough cases.
pub fn cases() -> Vec<TestCase> {
    vec![
        edu_storm(),
        edu(
            "passthrough-edu-intel-iommu",
            "qemu-vtd",
            "passthrough-edu-vtd",
        ),
        edu(
            "passthrough-edu-amd-iommu",
            "qemu-amdvi",
            "passthrough-edu-amdvi",
        ),
        linux_nic(
            "passthrough-nic-intel-iommu",
            "qemu-vtd",
            "passthrough-nic-vtd",
            NIC_CMDLINE,
            KIND_MSI,
        ),
        linux_nic(
            "passthrough-nic-amd-iommu",
            "qemu-amdvi",
            "passthrough-nic-amdvi",
            NIC_CMDLINE,
            KIND_MSI,
        ),
        linux_nic(
            "passthrough-nic-intx-intel-iommu",
            "qemu-vtd",
            "passthrough-nic-intx-vtd",
            NIC_INTX_CMDLINE,
            KIND_INTX,
        ),
        linux_nic_bochs(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scenario files carry the command lines the native runs use.
    #[test]
    fn scenarios_carry_the_cmdlines() {
        let root = crate::workspace_root();
        for (scenario, cmdline) in [
            ("passthrough-nic-vtd", NIC_CMDLINE),
            ("passthrough-nic-amdvi", NIC_CMDLINE),
            ("passthrough-nic-intx-vtd", NIC_INTX_CMDLINE),
            ("passthrough-nic-bochs", NIC_BOCHS_CMDLINE),
        ] {
            let path = root.join(format!("configs/{scenario}.toml"));
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.contains(&format!("cmdline = \"{cmdline}\"\n")),
                "{}",
                path.display()
            );
        }
    }

    #[test]
    fn expected_lines_name_xtask_hashes() {
        let (fetched, read, written) = data::expected_hashes();
        let lines = linux_pt_lines("[linux] ", Devices::NicAndNvme, KIND_MSI);
        let matches = |text: &str| {
            lines
                .iter()
                .any(|re| regex::Regex::new(re).unwrap().is_match(text))
        };
        assert!(matches(&format!(
            "[linux] QUERCUS-GUEST: nic fetched bytes=1048576 sha256={fetched}"
        )));
        assert!(!matches(&format!(
            "[linux] QUERCUS-GUEST: nic fetched bytes=1048576 sha256={read}"
        )));
        assert!(matches(&format!(
            "[linux] QUERCUS-GUEST: nvme read sha256={read}"
        )));
        assert!(matches(&format!(
            "[linux] QUERCUS-GUEST: nvme wrote sha256={written}"
        )));
        assert!(matches(
            "[linux] QUERCUS-GUEST: nic eth0 driver=e1000e addr=10.0.2.15/24"
        ));
        assert!(!matches(
            "[linux] QUERCUS-GUEST: nic eth0 driver=e1000 addr=10.0.2.15/24"
        ));
        assert!(matches("[linux] QUERCUS-GUEST: nic irqs=12 kind=PCI-MSI"));
        assert!(matches(
            "[linux] QUERCUS-GUEST: nvme irqs=3 kind=IR-PCI-MSIX"
        ));
        assert!(!matches("[linux] QUERCUS-GUEST: nic irqs=0 kind=PCI-MSI"));
        assert!(!matches("[linux] QUERCUS-GUEST: nic irqs=5 kind=IO-APIC"));
        let intx = linux_pt_lines("", Devices::NicAndNvme, KIND_INTX);
        let re = regex::Regex::new(&intx[4]).unwrap();
        assert!(re.is_match("QUERCUS-GUEST: nic irqs=5 kind=IO-APIC"));
        assert!(!re.is_match("QUERCUS-GUEST: nic irqs=5 kind=PCI-MSI"));
        let bochs = linux_pt_lines("[linux] ", Devices::NicOnly, KIND_INTX);
        assert!(!bochs.iter().any(|l| l.contains("nvme")));
    }

    #[test]
    fn linux_cases_have_their_hooks() {
        let cases = cases();
        for name in [
            "passthrough-nic-intel-iommu",
            "passthrough-nic-amd-iommu",
            "passthrough-nic-intx-intel-iommu",
        ] {
            let c = cases.iter().find(|c| c.name == name).unwrap();
            assert!(c.setup.is_some() && c.dir_check.is_some() && c.native.is_some());
            let args = c.extra_qemu_args.join(" ");
            assert!(args.contains("-readconfig ptnet.cfg"), "{args}");
            assert!(args.contains("file=nvme.img,"), "{args}");
        }
        let bochs = linux_nic_bochs();
        assert_eq!(bochs.emulator, Emulator::Bochs);
        assert!(bochs.extra_bochsrc.contains("slot1=e1000"));
        assert!(bochs.extra_bochsrc.contains("script=slirp.conf"));
    }
}
