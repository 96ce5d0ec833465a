//! The one name of a VM across the hypervisor: its id.

use core::fmt;

/// A VM's id: its index in the scenario file (pre-launched and service VMs), or the id the
/// hypervisor gives it at creation (post-launched VMs). Never a position in some list of the VMs
/// that happen to run: a scenario whose first VM is not started still calls its second VM 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmId(pub u16);

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn ids_order_and_print_as_numbers() {
        assert!(VmId(1) < VmId(3));
        assert_eq!(std::format!("{}", VmId(7)), "7");
    }
}
