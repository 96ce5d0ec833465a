//! The `msgchan-*` tests (command-line word `msgchan`, scenario `ipc-channel`): the bare-metal
//! end of the Quercus message channel (crates/msgchan) on the region `chan0`, whose ivshmem
//! device the scenario puts at 00:1f.0 with BAR 2 at 0xD000_0000. The other end is Linux running
//! `qmsg exchange`: each side sends [`COUNT`] messages (`msgchan::exchange::message`) and
//! receives as many, every one checked. This end polls (an RT guest's way), sends in bursts of
//! [`BURST`] every [`PERIOD_MS`] ms, and rings the Linux side's doorbell whenever the channel
//! says its reader sleeps.

use msgchan::{exchange, Channel, ChannelError, Notify, Shared};

use super::ivshmem::{Ivshmem, REG_IV_POSITION};
use super::pci::Mmio;
use super::Outcome::Pass;
use super::{tsc_bound_ms, TestResult};
use crate::pci::Bdf;
use crate::{cpu, msg, out, Env};

const CHAN0: Bdf = Bdf::new(0, 31, 0);
const CHAN0_BAR2: u64 = 0xD000_0000;
/// Messages each way (the figure).
const COUNT: u32 = 10_000;
/// How long the whole exchange may take (Linux boots meanwhile).
const EXCHANGE_MS: u64 = 300_000;
/// Like a control loop, this end sends bursts of [`BURST`] messages with [`PERIOD_MS`] between, so
/// that the Linux end runs dry, sleeps and needs the doorbell.
const BURST: u32 = 100;
const PERIOD_MS: u64 = 20;

/// The region through the guest's uncached window: 32-bit accesses only (bytes inside their
/// word: every word of a record belongs to that record alone).
pub(super) struct Region<'a> {
    mmio: &'a Mmio,
    base: u64,
    size: usize,
}

impl Shared for Region<'_> {
    fn size(&self) -> usize {
        self.size
    }
    fn load(&self, off: usize) -> u32 {
        let v = self.mmio.read32(self.base + off as u64);
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::Acquire);
        v
    }
    fn store(&self, off: usize, value: u32) {
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::Release);
        self.mmio.write32(self.base + off as u64, value);
    }
    fn read(&self, off: usize, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            let at = off + i;
            let word = self.mmio.read32(self.base + (at & !3) as u64);
            *b = (word >> (8 * (at % 4))) as u8;
        }
    }
    fn write(&self, off: usize, data: &[u8]) {
        let mut i = 0;
        while i < data.len() {
            let at = off + i;
            let word_at = self.base + (at & !3) as u64;
            let mut word = self.mmio.read32(word_at).to_le_bytes();
            let first = at % 4;
            let n = (4 - first).min(data.len() - i);
            word[first..first + n].copy_from_slice(&data[i..i + n]);
            self.mmio.write32(word_at, u32::from_le_bytes(word));
            i += n;
        }
    }
    fn fence(&self) {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }
}

/// The tests of this mode.
pub const TESTS: &[(&str, super::TestFn)] = &[("msgchan-exchange", exchange_test)];

/// The `chan0` device: its registers and region, mapped.
pub(super) struct Chan0(pub(super) Ivshmem);

impl Chan0 {
    /// Finds the device where the scenario puts it and maps both BARs.
    pub(super) fn find() -> Result<Self, crate::msg::Msg> {
        Ivshmem::find(CHAN0, CHAN0_BAR2).map(Chan0)
    }

    /// This VM's peer id (IV position).
    pub(super) fn me(&self) -> usize {
        self.0.reg(REG_IV_POSITION) as usize
    }

    /// Rings `peer`'s vector 0.
    pub(super) fn ring(&self, peer: usize) {
        self.0.ring(peer as u32, 0);
    }

    pub(super) fn region(&self) -> Region<'_> {
        Region {
            mmio: &self.0.mmio_shm,
            base: self.0.shm,
            size: 0x1_0000,
        }
    }

    /// Opens the channel as this VM's peer and waits (until `deadline`, TSC) for the other to
    /// attach: what is sent before that would be dropped when it does.
    pub(super) fn open(&self, deadline: u64) -> Result<Channel<Region<'_>>, crate::msg::Msg> {
        let me = self.me();
        let ch = loop {
            match Channel::open(self.region(), me) {
                Ok(ch) => break ch,
                Err(ChannelError::NotFormatted) if cpu::rdtsc() < deadline => {
                    core::hint::spin_loop();
                }
                Err(e) => fail!("peer {me}: opening the channel: {e}"),
            }
        };
        while !ch.peer_attached() {
            if cpu::rdtsc() > deadline {
                fail!("peer {} never attached", 1 - me);
            }
            core::hint::spin_loop();
        }
        Ok(ch)
    }
}

fn exchange_test(env: &Env) -> TestResult {
    let chan = Chan0::find()?;
    let t0 = cpu::rdtsc();
    let bound = tsc_bound_ms(env, EXCHANGE_MS);
    let mut ch = chan.open(t0 + bound)?;
    let me = ch.me();
    let peer = 1 - me;
    let (mut sent, mut got, mut rung, mut full) = (0u32, 0u32, 0u64, 0u64);
    let mut out = [0u8; exchange::MAX_TEST_MESSAGE];
    let mut buf = [0u8; 4096];
    let start = cpu::rdtsc();
    let period = tsc_bound_ms(env, PERIOD_MS);
    let mut next_burst = start;
    while sent < COUNT || got < COUNT {
        let now = cpu::rdtsc();
        if now - t0 > bound {
            fail!("timed out: sent {sent}, received {got} of {COUNT}");
        }
        if sent < COUNT && now >= next_burst {
            let len = exchange::message(me, sent, &mut out);
            match ch.send(&out[..len]) {
                Ok(Some(n)) => {
                    if n == Notify::Doorbell {
                        chan.ring(peer);
                        rung += 1;
                    }
                    sent += 1;
                    if sent.is_multiple_of(BURST) {
                        next_burst = now + period;
                    }
                }
                Ok(None) => full += 1,
                Err(e) => fail!("sending message {sent}: {e}"),
            }
        }
        if got < COUNT {
            match ch.recv(&mut buf) {
                Ok(Some(len)) => {
                    if let Err(m) = exchange::check(peer, got, &buf[..len]) {
                        fail!("message {got} from peer {peer}: {m}");
                    }
                    got += 1;
                }
                Ok(None) => {}
                Err(e) => fail!("receiving message {got}: {e}"),
            }
        }
    }
    out!(
        "msgchan: peer={me} sent={sent} received={got} doorbells={rung} ring-full={full} ticks={}",
        cpu::rdtsc() - start
    );
    Ok(Pass)
}
