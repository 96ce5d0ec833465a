//! `qmsg`: the Quercus message channel from Linux userspace, with the stock kernel's
//! `uio_pci_generic` and no module of its own. It finds the ivshmem device (1af4:1110), maps its
//! registers (BAR 0) and the shared region (BAR 2) through sysfs, and takes doorbell interrupts
//! (INTx) from `/dev/uioN`. The channel's protocol is the `msgchan` crate's.
//!
//! ```text
//! qmsg exchange [--count N] [--poll] [--dev /sys/bus/pci/devices/0000:00:1f.0]
//!     sends N messages (default 10000) and receives N, each checked (msgchan::exchange);
//!     prints `qmsg: exchange peer=P sent=N received=N doorbells=D waits=W irqs=I ms=T`
//! qmsg send TEXT...     sends one message per argument
//! qmsg recv [--count N] prints N received messages (default: until interrupted), one per line
//! ```
//!
//! Without `--poll` a reader with nothing to read sleeps until the peer's doorbell (it tells
//! the peer through the channel's wait flag); with `--poll` it spins. Unless `--poll` is given,
//! a device that has no uio driver yet is bound to `uio_pci_generic` (its `new_id`; the module
//! must be loaded).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use msgchan::{exchange, Channel, Notify, Shared};

/// ivshmem BAR 0 registers.
const REG_INTR_MASK: usize = 0x0;
const REG_INTR_STATUS: usize = 0x4;
const REG_IV_POSITION: usize = 0x8;
const REG_DOORBELL: usize = 0xC;

/// A shared mapping of a sysfs PCI resource file.
struct Mapping {
    base: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(path: &Path) -> Result<Self, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let len = file
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len() as usize;
        if len == 0 {
            return Err(format!("{}: empty resource", path.display()));
        }
        // SAFETY: a fresh shared mapping of the whole file; the kernel checks the range against
        // the BAR. Nothing else in this process maps it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!(
                "{}: mmap: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(Mapping {
            base: base.cast(),
            len,
        })
    }

    fn word(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= self.len, "offset {off:#x}");
        // SAFETY: in bounds and aligned (checked above); the mapping lives as long as `self`;
        // the other VM writes the same memory, hence atomic access only.
        unsafe { &*self.base.add(off).cast::<AtomicU32>() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; no reference outlives `self`.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}

impl Shared for Mapping {
    fn size(&self) -> usize {
        self.len
    }
    fn load(&self, off: usize) -> u32 {
        self.word(off).load(Ordering::Acquire)
    }
    fn store(&self, off: usize, value: u32) {
        self.word(off).store(value, Ordering::Release)
    }
    fn read(&self, off: usize, buf: &mut [u8]) {
        assert!(off + buf.len() <= self.len);
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: in bounds (checked above); a volatile byte read of shared memory.
            *b = unsafe { self.base.add(off + i).read_volatile() };
        }
    }
    fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.len);
        for (i, &b) in data.iter().enumerate() {
            // SAFETY: in bounds (checked above); a volatile byte write of shared memory.
            unsafe { self.base.add(off + i).write_volatile(b) };
        }
    }
    fn fence(&self) {
        fence(Ordering::SeqCst);
    }
}

/// The ivshmem device: registers, region, and its uio file (doorbell mode).
struct Device {
    regs: Mapping,
    shm: Mapping,
    uio: Option<File>,
    /// The function's configuration space (sysfs `config`): uio_pci_generic's handler masks
    /// INTx with Command bit 10 (Interrupt Disable), which userspace clears to take the next.
    config: Option<File>,
    /// Interrupts taken, as uio counts them.
    irqs: std::cell::Cell<u32>,
}

impl Device {
    fn open(dev: &Path, poll: bool) -> Result<Self, String> {
        let regs = Mapping::new(&dev.join("resource0"))?;
        let shm = Mapping::new(&dev.join("resource2"))?;
        let uio = if poll {
            None
        } else {
            bind_uio(dev)?;
            let name = std::fs::read_dir(dev.join("uio"))
                .map_err(|e| {
                    format!(
                        "{}/uio: {e} (bind the device to uio_pci_generic, or use --poll)",
                        dev.display()
                    )
                })?
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .next()
                .ok_or_else(|| format!("{}/uio is empty", dev.display()))?;
            let path = Path::new("/dev").join(name);
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Some(f)
        };
        let config = match uio {
            None => None,
            Some(_) => Some(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(dev.join("config"))
                    .map_err(|e| format!("{}/config: {e}", dev.display()))?,
            ),
        };
        let d = Device {
            regs,
            shm,
            uio,
            config,
            irqs: std::cell::Cell::new(0),
        };
        if d.uio.is_some() {
            d.regs.store(REG_INTR_MASK, u32::MAX);
            let _ = d.regs.load(REG_INTR_STATUS);
            d.arm()?;
        }
        Ok(d)
    }

    fn peer_id(&self) -> usize {
        self.regs.load(REG_IV_POSITION) as usize
    }

    fn ring(&self, peer: usize) {
        self.regs.store(REG_DOORBELL, (peer as u32) << 16);
    }

    /// Lets the function raise INTx again: clears Command's Interrupt Disable bit.
    fn arm(&self) -> Result<(), String> {
        use std::os::unix::fs::FileExt;
        const COMMAND: u64 = 4;
        const INTX_DISABLE: u16 = 1 << 10;
        let Some(f) = self.config.as_ref() else {
            return Ok(());
        };
        let mut cmd = [0u8; 2];
        f.read_exact_at(&mut cmd, COMMAND)
            .map_err(|e| format!("reading the Command register: {e}"))?;
        let v = u16::from_le_bytes(cmd) & !INTX_DISABLE;
        f.write_all_at(&v.to_le_bytes(), COMMAND)
            .map_err(|e| format!("re-enabling INTx in the Command register: {e}"))
    }

    /// Sleeps until the doorbell interrupt or `timeout`; clears and re-arms it.
    fn wait(&self, timeout: Duration) -> Result<(), String> {
        let Some(mut f) = self.uio.as_ref() else {
            std::hint::spin_loop();
            return Ok(());
        };
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        if n > 0 {
            let mut count = [0u8; 4];
            f.read_exact(&mut count)
                .map_err(|e| format!("reading the uio interrupt count: {e}"))?;
            self.irqs.set(u32::from_ne_bytes(count));
            // Clear the device's status (the INTx line drops), then let uio take the next one.
            let _ = self.regs.load(REG_INTR_STATUS);
            self.arm()?;
        }
        Ok(())
    }
}

/// Binds `dev` to `uio_pci_generic` unless it has a uio device already, and waits (5 s at most)
/// for its `uio` directory.
fn bind_uio(dev: &Path) -> Result<(), String> {
    if dev.join("uio").is_dir() {
        return Ok(());
    }
    let new_id = Path::new("/sys/bus/pci/drivers/uio_pci_generic/new_id");
    // An id added before (another device) makes this write fail with EEXIST: harmless.
    if let Err(e) = std::fs::write(new_id, "1af4 1110") {
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(format!(
                "{}: {e} (is uio_pci_generic loaded?)",
                new_id.display()
            ));
        }
    }
    let t0 = Instant::now();
    while !dev.join("uio").is_dir() {
        if t0.elapsed() > Duration::from_secs(5) {
            return Err(format!("uio_pci_generic did not bind {}", dev.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The first ivshmem device in sysfs.
fn find_device() -> Result<PathBuf, String> {
    let dir = Path::new("/sys/bus/pci/devices");
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|d| {
            read(d.join("vendor")).trim() == "0x1af4" && read(d.join("device")).trim() == "0x1110"
        })
        .ok_or_else(|| "no ivshmem device (1af4:1110) in /sys/bus/pci/devices".to_string())
}

struct Args {
    command: String,
    count: Option<u32>,
    poll: bool,
    dev: Option<PathBuf>,
    words: Vec<String>,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        command: String::new(),
        count: None,
        poll: false,
        dev: None,
        words: Vec::new(),
    };
    let mut it = args.into_iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "--count" => {
                let v = it.next().ok_or("--count needs a number")?;
                a.count = Some(
                    v.parse()
                        .map_err(|_| format!("--count {v}: not a number"))?,
                );
            }
            "--poll" => a.poll = true,
            "--dev" => a.dev = Some(it.next().ok_or("--dev needs a path")?.into()),
            _ if a.command.is_empty() => a.command = w,
            _ => a.words.push(w),
        }
    }
    if a.command.is_empty() {
        return Err(
            "usage: qmsg exchange|send|recv [--count N] [--poll] [--dev PATH] [TEXT...]".into(),
        );
    }
    Ok(a)
}

/// Opens the channel as this VM's peer id and waits for the peer to attach (what is sent
/// before that is dropped when it does), 60 s at most for each.
fn open_channel(dev: &Device) -> Result<Channel<&Mapping>, String> {
    let me = dev.peer_id();
    let t0 = Instant::now();
    loop {
        match Channel::open(&dev.shm, me) {
            Ok(c) => {
                while !c.peer_attached() {
                    if t0.elapsed() > Duration::from_secs(60) {
                        return Err(format!("peer {} never attached", 1 - me));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                return Ok(c);
            }
            Err(msgchan::ChannelError::NotFormatted) if t0.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("peer {me}: {e}")),
        }
    }
}

/// Sends `msg`, waiting (and ringing) as needed; returns the doorbells rung.
fn send_one(
    ch: &mut Channel<&Mapping>,
    dev: &Device,
    msg: &[u8],
    deadline: Instant,
) -> Result<u64, String> {
    loop {
        match ch.send(msg).map_err(|e| e.to_string())? {
            Some(Notify::Doorbell) => {
                dev.ring(1 - ch.me());
                return Ok(1);
            }
            Some(Notify::NotNeeded) => return Ok(0),
            None if Instant::now() > deadline => return Err("the peer stopped reading".into()),
            None => std::hint::spin_loop(),
        }
    }
}

fn exchange(dev: &Device, count: u32) -> Result<(), String> {
    let mut ch = open_channel(dev)?;
    let me = ch.me();
    let peer = 1 - me;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(600);
    let (mut sent, mut got, mut rung, mut waits) = (0u32, 0u32, 0u64, 0u64);
    let mut out = [0u8; exchange::MAX_TEST_MESSAGE];
    let mut buf = vec![0u8; ch.max_message()];
    while sent < count || got < count {
        if Instant::now() > deadline {
            return Err(format!("timed out: sent {sent}, received {got} of {count}"));
        }
        let mut progress = false;
        if sent < count {
            let len = exchange::message(me, sent, &mut out);
            if let Some(n) = ch.send(&out[..len]).map_err(|e| e.to_string())? {
                if n == Notify::Doorbell {
                    dev.ring(peer);
                    rung += 1;
                }
                sent += 1;
                progress = true;
            }
        }
        if got < count {
            if let Some(len) = ch.recv(&mut buf).map_err(|e| e.to_string())? {
                exchange::check(peer, got, &buf[..len])
                    .map_err(|m| format!("message {got} from peer {peer}: {m}"))?;
                got += 1;
                progress = true;
            }
        }
        // Nothing moved and everything is sent: sleep until the peer rings.
        if !progress && sent == count && dev.uio.is_some() {
            if ch.prepare_wait() {
                waits += 1;
                dev.wait(Duration::from_millis(100))?;
            }
            ch.end_wait();
        }
    }
    println!(
        "qmsg: exchange peer={me} sent={sent} received={got} doorbells={rung} waits={waits} irqs={} ms={}",
        dev.irqs.get(),
        t0.elapsed().as_millis()
    );
    Ok(())
}

fn run(args: Args) -> Result<(), String> {
    let dev_path = match args.dev {
        Some(d) => d,
        None => find_device()?,
    };
    let dev = Device::open(&dev_path, args.poll)?;
    match args.command.as_str() {
        "exchange" => exchange(&dev, args.count.unwrap_or(10_000)),
        "send" => {
            let mut ch = open_channel(&dev)?;
            let deadline = Instant::now() + Duration::from_secs(60);
            for w in &args.words {
                send_one(&mut ch, &dev, w.as_bytes(), deadline)?;
            }
            Ok(())
        }
        "recv" => {
            let mut ch = open_channel(&dev)?;
            let mut buf = vec![0u8; ch.max_message()];
            let mut n = 0u32;
            while args.count.is_none_or(|c| n < c) {
                match ch.recv(&mut buf).map_err(|e| e.to_string())? {
                    Some(len) => {
                        println!("{}", String::from_utf8_lossy(&buf[..len]));
                        n += 1;
                    }
                    None => {
                        if ch.prepare_wait() {
                            dev.wait(Duration::from_millis(100))?;
                        }
                        ch.end_wait();
                    }
                }
            }
            Ok(())
        }
        other => Err(format!("unknown command {other:?} (exchange, send, recv)")),
    }
}

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qmsg: {e}");
            println!("qmsg: error {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Result<Args, String> {
        parse(words.iter().map(|w| w.to_string()))
    }

    #[test]
    fn command_lines() {
        let a = args(&["exchange", "--count", "5", "--poll"]).unwrap();
        assert_eq!(
            (a.command.as_str(), a.count, a.poll),
            ("exchange", Some(5), true)
        );
        let a = args(&["send", "hello", "--dev", "/x", "world"]).unwrap();
        assert_eq!(a.words, ["hello", "world"]);
        assert_eq!(a.dev, Some(PathBuf::from("/x")));
        assert!(args(&[]).is_err());
        assert!(args(&["recv", "--count", "x"]).is_err());
        assert!(args(&["recv", "--count"]).is_err());
    }
}
