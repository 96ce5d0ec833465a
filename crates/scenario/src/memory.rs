//! Guest RAM of one VM: its size and, optionally, a fixed host-physical placement.

/// Guest RAM of one VM. Guest-physical RAM starts at 0 and is `size` bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Size in bytes; non-zero and a multiple of 2 MiB.
    pub size: u64,
    /// Fixed host-physical base address (2 MiB aligned, inside the board's RAM, not overlapping
    /// another VM's fixed range), or `None` to let the hypervisor allocate it.
    pub host_base: Option<u64>,
}
