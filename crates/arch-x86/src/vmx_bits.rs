//! The arithmetic of Intel VT-x, free of privileged instructions so that the
//! host tests cover it: control-field negotiation against the capability MSRs,
//! segment access-rights conversion, CR0/CR4 fixed bits and guest/host masks,
//! exit-information decoding, event-injection encoding, the emulation rules
//! of MOV to CR0/CR3/CR4, and the EPT walk that finds PAE PDPTEs.
//!
//! The VMX backend (`vmx/`) reads the registers and calls these; nothing here
//! touches the CPU.

use core::fmt;

use vcpu::{Event, IoAccess, MsrAccess, NptFault, VmExit};
use x86::vmx::vmcs::control::{
    EntryControls as Entry, ExitControls as Exit, PinbasedControls as Pin,
    PrimaryControls as Primary, SecondaryControls as Secondary,
};

/// Bits of IA32_VMX_BASIC.
pub mod basic {
    /// VMCS revision identifier (bits 30:0).
    pub const REVISION_MASK: u64 = 0x7FFF_FFFF;
    /// The TRUE_* control MSRs exist (bit 55).
    pub const TRUE_CTLS: u64 = 1 << 55;

    /// Bytes of the VMXON region and VMCS (bits 44:32).
    pub const fn region_size(basic: u64) -> u64 {
        (basic >> 32) & 0x1FFF
    }

    /// Memory type the CPU uses for the VMCS (bits 53:50; 6 = write-back).
    pub const fn memory_type(basic: u64) -> u64 {
        (basic >> 50) & 0xF
    }
}

/// Bits of IA32_VMX_EPT_VPID_CAP.
pub mod ept_cap {
    pub const WALK_4: u64 = 1 << 6;
    pub const WB: u64 = 1 << 14;
    pub const INVEPT: u64 = 1 << 20;
    pub const ACCESSED_DIRTY: u64 = 1 << 21;
    pub const INVEPT_SINGLE: u64 = 1 << 25;
    pub const INVEPT_ALL: u64 = 1 << 26;
    pub const INVVPID: u64 = 1 << 32;
    pub const INVVPID_SINGLE: u64 = 1 << 41;
    pub const INVVPID_ALL: u64 = 1 << 42;
}

/// IA32_VMX_MISC bit 5: VM exits store EFER.LMA into the "IA-32e mode guest"
/// entry control (needed when the guest switches modes without exits).
pub const MISC_STORE_LMA: u64 = 1 << 5;

/// CR0 bits.
pub mod cr0 {
    pub const PE: u64 = 1 << 0;
    pub const TS: u64 = 1 << 3;
    pub const ET: u64 = 1 << 4;
    pub const NE: u64 = 1 << 5;
    pub const WP: u64 = 1 << 16;
    pub const NW: u64 = 1 << 29;
    pub const CD: u64 = 1 << 30;
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits.
pub mod cr4 {
    pub const PSE: u64 = 1 << 4;
    pub const PAE: u64 = 1 << 5;
    pub const PGE: u64 = 1 << 7;
    pub const LA57: u64 = 1 << 12;
    pub const VMXE: u64 = 1 << 13;
    pub const PCIDE: u64 = 1 << 17;
    pub const SMEP: u64 = 1 << 20;
}

/// EFER bits.
pub mod efer {
    pub const SCE: u64 = 1 << 0;
    pub const LME: u64 = 1 << 8;
    pub const LMA: u64 = 1 << 10;
    pub const NXE: u64 = 1 << 11;
    /// What a guest may hold in EFER on Intel (no SVME, LMSLE, FFXSR, TCE).
    pub const INTEL_VALID: u64 = SCE | LME | LMA | NXE;
}

/// Basic exit reasons (exit-reason field bits 15:0).
pub mod reason {
    pub const EXCEPTION_NMI: u32 = 0;
    pub const EXTERNAL_INTERRUPT: u32 = 1;
    pub const TRIPLE_FAULT: u32 = 2;
    pub const INIT: u32 = 3;
    pub const SIPI: u32 = 4;
    pub const INTERRUPT_WINDOW: u32 = 7;
    pub const NMI_WINDOW: u32 = 8;
    pub const CPUID: u32 = 10;
    pub const GETSEC: u32 = 11;
    pub const HLT: u32 = 12;
    pub const INVD: u32 = 13;
    pub const VMCALL: u32 = 18;
    pub const VMCLEAR: u32 = 19;
    pub const VMXON: u32 = 27;
    pub const CR_ACCESS: u32 = 28;
    pub const IO: u32 = 30;
    pub const RDMSR: u32 = 31;
    pub const WRMSR: u32 = 32;
    pub const MWAIT: u32 = 36;
    pub const MONITOR: u32 = 39;
    pub const EPT_VIOLATION: u32 = 48;
    pub const EPT_MISCONFIG: u32 = 49;
    pub const INVEPT: u32 = 50;
    pub const INVVPID: u32 = 53;
    pub const XSETBV: u32 = 55;
    pub const RDPMC: u32 = 15;
    pub const INVPCID: u32 = 58;
    /// Exit-reason bit 31: the VM entry itself failed (reasons 33, 34, 41).
    pub const ENTRY_FAILURE: u32 = 1 << 31;
}

/// Bits of the interruption-information fields (VM-entry, VM-exit, IDT-vectoring).
pub mod intr {
    pub const VECTOR_MASK: u32 = 0xFF;
    pub const TYPE_SHIFT: u32 = 8;
    pub const TYPE_EXTERNAL: u32 = 0;
    pub const TYPE_NMI: u32 = 2;
    pub const TYPE_HW_EXCEPTION: u32 = 3;
    pub const TYPE_SW_INTERRUPT: u32 = 4;
    pub const TYPE_PRIV_SW_EXCEPTION: u32 = 5;
    pub const TYPE_SW_EXCEPTION: u32 = 6;
    pub const ERROR_CODE: u32 = 1 << 11;
    pub const VALID: u32 = 1 << 31;

    /// The event type (bits 10:8).
    pub const fn kind(info: u32) -> u32 {
        (info >> TYPE_SHIFT) & 7
    }
}

/// Guest interruptibility-state bits.
pub mod interruptibility {
    pub const STI: u32 = 1 << 0;
    pub const MOV_SS: u32 = 1 << 1;
    pub const NMI: u32 = 1 << 3;
}

// ---------------------------------------------------------------------------
// Control negotiation
// ---------------------------------------------------------------------------

/// The capability MSRs the control fields are negotiated against. `pin`,
/// `primary`, `exit` and `entry` hold the TRUE_* variants when
/// IA32_VMX_BASIC bit 55 says they exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapMsrs {
    pub basic: u64,
    pub pin: u64,
    pub primary: u64,
    /// IA32_VMX_PROCBASED_CTLS2 (0 when secondary controls may not be 1).
    pub secondary: u64,
    pub exit: u64,
    pub entry: u64,
    pub misc: u64,
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    /// IA32_VMX_EPT_VPID_CAP (0 when neither EPT nor VPID may be enabled).
    pub ept_vpid: u64,
}

/// Which control field a negotiation failure is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlField {
    Pin,
    Primary,
    Secondary,
    Exit,
    Entry,
}

impl ControlField {
    fn name(self) -> &'static str {
        match self {
            ControlField::Pin => "pin-based VM-execution",
            ControlField::Primary => "primary processor-based VM-execution",
            ControlField::Secondary => "secondary processor-based VM-execution",
            ControlField::Exit => "VM-exit",
            ControlField::Entry => "VM-entry",
        }
    }

    /// Names of the bits Quercus requires in this field.
    fn bit_name(self, bit: u32) -> &'static str {
        match (self, bit) {
            (ControlField::Pin, 0) => "external-interrupt exiting",
            (ControlField::Pin, 3) => "NMI exiting",
            (ControlField::Primary, 2) => "interrupt-window exiting",
            (ControlField::Primary, 7) => "HLT exiting",
            (ControlField::Primary, 11) => "RDPMC exiting",
            (ControlField::Primary, 19) => "CR8-load exiting",
            (ControlField::Primary, 20) => "CR8-store exiting",
            (ControlField::Primary, 25) => "use I/O bitmaps",
            (ControlField::Primary, 28) => "use MSR bitmaps",
            (ControlField::Primary, 31) => "activate secondary controls",
            (ControlField::Secondary, 1) => "enable EPT",
            (ControlField::Secondary, 7) => "unrestricted guest",
            (ControlField::Exit, 9) => "host address-space size",
            (ControlField::Exit, 18) => "save IA32_PAT",
            (ControlField::Exit, 19) => "load IA32_PAT",
            (ControlField::Exit, 20) => "save IA32_EFER",
            (ControlField::Exit, 21) => "load IA32_EFER",
            (ControlField::Entry, 9) => "IA-32e mode guest",
            (ControlField::Entry, 14) => "load IA32_PAT",
            (ControlField::Entry, 15) => "load IA32_EFER",
            _ => "?",
        }
    }
}

/// Required control bits this CPU does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlError {
    pub field: ControlField,
    /// The required bits whose allowed-1 setting is 0.
    pub missing: u32,
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "this CPU does not allow the {} control(s) Quercus needs ({:#x}:",
            self.field.name(),
            self.missing
        )?;
        for bit in 0..32 {
            if self.missing & (1 << bit) != 0 {
                write!(f, " {}", self.field.bit_name(bit))?;
            }
        }
        write!(f, ")")
    }
}

/// One control field from its capability MSR: low 32 bits are the bits that
/// must be 1, high 32 the bits that may be 1. Returns `(wanted | required |
/// must1) & may1`, or the required bits that may not be 1.
pub fn adjust_controls(cap: u64, wanted: u32, required: u32) -> Result<u32, u32> {
    let must1 = cap as u32;
    let may1 = (cap >> 32) as u32;
    let missing = required & !may1;
    if missing != 0 {
        return Err(missing);
    }
    Ok((wanted | required | must1) & may1)
}

/// The negotiated VM-execution, VM-exit and VM-entry controls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Controls {
    pub pin: u32,
    pub primary: u32,
    pub secondary: u32,
    pub exit: u32,
    /// "IA-32e mode guest" is 0 here: the vCPU sets it from EFER.LMA.
    pub entry: u32,
    /// NMI-window exiting may be turned on (it needs virtual NMIs).
    pub nmi_window: bool,
    /// The pin-based and primary controls of a vCPU whose LAPIC is passed through, if the CPU
    /// allows them: external-interrupt exiting, HLT exiting and (where allowed) CR8 exiting off.
    /// Needs NMI-window exiting (an NMI kick that lands just before an entry ends that run).
    pub passthrough: Option<(u32, u32)>,
}

impl Controls {
    pub fn vpid(&self) -> bool {
        self.secondary & Secondary::ENABLE_VPID.bits() != 0
    }

    pub fn virtual_nmis(&self) -> bool {
        self.pin & Pin::VIRTUAL_NMIS.bits() != 0
    }

    pub fn xsaves(&self) -> bool {
        self.secondary & Secondary::ENABLE_XSAVES_XRSTORS.bits() != 0
    }
}

/// Pin-based controls Quercus needs.
pub const PIN_REQUIRED: u32 = Pin::EXTERNAL_INTERRUPT_EXITING.bits() | Pin::NMI_EXITING.bits();
/// Pin-based controls used when allowed: virtual NMIs, without which NMIs
/// cannot be given to guests (with NMI exiting, a guest's IRET would never
/// end the blocking an injected NMI starts).
pub const PIN_WANTED: u32 = Pin::VIRTUAL_NMIS.bits();
/// Primary controls Quercus needs.
pub const PRIMARY_REQUIRED: u32 = Primary::HLT_EXITING.bits()
    | Primary::CR8_LOAD_EXITING.bits()
    | Primary::CR8_STORE_EXITING.bits()
    | Primary::RDPMC_EXITING.bits()
    | Primary::USE_IO_BITMAPS.bits()
    | Primary::USE_MSR_BITMAPS.bits()
    | Primary::SECONDARY_CONTROLS.bits();
/// Primary controls used when allowed (MONITOR/MWAIT answered with #UD).
pub const PRIMARY_WANTED: u32 = Primary::MWAIT_EXITING.bits() | Primary::MONITOR_EXITING.bits();
/// Toggled at run time; must be allowed, starts off.
pub const INTERRUPT_WINDOW_EXITING: u32 = Primary::INTERRUPT_WINDOW_EXITING.bits();
/// Toggled at run time when allowed (with virtual NMIs); starts off.
pub const NMI_WINDOW_EXITING: u32 = Primary::NMI_WINDOW_EXITING.bits();
/// Secondary controls Quercus needs.
pub const SECONDARY_REQUIRED: u32 =
    Secondary::ENABLE_EPT.bits() | Secondary::UNRESTRICTED_GUEST.bits();
/// Secondary controls used when allowed.
pub const SECONDARY_WANTED: u32 = Secondary::ENABLE_VPID.bits()
    | Secondary::ENABLE_RDTSCP.bits()
    | Secondary::ENABLE_INVPCID.bits()
    | Secondary::ENABLE_XSAVES_XRSTORS.bits();
/// VM-exit controls Quercus needs. "Acknowledge interrupt on exit" stays 0:
/// the interrupt remains pending and the host takes it through its IDT.
pub const EXIT_REQUIRED: u32 = Exit::HOST_ADDRESS_SPACE_SIZE.bits()
    | Exit::SAVE_IA32_PAT.bits()
    | Exit::LOAD_IA32_PAT.bits()
    | Exit::SAVE_IA32_EFER.bits()
    | Exit::LOAD_IA32_EFER.bits();
pub const EXIT_WANTED: u32 = Exit::SAVE_DEBUG_CONTROLS.bits();
/// VM-entry controls Quercus needs.
pub const ENTRY_REQUIRED: u32 = Entry::LOAD_IA32_PAT.bits() | Entry::LOAD_IA32_EFER.bits();
pub const ENTRY_WANTED: u32 = Entry::LOAD_DEBUG_CONTROLS.bits();
/// "IA-32e mode guest": must be allowed, set from the guest's EFER.LMA.
pub const ENTRY_IA32E_GUEST: u32 = Entry::IA32E_MODE_GUEST.bits();

/// Negotiates every control field, or names the first required bits missing.
pub fn compute_controls(caps: &CapMsrs) -> Result<Controls, ControlError> {
    let field = |field, cap, wanted, required| {
        adjust_controls(cap, wanted, required).map_err(|missing| ControlError { field, missing })
    };
    let pin = field(ControlField::Pin, caps.pin, PIN_WANTED, PIN_REQUIRED)?;
    // Interrupt-window exiting must be allowed; it starts off (it is not
    // wanted, and no CPU forces it on).
    field(
        ControlField::Primary,
        caps.primary,
        0,
        INTERRUPT_WINDOW_EXITING,
    )?;
    let primary = field(
        ControlField::Primary,
        caps.primary,
        PRIMARY_WANTED,
        PRIMARY_REQUIRED,
    )?;
    let secondary = field(
        ControlField::Secondary,
        caps.secondary,
        SECONDARY_WANTED,
        SECONDARY_REQUIRED,
    )?;
    let exit = field(ControlField::Exit, caps.exit, EXIT_WANTED, EXIT_REQUIRED)?;
    field(ControlField::Entry, caps.entry, 0, ENTRY_IA32E_GUEST)?;
    let entry = field(
        ControlField::Entry,
        caps.entry,
        ENTRY_WANTED,
        ENTRY_REQUIRED,
    )?;
    let nmi_window = pin & Pin::VIRTUAL_NMIS.bits() != 0
        && (caps.primary >> 32) as u32 & NMI_WINDOW_EXITING != 0
        && caps.primary as u32 & NMI_WINDOW_EXITING == 0;
    Ok(Controls {
        pin,
        primary,
        secondary,
        exit,
        entry,
        nmi_window,
        passthrough: passthrough_controls(caps, pin, primary, nmi_window),
    })
}

/// The controls of a passthrough-LAPIC vCPU (see [`Controls::passthrough`]): `pin` and
/// `primary` with the bits that make interrupts, HLT and CR8 exit cleared, if the CPU lets
/// external-interrupt and HLT exiting be 0 and has NMI-window exiting.
pub fn passthrough_controls(
    caps: &CapMsrs,
    pin: u32,
    primary: u32,
    nmi_window: bool,
) -> Option<(u32, u32)> {
    let (pin_must1, primary_must1) = (caps.pin as u32, caps.primary as u32);
    let ext = Pin::EXTERNAL_INTERRUPT_EXITING.bits();
    let hlt = Primary::HLT_EXITING.bits();
    if !nmi_window || pin_must1 & ext != 0 || primary_must1 & hlt != 0 {
        return None;
    }
    let cr8 =
        (Primary::CR8_LOAD_EXITING.bits() | Primary::CR8_STORE_EXITING.bits()) & !primary_must1;
    Some((pin & !ext, primary & !(hlt | cr8)))
}

/// Capabilities outside the control fields that Quercus relies on; the name
/// of the first one missing.
pub fn check_features(caps: &CapMsrs) -> Result<(), &'static str> {
    if basic::region_size(caps.basic) > 4096 || basic::region_size(caps.basic) == 0 {
        return Err("a VMCS that fits in 4 KiB (IA32_VMX_BASIC bits 44:32)");
    }
    if basic::memory_type(caps.basic) != 6 {
        return Err("write-back VMCS memory (IA32_VMX_BASIC bits 53:50)");
    }
    if (caps.primary >> 32) as u32 & Primary::SECONDARY_CONTROLS.bits() == 0 {
        return Err("secondary processor-based controls (needed for EPT)");
    }
    if caps.ept_vpid & ept_cap::WALK_4 == 0 {
        return Err("4-level EPT page walks");
    }
    if caps.ept_vpid & ept_cap::WB == 0 {
        return Err("write-back EPT paging structures");
    }
    if caps.misc & MISC_STORE_LMA == 0 {
        return Err("VM exits that store EFER.LMA in the entry controls (IA32_VMX_MISC bit 5)");
    }
    Ok(())
}

/// Whether this CPU accepts `eptp` (memory type, walk length, A/D flags,
/// reserved bits 11:7).
pub fn eptp_supported(eptp: u64, ept_vpid: u64) -> bool {
    let mem_ok = match eptp & 7 {
        6 => ept_vpid & ept_cap::WB != 0,
        0 => ept_vpid & (1 << 8) != 0,
        _ => false,
    };
    let walk_ok = (eptp >> 3) & 7 == 3 && ept_vpid & ept_cap::WALK_4 != 0;
    let ad_ok = eptp & (1 << 6) == 0 || ept_vpid & ept_cap::ACCESSED_DIRTY != 0;
    mem_ok && walk_ok && ad_ok && eptp & 0xF80 == 0 && eptp & !0xFFF != 0
}

// ---------------------------------------------------------------------------
// CR0 / CR4 fixed bits
// ---------------------------------------------------------------------------

/// CR0/CR4 bits VMX operation fixes, and the guest/host masks that hide them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrFixed {
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
}

impl CrFixed {
    pub fn from_caps(caps: &CapMsrs) -> Self {
        CrFixed {
            cr0_fixed0: caps.cr0_fixed0,
            cr0_fixed1: caps.cr0_fixed1,
            cr4_fixed0: caps.cr4_fixed0,
            cr4_fixed1: caps.cr4_fixed1,
        }
    }

    /// CR0 bits that must be 1 in the guest: with unrestricted guest PE and
    /// PG are free (NE remains).
    fn cr0_forced(&self) -> u64 {
        self.cr0_fixed0 & !(cr0::PE | cr0::PG)
    }

    /// Host CR0 for VMX operation (VMXON needs NE among others).
    pub fn host_cr0(&self, cr0: u64) -> u64 {
        (cr0 | self.cr0_fixed0) & self.cr0_fixed1
    }

    /// Host CR4 for VMX operation (VMXE set).
    pub fn host_cr4(&self, cr4: u64) -> u64 {
        (cr4 | self.cr4_fixed0 | cr4::VMXE) & self.cr4_fixed1
    }

    /// CR0 bits owned by the host: forced to 1 or 0 in the real register,
    /// shown to the guest from the read shadow. A guest write that changes
    /// one of them (relative to the shadow) exits.
    pub fn cr0_mask(&self) -> u64 {
        (self.cr0_forced() | !self.cr0_fixed1) & 0xFFFF_FFFF
    }

    /// CR4 bits owned by the host: VMXE (hidden: the shadow says 0) and any
    /// bit VMX operation forbids.
    pub fn cr4_mask(&self) -> u64 {
        (self.cr4_fixed0 | !self.cr4_fixed1 | cr4::VMXE) & 0xFFFF_FFFF
    }

    /// The real CR0 for guest value `guest`.
    pub fn real_cr0(&self, guest: u64) -> u64 {
        (guest | self.cr0_forced()) & self.cr0_fixed1
    }

    /// The real CR4 for guest value `guest`.
    pub fn real_cr4(&self, guest: u64) -> u64 {
        (guest | self.cr4_fixed0) & self.cr4_fixed1
    }

    /// CR4 bits a guest may set (everything VMX allows except VMXE).
    pub fn cr4_guest_allowed(&self) -> u64 {
        self.cr4_fixed1 & !cr4::VMXE & 0xFFFF_FFFF
    }
}

/// What the guest reads: host-owned bits from the shadow, the rest real.
pub fn guest_view(real: u64, shadow: u64, mask: u64) -> u64 {
    (real & !mask) | (shadow & mask)
}

// ---------------------------------------------------------------------------
// Segments
// ---------------------------------------------------------------------------

/// VMX access rights: the segment is unusable.
pub const AR_UNUSABLE: u32 = 1 << 16;

/// VMX access rights (type/S/DPL/P in 7:0, AVL/L/D-B/G in 15:12, unusable in
/// 16) from the packed SVM layout (type/S/DPL/P in 7:0, AVL/L/D-B/G in
/// 11:8). A segment that is not present is unusable. Code and data segments
/// get the accessed bit, which VM entry requires and loading sets anyway.
pub fn access_rights(attrib: u16) -> u32 {
    let a = u32::from(attrib);
    if a & 0x80 == 0 {
        return AR_UNUSABLE;
    }
    let mut ar = (a & 0xFF) | ((a & 0xF00) << 4);
    if a & 0x10 != 0 {
        ar |= 1;
    }
    ar
}

/// TR access rights: always usable, a busy TSS (type 11, or type 3 outside
/// long mode when the caller gave a 16-bit one), system segment, present.
pub fn tr_access_rights(attrib: u16, long_mode: bool) -> u32 {
    let ar = (access_rights(attrib | 0x80) & !AR_UNUSABLE & !0x1F) | 0x80;
    let ty = u32::from(attrib) & 0xF;
    ar | if ty == 3 && !long_mode { 3 } else { 11 }
}

/// The packed SVM layout from VMX access rights (an unusable segment reads 0).
pub fn packed_attrib(ar: u32) -> u16 {
    if ar & AR_UNUSABLE != 0 {
        return 0;
    }
    ((ar & 0xFF) | ((ar >> 4) & 0xF00)) as u16
}

/// The base of a 16-byte 64-bit TSS descriptor (the two GDT quadwords).
pub fn tss_base(low: u64, high: u64) -> u64 {
    ((low >> 16) & 0xFF_FFFF) | (((low >> 56) & 0xFF) << 24) | ((high & 0xFFFF_FFFF) << 32)
}

/// Whether `addr` is canonical for `bits` of linear address.
pub fn canonical(addr: u64, bits: u8) -> bool {
    let shift = 64 - u32::from(bits.clamp(32, 64));
    ((addr << shift) as i64 >> shift) as u64 == addr
}

/// Whether every byte of a PAT value names a valid memory type (0, 1, 4-7).
pub fn pat_valid(pat: u64) -> bool {
    pat.to_le_bytes()
        .iter()
        .all(|&b| matches!(b, 0 | 1 | 4..=7))
}

// ---------------------------------------------------------------------------
// Exits
// ---------------------------------------------------------------------------

/// The exit-information fields a decode needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitInfo {
    /// The full exit-reason field.
    pub reason: u32,
    pub qualification: u64,
    /// VM-exit interruption information (exception/NMI exits).
    pub interruption: u32,
    /// VM-exit interruption error code.
    pub interruption_error: u32,
    /// Guest-physical address (EPT exits).
    pub guest_physical: u64,
}

/// A decoded control-register access (exit reason 28).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccess {
    MovTo { cr: u8, gpr: u8 },
    MovFrom { cr: u8, gpr: u8 },
    Clts,
    Lmsw { source: u16 },
}

/// Decodes a CR-access exit qualification.
pub fn cr_access(qual: u64) -> CrAccess {
    let cr = (qual & 0xF) as u8;
    let gpr = ((qual >> 8) & 0xF) as u8;
    match (qual >> 4) & 3 {
        0 => CrAccess::MovTo { cr, gpr },
        1 => CrAccess::MovFrom { cr, gpr },
        2 => CrAccess::Clts,
        _ => CrAccess::Lmsw {
            source: (qual >> 16) as u16,
        },
    }
}

/// Decodes an I/O-instruction exit qualification.
pub fn io_access(qual: u64) -> IoAccess {
    IoAccess {
        port: (qual >> 16) as u16,
        size: (qual & 7) as u8 + 1,
        write: qual & (1 << 3) == 0,
        string: qual & (1 << 4) != 0,
        rep: qual & (1 << 5) != 0,
    }
}

/// Decodes an EPT-violation exit.
pub fn ept_violation(qual: u64, gpa: u64) -> NptFault {
    NptFault {
        gpa,
        write: qual & (1 << 1) != 0,
        fetch: qual & (1 << 2) != 0,
        present: qual & 0x38 != 0,
    }
}

/// Whether the exit reports the length of the instruction that caused it.
pub fn reports_instruction_len(basic_reason: u32) -> bool {
    matches!(
        basic_reason,
        reason::IO
            | reason::CPUID
            | reason::HLT
            | reason::VMCALL
            | reason::RDMSR
            | reason::WRMSR
            | reason::XSETBV
            | reason::RDPMC
            | reason::CR_ACCESS
    )
}

/// Whether an exception-or-NMI exit was an NMI.
pub fn is_nmi(interruption: u32) -> bool {
    interruption & intr::VALID != 0 && intr::kind(interruption) == intr::TYPE_NMI
}

/// Translates an exit into the normalized [`VmExit`]. A CR access decodes to
/// `CrAccess`; the backend completes the ones it can before this is used.
pub fn decode_exit(e: &ExitInfo) -> VmExit {
    if e.reason & reason::ENTRY_FAILURE != 0 {
        return VmExit::EntryFailed {
            raw: u64::from(e.reason),
        };
    }
    let basic = e.reason & 0xFFFF;
    match basic {
        reason::EXCEPTION_NMI => {
            if is_nmi(e.interruption) {
                VmExit::ExternalInterrupt
            } else {
                VmExit::Exception {
                    vector: (e.interruption & intr::VECTOR_MASK) as u8,
                    error_code: (e.interruption & intr::ERROR_CODE != 0)
                        .then_some(e.interruption_error),
                }
            }
        }
        reason::EXTERNAL_INTERRUPT | reason::INIT | reason::SIPI => VmExit::ExternalInterrupt,
        reason::TRIPLE_FAULT => VmExit::Shutdown,
        reason::INTERRUPT_WINDOW | reason::NMI_WINDOW => VmExit::InterruptWindow,
        reason::CPUID => VmExit::Cpuid,
        reason::HLT => VmExit::Hlt,
        reason::VMCALL => VmExit::Hypercall,
        reason::CR_ACCESS => match cr_access(e.qualification) {
            CrAccess::MovTo { cr, .. } => VmExit::CrAccess { cr, write: true },
            CrAccess::MovFrom { cr, .. } => VmExit::CrAccess { cr, write: false },
            CrAccess::Clts | CrAccess::Lmsw { .. } => VmExit::CrAccess { cr: 0, write: true },
        },
        reason::IO => VmExit::Io(io_access(e.qualification)),
        reason::RDMSR => VmExit::Msr(MsrAccess { write: false }),
        reason::WRMSR => VmExit::Msr(MsrAccess { write: true }),
        reason::EPT_VIOLATION => VmExit::Mmio(ept_violation(e.qualification, e.guest_physical)),
        reason::XSETBV => VmExit::Xsetbv,
        reason::RDPMC => VmExit::Rdpmc,
        reason::GETSEC
        | reason::INVD
        | reason::VMCLEAR..=reason::VMXON
        | reason::MWAIT
        | reason::MONITOR
        | reason::INVEPT
        | reason::INVVPID
        | reason::INVPCID => VmExit::Forbidden {
            raw: u64::from(basic),
        },
        other => VmExit::Unknown {
            raw: u64::from(other),
        },
    }
}

// ---------------------------------------------------------------------------
// Event injection
// ---------------------------------------------------------------------------

/// The VM-entry interruption information (and error code, if delivered) for
/// `event`. Hardware exceptions push an error code only in protected mode
/// (VM entry checks this exactly): #DF, #TS, #NP, #SS, #GP, #PF, #AC always,
/// #CP when the caller gives one. VM entry also requires error-code bits
/// 31:16 to be 0 (no Intel exception sets them).
pub fn entry_event(event: Event, protected_mode: bool) -> (u32, Option<u32>) {
    match event {
        Event::Exception { vector, error_code } => {
            debug_assert!(vector < 32, "exception vector {vector}");
            let pushes =
                matches!(vector, 8 | 10..=14 | 17) || (vector == 21 && error_code.is_some());
            let err = (protected_mode && pushes).then(|| error_code.unwrap_or(0) & 0xFFFF);
            let mut info = u32::from(vector & 31)
                | (intr::TYPE_HW_EXCEPTION << intr::TYPE_SHIFT)
                | intr::VALID;
            if err.is_some() {
                info |= intr::ERROR_CODE;
            }
            (info, err)
        }
        Event::Interrupt { vector } => (
            u32::from(vector) | (intr::TYPE_EXTERNAL << intr::TYPE_SHIFT) | intr::VALID,
            None,
        ),
        Event::Nmi => (2 | (intr::TYPE_NMI << intr::TYPE_SHIFT) | intr::VALID, None),
    }
}

/// An event whose delivery an exit interrupted, to inject again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requeue {
    /// VM-entry interruption information.
    pub info: u32,
    /// Whether the IDT-vectoring error code must be copied.
    pub error_code: bool,
    /// Software interrupts/exceptions need the VM-entry instruction length.
    pub needs_instruction_len: bool,
}

/// The re-injection for an IDT-vectoring information field, if it is valid.
pub fn requeue(vectoring: u32) -> Option<Requeue> {
    if vectoring & intr::VALID == 0 {
        return None;
    }
    let info = vectoring & (intr::VALID | intr::ERROR_CODE | 0x7FF);
    Some(Requeue {
        info,
        error_code: info & intr::ERROR_CODE != 0,
        needs_instruction_len: matches!(
            intr::kind(info),
            intr::TYPE_SW_INTERRUPT | intr::TYPE_PRIV_SW_EXCEPTION | intr::TYPE_SW_EXCEPTION
        ),
    })
}

// ---------------------------------------------------------------------------
// MOV to CR0/CR3/CR4 emulation
// ---------------------------------------------------------------------------

/// The guest's paging-relevant state, as the guest sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestModes {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// CS.L.
    pub cs_l: bool,
}

impl GuestModes {
    /// Whether the guest runs 64-bit code (EFER.LMA and CS.L): MOV CR
    /// operands are 64 bits wide there, 32 elsewhere.
    pub fn in_64bit_mode(&self) -> bool {
        self.efer & efer::LMA != 0 && self.cs_l
    }

    fn lma(&self) -> bool {
        self.efer & efer::LMA != 0
    }
}

/// The architectural outcome of a control-register write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrUpdate {
    /// New guest-visible CR0, CR3, CR4 and EFER (LMA follows CR0.PG).
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// PAE paging results and the PDPTEs must be loaded from CR3.
    pub load_pdptes: bool,
    /// Cached linear translations must go.
    pub flush: bool,
}

impl CrUpdate {
    fn new(m: &GuestModes) -> Self {
        CrUpdate {
            cr0: m.cr0,
            cr3: m.cr3,
            cr4: m.cr4,
            efer: m.efer,
            load_pdptes: false,
            flush: false,
        }
    }
}

fn pae_paging(cr0_value: u64, cr4_value: u64, efer_value: u64) -> bool {
    cr0_value & cr0::PG != 0 && cr4_value & cr4::PAE != 0 && efer_value & efer::LMA == 0
}

/// MOV to CR0 with `value` (already truncated to the operand size); `None`
/// means #GP(0). Enabling paging with EFER.LME activates long mode (LMA),
/// disabling it leaves long mode.
pub fn mov_to_cr0(m: &GuestModes, value: u64) -> Option<CrUpdate> {
    if value >> 32 != 0 {
        return None;
    }
    let new = value | cr0::ET;
    if new & cr0::PG != 0 && new & cr0::PE == 0 {
        return None;
    }
    if new & cr0::NW != 0 && new & cr0::CD == 0 {
        return None;
    }
    let old = m.cr0;
    let mut efer_value = m.efer;
    let paging_on = new & cr0::PG != 0 && old & cr0::PG == 0;
    let paging_off = new & cr0::PG == 0 && old & cr0::PG != 0;
    if paging_on && efer_value & efer::LME != 0 {
        if m.cr4 & cr4::PAE == 0 || m.cs_l {
            return None;
        }
        efer_value |= efer::LMA;
    }
    if paging_off {
        if m.cr4 & cr4::PCIDE != 0 || m.in_64bit_mode() {
            return None;
        }
        efer_value &= !efer::LMA;
    }
    let changed = old ^ new;
    let mut u = CrUpdate::new(m);
    u.cr0 = new;
    u.efer = efer_value;
    u.load_pdptes =
        pae_paging(new, m.cr4, efer_value) && changed & (cr0::PG | cr0::CD | cr0::NW) != 0;
    u.flush = changed & (cr0::PG | cr0::PE | cr0::WP | cr0::CD | cr0::NW) != 0;
    Some(u)
}

/// MOV to CR4 with `value`; `allowed` are the bits the guest may set.
/// `None` means #GP(0).
pub fn mov_to_cr4(m: &GuestModes, value: u64, allowed: u64) -> Option<CrUpdate> {
    if value >> 32 != 0 || value & !allowed != 0 {
        return None;
    }
    let old = m.cr4;
    let changed = old ^ value;
    if m.lma() && (value & cr4::PAE == 0 || changed & cr4::LA57 != 0) {
        return None;
    }
    if value & cr4::PCIDE != 0 && old & cr4::PCIDE == 0 && (!m.lma() || m.cr3 & 0xFFF != 0) {
        return None;
    }
    let mut u = CrUpdate::new(m);
    u.cr4 = value;
    u.load_pdptes = pae_paging(m.cr0, value, m.efer)
        && changed & (cr4::PAE | cr4::PGE | cr4::PSE | cr4::SMEP) != 0;
    u.flush = changed & (cr4::PAE | cr4::PGE | cr4::PSE | cr4::SMEP | cr4::PCIDE | cr4::LA57) != 0;
    Some(u)
}

/// MOV to CR3 with `value`; `None` means #GP(0). With CR4.PCIDE, bit 63 asks
/// to keep the cached translations.
pub fn mov_to_cr3(m: &GuestModes, value: u64, max_phys_bits: u8) -> Option<CrUpdate> {
    let keep = m.cr4 & cr4::PCIDE != 0 && value & (1 << 63) != 0;
    let cr3 = if m.cr4 & cr4::PCIDE != 0 {
        value & !(1 << 63)
    } else {
        value
    };
    if max_phys_bits < 64 && cr3 >> max_phys_bits != 0 {
        return None;
    }
    let mut u = CrUpdate::new(m);
    u.cr3 = cr3;
    u.load_pdptes = pae_paging(m.cr0, m.cr4, m.efer);
    u.flush = !keep;
    Some(u)
}

/// The CR0 value LMSW produces: it writes PE, MP, EM, TS but cannot clear PE.
pub fn lmsw(cr0_value: u64, source: u16) -> u64 {
    (cr0_value & !0xE) | (u64::from(source) & 0xF) | (cr0_value & cr0::PE)
}

/// The CR0 value CLTS produces.
pub fn clts(cr0_value: u64) -> u64 {
    cr0_value & !cr0::TS
}

// ---------------------------------------------------------------------------
// EPT walk and PAE PDPTEs
// ---------------------------------------------------------------------------

const EPT_ADDR: u64 = 0x000F_FFFF_FFFF_F000;

/// Translates `gpa` through the 4-level EPT of `eptp`; `read(pa)` reads the
/// 8-byte entry at host-physical `pa`. Only readable write-back leaves
/// (RAM, never device memory) translate.
pub fn ept_translate(eptp: u64, gpa: u64, read: impl Fn(u64) -> u64) -> Option<u64> {
    let mut table = eptp & EPT_ADDR;
    for level in (1..=4u32).rev() {
        let shift = 12 + 9 * (level - 1);
        let entry = read(table + ((gpa >> shift) & 0x1FF) * 8);
        if entry & 1 == 0 {
            return None;
        }
        let leaf = level == 1 || ((level == 2 || level == 3) && entry & (1 << 7) != 0);
        if leaf {
            if (entry >> 3) & 7 != 6 {
                return None;
            }
            let offset = (1u64 << shift) - 1;
            return Some((entry & EPT_ADDR & !offset) | (gpa & offset));
        }
        table = entry & EPT_ADDR;
    }
    None
}

/// Whether four PAE PDPTEs are loadable: present entries have no reserved
/// bits (2:1, 8:5, and everything from MAXPHYADDR up, including bit 63).
pub fn pdptes_valid(pdptes: &[u64; 4], max_phys_bits: u8) -> bool {
    pdptes.iter().all(|&e| {
        e & 1 == 0 || (e & 0x1E6 == 0 && (max_phys_bits >= 64 || e >> max_phys_bits == 0))
    })
}

/// The guest-physical address of the PDPT that a PAE CR3 points at.
pub fn pdpt_gpa(cr3: u64) -> u64 {
    cr3 & 0xFFFF_FFE0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IA32_VMX_* values as Bochs's tigerlake model reports them (shape, not
    /// exact numbers): TRUE controls, EPT, VPID, unrestricted guest.
    fn caps() -> CapMsrs {
        CapMsrs {
            basic: (1 << 55) | (6 << 50) | (4096 << 32) | 0x1,
            pin: 0x0000_00FF_0000_0016,
            primary: 0xFFFB_FFFE_0400_6172,
            secondary: 0x00FF_FFFF_0000_0000,
            exit: 0x003F_FFFF_0003_6DFB,
            entry: 0x0003_FFFF_0000_11FB,
            misc: 0x20,
            cr0_fixed0: 0x8000_0021,
            cr0_fixed1: 0xFFFF_FFFF,
            cr4_fixed0: 0x2000,
            cr4_fixed1: 0x0037_67FF,
            ept_vpid: ept_cap::WALK_4
                | ept_cap::WB
                | ept_cap::INVEPT
                | ept_cap::INVEPT_SINGLE
                | ept_cap::INVEPT_ALL
                | ept_cap::ACCESSED_DIRTY
                | ept_cap::INVVPID
                | ept_cap::INVVPID_SINGLE
                | ept_cap::INVVPID_ALL,
        }
    }

    #[test]
    fn adjust_forces_must1_and_drops_unallowed_wishes() {
        let cap = (0x0000_00F0u64 << 32) | 0x10;
        assert_eq!(adjust_controls(cap, 0x0F_0F, 0x20), Ok(0x30));
        assert_eq!(adjust_controls(cap, 0, 0x101), Err(0x101));
        assert_eq!(adjust_controls(cap, 0x100, 0), Ok(0x10));
    }

    #[test]
    fn controls_for_a_capable_cpu() {
        let c = compute_controls(&caps()).unwrap();
        assert_eq!(c.pin & PIN_REQUIRED, PIN_REQUIRED);
        assert_eq!(c.primary & PRIMARY_REQUIRED, PRIMARY_REQUIRED);
        assert_eq!(c.primary & INTERRUPT_WINDOW_EXITING, 0);
        // TRUE controls let CR3 load/store exiting be 0.
        assert_eq!(c.primary & (3 << 15), 0);
        assert_eq!(c.secondary & SECONDARY_REQUIRED, SECONDARY_REQUIRED);
        assert!(c.vpid() && c.xsaves());
        assert_eq!(c.exit & EXIT_REQUIRED, EXIT_REQUIRED);
        assert_eq!(c.exit & Exit::ACK_INTERRUPT_ON_EXIT.bits(), 0);
        assert_eq!(c.entry & ENTRY_REQUIRED, ENTRY_REQUIRED);
        assert_eq!(c.entry & ENTRY_IA32E_GUEST, 0);
        assert_eq!(check_features(&caps()), Ok(()));
    }

    #[test]
    fn optional_secondary_controls_are_left_off() {
        let mut k = caps();
        k.secondary = u64::from(SECONDARY_REQUIRED) << 32;
        let c = compute_controls(&k).unwrap();
        assert!(!c.vpid() && !c.xsaves());
        assert_eq!(c.secondary, SECONDARY_REQUIRED);
    }

    #[test]
    fn passthrough_controls_stop_interrupt_hlt_and_cr8_exits_only_where_allowed() {
        let c = compute_controls(&caps()).unwrap();
        let (pin, primary) = c
            .passthrough
            .expect("a capable CPU passes the LAPIC through");
        assert_eq!(pin & Pin::EXTERNAL_INTERRUPT_EXITING.bits(), 0);
        assert_ne!(
            pin & Pin::NMI_EXITING.bits(),
            0,
            "NMIs still exit: they are the kicks"
        );
        assert_eq!(primary & Primary::HLT_EXITING.bits(), 0);
        assert_eq!(
            primary & (Primary::CR8_LOAD_EXITING.bits() | Primary::CR8_STORE_EXITING.bits()),
            0
        );
        assert_eq!(
            primary & Primary::USE_MSR_BITMAPS.bits(),
            Primary::USE_MSR_BITMAPS.bits()
        );
        // A CPU that forces external-interrupt exiting, or has no NMI-window exiting: none.
        let mut k = caps();
        k.pin |= u64::from(Pin::EXTERNAL_INTERRUPT_EXITING.bits());
        assert_eq!(compute_controls(&k).unwrap().passthrough, None);
        let mut k = caps();
        k.primary &= !(u64::from(NMI_WINDOW_EXITING) << 32);
        assert_eq!(compute_controls(&k).unwrap().passthrough, None);
        // CR8 exiting forced on stays on.
        let mut k = caps();
        k.primary |= u64::from(Primary::CR8_LOAD_EXITING.bits());
        let (_, primary) = compute_controls(&k).unwrap().passthrough.unwrap();
        assert_ne!(primary & Primary::CR8_LOAD_EXITING.bits(), 0);
    }

    #[test]
    fn nmi_window_needs_virtual_nmis() {
        let c = compute_controls(&caps()).unwrap();
        assert!(c.virtual_nmis() && c.nmi_window);
        assert_eq!(c.primary & NMI_WINDOW_EXITING, 0, "starts off");
        let mut k = caps();
        k.pin &= !(u64::from(Pin::VIRTUAL_NMIS.bits()) << 32);
        let c = compute_controls(&k).unwrap();
        assert!(!c.virtual_nmis() && !c.nmi_window);
        let mut k = caps();
        k.primary &= !(u64::from(NMI_WINDOW_EXITING) << 32);
        let c = compute_controls(&k).unwrap();
        assert!(c.virtual_nmis() && !c.nmi_window);
    }

    #[test]
    fn missing_unrestricted_guest_is_named() {
        let mut k = caps();
        k.secondary &= !(u64::from(Secondary::UNRESTRICTED_GUEST.bits()) << 32);
        let e = compute_controls(&k).unwrap_err();
        assert_eq!(e.field, ControlField::Secondary);
        assert_eq!(e.missing, Secondary::UNRESTRICTED_GUEST.bits());
        let mut s = heapless_string();
        core::fmt::write(&mut s, format_args!("{e}")).unwrap();
        assert!(s.as_str().contains("unrestricted guest"), "{}", s.as_str());
    }

    #[test]
    fn feature_checks() {
        let mut k = caps();
        k.ept_vpid &= !ept_cap::WALK_4;
        assert!(check_features(&k).is_err());
        let mut k = caps();
        k.misc = 0;
        assert!(check_features(&k).is_err());
        let mut k = caps();
        k.primary &= !(1 << 63);
        assert!(check_features(&k).is_err());
    }

    #[test]
    fn eptp_checks() {
        let ev = caps().ept_vpid;
        assert!(eptp_supported(0x1234_5000 | 6 | (3 << 3), ev));
        assert!(eptp_supported(0x1234_5000 | 6 | (3 << 3) | (1 << 6), ev));
        assert!(!eptp_supported(
            0x1234_5000 | 6 | (3 << 3) | (1 << 6),
            ev & !ept_cap::ACCESSED_DIRTY
        ));
        assert!(!eptp_supported(0x1234_5000 | 6 | (4 << 3), ev));
        assert!(!eptp_supported(0x1234_5000 | 5 | (3 << 3), ev));
        assert!(!eptp_supported(6 | (3 << 3), ev));
    }

    #[test]
    fn cr_fixed_bits_and_masks() {
        let f = CrFixed::from_caps(&caps());
        // Unrestricted guest: PE and PG free, NE forced and hidden.
        assert_eq!(f.cr0_mask(), cr0::NE);
        assert_eq!(f.real_cr0(0x11), 0x31);
        assert_eq!(f.real_cr0(0), cr0::NE);
        assert_eq!(guest_view(0x31, 0x11, f.cr0_mask()), 0x11);
        assert_eq!(f.host_cr0(0x8000_0013), 0x8000_0033);
        assert_eq!(f.real_cr4(0), cr4::VMXE);
        assert_eq!(f.cr4_mask() & cr4::VMXE, cr4::VMXE);
        assert_eq!(f.cr4_mask() & cr4::PAE, 0);
        assert_eq!(
            guest_view(f.real_cr4(cr4::PAE), cr4::PAE, f.cr4_mask()),
            cr4::PAE
        );
        assert_eq!(f.cr4_guest_allowed() & cr4::VMXE, 0);
        assert_eq!(f.host_cr4(0x620), 0x2620);
    }

    #[test]
    fn access_rights_conversion() {
        assert_eq!(access_rights(0xC9B), 0xC09B);
        assert_eq!(access_rights(0xC93), 0xC093);
        assert_eq!(access_rights(0xA9B), 0xA09B);
        assert_eq!(access_rights(0x92), 0x93, "accessed bit added");
        assert_eq!(access_rights(0), AR_UNUSABLE);
        assert_eq!(access_rights(0x13), AR_UNUSABLE, "not present");
        assert_eq!(access_rights(0x08B), 0x8B);
        assert_eq!(packed_attrib(0xC09B), 0xC9B);
        assert_eq!(packed_attrib(AR_UNUSABLE | 0x93), 0);
        for a in [0xC9Bu16, 0xC93, 0xA9B, 0x093, 0x08B] {
            assert_eq!(packed_attrib(access_rights(a)), a);
        }
    }

    #[test]
    fn tr_is_always_a_usable_busy_tss() {
        assert_eq!(tr_access_rights(0x08B, false), 0x8B);
        assert_eq!(tr_access_rights(0x083, false), 0x83);
        assert_eq!(tr_access_rights(0x083, true), 0x8B);
        assert_eq!(tr_access_rights(0, false), 0x8B);
        assert_eq!(tr_access_rights(0x082, true), 0x8B);
    }

    #[test]
    fn tss_descriptor_base() {
        let base = 0xFFFF_8000_1234_5678u64;
        let low = 0x67 | ((base & 0xFF_FFFF) << 16) | (0x89 << 40) | (((base >> 24) & 0xFF) << 56);
        let high = base >> 32;
        assert_eq!(tss_base(low, high), base);
    }

    #[test]
    fn canonical_and_pat() {
        assert!(canonical(0x0000_7FFF_FFFF_F000, 48));
        assert!(canonical(0xFFFF_8000_0000_0000, 48));
        assert!(!canonical(0x0000_8000_0000_0000, 48));
        assert!(canonical(0x0000_8000_0000_0000, 57));
        assert!(pat_valid(0x0007_0406_0007_0406));
        assert!(!pat_valid(0x0007_0406_0007_0402));
    }

    #[test]
    fn exit_decoding() {
        let io = ExitInfo {
            reason: reason::IO,
            qualification: (0x3F8 << 16) | (1 << 3),
            ..ExitInfo::default()
        };
        assert_eq!(
            decode_exit(&io),
            VmExit::Io(IoAccess {
                port: 0x3F8,
                size: 1,
                write: false,
                string: false,
                rep: false
            })
        );
        let outsd = ExitInfo {
            reason: reason::IO,
            qualification: (0x80 << 16) | 3 | (1 << 4) | (1 << 5),
            ..ExitInfo::default()
        };
        assert_eq!(
            decode_exit(&outsd),
            VmExit::Io(IoAccess {
                port: 0x80,
                size: 4,
                write: true,
                string: true,
                rep: true
            })
        );
        let ept = ExitInfo {
            reason: reason::EPT_VIOLATION,
            qualification: 0b10_1010,
            guest_physical: 0xFEE0_0030,
            ..ExitInfo::default()
        };
        assert_eq!(
            decode_exit(&ept),
            VmExit::Mmio(NptFault {
                gpa: 0xFEE0_0030,
                write: true,
                fetch: false,
                present: true
            })
        );
        let hole = ExitInfo {
            qualification: 0b100,
            ..ept
        };
        assert_eq!(
            decode_exit(&hole),
            VmExit::Mmio(NptFault {
                gpa: 0xFEE0_0030,
                write: false,
                fetch: true,
                present: false
            })
        );
        let gp = ExitInfo {
            reason: reason::EXCEPTION_NMI,
            interruption: 13 | (3 << 8) | intr::ERROR_CODE | intr::VALID,
            interruption_error: 0x18,
            ..ExitInfo::default()
        };
        assert_eq!(
            decode_exit(&gp),
            VmExit::Exception {
                vector: 13,
                error_code: Some(0x18)
            }
        );
        let mc = ExitInfo {
            interruption: 18 | (3 << 8) | intr::VALID,
            ..gp
        };
        assert_eq!(
            decode_exit(&mc),
            VmExit::Exception {
                vector: 18,
                error_code: None
            }
        );
        let nmi = ExitInfo {
            interruption: 2 | (2 << 8) | intr::VALID,
            ..gp
        };
        assert_eq!(decode_exit(&nmi), VmExit::ExternalInterrupt);
        let bad = ExitInfo {
            reason: reason::ENTRY_FAILURE | 33,
            ..ExitInfo::default()
        };
        assert_eq!(decode_exit(&bad), VmExit::EntryFailed { raw: 0x8000_0021 });
        let simple = |r| {
            decode_exit(&ExitInfo {
                reason: r,
                ..ExitInfo::default()
            })
        };
        assert_eq!(
            simple(reason::EXTERNAL_INTERRUPT),
            VmExit::ExternalInterrupt
        );
        assert_eq!(simple(reason::TRIPLE_FAULT), VmExit::Shutdown);
        assert_eq!(simple(reason::INIT), VmExit::ExternalInterrupt);
        assert_eq!(simple(reason::CPUID), VmExit::Cpuid);
        assert_eq!(simple(reason::HLT), VmExit::Hlt);
        assert_eq!(simple(reason::VMCALL), VmExit::Hypercall);
        assert_eq!(simple(reason::INTERRUPT_WINDOW), VmExit::InterruptWindow);
        assert_eq!(
            simple(reason::RDMSR),
            VmExit::Msr(MsrAccess { write: false })
        );
        assert_eq!(
            simple(reason::WRMSR),
            VmExit::Msr(MsrAccess { write: true })
        );
        assert_eq!(simple(reason::XSETBV), VmExit::Xsetbv);
        for r in [19, 20, 24, 27, 50, 53, 58] {
            assert_eq!(simple(r), VmExit::Forbidden { raw: u64::from(r) });
        }
        assert_eq!(simple(reason::EPT_MISCONFIG), VmExit::Unknown { raw: 49 });
        assert_eq!(simple(9), VmExit::Unknown { raw: 9 });
        assert!(
            reports_instruction_len(reason::IO) && !reports_instruction_len(reason::EPT_VIOLATION)
        );
    }

    #[test]
    fn cr_access_qualification() {
        assert_eq!(cr_access(0x0300), CrAccess::MovTo { cr: 0, gpr: 3 });
        assert_eq!(cr_access(0x0414), CrAccess::MovFrom { cr: 4, gpr: 4 });
        assert_eq!(cr_access(0x0020), CrAccess::Clts);
        assert_eq!(cr_access(0x0001_0030), CrAccess::Lmsw { source: 1 });
        let e = ExitInfo {
            reason: reason::CR_ACCESS,
            qualification: 0x0803,
            ..ExitInfo::default()
        };
        assert_eq!(decode_exit(&e), VmExit::CrAccess { cr: 3, write: true });
    }

    #[test]
    fn injection_encoding() {
        assert_eq!(
            entry_event(
                Event::Exception {
                    vector: 13,
                    error_code: Some(0)
                },
                true
            ),
            (0x8000_0B0D, Some(0))
        );
        // Real mode: no error code, or VM entry fails.
        assert_eq!(
            entry_event(
                Event::Exception {
                    vector: 13,
                    error_code: Some(0)
                },
                false
            ),
            (0x8000_030D, None)
        );
        // Vectors that push one always get one in protected mode.
        assert_eq!(
            entry_event(
                Event::Exception {
                    vector: 14,
                    error_code: None
                },
                true
            ),
            (0x8000_0B0E, Some(0))
        );
        assert_eq!(
            entry_event(
                Event::Exception {
                    vector: 6,
                    error_code: Some(5)
                },
                true
            ),
            (0x8000_0306, None)
        );
        assert_eq!(
            entry_event(Event::Interrupt { vector: 0x30 }, true),
            (0x8000_0030, None)
        );
        assert_eq!(entry_event(Event::Nmi, false), (0x8000_0202, None));
        assert_eq!(
            entry_event(
                Event::Exception {
                    vector: 14,
                    error_code: Some(0x8000_0007)
                },
                true
            ),
            (0x8000_0B0E, Some(7))
        );
    }

    #[test]
    fn requeue_of_interrupted_delivery() {
        assert_eq!(requeue(0x30), None);
        assert_eq!(
            requeue(0x8000_1B0E),
            Some(Requeue {
                info: 0x8000_0B0E,
                error_code: true,
                needs_instruction_len: false
            })
        );
        assert_eq!(
            requeue(0x8000_0480),
            Some(Requeue {
                info: 0x8000_0480,
                error_code: false,
                needs_instruction_len: true
            })
        );
    }

    fn modes(cr0_value: u64, cr4_value: u64, efer_value: u64) -> GuestModes {
        GuestModes {
            cr0: cr0_value,
            cr3: 0x1000,
            cr4: cr4_value,
            efer: efer_value,
            cs_l: false,
        }
    }

    #[test]
    fn cr0_long_mode_activation_and_exit() {
        // Linux's startup_32: PAE and LME set, then PG|PE|NE|... in one write.
        let m = modes(0x11, cr4::PAE, efer::LME);
        let u = mov_to_cr0(&m, 0x8005_0033).unwrap();
        assert_eq!(u.efer, efer::LME | efer::LMA);
        assert!(!u.load_pdptes && u.flush);
        // Without PAE: #GP.
        assert_eq!(mov_to_cr0(&modes(0x11, 0, efer::LME), 0x8000_0011), None);
        // Leaving long mode from compatibility mode.
        let m = modes(0x8000_0031, cr4::PAE, efer::LME | efer::LMA);
        let u = mov_to_cr0(&m, 0x31).unwrap();
        assert_eq!(u.efer, efer::LME);
        // ...but not from 64-bit mode.
        let m64 = GuestModes { cs_l: true, ..m };
        assert_eq!(mov_to_cr0(&m64, 0x31), None);
    }

    #[test]
    fn cr0_invalid_combinations() {
        let m = modes(0x11, 0, 0);
        assert_eq!(mov_to_cr0(&m, 0x8000_0000), None, "PG without PE");
        assert_eq!(mov_to_cr0(&m, 0x2000_0011), None, "NW without CD");
        assert_eq!(mov_to_cr0(&m, 1 << 32), None, "reserved high bits");
        let u = mov_to_cr0(&m, 0x31).unwrap();
        assert_eq!(u.cr0, 0x31);
        assert!(!u.flush && !u.load_pdptes);
        // Only NE changed: ET stays set, nothing else.
        assert_eq!(mov_to_cr0(&m, 0x21).unwrap().cr0, 0x31);
    }

    #[test]
    fn cr0_pae_paging_loads_pdptes() {
        let u = mov_to_cr0(&modes(0x11, cr4::PAE, 0), 0x8000_0031).unwrap();
        assert!(u.load_pdptes);
        assert_eq!(u.efer, 0);
    }

    #[test]
    fn cr4_rules() {
        let allowed = CrFixed::from_caps(&caps()).cr4_guest_allowed();
        let m = modes(0x8000_0031, cr4::PAE, efer::LME | efer::LMA);
        assert_eq!(
            mov_to_cr4(&m, cr4::PAE | cr4::VMXE, allowed),
            None,
            "VMXE hidden"
        );
        assert_eq!(mov_to_cr4(&m, 0, allowed), None, "PAE off in long mode");
        assert_eq!(
            mov_to_cr4(&m, cr4::PAE | cr4::LA57, allowed | cr4::LA57),
            None
        );
        let u = mov_to_cr4(&m, cr4::PAE | cr4::PGE, allowed).unwrap();
        assert!(u.flush && !u.load_pdptes);
        let m32 = modes(0x8000_0031, cr4::PAE, 0);
        let u = mov_to_cr4(&m32, cr4::PAE | cr4::PGE, allowed).unwrap();
        assert!(u.load_pdptes);
        assert_eq!(
            mov_to_cr4(&m32, cr4::PAE | cr4::PCIDE, allowed),
            None,
            "PCIDE outside long mode"
        );
    }

    #[test]
    fn cr3_rules() {
        let m = modes(0x8000_0031, cr4::PAE | cr4::PCIDE, efer::LME | efer::LMA);
        let u = mov_to_cr3(&m, (1 << 63) | 0x5000, 46).unwrap();
        assert_eq!(u.cr3, 0x5000);
        assert!(!u.flush && !u.load_pdptes);
        assert_eq!(mov_to_cr3(&m, 1 << 50, 46), None);
        let pae = modes(0x8000_0031, cr4::PAE, 0);
        let u = mov_to_cr3(&pae, 0x3020, 46).unwrap();
        assert!(u.flush && u.load_pdptes);
    }

    #[test]
    fn lmsw_and_clts() {
        assert_eq!(lmsw(0x11, 0xE), 0x1F);
        assert_eq!(lmsw(0x11, 0x0), 0x11, "LMSW cannot clear PE");
        assert_eq!(lmsw(0x8000_001B, 0x1), 0x8000_0011);
        assert_eq!(clts(0x8000_0039), 0x8000_0031);
    }

    #[test]
    fn ept_walk() {
        // PML4 at 0x1000 -> PDPT at 0x2000 -> PD at 0x3000: 2 MiB leaf for
        // GPA 0x20_0000 at HPA 0x4000_0000; 1 GiB leaf for GPA 1 GiB.
        let read = |pa: u64| -> u64 {
            match pa {
                0x1000 => 0x2000 | 7,
                0x2000 => 0x3000 | 7,
                0x2008 => 0x8000_0000 | 7 | (6 << 3) | (1 << 7),
                0x3008 => 0x4000_0000 | 7 | (6 << 3) | (1 << 7),
                0x3010 => 0xFEC0_0000 | 7 | (1 << 7),
                _ => 0,
            }
        };
        let eptp = 0x1000 | 6 | (3 << 3);
        assert_eq!(ept_translate(eptp, 0x20_1234, read), Some(0x4000_1234));
        assert_eq!(ept_translate(eptp, 0x4000_0020, read), Some(0x8000_0020));
        assert_eq!(ept_translate(eptp, 0x40_0000, read), None, "UC: not RAM");
        assert_eq!(ept_translate(eptp, 0x60_0000, read), None, "hole");
    }

    #[test]
    fn pdpte_checks() {
        assert!(pdptes_valid(&[0x1001, 0, 0x3001, 0], 46));
        assert!(!pdptes_valid(&[0x1003, 0, 0, 0], 46));
        assert!(!pdptes_valid(&[(1 << 63) | 1, 0, 0, 0], 46));
        assert!(
            pdptes_valid(&[(1 << 63) | 2, 0, 0, 0], 46),
            "not present: ignored"
        );
        assert_eq!(pdpt_gpa(0x1234_5FE8), 0x1234_5FE0);
    }

    /// A small fixed-capacity string for Display tests (the crate is no_std).
    struct Buf {
        bytes: [u8; 256],
        len: usize,
    }

    impl Buf {
        fn as_str(&self) -> &str {
            core::str::from_utf8(&self.bytes[..self.len]).unwrap()
        }
    }

    impl core::fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.len + s.len();
            if end > self.bytes.len() {
                return Err(core::fmt::Error);
            }
            self.bytes[self.len..end].copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }

    fn heapless_string() -> Buf {
        Buf {
            bytes: [0; 256],
            len: 0,
        }
    }
}
