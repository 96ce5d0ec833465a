//! The VM table: every VM the hypervisor has, keyed by its [`VmId`], growing and shrinking at run
//! time (post-launched VMs come and go). Ids need not be dense: a scenario VM that was not
//! started leaves a hole, and nothing ever looks a VM up by its position.
//!
//! Entries are `Arc`s behind a read-mostly lock held only to find or copy them: a reader clones
//! the `Arc` and lets go, so a vCPU's run loop, which keeps its own `Arc`, never touches the
//! table, and no lookup ever waits for a VM.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use scenario::VmId;
use spin::RwLock;

/// What the table needs to know of what it holds.
pub trait TableEntry {
    fn id(&self) -> VmId;
    fn name(&self) -> &str;
}

/// Why the table refused a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    /// A VM with this id is already in the table.
    DuplicateId(VmId),
    /// A VM with this name is already in the table (under `id`).
    DuplicateName {
        name: alloc::string::String,
        id: VmId,
    },
    /// No VM with this id.
    NoSuchVm(VmId),
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::DuplicateId(id) => write!(f, "a VM with id {id} already exists"),
            TableError::DuplicateName { name, id } => {
                write!(f, "a VM named {name:?} already exists (id {id})")
            }
            TableError::NoSuchVm(id) => write!(f, "no VM with id {id}"),
        }
    }
}

/// VMs by id, in id order.
pub struct VmTable<V> {
    /// Sorted by id, ids unique.
    vms: RwLock<Vec<Arc<V>>>,
}

impl<V> Default for VmTable<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> VmTable<V> {
    /// An empty table.
    pub const fn new() -> Self {
        VmTable {
            vms: RwLock::new(Vec::new()),
        }
    }
}

impl<V: TableEntry> VmTable<V> {
    /// Adds a VM; its id and name must be new.
    pub fn insert(&self, vm: Arc<V>) -> Result<(), TableError> {
        let mut vms = self.vms.write();
        if let Some(other) = vms.iter().find(|o| o.name() == vm.name()) {
            return Err(if other.id() == vm.id() {
                TableError::DuplicateId(vm.id())
            } else {
                TableError::DuplicateName {
                    name: vm.name().into(),
                    id: other.id(),
                }
            });
        }
        match vms.binary_search_by_key(&vm.id(), |o| o.id()) {
            Ok(_) => Err(TableError::DuplicateId(vm.id())),
            Err(at) => {
                vms.insert(at, vm);
                Ok(())
            }
        }
    }

    /// Takes the VM with this id out of the table; whoever still holds it keeps it alive.
    pub fn remove(&self, id: VmId) -> Result<Arc<V>, TableError> {
        let mut vms = self.vms.write();
        let at = vms
            .binary_search_by_key(&id, |o| o.id())
            .map_err(|_| TableError::NoSuchVm(id))?;
        Ok(vms.remove(at))
    }

    /// The VM with this id.
    pub fn get(&self, id: VmId) -> Option<Arc<V>> {
        let vms = self.vms.read();
        vms.binary_search_by_key(&id, |o| o.id())
            .ok()
            .and_then(|at| vms.get(at).cloned())
    }

    /// The VM with this name.
    pub fn by_name(&self, name: &str) -> Option<Arc<V>> {
        self.vms.read().iter().find(|v| v.name() == name).cloned()
    }

    /// Every VM now, in id order (a copy: the table may change while the caller walks it).
    pub fn snapshot(&self) -> Vec<Arc<V>> {
        self.vms.read().clone()
    }

    /// The ids now, in order.
    pub fn ids(&self) -> Vec<VmId> {
        self.vms.read().iter().map(|v| v.id()).collect()
    }

    /// How many VMs there are.
    pub fn len(&self) -> usize {
        self.vms.read().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.vms.read().is_empty()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use alloc::string::{String, ToString};
    use std::thread;

    use super::*;

    #[derive(Debug, PartialEq)]
    struct Entry {
        id: VmId,
        name: String,
    }

    impl TableEntry for Entry {
        fn id(&self) -> VmId {
            self.id
        }
        fn name(&self) -> &str {
            &self.name
        }
    }

    fn vm(id: u16, name: &str) -> Arc<Entry> {
        Arc::new(Entry {
            id: VmId(id),
            name: name.into(),
        })
    }

    #[test]
    fn insert_lookup_remove() {
        let t = VmTable::new();
        assert!(t.is_empty());
        t.insert(vm(2, "c")).unwrap();
        t.insert(vm(0, "a")).unwrap();
        t.insert(vm(1, "b")).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.ids(),
            [VmId(0), VmId(1), VmId(2)],
            "id order, not insertion order"
        );
        assert_eq!(t.get(VmId(1)).unwrap().name, "b");
        let gone = t.remove(VmId(1)).unwrap();
        assert_eq!(gone.name, "b");
        assert!(t.get(VmId(1)).is_none(), "a removed id is no longer found");
        assert!(t.by_name("b").is_none());
        assert_eq!(t.remove(VmId(1)), Err(TableError::NoSuchVm(VmId(1))));
        assert_eq!(t.ids(), [VmId(0), VmId(2)]);
        // The id can be used again.
        t.insert(vm(1, "b2")).unwrap();
        assert_eq!(t.get(VmId(1)).unwrap().name, "b2");
    }

    #[test]
    fn ids_need_not_be_dense() {
        // Scenario VMs 0 and 2 were not started: 1 and 3 keep their ids.
        let t = VmTable::new();
        t.insert(vm(3, "d")).unwrap();
        t.insert(vm(1, "b")).unwrap();
        assert!(t.get(VmId(0)).is_none());
        assert!(t.get(VmId(2)).is_none());
        assert_eq!(t.get(VmId(1)).unwrap().name, "b");
        assert_eq!(t.get(VmId(3)).unwrap().name, "d");
        let names: Vec<String> = t.snapshot().iter().map(|v| v.name.clone()).collect();
        assert_eq!(names, ["b", "d"]);
        // The first entry is id 1, not "VM 0", and the second is id 3, not "VM 1".
        assert!(t.get(VmId(u16::MAX)).is_none());
    }

    #[test]
    fn name_lookup() {
        let t = VmTable::new();
        t.insert(vm(1, "linux")).unwrap();
        t.insert(vm(3, "rtvm")).unwrap();
        assert_eq!(t.by_name("rtvm").unwrap().id, VmId(3));
        assert_eq!(t.by_name("linux").unwrap().id, VmId(1));
        assert!(t.by_name("vm0").is_none());
        assert!(t.by_name("").is_none());
    }

    #[test]
    fn duplicates_are_refused_naming_the_value() {
        let t = VmTable::new();
        t.insert(vm(1, "a")).unwrap();
        assert_eq!(t.insert(vm(1, "b")), Err(TableError::DuplicateId(VmId(1))));
        assert_eq!(t.insert(vm(1, "a")), Err(TableError::DuplicateId(VmId(1))));
        assert_eq!(
            t.insert(vm(2, "a")),
            Err(TableError::DuplicateName {
                name: "a".into(),
                id: VmId(1)
            })
        );
        assert_eq!(t.len(), 1);
        assert_eq!(
            TableError::DuplicateName {
                name: "a".into(),
                id: VmId(1)
            }
            .to_string(),
            "a VM named \"a\" already exists (id 1)"
        );
        assert_eq!(TableError::NoSuchVm(VmId(4)).to_string(), "no VM with id 4");
    }

    #[test]
    fn a_removed_vm_lives_on_for_its_holders() {
        let t = VmTable::new();
        t.insert(vm(5, "e")).unwrap();
        let held = t.get(VmId(5)).unwrap();
        t.remove(VmId(5)).unwrap();
        assert_eq!(held.name, "e");
        assert_eq!(Arc::strong_count(&held), 1);
    }

    #[test]
    fn readers_and_writers_on_several_cpus() {
        let t = Arc::new(VmTable::new());
        t.insert(vm(0, "stays")).unwrap();
        let writers: Vec<_> = (1..4u16)
            .map(|w| {
                let t = Arc::clone(&t);
                thread::spawn(move || {
                    for round in 0..200u16 {
                        let id = w * 1000 + round;
                        t.insert(vm(id, &std::format!("vm{id}"))).unwrap();
                        assert_eq!(t.get(VmId(id)).unwrap().id, VmId(id));
                        t.remove(VmId(id)).unwrap();
                    }
                })
            })
            .collect();
        let reader = {
            let t = Arc::clone(&t);
            thread::spawn(move || {
                for _ in 0..2000 {
                    assert_eq!(t.get(VmId(0)).unwrap().name, "stays");
                    let ids = t.ids();
                    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
                }
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        reader.join().unwrap();
        assert_eq!(t.ids(), [VmId(0)]);
    }
}
