//! Shared-memory regions between VMs (inter-VM communication): memory the hypervisor reserves at
//! boot and maps into exactly the VMs listed, each of which sees it as the BAR 2 of an ivshmem
//! PCI device (1af4:1110) whose doorbell register interrupts the other VMs of the region.

/// One VM's view of a shared region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmPeer {
    /// The VM's id.
    pub vm: u16,
    /// The VM may read the region but not write it (its writes are dropped and counted).
    pub readonly: bool,
    /// PCI device number of the VM's ivshmem device on its bus 0 (function 0); never 0, never 3
    /// with the test device, never a slot another device of the VM takes.
    pub slot: u8,
    /// Where firmware places BAR 2 (the region) in the VM's PCI memory window: aligned to the
    /// region's size. The guest may move it; the mapping follows.
    pub bar2: u64,
}

/// A shared-memory region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmConfig {
    /// `[a-z0-9_-]`, at most 32 characters, unique among the regions.
    pub name: &'static str,
    /// Bytes: a power of two from [`SHM_MIN_SIZE`] to [`SHM_MAX_SIZE`].
    pub size: u64,
    /// The VMs that map it, at least two, each once; a VM's index here is its peer id (the IV
    /// position register it reads and the id other peers ring it by).
    pub peers: &'static [ShmPeer],
}

impl ShmConfig {
    /// The peer entry of VM `vm`, with its peer id, if the VM maps the region.
    pub fn peer_of(&self, vm: u16) -> Option<(u16, &'static ShmPeer)> {
        let peers: &'static [ShmPeer] = self.peers;
        peers
            .iter()
            .enumerate()
            .find(|(_, p)| p.vm == vm)
            .and_then(|(i, p)| Some((u16::try_from(i).ok()?, p)))
    }
}

/// Smallest region (one page).
pub const SHM_MIN_SIZE: u64 = 4096;
/// Largest region: 256 MiB, what the top of the VM's 32-bit PCI memory window holds.
pub const SHM_MAX_SIZE: u64 = 256 << 20;
/// Where BAR 2 placements start in each VM (the upper half of the PCI memory window); a VM's
/// regions together take at most [`SHM_MAX_SIZE`] from here.
pub const SHM_BAR2_BASE: u64 = 0xD000_0000;
/// The slot the ivshmem device of a VM's first region takes by default; its next regions take the
/// slots below (30, 29, ...).
pub const SHM_FIRST_SLOT: u8 = 31;
/// Most regions one VM may map.
pub const MAX_SHM_PER_VM: usize = 8;
/// Most VMs one region may have (peer ids 0..=15).
pub const MAX_SHM_PEERS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    static R: ShmConfig = ShmConfig {
        name: "r",
        size: 4096,
        peers: &[
            ShmPeer {
                vm: 2,
                readonly: false,
                slot: 31,
                bar2: SHM_BAR2_BASE,
            },
            ShmPeer {
                vm: 0,
                readonly: true,
                slot: 31,
                bar2: SHM_BAR2_BASE,
            },
        ],
    };

    #[test]
    fn peer_ids_are_list_positions() {
        assert_eq!(
            R.peer_of(0).map(|(id, p)| (id, p.readonly)),
            Some((1, true))
        );
        assert_eq!(R.peer_of(2).map(|(id, _)| id), Some(0));
        assert!(R.peer_of(1).is_none());
    }
}
