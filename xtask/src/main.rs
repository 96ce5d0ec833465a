//! `cargo xtask`: builds the Quercus image, boots it in QEMU or Bochs, runs the test suite and benchmarks.

mod bench;
mod bench_ipc;
mod bench_passthrough;
mod bench_rt;
mod bench_virtio;
mod board;
mod bochs;
mod build;
mod console;
mod disk_image;
mod fuzz;
mod linux_image;
mod own_guest;
mod packages;
mod passthrough_data;
mod process;
mod qemu;
mod runner;
mod size;
mod tests;
mod tests_ipc;
mod tests_passthrough;
mod tests_rt;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use regex::Regex;

use crate::build::{BuildOptions, Profile};
use crate::runner::{Emulator, RunConfig};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Quercus build, run, test and bench driver"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the bare-metal hypervisor image.
    Build {
        /// Optimised build (the default).
        #[arg(long, conflicts_with = "debug")]
        release: bool,
        /// Unoptimised build.
        #[arg(long)]
        debug: bool,
    },
    /// Build the image and boot it in an emulator.
    Run(Box<RunArgs>),
    /// Run the host unit tests, then boot the image through the emulator test table.
    Test {
        /// Only the host unit tests.
        #[arg(long, conflicts_with = "emulator_only")]
        unit_only: bool,
        /// Only the emulator test cases.
        #[arg(long)]
        emulator_only: bool,
        /// Only emulator cases whose name contains this string (`^NAME`: that start with it).
        #[arg(long)]
        filter: Option<String>,
        /// Only the native runs of the emulator cases that have one (the guest booted by the
        /// emulator itself, e.g. Linux on QEMU's own virtio devices), with the times of the guest's
        /// milestones; needs no hypervisor build.
        #[arg(long, conflicts_with = "unit_only")]
        native_only: bool,
    },
    /// Build (or reuse) the Linux guest image from Debian packages; print its paths.
    LinuxImage {
        /// Rebuild even when the cached image's inputs are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// Build (or reuse) the ext4 disk image of the virtio-blk tests (boot module `disk`); print
    /// its path and the SHA-256 the guest must print for each file.
    DiskImage {
        /// Rebuild even when the cached image's inputs are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// An emulated board's PCI functions, read from the emulator (QEMU: `info pci` and config
    /// space over QMP; Bochs: the addresses in its log): printed as `[[pci]]` tables, or with
    /// `--check` compared with configs/boards/BOARD.toml (fails on a difference).
    Board {
        /// qemu-vtd, qemu-amdvi or bochs.
        board: String,
        /// Compare with the board file instead of printing.
        #[arg(long)]
        check: bool,
    },
    /// Run the fuzz targets (every cargo-fuzz target under crates/*/fuzz and tools/*/fuzz) under
    /// libFuzzer on the nightly toolchain, installing cargo-fuzz if needed; print runs, time,
    /// corpus size and result per target. Fails if any target finds a crash, leak or timeout.
    Fuzz {
        /// Only this target (`pvh`, or `loader/pvh`).
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Measure things.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Wall time from emulator start to the ready line, per emulator.
    Boot {
        /// Boots per emulator.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// The test guest's CPUID round trip (guest TSC ticks, median of 1000),
    /// natively and under Quercus on each emulator, plus the VM's exit counts.
    Cpuid {
        /// Only these emulators (repeatable; default: qemu, bochs, bochs-amd).
        #[arg(long, value_enum)]
        emulator: Vec<runner::Emulator>,
    },
    /// The round trip of each kind of VM exit (test guest `BENCH` rows, guest
    /// TSC ticks), natively and under Quercus, one table per emulator, plus
    /// the VM's exit counts by reason.
    Exits {
        /// Only these emulators (repeatable; default: bochs, bochs-amd; QEMU's
        /// ticks are wall clock and noisy).
        #[arg(long, value_enum)]
        emulator: Vec<runner::Emulator>,
    },
    /// The release image's footprint: section sizes, the loaded total, the
    /// largest crates per section and the largest symbols.
    Size {
        /// Report this ELF instead of building the release image.
        #[arg(long)]
        image: Option<PathBuf>,
    },
    /// Inter-VM communication between two bare-metal VMs: round trips and streams through the
    /// message channel (polling and doorbell) and the vUART link, in guest ticks, with the
    /// measuring VM's exits per operation.
    Ipc {
        /// Only these emulators (repeatable; default: qemu, bochs, bochs-amd).
        #[arg(long, value_enum)]
        emulator: Vec<runner::Emulator>,
    },
    /// Virtio inside Linux: sequential disk reads and writes (dd, direct I/O, 1M and 4k
    /// blocks) and VM-to-VM TCP, in MiB/s, with the VM exits per MiB and per request (Quercus's
    /// statistics leaf), under Quercus and natively on QEMU's own virtio devices.
    Virtio {
        /// Only these emulators (repeatable; default: qemu, bochs). Native reference runs on
        /// QEMU only.
        #[arg(long, value_enum)]
        emulator: Vec<runner::Emulator>,
        /// Only these parts (repeatable; default: blk, net; net runs on QEMU only).
        #[arg(long, value_enum)]
        part: Vec<bench_virtio::Part>,
    },
    /// Linux on passed-through devices: a download over QEMU's e1000e and direct reads and
    /// writes of its NVMe drive (behind its intel-iommu or amd-iommu), natively and under Quercus,
    /// in MiB/s with interrupts and VM exits per MiB and exits per interrupt.
    Passthrough {
        /// Only these IOMMUs (repeatable; default: intel).
        #[arg(long, value_enum)]
        iommu: Vec<bench_passthrough::Iommu>,
    },
    /// Timer-interrupt latency (the test guest's `rt-latency`), natively and in a real-time VM
    /// (`configs/rt.toml` on QEMU, `configs/rt-bochs.toml` on Bochs), quiet and (unless
    /// `--quiet-only`) under interference (the `rt-interference-*` cases' Linux load and shell
    /// commands): a table, and histograms in target/bench/rt-latency.svg.
    Rt {
        /// Only these emulators (repeatable; default: bochs, bochs-amd, qemu).
        #[arg(long, value_enum)]
        emulator: Vec<runner::Emulator>,
        /// Skip the runs under interference (each boots Linux beside the rt VM: minutes on Bochs).
        #[arg(long)]
        quiet_only: bool,
    },
    /// Debian's kernel to userspace, natively and under Quercus (`linux` scenario).
    Linux {
        /// Boots of each kind.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long, value_enum, default_value_t = runner::Emulator::Qemu)]
        emulator: runner::Emulator,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Scenario: a name (configs/NAME.toml) or a file path (FILE.toml, anywhere; its file paths
    /// are relative to it). The default is the demo: Linux with a virtio disk and network,
    /// pinging a second VM over a virtual switch (configs/default.toml); with --guest, a scenario
    /// of one VM made for the run.
    #[arg(long)]
    scenario: Option<String>,
    /// Your own guest kernel (Multiboot1, ELF64, bzImage or PVH vmlinux; the type is detected):
    /// booted in a VM `guest` of its own (pCPU 1, COM1 console), or with --scenario in place of
    /// the kernel of its first VM (or --vm NAME).
    #[arg(long, value_name = "FILE")]
    guest: Option<PathBuf>,
    /// The guest kernel's type when it cannot or should not be detected
    /// (multiboot, elf64, bzimage, pvh).
    #[arg(long, value_name = "TYPE", requires = "guest")]
    guest_type: Option<String>,
    /// An initrd file for the guest kernel (bzImage or PVH).
    #[arg(long, value_name = "FILE")]
    initrd: Option<PathBuf>,
    /// The guest kernel's command line (default for Linux: console=ttyS0).
    #[arg(long, value_name = "STR")]
    append: Option<String>,
    /// A disk image file, served to the guest as a writable virtio-blk disk (repeatable); the
    /// file is read at boot and never written.
    #[arg(long, value_name = "FILE")]
    disk: Vec<PathBuf>,
    /// The guest VM's RAM in MiB (default: 256, more for large images).
    #[arg(long, value_name = "MIB")]
    guest_mem: Option<u64>,
    /// With --scenario: the VM that gets the --guest, --initrd, --append and --disk files.
    #[arg(long, value_name = "NAME", requires = "scenario")]
    vm: Option<String>,
    #[arg(long, value_enum, default_value_t = Emulator::Qemu)]
    emulator: Emulator,
    /// Number of CPUs (default: what the scenario's VMs need, at least 2).
    #[arg(long)]
    cpus: Option<u32>,
    /// Memory in MiB (default: 512, or more when the VMs and boot modules need it).
    #[arg(long)]
    mem: Option<u32>,
    /// Hypervisor command line.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Boot module: "PATH [ARGS...]" (repeatable; the rest after the first space is its command line).
    #[arg(long = "module", value_name = "PATH ARGS")]
    modules: Vec<String>,
    /// Console line regex to wait for (repeatable: all, in order). Makes the run non-interactive.
    #[arg(long)]
    expect: Vec<String>,
    /// Seconds to wait for the expected lines.
    #[arg(long, requires = "expect", default_value_t = 120)]
    timeout: u64,
    /// Console line regex that ends the run with failure.
    #[arg(long, requires = "expect")]
    fail: Option<String>,
    /// Boot the unoptimised build.
    #[arg(long)]
    debug: bool,
    /// Boot this multiboot ELF instead of building the hypervisor (the scenario is then unused).
    #[arg(long, conflicts_with = "debug")]
    kernel: Option<PathBuf>,
    /// Boot the Linux guest image natively (no hypervisor), for comparison; `--cmdline` is then
    /// added to its kernel command line (`console=ttyS0 quiet`), e.g. `quercus.test=poweroff`.
    #[arg(long, conflicts_with_all = ["debug", "kernel", "modules", "guest", "initrd", "disk"])]
    native_linux: bool,
}

/// The kernel command line of native Linux runs, before `--cmdline` (the
/// `linux` scenario's VM gets the same).
pub const NATIVE_LINUX_CMDLINE: &str = "console=ttyS0 quiet";

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// `configs/NAME.toml`, or an error listing the scenarios that exist; a `name` ending in `.toml`
/// or holding a `/` is a file path (relative to the current directory).
fn scenario_path(root: &Path, name: &str) -> Result<PathBuf> {
    if name.ends_with(".toml") || name.contains('/') {
        let path = std::path::absolute(name).with_context(|| format!("scenario path `{name}`"))?;
        if !path.is_file() {
            bail!("scenario file {} does not exist", path.display());
        }
        return Ok(path);
    }
    let dir = root.join("configs");
    let path = dir.join(format!("{name}.toml"));
    if path.is_file() {
        return Ok(path);
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let p = e.path();
                    (p.extension().is_some_and(|x| x == "toml"))
                        .then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                        .flatten()
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let list = if names.is_empty() {
        "(none)".to_string()
    } else {
        names.join(", ")
    };
    bail!(
        "scenario `{name}` not found: {} does not exist; available scenarios in {}: {list}",
        path.display(),
        dir.display()
    )
}

/// The scenario `cargo xtask run` boots when none is named: the demo (configs/default.toml).
pub const DEFAULT_SCENARIO: &str = "default";

/// The scenario of `cargo xtask build`, `bench boot` and `bench size` (one test-guest VM,
/// configs/guest.toml), when it exists.
pub fn base_scenario(root: &Path) -> Option<PathBuf> {
    scenario_path(root, "guest").ok()
}

/// `"PATH ARGS..."` to a boot module (the path made absolute, which must exist).
fn parse_module(spec: &str) -> Result<runner::BootModule> {
    let (path, args) = spec.split_once(' ').unwrap_or((spec, ""));
    let path = std::path::absolute(path).with_context(|| format!("module path `{path}`"))?;
    if !path.is_file() {
        bail!("boot module {} does not exist", path.display());
    }
    Ok(runner::BootModule {
        path,
        cmdline: args.trim().to_string(),
    })
}

/// The scenario file `cargo xtask run` builds with: `--scenario` (default: the demo), or one
/// written for the run when the user's own files are given.
fn run_scenario(root: &Path, args: &RunArgs) -> Result<PathBuf> {
    let guest = own_guest::GuestFiles {
        kernel: args.guest.clone(),
        kind: args.guest_type.clone(),
        initrd: args.initrd.clone(),
        cmdline: args.append.clone(),
        disks: args.disk.clone(),
        mem_mib: args.guest_mem,
        vm: args.vm.clone(),
    };
    let scenario = args.scenario.as_deref();
    if !guest.any() {
        if args.append.is_some() || args.guest_mem.is_some() {
            bail!("--append and --guest-mem go with --guest, --initrd or --disk");
        }
        return scenario_path(root, scenario.unwrap_or(DEFAULT_SCENARIO));
    }
    let path = match scenario {
        None => own_guest::one_vm_scenario(root, args.emulator, &guest)?,
        Some(name) => own_guest::override_scenario(root, &scenario_path(root, name)?, &guest)?,
    };
    eprintln!("scenario: {}", path.display());
    Ok(path)
}

/// RAM the emulated machine needs for `scenario`: twice its VMs' RAM (each VM needs one
/// contiguous 2 MiB-aligned block, and boot modules sit where the loader put them), its boot
/// modules and 128 MiB for the hypervisor, in MiB rounded up to 128, at least 512.
fn machine_mem_mib(root: &Path, scenario: &Path, modules: &[runner::BootModule]) -> Result<u32> {
    let validated = build::validate(root, scenario)?;
    let vms: u64 = validated.vms.iter().map(|vm| vm.memory_bytes).sum();
    let files: u64 = modules
        .iter()
        .map(|m| std::fs::metadata(&m.path).map_or(0, |meta| meta.len()))
        .sum();
    let need = (2 * vms + files + (128 << 20)).div_ceil(128 << 20) * 128;
    Ok(u32::try_from(need).unwrap_or(u32::MAX).max(512))
}

fn cmd_run(args: RunArgs) -> Result<ExitCode> {
    let root = workspace_root();
    let mut scenario_modules = Vec::new();
    let mut cmdline = args.cmdline.clone();
    let mut cpus = args.cpus.unwrap_or(2);
    let mut mem = args.mem.unwrap_or(512);
    let mut name = args.scenario.clone().unwrap_or(DEFAULT_SCENARIO.into());
    let kernel = match args.kernel {
        None if args.native_linux => {
            let image = linux_image::linux_guest(&root)?;
            scenario_modules.push(runner::BootModule {
                path: image.initrd,
                cmdline: String::new(),
            });
            cmdline = format!("{NATIVE_LINUX_CMDLINE} {cmdline}")
                .trim()
                .to_string();
            image.bzimage
        }
        Some(path) => {
            std::path::absolute(&path).with_context(|| format!("kernel path {}", path.display()))?
        }
        None => {
            let scenario = run_scenario(&root, &args)?;
            name = scenario
                .file_stem()
                .map_or(name, |s| s.to_string_lossy().into_owned());
            let opts = BuildOptions {
                profile: if args.debug {
                    Profile::Debug
                } else {
                    Profile::Release
                },
                scenario: Some(scenario.clone()),
            };
            scenario_modules = build::scenario_modules(&root, &scenario, &opts)?;
            if args.cpus.is_none() {
                cpus = cpus.max(build::scenario_cpus(&root, &scenario)?);
            }
            let need = machine_mem_mib(&root, &scenario, &scenario_modules)?;
            match args.mem {
                None => mem = need,
                Some(given) if given < need => eprintln!(
                    "warning: --mem {given} is less than the {need} MiB the VMs and boot modules of {} need",
                    scenario.display()
                ),
                Some(_) => {}
            }
            build::build_hypervisor(&opts)?
        }
    };
    if !kernel.is_file() {
        bail!("{} does not exist", kernel.display());
    }
    packages::ensure(&packages::requirements(args.emulator))?;
    let expect = args
        .expect
        .iter()
        .map(|s| Regex::new(s).with_context(|| format!("bad --expect regex `{s}`")))
        .collect::<Result<Vec<_>>>()?;
    let fail = args
        .fail
        .as_deref()
        .map(|s| Regex::new(s).with_context(|| format!("bad --fail regex `{s}`")))
        .transpose()?;
    let config = RunConfig {
        name: if args.native_linux {
            "native-linux".to_string()
        } else {
            name
        },
        kernel,
        emulator: args.emulator,
        cpus,
        mem_mib: mem,
        cmdline,
        modules: scenario_modules
            .into_iter()
            .map(Ok)
            .chain(args.modules.iter().map(|m| parse_module(m)))
            .collect::<Result<_>>()?,
        extra_qemu_args: Vec::new(),
        extra_bochsrc: String::new(),
        expect,
        parallel: Vec::new(),
        input: Vec::new(),
        fail,
        timeout: Duration::from_secs(args.timeout),
        echo: true,
    };
    let outcome = runner::run(&config)?;
    if config.expect.is_empty() {
        eprintln!("{}", outcome.reason);
        return Ok(if process::interrupted() {
            ExitCode::from(130)
        } else {
            ExitCode::SUCCESS
        });
    }
    if outcome.matched {
        let secs = outcome.elapsed_to_match.unwrap_or_default().as_secs_f64();
        eprintln!("matched after {secs:.2} s");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{}", outcome.reason);
        for line in &outcome.diagnostics {
            eprintln!("  {line}");
        }
        eprintln!("last console lines:");
        for line in console::tail(&outcome.lines, 40) {
            eprintln!("  | {line}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// `chosen`, or `default` when nothing was chosen.
fn or_default(chosen: Vec<Emulator>, default: &[Emulator]) -> Vec<Emulator> {
    if chosen.is_empty() {
        default.to_vec()
    } else {
        chosen
    }
}

fn main() -> ExitCode {
    process::install_signal_handlers();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build { release: _, debug } => {
            let root = workspace_root();
            let opts = BuildOptions {
                profile: if debug {
                    Profile::Debug
                } else {
                    Profile::Release
                },
                scenario: base_scenario(&root),
            };
            build::build_hypervisor(&opts).map(|path| {
                println!("{}", path.display());
                ExitCode::SUCCESS
            })
        }
        Command::Run(args) => cmd_run(*args),
        Command::LinuxImage { force } => {
            linux_image::build(&workspace_root(), force).map(|image| {
                for path in [&image.bzimage, &image.vmlinux, &image.initrd] {
                    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                    println!("{} ({size} bytes)", path.display());
                }
                println!("kernel {}", image.kernel_version);
                ExitCode::SUCCESS
            })
        }
        Command::DiskImage { force } => disk_image::build(&workspace_root(), force).map(|path| {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            println!("{} ({size} bytes)", path.display());
            let (hello, data, written) = disk_image::expected_hashes();
            println!("hello.txt   sha256={hello}");
            println!("data.bin    sha256={data}");
            println!("written.txt sha256={written} (what the guest writes)");
            ExitCode::SUCCESS
        }),
        Command::Board { board, check } => board::cmd_board(&board, check),
        Command::Test {
            unit_only,
            emulator_only,
            filter,
            native_only,
        } => tests::run_tests(
            !emulator_only && !native_only,
            !unit_only,
            filter.as_deref(),
            native_only,
        ),
        Command::Fuzz { target, seconds } => {
            fuzz::fuzz(&workspace_root(), target.as_deref(), seconds)
        }
        Command::Bench {
            what: BenchWhat::Boot { runs },
        } => bench::bench_boot(runs),
        Command::Bench {
            what: BenchWhat::Cpuid { emulator },
        } => bench::bench_cpuid(&or_default(
            emulator,
            &[Emulator::Qemu, Emulator::Bochs, Emulator::BochsAmd],
        )),
        Command::Bench {
            what: BenchWhat::Exits { emulator },
        } => bench::bench_exits(&or_default(
            emulator,
            &[Emulator::Bochs, Emulator::BochsAmd],
        )),
        Command::Bench {
            what: BenchWhat::Ipc { emulator },
        } => bench_ipc::bench_ipc(&or_default(
            emulator,
            &[Emulator::Qemu, Emulator::Bochs, Emulator::BochsAmd],
        )),
        Command::Bench {
            what: BenchWhat::Size { image },
        } => size::bench_size(image.as_deref()),
        Command::Bench {
            what: BenchWhat::Passthrough { iommu },
        } => bench_passthrough::bench_passthrough(if iommu.is_empty() {
            &[bench_passthrough::Iommu::Intel]
        } else {
            &iommu
        }),
        Command::Bench {
            what: BenchWhat::Linux { runs, emulator },
        } => bench::bench_linux(runs, emulator),
        Command::Bench {
            what:
                BenchWhat::Rt {
                    emulator,
                    quiet_only,
                },
        } => bench_rt::bench_rt(
            &or_default(
                emulator,
                &[Emulator::Bochs, Emulator::BochsAmd, Emulator::Qemu],
            ),
            !quiet_only,
        ),
        Command::Bench {
            what: BenchWhat::Virtio { emulator, part },
        } => bench_virtio::bench_virtio(
            &or_default(emulator, &[Emulator::Qemu, Emulator::Bochs]),
            &if part.is_empty() {
                vec![bench_virtio::Part::Blk, bench_virtio::Part::Net]
            } else {
                part
            },
        ),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
