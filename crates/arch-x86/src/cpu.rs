//! Plain CPU access: MSRs, control registers, TSC, halting, interrupt flag.

/// Reads a model-specific register.
///
/// # Safety
/// `msr` must exist on this CPU (reading an absent MSR raises #GP).
#[inline]
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; RDMSR touches no memory.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
/// `msr` must exist and `value` must be valid for it; the write must not break
/// invariants Rust code relies on (e.g. EFER, GS base of the per-CPU area).
#[inline]
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR and value are valid.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags));
    }
}

/// MSR numbers used by the arch tier.
pub mod msr {
    pub const IA32_APIC_BASE: u32 = 0x1B;
    pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
    pub const IA32_VMX_BASIC: u32 = 0x480;
    pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
    pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
    pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
    pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
    pub const IA32_EFER: u32 = 0xC000_0080;
    pub const IA32_GS_BASE: u32 = 0xC000_0101;
    pub const AMD_VM_CR: u32 = 0xC001_0114;
}

/// Reads the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC has no side effects and is always available on x86_64.
    unsafe {
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Reads CR0, CR2, CR3, CR4.
pub fn read_crs() -> [u64; 4] {
    let (cr0, cr2, cr3, cr4): (u64, u64, u64, u64);
    // SAFETY: reading control registers at CPL0 has no side effects.
    unsafe {
        core::arch::asm!("mov {}, cr0", "mov {}, cr2", "mov {}, cr3", "mov {}, cr4",
            out(reg) cr0, out(reg) cr2, out(reg) cr3, out(reg) cr4, options(nomem, nostack, preserves_flags));
    }
    [cr0, cr2, cr3, cr4]
}

/// DR6's single-step bit (BS).
pub const DR6_BS: u64 = 1 << 14;
/// DR6 with no debug condition recorded (its reserved bits read as 1).
pub const DR6_CLEAR: u64 = 0xFFFF_0FF0;

/// Reads DR6.
pub fn read_dr6() -> u64 {
    let v: u64;
    // SAFETY: reading a debug register at CPL0 has no side effects.
    unsafe {
        core::arch::asm!("mov {}, dr6", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Clears the debug conditions DR6 records.
pub fn clear_dr6() {
    // SAFETY: the host uses no debug registers; DR6 only reports conditions.
    unsafe {
        core::arch::asm!("mov dr6, {}", in(reg) DR6_CLEAR, options(nomem, nostack, preserves_flags))
    };
}

/// Halts this CPU for good with interrupts off (NMIs still wake it: loop).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: cli; hlt only stops this CPU.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Waits for the next interrupt with interrupts enabled, then disables them again.
pub fn wait_for_interrupt() {
    // SAFETY: sti; hlt is atomic with respect to interrupt delivery (STI shadow);
    // handlers run on IST stacks and return here.
    unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}

/// Halts with maskable interrupts off: only an NMI (or INIT/SMI) wakes this CPU.
pub fn wait_for_nmi() {
    // SAFETY: cli; hlt only stops this CPU until the next NMI, whose handler returns here.
    unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
}

/// Disables maskable interrupts on this CPU.
#[inline]
pub fn disable_interrupts() {
    // SAFETY: clearing IF has no memory effect.
    unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
}

/// Lets an interrupt that is already pending be taken, then masks again.
pub fn wait_for_interrupt_pending() {
    // SAFETY: sti; nop; cli opens a one-instruction window for a pending
    // interrupt; handlers run on IST stacks and return here.
    unsafe { core::arch::asm!("sti", "nop", "cli", options(nomem, nostack)) };
}

/// Executes CPUID with `leaf` and `subleaf`: [EAX, EBX, ECX, EDX].
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = raw_cpuid::cpuid!(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// XCR0 components Quercus lets guests enable, as the CPU reports them
/// (CPUID 0xD.0 EDX:EAX); 0 without XSAVE.
pub fn xcr0_supported() -> u64 {
    if cpuid(1, 0)[2] & (1 << 26) == 0 {
        return 0;
    }
    let [eax, _, _, edx] = cpuid(0xD, 0);
    (u64::from(edx) << 32) | u64::from(eax)
}

/// Turns on CR4.OSXSAVE (when the CPU has XSAVE) so that guests' XSETBV can be
/// emulated on this pCPU; the host itself keeps saving only x87/SSE state.
pub fn enable_xsave() {
    if xcr0_supported() == 0 {
        return;
    }
    // SAFETY: setting CR4.OSXSAVE on a CPU with XSAVE only enables the
    // XGETBV/XSETBV instructions; XCR0 stays at its reset value (x87).
    unsafe {
        core::arch::asm!("mov {t}, cr4", "or {t}, {bit}", "mov cr4, {t}",
            t = out(reg) _, bit = const 1u64 << 18, options(nomem, nostack));
    }
}

/// Sets XCR0 on this pCPU.
///
/// # Safety
/// CR4.OSXSAVE must be on and `value` valid for this CPU (bit 0 set, only
/// supported components, AVX only with SSE): otherwise #GP.
pub unsafe fn xsetbv(value: u64) {
    // SAFETY: the caller guarantees the value is valid.
    unsafe {
        core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nomem, nostack));
    }
}

/// A 512-byte FXSAVE area (guest and host x87/SSE state around VM entries).
#[repr(C, align(16))]
pub struct FxArea([u8; 512]);

impl Default for FxArea {
    fn default() -> Self {
        Self::new()
    }
}

impl FxArea {
    pub const fn new() -> Self {
        FxArea([0; 512])
    }

    /// The power-on x87/SSE state: FCW 0x037F, MXCSR 0x1F80.
    pub fn set_default(&mut self) {
        self.0[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
        self.0[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
        self.0[28..32].copy_from_slice(&0xFFFFu32.to_le_bytes());
    }
}

/// The CPU's random-number instructions, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HwRandom {
    /// RDSEED (CPUID.7.0:EBX bit 18): entropy straight from the conditioner.
    Rdseed,
    /// RDRAND (CPUID.1:ECX bit 30): a DRBG reseeded by the hardware source.
    Rdrand,
}

/// Which random-number instruction this CPU has, if any.
pub fn hw_random() -> Option<HwRandom> {
    let max = cpuid(0, 0)[0];
    if max >= 7 && cpuid(7, 0)[1] & (1 << 18) != 0 {
        Some(HwRandom::Rdseed)
    } else if cpuid(1, 0)[2] & (1 << 30) != 0 {
        Some(HwRandom::Rdrand)
    } else {
        None
    }
}

/// One 64-bit value from `kind`, retrying a few times while the
/// instruction reports no data (CF = 0, its source is momentarily empty).
pub fn hw_random_u64(kind: HwRandom) -> Option<u64> {
    for _ in 0..16 {
        let value: u64;
        let ok: u8;
        match kind {
            // SAFETY: RDSEED only writes its destination and the flags; the
            // caller found the instruction in CPUID (hw_random).
            HwRandom::Rdseed => unsafe {
                core::arch::asm!("rdseed {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok, options(nomem, nostack))
            },
            // SAFETY: as above, for RDRAND.
            HwRandom::Rdrand => unsafe {
                core::arch::asm!("rdrand {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok, options(nomem, nostack))
            },
        }
        if ok != 0 {
            return Some(value);
        }
        core::hint::spin_loop();
    }
    None
}
