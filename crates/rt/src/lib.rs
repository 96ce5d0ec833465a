//! Real-time VM policy without arch code, so that every rule is tested on the host:
//! - [`lapic_mode`]: whether an `rt` VM's local APIC can be the physical one, decided once at
//!   boot from what the CPU has, and why not when it cannot;
//! - [`cat`]: cache allocation (Intel CAT, AMD L3 QoS): way masks checked against the L3
//!   cache, CPUID leaf 0x10 (AMD: 0x8000_0020) decoded, and the class-of-service MSRs
//!   programmed through a small [`cat::MsrWriter`] trait that `crates/arch-x86` implements with
//!   real `WRMSR`s.

#![no_std]
#![forbid(unsafe_code)]

pub mod cat;
pub mod lapic_mode;
