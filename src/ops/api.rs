//! The KPI API beside the live page: `/api/v1/kpi` gives closed rows exactly as the files
//! hold them, `/api/v1/state` what `state inspect --json` gives.
//!
//! Both read the store through a RocksDB secondary instance (`Store::open_secondary`), as
//! `state inspect` does on a running job: what they show is committed, the job's lock and
//! writes are untouched. The instance is opened for one request and closed after it, one
//! request at a time: a secondary instance keeps every table file of the store open, and
//! held for the life of the job it would take file handles the job needs. A closed minute is in the store until its 10-minute file is
//! written, and in the file after: so a bucket's rows come from its file when the file is
//! there, else from the store. The store is read first: a bucket whose file is absent
//! after that read had its windows in the store during it (the job deletes them only after
//! the file is in place).

use crate::aggregate::partial::WindowAgg;
use crate::event_time::{bucket_start, BUCKET_SECS, WINDOW_SECS};
use crate::sink::render::{line_prefix, render_bucket, Family};
use crate::sink::Encoding;
use crate::state::{StateError, Store};
use std::path::PathBuf;
use std::sync::Mutex;

/// The widest range one request may ask for: a day is 144 files per family, a few
/// megabytes of country rows for a busy shop, built in memory for one answer.
pub const MAX_RANGE_SECS: i64 = 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong: answered 400 with this message.
    #[error("{0}")]
    BadRequest(String),
    #[error("cannot read the committed state: {0}")]
    State(#[from] StateError),
    #[error("cannot read the output file {path}: {source}; check that the job's user may read the output folder")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::State(_) => 503,
            ApiError::Output { .. } => 500,
        }
    }
}

/// What `/api/v1/kpi` is asked: one family, windows starting in `[from, to)` (nanoseconds
/// since the epoch, so that a bound between two seconds is exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KpiQuery {
    pub family: Family,
    pub from_ns: i128,
    pub to_ns: i128,
}

const USAGE: &str = "usage: /api/v1/kpi?family=time|country&from=RFC3339&to=RFC3339 (for example from=2020-09-18T10:00:00Z&to=2020-09-18T11:00:00Z; at most a day)";

impl KpiQuery {
    /// Parses the query string (after `?`).
    pub fn parse(query: &str) -> Result<KpiQuery, ApiError> {
        let bad = |m: String| ApiError::BadRequest(format!("{m}; {USAGE}"));
        let (mut family, mut from, mut to) = (None, None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let escape = |t: &str| {
                bad(format!(
                    "{t:?} has a bad escape: write a byte as %XX with two hex digits, of UTF-8 text"
                ))
            };
            let k = percent_decode(k).ok_or_else(|| escape(k))?;
            let v = percent_decode(v).ok_or_else(|| escape(v))?;
            let slot = match k.as_str() {
                "family" => &mut family,
                "from" => &mut from,
                "to" => &mut to,
                other => return Err(bad(format!("unknown parameter {other:?}"))),
            };
            if slot.replace(v).is_some() {
                return Err(bad(format!("parameter {k} given twice")));
            }
        }
        let family = match family.as_deref() {
            Some("time") => Family::Time,
            Some("country") => Family::Country,
            Some(other) => {
                return Err(bad(format!(
                    "family must be time or country, not {other:?}"
                )))
            }
            None => return Err(bad("family is missing".into())),
        };
        let instant = |name: &str, v: Option<String>| -> Result<i128, ApiError> {
            let v = v.ok_or_else(|| bad(format!("{name} is missing")))?;
            let t = chrono::DateTime::parse_from_rfc3339(&v)
                .map_err(|e| bad(format!("{name}={v:?} is not an RFC 3339 time ({e})")))?;
            Ok(t.timestamp() as i128 * 1_000_000_000 + t.timestamp_subsec_nanos() as i128)
        };
        let (from_ns, to_ns) = (instant("from", from)?, instant("to", to)?);
        if from_ns >= to_ns {
            return Err(bad("from must be before to".into()));
        }
        if to_ns - from_ns > MAX_RANGE_SECS as i128 * 1_000_000_000 {
            return Err(bad("the range is longer than a day".into()));
        }
        Ok(KpiQuery {
            family,
            from_ns,
            to_ns,
        })
    }

    fn holds(&self, window_start: i64) -> bool {
        let ns = window_start as i128 * 1_000_000_000;
        self.from_ns <= ns && ns < self.to_ns
    }

    /// The buckets that may hold a window of the range, in order.
    fn buckets(&self) -> impl Iterator<Item = i64> {
        let secs = |ns: i128| ns.div_euclid(1_000_000_000) as i64;
        let first = bucket_start(secs(self.from_ns));
        // The last instant in the range (`to` is excluded).
        let last = secs(self.to_ns - 1);
        (0..)
            .map(move |i| first + i * BUCKET_SECS)
            .take_while(move |b| *b <= last)
    }
}

/// `%XX` escapes decoded; `None` for a broken escape or text that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            // from_str_radix alone would take a sign ("%+1").
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The API's access to the job's store and output.
#[derive(Debug)]
pub struct Api {
    state: PathBuf,
    /// The folder of the JSON files, when the output is a folder with JSON files; other
    /// outputs are served from the store only (minutes whose file is written are not).
    files: Option<PathBuf>,
    /// One secondary instance at a time, whatever the number of HTTP threads.
    reading: Mutex<()>,
}

impl Api {
    pub fn new(state: PathBuf, files: Option<PathBuf>) -> Api {
        Api {
            state,
            files,
            reading: Mutex::new(()),
        }
    }

    /// Runs `f` on a secondary instance opened for it: it sees the job's last commit.
    fn with_store<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let _one = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        f(&Store::open_secondary(&self.state)?)
    }

    /// `/api/v1/state`: the JSON of `state inspect --json`.
    pub fn state(&self) -> Result<serde_json::Value, ApiError> {
        Ok(self.with_store(crate::state::report::describe)?)
    }

    /// `/api/v1/kpi`: the closed rows of the range as JSON lines, byte for byte as in the
    /// files, in window order (and country order within a window).
    pub fn kpi(&self, q: &KpiQuery) -> Result<Vec<u8>, ApiError> {
        let closed: Vec<(i64, WindowAgg)> = self.with_store(|s| {
            let r = s.load()?;
            Ok(r.closed.into_iter().filter(|(w, _)| q.holds(*w)).collect())
        })?;
        let mut out = Vec::new();
        for b in q.buckets() {
            if let Some(bytes) = self.file_rows(q, b)? {
                out.extend_from_slice(&bytes);
                continue;
            }
            let windows: Vec<(i64, &WindowAgg)> = closed
                .iter()
                .filter(|(w, _)| bucket_start(*w) == b)
                .map(|(w, a)| (*w, a))
                .collect();
            out.extend_from_slice(&render_bucket(q.family, &windows));
        }
        Ok(out)
    }

    /// The lines of bucket `b`'s file in the range, or `None` when there is no such file.
    fn file_rows(&self, q: &KpiQuery, b: i64) -> Result<Option<Vec<u8>>, ApiError> {
        let Some(dir) = &self.files else {
            return Ok(None);
        };
        let path = dir.join(q.family.object(b, Encoding::Json));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ApiError::Output { path, source }),
        };
        // Each line starts with its window: keep those of the range.
        let prefixes: Vec<String> = (0..BUCKET_SECS / WINDOW_SECS)
            .map(|i| b + i * WINDOW_SECS)
            .filter(|w| q.holds(*w))
            .map(line_prefix)
            .collect();
        let mut out = Vec::new();
        for line in bytes.split_inclusive(|c| *c == b'\n') {
            if prefixes.iter().any(|p| line.starts_with(p.as_bytes())) {
                out.extend_from_slice(line);
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(q: &str) -> String {
        match KpiQuery::parse(q) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{q}: {other:?}"),
        }
    }

    #[test]
    fn parses_a_query_and_refuses_bad_ones_with_a_reason() {
        let q = KpiQuery::parse(
            "family=country&from=2020-09-18T10:00:00Z&to=2020-09-18T10%3A20:00%2B00:00",
        )
        .unwrap();
        assert_eq!(q.family, Family::Country);
        let t0 = 1_600_423_200i64;
        assert_eq!(q.from_ns, t0 as i128 * 1_000_000_000);
        assert_eq!(q.to_ns, (t0 + 1200) as i128 * 1_000_000_000);
        // `to` on a bucket's start: that bucket holds no window of the range.
        assert_eq!(q.buckets().collect::<Vec<_>>(), [t0, t0 + 600]);
        assert!(q.holds(t0) && q.holds(t0 + 1140) && !q.holds(t0 + 1200));
        assert!(
            bad("from=2020-09-18T10:00:00Z&to=2020-09-18T11:00:00Z").contains("family is missing")
        );
        assert!(bad("family=world&from=a&to=b").contains("time or country"));
        assert!(
            bad("family=time&from=yesterday&to=2020-09-18T11:00:00Z").contains("not an RFC 3339")
        );
        assert!(
            bad("family=time&from=2020-09-18T11:00:00Z&to=2020-09-18T10:00:00Z").contains("before")
        );
        assert!(bad("family=time&family=time").contains("twice"));
        assert!(bad("family=time&x=1").contains("unknown parameter"));
        assert!(bad("family=%zz").contains("bad escape"));
        assert!(bad("family=%+1").contains("bad escape"));
        assert!(
            KpiQuery::parse("fam%69ly=time&from=2020-09-18T10:00:00Z&to=2020-09-18T10:00:01Z")
                .is_ok()
        );
        assert!(
            bad("family=time&from=2020-09-01T00:00:00Z&to=2020-09-02T00:00:01Z")
                .contains("longer than a day")
        );
        assert!(bad("").contains("usage"));
    }

    #[test]
    fn a_bound_between_seconds_is_exact() {
        let q = KpiQuery::parse(
            "family=time&from=2020-09-18T10:00:00.5Z&to=2020-09-18T10:01:00.000000001Z",
        )
        .unwrap();
        let t0 = 1_600_423_200i64;
        assert!(!q.holds(t0) && q.holds(t0 + 60));
    }
}
