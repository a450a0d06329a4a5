//! `retail-kpi generate` and `produce`: the test-data tools.

use super::*;
use retail_kpi::generate::{parse_start, GenConfig, Generator};

#[derive(Args, Debug, Clone)]
pub struct GenArgs {
    /// Number of records to write.
    #[arg(long)]
    pub count: u64,
    /// Seed: the same seed gives the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Event time of the first invoice, UTC.
    #[arg(long, default_value = "2020-09-18 10:00:00")]
    pub start: String,
    /// Fraction of invoices later than the grace.
    #[arg(long, default_value_t = 0.0)]
    pub late_fraction: f64,
    /// Fraction of malformed records.
    #[arg(long, default_value_t = 0.0)]
    pub bad_fraction: f64,
    /// Each country's invoices follow its local time of day (few at night, peaks in the
    /// late morning and the evening), the mean over a day staying the given rate; without
    /// it the rate is flat, and the bytes are those of earlier versions.
    #[arg(long)]
    pub daily_cycle: bool,
}

impl GenArgs {
    pub fn config(
        &self,
        rate_per_minute: f64,
        broker_timestamps: bool,
    ) -> anyhow::Result<GenConfig> {
        for (name, f) in [
            ("--late-fraction", self.late_fraction),
            ("--bad-fraction", self.bad_fraction),
        ] {
            anyhow::ensure!(
                (0.0..=1.0).contains(&f),
                "{name} must be between 0 and 1, not {f}"
            );
        }
        anyhow::ensure!(
            rate_per_minute > 0.0 && rate_per_minute.is_finite(),
            "the event rate must be a positive number, not {rate_per_minute}"
        );
        let cfg = GenConfig {
            count: self.count,
            seed: self.seed,
            start_ms: parse_start(&self.start)
                .with_context(|| format!("--start {:?}", self.start))?,
            rate_per_minute,
            late_fraction: self.late_fraction,
            bad_fraction: self.bad_fraction,
            broker_timestamps,
            daily_cycle: self.daily_cycle,
            ..GenConfig::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[arg(long, env = "RETAIL_KPI_BROKERS")]
    pub brokers: String,
    #[arg(long, env = "RETAIL_KPI_TOPIC")]
    pub topic: String,
    /// Partitions of the topic, if it has to be created.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Replication factor, if the topic has to be created.
    #[arg(long, default_value_t = 1)]
    pub replication: u32,
    /// Records sent per second (default: as fast as possible). With --daily-cycle, the
    /// mean over a day: the sends follow the records' event time, which runs
    /// 60 × rate / event-rate times as fast as the wall clock (`--rate R/60 --event-rate R`:
    /// in step with it), so the records a second rise and fall with the cycle.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Mean invoices per minute of event time.
    #[arg(long, default_value_t = 10.0)]
    pub event_rate: f64,
    #[command(flatten)]
    pub generator: GenArgs,
    /// librdkafka property passed through (repeatable).
    #[arg(short = 'X', value_parser = kv)]
    pub kafka_property: Vec<(String, String)>,
}

/// `generate`: the invoices on standard output.
pub fn generate(g: GenArgs, rate: f64) -> anyhow::Result<()> {
    let cfg = g
        .config(rate, false)
        .map_err(|e| ConfigError(format!("{e:#}")))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    for rec in Generator::new(cfg) {
        out.write_all(&rec.value)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// `produce`: the invoices sent to a topic.
pub fn produce(p: ProduceArgs) -> anyhow::Result<()> {
    let gen = p
        .generator
        .config(p.event_rate, true)
        .map_err(|e| ConfigError(format!("{e:#}")))?;
    if let Some(rate) = p.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(
                ConfigError(format!("--rate must be a positive number, not {rate}")).into(),
            );
        }
    }
    // With the daily cycle the records a second follow the cycle: the sends keep event
    // time in step with the wall clock (at --rate × 60 / --event-rate) instead of sending
    // a fixed number a second, which would let event time run ahead at night and fall
    // behind in the day.
    let speed = p
        .rate
        .filter(|_| gen.daily_cycle)
        .map(|rate| 60.0 * rate / p.event_rate);
    let cfg = retail_kpi::generate::produce::ProduceConfig {
        brokers: p.brokers,
        topic: p.topic,
        partitions: p.partitions,
        replication: p.replication,
        rate: p.rate,
        properties: p.kafka_property,
    };
    let started = std::time::Instant::now();
    let n = match speed {
        Some(speed) => retail_kpi::generate::produce::produce_in_event_time(
            &cfg,
            Generator::new(gen),
            stop_flag()?,
            speed,
        ),
        None => retail_kpi::generate::produce::produce(&cfg, Generator::new(gen), stop_flag()?),
    }
    .map_err(SourceFailure)?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(records = n, topic = %cfg.topic, seconds = format!("{secs:.3}"), "produced");
    Ok(())
}
