//! Calendar arithmetic, and timestamps read with the decoder's own parser.

/// The date of a day since 1970-01-01 (H. Hinnant's algorithm).
pub(super) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A timestamp by SPEC §1, in ms since the epoch (a finer fraction is floored): the
/// decoder's own parser, so that the generator never writes a time the job reads otherwise.
pub(super) fn parse_timestamp(b: &[u8]) -> Result<i64, &'static str> {
    use crate::event_time::TimestampError;
    let s = std::str::from_utf8(b).map_err(|_| "it is not UTF-8")?;
    match crate::event_time::parse_timestamp(s) {
        Ok(ns) => Ok(ns.div_euclid(1_000_000) as i64),
        Err(TimestampError::Format) => {
            Err("it is not of the form YYYY-MM-DD HH:MM:SS[.fraction][Z|±HH:MM]")
        }
        Err(TimestampError::OutOfRange) => Err("the date or time of day does not exist"),
        Err(TimestampError::YearOutOfRange) => Err("the year in UTC is outside 0000..9999"),
    }
}
