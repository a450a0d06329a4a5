//! Against real Apache Kafka brokers, started and stopped by these tests through
//! `scripts/kafka` (each test its own cluster folder and ports). The topic is read back
//! with a plain consumer and checked against the independent reference.
//!
//! Needs Java (and Maven for the first install); without them the tests fail and say so.

mod common;

use common::harness;
use common::reference::{reference, RefConfig, RefRecord};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");

struct Cluster {
    dir: PathBuf,
    port_base: u16,
    bootstrap: String,
}

impl Cluster {
    fn script(&self, args: &[&str]) -> String {
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka"))
            .args(args)
            .env("RETAIL_KPI_KAFKA_DIR", &self.dir)
            .env("RETAIL_KPI_KAFKA_PORT_BASE", self.port_base.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("cannot run scripts/kafka");
        assert!(
            out.status.success(),
            "scripts/kafka {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn start(name: &str, brokers: u32, port_base: u16) -> Cluster {
        for tool in ["java", "mvn"] {
            let found = Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}"))
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(found, "`{tool}` is missing: these tests run real Kafka brokers; install Java 17 and Maven (apt-get install openjdk-17-jre-headless maven)");
        }
        let dir =
            std::env::temp_dir().join(format!("retail-kpi-test-{name}-{}", std::process::id()));
        let mut c = Cluster {
            dir,
            port_base,
            bootstrap: String::new(),
        };
        c.script(&["start", "--brokers", &brokers.to_string()]);
        c.bootstrap = c.script(&["bootstrap"]).trim().to_owned();
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka"))
            .arg("wipe")
            .env("RETAIL_KPI_KAFKA_DIR", &self.dir)
            .env("RETAIL_KPI_KAFKA_PORT_BASE", self.port_base.to_string())
            .output();
    }
}

fn produce(c: &Cluster, topic: &str, count: u64, seed: u64, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args([
            "produce",
            "--brokers",
            &c.bootstrap,
            "--topic",
            topic,
            "--count",
            &count.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .args([
            "--late-fraction",
            "0.01",
            "--bad-fraction",
            "0.01",
            "--event-rate",
            "600",
        ])
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until the topic exists with all its partitions, as the producer creates it.
fn wait_topic(c: &Cluster, topic: &str, partitions: usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .create()
        .unwrap();
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

/// Waits for a child with a deadline, so that a stuck producer or job fails the test
/// instead of hanging CI.
fn wait_deadline(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
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

fn wait_ok(mut child: Child, what: &str) {
    let st = wait_deadline(&mut child, Duration::from_secs(240), what);
    assert!(st.success(), "{what} failed: {st}");
}

fn job(c: &Cluster, topic: &str, out: &Path, state: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "run",
        "--brokers",
        &c.bootstrap,
        "--topic",
        topic,
        "--checkpoint-interval",
        "200ms",
    ])
    // The idle rule is the only timing-dependent part of the output; keep it out.
    .args(["--idle-timeout", "1h"])
    .arg("--out")
    .arg(out)
    .arg("--state")
    .arg(state)
    .args(extra)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

fn backfill(c: &Cluster, topic: &str, out: &Path, state: &Path) {
    let child = job(c, topic, out, state, &["--until", "end", "--close-at-end"])
        .spawn()
        .unwrap();
    wait_ok(child, "backfill");
}

/// SIGTERM: the job must checkpoint and exit 0.
fn terminate(mut child: Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let st = wait_deadline(&mut child, Duration::from_secs(30), "the job after SIGTERM");
    assert!(st.success(), "job did not exit 0 on SIGTERM: {st}");
}

/// Reads the whole topic back with a plain consumer.
fn read_back(c: &Cluster, topic: &str) -> Vec<RefRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .set("group.id", "read-back")
        .set("enable.auto.commit", "false")
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
    let mut out = Vec::new();
    let mut next: BTreeMap<i32, i64> = parts.iter().map(|&p| (p, 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    while next.iter().any(|(p, n)| *n < ends[p]) {
        assert!(
            Instant::now() < deadline,
            "reading the topic back timed out"
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
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

fn check(c: &Cluster, topic: &str, out: &Path, expected_count: usize) {
    let records = read_back(c, topic);
    assert_eq!(
        records.len(),
        expected_count,
        "the topic holds a different number of records"
    );
    let expected = reference(&records, &RefConfig::default());
    let got = harness::kpi_files(out);
    assert!(!got.is_empty());
    assert!(
        got == expected.files,
        "job vs reference:\n{}",
        harness::diff(&got, &expected.files)
    );
    assert_eq!(harness::rejected(out), expected.rejected);
}

fn sigkill(child: &mut Child) -> bool {
    let alive = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    alive
}

#[test]
fn single_broker_backfill_kills_and_broker_restart() {
    let c = Cluster::start("one", 1, 39092);
    let tmp = tempfile::tempdir().unwrap();

    // (a) 200,000 invoices over 4 partitions, one backfill.
    wait_ok(
        produce(&c, "a", 200_000, 1, &["--partitions", "4"]),
        "produce",
    );
    let (out, st) = (tmp.path().join("a-out"), tmp.path().join("a-state"));
    backfill(&c, "a", &out, &st);
    check(&c, "a", &out, 200_000);

    // (b) the live job killed with SIGKILL several times while the producer runs.
    let producer = produce(
        &c,
        "b",
        100_000,
        2,
        &["--partitions", "4", "--rate", "20000"],
    );
    wait_topic(&c, "b", 4);
    let (out, st) = (tmp.path().join("b-out"), tmp.path().join("b-state"));
    let mut kills = 0;
    for pause in [700, 900, 1100, 800] {
        let mut j = job(&c, "b", &out, &st, &[]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(pause));
        kills += sigkill(&mut j) as u32;
    }
    assert!(kills >= 3, "only {kills} kills hit a running job");
    let live = job(&c, "b", &out, &st, &[]).spawn().unwrap();
    wait_ok(producer, "produce");
    terminate(live);
    backfill(&c, "b", &out, &st);
    check(&c, "b", &out, 100_000);

    // (c) the single broker restarted mid-run of the live job: a first wave of invoices,
    // the job live on it, the broker restarted under it, then a second wave from a fresh
    // producer that the same job must take up after the outage.
    wait_ok(
        produce(&c, "c", 50_000, 3, &["--partitions", "4"]),
        "produce",
    );
    let (out, st) = (tmp.path().join("c-out"), tmp.path().join("c-state"));
    let live = job(&c, "c", &out, &st, &[]).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    c.script(&["restart", "0"]);
    let wave2 = ["--partitions", "4", "--start", "2020-09-18 11:30:00"];
    wait_ok(produce(&c, "c", 50_000, 33, &wave2), "produce");
    terminate(live);
    backfill(&c, "c", &out, &st);
    check(&c, "c", &out, 100_000);
}

#[test]
fn three_brokers_partition_leader_killed() {
    let c = Cluster::start("three", 3, 49092);
    let tmp = tempfile::tempdir().unwrap();
    let producer = produce(
        &c,
        "d",
        100_000,
        4,
        &["--partitions", "4", "--replication", "3", "--rate", "20000"],
    );
    wait_topic(&c, "d", 4);
    let (out, st) = (tmp.path().join("d-out"), tmp.path().join("d-state"));
    let live = job(&c, "d", &out, &st, &[]).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let leader = c.script(&["leader", "d", "0"]).trim().to_owned();
    c.script(&["kill", &leader]);
    std::thread::sleep(Duration::from_secs(3));
    c.script(&["start-node", &leader]);
    wait_ok(producer, "produce");
    terminate(live);
    backfill(&c, "d", &out, &st);
    check(&c, "d", &out, 100_000);
}
