//! The words a scenario file uses for enumerated values, mapped to the `scenario` crate's types.

use scenario::{LoadOrder, VmType, VuartConfig};

/// Accepted `load_order` values.
pub const LOAD_ORDERS: &str = "pre-launched, service, post-launched";
/// Accepted `vm_type` values.
pub const VM_TYPES: &str = "standard, rt";
/// Accepted `kernel.type` values.
pub const KERNEL_TYPES: &str = "elf64, multiboot, raw, bzimage, pvh";

/// The file spelling of a kernel type.
pub fn kernel_type_name(kind: KernelType) -> &'static str {
    match kind {
        KernelType::Elf64 => "elf64",
        KernelType::Multiboot => "multiboot",
        KernelType::Raw => "raw",
        KernelType::BzImage => "bzimage",
        KernelType::Pvh => "pvh",
    }
}
/// Accepted `console.vuart` values.
pub const VUARTS: &str = "com1, com2";
/// Accepted `virtio[i].type` values.
pub const VIRTIO_TYPES: &str = "blk, net, console, rng";

/// `kernel.type` without the raw addresses, which live in their own fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelType {
    /// `elf64`
    Elf64,
    /// `multiboot` (version 1)
    Multiboot,
    /// `raw` (needs `load_addr` and `entry`)
    Raw,
    /// `bzimage`
    BzImage,
    /// `pvh`
    Pvh,
}

/// `virtio[i].type`: the kind of device, before its fields are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioType {
    /// `blk`: a disk on a boot module.
    Blk,
    /// `net`: a port on a switch.
    Net,
    /// `console`
    Console,
    /// `rng`
    Rng,
}

impl VirtioType {
    /// The file spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Blk => "blk",
            Self::Net => "net",
            Self::Console => "console",
            Self::Rng => "rng",
        }
    }

    /// The fields a device of this type may have, for messages.
    pub fn fields(self) -> &'static str {
        match self {
            Self::Blk => "type, module or file, readonly",
            Self::Net => "type, switch, mac",
            Self::Console | Self::Rng => "type only",
        }
    }
}

/// Parses a `virtio[i].type` value.
pub fn virtio_type(word: &str) -> Option<VirtioType> {
    match word {
        "blk" => Some(VirtioType::Blk),
        "net" => Some(VirtioType::Net),
        "console" => Some(VirtioType::Console),
        "rng" => Some(VirtioType::Rng),
        _ => None,
    }
}

/// Parses a `load_order` value.
pub fn load_order(word: &str) -> Option<LoadOrder> {
    match word {
        "pre-launched" => Some(LoadOrder::PreLaunched),
        "service" => Some(LoadOrder::Service),
        "post-launched" => Some(LoadOrder::PostLaunched),
        _ => None,
    }
}

/// The file spelling of a load order.
pub fn load_order_name(order: LoadOrder) -> &'static str {
    match order {
        LoadOrder::PreLaunched => "pre-launched",
        LoadOrder::Service => "service",
        LoadOrder::PostLaunched => "post-launched",
    }
}

/// Parses a `vm_type` value.
pub fn vm_type(word: &str) -> Option<VmType> {
    match word {
        "standard" => Some(VmType::Standard),
        "rt" => Some(VmType::Rt),
        _ => None,
    }
}

/// Parses a `kernel.type` value.
pub fn kernel_type(word: &str) -> Option<KernelType> {
    match word {
        "elf64" => Some(KernelType::Elf64),
        "multiboot" => Some(KernelType::Multiboot),
        "raw" => Some(KernelType::Raw),
        "bzimage" => Some(KernelType::BzImage),
        "pvh" => Some(KernelType::Pvh),
        _ => None,
    }
}

/// Parses a `console.vuart` value: the legacy COM port and IRQ it stands for.
pub fn vuart(word: &str) -> Option<VuartConfig> {
    match word {
        "com1" => Some(VuartConfig {
            port: 0x3F8,
            irq: 4,
        }),
        "com2" => Some(VuartConfig {
            port: 0x2F8,
            irq: 3,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_word_parses() {
        for word in LOAD_ORDERS.split(", ") {
            let order = load_order(word).unwrap();
            assert_eq!(load_order_name(order), word);
        }
        assert!(VM_TYPES.split(", ").all(|w| vm_type(w).is_some()));
        assert!(KERNEL_TYPES.split(", ").all(|w| kernel_type(w).is_some()));
        assert!(VUARTS.split(", ").all(|w| vuart(w).is_some()));
        for word in VIRTIO_TYPES.split(", ") {
            assert_eq!(virtio_type(word).map(VirtioType::name), Some(word));
        }
        assert_eq!(virtio_type("Blk"), None);
    }

    #[test]
    fn com_ports() {
        assert_eq!(
            vuart("com1"),
            Some(VuartConfig {
                port: 0x3F8,
                irq: 4
            })
        );
        assert_eq!(
            vuart("com2"),
            Some(VuartConfig {
                port: 0x2F8,
                irq: 3
            })
        );
        assert_eq!(vuart("COM1"), None);
    }
}
