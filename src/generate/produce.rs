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

/// How the sends are spaced in wall-clock time.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Record `i` no earlier than `i / rate` seconds after the first; `None`: at once.
    Count(Option<f64>),
    /// A record no earlier than its timestamp's distance from the first record's,
    /// divided by the speed (event seconds per wall second).
    EventTime(f64),
}

/// Sends records with the idempotent producer, record `i` to partition `i % P`, so that
/// the topic's contents depend on the generator alone, [`ProduceConfig::rate`] records a
/// second. Returns the number sent.
pub fn produce(
    cfg: &ProduceConfig,
    records: impl Iterator<Item = GeneratedRecord>,
    stop: Arc<AtomicBool>,
) -> Result<u64, KafkaSourceError> {
    send_all(cfg, records, stop, Pace::Count(cfg.rate))
}

/// [`produce`], spaced by the records' timestamps (their CreateTime, which follows the
/// generator's event clock within 2 s) instead of their count: event time then runs
/// `speed` times as fast as the wall clock (1: in step with it), whatever the rate of the
/// moment, as a stream with the daily cycle needs, whose rate rises and falls through
/// the day. [`ProduceConfig::rate`] is not used; records without a timestamp are sent at
/// once.
///
/// # Panics
/// When `speed` is not a positive finite number.
pub fn produce_in_event_time(
    cfg: &ProduceConfig,
    records: impl Iterator<Item = GeneratedRecord>,
    stop: Arc<AtomicBool>,
    speed: f64,
) -> Result<u64, KafkaSourceError> {
    assert!(
        speed.is_finite() && speed > 0.0,
        "event-time speed must be positive, not {speed}"
    );
    send_all(cfg, records, stop, Pace::EventTime(speed))
}

fn send_all(
    cfg: &ProduceConfig,
    records: impl Iterator<Item = GeneratedRecord>,
    stop: Arc<AtomicBool>,
    pace: Pace,
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
    let partitions = ensure_partitions(&producer, &cfg.topic, &cfg.brokers)?;
    let started = Instant::now();
    let mut first_ts: Option<i64> = None;
    let mut sent = 0u64;
    for (i, rec) in records.enumerate() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let due = match pace {
            Pace::Count(rate) => rate.map(|rate| Duration::from_secs_f64(i as f64 / rate)),
            Pace::EventTime(speed) => rec.timestamp_ms.map(|ts| {
                let first = *first_ts.get_or_insert(ts);
                Duration::from_secs_f64((ts - first).max(0) as f64 / 1_000.0 / speed)
            }),
        };
        if let Some(due) = due {
            // In slices, so that a stop (Ctrl-C, SIGTERM) is seen within a tenth of a
            // second even where the gaps are long (a slow rate, a night of the daily cycle).
            loop {
                let el = started.elapsed();
                if due <= el || stop.load(Ordering::Relaxed) {
                    break;
                }
                producer.poll(Duration::ZERO);
                std::thread::sleep((due - el).min(Duration::from_millis(100)));
            }
            if stop.load(Ordering::Relaxed) {
                break;
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
                Err((e, _)) => return Err(produce_error(&producer, e)),
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
            Err(e) => return Err(produce_error(&producer, e)),
        }
    }
    let lost = producer.context().undelivered.load(Ordering::Relaxed);
    if lost > 0 {
        let first = producer
            .context()
            .first_undelivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let cause = fatal_reason(&producer)
            .or(first)
            .unwrap_or_else(|| "no reason given".into());
        return Err(KafkaSourceError::Undelivered {
            topic: cfg.topic.clone(),
            lost,
            sent,
            cause,
        });
    }
    Ok(sent)
}

/// librdkafka's fatal error, if the producer hit one: its code and reason.
fn fatal_reason<C: ProducerContext>(p: &BaseProducer<C>) -> Option<String> {
    p.client()
        .fatal_error()
        .map(|(code, why)| format!("fatal: {code}: {why}"))
}

fn produce_error<C: ProducerContext>(p: &BaseProducer<C>, error: KafkaError) -> KafkaSourceError {
    KafkaSourceError::Produce {
        error,
        fatal: fatal_reason(p),
    }
}

/// The topic's partition count, once the brokers' metadata shows the topic: a topic just
/// created reaches every broker's metadata a moment later, and a producer that asked too
/// soon failed on a fresh cluster with "topic does not exist" (seen in the tests).
fn ensure_partitions<C: ProducerContext>(
    p: &BaseProducer<C>,
    topic: &str,
    brokers: &str,
) -> Result<u32, KafkaSourceError> {
    const WAIT: Duration = Duration::from_secs(30);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        // What is left of the wait, so the whole stays within WAIT.
        let left = deadline
            .saturating_duration_since(std::time::Instant::now())
            .max(Duration::from_millis(500));
        let md = p
            .client()
            .fetch_metadata(Some(topic), left)
            .map_err(|source| KafkaSourceError::Metadata {
                topic: topic.into(),
                brokers: brokers.into(),
                source,
                timeout: WAIT,
            })?;
        let n = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        if n > 0 {
            return Ok(n as u32);
        }
        if std::time::Instant::now() >= deadline {
            return Err(KafkaSourceError::NoTopic {
                topic: topic.into(),
                brokers: brokers.into(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
