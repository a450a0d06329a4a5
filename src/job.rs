//! The job loop: source → decode → aggregate → close → checkpoint → sinks.
//!
//! Records flow one way. The [`Intake`] decodes each record and hands the invoice to the
//! engine, which changes state in memory; every checkpoint interval the job commits the
//! engine's delta in one synced batch, and only then hands what it made due to the
//! [`Outbox`], which writes it through a [`Committer`]. A crash anywhere leaves either the
//! old or the new checkpoint; files are rendered from committed rows only, so writing them
//! again after a restart gives the same bytes.

use crate::aggregate::{Engine, EngineConfig, RecordAt, ResultSettings};
use crate::decode::invoice::{Invoice, Limits};
use crate::decode::parallel::{Consumer, ParallelDecoder};
use crate::decode::{Decoder, JsonInvoiceDecoder};
use crate::ops::live::LiveView;
use crate::ops::metrics::Metrics;
use crate::record::{Reason, RejectedRecord, Rejection, SourceRecord, RAW_KEPT_BYTES};
use crate::sink::local::FileSink;
use crate::sink::{gap_object, Committer, Format, Outbox, SinkError};
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
    /// Folder of the output files for [`run`]; [`run_with`] writes through the committer
    /// it is given instead.
    pub out: PathBuf,
    /// Encodings of the KPI files.
    pub format: Format,
    /// Folder of the RocksDB state store.
    pub state: PathBuf,
    pub engine: EngineConfig,
    /// The decoder's limits on a record (SPEC §7).
    pub limits: Limits,
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
    /// Where each checkpoint publishes the minutes it closed, for the live page.
    pub live: Option<Arc<LiveView>>,
    /// Most files written in one rendering step; each step is recorded in the store before
    /// the next, so that a job killed however often still gets through a large backlog
    /// of due files, and a stop waits for one step at most.
    pub render_step: usize,
    /// Threads that decode records; 1 decodes on the loop's own thread. Aggregation stays
    /// on that thread, in offset order, so the output does not depend on it.
    pub threads: usize,
}

impl JobConfig {
    pub fn new(out: PathBuf, state: PathBuf) -> JobConfig {
        JobConfig {
            out,
            state,
            format: Format::Json,
            engine: EngineConfig::default(),
            limits: Limits::default(),
            checkpoint_interval: Duration::from_secs(1),
            close_at_end: true,
            print_invoices: false,
            batch: 4096,
            metrics: None,
            live: None,
            render_step: 256,
            threads: 1,
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
    #[error("cannot start the decoding threads: {0}; run with fewer --threads")]
    Threads(String),
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

/// Decoding and aggregation of one record at a time, with the records refused since the
/// last checkpoint: the step between a source and the engine.
pub struct Intake<D: Decoder = JsonInvoiceDecoder> {
    decoder: D,
    /// Name of the source, kept with each rejected record.
    topic: String,
    rejected: Vec<RejectedRecord>,
    /// Bytes held by `rejected` (raw and message), so that the job can checkpoint early.
    rejected_bytes: usize,
}

impl<D: Decoder> Intake<D> {
    pub fn new(decoder: D, topic: &str) -> Intake<D> {
        Intake {
            decoder,
            topic: topic.to_owned(),
            rejected: Vec::new(),
            rejected_bytes: 0,
        }
    }

    /// One record: skipped if the engine counted it before a restart, else decoded and
    /// aggregated, or filed as rejected. Returns the invoice the engine accepted.
    #[inline]
    pub fn process<'a>(
        &mut self,
        engine: &mut Engine,
        rec: SourceRecord<'a>,
    ) -> Option<Invoice<'a>> {
        if !engine.admit(rec.partition, rec.offset) {
            return None;
        }
        let verdict = self.decoder.decode(rec.value, rec.len());
        self.take(engine, rec, verdict)
    }

    /// An admitted record with its decoder's verdict: aggregated, or filed as rejected.
    /// Returns the invoice the engine accepted.
    #[inline]
    pub fn take<'a>(
        &mut self,
        engine: &mut Engine,
        rec: SourceRecord<'a>,
        verdict: Result<Invoice<'a>, Rejection>,
    ) -> Option<Invoice<'a>> {
        let at = RecordAt {
            partition: rec.partition,
            offset: rec.offset,
            timestamp_ms: rec.timestamp_ms,
        };
        match verdict.and_then(|inv| engine.accept(at, &inv).map(|()| inv)) {
            Ok(inv) => Some(inv),
            Err(rej) => {
                engine.count_rejected(rej.reason);
                self.reject(&rec, rej);
                None
            }
        }
    }

    fn reject(&mut self, rec: &SourceRecord<'_>, rej: Rejection) {
        // A too-large record keeps only its start: memory and the rejected sink stay
        // bounded whatever the input holds.
        let kept = if rej.reason == Reason::TooLarge {
            &rec.value[..rec.value.len().min(RAW_KEPT_BYTES)]
        } else {
            rec.value
        };
        self.rejected_bytes += kept.len() + rej.message.len() + 64;
        self.rejected.push(RejectedRecord {
            topic: self.topic.clone(),
            partition: rec.partition,
            offset: rec.offset,
            reason: rej.reason,
            message: rej.message,
            raw: kept.to_vec(),
            raw_len: rec.len(),
        });
    }

    /// The decoder, for a pool of threads that decodes with copies of it.
    pub fn decoder(&self) -> &D {
        &self.decoder
    }

    /// A record refused elsewhere (by an aggregate process, for the merge role), held for
    /// the next checkpoint like the intake's own.
    pub fn keep_rejected(&mut self, r: RejectedRecord) {
        self.rejected_bytes += r.raw.len() + r.message.len() + 64;
        self.rejected.push(r);
    }

    /// Drops the held rejections of a partition this process no longer owns (aggregate
    /// role): its next owner reads those records again.
    pub fn forget_partition(&mut self, p: u32) {
        self.rejected.retain(|r| r.partition != p);
        self.rejected_bytes = self
            .rejected
            .iter()
            .map(|r| r.raw.len() + r.message.len() + 64)
            .sum();
    }

    /// The records refused since the last call, for the next checkpoint.
    pub fn take_rejected(&mut self) -> Vec<RejectedRecord> {
        self.rejected_bytes = 0;
        std::mem::take(&mut self.rejected)
    }

    /// About how many bytes the rejected records held for the next checkpoint take: a
    /// stream of bad records must not grow memory with the checkpoint interval.
    pub fn buffered_bytes(&self) -> usize {
        self.rejected_bytes
    }
}

/// What the parallel decoder hands each poll's records to: the engine's replay check
/// first, then the intake with each verdict, in order.
struct Aggregate<'r, D: Decoder, F: FnMut(&Invoice<'_>)> {
    engine: &'r mut Engine,
    intake: &'r mut Intake<D>,
    /// Gets every invoice the engine accepted (`--print-invoices`).
    each: &'r mut F,
}

impl<D: Decoder, F: FnMut(&Invoice<'_>)> Consumer for Aggregate<'_, D, F> {
    fn admit(&mut self, rec: &SourceRecord<'_>) -> bool {
        self.engine.admit(rec.partition, rec.offset)
    }
    fn take(&mut self, rec: SourceRecord<'_>, verdict: Result<Invoice<'_>, Rejection>) {
        if let Some(inv) = self.intake.take(self.engine, rec, verdict) {
            (self.each)(&inv);
        }
    }
}

/// Runs the job into the output folder of `cfg.out`; see [`run_with`].
pub fn run(
    cfg: &JobConfig,
    source: &mut dyn Source,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, JobError> {
    let mut sink = FileSink::new(&cfg.out)?;
    let decoder = JsonInvoiceDecoder { limits: cfg.limits };
    run_with(cfg, source, decoder, &mut sink, stop)
}

/// The parts of one run the loop passes around; the merge role's loop
/// (`distributed::merge`) uses them too.
pub(crate) struct Run<'a, D: Decoder> {
    pub(crate) engine: Engine,
    pub(crate) intake: Intake<D>,
    outbox: Outbox,
    store: Store,
    sink: &'a mut dyn Committer,
    pub(crate) summary: RunSummary,
    pub(crate) metrics: Option<&'a Metrics>,
    live: Option<&'a LiveView>,
    /// The settings that change results, recorded with every checkpoint.
    settings: ResultSettings,
    /// Most objects per rendering step.
    step: usize,
    /// A stop request ends rendering between steps; the rest is written after a restart.
    stop: &'a AtomicBool,
}

/// Runs the job until the source ends or `stop` is set, reading records with `decoder`
/// and writing through `sink`. Returns after a final checkpoint.
pub fn run_with<D: Decoder + Sync + Clone>(
    cfg: &JobConfig,
    source: &mut dyn Source,
    decoder: D,
    sink: &mut dyn Committer,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, JobError> {
    let (mut run, recorded_source) = Run::open(cfg, decoder, source.name(), sink, &stop)?;
    source
        .verify(recorded_source.as_ref())
        .map_err(JobError::Source)?;
    source
        .resume(&run.engine.positions())
        .map_err(JobError::Source)?;
    run.record_gaps(source.take_gaps())?;
    run.engine.assign(source.partitions());
    let start_counters = run.engine.counters().clone();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut out_err: Option<std::io::Error> = None;
    let mut last_checkpoint = Instant::now();
    // Metrics are published per batch, but at most this often: a live source that yields
    // one record per poll must not pay for a publication per record.
    let publish_every = Duration::from_millis(100);
    let mut last_publish: Option<Instant> = None;
    // Decoding on a pool when asked for more than one thread, while the source is read;
    // aggregation stays on this thread, in the records' order (decode::parallel).
    let mut parallel = match cfg.threads {
        0 | 1 => None,
        n => Some(
            ParallelDecoder::new(run.intake.decoder().clone(), n)
                .map_err(|e| JobError::Threads(e.to_string()))?,
        ),
    };
    loop {
        let print = cfg.print_invoices;
        let (engine, intake) = (&mut run.engine, &mut run.intake);
        let mut printed = |inv: &Invoice<'_>| {
            if print && out_err.is_none() {
                if let Err(e) = print_invoice(&mut out, inv) {
                    out_err = Some(e);
                }
            }
        };
        let polled = match &mut parallel {
            None => source.poll(cfg.batch, &mut |rec| {
                if let Some(inv) = intake.process(engine, rec) {
                    printed(&inv);
                }
            }),
            Some(parallel) => {
                let mut consumer = Aggregate {
                    engine,
                    intake,
                    each: &mut printed,
                };
                parallel.poll(&mut consumer, |sink| source.poll(cfg.batch, sink))
            }
        }
        .map_err(JobError::Source)?;
        if let Some(e) = out_err.take() {
            return Err(JobError::Stdout(e));
        }
        // Recovery measurement (README "Chaos and recovery"): the first records of this run,
        // i.e. the end of recovery after a restart; the harness times it from the spawn.
        if let Poll::Records(n) = polled {
            if n > 0 && run.engine.counters().read - start_counters.read == n as u64 {
                tracing::info!(records = n, "first records processed after start");
            }
        }
        run.record_gaps(source.take_gaps())?;
        // Partitions added to the topic join the watermark as soon as the source sees them.
        run.engine.assign(source.partitions());
        let ended = polled == Poll::End;
        let now_ms = source
            .is_live()
            .then(|| chrono::Utc::now().timestamp_millis());
        let idle = source.idle();
        run.engine.advance(now_ms, &idle);
        if let Some(m) = run.metrics {
            if last_publish.is_none_or(|t| t.elapsed() >= publish_every) {
                let w = run.engine.watermark(now_ms, &idle);
                publish(m, &run.engine, &start_counters, w);
                m.observe_source(&source.partitions(), source.lag().as_ref());
                last_publish = Some(Instant::now());
            }
        }
        if ended {
            run.summary.ended = true;
            break;
        }
        if stop.load(Ordering::Relaxed) {
            tracing::info!(
                "stop requested (SIGTERM, SIGINT or SIGHUP): checkpointing, then exiting"
            );
            if let Some(m) = run.metrics {
                m.stopping();
            }
            break;
        }
        // Early when bad records pile up: they are held until a checkpoint commits them.
        if last_checkpoint.elapsed() >= cfg.checkpoint_interval
            || run.intake.buffered_bytes() >= MAX_BUFFERED_BYTES
        {
            out.flush().map_err(JobError::Stdout)?;
            if run.checkpoint(source.identity(), false)? {
                source.committed(&run.engine.positions());
            }
            last_checkpoint = Instant::now();
        }
    }
    if run.summary.ended && cfg.close_at_end {
        run.engine.close_all();
    }
    out.flush().map_err(JobError::Stdout)?;
    // One checkpoint ends the run; the outbox records what it then writes itself.
    if run.checkpoint(source.identity(), true)? {
        source.committed(&run.engine.positions());
    }
    if let Some(m) = run.metrics {
        let now_ms = source
            .is_live()
            .then(|| chrono::Utc::now().timestamp_millis());
        let w = run.engine.watermark(now_ms, &source.idle());
        publish(m, &run.engine, &start_counters, w);
    }
    let c = run.engine.counters();
    let mut summary = run.summary.clone();
    summary.records = c.read - start_counters.read;
    summary.accepted = c.accepted - start_counters.accepted;
    summary.rejected = c.rejected_total() - start_counters.rejected_total();
    Ok(summary)
}

/// Rejected records held in memory before a checkpoint is taken early (they are held three
/// times over while it commits: the intake's, the delta's, RocksDB's batch).
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
    let want = ResultSettings::new(&cfg.engine, &cfg.limits);
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

impl<'a, D: Decoder> Run<'a, D> {
    /// Opens the store and restores the run from it: the engine, the outputs committed but
    /// not written yet (written here, before anything is read), and the source the store
    /// recorded, which the caller checks before it reads.
    pub(crate) fn open(
        cfg: &'a JobConfig,
        decoder: D,
        source_name: &str,
        sink: &'a mut dyn Committer,
        stop: &'a AtomicBool,
    ) -> Result<(Self, Option<crate::source::SourceIdentity>), JobError> {
        let store = Store::open(&cfg.state)?;
        let mut restored = store.load()?;
        check_settings(cfg, restored.settings.as_ref())?;
        let recorded_source = restored.source.take();
        // After a restart the page starts from the closed minutes whose file is not
        // written yet (the store keeps no others), and the open ones.
        if let Some(live) = &cfg.live {
            live.publish(&restored.closed, restored.open.iter().map(|(s, w)| (*s, w)));
        }
        let outbox = Outbox::restore(
            restored.take_closed_buckets(),
            std::mem::take(&mut restored.pending_rejected),
            restored.counters.buckets_rendered,
        )
        .with_format(cfg.format);
        let engine = Engine::restore(cfg.engine, restored);
        let mut run = Run {
            engine,
            intake: Intake::new(decoder, source_name),
            outbox,
            store,
            sink,
            summary: RunSummary::default(),
            metrics: cfg.metrics.as_deref(),
            live: cfg.live.as_deref(),
            settings: ResultSettings::new(&cfg.engine, &cfg.limits),
            step: cfg.render_step.max(1),
            stop,
        };
        // A crash may have left committed files unwritten: write them before anything else.
        run.write_due(false)?;
        Ok((run, recorded_source))
    }

    /// Writes each gap the source found to `gaps/`, then moves its partition on.
    fn record_gaps(&mut self, gaps: Vec<Gap>) -> Result<(), JobError> {
        for gap in gaps {
            let (name, bytes) = gap_object(&gap);
            // Written before the partition moves on: a crash in between finds the same gap
            // again after the restart, and its file is there already.
            self.sink.write_if_absent(&name, &bytes)?;
            self.engine
                .restart_partition_at(gap.partition, gap.resume_at);
            if let Some(m) = self.metrics {
                m.observe_gap();
            }
        }
        Ok(())
    }

    /// Commits the engine's changes, the records refused since the last checkpoint and
    /// what the outbox delivered since its last record, in one batch, with `identity` (what
    /// the source records of its input); then writes what became due. `last`: the end of
    /// the run, after which nothing else is committed. `true` when a checkpoint was
    /// committed (there were changes).
    pub(crate) fn checkpoint(
        &mut self,
        identity: Option<crate::source::SourceIdentity>,
        last: bool,
    ) -> Result<bool, JobError> {
        let Some(mut delta) = self.engine.take_delta() else {
            if self.outbox.has_unrecorded() {
                self.store.record_delivered(&self.outbox.take_delivered())?;
            }
            return Ok(false);
        };
        delta.source = identity;
        delta.settings = Some(self.settings);
        delta.rejected = self.intake.take_rejected();
        let delivered = self.outbox.take_delivered();
        crate::failpoint!("checkpoint.before_commit");
        let started = Instant::now();
        let bytes = self.store.commit(&delta, &delivered)?;
        if let Some(m) = self.metrics {
            m.observe_checkpoint(started.elapsed(), bytes);
        }
        self.summary.checkpoints += 1;
        if let Some(live) = self.live {
            live.publish(&delta.closed_inserts, self.engine.open_windows());
        }
        crate::failpoint!("checkpoint.after_commit_before_render");
        self.outbox.add(delta.ready, delta.seq, delta.rejected);
        self.write_due(last)?;
        Ok(true)
    }

    /// Writes the committed outputs that are due, in steps of at most `self.step` objects.
    /// After each step the outbox's record of it goes to the store at once when more steps
    /// follow (or `record_last` asks, at the end of a run), so that a job killed however
    /// often gets further each time; otherwise the next checkpoint carries it, as a crash
    /// in between only finds the same files there again. Stops between steps when a stop
    /// is requested.
    pub(crate) fn write_due(&mut self, record_last: bool) -> Result<(), JobError> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let step = self.outbox.write_step(self.sink, self.step)?;
            if step.objects == 0 {
                return Ok(());
            }
            self.summary.files_written += step.new_kpi_files;
            if let Some(m) = self.metrics {
                m.observe_files(step.new_kpi_files, wall_ms());
            }
            crate::failpoint!("render.after_rename_before_record");
            if !(record_last || self.outbox.has_due()) {
                return Ok(());
            }
            self.store.record_delivered(&self.outbox.take_delivered())?;
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
