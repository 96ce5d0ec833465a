//! The `ipc-bench` mode (`role=ping|pong`, scenario `bench-ipc`; `cargo xtask bench ipc`): the
//! cost of inter-VM communication between two bare-metal VMs, in guest TSC ticks and in this
//! vCPU's VM exits (Quercus's statistics leaf), through the message channel on `chan0` and
//! through the vUART link between the two COM2s. `ping` measures; `pong` answers. Rows:
//!
//! - `chan-rtt-poll`: a 64-byte message and its echo, both sides polling ([`RTT_ROUNDS`]).
//! - `chan-rtt-doorbell`: the same with `pong` halted until the doorbell's MSI-X interrupt
//!   (it says so through the channel's wait flag, `ping` rings it).
//! - `chan-stream`: [`STREAM_MESSAGES`] messages of [`STREAM_BYTES`] bytes one way, then an ack.
//! - `uart-rtt`: one byte over the vUART link and its echo ([`UART_ROUNDS`]).
//! - `uart-stream`: [`UART_STREAM`] bytes one way under THRE flow control, then an ack byte.
//!
//! Each row prints `BENCH ipc-<row> median=T min=T max=T ops=N exits=E` (round trips: per-round
//! ticks; streams: `bytes=B ticks=T`), E being `ping`'s VM exits over the row's N operations.

use msgchan::{Channel, Notify};

use super::msgchan::{Chan0, Region};
use super::pci::{hits, lapic_on, reset_hits};
use super::vuart_link::{inb, open_port, outb};
use super::Outcome::Pass;
use super::{tsc_bound_ms, TestResult};
use crate::msg::{Ascii, Msg};
use crate::{cpu, msg, out, Env};

const RTT_ROUNDS: usize = 1000;
const STREAM_MESSAGES: u32 = 10_000;
const STREAM_BYTES: usize = 1024;
const UART_ROUNDS: usize = 200;
const UART_STREAM: usize = 16 * 1024;
/// The longest any phase may wait for the other VM.
const PEER_MS: u64 = 120_000;

const SLOT_MSIX: usize = 0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Ping,
    Pong,
}

fn role(env: &Env) -> Result<Role, Msg> {
    match env.boot.word_value(b"role") {
        Some(b"ping") => Ok(Role::Ping),
        Some(b"pong") => Ok(Role::Pong),
        Some(other) => fail!("role={} is not ping or pong", Ascii(other)),
        None => fail!("no role=ping|pong on the command line"),
    }
}

/// This vCPU's VM exits so far (Quercus's statistics leaf; the CPUID itself is one).
fn exits() -> u64 {
    let r = cpu::cpuid(0x4000_0001, 0);
    u64::from(r.eax) | u64::from(r.ebx) << 32
}

/// The tests of this mode.
pub const TESTS: &[(&str, super::TestFn)] = &[("ipc-bench", run)];

fn run(env: &Env) -> TestResult {
    let role = role(env)?;
    let chan = Chan0::find()?;
    let deadline = cpu::rdtsc() + tsc_bound_ms(env, PEER_MS);
    let mut ch = chan.open(deadline)?;
    let peer = 1 - ch.me();
    let bound = tsc_bound_ms(env, PEER_MS);
    match role {
        Role::Ping => {
            rtt(&mut ch, &chan, peer, bound, "chan-rtt-poll")?;
            rtt(&mut ch, &chan, peer, bound, "chan-rtt-doorbell")?;
            stream(&mut ch, bound)?;
            uart_rtt(bound)?;
            uart_stream(bound)?;
            out!("BENCH ipc-done");
        }
        Role::Pong => {
            echo(&mut ch, &chan, peer, bound, false)?;
            echo(&mut ch, &chan, peer, bound, true)?;
            sink(&mut ch, bound)?;
            uart_echo(bound)?;
            uart_sink(bound)?;
        }
    }
    Ok(Pass)
}

/// Sends `msg`, spinning while the ring is full; rings `peer` when asked.
fn send(
    ch: &mut Channel<Region<'_>>,
    chan: &Chan0,
    peer: usize,
    msg: &[u8],
    bound: u64,
) -> Result<(), Msg> {
    let t0 = cpu::rdtsc();
    loop {
        match ch.send(msg) {
            Ok(Some(Notify::Doorbell)) => {
                chan.ring(peer);
                return Ok(());
            }
            Ok(Some(Notify::NotNeeded)) => return Ok(()),
            Ok(None) if cpu::rdtsc() - t0 < bound => core::hint::spin_loop(),
            Ok(None) => fail!("the peer stopped reading"),
            Err(e) => fail!("send: {e}"),
        }
    }
}

/// The next message into `buf`, spinning for it; its length.
fn recv(ch: &mut Channel<Region<'_>>, buf: &mut [u8], bound: u64) -> Result<usize, Msg> {
    let t0 = cpu::rdtsc();
    loop {
        match ch.recv(buf) {
            Ok(Some(n)) => return Ok(n),
            Ok(None) if cpu::rdtsc() - t0 < bound => core::hint::spin_loop(),
            Ok(None) => fail!("nothing from the peer"),
            Err(e) => fail!("recv: {e}"),
        }
    }
}

/// Prints a round-trip row from `ticks` (sorted here) and the exits they took.
fn rtt_row(name: &str, ticks: &mut [u64], exits: u64) {
    ticks.sort_unstable();
    out!(
        "BENCH ipc-{name} median={} min={} max={} ops={} exits={exits}",
        ticks[ticks.len() / 2],
        ticks[0],
        ticks[ticks.len() - 1],
        ticks.len()
    );
}

fn rtt(
    ch: &mut Channel<Region<'_>>,
    chan: &Chan0,
    peer: usize,
    bound: u64,
    name: &str,
) -> TestResult {
    let msg = [0x5Au8; 64];
    let mut buf = [0u8; 64];
    let mut ticks = [0u64; RTT_ROUNDS];
    let e0 = exits();
    for t in ticks.iter_mut() {
        let start = cpu::rdtsc();
        send(ch, chan, peer, &msg, bound)?;
        let n = recv(ch, &mut buf, bound)?;
        *t = cpu::rdtsc() - start;
        ensure!(n == 64 && buf == msg, "the echo differs");
    }
    rtt_row(name, &mut ticks, exits() - e0 - 1);
    Ok(Pass)
}

/// Echoes [`RTT_ROUNDS`] messages; with `doorbell`, halts until the MSI-X interrupt whenever
/// nothing waits.
fn echo(
    ch: &mut Channel<Region<'_>>,
    chan: &Chan0,
    peer: usize,
    bound: u64,
    doorbell: bool,
) -> TestResult {
    if doorbell {
        reset_hits();
        chan.0.msix_on(lapic_on()?)?;
    }
    let mut buf = [0u8; 64];
    for _ in 0..RTT_ROUNDS {
        let t0 = cpu::rdtsc();
        let n = loop {
            match ch.recv(&mut buf) {
                Ok(Some(n)) => break n,
                Ok(None) => {}
                Err(e) => fail!("recv: {e}"),
            }
            ensure!(cpu::rdtsc() - t0 < bound, "nothing from the peer");
            if doorbell && ch.prepare_wait() {
                // Halt until the doorbell's interrupt (or any other one): `sti; hlt` is atomic.
                let before = hits()[SLOT_MSIX];
                while hits()[SLOT_MSIX] == before && cpu::rdtsc() - t0 < bound {
                    cpu::sti_hlt();
                    cpu::cli();
                }
            }
            ch.end_wait();
        };
        send(ch, chan, peer, &buf[..n], bound)?;
    }
    Ok(Pass)
}

fn stream(ch: &mut Channel<Region<'_>>, bound: u64) -> TestResult {
    let msg = [0xA5u8; STREAM_BYTES];
    let e0 = exits();
    let start = cpu::rdtsc();
    for i in 0..STREAM_MESSAGES {
        let t0 = cpu::rdtsc();
        loop {
            match ch.send(&msg) {
                Ok(Some(_)) => break,
                Ok(None) if cpu::rdtsc() - t0 < bound => core::hint::spin_loop(),
                Ok(None) => fail!("the peer stopped reading at message {i}"),
                Err(e) => fail!("send: {e}"),
            }
        }
    }
    let mut ack = [0u8; 4];
    let n = recv(ch, &mut ack, bound)?;
    ensure!(
        n == 4 && u32::from_le_bytes(ack) == STREAM_MESSAGES,
        "ack {ack:?}"
    );
    let ticks = cpu::rdtsc() - start;
    out!(
        "BENCH ipc-chan-stream bytes={} ticks={ticks} ops={STREAM_MESSAGES} exits={}",
        STREAM_MESSAGES as usize * STREAM_BYTES,
        exits() - e0 - 1
    );
    Ok(Pass)
}

fn sink(ch: &mut Channel<Region<'_>>, bound: u64) -> TestResult {
    let mut buf = [0u8; STREAM_BYTES];
    for i in 0..STREAM_MESSAGES {
        let n = recv(ch, &mut buf, bound)?;
        ensure!(n == STREAM_BYTES, "message {i}: {n} bytes");
    }
    let t0 = cpu::rdtsc();
    loop {
        match ch.send(&STREAM_MESSAGES.to_le_bytes()) {
            Ok(Some(_)) => return Ok(Pass),
            Ok(None) if cpu::rdtsc() - t0 < bound => core::hint::spin_loop(),
            Ok(None) => fail!("the ack does not fit"),
            Err(e) => fail!("send: {e}"),
        }
    }
}

fn uart_get(bound: u64) -> Result<u8, Msg> {
    let t0 = cpu::rdtsc();
    while inb(5) & 1 == 0 {
        ensure!(cpu::rdtsc() - t0 < bound, "no byte from the peer");
        core::hint::spin_loop();
    }
    Ok(inb(0))
}

fn uart_put(b: u8, bound: u64) -> TestResult {
    let t0 = cpu::rdtsc();
    while inb(5) & 0x20 == 0 {
        ensure!(cpu::rdtsc() - t0 < bound, "THRE never came back");
        core::hint::spin_loop();
    }
    outb(0, b);
    Ok(Pass)
}

fn uart_rtt(bound: u64) -> TestResult {
    open_port(bound)?;
    let mut ticks = [0u64; UART_ROUNDS];
    let e0 = exits();
    for (i, t) in ticks.iter_mut().enumerate() {
        let start = cpu::rdtsc();
        uart_put(i as u8, bound)?;
        let b = uart_get(bound)?;
        *t = cpu::rdtsc() - start;
        ensure!(b == i as u8, "echo {b:#04x} of {:#04x}", i as u8);
    }
    rtt_row("uart-rtt", &mut ticks, exits() - e0 - 1);
    Ok(Pass)
}

fn uart_echo(bound: u64) -> TestResult {
    open_port(bound)?;
    for _ in 0..UART_ROUNDS {
        let b = uart_get(bound)?;
        uart_put(b, bound)?;
    }
    Ok(Pass)
}

fn uart_stream(bound: u64) -> TestResult {
    let e0 = exits();
    let start = cpu::rdtsc();
    let mut sent = 0;
    let t0 = cpu::rdtsc();
    while sent < UART_STREAM {
        if inb(5) & 0x20 == 0 {
            ensure!(cpu::rdtsc() - t0 < bound, "stuck at byte {sent}");
            core::hint::spin_loop();
            continue;
        }
        for _ in 0..16.min(UART_STREAM - sent) {
            outb(0, sent as u8);
            sent += 1;
        }
    }
    let ack = uart_get(bound)?;
    ensure!(ack == 0xAC, "ack {ack:#04x}");
    let ticks = cpu::rdtsc() - start;
    out!(
        "BENCH ipc-uart-stream bytes={UART_STREAM} ticks={ticks} ops={UART_STREAM} exits={}",
        exits() - e0 - 1
    );
    Ok(Pass)
}

fn uart_sink(bound: u64) -> TestResult {
    for i in 0..UART_STREAM {
        let b = uart_get(bound)?;
        ensure!(b == i as u8, "byte {i} is {b:#04x}");
    }
    uart_put(0xAC, bound)?;
    Ok(Pass)
}
