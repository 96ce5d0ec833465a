//! Passthrough (`pci_devices`): each VM's list on its own and against the board, then across VMs
//! (one owner per function, functions behind an aliasing bridge passed whole, DMA isolation).

use std::collections::BTreeMap;
use std::path::Path;

use scenario::{
    DmaIsolation, LoadOrder, MAX_PASSTHROUGH_DEVICES, MAX_VIRTIO_DEVICES, VIRTIO_FIRST_SLOT,
};

use crate::board::Board;
use crate::error::{ConfigError, ErrorKind, VmRef};
use crate::input::RawVm;
use crate::model::Passthrough;
use crate::pci::{Bdf, Iommu};
use crate::vm_checks::Report;
use crate::words;

/// Accepted `dma_isolation` values.
pub const DMA_ISOLATIONS: &str = "iommu, off";

/// Parses a `dma_isolation` value.
pub fn dma_isolation(word: &str) -> Option<DmaIsolation> {
    match word {
        "iommu" => Some(DmaIsolation::Iommu),
        "off" => Some(DmaIsolation::Off),
        _ => None,
    }
}

/// The guest slot the Quercus PCI test device takes when `pci_test_device = true`.
const TEST_DEVICE_SLOT: u64 = 3;
/// Device numbers on a bus.
const SLOTS: u64 = 32;

/// Checks the `pci_devices` list of the VM `report` is about, on its own and against `board`.
/// Returns the functions when nothing was wrong with the list.
pub fn check_passthrough(
    report: &mut Report<'_>,
    raw: &RawVm,
    board: Option<&Board>,
) -> Vec<Passthrough> {
    if raw.pci_devices.is_empty() {
        return Vec::new();
    }
    let before = report.errors.len();
    if let Some(order) = words::load_order(&raw.load_order) {
        if order != LoadOrder::PreLaunched {
            report.push(
                "pci_devices",
                ErrorKind::PassthroughNotPreLaunched {
                    load_order: words::load_order_name(order),
                },
            );
        }
    }
    if raw.pci_devices.len() > MAX_PASSTHROUGH_DEVICES {
        report.push(
            "pci_devices",
            ErrorKind::TooManyPassthrough {
                count: raw.pci_devices.len(),
                max: MAX_PASSTHROUGH_DEVICES,
            },
        );
    }
    let virtio_slots = raw.virtio.len().min(MAX_VIRTIO_DEVICES) as u64;
    // (index, host function, guest slot) of the entries whose function parsed.
    let mut placed: Vec<(usize, Bdf, u64)> = Vec::new();
    let mut out = Vec::new();
    for (index, entry) in raw.pci_devices.iter().enumerate() {
        let bdf_field = entry.bdf_field(index);
        let bdf = match Bdf::parse(entry.bdf()) {
            Ok(bdf) => bdf,
            Err(kind) => {
                report.push(&bdf_field, kind);
                continue;
            }
        };
        if let Some(&(first, _, _)) = placed.iter().find(|(_, other, _)| *other == bdf) {
            report.push(&bdf_field, ErrorKind::PciListedTwice { bdf, first });
            continue;
        }
        let function = board.and_then(|board| {
            let function = board.pci_function(bdf);
            if function.is_none() {
                report.push(
                    &bdf_field,
                    ErrorKind::PciNotOnBoard {
                        bdf,
                        board: board.name.clone(),
                        available: available(board),
                    },
                );
            }
            function
        });
        if let Some(function) = function {
            if function.uart {
                report.push(
                    &bdf_field,
                    ErrorKind::PciConsoleUart {
                        bdf,
                        name: function.name.clone(),
                    },
                );
            } else if let Some(what) = function.not_assignable() {
                report.push(
                    &bdf_field,
                    ErrorKind::PciNotAssignable {
                        bdf,
                        name: function.name.clone(),
                        what,
                    },
                );
            }
        }

        let slot = entry.slot().unwrap_or(u64::from(bdf.device));
        let slot_field = entry.slot_field(index);
        let reserved = if slot == 0 {
            Some("is the VM's host bridge")
        } else if slot == TEST_DEVICE_SLOT && raw.pci_test_device {
            Some("is the Quercus PCI test device's (pci_test_device = true)")
        } else if slot >= SLOTS {
            Some("does not exist (a bus has slots 0 to 31)")
        } else {
            None
        };
        let first_virtio = u64::from(VIRTIO_FIRST_SLOT);
        if let Some(reason) = reserved {
            report.push(
                &slot_field,
                ErrorKind::GuestSlotReserved { slot, bdf, reason },
            );
        } else if (first_virtio..first_virtio + virtio_slots).contains(&slot) {
            // In range, so the difference is below MAX_VIRTIO_DEVICES.
            let virtio = usize::try_from(slot - first_virtio).unwrap_or(usize::MAX);
            report.push(
                &slot_field,
                ErrorKind::GuestSlotVirtio { slot, virtio, bdf },
            );
        } else if let Some(&(other, other_bdf, _)) = placed
            .iter()
            .find(|(_, other, other_slot)| *other_slot == slot && other.function == bdf.function)
        {
            report.push(
                &slot_field,
                ErrorKind::GuestSlotTaken {
                    slot,
                    function: bdf.function,
                    other,
                    other_bdf,
                },
            );
        }
        placed.push((index, bdf, slot));
        if let (Some(function), Ok(guest_slot)) = (function, u8::try_from(slot)) {
            out.push(Passthrough {
                host: bdf,
                guest_slot,
                vendor: function.vendor,
                device: function.device,
                gsi: function.gsi,
            });
        }
    }

    for &(index, bdf, slot) in placed.iter().filter(|(_, bdf, _)| bdf.function != 0) {
        let function0 = bdf.function0();
        let zero = placed.iter().find(|(_, other, _)| *other == function0);
        if zero.is_none_or(|&(_, _, zero_slot)| zero_slot != slot) {
            let entry = &raw.pci_devices[index];
            report.push(
                &entry.bdf_field(index),
                ErrorKind::PciNoFunctionZero {
                    bdf,
                    function0,
                    slot,
                    elsewhere: zero.is_some(),
                },
            );
        }
    }

    if report.errors.len() != before {
        return Vec::new();
    }
    out
}

/// The board's functions, comma-separated, or `none`.
fn available(board: &Board) -> String {
    if board.pci.is_empty() {
        return "none listed in its board file".to_owned();
    }
    let names: Vec<String> = board
        .pci
        .iter()
        .map(|f| format!("{} {}", f.bdf, f.name))
        .collect();
    names.join(", ")
}

/// A VM whose devices DMA without an IOMMU has its RAM at its host addresses
/// (`Scenario::ram_at_host_addresses`): it needs a fixed `host_base` that allows it and a kernel
/// that can be placed there.
fn check_host_addresses(report: &mut Report<'_>, raw: &RawVm) {
    let size = raw.memory_mib.saturating_mul(1 << 20);
    match raw.host_base {
        None => report.push(
            "host_base",
            ErrorKind::HostAddressesNeedHostBase {
                memory_mib: raw.memory_mib,
            },
        ),
        // Misaligned bases are reported with `host_base`'s own checks.
        Some(base) if base % (2 << 20) == 0 && vcpu::RamLayout::identity(base, size).is_none() => {
            report.push(
                "host_base",
                ErrorKind::HostAddressesOutOfRange {
                    base,
                    end: base.saturating_add(size),
                },
            );
        }
        Some(_) => {}
    }
    if let Some(kind) = raw.kernel.kind.as_deref() {
        if kind != "bzimage" {
            report.push(
                "kernel.type",
                ErrorKind::HostAddressesNeedBzImage {
                    kind: kind.to_owned(),
                },
            );
        }
    }
}

/// The passthrough checks between VMs and against the scenario's `dma_isolation` (`None` when
/// that word was wrong, which `validate` reports): a function has one owner; the functions behind
/// an aliasing bridge all go to one VM; passthrough on a board without an IOMMU needs
/// `dma_isolation = "off"`, which is a warning on a board with one.
pub fn check_passthrough_across(
    file: &Path,
    vms: &[(VmRef, &RawVm)],
    board: Option<&Board>,
    isolation: Option<DmaIsolation>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) {
    // Leniently read: entries that do not parse were reported by `check_passthrough`.
    let listed = |raw: &'_ RawVm| -> Vec<(usize, Bdf)> {
        raw.pci_devices
            .iter()
            .enumerate()
            .filter_map(|(i, entry)| Some((i, Bdf::parse(entry.bdf()).ok()?)))
            .collect()
    };
    let mut owners: BTreeMap<Bdf, &VmRef> = BTreeMap::new();
    for (vm, raw) in vms {
        let mut report = Report {
            file,
            vm: vm.clone(),
            errors,
        };
        for (index, bdf) in listed(raw) {
            match owners.get(&bdf) {
                Some(owner) if *owner != vm => report.push(
                    &raw.pci_devices[index].bdf_field(index),
                    ErrorKind::PciTaken {
                        bdf,
                        owner: (*owner).clone(),
                    },
                ),
                Some(_) => {}
                None => {
                    owners.insert(bdf, vm);
                }
            }
        }
    }

    let Some(board) = board else {
        return;
    };
    for (vm, raw) in vms {
        let mut report = Report {
            file,
            vm: vm.clone(),
            errors,
        };
        let mut bridges_done: Vec<Bdf> = Vec::new();
        for (index, bdf) in listed(raw) {
            let Some(bridge) = board.pci_function(bdf).and_then(|f| f.bridge) else {
                continue;
            };
            if bridges_done.contains(&bridge) {
                continue;
            }
            bridges_done.push(bridge);
            let stray = board
                .pci
                .iter()
                .filter(|other| other.bridge == Some(bridge))
                .find(|other| owners.get(&other.bdf).is_none_or(|owner| *owner != vm));
            if let Some(other) = stray {
                report.push(
                    &raw.pci_devices[index].bdf_field(index),
                    ErrorKind::PciNotWhole {
                        bdf,
                        bridge,
                        other: other.bdf,
                        other_owner: owners.get(&other.bdf).map(|owner| (*owner).clone()),
                    },
                );
            }
        }
        for (index, bdf) in listed(raw) {
            let Some(gsi) = board.pci_function(bdf).and_then(|f| f.gsi) else {
                continue;
            };
            let other = board.pci.iter().find(|f| {
                f.bdf != bdf
                    && f.gsi == Some(gsi)
                    && owners
                        .get(&f.bdf)
                        .is_some_and(|owner| owner.index < vm.index)
            });
            if let Some(other) = other {
                report.push(
                    &raw.pci_devices[index].bdf_field(index),
                    ErrorKind::PciGsiShared {
                        bdf,
                        gsi,
                        other: other.bdf,
                        owner: owners[&other.bdf].clone(),
                    },
                );
            }
        }
        if isolation == Some(DmaIsolation::Off) && !raw.pci_devices.is_empty() {
            check_host_addresses(&mut report, raw);
        }
        if board.iommu == Iommu::None
            && isolation == Some(DmaIsolation::Iommu)
            && !raw.pci_devices.is_empty()
        {
            report.push(
                "pci_devices",
                ErrorKind::PassthroughWithoutIommu {
                    board: board.name.clone(),
                },
            );
        }
    }
    if board.iommu != Iommu::None && isolation == Some(DmaIsolation::Off) {
        warnings.push(ConfigError {
            file: file.to_owned(),
            vm: None,
            field: "dma_isolation".to_owned(),
            kind: ErrorKind::DmaIsolationOffWithIommu {
                board: board.name.clone(),
                iommu: board.iommu.name(),
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dma_isolation_words() {
        for word in DMA_ISOLATIONS.split(", ") {
            assert!(dma_isolation(word).is_some(), "{word}");
        }
        assert_eq!(dma_isolation("Off"), None);
        assert_eq!(dma_isolation("iommu"), Some(DmaIsolation::Iommu));
    }
}
