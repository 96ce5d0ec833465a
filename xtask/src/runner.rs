//! Booting an image in an emulator and watching its serial console: `run(&RunConfig) -> RunOutcome`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use regex::Regex;

use crate::console::{LineSplitter, Matcher, Verdict};
use crate::process::{interrupted, Guarded};
use crate::{bochs, qemu, workspace_root};

/// How often the console is polled.
const POLL: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Emulator {
    /// QEMU TCG, AMD SVM with nested paging, `-kernel` (multiboot1).
    Qemu,
    /// Bochs with an Intel CPU (VMX, EPT), GRUB ISO (multiboot2).
    Bochs,
    /// Bochs with an AMD CPU (SVM, NPT), GRUB ISO (multiboot2).
    BochsAmd,
    /// Bochs with an older Intel CPU (Haswell: VMX with EPT and VPID, no PML,
    /// XSAVES or TSC scaling), GRUB ISO. Debian's kernel also boots natively
    /// on it, which it does not on Bochs's `tigerlake` model: the native
    /// baseline of Bochs benchmarks.
    BochsHaswell,
}

impl Emulator {
    pub fn name(self) -> &'static str {
        match self {
            Emulator::Qemu => "qemu",
            Emulator::Bochs => "bochs",
            Emulator::BochsAmd => "bochs-amd",
            Emulator::BochsHaswell => "bochs-haswell",
        }
    }
}

/// A file handed to the hypervisor as a boot module, with its module command line.
#[derive(Clone, Debug)]
pub struct BootModule {
    pub path: PathBuf,
    pub cmdline: String,
}

#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Names the run directory `target/runs/<name>-<pid>/`.
    pub name: String,
    /// The multiboot ELF to boot.
    pub kernel: PathBuf,
    pub emulator: Emulator,
    pub cpus: u32,
    pub mem_mib: u32,
    pub cmdline: String,
    pub modules: Vec<BootModule>,
    pub extra_qemu_args: Vec<String>,
    /// Lines appended to the bochsrc of a Bochs run (e.g. the board's PCI devices).
    pub extra_bochsrc: String,
    /// Console regexes that must all be seen, in order; the run ends at the last one.
    /// Empty: an interactive run that lasts until the emulator exits or Ctrl-C.
    pub expect: Vec<Regex>,
    /// Further lists of regexes awaited side by side with `expect` (each in order).
    pub parallel: Vec<Vec<Regex>>,
    /// Typed at the serial console, in order: when a console line matches the
    /// regex, the bytes are sent (QEMU only: its serial port is on stdin).
    pub input: Vec<(Regex, Vec<u8>)>,
    /// A console line matching this ends the run with failure.
    pub fail: Option<Regex>,
    pub timeout: Duration,
    /// Stream the console to the terminal.
    pub echo: bool,
}

#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub matched: bool,
    /// Why the run ended, one line.
    pub reason: String,
    /// Hints for failures: where the emulator's own logs are and their last lines.
    pub diagnostics: Vec<String>,
    /// Every console line.
    pub lines: Vec<String>,
    /// Wall time from emulator start to the last expected line.
    pub elapsed_to_match: Option<Duration>,
    /// When each of `lines` arrived, from emulator start.
    pub line_times: Vec<Duration>,
}

/// `<root>/target/runs/<name>-<pid>/`: where the run named `name` keeps its logs, and the working
/// directory of its emulator (a relative file name in an emulator argument lands there).
pub fn run_dir(name: &str) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    workspace_root()
        .join("target")
        .join("runs")
        .join(format!("{safe}-{}", std::process::id()))
}

/// A fresh [`run_dir`].
pub fn fresh_run_dir(name: &str) -> Result<PathBuf> {
    let dir = run_dir(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Boot `cfg.kernel` and watch the console as `cfg` says.
pub fn run(cfg: &RunConfig) -> Result<RunOutcome> {
    let dir = fresh_run_dir(&cfg.name)?;
    run_in(cfg, &dir)
}

/// Like [`run`], in `dir` as it is (prepared by the caller, see [`fresh_run_dir`]).
pub fn run_in(cfg: &RunConfig, dir: &Path) -> Result<RunOutcome> {
    let dir = dir.to_path_buf();
    match cfg.emulator {
        Emulator::Qemu => run_qemu(cfg, &dir),
        Emulator::Bochs | Emulator::BochsAmd | Emulator::BochsHaswell => run_bochs(cfg, &dir),
    }
}

fn run_qemu(cfg: &RunConfig, dir: &Path) -> Result<RunOutcome> {
    let args = qemu::args(cfg);
    let mut cmd = Command::new(qemu::BINARY);
    cmd.args(&args).current_dir(dir);
    if cfg.expect.is_empty() {
        // Interactive: the terminal is QEMU's serial port; Ctrl-C reaches QEMU (same process group).
        let start = Instant::now();
        let mut emu = Guarded::spawn(&mut cmd, false).context("starting qemu-system-x86_64")?;
        let status = loop {
            if let Some(status) = emu.try_wait()? {
                break Some(status);
            }
            if interrupted() {
                std::thread::sleep(Duration::from_millis(500));
                emu.kill();
                break emu.try_wait()?;
            }
            std::thread::sleep(POLL);
        };
        return Ok(interactive_outcome(status, start));
    }
    let stderr_path = dir.join("qemu.err");
    let stderr = File::create(&stderr_path)?;
    cmd.stdin(if cfg.input.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    })
    .stdout(Stdio::piped())
    .stderr(stderr);
    let start = Instant::now();
    let mut emu = Guarded::spawn(&mut cmd, true).context("starting qemu-system-x86_64")?;
    let stdout = emu_stdout(&mut emu)?;
    let stdin = emu.take_stdin();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = stdout;
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut source = PipeSource {
        rx,
        stdin: stdin.map(|s| Box::new(s) as Box<dyn std::io::Write>),
    };
    let mut outcome = watch(cfg, &mut emu, &mut source, start)?;
    // The whole console, for reading after a failure.
    let _ = std::fs::write(dir.join("console.log"), outcome.lines.join("\n"));
    if !outcome.matched {
        outcome.diagnostics = log_tails(&[stderr_path]);
    }
    Ok(outcome)
}

fn emu_stdout(emu: &mut Guarded) -> Result<std::process::ChildStdout> {
    emu.take_stdout()
        .context("emulator stdout was not captured")
}

/// Waits (up to 60 s, while Bochs runs) for Bochs's COM1 to connect to `listener`; then a
/// thread copies what it sends to a channel and to `serial` (the file the other runs have).
fn accept_bochs_console(
    listener: std::net::TcpListener,
    emu: &mut Guarded,
    serial: &Path,
) -> Result<PipeSource> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = emu.try_wait()? {
                    anyhow::bail!("bochs exited with {status} before its COM1 connected");
                }
                if Instant::now() >= deadline {
                    anyhow::bail!("bochs's COM1 did not connect within 60 s");
                }
                std::thread::sleep(POLL);
            }
            Err(e) => return Err(e.into()),
        }
    };
    stream.set_nonblocking(false)?;
    let mut reader = stream.try_clone()?;
    let mut file = File::create(serial)?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = file.write_all(&buf[..n]);
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok(PipeSource {
        rx,
        stdin: Some(Box::new(stream)),
    })
}

fn run_bochs(cfg: &RunConfig, dir: &Path) -> Result<RunOutcome> {
    let iso = bochs::make_iso(cfg, dir)?;
    // A run that types at the console gets COM1 on a loopback TCP connection.
    let listener = if cfg.input.is_empty() {
        None
    } else {
        Some(std::net::TcpListener::bind(("127.0.0.1", 0))?)
    };
    let port = listener
        .as_ref()
        .map(|l| l.local_addr().map(|a| a.port()))
        .transpose()?;
    let files = bochs::write_config(cfg, dir, &iso, port)?;
    // Created before Bochs starts so that the follower can open it at once.
    File::create(&files.serial)?;
    let out = File::create(&files.stdout)?;
    let mut cmd = bochs::command(&files);
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let start = Instant::now();
    let mut emu = Guarded::spawn(&mut cmd, true).context("starting bochs")?;
    if let Some(listener) = listener {
        let mut source = accept_bochs_console(listener, &mut emu, &files.serial)?;
        let mut outcome = watch(cfg, &mut emu, &mut source, start)?;
        let _ = std::fs::write(dir.join("console.log"), outcome.lines.join("\n"));
        if outcome.matched {
            let _ = std::fs::remove_file(&iso);
        } else {
            outcome.diagnostics = log_tails(&[files.stdout, files.log]);
        }
        return Ok(outcome);
    }
    let mut source = FileSource {
        file: File::open(&files.serial)?,
    };
    if cfg.expect.is_empty() {
        let mut stdout = std::io::stdout();
        let status = loop {
            let bytes = source.poll(POLL);
            if !bytes.is_empty() {
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            }
            if let Some(status) = emu.try_wait()? {
                stdout.write_all(&source.drain())?;
                stdout.flush()?;
                break Some(status);
            }
            if interrupted() {
                emu.kill();
                break None;
            }
        };
        return Ok(interactive_outcome(status, start));
    }
    let mut outcome = watch(cfg, &mut emu, &mut source, start)?;
    // The whole console, for reading after a failure.
    let _ = std::fs::write(dir.join("console.log"), outcome.lines.join("\n"));
    if outcome.matched {
        // The ISO is the only large file; keep everything of failed runs for debugging.
        let _ = std::fs::remove_file(&iso);
    } else {
        outcome.diagnostics = log_tails(&[files.stdout, files.log]);
    }
    Ok(outcome)
}

fn interactive_outcome(status: Option<std::process::ExitStatus>, start: Instant) -> RunOutcome {
    let reason = match status {
        Some(status) if !interrupted() => format!(
            "emulator exited with {status} after {:.1} s",
            start.elapsed().as_secs_f64()
        ),
        _ => "interrupted: emulator killed".to_string(),
    };
    RunOutcome {
        line_times: Vec::new(),
        matched: status.is_some() && !interrupted(),
        reason,
        diagnostics: Vec::new(),
        lines: Vec::new(),
        elapsed_to_match: None,
    }
}

/// "see FILE" and the last few lines of each emulator log.
fn log_tails(paths: &[PathBuf]) -> Vec<String> {
    let mut out = Vec::new();
    for path in paths {
        let Ok(text) = std::fs::read(path) else {
            continue;
        };
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        if lines.is_empty() {
            continue;
        }
        out.push(format!("{}:", path.display()));
        for line in crate::console::tail(&lines, 5) {
            out.push(format!("  {line}"));
        }
    }
    out
}

/// Console bytes as they arrive.
trait ConsoleSource {
    /// New bytes, waiting up to `wait` when there are none.
    fn poll(&mut self, wait: Duration) -> Vec<u8>;
    /// Whatever is left once the emulator has exited.
    fn drain(&mut self) -> Vec<u8>;
    /// Types `bytes` at the console, where the emulator takes input.
    fn send(&mut self, _bytes: &[u8]) {}
}

/// QEMU's stdout, read by a thread; its stdin is the serial input.
struct PipeSource {
    rx: Receiver<Vec<u8>>,
    stdin: Option<Box<dyn std::io::Write>>,
}

impl ConsoleSource for PipeSource {
    fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(bytes).and_then(|()| stdin.flush());
        }
    }

    fn poll(&mut self, wait: Duration) -> Vec<u8> {
        match self.rx.recv_timeout(wait) {
            Ok(mut bytes) => {
                while let Ok(more) = self.rx.try_recv() {
                    bytes.extend_from_slice(&more);
                }
                bytes
            }
            Err(RecvTimeoutError::Timeout) => Vec::new(),
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(wait);
                Vec::new()
            }
        }
    }

    fn drain(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut bytes = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(more) => bytes.extend_from_slice(&more),
                Err(_) => return bytes,
            }
        }
    }
}

/// Bochs's com1 file, followed as it grows.
struct FileSource {
    file: File,
}

impl ConsoleSource for FileSource {
    fn poll(&mut self, wait: Duration) -> Vec<u8> {
        let bytes = self.drain();
        if bytes.is_empty() {
            std::thread::sleep(wait);
        }
        bytes
    }

    fn drain(&mut self) -> Vec<u8> {
        let mut bytes = Vec::new();
        let _ = self.file.read_to_end(&mut bytes);
        bytes
    }
}

/// Line bookkeeping of one watched run.
struct Watch<'a> {
    cfg: &'a RunConfig,
    splitter: LineSplitter,
    matcher: Matcher,
    lines: Vec<String>,
    line_times: Vec<Duration>,
    start: Instant,
    /// Input steps not yet triggered, and bytes ready to type.
    input: std::collections::VecDeque<(Regex, Vec<u8>)>,
    typed: Vec<u8>,
}

impl Watch<'_> {
    /// Take console bytes; `Some` once the run is decided.
    fn take(&mut self, bytes: &[u8]) -> Option<RunOutcome> {
        let lines = self.splitter.push(bytes);
        self.take_lines(lines)
    }

    fn take_lines(&mut self, lines: Vec<String>) -> Option<RunOutcome> {
        for line in lines {
            if self.cfg.echo {
                println!("{line}");
            }
            let verdict = self.matcher.feed(&line);
            if self.input.front().is_some_and(|(re, _)| re.is_match(&line)) {
                if let Some((_, bytes)) = self.input.pop_front() {
                    self.typed.extend_from_slice(&bytes);
                }
            }
            self.lines.push(line);
            self.line_times.push(self.start.elapsed());
            match verdict {
                Verdict::Pending => {}
                Verdict::Matched => {
                    let elapsed = self.start.elapsed();
                    return Some(self.outcome(
                        true,
                        format!("matched after {:.2} s", elapsed.as_secs_f64()),
                        Some(elapsed),
                    ));
                }
                Verdict::Failed(reason) => return Some(self.outcome(false, reason, None)),
            }
        }
        None
    }

    fn finish(&mut self) -> Option<RunOutcome> {
        let last = self.splitter.finish();
        self.take_lines(last.into_iter().collect())
    }

    fn waiting_for(&self) -> String {
        self.matcher
            .waiting_for()
            .map(|re| re.as_str().to_string())
            .unwrap_or_default()
    }

    fn outcome(&mut self, matched: bool, reason: String, elapsed: Option<Duration>) -> RunOutcome {
        RunOutcome {
            matched,
            reason,
            diagnostics: Vec::new(),
            lines: std::mem::take(&mut self.lines),
            line_times: std::mem::take(&mut self.line_times),
            elapsed_to_match: elapsed,
        }
    }
}

/// Follow the console until the expected lines, a failure line, the emulator's exit, the timeout or
/// Ctrl-C. The emulator is killed before this returns.
fn watch(
    cfg: &RunConfig,
    emu: &mut Guarded,
    source: &mut dyn ConsoleSource,
    start: Instant,
) -> Result<RunOutcome> {
    let mut w = Watch {
        cfg,
        splitter: LineSplitter::default(),
        matcher: Matcher::with_parallel(cfg.expect.clone(), cfg.parallel.clone(), cfg.fail.clone()),
        lines: Vec::new(),
        line_times: Vec::new(),
        start,
        input: cfg.input.iter().cloned().collect(),
        typed: Vec::new(),
    };
    let deadline = start + cfg.timeout;
    loop {
        if let Some(outcome) = w.take(&source.poll(POLL)) {
            emu.kill();
            return Ok(outcome);
        }
        if !w.typed.is_empty() {
            source.send(&std::mem::take(&mut w.typed));
        }
        if let Some(status) = emu.try_wait()? {
            emu.kill();
            let rest = source.drain();
            if let Some(outcome) = w.take(&rest).or_else(|| w.finish()) {
                return Ok(outcome);
            }
            let reason = format!("emulator exited with {status} before /{}/", w.waiting_for());
            return Ok(w.outcome(false, reason, None));
        }
        let timed_out = Instant::now() >= deadline;
        if timed_out || interrupted() {
            emu.kill();
            let reason = if timed_out {
                format!(
                    "timeout after {} s waiting for /{}/",
                    cfg.timeout.as_secs(),
                    w.waiting_for()
                )
            } else {
                format!("interrupted while waiting for /{}/", w.waiting_for())
            };
            return Ok(w.outcome(false, reason, None));
        }
    }
}
