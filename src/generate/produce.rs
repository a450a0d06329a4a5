//! `retail-kpi produce`: generated invoices sent to a Kafka topic, created first if it is
//! missing. A tool beside the job (demos, tests, benchmarks), not on the job's path.

// Errors here are rare and never on the per-record path; their size does not matter.
#![allow(clippy::result_large_err)]

use crate::generate::GeneratedRecord;
use crate::source::kafka::{KafkaSourceError, MaskedProperties, OutageContext};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long `produce` waits for the brokers to take anything before it gives up.
const STALL_LIMIT: Duration = Duration::from_secs(180);

/// Settings of `retail-kpi produce`. Its `Debug` masks secret values.
#[derive(Clone)]
pub struct ProduceConfig {
    pub brokers: String,
    pub topic: String,
    /// Partitions of the topic if it has to be created.
    pub partitions: u32,
    /// Replication factor if it has to be created.
    pub replication: u32,
    /// Records per second; `None` as fast as possible.
    pub rate: Option<f64>,
    pub properties: Vec<(String, String)>,
}

impl std::fmt::Debug for ProduceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProduceConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("rate", &self.rate)
            .field("properties", &MaskedProperties(&self.properties))
            .finish()
    }
}

/// Creates the topic if it is missing (time-based retention off: the generated invoices
/// carry event-time CreateTimes that may be years old).
pub fn ensure_topic(cfg: &ProduceConfig) -> Result<(), KafkaSourceError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.properties {
        cc.set(k, v);
    }
    let admin: AdminClient<_> = cc.create().map_err(KafkaSourceError::Config)?;
    let topic = NewTopic::new(
        &cfg.topic,
        cfg.partitions as i32,
        TopicReplication::Fixed(cfg.replication as i32),
    )
    .set("retention.ms", "-1")
    .set(
        "min.insync.replicas",
        if cfg.replication >= 3 { "2" } else { "1" },
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| KafkaSourceError::CreateTopic {
            topic: cfg.topic.clone(),
            reason: e.to_string(),
        })?;
    let res = rt
        .block_on(admin.create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .map_err(|e| KafkaSourceError::CreateTopic {
            topic: cfg.topic.clone(),
            reason: e.to_string(),
        })?;
    for r in res {
        match r {
            Ok(_) => {
                tracing::info!(topic = %cfg.topic, partitions = cfg.partitions, "topic created")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(KafkaSourceError::CreateTopic {
                    topic: t,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Sends records with the idempotent producer, record `i` to partition `i % P`, so that
/// the topic's contents depend on the generator alone. Returns the number sent.
pub fn produce(
    cfg: &ProduceConfig,
    records: impl Iterator<Item = GeneratedRecord>,
    stop: Arc<AtomicBool>,
) -> Result<u64, KafkaSourceError> {
    ensure_topic(cfg)?;
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("message.timeout.ms", "0") // retry for ever: an outage must not lose records
        .set("message.max.bytes", "2000000");
    for (k, v) in &cfg.properties {
        cc.set(k, v);
    }
    let producer: BaseProducer<OutageContext> = cc
        .create_with_context(OutageContext::default())
        .map_err(KafkaSourceError::Config)?;
    let partitions = ensure_partitions(&producer, &cfg.topic)?;
    let started = Instant::now();
    let mut sent = 0u64;
    for (i, rec) in records.enumerate() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(rate) = cfg.rate {
            let due = Duration::from_secs_f64(i as f64 / rate);
            let el = started.elapsed();
            if due > el {
                producer.poll(Duration::ZERO);
                std::thread::sleep(due - el);
            }
        }
        let mut r: BaseRecord<'_, (), [u8]> = BaseRecord::to(&cfg.topic)
            .payload(rec.value.as_slice())
            .partition((i as u64 % partitions as u64) as i32);
        if let Some(ts) = rec.timestamp_ms {
            r = r.timestamp(ts);
        }
        loop {
            match producer.send(r) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    r = back;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(KafkaSourceError::Produce(e)),
            }
        }
        sent += 1;
        if sent.is_multiple_of(1024) {
            producer.poll(Duration::ZERO);
        }
    }
    // Delivery of everything queued, through outages included; but a producer that makes
    // no progress at all for STALL_LIMIT is reported rather than waited for for ever.
    let mut last_in_flight = producer.in_flight_count();
    let mut last_progress = Instant::now();
    loop {
        match producer.flush(Duration::from_secs(10)) {
            Ok(()) => break,
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {
                let in_flight = producer.in_flight_count();
                if in_flight < last_in_flight {
                    last_in_flight = in_flight;
                    last_progress = Instant::now();
                } else if last_progress.elapsed() >= STALL_LIMIT {
                    return Err(KafkaSourceError::Stalled {
                        in_flight,
                        waited: STALL_LIMIT,
                    });
                }
                tracing::info!(in_flight, "waiting for the brokers to take the rest");
            }
            Err(e) => return Err(KafkaSourceError::Produce(e)),
        }
    }
    let lost = producer.context().undelivered.load(Ordering::Relaxed);
    if lost > 0 {
        tracing::error!("{lost} of {sent} records were not delivered");
        return Err(KafkaSourceError::Produce(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageTimedOut,
        )));
    }
    Ok(sent)
}

fn ensure_partitions<C: ProducerContext>(
    p: &BaseProducer<C>,
    topic: &str,
) -> Result<u32, KafkaSourceError> {
    let md = p
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .map_err(|source| KafkaSourceError::Metadata {
            topic: topic.into(),
            brokers: String::new(),
            source,
            timeout: Duration::from_secs(30),
        })?;
    let n = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    if n == 0 {
        return Err(KafkaSourceError::NoTopic {
            topic: topic.into(),
            brokers: String::new(),
        });
    }
    Ok(n as u32)
}
