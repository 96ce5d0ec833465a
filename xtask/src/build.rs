//! Building bare-metal images (the hypervisor, later test guests) with the flags the prebuilt `core` needs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::workspace_root;

/// The only target installed here; `core` for it works bare-metal with the flags below.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Codegen flags for bare-metal code (linker arguments come from each package's build.rs).
pub const BAREMETAL_RUSTFLAGS: &[&str] = &[
    "-C",
    "panic=abort",
    "-C",
    "relocation-model=static",
    "-C",
    "code-model=small",
    "-C",
    "no-redzone=yes",
    "-C",
    "force-unwind-tables=no",
    "-C",
    "target-feature=+crt-static",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Release,
    Debug,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub profile: Profile,
    /// Absolute path of the scenario file, passed to the build as `QUERCUS_SCENARIO`.
    pub scenario: Option<PathBuf>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            profile: Profile::Release,
            scenario: None,
        }
    }
}

/// `<root>/target/baremetal`: kept apart from host builds, whose flags differ.
pub fn target_dir(root: &Path) -> PathBuf {
    root.join("target").join("baremetal")
}

/// Where `build_baremetal` puts `bin_name`.
pub fn artifact_path(root: &Path, profile: Profile, bin_name: &str) -> PathBuf {
    target_dir(root)
        .join(TARGET)
        .join(profile.dir())
        .join(bin_name)
}

/// `CARGO_ENCODED_RUSTFLAGS` for bare-metal builds.
pub fn encoded_rustflags() -> String {
    BAREMETAL_RUSTFLAGS.join("\x1f")
}

/// Build binary `bin_name` of workspace package `package` as a bare-metal image; returns the ELF path.
pub fn build_baremetal(package: &str, bin_name: &str, opts: &BuildOptions) -> Result<PathBuf> {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root).arg("build");
    // Guests are workspaces of their own (they must not share the host
    // crates' lock file and feature resolution); the rest are members.
    let guest_manifest = root.join("guests").join(package).join("Cargo.toml");
    if guest_manifest.is_file() {
        cmd.arg("--manifest-path").arg(&guest_manifest);
    } else {
        cmd.args(["-p", package]);
    }
    cmd.args(["--bin", bin_name, "--target", TARGET])
        .arg("--target-dir")
        .arg(target_dir(&root));
    if opts.profile == Profile::Release {
        cmd.arg("--release");
    }
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", encoded_rustflags());
    match &opts.scenario {
        Some(path) => cmd
            .env("QUERCUS_SCENARIO", path)
            .env("QUERCUS_BOARDS", crate::own_guest::boards_for(&root, path)),
        None => cmd
            .env_remove("QUERCUS_SCENARIO")
            .env_remove("QUERCUS_BOARDS"),
    };
    let status = cmd
        .status()
        .with_context(|| format!("running cargo build for {package}"))?;
    if !status.success() {
        bail!("bare-metal build of {package} failed ({status})");
    }
    let path = artifact_path(&root, opts.profile, bin_name);
    if !path.is_file() {
        bail!("build succeeded but {} is missing", path.display());
    }
    Ok(path)
}

/// Build the hypervisor image (`hypervisor` package, `quercus` binary).
pub fn build_hypervisor(opts: &BuildOptions) -> Result<PathBuf> {
    build_baremetal("hypervisor", "quercus", opts)
}

/// Module name of Debian's kernel (a bzImage built by `linux_image`).
pub const LINUX_MODULE: &str = "linux";
/// Module name of the busybox initramfs that goes with it.
pub const LINUX_INITRD_MODULE: &str = "initrd";
/// The boot-module name of the same kernel as an ELF `vmlinux` (booted through its PVH entry).
pub const LINUX_VMLINUX_MODULE: &str = "vmlinux";
/// A Multiboot1 kernel that loads below 0xA000 (issue 10): the a.out-kludge image [`lowload_image`],
/// written to `target/modules/lowload.bin`.
pub const LOWLOAD_MODULE: &str = "lowload";
/// Where [`lowload_image`] loads; its BSS reaches [`LOWLOAD_BSS_END`], over the page at 0x9000 where
/// loaders traditionally put the Multiboot information.
pub const LOWLOAD_BASE: u32 = 0x8000;
pub const LOWLOAD_BSS_END: u32 = 0xA000;

/// A 32-bit Multiboot1 kernel, hand-assembled, loaded at [`LOWLOAD_BASE`] by its header's address
/// fields (flags bit 16) with a BSS up to [`LOWLOAD_BSS_END`]. It checks EAX (the bootloader magic)
/// and that EBX (the Multiboot information) lies outside its own image and BSS, prints `LOWLOAD OK`
/// or `LOWLOAD FAIL` on COM1 and halts with interrupts off.
pub fn lowload_image() -> Vec<u8> {
    const MAGIC: u32 = 0x1BAD_B002;
    const FLAGS: u32 = 1 << 16;
    let base = LOWLOAD_BASE;
    let mut img = Vec::new();
    for w in [
        MAGIC,
        FLAGS,
        MAGIC.wrapping_add(FLAGS).wrapping_neg(),
        base,            // header_addr: the header is the image's first byte
        base,            // load_addr
        0,               // load_end_addr: the whole file
        LOWLOAD_BSS_END, // bss_end_addr
        base + 0x20,     // entry_addr
    ] {
        img.extend_from_slice(&w.to_le_bytes());
    }
    let ok = base + 0x53;
    let fail = base + 0x5F;
    let le = |v: u32| v.to_le_bytes();
    #[rustfmt::skip]
    let code: Vec<u8> = [
        &[0x3D][..], &le(0x2BAD_B002),     // 0x20 cmp eax, 0x2BADB002
        &[0x75, 0x17],                      // 0x25 jne fail (0x3E)
        &[0x81, 0xFB], &le(base),           // 0x27 cmp ebx, base
        &[0x72, 0x08],                      // 0x2D jb ok (0x37)
        &[0x81, 0xFB], &le(LOWLOAD_BSS_END), // 0x2F cmp ebx, bss_end
        &[0x72, 0x07],                      // 0x35 jb fail (0x3E)
        &[0xBE], &le(ok),                   // 0x37 ok: mov esi, ok_str
        &[0xEB, 0x05],                      // 0x3C jmp print (0x43)
        &[0xBE], &le(fail),                 // 0x3E fail: mov esi, fail_str
        &[0x66, 0xBA, 0xF8, 0x03],          // 0x43 print: mov dx, 0x3F8
        &[0xAC],                            // 0x47 loop: lodsb
        &[0x84, 0xC0],                      // 0x48 test al, al
        &[0x74, 0x03],                      // 0x4A jz done (0x4F)
        &[0xEE],                            // 0x4C out dx, al
        &[0xEB, 0xF8],                      // 0x4D jmp loop (0x47)
        &[0xFA],                            // 0x4F done: cli
        &[0xF4],                            // 0x50 hlt
        &[0xEB, 0xFD],                      // 0x51 jmp 0x50
    ]
    .concat();
    img.extend_from_slice(&code);
    img.extend_from_slice(b"LOWLOAD OK\n\0");
    img.extend_from_slice(b"LOWLOAD FAIL\n\0");
    img
}

/// Writes the `lowload` kernel to `target/modules/lowload.bin` (when its content differs).
fn lowload_module(root: &Path) -> Result<PathBuf> {
    let path = root.join("target/modules/lowload.bin");
    let image = lowload_image();
    if std::fs::read(&path).ok().as_deref() != Some(&image[..]) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, &image).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}

/// A small data module for Multiboot guests' module tests: [`TESTDATA`] in a file under `target/`.
pub const TESTDATA_MODULE: &str = "testdata";
/// The bytes of the `testdata` module (text, so a guest can print what it found).
pub const TESTDATA: &[u8] = b"Quercus testdata module: 0123456789abcdef\n";

/// Writes the `testdata` module to `target/modules/testdata.txt` (when its content differs) and
/// returns its path.
fn testdata_module(root: &Path) -> Result<PathBuf> {
    let path = root.join("target/modules/testdata.txt");
    if std::fs::read(&path).ok().as_deref() != Some(TESTDATA) {
        let dir = path.parent().unwrap_or(root);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&path, TESTDATA).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}

/// A raw disk image for the virtio-blk tests (the test guest's `virtio-blk`): [`TESTDISK_SECTORS`]
/// sectors of [`testdisk_image`] in a file under `target/`.
pub const TESTDISK_MODULE: &str = "testdisk";
/// A second module with the same content, for a second VM that writes to its own disk while the
/// first one uses `testdisk` (a writable disk module is never shared between VMs).
pub const TESTDISK2_MODULE: &str = "testdisk2";
/// 512-byte sectors of the `testdisk` image (1 MiB).
pub const TESTDISK_SECTORS: u64 = 2048;
/// How each `testdisk` sector starts (then its LBA, u64 little-endian).
pub const TESTDISK_MAGIC: &[u8; 8] = b"QTESTDSK";

/// Byte `i` of sector `lba` of the `testdisk` image: [`TESTDISK_MAGIC`], the LBA (u64 little-endian),
/// then `lba * 31 + i * 7` (mod 256). The test guest checks sectors against the same formula
/// (guests/test-guest/src/tests/virtio.rs `disk_byte`).
pub fn testdisk_byte(lba: u64, i: usize) -> u8 {
    match i {
        0..8 => TESTDISK_MAGIC[i],
        8..16 => lba.to_le_bytes()[i - 8],
        _ => (lba as u32).wrapping_mul(31).wrapping_add(i as u32 * 7) as u8,
    }
}

/// The whole `testdisk` image: deterministic, so any sector read tells whether it is right.
pub fn testdisk_image() -> Vec<u8> {
    (0..TESTDISK_SECTORS)
        .flat_map(|lba| (0..512).map(move |i| testdisk_byte(lba, i)))
        .collect()
}

/// Writes the `testdisk` module (or another module `name` with the same content) to
/// `target/modules/<name>.img` (when its content differs) and returns its path. A run that writes
/// to the disk natively must not change this file (QEMU: `snapshot=on`): the hypervisor's run gets
/// the same image.
fn testdisk_module(root: &Path, name: &str) -> Result<PathBuf> {
    let path = root.join(format!("target/modules/{name}.img"));
    let image = testdisk_image();
    if std::fs::read(&path).ok().as_deref() != Some(&image[..]) {
        let dir = path.parent().unwrap_or(root);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&path, &image).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}

/// The ext4 disk image of the virtio-blk tests (`disk_image`), for a scenario's virtio-blk device.
pub const DISK_MODULE: &str = "disk";

/// The file of boot module `name`: one xtask makes (the Linux image, the disk image, the data
/// modules) or else the bare-metal guest of that name, built from `guests/<name>`.
pub fn module_path(root: &Path, name: &str, opts: &BuildOptions) -> Result<PathBuf> {
    Ok(match name {
        LINUX_MODULE => crate::linux_image::linux_guest(root)?.bzimage,
        LINUX_INITRD_MODULE => crate::linux_image::linux_guest(root)?.initrd,
        LINUX_VMLINUX_MODULE => crate::linux_image::linux_guest(root)?.vmlinux,
        DISK_MODULE => crate::disk_image::disk_image(root)?,
        TESTDATA_MODULE => testdata_module(root)?,
        TESTDISK_MODULE | TESTDISK2_MODULE => testdisk_module(root, name)?,
        LOWLOAD_MODULE => lowload_module(root)?,
        guest => build_baremetal(guest, guest, opts)?,
    })
}

/// The boot modules a scenario names (see [`module_path`]; a file the scenario names is linked
/// under `target/modules/files/`), each passed with its module name as the command line (the
/// hypervisor finds modules by that name).
pub fn scenario_modules(
    root: &Path,
    scenario: &Path,
    opts: &BuildOptions,
) -> Result<Vec<crate::runner::BootModule>> {
    let validated = validate(root, scenario)?;
    let mut modules = Vec::new();
    for name in validated.modules() {
        let path = match validated.file(name) {
            Some(file) => crate::own_guest::stage(root, file)?,
            None => module_path(root, name, opts)?,
        };
        modules.push(crate::runner::BootModule {
            path,
            cmdline: name.to_string(),
        });
    }
    Ok(modules)
}

/// A scenario checked against the board and the modules the build provides.
pub fn validate(root: &Path, scenario: &Path) -> Result<configurator::Validated> {
    let guests = guest_packages(root);
    let mut names: Vec<&str> = guests.iter().map(String::as_str).collect();
    names.extend([
        LINUX_MODULE,
        LINUX_INITRD_MODULE,
        LINUX_VMLINUX_MODULE,
        DISK_MODULE,
        TESTDATA_MODULE,
        TESTDISK_MODULE,
        TESTDISK2_MODULE,
        LOWLOAD_MODULE,
    ]);
    let boards = crate::own_guest::boards_for(root, scenario);
    configurator::load(scenario, &boards, configurator::Modules::Known(&names)).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("invalid scenario:\n{}", lines.join("\n"))
    })
}

/// How many CPUs the emulated machine needs for every VM of a scenario to
/// start: its highest pCPU index plus one (pCPU 0 is the hypervisor's).
pub fn scenario_cpus(root: &Path, scenario: &Path) -> Result<u32> {
    let validated = validate(root, scenario)?;
    let highest = validated
        .vms
        .iter()
        .flat_map(|vm| vm.pcpus.iter().copied())
        .max()
        .unwrap_or(0);
    Ok(u32::from(highest) + 1)
}

/// The vCPU count and RAM (MiB) of a scenario's first VM: what a native run
/// of the same guest gets, for a like-for-like comparison.
pub fn first_vm_shape(root: &Path, scenario: &Path) -> Result<(u32, u32)> {
    let validated = validate(root, scenario)?;
    let vm = validated
        .vms
        .first()
        .ok_or_else(|| anyhow::anyhow!("{} has no VM", scenario.display()))?;
    let mib = u32::try_from(vm.memory_bytes >> 20).unwrap_or(u32::MAX);
    Ok((vm.pcpus.len() as u32, mib))
}

/// Package names of the bare-metal guests (directories under `guests/`).
pub fn guest_packages(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("guests"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustflags_are_unit_separated() {
        let flags = encoded_rustflags();
        let parts: Vec<&str> = flags.split('\x1f').collect();
        assert_eq!(parts.len(), 12);
        assert_eq!(parts[0], "-C");
        assert_eq!(parts[1], "panic=abort");
        assert!(!flags.contains(' '));
    }

    #[test]
    fn lowload_image_is_laid_out_as_its_header_and_jumps_say() {
        let img = lowload_image();
        let word = |off: usize| u32::from_le_bytes(img[off..off + 4].try_into().unwrap());
        // The Multiboot1 header: magic, flags (addresses), checksum, then the a.out-kludge fields.
        assert_eq!(word(0), 0x1BAD_B002);
        assert_eq!(word(0).wrapping_add(word(4)).wrapping_add(word(8)), 0);
        assert_eq!(word(16), LOWLOAD_BASE);
        assert_eq!(word(24), LOWLOAD_BSS_END);
        assert_eq!(word(28), LOWLOAD_BASE + 0x20);
        // The strings sit where the code's `mov esi` immediates point.
        assert_eq!(&img[0x53..0x5F], b"LOWLOAD OK\n\0");
        assert_eq!(&img[0x5F..], b"LOWLOAD FAIL\n\0");
        assert_eq!(word(0x38), LOWLOAD_BASE + 0x53);
        assert_eq!(word(0x3F), LOWLOAD_BASE + 0x5F);
        // Each short jump lands on the instruction its comment names.
        let target = |at: usize| (at as i64 + 2 + i64::from(img[at + 1] as i8)) as usize;
        assert_eq!((img[0x25], target(0x25)), (0x75, 0x3E));
        assert_eq!((img[0x2D], target(0x2D)), (0x72, 0x37));
        assert_eq!((img[0x35], target(0x35)), (0x72, 0x3E));
        assert_eq!((img[0x3C], target(0x3C)), (0xEB, 0x43));
        assert_eq!((img[0x4A], target(0x4A)), (0x74, 0x4F));
        assert_eq!((img[0x4D], target(0x4D)), (0xEB, 0x47));
        assert_eq!((img[0x51], target(0x51)), (0xEB, 0x50));
        // The image ends below its BSS end, which covers 0x9000.
        assert!(LOWLOAD_BASE as usize + img.len() < 0x9000 && LOWLOAD_BSS_END > 0x9000);
    }

    #[test]
    fn testdata_module_is_written_once_and_kept() {
        let root = std::env::temp_dir().join(format!("quercus-testdata-{}", std::process::id()));
        let path = testdata_module(&root).unwrap();
        assert_eq!(path, root.join("target/modules/testdata.txt"));
        assert_eq!(std::fs::read(&path).unwrap(), TESTDATA);
        std::fs::write(&path, b"stale").unwrap();
        testdata_module(&root).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            TESTDATA,
            "rewritten when it differs"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn testdisk_image_layout() {
        let img = testdisk_image();
        assert_eq!(img.len(), 1 << 20);
        for lba in [0u64, 1, 255, 2047] {
            let s = &img[lba as usize * 512..][..512];
            assert_eq!(&s[..8], b"QTESTDSK");
            assert_eq!(u64::from_le_bytes(s[8..16].try_into().unwrap()), lba);
            assert_eq!(s[16], (lba as u32 * 31 + 16 * 7) as u8);
            assert_eq!(s[511], (lba as u32 * 31 + 511 * 7) as u8);
        }
        // Neighbouring sectors differ past their LBA too (a misplaced read shows).
        assert_ne!(img[16..512], img[512 + 16..1024]);
    }

    #[test]
    fn testdisk_module_is_rewritten_when_it_differs() {
        let root = std::env::temp_dir().join(format!("quercus-testdisk-{}", std::process::id()));
        let path = testdisk_module(&root, TESTDISK_MODULE).unwrap();
        assert_eq!(path, root.join("target/modules/testdisk.img"));
        assert_eq!(std::fs::read(&path).unwrap(), testdisk_image());
        std::fs::write(&path, b"stale").unwrap();
        testdisk_module(&root, TESTDISK_MODULE).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), testdisk_image());
        let second = testdisk_module(&root, TESTDISK2_MODULE).unwrap();
        assert_eq!(second, root.join("target/modules/testdisk2.img"));
        assert_eq!(std::fs::read(&second).unwrap(), testdisk_image());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn artifact_path_layout() {
        let p = artifact_path(Path::new("/w"), Profile::Release, "quercus");
        assert_eq!(
            p,
            Path::new("/w/target/baremetal/x86_64-unknown-linux-gnu/release/quercus")
        );
    }
}
