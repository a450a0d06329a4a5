//! Kafka clusters for the tests, run through `scripts/kafka`: each in its own folder and on
//! ports chosen free when it starts, stopped once the test process is gone; the job's
//! command line; reading a topic and the job's group offsets back for the reference.

use crate::process::{free_ports, owned_command, run_script, wait_until};
use crate::reference::RefRecord;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The broker script (this crate is `tests/support` of the repository).
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/kafka");
/// The one file that pins the Kafka version the script installs and runs.
pub const VERSION_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/kafka-version");

/// Port bases are drawn from here: below Linux's ephemeral range (32768 and up), so that an
/// outgoing connection cannot take a broker's port between the check and the broker's start.
const PORT_BASES: std::ops::Range<u16> = 20_000..32_000;
/// Starts tried, each on other ports, when a chosen port was taken in between.
const START_TRIES: u32 = 5;

/// A local cluster in `dir`, wiped on drop unless `keep` is set (a failed chaos run keeps
/// it for investigation).
pub struct Cluster {
    pub dir: PathBuf,
    pub port_base: u16,
    pub brokers: u32,
    pub bootstrap: String,
    /// Set: Drop only stops the brokers and leaves the folder for investigation.
    pub keep: AtomicBool,
}

impl Cluster {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = script_command(&self.dir, args);
        c.env("RETAIL_KPI_KAFKA_PORT_BASE", self.port_base.to_string());
        c
    }

    /// Runs `scripts/kafka ARGS`; Err carries its output.
    pub fn try_script(&self, args: &[&str]) -> Result<String, String> {
        run_script(self.command(args), "scripts/kafka", args)
    }

    pub fn script(&self, args: &[&str]) -> String {
        self.try_script(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a cluster of `brokers` brokers (1 or 3) with its data in `dir`, on ports that
    /// are free now, and checks that it runs the pinned Kafka version.
    pub fn start(dir: PathBuf, brokers: u32) -> Cluster {
        for tool in ["java", "mvn"] {
            let found = owned_command("sh")
                .arg("-c")
                .arg(format!("command -v {tool}"))
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(found, "`{tool}` is missing: these tests run real Kafka brokers; install Java 17 and Maven (apt-get install openjdk-17-jre-headless maven)");
        }
        let mut last = String::new();
        for _ in 0..START_TRIES {
            let mut c = Cluster {
                dir: dir.clone(),
                port_base: choose_port_base(brokers),
                brokers,
                bootstrap: String::new(),
                keep: AtomicBool::new(false),
            };
            // A folder left by an earlier run would hold other data.
            let _ = c.try_script(&["wipe"]);
            match c.try_script(&["start", "--brokers", &brokers.to_string()]) {
                Ok(_) => {
                    c.bootstrap = c.script(&["bootstrap"]).trim().to_owned();
                    c.check_version();
                    return c;
                }
                // Another process took a port since it was checked (scripts/kafka's own
                // check, or the broker's bind): other ports. Dropping `c` wipes the folder.
                Err(e) if e.contains("already in use") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("the cluster did not start in {START_TRIES} tries on free ports; the last:\n{last}");
    }

    /// The brokers run the Kafka version of scripts/kafka-version, or the one
    /// RETAIL_KPI_KAFKA_VERSION names for a deliberate trial of another.
    fn check_version(&self) {
        let want = match std::env::var("RETAIL_KPI_KAFKA_VERSION") {
            Ok(v) if !v.is_empty() => v,
            _ => pinned_kafka_version(),
        };
        let got = self.script(&["version"]);
        assert_eq!(
            got.trim(),
            want,
            "the brokers run another Kafka version than {VERSION_FILE} pins"
        );
    }

    /// A consumer for metadata and watermark requests (no group work).
    pub fn client(&self) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", "retail-kpi-test-probe")
            .set("enable.auto.commit", "false")
            .set("socket.timeout.ms", "3000")
            .create()
            .expect("cannot create a Kafka client")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep.load(Ordering::SeqCst) {
            let _ = self.try_script(&["stop"]);
        } else {
            let _ = self.try_script(&["wipe"]);
        }
    }
}

/// The Kafka version scripts/kafka-version pins: its first line that is not a comment.
pub fn pinned_kafka_version() -> String {
    let text = std::fs::read_to_string(VERSION_FILE)
        .unwrap_or_else(|e| panic!("cannot read {VERSION_FILE}: {e}"));
    text.lines()
        .map(|l| {
            l.split('#')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect::<String>()
        })
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{VERSION_FILE} names no version"))
}

/// The ports of a cluster: scripts/kafka gives broker i base+i for clients and base+100+i
/// for its controller.
fn cluster_ports(base: u16, brokers: u32) -> Vec<u16> {
    (0..brokers as u16)
        .flat_map(|i| [base + i, base + 100 + i])
        .collect()
}

/// A port base whose ports no cluster of this process was given and nothing listens on now.
fn choose_port_base(brokers: u32) -> u16 {
    free_ports(PORT_BASES, |base| cluster_ports(base, brokers))
}

/// `scripts/kafka ARGS` for the cluster in `dir`, as a child of the test. The brokers it
/// starts are stopped by the script's watchdog once this test process is gone, however it
/// ends.
fn script_command(dir: &Path, args: &[&str]) -> Command {
    let mut c = owned_command(SCRIPT);
    c.args(args)
        .env("RETAIL_KPI_KAFKA_OWNER_PID", std::process::id().to_string())
        .env("RETAIL_KPI_KAFKA_DIR", dir);
    c
}

/// Stops and deletes the cluster in `dir` that no [`Cluster`] of this process owns (one
/// that another test process started).
pub fn wipe(dir: &Path) -> Result<String, String> {
    run_script(script_command(dir, &["wipe"]), "scripts/kafka", &["wipe"])
}

/// Waits until the topic exists with all its partitions led.
pub fn wait_topic(c: &Cluster, topic: &str, partitions: usize) {
    let consumer = c.client();
    wait_until(
        Duration::from_secs(60),
        &format!("topic {topic} with {partitions} led partitions"),
        || {
            consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .is_ok_and(|md| {
                    md.topics().iter().any(|t| {
                        t.error().is_none()
                            && t.partitions().len() == partitions
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                })
        },
    );
}

/// End offsets of every partition, or the first error. A fresh client each time: a
/// long-lived client that nobody polls kept failing after broker restarts.
pub fn high_watermarks(
    c: &Cluster,
    topic: &str,
    partitions: u32,
    timeout: Duration,
) -> Result<BTreeMap<u32, i64>, String> {
    let consumer = c.client();
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p as i32, timeout)
                .map(|(_, h)| (p, h))
                .map_err(|e| format!("end offset of partition {p}: {e}"))
        })
        .collect()
}

/// The job's command line for a live run or a backfill of `topic`, with the binary `bin`
/// (the test's `CARGO_BIN_EXE_retail-kpi`, or a copy of it).
pub fn job_command(
    bin: &str,
    c: &Cluster,
    topic: &str,
    out: &Path,
    state: &Path,
    checkpoint: &str,
    extra: &[&str],
) -> Command {
    let mut cmd = owned_command(bin);
    cmd.args(["run", "--brokers", &c.bootstrap, "--topic", topic])
        .args(["--checkpoint-interval", checkpoint])
        .arg("--out")
        .arg(out)
        .arg("--state")
        .arg(state)
        .args(extra)
        .stdin(Stdio::null());
    cmd
}

/// `state inspect --json` of a store no job holds, with the binary `bin`.
pub fn inspect(bin: &str, state: &Path) -> serde_json::Value {
    let out = owned_command(bin)
        .args(["state", "inspect", "--json", "--state"])
        .arg(state)
        .output()
        .expect("cannot run state inspect");
    assert!(
        out.status.success(),
        "state inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("state inspect --json printed no JSON")
}

/// The offset the job committed for a partition to its (advisory) consumer group
/// `retail-kpi.<topic>`, after a checkpoint; `None` before the first or when the brokers
/// do not answer.
pub fn committed_offset(c: &Cluster, topic: &str, partition: i32) -> Option<i64> {
    group_offset(c, &format!("retail-kpi.{topic}"), topic, partition)
}

/// [`committed_offset`] in the consumer group `group`.
pub fn group_offset(c: &Cluster, group: &str, topic: &str, partition: i32) -> Option<i64> {
    let group: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .set("group.id", group)
        .create()
        .ok()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let got = group.committed_offsets(tpl, Duration::from_secs(5)).ok()?;
    match got.elements().first()?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// Σ next_offset over the partitions of an inspected store: the records committed.
pub fn committed_records(v: &serde_json::Value) -> i64 {
    v["partitions"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["next_offset"].as_i64()).sum())
        .unwrap_or(0)
}

/// Reads the whole topic back with a plain consumer.
pub fn read_back(c: &Cluster, topic: &str) -> Vec<RefRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .set("group.id", "read-back")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "4194304")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap();
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .unwrap();
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::with_capacity(ends.values().sum::<i64>() as usize);
    let mut next: BTreeMap<i32, i64> = parts.iter().map(|&p| (p, 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(900);
    while next.iter().any(|(p, n)| *n < ends[p]) {
        assert!(
            Instant::now() < deadline,
            "reading the topic back timed out"
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            if m.offset() >= ends[&m.partition()] {
                continue;
            }
            next.insert(m.partition(), m.offset() + 1);
            out.push(RefRecord {
                partition: m.partition() as u32,
                offset: m.offset(),
                timestamp_ms: m.timestamp().to_millis().filter(|&t| t >= 0),
                value: m.payload().unwrap_or(&[]).to_vec(),
            });
        }
    }
    out
}
