//! Timer advance for real-time VMs on the virtual LAPIC path: a halted rt vCPU's pCPU arms its
//! host timer a little before the guest's deadline, by what waking up costs (learned), and spins
//! the rest of the way, so the interrupt is injected as soon as the deadline passes instead of a
//! wake-up later (KVM's `lapic_timer_advance` idea). The pCPU is the VM's alone: spinning takes
//! nothing from anyone.

/// The advance of one vCPU, in TSC ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerAdvance {
    /// How early the host timer is armed.
    advance: u64,
    /// The most it may grow to.
    max: u64,
}

/// What a halted vCPU with a timer deadline does now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The deadline is closer than a wake-up: spin until it passes.
    Spin,
    /// Sleep with the host timer armed this many ticks from now.
    Sleep { after: u64 },
}

impl TimerAdvance {
    /// Starts at 0 and never exceeds `max` ticks.
    pub fn new(max: u64) -> Self {
        TimerAdvance { advance: 0, max }
    }

    /// The current advance.
    #[cfg(test)]
    pub fn ticks(&self) -> u64 {
        self.advance
    }

    /// What to do at `now` for a deadline at `deadline`.
    pub fn plan(&self, now: u64, deadline: u64) -> Plan {
        match deadline.saturating_sub(self.advance).checked_sub(now) {
            Some(after) if after > 0 => Plan::Sleep { after },
            _ => Plan::Spin,
        }
    }

    /// Learns from a sleep for `deadline` that ended at `woke`: the wake-up cost is the time from
    /// the host timer's due moment to `woke`; the advance follows it (an average over 8 wakes).
    /// A wake before the host timer was due (another interrupt) teaches nothing.
    pub fn learn(&mut self, deadline: u64, woke: u64) {
        let due = deadline.saturating_sub(self.advance);
        let Some(cost) = woke.checked_sub(due) else {
            return;
        };
        let cost = cost.min(self.max);
        // Round up so that a steady cost is reached, not approached forever.
        self.advance = ((self.advance * 7 + cost).div_ceil(8)).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_wake_cost_is_learned_and_then_hidden() {
        let mut a = TimerAdvance::new(10_000);
        let cost = 800;
        let mut late = u64::MAX;
        let mut now = 0;
        for _ in 0..100 {
            let deadline = now + 100_000;
            let woke = match a.plan(now, deadline) {
                Plan::Sleep { after } => now + after + cost,
                Plan::Spin => now,
            };
            a.learn(deadline, woke);
            // After the wake the pCPU spins to the deadline if it is early.
            late = woke.saturating_sub(deadline);
            now = woke.max(deadline) + 10;
        }
        assert_eq!(a.ticks(), cost);
        assert_eq!(late, 0, "the host wakes before the deadline");
    }

    #[test]
    fn a_close_deadline_spins_and_the_advance_is_capped() {
        let mut a = TimerAdvance::new(1000);
        assert_eq!(a.plan(100, 200), Plan::Sleep { after: 100 });
        assert_eq!(a.plan(100, 100), Plan::Spin);
        assert_eq!(a.plan(100, 50), Plan::Spin, "already due");
        for _ in 0..200 {
            a.learn(1_000_000, 1_000_000 + 50_000);
        }
        assert_eq!(a.ticks(), 1000);
        assert_eq!(a.plan(100, 1000), Plan::Spin);
        // An early wake (another interrupt) teaches nothing.
        let before = a;
        a.learn(1_000_000, 10);
        assert_eq!(a, before);
    }
}
