//! The hypervisor console on COM1: `print!`-style output and the `log` backend.
//!
//! Every log line carries a timestamp, the CPU and the level:
//! `[    1.234567] cpu0 INFO  message`.

use core::fmt::Write;
use core::sync::atomic::{AtomicUsize, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};
use spin::Mutex;

use crate::serial::{Uart16550, COM1};

static UART: Mutex<Uart16550> = Mutex::new(Uart16550::new(COM1));

/// Initializes the UART and installs the logger at `level`.
pub fn init(level: LevelFilter) {
    UART.lock().init();
    // A second call (there is none) would keep the first logger.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Changes the log level at run time.
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

/// Runs `f` with the console. If the lock stays busy (this CPU faulted while
/// holding it, or another CPU died holding it), writes anyway after a bounded
/// wait rather than hang the reporting CPU.
pub fn with_console<R>(f: impl FnOnce(&mut Uart16550) -> R) -> R {
    for _ in 0..10_000_000u32 {
        if let Some(mut guard) = UART.try_lock() {
            return f(&mut guard);
        }
        core::hint::spin_loop();
    }
    f(&mut Uart16550::new(COM1))
}

/// Writes formatted text to the console (used by the `print!` macros).
pub fn write_fmt(args: core::fmt::Arguments<'_>) {
    with_console(|u| {
        let _ = u.write_fmt(args);
    });
}

/// Reads a byte typed on the console, if any.
pub fn try_read_byte() -> Option<u8> {
    with_console(|u| u.try_read_byte())
}

/// Prints to the hypervisor console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the hypervisor console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

struct Logger;
static LOGGER: Logger = Logger;
static DROPPED: AtomicUsize = AtomicUsize::new(0);

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let us = crate::time::uptime_us();
        let cpu = crate::lapic::current_cpu_label();
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        with_console(|u| {
            if u.write_fmt(format_args!(
                "[{:5}.{:06}] cpu{} {} {}\n",
                us / 1_000_000,
                us % 1_000_000,
                cpu,
                level,
                record.args()
            ))
            .is_err()
            {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    fn flush(&self) {}
}
