//! retail-kpi: exact sales KPIs on one-minute event-time windows, exactly once.
//!
//! Data flows one way through the modules: a [`source`] ([`file_source`], [`kafka`]) hands
//! records to the [`engine`], which parses them ([`invoice`], [`money`], [`event_time`]),
//! aggregates them ([`window`]) and says what each checkpoint commits; the [`job`] commits
//! it to the [`state`] store and then renders ([`output`]) through the [`sink`].

pub mod config;
pub mod engine;
pub mod event_time;
pub mod failpoint;
pub mod file_source;
pub mod generate;
pub mod invoice;
pub mod job;
pub mod kafka;
pub mod metrics;
pub mod money;
pub mod output;
pub mod record;
pub mod sink;
pub mod source;
pub mod state;
pub mod window;
