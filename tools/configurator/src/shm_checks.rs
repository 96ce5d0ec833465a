//! Shared-memory regions (`[[shm]]`): parsing each table, checking it against the VMs and the
//! board, and placing each VM's ivshmem device (its PCI slot and where firmware puts BAR 2).
//!
//! Errors name the file, the region (`shm "name" (shm[i])`) and the field, and the VM where one is
//! concerned, e.g. `my.toml: shm "ipc0" (shm[0]): vms[2]: vm "c" is listed twice (first as
//! vms[0]): a VM maps a region once`.

use std::fmt;
use std::path::Path;

use scenario::{
    LoadOrder, ShmPeer, MAX_SHM_PEERS, MAX_SHM_PER_VM, SHM_BAR2_BASE, SHM_FIRST_SLOT, SHM_MAX_SIZE,
    SHM_MIN_SIZE,
};
use serde::Deserialize;

use crate::board::Board;
use crate::error::{ConfigError, ErrorKind, VmRef};
use crate::input::RawVm;
use crate::model::Vm;
use crate::toml_doc::{self, Table};

/// One `[[shm]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShm {
    pub name: String,
    /// Bytes.
    pub size: u64,
    pub vms: Vec<RawShmVm>,
}

/// One `vms` entry: `"a"` or `{ vm = "a", readonly = true, slot = 30 }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawShmVm {
    pub vm: String,
    pub readonly: bool,
    pub slot: Option<u64>,
    /// Written as a table (fields are then named `vms[j].vm`, `vms[j].slot`).
    pub table: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShmTable {
    vm: String,
    #[serde(default)]
    readonly: bool,
    slot: Option<u64>,
}

impl<'de> Deserialize<'de> for RawShmVm {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawShmVm;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a VM name or a table { vm = \"name\", readonly = true, slot = N }")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(RawShmVm {
                    vm: value.to_owned(),
                    readonly: false,
                    slot: None,
                    table: false,
                })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                RawShmTable::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(
                    |t| RawShmVm {
                        vm: t.vm,
                        readonly: t.readonly,
                        slot: t.slot,
                        table: true,
                    },
                )
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A validated region (the owned counterpart of [`scenario::ShmConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shm {
    pub name: String,
    pub size: u64,
    /// In `vms` order: a VM's index is its peer id.
    pub peers: Vec<ShmPeer>,
}

/// What is wrong with a region.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShmError {
    #[error("expected a table ([[shm]]), found {0}")]
    NotTable(&'static str),
    #[error("{size} bytes is {problem}")]
    BadSize { size: u64, problem: &'static str },
    #[error("{count} VM(s): a shared region needs at least 2 VMs (one VM alone shares nothing)")]
    TooFewVms { count: usize },
    #[error("{count} VMs, more than the {max} a region may have (peer ids 0..={last})", last = .max - 1)]
    TooManyVms { count: usize, max: usize },
    #[error("vm {name:?} does not exist (VMs: {available})")]
    UnknownVm { name: String, available: String },
    #[error("vm {name:?} is listed twice (first as vms[{first}]): a VM maps a region once")]
    VmTwice { name: String, first: usize },
    #[error("vm {name:?} is {load_order:?}: not yet, only pre-launched and service VMs may map shared memory")]
    NotPreLaunched { name: String, load_order: String },
    #[error("guest slot {slot} of vm {name:?} {reason}")]
    BadSlot {
        slot: u64,
        name: String,
        reason: String,
    },
    #[error("vm {name:?} maps {count} regions, more than the {max} a VM may")]
    TooManyRegions {
        name: String,
        count: usize,
        max: usize,
    },
    #[error("vm {name:?} maps {total} bytes of regions in all, more than the {max} bytes (256 MiB) of PCI memory window they share")]
    WindowFull { name: String, total: u64, max: u64 },
    #[error("name {name:?} is already used by shm[{first}]")]
    DuplicateName { name: String, first: usize },
    #[error("the VMs ({vms_mib} MiB) + the hypervisor's reserve ({hv_mib} MiB) + shared regions up to this one ({shm_bytes} bytes) need more than the {board_mib} MiB of board {board:?}")]
    MemoryExceeded {
        vms_mib: u64,
        hv_mib: u64,
        shm_bytes: u64,
        board_mib: u64,
        board: String,
    },
}

fn region(index: usize, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("shm {name:?} (shm[{index}])"),
        None => format!("shm[{index}]"),
    }
}

/// Parses and checks every `[[shm]]` table of `doc` against the VMs (`parsed`: every VM table
/// that deserialized; `vms`: those that passed their own checks) and the board. Returns the
/// regions with their peers placed.
pub fn check_shm(
    file: &Path,
    text: &str,
    doc: &Table<'_>,
    parsed: &[(VmRef, &RawVm)],
    vms: &[Vm],
    board: Option<&Board>,
    errors: &mut Vec<ConfigError>,
) -> Vec<Shm> {
    let push = |errors: &mut Vec<ConfigError>, field: String, kind: ShmError| {
        errors.push(ConfigError {
            file: file.to_owned(),
            vm: None,
            field,
            kind: ErrorKind::Shm(kind),
        })
    };
    let raws: Vec<(usize, RawShm)> = toml_doc::array_tables(
        file,
        text,
        doc,
        "shm",
        region,
        |found| ErrorKind::Shm(ShmError::NotTable(found)),
        errors,
    );

    let before = errors.len();
    let available = parsed
        .iter()
        .map(|(_, raw)| raw.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    // Per region, per entry: (VM id, entry) of the entries that name a usable VM.
    let mut members: Vec<Vec<(usize, u16)>> = Vec::new();
    let mut shm_bytes: u64 = 0;
    let mut memory_reported = false;
    // Regions whose size is usable (the others are left out of the window sums).
    let mut good_size: Vec<bool> = Vec::new();
    for (k, (index, raw)) in raws.iter().enumerate() {
        let at = region(*index, Some(&raw.name));
        if let Err(kind) = crate::name::check_name(&raw.name) {
            errors.push(ConfigError {
                file: file.to_owned(),
                vm: None,
                field: format!("{at}: name"),
                kind,
            });
        }
        if let Some((first, _)) = raws[..k].iter().find(|(_, r)| r.name == raw.name) {
            push(
                errors,
                format!("{at}: name"),
                ShmError::DuplicateName {
                    name: raw.name.clone(),
                    first: *first,
                },
            );
        }
        let problem = if raw.size < SHM_MIN_SIZE {
            Some("less than the 4 KiB (4096 bytes) a region needs")
        } else if raw.size % 4096 != 0 {
            Some("not a multiple of 4 KiB (4096)")
        } else if !raw.size.is_power_of_two() {
            Some("not a power of two (it is the size of a PCI BAR)")
        } else if raw.size > SHM_MAX_SIZE {
            Some("more than the largest region, 256 MiB (268435456)")
        } else {
            None
        };
        good_size.push(problem.is_none());
        if let Some(problem) = problem {
            push(
                errors,
                format!("{at}: size"),
                ShmError::BadSize {
                    size: raw.size,
                    problem,
                },
            );
        } else if let Some(board) = board {
            shm_bytes = shm_bytes.saturating_add(raw.size);
            let vms_mib: u64 = parsed.iter().map(|(_, v)| v.memory_mib).sum();
            let vms_fit = vms_mib.saturating_add(board.hv_memory_mib) <= board.memory_mib;
            let need =
                (vms_mib.saturating_add(board.hv_memory_mib) << 20).saturating_add(shm_bytes);
            if vms_fit && need > board.memory_mib << 20 && !memory_reported {
                memory_reported = true;
                push(
                    errors,
                    format!("{at}: size"),
                    ShmError::MemoryExceeded {
                        vms_mib,
                        hv_mib: board.hv_memory_mib,
                        shm_bytes,
                        board_mib: board.memory_mib,
                        board: board.name.clone(),
                    },
                );
            }
        }
        if raw.vms.len() < 2 {
            push(
                errors,
                format!("{at}: vms"),
                ShmError::TooFewVms {
                    count: raw.vms.len(),
                },
            );
        } else if raw.vms.len() > MAX_SHM_PEERS {
            push(
                errors,
                format!("{at}: vms"),
                ShmError::TooManyVms {
                    count: raw.vms.len(),
                    max: MAX_SHM_PEERS,
                },
            );
        }
        let mut mine = Vec::new();
        for (j, entry) in raw.vms.iter().enumerate() {
            let field = if entry.table {
                format!("{at}: vms[{j}].vm")
            } else {
                format!("{at}: vms[{j}]")
            };
            if let Some(first) = raw.vms[..j].iter().position(|e| e.vm == entry.vm) {
                push(
                    errors,
                    field,
                    ShmError::VmTwice {
                        name: entry.vm.clone(),
                        first,
                    },
                );
                continue;
            }
            let Some(id) = parsed.iter().position(|(_, v)| v.name == entry.vm) else {
                push(
                    errors,
                    field,
                    ShmError::UnknownVm {
                        name: entry.vm.clone(),
                        available: available.clone(),
                    },
                );
                continue;
            };
            let load_order = &parsed[id].1.load_order;
            if crate::words::load_order(load_order) == Some(LoadOrder::PostLaunched) {
                push(
                    errors,
                    field,
                    ShmError::NotPreLaunched {
                        name: entry.vm.clone(),
                        load_order: load_order.clone(),
                    },
                );
                continue;
            }
            mine.push((j, id as u16));
        }
        members.push(mine);
    }

    // Per VM: its regions' slots and BAR 2 placements.
    let mut placed: Vec<Vec<Option<ShmPeer>>> = raws
        .iter()
        .map(|(_, raw)| vec![None; raw.vms.len()])
        .collect();
    for (id, (vm_ref, raw_vm)) in parsed.iter().enumerate() {
        let _ = vm_ref;
        let id = id as u16;
        // (region k, entry j) of this VM, in scenario order.
        let uses: Vec<(usize, usize)> = members
            .iter()
            .enumerate()
            .flat_map(|(k, m)| {
                m.iter()
                    .filter(|(_, v)| *v == id)
                    .map(move |(j, _)| (k, *j))
            })
            .collect();
        if uses.is_empty() {
            continue;
        }
        let name = raw_vm.name.clone();
        if uses.len() > MAX_SHM_PER_VM {
            let (k, _) = uses[MAX_SHM_PER_VM];
            push(
                errors,
                format!("{}: vms", region(raws[k].0, Some(&raws[k].1.name))),
                ShmError::TooManyRegions {
                    name,
                    count: uses.len(),
                    max: MAX_SHM_PER_VM,
                },
            );
            continue;
        }
        let model = vms.iter().find(|v| v.id == id);
        // Slots other devices take: (slot, what).
        let mut taken: Vec<(u64, String)> = vec![(0, "is the host bridge's".to_owned())];
        if let Some(model) = model {
            if model.pci_test_device {
                taken.push((
                    3,
                    "is the PCI test device's (pci_test_device = true)".to_owned(),
                ));
            }
            for (i, v) in model.virtio.iter().enumerate() {
                taken.push((u64::from(v.slot), format!("is taken by its virtio[{i}]")));
            }
            for (i, p) in model.pci_devices.iter().enumerate() {
                taken.push((
                    u64::from(p.guest_slot),
                    format!("is taken by its pci_devices[{i}] ({})", p.host),
                ));
            }
        }
        let mut slots: Vec<Option<u8>> = Vec::new();
        for &(k, j) in &uses {
            let (index, raw) = &raws[k];
            let entry = &raw.vms[j];
            let Some(slot) = entry.slot else {
                slots.push(None);
                continue;
            };
            let at = format!("{}: vms[{j}].slot", region(*index, Some(&raw.name)));
            let reason = if slot >= 32 {
                Some("does not exist (slots are 1 to 31)".to_owned())
            } else {
                taken
                    .iter()
                    .find(|(s, _)| *s == slot)
                    .map(|(_, r)| r.clone())
            };
            match reason {
                Some(reason) => {
                    push(
                        errors,
                        at,
                        ShmError::BadSlot {
                            slot,
                            name: name.clone(),
                            reason,
                        },
                    );
                    slots.push(None);
                }
                None => {
                    taken.push((
                        slot,
                        format!(
                            "is taken by its device for {}",
                            region(*index, Some(&raw.name))
                        ),
                    ));
                    slots.push(Some(slot as u8));
                }
            }
        }
        // Default slots: from 31 down, skipping taken ones.
        let mut next = u64::from(SHM_FIRST_SLOT);
        for (u, &(k, j)) in uses.iter().enumerate() {
            if raws[k].1.vms[j].slot.is_some() {
                continue;
            }
            while next > 0 && taken.iter().any(|(s, _)| *s == next) {
                next -= 1;
            }
            if next == 0 {
                push(
                    errors,
                    format!("{}: vms[{j}]", region(raws[k].0, Some(&raws[k].1.name))),
                    ShmError::BadSlot {
                        slot: 0,
                        name: name.clone(),
                        reason: "cannot be found: every slot is taken".to_owned(),
                    },
                );
                break;
            }
            taken.push((
                next,
                format!(
                    "is taken by its device for {}",
                    region(raws[k].0, Some(&raws[k].1.name))
                ),
            ));
            slots[u] = Some(next as u8);
        }
        // BAR 2 placement: largest first from SHM_BAR2_BASE (powers of two stay aligned).
        let mut order: Vec<usize> = (0..uses.len()).collect();
        order.sort_by_key(|&u| std::cmp::Reverse(raws[uses[u].0].1.size));
        let total: u64 = uses
            .iter()
            .filter(|&&(k, _)| good_size[k])
            .map(|&(k, _)| raws[k].1.size)
            .sum();
        if total > SHM_MAX_SIZE {
            let (k, _) = uses[uses.len() - 1];
            push(
                errors,
                format!("{}: size", region(raws[k].0, Some(&raws[k].1.name))),
                ShmError::WindowFull {
                    name,
                    total,
                    max: SHM_MAX_SIZE,
                },
            );
            continue;
        }
        let mut at = SHM_BAR2_BASE;
        for u in order {
            let (k, j) = uses[u];
            let (raw, slot) = (&raws[k].1, slots[u]);
            if let Some(slot) = slot {
                placed[k][j] = Some(ShmPeer {
                    vm: id,
                    readonly: raw.vms[j].readonly,
                    slot,
                    bar2: at,
                });
            }
            at += raw.size;
        }
    }

    if errors.len() > before {
        return Vec::new();
    }
    raws.iter()
        .zip(placed)
        .map(|((_, raw), peers)| Shm {
            name: raw.name.clone(),
            size: raw.size,
            peers: peers.into_iter().flatten().collect(),
        })
        .collect()
}
