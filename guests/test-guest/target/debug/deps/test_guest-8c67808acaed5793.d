/work/main/guests/test-guest/target/debug/deps/test_guest-8c67808acaed5793.d: src/main.rs src/acpi.rs src/boot.rs src/cpu.rs src/hypercall.rs src/ioapic.rs src/lapic.rs src/mem.rs src/msg.rs src/multiboot.rs src/paging.rs src/pci.rs src/serial.rs src/tests.rs src/tests/pci.rs src/trap.rs Cargo.toml

/work/main/guests/test-guest/target/debug/deps/libtest_guest-8c67808acaed5793.rmeta: src/main.rs src/acpi.rs src/boot.rs src/cpu.rs src/hypercall.rs src/ioapic.rs src/lapic.rs src/mem.rs src/msg.rs src/multiboot.rs src/paging.rs src/pci.rs src/serial.rs src/tests.rs src/tests/pci.rs src/trap.rs Cargo.toml

src/main.rs:
src/acpi.rs:
src/boot.rs:
src/cpu.rs:
src/hypercall.rs:
src/ioapic.rs:
src/lapic.rs:
src/mem.rs:
src/msg.rs:
src/multiboot.rs:
src/paging.rs:
src/pci.rs:
src/serial.rs:
src/tests.rs:
src/tests/pci.rs:
src/trap.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=
# env-dep:CLIPPY_CONF_DIR
