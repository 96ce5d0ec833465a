//! The scenario file as written: serde mirrors of its tables, before any semantic check.
//!
//! Word-valued fields (`load_order`, `vm_type`, `kernel.type`, `console.vuart`, `virtio[i].type`)
//! are read as strings and checked by `validate`, so a wrong word is reported with the VM and field
//! like every other semantic error instead of stopping the parse of its VM.

use serde::de::IgnoredAny;
use serde::Deserialize;

/// Top level of a scenario file. `[[vm]]` tables are deserialized one by one (see `validate`), so
/// that each VM's structural errors are reported separately.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    pub name: Option<String>,
    pub board: Option<String>,
    /// Checked for shape only here; see `validate`.
    #[serde(default, rename = "vm")]
    _vm: Vec<IgnoredAny>,
}

/// One `[[vm]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVm {
    pub name: String,
    pub load_order: String,
    pub vm_type: Option<String>,
    pub pcpus: Vec<u16>,
    pub memory_mib: u64,
    pub host_base: Option<u64>,
    pub kernel: RawKernel,
    /// The initrd's boot module (a name the build provides).
    pub initrd: Option<String>,
    /// The initrd as a file, relative to the scenario file (instead of `initrd`).
    pub initrd_file: Option<String>,
    /// Boot modules of a Multiboot kernel, each `"name args..."`.
    #[serde(default)]
    pub modules: Vec<String>,
    pub console: Option<RawConsole>,
    #[serde(default)]
    pub restart_on_reset: bool,
    #[serde(default)]
    pub pci_test_device: bool,
    /// `[[vm.virtio]]` tables, in order.
    #[serde(default)]
    pub virtio: Vec<RawVirtio>,
}

/// `[vm.kernel]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKernel {
    /// A boot module the build provides. Exactly one of `module` and `file` is given; after
    /// `files::resolve` a file's generated module name is here too.
    pub module: Option<String>,
    /// A file, relative to the scenario file.
    pub file: Option<String>,
    /// Required with `module`; detected from the file when `file` is given without it.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub cmdline: String,
    pub load_addr: Option<u64>,
    pub entry: Option<u64>,
}

/// `[vm.console]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    pub vuart: String,
}

/// One `[[vm.virtio]]` table. Which of the optional fields a device needs or may have depends on
/// its type, so that is checked by `validate` (with the VM and field named), not here.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVirtio {
    #[serde(rename = "type")]
    pub kind: String,
    /// blk: the disk's boot module.
    pub module: Option<String>,
    /// blk: the disk as a file, relative to the scenario file (instead of `module`).
    pub file: Option<String>,
    /// blk: read-only disk.
    pub readonly: Option<bool>,
    /// net: the switch's name.
    pub switch: Option<String>,
    /// net: `"xx:xx:xx:xx:xx:xx"`.
    pub mac: Option<String>,
}

impl RawKernel {
    /// The kernel's module name (empty when neither `module` nor a resolved `file` is there).
    pub fn module_name(&self) -> &str {
        self.module.as_deref().unwrap_or("")
    }

    /// The `type` word (empty when not given and not detected).
    pub fn kind_word(&self) -> &str {
        self.kind.as_deref().unwrap_or("")
    }
}
