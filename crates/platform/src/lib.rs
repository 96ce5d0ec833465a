//! What the machine gave Quercus at boot, as checked, safe data.
#![no_std]
#![forbid(unsafe_code)]
