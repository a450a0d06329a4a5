//! The sink boundary: the job writes through any `sink::Committer`. Run in-process on the
//! in-memory committer, it writes the independent reference's files and rejected records;
//! a run again on the same store writes nothing new; other bytes under a name are the
//! conflict a user sees as exit 4, and nothing is overwritten.

use retail_kpi::decode::JsonInvoiceDecoder;
use retail_kpi::generate::{GenConfig, Generator};
use retail_kpi::job::{self, JobConfig, JobError};
use retail_kpi::record::SourceRecord;
use retail_kpi::sink::memory::MemoryCommitter;
use retail_kpi::sink::{Committer, SinkError};
use retail_kpi::source::{Poll, Positions, Source, SourceError};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use test_support::reference::{reference, RefConfig, RefRecord};

/// Generated records over three partitions, resumed from the committed offsets.
struct Records {
    all: Vec<RefRecord>,
    next: usize,
}

impl Source for Records {
    fn name(&self) -> &str {
        "invoices"
    }
    fn resume(&mut self, committed: &Positions) -> Result<(), SourceError> {
        self.all.retain(|r| {
            committed
                .get(&r.partition)
                .copied()
                .flatten()
                .is_none_or(|n| r.offset >= n)
        });
        Ok(())
    }
    fn partitions(&self) -> Vec<u32> {
        vec![0, 1, 2]
    }
    fn poll(
        &mut self,
        max: usize,
        sink: &mut dyn FnMut(SourceRecord<'_>),
    ) -> Result<Poll, SourceError> {
        if self.next == self.all.len() {
            return Ok(Poll::End);
        }
        let end = (self.next + max).min(self.all.len());
        for r in &self.all[self.next..end] {
            sink(SourceRecord {
                partition: r.partition,
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                value: &r.value,
                full_len: None,
            });
        }
        let n = end - self.next;
        self.next = end;
        Ok(Poll::Records(n))
    }
}

fn records() -> Vec<RefRecord> {
    Generator::new(GenConfig {
        count: 4000,
        seed: 21,
        rate_per_minute: 120.0,
        late_fraction: 0.02,
        bad_fraction: 0.02,
        broker_timestamps: true,
        ..GenConfig::default()
    })
    .enumerate()
    .map(|(i, r)| RefRecord {
        partition: (i % 3) as u32,
        offset: (i / 3) as i64,
        timestamp_ms: r.timestamp_ms,
        value: r.value,
    })
    .collect()
}

fn run(cfg: &JobConfig, sink: &mut dyn Committer) -> Result<job::RunSummary, JobError> {
    let mut src = Records {
        all: records(),
        next: 0,
    };
    let decoder = JsonInvoiceDecoder { limits: cfg.limits };
    job::run_with(
        cfg,
        &mut src,
        decoder,
        sink,
        Arc::new(AtomicBool::new(false)),
    )
}

/// (partition, offset) -> reason of every rejected line the committer holds; each once.
fn rejected(m: &MemoryCommitter) -> BTreeMap<(u32, i64), String> {
    let mut out = BTreeMap::new();
    for (name, bytes) in m
        .objects
        .range("rejected/".to_owned().."rejected0".to_owned())
    {
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            let key = (
                v["partition"].as_u64().unwrap() as u32,
                v["offset"].as_i64().unwrap(),
            );
            let prev = out.insert(key, v["reason"].as_str().unwrap().to_owned());
            assert!(prev.is_none(), "{key:?} written twice ({name})");
        }
    }
    out
}

#[test]
fn the_job_writes_the_reference_through_the_in_memory_committer() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = JobConfig::new(dir.path().join("unused-out"), dir.path().join("state"));
    cfg.checkpoint_interval = std::time::Duration::ZERO;
    cfg.batch = 97;
    let mut sink = MemoryCommitter::new();
    let summary = run(&cfg, &mut sink).unwrap();
    assert!(summary.ended);
    assert!(
        !dir.path().join("unused-out").exists(),
        "the job wrote to a folder of its own"
    );
    let want = reference(&records(), &RefConfig::default());
    let kpi: BTreeMap<String, Vec<u8>> = sink
        .objects
        .iter()
        .filter(|(n, _)| !n.starts_with("rejected/"))
        .map(|(n, b)| (n.clone(), b.clone()))
        .collect();
    assert!(!want.files.is_empty() && !want.rejected.is_empty());
    assert_eq!(
        kpi.keys().collect::<Vec<_>>(),
        want.files.keys().collect::<Vec<_>>()
    );
    assert!(kpi == want.files, "KPI files differ from the reference");
    assert_eq!(rejected(&sink), want.rejected);
    assert_eq!(summary.files_written, want.files.len() as u64);

    // Again on the same store: everything was read and written; nothing new.
    let before = sink.objects.clone();
    let again = run(&cfg, &mut sink).unwrap();
    assert_eq!((again.records, again.files_written), (0, 0));
    assert_eq!(sink.objects, before);
}

#[test]
fn other_bytes_under_a_name_are_a_conflict_and_stay() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JobConfig::new(dir.path().join("out"), dir.path().join("state"));
    let want = reference(&records(), &RefConfig::default());
    let (name, _) = want.files.iter().next().unwrap();
    let mut sink = MemoryCommitter::new();
    sink.write_all(&[(name.clone(), b"another run's file\n".to_vec())])
        .unwrap();
    let err = run(&cfg, &mut sink).unwrap_err();
    assert!(
        matches!(err, JobError::Sink(SinkError::Conflict { .. })),
        "{err}"
    );
    assert_eq!(sink.objects[name], b"another run's file\n");
}
