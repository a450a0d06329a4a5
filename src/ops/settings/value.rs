//! The kinds of value a setting holds: how each is read from its flag or variable (clap's
//! value, through the parser its `#[arg]` names), from the settings file, and how
//! `config check` shows it. A new setting of a kind listed here needs nothing in this file.

use crate::distributed::Role;
use crate::sink::{Format, OutLocation};
use crate::source::kafka::{OnDataLoss, StartAt};
use clap::ValueEnum;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Longest grace or future skew: ten years of event time.
pub const MAX_EVENT_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// Longest duration handed to librdkafka, whose timeouts are 32-bit milliseconds.
pub const MAX_CLIENT_DURATION: Duration = Duration::from_secs(24 * 86_400);

/// One kind of setting value.
pub trait Setting: Sized {
    /// What clap yields for the flag or its variable.
    type Flag: Clone + Send + Sync + 'static;
    /// What the settings file holds, type-checked when the file is read; a value that
    /// needs parsing stays text until it is used, so that a flag can override a bad one.
    type File: Clone;
    /// The value from the flag, its variable or the flag's default; `Err`: the message.
    fn from_flag(v: Self::Flag) -> Result<Self, String>;
    /// The value from the settings file, checked as the flag's would be.
    fn from_file(v: Self::File) -> Result<Self, String>;
    /// The value when no layer gives one: only an optional setting has one.
    fn unset() -> Option<Self> {
        None
    }
    /// As a TOML value; `None`: not set.
    fn show(&self) -> Option<String>;
}

/// A TOML basic string: a JSON string has the same escapes.
pub fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 60s, 500ms, 1h)"))
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

/// Settings taken as they are parsed, shown bare (TOML numbers and booleans).
macro_rules! as_is {
    ($($t:ty),*) => {$(
        impl Setting for $t {
            type Flag = $t;
            type File = $t;
            fn from_flag(v: $t) -> Result<Self, String> {
                Ok(v)
            }
            fn from_file(v: $t) -> Result<Self, String> {
                Ok(v)
            }
            fn show(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}

as_is!(bool, u64, usize);

impl Setting for String {
    type Flag = String;
    type File = String;
    fn from_flag(v: String) -> Result<Self, String> {
        Ok(v)
    }
    fn from_file(v: String) -> Result<Self, String> {
        Ok(v)
    }
    fn show(&self) -> Option<String> {
        Some(toml_string(self))
    }
}

impl Setting for PathBuf {
    type Flag = PathBuf;
    type File = PathBuf;
    fn from_flag(v: PathBuf) -> Result<Self, String> {
        Ok(v)
    }
    fn from_file(v: PathBuf) -> Result<Self, String> {
        Ok(v)
    }
    fn show(&self) -> Option<String> {
        Some(toml_string(&self.display().to_string()))
    }
}

/// A setting without a default: unset unless a layer gives it.
impl<T: Setting> Setting for Option<T> {
    type Flag = T::Flag;
    type File = T::File;
    fn from_flag(v: T::Flag) -> Result<Self, String> {
        T::from_flag(v).map(Some)
    }
    fn from_file(v: T::File) -> Result<Self, String> {
        T::from_file(v).map(Some)
    }
    fn unset() -> Option<Self> {
        Some(None)
    }
    fn show(&self) -> Option<String> {
        self.as_ref().and_then(T::show)
    }
}

/// A duration of at most `MAX_SECS` seconds: past the arithmetic's or librdkafka's
/// limits a value is a typo, never a wish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtMost<const MAX_SECS: u64>(pub Duration);

/// Grace and future skew.
pub type EventDuration = AtMost<{ MAX_EVENT_DURATION.as_secs() }>;

/// Durations handed to librdkafka or the checkpoint clock.
pub type ClientDuration = AtMost<{ MAX_CLIENT_DURATION.as_secs() }>;

impl<const MAX_SECS: u64> AtMost<MAX_SECS> {
    pub fn new(d: Duration) -> Result<Self, String> {
        if d > Duration::from_secs(MAX_SECS) {
            return Err(format!(
                "{} is more than the most this setting takes, {} days",
                humantime::format_duration(d),
                MAX_SECS / 86_400
            ));
        }
        Ok(AtMost(d))
    }
}

impl<const MAX_SECS: u64> Setting for AtMost<MAX_SECS> {
    type Flag = Duration;
    type File = String;
    fn from_flag(v: Duration) -> Result<Self, String> {
        Self::new(v)
    }
    fn from_file(v: String) -> Result<Self, String> {
        Self::new(duration(&v)?)
    }
    fn show(&self) -> Option<String> {
        Some(toml_string(&humantime::format_duration(self.0).to_string()))
    }
}

/// Where `/metrics`, `/healthz` and `/readyz` are served; `None`: `off`. Parsed after the
/// layers are merged (flag text too), so that its error names the layer it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

impl Setting for MetricsAddr {
    type Flag = String;
    type File = String;
    fn from_flag(v: String) -> Result<Self, String> {
        parse_metrics_addr(&v).map(MetricsAddr)
    }
    fn from_file(v: String) -> Result<Self, String> {
        parse_metrics_addr(&v).map(MetricsAddr)
    }
    fn show(&self) -> Option<String> {
        let text = self.0.map_or_else(|| "off".to_owned(), |a| a.to_string());
        Some(toml_string(&text))
    }
}

/// How a Kafka run ends: `end`, at the end offsets found at start.
// No doc comment on the variant: it would add a "Possible values" list to `--help`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    End,
}

/// Log lines on standard error: human or JSON.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// Settings named by a clap value enum: the file gives the name.
macro_rules! named {
    ($($t:ty),*) => {$(
        impl Setting for $t {
            type Flag = $t;
            type File = String;
            fn from_flag(v: $t) -> Result<Self, String> {
                Ok(v)
            }
            fn from_file(v: String) -> Result<Self, String> {
                from_name(&v)
            }
            fn show(&self) -> Option<String> {
                Some(toml_string(&name_of(self)))
            }
        }
    )*};
}

named!(StartAt, OnDataLoss, Until, LogFormat, Format, Role);

/// `--out`: parsed after the layers are merged, so that its error names its layer.
impl Setting for OutLocation {
    type Flag = String;
    type File = String;
    fn from_flag(v: String) -> Result<Self, String> {
        OutLocation::parse(&v)
    }
    fn from_file(v: String) -> Result<Self, String> {
        OutLocation::parse(&v)
    }
    fn show(&self) -> Option<String> {
        Some(toml_string(&self.to_string()))
    }
}

fn name_of<T: ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_owned())
}

/// The variant named `s`, or "\"s\" is not `a`, `b` or `c`".
fn from_name<T: ValueEnum>(s: &str) -> Result<T, String> {
    <T as ValueEnum>::from_str(s, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .map(|v| format!("`{}`", name_of(v)))
            .collect();
        let list = match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        format!("{s:?} is not {list}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bounds_read_as_before() {
        let start = from_name::<StartAt>("middle").unwrap_err();
        assert_eq!(start, "\"middle\" is not `earliest` or `latest`");
        let until = from_name::<Until>("later").unwrap_err();
        assert_eq!(until, "\"later\" is not `end`");
        assert_eq!(from_name::<LogFormat>("json"), Ok(LogFormat::Json));
        let grace = EventDuration::from_file("4000days".into()).unwrap_err();
        assert_eq!(
            grace,
            "10years 11months 12days 15h 50m 24s is more than the most this setting takes, 3650 days"
        );
        let days_25 = Duration::from_secs(25 * 86_400);
        let idle = ClientDuration::from_flag(days_25).unwrap_err();
        assert_eq!(
            idle,
            "25days is more than the most this setting takes, 24 days"
        );
        assert_eq!(MetricsAddr(None).show().as_deref(), Some("\"off\""));
        assert_eq!(<Option<String>>::unset(), Some(None));
        assert_eq!(<u64>::unset(), None);
    }
}
