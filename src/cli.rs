//! The command line: flags, then `RETAIL_KPI_*` environment, then the settings file, then
//! defaults, into settings; and errors into exit codes. The binary's edge: the only place
//! that uses `anyhow`.

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use retail_kpi::config::{self as settings_file, FileSettings, Redactor, SettingsError};
use retail_kpi::engine::EngineConfig;
use retail_kpi::event_time::NANOS_PER_SEC;
use retail_kpi::file_source::FileSource;
use retail_kpi::generate::{parse_start, GenConfig, Generator};
use retail_kpi::invoice::Limits;
use retail_kpi::job::{self, JobConfig, JobError};
use retail_kpi::metrics::{Metrics, MetricsError};
use retail_kpi::source::SourceMismatch;
use retail_kpi::state::{StateError, Store};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
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
    /// Log format on standard error [default: human; `log_format` in the settings file].
    #[arg(long, global = true, value_enum, env = "RETAIL_KPI_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Check the settings of a run.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the effective settings of `run` with the same flags, environment and settings
    /// file, where each comes from, secrets masked; fails (exit 2) where `run` would.
    Check(RunArgs),
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

/// Longest grace or future skew: ten years of event time.
const MAX_EVENT_DURATION: Duration = Duration::from_secs(3650 * 86_400);
/// Longest duration handed to librdkafka, whose timeouts are 32-bit milliseconds.
const MAX_CLIENT_DURATION: Duration = Duration::from_secs(24 * 86_400);

fn kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 60s, 500ms, 1h)"))
}

/// The flags of `run` (and `config check`). A flag left out falls back to its
/// `RETAIL_KPI_*` variable, then to the settings file, then to the default shown; which
/// came from where is read from clap's value sources (see `Settings::resolve`).
#[derive(Args, Debug)]
struct RunArgs {
    /// TOML settings file (keys: the long flag names with `_`; a `[kafka]` table).
    #[arg(long, env = "RETAIL_KPI_CONFIG")]
    config: Option<PathBuf>,
    /// JSON-lines input; `-` reads standard input.
    #[arg(long, env = "RETAIL_KPI_INPUT")]
    input: Option<PathBuf>,
    /// Kafka bootstrap servers (HOST:PORT[,HOST:PORT...]); needs --topic.
    #[arg(long, env = "RETAIL_KPI_BROKERS")]
    brokers: Option<String>,
    /// Kafka topic to read.
    #[arg(long, env = "RETAIL_KPI_TOPIC")]
    topic: Option<String>,
    /// `end`: a bounded run up to the end offsets found at start (Kafka only).
    #[arg(long, value_parser = ["end"], env = "RETAIL_KPI_UNTIL")]
    until: Option<String>,
    /// With `--until end`: close every window at the end (a backfill).
    #[arg(long)]
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
    /// Longest wait at start for the brokers to give the topic's metadata; then exit 5.
    #[arg(long, default_value = "30s", value_parser = duration, env = "RETAIL_KPI_CONNECT_TIMEOUT")]
    connect_timeout: Duration,
    /// Records gone from the brokers before the job read them (retention, deletion, a
    /// topic created again): `fail` stops with exit 5; `continue` writes each gap to
    /// <out>/gaps/ and goes on from the earliest offset the brokers have.
    #[arg(
        long,
        value_enum,
        default_value = "fail",
        env = "RETAIL_KPI_ON_DATA_LOSS"
    )]
    on_data_loss: retail_kpi::kafka::OnDataLoss,
    /// librdkafka property passed through, e.g. -X security.protocol=SASL_SSL (repeatable;
    /// wins over the same key in the settings file's `[kafka]` table). Secrets given here
    /// show in the process list: put them in the settings file.
    #[arg(short = 'X', value_parser = kv)]
    kafka_property: Vec<(String, String)>,
    /// Folder of the output files.
    #[arg(long, env = "RETAIL_KPI_OUT")]
    out: Option<PathBuf>,
    /// Folder of the state store (RocksDB).
    #[arg(long, env = "RETAIL_KPI_STATE")]
    state: Option<PathBuf>,
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
    /// Most distinct countries one partition may bring into one window; an invoice that
    /// would add one more is rejected as too_large (the default is four times the ISO
    /// 3166 list: no real shop nears it, and made-up names cannot grow a window for ever).
    #[arg(long, default_value_t = retail_kpi::engine::DEFAULT_MAX_COUNTRIES, env = "RETAIL_KPI_MAX_COUNTRIES")]
    max_countries: usize,
    /// Print the per-invoice summary (invoice_no, country, timestamp, total_cost,
    /// total_items, is_order, is_return) as JSON lines on standard output.
    #[arg(long)]
    print_invoices: bool,
    /// Address of /metrics, /healthz and /readyz (HOST:PORT; port 0 picks a free one and
    /// logs it); `off` serves nothing.
    #[arg(
        long,
        default_value = "127.0.0.1:9898",
        env = "RETAIL_KPI_METRICS_ADDR"
    )]
    metrics_addr: String,
    /// /readyz answers 503 while more records than this are left to read (Kafka).
    #[arg(long, default_value_t = 10_000, env = "RETAIL_KPI_READY_MAX_LAG")]
    ready_max_lag: u64,
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
    /// Back up an older store and migrate it to this build's schema version (a job does
    /// the same when it starts).
    Migrate {
        #[arg(long, env = "RETAIL_KPI_STATE")]
        state: PathBuf,
        /// Say what would be done, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Secret values of librdkafka properties, hidden in every log line and error message.
static REDACTOR: OnceLock<Redactor> = OnceLock::new();

fn redact(text: &str) -> String {
    REDACTOR
        .get()
        .map_or_else(|| text.to_owned(), |r| r.redact(text))
}

pub fn main() -> ExitCode {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (cli, matches) = match parsed {
        Ok(p) => p,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::CONFIG
            } else {
                exit::OK
            });
        }
    };
    // The settings come before the logs: the settings file may choose the log format, and
    // its secrets must be known before the first line is written.
    let settings = match (&cli.command, run_matches(&matches)) {
        (Command::Run(r), Some(m))
        | (
            Command::Config {
                command: ConfigCommand::Check(r),
            },
            Some(m),
        ) => match Settings::resolve(r, m) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(exit::CONFIG);
            }
        },
        _ => None,
    };
    let redactor = match (&settings, &cli.command) {
        (Some(s), _) => Redactor::new(s.kafka.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        (None, Command::Produce(p)) => Redactor::new(
            p.kafka_property
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        ),
        _ => Redactor::default(),
    };
    let _ = REDACTOR.set(redactor);
    let format = cli
        .log_format
        .or(settings.as_ref().and_then(|s| s.log_format))
        .unwrap_or(LogFormat::Human);
    init_logs(format);
    match dispatch(cli.command, settings) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            let code = exit_code(&e);
            let text = redact(&format!("{e:#}"));
            tracing::error!("{text}");
            eprintln!("error: {text}");
            ExitCode::from(code)
        }
    }
}

/// The matches of `run` or `config check`, whose value sources decide precedence.
fn run_matches(m: &ArgMatches) -> Option<&ArgMatches> {
    match m.subcommand()? {
        ("run", r) => Some(r),
        ("config", c) => match c.subcommand()? {
            ("check", r) => Some(r),
            _ => None,
        },
        _ => None,
    }
}

fn init_logs(format: LogFormat) {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let writer = match REDACTOR.get() {
        Some(r) if !r.is_empty() => BoxMakeWriter::new(move || RedactedLine {
            buf: Vec::with_capacity(256),
            redactor: r,
        }),
        _ => BoxMakeWriter::new(std::io::stderr),
    };
    // Colours only for a person at a terminal, never in a file or a log collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Human => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

/// One formatted log event, written to standard error with the secrets masked when it is
/// dropped (the formatter writes each event through a writer of its own).
struct RedactedLine {
    buf: Vec<u8>,
    redactor: &'static Redactor,
}

impl Write for RedactedLine {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedLine {
    fn drop(&mut self) {
        let text = self.redactor.redact(&String::from_utf8_lossy(&self.buf));
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
}

/// Where a setting's value came from, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Flag,
    Env,
    File,
    Default,
}

impl Origin {
    fn name(self) -> &'static str {
        match self {
            Origin::Flag => "flag",
            Origin::Env => "environment",
            Origin::File => "settings file",
            Origin::Default => "default",
        }
    }
}

/// The effective settings of a run, and where each came from. No `Debug`: it holds the
/// secrets of `kafka`, which `show` masks.
struct Settings {
    config: Option<PathBuf>,
    input: Option<PathBuf>,
    brokers: Option<String>,
    topic: Option<String>,
    until_end: bool,
    close_at_end: bool,
    start: retail_kpi::kafka::StartAt,
    idle_timeout: Duration,
    group_id: Option<String>,
    connect_timeout: Duration,
    on_data_loss: retail_kpi::kafka::OnDataLoss,
    out: PathBuf,
    state: PathBuf,
    grace: Duration,
    checkpoint_interval: Duration,
    max_future_skew: Duration,
    max_record_bytes: usize,
    max_items: u64,
    max_countries: usize,
    print_invoices: bool,
    /// `None`: `off`.
    metrics_addr: Option<SocketAddr>,
    ready_max_lag: u64,
    log_format: Option<LogFormat>,
    /// librdkafka properties: the file's `[kafka]` table, then `-X` over it.
    kafka: BTreeMap<String, String>,
    origins: BTreeMap<&'static str, Origin>,
    kafka_origins: BTreeMap<String, Origin>,
    /// The settings file holds secrets that others than its owner may read.
    file_exposes_secrets: bool,
}

/// Merges one setting: a flag or variable wins, then the file, then clap's default.
struct Merge<'a> {
    m: &'a ArgMatches,
    origins: BTreeMap<&'static str, Origin>,
}

impl Merge<'_> {
    fn given(&self, id: &str) -> Option<Origin> {
        match self.m.value_source(id) {
            Some(ValueSource::CommandLine) => Some(Origin::Flag),
            Some(ValueSource::EnvVariable) => Some(Origin::Env),
            _ => None,
        }
    }

    fn pick<T>(&mut self, id: &'static str, cli: T, file: Option<T>) -> T {
        let (v, o) = match (self.given(id), file) {
            (Some(o), _) => (cli, o),
            (None, Some(f)) => (f, Origin::File),
            (None, None) => (cli, Origin::Default),
        };
        self.origins.insert(id, o);
        v
    }

    /// A setting the file gives as text, parsed like its flag.
    fn pick_parsed<T>(
        &mut self,
        id: &'static str,
        cli: T,
        file: Option<&str>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, SettingsError> {
        let file = match file {
            Some(text) if self.given(id).is_none() => {
                Some(parse(text).map_err(|message| SettingsError::Invalid {
                    key: id.into(),
                    origin: Origin::File.name().into(),
                    message,
                })?)
            }
            _ => None,
        };
        Ok(self.pick(id, cli, file))
    }
}

impl Settings {
    fn resolve(r: &RunArgs, m: &ArgMatches) -> Result<Settings, SettingsError> {
        let file = match &r.config {
            Some(path) => FileSettings::load(path)?,
            None => FileSettings::default(),
        };
        let file_exposes_secrets = r.config.as_deref().is_some_and(|p| file.exposes_secrets(p));
        let mut g = Merge {
            m,
            origins: BTreeMap::new(),
        };
        g.origins
            .insert("config", g.given("config").unwrap_or(Origin::Default));
        let input = g.pick("input", r.input.clone(), file.input.clone().map(Some));
        let brokers = g.pick("brokers", r.brokers.clone(), file.brokers.clone().map(Some));
        let topic = g.pick("topic", r.topic.clone(), file.topic.clone().map(Some));
        let until = g.pick_parsed(
            "until",
            r.until.clone(),
            file.until.as_deref(),
            |s| match s {
                "end" => Ok(Some("end".to_owned())),
                _ => Err(format!("{s:?} is not `end`")),
            },
        )?;
        let close_at_end = g.pick("close_at_end", r.close_at_end, file.close_at_end);
        let start = g.pick_parsed("start", r.start, file.start.as_deref(), |s| {
            <retail_kpi::kafka::StartAt as clap::ValueEnum>::from_str(s, false)
                .map_err(|_| format!("{s:?} is not `earliest` or `latest`"))
        })?;
        let idle_timeout = g.pick_parsed(
            "idle_timeout",
            r.idle_timeout,
            file.idle_timeout.as_deref(),
            duration,
        )?;
        let group_id = g.pick(
            "group_id",
            r.group_id.clone(),
            file.group_id.clone().map(Some),
        );
        let connect_timeout = g.pick_parsed(
            "connect_timeout",
            r.connect_timeout,
            file.connect_timeout.as_deref(),
            duration,
        )?;
        let on_data_loss = g.pick_parsed(
            "on_data_loss",
            r.on_data_loss,
            file.on_data_loss.as_deref(),
            |s| {
                <retail_kpi::kafka::OnDataLoss as clap::ValueEnum>::from_str(s, false)
                    .map_err(|_| format!("{s:?} is not `fail` or `continue`"))
            },
        )?;
        let out = g.pick("out", r.out.clone(), file.out.clone().map(Some));
        let state = g.pick("state", r.state.clone(), file.state.clone().map(Some));
        let grace = g.pick_parsed("grace", r.grace, file.grace.as_deref(), duration)?;
        let checkpoint_interval = g.pick_parsed(
            "checkpoint_interval",
            r.checkpoint_interval,
            file.checkpoint_interval.as_deref(),
            duration,
        )?;
        let max_future_skew = g.pick_parsed(
            "max_future_skew",
            r.max_future_skew,
            file.max_future_skew.as_deref(),
            duration,
        )?;
        let max_record_bytes = g.pick(
            "max_record_bytes",
            r.max_record_bytes,
            file.max_record_bytes,
        );
        let max_items = g.pick("max_items", r.max_items, file.max_items);
        let max_countries = g.pick("max_countries", r.max_countries, file.max_countries);
        let print_invoices = g.pick("print_invoices", r.print_invoices, file.print_invoices);
        let metrics_addr_text = g.pick(
            "metrics_addr",
            r.metrics_addr.clone(),
            file.metrics_addr.clone(),
        );
        let metrics_addr =
            parse_metrics_addr(&metrics_addr_text).map_err(|message| SettingsError::Invalid {
                key: "metrics_addr".into(),
                origin: g.origins["metrics_addr"].name().into(),
                message,
            })?;
        let ready_max_lag = g.pick("ready_max_lag", r.ready_max_lag, file.ready_max_lag);
        let log_format = file
            .log_format
            .as_deref()
            .map(|s| {
                <LogFormat as clap::ValueEnum>::from_str(s, false).map_err(|_| {
                    SettingsError::Invalid {
                        key: "log_format".into(),
                        origin: Origin::File.name().into(),
                        message: format!("{s:?} is not `human` or `json`"),
                    }
                })
            })
            .transpose()?;
        let mut kafka = BTreeMap::new();
        let mut kafka_origins = BTreeMap::new();
        for (k, v) in &file.kafka {
            kafka.insert(k.clone(), v.to_string());
            kafka_origins.insert(k.clone(), Origin::File);
        }
        for (k, v) in &r.kafka_property {
            kafka.insert(k.clone(), v.clone());
            kafka_origins.insert(k.clone(), Origin::Flag);
        }
        let missing = |what: &str, flag: &str, var: &str, key: &str| {
            SettingsError::Missing(format!(
                "{what} is not set: give {flag}, set {var}, or set `{key}` in the settings file (--config)"
            ))
        };
        let invalid = |key: &str, message: String| SettingsError::Invalid {
            key: key.into(),
            origin: g.origins[key].name().into(),
            message,
        };
        match (&input, &brokers) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "input",
                    format!(
                        "both an input file and brokers are set (input from the {}, brokers from the {}); a run reads one source",
                        g.origins["input"].name(),
                        g.origins["brokers"].name()
                    ),
                ))
            }
            (None, None) => {
                return Err(SettingsError::Missing(
                    "no source: give --input FILE (`-` for standard input) or --brokers HOST:PORT with --topic, as flags, RETAIL_KPI_INPUT / RETAIL_KPI_BROKERS, or in the settings file".into(),
                ))
            }
            (None, Some(_)) if topic.is_none() => {
                return Err(missing("the topic", "--topic", "RETAIL_KPI_TOPIC", "topic"))
            }
            _ => {}
        }
        if until.is_some() && brokers.is_none() {
            return Err(invalid(
                "until",
                "`until = end` bounds a Kafka run; a file run always ends at its last line".into(),
            ));
        }
        if close_at_end && until.is_none() {
            return Err(invalid(
                "close_at_end",
                "close_at_end needs `until = end` (a live run never ends)".into(),
            ));
        }
        // Durations are bounded where the arithmetic or librdkafka's 32-bit milliseconds
        // would overflow: a value past them is a typo, never a wish.
        for (key, value, limit, why) in [
            ("grace", grace, MAX_EVENT_DURATION, "3650 days"),
            (
                "max_future_skew",
                max_future_skew,
                MAX_EVENT_DURATION,
                "3650 days",
            ),
            ("idle_timeout", idle_timeout, MAX_CLIENT_DURATION, "24 days"),
            (
                "connect_timeout",
                connect_timeout,
                MAX_CLIENT_DURATION,
                "24 days",
            ),
            (
                "checkpoint_interval",
                checkpoint_interval,
                MAX_CLIENT_DURATION,
                "24 days",
            ),
        ] {
            if value > limit {
                return Err(invalid(
                    key,
                    format!(
                        "{} is more than the most this setting takes, {why}",
                        humantime::format_duration(value)
                    ),
                ));
            }
        }
        if max_countries == 0 {
            return Err(invalid(
                "max_countries",
                "0 would refuse every invoice; give at least 1".into(),
            ));
        }
        let out =
            out.ok_or_else(|| missing("the output folder", "--out", "RETAIL_KPI_OUT", "out"))?;
        let state = state
            .ok_or_else(|| missing("the state folder", "--state", "RETAIL_KPI_STATE", "state"))?;
        Ok(Settings {
            config: r.config.clone(),
            input,
            brokers,
            topic,
            until_end: until.is_some(),
            close_at_end,
            start,
            idle_timeout,
            group_id,
            connect_timeout,
            on_data_loss,
            out,
            state,
            grace,
            checkpoint_interval,
            max_future_skew,
            max_record_bytes,
            max_items,
            max_countries,
            print_invoices,
            metrics_addr,
            ready_max_lag,
            log_format,
            kafka,
            origins: g.origins,
            kafka_origins,
            file_exposes_secrets,
        })
    }

    /// The settings as a TOML settings file (it can be used as one), each with its origin;
    /// secret values masked.
    fn show(&self) -> String {
        fn q(s: &str) -> String {
            // A JSON string is a TOML basic string (same escapes).
            serde_json::to_string(s).expect("a string serialises")
        }
        fn d(v: Duration) -> String {
            q(&humantime::format_duration(v).to_string())
        }
        let p = |v: &Option<PathBuf>| v.as_ref().map(|p| q(&p.display().to_string()));
        let o = |v: &Option<String>| v.as_deref().map(q);
        let start = match self.start {
            retail_kpi::kafka::StartAt::Earliest => "earliest",
            retail_kpi::kafka::StartAt::Latest => "latest",
        };
        let rows: Vec<(&str, Option<String>)> = vec![
            ("config", p(&self.config)),
            ("input", p(&self.input)),
            ("brokers", o(&self.brokers)),
            ("topic", o(&self.topic)),
            ("until", self.until_end.then(|| q("end"))),
            ("close_at_end", Some(self.close_at_end.to_string())),
            ("start", Some(q(start))),
            ("idle_timeout", Some(d(self.idle_timeout))),
            ("group_id", o(&self.group_id)),
            ("connect_timeout", Some(d(self.connect_timeout))),
            (
                "on_data_loss",
                Some(q(match self.on_data_loss {
                    retail_kpi::kafka::OnDataLoss::Fail => "fail",
                    retail_kpi::kafka::OnDataLoss::Continue => "continue",
                })),
            ),
            ("out", Some(q(&self.out.display().to_string()))),
            ("state", Some(q(&self.state.display().to_string()))),
            ("grace", Some(d(self.grace))),
            ("checkpoint_interval", Some(d(self.checkpoint_interval))),
            ("max_future_skew", Some(d(self.max_future_skew))),
            ("max_record_bytes", Some(self.max_record_bytes.to_string())),
            ("max_items", Some(self.max_items.to_string())),
            ("max_countries", Some(self.max_countries.to_string())),
            ("print_invoices", Some(self.print_invoices.to_string())),
            (
                "metrics_addr",
                Some(q(&self
                    .metrics_addr
                    .map_or_else(|| "off".to_owned(), |a| a.to_string()))),
            ),
            ("ready_max_lag", Some(self.ready_max_lag.to_string())),
        ];
        let mut out = String::from(
            "# retail-kpi run settings: flag > RETAIL_KPI_* environment > settings file > default\n",
        );
        let line = |out: &mut String, key: &str, value: &str, origin: Origin| {
            let kv = format!("{key} = {value}");
            out.push_str(&format!("{kv:<44} # {}\n", origin.name()));
        };
        for (key, value) in rows {
            let origin = self.origins.get(key).copied().unwrap_or(Origin::Default);
            match value {
                Some(v) if key != "config" => line(&mut out, key, &v, origin),
                Some(v) => out.push_str(&format!("# config = {v} ({})\n", origin.name())),
                None => out.push_str(&format!("# {key}: not set\n")),
            }
        }
        if let Some(f) = self.log_format {
            let name = match f {
                LogFormat::Human => "human",
                LogFormat::Json => "json",
            };
            line(&mut out, "log_format", &q(name), Origin::File);
        }
        out.push_str("\n[kafka]\n");
        for (k, v) in &self.kafka {
            line(
                &mut out,
                &q(k),
                &q(settings_file::shown(k, v)),
                self.kafka_origins[k],
            );
        }
        out
    }
}

/// `off`, or HOST:PORT (a name is resolved once, now).
fn parse_metrics_addr(s: &str) -> Result<Option<SocketAddr>, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("{s:?} is not HOST:PORT or `off`: {e}"))?
        .next()
        .map(Some)
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

/// The error chain decides the exit code: the first typed error found wins.
fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(j) = cause.downcast_ref::<JobError>() {
            return match j {
                JobError::State(_) => exit::STATE,
                JobError::Sink(_) => exit::OUTPUT,
                JobError::Source(e) if e.downcast_ref::<SourceMismatch>().is_some() => exit::CONFIG,
                JobError::Source(_) => exit::SOURCE,
                // README: a failed standard output is a plain failure, not the output folder.
                JobError::Stdout(_) => exit::FAILURE,
                JobError::SettingsChanged { .. } => exit::CONFIG,
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
        if cause.downcast_ref::<SettingsError>().is_some()
            || cause.downcast_ref::<MetricsError>().is_some()
        {
            return exit::CONFIG;
        }
        if let Some(SourceFailure(k)) = cause.downcast_ref::<SourceFailure>() {
            return match k {
                // librdkafka refused a property: a settings problem, not the brokers'.
                retail_kpi::kafka::KafkaSourceError::Config(_) => exit::CONFIG,
                _ => exit::SOURCE,
            };
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

fn dispatch(cmd: Command, settings: Option<Settings>) -> anyhow::Result<()> {
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
        Command::Run(_) => run_job(settings.expect("run settings are resolved in main")),
        Command::Config {
            command: ConfigCommand::Check(_),
        } => {
            let s = settings.expect("run settings are resolved in main");
            print!("{}", s.show());
            if s.file_exposes_secrets {
                eprintln!(
                    "warning: the settings file holds secrets and others than its owner may read it: chmod 600 it"
                );
            }
            Ok(())
        }
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
        Command::State {
            command: StateCommand::Migrate { state, dry_run },
        } => migrate(&state, dry_run),
    }
}

fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    // SIGHUP too: a closed terminal or a supervisor's hang-up stops the job cleanly, with
    // a checkpoint, instead of killing it.
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

fn run_job(s: Settings) -> anyhow::Result<()> {
    if s.file_exposes_secrets {
        tracing::warn!(
            "the settings file holds secrets and others than its owner may read it: chmod 600 it"
        );
    }
    let mut cfg = JobConfig::new(s.out.clone(), s.state.clone());
    cfg.engine = EngineConfig {
        grace: s.grace.as_nanos() as i128,
        max_future_skew: s.max_future_skew.as_nanos() as i128,
        limits: Limits {
            max_record_bytes: s.max_record_bytes,
            max_items: s.max_items,
        },
        max_countries: s.max_countries,
    };
    cfg.checkpoint_interval = s.checkpoint_interval;
    cfg.print_invoices = s.print_invoices;
    cfg.metrics = serve_metrics(&s)?;
    let mut source: Box<dyn retail_kpi::source::Source + Send> = match (&s.input, &s.brokers) {
        (Some(input), _) => {
            let mut f = FileSource::open(input)?;
            f.set_record_limit(s.max_record_bytes);
            Box::new(f)
        }
        (None, Some(brokers)) => {
            let topic = s
                .topic
                .clone()
                .expect("resolve requires a topic with brokers");
            let mut k = retail_kpi::kafka::KafkaConfig::new(brokers, &topic);
            k.until_end = s.until_end;
            k.start = s.start;
            k.idle_timeout = s.idle_timeout;
            k.connect_timeout = s.connect_timeout;
            k.on_data_loss = s.on_data_loss;
            k.properties = s.kafka.clone().into_iter().collect();
            if let Some(g) = &s.group_id {
                k.group_id = g.clone();
            }
            cfg.close_at_end = s.close_at_end;
            Box::new(retail_kpi::kafka::KafkaSource::connect(k).map_err(SourceFailure)?)
        }
        (None, None) => unreachable!("resolve requires an input or brokers"),
    };
    let stop = stop_flag()?;
    let started = std::time::Instant::now();
    let sum = job::run(&cfg, source.as_mut(), stop)?;
    close_within(source, CLOSE_WAIT);
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        records = sum.records,
        accepted = sum.accepted,
        rejected = sum.rejected,
        checkpoints = sum.checkpoints,
        files = sum.files_written,
        seconds = format!("{secs:.3}"),
        ended = sum.ended,
        out = %cfg.out.display(),
        "run finished"
    );
    Ok(())
}

/// How long a stopping job waits for its source to close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Closes the source (a Kafka client leaves its brokers) on a thread of its own and waits
/// at most `limit`: after a broker was paused, librdkafka's destroy waited for requests
/// that only time out after a minute, and held a stopped job for as long. Everything read
/// is checkpointed by now, so the process may exit without it.
fn close_within(source: Box<dyn retail_kpi::source::Source + Send>, limit: Duration) {
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(source);
        let _ = done.send(());
    });
    if wait.recv_timeout(limit).is_err() {
        tracing::warn!(
            "the source did not close within {limit:?}; exiting without waiting for it (everything read is checkpointed)"
        );
    }
}

/// Starts the metrics server. The default address may be taken (another job on the same
/// host): then the job runs without metrics and says so; an address the operator chose
/// must work.
fn serve_metrics(s: &Settings) -> anyhow::Result<Option<Arc<Metrics>>> {
    let Some(addr) = s.metrics_addr else {
        return Ok(None);
    };
    let m = Arc::new(Metrics::new(s.ready_max_lag));
    match retail_kpi::metrics::serve(addr, Arc::clone(&m)) {
        Ok(bound) => {
            tracing::info!("metrics on http://{bound}/metrics, health on /healthz and /readyz");
            Ok(Some(m))
        }
        Err(e) if e.is_addr_in_use() && s.origins.get("metrics_addr") == Some(&Origin::Default) => {
            tracing::warn!("{e}; running without metrics");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The migrations a plan or a migration lists, one line each.
fn print_steps(m: &retail_kpi::state::Migrated, verb: &str) {
    for s in &m.steps {
        println!(
            "  {verb} {:04} {}: {} (keys written {}, deleted {}{})",
            s.version,
            s.name,
            s.summary,
            s.puts,
            s.deletes,
            if s.families_created.is_empty() {
                String::new()
            } else {
                format!(", families created {}", s.families_created.join(", "))
            }
        );
    }
}

fn migrate(path: &std::path::Path, dry_run: bool) -> anyhow::Result<()> {
    use retail_kpi::state::SCHEMA_VERSION;
    // Read-only first: a missing, newer, foreign or damaged store is refused untouched, and
    // a dry run is the plan and nothing else.
    let plan = Store::open_read_only(path)?.plan()?;
    if plan.steps.is_empty() {
        println!(
            "{}: schema version {} is this build's; nothing to migrate",
            path.display(),
            plan.from
        );
        return Ok(());
    }
    if dry_run {
        println!(
            "{}: would migrate from schema version {} to {SCHEMA_VERSION}",
            path.display(),
            plan.from
        );
        if let Some(b) = &plan.backup {
            println!("  would back it up first to {}", b.display());
        }
        print_steps(&plan, "would apply");
        println!("dry run: nothing changed");
        return Ok(());
    }
    let (_store, done) = Store::open_and_migrate(path)?;
    match done {
        Some(m) => {
            println!(
                "{}: migrated from schema version {} to {}",
                path.display(),
                m.from,
                m.to
            );
            if let Some(b) = &m.backup {
                println!("  backup of the old store: {}", b.display());
            }
            print_steps(&m, "applied");
        }
        // Another process migrated it between the two opens.
        None => println!(
            "{}: schema version {SCHEMA_VERSION} is this build's; nothing to migrate",
            path.display()
        ),
    }
    Ok(())
}

fn inspect(path: &std::path::Path, json: bool) -> anyhow::Result<()> {
    use retail_kpi::state::SCHEMA_VERSION;
    // Read-only: looking must not migrate, create or change a store.
    let store = Store::open_read_only(path)?;
    let version = store.version();
    if version < SCHEMA_VERSION {
        // This build reads only its own layout; say what is there and what to do.
        let plan = store.plan()?;
        let pending: Vec<String> = plan
            .steps
            .iter()
            .map(|s| format!("{:04}_{}", s.version, s.name))
            .collect();
        let advice = format!(
            "older than this build's schema version {SCHEMA_VERSION}: run `retail-kpi state migrate --state {}` (or start the job) to migrate it, then inspect it",
            path.display()
        );
        if json {
            let v = serde_json::json!({
                "schema_version": version,
                "supported_schema_version": SCHEMA_VERSION,
                "pending_migrations": pending,
                "advice": advice,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!("state store      {}", path.display());
            println!("schema version   {version} ({advice})");
            println!("pending          {}", pending.join(", "));
        }
        return Ok(());
    }
    let r = store.load()?;
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
        "settings": r.settings.map(|set| set.describe().into_iter().map(|(k, v)| (k.to_owned(), serde_json::Value::from(v))).collect::<serde_json::Map<_, _>>()),
        "source": match &r.source {
            None => serde_json::Value::Null,
            Some(retail_kpi::source::SourceIdentity::Kafka { topic, topic_id }) => serde_json::json!({"kafka": {"topic": topic, "topic_id": topic_id}}),
            Some(retail_kpi::source::SourceIdentity::File { bytes, hash }) => serde_json::json!({"file": {"bytes_read": bytes, "xxh3_128": format!("{hash:032x}")}}),
        },
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
        println!(
            "settings         {}",
            serde_json::to_string(&v["settings"])?
        );
        println!("source           {}", serde_json::to_string(&v["source"])?);
        println!("buckets due      {}", r.ready_buckets.len());
        println!("rejected files due {}", r.pending_rejected.len());
        println!(
            "counters         {}",
            serde_json::to_string(&v["counters"])?
        );
    }
    Ok(())
}
