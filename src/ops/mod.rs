//! What runs beside the flow: the HTTP address (metrics and health, the live page, the KPI
//! API), the process metrics, and the settings file with its masking of secrets.

pub mod advise;
pub mod api;
pub mod http;
pub mod live;
pub mod metrics;
pub mod process;
pub mod settings;
