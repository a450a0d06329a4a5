//! Against real Apache Kafka brokers, started and stopped by these tests through
//! `scripts/kafka` (each test its own cluster folder, on ports free at its start). The topic
//! is read back with a plain consumer and checked against the independent reference.
//!
//! Needs Java (and Maven for the first install); without them the tests fail and say so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use test_support::cluster::{high_watermarks, read_back, wait_topic, Cluster};
use test_support::harness;
use test_support::process::{owned_command, wait_deadline, wait_log, wait_until_every};
use test_support::reference::{reference, RefConfig};

const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");

fn start_cluster(name: &str, brokers: u32) -> Cluster {
    let dir = std::env::temp_dir().join(format!("retail-kpi-test-{name}-{}", std::process::id()));
    Cluster::start(dir, brokers)
}

/// A running `produce`, its standard error kept in a file so that a failure says why.
struct Producer {
    child: Child,
    log: PathBuf,
}

fn produce(c: &Cluster, topic: &str, count: u64, seed: u64, extra: &[&str]) -> Producer {
    let log = std::env::temp_dir().join(format!(
        "retail-kpi-test-produce-{}-{topic}-{seed}.log",
        std::process::id()
    ));
    let child = owned_command(BIN)
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
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Producer { child, log }
}

fn wait_produced(mut p: Producer) {
    let st = wait_deadline(&mut p.child, Duration::from_secs(240), "produce");
    let log = std::fs::read_to_string(&p.log).unwrap_or_default();
    let _ = std::fs::remove_file(&p.log);
    assert!(st.success(), "produce failed: {st}; its log:\n{log}");
}

fn wait_ok(mut child: Child, what: &str) {
    let st = wait_deadline(&mut child, Duration::from_secs(240), what);
    assert!(st.success(), "{what} failed: {st}");
}

fn job(c: &Cluster, topic: &str, out: &Path, state: &Path, extra: &[&str]) -> Command {
    let mut cmd = owned_command(BIN);
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

/// SIGTERM: the job must checkpoint and exit 0. A failure shows the end of the job's log,
/// which the test's folder takes with it: a job once died of SIGSEGV here in CI, and
/// nothing said where.
fn terminate(mut child: Child, log: &Path) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let st = wait_deadline(&mut child, Duration::from_secs(30), "the job after SIGTERM");
    if !st.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "job did not exit 0 on SIGTERM: {st}; the end of its log:\n{}",
            tail.join("\n")
        );
    }
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

/// Starts the live job on `topic` and waits until it has processed its first records (its
/// log says so): it is up and reading when the test breaks a broker under it.
fn live_job(c: &Cluster, topic: &str, out: &Path, st: &Path, log: &Path) -> Child {
    let mut live = job(c, topic, out, st, &[])
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    wait_log(
        &mut live,
        log,
        "first records processed after start",
        1,
        Duration::from_secs(60),
    );
    live
}

fn sigkill(child: &mut Child) -> bool {
    let alive = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    alive
}

#[test]
fn single_broker_backfill_kills_and_broker_restart() {
    let c = start_cluster("one", 1);
    let tmp = tempfile::tempdir().unwrap();

    // (a) 200,000 invoices over 4 partitions, one backfill.
    wait_produced(produce(&c, "a", 200_000, 1, &["--partitions", "4"]));
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
        // Not a wait for a condition: the kills land at these moments of the live run, on
        // purpose at different points of its reading and checkpointing.
        std::thread::sleep(Duration::from_millis(pause));
        kills += sigkill(&mut j) as u32;
    }
    assert!(kills >= 3, "only {kills} kills hit a running job");
    let log = tmp.path().join("b.log");
    let live = job(&c, "b", &out, &st, &[])
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_produced(producer);
    terminate(live, &log);
    backfill(&c, "b", &out, &st);
    check(&c, "b", &out, 100_000);

    // (c) the single broker restarted mid-run of the live job: a first wave of invoices,
    // the job live on it, the broker restarted under it, then a second wave from a fresh
    // producer that the same job must take up after the outage.
    wait_produced(produce(&c, "c", 50_000, 3, &["--partitions", "4"]));
    let (out, st) = (tmp.path().join("c-out"), tmp.path().join("c-state"));
    let log = tmp.path().join("c.log");
    let live = live_job(&c, "c", &out, &st, &log);
    c.script(&["restart", "0"]);
    let wave2 = ["--partitions", "4", "--start", "2020-09-18 11:30:00"];
    wait_produced(produce(&c, "c", 50_000, 33, &wave2));
    terminate(live, &log);
    backfill(&c, "c", &out, &st);
    check(&c, "c", &out, 100_000);
}

#[test]
fn three_brokers_partition_leader_killed() {
    // The leader of partition 0 killed under the live job and under a running producer
    // (issue 9: `produce` failed across a leader kill, once in four runs, in November; not
    // seen since in 29 rounds by hand, README "Known gaps"). Its standard error is kept,
    // so that a failure here shows librdkafka's reason.
    let c = start_cluster("three", 3);
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--partitions", "4", "--replication", "3"];
    wait_produced(produce(&c, "d", 50_000, 4, &args));
    wait_topic(&c, "d", 4);
    let (out, st) = (tmp.path().join("d-out"), tmp.path().join("d-state"));
    let log = tmp.path().join("d.log");
    let live = live_job(&c, "d", &out, &st, &log);
    // Asked first: `leader` starts a JVM, seconds on a loaded machine.
    let leader = c.script(&["leader", "d", "0"]).trim().to_owned();
    // 10 s of sends at 5,000 a second, so that the leader dies and comes back under them.
    let wave2 = [
        "--partitions",
        "4",
        "--replication",
        "3",
        "--start",
        "2020-09-18 11:30:00",
        "--rate",
        "5000",
    ];
    let before = high_watermarks(&c, "d", 4, Duration::from_secs(10)).unwrap()[&0];
    let mut producer = produce(&c, "d", 50_000, 44, &wave2);
    // The kill lands among the sends, not before the first: once partition 0 has grown.
    wait_until_every(
        Duration::from_secs(60),
        Duration::from_millis(200),
        "the second wave's first records on partition 0",
        || high_watermarks(&c, "d", 4, Duration::from_secs(5)).is_ok_and(|h| h[&0] > before),
    );
    assert!(
        producer.child.try_wait().unwrap().is_none(),
        "the second wave ended before the leader was killed"
    );
    c.script(&["kill", &leader]);
    // Not a wait for a condition: the leader stays down this long, with the job and the
    // producer live.
    std::thread::sleep(Duration::from_secs(3));
    c.script(&["start-node", &leader]);
    wait_produced(producer);
    terminate(live, &log);
    backfill(&c, "d", &out, &st);
    check(&c, "d", &out, 100_000);
}
