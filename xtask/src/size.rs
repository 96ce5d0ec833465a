//! `cargo xtask bench size`: the release hypervisor image's footprint, its
//! sections and what fills them, by crate (from the demangled symbol names)
//! and by symbol.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::build::{self, BuildOptions, Profile};
use crate::workspace_root;

/// The sections reported, in image order.
pub const SECTIONS: [&str; 4] = [".text", ".rodata", ".data", ".bss"];
/// Crates listed per section.
const TOP_CRATES: usize = 8;
/// Symbols listed overall.
const TOP_SYMBOLS: usize = 15;

/// One sized symbol of the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sym {
    /// Demangled, without the `::h<hash>` suffix.
    pub name: String,
    pub section: String,
    pub size: u64,
}

/// Where a symbol's bytes are charged when its name names no crate: the
/// compiler's anonymous constants (string literals, tables) and symbols
/// defined by assembly or the linker script.
pub const ANON: &str = "(anonymous constants)";
pub const NON_RUST: &str = "(assembly, linker)";

/// The crate a demangled symbol name belongs to: the first path segment;
/// for `<T as Trait>::f` and `<T>::f` the crate of `T` (the implementing
/// type, where the code was written), or of `Trait` when `T` is no path
/// (`<&str as core::fmt::Display>`, `<[u8]>`).
pub fn crate_of(name: &str) -> &str {
    if name.starts_with("anon.") || name.starts_with(".L") {
        return ANON;
    }
    if let Some(inner) = name.strip_prefix('<') {
        let self_ty = inner
            .trim_start_matches(['&', '*', '['])
            .trim_start_matches("mut ")
            .trim_start_matches("const ")
            .trim_start_matches("dyn ");
        if let Some(c) = path_crate(self_ty) {
            return c;
        }
        if let Some((_, tr)) = inner.split_once(" as ") {
            if let Some(c) = path_crate(tr) {
                return c;
            }
        }
        return NON_RUST;
    }
    path_crate(name).unwrap_or(NON_RUST)
}

/// The first segment of `a::b...` if it is an identifier followed by `::`.
fn path_crate(s: &str) -> Option<&str> {
    let end = s.find("::")?;
    let head = &s[..end];
    let ident = !head.is_empty()
        && head.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !head.starts_with(|c: char| c.is_ascii_digit());
    ident.then_some(head)
}

/// The per-crate hash of an anonymous constant's name (`anon.<hash>.<n>`).
pub fn anon_hash(name: &str) -> Option<&str> {
    let h = name.strip_prefix("anon.")?.split('.').next()?;
    (!h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit())).then_some(h)
}

/// Every `anon.<hash>` named in `bytes` (an rlib: its objects' symbol tables).
pub fn anon_hashes_in(bytes: &[u8]) -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    let mut rest = bytes;
    while let Some(i) = rest.windows(5).position(|w| w == b"anon.") {
        let tail = &rest[i + 5..];
        let n = tail.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if n >= 16 {
            out.insert(String::from_utf8_lossy(&tail[..n]).into_owned());
        }
        rest = &tail[n..];
    }
    out
}

/// The crate of each anonymous constant's hash, from the rlibs the image
/// was linked from (`lib<crate>-<hash>.rlib` in `dirs`).
pub fn anon_owners(dirs: &[std::path::PathBuf]) -> std::collections::HashMap<String, String> {
    let mut owners = std::collections::HashMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for path in entries.flatten().map(|e| e.path()) {
            let Some(stem) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(krate) = stem
                .strip_prefix("lib")
                .and_then(|s| s.strip_suffix(".rlib"))
                .and_then(|s| s.rsplit_once('-'))
                .map(|(c, _)| c.to_string())
            else {
                continue;
            };
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            for h in anon_hashes_in(&bytes) {
                owners.entry(h).or_insert_with(|| krate.clone());
            }
        }
    }
    owners
}

/// Bytes per crate in `section`, largest first (ties by name). Anonymous
/// constants go to the crate `anon` names for their hash, if any.
pub fn group_by_crate<'a>(
    syms: &'a [Sym],
    section: &str,
    anon: &'a std::collections::HashMap<String, String>,
) -> Vec<(&'a str, u64)> {
    let mut by: BTreeMap<&str, u64> = BTreeMap::new();
    for s in syms.iter().filter(|s| s.section == section) {
        let owner = anon_hash(&s.name)
            .and_then(|h| anon.get(h))
            .map_or_else(|| crate_of(&s.name), |c| c.as_str());
        *by.entry(owner).or_default() += s.size;
    }
    let mut v: Vec<(&str, u64)> = by.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v
}

/// The sections' sizes and the image's loaded bytes (file size of its
/// loadable segments: what a boot loader copies).
pub struct Footprint {
    pub sections: Vec<(String, u64)>,
    pub loaded: u64,
    pub syms: Vec<Sym>,
}

/// Reads the sections, segments and sized symbols of an ELF image.
/// Aliases (several names for the same address and size) count once.
pub fn read_footprint(path: &Path) -> Result<Footprint> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file =
        object::File::parse(&*data).with_context(|| format!("parsing {}", path.display()))?;
    let mut names: BTreeMap<usize, String> = BTreeMap::new();
    let mut sections = Vec::new();
    for s in file.sections() {
        let name = s.name().unwrap_or("").to_string();
        if SECTIONS.contains(&name.as_str()) {
            sections.push((name.clone(), s.size()));
        }
        names.insert(s.index().0, name);
    }
    let loaded = file.segments().map(|s| s.file_range().1).sum();
    let mut seen = std::collections::HashSet::new();
    let mut syms = Vec::new();
    for sym in file.symbols() {
        if sym.size() == 0 || !matches!(sym.kind(), SymbolKind::Text | SymbolKind::Data) {
            continue;
        }
        let Some(section) = sym.section_index().and_then(|i| names.get(&i.0)) else {
            continue;
        };
        if !seen.insert((sym.address(), sym.size())) {
            continue;
        }
        let raw = sym.name().unwrap_or("");
        syms.push(Sym {
            name: format!("{:#}", rustc_demangle::demangle(raw)),
            section: section.clone(),
            size: sym.size(),
        });
    }
    Ok(Footprint {
        sections,
        loaded,
        syms,
    })
}

/// Prints the footprint of `path`; `rlib_dirs` hold the rlibs it was
/// linked from (to attribute anonymous constants).
pub fn print_footprint(path: &Path, rlib_dirs: &[std::path::PathBuf]) -> Result<Footprint> {
    let fp = read_footprint(path)?;
    let anon = anon_owners(rlib_dirs);
    let file_len = std::fs::metadata(path)?.len();
    println!("{} ({file_len} bytes on disk)", path.display());
    for (name, size) in &fp.sections {
        println!(
            "  {name:<8} {size:>9} bytes {:>7.1} KiB",
            *size as f64 / 1024.0
        );
    }
    println!(
        "  loaded   {:>9} bytes {:>7.1} KiB (.text + .rodata + .data: the file bytes of the load segment; .bss is zeroed)",
        fp.loaded,
        fp.loaded as f64 / 1024.0
    );
    for (section, total) in &fp.sections {
        let groups = group_by_crate(&fp.syms, section, &anon);
        let named: u64 = groups.iter().map(|g| g.1).sum();
        println!(
            "{section}: top crates ({} of {total} bytes in sized symbols)",
            named
        );
        let unsized_bytes = total.saturating_sub(named);
        for (krate, bytes) in groups
            .iter()
            .take(TOP_CRATES)
            .chain([&("(in no sized symbol)", unsized_bytes)])
        {
            println!(
                "  {krate:<28} {bytes:>9} {:>5.1}%",
                100.0 * *bytes as f64 / (*total).max(1) as f64
            );
        }
    }
    let mut top: Vec<&Sym> = fp.syms.iter().filter(|s| s.section != ".bss").collect();
    top.sort_by(|a, b| b.size.cmp(&a.size).then(a.name.cmp(&b.name)));
    println!("top {TOP_SYMBOLS} symbols (loaded sections):");
    for s in top.iter().take(TOP_SYMBOLS) {
        let owner = anon_hash(&s.name)
            .and_then(|h| anon.get(h))
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        println!("  {:>7} {:<8} {}{owner}", s.size, s.section, s.name);
    }
    Ok(fp)
}

/// `cargo xtask bench size`: builds the release image as `bench boot` does
/// (or takes `image`) and prints its footprint.
pub fn bench_size(image: Option<&Path>) -> Result<ExitCode> {
    let root = workspace_root();
    let image = match image {
        Some(path) => path.to_path_buf(),
        None => build::build_hypervisor(&BuildOptions {
            profile: Profile::Release,
            scenario: crate::base_scenario(&root),
        })?,
    };
    let deps = image.parent().map(|p| p.join("deps")).unwrap_or_default();
    let mut dirs = vec![deps];
    if let Some(sysroot) = sysroot_libs() {
        dirs.push(sysroot);
    }
    print_footprint(&image, &dirs)?;
    Ok(ExitCode::SUCCESS)
}

/// The toolchain's prebuilt `core`/`alloc` rlibs for the target.
fn sysroot_libs() -> Option<std::path::PathBuf> {
    let out = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let root = String::from_utf8(out.stdout).ok()?;
    Some(
        Path::new(root.trim())
            .join("lib/rustlib")
            .join(build::TARGET)
            .join("lib"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(name: &str, section: &str, size: u64) -> Sym {
        Sym {
            name: name.into(),
            section: section.into(),
            size,
        }
    }

    #[test]
    fn crate_of_paths_impls_and_others() {
        assert_eq!(crate_of("vmm::run::run_vcpu"), "vmm");
        assert_eq!(crate_of("iced_x86::decoder::Decoder::decode"), "iced_x86");
        assert_eq!(
            crate_of("<vm::pc::PcPlatform as vm::Platform>::pio_read"),
            "vm"
        );
        assert_eq!(crate_of("<vdev::uart::Uart16550>::write"), "vdev");
        assert_eq!(
            crate_of("<&mut shell::Shell as core::fmt::Write>::write_str"),
            "shell"
        );
        assert_eq!(crate_of("<&str as core::fmt::Display>::fmt"), "core");
        assert_eq!(crate_of("<[u8] as core::fmt::Debug>::fmt"), "core");
        assert_eq!(crate_of("core::ptr::drop_in_place::<vm::Vm>"), "core");
        assert_eq!(crate_of("memcpy"), NON_RUST);
        assert_eq!(crate_of("<weird>"), NON_RUST);
        assert_eq!(crate_of("anon.ed14.5491.llvm.64"), ANON);
        assert_eq!(crate_of("::leading"), NON_RUST);
    }

    #[test]
    fn grouping_sums_per_section_largest_first() {
        let syms = [
            sym("vmm::a", ".text", 100),
            sym("vmm::b", ".text", 50),
            sym("<vm::X as core::fmt::Debug>::fmt", ".text", 120),
            sym("iced_x86::TABLE", ".rodata", 900),
            sym("memset", ".text", 30),
            sym("vmm::c", ".rodata", 7),
            sym("acpi::z", ".text", 150),
        ];
        let none = std::collections::HashMap::new();
        assert_eq!(
            group_by_crate(&syms, ".text", &none),
            [("acpi", 150), ("vmm", 150), ("vm", 120), (NON_RUST, 30)]
        );
        assert_eq!(
            group_by_crate(&syms, ".rodata", &none),
            [("iced_x86", 900), ("vmm", 7)]
        );
        assert!(group_by_crate(&syms, ".bss", &none).is_empty());
    }

    #[test]
    fn anonymous_constants_go_to_the_rlib_that_names_them() {
        assert_eq!(anon_hash("anon.0bb1a9d0e2f5.12"), Some("0bb1a9d0e2f5"));
        assert_eq!(anon_hash("anon..3"), None);
        assert_eq!(anon_hash("vmm::anon"), None);
        let rlib = b"\0junk anon.0bb1a9d0e2f5290b.1\0anon.ff.2 anon.0123456789abcdef0.7";
        let found = anon_hashes_in(rlib);
        // Hashes shorter than 16 digits are not taken.
        assert_eq!(found.len(), 2);
        assert!(found.contains("0bb1a9d0e2f5290b"));
        assert!(found.contains("0123456789abcdef0"));
        let syms = [
            sym("anon.0bb1a9d0e2f5290b.1", ".rodata", 40),
            sym("anon.aaaaaaaaaaaaaaaa.1", ".rodata", 5),
            sym("emulate::T", ".rodata", 2),
        ];
        let owners = [("0bb1a9d0e2f5290b".to_string(), "emulate".to_string())].into();
        assert_eq!(
            group_by_crate(&syms, ".rodata", &owners),
            [("emulate", 42), (ANON, 5)]
        );
    }
}
