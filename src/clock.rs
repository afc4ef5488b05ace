//! Where "now" comes from. Everything that stamps or schedules takes a
//! [`Clock`], so tests run the real loops on tokio's paused clock and replay
//! runs on recorded time.

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one place that reads the wall clock (clippy.toml).
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time that follows tokio's clock from a fixed origin: under
/// `#[tokio::test(start_paused = true)]` it advances only when tokio's does.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: DateTime<Utc>,
    base: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(origin: DateTime<Utc>) -> Self {
        TokioClock {
            origin,
            base: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.base;
        self.origin + chrono::Duration::from_std(elapsed).expect("elapsed time fits")
    }
}

/// A moment as people write it: RFC 3339 (`2026-04-26T11:00:00Z`), a date
/// (`2026-04-26`: midnight UTC), or an age counted back from `now` (`90m`,
/// `24h`, `7d`). Never panics: an age past the calendar's range is an error.
pub fn parse_moment(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    match humantime::parse_duration(s) {
        Ok(age) => chrono::Duration::from_std(age)
            .ok()
            .and_then(|age| now.checked_sub_signed(age))
            .ok_or_else(|| format!("{s:?} reaches back further than any date")),
        Err(_) => Err(format!(
            "{s:?} is neither an RFC 3339 time (2026-04-26T11:00:00Z), a date (2026-04-26) nor an age such as 24h"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn moments_as_people_write_them() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        let t = |s| parse_moment(s, now);
        assert_eq!(
            t("2026-04-26T11:00:00Z"),
            Ok(Utc.with_ymd_and_hms(2026, 4, 26, 11, 0, 0).unwrap())
        );
        assert_eq!(
            t("2026-04-26T13:00:00+02:00"),
            Ok(Utc.with_ymd_and_hms(2026, 4, 26, 11, 0, 0).unwrap())
        );
        assert_eq!(
            t("2026-04-26"),
            Ok(Utc.with_ymd_and_hms(2026, 4, 26, 0, 0, 0).unwrap())
        );
        assert_eq!(
            t(" 24h "),
            Ok(Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap())
        );
        assert_eq!(
            t("90m"),
            Ok(Utc.with_ymd_and_hms(2026, 12, 1, 10, 30, 0).unwrap())
        );
        let far = t("99999999999h").unwrap_err();
        assert!(far.contains("reaches back further"), "{far}");
        assert!(t("18446744073709551615s").is_err());
        assert!(t("yesterday").unwrap_err().contains("neither"));
        assert!(t("2026-13-01").is_err());
    }
}
