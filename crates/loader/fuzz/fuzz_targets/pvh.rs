//! Fuzz target: arbitrary `vmlinux` images through the PVH loader, with and
//! without an initrd and ACPI tables; a failed load must leave RAM untouched.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loader::{load_pvh, ReservedKind, ReservedRange, VmLayout, PVH_START_INFO_GPA};
use vcpu::CountingMemory;

const RAM: u64 = 8 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, image)) = data.split_first() else {
        return;
    };
    let acpi = [ReservedRange {
        start: 0xE_0000,
        len: 0x1_0000,
        kind: ReservedKind::AcpiReclaimable,
    }];
    let layout = VmLayout {
        ram: vcpu::RamLayout::new(RAM),
        reserved: if sel & 1 != 0 { &acpi } else { &[] },
        acpi_rsdp: (sel & 2 != 0).then_some(0xE_0000),
    };
    let initrd = [0xA5u8; 0x1000];
    let initrd = (sel & 4 != 0).then_some(&initrd[..]);
    // One RAM for every input: zeroing 8 MiB per input held the target to ~100 inputs/s. A load
    // that wrote anything is followed by a zeroing, so each input starts from zeroed RAM.
    MEM.with(|mem| {
        let mut mem = mem.borrow_mut();
        mem.writes = 0;
        check(image, initrd, &layout, &mut mem);
        if mem.writes != 0 {
            mem.mem.0.fill(0);
        }
    });
});

thread_local! {
    static MEM: std::cell::RefCell<CountingMemory> =
        std::cell::RefCell::new(CountingMemory::new(RAM as usize, 0));
}

fn check(image: &[u8], initrd: Option<&[u8]>, layout: &VmLayout<'_>, mem: &mut CountingMemory) {
    match load_pvh(image, "console=ttyS0", initrd, layout, mem) {
        Ok(boot) => {
            assert!(boot.entry < 1 << 32 && boot.entry < RAM);
            assert_eq!(boot.start_info, PVH_START_INFO_GPA);
            assert_eq!(boot.initrd.is_some(), initrd.is_some());
            if let Some(at) = boot.initrd {
                assert!(at.gpa >= 1 << 20 && at.gpa + at.len <= RAM);
            }
            let state = boot.entry_state();
            assert_eq!((state.rip, state.gprs.rbx), (boot.entry, boot.start_info));
        }
        Err(_) => assert_eq!(mem.writes, 0, "RAM written by a failed load"),
    }
}
