//! What the job needs of a source, whatever it reads: records with their partition and
//! offset, where to resume, and which partitions are idle or finished.

use crate::engine::PartitionState;
use crate::record::SourceRecord;
use std::collections::{BTreeMap, BTreeSet};

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

pub trait Source {
    /// A name for the rejected sink's `topic` field.
    fn name(&self) -> &str;

    /// Where to resume: called once, before the first poll, with the committed state.
    fn resume(&mut self, committed: &BTreeMap<u32, PartitionState>) -> Result<(), SourceError>;

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
    fn committed(&mut self, _partitions: &BTreeMap<u32, PartitionState>) {}

    /// Records left to read per partition, for the partitions whose end is known now;
    /// `None` for a source without that notion (a file), which never holds readiness back.
    /// Called once per batch: it must not block.
    fn lag(&self) -> Option<BTreeMap<u32, u64>> {
        None
    }
}
