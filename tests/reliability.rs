//! What the state store knows of its input and settings, and the bounds on memory and on
//! the write-ahead log (issue 9): a file whose read part changed, other settings on an
//! existing store, a 1 GiB line, millions of rejections. Each test runs the binary.

use std::path::Path;
use std::process::Output;
use test_support::harness;
use test_support::process::owned_command;

const BIN: &str = env!("CARGO_BIN_EXE_retail-kpi");

fn generate(args: &[&str]) -> Vec<u8> {
    let out = owned_command(BIN)
        .arg("generate")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn run(input: &Path, out: &Path, state: &Path, extra: &[&str]) -> Output {
    owned_command(BIN)
        .args(["run", "--metrics-addr", "off", "--input"])
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--state")
        .arg(state)
        .args(extra)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn inspect(state: &Path) -> serde_json::Value {
    let out = owned_command(BIN)
        .args(["state", "inspect", "--json", "--state"])
        .arg(state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Regression (issue 9): another file on an existing state silently skipped its first N
/// lines; a file that only grew must go on where the store stopped.
#[test]
fn a_file_whose_read_part_changed_stops_the_job_and_a_grown_one_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = generate(&["--count", "3000", "--seed", "11", "--rate", "60"]);
    let more = generate(&[
        "--count",
        "1000",
        "--seed",
        "12",
        "--rate",
        "60",
        "--start",
        "2020-09-18 11:30:00",
    ]);
    let input = d.join("in.jsonl");
    std::fs::write(&input, &first).unwrap();
    let (out, state) = (d.join("out"), d.join("state"));
    let o = run(&input, &out, &state, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let st = inspect(&state);
    assert_eq!(
        st["source"]["file"]["bytes_read"],
        first.len() as u64,
        "{st}"
    );

    // One byte changed inside the part that was read: exit 5, nothing counted.
    let mut changed = first.clone();
    let at = changed.iter().position(|&b| b == b'7').unwrap();
    changed[at] = b'8';
    let other = d.join("other.jsonl");
    std::fs::write(&other, &changed).unwrap();
    let o = run(&other, &out, &state, &[]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is not the one the state store read"),
        "{}",
        stderr(&o)
    );
    // Shorter than what was read: exit 5 too.
    std::fs::write(&other, &first[..first.len() / 2]).unwrap();
    let o = run(&other, &out, &state, &[]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(inspect(&state)["counters"]["read"], 3000);

    // The same file, grown: the new lines are read, the old ones are not read again.
    let mut grown = first.clone();
    grown.extend_from_slice(&more);
    std::fs::write(&input, &grown).unwrap();
    let o = run(&input, &out, &state, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let st = inspect(&state);
    assert_eq!(st["counters"]["read"], 4000, "{st}");
    assert_eq!(st["partitions"][0]["next_offset"], 4000, "{st}");
    assert_eq!(st["source"]["file"]["bytes_read"], grown.len() as u64);
    // Its invoices are in windows after the first run's last bucket: every one counted.
    assert_eq!(st["counters"]["accepted"], 4000, "{st}");
}

/// Regression (issue 9): another --grace on an existing state was silently mixed in.
#[test]
fn other_settings_on_an_existing_store_are_refused_naming_both_values() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in.jsonl");
    std::fs::write(&input, generate(&["--count", "500", "--seed", "3"])).unwrap();
    let (out, state) = (d.join("out"), d.join("state"));
    let o = run(&input, &out, &state, &["--grace", "60s"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let st = inspect(&state);
    assert_eq!(st["settings"]["grace"], "1m", "{st}");
    for (flag, value, says) in [
        ("--grace", "90s", "grace is 1m in the store, 1m 30s now"),
        (
            "--max-record-bytes",
            "2048",
            "max_record_bytes is 1048576 in the store, 2048 now",
        ),
        (
            "--max-future-skew",
            "2h",
            "max_future_skew is 1h in the store, 2h now",
        ),
        ("--max-items", "7", "max_items is 10000 in the store, 7 now"),
    ] {
        let o = run(&input, &out, &state, &[flag, value]);
        assert_eq!(o.status.code(), Some(2), "{flag}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{flag}: {}", stderr(&o));
    }
    // The recorded values still run.
    let o = run(&input, &out, &state, &["--grace", "60s"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Regression (issue 9): the file source buffered a whole line whatever the record limit
/// said, and `too_large` kept every byte: a 1 GiB line took 6.3 GB. Under an address-space
/// limit far below that, the line is rejected with its first 64 KiB and its length.
#[test]
fn a_one_gib_line_is_rejected_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in.jsonl");
    let good = generate(&["--count", "10", "--seed", "5"]);
    let lines: Vec<&[u8]> = good
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let huge: u64 = 1 << 30;
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        for l in &lines[..5] {
            f.write_all(l).unwrap();
            f.write_all(b"\n").unwrap();
        }
        f.write_all(b"{\"invoice_no\":\"").unwrap();
        let chunk = vec![b'7'; 1 << 20];
        let mut left = huge - 15;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n]).unwrap();
            left -= n as u64;
        }
        f.write_all(b"\n").unwrap();
        for l in &lines[5..] {
            f.write_all(l).unwrap();
            f.write_all(b"\n").unwrap();
        }
    }
    let (out, state) = (d.join("out"), d.join("state"));
    let mut cmd = owned_command(BIN);
    cmd.args(["run", "--metrics-addr", "off", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--state")
        .arg(&state);
    // 768 MiB of address space: less than the line itself.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 768 << 20,
                rlim_max: 768 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    let rejected = harness::rejected(&out);
    assert_eq!(
        rejected.into_iter().collect::<Vec<_>>(),
        vec![((0, 5), "too_large".to_owned())]
    );
    let st = inspect(&state);
    assert_eq!(st["counters"]["accepted"], 10, "{st}");
    let file = std::fs::read_dir(out.join("rejected"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let line: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    assert_eq!(line["raw_truncated"], true, "{line}");
    assert_eq!(line["raw_bytes"], huge, "{line}");
    assert_eq!(line["raw"].as_str().unwrap().len(), 64 << 10);
}

/// Regression (issue 9): after 3M rejections RocksDB kept 1.9 GB of write-ahead log and a
/// restart took 25 s. The log stays within its bound.
#[test]
fn the_write_ahead_log_stays_bounded_under_many_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in.jsonl");
    // Every record malformed: each is stored as rejected, then deleted once written.
    std::fs::write(
        &input,
        generate(&["--count", "400000", "--seed", "9", "--bad-fraction", "1"]),
    )
    .unwrap();
    let (out, state) = (d.join("out"), d.join("state"));
    let o = run(&input, &out, &state, &["--checkpoint-interval", "100ms"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let wal: u64 = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let written: u64 = std::fs::read_dir(out.join("rejected"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        written > 150 << 20,
        "the test must write more than the bound: {written}"
    );
    // The bound is 64 MiB; a log file in use may run past it by one memtable's worth.
    assert!(wal < 96 << 20, "write-ahead log of {wal} bytes");
    assert_eq!(inspect(&state)["counters"]["read"], 400_000);
}

/// SPEC §7: distinct countries per window and partition are capped; the refused invoices
/// are `too_large` with a message that names the cap, and the rest is exactly the
/// independent reference's, with the same cap.
#[test]
fn countries_per_window_are_capped_as_the_reference_says() {
    use test_support::reference::{records_from_jsonl, reference, RefConfig};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut input = Vec::new();
    for (i, (country, ts)) in [
        ("A", "10:00:01"),
        ("B", "10:00:02"),
        ("A", "10:00:03"),
        ("C", "10:00:04"),
        ("D", "10:00:05"), // a fourth country in 10:00: refused with a cap of 3
        ("B", "10:00:06"),
        ("E", "10:00:07"),   // refused
        ("E", "10:01:00"),   // 10:01 has room
        (" A ", "10:00:08"), // trimmed: A again
    ]
    .iter()
    .enumerate()
    {
        input.extend_from_slice(
            format!(
                r#"{{"invoice_no":{i},"country":"{country}","timestamp":"2020-09-18 {ts}","type":"ORDER","items":[{{"SKU":"s","title":"t","unit_price":1.25,"quantity":2}}]}}"#
            )
            .as_bytes(),
        );
        input.push(b'\n');
    }
    let path = d.join("in.jsonl");
    std::fs::write(&path, &input).unwrap();
    let (out, state) = (d.join("out"), d.join("state"));
    let o = run(&path, &out, &state, &["--max-countries", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let expected = reference(
        &records_from_jsonl(&input),
        &RefConfig {
            max_countries: 3,
            ..RefConfig::default()
        },
    );
    let got = harness::kpi_files(&out);
    assert!(
        got == expected.files,
        "{}",
        harness::diff(&got, &expected.files)
    );
    assert_eq!(harness::rejected(&out), expected.rejected);
    assert_eq!(
        expected.rejected.keys().copied().collect::<Vec<_>>(),
        [(0, 4), (0, 6)]
    );
    let text = std::fs::read_dir(out.join("rejected"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(text.contains("max_countries"), "{text}");
    let st = inspect(&state);
    assert_eq!(st["settings"]["max_countries"], "3", "{st}");
}

/// Runs the binary and returns its exit code and its peak resident memory (wait4's own
/// account of this child, so tests running beside it do not count).
// wait4 below reaps the child; clippy cannot see it.
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&std::ffi::OsStr]) -> (Option<i32>, u64) {
    let child = owned_command(BIN)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 writes it and the status of our child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, usage.ru_maxrss as u64 * 1024)
}

/// Regression (issue 9): 500,000 distinct countries in one minute took 921 MB. The cap
/// bounds a window's rows, and bad records held for a checkpoint make it come early, so
/// memory follows the limits, not the input.
#[test]
fn half_a_million_countries_in_one_minute_stay_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in.jsonl");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        for i in 0..500_000u32 {
            writeln!(
                f,
                r#"{{"invoice_no":{i},"country":"C{i:06}","timestamp":"2020-09-18 10:00:{:02}","type":"ORDER","items":[{{"SKU":"s","title":"t","unit_price":1.5,"quantity":2}}]}}"#,
                i % 60
            )
            .unwrap();
        }
    }
    let (out, state) = (d.join("out"), d.join("state"));
    let args: Vec<&std::ffi::OsStr> = vec![
        "run".as_ref(),
        "--metrics-addr".as_ref(),
        "off".as_ref(),
        "--input".as_ref(),
        input.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--state".as_ref(),
        state.as_os_str(),
    ];
    let (code, rss) = run_measured(&args);
    assert_eq!(code, Some(0));
    let st = inspect(&state);
    assert_eq!(st["counters"]["accepted"], 1000, "{st}");
    assert_eq!(st["counters"]["rejected"]["too_large"], 499_000, "{st}");
    println!("max RSS {} MB", rss >> 20);
    assert!(rss < 400 << 20, "max RSS {} MB", rss >> 20);
}
