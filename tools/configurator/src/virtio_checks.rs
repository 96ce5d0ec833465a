//! Virtio devices (`[[vm.virtio]]`): each VM's list on its own, then across VMs (shared disks,
//! disks that are also kernels, MAC addresses, switch ports); and the scenario's switch list.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use scenario::{MAX_VIRTIO_DEVICES, VIRTIO_FIRST_SLOT};

use crate::error::{ConfigError, ErrorKind, VmRef};
use crate::input::{RawVirtio, RawVm};
use crate::model::{Virtio, VirtioDevice};
use crate::validate::Modules;
use crate::vm_checks::{check_module, unknown, Report};
use crate::words::{self, VirtioType};

/// Most switches a scenario may have: [`scenario::VirtioKind::Net::switch`] is a `u16`.
pub const MAX_SWITCHES: usize = 1 << 16;

/// The switches named by the VMs' net devices, in order of first appearance (VM file order, then
/// list order), at most `max` of them. Names that break the naming rule are left out (their
/// devices are reported by [`check_virtio`]).
pub fn collect_switches<'a>(vms: impl IntoIterator<Item = &'a RawVm>, max: usize) -> Vec<String> {
    let mut switches: Vec<String> = Vec::new();
    let named = vms
        .into_iter()
        .flat_map(|raw| &raw.virtio)
        .filter(|device| words::virtio_type(&device.kind) == Some(VirtioType::Net))
        .filter_map(|device| device.switch.as_deref())
        .filter(|name| crate::name::check_name(name).is_ok());
    for name in named {
        if switches.len() < max && !switches.iter().any(|s| s == name) {
            switches.push(name.to_owned());
        }
    }
    switches
}

/// Checks the `virtio` list of the VM `report` is about, whose id is `vm_id`, with `switches`
/// from [`collect_switches`]. Returns the devices that are valid (all of them when nothing was
/// reported).
pub fn check_virtio(
    report: &mut Report<'_>,
    raw: &RawVm,
    vm_id: u16,
    modules: Modules<'_>,
    switches: &[String],
) -> Vec<Virtio> {
    if raw.virtio.len() > MAX_VIRTIO_DEVICES {
        report.push(
            "virtio",
            ErrorKind::TooManyVirtio {
                count: raw.virtio.len(),
                max: MAX_VIRTIO_DEVICES,
            },
        );
    }
    let mut first_console = None;
    let mut first_rng = None;
    let mut net_ports: usize = 0;
    let mut out = Vec::new();
    for (index, device) in raw.virtio.iter().enumerate() {
        let field = |name: &str| format!("virtio[{index}].{name}");
        let Some(kind) = words::virtio_type(&device.kind) else {
            report.push(&field("type"), unknown(&device.kind, words::VIRTIO_TYPES));
            continue;
        };
        let mut ok = check_fields_for_type(report, index, device, kind);
        let resolved = match kind {
            VirtioType::Blk => match (&device.module, &device.file) {
                (None, None) => {
                    report.push(&field("module"), ErrorKind::DiskMissing);
                    None
                }
                // The file could not be used: `files::resolve` said why.
                (None, Some(_)) => None,
                // A file's generated module name: `files::resolve` checked the file.
                (Some(module), Some(_)) => Some(VirtioDevice::Blk {
                    module: module.clone(),
                    readonly: device.readonly.unwrap_or(false),
                }),
                (Some(module), None) => check_module(report, &field("module"), module, modules)
                    .then(|| VirtioDevice::Blk {
                        module: module.clone(),
                        readonly: device.readonly.unwrap_or(false),
                    }),
            },
            VirtioType::Net => {
                let port = net_ports;
                net_ports += 1;
                let switch = match &device.switch {
                    None => {
                        report.push(&field("switch"), ErrorKind::MissingField);
                        None
                    }
                    Some(name) => match crate::name::check_name(name) {
                        Err(kind) => {
                            report.push(&field("switch"), kind);
                            None
                        }
                        Ok(()) => {
                            let position = switches.iter().position(|s| s == name);
                            let index = position.and_then(|i| u16::try_from(i).ok());
                            if index.is_none() {
                                report.push(
                                    &field("switch"),
                                    ErrorKind::TooManySwitches {
                                        switch: name.clone(),
                                        max: MAX_SWITCHES,
                                    },
                                );
                            }
                            index
                        }
                    },
                };
                let mac = match &device.mac {
                    Some(text) => check_mac(text)
                        .map_err(|kind| report.push(&field("mac"), kind))
                        .ok(),
                    None => derived_mac(vm_id, port),
                };
                match (switch, mac) {
                    (Some(switch), Some(mac)) => Some(VirtioDevice::Net { switch, mac }),
                    _ => None,
                }
            }
            VirtioType::Console | VirtioType::Rng => {
                let first = if kind == VirtioType::Console {
                    &mut first_console
                } else {
                    &mut first_rng
                };
                match *first {
                    Some(first) => {
                        report.push(
                            &field("type"),
                            ErrorKind::SecondVirtioDevice {
                                kind: kind.name(),
                                first,
                            },
                        );
                        ok = false;
                    }
                    None => *first = Some(index),
                }
                Some(if kind == VirtioType::Console {
                    VirtioDevice::Console
                } else {
                    VirtioDevice::Rng
                })
            }
        };
        let slot = u8::try_from(index)
            .ok()
            .filter(|&i| usize::from(i) < MAX_VIRTIO_DEVICES)
            .map(|i| VIRTIO_FIRST_SLOT + i);
        if let (true, Some(kind), Some(slot)) = (ok, resolved, slot) {
            out.push(Virtio { kind, slot });
        }
    }
    out
}

/// Reports every field of `device` that its type does not have; returns whether there was none.
fn check_fields_for_type(
    report: &mut Report<'_>,
    index: usize,
    device: &RawVirtio,
    kind: VirtioType,
) -> bool {
    let present = [
        ("module", device.module.is_some(), VirtioType::Blk),
        ("file", device.file.is_some(), VirtioType::Blk),
        ("readonly", device.readonly.is_some(), VirtioType::Blk),
        ("switch", device.switch.is_some(), VirtioType::Net),
        ("mac", device.mac.is_some(), VirtioType::Net),
    ];
    let mut ok = true;
    for (name, _, _) in present
        .iter()
        .filter(|&&(_, given, owner)| given && owner != kind)
    {
        report.push(
            &format!("virtio[{index}].{name}"),
            ErrorKind::VirtioFieldNotForType {
                kind: kind.name(),
                fields: kind.fields(),
            },
        );
        ok = false;
    }
    ok
}

/// Parses `"xx:xx:xx:xx:xx:xx"` (hex digits in either case) and checks that it is an interface
/// address: unicast and not all zero.
pub fn check_mac(text: &str) -> Result<[u8; 6], ErrorKind> {
    let mac = parse_mac(text).ok_or_else(|| ErrorKind::MacSyntax(text.to_owned()))?;
    if mac[0] & 1 != 0 {
        Err(ErrorKind::MacMulticast(format_mac(mac)))
    } else if mac == [0; 6] {
        Err(ErrorKind::MacZero)
    } else {
        Ok(mac)
    }
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// `xx:xx:xx:xx:xx:xx`, lower case.
pub fn format_mac(mac: [u8; 6]) -> String {
    let mut out = String::new();
    for (i, byte) in mac.iter().enumerate() {
        let separator = if i == 0 { "" } else { ":" };
        let _ = write!(out, "{separator}{byte:02x}");
    }
    out
}

/// The MAC address of net device number `port` (counting only net devices) of VM `vm_id` when the
/// scenario gives none: `02:51:00:VV:VV:PP`, locally administered and unicast. `None` past 256
/// ports, which no valid VM has.
pub fn derived_mac(vm_id: u16, port: usize) -> Option<[u8; 6]> {
    let [high, low] = vm_id.to_be_bytes();
    let port = u8::try_from(port).ok()?;
    Some([0x02, 0x51, 0x00, high, low, port])
}

/// A device as far as the cross-VM checks need it, read leniently: values that are wrong on their
/// own are left out (the per-VM checks report them).
enum Seen<'a> {
    Blk {
        module: &'a str,
        readonly: bool,
        /// `module`, or `file` when the disk is a file.
        field: &'static str,
    },
    Net {
        switch: Option<&'a str>,
        /// The address and whether it was derived.
        mac: Option<([u8; 6], bool)>,
    },
}

fn seen<'a>(vm: &VmRef, raw: &'a RawVm) -> Vec<(usize, Seen<'a>)> {
    let vm_id = u16::try_from(vm.index).ok();
    let mut net_ports = 0;
    let mut out = Vec::new();
    for (index, device) in raw.virtio.iter().enumerate() {
        match words::virtio_type(&device.kind) {
            Some(VirtioType::Blk) => {
                if let Some(module) = device.module.as_deref().filter(|m| !m.is_empty()) {
                    let readonly = device.readonly.unwrap_or(false);
                    let field = if device.file.is_some() {
                        "file"
                    } else {
                        "module"
                    };
                    out.push((
                        index,
                        Seen::Blk {
                            module,
                            readonly,
                            field,
                        },
                    ));
                }
            }
            Some(VirtioType::Net) => {
                let port = net_ports;
                net_ports += 1;
                let switch = device
                    .switch
                    .as_deref()
                    .filter(|name| crate::name::check_name(name).is_ok());
                let mac = match &device.mac {
                    Some(text) => check_mac(text).ok().map(|mac| (mac, false)),
                    None => vm_id
                        .and_then(|id| derived_mac(id, port))
                        .map(|mac| (mac, true)),
                };
                out.push((index, Seen::Net { switch, mac }));
            }
            _ => {}
        }
    }
    out
}

/// The virtio checks between VMs (and between devices of one VM): a disk attached more than once
/// must be read-only everywhere and may not be a kernel or initrd; MAC addresses are unique; each
/// switch has at least two ports. A pair is reported on its later device, naming the earlier.
pub fn check_virtio_across(file: &Path, vms: &[(VmRef, &RawVm)], errors: &mut Vec<ConfigError>) {
    let booted: Vec<(&str, &VmRef, &'static str)> = vms
        .iter()
        .flat_map(|(vm, raw)| {
            let kernel_field = if raw.kernel.file.is_some() {
                "kernel.file"
            } else {
                "kernel.module"
            };
            let initrd_field = if raw.initrd_file.is_some() {
                "initrd_file"
            } else {
                "initrd"
            };
            std::iter::once((raw.kernel.module_name(), vm, kernel_field)).chain(
                raw.initrd
                    .as_deref()
                    .map(|initrd| (initrd, vm, initrd_field)),
            )
        })
        .collect();
    let mut disks: Vec<(&str, &VmRef, String, bool)> = Vec::new();
    let mut macs: BTreeMap<[u8; 6], (&VmRef, String, bool)> = BTreeMap::new();
    let mut ports: Vec<(&str, &VmRef, String)> = Vec::new();

    for (vm, raw) in vms {
        let mut report = Report {
            file,
            vm: vm.clone(),
            errors,
        };
        for (index, device) in seen(vm, raw) {
            match device {
                Seen::Blk {
                    module,
                    readonly,
                    field,
                } => {
                    let field = format!("virtio[{index}].{field}");
                    if let Some(&(_, user, boot_field)) =
                        booted.iter().find(|(name, _, _)| *name == module)
                    {
                        report.push(
                            &field,
                            ErrorKind::DiskIsBootModule {
                                module: module.to_owned(),
                                user: user.clone(),
                                field: boot_field,
                            },
                        );
                    }
                    let conflict = disks
                        .iter()
                        .find(|(name, _, _, other_ro)| *name == module && !(readonly && *other_ro));
                    if let Some((_, other, other_field, other_readonly)) = conflict {
                        report.push(
                            &field,
                            ErrorKind::DiskShared {
                                module: module.to_owned(),
                                readonly,
                                other: (*other).clone(),
                                other_field: other_field.clone(),
                                other_readonly: *other_readonly,
                            },
                        );
                    }
                    disks.push((module, vm, field, readonly));
                }
                Seen::Net { switch, mac } => {
                    if let Some(switch) = switch {
                        ports.push((switch, vm, format!("virtio[{index}].switch")));
                    }
                    let Some((mac, derived)) = mac else {
                        continue;
                    };
                    let field = format!("virtio[{index}].mac");
                    match macs.get(&mac) {
                        Some((other, other_field, other_derived)) => report.push(
                            &field,
                            ErrorKind::DuplicateMac {
                                mac: format_mac(mac),
                                derived,
                                other: (*other).clone(),
                                other_field: other_field.clone(),
                                other_derived: *other_derived,
                            },
                        ),
                        None => {
                            macs.insert(mac, (vm, field, derived));
                        }
                    }
                }
            }
        }
    }

    for (switch, vm, field) in &ports {
        if ports.iter().filter(|(other, _, _)| other == switch).count() == 1 {
            errors.push(ConfigError {
                file: file.to_owned(),
                vm: Some((*vm).clone()),
                field: field.clone(),
                kind: ErrorKind::SwitchOnePort {
                    switch: (*switch).to_owned(),
                },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_syntax() {
        assert_eq!(
            check_mac("02:aB:00:00:00:ff"),
            Ok([0x02, 0xAB, 0, 0, 0, 0xFF])
        );
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "02:00:00:00:00:0",
            "02:00:00:00:00:000",
            "02-00-00-00-00-01",
            "02:00:00:00:00:0g",
            "02:00:00:00:00:+1",
            "02:00:00:00:00:01:",
            " 02:00:00:00:00:01",
        ] {
            assert_eq!(
                check_mac(bad),
                Err(ErrorKind::MacSyntax(bad.to_owned())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn mac_must_be_unicast_and_not_zero() {
        assert_eq!(
            check_mac("03:00:00:00:00:01"),
            Err(ErrorKind::MacMulticast("03:00:00:00:00:01".into()))
        );
        assert_eq!(
            check_mac("FF:FF:FF:FF:FF:FF"),
            Err(ErrorKind::MacMulticast("ff:ff:ff:ff:ff:ff".into()))
        );
        assert_eq!(check_mac("00:00:00:00:00:00"), Err(ErrorKind::MacZero));
        assert!(check_mac("00:00:00:00:00:01").is_ok());
    }

    #[test]
    fn derived_macs() {
        assert_eq!(
            derived_mac(0x1234, 5),
            Some([0x02, 0x51, 0x00, 0x12, 0x34, 0x05])
        );
        assert_eq!(derived_mac(0, 255), Some([0x02, 0x51, 0, 0, 0, 0xFF]));
        assert_eq!(derived_mac(0, 256), None);
        assert_eq!(
            format_mac([0x02, 0x51, 0, 0x12, 0x34, 0xAB]),
            "02:51:00:12:34:ab"
        );
    }

    /// A `[[vm]]` table with these `(type, switch)` devices.
    fn vm(devices: &[(&str, &str)]) -> RawVm {
        let mut text = String::from(
            "name = \"a\"\nload_order = \"pre-launched\"\npcpus = [1]\nmemory_mib = 2\n\
             kernel = { module = \"k\", type = \"elf64\" }\n",
        );
        for (kind, switch) in devices {
            text += &format!("[[virtio]]\ntype = \"{kind}\"\nswitch = \"{switch}\"\n");
        }
        toml::from_str(&text).expect("test VM")
    }

    #[test]
    fn switches_in_order_of_first_appearance_up_to_the_limit() {
        let vms = [
            vm(&[("net", "b"), ("net", "a"), ("blk", "c"), ("net", "B!")]),
            vm(&[("net", "a"), ("net", "d"), ("net", "e")]),
        ];
        assert_eq!(collect_switches(&vms, MAX_SWITCHES), ["b", "a", "d", "e"]);
        assert_eq!(collect_switches(&vms, 3), ["b", "a", "d"]);
    }

    #[test]
    fn switch_past_the_limit() {
        let raw = vm(&[("net", "a"), ("net", "c")]);
        let mut errors = Vec::new();
        let mut report = Report {
            file: Path::new("configs/many.toml"),
            vm: VmRef {
                index: 3,
                name: Some("a".into()),
            },
            errors: &mut errors,
        };
        let switches = ["a".to_owned(), "b".to_owned()];
        let devices = check_virtio(&mut report, &raw, 3, Modules::Unchecked, &switches);
        assert_eq!(
            devices,
            [Virtio {
                kind: VirtioDevice::Net {
                    switch: 0,
                    mac: [0x02, 0x51, 0x00, 0x00, 0x03, 0x00]
                },
                slot: 8
            }]
        );
        assert_eq!(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["configs/many.toml: vm \"a\" (vm[3]): virtio[1].switch: switch \"c\" is one too many: a scenario has at most 65536 switches"]
        );
    }
}
