//! Checks on one `[[vm]]` table alone (and against the board): names, words, pCPUs, memory, kernel.

use std::collections::BTreeSet;
use std::path::Path;

use scenario::{KernelKind, LoadOrder, VmType};

use crate::board::Board;
use crate::error::{ConfigError, ErrorKind, VmRef};
use crate::input::{RawKernel, RawVm};
use crate::model::{Kernel, Module, Vm};
use crate::passthrough_checks::check_passthrough;
use crate::validate::Modules;
use crate::virtio_checks::check_virtio;
use crate::words::{self, KernelType};

/// 2 MiB: the granularity of guest RAM sizes and fixed placements (one large page).
pub const MIB_2: u64 = 2 << 20;

/// Collects errors for one VM of one file.
pub struct Report<'a> {
    pub file: &'a Path,
    pub vm: VmRef,
    pub errors: &'a mut Vec<ConfigError>,
}

impl Report<'_> {
    /// Records that `field` of this VM is wrong.
    pub fn push(&mut self, field: &str, kind: ErrorKind) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            vm: Some(self.vm.clone()),
            field: field.to_owned(),
            kind,
        });
    }
}

/// Checks `raw` on its own and against `board` (when the board is usable), with the scenario's
/// `switches` (see [`collect_switches`](crate::virtio_checks::collect_switches)). Returns the VM
/// when nothing was wrong with it.
pub fn check_vm(
    report: &mut Report<'_>,
    raw: &RawVm,
    board: Option<&Board>,
    modules: Modules<'_>,
    switches: &[String],
) -> Option<Vm> {
    let before = report.errors.len();
    // Distinct non-zero u16 pCPUs per VM bound a valid scenario to fewer than 2^16 VMs.
    let id = u16::try_from(report.vm.index).unwrap_or(u16::MAX);

    if let Err(kind) = crate::name::check_name(&raw.name) {
        report.push("name", kind);
    }
    let load_order = words::load_order(&raw.load_order);
    if load_order.is_none() {
        report.push("load_order", unknown(&raw.load_order, words::LOAD_ORDERS));
    }
    let vm_type_word = raw.vm_type.as_deref().unwrap_or("standard");
    let vm_type = words::vm_type(vm_type_word);
    if vm_type.is_none() {
        report.push("vm_type", unknown(vm_type_word, words::VM_TYPES));
    }
    if let (Some(VmType::Rt), Some(order)) = (vm_type, load_order) {
        if order != LoadOrder::PreLaunched {
            report.push(
                "vm_type",
                ErrorKind::RtNotPreLaunched {
                    load_order: words::load_order_name(order),
                },
            );
        }
    }

    check_pcpus(report, &raw.pcpus, board);
    let memory_bytes = check_memory(report, raw, board);
    let kernel = check_kernel(report, &raw.kernel, memory_bytes, modules);
    if let Some(initrd) = &raw.initrd {
        // A file's generated name is known: `files::resolve` checked the file.
        let field = if raw.initrd_file.is_some() {
            "initrd_file"
        } else {
            "initrd"
        };
        check_module(report, field, initrd, modules);
        if kernel_type_is(raw, |k| !matches!(k, KernelType::BzImage | KernelType::Pvh)) {
            report.push(
                field,
                ErrorKind::InitrdNotLinux {
                    kind: raw.kernel.kind_word().to_owned(),
                },
            );
        }
    }
    let boot_modules = check_boot_modules(report, raw, modules);
    let console = raw.console.as_ref().and_then(|console| {
        let vuart = words::vuart(&console.vuart);
        if vuart.is_none() {
            report.push("console.vuart", unknown(&console.vuart, words::VUARTS));
        }
        vuart
    });
    let virtio = check_virtio(report, raw, id, modules, switches);
    let pci_devices = check_passthrough(report, raw, board);

    if report.errors.len() != before {
        return None;
    }
    Some(Vm {
        id,
        name: raw.name.clone(),
        load_order: load_order?,
        vm_type: vm_type?,
        pcpus: raw.pcpus.clone(),
        memory_bytes: memory_bytes?,
        host_base: raw.host_base,
        kernel: kernel?,
        initrd: raw.initrd.clone(),
        modules: boot_modules,
        console,
        restart_on_reset: raw.restart_on_reset,
        pci_test_device: raw.pci_test_device,
        virtio,
        pci_devices,
    })
}

/// Whether the kernel type is a known word for which `test` holds.
fn kernel_type_is(raw: &RawVm, test: impl Fn(KernelType) -> bool) -> bool {
    words::kernel_type(raw.kernel.kind_word()).is_some_and(test)
}

/// Checks `modules`: only for a multiboot kernel, at most [`scenario::MAX_MODULES`], each a known
/// module name followed by its arguments, no NUL, at most [`scenario::MODULE_CMDLINE_MAX`] bytes.
fn check_boot_modules(report: &mut Report<'_>, raw: &RawVm, modules: Modules<'_>) -> Vec<Module> {
    if raw.modules.is_empty() {
        return Vec::new();
    }
    if kernel_type_is(raw, |k| k != KernelType::Multiboot) {
        report.push(
            "modules",
            ErrorKind::ModulesNotMultiboot {
                kind: raw.kernel.kind_word().to_owned(),
            },
        );
    }
    if raw.modules.len() > scenario::MAX_MODULES {
        report.push(
            "modules",
            ErrorKind::TooManyModules {
                count: raw.modules.len(),
                max: scenario::MAX_MODULES,
            },
        );
    }
    let mut out = Vec::new();
    for (i, entry) in raw.modules.iter().enumerate() {
        let field = format!("modules[{i}]");
        let name = entry.split_whitespace().next().unwrap_or("");
        let mut ok = check_module(report, &field, name, modules);
        if let Some(offset) = entry.find('\0') {
            report.push(&field, ErrorKind::CmdlineNul(offset));
            ok = false;
        }
        if entry.len() > scenario::MODULE_CMDLINE_MAX {
            report.push(
                &field,
                ErrorKind::ModuleCmdlineTooLong {
                    len: entry.len(),
                    max: scenario::MODULE_CMDLINE_MAX,
                },
            );
            ok = false;
        }
        if ok {
            out.push(Module {
                name: name.to_owned(),
                cmdline: entry.clone(),
            });
        }
    }
    out
}

/// An unknown word for a field that takes one of `expected`.
pub fn unknown(value: &str, expected: &'static str) -> ErrorKind {
    ErrorKind::UnknownValue {
        value: value.to_owned(),
        expected,
    }
}

fn check_pcpus(report: &mut Report<'_>, pcpus: &[u16], board: Option<&Board>) {
    if pcpus.is_empty() {
        report.push("pcpus", ErrorKind::EmptyPcpus);
    }
    let mut seen = BTreeSet::new();
    for &pcpu in pcpus {
        if !seen.insert(pcpu) {
            report.push("pcpus", ErrorKind::PcpuDuplicate(pcpu));
        } else if pcpu == 0 {
            report.push("pcpus", ErrorKind::PcpuZero);
        } else if let Some(board) = board.filter(|b| pcpu >= b.pcpus) {
            report.push(
                "pcpus",
                ErrorKind::PcpuOutOfRange {
                    pcpu,
                    board: board.name.clone(),
                    count: board.pcpus,
                },
            );
        }
    }
}

/// Checks size and fixed placement; returns the size in bytes when the size is valid.
fn check_memory(report: &mut Report<'_>, raw: &RawVm, board: Option<&Board>) -> Option<u64> {
    let mib = raw.memory_mib;
    let bytes = mib.checked_mul(1 << 20);
    let size_ok = if mib == 0 {
        report.push("memory_mib", ErrorKind::MemoryZero);
        false
    } else if mib % 2 != 0 {
        report.push("memory_mib", ErrorKind::MemoryNotAligned(mib));
        false
    } else {
        true
    };
    if let Some(base) = raw.host_base {
        if base % MIB_2 != 0 {
            report.push("host_base", ErrorKind::HostBaseNotAligned(base));
        } else if let (Some(board), Some(size)) = (board, bytes.filter(|_| size_ok)) {
            let end = base.checked_add(size);
            if end.is_none_or(|end| end > board.memory_mib << 20) {
                report.push(
                    "host_base",
                    ErrorKind::HostBasePastMemory {
                        base,
                        end: end.unwrap_or(u64::MAX),
                        board_mib: board.memory_mib,
                        board: board.name.clone(),
                    },
                );
            }
        }
    }
    bytes.filter(|_| size_ok)
}

fn check_kernel(
    report: &mut Report<'_>,
    raw: &RawKernel,
    memory_bytes: Option<u64>,
    modules: Modules<'_>,
) -> Option<Kernel> {
    // A missing module or type, and everything about a file, were reported by `files::resolve`.
    let module_ok = match &raw.module {
        Some(module) if raw.file.is_none() => {
            check_module(report, "kernel.module", module, modules)
        }
        Some(_) => true,
        None => false,
    };
    if let Some(offset) = raw.cmdline.find('\0') {
        report.push("kernel.cmdline", ErrorKind::CmdlineNul(offset));
    }
    let word = raw.kind.as_deref()?;
    let Some(kind) = words::kernel_type(word) else {
        report.push("kernel.type", unknown(word, words::KERNEL_TYPES));
        return None;
    };
    let addresses = [
        ("kernel.load_addr", raw.load_addr),
        ("kernel.entry", raw.entry),
    ];
    if kind != KernelType::Raw {
        for (field, _) in addresses.iter().filter(|(_, addr)| addr.is_some()) {
            report.push(
                field,
                ErrorKind::AddressNotRaw {
                    kind: word.to_owned(),
                },
            );
        }
    }
    let kind = match kind {
        KernelType::Elf64 => KernelKind::Elf64,
        KernelType::Multiboot => KernelKind::Multiboot1,
        KernelType::BzImage => KernelKind::BzImage,
        KernelType::Pvh => KernelKind::Pvh,
        KernelType::Raw => {
            for (field, addr) in addresses {
                match (addr, memory_bytes) {
                    (None, _) => report.push(field, ErrorKind::RawNeedsAddress),
                    (Some(addr), Some(size)) if addr >= size => report.push(
                        field,
                        ErrorKind::AddressOutsideRam {
                            addr,
                            mib: size >> 20,
                        },
                    ),
                    _ => {}
                }
            }
            KernelKind::Raw {
                load_gpa: raw.load_addr?,
                entry_gpa: raw.entry?,
            }
        }
    };
    module_ok.then(|| Kernel {
        module: raw.module_name().to_owned(),
        kind,
        cmdline: raw.cmdline.clone(),
    })
}

/// Checks that boot module `name` exists; returns whether it does.
pub fn check_module(
    report: &mut Report<'_>,
    field: &str,
    name: &str,
    modules: Modules<'_>,
) -> bool {
    if name.is_empty() {
        report.push(field, ErrorKind::EmptyModule);
        return false;
    }
    match modules {
        Modules::Unchecked => true,
        Modules::Known(known) if known.contains(&name) => true,
        Modules::Known(known) => {
            report.push(
                field,
                ErrorKind::UnknownModule {
                    module: name.to_owned(),
                    known: if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    },
                },
            );
            false
        }
    }
}
