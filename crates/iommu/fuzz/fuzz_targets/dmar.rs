//! Fuzz target: arbitrary bytes as a DMAR table. The first byte chooses
//! whether the header's length and checksum are repaired (so the fuzzer
//! reaches the remapping structures); parsing must return a table or an
//! error, never panic, and every scope lookup on a parsed table must too.
#![no_main]

use iommu::dmar::Dmar;
use iommu::Bdf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut table = rest.to_vec();
    if mode & 1 != 0 && table.len() >= 36 {
        table[..4].copy_from_slice(b"DMAR");
        let len = u32::try_from(table.len()).unwrap_or(u32::MAX);
        table[4..8].copy_from_slice(&len.to_le_bytes());
        table[9] = 0;
        let sum = table.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        table[9] = 0u8.wrapping_sub(sum);
    }
    if let Ok(dmar) = Dmar::parse(&table) {
        for unit in &dmar.units {
            for scope in &unit.scopes {
                let _ = scope.bdf(|b| Some(b.bus().wrapping_add(1)));
            }
        }
        let _ = dmar.unit_for(0, Bdf(u16::from(mode) << 8), |b| {
            Some((b.bus(), b.bus().wrapping_add(mode)))
        });
    }
});
