//! ELF executables (32- and 64-bit, little-endian): the file header, the
//! program headers, the `PT_LOAD` segments as pieces placed by physical
//! address (`p_paddr`), and the file bytes of the `PT_NOTE` segments.

use alloc::vec::Vec;
use core::fmt;

use crate::bytes::{slice, u16_at, u32_at, u64_at};
use crate::segment::Segment;

const ELF_MAGIC: [u8; 4] = [0x7F, b'E', b'L', b'F'];
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EV_CURRENT: u8 = 1;
const ET_EXEC: u16 = 2;
const PT_LOAD: u32 = 1;
pub(crate) const PT_NOTE: u32 = 4;
/// `e_machine` of 32-bit x86.
pub(crate) const EM_386: u16 = 3;
/// `e_machine` of x86_64.
pub(crate) const EM_X86_64: u16 = 62;

/// ELF word size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Elf32,
    Elf64,
}

impl Class {
    fn header_size(self) -> usize {
        match self {
            Class::Elf32 => 52,
            Class::Elf64 => 64,
        }
    }

    fn phdr_size(self) -> u16 {
        match self {
            Class::Elf32 => 32,
            Class::Elf64 => 56,
        }
    }
}

/// Why an image is not a loadable ELF executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// The image ends before the field that was being read.
    TooShort { len: usize, need: usize },
    /// The first four bytes are not `\x7fELF`.
    BadMagic { found: [u8; 4] },
    /// `EI_CLASS` is neither 32- nor 64-bit.
    BadClass { class: u8 },
    /// `EI_DATA` is not little-endian.
    NotLittleEndian { data: u8 },
    /// `EI_VERSION` is not 1.
    BadVersion { version: u8 },
    /// `e_type` is not `ET_EXEC`.
    NotExecutable { e_type: u16 },
    /// `e_machine` does not match the class (x86 for 32-bit, x86_64 for 64-bit).
    WrongMachine { machine: u16, expected: u16 },
    /// `e_phentsize` is smaller than a program header of this class.
    PhentsizeTooSmall { phentsize: u16, min: u16 },
    /// The program header table does not lie inside the file.
    ProgramHeadersOutsideFile {
        phoff: u64,
        phnum: u16,
        phentsize: u16,
        file_len: usize,
    },
    /// A segment's file bytes do not lie inside the file.
    SegmentOutsideFile {
        index: u16,
        offset: u64,
        filesz: u64,
        file_len: usize,
    },
    /// A segment has more file bytes than memory bytes.
    FileSizeExceedsMemSize { index: u16, filesz: u64, memsz: u64 },
    /// No `PT_LOAD` segment with a non-zero size.
    NoLoadSegments,
    /// `e_entry` lies in no segment's file bytes, physically or virtually.
    EntryNotLoaded { entry: u64 },
    /// The physical entry point cannot be reached from 32-bit protected mode.
    EntryAbove4GiB { entry: u64 },
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::TooShort { len, need } => {
                write!(f, "ELF image of {len} bytes is too short: {need} needed")
            }
            ElfError::BadMagic { found } => write!(f, "not an ELF image (magic {found:02x?})"),
            ElfError::BadClass { class } => write!(f, "unknown ELF class {class}"),
            ElfError::NotLittleEndian { data } => {
                write!(f, "ELF data encoding {data} is not little-endian")
            }
            ElfError::BadVersion { version } => write!(f, "unknown ELF version {version}"),
            ElfError::NotExecutable { e_type } => {
                write!(f, "ELF type {e_type} is not an executable (ET_EXEC = 2)")
            }
            ElfError::WrongMachine { machine, expected } => {
                write!(f, "ELF machine {machine} where {expected} was expected")
            }
            ElfError::PhentsizeTooSmall { phentsize, min } => {
                write!(f, "program header size {phentsize} is below the {min} bytes of this class")
            }
            ElfError::ProgramHeadersOutsideFile {
                phoff,
                phnum,
                phentsize,
                file_len,
            } => write!(
                f,
                "{phnum} program headers of {phentsize} bytes at offset {phoff:#x} do not fit in the {file_len}-byte file"
            ),
            ElfError::SegmentOutsideFile {
                index,
                offset,
                filesz,
                file_len,
            } => write!(
                f,
                "segment {index}: {filesz:#x} bytes at offset {offset:#x} do not fit in the {file_len}-byte file"
            ),
            ElfError::FileSizeExceedsMemSize {
                index,
                filesz,
                memsz,
            } => write!(
                f,
                "segment {index}: p_filesz {filesz:#x} exceeds p_memsz {memsz:#x}"
            ),
            ElfError::NoLoadSegments => write!(f, "ELF image has no loadable segment"),
            ElfError::EntryNotLoaded { entry } => {
                write!(f, "entry point {entry:#x} lies in no loaded segment")
            }
            ElfError::EntryAbove4GiB { entry } => write!(
                f,
                "entry point {entry:#x} is above 4 GiB, out of reach of 32-bit protected mode"
            ),
        }
    }
}

impl core::error::Error for ElfError {}

/// One program header, widened to 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ProgramHeader {
    p_type: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

/// The file bytes of one `PT_NOTE` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NoteSegment<'a> {
    /// Index of its program header.
    pub index: u16,
    /// `p_offset`.
    pub offset: u64,
    /// `p_align`.
    pub align: u64,
    /// The `p_filesz` bytes at `p_offset`.
    pub data: &'a [u8],
}

/// A parsed ELF executable header over its image.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ElfFile<'a> {
    image: &'a [u8],
    pub class: Class,
    entry: u64,
    phoff: u64,
    phentsize: u16,
    phnum: u16,
}

fn short(image: &[u8], need: usize) -> ElfError {
    ElfError::TooShort {
        len: image.len(),
        need,
    }
}

/// Whether `image` starts with the ELF magic.
pub(crate) fn is_elf(image: &[u8]) -> bool {
    image.starts_with(&ELF_MAGIC)
}

impl<'a> ElfFile<'a> {
    /// Parses and checks the file header and the program header table's
    /// bounds; `e_machine` must fit the class.
    pub(crate) fn parse(image: &'a [u8]) -> Result<Self, ElfError> {
        let ident = image.get(..16).ok_or(short(image, 16))?;
        if ident[..4] != ELF_MAGIC {
            return Err(ElfError::BadMagic {
                found: [ident[0], ident[1], ident[2], ident[3]],
            });
        }
        let class = match ident[4] {
            ELFCLASS32 => Class::Elf32,
            ELFCLASS64 => Class::Elf64,
            class => return Err(ElfError::BadClass { class }),
        };
        if ident[5] != ELFDATA2LSB {
            return Err(ElfError::NotLittleEndian { data: ident[5] });
        }
        if ident[6] != EV_CURRENT {
            return Err(ElfError::BadVersion { version: ident[6] });
        }
        let need = class.header_size();
        if image.len() < need {
            return Err(short(image, need));
        }
        // The header is in bounds, so the fixed-offset reads below succeed;
        // `unwrap_or(0)` only keeps them panic-free.
        let half = |off| u16_at(image, off).unwrap_or(0);
        let e_type = half(16);
        let machine = half(18);
        let (entry, phoff, phentsize, phnum) = match class {
            Class::Elf32 => (
                u64::from(u32_at(image, 24).unwrap_or(0)),
                u64::from(u32_at(image, 28).unwrap_or(0)),
                half(42),
                half(44),
            ),
            Class::Elf64 => (
                u64_at(image, 24).unwrap_or(0),
                u64_at(image, 32).unwrap_or(0),
                half(54),
                half(56),
            ),
        };
        if e_type != ET_EXEC {
            return Err(ElfError::NotExecutable { e_type });
        }
        let expected = match class {
            Class::Elf32 => EM_386,
            Class::Elf64 => EM_X86_64,
        };
        if machine != expected {
            return Err(ElfError::WrongMachine { machine, expected });
        }
        if phnum > 0 && phentsize < class.phdr_size() {
            return Err(ElfError::PhentsizeTooSmall {
                phentsize,
                min: class.phdr_size(),
            });
        }
        let table_len = u64::from(phnum) * u64::from(phentsize);
        if slice(image, phoff, table_len).is_none() {
            return Err(ElfError::ProgramHeadersOutsideFile {
                phoff,
                phnum,
                phentsize,
                file_len: image.len(),
            });
        }
        Ok(ElfFile {
            image,
            class,
            entry,
            phoff,
            phentsize,
            phnum,
        })
    }

    /// Program header `index` (< `phnum`, whose table `parse` bounds-checked).
    fn program_header(&self, index: u16) -> ProgramHeader {
        let base = self.phoff + u64::from(index) * u64::from(self.phentsize);
        let ph = slice(self.image, base, u64::from(self.class.phdr_size())).unwrap_or(&[]);
        let w = |off| u64::from(u32_at(ph, off).unwrap_or(0));
        let x = |off| u64_at(ph, off).unwrap_or(0);
        match self.class {
            Class::Elf32 => ProgramHeader {
                p_type: u32_at(ph, 0).unwrap_or(0),
                offset: w(4),
                vaddr: w(8),
                paddr: w(12),
                filesz: w(16),
                memsz: w(20),
                align: w(28),
            },
            Class::Elf64 => ProgramHeader {
                p_type: u32_at(ph, 0).unwrap_or(0),
                offset: x(8),
                vaddr: x(16),
                paddr: x(24),
                filesz: x(32),
                memsz: x(40),
                align: x(48),
            },
        }
    }

    /// The non-empty `PT_LOAD` segments as pieces at their physical
    /// addresses, with their virtual addresses beside them.
    fn load_headers(&self) -> Result<Vec<(Segment<'a>, u64)>, ElfError> {
        let mut out = Vec::new();
        for index in 0..self.phnum {
            let ph = self.program_header(index);
            if ph.p_type != PT_LOAD || ph.memsz == 0 {
                continue;
            }
            if ph.filesz > ph.memsz {
                return Err(ElfError::FileSizeExceedsMemSize {
                    index,
                    filesz: ph.filesz,
                    memsz: ph.memsz,
                });
            }
            let data = self.file_bytes(index, &ph)?;
            out.push((
                Segment {
                    gpa: ph.paddr,
                    data,
                    mem_size: ph.memsz,
                },
                ph.vaddr,
            ));
        }
        if out.is_empty() {
            return Err(ElfError::NoLoadSegments);
        }
        Ok(out)
    }

    /// The non-empty `PT_LOAD` segments as pieces at their physical
    /// addresses, `e_entry` left unchecked (for loaders that take the entry
    /// point from elsewhere).
    /// The file bytes of program header `index`.
    fn file_bytes(&self, index: u16, ph: &ProgramHeader) -> Result<&'a [u8], ElfError> {
        slice(self.image, ph.offset, ph.filesz).ok_or(ElfError::SegmentOutsideFile {
            index,
            offset: ph.offset,
            filesz: ph.filesz,
            file_len: self.image.len(),
        })
    }

    pub(crate) fn load_segments(&self) -> Result<Vec<Segment<'a>>, ElfError> {
        Ok(self.load_headers()?.into_iter().map(|(s, _)| s).collect())
    }

    /// The file bytes of every `PT_NOTE` segment, in program header order.
    pub(crate) fn note_segments(&self) -> Result<Vec<NoteSegment<'a>>, ElfError> {
        let mut out = Vec::new();
        for index in 0..self.phnum {
            let ph = self.program_header(index);
            if ph.p_type != PT_NOTE {
                continue;
            }
            let data = self.file_bytes(index, &ph)?;
            out.push(NoteSegment {
                index,
                offset: ph.offset,
                align: ph.align,
                data,
            });
        }
        Ok(out)
    }

    /// The pieces to load and the physical entry point.
    ///
    /// `e_entry` is taken as physical if it lies in a segment's file bytes
    /// at `p_paddr`; otherwise, if it lies in a segment's file bytes at
    /// `p_vaddr`, it is moved to the same offset from `p_paddr` (kernels
    /// linked high but loaded low). It must end below 4 GiB.
    pub(crate) fn plan(&self) -> Result<(Vec<Segment<'a>>, u64), ElfError> {
        let headers = self.load_headers()?;
        let entry = self.entry;
        let physical = headers
            .iter()
            .find(|(s, _)| s.holds_code_at(entry))
            .map(|_| entry)
            .or_else(|| {
                headers.iter().find_map(|(s, vaddr)| {
                    let off = entry.checked_sub(*vaddr)?;
                    if off < s.data.len() as u64 {
                        s.gpa.checked_add(off)
                    } else {
                        None
                    }
                })
            })
            .ok_or(ElfError::EntryNotLoaded { entry })?;
        if physical > u64::from(u32::MAX) {
            return Err(ElfError::EntryAbove4GiB { entry: physical });
        }
        Ok((headers.into_iter().map(|(s, _)| s).collect(), physical))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;

    /// One program header for [`build`]: `(type, offset, vaddr, paddr, filesz, memsz)`.
    pub(crate) type Ph = (u32, u64, u64, u64, u64, u64);

    /// An ELF executable of `class` with `phdrs` at offset 0x40 (or 0x34)
    /// and `len` bytes in all; segment contents are left to the caller.
    pub(crate) fn build(class: Class, entry: u64, phdrs: &[Ph], len: usize) -> Vec<u8> {
        let mut img = vec![0u8; len];
        img[..4].copy_from_slice(&ELF_MAGIC);
        img[5] = ELFDATA2LSB;
        img[6] = EV_CURRENT;
        img[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        let hsize = class.header_size();
        match class {
            Class::Elf32 => {
                img[4] = ELFCLASS32;
                img[18..20].copy_from_slice(&EM_386.to_le_bytes());
                img[24..28].copy_from_slice(&(entry as u32).to_le_bytes());
                img[28..32].copy_from_slice(&(hsize as u32).to_le_bytes());
                img[42..44].copy_from_slice(&32u16.to_le_bytes());
                img[44..46].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
                for (i, p) in phdrs.iter().enumerate() {
                    let b = hsize + 32 * i;
                    let f = [p.0 as u64, p.1, p.2, p.3, p.4, p.5];
                    for (j, v) in f.iter().enumerate() {
                        img[b + 4 * j..b + 4 * j + 4].copy_from_slice(&(*v as u32).to_le_bytes());
                    }
                }
            }
            Class::Elf64 => {
                img[4] = ELFCLASS64;
                img[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
                img[24..32].copy_from_slice(&entry.to_le_bytes());
                img[32..40].copy_from_slice(&(hsize as u64).to_le_bytes());
                img[54..56].copy_from_slice(&56u16.to_le_bytes());
                img[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
                for (i, p) in phdrs.iter().enumerate() {
                    let b = hsize + 56 * i;
                    img[b..b + 4].copy_from_slice(&p.0.to_le_bytes());
                    for (j, v) in [p.1, p.2, p.3, p.4, p.5].iter().enumerate() {
                        img[b + 8 + 8 * j..b + 16 + 8 * j].copy_from_slice(&v.to_le_bytes());
                    }
                }
            }
        }
        img
    }

    #[test]
    fn plans_segments_and_physical_entry() {
        for class in [Class::Elf32, Class::Elf64] {
            let img = build(
                class,
                0x10_0010,
                &[
                    (PT_LOAD, 0x100, 0x10_0000, 0x10_0000, 0x20, 0x20),
                    (4, 0, 0, 0, 0, 0),
                    (PT_LOAD, 0x120, 0x20_0000, 0x20_0000, 0x10, 0x1000),
                ],
                0x200,
            );
            let elf = ElfFile::parse(&img).unwrap();
            assert_eq!(elf.class, class);
            let (segs, entry) = elf.plan().unwrap();
            assert_eq!(entry, 0x10_0010);
            assert_eq!(segs.len(), 2);
            assert_eq!(segs[1].gpa, 0x20_0000);
            assert_eq!(segs[1].data.len(), 0x10);
            assert_eq!(segs[1].mem_size, 0x1000);
        }
    }

    #[test]
    fn virtual_entry_moves_to_physical() {
        let img = build(
            Class::Elf64,
            0xFFFF_FFFF_8000_0004,
            &[(PT_LOAD, 0x100, 0xFFFF_FFFF_8000_0000, 0x10_0000, 0x10, 0x10)],
            0x200,
        );
        let (_, entry) = ElfFile::parse(&img).unwrap().plan().unwrap();
        assert_eq!(entry, 0x10_0004);
    }

    #[test]
    fn hostile_headers() {
        let good = build(
            Class::Elf64,
            0x10_0000,
            &[(PT_LOAD, 0x100, 0, 0x10_0000, 4, 4)],
            0x200,
        );
        assert_eq!(
            ElfFile::parse(&good[..10]).unwrap_err(),
            ElfError::TooShort { len: 10, need: 16 }
        );
        assert_eq!(
            ElfFile::parse(&good[..40]).unwrap_err(),
            ElfError::TooShort { len: 40, need: 64 }
        );
        let mut bad = good.clone();
        bad[0] = 0;
        assert!(matches!(
            ElfFile::parse(&bad),
            Err(ElfError::BadMagic { .. })
        ));
        let mut bad = good.clone();
        bad[4] = 3;
        assert_eq!(
            ElfFile::parse(&bad).unwrap_err(),
            ElfError::BadClass { class: 3 }
        );
        let mut bad = good.clone();
        bad[5] = 2;
        assert_eq!(
            ElfFile::parse(&bad).unwrap_err(),
            ElfError::NotLittleEndian { data: 2 }
        );
        let mut bad = good.clone();
        bad[16] = 3;
        assert_eq!(
            ElfFile::parse(&bad).unwrap_err(),
            ElfError::NotExecutable { e_type: 3 }
        );
        let mut bad = good.clone();
        bad[18] = 3;
        assert_eq!(
            ElfFile::parse(&bad).unwrap_err(),
            ElfError::WrongMachine {
                machine: 3,
                expected: 62
            }
        );
        // phoff past the end, and a phoff that wraps when the table is added.
        for phoff in [0x200u64, u64::MAX - 8] {
            let mut bad = good.clone();
            bad[32..40].copy_from_slice(&phoff.to_le_bytes());
            assert!(matches!(
                ElfFile::parse(&bad),
                Err(ElfError::ProgramHeadersOutsideFile { .. })
            ));
        }
        // phnum * phentsize beyond the file.
        let mut bad = good.clone();
        bad[56..58].copy_from_slice(&0xFFFFu16.to_le_bytes());
        bad[54..56].copy_from_slice(&0xFFFFu16.to_le_bytes());
        assert!(matches!(
            ElfFile::parse(&bad),
            Err(ElfError::ProgramHeadersOutsideFile { .. })
        ));
        let mut bad = good.clone();
        bad[54..56].copy_from_slice(&8u16.to_le_bytes());
        assert_eq!(
            ElfFile::parse(&bad).unwrap_err(),
            ElfError::PhentsizeTooSmall {
                phentsize: 8,
                min: 56
            }
        );
    }

    #[test]
    fn hostile_segments() {
        let plan = |phdrs: &[Ph]| {
            let img = build(Class::Elf64, 0x10_0000, phdrs, 0x200);
            ElfFile::parse(&img).and_then(|e| e.plan().map(|(_, entry)| entry))
        };
        assert_eq!(
            plan(&[(PT_LOAD, 0x100, 0, 0x10_0000, 0x20, 0x10)]),
            Err(ElfError::FileSizeExceedsMemSize {
                index: 0,
                filesz: 0x20,
                memsz: 0x10
            })
        );
        assert!(matches!(
            plan(&[(PT_LOAD, 0x1F0, 0, 0x10_0000, 0x20, 0x20)]),
            Err(ElfError::SegmentOutsideFile { index: 0, .. })
        ));
        assert!(matches!(
            plan(&[(PT_LOAD, u64::MAX, 0, 0x10_0000, 2, 2)]),
            Err(ElfError::SegmentOutsideFile { .. })
        ));
        assert_eq!(
            plan(&[(4, 0x100, 0, 0x10_0000, 2, 2)]),
            Err(ElfError::NoLoadSegments)
        );
        assert_eq!(plan(&[]), Err(ElfError::NoLoadSegments));
        assert_eq!(
            plan(&[(PT_LOAD, 0x100, 0, 0x20_0000, 2, 2)]),
            Err(ElfError::EntryNotLoaded { entry: 0x10_0000 })
        );
        // Entry in the zeroed tail (bss) is not code.
        assert_eq!(
            plan(&[(PT_LOAD, 0x100, 0, 0xF_FFF0, 0x10, 0x100)]),
            Err(ElfError::EntryNotLoaded { entry: 0x10_0000 })
        );
        let img = build(
            Class::Elf64,
            0x1_0000_0000,
            &[(PT_LOAD, 0x100, 0, 0x1_0000_0000, 2, 2)],
            0x200,
        );
        assert_eq!(
            ElfFile::parse(&img).unwrap().plan().map(|(_, e)| e),
            Err(ElfError::EntryAbove4GiB {
                entry: 0x1_0000_0000
            })
        );
    }
}
