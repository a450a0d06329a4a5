//! Max RSS of the job as a whole process (issue 11, item 5): `run --input -` on 1,000,000
//! and 10,000,000 dense generated invoices fed through a pipe (nothing on disk but the
//! output), and, with a broker, the same counts backfilled from a Kafka topic. The figure
//! is the kernel's `ru_maxrss` of the job's process alone (wait4), not of the generator.
//!
//! `cargo bench --bench memory` (BENCH_COUNTS, default "1000000,10000000";
//! BENCH_BROKERS=HOST:PORT adds the Kafka backfill, producing topic `bench-mem-<count>` with
//! 4 partitions if it is not full yet). Figures only; nothing is asserted.

use std::process::{Command, Stdio};
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");

/// Waits for `pid` and returns (exit status, max RSS in MiB).
fn wait_rss(pid: u32) -> (i32, f64) {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet reaped; both pointers are valid.
    let r = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    assert_eq!(r, pid as i32, "wait4: {}", std::io::Error::last_os_error());
    (status, usage.ru_maxrss as f64 / 1024.0)
}

fn report(what: &str, count: u64, status: i32, rss: f64, secs: f64) {
    println!(
        "{what:<34} {count:>9} invoices  max RSS {rss:>7.1} MiB  {secs:>7.2} s{}",
        if status == 0 { "" } else { "  (FAILED)" }
    );
}

// The job's child is reaped by `wait_rss` (wait4, for its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn file_run(count: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut gen = Command::new(BIN)
        .args(["generate", "--rate", "5000", "--seed", "1", "--count"])
        .arg(count.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let job = Command::new(BIN)
        .args(["run", "--metrics-addr", "off", "--input", "-", "--out"])
        .arg(dir.path().join("out"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .stdin(gen.stdout.take().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (status, rss) = wait_rss(job.id());
    let secs = started.elapsed().as_secs_f64();
    gen.wait().unwrap();
    report("run --input - (dense)", count, status, rss, secs);
}

/// Records the topic holds now (0 when it does not exist).
fn records_in(brokers: &str, topic: &str) -> u64 {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use std::time::Duration;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let Ok(md) = c.fetch_metadata(Some(topic), Duration::from_secs(10)) else {
        return 0;
    };
    md.topics()
        .iter()
        .flat_map(|t| t.partitions())
        .map(|p| {
            c.fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .map_or(0, |(l, h)| (h - l).max(0) as u64)
        })
        .sum()
}

#[allow(clippy::zombie_processes)]
fn kafka_run(brokers: &str, count: u64) {
    let topic = format!("bench-mem-{count}");
    let dir = tempfile::tempdir().unwrap();
    let have = records_in(brokers, &topic);
    if have < count {
        eprintln!("producing {} invoices into {topic}...", count - have);
        let st = Command::new(BIN)
            .args(["produce", "--brokers", brokers, "--topic", &topic])
            .args(["--partitions", "4", "--event-rate", "5000", "--seed", "1"])
            .arg("--count")
            .arg((count - have).to_string())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "produce failed");
    }
    let started = Instant::now();
    let job = Command::new(BIN)
        .args([
            "run",
            "--metrics-addr",
            "off",
            "--until",
            "end",
            "--close-at-end",
        ])
        .args(["--brokers", brokers, "--topic", &topic, "--out"])
        .arg(dir.path().join("out"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (status, rss) = wait_rss(job.id());
    report(
        "Kafka backfill (4 partitions)",
        count,
        status,
        rss,
        started.elapsed().as_secs_f64(),
    );
}

fn main() {
    let counts: Vec<u64> = std::env::var("BENCH_COUNTS")
        .unwrap_or_else(|_| "1000000,10000000".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    for &count in &counts {
        file_run(count);
    }
    match std::env::var("BENCH_BROKERS") {
        Ok(brokers) => {
            for &count in &counts {
                kafka_run(&brokers, count);
            }
        }
        Err(_) => println!("(set BENCH_BROKERS=HOST:PORT for the Kafka backfill)"),
    }
}
