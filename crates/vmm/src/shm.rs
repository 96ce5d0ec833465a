//! The scenario's shared-memory regions in the running machine: each [`SharedRegion`] (memory the
//! hypervisor reserved at boot, its doorbells) lives in the [`IoHub`](crate::io::IoHub) every VM
//! holds, and each VM that maps a region gets an ivshmem device for it at every load
//! ([`attach_shm`]). A doorbell crosses VMs as a switch frame does: the ringing VM's device sets
//! the target's pending bit and the target's [`VmWaker`] marks the target VM's backend news and
//! kicks its vCPU 0's pCPU, which raises the interrupt in its own platform before its next guest
//! entry. No VM ever touches another VM's platform.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;

use ivshmem::{Ivshmem, Region};
use scenario::{ShmConfig, VmConfig};

use crate::io::{VmIo, VmWaker};

impl ivshmem::Waker for VmWaker {
    fn wake(&self) {
        virtio::switch::PortWaker::wake(self);
    }
}

/// One region of the scenario, as the machine holds it.
#[derive(Clone)]
pub struct SharedRegion {
    pub cfg: &'static ShmConfig,
    pub region: Arc<Region>,
}

/// Plugs an ivshmem device into `platform` for each region VM `cfg` maps.
pub fn attach_shm(cfg: &VmConfig, io: &VmIo, platform: &mut vm::PcPlatform) -> Result<(), String> {
    for shared in &io.hub.shm {
        let Some((peer, place)) = shared.cfg.peer_of(cfg.id) else {
            continue;
        };
        let waker = VmWaker {
            news: io.news.clone(),
            pcpu: cfg.pcpus.first().copied().unwrap_or(0),
            kick: io.hub.kick,
        };
        let port = shared
            .region
            .attach(peer, Box::new(waker))
            .ok_or_else(|| format!("shm {}: no peer {peer}", shared.cfg.name))?;
        let (bar0, bar1) = vm::pc::layout::device_bars(place.slot);
        let dev = Ivshmem::new(port, place.readonly, bar0, bar1, place.bar2);
        platform
            .add_pci_device(place.slot, Box::new(dev))
            .map_err(|e| format!("shm {}: {e}", shared.cfg.name))?;
    }
    Ok(())
}

/// The shell's view of `shared`.
pub fn region_line(shared: &SharedRegion) -> shell::ShmLine {
    let r = &shared.region;
    shell::ShmLine {
        name: String::from(r.name()),
        size: r.size(),
        host: r.host(),
        peers: r
            .peers()
            .into_iter()
            .zip(shared.cfg.peers)
            .map(|((info, c, attached), place)| shell::ShmPeerLine {
                vm: String::from(info.name),
                readonly: info.readonly,
                slot: place.slot,
                bar2: place.bar2,
                attached,
                sent: c.sent,
                received: c.received,
                delivered: c.delivered,
                coalesced: c.coalesced,
                dropped: c.dropped,
                rate_limited: c.rate_limited,
                trapped: c.trapped,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::IoHub;
    use alloc::vec::Vec;
    use core::sync::atomic::{AtomicU32, Ordering};
    use ivshmem::PeerInfo;
    use scenario::ShmPeer;

    static KICKS: AtomicU32 = AtomicU32::new(0);
    static LAST_KICK: AtomicU32 = AtomicU32::new(0);

    fn kick(pcpu: u16) {
        KICKS.fetch_add(1, Ordering::Relaxed);
        LAST_KICK.store(u32::from(pcpu), Ordering::Relaxed);
    }

    static SHM: ShmConfig = ShmConfig {
        name: "ipc0",
        size: 0x1000,
        peers: &[
            ShmPeer {
                vm: 0,
                readonly: false,
                slot: 31,
                bar2: 0xD000_0000,
            },
            ShmPeer {
                vm: 1,
                readonly: true,
                slot: 30,
                bar2: 0xD000_0000,
            },
        ],
    };

    fn hub() -> Arc<IoHub> {
        let mut hub = IoHub::empty(kick);
        let peers: Vec<PeerInfo> = ["a", "b"]
            .iter()
            .zip(SHM.peers)
            .map(|(name, p)| PeerInfo {
                vm: p.vm,
                name,
                readonly: p.readonly,
            })
            .collect();
        hub.shm.push(SharedRegion {
            cfg: &SHM,
            region: Region::new("ipc0", 0x1000, 0x4000_0000, &peers, || 0),
        });
        Arc::new(hub)
    }

    #[test]
    fn each_member_gets_its_device_a_doorbell_wakes_the_other_vm_and_outsiders_see_nothing() {
        let hub = hub();
        let a_cfg = crate::mock::config(0, "a", &[1]);
        let b_cfg = crate::mock::config(1, "b", &[2]);
        let c_cfg = crate::mock::config(2, "c", &[3]);
        let (a_io, b_io, c_io) = (
            VmIo::new(hub.clone(), a_cfg),
            VmIo::new(hub.clone(), b_cfg),
            VmIo::new(hub.clone(), c_cfg),
        );
        let mut a = crate::vm::new_platform(a_cfg, 0);
        let mut b = crate::vm::new_platform(b_cfg, 0);
        let mut c = crate::vm::new_platform(c_cfg, 0);
        attach_shm(a_cfg, &a_io, &mut a).unwrap();
        attach_shm(b_cfg, &b_io, &mut b).unwrap();
        attach_shm(c_cfg, &c_io, &mut c).unwrap();
        let ids = |p: &mut vm::PcPlatform| {
            let mut v = Vec::new();
            p.for_each_pci_device(|bdf, d| {
                v.push((bdf.device(), d.config().read_u32(0)));
            });
            v
        };
        assert!(ids(&mut a).contains(&(31, 0x1110_1AF4)));
        assert!(ids(&mut b).contains(&(30, 0x1110_1AF4)));
        assert!(
            !ids(&mut c).iter().any(|&(_, id)| id == 0x1110_1AF4),
            "c maps no region"
        );
        // The region is mapped where firmware put BAR 2, read-only for b.
        assert!(b.take_slat_ops().contains(&vdev::SlatOp::MapRam {
            gpa: 0xD000_0000,
            len: 0x1000,
            host: 0x4000_0000,
            writable: false
        }));
        // a rings b (peer 1, vector 0): b's news flag is set and b's pCPU kicked; a's is not.
        let (bar0, _) = vm::pc::layout::device_bars(31);
        let before = KICKS.load(Ordering::Relaxed);
        assert!(a.mmio_write(u64::from(bar0) + 0xC, 4, 1 << 16, 0));
        assert_eq!(KICKS.load(Ordering::Relaxed), before + 1);
        assert_eq!(LAST_KICK.load(Ordering::Relaxed), 2);
        assert!(b_io.take_news() && !a_io.take_news() && !c_io.take_news());
        // b serves its news: the doorbell is delivered into b's device (interrupt status: mask
        // 0 so no line yet).
        b.serve_backends();
        let line = region_line(&hub.shm[0]);
        assert_eq!(
            (line.name.as_str(), line.size, line.host),
            ("ipc0", 0x1000, 0x4000_0000)
        );
        let a_line = &line.peers[0];
        let b_line = &line.peers[1];
        assert_eq!(
            (a_line.vm.as_str(), a_line.readonly, a_line.slot),
            ("a", false, 31)
        );
        assert_eq!((a_line.sent, a_line.received, a_line.dropped), (1, 0, 0));
        assert_eq!(
            (b_line.vm.as_str(), b_line.readonly, b_line.slot),
            ("b", true, 30)
        );
        assert_eq!((b_line.received, b_line.delivered), (1, 1));
        assert!(a_line.attached && b_line.attached);
        // b reloads: its old device goes, its new one starts with nothing pending.
        drop(b);
        assert!(!region_line(&hub.shm[0]).peers[1].attached);
        assert!(a.mmio_write(u64::from(bar0) + 0xC, 4, 1 << 16, 0));
        assert_eq!(
            region_line(&hub.shm[0]).peers[0].dropped,
            1,
            "b is not loaded"
        );
    }
}
