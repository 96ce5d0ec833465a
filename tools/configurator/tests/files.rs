//! Scenarios that name files (`kernel.file`, `initrd_file`, a blk device's `file`): each check
//! asserts the file, VM and field the error names, with real files in a temporary directory.

use std::fs;
use std::path::{Path, PathBuf};

use configurator::{
    validate_str, ConfigError, ErrorKind, FileRole, Modules, Validated, VirtioDevice,
};

/// A fresh directory for one test, holding the scenario and its files.
struct Dir(PathBuf);

impl Dir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("quercus-files-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        path
    }

    fn scenario(&self) -> PathBuf {
        self.0.join("my.toml")
    }

    fn validate(&self, text: &str) -> Result<Validated, Vec<ConfigError>> {
        let boards = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/boards");
        validate_str(
            &self.scenario(),
            text,
            &boards,
            Modules::Known(&["test-guest", "linux", "initrd"]),
        )
    }

    /// The only error of `text`, which must be at VM `vm` and `field`.
    fn single(&self, text: &str, vm: usize, field: &str) -> ConfigError {
        let errors = self.validate(text).expect_err("expected an error");
        assert_eq!(errors.len(), 1, "{errors:#?}");
        let error = errors.into_iter().next().unwrap();
        assert_eq!(error.file, self.scenario(), "{error}");
        assert_eq!(error.vm.as_ref().map(|v| v.index), Some(vm), "{error}");
        assert_eq!(error.field, field, "{error}");
        error
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A Multiboot1 kernel with the a.out kludge loaded at `base`: header, then `hlt; jmp $-1`.
fn multiboot_kernel(base: u32, len: usize) -> Vec<u8> {
    const MAGIC: u32 = 0x1BAD_B002;
    const FLAGS: u32 = 1 << 16;
    let mut img = Vec::new();
    for w in [
        MAGIC,
        FLAGS,
        MAGIC.wrapping_add(FLAGS).wrapping_neg(),
        base,
        base,
        0,
        0,
        base + 0x20,
    ] {
        img.extend_from_slice(&w.to_le_bytes());
    }
    img.extend_from_slice(&[0xF4, 0xEB, 0xFD]);
    img.resize(len.max(img.len()), 0);
    img
}

/// A fake bzImage: only the setup header's magic (enough for detection, not for loading).
fn fake_bzimage(len: usize) -> Vec<u8> {
    let mut img = vec![0u8; len];
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img
}

const HEAD: &str = "board = \"qemu\"\n";

/// One VM `a` (32 MiB on pCPU 1) with these kernel lines and extra VM lines.
fn one_vm(kernel: &str, extra: &str) -> String {
    format!(
        "{HEAD}[[vm]]\nname = \"a\"\nload_order = \"pre-launched\"\npcpus = [1]\nmemory_mib = 32\n{extra}\n[vm.kernel]\n{kernel}\n"
    )
}

#[test]
fn a_kernel_file_is_found_relative_to_the_scenario_and_its_type_detected() {
    let dir = Dir::new("detect");
    dir.write("guests/my kernel.bin", &multiboot_kernel(0x10_0000, 4096));
    let v = dir
        .validate(&one_vm(
            "file = \"guests/my kernel.bin\"\ncmdline = \"hello\"",
            "",
        ))
        .unwrap();
    let vm = &v.vms[0];
    assert_eq!(vm.kernel.module, "file-my_kernel.bin");
    assert_eq!(vm.kernel.kind, scenario::KernelKind::Multiboot1);
    assert_eq!(v.modules(), ["file-my_kernel.bin"]);
    let file = v.file("file-my_kernel.bin").unwrap();
    assert_eq!(file.role, FileRole::Kernel);
    assert_eq!(file.size, 4096);
    assert_eq!(
        file.path,
        fs::canonicalize(dir.0.join("guests/my kernel.bin")).unwrap()
    );
    // The generated static names the module like any other.
    assert!(configurator::generate(&v).contains("module: \"file-my_kernel.bin\""));
    // An explicit type that fits the file is accepted.
    dir.validate(&one_vm(
        "file = \"guests/my kernel.bin\"\ntype = \"multiboot\"",
        "",
    ))
    .unwrap();
}

#[test]
fn a_missing_file_or_a_directory_names_the_path() {
    let dir = Dir::new("missing");
    let e = dir.single(&one_vm("file = \"nope.elf\"", ""), 0, "kernel.file");
    assert!(matches!(e.kind, ErrorKind::FileUnreadable { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("my.toml: vm \"a\" (vm[0]): kernel.file: cannot read "),
        "{text}"
    );
    assert!(
        text.contains("nope.elf (\"nope.elf\" relative to the scenario's directory)"),
        "{text}"
    );
    fs::create_dir_all(dir.0.join("adir")).unwrap();
    let e = dir.single(&one_vm("file = \"adir\"", ""), 0, "kernel.file");
    assert!(matches!(e.kind, ErrorKind::NotAFile { .. }), "{e}");
    let e = dir.single(&one_vm("file = \"\"", ""), 0, "kernel.file");
    assert!(e.to_string().contains("the path is empty"), "{e}");
}

#[test]
fn garbage_is_described() {
    let dir = Dir::new("garbage");
    dir.write(
        "junk.bin",
        &[0xFF, 0x00, 0xFE, 0x01, 0x42, 0x42, 0x42, 0x42, 9],
    );
    let e = dir.single(&one_vm("file = \"junk.bin\"", ""), 0, "kernel.file");
    let text = e.to_string();
    assert!(text.contains("junk.bin (9 bytes) is not a kernel image Quercus recognizes: no known header; it starts with ff 00 fe 01 42 42 42 42"), "{text}");
    assert!(
        text.contains("type = \"raw\" with load_addr and entry"),
        "{text}"
    );
    // An initramfs given as the kernel.
    dir.write("initrd.gz", &[0x1F, 0x8B, 8, 0, 0, 0]);
    let e = dir.single(&one_vm("file = \"initrd.gz\"", ""), 0, "kernel.file");
    assert!(e.to_string().contains("gzip-compressed data"), "{e}");
    // The same garbage as a raw binary loads.
    dir.validate(&one_vm(
        "file = \"junk.bin\"\ntype = \"raw\"\nload_addr = 0x100000\nentry = 0x100000",
        "",
    ))
    .unwrap();
    // An empty file.
    dir.write("empty", &[]);
    let e = dir.single(&one_vm("file = \"empty\"", ""), 0, "kernel.file");
    assert!(e.to_string().contains("the file is empty"), "{e}");
}

#[test]
fn a_type_that_does_not_match_the_file_names_file_vm_and_field() {
    let dir = Dir::new("mismatch");
    dir.write("k.bin", &multiboot_kernel(0x10_0000, 64));
    let e = dir.single(
        &one_vm("file = \"k.bin\"\ntype = \"bzimage\"", ""),
        0,
        "kernel.type",
    );
    let text = e.to_string();
    assert!(
        text.contains("kernel.type: \"bzimage\" does not match "),
        "{text}"
    );
    assert!(text.contains("k.bin, which is a binary with a Multiboot1 header (type \"multiboot\", or leave type out to detect it)"), "{text}");
    dir.write("bz", &fake_bzimage(4096));
    let e = dir.single(
        &one_vm("file = \"bz\"\ntype = \"elf64\"", ""),
        0,
        "kernel.type",
    );
    assert!(e.to_string().contains("which is a Linux bzImage"), "{e}");
}

#[test]
fn an_image_larger_than_ram_names_both_sizes() {
    let dir = Dir::new("large");
    dir.write("big.bin", &multiboot_kernel(0x10_0000, 33 << 20));
    let e = dir.single(&one_vm("file = \"big.bin\"", ""), 0, "kernel.file");
    let text = e.to_string();
    assert!(text.contains("kernel "), "{text}");
    assert!(
        text.contains(
            "big.bin is 34603008 bytes (33 MiB), larger than the VM's 32 MiB of RAM (memory_mib)"
        ),
        "{text}"
    );

    // A sparse 64 GiB file is refused by its size, never read.
    let huge = dir.0.join("huge.img");
    fs::File::create(&huge).unwrap().set_len(64 << 30).unwrap();
    let e = dir.single(&one_vm("file = \"huge.img\"", ""), 0, "kernel.file");
    assert!(
        e.to_string()
            .contains("is 68719476736 bytes (65536 MiB), larger than the VM's 32 MiB"),
        "{e}"
    );

    dir.write("bz", &fake_bzimage(20 << 20));
    dir.write("rd-big", &vec![0u8; 40 << 20]);
    let e = dir.single(
        &one_vm("file = \"bz\"", "initrd_file = \"rd-big\""),
        0,
        "initrd_file",
    );
    assert!(e.to_string().contains("initrd "), "{e}");
    assert!(
        e.to_string()
            .contains("rd-big is 41943040 bytes (40 MiB), larger than the VM's 32 MiB"),
        "{e}"
    );
    // Each fits, both together do not.
    dir.write("rd", &vec![0u8; 20 << 20]);
    let e = dir.single(
        &one_vm("file = \"bz\"", "initrd_file = \"rd\""),
        0,
        "initrd_file",
    );
    assert!(
        e.to_string()
            .contains("kernel (20971520 bytes) and initrd "),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("together are 41943040 bytes (40 MiB), more than the VM's 32 MiB of RAM"),
        "{e}"
    );
}

#[test]
fn a_kernel_the_loader_refuses_names_the_loaders_reason() {
    let dir = Dir::new("noload");
    // Loads at 64 MiB: past the VM's 32 MiB.
    dir.write("high.bin", &multiboot_kernel(0x400_0000, 64));
    let e = dir.single(&one_vm("file = \"high.bin\"", ""), 0, "kernel.file");
    let text = e.to_string();
    assert!(
        text.contains(
            "high.bin does not load as a \"multiboot\" kernel into the VM's 32 MiB of RAM: "
        ),
        "{text}"
    );
    // The fake bzImage has no valid setup header beyond its magic.
    dir.write("bz", &fake_bzimage(4096));
    let e = dir.single(&one_vm("file = \"bz\"", ""), 0, "kernel.file");
    assert!(
        e.to_string()
            .contains("does not load as a \"bzimage\" kernel"),
        "{e}"
    );
}

#[test]
fn module_and_file_together_are_refused() {
    let dir = Dir::new("both");
    dir.write("k.bin", &multiboot_kernel(0x10_0000, 64));
    let e = dir.single(
        &one_vm(
            "module = \"test-guest\"\nfile = \"k.bin\"\ntype = \"multiboot\"",
            "",
        ),
        0,
        "kernel.file",
    );
    assert_eq!(
        e.kind,
        ErrorKind::BothGiven {
            other: "kernel.module".into()
        }
    );
    dir.write("rd", &[1, 2, 3]);
    let e = dir.single(
        &one_vm(
            "module = \"linux\"\ntype = \"bzimage\"",
            "initrd = \"initrd\"\ninitrd_file = \"rd\"",
        ),
        0,
        "initrd_file",
    );
    assert_eq!(
        e.kind,
        ErrorKind::BothGiven {
            other: "initrd".into()
        }
    );
    // An initrd file for a Multiboot kernel.
    let e = dir.single(
        &one_vm("file = \"k.bin\"", "initrd_file = \"rd\""),
        0,
        "initrd_file",
    );
    assert!(matches!(e.kind, ErrorKind::InitrdNotLinux { .. }), "{e}");
}

#[test]
fn disk_files() {
    let dir = Dir::new("disks");
    dir.write("k.bin", &multiboot_kernel(0x10_0000, 4096));
    dir.write("disk.img", &vec![0u8; 4096]);
    dir.write("other/disk.img", &vec![0u8; 1024]);
    dir.write("odd.img", &vec![0u8; 1000]);
    dir.write("empty.img", &[]);
    let blk = |file: &str, readonly: bool| {
        format!("[[vm.virtio]]\ntype = \"blk\"\nfile = \"{file}\"\nreadonly = {readonly}\n")
    };
    let two_vms = |first: &str, second: &str| {
        format!(
            "{}[[vm]]\nname = \"b\"\nload_order = \"pre-launched\"\npcpus = [2]\nmemory_mib = 32\n[vm.kernel]\nfile = \"k.bin\"\n{second}",
            one_vm("file = \"k.bin\"", "").replace("[vm.kernel]", &format!("{first}[vm.kernel]"))
        )
    };
    // Two files of one name are two modules; one file shared read-only is one.
    let v = dir
        .validate(&two_vms(
            &(blk("disk.img", true) + &blk("other/disk.img", false)),
            &blk("./disk.img", true),
        ))
        .unwrap();
    let disks: Vec<&VirtioDevice> = v
        .vms
        .iter()
        .flat_map(|vm| vm.virtio.iter().map(|d| &d.kind))
        .collect();
    assert_eq!(
        disks,
        [
            &VirtioDevice::Blk {
                module: "file-disk.img".into(),
                readonly: true
            },
            &VirtioDevice::Blk {
                module: "file-disk.img-2".into(),
                readonly: false
            },
            &VirtioDevice::Blk {
                module: "file-disk.img".into(),
                readonly: true
            },
        ]
    );
    assert_eq!(
        v.modules(),
        ["file-k.bin", "file-disk.img", "file-disk.img-2"]
    );
    // Shared writable: the file, as its field.
    let errors = dir
        .validate(&two_vms(&blk("disk.img", false), &blk("disk.img", true)))
        .unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, "virtio[0].file");
    assert!(
        matches!(errors[0].kind, ErrorKind::DiskShared { .. }),
        "{}",
        errors[0]
    );
    // A disk that is also the kernel.
    let errors = dir
        .validate(&two_vms(&blk("k.bin", false), ""))
        .unwrap_err();
    assert!(
        errors[0]
            .to_string()
            .contains("is also the kernel.file of vm \"a\""),
        "{}",
        errors[0]
    );
    // Sizes.
    let e = dir.single(
        &one_vm("file = \"k.bin\"", &blk("odd.img", false)),
        0,
        "virtio[0].file",
    );
    assert!(
        e.to_string()
            .contains("odd.img is 1000 bytes: not a whole number of 512-byte sectors"),
        "{e}"
    );
    let e = dir.single(
        &one_vm("file = \"k.bin\"", &blk("empty.img", false)),
        0,
        "virtio[0].file",
    );
    assert!(
        e.to_string()
            .contains("is 0 bytes: an empty disk has no sector"),
        "{e}"
    );
    let e = dir.single(
        &one_vm("file = \"k.bin\"", &blk("missing.img", false)),
        0,
        "virtio[0].file",
    );
    assert!(matches!(e.kind, ErrorKind::FileUnreadable { .. }), "{e}");
    let huge = dir.0.join("huge.img");
    fs::File::create(&huge).unwrap().set_len(4 << 30).unwrap();
    let e = dir.single(
        &one_vm("file = \"k.bin\"", &blk("huge.img", false)),
        0,
        "virtio[0].file",
    );
    assert!(
        e.to_string().contains(
            "is 4294967296 bytes (4096 MiB), more than the 2048 MiB of RAM of board \"qemu\""
        ),
        "{e}"
    );
    // Both module and file; file on a device that is not blk.
    let e = dir.single(
        &one_vm(
            "file = \"k.bin\"",
            "[[vm.virtio]]\ntype = \"blk\"\nmodule = \"test-guest\"\nfile = \"disk.img\"\n",
        ),
        0,
        "virtio[0].file",
    );
    assert_eq!(
        e.kind,
        ErrorKind::BothGiven {
            other: "virtio[0].module".into()
        }
    );
    let e = dir.single(
        &one_vm(
            "file = \"k.bin\"",
            "[[vm.virtio]]\ntype = \"rng\"\nfile = \"disk.img\"\n",
        ),
        0,
        "virtio[0].file",
    );
    assert!(
        matches!(e.kind, ErrorKind::VirtioFieldNotForType { .. }),
        "{e}"
    );
}

#[test]
fn absolute_paths_work_too() {
    let dir = Dir::new("absolute");
    let path = dir.write("k.bin", &multiboot_kernel(0x10_0000, 64));
    let text = one_vm(&format!("file = {:?}", path.display().to_string()), "");
    let v = dir.validate(&text).unwrap();
    assert_eq!(v.files[0].path, fs::canonicalize(path).unwrap());
}
