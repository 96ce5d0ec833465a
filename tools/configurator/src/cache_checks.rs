//! Cache allocation (Intel CAT / AMD L3 QoS): the board's `[cache]` table, each VM's
//! `cache_mask`, and the plan of classes of service (CLOS) the hypervisor programs.
//!
//! Board (`[cache]`): `l3_ways` (the capacity bitmask's length, CPUID.(0x10,1):EAX[4:0] + 1),
//! `cat` (whether the L3 has allocation: CPUID.(0x10,0):EBX[1]) and `clos` (classes of service,
//! CPUID.(0x10,1):EDX[15:0] + 1; required with `cat = true`).
//!
//! VM: `cache_mask = 0xF0` (every vCPU) or `cache_mask = [0xF0, 0x0F]` (one per vCPU, in `pcpus`
//! order). Each mask must be non-zero, one contiguous run of ways and within `l3_ways`
//! ([`rt::cat::check_mask`]); a scenario asking for masks on a board without CAT is refused.
//! Masks of different VMs that share ways are allowed with a warning naming both VMs. Distinct
//! masks take CLOS 1, 2, ... ([`rt::cat::clos_of`]); CLOS 0 (the hypervisor and VMs without a
//! mask) gets the ways nobody asked for ([`rt::cat::default_mask`]).

use std::path::Path;

use serde::Deserialize;

use crate::board::Board;
use crate::error::{ConfigError, ErrorKind, VmRef};
use crate::input::RawVm;

/// `[cache]` as written in a board file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBoardCache {
    pub l3_ways: u8,
    #[serde(default)]
    pub cat: bool,
    pub clos: Option<u16>,
}

/// A board's L3 cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardCache {
    pub l3_ways: u8,
    /// `Some(clos)` when the L3 has allocation, with its classes of service.
    pub cat: Option<u16>,
}

/// Checks a board's `[cache]`: (field, problem) on error.
pub fn check_board_cache(raw: &RawBoardCache) -> Result<BoardCache, (String, ErrorKind)> {
    let bad = |field: &str, why: String| (format!("cache.{field}"), ErrorKind::BadBoard(why));
    if raw.l3_ways == 0 || raw.l3_ways > 32 {
        return Err(bad(
            "l3_ways",
            format!(
                "{} ways: an L3 capacity bitmask has 1 to 32 bits",
                raw.l3_ways
            ),
        ));
    }
    let cat = match (raw.cat, raw.clos) {
        (true, Some(clos)) if clos >= 2 => Some(clos),
        (true, Some(clos)) => {
            return Err(bad(
                "clos",
                format!("{clos} classes of service: CAT has at least 2 (CLOS 0 and one more)"),
            ))
        }
        (true, None) => {
            return Err(bad(
                "clos",
                "missing: with `cat = true` give the number of classes of service (CPUID.(0x10,1):EDX[15:0] + 1)".into(),
            ))
        }
        (false, Some(_)) => {
            return Err(bad(
                "clos",
                "given with `cat = false`: a cache without allocation has no classes of service"
                    .into(),
            ))
        }
        (false, None) => None,
    };
    Ok(BoardCache {
        l3_ways: raw.l3_ways,
        cat,
    })
}

/// `cache_mask` as written: one mask, or one per vCPU.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawCacheMask {
    One(u64),
    PerVcpu(Vec<u64>),
}

/// The cache allocation of a valid scenario.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CachePlan {
    /// The board's ways (0 when no VM has a mask).
    pub ways: u8,
    /// CLOS 0's mask.
    pub default_mask: u64,
    /// (pCPU, VM id, CLOS, mask) for each pCPU of a VM with a mask, by pCPU.
    pub pcpus: Vec<(u16, u16, u16, u64)>,
}

/// Checks every VM's `cache_mask` against `board` and plans the classes of service. Problems go
/// to `errors` (file, VM and field named), overlaps to `warnings`.
pub fn check_cache(
    file: &Path,
    vms: &[(VmRef, &RawVm)],
    board: Option<&Board>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> CachePlan {
    let at = |vm: &VmRef, field: String, kind| ConfigError {
        file: file.to_owned(),
        vm: Some(vm.clone()),
        field,
        kind,
    };
    // (VM index in `vms`, VM id, pCPU, mask) of every well-formed mask.
    let mut masks: Vec<(usize, u16, u16, u64)> = Vec::new();
    for (index, (vm, raw)) in vms.iter().enumerate() {
        let Some(given) = &raw.cache_mask else {
            continue;
        };
        let Some(board) = board else {
            continue;
        };
        let cache = match board.cache {
            Some(BoardCache {
                l3_ways,
                cat: Some(_),
            }) => l3_ways,
            other => {
                errors.push(at(
                    vm,
                    "cache_mask".into(),
                    ErrorKind::NoCat {
                        board: board.name.clone(),
                        why: if other.is_some() {
                            "its `[cache]` table says `cat = false`"
                        } else {
                            "its file has no `[cache]` table"
                        },
                    },
                ));
                continue;
            }
        };
        let per_vcpu: Vec<(String, u64)> = match given {
            RawCacheMask::One(m) => raw
                .pcpus
                .iter()
                .map(|_| ("cache_mask".into(), *m))
                .collect(),
            RawCacheMask::PerVcpu(list) if list.len() == raw.pcpus.len() => list
                .iter()
                .enumerate()
                .map(|(i, m)| (format!("cache_mask[{i}]"), *m))
                .collect(),
            RawCacheMask::PerVcpu(list) => {
                errors.push(at(
                    vm,
                    "cache_mask".into(),
                    ErrorKind::CacheMaskCount {
                        count: list.len(),
                        vcpus: raw.pcpus.len(),
                    },
                ));
                continue;
            }
        };
        let id = u16::try_from(vm.index).unwrap_or(u16::MAX);
        let mut bad = false;
        for (field, mask) in &per_vcpu {
            if let Err(e) = rt::cat::check_mask(*mask, cache) {
                // One line per distinct problem: a whole-VM mask is reported once.
                if !bad || matches!(given, RawCacheMask::PerVcpu(_)) {
                    errors.push(at(vm, field.clone(), ErrorKind::CacheMask(e.to_string())));
                }
                bad = true;
            }
        }
        if !bad {
            masks.extend(
                raw.pcpus
                    .iter()
                    .zip(&per_vcpu)
                    .map(|(&p, (_, m))| (index, id, p, *m)),
            );
        }
    }
    let (Some(board), false) = (board, masks.is_empty()) else {
        return CachePlan::default();
    };
    let Some(BoardCache {
        l3_ways,
        cat: Some(clos),
    }) = board.cache
    else {
        return CachePlan::default();
    };
    // Overlaps between different VMs, each pair of masks once, named from the later VM.
    let mut seen: Vec<(usize, usize, u64, u64)> = Vec::new();
    for (i, &(vi, _, _, mi)) in masks.iter().enumerate() {
        for &(vj, _, _, mj) in &masks[..i] {
            if vi == vj || mi & mj == 0 || seen.contains(&(vi, vj, mi, mj)) {
                continue;
            }
            seen.push((vi, vj, mi, mj));
            let (vm, _) = &vms[vi];
            let other = vms[vj].0.name.clone().unwrap_or_default();
            warnings.push(at(
                vm,
                "cache_mask".into(),
                ErrorKind::CacheOverlap {
                    mask: mi,
                    other,
                    other_mask: mj,
                    common: mi & mj,
                },
            ));
        }
    }
    let list: Vec<u64> = masks.iter().map(|m| m.3).collect();
    let need = rt::cat::clos_needed(&list);
    if u32::from(need) + 1 > u32::from(clos) {
        errors.push(ConfigError {
            file: file.to_owned(),
            vm: None,
            field: "cache_mask".into(),
            kind: ErrorKind::TooManyClos { need, have: clos },
        });
        return CachePlan::default();
    }
    let taken = list.iter().fold(0, |a, m| a | m);
    if taken == rt::cat::full_mask(l3_ways) {
        warnings.push(ConfigError {
            file: file.to_owned(),
            vm: None,
            field: "cache_mask".into(),
            kind: ErrorKind::CacheAllTaken { ways: l3_ways },
        });
    }
    let mut pcpus: Vec<(u16, u16, u16, u64)> = masks
        .iter()
        .enumerate()
        .map(|(i, &(_, id, p, m))| (p, id, rt::cat::clos_of(&list, i), m))
        .collect();
    pcpus.sort_unstable();
    CachePlan {
        ways: l3_ways,
        default_mask: rt::cat::default_mask(l3_ways, &list),
        pcpus,
    }
}
