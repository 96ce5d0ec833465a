//! A VM's virtio devices, served by the hypervisor: what each is backed by and where it sits.

/// What a virtio device is and what backs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioKind {
    /// virtio-blk on a disk image given as a boot module, kept in hypervisor memory.
    Blk {
        /// Boot module holding the disk image (a whole number of 512-byte sectors).
        module: &'static str,
        /// The guest may not write (VIRTIO_BLK_F_RO); only a read-only disk may be shared.
        readonly: bool,
    },
    /// virtio-net: one port on a virtual switch.
    Net {
        /// The switch's index in [`Scenario::switches`](crate::Scenario::switches).
        switch: u16,
        /// The interface's MAC address (from the scenario, or derived from VM id and port).
        mac: [u8; 6],
    },
    /// virtio-console: one port (`hvc0`), a second console multiplexed by the shell.
    Console,
    /// virtio-rng: entropy from RDSEED/RDRAND.
    Rng,
}

/// One virtio device of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioConfig {
    pub kind: VirtioKind,
    /// PCI device number on the VM's bus 0 (function 0); distinct per VM, never 0 (host
    /// bridge) or 3 (the test device).
    pub slot: u8,
}

/// The first slot virtio devices take, in list order.
pub const VIRTIO_FIRST_SLOT: u8 = 8;

/// Most virtio devices one VM may have: they take slots [`VIRTIO_FIRST_SLOT`] to 31, the last
/// PCI device number.
pub const MAX_VIRTIO_DEVICES: usize = 32 - VIRTIO_FIRST_SLOT as usize;

/// A virtual switch: a learning Ethernet bridge between the ports of every VM that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchConfig {
    /// `[a-z0-9_-]`, at most 32 characters, unique.
    pub name: &'static str,
}
