//! Output bytes pinned: the KPI files and rejected records of `run --input` on a spread of
//! generated inputs, and of a Kafka backfill, compared byte for byte with the corpus in
//! `tests/fixtures/regression/` that the job wrote before the reshaping of issue 10.
//!
//! Each case names the exact commands; the input itself is not committed (it is
//! megabytes), only its length and XXH3-128, so a change of the generator is caught here too
//! rather than passing as a change of output. The rejected records are compared as one
//! sorted list of lines: which checkpoint holds a record (the file it lands in) depends on
//! timing, its bytes do not.
//!
//! `RETAIL_KPI_BLESS=1 cargo test --release --test regression` writes the corpus again:
//! only on purpose, when an output change is meant, and say so in the commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use test_support::cluster::{read_back, wait_topic, Cluster};
use test_support::harness;
use test_support::process::{owned_command, wait_deadline};

const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/regression");

/// `generate` arguments of each file case.
const FILE_CASES: &[(&str, &[&str])] = &[
    // Dense: the invoices of about a minute of event time in one burst.
    (
        "dense-s1",
        &[
            "--count",
            "6000",
            "--rate",
            "5000",
            "--seed",
            "1",
            "--late-fraction",
            "0.02",
            "--bad-fraction",
            "0.02",
        ],
    ),
    (
        "dense-s2",
        &[
            "--count",
            "6000",
            "--rate",
            "5000",
            "--seed",
            "2",
            "--late-fraction",
            "0.02",
            "--bad-fraction",
            "0.02",
        ],
    ),
    (
        "dense-s3",
        &[
            "--count",
            "6000",
            "--rate",
            "5000",
            "--seed",
            "3",
            "--late-fraction",
            "0.05",
            "--bad-fraction",
            "0.05",
        ],
    ),
    // Realistic: ten invoices a minute over hours, so many buckets and closes.
    (
        "realistic-s1",
        &[
            "--count",
            "2000",
            "--rate",
            "10",
            "--seed",
            "1",
            "--late-fraction",
            "0.02",
            "--bad-fraction",
            "0.02",
        ],
    ),
    (
        "realistic-s2",
        &[
            "--count",
            "2000",
            "--rate",
            "10",
            "--seed",
            "2",
            "--late-fraction",
            "0.02",
            "--bad-fraction",
            "0.02",
        ],
    ),
    (
        "realistic-s3",
        &[
            "--count",
            "2000",
            "--rate",
            "10",
            "--seed",
            "3",
            "--late-fraction",
            "0.05",
            "--bad-fraction",
            "0.05",
        ],
    ),
    // Clean: no late or bad record at all.
    (
        "clean-s7",
        &["--count", "3000", "--rate", "60", "--seed", "7"],
    ),
];

fn bless() -> bool {
    std::env::var_os("RETAIL_KPI_BLESS").is_some_and(|v| v == "1")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "retail-kpi-regression-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What a case's output folder holds: relative path -> bytes, the rejected records as one
/// file `rejected.jsonl` of sorted lines.
fn outputs(out: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = harness::kpi_files(out);
    let mut lines: Vec<Vec<u8>> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(out.join("rejected")) {
        for e in entries {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            lines.extend(bytes.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec));
        }
    }
    lines.sort();
    files.insert("rejected.jsonl".into(), lines.concat());
    files
}

fn fingerprint(bytes: &[u8]) -> String {
    format!(
        "bytes={} xxh3-128={:032x}\n",
        bytes.len(),
        xxhash_rust::xxh3::xxh3_128(bytes)
    )
}

/// The recorded corpus of a case, or (blessing) records `got` as it.
fn check(case: &str, input_fingerprint: &str, got: BTreeMap<String, Vec<u8>>) {
    let dir = Path::new(FIXTURES).join(case);
    if bless() {
        let _ = std::fs::remove_dir_all(&dir);
        for (rel, bytes) in &got {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        std::fs::write(dir.join("input.fingerprint"), input_fingerprint).unwrap();
        return;
    }
    let recorded = std::fs::read_to_string(dir.join("input.fingerprint"))
        .unwrap_or_else(|e| panic!("{case}: no recorded corpus in {} ({e})", dir.display()));
    assert_eq!(
        recorded, input_fingerprint,
        "{case}: the generator wrote other input bytes than when the corpus was recorded"
    );
    let mut want = outputs(&dir);
    // `outputs` reads the recorded rejected.jsonl as a KPI-less folder: take it directly.
    want.insert(
        "rejected.jsonl".into(),
        std::fs::read(dir.join("rejected.jsonl")).unwrap(),
    );
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{case}: other output files than recorded"
    );
    for (rel, bytes) in &want {
        assert!(
            got[rel] == *bytes,
            "{case}: {rel} differs from the recorded corpus ({} bytes recorded, {} now)",
            bytes.len(),
            got[rel].len()
        );
    }
}

fn run_ok(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The Parquet encoding (issue 12) pinned as well: a change of the parquet crate that
/// changes the bytes of a file shows here, not as an exit-4 conflict when a restarted job
/// writes a file again after an upgrade.
#[test]
fn parquet_files_are_the_recorded_bytes() {
    let case = "realistic-s3-parquet";
    let (_, args) = FILE_CASES
        .iter()
        .find(|(c, _)| *c == "realistic-s3")
        .expect("the realistic-s3 case");
    let dir = scratch(case);
    let input = run_ok(owned_command(BIN).arg("generate").args(*args), "generate");
    let path = dir.join("input.jsonl");
    std::fs::write(&path, &input).unwrap();
    let out = dir.join("out");
    run_ok(
        owned_command(BIN)
            .current_dir(&dir)
            .args(["run", "--metrics-addr", "off", "--format", "parquet"])
            .args(["--input", "input.jsonl", "--out"])
            .arg(&out)
            .arg("--state")
            .arg(dir.join("state")),
        "run --format parquet",
    );
    let got = outputs(&out);
    assert!(got
        .keys()
        .all(|k| k == "rejected.jsonl" || k.ends_with(".parquet")));
    check(case, &fingerprint(&input), got);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Each case decoded on the loop's thread (`--threads 1`) and on a pool of 2 threads
/// (issue 11): the output must not depend on it.
#[test]
fn file_runs_write_the_recorded_bytes() {
    for (case, args) in FILE_CASES {
        let dir = scratch(case);
        let input = run_ok(owned_command(BIN).arg("generate").args(*args), "generate");
        let path = dir.join("input.jsonl");
        std::fs::write(&path, &input).unwrap();
        for threads in ["1", "2"] {
            let out = dir.join(format!("out-{threads}"));
            // A relative input path: the rejected records name it as their topic.
            run_ok(
                owned_command(BIN)
                    .current_dir(&dir)
                    .args(["run", "--metrics-addr", "off", "--input", "input.jsonl"])
                    .args(["--threads", threads, "--out"])
                    .arg(&out)
                    .arg("--state")
                    .arg(dir.join(format!("state-{threads}"))),
                "run --input",
            );
            if bless() && threads != "1" {
                continue;
            }
            check(case, &fingerprint(&input), outputs(&out));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn kafka_backfill_writes_the_recorded_bytes() {
    let dir = scratch("kafka");
    let c = Cluster::start(dir.join("kafka"), 1);
    let produce = [
        "--topic",
        "invoices",
        "--partitions",
        "3",
        "--count",
        "6000",
        "--seed",
        "11",
        "--event-rate",
        "120",
        "--late-fraction",
        "0.02",
        "--bad-fraction",
        "0.02",
    ];
    run_ok(
        owned_command(BIN)
            .args(["produce", "--brokers", &c.bootstrap])
            .args(produce),
        "produce",
    );
    wait_topic(&c, "invoices", 3);
    let out = dir.join("out");
    let mut job = owned_command(BIN);
    job.args([
        "run",
        "--metrics-addr",
        "off",
        "--brokers",
        &c.bootstrap,
        "--topic",
        "invoices",
    ])
    .args(["--until", "end", "--close-at-end", "--idle-timeout", "1h"])
    .arg("--out")
    .arg(&out)
    .arg("--state")
    .arg(dir.join("state"))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = job.spawn().unwrap();
    let st = wait_deadline(&mut child, Duration::from_secs(240), "backfill");
    assert!(st.success(), "backfill failed: {st}");
    // The records' bytes are fixed by the seed; their partitions and offsets by the
    // producer's round robin over one fresh topic.
    let mut input = read_back(&c, "invoices");
    input.sort_by_key(|r| (r.partition, r.offset));
    let mut all = Vec::new();
    for r in &input {
        all.extend_from_slice(format!("{} {} ", r.partition, r.offset).as_bytes());
        all.extend_from_slice(&r.value);
        all.push(b'\n');
    }
    check("kafka-backfill", &fingerprint(&all), outputs(&out));
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}
