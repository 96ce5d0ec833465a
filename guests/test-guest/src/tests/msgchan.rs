//! The `msgchan-*` tests (command-line word `msgchan`, scenario `ipc-channel`): the bare-metal
//! end of the Quercus message channel (crates/msgchan) on the region `chan0`, whose ivshmem
//! device the scenario puts at 00:1f.0 with BAR 2 at 0xD000_0000. The other end is Linux running
//! `qmsg exchange`: each side sends [`COUNT`] messages (`msgchan::exchange::message`) and
//! receives as many, every one checked. This end polls (an RT guest's way), sends in bursts of
//! [`BURST`] every [`PERIOD_MS`] ms, and rings the Linux side's doorbell whenever the channel
//! says its reader sleeps.

use msgchan::{exchange, Channel, ChannelError, Notify, Shared};

use super::pci::{Device, Mmio};
use super::Outcome::Pass;
use super::{tsc_bound_ms, TestResult};
use crate::pci::Bdf;
use crate::{cpu, msg, out, Env};

const IVSHMEM_IDS: u32 = 0x1110_1AF4;
const CHAN0: Bdf = Bdf::new(0, 31, 0);
const CHAN0_BAR2: u64 = 0xD000_0000;
const REG_IV_POSITION: u64 = 0x8;
const REG_DOORBELL: u64 = 0xC;
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
struct Region<'a> {
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

fn exchange_test(env: &Env) -> TestResult {
    let dev = Device::at(CHAN0, IVSHMEM_IDS, "ivshmem device")?;
    let regs = dev.mem_bar(0)?;
    let (lo, hi) = (dev.bar(2), dev.bar(3));
    let shm = u64::from(hi) << 32 | u64::from(lo & !0xF);
    ensure!(shm == CHAN0_BAR2, "{CHAN0}: BAR 2 at {shm:#x}, expected {CHAN0_BAR2:#x}");
    let mmio_regs = Mmio::map(regs)?;
    let mmio_shm = Mmio::map(shm)?;
    let me = mmio_regs.read32(regs + REG_IV_POSITION) as usize;
    let region = Region {
        mmio: &mmio_shm,
        base: shm,
        size: 0x1_0000,
    };
    let t0 = cpu::rdtsc();
    let bound = tsc_bound_ms(env, EXCHANGE_MS);
    let mut ch = loop {
        match Channel::open(&region, me) {
            Ok(ch) => break ch,
            Err(ChannelError::NotFormatted) if cpu::rdtsc() - t0 < bound => {
                core::hint::spin_loop();
            }
            Err(e) => fail!("peer {me}: opening the channel: {e}"),
        }
    };
    // What is sent before the peer attaches would be dropped when it does.
    while !ch.peer_attached() {
        if cpu::rdtsc() - t0 > bound {
            fail!("peer {} never attached", 1 - me);
        }
        core::hint::spin_loop();
    }
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
                        mmio_regs.write32(regs + REG_DOORBELL, (peer as u32) << 16);
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
