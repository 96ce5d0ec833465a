//! Fuzz target: arbitrary bytes as an IVRS table. The first byte chooses
//! whether the header's length and checksum are repaired (so the fuzzer
//! reaches the IVHD device entries); parsing must return a table or an
//! error, never panic, and the coverage queries on a parsed table must not
//! panic either.
#![no_main]

use iommu::ivrs::Ivrs;
use iommu::Bdf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut table = rest.to_vec();
    if mode & 1 != 0 && table.len() >= 36 {
        table[..4].copy_from_slice(b"IVRS");
        let len = u32::try_from(table.len()).unwrap_or(u32::MAX);
        table[4..8].copy_from_slice(&len.to_le_bytes());
        table[9] = 0;
        let sum = table.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        table[9] = 0u8.wrapping_sub(sum);
    }
    if let Ok(ivrs) = Ivrs::parse(&table) {
        for unit in ivrs.iommus() {
            let _ = unit.max_device_id();
            let probe = Bdf(u16::from(mode) * 257);
            let _ = unit.covers(probe);
            let _ = unit.requester_id(probe);
        }
        let _ = ivrs.iommu_for(0, Bdf(u16::from(mode)));
    }
});
