//! Property: whatever the interleaving of partitions and wherever the job dies, the files
//! are byte-identical to an uninterrupted run and to the independent reference.
//!
//! The job runs in-process on a scripted source; "dying" is a panic inside the source,
//! which unwinds out of the job without any further commit, exactly like a crash between
//! two checkpoints (the checkpoint interval is zero, so every batch commits).

use proptest::prelude::*;
use retail_kpi::job::{self, JobConfig};
use retail_kpi::record::SourceRecord;
use retail_kpi::source::{Poll, Positions, Source, SourceError};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use test_support::harness;
use test_support::reference::{reference, RefConfig, RefRecord};

/// Records in a fixed interleaving; resumes from the committed offsets and "crashes"
/// (panics) after handing over `crash_after` records.
struct Scripted {
    all: Vec<RefRecord>,
    queue: Vec<usize>,
    pos: usize,
    handed: usize,
    crash_after: Option<usize>,
    partitions: Vec<u32>,
}

impl Source for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn resume(&mut self, committed: &Positions) -> Result<(), SourceError> {
        let all = &self.all;
        self.queue.retain(|&i| {
            let r = &all[i];
            committed
                .get(&r.partition)
                .copied()
                .flatten()
                .is_none_or(|n| r.offset >= n)
        });
        Ok(())
    }
    fn partitions(&self) -> Vec<u32> {
        self.partitions.clone()
    }
    fn poll(
        &mut self,
        max: usize,
        sink: &mut dyn FnMut(SourceRecord<'_>),
    ) -> Result<Poll, SourceError> {
        if self.pos == self.queue.len() {
            return Ok(Poll::End);
        }
        let mut n = 0;
        while n < max && self.pos < self.queue.len() {
            if Some(self.handed) == self.crash_after {
                panic!("simulated crash");
            }
            let r = &self.all[self.queue[self.pos]];
            sink(SourceRecord {
                partition: r.partition,
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                value: &r.value,
                full_len: None,
            });
            self.pos += 1;
            self.handed += 1;
            n += 1;
        }
        Ok(Poll::Records(n))
    }
}

fn invoice(country: &str, ts: &str, kind: &str, items: &[(String, u64)], no: u64) -> Vec<u8> {
    let items: Vec<String> = items
        .iter()
        .map(|(p, q)| {
            format!(r#"{{"SKU":"S1","title":"T \"x\"","unit_price":{p},"quantity":{q}}}"#)
        })
        .collect();
    format!(
        r#"{{"invoice_no":{no},"country":{},"timestamp":"{ts}","type":"{kind}","items":[{}]}}"#,
        serde_json::to_string(country).unwrap(),
        items.join(",")
    )
    .into_bytes()
}

/// One record of a partition: an invoice `step` seconds after the previous one (and `back`
/// seconds behind the partition's clock: 400 makes it late), or a malformed record.
#[derive(Debug, Clone)]
enum Gen {
    Invoice {
        step: i64,
        back: i64,
        nanos: u32,
        country: &'static str,
        kind: &'static str,
        items: Vec<(String, u64)>,
        no: u32,
    },
    Bad(Vec<u8>),
}

fn record_value() -> impl Strategy<Value = Gen> {
    let price = (0u64..200_000, 0u32..4).prop_map(|(units, style)| {
        // Prices with 0 to 4 decimals, sometimes with trailing zeros.
        let s = format!("{}.{:04}", units / 10_000, units % 10_000);
        match style {
            0 => s,
            1 => s.trim_end_matches('0').trim_end_matches('.').to_string(),
            2 => format!("{s}0"),
            _ => format!("{}", units / 10_000),
        }
    });
    let items = prop::collection::vec((price, 0u64..50), 0..4);
    let country = prop::sample::select(vec![
        "United Kingdom",
        "EIRE",
        "France",
        " Germany ",
        "Ünïcode \"q\"",
    ]);
    let kind = prop::sample::select(vec!["ORDER", "ORDER", "ORDER", "RETURN"]);
    let bad = prop::sample::select(vec![
        b"".to_vec(),
        b"{".to_vec(),
        b"[1]".to_vec(),
        b"{\"invoice_no\":\"\xff\"}".to_vec(),
        br#"{"invoice_no":1,"country":"UK","timestamp":"2020-09-18 10:00:60","type":"ORDER","items":[]}"#.to_vec(),
    ]);
    (
        0i64..40,
        0u32..1_000_000_000,
        country,
        kind,
        items,
        0u8..20,
        bad,
        any::<u32>(),
        0i64..30,
    )
        .prop_map(
            |(step, nanos, country, kind, items, roll, bad, no, jitter)| match roll {
                0 => Gen::Bad(bad),
                1 => Gen::Invoice {
                    step,
                    back: 400,
                    nanos,
                    country,
                    kind,
                    items,
                    no,
                },
                _ => Gen::Invoice {
                    step,
                    back: jitter,
                    nanos,
                    country,
                    kind,
                    items,
                    no,
                },
            },
        )
}

fn build_partition(p: u32, base: i64, gens: Vec<Gen>) -> Vec<RefRecord> {
    let mut clock = base;
    gens.into_iter()
        .enumerate()
        .map(|(i, g)| {
            let value = match g {
                Gen::Bad(v) => v,
                Gen::Invoice {
                    step,
                    back,
                    nanos,
                    country,
                    kind,
                    items,
                    no,
                } => {
                    clock += step;
                    let t = chrono::DateTime::from_timestamp(clock - back, nanos).unwrap();
                    invoice(
                        country,
                        &t.format("%Y-%m-%d %H:%M:%S%.f").to_string(),
                        kind,
                        &items,
                        no as u64,
                    )
                }
            };
            // Offsets with gaps, as compacted or transactional Kafka topics have.
            RefRecord {
                partition: p,
                offset: i as i64 * 2 + 5,
                timestamp_ms: None,
                value,
            }
        })
        .collect()
}

fn run_to_end(
    records: &[RefRecord],
    order: &[usize],
    partitions: &[u32],
    dir: &Path,
    crashes: &[usize],
    batch: usize,
) {
    let mut cfg = JobConfig::new(dir.join("out"), dir.join("state"));
    cfg.checkpoint_interval = Duration::ZERO;
    cfg.batch = batch;
    for &crash in crashes.iter().chain(std::iter::once(&usize::MAX)) {
        let mut src = Scripted {
            all: records.to_vec(),
            queue: order.to_vec(),
            pos: 0,
            handed: 0,
            crash_after: (crash != usize::MAX).then_some(crash),
            partitions: partitions.to_vec(),
        };
        let res = std::panic::catch_unwind(AssertUnwindSafe(|| {
            job::run(&cfg, &mut src, Arc::new(AtomicBool::new(false)))
        }));
        match res {
            Ok(r) => {
                r.expect("job run");
                if crash == usize::MAX {
                    return;
                }
                // The crash point lay past the end: that run simply finished.
            }
            Err(_) => assert_ne!(crash, usize::MAX, "the final run must not crash"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn crashes_and_interleavings_change_nothing(
        parts in prop::collection::vec(prop::collection::vec(record_value(), 0..60), 1..4),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 0..400),
        crashes in prop::collection::vec(0usize..200, 0..4),
        batch in 1usize..40,
    ) {
        std::panic::set_hook(Box::new(|_| {}));
        let base = 1_600_423_200; // 2020-09-18T10:00:00Z
        let mut records = Vec::new();
        for (p, steps) in parts.into_iter().enumerate() {
            records.extend(build_partition(p as u32, base, steps));
        }
        let partitions: Vec<u32> = records.iter().map(|r| r.partition).collect::<BTreeSet<_>>().into_iter().collect();
        // Interleaving: picks choose which partition's next record comes; the rest follows.
        let mut per: BTreeMap<u32, std::collections::VecDeque<usize>> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            per.entry(r.partition).or_default().push_back(i);
        }
        let mut order = Vec::new();
        for pick in picks {
            let live: Vec<u32> = per.iter().filter(|(_, q)| !q.is_empty()).map(|(p, _)| *p).collect();
            if live.is_empty() { break; }
            let p = live[pick.index(live.len())];
            order.push(per.get_mut(&p).unwrap().pop_front().unwrap());
        }
        for q in per.values_mut() { order.extend(q.drain(..)); }
        let sequential: Vec<usize> = (0..records.len()).collect();

        let plain = tempfile::tempdir().unwrap();
        run_to_end(&records, &sequential, &partitions, plain.path(), &[], 4096);
        let crashed = tempfile::tempdir().unwrap();
        let mut crash_points = crashes.clone();
        crash_points.sort_unstable();
        run_to_end(&records, &order, &partitions, crashed.path(), &crash_points, batch);

        let expected = reference(&records, &RefConfig::default());
        let a = harness::kpi_files(&plain.path().join("out"));
        let b = harness::kpi_files(&crashed.path().join("out"));
        let valid = records.iter().filter(|r| r.value.starts_with(b"{\"invoice_no\":") && r.value.len() > 60).count();
        prop_assert!(valid == 0 || !a.is_empty(), "valid invoices but no files");
        prop_assert!(a == expected.files, "uninterrupted run vs reference:\n{}", harness::diff(&a, &expected.files));
        prop_assert!(a == b, "uninterrupted vs crashed/interleaved:\n{}", harness::diff(&a, &b));
        prop_assert_eq!(harness::rejected(&plain.path().join("out")), expected.rejected.clone());
        prop_assert_eq!(harness::rejected(&crashed.path().join("out")), expected.rejected);
    }
}
