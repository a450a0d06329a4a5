//! `--role merge`: reads the partials topic under read_committed, adds every aggregate
//! transaction's window sums and progress into one engine, closes windows by
//! W = min over the source partitions of (M_p − G) with SPEC §4's idle rule, and writes
//! through the committer exactly as the single-process job does: its checkpoint (one
//! synced RocksDB batch) holds the windows and its own next offset in the partials topic.

use super::partials::{self, Body, Checkpoint};
use super::{ClusterConfig, DistributedError};
use crate::aggregate::ResultSettings;
use crate::decode::JsonInvoiceDecoder;
use crate::job::{JobConfig, Run, RunSummary};
use crate::sink::Committer;
use crate::source::{SourceIdentity, SourceMismatch};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of the merge process.
#[derive(Debug, Clone)]
pub struct MergeConfig {
    pub cluster: ClusterConfig,
    /// Output, state, engine, limits, checkpoint interval, `close_at_end`: as one process.
    pub job: JobConfig,
    /// SPEC §4 idle timeout, applied to the aggregate processes' progress.
    pub idle_timeout: Duration,
    /// A bounded run: ends once every partition of the input is merged up to the end
    /// offsets the aggregate processes recorded (`--until end`).
    pub until_end: bool,
}

/// Where the merge is in the partials topic, and what it knows of the input: recorded
/// with every checkpoint as the store's source identity.
struct Position {
    next_offset: i64,
    input_topic: Option<String>,
    end_offsets: BTreeMap<u32, i64>,
}

/// What the idle rule needs of a partition's latest progress (not stored: after a
/// restart no partition is idle until its owner reports again).
#[derive(Default, Clone, Copy)]
struct Liveness {
    last_record_ms: Option<i64>,
    caught_up_ms: Option<i64>,
}

/// Runs the merge until `stop` is set or, with `until_end`, until the input is merged to
/// its end; writes through `sink`.
pub fn run(
    cfg: &MergeConfig,
    sink: &mut dyn Committer,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, DistributedError> {
    let c = &cfg.cluster;
    super::topics::ensure(c)?;
    let decoder = JsonInvoiceDecoder {
        limits: cfg.job.limits,
    };
    let (mut run, recorded) = Run::open(&cfg.job, decoder, &c.partials_topic, sink, &stop)?;
    let mut pos = match recorded {
        None => Position {
            next_offset: 0,
            input_topic: None,
            end_offsets: BTreeMap::new(),
        },
        Some(SourceIdentity::Partials {
            topic,
            next_offset,
            input_topic,
            end_offsets,
        }) if topic == c.partials_topic => Position {
            next_offset,
            input_topic,
            end_offsets,
        },
        Some(other) => {
            return Err(DistributedError::Job(crate::job::JobError::Source(Box::new(
                SourceMismatch(format!(
                    "the state store at {} was written by another source ({other:?}), not a merge of partials topic `{}`; give the merge a new state folder (and output folder)",
                    cfg.job.state.display(),
                    c.partials_topic
                )),
            ))))
        }
    };
    let consumer: BaseConsumer<super::Quiet> = c
        .client(&[
            ("group.id", "retail-kpi-merge"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("isolation.level", "read_committed"),
            ("enable.partition.eof", "false"),
            ("auto.offset.reset", "error"),
        ])
        .create_with_context(super::Quiet)
        .map_err(DistributedError::kafka(c, "creating the partials consumer"))?;
    let mut tpl = TopicPartitionList::new();
    // An explicit offset, 0 for a new merge: a start the brokers no longer have (the
    // topic's first records deleted) is an error, never a silent later start.
    let start = Offset::Offset(pos.next_offset);
    tpl.add_partition_offset(&c.partials_topic, 0, start)
        .map_err(DistributedError::kafka(c, "assigning the partials topic"))?;
    consumer
        .assign(&tpl)
        .map_err(DistributedError::kafka(c, "assigning the partials topic"))?;
    tracing::info!(partials = %c.partials_topic, from = pos.next_offset, "merge process started");
    let settings = ResultSettings::new(&cfg.job.engine, &cfg.job.limits);
    let mut live: BTreeMap<u32, Liveness> = BTreeMap::new();
    let mut last_checkpoint = Instant::now();
    let mut ended = false;
    let identity = |pos: &Position| {
        Some(SourceIdentity::Partials {
            topic: c.partials_topic.clone(),
            next_offset: pos.next_offset,
            input_topic: pos.input_topic.clone(),
            end_offsets: pos.end_offsets.clone(),
        })
    };
    loop {
        let deadline = last_checkpoint + cfg.job.checkpoint_interval;
        loop {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            match consumer.poll(wait) {
                None => {
                    if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                // With auto.offset.reset=error librdkafka reports _AUTO_OFFSET_RESET.
                Some(Err(e))
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(
                            rdkafka::types::RDKafkaErrorCode::OffsetOutOfRange
                                | rdkafka::types::RDKafkaErrorCode::AutoOffsetReset
                        )
                    ) =>
                {
                    return Err(DistributedError::Inconsistent(format!(
                        "offset {} of the partials topic `{}` is gone (retention, or the topic was created again): the merge cannot know what it missed. Start the group, the partials topics and the merge anew, with a longer retention.ms on the partials topic",
                        pos.next_offset, c.partials_topic
                    )))
                }
                Some(Err(e)) => tracing::warn!("partials consumer: {e}"),
                Some(Ok(m)) => {
                    let offset = m.offset();
                    let body = partials::decode(m.payload().unwrap_or(&[])).map_err(|error| {
                        DistributedError::Partials {
                            topic: c.partials_topic.clone(),
                            offset,
                            error,
                        }
                    })?;
                    let bad = |error| DistributedError::Partials {
                        topic: c.partials_topic.clone(),
                        offset,
                        error,
                    };
                    match body {
                        Body::Rejected(chunk) => {
                            for r in &chunk.records {
                                run.intake.keep_rejected(r.record().map_err(bad)?);
                            }
                        }
                        Body::Checkpoint(cp) => {
                            apply(&mut run, &cp, &settings, &mut pos, &mut live)
                                .map_err(|e| match e {
                                    Applied::Format(f) => bad(f),
                                    Applied::Other(d) => d,
                                })?;
                        }
                        // Resume records belong to the progress topic.
                        Body::Resume(_) => {}
                    }
                    pos.next_offset = offset + 1;
                    if Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        let now = wall_ms();
        let idle: BTreeSet<u32> = if cfg.until_end {
            at_end(&run, &pos)
        } else {
            let t = cfg.idle_timeout.as_millis() as i64;
            live.iter()
                .filter(|(_, l)| {
                    l.caught_up_ms.is_some_and(|c| now - c <= t)
                        && l.last_record_ms.is_none_or(|r| now - r >= t)
                })
                .map(|(p, _)| *p)
                .collect()
        };
        let now_ms = (!cfg.until_end).then_some(now);
        run.engine.advance(now_ms, &idle);
        if cfg.until_end && input_done(&run, &pos) {
            ended = true;
            break;
        }
        if stop.load(Ordering::Relaxed) {
            tracing::info!("stop requested: checkpointing, then exiting");
            break;
        }
        run.checkpoint(identity(&pos), false)?;
        last_checkpoint = Instant::now();
    }
    if ended && cfg.job.close_at_end {
        run.engine.close_all();
    }
    run.checkpoint(identity(&pos), true)?;
    let mut summary = run.summary.clone();
    summary.ended = ended;
    summary.records = run.engine.counters().read;
    summary.accepted = run.engine.counters().accepted;
    summary.rejected = run.engine.counters().rejected_total();
    Ok(summary)
}

enum Applied {
    Format(partials::FormatError),
    Other(DistributedError),
}

/// One aggregate transaction's checkpoint record into the engine.
fn apply(
    run: &mut Run<'_, JsonInvoiceDecoder>,
    cp: &Checkpoint,
    settings: &ResultSettings,
    pos: &mut Position,
    live: &mut BTreeMap<u32, Liveness>,
) -> Result<(), Applied> {
    let here = partials::settings_text(settings);
    if cp.settings != here {
        let changes: Vec<String> = here
            .iter()
            .filter(|(k, v)| cp.settings.get(*k) != Some(v))
            .map(|(k, v)| {
                let there = cp.settings.get(k).map_or("not given", String::as_str);
                format!("{k} is {there} there, {v} here")
            })
            .collect();
        return Err(Applied::Other(DistributedError::Settings(format!(
            "aggregate process {} runs with other result settings than this merge: {}. Every process of a job needs the same grace, max future skew, record, item and country limits: restart the aggregate processes or the merge with the same ones",
            cp.sender,
            changes.join("; ")
        ))));
    }
    match &pos.input_topic {
        None => pos.input_topic = Some(cp.topic.clone()),
        Some(t) if *t != cp.topic => {
            return Err(Applied::Other(DistributedError::Inconsistent(format!(
                "the partials topic holds partials of topic `{}` after partials of `{t}`; one partials topic serves one input topic: give each job its own --partials-topic",
                cp.topic
            ))))
        }
        Some(_) => {}
    }
    run.engine.assign(0..cp.partition_count);
    // The counts first: a window found closed moves its invoices from accepted to
    // window_closed.
    run.engine
        .add_counts(&cp.counts.counts().map_err(Applied::Format)?);
    for w in &cp.windows {
        let agg = w.window().map_err(Applied::Format)?;
        if let Err(n) = run.engine.merge_window(w.start, &agg) {
            tracing::warn!(
                window = %crate::event_time::format_instant(w.start),
                invoices = n,
                "invoices arrived for a window the idle rule had closed: counted as window_closed"
            );
        }
    }
    for p in &cp.progress {
        let m = partials::time_value(&p.max_event_time).map_err(Applied::Format)?;
        run.engine
            .apply_progress(p.partition, Some(p.next_offset), m)
            .map_err(|e| {
                Applied::Other(DistributedError::Inconsistent(format!(
                    "{e} in a record of {}: the partials are not the continuation of what this merge read (another topic under the same name, or a partials topic shared by two jobs); stop, and start the job anew with new topics and folders",
                    cp.sender
                )))
            })?;
        if let Some(e) = p.end_offset {
            pos.end_offsets.insert(p.partition, e);
        }
        live.insert(
            p.partition,
            Liveness {
                last_record_ms: p.last_record_ms,
                caught_up_ms: p.caught_up_ms,
            },
        );
    }
    Ok(())
}

/// A bounded run's idle partitions: those merged up to their end offset.
fn at_end(run: &Run<'_, JsonInvoiceDecoder>, pos: &Position) -> BTreeSet<u32> {
    run.engine
        .partitions()
        .iter()
        .filter(|(p, st)| {
            pos.end_offsets
                .get(p)
                .is_some_and(|e| st.next_offset.is_some_and(|n| n >= *e))
        })
        .map(|(p, _)| *p)
        .collect()
}

/// Whether every partition of the input is merged to its end.
fn input_done(run: &Run<'_, JsonInvoiceDecoder>, pos: &Position) -> bool {
    let parts = run.engine.partitions();
    !parts.is_empty() && at_end(run, pos).len() == parts.len()
}

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
