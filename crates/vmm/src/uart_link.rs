//! vUART links: a wire between a UART of one VM and a UART of another, as
//! the scenario's `[[vuart_link]]` tables name them.
//!
//! Each direction holds up to [`LINK_BUFFER`] bytes. A sender whose bytes
//! the peer has not read yet waits (its UART's THRE stays low: flow control,
//! nothing lost) while the peer is there; a byte sent while the peer is not
//! (its VM stopped or not started, or its driver has DTR low: the port is
//! closed) is discarded and counted, so a stopped or crashed peer never
//! blocks the other VM. The null-modem wiring carries each end's DTR and RTS
//! to the other's DSR/DCD and CTS. A VM (re)attaches at each load of its
//! platform; the end of an older load no longer counts.
//!
//! Ends tell their VM that something arrived through a [`LinkWaker`] (it
//! marks the VM's backend news and kicks its pCPU; the bytes are moved
//! before the VM's next guest entry). Wakers run outside the link's lock.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;

use spin::Mutex;
use vm::UartWire;

/// Bytes one direction of a link holds for a slow reader.
pub const LINK_BUFFER: usize = 4096;

/// Tells an end's VM that the wire has news for it (bytes, room, modem lines).
pub trait LinkWaker: Send + Sync {
    fn wake(&self);
}

/// One direction's counters (bytes an end sent toward its peer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionCounters {
    /// Bytes the wire took for the peer.
    pub sent: u64,
    /// Bytes the peer's UART received.
    pub delivered: u64,
    /// Bytes discarded because the peer was not there (or left with them unread).
    pub dropped: u64,
    /// Times the buffer was full and the sender had to wait.
    pub stalls: u64,
}

/// What the shell shows of one end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndInfo {
    /// The end's VM is attached (loaded and not stopped).
    pub attached: bool,
    pub dtr: bool,
    pub rts: bool,
    /// Bytes waiting for the peer.
    pub queued: usize,
    pub counters: DirectionCounters,
}

#[derive(Default)]
struct Side {
    attached: bool,
    /// Which load of the VM holds this side (an older end is ignored).
    generation: u64,
    dtr: bool,
    rts: bool,
    /// Bytes this side sent, waiting for the other side.
    to_peer: VecDeque<u8>,
    counters: DirectionCounters,
    waker: Option<Arc<dyn LinkWaker>>,
}

impl Side {
    fn listening(&self) -> bool {
        self.attached && self.dtr
    }
}

/// A wire between two UARTs of two VMs.
pub struct UartLink {
    name: &'static str,
    sides: Mutex<[Side; 2]>,
}

impl UartLink {
    /// A link nobody is attached to yet.
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(UartLink {
            name,
            sides: Mutex::new([Side::default(), Side::default()]),
        })
    }

    /// The scenario's name of the link.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Attaches side `side` (0 or 1) for a new load of its VM: its modem
    /// outputs start low, bytes left for an older load are dropped, and the
    /// peer is told.
    pub fn attach(self: &Arc<Self>, side: usize, waker: Arc<dyn LinkWaker>) -> LinkEnd {
        let side = side & 1;
        let (generation, peer) = {
            let mut sides = self.sides.lock();
            let stale = sides[1 - side].to_peer.len() as u64;
            sides[1 - side].to_peer.clear();
            sides[1 - side].counters.dropped += stale;
            let me = &mut sides[side];
            me.generation += 1;
            me.attached = true;
            me.dtr = false;
            me.rts = false;
            me.waker = Some(waker);
            (me.generation, sides[1 - side].waker.clone())
        };
        wake(peer);
        LinkEnd {
            link: self.clone(),
            side,
            generation,
        }
    }

    /// Both ends as the shell shows them.
    pub fn info(&self) -> [EndInfo; 2] {
        let sides = self.sides.lock();
        core::array::from_fn(|i| EndInfo {
            attached: sides[i].attached,
            dtr: sides[i].dtr,
            rts: sides[i].rts,
            queued: sides[i].to_peer.len(),
            counters: sides[i].counters,
        })
    }
}

fn wake(waker: Option<Arc<dyn LinkWaker>>) {
    if let Some(w) = waker {
        w.wake();
    }
}

/// One VM's end of a link, for one load of the VM.
pub struct LinkEnd {
    link: Arc<UartLink>,
    side: usize,
    generation: u64,
}

impl LinkEnd {
    /// Runs `f` on (this side, the peer) if this end is still the side's
    /// current one; returns what `f` returns and the peer's waker when `f`
    /// asked for it.
    fn with<R>(
        &self,
        f: impl FnOnce(&mut Side, &mut Side) -> (R, bool),
        stale: R,
    ) -> (R, Option<Arc<dyn LinkWaker>>) {
        let mut sides = self.link.sides.lock();
        let [a, b] = &mut *sides;
        let (me, peer) = if self.side == 0 { (a, b) } else { (b, a) };
        if me.generation != self.generation || !me.attached {
            return (stale, None);
        }
        let (r, wake_peer) = f(me, peer);
        (r, if wake_peer { peer.waker.clone() } else { None })
    }
}

impl UartWire for LinkEnd {
    fn send(&mut self, byte: u8) -> bool {
        let (taken, peer) = self.with(
            |me, peer| {
                if !peer.listening() {
                    me.counters.dropped += 1;
                    return (true, false);
                }
                if me.to_peer.len() >= LINK_BUFFER {
                    me.counters.stalls += 1;
                    return (false, false);
                }
                me.to_peer.push_back(byte);
                me.counters.sent += 1;
                // The peer hears of the first byte; it takes the rest as it reads.
                (true, me.to_peer.len() == 1)
            },
            // An end of an older load: the byte goes nowhere.
            true,
        );
        wake(peer);
        taken
    }

    fn recv(&mut self) -> Option<u8> {
        let (byte, sender) = self.with(
            |_, peer| {
                let was_full = peer.to_peer.len() >= LINK_BUFFER;
                let byte = peer.to_peer.pop_front();
                if byte.is_some() {
                    peer.counters.delivered += 1;
                }
                // Room again for a sender that waits: tell it.
                (byte, was_full && byte.is_some())
            },
            None,
        );
        // `with` wakes "the peer" of this end: the sender.
        wake(sender);
        byte
    }

    fn set_outputs(&mut self, dtr: bool, rts: bool) {
        let ((), peer) = self.with(
            |me, peer| {
                let changed = (me.dtr, me.rts) != (dtr, rts);
                me.dtr = dtr;
                me.rts = rts;
                if changed && !dtr {
                    // A receiver that closed its port takes nothing more.
                    let n = peer.to_peer.len() as u64;
                    peer.to_peer.clear();
                    peer.counters.dropped += n;
                }
                ((), changed)
            },
            (),
        );
        wake(peer);
    }

    fn peer_outputs(&self) -> (bool, bool) {
        self.with(
            |_, peer| {
                if peer.attached {
                    ((peer.dtr, peer.rts), false)
                } else {
                    ((false, false), false)
                }
            },
            (false, false),
        )
        .0
    }

    fn disconnect(&mut self) {
        let ((), peer) = self.with(
            |me, peer| {
                me.attached = false;
                me.dtr = false;
                me.rts = false;
                me.waker = None;
                // What the peer sent this side is lost with it.
                let n = peer.to_peer.len() as u64;
                peer.to_peer.clear();
                peer.counters.dropped += n;
                ((), true)
            },
            (),
        );
        wake(peer);
    }
}

impl Drop for LinkEnd {
    fn drop(&mut self) {
        // A platform replaced by a newer load has a newer end: `with` ignores this one.
        self.disconnect();
    }
}

/// A boxed end, for [`vm::PcPlatform::add_linked_uart`].
pub fn boxed(end: LinkEnd) -> Box<dyn UartWire> {
    Box::new(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl LinkWaker for Count {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn pair() -> (Arc<UartLink>, LinkEnd, LinkEnd, Arc<Count>, Arc<Count>) {
        let link = UartLink::new("l");
        let (wa, wb) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let a = link.attach(0, wa.clone());
        let b = link.attach(1, wb.clone());
        (link, a, b, wa, wb)
    }

    #[test]
    fn bytes_flow_both_ways_in_order_with_modem_lines() {
        let (link, mut a, mut b, wa, wb) = pair();
        assert_eq!(a.peer_outputs(), (false, false));
        b.set_outputs(true, true);
        assert_eq!(a.peer_outputs(), (true, true));
        assert!(wa.0.load(Ordering::Relaxed) >= 1, "a hears b open its port");
        let before = wb.0.load(Ordering::Relaxed);
        for byte in b"hello" {
            assert!(a.send(*byte));
        }
        assert_eq!(
            wb.0.load(Ordering::Relaxed),
            before + 1,
            "one wake for a burst"
        );
        let got: alloc::vec::Vec<u8> = core::iter::from_fn(|| b.recv()).collect();
        assert_eq!(got, b"hello");
        a.set_outputs(true, false);
        assert!(b.send(b'!'));
        assert_eq!(a.recv(), Some(b'!'));
        assert_eq!(a.recv(), None);
        let info = link.info();
        assert_eq!(info[0].counters.sent, 5);
        assert_eq!(info[0].counters.delivered, 5);
        assert_eq!(info[1].counters.delivered, 1);
        assert_eq!((info[0].dtr, info[0].rts), (true, false));
    }

    #[test]
    fn a_slow_reader_makes_the_sender_wait_and_loses_nothing() {
        let (link, mut a, mut b, wa, _) = pair();
        b.set_outputs(true, true);
        for i in 0..LINK_BUFFER {
            assert!(a.send(i as u8));
        }
        assert!(!a.send(0xAA), "full: the byte waits");
        assert!(!a.send(0xAA));
        let woken = wa.0.load(Ordering::Relaxed);
        assert_eq!(b.recv(), Some(0));
        assert_eq!(
            wa.0.load(Ordering::Relaxed),
            woken + 1,
            "room: the sender hears"
        );
        assert!(a.send(0xAA));
        let mut n = 1;
        while let Some(byte) = b.recv() {
            let want = if n == LINK_BUFFER { 0xAA } else { n as u8 };
            assert_eq!(byte, want, "byte {n}");
            n += 1;
        }
        assert_eq!(n, LINK_BUFFER + 1);
        let c = link.info()[0].counters;
        assert_eq!(
            (c.sent, c.delivered, c.dropped, c.stalls),
            (4097, 4097, 0, 2)
        );
    }

    #[test]
    fn a_peer_that_is_gone_never_blocks_the_sender() {
        let (link, mut a, b, _, wa_peer) = pair();
        // b never opened its port (DTR low): bytes go nowhere, counted.
        for _ in 0..10_000 {
            assert!(a.send(1));
        }
        assert_eq!(link.info()[0].counters.dropped, 10_000);
        // b's VM stops: a sees the cable dead and can still send.
        drop(b);
        assert_eq!(a.peer_outputs(), (false, false));
        assert!(a.send(2));
        assert!(!link.info()[1].attached);
        // b comes back (a new load): it starts closed, then opens.
        let mut b2 = link.attach(1, wa_peer);
        assert_eq!(a.peer_outputs(), (false, false));
        b2.set_outputs(true, true);
        assert_eq!(a.peer_outputs(), (true, true));
        assert!(a.send(3));
        assert_eq!(b2.recv(), Some(3));
    }

    #[test]
    fn unread_bytes_go_when_the_reader_leaves_and_old_ends_are_ignored() {
        let (link, mut a, mut b, wa, wb) = pair();
        b.set_outputs(true, true);
        for _ in 0..100 {
            a.send(7);
        }
        // b's VM reboots: the new end replaces b; dropping the old one changes nothing.
        let mut b2 = link.attach(1, wb);
        assert_eq!(link.info()[0].counters.dropped, 100, "left unread");
        drop(b);
        assert!(
            link.info()[1].attached,
            "an old end does not detach the new one"
        );
        b2.set_outputs(true, true);
        a.send(8);
        assert_eq!(b2.recv(), Some(8));
        // Closing the port (DTR low) drops what waits for it.
        a.send(9);
        b2.set_outputs(false, true);
        assert_eq!(b2.recv(), None);
        assert_eq!(link.info()[0].counters.dropped, 101);
        // a's VM stops: b2 sees its lines drop and a's old end does nothing any more.
        a.disconnect();
        assert_eq!(b2.peer_outputs(), (false, false));
        assert!(a.send(1), "an end out of the link discards");
        assert_eq!(a.recv(), None);
        let _ = wa;
    }

    /// Two VMs' platforms joined at COM2, driven through port I/O the way a
    /// driver does: bytes cross in order, a full link stalls the sender
    /// (THRE low) without loss, and a stopped peer makes the cable dead
    /// without blocking.
    #[test]
    fn platforms_talk_through_their_uarts() {
        const COM2: u16 = 0x2F8;
        let place = vm::UartPlace { port: COM2, irq: 3 };
        let cfg = vm::PlatformConfig {
            now_ns: 0,
            unix_secs: 0,
            ioapic_id: 0,
            uart: Some(vm::UartPlace {
                port: 0x3F8,
                irq: 4,
            }),
            pci_test_device: false,
        };
        let link = UartLink::new("l");
        let (wa, wb) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let mut a = vm::PcPlatform::new(&cfg);
        let mut b = vm::PcPlatform::new(&cfg);
        a.add_linked_uart(place, boxed(link.attach(0, wa.clone())))
            .unwrap();
        b.add_linked_uart(place, boxed(link.attach(1, wb.clone())))
            .unwrap();
        // The console's ports are taken.
        let console = vm::UartPlace {
            port: 0x3F8,
            irq: 4,
        };
        assert!(a
            .add_linked_uart(console, boxed(link.attach(0, wa.clone())))
            .is_err());
        // `attach` above replaced a's end: attach a again as the current one.
        let mut a = vm::PcPlatform::new(&cfg);
        a.add_linked_uart(place, boxed(link.attach(0, wa))).unwrap();
        let open = |p: &mut vm::PcPlatform| {
            p.pio_write(COM2 + 2, 1, 0x01, 0); // FIFO on
            p.pio_write(COM2 + 4, 1, 0x0B, 0); // DTR | RTS | OUT2
            p.pio_write(COM2 + 1, 1, 0x01, 0); // RX-data interrupt
        };
        open(&mut a);
        open(&mut b);
        a.serve_backends();
        // a sees b's DTR and RTS: DSR, DCD, CTS.
        assert_eq!(a.pio_read(COM2 + 6, 1, 0) & 0xB0, 0xB0);
        // a sends 10 KiB, as much as THRE lets it; b reads as it can.
        let total = 10 * 1024;
        let (mut sent, mut got) = (0usize, alloc::vec::Vec::new());
        let mut stalled = 0;
        while got.len() < total {
            while sent < total && a.pio_read(COM2 + 5, 1, 0) & 0x20 != 0 {
                for _ in 0..vm::TX_FIFO_SIZE.min(total - sent) {
                    a.pio_write(COM2, 1, u32::from((sent % 251) as u8), 0);
                    sent += 1;
                }
            }
            if sent < total {
                stalled += 1;
            }
            b.serve_backends();
            // Let b read only 100 bytes per round: the link fills up.
            for _ in 0..100 {
                if b.pio_read(COM2 + 5, 1, 0) & 0x01 == 0 {
                    break;
                }
                got.push(b.pio_read(COM2, 1, 0) as u8);
            }
            a.serve_backends();
        }
        assert!(stalled > 0, "the slow reader never made the sender wait");
        assert!(got.iter().enumerate().all(|(i, &v)| v == (i % 251) as u8));
        let c = link.info()[0].counters;
        assert_eq!(
            (c.sent, c.delivered, c.dropped),
            (total as u64, total as u64, 0)
        );
        assert!(c.stalls > 0);
        assert_eq!(a.linked_uarts()[0].1.output_dropped, 0);
        // b's VM stops: a's modem lines drop, and a's bytes go nowhere without waiting.
        b.disconnect_links();
        a.serve_backends();
        assert_eq!(a.pio_read(COM2 + 6, 1, 0) & 0xB0, 0);
        for _ in 0..100 {
            assert_ne!(a.pio_read(COM2 + 5, 1, 0) & 0x20, 0, "THRE stays up");
            a.pio_write(COM2, 1, 0x55, 0);
        }
        assert_eq!(link.info()[0].counters.dropped, 100);
        assert!(!link.info()[1].attached);
    }
}
