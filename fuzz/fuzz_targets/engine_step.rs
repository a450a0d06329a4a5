//! Fuzz target: the job's record step (`job::Intake::process`: decode, then the engine),
//! its checkpoints (`take_delta` committed to the store's own code over memory,
//! `state::MemoryStore`), the outbox writing through the in-memory committer
//! (`sink::memory::MemoryCommitter`), and restarts (`Engine::restore` and
//! `Outbox::restore` from the store), driven by arbitrary bytes.
//!
//! Input format (so that seeds can be plain JSON lines with a prefix byte): lines split on
//! `\n`. Line 0 is a settings line (each byte optional):
//!   [0] grace: 0 s / 1 s / 60 s / 600 s      [1] max_future_skew: 0 / 1 s / 1 h
//!   [2] max_items: 0..=3 or 10,000           [3] max_record_bytes: 64..=1023 or 1 MiB
//!   [4] partitions assigned: 1..=4           [5] bit 0: "idle mode" (see below)
//! Every other line is one step: a control byte, then (if its bit 7 is set) two bytes of a
//! broker timestamp, then the record value.
//!   bits 0-1: partition          bit 2: re-deliver the partition's last offset (a replay)
//!   bit 3: leave a gap of 2 offsets                         bit 4: `advance` afterwards
//!   bit 5: checkpoint afterwards (take_delta, commit it to the in-memory store with what
//!          the outbox delivered, then write what became due)
//!   bit 6: crash afterwards: drop the engine, restore it from the store, re-deliver every
//!          record read since the last checkpoint (as a source that resumes from committed
//!          offsets does)
//!   bit 7: the record has a broker timestamp: 2020-09-18 10:00:00 + i16 × 10 s
//!
//! Checked:
//! - no panic, and every record read is accepted or rejected exactly once:
//!   `read == accepted + Σ rejected`, `replayed_skipped` counts the replays; a rejected record
//!   never moves its partition's M_p;
//! - right after a checkpoint, the engine restored from the store equals the live engine
//!   (partitions, counters, closed-before point, open and closed windows), and the outbox
//!   restored from it holds what the live one holds;
//! - a file, once written, never gets other bytes (the committer refuses other bytes; a
//!   crash writes the same bytes again), and every rejected record is written exactly once
//!   over all rejected files;
//! - normal mode (no idle partitions, no wall clock): the files and the rejected records at
//!   the end equal those of the independent reference (`tests/support/src/reference.rs`) on the
//!   same records, whatever the checkpoints, advances and crashes in between; no
//!   `window_closed` is possible.
//! - idle mode (`advance` with the step's partition idle and a wall clock moving 30 s per
//!   step, as a live Kafka run may): Σ OPM over all rendered windows equals the accepted
//!   count.

#![no_main]

use libfuzzer_sys::fuzz_target;
use retail_kpi::aggregate::partial::WindowAgg;
use retail_kpi::aggregate::{ClosedBucket, Counters, Engine, EngineConfig, PartitionState};
use retail_kpi::decode::invoice::Limits;
use retail_kpi::decode::JsonInvoiceDecoder;
use retail_kpi::event_time::{parse_timestamp, NANOS_PER_SEC};
use retail_kpi::job::Intake;
use retail_kpi::record::{Reason, RejectedRecord, SourceRecord};
use retail_kpi::sink::memory::MemoryCommitter;
use retail_kpi::sink::Outbox;
use retail_kpi::state::MemoryStore;
use std::collections::{BTreeMap, BTreeSet};

use test_support::reference;

/// What can be observed of an engine, to compare a restored one with the live one.
#[derive(Debug, PartialEq)]
struct Snapshot {
    partitions: BTreeMap<u32, PartitionState>,
    /// The count of buckets written is the sinks', not the engine's: left out.
    counters: Counters,
    closed_before: i64,
    open: Vec<(i64, WindowAgg)>,
    closed_windows: usize,
}

fn snapshot(e: &Engine) -> Snapshot {
    let mut counters = e.counters().clone();
    counters.buckets_rendered = 0;
    Snapshot {
        partitions: e.partitions().clone(),
        counters,
        closed_before: e.closed_before(),
        open: e.open_windows().map(|(s, w)| (s, w.clone())).collect(),
        closed_windows: e.closed_windows(),
    }
}

/// What the outbox holds after a commit: due buckets and rejected records.
type Due = (Vec<ClosedBucket>, Vec<(u64, Vec<RejectedRecord>)>);

#[derive(Clone, Copy)]
struct Step<'a> {
    partition: u32,
    offset: i64,
    timestamp_ms: Option<i64>,
    value: &'a [u8],
    replay: bool,
    advance: bool,
}

/// Everything the harness expects, rolled back with the engine on a crash.
#[derive(Clone, Default)]
struct Expect {
    read: u64,
    replayed: u64,
    accepted: u64,
}

struct Harness<'a> {
    cfg: EngineConfig,
    limits: Limits,
    assigned: Vec<u32>,
    idle_mode: bool,
    engine: Engine,
    intake: Intake,
    outbox: Outbox,
    store: MemoryStore,
    sink: MemoryCommitter,
    /// Snapshot of the engine right after its last checkpoint was committed.
    committed: Option<Snapshot>,
    /// Number of the last checkpoint committed.
    seq: u64,
    since_commit: Vec<Step<'a>>,
    expect: Expect,
    expect_committed: Expect,
    /// Wall clock of the idle mode, ms.
    now_ms: i64,
}

impl<'a> Harness<'a> {
    fn intake(limits: Limits) -> Intake {
        Intake::new(JsonInvoiceDecoder { limits }, "fuzz")
    }

    /// The engine and the outbox as a restart builds them from the store.
    fn restart(cfg: EngineConfig, assigned: &[u32], store: &MemoryStore) -> (Engine, Outbox, Due) {
        let mut r = store.load().expect("the store reads back");
        let buckets = r.take_closed_buckets();
        let rejected = std::mem::take(&mut r.pending_rejected);
        let due = (buckets.clone(), rejected.clone());
        let outbox = Outbox::restore(buckets, rejected, r.counters.buckets_rendered);
        let mut e = Engine::restore(cfg, r);
        e.assign(assigned.iter().copied());
        (e, outbox, due)
    }

    fn step(&mut self, s: Step<'a>) {
        let before = self.engine.counters().clone();
        let m_before = self
            .engine
            .partitions()
            .get(&s.partition)
            .and_then(|p| p.max_event_time);
        let got = self
            .intake
            .process(
                &mut self.engine,
                SourceRecord {
                    partition: s.partition,
                    offset: s.offset,
                    timestamp_ms: s.timestamp_ms,
                    value: s.value,
                    full_len: None,
                },
            )
            .is_some();
        let after = self.engine.counters().clone();
        if s.replay {
            assert!(!got);
            assert_eq!(after.replayed_skipped, before.replayed_skipped + 1);
            assert_eq!(after.read, before.read);
            self.expect.replayed += 1;
        } else {
            self.expect.read += 1;
            assert_eq!(after.read, before.read + 1);
            let newly: u64 = (0..7).map(|i| after.rejected[i] - before.rejected[i]).sum();
            if got {
                self.expect.accepted += 1;
                assert_eq!(after.accepted, before.accepted + 1);
                assert_eq!(newly, 0);
            } else {
                assert_eq!(after.accepted, before.accepted);
                assert_eq!(newly, 1, "a refused record counts under exactly one reason");
                let m_after = self.engine.partitions()[&s.partition].max_event_time;
                assert_eq!(m_before, m_after, "a rejected record moved M_p");
            }
            self.since_commit.push(s);
        }
        let c = self.engine.counters();
        assert_eq!(c.read, c.accepted + c.rejected_total());
        assert_eq!(c.read, self.expect.read);
        assert_eq!(c.accepted, self.expect.accepted);
        assert_eq!(c.replayed_skipped, self.expect.replayed);
        if s.advance {
            self.advance(s.partition);
        }
    }

    fn advance(&mut self, partition: u32) {
        if self.idle_mode {
            self.now_ms += 30_000;
            let idle = BTreeSet::from([partition]);
            self.engine.advance(Some(self.now_ms), &idle);
        } else {
            self.engine.advance(None, &BTreeSet::new());
        }
    }

    /// As the job checkpoints: take_delta, commit it with what the outbox delivered, hand
    /// its outputs to the outbox, then write what is due.
    fn checkpoint(&mut self) {
        if let Some(mut d) = self.engine.take_delta() {
            assert_eq!(d.seq, self.seq + 1, "checkpoints are numbered in order");
            d.rejected = self.intake.take_rejected();
            self.store.commit(&d, &self.outbox.take_delivered());
            self.seq = d.seq;
            self.committed = Some(snapshot(&self.engine));
            self.expect_committed = self.expect.clone();
            self.since_commit.clear();
            let due_before: Due = {
                let (e, _, due) = Self::restart(self.cfg, &self.assigned, &self.store);
                // The store now holds what the live engine holds.
                assert_eq!(
                    snapshot(&e),
                    *self.committed.as_ref().unwrap(),
                    "restore(store) differs from the live engine after take_delta"
                );
                due
            };
            self.outbox.add(d.ready, d.seq, d.rejected);
            assert_eq!(
                due_before.0.len(),
                self.outbox.buckets_due(),
                "the store's due buckets differ from the outbox's"
            );
        }
        self.write_due();
    }

    /// Every due object written, each step recorded in the store as the job does.
    fn write_due(&mut self) {
        loop {
            let step = self
                .outbox
                .write_step(&mut self.sink, 4)
                .expect("the committer never finds other bytes under a name");
            if step.objects == 0 {
                break;
            }
            self.store.record_delivered(&self.outbox.take_delivered());
        }
    }

    /// The process dies after its last commit: everything since is lost, and the source
    /// hands the records from the committed offsets again.
    fn crash(&mut self) {
        let (e, outbox, _) = Self::restart(self.cfg, &self.assigned, &self.store);
        self.engine = e;
        self.outbox = outbox;
        self.intake = Self::intake(self.limits);
        if let Some(c) = &self.committed {
            assert_eq!(snapshot(&self.engine), *c, "restored engine differs");
        }
        self.expect = self.expect_committed.clone();
        // The job writes what is due before reading on.
        self.write_due();
        let again = std::mem::take(&mut self.since_commit);
        for s in again {
            self.step(s);
        }
    }
}

fn settings(line: &[u8]) -> (EngineConfig, Limits, u32, bool) {
    let b = |i: usize| line.get(i).copied();
    let grace = [0, 1, 60, 600][b(0).unwrap_or(2) as usize % 4] * NANOS_PER_SEC;
    let skew = [0, 1, 3600][b(1).unwrap_or(2) as usize % 3] * NANOS_PER_SEC;
    let max_items = match b(2).map(|v| v % 5) {
        None | Some(4) => 10_000,
        Some(n) => n as u64,
    };
    let max_record_bytes = match b(3) {
        None | Some(0) => 1 << 20,
        Some(n) => 64 + 4 * n as usize - 4,
    };
    let partitions = 1 + b(4).unwrap_or(0) as u32 % 4;
    let idle = b(5).is_some_and(|v| v & 1 == 1);
    (
        EngineConfig {
            grace,
            max_future_skew: skew,
            ..EngineConfig::default()
        },
        Limits {
            max_record_bytes,
            max_items,
        },
        partitions,
        idle,
    )
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&c| c == b'\n');
    let (cfg, limits, partitions, idle_mode) = settings(lines.next().unwrap_or(&[]));
    let assigned: Vec<u32> = (0..partitions).collect();
    let base_ms = (parse_timestamp("2020-09-18 10:00:00").unwrap() / 1_000_000) as i64;
    let mut engine = Engine::new(cfg);
    engine.assign(assigned.iter().copied());
    let mut h = Harness {
        cfg,
        limits,
        engine,
        intake: Harness::intake(limits),
        outbox: Outbox::default(),
        assigned,
        idle_mode,
        store: MemoryStore::new(),
        sink: MemoryCommitter::new(),
        committed: None,
        seq: 0,
        since_commit: Vec::new(),
        expect: Expect::default(),
        expect_committed: Expect::default(),
        now_ms: base_ms,
    };
    // Next offset per partition, and the records the reference sees.
    let mut next: BTreeMap<u32, i64> = BTreeMap::new();
    let mut fed: Vec<reference::RefRecord> = Vec::new();
    for line in lines {
        let Some((&ctl, mut rest)) = line.split_first() else {
            continue;
        };
        let partition = (ctl & 3) as u32 % partitions;
        let mut timestamp_ms = None;
        if ctl & 0x80 != 0 && rest.len() >= 2 {
            let d = i16::from_le_bytes([rest[0], rest[1]]) as i64;
            timestamp_ms = Some(base_ms + d * 10_000);
            rest = &rest[2..];
        }
        let n = next.entry(partition).or_insert(0);
        let replay = ctl & 4 != 0 && *n > 0;
        let offset = if replay {
            *n - 1
        } else {
            if ctl & 8 != 0 {
                *n += 2;
            }
            let o = *n;
            *n += 1;
            fed.push(reference::RefRecord {
                partition,
                offset: o,
                timestamp_ms,
                value: rest.to_vec(),
            });
            o
        };
        h.step(Step {
            partition,
            offset,
            timestamp_ms,
            value: rest,
            replay,
            advance: ctl & 0x10 != 0,
        });
        if ctl & 0x20 != 0 {
            h.checkpoint();
        }
        if ctl & 0x40 != 0 {
            h.crash();
        }
    }
    // End of a bounded input: close everything, commit, write.
    h.engine.close_all();
    h.checkpoint();
    assert!(h.engine.take_delta().is_none(), "nothing left to commit");
    assert_eq!(h.engine.open_windows().count(), 0);
    assert_eq!(h.engine.closed_windows(), 0);
    assert!(!h.outbox.has_due());
    let c = h.engine.counters().clone();
    // What the committer holds: the KPI files, and every rejected line once.
    let mut files = BTreeMap::new();
    let mut rejected: BTreeMap<(u32, i64), Reason> = BTreeMap::new();
    let mut rendered_opm = 0u64;
    for (name, bytes) in &h.sink.objects {
        if name.starts_with("rejected/") {
            for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                let key = (v["partition"].as_u64().unwrap() as u32, v["offset"].as_i64().unwrap());
                let reason = Reason::ALL
                    .iter()
                    .copied()
                    .find(|r| r.code() == v["reason"].as_str().unwrap())
                    .unwrap();
                let prev = rejected.insert(key, reason);
                assert!(prev.is_none(), "rejected record {key:?} written twice");
            }
            continue;
        }
        if name.starts_with("time_kpi/") {
            for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                rendered_opm += v["OPM"].as_u64().unwrap();
            }
        }
        files.insert(name.clone(), bytes.clone());
    }
    assert_eq!(rendered_opm, c.accepted, "Σ OPM of the files != accepted");
    assert_eq!(rejected.len() as u64, c.rejected_total());
    for (i, reason) in Reason::ALL.iter().enumerate() {
        let n = rejected.values().filter(|r| *r == reason).count() as u64;
        assert_eq!(n, c.rejected[i], "counter of {reason}");
    }
    if !idle_mode {
        assert_eq!(c.rejected[Reason::WindowClosed.index()], 0);
        // Records on which the parser alone already differs from the reference (findings
        // F1-F3, see fuzz_targets/parse_invoice.rs) would differ here too: that target
        // covers them, so the comparison is left out for such an input.
        let parser_agrees = fed.iter().all(|r| {
            let mine = retail_kpi::decode::invoice::parse_invoice(&r.value, &limits)
                .map(|_| ())
                .map_err(|e| e.reason.code());
            let theirs = reference::check_record(
                &reference::RefRecord {
                    timestamp_ms: None,
                    ..r.clone()
                },
                &reference::RefConfig {
                    max_record_bytes: limits.max_record_bytes,
                    max_items: limits.max_items as usize,
                    ..reference::RefConfig::default()
                },
            )
            .map(|_| ());
            mine == theirs
        });
        if !parser_agrees {
            return;
        }
        let want = reference::reference(
            &fed,
            &reference::RefConfig {
                grace_ms: (cfg.grace / 1_000_000) as i64,
                max_future_skew_ms: (cfg.max_future_skew / 1_000_000) as i64,
                max_record_bytes: limits.max_record_bytes,
                max_items: limits.max_items as usize,
                max_countries: cfg.max_countries,
            },
        );
        let got: BTreeMap<(u32, i64), String> = rejected
            .iter()
            .map(|(k, r)| (*k, r.code().to_owned()))
            .collect();
        assert_eq!(
            got, want.rejected,
            "rejected records differ from the reference"
        );
        assert_eq!(files, want.files, "files differ from the reference");
    }
});
