//! Several processes over one topic (issue 14): what one aggregate process reads per second,
//! the partials bytes it writes per input byte, the merge's CPU per million input records,
//! and one against two aggregate processes, all in one run on the same topic. Needs a
//! broker: start one with `scripts/kafka start`, then
//!
//! `BENCH_BROKERS=127.0.0.1:19092 cargo bench --bench distributed` (BENCH_COUNT, default
//! 1,000,000 invoices, produced into topic `bench-dist-<count>` if it is not there yet).
//! Without BENCH_BROKERS it says so and does nothing.
//!
//! The aggregate processes run as threads of this process (two consumers in one group, two
//! transactional producers), the merge on the main thread after them; CPU is this
//! process's user + system time over each step (librdkafka's threads included).

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use retail_kpi::aggregate::EngineConfig;
use retail_kpi::decode::invoice::Limits;
use retail_kpi::distributed::aggregate::{self, AggregateConfig};
use retail_kpi::distributed::merge::{self, MergeConfig};
use retail_kpi::distributed::ClusterConfig;
use retail_kpi::generate::produce::{produce, ProduceConfig};
use retail_kpi::generate::{GenConfig, Generator};
use retail_kpi::job::JobConfig;
use retail_kpi::sink::local::FileSink;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Records and payload bytes of every partition of `topic`, read to the end.
fn payload_bytes(brokers: &str, topic: &str) -> (u64, u64) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-dist-count")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts = md.topics()[0].partitions().len();
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let (mut n, mut bytes, mut eof) = (0u64, 0u64, 0usize);
    while eof < parts {
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                n += 1;
                bytes += m.payload().map_or(0, |p| p.len() as u64);
            }
            Some(Err(KafkaError::PartitionEOF(_))) => eof += 1,
            _ => {}
        }
    }
    (n, bytes)
}

fn cluster(brokers: &str, partials: &str) -> ClusterConfig {
    ClusterConfig {
        brokers: brokers.into(),
        partials_topic: partials.into(),
        progress_topic: ClusterConfig::progress_topic_for(partials),
        replication_factor: 1,
        min_insync_replicas: 1,
        properties: vec![],
        timeout: Duration::from_secs(30),
    }
}

/// `n` aggregate processes (threads) to the end of the topic; wall and CPU seconds.
fn aggregates(brokers: &str, topic: &str, partials: &str, n: usize) -> (f64, f64) {
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let cfg = AggregateConfig {
                cluster: cluster(brokers, partials),
                topic: topic.into(),
                group_id: format!("{partials}-group"),
                transactional_id: format!("{partials}-{i}"),
                engine: EngineConfig::default(),
                limits: Limits::default(),
                checkpoint_interval: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(60),
                until_end: true,
            };
            std::thread::spawn(move || {
                aggregate::run(&cfg, Arc::new(AtomicBool::new(false))).unwrap()
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    (t.elapsed().as_secs_f64(), cpu_seconds() - cpu)
}

fn main() {
    let Ok(brokers) = std::env::var("BENCH_BROKERS") else {
        eprintln!("distributed: set BENCH_BROKERS=HOST:PORT (scripts/kafka start) to run it");
        return;
    };
    let count: u64 = std::env::var("BENCH_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let topic = format!("bench-dist-{count}");
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let have = probe
        .fetch_watermarks(&topic, 0, Duration::from_secs(5))
        .map_or(0, |(_, h)| h);
    if have == 0 {
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
            seed: 14,
            rate_per_minute: 600.0,
            late_fraction: 0.01,
            bad_fraction: 0.01,
            broker_timestamps: true,
            ..GenConfig::default()
        });
        produce(&cfg, gen, Arc::new(AtomicBool::new(false))).unwrap();
    }
    let (records, input_bytes) = payload_bytes(&brokers, &topic);
    let stamp = chrono::Utc::now().timestamp_millis();

    let mut merge_figures = None;
    for n in [1usize, 2] {
        let partials = format!("bench-partials-{stamp}-{n}");
        let (wall, cpu) = aggregates(&brokers, &topic, &partials, n);
        let (partial_records, partial_bytes) = payload_bytes(&brokers, &partials);
        println!(
            "{n} aggregate process(es): {:>9.0} records/s ({records} records, {wall:.2} s wall, {cpu:.2} s CPU); partials: {partial_records} records, {partial_bytes} bytes = {:.4} bytes per input byte",
            records as f64 / wall,
            partial_bytes as f64 / input_bytes as f64
        );
        if n == 1 {
            let dir = tempfile::tempdir().unwrap();
            let mut job = JobConfig::new(dir.path().join("out"), dir.path().join("state"));
            job.close_at_end = true;
            let cfg = MergeConfig {
                cluster: cluster(&brokers, &partials),
                job,
                idle_timeout: Duration::from_secs(60),
                until_end: true,
            };
            let mut sink = FileSink::new(&cfg.job.out).unwrap();
            let (t, cpu) = (Instant::now(), cpu_seconds());
            let s = merge::run(&cfg, &mut sink, Arc::new(AtomicBool::new(false))).unwrap();
            let (wall, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu);
            assert_eq!(
                s.records, records,
                "the merge counted another number of records"
            );
            merge_figures = Some((wall, cpu, s.files_written));
        }
    }
    let (wall, cpu, files) = merge_figures.unwrap();
    let per_million = cpu / (records as f64 / 1e6);
    println!(
        "merge: {wall:.2} s wall, {cpu:.2} s CPU for {records} input records ({files} files) = {per_million:.3} CPU s per million input records"
    );
}
