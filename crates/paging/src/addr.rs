//! Guest-physical addresses and the address widths the 4-level tables cover.

/// Guest-physical address bits a 4-level EPT or NPT walk translates: every
/// mapped guest-physical address is below `1 << GUEST_PHYS_BITS` (256 TiB).
pub const GUEST_PHYS_BITS: u32 = 48;

/// Host-physical address bits an entry can hold (bits 51:12). A real CPU may
/// implement fewer (CPUID 8000_0008h EAX[7:0]); bits above its width are
/// reserved, so the caller maps only memory the CPU has.
pub const HOST_PHYS_BITS: u32 = 52;

/// An address in a VM's guest-physical address space (defined with the VM's
/// RAM layout in `vcpu`).
pub use vcpu::GuestPhysAddr;

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;

    use super::*;

    #[test]
    fn helpers_and_display() {
        assert!(GuestPhysAddr(0x20_0000).is_aligned(0x20_0000));
        assert!(!GuestPhysAddr(0x20_1000).is_aligned(0x20_0000));
        assert_eq!(GuestPhysAddr(1).checked_add(2), Some(GuestPhysAddr(3)));
        assert_eq!(GuestPhysAddr(u64::MAX).checked_add(1), None);
        assert_eq!(format!("{}", GuestPhysAddr(0xfee0_0000)), "0xfee00000");
    }
}
