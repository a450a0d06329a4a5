//! The partials and progress topics, created when missing.

use super::{ClusterConfig, DistributedError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

/// Creates the partials topic (one partition, kept for a week so that a standby merge
/// can rebuild from it) and the progress topic (one partition, compacted, its segments
/// rolled every ten minutes so that a new owner reads few records), if they are missing.
/// Existing topics are left as they are.
pub fn ensure(cfg: &ClusterConfig) -> Result<(), DistributedError> {
    let admin: AdminClient<DefaultClientContext> = cfg
        .client(&[])
        .create()
        .map_err(DistributedError::kafka(cfg, "creating the admin client"))?;
    let isr = cfg.min_insync_replicas.to_string();
    let partials = NewTopic::new(
        &cfg.partials_topic,
        1,
        TopicReplication::Fixed(cfg.replication_factor),
    )
    .set("min.insync.replicas", &isr)
    .set("retention.ms", "604800000")
    .set("max.message.bytes", "8388608");
    let progress = NewTopic::new(
        &cfg.progress_topic,
        1,
        TopicReplication::Fixed(cfg.replication_factor),
    )
    .set("min.insync.replicas", &isr)
    .set("cleanup.policy", "compact")
    .set("segment.ms", "600000")
    .set("min.cleanable.dirty.ratio", "0.1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DistributedError::Setup(format!("cannot start a runtime: {e}")))?;
    // A broker restarting answers with a transport error for a few seconds: asked again
    // until the connect timeout, so a process started meanwhile does not stop.
    let deadline = std::time::Instant::now() + cfg.timeout;
    let res = loop {
        let opts = AdminOptions::new().operation_timeout(Some(cfg.timeout));
        match rt.block_on(admin.create_topics([&partials, &progress], &opts)) {
            Ok(r) => break r,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!("creating the partials topics: {e}; again");
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            Err(e) => return Err(DistributedError::kafka(cfg, "creating the partials topics")(e)),
        }
    };
    for r in res {
        match r {
            Ok(t) => tracing::info!(topic = %t, replication = cfg.replication_factor, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(DistributedError::Setup(format!(
                    "cannot create topic `{t}`: {code}; create it by hand (one partition; the progress topic compacted) or fix --replication-factor (the cluster may have fewer brokers)"
                )))
            }
        }
    }
    Ok(())
}
