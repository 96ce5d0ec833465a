//! What a kernel file is, read from its bytes: Multiboot1/2 headers, ELF class and machine, a Xen
//! PVH entry note, the Linux bzImage header; and, for files that are none of those, what they look
//! like (compressed data, a cpio archive, a file system, a PE executable) so that the error says so.

use crate::words::KernelType;

/// Multiboot1 header magic, searched on 4-byte boundaries in the first [`MB1_SEARCH`] bytes.
const MB1_MAGIC: u32 = 0x1BAD_B002;
const MB1_SEARCH: usize = 8192;
/// Multiboot2 header magic, searched on 8-byte boundaries in the first [`MB2_SEARCH`] bytes.
const MB2_MAGIC: u32 = 0xE852_50D6;
const MB2_SEARCH: usize = 32768;
/// `e_machine` of x86-64 and of i386.
const EM_X86_64: u16 = 62;
const EM_386: u16 = 3;
/// `p_type` of a note segment.
const PT_NOTE: u32 = 4;
/// Note type of the PVH entry point (name "Xen").
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Most program headers read (a hostile count is not followed further).
const MAX_PHDRS: usize = 512;

/// An ELF file's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfInfo {
    /// ELFCLASS64 (else 32-bit).
    pub class64: bool,
    /// `e_machine`.
    pub machine: u16,
    /// Has a `Xen` note of type 18 (the PVH 32-bit entry point).
    pub pvh: bool,
}

/// What the bytes of a kernel file show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Detected {
    /// A valid Multiboot1 header (magic and checksum) in the first 8 KiB.
    pub multiboot1: bool,
    /// A valid Multiboot2 header in the first 32 KiB.
    pub multiboot2: bool,
    /// The ELF identity, when the file starts with `\x7fELF`.
    pub elf: Option<ElfInfo>,
    /// The Linux boot protocol's setup header (`HdrS` at 0x202).
    pub bzimage: bool,
}

impl Detected {
    /// Reads `image`; never panics, whatever the bytes.
    pub fn of(image: &[u8]) -> Self {
        Self {
            multiboot1: multiboot1(image),
            multiboot2: multiboot2(image),
            elf: elf(image),
            bzimage: image.get(0x202..0x206) == Some(b"HdrS"),
        }
    }

    fn elf64_x86(&self) -> bool {
        self.elf
            .is_some_and(|e| e.class64 && e.machine == EM_X86_64)
    }

    fn pvh(&self) -> bool {
        self.elf.is_some_and(|e| e.pvh)
    }

    /// The type the file is booted as when the scenario gives none: a bzImage as `bzimage`, a
    /// Multiboot1 header as `multiboot` (the kernel asks for it), an x86-64 ELF64 with a PVH note
    /// as `pvh`, another x86-64 ELF64 as `elf64`. `None` for anything else.
    pub fn kernel_type(&self) -> Option<KernelType> {
        if self.bzimage {
            Some(KernelType::BzImage)
        } else if self.multiboot1 {
            Some(KernelType::Multiboot)
        } else if self.elf64_x86() && self.pvh() {
            Some(KernelType::Pvh)
        } else if self.elf64_x86() && !self.multiboot2 {
            Some(KernelType::Elf64)
        } else {
            None
        }
    }

    /// Whether a file like this can be booted as `kind` (a raw binary can be anything).
    pub fn fits(&self, kind: KernelType) -> bool {
        match kind {
            KernelType::BzImage => self.bzimage,
            KernelType::Multiboot => self.multiboot1,
            KernelType::Pvh => self.pvh(),
            KernelType::Elf64 => self.elf64_x86(),
            KernelType::Raw => true,
        }
    }

    /// What the file is, for messages: "a Linux bzImage", "an x86-64 ELF64 executable with a
    /// Multiboot1 header", ...
    pub fn describe(&self, image: &[u8]) -> String {
        let mut what = if self.bzimage {
            "a Linux bzImage".to_owned()
        } else if let Some(elf) = self.elf {
            let class = if elf.class64 { "ELF64" } else { "ELF32" };
            let machine = match elf.machine {
                EM_X86_64 => "an x86-64".to_owned(),
                EM_386 => "an i386".to_owned(),
                other => format!("a non-x86 (e_machine {other})"),
            };
            format!("{machine} {class} file")
        } else if self.multiboot1 || self.multiboot2 {
            "a binary".to_owned()
        } else {
            return unknown(image);
        };
        let mut parts = Vec::new();
        if self.multiboot1 {
            parts.push("a Multiboot1 header");
        }
        if self.multiboot2 {
            parts.push("a Multiboot2 header");
        }
        if self.pvh() {
            parts.push("a Xen PVH entry note");
        }
        if !parts.is_empty() {
            what += " with ";
            what += &parts.join(" and ");
        }
        if self.multiboot2 && !self.multiboot1 && self.kernel_type().is_none() {
            what +=
                " (Quercus gives guests Multiboot1 information: add a Multiboot1 header, or set \
                     type = \"elf64\" if the kernel does not need Multiboot2 information)";
        } else if let Some(elf) = self.elf.filter(|_| self.kernel_type().is_none()) {
            if !elf.class64 && elf.machine != EM_X86_64 {
                what += " (a 32-bit ELF boots only through a Multiboot1 header)";
            }
        }
        what
    }
}

/// "empty", "gzip-compressed data (an initramfs?)", ... for a file that is no kernel.
fn unknown(image: &[u8]) -> String {
    let starts = |magic: &[u8]| image.starts_with(magic);
    let guess = if image.is_empty() {
        return "the file is empty".to_owned();
    } else if starts(&[0x1F, 0x8B]) {
        "gzip-compressed data (an initramfs or a compressed kernel? give Quercus the uncompressed \
         kernel; an initramfs belongs in initrd_file)"
    } else if starts(&[0xFD, b'7', b'z', b'X', b'Z', 0]) {
        "XZ-compressed data (give Quercus the uncompressed kernel)"
    } else if starts(&[0x28, 0xB5, 0x2F, 0xFD]) {
        "zstd-compressed data (give Quercus the uncompressed kernel)"
    } else if starts(b"070701") || starts(b"070702") {
        "a cpio archive (an initramfs belongs in initrd_file)"
    } else if image.get(1080..1082) == Some(&[0x53, 0xEF]) {
        "an ext2/3/4 file system (a disk image belongs in a [[vm.virtio]] blk device's file)"
    } else if starts(b"MZ") {
        "a PE/EFI executable without a Linux setup header (EFI applications are not booted)"
    } else if starts(b"#!")
        || image
            .iter()
            .take(512)
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        "text, not a binary"
    } else {
        "no known header"
    };
    let head: Vec<String> = image.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{guess}; it starts with {}", head.join(" "))
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn multiboot1(image: &[u8]) -> bool {
    let end = image.len().min(MB1_SEARCH);
    (0..end.saturating_sub(11)).step_by(4).any(|off| {
        let word = |i: usize| u32_at(image, off + 4 * i).unwrap_or(0);
        word(0) == MB1_MAGIC && word(0).wrapping_add(word(1)).wrapping_add(word(2)) == 0
    })
}

fn multiboot2(image: &[u8]) -> bool {
    let end = image.len().min(MB2_SEARCH);
    (0..end.saturating_sub(15)).step_by(8).any(|off| {
        let word = |i: usize| u32_at(image, off + 4 * i).unwrap_or(0);
        word(0) == MB2_MAGIC
            && word(1) == 0 // i386 protected mode
            && word(0)
                .wrapping_add(word(1))
                .wrapping_add(word(2))
                .wrapping_add(word(3))
                == 0
    })
}

fn elf(image: &[u8]) -> Option<ElfInfo> {
    if !image.starts_with(b"\x7fELF") {
        return None;
    }
    let class64 = image.get(4) == Some(&2);
    let machine = u16_at(image, 18).unwrap_or(0);
    let pvh = class64 && image.get(5) == Some(&1) && pvh_note(image).unwrap_or(false);
    Some(ElfInfo {
        class64,
        machine,
        pvh,
    })
}

/// Whether a little-endian ELF64's note segments hold the PVH entry note.
fn pvh_note(image: &[u8]) -> Option<bool> {
    let phoff = usize::try_from(u64_at(image, 32)?).ok()?;
    let phentsize = usize::from(u16_at(image, 54)?);
    let phnum = usize::from(u16_at(image, 56)?).min(MAX_PHDRS);
    if phentsize < 56 {
        return None;
    }
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(image, ph)? != PT_NOTE {
            continue;
        }
        let offset = usize::try_from(u64_at(image, ph + 8)?).ok()?;
        let size = usize::try_from(u64_at(image, ph + 32)?).ok()?;
        let notes = image.get(offset..offset.checked_add(size)?)?;
        if notes_have_pvh(notes) {
            return Some(true);
        }
    }
    Some(false)
}

fn notes_have_pvh(mut notes: &[u8]) -> bool {
    let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    while notes.len() >= 12 {
        let (Some(namesz), Some(descsz), Some(kind)) =
            (u32_at(notes, 0), u32_at(notes, 4), u32_at(notes, 8))
        else {
            return false;
        };
        let (Ok(namesz), Ok(descsz)) = (usize::try_from(namesz), usize::try_from(descsz)) else {
            return false;
        };
        let name = notes.get(12..12usize.saturating_add(namesz));
        if kind == XEN_ELFNOTE_PHYS32_ENTRY && name == Some(b"Xen\0") {
            return true;
        }
        let next = align4(namesz)
            .zip(align4(descsz))
            .and_then(|(n, d)| n.checked_add(d))
            .and_then(|nd| nd.checked_add(12));
        match next.and_then(|next| notes.get(next..)) {
            Some(rest) => notes = rest,
            None => return false,
        }
    }
    false
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A Multiboot1 header (no address fields) at offset `at` of a zeroed `len`-byte image.
    pub fn with_mb1(len: usize, at: usize) -> Vec<u8> {
        let mut img = vec![0u8; len];
        let flags = 0u32;
        for (i, w) in [
            MB1_MAGIC,
            flags,
            MB1_MAGIC.wrapping_add(flags).wrapping_neg(),
        ]
        .iter()
        .enumerate()
        {
            img[at + 4 * i..at + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        img
    }

    /// A minimal little-endian ELF64 header (and, with `pvh`, one PT_NOTE holding the PVH note).
    pub fn elf64(machine: u16, pvh: bool) -> Vec<u8> {
        let mut img = vec![0u8; 0x200];
        img[..4].copy_from_slice(b"\x7fELF");
        img[4] = 2;
        img[5] = 1;
        img[6] = 1;
        img[16..18].copy_from_slice(&2u16.to_le_bytes());
        img[18..20].copy_from_slice(&machine.to_le_bytes());
        img[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        img[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        if pvh {
            img[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
            let ph = 64;
            img[ph..ph + 4].copy_from_slice(&PT_NOTE.to_le_bytes());
            img[ph + 8..ph + 16].copy_from_slice(&0x100u64.to_le_bytes());
            img[ph + 32..ph + 40].copy_from_slice(&20u64.to_le_bytes());
            let note = 0x100;
            img[note..note + 4].copy_from_slice(&4u32.to_le_bytes());
            img[note + 4..note + 8].copy_from_slice(&4u32.to_le_bytes());
            img[note + 8..note + 12].copy_from_slice(&XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
            img[note + 12..note + 16].copy_from_slice(b"Xen\0");
            img[note + 16..note + 20].copy_from_slice(&0x100_0000u32.to_le_bytes());
        }
        img
    }

    #[test]
    fn multiboot1_header_needs_its_checksum_and_the_first_8k() {
        assert_eq!(
            Detected::of(&with_mb1(0x3000, 0x40)).kernel_type(),
            Some(KernelType::Multiboot)
        );
        let mut bad = with_mb1(0x3000, 0x40);
        bad[0x48] ^= 1;
        assert_eq!(Detected::of(&bad).kernel_type(), None);
        // Past the search limit, or not 4-byte aligned: not a header.
        assert_eq!(Detected::of(&with_mb1(0x3000, 0x2000)).kernel_type(), None);
        assert_eq!(Detected::of(&with_mb1(0x3000, 0x42)).kernel_type(), None);
        // A header in the last 12 bytes of a short file still counts.
        assert!(Detected::of(&with_mb1(12, 0)).multiboot1);
    }

    #[test]
    fn elf_kinds() {
        let plain = Detected::of(&elf64(EM_X86_64, false));
        assert_eq!(plain.kernel_type(), Some(KernelType::Elf64));
        assert!(plain.fits(KernelType::Elf64) && !plain.fits(KernelType::Pvh));
        let pvh = Detected::of(&elf64(EM_X86_64, true));
        assert_eq!(pvh.kernel_type(), Some(KernelType::Pvh));
        assert!(pvh.fits(KernelType::Elf64) && !pvh.fits(KernelType::Multiboot));
        assert!(pvh.describe(&[]).contains("PVH entry note"));
        let arm = Detected::of(&elf64(183, false));
        assert_eq!(arm.kernel_type(), None);
        assert!(
            arm.describe(&[]).contains("e_machine 183"),
            "{}",
            arm.describe(&[])
        );
        // An ELF64 with a Multiboot1 header boots as multiboot: the kernel asks for it.
        let mut mb = elf64(EM_X86_64, false);
        mb.extend_from_slice(&with_mb1(16, 0));
        assert_eq!(Detected::of(&mb).kernel_type(), Some(KernelType::Multiboot));
        let mut elf32 = elf64(EM_386, false);
        elf32[4] = 1;
        let d = Detected::of(&elf32);
        assert_eq!(d.kernel_type(), None);
        assert!(d
            .describe(&elf32)
            .contains("32-bit ELF boots only through a Multiboot1"));
    }

    #[test]
    fn multiboot2_only_is_explained() {
        let mut img = elf64(EM_X86_64, false);
        img.resize(0x1000, 0);
        let header = [
            MB2_MAGIC,
            0,
            16,
            0u32.wrapping_sub(MB2_MAGIC).wrapping_sub(16),
        ];
        for (i, w) in header.iter().enumerate() {
            img[0x200 + 4 * i..0x204 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        let d = Detected::of(&img);
        assert!(d.multiboot2 && !d.multiboot1);
        assert_eq!(d.kernel_type(), None);
        assert!(d.fits(KernelType::Elf64));
        assert!(d
            .describe(&img)
            .contains("Multiboot2 header (Quercus gives guests Multiboot1"));
    }

    #[test]
    fn bzimage_header() {
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        let d = Detected::of(&img);
        assert_eq!(d.kernel_type(), Some(KernelType::BzImage));
        assert!(!d.fits(KernelType::Multiboot));
        assert_eq!(d.describe(&img), "a Linux bzImage");
    }

    #[test]
    fn what_other_files_look_like() {
        let cases: [(&[u8], &str); 6] = [
            (&[], "empty"),
            (&[0x1F, 0x8B, 8, 0], "gzip"),
            (b"070701000000", "cpio"),
            (b"MZ\x90\x00\x03", "PE/EFI"),
            (b"#!/bin/sh\necho hi\n", "text"),
            (
                &[0xFF, 0x00, 0xFE, 0x01],
                "no known header; it starts with ff 00 fe 01",
            ),
        ];
        for (bytes, expected) in cases {
            let d = Detected::of(bytes);
            assert_eq!(d.kernel_type(), None);
            assert!(
                d.describe(bytes).contains(expected),
                "{}",
                d.describe(bytes)
            );
        }
        let mut ext4 = vec![0xA5u8; 2048];
        ext4[1080..1082].copy_from_slice(&[0x53, 0xEF]);
        assert!(Detected::of(&ext4).describe(&ext4).contains("ext2/3/4"));
    }

    #[test]
    fn hostile_elf_headers_do_not_panic() {
        // Program headers past the end, huge counts and offsets, a note that claims more than it has.
        let mut img = elf64(EM_X86_64, true);
        let mut bad = img.clone();
        bad[32..40].copy_from_slice(&u64::MAX.to_le_bytes()); // e_phoff
        assert!(!Detected::of(&bad).pvh());
        // 65535 program headers, of which only the first is in the file: the note is still found.
        let mut many = img.clone();
        many[56..58].copy_from_slice(&0xFFFFu16.to_le_bytes());
        assert!(Detected::of(&many).pvh());
        img[0x100..0x104].copy_from_slice(&u32::MAX.to_le_bytes()); // n_namesz
        assert!(!Detected::of(&img).pvh());
        for len in 0..0x120 {
            let _ = Detected::of(&elf64(EM_X86_64, true)[..len]);
        }
        // Pseudo-random bytes of every length up to 4 KiB.
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for len in (0..noise.len()).step_by(61) {
            let d = Detected::of(&noise[..len]);
            let _ = d.describe(&noise[..len]);
        }
    }
}
