//! Entry points that read a scenario file from disk: what xtask, build scripts and the CLI call.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{ConfigError, ErrorKind};
use crate::model::Validated;
use crate::validate::{validate_str, Modules};

/// Reads and validates the scenario at `path` (e.g. `configs/partitioned.toml`) with the board
/// files next to it (`configs/boards/`), checking module names against `modules`.
pub fn load_and_validate(path: &Path, modules: &[&str]) -> Result<Validated, Vec<ConfigError>> {
    load(path, &boards_dir_for(path), Modules::Known(modules))
}

/// Reads and validates the scenario at `path` with boards from `boards_dir`.
pub fn load(
    path: &Path,
    boards_dir: &Path,
    modules: Modules<'_>,
) -> Result<Validated, Vec<ConfigError>> {
    let text = fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: path.to_owned(),
            vm: None,
            field: String::new(),
            kind: ErrorKind::Read(e.to_string()),
        }]
    })?;
    validate_str(path, &text, boards_dir, modules)
}

/// Where the boards of scenario `path` live: the `boards` directory beside it.
pub fn boards_dir_for(path: &Path) -> PathBuf {
    path.parent().unwrap_or(Path::new("")).join("boards")
}
