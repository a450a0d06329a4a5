//! The bytes of the output files (SPEC §5) and of the rejected sink (§7). Pure.

use crate::aggregate::partial::{Agg, WindowAgg};
use crate::event_time::{format_instant, WINDOW_SECS};
use crate::record::RejectedRecord;
use std::fmt::Write as _;

/// The two KPI families, each a folder of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Time,
    Country,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::Time, Family::Country];

    pub fn folder(self) -> &'static str {
        match self {
            Family::Time => "time_kpi",
            Family::Country => "country_kpi",
        }
    }

    /// The object name of bucket `bucket_start`'s file of this family in `encoding`.
    pub fn object(self, bucket_start: i64, encoding: crate::sink::Encoding) -> String {
        format!(
            "{}/{}.{}",
            self.folder(),
            crate::event_time::bucket_name(bucket_start),
            encoding.extension()
        )
    }
}

/// How every line of window `start` begins, in both families: readers of the files (the
/// KPI API) find a window's lines by it.
pub fn line_prefix(start: i64) -> String {
    format!("{{\"window\":{{\"start\":\"{}\"", format_instant(start))
}

fn window_prefix(out: &mut String, start: i64) {
    out.push_str(&line_prefix(start));
    let _ = write!(
        out,
        ",\"end\":\"{}\"}}",
        format_instant(start + WINDOW_SECS)
    );
}

fn counts(out: &mut String, a: &Agg) {
    let _ = writeln!(
        out,
        ",\"orders\":{},\"returns\":{},\"total_items\":{}}}",
        a.orders, a.returns, a.total_items
    );
}

/// One file's bytes for `family`, from a bucket's windows in start order.
pub fn render_bucket(family: Family, windows: &[(i64, &WindowAgg)]) -> Vec<u8> {
    let mut out = String::with_capacity(256 * windows.len());
    for (start, w) in windows {
        match family {
            Family::Time => {
                let a = &w.world;
                window_prefix(&mut out, *start);
                let _ = write!(
                    out,
                    ",\"OPM\":{},\"total_sale_volume\":{},\"average_transaction_size\":{},\"rate_of_return\":{}",
                    a.opm,
                    a.volume,
                    a.average_transaction_size(),
                    a.rate_of_return()
                );
                counts(&mut out, a);
            }
            Family::Country => {
                for (country, a) in w.sorted_countries() {
                    window_prefix(&mut out, *start);
                    out.push_str(",\"country\":");
                    out.push_str(&serde_json::to_string(country).expect("a str always serialises"));
                    let _ = write!(
                        out,
                        ",\"OPM\":{},\"total_sale_volume\":{},\"rate_of_return\":{}",
                        a.opm,
                        a.volume,
                        a.rate_of_return()
                    );
                    counts(&mut out, a);
                }
            }
        }
    }
    out.into_bytes()
}

/// The raw bytes of a record as text: UTF-8 as it is, any other byte as `\xNN`.
pub fn escape_raw(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
    out
}

/// One JSON line of the rejected sink.
pub fn render_rejected(records: &[RejectedRecord]) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        topic: &'a str,
        partition: u32,
        offset: i64,
        reason: &'static str,
        message: &'a str,
        raw: String,
        raw_bytes: u64,
        /// Present (and true) only when `raw` is the start of a too-large record.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        raw_truncated: bool,
    }
    let mut out = Vec::new();
    for r in records {
        let line = Line {
            topic: &r.topic,
            partition: r.partition,
            offset: r.offset,
            reason: r.reason.code(),
            message: &r.message,
            raw: escape_raw(&r.raw),
            raw_bytes: r.raw_len,
            raw_truncated: r.raw_truncated(),
        };
        serde_json::to_writer(&mut out, &line).expect("writing JSON to a Vec cannot fail");
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::money::Money;
    use crate::record::Reason;

    /// A window's row with `returns` of its `opm` invoices returns (shared with the
    /// Parquet tests).
    pub(crate) fn agg(opm: u64, returns: u64, volume: i128, items: u128) -> Agg {
        Agg {
            opm,
            orders: opm - returns,
            returns,
            total_items: items,
            volume: Money(volume),
        }
    }

    #[test]
    fn the_spec_line_exactly() {
        // 345.67 / 12 = 28.805833.. -> 28.8058; 1/12 = 0.08333 -> 0.0833
        let w = WindowAgg {
            world: agg(12, 1, 3_456_700, 87),
            ..WindowAgg::default()
        };
        let start = 1_600_426_500; // 2020-09-18T10:55:00Z
        let got = String::from_utf8(render_bucket(Family::Time, &[(start, &w)])).unwrap();
        assert_eq!(
            got,
            "{\"window\":{\"start\":\"2020-09-18T10:55:00Z\",\"end\":\"2020-09-18T10:56:00Z\"},\"OPM\":12,\"total_sale_volume\":345.67,\"average_transaction_size\":28.8058,\"rate_of_return\":0.0833,\"orders\":11,\"returns\":1,\"total_items\":87}\n"
        );
    }

    #[test]
    fn country_rows_sorted_and_escaped() {
        let mut w = WindowAgg::default();
        w.countries
            .insert("b\"\u{1}é".into(), agg(1, 1, -25_000, 2));
        w.countries.insert("EIRE".into(), agg(2, 0, 1_000_000, 3));
        let got = String::from_utf8(render_bucket(Family::Country, &[(0, &w)])).unwrap();
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], "{\"window\":{\"start\":\"1970-01-01T00:00:00Z\",\"end\":\"1970-01-01T00:01:00Z\"},\"country\":\"EIRE\",\"OPM\":2,\"total_sale_volume\":100,\"rate_of_return\":0,\"orders\":2,\"returns\":0,\"total_items\":3}");
        assert_eq!(lines[1], "{\"window\":{\"start\":\"1970-01-01T00:00:00Z\",\"end\":\"1970-01-01T00:01:00Z\"},\"country\":\"b\\\"\\u0001é\",\"OPM\":1,\"total_sale_volume\":-2.5,\"rate_of_return\":1,\"orders\":0,\"returns\":1,\"total_items\":2}");
        assert!(got.ends_with('\n'));
    }

    #[test]
    fn raw_bytes_are_escaped_not_lost() {
        assert_eq!(escape_raw(b"ok \xff\xfe \xc3\xa9"), "ok \\xFF\\xFE é");
        let r = RejectedRecord {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            reason: Reason::InvalidUtf8,
            message: "m".into(),
            raw: b"{\"a\":\"\xff\"}".to_vec(),
            raw_len: 9,
        };
        let line = String::from_utf8(render_rejected(&[r])).unwrap();
        assert_eq!(line, "{\"topic\":\"t\",\"partition\":0,\"offset\":7,\"reason\":\"invalid_utf8\",\"message\":\"m\",\"raw\":\"{\\\"a\\\":\\\"\\\\xFF\\\"}\",\"raw_bytes\":9}\n");
    }
}
