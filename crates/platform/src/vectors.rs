//! The host's interrupt vectors as an allocated resource: each user asks
//! for a vector under a name instead of picking a constant, so two users
//! can never share one, and the shell can say who owns each.
//!
//! Vectors 0..32 are exceptions and never handed out; the caller reserves
//! what the hardware fixes (the 8259A's remapped range, the LAPIC's
//! spurious vector). A LAPIC ranks vectors by their high nibble: system
//! vectors (timers, wake-up IPIs) are taken from the top down, device
//! vectors (passthrough MSIs, later) from the bottom up, so the two kinds
//! meet in the middle and system vectors keep the higher priority.

use core::fmt;

/// The first vector that is not an exception.
pub const FIRST_INTERRUPT: u8 = 32;

/// Why a vector could not be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorError {
    /// Every vector is in use; `owner` asked for one more.
    Exhausted { owner: &'static str },
    /// `vector` is an exception or already owned (by `by`).
    Taken { vector: u8, by: &'static str },
}

impl fmt::Display for VectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VectorError::Exhausted { owner } => {
                write!(f, "no free interrupt vector left for {owner}")
            }
            VectorError::Taken { vector, by } => {
                write!(f, "interrupt vector {vector:#04x} is already {by}'s")
            }
        }
    }
}

/// Which end of the vector space a request is served from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Top down from 0xFE: the hypervisor's own timers and IPIs.
    System,
    /// Bottom up from 0x30: device interrupts.
    Device,
}

/// Who owns each of the 256 vectors.
#[derive(Clone, Debug)]
pub struct VectorTable {
    owners: [Option<&'static str>; 256],
}

impl Default for VectorTable {
    fn default() -> Self {
        Self::new()
    }
}

impl VectorTable {
    /// A table with the exceptions (0..32) reserved.
    pub const fn new() -> Self {
        let mut owners = [None; 256];
        let mut v = 0;
        while v < FIRST_INTERRUPT as usize {
            owners[v] = Some("exception");
            v += 1;
        }
        VectorTable { owners }
    }

    /// Takes `vector` for `owner` (what the hardware fixes: the spurious
    /// vector, the PIC's range).
    pub fn reserve(&mut self, vector: u8, owner: &'static str) -> Result<u8, VectorError> {
        match self.owners[usize::from(vector)] {
            Some(by) => Err(VectorError::Taken { vector, by }),
            None => {
                self.owners[usize::from(vector)] = Some(owner);
                Ok(vector)
            }
        }
    }

    /// A free vector for `owner`, from the end `priority` says.
    pub fn allocate(&mut self, owner: &'static str, priority: Priority) -> Result<u8, VectorError> {
        let pick = |v: &u8| self.owners[usize::from(*v)].is_none();
        let found = match priority {
            Priority::System => (FIRST_INTERRUPT..=0xFE).rev().find(pick),
            Priority::Device => (0x30..=0xFE).chain(FIRST_INTERRUPT..0x30).find(pick),
        };
        let v = found.ok_or(VectorError::Exhausted { owner })?;
        self.owners[usize::from(v)] = Some(owner);
        Ok(v)
    }

    /// Gives `vector` back (exceptions stay reserved).
    pub fn free(&mut self, vector: u8) {
        if vector >= FIRST_INTERRUPT {
            self.owners[usize::from(vector)] = None;
        }
    }

    /// Who owns `vector`.
    pub fn owner(&self, vector: u8) -> Option<&'static str> {
        self.owners[usize::from(vector)]
    }

    /// Vectors free for interrupts.
    pub fn free_count(&self) -> usize {
        self.owners.iter().filter(|o| o.is_none()).count()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn system_from_the_top_devices_from_the_bottom() {
        let mut t = VectorTable::new();
        assert_eq!(t.reserve(0xFF, "spurious"), Ok(0xFF));
        assert_eq!(t.allocate("wake", Priority::System), Ok(0xFE));
        assert_eq!(t.allocate("timer", Priority::System), Ok(0xFD));
        assert_eq!(t.allocate("nic", Priority::Device), Ok(0x30));
        assert_eq!(t.owner(0xFD), Some("timer"));
        assert_eq!(t.owner(5), Some("exception"));
        assert_eq!(t.owner(0x31), None);
    }

    #[test]
    fn reservations_and_exceptions_are_never_handed_out() {
        let mut t = VectorTable::new();
        assert_eq!(
            t.reserve(0x0E, "x"),
            Err(VectorError::Taken {
                vector: 0x0E,
                by: "exception"
            })
        );
        for v in 0x20..0x30 {
            t.reserve(v, "pic").unwrap();
        }
        assert_eq!(
            std::string::ToString::to_string(&t.reserve(0x20, "y").unwrap_err()),
            "interrupt vector 0x20 is already pic's"
        );
        t.reserve(0xFF, "spurious").unwrap();
        let mut got = std::vec::Vec::new();
        while let Ok(v) = t.allocate("dev", Priority::Device) {
            got.push(v);
        }
        assert_eq!(got.len(), 0xFF - 0x30);
        assert!(got.iter().all(|&v| (0x30..0xFF).contains(&v)));
        assert_eq!(
            t.allocate("late", Priority::System),
            Err(VectorError::Exhausted { owner: "late" })
        );
        assert_eq!(t.free_count(), 0);
        t.free(0x40);
        t.free(3); // an exception: stays reserved
        assert_eq!(t.owner(3), Some("exception"));
        assert_eq!(t.allocate("again", Priority::System), Ok(0x40));
    }

    #[test]
    fn device_requests_fall_back_below_0x30() {
        let mut t = VectorTable::new();
        for v in 0x30..=0xFF {
            t.reserve(v, "full").unwrap();
        }
        assert_eq!(t.allocate("dev", Priority::Device), Ok(0x20));
    }
}
