//! The host side of the Linux passthrough cases: the bytes xtask puts on the passed-through NVMe
//! drive and serves over HTTP to the passed-through NIC, and the tiny HTTP server itself.
//!
//! Everything is deterministic (SHA-256 in counter mode over a label), so that a case knows the
//! hashes the guest must print without trusting anything the guest says.
//!
//! How the server's port reaches the guest: the server listens on a free loopback port chosen at
//! run time, and the URL `http://10.0.2.2:PORT/FILE` travels in the DHCP offer of the emulator's
//! user network as its boot file name (QEMU `-netdev user,bootfile=`, given through a
//! `-readconfig` file in the run directory; Bochs `bootfile =` in its slirp configuration file).
//! The guest's static command line says `quercus.fetch=dhcp`, and its DHCP script keeps the boot
//! file name. Both emulators' user networks map 10.0.2.2 to the host's loopback.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// The NVMe drive's file in the run directory (QEMU's working directory).
pub const NVME_IMAGE: &str = "nvme.img";
/// Its size.
pub const NVME_BYTES: u64 = 16 << 20;
/// xtask's pattern at the start of the drive (the guest reads it).
pub const NVME_READ_BYTES: usize = 1 << 20;
/// Where the guest writes its pattern, and how much.
pub const NVME_WRITE_OFFSET: u64 = 8 << 20;
pub const NVME_WRITE_BYTES: usize = 1 << 20;
/// The file the guest downloads in the test cases.
pub const FETCH_FILE: &str = "quercus-fetch.bin";
pub const FETCH_BYTES: usize = 1 << 20;
/// The file the benchmark downloads.
pub const BENCH_FILE: &str = "quercus-bench.bin";
pub const BENCH_BYTES: usize = 16 << 20;
/// The QEMU `-readconfig` file (run directory) defining the user network `pt0`.
pub const QEMU_NET_CONFIG: &str = "ptnet.cfg";
/// The Bochs slirp configuration file (run directory).
pub const SLIRP_CONFIG: &str = "slirp.conf";
/// The host's loopback as the emulators' user networks show it to the guest.
pub const HOST_FROM_GUEST: &str = "10.0.2.2";

/// `len` bytes of SHA-256 in counter mode: block `i` is SHA-256(`label` || i as u64 LE).
pub fn pattern(label: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len.next_multiple_of(32));
    let mut counter = 0u64;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(label.as_bytes());
        h.update(counter.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The first MiB of the NVMe drive, as xtask writes it.
pub fn nvme_read_pattern() -> Vec<u8> {
    pattern("quercus passthrough nvme", NVME_READ_BYTES)
}

/// What the guest writes at [`NVME_WRITE_OFFSET`]: 32768 lines `quercus nvme N\n` of 32 bytes,
/// N from 0 in 18 digits (the guest's `nvme_pattern`, linux_image.rs).
pub fn nvme_written() -> Vec<u8> {
    let mut out = Vec::with_capacity(NVME_WRITE_BYTES);
    for i in 0..NVME_WRITE_BYTES / 32 {
        out.extend_from_slice(format!("quercus nvme {i:018}\n").as_bytes());
    }
    out
}

/// The file served as [`FETCH_FILE`].
pub fn fetch_file() -> Vec<u8> {
    pattern("quercus passthrough fetch", FETCH_BYTES)
}

/// The file served as [`BENCH_FILE`].
pub fn bench_file() -> Vec<u8> {
    pattern("quercus passthrough bench", BENCH_BYTES)
}

/// The hashes the guest must print: (the fetched file, the drive's first MiB, the written MiB).
pub fn expected_hashes() -> (String, String, String) {
    (
        sha256_hex(&fetch_file()),
        sha256_hex(&nvme_read_pattern()),
        sha256_hex(&nvme_written()),
    )
}

/// Writes the NVMe drive: [`nvme_read_pattern`], then zeros up to [`NVME_BYTES`].
pub fn write_nvme_image(path: &Path) -> Result<()> {
    let mut image = nvme_read_pattern();
    image.resize(NVME_BYTES as usize, 0);
    std::fs::write(path, image).with_context(|| format!("writing {}", path.display()))
}

/// Checks the NVMe drive after the guest ran: xtask's pattern still at the start, the guest's
/// at [`NVME_WRITE_OFFSET`], byte for byte.
pub fn check_nvme_image(path: &Path) -> Result<(), String> {
    let image = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    if image.len() as u64 != NVME_BYTES {
        return Err(format!(
            "{} has {} bytes, {NVME_BYTES} expected",
            path.display(),
            image.len()
        ));
    }
    if image[..NVME_READ_BYTES] != nvme_read_pattern()[..] {
        return Err(format!(
            "{}: the first MiB (xtask's pattern) changed",
            path.display()
        ));
    }
    let at = NVME_WRITE_OFFSET as usize;
    let found = &image[at..at + NVME_WRITE_BYTES];
    let want = nvme_written();
    if let Some(i) = (0..NVME_WRITE_BYTES).find(|&i| found[i] != want[i]) {
        return Err(format!(
            "{}: the guest's pattern at {:#x} differs from byte {:#x} on ({:?} instead of {:?})",
            path.display(),
            at,
            at + i,
            String::from_utf8_lossy(&found[i & !31..(i & !31) + 32]),
            String::from_utf8_lossy(&want[i & !31..(i & !31) + 32]),
        ));
    }
    Ok(())
}

/// The URL of `file` on the server at `port`, as the guest sees it.
pub fn guest_url(port: u16, file: &str) -> String {
    format!("http://{HOST_FROM_GUEST}:{port}/{file}")
}

/// The QEMU `-readconfig` file that defines the user network `pt0` with `bootfile` as the DHCP
/// boot file name.
pub fn qemu_net_config(bootfile: &str) -> String {
    format!("[netdev \"pt0\"]\n  type = \"user\"\n  bootfile = \"{bootfile}\"\n")
}

/// The Bochs slirp configuration file with `bootfile` as the DHCP boot file name (its first
/// line is mandatory).
pub fn slirp_config(bootfile: &str) -> String {
    format!("# slirp config\nbootfile = {bootfile}\n")
}

// ---------------------------------------------------------------------------------------------
// The HTTP server
// ---------------------------------------------------------------------------------------------

/// A running file server on 127.0.0.1; stopped (and its thread joined) when dropped.
pub struct FileServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    /// Serves `files` (path without the leading `/` to contents) with HTTP/1.0 on a free loopback
    /// port, one connection at a time.
    pub fn start(files: BTreeMap<String, Arc<Vec<u8>>>) -> Result<FileServer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("http-{port}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                // A client that goes away mid-transfer is its own problem.
                                let _ = serve(stream, &files, &stop);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                })?
        };
        Ok(FileServer {
            port,
            stop,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The path of an HTTP request line `GET /path HTTP/1.x`, without the leading `/`.
pub fn request_path(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    let (method, target, version) = (words.next()?, words.next()?, words.next()?);
    (method == "GET" && version.starts_with("HTTP/") && words.next().is_none())
        .then(|| target.strip_prefix('/'))
        .flatten()
}

/// Answers one request; `Ok(true)` when a file was sent whole.
fn serve(
    stream: TcpStream,
    files: &BTreeMap<String, Arc<Vec<u8>>>,
    stop: &AtomicBool,
) -> Result<bool> {
    stream.set_nonblocking(false)?;
    // Slow emulated guests: generous, but bounded so that a stuck client cannot hold the server.
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers, up to the empty line.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
    }
    let mut out = stream;
    let Some(body) = request_path(request.trim()).and_then(|p| files.get(p)) else {
        out.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(false);
    };
    out.write_all(
        format!(
            "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )?;
    for chunk in body.chunks(64 * 1024) {
        if stop.load(Ordering::Relaxed) {
            bail!("server stopped");
        }
        out.write_all(chunk)?;
    }
    out.flush()?;
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Run directories
// ---------------------------------------------------------------------------------------------

/// What a passthrough run directory needs: the NVMe drive, the file server, and the user
/// network's configuration naming the server's `file` (QEMU's `-readconfig` file, or with
/// `bochs` Bochs' slirp file). The server lives as long as the returned guard.
pub fn prepare(dir: &Path, file: &str, bochs: bool) -> Result<FileServer> {
    write_nvme_image(&dir.join(NVME_IMAGE))?;
    let mut files = BTreeMap::new();
    files.insert(FETCH_FILE.to_string(), Arc::new(fetch_file()));
    if file == BENCH_FILE {
        files.insert(BENCH_FILE.to_string(), Arc::new(bench_file()));
    }
    if !files.contains_key(file) {
        bail!("no file {file} to serve");
    }
    let server = FileServer::start(files)?;
    let url = guest_url(server.port(), file);
    let (name, text) = if bochs {
        (SLIRP_CONFIG, slirp_config(&url))
    } else {
        (QEMU_NET_CONFIG, qemu_net_config(&url))
    };
    std::fs::write(dir.join(name), text)
        .with_context(|| format!("writing {}", dir.join(name).display()))?;
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn patterns_are_deterministic_and_distinct() {
        let a = pattern("x", 100);
        assert_eq!(a.len(), 100);
        assert_eq!(a, pattern("x", 100));
        assert_ne!(a, pattern("y", 100));
        // Counter mode: the first block is SHA-256("x" || 0u64).
        let mut first = b"x".to_vec();
        first.extend_from_slice(&0u64.to_le_bytes());
        assert_eq!(&a[..32], &Sha256::digest(&first)[..]);
        assert_eq!(pattern("x", 40)[..], a[..40]);
        assert_eq!(fetch_file().len(), FETCH_BYTES);
        assert_ne!(fetch_file()[..64], nvme_read_pattern()[..64]);
        // A known value, so that a change of the generator is noticed.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn nvme_written_lines() {
        let w = nvme_written();
        assert_eq!(w.len(), NVME_WRITE_BYTES);
        assert_eq!(&w[..32], b"quercus nvme 000000000000000000\n");
        assert_eq!(&w[w.len() - 32..], b"quercus nvme 000000000000032767\n");
    }

    #[test]
    fn nvme_image_check() {
        let dir = std::env::temp_dir().join(format!("quercus-nvme-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(NVME_IMAGE);
        write_nvme_image(&path).unwrap();
        assert!(check_nvme_image(&path).is_err(), "nothing written yet");
        let mut image = std::fs::read(&path).unwrap();
        let at = NVME_WRITE_OFFSET as usize;
        image[at..at + NVME_WRITE_BYTES].copy_from_slice(&nvme_written());
        std::fs::write(&path, &image).unwrap();
        assert_eq!(check_nvme_image(&path), Ok(()));
        // One wrong byte in the guest's part, then in xtask's.
        image[at + 5000] ^= 1;
        std::fs::write(&path, &image).unwrap();
        let err = check_nvme_image(&path).unwrap_err();
        assert!(err.contains("byte 0x801388"), "{err}");
        image[at + 5000] ^= 1;
        image[10] ^= 1;
        std::fs::write(&path, &image).unwrap();
        assert!(check_nvme_image(&path).unwrap_err().contains("first MiB"));
        std::fs::write(&path, &image[..4096]).unwrap();
        assert!(check_nvme_image(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn request_lines() {
        assert_eq!(request_path("GET /a.bin HTTP/1.1"), Some("a.bin"));
        assert_eq!(request_path("GET / HTTP/1.0"), Some(""));
        assert_eq!(request_path("POST /a.bin HTTP/1.1"), None);
        assert_eq!(request_path("GET a.bin HTTP/1.1"), None);
        assert_eq!(request_path("GET /a.bin"), None);
        assert_eq!(request_path(""), None);
    }

    fn get(port: u16, path: &str) -> (String, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(format!("GET /{path} HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n").as_bytes())
            .unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (
            String::from_utf8_lossy(&all[..split]).into_owned(),
            all[split + 4..].to_vec(),
        )
    }

    #[test]
    fn server_serves_files_and_stops() {
        let body = Arc::new(pattern("served", 300_000));
        let files = BTreeMap::from([("f.bin".to_string(), body.clone())]);
        let server = FileServer::start(files).unwrap();
        let port = server.port();
        let (head, got) = get(port, "f.bin");
        assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Length: 300000"), "{head}");
        assert_eq!(got, *body);
        let (head, got) = get(port, "missing");
        assert!(head.starts_with("HTTP/1.0 404"), "{head}");
        assert!(got.is_empty());
        drop(server);
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "still listening"
        );
    }

    #[test]
    fn run_directory_for_qemu_and_bochs() {
        let dir = std::env::temp_dir().join(format!("quercus-pt-prepare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let server = prepare(&dir, FETCH_FILE, false).unwrap();
        let cfg = std::fs::read_to_string(dir.join(QEMU_NET_CONFIG)).unwrap();
        let url = format!("http://10.0.2.2:{}/{FETCH_FILE}", server.port());
        assert_eq!(
            cfg,
            format!("[netdev \"pt0\"]\n  type = \"user\"\n  bootfile = \"{url}\"\n")
        );
        assert_eq!(
            std::fs::metadata(dir.join(NVME_IMAGE)).unwrap().len(),
            NVME_BYTES
        );
        let (_, got) = get(server.port(), FETCH_FILE);
        assert_eq!(sha256_hex(&got), expected_hashes().0);
        drop(server);
        let server = prepare(&dir, BENCH_FILE, true).unwrap();
        let slirp = std::fs::read_to_string(dir.join(SLIRP_CONFIG)).unwrap();
        assert!(slirp.starts_with("# slirp config\n"));
        assert!(slirp.contains(&format!(
            "bootfile = http://10.0.2.2:{}/{BENCH_FILE}\n",
            server.port()
        )));
        // The URL fits the 128-byte BOOTP file field.
        assert!(guest_url(65535, BENCH_FILE).len() < 128);
        drop(server);
        assert!(prepare(&dir, "other.bin", false).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
