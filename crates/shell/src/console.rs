//! The physical console multiplexer: the UART's bytes go either to the shell's line editor or,
//! after `vm_console <vm>`, to that VM's virtual UART (after `vm_console <vm> hvc`, to its virtio
//! console, `hvc0`); VM output goes to the terminal when that console of the VM is attached and
//! into its history ring otherwise. Each VM has up to two consoles, its [`Port`]s.
//!
//! The escape key while attached is **Ctrl-A** (0x01, as in QEMU's and screen's consoles):
//!
//! | Keys                         | Effect                                            |
//! |------------------------------|---------------------------------------------------|
//! | Ctrl-A d                     | detach: back to the `quercus>` prompt             |
//! | Ctrl-A Ctrl-A, or Ctrl-A a   | send one Ctrl-A to the guest                      |
//! | Ctrl-A ? (or h)              | print this list                                   |
//! | Ctrl-A, any other byte       | both bytes go to the guest (nothing is lost)      |
//!
//! Every other byte, Ctrl-C included, goes to the guest unchanged, on the attached port.
//!
//! Output: each console's bytes (per VM and port) are kept in a [`RING_SIZE`](crate::RING_SIZE)
//! ring (the last 16 KiB). A VM never waits for the operator: unread output is overwritten
//! oldest first and the loss is counted. Attaching prints a banner, a note if unread output was
//! lost, then the output printed since the operator last looked; `vm_log <vm> [hvc]` prints the
//! whole ring.
//!
//! The console is a plain state machine: the hypervisor feeds it bytes and carries out the
//! returned [`Action`]s. [`Console::vm_output`] copies at most the bytes given into a ring and
//! never waits, so it may be called from the path that drains a vUART; the hypervisor must only
//! not hold the console's lock while waiting for a VM's pCPU.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::backend::{ShellBackend, VmId};
use crate::commands::{self, Outcome};
use crate::line::{LineEditor, LineEvent};
use crate::output::Output;
use crate::ring::VmLogs;

/// The shell's prompt.
pub const PROMPT: &str = "quercus> ";
/// The escape byte while attached: Ctrl-A.
pub const ESCAPE_BYTE: u8 = 0x01;
/// After the escape byte: back to the shell.
pub const DETACH_KEY: u8 = b'd';

const ESCAPE_HELP: &str = "Ctrl-A d: back to the shell; Ctrl-A Ctrl-A or Ctrl-A a: send Ctrl-A";

/// One of a VM's consoles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Port {
    /// Its virtual 16550 UART (the scenario's COM port).
    #[default]
    Uart,
    /// Its virtio console (`hvc0` to a Linux guest).
    Hvc,
}

impl Port {
    /// The word the shell uses for it: `vUART`, `hvc0`.
    pub const fn name(self) -> &'static str {
        match self {
            Port::Uart => "vUART",
            Port::Hvc => "hvc0",
        }
    }

    /// What follows the VM's name in an overview line's prefix: nothing for the vUART
    /// (`[linux] ...`), `/hvc0` for the virtio console (`[linux/hvc0] ...`).
    pub const fn overview_suffix(self) -> &'static str {
        match self {
            Port::Uart => "",
            Port::Hvc => "/hvc0",
        }
    }

    /// How messages name this console of VM `vm`: `linux` (the vUART, the VM's console
    /// unqualified, as always), `linux hvc0`.
    pub fn label(self, vm: &str) -> String {
        match self {
            Port::Uart => String::from(vm),
            Port::Hvc => format!("{vm} hvc0"),
        }
    }
}

/// Where typed bytes go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// To the line editor and the `quercus>` prompt.
    #[default]
    Shell,
    /// To this console of this VM.
    Attached(VmId, Port),
}

/// What the hypervisor must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes to the physical UART.
    Print(Vec<u8>),
    /// Give this byte to the VM's console `Port`: the virtual UART's receive FIFO, or the virtio
    /// console's input (either drops it when full).
    ToGuest(VmId, Port, u8),
    /// The operator asked for a machine reboot.
    Reboot,
}

/// A list of actions where consecutive prints merge into one.
#[derive(Default)]
struct Actions(Vec<Action>);

impl Actions {
    fn print(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(Action::Print(last)) = self.0.last_mut() {
            last.extend_from_slice(bytes);
        } else {
            self.0.push(Action::Print(bytes.to_vec()));
        }
    }

    fn push(&mut self, action: Action) {
        self.0.push(action);
    }
}

/// The console state machine.
#[derive(Clone, Debug, Default)]
pub struct Console {
    mode: Mode,
    /// The attached console's label, `linux` or `linux hvc0` (for the detach message).
    attached_name: String,
    editor: LineEditor,
    /// Attached, and the last byte was the escape byte.
    escape_pending: bool,
    logs: VmLogs,
}

impl Console {
    /// In shell mode, with empty history.
    pub const fn new() -> Self {
        Console {
            mode: Mode::Shell,
            attached_name: String::new(),
            editor: LineEditor::new(),
            escape_pending: false,
            logs: VmLogs::new(),
        }
    }

    /// Where typed bytes go now.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Every VM's console history.
    pub fn logs(&self) -> &VmLogs {
        &self.logs
    }

    /// The greeting and the first prompt.
    pub fn start(&mut self, backend: &dyn ShellBackend) -> Vec<Action> {
        let mut acts = Actions::default();
        let greeting = format!("{} shell; type help for commands\r\n", backend.version());
        acts.print(greeting.as_bytes());
        acts.print(PROMPT.as_bytes());
        acts.0
    }

    /// The prompt and the line typed so far on a fresh line (after the hypervisor printed
    /// something of its own); nothing while attached.
    pub fn redraw(&self) -> Vec<Action> {
        let mut acts = Actions::default();
        if self.mode == Mode::Shell {
            acts.print(b"\r\n");
            acts.print(PROMPT.as_bytes());
            acts.print(self.editor.line().as_bytes());
        }
        acts.0
    }

    /// Takes one byte typed on the physical console.
    pub fn feed_input(&mut self, backend: &mut dyn ShellBackend, byte: u8) -> Vec<Action> {
        let mut acts = Actions::default();
        match self.mode {
            Mode::Shell => self.shell_byte(backend, byte, &mut acts),
            Mode::Attached(vm, port) => self.attached_byte(vm, port, byte, &mut acts),
        }
        acts.0
    }

    /// Takes bytes a VM wrote to its console `port`: printed now if that console is attached,
    /// kept in its ring either way.
    pub fn vm_output(&mut self, vm: VmId, port: Port, bytes: &[u8]) -> Vec<Action> {
        let attached = self.mode == Mode::Attached(vm, port);
        self.logs.push(vm, port, bytes, attached);
        let mut acts = Actions::default();
        if attached {
            acts.print(bytes);
        }
        acts.0
    }

    /// Returns to the shell (also what Ctrl-A d does); the hypervisor calls it when the
    /// attached VM goes away. Nothing happens in shell mode.
    pub fn detach(&mut self) -> Vec<Action> {
        let mut acts = Actions::default();
        self.detach_into(&mut acts);
        acts.0
    }

    fn detach_into(&mut self, acts: &mut Actions) {
        if self.mode == Mode::Shell {
            return;
        }
        self.mode = Mode::Shell;
        self.escape_pending = false;
        self.editor.clear();
        let name = core::mem::take(&mut self.attached_name);
        acts.print(format!("\r\n[detached from {name}]\r\n{PROMPT}").as_bytes());
    }

    fn shell_byte(&mut self, backend: &mut dyn ShellBackend, byte: u8, acts: &mut Actions) {
        let mut echo = Vec::new();
        let event = self
            .editor
            .feed(byte, &mut |b: &[u8]| echo.extend_from_slice(b));
        acts.print(&echo);
        match event {
            LineEvent::None => {}
            LineEvent::Interrupt => acts.print(PROMPT.as_bytes()),
            LineEvent::Line(line) => self.run(backend, &line, acts),
        }
    }

    fn run(&mut self, backend: &mut dyn ShellBackend, line: &str, acts: &mut Actions) {
        let mut out = Output::new();
        match commands::execute(backend, &mut self.logs, line, &mut out) {
            Ok(Outcome::Done) => {
                acts.print(out.as_bytes());
                acts.print(PROMPT.as_bytes());
            }
            Ok(Outcome::Attach { vm, name, port }) => {
                acts.print(out.as_bytes());
                self.attach(vm, port, &name, acts);
            }
            Ok(Outcome::Reboot) => {
                acts.print(out.as_bytes());
                acts.print(b"rebooting\r\n");
                acts.push(Action::Reboot);
            }
            Err(e) => {
                acts.print(format!("{e}\r\n{PROMPT}").as_bytes());
            }
        }
    }

    fn attach(&mut self, vm: VmId, port: Port, name: &str, acts: &mut Actions) {
        let name = port.label(name);
        acts.print(
            format!("[attached to {name} (id {vm}); Ctrl-A d returns to the shell]\r\n").as_bytes(),
        );
        if let Some(ring) = self.logs.get_mut(vm, port) {
            let (unread, lost) = ring.take_unread();
            if lost > 0 {
                acts.print(
                    format!("[{lost} earlier bytes of {name} output were lost]\r\n").as_bytes(),
                );
            }
            acts.print(&unread);
        }
        self.mode = Mode::Attached(vm, port);
        self.attached_name = name;
        self.escape_pending = false;
    }

    fn attached_byte(&mut self, vm: VmId, port: Port, byte: u8, acts: &mut Actions) {
        let to_guest = |b| Action::ToGuest(vm, port, b);
        if !core::mem::replace(&mut self.escape_pending, false) {
            if byte == ESCAPE_BYTE {
                self.escape_pending = true;
            } else {
                acts.push(to_guest(byte));
            }
            return;
        }
        match byte {
            DETACH_KEY => self.detach_into(acts),
            ESCAPE_BYTE | b'a' => acts.push(to_guest(ESCAPE_BYTE)),
            b'?' | b'h' => acts.print(format!("\r\n[{ESCAPE_HELP}]\r\n").as_bytes()),
            _ => {
                acts.push(to_guest(ESCAPE_BYTE));
                acts.push(to_guest(byte));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::VmState;
    use crate::commands::COMMANDS;
    use crate::mock::MockBackend;
    use crate::ring::RING_SIZE;
    use alloc::string::ToString;
    use alloc::vec;

    const RT: VmId = VmId(0);
    const LINUX: VmId = VmId(1);

    /// Feeds `input`; returns every action.
    fn feed(c: &mut Console, b: &mut MockBackend, input: &[u8]) -> Vec<Action> {
        input
            .iter()
            .flat_map(|&byte| c.feed_input(b, byte))
            .collect()
    }

    /// The printed text of `actions` (CR LF shown as LF).
    fn printed(actions: &[Action]) -> String {
        let bytes: Vec<u8> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Print(p) => Some(p.as_slice()),
                _ => None,
            })
            .flatten()
            .copied()
            .collect();
        String::from_utf8_lossy(&bytes).replace("\r\n", "\n")
    }

    /// The bytes `actions` send to console `port` of `vm`.
    fn to_port(actions: &[Action], vm: VmId, port: Port) -> Vec<u8> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ToGuest(v, p, byte) if *v == vm && *p == port => Some(*byte),
                _ => None,
            })
            .collect()
    }

    /// The bytes `actions` send to `vm`'s vUART.
    fn to_guest(actions: &[Action], vm: VmId) -> Vec<u8> {
        to_port(actions, vm, Port::Uart)
    }

    #[test]
    fn typed_bytes_go_to_the_attached_vms_id() {
        // The scenario's VM 0 was not started: the second VM listed has id 3, not 1.
        let mut c = Console::new();
        let mut b = MockBackend::new();
        b.vms[0].id = VmId(1);
        b.vms[1].id = VmId(3);
        let acts = feed(&mut c, &mut b, b"vm_console 3\r");
        assert!(printed(&acts).contains("attached to linux"));
        assert_eq!(c.mode(), Mode::Attached(VmId(3), Port::Uart));
        let acts = feed(&mut c, &mut b, b"hi");
        assert_eq!(to_guest(&acts, VmId(3)), b"hi");
        assert!(to_guest(&acts, VmId(1)).is_empty());
        feed(&mut c, &mut b, &[ESCAPE_BYTE, DETACH_KEY]);
        let acts = feed(&mut c, &mut b, b"vm_console rtvm\r");
        assert!(printed(&acts).contains("attached to rtvm"));
        assert_eq!(to_guest(&feed(&mut c, &mut b, b"x"), VmId(1)), b"x");
    }

    #[test]
    fn greets_and_prompts() {
        let mut c = Console::new();
        let b = MockBackend::new();
        assert_eq!(
            c.start(&b),
            [Action::Print(
                b"Quercus 0.1.0 (mock) shell; type help for commands\r\nquercus> ".to_vec()
            )]
        );
        assert_eq!(c.mode(), Mode::Shell);
    }

    #[test]
    fn a_command_line_echoes_runs_and_prompts_again() {
        let mut c = Console::new();
        let mut b = MockBackend::new();
        let acts = feed(&mut c, &mut b, b"version\r");
        assert_eq!(printed(&acts), "version\nQuercus 0.1.0 (mock)\nquercus> ");
        let acts = feed(&mut c, &mut b, b"frobnicate 1\r");
        assert_eq!(
            printed(&acts),
            "frobnicate 1\nunknown command \"frobnicate\" (type help)\nquercus> "
        );
        let acts = feed(&mut c, &mut b, b"vm_stop\r");
        assert_eq!(
            printed(&acts),
            "vm_stop\nvm_stop: missing <vm> (usage: vm_stop <vm>)\nquercus> "
        );
        // Empty lines and Ctrl-C just prompt again.
        assert_eq!(printed(&feed(&mut c, &mut b, b"\r")), "\nquercus> ");
        assert_eq!(printed(&feed(&mut c, &mut b, b"vm\x03")), "vm^C\nquercus> ");
        // Consecutive prints are merged: one action per byte at most.
        assert_eq!(c.feed_input(&mut b, b'x').len(), 1);
    }

    #[test]
    fn attach_type_and_escape_back() {
        let mut c = Console::new();
        let mut b = MockBackend::new();
        let acts = feed(&mut c, &mut b, b"vm_console linux\r");
        assert_eq!(
            printed(&acts),
            "vm_console linux\n[attached to linux (id 1); Ctrl-A d returns to the shell]\n"
        );
        assert_eq!(c.mode(), Mode::Attached(LINUX, Port::Uart));

        // Typed bytes, Ctrl-C and escape sequences go to the guest unchanged.
        let acts = feed(&mut c, &mut b, b"ls -l\r\x03\x1b[A");
        assert_eq!(to_guest(&acts, LINUX), b"ls -l\r\x03\x1b[A");
        assert_eq!(printed(&acts), "");

        // The escape byte: doubled, with `a`, with an unbound key.
        let acts = feed(&mut c, &mut b, b"\x01\x01\x01a\x01x");
        assert_eq!(to_guest(&acts, LINUX), b"\x01\x01\x01x");
        let acts = feed(&mut c, &mut b, b"\x01?");
        assert!(printed(&acts).contains("Ctrl-A d: back to the shell"));
        assert!(to_guest(&acts, LINUX).is_empty());

        // The attached VM's output is printed at once; the other VM's is kept.
        let acts = c.vm_output(LINUX, Port::Uart, b"$ ");
        assert_eq!(acts, [Action::Print(b"$ ".to_vec())]);
        assert!(c.vm_output(RT, Port::Uart, b"rt tick\r\n").is_empty());

        let acts = feed(&mut c, &mut b, b"\x01d");
        assert_eq!(printed(&acts), "\n[detached from linux]\nquercus> ");
        assert_eq!(c.mode(), Mode::Shell);
        assert!(to_guest(&acts, LINUX).is_empty());

        // Back in the shell, nothing goes to the guest and the VM's output is kept.
        let acts = feed(&mut c, &mut b, b"vm_list\r");
        assert!(to_guest(&acts, LINUX).is_empty());
        assert!(printed(&acts).contains("linux"));
        assert!(c.vm_output(LINUX, Port::Uart, b"later\r\n").is_empty());
        assert_eq!(c.logs().get(LINUX, Port::Uart).map(|r| r.unread()), Some(7));
    }

    #[test]
    fn attaching_shows_what_was_missed_and_vm_log_shows_history() {
        let mut c = Console::new();
        let mut b = MockBackend::new();
        c.vm_output(RT, Port::Uart, b"boot 1\r\n");
        let acts = feed(&mut c, &mut b, b"vm_console 0\r");
        assert_eq!(
            printed(&acts),
            "vm_console 0\n[attached to rtvm (id 0); Ctrl-A d returns to the shell]\nboot 1\n"
        );
        c.vm_output(RT, Port::Uart, b"seen\r\n");
        feed(&mut c, &mut b, b"\x01d");
        c.vm_output(RT, Port::Uart, b"missed\r\n");
        let acts = feed(&mut c, &mut b, b"vm_console rtvm\r");
        assert!(printed(&acts).ends_with("shell]\nmissed\n"));
        feed(&mut c, &mut b, b"\x01d");
        let acts = feed(&mut c, &mut b, b"vm_log rtvm\r");
        assert_eq!(
            printed(&acts),
            "vm_log rtvm\nboot 1\nseen\nmissed\nquercus> "
        );
        let acts = feed(&mut c, &mut b, b"vm_log linux\r");
        assert_eq!(
            printed(&acts),
            "vm_log linux\n[linux has printed nothing]\nquercus> "
        );
        // Output without a final newline still leaves the prompt on its own line.
        c.vm_output(LINUX, Port::Uart, b"login: ");
        let acts = feed(&mut c, &mut b, b"vm_log linux\r");
        assert_eq!(printed(&acts), "vm_log linux\nlogin: \nquercus> ");
    }

    #[test]
    fn ring_overflow_keeps_the_last_16_kib_and_says_how_much_was_lost() {
        let mut c = Console::new();
        let mut b = MockBackend::new();
        let mut data = vec![b'a'; 4000];
        data.extend(core::iter::repeat_n(b'b', RING_SIZE));
        for chunk in data.chunks(100) {
            assert!(c.vm_output(LINUX, Port::Uart, chunk).is_empty());
        }
        let ring = c.logs().get(LINUX, Port::Uart).unwrap();
        assert_eq!(
            (ring.len(), ring.unread(), ring.lost()),
            (RING_SIZE, RING_SIZE, 4000)
        );
        let acts = feed(&mut c, &mut b, b"vm_console linux\r");
        let text = printed(&acts);
        assert!(text.contains("[4000 earlier bytes of linux output were lost]\n"));
        assert!(text.ends_with(&"b".repeat(RING_SIZE)));
        assert!(!text.contains('a'.to_string().repeat(2).as_str()));
        assert_eq!(c.logs().get(LINUX, Port::Uart).unwrap().lost(), 0);
    }

    #[test]
    fn detach_is_a_no_op_in_shell_mode_and_attach_needs_a_uart() {
        let mut c = Console::new();
        let mut b = MockBackend::new();
        assert!(c.detach().is_empty());
        b.vms[0].console = false;
        let acts = feed(&mut c, &mut b, b"vm_console rtvm\r");
        assert_eq!(
            printed(&acts),
            "vm_console rtvm\nvm_console: rtvm has no virtual UART\nquercus> "
        );
        assert_eq!(c.mode(), Mode::Shell);
        feed(&mut c, &mut b, b"vm_console 1\r");
        // The hypervisor can force a detach (the VM went away); a half-typed escape is dropped.
        feed(&mut c, &mut b, b"\x01");
        assert_eq!(printed(&c.detach()), "\n[detached from linux]\nquercus> ");
        assert_eq!(c.mode(), Mode::Shell);
        assert_eq!(printed(&feed(&mut c, &mut b, b"d")), "d");
    }

    #[test]
    fn attach_to_hvc0_type_and_escape_back() {
        let mut c = Console::new();
        let mut b = MockBackend::new();
        let acts = feed(&mut c, &mut b, b"vm_console linux hvc\r");
        assert_eq!(
            printed(&acts),
            "vm_console linux hvc\n[attached to linux hvc0 (id 1); Ctrl-A d returns to the shell]\n"
        );
        assert_eq!(c.mode(), Mode::Attached(LINUX, Port::Hvc));

        // Typed bytes and escapes go to the virtio console, none to the vUART.
        let acts = feed(&mut c, &mut b, b"ls\r\x03\x01\x01\x01x");
        assert_eq!(to_port(&acts, LINUX, Port::Hvc), b"ls\r\x03\x01\x01x");
        assert!(to_guest(&acts, LINUX).is_empty());
        assert_eq!(printed(&acts), "");

        // The attached port's output is printed; the same VM's vUART output is kept.
        let acts = c.vm_output(LINUX, Port::Hvc, b"# ");
        assert_eq!(acts, [Action::Print(b"# ".to_vec())]);
        assert!(c.vm_output(LINUX, Port::Uart, b"com1\r\n").is_empty());
        assert_eq!(c.logs().get(LINUX, Port::Uart).map(|r| r.unread()), Some(6));
        assert_eq!(c.logs().get(LINUX, Port::Hvc).map(|r| r.unread()), Some(0));

        let acts = feed(&mut c, &mut b, b"\x01d");
        assert_eq!(printed(&acts), "\n[detached from linux hvc0]\nquercus> ");
        assert_eq!(c.mode(), Mode::Shell);
        assert!(acts.iter().all(|a| matches!(a, Action::Print(_))));

        // Attached to the vUART, bytes go there and hvc0 output is kept.
        feed(&mut c, &mut b, b"vm_console linux\r");
        assert_eq!(c.mode(), Mode::Attached(LINUX, Port::Uart));
        assert!(c.vm_output(LINUX, Port::Hvc, b"x").is_empty());
        let acts = feed(&mut c, &mut b, b"y");
        assert_eq!(
            acts,
            [Action::ToGuest(LINUX, Port::Uart, b'y')],
            "the vUART, as ever"
        );
    }

    #[test]
    fn each_console_keeps_its_own_history() {
        let mut c = Console::new();
        let mut b = MockBackend::new();
        c.vm_output(LINUX, Port::Uart, b"uart boot\r\n");
        c.vm_output(LINUX, Port::Hvc, &vec![b'h'; RING_SIZE + 5]);
        // Attaching to hvc0 shows its backlog and its loss, not the vUART's.
        let acts = feed(&mut c, &mut b, b"vm_console 1 hvc\r");
        let text = printed(&acts);
        assert!(
            text.contains("shell]\n[5 earlier bytes of linux hvc0 output were lost]\nhhh"),
            "{text}"
        );
        assert!(!text.contains("uart boot"));
        feed(&mut c, &mut b, b"\x01d");
        // The vUART's backlog is still unread and shown on its attach.
        let acts = feed(&mut c, &mut b, b"vm_console 1\r");
        assert!(printed(&acts).ends_with("(id 1); Ctrl-A d returns to the shell]\nuart boot\n"));
        feed(&mut c, &mut b, b"\x01d");
        let acts = feed(&mut c, &mut b, b"vm_log linux\r");
        assert_eq!(printed(&acts), "vm_log linux\nuart boot\nquercus> ");
    }

    #[test]
    fn attaching_to_a_missing_hvc0_is_refused() {
        let mut c = Console::new();
        let mut b = MockBackend::new();
        let acts = feed(&mut c, &mut b, b"vm_console rtvm hvc\r");
        assert_eq!(
            printed(&acts),
            "vm_console rtvm hvc\nvm_console: rtvm has no virtio console (hvc0)\nquercus> "
        );
        assert_eq!(c.mode(), Mode::Shell);
        // Typing goes to the line editor, nowhere else.
        let acts = feed(&mut c, &mut b, b"x");
        assert_eq!(acts, [Action::Print(b"x".to_vec())]);
    }

    #[test]
    fn ports_name_themselves() {
        assert_eq!(Port::default(), Port::Uart);
        assert_eq!((Port::Uart.name(), Port::Hvc.name()), ("vUART", "hvc0"));
        assert_eq!(Port::Uart.label("linux"), "linux");
        assert_eq!(Port::Hvc.label("linux"), "linux hvc0");
        let prefix = |p: Port| format!("[vm0{}] ", p.overview_suffix());
        assert_eq!(prefix(Port::Uart), "[vm0] ");
        assert_eq!(prefix(Port::Hvc), "[vm0/hvc0] ");
    }

    #[test]
    fn reboot_is_an_action() {
        let mut c = Console::new();
        let mut b = MockBackend::new();
        let acts = feed(&mut c, &mut b, b"reboot\r");
        assert_eq!(acts.last(), Some(&Action::Reboot));
        assert_eq!(printed(&acts), "reboot\nrebooting\n");
        let acts = feed(&mut c, &mut b, b"reboot now\r");
        assert!(!acts.contains(&Action::Reboot));
    }

    #[test]
    fn redraw_reprints_the_prompt_and_the_partial_line() {
        let mut c = Console::new();
        let mut b = MockBackend::new();
        feed(&mut c, &mut b, b"vm_li");
        assert_eq!(printed(&c.redraw()), "\nquercus> vm_li");
        feed(&mut c, &mut b, b"\x15vm_console 1\r");
        assert!(c.redraw().is_empty());
    }

    /// xorshift64: a fixed, dependency-free stream of pseudo-random numbers.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    #[test]
    fn random_input_never_panics() {
        const WORDS: &[&str] = &[
            "0",
            "1",
            "2",
            "3",
            "4",
            "rtvm",
            "linux",
            "0x0",
            "0x1b",
            "0x10",
            "0xffffffffffffffff",
            "0x100000",
            "0x1fff0",
            "4096",
            "4097",
            "99999999999999999999",
            "..",
            "+",
            "-1",
            "trace",
            "hvc",
        ];
        for seed in [1u64, 0x9e37_79b9_7f4a_7c15, 0xdead_beef] {
            let mut rng = XorShift(seed);
            let mut c = Console::new();
            let mut b = MockBackend::new();
            let mut fed = 0usize;
            let mut guest_bytes = 0usize;
            let mut hvc_bytes = 0usize;
            while fed < 100_000 {
                let r = rng.next();
                let input: Vec<u8> = match r % 8 {
                    // A command name with random words: reaches deep into the handlers.
                    0 | 1 => {
                        let cmd = &COMMANDS[(r >> 8) as usize % COMMANDS.len()];
                        // Ctrl-U first: random bytes before may have left a partial line.
                        let mut line = String::from("\x15");
                        line.push_str(cmd.name);
                        for i in 0..(r >> 16) % 5 {
                            line.push(' ');
                            line.push_str(WORDS[(r >> (20 + 4 * i)) as usize % WORDS.len()]);
                        }
                        // Never reboot or leave the console attached for long.
                        if cmd.name == "reboot" {
                            line.push_str(" x");
                        }
                        line.push('\r');
                        line.into_bytes()
                    }
                    2 => vec![
                        ESCAPE_BYTE,
                        if r & 0x100 != 0 {
                            DETACH_KEY
                        } else {
                            (r >> 9) as u8
                        },
                    ],
                    3 => {
                        let vm = VmId((r >> 8) as u16 % 3);
                        let port = if r & 0x80 != 0 { Port::Hvc } else { Port::Uart };
                        let out: Vec<u8> = (0..(r >> 16) % 3000).map(|i| i as u8).collect();
                        for a in c.vm_output(vm, port, &out) {
                            assert!(matches!(a, Action::Print(_)));
                        }
                        Vec::new()
                    }
                    // Attach now and then: how often the case above picks `vm_console` with
                    // one VM word depends on the size of the command table (about once a seed).
                    4 => {
                        // "0" to "linux": some name a VM, some do not.
                        let vm = WORDS[(r >> 8) as usize % 7];
                        let port = if r & 0x80 != 0 { " hvc" } else { "" };
                        format!("\x15vm_console {vm}{port}\r").into_bytes()
                    }
                    _ => (0..(r >> 8) % 64).map(|_| rng.next() as u8).collect(),
                };
                for byte in input {
                    fed += 1;
                    for a in c.feed_input(&mut b, byte) {
                        match a {
                            Action::Reboot => panic!("random input rebooted"),
                            Action::ToGuest(vm, port, _) => {
                                assert_eq!(c.mode(), Mode::Attached(vm, port));
                                guest_bytes += 1;
                                hvc_bytes += usize::from(port == Port::Hvc);
                            }
                            Action::Print(p) => assert!(!p.is_empty()),
                        }
                    }
                }
                // The mock's VMs may have been stopped at random: keep them all usable.
                for vm in &mut b.vms {
                    if vm.state == VmState::Crashed {
                        vm.state = VmState::Stopped;
                    }
                }
            }
            for vm in [RT, LINUX, VmId(2)] {
                for port in [Port::Uart, Port::Hvc] {
                    if let Some(r) = c.logs().get(vm, port) {
                        assert!(r.len() <= RING_SIZE && r.unread() <= r.len());
                    }
                }
            }
            assert!(guest_bytes > 0, "the fuzz never attached");
            assert!(hvc_bytes > 0, "the fuzz never attached to a virtio console");
        }
    }
}
