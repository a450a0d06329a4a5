//! The outputs read exactly where analysts read them: the job's JSON and Parquet files of
//! a generated stream and of hand-made edge invoices (amounts beyond f64 and INT64, years 0
//! and 9999, escaped country names) are read by DuckDB, pyarrow, polars, pandas and Spark,
//! and every README reader snippet (docs/readers/) is run, by `tests/readers/check.py`:
//! declared types, row for row equality with the JSON, and sums of money equal, as
//! decimals, to the exact sums of the JSON files read with Python's standard library.
//!
//! The Python venv is made (or found up to date) by `scripts/py-readers`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use test_support::process::owned_command;

const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn python() -> PathBuf {
    let o = owned_command(Path::new(ROOT).join("scripts/py-readers"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "scripts/py-readers failed ({})",
        o.status
    );
    let text = String::from_utf8(o.stdout).unwrap();
    PathBuf::from(text.lines().last().expect("the venv's python").trim())
}

fn run_both(dir: &Path, input: &Path) -> PathBuf {
    let out = dir.join("out");
    let o = owned_command(BIN)
        .args([
            "run",
            "--metrics-addr",
            "off",
            "--format",
            "both",
            "--input",
        ])
        .arg(input)
        .arg("--out")
        .arg(&out)
        .arg("--state")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "run: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn check(python: &Path, out: &Path, spark: bool) {
    let mut cmd = Command::new(python);
    cmd.arg(Path::new(ROOT).join("tests/readers/check.py"))
        .arg(out)
        .arg("--require-parquet");
    if !spark {
        cmd.env("RETAIL_KPI_SKIP_SPARK", "1");
    } else {
        cmd.env_remove("RETAIL_KPI_SKIP_SPARK");
    }
    let o = cmd.output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // The summary of what was checked shows with --nocapture.
    println!("{said}");
    assert!(
        o.status.success(),
        "check.py failed on {}:\n{said}",
        out.display()
    );
}

#[test]
fn every_reader_reads_money_exactly() {
    let python = python();

    // A generated stream with late and malformed invoices; Spark left to the edge case.
    let dir = tempfile::tempdir().unwrap();
    let gen = owned_command(BIN)
        .args(["generate", "--count", "5000", "--rate", "30", "--seed", "2"])
        .args(["--late-fraction", "0.02", "--bad-fraction", "0.02"])
        .output()
        .unwrap();
    assert!(gen.status.success());
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, gen.stdout).unwrap();
    check(&python, &run_both(dir.path(), &input), false);

    // Hand-made edges, with Spark.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("edge.jsonl");
    let o = Command::new(&python)
        .arg(Path::new(ROOT).join("tests/readers/edge_input.py"))
        .stdout(std::fs::File::create(&input).unwrap())
        .status()
        .unwrap();
    assert!(o.success());
    check(&python, &run_both(dir.path(), &input), true);
}

/// README shows each reader snippet as it is in docs/readers/, which the test above runs.
#[test]
fn readme_shows_the_snippets_that_are_run() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let docs = Path::new(ROOT).join("docs/readers");
    let mut names: Vec<_> = std::fs::read_dir(&docs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.len() >= 9, "{names:?}");
    for name in names {
        let text = std::fs::read_to_string(docs.join(&name)).unwrap();
        assert!(
            readme.contains(text.trim_end()),
            "README does not show docs/readers/{name} as it is"
        );
    }
}
