//! 0001 — the initial layout: the six column families of schema version 1.
//!
//! | family | key | value |
//! |---|---|---|
//! | `meta` | name (ASCII) | schema version, checkpoint seq, closed-before, counters |
//! | `partitions` | partition `u32` BE | format byte 1 ++ bincode `PartitionState` |
//! | `open_windows` | window start, `i64` BE with the sign bit flipped | format byte 1 ++ bincode `StoredWindow` |
//! | `closed_windows` | same | same |
//! | `ready_buckets` | bucket start, as window starts | empty |
//! | `rejected` | checkpoint `u64` BE ++ index `u32` BE | format byte 1 ++ bincode `RejectedRecord` |
//!
//! In schema 1 the counters are one value, `meta/counters`: format byte 1 ++ bincode of
//! twelve `u64`s (read, accepted, seven rejected by reason, replayed_skipped,
//! windows_closed, buckets_rendered); 0002 replaces it.
//!
//! Builds before the migrations existed created these families themselves and wrote
//! version 1 directly, so this migration only ever runs on a fresh store, or on one whose
//! very first open was cut short by a kill (some families there, no version yet): creating
//! only the missing families finishes that.

use super::{Migration, MigrationError, MigrationStore};

pub const MIGRATION: Migration = Migration {
    version: 1,
    name: "initial_layout",
    summary: "create the column families meta, partitions, open_windows, closed_windows, ready_buckets, rejected",
    apply,
};

fn apply(s: &mut dyn MigrationStore) -> Result<(), MigrationError> {
    for family in [
        "meta",
        "partitions",
        "open_windows",
        "closed_windows",
        "ready_buckets",
        "rejected",
    ] {
        s.create_family(family)?;
    }
    Ok(())
}
