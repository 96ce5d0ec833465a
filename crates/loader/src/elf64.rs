//! Plain ELF64 kernels (`ET_EXEC`, x86_64) without a Multiboot header:
//! `PT_LOAD` segments at `p_paddr`, zeroed past `p_filesz`, entry `e_entry`.
//!
//! Quercus starts them exactly like Multiboot1 kernels (32-bit protected
//! mode, paging off, `EBX` = boot information), since the common ELF64
//! kernel is a Multiboot kernel whose 32-bit entry code switches to long mode
//! itself. The entry point must therefore be below 4 GiB.

use alloc::vec::Vec;
use core::fmt;

use crate::elf::{Class, ElfError, ElfFile};
use crate::segment::Segment;

/// Why an image is not a loadable ELF64 kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elf64Error {
    /// A valid 32-bit ELF where a 64-bit one was asked for.
    NotElf64,
    /// The ELF image is unusable.
    Elf(ElfError),
}

impl fmt::Display for Elf64Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Elf64Error::NotElf64 => write!(f, "kernel is a 32-bit ELF image, ELF64 was expected"),
            Elf64Error::Elf(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for Elf64Error {}

impl From<ElfError> for Elf64Error {
    fn from(e: ElfError) -> Self {
        Elf64Error::Elf(e)
    }
}

/// The ELF64 x86_64 executable `image` (headers checked, nothing planned).
pub(crate) fn parse(image: &[u8]) -> Result<ElfFile<'_>, Elf64Error> {
    let elf = ElfFile::parse(image)?;
    if elf.class != Class::Elf64 {
        return Err(Elf64Error::NotElf64);
    }
    Ok(elf)
}

/// The pieces of an ELF64 kernel and its physical entry point.
pub(crate) fn plan(image: &[u8]) -> Result<(Vec<Segment<'_>>, u64), Elf64Error> {
    Ok(parse(image)?.plan()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tests::build;

    #[test]
    fn accepts_64_bit_only() {
        let ph = [(1, 0x100, 0x10_0000, 0x10_0000, 4, 8)];
        let img = build(Class::Elf64, 0x10_0000, &ph, 0x200);
        let (segs, entry) = plan(&img).unwrap();
        assert_eq!((segs.len(), entry), (1, 0x10_0000));
        assert_eq!(
            plan(&build(Class::Elf32, 0x10_0000, &ph, 0x200)),
            Err(Elf64Error::NotElf64)
        );
        assert!(matches!(
            plan(b"MZ not elf at all"),
            Err(Elf64Error::Elf(ElfError::BadMagic { .. }))
        ));
    }
}
