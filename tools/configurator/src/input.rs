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
    /// `iommu` or `off`; checked by `validate`.
    pub dma_isolation: Option<String>,
    /// Checked for shape only here; see `validate`.
    #[serde(default, rename = "vm")]
    _vm: Vec<IgnoredAny>,
    /// `[[shm]]` tables: checked one by one by `shm_checks`.
    #[serde(default, rename = "shm")]
    _shm: Vec<IgnoredAny>,
    /// `[[vuart_link]]` tables: checked one by one by `vuart_checks`.
    #[serde(default, rename = "vuart_link")]
    _vuart_link: Vec<IgnoredAny>,
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
    /// Physical PCI functions the VM owns, in order.
    #[serde(default)]
    pub pci_devices: Vec<RawPciDevice>,
    /// L3 way mask: one for the whole VM, or one per vCPU (see `cache_checks`).
    pub cache_mask: Option<crate::cache_checks::RawCacheMask>,
}

/// One `pci_devices` entry: `"00:04.0"` (the guest slot is the host device number) or
/// `{ bdf = "00:04.0", slot = 6 }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawPciDevice {
    /// A plain string.
    Plain(String),
    /// The table form.
    Table(RawPciTable),
}

impl RawPciDevice {
    /// The function as written.
    pub fn bdf(&self) -> &str {
        match self {
            Self::Plain(bdf) => bdf,
            Self::Table(table) => &table.bdf,
        }
    }

    /// The guest slot chosen, if any.
    pub fn slot(&self) -> Option<u64> {
        match self {
            Self::Plain(_) => None,
            Self::Table(table) => table.slot,
        }
    }

    /// The field to name for a problem with the function (`pci_devices[i]` or
    /// `pci_devices[i].bdf`).
    pub fn bdf_field(&self, index: usize) -> String {
        match self {
            Self::Plain(_) => format!("pci_devices[{index}]"),
            Self::Table(_) => format!("pci_devices[{index}].bdf"),
        }
    }

    /// The field to name for a problem with the guest slot.
    pub fn slot_field(&self, index: usize) -> String {
        match self {
            Self::Table(table) if table.slot.is_some() => format!("pci_devices[{index}].slot"),
            _ => format!("pci_devices[{index}]"),
        }
    }
}

/// The table form of a `pci_devices` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPciTable {
    pub bdf: String,
    pub slot: Option<u64>,
}

impl<'de> Deserialize<'de> for RawPciDevice {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawPciDevice;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a function \"BB:DD.F\" or a table { bdf = \"BB:DD.F\", slot = N }")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(RawPciDevice::Plain(value.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                RawPciTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawPciDevice::Table)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
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
