//! Files a scenario names instead of boot modules the build makes: `kernel.file`, `initrd_file`
//! and a blk device's `file`, each a path relative to the scenario file (or absolute).
//!
//! [`resolve`] runs before the per-VM checks: it reads each file, gives it a boot-module name
//! (`file-<name>`, one per distinct file, so a disk shared read-only by two VMs is one module),
//! detects a kernel's type when none is given and checks a given one against the bytes, and
//! writes the names into the raw VMs so that every later check sees modules as before.
//! [`check_fit`] runs after them: it loads each kernel file (with its initrd file) with the
//! hypervisor's own loader into a RAM of the VM's size that keeps nothing, so a kernel that would
//! not load is refused here, naming the file, the VM and the field.

use std::path::{Path, PathBuf};

use crate::board::Board;
use crate::error::{ConfigError, ErrorKind, VmRef};
use crate::image::Detected;
use crate::input::RawVm;
use crate::model::Vm;
use crate::vm_checks::Report;
use crate::words::{self, VirtioType};

/// The prefix of every file's boot-module name.
pub const FILE_MODULE_PREFIX: &str = "file-";
/// Sector size of a disk image.
const SECTOR: u64 = 512;

/// What a file is to the VM that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// `kernel.file`.
    Kernel,
    /// `initrd_file`.
    Initrd,
    /// A blk device's `file`.
    Disk,
}

/// A file the scenario names, as a boot module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileModule {
    /// The boot-module name the hypervisor finds it by (`file-...`).
    pub name: String,
    /// The file, absolute and canonical.
    pub path: PathBuf,
    /// Its size in bytes when it was checked.
    pub size: u64,
    /// What the first VM naming it uses it for.
    pub role: FileRole,
}

/// The files of one scenario, in order of first mention.
#[derive(Debug, Default)]
pub struct FileTable {
    /// The files.
    pub files: Vec<FileModule>,
}

impl FileTable {
    /// The module name of `path` (canonical), giving it one if it is new.
    fn name_for(&mut self, path: &Path, size: u64, role: FileRole) -> String {
        if let Some(known) = self.files.iter().find(|f| f.path == path) {
            return known.name.clone();
        }
        let stem: String = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '.' | '_' | '-') => c,
                _ => '_',
            })
            .take(48)
            .collect();
        let base = format!("{FILE_MODULE_PREFIX}{stem}");
        let mut name = base.clone();
        let mut n = 2;
        while self.files.iter().any(|f| f.name == name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.files.push(FileModule {
            name: name.clone(),
            path: path.to_owned(),
            size,
            role,
        });
        name
    }

    /// The file behind module `name`, if it is one.
    pub fn get(&self, name: &str) -> Option<&FileModule> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// `written` relative to the directory of `scenario` (absolute paths stay as they are).
pub fn resolve_path(scenario: &Path, written: &str) -> PathBuf {
    let dir = scenario.parent().unwrap_or(Path::new(""));
    dir.join(written)
}

/// Opens `written` (relative to the scenario): its canonical path and size, or why not.
fn stat(scenario: &Path, written: &str) -> Result<(PathBuf, u64), ErrorKind> {
    let path = resolve_path(scenario, written);
    let unreadable = |e: std::io::Error| ErrorKind::FileUnreadable {
        path: path.clone(),
        written: written.to_owned(),
        reason: e.to_string(),
    };
    if written.is_empty() {
        return Err(ErrorKind::FileUnreadable {
            path: path.clone(),
            written: String::new(),
            reason: "the path is empty".to_owned(),
        });
    }
    let meta = std::fs::metadata(&path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(ErrorKind::NotAFile { path });
    }
    let canonical = std::fs::canonicalize(&path).map_err(unreadable)?;
    Ok((canonical, meta.len()))
}

/// Resolves every file the VMs name (see the module documentation). Problems go to `errors`; a
/// file that could not be used leaves its module field empty (later checks then stay silent
/// about it).
pub fn resolve(
    scenario: &Path,
    vms: &mut [(VmRef, RawVm)],
    board: Option<&Board>,
    errors: &mut Vec<ConfigError>,
) -> FileTable {
    let mut table = FileTable::default();
    for (vm, raw) in vms.iter_mut() {
        let mut report = Report {
            file: scenario,
            vm: vm.clone(),
            errors,
        };
        let ram = raw.memory_mib.checked_mul(1 << 20).filter(|&r| r > 0);
        resolve_kernel(&mut report, raw, ram, &mut table);
        resolve_initrd(&mut report, raw, ram, &mut table);
        for index in 0..raw.virtio.len() {
            resolve_disk(&mut report, raw, index, board, &mut table);
        }
    }
    table
}

fn resolve_kernel(
    report: &mut Report<'_>,
    raw: &mut RawVm,
    ram: Option<u64>,
    table: &mut FileTable,
) {
    let kernel = &mut raw.kernel;
    let written = match (&kernel.module, &kernel.file) {
        (Some(_), Some(_)) => {
            report.push(
                "kernel.file",
                ErrorKind::BothGiven {
                    other: "kernel.module".to_owned(),
                },
            );
            return;
        }
        (None, None) => return report.push("kernel.module", ErrorKind::KernelMissing),
        (Some(_), None) => {
            if kernel.kind.is_none() {
                report.push("kernel.type", ErrorKind::TypeRequired);
            }
            return;
        }
        (None, Some(written)) => written.clone(),
    };
    let (path, size) = match stat(report.file, &written) {
        Ok(found) => found,
        Err(kind) => return report.push("kernel.file", kind),
    };
    if let Some(ram) = ram.filter(|&ram| size > ram) {
        return report.push(
            "kernel.file",
            ErrorKind::ImageLargerThanRam {
                what: "kernel",
                path,
                size,
                ram_mib: ram >> 20,
            },
        );
    }
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) => {
            return report.push(
                "kernel.file",
                ErrorKind::FileUnreadable {
                    path,
                    written,
                    reason: e.to_string(),
                },
            )
        }
    };
    let detected = Detected::of(&bytes);
    match kernel.kind.as_deref().map(|w| (w, words::kernel_type(w))) {
        None => match detected.kernel_type() {
            Some(kind) => kernel.kind = Some(words::kernel_type_name(kind).to_owned()),
            None => {
                return report.push(
                    "kernel.file",
                    ErrorKind::UnrecognizedImage {
                        path,
                        size,
                        found: detected.describe(&bytes),
                    },
                )
            }
        },
        Some((given, Some(kind))) if !detected.fits(kind) => {
            let mut found = detected.describe(&bytes);
            if let Some(auto) = detected.kernel_type() {
                found += &format!(
                    " (type {:?}, or leave type out to detect it)",
                    words::kernel_type_name(auto)
                );
            }
            return report.push(
                "kernel.type",
                ErrorKind::TypeMismatch {
                    given: given.to_owned(),
                    path,
                    found,
                },
            );
        }
        // A known type that fits, or an unknown word (reported by the kernel checks).
        Some(_) => {}
    }
    kernel.module = Some(table.name_for(&path, size, FileRole::Kernel));
}

fn resolve_initrd(
    report: &mut Report<'_>,
    raw: &mut RawVm,
    ram: Option<u64>,
    table: &mut FileTable,
) {
    let Some(written) = raw.initrd_file.clone() else {
        return;
    };
    if raw.initrd.is_some() {
        return report.push(
            "initrd_file",
            ErrorKind::BothGiven {
                other: "initrd".to_owned(),
            },
        );
    }
    let (path, size) = match stat(report.file, &written) {
        Ok(found) => found,
        Err(kind) => return report.push("initrd_file", kind),
    };
    if let Some(ram) = ram.filter(|&ram| size > ram) {
        return report.push(
            "initrd_file",
            ErrorKind::ImageLargerThanRam {
                what: "initrd",
                path,
                size,
                ram_mib: ram >> 20,
            },
        );
    }
    raw.initrd = Some(table.name_for(&path, size, FileRole::Initrd));
}

fn resolve_disk(
    report: &mut Report<'_>,
    raw: &mut RawVm,
    index: usize,
    board: Option<&Board>,
    table: &mut FileTable,
) {
    let device = &mut raw.virtio[index];
    if words::virtio_type(&device.kind) != Some(VirtioType::Blk) {
        return; // a `file` on another type is reported by the virtio checks
    }
    let Some(written) = device.file.clone() else {
        return;
    };
    let field = format!("virtio[{index}].file");
    if device.module.is_some() {
        return report.push(
            &field,
            ErrorKind::BothGiven {
                other: format!("virtio[{index}].module"),
            },
        );
    }
    let (path, size) = match stat(report.file, &written) {
        Ok(found) => found,
        Err(kind) => return report.push(&field, kind),
    };
    let problem = if size == 0 {
        Some("an empty disk has no sector")
    } else if size % SECTOR != 0 {
        Some("not a whole number of 512-byte sectors (pad it, e.g. `truncate -s %512 FILE`)")
    } else {
        None
    };
    if let Some(problem) = problem {
        return report.push(
            &field,
            ErrorKind::BadDiskImage {
                path,
                size,
                problem,
            },
        );
    }
    if let Some(board) = board.filter(|b| size > b.memory_mib << 20) {
        return report.push(
            &field,
            ErrorKind::DiskLargerThanBoard {
                path,
                size,
                board_mib: board.memory_mib,
                board: board.name.clone(),
            },
        );
    }
    device.module = Some(table.name_for(&path, size, FileRole::Disk));
}

/// Guest RAM of a VM's size that keeps nothing: the loaders check every range against it, and
/// reads see zeros.
struct Sizing(vcpu::RamLayout);

impl Sizing {
    fn check(&self, gpa: u64, len: usize) -> Result<(), vcpu::GuestMemError> {
        let err = vcpu::GuestMemError { gpa, len };
        self.0.locate(gpa, len as u64).map(|_| ()).ok_or(err)
    }
}

impl vcpu::GuestMemory for Sizing {
    fn size(&self) -> u64 {
        self.0.low()
    }

    fn layout(&self) -> vcpu::RamLayout {
        self.0
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), vcpu::GuestMemError> {
        self.check(gpa, buf.len())?;
        buf.fill(0);
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), vcpu::GuestMemError> {
        self.check(gpa, data.len())
    }
}

/// Loads `image` as `kind` into a VM's RAM laid out as `ram` as the hypervisor would (without
/// boot modules of other VMs' sizes or ACPI tables); the loader's message when it refuses.
pub fn dry_load(
    kind: scenario::KernelKind,
    image: &[u8],
    cmdline: &str,
    initrd: Option<&[u8]>,
    ram: vcpu::RamLayout,
) -> Result<(), String> {
    let mut mem = Sizing(ram);
    let layout = loader::VmLayout {
        ram,
        reserved: &[],
        acpi_rsdp: None,
    };
    let simple = |kind| {
        loader::load(kind, image, cmdline, &[], &mut Sizing(ram))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    match kind {
        scenario::KernelKind::Multiboot1 => simple(loader::KernelKind::Multiboot1),
        scenario::KernelKind::Elf64 => simple(loader::KernelKind::Elf64),
        scenario::KernelKind::Raw {
            load_gpa,
            entry_gpa,
        } => simple(loader::KernelKind::Raw {
            load_gpa,
            entry_gpa,
        }),
        scenario::KernelKind::BzImage => {
            loader::load_bzimage(image, cmdline, initrd, &layout, &mut mem)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        scenario::KernelKind::Pvh => loader::load_pvh(image, cmdline, initrd, &layout, &mut mem)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

/// Checks that each validated VM's kernel file (with its initrd file) loads into its RAM (at
/// its host addresses for a VM owning PCI functions when `dma_off`: see
/// `Scenario::ram_at_host_addresses`).
pub fn check_fit(
    scenario: &Path,
    vms: &[Vm],
    table: &FileTable,
    dma_off: bool,
    errors: &mut Vec<ConfigError>,
) {
    for vm in vms {
        let kernel = table.get(&vm.kernel.module);
        let initrd = vm.initrd.as_deref().and_then(|name| table.get(name));
        if kernel.is_none() && initrd.is_none() {
            continue;
        }
        let mut report = Report {
            file: scenario,
            vm: VmRef {
                index: usize::from(vm.id),
                name: Some(vm.name.clone()),
            },
            errors,
        };
        let ram_mib = vm.memory_bytes >> 20;
        if let (Some(kernel), Some(initrd)) = (kernel, initrd) {
            if kernel.size.saturating_add(initrd.size) > vm.memory_bytes {
                report.push(
                    "initrd_file",
                    ErrorKind::KernelAndInitrdLargerThanRam {
                        path: initrd.path.clone(),
                        kernel_size: kernel.size,
                        initrd_size: initrd.size,
                        ram_mib,
                    },
                );
                continue;
            }
        }
        let Some(kernel) = kernel else {
            continue;
        };
        let read = |f: &FileModule| {
            std::fs::read(&f.path).map_err(|e| ErrorKind::FileUnreadable {
                path: f.path.clone(),
                written: f.path.display().to_string(),
                reason: e.to_string(),
            })
        };
        let image = match read(kernel) {
            Ok(image) => image,
            Err(kind) => return report.push("kernel.file", kind),
        };
        let initrd_bytes = match initrd.map(read).transpose() {
            Ok(bytes) => bytes,
            Err(kind) => return report.push("initrd_file", kind),
        };
        let ram = match vm.host_base {
            Some(base) if dma_off && !vm.pci_devices.is_empty() => {
                // Checked by `check_passthrough_across`: a bad base is reported there.
                let Some(ram) = vcpu::RamLayout::identity(base, vm.memory_bytes) else {
                    continue;
                };
                ram
            }
            _ => vcpu::RamLayout::new(vm.memory_bytes),
        };
        if let Err(message) = dry_load(
            vm.kernel.kind,
            &image,
            &vm.kernel.cmdline,
            initrd_bytes.as_deref(),
            ram,
        ) {
            report.push(
                "kernel.file",
                ErrorKind::ImageDoesNotLoad {
                    path: kernel.path.clone(),
                    kind: kind_word(vm.kernel.kind),
                    ram_mib,
                    message,
                },
            );
        }
    }
}

fn kind_word(kind: scenario::KernelKind) -> &'static str {
    match kind {
        scenario::KernelKind::Elf64 => "elf64",
        scenario::KernelKind::Multiboot1 => "multiboot",
        scenario::KernelKind::Raw { .. } => "raw",
        scenario::KernelKind::BzImage => "bzimage",
        scenario::KernelKind::Pvh => "pvh",
    }
}
