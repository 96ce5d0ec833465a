//! The guest kernel: which boot module it is, its format, its command line, and the boot modules
//! a Multiboot kernel is given.

/// How the kernel boot module is loaded and entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// An ELF64 executable, loaded by its program headers and entered at `e_entry`.
    Elf64,
    /// A Multiboot (version 1) kernel, entered in 32-bit protected mode with EAX = 0x2BADB002.
    Multiboot1,
    /// A flat binary copied to `load_gpa` and entered at `entry_gpa` (both inside guest RAM).
    Raw {
        /// Guest-physical address the image is copied to.
        load_gpa: u64,
        /// Guest-physical address of the first instruction.
        entry_gpa: u64,
    },
    /// A Linux bzImage, booted through the 64-bit boot protocol.
    BzImage,
    /// An ELF kernel with a PVH entry note (e.g. Linux's `vmlinux`), entered in 32-bit protected
    /// mode with a PVH start-info structure.
    Pvh,
}

/// The guest kernel of one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelConfig {
    /// Name of the boot module holding the kernel image (as given to the bootloader).
    pub module: &'static str,
    /// Image format.
    pub kind: KernelKind,
    /// Kernel command line (no NUL bytes; may be empty).
    pub cmdline: &'static str,
}

/// Most boot modules one VM may list (the loader's limit too).
pub const MAX_MODULES: usize = 32;
/// Longest module string in bytes, without its NUL (the loader's limit too).
pub const MODULE_CMDLINE_MAX: usize = 1023;

/// One boot module a Multiboot kernel is given (listed in its Multiboot information).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleConfig {
    /// Name of the boot module holding its bytes (the first word of `cmdline`).
    pub name: &'static str,
    /// The module's string as the kernel sees it: its name, then its arguments, as written in the
    /// scenario (no NUL bytes).
    pub cmdline: &'static str,
}
