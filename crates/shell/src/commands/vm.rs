//! VM commands: listing VMs and vCPUs, vCPU registers, console attach and history, lifecycle.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use scenario::{LoadOrder, VmType};
use vcpu::SystemState;

use super::{CmdError, Ctx, Outcome};
use crate::backend::{Lifecycle, VmInfo};
use crate::console::Port;
use crate::output::Table;
use crate::parse::{find_vm, parse_port, parse_u16, Args};

/// The VM a `<vm>` argument names, from a fresh list.
pub(super) fn lookup(ctx: &Ctx<'_>, text: &str) -> Result<VmInfo, CmdError> {
    let vms = ctx.backend.vms();
    Ok(find_vm(text, &vms)?.clone())
}

/// `pre-launched`, `service`, `post-launched`.
pub(super) const fn load_order_name(order: LoadOrder) -> &'static str {
    match order {
        LoadOrder::PreLaunched => "pre-launched",
        LoadOrder::Service => "service",
        LoadOrder::PostLaunched => "post-launched",
    }
}

/// `the Service VM`, `a post-launched VM` (for error messages).
pub(super) const fn load_order_article(order: LoadOrder) -> &'static str {
    match order {
        LoadOrder::PreLaunched => "a pre-launched VM",
        LoadOrder::Service => "the Service VM",
        LoadOrder::PostLaunched => "a post-launched VM",
    }
}

const fn vm_type_name(t: VmType) -> &'static str {
    match t {
        VmType::Standard => "standard",
        VmType::Rt => "rt",
    }
}

/// `512 MiB`, `2 GiB`, `4097 B`: the largest unit that divides the size exactly.
pub(super) fn size(bytes: u64) -> String {
    const UNITS: [(u32, &str); 4] = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
    for (shift, unit) in UNITS {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} B")
}

/// `1,2,3`.
fn pcpu_list(pcpus: &[u16]) -> String {
    let list: Vec<String> = pcpus.iter().map(ToString::to_string).collect();
    list.join(",")
}

pub(super) fn vm_list(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    args.finish()?;
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "STATE",
        "LOAD ORDER",
        "TYPE",
        "PCPUS",
        "VCPUS",
        "MEMORY",
    ]);
    for vm in ctx.backend.vms() {
        t.row(vec![
            vm.id.to_string(),
            vm.name,
            vm.state.to_string(),
            load_order_name(vm.load_order).into(),
            vm_type_name(vm.vm_type).into(),
            pcpu_list(&vm.pcpus),
            vm.vcpus.to_string(),
            size(vm.memory),
        ]);
    }
    t.write_to(ctx.out);
    Ok(Outcome::Done)
}

pub(super) fn vcpu_list(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    let which = args.optional();
    args.finish()?;
    let vms = match which {
        Some(text) => vec![lookup(ctx, text)?],
        None => ctx.backend.vms(),
    };
    let mut t = Table::new(&["VM", "VCPU", "PCPU", "STATE", "EXITS"]);
    for vm in &vms {
        for v in ctx.backend.vcpus(vm.id)? {
            t.row(vec![
                vm.name.clone(),
                v.index.to_string(),
                v.pcpu.to_string(),
                v.state.name().into(),
                v.exits.to_string(),
            ]);
        }
    }
    t.write_to(ctx.out);
    Ok(Outcome::Done)
}

/// `64-bit`, `protected 32-bit paging`, `real`...
fn cpu_mode(s: &SystemState) -> String {
    const CR0_PE: u64 = 1;
    const EFER_LMA: u64 = 1 << 10;
    const CS_L: u16 = 1 << 9;
    const CS_DB: u16 = 1 << 10;
    let mode = if s.cr0 & CR0_PE == 0 {
        "real"
    } else if s.efer & EFER_LMA != 0 {
        if s.cs.attrib & CS_L != 0 {
            "64-bit"
        } else {
            "compatibility"
        }
    } else if s.cs.attrib & CS_DB != 0 {
        "protected 32-bit"
    } else {
        "protected 16-bit"
    };
    if s.paging() {
        format!("{mode}, paging")
    } else {
        mode.into()
    }
}

pub(super) fn vcpu_break_entry(
    ctx: &mut Ctx<'_>,
    args: &mut Args<'_>,
) -> Result<Outcome, CmdError> {
    let vm_text = args.required("<vm>")?;
    let vcpu = parse_u16(args.required("<vcpu>")?)?;
    args.finish()?;
    let vm = lookup(ctx, vm_text)?;
    if vcpu >= vm.vcpus {
        return Err(CmdError::NoVcpu {
            vm: vm.name,
            vcpu,
            count: vm.vcpus,
        });
    }
    ctx.backend.break_entry(vm.id, vcpu)?;
    ctx.out.line(&format!(
        "{} vCPU {vcpu}: its next VM entry will fail (fault injection)",
        vm.name
    ));
    Ok(Outcome::Done)
}

pub(super) fn vcpu_dumpreg(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    let vm_text = args.required("<vm>")?;
    let vcpu = parse_u16(args.required("<vcpu>")?)?;
    args.finish()?;
    let vm = lookup(ctx, vm_text)?;
    if vcpu >= vm.vcpus {
        return Err(CmdError::NoVcpu {
            vm: vm.name,
            vcpu,
            count: vm.vcpus,
        });
    }
    // Reading a running vCPU's registers asks its pCPU between two exits: never an rt VM's.
    if let (VmType::Rt, false, Some(&pcpu)) = (
        vm.vm_type,
        vm.state == crate::backend::VmState::Paused,
        vm.pcpus.get(usize::from(vcpu)),
    ) {
        return Err(CmdError::RtRunning { vm: vm.name, pcpu });
    }
    let r = ctx.backend.vcpu_regs(vm.id, vcpu)?;
    let g = &r.gprs;
    let s = &r.system;
    let pcpu = vm.pcpus.get(usize::from(vcpu)).copied();
    let out = &mut *ctx.out;
    out.line(&match pcpu {
        Some(p) => format!("{} (id {}) vCPU {vcpu} on pCPU {p}", vm.name, vm.id),
        None => format!("{} (id {}) vCPU {vcpu}", vm.name, vm.id),
    });
    let rows: [[(&str, u64); 3]; 7] = [
        [("rip", r.rip), ("rsp", r.rsp), ("rflags", r.rflags)],
        [("rax", g.rax), ("rbx", g.rbx), ("rcx", g.rcx)],
        [("rdx", g.rdx), ("rsi", g.rsi), ("rdi", g.rdi)],
        [("rbp", g.rbp), ("r8", g.r8), ("r9", g.r9)],
        [("r10", g.r10), ("r11", g.r11), ("r12", g.r12)],
        [("r13", g.r13), ("r14", g.r14), ("r15", g.r15)],
        [("cr0", s.cr0), ("cr3", s.cr3), ("cr4", s.cr4)],
    ];
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .map(|(name, v)| format!("{name:<6} {v:#018x}"))
            .collect();
        out.line(&cells.join("  "));
    }
    out.line(&format!(
        "{:<6} {:#018x}  cpl    {}  mode   {}",
        "efer",
        s.efer,
        s.cpl,
        cpu_mode(s)
    ));
    out.line(&format!(
        "{:<6} selector {:#06x} base {:#x} limit {:#x} attributes {:#05x}",
        "cs", s.cs.selector, s.cs.base, s.cs.limit, s.cs.attrib
    ));
    Ok(Outcome::Done)
}

/// `<vm> [hvc]`: the VM (from a fresh list) and which of its consoles.
fn vm_and_port(ctx: &Ctx<'_>, args: &mut Args<'_>) -> Result<(VmInfo, Port), CmdError> {
    let text = args.required("<vm>")?;
    let port = parse_port(args.optional())?;
    args.finish()?;
    Ok((lookup(ctx, text)?, port))
}

pub(super) fn vm_console(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    let (vm, port) = vm_and_port(ctx, args)?;
    match port {
        Port::Uart if !vm.console => return Err(CmdError::NoConsole(vm.name)),
        Port::Hvc if !vm.hvc => return Err(CmdError::NoHvc(vm.name)),
        _ => {}
    }
    Ok(Outcome::Attach {
        vm: vm.id,
        name: vm.name,
        port,
    })
}

pub(super) fn vm_log(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    let (vm, port) = vm_and_port(ctx, args)?;
    if port == Port::Hvc && !vm.hvc {
        return Err(CmdError::NoHvc(vm.name));
    }
    let name = port.label(&vm.name);
    let (history, lost) = ctx
        .logs
        .get_mut(vm.id, port)
        .map(|r| r.take_history())
        .unwrap_or_default();
    if lost > 0 {
        ctx.out.line(&format!(
            "[{lost} bytes of {name} output were overwritten before anyone saw them]"
        ));
    }
    if history.is_empty() {
        ctx.out.line(&format!("[{name} has printed nothing]"));
        return Ok(Outcome::Done);
    }
    ctx.out.raw(&history);
    if !history.ends_with(b"\n") {
        ctx.out.line("");
    }
    Ok(Outcome::Done)
}

fn lifecycle(ctx: &mut Ctx<'_>, args: &mut Args<'_>, op: Lifecycle) -> Result<Outcome, CmdError> {
    let text = args.required("<vm>")?;
    args.finish()?;
    let vm = lookup(ctx, text)?;
    if vm.load_order != LoadOrder::PreLaunched {
        return Err(CmdError::NotPreLaunched {
            vm: vm.name,
            load_order: vm.load_order,
        });
    }
    if !op.allowed_from(vm.state) {
        return Err(CmdError::State {
            vm: vm.name,
            op,
            state: vm.state,
        });
    }
    ctx.backend.lifecycle(vm.id, op)?;
    ctx.out.line(&format!("{}: {}", vm.name, op.target()));
    Ok(Outcome::Done)
}

pub(super) fn vm_start(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    lifecycle(ctx, args, Lifecycle::Start)
}

pub(super) fn vm_stop(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    lifecycle(ctx, args, Lifecycle::Stop)
}

pub(super) fn vm_pause(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    lifecycle(ctx, args, Lifecycle::Pause)
}

pub(super) fn vm_resume(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    lifecycle(ctx, args, Lifecycle::Resume)
}

pub(super) fn vm_reset(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    lifecycle(ctx, args, Lifecycle::Reset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcpu::SegmentState;

    #[test]
    fn sizes_use_the_largest_exact_unit() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(4097), "4097 B");
        assert_eq!(size(16 << 10), "16 KiB");
        assert_eq!(size(512 << 20), "512 MiB");
        assert_eq!(size(3 << 30), "3 GiB");
        assert_eq!(size((1 << 30) + (1 << 20)), "1025 MiB");
        assert_eq!(size(1 << 40), "1 TiB");
        assert_eq!(size(u64::MAX), "18446744073709551615 B");
    }

    #[test]
    fn cpu_modes() {
        let mut s = SystemState::default();
        assert_eq!(cpu_mode(&s), "real");
        s.cr0 = 1;
        assert_eq!(cpu_mode(&s), "protected 16-bit");
        s.cs = SegmentState {
            attrib: 1 << 10,
            ..SegmentState::default()
        };
        assert_eq!(cpu_mode(&s), "protected 32-bit");
        s.cr0 |= 1 << 31;
        s.efer = 1 << 10;
        assert_eq!(cpu_mode(&s), "compatibility, paging");
        s.cs.attrib = 1 << 9;
        assert_eq!(cpu_mode(&s), "64-bit, paging");
    }
}
