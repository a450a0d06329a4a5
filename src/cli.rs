//! The command line: flags (then `RETAIL_KPI_*` environment) into settings, and errors into
//! exit codes. The binary's edge: the only place that uses `anyhow`.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use retail_kpi::engine::EngineConfig;
use retail_kpi::event_time::NANOS_PER_SEC;
use retail_kpi::file_source::FileSource;
use retail_kpi::generate::{parse_start, GenConfig, Generator};
use retail_kpi::invoice::Limits;
use retail_kpi::job::{self, JobConfig, JobError};
use retail_kpi::state::{StateError, Store};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Exit codes (README "Exit codes").
pub mod exit {
    pub const OK: u8 = 0;
    /// Anything not listed below.
    pub const FAILURE: u8 = 1;
    /// Bad flags or settings (clap uses 2 for usage errors too).
    pub const CONFIG: u8 = 2;
    /// The state store: locked by another job, corrupt, too new, or a failed write.
    pub const STATE: u8 = 3;
    /// The output folder: cannot write, or holds other bytes than this job computes.
    pub const OUTPUT: u8 = 4;
    /// The input: a file that cannot be read, or brokers that stay unreachable.
    pub const SOURCE: u8 = 5;
}

#[derive(Parser, Debug)]
#[command(
    name = "retail-kpi",
    version,
    about = "Exact sales KPIs per minute, from Kafka or JSON lines, exactly once"
)]
struct Cli {
    /// Log format on standard error.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        env = "RETAIL_KPI_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write generated invoices as JSON lines to standard output.
    Generate {
        #[command(flatten)]
        generator: GenArgs,
        /// Mean invoices per minute of event time.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
    },
    /// Run the job on a JSON-lines file (or standard input) or a Kafka topic.
    Run(RunArgs),
    /// Send generated invoices to a Kafka topic (created if missing).
    Produce(ProduceArgs),
    /// Look into or upgrade a state store.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
}

#[derive(Args, Debug, Clone)]
struct GenArgs {
    /// Number of records to write.
    #[arg(long)]
    count: u64,
    /// Seed: the same seed gives the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Event time of the first invoice, UTC.
    #[arg(long, default_value = "2020-09-18 10:00:00")]
    start: String,
    /// Fraction of invoices later than the grace.
    #[arg(long, default_value_t = 0.0)]
    late_fraction: f64,
    /// Fraction of malformed records.
    #[arg(long, default_value_t = 0.0)]
    bad_fraction: f64,
}

impl GenArgs {
    fn config(&self, rate_per_minute: f64, broker_timestamps: bool) -> anyhow::Result<GenConfig> {
        for (name, f) in [
            ("--late-fraction", self.late_fraction),
            ("--bad-fraction", self.bad_fraction),
        ] {
            anyhow::ensure!(
                (0.0..=1.0).contains(&f),
                "{name} must be between 0 and 1, not {f}"
            );
        }
        anyhow::ensure!(
            rate_per_minute > 0.0 && rate_per_minute.is_finite(),
            "the event rate must be a positive number, not {rate_per_minute}"
        );
        let cfg = GenConfig {
            count: self.count,
            seed: self.seed,
            start_ms: parse_start(&self.start)
                .with_context(|| format!("--start {:?}", self.start))?,
            rate_per_minute,
            late_fraction: self.late_fraction,
            bad_fraction: self.bad_fraction,
            broker_timestamps,
            ..GenConfig::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

fn kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 60s, 500ms, 1h)"))
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["input", "brokers"])))]
struct RunArgs {
    /// JSON-lines input; `-` reads standard input.
    #[arg(long, env = "RETAIL_KPI_INPUT")]
    input: Option<PathBuf>,
    /// Kafka bootstrap servers (HOST:PORT[,HOST:PORT...]).
    #[arg(long, env = "RETAIL_KPI_BROKERS", requires = "topic")]
    brokers: Option<String>,
    /// Kafka topic to read.
    #[arg(long, env = "RETAIL_KPI_TOPIC")]
    topic: Option<String>,
    /// `end`: a bounded run up to the end offsets found at start.
    #[arg(long, value_parser = ["end"], requires = "brokers")]
    until: Option<String>,
    /// With `--until end`: close every window at the end (a backfill).
    #[arg(long, requires = "until")]
    close_at_end: bool,
    /// Where a partition without a committed offset starts.
    #[arg(long, value_enum, default_value = "earliest", env = "RETAIL_KPI_START")]
    start: retail_kpi::kafka::StartAt,
    /// SPEC §4 idle timeout.
    #[arg(long, default_value = "60s", value_parser = duration, env = "RETAIL_KPI_IDLE_TIMEOUT")]
    idle_timeout: Duration,
    /// Consumer group under which offsets are committed for lag monitoring only.
    #[arg(long, env = "RETAIL_KPI_GROUP_ID")]
    group_id: Option<String>,
    /// librdkafka property passed through, e.g. -X security.protocol=SASL_SSL (repeatable).
    #[arg(short = 'X', value_parser = kv)]
    kafka_property: Vec<(String, String)>,
    /// Folder of the output files.
    #[arg(long, env = "RETAIL_KPI_OUT")]
    out: PathBuf,
    /// Folder of the state store (RocksDB).
    #[arg(long, env = "RETAIL_KPI_STATE")]
    state: PathBuf,
    /// Grace for late invoices.
    #[arg(long, default_value = "60s", value_parser = duration, env = "RETAIL_KPI_GRACE")]
    grace: Duration,
    /// Time between checkpoints.
    #[arg(long, default_value = "1s", value_parser = duration, env = "RETAIL_KPI_CHECKPOINT_INTERVAL")]
    checkpoint_interval: Duration,
    /// Largest lead of an event time over its broker timestamp.
    #[arg(long, default_value = "1h", value_parser = duration, env = "RETAIL_KPI_MAX_FUTURE_SKEW")]
    max_future_skew: Duration,
    /// Largest record value, bytes.
    #[arg(long, default_value_t = 1 << 20, env = "RETAIL_KPI_MAX_RECORD_BYTES")]
    max_record_bytes: usize,
    /// Most items in one invoice.
    #[arg(long, default_value_t = 10_000, env = "RETAIL_KPI_MAX_ITEMS")]
    max_items: u64,
    /// Print the per-invoice summary (invoice_no, country, timestamp, total_cost,
    /// total_items, is_order, is_return) as JSON lines on standard output.
    #[arg(long)]
    print_invoices: bool,
}

#[derive(Args, Debug)]
struct ProduceArgs {
    #[arg(long, env = "RETAIL_KPI_BROKERS")]
    brokers: String,
    #[arg(long, env = "RETAIL_KPI_TOPIC")]
    topic: String,
    /// Partitions of the topic, if it has to be created.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Replication factor, if the topic has to be created.
    #[arg(long, default_value_t = 1)]
    replication: u32,
    /// Records sent per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Mean invoices per minute of event time.
    #[arg(long, default_value_t = 10.0)]
    event_rate: f64,
    #[command(flatten)]
    generator: GenArgs,
    /// librdkafka property passed through (repeatable).
    #[arg(short = 'X', value_parser = kv)]
    kafka_property: Vec<(String, String)>,
}

#[derive(Subcommand, Debug)]
enum StateCommand {
    /// Show what a state store holds.
    Inspect {
        #[arg(long, env = "RETAIL_KPI_STATE")]
        state: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::CONFIG
            } else {
                exit::OK
            });
        }
    };
    init_logs(cli.log_format);
    match dispatch(cli.command) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            let code = exit_code(&e);
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

/// The error chain decides the exit code: the first typed error found wins.
fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(j) = cause.downcast_ref::<JobError>() {
            return match j {
                JobError::State(_) => exit::STATE,
                JobError::Sink(_) => exit::OUTPUT,
                JobError::Source(_) => exit::SOURCE,
                JobError::Stdout(_) => exit::OUTPUT,
            };
        }
        if cause.downcast_ref::<StateError>().is_some() {
            return exit::STATE;
        }
        if cause.downcast_ref::<ConfigError>().is_some() {
            return exit::CONFIG;
        }
        if cause
            .downcast_ref::<retail_kpi::file_source::FileSourceError>()
            .is_some()
        {
            return exit::SOURCE;
        }
    }
    exit::FAILURE
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ConfigError(String);

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct SourceFailure(#[from] retail_kpi::kafka::KafkaSourceError);

fn dispatch(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Generate { generator: g, rate } => {
            let cfg = g
                .config(rate, false)
                .map_err(|e| ConfigError(format!("{e:#}")))?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            for rec in Generator::new(cfg) {
                out.write_all(&rec.value)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            Ok(())
        }
        Command::Run(r) => run_job(r),
        Command::Produce(p) => {
            let gen = p
                .generator
                .config(p.event_rate, true)
                .map_err(|e| ConfigError(format!("{e:#}")))?;
            let cfg = retail_kpi::kafka::ProduceConfig {
                brokers: p.brokers,
                topic: p.topic,
                partitions: p.partitions,
                replication: p.replication,
                rate: p.rate,
                properties: p.kafka_property,
            };
            let started = std::time::Instant::now();
            let n = retail_kpi::kafka::produce(&cfg, Generator::new(gen), stop_flag()?)
                .map_err(SourceFailure)?;
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(records = n, topic = %cfg.topic, seconds = format!("{secs:.3}"), "produced");
            Ok(())
        }
        Command::State {
            command: StateCommand::Inspect { state, json },
        } => inspect(&state, json),
    }
}

fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

fn run_job(r: RunArgs) -> anyhow::Result<()> {
    let mut cfg = JobConfig::new(r.out, r.state);
    cfg.engine = EngineConfig {
        grace: r.grace.as_nanos() as i128,
        max_future_skew: r.max_future_skew.as_nanos() as i128,
        limits: Limits {
            max_record_bytes: r.max_record_bytes,
            max_items: r.max_items,
        },
    };
    cfg.checkpoint_interval = r.checkpoint_interval;
    cfg.print_invoices = r.print_invoices;
    let mut source: Box<dyn retail_kpi::source::Source> = match (&r.input, &r.brokers) {
        (Some(input), _) => Box::new(FileSource::open(input)?),
        (None, Some(brokers)) => {
            let topic = r
                .topic
                .clone()
                .expect("clap requires --topic with --brokers");
            let mut k = retail_kpi::kafka::KafkaConfig::new(brokers, &topic);
            k.until_end = r.until.is_some();
            k.start = r.start;
            k.idle_timeout = r.idle_timeout;
            k.properties = r.kafka_property.clone();
            if let Some(g) = &r.group_id {
                k.group_id = g.clone();
            }
            cfg.close_at_end = r.close_at_end;
            Box::new(retail_kpi::kafka::KafkaSource::connect(k).map_err(SourceFailure)?)
        }
        (None, None) => unreachable!("clap requires --input or --brokers"),
    };
    let stop = stop_flag()?;
    let started = std::time::Instant::now();
    let s = job::run(&cfg, source.as_mut(), stop)?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        records = s.records,
        accepted = s.accepted,
        rejected = s.rejected,
        checkpoints = s.checkpoints,
        files = s.files_written,
        seconds = format!("{secs:.3}"),
        ended = s.ended,
        out = %cfg.out.display(),
        "run finished"
    );
    Ok(())
}

fn inspect(path: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let store = Store::open(path)?;
    let r = store.load()?;
    let version = store.schema_version()?.unwrap_or(0);
    let fmt_t = |t: Option<i128>| {
        t.map(|n| {
            let secs = n.div_euclid(NANOS_PER_SEC) as i64;
            chrono::DateTime::from_timestamp(secs, n.rem_euclid(NANOS_PER_SEC) as u32)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                .unwrap_or_default()
        })
    };
    let window = |s: i64| retail_kpi::event_time::format_instant(s);
    let counters = &r.counters;
    let rejected: serde_json::Map<String, serde_json::Value> = retail_kpi::record::Reason::ALL
        .iter()
        .map(|reason| {
            (
                reason.code().to_owned(),
                counters.rejected[reason.index()].into(),
            )
        })
        .collect();
    let v = serde_json::json!({
        "schema_version": version,
        "checkpoint_seq": r.seq,
        "partitions": r.partitions.iter().map(|(p, s)| serde_json::json!({
            "partition": p, "next_offset": s.next_offset, "max_event_time": fmt_t(s.max_event_time),
        })).collect::<Vec<_>>(),
        "closed_before": (r.closed_before != i64::MIN).then(|| window(r.closed_before)),
        "open_windows": {
            "count": r.open.len(),
            "first": r.open.first().map(|w| window(w.0)),
            "last": r.open.last().map(|w| window(w.0)),
        },
        "closed_windows_not_rendered": r.closed.len(),
        "buckets_due": r.ready_buckets.iter().map(|b| retail_kpi::event_time::bucket_name(*b)).collect::<Vec<_>>(),
        "rejected_files_due": r.pending_rejected.iter().map(|(s, v)| serde_json::json!({"checkpoint": s, "records": v.len()})).collect::<Vec<_>>(),
        "counters": {
            "read": counters.read, "accepted": counters.accepted, "rejected": rejected,
            "replayed_skipped": counters.replayed_skipped, "windows_closed": counters.windows_closed,
            "buckets_rendered": counters.buckets_rendered,
        },
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("state store      {}", path.display());
        println!("schema version   {version}");
        println!("checkpoint       {}", r.seq);
        for (p, s) in &r.partitions {
            println!(
                "partition {p:<6} next offset {:<12} M_p {}",
                s.next_offset.map_or("-".into(), |o| o.to_string()),
                fmt_t(s.max_event_time).unwrap_or_else(|| "-inf".into())
            );
        }
        println!(
            "closed before    {}",
            v["closed_before"].as_str().unwrap_or("-")
        );
        println!(
            "open windows     {} (first {}, last {})",
            r.open.len(),
            v["open_windows"]["first"].as_str().unwrap_or("-"),
            v["open_windows"]["last"].as_str().unwrap_or("-")
        );
        println!("closed, unwritten windows {}", r.closed.len());
        println!("buckets due      {}", r.ready_buckets.len());
        println!("rejected files due {}", r.pending_rejected.len());
        println!(
            "counters         {}",
            serde_json::to_string(&v["counters"])?
        );
    }
    Ok(())
}
