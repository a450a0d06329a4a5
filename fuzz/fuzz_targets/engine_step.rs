//! Fuzz target: the engine's record step (`Engine::process`), its checkpoints
//! (`take_delta`) and restarts (`Engine::restore`), driven by arbitrary bytes.
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
//!   bit 5: checkpoint afterwards (take_delta, commit to an in-memory store, render what is
//!          due, mark it rendered)
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
//!   (partitions, counters, closed-before point, open and closed windows, ready buckets,
//!   pending rejected records);
//! - a file, once rendered, never gets other bytes (a crash re-renders the same bytes), and
//!   every rejected record is written exactly once over all rejected files;
//! - normal mode (no idle partitions, no wall clock): the files and the rejected records at
//!   the end equal those of the independent reference (`tests/common/reference.rs`) on the
//!   same records, whatever the checkpoints, advances and crashes in between; no
//!   `window_closed` is possible.
//! - idle mode (`advance` with the step's partition idle and a wall clock moving 30 s per
//!   step, as a live Kafka run may): Σ OPM over all rendered windows equals the accepted
//!   count.

#![no_main]

use libfuzzer_sys::fuzz_target;
use retail_kpi::aggregate::{Counters, Delta, Engine, EngineConfig, PartitionState, Restored};
use retail_kpi::event_time::{bucket_name, parse_timestamp, BUCKET_SECS, NANOS_PER_SEC};
use retail_kpi::decode::invoice::Limits;
use retail_kpi::sink::render::{render_bucket, render_rejected, Family};
use retail_kpi::record::{Reason, RejectedRecord, SourceRecord};
use retail_kpi::aggregate::partial::{StoredWindow, WindowAgg};
use std::collections::{BTreeMap, BTreeSet};

#[allow(dead_code, clippy::all)]
#[path = "../../tests/common/reference.rs"]
mod reference;

/// The state store, in memory, applying a delta as `state::Store::commit` does.
#[derive(Default, Clone)]
struct MemStore {
    seq: u64,
    closed_before: Option<i64>,
    counters: Counters,
    partitions: BTreeMap<u32, PartitionState>,
    open: BTreeMap<i64, StoredWindow>,
    members: BTreeSet<(i64, u32, String)>,
    closed: BTreeMap<i64, StoredWindow>,
    ready: BTreeSet<i64>,
    rejected: BTreeMap<u64, Vec<RejectedRecord>>,
}

impl MemStore {
    fn commit(&mut self, d: &Delta) {
        self.seq = d.seq;
        self.closed_before = Some(d.closed_before);
        self.counters = d.counters.clone();
        for (p, s) in &d.partitions {
            self.partitions.insert(*p, *s);
        }
        for s in &d.open_deletes {
            self.open.remove(s);
            self.members.retain(|m| m.0 != *s);
        }
        for (s, a) in &d.open_world {
            self.open
                .entry(*s)
                .or_insert_with(|| StoredWindow {
                    world: *a,
                    countries: Vec::new(),
                })
                .world = *a;
        }
        for (s, c, a) in &d.open_countries {
            let w = self.open.get_mut(s).expect("a country row comes with its world row");
            match w.countries.binary_search_by(|x| x.0.as_bytes().cmp(c.as_bytes())) {
                Ok(i) => w.countries[i].1 = *a,
                Err(i) => w.countries.insert(i, (c.clone(), *a)),
            }
        }
        for m in &d.new_members {
            self.members.insert(m.clone());
        }
        for (s, w) in &d.closed_inserts {
            self.closed.insert(*s, w.clone());
        }
        for b in &d.ready_buckets {
            self.ready.insert(*b);
        }
        for b in &d.rendered_buckets {
            self.ready.remove(b);
            let gone: Vec<i64> = self
                .closed
                .range(*b..b + BUCKET_SECS)
                .map(|(s, _)| *s)
                .collect();
            for s in gone {
                self.closed.remove(&s);
            }
        }
        if !d.rejected.is_empty() {
            self.rejected.insert(d.seq, d.rejected.clone());
        }
        for s in &d.rendered_rejected {
            self.rejected.remove(s);
        }
    }

    fn load(&self) -> Restored {
        Restored {
            seq: self.seq,
            partitions: self.partitions.iter().map(|(p, s)| (*p, *s)).collect(),
            open: self.open.iter().map(|(s, w)| (*s, w.clone())).collect(),
            members: self.members.iter().cloned().collect(),
            closed: self.closed.iter().map(|(s, w)| (*s, w.clone())).collect(),
            source: None,
            settings: None,
            ready_buckets: self.ready.iter().copied().collect(),
            pending_rejected: self.rejected.iter().map(|(s, r)| (*s, r.clone())).collect(),
            closed_before: self.closed_before.unwrap_or(i64::MIN),
            counters: self.counters.clone(),
        }
    }
}

/// What can be observed of an engine, to compare a restored one with the live one.
#[derive(Debug, PartialEq)]
struct Snapshot {
    partitions: BTreeMap<u32, PartitionState>,
    counters: Counters,
    closed_before: i64,
    open: Vec<(i64, WindowAgg)>,
    ready: Vec<(i64, Vec<(i64, WindowAgg)>)>,
    closed_windows: usize,
    pending_rejected: BTreeMap<u64, Vec<RejectedRecord>>,
}

fn snapshot(e: &Engine) -> Snapshot {
    Snapshot {
        partitions: e.partitions().clone(),
        counters: e.counters().clone(),
        closed_before: e.closed_before(),
        open: e.open_windows().map(|(s, w)| (s, w.clone())).collect(),
        ready: e
            .ready_buckets()
            .into_iter()
            .map(|(b, rows)| (b, rows.into_iter().map(|(s, w)| (s, w.clone())).collect()))
            .collect(),
        closed_windows: e.closed_windows(),
        pending_rejected: e.pending_rejected().clone(),
    }
}

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
    assigned: Vec<u32>,
    idle_mode: bool,
    engine: Engine,
    store: MemStore,
    /// Snapshot of the engine right after its last checkpoint was committed.
    committed: Option<Snapshot>,
    since_commit: Vec<Step<'a>>,
    expect: Expect,
    expect_committed: Expect,
    /// Wall clock of the idle mode, ms.
    now_ms: i64,
    /// Every file rendered: name -> bytes; a second rendering must give the same bytes.
    files: BTreeMap<String, Vec<u8>>,
    /// Every rejected file rendered: checkpoint -> bytes.
    rejected_files: BTreeMap<u64, Vec<u8>>,
    rejected: BTreeMap<(u32, i64), Reason>,
    rendered_opm: u64,
}

impl<'a> Harness<'a> {
    fn fresh_engine(cfg: EngineConfig, assigned: &[u32], r: Option<Restored>) -> Engine {
        let mut e = match r {
            Some(r) => Engine::restore(cfg, r),
            None => Engine::new(cfg),
        };
        e.set_topic("fuzz");
        e.assign(assigned.iter().copied());
        e
    }

    fn step(&mut self, s: Step<'a>) {
        let before = self.engine.counters().clone();
        let m_before = self
            .engine
            .partitions()
            .get(&s.partition)
            .and_then(|p| p.max_event_time);
        let got = self.engine.process(SourceRecord {
            partition: s.partition,
            offset: s.offset,
            timestamp_ms: s.timestamp_ms,
            value: s.value,
            full_len: None,
        });
        let after = self.engine.counters().clone();
        if s.replay {
            assert!(got.is_none());
            assert_eq!(after.replayed_skipped, before.replayed_skipped + 1);
            assert_eq!(after.read, before.read);
            self.expect.replayed += 1;
        } else {
            self.expect.read += 1;
            assert_eq!(after.read, before.read + 1);
            let newly: u64 = (0..7).map(|i| after.rejected[i] - before.rejected[i]).sum();
            if got.is_some() {
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

    /// take_delta, commit, then render what the committed state says is due.
    fn checkpoint(&mut self) {
        if let Some(d) = self.engine.take_delta() {
            assert_eq!(
                d.seq,
                self.store.seq + 1,
                "checkpoints are numbered in order"
            );
            self.store.commit(&d);
            self.committed = Some(snapshot(&self.engine));
            self.expect_committed = self.expect.clone();
            self.since_commit.clear();
            // The store now holds what the live engine holds.
            let restored = Self::fresh_engine(self.cfg, &self.assigned, Some(self.store.load()));
            assert_eq!(
                snapshot(&restored),
                *self.committed.as_ref().unwrap(),
                "restore(store) differs from the live engine after take_delta"
            );
        }
        self.render();
    }

    fn render(&mut self) {
        let due = self.engine.ready_buckets();
        let mut done = Vec::new();
        for (b, rows) in &due {
            assert!(!rows.is_empty(), "a ready bucket without windows");
            for family in Family::BOTH {
                let name = format!("{}/{}.json", family.folder(), bucket_name(*b));
                let bytes = render_bucket(family, rows);
                if let Some(old) = self.files.insert(name.clone(), bytes.clone()) {
                    assert_eq!(old, bytes, "{name} rendered again with other bytes");
                } else if family == Family::Time {
                    self.rendered_opm += rows.iter().map(|(_, w)| w.world.opm).sum::<u64>();
                }
            }
            done.push(*b);
        }
        for b in done {
            self.engine.mark_bucket_rendered(b);
        }
        let pending: Vec<(u64, Vec<RejectedRecord>)> = self
            .engine
            .pending_rejected()
            .iter()
            .map(|(s, r)| (*s, r.clone()))
            .collect();
        for (seq, recs) in pending {
            let bytes = render_rejected(&recs);
            match self.rejected_files.insert(seq, bytes.clone()) {
                Some(old) => assert_eq!(old, bytes, "rejected file {seq} changed"),
                None => {
                    for r in &recs {
                        let prev = self.rejected.insert((r.partition, r.offset), r.reason);
                        assert!(prev.is_none(), "rejected record {r:?} written twice");
                    }
                }
            }
            self.engine.mark_rejected_rendered(seq);
        }
    }

    /// The process dies after its last commit: everything since is lost, and the source
    /// hands the records from the committed offsets again.
    fn crash(&mut self) {
        self.engine = Self::fresh_engine(self.cfg, &self.assigned, Some(self.store.load()));
        if let Some(c) = &self.committed {
            assert_eq!(snapshot(&self.engine), *c, "restored engine differs");
        }
        self.expect = self.expect_committed.clone();
        // The job renders what is due before reading on.
        self.render();
        let again = std::mem::take(&mut self.since_commit);
        for s in again {
            self.step(s);
        }
    }
}

fn settings(line: &[u8]) -> (EngineConfig, u32, bool) {
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
            limits: Limits {
                max_record_bytes,
                max_items,
            },
            ..EngineConfig::default()
        },
        partitions,
        idle,
    )
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&c| c == b'\n');
    let (cfg, partitions, idle_mode) = settings(lines.next().unwrap_or(&[]));
    let assigned: Vec<u32> = (0..partitions).collect();
    let base_ms = (parse_timestamp("2020-09-18 10:00:00").unwrap() / 1_000_000) as i64;
    let mut h = Harness {
        cfg,
        engine: Harness::fresh_engine(cfg, &assigned, None),
        assigned,
        idle_mode,
        store: MemStore::default(),
        committed: None,
        since_commit: Vec::new(),
        expect: Expect::default(),
        expect_committed: Expect::default(),
        now_ms: base_ms,
        files: BTreeMap::new(),
        rejected_files: BTreeMap::new(),
        rejected: BTreeMap::new(),
        rendered_opm: 0,
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
    // End of a bounded input: close everything, commit, render.
    h.engine.close_all();
    h.checkpoint();
    h.checkpoint();
    assert!(h.engine.take_delta().is_none(), "nothing left to commit");
    assert_eq!(h.engine.open_windows().count(), 0);
    assert_eq!(h.engine.closed_windows(), 0);
    assert!(h.engine.pending_rejected().is_empty());
    let c = h.engine.counters().clone();
    assert_eq!(h.rendered_opm, c.accepted, "Σ OPM of the files != accepted");
    assert_eq!(h.rejected.len() as u64, c.rejected_total());
    for (i, reason) in Reason::ALL.iter().enumerate() {
        let n = h.rejected.values().filter(|r| *r == reason).count() as u64;
        assert_eq!(n, c.rejected[i], "counter of {reason}");
    }
    if !idle_mode {
        assert_eq!(c.rejected[Reason::WindowClosed.index()], 0);
        // Records on which the parser alone already differs from the reference (findings
        // F1-F3, see fuzz_targets/parse_invoice.rs) would differ here too: that target
        // covers them, so the comparison is left out for such an input.
        let parser_agrees = fed.iter().all(|r| {
            let mine = retail_kpi::decode::invoice::parse_invoice(&r.value, &cfg.limits)
                .map(|_| ())
                .map_err(|e| e.reason.code());
            let theirs = reference::check_record(
                &reference::RefRecord {
                    timestamp_ms: None,
                    ..r.clone()
                },
                &reference::RefConfig {
                    max_record_bytes: cfg.limits.max_record_bytes,
                    max_items: cfg.limits.max_items as usize,
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
                max_record_bytes: cfg.limits.max_record_bytes,
                max_items: cfg.limits.max_items as usize,
                max_countries: cfg.max_countries,
            },
        );
        let got: BTreeMap<(u32, i64), String> = h
            .rejected
            .iter()
            .map(|(k, r)| (*k, r.code().to_owned()))
            .collect();
        assert_eq!(
            got, want.rejected,
            "rejected records differ from the reference"
        );
        assert_eq!(h.files, want.files, "files differ from the reference");
    }
});
