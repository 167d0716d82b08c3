//! Wall-clock helpers: unix time, and the access-log timestamp (`22/Nov/2026:00:27:00 +0000`) cached per
//! second so that logging a request does not format a date.
//!
//! All times are UTC; no time-zone database is read.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the unix epoch (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Converts days since 1970-01-01 into (year, month 1..=12, day 1..=31) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The access-log timestamp of the current second, re-formatted only when the second changes.
pub struct LogClock {
    second: u64,
    text: [u8; 26],
}

impl Default for LogClock {
    fn default() -> Self {
        Self::new()
    }
}

impl LogClock {
    pub fn new() -> Self {
        let mut clock = LogClock {
            second: u64::MAX,
            text: [b' '; 26],
        };
        clock.now();
        clock
    }

    /// The timestamp for the current second, e.g. `22/Nov/2026:00:27:00 +0000`.
    pub fn now(&mut self) -> &[u8] {
        let now = unix_now();
        if now != self.second {
            self.second = now;
            self.text = format_log_time(now);
        }
        &self.text
    }
}

/// Formats unix seconds as `dd/Mon/yyyy:hh:mm:ss +0000`.
pub fn format_log_time(unix: u64) -> [u8; 26] {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    let s = format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    );
    let mut out = [b' '; 26];
    let n = s.len().min(26);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(&format_log_time(0), b"01/Jan/1970:00:00:00 +0000");
        // 2026-11-22T00:27:00Z
        assert_eq!(
            &format_log_time(1_795_307_220),
            b"22/Nov/2026:00:27:00 +0000"
        );
        // leap day 2024-02-29T23:59:59Z
        assert_eq!(
            &format_log_time(1_709_251_199),
            b"29/Feb/2024:23:59:59 +0000"
        );
    }
}
