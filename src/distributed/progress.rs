//! The progress topic read back: each input partition's last committed resume record,
//! what a partition's next owner goes on from.

use super::partials::{self, Body, Resume};
use super::{ClusterConfig, DistributedError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The last committed resume record of each partition of `topic`, read from the start of
/// the progress topic to its end (under read_committed, the end of what is committed).
pub fn read_resumes(
    c: &ClusterConfig,
    topic: &str,
) -> Result<BTreeMap<u32, Resume>, DistributedError> {
    let reader: BaseConsumer<super::Quiet> = c
        .client(&[
            ("group.id", "retail-kpi-progress-reader"),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("enable.partition.eof", "true"),
            // The end is found by a fetch that returns nothing: do not wait for more.
            ("fetch.wait.max.ms", "10"),
        ])
        .create_with_context(super::Quiet)
        .map_err(DistributedError::kafka(c, "creating the progress reader"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&c.progress_topic, 0, Offset::Beginning)
        .map_err(DistributedError::kafka(c, "assigning the progress topic"))?;
    reader
        .assign(&tpl)
        .map_err(DistributedError::kafka(c, "assigning the progress topic"))?;
    let mut out = BTreeMap::new();
    let deadline = Instant::now() + c.timeout;
    loop {
        if Instant::now() >= deadline {
            return Err(DistributedError::Unavailable(format!(
                "the progress topic `{}` could not be read to its end within {:?}; check the brokers (scripts/kafka status, or your cluster's health), then restart the process",
                c.progress_topic, c.timeout
            )));
        }
        match reader.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(out),
            Some(Err(e)) => tracing::debug!("progress reader: {e}"),
            Some(Ok(m)) => {
                let body = partials::decode(m.payload().unwrap_or(&[])).map_err(|error| {
                    DistributedError::Partials {
                        topic: c.progress_topic.clone(),
                        offset: m.offset(),
                        error,
                    }
                })?;
                if let Body::Resume(r) = body {
                    if r.topic == topic {
                        out.insert(r.partition, r);
                    }
                }
            }
        }
    }
}
