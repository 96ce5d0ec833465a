//! The Linux test guest: Debian's kernel (a bzImage) and a busybox initramfs, both made from Debian
//! packages at test time and cached in `target/guest-images/linux/` (nothing prebuilt is committed).
//!
//! `linux_guest` resolves `linux-image-amd64` to the versioned kernel package it depends on, downloads
//! that and `busybox-static` into `target/guest-images/debs/` with `apt-get download`, unpacks them with
//! `dpkg-deb -x` and writes the initramfs (a gzip'd newc cpio made here). A stamp file holds a hash of
//! the inputs (the exact .deb files, the /init script, the module list, the layout version): when it
//! matches, the cached image is used as is.
//!
//! The guest's /init prints machine-checkable lines on the console:
//! `QUERCUS-GUEST: up`, then `QUERCUS-GUEST: cpus=N mem_kb=N kernel=VERSION`, then
//! `QUERCUS-GUEST: pci devices=<the entries of /sys/bus/pci/devices>` and each kernel log line that
//! names MMCONFIG as `QUERCUS-GUEST: dmesg: <line>`, then acts on the kernel
//! command line (see [`INIT_SCRIPT`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// The metapackage that names the current kernel package in its Depends.
pub const KERNEL_META: &str = "linux-image-amd64";
/// A static busybox at `/bin/busybox`.
pub const BUSYBOX: &str = "busybox-static";
/// Modules copied into the initramfs (with what they depend on) for the virtio devices a VM may get
/// and the ext4 filesystem on its virtio-blk disk; `quercus.modules=1` on the command line loads
/// them. `crc32c_generic` comes before `ext4`: ext4 and jbd2 ask the crypto API for "crc32c"
/// (a soft dependency `depends=` does not show) when they mount a filesystem with metadata
/// checksums, and nothing in the initramfs could load it on demand. (`crc32c-intel` would need
/// SSE4.2, which QEMU's `qemu64` CPU lacks.) `cpuid` gives user space `/dev/cpu/N/cpuid`, through
/// which the benchmark modes read Quercus's statistics leaf 0x4000_0001. `e1000e` (QEMU's 82574),
/// `e1000` (Bochs' 82540EM) and `nvme` drive the passed-through devices of the `passthrough*`
/// modes; `nvme` brings `nvme_core`, `t10_pi`, `crc_t10dif`, `crc64_rocksoft` and `crc64` (the
/// CRC libraries fall back to their generic code when no crypto driver is loaded).
pub const MODULE_ROOTS: &[&str] = &[
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio_rng",
    "crc32c_generic",
    "ext4",
    "cpuid",
    "e1000e",
    "e1000",
    "nvme",
    "uio_pci_generic",
];
/// Bump when the image layout changes in a way the other inputs do not show (cpio writer, file list).
const LAYOUT_VERSION: u32 = 1;
/// The file in the initramfs listing the module paths in load (`insmod`) order.
const MODULE_LIST: &str = "etc/quercus-modules";
/// The TCP port of the `net-server` / `net-client` transfer.
#[cfg(test)]
const NET_PORT: u16 = 5001;
/// Bytes the `net-client` test sends (16 MiB).
pub const NET_BYTES: u64 = 16 << 20;

/// The initramfs's `/init`.
///
/// Kernel command line words it acts on (read from /proc/cmdline):
/// - `quercus.modules=1`: insmod the modules ([`MODULE_ROOTS`] and their dependencies), then
///   `QUERCUS-GUEST: modules loaded=N of M` and `QUERCUS-GUEST: hwrng=NAME`, NAME being the
///   hardware RNG in use (`/sys/class/misc/hw_random/rng_current`, e.g. `virtio_rng.0`) or `none`.
/// - `quercus.test=poweroff`: `poweroff -f` (ACPI), after `QUERCUS-GUEST: powering off`.
/// - `quercus.test=reboot` (or `reboot-once`): `QUERCUS-GUEST: rebooting`, `reboot -f`. Nothing survives
///   the reboot and the command line is the same, so this reboots forever: a test waits for the second
///   `QUERCUS-GUEST: up`.
/// - `quercus.test=panic`: `QUERCUS-GUEST: panicking`, then a sysrq crash (a kernel panic).
/// - `quercus.test=virtio-blk` (with `quercus.modules=1`): waits up to 10 s for `/dev/vda` and mounts
///   it (ext4, the `disk` module of `disk_image`) on /mnt. Without `/mnt/written.txt`:
///   `QUERCUS-GUEST: blk hello sha256=HEX` and `QUERCUS-GUEST: blk data sha256=HEX` (of
///   `hello.txt` and `data.bin`), then writes `written.txt` (`disk_image::written_txt`: lines
///   `written by quercus vm, line N`, N from 1 to 128), syncs, unmounts,
///   `QUERCUS-GUEST: blk wrote` and `reboot -f`. With it (after that reboot):
///   `QUERCUS-GUEST: blk found written sha256=HEX`, unmount, `poweroff -f`.
/// - `quercus.test=net-server` (with `quercus.ip=A.B.C.D/NN`): eth0 up with that address, receives
///   one TCP connection on port 5001 (busybox `nc -l`) into /tmp/rx, then
///   `QUERCUS-GUEST: net rx bytes=N sha256=HEX`.
/// - `quercus.test=net-client` (with `quercus.ip=` and `quercus.peer=A.B.C.D`): eth0 up, pings the
///   peer until it answers (up to 30 s): `QUERCUS-GUEST: net ping ok`; 16 MiB from /dev/urandom into
///   /tmp/tx: `QUERCUS-GUEST: net tx bytes=N sha256=HEX`; sends it to peer:5001 with `nc`
///   (connecting again for up to 30 s while the server is not listening yet), then
///   `QUERCUS-GUEST: net sent`.
/// - `quercus.test=net-isolated` (with `quercus.ip=` and `quercus.peer=`): eth0 up, pings the peer
///   for up to 10 s, then `QUERCUS-GUEST: net isolated ping=fail|ok rx_packets=N` (eth0's received
///   packets). With `quercus.watch=SECS` it then prints
///   `QUERCUS-GUEST: net isolated watch rx_packets=N` every 5 s for SECS seconds, so that a test
///   can read the count after the other VMs' traffic.
/// - `quercus.test=demo` (the default scenario; with `quercus.modules=1`, `quercus.ip=` and
///   `quercus.peer=`): mounts the virtio disk `/dev/vda` (ext4, writable) on /mnt:
///   `QUERCUS-GUEST: demo disk /dev/vda (virtio-blk, ext4) on /mnt: FILES`; writes
///   `QUERCUS-GUEST: demo hello on hvc0, the virtio console` to /dev/hvc0; eth0 up; `ping -c 3`
///   the peer (its output shown), then `QUERCUS-GUEST: demo ping ok` if all three were answered,
///   else `QUERCUS-GUEST: demo ping fail (WHY)`; a few lines of things to try; then the shell.
/// - `quercus.test=bench-blk` (with `quercus.modules=1`; `quercus.bench_mib=N`, default 16, and
///   `quercus.bench_4k=N`, default 1024): benchmarks the raw disk `/dev/vda` (its filesystem is
///   overwritten) with busybox `dd` and direct I/O: a sequential read of N MiB with
///   `bs=1048576`, the same read again in requests of at most 64 KiB (`max_sectors_kb`: sixteen
///   per 1M block, `read-split`), a buffered read of N MiB with 1 MiB of readahead in 64 KiB
///   requests (the readahead queues each window's requests at once: `read-ahead`), a write of
///   N MiB, then a read and a write of `bench_4k` blocks with `bs=4096`; then
///   `QUERCUS-BENCH: done`. Before the steps: `QUERCUS-BENCH: disk sectors=N max_sectors_kb=N
///   max_segments=N read_ahead_kb=N scheduler=NAME` (`quercus.bench_sched=NAME` sets the disk's
///   I/O scheduler first, e.g. `none`). With
///   `quercus.bench_pause=S` it prints `QUERCUS-BENCH: pause` and sleeps S seconds twice before
///   the first step and once after each step (the host may read the hypervisor's exit counters
///   at each pause: the first interval is a pause alone, each further one a pause and a step).
/// - `quercus.test=bench-net-server` (with `quercus.ip=`): eth0 up, receives one TCP connection on
///   port 5001 (`nc -l`) and counts its bytes, measured from the first byte to the end.
/// - `quercus.test=bench-net-client` (with `quercus.ip=`, `quercus.peer=`, `quercus.bench_mib=N`):
///   eth0 up, pings the peer, sends N MiB of zeros to peer:5001 (`dd | nc`, connecting again for
///   up to 30 s while the server is not listening yet).
/// - `quercus.test=passthrough-nic` (with `quercus.modules=1` and `quercus.fetch=URL`, or
///   `quercus.fetch=dhcp`: the boot file name of the DHCP offer is the URL): the first network
///   interface that is not `lo` (waiting up to 10 s), up, configured by DHCP (busybox `udhcpc`
///   with [`UDHCPC_SCRIPT`] applying address and router): `QUERCUS-GUEST: nic IFACE
///   driver=DRIVER addr=A.B.C.D/NN`; the URL downloaded with busybox `wget` into /tmp:
///   `QUERCUS-GUEST: nic fetched bytes=N sha256=HEX`; the interface's interrupts (every
///   `/proc/interrupts` line whose action is IFACE or IFACE-*, all CPUs) and the chip of the
///   first: `QUERCUS-GUEST: nic irqs=N kind=K` (K e.g. `PCI-MSI`, `IR-PCI-MSI`, `IO-APIC`); then
///   `QUERCUS-GUEST: passthrough done` and `poweroff -f`.
/// - `quercus.test=passthrough-nvme` (with `quercus.modules=1`): waits up to 20 s for
///   `/dev/nvme0n1`, reads its first 4 KiB, then its first MiB with direct I/O:
///   `QUERCUS-GUEST: nvme read sha256=HEX`; writes 1 MiB of `quercus nvme N` lines (32 bytes
///   each, N from 0 in 18 digits) at 8 MiB (`dd oflag=direct conv=fsync,notrunc`) and reads it
///   back with direct I/O: `QUERCUS-GUEST: nvme wrote sha256=HEX` (of what was read back);
///   `QUERCUS-GUEST: nvme irqs=N kind=K` (actions `nvme0qN`); then `passthrough done` and
///   `poweroff -f`.
/// - `quercus.test=passthrough`: the NIC's steps, then the NVMe drive's, then `passthrough done`
///   and `poweroff -f`. Any failing step prints `QUERCUS-GUEST: passthrough error WHAT` (then the
///   shell).
/// - `quercus.test=bench-passthrough` (with `quercus.modules=1`, `quercus.fetch=`,
///   `quercus.bench_mib=N`): the NIC as in `passthrough-nic`, then the benchmark lines (below):
///   `QUERCUS-BENCH: nic fetch bytes=N packets=P irqs=I kind=K FIELDS` (the download with `wget`
///   into /tmp; P: packets received), `QUERCUS-BENCH: nvme read|write bs=1048576 count=N
///   bytes=N reqs=R irqs=I kind=K FIELDS` (direct I/O at the start of `/dev/nvme0n1`, which the
///   write overwrites with zeros; R from `/sys/block/nvme0n1/stat`), `QUERCUS-BENCH: done`,
///   `passthrough done`, `poweroff -f`.
/// - `quercus.test=ivshmem-send` and `quercus.test=ivshmem-recv` (with `quercus.modules=1`; issue
///   14): the VM's ivshmem device (1af4:1110) is bound to the stock `uio_pci_generic` (`new_id`),
///   its registers and shared memory reached with busybox `devmem` at the addresses sysfs gives,
///   its INTx doorbell interrupts taken by reading `/dev/uio0` (and re-armed by clearing Command
///   bit 10 through sysfs `config`, which the driver's handler set).
///   The receiver writes READY into the region and waits for the interrupt; the sender waits for
///   READY, writes a 1,536-byte file (64 lines `ivshmem file line N`) into the region, its length and
///   SENT, rings peer 1 and waits for the answer interrupt. The receiver rebuilds the file from
///   the region, prints `QUERCUS-GUEST: ivshmem received bytes=N sha256=HEX irqs=I`, writes DONE
///   and rings peer 0; the sender prints `QUERCUS-GUEST: ivshmem sent bytes=N sha256=HEX irqs=I`
///   (I: the uio interrupt count). Both then power off. A failure prints
///   `QUERCUS-GUEST: ivshmem error WHAT` (then the shell).
/// - `quercus.test=msgchan` (with `quercus.modules=1`; issue 14): `/bin/qmsg exchange --count
///   10000` (tools/qmsg, built static by xtask; it binds the ivshmem device to
///   `uio_pci_generic` itself) against the other peer of the region; its output lines are echoed as
///   `QUERCUS-GUEST: qmsg: exchange peer=P sent=N received=N doorbells=D waits=W irqs=I ms=T`
///   (or `QUERCUS-GUEST: qmsg: error WHY` and `QUERCUS-GUEST: msgchan error ...`), then power off.
/// - otherwise: `QUERCUS-GUEST: shell` and an interactive shell on the console (restarted when it exits).
///
/// The benchmark modes print machine-readable lines: first `QUERCUS-BENCH: hv=quercus|none
/// cpus=N clocksource=NAME` (`quercus` when CPUID leaf 0x4000_0000 carries the signature
/// `QuercusHV`; the kernel's clocksource), then three
/// `QUERCUS-BENCH: null FIELDS` (an empty measurement: the cost of the brackets themselves), then
/// one line per measurement: `QUERCUS-BENCH: blk read|read-split|read-ahead|write bs=B count=N
/// bytes=N reqs=R irqs=I FIELDS`
/// (R: requests the kernel completed on vda meanwhile, `/sys/block/vda/stat`; I: interrupts of
/// the virtio devices, `/proc/interrupts`), `QUERCUS-BENCH: net rx bytes=N packets=P irqs=I
/// FIELDS` (server) or `QUERCUS-BENCH: net tx bytes=N packets=P irqs=I FIELDS` (client; P:
/// eth0's packets received or sent meanwhile). FIELDS is `ns=T`
/// (the kernel's monotonic clock, `/proc/timer_list`, around the step) and, under Quercus only,
/// `exits=E tsc=C`: the differences of two reads of the statistics leaf (this vCPU's VM exits,
/// the TSC) through `/dev/cpu/0/cpuid` around the step, the second read's own CPUID exit
/// included. The shell pins itself to CPU 0 (`taskset`) when the VM has more than one.
///
/// A failing virtio test prints `QUERCUS-GUEST: blk error WHAT` or `QUERCUS-GUEST: net error WHAT`,
/// a failing benchmark `QUERCUS-GUEST: bench error WHAT` (then the shell).
pub const INIT_SCRIPT: &str = r#"#!/bin/sh
# /init of the Quercus Linux test guest (written by cargo xtask: xtask/src/linux_image.rs).
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
echo "QUERCUS-GUEST: up"
mem_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
echo "QUERCUS-GUEST: cpus=$(nproc) mem_kb=$mem_kb kernel=$(uname -r)"
echo "QUERCUS-GUEST: pci devices=$(ls /sys/bus/pci/devices | tr '\n' ' ')"
dmesg | grep MMCONFIG | while read -r line; do echo "QUERCUS-GUEST: dmesg: $line"; done
test=
modules=
ip=
peer=
watch=0
bench_mib=16
bench_4k=1024
bench_pause=0
bench_sched=
fetch=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        quercus.test=*) test="${arg#quercus.test=}" ;;
        quercus.modules=*) modules="${arg#quercus.modules=}" ;;
        quercus.ip=*) ip="${arg#quercus.ip=}" ;;
        quercus.peer=*) peer="${arg#quercus.peer=}" ;;
        quercus.watch=*) watch="${arg#quercus.watch=}" ;;
        quercus.bench_mib=*) bench_mib="${arg#quercus.bench_mib=}" ;;
        quercus.bench_4k=*) bench_4k="${arg#quercus.bench_4k=}" ;;
        quercus.bench_pause=*) bench_pause="${arg#quercus.bench_pause=}" ;;
        quercus.bench_sched=*) bench_sched="${arg#quercus.bench_sched=}" ;;
        quercus.fetch=*) fetch="${arg#quercus.fetch=}" ;;
    esac
done
if [ "$modules" = 1 ]; then
    loaded=0
    total=0
    for m in $(cat /etc/quercus-modules); do
        total=$((total + 1))
        insmod "$m" && loaded=$((loaded + 1))
    done
    echo "QUERCUS-GUEST: modules loaded=$loaded of $total"
    rng=
    if [ -r /sys/class/misc/hw_random/rng_current ]; then
        rng=$(cat /sys/class/misc/hw_random/rng_current)
    fi
    echo "QUERCUS-GUEST: hwrng=${rng:-none}"
fi

# Wait up to $2 tenths of a second for path $1.
wait_for() {
    n=0
    while [ ! -e "$1" ]; do
        [ "$n" -ge "$2" ] && return 1
        n=$((n + 1))
        sleep 0.1
    done
}

# The ivshmem device (1af4:1110) under uio_pci_generic: sets iv_dev, iv_regs (BAR 0), iv_shm
# (BAR 2) and iv_uio (/dev/uioN); the doorbell interrupt is armed (interrupt mask all ones).
iv_error() {
    echo "QUERCUS-GUEST: ivshmem error $*"
    return 1
}
iv_setup() {
    iv_dev=
    for d in /sys/bus/pci/devices/*; do
        if [ "$(cat "$d/vendor")" = 0x1af4 ] && [ "$(cat "$d/device")" = 0x1110 ]; then
            iv_dev=$d
        fi
    done
    [ -n "$iv_dev" ] || { iv_error "no 1af4:1110 device"; return 1; }
    iv_regs=$(sed -n 1p "$iv_dev/resource" | cut -d' ' -f1)
    iv_shm=$(sed -n 3p "$iv_dev/resource" | cut -d' ' -f1)
    echo "1af4 1110" > /sys/bus/pci/drivers/uio_pci_generic/new_id \
        || { iv_error "uio_pci_generic new_id"; return 1; }
    n=0
    while [ ! -d "$iv_dev/uio" ]; do
        [ "$n" -ge 50 ] && { iv_error "uio_pci_generic did not bind ${iv_dev##*/}"; return 1; }
        n=$((n + 1))
        sleep 0.1
    done
    iv_uio=/dev/$(ls "$iv_dev/uio")
    wait_for "$iv_uio" 50 || { iv_error "no $iv_uio"; return 1; }
    echo "QUERCUS-GUEST: ivshmem ${iv_dev##*/} regs=$iv_regs shm=$iv_shm $iv_uio id=$(devmem $((iv_regs + 8)) 32)"
    echo "QUERCUS-GUEST: ivshmem irq=$(cat "$iv_dev/irq") $(grep -i uio /proc/interrupts | tr -s ' ')"
    devmem $((iv_regs + 0)) 32 0xffffffff
    # Whatever was latched goes; the uio interrupt is (re-)enabled.
    devmem $((iv_regs + 4)) 32 > /dev/null
    iv_arm
}
# Re-enables INTx as uio_pci_generic's users do (its handler set Command bit 10): clears that bit
# with a one-byte write of the Command register's high byte through sysfs `config`.
iv_arm() {
    cmd=$(od -An -tu1 -j5 -N1 "$iv_dev/config") || { iv_error "reading Command"; return 1; }
    printf "\\$(printf %03o $((cmd & ~4)))" > /tmp/iv-cmd
    err=$(dd if=/tmp/iv-cmd of="$iv_dev/config" bs=1 seek=5 count=1 conv=notrunc 2>&1) \
        || { iv_error "writing Command: $(echo $err)"; return 1; }
}
# Waits up to 60 s for the doorbell interrupt, clears it at the device, re-arms it.
iv_wait_irq() {
    timeout 60 dd if="$iv_uio" of=/tmp/iv-count bs=4 count=1 2> /dev/null \
        || { iv_error "no doorbell interrupt within 60 s"; return 1; }
    status=$(devmem $((iv_regs + 4)) 32)
    [ $((status)) -eq 1 ] || { iv_error "interrupt status $status, expected 1"; return 1; }
    iv_arm
}
iv_irqs() {
    set -- $(od -An -tu4 /tmp/iv-count)
    echo "$1"
}
# Shared-region words: READY 0x0, LEN 0x4, SENT 0x8, DONE 0xC, the file from 0x100.
iv_peek() {
    echo $(($(devmem $((iv_shm + $1)) 32)))
}
iv_poke() {
    devmem $((iv_shm + $1)) 32 "$2"
}
ivshmem_send() {
    iv_setup || return
    n=0
    while [ "$(iv_peek 0)" != 1 ]; do
        [ "$n" -ge 600 ] && { iv_error "receiver not ready within 60 s"; return; }
        n=$((n + 1))
        sleep 0.1
    done
    seq 1 64 | while read -r i; do printf 'ivshmem file line %5d\n' "$i"; done > /tmp/tx
    bytes=$(wc -c < /tmp/tx)
    sum=$(sha /tmp/tx) || { iv_error "reading /tmp/tx"; return; }
    off=256
    for w in $(od -An -v -tx4 /tmp/tx); do
        iv_poke $off "0x$w"
        off=$((off + 4))
    done
    iv_poke 4 "$bytes"
    iv_poke 8 1
    devmem $((iv_regs + 12)) 32 $((1 << 16))
    iv_wait_irq || return
    [ "$(iv_peek 12)" = 1 ] || { iv_error "interrupt but DONE is $(iv_peek 12)"; return; }
    echo "QUERCUS-GUEST: ivshmem sent bytes=$bytes sha256=$sum irqs=$(iv_irqs)"
    poweroff -f
}
ivshmem_recv() {
    iv_setup || return
    iv_poke 0 1
    iv_wait_irq || return
    [ "$(iv_peek 8)" = 1 ] || { iv_error "interrupt but SENT is $(iv_peek 8)"; return; }
    bytes=$(iv_peek 4)
    [ "$bytes" -gt 0 ] && [ "$bytes" -le 4096 ] || { iv_error "length $bytes"; return; }
    : > /tmp/rx.hex
    off=0
    while [ "$off" -lt "$bytes" ]; do
        v=$(iv_peek $((256 + off)))
        printf '%02x%02x%02x%02x' $((v & 255)) $(((v >> 8) & 255)) $(((v >> 16) & 255)) \
            $(((v >> 24) & 255)) >> /tmp/rx.hex
        off=$((off + 4))
    done
    xxd -r -p /tmp/rx.hex | head -c "$bytes" > /tmp/rx
    sum=$(sha /tmp/rx) || { iv_error "reading /tmp/rx"; return; }
    echo "QUERCUS-GUEST: ivshmem received bytes=$(wc -c < /tmp/rx) sha256=$sum irqs=$(iv_irqs)"
    iv_poke 12 1
    devmem $((iv_regs + 12)) 32 0
    sleep 1
    poweroff -f
}

# The Quercus message channel (issue 14) with the stock kernel: /bin/qmsg (tools/qmsg, static)
# binds the ivshmem device to uio_pci_generic and exchanges 10,000 checked messages each way
# with the peer; its result line is echoed as `QUERCUS-GUEST: qmsg: ...`.
msgchan() {
    qmsg exchange --count 10000 > /tmp/qmsg.out 2>&1
    rc=$?
    sed 's/^/QUERCUS-GUEST: /' /tmp/qmsg.out
    [ "$rc" = 0 ] || { echo "QUERCUS-GUEST: msgchan error qmsg exit $rc"; return; }
    poweroff -f
}

# The SHA-256 of file $1 (64 hex digits); fails when it cannot be read.
sha() {
    sum=$(sha256sum "$1") || return 1
    sum=${sum%% *}
    [ ${#sum} -eq 64 ] || return 1
    echo "$sum"
}

blk_test() {
    wait_for /dev/vda 100 || { echo "QUERCUS-GUEST: blk error no /dev/vda after 10 s"; return; }
    mkdir -p /mnt
    mount -t ext4 /dev/vda /mnt || { echo "QUERCUS-GUEST: blk error mount -t ext4 /dev/vda failed"; return; }
    if [ -e /mnt/written.txt ]; then
        sum=$(sha /mnt/written.txt) || { echo "QUERCUS-GUEST: blk error reading written.txt"; return; }
        umount /mnt || { echo "QUERCUS-GUEST: blk error umount failed"; return; }
        echo "QUERCUS-GUEST: blk found written sha256=$sum"
        poweroff -f
        echo "QUERCUS-GUEST: blk error poweroff failed"
        return
    fi
    sum=$(sha /mnt/hello.txt) || { echo "QUERCUS-GUEST: blk error reading hello.txt"; return; }
    echo "QUERCUS-GUEST: blk hello sha256=$sum"
    sum=$(sha /mnt/data.bin) || { echo "QUERCUS-GUEST: blk error reading data.bin"; return; }
    echo "QUERCUS-GUEST: blk data sha256=$sum"
    seq 1 128 | while read -r n; do echo "written by quercus vm, line $n"; done > /mnt/written.txt \
        || { echo "QUERCUS-GUEST: blk error writing written.txt"; return; }
    sync
    umount /mnt || { echo "QUERCUS-GUEST: blk error umount failed"; return; }
    echo "QUERCUS-GUEST: blk wrote"
    reboot -f
    echo "QUERCUS-GUEST: blk error reboot failed"
}

# eth0 up with address $ip (and lo).
net_up() {
    [ -n "$ip" ] || { echo "QUERCUS-GUEST: net error no quercus.ip="; return 1; }
    wait_for /sys/class/net/eth0 100 || { echo "QUERCUS-GUEST: net error no eth0 after 10 s"; return 1; }
    ip link set lo up
    ip link set eth0 up || { echo "QUERCUS-GUEST: net error ip link set eth0 up failed"; return 1; }
    ip addr add "$ip" dev eth0 || { echo "QUERCUS-GUEST: net error ip addr add $ip failed"; return 1; }
}

# Ping $peer until it answers (status 0) or $1 seconds have passed (status 1).
ping_peer() {
    end=$(($(date +%s) + $1))
    until ping -c 1 -W 1 "$peer" > /dev/null 2>&1; do
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.2
    done
}

rx_packets() {
    cat /sys/class/net/eth0/statistics/rx_packets
}

net_server() {
    net_up || return
    # nc's standard input: a FIFO this shell holds open for writing, so that it never reads EOF
    # (on EOF busybox nc half-closes the connection, and the client stops sending).
    mkfifo /tmp/hold && exec 3<> /tmp/hold || { echo "QUERCUS-GUEST: net error mkfifo failed"; return; }
    nc -l -p 5001 <&3 > /tmp/rx
    status=$?
    exec 3>&-
    [ "$status" = 0 ] || { echo "QUERCUS-GUEST: net error nc -l -p 5001 failed ($status)"; return; }
    sum=$(sha /tmp/rx) || { echo "QUERCUS-GUEST: net error reading /tmp/rx"; return; }
    echo "QUERCUS-GUEST: net rx bytes=$(stat -c %s /tmp/rx) sha256=$sum"
}

net_client() {
    net_up || return
    [ -n "$peer" ] || { echo "QUERCUS-GUEST: net error no quercus.peer="; return; }
    ping_peer 30 || { echo "QUERCUS-GUEST: net error no answer from $peer in 30 s"; return; }
    echo "QUERCUS-GUEST: net ping ok"
    dd if=/dev/urandom of=/tmp/tx bs=1048576 count=16 2> /dev/null \
        || { echo "QUERCUS-GUEST: net error dd failed"; return; }
    sum=$(sha /tmp/tx) || { echo "QUERCUS-GUEST: net error reading /tmp/tx"; return; }
    echo "QUERCUS-GUEST: net tx bytes=$(stat -c %s /tmp/tx) sha256=$sum"
    # The server may not be listening yet: connect again for up to 30 s.
    end=$(($(date +%s) + 30))
    until nc "$peer" 5001 < /tmp/tx; do
        [ "$(date +%s)" -ge "$end" ] && { echo "QUERCUS-GUEST: net error nc $peer 5001 failed"; return; }
        sleep 1
    done
    echo "QUERCUS-GUEST: net sent"
}

net_isolated() {
    net_up || return
    [ -n "$peer" ] || { echo "QUERCUS-GUEST: net error no quercus.peer="; return; }
    result=fail
    ping_peer 10 && result=ok
    echo "QUERCUS-GUEST: net isolated ping=$result rx_packets=$(rx_packets)"
    end=$(($(date +%s) + watch))
    while [ "$(date +%s)" -lt "$end" ]; do
        sleep 5
        echo "QUERCUS-GUEST: net isolated watch rx_packets=$(rx_packets)"
    done
}

# The default scenario's demo: the virtio disk on /mnt, eth0 up, three pings to the peer, a hint.
demo() {
    if wait_for /dev/vda 100 && mkdir -p /mnt && mount -t ext4 /dev/vda /mnt; then
        echo "QUERCUS-GUEST: demo disk /dev/vda (virtio-blk, ext4) on /mnt: $(ls /mnt | tr '\n' ' ')"
    else
        echo "QUERCUS-GUEST: demo error no virtio disk to mount on /mnt"
    fi
    if wait_for /dev/hvc0 50; then
        echo "QUERCUS-GUEST: demo hello on hvc0, the virtio console" > /dev/hvc0
    else
        echo "QUERCUS-GUEST: demo error no /dev/hvc0"
    fi
    if net_up && [ -n "$peer" ]; then
        ping -c 3 -W 3 "$peer" | tee /tmp/demo-ping
        replies=$(sed -n 's/.* \([0-9]*\) packets received.*/\1/p' /tmp/demo-ping)
        if [ "$replies" = 3 ]; then
            echo "QUERCUS-GUEST: demo ping ok"
        else
            echo "QUERCUS-GUEST: demo ping fail (${replies:-0} of 3 replies from $peer)"
        fi
    else
        echo "QUERCUS-GUEST: demo ping fail (no network: quercus.ip= and quercus.peer= needed)"
    fi
    echo "QUERCUS-GUEST: demo ready. At the quercus> prompt, vm_console linux attaches to this shell"
    echo "  (Ctrl-A d detaches). Then try:"
    echo "    ping -c 3 $peer                 the responder VM, through the hypervisor's virtual switch"
    echo "    ls /mnt; cat /mnt/hello.txt        the virtio-blk disk (writable: a copy in RAM)"
    echo "    echo hello > /dev/hvc0             the virtio console (Ctrl-A d, then vm_log linux hvc)"
    echo "    cat /dev/hvc0 &                    shows here what is typed after vm_console linux hvc"
    echo "    head -c 16 /dev/hwrng | od -An -tx1   virtio-rng"
    echo "  and at quercus>: vm_list, stats linux, vm_log responder, help"
}

# --- Passed-through devices ---------------------------------------------------------------------

pt_error() {
    echo "QUERCUS-GUEST: passthrough error $*"
}

# "N KIND": the interrupts so far (every CPU) of the /proc/interrupts lines with an action name
# matching the awk regex $1, and the interrupt chip of the first of them (PCI-MSI, PCI-MSIX,
# IO-APIC...; the device suffix newer kernels add is dropped), "0 none" when there is none.
irq_info() {
    awk -v re="$1" '
        NR == 1 { n = NF; next }
        {
            hit = 0
            for (i = n + 4; i <= NF; i++) {
                name = $i
                sub(/,$/, "", name)
                if (name ~ re) hit = 1
            }
            if (!hit) next
            for (i = 2; i <= n + 1; i++) total += $i
            if (kind == "") kind = $(n + 2)
        }
        END {
            sub(/-[0-9a-f]+:[0-9a-f:.]+$/, "", kind)
            print total + 0, (kind == "" ? "none" : kind)
        }' /proc/interrupts
}

# The awk regexes of the NIC's ($pt_if: eth0, eth0-rx-0, ...) and the NVMe drive's (nvme0q0, ...)
# interrupt action names.
nic_irq_re() {
    echo "^$pt_if(-.*)?\$"
}
NVME_IRQ_RE='^nvme0q[0-9]+$'

# The first network interface that is not lo (waiting up to 10 s), up, configured by DHCP
# (busybox udhcpc with /etc/udhcpc.script); sets pt_if, pt_driver and pt_url (quercus.fetch=, or
# with quercus.fetch=dhcp the boot file name of the DHCP offer) and prints the nic line.
pt_nic_up() {
    pt_if=
    n=0
    while true; do
        for d in /sys/class/net/*; do
            [ "${d##*/}" = lo ] || [ ! -e "$d/device" ] || { pt_if=${d##*/}; break; }
        done
        [ -n "$pt_if" ] && break
        [ "$n" -ge 100 ] && { pt_error "nic: no network interface but lo after 10 s"; return 1; }
        n=$((n + 1))
        sleep 0.1
    done
    pt_driver=$(readlink "/sys/class/net/$pt_if/device/driver")
    pt_driver=${pt_driver##*/}
    ip link set lo up
    ip link set "$pt_if" up || { pt_error "nic: ip link set $pt_if up failed"; return 1; }
    rm -f /tmp/dhcp-bootfile
    udhcpc -i "$pt_if" -s /etc/udhcpc.script -f -q -n -t 10 -T 2 > /tmp/udhcpc.log 2>&1 \
        || { pt_error "nic: no DHCP lease on $pt_if: $(tr '\n' ' ' < /tmp/udhcpc.log)"; return 1; }
    addr=$(ip -o -4 addr show dev "$pt_if" | awk '{ print $4; exit }')
    [ -n "$addr" ] || { pt_error "nic: $pt_if has no IPv4 address after DHCP"; return 1; }
    echo "QUERCUS-GUEST: nic $pt_if driver=${pt_driver:-none} addr=$addr"
    pt_url=$fetch
    if [ "$fetch" = dhcp ]; then
        pt_url=
        [ -r /tmp/dhcp-bootfile ] && read -r pt_url < /tmp/dhcp-bootfile
    fi
    [ -n "$pt_url" ] || { pt_error "nic: nothing to fetch (quercus.fetch=URL, or dhcp: the DHCP boot file name; got '$fetch')"; return 1; }
}

# $pt_url into /tmp/fetched with busybox wget, for at most $1 seconds (`timeout`: this static
# busybox's own `wget -T` crashes), its messages in /tmp/wget.err.
fetch_url() {
    timeout "$1" wget -q -O /tmp/fetched "$pt_url" 2> /tmp/wget.err
}

pt_nic() {
    pt_nic_up || return 1
    fetch_url 120 \
        || { pt_error "nic: wget $pt_url failed: $(tr '\n' ' ' < /tmp/wget.err)"; return 1; }
    sum=$(sha /tmp/fetched) || { pt_error "nic: reading /tmp/fetched"; return 1; }
    echo "QUERCUS-GUEST: nic fetched bytes=$(stat -c %s /tmp/fetched) sha256=$sum"
    set -- $(irq_info "$(nic_irq_re)")
    echo "QUERCUS-GUEST: nic irqs=$1 kind=$2"
}

# dd with its messages in /tmp/dd.err; fails unless all $1 blocks went through.
dd_all() {
    want=$1
    shift
    dd "$@" 2> /tmp/dd.err && grep -q "^$want+0 records out" /tmp/dd.err
}

# 1 MiB the guest writes to the NVMe drive: 32768 lines of 32 bytes, `quercus nvme N` with N
# (0-based) in 18 digits (xtask's passthrough_data::nvme_written makes the same bytes).
nvme_pattern() {
    awk 'BEGIN { for (i = 0; i < 32768; i++) printf "quercus nvme %018d\n", i }'
}

pt_nvme() {
    wait_for /dev/nvme0n1 200 || { pt_error "nvme: no /dev/nvme0n1 after 20 s"; return 1; }
    dd_all 1 if=/dev/nvme0n1 of=/tmp/nvme-4k bs=4096 count=1 \
        || { pt_error "nvme: reading the first 4 KiB failed: $(tr '\n' ' ' < /tmp/dd.err)"; return 1; }
    dd_all 1 if=/dev/nvme0n1 of=/tmp/nvme-head bs=1048576 count=1 iflag=direct \
        || { pt_error "nvme: reading the first MiB failed: $(tr '\n' ' ' < /tmp/dd.err)"; return 1; }
    sum=$(sha /tmp/nvme-head) || { pt_error "nvme: reading /tmp/nvme-head"; return 1; }
    echo "QUERCUS-GUEST: nvme read sha256=$sum"
    nvme_pattern > /tmp/nvme-pattern
    dd_all 1 if=/tmp/nvme-pattern of=/dev/nvme0n1 bs=1048576 seek=8 count=1 oflag=direct conv=fsync,notrunc \
        || { pt_error "nvme: writing 1 MiB at 8 MiB failed: $(tr '\n' ' ' < /tmp/dd.err)"; return 1; }
    dd_all 1 if=/dev/nvme0n1 of=/tmp/nvme-back bs=1048576 skip=8 count=1 iflag=direct \
        || { pt_error "nvme: reading back the written MiB failed: $(tr '\n' ' ' < /tmp/dd.err)"; return 1; }
    sum=$(sha /tmp/nvme-back) || { pt_error "nvme: reading /tmp/nvme-back"; return 1; }
    echo "QUERCUS-GUEST: nvme wrote sha256=$sum"
    set -- $(irq_info "$NVME_IRQ_RE")
    echo "QUERCUS-GUEST: nvme irqs=$1 kind=$2"
}

pt_done() {
    echo "QUERCUS-GUEST: passthrough done"
    poweroff -f
    pt_error "poweroff failed"
}

# --- Benchmarks -------------------------------------------------------------------------------

# The 16 bytes (EAX EBX ECX EDX) of CPUID leaf $1 (decimal, subleaf 0) on CPU 0: the cpuid
# driver reads 16 bytes at file offset leaf | subleaf << 32.
cpuid_leaf() {
    dd if=/dev/cpu/0/cpuid bs=16 count=1 skip="$1" iflag=skip_bytes 2> /dev/null
}

# Quercus's statistics leaf 0x4000_0001 as "EXITS TSC" (EBX:EAX and EDX:ECX).
hv_stats() {
    cpuid_leaf 1073741825 | od -A n -t u8
}

# Sets ns: the kernel's monotonic clock in nanoseconds (shell built-ins only: no fork).
now_ns() {
    ns=
    while read -r w1 w2 w3 _; do
        [ "$w1 $w2" = "now at" ] && { ns=$w3; break; }
    done < /proc/timer_list
}

# Runs "$@" and sets b_fields to what it cost: "ns=T", plus "exits=E tsc=C" under Quercus. Its
# status is the command's.
bracket() {
    s0=
    s1=
    [ "$hv" = quercus ] && s0=$(hv_stats)
    now_ns
    t0=$ns
    "$@"
    b_status=$?
    now_ns
    t1=$ns
    [ "$hv" = quercus ] && s1=$(hv_stats)
    b_fields="ns=$((t1 - t0))"
    if [ -n "$s0" ] && [ -n "$s1" ]; then
        set -- $s0 $s1
        b_fields="$b_fields exits=$(($3 - $1)) tsc=$(($4 - $2))"
    fi
    return $b_status
}

# Pins this shell to CPU 0 (the vCPU whose exits the leaf counts), finds out whether Quercus is
# underneath, and measures the empty bracket three times.
bench_setup() {
    [ "$(nproc)" -gt 1 ] && taskset -p 1 $$ > /dev/null
    hv=none
    if [ -e /dev/cpu/0/cpuid ]; then
        case "$(cpuid_leaf 1073741824 | tr -cd 'A-Za-z')" in
            *QuercusHV*) hv=quercus ;;
        esac
    fi
    echo "QUERCUS-BENCH: hv=$hv cpus=$(nproc) clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
    dmesg | grep -i -E 'tsc|clocksource' | while read -r line; do echo "QUERCUS-GUEST: dmesg: $line"; done
    for i in 1 2 3; do
        bracket true
        echo "QUERCUS-BENCH: null $b_fields"
    done
}

# The interrupts of the virtio devices so far (the /proc/interrupts lines naming virtio, every CPU).
virtio_irqs() {
    awk '/virtio/ { for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i } END { print n + 0 }' /proc/interrupts
}

# Sets rq_r and rq_w: the read and write requests completed on vda so far.
vda_requests() {
    read -r rq_r _ _ _ rq_w _ < /sys/block/vda/stat
}

# dd on the raw disk: $1 write, read-ahead (a buffered read) or another read, with direct I/O
# but for read-ahead; $2 block size, $3 blocks.
bench_dd() {
    case "$1" in
        write) dd if=/dev/zero of=/dev/vda bs="$2" count="$3" oflag=direct conv=notrunc 2> /tmp/dd.err ;;
        read-ahead) dd if=/dev/vda of=/dev/null bs="$2" count="$3" 2> /tmp/dd.err ;;
        *) dd if=/dev/vda of=/dev/null bs="$2" count="$3" iflag=direct 2> /tmp/dd.err ;;
    esac
}

# One measured dd ($1 read|read-split|read-ahead|write, $2 block size, $3 blocks) and its
# QUERCUS-BENCH line.
blk_step() {
    i0=$(virtio_irqs)
    vda_requests
    r0=$rq_r
    w0=$rq_w
    bracket bench_dd "$1" "$2" "$3" \
        || { echo "QUERCUS-GUEST: bench error dd $1 bs=$2 failed: $(tr '\n' ' ' < /tmp/dd.err)"; return 1; }
    vda_requests
    i1=$(virtio_irqs)
    grep -q "^$3+0 records out" /tmp/dd.err \
        || { echo "QUERCUS-GUEST: bench error dd $1 bs=$2 count=$3: $(tr '\n' ' ' < /tmp/dd.err)"; return 1; }
    if [ "$1" = write ]; then
        reqs=$((rq_w - w0))
    else
        reqs=$((rq_r - r0))
    fi
    echo "QUERCUS-BENCH: blk $1 bs=$2 count=$3 bytes=$(($2 * $3)) reqs=$reqs irqs=$((i1 - i0)) $b_fields"
}

# With quercus.bench_pause=S: `QUERCUS-BENCH: pause` (the host may read the hypervisor's exit
# counters then), and S quiet seconds.
bench_pause() {
    [ "$bench_pause" -gt 0 ] || return 0
    echo "QUERCUS-BENCH: pause"
    sleep "$bench_pause"
}

bench_blk() {
    wait_for /dev/vda 100 || { echo "QUERCUS-GUEST: bench error no /dev/vda after 10 s"; return; }
    bench_setup
    sectors=$(cat /sys/block/vda/size)
    for need in $((bench_mib * 2048)) $((bench_4k * 8)); do
        [ "$sectors" -ge "$need" ] \
            || { echo "QUERCUS-GUEST: bench error vda has $sectors sectors, $need needed"; return; }
    done
    queue=/sys/block/vda/queue
    if [ -n "$bench_sched" ]; then
        echo "$bench_sched" > $queue/scheduler \
            || { echo "QUERCUS-GUEST: bench error scheduler $bench_sched refused"; return; }
    fi
    max_kb=$(cat $queue/max_sectors_kb)
    echo "QUERCUS-BENCH: disk sectors=$sectors max_sectors_kb=$max_kb max_segments=$(cat $queue/max_segments) read_ahead_kb=$(cat $queue/read_ahead_kb) scheduler=$(sed 's/.*\[\(.*\)\].*/\1/' $queue/scheduler)"
    # Pauses around every step; the first two enclose nothing but a pause.
    bench_pause
    bench_pause
    blk_step read 1048576 "$bench_mib" || return
    bench_pause
    # The same reads in requests of at most 64 KiB: sixteen per 1M block (a synchronous direct
    # read submits them one by one, without a plug).
    echo 64 > $queue/max_sectors_kb || { echo "QUERCUS-GUEST: bench error max_sectors_kb=64 refused"; return; }
    blk_step read-split 1048576 "$bench_mib" || return
    bench_pause
    # Buffered reads from a cold page cache with 1 MiB of readahead, still in 64 KiB requests:
    # the readahead queues each window's sixteen requests at once (one plug; requests of
    # 128 KiB would not do: the block layer flushes a plug holding one that large).
    ra_kb=$(cat $queue/read_ahead_kb)
    { echo 1024 > $queue/read_ahead_kb && blockdev --flushbufs /dev/vda; } \
        || { echo "QUERCUS-GUEST: bench error read_ahead_kb=1024 or --flushbufs refused"; return; }
    blk_step read-ahead 1048576 "$bench_mib" || return
    echo "$max_kb" > $queue/max_sectors_kb
    echo "$ra_kb" > $queue/read_ahead_kb
    bench_pause
    blk_step write 1048576 "$bench_mib" || return
    bench_pause
    blk_step read 4096 "$bench_4k" || return
    bench_pause
    blk_step write 4096 "$bench_4k" || return
    bench_pause
    echo "QUERCUS-BENCH: done"
}

# Sets rx_bytes: what is left on standard input.
count_rest() {
    rx_bytes=$(wc -c)
}

# The server's side of the pipe from nc: waits for the first byte, then measures the rest.
net_rx() {
    first=$(dd bs=1 count=1 2> /dev/null | wc -c)
    [ "$first" = 1 ] || { echo "QUERCUS-GUEST: bench error nothing received"; return; }
    i0=$(virtio_irqs)
    read -r p0 < /sys/class/net/eth0/statistics/rx_packets
    bracket count_rest
    read -r p1 < /sys/class/net/eth0/statistics/rx_packets
    i1=$(virtio_irqs)
    echo "QUERCUS-BENCH: net rx bytes=$((rx_bytes + 1)) packets=$((p1 - p0)) irqs=$((i1 - i0)) $b_fields"
}

bench_net_server() {
    net_up || return
    bench_setup
    # nc's standard input never reaches EOF (see net_server).
    mkfifo /tmp/hold && exec 3<> /tmp/hold || { echo "QUERCUS-GUEST: bench error mkfifo failed"; return; }
    nc -l -p 5001 <&3 | net_rx
    exec 3>&-
}

# Sends $1 MiB of zeros to $peer:5001.
send_zeros() {
    dd if=/dev/zero bs=1048576 count="$1" 2> /dev/null | nc "$peer" 5001
}

bench_net_client() {
    net_up || return
    [ -n "$peer" ] || { echo "QUERCUS-GUEST: bench error no quercus.peer="; return; }
    bench_setup
    ping_peer 30 || { echo "QUERCUS-GUEST: bench error no answer from $peer in 30 s"; return; }
    # The server may not be listening yet: connect again for up to 30 s (only the attempt that
    # went through is reported).
    end=$(($(date +%s) + 30))
    while true; do
        i0=$(virtio_irqs)
        read -r p0 < /sys/class/net/eth0/statistics/tx_packets
        bracket send_zeros "$bench_mib" && break
        [ "$(date +%s)" -ge "$end" ] && { echo "QUERCUS-GUEST: bench error nc $peer 5001 failed"; return; }
        sleep 1
    done
    read -r p1 < /sys/class/net/eth0/statistics/tx_packets
    i1=$(virtio_irqs)
    echo "QUERCUS-BENCH: net tx bytes=$((bench_mib * 1048576)) packets=$((p1 - p0)) irqs=$((i1 - i0)) $b_fields"
}

# The passed-through devices' benchmark: a download of the quercus.fetch= file over the NIC,
# then direct reads and writes of quercus.bench_mib MiB at the start of the NVMe drive.
bench_passthrough() {
    pt_nic_up || return
    wait_for /dev/nvme0n1 200 || { pt_error "nvme: no /dev/nvme0n1 after 20 s"; return; }
    bench_setup
    i0=$(irq_info "$(nic_irq_re)")
    read -r p0 < "/sys/class/net/$pt_if/statistics/rx_packets"
    bracket fetch_url 300 \
        || { pt_error "bench: wget $pt_url failed: $(tr '\n' ' ' < /tmp/wget.err)"; return; }
    f=$b_fields
    read -r p1 < "/sys/class/net/$pt_if/statistics/rx_packets"
    i1=$(irq_info "$(nic_irq_re)")
    echo "QUERCUS-BENCH: nic fetch bytes=$(stat -c %s /tmp/fetched) packets=$((p1 - p0)) irqs=$((${i1% *} - ${i0% *})) kind=${i1#* } $f"
    rm -f /tmp/fetched
    for step in read write; do
        i0=$(irq_info "$NVME_IRQ_RE")
        read -r r0 _ _ _ w0 _ < /sys/block/nvme0n1/stat
        if [ "$step" = read ]; then
            bracket dd_all "$bench_mib" if=/dev/nvme0n1 of=/dev/null bs=1048576 count="$bench_mib" iflag=direct
        else
            bracket dd_all "$bench_mib" if=/dev/zero of=/dev/nvme0n1 bs=1048576 count="$bench_mib" oflag=direct conv=notrunc
        fi || { pt_error "bench: dd $step failed: $(tr '\n' ' ' < /tmp/dd.err)"; return; }
        read -r r1 _ _ _ w1 _ < /sys/block/nvme0n1/stat
        i1=$(irq_info "$NVME_IRQ_RE")
        reqs=$((r1 - r0))
        [ "$step" = write ] && reqs=$((w1 - w0))
        echo "QUERCUS-BENCH: nvme $step bs=1048576 count=$bench_mib bytes=$((bench_mib * 1048576)) reqs=$reqs irqs=$((${i1% *} - ${i0% *})) kind=${i1#* } $b_fields"
    done
    echo "QUERCUS-BENCH: done"
    pt_done
}

case "$test" in
    poweroff)
        echo "QUERCUS-GUEST: powering off"
        poweroff -f
        echo "QUERCUS-GUEST: poweroff failed"
        ;;
    reboot|reboot-once)
        echo "QUERCUS-GUEST: rebooting"
        reboot -f
        echo "QUERCUS-GUEST: reboot failed"
        ;;
    panic)
        echo "QUERCUS-GUEST: panicking"
        echo c > /proc/sysrq-trigger
        ;;
    virtio-blk)
        blk_test
        ;;
    net-server)
        net_server
        ;;
    net-client)
        net_client
        ;;
    net-isolated)
        net_isolated
        ;;
    demo)
        demo
        ;;
    bench-blk)
        bench_blk
        ;;
    bench-net-server)
        bench_net_server
        ;;
    bench-net-client)
        bench_net_client
        ;;
    passthrough-nic)
        pt_nic && pt_done
        ;;
    passthrough-nvme)
        pt_nvme && pt_done
        ;;
    passthrough)
        pt_nic && pt_nvme && pt_done
        ;;
    bench-passthrough)
        bench_passthrough
        ;;
    ivshmem-send)
        ivshmem_send
        ;;
    ivshmem-recv)
        ivshmem_recv
        ;;
    msgchan)
        msgchan
        ;;
    "")
        ;;
    *)
        echo "QUERCUS-GUEST: unknown quercus.test=$test"
        ;;
esac
echo "QUERCUS-GUEST: shell"
while true; do
    setsid cttyhack sh
    echo "QUERCUS-GUEST: shell exited, starting another"
done
"#;

/// `/etc/udhcpc.script`: what busybox `udhcpc -s` runs on each DHCP event (`$1`: `deconfig`,
/// `bound`, `renew`, ...; the lease in the environment: `interface`, `ip`, `mask` as a prefix
/// length, `router`, `boot_file`). It applies the address and the default route and keeps the
/// offer's boot file name in /tmp/dhcp-bootfile (`quercus.fetch=dhcp`).
pub const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# udhcpc's event script in the Quercus Linux test guest (written by cargo xtask: xtask/src/linux_image.rs).
case "$1" in
    deconfig)
        ip addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface" || exit 1
        for r in $router; do
            ip route add default via "$r" dev "$interface"
            break
        done
        echo "$boot_file" > /tmp/dhcp-bootfile
        ;;
esac
exit 0
"#;
/// Where [`UDHCPC_SCRIPT`] goes in the initramfs.
const UDHCPC_SCRIPT_PATH: &str = "etc/udhcpc.script";

/// The built image.
#[derive(Clone, Debug)]
pub struct LinuxImage {
    pub bzimage: PathBuf,
    /// The ELF kernel inside the bzImage (its PVH entry boots it without the boot protocol).
    pub vmlinux: PathBuf,
    pub initrd: PathBuf,
    /// `uname -r` of the kernel, e.g. `6.1.0-56-amd64`.
    pub kernel_version: String,
}

/// `<root>/target/guest-images`.
pub fn images_dir(root: &Path) -> PathBuf {
    root.join("target").join("guest-images")
}

/// Build (or reuse) the Linux guest image. Checked once per xtask process: later calls return the
/// first answer without asking apt again (~2 s).
pub fn linux_guest(root: &Path) -> Result<LinuxImage> {
    static CHECKED: Mutex<Option<(PathBuf, LinuxImage)>> = Mutex::new(None);
    let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((r, image)) = checked.as_ref() {
        if r == root {
            return Ok(image.clone());
        }
    }
    let image = build(root, false)?;
    *checked = Some((root.to_path_buf(), image.clone()));
    Ok(image)
}

/// Build the Linux guest image; `force` rebuilds it even when the stamp matches.
pub fn build(root: &Path, force: bool) -> Result<LinuxImage> {
    let dir = images_dir(root);
    let out = dir.join("linux");
    let debs_dir = dir.join("debs");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::create_dir_all(&debs_dir)?;
    let image = LinuxImage {
        bzimage: out.join("bzImage"),
        vmlinux: out.join("vmlinux"),
        initrd: out.join("initrd.gz"),
        kernel_version: String::new(),
    };
    let stamp_path = out.join("stamp");

    let qmsg = build_qmsg(root)?;
    let qmsg_hash = fnv1a64(&qmsg);
    let mut apt = Apt::default();
    let debs = apt.resolve()?;
    let manifest = inputs_manifest(&debs, qmsg_hash);
    let hash = fnv1a64(manifest.as_bytes());
    if !force && image.bzimage.is_file() && image.vmlinux.is_file() && image.initrd.is_file() {
        if let Ok(text) = std::fs::read_to_string(&stamp_path) {
            if let Some(version) = stamp_matches(&text, hash) {
                return Ok(LinuxImage {
                    kernel_version: version,
                    ..image
                });
            }
        }
    }
    let _ = std::fs::remove_file(&stamp_path);

    let started = Instant::now();
    let debs = apt.download(debs, &debs_dir)?;
    // The lists may have changed under an `apt-get update` during the download.
    let manifest = inputs_manifest(&debs, qmsg_hash);
    let hash = fnv1a64(manifest.as_bytes());
    let t_download = started.elapsed();

    let started = Instant::now();
    let staging = dir.join(format!("staging-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    let kernel_root = staging.join("kernel");
    let busybox_root = staging.join("busybox");
    with_spinner(&format!("dpkg-deb -x {}", debs.kernel.filename), || {
        dpkg_extract(&debs_dir.join(&debs.kernel.filename), &kernel_root)
    })?;
    dpkg_extract(&debs_dir.join(&debs.busybox.filename), &busybox_root)?;
    let t_extract = started.elapsed();

    let started = Instant::now();
    let result = assemble(&kernel_root, &busybox_root, &qmsg, &image);
    let _ = std::fs::remove_dir_all(&staging);
    let (kernel_version, module_count) = result?;
    let t_initramfs = started.elapsed();

    let stamp = format!("{manifest}kernel_version={kernel_version}\nhash={hash:016x}\n");
    std::fs::write(&stamp_path, stamp)?;
    eprintln!(
        "linux image: kernel {kernel_version}, {module_count} modules; download {:.1} s, extract {:.1} s, initramfs {:.1} s",
        t_download.as_secs_f64(),
        t_extract.as_secs_f64(),
        t_initramfs.as_secs_f64()
    );
    Ok(LinuxImage {
        kernel_version,
        ..image
    })
}

/// Copy the bzImage out of the unpacked kernel package and write the initramfs; returns the kernel
/// version and the number of modules in the initramfs.
fn assemble(
    kernel_root: &Path,
    busybox_root: &Path,
    qmsg: &[u8],
    image: &LinuxImage,
) -> Result<(String, usize)> {
    let (vmlinuz, version) = find_vmlinuz(&kernel_root.join("boot"))?;
    let kernel = std::fs::read(&vmlinuz)?;
    if !crate::bochs::is_bzimage(&kernel) {
        bail!("{} is not a bzImage (no HdrS header)", vmlinuz.display());
    }
    write_atomically(&image.bzimage, &kernel)?;
    write_atomically(&image.vmlinux, &unpack_vmlinux(&kernel)?)?;

    let busybox = std::fs::read(busybox_root.join("bin/busybox"))
        .context("busybox-static has no bin/busybox")?;
    let modules_dir = kernel_root.join("lib/modules").join(&version);
    let modules = module_files(&modules_dir)?;
    let order = load_order(MODULE_ROOTS, |name| {
        let rel = modules
            .get(name)
            .with_context(|| format!("kernel module {name} is not in the kernel package"))?;
        let bytes = std::fs::read(modules_dir.join(rel))?;
        modinfo_depends(&bytes).with_context(|| format!("reading the modinfo of {rel}"))
    })?;

    let mut cpio = Cpio::default();
    for d in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "sys", "tmp", "dev",
    ] {
        cpio.dir(d, 0o755);
    }
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.char_dev("dev/ttyS0", 0o660, 4, 64);
    cpio.file("bin/busybox", 0o755, &busybox);
    cpio.symlink("bin/sh", "busybox");
    cpio.file("bin/qmsg", 0o755, qmsg);
    cpio.file("init", 0o755, INIT_SCRIPT.as_bytes());
    cpio.file(UDHCPC_SCRIPT_PATH, 0o755, UDHCPC_SCRIPT.as_bytes());
    let mut list = String::new();
    let mut made: BTreeSet<String> = BTreeSet::new();
    for name in &order {
        let rel = &modules[name];
        let dest = format!("lib/modules/{version}/{rel}");
        // Parent directories first, each once.
        let mut prefix = String::new();
        for part in Path::new(&dest).parent().into_iter().flat_map(|p| p.iter()) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(&part.to_string_lossy());
            if made.insert(prefix.clone()) {
                cpio.dir(&prefix, 0o755);
            }
        }
        cpio.file(&dest, 0o644, &std::fs::read(modules_dir.join(rel))?);
        list.push_str(&format!("/{dest}\n"));
    }
    cpio.file(MODULE_LIST, 0o644, list.as_bytes());
    let archive = cpio.finish();

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&archive)?;
    write_atomically(&image.initrd, &gz.finish()?)?;
    Ok((version, order.len()))
}

/// Where a bzImage keeps its compressed kernel: the setup code's sectors (`setup_sects` at 0x1F1,
/// 0 meaning 4) plus the boot sector, then `payload_offset` (0x248) into the protected-mode part;
/// `payload_length` at 0x24C.
pub fn bzimage_payload(image: &[u8]) -> Result<&[u8]> {
    let u32_at = |off: usize| -> Result<u32> {
        let b = image
            .get(off..off + 4)
            .context("bzImage shorter than its setup header")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let setup_sects = match *image.get(0x1F1).context("bzImage too short")? {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)? as usize;
    let len = u32_at(0x24C)? as usize;
    image
        .get(start..start.checked_add(len).context("payload length overflows")?)
        .with_context(|| {
            format!(
                "bzImage payload {start:#x}+{len:#x} lies outside the image ({:#x} bytes)",
                image.len()
            )
        })
}

/// The ELF `vmlinux` in a bzImage whose payload is XZ-compressed (Debian's kernels), unpacked with
/// `xz` (its x86 BCJ filter included). The payload ends with 4 bytes of decompressed size after
/// the XZ stream, hence `--single-stream`.
fn unpack_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>> {
    use std::process::Stdio;
    let payload = bzimage_payload(bzimage)?;
    if !payload.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0]) {
        bail!("the bzImage payload is not XZ-compressed; only XZ kernels are unpacked to vmlinux");
    }
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running xz (package xz-utils)")?;
    let mut stdin = child.stdin.take().context("xz stdin")?;
    let input = payload.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().context("waiting for xz")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("xz input thread panicked"))?
        .context("feeding xz")?;
    if !out.status.success() {
        bail!(
            "`xz -dc` failed unpacking vmlinux ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if !out.stdout.starts_with(b"\x7fELF") {
        bail!("the unpacked bzImage payload is not an ELF file");
    }
    Ok(out.stdout)
}

/// `boot/vmlinuz-VERSION` (exactly one) and VERSION.
fn find_vmlinuz(boot: &Path) -> Result<(PathBuf, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(boot).with_context(|| format!("reading {}", boot.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(version) = name.strip_prefix("vmlinuz-") {
            found.push((entry.path(), version.to_string()));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        n => bail!("expected one vmlinuz-* in {}, found {n}", boot.display()),
    }
}

/// Module name (`-` read as `_`, as the kernel does) to its path relative to `modules_dir`, for every
/// uncompressed `.ko` under `modules_dir/kernel`.
fn module_files(modules_dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![modules_dir.join("kernel")];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko"))
            {
                let rel = path
                    .strip_prefix(modules_dir)
                    .expect("walked below modules_dir")
                    .to_string_lossy()
                    .into_owned();
                out.insert(stem.replace('-', "_"), rel);
            }
        }
    }
    if out.is_empty() {
        bail!(
            "no uncompressed .ko modules under {} (compressed modules are not handled)",
            modules_dir.display()
        );
    }
    Ok(out)
}

/// Write `path` through a temporary file and a rename, so that readers never see half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Debian packages
// ---------------------------------------------------------------------------------------------

/// One .deb as `apt-get download --print-uris` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebFile {
    pub package: String,
    /// The file name `apt-get download` writes (it carries the version).
    pub filename: String,
    pub size: u64,
    /// `SHA256:...` (or whatever hash apt prints).
    pub hash: String,
}

/// The two packages the image is made from.
#[derive(Clone, Debug)]
pub struct Debs {
    pub kernel: DebFile,
    pub busybox: DebFile,
}

/// apt-get and apt-cache, with at most one `apt-get update` per build.
#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    /// The current kernel package and busybox-static, by the package lists (updated once if empty).
    fn resolve(&mut self) -> Result<Debs> {
        match resolve_debs() {
            Ok(debs) => Ok(debs),
            Err(err) if !self.updated => {
                eprintln!("linux image: {err:#}; updating the package lists");
                self.update()?;
                resolve_debs()
            }
            Err(err) => Err(err),
        }
    }

    /// Download the .debs not yet in `dir` (an `apt-get update` and a fresh resolve when that fails,
    /// e.g. lists so old that the mirror no longer has the files); returns what is in `dir`.
    fn download(&mut self, debs: Debs, dir: &Path) -> Result<Debs> {
        match download_debs(&debs, dir) {
            Ok(()) => Ok(debs),
            Err(err) if !self.updated => {
                eprintln!("linux image: {err:#}; updating the package lists and retrying");
                self.update()?;
                let debs = resolve_debs()?;
                download_debs(&debs, dir)?;
                Ok(debs)
            }
            Err(err) => Err(err),
        }
    }

    fn update(&mut self) -> Result<()> {
        self.updated = true;
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            bail!(
                "the package lists need updating for the Linux guest image: run `sudo apt-get update`"
            );
        }
        let output = with_spinner("apt-get update", || {
            Command::new("apt-get")
                .arg("update")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output()
                .context("running apt-get update")
        })?;
        check_output("apt-get update", &output)
    }
}

fn resolve_debs() -> Result<Debs> {
    let output = Command::new("apt-cache")
        .args(["depends", KERNEL_META])
        .output()
        .context("running apt-cache")?;
    check_output(&format!("apt-cache depends {KERNEL_META}"), &output)?;
    let text = String::from_utf8_lossy(&output.stdout);
    let kernel_pkg = kernel_package_from_depends(&text)
        .with_context(|| format!("no linux-image-* in the Depends of {KERNEL_META}:\n{text}"))?;
    let output = Command::new("apt-get")
        .args(["download", "--print-uris", &kernel_pkg, BUSYBOX])
        .output()
        .context("running apt-get")?;
    check_output(
        &format!("apt-get download --print-uris {kernel_pkg} {BUSYBOX}"),
        &output,
    )?;
    let files = parse_print_uris(&String::from_utf8_lossy(&output.stdout))?;
    let pick = |pkg: &str| {
        files
            .iter()
            .find(|f| f.package == pkg)
            .cloned()
            .with_context(|| format!("apt-get download --print-uris did not name {pkg}"))
    };
    Ok(Debs {
        kernel: pick(&kernel_pkg)?,
        busybox: pick(BUSYBOX)?,
    })
}

/// `apt-get download` each .deb missing from `dir` (or of the wrong size).
fn download_debs(debs: &Debs, dir: &Path) -> Result<()> {
    for deb in [&debs.kernel, &debs.busybox] {
        let path = dir.join(&deb.filename);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == deb.size) {
            continue;
        }
        let _ = std::fs::remove_file(&path);
        let output = with_spinner(&format!("apt-get download {}", deb.package), || {
            Command::new("apt-get")
                .args(["download", &deb.package])
                .current_dir(dir)
                .output()
                .context("running apt-get download")
        })?;
        check_output(&format!("apt-get download {}", deb.package), &output)?;
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len != deb.size {
            bail!(
                "apt-get download {} left {} with {len} bytes, expected {}",
                deb.package,
                path.display(),
                deb.size
            );
        }
    }
    Ok(())
}

fn dpkg_extract(deb: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    let output = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(dest)
        .output()
        .context("running dpkg-deb")?;
    check_output(&format!("dpkg-deb -x {}", deb.display()), &output)
}

fn check_output(what: &str, output: &std::process::Output) -> Result<()> {
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    bail!(
        "`{what}` failed ({}):\n{}",
        output.status,
        crate::console::tail(&lines, 20).join("\n")
    )
}

fn with_spinner<T>(message: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
    );
    pb.set_message(message.to_string());
    pb.enable_steady_tick(Duration::from_millis(100));
    let result = f();
    pb.finish_and_clear();
    result
}

/// The versioned kernel package in `apt-cache depends linux-image-amd64` output
/// (`  Depends: linux-image-6.1.0-56-amd64`) or in an `apt-cache show` / control Depends field
/// (`Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)`): the first `linux-image-<digit>...` name.
pub fn kernel_package_from_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start().trim_start_matches('|');
            l.strip_prefix("Depends:")
        })
        .flat_map(|deps| deps.split([',', '|']))
        .map(|dep| {
            dep.split_whitespace()
                .next()
                .unwrap_or("")
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
        .find(|name| {
            name.strip_prefix("linux-image-")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
}

/// Lines of `apt-get download --print-uris`: `'URL' FILENAME SIZE HASH`. The package name is the
/// file name up to its first `_`.
pub fn parse_print_uris(text: &str) -> Result<Vec<DebFile>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('\'')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, filename, size, hash] = fields[..] else {
            bail!("unexpected apt-get --print-uris line `{line}`");
        };
        let package = filename
            .split_once('_')
            .map(|(p, _)| p)
            .with_context(|| format!("no `_` in .deb file name `{filename}`"))?;
        out.push(DebFile {
            package: package.to_string(),
            filename: filename.to_string(),
            size: size
                .parse()
                .with_context(|| format!("bad size in `{line}`"))?,
            hash: hash.to_string(),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Stamp
// ---------------------------------------------------------------------------------------------

/// `/bin/qmsg`: tools/qmsg built for Linux userspace and linked statically (the initramfs has
/// busybox and no libc), in its own target directory so the host build keeps its flags.
fn build_qmsg(root: &Path) -> Result<Vec<u8>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = root.join("target").join("qmsg");
    let target = "x86_64-unknown-linux-gnu";
    let status = std::process::Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "qmsg",
            "--target",
            target,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()
        .context("running cargo build -p qmsg")?;
    if !status.success() {
        bail!("building tools/qmsg failed ({status})");
    }
    let path = target_dir.join(target).join("release").join("qmsg");
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

/// Every input of the image, one `key=value` a line (the stamp file starts with these lines);
/// `qmsg` is the hash of the `/bin/qmsg` binary.
pub fn inputs_manifest(debs: &Debs, qmsg: u64) -> String {
    format!(
        "layout={LAYOUT_VERSION}\nkernel_deb={} {}\nbusybox_deb={} {}\nmodules={}\ninit={:016x}\nudhcpc={:016x}\nqmsg={qmsg:016x}\n",
        debs.kernel.filename,
        debs.kernel.hash,
        debs.busybox.filename,
        debs.busybox.hash,
        MODULE_ROOTS.join(","),
        fnv1a64(INIT_SCRIPT.as_bytes()),
        fnv1a64(UDHCPC_SCRIPT.as_bytes()),
    )
}

/// FNV-1a, 64 bits: stable across Rust versions, unlike `DefaultHasher`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The kernel version a stamp records, if its `hash=` line is `hash`.
pub fn stamp_matches(stamp: &str, hash: u64) -> Option<String> {
    let field = |key: &str| {
        stamp
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    };
    let recorded = u64::from_str_radix(field("hash")?, 16).ok()?;
    let version = field("kernel_version")?;
    (recorded == hash && !version.is_empty()).then(|| version.to_string())
}

// ---------------------------------------------------------------------------------------------
// Kernel modules
// ---------------------------------------------------------------------------------------------

/// The `depends=` list of a kernel module (an ELF64 relocatable with a `.modinfo` section of
/// NUL-separated `key=value` strings), each name with `-` read as `_` (as the kernel and
/// [`module_files`] do: `nvme` depends on `nvme-core`, the file `nvme-core.ko`).
pub fn modinfo_depends(elf: &[u8]) -> Result<Vec<String>> {
    let modinfo = elf_section(elf, ".modinfo")?.context("no .modinfo section")?;
    Ok(modinfo
        .split(|&b| b == 0)
        .filter_map(|s| s.strip_prefix(b"depends="))
        .flat_map(|deps| {
            String::from_utf8_lossy(deps)
                .split(',')
                .filter(|d| !d.is_empty())
                .map(|d| d.replace('-', "_"))
                .collect::<Vec<_>>()
        })
        .collect())
}

/// The contents of the named section of a little-endian ELF64 file.
fn elf_section<'a>(elf: &'a [u8], name: &str) -> Result<Option<&'a [u8]>> {
    if elf.len() < 64 || elf[..4] != *b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        bail!("not a little-endian ELF64 file");
    }
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let bad = || anyhow::anyhow!("truncated ELF section headers");
    let shoff = usize::try_from(u64_at(0x28).ok_or_else(bad)?)?;
    let shentsize = usize::from(u16_at(0x3A).ok_or_else(bad)?);
    let shnum = usize::from(u16_at(0x3C).ok_or_else(bad)?);
    let shstrndx = usize::from(u16_at(0x3E).ok_or_else(bad)?);
    if shentsize < 64 {
        bail!("ELF section header size {shentsize} < 64");
    }
    let section = |i: usize| -> Result<(u32, &'a [u8])> {
        let h = shoff + i * shentsize;
        let name = u32_at(h).ok_or_else(bad)?;
        let offset = usize::try_from(u64_at(h + 0x18).ok_or_else(bad)?)?;
        let size = usize::try_from(u64_at(h + 0x20).ok_or_else(bad)?)?;
        let data = elf
            .get(offset..offset.checked_add(size).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        Ok((name, data))
    };
    let (_, strtab) = section(shstrndx)?;
    for i in 0..shnum {
        let (name_off, data) = section(i)?;
        let Some(rest) = strtab.get(name_off as usize..) else {
            continue;
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if rest[..end] == *name.as_bytes() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// `roots` and everything they depend on, dependencies before their users (depth-first post-order,
/// roots in the given order): the order to `insmod` them in.
pub fn load_order(
    roots: &[&str],
    mut depends: impl FnMut(&str) -> Result<Vec<String>>,
) -> Result<Vec<String>> {
    fn visit(
        name: &str,
        depends: &mut dyn FnMut(&str) -> Result<Vec<String>>,
        done: &mut Vec<String>,
        path: &mut Vec<String>,
    ) -> Result<()> {
        if done.iter().any(|d| d == name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            bail!("module dependency cycle: {} -> {name}", path.join(" -> "));
        }
        path.push(name.to_string());
        for dep in depends(name)? {
            visit(&dep, depends, done, path)?;
        }
        path.pop();
        done.push(name.to_string());
        Ok(())
    }
    let mut done = Vec::new();
    for root in roots {
        visit(root, &mut depends, &mut done, &mut Vec::new())?;
    }
    Ok(done)
}

// ---------------------------------------------------------------------------------------------
// newc cpio
// ---------------------------------------------------------------------------------------------

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// A newc ("070701") cpio archive being written: entries owned by root, mtime 0 (reproducible).
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    next_ino: u32,
}

impl Cpio {
    pub fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name, S_IFDIR | perm, 2, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, S_IFREG | perm, 1, (0, 0), data);
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | perm, 1, (major, minor), &[]);
    }

    /// The archive: the entries, the `TRAILER!!!` entry, zeros up to a multiple of 512 bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.header("TRAILER!!!", 0, 0, 1, (0, 0), 0);
        let len = self.buf.len().next_multiple_of(512);
        self.buf.resize(len, 0);
        self.buf
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_ino += 1;
        let size = u32::try_from(data.len()).expect("cpio entries are under 4 GiB");
        self.header(
            name.trim_start_matches('/'),
            self.next_ino,
            mode,
            nlink,
            rdev,
            size,
        );
        self.buf.extend_from_slice(data);
        self.pad4();
    }

    /// The 110-byte header and the NUL-terminated name, padded to 4 bytes.
    fn header(&mut self, name: &str, ino: u32, mode: u32, nlink: u32, rdev: (u32, u32), size: u32) {
        let namesize = u32::try_from(name.len() + 1).expect("short name");
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
        // namesize (with the NUL), check.
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad4();
    }

    fn pad4(&mut self) {
        let len = self.buf.len().next_multiple_of(4);
        self.buf.resize(len, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed entry: (name, mode, nlink, rdevmajor, rdevminor, data).
    type Entry = (String, u32, u32, u32, u32, Vec<u8>);

    /// A minimal newc reader that checks alignment on the way.
    fn read_cpio(mut a: &[u8]) -> Vec<Entry> {
        let total = a.len();
        let mut out = Vec::new();
        loop {
            assert_eq!((total - a.len()) % 4, 0, "header not 4-aligned");
            assert_eq!(&a[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&a[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, nlink, size) = (field(1), field(4), field(6) as usize);
            let (rmaj, rmin, namesize) = (field(9), field(10), field(11) as usize);
            assert_eq!(field(12), 0, "check field");
            let name = std::str::from_utf8(&a[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(a[110 + namesize - 1], 0, "name NUL");
            let data_start = (110 + namesize).next_multiple_of(4);
            assert!(a[110 + namesize..data_start].iter().all(|&b| b == 0));
            let data = a[data_start..data_start + size].to_vec();
            let next = (data_start + size).next_multiple_of(4);
            assert!(a[data_start + size..next].iter().all(|&b| b == 0));
            a = &a[next..];
            let trailer = name == "TRAILER!!!";
            out.push((name, mode, nlink, rmaj, rmin, data));
            if trailer {
                assert!(a.iter().all(|&b| b == 0), "only padding after the trailer");
                return out;
            }
        }
    }

    #[test]
    fn bzimage_payload_follows_the_setup_sectors() {
        let mut img = vec![0u8; 4096];
        img[0x1F1] = 2; // two setup sectors: the protected-mode part starts at 3 * 512
        img[0x248..0x24C].copy_from_slice(&0x10u32.to_le_bytes());
        img[0x24C..0x250].copy_from_slice(&4u32.to_le_bytes());
        img[3 * 512 + 0x10..3 * 512 + 0x14].copy_from_slice(b"XZ!!");
        assert_eq!(bzimage_payload(&img).unwrap(), b"XZ!!");
        img[0x1F1] = 0; // 0 means 4
        img[5 * 512 + 0x10..5 * 512 + 0x14].copy_from_slice(b"four");
        assert_eq!(bzimage_payload(&img).unwrap(), b"four");
        img[0x24C..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(bzimage_payload(&img).is_err(), "payload past the end");
        assert!(bzimage_payload(&img[..0x100]).is_err(), "no setup header");
        assert!(unpack_vmlinux(&img).is_err(), "not XZ");
    }

    #[test]
    fn cpio_header_fields() {
        let mut c = Cpio::default();
        c.file("/init", 0o755, b"hello");
        let a = c.finish();
        let header = std::str::from_utf8(&a[..110]).unwrap();
        assert_eq!(
            header,
            concat!(
                "070701", "00000001", "000081ED", "00000000", "00000000", "00000001", "00000000",
                "00000005", "00000000", "00000000", "00000000", "00000000", "00000005", "00000000"
            )
        );
        // "init\0" ends at 115; padded to 116; data; padded to 124.
        assert_eq!(&a[110..116], b"init\0\0");
        assert_eq!(&a[116..121], b"hello");
        assert_eq!(&a[121..124], &[0, 0, 0]);
        assert_eq!(&a[124..130], b"070701");
    }

    #[test]
    fn cpio_entries_padding_and_trailer() {
        let mut c = Cpio::default();
        c.dir("dev", 0o755);
        c.char_dev("dev/console", 0o600, 5, 1);
        c.char_dev("dev/ttyS0", 0o660, 4, 64);
        c.file("bin/busybox", 0o755, &[1, 2, 3, 4, 5, 6, 7]);
        c.symlink("bin/sh", "busybox");
        c.file("empty", 0o644, b"");
        let a = c.finish();
        assert_eq!(a.len() % 512, 0);
        let e = read_cpio(&a);
        let names: Vec<&str> = e.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "dev/ttyS0",
                "bin/busybox",
                "bin/sh",
                "empty",
                "TRAILER!!!"
            ]
        );
        assert_eq!((e[0].1, e[0].2), (0o040755, 2));
        assert_eq!((e[1].1, e[1].3, e[1].4), (0o020600, 5, 1));
        assert_eq!((e[2].1, e[2].3, e[2].4), (0o020660, 4, 64));
        assert_eq!(e[3].1, 0o100755);
        assert_eq!(e[3].5, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!((e[4].1, e[4].5.as_slice()), (0o120777, &b"busybox"[..]));
        assert!(e[5].5.is_empty());
        let t = &e[6];
        assert_eq!((t.1, t.2, t.5.len()), (0, 1, 0));
    }

    #[test]
    fn cpio_inodes_are_distinct() {
        let mut c = Cpio::default();
        c.dir("a", 0o755);
        c.dir("b", 0o755);
        let a = c.finish();
        assert_eq!(&a[6..14], b"00000001");
        let second = (110 + 2usize).next_multiple_of(4);
        assert_eq!(&a[second + 6..second + 14], b"00000002");
    }

    #[test]
    fn depends_of_apt_cache_depends() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            kernel_package_from_depends(text).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
    }

    #[test]
    fn depends_of_apt_cache_show() {
        let text = "Package: linux-image-amd64\nVersion: 6.1.192-2\n\
                    Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)\nDescription: x\n";
        assert_eq!(
            kernel_package_from_depends(text).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        let alt = "Depends: initramfs-tools | linux-initramfs-tool, linux-image-6.12.9-amd64 (= 1)";
        assert_eq!(
            kernel_package_from_depends(alt).as_deref(),
            Some("linux-image-6.12.9-amd64")
        );
        assert_eq!(
            kernel_package_from_depends("Depends: linux-image-amd64\n"),
            None
        );
        assert_eq!(kernel_package_from_depends("E: No packages found\n"), None);
    }

    #[test]
    fn print_uris_lines() {
        let text = "'http://d/pool/l/linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb' \
                    linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb 70550672 SHA256:a86e\n\
                    'http://d/pool/b/busybox-static_1.35.0_amd64.deb' \
                    busybox-static_1%3a1.35.0-4_amd64.deb 928188 SHA256:3d3f\n";
        let files = parse_print_uris(text).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].package, "linux-image-6.1.0-56-amd64");
        assert_eq!(files[0].size, 70550672);
        assert_eq!(files[1].package, "busybox-static");
        assert_eq!(files[1].filename, "busybox-static_1%3a1.35.0-4_amd64.deb");
        assert_eq!(files[1].hash, "SHA256:3d3f");
        assert!(parse_print_uris("'u' only-two 1\n").is_err());
        assert!(parse_print_uris("W: something\n").unwrap().is_empty());
    }

    fn debs(kernel: &str) -> Debs {
        let f = |p: &str, n: &str| DebFile {
            package: p.into(),
            filename: n.into(),
            size: 1,
            hash: "SHA256:00".into(),
        };
        Debs {
            kernel: f("linux-image-6.1.0-56-amd64", kernel),
            busybox: f("busybox-static", "busybox-static_1_amd64.deb"),
        }
    }

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn stamp_round_trip_and_invalidation() {
        let manifest = inputs_manifest(&debs("linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb"), 1);
        assert!(manifest.contains("kernel_deb=linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb"));
        assert!(manifest.contains("modules=virtio_pci,"));
        assert!(manifest.contains(&format!("init={:016x}", fnv1a64(INIT_SCRIPT.as_bytes()))));
        let hash = fnv1a64(manifest.as_bytes());
        let stamp = format!("{manifest}kernel_version=6.1.0-56-amd64\nhash={hash:016x}\n");
        assert_eq!(
            stamp_matches(&stamp, hash).as_deref(),
            Some("6.1.0-56-amd64")
        );
        // A new kernel package changes the hash.
        let newer = inputs_manifest(&debs("linux-image-6.1.0-57-amd64_6.1.200-1_amd64.deb"), 1);
        assert_ne!(fnv1a64(newer.as_bytes()), hash);
        assert_eq!(stamp_matches(&stamp, fnv1a64(newer.as_bytes())), None);
        assert_eq!(stamp_matches("hash=zz\nkernel_version=x\n", hash), None);
        assert_eq!(stamp_matches(&format!("hash={hash:016x}\n"), hash), None);
    }

    #[test]
    fn init_script_shape() {
        assert!(INIT_SCRIPT.starts_with("#!/bin/sh\n"));
        for needle in [
            "QUERCUS-GUEST: up",
            "QUERCUS-GUEST: cpus=$(nproc) mem_kb=",
            "QUERCUS-GUEST: pci devices=",
            "dmesg | grep MMCONFIG",
            "poweroff -f",
            "reboot -f",
            "echo c > /proc/sysrq-trigger",
            "setsid cttyhack sh",
            MODULE_LIST,
            "/sys/class/misc/hw_random/rng_current",
            "QUERCUS-GUEST: hwrng=${rng:-none}",
            "mount -t ext4 /dev/vda /mnt",
            "QUERCUS-GUEST: blk found written sha256=$sum",
            "QUERCUS-GUEST: net isolated ping=$result rx_packets=$(rx_packets)",
            "/sys/class/net/eth0/statistics/rx_packets",
            "QUERCUS-GUEST: demo ping ok",
            "ping -c 3 -W 3 \"$peer\" | tee /tmp/demo-ping",
        ] {
            assert!(INIT_SCRIPT.contains(needle), "{needle}");
        }
        // Every test mode the doc comment names has a branch.
        for mode in [
            "poweroff",
            "reboot",
            "panic",
            "virtio-blk",
            "net-server",
            "net-client",
            "net-isolated",
            "demo",
            "bench-blk",
            "bench-net-server",
            "bench-net-client",
            "passthrough-nic",
            "passthrough-nvme",
            "passthrough",
            "bench-passthrough",
        ] {
            assert!(
                INIT_SCRIPT.contains(&format!("\n    {mode})"))
                    || INIT_SCRIPT.contains(&format!("\n    {mode}|")),
                "{mode}"
            );
        }
    }

    /// What the script writes and sends must be what the host-side checks expect.
    #[test]
    fn init_script_matches_the_host_side_constants() {
        use crate::disk_image::{written_txt, WRITTEN_LINES, WRITTEN_LINE_PREFIX};
        assert!(INIT_SCRIPT.contains(&format!(
            "seq 1 {WRITTEN_LINES} | while read -r n; do echo \"{WRITTEN_LINE_PREFIX} $n\"; done > /mnt/written.txt"
        )));
        // The loop's output for n = 1, 2, as the shell would print it.
        let first: String = (1..=2)
            .map(|n| format!("{WRITTEN_LINE_PREFIX} {n}\n"))
            .collect();
        assert!(written_txt().starts_with(first.as_bytes()));
        assert!(INIT_SCRIPT.contains(&format!("nc -l -p {NET_PORT} ")));
        assert!(INIT_SCRIPT.contains(&format!("nc \"$peer\" {NET_PORT} < /tmp/tx")));
        assert_eq!(NET_BYTES, 16 * 1048576);
        assert!(INIT_SCRIPT.contains("dd if=/dev/urandom of=/tmp/tx bs=1048576 count=16 "));
    }

    /// The passthrough modes write what xtask checks on the host, and read the boot file name
    /// the DHCP script keeps.
    #[test]
    fn passthrough_modes_match_the_host_side() {
        use crate::passthrough_data::{nvme_written, NVME_WRITE_BYTES, NVME_WRITE_OFFSET};
        // 32768 lines of "quercus nvme " + 18 digits + "\n" = 1 MiB, as nvme_written has them.
        assert!(INIT_SCRIPT.contains(
            r#"awk 'BEGIN { for (i = 0; i < 32768; i++) printf "quercus nvme %018d\n", i }'"#
        ));
        assert_eq!(32768 * 32, NVME_WRITE_BYTES);
        assert_eq!(
            &nvme_written()[32..64],
            b"quercus nvme 000000000000000001\n"
        );
        assert_eq!(NVME_WRITE_OFFSET, 8 << 20);
        assert!(INIT_SCRIPT.contains("bs=1048576 seek=8 count=1 oflag=direct conv=fsync,notrunc"));
        assert!(INIT_SCRIPT.contains("bs=1048576 skip=8 count=1 iflag=direct"));
        assert!(INIT_SCRIPT.contains("udhcpc -i \"$pt_if\" -s /etc/udhcpc.script "));
        assert_eq!(format!("/{UDHCPC_SCRIPT_PATH}"), "/etc/udhcpc.script");
        assert!(UDHCPC_SCRIPT.contains("echo \"$boot_file\" > /tmp/dhcp-bootfile"));
        assert!(INIT_SCRIPT.contains("read -r pt_url < /tmp/dhcp-bootfile"));
        assert!(UDHCPC_SCRIPT.contains("ip addr add \"$ip/${mask:-24}\" dev \"$interface\""));
        for line in [
            "QUERCUS-GUEST: nic $pt_if driver=${pt_driver:-none} addr=$addr",
            "QUERCUS-GUEST: nic fetched bytes=$(stat -c %s /tmp/fetched) sha256=$sum",
            "QUERCUS-GUEST: nic irqs=$1 kind=$2",
            "QUERCUS-GUEST: nvme read sha256=$sum",
            "QUERCUS-GUEST: nvme wrote sha256=$sum",
            "QUERCUS-GUEST: nvme irqs=$1 kind=$2",
            "QUERCUS-GUEST: passthrough done",
            "QUERCUS-GUEST: passthrough error $*",
        ] {
            assert!(INIT_SCRIPT.contains(line), "{line}");
        }
    }

    /// The passed-through devices' drivers are in the initramfs.
    #[test]
    fn module_roots_cover_the_passthrough_devices() {
        for m in ["e1000e", "e1000", "nvme"] {
            assert!(MODULE_ROOTS.contains(&m), "{m}");
        }
        let manifest = inputs_manifest(&debs("k.deb"), 1);
        assert!(
            manifest.contains(",e1000e,e1000,nvme,uio_pci_generic\n"),
            "{manifest}"
        );
        assert!(manifest.contains(&format!(
            "udhcpc={:016x}",
            fnv1a64(UDHCPC_SCRIPT.as_bytes())
        )));
    }

    /// ext4 needs its checksum driver loaded before it mounts a metadata_csum filesystem.
    #[test]
    fn module_roots_cover_the_virtio_tests() {
        let at = |m: &str| MODULE_ROOTS.iter().position(|r| *r == m);
        for m in [
            "virtio_pci",
            "virtio_blk",
            "virtio_net",
            "virtio_console",
            "virtio_rng",
            "ext4",
            "cpuid",
        ] {
            assert!(at(m).is_some(), "{m}");
        }
        assert!(at("crc32c_generic") < at("ext4"));
    }

    #[test]
    fn load_order_puts_dependencies_first() {
        let deps: BTreeMap<&str, Vec<&str>> = [
            (
                "virtio_pci",
                vec!["virtio_ring", "virtio_pci_modern_dev", "virtio"],
            ),
            ("virtio_net", vec!["virtio_ring", "virtio", "net_failover"]),
            ("net_failover", vec!["failover"]),
            ("virtio_ring", vec![]),
            ("virtio", vec![]),
            ("virtio_pci_modern_dev", vec![]),
            ("failover", vec![]),
        ]
        .into_iter()
        .collect();
        let order = load_order(&["virtio_pci", "virtio_net"], |n| {
            Ok(deps[n].iter().map(|s| s.to_string()).collect())
        })
        .unwrap();
        assert_eq!(
            order,
            [
                "virtio_ring",
                "virtio_pci_modern_dev",
                "virtio",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
        let cyclic = load_order(&["a"], |n| {
            Ok(vec![if n == "a" { "b" } else { "a" }.to_string()])
        });
        assert!(cyclic.is_err());
        assert!(load_order(&["x"], |_| bail!("missing")).is_err());
    }

    /// A minimal ELF64 with a null section, `.modinfo` and `.shstrtab`.
    fn tiny_elf(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let mut e = vec![0u8; 64];
        e[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let modinfo_off = e.len();
        e.extend_from_slice(modinfo);
        let strtab_off = e.len();
        e.extend_from_slice(shstrtab);
        let shoff = e.len().next_multiple_of(8);
        e.resize(shoff, 0);
        let sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            h
        };
        e.extend(sh(0, 0, 0));
        e.extend(sh(1, modinfo_off, modinfo.len()));
        e.extend(sh(10, strtab_off, shstrtab.len()));
        e[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        e[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        e[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
        e[0x3E..0x40].copy_from_slice(&2u16.to_le_bytes());
        e
    }

    #[test]
    fn modinfo_depends_from_elf() {
        let elf = tiny_elf(b"license=GPL\0depends=virtio_ring,virtio\0name=virtio_blk\0");
        assert_eq!(modinfo_depends(&elf).unwrap(), ["virtio_ring", "virtio"]);
        let dashed = tiny_elf(b"depends=nvme-core\0name=nvme\0");
        assert_eq!(modinfo_depends(&dashed).unwrap(), ["nvme_core"]);
        let none = tiny_elf(b"license=GPL\0depends=\0name=virtio\0");
        assert!(modinfo_depends(&none).unwrap().is_empty());
        assert!(modinfo_depends(b"not an elf").is_err());
    }
}
