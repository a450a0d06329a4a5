//! End to end through the real binary: 100,000 generated invoices, the job killed with
//! SIGKILL mid-run at least three times and restarted; the output must be byte-identical
//! to an uninterrupted run and equal to the independent reference.
//!
//! "Mid-run" is made certain rather than hoped for: the killed runs read standard input,
//! which the test feeds in chunks, so the process is alive and working when it is killed
//! (the test checks it had not exited); each restart is fed the same input from line 0 and
//! must skip what its checkpoint already holds.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use test_support::harness;
use test_support::process::{owned_command, wait_until};
use test_support::reference::{records_from_jsonl, reference, RefConfig};

const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");

fn generate(count: u64, seed: u64, extra: &[&str]) -> Vec<u8> {
    let out = owned_command(BIN)
        .args([
            "generate",
            "--count",
            &count.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn run_file(input: &Path, out: &Path, state: &Path) {
    let st = owned_command(BIN)
        // Both encodings: the Parquet files come out of the kills byte-identical too.
        .args(["run", "--format", "both", "--input"])
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--state")
        .arg(state)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

/// Starts a run on standard input, feeds `chunks` chunks of the input, then kills it.
/// Returns whether the process was still running when killed.
fn run_stdin_and_kill(input: &[u8], out: &Path, state: &Path, chunks: usize) -> bool {
    let mut child = owned_command(BIN)
        .args([
            "run",
            "--format",
            "both",
            "--input",
            "-",
            "--checkpoint-interval",
            "20ms",
            "--out",
        ])
        .arg(out)
        .arg("--state")
        .arg(state)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let files_before = harness::finished_kpi_files(out);
    let chunk = input.len() / 40 + 1;
    for part in input.chunks(chunk).take(chunks) {
        if stdin.write_all(part).is_err() {
            break;
        }
        // Pacing, not a wait: the input arrives as a stream, so that the job checkpoints
        // between chunks and the kill lands at varying points.
        std::thread::sleep(Duration::from_millis(30));
    }
    // Certain, not hoped for: this run has got a file further before it is killed (each
    // run's chunks close buckets past what the previous run wrote).
    wait_until(Duration::from_secs(60), "the fed run writes a file", || {
        child.try_wait().unwrap().is_some() || harness::finished_kpi_files(out) > files_before
    });
    // The pipe stays open: the job is blocked on input, certainly not finished.
    let alive = child.try_wait().unwrap().is_none();
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    drop(stdin);
    use std::os::unix::process::ExitStatusExt;
    alive && status.signal() == Some(9)
}

#[test]
fn sigkill_mid_run_changes_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(
        100_000,
        42,
        &[
            "--late-fraction",
            "0.02",
            "--bad-fraction",
            "0.01",
            "--rate",
            "60",
        ],
    );
    let file = dir.path().join("invoices.jsonl");
    std::fs::write(&file, &input).unwrap();

    let (out1, st1) = (dir.path().join("out1"), dir.path().join("state1"));
    run_file(&file, &out1, &st1);

    let (out2, st2) = (dir.path().join("out2"), dir.path().join("state2"));
    let mut kills = 0;
    // Kill after feeding more and more of the input: 6, 12, 18, 24 of 40 chunks.
    for chunks in [6, 12, 18, 24] {
        if run_stdin_and_kill(&input, &out2, &st2, chunks) {
            kills += 1;
        }
    }
    assert!(kills >= 3, "only {kills} runs were killed mid-run");
    // A kill may land between a temporary file and its rename (the job checkpoints while it
    // waits for input): count the finished files only. The restart below writes the same
    // bytes again, and `kpi_files` then checks that no temporary file is left.
    let partial = harness::finished_kpi_files(&out2);
    run_file(&file, &out2, &st2);

    let a = harness::kpi_files(&out1);
    let b = harness::kpi_files(&out2);
    assert!(!a.is_empty());
    assert!(
        partial > 0,
        "the killed runs wrote no file: the kills came too early to test recovery"
    );
    assert!(
        partial < a.len(),
        "the killed runs already wrote everything: they were not mid-run"
    );
    assert!(
        a == b,
        "uninterrupted vs killed:\n{}",
        harness::diff(&a, &b)
    );
    assert!(a.keys().any(|k| k.ends_with(".parquet")));
    let expected = reference(&records_from_jsonl(&input), &RefConfig::default());
    let json: std::collections::BTreeMap<String, Vec<u8>> = a
        .into_iter()
        .filter(|(k, _)| k.ends_with(".json"))
        .collect();
    assert!(
        json == expected.files,
        "engine vs reference:\n{}",
        harness::diff(&json, &expected.files)
    );
    assert_eq!(harness::rejected(&out1), expected.rejected);
    assert_eq!(harness::rejected(&out2), expected.rejected);
}

#[test]
fn a_second_job_on_the_same_state_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = owned_command(BIN)
        .args(["run", "--input", "-", "--out"])
        .arg(dir.path().join("out"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first job holds the store: RocksDB's LOCK file appears when it opens.
    let lock = dir.path().join("state").join("LOCK");
    wait_until(
        Duration::from_secs(20),
        "the first job opens its store",
        || {
            if lock.exists() {
                return true;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "the first job exited early"
            );
            false
        },
    );
    let out = owned_command(BIN)
        .args(["run", "--input", "/dev/null", "--out"])
        .arg(dir.path().join("out"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "state errors exit with 3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use by another retail-kpi process"),
        "{err}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // A lock left by a killed job never blocks its restart.
    run_file(
        Path::new("/dev/null"),
        &dir.path().join("out"),
        &dir.path().join("state"),
    );
}

#[test]
fn print_invoices_gives_the_per_invoice_summary() {
    let dir = tempfile::tempdir().unwrap();
    let line = r#"{"invoice_no": "0042", "country": " EIRE ", "timestamp": "2020-09-18 10:55:23", "type": "RETURN", "items": [{"SKU": "1", "title": "t", "unit_price": 4.95, "quantity": 6}, {"SKU": "2", "title": "u", "unit_price": 0.42, "quantity": 2}]}"#;
    let file = dir.path().join("one.jsonl");
    std::fs::write(&file, format!("{line}\n")).unwrap();
    let out = owned_command(BIN)
        .args(["run", "--print-invoices", "--input"])
        .arg(&file)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"invoice_no\":42,\"country\":\"EIRE\",\"timestamp\":\"2020-09-18 10:55:23\",\"total_cost\":-30.54,\"total_items\":8,\"is_order\":0,\"is_return\":1}\n"
    );
}
