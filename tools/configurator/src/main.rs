//! `quercus-config`: validate a Quercus scenario, or generate the Rust static the hypervisor is built with.

#![forbid(unsafe_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use configurator::{boards_dir_for, generate, load, ConfigError, Modules, Validated};

#[derive(Parser)]
#[command(
    name = "quercus-config",
    about = "Validate Quercus scenarios and generate their static configuration"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a scenario and its board; print `ok: N VMs` or every error.
    Validate(Input),
    /// Check a scenario and write the Rust source defining `pub static SCENARIO`.
    Generate {
        #[command(flatten)]
        input: Input,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Args)]
struct Input {
    /// The scenario file, e.g. configs/default.toml.
    scenario: PathBuf,
    /// A boot module name that exists (repeatable). Without any, module names are not checked.
    #[arg(long = "module", value_name = "NAME")]
    modules: Vec<String>,
    /// Directory of board files [default: `boards/` beside the scenario].
    #[arg(long, value_name = "DIR")]
    boards: Option<PathBuf>,
}

impl Input {
    fn validate(&self) -> Result<Validated, Vec<ConfigError>> {
        let names: Vec<&str> = self.modules.iter().map(String::as_str).collect();
        let modules = if names.is_empty() {
            eprintln!("note: module names not checked (no --module given)");
            Modules::Unchecked
        } else {
            Modules::Known(&names)
        };
        let boards = self
            .boards
            .clone()
            .unwrap_or_else(|| boards_dir_for(&self.scenario));
        load(&self.scenario, &boards, modules)
    }
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    let (input, output) = match &cli.command {
        Command::Validate(input) => (input, None),
        Command::Generate { input, output } => (input, Some(output)),
    };
    let validated = match input.validate() {
        Ok(validated) => validated,
        Err(errors) => {
            report(&errors);
            return Ok(ExitCode::FAILURE);
        }
    };
    for warning in &validated.warnings {
        eprintln!("warning: {warning}");
    }
    match output {
        None => println!("ok: {} VMs", validated.vms.len()),
        Some(output) => write(output, &generate(&validated))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn report(errors: &[ConfigError]) {
    for error in errors {
        eprintln!("error: {error}");
    }
    eprintln!("{} error(s)", errors.len());
}

fn write(path: &Path, source: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(path, source).with_context(|| format!("writing {}", path.display()))
}
