//! A VM's UART at one end of a wire to another VM's UART (a vUART link):
//! the [`UartWire`] a [`crate::Uart16550::linked`] UART of the platform
//! sends into and receives from (`PcPlatform::add_linked_uart`).
//!
//! The wire is a null-modem cable with flow control: this end's DTR drives
//! the peer's DSR and DCD, its RTS the peer's CTS; bytes the wire cannot
//! take yet stay in the UART's transmit FIFO (THRE reads 0 until they
//! leave). The wire itself (bounded buffers between two VMs, what happens
//! when the peer is gone) belongs to the caller: see `vmm::uart_link`.

/// One end of a wire between two UARTs.
pub trait UartWire: Send {
    /// Offers one byte toward the peer: true when the wire took it (or
    /// discarded it for a peer that is not there), false when it is full
    /// and the byte must wait.
    fn send(&mut self, byte: u8) -> bool;
    /// The next byte from the peer, if one waits.
    fn recv(&mut self) -> Option<u8>;
    /// This end's modem outputs (DTR, RTS) for the peer to see.
    fn set_outputs(&mut self, dtr: bool, rts: bool);
    /// The peer's modem outputs (DTR, RTS); both low when nobody is there.
    fn peer_outputs(&self) -> (bool, bool);
    /// This end leaves the wire (its VM stopped): the peer sees its outputs
    /// drop.
    fn disconnect(&mut self);
}
