//! `cargo xtask board BOARD [--check]`: the `[[pci]]` list of an emulated board, read from the
//! emulator itself, printed in board-file form or checked against `configs/boards/BOARD.toml`.
//!
//! QEMU is started stopped (`-S`) with the board's devices and the same machine arguments as every
//! run (`qemu::args`), and asked over QMP: `info pci` gives the functions and their BARs, config
//! reads through ports 0xCF8/0xCFC give the class code, header type, interrupt pin and the MSI and
//! MSI-X capabilities. Bochs has no monitor: its log names the address of each function it
//! creates, so for Bochs the check covers the addresses only (the ids, classes and BARs in
//! bochs.toml come from the Bochs 2.7 sources, see its header).
//!
//! The device arguments here are the ones the board file describes: passthrough cases must start
//! the emulator with [`qemu_device_args`] / [`bochs_pci_lines`] so that the board file is true.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use configurator::{Bar, BarKind, Bdf, Board, PciFunction};

use crate::process::Guarded;

/// The QEMU arguments that give board `board` its PCI functions, with `disk` as the NVMe drive's
/// backing file (raw); `None` for a board that is not a QEMU board with devices.
pub fn qemu_device_args(board: &str, disk: &Path) -> Option<Vec<String>> {
    qemu_device_args_net(board, disk, UserNet::Plain)
}

/// How the e1000e's user network (netdev `pt0`) is defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserNet<'a> {
    /// `-netdev user,id=pt0`: QEMU's defaults.
    Plain,
    /// `-readconfig FILE`: a QEMU configuration file (read when QEMU starts, relative to its
    /// working directory) whose `[netdev "pt0"]` section defines it, e.g. with a DHCP boot file
    /// name chosen at run time; `-nic none` keeps QEMU from adding its default NIC beside it.
    Config(&'a str),
}

/// [`qemu_device_args`] with the user network defined as `net` says.
pub fn qemu_device_args_net(board: &str, disk: &Path, net: UserNet) -> Option<Vec<String>> {
    let iommu = match board {
        "qemu-vtd" => "intel-iommu",
        "qemu-amdvi" => "amd-iommu",
        _ => return None,
    };
    let netdev: [&str; 4] = match net {
        UserNet::Plain => ["-netdev", "user,id=pt0", "", ""],
        UserNet::Config(file) => ["-nic", "none", "-readconfig", file],
    };
    let args = [
        "-device",
        iommu,
        "-device",
        "edu,addr=04.0",
        netdev[0],
        netdev[1],
        netdev[2],
        netdev[3],
        "-device",
        "e1000e,addr=05.0,netdev=pt0",
        "-drive",
        &format!("file={},if=none,id=ptdisk,format=raw", disk.display()),
        "-device",
        "nvme,serial=quercus-pt,drive=ptdisk,addr=06.0",
    ];
    Some(
        args.iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string())
            .collect(),
    )
}

/// The bochsrc lines that give board `board` its PCI functions (the e1000 in slot 1, which Bochs
/// puts at 00:02.0), with the e1000 on Bochs' slirp network; `None` for other boards.
pub fn bochs_pci_lines(board: &str) -> Option<String> {
    bochs_pci_lines_slirp(board, None)
}

/// [`bochs_pci_lines`] with `script` as the slirp configuration file (Bochs' `script=`, relative
/// to its working directory), e.g. one with a DHCP boot file name chosen at run time.
pub fn bochs_pci_lines_slirp(board: &str, script: Option<&str>) -> Option<String> {
    (board == "bochs").then(|| {
        let script = script.map(|s| format!(", script={s}")).unwrap_or_default();
        format!(
            "pci: enabled=1, chipset=i440fx, slot1=e1000\n\
             e1000: enabled=1, mac=52:54:00:12:34:56, ethmod=slirp{script}\n"
        )
    })
}

/// `cargo xtask board`.
pub fn cmd_board(board: &str, check: bool) -> Result<ExitCode> {
    let root = crate::workspace_root();
    let boards = root.join("configs/boards");
    let found = if board == "bochs" {
        read_bochs(board)?
    } else {
        read_qemu(&root, board)?
    };
    if !check && board == "bochs" {
        println!("# The functions Bochs creates (from its log; IDs, classes and BARs are not readable there):");
        for f in &found {
            println!("# {}  {}", f.bdf, f.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !check {
        print!("{}", render(&found));
        return Ok(ExitCode::SUCCESS);
    }
    let file = Board::load(&boards, board, Path::new("(command line)")).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{}", lines.join("\n"))
    })?;
    let differences = compare(&file.pci, &found, board == "bochs");
    if differences.is_empty() {
        println!(
            "board {board}: the {} [[pci]] functions of {} match the emulator{}",
            file.pci.len(),
            file.file.display(),
            if board == "bochs" {
                " (addresses only: Bochs has no monitor to read config space from)"
            } else {
                ""
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    for line in &differences {
        eprintln!("{}: {line}", file.file.display());
    }
    eprintln!(
        "{} difference(s); `cargo xtask board {board}` prints what the emulator has",
        differences.len()
    );
    Ok(ExitCode::FAILURE)
}

/// Every difference between the board file's functions and the emulator's, one line each. With
/// `addresses_only`, only which functions exist is compared.
pub fn compare(file: &[PciFunction], found: &[PciFunction], addresses_only: bool) -> Vec<String> {
    let mut out = Vec::new();
    for f in file {
        match found.iter().find(|g| g.bdf == f.bdf) {
            None => out.push(format!(
                "{} ({}) is in the file but not in the emulator",
                f.bdf, f.name
            )),
            Some(_) if addresses_only => {}
            Some(g) => {
                let fields = [
                    (
                        "vendor",
                        format!("{:#06x}", f.vendor),
                        format!("{:#06x}", g.vendor),
                    ),
                    (
                        "device",
                        format!("{:#06x}", f.device),
                        format!("{:#06x}", g.device),
                    ),
                    (
                        "class",
                        format!("{:#08x}", f.class),
                        format!("{:#08x}", g.class),
                    ),
                    (
                        "is_bridge",
                        f.is_bridge.to_string(),
                        g.is_bridge.to_string(),
                    ),
                    (
                        "interrupt_pin",
                        format!("{:?}", f.interrupt_pin),
                        format!("{:?}", g.interrupt_pin),
                    ),
                    ("msi", f.msi.to_string(), g.msi.to_string()),
                    ("msix", format!("{:?}", f.msix), format!("{:?}", g.msix)),
                    ("gsi", format!("{:?}", f.gsi), format!("{:?}", g.gsi)),
                    ("bars", bars(&f.bars), bars(&g.bars)),
                ];
                for (name, want, have) in fields {
                    if want != have {
                        out.push(format!(
                            "{} ({}): {name} is {want} in the file, {have} in the emulator",
                            f.bdf, f.name
                        ));
                    }
                }
            }
        }
    }
    for g in found
        .iter()
        .filter(|g| !file.iter().any(|f| f.bdf == g.bdf))
    {
        out.push(format!(
            "{} ({}, {:04x}:{:04x}) is in the emulator but not in the file",
            g.bdf, g.name, g.vendor, g.device
        ));
    }
    out
}

fn bars(bars: &[Bar]) -> String {
    if bars.is_empty() {
        return "[]".to_owned();
    }
    let items: Vec<String> = bars.iter().map(bar).collect();
    format!("[{}]", items.join(", "))
}

fn bar(bar: &Bar) -> String {
    format!(
        "{{ index = {}, kind = \"{}\", size = {}{} }}",
        bar.index,
        bar.kind.name(),
        size(bar.size),
        if bar.prefetchable {
            ", prefetchable = true"
        } else {
            ""
        }
    )
}

/// A BAR size as the board files write it: hex, with a comment-free exact value.
fn size(bytes: u64) -> String {
    format!("{bytes:#x}")
}

/// The functions in board-file form.
pub fn render(functions: &[PciFunction]) -> String {
    let mut out = String::new();
    for f in functions {
        out += &format!(
            "[[pci]]\nbdf = \"{}\"\nvendor = {:#06x}\ndevice = {:#06x}\nclass = {:#08x}\nname = \"{}\"\n",
            f.bdf, f.vendor, f.device, f.class, f.name
        );
        if f.is_bridge {
            out += "is_bridge = true\n";
        }
        if let Some(pin) = f.interrupt_pin {
            out += &format!("interrupt_pin = {pin}\n");
        }
        if f.msi {
            out += "msi = true\n";
        }
        if let Some(n) = f.msix {
            out += &format!("msix = {n}\n");
        }
        if let Some(g) = f.gsi {
            out += &format!("gsi = {g}\n");
        }
        if !f.bars.is_empty() {
            out += &format!("bars = {}\n", bars(&f.bars));
        }
        out += "\n";
    }
    out
}

/// A QEMU stopped before the first instruction, spoken to over QMP on its stdin/stdout.
struct Qmp {
    _child: Guarded,
    stdin: ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Qmp {
    /// One QMP command; its `return` value (events in between are skipped).
    fn execute(&mut self, command: &serde_json::Value) -> Result<serde_json::Value> {
        writeln!(self.stdin, "{command}").context("writing to QEMU's QMP")?;
        self.stdin.flush().context("writing to QEMU's QMP")?;
        loop {
            let mut line = String::new();
            if self
                .stdout
                .read_line(&mut line)
                .context("reading QEMU's QMP")?
                == 0
            {
                bail!("QEMU closed its QMP connection (it exited: see its messages above)");
            }
            let reply: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("QEMU's QMP sent something that is not JSON: {line}"))?;
            if let Some(value) = reply.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = reply.get("error") {
                bail!("QEMU refused {command}: {error}");
            }
        }
    }

    /// A human monitor command's output.
    fn hmp(&mut self, command: &str) -> Result<String> {
        let value = self.execute(&serde_json::json!({
            "execute": "human-monitor-command",
            "arguments": { "command-line": command },
        }))?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// A configuration dword through ports 0xCF8/0xCFC.
    fn config_read(&mut self, bdf: Bdf, offset: u8) -> Result<u32> {
        let address = 0x8000_0000u32
            | u32::from(bdf.bus) << 16
            | u32::from(bdf.device) << 11
            | u32::from(bdf.function) << 8
            | u32::from(offset & 0xFC);
        self.hmp(&format!("o /w 0xcf8 {address:#x}"))?;
        let out = self.hmp("i /w 0xcfc")?;
        let value = out
            .split_once("= 0x")
            .and_then(|(_, hex)| u32::from_str_radix(hex.trim(), 16).ok())
            .with_context(|| format!("unexpected port read output {out:?}"))?;
        Ok(value)
    }
}

fn read_qemu(root: &Path, board: &str) -> Result<Vec<PciFunction>> {
    let dir = root.join("target/board");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let disk: PathBuf = dir.join("nvme.img");
    let file =
        std::fs::File::create(&disk).with_context(|| format!("creating {}", disk.display()))?;
    file.set_len(1 << 20)
        .with_context(|| format!("sizing {}", disk.display()))?;
    let Some(devices) = qemu_device_args(board, &disk) else {
        bail!(
            "board {board:?} has no emulator description here (known: qemu-vtd, qemu-amdvi, bochs)"
        );
    };
    let config = crate::runner::RunConfig {
        name: format!("board-{board}"),
        kernel: PathBuf::from("/dev/null"),
        emulator: crate::runner::Emulator::Qemu,
        cpus: 4,
        mem_mib: 2048,
        cmdline: String::new(),
        modules: Vec::new(),
        extra_qemu_args: devices,
        extra_bochsrc: String::new(),
        expect: Vec::new(),
        parallel: Vec::new(),
        input: Vec::new(),
        fail: None,
        timeout: Duration::from_secs(30),
        echo: false,
    };
    let mut args = machine_args(&crate::qemu::args(&config));
    args.extend(["-S", "-qmp", "stdio"].map(String::from));
    let mut command = Command::new(crate::qemu::BINARY);
    command
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = Guarded::spawn(&mut command, true)
        .with_context(|| format!("starting {}", crate::qemu::BINARY))?;
    let stdin = child.take_stdin().context("QEMU's stdin")?;
    let stdout = child.take_stdout().context("QEMU's stdout")?;
    let mut qmp = Qmp {
        _child: child,
        stdin,
        stdout: BufReader::new(stdout),
    };
    qmp.execute(&serde_json::json!({ "execute": "qmp_capabilities" }))?;
    let listing = qmp.hmp("info pci")?;
    let mut functions = parse_info_pci(&listing)?;
    for f in &mut functions {
        fill_from_config(&mut qmp, f)?;
    }
    let _ = qmp.execute(&serde_json::json!({ "execute": "quit" }));
    Ok(functions)
}

/// `qemu::args` without what a stopped board query must not have: the kernel and its command
/// line and modules (nothing boots), the serial console on stdio (QMP is there).
fn machine_args(run: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut args = run.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-kernel" | "-append" | "-initrd" => {
                args.next();
            }
            "-serial" => {
                args.next();
                out.extend(["-serial", "none"].map(String::from));
            }
            _ => out.push(arg.clone()),
        }
    }
    out
}

/// The functions and BARs of QEMU's `info pci` (segment 0). Names come from [`known_name`] or
/// QEMU's description; the class, pin and capabilities are filled in from config space later.
pub fn parse_info_pci(text: &str) -> Result<Vec<PciFunction>> {
    let mut out: Vec<PciFunction> = Vec::new();
    let mut lines = text.lines().map(str::trim).peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("Bus") {
            let numbers: Vec<u8> = rest
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .map(str::parse)
                .collect::<Result<_, _>>()
                .with_context(|| format!("unexpected `info pci` line {line:?}"))?;
            let [bus, device, function] = numbers[..] else {
                bail!("unexpected `info pci` line {line:?}");
            };
            let describe = lines.next().unwrap_or_default();
            let (what, ids) = describe
                .split_once(": PCI device ")
                .with_context(|| format!("unexpected `info pci` line {describe:?}"))?;
            let (vendor, device_id) = ids
                .split_once(':')
                .and_then(|(v, d)| {
                    Some((
                        u16::from_str_radix(v, 16).ok()?,
                        u16::from_str_radix(d.trim(), 16).ok()?,
                    ))
                })
                .with_context(|| format!("unexpected ids in {describe:?}"))?;
            out.push(PciFunction {
                bdf: Bdf {
                    bus,
                    device,
                    function,
                },
                vendor,
                device: device_id,
                class: 0,
                name: known_name(vendor, device_id).unwrap_or(what).to_owned(),
                bridge: None,
                is_bridge: false,
                uart: false,
                interrupt_pin: None,
                msi: false,
                msix: None,
                gsi: None,
                bars: Vec::new(),
                iommu_unit: None,
            });
        } else if let (Some(rest), Some(current)) = (line.strip_prefix("BAR"), out.last_mut()) {
            if let Some(bar) = parse_bar(rest)? {
                current.bars.push(bar);
            }
        }
    }
    Ok(out)
}

/// `"0: 32 bit memory at 0xffffffffffffffff [0x000ffffe]."` (after `BAR`); `None` for the
/// expansion ROM (BAR6), which the board files do not list.
fn parse_bar(rest: &str) -> Result<Option<Bar>> {
    let bad = || anyhow::anyhow!("unexpected `info pci` BAR line {rest:?}");
    let (index, text) = rest.split_once(':').ok_or_else(bad)?;
    let index: u8 = index.parse().map_err(|_| bad())?;
    if index > 5 {
        return Ok(None);
    }
    let kind = if text.contains("I/O") {
        BarKind::Io
    } else if text.contains("64 bit") {
        BarKind::Mem64
    } else {
        BarKind::Mem32
    };
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|_| bad());
    let (_, after_at) = text.split_once(" at ").ok_or_else(bad)?;
    let (start, end) = after_at.split_once(" [").ok_or_else(bad)?;
    let end = end.trim_end_matches('.').trim_end_matches(']');
    // `[end]` is start + size - 1, wrapping when the BAR is unassigned (start all ones).
    let size = hex(end)?.wrapping_sub(hex(start)?).wrapping_add(1);
    Ok(Some(Bar {
        index,
        kind,
        size,
        prefetchable: text.contains("prefetchable"),
    }))
}

/// The full class code, header type, interrupt pin, MSI and MSI-X table size from config space.
fn fill_from_config(qmp: &mut Qmp, f: &mut PciFunction) -> Result<()> {
    f.class = qmp.config_read(f.bdf, 0x08)? >> 8;
    let header = (qmp.config_read(f.bdf, 0x0C)? >> 16) & 0x7F;
    f.is_bridge = header == 1;
    let pin = (qmp.config_read(f.bdf, 0x3C)? >> 8) as u8;
    f.interrupt_pin = (1..=4).contains(&pin).then_some(pin);
    f.gsi = f.interrupt_pin.and_then(|pin| q35_gsi(f.bdf, pin));
    let status = qmp.config_read(f.bdf, 0x04)? >> 16;
    if status & 0x10 == 0 {
        return Ok(());
    }
    let mut pointer = (qmp.config_read(f.bdf, 0x34)? & 0xFC) as u8;
    let mut seen = 0;
    while pointer >= 0x40 && seen < 48 {
        seen += 1;
        let header = qmp.config_read(f.bdf, pointer)?;
        match header & 0xFF {
            0x05 => f.msi = true,
            0x11 => f.msix = Some(((header >> 16) & 0x7FF) as u16 + 1),
            _ => {}
        }
        pointer = ((header >> 8) & 0xFC) as u8;
    }
    Ok(())
}

/// The I/O APIC input a q35 root-bus function's INTx pin drives: QEMU's `_PRT` routes slots
/// 1 to 24 through PIRQ E-H, which the ICH9 wires to GSIs 20-23 in APIC mode, swizzled by slot
/// (seen: Debian's kernel with `pci=nomsi` puts e1000e at 00:05.0 on GSI 21, NVMe at 00:06.0 on
/// 22). Other slots (25-31 are chipset functions) are not given a GSI.
fn q35_gsi(bdf: Bdf, pin: u8) -> Option<u8> {
    (bdf.bus == 0 && (1..=24).contains(&bdf.device) && (1..=4).contains(&pin))
        .then(|| 20 + (bdf.device + pin - 1) % 4)
}

/// Names for the functions of the emulated boards.
fn known_name(vendor: u16, device: u16) -> Option<&'static str> {
    Some(match (vendor, device) {
        (0x8086, 0x29C0) => "q35 host bridge (MCH)",
        (0x1234, 0x1111) => "QEMU standard VGA",
        (0x1234, 0x11E8) => "edu",
        (0x8086, 0x10D3) => "e1000e",
        (0x1B36, 0x0010) => "nvme",
        (0x8086, 0x2918) => "ICH9 LPC/ISA bridge",
        (0x8086, 0x2922) => "ICH9 AHCI SATA",
        (0x8086, 0x2930) => "ICH9 SMBus",
        (0x1022, _) => "AMD IOMMU",
        _ => return None,
    })
}

/// Bochs: which functions exist, from its log (`... present at device D, function F`).
fn read_bochs(board: &str) -> Result<Vec<PciFunction>> {
    let root = crate::workspace_root();
    let dir = root.join("target/board");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = dir.join("bochs.log");
    let _ = std::fs::remove_file(&log);
    let lines = bochs_pci_lines(board).unwrap_or_default();
    let rc = format!(
        "memory: guest=64, host=64\n\
         cpu: model=tigerlake, count=1, ips=50000000\n\
         romimage: file={}, options=fastboot\n\
         vgaromimage: file={}\n\
         {lines}\
         display_library: rfb, options=\"timeout=0\"\n\
         clock: sync=none, time0=local\n\
         speaker: enabled=0\n\
         sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy\n\
         log: {}\n\
         panic: action=fatal\nerror: action=report\ninfo: action=report\ndebug: action=ignore\n",
        crate::bochs::BIOS,
        crate::bochs::VGA_BIOS,
        log.display()
    );
    let rc_path = dir.join("bochsrc");
    std::fs::write(&rc_path, rc).with_context(|| format!("writing {}", rc_path.display()))?;
    let mut command = Command::new("bochs");
    command
        .arg("-q")
        .arg("-f")
        .arg(&rc_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = Guarded::spawn(&mut command, true).context("starting bochs")?;
    // Devices are created before the BIOS runs; with nothing to boot, the BIOS gives up and Bochs
    // exits (which flushes its log). Stop it ourselves if it does not.
    let start = Instant::now();
    while child.try_wait().context("waiting for bochs")?.is_none()
        && start.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(child);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((what, at)) = line.split_once(" present at device ") else {
            continue;
        };
        let name = what.rsplit_once("] ").map_or(what, |(_, name)| name).trim();
        let (device, function) = at
            .split_once(", function ")
            .and_then(|(d, f)| Some((d.trim().parse().ok()?, f.trim().parse().ok()?)))
            .with_context(|| format!("unexpected Bochs log line {line:?}"))?;
        out.push(PciFunction {
            bdf: Bdf {
                bus: 0,
                device,
                function,
            },
            vendor: 0,
            device: 0,
            class: 0,
            name: name.to_owned(),
            bridge: None,
            is_bridge: false,
            uart: false,
            interrupt_pin: None,
            msi: false,
            msix: None,
            gsi: None,
            bars: Vec::new(),
            iommu_unit: None,
        });
    }
    if out.is_empty() {
        bail!("Bochs logged no PCI function in {}", log.display());
    }
    out.sort_by_key(|f| f.bdf);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO_PCI: &str = "  Bus  0, device   0, function 0:
    Host bridge: PCI device 8086:29c0
      PCI subsystem 1af4:1100
      id \"\"
  Bus  0, device   1, function 0:
    VGA controller: PCI device 1234:1111
      PCI subsystem 1af4:1100
      BAR0: 32 bit prefetchable memory at 0xffffffffffffffff [0x00fffffe].
      BAR2: 32 bit memory at 0xffffffffffffffff [0x00000ffe].
      BAR6: 32 bit memory at 0xffffffffffffffff [0x0000fffe].
      id \"\"
  Bus  0, device   5, function 0:
    Ethernet controller: PCI device 8086:10d3
      IRQ 0, pin A
      BAR2: I/O at 0xffffffffffffffff [0x001e].
      id \"\"
  Bus  0, device   6, function 0:
    Class 0264: PCI device 1b36:0010
      BAR0: 64 bit memory at 0xfe000000 [0xfe003fff].
      id \"\"
  Bus  0, device  31, function 3:
    Class 3333: PCI device abcd:0001
";

    #[test]
    fn parses_info_pci() {
        let functions = parse_info_pci(INFO_PCI).unwrap();
        let summary: Vec<String> = functions
            .iter()
            .map(|f| {
                format!(
                    "{} {:04x}:{:04x} {} {}",
                    f.bdf,
                    f.vendor,
                    f.device,
                    f.name,
                    bars(&f.bars)
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                "00:00.0 8086:29c0 q35 host bridge (MCH) []",
                "00:01.0 1234:1111 QEMU standard VGA [{ index = 0, kind = \"mem32\", size = 0x1000000, prefetchable = true }, { index = 2, kind = \"mem32\", size = 0x1000 }]",
                "00:05.0 8086:10d3 e1000e [{ index = 2, kind = \"io\", size = 0x20 }]",
                "00:06.0 1b36:0010 nvme [{ index = 0, kind = \"mem64\", size = 0x4000 }]",
                "00:1f.3 abcd:0001 Class 3333 []",
            ]
        );
    }

    #[test]
    fn rejects_garbled_info_pci() {
        assert!(parse_info_pci("Bus 0, device x:\n").is_err());
        assert!(parse_info_pci("Bus 0, device 1, function 0:\n  no ids here\n").is_err());
        assert!(parse_info_pci(
            "Bus 0, device 1, function 0:\n  X: PCI device 1234:1111\n BAR0: 32 bit memory\n"
        )
        .is_err());
    }

    #[test]
    fn compare_reports_each_difference() {
        let found = parse_info_pci(INFO_PCI).unwrap();
        let mut file = found.clone();
        assert!(compare(&file, &found, false).is_empty());
        file[1].bars[0].size = 0x80_0000;
        file[2].msix = Some(5);
        file.remove(4);
        file.push(PciFunction {
            bdf: Bdf {
                bus: 0,
                device: 7,
                function: 0,
            },
            ..found[0].clone()
        });
        let differences = compare(&file, &found, false);
        assert_eq!(differences.len(), 4, "{differences:#?}");
        assert!(differences[0].starts_with("00:01.0 (QEMU standard VGA): bars is"));
        assert!(differences[1].starts_with("00:05.0 (e1000e): msix is Some(5) in the file, None"));
        assert!(
            differences[2].starts_with("00:07.0 (q35 host bridge (MCH)) is in the file but not")
        );
        assert!(differences[3]
            .starts_with("00:1f.3 (Class 3333, abcd:0001) is in the emulator but not"));
        // Addresses only: the changed fields do not count, the missing and extra functions do.
        assert_eq!(compare(&file, &found, true).len(), 2);
    }

    #[test]
    fn rendered_functions_parse_as_a_board() {
        let found = parse_info_pci(INFO_PCI).unwrap();
        let text = format!(
            "vendor = \"amd\"\npcpus = 4\nmemory_mib = 2048\nhv_memory_mib = 64\n{}",
            render(&found)
        );
        let board = Board::parse(Path::new("b.toml"), "b", &text).unwrap();
        assert!(compare(&board.pci, &found, false).is_empty());
    }

    #[test]
    fn machine_args_drop_the_boot() {
        let run: Vec<String> = [
            "-M", "q35", "-kernel", "k", "-append", "a b", "-serial", "stdio", "-x",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(machine_args(&run), ["-M", "q35", "-serial", "none", "-x"]);
    }

    #[test]
    fn device_arguments_per_board() {
        let disk = Path::new("/d.img");
        let vtd = qemu_device_args("qemu-vtd", disk).unwrap().join(" ");
        assert!(
            vtd.starts_with("-device intel-iommu -device edu,addr=04.0"),
            "{vtd}"
        );
        assert!(vtd.contains("file=/d.img,"));
        let amd = qemu_device_args("qemu-amdvi", disk).unwrap().join(" ");
        assert!(amd.starts_with("-device amd-iommu "));
        assert_eq!(qemu_device_args("qemu", disk), None);
        assert!(bochs_pci_lines("bochs").unwrap().contains("slot1=e1000"));
        assert!(bochs_pci_lines("bochs")
            .unwrap()
            .ends_with("ethmod=slirp\n"));
        assert!(bochs_pci_lines_slirp("bochs", Some("s.conf"))
            .unwrap()
            .ends_with("ethmod=slirp, script=s.conf\n"));
        let plain = qemu_device_args("qemu-vtd", disk).unwrap();
        assert!(plain.windows(2).any(|w| w == ["-netdev", "user,id=pt0"]));
        let configured = qemu_device_args_net("qemu-vtd", disk, UserNet::Config("n.cfg")).unwrap();
        let joined = configured.join(" ");
        assert!(
            joined.contains(
                "edu,addr=04.0 -nic none -readconfig n.cfg -device e1000e,addr=05.0,netdev=pt0"
            ),
            "{joined}"
        );
        assert!(!joined.contains("-netdev"));
        assert_eq!(configured.len(), plain.len() + 2);
        assert_eq!(bochs_pci_lines("qemu"), None);
    }
}
