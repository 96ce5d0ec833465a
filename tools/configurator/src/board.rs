//! Board files (`configs/boards/<name>.toml`): what the hardware has, as far as scenarios care.
//!
//! Format (also described at the top of each shipped board file):
//! ```toml
//! description = "QEMU q35, TCG, AMD-V"   # optional, free text
//! vendor = "amd"                          # intel | amd | intel-or-amd (CPU virtualization offered)
//! pcpus = 4                               # logical CPUs, numbered 0 (BSP) .. pcpus-1
//! memory_mib = 2048                       # RAM, MiB
//! hv_memory_mib = 64                      # RAM kept by the hypervisor, MiB (multiple of 2)
//! iommu = "amd"                           # intel | amd | none (default none)
//! [uarts]                                 # optional: physical legacy UARTs, name = I/O port
//! com1 = 0x3F8
//! [[pci]]                                 # optional, repeated: the PCI functions (see `pci`)
//! bdf = "00:04.0"
//! vendor = 0x1234
//! device = 0x11e8
//! class = 0x00ff00
//! name = "edu"
//! interrupt_pin = 1
//! msi = true
//! bars = [{ index = 0, kind = "mem32", size = 0x100000 }]
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{ConfigError, ErrorKind};
use crate::pci::{check_board_pci, Bdf, Iommu, PciFunction, RawPci};
use crate::toml_doc;

/// Which CPU virtualization extension a board offers; the hypervisor picks its backend by CPUID
/// at boot, so this is for tools (which emulator CPU model to start) and for checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// Intel VT-x only.
    Intel,
    /// AMD-V only.
    Amd,
    /// Either, depending on how the board is started (e.g. Bochs with a VT-x or an AMD-V CPU model).
    IntelOrAmd,
}

impl Vendor {
    /// The values accepted in a board file.
    pub const EXPECTED: &'static str = "intel, amd, intel-or-amd";

    /// Parses a board file value.
    pub fn from_name(value: &str) -> Option<Self> {
        match value {
            "intel" => Some(Self::Intel),
            "amd" => Some(Self::Amd),
            "intel-or-amd" => Some(Self::IntelOrAmd),
            _ => None,
        }
    }

    /// The board file spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Intel => "intel",
            Self::Amd => "amd",
            Self::IntelOrAmd => "intel-or-amd",
        }
    }

    /// Whether the board can run the VT-x backend.
    pub fn has_vmx(self) -> bool {
        matches!(self, Self::Intel | Self::IntelOrAmd)
    }

    /// Whether the board can run the AMD-V backend.
    pub fn has_svm(self) -> bool {
        matches!(self, Self::Amd | Self::IntelOrAmd)
    }
}

/// Physical legacy UARTs present on the board, by I/O port base.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uarts {
    /// COM1 (usually 0x3F8), the hypervisor's own console when present.
    pub com1: Option<u16>,
    /// COM2 (usually 0x2F8).
    pub com2: Option<u16>,
    /// COM3 (usually 0x3E8).
    pub com3: Option<u16>,
    /// COM4 (usually 0x2E8).
    pub com4: Option<u16>,
}

/// A validated board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Board {
    /// Board name (the file stem).
    pub name: String,
    /// The board file.
    pub file: PathBuf,
    /// Free-text description (may be empty).
    pub description: String,
    /// CPU virtualization offered.
    pub vendor: Vendor,
    /// Number of logical CPUs; pCPU 0 is the BSP and belongs to the hypervisor.
    pub pcpus: u16,
    /// RAM size in MiB.
    pub memory_mib: u64,
    /// RAM reserved for the hypervisor in MiB.
    pub hv_memory_mib: u64,
    /// Physical UARTs.
    pub uarts: Uarts,
    /// The IOMMU, if any.
    pub iommu: Iommu,
    /// The PCI functions, in file order.
    pub pci: Vec<PciFunction>,
    /// The L3 cache and its allocation support (`[cache]`; `None`: not described, no CAT).
    pub cache: Option<crate::cache_checks::BoardCache>,
}

impl Board {
    /// The function at `bdf`, if the board lists it.
    pub fn pci_function(&self, bdf: Bdf) -> Option<&PciFunction> {
        self.pci.iter().find(|f| f.bdf == bdf)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoard {
    #[serde(default)]
    description: String,
    vendor: String,
    pcpus: u16,
    memory_mib: u64,
    hv_memory_mib: u64,
    #[serde(default)]
    uarts: Uarts,
    iommu: Option<String>,
    #[serde(default)]
    pci: Vec<RawPci>,
    cache: Option<crate::cache_checks::RawBoardCache>,
}

impl Board {
    /// Reads board `name` from `<boards_dir>/<name>.toml`. A missing file is reported against
    /// `scenario_file`'s `board` field (that is where the mistake is); anything wrong inside the
    /// board file is reported against the board file.
    pub fn load(
        boards_dir: &Path,
        name: &str,
        scenario_file: &Path,
    ) -> Result<Self, Vec<ConfigError>> {
        let in_scenario = |kind| ConfigError {
            file: scenario_file.to_owned(),
            vm: None,
            field: "board".to_owned(),
            kind,
        };
        crate::name::check_name(name).map_err(|kind| vec![in_scenario(kind)])?;
        let path = boards_dir.join(format!("{name}.toml"));
        if !path.is_file() {
            return Err(vec![in_scenario(ErrorKind::UnknownBoard {
                board: name.to_owned(),
                path,
                available: available_boards(boards_dir),
            })]);
        }
        let text = fs::read_to_string(&path).map_err(|e| {
            vec![ConfigError {
                file: path.clone(),
                vm: None,
                field: String::new(),
                kind: ErrorKind::Read(e.to_string()),
            }]
        })?;
        Self::parse(&path, name, &text)
    }

    /// Parses and checks the text of board file `file` for board `name`.
    pub fn parse(file: &Path, name: &str, text: &str) -> Result<Self, Vec<ConfigError>> {
        let error = |field: &str, kind| ConfigError {
            file: file.to_owned(),
            vm: None,
            field: field.to_owned(),
            kind,
        };
        let table = toml_doc::parse(text)
            .map_err(|kinds| kinds.into_iter().map(|k| error("", k)).collect::<Vec<_>>())?;
        let raw: RawBoard = toml_doc::deserialize(text, &table)
            .map_err(|(field, kind)| vec![error(&field, kind)])?;

        let mut errors = Vec::new();
        let vendor = Vendor::from_name(&raw.vendor);
        if vendor.is_none() {
            errors.push(error(
                "vendor",
                ErrorKind::UnknownValue {
                    value: raw.vendor.clone(),
                    expected: Vendor::EXPECTED,
                },
            ));
        }
        if raw.pcpus == 0 {
            errors.push(error(
                "pcpus",
                ErrorKind::BadBoard("0 pCPUs: a board has at least the BSP".into()),
            ));
        }
        if raw.memory_mib == 0 {
            errors.push(error(
                "memory_mib",
                ErrorKind::BadBoard("0 MiB of RAM".into()),
            ));
        }
        if raw.hv_memory_mib == 0 || raw.hv_memory_mib % 2 != 0 {
            errors.push(error(
                "hv_memory_mib",
                ErrorKind::BadBoard(format!(
                    "{} MiB: the hypervisor reserve must be a non-zero multiple of 2 MiB",
                    raw.hv_memory_mib
                )),
            ));
        } else if raw.hv_memory_mib >= raw.memory_mib {
            errors.push(error(
                "hv_memory_mib",
                ErrorKind::BadBoard(format!(
                    "{} MiB leaves nothing of the board's {} MiB for VMs",
                    raw.hv_memory_mib, raw.memory_mib
                )),
            ));
        }
        let iommu_word = raw.iommu.as_deref().unwrap_or("none");
        let iommu = Iommu::from_name(iommu_word);
        if iommu.is_none() {
            errors.push(error(
                "iommu",
                ErrorKind::UnknownValue {
                    value: iommu_word.to_owned(),
                    expected: Iommu::EXPECTED,
                },
            ));
        }
        let mut pci_errors = Vec::new();
        let pci = check_board_pci(&raw.pci, &mut pci_errors);
        errors.extend(
            pci_errors
                .into_iter()
                .map(|(field, kind)| error(&field, kind)),
        );
        let cache = raw.cache.as_ref().and_then(|c| {
            crate::cache_checks::check_board_cache(c)
                .map_err(|(field, kind)| errors.push(error(&field, kind)))
                .ok()
        });
        match (vendor, iommu) {
            (Some(vendor), Some(iommu)) if errors.is_empty() => Ok(Self {
                name: name.to_owned(),
                file: file.to_owned(),
                description: raw.description,
                vendor,
                pcpus: raw.pcpus,
                memory_mib: raw.memory_mib,
                hv_memory_mib: raw.hv_memory_mib,
                uarts: raw.uarts,
                iommu,
                pci,
                cache,
            }),
            _ => Err(errors),
        }
    }
}

/// The board names found in `boards_dir`, sorted and comma-separated, or `none`.
fn available_boards(boards_dir: &Path) -> String {
    let mut names: Vec<String> = fs::read_dir(boards_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_owned()))
        .collect();
    names.sort();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::{Bdf, Iommu};

    const GOOD: &str = "vendor = \"amd\"\npcpus = 4\nmemory_mib = 2048\nhv_memory_mib = 64\n[uarts]\ncom1 = 0x3F8\n";

    fn parse(text: &str) -> Result<Board, Vec<ConfigError>> {
        Board::parse(Path::new("boards/b.toml"), "b", text)
    }

    #[test]
    fn parses_good_board() {
        let board = parse(GOOD).unwrap();
        assert_eq!(board.vendor, Vendor::Amd);
        assert_eq!(board.pcpus, 4);
        assert_eq!(board.uarts.com1, Some(0x3F8));
        assert_eq!(board.uarts.com2, None);
    }

    #[test]
    fn collects_board_errors() {
        let errors = parse("vendor = \"via\"\npcpus = 0\nmemory_mib = 64\nhv_memory_mib = 64\n")
            .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["vendor", "pcpus", "hv_memory_mib"], "{errors:?}");
        assert!(errors.iter().all(|e| e.file == Path::new("boards/b.toml")));
    }

    #[test]
    fn rejects_unknown_board_field() {
        let errors = parse(&format!("{GOOD}com5 = 1\n")).unwrap_err();
        assert_eq!(errors[0].field, "uarts.com5");
        assert!(matches!(errors[0].kind, ErrorKind::UnknownField { .. }));
    }

    #[test]
    fn vendor_capabilities() {
        assert!(Vendor::IntelOrAmd.has_vmx() && Vendor::IntelOrAmd.has_svm());
        assert!(!Vendor::Amd.has_vmx() && !Vendor::Intel.has_svm());
        for v in [Vendor::Intel, Vendor::Amd, Vendor::IntelOrAmd] {
            assert_eq!(Vendor::from_name(v.name()), Some(v));
        }
    }

    const PCI: &str = "\
        [[pci]]\nbdf = \"00:1e.0\"\nvendor = 0x8086\ndevice = 0x244e\nclass = 0x060401\nname = \"bridge\"\nis_bridge = true\n\
        [[pci]]\nbdf = \"01:00.0\"\nvendor = 0x10ec\ndevice = 0x8139\nclass = 0x020000\nname = \"nic\"\n\
        bridge = \"00:1e.0\"\ninterrupt_pin = 1\nmsi = true\nmsix = 4\niommu_unit = \"drhd0\"\n\
        bars = [{ index = 0, kind = \"mem64\", size = 0x4000, prefetchable = true }, { index = 2, kind = \"io\", size = 0x100 }]\n";

    #[test]
    fn parses_pci_functions_and_iommu() {
        let board = parse(&format!("iommu = \"intel\"\n{GOOD}{PCI}")).unwrap();
        assert_eq!(board.iommu, Iommu::Intel);
        assert_eq!(board.pci.len(), 2);
        let nic = board.pci_function(Bdf::parse("01:00.0").unwrap()).unwrap();
        assert_eq!(
            (nic.vendor, nic.device, nic.class),
            (0x10EC, 0x8139, 0x02_0000)
        );
        assert_eq!(nic.bridge, Bdf::parse("00:1e.0").ok());
        assert_eq!(
            (nic.interrupt_pin, nic.msi, nic.msix),
            (Some(1), true, Some(4))
        );
        assert_eq!(nic.iommu_unit.as_deref(), Some("drhd0"));
        assert_eq!(nic.bars.len(), 2);
        assert!(nic.bars[0].prefetchable && nic.bars[0].kind == crate::pci::BarKind::Mem64);
        assert!(board.pci[0].is_bridge);
        // The defaults: no IOMMU, no functions.
        let plain = parse(GOOD).unwrap();
        assert_eq!((plain.iommu, plain.pci.len()), (Iommu::None, 0));
    }

    /// The fields of the errors of a board made of GOOD, PCI and `extra`.
    fn pci_error_fields(extra: &str) -> Vec<String> {
        let errors = parse(&format!("iommu = \"intel\"\n{GOOD}{PCI}{extra}")).unwrap_err();
        assert!(errors.iter().all(|e| e.file == Path::new("boards/b.toml")));
        errors.into_iter().map(|e| e.field).collect()
    }

    const FN: &str = "[[pci]]\nvendor = 0x1234\ndevice = 1\nclass = 0xff00\nname = \"x\"\n";

    #[test]
    fn rejects_bad_pci_functions() {
        for (extra, field) in [
            ("bdf = \"00:1e\"\n", "pci[2].bdf"),
            ("bdf = \"01:00.0\"\n", "pci[2].bdf"),
            ("bdf = \"00:02.0\"\nbridge = \"00:09.0\"\n", "pci[2].bridge"),
            ("bdf = \"00:02.0\"\nbridge = \"01:00.0\"\n", "pci[2].bridge"),
            ("bdf = \"00:02.0\"\nbridge = \"1e\"\n", "pci[2].bridge"),
            ("bdf = \"00:02.0\"\ninterrupt_pin = 5\n", "pci[2].interrupt_pin"),
            ("bdf = \"00:02.0\"\nmsix = 0\n", "pci[2].msix"),
            ("bdf = \"00:02.0\"\ngsi = 20\n", "pci[2].gsi"),
            ("bdf = \"00:02.0\"\nmsix = 2049\n", "pci[2].msix"),
            ("bdf = \"00:02.0\"\nbars = [{ index = 0, kind = \"mem16\", size = 16 }]\n", "pci[2].bars[0].kind"),
            ("bdf = \"00:02.0\"\nbars = [{ index = 6, kind = \"mem32\", size = 16 }]\n", "pci[2].bars[0].index"),
            ("bdf = \"00:02.0\"\nbars = [{ index = 5, kind = \"mem64\", size = 16 }]\n", "pci[2].bars[0].index"),
            ("bdf = \"00:02.0\"\nbars = [{ index = 0, kind = \"mem64\", size = 16 }, { index = 1, kind = \"io\", size = 4 }]\n", "pci[2].bars[1].index"),
            ("bdf = \"00:02.0\"\nbars = [{ index = 0, kind = \"mem32\", size = 24 }]\n", "pci[2].bars[0].size"),
            ("bdf = \"00:02.0\"\nbars = [{ index = 0, kind = \"mem32\", size = 8 }]\n", "pci[2].bars[0].size"),
            ("bdf = \"00:02.0\"\nbars = [{ index = 0, kind = \"io\", size = 4, prefetchable = true }]\n", "pci[2].bars[0].prefetchable"),

            ("bdf = \"00:02.0\"\nlanes = 4\n", "pci[2].lanes"),
        ] {
            let fields = pci_error_fields(&format!("{FN}{extra}"));
            assert_eq!(fields, [field], "{extra}");
        }
        let fields = pci_error_fields(
            "[[pci]]\nbdf = \"00:02.0\"\nvendor = 0xffff\ndevice = 1\nclass = 0\nname = \"x\"\n",
        );
        assert_eq!(fields, ["pci[2].vendor"]);
        let fields = pci_error_fields(
            "[[pci]]\nbdf = \"00:02.0\"\nvendor = 1\ndevice = 1\nclass = 0x1000000\nname = \"x\"\n",
        );
        assert_eq!(fields, ["pci[2].class"]);
        let errors = parse(&format!("iommu = \"vt-d\"\n{GOOD}")).unwrap_err();
        assert_eq!(errors[0].field, "iommu");
    }
}
