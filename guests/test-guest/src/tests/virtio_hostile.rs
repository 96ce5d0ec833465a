//! The `virtio-hostile` tests (command-line word `virtio-hostile`): a
//! driver that breaks the split rings of the VM's virtio-blk device (the
//! first one; it holds the `testdisk` image) and virtio-net device (the
//! first one) on purpose, with the guest's own minimal driver
//! ([`crate::vpci`]), while other VMs go on using their own devices.
//!
//! Each case brings the device up as a driver does (choosing which
//! features to accept), breaks one thing, notifies, and checks the answer:
//! - a ring error: DEVICE_NEEDS_RESET (status bit 64) within 1 s, the
//!   configuration generation changed, the ISR's configuration bit set, no
//!   used entry for the broken chain, and a good request made available
//!   and notified afterwards is ignored (used index and status byte stay);
//! - a bad request: its status byte (`VIRTIO_BLK_S_IOERR` or `_UNSUPP`)
//!   and used length, nothing written where it must not be, no reset;
//! - a notification the device must ignore (before DRIVER_OK, after a
//!   reset, to a queue that does not exist): the used index does not move.
//!
//! Then every case resets the device (status 0, read back 0), brings it up
//! properly and proves it works: sector 0 of the disk read and compared
//! with the `testdisk` pattern, or a frame transmitted and returned used.
//! Every wait is bounded by the TSC: a device that hangs fails the case.
//!
//! Lines besides `TEST`: `virtio-hostile: <case>: <the device's answer>`
//! per case, and `virtio-hostile: answers: ...` (counts) at the end.

use core::sync::atomic::{AtomicU32, Ordering};

use super::Outcome::Pass;
use super::{tsc_bound_ms, TestResult};
use crate::msg::Msg;
use crate::pci::{self, Bdf, ConfigSpace, PortIo, VENDOR_ID};
use crate::vpci::{
    write_desc, Area, Dma, Ring, Transport, D_INDIRECT, D_NEXT, D_WRITE, F_INDIRECT_DESC,
    F_VERSION_1, ISR_CONFIG, S_ACKNOWLEDGE, S_DRIVER, S_DRIVER_OK, S_FEATURES_OK, S_NEEDS_RESET,
};
use crate::{cpu, msg, out, Env, Global};

type TestFn = super::TestFn;

/// The cases, in the order they run (the harness lists them so).
pub const TESTS: &[(&str, TestFn)] = &[
    ("virtio-hostile-baseline", baseline),
    ("virtio-hostile-desc-loop", desc_loop),
    ("virtio-hostile-desc-self-loop", desc_self_loop),
    ("virtio-hostile-next-out-of-range", next_out_of_range),
    ("virtio-hostile-head-out-of-range", head_out_of_range),
    (
        "virtio-hostile-readable-after-writable",
        readable_after_writable,
    ),
    ("virtio-hostile-index-jump", index_jump),
    ("virtio-hostile-index-backwards", index_backwards),
    ("virtio-hostile-addr-past-ram", addr_past_ram),
    ("virtio-hostile-addr-pci-hole", addr_pci_hole),
    ("virtio-hostile-addr-wrap", addr_wrap),
    ("virtio-hostile-addr-own-bar", addr_own_bar),
    ("virtio-hostile-addr-net-bar", addr_net_bar),
    ("virtio-hostile-addr-ioapic", addr_ioapic),
    ("virtio-hostile-addr-lapic", addr_lapic),
    ("virtio-hostile-header-in-bar", header_in_bar),
    ("virtio-hostile-desc-table-in-bar", desc_table_in_bar),
    ("virtio-hostile-avail-ring-in-ioapic", avail_ring_in_ioapic),
    ("virtio-hostile-used-ring-in-ioapic", used_ring_in_ioapic),
    ("virtio-hostile-zero-len-header", zero_len_header),
    ("virtio-hostile-zero-len-data", zero_len_data),
    ("virtio-hostile-zero-len-status", zero_len_status),
    ("virtio-hostile-huge-len", huge_len),
    ("virtio-hostile-huge-read", huge_read),
    ("virtio-hostile-huge-write", huge_write),
    ("virtio-hostile-data-not-sectors", data_not_sectors),
    ("virtio-hostile-sector-past-end", sector_past_end),
    ("virtio-hostile-sector-overflow", sector_overflow),
    ("virtio-hostile-unknown-type", unknown_type),
    ("virtio-hostile-queue-size-not-pow2", queue_size_not_pow2),
    ("virtio-hostile-queue-size-zero", queue_size_zero),
    ("virtio-hostile-queue-size-too-big", queue_size_too_big),
    (
        "virtio-hostile-indirect-not-negotiated",
        indirect_not_negotiated,
    ),
    ("virtio-hostile-features-after-ok", features_after_ok),
    (
        "virtio-hostile-features-renegotiated",
        features_renegotiated,
    ),
    ("virtio-hostile-features-unoffered", features_unoffered),
    (
        "virtio-hostile-features-no-version-1",
        features_no_version_1,
    ),
    (
        "virtio-hostile-indirect-longer-than-queue",
        indirect_longer_than_queue,
    ),
    ("virtio-hostile-indirect-loop", indirect_loop),
    ("virtio-hostile-indirect-nested", indirect_nested),
    ("virtio-hostile-indirect-with-next", indirect_with_next),
    ("virtio-hostile-indirect-bad-length", indirect_bad_length),
    ("virtio-hostile-indirect-in-ioapic", indirect_in_ioapic),
    (
        "virtio-hostile-notify-before-driver-ok",
        notify_before_driver_ok,
    ),
    ("virtio-hostile-notify-bad-queue", notify_bad_queue),
    ("virtio-hostile-reset-mid-request", reset_mid_request),
    ("virtio-hostile-msix-bad-messages", msix_bad_messages),
    ("virtio-hostile-needs-reset-storm", needs_reset_storm),
    ("virtio-hostile-net-tx-loop", net_tx_loop),
    ("virtio-hostile-net-tx-ioapic", net_tx_ioapic),
    ("virtio-hostile-net-tx-huge", net_tx_huge),
    ("virtio-hostile-net-tx-zero-len", net_tx_zero_len),
    ("virtio-hostile-net-tx-writable-only", net_tx_writable_only),
    ("virtio-hostile-summary", summary),
];

/// Run first with `await-soak` on the command line: the attack starts only
/// once another VM's `virtio-soak` traffic shows on the switch.
pub const AWAIT_TEST: (&str, TestFn) = ("virtio-hostile-await-soak", await_soak);

/// Modern device IDs.
const ID_NET: u16 = 0x1041;
const ID_BLK: u16 = 0x1042;

/// The queue size the cases use (the devices offer 256).
const QSIZE: u16 = 16;

/// virtio-blk request types and status values (5.2.6).
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
const SECTOR: u64 = 512;
/// Sectors of the `testdisk` image (xtask `TESTDISK_SECTORS`).
const DISK_SECTORS: u64 = 2048;

/// The virtio-net header (VERSION_1: with `num_buffers`).
const NET_HDR: u64 = 12;

/// Addresses that are not the guest's RAM.
const IOAPIC: u64 = 0xFEC0_0000;
const LAPIC: u64 = 0xFEE0_0000;
/// Inside the VM's PCI window, outside every BAR (`mmio-unbacked`).
const PCI_HOLE: u64 = 0xD000_0000;

/// A huge buffer that is all RAM: 32 MiB from 16 MiB (the guest's image,
/// stack and statics end far below; the VM has 64 MiB).
const HUGE_BASE: u64 = 16 << 20;
const HUGE_LEN: u64 = 32 << 20;

/// Sentinels: a byte the device must not have written.
const UNTOUCHED: u8 = 0xA5;
const NO_STATUS: u8 = 0xEE;

/// How long a request may take; how long an ignored notification is
/// watched.
const REQUEST_MS: u64 = 1000;
const QUIET_MS: u64 = 50;

// The blk area: ring, indirect table, header, status bytes, data.
static BLK_AREA: Global<Area> = Global::new(Area::new());
const RING: u64 = 0x0000;
const INDIRECT: u64 = 0x3000;
const HDR: u64 = 0x4000;
const STATUS: u64 = 0x4800;
const DATA: u64 = 0x5000;
const DATA_LEN: u64 = 0x2000;

// The net area: TX ring, RX ring, TX frame, RX buffer.
static NET_AREA: Global<Area> = Global::new(Area::new());
const NET_RX_RING: u64 = 0x0000;
const NET_TX_RING: u64 = 0x3000;
const NET_TX_BUF: u64 = 0x6000;
const NET_RX_BUF: u64 = 0x7000;
const NET_RX_LEN: u32 = 2048;
/// Receive buffers [`await_soak`] posts (from [`NET_RX_BUF`]).
const NET_RX_BUFS: u16 = 4;
const NET_RX: u16 = 0;
const NET_TX: u16 = 1;

/// How the devices answered, over all cases.
static NEEDS_RESET_ANSWERS: AtomicU32 = AtomicU32::new(0);
static ERROR_STATUS_ANSWERS: AtomicU32 = AtomicU32::new(0);
static IGNORED_ANSWERS: AtomicU32 = AtomicU32::new(0);
static OTHER_ANSWERS: AtomicU32 = AtomicU32::new(0);

type R<T = ()> = Result<T, Msg>;

// ---------------------------------------------------------------- finding

/// The first function on bus 0 with vendor 0x1AF4 and device `id`.
fn find(id: u16) -> R<Bdf> {
    for f in pci::scan_bus(&PortIo, 0).as_slice() {
        let ids = PortIo.read32(*f, VENDOR_ID);
        if ids as u16 == crate::virtio::VENDOR && (ids >> 16) as u16 == id {
            return Ok(*f);
        }
    }
    fail!("no virtio function 1af4:{id:04x} on bus 0")
}

// ---------------------------------------------------------------- a case

/// What one case works with.
struct Ctx<'a> {
    env: &'a Env,
    kind: Kind,
    t: Transport,
    dma: Dma,
    /// TSC ticks of [`REQUEST_MS`] and [`QUIET_MS`].
    request: u64,
    quiet: u64,
}

/// The device's answer, for the case's info line and the summary.
enum Answer {
    NeedsReset(Msg),
    ErrorStatus(Msg),
    Ignored(Msg),
    Other(Msg),
}

impl Answer {
    fn text(&self) -> (&'static str, &Msg) {
        match self {
            Answer::NeedsReset(m) => ("DEVICE_NEEDS_RESET", m),
            Answer::ErrorStatus(m) => ("error status", m),
            Answer::Ignored(m) => ("ignored", m),
            Answer::Other(m) => ("served", m),
        }
    }

    fn count(&self) {
        let c = match self {
            Answer::NeedsReset(_) => &NEEDS_RESET_ANSWERS,
            Answer::ErrorStatus(_) => &ERROR_STATUS_ANSWERS,
            Answer::Ignored(_) => &IGNORED_ANSWERS,
            Answer::Other(_) => &OTHER_ANSWERS,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Blk,
    Net,
}

/// Runs `body` against the first device of `kind`, prints its answer, then
/// resets the device and proves it works again.
fn case(env: &Env, name: &str, kind: Kind, body: impl FnOnce(&Ctx) -> R<Answer>) -> TestResult {
    let (id, area) = match kind {
        Kind::Blk => (ID_BLK, &BLK_AREA),
        Kind::Net => (ID_NET, &NET_AREA),
    };
    let f = find(id)?;
    let c = Ctx {
        env,
        kind,
        t: Transport::open(f)?,
        dma: Dma::of(area),
        request: tsc_bound_ms(env, REQUEST_MS),
        quiet: tsc_bound_ms(env, QUIET_MS),
    };
    let answer = body(&c);
    if let Ok(a) = &answer {
        let (what, detail) = a.text();
        out!("virtio-hostile: {name}: {what}: {}", detail.as_str());
        a.count();
    }
    // Whatever happened, the device must come back.
    let recovered = match kind {
        Kind::Blk => recover_blk(&c),
        Kind::Net => recover_net(&c),
    };
    answer?;
    recovered?;
    Ok(Pass)
}

impl Ctx<'_> {
    /// Resets the device and negotiates `accept` (FEATURES_OK must stick).
    fn negotiate(&self, accept: u64) -> R {
        let f = self.t.bdf;
        ensure!(
            self.t.negotiate(self.request, accept)?,
            "{f}: FEATURES_OK did not stick for features {:#x}",
            self.t.device_features() & accept
        );
        Ok(())
    }

    /// Brings the blk device up with features `accept` and a fresh queue 0
    /// of [`QSIZE`]; DRIVER_OK set.
    fn up_blk(&self, accept: u64) -> R<Ring> {
        self.negotiate(accept)?;
        let ring = Ring::new(self.dma, RING, QSIZE);
        ensure!(
            self.t.setup_queue(0, &ring),
            "{}: queue 0 of size {QSIZE} not enabled",
            self.t.bdf
        );
        self.t.driver_ok();
        Ok(ring)
    }

    /// Writes a request header and the status sentinel, fills the data
    /// area with [`UNTOUCHED`].
    fn request(&self, kind: u32, sector: u64) {
        self.dma.w32(HDR, kind);
        self.dma.w32(HDR + 4, 0);
        self.dma.w64(HDR + 8, sector);
        self.dma.fill(STATUS, 16, NO_STATUS);
        self.dma.fill(DATA, DATA_LEN, UNTOUCHED);
    }

    fn a(&self, off: u64) -> u64 {
        self.dma.addr(off)
    }

    /// Writes `descs` (address, length, flags) at table indices
    /// `first..`, each linked to the next with NEXT.
    fn chain(&self, ring: &Ring, first: u16, descs: &[(u64, u32, u16)]) {
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let i = first + i as u16;
            let last = usize::from(i - first) + 1 == descs.len();
            let flags = if last { flags } else { flags | D_NEXT };
            ring.set_desc(i, addr, len, flags, if last { 0 } else { i + 1 });
        }
    }

    /// A good read of one sector at `first..first + 3` of the table.
    fn good_read(&self, ring: &Ring, first: u16, sector: u64) {
        self.request(T_IN, sector);
        self.chain(
            ring,
            first,
            &[
                (self.a(HDR), 16, 0),
                (self.a(DATA), SECTOR as u32, D_WRITE),
                (self.a(STATUS), 1, D_WRITE),
            ],
        );
    }

    /// Waits until the used index reaches `want`.
    fn wait_used(&self, ring: &Ring, want: u16, bound: u64) -> bool {
        let t0 = cpu::rdtsc();
        loop {
            if ring.used_idx() == want {
                return true;
            }
            if cpu::rdtsc().wrapping_sub(t0) > bound {
                return false;
            }
            core::hint::spin_loop();
        }
    }

    /// Watches the device for [`QUIET_MS`]: the used index stays `want`.
    fn stays(&self, ring: &Ring, want: u16) -> R {
        let t0 = cpu::rdtsc();
        while cpu::rdtsc().wrapping_sub(t0) < self.quiet {
            let u = ring.used_idx();
            ensure!(
                u == want,
                "{}: the used index moved to {u} (expected it to stay {want})",
                self.t.bdf
            );
            core::hint::spin_loop();
        }
        Ok(())
    }

    /// Notifies `q` after chains were made available and expects a ring
    /// error: DEVICE_NEEDS_RESET within [`REQUEST_MS`], the configuration
    /// generation changed, the ISR's configuration bit, the used index at
    /// `used` (None: not checked, the used ring is not ours to read), and
    /// afterwards a good request ignored.
    fn expect_reset(&self, ring: &Ring, q: u16, used: Option<u16>) -> R<Answer> {
        let gen0 = self.t.generation();
        let _ = self.t.take_isr();
        self.t.notify(q);
        self.after_reset(ring, q, used, gen0)
    }

    /// Waits for DEVICE_NEEDS_RESET.
    fn wait_needs_reset(&self, ring: &Ring) -> R {
        let t0 = cpu::rdtsc();
        while self.t.status() & S_NEEDS_RESET == 0 {
            if cpu::rdtsc().wrapping_sub(t0) > self.request {
                fail!(
                    "{}: no DEVICE_NEEDS_RESET within {REQUEST_MS} ms (status {:#04x}, used index {})",
                    self.t.bdf,
                    self.t.status(),
                    ring.used_idx()
                );
            }
            core::hint::spin_loop();
        }
        Ok(())
    }

    /// The checks of [`Ctx::expect_reset`] once the hostile action is done.
    fn after_reset(&self, ring: &Ring, q: u16, used: Option<u16>, gen0: u8) -> R<Answer> {
        let f = self.t.bdf;
        self.wait_needs_reset(ring)?;
        let status = self.t.status();
        let gen1 = self.t.generation();
        let isr = self.t.take_isr();
        ensure!(
            gen1 != gen0,
            "{f}: DEVICE_NEEDS_RESET but the configuration generation stayed {gen0}"
        );
        ensure!(
            isr & ISR_CONFIG != 0,
            "{f}: DEVICE_NEEDS_RESET without a configuration interrupt (ISR {isr:#04x})"
        );
        if let Some(u) = used {
            let now = ring.used_idx();
            ensure!(
                now == u,
                "{f}: DEVICE_NEEDS_RESET, but the used index is {now}, expected {u}"
            );
        }
        let blk = self.kind == Kind::Blk;
        if blk && used == Some(0) {
            // Nothing of the broken request was served.
            let (s, d) = (self.dma.r8(STATUS), self.dma.r8(DATA));
            ensure!(
                s == NO_STATUS && d == UNTOUCHED,
                "{f}: DEVICE_NEEDS_RESET, but the broken request was served (status byte {s:#04x}, data {d:#04x})"
            );
        }
        // Stopped until reset: a good request is not served.
        if blk && q == 0 {
            let before = ring.used_idx();
            self.good_read(ring, 8, 0);
            ring.push_avail(8);
            self.t.notify(0);
            self.stays(ring, before)?;
            let s = self.dma.r8(STATUS);
            ensure!(
                s == NO_STATUS && self.dma.r8(DATA) == UNTOUCHED,
                "{f}: a request after DEVICE_NEEDS_RESET was served (status byte {s:#04x})"
            );
        }
        Ok(Answer::NeedsReset(msg!(
            "status {status:#04x}, generation {gen0} -> {gen1}, ISR {isr:#04x}, later requests ignored"
        )))
    }

    /// Notifies and expects the request to complete as used entry
    /// `used - 1` with status byte `status` (at [`STATUS`] + `status_off`)
    /// and used length `len`, and no reset.
    fn expect_status(&self, ring: &Ring, used: u16, status: u8, len: u32) -> R<Answer> {
        self.expect_status_at(ring, used, STATUS, status, len)
    }

    fn expect_status_at(
        &self,
        ring: &Ring,
        used: u16,
        status_off: u64,
        status: u8,
        len: u32,
    ) -> R<Answer> {
        let f = self.t.bdf;
        self.t.notify(0);
        ensure!(
            self.wait_used(ring, used, self.request),
            "{f}: the request did not complete within {REQUEST_MS} ms (used index {}, status {:#04x})",
            ring.used_idx(),
            self.t.status()
        );
        let (head, got_len) = ring.used_elem(used.wrapping_sub(1));
        let s = self.dma.r8(status_off);
        let dev = self.t.status();
        ensure!(
            dev & S_NEEDS_RESET == 0,
            "{f}: DEVICE_NEEDS_RESET (status {dev:#04x}) for a request that only deserves status {status}"
        );
        ensure!(
            s == status,
            "{f}: status byte {s:#04x}, expected {status:#04x}"
        );
        ensure!(
            got_len == len,
            "{f}: used length {got_len}, expected {len} (head {head})"
        );
        let detail = msg!("status byte {s}, used length {got_len}, device status {dev:#04x}");
        Ok(if status == S_OK {
            Answer::Other(detail)
        } else {
            Answer::ErrorStatus(detail)
        })
    }
}

// ---------------------------------------------------------------- recovery

/// Reset, a proper bring-up, a read of sector 0 that matches the
/// `testdisk` pattern; the device is left reset.
fn recover_blk(c: &Ctx) -> R {
    let f = c.t.bdf;
    let ring = c
        .up_blk(F_VERSION_1)
        .map_err(|e| msg!("recovery: {}", e.as_str()))?;
    c.good_read(&ring, 0, 0);
    ring.push_avail(0);
    c.t.notify(0);
    ensure!(
        c.wait_used(&ring, 1, c.request),
        "{f}: recovery: a read of sector 0 did not complete within {REQUEST_MS} ms (status {:#04x})",
        c.t.status()
    );
    let (head, len) = ring.used_elem(0);
    let s = c.dma.r8(STATUS);
    ensure!(
        head == 0 && len == SECTOR as u32 + 1 && s == S_OK,
        "{f}: recovery: read of sector 0: used head {head} length {len}, status byte {s:#04x}"
    );
    let mut sector = [0u8; SECTOR as usize];
    c.dma.read(DATA, &mut sector);
    if let Some(i) = (0..sector.len()).find(|&i| sector[i] != super::virtio::disk_byte(0, i)) {
        fail!(
            "{f}: recovery: sector 0 byte {i} reads {:#04x}, the test disk has {:#04x}",
            sector[i],
            super::virtio::disk_byte(0, i)
        );
    }
    let st = c.t.status();
    ensure!(
        st & S_NEEDS_RESET == 0,
        "{f}: recovery: status {st:#04x} after a good read"
    );
    c.t.reset(c.request)
}

/// Reset, a proper bring-up (a receive buffer posted, transmit queue), one
/// broadcast frame transmitted and returned used; the device is left reset.
fn recover_net(c: &Ctx) -> R {
    let f = c.t.bdf;
    c.negotiate(F_VERSION_1)
        .map_err(|e| msg!("recovery: {}", e.as_str()))?;
    let rx = Ring::new(c.dma, NET_RX_RING, QSIZE);
    let tx = Ring::new(c.dma, NET_TX_RING, QSIZE);
    ensure!(
        c.t.setup_queue(NET_RX, &rx) && c.t.setup_queue(NET_TX, &tx),
        "{f}: recovery: queues not enabled"
    );
    rx.set_desc(0, c.a(NET_RX_BUF), NET_RX_LEN, D_WRITE, 0);
    rx.push_avail(0);
    c.t.driver_ok();
    let len = frame(c, 64);
    tx.set_desc(0, c.a(NET_TX_BUF), len, 0, 0);
    tx.push_avail(0);
    c.t.notify(NET_TX);
    ensure!(
        c.wait_used(&tx, 1, c.request),
        "{f}: recovery: a frame was not taken within {REQUEST_MS} ms (status {:#04x})",
        c.t.status()
    );
    let st = c.t.status();
    ensure!(
        st & S_NEEDS_RESET == 0 && st & S_DRIVER_OK != 0,
        "{f}: recovery: status {st:#04x} after a good transmission"
    );
    c.t.reset(c.request)
}

/// Writes a broadcast frame of `len` bytes (after the virtio-net header)
/// at [`NET_TX_BUF`]: ethertype 0x88B6 (not the soak's 0x88B5), "HOSTILE"
/// in the payload. Returns the buffer's length.
fn frame(c: &Ctx, len: u64) -> u32 {
    let b = NET_TX_BUF;
    c.dma.fill(b, NET_HDR + len, 0);
    c.dma.fill(b + NET_HDR, 6, 0xFF);
    c.dma
        .write(b + NET_HDR + 6, &[0x02, 0x48, 0x4F, 0x53, 0x54, 0x01]);
    c.dma.write(b + NET_HDR + 12, &[0x88, 0xB6]);
    c.dma.write(b + NET_HDR + 14, b"HOSTILE");
    (NET_HDR + len) as u32
}

// ---------------------------------------------------------------- control

/// The driver itself works: a read of sector 0 (checked by the recovery),
/// one past the end refused, and an indirect read with the feature.
fn baseline(env: &Env) -> TestResult {
    case(env, "baseline", Kind::Blk, |c| {
        let f = c.t.bdf;
        let offered = c.t.device_features();
        ensure!(
            offered & F_VERSION_1 != 0 && offered & F_INDIRECT_DESC != 0,
            "{f}: features {offered:#x} lack VERSION_1 or INDIRECT_DESC"
        );
        ensure!(
            u64::from(c.t.config32(0)) == DISK_SECTORS,
            "{f}: capacity {} sectors, the test disk has {DISK_SECTORS}",
            c.t.config32(0)
        );
        let ring = c.up_blk(F_VERSION_1 | F_INDIRECT_DESC)?;
        // Sector 5 through an indirect table.
        c.request(T_IN, 5);
        indirect_table(
            c,
            &[
                (c.a(HDR), 16, 0),
                (c.a(DATA), SECTOR as u32, D_WRITE),
                (c.a(STATUS), 1, D_WRITE),
            ],
        );
        ring.set_desc(0, c.a(INDIRECT), 3 * 16, D_INDIRECT, 0);
        ring.push_avail(0);
        c.expect_status(&ring, 1, S_OK, SECTOR as u32 + 1)?;
        let mut sector = [0u8; SECTOR as usize];
        c.dma.read(DATA, &mut sector);
        ensure!(
            (0..sector.len()).all(|i| sector[i] == super::virtio::disk_byte(5, i)),
            "{f}: sector 5 read through an indirect table does not match the test disk"
        );
        Ok(Answer::Other(msg!(
            "features {offered:#x}, {DISK_SECTORS} sectors, an indirect read of sector 5 matches"
        )))
    })
}

/// Writes `descs` as an indirect table at [`INDIRECT`], linked with NEXT.
fn indirect_table(c: &Ctx, descs: &[(u64, u32, u16)]) {
    for (i, &(addr, len, flags)) in descs.iter().enumerate() {
        let last = i + 1 == descs.len();
        let flags = if last { flags } else { flags | D_NEXT };
        let next = if last { 0 } else { i as u16 + 1 };
        write_desc(&c.dma, INDIRECT + 16 * i as u64, addr, len, flags, next);
    }
}

// ---------------------------------------------------------------- chains

/// hdr -> data -> status -> back to data (all device-writable after the
/// header, so only the loop is wrong).
fn desc_loop(env: &Env) -> TestResult {
    case(env, "desc-loop", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1)?;
        c.good_read(&ring, 0, 0);
        ring.set_desc(2, c.a(STATUS), 1, D_WRITE | D_NEXT, 1);
        ring.push_avail(0);
        c.expect_reset(&ring, 0, Some(0))
    })
}

/// One writable descriptor whose `next` is itself.
fn desc_self_loop(env: &Env) -> TestResult {
    case(env, "desc-self-loop", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1)?;
        c.request(T_IN, 0);
        ring.set_desc(0, c.a(HDR), 16, D_NEXT, 1);
        ring.set_desc(1, c.a(DATA), 16, D_WRITE | D_NEXT, 1);
        ring.push_avail(0);
        c.expect_reset(&ring, 0, Some(0))
    })
}

/// The chain goes on at descriptor [`QSIZE`], past the table (a
/// plausible descriptor waits there: a device that followed it would
/// serve the request).
fn next_out_of_range(env: &Env) -> TestResult {
    case(env, "next-out-of-range", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1)?;
        c.request(T_IN, 0);
        ring.set_desc(0, c.a(HDR), 16, D_NEXT, 1);
        ring.set_desc(1, c.a(DATA), SECTOR as u32, D_WRITE | D_NEXT, QSIZE);
        ring.set_desc(QSIZE, c.a(STATUS), 1, D_WRITE, 0);
        ring.push_avail(0);
        c.expect_reset(&ring, 0, Some(0))
    })
}

/// The available ring names head 200 of a 16-entry table.
fn head_out_of_range(env: &Env) -> TestResult {
    case(env, "head-out-of-range", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1)?;
        c.good_read(&ring, 200, 0);
        ring.push_avail(200);
        c.expect_reset(&ring, 0, Some(0))
    })
}

/// hdr, status (device-writable), then a device-readable buffer.
fn readable_after_writable(env: &Env) -> TestResult {
    case(env, "readable-after-writable", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1)?;
        c.request(T_OUT, 0);
        c.chain(
            &ring,
            0,
            &[
                (c.a(HDR), 16, 0),
                (c.a(STATUS), 1, D_WRITE),
                (c.a(DATA), SECTOR as u32, 0),
            ],
        );
        ring.push_avail(0);
        c.expect_reset(&ring, 0, Some(0))
    })
}

/// The available index jumps by more than the queue size (every slot
/// holds a good chain).
fn index_jump(env: &Env) -> TestResult {
    case(env, "index-jump", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1)?;
        c.good_read(&ring, 0, 0);
        ring.set_avail_idx(QSIZE + 1);
        c.expect_reset(&ring, 0, Some(0))
    })
}

/// One good request served, then the available index goes back to 0.
fn index_backwards(env: &Env) -> TestResult {
    case(env, "index-backwards", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1)?;
        c.good_read(&ring, 0, 0);
        ring.push_avail(0);
        c.expect_status(&ring, 1, S_OK, SECTOR as u32 + 1)?;
        ring.set_avail_idx(0);
        c.expect_reset(&ring, 0, Some(1))
    })
}

// ---------------------------------------------------------------- addresses

/// A read whose data buffer is `len` bytes at `addr` (not the guest's
/// RAM): a ring error.
fn bad_data_addr(c: &Ctx, addr: u64, len: u32) -> R<Answer> {
    let ring = c.up_blk(F_VERSION_1)?;
    c.request(T_IN, 0);
    c.chain(
        &ring,
        0,
        &[
            (c.a(HDR), 16, 0),
            (addr, len, D_WRITE),
            (c.a(STATUS), 1, D_WRITE),
        ],
    );
    ring.push_avail(0);
    c.expect_reset(&ring, 0, Some(0))
}

/// The end of the guest's RAM (Multiboot mem_upper, else the mapped RAM).
fn ram_end(env: &Env) -> u64 {
    env.boot
        .ram_end()
        .unwrap_or_else(crate::paging::mapped_ram_end)
}

/// 256 bytes of RAM, then past its end.
fn addr_past_ram(env: &Env) -> TestResult {
    case(env, "addr-past-ram", Kind::Blk, |c| {
        bad_data_addr(c, ram_end(c.env) - 256, SECTOR as u32)
    })
}

fn addr_pci_hole(env: &Env) -> TestResult {
    case(env, "addr-pci-hole", Kind::Blk, |c| {
        bad_data_addr(c, PCI_HOLE, SECTOR as u32)
    })
}

/// A buffer whose end wraps around the address space.
fn addr_wrap(env: &Env) -> TestResult {
    case(env, "addr-wrap", Kind::Blk, |c| {
        bad_data_addr(c, u64::MAX - 255, SECTOR as u32)
    })
}

/// The disk's data into the device's own common configuration.
fn addr_own_bar(env: &Env) -> TestResult {
    case(env, "addr-own-bar", Kind::Blk, |c| {
        let a = bad_data_addr(c, c.t.bar0, SECTOR as u32)?;
        let q = c.t.num_queues();
        ensure!(
            q == 1,
            "{}: after the request, num_queues reads {q}",
            c.t.bdf
        );
        Ok(a)
    })
}

/// Into the virtio-net device's registers.
fn addr_net_bar(env: &Env) -> TestResult {
    case(env, "addr-net-bar", Kind::Blk, |c| {
        let net = Transport::open(find(ID_NET)?)?;
        bad_data_addr(c, net.bar0, SECTOR as u32)
    })
}

fn addr_ioapic(env: &Env) -> TestResult {
    case(env, "addr-ioapic", Kind::Blk, |c| {
        bad_data_addr(c, IOAPIC, SECTOR as u32)
    })
}

fn addr_lapic(env: &Env) -> TestResult {
    case(env, "addr-lapic", Kind::Blk, |c| {
        bad_data_addr(c, LAPIC, SECTOR as u32)
    })
}

/// The request header is the device's own configuration (BAR 0 + 0x2000).
fn header_in_bar(env: &Env) -> TestResult {
    case(env, "header-in-bar", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1)?;
        c.request(T_IN, 0);
        c.chain(
            &ring,
            0,
            &[
                (c.t.bar0 + 0x2000, 16, 0),
                (c.a(DATA), SECTOR as u32, D_WRITE),
                (c.a(STATUS), 1, D_WRITE),
            ],
        );
        ring.push_avail(0);
        c.expect_reset(&ring, 0, Some(0))
    })
}

/// Queue 0 with its parts at `desc`, `avail`, `used` (None: in the area);
/// a good request made available in the area's rings. The device may refuse
/// the queue when it is enabled (DEVICE_NEEDS_RESET then) or when it is used.
fn bad_ring(c: &Ctx, desc: Option<u64>, avail: Option<u64>, used: Option<u64>) -> R<Answer> {
    c.negotiate(F_VERSION_1)?;
    let ring = Ring::new(c.dma, RING, QSIZE);
    c.t.select(0);
    c.t.set_queue_size(QSIZE);
    c.t.set_queue_addrs(
        desc.unwrap_or(ring.desc),
        avail.unwrap_or(ring.avail),
        used.unwrap_or(ring.used),
    );
    let gen0 = c.t.generation();
    let _ = c.t.take_isr();
    c.t.enable_queue();
    if !c.t.queue_enabled() {
        // Refused at enable: nothing may be served afterwards either.
        c.t.driver_ok();
        c.good_read(&ring, 0, 0);
        ring.push_avail(0);
        c.t.notify(0);
        return c.after_reset(&ring, 0, Some(0), gen0);
    }
    c.t.driver_ok();
    c.good_read(&ring, 0, 0);
    ring.push_avail(0);
    c.expect_reset(&ring, 0, used.is_none().then_some(0))
}

fn desc_table_in_bar(env: &Env) -> TestResult {
    case(env, "desc-table-in-bar", Kind::Blk, |c| {
        bad_ring(c, Some(c.t.bar0), None, None)
    })
}

fn avail_ring_in_ioapic(env: &Env) -> TestResult {
    case(env, "avail-ring-in-ioapic", Kind::Blk, |c| {
        bad_ring(c, None, Some(IOAPIC), None)
    })
}

/// The used ring is the IOAPIC: the request may be served, but its used
/// entry cannot be written.
fn used_ring_in_ioapic(env: &Env) -> TestResult {
    case(env, "used-ring-in-ioapic", Kind::Blk, |c| {
        bad_ring(c, None, None, Some(IOAPIC))
    })
}

// ---------------------------------------------------------------- lengths

/// A 0-byte header: the request cannot be read.
fn zero_len_header(env: &Env) -> TestResult {
    case(env, "zero-len-header", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1)?;
        c.request(T_IN, 0);
        c.chain(
            &ring,
            0,
            &[
                (c.a(HDR), 0, 0),
                (c.a(DATA), SECTOR as u32, D_WRITE),
                (c.a(STATUS), 1, D_WRITE),
            ],
        );
        ring.push_avail(0);
        // The status is the last writable byte; nothing else is written.
        let a = c.expect_status(&ring, 1, S_IOERR, 1)?;
        ensure!(
            c.dma.r8(DATA) == UNTOUCHED,
            "{}: data written for a request without a header",
            c.t.bdf
        );
        Ok(a)
    })
}

/// A read of 0 bytes (0 is a multiple of 512): served, nothing written but
/// the status byte.
fn zero_len_data(env: &Env) -> TestResult {
    case(env, "zero-len-data", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1)?;
        c.request(T_IN, 0);
        c.chain(
            &ring,
            0,
            &[
                (c.a(HDR), 16, 0),
                (c.a(DATA), 0, D_WRITE),
                (c.a(STATUS), 1, D_WRITE),
            ],
        );
        ring.push_avail(0);
        let a = c.expect_status(&ring, 1, S_OK, 1)?;
        ensure!(
            c.dma.r8(DATA) == UNTOUCHED,
            "{}: a 0-byte read wrote its buffer",
            c.t.bdf
        );
        Ok(a)
    })
}

/// The only device-writable descriptor is 0 bytes: no room for a status;
/// returned used with length 0, nothing written.
fn zero_len_status(env: &Env) -> TestResult {
    case(env, "zero-len-status", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1)?;
        c.request(T_IN, 0);
        c.chain(&ring, 0, &[(c.a(HDR), 16, 0), (c.a(STATUS), 0, D_WRITE)]);
        ring.push_avail(0);
        let a = c.expect_status(&ring, 1, NO_STATUS, 0)?;
        Ok(Answer::ErrorStatus(msg!(
            "returned unserved: {}",
            a.text().1.as_str()
        )))
    })
}

/// A data descriptor of 4 GiB - 1 bytes starting in the area: it leaves
/// the RAM.
fn huge_len(env: &Env) -> TestResult {
    case(env, "huge-len", Kind::Blk, |c| {
        bad_data_addr(c, c.a(DATA), u32::MAX)
    })
}

/// RAM the huge-buffer cases use, checked to be free and present; its
/// first and last sectors get [`UNTOUCHED`].
fn huge_buffer() -> R<(u64, u32)> {
    extern "C" {
        static __guest_bss_end: u8;
    }
    let image_end = core::ptr::addr_of!(__guest_bss_end) as u64;
    ensure!(
        image_end <= HUGE_BASE && HUGE_BASE + HUGE_LEN <= crate::paging::mapped_ram_end(),
        "no room for a {} MiB buffer at {HUGE_BASE:#x} (image ends at {image_end:#x}, RAM mapped to {:#x}, VM needs 64 MiB)",
        HUGE_LEN >> 20,
        crate::paging::mapped_ram_end()
    );
    for at in [HUGE_BASE, HUGE_BASE + HUGE_LEN - SECTOR] {
        // SAFETY: identity-mapped RAM above the guest's image and below the
        // end of the mapped RAM (checked): no Rust object lives there.
        unsafe { core::ptr::write_bytes(at as *mut u8, UNTOUCHED, SECTOR as usize) };
    }
    Ok((HUGE_BASE, HUGE_LEN as u32))
}

fn huge_untouched(c: &Ctx) -> R {
    for at in [HUGE_BASE, HUGE_BASE + HUGE_LEN - SECTOR] {
        // SAFETY: as in huge_buffer.
        let b = unsafe { core::slice::from_raw_parts(at as *const u8, SECTOR as usize) };
        if let Some(i) = b.iter().position(|&x| x != UNTOUCHED) {
            fail!(
                "{}: the refused request wrote the huge buffer at {:#x}",
                c.t.bdf,
                at + i as u64
            );
        }
    }
    Ok(())
}

/// A 32 MiB read (all guest RAM) from a 1 MiB disk: I/O error, nothing
/// written.
fn huge_read(env: &Env) -> TestResult {
    case(env, "huge-read", Kind::Blk, |c| {
        let (addr, len) = huge_buffer()?;
        let ring = c.up_blk(F_VERSION_1)?;
        c.request(T_IN, 0);
        c.chain(
            &ring,
            0,
            &[
                (c.a(HDR), 16, 0),
                (addr, len, D_WRITE),
                (c.a(STATUS), 1, D_WRITE),
            ],
        );
        ring.push_avail(0);
        let a = c.expect_status(&ring, 1, S_IOERR, 1)?;
        huge_untouched(c)?;
        Ok(a)
    })
}

/// A 32 MiB write to a 1 MiB disk: I/O error (the recovery's read of
/// sector 0 shows the disk unchanged).
fn huge_write(env: &Env) -> TestResult {
    case(env, "huge-write", Kind::Blk, |c| {
        let (addr, len) = huge_buffer()?;
        let ring = c.up_blk(F_VERSION_1)?;
        c.request(T_OUT, 0);
        c.chain(
            &ring,
            0,
            &[(c.a(HDR), 16, 0), (addr, len, 0), (c.a(STATUS), 1, D_WRITE)],
        );
        ring.push_avail(0);
        c.expect_status(&ring, 1, S_IOERR, 1)
    })
}

/// A read of 100 bytes.
fn data_not_sectors(env: &Env) -> TestResult {
    case(env, "data-not-sectors", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1)?;
        c.request(T_IN, 0);
        c.chain(
            &ring,
            0,
            &[
                (c.a(HDR), 16, 0),
                (c.a(DATA), 100, D_WRITE),
                (c.a(STATUS), 1, D_WRITE),
            ],
        );
        ring.push_avail(0);
        c.expect_status(&ring, 1, S_IOERR, 1)
    })
}

fn bad_sector(c: &Ctx, sector: u64) -> R<Answer> {
    let ring = c.up_blk(F_VERSION_1)?;
    c.good_read(&ring, 0, sector);
    ring.push_avail(0);
    let a = c.expect_status(&ring, 1, S_IOERR, 1)?;
    ensure!(
        c.dma.r8(DATA) == UNTOUCHED,
        "{}: data written for a read of sector {sector:#x}",
        c.t.bdf
    );
    Ok(a)
}

fn sector_past_end(env: &Env) -> TestResult {
    case(env, "sector-past-end", Kind::Blk, |c| {
        bad_sector(c, DISK_SECTORS)
    })
}

/// A sector whose byte offset overflows 64 bits.
fn sector_overflow(env: &Env) -> TestResult {
    case(env, "sector-overflow", Kind::Blk, |c| {
        bad_sector(c, u64::MAX / 256)
    })
}

fn unknown_type(env: &Env) -> TestResult {
    case(env, "unknown-type", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1)?;
        c.good_read(&ring, 0, 0);
        c.dma.w32(HDR, 0x77);
        ring.push_avail(0);
        c.expect_status(&ring, 1, S_UNSUPP, 1)
    })
}

// ---------------------------------------------------------------- protocol

/// Queue 0 with size `size`: DEVICE_NEEDS_RESET when it is enabled, the
/// queue stays disabled and a notification is ignored.
fn bad_size(c: &Ctx, size: u16) -> R<Answer> {
    let f = c.t.bdf;
    c.negotiate(F_VERSION_1)?;
    let ring = Ring::new(c.dma, RING, QSIZE);
    let gen0 = c.t.generation();
    let _ = c.t.take_isr();
    c.t.select(0);
    c.t.set_queue_size(size);
    c.t.set_queue_addrs(ring.desc, ring.avail, ring.used);
    c.t.enable_queue();
    let enabled = c.t.queue_enabled();
    ensure!(!enabled, "{f}: a queue of size {size} was enabled");
    c.t.driver_ok();
    c.good_read(&ring, 0, 0);
    ring.push_avail(0);
    c.after_reset(&ring, 0, Some(0), gen0)
}

fn queue_size_not_pow2(env: &Env) -> TestResult {
    case(env, "queue-size-not-pow2", Kind::Blk, |c| bad_size(c, 7))
}

fn queue_size_zero(env: &Env) -> TestResult {
    case(env, "queue-size-zero", Kind::Blk, |c| bad_size(c, 0))
}

/// Twice the size the device offers.
fn queue_size_too_big(env: &Env) -> TestResult {
    case(env, "queue-size-too-big", Kind::Blk, |c| {
        c.t.select(0);
        let max = c.t.queue_size();
        ensure!(
            max.is_power_of_two() && max < 0x8000,
            "{}: queue 0 offers size {max}",
            c.t.bdf
        );
        bad_size(c, max * 2)
    })
}

/// A good read through an indirect table of `n` bytes at `table` in
/// descriptor 0 (with `flags` besides INDIRECT).
fn indirect_read(c: &Ctx, ring: &Ring, table: u64, n: u32, flags: u16) {
    c.request(T_IN, 0);
    indirect_table(
        c,
        &[
            (c.a(HDR), 16, 0),
            (c.a(DATA), SECTOR as u32, D_WRITE),
            (c.a(STATUS), 1, D_WRITE),
        ],
    );
    ring.set_desc(0, table, n, D_INDIRECT | flags, 1);
    ring.push_avail(0);
}

/// An indirect descriptor when only VERSION_1 was accepted.
fn indirect_not_negotiated(env: &Env) -> TestResult {
    case(env, "indirect-not-negotiated", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1)?;
        indirect_read(c, &ring, c.a(INDIRECT), 3 * 16, 0);
        c.expect_reset(&ring, 0, Some(0))
    })
}

/// INDIRECT_DESC written after FEATURES_OK: the device keeps what was
/// negotiated (the write is ignored) and refuses the indirect descriptor.
fn features_after_ok(env: &Env) -> TestResult {
    case(env, "features-after-ok", Kind::Blk, |c| {
        let f = c.t.bdf;
        c.negotiate(F_VERSION_1)?;
        c.t.set_driver_features(F_VERSION_1 | F_INDIRECT_DESC);
        let now = c.t.driver_features();
        ensure!(
            now == F_VERSION_1,
            "{f}: driver features read {now:#x} after a write past FEATURES_OK"
        );
        let ring = Ring::new(c.dma, RING, QSIZE);
        ensure!(c.t.setup_queue(0, &ring), "{f}: queue 0 not enabled");
        c.t.driver_ok();
        indirect_read(c, &ring, c.a(INDIRECT), 3 * 16, 0);
        c.expect_reset(&ring, 0, Some(0))
    })
}

/// INDIRECT_DESC negotiated and queue 0 enabled; then the driver clears
/// FEATURES_OK (and DRIVER_OK) with a status write instead of a reset,
/// accepts only VERSION_1 and sets FEATURES_OK and DRIVER_OK again. The
/// device must honour exactly the features it reports as negotiated: if it
/// took the new set (no INDIRECT_DESC), an indirect descriptor is a ring
/// error; if it refused the change (the old set stays), it is served.
fn features_renegotiated(env: &Env) -> TestResult {
    case(env, "features-renegotiated", Kind::Blk, |c| {
        let f = c.t.bdf;
        let ring = c.up_blk(F_VERSION_1 | F_INDIRECT_DESC)?;
        c.t.set_status(S_ACKNOWLEDGE | S_DRIVER);
        c.t.set_driver_features(F_VERSION_1);
        c.t.set_status(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
        let st = c.t.status();
        let now = c.t.driver_features();
        ensure!(
            st & S_FEATURES_OK != 0 && st & S_DRIVER_OK != 0,
            "{f}: status {st:#04x} after setting FEATURES_OK and DRIVER_OK again"
        );
        indirect_read(c, &ring, c.a(INDIRECT), 3 * 16, 0);
        if now & F_INDIRECT_DESC != 0 {
            let a = c.expect_status(&ring, 1, S_OK, SECTOR as u32 + 1)?;
            Ok(Answer::Other(msg!(
                "the change was refused (features stay {now:#x}), the indirect read served: {}",
                a.text().1.as_str()
            )))
        } else {
            c.expect_reset(&ring, 0, Some(0))
        }
    })
}

/// Features the device did not offer, or without VERSION_1: FEATURES_OK
/// does not stick, no queue can be enabled, a notification is ignored.
fn bad_features(c: &Ctx, features: u64) -> R<Answer> {
    let f = c.t.bdf;
    c.t.reset(c.request)?;
    c.t.set_status(S_ACKNOWLEDGE);
    c.t.set_status(S_ACKNOWLEDGE | S_DRIVER);
    c.t.set_driver_features(features);
    c.t.set_status(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
    let st = c.t.status();
    ensure!(
        st & S_FEATURES_OK == 0,
        "{f}: FEATURES_OK stuck with features {features:#x} (offered {:#x})",
        c.t.device_features()
    );
    let ring = Ring::new(c.dma, RING, QSIZE);
    let enabled = c.t.setup_queue(0, &ring);
    ensure!(!enabled, "{f}: a queue enabled without FEATURES_OK");
    c.t.set_status(st | S_DRIVER_OK);
    c.good_read(&ring, 0, 0);
    ring.push_avail(0);
    c.t.notify(0);
    c.stays(&ring, 0)?;
    ensure!(
        c.dma.r8(STATUS) == NO_STATUS,
        "{f}: a request served on a device without FEATURES_OK"
    );
    Ok(Answer::Ignored(msg!(
        "FEATURES_OK refused (status {st:#04x}), queue not enabled, notification ignored"
    )))
}

/// Bit 40, which no device here offers.
fn features_unoffered(env: &Env) -> TestResult {
    case(env, "features-unoffered", Kind::Blk, |c| {
        let offered = c.t.device_features();
        ensure!(
            offered & (1 << 40) == 0,
            "{}: the device offers feature 40",
            c.t.bdf
        );
        bad_features(c, F_VERSION_1 | 1 << 40)
    })
}

fn features_no_version_1(env: &Env) -> TestResult {
    case(env, "features-no-version-1", Kind::Blk, |c| {
        let offered = c.t.device_features();
        bad_features(c, offered & !F_VERSION_1)
    })
}

/// With INDIRECT_DESC: a table of `entries` (each a 32-byte piece of the
/// sector) longer than the queue.
fn indirect_longer_than_queue(env: &Env) -> TestResult {
    case(env, "indirect-longer-than-queue", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1 | F_INDIRECT_DESC)?;
        c.request(T_IN, 0);
        // Header, 16 pieces of 32 bytes, status: 18 > 16 entries, a
        // well-formed request otherwise.
        let n = usize::from(QSIZE) + 2;
        for i in 0..n {
            let (addr, len, flags) = match i {
                0 => (c.a(HDR), 16, 0),
                i if i + 1 == n => (c.a(STATUS), 1, D_WRITE),
                i => (c.a(DATA) + 32 * (i as u64 - 1), 32, D_WRITE),
            };
            let last = i + 1 == n;
            let flags = if last { flags } else { flags | D_NEXT };
            write_desc(
                &c.dma,
                INDIRECT + 16 * i as u64,
                addr,
                len,
                flags,
                i as u16 + 1,
            );
        }
        ring.set_desc(0, c.a(INDIRECT), 16 * n as u32, D_INDIRECT, 0);
        ring.push_avail(0);
        c.expect_reset(&ring, 0, Some(0))
    })
}

/// The last entry of an indirect table links back to its first.
fn indirect_loop(env: &Env) -> TestResult {
    case(env, "indirect-loop", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1 | F_INDIRECT_DESC)?;
        indirect_read(c, &ring, c.a(INDIRECT), 3 * 16, 0);
        write_desc(&c.dma, INDIRECT + 32, c.a(STATUS), 1, D_WRITE | D_NEXT, 0);
        c.expect_reset(&ring, 0, Some(0))
    })
}

/// An indirect table entry that is itself indirect.
fn indirect_nested(env: &Env) -> TestResult {
    case(env, "indirect-nested", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1 | F_INDIRECT_DESC)?;
        indirect_read(c, &ring, c.a(INDIRECT), 3 * 16, 0);
        write_desc(
            &c.dma,
            INDIRECT + 16,
            c.a(INDIRECT),
            48,
            D_INDIRECT | D_NEXT,
            2,
        );
        c.expect_reset(&ring, 0, Some(0))
    })
}

/// An indirect descriptor with NEXT set.
fn indirect_with_next(env: &Env) -> TestResult {
    case(env, "indirect-with-next", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1 | F_INDIRECT_DESC)?;
        indirect_read(c, &ring, c.a(INDIRECT), 3 * 16, D_NEXT);
        ring.set_desc(1, c.a(STATUS), 1, D_WRITE, 0);
        c.expect_reset(&ring, 0, Some(0))
    })
}

/// An indirect table of 40 bytes (not a multiple of 16).
fn indirect_bad_length(env: &Env) -> TestResult {
    case(env, "indirect-bad-length", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1 | F_INDIRECT_DESC)?;
        indirect_read(c, &ring, c.a(INDIRECT), 40, 0);
        c.expect_reset(&ring, 0, Some(0))
    })
}

/// An indirect table in the IOAPIC page.
fn indirect_in_ioapic(env: &Env) -> TestResult {
    case(env, "indirect-in-ioapic", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1 | F_INDIRECT_DESC)?;
        indirect_read(c, &ring, IOAPIC, 3 * 16, 0);
        c.expect_reset(&ring, 0, Some(0))
    })
}

/// A good request notified after FEATURES_OK and the queue's enable but
/// before DRIVER_OK: ignored; served once DRIVER_OK is set and it is
/// notified again.
fn notify_before_driver_ok(env: &Env) -> TestResult {
    case(env, "notify-before-driver-ok", Kind::Blk, |c| {
        let f = c.t.bdf;
        c.negotiate(F_VERSION_1)?;
        let ring = Ring::new(c.dma, RING, QSIZE);
        ensure!(c.t.setup_queue(0, &ring), "{f}: queue 0 not enabled");
        c.good_read(&ring, 0, 0);
        ring.push_avail(0);
        c.t.notify(0);
        c.stays(&ring, 0)?;
        let st = c.t.status();
        ensure!(
            c.dma.r8(STATUS) == NO_STATUS && st & S_NEEDS_RESET == 0,
            "{f}: before DRIVER_OK: status byte {:#04x}, device status {st:#04x}",
            c.dma.r8(STATUS)
        );
        c.t.driver_ok();
        c.expect_status(&ring, 1, S_OK, SECTOR as u32 + 1)?;
        Ok(Answer::Ignored(msg!(
            "used index stayed 0 before DRIVER_OK; served after DRIVER_OK and a new notification"
        )))
    })
}

/// A notification of queue 5 (the device has 1): ignored, no reset; the
/// real queue still works.
fn notify_bad_queue(env: &Env) -> TestResult {
    case(env, "notify-bad-queue", Kind::Blk, |c| {
        let ring = c.up_blk(F_VERSION_1)?;
        c.good_read(&ring, 0, 0);
        ring.push_avail(0);
        c.t.notify(5);
        c.stays(&ring, 0)?;
        let st = c.t.status();
        ensure!(
            st & S_NEEDS_RESET == 0,
            "{}: status {st:#04x} after notifying queue 5",
            c.t.bdf
        );
        c.expect_status(&ring, 1, S_OK, SECTOR as u32 + 1)?;
        Ok(Answer::Ignored(msg!(
            "queue 5 ignored, status {st:#04x}; queue 0 served afterwards"
        )))
    })
}

/// A request made available, then the device reset before it was
/// notified, then a notification: nothing served, nothing written.
fn reset_mid_request(env: &Env) -> TestResult {
    case(env, "reset-mid-request", Kind::Blk, |c| {
        let f = c.t.bdf;
        let ring = c.up_blk(F_VERSION_1)?;
        // A write of the disk's own sector 0 (harmless if it happened).
        c.request(T_OUT, 0);
        for i in 0..SECTOR as usize {
            c.dma.w8(DATA + i as u64, super::virtio::disk_byte(0, i));
        }
        c.chain(
            &ring,
            0,
            &[
                (c.a(HDR), 16, 0),
                (c.a(DATA), SECTOR as u32, 0),
                (c.a(STATUS), 1, D_WRITE),
            ],
        );
        ring.push_avail(0);
        c.t.reset(c.request)?;
        c.t.notify(0);
        c.stays(&ring, 0)?;
        let st = c.t.status();
        ensure!(
            c.dma.r8(STATUS) == NO_STATUS && st == 0,
            "{f}: after the reset: status byte {:#04x}, device status {st:#04x}",
            c.dma.r8(STATUS)
        );
        Ok(Answer::Ignored(msg!(
            "the request made available before the reset was never served"
        )))
    })
}

/// MSI-X on, with messages no CPU can take: the queue's vector names
/// every APIC with the illegal vector 3, the configuration vector an
/// address outside the MSI window. A completion and a ring error each send
/// one; the device answers as usual (with MSI-X the ISR stays 0) and the
/// hypervisor drops them.
fn msix_bad_messages(env: &Env) -> TestResult {
    case(env, "msix-bad-messages", Kind::Blk, |c| {
        let f = c.t.bdf;
        let msix = c.t.msix()?;
        ensure!(msix.entries >= 2, "{f}: {} MSI-X entries", msix.entries);
        msix.set_entry(0, 0xFEE0_0000 | 0xFF << 12, 0x03);
        msix.set_entry(1, 0xDEAD_B000, 0x41);
        msix.enable(true);
        let answer = (|| {
            c.negotiate(F_VERSION_1)?;
            let (cv, qv) = (c.t.set_config_vector(1), c.t.set_queue_vector(0, 0));
            ensure!(cv == 1 && qv == 0, "{f}: vectors read back {cv} and {qv}");
            let ring = Ring::new(c.dma, RING, QSIZE);
            ensure!(c.t.setup_queue(0, &ring), "{f}: queue 0 not enabled");
            c.t.driver_ok();
            c.good_read(&ring, 0, 0);
            ring.push_avail(0);
            c.expect_status(&ring, 1, S_OK, SECTOR as u32 + 1)?;
            // Now a loop: the configuration interrupt.
            let gen0 = c.t.generation();
            c.good_read(&ring, 1, 0);
            ring.set_desc(3, c.a(STATUS), 1, D_WRITE | D_NEXT, 2);
            ring.push_avail(1);
            c.t.notify(0);
            c.wait_needs_reset(&ring)?;
            let (gen1, isr) = (c.t.generation(), c.t.take_isr());
            ensure!(
                gen1 != gen0 && isr == 0,
                "{f}: DEVICE_NEEDS_RESET with MSI-X: generation {gen0} -> {gen1}, ISR {isr:#04x}"
            );
            Ok(Answer::NeedsReset(msg!(
                "a completion (vector 3 to all) and DEVICE_NEEDS_RESET (message to 0xdeadb000) sent, generation {gen0} -> {gen1}"
            )))
        })();
        msix.enable(false);
        answer
    })
}

/// Cycles of bring-up, a descriptor loop, DEVICE_NEEDS_RESET, reset.
const STORM: u32 = 50;

fn needs_reset_storm(env: &Env) -> TestResult {
    case(env, "needs-reset-storm", Kind::Blk, |c| {
        let t0 = cpu::rdtsc();
        for i in 0..STORM {
            let ring = c.up_blk(F_VERSION_1)?;
            c.good_read(&ring, 0, 0);
            ring.set_desc(2, c.a(STATUS), 1, D_WRITE | D_NEXT, 1);
            ring.push_avail(0);
            c.t.notify(0);
            c.wait_needs_reset(&ring)
                .map_err(|e| msg!("cycle {i}: {}", e.as_str()))?;
        }
        let ms = cpu::rdtsc().wrapping_sub(t0) / tsc_bound_ms(c.env, 1);
        Ok(Answer::NeedsReset(msg!(
            "{STORM} cycles of bring-up, loop, DEVICE_NEEDS_RESET in {ms} ms"
        )))
    })
}

// ---------------------------------------------------------------- net

/// Brings the net device up with only the transmit queue enabled.
fn up_tx(c: &Ctx) -> R<Ring> {
    c.negotiate(F_VERSION_1)?;
    let tx = Ring::new(c.dma, NET_TX_RING, QSIZE);
    ensure!(
        c.t.setup_queue(NET_TX, &tx),
        "{}: transmit queue not enabled",
        c.t.bdf
    );
    c.t.driver_ok();
    Ok(tx)
}

/// A transmit chain of header -> frame -> back to header.
fn net_tx_loop(env: &Env) -> TestResult {
    case(env, "net-tx-loop", Kind::Net, |c| {
        let tx = up_tx(c)?;
        let len = frame(c, 64);
        tx.set_desc(0, c.a(NET_TX_BUF), NET_HDR as u32, D_NEXT, 1);
        tx.set_desc(
            1,
            c.a(NET_TX_BUF) + NET_HDR,
            len - NET_HDR as u32,
            D_NEXT,
            0,
        );
        tx.push_avail(0);
        c.expect_reset(&tx, NET_TX, Some(0))
    })
}

/// A frame in the IOAPIC page.
fn net_tx_ioapic(env: &Env) -> TestResult {
    case(env, "net-tx-ioapic", Kind::Net, |c| {
        let tx = up_tx(c)?;
        frame(c, 64);
        tx.set_desc(0, c.a(NET_TX_BUF), NET_HDR as u32, D_NEXT, 1);
        tx.set_desc(1, IOAPIC, 64, 0, 0);
        tx.push_avail(0);
        c.expect_reset(&tx, NET_TX, Some(0))
    })
}

/// Transmits one chain and expects it dropped: returned used with length
/// 0, no reset.
fn net_dropped(c: &Ctx, tx: &Ring) -> R<Answer> {
    let f = c.t.bdf;
    c.t.notify(NET_TX);
    ensure!(
        c.wait_used(tx, 1, c.request),
        "{f}: the chain was not returned within {REQUEST_MS} ms (status {:#04x})",
        c.t.status()
    );
    let (head, len) = tx.used_elem(0);
    let st = c.t.status();
    ensure!(
        head == 0 && len == 0 && st & S_NEEDS_RESET == 0,
        "{f}: used head {head} length {len}, status {st:#04x}"
    );
    Ok(Answer::ErrorStatus(msg!(
        "dropped: returned used with length 0, status {st:#04x}"
    )))
}

/// A 32 MiB frame (all guest RAM).
fn net_tx_huge(env: &Env) -> TestResult {
    case(env, "net-tx-huge", Kind::Net, |c| {
        let (addr, len) = huge_buffer()?;
        let tx = up_tx(c)?;
        frame(c, 64);
        tx.set_desc(0, c.a(NET_TX_BUF), NET_HDR as u32, D_NEXT, 1);
        tx.set_desc(1, addr, len, 0, 0);
        tx.push_avail(0);
        net_dropped(c, &tx)
    })
}

/// A transmit chain of one 0-byte buffer.
fn net_tx_zero_len(env: &Env) -> TestResult {
    case(env, "net-tx-zero-len", Kind::Net, |c| {
        let tx = up_tx(c)?;
        tx.set_desc(0, c.a(NET_TX_BUF), 0, 0, 0);
        tx.push_avail(0);
        net_dropped(c, &tx)
    })
}

/// A transmit chain with only a device-writable buffer (nothing to send).
fn net_tx_writable_only(env: &Env) -> TestResult {
    case(env, "net-tx-writable-only", Kind::Net, |c| {
        let tx = up_tx(c)?;
        let len = frame(c, 64);
        tx.set_desc(0, c.a(NET_TX_BUF), len, D_WRITE, 0);
        tx.push_avail(0);
        net_dropped(c, &tx)
    })
}

/// How long [`await_soak`] listens.
const AWAIT_MS: u64 = 20_000;

/// Receives frames on the net device (its own driver: receive queue only,
/// [`NET_RX_BUFS`] buffers posted and reposted) until one of the
/// `virtio-soak` test frames (ethertype 0x88B5, magic "QVN1") arrives from
/// another VM, within [`AWAIT_MS`].
fn await_soak(env: &Env) -> TestResult {
    case(env, "await-soak", Kind::Net, |c| {
        let f = c.t.bdf;
        c.negotiate(F_VERSION_1)?;
        let rx = Ring::new(c.dma, NET_RX_RING, QSIZE);
        ensure!(
            c.t.setup_queue(NET_RX, &rx),
            "{f}: receive queue not enabled"
        );
        let buf = |i: u16| NET_RX_BUF + u64::from(i) * u64::from(NET_RX_LEN);
        for i in 0..NET_RX_BUFS {
            rx.set_desc(i, c.a(buf(i)), NET_RX_LEN, D_WRITE, 0);
            rx.push_avail(i);
        }
        c.t.driver_ok();
        c.t.notify(NET_RX);
        let bound = tsc_bound_ms(env, AWAIT_MS);
        let t0 = cpu::rdtsc();
        let mut seen = 0u16;
        loop {
            ensure!(
                cpu::rdtsc().wrapping_sub(t0) < bound,
                "{f}: no virtio-soak frame within {AWAIT_MS} ms ({seen} other frames, status {:#04x})",
                c.t.status()
            );
            if rx.used_idx() == seen {
                core::hint::spin_loop();
                continue;
            }
            let (head, len) = rx.used_elem(seen);
            seen = seen.wrapping_add(1);
            ensure!(
                head < u32::from(NET_RX_BUFS) && len <= NET_RX_LEN,
                "{f}: used head {head} length {len}"
            );
            let at = buf(head as u16);
            let mut hdr = [0u8; 32];
            c.dma.read(at, &mut hdr);
            let frame = &hdr[NET_HDR as usize..];
            if len as u64 >= NET_HDR + 18
                && frame[12..14] == [0x88, 0xB5]
                && frame[14..18] == *b"QVN1"
            {
                let ms = cpu::rdtsc().wrapping_sub(t0) / tsc_bound_ms(env, 1);
                return Ok(Answer::Other(msg!(
                    "a virtio-soak frame from {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} after {ms} ms ({seen} frames)",
                    frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]
                )));
            }
            rx.push_avail(head as u16);
            c.t.notify(NET_RX);
        }
    })
}

// ---------------------------------------------------------------- summary

/// The answers counted over the cases; both devices still work.
fn summary(env: &Env) -> TestResult {
    let n = |a: &AtomicU32| a.load(Ordering::Relaxed);
    out!(
        "virtio-hostile: answers: {} DEVICE_NEEDS_RESET, {} error status, {} ignored, {} served",
        n(&NEEDS_RESET_ANSWERS),
        n(&ERROR_STATUS_ANSWERS),
        n(&IGNORED_ANSWERS),
        n(&OTHER_ANSWERS)
    );
    // One more proof each, outside any case.
    case(env, "summary-blk", Kind::Blk, |_| {
        Ok(Answer::Other(msg!("sector 0 reads right")))
    })?;
    case(env, "summary-net", Kind::Net, |_| {
        Ok(Answer::Other(msg!("a frame goes out")))
    })
}
