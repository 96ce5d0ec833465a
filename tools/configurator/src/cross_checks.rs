//! Checks between VMs: unique names, exclusive pCPUs, total RAM, fixed ranges, service VM rules,
//! and the virtio checks between VMs (see `virtio_checks`).

use std::collections::BTreeMap;
use std::path::Path;

use scenario::LoadOrder;

use crate::board::Board;
use crate::error::{ConfigError, ErrorKind, VmRef};
use crate::input::RawVm;
use crate::virtio_checks::check_virtio_across;
use crate::vm_checks::{Report, MIB_2};
use crate::words;

/// Runs every cross-VM check over the VMs whose tables parsed. Each problem is reported on the
/// later VM of a pair, naming the earlier one.
pub fn check_across(
    file: &Path,
    vms: &[(VmRef, &RawVm)],
    board: Option<&Board>,
    errors: &mut Vec<ConfigError>,
) {
    let mut names: BTreeMap<&str, &VmRef> = BTreeMap::new();
    let mut owners: BTreeMap<u16, &VmRef> = BTreeMap::new();
    let mut fixed: Vec<(&VmRef, u64, u64)> = Vec::new();
    let mut service: Option<&VmRef> = None;
    let mut first_post_launched: Option<&VmRef> = None;
    let mut vms_mib: u64 = 0;
    let mut memory_reported = false;

    for (vm, raw) in vms {
        let mut report = Report {
            file,
            vm: vm.clone(),
            errors,
        };

        if let Some(first) = names.get(raw.name.as_str()) {
            report.push(
                "name",
                ErrorKind::DuplicateName {
                    name: raw.name.clone(),
                    first: (*first).clone(),
                },
            );
        } else {
            names.insert(&raw.name, vm);
        }

        // pCPU 0, out-of-range and repeated pCPUs are reported by the per-VM checks.
        let mut own = Vec::new();
        for &pcpu in &raw.pcpus {
            if pcpu == 0 || board.is_some_and(|b| pcpu >= b.pcpus) || own.contains(&pcpu) {
                continue;
            }
            own.push(pcpu);
            match owners.get(&pcpu) {
                Some(owner) => report.push(
                    "pcpus",
                    ErrorKind::PcpuTaken {
                        pcpu,
                        owner: (*owner).clone(),
                    },
                ),
                None => {
                    owners.insert(pcpu, vm);
                }
            }
        }

        vms_mib = vms_mib.saturating_add(raw.memory_mib);
        if let Some(board) = board {
            let total_mib = vms_mib.saturating_add(board.hv_memory_mib);
            if total_mib > board.memory_mib && !memory_reported {
                memory_reported = true;
                report.push(
                    "memory_mib",
                    ErrorKind::MemoryExceeded {
                        vms_mib,
                        hv_mib: board.hv_memory_mib,
                        total_mib,
                        board_mib: board.memory_mib,
                        board: board.name.clone(),
                    },
                );
            }
        }

        let size = raw.memory_mib.checked_mul(1 << 20).filter(|&s| s > 0);
        if let (Some(base), Some(size)) = (raw.host_base.filter(|b| b % MIB_2 == 0), size) {
            let end = base.saturating_add(size);
            for &(other, other_base, other_end) in &fixed {
                if base < other_end && other_base < end {
                    report.push(
                        "host_base",
                        ErrorKind::HostBaseOverlap {
                            base,
                            end,
                            other: other.clone(),
                            other_base,
                            other_end,
                        },
                    );
                }
            }
            fixed.push((vm, base, end));
        }

        match words::load_order(&raw.load_order) {
            Some(LoadOrder::Service) => match service {
                Some(first) => report.push(
                    "load_order",
                    ErrorKind::SecondServiceVm {
                        first: first.clone(),
                    },
                ),
                None => service = Some(vm),
            },
            Some(LoadOrder::PostLaunched) if first_post_launched.is_none() => {
                first_post_launched = Some(vm);
            }
            _ => {}
        }
    }

    if let (Some(vm), None) = (first_post_launched, service) {
        let mut report = Report {
            file,
            vm: vm.clone(),
            errors,
        };
        report.push("load_order", ErrorKind::PostLaunchedWithoutService);
    }

    check_virtio_across(file, vms, errors);
}
