//! Tests for the MADT interpretation, on ACPI tables laid out byte by byte as
//! the ACPI specification (6.5, sections 5.2.5 to 5.2.12) describes them.

// The acpi crate reads tables through raw physical addresses; these tests
// hand it the addresses of buffers they own.
#![allow(unsafe_code)]

extern crate std;

use std::string::ToString;
use std::vec;
use std::vec::Vec;

use acpi::AcpiTables;
use arch_x86::acpi_handler::IdentityMapped;

use super::*;
use crate::phys_memory::SliceMemory;

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b)))
}

/// A system description table: the 36-byte header, then `body`.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(signature);
    t.extend_from_slice(&(36 + body.len() as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, below
    t.extend_from_slice(b"QRCUS ");
    t.extend_from_slice(b"QUERCUS ");
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(b"QRCS"); // creator ID
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

fn madt(local_apic_addr: u32, flags: u32, entries: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&local_apic_addr.to_le_bytes());
    body.extend_from_slice(&flags.to_le_bytes());
    for e in entries {
        body.extend_from_slice(e);
    }
    sdt(b"APIC", 5, &body)
}

fn lapic(uid: u8, apic_id: u8, flags: u32) -> Vec<u8> {
    let mut e = vec![0, 8, uid, apic_id];
    e.extend_from_slice(&flags.to_le_bytes());
    e
}

fn ioapic(id: u8, addr: u32, gsi_base: u32) -> Vec<u8> {
    let mut e = vec![1, 12, id, 0];
    e.extend_from_slice(&addr.to_le_bytes());
    e.extend_from_slice(&gsi_base.to_le_bytes());
    e
}

fn iso(bus: u8, irq: u8, gsi: u32, flags: u16) -> Vec<u8> {
    let mut e = vec![2, 10, bus, irq];
    e.extend_from_slice(&gsi.to_le_bytes());
    e.extend_from_slice(&flags.to_le_bytes());
    e
}

fn nmi_source(flags: u16, gsi: u32) -> Vec<u8> {
    let mut e = vec![3, 8];
    e.extend_from_slice(&flags.to_le_bytes());
    e.extend_from_slice(&gsi.to_le_bytes());
    e
}

fn lapic_nmi(uid: u8, flags: u16, lint: u8) -> Vec<u8> {
    let mut e = vec![4, 6, uid];
    e.extend_from_slice(&flags.to_le_bytes());
    e.push(lint);
    e
}

fn lapic_addr_override(addr: u64) -> Vec<u8> {
    let mut e = vec![5, 12, 0, 0];
    e.extend_from_slice(&addr.to_le_bytes());
    e
}

fn x2apic(x2apic_id: u32, flags: u32, uid: u32) -> Vec<u8> {
    let mut e = vec![9, 16, 0, 0];
    e.extend_from_slice(&x2apic_id.to_le_bytes());
    e.extend_from_slice(&flags.to_le_bytes());
    e.extend_from_slice(&uid.to_le_bytes());
    e
}

fn x2apic_nmi(flags: u16, uid: u32, lint: u8) -> Vec<u8> {
    let mut e = vec![0xa, 12];
    e.extend_from_slice(&flags.to_le_bytes());
    e.extend_from_slice(&uid.to_le_bytes());
    e.extend_from_slice(&[lint, 0, 0, 0]);
    e
}

const XSDT_OFFSET: usize = 64;
const FIRST_TABLE_OFFSET: usize = 256;

/// Physical memory holding a revision 2 RSDP at offset 0, an XSDT at 64
/// listing `tables`, and the tables from 256 on. The tables' addresses are
/// this buffer's addresses, so the buffer must outlive every use of them.
fn acpi_image(tables: &[Vec<u8>]) -> Vec<u8> {
    let mut buf = vec![0u8; 8192];
    let base = buf.as_ptr() as u64;

    let mut pointers = Vec::new();
    let mut offset = FIRST_TABLE_OFFSET;
    for t in tables {
        buf[offset..offset + t.len()].copy_from_slice(t);
        pointers.extend_from_slice(&(base + offset as u64).to_le_bytes());
        offset = (offset + t.len() + 15) & !15;
    }
    let xsdt = sdt(b"XSDT", 1, &pointers);
    assert!(XSDT_OFFSET + xsdt.len() <= FIRST_TABLE_OFFSET);
    buf[XSDT_OFFSET..XSDT_OFFSET + xsdt.len()].copy_from_slice(&xsdt);

    let mut rsdp = Vec::new();
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0); // checksum of the first 20 bytes, below
    rsdp.extend_from_slice(b"QRCUS ");
    rsdp.push(2); // revision: ACPI 2.0+
    rsdp.extend_from_slice(&0u32.to_le_bytes()); // no RSDT
    rsdp.extend_from_slice(&36u32.to_le_bytes());
    rsdp.extend_from_slice(&(base + XSDT_OFFSET as u64).to_le_bytes());
    rsdp.extend_from_slice(&[0, 0, 0, 0]); // extended checksum, reserved
    rsdp[8] = checksum(&rsdp[..20]);
    rsdp[32] = checksum(&rsdp);
    buf[..36].copy_from_slice(&rsdp);
    buf
}

fn tables(image: &[u8]) -> AcpiTables<IdentityMapped> {
    // SAFETY: `image` was built by `acpi_image`: it holds a valid RSDP at
    // its start and every table the RSDP leads to, at the addresses recorded
    // in it; the caller keeps `image` alive and unmoved while the returned
    // tables are used, and `IdentityMapped` reads those addresses directly.
    unsafe { AcpiTables::from_rsdp(IdentityMapped, image.as_ptr() as usize) }
        .expect("test RSDP is valid")
}

/// The image as physical memory at its own address.
fn image_memory(image: &[u8]) -> SliceMemory<'_> {
    SliceMemory::new(HostPhysAddr(image.as_ptr() as u64), image)
}

fn topology_of(madt_bytes: &[u8]) -> Result<Topology, TopologyError> {
    let image = acpi_image(&[madt_bytes.to_vec()]);
    let tables = tables(&image);
    let from_acpi = Topology::from_acpi(&tables);
    // The byte-level paths must agree on every table.
    assert_eq!(from_acpi, Topology::from_madt_bytes(madt_bytes));
    assert_eq!(
        from_acpi,
        Topology::from_acpi_via(&tables, &image_memory(&image))
    );
    from_acpi
}

/// The table the spec-layout test walks: four LAPICs (one disabled), an
/// I/O APIC, two overrides, a LAPIC NMI and an x2APIC.
fn spec_madt() -> Vec<u8> {
    madt(
        0xfee0_0000,
        MADT_PCAT_COMPAT,
        &[
            lapic(0, 0, 1),
            lapic(1, 2, 1),
            lapic(2, 4, 0),
            lapic(3, 6, 1),
            ioapic(8, 0xfec0_0000, 0),
            iso(0, 0, 2, 0),
            iso(0, 9, 9, 0b1101),
            lapic_nmi(0xff, 0, 1),
            x2apic(0x100, 1, 0x100),
        ],
    )
}

#[test]
fn spec_layout_tables() {
    let t = topology_of(&spec_madt()).unwrap();
    assert_eq!(t.local_apic_addr, HostPhysAddr(0xfee0_0000));
    assert!(t.pcat_compat);
    let cpu = |acpi_uid, apic_id, x2apic| Cpu {
        acpi_uid,
        apic_id,
        enabled: true,
        online_capable: false,
        x2apic,
    };
    assert_eq!(
        t.cpus,
        vec![
            cpu(0, 0, false),
            cpu(1, 2, false),
            cpu(3, 6, false),
            cpu(0x100, 0x100, true)
        ]
    );
    assert_eq!(t.skipped_cpus, 1);
    assert_eq!(t.enabled_cpus().count(), 4);
    assert_eq!(
        t.ioapics,
        vec![IoApic {
            id: 8,
            addr: HostPhysAddr(0xfec0_0000),
            gsi_base: 0
        }]
    );
    assert_eq!(
        t.overrides,
        vec![
            InterruptOverride {
                isa_irq: 0,
                gsi: 2,
                polarity: Polarity::BusDefault,
                trigger: TriggerMode::BusDefault
            },
            InterruptOverride {
                isa_irq: 9,
                gsi: 9,
                polarity: Polarity::ActiveHigh,
                trigger: TriggerMode::Level
            },
        ]
    );
    assert_eq!(
        t.local_nmis,
        vec![LocalNmi {
            processor: NmiProcessor::All,
            lint: 1,
            polarity: Polarity::BusDefault,
            trigger: TriggerMode::BusDefault
        }]
    );
    assert!(t.nmi_sources.is_empty());
    assert_eq!(
        t.isa_route(0),
        IsaRoute {
            gsi: 2,
            active_low: false,
            level: false
        }
    );
    assert!(t.isa_route(9).level);
    assert_eq!(t.isa_route(4).gsi, 4);
}

/// The MADT QEMU 7.2 builds for `-machine q35 -smp 2`, byte for byte
/// (hw/i386/acpi-common.c): OEM "BOCHS "/"BXPC    ", revision 1.
const QEMU_Q35_2CPU_MADT: [u8; 0x80] = [
    // Header: "APIC", length 0x80, revision 1, checksum 0x77, OEM IDs,
    // OEM revision 1, creator "BXPC" revision 1.
    0x41, 0x50, 0x49, 0x43, 0x80, 0x00, 0x00, 0x00, 0x01, 0x77, 0x42, 0x4f, //
    0x43, 0x48, 0x53, 0x20, 0x42, 0x58, 0x50, 0x43, 0x20, 0x20, 0x20, 0x20, //
    0x01, 0x00, 0x00, 0x00, 0x42, 0x58, 0x50, 0x43, 0x01, 0x00, 0x00, 0x00, //
    // Local APIC address 0xfee00000, flags PCAT_COMPAT.
    0x00, 0x00, 0xe0, 0xfe, 0x01, 0x00, 0x00, 0x00, //
    // Processor local APIC: UID 0, APIC 0, enabled; UID 1, APIC 1, enabled.
    0x00, 0x08, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, //
    0x00, 0x08, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, //
    // I/O APIC: ID 0 at 0xfec00000, GSI base 0.
    0x01, 0x0c, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xfe, 0x00, 0x00, 0x00, 0x00, //
    // Interrupt source overrides: IRQ0 -> GSI2 conforming; IRQ 5, 9, 10, 11
    // -> same GSI, active high, level.
    0x02, 0x0a, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, //
    0x02, 0x0a, 0x00, 0x05, 0x05, 0x00, 0x00, 0x00, 0x0d, 0x00, //
    0x02, 0x0a, 0x00, 0x09, 0x09, 0x00, 0x00, 0x00, 0x0d, 0x00, //
    0x02, 0x0a, 0x00, 0x0a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x00, //
    0x02, 0x0a, 0x00, 0x0b, 0x0b, 0x00, 0x00, 0x00, 0x0d, 0x00, //
    // Local APIC NMI: all processors, conforming, LINT1.
    0x04, 0x06, 0xff, 0x00, 0x00, 0x01,
];

#[test]
fn qemu_q35_two_cpus() {
    let t = topology_of(&QEMU_Q35_2CPU_MADT).unwrap();
    assert_eq!(t.local_apic_addr, HostPhysAddr(0xfee0_0000));
    assert!(t.pcat_compat);
    assert_eq!(
        t.cpus
            .iter()
            .map(|c| (c.acpi_uid, c.apic_id, c.enabled))
            .collect::<Vec<_>>(),
        vec![(0, 0, true), (1, 1, true)]
    );
    assert_eq!(t.skipped_cpus, 0);
    assert_eq!(
        t.ioapics,
        vec![IoApic {
            id: 0,
            addr: HostPhysAddr(0xfec0_0000),
            gsi_base: 0
        }]
    );
    assert_eq!(t.overrides.len(), 5);
    assert_eq!(t.overrides[0].gsi, 2);
    for (o, irq) in t.overrides[1..].iter().zip([5, 9, 10, 11]) {
        assert_eq!(
            *o,
            InterruptOverride {
                isa_irq: irq,
                gsi: irq.into(),
                polarity: Polarity::ActiveHigh,
                trigger: TriggerMode::Level
            }
        );
    }
    assert_eq!(t.local_nmis.len(), 1);
    assert_eq!(t.local_nmis[0].processor, NmiProcessor::All);
    assert_eq!(t.local_nmis[0].lint, 1);
    assert_eq!(
        t.isa_route(0),
        IsaRoute {
            gsi: 2,
            active_low: false,
            level: false
        }
    );
}

#[test]
fn address_override_nmi_sources_and_x2apic_nmi() {
    let bytes = madt(
        0xfee0_0000,
        0,
        &[
            lapic(0, 0, 1),
            lapic(1, 1, 0b10), // online-capable only
            lapic_addr_override(0x1_fee0_0000),
            nmi_source(0b1111, 23),
            x2apic_nmi(0b0111, 0xffff_ffff, 0),
            x2apic_nmi(0, 7, 1),
            // A GIC distributor (type 12, 24 bytes): not x86, ignored.
            {
                let mut e = vec![0u8; 24];
                e[0] = 12;
                e[1] = 24;
                e
            },
            // A reserved type with a plausible length: ignored.
            vec![0x42, 4, 0, 0],
        ],
    );
    let t = topology_of(&bytes).unwrap();
    assert_eq!(t.local_apic_addr, HostPhysAddr(0x1_fee0_0000));
    assert!(!t.pcat_compat);
    assert_eq!(t.cpus.len(), 2);
    assert!(!t.cpus[1].enabled && t.cpus[1].online_capable);
    assert_eq!(t.enabled_cpus().count(), 1);
    assert_eq!(
        t.nmi_sources,
        vec![NmiSource {
            gsi: 23,
            polarity: Polarity::ActiveLow,
            trigger: TriggerMode::Level
        }]
    );
    assert_eq!(
        t.local_nmis,
        vec![
            LocalNmi {
                processor: NmiProcessor::All,
                lint: 0,
                polarity: Polarity::ActiveLow,
                trigger: TriggerMode::Edge
            },
            LocalNmi {
                processor: NmiProcessor::Uid(7),
                lint: 1,
                polarity: Polarity::BusDefault,
                trigger: TriggerMode::BusDefault
            },
        ]
    );
}

#[test]
fn missing_madt() {
    let facp_like = sdt(b"HPET", 1, &[0u8; 20]);
    let image = acpi_image(&[facp_like]);
    let err = Topology::from_acpi(&tables(&image)).unwrap_err();
    assert_eq!(err, TopologyError::NoMadt);
    assert!(err.to_string().starts_with("no valid MADT"));
    let empty = acpi_image(&[]);
    assert_eq!(
        Topology::from_acpi(&tables(&empty)),
        Err(TopologyError::NoMadt)
    );
}

#[test]
fn madt_with_bad_checksum() {
    let mut bytes = spec_madt();
    bytes[9] = bytes[9].wrapping_add(3);
    // The acpi crate refuses the table (and logs why), so it is not found.
    let image = acpi_image(core::slice::from_ref(&bytes));
    assert_eq!(
        Topology::from_acpi(&tables(&image)),
        Err(TopologyError::NoMadt)
    );
    // The byte-level parser names the checksum.
    let err = Topology::from_madt_bytes(&bytes).unwrap_err();
    assert_eq!(err, TopologyError::BadChecksum { sum: 3 });
    assert_eq!(
        err.to_string(),
        "MADT checksum is wrong: its bytes sum to 0x03, not 0"
    );
}

#[test]
fn no_enabled_cpu() {
    let bytes = madt(
        0xfee0_0000,
        0,
        &[lapic(0, 0, 0), lapic(1, 1, 0b10), ioapic(0, 0xfec0_0000, 0)],
    );
    let err = topology_of(&bytes).unwrap_err();
    assert_eq!(err, TopologyError::NoCpus { listed: 2 });
    assert_eq!(
        err.to_string(),
        "MADT lists no enabled processor (2 processor entries, none enabled)"
    );
}

#[test]
fn too_many_cpus() {
    let entries: Vec<Vec<u8>> = (0..=MAX_CPUS as u32).map(|i| x2apic(i, 1, i)).collect();
    let err = topology_of(&madt(0xfee0_0000, 0, &entries)).unwrap_err();
    assert_eq!(err, TopologyError::TooManyCpus { max: MAX_CPUS });
    assert_eq!(
        err.to_string(),
        "MADT lists more than 256 usable processors"
    );
    // Disabled entries do not count against the limit.
    let mut entries: Vec<Vec<u8>> = (0..MAX_CPUS as u32).map(|i| x2apic(i, 1, i)).collect();
    entries.extend((0..10).map(|i| x2apic(1000 + i, 0, 1000 + i)));
    let t = topology_of(&madt(0xfee0_0000, 0, &entries)).unwrap();
    assert_eq!(t.cpus.len(), MAX_CPUS);
    assert_eq!(t.skipped_cpus, 10);
}

#[test]
fn duplicate_apic_id_is_ignored() {
    // Some firmware lists a CPU in both a LAPIC and an x2APIC entry.
    let bytes = madt(0xfee0_0000, 0, &[lapic(0, 0, 1), x2apic(0, 1, 0)]);
    let t = topology_of(&bytes).unwrap();
    assert_eq!(t.cpus.len(), 1);
    assert!(!t.cpus[0].x2apic);
}

#[test]
fn too_many_ioapics() {
    let mut entries = vec![lapic(0, 0, 1)];
    entries.extend(
        (0..=MAX_IOAPICS as u32).map(|i| ioapic(i as u8, 0xfec0_0000 + i * 0x1000, i * 24)),
    );
    let err = topology_of(&madt(0xfee0_0000, 0, &entries)).unwrap_err();
    assert_eq!(
        err,
        TopologyError::TooMany {
            what: "I/O APICs",
            max: MAX_IOAPICS
        }
    );
    assert_eq!(err.to_string(), "MADT lists more than 16 I/O APICs");
}

#[test]
fn bad_entries() {
    let with = |e: Vec<u8>| madt(0xfee0_0000, 0, &[lapic(0, 0, 1), e]);
    // 8 + 44 = offset of the second entry.
    assert_eq!(
        topology_of(&with(iso(0, 0, 2, 0b10))),
        Err(TopologyError::BadIntiFlags {
            offset: 52,
            flags: 0b10
        })
    );
    assert_eq!(
        topology_of(&with(iso(0, 0, 2, 0b1000))),
        Err(TopologyError::BadIntiFlags {
            offset: 52,
            flags: 0b1000
        })
    );
    assert_eq!(
        topology_of(&with(iso(1, 0, 2, 0))),
        Err(TopologyError::OverrideNotIsa { offset: 52, bus: 1 })
    );
    let err = topology_of(&with(lapic_nmi(0xff, 0, 2))).unwrap_err();
    assert_eq!(
        err,
        TopologyError::BadLint {
            offset: 52,
            lint: 2
        }
    );
    assert_eq!(
        err.to_string(),
        "MADT local APIC NMI entry at offset 0x34 names LINT2; only LINT0 and LINT1 exist"
    );
    // An x2APIC entry claiming 8 bytes.
    let mut short = x2apic(1, 1, 1);
    short[1] = 8;
    short.truncate(8);
    assert_eq!(
        topology_of(&with(short)),
        Err(TopologyError::EntryTooShort {
            offset: 52,
            entry_type: 9,
            length: 8,
            min: 16
        })
    );
}

#[test]
fn zero_length_entry_stops_the_walk() {
    // A known type with length 0 would make the acpi crate yield the same
    // entry forever; the length check ends the walk at once.
    let mut bytes = madt(0xfee0_0000, 0, &[lapic(0, 0, 1), vec![1, 0, 0, 0]]);
    let n = bytes.len();
    bytes[9] = 0;
    bytes[9] = checksum(&bytes[..n]);
    let err = topology_of(&bytes).unwrap_err();
    assert_eq!(
        err,
        TopologyError::EntryTooShort {
            offset: 52,
            entry_type: 1,
            length: 0,
            min: 12
        }
    );
}

#[test]
fn byte_parser_rejects_malformed_tables() {
    // Entry running past the table end (the acpi crate's own walk would
    // underflow on this one, so `from_acpi` is not tried).
    let mut bytes = madt(0xfee0_0000, 0, &[lapic(0, 0, 1), vec![9, 16, 0, 0]]);
    bytes[9] = 0;
    bytes[9] = checksum(&bytes);
    let image = acpi_image(core::slice::from_ref(&bytes));
    let via = Topology::from_acpi_via(&tables(&image), &image_memory(&image));
    let err = Topology::from_madt_bytes(&bytes).unwrap_err();
    assert_eq!(via, Err(err));
    assert_eq!(
        err,
        TopologyError::EntryOverrun {
            offset: 52,
            entry_type: 9,
            length: 16,
            table_len: 56
        }
    );
    assert_eq!(
        err.to_string(),
        "MADT entry type 9 at offset 0x34 with length 16 runs past the end of the table (0x38 \
         bytes)"
    );

    let good = spec_madt();
    assert!(matches!(
        Topology::from_madt_bytes(&good[..good.len() - 1]),
        Err(TopologyError::BadLength { .. })
    ));
    assert!(matches!(
        Topology::from_madt_bytes(&good[..20]),
        Err(TopologyError::BadLength { .. })
    ));
    let hpet = sdt(b"HPET", 1, &[0u8; 20]);
    let err = Topology::from_madt_bytes(&hpet).unwrap_err();
    assert_eq!(err, TopologyError::BadSignature { found: *b"HPET" });
    assert_eq!(
        err.to_string(),
        "table signature is \"HPET\", not the MADT's \"APIC\""
    );
}

#[test]
fn madt_shorter_than_its_fixed_part() {
    // A 40-byte "MADT" with a valid checksum: the acpi crate accepts the
    // header, and the length check must stop the entry walk's underflow.
    let bytes = sdt(b"APIC", 1, &[0, 0, 0xe0, 0xfe]);
    let image = acpi_image(core::slice::from_ref(&bytes));
    assert!(matches!(
        Topology::from_acpi(&tables(&image)),
        Err(TopologyError::BadLength { declared: 40, .. })
    ));
    assert!(matches!(
        Topology::from_madt_bytes(&bytes),
        Err(TopologyError::BadLength { declared: 40, .. })
    ));
}

#[test]
fn reserved_zero_length_entry_via_memory() {
    // A reserved type with length 0 hangs the acpi crate's walk; the
    // byte-level paths report it.
    let bytes = madt(0xfee0_0000, 0, &[lapic(0, 0, 1), vec![0x42, 0, 0, 0]]);
    let image = acpi_image(core::slice::from_ref(&bytes));
    let err = Topology::from_acpi_via(&tables(&image), &image_memory(&image)).unwrap_err();
    assert_eq!(
        err,
        TopologyError::EntryTooShort {
            offset: 52,
            entry_type: 0x42,
            length: 0,
            min: 2
        }
    );
    assert_eq!(Topology::from_madt_bytes(&bytes), Err(err));
}

#[test]
fn via_memory_read_failure() {
    let image = acpi_image(&[spec_madt()]);
    // Memory that holds only the RSDP and XSDT, not the MADT.
    let short = SliceMemory::new(HostPhysAddr(image.as_ptr() as u64), &image[..128]);
    let err = Topology::from_acpi_via(&tables(&image), &short).unwrap_err();
    assert!(matches!(err, TopologyError::Read(_)));
    assert!(err
        .to_string()
        .starts_with("reading the MADT: cannot read 0x"));
}
