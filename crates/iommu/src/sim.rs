//! Simulated units (placeholder while the parsers land).
