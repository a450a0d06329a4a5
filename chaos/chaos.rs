//! The chaos scenario of issue 4: exactly-once (SPEC §6) through SIGKILLs of the job and
//! kills, clean restarts and pauses of Kafka brokers, checked against the independent
//! reference of the test support (`tests/support/src/reference.rs`).
//!
//! A Cargo test target (`[[test]] name = "chaos"` in Cargo.toml) so that it can use the test
//! support and runs with `cargo test`: without settings it runs the short CI scenario;
//! `chaos/run` sets the long one. Settings (environment):
//!
//! | variable | CI default | meaning |
//! |---|---|---|
//! | CHAOS_SEED | 7 | seeds the fault plan and the generator |
//! | CHAOS_INVOICES | 120000 | records produced (malformed and late ones included) |
//! | CHAOS_RATE | 600 | records per second the producer sends |
//! | CHAOS_EVENT_RATE | 600 | invoices per minute of event time |
//! | CHAOS_JOB_KILLS | 12 | SIGKILLs of the live job |
//! | CHAOS_BROKER_FAULTS | 4 | broker SIGKILLs + clean restarts |
//! | CHAOS_PAUSES | 2 | broker SIGSTOP/SIGCONT |
//! | CHAOS_PARTITIONS | 6 | partitions of the topic (replication 3, min.insync.replicas 2) |
//! | CHAOS_CHECKPOINT_INTERVAL | 1s | the job's checkpoint interval |
//! | CHAOS_DIR | $TMPDIR/retail-kpi-chaos-<seed>-<pid> | work folder (cluster, out, state, logs) |
//!
//! The cluster runs on ports chosen free at its start. The work folder is deleted after a
//! clean run and kept, with `diff.txt`, after a failed one. The summary line is printed on
//! standard output in any case.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rdkafka::consumer::Consumer;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use test_support::cluster::{
    committed_records, high_watermarks, inspect, job_command, read_back, wait_topic, Cluster,
};
use test_support::process::{owned_command, signal, wait_deadline};
use test_support::reference::{reference, RefConfig, RefRecord};
use test_support::{env_or, harness};

const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");
const TOPIC: &str = "invoices";

struct Settings {
    seed: u64,
    invoices: u64,
    rate: f64,
    event_rate: f64,
    job_kills: u32,
    broker_faults: u32,
    pauses: u32,
    partitions: u32,
    checkpoint: String,
    checkpoint_ms: u64,
    dir: PathBuf,
}

impl Settings {
    fn from_env() -> Settings {
        let seed = env_or("CHAOS_SEED", 7u64);
        let checkpoint = env_or("CHAOS_CHECKPOINT_INTERVAL", "1s".to_string());
        let checkpoint_ms = humantime::parse_duration(&checkpoint)
            .expect("CHAOS_CHECKPOINT_INTERVAL: write it like 1s or 500ms")
            .as_millis() as u64;
        let dir = std::env::var_os("CHAOS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::temp_dir().join(format!("retail-kpi-chaos-{seed}-{}", std::process::id()))
            });
        Settings {
            seed,
            invoices: env_or("CHAOS_INVOICES", 120_000),
            rate: env_or("CHAOS_RATE", 600.0),
            event_rate: env_or("CHAOS_EVENT_RATE", 600.0),
            job_kills: env_or("CHAOS_JOB_KILLS", 12),
            broker_faults: env_or("CHAOS_BROKER_FAULTS", 4),
            pauses: env_or("CHAOS_PAUSES", 2),
            partitions: env_or("CHAOS_PARTITIONS", 6),
            checkpoint,
            checkpoint_ms,
            dir,
        }
    }

    /// How long the producer runs: the window in which faults are planned.
    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.invoices as f64 / self.rate)
    }
}

fn log(start: Instant, msg: &str) {
    println!("chaos [{:>7.1}s] {msg}", start.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------
// The job under a small supervisor
// ---------------------------------------------------------------------------------------

/// One run of the live job; its standard error goes to `logs/job-NNNN.log`, and the moment
/// its "first records processed" line arrives is noted for the recovery figures.
struct Incarnation {
    child: Child,
    spawned: Instant,
    first_records: Arc<Mutex<Option<Instant>>>,
}

struct Supervisor {
    dir: PathBuf,
    cmd: Box<dyn Fn() -> Command>,
    current: Option<Incarnation>,
    incarnations: u32,
    /// Exits the supervisor did not cause (status text), each followed by a restart.
    unexpected_exits: Vec<String>,
    /// Spawn to first record processed, of each incarnation that got that far.
    recovery_ms: Vec<f64>,
}

impl Supervisor {
    fn spawn(&mut self) {
        self.incarnations += 1;
        let log_path = self
            .dir
            .join(format!("logs/job-{:04}.log", self.incarnations));
        let mut child = (self.cmd)()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the job");
        let spawned = Instant::now();
        let first_records = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&first_records);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(log_path).unwrap();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("first records processed after start") {
                    seen.lock().unwrap().get_or_insert_with(Instant::now);
                }
                let _ = writeln!(file, "{line}");
            }
        });
        self.current = Some(Incarnation {
            child,
            spawned,
            first_records,
        });
    }

    fn retire(&mut self, inc: Incarnation) {
        if let Some(t) = *inc.first_records.lock().unwrap() {
            self.recovery_ms
                .push((t - inc.spawned).as_secs_f64() * 1000.0);
        }
    }

    /// Restarts the job if it exited by itself.
    fn watch(&mut self, start: Instant) {
        let exited = match &mut self.current {
            Some(inc) => inc.child.try_wait().unwrap(),
            None => return,
        };
        if let Some(st) = exited {
            let inc = self.current.take().unwrap();
            let msg = format!("job #{} exited by itself: {st}", self.incarnations);
            log(start, &msg);
            self.unexpected_exits.push(msg);
            self.retire(inc);
            // A supervisor's back-off before the restart, not a wait for a condition.
            std::thread::sleep(Duration::from_millis(500));
            self.spawn();
        }
    }

    /// SIGKILL; true if it hit a running process.
    fn kill(&mut self) -> bool {
        let Some(mut inc) = self.current.take() else {
            return false;
        };
        let alive = inc.child.try_wait().unwrap().is_none();
        let _ = inc.child.kill();
        let st = inc.child.wait().unwrap();
        if !alive {
            self.unexpected_exits
                .push(format!("job #{} had exited: {st}", self.incarnations));
        }
        self.retire(inc);
        alive
    }

    /// SIGTERM: the job must checkpoint and exit 0.
    fn terminate(&mut self) -> Result<(), String> {
        let mut inc = self.current.take().expect("a job runs");
        signal(&inc.child, libc::SIGTERM);
        let st = wait_deadline(&mut inc.child, Duration::from_secs(60), "job after SIGTERM");
        self.retire(inc);
        if st.success() {
            Ok(())
        } else {
            Err(format!("the job did not exit 0 on SIGTERM: {st}"))
        }
    }
}

/// A failed run must not leave a job behind (it would run on against the kept cluster).
impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(mut inc) = self.current.take() {
            let _ = inc.child.kill();
            let _ = inc.child.wait();
        }
    }
}

/// The producer, killed if the run fails before it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Broker faults
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    Restart,
    Pause,
}

#[derive(Clone, Copy, Debug)]
enum Target {
    /// The leader of a partition of the topic.
    Leader(u32),
    /// The active KRaft controller (every node is broker and controller).
    Controller,
    Node(u32),
}

#[derive(Default, Debug)]
struct BrokerStats {
    kills: u32,
    restarts: u32,
    pauses: u32,
    errors: Vec<String>,
}

/// The active controller's node id, from Kafka's own quorum tool.
fn active_controller(c: &Cluster) -> Option<u32> {
    let out = c
        .try_script(&[
            "class",
            "org.apache.kafka.tools.MetadataQuorumCommand",
            "--bootstrap-server",
            &c.bootstrap,
            "describe",
            "--status",
        ])
        .ok()?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("LeaderId:"))
        .and_then(|v| v.trim().parse().ok())
}

fn leader_of(c: &Cluster, probe: &rdkafka::consumer::BaseConsumer, p: u32) -> Option<u32> {
    let md = probe
        .fetch_metadata(Some(TOPIC), Duration::from_secs(5))
        .ok()?;
    let t = md.topics().iter().find(|t| t.name() == TOPIC)?;
    let l = t.partitions().iter().find(|x| x.id() == p as i32)?.leader();
    (0..c.brokers as i32).contains(&l).then_some(l as u32)
}

/// Waits (up to 90 s) until every partition has all replicas in sync, so that the next
/// fault never takes the last in-sync copy away: the scenario tests the job, not data loss
/// in Kafka under double faults.
fn wait_full_isr(c: &Cluster, probe: &rdkafka::consumer::BaseConsumer, partitions: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if let Ok(md) = probe.fetch_metadata(Some(TOPIC), Duration::from_secs(5)) {
            let full = md.topics().iter().any(|t| {
                t.name() == TOPIC
                    && t.partitions().len() == partitions as usize
                    && t.partitions()
                        .iter()
                        .all(|p| p.leader() >= 0 && p.isr().len() == c.brokers as usize)
            });
            if full {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

/// Runs the planned broker faults one after the other, each at its planned time or as
/// soon as the previous one has healed.
fn broker_chaos(
    c: Arc<Cluster>,
    plan: Vec<(Duration, Fault, Target, Duration)>,
    partitions: u32,
    (start, chaos_start): (Instant, Instant),
    mut rng: ChaCha8Rng,
) -> BrokerStats {
    let mut stats = BrokerStats::default();
    for (at, fault, target, hold) in plan {
        // The plan's moment for this fault, not a wait for a condition.
        if let Some(d) = at.checked_sub(chaos_start.elapsed()) {
            std::thread::sleep(d);
        }
        // A fresh client per fault (see cluster::high_watermarks).
        let probe = c.client();
        if !wait_full_isr(&c, &probe, partitions) {
            stats
                .errors
                .push("replicas did not get back in sync within 90 s".into());
        }
        let node = match target {
            Target::Leader(p) => leader_of(&c, &probe, p),
            Target::Controller => active_controller(&c),
            Target::Node(n) => Some(n),
        }
        .unwrap_or_else(|| rng.gen_range(0..c.brokers));
        let n = node.to_string();
        log(start, &format!("broker {fault:?} node {n} ({target:?})"));
        // `hold`: how long the fault lasts, drawn from the seed; the subject, not a wait.
        let res = match fault {
            Fault::Kill => c.try_script(&["kill", &n]).and_then(|_| {
                std::thread::sleep(hold);
                c.try_script(&["start-node", &n])
            }),
            Fault::Restart => c.try_script(&["restart", &n]),
            Fault::Pause => c.try_script(&["pause", &n]).and_then(|_| {
                std::thread::sleep(hold);
                c.try_script(&["resume", &n])
            }),
        };
        match res {
            Ok(_) => match fault {
                Fault::Kill => stats.kills += 1,
                Fault::Restart => stats.restarts += 1,
                Fault::Pause => stats.pauses += 1,
            },
            Err(e) => {
                log(start, &format!("broker fault failed: {e}"));
                stats.errors.push(e);
                // Bring every node back (start is idempotent: starts killed, resumes paused).
                let _ = c.try_script(&["start"]);
            }
        }
        log(start, &format!("broker {fault:?} node {n} healed"));
    }
    stats
}

// ---------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------

/// Every rejected line: (partition, offset) -> reasons, one per time it was written.
fn rejected_lines(out: &Path) -> BTreeMap<(u32, i64), Vec<String>> {
    let mut all: BTreeMap<(u32, i64), Vec<String>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(out.join("rejected")) else {
        return all;
    };
    for e in entries {
        let e = e.unwrap();
        for line in std::fs::read_to_string(e.path()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let key = (
                v["partition"].as_u64().unwrap() as u32,
                v["offset"].as_i64().unwrap(),
            );
            all.entry(key)
                .or_default()
                .push(v["reason"].as_str().unwrap_or("?").to_owned());
        }
    }
    all
}

/// Writes the differences to `report`; returns their number.
fn compare(out: &Path, records: &[RefRecord], report: &mut String) -> (usize, usize) {
    let expected = reference(records, &RefConfig::default());
    let got = harness::kpi_files(out);
    let mut diffs = 0;
    for k in got
        .keys()
        .chain(expected.files.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if got.get(k) != expected.files.get(k) {
            diffs += 1;
        }
    }
    if diffs > 0 {
        report.push_str("KPI files, job (left) vs reference (right):\n");
        report.push_str(&harness::diff(&got, &expected.files));
    }
    let rejected = rejected_lines(out);
    for (key, reasons) in &rejected {
        let want = expected.rejected.get(key);
        if reasons.len() != 1 || want != Some(&reasons[0]) {
            diffs += 1;
            if diffs < 200 {
                let _ = writeln!(
                    report,
                    "rejected {key:?}: job wrote {reasons:?}, reference {want:?}"
                );
            }
        }
    }
    for (key, want) in &expected.rejected {
        if !rejected.contains_key(key) {
            diffs += 1;
            if diffs < 200 {
                let _ = writeln!(report, "rejected {key:?}: missing, reference says {want}");
            }
        }
    }
    (diffs, expected.files.len())
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

// ---------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------

#[test]
fn chaos_scenario() {
    let s = Settings::from_env();
    let start = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    std::fs::create_dir_all(s.dir.join("logs")).unwrap();
    let (out, state) = (s.dir.join("out"), s.dir.join("state"));
    log(
        start,
        &format!(
            "seed={} invoices={} rate={}/s partitions={} job_kills={} broker_faults={} pauses={} dir={}",
            s.seed, s.invoices, s.rate, s.partitions, s.job_kills, s.broker_faults, s.pauses,
            s.dir.display()
        ),
    );

    // The job, producer and inspect run from a copy of the binary: others may rebuild the
    // shared target folder during a long run, and every restart must run the same build.
    let bin = s.dir.join("retail-kpi");
    std::fs::copy(BIN, &bin).expect("cannot copy the retail-kpi binary");
    let bin = bin.to_str().unwrap().to_owned();

    let c = Arc::new(Cluster::start(s.dir.join("kafka"), 3));
    // Kept unless the run ends clean: a panic anywhere leaves everything to investigate.
    c.keep.store(true, Ordering::SeqCst);
    // Replication 3, min.insync.replicas 2 (scripts/kafka's default for 3 brokers).
    c.script(&[
        "create-topic",
        TOPIC,
        "--partitions",
        &s.partitions.to_string(),
        "--replication",
        "3",
        "--config",
        "min.insync.replicas=2",
    ]);
    wait_topic(&c, TOPIC, s.partitions as usize);
    log(start, "cluster up, topic created");

    // The plan, all drawn from the seed before anything runs.
    let chaos_len = s.duration();
    let span = chaos_len.as_secs_f64();
    let mut kill_times: Vec<f64> = (0..s.job_kills)
        .map(|_| rng.gen_range(span * 0.02..span * 0.97))
        .collect();
    kill_times.sort_by(|a, b| a.total_cmp(b));
    let kill_pauses: Vec<u64> = (0..s.job_kills).map(|_| rng.gen_range(0..=2_000)).collect();
    let mut faults: Vec<Fault> = (0..s.broker_faults)
        .map(|i| match i % 3 {
            2 => Fault::Restart,
            _ => Fault::Kill,
        })
        .chain((0..s.pauses).map(|_| Fault::Pause))
        .collect();
    // Shuffle (Fisher–Yates with the seeded generator).
    for i in (1..faults.len()).rev() {
        let j = rng.gen_range(0..=i as u32) as usize;
        faults.swap(i, j);
    }
    let slot = span * 0.9 / faults.len().max(1) as f64;
    let broker_plan: Vec<(Duration, Fault, Target, Duration)> = faults
        .iter()
        .enumerate()
        .map(|(i, &f)| {
            let at = span * 0.03 + slot * i as f64 + rng.gen_range(0.0..slot * 0.5);
            // The first kill or restart hits a partition leader, the second the active
            // controller; later ones (and pauses) one of the three kinds at random.
            let nth_fault = faults[..i]
                .iter()
                .filter(|f| !matches!(f, Fault::Pause))
                .count();
            let kind = match (f, nth_fault) {
                (Fault::Pause, _) | (_, 2..) => rng.gen_range(0..3u32),
                (_, k) => k as u32,
            };
            let target = match kind {
                0 => Target::Leader(rng.gen_range(0..s.partitions)),
                1 => Target::Controller,
                _ => Target::Node(rng.gen_range(0..3)),
            };
            let hold = match f {
                Fault::Kill => Duration::from_millis(rng.gen_range(500..5_000)),
                Fault::Pause => Duration::from_millis(rng.gen_range(1_000..12_000)),
                Fault::Restart => Duration::ZERO,
            };
            (Duration::from_secs_f64(at), f, target, hold)
        })
        .collect();
    let broker_rng = ChaCha8Rng::seed_from_u64(rng.gen());

    // The producer: out-of-order, late and malformed records at a set rate.
    let producer_log = std::fs::File::create(s.dir.join("logs/producer.log")).unwrap();
    let mut producer = KillOnDrop(
        owned_command(BIN)
            .args(["produce", "--brokers", &c.bootstrap, "--topic", TOPIC])
            .args([
                "--partitions",
                &s.partitions.to_string(),
                "--replication",
                "3",
            ])
            .args([
                "--count",
                &s.invoices.to_string(),
                "--seed",
                &s.seed.to_string(),
            ])
            .args([
                "--rate",
                &s.rate.to_string(),
                "--event-rate",
                &s.event_rate.to_string(),
            ])
            .args(["--late-fraction", "0.01", "--bad-fraction", "0.01"])
            .stdout(Stdio::null())
            .stderr(producer_log)
            .spawn()
            .unwrap(),
    );
    let chaos_start = Instant::now();

    let mut sup = Supervisor {
        dir: s.dir.clone(),
        cmd: {
            let (c, out, state, cp, bin) = (
                Arc::clone(&c),
                out.clone(),
                state.clone(),
                s.checkpoint.clone(),
                bin.clone(),
            );
            // A long idle timeout: the idle rule is the only timing-dependent part of the
            // output (SPEC §6), and this run tests exactly-once, not timing.
            Box::new(move || {
                job_command(
                    &bin,
                    &c,
                    TOPIC,
                    &out,
                    &state,
                    &cp,
                    &["--idle-timeout", "1h"],
                )
            })
        },
        current: None,
        incarnations: 0,
        unexpected_exits: Vec::new(),
        recovery_ms: Vec::new(),
    };
    sup.spawn();

    let brokers = {
        let c = Arc::clone(&c);
        let parts = s.partitions;
        std::thread::spawn(move || {
            broker_chaos(c, broker_plan, parts, (start, chaos_start), broker_rng)
        })
    };

    // Job kills at the planned moments; before each, the topic's end offsets (an upper
    // bound of what the job had read), after it the committed offsets: their difference
    // bounds the records the next run reads again.
    let mut job_kills = 0u32;
    let mut replayed: Vec<f64> = Vec::new();
    for (k, &at) in kill_times.iter().enumerate() {
        // Until the plan's moment for this kill (not a condition), restarting a job that
        // exited by itself meanwhile.
        while chaos_start.elapsed().as_secs_f64() < at {
            sup.watch(start);
            std::thread::sleep(Duration::from_millis(20));
        }
        let high = high_watermarks(&c, TOPIC, s.partitions, Duration::from_millis(500)).ok();
        let ran_long = sup.current.as_ref().is_some_and(|i| {
            i.first_records
                .lock()
                .unwrap()
                .is_some_and(|t| t.elapsed() > Duration::from_millis(3 * s.checkpoint_ms))
        });
        if sup.kill() {
            job_kills += 1;
        }
        let committed = committed_records(&inspect(&bin, &state));
        // Only kills of a job that was past recovery measure the steady state.
        if let (Some(h), true) = (high, ran_long) {
            replayed.push((h.values().sum::<i64>() - committed).max(0) as f64);
        }
        // The planned pause before the restart (drawn from the seed), not a wait.
        std::thread::sleep(Duration::from_millis(kill_pauses[k]));
        sup.spawn();
    }
    log(
        start,
        &format!("{job_kills} job kills done; waiting for the producer"),
    );

    // The end: the producer finishes, the brokers heal, the job catches up and stops.
    let st = wait_deadline(
        &mut producer.0,
        chaos_len + Duration::from_secs(900),
        "the producer",
    );
    let mut failures: Vec<String> = Vec::new();
    if !st.success() {
        failures.push(format!("the producer failed: {st}"));
    }
    let bstats = brokers.join().expect("broker chaos thread panicked");
    let _ = c.try_script(&["start"]);
    log(
        start,
        "producer done, brokers healed; letting the job catch up",
    );
    // Right after a broker restart a request may fail at once: ask again until it answers.
    let asked = Instant::now();
    let ends = loop {
        match high_watermarks(&c, TOPIC, s.partitions, Duration::from_secs(10)) {
            Ok(e) => break e,
            Err(e) => assert!(
                asked.elapsed() < Duration::from_secs(180),
                "no end offsets within 180 s after the run: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let group: rdkafka::consumer::BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .set("group.id", format!("retail-kpi.{TOPIC}"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..s.partitions {
        tpl.add_partition(TOPIC, p as i32);
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let caught_up = loop {
        sup.watch(start);
        // Kafka group offsets are written after each checkpoint, for lag monitoring.
        let done = group
            .committed_offsets(tpl.clone(), Duration::from_secs(5))
            .is_ok_and(|c| {
                c.elements().iter().all(|e| {
                    matches!(e.offset(), rdkafka::Offset::Offset(o) if o >= ends[&(e.partition() as u32)])
                })
            });
        if done {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !caught_up {
        log(
            start,
            "the job did not catch up within 300 s (the backfill finishes it)",
        );
    }
    if let Err(e) = sup.terminate() {
        failures.push(e);
    }
    // Close the remaining windows: a backfill on the same state.
    let backfill_log = std::fs::File::create(s.dir.join("logs/backfill.log")).unwrap();
    let mut bf = job_command(
        &bin,
        &c,
        TOPIC,
        &out,
        &state,
        &s.checkpoint,
        &["--until", "end", "--close-at-end"],
    )
    .stdout(Stdio::null())
    .stderr(backfill_log)
    .spawn()
    .unwrap();
    let st = wait_deadline(&mut bf, Duration::from_secs(900), "the backfill");
    if !st.success() {
        failures.push(format!("the backfill failed: {st}"));
    }
    log(start, "backfill done; reading the topic back");

    let records = read_back(&c, TOPIC);
    if records.len() as u64 != s.invoices {
        failures.push(format!(
            "the topic holds {} records, the producer sent {}",
            records.len(),
            s.invoices
        ));
    }
    log(
        start,
        &format!(
            "{} records read back; computing the reference",
            records.len()
        ),
    );
    let mut report = String::new();
    let (diffs, files) = compare(&out, &records, &mut report);
    drop(records);

    let summary = format!(
        "chaos: seed={} invoices={} job_kills={} broker_kills={} broker_restarts={} pauses={} files={} diff={}",
        s.seed, s.invoices, job_kills, bstats.kills, bstats.restarts, bstats.pauses, files, diffs
    );
    let per_interval = s.rate * s.checkpoint_ms as f64 / 1000.0;
    let mut rec = sup.recovery_ms.clone();
    let recovery = format!(
        "chaos: recovery runs={} first_record_ms median={:.0} p90={:.0} max={:.0}; \
         replayed_records (upper bound, {} kills of a running job) median={:.0} p90={:.0} max={:.0} \
         = {:.2} checkpoint intervals at {} records/s",
        rec.len(),
        percentile(&mut rec, 0.5),
        percentile(&mut rec, 0.9),
        percentile(&mut rec, 1.0),
        replayed.len(),
        percentile(&mut replayed, 0.5),
        percentile(&mut replayed, 0.9),
        percentile(&mut replayed, 1.0),
        percentile(&mut replayed, 1.0) / per_interval,
        s.rate
    );
    println!("{recovery}");
    if !sup.unexpected_exits.is_empty() {
        println!(
            "chaos: job exits not caused by the harness: {:?}",
            sup.unexpected_exits
        );
    }
    if !bstats.errors.is_empty() {
        println!("chaos: broker fault errors: {:?}", bstats.errors);
    }
    println!("{summary}");
    log(start, "done");

    if job_kills < s.job_kills {
        failures.push(format!(
            "only {job_kills} of {} job kills hit a running job",
            s.job_kills
        ));
    }
    if diffs > 0 || !failures.is_empty() {
        let _ = writeln!(report, "{}", failures.join("\n"));
        let _ = writeln!(report, "{summary}");
        std::fs::write(s.dir.join("diff.txt"), &report).unwrap();
        panic!(
            "chaos run failed: {} difference(s), {:?}; kept {} (diff.txt, out/, state/, logs/, kafka/)",
            diffs,
            failures,
            s.dir.display()
        );
    }
    // A clean run: the cluster folder goes when the last handle drops.
    c.keep.store(false, Ordering::SeqCst);
    drop(sup);
    drop(c);
    if std::env::var_os("CHAOS_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&s.dir);
    }
}
