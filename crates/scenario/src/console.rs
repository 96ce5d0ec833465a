//! The virtual UART a VM's console is attached to.

/// A virtual 16550 UART exposed to the guest at a legacy COM port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VuartConfig {
    /// I/O port base (0x3F8 for COM1, 0x2F8 for COM2).
    pub port: u16,
    /// Legacy IRQ line (4 for COM1, 3 for COM2).
    pub irq: u8,
}
