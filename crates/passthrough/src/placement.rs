//! Where a VM's passed-through BARs sit in its address spaces before the guest moves them:
//! what firmware would do, inside the windows the hypervisor reserves for passthrough.

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use crate::scan::{BarKind, PhysFunction};

/// Guest addresses of each function's BARs, in the order the functions were given:
/// `(BAR index, address or port)`.
pub type Placement = Vec<Vec<(u8, u64)>>;

/// Why the BARs do not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacementError {
    /// Index of the function in the list, and its BAR.
    pub function: usize,
    pub bar: u8,
    pub size: u64,
    pub io: bool,
}

impl fmt::Display for PlacementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} BAR {} of {:#x} bytes does not fit in the VM's passthrough {} window",
            if self.io { "I/O" } else { "memory" },
            self.bar,
            self.size,
            if self.io { "port" } else { "MMIO" }
        )
    }
}

/// Places every BAR of `functions` naturally aligned, largest first (least padding), memory
/// BARs in `mem`, I/O BARs in `io`.
pub fn place_bars(
    functions: &[&PhysFunction],
    mem: Range<u64>,
    io: Range<u64>,
) -> Result<Placement, PlacementError> {
    let mut out: Placement = functions.iter().map(|_| Vec::new()).collect();
    let mut bars: Vec<(usize, u8, u64, bool)> = functions
        .iter()
        .enumerate()
        .flat_map(|(i, f)| {
            f.bars
                .iter()
                .map(move |b| (i, b.index, b.size, b.kind == BarKind::Io))
        })
        .collect();
    bars.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
    let (mut next_mem, mut next_io) = (mem.start, io.start);
    for (i, index, size, is_io) in bars {
        let (next, window) = if is_io {
            (&mut next_io, &io)
        } else {
            (&mut next_mem, &mem)
        };
        let err = PlacementError {
            function: i,
            bar: index,
            size,
            io: is_io,
        };
        let at = next.checked_next_multiple_of(size.max(1)).ok_or(err)?;
        let end = at.checked_add(size).ok_or(err)?;
        if end > window.end {
            return Err(err);
        }
        *next = end;
        out[i].push((index, at));
    }
    for bars in &mut out {
        bars.sort_unstable();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::scan;
    use crate::sim::{SimBus, SimFunction};
    use vdev::Bdf;

    fn functions() -> Vec<PhysFunction> {
        let mut bus = SimBus::default();
        bus.add(Bdf::new(0, 4, 0).unwrap(), SimFunction::edu());
        bus.add(Bdf::new(0, 5, 0).unwrap(), SimFunction::nic());
        scan(&mut bus)
    }

    #[test]
    fn aligned_disjoint_inside_windows() {
        let f = functions();
        let p = place_bars(&[&f[0], &f[1]], 0xD000_0000..0xE000_0000, 0xD000..0x1_0000).unwrap();
        assert_eq!(p[0], [(0, 0xD000_0000)]);
        assert_eq!(p[1], [(0, 0xD010_0000), (2, 0xD000), (3, 0xD012_0000)]);
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (fi, bars) in p.iter().enumerate() {
            for &(index, at) in bars {
                let size = f[fi].bar(index).unwrap().size;
                assert_eq!(at % size, 0);
                for &(s, e) in &ranges {
                    assert!(at + size <= s || at >= e, "overlap");
                }
                ranges.push((at, at + size));
            }
        }
    }

    #[test]
    fn too_big_is_an_error_naming_the_bar() {
        let f = functions();
        let e = place_bars(&[&f[0]], 0xD000_0000..0xD008_0000, 0xD000..0x1_0000).unwrap_err();
        assert_eq!((e.function, e.bar, e.size, e.io), (0, 0, 1 << 20, false));
        let e = place_bars(&[&f[1]], 0xD000_0000..0xE000_0000, 0xFFF0..0x1_0000).unwrap_err();
        assert!(e.io);
    }
}
