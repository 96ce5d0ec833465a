//! The configurator's error: where (file, VM, field) and what ([`ErrorKind`]), one line when displayed.

use std::fmt;
use std::path::PathBuf;

use crate::pci::Bdf;

/// One problem found in a scenario or board file.
///
/// `Display` renders the whole line, e.g.
/// `configs/bad.toml: vm "rt0" (vm[1]): pcpus: pCPU 2 is already owned by vm "lin" (vm[0])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in (the scenario, or the board file it names).
    pub file: PathBuf,
    /// The `[[vm]]` table concerned, if the problem is inside one.
    pub vm: Option<VmRef>,
    /// Dotted path of the field inside the VM (or the file, when `vm` is `None`), e.g. `pcpus`,
    /// `kernel.type`, `console.vuart`; empty when the problem is not about one field.
    pub field: String,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl ConfigError {
    /// The message without the location prefix (what [`ErrorKind`] displays).
    pub fn message(&self) -> String {
        self.kind.to_string()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(vm) = &self.vm {
            write!(f, "{vm}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for ConfigError {}

/// Which `[[vm]]` table: its index in file order and, when it has a usable one, its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRef {
    /// Position in the scenario file, from 0 (also the VM id once valid).
    pub index: usize,
    /// The `name` field, when it is a string.
    pub name: Option<String>,
}

impl fmt::Display for VmRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "vm {name:?} (vm[{}])", self.index),
            None => write!(f, "vm[{}]", self.index),
        }
    }
}

/// What is wrong. Messages name the offending value; the location is in [`ConfigError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// The file could not be read.
    #[error("cannot read file: {0}")]
    Read(String),
    /// The file is not valid TOML.
    #[error("TOML syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A key the format does not have (often a typo).
    #[error("unknown field at line {line}, column {column} (expected {expected})")]
    UnknownField {
        /// 1-based line of the key.
        line: usize,
        /// 1-based column of the key.
        column: usize,
        /// The keys allowed here.
        expected: String,
    },
    /// A required key is absent.
    #[error("missing required field")]
    MissingField,
    /// A value of the wrong TOML type or out of the range of its Rust type.
    #[error("{message} at line {line}, column {column}")]
    BadValue {
        /// 1-based line of the value.
        line: usize,
        /// 1-based column of the value.
        column: usize,
        /// The deserializer's message, e.g. `invalid type: string "32", expected u64`.
        message: String,
    },
    /// A string field whose value is not one of the allowed words.
    #[error("unknown value {value:?} (expected one of: {expected})")]
    UnknownValue {
        /// The value given.
        value: String,
        /// The allowed values, comma-separated.
        expected: &'static str,
    },
    /// The scenario has no `[[vm]]` table.
    #[error("the scenario defines no VMs (add at least one [[vm]] table)")]
    NoVms,
    /// A scenario, VM or board name breaks the naming rule.
    #[error("invalid name {name:?}: {reason} (allowed: 1 to 32 characters from [a-z0-9_-])")]
    InvalidName {
        /// The name given.
        name: String,
        /// Which part of the rule it breaks.
        reason: String,
    },
    /// Two VMs have the same name.
    #[error("name {name:?} is already used by {first}")]
    DuplicateName {
        /// The repeated name.
        name: String,
        /// The earlier VM with that name.
        first: VmRef,
    },
    /// The board named by the scenario has no board file.
    #[error("unknown board {board:?}: no file {path} (available boards: {available})")]
    UnknownBoard {
        /// The board name given.
        board: String,
        /// Where its file was looked for.
        path: PathBuf,
        /// The boards that do exist, comma-separated (or `none`).
        available: String,
    },
    /// A VM lists no pCPU.
    #[error("no pCPU given: a VM needs at least one")]
    EmptyPcpus,
    /// A pCPU index past the board's CPUs.
    #[error("pCPU {pcpu} does not exist on board {board:?}, which has {count} pCPUs (0..={last})", last = .count.saturating_sub(1))]
    PcpuOutOfRange {
        /// The index given.
        pcpu: u16,
        /// The board.
        board: String,
        /// How many pCPUs the board has.
        count: u16,
    },
    /// pCPU 0 given to a VM.
    #[error("pCPU 0 cannot be given to a VM: it is the hypervisor's management CPU (the BSP, which runs the boot, the shell and no vCPU)")]
    PcpuZero,
    /// A pCPU listed twice in one VM.
    #[error("pCPU {0} is listed more than once")]
    PcpuDuplicate(u16),
    /// A pCPU owned by two VMs.
    #[error("pCPU {pcpu} is already owned by {owner} (pCPUs are never shared)")]
    PcpuTaken {
        /// The contested pCPU.
        pcpu: u16,
        /// The VM that listed it first.
        owner: VmRef,
    },
    /// `memory_mib = 0`.
    #[error("0 MiB: a VM needs RAM")]
    MemoryZero,
    /// Memory size that is not a whole number of 2 MiB pages.
    #[error("{0} MiB is not a multiple of 2 MiB")]
    MemoryNotAligned(u64),
    /// The VMs plus the hypervisor's reserve need more RAM than the board has.
    #[error("VMs up to this one need {vms_mib} MiB + {hv_mib} MiB hypervisor reserve = {total_mib} MiB, more than the {board_mib} MiB of board {board:?}")]
    MemoryExceeded {
        /// RAM of the VMs so far (this one included).
        vms_mib: u64,
        /// The board's hypervisor reserve.
        hv_mib: u64,
        /// Their sum.
        total_mib: u64,
        /// The board's RAM.
        board_mib: u64,
        /// The board.
        board: String,
    },
    /// `host_base` not 2 MiB aligned.
    #[error("{0:#x} is not 2 MiB aligned")]
    HostBaseNotAligned(u64),
    /// The fixed range ends past the board's RAM.
    #[error("range {base:#x}..{end:#x} ends past the {board_mib} MiB ({board_end:#x}) of RAM on board {board:?}", board_end = .board_mib << 20)]
    HostBasePastMemory {
        /// Start of the range.
        base: u64,
        /// End of the range (exclusive).
        end: u64,
        /// The board's RAM.
        board_mib: u64,
        /// The board.
        board: String,
    },
    /// Two VMs' fixed ranges overlap.
    #[error("range {base:#x}..{end:#x} overlaps {other}'s range {other_base:#x}..{other_end:#x}")]
    HostBaseOverlap {
        /// Start of this VM's range.
        base: u64,
        /// End of this VM's range (exclusive).
        end: u64,
        /// The other VM.
        other: VmRef,
        /// Start of its range.
        other_base: u64,
        /// End of its range (exclusive).
        other_end: u64,
    },
    /// A raw kernel without `load_addr` or `entry`.
    #[error("required when the kernel type is \"raw\"")]
    RawNeedsAddress,
    /// `load_addr` or `entry` for a kernel that is not raw.
    #[error("only allowed when the kernel type is \"raw\" (this kernel is {kind:?}, which says where it loads)")]
    AddressNotRaw {
        /// The kernel type given.
        kind: String,
    },
    /// A raw kernel address outside guest RAM.
    #[error("{addr:#x} is outside the VM's {mib} MiB of RAM (0..{end:#x})", end = .mib << 20)]
    AddressOutsideRam {
        /// The address.
        addr: u64,
        /// The VM's RAM.
        mib: u64,
    },
    /// A kernel, initrd or Multiboot module that the build does not provide.
    #[error("module {module:?} is not built (known modules: {known})")]
    UnknownModule {
        /// The module name.
        module: String,
        /// The modules that exist, comma-separated (or `none`).
        known: String,
    },
    /// A module name that is empty.
    #[error("module name is empty")]
    EmptyModule,
    /// `initrd` for a kernel that is not Linux.
    #[error("only allowed when the kernel type is \"bzimage\" or \"pvh\" (this kernel is {kind:?}; a multiboot kernel lists its boot modules in `modules`)")]
    InitrdNotLinux {
        /// The kernel type given.
        kind: String,
    },
    /// `modules` for a kernel that is not Multiboot.
    #[error("only allowed when the kernel type is \"multiboot\" (this kernel is {kind:?}{hint})", hint = if .kind == "bzimage" || .kind == "pvh" { "; a Linux kernel takes an `initrd`" } else { "" })]
    ModulesNotMultiboot {
        /// The kernel type given.
        kind: String,
    },
    /// More boot modules than the loader takes.
    #[error("{count} boot modules, more than the {max} a VM may have")]
    TooManyModules {
        /// How many were listed.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A module string longer than the loader takes.
    #[error("module string of {len} bytes is longer than the {max} allowed")]
    ModuleCmdlineTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A command line with a NUL byte (the guest sees it as a C string).
    #[error("contains a NUL byte at offset {0}")]
    CmdlineNul(usize),
    /// A real-time VM that is not pre-launched.
    #[error("an rt VM must be pre-launched (rt with load_order {load_order:?} is not supported)")]
    RtNotPreLaunched {
        /// The load order given.
        load_order: &'static str,
    },
    /// More than one service VM.
    #[error("a scenario has at most one service VM, and {first} is already one")]
    SecondServiceVm {
        /// The first service VM.
        first: VmRef,
    },
    /// Post-launched VMs without a service VM to launch them.
    #[error("post-launched VMs are created by the service VM, and this scenario has none")]
    PostLaunchedWithoutService,
    /// A `virtio[i]` field that its device type does not have.
    #[error("not a field of a {kind:?} virtio device (fields: {fields})")]
    VirtioFieldNotForType {
        /// The device type.
        kind: &'static str,
        /// The fields that type has.
        fields: &'static str,
    },
    /// A second console or rng device in one VM.
    #[error("a VM has at most one {kind} device, and virtio[{first}] is already one")]
    SecondVirtioDevice {
        /// The device type.
        kind: &'static str,
        /// Index of the first one in the VM's `virtio` list.
        first: usize,
    },
    /// More virtio devices than a VM has slots for.
    #[error("{count} virtio devices, more than the {max} a VM may have (PCI slots {first_slot} to 31)", first_slot = scenario::VIRTIO_FIRST_SLOT)]
    TooManyVirtio {
        /// How many were listed.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A MAC address not written as six two-digit hex bytes separated by colons.
    #[error("invalid MAC address {0:?} (expected six two-digit hex bytes separated by ':', e.g. \"02:00:00:00:00:01\")")]
    MacSyntax(String),
    /// A multicast MAC address for an interface.
    #[error("MAC address {0} is multicast (bit 0 of the first byte is set): an interface needs a unicast address")]
    MacMulticast(String),
    /// The all-zero MAC address.
    #[error("MAC address 00:00:00:00:00:00 is not an interface address")]
    MacZero,
    /// A disk module attached more than once, writable at least once.
    #[error("disk module {module:?} is also attached to {other} at {other_field} ({there}, this one {here}): a disk used more than once must be read-only everywhere", here = access(*.readonly), there = access(*.other_readonly))]
    DiskShared {
        /// The module.
        module: String,
        /// Whether this attachment is read-only.
        readonly: bool,
        /// The VM of the earlier attachment (possibly this VM).
        other: VmRef,
        /// Its field, e.g. `virtio[0].module`.
        other_field: String,
        /// Whether the earlier attachment is read-only.
        other_readonly: bool,
    },
    /// A disk module that is also a kernel or an initrd.
    #[error("module {module:?} is also the {field} of {user}: a disk module cannot be a kernel or an initrd")]
    DiskIsBootModule {
        /// The module.
        module: String,
        /// The VM that boots it.
        user: VmRef,
        /// `kernel.module` or `initrd`.
        field: &'static str,
    },
    /// Two net devices with one MAC address.
    #[error("MAC address {mac}{here} is already used by {other} at {other_field}{there} (MAC addresses are unique in a scenario)", here = derived_note(*.derived), there = derived_note(*.other_derived))]
    DuplicateMac {
        /// The address, `xx:xx:xx:xx:xx:xx`.
        mac: String,
        /// Whether this device's address is derived (no `mac` given).
        derived: bool,
        /// The VM of the earlier device (possibly this VM).
        other: VmRef,
        /// Its field, e.g. `virtio[1].mac`.
        other_field: String,
        /// Whether the earlier device's address is derived.
        other_derived: bool,
    },
    /// A switch that only one net device names.
    #[error(
        "switch {switch:?} has no other port in the scenario: a switch needs at least two ports"
    )]
    SwitchOnePort {
        /// The switch.
        switch: String,
    },
    /// A switch past the most a scenario may have.
    #[error("switch {switch:?} is one too many: a scenario has at most {max} switches")]
    TooManySwitches {
        /// The switch.
        switch: String,
        /// The limit.
        max: usize,
    },
    /// Neither `kernel.module` nor `kernel.file`.
    #[error("missing: give kernel.module (a boot module the build makes) or kernel.file (a kernel file, relative to the scenario file)")]
    KernelMissing,
    /// A blk device with neither `module` nor `file`.
    #[error("missing: a blk device needs `module` (a boot module the build makes) or `file` (a disk image file, relative to the scenario file)")]
    DiskMissing,
    /// Two fields that say the same thing in two ways.
    #[error("cannot be given together with `{other}`: give one of them")]
    BothGiven {
        /// The other field.
        other: String,
    },
    /// `kernel.type` missing for a boot module (only a file's type is detected).
    #[error("missing: required with kernel.module (the type is detected only for a kernel.file)")]
    TypeRequired,
    /// A file named by the scenario that cannot be read.
    #[error("cannot read {path} ({written:?} relative to the scenario's directory): {reason}")]
    FileUnreadable {
        /// The resolved path.
        path: PathBuf,
        /// The path as written.
        written: String,
        /// The operating system's reason.
        reason: String,
    },
    /// A path that is a directory or another non-file.
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The resolved path.
        path: PathBuf,
    },
    /// A kernel file of no format Quercus loads or detects.
    #[error("{path} ({size} bytes) is not a kernel image Quercus recognizes: {found}; recognized are a Multiboot1 kernel (header magic 0x1BADB002 in the first 8 KiB), an x86-64 ELF64 executable (with a Xen PVH entry note: a PVH kernel), a Linux bzImage (\"HdrS\" at offset 0x202); a flat binary needs type = \"raw\" with load_addr and entry")]
    UnrecognizedImage {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// What the file looks like instead.
        found: String,
    },
    /// `kernel.type` given and the file is something else.
    #[error("{given:?} does not match {path}, which is {found}")]
    TypeMismatch {
        /// The type given.
        given: String,
        /// The file.
        path: PathBuf,
        /// What the file is.
        found: String,
    },
    /// A kernel or initrd file larger than the VM's RAM.
    #[error("{what} {path} is {size} bytes ({size_mib} MiB), larger than the VM's {ram_mib} MiB of RAM (memory_mib)", size_mib = mib_up(*.size))]
    ImageLargerThanRam {
        /// `kernel` or `initrd`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The VM's RAM.
        ram_mib: u64,
    },
    /// Kernel and initrd together larger than the VM's RAM.
    #[error("kernel ({kernel_size} bytes) and initrd {path} ({initrd_size} bytes) together are {total} bytes ({total_mib} MiB), more than the VM's {ram_mib} MiB of RAM (memory_mib)", total = .kernel_size + .initrd_size, total_mib = mib_up(.kernel_size + .initrd_size))]
    KernelAndInitrdLargerThanRam {
        /// The initrd file.
        path: PathBuf,
        /// The kernel's size in bytes.
        kernel_size: u64,
        /// The initrd's size in bytes.
        initrd_size: u64,
        /// The VM's RAM.
        ram_mib: u64,
    },
    /// The loader refuses the kernel file for this VM.
    #[error(
        "{path} does not load as a {kind:?} kernel into the VM's {ram_mib} MiB of RAM: {message}"
    )]
    ImageDoesNotLoad {
        /// The file.
        path: PathBuf,
        /// The kernel type.
        kind: &'static str,
        /// The VM's RAM.
        ram_mib: u64,
        /// The loader's reason.
        message: String,
    },
    /// A disk image file the virtio-blk device cannot serve.
    #[error("disk image {path} is {size} bytes: {problem}")]
    BadDiskImage {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// What is wrong with that size.
        problem: &'static str,
    },
    /// A disk image larger than the whole board (the hypervisor keeps disks in its memory).
    #[error("disk image {path} is {size} bytes ({size_mib} MiB), more than the {board_mib} MiB of RAM of board {board:?} (the hypervisor keeps each disk in memory)", size_mib = mib_up(*.size))]
    DiskLargerThanBoard {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The board's RAM.
        board_mib: u64,
        /// The board.
        board: String,
    },
    /// A `[[vm]]` entry that is not a table.
    #[error("expected a table ([[vm]]), found {0}")]
    VmNotTable(&'static str),
    /// A board file whose values contradict each other or the design.
    #[error("{0}")]
    BadBoard(String),
    /// Something wrong with a shared-memory region (`[[shm]]`).
    #[error(transparent)]
    Shm(#[from] crate::shm_checks::ShmError),
    /// Something wrong with a vUART link (`[[vuart_link]]`).
    #[error(transparent)]
    VuartLink(#[from] crate::vuart_checks::LinkError),
    /// A PCI address not written `"BB:DD.F"`.
    #[error("invalid PCI function {0:?} (expected bus:device.function in hex, e.g. \"00:1f.3\": two digits of bus, two of device (at most 1f), one of function (0-7))")]
    BdfSyntax(String),
    /// A `pci_devices` function that the board file does not list.
    #[error("function {bdf} is not on board {board:?} (its functions: {available})")]
    PciNotOnBoard {
        /// The function.
        bdf: Bdf,
        /// The board.
        board: String,
        /// The board's functions, comma-separated (or `none`).
        available: String,
    },
    /// A function listed twice in one VM.
    #[error("function {bdf} is listed more than once (first as pci_devices[{first}])")]
    PciListedTwice {
        /// The function.
        bdf: Bdf,
        /// Index of the first listing.
        first: usize,
    },
    /// Two VMs' functions drive the same I/O APIC input.
    #[error("function {bdf}'s INTx drives GSI {gsi}, as {other} of {owner} does (a level line shared by two VMs would let one hold the other's interrupts off): give one of them to the other VM, or leave INTx out of the board file (`gsi`) for one and let its guest use MSI")]
    PciGsiShared {
        /// The function.
        bdf: Bdf,
        /// The GSI both drive.
        gsi: u8,
        /// The other VM's function and that VM.
        other: Bdf,
        owner: VmRef,
    },
    /// A function owned by two VMs.
    #[error("function {bdf} is already owned by {owner} (a physical function belongs to one VM)")]
    PciTaken {
        /// The function.
        bdf: Bdf,
        /// The VM that listed it first.
        owner: VmRef,
    },
    /// The console UART's function.
    #[error("function {bdf} ({name}) is the console UART's device (`uart = true` in the board file): it stays with the hypervisor")]
    PciConsoleUart {
        /// The function.
        bdf: Bdf,
        /// Its board name.
        name: String,
    },
    /// A bridge, the IOMMU or another platform function.
    #[error("function {bdf} ({name}) is {what}: it cannot be given to a VM")]
    PciNotAssignable {
        /// The function.
        bdf: Bdf,
        /// Its board name.
        name: String,
        /// What it is.
        what: &'static str,
    },
    /// A function behind an aliasing bridge whose siblings do not all go to the same VM.
    #[error("function {bdf} sits behind bridge {bridge}, which may alias its requester ID with {other}'s, and {other} {where_}: every function behind {bridge} must go to the same VM (pass them whole)", where_ = match .other_owner { Some(owner) => format!("is owned by {owner}"), None => "is not given to this VM".to_owned() })]
    PciNotWhole {
        /// The function.
        bdf: Bdf,
        /// The bridge.
        bridge: Bdf,
        /// A function behind the same bridge that goes elsewhere.
        other: Bdf,
        /// Its owner, when another VM owns it.
        other_owner: Option<VmRef>,
    },
    /// A non-zero function without function 0 of its device at the same guest slot.
    #[error("function {bdf} needs function {function0} of the same device in this VM at the same guest slot {slot} (guests look for functions 1-7 only where function 0 exists){note}", note = if *.elsewhere { format!("; {function0} is at another slot") } else { String::new() })]
    PciNoFunctionZero {
        /// The function.
        bdf: Bdf,
        /// Function 0 of its device.
        function0: Bdf,
        /// The guest slot the function is given.
        slot: u64,
        /// Whether function 0 is in the VM but at another guest slot.
        elsewhere: bool,
    },
    /// A guest slot that something else always has, or past the bus.
    #[error("guest slot {slot} {reason}; choose another with {{ bdf = \"{bdf}\", slot = N }}")]
    GuestSlotReserved {
        /// The slot.
        slot: u64,
        /// The passed-through function.
        bdf: Bdf,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A guest slot that a virtio device of the VM takes.
    #[error("guest slot {slot} is taken by virtio[{virtio}] (virtio devices take slots {first} and on, in list order); choose another with {{ bdf = \"{bdf}\", slot = N }}", first = scenario::VIRTIO_FIRST_SLOT)]
    GuestSlotVirtio {
        /// The slot.
        slot: u64,
        /// Index of the virtio device.
        virtio: usize,
        /// The passed-through function.
        bdf: Bdf,
    },
    /// Two functions at one guest slot and function.
    #[error(
        "guest slot {slot} function {function} is already pci_devices[{other}]'s ({other_bdf})"
    )]
    GuestSlotTaken {
        /// The slot.
        slot: u64,
        /// The function number (the host's).
        function: u8,
        /// Index of the other entry.
        other: usize,
        /// Its host function.
        other_bdf: Bdf,
    },
    /// More functions than a VM may own.
    #[error("{count} functions, more than the {max} a VM may own")]
    TooManyPassthrough {
        /// How many were listed.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Passthrough in a VM that is not pre-launched.
    #[error("not yet: only pre-launched VMs may own PCI functions (this VM is {load_order:?})")]
    PassthroughNotPreLaunched {
        /// The load order given.
        load_order: &'static str,
    },
    /// Passthrough on a board without an IOMMU, with DMA isolation required.
    #[error("board {board:?} has no IOMMU (iommu = \"none\"), so nothing can keep these functions' DMA inside this VM; if that is acceptable, add `dma_isolation = \"off\"` at the top of the scenario: the devices can then read and write all of the machine's memory (other VMs' and the hypervisor's included), and the console says so at every boot")]
    PassthroughWithoutIommu {
        /// The board.
        board: String,
    },
    /// A VM asks for cache allocation on a board without it.
    #[error("board {board:?} has no L3 cache allocation (CAT): {why}; remove `cache_mask`, or describe a board whose `[cache]` table says `cat = true`")]
    NoCat {
        /// The board.
        board: String,
        /// What its file says.
        why: &'static str,
    },
    /// A way mask the board's L3 cannot take.
    #[error("{0}")]
    CacheMask(String),
    /// Not one mask per vCPU.
    #[error(
        "{count} way masks for {vcpus} vCPU(s): give one mask for the whole VM or one per vCPU"
    )]
    CacheMaskCount {
        /// Masks given.
        count: usize,
        /// The VM's vCPUs.
        vcpus: usize,
    },
    /// More distinct masks than the board has classes of service.
    #[error("the VMs' way masks need {need} classes of service besides CLOS 0, and the board has {have} in all (`[cache] clos`)")]
    TooManyClos {
        /// CLOS the masks need (CLOS 0 not counted).
        need: u16,
        /// CLOS the board has (CLOS 0 counted).
        have: u16,
    },
    /// (Warning) Two VMs' masks share ways.
    #[error("way mask {mask:#x} overlaps vm {other:?}'s {other_mask:#x} (ways {common:#x}): the two VMs evict each other's lines there")]
    CacheOverlap {
        /// This VM's mask.
        mask: u64,
        /// The other VM.
        other: String,
        /// Its mask.
        other_mask: u64,
        /// The ways both name.
        common: u64,
    },
    /// (Warning) No way left for CLOS 0.
    #[error("the VMs' way masks take all {ways} ways: the hypervisor and the VMs without a mask (CLOS 0) keep every way, overlapping each masked VM")]
    CacheAllTaken {
        /// The board's ways.
        ways: u8,
    },
    /// A VM driving PCI functions without DMA isolation gives no `host_base`.
    #[error("this VM owns PCI functions with DMA isolation off: the devices DMA to the guest's physical addresses as if they were host ones, so its RAM must sit at the same host addresses (guest-physical = host-physical above 1 MiB); give `host_base`, a 2 MiB-aligned host address with {memory_mib} MiB of free RAM above it, ending below 3 GiB")]
    HostAddressesNeedHostBase {
        /// The VM's RAM.
        memory_mib: u64,
    },
    /// Such a VM's RAM cannot be identity-mapped where it was placed.
    #[error("RAM at host {base:#x}..{end:#x} cannot be guest RAM at the same addresses (this VM owns PCI functions with DMA isolation off): it must start at 2 MiB or above and end below the guest's PCI hole at 3 GiB (0xc0000000)")]
    HostAddressesOutOfRange {
        /// The host base.
        base: u64,
        /// One past its last byte.
        end: u64,
    },
    /// Such a VM's kernel cannot be placed in RAM that starts above 1 MiB at its host address.
    #[error("a {kind} kernel cannot boot in RAM at its host addresses (this VM owns PCI functions with DMA isolation off, so guest RAM above 1 MiB starts at host_base + 1 MiB): only a relocatable Linux bzImage can")]
    HostAddressesNeedBzImage {
        /// The kernel type given.
        kind: String,
    },
    /// (Warning) DMA isolation off on a board that has an IOMMU.
    #[error("DMA isolation is off although board {board:?} has an IOMMU ({iommu}): passed-through devices can read and write all of memory; remove `dma_isolation = \"off\"` to use the IOMMU")]
    DmaIsolationOffWithIommu {
        /// The board.
        board: String,
        /// Its IOMMU, `intel` or `amd`.
        iommu: &'static str,
    },
}

fn access(readonly: bool) -> &'static str {
    if readonly {
        "read-only"
    } else {
        "writable"
    }
}

fn derived_note(derived: bool) -> &'static str {
    if derived {
        " (derived from the VM id and port: no mac given)"
    } else {
        ""
    }
}

/// `bytes` in MiB, rounded up.
fn mib_up(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}
