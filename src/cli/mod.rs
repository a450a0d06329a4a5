//! The command line: flags, then `RETAIL_KPI_*` environment, then the settings file, then
//! defaults, into settings; and errors into exit codes. The binary's edge: the only place
//! that uses `anyhow`.

use anyhow::Context;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use retail_kpi::aggregate::EngineConfig;
use retail_kpi::decode::invoice::Limits;
use retail_kpi::job::{self, JobConfig, JobError};
use retail_kpi::ops::metrics::{Metrics, MetricsError};
use retail_kpi::ops::settings::{
    self as settings_file, FileSettings, LoggingFlags, Redactor, SettingsError,
};
use retail_kpi::sink::object::StoreError;
use retail_kpi::sink::SinkError;
use retail_kpi::source::file::FileSource;
use retail_kpi::source::SourceMismatch;
use retail_kpi::state::{StateError, Store};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

mod logging;
mod progress;
mod run;
mod settings;
mod state;
mod tools;

use logging::*;
use run::*;
use settings::*;
use state::*;
use tools::*;

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
    // `--log-format`, global: declared with the logging settings.
    #[command(flatten)]
    logging: LoggingFlags,
    #[command(subcommand)]
    command: Command,
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
        ) => match Settings::resolve(r, &cli.logging, m) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(exit::CONFIG);
            }
        },
        _ => None,
    };
    let redactor = match (&settings, &cli.command) {
        (Some(s), _) => Redactor::new(
            s.kafka.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(
                s.object_store
                    .iter()
                    .map(|(k, (v, _))| (k.as_str(), v.as_str())),
            ),
        ),
        (None, Command::Produce(p)) => Redactor::new(
            p.kafka_property
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        ),
        _ => Redactor::default(),
    };
    let _ = REDACTOR.set(redactor);
    // With the settings, the flag has been merged with the settings file's value.
    let format = settings
        .as_ref()
        .map_or(cli.logging.log_format, |s| s.logging.log_format)
        .unwrap_or(LogFormat::Human);
    init_logs(format);
    let code = match dispatch(cli.command, settings) {
        Ok(()) => exit::OK,
        Err(e) => {
            let code = exit_code(&e);
            let text = redact(&format!("{e:#}"));
            tracing::error!("{text}");
            eprintln!("error: {text}");
            code
        }
    };
    if run::source_left_open() {
        // A thread is still inside librdkafka, closing the source. A normal exit runs the
        // libraries' exit handlers and destructors under it, which can crash the process
        // (librdkafka issue 72: a crash in `_dl_fini` while its threads ran; seen once
        // here as a SIGSEGV after SIGTERM, following a broker restart). Everything is
        // committed and synced by now, and standard error is unbuffered: flush standard
        // output and end the process without them.
        let _ = std::io::stdout().flush();
        // SAFETY: `_exit` ends the process at once; nothing runs after it.
        unsafe { libc::_exit(i32::from(code)) }
    }
    ExitCode::from(code)
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

/// The error chain decides the exit code: the first typed error found wins.
fn exit_code(e: &anyhow::Error) -> u8 {
    fn job_code(j: &JobError) -> u8 {
        match j {
            JobError::State(_) => exit::STATE,
            JobError::Sink(_) => exit::OUTPUT,
            JobError::Source(e) if e.downcast_ref::<SourceMismatch>().is_some() => exit::CONFIG,
            JobError::Source(_) => exit::SOURCE,
            // README: a failed standard output is a plain failure, not the output folder.
            JobError::Stdout(_) => exit::FAILURE,
            JobError::SettingsChanged { .. } => exit::CONFIG,
            JobError::Threads(_) => exit::FAILURE,
        }
    }
    for cause in e.chain() {
        if let Some(j) = cause.downcast_ref::<JobError>() {
            return job_code(j);
        }
        if let Some(d) = cause.downcast_ref::<retail_kpi::distributed::DistributedError>() {
            use retail_kpi::distributed::DistributedError as D;
            return match d {
                D::Job(j) => job_code(j),
                // Other settings between the processes, or topics the cluster cannot hold.
                D::Settings(_) | D::Setup(_) => exit::CONFIG,
                // The brokers, our own data in Kafka, lost input, or a fenced process.
                D::Kafka { .. }
                | D::Fenced(_)
                | D::Partials { .. }
                | D::Inconsistent(_)
                | D::Unavailable(_)
                | D::DataLoss { .. } => exit::SOURCE,
            };
        }
        if let Some(e) = cause.downcast_ref::<SinkError>() {
            return match e {
                SinkError::Store(StoreError::Option { .. }) => exit::CONFIG,
                _ => exit::OUTPUT,
            };
        }
        if cause.downcast_ref::<StateError>().is_some() {
            return exit::STATE;
        }
        if cause.downcast_ref::<ConfigError>().is_some() {
            return exit::CONFIG;
        }
        if cause
            .downcast_ref::<retail_kpi::source::file::FileSourceError>()
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
                retail_kpi::source::kafka::KafkaSourceError::Config(_) => exit::CONFIG,
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
struct SourceFailure(#[from] retail_kpi::source::kafka::KafkaSourceError);

fn dispatch(cmd: Command, settings: Option<Settings>) -> anyhow::Result<()> {
    match cmd {
        Command::Generate { generator: g, rate } => generate(g, rate),
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
        Command::Produce(p) => produce(p),
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
