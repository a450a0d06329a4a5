//! `retail-kpi run`: builds the source, the metrics server and the job from the settings,
//! and runs it until it ends or is stopped.

use super::*;

pub fn run_job(s: Settings) -> anyhow::Result<()> {
    if s.file_exposes_secrets {
        tracing::warn!(
            "the settings file holds secrets and others than its owner may read it: chmod 600 it"
        );
    }
    let mut cfg = JobConfig::new(s.out.clone(), s.state.clone());
    cfg.engine = EngineConfig {
        grace: s.grace.as_nanos() as i128,
        max_future_skew: s.max_future_skew.as_nanos() as i128,
        limits: Limits {
            max_record_bytes: s.max_record_bytes,
            max_items: s.max_items,
        },
        max_countries: s.max_countries,
    };
    cfg.checkpoint_interval = s.checkpoint_interval;
    cfg.print_invoices = s.print_invoices;
    cfg.metrics = serve_metrics(&s)?;
    let mut source: Box<dyn retail_kpi::source::Source + Send> = match (&s.input, &s.brokers) {
        (Some(input), _) => {
            let mut f = FileSource::open(input)?;
            f.set_record_limit(s.max_record_bytes);
            Box::new(f)
        }
        (None, Some(brokers)) => {
            let topic = s
                .topic
                .clone()
                .expect("resolve requires a topic with brokers");
            let mut k = retail_kpi::source::kafka::KafkaConfig::new(brokers, &topic);
            k.until_end = s.until_end;
            k.start = s.start;
            k.idle_timeout = s.idle_timeout;
            k.connect_timeout = s.connect_timeout;
            k.on_data_loss = s.on_data_loss;
            k.properties = s.kafka.clone().into_iter().collect();
            if let Some(g) = &s.group_id {
                k.group_id = g.clone();
            }
            cfg.close_at_end = s.close_at_end;
            Box::new(retail_kpi::source::kafka::KafkaSource::connect(k).map_err(SourceFailure)?)
        }
        (None, None) => unreachable!("resolve requires an input or brokers"),
    };
    let stop = stop_flag()?;
    let started = std::time::Instant::now();
    let sum = job::run(&cfg, source.as_mut(), stop)?;
    close_within(source, CLOSE_WAIT);
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        records = sum.records,
        accepted = sum.accepted,
        rejected = sum.rejected,
        checkpoints = sum.checkpoints,
        files = sum.files_written,
        seconds = format!("{secs:.3}"),
        ended = sum.ended,
        out = %cfg.out.display(),
        "run finished"
    );
    Ok(())
}

/// How long a stopping job waits for its source to close.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Closes the source (a Kafka client leaves its brokers) on a thread of its own and waits
/// at most `limit`: after a broker was paused, librdkafka's destroy waited for requests
/// that only time out after a minute, and held a stopped job for as long. Everything read
/// is checkpointed by now, so the process may exit without it.
pub fn close_within(source: Box<dyn retail_kpi::source::Source + Send>, limit: Duration) {
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(source);
        let _ = done.send(());
    });
    if wait.recv_timeout(limit).is_err() {
        tracing::warn!(
            "the source did not close within {limit:?}; exiting without waiting for it (everything read is checkpointed)"
        );
    }
}

/// Starts the metrics server. The default address may be taken (another job on the same
/// host): then the job runs without metrics and says so; an address the operator chose
/// must work.
pub fn serve_metrics(s: &Settings) -> anyhow::Result<Option<Arc<Metrics>>> {
    let Some(addr) = s.metrics_addr else {
        return Ok(None);
    };
    let m = Arc::new(Metrics::new(s.ready_max_lag));
    match retail_kpi::ops::metrics::serve(addr, Arc::clone(&m)) {
        Ok(bound) => {
            tracing::info!("metrics on http://{bound}/metrics, health on /healthz and /readyz");
            Ok(Some(m))
        }
        Err(e) if e.is_addr_in_use() && s.origins.get("metrics_addr") == Some(&Origin::Default) => {
            tracing::warn!("{e}; running without metrics");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
