//! Crash points: the binary stops dead (SIGKILL to itself, via the `failpoints` feature) at
//! each step of a checkpoint and of rendering; a restart must end with byte-identical
//! output. Built only with `--features failpoints` (as CI runs the tests), since release
//! builds compile the points out.
#![cfg(feature = "failpoints")]

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use test_support::harness;
use test_support::process::owned_command;

const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");

fn run(
    input: &Path,
    out: &Path,
    state: &Path,
    failpoint: Option<&str>,
) -> std::process::ExitStatus {
    let mut cmd = owned_command(BIN);
    // Both encodings: a Parquet file must come out of a crash byte-identical too.
    cmd.args([
        "run",
        "--format",
        "both",
        "--checkpoint-interval",
        "0s",
        "--input",
    ])
    .arg(input)
    .arg("--out")
    .arg(out)
    .arg("--state")
    .arg(state);
    cmd.env_remove("RETAIL_KPI_FAILPOINT");
    if let Some(f) = failpoint {
        cmd.env("RETAIL_KPI_FAILPOINT", f);
    }
    cmd.stderr(std::process::Stdio::null()).status().unwrap()
}

#[test]
fn every_crash_point_recovers_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let gen = owned_command(BIN)
        .args([
            "generate",
            "--count",
            "20000",
            "--seed",
            "5",
            "--rate",
            "100",
            "--late-fraction",
            "0.01",
            "--bad-fraction",
            "0.02",
        ])
        .output()
        .unwrap();
    assert!(gen.status.success());
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, &gen.stdout).unwrap();
    let (base_out, base_state) = (dir.path().join("base-out"), dir.path().join("base-state"));
    assert!(run(&input, &base_out, &base_state, None).success());
    let expected = harness::kpi_files(&base_out);
    let expected_rejected = harness::rejected(&base_out);
    assert!(expected.len() > 4);

    let points = [
        "checkpoint.before_commit",
        "checkpoint.after_commit_before_render",
        "sink.after_tmp_before_rename",
        "render.between_files",
        "render.after_rename_before_record",
    ];
    for point in points {
        // Early, middle and late hits of each point.
        for hit in [1, 2, 5] {
            let tag = format!("{point}@{hit}");
            let out = dir.path().join(format!("out-{tag}"));
            let state = dir.path().join(format!("state-{tag}"));
            let st = run(&input, &out, &state, Some(&tag));
            assert_eq!(
                st.signal(),
                Some(9),
                "{tag}: the crash point was not reached ({st})"
            );
            assert!(
                run(&input, &out, &state, None).success(),
                "{tag}: restart failed"
            );
            let got = harness::kpi_files(&out);
            assert!(
                got == expected,
                "{tag}:\n{}",
                harness::diff(&got, &expected)
            );
            assert_eq!(harness::rejected(&out), expected_rejected, "{tag}");
        }
    }
}

/// Regression (issue 9): every file due in a checkpoint was written to a temporary file and
/// synced before the first rename, so a job killed before the renames (three SIGKILLs 40 s
/// apart in the report) never got a file out. Rendering now goes in recorded steps: a job
/// killed in every run at its second step still gets one step further each time, and ends
/// with the same bytes as a run never killed.
#[test]
fn rendering_gets_further_however_often_the_job_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    // 2,000 buckets of 10 minutes (one invoice a minute), none closed before the end (a
    // grace longer than the input): the end of the input makes 4,000 files due at once.
    let gen = owned_command(BIN)
        .args(["generate", "--count", "20000", "--seed", "8", "--rate", "1"])
        .output()
        .unwrap();
    assert!(gen.status.success());
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, &gen.stdout).unwrap();
    let run_with = |out: &Path, state: &Path, failpoint: Option<&str>| {
        let mut cmd = owned_command(BIN);
        cmd.args(["run", "--metrics-addr", "off", "--grace", "1000days"])
            .args(["--checkpoint-interval", "1h", "--input"])
            .arg(&input)
            .arg("--out")
            .arg(out)
            .arg("--state")
            .arg(state)
            .env_remove("RETAIL_KPI_FAILPOINT")
            .stderr(std::process::Stdio::null());
        if let Some(f) = failpoint {
            cmd.env("RETAIL_KPI_FAILPOINT", f);
        }
        cmd.status().unwrap()
    };
    let (base_out, base_state) = (dir.path().join("base-out"), dir.path().join("base-state"));
    assert!(run_with(&base_out, &base_state, None).success());
    let expected = harness::kpi_files(&base_out);
    assert!(expected.len() > 3500, "{} files", expected.len());

    let (out, state) = (dir.path().join("out"), dir.path().join("state"));
    let mut before = 0;
    let mut kills = 0;
    loop {
        let st = run_with(&out, &state, Some("sink.after_tmp_before_rename@2"));
        // Final files only: a killed run leaves temporary ones, which the next removes.
        let now = harness::finished_kpi_files(&out);
        if st.success() {
            break;
        }
        assert_eq!(st.signal(), Some(9), "{st}");
        kills += 1;
        assert!(
            now > before,
            "run {kills} was killed without a file more ({now})"
        );
        before = now;
        assert!(kills < 100, "no end in sight after {kills} kills");
    }
    assert!(kills >= 5, "the steps are bounded: {kills} kills");
    let got = harness::kpi_files(&out);
    assert!(got == expected, "{}", harness::diff(&got, &expected));
}
