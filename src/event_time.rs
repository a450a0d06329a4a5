//! Event time: the invoice timestamp format of SPEC §1 and the names of windows and buckets.
//!
//! An event time is an `i128` of nanoseconds since the Unix epoch, UTC: the format allows
//! nine fraction digits and years 0000..9999, which is more than an `i64` of nanoseconds
//! can hold, and a plain integer keeps comparisons and the lateness arithmetic exact.

use chrono::{DateTime, Datelike, NaiveDate};

/// Nanoseconds since 1970-01-01T00:00:00Z.
pub type EventTime = i128;

pub const NANOS_PER_SEC: i128 = 1_000_000_000;
pub const NANOS_PER_MS: i128 = 1_000_000;
/// Length of a window, seconds.
pub const WINDOW_SECS: i64 = 60;
/// Length of an output bucket (one file), seconds.
pub const BUCKET_SECS: i64 = 600;

/// Why a timestamp string is refused; the text goes into the rejection message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("is not of the form YYYY-MM-DD HH:MM:SS[.fraction][Z|±HH:MM]")]
    Format,
    #[error("is not a valid calendar date or time of day")]
    OutOfRange,
    #[error("falls outside the years 0000..9999 in UTC")]
    YearOutOfRange,
}

fn digits(b: &[u8], at: usize, n: usize) -> Result<u32, TimestampError> {
    let s = b.get(at..at + n).ok_or(TimestampError::Format)?;
    let mut v = 0u32;
    for &c in s {
        if !c.is_ascii_digit() {
            return Err(TimestampError::Format);
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Ok(v)
}

fn expect(b: &[u8], at: usize, c: u8) -> Result<(), TimestampError> {
    if b.get(at) == Some(&c) {
        Ok(())
    } else {
        Err(TimestampError::Format)
    }
}

/// Parses `YYYY-MM-DD(T|t| )HH:MM:SS[.f{1,9}][Z|z|±HH:MM]`; no zone means UTC.
pub fn parse_timestamp(s: &str) -> Result<EventTime, TimestampError> {
    let b = s.as_bytes();
    let year = digits(b, 0, 4)?;
    expect(b, 4, b'-')?;
    let month = digits(b, 5, 2)?;
    expect(b, 7, b'-')?;
    let day = digits(b, 8, 2)?;
    match b.get(10) {
        Some(b'T' | b't' | b' ') => {}
        _ => return Err(TimestampError::Format),
    }
    let hour = digits(b, 11, 2)?;
    expect(b, 13, b':')?;
    let minute = digits(b, 14, 2)?;
    expect(b, 16, b':')?;
    let second = digits(b, 17, 2)?;
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 9 {
            return Err(TimestampError::Format);
        }
        nanos = digits(b, start, n)? * 10u32.pow((9 - n) as u32);
    }
    let offset_secs: i64 = match b.get(i) {
        None => 0,
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits(b, i + 1, 2)?;
            expect(b, i + 3, b':')?;
            let om = digits(b, i + 4, 2)?;
            if oh > 23 || om > 59 {
                return Err(TimestampError::OutOfRange);
            }
            i += 6;
            let o = (oh * 3600 + om * 60) as i64;
            if sign == b'-' {
                -o
            } else {
                o
            }
        }
        Some(_) => return Err(TimestampError::Format),
    };
    if i != b.len() {
        return Err(TimestampError::Format);
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(TimestampError::OutOfRange);
    }
    let date =
        NaiveDate::from_ymd_opt(year as i32, month, day).ok_or(TimestampError::OutOfRange)?;
    let days = date.num_days_from_ce() as i64 - UNIX_EPOCH_DAYS_FROM_CE;
    let local = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64;
    let utc = local - offset_secs;
    if !(MIN_SECS..=MAX_SECS).contains(&utc) {
        return Err(TimestampError::YearOutOfRange);
    }
    Ok(utc as i128 * NANOS_PER_SEC + nanos as i128)
}

/// `NaiveDate::from_ymd(1970,1,1).num_days_from_ce()`.
const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;
/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z in seconds since the epoch.
const MIN_SECS: i64 = -62_167_219_200;
const MAX_SECS: i64 = 253_402_300_799;

/// Start (seconds since the epoch) of the one-minute window holding `t`.
pub fn window_start(t: EventTime) -> i64 {
    t.div_euclid(WINDOW_SECS as i128 * NANOS_PER_SEC) as i64 * WINDOW_SECS
}

/// Start of the 10-minute bucket (file) holding the window that starts at `window_start`.
pub fn bucket_start(window_start: i64) -> i64 {
    window_start.div_euclid(BUCKET_SECS) * BUCKET_SECS
}

fn utc(secs: i64) -> DateTime<chrono::Utc> {
    // Window starts come from parsed timestamps, so they are always within 0000..=9999.
    DateTime::from_timestamp(secs, 0).expect("window start within chrono's range")
}

/// `2020-09-18T10:55:00Z`, the form of `window.start` and `window.end`.
pub fn format_instant(secs: i64) -> String {
    let d = utc(secs);
    format!("{:04}-{}", d.year(), d.format("%m-%dT%H:%M:%SZ"))
}

/// `2020-09-18T10-50`, the file name stem of a bucket.
pub fn bucket_name(bucket_start: i64) -> String {
    let d = utc(bucket_start);
    format!("{:04}-{}", d.year(), d.format("%m-%dT%H-%M"))
}

/// Milliseconds to nanoseconds, for record timestamps and durations.
pub fn ms_to_nanos(ms: i64) -> EventTime {
    ms as i128 * NANOS_PER_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> i128 {
        parse_timestamp(s).unwrap()
    }

    #[test]
    fn accepts_every_form_of_the_spec() {
        let base = secs("2020-09-18 10:55:23");
        assert_eq!(base, 1_600_426_523 * NANOS_PER_SEC);
        assert_eq!(secs("2020-09-18T10:55:23"), base);
        assert_eq!(secs("2020-09-18t10:55:23"), base);
        assert_eq!(secs("2020-09-18 10:55:23Z"), base);
        assert_eq!(secs("2020-09-18 10:55:23z"), base);
        assert_eq!(secs("2020-09-18 12:55:23+02:00"), base);
        assert_eq!(secs("2020-09-18 09:25:23-01:30"), base);
        assert_eq!(secs("2020-09-18 10:55:23.5"), base + 500_000_000);
        assert_eq!(secs("2020-09-18 10:55:23.000000001Z"), base + 1);
        assert_eq!(secs("1969-12-31 23:59:59"), -NANOS_PER_SEC);
        assert_eq!(
            secs("0000-01-01 00:00:00"),
            MIN_SECS as i128 * NANOS_PER_SEC
        );
        assert_eq!(
            secs("9999-12-31 23:59:59.999999999"),
            MAX_SECS as i128 * NANOS_PER_SEC + 999_999_999
        );
        assert_eq!(secs("2020-02-29 00:00:00"), 1_582_934_400 * NANOS_PER_SEC);
    }

    #[test]
    fn refuses_what_the_spec_refuses() {
        use TimestampError::*;
        let e = |s: &str| parse_timestamp(s).unwrap_err();
        assert_eq!(e("2020-09-18 10:55:60"), OutOfRange);
        assert_eq!(e("2020-09-18 24:00:00"), OutOfRange);
        assert_eq!(e("2019-02-29 00:00:00"), OutOfRange);
        assert_eq!(e("2020-13-01 00:00:00"), OutOfRange);
        assert_eq!(e("2020-09-18 10:55"), Format);
        assert_eq!(e("2020-09-18_10:55:23"), Format);
        assert_eq!(e("2020-09-18 10:55:23."), Format);
        assert_eq!(e("2020-09-18 10:55:23.1234567891"), Format);
        assert_eq!(e("2020-09-18 10:55:23+0200"), Format);
        assert_eq!(e("2020-09-18 10:55:23 "), Format);
        assert_eq!(e(" 2020-09-18 10:55:23"), Format);
        assert_eq!(e("+2020-09-18 10:55:23"), Format);
        assert_eq!(e("２020-09-18 10:55:23"), Format);
        assert_eq!(e("0000-01-01 00:30:00+01:00"), YearOutOfRange);
        assert_eq!(e("9999-12-31 23:30:00-01:00"), YearOutOfRange);
    }

    #[test]
    fn windows_and_buckets_floor_correctly() {
        let w = |s: &str| window_start(secs(s));
        assert_eq!(w("2020-09-18 10:55:59.999999999"), 1_600_426_500);
        assert_eq!(w("2020-09-18 10:56:00"), 1_600_426_560);
        assert_eq!(w("1969-12-31 23:59:59.5"), -60);
        assert_eq!(w("1970-01-01 00:00:00"), 0);
        assert_eq!(bucket_start(1_600_426_500), 1_600_426_200);
        assert_eq!(bucket_start(-60), -600);
        assert_eq!(format_instant(1_600_426_500), "2020-09-18T10:55:00Z");
        assert_eq!(bucket_name(1_600_426_200), "2020-09-18T10-50");
        assert_eq!(format_instant(MIN_SECS), "0000-01-01T00:00:00Z");
        assert_eq!(bucket_name(-600), "1969-12-31T23-50");
    }
}
