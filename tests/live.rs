//! The live page, the KPI API and `state inspect` on a running job (issue 13, items 1–4),
//! against a real broker and a real headless browser (Debian's chromium, driven by
//! `tests/browser/live_page.mjs` through playwright-core).
//!
//! A producer writes invoices in real time, ten seconds of event time per second, so a
//! minute closes every six seconds while the page is open. The test checks:
//! - the page shows closed minutes, and more appear while it is open (no reload);
//! - every figure the page shows equals the text of the same field in the API's row;
//! - the API's rows are, byte for byte, lines of the files the job ends up writing, and
//!   those files equal the independent reference of `tests/support`;
//! - `state inspect` answers while the job writes, with counters that only grow, and the
//!   job is not disturbed (it stops cleanly and its output is exact);
//! - `/api/v1/state` agrees with `state inspect --json`; bad API parameters answer 400.
//!
//! The page's screenshot is kept in the artifacts folder (see `artifacts`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use test_support::cluster::{inspect, job_command, read_back, wait_topic, Cluster};
use test_support::harness::{diff, kpi_files};
use test_support::http::get;
use test_support::process::{owned_command, poll_until, wait_deadline, wait_until, POLL};
use test_support::reference::{reference, RefConfig};

const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TOPIC: &str = "live";
const INVOICES: u64 = 15_000;
const START: &str = "2020-09-18 10:00:00";

/// Where the test keeps what a person may want to look at after a run (the screenshot):
/// `RETAIL_KPI_TEST_ARTIFACTS`, or `artifacts/` in Cargo's temporary folder of the target
/// (`/var/cache/retail-kpi/target/tmp/artifacts` in CI).
fn artifacts() -> PathBuf {
    let dir = std::env::var_os("RETAIL_KPI_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The browser driver's packages, installed from npm on first use (`scripts/test` does it
/// before the tests); Debian's chromium must be there.
fn browser_ready() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: this test drives a real headless browser; install it with `apt-get install chromium` (scripts/test does)"
    );
    let browser = Path::new(ROOT).join("tests/browser");
    if !browser.join("node_modules/playwright-core").exists() {
        let out = owned_command("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&browser)
            .output()
            .expect("npm is missing: install Node.js");
        assert!(
            out.status.success(),
            "npm ci in tests/browser failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The text of field `name` in a JSON line of the files, as written (numbers included).
fn field_text<'a>(line: &'a str, name: &str) -> &'a str {
    let key = format!("\"{name}\":");
    let at = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + key.len();
    let rest = &line[at..];
    if let Some(s) = rest.strip_prefix('"') {
        // A string: the page shows it without quotes (country names here need no escape).
        &s[..s.find('"').unwrap()]
    } else {
        &rest[..rest.find([',', '}']).unwrap()]
    }
}

/// The window start of a line, as the page and the API name it.
fn window_start(line: &str) -> &str {
    field_text(line, "start")
}

/// `GET /api/v1/kpi` for the windows starting in `[from, to)`; panics unless 200.
fn kpi(addr: &str, family: &str, from: &str, to: &str) -> String {
    let (status, body) = get(
        addr,
        &format!("/api/v1/kpi?family={family}&from={from}&to={to}"),
    );
    assert_eq!(status, 200, "{body}");
    body
}

/// RFC 3339 text of a window start plus `minutes`.
fn plus_minutes(start: &str, minutes: i64) -> String {
    let t =
        chrono::DateTime::parse_from_rfc3339(start).unwrap() + chrono::Duration::minutes(minutes);
    t.with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[test]
fn live_page_api_and_inspect_on_a_running_job() {
    browser_ready();
    let dir = tempfile::tempdir().unwrap();
    let (out, state) = (dir.path().join("out"), dir.path().join("state"));
    let c = Cluster::start(dir.path().join("kafka"), 1);

    // Real time: 500 records a second, 1,200 invoices a minute of event time.
    let mut producer = owned_command(BIN)
        .args(["produce", "--brokers", &c.bootstrap, "--topic", TOPIC])
        .args(["--partitions", "2", "--count", &INVOICES.to_string()])
        .args(["--rate", "500", "--event-rate", "1200", "--seed", "13"])
        .args(["--bad-fraction", "0.01", "--start", START])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("produce.log")).unwrap())
        .spawn()
        .unwrap();
    wait_topic(&c, TOPIC, 2);

    let log = dir.path().join("job.log");
    let mut job = job_command(
        BIN,
        &c,
        TOPIC,
        &out,
        &state,
        "200ms",
        &["--metrics-addr", "127.0.0.1:0"],
    )
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    let mut addr = String::new();
    wait_until(
        Duration::from_secs(60),
        "the job logs its HTTP address",
        || {
            assert!(
                job.try_wait().unwrap().is_none(),
                "the job exited: {}",
                std::fs::read_to_string(&log).unwrap()
            );
            let text = std::fs::read_to_string(&log).unwrap();
            if let Some(a) = text
                .split("http://")
                .nth(1)
                .and_then(|rest| rest.split_once("/metrics"))
            {
                addr = a.0.to_owned();
            }
            !addr.is_empty()
        },
    );

    // Bad parameters: 400 with what to do.
    for q in ["family=world", "family=time&from=now", ""] {
        let (status, body) = get(&addr, &format!("/api/v1/kpi?{q}"));
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body.contains("usage: /api/v1/kpi"), "{body}");
    }

    // The store is made and migrated by the job at its start; from its first checkpoint on
    // the API and inspect describe it.
    let mut last = (0, String::new());
    let committed = poll_until(Instant::now() + Duration::from_secs(60), POLL, || {
        last = get(&addr, "/api/v1/state");
        last.0 == 200 && last.1.contains("\"counters\"")
    });
    assert!(
        committed.is_some(),
        "no checkpoint: /api/v1/state answers {last:?}; the job's log:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );

    // The page, in a real browser, while the producer runs; meanwhile `state inspect`
    // reads the running job's store again and again.
    let shots = artifacts();
    let mut driver = owned_command("node")
        .arg(Path::new(ROOT).join("tests/browser/live_page.mjs"))
        .arg(format!("http://{addr}/"))
        .arg(&shots)
        .args(["2", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reads = Vec::new();
    while driver.try_wait().unwrap().is_none() {
        let v = inspect(BIN, &state);
        reads.push(
            v["counters"]["read"]
                .as_u64()
                .unwrap_or_else(|| panic!("{v}")),
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let page = driver.wait_with_output().unwrap();
    assert!(
        page.status.success(),
        "the browser driver failed:\n{}",
        String::from_utf8_lossy(&page.stderr)
    );
    let page: serde_json::Value = serde_json::from_slice(&page.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&page.stdout)));
    assert!(reads.len() >= 3, "state inspect ran {} times", reads.len());
    assert!(reads.windows(2).all(|w| w[0] <= w[1]), "{reads:?}");
    assert!(reads.last() > reads.first(), "{reads:?}");

    // Minutes appeared while the page was open.
    let set = |k: &str| -> BTreeSet<String> {
        page[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let (first, last) = (set("first_seen"), set("final_seen"));
    assert!(
        !first.is_empty() && last.is_superset(&first) && last.len() > first.len(),
        "{page}"
    );
    let screenshot = PathBuf::from(page["screenshot"].as_str().unwrap());
    let png = std::fs::read(&screenshot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        screenshot.display()
    );
    println!("screenshot of the live page: {}", screenshot.display());

    // Every closed minute on the page equals the API's row, field by field, as text.
    let closed: Vec<&serde_json::Value> = page["minutes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["provisional"] == false)
        .collect();
    assert!(closed.len() >= 2, "{page}");
    // The producer was still running: the open minutes are shown, marked provisional, and
    // after every closed one.
    let provisional: Vec<&str> = page["minutes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["provisional"] == true)
        .map(|m| m["start"].as_str().unwrap())
        .collect();
    assert!(!provisional.is_empty(), "{page}");
    assert!(
        provisional
            .iter()
            .all(|p| closed.iter().all(|c| c["start"].as_str().unwrap() < *p)),
        "{page}"
    );
    // The health shown is the job's: it had read records and knew its lag.
    assert_ne!(page["health"]["records_read"], "0", "{page}");
    assert_eq!(page["health"]["ready"], "ready", "{page}");
    let starts: BTreeSet<&str> = closed
        .iter()
        .map(|m| m["start"].as_str().unwrap())
        .collect();
    let (lo, hi) = (*starts.first().unwrap(), *starts.last().unwrap());
    let api_time = kpi(&addr, "time", lo, &plus_minutes(hi, 1));
    let rows: BTreeMap<&str, &str> = api_time.lines().map(|l| (window_start(l), l)).collect();
    for m in &closed {
        let start = m["start"].as_str().unwrap();
        let row = rows
            .get(start)
            .unwrap_or_else(|| panic!("{start} not in the API:\n{api_time}"));
        for f in [
            "OPM",
            "total_sale_volume",
            "average_transaction_size",
            "rate_of_return",
            "orders",
            "returns",
            "total_items",
        ] {
            assert_eq!(
                m["fields"][f].as_str(),
                Some(field_text(row, f)),
                "{start} {f}: {m} vs {row}"
            );
        }
    }
    let countries = page["countries"].as_array().unwrap();
    assert!(!countries.is_empty(), "{page}");
    let minute = countries[0]["start"].as_str().unwrap();
    let api_country = kpi(&addr, "country", minute, &plus_minutes(minute, 1));
    for c in countries {
        let name = c["country"].as_str().unwrap();
        let row = api_country
            .lines()
            .find(|l| field_text(l, "country") == name)
            .unwrap_or_else(|| panic!("{name} not in the API:\n{api_country}"));
        for f in [
            "OPM",
            "total_sale_volume",
            "rate_of_return",
            "orders",
            "returns",
            "total_items",
        ] {
            assert_eq!(
                c["fields"][f].as_str(),
                Some(field_text(row, f)),
                "{name} {f}"
            );
        }
    }

    // Everything read: the API's rows of the whole stream, and its view of the store.
    assert!(wait_deadline(&mut producer, Duration::from_secs(120), "the producer").success());
    wait_until(
        Duration::from_secs(60),
        "the job reads every record",
        || inspect(BIN, &state)["counters"]["read"] == INVOICES,
    );
    let (from, to) = ("2020-09-18T10:00:00Z", "2020-09-18T11:00:00Z");
    let api_rows = [
        kpi(&addr, "time", from, to),
        kpi(&addr, "country", from, to),
    ];
    let (status, body) = get(&addr, "/api/v1/state");
    assert_eq!(status, 200, "{body}");
    let api_state: serde_json::Value = serde_json::from_str(&body).unwrap();
    let inspected = inspect(BIN, &state);
    for k in ["schema_version", "source", "settings"] {
        assert_eq!(api_state[k], inspected[k], "{k}");
    }
    assert_eq!(api_state["counters"]["read"], INVOICES);

    // The grace advice counts every invoice that reached the time checks but those with a
    // future timestamp, and the job's own grace accepts at least what it did accept.
    let (status, body) = get(&addr, "/api/v1/live");
    assert_eq!(status, 200, "{body}");
    let health = serde_json::from_str::<serde_json::Value>(&body).unwrap()["health"].clone();
    let (status, body) = get(&addr, "/api/v1/advise/grace");
    assert_eq!(status, 200, "{body}");
    let advice: serde_json::Value = serde_json::from_str(&body).unwrap();
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("{v}"));
    let rejected = &health["rejected"];
    assert_eq!(
        n(&advice["counted"]),
        n(&health["records_accepted"]) + n(&rejected["late"]) + n(&rejected["window_closed"]),
        "{advice} {health}"
    );
    let options = advice["options"].as_array().unwrap();
    assert!(options
        .windows(2)
        .all(|w| n(&w[0]["accepted"]) <= n(&w[1]["accepted"])));
    assert!(options
        .iter()
        .all(|o| o["file_delay_seconds"] == o["grace_seconds"]));
    let current = options.iter().find(|o| o["grace_seconds"] == 60).unwrap();
    assert!(
        n(&current["accepted"]) >= n(&health["records_accepted"]),
        "{advice}"
    );

    // The job was not disturbed: it stops cleanly; a backfill on its store then closes
    // the rest, and the files are the reference's.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(job.id() as i32, libc::SIGTERM) }, 0);
    let status = wait_deadline(&mut job, Duration::from_secs(30), "the live job");
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let status = job_command(
        BIN,
        &c,
        TOPIC,
        &out,
        &state,
        "1s",
        &["--until", "end", "--close-at-end", "--metrics-addr", "off"],
    )
    .status()
    .unwrap();
    assert!(status.success());
    let files = kpi_files(&out);
    let want = reference(&read_back(&c, TOPIC), &RefConfig::default());
    assert!(files == want.files, "{}", diff(&files, &want.files));
    let file_lines: BTreeSet<&[u8]> = files
        .values()
        .flat_map(|b| b.split_inclusive(|c| *c == b'\n'))
        .collect();
    let mut minutes = BTreeSet::new();
    for rows in &api_rows {
        for line in rows.split_inclusive('\n') {
            assert!(
                file_lines.contains(line.as_bytes()),
                "an API row is no file's line: {line}"
            );
            minutes.insert(window_start(line).to_owned());
        }
    }
    // The live job had closed most of the 12.5 minutes of the stream.
    assert!(minutes.len() >= 8, "{minutes:?}");
}
