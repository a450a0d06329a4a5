//! The layers of a setting, merged in one place: its flag or `RETAIL_KPI_*` variable (clap
//! says which through its value source), then the settings file, then the flag's default;
//! and the `settings!` macro that declares each setting once.

use super::{Setting, SettingsError};
use clap::parser::ValueSource;
use clap::ArgMatches;
use std::collections::{BTreeMap, BTreeSet};

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

/// The origin of each setting, by settings-file key.
pub type Origins = BTreeMap<&'static str, Origin>;

/// The merge of the components' settings: clap's matches, and what it found where.
pub struct Layers<'a> {
    matches: &'a ArgMatches,
    pub origins: Origins,
    /// The settings the file gives, whether or not they won.
    pub in_file: BTreeSet<&'static str>,
}

impl<'a> Layers<'a> {
    /// `matches`: those of the command whose flags are merged (`run`, `config check`).
    pub fn new(matches: &'a ArgMatches) -> Layers<'a> {
        Layers {
            matches,
            origins: Origins::new(),
            in_file: BTreeSet::new(),
        }
    }

    /// Whether the flag or its variable gave the setting (a default is not given).
    pub fn given(&self, key: &str) -> Option<Origin> {
        match self.matches.value_source(key) {
            Some(ValueSource::CommandLine) => Some(Origin::Flag),
            Some(ValueSource::EnvVariable) => Some(Origin::Env),
            _ => None,
        }
    }

    /// One setting: `flag` is clap's value (the default if nothing was given), `file` the
    /// settings file's. The value is checked only once it is chosen: a bad file value
    /// under a flag is never an error.
    pub fn pick<V: Setting>(
        &mut self,
        key: &'static str,
        flag: Option<V::Flag>,
        file: Option<V::File>,
    ) -> Result<V, SettingsError> {
        if file.is_some() {
            self.in_file.insert(key);
        }
        let (value, origin) = match (self.given(key), flag, file) {
            (Some(origin), Some(v), _) => (V::from_flag(v), origin),
            (_, _, Some(v)) => (V::from_file(v), Origin::File),
            (_, Some(v), None) => (V::from_flag(v), Origin::Default),
            (_, None, None) => match V::unset() {
                Some(v) => (Ok(v), Origin::Default),
                None => panic!("setting `{key}` has no default and is not an Option"),
            },
        };
        self.origins.insert(key, origin);
        value.map_err(|message| SettingsError::Invalid {
            key: key.into(),
            origin: origin.name().into(),
            message,
        })
    }
}

/// "the output folder is not set: give --out, set RETAIL_KPI_OUT, or set `out` in the
/// settings file (--config)", the flag and variable read from the declaration in `F`.
pub fn missing<F: clap::Args>(key: &str, what: &str) -> SettingsError {
    let cmd = F::augment_args(clap::Command::new("retail-kpi"));
    let arg = cmd.get_arguments().find(|a| a.get_id().as_str() == key);
    let flag = arg
        .and_then(|a| a.get_long())
        .map_or_else(String::new, |l| format!("--{l}"));
    let var = arg
        .and_then(|a| a.get_env())
        .map_or_else(String::new, |v| v.to_string_lossy().into_owned());
    SettingsError::Missing(format!(
        "{what} is not set: give {flag}, set {var}, or set `{key}` in the settings file (--config)"
    ))
}

/// A default computed in Rust (a constant), as the text clap shows in `--help` and parses.
macro_rules! default_text {
    ($value:expr) => {{
        static TEXT: ::std::sync::OnceLock<::std::string::String> = ::std::sync::OnceLock::new();
        TEXT.get_or_init(|| ($value).to_string()).as_str()
    }};
}

/// Declares the settings components, each setting once:
///
/// ```text
/// /// Help text (the doc comment is the `--help` text).
/// #[arg(long, env = "RETAIL_KPI_NAME", default_value = "60s", value_parser = duration)]
/// pub name: Type,
/// ```
///
/// `#[arg]` is clap's: the flag, its variable, its default and parser. The settings-file
/// key is the field's name; `Type` is a [`Setting`] (an `Option` where there is no
/// default). For each `pub struct Name(Flags)` it generates `Name`, the resolved values,
/// with `resolve` (the merge of [`Layers::pick`]) and `shown` (for `config check`), and
/// `Flags`, its clap arguments; and one `FileSettings`, the settings file with every key
/// of every component and the `[kafka]` table, refusing unknown keys.
macro_rules! settings {
    ($(
        $(#[doc = $sdoc:tt])*
        pub struct $Name:ident($Flags:ident) {
            $(
                $(#[doc = $doc:tt])*
                #[arg($($arg:tt)*)]
                pub $field:ident: $ty:ty,
            )*
        }
    )*) => {
        $(
            $(#[doc = $sdoc])*
            #[derive(Debug, Clone, PartialEq)]
            pub struct $Name {
                $(
                    $(#[doc = $doc])*
                    pub $field: $ty,
                )*
            }

            // No doc comment: clap would make it the `about` of the command it joins.
            #[derive(clap::Args, Debug, Clone)]
            pub struct $Flags {
                $(
                    $(#[doc = $doc])*
                    #[arg($($arg)*)]
                    // A bare `Option`: clap recognises optional arguments by a one-segment
                    // path only.
                    pub $field: Option<<$ty as $crate::ops::settings::Setting>::Flag>,
                )*
            }

            impl $Name {
                /// Each setting from the first layer that gives it.
                pub fn resolve(
                    flags: &$Flags,
                    file: &$crate::ops::settings::FileSettings,
                    layers: &mut $crate::ops::settings::Layers<'_>,
                ) -> ::std::result::Result<Self, $crate::ops::settings::SettingsError> {
                    ::std::result::Result::Ok($Name {
                        $(
                            $field: layers.pick::<$ty>(
                                stringify!($field),
                                flags.$field.clone(),
                                file.$field.clone(),
                            )?,
                        )*
                    })
                }

                /// Each setting's key and value as TOML (`None`: not set), in order.
                pub fn shown(
                    &self,
                ) -> ::std::vec::Vec<(&'static str, ::std::option::Option<::std::string::String>)>
                {
                    ::std::vec![
                        $(
                            (
                                stringify!($field),
                                $crate::ops::settings::Setting::show(&self.$field),
                            ),
                        )*
                    ]
                }
            }
        )*

        /// The settings file of `run` and `config check`. Every key is optional; unknown
        /// keys are refused, so that a misspelt setting is an error rather than silently
        /// ignored. A value to parse (a duration, a name) stays text until it is used.
        #[derive(Debug, Clone, Default, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct FileSettings {
            $($(
                pub $field: ::std::option::Option<
                    <$ty as $crate::ops::settings::Setting>::File,
                >,
            )*)*
            pub kafka: ::std::collections::BTreeMap<
                ::std::string::String,
                $crate::ops::settings::PropertyValue,
            >,
            /// Options of the object store `--out` names (`s3://...`), passed to it as
            /// they are: endpoint, region, credentials (README "Object storage").
            pub object_store: ::std::collections::BTreeMap<
                ::std::string::String,
                ::std::string::String,
            >,
        }
    };
}
