//! An MC146818-compatible real-time clock with 128 bytes of CMOS RAM at
//! ports 0x70 (index; bit 7 masks NMI) and 0x71 (data).
//!
//! The clock is computed from time rather than ticked: it starts at the
//! `now_unix_secs` given at construction and advances with the caller's
//! `now_ns` (any monotonic nanosecond count). Registers 0-9 and the century
//! byte (0x32, the register our FADT names) show that time in BCD or binary
//! (register B bit 2) and 24- or 12-hour form (bit 1); the day of the week
//! (1 = Sunday) follows the date. The format is applied when a register is
//! read, so changing it takes effect at once.
//!
//! Setting the time works as on the chip: with register B's SET bit (or the
//! divider held in reset by register A) the clock stops, the time registers
//! hold plain bytes the guest writes, and clearing SET starts the clock from
//! them (in the format then selected), keeping the sub-second phase; leaving
//! divider reset starts it half a second before the next update. A single
//! time register written while the clock runs changes that field in place.
//! Out-of-range fields carry into the next unit (31 February is 3 March)
//! and the result is kept within 1970..=9999 (counted when clamped).
//!
//! Register A's UIP bit is set during the last 244 us of each second (the
//! chip's update-cycle warning) and only while the clock runs, so it can
//! never stay set: the next microseconds clear it. Register C reports and
//! clears the periodic, alarm and update-ended flags, computed lazily from
//! time; register D always reports valid RAM and time. Interrupt output is
//! returned: [`RtcCmos::poll`] gives the IRQ 8 level (IRQF) and
//! [`RtcCmos::next_deadline`] when it will next rise.
//!
//! Not modelled: daylight-saving adjustment (B bit 0 is stored, ignored),
//! the square-wave pin, time bases other than 32.768 kHz (DV other than 010
//! stops the clock), the extended RAM bank at ports 0x72/0x73. Memory-size
//! bytes are left 0: the guest learns its memory from e820.

use crate::access::{all_ones, read_bytes, valid_size, write_bytes};

/// The index port: bits 6:0 select a CMOS byte, bit 7 masks NMI.
pub const RTC_INDEX_PORT: u16 = 0x70;
/// The data port.
pub const RTC_DATA_PORT: u16 = 0x71;
/// CMOS bytes reachable through the index port.
pub const CMOS_SIZE: usize = 128;
/// The CMOS byte holding the century (what the FADT's CENTURY field names).
pub const CENTURY_REGISTER: u8 = 0x32;

const NS_PER_SEC: u128 = 1_000_000_000;
const SECS_PER_DAY: u64 = 86_400;
/// 9999-12-31 23:59:59 UTC: the last second four year digits can show.
const MAX_SECS: u64 = 253_402_300_799;
/// How long before each update UIP is set (the data sheet's t_BUC).
const UIP_NS: u128 = 244_000;
/// The time base: 32.768 kHz.
const BASE_HZ: u128 = 32_768;

// Register indices.
const SECONDS: u8 = 0x00;
const SECONDS_ALARM: u8 = 0x01;
const MINUTES: u8 = 0x02;
const MINUTES_ALARM: u8 = 0x03;
const HOURS: u8 = 0x04;
const HOURS_ALARM: u8 = 0x05;
const DAY_OF_WEEK: u8 = 0x06;
const DAY_OF_MONTH: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const REG_A: u8 = 0x0A;
const REG_B: u8 = 0x0B;
const REG_C: u8 = 0x0C;
const REG_D: u8 = 0x0D;

// Register A.
const A_UIP: u8 = 1 << 7;
const A_DV_MASK: u8 = 0x70;
const A_DV_32K: u8 = 0x20;
const A_DV_RESET: u8 = 0x60;
const A_RS_MASK: u8 = 0x0F;
// Register B.
const B_SET: u8 = 1 << 7;
const B_PIE: u8 = 1 << 6;
const B_AIE: u8 = 1 << 5;
const B_UIE: u8 = 1 << 4;
const B_BINARY: u8 = 1 << 2;
const B_24H: u8 = 1 << 1;
// Register C.
const C_IRQF: u8 = 1 << 7;
const C_PF: u8 = 1 << 6;
const C_AF: u8 = 1 << 5;
const C_UF: u8 = 1 << 4;
// Register D.
const D_VRT: u8 = 1 << 7;
/// 12-hour mode: PM flag in the hours byte.
const HOUR_PM: u8 = 1 << 7;
/// Alarm byte values 0xC0..=0xFF match any value.
const ALARM_ANY: u8 = 0xC0;

/// The bytes that hold the time, in the order of [`Fields`].
const TIME_REGISTERS: [u8; 8] = [
    SECONDS,
    MINUTES,
    HOURS,
    DAY_OF_WEEK,
    DAY_OF_MONTH,
    MONTH,
    YEAR,
    CENTURY_REGISTER,
];

/// A broken-down time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fields {
    sec: u32,
    min: u32,
    hour: u32,
    /// 1 = Sunday.
    wday: u32,
    mday: u32,
    mon: u32,
    year: i64,
}

/// Days since 1970-01-01 of a proleptic Gregorian date; any month/day value
/// carries into neighbouring months and years.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Years start in March, so the leap day ends them.
    let month = i64::from(month);
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let month_from_march = (month + 9).rem_euclid(12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of day `days` since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn fields_from_secs(secs: u64) -> Fields {
    let days = (secs / SECS_PER_DAY) as i64;
    let tod = (secs % SECS_PER_DAY) as u32;
    let (year, mon, mday) = civil_from_days(days);
    Fields {
        sec: tod % 60,
        min: tod / 60 % 60,
        hour: tod / 3600,
        // 1970-01-01 was a Thursday (5 with Sunday = 1).
        wday: ((days + 4).rem_euclid(7) + 1) as u32,
        mday,
        mon,
        year,
    }
}

/// Seconds since the epoch of `f` and whether it had to be clamped.
fn secs_from_fields(f: &Fields) -> (u64, bool) {
    let days = days_from_civil(f.year, f.mon, f.mday);
    let secs = i128::from(days) * i128::from(SECS_PER_DAY)
        + i128::from(f.hour) * 3600
        + i128::from(f.min) * 60
        + i128::from(f.sec);
    let clamped = secs.clamp(0, i128::from(MAX_SECS));
    (clamped as u64, clamped != secs)
}

fn to_bcd(v: u32) -> u8 {
    let v = v % 100;
    (((v / 10) << 4) | (v % 10)) as u8
}

/// BCD bytes with non-decimal digits are read digit by digit (0x3A is 40).
fn from_bcd(b: u8) -> u32 {
    u32::from(b >> 4) * 10 + u32::from(b & 0xF)
}

/// What the clock ignored or corrected, for the VM's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtcCounters {
    /// Accesses to ports the RTC does not decode, or with an impossible width.
    pub bad_accesses: u64,
    /// Guest-set times outside 1970..=9999, clamped.
    pub clamped_times: u64,
}

/// The RTC and its CMOS RAM.
#[derive(Clone, Debug)]
pub struct RtcCmos {
    index: u8,
    nmi_masked: bool,
    /// Every byte as stored; registers A and B live here, and the time
    /// registers hold the time only while the clock is stopped.
    ram: [u8; CMOS_SIZE],
    /// Register C's PF, AF, UF.
    flags: u8,
    /// While running, the RTC time (ns since the epoch) is
    /// `anchor_rtc + (now - anchor_now)`.
    anchor_now: u64,
    anchor_rtc: u128,
    /// Sub-second phase kept while the clock is stopped.
    held_subsec: u128,
    /// RTC time up to which register C's flags are computed.
    flags_at: u128,
    counters: RtcCounters,
}

impl RtcCmos {
    /// A running clock showing `now_unix_secs` (clamped to 9999) at
    /// `now_ns`: 24-hour BCD format, 32.768 kHz time base, no interrupts,
    /// CMOS RAM zero.
    pub fn new(now_unix_secs: u64, now_ns: u64) -> Self {
        let mut ram = [0; CMOS_SIZE];
        ram[usize::from(REG_A)] = A_DV_32K | 0x06; // 1024 Hz periodic rate
        ram[usize::from(REG_B)] = B_24H;
        let anchor_rtc = u128::from(now_unix_secs.min(MAX_SECS)) * NS_PER_SEC;
        RtcCmos {
            index: 0,
            nmi_masked: false,
            ram,
            flags: 0,
            anchor_now: now_ns,
            anchor_rtc,
            held_subsec: 0,
            flags_at: anchor_rtc,
            counters: RtcCounters::default(),
        }
    }

    /// A guest read of `size` bytes at `port` (absolute) at `now_ns`. Wider
    /// accesses are successive byte reads; undecoded ports read 0xFF.
    pub fn read(&mut self, port: u16, size: u8, now_ns: u64) -> u32 {
        if !valid_size(size) {
            self.counters.bad_accesses = self.counters.bad_accesses.saturating_add(1);
            return all_ones(size);
        }
        read_bytes(port, size, |p| self.read_byte(p, now_ns))
    }

    /// A guest write of `size` bytes at `port` at `now_ns`.
    pub fn write(&mut self, port: u16, size: u8, value: u32, now_ns: u64) {
        if !valid_size(size) {
            self.counters.bad_accesses = self.counters.bad_accesses.saturating_add(1);
            return;
        }
        write_bytes(port, size, value, |p, b| self.write_byte(p, b, now_ns));
    }

    /// The IRQ 8 level (register C's IRQF) at `now_ns`.
    pub fn poll(&mut self, now_ns: u64) -> bool {
        self.update_flags(now_ns);
        self.irqf()
    }

    /// When IRQ 8 will next rise (`now_ns` scale), if an enabled interrupt
    /// source will fire and IRQ 8 is not already high.
    pub fn next_deadline(&self) -> Option<u64> {
        if !self.running() || self.irqf() {
            return None;
        }
        let b = self.reg_b();
        let sec = self.flags_at / NS_PER_SEC;
        let mut next: Option<u128> = None;
        let mut consider = |t: u128| next = Some(next.map_or(t, |n| n.min(t)));
        if b & B_UIE != 0 {
            consider((sec + 1) * NS_PER_SEC);
        }
        if b & B_AIE != 0 {
            if let Some(a) = self.next_alarm(sec as u64) {
                consider(u128::from(a) * NS_PER_SEC);
            }
        }
        if b & B_PIE != 0 {
            if let Some(p) = self.periodic_ticks() {
                let k = self.flags_at * BASE_HZ / NS_PER_SEC / p + 1;
                consider((k * p * NS_PER_SEC).div_ceil(BASE_HZ));
            }
        }
        let after = next?.saturating_sub(self.anchor_rtc);
        Some(
            self.anchor_now
                .saturating_add(u64::try_from(after).unwrap_or(u64::MAX)),
        )
    }

    /// Whether the guest masked NMI (bit 7 of the last index write).
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    /// The clock's current time in seconds since the epoch (the held time
    /// while the guest has it stopped).
    pub fn unix_secs(&self, now_ns: u64) -> u64 {
        if self.running() {
            (self.rtc_ns(now_ns) / NS_PER_SEC) as u64
        } else {
            self.held_secs().0
        }
    }

    /// What was ignored so far.
    pub fn counters(&self) -> RtcCounters {
        self.counters
    }

    fn reg_a(&self) -> u8 {
        self.ram[usize::from(REG_A)]
    }

    fn reg_b(&self) -> u8 {
        self.ram[usize::from(REG_B)]
    }

    fn running_with(a: u8, b: u8) -> bool {
        b & B_SET == 0 && a & A_DV_MASK == A_DV_32K
    }

    fn running(&self) -> bool {
        Self::running_with(self.reg_a(), self.reg_b())
    }

    fn rtc_ns(&self, now: u64) -> u128 {
        self.anchor_rtc + u128::from(now.saturating_sub(self.anchor_now))
    }

    fn irqf(&self) -> bool {
        let b = self.reg_b();
        (self.flags & C_PF != 0 && b & B_PIE != 0)
            || (self.flags & C_AF != 0 && b & B_AIE != 0)
            || (self.flags & C_UF != 0 && b & B_UIE != 0)
    }

    /// The periodic interrupt period in 32.768 kHz clocks (None: off).
    fn periodic_ticks(&self) -> Option<u128> {
        match self.reg_a() & A_RS_MASK {
            0 => None,
            // Rates 1 and 2 are rates 8 and 9 with a 32.768 kHz base.
            rs @ 1..=2 => Some(1 << (rs + 6)),
            rs => Some(1 << (rs - 1)),
        }
    }

    fn encode(&self, v: u32) -> u8 {
        if self.reg_b() & B_BINARY != 0 {
            v as u8
        } else {
            to_bcd(v)
        }
    }

    fn decode(&self, b: u8) -> u32 {
        if self.reg_b() & B_BINARY != 0 {
            u32::from(b)
        } else {
            from_bcd(b)
        }
    }

    fn encode_hour(&self, hour: u32) -> u8 {
        if self.reg_b() & B_24H != 0 {
            return self.encode(hour);
        }
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(h12) | if hour >= 12 { HOUR_PM } else { 0 }
    }

    fn decode_hour(&self, b: u8) -> u32 {
        if self.reg_b() & B_24H != 0 {
            return self.decode(b);
        }
        self.decode(b & !HOUR_PM) % 12 + if b & HOUR_PM != 0 { 12 } else { 0 }
    }

    /// The time registers' bytes for `f` in the current format.
    fn encode_fields(&self, f: &Fields) -> [u8; 8] {
        let century = f.year.div_euclid(100) as u32;
        let year = f.year.rem_euclid(100) as u32;
        [
            self.encode(f.sec),
            self.encode(f.min),
            self.encode_hour(f.hour),
            self.encode(f.wday),
            self.encode(f.mday),
            self.encode(f.mon),
            self.encode(year),
            self.encode(century),
        ]
    }

    fn decode_fields(&self, raw: &[u8; 8]) -> Fields {
        Fields {
            sec: self.decode(raw[0]),
            min: self.decode(raw[1]),
            hour: self.decode_hour(raw[2]),
            wday: self.decode(raw[3]),
            mday: self.decode(raw[4]),
            mon: self.decode(raw[5]),
            year: i64::from(self.decode(raw[7])) * 100 + i64::from(self.decode(raw[6])),
        }
    }

    fn held_raw(&self) -> [u8; 8] {
        TIME_REGISTERS.map(|r| self.ram[usize::from(r)])
    }

    /// The time the held registers show (clamped) and whether it was clamped.
    fn held_secs(&self) -> (u64, bool) {
        secs_from_fields(&self.decode_fields(&self.held_raw()))
    }

    /// Restarts the running clock at `secs` + `subsec` from `now`.
    fn rebase(&mut self, secs: u64, subsec: u128, now: u64) {
        self.anchor_rtc = u128::from(secs) * NS_PER_SEC + subsec;
        self.anchor_now = now;
        self.flags_at = self.anchor_rtc;
    }

    /// Stops the clock, leaving its time in the registers.
    fn freeze(&mut self, now: u64) {
        let t = self.rtc_ns(now);
        let raw = self.encode_fields(&fields_from_secs((t / NS_PER_SEC) as u64));
        for (r, b) in TIME_REGISTERS.iter().zip(raw) {
            self.ram[usize::from(*r)] = b;
        }
        self.held_subsec = t % NS_PER_SEC;
    }

    /// Starts the clock from the held registers.
    fn resume(&mut self, subsec: u128, now: u64) {
        let (secs, clamped) = self.held_secs();
        if clamped {
            self.counters.clamped_times = self.counters.clamped_times.saturating_add(1);
        }
        self.rebase(secs, subsec, now);
    }

    /// Sets register C's flags for everything that happened up to `now`.
    fn update_flags(&mut self, now: u64) {
        if !self.running() {
            return;
        }
        let (t0, t1) = (self.flags_at, self.rtc_ns(now));
        if t1 <= t0 {
            return;
        }
        let (s0, s1) = (t0 / NS_PER_SEC, t1 / NS_PER_SEC);
        if s1 > s0 {
            self.flags |= C_UF;
            if self
                .next_alarm(s0 as u64)
                .is_some_and(|a| u128::from(a) <= s1)
            {
                self.flags |= C_AF;
            }
        }
        if let Some(p) = self.periodic_ticks() {
            if t1 * BASE_HZ / NS_PER_SEC / p > t0 * BASE_HZ / NS_PER_SEC / p {
                self.flags |= C_PF;
            }
        }
        self.flags_at = t1;
    }

    /// One alarm byte: None never matches, Some(None) matches anything.
    fn alarm_field(&self, reg: u8, limit: u32) -> Option<Option<u32>> {
        let b = self.ram[usize::from(reg)];
        if b & ALARM_ANY == ALARM_ANY {
            return Some(None);
        }
        let v = if reg == HOURS_ALARM {
            self.decode_hour(b)
        } else {
            self.decode(b)
        };
        (v < limit).then_some(Some(v))
    }

    /// The first second after `after` at which the alarm matches.
    fn next_alarm(&self, after: u64) -> Option<u64> {
        let hour = self.alarm_field(HOURS_ALARM, 24)?;
        let min = self.alarm_field(MINUTES_ALARM, 60)?;
        let sec = self.alarm_field(SECONDS_ALARM, 60)?;
        let matches = |field: Option<u32>, v: u32| field.is_none_or(|f| f == v);
        let day_start = after - after % SECS_PER_DAY;
        let tod = (after % SECS_PER_DAY) as u32;
        let (h0, m0, s0) = (tod / 3600, tod / 60 % 60, tod % 60);
        // A valid alarm matches within the next 24 hours; look at two days.
        for day in 0..2u64 {
            for h in (0..24).filter(|&h| matches(hour, h) && (day > 0 || h >= h0)) {
                for m in (0..60).filter(|&m| matches(min, m) && (day > 0 || h > h0 || m >= m0)) {
                    let first = if day == 0 && h == h0 && m == m0 {
                        s0 + 1
                    } else {
                        0
                    };
                    if let Some(s) = (first..60).find(|&s| matches(sec, s)) {
                        let tod = u64::from(h * 3600 + m * 60 + s);
                        return Some(day_start + day * SECS_PER_DAY + tod);
                    }
                }
            }
        }
        None
    }

    fn read_byte(&mut self, port: u16, now: u64) -> u8 {
        match port {
            // The index register cannot be read back: the bus floats.
            RTC_INDEX_PORT => 0xFF,
            RTC_DATA_PORT => self.read_register(self.index, now),
            _ => {
                self.counters.bad_accesses = self.counters.bad_accesses.saturating_add(1);
                0xFF
            }
        }
    }

    fn write_byte(&mut self, port: u16, value: u8, now: u64) {
        match port {
            RTC_INDEX_PORT => {
                self.index = value & 0x7F;
                self.nmi_masked = value & 0x80 != 0;
            }
            RTC_DATA_PORT => self.write_register(self.index, value, now),
            _ => self.counters.bad_accesses = self.counters.bad_accesses.saturating_add(1),
        }
    }

    fn read_register(&mut self, index: u8, now: u64) -> u8 {
        let slot = TIME_REGISTERS.iter().position(|&r| r == index);
        match (index, slot) {
            (_, Some(i)) if self.running() => {
                let secs = (self.rtc_ns(now) / NS_PER_SEC) as u64;
                self.encode_fields(&fields_from_secs(secs))[i]
            }
            (REG_A, _) => {
                let uip = self.running() && self.rtc_ns(now) % NS_PER_SEC >= NS_PER_SEC - UIP_NS;
                self.reg_a() | if uip { A_UIP } else { 0 }
            }
            (REG_C, _) => {
                self.update_flags(now);
                let v = self.flags | if self.irqf() { C_IRQF } else { 0 };
                self.flags = 0;
                v
            }
            (REG_D, _) => D_VRT,
            _ => self.ram[usize::from(index & 0x7F)],
        }
    }

    fn write_register(&mut self, index: u8, value: u8, now: u64) {
        let slot = TIME_REGISTERS.iter().position(|&r| r == index);
        match (index, slot) {
            (_, Some(i)) => {
                if !self.running() {
                    self.ram[usize::from(index)] = value;
                    return;
                }
                // Change one field of the running time, keeping the phase.
                self.update_flags(now);
                let t = self.rtc_ns(now);
                self.freeze(now);
                self.ram[usize::from(TIME_REGISTERS[i])] = value;
                self.resume(t % NS_PER_SEC, now);
            }
            (REG_A, _) => self.set_control(value & !A_UIP, self.reg_b(), now),
            (REG_B, _) => self.set_control(self.reg_a(), value, now),
            (REG_C | REG_D, _) => {} // read-only
            _ => self.ram[usize::from(index & 0x7F)] = value,
        }
    }

    /// Writes registers A and B, stopping or starting the clock as SET and
    /// the divider select demand. The time is frozen in the old format.
    fn set_control(&mut self, a: u8, b: u8, now: u64) {
        self.update_flags(now);
        let old_a = self.reg_a();
        let was = self.running();
        if was && !Self::running_with(a, b) {
            self.freeze(now);
        }
        self.ram[usize::from(REG_A)] = a;
        self.ram[usize::from(REG_B)] = b;
        if !was && self.running() {
            let leaving_reset = old_a & A_DV_RESET == A_DV_RESET;
            let subsec = if leaving_reset {
                NS_PER_SEC / 2
            } else {
                self.held_subsec
            };
            self.resume(subsec, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;
    /// 2024-02-29 23:59:58 UTC, a Thursday.
    const LEAP_EVE: u64 = 1_709_251_198;

    fn cmos_read(r: &mut RtcCmos, index: u8, now: u64) -> u8 {
        r.write(0x70, 1, u32::from(index), now);
        r.read(0x71, 1, now) as u8
    }

    fn cmos_write(r: &mut RtcCmos, index: u8, value: u8, now: u64) {
        r.write(0x70, 1, u32::from(index), now);
        r.write(0x71, 1, u32::from(value), now);
    }

    /// Registers 0, 2, 4, 6, 7, 8, 9, 0x32.
    fn time_bytes(r: &mut RtcCmos, now: u64) -> [u8; 8] {
        TIME_REGISTERS.map(|i| cmos_read(r, i, now))
    }

    #[test]
    fn calendar_conversions_agree() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        for d in (-800_000i64..3_000_000).step_by(997) {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d);
        }
        // Overflowing fields carry.
        assert_eq!(days_from_civil(2023, 2, 31), days_from_civil(2023, 3, 3));
        assert_eq!(days_from_civil(2023, 0, 1), days_from_civil(2022, 12, 1));
        let f = fields_from_secs(LEAP_EVE);
        assert_eq!(
            (f.year, f.mon, f.mday, f.hour, f.min, f.sec, f.wday),
            (2024, 2, 29, 23, 59, 58, 5)
        );
        assert_eq!(secs_from_fields(&f), (LEAP_EVE, false));
    }

    #[test]
    fn bcd_24h_time_advances_across_a_leap_day() {
        let mut r = RtcCmos::new(LEAP_EVE, 7);
        assert_eq!(
            time_bytes(&mut r, 7),
            [0x58, 0x59, 0x23, 0x05, 0x29, 0x02, 0x24, 0x20]
        );
        assert_eq!(
            time_bytes(&mut r, 7 + 2 * SEC),
            [0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x24, 0x20]
        );
        assert_eq!(r.unix_secs(7 + 2 * SEC), LEAP_EVE + 2);
    }

    #[test]
    fn binary_and_12_hour_formats() {
        let mut r = RtcCmos::new(LEAP_EVE, 0);
        cmos_write(&mut r, REG_B, B_BINARY | B_24H, 0);
        assert_eq!(time_bytes(&mut r, 0), [58, 59, 23, 5, 29, 2, 24, 20]);
        cmos_write(&mut r, REG_B, B_BINARY, 0);
        assert_eq!(cmos_read(&mut r, HOURS, 0), 0x80 | 11, "11 PM");
        assert_eq!(cmos_read(&mut r, HOURS, 2 * SEC), 12, "12 AM");
        cmos_write(&mut r, REG_B, 0, 0);
        assert_eq!(cmos_read(&mut r, HOURS, 0), 0x91, "11 PM in BCD");
    }

    /// Linux's mc146818_set_time: SET, write the fields, clear SET.
    #[test]
    fn setting_the_time_with_set() {
        let mut r = RtcCmos::new(LEAP_EVE, 0);
        let b = cmos_read(&mut r, REG_B, 0);
        cmos_write(&mut r, REG_B, b | B_SET, SEC / 4);
        // Stopped: the registers hold what was written.
        for (i, v) in [
            (SECONDS, 0x30),
            (MINUTES, 0x15),
            (HOURS, 0x08),
            (DAY_OF_MONTH, 0x04),
            (MONTH, 0x07),
            (YEAR, 0x26),
            (CENTURY_REGISTER, 0x20),
        ] {
            cmos_write(&mut r, i, v, SEC);
        }
        assert_eq!(
            cmos_read(&mut r, SECONDS, 100 * SEC),
            0x30,
            "no time passes under SET"
        );
        assert_eq!(cmos_read(&mut r, REG_A, 100 * SEC) & A_UIP, 0);
        cmos_write(&mut r, REG_B, b, 100 * SEC);
        // 2026-07-04 08:15:30, a Saturday; the 250 ms phase is kept.
        assert_eq!(
            time_bytes(&mut r, 100 * SEC),
            [0x30, 0x15, 0x08, 0x07, 0x04, 0x07, 0x26, 0x20]
        );
        assert_eq!(
            cmos_read(&mut r, SECONDS, 100 * SEC + 3 * SEC / 4 - 1),
            0x30
        );
        assert_eq!(cmos_read(&mut r, SECONDS, 100 * SEC + 3 * SEC / 4), 0x31);
    }

    #[test]
    fn single_field_write_while_running() {
        let mut r = RtcCmos::new(LEAP_EVE, 0);
        cmos_write(&mut r, YEAR, 0x25, SEC / 2);
        // 2025 has no 29 February: it becomes 1 March.
        assert_eq!(
            time_bytes(&mut r, SEC / 2),
            [0x58, 0x59, 0x23, 0x07, 0x01, 0x03, 0x25, 0x20]
        );
    }

    #[test]
    fn uip_is_set_only_just_before_each_update() {
        let mut r = RtcCmos::new(LEAP_EVE, 0);
        let uip = |r: &mut RtcCmos, t: u64| cmos_read(r, REG_A, t) & A_UIP != 0;
        assert!(!uip(&mut r, 0));
        assert!(!uip(&mut r, SEC - 244_001));
        assert!(uip(&mut r, SEC - 244_000));
        assert!(uip(&mut r, SEC - 1));
        assert!(!uip(&mut r, SEC));
        assert_eq!(cmos_read(&mut r, REG_A, 0), 0x26);
        // Linux's mc146818_avoid_UIP loop: seconds, UIP clear, seconds again.
        let t = SEC - 100_000;
        let mut now = t;
        while uip(&mut r, now) {
            now += 1_000_000; // udelay-sized steps
        }
        assert!(now - t <= 1_000_000);
    }

    #[test]
    fn register_c_flags_clear_on_read_and_drive_irq8() {
        let mut r = RtcCmos::new(LEAP_EVE, 0);
        assert_eq!(cmos_read(&mut r, REG_C, 0), 0);
        assert_eq!(cmos_read(&mut r, REG_D, 0), 0x80);
        // Update-ended flag without UIE: flag only, no IRQ.
        assert!(!r.poll(SEC));
        assert_eq!(cmos_read(&mut r, REG_C, SEC), C_UF | C_PF);
        assert_eq!(cmos_read(&mut r, REG_C, SEC), 0);
        cmos_write(&mut r, REG_B, B_24H | B_UIE, SEC);
        assert_eq!(r.next_deadline(), Some(2 * SEC));
        assert!(!r.poll(2 * SEC - 1));
        assert!(r.poll(2 * SEC));
        assert_eq!(r.next_deadline(), None, "IRQ 8 is already high");
        assert_eq!(
            cmos_read(&mut r, REG_C, 2 * SEC) & (C_IRQF | C_UF),
            C_IRQF | C_UF
        );
        assert!(!r.poll(2 * SEC));
    }

    #[test]
    fn periodic_interrupt_rate() {
        let mut r = RtcCmos::new(0, 0);
        cmos_write(&mut r, REG_A, A_DV_32K | 0x0F, 0); // 2 Hz
        cmos_write(&mut r, REG_B, B_24H | B_PIE, 0);
        assert_eq!(r.next_deadline(), Some(SEC / 2));
        assert!(!r.poll(SEC / 2 - 1));
        assert!(r.poll(SEC / 2));
        cmos_read(&mut r, REG_C, SEC / 2);
        assert_eq!(r.next_deadline(), Some(SEC));
        cmos_write(&mut r, REG_A, A_DV_32K | 0x06, SEC / 2); // 1024 Hz
        assert_eq!(r.next_deadline(), Some(SEC / 2 + 976_563));
        cmos_write(&mut r, REG_A, A_DV_32K, SEC / 2); // off
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn alarm_with_dont_care_fields() {
        let mut r = RtcCmos::new(LEAP_EVE, 0); // 23:59:58
        cmos_write(&mut r, SECONDS_ALARM, 0x05, 0);
        cmos_write(&mut r, MINUTES_ALARM, 0xFF, 0);
        cmos_write(&mut r, HOURS_ALARM, 0xC0, 0);
        cmos_write(&mut r, REG_B, B_24H | B_AIE, 0);
        // Next xx:xx:05 is 00:00:05, seven seconds on.
        assert_eq!(r.next_deadline(), Some(7 * SEC));
        assert!(!r.poll(6 * SEC));
        assert!(r.poll(7 * SEC));
        assert_eq!(cmos_read(&mut r, REG_C, 7 * SEC) & C_AF, C_AF);
        // Then every minute.
        assert_eq!(r.next_deadline(), Some(67 * SEC));
        // Skipping far ahead still notices the match.
        assert!(r.poll(1000 * SEC));
        // An alarm that can never match (minute 75) never fires.
        cmos_read(&mut r, REG_C, 1000 * SEC);
        cmos_write(&mut r, MINUTES_ALARM, 0x75, 1000 * SEC);
        assert_eq!(r.next_deadline(), None);
        assert!(!r.poll(100_000 * SEC));
    }

    #[test]
    fn divider_reset_stops_and_restarts_half_a_second_early() {
        let mut r = RtcCmos::new(LEAP_EVE, 0);
        cmos_write(&mut r, REG_A, 0x70, SEC / 10);
        assert_eq!(cmos_read(&mut r, SECONDS, 50 * SEC), 0x58);
        assert_eq!(r.next_deadline(), None);
        cmos_write(&mut r, REG_A, 0x26, 50 * SEC);
        assert_eq!(cmos_read(&mut r, SECONDS, 50 * SEC + SEC / 2 - 1), 0x58);
        assert_eq!(cmos_read(&mut r, SECONDS, 50 * SEC + SEC / 2), 0x59);
    }

    #[test]
    fn ram_index_nmi_bit_and_century() {
        let mut r = RtcCmos::new(0, 0);
        for i in 0x0E..0x80u8 {
            if i != CENTURY_REGISTER {
                cmos_write(&mut r, i, i ^ 0x5A, 0);
            }
        }
        for i in 0x0E..0x80u8 {
            if i != CENTURY_REGISTER {
                assert_eq!(cmos_read(&mut r, i, 0), i ^ 0x5A);
            }
        }
        assert_eq!(cmos_read(&mut r, CENTURY_REGISTER, 0), 0x19);
        // Bit 7 of the index masks NMI and does not change the register.
        r.write(0x70, 1, 0x80 | 0x20, 0);
        assert!(r.nmi_masked());
        assert_eq!(r.read(0x71, 1, 0), u32::from(0x20u8 ^ 0x5A));
        r.write(0x70, 1, 0x20, 0);
        assert!(!r.nmi_masked());
        assert_eq!(r.read(0x70, 1, 0), 0xFF);
        // A word access is index then data.
        r.write(0x70, 2, 0x5A_00 | u32::from(0x40u8), 0);
        assert_eq!(cmos_read(&mut r, 0x40, 0), 0x5A);
    }

    #[test]
    fn hostile_values_times_ports_and_sizes_never_panic() {
        let mut r = RtcCmos::new(u64::MAX, u64::MAX);
        assert_eq!(r.unix_secs(u64::MAX), MAX_SECS, "clamped to 9999");
        for port in [0u16, 0x6F, 0x72, 0x73, 0xFFFF] {
            assert_eq!(r.read(port, 1, 0), 0xFF);
            r.write(port, 1, 0, 0);
        }
        for size in [0u8, 3, 8] {
            assert_eq!(r.read(0x71, size, 0), 0xFFFF_FFFF);
            r.write(0x70, size, 0, 0);
        }
        assert_eq!(r.counters().bad_accesses, 16);
        // Garbage time under SET, in both formats, then run: clamped, no panic.
        for b in [B_SET, B_SET | B_BINARY, B_SET | B_BINARY | B_24H] {
            cmos_write(&mut r, REG_B, b, 0);
            for &i in &TIME_REGISTERS {
                cmos_write(&mut r, i, 0xFF, 0);
            }
            cmos_write(&mut r, REG_B, b & !B_SET, 0);
            let _ = time_bytes(&mut r, 5);
            cmos_write(&mut r, REG_B, b, 0);
            for &i in &TIME_REGISTERS {
                cmos_write(&mut r, i, 0x00, 0);
            }
            cmos_write(&mut r, REG_B, b & !B_SET, 0);
        }
        assert!(r.counters().clamped_times > 0);
        // Every value into every register, at erratic times.
        let times = [0u64, u64::MAX, 1, u64::MAX / 3, 0];
        for v in 0..=255u8 {
            for i in 0..=255u8 {
                let t = times[usize::from(i) % times.len()];
                cmos_write(&mut r, i, v, t);
                let _ = r.read(0x71, 4, t);
                let _ = r.poll(t);
                let _ = r.next_deadline();
            }
        }
    }
}
