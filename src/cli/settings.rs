//! The settings of `run` and `config check` on the command line: the components' flags
//! (declared once with their settings in `retail_kpi::ops::settings`), `--config` and
//! `-X`; their merge, and `config check`'s listing of it.

use super::*;
use retail_kpi::ops::settings::{
    AggregationFlags, AggregationSettings, CheckpointFlags, CheckpointSettings, DecodeFlags,
    DecodeSettings, LimitsFlags, LimitsSettings, LoggingFlags, LoggingSettings, MetricsFlags,
    MetricsSettings, Origin, Origins, OutputFlags, OutputSettings, RoleFlags, RoleSettings,
    SourceFlags, SourceSettings,
};
use std::collections::BTreeSet;

pub fn kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

/// The flags of `run` (and `config check`). A flag left out falls back to its
/// `RETAIL_KPI_*` variable, then to the settings file, then to the default shown.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// TOML settings file (keys: the long flag names with `_`; a `[kafka]` table).
    #[arg(long, env = "RETAIL_KPI_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceFlags,
    /// librdkafka property passed through, e.g. -X security.protocol=SASL_SSL (repeatable;
    /// wins over the same key in the settings file's `[kafka]` table). Secrets given here
    /// show in the process list: put them in the settings file.
    #[arg(short = 'X', value_parser = kv)]
    pub kafka_property: Vec<(String, String)>,
    #[command(flatten)]
    pub output: OutputFlags,
    #[command(flatten)]
    pub checkpoint: CheckpointFlags,
    #[command(flatten)]
    pub aggregation: AggregationFlags,
    #[command(flatten)]
    pub limits: LimitsFlags,
    #[command(flatten)]
    pub decode: DecodeFlags,
    #[command(flatten)]
    pub metrics: MetricsFlags,
    #[command(flatten)]
    pub role: RoleFlags,
}

/// The order `config check` has always listed the settings in, kept so that its output
/// does not change; a setting not named here follows them, in declaration order.
const SHOWN_ORDER: [&str; 22] = [
    "input",
    "brokers",
    "topic",
    "until",
    "close_at_end",
    "start",
    "idle_timeout",
    "group_id",
    "connect_timeout",
    "on_data_loss",
    "out",
    "format",
    "state",
    "grace",
    "checkpoint_interval",
    "max_future_skew",
    "max_record_bytes",
    "max_items",
    "max_countries",
    "print_invoices",
    "metrics_addr",
    "ready_max_lag",
];

/// The effective settings of a run, and where each came from. No `Debug`: it holds the
/// secrets of `kafka`, which `show` masks.
pub struct Settings {
    pub config: Option<PathBuf>,
    pub source: SourceSettings,
    pub output: OutputSettings,
    pub checkpoint: CheckpointSettings,
    pub aggregation: AggregationSettings,
    pub limits: LimitsSettings,
    pub decode: DecodeSettings,
    pub metrics: MetricsSettings,
    pub role: RoleSettings,
    pub logging: LoggingSettings,
    /// librdkafka properties: the file's `[kafka]` table, then `-X` over it.
    pub kafka: BTreeMap<String, String>,
    pub origins: Origins,
    pub kafka_origins: BTreeMap<String, Origin>,
    /// Object store options (`--out s3://...`): the file's `[object_store]` table, then
    /// the `AWS_*` variables over it; each with its origin.
    pub object_store: BTreeMap<String, (String, Origin)>,
    /// The settings the file gives, whether or not they won.
    pub in_file: BTreeSet<&'static str>,
    /// The settings file holds secrets that others than its owner may read.
    pub file_exposes_secrets: bool,
}

impl Settings {
    /// `logging`: the global flags, parsed with the top-level command; `m`: the matches of
    /// `run` or `config check`, which carry the value sources of every flag, global ones too.
    pub fn resolve(
        r: &RunArgs,
        logging: &LoggingFlags,
        m: &ArgMatches,
    ) -> Result<Settings, SettingsError> {
        let file = match &r.config {
            Some(path) => FileSettings::load(path)?,
            None => FileSettings::default(),
        };
        let file_exposes_secrets = r.config.as_deref().is_some_and(|p| file.exposes_secrets(p));
        let mut layers = settings_file::Layers::new(m);
        let config_origin = layers.given("config").unwrap_or(Origin::Default);
        layers.origins.insert("config", config_origin);
        let source = SourceSettings::resolve(&r.source, &file, &mut layers)?;
        let output = OutputSettings::resolve(&r.output, &file, &mut layers)?;
        let checkpoint = CheckpointSettings::resolve(&r.checkpoint, &file, &mut layers)?;
        let aggregation = AggregationSettings::resolve(&r.aggregation, &file, &mut layers)?;
        let limits = LimitsSettings::resolve(&r.limits, &file, &mut layers)?;
        let decode = DecodeSettings::resolve(&r.decode, &file, &mut layers)?;
        let metrics = MetricsSettings::resolve(&r.metrics, &file, &mut layers)?;
        let role = RoleSettings::resolve(&r.role, &file, &mut layers)?;
        let logging = LoggingSettings::resolve(logging, &file, &mut layers)?;
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
        let mut object_store = BTreeMap::new();
        for (k, v) in &file.object_store {
            object_store.insert(k.to_ascii_lowercase(), (v.clone(), Origin::File));
        }
        for (k, v) in retail_kpi::sink::object::ObjectConfig::options_from_env() {
            object_store.insert(k, (v, Origin::Env));
        }
        let writes = role.check(&source, &layers.origins)?;
        aggregation.check(&layers.origins)?;
        if writes {
            output.check()?;
            checkpoint.check()?;
        }
        Ok(Settings {
            config: r.config.clone(),
            source,
            output,
            checkpoint,
            aggregation,
            limits,
            decode,
            metrics,
            role,
            logging,
            kafka,
            origins: layers.origins,
            kafka_origins,
            object_store,
            in_file: layers.in_file,
            file_exposes_secrets,
        })
    }

    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).copied().unwrap_or(Origin::Default)
    }

    /// The settings as a TOML settings file (it can be used as one), each with its origin;
    /// secret values masked.
    pub fn show(&self) -> String {
        let mut rows = [
            self.source.shown(),
            self.output.shown(),
            self.checkpoint.shown(),
            self.aggregation.shown(),
            self.limits.shown(),
            self.decode.shown(),
            self.metrics.shown(),
            self.role.shown(),
        ]
        .concat();
        rows.sort_by_key(|(key, _)| {
            SHOWN_ORDER
                .iter()
                .position(|k| k == key)
                .unwrap_or(SHOWN_ORDER.len())
        });
        let mut out = String::from(
            "# retail-kpi run settings: flag > RETAIL_KPI_* environment > settings file > default\n",
        );
        let line = |out: &mut String, key: &str, value: &str, origin: Origin| {
            let kv = format!("{key} = {value}");
            out.push_str(&format!("{kv:<44} # {}\n", origin.name()));
        };
        match &self.config {
            Some(p) => out.push_str(&format!(
                "# config = {} ({})\n",
                settings_file::toml_string(&p.display().to_string()),
                self.origin("config").name()
            )),
            None => out.push_str("# config: not set\n"),
        }
        for (key, value) in rows {
            match value {
                Some(v) => line(&mut out, key, &v, self.origin(key)),
                None => out.push_str(&format!("# {key}: not set\n")),
            }
        }
        // The log format is a flag of every command: listed, as it always was, where the
        // settings file gives it.
        for (key, value) in self.logging.shown() {
            if let (true, Some(v)) = (self.in_file.contains(key), value) {
                line(&mut out, key, &v, self.origin(key));
            }
        }
        out.push_str("\n[kafka]\n");
        for (k, v) in &self.kafka {
            line(
                &mut out,
                &settings_file::toml_string(k),
                &settings_file::toml_string(settings_file::shown(k, v)),
                self.kafka_origins[k],
            );
        }
        if !self.object_store.is_empty() {
            out.push_str("\n[object_store]\n");
            for (k, (v, origin)) in &self.object_store {
                line(
                    &mut out,
                    &settings_file::toml_string(k),
                    &settings_file::toml_string(settings_file::shown(k, v)),
                    *origin,
                );
            }
        }
        out
    }
}
