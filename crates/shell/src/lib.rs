//! The Quercus management shell on the physical console: a line editor, ACRN-named commands
//! (`vm_list`, `vcpu_dumpreg`, `dump_guest_mem`, `vm_console`, ...) and a console multiplexer
//! that attaches the terminal to one VM console at a time (a virtual UART, or a virtio console
//! `hvc0`) while every console's output is kept in a bounded ring per VM and [`Port`].
//!
//! Pure logic, tested on the host: the hypervisor implements [`ShellBackend`] (the shell never
//! touches hardware), feeds the UART's bytes to [`Console::feed_input`] and VM console output to
//! [`Console::vm_output`], and carries out the returned [`Action`]s. Nothing typed can make the
//! shell panic; a bad command line gets one line of error. See [`console`] for the escape keys.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod backend;
pub mod commands;
pub mod console;
mod hexdump;
mod line;
#[cfg(any(test, feature = "test-utils"))]
mod mock;
mod output;
pub mod parse;
mod ring;

pub use backend::{
    BackendError, IoapicLine, IommuLine, IrqLine, Lifecycle, LinkEndLine, LinkLine, MemUsage,
    PciLine, RegDump, ShellBackend, ShmLine, ShmPeerLine, StatsLine, SwitchLine, SwitchPortLine,
    VcpuInfo, VcpuState, VirtioBackend, VirtioLine, VirtioQueueLine, VmId, VmInfo, VmState,
    VIRTIO_STATUS_BITS,
};
pub use commands::{execute, CmdError, Command, Outcome, ShellError, COMMANDS};
pub use console::{Action, Console, Mode, Port, DETACH_KEY, ESCAPE_BYTE, PROMPT};
pub use hexdump::hexdump;
pub use line::{LineEditor, LineEvent, MAX_LINE};
#[cfg(any(test, feature = "test-utils"))]
pub use mock::{
    mock_links, mock_shm, mock_switches, mock_virtio, MockBackend, MOCK_HOST_BASE, MOCK_HOST_SIZE,
    MOCK_MSRS,
};
pub use output::{Output, Table};
pub use parse::ParseError;
pub use ring::{OutputRing, VmLogs, RING_SIZE};
