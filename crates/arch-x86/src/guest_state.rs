//! The architectural state a vCPU starts in, common to both backends.

pub use vcpu::InitialState;
