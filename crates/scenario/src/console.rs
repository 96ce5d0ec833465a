//! The virtual UART a VM's console is attached to.

/// A virtual 16550 UART exposed to the guest at a legacy COM port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VuartConfig {
    /// I/O port base (0x3F8 for COM1, 0x2F8 for COM2).
    pub port: u16,
    /// Legacy IRQ line (4 for COM1, 3 for COM2).
    pub irq: u8,
}

/// One end of a vUART link: a VM and the UART it sees there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VuartLinkEnd {
    /// The VM's id.
    pub vm: u16,
    /// The UART's legacy port and IRQ in that VM (never its console's port, never its console's
    /// IRQ).
    pub uart: VuartConfig,
}

/// A wire between a UART of one VM and a UART of another (null-modem, with flow control):
/// bytes one end writes, the other reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VuartLinkConfig {
    /// `[a-z0-9_-]`, at most 32 characters, unique among the links.
    pub name: &'static str,
    /// The two ends (two VMs, or two UARTs of one VM), each VM UART in at most one link.
    pub ends: [VuartLinkEnd; 2],
}

impl VuartLinkConfig {
    /// The ends VM `vm` holds, with their side (0 or 1).
    pub fn ends_of(&self, vm: u16) -> impl Iterator<Item = (usize, &VuartLinkEnd)> {
        self.ends
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.vm == vm)
    }
}
