//! Memory dumps: guest memory by guest-physical address, host memory by host-physical address.

use alloc::vec;

use paging::GuestPhysAddr;
use platform::HostPhysAddr;

use super::{vm::lookup, CmdError, Ctx, Outcome, DEFAULT_DUMP_LEN, MAX_DUMP_LEN};
use crate::hexdump::hexdump;
use crate::parse::{parse_range, Args};

pub(super) fn dump_guest_mem(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    let vm_text = args.required("<vm>")?;
    let addr = args.required("<gpa>")?;
    let span = parse_range(addr, args.optional(), DEFAULT_DUMP_LEN, MAX_DUMP_LEN)?;
    args.finish()?;
    let vm = lookup(ctx, vm_text)?;
    let mut buf = vec![0u8; span.len];
    ctx.backend
        .read_guest(vm.id, GuestPhysAddr(span.start), &mut buf)?;
    hexdump(ctx.out, span.start, &buf);
    Ok(Outcome::Done)
}

pub(super) fn dump_host_mem(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> Result<Outcome, CmdError> {
    let addr = args.required("<hpa>")?;
    let span = parse_range(addr, args.optional(), DEFAULT_DUMP_LEN, MAX_DUMP_LEN)?;
    args.finish()?;
    let mut buf = vec![0u8; span.len];
    ctx.backend.read_host(HostPhysAddr(span.start), &mut buf)?;
    hexdump(ctx.out, span.start, &buf);
    Ok(Outcome::Done)
}
