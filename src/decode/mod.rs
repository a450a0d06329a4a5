//! Decoding: a record's bytes to an invoice or a rejection.

pub mod invoice;
