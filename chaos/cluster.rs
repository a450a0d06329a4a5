//! Kafka helpers shared by the chaos scenario (`chaos/chaos.rs`) and the idle-rule tests
//! (`tests/idle.rs`, which includes this file with `#[path]`): a cluster run through
//! `scripts/kafka` in its own folder and ports, child processes with deadlines, and
//! reading a topic back for the independent reference.

#![allow(dead_code)]

use crate::common::reference::RefRecord;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka");

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
        let mut c = Command::new(SCRIPT);
        c.args(args)
            // The brokers are stopped when this test process is gone, however it ends.
            .env("RETAIL_KPI_KAFKA_OWNER_PID", std::process::id().to_string())
            .env("RETAIL_KPI_KAFKA_DIR", &self.dir)
            .env("RETAIL_KPI_KAFKA_PORT_BASE", self.port_base.to_string())
            .stdin(Stdio::null());
        c
    }

    /// Runs `scripts/kafka ARGS`; Err carries its output.
    pub fn try_script(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(args)
            .output()
            .map_err(|e| format!("cannot run scripts/kafka: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "scripts/kafka {args:?} failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn script(&self, args: &[&str]) -> String {
        self.try_script(args).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn start(dir: PathBuf, brokers: u32, port_base: u16) -> Cluster {
        for tool in ["java", "mvn"] {
            let found = Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}"))
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(found, "`{tool}` is missing: these tests run real Kafka brokers; install Java 17 and Maven (apt-get install openjdk-17-jre-headless maven)");
        }
        let mut c = Cluster {
            dir,
            port_base,
            brokers,
            bootstrap: String::new(),
            keep: AtomicBool::new(false),
        };
        // A folder left by an earlier run with these ports would hold other data.
        let _ = c.try_script(&["wipe"]);
        c.script(&["start", "--brokers", &brokers.to_string()]);
        c.bootstrap = c.script(&["bootstrap"]).trim().to_owned();
        c
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

/// Waits until the topic exists with all its partitions led.
pub fn wait_topic(c: &Cluster, topic: &str, partitions: usize) {
    let consumer = c.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            let ok = md.topics().iter().any(|t| {
                t.error().is_none()
                    && t.partitions().len() == partitions
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if ok {
                return;
            }
        }
        assert!(Instant::now() < deadline, "topic {topic} did not appear");
        std::thread::sleep(Duration::from_millis(100));
    }
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

/// Waits for a child with a deadline, so that a stuck process fails instead of hanging.
pub fn wait_deadline(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// A command for a child of the test that dies with it: in a process group of its own, and
/// sent SIGKILL by the kernel when the test thread that spawned it is gone (a test process
/// killed hard included), so that no job or producer is left to write into a later run's
/// cluster on the same ports.
pub fn owned_command(program: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(program);
    c.process_group(0);
    // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated here.
    unsafe {
        let parent = libc::getpid();
        c.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    c
}

/// The job's command line for a live run or a backfill.
pub fn job_command(
    c: &Cluster,
    topic: &str,
    out: &Path,
    state: &Path,
    checkpoint: &str,
    extra: &[&str],
) -> Command {
    job_command_with(BIN, c, topic, out, state, checkpoint, extra)
}

/// The same with another copy of the binary.
pub fn job_command_with(
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

/// `state inspect --json` of a store no job holds.
pub fn inspect(state: &Path) -> serde_json::Value {
    inspect_with(BIN, state)
}

/// The same with another copy of the binary.
pub fn inspect_with(bin: &str, state: &Path) -> serde_json::Value {
    let out = Command::new(bin)
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
    let group: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .set("group.id", format!("retail-kpi.{topic}"))
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
