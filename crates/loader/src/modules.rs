//! Multiboot1 boot modules: their strings, and where their bytes go in guest
//! RAM (page-aligned, one after the other, from the first page above the
//! kernel and above 1 MiB, below 4 GiB).

use alloc::vec::Vec;
use core::fmt;

use vcpu::GuestMemError;

use crate::layout::HIGH_MEMORY;

/// One boot module for [`crate::load`]: its bytes and its string (the
/// Multiboot `string` field, conventionally its name then its arguments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module<'a> {
    pub data: &'a [u8],
    pub cmdline: &'a str,
}

/// Most modules one VM can be given.
pub const MAX_MODULES: usize = 32;
/// Longest module string in bytes, without its NUL.
pub const MODULE_CMDLINE_MAX: usize = 1023;
/// Modules start on page boundaries (Multiboot1 header flag 0 asks for it;
/// every module gets it).
pub const MODULE_ALIGN: u64 = 0x1000;
/// Modules (and the boot information placed after them) end at or below
/// the last page under 4 GiB: the Multiboot1 fields, `mod_end` included, are
/// 32 bits wide.
pub const MODULE_LIMIT: u64 = (1 << 32) - MODULE_ALIGN;

/// Why the boot modules cannot be given to the kernel. `index` counts the
/// modules from 0 in the order they were passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleError {
    /// More modules than [`MAX_MODULES`].
    TooMany { count: usize, max: usize },
    /// A module string longer than [`MODULE_CMDLINE_MAX`].
    CmdlineTooLong {
        index: usize,
        len: usize,
        max: usize,
    },
    /// A module string with a NUL byte, which would end it early.
    CmdlineHasNul { index: usize, offset: usize },
    /// The module's bytes do not fit between `start` and `limit` (the end
    /// of RAM below 4 GiB).
    DoesNotFit {
        index: usize,
        len: u64,
        start: u64,
        limit: u64,
    },
    /// Guest RAM refused a write the checks had allowed.
    Memory(GuestMemError),
}

impl fmt::Display for ModuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleError::TooMany { count, max } => {
                write!(f, "{count} boot modules, more than the {max} allowed")
            }
            ModuleError::CmdlineTooLong { index, len, max } => write!(
                f,
                "module {index}: string of {len} bytes is longer than the {max} allowed"
            ),
            ModuleError::CmdlineHasNul { index, offset } => {
                write!(f, "module {index}: string has a NUL byte at offset {offset}")
            }
            ModuleError::DoesNotFit {
                index,
                len,
                start,
                limit,
            } => write!(
                f,
                "module {index} of {len:#x} bytes does not fit in guest RAM: it would start at {start:#x} and RAM usable for modules ends at {limit:#x}"
            ),
            ModuleError::Memory(e) => write!(f, "writing a boot module failed: {e}"),
        }
    }
}

impl core::error::Error for ModuleError {}

/// Checks the count and every string, without placing anything.
pub(crate) fn check_strings(modules: &[Module<'_>]) -> Result<(), ModuleError> {
    if modules.len() > MAX_MODULES {
        return Err(ModuleError::TooMany {
            count: modules.len(),
            max: MAX_MODULES,
        });
    }
    for (index, m) in modules.iter().enumerate() {
        let len = m.cmdline.len();
        if len > MODULE_CMDLINE_MAX {
            return Err(ModuleError::CmdlineTooLong {
                index,
                len,
                max: MODULE_CMDLINE_MAX,
            });
        }
        if let Some(offset) = m.cmdline.bytes().position(|b| b == 0) {
            return Err(ModuleError::CmdlineHasNul { index, offset });
        }
    }
    Ok(())
}

/// `value` rounded up to a multiple of [`MODULE_ALIGN`], `None` on overflow.
pub(crate) fn page_up(value: u64) -> Option<u64> {
    value
        .checked_add(MODULE_ALIGN - 1)
        .map(|v| v & !(MODULE_ALIGN - 1))
}

/// Where each module goes: `start..end` per module, in order, the first on
/// the first page at or above both `kernel_end` and 1 MiB, each next one on
/// the first page after the previous one, all ending at or below `limit`.
pub(crate) fn place(
    modules: &[Module<'_>],
    kernel_end: u64,
    limit: u64,
) -> Result<Vec<(u64, u64)>, ModuleError> {
    let mut placed = Vec::with_capacity(modules.len());
    let mut next = page_up(kernel_end.max(HIGH_MEMORY));
    for (index, m) in modules.iter().enumerate() {
        let len = m.data.len() as u64;
        let does_not_fit = |start| ModuleError::DoesNotFit {
            index,
            len,
            start,
            limit,
        };
        let start = next.ok_or(does_not_fit(u64::MAX))?;
        let end = start
            .checked_add(len)
            .filter(|&end| end <= limit)
            .ok_or(does_not_fit(start))?;
        placed.push((start, end));
        next = page_up(end);
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn module<'a>(data: &'a [u8], cmdline: &'a str) -> Module<'a> {
        Module { data, cmdline }
    }

    #[test]
    fn modules_go_page_aligned_above_kernel_and_1_mib() {
        let a = [1u8; 0x1001];
        let b = [2u8; 3];
        let mods = [module(&a, "a"), module(&[], "empty"), module(&b, "b")];
        // A low kernel: the modules still start at 1 MiB.
        assert_eq!(
            place(&mods, 0x9000, 1 << 30).unwrap(),
            [
                (0x10_0000, 0x10_1001),
                (0x10_2000, 0x10_2000),
                (0x10_2000, 0x10_2003)
            ]
        );
        // A kernel ending mid-page: the next page.
        assert_eq!(
            place(&mods[2..], 0x20_0001, 1 << 30).unwrap(),
            [(0x20_1000, 0x20_1003)]
        );
        assert_eq!(place(&[], u64::MAX, 0).unwrap(), []);
    }

    #[test]
    fn a_module_that_does_not_fit_is_named() {
        let big = [0u8; 0x2000];
        let mods = [module(&[1], "small"), module(&big, "big")];
        let err = place(&mods, 0x10_0000, 0x10_2000).unwrap_err();
        assert_eq!(
            err,
            ModuleError::DoesNotFit {
                index: 1,
                len: 0x2000,
                start: 0x10_1000,
                limit: 0x10_2000
            }
        );
        assert!(err.to_string().starts_with("module 1 of 0x2000 bytes"));
        // Exactly up to the limit fits.
        place(&mods, 0x10_0000, 0x10_3000).unwrap();
        // A kernel ending near the top of the address space.
        for kernel_end in [u64::MAX, u64::MAX - 0x1000, MODULE_LIMIT] {
            assert!(matches!(
                place(&mods, kernel_end, MODULE_LIMIT),
                Err(ModuleError::DoesNotFit { index: 0, .. })
            ));
        }
    }

    #[test]
    fn strings_and_count_are_checked() {
        check_strings(&[module(&[], ""), module(&[], "x y z")]).unwrap();
        let longest = "m".repeat(MODULE_CMDLINE_MAX);
        check_strings(&[module(&[], &longest)]).unwrap();
        let long = "m".repeat(MODULE_CMDLINE_MAX + 1);
        assert_eq!(
            check_strings(&[module(&[], "ok"), module(&[], &long)]),
            Err(ModuleError::CmdlineTooLong {
                index: 1,
                len: 1024,
                max: 1023
            })
        );
        assert_eq!(
            check_strings(&[module(&[], "a\0b")]),
            Err(ModuleError::CmdlineHasNul {
                index: 0,
                offset: 1
            })
        );
        let many = [module(&[], "m"); MAX_MODULES + 1];
        assert_eq!(
            check_strings(&many),
            Err(ModuleError::TooMany { count: 33, max: 32 })
        );
        check_strings(&many[..MAX_MODULES]).unwrap();
    }
}
