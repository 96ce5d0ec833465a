//! The command table: names (ACRN's where ACRN has one), aliases, usage, help text, and dispatch
//! of one command line to its handler.
//!
//! Every handler parses all of its arguments (and refuses extra ones) before it asks the backend
//! to do anything, so a mistyped line never half-runs. A failed command prints exactly one line,
//! `name: what was wrong`, and nothing else.

mod cpu;
mod info;
mod io;
mod mem;
mod vm;

use alloc::string::String;
use core::fmt;

use scenario::LoadOrder;

use crate::backend::{BackendError, Lifecycle, ShellBackend, VmId, VmState};
use crate::console::Port;
use crate::output::{Output, Table};
use crate::parse::{Args, ParseError};
use crate::ring::VmLogs;

/// Bytes `dump_guest_mem` and `dump_host_mem` show when no length is given.
pub const DEFAULT_DUMP_LEN: usize = 64;
/// The most bytes one dump shows (256 lines).
pub const MAX_DUMP_LEN: usize = 4096;

/// What the console must do after a command succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing: print the prompt again.
    Done,
    /// Connect the terminal to this console of this VM (`name` is the VM's).
    Attach { vm: VmId, name: String, port: Port },
    /// Reboot the machine (the hypervisor does it; the shell only asks).
    Reboot,
}

/// Why a command failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CmdError {
    /// No command has this name.
    Unknown(String),
    Parse(ParseError),
    Backend(BackendError),
    /// The VM has fewer vCPUs.
    NoVcpu {
        vm: String,
        vcpu: u16,
        count: u16,
    },
    /// The machine has fewer pCPUs.
    NoPcpu {
        pcpu: u16,
        count: u16,
    },
    /// The pCPU belongs to a real-time VM: the shell runs nothing there.
    RtPcpu(u16),
    /// The command would interrupt a running real-time VM's pCPU.
    RtRunning {
        vm: String,
        pcpu: u16,
    },
    /// The VM is not in a state the lifecycle request applies to.
    State {
        vm: String,
        op: Lifecycle,
        state: VmState,
    },
    /// Only pre-launched VMs are started and stopped from the shell.
    NotPreLaunched {
        vm: String,
        load_order: LoadOrder,
    },
    /// The VM has no virtual UART.
    NoConsole(String),
    /// The VM has no virtio console.
    NoHvc(String),
}

impl From<ParseError> for CmdError {
    fn from(e: ParseError) -> Self {
        CmdError::Parse(e)
    }
}

impl From<BackendError> for CmdError {
    fn from(e: BackendError) -> Self {
        CmdError::Backend(e)
    }
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdError::Unknown(name) => write!(f, "unknown command {name:?} (type help)"),
            CmdError::Parse(e) => e.fmt(f),
            CmdError::Backend(e) => e.fmt(f),
            CmdError::NoVcpu { vm, vcpu, count } => {
                write!(f, "{vm} has no vCPU {vcpu} (it has {count})")
            }
            CmdError::NoPcpu { pcpu, count } => {
                write!(f, "no pCPU {pcpu} (this machine has {count})")
            }
            CmdError::RtPcpu(p) => write!(
                f,
                "pCPU {p} belongs to a real-time VM; the shell does not run code there"
            ),
            CmdError::RtRunning { vm, pcpu } => write!(
                f,
                "{vm} is a running real-time VM: this would interrupt its pCPU {pcpu}; vm_pause it first"
            ),
            CmdError::State { vm, op, state } => {
                let already = if op.target() == *state {
                    "already "
                } else {
                    ""
                };
                write!(f, "cannot {} {vm}: it is {already}{state}", op.verb())
            }
            CmdError::NotPreLaunched { vm, load_order } => write!(
                f,
                "{vm} is {}; only pre-launched VMs are managed from this shell",
                vm::load_order_article(*load_order)
            ),
            CmdError::NoConsole(vm) => write!(f, "{vm} has no virtual UART"),
            CmdError::NoHvc(vm) => write!(f, "{vm} has no virtio console (hvc0)"),
        }
    }
}

/// A failed command line: the command (if the name was known) and what went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShellError {
    pub command: Option<&'static Command>,
    pub error: CmdError,
}

/// `name: error`, with the usage after a missing or unexpected argument.
impl fmt::Display for ShellError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(cmd) = self.command else {
            return self.error.fmt(f);
        };
        write!(f, "{}: {}", cmd.name, self.error)?;
        if let CmdError::Parse(ParseError::Missing(_) | ParseError::Unexpected(_)) = self.error {
            write!(f, " (usage: {})", cmd.usage())?;
        }
        Ok(())
    }
}

/// What a handler works with.
pub(crate) struct Ctx<'a> {
    pub backend: &'a mut dyn ShellBackend,
    pub logs: &'a mut VmLogs,
    pub out: &'a mut Output,
}

type Handler = fn(&mut Ctx<'_>, &mut Args<'_>) -> Result<Outcome, CmdError>;

/// One shell command.
pub struct Command {
    pub name: &'static str,
    /// Other names accepted for it.
    pub aliases: &'static [&'static str],
    /// The arguments, as in `<vm> <gpa> [len]`.
    pub args: &'static str,
    /// One line for `help`.
    pub summary: &'static str,
    /// More lines for `help <command>` (may be empty).
    pub details: &'static str,
    handler: Handler,
}

impl Command {
    /// `name args`.
    pub fn usage(&self) -> String {
        let mut u = String::from(self.name);
        if !self.args.is_empty() {
            u.push(' ');
            u.push_str(self.args);
        }
        u
    }

    /// Whether `name` is this command's name or an alias.
    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for Command {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Command {}

const VM_DETAILS: &str = "<vm> is a VM's name or numeric id (see vm_list).";
const DUMP_DETAILS: &str = "The range may also be written <addr>+<len> or <addr>..<end>; len \
    defaults to 64 bytes, at most 4096.\nNumbers are decimal or 0x hexadecimal.";
const CONSOLE_DETAILS: &str = "Typed bytes go to the guest. Ctrl-A d returns to the shell; \
    Ctrl-A Ctrl-A (or Ctrl-A a) sends one Ctrl-A;\nCtrl-A ? lists these keys. Output the VM \
    printed while nobody watched is shown first\n(the last 16 KiB; vm_log shows it again).\n\
    Without hvc: the VM's vUART. With hvc: its virtio console (hvc0), if it has one.";
const LOG_DETAILS: &str = "<vm> is a VM's name or numeric id (see vm_list).\nWithout hvc: what \
    the VM printed on its vUART. With hvc: on its virtio console (hvc0).";
const LIFECYCLE_DETAILS: &str = "Only pre-launched VMs; <vm> is a name or numeric id.";
const PCPU_DETAILS: &str = "Runs on pCPU <pcpu>; refused on pCPUs owned by real-time VMs.";

/// Every command, in the order `help` lists them.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "help",
        aliases: &["?"],
        args: "[command]",
        summary: "list the commands, or describe one",
        details: "",
        handler: help,
    },
    Command {
        name: "version",
        aliases: &[],
        args: "",
        summary: "show the hypervisor version",
        details: "",
        handler: info::version,
    },
    Command {
        name: "vm_list",
        aliases: &[],
        args: "",
        summary: "list VMs: state, load order, type, pCPUs, vCPUs, memory",
        details: "",
        handler: vm::vm_list,
    },
    Command {
        name: "vcpu_list",
        aliases: &[],
        args: "[vm]",
        summary: "list vCPUs of one or every VM: pCPU, state, exits",
        details: VM_DETAILS,
        handler: vm::vcpu_list,
    },
    Command {
        name: "vcpu_dumpreg",
        aliases: &[],
        args: "<vm> <vcpu>",
        summary: "show a vCPU's registers (pause the VM first)",
        details: VM_DETAILS,
        handler: vm::vcpu_dumpreg,
    },
    Command {
        name: "vcpu_break_entry",
        aliases: &[],
        args: "<vm> <vcpu>",
        summary: "fault injection: make the vCPU's next VM entry fail (the VM stops)",
        details: "Corrupts the vCPU's VMCB (SVM) or VMCS (VMX) just before its next entry, which the \
                  CPU then refuses: that VM stops, the others go on. A halted vCPU is broken at its \
                  next wake-up. <vm> is a name or numeric id.",
        handler: vm::vcpu_break_entry,
    },
    Command {
        name: "dump_guest_mem",
        aliases: &[],
        args: "<vm> <gpa> [len]",
        summary: "dump guest memory by guest-physical address",
        details: DUMP_DETAILS,
        handler: mem::dump_guest_mem,
    },
    Command {
        name: "dump_host_mem",
        aliases: &[],
        args: "<hpa> [len]",
        summary: "dump host memory by host-physical address",
        details: DUMP_DETAILS,
        handler: mem::dump_host_mem,
    },
    Command {
        name: "vm_console",
        aliases: &[],
        args: "<vm> [hvc]",
        summary: "attach the terminal to a VM's vUART, or its hvc0 (Ctrl-A d returns)",
        details: CONSOLE_DETAILS,
        handler: vm::vm_console,
    },
    Command {
        name: "vm_log",
        aliases: &[],
        args: "<vm> [hvc]",
        summary: "show the last 16 KiB a VM printed on its vUART, or its hvc0",
        details: LOG_DETAILS,
        handler: vm::vm_log,
    },
    Command {
        name: "vm_start",
        aliases: &[],
        args: "<vm>",
        summary: "boot a stopped or crashed VM",
        details: LIFECYCLE_DETAILS,
        handler: vm::vm_start,
    },
    Command {
        name: "vm_stop",
        aliases: &[],
        args: "<vm>",
        summary: "stop a VM",
        details: LIFECYCLE_DETAILS,
        handler: vm::vm_stop,
    },
    Command {
        name: "vm_pause",
        aliases: &[],
        args: "<vm>",
        summary: "hold a running VM's vCPUs",
        details: LIFECYCLE_DETAILS,
        handler: vm::vm_pause,
    },
    Command {
        name: "vm_resume",
        aliases: &[],
        args: "<vm>",
        summary: "let a paused VM run again",
        details: LIFECYCLE_DETAILS,
        handler: vm::vm_resume,
    },
    Command {
        name: "vm_reset",
        aliases: &[],
        args: "<vm>",
        summary: "reboot a VM from its kernel",
        details: LIFECYCLE_DETAILS,
        handler: vm::vm_reset,
    },
    Command {
        name: "stats",
        aliases: &["vmexit"],
        args: "[vm]",
        summary: "exits by reason, injected interrupts, guest time, per vCPU",
        details: "GUEST% is the share of TSC cycles spent in the guest rather than the \
            hypervisor.",
        handler: info::stats,
    },
    Command {
        name: "mem",
        aliases: &[],
        args: "",
        summary: "show the hypervisor's memory: frames (used by VM RAM and tables) and heap",
        details: "",
        handler: info::mem,
    },
    Command {
        name: "int",
        aliases: &[],
        args: "",
        summary: "list the hypervisor's interrupt vectors and counts per pCPU",
        details: "",
        handler: info::int,
    },
    Command {
        name: "vioapic",
        aliases: &[],
        args: "<vm>",
        summary: "show a VM's virtual IOAPIC redirection table",
        details: VM_DETAILS,
        handler: info::vioapic,
    },
    Command {
        name: "dump_ioapic",
        aliases: &[],
        args: "",
        summary: "show the physical IOAPICs' redirection tables",
        details: "",
        handler: info::dump_ioapic,
    },
    Command {
        name: "virtio",
        aliases: &[],
        args: "<vm>",
        summary: "list a VM's virtio devices: status, features, counters, queues",
        details: "<vm> is a VM's name or numeric id (see vm_list).\nIN is bytes to the guest, \
            OUT bytes from it; NOTIFY/IGN counts the driver's notifications and those ignored\n\
            (before DRIVER_OK, to a disabled queue, while the device needs a reset); LAST FAULT \
            is the ring error\nthat last made the device need a reset. Then one line per queue.",
        handler: io::virtio,
    },
    Command {
        name: "switches",
        aliases: &[],
        args: "",
        summary: "list the virtual switches: ports with frame counters, learned MACs",
        details: "TX is what a port sent into the switch, RX what the switch queued for it.",
        handler: io::switches,
    },
    Command {
        name: "shm",
        aliases: &[],
        args: "",
        summary: "list the shared-memory regions: their VMs, doorbell counters",
        details: "PEER is the id a VM's doorbells name (its IV position). SENT and RECEIVED count \
            doorbells accepted,\nDELIVERED the interrupts the receiver's device raised for them \
            (COALESCED: merged into a vector\nalready pending), DROPPED doorbells to no peer, no \
            vector or a peer not loaded, RATE-LIMITED those\nover the sender's rate; TRAPPED counts the VM's \
            accesses to the region that exited (a read-only\nVM's writes, dropped).",
        handler: io::shm,
    },
    Command {
        name: "vuart",
        aliases: &["links"],
        args: "",
        summary: "list the vUART links: their ends, modem lines, byte counters",
        details: "SENT counts the bytes the link took from an end, DELIVERED those the other end \
            read, DROPPED those\ndiscarded because the other end was not there (stopped, or its \
            port closed: DTR low), STALLS the\ntimes an end waited for room (flow control: its \
            UART's THRE stayed low), QUEUED the bytes waiting.",
        handler: io::vuart_links,
    },
    Command {
        name: "pci",
        aliases: &["lspci"],
        args: "",
        summary: "list the physical PCI functions: owner VM, interrupts, resets, DMA faults",
        details: "OWNER is the VM a function is passed through to and where that VM sees it; a \
            function nobody owns\nis hidden from every VM. STATE is the owner's interrupt mode \
            (msi-x, msi, off) or why the function\ncould not be given. VECTORS are the host \
            vectors its messages arrive on, remapped to the guest's.",
        handler: io::pci,
    },
    Command {
        name: "iommu",
        aliases: &[],
        args: "",
        summary: "show the IOMMUs: DMA and interrupt remapping, faults",
        details: "Every DMA a device makes outside its VM's RAM is blocked and counted here (and \
            per function in `pci`).",
        handler: io::iommu,
    },
    Command {
        name: "loglevel",
        aliases: &[],
        args: "[level]",
        summary: "show or set the log level",
        details: "Levels: off, error, warn, info, debug, trace, or 0 (off) to 5 (trace).",
        handler: info::loglevel,
    },
    Command {
        name: "cpuid",
        aliases: &[],
        args: "<pcpu> <leaf> [subleaf]",
        summary: "run CPUID on a pCPU",
        details: PCPU_DETAILS,
        handler: cpu::cpuid,
    },
    Command {
        name: "rdmsr",
        aliases: &[],
        args: "<pcpu> <msr>",
        summary: "read an MSR on a pCPU",
        details: PCPU_DETAILS,
        handler: cpu::rdmsr,
    },
    Command {
        name: "wrmsr",
        aliases: &[],
        args: "<pcpu> <msr> <value>",
        summary: "write an MSR on a pCPU",
        details: PCPU_DETAILS,
        handler: cpu::wrmsr,
    },
    Command {
        name: "reboot",
        aliases: &[],
        args: "",
        summary: "reboot the machine now",
        details: "",
        handler: info::reboot,
    },
];

/// The command called `name` (or aliased so).
pub fn find(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.answers_to(name))
}

/// Runs one command line, writing its output to `out`. On failure nothing is written: the
/// caller prints the error as one line.
pub fn execute(
    backend: &mut dyn ShellBackend,
    logs: &mut VmLogs,
    line: &str,
    out: &mut Output,
) -> Result<Outcome, ShellError> {
    let mut args = Args::new(line);
    let Some(name) = args.optional() else {
        return Ok(Outcome::Done);
    };
    let command = find(name).ok_or_else(|| ShellError {
        command: None,
        error: CmdError::Unknown(name.into()),
    })?;
    let mark = out.len();
    let mut ctx = Ctx { backend, logs, out };
    (command.handler)(&mut ctx, &mut args).map_err(|error| {
        out.truncate(mark);
        ShellError {
            command: Some(command),
            error,
        }
    })
}

fn help(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    let topic = args.optional();
    args.finish()?;
    let out = &mut *ctx.out;
    if let Some(name) = topic {
        let cmd = find(name).ok_or_else(|| CmdError::Unknown(name.into()))?;
        out.line(&alloc::format!("usage: {}", cmd.usage()));
        out.line(&alloc::format!("  {}", cmd.summary));
        for line in cmd.details.lines() {
            out.line(&alloc::format!("  {line}"));
        }
        if !cmd.aliases.is_empty() {
            out.line(&alloc::format!("  also: {}", cmd.aliases.join(", ")));
        }
        return Ok(Outcome::Done);
    }
    let mut table = Table::new(&["COMMAND", "DESCRIPTION"]);
    for cmd in COMMANDS {
        let mut summary = String::from(cmd.summary);
        if !cmd.aliases.is_empty() {
            summary.push_str(" (also: ");
            summary.push_str(&cmd.aliases.join(", "));
            summary.push(')');
        }
        table.row(alloc::vec![cmd.usage(), summary]);
    }
    table.write_to(out);
    out.line("<vm> is a VM's name or id; numbers are decimal or 0x hex; help <command> for more.");
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests;
