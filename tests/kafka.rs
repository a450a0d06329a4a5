//! Against real Apache Kafka brokers, started and stopped by these tests through
//! `scripts/kafka` (each test its own cluster folder, on ports free at its start). The topic
//! is read back with a plain consumer and checked against the independent reference.
//!
//! Needs Java (and Maven for the first install); without them the tests fail and say so.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use test_support::cluster::{read_back, wait_topic, Cluster};
use test_support::harness;
use test_support::process::{owned_command, wait_deadline, wait_log};
use test_support::reference::{reference, RefConfig};

const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");

fn start_cluster(name: &str, brokers: u32) -> Cluster {
    let dir = std::env::temp_dir().join(format!("retail-kpi-test-{name}-{}", std::process::id()));
    Cluster::start(dir, brokers)
}

fn produce(c: &Cluster, topic: &str, count: u64, seed: u64, extra: &[&str]) -> Child {
    owned_command(BIN)
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
    wait_ok(producer, "produce");
    terminate(live, &log);
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
    let log = tmp.path().join("c.log");
    let live = live_job(&c, "c", &out, &st, &log);
    c.script(&["restart", "0"]);
    let wave2 = ["--partitions", "4", "--start", "2020-09-18 11:30:00"];
    wait_ok(produce(&c, "c", 50_000, 33, &wave2), "produce");
    terminate(live, &log);
    backfill(&c, "c", &out, &st);
    check(&c, "c", &out, 100_000);
}

#[test]
fn three_brokers_partition_leader_killed() {
    // The leader of partition 0 killed under the live job, between two producer waves:
    // a producer running across the kill failed now and then inside librdkafka (exit 5,
    // see the note of this issue), which is not what this case tests.
    let c = start_cluster("three", 3);
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--partitions", "4", "--replication", "3"];
    wait_ok(produce(&c, "d", 50_000, 4, &args), "produce");
    wait_topic(&c, "d", 4);
    let (out, st) = (tmp.path().join("d-out"), tmp.path().join("d-state"));
    let log = tmp.path().join("d.log");
    let live = live_job(&c, "d", &out, &st, &log);
    let leader = c.script(&["leader", "d", "0"]).trim().to_owned();
    c.script(&["kill", &leader]);
    // Not a wait for a condition: the leader stays down this long, with the job live.
    std::thread::sleep(Duration::from_secs(3));
    c.script(&["start-node", &leader]);
    let wave2 = [
        "--partitions",
        "4",
        "--replication",
        "3",
        "--start",
        "2020-09-18 11:30:00",
    ];
    wait_ok(produce(&c, "d", 50_000, 44, &wave2), "produce");
    terminate(live, &log);
    backfill(&c, "d", &out, &st);
    check(&c, "d", &out, 100_000);
}
