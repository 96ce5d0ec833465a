//! An address bus of one VM (its port-I/O space or its guest-physical MMIO
//! space): which device slot answers which address.
//!
//! Devices are registered with a range when the VM is built (overlaps
//! are a configuration error, rejected there); at an exit
//! [`Bus::dispatch`] turns the address into a slot index and the offset in
//! the device's range. The bus stores one `D` per slot (a device, or a handle
//! to one) and never calls into it, so it needs no trait objects.
//!
//! An address no device claims behaves like a floating bus: reads return all
//! ones for the access size ([`unmapped_read`]) and writes vanish.
//!
//! An access is routed by its first address only; an access that runs past
//! the end of a range goes to that device whole, with its offset, and the
//! device answers for the widths it supports.

use alloc::vec::Vec;
use core::fmt;

/// Number of I/O ports (0..=0xFFFF).
pub const PORT_SPACE: u64 = 0x1_0000;
/// Size of the guest-physical space an MMIO bus covers (52-bit addresses).
pub const MMIO_SPACE: u64 = 1 << 52;

/// Why a port range could not be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty.
    Empty { base: u64 },
    /// `base + len` runs past port 0xFFFF.
    PastEnd { base: u64, len: u64 },
    /// The range shares ports with one registered earlier.
    Overlap {
        base: u64,
        len: u64,
        other_base: u64,
        other_len: u64,
    },
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BusError::Empty { base } => write!(f, "port range at {base:#x} has length 0"),
            BusError::PastEnd { base, len } => {
                write!(f, "range {base:#x}+{len:#x} runs past the end of the bus")
            }
            BusError::Overlap {
                base,
                len,
                other_base,
                other_len,
            } => write!(
                f,
                "range {base:#x}+{len:#x} overlaps {other_base:#x}+{other_len:#x}"
            ),
        }
    }
}

/// One registered range, kept sorted by `base` for lookup.
#[derive(Clone, Copy, Debug)]
struct Mapping {
    base: u64,
    len: u64,
    slot: usize,
}

impl Mapping {
    /// One past the last address, in `u128` so that it cannot wrap.
    fn end(&self) -> u128 {
        u128::from(self.base) + u128::from(self.len)
    }
}

/// Address ranges mapped to device slots.
#[derive(Clone, Debug)]
pub struct Bus<D> {
    /// Sorted by base, non-overlapping.
    map: Vec<Mapping>,
    /// Indexed by slot, in registration order.
    devices: Vec<D>,
    /// One past the highest address.
    limit: u64,
}

impl<D> Bus<D> {
    /// A port-I/O bus with no devices: every port is unmapped.
    pub const fn ports() -> Self {
        Bus {
            map: Vec::new(),
            devices: Vec::new(),
            limit: PORT_SPACE,
        }
    }

    /// An MMIO bus with no devices.
    pub const fn mmio() -> Self {
        Bus {
            map: Vec::new(),
            devices: Vec::new(),
            limit: MMIO_SPACE,
        }
    }

    /// Maps `base..base + len` to `device`; returns its slot index
    /// (slots count up from 0 in registration order and never change).
    pub fn register(&mut self, base: u64, len: u64, device: D) -> Result<usize, BusError> {
        if len == 0 {
            return Err(BusError::Empty { base });
        }
        let new = Mapping {
            base,
            len,
            slot: self.devices.len(),
        };
        if new.end() > u128::from(self.limit) {
            return Err(BusError::PastEnd { base, len });
        }
        let at = self.map.partition_point(|m| m.base < base);
        let neighbours = [at.checked_sub(1), Some(at)];
        for m in neighbours
            .into_iter()
            .flatten()
            .filter_map(|i| self.map.get(i))
        {
            if u128::from(m.base) < new.end() && u128::from(base) < m.end() {
                return Err(BusError::Overlap {
                    base,
                    len,
                    other_base: m.base,
                    other_len: m.len,
                });
            }
        }
        self.map.insert(at, new);
        self.devices.push(device);
        Ok(new.slot)
    }

    /// The slot that owns `port` and its offset in the slot's range, or
    /// `None` when no device claims the address.
    pub fn dispatch(&self, port: u64) -> Option<(usize, u64)> {
        let i = self
            .map
            .partition_point(|m| m.base <= port)
            .checked_sub(1)?;
        let m = self.map.get(i)?;
        let offset = port - m.base;
        (offset < m.len).then_some((m.slot, offset))
    }

    /// The device in `slot`.
    pub fn get(&self, slot: usize) -> Option<&D> {
        self.devices.get(slot)
    }

    /// The device in `slot`, writable.
    pub fn get_mut(&mut self, slot: usize) -> Option<&mut D> {
        self.devices.get_mut(slot)
    }

    /// Number of registered devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether no device is registered.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

/// What a read of an unmapped port returns: all ones in the low `size` bytes.
/// Sizes are 1, 2 or 4; anything larger saturates at 4 bytes and 0 reads 0.
pub fn unmapped_read(size: u8) -> u32 {
    match size {
        0 => 0,
        1..=3 => (1u32 << (8 * u32::from(size))) - 1,
        _ => u32::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn bus() -> Bus<&'static str> {
        let mut b = Bus::ports();
        assert_eq!(b.register(0x3F8, 8, "com1"), Ok(0));
        assert_eq!(b.register(0x20, 2, "pic"), Ok(1));
        assert_eq!(b.register(0xCF8, 8, "pci"), Ok(2));
        b
    }

    #[test]
    fn dispatch_finds_slot_and_offset() {
        let b = bus();
        assert_eq!(b.dispatch(0x3F8), Some((0, 0)));
        assert_eq!(b.dispatch(0x3FF), Some((0, 7)));
        assert_eq!(b.dispatch(0x21), Some((1, 1)));
        assert_eq!(b.dispatch(0xCFC), Some((2, 4)));
        assert_eq!(b.get(0), Some(&"com1"));
        assert_eq!(b.get(2), Some(&"pci"));
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn dispatch_misses_unmapped_ports() {
        let b = bus();
        for port in [0, 0x1F, 0x22, 0x3F7, 0x400, 0xCF7, 0xD00, 0xFFFF] {
            assert_eq!(b.dispatch(port), None, "{port:#x}");
        }
        let empty: Bus<()> = Bus::ports();
        assert!(empty.is_empty());
        assert_eq!(empty.dispatch(0), None);
        assert_eq!(empty.dispatch(0xFFFF), None);
    }

    #[test]
    fn bad_slots_are_none() {
        let mut b = bus();
        assert_eq!(b.get(3), None);
        assert_eq!(b.get(usize::MAX), None);
        assert!(b.get_mut(usize::MAX).is_none());
        *b.get_mut(1).unwrap() = "pic2";
        assert_eq!(b.get(1), Some(&"pic2"));
    }

    #[test]
    fn overlaps_are_rejected() {
        let mut b = bus();
        let cases = [
            (0x3F8, 8),
            (0x3F0, 9),
            (0x3FF, 1),
            (0x3FA, 1),
            (0x300, 0x200),
            (0x21, 0xFFFF - 0x21),
        ];
        for (base, len) in cases {
            let r = b.register(base, len, "x");
            assert!(
                matches!(r, Err(BusError::Overlap { .. })),
                "{base:#x}+{len:#x}: {r:?}"
            );
        }
        assert_eq!(
            b.register(0x3F0, 9, "x"),
            Err(BusError::Overlap {
                base: 0x3F0,
                len: 9,
                other_base: 0x3F8,
                other_len: 8
            })
        );
        // Touching ranges are fine; failed registrations took no slot.
        assert_eq!(b.register(0x3F0, 8, "a"), Ok(3));
        assert_eq!(b.register(0x400, 1, "b"), Ok(4));
        assert_eq!(b.dispatch(0x3F7), Some((3, 7)));
        assert_eq!(b.dispatch(0x3F8), Some((0, 0)));
    }

    #[test]
    fn empty_and_wrapping_ranges_are_rejected() {
        let mut b: Bus<u8> = Bus::ports();
        assert_eq!(b.register(0x80, 0, 0), Err(BusError::Empty { base: 0x80 }));
        assert_eq!(
            b.register(0xFFFF, 2, 0),
            Err(BusError::PastEnd {
                base: 0xFFFF,
                len: 2
            })
        );
        assert_eq!(
            b.register(0x8000, 0xFFFF, 0),
            Err(BusError::PastEnd {
                base: 0x8000,
                len: 0xFFFF
            })
        );
        assert!(b.is_empty());
        assert_eq!(b.register(0xFFFF, 1, 1), Ok(0));
        assert_eq!(b.register(0, 0xFFFF, 2), Ok(1));
        assert_eq!(b.dispatch(0xFFFF), Some((0, 0)));
        assert_eq!(b.dispatch(0xFFFE), Some((1, 0xFFFE)));
        assert_eq!(b.dispatch(0), Some((1, 0)));
    }

    #[test]
    fn many_ranges_stay_sorted() {
        let mut b = Bus::ports();
        // Registered out of order.
        for i in (0..64u64).rev() {
            assert!(b.register(i * 16 + 4, 4, i).is_ok());
        }
        for i in 0..64u64 {
            assert_eq!(
                b.dispatch(i * 16 + 5).map(|(s, o)| (*b.get(s).unwrap(), o)),
                Some((i, 1))
            );
            assert_eq!(b.dispatch(i * 16), None);
            assert_eq!(b.dispatch(i * 16 + 8), None);
        }
    }

    #[test]
    fn mmio_buses_take_64_bit_ranges() {
        let mut b = Bus::mmio();
        assert_eq!(b.register(0xFEC0_0000, 0x1000, "ioapic"), Ok(0));
        assert_eq!(b.register(0xE000_0000, 0x10_0000, "ecam"), Ok(1));
        assert_eq!(b.register(0x1_0000_0000, 0x1000, "high"), Ok(2));
        assert_eq!(b.dispatch(0xFEC0_0010), Some((0, 0x10)));
        assert_eq!(b.dispatch(0xE00F_FFFF), Some((1, 0xF_FFFF)));
        assert_eq!(b.dispatch(0x1_0000_0FFF), Some((2, 0xFFF)));
        assert_eq!(b.dispatch(0xFEC0_1000), None);
        assert_eq!(b.dispatch(u64::MAX), None);
        assert!(matches!(
            b.register(MMIO_SPACE - 1, 2, "x"),
            Err(BusError::PastEnd { .. })
        ));
        assert!(matches!(
            b.register(u64::MAX, u64::MAX, "x"),
            Err(BusError::PastEnd { .. })
        ));
    }

    #[test]
    fn unmapped_reads_are_all_ones_for_the_size() {
        assert_eq!(unmapped_read(1), 0xFF);
        assert_eq!(unmapped_read(2), 0xFFFF);
        assert_eq!(unmapped_read(4), 0xFFFF_FFFF);
        assert_eq!(unmapped_read(0), 0);
        assert_eq!(unmapped_read(3), 0xFF_FFFF);
        assert_eq!(unmapped_read(8), 0xFFFF_FFFF);
        assert_eq!(unmapped_read(u8::MAX), 0xFFFF_FFFF);
    }

    #[test]
    fn errors_name_the_ranges() {
        let e = BusError::Overlap {
            base: 0x3F0,
            len: 9,
            other_base: 0x3F8,
            other_len: 8,
        };
        assert_eq!(e.to_string(), "range 0x3f0+0x9 overlaps 0x3f8+0x8");
        assert_eq!(
            BusError::PastEnd {
                base: 0xFFFF,
                len: 2
            }
            .to_string(),
            "range 0xffff+0x2 runs past the end of the bus"
        );
    }
}
