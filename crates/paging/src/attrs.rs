//! What a mapping asks for: access rights, memory type, and which large page
//! sizes the CPU supports.

use core::fmt;

/// Access rights the guest gets to a mapped range.
///
/// Both formats need `read`: on EPT a writable or (without the execute-only
/// capability) executable entry that is not readable is a misconfiguration,
/// and an NPT entry that is present is always readable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Perms {
    /// Reads (and, on EPT, the guest's own page-table walks) are allowed.
    pub read: bool,
    /// Writes are allowed.
    pub write: bool,
    /// Instruction fetches are allowed.
    pub exec: bool,
}

impl Perms {
    /// Read only.
    pub const R: Self = Self {
        read: true,
        write: false,
        exec: false,
    };
    /// Read and write, no instruction fetch (device memory, data-only RAM).
    pub const RW: Self = Self {
        read: true,
        write: true,
        exec: false,
    };
    /// Read and execute (write-protected code or firmware).
    pub const RX: Self = Self {
        read: true,
        write: false,
        exec: true,
    };
    /// Everything (ordinary guest RAM).
    pub const RWX: Self = Self {
        read: true,
        write: true,
        exec: true,
    };
}

impl fmt::Display for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = |on: bool, c: char| if on { c } else { '-' };
        write!(
            f,
            "{}{}{}",
            flag(self.read, 'r'),
            flag(self.write, 'w'),
            flag(self.exec, 'x')
        )
    }
}

/// The host's memory type for a mapped range. The guest's own PAT still
/// combines with it (EPT leaves leave "ignore PAT" clear; NPT always combines).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemType {
    /// Write-back: RAM.
    WriteBack,
    /// Uncacheable: passed-through device registers.
    Uncacheable,
}

impl fmt::Display for MemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::WriteBack => "write-back",
            Self::Uncacheable => "uncacheable",
        })
    }
}

/// Large page sizes the CPU supports in second-level tables. 2 MiB pages are
/// always used; 1 GiB pages only when `huge_1g` is set (EPT: bit 17 of
/// `IA32_VMX_EPT_VPID_CAP`; NPT: CPUID 8000_0001h EDX bit 26; QEMU's `qemu64`
/// CPU has none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PageSizes {
    /// 1 GiB leaves may be used.
    pub huge_1g: bool,
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;

    use super::*;

    #[test]
    fn display() {
        assert_eq!(format!("{}", Perms::RWX), "rwx");
        assert_eq!(format!("{}", Perms::R), "r--");
        assert_eq!(format!("{}", Perms::RX), "r-x");
        assert_eq!(format!("{}", Perms::default()), "---");
        assert_eq!(format!("{}", MemType::Uncacheable), "uncacheable");
    }
}
