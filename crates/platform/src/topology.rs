//! CPU and interrupt-controller topology from the ACPI MADT ("APIC" table).
//!
//! [`Topology::from_acpi`] walks the MADT found through the `acpi` crate;
//! [`Topology::from_madt_bytes`] parses a MADT held as bytes, checking the
//! header, the checksum and every entry's bounds itself. Both feed one
//! interpretation of the entries (ACPI 6.5, section 5.2.12).

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use acpi::madt::{EntryHeader, Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables};

use crate::addr::HostPhysAddr;
use crate::phys_memory::{LeBytes, PhysMemory, PhysReadError};

/// Most CPUs accepted (enabled or online-capable).
pub const MAX_CPUS: usize = 256;
/// Most I/O APICs accepted.
pub const MAX_IOAPICS: usize = 16;
/// Most interrupt source overrides accepted (there are 16 ISA IRQs).
pub const MAX_OVERRIDES: usize = 32;
/// Most NMI entries accepted, of each kind (sources, local APIC NMIs).
pub const MAX_NMIS: usize = 32;

/// Largest MADT [`Topology::from_acpi_via`] reads (256 x2APIC CPUs need 4 KiB).
pub const MAX_MADT_LEN: usize = 64 * 1024;

/// Size of the MADT's fixed part: SDT header, local APIC address, flags.
const MADT_FIXED_LEN: usize = 44;
/// Flag bit 0 of the MADT: the machine also has dual 8259 PICs.
const MADT_PCAT_COMPAT: u32 = 1;
/// Local APIC flags (types 0 and 9).
const LAPIC_ENABLED: u32 = 1 << 0;
const LAPIC_ONLINE_CAPABLE: u32 = 1 << 1;

/// One logical processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// The ACPI processor UID (matches `_UID` in the namespace).
    pub acpi_uid: u32,
    /// The local APIC ID (x2APIC ID for type 9 entries).
    pub apic_id: u32,
    /// Usable now.
    pub enabled: bool,
    /// Not enabled at boot but may be brought online later.
    pub online_capable: bool,
    /// Listed by a Local x2APIC entry (type 9) rather than a Local APIC one.
    pub x2apic: bool,
}

/// One I/O APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApic {
    /// Its I/O APIC ID.
    pub id: u8,
    /// Its register window.
    pub addr: HostPhysAddr,
    /// The first global system interrupt it serves.
    pub gsi_base: u32,
}

/// Interrupt input polarity (MPS INTI flags bits 0-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polarity {
    /// As the bus specifies (ISA: active high).
    BusDefault,
    /// Active high.
    ActiveHigh,
    /// Active low.
    ActiveLow,
}

/// Interrupt trigger mode (MPS INTI flags bits 2-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerMode {
    /// As the bus specifies (ISA: edge).
    BusDefault,
    /// Edge triggered.
    Edge,
    /// Level triggered.
    Level,
}

/// An ISA IRQ routed to a different GSI or with non-ISA signalling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptOverride {
    /// The ISA IRQ.
    pub isa_irq: u8,
    /// The global system interrupt it arrives on.
    pub gsi: u32,
    /// Its polarity.
    pub polarity: Polarity,
    /// Its trigger mode.
    pub trigger: TriggerMode,
}

/// Where an ISA IRQ arrives, with the bus defaults resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsaRoute {
    /// The global system interrupt.
    pub gsi: u32,
    /// Active low (else active high).
    pub active_low: bool,
    /// Level triggered (else edge).
    pub level: bool,
}

/// A GSI wired to NMI (entry type 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NmiSource {
    /// The global system interrupt.
    pub gsi: u32,
    /// Its polarity.
    pub polarity: Polarity,
    /// Its trigger mode.
    pub trigger: TriggerMode,
}

/// Which processors a local APIC NMI entry applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NmiProcessor {
    /// Every processor (UID 0xFF in type 4, 0xFFFFFFFF in type 10).
    All,
    /// The processor with this ACPI UID.
    Uid(u32),
}

/// A local APIC LINT pin wired to NMI (entry types 4 and 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalNmi {
    /// The processors concerned.
    pub processor: NmiProcessor,
    /// LINT0 or LINT1.
    pub lint: u8,
    /// Its polarity.
    pub polarity: Polarity,
    /// Its trigger mode.
    pub trigger: TriggerMode,
}

/// The machine's processors and interrupt controllers, as the MADT lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Local APIC register base (after any type 5 override).
    pub local_apic_addr: HostPhysAddr,
    /// Enabled and online-capable processors, in table order. Which one is
    /// the BSP is not in the MADT: compare with the running CPU's APIC ID.
    pub cpus: Vec<Cpu>,
    /// Processor entries neither enabled nor online-capable (not in `cpus`).
    pub skipped_cpus: u32,
    /// I/O APICs in table order.
    pub ioapics: Vec<IoApic>,
    /// ISA interrupt source overrides.
    pub overrides: Vec<InterruptOverride>,
    /// GSIs wired to NMI.
    pub nmi_sources: Vec<NmiSource>,
    /// Local APIC NMI pins.
    pub local_nmis: Vec<LocalNmi>,
    /// Dual 8259 PICs are present (and must be masked when using APICs).
    pub pcat_compat: bool,
}

/// Why the MADT gives no usable topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopologyError {
    /// No valid MADT among the ACPI tables.
    NoMadt,
    /// The MADT could not be read through [`PhysMemory`].
    Read(PhysReadError),
    /// The table's signature is not "APIC".
    BadSignature {
        /// The signature found.
        found: [u8; 4],
    },
    /// The table is shorter than its fixed part, or than its header says.
    BadLength {
        /// The length field.
        declared: u32,
        /// Bytes available.
        available: usize,
    },
    /// The table's bytes do not sum to zero.
    BadChecksum {
        /// Their sum.
        sum: u8,
    },
    /// An entry is shorter than its type requires.
    EntryTooShort {
        /// Offset of the entry in the table.
        offset: usize,
        /// Its type.
        entry_type: u8,
        /// Its length field.
        length: u8,
        /// The length its type needs.
        min: u8,
    },
    /// An entry runs past the end of the table.
    EntryOverrun {
        /// Offset of the entry in the table.
        offset: usize,
        /// Its type.
        entry_type: u8,
        /// Its length field.
        length: u8,
        /// The table length.
        table_len: usize,
    },
    /// MPS INTI flags with a reserved polarity or trigger value.
    BadIntiFlags {
        /// Offset of the entry in the table.
        offset: usize,
        /// The flags.
        flags: u16,
    },
    /// A local APIC NMI names a LINT pin other than 0 or 1.
    BadLint {
        /// Offset of the entry in the table.
        offset: usize,
        /// The pin.
        lint: u8,
    },
    /// An interrupt source override is not for the ISA bus (bus 0).
    OverrideNotIsa {
        /// Offset of the entry in the table.
        offset: usize,
        /// The bus.
        bus: u8,
    },
    /// No processor is enabled.
    NoCpus {
        /// Processor entries seen (all disabled or only online-capable).
        listed: u32,
    },
    /// More usable processors than [`MAX_CPUS`].
    TooManyCpus {
        /// The limit.
        max: usize,
    },
    /// More entries of one kind than supported.
    TooMany {
        /// The kind.
        what: &'static str,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoMadt => f.write_str(
                "no valid MADT (\"APIC\" table) among the ACPI tables: it is missing, or failed \
                 its signature or checksum check (the acpi crate logs which)",
            ),
            Self::Read(e) => write!(f, "reading the MADT: {e}"),
            Self::BadSignature { found } => write!(
                f,
                "table signature is {:?}, not the MADT's \"APIC\"",
                core::str::from_utf8(&found).unwrap_or("<not ASCII>")
            ),
            Self::BadLength {
                declared,
                available,
            } => write!(
                f,
                "MADT length {declared:#x} is below {MADT_FIXED_LEN:#x} or beyond the \
                 {available:#x} bytes available"
            ),
            Self::BadChecksum { sum } => write!(
                f,
                "MADT checksum is wrong: its bytes sum to {sum:#04x}, not 0"
            ),
            Self::EntryTooShort {
                offset,
                entry_type,
                length,
                min,
            } => write!(
                f,
                "MADT entry type {entry_type} at offset {offset:#x} has length {length}; its \
                 type needs {min}"
            ),
            Self::EntryOverrun {
                offset,
                entry_type,
                length,
                table_len,
            } => write!(
                f,
                "MADT entry type {entry_type} at offset {offset:#x} with length {length} runs \
                 past the end of the table ({table_len:#x} bytes)"
            ),
            Self::BadIntiFlags { offset, flags } => write!(
                f,
                "MADT entry at offset {offset:#x} has interrupt flags {flags:#06x} with a \
                 reserved polarity or trigger mode"
            ),
            Self::BadLint { offset, lint } => write!(
                f,
                "MADT local APIC NMI entry at offset {offset:#x} names LINT{lint}; only LINT0 \
                 and LINT1 exist"
            ),
            Self::OverrideNotIsa { offset, bus } => write!(
                f,
                "MADT interrupt source override at offset {offset:#x} is for bus {bus}, not ISA \
                 (0)"
            ),
            Self::NoCpus { listed } => write!(
                f,
                "MADT lists no enabled processor ({listed} processor entries, none enabled)"
            ),
            Self::TooManyCpus { max } => {
                write!(f, "MADT lists more than {max} usable processors")
            }
            Self::TooMany { what, max } => write!(f, "MADT lists more than {max} {what}"),
        }
    }
}

impl Topology {
    /// Reads the topology from the MADT among `tables`.
    ///
    /// Every entry's length is checked against its type and the table end
    /// before its fields are used.
    pub fn from_acpi<H: AcpiHandler>(tables: &AcpiTables<H>) -> Result<Self, TopologyError> {
        let madt = tables
            .find_table::<Madt>()
            .map_err(|_| TopologyError::NoMadt)?;
        let table = madt.get();
        let header = table.header;
        let table_len = header.length as usize;
        if table_len < MADT_FIXED_LEN {
            // The acpi crate's entry walk would underflow on this.
            return Err(TopologyError::BadLength {
                declared: header.length,
                available: madt.region_length(),
            });
        }
        let base = madt.virtual_start().as_ptr().addr();
        let mut builder = Builder::new(table.local_apic_address, table.flags);
        for entry in table.entries() {
            let (addr, EntryHeader { entry_type, length }) = entry_header(&entry);
            let offset = addr.wrapping_sub(base);
            check_bounds(offset, entry_type, length, table_len)?;
            builder.add(offset, entry_from_acpi(&entry))?;
        }
        builder.finish()
    }

    /// Like [`Topology::from_acpi`], but after the acpi crate has found and
    /// validated the MADT, reads its bytes through `mem` and parses them
    /// with [`Topology::from_madt_bytes`], never using the acpi crate's entry
    /// walk (which loops forever on a zero-length entry of a reserved type,
    /// and underflows on an entry running past the table).
    pub fn from_acpi_via<H: AcpiHandler>(
        tables: &AcpiTables<H>,
        mem: &impl PhysMemory,
    ) -> Result<Self, TopologyError> {
        let madt = tables
            .find_table::<Madt>()
            .map_err(|_| TopologyError::NoMadt)?;
        let declared = madt.get().header.length;
        let len = declared as usize;
        if len > MAX_MADT_LEN {
            return Err(TopologyError::BadLength {
                declared,
                available: MAX_MADT_LEN,
            });
        }
        let mut bytes = vec![0u8; len];
        let addr = HostPhysAddr(madt.physical_start() as u64);
        mem.read(addr, &mut bytes).map_err(TopologyError::Read)?;
        Self::from_madt_bytes(&bytes)
    }

    /// Reads the topology from a whole MADT held in `bytes` (header
    /// included), after checking its signature, length and checksum.
    pub fn from_madt_bytes(bytes: &[u8]) -> Result<Self, TopologyError> {
        let declared = bytes.u32_at(4).unwrap_or(0);
        let table_len = declared as usize;
        if table_len < MADT_FIXED_LEN || table_len > bytes.len() {
            return Err(TopologyError::BadLength {
                declared,
                available: bytes.len(),
            });
        }
        let table = &bytes[..table_len];
        let mut found = [0u8; 4];
        found.copy_from_slice(&table[..4]);
        if &found != b"APIC" {
            return Err(TopologyError::BadSignature { found });
        }
        let sum = table.iter().fold(0u8, |s, &b| s.wrapping_add(b));
        if sum != 0 {
            return Err(TopologyError::BadChecksum { sum });
        }
        let mut builder =
            Builder::new(table.u32_at(36).unwrap_or(0), table.u32_at(40).unwrap_or(0));
        let mut offset = MADT_FIXED_LEN;
        while offset < table_len {
            let entry_type = table[offset];
            let length = table.u8_at(offset + 1).unwrap_or(0);
            check_bounds(offset, entry_type, length, table_len)?;
            let e = &table[offset..offset + usize::from(length)];
            builder.add(offset, entry_from_bytes(entry_type, e))?;
            offset += usize::from(length);
        }
        builder.finish()
    }

    /// The enabled processors.
    pub fn enabled_cpus(&self) -> impl Iterator<Item = &Cpu> {
        self.cpus.iter().filter(|c| c.enabled)
    }

    /// Where ISA IRQ `irq` arrives: its override if there is one, else the
    /// same-numbered GSI, active high, edge triggered.
    pub fn isa_route(&self, irq: u8) -> IsaRoute {
        match self.overrides.iter().find(|o| o.isa_irq == irq) {
            Some(o) => IsaRoute {
                gsi: o.gsi,
                active_low: o.polarity == Polarity::ActiveLow,
                level: o.trigger == TriggerMode::Level,
            },
            None => IsaRoute {
                gsi: irq.into(),
                active_low: false,
                level: false,
            },
        }
    }
}

/// One MADT entry, as far as this module cares.
#[derive(Clone, Copy, Debug)]
enum Entry {
    LocalApic {
        uid: u32,
        apic_id: u32,
        flags: u32,
        x2apic: bool,
    },
    IoApic {
        id: u8,
        addr: u32,
        gsi_base: u32,
    },
    Override {
        bus: u8,
        irq: u8,
        gsi: u32,
        flags: u16,
    },
    NmiSource {
        flags: u16,
        gsi: u32,
    },
    LocalNmi {
        processor: NmiProcessor,
        flags: u16,
        lint: u8,
    },
    LocalApicAddress(u64),
    /// Another type (SAPIC, GIC, wakeup mailbox, reserved, OEM): ignored.
    Other,
}

/// Smallest valid length of an entry of `entry_type`.
const fn min_len(entry_type: u8) -> u8 {
    match entry_type {
        0 => 8,
        1 => 12,
        2 => 10,
        3 => 8,
        4 => 6,
        5 => 12,
        9 => 16,
        0xa => 12,
        // Every entry has at least its type and length bytes.
        _ => 2,
    }
}

fn check_bounds(
    offset: usize,
    entry_type: u8,
    length: u8,
    table_len: usize,
) -> Result<(), TopologyError> {
    let min = min_len(entry_type);
    if length < min {
        return Err(TopologyError::EntryTooShort {
            offset,
            entry_type,
            length,
            min,
        });
    }
    if offset < MADT_FIXED_LEN || offset > table_len || usize::from(length) > table_len - offset {
        return Err(TopologyError::EntryOverrun {
            offset,
            entry_type,
            length,
            table_len,
        });
    }
    Ok(())
}

/// Decodes one entry whose length `check_bounds` accepted (`e` is exactly
/// the entry's bytes, so the fixed offsets below are in bounds).
fn entry_from_bytes(entry_type: u8, e: &[u8]) -> Entry {
    let b = |o| e.u8_at(o).unwrap_or(0);
    let w = |o| e.u16_at(o).unwrap_or(0);
    let d = |o| e.u32_at(o).unwrap_or(0);
    match entry_type {
        0 => Entry::LocalApic {
            uid: b(2).into(),
            apic_id: b(3).into(),
            flags: d(4),
            x2apic: false,
        },
        1 => Entry::IoApic {
            id: b(2),
            addr: d(4),
            gsi_base: d(8),
        },
        2 => Entry::Override {
            bus: b(2),
            irq: b(3),
            gsi: d(4),
            flags: w(8),
        },
        3 => Entry::NmiSource {
            flags: w(2),
            gsi: d(4),
        },
        4 => Entry::LocalNmi {
            processor: local_nmi_processor(b(2).into(), 0xff),
            flags: w(3),
            lint: b(5),
        },
        5 => Entry::LocalApicAddress(e.u64_at(4).unwrap_or(0)),
        9 => Entry::LocalApic {
            uid: d(12),
            apic_id: d(4),
            flags: d(8),
            x2apic: true,
        },
        0xa => Entry::LocalNmi {
            processor: local_nmi_processor(d(4), u32::MAX),
            flags: w(2),
            lint: b(8),
        },
        _ => Entry::Other,
    }
}

fn entry_from_acpi(entry: &MadtEntry<'_>) -> Entry {
    match entry {
        MadtEntry::LocalApic(e) => Entry::LocalApic {
            uid: e.processor_id.into(),
            apic_id: e.apic_id.into(),
            flags: e.flags,
            x2apic: false,
        },
        MadtEntry::IoApic(e) => Entry::IoApic {
            id: e.io_apic_id,
            addr: e.io_apic_address,
            gsi_base: e.global_system_interrupt_base,
        },
        MadtEntry::InterruptSourceOverride(e) => Entry::Override {
            bus: e.bus,
            irq: e.irq,
            gsi: e.global_system_interrupt,
            flags: e.flags,
        },
        MadtEntry::NmiSource(e) => Entry::NmiSource {
            flags: e.flags,
            gsi: e.global_system_interrupt,
        },
        MadtEntry::LocalApicNmi(e) => Entry::LocalNmi {
            processor: local_nmi_processor(e.processor_id.into(), 0xff),
            flags: e.flags,
            lint: e.nmi_line,
        },
        MadtEntry::LocalApicAddressOverride(e) => Entry::LocalApicAddress(e.local_apic_address),
        MadtEntry::LocalX2Apic(e) => Entry::LocalApic {
            uid: e.processor_uid,
            apic_id: e.x2apic_id,
            flags: e.flags,
            x2apic: true,
        },
        MadtEntry::X2ApicNmi(e) => Entry::LocalNmi {
            processor: local_nmi_processor(e.processor_uid, u32::MAX),
            flags: e.flags,
            lint: e.nmi_line,
        },
        _ => Entry::Other,
    }
}

/// Address and header of an entry the acpi crate handed out.
fn entry_header(entry: &MadtEntry<'_>) -> (usize, EntryHeader) {
    fn at<T>(r: &T, header: EntryHeader) -> (usize, EntryHeader) {
        (core::ptr::from_ref(r).addr(), header)
    }
    match entry {
        MadtEntry::LocalApic(e) => at(*e, e.header),
        MadtEntry::IoApic(e) => at(*e, e.header),
        MadtEntry::InterruptSourceOverride(e) => at(*e, e.header),
        MadtEntry::NmiSource(e) => at(*e, e.header),
        MadtEntry::LocalApicNmi(e) => at(*e, e.header),
        MadtEntry::LocalApicAddressOverride(e) => at(*e, e.header),
        MadtEntry::IoSapic(e) => at(*e, e.header),
        MadtEntry::LocalSapic(e) => at(*e, e.header),
        MadtEntry::PlatformInterruptSource(e) => at(*e, e.header),
        MadtEntry::LocalX2Apic(e) => at(*e, e.header),
        MadtEntry::X2ApicNmi(e) => at(*e, e.header),
        MadtEntry::Gicc(e) => at(*e, e.header),
        MadtEntry::Gicd(e) => at(*e, e.header),
        MadtEntry::GicMsiFrame(e) => at(*e, e.header),
        MadtEntry::GicRedistributor(e) => at(*e, e.header),
        MadtEntry::GicInterruptTranslationService(e) => at(*e, e.header),
        MadtEntry::MultiprocessorWakeup(e) => at(*e, e.header),
    }
}

fn local_nmi_processor(uid: u32, all: u32) -> NmiProcessor {
    if uid == all {
        NmiProcessor::All
    } else {
        NmiProcessor::Uid(uid)
    }
}

fn inti_flags(offset: usize, flags: u16) -> Result<(Polarity, TriggerMode), TopologyError> {
    let bad = TopologyError::BadIntiFlags { offset, flags };
    let polarity = match flags & 0b11 {
        0b00 => Polarity::BusDefault,
        0b01 => Polarity::ActiveHigh,
        0b11 => Polarity::ActiveLow,
        _ => return Err(bad),
    };
    let trigger = match (flags >> 2) & 0b11 {
        0b00 => TriggerMode::BusDefault,
        0b01 => TriggerMode::Edge,
        0b11 => TriggerMode::Level,
        _ => return Err(bad),
    };
    Ok((polarity, trigger))
}

/// Accumulates entries into a [`Topology`].
struct Builder {
    topo: Topology,
    listed_cpus: u32,
}

impl Builder {
    fn new(local_apic_addr: u32, flags: u32) -> Self {
        Self {
            topo: Topology {
                local_apic_addr: HostPhysAddr(local_apic_addr.into()),
                cpus: Vec::new(),
                skipped_cpus: 0,
                ioapics: Vec::new(),
                overrides: Vec::new(),
                nmi_sources: Vec::new(),
                local_nmis: Vec::new(),
                pcat_compat: flags & MADT_PCAT_COMPAT != 0,
            },
            listed_cpus: 0,
        }
    }

    fn add(&mut self, offset: usize, entry: Entry) -> Result<(), TopologyError> {
        let t = &mut self.topo;
        match entry {
            Entry::LocalApic {
                uid,
                apic_id,
                flags,
                x2apic,
            } => {
                self.listed_cpus += 1;
                let enabled = flags & LAPIC_ENABLED != 0;
                let online_capable = flags & LAPIC_ONLINE_CAPABLE != 0;
                if !enabled && !online_capable {
                    t.skipped_cpus += 1;
                    return Ok(());
                }
                if t.cpus.iter().any(|c| c.apic_id == apic_id) {
                    log::warn!(
                        "MADT entry at offset {offset:#x} repeats APIC ID {apic_id:#x}; ignored"
                    );
                    return Ok(());
                }
                if t.cpus.len() == MAX_CPUS {
                    return Err(TopologyError::TooManyCpus { max: MAX_CPUS });
                }
                t.cpus.push(Cpu {
                    acpi_uid: uid,
                    apic_id,
                    enabled,
                    online_capable,
                    x2apic,
                });
            }
            Entry::IoApic { id, addr, gsi_base } => {
                push(
                    &mut t.ioapics,
                    "I/O APICs",
                    MAX_IOAPICS,
                    IoApic {
                        id,
                        addr: HostPhysAddr(addr.into()),
                        gsi_base,
                    },
                )?;
            }
            Entry::Override {
                bus,
                irq,
                gsi,
                flags,
            } => {
                if bus != 0 {
                    return Err(TopologyError::OverrideNotIsa { offset, bus });
                }
                let (polarity, trigger) = inti_flags(offset, flags)?;
                push(
                    &mut t.overrides,
                    "interrupt source overrides",
                    MAX_OVERRIDES,
                    InterruptOverride {
                        isa_irq: irq,
                        gsi,
                        polarity,
                        trigger,
                    },
                )?;
            }
            Entry::NmiSource { flags, gsi } => {
                let (polarity, trigger) = inti_flags(offset, flags)?;
                push(
                    &mut t.nmi_sources,
                    "NMI sources",
                    MAX_NMIS,
                    NmiSource {
                        gsi,
                        polarity,
                        trigger,
                    },
                )?;
            }
            Entry::LocalNmi {
                processor,
                flags,
                lint,
            } => {
                if lint > 1 {
                    return Err(TopologyError::BadLint { offset, lint });
                }
                let (polarity, trigger) = inti_flags(offset, flags)?;
                push(
                    &mut t.local_nmis,
                    "local APIC NMI entries",
                    MAX_NMIS,
                    LocalNmi {
                        processor,
                        lint,
                        polarity,
                        trigger,
                    },
                )?;
            }
            Entry::LocalApicAddress(addr) => t.local_apic_addr = HostPhysAddr(addr),
            Entry::Other => {}
        }
        Ok(())
    }

    fn finish(self) -> Result<Topology, TopologyError> {
        if self.topo.enabled_cpus().next().is_none() {
            return Err(TopologyError::NoCpus {
                listed: self.listed_cpus,
            });
        }
        Ok(self.topo)
    }
}

fn push<T>(
    list: &mut Vec<T>,
    what: &'static str,
    max: usize,
    item: T,
) -> Result<(), TopologyError> {
    if list.len() == max {
        return Err(TopologyError::TooMany { what, max });
    }
    list.push(item);
    Ok(())
}

#[cfg(test)]
mod tests;
