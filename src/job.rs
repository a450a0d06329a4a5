//! The job loop: source → parse → aggregate → checkpoint → render.
//!
//! Records flow one way. The engine changes state in memory; every checkpoint interval the
//! job commits the engine's delta in one synced batch, and only then writes the files that
//! the committed state says are due. A crash anywhere leaves either the old or the new
//! checkpoint; files are rendered from committed rows only, so writing them again after a
//! restart gives the same bytes.

use crate::aggregate::{Engine, EngineConfig, ResultSettings};
use crate::decode::invoice::Invoice;
use crate::ops::metrics::Metrics;
use crate::sink::local::{FileSink, SinkError, Written};
use crate::sink::render::{render_bucket, render_rejected, Family};
use crate::source::{Gap, Poll, Source, SourceError};
use crate::state::{StateError, Store};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Folder of the output files.
    pub out: PathBuf,
    /// Folder of the RocksDB state store.
    pub state: PathBuf,
    pub engine: EngineConfig,
    /// Time between checkpoints (and at the end of input).
    pub checkpoint_interval: Duration,
    /// Close every window when a bounded source ends (always for a file).
    pub close_at_end: bool,
    /// Print the per-invoice summary of SPEC §5 to standard output.
    pub print_invoices: bool,
    /// Records handed over per poll; the loop looks at the clock between polls.
    pub batch: usize,
    /// Where the loop publishes its metrics and readiness, if they are served.
    pub metrics: Option<Arc<Metrics>>,
    /// Most files written in one rendering step; each step is recorded in the store before
    /// the next, so that a job killed however often still gets through a large backlog
    /// of due files, and a stop waits for one step at most.
    pub render_step: usize,
}

impl JobConfig {
    pub fn new(out: PathBuf, state: PathBuf) -> JobConfig {
        JobConfig {
            out,
            state,
            engine: EngineConfig::default(),
            checkpoint_interval: Duration::from_secs(1),
            close_at_end: true,
            print_invoices: false,
            batch: 4096,
            metrics: None,
            render_step: 256,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("source: {0}")]
    Source(SourceError),
    #[error("writing the invoice summary to standard output failed: {0}")]
    Stdout(std::io::Error),
    #[error("the state store at {path} holds results computed with other settings: {changes}. A result mixes no two settings: run with the recorded values, or move the state folder aside (and use a new output folder) to compute everything again with the new ones")]
    SettingsChanged { path: PathBuf, changes: String },
}

/// What a run did, for the summary line and the tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub records: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub checkpoints: u64,
    pub files_written: u64,
    /// The source ended (rather than a stop request).
    pub ended: bool,
}

/// Runs the job until the source ends or `stop` is set. Returns after a final checkpoint.
pub fn run(
    cfg: &JobConfig,
    source: &mut dyn Source,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, JobError> {
    let store = Store::open(&cfg.state)?;
    let mut restored = store.load()?;
    check_settings(cfg, restored.settings.as_ref())?;
    let recorded_source = restored.source.take();
    let mut engine = Engine::restore(cfg.engine, restored);
    let sink = FileSink::new(&cfg.out)?;
    let mut summary = RunSummary::default();
    let metrics = cfg.metrics.as_deref();
    // A crash may have left committed files unwritten: write them before anything else.
    let step = RenderStep {
        files: cfg.render_step.max(1),
        stop: &stop,
    };
    render_due(
        &mut engine,
        &store,
        &sink,
        &mut summary,
        metrics,
        &step,
        false,
    )?;
    engine.set_topic(source.name());
    source
        .verify(recorded_source.as_ref())
        .map_err(JobError::Source)?;
    source
        .resume(engine.partitions())
        .map_err(JobError::Source)?;
    record_gaps(&mut engine, &sink, source.take_gaps(), metrics)?;
    engine.assign(source.partitions());
    let start_counters = engine.counters().clone();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut out_err: Option<std::io::Error> = None;
    let mut last_checkpoint = Instant::now();
    // Metrics are published per batch, but at most this often: a live source that yields
    // one record per poll must not pay for a publication per record.
    let publish_every = Duration::from_millis(100);
    let mut last_publish: Option<Instant> = None;
    loop {
        let print = cfg.print_invoices;
        let polled = source
            .poll(cfg.batch, &mut |rec| {
                if let Some(inv) = engine.process(rec) {
                    if print && out_err.is_none() {
                        if let Err(e) = print_invoice(&mut out, &inv) {
                            out_err = Some(e);
                        }
                    }
                }
            })
            .map_err(JobError::Source)?;
        if let Some(e) = out_err.take() {
            return Err(JobError::Stdout(e));
        }
        // Recovery measurement (README "Chaos and recovery"): the first records of this run,
        // i.e. the end of recovery after a restart; the harness times it from the spawn.
        if let Poll::Records(n) = polled {
            if n > 0 && engine.counters().read - start_counters.read == n as u64 {
                tracing::info!(records = n, "first records processed after start");
            }
        }
        record_gaps(&mut engine, &sink, source.take_gaps(), metrics)?;
        // Partitions added to the topic join the watermark as soon as the source sees them.
        engine.assign(source.partitions());
        let ended = polled == Poll::End;
        let now_ms = source
            .is_live()
            .then(|| chrono::Utc::now().timestamp_millis());
        let idle = source.idle();
        engine.advance(now_ms, &idle);
        if let Some(m) = metrics {
            if last_publish.is_none_or(|t| t.elapsed() >= publish_every) {
                let w = engine.watermark(now_ms, &idle);
                publish(m, &engine, &start_counters, w);
                m.observe_source(&source.partitions(), source.lag().as_ref());
                last_publish = Some(Instant::now());
            }
        }
        if ended {
            summary.ended = true;
            break;
        }
        if stop.load(Ordering::Relaxed) {
            tracing::info!(
                "stop requested (SIGTERM, SIGINT or SIGHUP): checkpointing, then exiting"
            );
            if let Some(m) = metrics {
                m.stopping();
            }
            break;
        }
        // Early when bad records pile up: they are held until a checkpoint commits them.
        if last_checkpoint.elapsed() >= cfg.checkpoint_interval
            || engine.buffered_bytes() >= MAX_BUFFERED_BYTES
        {
            out.flush().map_err(JobError::Stdout)?;
            checkpoint(
                &mut engine,
                &store,
                &sink,
                source,
                &mut summary,
                metrics,
                &step,
                false,
            )?;
            last_checkpoint = Instant::now();
        }
    }
    if summary.ended && cfg.close_at_end {
        engine.close_all();
    }
    out.flush().map_err(JobError::Stdout)?;
    // The last rendering step records itself: one checkpoint ends the run.
    checkpoint(
        &mut engine,
        &store,
        &sink,
        source,
        &mut summary,
        metrics,
        &step,
        true,
    )?;
    if let Some(m) = metrics {
        let now_ms = source
            .is_live()
            .then(|| chrono::Utc::now().timestamp_millis());
        let w = engine.watermark(now_ms, &source.idle());
        publish(m, &engine, &start_counters, w);
    }
    let c = engine.counters();
    summary.records = c.read - start_counters.read;
    summary.accepted = c.accepted - start_counters.accepted;
    summary.rejected = c.rejected_total() - start_counters.rejected_total();
    Ok(summary)
}

/// Rejected records held in memory before a checkpoint is taken early (they are held three
/// times over while it commits: the engine's, the delta's, RocksDB's batch).
const MAX_BUFFERED_BYTES: usize = 32 << 20;

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The engine's side of the metrics; `watermark` as the batch left it.
fn publish(
    m: &Metrics,
    engine: &Engine,
    start: &crate::aggregate::Counters,
    watermark: Option<crate::event_time::EventTime>,
) {
    m.observe_counters(engine.counters(), start, engine.lateness());
    // BTreeMap's iterator knows its length: no walk over the windows.
    m.observe_windows(watermark, wall_ms(), engine.open_windows().size_hint().0);
}

/// A store made with other settings that change results is refused (SPEC §6).
fn check_settings(cfg: &JobConfig, recorded: Option<&ResultSettings>) -> Result<(), JobError> {
    let Some(have) = recorded else {
        return Ok(());
    };
    let want = ResultSettings::from(&cfg.engine);
    if *have == want {
        return Ok(());
    }
    let changes: Vec<String> = have
        .describe()
        .into_iter()
        .zip(want.describe())
        .filter(|(a, b)| a.1 != b.1)
        .map(|((name, old), (_, new))| format!("{name} is {old} in the store, {new} now"))
        .collect();
    Err(JobError::SettingsChanged {
        path: cfg.state.clone(),
        changes: changes.join("; "),
    })
}

/// Writes each gap the source found to `<out>/gaps/`, then moves its partition on.
fn record_gaps(
    engine: &mut Engine,
    sink: &FileSink,
    gaps: Vec<Gap>,
    metrics: Option<&Metrics>,
) -> Result<(), JobError> {
    for gap in gaps {
        let last = gap
            .last_missing
            .map_or_else(|| "unknown".to_owned(), |l| l.to_string());
        let rel = format!(
            "gaps/{}-{}-{}-{last}.json",
            gap.topic, gap.partition, gap.first_missing
        );
        let mut bytes = serde_json::to_vec(&gap).expect("a gap serialises");
        bytes.push(b'\n');
        // Written before the partition moves on: a crash in between finds the same gap
        // again after the restart, and its file is there already.
        sink.write_if_absent(&rel, &bytes)?;
        engine.restart_partition_at(gap.partition, gap.resume_at);
        if let Some(m) = metrics {
            m.observe_gap();
        }
    }
    Ok(())
}

/// How rendering is cut into steps.
struct RenderStep<'a> {
    /// Most files per step.
    files: usize,
    /// A stop request ends rendering between steps; the rest is written after a restart.
    stop: &'a AtomicBool,
}

#[allow(clippy::too_many_arguments)]
fn checkpoint(
    engine: &mut Engine,
    store: &Store,
    sink: &FileSink,
    source: &mut dyn Source,
    summary: &mut RunSummary,
    metrics: Option<&Metrics>,
    step: &RenderStep<'_>,
    last: bool,
) -> Result<(), JobError> {
    let Some(mut delta) = engine.take_delta() else {
        return Ok(());
    };
    delta.source = source.identity();
    crate::failpoint!("checkpoint.before_commit");
    let started = Instant::now();
    let bytes = store.commit(&delta)?;
    if let Some(m) = metrics {
        m.observe_checkpoint(started.elapsed(), bytes);
    }
    summary.checkpoints += 1;
    crate::failpoint!("checkpoint.after_commit_before_render");
    source.committed(engine.partitions());
    render_due(engine, store, sink, summary, metrics, step, last)
}

/// Writes the files the committed state says are due, in steps of at most `step.files`
/// files. After each step the engine learns what was written; when more steps follow (or
/// `record_last` asks, at the end of a run) a checkpoint records it at once, so that a job
/// killed however often gets further each time; otherwise the next checkpoint carries it,
/// as a crash in between only finds the same files there again. Stops between steps when
/// a stop is requested.
fn render_due(
    engine: &mut Engine,
    store: &Store,
    sink: &FileSink,
    summary: &mut RunSummary,
    metrics: Option<&Metrics>,
    step: &RenderStep<'_>,
    record_last: bool,
) -> Result<(), JobError> {
    loop {
        if step.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut files = Vec::new();
        let mut buckets = Vec::new();
        for (bucket, windows) in engine.next_ready_buckets(step.files.div_ceil(2)) {
            let name = crate::event_time::bucket_name(bucket);
            for family in Family::BOTH {
                let bytes = render_bucket(family, &windows);
                if !bytes.is_empty() {
                    files.push((format!("{}/{name}.json", family.folder()), bytes));
                }
            }
            buckets.push(bucket);
        }
        let kpi_files = files.len();
        let mut rejected = Vec::new();
        for (seq, records) in engine.pending_rejected() {
            if files.len() >= step.files {
                break;
            }
            files.push((
                format!("rejected/ckpt-{seq:012}.jsonl"),
                render_rejected(records),
            ));
            rejected.push(*seq);
        }
        if buckets.is_empty() && rejected.is_empty() {
            return Ok(());
        }
        let written = sink.write_batch(&files)?;
        let new = written[..kpi_files]
            .iter()
            .filter(|w| **w == Written::New)
            .count() as u64;
        summary.files_written += new;
        if let Some(m) = metrics {
            m.observe_files(new, wall_ms());
        }
        for b in buckets {
            engine.mark_bucket_rendered(b);
        }
        for s in rejected {
            engine.mark_rejected_rendered(s);
        }
        crate::failpoint!("render.after_rename_before_record");
        if !(record_last || engine.has_due()) {
            return Ok(());
        }
        if let Some(delta) = engine.take_delta() {
            store.commit(&delta)?;
            summary.checkpoints += 1;
        }
    }
}

fn print_invoice(out: &mut impl Write, inv: &Invoice<'_>) -> std::io::Result<()> {
    #[derive(serde::Serialize)]
    struct Summary<'a> {
        invoice_no: u64,
        country: &'a str,
        timestamp: &'a str,
        #[serde(serialize_with = "as_json_number")]
        total_cost: crate::money::Money,
        total_items: u64,
        is_order: u8,
        is_return: u8,
    }
    fn as_json_number<S: serde::Serializer>(
        m: &crate::money::Money,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        // Exact decimal text, as a JSON number.
        let raw = serde_json::value::RawValue::from_string(m.to_string())
            .map_err(serde::ser::Error::custom)?;
        serde::Serialize::serialize(&raw, s)
    }
    serde_json::to_writer(
        &mut *out,
        &Summary {
            invoice_no: inv.invoice_no,
            country: &inv.country,
            timestamp: &inv.timestamp,
            total_cost: inv.total_cost,
            total_items: inv.total_items,
            is_order: inv.is_order(),
            is_return: inv.is_return(),
        },
    )?;
    out.write_all(b"\n")
}
