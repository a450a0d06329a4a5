//! Prometheus metrics and the health endpoints, served over HTTP on their own thread.
//!
//! The job publishes here once per batch (and once per checkpoint and per written batch of
//! files), never per record: the per-record numbers are the engine's own counters and its
//! lateness buckets, copied over between batches. A scrape only reads atomics and one small
//! mutex, so it never slows the job down.
//!
//! `/metrics` (OpenMetrics text), `/healthz` (200 while the process runs), `/readyz` (200
//! once partitions are assigned and the lag is at most the threshold; 503 with the reason
//! otherwise), served by [`crate::ops::http`]. README "Operations" lists every metric.

use crate::aggregate::{Counters, Lateness, LATENESS_BOUNDS_SECS};
use crate::event_time::{EventTime, NANOS_PER_SEC};
use crate::record::Reason;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "cannot listen for metrics on {addr}: {source}; choose another --metrics-addr (or `off`)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the metrics HTTP server on {addr}: {message}")]
    Server { addr: SocketAddr, message: String },
}

impl MetricsError {
    /// The address is taken by another process (another job, or another service).
    pub fn is_addr_in_use(&self) -> bool {
        matches!(self, MetricsError::Bind { source, .. }
            if source.kind() == std::io::ErrorKind::AddrInUse)
    }
}

type Label = [(&'static str, String); 1];
type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric of the job, and its readiness.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    records_read: Counter,
    records_accepted: Counter,
    records_rejected: Family<Label, Counter>,
    lateness: Arc<Mutex<Lateness>>,
    watermark: FloatGauge,
    watermark_lag: FloatGauge,
    partitions: Gauge,
    consumer_lag: Family<Label, Gauge>,
    /// Records left over every partition, for the live page; `None` for a source that
    /// does not know its lag (a file) or before the first end offsets are known.
    lag_sum: Mutex<Option<u64>>,
    checkpoints: Counter,
    last_checkpoint_time: FloatGauge,
    ready_gauge: Gauge,
    checkpoint_seconds: Histogram,
    checkpoint_bytes: Histogram,
    open_windows: Gauge,
    files_written: Counter,
    last_file_time: FloatGauge,
    data_loss_gaps: Counter,
    ready_max_lag: u64,
    ready: AtomicBool,
    /// Why the job is not ready, as `/readyz` answers; `None` when ready.
    not_ready: Mutex<Option<String>>,
}

/// The lateness histogram, encoded from the engine's fixed buckets (copied each batch).
#[derive(Debug)]
struct LatenessHistogram(Arc<Mutex<Lateness>>);

impl EncodeMetric for LatenessHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let l = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (outcome, i) in [
            ("accepted", Lateness::ACCEPTED),
            ("rejected", Lateness::REJECTED),
        ] {
            let buckets: Vec<(f64, u64)> = LATENESS_BOUNDS_SECS
                .iter()
                .map(|&b| b as f64)
                .chain([f64::INFINITY])
                .zip(l.buckets[i])
                .collect();
            encoder
                .encode_family(&[("outcome", outcome)])?
                .encode_histogram::<NoLabelSet>(
                    l.sum_nanos[i] as f64 / NANOS_PER_SEC as f64,
                    l.count(i),
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn float_gauge(v: f64) -> FloatGauge {
    let g = FloatGauge::default();
    g.set(v);
    g
}

impl Metrics {
    /// `ready_max_lag`: the most records a Kafka job may have left to read and be ready.
    pub fn new(ready_max_lag: u64) -> Metrics {
        let m = Metrics {
            records_read: Counter::default(),
            records_accepted: Counter::default(),
            records_rejected: Family::default(),
            lateness: Arc::default(),
            watermark: float_gauge(f64::NAN),
            watermark_lag: float_gauge(f64::NAN),
            partitions: Gauge::default(),
            consumer_lag: Family::default(),
            lag_sum: Mutex::new(None),
            checkpoints: Counter::default(),
            last_checkpoint_time: float_gauge(f64::NAN),
            ready_gauge: Gauge::default(),
            // 1 ms .. ~16 s: a synced RocksDB batch, up to a large backfill's.
            checkpoint_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15),
            ),
            // 256 B .. 256 MiB.
            checkpoint_bytes: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(256.0, 4.0, 11),
            ),
            open_windows: Gauge::default(),
            files_written: Counter::default(),
            last_file_time: float_gauge(f64::NAN),
            data_loss_gaps: Counter::default(),
            ready_max_lag,
            ready: AtomicBool::new(false),
            not_ready: Mutex::new(Some("starting: the state store is being opened".into())),
            registry: Registry::default(),
        };
        // The process metrics carry no prefix (they are named alike in every service);
        // the job's own metrics are `retail_kpi_*`.
        let mut root = Registry::default();
        root.register_collector(Box::new(crate::ops::process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("retail_kpi");
        registry.register(
            "build",
            "The build of the running job (always 1)",
            prometheus_client::metrics::info::Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
                (
                    "target",
                    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
                ),
            ]),
        );
        registry.register(
            "ready",
            "1 while /readyz answers ready, else 0",
            m.ready_gauge.clone(),
        );
        registry.register(
            "last_checkpoint_timestamp_seconds",
            "When the last checkpoint was committed (Unix seconds); NaN before the first",
            m.last_checkpoint_time.clone(),
        );
        registry.register(
            "records_read",
            "Records read from the source (every record: accepted, rejected or not)",
            m.records_read.clone(),
        );
        registry.register(
            "records_accepted",
            "Invoices accepted into a window",
            m.records_accepted.clone(),
        );
        registry.register(
            "records_rejected",
            "Records sent to the rejected sink, by reason code",
            m.records_rejected.clone(),
        );
        // Every reason shows from the start, so that a rate() over a reason never sees a
        // series appear mid-way.
        for r in Reason::ALL {
            let _ = m
                .records_rejected
                .get_or_create(&[("reason", r.code().into())]);
        }
        registry.register(
            "invoice_lateness_seconds",
            "How far each invoice arrived behind the newest invoice of its partition (M_p), by outcome (accepted, or rejected on time grounds); choose the grace from it",
            LatenessHistogram(Arc::clone(&m.lateness)),
        );
        registry.register(
            "watermark_timestamp_seconds",
            "The event-time watermark W (Unix seconds); NaN while no partition has an invoice",
            m.watermark.clone(),
        );
        registry.register(
            "watermark_lag_seconds",
            "Wall clock minus the watermark",
            m.watermark_lag.clone(),
        );
        registry.register(
            "partitions_assigned",
            "Source partitions the watermark waits for",
            m.partitions.clone(),
        );
        registry.register(
            "consumer_lag_records",
            "Records left to read per Kafka partition (end offset minus next offset)",
            m.consumer_lag.clone(),
        );
        registry.register(
            "checkpoints",
            "Checkpoints committed to the state store",
            m.checkpoints.clone(),
        );
        registry.register(
            "checkpoint_duration_seconds",
            "Time to commit one checkpoint (one synced RocksDB write batch)",
            m.checkpoint_seconds.clone(),
        );
        registry.register(
            "checkpoint_size_bytes",
            "Size of one checkpoint's write batch",
            m.checkpoint_bytes.clone(),
        );
        registry.register(
            "open_windows",
            "One-minute windows open (not closed by the watermark yet)",
            m.open_windows.clone(),
        );
        registry.register(
            "files_written",
            "KPI files written (time_kpi and country_kpi)",
            m.files_written.clone(),
        );
        registry.register(
            "last_file_written_timestamp_seconds",
            "When the last KPI file was written (Unix seconds); NaN before the first",
            m.last_file_time.clone(),
        );
        registry.register(
            "data_loss_gaps",
            "Gaps of records lost from the brokers before the job read them, each written to <out>/gaps/ (--on-data-loss continue)",
            m.data_loss_gaps.clone(),
        );
        Metrics {
            registry: root,
            ..m
        }
    }

    /// A gap of lost records was written to `<out>/gaps/`.
    pub fn observe_gap(&self) {
        self.data_loss_gaps.inc();
    }

    /// Copies the engine's counts since this run started (`now` minus `start`) and its
    /// lateness buckets.
    pub fn observe_counters(&self, now: &Counters, start: &Counters, lateness: &Lateness) {
        fn catch_up(c: &Counter, total: u64) {
            let d = total.saturating_sub(c.get());
            if d > 0 {
                c.inc_by(d);
            }
        }
        catch_up(&self.records_read, now.read - start.read);
        catch_up(&self.records_accepted, now.accepted - start.accepted);
        for r in Reason::ALL {
            let i = r.index();
            catch_up(
                &self
                    .records_rejected
                    .get_or_create(&[("reason", r.code().into())]),
                now.rejected[i] - start.rejected[i],
            );
        }
        let mut l = self.lateness.lock().unwrap_or_else(|p| p.into_inner());
        if *l != *lateness {
            l.clone_from(lateness);
        }
    }

    /// The watermark (`None` is −∞) and the open windows, after the batch advanced them.
    pub fn observe_windows(&self, watermark: Option<EventTime>, now_ms: i64, open_windows: usize) {
        match watermark {
            Some(w) => {
                let secs = w as f64 / NANOS_PER_SEC as f64;
                self.watermark.set(secs);
                self.watermark_lag.set(now_ms as f64 / 1000.0 - secs);
            }
            None => {
                self.watermark.set(f64::NAN);
                self.watermark_lag.set(f64::NAN);
            }
        }
        self.open_windows.set(open_windows as i64);
    }

    /// The source's partitions and lag; decides readiness (logged once per change).
    pub fn observe_source(&self, partitions: &[u32], lag: Option<&BTreeMap<u32, u64>>) {
        self.partitions.set(partitions.len() as i64);
        if let Some(lag) = lag {
            for (p, l) in lag {
                self.consumer_lag
                    .get_or_create(&[("partition", p.to_string())])
                    .set(*l as i64);
            }
            *self.lag_sum.lock().unwrap_or_else(|p| p.into_inner()) = Some(lag.values().sum());
        }
        self.set_ready(readiness(partitions, lag, self.ready_max_lag).err());
    }

    pub fn observe_checkpoint(&self, took: Duration, bytes: usize) {
        self.checkpoints.inc();
        self.last_checkpoint_time.set(wall_seconds());
        self.checkpoint_seconds.observe(took.as_secs_f64());
        self.checkpoint_bytes.observe(bytes as f64);
    }

    /// `n` new KPI files were written at `now_ms`.
    pub fn observe_files(&self, n: u64, now_ms: i64) {
        if n > 0 {
            self.files_written.inc_by(n);
            self.last_file_time.set(now_ms as f64 / 1000.0);
        }
    }

    /// A stop was requested: no longer ready, so that traffic and alerts move on.
    pub fn stopping(&self) {
        self.set_ready(Some(
            "stopping: finishing the batch and checkpointing".into(),
        ));
    }

    fn set_ready(&self, not_ready: Option<String>) {
        let mut cur = self.not_ready.lock().unwrap_or_else(|p| p.into_inner());
        if *cur == not_ready {
            return;
        }
        // One line per change of state, whatever the reason's numbers do in between.
        let kind = |s: &Option<String>| {
            s.as_deref()
                .map(|r| r.split(':').next().unwrap_or(r).to_owned())
        };
        if kind(&cur) != kind(&not_ready) {
            match &not_ready {
                None => tracing::info!("ready"),
                Some(why) => tracing::info!("not ready: {why}"),
            }
        }
        self.ready
            .store(not_ready.is_none(), std::sync::atomic::Ordering::Relaxed);
        self.ready_gauge.set(i64::from(not_ready.is_none()));
        *cur = not_ready;
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("writing to a String cannot fail");
        s
    }

    /// The lateness histogram since the process started, and the invoices refused for a
    /// future timestamp among its refused ones.
    pub fn lateness(&self) -> (Lateness, u64) {
        let l = self
            .lateness
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let future = self
            .records_rejected
            .get_or_create(&[("reason", Reason::FutureTimestamp.code().into())])
            .get();
        (l, future)
    }

    /// The job's health as the live page shows it, from the same figures as `/metrics`.
    pub fn health(&self) -> Health {
        let finite = |v: f64| v.is_finite().then_some(v);
        let rejected = Reason::ALL
            .iter()
            .map(|r| {
                let n = self
                    .records_rejected
                    .get_or_create(&[("reason", r.code().into())])
                    .get();
                (r.code(), n)
            })
            .collect();
        let not_ready = self
            .not_ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Health {
            watermark: finite(self.watermark.get()).map(rfc3339),
            // To the millisecond: the page shows the text as given.
            watermark_lag_seconds: finite(self.watermark_lag.get())
                .map(|v| (v * 1000.0).round() / 1000.0),
            consumer_lag_records: *self.lag_sum.lock().unwrap_or_else(|p| p.into_inner()),
            partitions: self.partitions.get(),
            ready: not_ready.is_none(),
            not_ready_reason: not_ready,
            records_read: self.records_read.get(),
            records_accepted: self.records_accepted.get(),
            rejected,
            checkpoints: self.checkpoints.get(),
            last_checkpoint: finite(self.last_checkpoint_time.get()).map(rfc3339),
            files_written: self.files_written.get(),
            last_file: finite(self.last_file_time.get()).map(rfc3339),
        }
    }

    /// `/readyz`'s status and body.
    pub fn readyz(&self) -> (u16, String) {
        match &*self.not_ready.lock().unwrap_or_else(|p| p.into_inner()) {
            None => (200, "ready\n".into()),
            Some(why) => (503, format!("not ready: {why}\n")),
        }
    }
}

/// The job's health for the live page (`/api/v1/live`); times are RFC 3339, UTC.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Health {
    /// The event-time watermark W; `None` while no partition has an invoice.
    pub watermark: Option<String>,
    pub watermark_lag_seconds: Option<f64>,
    /// Records left to read over every partition; `None` for a file, or before the
    /// brokers told the end offsets.
    pub consumer_lag_records: Option<u64>,
    pub partitions: i64,
    pub ready: bool,
    pub not_ready_reason: Option<String>,
    /// Since this process started, like the counters of `/metrics`.
    pub records_read: u64,
    pub records_accepted: u64,
    /// Every reason code, 0 included.
    pub rejected: BTreeMap<&'static str, u64>,
    pub checkpoints: u64,
    pub last_checkpoint: Option<String>,
    pub files_written: u64,
    pub last_file: Option<String>,
}

fn wall_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Unix seconds as RFC 3339 in UTC, to the millisecond.
fn rfc3339(secs: f64) -> String {
    let ms = (secs * 1000.0).round() as i64;
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

/// Ready: partitions assigned, and, for a source that knows its lag, the lag of every
/// partition known and the total at most `max_lag`. `Err` says why not.
pub fn readiness(
    partitions: &[u32],
    lag: Option<&BTreeMap<u32, u64>>,
    max_lag: u64,
) -> Result<(), String> {
    if partitions.is_empty() {
        return Err("no partitions: none assigned yet".into());
    }
    let Some(lag) = lag else { return Ok(()) };
    if let Some(p) = partitions.iter().find(|p| !lag.contains_key(p)) {
        return Err(format!(
            "lag unknown: the end offset of partition {p} is not known yet"
        ));
    }
    let total: u64 = partitions.iter().map(|p| lag[p]).sum();
    if total > max_lag {
        return Err(format!(
            "lagging: {total} records left to read, more than --ready-max-lag {max_lag}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_partitions_and_a_small_known_lag() {
        assert!(readiness(&[], None, 10)
            .unwrap_err()
            .starts_with("no partitions"));
        assert_eq!(readiness(&[0], None, 10), Ok(()));
        let lag = BTreeMap::from([(0, 4), (1, 6)]);
        assert_eq!(readiness(&[0, 1], Some(&lag), 10), Ok(()));
        assert!(readiness(&[0, 1], Some(&lag), 9)
            .unwrap_err()
            .starts_with("lagging: 10 records"));
        assert!(readiness(&[0, 1, 2], Some(&lag), 100)
            .unwrap_err()
            .contains("partition 2"));
    }

    #[test]
    fn renders_counters_lateness_and_gauges() {
        let m = Metrics::new(10);
        let mut now = Counters {
            read: 5,
            accepted: 3,
            ..Counters::default()
        };
        now.rejected[Reason::Late.index()] = 2;
        let mut lateness = Lateness::default();
        lateness.buckets[Lateness::ACCEPTED][0] = 3;
        lateness.buckets[Lateness::REJECTED][LATENESS_BOUNDS_SECS.len()] = 2;
        lateness.sum_nanos[Lateness::REJECTED] = 3 * 86_400 * NANOS_PER_SEC as u128;
        m.observe_counters(&now, &Counters::default(), &lateness);
        // Publishing the same totals again adds nothing.
        m.observe_counters(&now, &Counters::default(), &lateness);
        m.observe_windows(Some(90 * NANOS_PER_SEC), 100_000, 4);
        m.observe_source(&[0], None);
        let text = m.render();
        for line in [
            "retail_kpi_records_read_total 5",
            "retail_kpi_records_accepted_total 3",
            "retail_kpi_records_rejected_total{reason=\"late\"} 2",
            "retail_kpi_records_rejected_total{reason=\"too_large\"} 0",
            "retail_kpi_invoice_lateness_seconds_count{outcome=\"accepted\"} 3",
            "retail_kpi_invoice_lateness_seconds_bucket{le=\"0.0\",outcome=\"accepted\"} 3",
            "retail_kpi_invoice_lateness_seconds_bucket{le=\"86400.0\",outcome=\"rejected\"} 0",
            "retail_kpi_invoice_lateness_seconds_bucket{le=\"+Inf\",outcome=\"rejected\"} 2",
            "retail_kpi_invoice_lateness_seconds_sum{outcome=\"rejected\"} 259200.0",
            "retail_kpi_watermark_timestamp_seconds 90.0",
            "retail_kpi_watermark_lag_seconds 10.0",
            "retail_kpi_open_windows 4",
            "retail_kpi_partitions_assigned 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(m.is_ready());
        m.stopping();
        assert!(!m.is_ready());
        assert_eq!(m.readyz().0, 503);
    }
}
