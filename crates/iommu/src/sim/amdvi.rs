//! [`SimAmdVi`]: placeholder until the AMD-Vi driver lands.

/// A simulated AMD-Vi unit.
#[derive(Debug)]
pub struct SimAmdVi;
