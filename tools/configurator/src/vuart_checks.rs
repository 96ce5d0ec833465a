//! vUART links (`[[vuart_link]]`): a wire between a UART of one VM and a UART of another.
//!
//! ```toml
//! [[vuart_link]]
//! name = "setpoints"
//! ends = [{ vm = "controller", uart = "com2" }, { vm = "hmi", uart = "com2" }]
//! ```
//!
//! Errors name the file, the link (`vuart_link "name" (vuart_link[i])`) and the field, e.g.
//! `my.toml: vuart_link "setpoints" (vuart_link[0]): ends[1].uart: com1 is vm "hmi"'s console`.

use std::path::Path;

use scenario::VuartLinkEnd;
use serde::Deserialize;

use crate::error::{ConfigError, ErrorKind, VmRef};
use crate::input::RawVm;
use crate::model::Vm;
use crate::toml_doc::{self, Table};
use crate::words;

/// One `[[vuart_link]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    pub name: String,
    pub ends: Vec<RawEnd>,
}

/// One end: `{ vm = "a", uart = "com2" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnd {
    pub vm: String,
    pub uart: String,
}

/// A validated link (the owned counterpart of `scenario::VuartLinkConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub ends: [VuartLinkEnd; 2],
}

/// What is wrong with a link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("expected a table ([[vuart_link]]), found {0}")]
    NotTable(&'static str),
    #[error("{count} end(s): a link joins exactly 2 UARTs")]
    EndCount { count: usize },
    #[error("vm {name:?} does not exist (VMs: {available})")]
    UnknownVm { name: String, available: String },
    #[error("unknown UART {word:?} (expected one of: {expected})")]
    UnknownUart {
        word: String,
        expected: &'static str,
    },
    #[error("{uart} is vm {vm:?}'s console; link another UART")]
    ConsoleUart { uart: String, vm: String },
    #[error("both ends are {uart} of vm {vm:?}: a link joins two different UARTs")]
    SameEnd { uart: String, vm: String },
    #[error("{uart} of vm {vm:?} is already an end of {other} (a UART has one wire)")]
    UartTaken {
        uart: String,
        vm: String,
        other: String,
    },
    #[error("name {name:?} is already used by vuart_link[{first}]")]
    DuplicateName { name: String, first: usize },
}

fn at(index: usize, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("vuart_link {name:?} (vuart_link[{index}])"),
        None => format!("vuart_link[{index}]"),
    }
}

/// Parses and checks every `[[vuart_link]]` table of `doc` against the VMs (`parsed`: every VM
/// table that deserialized; `vms`: those that passed their own checks, for their ids and
/// consoles). Returns the links that passed.
pub fn check_links(
    file: &Path,
    text: &str,
    doc: &Table<'_>,
    parsed: &[(VmRef, &RawVm)],
    vms: &[Vm],
    errors: &mut Vec<ConfigError>,
) -> Vec<Link> {
    let push = |errors: &mut Vec<ConfigError>, field: String, kind: LinkError| {
        errors.push(ConfigError {
            file: file.to_owned(),
            vm: None,
            field,
            kind: ErrorKind::VuartLink(kind),
        })
    };
    let raws: Vec<(usize, RawLink)> = toml_doc::array_tables(
        file,
        text,
        doc,
        "vuart_link",
        at,
        |found| ErrorKind::VuartLink(LinkError::NotTable(found)),
        errors,
    );

    let available = parsed
        .iter()
        .map(|(_, raw)| raw.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut links = Vec::new();
    // (VM id, port) -> the link that has it.
    let mut taken: Vec<((u16, u16), String)> = Vec::new();
    for (k, (index, raw)) in raws.iter().enumerate() {
        let here = at(*index, Some(&raw.name));
        let before = errors.len();
        if let Err(kind) = crate::name::check_name(&raw.name) {
            errors.push(ConfigError {
                file: file.to_owned(),
                vm: None,
                field: format!("{here}: name"),
                kind,
            });
        }
        if let Some((first, _)) = raws[..k].iter().find(|(_, r)| r.name == raw.name) {
            push(
                errors,
                format!("{here}: name"),
                LinkError::DuplicateName {
                    name: raw.name.clone(),
                    first: *first,
                },
            );
        }
        if raw.ends.len() != 2 {
            push(
                errors,
                format!("{here}: ends"),
                LinkError::EndCount {
                    count: raw.ends.len(),
                },
            );
            continue;
        }
        let mut ends = Vec::new();
        for (j, end) in raw.ends.iter().enumerate() {
            let Some(vm) = vms.iter().find(|vm| vm.name == end.vm) else {
                // A VM whose own table failed is reported there.
                if !parsed.iter().any(|(_, r)| r.name == end.vm) {
                    push(
                        errors,
                        format!("{here}: ends[{j}].vm"),
                        LinkError::UnknownVm {
                            name: end.vm.clone(),
                            available: available.clone(),
                        },
                    );
                }
                continue;
            };
            let Some(uart) = words::vuart(&end.uart) else {
                push(
                    errors,
                    format!("{here}: ends[{j}].uart"),
                    LinkError::UnknownUart {
                        word: end.uart.clone(),
                        expected: words::VUARTS,
                    },
                );
                continue;
            };
            if vm
                .console
                .is_some_and(|c| c.port == uart.port || c.irq == uart.irq)
            {
                push(
                    errors,
                    format!("{here}: ends[{j}].uart"),
                    LinkError::ConsoleUart {
                        uart: end.uart.clone(),
                        vm: vm.name.clone(),
                    },
                );
                continue;
            }
            ends.push((j, VuartLinkEnd { vm: vm.id, uart }));
        }
        if let [(_, a), (j, b)] = ends[..] {
            if a == b {
                push(
                    errors,
                    format!("{here}: ends[{j}]"),
                    LinkError::SameEnd {
                        uart: raw.ends[j].uart.clone(),
                        vm: raw.ends[j].vm.clone(),
                    },
                );
            }
        }
        for &(j, end) in &ends {
            let key = (end.vm, end.uart.port);
            if let Some((_, other)) = taken.iter().find(|(k, _)| *k == key) {
                push(
                    errors,
                    format!("{here}: ends[{j}].uart"),
                    LinkError::UartTaken {
                        uart: raw.ends[j].uart.clone(),
                        vm: raw.ends[j].vm.clone(),
                        other: other.clone(),
                    },
                );
            }
        }
        for &(_, end) in &ends {
            taken.push(((end.vm, end.uart.port), here.clone()));
        }
        if errors.len() == before {
            if let [(_, a), (_, b)] = ends[..] {
                links.push(Link {
                    name: raw.name.clone(),
                    ends: [a, b],
                });
            }
        }
    }
    links
}
