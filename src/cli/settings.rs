//! The settings of `run` and `config check`: flags, then `RETAIL_KPI_*` environment, then
//! the settings file, then defaults, with where each value came from.

use super::*;

/// Longest grace or future skew: ten years of event time.
pub const MAX_EVENT_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// Longest duration handed to librdkafka, whose timeouts are 32-bit milliseconds.
pub const MAX_CLIENT_DURATION: Duration = Duration::from_secs(24 * 86_400);

pub fn kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 60s, 500ms, 1h)"))
}

/// The flags of `run` (and `config check`). A flag left out falls back to its
/// `RETAIL_KPI_*` variable, then to the settings file, then to the default shown; which
/// came from where is read from clap's value sources (see `Settings::resolve`).
#[derive(Args, Debug)]
pub struct RunArgs {
    /// TOML settings file (keys: the long flag names with `_`; a `[kafka]` table).
    #[arg(long, env = "RETAIL_KPI_CONFIG")]
    pub config: Option<PathBuf>,
    /// JSON-lines input; `-` reads standard input.
    #[arg(long, env = "RETAIL_KPI_INPUT")]
    pub input: Option<PathBuf>,
    /// Kafka bootstrap servers (HOST:PORT[,HOST:PORT...]); needs --topic.
    #[arg(long, env = "RETAIL_KPI_BROKERS")]
    pub brokers: Option<String>,
    /// Kafka topic to read.
    #[arg(long, env = "RETAIL_KPI_TOPIC")]
    pub topic: Option<String>,
    /// `end`: a bounded run up to the end offsets found at start (Kafka only).
    #[arg(long, value_parser = ["end"], env = "RETAIL_KPI_UNTIL")]
    pub until: Option<String>,
    /// With `--until end`: close every window at the end (a backfill).
    #[arg(long)]
    pub close_at_end: bool,
    /// Where a partition without a committed offset starts.
    #[arg(long, value_enum, default_value = "earliest", env = "RETAIL_KPI_START")]
    pub start: retail_kpi::source::kafka::StartAt,
    /// SPEC §4 idle timeout.
    #[arg(long, default_value = "60s", value_parser = duration, env = "RETAIL_KPI_IDLE_TIMEOUT")]
    pub idle_timeout: Duration,
    /// Consumer group under which offsets are committed for lag monitoring only.
    #[arg(long, env = "RETAIL_KPI_GROUP_ID")]
    pub group_id: Option<String>,
    /// Longest wait at start for the brokers to give the topic's metadata; then exit 5.
    #[arg(long, default_value = "30s", value_parser = duration, env = "RETAIL_KPI_CONNECT_TIMEOUT")]
    pub connect_timeout: Duration,
    /// Records gone from the brokers before the job read them (retention, deletion, a
    /// topic created again): `fail` stops with exit 5; `continue` writes each gap to
    /// <out>/gaps/ and goes on from the earliest offset the brokers have.
    #[arg(
        long,
        value_enum,
        default_value = "fail",
        env = "RETAIL_KPI_ON_DATA_LOSS"
    )]
    pub on_data_loss: retail_kpi::source::kafka::OnDataLoss,
    /// librdkafka property passed through, e.g. -X security.protocol=SASL_SSL (repeatable;
    /// wins over the same key in the settings file's `[kafka]` table). Secrets given here
    /// show in the process list: put them in the settings file.
    #[arg(short = 'X', value_parser = kv)]
    pub kafka_property: Vec<(String, String)>,
    /// Folder of the output files.
    #[arg(long, env = "RETAIL_KPI_OUT")]
    pub out: Option<PathBuf>,
    /// Folder of the state store (RocksDB).
    #[arg(long, env = "RETAIL_KPI_STATE")]
    pub state: Option<PathBuf>,
    /// Grace for late invoices.
    #[arg(long, default_value = "60s", value_parser = duration, env = "RETAIL_KPI_GRACE")]
    pub grace: Duration,
    /// Time between checkpoints.
    #[arg(long, default_value = "1s", value_parser = duration, env = "RETAIL_KPI_CHECKPOINT_INTERVAL")]
    pub checkpoint_interval: Duration,
    /// Largest lead of an event time over its broker timestamp.
    #[arg(long, default_value = "1h", value_parser = duration, env = "RETAIL_KPI_MAX_FUTURE_SKEW")]
    pub max_future_skew: Duration,
    /// Largest record value, bytes.
    #[arg(long, default_value_t = 1 << 20, env = "RETAIL_KPI_MAX_RECORD_BYTES")]
    pub max_record_bytes: usize,
    /// Most items in one invoice.
    #[arg(long, default_value_t = 10_000, env = "RETAIL_KPI_MAX_ITEMS")]
    pub max_items: u64,
    /// Most distinct countries one partition may bring into one window; an invoice that
    /// would add one more is rejected as too_large (the default is four times the ISO
    /// 3166 list: no real shop nears it, and made-up names cannot grow a window for ever).
    #[arg(long, default_value_t = retail_kpi::aggregate::DEFAULT_MAX_COUNTRIES, env = "RETAIL_KPI_MAX_COUNTRIES")]
    pub max_countries: usize,
    /// Print the per-invoice summary (invoice_no, country, timestamp, total_cost,
    /// total_items, is_order, is_return) as JSON lines on standard output.
    #[arg(long)]
    pub print_invoices: bool,
    /// Address of /metrics, /healthz and /readyz (HOST:PORT; port 0 picks a free one and
    /// logs it); `off` serves nothing.
    #[arg(
        long,
        default_value = "127.0.0.1:9898",
        env = "RETAIL_KPI_METRICS_ADDR"
    )]
    pub metrics_addr: String,
    /// /readyz answers 503 while more records than this are left to read (Kafka).
    #[arg(long, default_value_t = 10_000, env = "RETAIL_KPI_READY_MAX_LAG")]
    pub ready_max_lag: u64,
}

/// Where a setting's value came from, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env,
    File,
    Default,
}

impl Origin {
    pub fn name(self) -> &'static str {
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
pub struct Settings {
    pub config: Option<PathBuf>,
    pub input: Option<PathBuf>,
    pub brokers: Option<String>,
    pub topic: Option<String>,
    pub until_end: bool,
    pub close_at_end: bool,
    pub start: retail_kpi::source::kafka::StartAt,
    pub idle_timeout: Duration,
    pub group_id: Option<String>,
    pub connect_timeout: Duration,
    pub on_data_loss: retail_kpi::source::kafka::OnDataLoss,
    pub out: PathBuf,
    pub state: PathBuf,
    pub grace: Duration,
    pub checkpoint_interval: Duration,
    pub max_future_skew: Duration,
    pub max_record_bytes: usize,
    pub max_items: u64,
    pub max_countries: usize,
    pub print_invoices: bool,
    /// `None`: `off`.
    pub metrics_addr: Option<SocketAddr>,
    pub ready_max_lag: u64,
    pub log_format: Option<LogFormat>,
    /// librdkafka properties: the file's `[kafka]` table, then `-X` over it.
    pub kafka: BTreeMap<String, String>,
    pub origins: BTreeMap<&'static str, Origin>,
    pub kafka_origins: BTreeMap<String, Origin>,
    /// The settings file holds secrets that others than its owner may read.
    pub file_exposes_secrets: bool,
}

/// Merges one setting: a flag or variable wins, then the file, then clap's default.
pub struct Merge<'a> {
    pub m: &'a ArgMatches,
    pub origins: BTreeMap<&'static str, Origin>,
}

impl Merge<'_> {
    pub fn given(&self, id: &str) -> Option<Origin> {
        match self.m.value_source(id) {
            Some(ValueSource::CommandLine) => Some(Origin::Flag),
            Some(ValueSource::EnvVariable) => Some(Origin::Env),
            _ => None,
        }
    }

    pub fn pick<T>(&mut self, id: &'static str, cli: T, file: Option<T>) -> T {
        let (v, o) = match (self.given(id), file) {
            (Some(o), _) => (cli, o),
            (None, Some(f)) => (f, Origin::File),
            (None, None) => (cli, Origin::Default),
        };
        self.origins.insert(id, o);
        v
    }

    /// A setting the file gives as text, parsed like its flag.
    pub fn pick_parsed<T>(
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
    pub fn resolve(r: &RunArgs, m: &ArgMatches) -> Result<Settings, SettingsError> {
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
            <retail_kpi::source::kafka::StartAt as clap::ValueEnum>::from_str(s, false)
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
                <retail_kpi::source::kafka::OnDataLoss as clap::ValueEnum>::from_str(s, false)
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
    pub fn show(&self) -> String {
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
            retail_kpi::source::kafka::StartAt::Earliest => "earliest",
            retail_kpi::source::kafka::StartAt::Latest => "latest",
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
                    retail_kpi::source::kafka::OnDataLoss::Fail => "fail",
                    retail_kpi::source::kafka::OnDataLoss::Continue => "continue",
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
pub fn parse_metrics_addr(s: &str) -> Result<Option<SocketAddr>, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("{s:?} is not HOST:PORT or `off`: {e}"))?
        .next()
        .map(Some)
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}
