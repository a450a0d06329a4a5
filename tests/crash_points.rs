//! Crash points: the binary stops dead (SIGKILL to itself, via the `failpoints` feature) at
//! each step of a checkpoint and of rendering; a restart must end with byte-identical
//! output. Built only with `--features failpoints` (as CI runs the tests), since release
//! builds compile the points out.
#![cfg(feature = "failpoints")]

mod common;

use common::harness;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");

fn run(
    input: &Path,
    out: &Path,
    state: &Path,
    failpoint: Option<&str>,
) -> std::process::ExitStatus {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--checkpoint-interval", "0s", "--input"])
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
    let gen = Command::new(BIN)
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
