//! `retail-kpi run`: builds the source, the metrics server and the job from the settings,
//! and runs it until it ends or is stopped.

use super::*;
use retail_kpi::decode::JsonInvoiceDecoder;
use retail_kpi::distributed::aggregate::AggregateConfig;
use retail_kpi::distributed::merge::MergeConfig;
use retail_kpi::distributed::{ClusterConfig, Role};
use retail_kpi::ops::api::Api;
use retail_kpi::ops::http::Endpoints;
use retail_kpi::ops::live::LiveView;
use retail_kpi::ops::settings::{AggregationSettings, LimitsSettings, Origin, SourceSettings};
use retail_kpi::sink::local::FileSink;
use retail_kpi::sink::object::{ObjectConfig, ObjectSink};
use retail_kpi::sink::{Committer, Encoding, OutLocation, SinkError};
use retail_kpi::source::kafka::{KafkaConfig, KafkaSource};

pub fn run_job(s: Settings) -> anyhow::Result<()> {
    if s.file_exposes_secrets {
        tracing::warn!(
            "the settings file holds secrets and others than its owner may read it: chmod 600 it"
        );
    }
    match s.role.role {
        Role::Single => {}
        Role::Aggregate => return run_aggregate(&s),
        Role::Merge => return run_merge(&s),
    }
    let mut cfg = job_config(&s);
    if let Some((metrics, live)) = serve_http(&s)? {
        cfg.metrics = Some(metrics);
        cfg.live = Some(live);
    }
    let mut source: Box<dyn retail_kpi::source::Source + Send> = match &s.source.input {
        Some(input) => {
            let mut f = FileSource::open(input)?;
            f.set_record_limit(s.limits.max_record_bytes);
            Box::new(f)
        }
        None => {
            // A file run always closes every window at its end (JobConfig's default).
            cfg.close_at_end = s.source.close_at_end;
            let k = kafka_config(&s.source, &s.kafka);
            Box::new(KafkaSource::connect(k).map_err(SourceFailure)?)
        }
    };
    let mut sink = open_sink(&s)?;
    let stop = stop_flag()?;
    let started = std::time::Instant::now();
    let decoder = JsonInvoiceDecoder { limits: cfg.limits };
    // A bounded run says how far it is; the figures are the metrics' (kept without a
    // server when the HTTP address is off).
    let bounded = s.source.input.is_some() || s.source.until.is_some();
    let progress = bounded.then(|| {
        let m = cfg
            .metrics
            .get_or_insert_with(|| Arc::new(Metrics::new(s.metrics.ready_max_lag)));
        progress::Progress::start(Arc::clone(m))
    });
    let sum = job::run_with(&cfg, source.as_mut(), decoder, sink.as_mut(), stop);
    if let Some(p) = progress {
        p.finish();
    }
    // Bounded on an error too: the error is reported at once, not after the client closes.
    close_within(source, CLOSE_WAIT);
    let sum = sum?;
    finished("run", &sum, started, out_location(&s));
    Ok(())
}

/// The summary line of a run that wrote files (one process, or the merge).
fn finished(
    what: &str,
    sum: &retail_kpi::job::RunSummary,
    started: std::time::Instant,
    out: &OutLocation,
) {
    tracing::info!(
        records = sum.records,
        accepted = sum.accepted,
        rejected = sum.rejected,
        checkpoints = sum.checkpoints,
        files = sum.files_written,
        seconds = format!("{:.3}", started.elapsed().as_secs_f64()),
        ended = sum.ended,
        out = %out,
        "{what} finished"
    );
}

/// The two topics between the roles, and the brokers.
fn cluster_config(s: &Settings) -> ClusterConfig {
    let partials = s
        .role
        .partials_topic
        .clone()
        .expect("resolve requires the partials topic for a role");
    ClusterConfig {
        brokers: s
            .source
            .brokers
            .clone()
            .expect("resolve requires brokers for a role"),
        progress_topic: s
            .role
            .progress_topic
            .clone()
            .unwrap_or_else(|| ClusterConfig::progress_topic_for(&partials)),
        partials_topic: partials,
        replication_factor: s.role.replication_factor as i32,
        min_insync_replicas: s.role.min_insync_replicas as i32,
        properties: s.kafka.clone().into_iter().collect(),
        timeout: s.source.connect_timeout.0,
    }
}

/// `--role aggregate`: no output folder and no state; everything goes to Kafka.
fn run_aggregate(s: &Settings) -> anyhow::Result<()> {
    let group_id = s
        .source
        .group_id
        .clone()
        .expect("resolve requires a group id for the aggregate role");
    let transactional_id = s.role.transactional_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".into());
        format!("{group_id}-{host}-{}", std::process::id())
    });
    let cfg = AggregateConfig {
        cluster: cluster_config(s),
        topic: s
            .source
            .topic
            .clone()
            .expect("resolve requires the topic for the aggregate role"),
        group_id,
        transactional_id,
        engine: engine_config(&s.aggregation),
        limits: decoder_limits(&s.limits),
        checkpoint_interval: s.checkpoint.checkpoint_interval.0,
        idle_timeout: s.source.idle_timeout.0,
        until_end: s.source.until.is_some(),
    };
    let stop = stop_flag()?;
    let started = std::time::Instant::now();
    let sum = retail_kpi::distributed::aggregate::run(&cfg, stop)?;
    tracing::info!(
        records = sum.records,
        transactions = sum.transactions,
        rebalances = sum.rebalances,
        seconds = format!("{:.3}", started.elapsed().as_secs_f64()),
        "aggregate process finished"
    );
    Ok(())
}

/// `--role merge`: the files and the state store, from the partials topic.
fn run_merge(s: &Settings) -> anyhow::Result<()> {
    let mut job = job_config(s);
    if let Some((metrics, live)) = serve_http(s)? {
        job.metrics = Some(metrics);
        job.live = Some(live);
    }
    job.close_at_end = s.source.close_at_end;
    let cfg = MergeConfig {
        cluster: cluster_config(s),
        job,
        idle_timeout: s.source.idle_timeout.0,
        until_end: s.source.until.is_some(),
    };
    let mut sink = open_sink(s)?;
    let stop = stop_flag()?;
    let started = std::time::Instant::now();
    let sum = retail_kpi::distributed::merge::run(&cfg, sink.as_mut(), stop)?;
    finished("merge", &sum, started, out_location(s));
    Ok(())
}

fn out_location(s: &Settings) -> &OutLocation {
    s.output
        .out
        .as_ref()
        .expect("resolve requires the output location")
}

/// The committer `--out` names: a folder, or a bucket's prefix in object storage.
pub fn open_sink(s: &Settings) -> Result<Box<dyn Committer>, SinkError> {
    Ok(match out_location(s) {
        OutLocation::Folder(dir) => Box::new(FileSink::new(dir)?),
        OutLocation::S3 { bucket, prefix } => {
            let mut cfg = ObjectConfig::new(bucket, prefix);
            cfg.options = s
                .object_store
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect();
            cfg.retry_timeout = s.output.out_retry_timeout.0;
            let sink = ObjectSink::open(&cfg)?;
            tracing::info!(out = %out_location(s), "writing to object storage");
            Box::new(sink)
        }
    })
}

/// The job's settings: the output and checkpoint components, and the engine's.
pub fn job_config(s: &Settings) -> JobConfig {
    let state = s.checkpoint.state.clone();
    // `out` is the folder `job::run` would open; the binary hands its own committer to
    // `job::run_with`, so for object storage it only names the location.
    let out = match out_location(s) {
        OutLocation::Folder(dir) => dir.clone(),
        other => PathBuf::from(other.to_string()),
    };
    let mut cfg = JobConfig::new(out, state.expect("resolve requires the state folder"));
    cfg.format = s.output.format;
    cfg.threads = match s.decode.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    cfg.engine = engine_config(&s.aggregation);
    cfg.limits = decoder_limits(&s.limits);
    cfg.checkpoint_interval = s.checkpoint.checkpoint_interval.0;
    cfg.print_invoices = s.output.print_invoices;
    cfg
}

/// The engine's settings.
pub fn engine_config(a: &AggregationSettings) -> EngineConfig {
    EngineConfig {
        grace: a.grace.0.as_nanos() as i128,
        max_future_skew: a.max_future_skew.0.as_nanos() as i128,
        max_countries: a.max_countries,
    }
}

/// The decoder's limits on a record.
pub fn decoder_limits(l: &LimitsSettings) -> Limits {
    Limits {
        max_record_bytes: l.max_record_bytes,
        max_items: l.max_items,
    }
}

/// The Kafka source's settings; `properties`: the `[kafka]` table with `-X` over it.
pub fn kafka_config(src: &SourceSettings, properties: &BTreeMap<String, String>) -> KafkaConfig {
    let brokers = src
        .brokers
        .as_deref()
        .expect("resolve requires an input or brokers");
    let topic = src
        .topic
        .as_deref()
        .expect("resolve requires a topic with brokers");
    let mut k = KafkaConfig::new(brokers, topic);
    k.until_end = src.until.is_some();
    k.start = src.start;
    k.idle_timeout = src.idle_timeout.0;
    k.connect_timeout = src.connect_timeout.0;
    k.on_data_loss = src.on_data_loss;
    k.properties = properties.clone().into_iter().collect();
    if let Some(g) = &src.group_id {
        k.group_id = g.clone();
    }
    k
}

/// How long a stopping job waits for its source to close.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Set when a source was left closing on its thread: the process must then end without
/// running exit handlers (see `cli::main`).
static LEFT_OPEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`close_within`] gave up waiting for a source.
pub fn source_left_open() -> bool {
    LEFT_OPEN.load(std::sync::atomic::Ordering::SeqCst)
}

/// Closes the source (a Kafka client leaves its brokers) on a thread of its own and waits
/// at most `limit`: after a broker was paused, librdkafka's destroy waited for requests
/// that only time out after a minute, and held a stopped job for as long. Everything read
/// is checkpointed by now, so the process may exit without it.
pub fn close_within(source: Box<dyn retail_kpi::source::Source + Send>, limit: Duration) {
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(source);
        let _ = done.send(());
    });
    if wait.recv_timeout(limit).is_err() {
        LEFT_OPEN.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::warn!(
            "the source did not close within {limit:?}; exiting without waiting for it (everything read is checkpointed)"
        );
    }
}

/// Starts the HTTP server: metrics and health, the live page, the KPI API. The default
/// address may be taken (another job on the same host): then the job runs without it and
/// says so; an address the operator chose must work.
pub fn serve_http(s: &Settings) -> anyhow::Result<Option<(Arc<Metrics>, Arc<LiveView>)>> {
    let Some(addr) = s.metrics.metrics_addr.0 else {
        return Ok(None);
    };
    let metrics = Arc::new(Metrics::new(s.metrics.ready_max_lag));
    let live = Arc::new(LiveView::new(
        s.checkpoint.checkpoint_interval.0,
        s.aggregation.grace.0,
    ));
    // Minutes whose file is written are read back from the files: only a folder of JSON
    // files can be (see `ops::api`).
    let files = match out_location(s) {
        OutLocation::Folder(dir) if s.output.format.encodings().contains(&Encoding::Json) => {
            Some(dir.clone())
        }
        _ => None,
    };
    let state = s
        .checkpoint
        .state
        .clone()
        .expect("resolve requires the state folder");
    let ends = Endpoints {
        metrics: Arc::clone(&metrics),
        live: Some(Arc::clone(&live)),
        api: Some(Arc::new(Api::new(state, files))),
    };
    match retail_kpi::ops::http::serve(addr, ends) {
        Ok(bound) => {
            tracing::info!(
                "metrics on http://{bound}/metrics, health on /healthz and /readyz, live page on http://{bound}/ (KPI API /api/v1/kpi, /api/v1/state)"
            );
            Ok(Some((metrics, live)))
        }
        Err(e) if e.is_addr_in_use() && s.origin("metrics_addr") == Origin::Default => {
            tracing::warn!("{e}; running without metrics and live page");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
