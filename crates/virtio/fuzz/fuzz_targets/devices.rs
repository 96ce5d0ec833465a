//! Fuzz target: a virtio device (block read-write or read-only, network on a
//! switch, console, entropy: the first byte chooses) behind the virtio-pci
//! transport. The target brings the device up the way a driver does (queues
//! of 16 at 0x0/0x100/0x200 for queue 0, +0x400 per queue), then fills guest
//! RAM with the fuzzer's bytes (descriptors, rings, request headers, data)
//! and replays the rest as register accesses (5 bytes each: kind and width,
//! offset, value) including notifications. Nothing may panic, and the disk
//! of a read-only device must never change.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use spin::Mutex;
use vcpu::{GuestMemError, GuestMemory};
use vdev::PciDevice;
use virtio::blk::{BlockBackend, Blk, MemDisk};
use virtio::console::{Console, ConsolePipe};
use virtio::net::Net;
use virtio::rng::{EntropySource, Rng};
use virtio::switch::{NetBackend, PortWaker, Switch};
use virtio::{VirtioDevice, VirtioPci};

const RAM: usize = 16 * 1024;

#[derive(Clone)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl GuestMemory for Shared {
    fn size(&self) -> u64 {
        RAM as u64
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemError> {
        let m = self.0.lock();
        let at = usize::try_from(gpa).unwrap_or(usize::MAX);
        match at.checked_add(buf.len()).and_then(|end| m.get(at..end)) {
            Some(s) => {
                buf.copy_from_slice(s);
                Ok(())
            }
            None => Err(GuestMemError { gpa, len: buf.len() }),
        }
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), GuestMemError> {
        let mut m = self.0.lock();
        let at = usize::try_from(gpa).unwrap_or(usize::MAX);
        match at.checked_add(data.len()).and_then(|end| m.get_mut(at..end)) {
            Some(s) => {
                s.copy_from_slice(data);
                Ok(())
            }
            None => Err(GuestMemError { gpa, len: data.len() }),
        }
    }
}

struct Nobody;
impl PortWaker for Nobody {
    fn wake(&self) {}
}

struct Bytes(u8);
impl EntropySource for Bytes {
    fn fill(&mut self, buf: &mut [u8]) -> usize {
        for b in buf.iter_mut() {
            self.0 = self.0.wrapping_mul(31).wrapping_add(7);
            *b = self.0;
        }
        buf.len()
    }
}

fn w(dev: &mut VirtioPci, off: u64, size: u8, v: u64) {
    let mut out = Vec::new();
    dev.bar_write(0, off, size, v, &mut out);
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let (ram_bytes, ops) = rest.split_at(rest.len().min(RAM));
    let disk = MemDisk::from_vec(vec![0xA5u8; 8 * 512], "fuzz");
    let sw = Switch::new("fuzz");
    let mut peer = sw.attach("peer", [2, 0, 0, 0, 0, 2], Box::new(Nobody));
    let pipe = ConsolePipe::new();
    let read_only = kind % 5 == 1;
    let device: Box<dyn VirtioDevice> = match kind % 5 {
        0 => Box::new(Blk::new(Box::new(disk.clone()))),
        1 => Box::new(Blk::new(Box::new(disk.read_only()))),
        2 => {
            let port = sw.attach("me", [2, 0, 0, 0, 0, 1], Box::new(Nobody));
            Box::new(Net::new([2, 0, 0, 0, 0, 1], Box::new(port)))
        }
        3 => Box::new(Console::new(pipe.clone())),
        _ => Box::new(Rng::new(Box::new(Bytes(kind)))),
    };
    let mem = Shared(Arc::new(Mutex::new(vec![0; RAM])));
    let mut dev = VirtioPci::new(device, Box::new(mem.clone()), 0xC000_0000, 0xC000_4000);
    // Up as a driver brings it: every feature offered, queues of 16.
    w(&mut dev, 0x14, 1, 3);
    for sel in 0..2u64 {
        w(&mut dev, 0x00, 4, sel);
        let f = dev.bar_read(0, 0x04, 4, &mut Vec::new());
        w(&mut dev, 0x08, 4, sel);
        w(&mut dev, 0x0C, 4, f);
    }
    w(&mut dev, 0x14, 1, 0xB);
    for q in 0..dev.device().queue_count() {
        let base = u64::from(q) * 0x400;
        w(&mut dev, 0x16, 2, u64::from(q));
        w(&mut dev, 0x18, 2, 16);
        w(&mut dev, 0x20, 4, base);
        w(&mut dev, 0x28, 4, base + 0x100);
        w(&mut dev, 0x30, 4, base + 0x200);
        w(&mut dev, 0x1C, 2, 1);
    }
    w(&mut dev, 0x14, 1, 0xF);
    mem.0.lock()[..ram_bytes.len()].copy_from_slice(ram_bytes);
    // Frames and console input for the device to deliver.
    peer.send(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 2, 0, 0, 0, 0, 2, 0x88, 0xB5, 1]);
    pipe.lock().push_input(b"fuzz");
    let mut out = Vec::new();
    for op in ops.chunks_exact(5) {
        let size = [1u8, 2, 4, 8][usize::from(op[0] & 3)];
        let off = u64::from(u16::from_le_bytes([op[1], op[2]])) & 0x3FFF;
        let value = u64::from(u16::from_le_bytes([op[3], op[4]]));
        match op[0] >> 2 & 3 {
            0 => {
                dev.bar_read(0, off, size, &mut out);
            }
            1 => dev.bar_write(0, off, size, value, &mut out),
            2 => dev.bar_write(0, 0x3000 + 4 * (off % 3), 2, 0, &mut out),
            _ => dev.poll(&mut out),
        }
        let _ = peer.recv();
    }
    if read_only {
        let mut b = vec![0u8; 8 * 512];
        disk.read(0, &mut b);
        assert!(b.iter().all(|&x| x == 0xA5), "a read-only disk changed");
    }
});
