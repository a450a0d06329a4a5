//! The chaos scenario of issue 14: a run over several processes (`--role aggregate` in one
//! consumer group, `--role merge`) through SIGKILLs of aggregate processes, processes added
//! and stopped, pauses past the session timeout, SIGKILLs of the merge and kills and
//! restarts of brokers, while a producer runs. At the end the merge's files must be
//! byte-identical to a single-process backfill of the same topic and to the independent
//! reference, and every rejected record there once.
//!
//! A Cargo test target (`[[test]] name = "chaos_distributed"`): without settings it runs
//! the short CI scenario; `chaos/run --distributed` the long one. Settings (environment):
//!
//! | variable | CI default | meaning |
//! |---|---|---|
//! | CHAOS_SEED | 7 | seeds the fault plan and the generator |
//! | CHAOS_INVOICES | 40000 | records produced (malformed and late ones included) |
//! | CHAOS_RATE | 2000 | records per second the producer sends |
//! | CHAOS_PROCESS_KILLS | 4 | SIGKILLs of aggregate processes (each restarted) |
//! | CHAOS_PAUSES | 1 | SIGSTOPs of an aggregate process past the session timeout |
//! | CHAOS_MERGE_KILLS | 1 | SIGKILLs of the merge (each restarted) |
//! | CHAOS_BROKER_FAULTS | 2 | broker SIGKILLs and clean restarts, alternately |
//! | CHAOS_SCALE | 2 | processes added or stopped cleanly (between 2 and 4 run) |
//! | CHAOS_DIR | $TMPDIR/retail-kpi-chaos-dist-<seed>-<pid> | work folder |
//!
//! A process that exits on its own (a transaction that kept failing through a broker
//! fault, say) is started again, as a supervisor would, and counted in the summary.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use test_support::cluster::{read_back, wait_topic, Cluster};
use test_support::process::{owned_command, signal, wait_deadline};
use test_support::reference::{reference, RefConfig};
use test_support::{env_or, harness};

const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");
const TOPIC: &str = "invoices";
const PARTIALS: &str = "kpi-partials";
const GROUP: &str = "kpi-aggregate";
const SESSION_MS: u64 = 6000;

struct Run {
    c: Cluster,
    dir: PathBuf,
    start: Instant,
    spawned: usize,
}

impl Run {
    fn say(&self, msg: &str) {
        eprintln!("[{:>7.1}s] {msg}", self.start.elapsed().as_secs_f64());
    }

    fn command(&mut self, role: &str) -> Command {
        self.spawned += 1;
        let log = self
            .dir
            .join(format!("logs/{role}-{:04}.log", self.spawned));
        let mut cmd = owned_command(BIN);
        cmd.args(["run", "--role", role, "--brokers", &self.c.bootstrap])
            .args(["--partials-topic", PARTIALS, "--metrics-addr", "off"])
            .args(["--checkpoint-interval", "500ms", "--idle-timeout", "1h"])
            .args(["-X", &format!("session.timeout.ms={SESSION_MS}")])
            .args(["-X", "heartbeat.interval.ms=500"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        cmd
    }

    fn aggregate(&mut self, slot: usize, extra: &[&str]) -> Child {
        self.command("aggregate")
            .args(["--topic", TOPIC, "--group-id", GROUP])
            .args(["--transactional-id", &format!("chaos-agg-{slot}")])
            .args(extra)
            .spawn()
            .unwrap()
    }

    fn merge(&mut self, extra: &[&str]) -> Child {
        let (out, state) = (self.dir.join("out"), self.dir.join("merge-state"));
        self.command("merge")
            .arg("--out")
            .arg(out)
            .arg("--state")
            .arg(state)
            .args(extra)
            .spawn()
            .unwrap()
    }

    /// The error lines (why a process exited) of every log, not said before.
    fn new_errors(&self, seen: &mut std::collections::BTreeSet<String>) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.dir.join("logs"))
            .unwrap()
            .filter_map(Result::ok)
        {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            for line in text
                .lines()
                .filter(|l| l.contains(" ERROR retail_kpi::cli"))
            {
                if seen.insert(line.to_owned()) {
                    out.push(line.to_owned());
                }
            }
        }
        out
    }

    /// "partitions assigned" lines over every process's log: one per rebalance a process
    /// took part in.
    fn assignments(&self) -> usize {
        std::fs::read_dir(self.dir.join("logs"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| {
                        std::fs::read_to_string(e.path())
                            .unwrap_or_default()
                            .matches("partitions assigned")
                            .count()
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
}

fn stop(child: &mut Child, what: &str) -> Option<i32> {
    signal(child, libc::SIGTERM);
    wait_deadline(child, Duration::from_secs(90), what).code()
}

#[derive(Debug, Clone, Copy)]
enum Event {
    KillAggregate,
    Pause,
    KillMerge,
    Broker,
    Scale,
}

#[test]
fn chaos_distributed() {
    let seed: u64 = env_or("CHAOS_SEED", 7);
    let invoices: u64 = env_or("CHAOS_INVOICES", 40_000);
    let rate: u64 = env_or("CHAOS_RATE", 2000);
    let counts = [
        (Event::KillAggregate, env_or("CHAOS_PROCESS_KILLS", 4usize)),
        (Event::Pause, env_or("CHAOS_PAUSES", 1)),
        (Event::KillMerge, env_or("CHAOS_MERGE_KILLS", 1)),
        (Event::Broker, env_or("CHAOS_BROKER_FAULTS", 2)),
        (Event::Scale, env_or("CHAOS_SCALE", 2)),
    ];
    let dir: PathBuf = std::env::var("CHAOS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::temp_dir().join(format!(
                "retail-kpi-chaos-dist-{seed}-{}",
                std::process::id()
            ))
        });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut plan: Vec<Event> = counts
        .iter()
        .flat_map(|(e, n)| std::iter::repeat_n(*e, *n))
        .collect();
    // A seeded shuffle: the order of the faults is the seed's.
    for i in (1..plan.len()).rev() {
        plan.swap(i, rng.gen_range(0..=i));
    }
    let mut r = Run {
        c: Cluster::start(dir.join("kafka"), 3),
        dir: dir.clone(),
        start: Instant::now(),
        spawned: 0,
    };
    let mut producer = owned_command(BIN)
        .args(["produce", "--brokers", &r.c.bootstrap, "--topic", TOPIC])
        .args(["--partitions", "6", "--replication", "3"])
        .args([
            "--count",
            &invoices.to_string(),
            "--rate",
            &rate.to_string(),
        ])
        .args(["--late-fraction", "0.01", "--bad-fraction", "0.01"])
        .args(["--event-rate", "600", "--seed", &seed.to_string()])
        .stderr(std::fs::File::create(dir.join("logs/produce.log")).unwrap())
        .spawn()
        .unwrap();
    wait_topic(&r.c, TOPIC, 6);
    let mut merge = r.merge(&[]);
    let mut aggs: Vec<Option<Child>> = (0..3).map(|i| Some(r.aggregate(i, &[]))).collect();
    let produce_secs = invoices as f64 / rate as f64;
    // The faults spread over the production; the gaps are the plan's, not waits.
    let gap = Duration::from_secs_f64((produce_secs / (plan.len() + 1) as f64).max(0.5));
    let (mut kills, mut pauses, mut merge_kills, mut broker_faults, mut scaled, mut respawned) =
        (0, 0, 0, 0, 0, 0);
    let mut producer_failed = None;
    let mut errors_seen = std::collections::BTreeSet::new();
    for (i, event) in plan.iter().enumerate() {
        std::thread::sleep(gap.mul_f64(rng.gen_range(0.5..1.5)));
        // A supervisor's work: what exited on its own starts again.
        for (slot, a) in aggs.iter_mut().enumerate() {
            if let Some(st) = a.as_mut().and_then(|c| c.try_wait().unwrap()) {
                r.say(&format!(
                    "aggregate {slot} exited on its own ({st}); started again"
                ));
                for line in r.new_errors(&mut errors_seen) {
                    r.say(&format!("  {line}"));
                }
                *a = Some(r.aggregate(slot, &[]));
                respawned += 1;
            }
        }
        if let Some(st) = merge.try_wait().unwrap() {
            r.say(&format!(
                "the merge exited on its own ({st}); started again"
            ));
            for line in r.new_errors(&mut errors_seen) {
                r.say(&format!("  {line}"));
            }
            merge = r.merge(&[]);
            respawned += 1;
        }
        let live: Vec<usize> = (0..aggs.len()).filter(|s| aggs[*s].is_some()).collect();
        let slot = live[rng.gen_range(0..live.len())];
        match event {
            Event::KillAggregate => {
                let mut c = aggs[slot].take().unwrap();
                c.kill().unwrap();
                c.wait().unwrap();
                aggs[slot] = Some(r.aggregate(slot, &[]));
                kills += 1;
                r.say(&format!(
                    "event {i}: SIGKILL aggregate {slot}, started again"
                ));
            }
            Event::Pause => {
                let c = aggs[slot].as_ref().unwrap();
                signal(c, libc::SIGSTOP);
                // Past the session timeout: the subject of the fault, not a wait.
                std::thread::sleep(Duration::from_millis(SESSION_MS + 3000));
                signal(c, libc::SIGCONT);
                pauses += 1;
                r.say(&format!(
                    "event {i}: aggregate {slot} paused past the session timeout"
                ));
            }
            Event::KillMerge => {
                merge.kill().unwrap();
                merge.wait().unwrap();
                merge = r.merge(&[]);
                merge_kills += 1;
                r.say(&format!("event {i}: SIGKILL merge, started again"));
            }
            Event::Broker => {
                let node = rng.gen_range(0..3u32).to_string();
                let res = if broker_faults % 2 == 0 {
                    r.c.try_script(&["kill", &node]).and_then(|_| {
                        std::thread::sleep(Duration::from_secs(3));
                        r.c.try_script(&["start-node", &node])
                    })
                } else {
                    r.c.try_script(&["restart", &node])
                };
                if let Err(e) = res {
                    r.say(&format!("broker fault failed: {e}"));
                    let _ = r.c.try_script(&["start"]);
                }
                broker_faults += 1;
                r.say(&format!("event {i}: broker {node} killed or restarted"));
            }
            Event::Scale => {
                if live.len() > 2 && (live.len() >= 4 || rng.gen_bool(0.5)) {
                    let mut c = aggs[slot].take().unwrap();
                    let code = stop(&mut c, "an aggregate process stopped cleanly");
                    r.say(&format!(
                        "event {i}: aggregate {slot} stopped cleanly (exit {code:?})"
                    ));
                } else {
                    let slot = aggs.iter().position(Option::is_none).unwrap_or(aggs.len());
                    if slot == aggs.len() {
                        aggs.push(None);
                    }
                    aggs[slot] = Some(r.aggregate(slot, &[]));
                    r.say(&format!("event {i}: aggregate {slot} added"));
                }
                scaled += 1;
            }
        }
    }
    let st = wait_deadline(&mut producer, Duration::from_secs(3600), "the producer");
    if !st.success() {
        producer_failed = Some(st);
    }
    for (slot, a) in aggs.iter_mut().enumerate() {
        if let Some(mut c) = a.take() {
            let code = match c.try_wait().unwrap() {
                Some(st) => st.code(),
                None => stop(&mut c, "an aggregate process"),
            };
            r.say(&format!("aggregate {slot} stopped: exit {code:?}"));
        }
    }
    let code = match merge.try_wait().unwrap() {
        Some(st) => st.code(),
        None => stop(&mut merge, "the merge"),
    };
    r.say(&format!("live merge stopped: exit {code:?}"));

    // The bounded finish: two aggregate processes to the end, the merge closes everything.
    let mut finish: Vec<Child> = (0..2)
        .map(|s| r.aggregate(10 + s, &["--until", "end"]))
        .collect();
    let mut last = r.merge(&["--until", "end", "--close-at-end"]);
    for c in finish.iter_mut() {
        let st = wait_deadline(c, Duration::from_secs(1800), "a bounded aggregate process");
        assert!(
            st.success(),
            "a bounded aggregate process failed ({st}); logs in {}",
            dir.display()
        );
    }
    let st = wait_deadline(&mut last, Duration::from_secs(1800), "the bounded merge");
    assert!(
        st.success(),
        "the bounded merge failed ({st}); logs in {}",
        dir.display()
    );

    let single = dir.join("single");
    let mut one = owned_command(BIN)
        .args(["run", "--brokers", &r.c.bootstrap, "--topic", TOPIC])
        .args(["--until", "end", "--close-at-end", "--metrics-addr", "off"])
        .arg("--out")
        .arg(&single)
        .arg("--state")
        .arg(dir.join("single-state"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_deadline(&mut one, Duration::from_secs(1800), "the backfill").success());

    let (merged, diff) = compare(&r, &dir.join("out"), &single, invoices);
    println!(
        "chaos-distributed: seed={seed} invoices={invoices} process_kills={kills} merge_kills={merge_kills} pauses={pauses} scale_changes={scaled} broker_faults={broker_faults} respawned_after_exit={respawned} rebalance_assignments={} files={merged} seconds={:.0} diff={diff}",
        r.assignments(),
        r.start.elapsed().as_secs_f64()
    );
    assert!(
        producer_failed.is_none(),
        "the producer failed: {producer_failed:?}"
    );
    assert_eq!(diff, 0, "differences: see {}/diff.txt", dir.display());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The merge's output against the single-process backfill and the reference: the number
/// of KPI files, and the number of differences (written to diff.txt).
fn compare(r: &Run, merged_out: &Path, single: &Path, invoices: u64) -> (usize, usize) {
    let merged = harness::kpi_files(merged_out);
    let one = harness::kpi_files(single);
    let records = read_back(&r.c, TOPIC);
    assert_eq!(
        records.len() as u64,
        invoices,
        "the topic holds another number of records"
    );
    let expected = reference(&records, &RefConfig::default());
    let mut report = String::new();
    let mut diff = 0;
    for (name, want) in [("one process", &one), ("reference", &expected.files)] {
        let keys: std::collections::BTreeSet<&String> = merged.keys().chain(want.keys()).collect();
        let n = keys
            .iter()
            .filter(|k| merged.get(**k) != want.get(**k))
            .count();
        if n > 0 {
            report.push_str(&format!(
                "vs {name}: {n} files differ\n{}\n",
                harness::diff(&merged, want)
            ));
        }
        diff += n;
    }
    let rejected = harness::rejected(merged_out);
    if rejected != expected.rejected {
        let n = rejected
            .keys()
            .chain(expected.rejected.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|k| rejected.get(k) != expected.rejected.get(k))
            .count();
        report.push_str(&format!("rejected records: {n} differ\n"));
        diff += n;
    }
    if diff > 0 {
        std::fs::write(r.dir.join("diff.txt"), report).unwrap();
    }
    (merged.len(), diff)
}
