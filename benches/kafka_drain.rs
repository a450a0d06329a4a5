//! Draining a Kafka topic: the job as a backfill (`--until end --close-at-end`, checkpoints
//! on, files written) against a bare rdkafka consumer that only counts messages, in the
//! same run, the bare consumer's figure taken from its second pass (the first warms the
//! broker's page cache). Needs a broker: start one with `scripts/kafka start`, then
//!
//! `BENCH_BROKERS=127.0.0.1:19092 cargo bench --bench kafka_drain` (BENCH_COUNT, default
//! 2,000,000 invoices, produced into topic `bench-drain-<count>` if it is not there yet).
//! Without BENCH_BROKERS it says so and does nothing.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use retail_kpi::generate::produce::{produce, ProduceConfig};
use retail_kpi::generate::{GenConfig, Generator};
use retail_kpi::job::{self, JobConfig};
use retail_kpi::ops::process::ProcessStats;
use retail_kpi::source::kafka::{KafkaConfig, KafkaSource};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let Ok(brokers) = std::env::var("BENCH_BROKERS") else {
        eprintln!("kafka_drain: set BENCH_BROKERS=HOST:PORT (scripts/kafka start) to run it");
        return;
    };
    let count: u64 = std::env::var("BENCH_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let topic = format!("bench-drain-{count}");
    let consumer = bare_consumer(&brokers);
    let have: i64 = consumer
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .ok()
        .and_then(|md| {
            md.topics().first().map(|t| {
                t.partitions()
                    .iter()
                    .map(|p| {
                        consumer
                            .fetch_watermarks(&topic, p.id(), Duration::from_secs(10))
                            .map_or(0, |(l, h)| h - l)
                    })
                    .sum()
            })
        })
        .unwrap_or(0);
    if have < count as i64 {
        eprintln!("producing {count} invoices into {topic}...");
        let cfg = ProduceConfig {
            brokers: brokers.clone(),
            topic: topic.clone(),
            partitions: 4,
            replication: 1,
            rate: None,
            properties: vec![],
        };
        let gen = Generator::new(GenConfig {
            count,
            seed: 11,
            rate_per_minute: 600.0,
            late_fraction: 0.01,
            bad_fraction: 0.01,
            broker_timestamps: true,
            ..GenConfig::default()
        });
        produce(&cfg, gen, Arc::new(AtomicBool::new(false))).unwrap();
    }

    drop(consumer);

    // The first pass after a broker starts reads the log from disk, the later ones from
    // the page cache: a ratio to a cold bare pass flatters the job. So one bare pass warms
    // the cache (its figure printed, not used) and the second is the one compared.
    let (cold, _, _, _) = bare_pass(&brokers, &topic);
    let (bare, bytes, total, bare_cpu) = bare_pass(&brokers, &topic);
    println!(
        "bare rdkafka consumer, warm-up pass  {:>10.0} records/s (not compared)",
        total as f64 / cold
    );
    let rate = |secs: f64| total as f64 / secs;
    println!("bare rdkafka consumer (count only)   {:>10.0} records/s {:>7.1} MB/s ({total} records, {bare:.2} s)", rate(bare), bytes as f64 / bare / 1e6);
    println!("  {bare_cpu}");
    // Decoding on the loop's thread, then on a pool of 2 (`--threads`, issue 11).
    for threads in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = JobConfig::new(dir.path().join("out"), dir.path().join("state"));
        cfg.close_at_end = true;
        cfg.threads = threads;
        let mut k = KafkaConfig::new(&brokers, &topic);
        k.until_end = true;
        let mut src = KafkaSource::connect(k).unwrap();
        let cpu = Cpu::now();
        let t = Instant::now();
        let s = job::run(&cfg, &mut src, Arc::new(AtomicBool::new(false))).unwrap();
        let jobt = t.elapsed().as_secs_f64();
        let job_cpu = cpu.since(jobt);
        assert_eq!(s.records as i64, total);
        println!(
            "retail-kpi backfill, {threads} decode thread(s) ({} files) {:>10.0} records/s {:>7.1} MB/s ({jobt:.2} s); job / bare = {:.2}",
            s.files_written,
            rate(jobt),
            bytes as f64 / jobt / 1e6,
            bare / jobt
        );
        println!("  {job_cpu}");
    }
}

/// Where the CPU went during a pass: the whole machine's busy time (this process, the
/// broker on the same cores and anything else) from /proc/stat, and this process's own
/// (all its threads, librdkafka's included) as its `process_cpu_seconds` metric reads it. A pass that keeps every core
/// busy cannot be matched by one that must do more work on the same cores.
struct Cpu {
    /// Busy and total jiffies of all cores; `None` without /proc/stat.
    machine: Option<(u64, u64)>,
    process: f64,
}

impl Cpu {
    fn now() -> Cpu {
        let machine = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            let v: Vec<u64> = s
                .lines()
                .next()?
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal ...
            let idle = v.get(3)? + v.get(4)?;
            let total: u64 = v.iter().take(8).sum();
            Some((total - idle, total))
        });
        Cpu {
            machine,
            process: ProcessStats::read().map_or(0.0, |s| s.cpu_seconds),
        }
    }

    /// What was used since `self`, over a pass of `wall` seconds, as a line to print.
    fn since(&self, wall: f64) -> String {
        let now = Cpu::now();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let proc_s = now.process - self.process;
        let machine = match (self.machine, now.machine) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => format!(
                "machine {:.2} of {cores} cores busy",
                (b1 - b0) as f64 / (t1 - t0) as f64 * cores as f64
            ),
            _ => "machine: /proc/stat not readable".into(),
        };
        format!(
            "CPU: {machine}; this process {proc_s:.2} s ({:.2} cores)",
            proc_s / wall
        )
    }
}

/// The bare consumer: large fetches, nothing committed, nothing else.
fn bare_consumer(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-bare")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "4194304")
        .set("queued.min.messages", "200000")
        .create()
        .unwrap()
}

/// One pass of a bare consumer that counts every message from the beginning to the end
/// offsets: its seconds, the payload bytes, the record count and where the CPU went.
fn bare_pass(brokers: &str, topic: &str) -> (f64, u64, i64, String) {
    let consumer = bare_consumer(brokers);
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0i64;
    let mut bytes = 0u64;
    for p in md.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap();
        remaining += high - low;
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    let total = remaining;
    consumer.assign(&tpl).unwrap();
    let cpu = Cpu::now();
    let t = Instant::now();
    while remaining > 0 {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            bytes += m.payload().map_or(0, |p| p.len() as u64);
            remaining -= 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    (secs, bytes, total, cpu.since(secs))
}
