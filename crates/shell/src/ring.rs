//! Per-console history: a bounded ring of the last [`RING_SIZE`] output bytes of each VM's
//! console (its vUART and its virtio console apart), with a count of the bytes nobody saw.
//!
//! A VM's console output never waits for a reader: when the ring is full the oldest byte is
//! overwritten. The ring remembers how much of its tail has not been shown yet (output that
//! arrived while the operator was elsewhere) and how many unshown bytes were overwritten, so
//! attaching can show exactly what was missed and say how much was lost.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use crate::backend::VmId;
use crate::console::Port;

/// Bytes of history kept per console (16 KiB: a few screens of boot log, and at most 16 KiB of
/// heap per VM console, allocated on the console's first output).
pub const RING_SIZE: usize = 16 * 1024;

/// One VM's console history.
#[derive(Clone, Debug, Default)]
pub struct OutputRing {
    bytes: VecDeque<u8>,
    /// The newest `unread` bytes have not been shown.
    unread: usize,
    /// Unshown bytes overwritten since the operator last looked.
    lost: u64,
}

impl OutputRing {
    /// An empty ring (no memory until the first byte).
    pub const fn new() -> Self {
        OutputRing {
            bytes: VecDeque::new(),
            unread: 0,
            lost: 0,
        }
    }

    /// Appends output; `shown` says whether it already reached the terminal. Shown output means
    /// the operator is watching this console, so any earlier unshown bytes count as shown too
    /// (the console shows them when it attaches, before any shown output arrives).
    pub fn push(&mut self, data: &[u8], shown: bool) {
        if data.is_empty() {
            return;
        }
        if self.bytes.capacity() == 0 {
            self.bytes.reserve_exact(RING_SIZE);
        }
        if shown {
            self.unread = 0;
        }
        for &b in data {
            if self.bytes.len() == RING_SIZE {
                if self.unread == RING_SIZE {
                    self.unread -= 1;
                    self.lost = self.lost.saturating_add(1);
                }
                self.bytes.pop_front();
            }
            self.bytes.push_back(b);
            if !shown {
                self.unread += 1;
            }
        }
    }

    /// Bytes held (shown or not).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the ring holds nothing.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes not shown yet.
    pub fn unread(&self) -> usize {
        self.unread
    }

    /// Unshown bytes overwritten since the last [`take_unread`](Self::take_unread) or
    /// [`take_history`](Self::take_history).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// The unshown bytes and the count of unshown bytes lost before them; everything counts as
    /// shown afterwards.
    pub fn take_unread(&mut self) -> (Vec<u8>, u64) {
        let skip = self.bytes.len() - self.unread;
        let data = self.bytes.iter().skip(skip).copied().collect();
        self.unread = 0;
        (data, core::mem::take(&mut self.lost))
    }

    /// The whole history and the count of unshown bytes lost; everything counts as shown
    /// afterwards.
    pub fn take_history(&mut self) -> (Vec<u8>, u64) {
        let data = self.bytes.iter().copied().collect();
        self.unread = 0;
        (data, core::mem::take(&mut self.lost))
    }
}

/// The rings of every VM console that has printed something, by VM and [`Port`].
#[derive(Clone, Debug, Default)]
pub struct VmLogs {
    rings: BTreeMap<(VmId, Port), OutputRing>,
}

impl VmLogs {
    /// No rings yet.
    pub const fn new() -> Self {
        VmLogs {
            rings: BTreeMap::new(),
        }
    }

    /// Appends output of `vm`'s console `port` to its ring (creating it).
    pub fn push(&mut self, vm: VmId, port: Port, data: &[u8], shown: bool) {
        if data.is_empty() {
            return;
        }
        self.rings.entry((vm, port)).or_default().push(data, shown);
    }

    /// The ring of `vm`'s console `port`, if it ever printed.
    pub fn get(&self, vm: VmId, port: Port) -> Option<&OutputRing> {
        self.rings.get(&(vm, port))
    }

    /// The ring of `vm`'s console `port`, writable, if it ever printed.
    pub fn get_mut(&mut self, vm: VmId, port: Port) -> Option<&mut OutputRing> {
        self.rings.get_mut(&(vm, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_output_is_taken_once() {
        let mut r = OutputRing::new();
        assert_eq!(r.bytes.capacity(), 0);
        r.push(b"seen ", true);
        r.push(b"boot", false);
        assert_eq!((r.len(), r.unread(), r.lost()), (9, 4, 0));
        assert_eq!(r.take_unread(), (b"boot".to_vec(), 0));
        assert_eq!(r.take_unread(), (Vec::new(), 0));
        assert_eq!(r.take_history(), (b"seen boot".to_vec(), 0));
    }

    #[test]
    fn a_full_ring_drops_the_oldest_and_counts_unshown_losses() {
        let mut r = OutputRing::new();
        let data: Vec<u8> = (0..RING_SIZE + 1000).map(|i| (i % 251) as u8).collect();
        r.push(&data, false);
        assert_eq!(
            (r.len(), r.unread(), r.lost()),
            (RING_SIZE, RING_SIZE, 1000)
        );
        let (tail, lost) = r.take_unread();
        assert_eq!(lost, 1000);
        assert_eq!(tail, data[1000..]);
        assert_eq!(r.lost(), 0);
        // Overwriting bytes already shown loses nothing.
        r.push(&[7; 500], false);
        assert_eq!((r.len(), r.unread(), r.lost()), (RING_SIZE, 500, 0));
        // The rest of the ring is overwritten; the 500 unshown bytes are lost.
        r.push(&[8; RING_SIZE], false);
        assert_eq!((r.len(), r.unread(), r.lost()), (RING_SIZE, RING_SIZE, 500));
        // Shown output marks everything before it as shown.
        r.push(b"x", true);
        assert_eq!((r.len(), r.unread(), r.lost()), (RING_SIZE, 0, 500));
        assert_eq!(r.take_unread(), (Vec::new(), 500));
        assert!(r.bytes.capacity() >= RING_SIZE);
    }

    #[test]
    fn logs_create_rings_on_first_output() {
        let mut logs = VmLogs::new();
        logs.push(VmId(3), Port::Uart, b"", false);
        assert!(logs.get(VmId(3), Port::Uart).is_none());
        logs.push(VmId(3), Port::Uart, b"x", false);
        assert_eq!(
            logs.get(VmId(3), Port::Uart).map(OutputRing::unread),
            Some(1)
        );
        assert!(logs.get_mut(VmId(1), Port::Uart).is_none());
    }

    #[test]
    fn each_port_of_a_vm_has_its_own_ring() {
        let mut logs = VmLogs::new();
        logs.push(VmId(1), Port::Uart, b"com1", false);
        assert!(logs.get(VmId(1), Port::Hvc).is_none());
        logs.push(VmId(1), Port::Hvc, b"hvc", true);
        let uart = logs.get(VmId(1), Port::Uart).map(|r| (r.len(), r.unread()));
        let hvc = logs.get(VmId(1), Port::Hvc).map(|r| (r.len(), r.unread()));
        assert_eq!((uart, hvc), (Some((4, 4)), Some((3, 0))));
        let taken = logs
            .get_mut(VmId(1), Port::Hvc)
            .map(OutputRing::take_history);
        assert_eq!(taken, Some((b"hvc".to_vec(), 0)));
        assert_eq!(
            logs.get(VmId(1), Port::Uart).map(OutputRing::unread),
            Some(4)
        );
    }
}
