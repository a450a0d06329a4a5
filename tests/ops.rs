//! Operations, through the real binary: metrics and health endpoints scraped from a running
//! job, settings precedence and secret masking, SIGTERM/SIGINT, JSON logs, every exit code,
//! and file modes; these need no broker (the unreachable-broker case uses an address
//! nothing listens on). The last test starts one real broker (the test support's cluster,
//! as `tests/kafka.rs` does) for the consumer lag, readiness and a stop of a live Kafka job,
//! and the warning when its advisory group commits fail.
//!
//! Running jobs read standard input, which the test keeps open, so the process is alive
//! while it is scraped or signalled; every wait polls for a condition with a deadline.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use test_support::cluster::{group_offset, Cluster};
use test_support::harness;
use test_support::http::get;
use test_support::process::{owned_command, wait_until};
use test_support::reference::{records_from_jsonl, reference, RefConfig};

const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");

/// The binary, with no `RETAIL_KPI_*` variable of the test's own environment.
fn bin() -> Command {
    let mut c = owned_command(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("RETAIL_KPI_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

fn generate(count: u64, extra: &[&str]) -> Vec<u8> {
    let out = bin()
        .args(["generate", "--count", &count.to_string()])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    out.stdout
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A job reading standard input, which stays open until `close_input` or the end.
struct Job {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
}

impl Job {
    /// `run --input -` with its output and state below `dir`.
    fn start(dir: &Path, extra: &[&str]) -> Job {
        let mut args: Vec<std::ffi::OsString> = ["run", "--input", "-", "--out"]
            .iter()
            .map(Into::into)
            .collect();
        args.push(dir.join("out").into());
        args.push("--state".into());
        args.push(dir.join("state").into());
        args.extend(extra.iter().map(Into::into));
        Job::spawn(&args)
    }

    fn spawn(args: &[std::ffi::OsString]) -> Job {
        let mut child = bin()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let stdin = child.stdin.take();
        Job {
            child,
            stdin,
            stderr,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.stdin.as_mut().unwrap().write_all(bytes).unwrap();
        self.stdin.as_mut().unwrap().flush().unwrap();
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The metrics address the job logged (it was started on port 0).
    fn metrics_addr(&mut self) -> String {
        let mut addr = None;
        wait_until(
            Duration::from_secs(20),
            "the job logs its metrics address",
            || {
                assert!(
                    self.child.try_wait().unwrap().is_none(),
                    "the job exited: {}",
                    self.stderr()
                );
                addr = self
                    .stderr()
                    .split("http://")
                    .nth(1)
                    .and_then(|rest| rest.split_once("/metrics").map(|(a, _)| a.to_owned()));
                addr.is_some()
            },
        );
        addr.unwrap()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Waits for the exit; returns its code and how long it took.
    fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let t0 = Instant::now();
        let mut status = None;
        wait_until(limit, "the job exits", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        (status.unwrap().code(), t0.elapsed())
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of the sample `series` (name with its labels as printed) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

fn must(scrape: &str, series: &str) -> f64 {
    sample(scrape, series).unwrap_or_else(|| panic!("{series} missing in\n{scrape}"))
}

fn inspect(state: &Path) -> serde_json::Value {
    let out = bin()
        .args(["state", "inspect", "--json", "--state"])
        .arg(state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn metrics_and_health_endpoints_report_the_running_job() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(
        600,
        &[
            "--seed",
            "7",
            "--late-fraction",
            "0.1",
            "--bad-fraction",
            "0.1",
        ],
    );
    let records = records_from_jsonl(&input);
    let n = records.len() as f64;
    let expected = reference(&records, &RefConfig::default());
    let mut by_reason: BTreeMap<&str, f64> = BTreeMap::new();
    for reason in expected.rejected.values() {
        *by_reason.entry(reason.as_str()).or_default() += 1.0;
    }
    let late = by_reason.get("late").copied().unwrap_or(0.0);
    assert!(late > 0.0 && by_reason.len() >= 3, "{by_reason:?}");
    let accepted = n - expected.rejected.len() as f64;

    let started_at = unix_now();
    let mut job = Job::start(
        dir.path(),
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--checkpoint-interval",
            "50ms",
        ],
    );
    let addr = job.metrics_addr();
    assert_eq!(get(&addr, "/healthz"), (200, "ok\n".into()));
    job.feed(&input);
    let mut scrape = String::new();
    wait_until(Duration::from_secs(30), "every line fed is read", || {
        scrape = get(&addr, "/metrics").1;
        sample(&scrape, "retail_kpi_records_read_total") == Some(n)
    });
    assert_eq!(must(&scrape, "retail_kpi_records_accepted_total"), accepted);
    for reason in [
        "too_large",
        "invalid_utf8",
        "invalid_json",
        "invalid_invoice",
        "future_timestamp",
        "late",
        "window_closed",
    ] {
        assert_eq!(
            must(
                &scrape,
                &format!("retail_kpi_records_rejected_total{{reason=\"{reason}\"}}")
            ),
            by_reason.get(reason).copied().unwrap_or(0.0),
            "{reason}"
        );
    }
    // Lateness: every accepted invoice within the grace, every late one beyond it.
    let h = "retail_kpi_invoice_lateness_seconds";
    assert_eq!(
        must(&scrape, &format!("{h}_count{{outcome=\"accepted\"}}")),
        accepted
    );
    assert_eq!(
        must(
            &scrape,
            &format!("{h}_bucket{{le=\"60.0\",outcome=\"accepted\"}}")
        ),
        accepted
    );
    assert_eq!(
        must(&scrape, &format!("{h}_count{{outcome=\"rejected\"}}")),
        late
    );
    assert_eq!(
        must(
            &scrape,
            &format!("{h}_bucket{{le=\"60.0\",outcome=\"rejected\"}}")
        ),
        0.0
    );
    assert!(must(&scrape, &format!("{h}_sum{{outcome=\"rejected\"}}")) > 60.0 * late);
    assert_eq!(must(&scrape, "retail_kpi_partitions_assigned"), 1.0);
    assert!(must(&scrape, "retail_kpi_open_windows") >= 1.0);
    assert_eq!(get(&addr, "/readyz"), (200, "ready\n".into()));
    assert_eq!(get(&addr, "/nothing-here").0, 404);

    // Files: the metric follows what is on disk once the checkpoints have caught up.
    let out = dir.path().join("out");
    wait_until(Duration::from_secs(30), "files written are counted", || {
        scrape = get(&addr, "/metrics").1;
        let files = harness::finished_kpi_files(&out) as f64;
        files > 0.0 && sample(&scrape, "retail_kpi_files_written_total") == Some(files)
    });
    let last = must(&scrape, "retail_kpi_last_file_written_timestamp_seconds");
    assert!(
        last >= started_at - 1.0 && last <= unix_now() + 1.0,
        "{last}"
    );
    let checkpoints = must(&scrape, "retail_kpi_checkpoints_total");
    assert!(checkpoints >= 1.0);
    assert_eq!(
        must(&scrape, "retail_kpi_checkpoint_duration_seconds_count"),
        checkpoints
    );
    assert!(must(&scrape, "retail_kpi_checkpoint_size_bytes_sum") > 0.0);
    let watermark = must(&scrape, "retail_kpi_watermark_timestamp_seconds");
    let lag = must(&scrape, "retail_kpi_watermark_lag_seconds");
    assert!(
        (unix_now() - watermark - lag).abs() < 60.0,
        "{watermark} {lag}"
    );

    job.signal(libc::SIGTERM);
    assert_eq!(job.wait_exit(Duration::from_secs(5)).0, Some(0));
    // The watermark is M_p − grace of the only partition, as the checkpoint holds it.
    let st = inspect(&dir.path().join("state"));
    let m_p = chrono::DateTime::parse_from_rfc3339(
        st["partitions"][0]["max_event_time"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(watermark, (m_p.timestamp_millis() as f64) / 1000.0 - 60.0);
}

#[test]
fn sigterm_sigint_and_sighup_checkpoint_what_was_read_and_exit_zero_within_5s() {
    // SIGHUP: regression (issue 9), it killed the job without a checkpoint or a log line.
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let dir = tempfile::tempdir().unwrap();
        let input = generate(500, &["--seed", "3", "--bad-fraction", "0.05"]);
        let n = records_from_jsonl(&input).len() as u64;
        // No checkpoint falls due on its own: whatever the state holds, the stop wrote.
        let mut job = Job::start(
            dir.path(),
            &[
                "--metrics-addr",
                "127.0.0.1:0",
                "--checkpoint-interval",
                "1h",
            ],
        );
        let addr = job.metrics_addr();
        job.feed(&input);
        wait_until(Duration::from_secs(30), "every line fed is read", || {
            sample(&get(&addr, "/metrics").1, "retail_kpi_records_read_total") == Some(n as f64)
        });
        job.signal(sig);
        let (code, took) = job.wait_exit(Duration::from_secs(5));
        assert_eq!(code, Some(0), "signal {sig}: {}", job.stderr());
        assert!(took < Duration::from_secs(5));
        assert!(job.stderr().contains("stop requested"), "{}", job.stderr());
        let st = inspect(&dir.path().join("state"));
        assert_eq!(st["counters"]["read"], n, "{st}");
        assert_eq!(st["partitions"][0]["next_offset"], n, "{st}");
        // Windows stay open: a stop is not the end of the input.
        assert!(st["open_windows"]["count"].as_u64().unwrap() > 0, "{st}");
    }
}

/// `config check` output: key -> (value, origin), keys of `[kafka]` prefixed `kafka.`.
fn settings(text: &str) -> BTreeMap<String, (String, String)> {
    let mut table = String::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('[') {
            table = line.trim_matches(['[', ']']).to_owned() + ".";
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (kv, origin) = line.rsplit_once(" # ").unwrap();
        let (k, v) = kv.split_once(" = ").unwrap();
        out.insert(
            format!("{table}{}", k.trim().trim_matches('"')),
            (v.trim().to_owned(), origin.trim().to_owned()),
        );
    }
    out
}

#[test]
fn settings_come_from_flag_then_environment_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("retail-kpi.toml");
    std::fs::write(
        &file,
        r#"
input = "invoices.jsonl"
out = "out-from-file"
state = "state-from-file"
grace = "30s"
checkpoint_interval = "7s"
max_items = 7
metrics_addr = "off"
log_format = "json"

[kafka]
"client.id" = "from-file"
"fetch.wait.max.ms" = 50
"sasl.password" = "file-secret-4242"
"#,
    )
    .unwrap();
    let out = bin()
        .args(["config", "check", "--config"])
        .arg(&file)
        .args(["--grace", "10s", "--out", "out-from-flag"])
        .args([
            "-X",
            "client.id=from-flag",
            "-X",
            "ssl.key.password=flag-secret-4242",
        ])
        .env("RETAIL_KPI_GRACE", "20s")
        .env("RETAIL_KPI_CHECKPOINT_INTERVAL", "3s")
        .env("RETAIL_KPI_OUT", "out-from-env")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let s = settings(&text);
    let is = |k: &str, v: &str, origin: &str| {
        assert_eq!(
            s.get(k),
            Some(&(v.to_owned(), origin.to_owned())),
            "{k} in\n{text}"
        )
    };
    is("grace", "\"10s\"", "flag"); // flag, env and file
    is("out", "\"out-from-flag\"", "flag"); // flag and env
    is("checkpoint_interval", "\"3s\"", "environment"); // env and file
    is("max_items", "7", "settings file");
    is("state", "\"state-from-file\"", "settings file");
    is("metrics_addr", "\"off\"", "settings file");
    is("log_format", "\"json\"", "settings file");
    is("max_future_skew", "\"1h\"", "default");
    is("max_record_bytes", "1048576", "default");
    is("kafka.client.id", "\"from-flag\"", "flag");
    is("kafka.fetch.wait.max.ms", "\"50\"", "settings file");
    is("kafka.sasl.password", "\"********\"", "settings file");
    is("kafka.ssl.key.password", "\"********\"", "flag");
    assert!(!text.contains("secret-4242"), "{text}");

    // The printed settings are a settings file that gives the same settings back.
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &text).unwrap();
    let out = bin()
        .args(["config", "check", "--config"])
        .arg(&again)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let s2 = settings(&String::from_utf8(out.stdout).unwrap());
    for k in [
        "grace",
        "out",
        "checkpoint_interval",
        "max_items",
        "kafka.client.id",
    ] {
        assert_eq!(s2[k].0, s[k].0, "{k}");
        assert_eq!(s2[k].1, "settings file", "{k}");
    }
}

#[test]
fn secrets_never_reach_the_logs_and_unreachable_brokers_exit_5_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    // The password is also the topic's name, so that it certainly shows in a log line and
    // an error message: both must mask it.
    let secret = "q7zx-Secret-Topic";
    let t0 = Instant::now();
    // Nothing listens on port 1: the metadata wait runs out after --connect-timeout.
    let out = bin()
        .args(["run", "--brokers", "127.0.0.1:1", "--topic", secret])
        .args([
            "--connect-timeout",
            "2s",
            "--metrics-addr",
            "off",
            "--log-format",
            "json",
        ])
        .arg("-X")
        .arg(format!("sasl.password={secret}"))
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let took = t0.elapsed();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(!err.contains("q7zx"), "a secret reached the logs:\n{err}");
    let says = "cannot read the metadata of topic `********` from 127.0.0.1:1 within 2s";
    let json_error = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR log line in\n{err}"));
    assert!(
        json_error["message"].as_str().unwrap().contains(says),
        "{json_error}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: source: ") && l.contains(says)),
        "{err}"
    );
}

#[test]
fn json_logs_are_json_lines_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, generate(50, &[])).unwrap();
    let out = bin()
        .args([
            "--log-format",
            "json",
            "run",
            "--metrics-addr",
            "off",
            "--input",
        ])
        .arg(&file)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(
            l["level"].is_string() && l["message"].is_string() && l.get("fields").is_none(),
            "{l}"
        );
    }
    let finished = lines
        .iter()
        .find(|l| l["message"] == "run finished")
        .expect("a `run finished` line");
    // Flat: a log collector indexes `records` without knowing the nesting.
    assert_eq!(finished["records"], 50);
    // One line per change of state, none per record.
    assert!(lines.len() < 10, "{err}");
}

fn run_code(args: &[&str], dir: &Path) -> (Option<i32>, String) {
    let out = bin().args(args).current_dir(dir).output().unwrap();
    (out.status.code(), stderr_of(&out))
}

#[test]
fn every_exit_code_is_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in.jsonl"), generate(50, &[])).unwrap();
    std::fs::write(d.join("a-file"), b"not a folder").unwrap();
    let ok_run = ["run", "--metrics-addr", "off", "--input", "in.jsonl"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut v: Vec<&str> = ok_run.to_vec();
        v.extend_from_slice(extra);
        v
    };

    // 0
    let (code, err) = run_code(&with(&["--out", "out0", "--state", "st0"]), d);
    assert_eq!(code, Some(0), "{err}");

    // 1: anything else, e.g. standard output that cannot be written.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = bin()
        .args(["generate", "--count", "100000"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    // The job's own summary on standard output: 1 too (it was 4, the output folder's).
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = bin()
        .args(with(&["--out", "o1", "--state", "s1", "--print-invoices"]))
        .current_dir(d)
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));

    // 2: flags and settings.
    for (args, says) in [
        (
            with(&["--out", "o", "--state", "s", "--no-such-flag"]),
            "--no-such-flag",
        ),
        (
            with(&["--out", "o", "--state", "s", "--grace", "soon"]),
            "soon",
        ),
        (
            with(&["--out", "o", "--state", "s", "--config", "missing.toml"]),
            "missing.toml",
        ),
        (with(&["--state", "s"]), "the output folder is not set"),
        // Durations past what the arithmetic or librdkafka takes (regression, issue 9:
        // they overflowed).
        (
            with(&["--out", "o", "--state", "s", "--grace", "4000days"]),
            "most this setting takes",
        ),
        (
            with(&["--out", "o", "--state", "s", "--connect-timeout", "25days"]),
            "most this setting takes",
        ),
        (
            vec![
                "run",
                "--input",
                "in.jsonl",
                "--out",
                "o",
                "--state",
                "s",
                "--metrics-addr",
                "nowhere",
            ],
            "nowhere",
        ),
        (
            vec![
                "run",
                "--brokers",
                "127.0.0.1:1",
                "--out",
                "o",
                "--state",
                "s",
            ],
            "the topic is not set",
        ),
    ] {
        let (code, err) = run_code(&args, d);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    std::fs::write(d.join("bad.toml"), "grace = \"1s\"\nmystery = 3\n").unwrap();
    let (code, err) = run_code(
        &with(&["--out", "o", "--state", "s", "--config", "bad.toml"]),
        d,
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("mystery"), "{err}");
    // librdkafka refuses a property before any connection is tried.
    let (code, err) = run_code(
        &[
            "run",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--metrics-addr",
            "off",
            "-X",
            "no.such.property=1",
            "--out",
            "o",
            "--state",
            "s",
        ],
        d,
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no.such.property"), "{err}");
    // A metrics address the operator chose and another process holds.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let (code, err) = run_code(
        &[
            "run",
            "--input",
            "in.jsonl",
            "--out",
            "o",
            "--state",
            "s",
            "--metrics-addr",
            &taken_addr,
        ],
        d,
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot listen for metrics"), "{err}");

    // 3: the state store.
    let (code, err) = run_code(&with(&["--out", "o3", "--state", "a-file"]), d);
    assert_eq!(code, Some(3), "{err}");
    let mut first = Job::start(&d.join("locked"), &["--metrics-addr", "off"]);
    let lock = d.join("locked/state/LOCK");
    wait_until(
        Duration::from_secs(20),
        "the first job opens its store",
        || lock.exists(),
    );
    let (code, err) = run_code(&with(&["--out", "o3b", "--state", "locked/state"]), d);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("in use by another retail-kpi process"),
        "{err}"
    );
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait_exit(Duration::from_secs(5)).0, Some(0));

    // 4: the output folder.
    let (code, err) = run_code(&with(&["--out", "a-file", "--state", "st4"]), d);
    assert_eq!(code, Some(4), "{err}");
    std::fs::create_dir_all(d.join("o4/time_kpi")).unwrap();
    std::fs::write(
        d.join("o4/time_kpi/2020-09-18T10-00.json"),
        b"other bytes\n",
    )
    .unwrap();
    let (code, err) = run_code(&with(&["--out", "o4", "--state", "st4b"]), d);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("already exists with other bytes"), "{err}");

    // 5: the input (the unreachable brokers: see the secrets test).
    let (code, err) = run_code(
        &[
            "run",
            "--metrics-addr",
            "off",
            "--input",
            "missing.jsonl",
            "--out",
            "o5",
            "--state",
            "st5",
        ],
        d,
    );
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains("missing.jsonl"), "{err}");
}

#[test]
fn modes_are_0700_for_state_and_0644_for_files_and_names_never_come_from_records() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let mut input = generate(100, &["--bad-fraction", "0.1"]);
    // A country and a record that look like paths.
    input.extend_from_slice(
        br#"{"invoice_no":1,"country":"../../escape","timestamp":"2020-09-18 10:01:00","type":"ORDER","items":[]}"#,
    );
    input.extend_from_slice(b"\n../../escape/x.json\n");
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, &input).unwrap();
    let mut cmd = bin();
    cmd.args(["run", "--metrics-addr", "off", "--input"])
        .arg(&file)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--state")
        .arg(dir.path().join("state"));
    // With no umask, the modes seen are the modes the job asks for.
    // SAFETY: umask(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("state")), 0o700);
    let mut files = Vec::new();
    let mut stack = vec![dir.path().join("out")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    assert!(files.len() > 2);
    for f in &files {
        assert_eq!(mode(f), 0o644, "{}", f.display());
        let rel = f.strip_prefix(dir.path().join("out")).unwrap();
        let rel = rel.to_str().unwrap();
        let named_by_time = |prefix: &str, suffix: &str| {
            rel.strip_prefix(prefix)
                .and_then(|r| r.strip_suffix(suffix))
                .is_some_and(|r| r.bytes().all(|b| b.is_ascii_digit() || b"-T".contains(&b)))
        };
        assert!(
            named_by_time("time_kpi/", ".json")
                || named_by_time("country_kpi/", ".json")
                || named_by_time("rejected/ckpt-", ".jsonl"),
            "unexpected output file {rel}"
        );
    }
    let top: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!top.iter().any(|n| n == "escape"), "{top:?}");
}

#[test]
fn kafka_consumer_lag_readiness_a_stop_and_failed_group_commits() {
    use retail_kpi::source::{Poll, Source};
    let broker = Cluster::start(
        std::env::temp_dir().join(format!("retail-kpi-test-ops-{}", std::process::id())),
        1,
    );
    let (partitions, n) = (2u32, 4000u64);
    let out = bin()
        .args(["produce", "--brokers", &broker.bootstrap, "--topic", "ops"])
        .args([
            "--partitions",
            &partitions.to_string(),
            "--count",
            &n.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));

    // The source's lag, one record at a time: the end offsets come from librdkafka's
    // statistics (once a second), so poll until both partitions have one.
    let mut k = retail_kpi::source::kafka::KafkaConfig::new(&broker.bootstrap, "ops");
    k.poll_wait = Duration::from_millis(200);
    let mut src = retail_kpi::source::kafka::KafkaSource::connect(k).unwrap();
    src.resume(&BTreeMap::new()).unwrap();
    let mut read = 0u64;
    let mut lag = None;
    wait_until(
        Duration::from_secs(30),
        "the lag of both partitions is known",
        || {
            let polled = src.poll(1, &mut |_| read += 1).unwrap();
            assert_ne!(polled, Poll::End);
            lag = src.lag().filter(|l| l.len() == partitions as usize);
            lag.is_some()
        },
    );
    let lag = lag.unwrap();
    assert!(read >= 1 && read < n, "{read}");
    assert_eq!(
        lag.values().sum::<u64>(),
        n - read,
        "{lag:?} after {read} records"
    );
    drop(src);

    // The live job: ready once it has caught up, the lag of each partition 0; then a
    // SIGTERM stops it with everything read in its checkpoint.
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<std::ffi::OsString> = vec![
        "run".into(),
        "--brokers".into(),
        broker.bootstrap.clone().into(),
        "--topic".into(),
        "ops".into(),
        "--out".into(),
        dir.path().join("out").into(),
        "--state".into(),
        dir.path().join("state").into(),
        "--metrics-addr".into(),
        "127.0.0.1:0".into(),
        "--ready-max-lag".into(),
        "0".into(),
        "--checkpoint-interval".into(),
        "1h".into(),
    ];
    let mut job = Job::spawn(&args);
    let addr = job.metrics_addr();
    wait_until(Duration::from_secs(60), "the live job is ready", || {
        get(&addr, "/readyz").0 == 200
    });
    let scrape = get(&addr, "/metrics").1;
    assert_eq!(must(&scrape, "retail_kpi_records_read_total"), n as f64);
    assert_eq!(must(&scrape, "retail_kpi_partitions_assigned"), 2.0);
    for p in 0..partitions {
        let series = format!("retail_kpi_consumer_lag_records{{partition=\"{p}\"}}");
        assert_eq!(must(&scrape, &series), 0.0, "{series}");
    }
    // Prometheus conventions: no `_total` on a gauge (the sum is `sum()` of the series).
    assert!(
        !scrape.contains("retail_kpi_consumer_lag_records_total"),
        "{scrape}"
    );
    assert_eq!(must(&scrape, "retail_kpi_ready"), 1.0);
    assert!(must(&scrape, "process_resident_memory_bytes") > 0.0);
    assert!(must(&scrape, "process_cpu_seconds_total") > 0.0);
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("retail_kpi_build_info{")
                && l.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
                && l.ends_with(" 1")),
        "{scrape}"
    );
    job.signal(libc::SIGTERM);
    let (code, took) = job.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", job.stderr());
    assert!(took < Duration::from_secs(5));
    let st = inspect(&dir.path().join("state"));
    assert_eq!(st["counters"]["read"], n, "{st}");
    let next: u64 = st["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["next_offset"].as_u64().unwrap())
        .sum();
    assert_eq!(next, n, "{st}");

    // The advisory group offsets: another consumer, an active member of the job's group,
    // makes each commit of the job fail ("Unknown member"). The job said nothing of it (its
    // asynchronous commits had no reply), so the group's lag stayed behind with no word
    // why; it must warn, naming the group and what to do. A group of its own: the job
    // above committed every offset to the default one when it stopped.
    const GROUP: &str = "ops-shared";
    let member: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    rdkafka::consumer::Consumer::subscribe(&member, &["ops"]).unwrap();
    wait_until(
        Duration::from_secs(60),
        "the other consumer joins the group",
        || {
            let _ = member.poll(Duration::from_millis(100));
            rdkafka::consumer::Consumer::assignment(&member).is_ok_and(|a| a.count() > 0)
        },
    );
    // It stays a member while polled.
    let member_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let polling = {
        let stop = Arc::clone(&member_stop);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = member.poll(Duration::from_millis(100));
            }
            // Dropped here: the consumer closes and leaves the group.
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let mut args = args.clone();
    let at = |flag: &str| args.iter().position(|a| a == flag).unwrap() + 1;
    let (out_at, state_at, every_at) = (at("--out"), at("--state"), at("--checkpoint-interval"));
    args[out_at] = dir.path().join("out").into();
    args[state_at] = dir.path().join("state").into();
    args[every_at] = "200ms".into();
    args.extend(["--group-id".into(), GROUP.into()]);
    let mut job = Job::spawn(&args);
    let warning = format!("advisory offset commit to consumer group `{GROUP}` failed");
    wait_until(
        Duration::from_secs(30),
        "the job warns that its group commits fail",
        || {
            assert!(
                job.child.try_wait().unwrap().is_none(),
                "the job exited: {}",
                job.stderr()
            );
            job.stderr().contains(&warning)
        },
    );
    let log = job.stderr();
    let line = log.lines().find(|l| l.contains(&warning)).unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("Unknown member"), "{line}");
    assert!(line.contains("--group-id"), "{line}");
    let group_sum = || {
        (0..partitions as i32)
            .map(|p| group_offset(&broker, GROUP, "ops", p).unwrap_or(0))
            .sum::<i64>()
    };
    // The member committed nothing (auto-commit off) and the job's commits were refused.
    assert_eq!(
        group_sum(),
        0,
        "the group holds offsets while the commits fail"
    );
    // The member leaves (its close leaves the group): the job, idle now, commits nothing
    // new, yet its offsets must reach the group, sent again until they are taken.
    member_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    polling.join().unwrap();
    wait_until(
        Duration::from_secs(30),
        "the job's offsets reach the group once the other member left",
        || group_sum() == n as i64,
    );
    // The answer reaches the job at one of its next polls.
    let recovered = format!("advisory offset commits to consumer group `{GROUP}` succeed again");
    wait_until(Duration::from_secs(10), "the job logs the recovery", || {
        job.stderr().contains(&recovered)
    });
    job.signal(libc::SIGTERM);
    let (code, _) = job.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", job.stderr());
}
