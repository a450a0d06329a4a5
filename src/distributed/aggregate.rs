//! `--role aggregate`: one of any number of processes in a consumer group over the input
//! topic. For each partition it owns it decides, as the single-process job does, which
//! invoices count, and every checkpoint interval it sends the window sums added since the
//! last one, with each owned partition's progress and the input offsets, in one Kafka
//! transaction. Nothing is kept on a local disk: a partition that moves resumes from the
//! offset and the resume record its last owner committed together.

use super::partials::{
    self, Body, Checkpoint, CountsJson, Progress, RejectedChunk, RejectedJson, Resume, WindowSums,
};
use super::txn::{
    in_group, transactional_producer, Watchdog, TRANSACTION_TIMEOUT_MS, TXN_CALL_TIMEOUT,
};
use super::{ClusterConfig, DistributedError};
use crate::aggregate::partial::WindowAgg;
use crate::aggregate::roles::ResumePoint;
use crate::aggregate::{Counters, Engine, EngineConfig, ResultSettings};
use crate::decode::invoice::Limits;
use crate::decode::JsonInvoiceDecoder;
use crate::job::Intake;
use crate::record::SourceRecord;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long transactions may keep failing (brokers restarting, a coordinator moving)
/// before the process gives up; each failure rewinds to the last committed state, after
/// a pause that grows with the failures in a row.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// A producer fenced sooner than this after it was made anew is not made again: two
/// processes share its transactional id.
const RENEW_AGAIN_AFTER: Duration = Duration::from_secs(60);

/// Longest wait of one request made while taking partitions over; the request is made
/// again until the take-over's own deadline, so that a stop request is seen in between.
const ASK_AT_MOST: Duration = Duration::from_secs(5);

/// Settings of one aggregate process.
#[derive(Debug, Clone)]
pub struct AggregateConfig {
    pub cluster: ClusterConfig,
    /// The input topic.
    pub topic: String,
    /// The consumer group every aggregate process of this job joins.
    pub group_id: String,
    /// This process's transactional id; unique per process (the group's generation, not
    /// this id, fences a process that lost its partitions).
    pub transactional_id: String,
    pub engine: EngineConfig,
    pub limits: Limits,
    pub checkpoint_interval: Duration,
    /// SPEC §4 idle timeout: how often a quiet, caught-up partition's progress is sent
    /// again (a third of it), so that the merge can apply the idle rule.
    pub idle_timeout: Duration,
    /// A bounded run: each partition is read up to the end offset recorded for it when it
    /// was first assigned, and the process exits once every partition is there.
    pub until_end: bool,
}

/// What an aggregate process did, for its summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AggregateSummary {
    pub records: u64,
    pub transactions: u64,
    pub rebalances: u64,
}

enum GroupEvent {
    Assigned(Vec<u32>),
    Revoked(Vec<u32>),
}

/// The consumer's context: rebalances are noted here, during `poll`, and handled by the
/// loop right after that `poll` returns, before any other record or transaction.
struct GroupContext {
    topic: String,
    events: Mutex<Vec<GroupEvent>>,
    pending: AtomicBool,
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
        // The end of a partition is not an error (the poll loop gets it too).
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

/// A partition this process owns.
struct Owned {
    engine: Engine,
    /// The engine's counters at the last transaction.
    since: Counters,
    /// The next offset to read.
    position: i64,
    end: Option<i64>,
    last_record_ms: Option<i64>,
    caught_up_ms: Option<i64>,
    /// Read from since the last transaction, or new here: its resume record and offset
    /// go with the next transaction.
    moved: bool,
}

/// Runs one aggregate process until `stop` is set, or, with `until_end`, until every
/// partition of the topic is read to its end.
pub fn run(
    cfg: &AggregateConfig,
    stop: Arc<AtomicBool>,
) -> Result<AggregateSummary, DistributedError> {
    super::topics::ensure(&cfg.cluster)?;
    let c = &cfg.cluster;
    let ctx = GroupContext {
        topic: cfg.topic.clone(),
        events: Mutex::new(Vec::new()),
        pending: AtomicBool::new(false),
    };
    let consumer: BaseConsumer<GroupContext> = c
        .client(&[
            ("group.id", &cfg.group_id),
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("isolation.level", "read_committed"),
            // A partition never committed starts at its beginning (SPEC §4: whatever
            // --start says, a partition new to the job is read from its first offset).
            ("auto.offset.reset", "earliest"),
            // A bounded run's end: the last offset of a transactional input topic is a
            // commit marker, never delivered as a record, so the end is known reached
            // from this event, as in one process.
            ("enable.partition.eof", "true"),
            // A member that stops polling (paused, stuck) holds a rebalance of the whole
            // group this long at most.
            ("max.poll.interval.ms", "60000"),
            // As the single-process source (src/source/kafka.rs): fetching is not paused
            // for librdkafka's default second whenever the local queue is full, and the
            // queue stays small. Without these, one process read 1M records in 12.5 s at
            // 42 % of a core.
            ("fetch.max.bytes", "8388608"),
            ("max.partition.fetch.bytes", "2097152"),
            ("queued.min.messages", "50000"),
            ("fetch.queue.backoff.ms", "10"),
            ("queued.max.messages.kbytes", "8192"),
        ])
        .create_with_context(ctx)
        .map_err(DistributedError::kafka(c, "creating the consumer"))?;
    consumer
        .subscribe(&[&cfg.topic])
        .map_err(DistributedError::kafka(c, "subscribing to the input topic"))?;
    let watchdog = Watchdog::start()?;
    let producer = transactional_producer(&cfg.cluster, &cfg.transactional_id, &watchdog)?;
    let mut agg = Aggregator {
        cfg,
        consumer: &consumer,
        producer,
        intake: Intake::new(JsonInvoiceDecoder { limits: cfg.limits }, &cfg.topic),
        owned: BTreeMap::new(),
        settings: ResultSettings::new(&cfg.engine, &cfg.limits),
        partition_count: 0,
        summary: AggregateSummary::default(),
        last_progress: Instant::now(),
        failing_since: None,
        failures: 0,
        renewed_at: None,
        stop: stop.clone(),
        out_of_group: false,
        watchdog,
    };
    tracing::info!(group = %cfg.group_id, topic = %cfg.topic, partials = %c.partials_topic, id = %cfg.transactional_id, "aggregate process started");
    let mut last_txn = Instant::now();
    let mut last_done_check: Option<Instant> = None;
    loop {
        let deadline = last_txn + cfg.checkpoint_interval;
        let mut polled = 0usize;
        while polled < 4096 {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            let msg = consumer.poll(wait);
            agg.handle_events()?;
            match msg {
                None => {
                    if Instant::now() >= deadline
                        || stop.load(Ordering::Relaxed)
                        || (cfg.until_end && agg.all_at_end())
                    {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => agg.reached_end(p),
                Some(Err(e)) => tracing::warn!("consumer: {e}"),
                Some(Ok(m)) => {
                    polled += 1;
                    agg.process(&m);
                }
            }
        }
        let stopping = stop.load(Ordering::Relaxed);
        if stopping || Instant::now() >= deadline {
            agg.transaction_or_rewind(false)?;
            last_txn = Instant::now();
        }
        if stopping {
            tracing::info!("stop requested: the last transaction is committed, leaving the group");
            break;
        }
        if cfg.until_end
            && agg.all_at_end()
            && last_done_check.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            last_done_check = Some(Instant::now());
            agg.transaction_or_rewind(true)?;
            if agg.every_partition_done()? {
                tracing::info!("every partition of the topic is read to its end");
                break;
            }
        }
    }
    let summary = agg.summary.clone();
    drop(agg);
    // Leaving the group hands the partitions over at once instead of after the session
    // timeout.
    consumer.unsubscribe();
    Ok(summary)
}

struct Aggregator<'a> {
    cfg: &'a AggregateConfig,
    consumer: &'a BaseConsumer<GroupContext>,
    producer: ThreadedProducer<super::Quiet>,
    intake: Intake<JsonInvoiceDecoder>,
    owned: BTreeMap<u32, Owned>,
    settings: ResultSettings,
    partition_count: u32,
    summary: AggregateSummary,
    /// When progress was last sent for every owned partition.
    last_progress: Instant,
    /// Since when transactions (or the rewinds after them) have been failing, and how
    /// many times in a row.
    failing_since: Option<Instant>,
    failures: u32,
    /// When the producer was last made anew after it was fenced.
    renewed_at: Option<Instant>,
    /// Set when the process is asked to stop; long waits look at it.
    stop: Arc<AtomicBool>,
    /// Whether the last transaction found the process out of its group.
    out_of_group: bool,
    watchdog: Watchdog,
}

impl Aggregator<'_> {
    fn process(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) {
        let p = m.partition() as u32;
        // Records of a partition that just went are no longer ours.
        let Some(o) = self.owned.get_mut(&p) else {
            return;
        };
        let offset = m.offset();
        if o.end.is_some_and(|e| offset >= e) {
            return;
        }
        let value = m.payload().unwrap_or(&[]);
        let rec = SourceRecord {
            partition: p,
            offset,
            timestamp_ms: m.timestamp().to_millis().filter(|&ts| ts >= 0),
            value,
            full_len: None,
        };
        self.intake.process(&mut o.engine, rec);
        // A record below the position (one the engine skips as read before) moves nothing.
        o.position = o.position.max(offset + 1);
        o.last_record_ms = Some(wall_ms());
        o.moved = true;
        self.summary.records += 1;
    }

    /// The consumer read partition `p` to the brokers' end as of now, which is at or past
    /// the end a bounded run reads to: what lies between the last record and that end
    /// (transaction markers, records of aborted transactions) is read too.
    fn reached_end(&mut self, p: i32) {
        if let Some(o) = self.owned.get_mut(&(p as u32)) {
            if let Some(e) = o.end.filter(|&e| o.position < e) {
                o.position = e;
                o.moved = true;
            }
        }
    }

    fn handle_events(&mut self) -> Result<(), DistributedError> {
        let ctx = self.consumer.context();
        if !ctx.pending.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let events = std::mem::take(&mut *ctx.events.lock().unwrap_or_else(|p| p.into_inner()));
        for e in events {
            self.summary.rebalances += 1;
            match e {
                GroupEvent::Revoked(ps) => {
                    for p in &ps {
                        // What was read of it since the last transaction is dropped: its
                        // next owner reads it again from the committed offset.
                        self.owned.remove(p);
                        self.intake.forget_partition(*p);
                    }
                    tracing::info!(partitions = ?ps, "partitions revoked");
                }
                GroupEvent::Assigned(ps) => {
                    self.assign(&ps)?;
                    tracing::info!(partitions = ?ps, owned = ?self.owned.keys().collect::<Vec<_>>(), "partitions assigned");
                }
            }
        }
        Ok(())
    }

    /// The input topic's partitions the consumer is assigned, as librdkafka sees it; `None`
    /// when it cannot say.
    fn assigned(&self) -> Option<Vec<u32>> {
        let tpl = self.consumer.assignment().ok()?;
        let mut ps: Vec<u32> = tpl
            .elements()
            .iter()
            .filter(|e| e.topic() == self.cfg.topic)
            .map(|e| e.partition() as u32)
            .collect();
        ps.sort_unstable();
        ps.dedup();
        Some(ps)
    }

    /// Makes the owned partitions those the consumer is assigned. The rebalance callbacks
    /// say what changed, but an assignment librdkafka refused (rust-rdkafka calls the
    /// post-rebalance hook whatever `incremental_assign` returned, for example for a
    /// member whose assignment was lost meanwhile) is reported as made; a partition kept
    /// here that the consumer does not fetch would have its stale offset committed with a
    /// valid generation, and the group checks generations, not owners.
    fn reconcile(&mut self) -> Result<(), DistributedError> {
        let Some(assigned) = self.assigned() else {
            return Ok(());
        };
        let stale: Vec<u32> = self
            .owned
            .keys()
            .filter(|p| assigned.binary_search(p).is_err())
            .copied()
            .collect();
        if !stale.is_empty() {
            tracing::warn!(partitions = ?stale, "partitions the consumer is not assigned: dropped, with what was read of them since the last transaction");
            for p in &stale {
                self.owned.remove(p);
                self.intake.forget_partition(*p);
            }
        }
        let missing: Vec<u32> = assigned
            .iter()
            .filter(|p| !self.owned.contains_key(p))
            .copied()
            .collect();
        if !missing.is_empty() {
            tracing::warn!(partitions = ?missing, "partitions the consumer is assigned but no rebalance reported: taken over from their committed offsets");
            self.take_over(&missing)?;
        }
        Ok(())
    }

    /// Takes partitions over (`assign`) and moves the consumer to their committed
    /// positions, for partitions it may have fetched past them.
    fn take_over(&mut self, ps: &[u32]) -> Result<(), DistributedError> {
        self.assign(ps)?;
        let c = &self.cfg.cluster;
        for p in ps {
            if let Some(o) = self.owned.get(p) {
                self.consumer
                    .seek(
                        &self.cfg.topic,
                        *p as i32,
                        Offset::Offset(o.position),
                        c.timeout,
                    )
                    .map_err(DistributedError::kafka(
                        c,
                        format!("moving partition {p} to offset {}", o.position),
                    ))?;
            }
        }
        Ok(())
    }

    /// Takes partitions over from the offsets and resume records their last owner
    /// committed in one transaction; the two must agree.
    fn assign(&mut self, ps: &[u32]) -> Result<(), DistributedError> {
        if ps.is_empty() {
            return Ok(());
        }
        let c = &self.cfg.cluster;
        let topic = &self.cfg.topic;
        let mut tpl = TopicPartitionList::new();
        for p in ps {
            tpl.add_partition(topic, *p as i32);
        }
        // With read_committed, Kafka answers only once no transaction of a previous owner
        // is pending on these offsets (KIP-447), which may take until a killed owner's
        // transaction times out: the whole take-over may take that long, but each request
        // is short, so a stop request is seen within a few seconds whatever the brokers do.
        let deadline = Instant::now()
            + c.timeout
            + Duration::from_millis(2 * TRANSACTION_TIMEOUT_MS.parse::<u64>().unwrap_or(0));
        let stop = &self.stop;
        let read_committed = || -> Result<Option<BTreeMap<u32, Option<i64>>>, DistributedError> {
            let tpl = loop {
                if stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                match self.consumer.committed_offsets(
                    tpl.clone(),
                    left.clamp(Duration::from_millis(100), ASK_AT_MOST),
                ) {
                    Ok(tpl) => break tpl,
                    Err(e) if !left.is_zero() => {
                        tracing::debug!("reading the committed offsets failed ({e}); again");
                        std::thread::sleep(Duration::from_millis(250));
                    }
                    Err(e) => {
                        return Err(DistributedError::kafka(c, "reading the committed offsets")(
                            e,
                        ))
                    }
                }
            };
            Ok(Some(
                tpl.elements()
                    .iter()
                    .map(|e| {
                        let off = match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        };
                        (e.partition() as u32, off)
                    })
                    .collect(),
            ))
        };
        self.partition_count = self.topic_partitions()?;
        // Both are read again until they agree: a transaction of another owner that commits
        // between the two reads (a process taking back partitions it is about to lose)
        // shows the offsets of one transaction and the resume records of the next.
        let (committed, resumes) = loop {
            let Some(committed) = read_committed()? else {
                // Leaving anyway: the partitions go to another process, which reads them
                // from what was committed.
                tracing::info!(partitions = ?ps, "stop requested while taking partitions over: not taken");
                return Ok(());
            };
            let resumes = read_resumes(c, topic)?;
            let agree = ps.iter().all(|p| {
                committed.get(p).copied().flatten() == resumes.get(p).and_then(|r| r.next_offset)
            });
            if agree {
                break (committed, resumes);
            }
            // A transaction of another process may still hold the progress topic's end.
            if Instant::now() >= deadline {
                let detail: Vec<String> = ps
                    .iter()
                    .map(|p| {
                        format!(
                            "partition {p}: committed offset {:?}, resume record {:?}",
                            committed.get(p).copied().flatten(),
                            resumes.get(p).and_then(|r| r.next_offset)
                        )
                    })
                    .collect();
                return Err(DistributedError::Inconsistent(format!(
                    "the group's committed offsets and the progress topic `{}` disagree ({}). They are written in one transaction; a disagreement means the progress topic was deleted or the group's offsets expired (offsets.retention.minutes). Start the group, the partials topics and the merge anew, or restore the topic",
                    c.progress_topic,
                    detail.join("; ")
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        for &p in ps {
            let (low, high) = retried(c.timeout, || {
                self.consumer
                    .fetch_watermarks(topic, p as i32, Duration::from_secs(5))
            })
            .map_err(DistributedError::kafka(
                c,
                format!("reading the offsets of partition {p}"),
            ))?;
            let resume = resumes.get(&p);
            let position = match committed.get(&p).copied().flatten() {
                Some(at) if at < low || at > high => {
                    return Err(DistributedError::DataLoss {
                        topic: topic.clone(),
                        details: format!(
                            "partition {p}: committed offset {at}, the brokers have offsets {low}..{high}"
                        ),
                    })
                }
                Some(at) => at,
                None => low,
            };
            // A bounded run keeps the end its partition got when a bounded run first
            // assigned it, until that end is reached; an end an earlier run reached is
            // over (a new bounded run reads to today's end), and a live run has none.
            let end = match resume.and_then(|r| r.end_offset.map(|e| (e, r.next_offset))) {
                _ if !self.cfg.until_end => None,
                Some((e, next)) if next.is_none_or(|n| n < e) => Some(e),
                _ => Some(high),
            };
            let mut point = match resume {
                Some(r) => r.point().map_err(|error| DistributedError::Partials {
                    topic: c.progress_topic.clone(),
                    offset: -1,
                    error,
                })?,
                None => ResumePoint::default(),
            };
            point.state.next_offset = Some(position);
            let engine = Engine::for_partition(self.cfg.engine, p, point);
            self.owned.insert(
                p,
                Owned {
                    since: engine.counters().clone(),
                    engine,
                    position,
                    end,
                    // As one process does: quiet time counts from the assignment, so a
                    // partition that moves is not idle at its new owner at once.
                    last_record_ms: Some(wall_ms()),
                    caught_up_ms: None,
                    moved: true,
                },
            );
        }
        Ok(())
    }

    fn topic_partitions(&self) -> Result<u32, DistributedError> {
        let c = &self.cfg.cluster;
        let md = retried(c.timeout, || {
            self.consumer
                .fetch_metadata(Some(&self.cfg.topic), Duration::from_secs(5))
        })
        .map_err(DistributedError::kafka(
            c,
            "reading the input topic's metadata",
        ))?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == self.cfg.topic)
            .map_or(0, |t| t.partitions().len() as u32))
    }

    /// A transaction; when it fails for a reason other than fencing (brokers restarting, a
    /// coordinator moving), what it held is lost from memory, so every owned partition
    /// goes back to what was last committed and is read again from there.
    fn transaction_or_rewind(&mut self, force: bool) -> Result<(), DistributedError> {
        let mut result = self.transaction(force);
        loop {
            match result {
                Ok(()) => {
                    self.failing_since = None;
                    self.failures = 0;
                    return Ok(());
                }
                Err(DistributedError::Kafka { what, error, .. })
                    if self
                        .failing_since
                        .is_none_or(|t| t.elapsed() < GIVE_UP_AFTER) =>
                {
                    self.failing_since.get_or_insert_with(Instant::now);
                    self.failures += 1;
                    // A stale generation is the group moving on (a rebalance); the others
                    // are brokers restarting or a coordinator moving.
                    tracing::warn!(
                        failures = self.failures,
                        "transaction aborted ({what}: {error}); reading the owned partitions again from their last committed offsets"
                    );
                    std::thread::sleep(Duration::from_millis(
                        100 * u64::from(self.failures.min(20)),
                    ));
                    // The rewind asks the brokers too: it is retried the same way.
                    result = self.rewind();
                    if result.is_ok() {
                        return Ok(());
                    }
                }
                // The brokers abort a transaction left open past `transaction.timeout.ms`
                // (the process paused or cut off meanwhile) and fence its producer, as they
                // do when another process starts with the same transactional id. A new
                // producer with the id fences the other one in turn: if this one is fenced
                // again soon after, two processes share the id, and it stops.
                Err(DistributedError::Fenced(why))
                    if self
                        .renewed_at
                        .is_none_or(|t| t.elapsed() >= RENEW_AGAIN_AFTER) =>
                {
                    tracing::warn!("the producer was fenced ({why}): its transaction was aborted by the brokers; a new producer with the same transactional id, and the owned partitions read again from their last committed offsets");
                    self.producer = transactional_producer(
                        &self.cfg.cluster,
                        &self.cfg.transactional_id,
                        &self.watchdog,
                    )?;
                    self.renewed_at = Some(Instant::now());
                    result = self.rewind();
                    if result.is_ok() {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn rewind(&mut self) -> Result<(), DistributedError> {
        self.owned.clear();
        self.intake.take_rejected();
        if self.consumer.assignment_lost() || !in_group(self.consumer) {
            // Out of the group (a session that ended while the process was paused or cut
            // off): its partitions are being handed to others, who commit them meanwhile;
            // nothing is taken back. The next poll revokes them and joins again, and what
            // the consumer is still assigned then is taken over by `reconcile`.
            tracing::info!(
                "out of the group: every partition dropped until the group assigns them again"
            );
            return Ok(());
        }
        // The consumer's assignment, not `owned`: a rewind that failed half-way left
        // `owned` short, and a partition missing there would be ignored for good.
        let Some(ps) = self.assigned() else {
            // `reconcile` takes the assignment over at the next transaction.
            return Ok(());
        };
        self.take_over(&ps)
    }

    /// Whether every owned partition is read to its end offset (a bounded run).
    fn all_at_end(&self) -> bool {
        self.owned
            .values()
            .all(|o| o.end.is_some_and(|e| o.position >= e))
    }

    /// Notes, for the quiet partitions, whether the brokers confirm that everything in
    /// them was read (the idle rule's "broker-confirmed").
    fn confirm_caught_up(&mut self) {
        // A bounded run's idleness is its end offsets: no broker request needed.
        if self.cfg.until_end {
            return;
        }
        let topic = &self.cfg.topic;
        for (p, o) in self.owned.iter_mut() {
            if o.moved {
                continue;
            }
            if let Ok((_, high)) =
                self.consumer
                    .fetch_watermarks(topic, *p as i32, Duration::from_secs(1))
            {
                if o.position >= high {
                    o.caught_up_ms = Some(wall_ms());
                }
            }
        }
    }

    /// One transaction: the rejected records, the window sums since the last one and each
    /// owned partition's progress to the partials topic, resume records of the partitions
    /// that moved to the progress topic, and their offsets to the group. Sent when
    /// something moved, or (`force`, and every third of the idle timeout) to refresh the
    /// progress of quiet partitions.
    fn transaction(&mut self, force: bool) -> Result<(), DistributedError> {
        if self.consumer.assignment_lost() || !in_group(self.consumer) {
            // The group went on without this process (a pause, a session that timed out),
            // or it has not joined yet: nothing is committed; the next poll revokes the
            // partitions, and what was read of them since the last transaction is dropped
            // with them. Said once per episode, and only when there was something to lose.
            if !self.out_of_group && !self.owned.is_empty() {
                tracing::warn!("this process is out of the group (its session ended) and its partitions are lost to it: nothing committed; it joins again");
            }
            self.out_of_group = true;
            return Ok(());
        }
        self.out_of_group = false;
        self.reconcile()?;
        self.confirm_caught_up();
        let refresh = self.last_progress.elapsed() >= self.cfg.idle_timeout / 3;
        let moved = self.owned.values().any(|o| o.moved);
        if !(moved || force || refresh) || self.owned.is_empty() {
            return Ok(());
        }
        let c = &self.cfg.cluster;
        let mut windows: BTreeMap<i64, WindowAgg> = BTreeMap::new();
        let mut counts = crate::aggregate::roles::Counts::default();
        let mut progress = Vec::new();
        let mut resumes = Vec::new();
        let mut offsets = TopicPartitionList::new();
        for (p, o) in self.owned.iter_mut() {
            let n = o.engine.counts_since(&o.since);
            o.since = o.engine.counters().clone();
            counts.read += n.read;
            counts.accepted += n.accepted;
            for (a, b) in counts.rejected.iter_mut().zip(n.rejected) {
                *a += b;
            }
            for (s, w) in o.engine.take_partials() {
                windows.entry(s).or_default().merge(&w);
            }
            let point = o.engine.resume_point(*p);
            progress.push(Progress {
                partition: *p,
                next_offset: o.position,
                max_event_time: partials::time_text(point.state.max_event_time),
                end_offset: o.end,
                last_record_ms: o.last_record_ms,
                caught_up_ms: o.caught_up_ms,
            });
            if o.moved {
                let mut point = point;
                point.state.next_offset = Some(o.position);
                resumes.push((*p, Resume::of(&self.cfg.topic, *p, &point, o.end)));
            }
            // Every owned partition's offset, moved or not: the group checks the
            // generation of a transaction's offsets, and a transaction without any (a
            // progress refresh) would go unchecked, so a process that lost its partitions
            // while paused could still commit their progress. (`reconcile` made sure that
            // the consumer owns each of them: the group checks the generation, not who
            // owns a partition.)
            offsets
                .add_partition_offset(&self.cfg.topic, *p as i32, Offset::Offset(o.position))
                .map_err(DistributedError::kafka(c, "listing the offsets"))?;
        }
        let rejected = self.intake.take_rejected();
        let checkpoint = Body::Checkpoint(Checkpoint {
            topic: self.cfg.topic.clone(),
            partition_count: self.partition_count,
            settings: partials::settings_text(&self.settings),
            sender: self.cfg.transactional_id.clone(),
            progress,
            windows: windows.iter().map(|(s, w)| WindowSums::of(*s, w)).collect(),
            counts: CountsJson::of(&counts),
        });
        let mut records: Vec<(&str, Option<String>, Vec<u8>)> = rejected
            .chunks(partials::REJECTED_PER_RECORD)
            .map(|chunk| {
                let body = Body::Rejected(RejectedChunk {
                    records: chunk.iter().map(RejectedJson::of).collect(),
                });
                (c.partials_topic.as_str(), None, partials::encode(&body))
            })
            .collect();
        records.push((
            c.partials_topic.as_str(),
            None,
            partials::encode(&checkpoint),
        ));
        for (p, r) in &resumes {
            records.push((
                c.progress_topic.as_str(),
                Some(p.to_string()),
                partials::encode(&Body::Resume(r.clone())),
            ));
        }
        let started = Instant::now();
        self.commit(&records, &offsets)?;
        tracing::debug!(
            records = records.len(),
            bytes = records.iter().map(|r| r.2.len()).sum::<usize>(),
            ms = started.elapsed().as_millis() as u64,
            "transaction committed"
        );
        for o in self.owned.values_mut() {
            o.moved = false;
        }
        self.last_progress = Instant::now();
        self.summary.transactions += 1;
        crate::failpoint!("aggregate.after_commit");
        Ok(())
    }

    fn commit(
        &self,
        records: &[(&str, Option<String>, Vec<u8>)],
        offsets: &TopicPartitionList,
    ) -> Result<(), DistributedError> {
        let c = &self.cfg.cluster;
        let fail = |what: &str, e: KafkaError| -> DistributedError {
            use rdkafka::types::RDKafkaErrorCode as Code;
            // Another producer took this transactional id: this process is a zombie of
            // itself. (A stale group generation is not this: it comes with every
            // rebalance, and the transaction is aborted and the partitions read again.)
            let fenced = matches!(
                e.rdkafka_error_code(),
                Some(Code::Fenced | Code::ProducerFenced | Code::InvalidProducerEpoch)
            );
            if fenced {
                DistributedError::Fenced(format!("{what}: {e}"))
            } else {
                DistributedError::Kafka {
                    what: what.into(),
                    brokers: c.brokers.clone(),
                    error: Box::new(e),
                }
            }
        };
        self.producer
            .begin_transaction()
            .map_err(|e| fail("beginning a transaction", e))?;
        let attempt = || -> Result<(), DistributedError> {
            for (topic, key, payload) in records {
                let mut rec: BaseRecord<'_, String, Vec<u8>> =
                    BaseRecord::to(topic).payload(payload);
                if let Some(k) = key {
                    rec = rec.key(k);
                }
                let mut rec = rec;
                let full_since = Instant::now();
                loop {
                    match self.producer.send(rec) {
                        Ok(()) => break,
                        Err((
                            KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull,
                            ),
                            back,
                        )) if full_since.elapsed() < TXN_CALL_TIMEOUT => {
                            // The producer's own thread delivers; wait for room. A queue
                            // that stays full (the brokers gone) fails the transaction,
                            // which is aborted and rewound like any other.
                            std::thread::sleep(Duration::from_millis(10));
                            rec = back;
                        }
                        Err((e, _)) => return Err(fail("sending a partials record", e)),
                    }
                }
            }
            if offsets.count() > 0 {
                let meta = self.consumer.group_metadata().ok_or_else(|| {
                    DistributedError::Fenced("the consumer is not in the group".into())
                })?;
                // Checked after `meta` was taken: a member id, once lost, comes back only
                // when the process joins again, which needs a poll.
                if !in_group(self.consumer) {
                    return Err(fail(
                        "this process left the group while committing (its session ended)",
                        KafkaError::ConsumerCommit(
                            rdkafka::types::RDKafkaErrorCode::UnknownMemberId,
                        ),
                    ));
                }
                self.watchdog
                    .watch("send_offsets_to_transaction", TXN_CALL_TIMEOUT, || {
                        self.producer
                            .send_offsets_to_transaction(offsets, &meta, TXN_CALL_TIMEOUT)
                    })
                    .map_err(|e| fail("adding the input offsets to the transaction", e))?;
            }
            // A commit that timed out goes on in the background and may still complete:
            // librdkafka wants it called again (nothing else is allowed meanwhile), and
            // aborted only when it says the transaction requires it.
            let deadline = Instant::now() + c.timeout;
            loop {
                match self
                    .watchdog
                    .watch("commit_transaction", TXN_CALL_TIMEOUT, || {
                        self.producer.commit_transaction(TXN_CALL_TIMEOUT)
                    }) {
                    Ok(()) => return Ok(()),
                    Err(KafkaError::Transaction(t))
                        if t.is_retriable()
                            && !t.txn_requires_abort()
                            && Instant::now() < deadline =>
                    {
                        tracing::debug!("committing the transaction: {t}; again");
                    }
                    Err(e) => return Err(fail("committing the transaction", e)),
                }
            }
        };
        match attempt() {
            Ok(()) => Ok(()),
            Err(e) => {
                // What was taken for this transaction is gone from memory: the caller
                // reads the owned partitions again from what was committed, or stops.
                // An abort that times out must be called again before anything else.
                let deadline = Instant::now() + 2 * c.timeout;
                loop {
                    let t = Duration::from_secs(5);
                    match self.watchdog.watch("abort_transaction", t, || {
                        self.producer.abort_transaction(t)
                    }) {
                        Ok(()) => return Err(e),
                        Err(KafkaError::Transaction(t))
                            if t.is_retriable() && Instant::now() < deadline =>
                        {
                            tracing::debug!("aborting the transaction: {t}; again");
                        }
                        Err(abort) => {
                            tracing::warn!("the failed transaction cannot be aborted: {abort}");
                            return Err(fail("aborting a failed transaction", abort));
                        }
                    }
                }
            }
        }
    }

    /// Whether the progress topic shows every partition of the topic at its end offset.
    fn every_partition_done(&self) -> Result<bool, DistributedError> {
        let n = self.topic_partitions()?;
        let resumes = read_resumes(&self.cfg.cluster, &self.cfg.topic)?;
        tracing::debug!(partitions = n, resumes = ?resumes.values().map(|r| (r.partition, r.next_offset, r.end_offset)).collect::<Vec<_>>(), "end check");
        Ok(n > 0
            && (0..n).all(|p| {
                resumes.get(&p).is_some_and(|r| {
                    r.end_offset
                        .is_some_and(|e| r.next_offset.is_some_and(|n| n >= e))
                })
            }))
    }
}

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

/// A request to the brokers, made again while it fails, for `within` at most: a leader
/// moving or a broker restarting answers `NotLeaderForPartition` or times out for a few
/// seconds, and must not stop the process. The last error is returned.
fn retried<T>(
    within: Duration,
    mut call: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, KafkaError> {
    let deadline = Instant::now() + within;
    loop {
        match call() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("a request to the brokers failed ({e}); again");
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => return Err(e),
        }
    }
}

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
