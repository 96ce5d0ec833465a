//! VMs as data: a VM's lifecycle state machine, the VM table keyed by id, the VM object (RAM,
//! devices, console queues, vCPU slots) and the per-vCPU run loop, all host-tested.
//!
//! The hypervisor's arch tier supplies what only it can do through [`Platform`] (making a VMX or
//! SVM vCPU, the clock, host timers and IPIs, sleeping a pCPU); everything above it lives here.
//! A VM is always named by its [`VmId`], the scenario's id, never by a position in a list.
//!
//! Concurrency: the vCPUs of a VM run on their own pCPUs and pCPU 0 runs the operator's shell.
//! They share a VM through an `Arc` taken from the [`VmTable`] once; its lifecycle is one atomic
//! word changed only by the pure transitions of [`Lifecycle`].
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod console;
mod host;
pub mod io;
mod lifecycle;
mod manager;
mod platform;
mod platform_cell;
mod run;
pub mod shell;
pub mod shm;
mod table;
mod timer_advance;
pub mod uart_link;
mod vm;

#[cfg(test)]
mod mock;
#[cfg(test)]
mod rt_tests;

pub use console::{ConsoleQueues, LINE_MAX, OUT_QUEUE_MAX, TYPED_MAX};
pub use lifecycle::{
    AtomicLifecycle, AtomicVcpuRun, GuestReset, Left, Lifecycle, LifecycleError, Op, Request,
    ResetPlan, StopKind, VcpuEvent, VcpuRun, VcpuStep, VmState,
};
pub use manager::{ControlError, Vmm, OPERATOR_WAIT_US};
pub use platform::{Platform, SlatEditor, VcpuSpec, WithVcpu};
pub use scenario::VmId;
pub use table::{TableEntry, TableError, VmTable};
pub use vm::{initial_state, new_platform, Entry, GuestImage, ImageKind, VcpuSlot, Vm};
