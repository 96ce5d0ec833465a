//! The Quercus message channel: messages between two VMs through a shared-memory region (an
//! ivshmem device's BAR 2), written and read in place by the two VMs, never copied by the
//! hypervisor. The region holds two single-producer, single-consumer rings, one per direction;
//! a doorbell (the ivshmem doorbell register) wakes a reader that said it would sleep. The same
//! code runs in a bare-metal guest and in Linux userspace (`no_std`, no `unsafe`): the caller
//! gives the region as a [`Shared`] and rings the doorbell when [`Channel::send`] asks for it.
//!
//! # Layout (version 1, all fields little-endian `u32`)
//!
//! | offset | field |
//! |---|---|
//! | 0x000 | magic `QMC1` (0x3143_4D51), written last by the formatter |
//! | 0x004 | version (1) |
//! | 0x008 | `ring_bytes`: data bytes of each ring, a power of two from [`MIN_RING`] |
//! | 0x040, 0x080 | peer 0's and peer 1's session: 0 absent, else a count its attaches |
//! | 0x100 + 0x100·r | ring `r` (messages from peer `r`): `head` (the writer's byte counter) |
//! | 0x140 + 0x100·r | `tail` (the reader's byte counter) |
//! | 0x180 + 0x100·r | `wait`: 1 while the reader sleeps until a doorbell |
//! | 0x400 + `ring_bytes`·r | ring `r`'s data |
//!
//! A region needs `0x400 + 2 · ring_bytes` bytes; [`ring_bytes_for`] picks the largest ring that
//! fits. Peer ids are the ivshmem IV positions (0 and 1). Counters run freely modulo 2^32; a
//! ring's fill is `head - tail`. Each message is a record: its payload length (`u32`), the
//! payload, padding to 8 bytes. A record never wraps: when it does not fit before the end of the
//! data, the writer puts a pad record (length `0xFFFF_FFFF`) and starts again at offset 0.
//! Payloads are at most [`Channel::max_message`] bytes (a quarter of the ring).
//!
//! Ordering: the writer fills the record, then publishes `head` (release); the reader reads
//! `head` (acquire), the record, then publishes `tail` (release). A reader about to sleep sets
//! `wait`, then looks at `head` once more; a writer publishes `head`, then looks at `wait` and,
//! finding it set, clears it and rings once: with a full fence between each pair, one of the two
//! always sees the other (no lost wake-up), and a burst of messages rings one doorbell.
//!
//! Peer 0 formats the region on its first attach (the hypervisor hands it zeroed); peer 1 waits
//! for the magic. A peer that attaches again (its VM rebooted) drops what waited for it.
//!
//! # Hostile peers
//! The other VM can write anything anywhere in the region at any time. Every counter and length
//! is checked before use: a ring whose fill exceeds its size or is not a multiple of 8, a record
//! longer than the fill or the limit, make [`Channel::recv`] return [`ChannelError::Corrupt`] and
//! the channel refuse everything afterwards. Nothing is ever read or written outside the region.

#![no_std]
#![forbid(unsafe_code)]

use core::fmt;

/// `QMC1`.
pub const MAGIC: u32 = 0x3143_4D51;
pub const VERSION: u32 = 1;
/// Smallest ring.
pub const MIN_RING: u32 = 256;
/// Where ring data starts.
pub const DATA_OFFSET: usize = 0x400;

const OFF_MAGIC: usize = 0x000;
const OFF_VERSION: usize = 0x004;
const OFF_RING_BYTES: usize = 0x008;
const OFF_SESSION: [usize; 2] = [0x040, 0x080];
const RECORD_ALIGN: u32 = 8;
const PAD: u32 = u32::MAX;

const fn off_head(ring: usize) -> usize {
    0x100 + 0x100 * ring
}
const fn off_tail(ring: usize) -> usize {
    0x140 + 0x100 * ring
}
const fn off_wait(ring: usize) -> usize {
    0x180 + 0x100 * ring
}

/// The shared region as the channel reaches it. Offsets and lengths the channel passes are
/// always inside [`Shared::size`] and `u32` offsets are 4-byte aligned.
pub trait Shared {
    /// Bytes of the region.
    fn size(&self) -> usize;
    /// A `u32` at `off`, read with acquire ordering.
    fn load(&self, off: usize) -> u32;
    /// A `u32` at `off`, written with release ordering.
    fn store(&self, off: usize, value: u32);
    /// Copies region bytes at `off` into `buf`.
    fn read(&self, off: usize, buf: &mut [u8]);
    /// Copies `data` into the region at `off`.
    fn write(&self, off: usize, data: &[u8]);
    /// A full memory fence (orders earlier stores before later loads).
    fn fence(&self);
}

impl<T: Shared + ?Sized> Shared for &T {
    fn size(&self) -> usize {
        (**self).size()
    }
    fn load(&self, off: usize) -> u32 {
        (**self).load(off)
    }
    fn store(&self, off: usize, value: u32) {
        (**self).store(off, value)
    }
    fn read(&self, off: usize, buf: &mut [u8]) {
        (**self).read(off, buf)
    }
    fn write(&self, off: usize, data: &[u8]) {
        (**self).write(off, data)
    }
    fn fence(&self) {
        (**self).fence()
    }
}

/// The largest ring (a power of two) that a region of `size` bytes holds twice, if any.
pub fn ring_bytes_for(size: usize) -> Option<u32> {
    let room = size.checked_sub(DATA_OFFSET)? / 2;
    let room = u32::try_from(room).unwrap_or(1 << 31);
    if room < MIN_RING {
        return None;
    }
    Some(1 << (31 - room.leading_zeros()))
}

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelError {
    /// The region is too small for two rings of [`MIN_RING`] bytes.
    RegionTooSmall { size: usize },
    /// The peer id is not 0 or 1.
    BadPeer(usize),
    /// Peer 1 attached before peer 0 formatted the region (try again later).
    NotFormatted,
    /// The header does not describe a region of this size and version.
    BadHeader {
        magic: u32,
        version: u32,
        ring_bytes: u32,
    },
    /// A message longer than [`Channel::max_message`].
    TooLong { len: usize, max: usize },
    /// The peer broke the ring it writes or the counter it owns (see "Hostile peers").
    Corrupt(&'static str),
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::RegionTooSmall { size } => write!(
                f,
                "a region of {size} bytes is too small (at least {:#x})",
                DATA_OFFSET + 2 * MIN_RING as usize
            ),
            ChannelError::BadPeer(p) => write!(f, "peer id {p} is not 0 or 1"),
            ChannelError::NotFormatted => write!(f, "peer 0 has not formatted the region yet"),
            ChannelError::BadHeader {
                magic,
                version,
                ring_bytes,
            } => write!(
                f,
                "the region's header is not a channel of this size (magic {magic:#x}, version {version}, rings of {ring_bytes} bytes)"
            ),
            ChannelError::TooLong { len, max } => {
                write!(f, "a message of {len} bytes is longer than the {max} allowed")
            }
            ChannelError::Corrupt(what) => write!(f, "the peer broke the channel: {what}"),
        }
    }
}

impl core::error::Error for ChannelError {}

/// Whether the writer should ring the peer's doorbell now (the reader said it sleeps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    Doorbell,
    NotNeeded,
}

/// One VM's end of a channel.
pub struct Channel<S: Shared> {
    mem: S,
    me: usize,
    ring_bytes: u32,
    /// The next byte this end writes in its ring / reads in the peer's (only this end moves
    /// them; kept here rather than trusted from the region).
    tx_head: u32,
    rx_tail: u32,
    broken: Option<&'static str>,
}

impl<S: Shared> Channel<S> {
    /// Attaches as peer `me` (0 or 1). Peer 0 formats the region unless it already holds a
    /// channel of the same size; peer 1 needs the format ([`ChannelError::NotFormatted`] until
    /// then). Messages that waited for this peer are dropped: a new attach starts clean.
    pub fn open(mem: S, me: usize) -> Result<Self, ChannelError> {
        if me > 1 {
            return Err(ChannelError::BadPeer(me));
        }
        let size = mem.size();
        let ring_bytes = ring_bytes_for(size).ok_or(ChannelError::RegionTooSmall { size })?;
        let header = (
            mem.load(OFF_MAGIC),
            mem.load(OFF_VERSION),
            mem.load(OFF_RING_BYTES),
        );
        let ours = header == (MAGIC, VERSION, ring_bytes);
        if !ours {
            if me == 1 {
                return Err(if header.0 == MAGIC {
                    ChannelError::BadHeader {
                        magic: header.0,
                        version: header.1,
                        ring_bytes: header.2,
                    }
                } else {
                    ChannelError::NotFormatted
                });
            }
            for ring in 0..2 {
                for off in [off_head(ring), off_tail(ring), off_wait(ring)] {
                    mem.store(off, 0);
                }
            }
            mem.store(OFF_SESSION[1], 0);
            mem.store(OFF_VERSION, VERSION);
            mem.store(OFF_RING_BYTES, ring_bytes);
            mem.store(OFF_MAGIC, MAGIC);
        }
        let peer = 1 - me;
        // Drop what waited for an earlier attach of this peer: read up to the writer's head.
        let rx_tail = mem.load(off_head(peer));
        mem.store(off_tail(peer), rx_tail);
        mem.store(off_wait(peer), 0);
        // Go on writing where this peer's ring stands (the reader's tail follows it), unless
        // the counters make no sense (the other VM wrote over them): then start both again.
        let (mut tx_head, tail) = (mem.load(off_head(me)), mem.load(off_tail(me)));
        let used = tx_head.wrapping_sub(tail);
        if used > ring_bytes || tx_head % RECORD_ALIGN != 0 || tail % RECORD_ALIGN != 0 {
            tx_head = 0;
            mem.store(off_tail(me), 0);
            mem.store(off_head(me), 0);
        }
        let session = mem.load(OFF_SESSION[me]).wrapping_add(1).max(1);
        mem.store(OFF_SESSION[me], session);
        mem.fence();
        Ok(Channel {
            mem,
            me,
            ring_bytes,
            tx_head,
            rx_tail,
            broken: None,
        })
    }

    /// This end's peer id.
    pub fn me(&self) -> usize {
        self.me
    }

    /// Data bytes of each ring.
    pub fn ring_bytes(&self) -> u32 {
        self.ring_bytes
    }

    /// The longest payload.
    pub fn max_message(&self) -> usize {
        self.ring_bytes as usize / 4
    }

    /// Whether the other peer has attached (and not marked itself gone).
    pub fn peer_attached(&self) -> bool {
        self.mem.load(OFF_SESSION[1 - self.me]) != 0
    }

    /// Marks this end gone (the peer's [`Channel::peer_attached`] turns false).
    pub fn close(self) {
        self.mem.store(OFF_SESSION[self.me], 0);
    }

    fn check(&self) -> Result<(), ChannelError> {
        match self.broken {
            Some(what) => Err(ChannelError::Corrupt(what)),
            None => Ok(()),
        }
    }

    fn data(&self, ring: usize, pos: u32) -> usize {
        DATA_OFFSET + ring * self.ring_bytes as usize + pos as usize
    }

    /// Puts `msg` in this end's ring. `Ok(None)`: the ring is full (the peer has not read
    /// enough yet; try again). `Ok(Some(Notify::Doorbell))`: ring the peer's doorbell.
    pub fn send(&mut self, msg: &[u8]) -> Result<Option<Notify>, ChannelError> {
        self.check()?;
        let max = self.max_message();
        if msg.len() > max {
            return Err(ChannelError::TooLong {
                len: msg.len(),
                max,
            });
        }
        let ring = self.me;
        let need = record_len(msg.len());
        let tail = self.mem.load(off_tail(ring));
        let used = self.tx_head.wrapping_sub(tail);
        if used > self.ring_bytes || used % RECORD_ALIGN != 0 {
            return Err(self.corrupt("the reader's tail is not behind our head"));
        }
        let free = self.ring_bytes - used;
        let pos = self.tx_head & (self.ring_bytes - 1);
        let to_end = self.ring_bytes - pos;
        let mut head = self.tx_head;
        let at = if to_end < need {
            if free < to_end + need {
                return Ok(None);
            }
            self.mem.store(self.data(ring, pos), PAD);
            head = head.wrapping_add(to_end);
            0
        } else {
            if free < need {
                return Ok(None);
            }
            pos
        };
        let off = self.data(ring, at);
        self.mem.write(off + 4, msg);
        self.mem.store(off, msg.len() as u32);
        head = head.wrapping_add(need);
        self.tx_head = head;
        self.mem.store(off_head(ring), head);
        self.mem.fence();
        // One doorbell per sleep: the writer that rings takes the flag down.
        Ok(Some(if self.mem.load(off_wait(ring)) != 0 {
            self.mem.store(off_wait(ring), 0);
            Notify::Doorbell
        } else {
            Notify::NotNeeded
        }))
    }

    /// Takes the next message from the peer's ring into `buf`: `Ok(Some(len))`, or `Ok(None)`
    /// when none waits. A `buf` shorter than the message is an error that keeps the message
    /// (`TooLong` with the message's length).
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ChannelError> {
        self.check()?;
        let ring = 1 - self.me;
        loop {
            let head = self.mem.load(off_head(ring));
            let avail = head.wrapping_sub(self.rx_tail);
            if avail == 0 {
                return Ok(None);
            }
            if avail > self.ring_bytes || avail % RECORD_ALIGN != 0 {
                return Err(self.corrupt("the writer's head is not ahead of our tail"));
            }
            let pos = self.rx_tail & (self.ring_bytes - 1);
            if pos % RECORD_ALIGN != 0 {
                return Err(self.corrupt("the writer's counters are not record-aligned"));
            }
            let len = self.mem.load(self.data(ring, pos));
            if len == PAD {
                let skip = self.ring_bytes - pos;
                if skip > avail {
                    return Err(self.corrupt("a pad record past the writer's head"));
                }
                self.rx_tail = self.rx_tail.wrapping_add(skip);
                self.mem.store(off_tail(ring), self.rx_tail);
                continue;
            }
            let len = len as usize;
            if len > self.max_message() {
                return Err(self.corrupt("a record longer than a message may be"));
            }
            let need = record_len(len);
            if need > avail || pos + need > self.ring_bytes {
                return Err(self.corrupt("a record past the writer's head or the ring's end"));
            }
            if buf.len() < len {
                return Err(ChannelError::TooLong {
                    len,
                    max: buf.len(),
                });
            }
            self.mem.read(self.data(ring, pos) + 4, &mut buf[..len]);
            self.rx_tail = self.rx_tail.wrapping_add(need);
            self.mem.store(off_tail(ring), self.rx_tail);
            return Ok(Some(len));
        }
    }

    /// Says this end is about to sleep until the peer's doorbell: true if it may (nothing
    /// waits), false if a message came meanwhile (read it instead). Call
    /// [`Channel::end_wait`] when awake.
    pub fn prepare_wait(&mut self) -> bool {
        let ring = 1 - self.me;
        self.mem.store(off_wait(ring), 1);
        self.mem.fence();
        self.mem.load(off_head(ring)) == self.rx_tail
    }

    /// Awake again: the peer need not ring any more.
    pub fn end_wait(&mut self) {
        self.mem.store(off_wait(1 - self.me), 0);
    }

    fn corrupt(&mut self, what: &'static str) -> ChannelError {
        self.broken = Some(what);
        ChannelError::Corrupt(what)
    }
}

/// Bytes a record of a `len`-byte payload takes (`len` at most a quarter ring, so no overflow).
fn record_len(len: usize) -> u32 {
    (4 + len as u32).next_multiple_of(RECORD_ALIGN)
}

pub mod exchange;

#[cfg(test)]
mod tests;
