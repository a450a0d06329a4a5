//! Sinks: where committed results go. [`render`] turns closed buckets and rejected records
//! into bytes; [`local`] writes them to a local folder, atomically and at most once.

pub mod local;
pub mod render;
