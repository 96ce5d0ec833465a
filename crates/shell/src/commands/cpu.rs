//! Commands that run an instruction on a chosen pCPU: CPUID, RDMSR, WRMSR. None of them runs
//! on a pCPU owned by a real-time VM (a cross-CPU request there would break its latency).

use alloc::format;

use super::{CmdError, Ctx, Outcome};
use crate::parse::{parse_u16, parse_u32, parse_u64, Args};

/// Refuses a pCPU the machine does not have or a real-time VM owns.
fn usable_pcpu(ctx: &Ctx<'_>, pcpu: u16) -> Result<(), CmdError> {
    let count = ctx.backend.pcpu_count();
    if pcpu >= count {
        return Err(CmdError::NoPcpu { pcpu, count });
    }
    if ctx.backend.pcpu_is_rt(pcpu) {
        return Err(CmdError::RtPcpu(pcpu));
    }
    Ok(())
}

pub(super) fn cpuid(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    let pcpu = parse_u16(args.required("<pcpu>")?)?;
    let leaf = parse_u32(args.required("<leaf>")?)?;
    let sub = args.optional().map(parse_u32).transpose()?.unwrap_or(0);
    args.finish()?;
    usable_pcpu(ctx, pcpu)?;
    let [a, b, c, d] = ctx.backend.cpuid(pcpu, leaf, sub)?;
    ctx.out.line(&format!(
        "pCPU {pcpu} CPUID {leaf:#x}.{sub:#x}: eax {a:#010x} ebx {b:#010x} ecx {c:#010x} edx {d:#010x}"
    ));
    Ok(Outcome::Done)
}

pub(super) fn rdmsr(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    let pcpu = parse_u16(args.required("<pcpu>")?)?;
    let msr = parse_u32(args.required("<msr>")?)?;
    args.finish()?;
    usable_pcpu(ctx, pcpu)?;
    let value = ctx.backend.rdmsr(pcpu, msr)?;
    ctx.out
        .line(&format!("pCPU {pcpu} MSR {msr:#x} = {value:#018x}"));
    Ok(Outcome::Done)
}

pub(super) fn wrmsr(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    let pcpu = parse_u16(args.required("<pcpu>")?)?;
    let msr = parse_u32(args.required("<msr>")?)?;
    let value = parse_u64(args.required("<value>")?)?;
    args.finish()?;
    usable_pcpu(ctx, pcpu)?;
    ctx.backend.wrmsr(pcpu, msr, value)?;
    ctx.out
        .line(&format!("pCPU {pcpu} MSR {msr:#x} <- {value:#018x}"));
    Ok(Outcome::Done)
}
