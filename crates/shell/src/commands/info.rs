//! Hypervisor-wide commands: version, statistics, interrupt and IOAPIC tables, log level, reboot.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use vm::ExitStats;

use super::{vm::lookup, CmdError, Ctx, Outcome};
use crate::backend::{IoapicLine, StatsLine, VmId};
use crate::output::Table;
use crate::parse::{parse_log_level, Args, LOG_LEVELS};

pub(super) fn version(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    args.finish()?;
    let v = String::from(ctx.backend.version());
    ctx.out.line(&v);
    Ok(Outcome::Done)
}

/// `97.3%`: the guest's share of the cycles, to a tenth of a percent; `-` if none were counted.
fn guest_share(guest: u64, hv: u64) -> String {
    let total = u128::from(guest) + u128::from(hv);
    if total == 0 {
        return "-".into();
    }
    let permille = u128::from(guest) * 1000 / total;
    format!("{}.{}%", permille / 10, permille % 10)
}

fn stats_row(name: &str, vcpu: String, s: &StatsLine) -> Vec<String> {
    vec![
        name.into(),
        vcpu,
        s.exits.total().to_string(),
        s.injected.to_string(),
        guest_share(s.guest_cycles, s.hv_cycles),
        s.exits.to_string(),
    ]
}

pub(super) fn stats(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    let which = args.optional();
    args.finish()?;
    let filter = which.map(|t| lookup(ctx, t)).transpose()?.map(|v| v.id);
    let vms = ctx.backend.vms();
    let lines = ctx.backend.stats(filter)?;
    let name_of = |id: VmId| {
        vms.iter()
            .find(|v| v.id == id)
            .map_or_else(|| id.to_string(), |v| v.name.clone())
    };
    let mut t = Table::new(&[
        "VM",
        "VCPU",
        "EXITS",
        "INJECTED",
        "GUEST%",
        "EXITS BY REASON",
    ]);
    let mut i = 0;
    while let Some(first) = lines.get(i) {
        let vm = first.vm;
        let name = name_of(vm);
        let mut total = StatsLine {
            vm,
            vcpu: 0,
            exits: ExitStats::new(),
            injected: 0,
            guest_cycles: 0,
            hv_cycles: 0,
        };
        let mut n = 0;
        for s in lines[i..].iter().take_while(|s| s.vm == vm) {
            t.row(stats_row(&name, s.vcpu.to_string(), s));
            total.exits.add(&s.exits);
            total.injected = total.injected.saturating_add(s.injected);
            total.guest_cycles = total.guest_cycles.saturating_add(s.guest_cycles);
            total.hv_cycles = total.hv_cycles.saturating_add(s.hv_cycles);
            n += 1;
        }
        if n > 1 {
            t.row(stats_row(&name, "all".into(), &total));
        }
        i += n;
    }
    t.write_to(ctx.out);
    Ok(Outcome::Done)
}

pub(super) fn mem(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    args.finish()?;
    let m = ctx.backend.mem_usage();
    let mut t = Table::new(&["POOL", "USED", "FREE", "TOTAL"]);
    let kib = |bytes: u64| format!("{} KiB", bytes / 1024);
    let frames_used = m.frames_total.saturating_sub(m.frames_free);
    t.row(vec![
        "frames".into(),
        kib(frames_used * 4096),
        kib(m.frames_free * 4096),
        kib(m.frames_total * 4096),
    ]);
    t.row(vec![
        "heap".into(),
        kib(m.heap_used),
        kib(m.heap_total.saturating_sub(m.heap_used)),
        kib(m.heap_total),
    ]);
    t.write_to(ctx.out);
    Ok(Outcome::Done)
}

pub(super) fn int(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    args.finish()?;
    let irqs = ctx.backend.interrupts();
    let cpus = irqs.iter().map(|l| l.counts.len()).max().unwrap_or(0);
    let mut header: Vec<String> = vec!["IRQ".into(), "VECTOR".into()];
    header.extend((0..cpus).map(|c| format!("CPU{c}")));
    header.push("OWNER".into());
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = Table::new(&header);
    for l in irqs {
        let mut row = vec![
            l.irq.map_or_else(|| "-".into(), |i| i.to_string()),
            format!("{:#04x}", l.vector),
        ];
        row.extend((0..cpus).map(|c| l.counts.get(c).copied().unwrap_or(0).to_string()));
        row.push(l.owner);
        t.row(row);
    }
    t.write_to(ctx.out);
    Ok(Outcome::Done)
}

/// One decoded redirection-table entry (Intel 82093AA layout).
fn rte_row(l: &IoapicLine) -> Vec<String> {
    let rte = l.rte;
    let bit = |n: u32| rte >> n & 1 != 0;
    let delivery = match rte >> 8 & 7 {
        0 => "fixed",
        1 => "lowest",
        2 => "smi",
        4 => "nmi",
        5 => "init",
        7 => "extint",
        _ => "reserved",
    };
    vec![
        l.ioapic.to_string(),
        l.pin.to_string(),
        format!("{:#04x}", rte & 0xff),
        delivery.into(),
        if bit(11) { "logical" } else { "physical" }.into(),
        format!("{:#04x}", rte >> 56),
        if bit(15) { "level" } else { "edge" }.into(),
        if bit(13) { "low" } else { "high" }.into(),
        if bit(16) { "yes" } else { "no" }.into(),
        u8::from(bit(14)).to_string(),
    ]
}

fn ioapic_table(ctx: &mut Ctx<'_>, lines: &[IoapicLine]) {
    let mut t = Table::new(&[
        "IOAPIC", "PIN", "VECTOR", "DELIVERY", "DESTMODE", "DEST", "TRIGGER", "POLARITY", "MASKED",
        "IRR",
    ]);
    for l in lines {
        t.row(rte_row(l));
    }
    t.write_to(ctx.out);
}

pub(super) fn vioapic(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    let text = args.required("<vm>")?;
    args.finish()?;
    let vm = lookup(ctx, text)?;
    let lines = ctx.backend.ioapic(Some(vm.id))?;
    ioapic_table(ctx, &lines);
    Ok(Outcome::Done)
}

pub(super) fn dump_ioapic(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    args.finish()?;
    let lines = ctx.backend.ioapic(None)?;
    ioapic_table(ctx, &lines);
    Ok(Outcome::Done)
}

pub(super) fn loglevel(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    let level = args.optional().map(parse_log_level).transpose()?;
    args.finish()?;
    if let Some(level) = level {
        ctx.backend.set_log_level(level);
    }
    let level = ctx.backend.log_level();
    let name = LOG_LEVELS
        .iter()
        .find(|(l, _)| *l == level)
        .map_or("?", |(_, n)| n);
    ctx.out
        .line(&format!("log level: {name} ({})", level as usize));
    Ok(Outcome::Done)
}

pub(super) fn reboot(_ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    args.finish()?;
    Ok(Outcome::Reboot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_share_in_tenths() {
        assert_eq!(guest_share(0, 0), "-");
        assert_eq!(guest_share(9, 1), "90.0%");
        assert_eq!(guest_share(2, 1), "66.6%");
        assert_eq!(guest_share(u64::MAX, u64::MAX), "50.0%");
        assert_eq!(guest_share(0, 5), "0.0%");
    }

    #[test]
    fn rte_fields() {
        let row = rte_row(&IoapicLine {
            ioapic: 2,
            pin: 9,
            rte: (0xff << 56) | (1 << 16) | (6 << 8) | 0x41,
        });
        assert_eq!(
            row,
            ["2", "9", "0x41", "reserved", "physical", "0xff", "edge", "high", "yes", "0"]
        );
    }
}
