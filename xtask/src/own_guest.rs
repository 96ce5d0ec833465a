//! A user's own guest: scenarios that name files (staged as boot modules), `cargo xtask run
//! --guest FILE [--initrd FILE] [--disk FILE]...` (a one-VM scenario written for the run, or the
//! kernel of a VM of `--scenario` replaced), and the files of the `own-guest-*` test case.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use toml::{Table, Value};

use crate::runner::Emulator;

/// Where generated scenarios go (`target/scenarios/`).
pub fn scenarios_dir(root: &Path) -> PathBuf {
    root.join("target/scenarios")
}

/// The boards of `scenario`: the `boards/` directory beside it when there is one (as for
/// `configs/*.toml`), else the workspace's `configs/boards/` (a user's scenario elsewhere).
pub fn boards_for(root: &Path, scenario: &Path) -> PathBuf {
    let beside = configurator::boards_dir_for(scenario);
    if beside.is_dir() {
        beside
    } else {
        root.join("configs/boards")
    }
}

/// Links each file module under `target/modules/files/<module name>` and returns that path: one
/// word without spaces or commas whatever the user's path (QEMU's `-initrd` splits at both), and a
/// file name unique in a GRUB ISO's `boot/` (two users' files may both be `disk.img`).
pub fn stage(root: &Path, file: &configurator::FileModule) -> Result<PathBuf> {
    let dir = root.join("target/modules/files");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let link = dir.join(&file.name);
    if std::fs::read_link(&link).ok().as_deref() != Some(file.path.as_path()) {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&file.path, &link)
            .with_context(|| format!("linking {} to {}", link.display(), file.path.display()))?;
    }
    Ok(link)
}

/// What `cargo xtask run` was told about the user's guest.
#[derive(Clone, Debug, Default)]
pub struct GuestFiles {
    /// The kernel file.
    pub kernel: Option<PathBuf>,
    /// `kernel.type`, when detection is not wanted (or not possible).
    pub kind: Option<String>,
    /// The initrd file.
    pub initrd: Option<PathBuf>,
    /// The guest's command line.
    pub cmdline: Option<String>,
    /// Disk image files, each a writable virtio-blk device.
    pub disks: Vec<PathBuf>,
    /// The VM's RAM in MiB.
    pub mem_mib: Option<u64>,
    /// With a scenario: the VM whose kernel is replaced (default: the first).
    pub vm: Option<String>,
}

impl GuestFiles {
    /// Whether anything was given.
    pub fn any(&self) -> bool {
        self.kernel.is_some() || self.initrd.is_some() || !self.disks.is_empty()
    }
}

fn absolute(path: &Path) -> Result<String> {
    let abs = std::path::absolute(path).with_context(|| format!("path {}", path.display()))?;
    abs.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not valid UTF-8", abs.display()))
}

/// Whether the kernel file is Linux (bzImage or PVH vmlinux): its default command line is then
/// `console=ttyS0`, so that its output reaches the VM's vUART.
fn is_linux(kernel: &Path) -> bool {
    let Ok(bytes) = std::fs::read(kernel) else {
        return false;
    };
    let detected = configurator::Detected::of(&bytes);
    detected.bzimage || detected.elf.is_some_and(|e| e.pvh)
}

fn write_scenario(root: &Path, name: &str, doc: &Table) -> Result<PathBuf> {
    let dir = scenarios_dir(root);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "# Written by `cargo xtask run` for this run; file paths are absolute.\n{}",
        toml::to_string(doc).context("writing the scenario")?
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn str_value(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

/// Puts the user's files into VM table `vm`: kernel (replacing `module`, `type` unless given,
/// `load_addr`/`entry`), initrd, command line, disks.
fn apply(vm: &mut Table, guest: &GuestFiles) -> Result<()> {
    if let Some(kernel) = &guest.kernel {
        let mut table = Table::new();
        table.insert("file".into(), str_value(absolute(kernel)?));
        if let Some(kind) = &guest.kind {
            table.insert("type".into(), str_value(kind.clone()));
        }
        let cmdline = match &guest.cmdline {
            Some(cmdline) => cmdline.clone(),
            None if is_linux(kernel) => "console=ttyS0".to_owned(),
            None => String::new(),
        };
        table.insert("cmdline".into(), str_value(cmdline));
        vm.insert("kernel".into(), Value::Table(table));
        vm.remove("modules");
    } else if let Some(cmdline) = &guest.cmdline {
        if let Some(Value::Table(kernel)) = vm.get_mut("kernel") {
            kernel.insert("cmdline".into(), str_value(cmdline.clone()));
        }
    }
    if let Some(initrd) = &guest.initrd {
        vm.remove("initrd");
        vm.insert("initrd_file".into(), str_value(absolute(initrd)?));
    }
    if let Some(mib) = guest.mem_mib {
        let mib = i64::try_from(mib).context("--guest-mem is too large")?;
        vm.insert("memory_mib".into(), Value::Integer(mib));
    }
    if !guest.disks.is_empty() {
        let list = vm
            .entry("virtio")
            .or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(list) = list else {
            bail!("the VM's `virtio` is not a list of tables");
        };
        for disk in &guest.disks {
            let mut device = Table::new();
            device.insert("type".into(), str_value("blk"));
            device.insert("file".into(), str_value(absolute(disk)?));
            list.push(Value::Table(device));
        }
    }
    Ok(())
}

/// RAM for a one-VM scenario: `--guest-mem`, else 256 MiB, or more when the kernel and initrd
/// need it (twice their size, rounded up to 64 MiB, as the kernel unpacks the initrd).
fn default_mem_mib(guest: &GuestFiles) -> u64 {
    let size = |p: &Option<PathBuf>| {
        p.as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    };
    let need = (size(&guest.kernel) + size(&guest.initrd)) * 2;
    need.div_ceil(64 << 20).saturating_mul(64).max(256)
}

/// A scenario of one VM `guest` (pCPU 1, a vUART on COM1) booting the user's files, on the board
/// of `emulator`, written to `target/scenarios/own-guest.toml`.
pub fn one_vm_scenario(root: &Path, emulator: Emulator, guest: &GuestFiles) -> Result<PathBuf> {
    if guest.kernel.is_none() {
        bail!("--initrd and --disk without a scenario need --guest KERNEL (or give --scenario)");
    }
    let board = match emulator {
        Emulator::Qemu => "qemu",
        _ => "bochs",
    };
    let mut vm = Table::new();
    vm.insert("name".into(), str_value("guest"));
    vm.insert("load_order".into(), str_value("pre-launched"));
    vm.insert("pcpus".into(), Value::Array(vec![Value::Integer(1)]));
    let mib = guest.mem_mib.unwrap_or_else(|| default_mem_mib(guest));
    vm.insert("memory_mib".into(), Value::Integer(mib as i64));
    let mut console = Table::new();
    console.insert("vuart".into(), str_value("com1"));
    vm.insert("console".into(), Value::Table(console));
    apply(&mut vm, guest)?;
    let mut doc = Table::new();
    doc.insert("name".into(), str_value("own-guest"));
    doc.insert("board".into(), str_value(board));
    doc.insert("vm".into(), Value::Array(vec![Value::Table(vm)]));
    write_scenario(root, "own-guest", &doc)
}

/// `scenario` with the user's files put into VM `guest.vm` (default: the first), written to
/// `target/scenarios/<stem>-own.toml`. The scenario's other relative file paths are made
/// absolute, as the copy lives elsewhere.
pub fn override_scenario(root: &Path, scenario: &Path, guest: &GuestFiles) -> Result<PathBuf> {
    let text = std::fs::read_to_string(scenario)
        .with_context(|| format!("reading {}", scenario.display()))?;
    let mut doc: Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", scenario.display()))?;
    let stem = scenario
        .file_stem()
        .map_or("scenario".into(), |s| s.to_string_lossy().into_owned());
    if !doc.contains_key("name") {
        doc.insert("name".into(), str_value(stem.clone()));
    }
    let Some(Value::Array(vms)) = doc.get_mut("vm") else {
        bail!("{} has no [[vm]] tables", scenario.display());
    };
    let mut names = Vec::new();
    let mut target = None;
    for (i, vm) in vms.iter_mut().enumerate() {
        let Value::Table(vm) = vm else { continue };
        absolutize(scenario, vm)?;
        let name = vm
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if target.is_none() && guest.vm.as_deref().is_none_or(|want| want == name) {
            target = Some(i);
        }
        names.push(name);
    }
    let Some(index) = target else {
        bail!(
            "--vm {}: {} has no such VM (its VMs: {})",
            guest.vm.as_deref().unwrap_or(""),
            scenario.display(),
            names.join(", ")
        );
    };
    if let Some(Value::Table(vm)) = vms.get_mut(index) {
        apply(vm, guest)?;
    }
    write_scenario(root, &format!("{stem}-own"), &doc)
}

/// Makes the relative `kernel.file`, `initrd_file` and blk `file` paths of VM table `vm` absolute
/// (relative to `scenario`'s directory).
fn absolutize(scenario: &Path, vm: &mut Table) -> Result<()> {
    let fix = |value: &mut Value| -> Result<()> {
        if let Value::String(written) = value {
            *written = absolute(&configurator::resolve_path(scenario, written))?;
        }
        Ok(())
    };
    if let Some(Value::Table(kernel)) = vm.get_mut("kernel") {
        if let Some(file) = kernel.get_mut("file") {
            fix(file)?;
        }
    }
    if let Some(file) = vm.get_mut("initrd_file") {
        fix(file)?;
    }
    if let Some(Value::Array(devices)) = vm.get_mut("virtio") {
        for device in devices {
            if let Some(file) = device.as_table_mut().and_then(|d| d.get_mut("file")) {
                fix(file)?;
            }
        }
    }
    Ok(())
}

/// The scenario of the `own-guest-*` test cases: a user's directory `dir` holding a scenario, the test guest's ELF as `images/my-kernel.elf` (named by `kernel.file`
/// without a type: detected as Multiboot) and a 64 KiB disk `images/my-disk.img` (a blk device's
/// `file`); returns the scenario's path.
pub fn test_scenario(dir: &Path, test_guest: &Path) -> Result<PathBuf> {
    let images = dir.join("images");
    std::fs::create_dir_all(&images)?;
    std::fs::copy(test_guest, images.join("my-kernel.elf"))
        .with_context(|| format!("copying {}", test_guest.display()))?;
    std::fs::write(images.join("my-disk.img"), vec![0x5Au8; 64 << 10])?;
    let scenario = dir.join("my-guest.toml");
    std::fs::write(&scenario, TEST_SCENARIO)?;
    Ok(scenario)
}

/// See [`test_scenario`].
pub const TEST_SCENARIO: &str = r#"# A user's own guest: every image is a file next to this scenario.
board = "qemu"

[[vm]]
name = "own"
load_order = "pre-launched"
pcpus = [1]
memory_mib = 32

[vm.kernel]
file = "images/my-kernel.elf"

[vm.console]
vuart = "com1"

[[vm.virtio]]
type = "blk"
file = "images/my-disk.img"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-own-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn one_vm_scenario_names_the_files_absolutely() {
        let root = temp("one");
        let kernel = root.join("k.elf");
        std::fs::write(&kernel, b"x").unwrap();
        let guest = GuestFiles {
            kernel: Some(kernel.clone()),
            disks: vec![root.join("d.img")],
            cmdline: Some("hello world".into()),
            ..Default::default()
        };
        let path = one_vm_scenario(&root, Emulator::Bochs, &guest).unwrap();
        let doc: Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        assert_eq!(doc["board"].as_str(), Some("bochs"));
        let vm = doc["vm"].as_array().unwrap()[0].as_table().unwrap();
        assert_eq!(vm["memory_mib"].as_integer(), Some(256));
        assert_eq!(
            vm["kernel"]["file"].as_str(),
            Some(kernel.to_str().unwrap())
        );
        assert_eq!(vm["kernel"]["cmdline"].as_str(), Some("hello world"));
        assert!(vm["kernel"].get("type").is_none());
        let disk = &vm["virtio"].as_array().unwrap()[0];
        assert_eq!(
            disk["file"].as_str(),
            Some(root.join("d.img").to_str().unwrap())
        );
        assert!(one_vm_scenario(&root, Emulator::Qemu, &GuestFiles::default()).is_err());
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn override_replaces_one_vms_kernel_and_keeps_the_rest() {
        let root = temp("override");
        let scenario = root.join("s.toml");
        std::fs::write(
            &scenario,
            "board = \"qemu\"\n[[vm]]\nname = \"a\"\nload_order = \"pre-launched\"\npcpus = [1]\nmemory_mib = 32\nmodules = [\"testdata\"]\n[vm.kernel]\nmodule = \"test-guest\"\ntype = \"multiboot\"\n[[vm]]\nname = \"b\"\nload_order = \"pre-launched\"\npcpus = [2]\nmemory_mib = 32\ninitrd = \"initrd\"\n[vm.kernel]\nfile = \"rel/k\"\n",
        )
        .unwrap();
        let guest = GuestFiles {
            kernel: Some(root.join("mine.elf")),
            initrd: Some(root.join("rd")),
            vm: Some("b".into()),
            ..Default::default()
        };
        let path = override_scenario(&root, &scenario, &guest).unwrap();
        assert_eq!(path, root.join("target/scenarios/s-own.toml"));
        let doc: Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        assert_eq!(doc["name"].as_str(), Some("s"));
        let vms = doc["vm"].as_array().unwrap();
        assert_eq!(vms[0]["kernel"]["module"].as_str(), Some("test-guest"));
        assert_eq!(
            vms[1]["kernel"]["file"].as_str(),
            Some(root.join("mine.elf").to_str().unwrap())
        );
        assert!(vms[1].get("initrd").is_none());
        assert_eq!(
            vms[1]["initrd_file"].as_str(),
            Some(root.join("rd").to_str().unwrap())
        );
        let bad = GuestFiles {
            vm: Some("zz".into()),
            ..guest
        };
        let err = override_scenario(&root, &scenario, &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no such VM (its VMs: a, b)"), "{err}");
        // Without --vm the first VM's kernel is replaced, its Multiboot modules dropped.
        let first = GuestFiles {
            kernel: Some(root.join("mine.elf")),
            ..Default::default()
        };
        let doc: Table =
            std::fs::read_to_string(override_scenario(&root, &scenario, &first).unwrap())
                .unwrap()
                .parse()
                .unwrap();
        let vms = doc["vm"].as_array().unwrap();
        assert!(vms[0]["kernel"].get("module").is_none());
        assert!(vms[0].get("modules").is_none());
        // The untouched VM's relative file became absolute.
        assert_eq!(
            vms[1]["kernel"]["file"].as_str(),
            Some(root.join("rel/k").to_str().unwrap())
        );
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn the_test_scenario_validates_with_its_files() {
        let dir = temp("test-scenario");
        let kernel = dir.join("lowload.bin");
        std::fs::write(&kernel, crate::build::lowload_image()).unwrap();
        let path = test_scenario(&dir.join("user"), &kernel).unwrap();
        let boards = crate::workspace_root().join("configs/boards");
        let v = configurator::load(&path, &boards, configurator::Modules::Unchecked).unwrap();
        assert_eq!(v.modules(), ["file-my-kernel.elf", "file-my-disk.img"]);
        assert_eq!(v.vms[0].kernel.kind, scenario::KernelKind::Multiboot1);
        assert_eq!(boards_for(crate::workspace_root().as_path(), &path), boards);
        // Staged under the module name, pointing at the user's file.
        let staged = stage(&dir, &v.files[0]).unwrap();
        assert_eq!(staged, dir.join("target/modules/files/file-my-kernel.elf"));
        assert_eq!(
            std::fs::read(&staged).unwrap(),
            crate::build::lowload_image()
        );
        assert_eq!(stage(&dir, &v.files[0]).unwrap(), staged);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn default_memory_grows_with_the_images() {
        let root = temp("mem");
        let big = root.join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(200 << 20)
            .unwrap();
        let guest = GuestFiles {
            kernel: Some(big),
            ..Default::default()
        };
        assert_eq!(default_mem_mib(&guest), 448);
        assert_eq!(default_mem_mib(&GuestFiles::default()), 256);
        let _ = std::fs::remove_dir_all(root);
    }
}
