//! PCI in board files: bus:device.function addresses, the board's `[[pci]]` functions and its
//! IOMMU, read from the file and checked against each other.

use std::fmt;

use serde::Deserialize;

use crate::error::ErrorKind;

/// A PCI function's address on segment 0, written `"BB:DD.F"` in hex (e.g. `"00:1f.3"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    /// Bus, 0..=255.
    pub bus: u8,
    /// Device, 0..=31.
    pub device: u8,
    /// Function, 0..=7.
    pub function: u8,
}

impl Bdf {
    /// Parses `"BB:DD.F"`: two hex digits of bus, two of device (at most 1f), one function digit
    /// (0-7), either case. Anything else is [`ErrorKind::BdfSyntax`].
    pub fn parse(text: &str) -> Result<Self, ErrorKind> {
        let bad = || ErrorKind::BdfSyntax(text.to_owned());
        let hex = |part: &str, digits: usize| {
            if part.len() == digits && part.bytes().all(|b| b.is_ascii_hexdigit()) {
                u8::from_str_radix(part, 16).ok()
            } else {
                None
            }
        };
        let (bus, rest) = text.split_once(':').ok_or_else(bad)?;
        let (device, function) = rest.split_once('.').ok_or_else(bad)?;
        let bus = hex(bus, 2).ok_or_else(bad)?;
        let device = hex(device, 2).filter(|&d| d < 32).ok_or_else(bad)?;
        let function = hex(function, 1).filter(|&f| f < 8).ok_or_else(bad)?;
        Ok(Self {
            bus,
            device,
            function,
        })
    }

    /// `bus << 8 | device << 3 | function`, as in a configuration address and
    /// [`scenario::PassthroughConfig::host_bdf`].
    pub fn to_u16(self) -> u16 {
        u16::from(self.bus) << 8 | u16::from(self.device) << 3 | u16::from(self.function)
    }

    /// Function 0 of the same device.
    pub fn function0(self) -> Self {
        Self {
            function: 0,
            ..self
        }
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// The board's IOMMU, which isolates passed-through devices' DMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iommu {
    /// Intel VT-d (DMAR table).
    Intel,
    /// AMD-Vi (IVRS table).
    Amd,
    /// None: DMA isolation is impossible; a scenario that passes devices must say
    /// `dma_isolation = "off"`.
    None,
}

impl Iommu {
    /// The values accepted in a board file.
    pub const EXPECTED: &'static str = "intel, amd, none";

    /// Parses a board file value.
    pub fn from_name(value: &str) -> Option<Self> {
        match value {
            "intel" => Some(Self::Intel),
            "amd" => Some(Self::Amd),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    /// The board file spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Intel => "intel",
            Self::Amd => "amd",
            Self::None => "none",
        }
    }
}

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory.
    Mem32,
    /// 64-bit memory (takes this BAR and the next).
    Mem64,
    /// I/O ports.
    Io,
}

impl BarKind {
    /// The values accepted in a board file.
    pub const EXPECTED: &'static str = "mem32, mem64, io";

    /// Parses a board file value.
    pub fn from_name(value: &str) -> Option<Self> {
        match value {
            "mem32" => Some(Self::Mem32),
            "mem64" => Some(Self::Mem64),
            "io" => Some(Self::Io),
            _ => None,
        }
    }

    /// The board file spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mem32 => "mem32",
            Self::Mem64 => "mem64",
            Self::Io => "io",
        }
    }
}

/// One base address register of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// BAR number, 0..=5 (a 64-bit BAR also takes `index + 1`).
    pub index: u8,
    /// What it decodes.
    pub kind: BarKind,
    /// Size in bytes (a power of two).
    pub size: u64,
    /// Prefetchable memory (never for an I/O BAR).
    pub prefetchable: bool,
}

/// One PCI function the board has (`[[pci]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciFunction {
    /// Its address.
    pub bdf: Bdf,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class code, subclass and programming interface (`0xCCSSPP`).
    pub class: u32,
    /// Free text (what it is).
    pub name: String,
    /// The PCI-to-PCI bridge it sits behind when its requester ID may be aliased by that bridge
    /// (conventional PCI): such functions are passed whole (all to one VM).
    pub bridge: Option<Bdf>,
    /// It is a PCI-to-PCI bridge.
    pub is_bridge: bool,
    /// It is the console UART's device (say, a PCI serial card): never given to a VM.
    pub uart: bool,
    /// INTx pin, 1 (INTA) to 4 (INTD); `None` when it has no INTx.
    pub interrupt_pin: Option<u8>,
    /// Has an MSI capability.
    pub msi: bool,
    /// MSI-X table size, when it has an MSI-X capability.
    pub msix: Option<u16>,
    /// The I/O APIC input (GSI) its INTx pin drives (the firmware's `_PRT` routing).
    pub gsi: Option<u8>,
    /// Its BARs, by index.
    pub bars: Vec<Bar>,
    /// The IOMMU unit covering it, when the board says (free text, e.g. a DRHD base).
    pub iommu_unit: Option<String>,
}

impl PciFunction {
    /// When the function may never be given to a VM because of what it is, the reason.
    pub fn not_assignable(&self) -> Option<&'static str> {
        let base_sub = self.class >> 8;
        if base_sub == 0x0600 {
            Some("a host bridge")
        } else if self.is_bridge || base_sub == 0x0604 || base_sub == 0x0609 {
            Some("a PCI-to-PCI bridge (pass the devices behind it instead)")
        } else if base_sub == 0x0601 {
            Some("an ISA/LPC bridge (it decodes the platform's legacy devices)")
        } else if base_sub >> 8 == 0x06 {
            Some("a chipset bridge function (class 0x06)")
        } else if base_sub == 0x0806 {
            Some("the IOMMU")
        } else {
            None
        }
    }
}

/// `[[pci]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPci {
    bdf: String,
    vendor: u16,
    device: u16,
    class: u32,
    name: String,
    bridge: Option<String>,
    #[serde(default)]
    is_bridge: bool,
    #[serde(default)]
    uart: bool,
    interrupt_pin: Option<u8>,
    #[serde(default)]
    msi: bool,
    msix: Option<u16>,
    gsi: Option<u8>,
    #[serde(default)]
    bars: Vec<RawBar>,
    iommu_unit: Option<String>,
}

/// `bars = [{ index, kind, size }]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBar {
    index: u8,
    kind: String,
    size: u64,
    #[serde(default)]
    prefetchable: bool,
}

/// Most MSI-X vectors a function can have (the table size field is 11 bits, N - 1).
pub const MAX_MSIX: u16 = 2048;

/// Checks the board's `[[pci]]` list; problems are pushed as `(field, kind)` with fields like
/// `pci[2].bars[1].size`. Returns the functions that are valid.
pub fn check_board_pci(raw: &[RawPci], errors: &mut Vec<(String, ErrorKind)>) -> Vec<PciFunction> {
    let bad = |text: String| ErrorKind::BadBoard(text);
    let mut out = Vec::new();
    let parsed: Vec<Option<Bdf>> = raw.iter().map(|p| Bdf::parse(&p.bdf).ok()).collect();
    for (i, entry) in raw.iter().enumerate() {
        let field = |name: &str| format!("pci[{i}].{name}");
        let before = errors.len();
        let bdf = match Bdf::parse(&entry.bdf) {
            Ok(bdf) => {
                if let Some(first) = parsed[..i].iter().position(|b| *b == Some(bdf)) {
                    errors.push((
                        field("bdf"),
                        bad(format!("function {bdf} is already listed as pci[{first}]")),
                    ));
                }
                Some(bdf)
            }
            Err(kind) => {
                errors.push((field("bdf"), kind));
                None
            }
        };
        if entry.vendor == 0 || entry.vendor == 0xFFFF {
            errors.push((
                field("vendor"),
                bad(format!(
                    "{:#06x} is not a vendor ID (it is what an absent function reads)",
                    entry.vendor
                )),
            ));
        }
        if entry.class > 0xFF_FFFF {
            errors.push((
                field("class"),
                bad(format!(
                    "{:#x} is more than 24 bits (class, subclass, programming interface: 0xCCSSPP)",
                    entry.class
                )),
            ));
        }
        if let Some(pin) = entry.interrupt_pin.filter(|p| !(1..=4).contains(p)) {
            errors.push((
                field("interrupt_pin"),
                bad(format!(
                    "{pin} is not an INTx pin (1 = INTA .. 4 = INTD; leave it out for none)"
                )),
            ));
        }
        if entry.gsi.is_some() && entry.interrupt_pin.is_none() {
            errors.push((
                field("gsi"),
                bad("a GSI without an interrupt_pin: a function with no INTx pin drives no I/O APIC input".into()),
            ));
        }
        if let Some(n) = entry.msix.filter(|n| !(1..=MAX_MSIX).contains(n)) {
            errors.push((
                field("msix"),
                bad(format!(
                    "{n} MSI-X vectors: a table has 1 to {MAX_MSIX} entries"
                )),
            ));
        }
        let bridge = match entry.bridge.as_deref().map(Bdf::parse) {
            None => None,
            Some(Err(kind)) => {
                errors.push((field("bridge"), kind));
                None
            }
            Some(Ok(behind)) => {
                match raw.iter().zip(&parsed).find(|(_, b)| **b == Some(behind)) {
                    None => errors.push((
                        field("bridge"),
                        bad(format!(
                            "bridge {behind} is not listed in this board's [[pci]]"
                        )),
                    )),
                    Some((other, _)) if !other.is_bridge => errors.push((
                        field("bridge"),
                        bad(format!("{behind} is not marked `is_bridge = true`")),
                    )),
                    Some(_) if Some(behind) == bdf => errors.push((
                        field("bridge"),
                        bad("a function cannot sit behind itself".to_owned()),
                    )),
                    Some(_) => {}
                }
                Some(behind)
            }
        };
        let bars = check_bars(&entry.bars, &field, errors);
        if errors.len() == before {
            if let Some(bdf) = bdf {
                out.push(PciFunction {
                    bdf,
                    vendor: entry.vendor,
                    device: entry.device,
                    class: entry.class,
                    name: entry.name.clone(),
                    bridge,
                    is_bridge: entry.is_bridge,
                    uart: entry.uart,
                    interrupt_pin: entry.interrupt_pin,
                    msi: entry.msi,
                    msix: entry.msix,
                    gsi: entry.gsi,
                    bars,
                    iommu_unit: entry.iommu_unit.clone(),
                });
            }
        }
    }
    out
}

fn check_bars(
    raw: &[RawBar],
    field: &dyn Fn(&str) -> String,
    errors: &mut Vec<(String, ErrorKind)>,
) -> Vec<Bar> {
    let bad = |text: String| ErrorKind::BadBoard(text);
    let mut taken: [Option<usize>; 6] = [None; 6];
    let mut out = Vec::new();
    for (j, bar) in raw.iter().enumerate() {
        let here = |name: &str| field(&format!("bars[{j}].{name}"));
        let Some(kind) = BarKind::from_name(&bar.kind) else {
            errors.push((
                here("kind"),
                ErrorKind::UnknownValue {
                    value: bar.kind.clone(),
                    expected: BarKind::EXPECTED,
                },
            ));
            continue;
        };
        let last = if kind == BarKind::Mem64 { 4 } else { 5 };
        if bar.index > last {
            errors.push((
                here("index"),
                bad(format!(
                    "BAR {} does not exist for a {} BAR (0..={last})",
                    bar.index,
                    kind.name()
                )),
            ));
            continue;
        }
        let slots = if kind == BarKind::Mem64 { 2 } else { 1 };
        let first = usize::from(bar.index);
        for (k, owner) in taken.iter_mut().enumerate().skip(first).take(slots) {
            match owner {
                Some(other) => errors.push((
                    here("index"),
                    bad(format!("BAR {k} is already taken by bars[{other}]")),
                )),
                None => *owner = Some(j),
            }
        }
        let min = if kind == BarKind::Io { 4 } else { 16 };
        if !bar.size.is_power_of_two()
            || bar.size < min
            || (kind != BarKind::Mem64 && bar.size > 1 << 31)
        {
            errors.push((
                here("size"),
                bad(format!(
                    "{:#x} bytes is not a {} BAR size (a power of two, at least {min}{})",
                    bar.size,
                    kind.name(),
                    if kind == BarKind::Mem64 {
                        ""
                    } else {
                        ", at most 2 GiB"
                    }
                )),
            ));
            continue;
        }
        if bar.prefetchable && kind == BarKind::Io {
            errors.push((
                here("prefetchable"),
                bad("an I/O BAR is never prefetchable".to_owned()),
            ));
            continue;
        }
        out.push(Bar {
            index: bar.index,
            kind,
            size: bar.size,
            prefetchable: bar.prefetchable,
        });
    }
    out.sort_by_key(|bar| bar.index);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdf_syntax() {
        let bdf = Bdf::parse("00:1f.3").unwrap();
        assert_eq!((bdf.bus, bdf.device, bdf.function), (0, 0x1F, 3));
        assert_eq!(bdf.to_u16(), 0xFB);
        assert_eq!(Bdf::parse("02:1F.7").unwrap().to_u16(), 0x2FF);
        assert_eq!(bdf.to_string(), "00:1f.3");
        assert_eq!(bdf.function0().to_string(), "00:1f.0");
        for bad in [
            "",
            "0:04.0",
            "00:4.0",
            "00:04",
            "00:04.8",
            "00:20.0",
            "000:04.0",
            "00.04.0",
            "0000:00:04.0",
            "00:04.0 ",
            "0g:04.0",
            "00:04.a",
            "00:-4.0",
        ] {
            assert_eq!(
                Bdf::parse(bad),
                Err(ErrorKind::BdfSyntax(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn words_round_trip() {
        for word in Iommu::EXPECTED.split(", ") {
            assert_eq!(Iommu::from_name(word).map(Iommu::name), Some(word));
        }
        for word in BarKind::EXPECTED.split(", ") {
            assert_eq!(BarKind::from_name(word).map(BarKind::name), Some(word));
        }
        assert_eq!(Iommu::from_name("vt-d"), None);
    }

    fn function(class: u32, is_bridge: bool) -> PciFunction {
        PciFunction {
            bdf: Bdf::parse("00:04.0").unwrap(),
            vendor: 0x1234,
            device: 0x11E8,
            class,
            name: "x".into(),
            bridge: None,
            is_bridge,
            uart: false,
            interrupt_pin: None,
            msi: false,
            msix: None,
            gsi: None,
            bars: Vec::new(),
            iommu_unit: None,
        }
    }

    #[test]
    fn bridges_and_iommu_are_not_assignable() {
        assert!(function(0x06_0000, false)
            .not_assignable()
            .unwrap()
            .contains("host bridge"));
        assert!(function(0x06_0400, false)
            .not_assignable()
            .unwrap()
            .contains("PCI-to-PCI"));
        assert!(function(0x00_FF00, true)
            .not_assignable()
            .unwrap()
            .contains("PCI-to-PCI"));
        assert!(function(0x06_0100, false)
            .not_assignable()
            .unwrap()
            .contains("ISA"));
        assert!(function(0x08_0600, false)
            .not_assignable()
            .unwrap()
            .contains("IOMMU"));
        assert_eq!(function(0x02_0000, false).not_assignable(), None);
        assert!(function(0x06_8000, false)
            .not_assignable()
            .unwrap()
            .contains("class 0x06"));
    }
}
