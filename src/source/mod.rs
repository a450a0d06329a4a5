//! What the job needs of a source, whatever it reads: records with their partition and
//! offset, where to resume, and which partitions are idle or finished.

pub mod file;
pub mod kafka;

use crate::record::SourceRecord;
use std::collections::{BTreeMap, BTreeSet};

/// What a store records of the input it read (SPEC §6), so that a restart can tell the
/// same input from another one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SourceIdentity {
    /// A Kafka topic: its name, and its id when the brokers gave it (a topic deleted and
    /// created again has the same name and another id).
    Kafka {
        topic: String,
        topic_id: Option<String>,
    },
    /// A JSON-lines input: the fingerprint of the bytes read so far.
    File {
        /// Bytes read (every record's line with its newline).
        bytes: u64,
        /// XXH3-128 of those bytes. (A last line without its newline is in both; bytes
        /// added to it later make the read part longer, which is a change.)
        hash: u128,
    },
    /// The merge role's input (`crate::distributed`): the partials topic and the next
    /// offset to read in it, the input topic the partials are about, and the end offsets
    /// of a bounded run as the aggregate processes reported them.
    Partials {
        topic: String,
        next_offset: i64,
        input_topic: Option<String>,
        end_offsets: BTreeMap<u32, i64>,
    },
}

/// Records that the source will never deliver, found where the job resumed or while it
/// ran (SPEC §6, `--on-data-loss continue`); the job writes each to `<out>/gaps/`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Gap {
    pub topic: String,
    pub partition: u32,
    /// The first offset missing: the committed next offset.
    pub first_missing: i64,
    /// The last offset missing; `None` when the partition was re-created and how many of
    /// its old records were never read cannot be known.
    pub last_missing: Option<i64>,
    /// Where reading goes on: the earliest offset the broker has.
    pub resume_at: i64,
    /// Why the records are gone, for a person.
    pub why: String,
    /// When the job found it, RFC 3339.
    pub found_at: String,
}

/// The store was written by a job reading another source (another topic, or a file where
/// a topic is given): a settings problem, exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceMismatch(pub String);

/// What one poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Some records were handed over (possibly none if the wait ran out).
    Records(usize),
    /// A bounded source has handed over everything it will.
    End,
}

/// An error of a source, with the advice the user needs; boxed so that each source keeps
/// its own error type.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Per partition, the offset of the next record to read as the last checkpoint committed
/// it; `None`: the partition is known but nothing was read from it yet. The job keeps
/// these in its state; a source resumes from them and never keeps offsets of its own.
pub type Positions = BTreeMap<u32, Option<i64>>;

pub trait Source {
    /// A name for the rejected sink's `topic` field.
    fn name(&self) -> &str;

    /// Where to resume: called once, after `verify` and before the first poll, with the
    /// committed state.
    fn resume(&mut self, committed: &Positions) -> Result<(), SourceError>;

    /// Checks, first of all, that the input is the one the store recorded (`None`: nothing
    /// recorded yet). Another source fails here; a file's read part is checked as it is
    /// read again.
    fn verify(&mut self, _recorded: Option<&SourceIdentity>) -> Result<(), SourceError> {
        Ok(())
    }

    /// What to record of the input read so far, with the checkpoint.
    fn identity(&self) -> Option<SourceIdentity> {
        None
    }

    /// Gaps found since the last call: partitions whose records are lost and that go on
    /// from the given offset. The job writes them, then tells the engine where each
    /// partition goes on before it polls again.
    fn take_gaps(&mut self) -> Vec<Gap> {
        Vec::new()
    }

    /// The partitions the watermark must wait for.
    fn partitions(&self) -> Vec<u32>;

    /// Hands up to `max` records to `sink`, in offset order within each partition.
    fn poll(
        &mut self,
        max: usize,
        sink: &mut dyn FnMut(SourceRecord<'_>),
    ) -> Result<Poll, SourceError>;

    /// Partitions that count as idle now (SPEC §4).
    fn idle(&mut self) -> BTreeSet<u32> {
        BTreeSet::new()
    }

    /// Whether the idle rule may use the wall clock (live runs only).
    fn is_live(&self) -> bool {
        false
    }

    /// Called after each committed checkpoint; Kafka commits its group offsets here for
    /// lag monitoring only.
    fn committed(&mut self, _positions: &Positions) {}

    /// Records left to read per partition, for the partitions whose end is known now;
    /// `None` for a source without that notion (a file), which never holds readiness back.
    /// Called once per batch: it must not block.
    fn lag(&self) -> Option<BTreeMap<u32, u64>> {
        None
    }
}
