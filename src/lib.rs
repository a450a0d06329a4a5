//! retail-kpi: exact sales KPIs on one-minute event-time windows, exactly once.
//!
//! Data flows one way through the modules (docs/ARCHITECTURE.md draws it):
//! a [`source`] (a JSON-lines file, a Kafka topic) hands over records; a [`decode`]r turns
//! each record's bytes into an invoice or a rejection; the [`aggregate`] stage applies
//! lateness and the watermark to decoded invoices and keeps exact, mergeable partial
//! aggregates per window and country, closing windows and buckets; the [`job`] commits
//! each checkpoint to the [`state`] store and then hands what is due to the [`sink`]s.
//! [`ops`] holds what runs beside the flow (metrics, settings); [`record`], [`money`] and
//! [`event_time`] are the values that flow; [`generate`] is the test-data tool, off the
//! job's path.

pub mod aggregate;
pub mod decode;
pub mod distributed;
pub mod event_time;
pub mod failpoint;
pub mod generate;
pub mod job;
pub mod money;
pub mod ops;
pub mod record;
pub mod sink;
pub mod source;
pub mod state;
