//! Kafka: the source of the live job and of backfills; its questions to the brokers while
//! it runs are asked from a thread of their own (`probe`).
//!
//! The source assigns every partition of the topic itself (no consumer-group rebalancing)
//! and starts each from the offset the state store committed, in the manner of Arroyo:
//! Kafka's group offsets are written after each checkpoint, for lag monitoring only, and
//! never read back. Idleness (SPEC §4) needs the broker's word: a partition is idle only
//! when a watermark request answered within `idle_timeout` that the job has read
//! everything, and no record came for `idle_timeout`; while brokers cannot be reached no
//! answer comes, so no partition turns idle and no window closes because of an outage.

// Errors here are rare and never on the per-record path; their size does not matter.
#![allow(clippy::result_large_err)]

use crate::record::SourceRecord;
use crate::source::{Gap, Poll, Positions, Source, SourceError, SourceIdentity, SourceMismatch};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod group;
mod probe;
use group::{Committer, GroupCommits};
use probe::{Answer, Ask, Prober};

#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("Kafka client setup failed: {0}; check the -X properties")]
    Config(KafkaError),
    #[error("cannot read the metadata of topic `{topic}` from {brokers} within {timeout:?}: {source}; check that the brokers run and can be reached (address, firewall, -X security settings) and that the topic exists")]
    Metadata {
        topic: String,
        brokers: String,
        source: KafkaError,
        timeout: Duration,
    },
    #[error("topic `{topic}` does not exist on {brokers}; create it (retail-kpi produce creates it) or fix --topic")]
    NoTopic { topic: String, brokers: String },
    #[error("cannot find the end offsets of topic `{topic}` for --until end: {source}; the brokers did not answer within {timeout:?}")]
    EndOffsets {
        topic: String,
        source: KafkaError,
        timeout: Duration,
    },
    #[error("Kafka consumer error: {0}")]
    Consume(KafkaError),
    #[error("Kafka producer error: {error}{}; records sent before it and not yet delivered may be missing from the topic: check the brokers (scripts/kafka status), then produce again into a new topic", fatal_suffix(.fatal))]
    Produce {
        error: KafkaError,
        /// librdkafka's reason when the producer hit a fatal error (its underlying code
        /// and text): the error above then only says "Fatal error".
        fatal: Option<String>,
    },
    #[error("{lost} of {sent} records were not confirmed by topic `{topic}`: {cause}; they may be missing from it (the confirmed ones are there once each): check the brokers (scripts/kafka status), then produce again into a new topic")]
    Undelivered {
        topic: String,
        lost: u64,
        sent: u64,
        /// The producer's fatal error if it had one, else the first delivery error.
        cause: String,
    },
    #[error("the producer delivered nothing for {waited:?} with {in_flight} records still queued; check the brokers (scripts/kafka status), then produce again (records already delivered would then be sent twice)")]
    Stalled { in_flight: i32, waited: Duration },
    #[error("cannot create topic `{topic}`: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("records of topic `{topic}` that the job has not read are gone from the brokers: {details}. Nothing past them was counted. To go on without them, restart with --on-data-loss continue (each gap is then written to <out>/gaps/ and counted); to count them, restore them to the topic; to count the topic as it is now, start on a new state folder and a new output folder")]
    DataLoss { topic: String, details: String },
    #[error("the Kafka client cannot decode records of topic `{topic}` ({error}); reading stopped at {at}. This is a fault, not bad input: check the producers' compression.type (this build reads none, gzip, snappy, lz4 and zstd) and the topic's data, then restart; the job resumes at the same offsets")]
    Undecodable {
        topic: String,
        error: KafkaError,
        at: String,
    },
}

fn fatal_suffix(fatal: &Option<String>) -> String {
    fatal
        .as_ref()
        .map_or_else(String::new, |why| format!(" ({why})"))
}

/// Where a partition never seen before starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StartAt {
    Earliest,
    Latest,
}

/// What the job does when records it has not read are gone from the brokers (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OnDataLoss {
    /// Stop with exit 5 and say which partitions and offsets.
    #[default]
    Fail,
    /// Write each gap to `<out>/gaps/`, count it, and go on from the earliest offset.
    Continue,
}

/// Settings of the Kafka source. `properties` are librdkafka properties passed through
/// (`-X key=value`): security (SASL, TLS) and tuning. Its `Debug` masks secret values.
#[derive(Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub topic: String,
    /// Group id under which offsets are committed for lag monitoring.
    pub group_id: String,
    /// Bounded run: read up to the end offsets found at start.
    pub until_end: bool,
    /// Where a partition without a committed offset starts.
    pub start: StartAt,
    /// SPEC §4 `idle_timeout`.
    pub idle_timeout: Duration,
    /// Longest wait of one poll for the first record.
    pub poll_wait: Duration,
    /// Longest wait at start for the topic's metadata (and, for `until_end`, its end
    /// offsets): brokers that do not answer by then fail the run instead of hanging it.
    pub connect_timeout: Duration,
    /// Records gone from the brokers before the job read them.
    pub on_data_loss: OnDataLoss,
    pub properties: Vec<(String, String)>,
}

/// librdkafka properties for `Debug`, secret values masked (README "Security").
pub(crate) struct MaskedProperties<'a>(pub(crate) &'a [(String, String)]);

impl std::fmt::Debug for MaskedProperties<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(k, v)| (k, crate::ops::settings::shown(k, v))),
            )
            .finish()
    }
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("group_id", &self.group_id)
            .field("until_end", &self.until_end)
            .field("start", &self.start)
            .field("idle_timeout", &self.idle_timeout)
            .field("poll_wait", &self.poll_wait)
            .field("connect_timeout", &self.connect_timeout)
            .field("on_data_loss", &self.on_data_loss)
            .field("properties", &MaskedProperties(&self.properties))
            .finish()
    }
}

impl KafkaConfig {
    pub fn new(brokers: &str, topic: &str) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            group_id: format!("retail-kpi.{topic}"),
            until_end: false,
            start: StartAt::Earliest,
            idle_timeout: Duration::from_secs(60),
            poll_wait: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(30),
            on_data_loss: OnDataLoss::Fail,
            properties: Vec::new(),
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            // Every partition is assigned at an explicit offset (committed, or where
            // `--start` says); an offset out of range means records the job has not read
            // are gone, which must never be skipped silently (SPEC §6): librdkafka reports
            // it instead of jumping to either end.
            .set("auto.offset.reset", "error")
            // Fetches large enough for a backfill's throughput, and a local queue small
            // enough that memory is bounded by open windows, not by the prefetch: with
            // 128 MiB queued the job's RSS levelled off at ~210 MiB (benches/memory.rs).
            .set("fetch.max.bytes", "8388608")
            .set("max.partition.fetch.bytes", "2097152")
            .set("queued.min.messages", "50000")
            // librdkafka (>= 2.1) pauses a partition's fetching for fetch.queue.backoff.ms
            // (default 1 s) whenever its local queue is over the thresholds; the job drains
            // that queue in far less, then sat idle: 10 ms more than doubled backfill speed.
            .set("fetch.queue.backoff.ms", "10")
            .set("queued.max.messages.kbytes", "8192")
            .set("topic.metadata.refresh.interval.ms", "10000")
            // The end offsets behind the consumer lag metric come from these statistics:
            // no request of our own, nothing that can block the loop.
            .set("statistics.interval.ms", "1000")
            .set_log_level(RDKafkaLogLevel::Warning);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// Logs a broker outage once when it begins and once when it ends, never per record.
#[derive(Default)]
pub struct OutageContext {
    down: AtomicBool,
    /// Records the producer gave up on.
    pub(crate) undelivered: AtomicU64,
    /// The first of their errors, for the message that reports them.
    pub(crate) first_undelivered: Mutex<Option<String>>,
    /// The consumer's topic, whose partition ends the statistics report.
    topic: String,
    /// Per partition: the lowest offset and the end a consumer can read to, from the last
    /// statistics of librdkafka.
    ends: Mutex<BTreeMap<u32, Ends>>,
    /// The consumer's advisory group commits, whose outcomes come back through it.
    group: GroupCommits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ends {
    low: i64,
    end: i64,
}

/// Records left in a partition: from the next offset to read (or where a partition never
/// read starts) to its end; `None` while the end is not known.
fn partition_lag(next: Option<i64>, ends: Ends, start: StartAt) -> Option<u64> {
    if ends.end < 0 {
        return None;
    }
    let from = match (next, start) {
        (Some(n), _) => n,
        (None, StartAt::Latest) => ends.end,
        (None, StartAt::Earliest) if ends.low >= 0 => ends.low,
        (None, StartAt::Earliest) => return None,
    };
    Some((ends.end - from).max(0) as u64)
}

impl OutageContext {
    fn recovered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("Kafka brokers reachable again: outage ended");
        }
    }
    fn failed(&self, what: &str) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!("Kafka brokers unreachable ({what}): outage began; no window closes until they answer");
        }
    }
}

impl ClientContext for OutageContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let all_down = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown)
        );
        if all_down {
            self.failed(reason);
        } else if matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::Fatal)) {
            // The client can do nothing more (an idempotent producer's sequence lost,
            // for one): the reason is what the user needs, so it is never hidden.
            tracing::error!("librdkafka fatal error: {reason}");
        } else {
            tracing::debug!("librdkafka: {error}: {reason}");
        }
    }
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, msg: &str) {
        tracing::debug!(target: "librdkafka", "{fac}: {msg}");
    }
    /// librdkafka's statistics, decoded by rdkafka: each partition's lowest offset and the
    /// end a consumer can read to, for the lag.
    fn stats(&self, stats: rdkafka::Statistics) {
        let Some(t) = stats.topics.get(&self.topic) else {
            return;
        };
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        // Partition -1 holds messages not yet assigned to a partition.
        for p in t.partitions.values().filter(|p| p.partition >= 0) {
            // The last stable offset is the end under `isolation.level=read_committed`,
            // librdkafka's default; equal to the high watermark without transactions.
            let end = if p.ls_offset >= 0 {
                p.ls_offset
            } else {
                p.hi_offset
            };
            if end >= 0 {
                ends.insert(
                    p.partition as u32,
                    Ends {
                        low: p.lo_offset,
                        end,
                    },
                );
            }
        }
    }
}
impl AsRef<GroupCommits> for OutageContext {
    fn as_ref(&self) -> &GroupCommits {
        &self.group
    }
}

impl ConsumerContext for OutageContext {
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        self.group.report(result, offsets);
    }
}

impl ProducerContext for OutageContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            // Once, not per record: a fatal error fails every record still queued.
            if self.undelivered.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::error!("a record was not delivered: {e}");
                *self
                    .first_undelivered
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
        }
    }
}

/// A committed offset the brokers can no longer serve.
struct Loss {
    partition: u32,
    committed: i64,
    low: i64,
    high: i64,
    /// Whether the records missing end at `low - 1` (retention, deletion) or cannot be
    /// counted (the partition was re-created or truncated).
    last_missing: Option<i64>,
    why: String,
}

/// The error codes of a record batch the client cannot decode: a codec not built in, or
/// a corrupt batch. A fault of the data, not of the brokers' reachability.
fn is_undecodable(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::NotImplemented
            | RDKafkaErrorCode::BadCompression
            | RDKafkaErrorCode::BadMessage
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::UnsupportedCompressionType
    )
}

/// The partitions of `topic` in a metadata answer; `None` when it has none or an error.
fn partitions_of(md: &rdkafka::metadata::Metadata, topic: &str) -> Option<Vec<u32>> {
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    (t.error().is_none() && !t.partitions().is_empty())
        .then(|| t.partitions().iter().map(|p| p.id() as u32).collect())
}

/// The id of `topic` (base64, as Kafka's tools print it), from a DescribeTopics request;
/// `Ok(None)` when the brokers give none. rdkafka 0.39 does not wrap this request, so it is
/// made through librdkafka's C API on the client's own handle.
fn topic_id<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<String>, String> {
    use rdkafka::bindings as rd;
    use std::ffi::{CStr, CString};
    let name = CString::new(topic).map_err(|e| e.to_string())?;
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: every pointer below comes from librdkafka for this call and is destroyed
    // once, at the end; the client's handle outlives the call; strings read from results
    // are copied before the event that owns them is destroyed.
    unsafe {
        let rk = client.native_ptr();
        let mut names = [name.as_ptr()];
        let coll = rd::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1);
        let queue = rd::rd_kafka_queue_new(rk);
        let opts = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        );
        let mut errstr = [0 as std::ffi::c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(opts, ms, errstr.as_mut_ptr(), errstr.len());
        rd::rd_kafka_DescribeTopics(rk, coll, opts, queue);
        let ev = rd::rd_kafka_queue_poll(queue, ms.saturating_add(1000));
        let result = if ev.is_null() {
            Err(format!("no answer within {timeout:?}"))
        } else if rd::rd_kafka_event_error(ev)
            != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            Err(CStr::from_ptr(rd::rd_kafka_event_error_string(ev))
                .to_string_lossy()
                .into_owned())
        } else {
            let res = rd::rd_kafka_event_DescribeTopics_result(ev);
            let mut n = 0usize;
            let topics = rd::rd_kafka_DescribeTopics_result_topics(res, &mut n);
            let mut found = Ok(None);
            for i in 0..n {
                let td = *topics.add(i);
                let err = rd::rd_kafka_TopicDescription_error(td);
                if !err.is_null()
                    && rd::rd_kafka_error_code(err)
                        != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                {
                    found = Err(CStr::from_ptr(rd::rd_kafka_error_string(err))
                        .to_string_lossy()
                        .into_owned());
                    break;
                }
                let id = rd::rd_kafka_TopicDescription_topic_id(td);
                if !id.is_null() {
                    let text = rd::rd_kafka_Uuid_base64str(id);
                    if !text.is_null() {
                        found = Ok(Some(CStr::from_ptr(text).to_string_lossy().into_owned()));
                    }
                }
            }
            found
        };
        if !ev.is_null() {
            rd::rd_kafka_event_destroy(ev);
        }
        rd::rd_kafka_AdminOptions_destroy(opts);
        rd::rd_kafka_TopicCollection_destroy(coll);
        rd::rd_kafka_queue_destroy(queue);
        result
    }
}

#[derive(Default, Clone, Copy)]
struct PartitionTrack {
    /// When the last record came, or when the partition was assigned: "no record for
    /// idle_timeout" counts from there, so a partition that is empty when the job starts
    /// is not idle at once.
    last_record: Option<Instant>,
    /// When the broker last confirmed that nothing is left past the next offset.
    confirmed_end: Option<Instant>,
    /// Next offset to read (from records handed over).
    next: Option<i64>,
    /// Bounded run: the end offset found at start; the partition is done at it.
    end: Option<i64>,
    done: bool,
}

pub struct KafkaSource {
    cfg: KafkaConfig,
    consumer: BaseConsumer<OutageContext>,
    /// Watermark and metadata requests while running (idle confirmation, data-loss
    /// checks, new partitions), by a client of their own on a thread of their own: after a
    /// broker paused and resumed, the consumer's own requests timed out or answered
    /// "Unknown partition" for minutes, and each request held the loop for its time-out.
    probe: Prober,
    name: String,
    /// The topic's id as the brokers gave it at start.
    topic_id: Option<String>,
    /// The store recorded another id for this topic: it was deleted and created again.
    recreated: Option<String>,
    parts: BTreeMap<u32, PartitionTrack>,
    gaps: Vec<Gap>,
    last_metadata: Instant,
    last_confirm: Instant,
    /// The advisory group commits (lag monitoring only).
    commits: Committer,
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the topic is asked for partitions added to it (SPEC §4: found within a few
/// seconds).
const NEW_PARTITIONS_EVERY: Duration = Duration::from_secs(3);

impl KafkaSource {
    pub fn connect(cfg: KafkaConfig) -> Result<KafkaSource, KafkaSourceError> {
        let client_config = cfg.client_config();
        let context = OutageContext {
            topic: cfg.topic.clone(),
            // `-X group.id=...` has the last word over --group-id.
            group: GroupCommits::new(client_config.get("group.id").unwrap_or(&cfg.group_id)),
            ..OutageContext::default()
        };
        let consumer: BaseConsumer<OutageContext> = client_config
            .create_with_context(context)
            .map_err(KafkaSourceError::Config)?;
        let probe = Prober::start(cfg.client_config(), cfg.topic.clone())
            .map_err(|e| KafkaSourceError::Config(KafkaError::ClientCreation(e.to_string())))?;
        Ok(KafkaSource {
            name: cfg.topic.clone(),
            cfg,
            consumer,
            probe,
            topic_id: None,
            recreated: None,
            parts: BTreeMap::new(),
            gaps: Vec::new(),
            last_metadata: Instant::now(),
            last_confirm: Instant::now(),
            commits: Committer::default(),
        })
    }

    /// Compares each committed offset with what the brokers still have (SPEC §6).
    fn find_losses(
        &mut self,
        committed: &BTreeMap<u32, Option<i64>>,
        timeout: Duration,
    ) -> Result<Vec<Loss>, KafkaSourceError> {
        let asked: Vec<(u32, i64)> = committed
            .iter()
            .filter_map(|(p, next)| Some((*p, (*next)?)))
            .collect();
        let ends = self
            .probe
            .ends_now(asked.iter().map(|(p, _)| *p).collect(), timeout);
        let mut losses = Vec::new();
        // The answers stop at the first failure, which fails the check.
        for ((p, next), (_, _, end)) in asked.into_iter().zip(ends) {
            let (low, high) = end.map_err(|source| KafkaSourceError::EndOffsets {
                topic: self.cfg.topic.clone(),
                source,
                timeout,
            })?;
            let loss = |last_missing, why: String| Loss {
                partition: p,
                committed: next,
                low,
                high,
                last_missing,
                why,
            };
            if let Some(old) = &self.recreated {
                losses.push(loss(
                    None,
                    format!(
                        "the topic was deleted and created again (its id was {old}, now {})",
                        self.topic_id.as_deref().unwrap_or("?")
                    ),
                ));
            } else if next < low {
                losses.push(loss(
                    Some(low - 1),
                    "deleted from the broker (retention or delete-records)".into(),
                ));
            } else if next > high {
                losses.push(loss(
                    None,
                    "the broker's end offset is below the committed one: the partition was re-created or truncated".into(),
                ));
            }
        }
        Ok(losses)
    }

    /// Fails on `losses`, or (`--on-data-loss continue`) files a gap for each and returns
    /// where each partition goes on.
    fn handle_losses(&mut self, losses: Vec<Loss>) -> Result<BTreeMap<u32, i64>, KafkaSourceError> {
        if losses.is_empty() {
            return Ok(BTreeMap::new());
        }
        if self.cfg.on_data_loss == OnDataLoss::Fail {
            let details = losses
                .iter()
                .map(|l| {
                    format!(
                        "partition {}: committed offset {}, the brokers have offsets {}..{} ({})",
                        l.partition, l.committed, l.low, l.high, l.why
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(KafkaSourceError::DataLoss {
                topic: self.cfg.topic.clone(),
                details,
            });
        }
        let found_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut resume = BTreeMap::new();
        for l in losses {
            tracing::warn!(
                partition = l.partition,
                committed = l.committed,
                low = l.low,
                high = l.high,
                "records lost ({}); going on from offset {} (--on-data-loss continue)",
                l.why,
                l.low
            );
            self.gaps.push(Gap {
                topic: self.cfg.topic.clone(),
                partition: l.partition,
                first_missing: l.committed,
                last_missing: l.last_missing,
                resume_at: l.low,
                why: l.why,
                found_at: found_at.clone(),
            });
            resume.insert(l.partition, l.low);
        }
        Ok(resume)
    }

    /// After librdkafka reported an offset out of range: which partitions lost records.
    fn lost_while_running(&mut self) -> Result<(), KafkaSourceError> {
        let committed: BTreeMap<u32, Option<i64>> =
            self.parts.iter().map(|(p, t)| (*p, t.next)).collect();
        let losses = self.find_losses(&committed, REQUEST_TIMEOUT)?;
        let resume = self.handle_losses(losses)?;
        if resume.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for &p in resume.keys() {
            tpl.add_partition(&self.cfg.topic, p as i32);
        }
        self.consumer
            .incremental_unassign(&tpl)
            .map_err(KafkaSourceError::Consume)?;
        let mut tpl = TopicPartitionList::new();
        for (&p, &at) in &resume {
            tpl.add_partition_offset(&self.cfg.topic, p as i32, Offset::Offset(at))
                .map_err(KafkaSourceError::Consume)?;
            if let Some(t) = self.parts.get_mut(&p) {
                t.next = Some(at);
                t.confirmed_end = None;
            }
        }
        self.consumer
            .incremental_assign(&tpl)
            .map_err(KafkaSourceError::Consume)
    }

    /// Where reading stopped, for an error message: each partition not finished, at the
    /// next offset to read.
    fn stopped_at(&self) -> String {
        let at: Vec<String> = self
            .parts
            .iter()
            .filter(|(_, t)| !t.done)
            .map(|(p, t)| match t.next {
                Some(n) => format!("partition {p} at offset {n}"),
                None => format!("partition {p} at its first offset"),
            })
            .collect();
        at.join(", ")
    }

    fn topic_partitions(&self, timeout: Duration) -> Result<Vec<u32>, KafkaSourceError> {
        let md = self
            .consumer
            .fetch_metadata(Some(&self.cfg.topic), timeout)
            .map_err(|source| KafkaSourceError::Metadata {
                topic: self.cfg.topic.clone(),
                brokers: self.cfg.brokers.clone(),
                source,
                timeout,
            })?;
        partitions_of(&md, &self.cfg.topic).ok_or_else(|| KafkaSourceError::NoTopic {
            topic: self.cfg.topic.clone(),
            brokers: self.cfg.brokers.clone(),
        })
    }

    fn assign_new(
        &mut self,
        partitions: &[u32],
        committed: &BTreeMap<u32, Option<i64>>,
        start: StartAt,
    ) -> Result<(), KafkaSourceError> {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            if self.parts.contains_key(&p) {
                continue;
            }
            let next = committed.get(&p).copied().flatten();
            let offset = match (next, start) {
                (Some(o), _) => Offset::Offset(o),
                (None, StartAt::Earliest) => Offset::Beginning,
                (None, StartAt::Latest) => Offset::End,
            };
            tpl.add_partition_offset(&self.cfg.topic, p as i32, offset)
                .map_err(KafkaSourceError::Consume)?;
            let mut track = PartitionTrack {
                next,
                last_record: Some(Instant::now()),
                ..PartitionTrack::default()
            };
            if self.cfg.until_end {
                let timeout = self.cfg.connect_timeout;
                let (low, high) = self
                    .consumer
                    .fetch_watermarks(&self.cfg.topic, p as i32, timeout)
                    .map_err(|source| KafkaSourceError::EndOffsets {
                        topic: self.cfg.topic.clone(),
                        source,
                        timeout,
                    })?;
                track.end = Some(high);
                track.done = high <= low || next.is_some_and(|n| n >= high);
            }
            self.parts.insert(p, track);
            tracing::info!(partition = p, offset = ?offset, "assigned");
        }
        if tpl.count() > 0 {
            self.consumer
                .incremental_assign(&tpl)
                .map_err(KafkaSourceError::Consume)?;
        }
        Ok(())
    }

    /// Asks the broker, for partitions that gave nothing lately, whether the job has read
    /// everything: the confirmation the idle rule needs. The answer comes to a later poll
    /// ([`KafkaSource::take_answer`]). Says whether the probe took the question.
    fn ask_ends(&mut self) -> bool {
        let now = Instant::now();
        let quiet = self.cfg.idle_timeout / 4;
        let partitions: Vec<u32> = self
            .parts
            .iter()
            .filter(|(_, t)| t.last_record.is_none_or(|r| now - r >= quiet))
            .map(|(p, _)| *p)
            .collect();
        partitions.is_empty()
            || self.probe.ask(Ask::Ends {
                partitions,
                timeout: REQUEST_TIMEOUT,
            })
    }

    /// Takes the probe's answer, if one came: end confirmations, or partitions added to
    /// the topic.
    fn take_answer(&mut self) -> Result<(), KafkaSourceError> {
        match self.probe.answer() {
            None => {}
            Some(Answer::Ends(ends)) => {
                for (p, asked, end) in ends {
                    match end {
                        Ok((low, high)) => {
                            self.consumer.context().recovered();
                            let Some(t) = self.parts.get_mut(&p) else {
                                continue;
                            };
                            let caught_up = match t.next {
                                Some(n) => n >= high,
                                None => high <= low,
                            };
                            tracing::debug!(partition = p, low, high, next = ?t.next, caught_up, "end confirmation");
                            if caught_up {
                                // From when it was asked: a record produced since is not
                                // covered by this answer. An end-of-partition event may
                                // have confirmed it later.
                                t.confirmed_end = t.confirmed_end.max(Some(asked));
                            }
                        }
                        Err(e) => {
                            tracing::debug!(partition = p, "end confirmation failed: {e}");
                            self.consumer.context().failed(&e.to_string());
                        }
                    }
                }
            }
            Some(Answer::Partitions(Ok(Some(ps)))) => {
                self.consumer.context().recovered();
                if ps.iter().any(|p| !self.parts.contains_key(p)) {
                    tracing::info!(
                        "new partitions in the topic: reading them from their first offset"
                    );
                    // Read from their first offset, whatever --start says (SPEC §4):
                    // records produced before the job found them would otherwise be
                    // skipped.
                    self.assign_new(&ps, &BTreeMap::new(), StartAt::Earliest)?;
                }
            }
            Some(Answer::Partitions(Ok(None))) => {}
            Some(Answer::Partitions(Err(e))) => {
                tracing::debug!("metadata request failed: {e}");
            }
        }
        Ok(())
    }
}

impl Source for KafkaSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn verify(&mut self, recorded: Option<&SourceIdentity>) -> Result<(), SourceError> {
        let timeout = self.cfg.connect_timeout;
        // The metadata first: an unreachable broker or a missing topic says so plainly.
        self.topic_partitions(timeout)?;
        self.topic_id = match topic_id(self.consumer.client(), &self.cfg.topic, timeout) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(
                    "cannot learn the id of topic `{}` ({e}): a topic deleted and created again is then found by its offsets only",
                    self.cfg.topic
                );
                None
            }
        };
        match recorded {
            None => Ok(()),
            Some(SourceIdentity::Kafka { topic, topic_id }) => {
                if *topic != self.cfg.topic {
                    return Err(Box::new(SourceMismatch(format!(
                        "the state store was written by a job reading topic `{topic}`, not `{}`; give --topic {topic}, or a new state folder (and output folder) for `{}`",
                        self.cfg.topic, self.cfg.topic
                    ))));
                }
                if let (Some(old), Some(now)) = (topic_id, &self.topic_id) {
                    if old != now {
                        self.recreated = Some(old.clone());
                    }
                }
                Ok(())
            }
            Some(SourceIdentity::File { .. }) => Err(Box::new(SourceMismatch(format!(
                "the state store was written by a job reading a file, not Kafka topic `{}`; give a new state folder (and output folder) for the topic",
                self.cfg.topic
            )))),
            Some(SourceIdentity::Partials { topic, .. }) => Err(Box::new(SourceMismatch(format!(
                "the state store belongs to a merge process (`--role merge`) reading partials topic `{topic}`; run the merge on it, or give a new state folder (and output folder) for `{}`",
                self.cfg.topic
            )))),
        }
    }

    fn resume(&mut self, committed: &Positions) -> Result<(), SourceError> {
        let partitions = self.topic_partitions(self.cfg.connect_timeout)?;
        let mut next = committed.clone();
        let losses = self.find_losses(&next, self.cfg.connect_timeout)?;
        for (p, at) in self.handle_losses(losses)? {
            next.insert(p, Some(at));
        }
        self.assign_new(&partitions, &next, self.cfg.start)?;
        Ok(())
    }

    fn identity(&self) -> Option<SourceIdentity> {
        Some(SourceIdentity::Kafka {
            topic: self.cfg.topic.clone(),
            topic_id: self.topic_id.clone(),
        })
    }

    fn take_gaps(&mut self) -> Vec<Gap> {
        std::mem::take(&mut self.gaps)
    }

    fn partitions(&self) -> Vec<u32> {
        self.parts.keys().copied().collect()
    }

    fn poll(
        &mut self,
        max: usize,
        sink: &mut dyn FnMut(SourceRecord<'_>),
    ) -> Result<Poll, SourceError> {
        if self.cfg.until_end && self.parts.values().all(|t| t.done) {
            return Ok(Poll::End);
        }
        self.commits.retry(&self.consumer);
        let mut n = 0;
        let mut wait = self.cfg.poll_wait;
        // One clock reading per batch: the idle rule needs no finer time than a poll.
        let batch_time = Instant::now();
        // Bounded by events, not only records: librdkafka can hand back error or EOF events
        // without end while brokers misbehave, and the job loop must still get control
        // (idle confirmations, checkpoints, a stop signal) between batches.
        let mut events = 0;
        while n < max && events < max {
            events += 1;
            let Some(res) = self.consumer.poll(wait) else {
                break;
            };
            wait = Duration::ZERO;
            match res {
                Ok(m) => {
                    let p = m.partition() as u32;
                    let Some(t) = self.parts.get_mut(&p) else {
                        continue;
                    };
                    if t.done || t.end.is_some_and(|e| m.offset() >= e) {
                        // Past the end a bounded run found at start: leave it for the next run.
                        t.done = true;
                        continue;
                    }
                    t.next = Some(m.offset() + 1);
                    t.last_record = Some(batch_time);
                    t.confirmed_end = None;
                    if t.end.is_some_and(|e| m.offset() + 1 >= e) {
                        t.done = true;
                    }
                    sink(SourceRecord {
                        partition: p,
                        offset: m.offset(),
                        timestamp_ms: m.timestamp().to_millis().filter(|&ts| ts >= 0),
                        value: m.payload().unwrap_or(&[]),
                        full_len: None,
                    });
                    n += 1;
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    self.consumer.context().recovered();
                    if let Some(t) = self.parts.get_mut(&(p as u32)) {
                        t.confirmed_end = Some(Instant::now());
                        if t.end.is_some() {
                            t.done = true;
                        }
                    }
                }
                Err(e) => {
                    // librdkafka retries on its own; a fatal error ends the run.
                    if let KafkaError::MessageConsumption(code) = &e {
                        if *code == RDKafkaErrorCode::UnknownTopicOrPartition {
                            return Err(Box::new(KafkaSourceError::Consume(e)));
                        }
                        if is_undecodable(*code) {
                            return Err(Box::new(KafkaSourceError::Undecodable {
                                topic: self.cfg.topic.clone(),
                                at: self.stopped_at(),
                                error: e,
                            }));
                        }
                        if *code == RDKafkaErrorCode::AutoOffsetReset {
                            // Records gone under the job (retention overtook it): fail, or
                            // file the gaps and hand back control so that the job records
                            // them before any record that follows.
                            self.lost_while_running()?;
                            return Ok(Poll::Records(n));
                        }
                    }
                    self.consumer.context().failed(&e.to_string());
                    break;
                }
            }
        }
        if n > 0 {
            self.consumer.context().recovered();
        }
        if !self.cfg.until_end {
            self.take_answer()?;
            // One question out at a time. When both are due, the one due for longer goes
            // first: slow end confirmations (a partition whose leader does not answer
            // takes its 5 s time-out each round) must not keep new partitions unfound.
            let now = Instant::now();
            let ends_due =
                self.last_confirm + (self.cfg.idle_timeout / 4).min(Duration::from_secs(5));
            let partitions_due = self.last_metadata + NEW_PARTITIONS_EVERY;
            let mut due = [(ends_due, true), (partitions_due, false)];
            due.sort();
            for (at, ends) in due {
                if at > now {
                    continue;
                }
                if ends {
                    if self.ask_ends() {
                        self.last_confirm = now;
                    }
                } else if self.probe.ask(Ask::Partitions {
                    timeout: REQUEST_TIMEOUT,
                }) {
                    self.last_metadata = now;
                }
            }
        } else if self.parts.values().all(|t| t.done) && n == 0 {
            return Ok(Poll::End);
        }
        Ok(Poll::Records(n))
    }

    fn idle(&mut self) -> BTreeSet<u32> {
        let now = Instant::now();
        let timeout = self.cfg.idle_timeout;
        self.parts
            .iter()
            .filter(|(_, t)| {
                if self.cfg.until_end {
                    return t.done;
                }
                let confirmed = t.confirmed_end.is_some_and(|c| now - c <= timeout);
                let quiet = t.last_record.is_none_or(|r| now - r >= timeout);
                confirmed && quiet
            })
            .map(|(p, _)| *p)
            .collect()
    }

    fn is_live(&self) -> bool {
        !self.cfg.until_end
    }

    fn lag(&self) -> Option<BTreeMap<u32, u64>> {
        let ends = self
            .consumer
            .context()
            .ends
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Some(
            self.parts
                .iter()
                .filter_map(|(p, t)| {
                    let lag = partition_lag(t.next, *ends.get(p)?, self.cfg.start)?;
                    Some((*p, lag))
                })
                .collect(),
        )
    }

    fn committed(&mut self, positions: &Positions) {
        let mut tpl = TopicPartitionList::new();
        for (p, next) in positions {
            if let Some(o) = *next {
                let _ = tpl.add_partition_offset(&self.cfg.topic, *p as i32, Offset::Offset(o));
            }
        }
        if tpl.count() > 0 {
            // Advisory only (lag monitoring): a failure changes no result; it is reported
            // when the brokers answer, and the offsets are sent again.
            self.commits.commit(&self.consumer, tpl);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_runs_from_the_next_offset_or_the_start_to_the_end() {
        let e = Ends { low: 10, end: 25 };
        assert_eq!(partition_lag(Some(20), e, StartAt::Earliest), Some(5));
        assert_eq!(partition_lag(None, e, StartAt::Earliest), Some(15));
        assert_eq!(partition_lag(None, e, StartAt::Latest), Some(0));
        // Read past a stale end: no negative lag.
        assert_eq!(partition_lag(Some(30), e, StartAt::Earliest), Some(0));
        let unknown = Ends { low: -1, end: -1 };
        assert_eq!(partition_lag(Some(3), unknown, StartAt::Earliest), None);
    }

    #[test]
    fn statistics_give_each_partition_its_end() {
        let ctx = OutageContext {
            topic: "inv".into(),
            ..OutageContext::default()
        };
        let part = |partition, lo_offset, hi_offset, ls_offset| {
            (
                partition,
                rdkafka::statistics::Partition {
                    partition,
                    lo_offset,
                    hi_offset,
                    ls_offset,
                    app_offset: 7,
                    ..Default::default()
                },
            )
        };
        let topic = |name: &str, parts: Vec<(i32, rdkafka::statistics::Partition)>| {
            (
                name.to_owned(),
                rdkafka::statistics::Topic {
                    topic: name.to_owned(),
                    partitions: parts.into_iter().collect(),
                    ..Default::default()
                },
            )
        };
        ctx.stats(rdkafka::Statistics {
            name: "c".into(),
            topics: [
                topic(
                    "inv",
                    vec![
                        part(0, 0, 100, 90),
                        part(1, -1, -1, -1),
                        part(-1, -1, -1, -1),
                    ],
                ),
                topic("other", vec![part(5, 0, 9, 9)]),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        });
        let ends = ctx.ends.lock().unwrap();
        assert_eq!(*ends, BTreeMap::from([(0, Ends { low: 0, end: 90 })]));
    }

    #[test]
    fn debug_masks_secret_properties() {
        let mut k = KafkaConfig::new("b:9092", "t");
        k.properties = vec![
            ("sasl.password".into(), "hunter2-secret".into()),
            ("sasl.username".into(), "bob".into()),
        ];
        let d = format!("{k:?}");
        assert!(!d.contains("hunter2-secret"), "{d}");
        assert!(
            d.contains("bob") && d.contains(crate::ops::settings::MASK),
            "{d}"
        );
    }
}
