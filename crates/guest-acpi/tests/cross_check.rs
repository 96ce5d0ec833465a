//! The tables read back by independent parsers: the platform crate's MADT
//! parser (what Quercus itself uses on real firmware), and the `acpi` crate
//! through the identity-mapped handler the hypervisor uses, with the tables
//! at their real guest-physical address (0xE0000, mapped at the same
//! address in this test process).

// The acpi crate reads tables through raw addresses, and the mapping is
// made with mmap: both need unsafe, confined to this test.
#![allow(unsafe_code)]

use acpi::address::AddressSpace;
use acpi::fadt::Fadt;
use acpi::madt::Madt;
use acpi::mcfg::Mcfg;
use acpi::sdt::Signature;
use arch_x86::acpi_handler::IdentityMapped;
use guest_acpi::{
    build, AcpiConfig, AcpiTables, ACPI_TABLES_GPA, ACPI_TABLES_MAX_LEN, DEFAULT_PCI_HOST,
};
use platform::{
    Cpu, HostPhysAddr, InterruptOverride, IoApic, LocalNmi, NmiProcessor, Polarity, Topology,
    TriggerMode,
};

/// A private anonymous mapping of `len` bytes at a fixed address in this
/// process, unmapped on drop.
struct FixedMapping {
    addr: usize,
    len: usize,
}

impl FixedMapping {
    /// Maps `len` bytes at exactly `addr`, or `None` if the address is taken
    /// or below the system's lowest mappable address.
    fn at(addr: usize, len: usize) -> Option<Self> {
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; the
        // new anonymous mapping is owned by the returned value alone.
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        (p as usize == addr).then_some(FixedMapping { addr, len })
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` readable and writable bytes at `addr`,
        // alive and unaliased while `self` is borrowed mutably.
        unsafe { core::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) }
    }
}

impl Drop for FixedMapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `at` created, which nothing
        // else refers to once `self` is dropped.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

/// Places `tables` at their base address in this process.
fn place(tables: &AcpiTables) -> FixedMapping {
    let len = tables.reserved_len() as usize;
    let mut m = FixedMapping::at(tables.base_gpa as usize, len)
        .expect("the tables' guest-physical range is free in the test process");
    m.bytes()[..tables.bytes.len()].copy_from_slice(&tables.bytes);
    m
}

fn parsed(tables: &AcpiTables) -> acpi::AcpiTables<IdentityMapped> {
    // SAFETY: the caller placed `tables` at `base_gpa` with `place` and
    // keeps that mapping alive while the result is used; the RSDP is at
    // `rsdp_gpa` and every pointer in the tables is an address inside the
    // mapping, which `IdentityMapped` dereferences directly.
    unsafe { acpi::AcpiTables::from_rsdp(IdentityMapped, tables.rsdp_gpa as usize) }
        .expect("the acpi crate accepts the RSDP and XSDT")
}

fn madt_bytes(t: &AcpiTables) -> &[u8] {
    let off = (t.madt_gpa - t.base_gpa) as usize;
    let len = u32::from_le_bytes(t.bytes[off + 4..off + 8].try_into().unwrap()) as usize;
    &t.bytes[off..off + len]
}

fn expected_topology(cfg: &AcpiConfig) -> Topology {
    let cpus = (0..u32::from(cfg.vcpus))
        .map(|i| Cpu {
            acpi_uid: i,
            apic_id: i,
            enabled: true,
            online_capable: false,
            x2apic: false,
        })
        .collect();
    let (ioapics, overrides) = if cfg.ioapic {
        (
            vec![IoApic {
                id: cfg.vcpus,
                addr: HostPhysAddr(0xFEC0_0000),
                gsi_base: 0,
            }],
            vec![
                InterruptOverride {
                    isa_irq: 0,
                    gsi: 2,
                    polarity: Polarity::BusDefault,
                    trigger: TriggerMode::BusDefault,
                },
                InterruptOverride {
                    isa_irq: cfg.sci_irq,
                    gsi: cfg.sci_irq.into(),
                    polarity: Polarity::ActiveHigh,
                    trigger: TriggerMode::Level,
                },
            ],
        )
    } else {
        (vec![], vec![])
    };
    Topology {
        local_apic_addr: HostPhysAddr(0xFEE0_0000),
        cpus,
        skipped_cpus: 0,
        ioapics,
        overrides,
        nmi_sources: vec![],
        local_nmis: vec![LocalNmi {
            processor: NmiProcessor::All,
            lint: 1,
            polarity: Polarity::BusDefault,
            trigger: TriggerMode::BusDefault,
        }],
        pcat_compat: true,
    }
}

#[test]
fn platform_parser_reads_the_madt_back() {
    for vcpus in [1, 2, 8, 254] {
        for ioapic in [true, false] {
            let mut cfg = AcpiConfig::new(vcpus);
            cfg.ioapic = ioapic;
            let t = build(&cfg, 0x10_0000).unwrap();
            let topo = Topology::from_madt_bytes(madt_bytes(&t)).unwrap();
            assert_eq!(
                topo,
                expected_topology(&cfg),
                "{vcpus} vCPUs, ioapic {ioapic}"
            );
            if ioapic {
                let sci = topo.isa_route(9);
                assert_eq!((sci.gsi, sci.level, sci.active_low), (9, true, false));
                assert_eq!(topo.isa_route(0).gsi, 2);
                assert_eq!(topo.isa_route(4).gsi, 4);
            }
        }
    }
}

/// All the acpi-crate checks, on tables at their real address. One test
/// function: the mapping at 0xE0000 can exist once at a time.
#[test]
fn acpi_crate_reads_the_tables_at_0xe0000() {
    for vcpus in [1u8, 2, 8] {
        let mut cfg = AcpiConfig::new(vcpus);
        cfg.pm_tmr = Some(0x608);
        let mut pci = DEFAULT_PCI_HOST;
        pci.bus_end = vcpus; // 1, 2 or 8 buses
        cfg.pci = (vcpus != 1).then_some(pci);
        let t = build(&cfg, ACPI_TABLES_GPA).unwrap();
        assert!(t.bytes.len() as u64 <= ACPI_TABLES_MAX_LEN);
        let _mapping = place(&t);
        let tables = parsed(&t);
        assert_eq!(tables.revision(), 2);

        // The root table lists the FADT, the MADT and, with PCI, the MCFG,
        // all valid.
        let sigs: Vec<Signature> = tables.headers().map(|h| h.signature).collect();
        if cfg.pci.is_some() {
            assert_eq!(sigs, [Signature::FADT, Signature::MADT, Signature::MCFG]);
        } else {
            assert_eq!(sigs, [Signature::FADT, Signature::MADT]);
            assert!(tables.find_table::<Mcfg>().is_err());
        }
        if let Some(pci) = cfg.pci {
            let mcfg = tables.find_table::<Mcfg>().expect("valid MCFG");
            assert_eq!(Some(mcfg.physical_start() as u64), t.mcfg_gpa);
            let entries = mcfg.entries();
            assert_eq!(entries.len(), 1);
            let e = entries[0];
            let (base, segment, start, end) = (
                e.base_address,
                e.pci_segment_group,
                e.bus_number_start,
                e.bus_number_end,
            );
            assert_eq!(
                (base, segment, start, end),
                (0xE000_0000, 0, 0, pci.bus_end)
            );
            // ECAM of bus 0, device 0, function 0, as a guest computes it
            // from the entry.
            let bus0 = base + (u64::from(0 - start) << 20);
            assert_eq!(bus0, pci.ecam_base);
            assert_eq!(
                base + ((u64::from(end) + 1) << 20),
                pci.ecam_base + pci.ecam_len()
            );
        }

        let fadt = tables.find_table::<Fadt>().expect("valid FADT");
        assert_eq!(fadt.physical_start() as u64, t.fadt_gpa);
        assert_eq!(fadt.dsdt_address().unwrap() as u64, t.dsdt_gpa);
        assert_eq!(fadt.facs_address().unwrap() as u64, t.facs_gpa);
        assert_eq!({ fadt.sci_interrupt }, 9);
        assert_eq!({ fadt.smi_cmd_port }, 0);
        let evt = fadt.pm1a_event_block().unwrap();
        assert_eq!(
            (evt.address_space, evt.bit_width, evt.address),
            (AddressSpace::SystemIo, 32, 0x600)
        );
        let cnt = fadt.pm1a_control_block().unwrap();
        assert_eq!(
            (cnt.address_space, cnt.bit_width, cnt.address),
            (AddressSpace::SystemIo, 16, 0x604)
        );
        assert!(fadt.pm1b_event_block().unwrap().is_none());
        let tmr = fadt.pm_timer_block().unwrap().expect("PM timer");
        assert_eq!(
            (tmr.address_space, tmr.address),
            (AddressSpace::SystemIo, 0x608)
        );
        let reset = fadt.reset_register().unwrap();
        assert_eq!(
            (reset.address_space, reset.bit_width, reset.address),
            (AddressSpace::SystemIo, 8, 0xCF9)
        );
        assert_eq!({ fadt.reset_value }, 6);
        let flags = { fadt.flags };
        assert!(flags.supports_equivalent_to_wbinvd());
        assert!(flags.supports_system_reset_via_fadt());
        assert!(!flags.pm_timer_is_32_bit());
        let boot = { fadt.iapc_boot_arch };
        assert!(boot.legacy_devices_are_accessible());
        assert!(!boot.motherboard_implements_8042());
        drop(fadt);

        let dsdt = tables.dsdt().expect("the FADT leads to a valid DSDT");
        assert_eq!(dsdt.address as u64, t.dsdt_gpa + 36);

        let madt = tables.find_table::<Madt>().expect("valid MADT");
        assert_eq!(madt.physical_start() as u64, t.madt_gpa);
        assert!(madt.get().supports_8259());
        drop(madt);
        // The platform crate's walk through the acpi crate agrees with the
        // byte-level parser.
        let topo = Topology::from_acpi(&tables).unwrap();
        assert_eq!(topo, expected_topology(&cfg));
        assert_eq!(Topology::from_madt_bytes(madt_bytes(&t)).unwrap(), topo);
    }
}
