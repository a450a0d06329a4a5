//! The settings of a run, one struct per component, each setting declared once (below, in
//! `settings!`): its doc comment (the `--help` text), flag, `RETAIL_KPI_*` variable and
//! default (clap's `#[arg]`), settings-file key (the field's name) and type. Precedence is
//! flag, then environment, then the settings file, then the default, merged in one place
//! ([`Layers::pick`]); the binary adds `--config` and `-X` and shows the result
//! (`config check`). The settings file is TOML, with a `[kafka]` table of librdkafka
//! properties:
//!
//! ```toml
//! brokers = "broker1:9092,broker2:9092"
//! topic = "invoices"
//! out = "/var/lib/retail-kpi/out"
//! state = "/var/lib/retail-kpi/state"
//! grace = "2m"
//!
//! [kafka]
//! "security.protocol" = "SASL_SSL"
//! "sasl.mechanism" = "SCRAM-SHA-512"
//! "sasl.username" = "retail-kpi"
//! "sasl.password" = "..."
//! ```
//!
//! A new setting is one field in one struct below; a new kind of value (beside numbers,
//! text, paths, durations, names) is one [`Setting`] impl in `settings/value.rs`.

#[macro_use]
mod layer;
mod value;

pub use layer::{missing, Layers, Origin, Origins};
pub use value::{
    duration, parse_metrics_addr, toml_string, AtMost, ClientDuration, EventDuration, LogFormat,
    MetricsAddr, Setting, Until, MAX_CLIENT_DURATION, MAX_EVENT_DURATION,
};

use crate::aggregate::DEFAULT_MAX_COUNTRIES;
use crate::distributed::Role;
use crate::sink::{Format, OutLocation};
use crate::source::kafka::{OnDataLoss, StartAt};
use serde::Deserialize;
use std::path::{Path, PathBuf};

settings! {
    /// Where the records come from: a JSON-lines file (or standard input) or a Kafka topic.
    /// The topic's librdkafka properties (`-X`, `[kafka]`) are merged by the binary.
    pub struct SourceSettings(SourceFlags) {
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
        #[arg(long, value_enum, env = "RETAIL_KPI_UNTIL")]
        pub until: Option<Until>,
        /// With `--until end`: close every window at the end (a backfill).
        #[arg(long, action = clap::ArgAction::SetTrue)]
        pub close_at_end: bool,
        /// Where a partition without a committed offset starts.
        #[arg(long, value_enum, default_value = "earliest", env = "RETAIL_KPI_START")]
        pub start: StartAt,
        /// SPEC §4 idle timeout.
        #[arg(long, default_value = "60s", value_parser = duration, env = "RETAIL_KPI_IDLE_TIMEOUT")]
        pub idle_timeout: ClientDuration,
        /// Consumer group under which offsets are committed for lag monitoring only.
        #[arg(long, env = "RETAIL_KPI_GROUP_ID")]
        pub group_id: Option<String>,
        /// Longest wait at start for the brokers to give the topic's metadata; then exit 5.
        #[arg(long, default_value = "30s", value_parser = duration, env = "RETAIL_KPI_CONNECT_TIMEOUT")]
        pub connect_timeout: ClientDuration,
        /// Records gone from the brokers before the job read them (retention, deletion, a
        /// topic created again): `fail` stops with exit 5; `continue` writes each gap to
        /// <out>/gaps/ and goes on from the earliest offset the brokers have.
        #[arg(long, value_enum, default_value = "fail", env = "RETAIL_KPI_ON_DATA_LOSS")]
        pub on_data_loss: OnDataLoss,
    }

    /// What the job writes: the KPI files, and the per-invoice summary.
    pub struct OutputSettings(OutputFlags) {
        /// Where the output goes: a folder (or `file:///path`), or a prefix in object
        /// storage, `s3://BUCKET/PREFIX` (options: the AWS_* variables, `[object_store]`).
        #[arg(long, env = "RETAIL_KPI_OUT")]
        pub out: Option<OutLocation>,
        /// Encoding of the KPI files: `json` (SPEC §5), `parquet` (exact DECIMAL money),
        /// or `both`, side by side under the same names.
        #[arg(long, value_enum, default_value = "json", env = "RETAIL_KPI_FORMAT")]
        pub format: Format,
        /// Object storage: how long one object is retried through transport errors (an
        /// unreachable or restarting store) before the job stops with exit 4.
        #[arg(long, default_value = "60s", value_parser = duration, env = "RETAIL_KPI_OUT_RETRY_TIMEOUT")]
        pub out_retry_timeout: ClientDuration,
        /// Print the per-invoice summary (invoice_no, country, timestamp, total_cost,
        /// total_items, is_order, is_return) as JSON lines on standard output.
        #[arg(long, action = clap::ArgAction::SetTrue)]
        pub print_invoices: bool,
    }

    /// The state store and how often a checkpoint is committed to it.
    pub struct CheckpointSettings(CheckpointFlags) {
        /// Folder of the state store (RocksDB).
        #[arg(long, env = "RETAIL_KPI_STATE")]
        pub state: Option<PathBuf>,
        /// Time between checkpoints.
        #[arg(long, default_value = "1s", value_parser = duration, env = "RETAIL_KPI_CHECKPOINT_INTERVAL")]
        pub checkpoint_interval: ClientDuration,
    }

    /// Event-time aggregation: lateness, skew, and the bound on countries per window
    /// (result settings: the store records them).
    pub struct AggregationSettings(AggregationFlags) {
        /// Grace for late invoices.
        #[arg(long, default_value = "60s", value_parser = duration, env = "RETAIL_KPI_GRACE")]
        pub grace: EventDuration,
        /// Largest lead of an event time over its broker timestamp.
        #[arg(long, default_value = "1h", value_parser = duration, env = "RETAIL_KPI_MAX_FUTURE_SKEW")]
        pub max_future_skew: EventDuration,
        /// Most distinct countries one partition may bring into one window; an invoice that
        /// would add one more is rejected as too_large (the default is four times the ISO
        /// 3166 list: no real shop nears it, and made-up names cannot grow a window for ever).
        #[arg(long, default_value = default_text!(DEFAULT_MAX_COUNTRIES), env = "RETAIL_KPI_MAX_COUNTRIES")]
        pub max_countries: usize,
    }

    /// The decoder's limits on a record (SPEC §7; result settings).
    pub struct LimitsSettings(LimitsFlags) {
        /// Largest record value, bytes.
        #[arg(long, default_value = "1048576", env = "RETAIL_KPI_MAX_RECORD_BYTES")]
        pub max_record_bytes: usize,
        /// Most items in one invoice.
        #[arg(long, default_value = "10000", env = "RETAIL_KPI_MAX_ITEMS")]
        pub max_items: u64,
    }

    /// How records are decoded.
    pub struct DecodeSettings(DecodeFlags) {
        /// Threads that decode records; 0: one per core. Aggregation stays in offset order
        /// on one thread, so the output does not depend on it.
        #[arg(long, default_value = "0", env = "RETAIL_KPI_THREADS")]
        pub threads: usize,
    }

    /// The metrics and health endpoints.
    pub struct MetricsSettings(MetricsFlags) {
        /// Address of /metrics, /healthz and /readyz (HOST:PORT; port 0 picks a free one and
        /// logs it); `off` serves nothing.
        #[arg(long, default_value = "127.0.0.1:9898", env = "RETAIL_KPI_METRICS_ADDR")]
        pub metrics_addr: MetricsAddr,
        /// /readyz answers 503 while more records than this are left to read (Kafka).
        #[arg(long, default_value = "10000", env = "RETAIL_KPI_READY_MAX_LAG")]
        pub ready_max_lag: u64,
    }

    /// Running over several processes (README "Running on several machines"): this
    /// process's role and the Kafka topics between the roles.
    pub struct RoleSettings(RoleFlags) {
        /// `single`: one process reads every partition and writes the files; `aggregate`:
        /// one of a consumer group's processes (--group-id), sending exact partial sums to
        /// the partials topic; `merge`: reads the partials topic and writes the files.
        #[arg(long, value_enum, default_value = "single", env = "RETAIL_KPI_ROLE")]
        pub role: Role,
        /// The topic between the aggregate processes and the merge; created with one
        /// partition when missing.
        #[arg(long, env = "RETAIL_KPI_PARTIALS_TOPIC")]
        pub partials_topic: Option<String>,
        /// The compacted topic of each input partition's resume record [default:
        /// <partials-topic>.progress].
        #[arg(long, env = "RETAIL_KPI_PROGRESS_TOPIC")]
        pub progress_topic: Option<String>,
        /// Replication factor of the two topics when this process creates them.
        #[arg(long, default_value = "3", env = "RETAIL_KPI_REPLICATION_FACTOR")]
        pub replication_factor: usize,
        /// min.insync.replicas of the two topics when this process creates them.
        #[arg(long, default_value = "2", env = "RETAIL_KPI_MIN_INSYNC_REPLICAS")]
        pub min_insync_replicas: usize,
        /// An aggregate process's transactional id, unique per process [default:
        /// <group-id>-<host>-<pid>].
        #[arg(long, env = "RETAIL_KPI_TRANSACTIONAL_ID")]
        pub transactional_id: Option<String>,
    }

    /// The log lines on standard error. Every command takes these flags (global); the
    /// settings file adds to them for `run` and `config check`.
    pub struct LoggingSettings(LoggingFlags) {
        /// Log format on standard error [default: human; `log_format` in the settings file].
        #[arg(long, global = true, value_enum, env = "RETAIL_KPI_LOG_FORMAT")]
        pub log_format: Option<LogFormat>,
    }
}

impl SourceSettings {
    /// The rules between the source's settings, once each is resolved.
    pub fn check(&self, origins: &Origins) -> Result<(), SettingsError> {
        let origin = |key: &str| origins.get(key).copied().unwrap_or(Origin::Default);
        let invalid = |key: &str, message: String| SettingsError::Invalid {
            key: key.into(),
            origin: origin(key).name().into(),
            message,
        };
        match (&self.input, &self.brokers) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "input",
                    format!(
                        "both an input file and brokers are set (input from the {}, brokers from the {}); a run reads one source",
                        origin("input").name(),
                        origin("brokers").name()
                    ),
                ))
            }
            (None, None) => {
                return Err(SettingsError::Missing(
                    "no source: give --input FILE (`-` for standard input) or --brokers HOST:PORT with --topic, as flags, RETAIL_KPI_INPUT / RETAIL_KPI_BROKERS, or in the settings file".into(),
                ))
            }
            (None, Some(_)) if self.topic.is_none() => {
                return Err(missing::<SourceFlags>("topic", "the topic"))
            }
            _ => {}
        }
        if self.until.is_some() && self.brokers.is_none() {
            return Err(invalid(
                "until",
                "`until = end` bounds a Kafka run; a file run always ends at its last line".into(),
            ));
        }
        if self.close_at_end && self.until.is_none() {
            return Err(invalid(
                "close_at_end",
                "close_at_end needs `until = end` (a live run never ends)".into(),
            ));
        }
        Ok(())
    }
}

impl RoleSettings {
    /// The rules between the role and the other components' settings; returns which of
    /// the output and state settings the role needs.
    pub fn check(&self, src: &SourceSettings, origins: &Origins) -> Result<bool, SettingsError> {
        let origin = |key: &str| origins.get(key).copied().unwrap_or(Origin::Default);
        let invalid = |key: &str, message: String| SettingsError::Invalid {
            key: key.into(),
            origin: origin(key).name().into(),
            message,
        };
        let need = |ok: bool, key: &str, what: &str| -> Result<(), SettingsError> {
            if ok {
                Ok(())
            } else {
                Err(invalid(
                    key,
                    format!(
                        "--role {} needs {what}",
                        crate::distributed::role_name(self.role)
                    ),
                ))
            }
        };
        match self.role {
            Role::Single => {
                if self.partials_topic.is_some() {
                    return Err(invalid(
                        "partials_topic",
                        "a partials topic is for --role aggregate and --role merge; a single process needs none".into(),
                    ));
                }
                src.check(origins)?;
                Ok(true)
            }
            Role::Aggregate | Role::Merge => {
                need(
                    src.input.is_none(),
                    "input",
                    "Kafka input (--brokers), not a file",
                )?;
                need(src.brokers.is_some(), "brokers", "--brokers")?;
                need(
                    self.partials_topic.is_some(),
                    "partials_topic",
                    "--partials-topic",
                )?;
                if self.min_insync_replicas > self.replication_factor
                    || self.replication_factor == 0
                {
                    return Err(invalid(
                        "min_insync_replicas",
                        format!(
                            "min_insync_replicas ({}) must be at least 1 and at most replication_factor ({})",
                            self.min_insync_replicas, self.replication_factor
                        ),
                    ));
                }
                if self.role == Role::Aggregate {
                    need(src.topic.is_some(), "topic", "the input --topic")?;
                    need(
                        src.group_id.is_some(),
                        "group_id",
                        "--group-id (the consumer group of the aggregate processes)",
                    )?;
                    need(
                        !src.close_at_end,
                        "close_at_end",
                        "no --close-at-end (the merge closes windows)",
                    )?;
                    need(
                        src.on_data_loss == OnDataLoss::Fail,
                        "on_data_loss",
                        "--on-data-loss fail (continue is not supported over several processes)",
                    )?;
                    Ok(false)
                } else {
                    if src.close_at_end && src.until.is_none() {
                        return Err(invalid(
                            "close_at_end",
                            "close_at_end needs `until = end` (a live run never ends)".into(),
                        ));
                    }
                    Ok(true)
                }
            }
        }
    }
}

impl OutputSettings {
    pub fn check(&self) -> Result<(), SettingsError> {
        match self.out {
            Some(_) => Ok(()),
            None => Err(missing::<OutputFlags>("out", "the output folder")),
        }
    }
}

impl CheckpointSettings {
    pub fn check(&self) -> Result<(), SettingsError> {
        match self.state {
            Some(_) => Ok(()),
            None => Err(missing::<CheckpointFlags>("state", "the state folder")),
        }
    }
}

impl AggregationSettings {
    pub fn check(&self, origins: &Origins) -> Result<(), SettingsError> {
        if self.max_countries == 0 {
            return Err(SettingsError::Invalid {
                key: "max_countries".into(),
                origin: origins
                    .get("max_countries")
                    .copied()
                    .unwrap_or(Origin::Default)
                    .name()
                    .into(),
                message: "0 would refuse every invoice; give at least 1".into(),
            });
        }
        Ok(())
    }
}

/// What a masked secret is printed as.
pub const MASK: &str = "********";

/// Parts of a librdkafka property or object store option name that mark its value as a
/// secret: passwords, SASL JAAS and OAUTHBEARER settings, private keys and their PEM text,
/// tokens, credentials, secret access keys, customer encryption keys, proxy URLs.
const SECRET_MARKS: [&str; 11] = [
    "password",
    "secret",
    "sasl.jaas",
    "sasl.oauthbearer.config",
    "ssl.key",
    "private",
    "token",
    "credential",
    "keystore",
    "customer_key",
    // An object store's proxy URL may carry a user and password.
    "proxy_url",
];

/// Whether the value of this property must never be shown (case-insensitive).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_MARKS.iter().any(|m| k.contains(m))
}

/// The value as it may be shown: [`MASK`] for a secret.
pub fn shown<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret_key(key) {
        MASK
    } else {
        value
    }
}

/// Replaces secret values in text that is about to be shown (a log line, an error).
/// Values shorter than [`Redactor::MIN_LEN`] are left alone: masking every `a` or `1` in a
/// log would hide more than it protects, and such a value is no secret anyway.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub const MIN_LEN: usize = 4;

    /// Collects the secret values among librdkafka properties.
    pub fn new<'a>(properties: impl IntoIterator<Item = (&'a str, &'a str)>) -> Redactor {
        let mut secrets = Vec::new();
        for (k, v) in properties {
            if is_secret_key(k) && v.len() >= Self::MIN_LEN {
                // A JSON log line carries the value escaped; hide that spelling too.
                let escaped = serde_json::to_string(v).expect("a string serialises");
                let escaped = escaped[1..escaped.len() - 1].to_owned();
                if escaped != v {
                    secrets.push(escaped);
                }
                secrets.push(v.to_owned());
            }
        }
        // Longest first, so that a secret containing another is hidden whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "cannot read the settings file {path}: {source}; check --config (or RETAIL_KPI_CONFIG)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the settings file {path} is not valid: {message}; keys are the long flag names with `_` for `-` (see README \"Settings\")")]
    Parse { path: PathBuf, message: String },
    #[error("setting `{key}` ({origin}): {message}")]
    Invalid {
        key: String,
        origin: String,
        message: String,
    },
    #[error("{0}")]
    Missing(String),
}

/// A librdkafka property value in the `[kafka]` table: TOML strings, numbers and booleans
/// are all passed on as text, which is what librdkafka takes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PropertyValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl std::fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PropertyValue::Text(s) => f.write_str(s),
            PropertyValue::Integer(i) => write!(f, "{i}"),
            PropertyValue::Float(x) => write!(f, "{x}"),
            PropertyValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl FileSettings {
    pub fn load(path: &Path) -> Result<FileSettings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<FileSettings, SettingsError> {
        toml::from_str(text).map_err(|e| SettingsError::Parse {
            path: path.into(),
            // toml's message spans several lines (the excerpt of the file); one is enough
            // for a log line, and the excerpt could show a secret of the `[kafka]` table.
            message: e.message().trim().to_owned()
                + &e.span()
                    .map(|s| format!(" (at byte {})", s.start))
                    .unwrap_or_default(),
        })
    }

    /// Whether the file holds a secret while others than its owner may read it.
    #[cfg(unix)]
    pub fn exposes_secrets(&self, path: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        (self.kafka.keys().chain(self.object_store.keys())).any(|k| is_secret_key(k))
            && std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    }

    #[cfg(not(unix))]
    pub fn exposes_secrets(&self, _path: &Path) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_recognised() {
        for k in [
            "sasl.password",
            "SASL.PASSWORD",
            "sasl.jaas.config",
            "ssl.key.password",
            "ssl.key.pem",
            "ssl.key.location",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "https.client.private.key",
            "aws_secret_access_key",
            "aws_session_token",
            "aws_sse_customer_key_base64",
            "aws_proxy_url",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "security.protocol",
            "sasl.username",
            "sasl.mechanism",
            "ssl.ca.location",
            "ssl.certificate.location",
            "bootstrap.servers",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
        assert_eq!(shown("sasl.password", "hunter22"), MASK);
        assert_eq!(shown("sasl.username", "bob"), "bob");
    }

    #[test]
    fn redactor_hides_raw_and_json_escaped_secrets() {
        let r = Redactor::new([
            ("sasl.password", "pa\"ss word"),
            ("sasl.username", "visible-user"),
            ("ssl.key.password", "abc"), // too short to redact
        ]);
        assert_eq!(
            r.redact(r#"failed with pa"ss word and {"v":"pa\"ss word"} for visible-user abc"#),
            format!(r#"failed with {MASK} and {{"v":"{MASK}"}} for visible-user abc"#)
        );
        assert!(Redactor::new([("sasl.username", "bob")]).is_empty());
    }

    #[test]
    fn the_file_takes_known_keys_and_a_kafka_table() {
        let f = FileSettings::parse(
            Path::new("t.toml"),
            r#"
topic = "invoices"
grace = "2m"
max_items = 7
close_at_end = true
[kafka]
"security.protocol" = "SASL_SSL"
"fetch.wait.max.ms" = 50
"enable.ssl.certificate.verification" = false
"#,
        )
        .unwrap();
        assert_eq!(f.topic.as_deref(), Some("invoices"));
        assert_eq!(f.grace.as_deref(), Some("2m"));
        assert_eq!(f.max_items, Some(7));
        assert_eq!(f.close_at_end, Some(true));
        assert_eq!(f.kafka["fetch.wait.max.ms"].to_string(), "50");
        assert_eq!(
            f.kafka["enable.ssl.certificate.verification"].to_string(),
            "false"
        );
        let e = FileSettings::parse(Path::new("t.toml"), "gracee = \"1s\"\n").unwrap_err();
        assert!(e.to_string().contains("gracee"), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn a_flag_wins_over_the_file_and_the_file_over_the_default() {
        use clap::{Args, FromArgMatches};
        use std::time::Duration;
        let m = AggregationFlags::augment_args(clap::Command::new("t"))
            .try_get_matches_from(["t", "--grace", "10s"])
            .unwrap();
        let flags = AggregationFlags::from_arg_matches(&m).unwrap();
        let file = FileSettings::parse(
            Path::new("t.toml"),
            "grace = \"30s\"\nmax_future_skew = \"2h\"\n",
        )
        .unwrap();
        let mut layers = Layers::new(&m);
        let a = AggregationSettings::resolve(&flags, &file, &mut layers).unwrap();
        assert_eq!(a.grace.0, Duration::from_secs(10));
        assert_eq!(a.max_future_skew.0, Duration::from_secs(7200));
        assert_eq!(a.max_countries, DEFAULT_MAX_COUNTRIES);
        assert_eq!(layers.origins["grace"], Origin::Flag);
        assert_eq!(layers.origins["max_future_skew"], Origin::File);
        assert_eq!(layers.origins["max_countries"], Origin::Default);
        assert!(layers.in_file.contains("grace") && !layers.in_file.contains("max_countries"));
        assert_eq!(
            a.shown(),
            vec![
                ("grace", Some("\"10s\"".to_owned())),
                ("max_future_skew", Some("\"2h\"".to_owned())),
                ("max_countries", Some(DEFAULT_MAX_COUNTRIES.to_string())),
            ]
        );

        // A bad file value under a flag is never read; one that is used names the file.
        let bad = FileSettings::parse(
            Path::new("t.toml"),
            "grace = \"soon\"\nmax_future_skew = \"4000days\"\n",
        )
        .unwrap();
        let e = AggregationSettings::resolve(&flags, &bad, &mut Layers::new(&m)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "setting `max_future_skew` (settings file): 10years 11months 12days 15h 50m 24s is more than the most this setting takes, 3650 days"
        );
    }

    #[test]
    fn a_missing_setting_names_its_flag_variable_and_key() {
        assert_eq!(
            missing::<OutputFlags>("out", "the output folder").to_string(),
            "the output folder is not set: give --out, set RETAIL_KPI_OUT, or set `out` in the settings file (--config)"
        );
    }
}
