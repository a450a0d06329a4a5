//! What a source hands the engine, and what the engine says about a record it refuses.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One record as a source delivers it: a JSON-lines file is partition 0 with the line
/// number as offset; Kafka gives its own partition, offset and broker timestamp.
#[derive(Debug, Clone, Copy)]
pub struct SourceRecord<'a> {
    pub partition: u32,
    pub offset: i64,
    /// The broker timestamp (CreateTime or LogAppendTime) in ms; `None` when the record has
    /// none (a file, or a negative Kafka timestamp).
    pub timestamp_ms: Option<i64>,
    pub value: &'a [u8],
    /// The record's whole length when the source handed over only its start (a line
    /// longer than the record limit is not read into memory, SPEC §7); `None` when
    /// `value` is the whole record.
    pub full_len: Option<u64>,
}

impl SourceRecord<'_> {
    /// The length of the whole record, bytes.
    pub fn len(&self) -> u64 {
        self.full_len.unwrap_or(self.value.len() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How much of a too-large record the rejected sink keeps (SPEC §7).
pub const RAW_KEPT_BYTES: usize = 64 << 10;

/// The fixed reason codes of SPEC §7, in the order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Reason {
    TooLarge,
    InvalidUtf8,
    InvalidJson,
    InvalidInvoice,
    FutureTimestamp,
    Late,
    WindowClosed,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::TooLarge,
        Reason::InvalidUtf8,
        Reason::InvalidJson,
        Reason::InvalidInvoice,
        Reason::FutureTimestamp,
        Reason::Late,
        Reason::WindowClosed,
    ];

    /// The code written to the rejected sink and used as a metric label.
    pub fn code(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::InvalidJson => "invalid_json",
            Reason::InvalidInvoice => "invalid_invoice",
            Reason::FutureTimestamp => "future_timestamp",
            Reason::Late => "late",
            Reason::WindowClosed => "window_closed",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Why one record was refused: a reason code and a message for a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
        }
    }
}

/// A refused record as the rejected sink writes it. The store keeps it in layouts of its
/// own (`state::StoredRejected*`), so that a field added here cannot change what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRecord {
    /// The source's name (Kafka topic, or the input file) when the record was read.
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub reason: Reason,
    pub message: String,
    /// The record's bytes, or their first [`RAW_KEPT_BYTES`] for a too-large record.
    pub raw: Vec<u8>,
    /// The record's whole length, bytes (more than `raw.len()` when `raw` is cut).
    pub raw_len: u64,
}

impl RejectedRecord {
    /// Whether `raw` holds only the start of the record.
    pub fn raw_truncated(&self) -> bool {
        self.raw_len > self.raw.len() as u64
    }
}
