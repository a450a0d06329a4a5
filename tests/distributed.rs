//! Several processes over one topic (`--role aggregate` in a consumer group, `--role
//! merge`), against a real 3-broker cluster (replication 3, min.insync.replicas 2): kills,
//! rebalances, a process paused past its session timeout, the merge killed, a broker
//! restarted, all while a producer runs. At the end the merge's files must be
//! byte-identical to a single-process backfill of the same topic and to the independent
//! reference, and every rejected record must be there once.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use test_support::cluster::{read_back, wait_topic, Cluster};
use test_support::harness;
use test_support::process::{owned_command, signal, wait_deadline, wait_log, wait_until};
use test_support::reference::{reference, RefConfig};

const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");
const TOPIC: &str = "invoices";
const PARTIALS: &str = "kpi-partials";
const GROUP: &str = "kpi-aggregate";

struct Setup {
    c: Cluster,
    dir: PathBuf,
}

impl Setup {
    fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// The options every process of the run shares: brokers, the partials topic, a short
    /// session timeout so that a dead process's partitions move within seconds.
    fn role(&self, role: &str, log_name: &str) -> Command {
        let mut cmd = owned_command(BIN);
        cmd.args(["run", "--role", role, "--brokers", &self.c.bootstrap])
            .args(["--partials-topic", PARTIALS, "--metrics-addr", "off"])
            .args(["--checkpoint-interval", "200ms"])
            // The idle rule is the one timing-dependent part of the output; keep it out.
            .args(["--idle-timeout", "1h"])
            .args([
                "-X",
                "session.timeout.ms=6000",
                "-X",
                "heartbeat.interval.ms=500",
            ])
            // Debug lines of the roles (transactions, rewinds, end checks): what a failure
            // in CI needs to be understood.
            .env("RUST_LOG", "info,retail_kpi::distributed=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.log(log_name)).unwrap());
        cmd
    }

    fn aggregate(&self, name: &str, extra: &[&str]) -> Child {
        self.role("aggregate", name)
            .args(["--topic", TOPIC, "--group-id", GROUP])
            .args(["--transactional-id", name])
            .args(extra)
            .spawn()
            .unwrap()
    }

    fn merge(&self, name: &str, extra: &[&str]) -> Child {
        self.role("merge", name)
            .arg("--out")
            .arg(self.dir.join("merged"))
            .arg("--state")
            .arg(self.dir.join("merge-state"))
            .args(extra)
            .spawn()
            .unwrap()
    }

    fn log_count(&self, name: &str, needle: &str) -> usize {
        std::fs::read_to_string(self.log(name))
            .unwrap_or_default()
            .matches(needle)
            .count()
    }
}

fn exit_of(child: &mut Child, within: Duration, what: &str) -> Option<i32> {
    wait_deadline(child, within, what).code()
}

fn terminate(child: &mut Child, what: &str) -> Option<i32> {
    signal(child, libc::SIGTERM);
    exit_of(child, Duration::from_secs(60), what)
}

#[test]
fn aggregates_and_merge_through_kills_rebalances_pauses_and_a_broker_restart() {
    let dir = std::env::temp_dir().join(format!(
        "retail-kpi-test-distributed-{}",
        std::process::id()
    ));
    let s = Setup {
        c: Cluster::start(dir.join("kafka"), 3),
        dir: tempfile::tempdir().unwrap().keep(),
    };
    let count = 150_000u64;
    let mut producer = owned_command(BIN)
        .args(["produce", "--brokers", &s.c.bootstrap, "--topic", TOPIC])
        .args(["--partitions", "6", "--replication", "3"])
        .args(["--count", &count.to_string(), "--rate", "3000"])
        .args(["--late-fraction", "0.01", "--bad-fraction", "0.01"])
        .args(["--event-rate", "600", "--seed", "14"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_topic(&s.c, TOPIC, 6);

    let mut merge = s.merge("merge-1", &[]);
    let mut aggs: Vec<(String, Child)> = (0..3)
        .map(|i| {
            let name = format!("agg-{i}");
            let child = s.aggregate(&name, &[]);
            (name, child)
        })
        .collect();
    for (name, child) in aggs.iter_mut() {
        wait_log(
            child,
            &s.log(name),
            "partitions assigned",
            1,
            Duration::from_secs(90),
        );
    }
    // 1. SIGKILL an aggregate process; its partitions move to the others.
    let (_, mut killed) = aggs.remove(0);
    killed.kill().unwrap();
    killed.wait().unwrap();
    let before: usize = (1..3)
        .map(|i| s.log_count(&format!("agg-{i}"), "partitions assigned"))
        .sum();
    wait_until(
        Duration::from_secs(60),
        "the killed process's partitions reassigned",
        || {
            (1..3)
                .map(|i| s.log_count(&format!("agg-{i}"), "partitions assigned"))
                .sum::<usize>()
                > before
        },
    );

    // 2. A 4th process joins.
    let mut fourth = s.aggregate("agg-3", &[]);
    wait_log(
        &mut fourth,
        &s.log("agg-3"),
        "partitions assigned",
        1,
        Duration::from_secs(90),
    );
    aggs.push(("agg-3".into(), fourth));

    // 3. SIGKILL the merge; a new one resumes from its checkpoint.
    merge.kill().unwrap();
    merge.wait().unwrap();
    merge = s.merge("merge-2", &[]);

    // 4. SIGSTOP one aggregate process past the session timeout: its partitions move; when
    //    it resumes it must be fenced or give them up, and write nothing for them.
    //    The one paused is one that owns partitions (cooperative-sticky may leave a
    //    process with none), moved to the front.
    let mut owner = None;
    wait_until(
        Duration::from_secs(60),
        "an aggregate process that owns partitions",
        || {
            owner = aggs.iter().position(|(n, _)| {
                !last_owned(&std::fs::read_to_string(s.log(n)).unwrap_or_default()).is_empty()
            });
            owner.is_some()
        },
    );
    aggs.swap(0, owner.unwrap());
    let (paused_name, paused) = {
        let (n, c) = &aggs[0];
        (n.clone(), c)
    };
    signal(paused, libc::SIGSTOP);
    // Its partitions as it last logged them; the wait is for another process to be given
    // one of them after that, not for any rebalance. (They may have moved already, before
    // the pause: a process stuck in a slow commit can be dropped by the group.)
    let paused_log = std::fs::read_to_string(s.log(&paused_name)).unwrap();
    let owned_by_paused = last_owned(&paused_log);
    assert!(
        !owned_by_paused.is_empty(),
        "{paused_name} owned nothing when paused"
    );
    let paused_since = last_assignment_time(&paused_log);
    let others: Vec<String> = aggs.iter().skip(1).map(|(n, _)| n.clone()).collect();
    wait_until(
        Duration::from_secs(120),
        "another process given a partition of the paused one",
        || {
            others.iter().any(|n| {
                let log = std::fs::read_to_string(s.log(n)).unwrap_or_default();
                log.lines().any(|l| {
                    l.contains("partitions assigned")
                        && l.get(..paused_since.len())
                            .is_some_and(|t| t > paused_since.as_str())
                        && given(l).iter().any(|p| owned_by_paused.contains(p))
                })
            })
        },
    );
    // What it logs from here on is what it did after resuming.
    let resumed_at = std::fs::metadata(s.log(&paused_name)).unwrap().len() as usize;
    signal(&aggs[0].1, libc::SIGCONT);

    // 5. Restart a broker under all of them.
    s.c.script(&["restart", "1"]);

    // 6. Stop one process cleanly.
    let (name, mut stopped) = aggs.remove(1);
    assert_eq!(
        terminate(&mut stopped, &name),
        Some(0),
        "{name} after SIGTERM"
    );

    let st = wait_deadline(&mut producer, Duration::from_secs(300), "the producer");
    assert!(st.success(), "the producer failed: {st}");

    // The live processes stop; the one that was paused may have been fenced (exit 5).
    for (name, mut child) in aggs {
        let code = match child.try_wait().unwrap() {
            Some(st) => st.code(),
            None => terminate(&mut child, &name),
        };
        let log = std::fs::read_to_string(s.log(&name)).unwrap_or_default();
        // A transactional call of librdkafka that hangs while a coordinator moves ends the
        // process (exit 5) for its supervisor to start again: allowed, and said.
        let hung = code == Some(5) && log.contains("did not return within its timeout");
        if hung {
            eprintln!("{name}: a librdkafka call hung, the process exited 5 as designed");
        }
        if name == paused_name {
            assert!(
                code == Some(0) || hung || (code == Some(5) && log.contains("fenced")),
                "{name}: exit {code:?}\n{log}"
            );
            // After resuming it learned that its partitions had moved: Kafka refused its
            // transaction (stale generation), or the rebalance took them, before it
            // committed anything for them.
            let after = log.get(resumed_at..).unwrap_or_default();
            let refused = after.contains("transaction aborted");
            let revoked = after.contains("partitions revoked");
            assert!(
                refused || revoked || hung || after.contains("fenced"),
                "{name} never noticed:\n{log}"
            );
            let out_of_group = after.contains("out of the group");
            if let Some(l) = after.lines().find(|l| l.contains("fenced")) {
                eprintln!("the paused process: {l}");
            }
            eprintln!("the paused process: exit {code:?}, transaction refused: {refused}, partitions revoked: {revoked}, found itself out of the group before a transaction: {out_of_group}");
        } else {
            assert!(code == Some(0) || hung, "{name}: exit {code:?}\n{log}");
        }
    }
    assert_eq!(
        terminate(&mut merge, "merge"),
        Some(0),
        "the live merge after SIGTERM"
    );

    // A bounded finish: two aggregate processes read every partition to its end and the
    // merge closes every window.
    let mut finish: Vec<Child> = (0..2)
        .map(|i| s.aggregate(&format!("end-{i}"), &["--until", "end"]))
        .collect();
    let mut last = s.merge("merge-end", &["--until", "end", "--close-at-end"]);
    for (i, child) in finish.iter_mut().enumerate() {
        let code = exit_of(
            child,
            Duration::from_secs(180),
            "a bounded aggregate process",
        );
        assert_eq!(
            code,
            Some(0),
            "{}",
            std::fs::read_to_string(s.log(&format!("end-{i}"))).unwrap_or_default()
        );
    }
    let code = exit_of(&mut last, Duration::from_secs(180), "the bounded merge");
    assert_eq!(
        code,
        Some(0),
        "{}",
        std::fs::read_to_string(s.log("merge-end")).unwrap_or_default()
    );

    // The single-process backfill of the same topic.
    let single = s.dir.join("single");
    let mut one = owned_command(BIN)
        .args(["run", "--brokers", &s.c.bootstrap, "--topic", TOPIC])
        .args(["--until", "end", "--close-at-end", "--metrics-addr", "off"])
        .arg("--out")
        .arg(&single)
        .arg("--state")
        .arg(s.dir.join("single-state"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(
        exit_of(&mut one, Duration::from_secs(180), "the backfill"),
        Some(0)
    );

    let merged_out = s.dir.join("merged");
    let merged = harness::kpi_files(&merged_out);
    let one_files = harness::kpi_files(&single);
    assert!(!merged.is_empty());
    assert!(
        merged == one_files,
        "merge vs one process:\n{}",
        harness::diff(&merged, &one_files)
    );
    let records = read_back(&s.c, TOPIC);
    assert_eq!(records.len() as u64, count);
    let expected = reference(&records, &RefConfig::default());
    assert!(
        merged == expected.files,
        "merge vs reference:\n{}",
        harness::diff(&merged, &expected.files)
    );
    // Every rejected record once (the harness fails on a second copy), with its source.
    assert_eq!(harness::rejected(&merged_out), expected.rejected);
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// The merge refuses what it cannot take, with the exit code and a message that says
/// what to do: partials made with other result settings (exit 2), a record that is not a
/// partials record (exit 5: our own data, never skipped); and a role without its settings
/// is refused before anything starts (exit 2).
#[test]
fn the_merge_refuses_foreign_settings_and_unreadable_records() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let (c, tmp) = one_broker_with("retail-kpi-test-dist-refuse", "small", 2000);
    let role = |role: &str, partials: &str| {
        let mut cmd = owned_command(BIN);
        cmd.args(["run", "--role", role, "--brokers", &c.bootstrap])
            .args(["--partials-topic", partials, "--metrics-addr", "off"])
            .args(["--replication-factor", "1", "--min-insync-replicas", "1"])
            .args(["--until", "end"])
            .stdout(Stdio::null());
        cmd
    };
    let agg = role("aggregate", "p-small")
        .args(["--topic", "small", "--group-id", "g-small"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(agg.success(), "the bounded aggregate process: {agg}");

    let merge = |partials: &str, name: &str, extra: &[&str]| {
        role("merge", partials)
            .arg("--close-at-end")
            .arg("--out")
            .arg(tmp.path().join(format!("{name}-out")))
            .arg("--state")
            .arg(tmp.path().join(format!("{name}-state")))
            .args(extra)
            .output()
            .unwrap()
    };
    let other = merge("p-small", "grace", &["--grace", "90s"]);
    let text = String::from_utf8_lossy(&other.stderr);
    assert_eq!(other.status.code(), Some(2), "{text}");
    assert!(
        text.contains("other result settings") && text.contains("1m 30s"),
        "{text}"
    );

    let good = merge("p-small", "good", &[]);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let records = read_back(&c, "small");
    let expected = reference(&records, &RefConfig::default());
    let files = harness::kpi_files(&tmp.path().join("good-out"));
    assert!(
        files == expected.files,
        "{}",
        harness::diff(&files, &expected.files)
    );

    // Not a partials record, at offset 0 of its topic (the brokers do not create topics
    // on their own here).
    c.script(&["create-topic", "p-garbage", "--partitions", "1"]);
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .create()
        .unwrap();
    producer
        .send(BaseRecord::<(), [u8]>::to("p-garbage").payload(b"{\"not\":\"ours\"}"))
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    let bad = merge("p-garbage", "bad", &[]);
    let text = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(5), "{text}");
    assert!(
        text.contains("`p-garbage` holds a record at offset 0") && text.contains("never skipped"),
        "{text}"
    );

    let missing = role("aggregate", "p-small")
        .args(["--topic", "small"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{text}");
    assert!(text.contains("--group-id"), "{text}");
}

/// A bounded distributed run over an input topic written in transactions ends, and counts
/// neither the transaction markers nor the records of an aborted transaction. The last
/// offset of such a partition is a commit marker, which no consumer receives as a record:
/// an end check on the last record's offset never ended (regression). A second bounded
/// run after more records were written reads them too.
#[test]
fn a_bounded_run_ends_on_a_transactional_input_topic() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let (c, tmp) = one_broker_with("retail-kpi-test-dist-txn-input", "plain", 1500);
    let records = read_back(&c, "plain");

    c.script(&["create-topic", "txn", "--partitions", "2"]);
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .set("transactional.id", "test-input-writer")
        .create()
        .unwrap();
    let t = Duration::from_secs(30);
    producer.init_transactions(t).unwrap();
    let send = |r: &test_support::reference::RefRecord| {
        let mut rec = BaseRecord::<(), [u8]>::to("txn")
            .partition(r.partition as i32)
            .payload(&r.value);
        if let Some(ts) = r.timestamp_ms {
            rec = rec.timestamp(ts);
        }
        producer.send(rec).map_err(|(e, _)| e).unwrap();
    };
    let write = |part: &[test_support::reference::RefRecord]| {
        for chunk in part.chunks(400) {
            producer.begin_transaction().unwrap();
            chunk.iter().for_each(send);
            producer.commit_transaction(t).unwrap();
            // Records that must not count: the same invoices again, in a transaction that
            // is aborted.
            producer.begin_transaction().unwrap();
            chunk.iter().take(50).for_each(send);
            producer.flush(t).unwrap();
            producer.abort_transaction(t).unwrap();
        }
    };
    let role = |role: &str, log: &str| {
        let mut cmd = owned_command(BIN);
        cmd.args(["run", "--role", role, "--brokers", &c.bootstrap])
            .args(["--partials-topic", "p-txn", "--metrics-addr", "off"])
            .args(["--replication-factor", "1", "--min-insync-replicas", "1"])
            .args(["--until", "end"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join(log)).unwrap());
        cmd
    };
    // Two bounded runs, the second after more was written: it reads to the topic's new
    // end, not to the end the first one recorded (regression: a recorded end was reused).
    let (first, second) = records.split_at(records.len() / 2);
    for (i, part) in [first, second].into_iter().enumerate() {
        write(part);
        let log = format!("aggregate-{i}.log");
        let mut agg = role("aggregate", &log)
            .args(["--topic", "txn", "--group-id", "g-txn"])
            .spawn()
            .unwrap();
        let code = exit_of(
            &mut agg,
            Duration::from_secs(120),
            "a bounded aggregate process",
        );
        let text = std::fs::read_to_string(tmp.path().join(&log)).unwrap();
        assert_eq!(code, Some(0), "{text}");
    }

    let out = tmp.path().join("out");
    let mut merge = role("merge", "merge.log")
        .arg("--close-at-end")
        .arg("--out")
        .arg(&out)
        .arg("--state")
        .arg(tmp.path().join("state"))
        .spawn()
        .unwrap();
    let code = exit_of(&mut merge, Duration::from_secs(120), "the bounded merge");
    let log = std::fs::read_to_string(tmp.path().join("merge.log")).unwrap();
    assert_eq!(code, Some(0), "{log}");
    let expected = reference(&records, &RefConfig::default());
    let files = harness::kpi_files(&out);
    assert!(!files.is_empty());
    assert!(
        files == expected.files,
        "{}",
        harness::diff(&files, &expected.files)
    );
}

/// A one-broker cluster whose topic `topic` holds `count` invoices over 2 partitions, and a
/// folder for the run.
fn one_broker_with(name: &str, topic: &str, count: u32) -> (Cluster, tempfile::TempDir) {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let c = Cluster::start(dir.join("kafka"), 1);
    let st = owned_command(BIN)
        .args(["produce", "--brokers", &c.bootstrap, "--topic", topic])
        .args(["--partitions", "2", "--count", &count.to_string()])
        .args(["--event-rate", "600"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    (c, tempfile::tempdir().unwrap())
}

/// The partitions of the last `owned=[...]` of a log.
fn last_owned(log: &str) -> Vec<u32> {
    log.lines()
        .rev()
        .find_map(|l| l.split("owned=[").nth(1))
        .map(|rest| numbers(rest.split(']').next().unwrap_or("")))
        .unwrap_or_default()
}

/// The timestamp (RFC 3339, UTC: ordered as text) of the last `partitions assigned` line.
fn last_assignment_time(log: &str) -> String {
    log.lines()
        .rev()
        .find(|l| l.contains("partitions assigned"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

/// The partitions of an assignment line's `partitions=[...]`.
fn given(line: &str) -> Vec<u32> {
    line.split("partitions=[")
        .nth(1)
        .map(|rest| numbers(rest.split(']').next().unwrap_or("")))
        .unwrap_or_default()
}

fn numbers(list: &str) -> Vec<u32> {
    list.split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect()
}
