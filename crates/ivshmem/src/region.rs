//! A shared region and the doorbells between its peers.
//!
//! Peer `i` is the `i`-th VM of the region's list. A device attaches to its peer's slot when its
//! VM loads ([`Region::attach`]); a ring to a peer sets bit `vector` of that peer's pending word
//! and, when the word was empty, wakes the peer (one wake until the peer took what came: a flood
//! never turns into a flood of kicks). The peer's device takes the word when it is served
//! ([`PeerPort::take`]) and raises its interrupts.
//!
//! What a sender cannot do: ring a peer that does not exist or a vector the device does not have
//! (dropped, counted), ring a peer whose VM is not loaded (dropped, counted: a stopped or crashed
//! peer is never waited for), or ring faster than [`DOORBELL_RATE`] per second after a burst of
//! [`DOORBELL_BURST`] (dropped, counted as rate-limited, logged at powers of two). A ring for a
//! vector already pending at the peer is merged into it (counted as coalesced), as a device's
//! pending bit would.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use spin::Mutex;

/// Doorbells one peer may ring per second, sustained.
pub const DOORBELL_RATE: u64 = 10_000;
/// Doorbells one peer may ring at once before the rate applies.
pub const DOORBELL_BURST: u64 = 256;

/// Wakes whoever serves a peer (must not block: it runs with the region locked).
pub trait Waker: Send + Sync {
    fn wake(&self);
}

/// One peer as the configuration gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The VM's id.
    pub vm: u16,
    /// The VM's name (for the shell).
    pub name: &'static str,
    /// Maps the region read-only.
    pub readonly: bool,
}

/// A peer's doorbell counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCounters {
    /// Doorbells this peer rang that were accepted.
    pub sent: u64,
    /// Doorbells accepted for this peer.
    pub received: u64,
    /// Of those, merged into a vector already pending here.
    pub coalesced: u64,
    /// Interrupts this peer's device raised for them (an MSI-X message, a pending MSI-X bit or
    /// interrupt status).
    pub delivered: u64,
    /// Doorbells this peer rang that went nowhere: no such peer, no such vector, or the peer's VM
    /// is not loaded.
    pub dropped: u64,
    /// Doorbells this peer rang over its rate.
    pub rate_limited: u64,
    /// Accesses of this peer to the region that exited (a read-only peer's writes, dropped; reads
    /// only if the mapping failed, answered all ones).
    pub trapped: u64,
}

/// Why a ring was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// No peer with that id.
    NoSuchPeer,
    /// The vector is not one the device has.
    NoSuchVector,
    /// The peer's VM is not loaded (no device attached).
    PeerAbsent,
    /// Over the sender's rate.
    RateLimited,
    /// The sender's port was replaced (its VM reloaded).
    Stale,
}

struct Peer {
    info: PeerInfo,
    waker: Option<Box<dyn Waker>>,
    /// Bumped at each attach: a port of an earlier attach is stale.
    generation: u64,
    counters: PeerCounters,
    /// Token bucket: tokens (scaled by 1e9 / DOORBELL_RATE ns each) and when last refilled.
    tokens: u64,
    refilled_ns: u64,
}

/// A shared-memory region.
pub struct Region {
    name: String,
    size: u64,
    host: u64,
    /// Bits pending per peer (outside the lock: [`PeerPort::has_pending`] is lock-free).
    pending: Vec<AtomicU32>,
    peers: Mutex<Vec<Peer>>,
    /// Monotonic nanoseconds (for the rate limit).
    clock: fn() -> u64,
}

impl Region {
    /// Region `name` of `size` bytes at host-physical `host`, shared by `peers` (peer id = index).
    pub fn new(
        name: &str,
        size: u64,
        host: u64,
        peers: &[PeerInfo],
        clock: fn() -> u64,
    ) -> Arc<Region> {
        let now = clock();
        Arc::new(Region {
            name: String::from(name),
            size,
            host,
            pending: peers.iter().map(|_| AtomicU32::new(0)).collect(),
            peers: Mutex::new(
                peers
                    .iter()
                    .map(|&info| Peer {
                        info,
                        waker: None,
                        generation: 0,
                        counters: PeerCounters::default(),
                        tokens: DOORBELL_BURST,
                        refilled_ns: now,
                    })
                    .collect(),
            ),
            clock,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Host-physical base.
    pub fn host(&self) -> u64 {
        self.host
    }

    /// The peer id of VM `vm`, if it maps the region.
    pub fn peer_of(&self, vm: u16) -> Option<u16> {
        let peers = self.peers.lock();
        let i = peers.iter().position(|p| p.info.vm == vm)?;
        u16::try_from(i).ok()
    }

    /// Each peer, with its counters and whether its device is attached.
    pub fn peers(&self) -> Vec<(PeerInfo, PeerCounters, bool)> {
        self.peers
            .lock()
            .iter()
            .map(|p| (p.info, p.counters, p.waker.is_some()))
            .collect()
    }

    /// Attaches peer `peer`'s device (its VM loaded): what was pending for the peer is dropped,
    /// `waker` is told of rings from now on. None if there is no such peer.
    pub fn attach(self: &Arc<Self>, peer: u16, waker: Box<dyn Waker>) -> Option<PeerPort> {
        let mut peers = self.peers.lock();
        let p = peers.get_mut(usize::from(peer))?;
        p.generation += 1;
        p.waker = Some(waker);
        self.pending[usize::from(peer)].store(0, Ordering::Relaxed);
        Some(PeerPort {
            region: self.clone(),
            peer,
            generation: p.generation,
        })
    }

    fn ring(&self, from: u16, generation: u64, to: u16, vector: u32) -> Result<(), RingError> {
        let now = (self.clock)();
        let mut peers = self.peers.lock();
        let n = peers.len();
        let Some(sender) = peers.get_mut(usize::from(from)) else {
            return Err(RingError::Stale);
        };
        if sender.generation != generation {
            return Err(RingError::Stale);
        }
        // Refill: one token per 1/DOORBELL_RATE s, up to the burst.
        let per_token = 1_000_000_000 / DOORBELL_RATE;
        let earned = now.saturating_sub(sender.refilled_ns) / per_token;
        if earned > 0 {
            sender.tokens = (sender.tokens + earned).min(DOORBELL_BURST);
            sender.refilled_ns += earned * per_token;
        }
        if sender.tokens > 0 && sender.tokens == DOORBELL_BURST {
            // A full bucket does not bank time.
            sender.refilled_ns = now;
        }
        let verdict = if usize::from(to) >= n {
            Err(RingError::NoSuchPeer)
        } else if vector >= crate::IVSHMEM_VECTORS {
            Err(RingError::NoSuchVector)
        } else if sender.tokens == 0 {
            Err(RingError::RateLimited)
        } else {
            Ok(())
        };
        match verdict {
            Err(RingError::RateLimited) => {
                sender.counters.rate_limited += 1;
                let c = sender.counters.rate_limited;
                if c.is_power_of_two() {
                    log::warn!(
                        "shm {}: vm {} rings doorbells faster than {DOORBELL_RATE}/s: {c} dropped so far",
                        self.name,
                        sender.info.name
                    );
                }
                return verdict;
            }
            Err(e) => {
                sender.counters.dropped += 1;
                let c = sender.counters.dropped;
                if c.is_power_of_two() {
                    log::warn!(
                        "shm {}: vm {} rang peer {to} vector {vector}: {e:?} ({c} dropped so far)",
                        self.name,
                        sender.info.name
                    );
                }
                return verdict;
            }
            Ok(()) => sender.tokens -= 1,
        }
        let target = &mut peers[usize::from(to)];
        let Some(waker) = &target.waker else {
            peers[usize::from(from)].counters.dropped += 1;
            return Err(RingError::PeerAbsent);
        };
        let bit = 1u32 << vector;
        let before = self.pending[usize::from(to)].fetch_or(bit, Ordering::AcqRel);
        if before & bit != 0 {
            target.counters.coalesced += 1;
        }
        if before == 0 {
            waker.wake();
        }
        target.counters.received += 1;
        peers[usize::from(from)].counters.sent += 1;
        Ok(())
    }
}

/// A peer's attachment to its region, as its device holds it.
pub struct PeerPort {
    region: Arc<Region>,
    peer: u16,
    generation: u64,
}

impl PeerPort {
    /// The region.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// The peer id.
    pub fn peer(&self) -> u16 {
        self.peer
    }

    /// Rings vector `vector` of peer `to`.
    pub fn ring(&self, to: u16, vector: u32) -> Result<(), RingError> {
        self.region.ring(self.peer, self.generation, to, vector)
    }

    /// Whether rings wait for this peer (lock-free).
    pub fn has_pending(&self) -> bool {
        self.region
            .pending
            .get(usize::from(self.peer))
            .is_some_and(|p| p.load(Ordering::Relaxed) != 0)
    }

    /// Takes the vectors rung for this peer since the last call (0 for a stale port).
    pub fn take(&self) -> u32 {
        if !self.current() {
            return 0;
        }
        self.region
            .pending
            .get(usize::from(self.peer))
            .map_or(0, |p| p.swap(0, Ordering::AcqRel))
    }

    /// Counts `n` interrupts the device raised.
    pub fn delivered(&self, n: u64) {
        let mut peers = self.region.peers.lock();
        if let Some(p) = peers.get_mut(usize::from(self.peer)) {
            p.counters.delivered += n;
        }
    }

    /// Counts an access to the region that exited (logged at powers of two).
    pub fn trapped(&self, write: bool) {
        let mut peers = self.region.peers.lock();
        if let Some(p) = peers.get_mut(usize::from(self.peer)) {
            p.counters.trapped += 1;
            let c = p.counters.trapped;
            if c.is_power_of_two() {
                log::warn!(
                    "shm {}: vm {} {} the region through an exit ({}; {c} so far)",
                    self.region.name,
                    p.info.name,
                    if write { "wrote" } else { "read" },
                    if write && p.info.readonly {
                        "read-only: dropped"
                    } else {
                        "not mapped: all ones"
                    }
                );
            }
        }
    }

    fn current(&self) -> bool {
        self.region
            .peers
            .lock()
            .get(usize::from(self.peer))
            .is_some_and(|p| p.generation == self.generation)
    }
}

impl Drop for PeerPort {
    /// A device that goes away (its VM stopped or reloads) detaches, unless a newer one
    /// attached already.
    fn drop(&mut self) {
        let mut peers = self.region.peers.lock();
        if let Some(p) = peers.get_mut(usize::from(self.peer)) {
            if p.generation == self.generation {
                p.waker = None;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use core::sync::atomic::AtomicU64;

    pub static NOW: AtomicU64 = AtomicU64::new(0);

    pub fn clock() -> u64 {
        NOW.load(Ordering::Relaxed)
    }

    pub struct Count(pub Arc<AtomicU32>);
    impl Waker for Count {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn two() -> Arc<Region> {
        Region::new(
            "r",
            0x1000,
            0x100_0000,
            &[
                PeerInfo {
                    vm: 4,
                    name: "a",
                    readonly: false,
                },
                PeerInfo {
                    vm: 7,
                    name: "b",
                    readonly: true,
                },
            ],
            clock,
        )
    }

    #[test]
    fn a_ring_wakes_the_peer_once_until_it_takes() {
        let r = two();
        let wa = Arc::new(AtomicU32::new(0));
        let wb = Arc::new(AtomicU32::new(0));
        let a = r.attach(0, Box::new(Count(wa.clone()))).unwrap();
        let b = r.attach(1, Box::new(Count(wb.clone()))).unwrap();
        assert_eq!(r.peer_of(7), Some(1));
        assert_eq!(r.peer_of(5), None);
        assert_eq!(a.ring(1, 0), Ok(()));
        assert_eq!(a.ring(1, 2), Ok(()));
        assert_eq!(a.ring(1, 2), Ok(()));
        assert_eq!(wb.load(Ordering::Relaxed), 1, "one wake until taken");
        assert!(b.has_pending() && !a.has_pending());
        assert_eq!(b.take(), 0b101);
        assert!(!b.has_pending());
        b.delivered(2);
        assert_eq!(a.ring(1, 1), Ok(()));
        assert_eq!(wb.load(Ordering::Relaxed), 2);
        // A peer may ring itself.
        assert_eq!(a.ring(0, 3), Ok(()));
        assert_eq!(wa.load(Ordering::Relaxed), 1);
        let peers = r.peers();
        assert_eq!(peers[0].1.sent, 5);
        assert_eq!(
            peers[1].1,
            PeerCounters {
                received: 4,
                coalesced: 1,
                delivered: 2,
                ..PeerCounters::default()
            }
        );
        assert!(peers[0].2 && peers[1].2);
    }

    #[test]
    fn rings_to_nobody_and_bad_vectors_are_dropped_and_counted() {
        let r = two();
        let a = r.attach(0, Box::new(Count(Arc::default()))).unwrap();
        assert_eq!(a.ring(1, 0), Err(RingError::PeerAbsent), "b not loaded");
        assert_eq!(a.ring(2, 0), Err(RingError::NoSuchPeer));
        assert_eq!(a.ring(0xFFFF, 0), Err(RingError::NoSuchPeer));
        assert_eq!(
            a.ring(0, crate::IVSHMEM_VECTORS),
            Err(RingError::NoSuchVector)
        );
        assert_eq!(a.ring(0, u32::MAX), Err(RingError::NoSuchVector));
        assert_eq!(r.peers()[0].1.dropped, 5);
        assert_eq!(r.peers()[0].1.sent, 0);
        // A stopped peer's device detaches: its rings are dropped, nobody waits.
        let b = r.attach(1, Box::new(Count(Arc::default()))).unwrap();
        assert_eq!(a.ring(1, 0), Ok(()));
        drop(b);
        assert!(!r.peers()[1].2);
        assert_eq!(a.ring(1, 0), Err(RingError::PeerAbsent));
    }

    #[test]
    fn a_reloaded_peer_starts_empty_and_its_old_port_is_stale() {
        let r = two();
        let a = r.attach(0, Box::new(Count(Arc::default()))).unwrap();
        let old = r.attach(1, Box::new(Count(Arc::default()))).unwrap();
        a.ring(1, 1).unwrap();
        let new = r.attach(1, Box::new(Count(Arc::default()))).unwrap();
        assert!(!new.has_pending(), "pending dropped at attach");
        a.ring(1, 0).unwrap();
        assert_eq!(old.take(), 0, "stale port takes nothing");
        assert_eq!(old.ring(0, 0), Err(RingError::Stale));
        drop(old);
        assert!(r.peers()[1].2, "the old port's drop leaves the new attach");
        assert_eq!(new.take(), 1);
    }

    #[test]
    fn a_flood_is_rate_limited_then_the_rate_recovers() {
        let r = two();
        let a = r.attach(0, Box::new(Count(Arc::default()))).unwrap();
        let b = r.attach(1, Box::new(Count(Arc::default()))).unwrap();
        NOW.store(1_000_000_000, Ordering::Relaxed);
        let mut ok = 0;
        for _ in 0..1000 {
            if a.ring(1, 0).is_ok() {
                ok += 1;
            }
        }
        // The burst, plus what the clock jump earned (capped at the burst).
        assert_eq!(ok, DOORBELL_BURST);
        assert_eq!(r.peers()[0].1.rate_limited, 1000 - DOORBELL_BURST);
        // 1 ms later: 20 more.
        NOW.fetch_add(1_000_000, Ordering::Relaxed);
        let ok = (0..1000).filter(|_| a.ring(1, 1).is_ok()).count() as u64;
        assert_eq!(ok, DOORBELL_RATE / 1000);
        // The receiver's own rate is untouched.
        assert_eq!(b.ring(0, 0), Ok(()));
        assert_eq!(
            b.take(),
            0b11,
            "a flood is two pending bits at the receiver"
        );
        assert_eq!(a.take(), 0b1);
    }
}
