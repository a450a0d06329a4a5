//! 0002 — the counters move from one bincode value to one key per counter.
//!
//! Before: `meta/counters` = format byte 1 ++ bincode of twelve `u64`s, the rejected ones
//! as an array indexed by the reason's position. After: `meta/counter/<name>` = the count
//! as a big-endian `u64`, for `read`, `accepted`, `rejected/<reason code>` (the seven codes
//! of SPEC §7), `replayed_skipped`, `windows_closed`, `buckets_rendered`; `meta/counters`
//! is deleted.
//!
//! Why: a positional array ties the stored bytes to the order and number of fields and
//! reasons in the code, so adding a counter or a reason would have needed a re-encoding
//! migration each time and a mistake would shift counts silently. Named keys are read by
//! name, a counter added later is simply a new key (absent reads as zero), and any tool
//! that can read RocksDB can read them without bincode.

use super::{Migration, MigrationError, MigrationStore};

pub const MIGRATION: Migration = Migration {
    version: 2,
    name: "counters_as_keys",
    summary: "move the counters from meta/counters (one bincode value) to one meta key per counter (meta/counter/<name>, u64 big-endian)",
    apply,
};

/// Schema 1's counters, frozen: the field order is the bincode order.
#[derive(serde::Deserialize)]
struct CountersV1 {
    read: u64,
    accepted: u64,
    rejected: [u64; 7],
    replayed_skipped: u64,
    windows_closed: u64,
    buckets_rendered: u64,
}

/// Schema 1's order of `CountersV1::rejected`, frozen (SPEC §7's order of the checks).
const REASONS_V1: [&str; 7] = [
    "too_large",
    "invalid_utf8",
    "invalid_json",
    "invalid_invoice",
    "future_timestamp",
    "late",
    "window_closed",
];

/// The format byte schema 1 puts ahead of every bincode value.
const FORMAT_V1: u8 = 1;
/// Format byte plus twelve fixed-size `u64`s.
const LEN_V1: usize = 1 + 12 * 8;

fn apply(s: &mut dyn MigrationStore) -> Result<(), MigrationError> {
    // A store that never committed a checkpoint has no counters yet: nothing to move.
    let Some(old) = s.get("meta", b"counters")? else {
        return Ok(());
    };
    if old.len() != LEN_V1 || old[0] != FORMAT_V1 {
        return Err(MigrationError(format!(
            "meta/counters is {} bytes starting with format byte {:?}; schema 1 writes {LEN_V1} bytes starting with {FORMAT_V1}",
            old.len(),
            old.first()
        )));
    }
    let c: CountersV1 = bincode::deserialize(&old[1..])
        .map_err(|e| MigrationError(format!("meta/counters does not decode: {e}")))?;
    let mut entries = vec![
        ("read".to_owned(), c.read),
        ("accepted".to_owned(), c.accepted),
        ("replayed_skipped".to_owned(), c.replayed_skipped),
        ("windows_closed".to_owned(), c.windows_closed),
        ("buckets_rendered".to_owned(), c.buckets_rendered),
    ];
    for (code, n) in REASONS_V1.iter().zip(c.rejected) {
        entries.push((format!("rejected/{code}"), n));
    }
    for (name, n) in entries {
        s.put(
            "meta",
            format!("counter/{name}").as_bytes(),
            &n.to_be_bytes(),
        )?;
    }
    s.delete("meta", b"counters")
}
