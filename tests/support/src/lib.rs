//! Test support of retail-kpi, shared by the integration tests (`tests/*.rs`) and the chaos
//! scenarios (`chaos/chaos.rs`, `chaos/distributed.rs`; [`env_or`] reads their settings):
//!
//! - [`harness`]: reading an output folder back;
//! - [`reference`]: the independent reference computation, written from the SPEC alone;
//! - [`cluster`]: Kafka clusters of `scripts/kafka` on ports chosen free at their start,
//!   the job's command line, reading a topic and the job's group offsets back;
//! - [`http`]: a plain GET against the job's HTTP address;
//! - [`process`]: children that die with the test, and waits on a condition;
//! - [`s3`]: local S3-compatible servers of `scripts/s3` (SeaweedFS) on ports chosen free
//!   at their start, for the object-store output.
//!
//! The binary's path is an argument wherever a job is run: Cargo sets
//! `CARGO_BIN_EXE_retail-kpi` only when it compiles the root package's integration tests,
//! not this library, so each test file declares
//! `const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");`.

pub mod cluster;
pub mod harness;
pub mod http;
pub mod process;
pub mod reference;
pub mod s3;

/// A setting of a scenario from the environment variable `name`, else `default`; a value
/// that does not parse fails the run, naming it.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}
