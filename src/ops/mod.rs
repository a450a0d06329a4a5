//! What runs beside the flow: the Prometheus metrics and health endpoints, and the
//! settings file with its masking of secrets.

pub mod metrics;
pub mod settings;
