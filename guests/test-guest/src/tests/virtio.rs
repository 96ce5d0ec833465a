//! The `virtio-*` tests (command-line word `virtio`; `virtio-net-peer` for
//! the two-VM exchange): the `virtio-drivers` crate, an independent
//! guest-side implementation, drives the VM's modern virtio-pci devices
//! (vendor 0x1AF4, device 0x1040 + type, revision >= 1) found on bus 0
//! through ports 0xCF8/0xCFC. The drivers poll their used rings (no
//! interrupts); every wait is bounded by the TSC, so a device that never
//! answers fails its test instead of hanging it (except inside the crate's
//! own blocking calls: the rng and console requests and the device reset
//! when a driver is dropped).
//!
//! Lines besides `TEST`: `virtio-enum: <bdf> <vendor>:<device> rev <r> <type>`
//! per device, and one informational line per device the other tests use.
//! What the console test sends ([`CONSOLE_LINE`]) appears on the VM's
//! virtio console, not on COM1: the harness looks for it there.

use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::device::console::VirtIOConsole;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::device::rng::VirtIORng;
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::DeviceType;
use virtio_drivers::Error as VirtioError;

use super::Outcome::Pass;
use super::{tsc_bound_ms, TestResult};
use crate::msg::{Ascii, Msg};
use crate::pci::{Bdf, ConfigSpace, PortIo, CMD_BUS_MASTER, COMMAND};
use crate::virtio::{self, GuestHal, MODERN_ID_BASE};
use crate::{cpu, msg, out, Env, Global};

/// The tests of the `virtio` mode, in the order they run.
pub const TESTS: &[(&str, super::TestFn)] = &[
    ("virtio-enum", enumerate),
    ("virtio-blk", blk),
    ("virtio-rng", rng),
    ("virtio-net", net),
    ("virtio-net-peer-loop", net_peer_loop),
    ("virtio-console", console),
];

/// The tests of the `virtio-net-peer` mode.
pub const PEER_TESTS: &[(&str, super::TestFn)] =
    &[("virtio-enum", enumerate), ("virtio-net-peer", net_peer)];

/// The tests of the `virtio-soak` mode.
pub const SOAK_TESTS: &[(&str, super::TestFn)] =
    &[("virtio-enum", enumerate), ("virtio-soak", soak)];

/// How long one request (a block transfer, a frame's transmission) may take.
const REQUEST_MS: u64 = 2000;

/// Waits until `poll` returns `Some(token)` or about `ms` milliseconds passed.
fn wait_token(env: &Env, ms: u64, token: u16, mut poll: impl FnMut() -> Option<u16>) -> bool {
    let bound = tsc_bound_ms(env, ms);
    let t0 = cpu::rdtsc();
    loop {
        if poll() == Some(token) {
            return true;
        }
        if cpu::rdtsc().wrapping_sub(t0) > bound {
            return false;
        }
        core::hint::spin_loop();
    }
}

/// Stops a device that did not complete a request in time: bus mastering
/// off, so that it cannot write into buffers that are about to go away.
fn stop_dma(f: Bdf) {
    let cmd = PortIo.read16(f, COMMAND);
    PortIo.write16(f, COMMAND, cmd & !CMD_BUS_MASTER);
}

fn open(f: Bdf) -> Result<PciTransport, Msg> {
    virtio::transport(f).map_err(|e| msg!("{f}: virtio-pci transport: {e}"))
}

/// The first modern device of `kind`.
fn first_of(kind: DeviceType) -> Result<Bdf, Msg> {
    let (list, n) = virtio::devices_of(kind);
    ensure!(
        n > 0,
        "no virtio {} device on bus 0",
        virtio::kind_name(Some(kind))
    );
    Ok(list[0])
}

// ---------------------------------------------------------------- enumeration

/// Every virtio function on bus 0: a modern device ID of a known type,
/// revision >= 1, and a transport that comes up (the common, notify and
/// ISR capabilities present, their BAR assigned and mapped).
pub fn enumerate(_env: &Env) -> TestResult {
    virtio::fresh_start();
    let (found, n) = virtio::scan();
    ensure!(n > 0, "no function with vendor 0x1af4 on bus 0");
    for f in found[..n].iter().flatten() {
        out!(
            "virtio-enum: {} {:04x}:{:04x} rev {} {}",
            f.bdf,
            virtio::VENDOR,
            f.device_id,
            f.revision,
            f.kind_name()
        );
    }
    for f in found[..n].iter().flatten() {
        ensure!(
            f.device_id >= MODERN_ID_BASE && f.kind.is_some(),
            "{}: device ID {:#06x} is not a modern virtio device (0x1040 + a known type)",
            f.bdf,
            f.device_id
        );
        ensure!(
            f.revision >= 1,
            "{}: revision {} (a modern device has revision >= 1)",
            f.bdf,
            f.revision
        );
        ensure!(f.bdf.func == 0, "{}: a virtio function other than 0", f.bdf);
        // Dropping the transport resets the device: it is left as found.
        drop(open(f.bdf)?);
    }
    ensure!(
        virtio::dma_pages_in_use() == 0,
        "DMA pages still allocated after the transports were dropped"
    );
    Ok(Pass)
}

// ---------------------------------------------------------------- blk

/// The `testdisk` module's content (xtask `testdisk_image`): every 512-byte
/// sector starts with [`DISK_MAGIC`] and its LBA (u64 little-endian), then
/// bytes that depend on the LBA and the offset.
const DISK_MAGIC: &[u8; 8] = b"QTESTDSK";

pub(super) fn disk_byte(lba: u64, i: usize) -> u8 {
    match i {
        0..8 => DISK_MAGIC[i],
        8..16 => lba.to_le_bytes()[i - 8],
        _ => (lba as u32).wrapping_mul(31).wrapping_add(i as u32 * 7) as u8,
    }
}

/// The first offset where `sector` differs from the testdisk pattern of `lba`.
fn pattern_mismatch(lba: u64, sector: &[u8]) -> Option<usize> {
    (0..SECTOR_SIZE).find(|&i| sector[i] != disk_byte(lba, i))
}

/// Sectors read in one request at the start of the disk.
const FIRST_SECTORS: usize = 8;

pub(super) type Blk = VirtIOBlk<GuestHal, PciTransport>;

/// One block request with a deadline: `Ok(device status)`, or `Err` if the
/// device did not complete it in time (its DMA is then stopped).
pub(super) fn blk_io(
    env: &Env,
    f: Bdf,
    dev: &mut Blk,
    write: bool,
    lba: u64,
    buf: &mut [u8],
) -> Result<Result<(), VirtioError>, Msg> {
    let mut req = BlkReq::default();
    let mut resp = BlkResp::default();
    let what = if write { "write" } else { "read" };
    let Ok(block) = usize::try_from(lba) else {
        fail!("LBA {lba} too large");
    };
    // SAFETY: req, buf and resp are not touched until the request completed
    // (complete_*), or until the device's DMA was stopped (timeout).
    let token = unsafe {
        if write {
            dev.write_blocks_nb(block, &mut req, buf, &mut resp)
        } else {
            dev.read_blocks_nb(block, &mut req, buf, &mut resp)
        }
    };
    let token = match token {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    if !wait_token(env, REQUEST_MS, token, || dev.peek_used()) {
        stop_dma(f);
        fail!(
            "{f}: {what} of {} sector(s) at LBA {lba}: no completion within {REQUEST_MS} ms",
            buf.len() / SECTOR_SIZE
        );
    }
    // SAFETY: the same req, buf and resp as the request the token names.
    Ok(unsafe {
        if write {
            dev.complete_write_blocks(token, &req, buf, &mut resp)
        } else {
            dev.complete_read_blocks(token, &req, buf, &mut resp)
        }
    })
}

/// A request that must succeed.
fn blk_ok(
    env: &Env,
    f: Bdf,
    dev: &mut Blk,
    write: bool,
    lba: u64,
    buf: &mut [u8],
) -> TestResultUnit {
    let what = if write { "write" } else { "read" };
    match blk_io(env, f, dev, write, lba, buf)? {
        Ok(()) => Ok(()),
        Err(e) => fail!(
            "{f}: {what} of {} sector(s) at LBA {lba} failed: {e}",
            buf.len() / SECTOR_SIZE
        ),
    }
}

/// A request that the device must refuse with VIRTIO_BLK_S_IOERR.
fn blk_ioerr(
    env: &Env,
    f: Bdf,
    dev: &mut Blk,
    write: bool,
    lba: u64,
    buf: &mut [u8],
    why: &str,
) -> TestResultUnit {
    let what = if write { "write" } else { "read" };
    match blk_io(env, f, dev, write, lba, buf)? {
        Err(VirtioError::IoError) => Ok(()),
        Ok(()) => fail!(
            "{f}: {what} of {} sector(s) at LBA {lba} ({why}) succeeded",
            buf.len() / SECTOR_SIZE
        ),
        Err(e) => {
            fail!("{f}: {what} at LBA {lba} ({why}) failed with \"{e}\", not an I/O error status")
        }
    }
}

type TestResultUnit = Result<(), Msg>;

/// A sector of pseudo-random bytes from a TSC seed (xorshift): what one run
/// writes differs from what an earlier run may have left.
fn random_sector(seed: u64) -> [u8; SECTOR_SIZE] {
    let mut x = seed | 1;
    let mut s = [0u8; SECTOR_SIZE];
    for chunk in s.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    s
}

/// Each virtio-blk device (it holds the `testdisk` image): the capacity,
/// sectors 0..8 in one request and sector 3 alone, the last sector; a
/// pattern written near the end reads back and the old data is restored
/// (neighbours untouched), or on a read-only device the write fails with
/// an I/O error and the data stays; requests past the end fail with an
/// I/O error and the device goes on working.
pub fn blk(env: &Env) -> TestResult {
    virtio::fresh_start();
    let (list, n) = virtio::devices_of(DeviceType::Block);
    ensure!(n > 0, "no virtio blk device on bus 0");
    for &f in &list[..n] {
        let mut dev = Blk::new(open(f)?).map_err(|e| msg!("{f}: virtio-blk init: {e}"))?;
        blk_checks(env, f, &mut dev)?;
    }
    Ok(Pass)
}

fn blk_checks(env: &Env, f: Bdf, dev: &mut Blk) -> TestResultUnit {
    let capacity = dev.capacity();
    let readonly = dev.readonly();
    out!(
        "virtio-blk: {f} capacity={capacity} sectors {}",
        if readonly { "read-only" } else { "read-write" }
    );
    ensure!(
        capacity >= 2 * FIRST_SECTORS as u64,
        "{f}: capacity {capacity} sectors (the test disk has 2048)"
    );

    let mut first = [0u8; FIRST_SECTORS * SECTOR_SIZE];
    blk_ok(env, f, dev, false, 0, &mut first)?;
    for (lba, sector) in first.chunks(SECTOR_SIZE).enumerate() {
        if let Some(i) = pattern_mismatch(lba as u64, sector) {
            fail!(
                "{f}: sector {lba} byte {i} reads {:#04x}, the test disk has {:#04x} (sector start \"{}\")",
                sector[i],
                disk_byte(lba as u64, i),
                Ascii(&sector[..16])
            );
        }
    }
    let mut one = [0u8; SECTOR_SIZE];
    blk_ok(env, f, dev, false, 3, &mut one)?;
    ensure!(
        one[..] == first[3 * SECTOR_SIZE..4 * SECTOR_SIZE],
        "{f}: sector 3 read alone differs from sector 3 of the 8-sector read"
    );
    let last = capacity - 1;
    blk_ok(env, f, dev, false, last, &mut one)?;
    if let Some(i) = pattern_mismatch(last, &one) {
        fail!(
            "{f}: last sector {last} byte {i} reads {:#04x}, expected {:#04x}",
            one[i],
            disk_byte(last, i)
        );
    }

    // Near the end: LBA capacity - 2 (its neighbour is the last sector).
    let target = capacity - 2;
    let mut orig = [0u8; SECTOR_SIZE];
    blk_ok(env, f, dev, false, target, &mut orig)?;
    let mut pattern = random_sector(cpu::rdtsc());
    if pattern == orig {
        pattern[0] ^= 0xFF;
    }
    if readonly {
        let mut data = pattern;
        blk_ioerr(env, f, dev, true, target, &mut data, "read-only device")?;
        let mut after = [0u8; SECTOR_SIZE];
        blk_ok(env, f, dev, false, target, &mut after)?;
        ensure!(
            after == orig,
            "{f}: read-only device: sector {target} changed by a refused write"
        );
        out!("virtio-blk: {f} write to the read-only device refused with an I/O error, data unchanged");
    } else {
        let mut data = pattern;
        blk_ok(env, f, dev, true, target, &mut data)?;
        let mut back = [0u8; SECTOR_SIZE];
        blk_ok(env, f, dev, false, target, &mut back)?;
        if let Some(i) = (0..SECTOR_SIZE).find(|&i| back[i] != pattern[i]) {
            fail!(
                "{f}: sector {target} byte {i} reads back {:#04x}, written {:#04x}",
                back[i],
                pattern[i]
            );
        }
        for lba in [target - 1, last] {
            blk_ok(env, f, dev, false, lba, &mut back)?;
            ensure!(
                back == orig_or_pattern(lba),
                "{f}: sector {lba} changed by the write to sector {target}"
            );
        }
        let mut restore = orig;
        blk_ok(env, f, dev, true, target, &mut restore)?;
        blk_ok(env, f, dev, false, target, &mut back)?;
        ensure!(
            back == orig,
            "{f}: sector {target} does not read back its old data after the restore"
        );
    }

    // Past the end: each must fail with an I/O error status.
    let mut data = [0u8; SECTOR_SIZE];
    blk_ioerr(
        env,
        f,
        dev,
        true,
        capacity,
        &mut data,
        "the sector after the last",
    )?;
    blk_ioerr(
        env,
        f,
        dev,
        false,
        capacity,
        &mut data,
        "the sector after the last",
    )?;
    let mut two = [0u8; 2 * SECTOR_SIZE];
    blk_ioerr(
        env,
        f,
        dev,
        false,
        last,
        &mut two,
        "two sectors from the last",
    )?;
    blk_ioerr(
        env,
        f,
        dev,
        false,
        u64::MAX / 1024,
        &mut data,
        "far past the end",
    )?;
    // The device still works.
    blk_ok(env, f, dev, false, 1, &mut one)?;
    ensure!(
        pattern_mismatch(1, &one).is_none(),
        "{f}: sector 1 reads wrong after the failed requests"
    );
    Ok(())
}

/// The test disk's own content of sector `lba` (for neighbours of the
/// written sector, which the test disk's pattern fills).
fn orig_or_pattern(lba: u64) -> [u8; SECTOR_SIZE] {
    let mut s = [0u8; SECTOR_SIZE];
    for (i, b) in s.iter_mut().enumerate() {
        *b = disk_byte(lba, i);
    }
    s
}

// ---------------------------------------------------------------- rng

const RNG_BYTES: usize = 256;

/// Fills `buf` from the device (a request may return fewer bytes).
fn rng_fill(f: Bdf, dev: &mut VirtIORng<GuestHal, PciTransport>, buf: &mut [u8]) -> TestResultUnit {
    let mut got = 0;
    for _ in 0..64 {
        if got == buf.len() {
            return Ok(());
        }
        let n = dev
            .request_entropy(&mut buf[got..])
            .map_err(|e| msg!("{f}: entropy request failed: {e}"))?;
        ensure!(
            n > 0 && n <= buf.len() - got,
            "{f}: entropy request for {} bytes returned {n}",
            buf.len() - got
        );
        got += n;
    }
    ensure!(
        got == buf.len(),
        "{f}: only {got} of {} bytes in 64 requests",
        buf.len()
    );
    Ok(())
}

/// virtio-rng: two reads of 256 bytes differ, neither is all zeros.
pub fn rng(_env: &Env) -> TestResult {
    virtio::fresh_start();
    let f = first_of(DeviceType::EntropySource)?;
    let mut dev =
        VirtIORng::<GuestHal, _>::new(open(f)?).map_err(|e| msg!("{f}: virtio-rng init: {e}"))?;
    let mut a = [0u8; RNG_BYTES];
    let mut b = [0u8; RNG_BYTES];
    rng_fill(f, &mut dev, &mut a)?;
    rng_fill(f, &mut dev, &mut b)?;
    ensure!(
        a.iter().any(|&x| x != 0),
        "{f}: the first 256 bytes are all zero"
    );
    ensure!(
        b.iter().any(|&x| x != 0),
        "{f}: the second 256 bytes are all zero"
    );
    ensure!(a != b, "{f}: two 256-byte reads returned the same bytes");
    let distinct = (0..=255u8).filter(|v| a.contains(v)).count();
    ensure!(
        distinct >= 64,
        "{f}: only {distinct} distinct byte values in 256 random bytes"
    );
    out!("virtio-rng: {f} 2 x {RNG_BYTES} bytes, {distinct} distinct values in the first");
    Ok(Pass)
}

// ---------------------------------------------------------------- net

const NET_QUEUE: usize = 16;
/// Receive buffers per device (virtio-net header + a full Ethernet frame).
const RX_BUFS: usize = 4;
pub(super) const RX_BUF: usize = 2048;
/// The private ethertype of the test frames (IEEE local experimental 1).
const ETHERTYPE: u16 = 0x88B5;
const FRAME_MAGIC: &[u8; 4] = b"QVN1";
/// Ethernet header, then magic, kind, from, to, reserved, seq (u32), body
/// length (u16); the body; a checksum (u32) over everything after the
/// Ethernet header.
const ETH_HDR: usize = 14;
const PAYLOAD_HDR: usize = 14;
const MAX_FRAME: usize = 1514;
const BROADCAST: [u8; 6] = [0xFF; 6];

/// Frame kinds.
const KIND_DATA: u8 = 1;
const KIND_HELLO: u8 = 2;
const KIND_ACK: u8 = 3;

/// Receive buffers of the two devices a test drives at most.
static RX_POOL: Global<[[[u8; RX_BUF]; RX_BUFS]; 2]> = Global::new([[[0; RX_BUF]; RX_BUFS]; 2]);
/// Their transmit buffers (one frame in flight per device).
static TX_POOL: Global<[[u8; RX_BUF]; 2]> = Global::new([[0; RX_BUF]; 2]);

type NetDev = VirtIONetRaw<GuestHal, PciTransport, NET_QUEUE>;

/// A virtio-net device with its receive buffers posted.
pub(super) struct Nic {
    pub(super) bdf: Bdf,
    dev: NetDev,
    /// Which half of [`RX_POOL`] it owns.
    pool: usize,
    tokens: [Option<u16>; RX_BUFS],
    /// The transmission in flight: its token and length.
    tx: Option<(u16, usize)>,
    pub(super) mac: [u8; 6],
    sent: u32,
    received: u32,
}

/// FNV-1a.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811C_9DC5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A decoded test frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Frame {
    src: [u8; 6],
    kind: u8,
    from: u8,
    to: u8,
    seq: u32,
}

/// Builds a test frame of `len` bytes (Ethernet header included) into `out`.
fn build_frame(out: &mut [u8], len: usize, src: [u8; 6], kind: u8, from: u8, to: u8, seq: u32) {
    let body = len - ETH_HDR - PAYLOAD_HDR - 4;
    out[0..6].copy_from_slice(&BROADCAST);
    out[6..12].copy_from_slice(&src);
    out[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    let p = &mut out[ETH_HDR..len];
    p[0..4].copy_from_slice(FRAME_MAGIC);
    p[4] = kind;
    p[5] = from;
    p[6] = to;
    p[7] = 0;
    p[8..12].copy_from_slice(&seq.to_le_bytes());
    p[12..14].copy_from_slice(&(body as u16).to_le_bytes());
    for (i, b) in p[PAYLOAD_HDR..PAYLOAD_HDR + body].iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(13).wrapping_add(i * 3) as u8 ^ kind;
    }
    let sum = checksum(&p[..PAYLOAD_HDR + body]);
    p[PAYLOAD_HDR + body..].copy_from_slice(&sum.to_le_bytes());
}

/// Decodes a received frame: None if it is not a test frame; `Err` if it
/// is one (our ethertype and magic) but damaged.
fn parse_frame(frame: &[u8]) -> Result<Option<Frame>, Msg> {
    if frame.len() < ETH_HDR + PAYLOAD_HDR + 4
        || frame[12..14] != ETHERTYPE.to_be_bytes()
        || frame[ETH_HDR..ETH_HDR + 4] != *FRAME_MAGIC
    {
        return Ok(None);
    }
    let p = &frame[ETH_HDR..];
    let body = usize::from(u16::from_le_bytes([p[12], p[13]]));
    ensure!(
        PAYLOAD_HDR + body + 4 <= p.len(),
        "a test frame of {} bytes claims a {body}-byte body",
        frame.len()
    );
    let end = PAYLOAD_HDR + body;
    let sum = u32::from_le_bytes([p[end], p[end + 1], p[end + 2], p[end + 3]]);
    ensure!(
        checksum(&p[..end]) == sum,
        "a test frame (seq {}) with a bad checksum",
        u32::from_le_bytes([p[8], p[9], p[10], p[11]])
    );
    let mut src = [0u8; 6];
    src.copy_from_slice(&frame[6..12]);
    Ok(Some(Frame {
        src,
        kind: p[4],
        from: p[5],
        to: p[6],
        seq: u32::from_le_bytes([p[8], p[9], p[10], p[11]]),
    }))
}

pub(super) struct Mac(pub(super) [u8; 6]);

impl core::fmt::Display for Mac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Nic {
    /// Opens the virtio-net device `f` with half `pool` (0 or 1) of the buffer pools.
    pub(super) fn open(f: Bdf, pool: usize) -> Result<Self, Msg> {
        let dev = NetDev::new(open(f)?).map_err(|e| msg!("{f}: virtio-net init: {e}"))?;
        let mac = dev.mac_address();
        let mut nic = Nic {
            bdf: f,
            dev,
            pool,
            tokens: [None; RX_BUFS],
            tx: None,
            mac,
            sent: 0,
            received: 0,
        };
        ensure!(
            mac != [0; 6] && mac[0] & 1 == 0,
            "{f}: MAC address {} is zero or multicast",
            Mac(mac)
        );
        for i in 0..RX_BUFS {
            nic.post(i)?;
        }
        Ok(nic)
    }

    fn rx_buf(&mut self, i: usize) -> &mut [u8] {
        // SAFETY: each Nic owns its half of RX_POOL (pool 0 or 1, one Nic
        // each at a time); buffer i is either handed to the device (and not
        // touched until it completes) or used only through this borrow.
        unsafe { &mut *core::ptr::addr_of_mut!((*RX_POOL.get())[self.pool][i]) }
    }

    fn post(&mut self, i: usize) -> TestResultUnit {
        let f = self.bdf;
        let buf: *mut [u8] = self.rx_buf(i);
        // SAFETY: the buffer stays untouched until receive_complete with
        // the token (see rx_buf); the static outlives the device's use of it
        // (the device is reset when the Nic is dropped).
        let token = unsafe { self.dev.receive_begin(&mut *buf) }
            .map_err(|e| msg!("{f}: posting receive buffer {i}: {e}"))?;
        self.tokens[i] = Some(token);
        Ok(())
    }

    /// A frame the device received, copied into `out` (its length), or None.
    pub(super) fn poll(&mut self, out: &mut [u8; RX_BUF]) -> Result<Option<usize>, Msg> {
        let f = self.bdf;
        let Some(token) = self.dev.poll_receive() else {
            return Ok(None);
        };
        let Some(i) = self.tokens.iter().position(|&t| t == Some(token)) else {
            fail!("{f}: the device completed receive token {token}, which is not posted");
        };
        self.tokens[i] = None;
        let buf: *mut [u8] = self.rx_buf(i);
        // SAFETY: the buffer posted with this token, now completed.
        let (hdr, len) = unsafe { self.dev.receive_complete(token, &mut *buf) }
            .map_err(|e| msg!("{f}: completing a receive: {e}"))?;
        ensure!(
            hdr + len <= RX_BUF,
            "{f}: the device reports {len} bytes after a {hdr}-byte header in a {RX_BUF}-byte buffer"
        );
        let data = &self.rx_buf(i)[hdr..hdr + len];
        out[..len].copy_from_slice(data);
        self.received += 1;
        self.post(i)?;
        Ok(Some(len))
    }

    fn tx_buf(&mut self) -> &mut [u8] {
        // SAFETY: as in rx_buf, for the Nic's transmit buffer: written only
        // while no transmission is in flight.
        unsafe { &mut *core::ptr::addr_of_mut!((*TX_POOL.get())[self.pool]) }
    }

    /// Completes the transmission in flight if the device is done with it;
    /// true if none is in flight any more.
    fn reap(&mut self) -> Result<bool, Msg> {
        let f = self.bdf;
        let Some((token, len)) = self.tx else {
            return Ok(true);
        };
        if self.dev.poll_transmit() != Some(token) {
            return Ok(false);
        }
        let tx: *const [u8] = &self.tx_buf()[..len];
        // SAFETY: the buffer and length transmit_begin was given.
        unsafe { self.dev.transmit_complete(token, &*tx) }
            .map_err(|e| msg!("{f}: completing a transmission: {e}"))?;
        self.tx = None;
        self.sent += 1;
        Ok(true)
    }

    /// Starts sending `frame` unless a transmission is still in flight
    /// (then false: the device has not taken the previous frame yet).
    fn try_send(&mut self, frame: &[u8]) -> Result<bool, Msg> {
        let f = self.bdf;
        if !self.reap()? {
            return Ok(false);
        }
        let mut hdr_buf = [0u8; 32];
        let hdr = self
            .dev
            .fill_buffer_header(&mut hdr_buf)
            .map_err(|e| msg!("{f}: virtio-net header: {e}"))?;
        let len = hdr + frame.len();
        ensure!(
            len <= RX_BUF,
            "{f}: a {}-byte frame is too long",
            frame.len()
        );
        let buf = self.tx_buf();
        buf[..hdr].copy_from_slice(&hdr_buf[..hdr]);
        buf[hdr..len].copy_from_slice(frame);
        let tx: *const [u8] = &buf[..len];
        // SAFETY: the Nic's transmit buffer is not written again until reap
        // completed this transmission (or the device was reset on drop).
        let token =
            unsafe { self.dev.transmit_begin(&*tx) }.map_err(|e| msg!("{f}: transmit: {e}"))?;
        self.tx = Some((token, len));
        Ok(true)
    }

    /// Sends `frame` and waits (bounded) for the device to take it.
    pub(super) fn send(&mut self, env: &Env, frame: &[u8]) -> TestResultUnit {
        let f = self.bdf;
        let bound = tsc_bound_ms(env, REQUEST_MS);
        let t0 = cpu::rdtsc();
        let mut started = false;
        loop {
            if !started {
                started = self.try_send(frame)?;
            } else if self.reap()? {
                return Ok(());
            }
            if cpu::rdtsc().wrapping_sub(t0) > bound {
                stop_dma(f);
                fail!("{f}: a transmitted frame not completed within {REQUEST_MS} ms");
            }
            core::hint::spin_loop();
        }
    }
}

/// Sends a DATA frame of `len` bytes on `a` (again every 100 ms) until `b`
/// receives it byte for byte, within 3 s; `a` must never receive its own
/// frames back. With `report`, a line says so.
fn exchange(
    env: &Env,
    a: &mut Nic,
    b: &mut Nic,
    len: usize,
    seq: u32,
    report: bool,
) -> TestResultUnit {
    let mut frame = [0u8; MAX_FRAME];
    build_frame(&mut frame, len, a.mac, KIND_DATA, 0, 0, seq);
    let frame = &frame[..len];
    let mut rx = [0u8; RX_BUF];
    let resend = tsc_bound_ms(env, 100);
    let bound = tsc_bound_ms(env, 3000);
    let t0 = cpu::rdtsc();
    let mut last_send: Option<u64> = None;
    let sent0 = a.sent;
    loop {
        let now = cpu::rdtsc();
        if now.wrapping_sub(t0) > bound {
            fail!(
                "{} -> {}: a {len}-byte frame (seq {seq}) not received within 3 s ({} sends, {} frames received by {})",
                a.bdf,
                b.bdf,
                a.sent - sent0,
                b.received,
                b.bdf
            );
        }
        if last_send.is_none_or(|t| now.wrapping_sub(t) > resend) {
            a.send(env, frame)?;
            last_send = Some(now);
        }
        if let Some(n) = a.poll(&mut rx)? {
            if rx[..n].get(6..12) == Some(&a.mac[..]) {
                fail!("{}: received its own frame back ({n} bytes)", a.bdf);
            }
        }
        let Some(n) = b.poll(&mut rx)? else {
            core::hint::spin_loop();
            continue;
        };
        let Some(got) = parse_frame(&rx[..n])? else {
            continue;
        };
        if got.kind != KIND_DATA || got.seq != seq {
            continue;
        }
        ensure!(
            n == len,
            "{} -> {}: frame seq {seq} arrived with {n} bytes, sent {len}",
            a.bdf,
            b.bdf
        );
        if let Some(i) = (0..len).find(|&i| rx[i] != frame[i]) {
            fail!(
                "{} -> {}: frame seq {seq} byte {i} arrived as {:#04x}, sent {:#04x}",
                a.bdf,
                b.bdf,
                rx[i],
                frame[i]
            );
        }
        if !report {
            return Ok(());
        }
        out!(
            "virtio-net: {} ({}) -> {} ({}): {len}-byte frame seq {seq} intact after {} send(s)",
            a.bdf,
            Mac(a.mac),
            b.bdf,
            Mac(b.mac),
            a.sent - sent0
        );
        return Ok(());
    }
}

/// The first two virtio-net devices (on one switch), opened.
fn two_nics() -> Result<(Nic, Nic), Msg> {
    let (list, n) = virtio::devices_of(DeviceType::Network);
    ensure!(
        n >= 2,
        "{n} virtio-net device(s) on bus 0; the test needs two on one switch"
    );
    let a = Nic::open(list[0], 0)?;
    let b = Nic::open(list[1], 1)?;
    ensure!(
        a.mac != b.mac,
        "{} and {} have the same MAC address {}",
        a.bdf,
        b.bdf,
        Mac(a.mac)
    );
    Ok((a, b))
}

/// Two virtio-net devices on one switch: a 64-byte and a full-size
/// (1514-byte) broadcast frame each way, received byte for byte.
pub fn net(env: &Env) -> TestResult {
    virtio::fresh_start();
    let (mut a, mut b) = two_nics()?;
    let base = (cpu::rdtsc() as u32) & 0xFFFF_0000;
    exchange(env, &mut a, &mut b, 64, base + 1, true)?;
    exchange(env, &mut b, &mut a, 64, base + 2, true)?;
    exchange(env, &mut a, &mut b, MAX_FRAME, base + 3, true)?;
    exchange(env, &mut b, &mut a, MAX_FRAME, base + 4, true)?;
    out!(
        "virtio-net: frames sent {} / {}, received {} / {}",
        a.sent,
        b.sent,
        a.received,
        b.received
    );
    Ok(Pass)
}

// ---------------------------------------------------------------- net peer

/// The peer protocol: each side broadcasts HELLO (from = self, to = peer)
/// every [`PEER_RESEND_MS`] until it has heard the peer, then ACK instead.
/// A side is done when it has heard the peer and received an ACK addressed
/// to it (the peer heard it); it then goes on sending ACKs for
/// [`PEER_LINGER_MS`] so that the peer, too, gets one.
struct Peer {
    id: u8,
    peer: u8,
    heard: bool,
    acked: bool,
    seq: u32,
    last_send: Option<u64>,
    done_at: Option<u64>,
}

const PEER_RESEND_MS: u64 = 100;
const PEER_LINGER_MS: u64 = 1000;
const PEER_TIMEOUT_MS: u64 = 10_000;
const PEER_FRAME: usize = 96;

impl Peer {
    fn new(id: u8, peer: u8) -> Self {
        Peer {
            id,
            peer,
            heard: false,
            acked: false,
            seq: 0,
            last_send: None,
            done_at: None,
        }
    }

    /// One round: send if due (and the last frame went out), take one
    /// received frame. True once done
    /// and the linger time is over.
    fn step(&mut self, env: &Env, nic: &mut Nic) -> Result<bool, Msg> {
        let now = cpu::rdtsc();
        if self
            .last_send
            .is_none_or(|t| now.wrapping_sub(t) > tsc_bound_ms(env, PEER_RESEND_MS))
        {
            let kind = if self.heard { KIND_ACK } else { KIND_HELLO };
            let mut frame = [0u8; PEER_FRAME];
            build_frame(
                &mut frame, PEER_FRAME, nic.mac, kind, self.id, self.peer, self.seq,
            );
            // A peer whose device is not up yet may hold the frame back
            // (flow control): then try again next round.
            if nic.try_send(&frame)? {
                self.seq += 1;
                self.last_send = Some(now);
            }
        }
        let mut rx = [0u8; RX_BUF];
        if let Some(n) = nic.poll(&mut rx)? {
            if let Some(got) = parse_frame(&rx[..n])? {
                ensure!(
                    got.src != nic.mac,
                    "{}: received its own frame back",
                    nic.bdf
                );
                if got.from == self.peer && (got.kind == KIND_HELLO || got.kind == KIND_ACK) {
                    if !self.heard {
                        out!(
                            "virtio-net-peer: {} id {}: heard peer {} ({})",
                            nic.bdf,
                            self.id,
                            self.peer,
                            Mac(got.src)
                        );
                    }
                    self.heard = true;
                    if got.kind == KIND_ACK && got.to == self.id && !self.acked {
                        self.acked = true;
                        out!(
                            "virtio-net-peer: {} id {}: acknowledged by peer {}",
                            nic.bdf,
                            self.id,
                            self.peer
                        );
                    }
                }
            }
        }
        if self.heard && self.acked && self.done_at.is_none() {
            self.done_at = Some(now);
        }
        Ok(self
            .done_at
            .is_some_and(|t| now.wrapping_sub(t) > tsc_bound_ms(env, PEER_LINGER_MS)))
    }

    fn state(&self) -> Msg {
        msg!(
            "id {}: heard peer {}: {}, acknowledged: {}, {} frames queued",
            self.id,
            self.peer,
            self.heard,
            self.acked,
            self.seq
        )
    }
}

fn id_arg(env: &Env, key: &str) -> Result<u8, Msg> {
    let Some(v) = env.boot.word_value(key.as_bytes()) else {
        fail!("no {key}=N on the command line");
    };
    core::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u8>().ok())
        .filter(|&n| n != 0)
        .ok_or_else(|| msg!("{key}={} is not a number 1..255", Ascii(v)))
}

/// Two VMs on one switch (`self-id=M peer-id=N`): the first virtio-net
/// device runs the peer protocol against the other VM, within 10 s.
pub fn net_peer(env: &Env) -> TestResult {
    virtio::fresh_start();
    let id = id_arg(env, "self-id")?;
    let peer = id_arg(env, "peer-id")?;
    ensure!(id != peer, "self-id and peer-id are both {id}");
    let f = first_of(DeviceType::Network)?;
    let mut nic = Nic::open(f, 0)?;
    let mut me = Peer::new(id, peer);
    let bound = tsc_bound_ms(env, PEER_TIMEOUT_MS);
    let t0 = cpu::rdtsc();
    while !me.step(env, &mut nic)? {
        ensure!(
            cpu::rdtsc().wrapping_sub(t0) < bound,
            "{f}: no exchange with the peer within 10 s ({})",
            me.state().as_str()
        );
    }
    Ok(Pass)
}

/// The peer protocol between the two devices of one VM (ids 1 and 2),
/// interleaved: the `virtio-net-peer` code path, checkable with one VM.
pub fn net_peer_loop(env: &Env) -> TestResult {
    virtio::fresh_start();
    let (mut a, mut b) = two_nics()?;
    let (mut pa, mut pb) = (Peer::new(1, 2), Peer::new(2, 1));
    let (mut done_a, mut done_b) = (false, false);
    let bound = tsc_bound_ms(env, PEER_TIMEOUT_MS);
    let t0 = cpu::rdtsc();
    while !(done_a && done_b) {
        ensure!(
            cpu::rdtsc().wrapping_sub(t0) < bound,
            "no exchange within 10 s: {} / {}",
            pa.state().as_str(),
            pb.state().as_str()
        );
        done_a = pa.step(env, &mut a)? || done_a;
        done_b = pb.step(env, &mut b)? || done_b;
    }
    Ok(Pass)
}

// ---------------------------------------------------------------- soak

/// Longest soak (`seconds=N`).
const SOAK_MAX_S: u64 = 3600;

/// `virtio-soak seconds=N`: for N seconds, rounds of work on the VM's first
/// virtio-blk device (read-write) and its first two virtio-net devices (on
/// one switch), each checked: 8 sectors read (a window that moves through
/// the disk) match the test disk's pattern; a random sector written near
/// the end reads back and the old one is restored; a 64-byte frame one way
/// and a full-size one the other arrive byte for byte. Frames of other VMs
/// on the switch are ignored. A line every second shows progress; the
/// summary names the rounds and the slowest one.
pub fn soak(env: &Env) -> TestResult {
    virtio::fresh_start();
    let Some(v) = env.boot.word_value(b"seconds") else {
        fail!("no seconds=N on the command line");
    };
    let Some(secs) = core::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&n| (1..=SOAK_MAX_S).contains(&n))
    else {
        fail!("seconds={} is not a number 1..={SOAK_MAX_S}", Ascii(v));
    };
    let f = first_of(DeviceType::Block)?;
    let mut dev = Blk::new(open(f)?).map_err(|e| msg!("{f}: virtio-blk init: {e}"))?;
    let capacity = dev.capacity();
    ensure!(
        capacity >= 4 * FIRST_SECTORS as u64 && !dev.readonly(),
        "{f}: capacity {capacity} sectors{}: the soak needs a read-write test disk",
        if dev.readonly() { ", read-only" } else { "" }
    );
    let (mut a, mut b) = two_nics()?;
    out!(
        "virtio-soak: {secs} s on {f} ({capacity} sectors), {} and {}",
        a.bdf,
        b.bdf
    );
    let second = tsc_bound_ms(env, 1000);
    let t0 = cpu::rdtsc();
    let mut next_report = t0.wrapping_add(second);
    let mut rounds = 0u64;
    let mut slowest = 0u64;
    let mut requests = 0u64;
    let base = (cpu::rdtsc() as u32) & 0xFFF0_0000;
    // The window of reads stays clear of the written sectors at the end.
    let windows = (capacity - 2 * FIRST_SECTORS as u64) / FIRST_SECTORS as u64;
    while cpu::rdtsc().wrapping_sub(t0) < secs * second {
        let r0 = cpu::rdtsc();
        let lba = (rounds % windows) * FIRST_SECTORS as u64;
        let mut window = [0u8; FIRST_SECTORS * SECTOR_SIZE];
        blk_ok(env, f, &mut dev, false, lba, &mut window)?;
        for (i, sector) in window.chunks(SECTOR_SIZE).enumerate() {
            let at = lba + i as u64;
            if let Some(j) = pattern_mismatch(at, sector) {
                fail!(
                    "{f}: round {rounds}: sector {at} byte {j} reads {:#04x}, expected {:#04x}",
                    sector[j],
                    disk_byte(at, j)
                );
            }
        }
        let target = capacity - 2 - rounds % FIRST_SECTORS as u64;
        let mut orig = [0u8; SECTOR_SIZE];
        blk_ok(env, f, &mut dev, false, target, &mut orig)?;
        let mut pattern = random_sector(r0);
        if pattern == orig {
            pattern[0] ^= 0xFF;
        }
        let mut data = pattern;
        blk_ok(env, f, &mut dev, true, target, &mut data)?;
        let mut back = [0u8; SECTOR_SIZE];
        blk_ok(env, f, &mut dev, false, target, &mut back)?;
        ensure!(
            back == pattern,
            "{f}: round {rounds}: sector {target} does not read back what was written"
        );
        let mut restore = orig;
        blk_ok(env, f, &mut dev, true, target, &mut restore)?;
        blk_ok(env, f, &mut dev, false, target, &mut back)?;
        ensure!(
            back == orig,
            "{f}: round {rounds}: sector {target} not restored"
        );
        requests += 6;
        let seq = base.wrapping_add(2 * rounds as u32);
        exchange(env, &mut a, &mut b, 64, seq, false)?;
        exchange(env, &mut b, &mut a, MAX_FRAME, seq.wrapping_add(1), false)?;
        rounds += 1;
        let now = cpu::rdtsc();
        slowest = slowest.max(now.wrapping_sub(r0));
        if now >= next_report {
            out!(
                "virtio-soak: {} s, {rounds} rounds",
                now.wrapping_sub(t0) / second
            );
            next_report = next_report.wrapping_add(second);
        }
    }
    out!(
        "virtio-soak: done: {rounds} rounds in {secs} s, {requests} block requests, {} frames sent, slowest round {} ms",
        a.sent + b.sent,
        slowest / tsc_bound_ms(env, 1)
    );
    ensure!(rounds > 0, "no round completed");
    Ok(Pass)
}

// ---------------------------------------------------------------- console

/// What the console test writes to port 0 of the virtio console. It never
/// goes to COM1: the harness finds it on the VM's virtio console only.
pub const CONSOLE_LINE: &[u8] = b"VIRTIO-CONSOLE-PORT0 hello from the test guest\n";

/// virtio-console: one line to port 0, accepted by the device.
pub fn console(_env: &Env) -> TestResult {
    virtio::fresh_start();
    let f = first_of(DeviceType::Console)?;
    let mut dev = VirtIOConsole::<GuestHal, _>::new(open(f)?)
        .map_err(|e| msg!("{f}: virtio-console init: {e}"))?;
    dev.send_bytes(CONSOLE_LINE)
        .map_err(|e| msg!("{f}: writing to port 0: {e}"))?;
    out!(
        "virtio-console: {f} port 0 took {} bytes",
        CONSOLE_LINE.len()
    );
    Ok(Pass)
}
