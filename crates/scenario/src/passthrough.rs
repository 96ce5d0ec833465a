//! Physical PCI functions a VM owns (passthrough) and how DMA is isolated.

/// One physical PCI function given to a VM: it sees it on its own PCI segment and drives it
/// with its own driver; the IOMMU keeps the function's DMA inside the VM's RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassthroughConfig {
    /// Physical address on segment 0: `bus << 8 | device << 3 | function`.
    pub host_bdf: u16,
    /// Device number on the VM's bus 0 (the function number stays the host's). Never 0 (host
    /// bridge) or 3 (the test device), never a virtio device's slot.
    pub guest_slot: u8,
    /// Vendor ID the board file lists for it (checked against the hardware at boot).
    pub vendor_id: u16,
    /// Device ID the board file lists for it (checked against the hardware at boot).
    pub device_id: u16,
    /// The I/O APIC input (GSI) its INTx pin drives, as the board file says (None: its INTx is
    /// not given to the VM; it must use MSI or MSI-X).
    pub host_gsi: Option<u8>,
}

impl PassthroughConfig {
    /// The guest's `bus << 8 | device << 3 | function` for it (bus 0).
    pub const fn guest_bdf(&self) -> u16 {
        (self.guest_slot as u16) << 3 | (self.host_bdf & 7)
    }
}

/// What keeps passed-through devices' DMA inside their VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaIsolation {
    /// An IOMMU (VT-d or AMD-Vi) is required: without one, the VMs that own devices do not
    /// start.
    Iommu,
    /// The scenario says explicitly that DMA isolation is off (boards without an IOMMU): a
    /// device can read and write all of memory, and the console says so at every boot.
    Off,
}

/// Most physical functions one VM may own.
pub const MAX_PASSTHROUGH_DEVICES: usize = 16;
