//! The records aggregate processes write and the merge reads (`docs/DISTRIBUTED.md`
//! "Record format"): JSON, one object per Kafka record, with a version `v` and a `kind`.
//! Pure: no I/O.
//!
//! On the partials topic (one partition, so one order for everything), each aggregate
//! transaction writes zero or more `rejected` records and then one `checkpoint` record:
//! the window sums added since the last transaction, each owned partition's progress and
//! the counts. On the progress topic (compacted, keyed by source partition) it writes the
//! `resume` record of each partition it moved, which the partition's next owner reads.
//!
//! Money and `total_items` are decimal strings of exact integers (money in units of
//! 10^-4), event times nanoseconds since the epoch as decimal strings: JSON numbers would
//! lose them in most readers.

use crate::aggregate::partial::{Agg, WindowAgg};
use crate::aggregate::roles::{Counts, ResumePoint};
use crate::aggregate::{PartitionState, ResultSettings};

/// Result settings as a checkpoint record carries them: name → value as `config check`
/// shows it.
pub fn settings_text(s: &ResultSettings) -> std::collections::BTreeMap<String, String> {
    s.describe()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}
use crate::event_time::EventTime;
use crate::money::Money;
use crate::record::{Reason, RejectedRecord};
use serde::{Deserialize, Serialize};

/// The version this build writes. A merge reads this version and the one before it, so
/// that aggregate processes can be upgraded one at a time with the merge upgraded first.
pub const VERSION: u32 = 1;
/// The oldest version this build reads.
pub const OLDEST_READ: u32 = 1;

/// Rejected records per `rejected` record. A rejected record keeps its whole raw bytes
/// (up to `--max-record-bytes`, 1 MiB by default; 64 KiB of a too-large one), twice that
/// as hex: three stay under the partials topic's 8 MiB `max.message.bytes` with the default
/// limit, not with a limit raised past about 1.3 MiB (README "Running on several machines").
pub const REJECTED_PER_RECORD: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    Checkpoint(Checkpoint),
    Rejected(RejectedChunk),
    Resume(Resume),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Envelope {
    v: u32,
    #[serde(flatten)]
    body: Body,
}

/// One aggregate transaction's window sums and progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The input topic and how many partitions it had when the sender last looked.
    pub topic: String,
    pub partition_count: u32,
    /// The sender's result settings (`ResultSettings::describe`): a merge with others
    /// refuses the record.
    pub settings: std::collections::BTreeMap<String, String>,
    /// Who sent it (the transactional id), for people reading the topic.
    pub sender: String,
    pub progress: Vec<Progress>,
    pub windows: Vec<WindowSums>,
    pub counts: CountsJson,
}

/// A source partition as its owner committed it with this transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub partition: u32,
    /// The next offset the owner reads.
    pub next_offset: i64,
    /// M_p, nanoseconds; `None`: nothing accepted yet (−∞).
    pub max_event_time: Option<String>,
    /// A bounded run's end offset for the partition.
    pub end_offset: Option<i64>,
    /// Wall-clock ms when the owner last read a record of the partition.
    pub last_record_ms: Option<i64>,
    /// Wall-clock ms when the brokers last confirmed that the owner had read everything.
    pub caught_up_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSums {
    /// Window start, seconds since the epoch.
    pub start: i64,
    pub world: Sums,
    /// Countries in byte order.
    pub countries: Vec<(String, Sums)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sums {
    pub opm: u64,
    pub orders: u64,
    pub returns: u64,
    pub total_items: String,
    /// Σ total_cost in units of 10^-4.
    pub volume_e4: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountsJson {
    pub read: u64,
    pub accepted: u64,
    /// Reason code → records, only the reasons that occurred.
    pub rejected: std::collections::BTreeMap<String, u64>,
}

/// Rejected records of the transaction, in offset order per partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedChunk {
    pub records: Vec<RejectedJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedJson {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub reason: String,
    pub message: String,
    /// The kept bytes, lowercase hex.
    pub raw_hex: String,
    pub raw_len: u64,
}

/// What a partition's next owner resumes from (the progress topic, key: the partition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub topic: String,
    pub partition: u32,
    pub next_offset: Option<i64>,
    pub max_event_time: Option<String>,
    pub end_offset: Option<i64>,
    /// Window start → the partition's countries in it (the cap), for the windows an
    /// invoice of the partition could still reach.
    pub members: Vec<(i64, Vec<String>)>,
}

/// A record a merge or an aggregate process cannot read: our own data, never skipped.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not a partials record: {0}")]
    Json(String),
    #[error("partials record of version {found}; this build reads versions {oldest} to {newest}: upgrade the merge before the aggregate processes")]
    Version {
        found: u32,
        oldest: u32,
        newest: u32,
    },
    #[error("partials record with a bad field: {0}")]
    Field(String),
}

pub fn encode(body: &Body) -> Vec<u8> {
    serde_json::to_vec(&Envelope {
        v: VERSION,
        body: body.clone(),
    })
    .expect("serialising to a Vec cannot fail")
}

pub fn decode(bytes: &[u8]) -> Result<Body, FormatError> {
    #[derive(Deserialize)]
    struct Version {
        v: u32,
    }
    let v: Version = serde_json::from_slice(bytes).map_err(|e| FormatError::Json(e.to_string()))?;
    if !(OLDEST_READ..=VERSION).contains(&v.v) {
        return Err(FormatError::Version {
            found: v.v,
            oldest: OLDEST_READ,
            newest: VERSION,
        });
    }
    let e: Envelope =
        serde_json::from_slice(bytes).map_err(|e| FormatError::Json(e.to_string()))?;
    Ok(e.body)
}

fn field<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, FormatError> {
    s.parse()
        .map_err(|_| FormatError::Field(format!("{what} {s:?} is not an integer")))
}

pub fn time_text(t: Option<EventTime>) -> Option<String> {
    t.map(|t| t.to_string())
}

pub fn time_value(t: &Option<String>) -> Result<Option<EventTime>, FormatError> {
    t.as_deref().map(|s| field("max_event_time", s)).transpose()
}

impl Sums {
    pub fn of(a: &Agg) -> Sums {
        Sums {
            opm: a.opm,
            orders: a.orders,
            returns: a.returns,
            total_items: a.total_items.to_string(),
            volume_e4: a.volume.0.to_string(),
        }
    }

    pub fn agg(&self) -> Result<Agg, FormatError> {
        Ok(Agg {
            opm: self.opm,
            orders: self.orders,
            returns: self.returns,
            total_items: field("total_items", &self.total_items)?,
            volume: Money(field("volume_e4", &self.volume_e4)?),
        })
    }
}

impl WindowSums {
    pub fn of(start: i64, w: &WindowAgg) -> WindowSums {
        WindowSums {
            start,
            world: Sums::of(&w.world),
            countries: w
                .sorted_countries()
                .into_iter()
                .map(|(c, a)| (c.to_owned(), Sums::of(a)))
                .collect(),
        }
    }

    pub fn window(&self) -> Result<WindowAgg, FormatError> {
        let mut w = WindowAgg {
            world: self.world.agg()?,
            ..WindowAgg::default()
        };
        for (c, s) in &self.countries {
            if w.countries.insert(c.as_str().into(), s.agg()?).is_some() {
                return Err(FormatError::Field(format!(
                    "window {}: country {c:?} twice",
                    self.start
                )));
            }
        }
        Ok(w)
    }
}

impl CountsJson {
    pub fn of(c: &Counts) -> CountsJson {
        CountsJson {
            read: c.read,
            accepted: c.accepted,
            rejected: Reason::ALL
                .iter()
                .filter(|r| c.rejected[r.index()] > 0)
                .map(|r| (r.code().to_owned(), c.rejected[r.index()]))
                .collect(),
        }
    }

    pub fn counts(&self) -> Result<Counts, FormatError> {
        let mut rejected = [0; 7];
        for (code, n) in &self.rejected {
            let r = Reason::ALL
                .iter()
                .find(|r| r.code() == code)
                .ok_or_else(|| FormatError::Field(format!("unknown reason {code:?}")))?;
            rejected[r.index()] = *n;
        }
        Ok(Counts {
            read: self.read,
            accepted: self.accepted,
            rejected,
        })
    }
}

impl RejectedJson {
    pub fn of(r: &RejectedRecord) -> RejectedJson {
        RejectedJson {
            topic: r.topic.clone(),
            partition: r.partition,
            offset: r.offset,
            reason: r.reason.code().to_owned(),
            message: r.message.clone(),
            raw_hex: hex(&r.raw),
            raw_len: r.raw_len,
        }
    }

    pub fn record(&self) -> Result<RejectedRecord, FormatError> {
        let reason = *Reason::ALL
            .iter()
            .find(|r| r.code() == self.reason)
            .ok_or_else(|| FormatError::Field(format!("unknown reason {:?}", self.reason)))?;
        Ok(RejectedRecord {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            reason,
            message: self.message.clone(),
            raw: unhex(&self.raw_hex)
                .ok_or_else(|| FormatError::Field("raw_hex is not hex".into()))?,
            raw_len: self.raw_len,
        })
    }
}

impl Resume {
    pub fn of(topic: &str, p: u32, point: &ResumePoint, end_offset: Option<i64>) -> Resume {
        Resume {
            topic: topic.to_owned(),
            partition: p,
            next_offset: point.state.next_offset,
            max_event_time: time_text(point.state.max_event_time),
            end_offset,
            members: point.members.clone(),
        }
    }

    pub fn point(&self) -> Result<ResumePoint, FormatError> {
        Ok(ResumePoint {
            state: PartitionState {
                next_offset: self.next_offset,
                max_event_time: time_value(&self.max_event_time)?,
            },
            members: self.members.clone(),
        })
    }
}

fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ResultSettings {
        ResultSettings {
            grace_ns: 60_000_000_000,
            max_future_skew_ns: 3_600_000_000_000,
            max_record_bytes: 1 << 20,
            max_items: 10_000,
            max_countries: 1000,
        }
    }

    #[test]
    fn a_checkpoint_round_trips_with_exact_sums() {
        let mut w = WindowAgg {
            world: Agg {
                opm: 3,
                orders: 2,
                returns: 1,
                total_items: u128::MAX,
                volume: Money(-170_141_183_460_469_231_731_687_303_715_884_105_728),
            },
            ..WindowAgg::default()
        };
        w.countries.insert("United Kingdom".into(), w.world);
        let body = Body::Checkpoint(Checkpoint {
            topic: "invoices".into(),
            partition_count: 6,
            settings: settings_text(&settings()),
            sender: "g-1".into(),
            progress: vec![Progress {
                partition: 4,
                next_offset: 1000,
                max_event_time: time_text(Some(1_600_426_523_000_000_001)),
                end_offset: None,
                last_record_ms: Some(5),
                caught_up_ms: None,
            }],
            windows: vec![WindowSums::of(1_600_426_500, &w)],
            counts: CountsJson::of(&Counts {
                read: 4,
                accepted: 3,
                rejected: [0, 0, 0, 0, 0, 1, 0],
            }),
        });
        let bytes = encode(&body);
        let back = decode(&bytes).unwrap();
        assert_eq!(back, body);
        let Body::Checkpoint(c) = back else { panic!() };
        assert_eq!(c.windows[0].window().unwrap(), w);
        assert_eq!(c.counts.counts().unwrap().rejected[Reason::Late.index()], 1);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with(r#"{"v":1,"kind":"checkpoint""#), "{text}");
    }

    #[test]
    fn rejected_raw_bytes_survive_as_hex() {
        let r = RejectedRecord {
            topic: "t".into(),
            partition: 1,
            offset: 9,
            reason: Reason::InvalidUtf8,
            message: "m".into(),
            raw: vec![0, 0xff, b'{', 0x80],
            raw_len: 4,
        };
        let j = RejectedJson::of(&r);
        assert_eq!(j.raw_hex, "00ff7b80");
        assert_eq!(j.record().unwrap(), r);
    }

    #[test]
    fn unknown_versions_and_bad_fields_are_errors_not_skips() {
        let e = decode(br#"{"v":2,"kind":"rejected","records":[]}"#).unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
        assert!(decode(b"garbage").is_err());
        let s = Sums {
            opm: 1,
            orders: 1,
            returns: 0,
            total_items: "1.5".into(),
            volume_e4: "0".into(),
        };
        assert!(s.agg().is_err());
    }
}
