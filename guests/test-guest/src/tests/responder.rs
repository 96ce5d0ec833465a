//! The `net-responder` mode (command line `net-responder ip=A.B.C.D`): not a test but a peer for
//! other VMs on a virtual switch. The guest opens its virtio-net devices (at most two, with the
//! `virtio-drivers` crate, as the `virtio-net` tests do) and, forever, answers ARP requests for
//! its address and ICMP echo requests to it on each, ignoring every other frame; what to answer
//! is decided by the host-tested `ping-responder` crate.
//!
//! Lines: `net-responder: <bdf> mac <mac> ip <ip>: answering ARP and ping` per device, then
//! `net-responder: arp=N icmp=N ignored=N` (answers sent, frames ignored) after every
//! [`REPORT_EVERY`]th echo reply, and once answers stop for [`IDLE_REPORT_MS`] (so a short
//! `ping -c 3` shows up too). A fatal error (no device, a device that misbehaves) prints
//! `net-responder: fatal: <why>` and powers the VM off.
//!
//! Between polls the vCPU halts until a TSC-deadline timer interrupt, [`POLL_BUSY_MS`] later while
//! frames arrive and [`POLL_IDLE_MS`] once none came for [`BUSY_FOR_MS`], so an idle responder
//! leaves its pCPU (and the emulator's host CPU) nearly idle; without a TSC-deadline timer it
//! polls in a busy loop.

use core::convert::Infallible;
use core::sync::atomic::Ordering;

use ping_responder::{respond, Answer, Dotted, Identity};
use virtio_drivers::transport::DeviceType;

use super::tsc_bound_ms;
use super::virtio::{Mac, Nic, RX_BUF};
use crate::msg::{Ascii, Msg};
use crate::{cpu, lapic, msg, out, trap, virtio, Env};

/// The most devices served (the buffer pools of [`Nic`] have two halves).
const MAX_NICS: usize = 2;
/// A counter line after this many echo replies.
const REPORT_EVERY: u64 = 10;
/// A counter line once no answer was sent for this long after the last one reported.
const IDLE_REPORT_MS: u64 = 2000;
/// Halt this long between polls of the devices while frames arrive...
const POLL_BUSY_MS: u64 = 1;
/// ... and this long once none came for [`BUSY_FOR_MS`] (the most an idle responder adds to a
/// round trip; 1 ms polling costs QEMU about a fifth of a host CPU, 8 ms a few percent).
const POLL_IDLE_MS: u64 = 8;
const BUSY_FOR_MS: u64 = 200;
/// At most this many frames taken from one device per poll (the rest wait for the next).
const FRAMES_PER_POLL: usize = 32;

const MSR_TSC_DEADLINE: u32 = 0x6E0;
const LVT_TSC_DEADLINE: u32 = 2 << 17;

#[derive(Default)]
struct Counters {
    arp: u64,
    icmp: u64,
    ignored: u64,
}

impl Counters {
    fn report(&self) {
        out!(
            "net-responder: arp={} icmp={} ignored={}",
            self.arp,
            self.icmp,
            self.ignored
        );
    }
}

/// Serves until the VM is stopped; on a fatal error powers the VM off.
pub fn run(env: &Env) -> ! {
    let Err(why) = serve(env);
    out!("net-responder: fatal: {}", why.as_str());
    crate::power_off(false)
}

/// The address given as `ip=A.B.C.D`.
fn ip_arg(env: &Env) -> Result<[u8; 4], Msg> {
    let Some(text) = env.boot.word_value(b"ip") else {
        fail!("no ip=A.B.C.D on the command line");
    };
    ping_responder::parse_ipv4(text)
        .ok_or_else(|| msg!("ip={} is not an IPv4 address A.B.C.D", Ascii(text)))
}

/// Arms the LAPIC's TSC-deadline timer mode if the CPU has it (true), for [`pause`].
fn timer_init() -> bool {
    if cpu::cpuid(1, 0).ecx & (1 << 24) == 0 || !lapic::map() {
        return false;
    }
    cpu::cli();
    lapic::write(
        lapic::REG_SVR,
        lapic::SVR_ENABLE | trap::SPURIOUS_VECTOR as u32,
    );
    lapic::write(lapic::REG_TPR, 0);
    lapic::write(
        lapic::REG_LVT_TIMER,
        LVT_TSC_DEADLINE | trap::TIMER_VECTOR as u32,
    );
    true
}

/// Waits about `ticks` TSC ticks: halted until the timer's interrupt, or spinning once.
fn pause(timer: bool, ticks: u64) {
    if !timer {
        core::hint::spin_loop();
        return;
    }
    let hits = trap::TIMER_HITS.load(Ordering::SeqCst);
    // SAFETY: timer_init found the TSC-deadline MSR and put the LVT timer in that mode on
    // TIMER_VECTOR, whose handler only counts and EOIs.
    unsafe { cpu::wrmsr(MSR_TSC_DEADLINE, cpu::rdtsc().wrapping_add(ticks)) };
    while trap::TIMER_HITS.load(Ordering::SeqCst) == hits {
        // SAFETY: STI's one-instruction shadow makes STI;HLT atomic: the timer interrupt, if it is
        // already pending, wakes the HLT instead of being taken before it. Its handler runs on its
        // IST stack; IF is clear again after.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nostack, nomem)) };
    }
}

fn serve(env: &Env) -> Result<Infallible, Msg> {
    let ip = ip_arg(env)?;
    virtio::fresh_start();
    let (list, found) = virtio::devices_of(DeviceType::Network);
    ensure!(found > 0, "no virtio-net device on bus 0");
    let mut nics: [Option<Nic>; MAX_NICS] = [None, None];
    for (i, slot) in nics.iter_mut().enumerate().take(found) {
        let nic = Nic::open(list[i], i)?;
        out!(
            "net-responder: {} mac {} ip {}: answering ARP and ping",
            nic.bdf,
            Mac(nic.mac),
            Dotted(ip)
        );
        *slot = Some(nic);
    }
    if found > MAX_NICS {
        out!("net-responder: {found} virtio-net devices, serving the first {MAX_NICS}");
    }
    let timer = timer_init();
    let busy_ticks = tsc_bound_ms(env, POLL_BUSY_MS);
    let idle_poll_ticks = tsc_bound_ms(env, POLL_IDLE_MS);
    let busy_for = tsc_bound_ms(env, BUSY_FOR_MS);
    // When the last frame arrived.
    let mut last_frame: Option<u64> = None;
    let idle_ticks = tsc_bound_ms(env, IDLE_REPORT_MS);
    let mut counts = Counters::default();
    // When the last answer not yet in a counter line was sent.
    let mut unreported: Option<u64> = None;
    let mut rx = [0u8; RX_BUF];
    let mut tx = [0u8; RX_BUF];
    loop {
        for nic in nics.iter_mut().flatten() {
            let me = Identity { mac: nic.mac, ip };
            for _ in 0..FRAMES_PER_POLL {
                let Some(n) = nic.poll(&mut rx)? else {
                    break;
                };
                last_frame = Some(cpu::rdtsc());
                let frame = rx.get(..n).unwrap_or_default();
                let (answer, len) = match respond(&me, frame, &mut tx) {
                    Ok(reply) => reply,
                    Err(_) => {
                        counts.ignored += 1;
                        continue;
                    }
                };
                nic.send(env, tx.get(..len).unwrap_or_default())?;
                unreported = Some(cpu::rdtsc());
                match answer {
                    Answer::Arp => counts.arp += 1,
                    Answer::Echo => {
                        counts.icmp += 1;
                        if counts.icmp % REPORT_EVERY == 0 {
                            counts.report();
                            unreported = None;
                        }
                    }
                }
            }
        }
        if unreported.is_some_and(|t| cpu::rdtsc().wrapping_sub(t) > idle_ticks) {
            counts.report();
            unreported = None;
        }
        let busy = last_frame.is_some_and(|t| cpu::rdtsc().wrapping_sub(t) < busy_for);
        pause(timer, if busy { busy_ticks } else { idle_poll_ticks });
    }
}
