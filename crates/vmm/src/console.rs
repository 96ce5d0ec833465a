//! A VM's console queues between its vCPUs and pCPU 0: bytes the guest wrote wait for pCPU 0 to
//! show them, bytes typed for the guest wait for its vUART to take them, and the overview lines
//! being assembled (one per console: the vUART's and the virtio console's, whose bytes travel in
//! the device's own pipe). Nothing here ever waits: a VM whose output nobody reads keeps running
//! and its oldest bytes are dropped.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use shell::Port;
use spin::Mutex;

/// Most console bytes a VM may have waiting for pCPU 0; beyond that the
/// oldest are dropped (a VM never waits for its console to be read).
pub const OUT_QUEUE_MAX: usize = 64 * 1024;

/// Most typed bytes kept for a VM whose vUART is not reading.
pub const TYPED_MAX: usize = 4096;

/// Longest overview line kept; the rest of a longer line is dropped.
pub const LINE_MAX: usize = 512;

/// The queues of one VM.
#[derive(Debug, Default)]
pub struct ConsoleQueues {
    /// Console bytes the guest wrote, waiting for pCPU 0 to show them.
    out: Mutex<VecDeque<u8>>,
    /// Bytes queued in `out` or taken but not yet printed by pCPU 0.
    unprinted: AtomicU64,
    /// Bytes typed for the guest, fed to its vUART as its FIFO drains.
    typed: Mutex<VecDeque<u8>>,
    /// The vUART's line being assembled for the prefixed overview (pCPU 0 only).
    line: Mutex<String>,
    /// The virtio console's line likewise.
    hvc_line: Mutex<String>,
}

impl ConsoleQueues {
    /// Empty queues.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a VM's console bytes for pCPU 0 (called on the VM's pCPU).
    pub fn push_out(&self, bytes: &[u8]) {
        let mut q = self.out.lock();
        for &b in bytes {
            if q.len() >= OUT_QUEUE_MAX {
                q.pop_front();
                self.unprinted.fetch_sub(1, Ordering::AcqRel);
            }
            q.push_back(b);
            self.unprinted.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Takes the console bytes waiting (pCPU 0).
    pub fn take_output(&self, into: &mut Vec<u8>) {
        into.extend(self.out.lock().drain(..));
    }

    /// pCPU 0 printed (or stored) `n` bytes taken with [`ConsoleQueues::take_output`].
    pub fn printed(&self, n: usize) {
        self.unprinted.fetch_sub(n as u64, Ordering::AcqRel);
    }

    /// Bytes written by the guest and not printed yet.
    pub fn unprinted(&self) -> u64 {
        self.unprinted.load(Ordering::Acquire)
    }

    /// Queues a byte typed at the console for the guest (pCPU 0); false if the queue is full
    /// (the byte is dropped).
    pub fn input(&self, byte: u8) -> bool {
        let mut q = self.typed.lock();
        if q.len() < TYPED_MAX {
            q.push_back(byte);
            true
        } else {
            false
        }
    }

    /// Hands typed bytes to `take` in order while it accepts them (the vUART's receive FIFO has
    /// room); true if any was taken.
    pub fn feed_typed(&self, mut take: impl FnMut(u8) -> bool) -> bool {
        let mut q = self.typed.lock();
        let mut fed = false;
        while let Some(&b) = q.front() {
            if !take(b) {
                break;
            }
            q.pop_front();
            fed = true;
        }
        fed
    }

    /// Whether typed bytes wait.
    pub fn has_typed(&self) -> bool {
        !self.typed.lock().is_empty()
    }

    /// Assembles `bytes` the VM wrote to console `port` into whole lines for the overview shown
    /// while no VM console is attached, and hands each complete line to `emit` (control and
    /// non-ASCII bytes become '.', carriage returns vanish). Each port has its own partial line.
    pub fn lines(&self, port: Port, bytes: &[u8], mut emit: impl FnMut(&str)) {
        let mut line = match port {
            Port::Uart => self.line.lock(),
            Port::Hvc => self.hvc_line.lock(),
        };
        for &b in bytes {
            match b {
                b'\n' => {
                    emit(line.as_str());
                    line.clear();
                }
                b'\r' => {}
                b if line.len() < LINE_MAX => line.push(if b.is_ascii() && !b.is_ascii_control() {
                    b as char
                } else {
                    '.'
                }),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;
    use alloc::vec;

    use super::*;

    #[test]
    fn output_waits_for_pcpu0_and_counts_until_printed() {
        let c = ConsoleQueues::new();
        c.push_out(b"hello");
        assert_eq!(c.unprinted(), 5);
        let mut out = Vec::new();
        c.take_output(&mut out);
        assert_eq!(out, b"hello");
        assert_eq!(c.unprinted(), 5, "taken is not printed");
        c.printed(out.len());
        assert_eq!(c.unprinted(), 0);
    }

    #[test]
    fn a_full_output_queue_drops_the_oldest_bytes() {
        let c = ConsoleQueues::new();
        c.push_out(&vec![b'a'; OUT_QUEUE_MAX]);
        c.push_out(b"zz");
        assert_eq!(c.unprinted(), OUT_QUEUE_MAX as u64);
        let mut out = Vec::new();
        c.take_output(&mut out);
        assert_eq!(out.len(), OUT_QUEUE_MAX);
        assert_eq!(&out[out.len() - 2..], b"zz");
    }

    #[test]
    fn typed_bytes_go_in_order_while_the_uart_takes_them() {
        let c = ConsoleQueues::new();
        for &b in b"abc" {
            assert!(c.input(b));
        }
        let mut got = Vec::new();
        assert!(c.feed_typed(|b| {
            if got.len() < 2 {
                got.push(b);
                true
            } else {
                false
            }
        }));
        assert_eq!(got, b"ab");
        assert!(c.has_typed());
        assert!(c.feed_typed(|b| {
            got.push(b);
            true
        }));
        assert_eq!(got, b"abc");
        assert!(!c.feed_typed(|_| true), "nothing left");
        for _ in 0..TYPED_MAX {
            c.input(b'x');
        }
        assert!(!c.input(b'y'), "a full queue drops the byte");
    }

    #[test]
    fn lines_are_whole_and_cleaned() {
        let c = ConsoleQueues::new();
        let mut lines = Vec::new();
        c.lines(Port::Uart, b"one\r\ntw", |l| lines.push(l.to_string()));
        c.lines(Port::Uart, b"o\x1b\xff\n", |l| lines.push(l.to_string()));
        assert_eq!(lines, ["one", "two.."]);
        lines.clear();
        c.lines(Port::Uart, &vec![b'x'; LINE_MAX + 10], |_| {});
        c.lines(Port::Uart, b"\n", |l| lines.push(l.to_string()));
        assert_eq!(lines[0].len(), LINE_MAX);
    }

    #[test]
    fn each_port_assembles_its_own_lines() {
        let c = ConsoleQueues::new();
        let mut lines = Vec::new();
        c.lines(Port::Uart, b"com", |l| {
            lines.push((Port::Uart, l.to_string()))
        });
        c.lines(Port::Hvc, b"hvc\r\nhv", |l| {
            lines.push((Port::Hvc, l.to_string()))
        });
        c.lines(Port::Uart, b"1\n", |l| {
            lines.push((Port::Uart, l.to_string()))
        });
        c.lines(Port::Hvc, b"c0\n", |l| {
            lines.push((Port::Hvc, l.to_string()))
        });
        assert_eq!(
            lines,
            [
                (Port::Hvc, "hvc".to_string()),
                (Port::Uart, "com1".to_string()),
                (Port::Hvc, "hvc0".to_string()),
            ]
        );
    }
}
