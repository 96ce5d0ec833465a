//! The loader's one entry point: pick the format, check everything, copy the
//! kernel and the boot modules, write the boot information, say how to start.

use alloc::vec::Vec;
use core::fmt;

use vcpu::GuestMemory;

use crate::elf64::{self, Elf64Error};
use crate::info::{self, InfoError};
use crate::layout::KERNEL_KEEP_OUT;
use crate::modules::{self, Module, ModuleError, MODULE_LIMIT};
use crate::multiboot1::{self, Multiboot1Error};
use crate::raw::{self, RawError};
use crate::segment::{self, Segment, SegmentError};

/// The format of a kernel image, as the scenario names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelKind {
    /// A Multiboot1 kernel (a.out kludge or ELF32/ELF64).
    Multiboot1,
    /// A plain ELF64 executable.
    Elf64,
    /// A flat binary copied to `load_gpa`, started at `entry_gpa`.
    Raw { load_gpa: u64, entry_gpa: u64 },
    /// A Linux bzImage. It starts in 64-bit mode through the Linux boot
    /// protocol, with an initrd and the VM's memory layout: load it with
    /// [`crate::load_bzimage`]; [`load`] refuses it.
    BzImage,
}

/// Which loader produced a [`BootSetup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Multiboot1,
    Elf64,
    Raw,
}

/// How to start the loaded kernel. For every kind: 32-bit protected mode,
/// paging off, flat 4 GiB segments, `EIP` = `entry`,
/// `EAX` = [`crate::BOOTLOADER_MAGIC`], `EBX` = `info_gpa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootSetup {
    /// Guest-physical entry point, below 4 GiB.
    pub entry: u64,
    /// Guest-physical address of the Multiboot1 information structure: the
    /// start of the boot information area ([`crate::INFO_GPA`] unless the
    /// kernel sits there).
    pub info_gpa: u64,
    /// Bytes of the boot information area at `info_gpa` (structure, command
    /// line, memory map, module list and strings).
    pub info_len: u64,
    pub kind: EntryKind,
    /// The Multiboot1 header asked for a video mode (flag 2), which Quercus
    /// does not set; worth a line on the console.
    pub video_mode_ignored: bool,
}

/// Why a kernel could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    Multiboot1(Multiboot1Error),
    Elf64(Elf64Error),
    Raw(RawError),
    /// A piece of the kernel cannot go where it asks to.
    Placement(SegmentError),
    Info(InfoError),
    /// The boot modules cannot be given to the kernel.
    Module(ModuleError),
    /// [`load`] was asked for a [`KernelKind::BzImage`], which
    /// [`crate::load_bzimage`] loads.
    NeedsLinuxBoot,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Multiboot1(e) => write!(f, "Multiboot1 kernel: {e}"),
            LoadError::Elf64(e) => write!(f, "ELF64 kernel: {e}"),
            LoadError::Raw(e) => write!(f, "raw kernel: {e}"),
            LoadError::Placement(e) => write!(f, "kernel placement: {e}"),
            LoadError::Info(e) => write!(f, "boot information: {e}"),
            LoadError::Module(e) => write!(f, "boot modules: {e}"),
            LoadError::NeedsLinuxBoot => write!(
                f,
                "bzImage kernels start through the Linux 64-bit boot protocol: load them with load_bzimage"
            ),
        }
    }
}

impl core::error::Error for LoadError {}

/// Loads `image` as `kind` into `mem` (guest-physical `0..mem.size()`), puts
/// `modules` page-aligned above the kernel (and above 1 MiB), writes the
/// Multiboot1 boot information with `cmdline` and the module list where the
/// kernel leaves room for it, and says how to start.
///
/// Everything is checked before the first byte is written: on error guest
/// RAM is untouched. A [`KernelKind::BzImage`] is refused with
/// [`LoadError::NeedsLinuxBoot`].
pub fn load(
    kind: KernelKind,
    image: &[u8],
    cmdline: &str,
    modules: &[Module<'_>],
    mem: &mut impl GuestMemory,
) -> Result<BootSetup, LoadError> {
    if kind == KernelKind::BzImage {
        return Err(LoadError::NeedsLinuxBoot);
    }
    info::check(mem.size(), cmdline).map_err(LoadError::Info)?;
    modules::check_strings(modules).map_err(LoadError::Module)?;
    let (segments, entry, entry_kind, video_mode_ignored): (Vec<Segment<'_>>, _, _, _) = match kind
    {
        KernelKind::Multiboot1 => {
            let p = multiboot1::plan(image).map_err(LoadError::Multiboot1)?;
            (
                p.segments,
                p.entry,
                EntryKind::Multiboot1,
                p.video_mode_ignored,
            )
        }
        KernelKind::Elf64 => {
            let (s, e) = elf64::plan(image).map_err(LoadError::Elf64)?;
            (s, e, EntryKind::Elf64, false)
        }
        KernelKind::Raw {
            load_gpa,
            entry_gpa,
        } => {
            let (s, e) = raw::plan(image, load_gpa, entry_gpa).map_err(LoadError::Raw)?;
            (s, e, EntryKind::Raw, false)
        }
        KernelKind::BzImage => return Err(LoadError::NeedsLinuxBoot), // refused above
    };
    segment::check(&segments, mem.size(), &KERNEL_KEEP_OUT).map_err(LoadError::Placement)?;
    let limit = mem.size().min(MODULE_LIMIT);
    let kernel_end = segment::highest_end(&segments);
    let placed = modules::place(modules, kernel_end, limit).map_err(LoadError::Module)?;
    let mut taken = segment::ranges(&segments);
    taken.extend_from_slice(&placed);
    let above = placed
        .last()
        .map_or(kernel_end, |&(_, end)| end.max(kernel_end));
    let info_len = info::area_len(modules);
    let info_gpa = info::place(info_len, &taken, above, limit).map_err(LoadError::Info)?;

    // Checked: from here on only writes the checks allowed.
    segment::copy(mem, &segments).map_err(LoadError::Placement)?;
    for (m, &(start, _)) in modules.iter().zip(&placed) {
        mem.write(start, m.data)
            .map_err(|e| LoadError::Module(ModuleError::Memory(e)))?;
    }
    let info_gpa =
        info::write(mem, info_gpa, cmdline, modules, &placed).map_err(LoadError::Info)?;
    Ok(BootSetup {
        entry,
        info_gpa,
        info_len,
        kind: entry_kind,
        video_mode_ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tests::build;
    use crate::elf::Class;
    use crate::layout::BOOT_INFO_AREA;
    use crate::multiboot1::tests::image_with_header;
    use alloc::vec;
    use vcpu::VecMemory;

    const RAM: usize = 4 << 20;

    fn ram() -> VecMemory {
        let mut m = VecMemory::new(RAM);
        m.0.fill(0xCC); // so zeroing is visible
        m
    }

    fn assert_info(mem: &VecMemory, cmdline: &str) {
        assert_info_at(mem, 0x9000, cmdline);
    }

    /// The boot information without modules at `base`.
    fn assert_info_at(mem: &VecMemory, base: u64, cmdline: &str) {
        assert_eq!(mem.read_u32(base).unwrap(), 0x45);
        assert_eq!(mem.read_u32(base + 8).unwrap(), ((RAM as u32) >> 10) - 1024);
        assert_eq!(mem.read_u32(base + 16).unwrap() as u64, base + 0x400);
        assert_eq!(mem.read_u32(base + 48).unwrap() as u64, base + 0x800);
        let c = base as usize + 0x400;
        let c = &mem.0[c..c + cmdline.len() + 1];
        assert_eq!(&c[..cmdline.len()], cmdline.as_bytes());
        assert_eq!(c[cmdline.len()], 0);
        assert_eq!(
            mem.read_u64(base + 0x800 + 3 * 24 + 12).unwrap(),
            RAM as u64 - 0x10_0000
        );
    }

    #[test]
    fn multiboot1_address_fields_image() {
        // 0x400-byte file, header at offset 0x10 placed at 0x100010; text+data
        // 0x100000..0x100300, bss to 0x102000, entry 0x100100.
        let mut img = image_with_header(
            0x400,
            0x10,
            1 << 16 | 0x3,
            [0x10_0010, 0x10_0000, 0x10_0300, 0x10_2000, 0x10_0100],
        );
        img[0x100] = 0xF4; // hlt at the entry
        img[0x2FF] = 0xAB; // last loaded byte
        img[0x300] = 0xEE; // past load_end: must not be copied
        let mut mem = ram();
        let setup = load(KernelKind::Multiboot1, &img, "mb1", &[], &mut mem).unwrap();
        assert_eq!(
            setup,
            BootSetup {
                entry: 0x10_0100,
                info_gpa: 0x9000,
                info_len: 0x1000,
                kind: EntryKind::Multiboot1,
                video_mode_ignored: false
            }
        );
        assert_eq!(&mem.0[0x10_0000..0x10_0300], &img[..0x300]);
        assert!(
            mem.0[0x10_0300..0x10_2000].iter().all(|&b| b == 0),
            "bss zeroed"
        );
        assert_eq!(mem.0[0x10_2000], 0xCC, "nothing past bss_end");
        assert_info(&mem, "mb1");
    }

    fn two_segment_elf(class: Class) -> Vec<u8> {
        // text: file 0x100..0x180 -> 0x100000; data: file 0x180..0x1A0 -> 0x200000, bss to 0x201000.
        let mut img = build(
            class,
            0x10_0000,
            &[
                (1, 0x100, 0xC010_0000, 0x10_0000, 0x80, 0x80),
                (1, 0x180, 0xC020_0000, 0x20_0000, 0x20, 0x1000),
            ],
            0x1A0,
        );
        for (i, b) in img[0x100..0x1A0].iter_mut().enumerate() {
            *b = i as u8 | 1;
        }
        img
    }

    fn check_two_segments(mem: &VecMemory, img: &[u8]) {
        assert_eq!(&mem.0[0x10_0000..0x10_0080], &img[0x100..0x180]);
        assert_eq!(mem.0[0x10_0080], 0xCC);
        assert_eq!(&mem.0[0x20_0000..0x20_0020], &img[0x180..0x1A0]);
        assert!(
            mem.0[0x20_0020..0x20_1000].iter().all(|&b| b == 0),
            "bss zeroed"
        );
        assert_eq!(mem.0[0x20_1000], 0xCC);
    }

    #[test]
    fn multiboot1_elf32_and_elf64_images() {
        for class in [Class::Elf32, Class::Elf64] {
            let mut img = two_segment_elf(class);
            // Multiboot header inside the text segment, no address fields.
            let hdr = image_with_header(0x10, 0, 0x4 | 0x2, [0; 5]);
            img[0x100..0x10C].copy_from_slice(&hdr[..12]);
            let mut mem = ram();
            let setup = load(KernelKind::Multiboot1, &img, "console=com1", &[], &mut mem).unwrap();
            assert_eq!(setup.entry, 0x10_0000);
            assert_eq!(setup.kind, EntryKind::Multiboot1);
            assert!(setup.video_mode_ignored);
            check_two_segments(&mem, &img);
            assert_info(&mem, "console=com1");
        }
    }

    #[test]
    fn plain_elf64_image() {
        let img = two_segment_elf(Class::Elf64);
        let mut mem = ram();
        let setup = load(KernelKind::Elf64, &img, "", &[], &mut mem).unwrap();
        assert_eq!(setup.kind, EntryKind::Elf64);
        assert_eq!((setup.entry, setup.info_gpa), (0x10_0000, 0x9000));
        check_two_segments(&mem, &img);
        assert_info(&mem, "");
    }

    #[test]
    fn raw_image() {
        let img = [0xEB, 0xFE, 0x90, 0x90];
        let mut mem = ram();
        let kind = KernelKind::Raw {
            load_gpa: 0x7C00,
            entry_gpa: 0x7C00,
        };
        let setup = load(kind, &img, "x", &[], &mut mem).unwrap();
        assert_eq!(setup.kind, EntryKind::Raw);
        assert_eq!(&mem.0[0x7C00..0x7C04], &img);
        assert_eq!(mem.0[0x7C04], 0xCC);
        // A raw image over the preferred boot information area moves it.
        let kind = KernelKind::Raw {
            load_gpa: 0x8FFE,
            entry_gpa: 0x8FFE,
        };
        let mut mem = ram();
        assert_eq!(
            load(kind, &img, "", &[], &mut mem).unwrap().info_gpa,
            0x1000
        );
        assert_eq!(&mem.0[0x8FFE..0x9002], &img);
        assert_info_at(&mem, 0x1000, "");
        // Raw images may not sit on the EBDA.
        let kind = KernelKind::Raw {
            load_gpa: 0x9_FBFE,
            entry_gpa: 0x9_FBFE,
        };
        assert!(matches!(
            load(kind, &img, "", &[], &mut ram()),
            Err(LoadError::Placement(SegmentError::KeepOut { .. }))
        ));
    }

    #[test]
    fn hostile_placements_leave_ram_untouched() {
        let cases: [(u64, u64); 4] = [
            (RAM as u64 - 0x10, 0x20), // past RAM
            (u64::MAX - 0xF, 0x20),    // wrapping p_paddr
            (0x9_FB00, 0x200),         // over the EBDA
            (0xF_FFF0, 0x20),          // over the BIOS area
        ];
        for (paddr, memsz) in cases {
            let img = build(
                Class::Elf64,
                0x10_0000,
                &[
                    (1, 0x100, 0, 0x10_0000, 0x10, 0x10),
                    (1, 0x100, 0, paddr, 0x10, memsz),
                ],
                0x200,
            );
            let mut mem = ram();
            let err = load(KernelKind::Elf64, &img, "", &[], &mut mem).unwrap_err();
            assert!(matches!(err, LoadError::Placement(_)), "{paddr:#x}: {err}");
            assert!(mem.0.iter().all(|&b| b == 0xCC), "{paddr:#x}: RAM written");
        }
        // Two segments over each other.
        let img = build(
            Class::Elf32,
            0x10_0000,
            &[
                (1, 0x100, 0, 0x10_0000, 0x10, 0x100),
                (1, 0x100, 0, 0x10_00F0, 0x10, 0x10),
            ],
            0x200,
        );
        assert!(matches!(
            load(KernelKind::Multiboot1, &img, "", &[], &mut ram()),
            Err(LoadError::Multiboot1(Multiboot1Error::NoHeader))
        ));
        let mut with_header = img.clone();
        with_header[0x100..0x10C].copy_from_slice(&image_with_header(12, 0, 0, [0; 5]));
        assert_eq!(
            load(KernelKind::Multiboot1, &with_header, "", &[], &mut ram()),
            Err(LoadError::Placement(SegmentError::Overlap {
                first: 0x10_0000,
                second: 0x10_00F0
            }))
        );
    }

    #[test]
    fn hostile_images_never_panic() {
        let img = two_segment_elf(Class::Elf64);
        let mut hdr_img = img.clone();
        hdr_img[0x100..0x10C].copy_from_slice(&image_with_header(12, 0, 0, [0; 5]));
        // Every truncation of valid images, under each kind.
        for base in [&img, &hdr_img] {
            for len in 0..base.len() {
                for kind in [KernelKind::Multiboot1, KernelKind::Elf64] {
                    let mut mem = VecMemory::new(RAM);
                    let _ = load(kind, &base[..len], "", &[], &mut mem);
                }
            }
        }
        // Every single-byte corruption of the header and program headers.
        for pos in 0..0x100 {
            for val in [0x00, 0x7F, 0x80, 0xFF] {
                let mut bad = hdr_img.clone();
                bad[pos] = val;
                let mut mem = VecMemory::new(RAM);
                let _ = load(KernelKind::Multiboot1, &bad, "", &[], &mut mem);
                let _ = load(KernelKind::Elf64, &bad, "", &[], &mut mem);
            }
        }
    }

    #[test]
    fn info_problems_are_reported_before_loading() {
        let img = two_segment_elf(Class::Elf64);
        let mut mem = ram();
        let long = "y".repeat(2000);
        assert_eq!(
            load(KernelKind::Elf64, &img, &long, &[], &mut mem),
            Err(LoadError::Info(InfoError::CmdlineTooLong {
                len: 2000,
                max: 1023
            }))
        );
        assert!(mem.0.iter().all(|&b| b == 0xCC));
        let mut small = VecMemory::new(0x8_0000);
        assert!(matches!(
            load(KernelKind::Elf64, &img, "", &[], &mut small),
            Err(LoadError::Info(InfoError::RamTooSmall { .. }))
        ));
        assert_eq!(BOOT_INFO_AREA.start, setup_info_gpa());
    }

    #[test]
    fn bzimage_kind_is_refused_untouched() {
        use alloc::string::ToString;
        let mut mem = ram();
        // Refused before the command line is judged by Multiboot1 rules.
        let long = "z".repeat(4000);
        let err = load(KernelKind::BzImage, &[0u8; 0x1000], &long, &[], &mut mem).unwrap_err();
        assert_eq!(err, LoadError::NeedsLinuxBoot);
        assert!(err.to_string().contains("load_bzimage"));
        assert!(mem.0.iter().all(|&b| b == 0xCC));
    }

    fn setup_info_gpa() -> u64 {
        let img = [0xF4u8];
        let kind = KernelKind::Raw {
            load_gpa: 0x10_0000,
            entry_gpa: 0x10_0000,
        };
        load(kind, &img, "", &[], &mut VecMemory::new(RAM))
            .unwrap()
            .info_gpa
    }

    /// An a.out-kludge Multiboot1 kernel of `len` file bytes loaded at
    /// `load`, entered at its start.
    fn kludge_kernel(load: u32, len: usize) -> Vec<u8> {
        let mut img = image_with_header(len, 0x10, 1 << 16 | 0x3, [load + 0x10, load, 0, 0, load]);
        img[len - 1] = 0xAB;
        img
    }

    /// Module `i` of the list at `info`: (mod_start, mod_end, string).
    fn module_entry(mem: &VecMemory, info: u64, i: u64) -> (u64, u64, alloc::string::String) {
        let list = mem.read_u32(info + 24).unwrap() as u64;
        let at = |f: u64| mem.read_u32(list + 16 * i + f).unwrap() as u64;
        assert_eq!(at(12), 0, "reserved");
        let s = at(8) as usize;
        let len = mem.0[s..].iter().position(|&b| b == 0).unwrap();
        let string = core::str::from_utf8(&mem.0[s..s + len]).unwrap().into();
        (at(0), at(4), string)
    }

    #[test]
    fn modules_follow_the_kernel_and_are_listed() {
        let img = kludge_kernel(0x10_0000, 0x1801);
        let (a, b) = (vec![0x11u8; 0x2345], b"second".to_vec());
        let mods = [
            Module {
                data: &a,
                cmdline: "testdata one two",
            },
            Module {
                data: &b,
                cmdline: "b",
            },
        ];
        let mut mem = ram();
        let setup = load(KernelKind::Multiboot1, &img, "k", &mods, &mut mem).unwrap();
        assert_eq!(setup.info_gpa, 0x9000);
        assert_eq!(setup.info_len, 0x1000 + 2 * 16 + 17 + 2);
        assert_eq!(mem.read_u32(0x9000).unwrap(), 0x4D, "flags bit 3");
        assert_eq!(mem.read_u32(0x9014).unwrap(), 2, "mods_count");
        assert_eq!(mem.read_u32(0x9018).unwrap(), 0xA000, "mods_addr");
        assert_eq!(
            module_entry(&mem, 0x9000, 0),
            (0x10_2000, 0x10_4345, "testdata one two".into())
        );
        assert_eq!(
            module_entry(&mem, 0x9000, 1),
            (0x10_5000, 0x10_5006, "b".into())
        );
        assert_eq!(&mem.0[0x10_2000..0x10_4345], &a[..]);
        assert_eq!(&mem.0[0x10_5000..0x10_5006], b"second");
        assert_eq!(mem.0[0x10_5006], 0xCC, "nothing past the last module");
        assert_eq!(&mem.0[0x10_0000..0x10_1801], &img[..]);
    }

    #[test]
    fn low_kernels_move_the_boot_information() {
        // An a.out kludge kernel at 0x8000 over 0x9000: the area goes to 0x1000.
        let img = kludge_kernel(0x8000, 0x1800);
        let m = [Module {
            data: b"data",
            cmdline: "testdata",
        }];
        let mut mem = ram();
        let setup = load(KernelKind::Multiboot1, &img, "low", &m, &mut mem).unwrap();
        assert_eq!((setup.entry, setup.info_gpa), (0x8000, 0x1000));
        assert_eq!(&mem.0[0x8000..0x9800], &img[..]);
        assert_eq!(mem.read_u32(0x1010).unwrap(), 0x1400, "cmdline");
        assert_eq!(&mem.0[0x1400..0x1404], b"low\0");
        assert_eq!(
            module_entry(&mem, 0x1000, 0),
            (0x10_0000, 0x10_0004, "testdata".into())
        );
        // An ELF kernel at 0x1000..0x9001: to 0x90000.
        let mut elf = build(
            Class::Elf32,
            0x1000,
            &[(1, 0x100, 0, 0x1000, 0x80, 0x8001)],
            0x180,
        );
        elf[0x100..0x10C].copy_from_slice(&image_with_header(12, 0, 0, [0; 5]));
        let mut mem = ram();
        let setup = load(KernelKind::Multiboot1, &elf, "", &[], &mut mem).unwrap();
        assert_eq!(setup.info_gpa, 0x9_0000);
        assert_info_at(&mem, 0x9_0000, "");
        assert!(mem.0[0x1080..0x9001].iter().all(|&b| b == 0), "bss");
    }

    #[test]
    fn hostile_modules_leave_ram_untouched() {
        let img = kludge_kernel(0x10_0000, 0x1000);
        let huge = vec![0u8; RAM];
        let long = "m".repeat(crate::MODULE_CMDLINE_MAX + 1);
        let many = [Module {
            data: b"x",
            cmdline: "x",
        }; crate::MAX_MODULES + 1];
        let cases: [(&[Module<'_>], ModuleError); 4] = [
            (
                &[
                    Module {
                        data: b"ok",
                        cmdline: "ok",
                    },
                    Module {
                        data: &huge,
                        cmdline: "huge",
                    },
                ],
                ModuleError::DoesNotFit {
                    index: 1,
                    len: RAM as u64,
                    start: 0x10_2000,
                    limit: RAM as u64,
                },
            ),
            (&many, ModuleError::TooMany { count: 33, max: 32 }),
            (
                &[Module {
                    data: b"",
                    cmdline: &long,
                }],
                ModuleError::CmdlineTooLong {
                    index: 0,
                    len: 1024,
                    max: 1023,
                },
            ),
            (
                &[Module {
                    data: b"",
                    cmdline: "a\0",
                }],
                ModuleError::CmdlineHasNul {
                    index: 0,
                    offset: 1,
                },
            ),
        ];
        for (mods, want) in cases {
            let mut mem = ram();
            assert_eq!(
                load(KernelKind::Multiboot1, &img, "", mods, &mut mem),
                Err(LoadError::Module(want))
            );
            assert!(mem.0.iter().all(|&b| b == 0xCC), "{want:?}: RAM written");
        }
        // The most modules with the longest strings still fit.
        let longest = "s".repeat(crate::MODULE_CMDLINE_MAX);
        let most = [Module {
            data: b"m",
            cmdline: &longest,
        }; crate::MAX_MODULES];
        let mut mem = ram();
        let setup = load(KernelKind::Multiboot1, &img, "", &most, &mut mem).unwrap();
        assert_eq!(setup.info_gpa, 0x9000);
        assert_eq!(mem.read_u32(0x9014).unwrap(), 32);
        let last = module_entry(&mem, 0x9000, 31);
        assert_eq!(
            (last.0, last.1),
            (0x10_1000 + 31 * 0x1000, 0x10_1001 + 31 * 0x1000)
        );
        assert_eq!(last.2, longest);
    }

    #[test]
    fn a_kernel_covering_every_candidate_is_refused_untouched() {
        // Low memory all kernel, high memory all module: no room anywhere.
        let low = vec![0x90u8; 0x9_FC00];
        let kind = KernelKind::Raw {
            load_gpa: 0,
            entry_gpa: 0,
        };
        let fill = vec![0u8; RAM - 0x10_0000];
        let m = [Module {
            data: &fill,
            cmdline: "fill",
        }];
        let mut mem = ram();
        let err = load(kind, &low, "", &m, &mut mem).unwrap_err();
        assert_eq!(
            err,
            LoadError::Info(InfoError::NoRoom {
                len: 0x1000 + 16 + 5,
                above: RAM as u64,
                limit: RAM as u64
            })
        );
        assert!(mem.0.iter().all(|&b| b == 0xCC));
        // One page less of module: the area goes after it.
        let m = [Module {
            data: &fill[0x2000..],
            cmdline: "fill",
        }];
        let setup = load(kind, &low, "", &m, &mut ram()).unwrap();
        assert_eq!(setup.info_gpa, RAM as u64 - 0x2000);
    }
}
