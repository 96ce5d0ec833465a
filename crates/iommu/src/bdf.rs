//! [`Bdf`]: a PCI requester id (bus, device, function), the key both IOMMUs
//! index their device tables with (AMD calls it the device id).

use core::fmt;

/// A PCI bus/device/function packed as the 16-bit requester id:
/// bus in bits 15:8, device in 7:3, function in 2:0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf(pub u16);

impl Bdf {
    /// The id of `bus:device.function`; `device` is taken modulo 32 and
    /// `function` modulo 8.
    pub const fn new(bus: u8, device: u8, function: u8) -> Self {
        Self(((bus as u16) << 8) | (((device & 0x1f) as u16) << 3) | (function & 7) as u16)
    }

    /// The bus number.
    pub const fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }

    /// The device number (0..32).
    pub const fn device(self) -> u8 {
        ((self.0 >> 3) & 0x1f) as u8
    }

    /// The function number (0..8).
    pub const fn function(self) -> u8 {
        (self.0 & 7) as u8
    }

    /// Device and function as one byte (bits 7:3 device, 2:0 function): the
    /// index into a VT-d context table.
    pub const fn devfn(self) -> u8 {
        self.0 as u8
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{}",
            self.bus(),
            self.device(),
            self.function()
        )
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;

    use super::*;

    #[test]
    fn pack_unpack_display() {
        let bdf = Bdf::new(0x3a, 0x1f, 7);
        assert_eq!(bdf.0, 0x3aff);
        assert_eq!((bdf.bus(), bdf.device(), bdf.function()), (0x3a, 0x1f, 7));
        assert_eq!(bdf.devfn(), 0xff);
        assert_eq!(format!("{}", Bdf::new(0, 3, 0)), "00:03.0");
        assert_eq!(Bdf::new(1, 32, 9), Bdf::new(1, 0, 1));
    }
}
