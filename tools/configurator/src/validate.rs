//! Validation of a whole scenario document: syntax, top-level fields, board, each VM, then across VMs.

use std::path::Path;

use toml::de::DeValue;
use toml::Spanned;

use crate::board::Board;
use crate::cross_checks::check_across;
use crate::error::{ConfigError, ErrorKind, VmRef};
use crate::input::{RawScenario, RawVm};
use crate::model::Validated;
use crate::passthrough_checks::{check_passthrough_across, dma_isolation, DMA_ISOLATIONS};
use crate::toml_doc;
use crate::virtio_checks::{collect_switches, MAX_SWITCHES};
use crate::vm_checks::{check_vm, Report};

/// Which boot modules exist, for checking `kernel.module`, `initrd`, `modules` and virtio disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modules<'a> {
    /// Only these module names exist (e.g. the guests xtask builds).
    Known(&'a [&'a str]),
    /// Do not check module names (only that they are not empty).
    Unchecked,
}

/// Validates scenario `text` (read from `file`, which is only used in messages and for the default
/// scenario name) against the board it names, looked up as `<boards_dir>/<board>.toml`.
///
/// Every problem found is returned, sorted by VM (file-level problems first).
pub fn validate_str(
    file: &Path,
    text: &str,
    boards_dir: &Path,
    modules: Modules<'_>,
) -> Result<Validated, Vec<ConfigError>> {
    let file_error = |field: &str, kind| ConfigError {
        file: file.to_owned(),
        vm: None,
        field: field.to_owned(),
        kind,
    };
    let doc = toml_doc::parse(text).map_err(|kinds| {
        kinds
            .into_iter()
            .map(|k| file_error("", k))
            .collect::<Vec<_>>()
    })?;
    let mut errors = Vec::new();

    let top: Option<RawScenario> = toml_doc::deserialize(text, &doc)
        .map_err(|(field, kind)| errors.push(file_error(&field, kind)))
        .ok();

    let mut name = None;
    if let Some(top) = &top {
        let scenario_name = match &top.name {
            Some(name) => name.clone(),
            None => file
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        match crate::name::check_name(&scenario_name) {
            Ok(()) => name = Some(scenario_name),
            Err(kind) => errors.push(file_error("name", kind)),
        }
    }
    // When the top level did not deserialize (say, an unknown key), a well-formed `board` is
    // still used so that the VMs get their board checks in the same run.
    let board_name = match &top {
        Some(top) => top.board.clone(),
        None => match doc.get_ref().get("board").map(Spanned::get_ref) {
            Some(DeValue::String(board)) => Some(board.to_string()),
            _ => None,
        },
    };
    let board = match board_name {
        None if top.is_some() => {
            errors.push(file_error("board", ErrorKind::MissingField));
            None
        }
        None => None,
        Some(board_name) => Board::load(boards_dir, &board_name, file)
            .map_err(|board_errors| errors.extend(board_errors))
            .ok(),
    };

    let entries: &[Spanned<DeValue<'_>>] = match doc.get_ref().get("vm").map(Spanned::get_ref) {
        Some(DeValue::Array(entries)) => entries,
        // A `vm` that is not an array was reported by the top-level deserialization.
        _ => &[],
    };
    if entries.is_empty() && top.is_some() {
        errors.push(file_error("vm", ErrorKind::NoVms));
    }

    let mut parsed: Vec<(VmRef, RawVm)> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let table = match entry.get_ref() {
            DeValue::Table(table) => table,
            other => {
                errors.push(ConfigError {
                    file: file.to_owned(),
                    vm: Some(VmRef { index, name: None }),
                    field: String::new(),
                    kind: ErrorKind::VmNotTable(toml_doc::type_name(other)),
                });
                continue;
            }
        };
        let vm = VmRef {
            index,
            name: match table.get("name").map(Spanned::get_ref) {
                Some(DeValue::String(name)) => Some(name.to_string()),
                _ => None,
            },
        };
        match toml_doc::deserialize::<RawVm>(text, &Spanned::new(entry.span(), table.clone())) {
            Ok(raw) => parsed.push((vm, raw)),
            Err((field, kind)) => errors.push(ConfigError {
                file: file.to_owned(),
                vm: Some(vm),
                field,
                kind,
            }),
        }
    }

    let table = crate::files::resolve(file, &mut parsed, board.as_ref(), &mut errors);
    // A file's generated module name is as good as a module the build makes.
    let known: Vec<&str> = match modules {
        Modules::Known(names) => names
            .iter()
            .copied()
            .chain(table.files.iter().map(|f| f.name.as_str()))
            .collect(),
        Modules::Unchecked => Vec::new(),
    };
    let modules = match modules {
        Modules::Known(_) => Modules::Known(&known),
        Modules::Unchecked => Modules::Unchecked,
    };
    let switches = collect_switches(parsed.iter().map(|(_, raw)| raw), MAX_SWITCHES);
    let mut vms = Vec::new();
    for (vm, raw) in &parsed {
        let mut report = Report {
            file,
            vm: vm.clone(),
            errors: &mut errors,
        };
        vms.extend(check_vm(
            &mut report,
            raw,
            board.as_ref(),
            modules,
            &switches,
        ));
    }
    let refs: Vec<(VmRef, &RawVm)> = parsed.iter().map(|(vm, raw)| (vm.clone(), raw)).collect();
    check_across(file, &refs, board.as_ref(), &mut errors);
    let shm =
        crate::shm_checks::check_shm(file, text, &doc, &refs, &vms, board.as_ref(), &mut errors);
    let vuart_links = crate::vuart_checks::check_links(file, text, &doc, &refs, &vms, &mut errors);
    let isolation_word = top
        .as_ref()
        .and_then(|top| top.dma_isolation.as_deref())
        .unwrap_or("iommu");
    let isolation = dma_isolation(isolation_word);
    if errors.is_empty() {
        let at_host = isolation == Some(scenario::DmaIsolation::Off);
        crate::files::check_fit(file, &vms, &table, at_host, &mut errors);
    }
    if isolation.is_none() {
        errors.push(file_error(
            "dma_isolation",
            ErrorKind::UnknownValue {
                value: isolation_word.to_owned(),
                expected: DMA_ISOLATIONS,
            },
        ));
    }
    let mut warnings = Vec::new();
    check_passthrough_across(
        file,
        &refs,
        board.as_ref(),
        isolation,
        &mut errors,
        &mut warnings,
    );

    let cache =
        crate::cache_checks::check_cache(file, &refs, board.as_ref(), &mut errors, &mut warnings);

    match (name, board, isolation) {
        (Some(name), Some(board), Some(dma_isolation)) if errors.is_empty() => Ok(Validated {
            file: file.to_owned(),
            name,
            board,
            vms,
            switches,
            dma_isolation,
            warnings,
            files: table.files,
            cache,
            shm,
            vuart_links,
        }),
        _ => {
            errors.sort_by_key(|e| e.vm.as_ref().map(|vm| vm.index));
            Err(errors)
        }
    }
}
