//! A virtual switch: a learning Ethernet bridge between ports.
//!
//! A port is a bounded queue of frames waiting for whoever drains it, plus a
//! [`PortWaker`] that tells that party something arrived. Today every port
//! is a VM's virtio-net interface ([`SwitchPort`] is its [`NetBackend`]);
//! an uplink (a physical NIC the hypervisor drives, or a device model in a
//! Service VM) is one more port whose owner drains and fills it the same
//! way, so the switch needs no change for it.
//!
//! Forwarding: the source MAC of every frame a port sends is learned for
//! that port (a table of at most [`FDB_CAPACITY`] addresses; the oldest
//! entry makes room). A frame to a learned unicast address goes to that
//! port only; broadcast, multicast and unknown unicast frames go to every
//! other port. A frame never goes back to the port it came from and never
//! leaves the switch: a VM not on the switch cannot see it. A port whose
//! queue is full drops the frame and counts it (the sender is never held
//! up by a slow receiver).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use spin::Mutex;

/// Frames a port holds for its owner before it drops.
pub const PORT_QUEUE_FRAMES: usize = 256;
/// Learned addresses per switch.
pub const FDB_CAPACITY: usize = 1024;
/// Shortest frame (an Ethernet header).
pub const MIN_FRAME: usize = 14;
/// Longest frame a port accepts (jumbo frames up to 9000 bytes of payload).
pub const MAX_FRAME: usize = 9018;

/// Tells a port's owner that frames wait (must not block: it runs with the
/// switch locked).
pub trait PortWaker: Send + Sync {
    fn wake(&self);
}

/// A port's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Frames (and bytes) the port sent into the switch.
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames (and bytes) the switch queued for the port.
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames for the port dropped because its queue was full.
    pub rx_dropped: u64,
    /// Frames the port sent that were malformed (too short or too long).
    pub tx_malformed: u64,
}

/// What the shell shows of a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    pub name: String,
    pub mac: [u8; 6],
    pub counters: PortCounters,
    pub queued: usize,
}

struct Port {
    name: String,
    mac: [u8; 6],
    queue: VecDeque<Vec<u8>>,
    counters: PortCounters,
    waker: Box<dyn PortWaker>,
}

struct Inner {
    ports: Vec<Port>,
    /// (address, port), oldest first.
    fdb: VecDeque<([u8; 6], usize)>,
    /// Frames that went to every other port.
    flooded: u64,
}

/// A named learning bridge.
pub struct Switch {
    name: String,
    inner: Mutex<Inner>,
}

fn is_group(mac: &[u8]) -> bool {
    mac.first().is_some_and(|b| b & 1 != 0)
}

impl Switch {
    pub fn new(name: &str) -> Arc<Switch> {
        Arc::new(Switch {
            name: String::from(name),
            inner: Mutex::new(Inner {
                ports: Vec::new(),
                fdb: VecDeque::new(),
                flooded: 0,
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a port called `name` (e.g. "vm1/eth0") whose interface has
    /// `mac`; `waker` is told when frames arrive for it.
    pub fn attach(
        self: &Arc<Self>,
        name: &str,
        mac: [u8; 6],
        waker: Box<dyn PortWaker>,
    ) -> SwitchPort {
        let mut inner = self.inner.lock();
        inner.ports.push(Port {
            name: String::from(name),
            mac,
            queue: VecDeque::new(),
            counters: PortCounters::default(),
            waker,
        });
        SwitchPort {
            switch: self.clone(),
            port: inner.ports.len() - 1,
        }
    }

    /// The port named `name` again (a VM that restarts gets its port back,
    /// emptied; its waker is replaced).
    pub fn reattach(
        self: &Arc<Self>,
        name: &str,
        mac: [u8; 6],
        waker: Box<dyn PortWaker>,
    ) -> SwitchPort {
        let mut inner = self.inner.lock();
        if let Some(i) = inner.ports.iter().position(|p| p.name == name) {
            let p = &mut inner.ports[i];
            p.mac = mac;
            p.queue.clear();
            p.waker = waker;
            return SwitchPort {
                switch: self.clone(),
                port: i,
            };
        }
        drop(inner);
        self.attach(name, mac, waker)
    }

    /// Forwards `frame` sent by `from`.
    fn forward(&self, from: usize, frame: &[u8]) {
        let mut inner = self.inner.lock();
        let Inner {
            ports,
            fdb,
            flooded,
        } = &mut *inner;
        let Some(src_port) = ports.get_mut(from) else {
            return;
        };
        if !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
            src_port.counters.tx_malformed += 1;
            return;
        }
        src_port.counters.tx_frames += 1;
        src_port.counters.tx_bytes += frame.len() as u64;
        let mut dst = [0u8; 6];
        dst.copy_from_slice(&frame[0..6]);
        let mut src = [0u8; 6];
        src.copy_from_slice(&frame[6..12]);
        if !is_group(&src) {
            if let Some(i) = fdb.iter().position(|(m, _)| *m == src) {
                fdb.remove(i);
            } else if fdb.len() == FDB_CAPACITY {
                fdb.pop_front();
            }
            fdb.push_back((src, from));
        }
        let known = (!is_group(&dst))
            .then(|| fdb.iter().find(|(m, _)| *m == dst).map(|&(_, p)| p))
            .flatten();
        match known {
            Some(to) if to == from => {}
            Some(to) => deliver(&mut ports[to], frame),
            None => {
                *flooded += 1;
                for (i, p) in ports.iter_mut().enumerate() {
                    if i != from {
                        deliver(p, frame);
                    }
                }
            }
        }
    }

    /// Each port's state.
    pub fn ports(&self) -> Vec<PortInfo> {
        let inner = self.inner.lock();
        inner
            .ports
            .iter()
            .map(|p| PortInfo {
                name: p.name.clone(),
                mac: p.mac,
                counters: p.counters,
                queued: p.queue.len(),
            })
            .collect()
    }

    /// The learned addresses and their ports' names, oldest first.
    pub fn learned(&self) -> Vec<([u8; 6], String)> {
        let inner = self.inner.lock();
        inner
            .fdb
            .iter()
            .map(|(m, p)| (*m, inner.ports[*p].name.clone()))
            .collect()
    }

    /// Frames flooded to every other port.
    pub fn flooded(&self) -> u64 {
        self.inner.lock().flooded
    }
}

fn deliver(p: &mut Port, frame: &[u8]) {
    if p.queue.len() >= PORT_QUEUE_FRAMES {
        p.counters.rx_dropped += 1;
        return;
    }
    p.queue.push_back(Vec::from(frame));
    p.counters.rx_frames += 1;
    p.counters.rx_bytes += frame.len() as u64;
    p.waker.wake();
}

/// Where a virtio-net device sends and receives frames.
pub trait NetBackend: Send {
    /// A frame from the guest (Ethernet header onwards).
    fn send(&mut self, frame: &[u8]);
    /// The next frame for the guest, if any.
    fn recv(&mut self) -> Option<Vec<u8>>;
    /// Whether frames wait for the guest.
    fn has_frames(&self) -> bool;
}

/// One port of a [`Switch`], as its owner holds it.
pub struct SwitchPort {
    switch: Arc<Switch>,
    port: usize,
}

impl SwitchPort {
    pub fn switch(&self) -> &Arc<Switch> {
        &self.switch
    }
}

impl NetBackend for SwitchPort {
    fn send(&mut self, frame: &[u8]) {
        self.switch.forward(self.port, frame);
    }

    fn recv(&mut self) -> Option<Vec<u8>> {
        self.switch
            .inner
            .lock()
            .ports
            .get_mut(self.port)?
            .queue
            .pop_front()
    }

    fn has_frames(&self) -> bool {
        self.switch
            .inner
            .lock()
            .ports
            .get(self.port)
            .is_some_and(|p| !p.queue.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicU32, Ordering};

    struct Count(Arc<AtomicU32>);
    impl PortWaker for Count {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn frame(dst: [u8; 6], src: [u8; 6], tag: u8) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x88, 0xB5, tag]);
        f
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xA];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xB];
    const C: [u8; 6] = [2, 0, 0, 0, 0, 0xC];
    const BCAST: [u8; 6] = [0xFF; 6];

    fn three() -> (Arc<Switch>, [SwitchPort; 3], [Arc<AtomicU32>; 3]) {
        let sw = Switch::new("lan0");
        let w: [Arc<AtomicU32>; 3] = Default::default();
        let ports = [
            sw.attach("a", A, Box::new(Count(w[0].clone()))),
            sw.attach("b", B, Box::new(Count(w[1].clone()))),
            sw.attach("c", C, Box::new(Count(w[2].clone()))),
        ];
        (sw, ports, w)
    }

    #[test]
    fn unknown_and_broadcast_flood_learned_unicast_goes_to_one_port() {
        let (sw, [mut a, mut b, mut c], w) = three();
        a.send(&frame(BCAST, A, 1));
        assert_eq!(b.recv(), Some(frame(BCAST, A, 1)));
        assert_eq!(c.recv(), Some(frame(BCAST, A, 1)));
        assert_eq!(a.recv(), None, "never back to the sender");
        // B answers A: A was learned, so C sees nothing.
        b.send(&frame(A, B, 2));
        assert_eq!(a.recv(), Some(frame(A, B, 2)));
        assert!(!c.has_frames());
        // Unknown unicast floods.
        a.send(&frame([2, 0, 0, 0, 0, 0xD], A, 3));
        assert!(b.has_frames() && c.has_frames());
        assert_eq!(w[2].load(Ordering::Relaxed), 2);
        assert_eq!(sw.flooded(), 2);
        let learned = sw.learned();
        assert_eq!(learned.len(), 2);
        assert!(learned.contains(&(A, "a".into())) && learned.contains(&(B, "b".into())));
        let ports = sw.ports();
        assert_eq!(ports[0].counters.tx_frames, 2);
        assert_eq!(ports[1].counters.rx_frames, 2);
    }

    #[test]
    fn a_frame_never_crosses_to_another_switch() {
        let (_s0, [mut a, mut b, _c], _) = three();
        let s1 = Switch::new("lan1");
        let mut x = s1.attach("x", C, Box::new(Count(Arc::default())));
        let mut y = s1.attach("y", [2, 0, 0, 0, 0, 0xE], Box::new(Count(Arc::default())));
        a.send(&frame(BCAST, A, 1));
        b.send(&frame(BCAST, B, 1));
        assert!(!x.has_frames() && !y.has_frames());
        x.send(&frame(BCAST, C, 9));
        assert_eq!(y.recv(), Some(frame(BCAST, C, 9)));
        assert_eq!(a.recv(), Some(frame(BCAST, B, 1)));
        assert_eq!(a.recv(), None);
    }

    #[test]
    fn hostile_frames_are_counted_and_a_full_port_drops() {
        let (sw, [mut a, mut b, _c], _) = three();
        a.send(&[0u8; 13]);
        a.send(&alloc::vec![0u8; MAX_FRAME + 1]);
        assert_eq!(sw.ports()[0].counters.tx_malformed, 2);
        assert!(!b.has_frames());
        for i in 0..PORT_QUEUE_FRAMES + 5 {
            a.send(&frame(B, A, i as u8));
        }
        let p = &sw.ports()[1];
        assert_eq!(p.queued, PORT_QUEUE_FRAMES);
        // The first unicast to B floods (B unknown): C got one too.
        assert_eq!(p.counters.rx_dropped, 5);
        assert_eq!(b.recv(), Some(frame(B, A, 0)));
    }

    #[test]
    fn a_multicast_source_is_not_learned_and_the_table_is_bounded() {
        let (sw, [mut a, ..], _) = three();
        a.send(&frame(BCAST, BCAST, 0));
        assert!(sw.learned().is_empty());
        for i in 0..FDB_CAPACITY + 10 {
            let src = [2, 1, 0, 0, (i >> 8) as u8, i as u8];
            a.send(&frame(BCAST, src, 0));
        }
        assert_eq!(sw.learned().len(), FDB_CAPACITY);
    }

    #[test]
    fn a_restarted_vm_gets_its_port_back_empty() {
        let (sw, [mut a, _b, _c], _) = three();
        a.send(&frame(BCAST, A, 1));
        let mut b2 = sw.reattach("b", B, Box::new(Count(Arc::default())));
        assert_eq!(sw.ports().len(), 3);
        assert!(!b2.has_frames());
        a.send(&frame(B, A, 2));
        assert_eq!(b2.recv(), Some(frame(B, A, 2)));
    }
}
