//! The aggregate processes' consumer group: rebalances noted during `poll`, for the loop
//! to handle right after it (`aggregate.rs`).

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

pub(crate) enum GroupEvent {
    Assigned(Vec<u32>),
    Revoked(Vec<u32>),
}

/// The consumer's context: rebalances are noted here, during `poll`, and handled by the
/// loop right after that `poll` returns, before any other record or transaction.
pub(crate) struct GroupContext {
    pub(crate) topic: String,
    pub(crate) events: Mutex<Vec<GroupEvent>>,
    pub(crate) pending: AtomicBool,
}

impl GroupContext {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<u32> {
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition() as u32)
            .collect()
    }

    fn push(&self, e: GroupEvent) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
        self.pending.store(true, Ordering::Release);
    }
}

impl ClientContext for GroupContext {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, msg: &str) {
        tracing::debug!(target: "librdkafka", "{fac}: {msg}");
    }
    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition comes through here too; it is no error.
        if error.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            tracing::warn!("Kafka client: {error}: {reason}");
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        match r {
            // Before the partitions go: the loop drops what it has not committed of them.
            Rebalance::Revoke(tpl) => self.push(GroupEvent::Revoked(self.partitions(tpl))),
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::warn!("rebalance error: {e}"),
        }
    }
    fn post_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            self.push(GroupEvent::Assigned(self.partitions(tpl)));
        }
    }
}
