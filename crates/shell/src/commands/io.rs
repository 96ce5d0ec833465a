//! The devices the hypervisor serves VMs: virtio devices and the virtual switches between them.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use super::{vm::lookup, CmdError, Ctx, Outcome};
use crate::backend::{SwitchLine, VirtioBackend, VirtioLine, VIRTIO_STATUS_BITS};
use crate::output::{Output, Table};
use crate::parse::Args;

/// `ACK,DRIVER,FEATURES_OK,DRIVER_OK`; `reset` for 0; bits virtio does not define as hex.
pub(super) fn status_words(status: u8) -> String {
    if status == 0 {
        return "reset".into();
    }
    let mut words: Vec<String> = VIRTIO_STATUS_BITS
        .iter()
        .filter(|(bit, _)| status & bit != 0)
        .map(|(_, word)| String::from(*word))
        .collect();
    let known = VIRTIO_STATUS_BITS.iter().fold(0, |acc, (bit, _)| acc | bit);
    let rest = status & !known;
    if rest != 0 {
        words.push(format!("{rest:#04x}"));
    }
    words.join(",")
}

/// `02:00:00:00:00:0a`.
pub(super) fn mac(mac: &[u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// `disk0 rw`, `02:00:00:00:00:0a on lan0`, `-`.
fn backend_text(backend: &VirtioBackend) -> String {
    match backend {
        VirtioBackend::Disk { module, readonly } => {
            format!("{module} {}", if *readonly { "ro" } else { "rw" })
        }
        VirtioBackend::Switch { mac: m, switch } => format!("{} on {switch}", mac(m)),
        VirtioBackend::None => "-".into(),
    }
}

fn device_row(d: &VirtioLine) -> Vec<String> {
    vec![
        d.slot.clone(),
        d.kind.clone(),
        backend_text(&d.backend),
        status_words(d.status),
        format!("{:#x}", d.features),
        d.requests.to_string(),
        d.errors.to_string(),
        d.bytes_in.to_string(),
        d.bytes_out.to_string(),
        d.dropped.to_string(),
        d.interrupts.to_string(),
        format!("{}/{}", d.notifies, d.ignored_notifies),
        d.needs_reset.to_string(),
        d.fault.clone().unwrap_or_else(|| "-".into()),
    ]
}

fn virtio_tables(out: &mut Output, devices: &[VirtioLine]) {
    let mut t = Table::new(&[
        "SLOT",
        "DEVICE",
        "BACKEND",
        "STATUS",
        "FEATURES",
        "REQS",
        "ERRS",
        "BYTES IN",
        "BYTES OUT",
        "DROPPED",
        "IRQS",
        "NOTIFY/IGN",
        "NEEDS RESET",
        "LAST FAULT",
    ]);
    for d in devices {
        t.row(device_row(d));
    }
    t.write_to(out);
    if devices.iter().all(|d| d.queues.is_empty()) {
        return;
    }
    // One indented line per queue, under a header of its own.
    let mut q = Table::new(&["  SLOT", "QUEUE", "SIZE", "ENABLED", "NOTIFIES", "SERVED"]);
    for d in devices {
        for l in &d.queues {
            q.row(vec![
                format!("  {}", d.slot),
                l.index.to_string(),
                l.size.to_string(),
                if l.enabled { "yes" } else { "no" }.into(),
                l.notifies.to_string(),
                l.served.to_string(),
            ]);
        }
    }
    q.write_to(out);
}

pub(super) fn virtio(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    let text = args.required("<vm>")?;
    args.finish()?;
    let vm = lookup(ctx, text)?;
    let devices = ctx.backend.virtio(vm.id)?;
    if devices.is_empty() {
        ctx.out.line(&format!("{} has no virtio devices", vm.name));
    } else {
        virtio_tables(ctx.out, &devices);
    }
    Ok(Outcome::Done)
}

fn switch_tables(out: &mut Output, s: &SwitchLine) {
    let ports = match s.ports.len() {
        1 => "1 port".into(),
        n => format!("{n} ports"),
    };
    out.line(&format!(
        "switch {}: {ports}, {} frames flooded",
        s.name, s.flooded
    ));
    if !s.ports.is_empty() {
        let mut t = Table::new(&[
            "  PORT",
            "MAC",
            "TX FRAMES",
            "TX BYTES",
            "RX FRAMES",
            "RX BYTES",
            "RX DROPPED",
            "TX MALFORMED",
            "QUEUED",
        ]);
        for p in &s.ports {
            t.row(vec![
                format!("  {}", p.name),
                mac(&p.mac),
                p.tx_frames.to_string(),
                p.tx_bytes.to_string(),
                p.rx_frames.to_string(),
                p.rx_bytes.to_string(),
                p.rx_dropped.to_string(),
                p.tx_malformed.to_string(),
                p.queued.to_string(),
            ]);
        }
        t.write_to(out);
    }
    if s.learned.is_empty() {
        out.line("  no addresses learned");
        return;
    }
    let mut t = Table::new(&["  LEARNED", "ON PORT"]);
    for (m, port) in &s.learned {
        t.row(vec![format!("  {}", mac(m)), port.clone()]);
    }
    t.write_to(out);
}

pub(super) fn switches(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    args.finish()?;
    let switches = ctx.backend.switches();
    if switches.is_empty() {
        ctx.out.line("no virtual switches");
    }
    for (i, s) in switches.iter().enumerate() {
        if i > 0 {
            ctx.out.line("");
        }
        switch_tables(ctx.out, s);
    }
    Ok(Outcome::Done)
}

pub(super) fn vuart_links(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    args.finish()?;
    let links = ctx.backend.vuart_links();
    if links.is_empty() {
        ctx.out.line("no vUART links");
    }
    for (i, l) in links.iter().enumerate() {
        if i > 0 {
            ctx.out.line("");
        }
        ctx.out.line(&format!(
            "vuart {}: {} {:#x} <-> {} {:#x}",
            l.name, l.ends[0].vm, l.ends[0].port, l.ends[1].vm, l.ends[1].port
        ));
        let mut t = Table::new(&[
            "  VM",
            "PORT",
            "STATE",
            "DTR",
            "RTS",
            "SENT",
            "DELIVERED",
            "DROPPED",
            "STALLS",
            "QUEUED",
        ]);
        let flag = |on: bool| String::from(if on { "on" } else { "off" });
        for e in &l.ends {
            t.row(vec![
                format!("  {}", e.vm),
                format!("{:#x}", e.port),
                String::from(if e.attached { "attached" } else { "absent" }),
                flag(e.dtr),
                flag(e.rts),
                e.sent.to_string(),
                e.delivered.to_string(),
                e.dropped.to_string(),
                e.stalls.to_string(),
                e.queued.to_string(),
            ]);
        }
        t.write_to(ctx.out);
    }
    Ok(Outcome::Done)
}

pub(super) fn shm(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    args.finish()?;
    let regions = ctx.backend.shm();
    if regions.is_empty() {
        ctx.out.line("no shared-memory regions");
    }
    for (i, r) in regions.iter().enumerate() {
        if i > 0 {
            ctx.out.line("");
        }
        ctx.out.line(&format!(
            "shm {}: {} KiB at host {:#x}, {} VMs",
            r.name,
            r.size >> 10,
            r.host,
            r.peers.len()
        ));
        let mut t = Table::new(&[
            "  PEER",
            "VM",
            "ACCESS",
            "SLOT",
            "BAR2",
            "STATE",
            "SENT",
            "RECEIVED",
            "DELIVERED",
            "COALESCED",
            "DROPPED",
            "RATE-LIMITED",
            "TRAPPED",
        ]);
        for (id, p) in r.peers.iter().enumerate() {
            t.row(vec![
                format!("  {id}"),
                p.vm.clone(),
                String::from(if p.readonly { "ro" } else { "rw" }),
                p.slot.to_string(),
                format!("{:#x}", p.bar2),
                String::from(if p.attached { "attached" } else { "absent" }),
                p.sent.to_string(),
                p.received.to_string(),
                p.delivered.to_string(),
                p.coalesced.to_string(),
                p.dropped.to_string(),
                p.rate_limited.to_string(),
                p.trapped.to_string(),
            ]);
        }
        t.write_to(ctx.out);
    }
    Ok(Outcome::Done)
}

pub(super) fn pci(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    args.finish()?;
    let lines = ctx.backend.pci();
    if lines.is_empty() {
        ctx.out.line("no PCI functions found");
        return Ok(Outcome::Done);
    }
    let mut t = Table::new(&[
        "BDF", "ID", "CLASS", "OWNER", "AS", "STATE", "VECTORS", "IRQS", "RESETS", "FAULTS",
    ]);
    for l in &lines {
        let (owner, at) = match &l.owner {
            Some((vm, at)) => (vm.clone(), at.clone()),
            None => ("-".into(), "-".into()),
        };
        let vectors: Vec<String> = l.vectors.iter().map(|v| format!("{v:#04x}")).collect();
        let resets = if l.owner.is_some() {
            format!("{} ({})", l.resets, l.reset_method)
        } else {
            "-".into()
        };
        t.row(vec![
            l.bdf.clone(),
            format!("{:04x}:{:04x}", l.vendor_id, l.device_id),
            format!("{:06x}", l.class),
            owner,
            at,
            if l.state.is_empty() {
                "-".into()
            } else {
                l.state.clone()
            },
            if vectors.is_empty() {
                "-".into()
            } else {
                vectors.join(",")
            },
            l.interrupts.to_string(),
            resets,
            l.dma_faults.to_string(),
        ]);
    }
    t.write_to(ctx.out);
    Ok(Outcome::Done)
}

pub(super) fn iommu(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    args.finish()?;
    let units = ctx.backend.iommu();
    if units.is_empty() {
        ctx.out
            .line("no IOMMU: passed-through devices are not DMA-isolated (see `pci`)");
    }
    for u in &units {
        ctx.out
            .line(&format!("{}: {}; {} fault(s)", u.name, u.state, u.faults));
        for f in &u.recent {
            ctx.out.line(&format!("  {f}"));
        }
    }
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bits_as_words() {
        assert_eq!(status_words(0), "reset");
        assert_eq!(status_words(1 | 2), "ACK,DRIVER");
        assert_eq!(
            status_words(1 | 2 | 4 | 8),
            "ACK,DRIVER,FEATURES_OK,DRIVER_OK"
        );
        assert_eq!(
            status_words(0xff),
            "ACK,DRIVER,FEATURES_OK,DRIVER_OK,NEEDS_RESET,FAILED,0x30"
        );
        assert_eq!(status_words(0x10), "0x10");
        assert_eq!(status_words(0x80), "FAILED");
    }

    #[test]
    fn macs_and_backends() {
        assert_eq!(mac(&[2, 0, 0, 0xab, 0, 0x0a]), "02:00:00:ab:00:0a");
        assert_eq!(
            backend_text(&VirtioBackend::Disk {
                module: "disk0".into(),
                readonly: true
            }),
            "disk0 ro"
        );
        assert_eq!(
            backend_text(&VirtioBackend::Switch {
                mac: [2, 0, 0, 0, 0, 1],
                switch: "lan0".into()
            }),
            "02:00:00:00:00:01 on lan0"
        );
        assert_eq!(backend_text(&VirtioBackend::None), "-");
    }
}
