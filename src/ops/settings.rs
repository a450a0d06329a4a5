//! The settings file (`--config FILE`, TOML) and the rules that keep secrets out of sight.
//!
//! Precedence is flag, then `RETAIL_KPI_*` environment, then this file, then the built-in
//! default; the binary merges them (it knows which flags were given). Keys are the long
//! flag names with `_` for `-`; librdkafka properties go in a `[kafka]` table:
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

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a masked secret is printed as.
pub const MASK: &str = "********";

/// Parts of a librdkafka property name that mark its value as a secret: passwords, SASL
/// JAAS and OAUTHBEARER settings, private keys and their PEM text, tokens, credentials.
const SECRET_MARKS: [&str; 9] = [
    "password",
    "secret",
    "sasl.jaas",
    "sasl.oauthbearer.config",
    "ssl.key",
    "private",
    "token",
    "credential",
    "keystore",
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

/// The settings file of `run` and `config check`. Every key is optional; unknown keys are
/// refused, so that a misspelt setting is an error rather than silently ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub input: Option<PathBuf>,
    pub brokers: Option<String>,
    pub topic: Option<String>,
    pub until: Option<String>,
    pub close_at_end: Option<bool>,
    pub start: Option<String>,
    pub idle_timeout: Option<String>,
    pub group_id: Option<String>,
    pub connect_timeout: Option<String>,
    pub on_data_loss: Option<String>,
    pub out: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub grace: Option<String>,
    pub checkpoint_interval: Option<String>,
    pub max_future_skew: Option<String>,
    pub max_record_bytes: Option<usize>,
    pub max_items: Option<u64>,
    pub max_countries: Option<usize>,
    pub print_invoices: Option<bool>,
    pub metrics_addr: Option<String>,
    pub ready_max_lag: Option<u64>,
    pub log_format: Option<String>,
    #[serde(default)]
    pub kafka: BTreeMap<String, PropertyValue>,
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
        self.kafka.keys().any(|k| is_secret_key(k))
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
}
