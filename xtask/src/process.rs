//! Emulator child processes that are always killed (with their whole process group), and Ctrl-C handling.

use std::io;
use std::process::{Child, ChildStdout, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catch SIGINT, SIGTERM and SIGHUP: xtask keeps running long enough to kill its emulators,
/// and every wait loop polls [`interrupted`].
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `on_signal` is an `extern "C"` function that only stores to an atomic, which is
        // async-signal-safe; replacing the disposition of these signals affects no other code.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// True once the user pressed Ctrl-C (or the process got SIGTERM/SIGHUP).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// A running emulator. Dropping it kills it (and its process group when it has its own) and reaps it.
pub struct Guarded {
    child: Child,
    own_group: bool,
    status: Option<ExitStatus>,
}

impl Guarded {
    /// Spawn `cmd`; with `own_group` the child leads a new process group (it then does not see the
    /// terminal's Ctrl-C, and [`Guarded::kill`] reaches all its descendants).
    pub fn spawn(cmd: &mut Command, own_group: bool) -> io::Result<Self> {
        use std::os::unix::process::CommandExt;
        if own_group {
            cmd.process_group(0);
        }
        // The workspace builds with `panic = "abort"`, so Drop is not a complete guarantee: also
        // have the kernel kill the emulator when xtask dies, however it dies.
        // SAFETY: getpid is async-signal-safe and has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure runs in the forked child before exec and only calls the
        // async-signal-safe prctl, getppid and raise; it allocates nothing and takes no locks.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::raise(libc::SIGKILL);
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(Self {
            child,
            own_group,
            status: None,
        })
    }

    /// The child's piped stdin, once.
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }

    /// The child's piped stdout, once.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// The exit status if the emulator has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Kill the emulator (and anything left in its process group) and reap it.
    pub fn kill(&mut self) {
        if self.own_group {
            if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: killpg only sends a signal; the group id is our own child's pid, which is
                // not reused before we reap the child below.
                unsafe {
                    libc::killpg(pgid, libc::SIGKILL);
                }
            }
        }
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.kill();
    }
}
