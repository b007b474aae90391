//! Wall-clock handling without a date crate: Unix seconds in, UTC civil dates out.
//!
//! Only UTC is spoken anywhere (store, CLI, key options), so the proleptic Gregorian
//! conversion below is all we need. Callers pass `now` in, so tests control time.
//!
//! A point in time is a [`Timestamp`]; a span of time (a lockout window, a key lifetime,
//! how stale directory data may be) is a [`std::time::Duration`]. Spans are never
//! negative here (configuration and options refuse zero and signs), and the only
//! arithmetic between the two is a point moved by a span or the span between two points,
//! which the methods below saturate instead of overflowing.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time: whole seconds since the Unix epoch, UTC. Shown as RFC 3339
/// (`2023-11-14T22:13:20Z`); stored (SQLite) and serialized (JSON) as the plain number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

/// The whole seconds of `span` as a signed number, at most `i64::MAX`; a fraction is dropped.
fn whole_seconds(span: Duration) -> i64 {
    i64::try_from(span.as_secs()).unwrap_or(i64::MAX)
}

impl Timestamp {
    /// 1970-01-01T00:00:00Z.
    pub const EPOCH: Timestamp = Timestamp(0);

    pub const fn from_secs(secs: i64) -> Timestamp {
        Timestamp(secs)
    }

    /// Seconds since the Unix epoch (negative before it).
    pub const fn as_secs(self) -> i64 {
        self.0
    }

    /// `span` later; `None` past the last representable second.
    pub fn checked_add(self, span: Duration) -> Option<Timestamp> {
        self.0.checked_add(i64::try_from(span.as_secs()).ok()?).map(Timestamp)
    }

    /// `span` earlier; `None` before the first representable second.
    pub fn checked_sub(self, span: Duration) -> Option<Timestamp> {
        self.0.checked_sub(i64::try_from(span.as_secs()).ok()?).map(Timestamp)
    }

    /// `span` later, or the last representable second.
    pub fn saturating_add(self, span: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(whole_seconds(span)))
    }

    /// `span` earlier, or the first representable second.
    pub fn saturating_sub(self, span: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(whole_seconds(span)))
    }

    /// The time from `earlier` to `self`; zero when `earlier` is in fact later (a clock
    /// set back), which every age check treats as young.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_secs(self.0.saturating_sub(earlier.0).try_into().unwrap_or(0))
    }

    /// Seconds from `earlier` to `self`, negative when `earlier` is later: for reports that
    /// show a lag as it is, clock skew included.
    pub fn secs_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Whole days since the Unix epoch (the unit of `shadowExpire`).
    pub fn days_since_epoch(self) -> i64 {
        self.0.div_euclid(86_400)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339, UTC; width and alignment apply, as to the string it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&Civil::from_timestamp(*self).to_string())
    }
}

/// The current time; the only place the clock is read.
pub fn now() -> Timestamp {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(whole_seconds).unwrap_or(0);
    Timestamp(secs)
}

/// A UTC calendar time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

// Days from 1970-01-01 to the given date (H. Hinnant's days_from_civil).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

impl Civil {
    pub fn from_timestamp(t: Timestamp) -> Civil {
        let (year, month, day) = civil_from_days(t.days_since_epoch());
        let secs = t.0.rem_euclid(86_400);
        Civil {
            year,
            month,
            day,
            hour: (secs / 3600) as u32,
            minute: (secs % 3600 / 60) as u32,
            second: (secs % 60) as u32,
        }
    }

    pub fn timestamp(&self) -> Timestamp {
        Timestamp(
            days_from_civil(self.year, self.month, self.day) * 86_400
                + i64::from(self.hour) * 3600
                + i64::from(self.minute) * 60
                + i64::from(self.second),
        )
    }

    /// The form sshd's `expiry-time=` option takes: `YYYYMMDDHHMMSSZ` (UTC).
    pub fn ssh_timespec(&self) -> String {
        format!("{:04}{:02}{:02}{:02}{:02}{:02}Z", self.year, self.month, self.day, self.hour, self.minute, self.second)
    }
}

impl fmt::Display for Civil {
    /// RFC 3339, UTC.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

fn number(text: &str, what: &str) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} is not a number"));
    }
    text.parse().map_err(|_| format!("{what} is out of range"))
}

/// Parses `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM[:SS]Z`.
pub fn parse_date(text: &str) -> Result<Timestamp, String> {
    let bad = || format!("`{}`: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)", text.escape_debug());
    let (date, clock) = match text.split_once('T') {
        Some((d, c)) => (d, Some(c.strip_suffix('Z').ok_or_else(bad)?)),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let year = i64::from(number(y, "year").map_err(|_| bad())?);
    let month = number(m, "month").map_err(|_| bad())?;
    let day = number(d, "day").map_err(|_| bad())?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(format!("`{}`: no such date", text.escape_debug()));
    }
    let (mut hour, mut minute, mut second) = (0, 0, 0);
    if let Some(clock) = clock {
        let fields: Vec<&str> = clock.split(':').collect();
        if !(2..=3).contains(&fields.len()) || fields.iter().any(|f| f.len() != 2) {
            return Err(bad());
        }
        hour = number(fields[0], "hour").map_err(|_| bad())?;
        minute = number(fields[1], "minute").map_err(|_| bad())?;
        if let Some(s) = fields.get(2) {
            second = number(s, "second").map_err(|_| bad())?;
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err(format!("`{}`: no such time of day", text.escape_debug()));
        }
    }
    Ok(Civil { year, month, day, hour, minute, second }.timestamp())
}

/// Parses a duration such as `90d`, `12h`, `2w`, `30m`, `45s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{}`: expected a number and a unit (s, m, h, d, w), e.g. 90d", text.escape_debug());
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(unit_at);
    let value = u64::from(number(digits, "duration").map_err(|_| bad())?);
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    if value == 0 {
        return Err(format!("`{}`: a duration must be positive", text.escape_debug()));
    }
    Ok(Duration::from_secs(value * scale))
}

/// Parses a point in time given either absolutely (see [`parse_date`]) or as an age
/// relative to `now` (`7d` means seven days ago).
pub fn parse_since(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    if text.contains('-') {
        parse_date(text)
    } else {
        Ok(now.saturating_sub(parse_duration(text)?))
    }
}

/// Parses an expiry given absolutely or as a lifetime from `now` (`+90d` or `90d`).
pub fn parse_expiry(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    if text.contains('-') {
        parse_date(text)
    } else {
        Ok(now.saturating_add(parse_duration(text.strip_prefix('+').unwrap_or(text))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn t(secs: i64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    #[test]
    fn round_trips_across_eras() {
        for secs in [-86_400 * 800_000, -1, 0, 1, 951_782_400, 1_700_000_000, 4_102_444_800, 253_402_300_799] {
            assert_eq!(Civil::from_timestamp(t(secs)).timestamp(), t(secs), "t={secs}");
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(parse_date("1970-01-01"), Ok(Timestamp::EPOCH));
        assert_eq!(parse_date("2000-02-29"), Ok(t(951_782_400)));
        assert_eq!(parse_date("2023-11-14T22:13:20Z"), Ok(t(1_700_000_000)));
        assert_eq!(t(1_700_000_000).to_string(), "2023-11-14T22:13:20Z");
        assert_eq!(format!("{:>22}", t(0)), "  1970-01-01T00:00:00Z", "formatting flags apply");
        assert_eq!(Civil::from_timestamp(t(1_700_000_000)).ssh_timespec(), "20231114221320Z");
    }

    #[test]
    fn arithmetic_saturates_or_says_so() {
        let hour = Duration::from_secs(3600);
        assert_eq!(t(10).saturating_add(hour), t(3610));
        assert_eq!(t(10).saturating_sub(hour), t(-3590));
        assert_eq!(t(i64::MAX - 1).saturating_add(hour), t(i64::MAX));
        assert_eq!(t(i64::MIN + 1).saturating_sub(hour), t(i64::MIN));
        assert_eq!(t(i64::MAX - 1).checked_add(hour), None);
        assert_eq!(t(i64::MIN + 1).checked_sub(hour), None);
        assert_eq!(t(0).checked_add(Duration::MAX), None);
        assert_eq!(t(10).checked_add(Duration::from_millis(1999)), Some(t(11)), "whole seconds");
        assert_eq!(t(3610).saturating_duration_since(t(10)), hour);
        assert_eq!(t(10).saturating_duration_since(t(3610)), Duration::ZERO, "a clock set back");
        assert_eq!(t(10).secs_since(t(3610)), -3600);
        assert_eq!(t(i64::MAX).saturating_duration_since(t(i64::MIN)), Duration::from_secs(i64::MAX as u64));
        assert_eq!(t(-1).days_since_epoch(), -1);
        assert!(t(-1) < Timestamp::EPOCH);
    }

    #[test]
    fn stored_and_serialized_as_the_number() {
        assert_eq!(serde_json::to_string(&Some(t(1_700_000_000))).unwrap(), "1700000000");
        assert_eq!(serde_json::to_string(&t(-5)).unwrap(), "-5");
    }

    #[test]
    fn refuses_bad_dates() {
        for bad in [
            "",
            "2023-02-29",
            "2023-13-01",
            "2023-1-01",
            "2023-01-01T24:00Z",
            "2023-01-01T10:00",
            "+2023-01-01",
            "2023-01-01T1:00:00Z",
            "２０２３-01-01",
            "2023-01-01T10:00:00+01:00",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        for bad in ["", "d", "10", "10y", "-5d", "0d", "1.5d", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_since("1d", t(100_000)), Ok(t(100_000 - 86_400)));
        assert_eq!(parse_expiry("+1h", t(10)), Ok(t(3610)));
    }
}
