//! A VM's UART at one end of a wire to another VM's UART (a vUART link):
//! the [`UartWire`] the platform's UART sends into and receives from, and
//! the device that joins a [`Uart16550::linked`] UART to it.
//!
//! The wire is a null-modem cable with flow control: this end's DTR drives
//! the peer's DSR and DCD, its RTS the peer's CTS; bytes the wire cannot
//! take yet stay in the UART's transmit FIFO (THRE reads 0 until they
//! leave). The wire itself (bounded buffers between two VMs, what happens
//! when the peer is gone) belongs to the caller: see `vmm::uart_link`.

use alloc::boxed::Box;

use crate::device::{Device, DeviceCx, Space};
use crate::pc::UartPlace;
use crate::uart16550::{Uart16550, UartCounters};

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

/// A [`Uart16550::linked`] UART at its place, joined to its wire.
pub struct LinkedUart {
    uart: Uart16550,
    place: UartPlace,
    wire: Box<dyn UartWire>,
    level: bool,
}

impl LinkedUart {
    pub fn new(place: UartPlace, wire: Box<dyn UartWire>) -> Self {
        LinkedUart {
            uart: Uart16550::linked(),
            place,
            wire,
            level: false,
        }
    }

    /// The UART's place.
    pub fn place(&self) -> UartPlace {
        self.place
    }

    /// What the UART lost or refused.
    pub fn counters(&self) -> UartCounters {
        self.uart.counters()
    }

    /// Leaves the wire (the VM stopped).
    pub fn disconnect(&mut self) {
        self.wire.disconnect();
    }

    /// Moves bytes and modem lines between the UART and the wire, then
    /// updates the interrupt line: after every guest access and whenever
    /// the wire brought news.
    pub fn sync(&mut self, cx: &mut DeviceCx<'_>) {
        let (dtr, rts) = self.uart.modem_outputs();
        self.wire.set_outputs(dtr, rts);
        let wire = &mut self.wire;
        self.uart.send_output(&mut |b| wire.send(b));
        for _ in 0..self.uart.rx_room() {
            match self.wire.recv() {
                // `rx_room` promised the room.
                Some(b) => {
                    let _ = self.uart.push_input(b);
                }
                None => break,
            }
        }
        let (peer_dtr, peer_rts) = self.wire.peer_outputs();
        self.uart.set_modem_inputs(peer_rts, peer_dtr, peer_dtr);
        let level = self.uart.irq_pending();
        if level != self.level {
            self.level = level;
            cx.irq.set_isa_irq(self.place.irq, level);
        }
    }

    fn offset(&self, addr: u64) -> u8 {
        addr.wrapping_sub(u64::from(self.place.port)) as u8
    }
}

impl Device for LinkedUart {
    fn name(&self) -> &'static str {
        "uart-link"
    }
    fn read(&mut self, _: Space, addr: u64, size: u8, cx: &mut DeviceCx<'_>) -> u64 {
        let v = if size == 1 {
            u64::from(self.uart.read(self.offset(addr)))
        } else {
            u64::from(vdev::all_ones(size))
        };
        self.sync(cx);
        v
    }
    fn write(&mut self, _: Space, addr: u64, size: u8, value: u64, cx: &mut DeviceCx<'_>) {
        if size == 1 {
            self.uart.write(self.offset(addr), value as u8);
        }
        self.sync(cx);
    }
    fn as_any_mut(&mut self) -> &mut dyn core::any::Any {
        self
    }
}
