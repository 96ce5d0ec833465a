//! The `disk` boot module: a small ext4 image for the virtio-blk tests, made at test time with
//! `mke2fs -d` from files generated here and cached in `target/guest-images/disk/` (nothing
//! prebuilt is committed).
//!
//! The image holds `hello.txt` ([`HELLO_TXT`]) and `data.bin` ([`data_bin`]: [`DATA_LEN`]
//! pseudo-random bytes from a fixed seed). The Linux guest's `quercus.test=virtio-blk` mode prints
//! the SHA-256 of both, writes `written.txt` ([`written_txt`]), reboots and prints that file's
//! SHA-256; the test cases compare each with [`sha256_hex`] of the same bytes, computed here.
//!
//! `mke2fs` runs with everything that would vary pinned (UUID, directory hash seed, owner, time
//! through `E2FSPROGS_FAKE_TIME`, its own configuration file instead of the host's
//! `/etc/mke2fs.conf`, no lazy initialisation), and `debugfs` then sets the inode times it copied
//! from the staging files: the same inputs and e2fsprogs give the same image, byte for byte.
//!
//! The cached image is never written by a run: the hypervisor gets it as a boot module, and a
//! native QEMU run that lets its guest write gets a copy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Size of the image (MiB).
pub const DISK_MIB: u64 = 32;
/// `hello.txt`.
pub const HELLO_TXT: &[u8] = b"Hello from the Quercus virtio-blk disk image.\n";
/// Length of `data.bin`.
pub const DATA_LEN: usize = 1 << 20;
/// Seed of `data.bin`'s SplitMix64 stream.
pub const DATA_SEED: u64 = 0x5155_4552_4355_5301;
/// How many lines the guest writes to `written.txt` (`seq 1 N` in the /init script).
pub const WRITTEN_LINES: u32 = 128;
/// Each line of `written.txt` is this, a space, its number (from 1) and a newline.
pub const WRITTEN_LINE_PREFIX: &str = "written by quercus vm, line";
/// Bump when the image changes in a way the manifest does not show.
const LAYOUT_VERSION: u32 = 1;
/// The filesystem's UUID and its directory hash seed (`mke2fs -U`, `-E hash_seed=`).
const FS_UUID: &str = "6f1b0c2e-4d3a-4c5b-9e8f-0a1b2c3d4e5f";
const HASH_SEED: &str = "0b6e4c1a-2f3d-4e5b-8a9c-1d2e3f405162";
/// Every timestamp in the image (2023-11-14 22:13:20 UTC).
const FS_TIME: u64 = 1_700_000_000;
/// The files in the image, as `debugfs` names them.
const FILES: [&str; 2] = ["/hello.txt", "/data.bin"];

/// The `mke2fs.conf` the image is made with (the host's may enable features the guest kernel
/// lacks, e.g. `orphan_file` before Linux 5.15).
const MKE2FS_CONF: &str = "\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

/// SplitMix64 (Steele, Lea and Flood): a tiny generator with well-known outputs.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `len` bytes of the SplitMix64 stream from `seed`, each output little-endian.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(len.next_multiple_of(8));
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `data.bin`.
pub fn data_bin() -> Vec<u8> {
    pseudo_random_bytes(DATA_SEED, DATA_LEN)
}

/// What the guest writes to `written.txt`: `WRITTEN_LINE_PREFIX n` for n in 1..=WRITTEN_LINES.
pub fn written_txt() -> Vec<u8> {
    (1..=WRITTEN_LINES)
        .map(|n| format!("{WRITTEN_LINE_PREFIX} {n}\n"))
        .collect::<String>()
        .into_bytes()
}

/// SHA-256 of `bytes` as 64 lowercase hex digits (what `sha256sum` prints).
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The SHA-256 a guest must print for each file: (hello.txt, data.bin, written.txt).
pub fn expected_hashes() -> (String, String, String) {
    (
        sha256_hex(HELLO_TXT),
        sha256_hex(&data_bin()),
        sha256_hex(&written_txt()),
    )
}

/// `mke2fs` arguments that make `image` from the directory `root`.
pub fn mke2fs_args(root: &Path, image: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "-q",
        "-F",
        "-t",
        "ext4",
        // Only the configuration's defaults: no "small" usage type picked by size.
        "-T",
        "default",
        "-L",
        "quercus-disk",
        "-m",
        "0",
        "-U",
        FS_UUID,
        "-E",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!(
        "root_owner=0:0,hash_seed={HASH_SEED},lazy_itable_init=0,lazy_journal_init=0,nodiscard"
    ));
    args.push("-d".into());
    args.push(root.display().to_string());
    args.push(image.display().to_string());
    args.push(format!("{DISK_MIB}M"));
    args
}

/// `debugfs` commands that give the files `mke2fs -d` copied a fixed owner (root) and every
/// timestamp [`FS_TIME`]: it takes both from the staging files, whose change time no one can set
/// and whose owner is whoever runs xtask.
pub fn debugfs_commands() -> String {
    let mut out = String::new();
    for file in FILES {
        for field in ["uid", "gid"] {
            out.push_str(&format!("sif {file} {field} 0\n"));
        }
        for field in ["atime", "ctime", "mtime", "crtime"] {
            out.push_str(&format!("sif {file} {field} @{FS_TIME}\n"));
        }
    }
    out
}

/// Every input of the image, one `key=value` a line.
fn inputs_manifest(e2fsprogs: &str) -> String {
    format!(
        "layout={LAYOUT_VERSION}\ne2fsprogs={e2fsprogs}\nmke2fs_args={}\nconf={:016x}\ndebugfs={:016x}\n\
         hello={}\ndata={}\n",
        mke2fs_args(Path::new("ROOT"), Path::new("IMAGE")).join(" "),
        crate::linux_image::fnv1a64(MKE2FS_CONF.as_bytes()),
        crate::linux_image::fnv1a64(debugfs_commands().as_bytes()),
        sha256_hex(HELLO_TXT),
        sha256_hex(&data_bin()),
    )
}

/// The line of the stamp that records the image file as it was written (size and mtime): a file
/// changed since (e.g. by a run that wrote to it) no longer matches.
fn file_line(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?;
    Some(format!(
        "image={} {}.{:09}\n",
        meta.len(),
        mtime.as_secs(),
        mtime.subsec_nanos()
    ))
}

/// An e2fsprogs program: on PATH, else in /usr/sbin or /sbin (not on a normal user's PATH).
fn e2fs_tool(name: &str) -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    on_path
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("`{name}` not found: install the e2fsprogs package"))
}

/// `mke2fs -V`'s first line, e.g. `mke2fs 1.47.0 (5-Feb-2023)`.
fn e2fsprogs_version(mke2fs: &Path) -> Result<String> {
    let out = Command::new(mke2fs)
        .arg("-V")
        .output()
        .with_context(|| format!("running {} -V", mke2fs.display()))?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("unknown").trim().to_string())
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "`{what}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Writes the image to `image` (through a staging directory beside it).
pub fn make_image(image: &Path) -> Result<()> {
    let mke2fs = e2fs_tool("mke2fs")?;
    let debugfs = e2fs_tool("debugfs")?;
    let dir = image.parent().context("image path has no parent")?;
    let staging = dir.join(format!("staging-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    let root = staging.join("root");
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let result = (|| {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(FS_TIME);
        for (name, bytes) in [("hello.txt", HELLO_TXT.to_vec()), ("data.bin", data_bin())] {
            let path = root.join(name);
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
            let file = std::fs::File::options().write(true).open(&path)?;
            file.set_times(
                std::fs::FileTimes::new()
                    .set_accessed(time)
                    .set_modified(time),
            )?;
        }
        let conf = staging.join("mke2fs.conf");
        std::fs::write(&conf, MKE2FS_CONF)?;
        let tmp = staging.join("disk.img");
        run(
            "mke2fs",
            Command::new(&mke2fs)
                .args(mke2fs_args(&root, &tmp))
                .env("MKE2FS_CONFIG", &conf)
                .env("E2FSPROGS_FAKE_TIME", FS_TIME.to_string()),
        )?;
        let cmds = staging.join("debugfs.cmds");
        std::fs::write(&cmds, debugfs_commands())?;
        run(
            "debugfs",
            Command::new(&debugfs)
                .arg("-w")
                .arg("-f")
                .arg(&cmds)
                .arg(&tmp)
                .env("E2FSPROGS_FAKE_TIME", FS_TIME.to_string()),
        )?;
        std::fs::rename(&tmp, image).with_context(|| format!("renaming to {}", image.display()))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// `<root>/target/guest-images/disk/disk.img`, built when missing or stale; checked once per
/// xtask process.
pub fn disk_image(root: &Path) -> Result<PathBuf> {
    static CHECKED: std::sync::Mutex<Option<(PathBuf, PathBuf)>> = std::sync::Mutex::new(None);
    let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((r, image)) = checked.as_ref() {
        if r == root {
            return Ok(image.clone());
        }
    }
    let image = build(root, false)?;
    *checked = Some((root.to_path_buf(), image.clone()));
    Ok(image)
}

/// Build the disk image unless the stamp says the cached one is current (`force`: always).
pub fn build(root: &Path, force: bool) -> Result<PathBuf> {
    let dir = crate::linux_image::images_dir(root).join("disk");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let image = dir.join("disk.img");
    let stamp_path = dir.join("stamp");
    let manifest = inputs_manifest(&e2fsprogs_version(&e2fs_tool("mke2fs")?)?);
    if !force {
        if let (Ok(stamp), Some(file)) = (std::fs::read_to_string(&stamp_path), file_line(&image)) {
            if stamp == format!("{manifest}{file}") {
                return Ok(image);
            }
        }
    }
    let _ = std::fs::remove_file(&stamp_path);
    make_image(&image)?;
    let file = file_line(&image).context("the new disk image vanished")?;
    std::fs::write(&stamp_path, format!("{manifest}{file}"))?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_outputs() {
        // The first outputs from seed 0 of the reference implementation (Vigna's splitmix64.c).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(rng.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn pseudo_random_bytes_are_deterministic_and_spread() {
        let a = data_bin();
        assert_eq!(a.len(), DATA_LEN);
        assert_eq!(a, data_bin(), "same seed, same bytes");
        assert_ne!(a, pseudo_random_bytes(DATA_SEED + 1, DATA_LEN));
        // A prefix of a longer stream, little-endian words, any length.
        let head = pseudo_random_bytes(DATA_SEED, 13);
        assert_eq!(head, a[..13]);
        let first = SplitMix64::new(DATA_SEED).next_u64();
        assert_eq!(a[..8], first.to_le_bytes());
        // Every byte value about equally often (4096 expected per value).
        let mut counts = [0u32; 256];
        for &b in &a {
            counts[usize::from(b)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (3500..4700).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn sha256_known_vectors() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let (hello, data, written) = expected_hashes();
        assert_eq!(hello, sha256_hex(HELLO_TXT));
        assert_ne!(hello, data);
        assert_ne!(data, written);
        for h in [hello, data, written] {
            assert!(
                h.len() == 64
                    && h.bytes()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
    }

    #[test]
    fn written_txt_is_a_few_kib_of_numbered_lines() {
        let text = String::from_utf8(written_txt()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), WRITTEN_LINES as usize);
        assert_eq!(lines[0], "written by quercus vm, line 1");
        assert_eq!(lines[127], "written by quercus vm, line 128");
        assert!(text.ends_with('\n'));
        assert!((2048..8192).contains(&text.len()), "{}", text.len());
    }

    #[test]
    fn mke2fs_is_pinned() {
        let args = mke2fs_args(Path::new("/r"), Path::new("/i.img")).join(" ");
        for needle in [
            "-t ext4",
            "-T default",
            &format!("-U {FS_UUID}"),
            "root_owner=0:0",
            &format!("hash_seed={HASH_SEED}"),
            "lazy_itable_init=0",
            "lazy_journal_init=0",
            "-d /r /i.img 32M",
        ] {
            assert!(args.contains(needle), "{needle} in {args}");
        }
        assert!(MKE2FS_CONF.contains("metadata_csum"));
        let cmds = debugfs_commands();
        assert_eq!(cmds.lines().count(), 12);
        assert!(cmds.contains("sif /hello.txt uid 0\n"));
        assert!(cmds.contains("sif /data.bin ctime @1700000000\n"));
    }

    #[test]
    fn manifest_names_every_input() {
        let m = inputs_manifest("mke2fs 1.47.0 (5-Feb-2023)");
        assert!(m.contains("e2fsprogs=mke2fs 1.47.0"));
        assert!(m.contains(&format!("data={}", sha256_hex(&data_bin()))));
        assert_ne!(m, inputs_manifest("mke2fs 1.47.1 (20-May-2024)"));
    }

    /// `debugfs -R "cat PATH"` of `image`.
    fn debugfs_cat(image: &Path, path: &str) -> Vec<u8> {
        let out = Command::new(e2fs_tool("debugfs").unwrap())
            .arg("-R")
            .arg(format!("cat {path}"))
            .arg(image)
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    }

    /// Builds the image twice (needs e2fsprogs): identical bytes, the right size, and the files
    /// read back through debugfs are the generated ones; a stale stamp rebuilds.
    #[test]
    fn image_is_reproducible_and_holds_the_files() {
        let root = std::env::temp_dir().join(format!("quercus-disk-{}", std::process::id()));
        let a = build(&root, false).unwrap();
        assert_eq!(a, root.join("target/guest-images/disk/disk.img"));
        let first = std::fs::read(&a).unwrap();
        assert_eq!(first.len() as u64, DISK_MIB << 20);
        assert_eq!(debugfs_cat(&a, "/hello.txt"), HELLO_TXT);
        assert_eq!(
            sha256_hex(&debugfs_cat(&a, "/data.bin")),
            sha256_hex(&data_bin())
        );
        // The stamp matches: not rebuilt (same mtime).
        let stamp = std::fs::read_to_string(a.with_file_name("stamp")).unwrap();
        build(&root, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(a.with_file_name("stamp")).unwrap(),
            stamp
        );
        // Changed behind the stamp's back: rebuilt, to the same bytes.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&a, b"scribbled").unwrap();
        build(&root, false).unwrap();
        assert_eq!(
            std::fs::read(&a).unwrap(),
            first,
            "rebuild is byte-identical"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
