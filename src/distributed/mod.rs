//! A run over several processes (`--role aggregate` and `--role merge`), on Kafka's own
//! consumer groups and transactions; the design and why it is exactly once are in
//! `docs/DISTRIBUTED.md`.
//!
//! ```text
//!  input topic ──(consumer group G, cooperative-sticky)──► aggregate processes
//!      each owns some partitions: decode, lateness by M_p, the country cap (the same
//!      Engine::accept as one process), exact sums per window since the last transaction
//!        │ one Kafka transaction per checkpoint: rejected + checkpoint records → partials
//!        │ topic, resume records → progress topic, input offsets through
//!        │ send_offsets_to_transaction (a fenced process cannot commit)
//!        ▼
//!  partials topic (1 partition) ──(read_committed)──► merge process
//!      Engine::merge_window + apply_progress, W = min_p(M_p − G), close, checkpoint to
//!      RocksDB with its own offset in the partials topic, files through the committer
//! ```
//!
//! `partials.rs` is the record format, `topics.rs` creates the two topics,
//! `aggregate.rs` and `merge.rs` are the two loops, `txn.rs` the aggregate's transactional
//! producer and the guards around it.

pub mod aggregate;
pub mod merge;
pub mod partials;
pub mod topics;
mod txn;

use crate::job::JobError;
use rdkafka::config::ClientConfig;
use std::time::Duration;

/// What a process of a run does (`--role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// One process reads every partition and writes the files.
    #[default]
    Single,
    /// One of a consumer group's processes: exact partial sums to the partials topic.
    Aggregate,
    /// Reads the partials topic and writes the files.
    Merge,
}

/// The role's name as `--role` spells it.
pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Single => "single",
        Role::Aggregate => "aggregate",
        Role::Merge => "merge",
    }
}

/// What both roles need of the cluster and the two topics.
#[derive(Clone)]
pub struct ClusterConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// One partition, so that every aggregate transaction is read in one order.
    pub partials_topic: String,
    /// Compacted, keyed by source partition: each partition's resume record.
    pub progress_topic: String,
    /// For both topics when this process creates them.
    pub replication_factor: i32,
    pub min_insync_replicas: i32,
    /// librdkafka properties (`-X`, `[kafka]`), applied to every client over its defaults.
    pub properties: Vec<(String, String)>,
    /// Longest wait for one request to the brokers (metadata, committed offsets, a
    /// transaction's commit).
    pub timeout: Duration,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("brokers", &self.brokers)
            .field("partials_topic", &self.partials_topic)
            .field("progress_topic", &self.progress_topic)
            .field("replication_factor", &self.replication_factor)
            .field("min_insync_replicas", &self.min_insync_replicas)
            .field(
                "properties",
                &crate::source::kafka::MaskedProperties(&self.properties),
            )
            .finish()
    }
}

impl ClusterConfig {
    /// The progress topic's default name beside a partials topic.
    pub fn progress_topic_for(partials: &str) -> String {
        format!("{partials}.progress")
    }

    /// A client configuration: the brokers, `defaults`, then the user's properties.
    pub(crate) fn client(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// The context of the clients beside the group consumer: librdkafka's own lines go to
/// the debug log (a progress reader's end of partition is not an error, and properties
/// meant for the consumer would warn in the producer), its errors to the warnings.
pub(crate) struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        tracing::debug!(target: "librdkafka", "{fac}: {msg}");
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            tracing::warn!("Kafka client: {error}: {reason}");
        }
    }
}
impl rdkafka::consumer::ConsumerContext for Quiet {}
impl rdkafka::producer::ProducerContext for Quiet {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// Errors of the two roles; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DistributedError {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("Kafka: {what}: {error}; check that the brokers at {brokers} run and can be reached, and the -X settings")]
    Kafka {
        what: String,
        brokers: String,
        error: Box<rdkafka::error::KafkaError>,
    },
    #[error("this process was fenced ({0}): another process runs with its transactional id (--transactional-id), or started with it while this one was stopped or cut off, and Kafka refused its transaction, so it wrote nothing. Give each process its own transactional id; restart this one to join the group again")]
    Fenced(String),
    #[error("the partials topic `{topic}` holds a record at offset {offset} that this merge cannot read: {error}. It is this job's own data and is never skipped: check which build wrote it (the aggregate processes' version), upgrade the merge if it is older, and restart")]
    Partials {
        topic: String,
        offset: i64,
        error: partials::FormatError,
    },
    #[error("{0}")]
    Inconsistent(String),
    /// The brokers did not answer in time.
    #[error("{0}")]
    Unavailable(String),
    #[error("records of topic `{topic}` that no aggregate process has read are gone from the brokers: {details}. Nothing past them was counted. To count the topic as it is now, start the group, the partials topics and the merge anew (new names and folders)")]
    DataLoss { topic: String, details: String },
    /// The aggregate processes were started with other result settings than this merge.
    #[error("{0}")]
    Settings(String),
    #[error("{0}")]
    Setup(String),
}

impl DistributedError {
    pub(crate) fn kafka(
        cfg: &ClusterConfig,
        what: impl Into<String>,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> DistributedError + '_ {
        let what = what.into();
        move |error| DistributedError::Kafka {
            what,
            brokers: cfg.brokers.clone(),
            error: Box::new(error),
        }
    }
}
