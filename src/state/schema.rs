//! The stored layout, one schema type per column family (in the manner of aptos'
//! schemadb): each names its family and owns the codecs of its keys and values. Keys are
//! big-endian (signed ones with the sign bit flipped) so that RocksDB's byte order is
//! numeric order and a range of windows is a range of keys; every bincode value starts
//! with a format byte, so that a later layout can tell old values apart.
//!
//! The stored types (`Stored*`) are frozen copies of what is on disk, apart from the live
//! types of the engine: a field added to a live type cannot change what is stored. A
//! layout change is a numbered migration (`migrations/`), never an edit here alone.
//!
//! Pure: no I/O. [`Batch`] collects typed writes; a backend applies them.

use crate::aggregate::partial::Agg;
use crate::aggregate::PartitionState;
use crate::money::Money;
use crate::record::{Reason, RejectedRecord};
use serde::{Deserialize, Serialize};

pub const CF_META: &str = "meta";
pub const CF_PARTITIONS: &str = "partitions";
pub const CF_OPEN: &str = "open_windows";
pub const CF_CLOSED: &str = "closed_windows";
pub const CF_READY: &str = "ready_buckets";
pub const CF_REJECTED: &str = "rejected";
pub const CF_MEMBERS: &str = "window_countries";

/// A column family's keys and values, and their byte forms.
pub trait Schema {
    const FAMILY: &'static str;
    type Key;
    type Value;
    fn encode_key(k: &Self::Key) -> Vec<u8>;
    fn decode_key(b: &[u8]) -> Result<Self::Key, String>;
    fn encode_value(v: &Self::Value) -> Vec<u8>;
    fn decode_value(b: &[u8]) -> Result<Self::Value, String>;
}

/// Encodes an `i64` so that byte order is numeric order.
pub fn encode_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn decode_i64(b: &[u8]) -> Option<i64> {
    let a: [u8; 8] = b.try_into().ok()?;
    Some((u64::from_be_bytes(a) ^ (1 << 63)) as i64)
}

fn decode_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

fn decode_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// A format byte, then `v` in bincode.
fn encode_as<T: Serialize>(format: u8, v: &T) -> Vec<u8> {
    let mut out = vec![format];
    bincode::serialize_into(&mut out, v).expect("serialising to a Vec cannot fail");
    out
}

fn decode_as<T: serde::de::DeserializeOwned>(format: u8, b: &[u8]) -> Result<T, String> {
    match b.split_first() {
        Some((f, body)) if *f == format => bincode::deserialize(body).map_err(|e| e.to_string()),
        Some((f, _)) => Err(format!("unknown value format {f}")),
        None => Err("empty value".into()),
    }
}

/// The format byte of values that have had one layout only.
pub const VALUE_FORMAT: u8 = 1;

// --- meta -----------------------------------------------------------------------------

/// `meta`: named entries (ASCII names), each with a value of its own layout: the schema
/// version, checkpoint number and closed-before as big-endian integers, the counters as
/// `counter/<name>` (`u64` BE; migration 0002), the source and the result settings as
/// JSON. Typed access is [`MetaEntry`].
pub struct Meta;

impl Schema for Meta {
    const FAMILY: &'static str = CF_META;
    type Key = String;
    type Value = Vec<u8>;
    fn encode_key(k: &String) -> Vec<u8> {
        k.as_bytes().to_vec()
    }
    fn decode_key(b: &[u8]) -> Result<String, String> {
        String::from_utf8(b.to_vec()).map_err(|_| "a meta name that is not UTF-8".into())
    }
    fn encode_value(v: &Vec<u8>) -> Vec<u8> {
        v.clone()
    }
    fn decode_value(b: &[u8]) -> Result<Vec<u8>, String> {
        Ok(b.to_vec())
    }
}

/// The `meta` entries and their value types.
pub enum MetaEntry {}

impl MetaEntry {
    pub const SCHEMA: &'static str = "schema_version";
    pub const SEQ: &'static str = "checkpoint_seq";
    pub const CLOSED_BEFORE: &'static str = "closed_before";
    pub const SOURCE: &'static str = "source";
    pub const SETTINGS: &'static str = "settings";
    pub const COUNTER_PREFIX: &'static str = "counter/";

    pub fn u64(v: u64) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }
    pub fn read_u64(b: &[u8]) -> Option<u64> {
        decode_u64(b)
    }
    pub fn i64(v: i64) -> Vec<u8> {
        encode_i64(v).to_vec()
    }
    pub fn read_i64(b: &[u8]) -> Option<i64> {
        decode_i64(b)
    }
    pub fn json<T: Serialize>(v: &T) -> Vec<u8> {
        serde_json::to_vec(v).expect("serialising to a Vec cannot fail")
    }
}

// --- partitions -----------------------------------------------------------------------

/// A partition's state as stored (format byte 1), apart from the live
/// [`PartitionState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPartition {
    pub next_offset: Option<i64>,
    pub max_event_time: Option<i128>,
}

/// `partitions`: partition `u32` BE → [`StoredPartition`].
pub struct Partitions;

impl Schema for Partitions {
    const FAMILY: &'static str = CF_PARTITIONS;
    type Key = u32;
    type Value = PartitionState;
    fn encode_key(k: &u32) -> Vec<u8> {
        k.to_be_bytes().to_vec()
    }
    fn decode_key(b: &[u8]) -> Result<u32, String> {
        decode_u32(b).ok_or_else(|| "bad partition key".into())
    }
    fn encode_value(v: &PartitionState) -> Vec<u8> {
        encode_as(
            VALUE_FORMAT,
            &StoredPartition {
                next_offset: v.next_offset,
                max_event_time: v.max_event_time,
            },
        )
    }
    fn decode_value(b: &[u8]) -> Result<PartitionState, String> {
        let s: StoredPartition = decode_as(VALUE_FORMAT, b)?;
        Ok(PartitionState {
            next_offset: s.next_offset,
            max_event_time: s.max_event_time,
        })
    }
}

// --- window rows ----------------------------------------------------------------------

/// The sums of a window row as stored (format byte 2, schema 3), apart from the live
/// [`Agg`] so that a field added there cannot change what is stored.
#[derive(Serialize, Deserialize)]
pub struct StoredAgg {
    pub opm: u64,
    pub orders: u64,
    pub returns: u64,
    pub total_items: u128,
    pub volume: i128,
}

pub const ROW_FORMAT: u8 = 2;

/// A window row's key: the window start, then the country's bytes (none for the world
/// row, which so sorts first).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RowKey {
    pub window: i64,
    pub country: Option<String>,
}

fn encode_row_key(k: &RowKey) -> Vec<u8> {
    let mut out = encode_i64(k.window).to_vec();
    if let Some(c) = &k.country {
        out.extend_from_slice(c.as_bytes());
    }
    out
}

fn decode_row_key(b: &[u8]) -> Result<RowKey, String> {
    if b.len() < 8 {
        return Err("a key shorter than a window start".into());
    }
    let window = decode_i64(&b[..8]).expect("8 bytes");
    let country = if b.len() == 8 {
        None
    } else {
        Some(
            std::str::from_utf8(&b[8..])
                .map_err(|_| "a country that is not UTF-8".to_owned())?
                .to_owned(),
        )
    };
    Ok(RowKey { window, country })
}

fn encode_row(a: &Agg) -> Vec<u8> {
    encode_as(
        ROW_FORMAT,
        &StoredAgg {
            opm: a.opm,
            orders: a.orders,
            returns: a.returns,
            total_items: a.total_items,
            volume: a.volume.0,
        },
    )
}

fn decode_row(b: &[u8]) -> Result<Agg, String> {
    match b.split_first() {
        Some((&ROW_FORMAT, body)) => {
            let v: StoredAgg = bincode::deserialize(body).map_err(|e| e.to_string())?;
            Ok(Agg {
                opm: v.opm,
                orders: v.orders,
                returns: v.returns,
                total_items: v.total_items,
                volume: Money(v.volume),
            })
        }
        Some((f, _)) => Err(format!("unknown window row format {f}")),
        None => Err("empty value".into()),
    }
}

/// `open_windows`: [`RowKey`] → the world's or the country's [`StoredAgg`].
pub struct OpenRows;

/// `closed_windows`: as [`OpenRows`], for closed windows not written yet.
pub struct ClosedRows;

macro_rules! window_rows {
    ($t:ty, $family:expr) => {
        impl Schema for $t {
            const FAMILY: &'static str = $family;
            type Key = RowKey;
            type Value = Agg;
            fn encode_key(k: &RowKey) -> Vec<u8> {
                encode_row_key(k)
            }
            fn decode_key(b: &[u8]) -> Result<RowKey, String> {
                decode_row_key(b)
            }
            fn encode_value(v: &Agg) -> Vec<u8> {
                encode_row(v)
            }
            fn decode_value(b: &[u8]) -> Result<Agg, String> {
                decode_row(b)
            }
        }
    };
}
window_rows!(OpenRows, CF_OPEN);
window_rows!(ClosedRows, CF_CLOSED);

// --- members, ready buckets -----------------------------------------------------------

/// `window_countries`: window start ++ partition `u32` BE ++ country → empty: the
/// partition brought the country into the open window (SPEC §7's cap).
pub struct Members;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemberKey {
    pub window: i64,
    pub partition: u32,
    pub country: String,
}

impl Schema for Members {
    const FAMILY: &'static str = CF_MEMBERS;
    type Key = MemberKey;
    type Value = ();
    fn encode_key(k: &MemberKey) -> Vec<u8> {
        let mut out = encode_i64(k.window).to_vec();
        out.extend_from_slice(&k.partition.to_be_bytes());
        out.extend_from_slice(k.country.as_bytes());
        out
    }
    fn decode_key(b: &[u8]) -> Result<MemberKey, String> {
        let bad = || "bad window_countries key".to_owned();
        if b.len() < 12 {
            return Err(bad());
        }
        Ok(MemberKey {
            window: decode_i64(&b[..8]).expect("8 bytes"),
            partition: decode_u32(&b[8..12]).expect("4 bytes"),
            country: std::str::from_utf8(&b[12..]).map_err(|_| bad())?.to_owned(),
        })
    }
    fn encode_value(_: &()) -> Vec<u8> {
        Vec::new()
    }
    fn decode_value(_: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// `ready_buckets`: bucket start → empty: its windows are all closed, its files due.
pub struct Ready;

impl Schema for Ready {
    const FAMILY: &'static str = CF_READY;
    type Key = i64;
    type Value = ();
    fn encode_key(k: &i64) -> Vec<u8> {
        encode_i64(*k).to_vec()
    }
    fn decode_key(b: &[u8]) -> Result<i64, String> {
        decode_i64(b).ok_or_else(|| "bad window key".into())
    }
    fn encode_value(_: &()) -> Vec<u8> {
        Vec::new()
    }
    fn decode_value(_: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

// --- rejected records -----------------------------------------------------------------

/// A rejected record as builds before the record limit cut (format byte 1) stored it.
#[derive(Serialize, Deserialize)]
pub struct StoredRejectedV1 {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub reason: Reason,
    pub message: String,
    pub raw: Vec<u8>,
}

/// A rejected record as this build stores it (format byte 2): `raw` may be the start of
/// the record only, `raw_len` its whole length.
#[derive(Serialize, Deserialize)]
pub struct StoredRejectedV2 {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub reason: Reason,
    pub message: String,
    pub raw: Vec<u8>,
    pub raw_len: u64,
}

pub const REJECTED_FORMAT_V2: u8 = 2;

/// `rejected`: (checkpoint `u64` BE, index `u32` BE) → [`RejectedRecord`], format 1
/// ([`StoredRejectedV1`]) or 2 ([`StoredRejectedV2`]).
pub struct Rejected;

impl Schema for Rejected {
    const FAMILY: &'static str = CF_REJECTED;
    type Key = (u64, u32);
    type Value = RejectedRecord;
    fn encode_key(&(seq, index): &(u64, u32)) -> Vec<u8> {
        let mut k = seq.to_be_bytes().to_vec();
        k.extend_from_slice(&index.to_be_bytes());
        k
    }
    fn decode_key(b: &[u8]) -> Result<(u64, u32), String> {
        if b.len() != 12 {
            return Err("bad rejected key".into());
        }
        Ok((
            decode_u64(&b[..8]).expect("8 bytes"),
            decode_u32(&b[8..]).expect("4 bytes"),
        ))
    }
    fn encode_value(r: &RejectedRecord) -> Vec<u8> {
        encode_as(
            REJECTED_FORMAT_V2,
            &StoredRejectedV2 {
                topic: r.topic.clone(),
                partition: r.partition,
                offset: r.offset,
                reason: r.reason,
                message: r.message.clone(),
                raw: r.raw.clone(),
                raw_len: r.raw_len,
            },
        )
    }
    fn decode_value(b: &[u8]) -> Result<RejectedRecord, String> {
        match b.split_first() {
            Some((&VALUE_FORMAT, body)) => {
                let v: StoredRejectedV1 = bincode::deserialize(body).map_err(|e| e.to_string())?;
                Ok(RejectedRecord {
                    raw_len: v.raw.len() as u64,
                    topic: v.topic,
                    partition: v.partition,
                    offset: v.offset,
                    reason: v.reason,
                    message: v.message,
                    raw: v.raw,
                })
            }
            Some((&REJECTED_FORMAT_V2, body)) => {
                let v: StoredRejectedV2 = bincode::deserialize(body).map_err(|e| e.to_string())?;
                Ok(RejectedRecord {
                    topic: v.topic,
                    partition: v.partition,
                    offset: v.offset,
                    reason: v.reason,
                    message: v.message,
                    raw: v.raw,
                    raw_len: v.raw_len,
                })
            }
            Some((f, _)) => Err(format!("unknown rejected record format {f}")),
            None => Err("empty value".into()),
        }
    }
}

// --- batches --------------------------------------------------------------------------

/// One write of a [`Batch`], in bytes, with its family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(&'static str, Vec<u8>, Vec<u8>),
    Delete(&'static str, Vec<u8>),
    /// Every key from the first (inclusive) to the second (exclusive).
    DeleteRange(&'static str, Vec<u8>, Vec<u8>),
}

/// Typed writes that a backend applies together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn put<S: Schema>(&mut self, k: &S::Key, v: &S::Value) {
        self.ops
            .push(Op::Put(S::FAMILY, S::encode_key(k), S::encode_value(v)));
    }

    pub fn delete<S: Schema>(&mut self, k: &S::Key) {
        self.ops.push(Op::Delete(S::FAMILY, S::encode_key(k)));
    }

    /// Deletes the keys from `from` (inclusive) to `to` (exclusive), in byte order.
    pub fn delete_range<S: Schema>(&mut self, from: &S::Key, to: &S::Key) {
        self.ops.push(Op::DeleteRange(
            S::FAMILY,
            S::encode_key(from),
            S::encode_key(to),
        ));
    }

    /// Deletes every key of the window starting at `start` (keys that begin with its 8
    /// bytes: a window's rows, or its members).
    pub fn delete_window<S: Schema>(&mut self, start: i64) {
        self.ops.push(Op::DeleteRange(
            S::FAMILY,
            encode_i64(start).to_vec(),
            encode_i64(start.saturating_add(1)).to_vec(),
        ));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i64_keys_sort_numerically() {
        let vals = [
            i64::MIN,
            -1_600_000_000,
            -61,
            -60,
            -1,
            0,
            1,
            59,
            60,
            1_600_000_000,
            i64::MAX,
        ];
        for w in vals.windows(2) {
            assert!(encode_i64(w[0]) < encode_i64(w[1]), "{} < {}", w[0], w[1]);
        }
        for v in vals {
            assert_eq!(decode_i64(&encode_i64(v)), Some(v));
        }
    }

    #[test]
    fn rejected_keys_sort_by_checkpoint_then_index() {
        assert!(Rejected::encode_key(&(1, u32::MAX)) < Rejected::encode_key(&(2, 0)));
        assert_eq!(
            Rejected::decode_key(&Rejected::encode_key(&(7, 3))),
            Ok((7, 3))
        );
    }

    /// A window's world row sorts before its country rows, and every row of a window
    /// before the next window's: a window is a key range.
    #[test]
    fn row_keys_sort_by_window_then_world_then_country_bytes() {
        let k = |window, c: Option<&str>| {
            OpenRows::encode_key(&RowKey {
                window,
                country: c.map(str::to_owned),
            })
        };
        let keys = [
            k(-60, None),
            k(-60, Some("\u{0}")),
            k(-60, Some("ÿ")),
            k(0, None),
            k(0, Some("B")),
            k(0, Some("a")),
            k(60, None),
        ];
        for w in keys.windows(2) {
            assert!(w[0] < w[1]);
        }
        for key in &keys {
            assert_eq!(
                OpenRows::encode_key(&OpenRows::decode_key(key).unwrap()),
                *key
            );
        }
    }

    #[test]
    fn member_keys_sort_by_window_partition_country() {
        let k = |window, partition, c: &str| {
            Members::encode_key(&MemberKey {
                window,
                partition,
                country: c.into(),
            })
        };
        assert!(k(-1, u32::MAX, "z") < k(0, 0, ""));
        assert!(k(0, 1, "z") < k(0, 2, "a"));
        let key = MemberKey {
            window: 5,
            partition: 9,
            country: "EIRE".into(),
        };
        assert_eq!(Members::decode_key(&Members::encode_key(&key)), Ok(key));
    }

    /// The stored bytes of a partition are those the live type had when it was stored
    /// directly (format 1, bincode of the same fields): stores in the field read as before.
    #[test]
    fn partition_values_keep_their_bytes() {
        let p = PartitionState {
            next_offset: Some(42),
            max_event_time: Some(-7),
        };
        let b = Partitions::encode_value(&p);
        let mut want = vec![1u8, 1];
        want.extend_from_slice(&42i64.to_le_bytes());
        want.push(1);
        want.extend_from_slice(&(-7i128).to_le_bytes());
        assert_eq!(b, want);
        assert_eq!(Partitions::decode_value(&b), Ok(p));
    }

    #[test]
    fn a_window_range_holds_its_rows_and_no_other() {
        let mut b = Batch::default();
        b.delete_window::<Members>(0);
        let Op::DeleteRange(_, from, to) = &b.ops[0] else {
            panic!("{:?}", b.ops)
        };
        let member = |window| {
            Members::encode_key(&MemberKey {
                window,
                partition: 3,
                country: "UK".into(),
            })
        };
        assert!(*from <= member(0) && member(0) < *to);
        assert!(member(-1) < *from && member(1) >= *to);
    }
}
