//! End-to-end throughput of `run --input` (the job loop with RocksDB checkpoints every
//! second and the files written and fsynced), beside a bare serde_json parse of the same
//! file in the same process: the ceiling of any JSON job on this machine.
//!
//! `cargo bench --bench end_to_end` (settings: BENCH_COUNT, default 1,000,000 invoices).
//! It prints one line per measurement; nothing is asserted.

use retail_kpi::generate::{GenConfig, Generator};
use retail_kpi::job::{self, JobConfig};
use retail_kpi::source::file::FileSource;
use std::io::{BufRead, Write};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let count: u64 = std::env::var("BENCH_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    for rate in [10.0, 10_000.0] {
        let file = dir.path().join(format!("in-{rate}.jsonl"));
        {
            let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
            for r in Generator::new(GenConfig {
                count,
                seed: 1,
                rate_per_minute: rate,
                late_fraction: 0.01,
                bad_fraction: 0.01,
                ..GenConfig::default()
            }) {
                w.write_all(&r.value).unwrap();
                w.write_all(b"\n").unwrap();
            }
            w.flush().unwrap();
        }
        let bytes = std::fs::metadata(&file).unwrap().len() as f64;
        let report = |what: &str, secs: f64| {
            println!(
                "{what:<44} {:>10.0} invoices/s {:>8.1} MB/s  ({count} invoices, {:.0} MB, {secs:.2} s)",
                count as f64 / secs,
                bytes / secs / 1e6,
                bytes / 1e6
            );
        };
        println!("--- event rate {rate} invoices/minute ---");
        let t = Instant::now();
        let mut n = 0u64;
        let mut reader =
            std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&file).unwrap());
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap() > 0 {
            if serde_json::from_slice::<serde::de::IgnoredAny>(
                line.strip_suffix(b"\n").unwrap_or(&line),
            )
            .is_ok()
            {
                n += 1;
            }
            line.clear();
        }
        assert!(n > 0);
        report(
            "bare serde_json parse (IgnoredAny), ceiling",
            t.elapsed().as_secs_f64(),
        );

        // Decoding on the loop's thread, then on a pool of 2 (`--threads`, issue 11).
        for threads in [1, 2] {
            let out = dir.path().join(format!("out-{rate}-{threads}"));
            let state = dir.path().join(format!("state-{rate}-{threads}"));
            let mut cfg = JobConfig::new(out, state);
            cfg.threads = threads;
            let t = Instant::now();
            let mut src = FileSource::open(&file).unwrap();
            let s = job::run(&cfg, &mut src, Arc::new(AtomicBool::new(false))).unwrap();
            report(
                &format!(
                    "run --input, {threads} decode thread(s) ({} files)",
                    s.files_written
                ),
                t.elapsed().as_secs_f64(),
            );
        }
    }
}
