//! The engine: per-partition lateness, the watermark, closing windows and buckets, and the
//! changes each checkpoint must commit (SPEC §4, §6). Pure: no I/O, no clock of its own
//! (callers pass the wall-clock time where the idle rule needs it).
//!
//! Flow: the job admits each record ([`Engine::admit`]: not counted before a restart),
//! decodes it, and hands the invoice to [`Engine::accept`] with its partition, offset and
//! broker timestamp; the engine never sees bytes. Between batches the job calls
//! [`Engine::advance`], then [`Engine::take_delta`], and commits the delta to the store;
//! the complete buckets a delta carries ([`Delta::ready`]) then belong to the sinks, and
//! the engine never learns whether they were written.

pub mod partial;
pub mod roles;

use crate::decode::invoice::{Invoice, Limits};
use crate::event_time::{
    bucket_start, ms_to_nanos, window_start, EventTime, BUCKET_SECS, NANOS_PER_SEC,
};
use crate::record::{Reason, RejectedRecord, Rejection};
use partial::{Agg, CountryMap, WindowAgg};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Settings of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Grace G: how far behind its partition's newest invoice an invoice may be, ns.
    pub grace: EventTime,
    /// Largest lead of an event time over its record's broker timestamp, ns.
    pub max_future_skew: EventTime,
    /// Most distinct countries one partition may bring into one window (SPEC §7).
    pub max_countries: usize,
}

/// The default cap on countries per window and partition: four times the 249 countries of
/// ISO 3166, so that no shop's real data comes near it, while a stream of made-up country
/// names cannot grow a window's memory (and its checkpoint) without bound.
pub const DEFAULT_MAX_COUNTRIES: usize = 1000;

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            grace: 60 * NANOS_PER_SEC,
            max_future_skew: 3600 * NANOS_PER_SEC,
            max_countries: DEFAULT_MAX_COUNTRIES,
        }
    }
}

/// The settings that change results (SPEC §6): the store records them, and a job with
/// other values refuses to continue it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultSettings {
    pub grace_ns: i128,
    pub max_future_skew_ns: i128,
    pub max_record_bytes: u64,
    pub max_items: u64,
    pub max_countries: u64,
}

impl ResultSettings {
    /// Each setting as `name = value`, for messages and `state inspect`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let d = |ns: i128| {
            humantime::format_duration(std::time::Duration::from_nanos(ns.max(0) as u64))
                .to_string()
        };
        vec![
            ("grace", d(self.grace_ns)),
            ("max_future_skew", d(self.max_future_skew_ns)),
            ("max_record_bytes", self.max_record_bytes.to_string()),
            ("max_items", self.max_items.to_string()),
            ("max_countries", self.max_countries.to_string()),
        ]
    }
}

impl ResultSettings {
    /// The engine's settings and the decoder's limits that change results.
    pub fn new(c: &EngineConfig, limits: &Limits) -> Self {
        ResultSettings {
            grace_ns: c.grace,
            max_future_skew_ns: c.max_future_skew,
            max_record_bytes: limits.max_record_bytes as u64,
            max_items: limits.max_items,
            max_countries: c.max_countries as u64,
        }
    }
}

/// What the engine remembers of one source partition. The store keeps its own layout of
/// it (`state::schema::StoredPartition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionState {
    /// Offset of the next record to read; `None` before the first record.
    pub next_offset: Option<i64>,
    /// M_p: the largest event time accepted from this partition; `None` is −∞.
    pub max_event_time: Option<EventTime>,
}

/// Running totals, committed with every checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counters {
    pub read: u64,
    pub accepted: u64,
    /// Indexed by [`Reason::index`].
    pub rejected: [u64; 7],
    /// Records below a partition's committed offset, seen again after a seek and skipped.
    pub replayed_skipped: u64,
    pub windows_closed: u64,
    pub buckets_rendered: u64,
}

impl Counters {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }
}

/// Upper bounds (seconds) of the lateness buckets; a last bucket takes the rest. They span
/// in-order arrival (0) to a day, around the grace values an operator would consider.
pub const LATENESS_BOUNDS_SECS: [i64; 13] = [
    0, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 21_600, 86_400,
];

/// How far each invoice arrived behind its partition's M_p (as it was before it; 0 when
/// ahead or first), counted in fixed buckets, for accepted invoices and for those refused
/// on time grounds (future timestamp, late, window closed). The job exports it as a
/// histogram so an operator can choose the grace; counting here keeps the engine free of
/// I/O. Not committed: like any Prometheus counter it starts from zero with the process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lateness {
    /// `[accepted, rejected]`, each indexed like [`LATENESS_BOUNDS_SECS`] plus the rest.
    pub buckets: [[u64; LATENESS_BOUNDS_SECS.len() + 1]; 2],
    /// `[accepted, rejected]` sums of lateness, ns.
    pub sum_nanos: [u128; 2],
}

impl Lateness {
    pub const ACCEPTED: usize = 0;
    pub const REJECTED: usize = 1;

    fn record(&mut self, late_by: EventTime, accepted: bool) {
        let late_by = late_by.max(0);
        let i = LATENESS_BOUNDS_SECS
            .iter()
            .position(|&b| late_by <= b as EventTime * NANOS_PER_SEC)
            .unwrap_or(LATENESS_BOUNDS_SECS.len());
        let o = if accepted {
            Self::ACCEPTED
        } else {
            Self::REJECTED
        };
        self.buckets[o][i] += 1;
        self.sum_nanos[o] += late_by as u128;
    }

    /// Invoices counted for `outcome` ([`Lateness::ACCEPTED`] or [`Lateness::REJECTED`]).
    pub fn count(&self, outcome: usize) -> u64 {
        self.buckets[outcome].iter().sum()
    }
}

/// Everything one checkpoint commits, in one atomic batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delta {
    pub seq: u64,
    pub partitions: Vec<(u32, PartitionState)>,
    /// The world row of each open window that changed.
    pub open_world: Vec<(i64, Agg)>,
    /// The country rows that changed, by window: only these are written (SPEC §7's cap
    /// bounds a window's rows, this bounds a checkpoint to what the interval touched).
    pub open_countries: Vec<(i64, String, Agg)>,
    /// Countries a partition brought into an open window for the first time (the cap
    /// counts them; a restart must count the same).
    pub new_members: Vec<(i64, u32, String)>,
    /// Open windows that closed: their rows and members go.
    pub open_deletes: Vec<i64>,
    /// Windows closed since the last checkpoint (also those of `ready`).
    pub closed_inserts: Vec<(i64, WindowAgg)>,
    /// Buckets whose windows are now all closed, with those windows: once committed,
    /// their files are the sinks' to write.
    pub ready: Vec<ClosedBucket>,
    /// Records refused since the last checkpoint, filed under `seq` (set by the job).
    pub rejected: Vec<RejectedRecord>,
    /// Windows starting before this (seconds) are closed.
    pub closed_before: i64,
    pub counters: Counters,
    /// What the source read up to this checkpoint (set by the job, from the source).
    pub source: Option<crate::source::SourceIdentity>,
    /// The settings that change results, recorded with every checkpoint (set by the job:
    /// they include the decoder's limits).
    pub settings: Option<ResultSettings>,
}

/// The engine's state as the store gives it back after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Restored {
    pub seq: u64,
    /// What the store recorded of its source; `None` for a new store or an older build's.
    pub source: Option<crate::source::SourceIdentity>,
    /// The settings the store's results were computed with; `None` as for `source`.
    pub settings: Option<ResultSettings>,
    pub partitions: Vec<(u32, PartitionState)>,
    pub open: Vec<(i64, WindowAgg)>,
    /// Which partition brought which country into which open window.
    pub members: Vec<(i64, u32, String)>,
    /// Closed windows not written yet, in window order.
    pub closed: Vec<(i64, WindowAgg)>,
    /// Complete buckets whose files are due.
    pub ready_buckets: Vec<i64>,
    /// Committed rejected records whose file is due, by checkpoint.
    pub pending_rejected: Vec<(u64, Vec<RejectedRecord>)>,
    pub closed_before: i64,
    pub counters: Counters,
}

impl Restored {
    /// Takes out the complete buckets with their windows, in order: after a restart they
    /// are the sinks' to write, not the engine's.
    pub fn take_closed_buckets(&mut self) -> Vec<ClosedBucket> {
        let ready: BTreeSet<i64> = self.ready_buckets.iter().copied().collect();
        let mut by_bucket: BTreeMap<i64, Vec<(i64, WindowAgg)>> =
            ready.iter().map(|b| (*b, Vec::new())).collect();
        let mut kept = Vec::with_capacity(self.closed.len());
        for (s, w) in self.closed.drain(..) {
            match by_bucket.get_mut(&bucket_start(s)) {
                Some(windows) => windows.push((s, w)),
                None => kept.push((s, w)),
            }
        }
        self.closed = kept;
        by_bucket.into_iter().collect()
    }
}

struct OpenWindow {
    agg: WindowAgg,
    /// Changed since the last checkpoint.
    dirty: bool,
    /// Per partition, the countries it brought into this window (for the cap), each with
    /// whether its row changed since the last checkpoint.
    members: HashMap<u32, CountryMap<bool>, foldhash::fast::RandomState>,
    /// Members added since the last checkpoint.
    new_members: Vec<(u32, Box<str>)>,
}

impl OpenWindow {
    fn new(agg: WindowAgg, dirty: bool) -> OpenWindow {
        OpenWindow {
            agg,
            dirty,
            members: HashMap::default(),
            new_members: Vec::new(),
        }
    }
}

/// Where a decoded invoice came from: what the aggregator needs of its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordAt {
    pub partition: u32,
    pub offset: i64,
    /// The broker timestamp in ms, if the record has one (the future guard of SPEC §7).
    pub timestamp_ms: Option<i64>,
}

/// A bucket whose windows are all closed, with those windows in order: what its files are
/// rendered from.
pub type ClosedBucket = (i64, Vec<(i64, WindowAgg)>);

/// The stream engine. See the module documentation for the protocol.
pub struct Engine {
    cfg: EngineConfig,
    seq: u64,
    partitions: BTreeMap<u32, PartitionState>,
    open: BTreeMap<i64, OpenWindow>,
    /// Closed windows whose bucket is not complete yet.
    closed: BTreeMap<i64, WindowAgg>,
    closed_before: i64,
    counters: Counters,
    lateness: Lateness,
    all_idle_since_ms: Option<i64>,
    // What the next delta carries besides the dirty windows.
    changed: bool,
    open_deletes: Vec<i64>,
    closed_inserts: Vec<i64>,
    /// Buckets completed since the last delta.
    new_ready: Vec<i64>,
    /// Every bucket starting before this is complete and marked so: a close looks only at
    /// the windows closed from here on, never again at all of them.
    complete_before: i64,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine::restore(
            cfg,
            Restored {
                closed_before: i64::MIN,
                ..Restored::default()
            },
        )
    }

    /// The engine as the store gave it back. Closed windows of complete buckets
    /// (`r.ready_buckets`) are not the engine's any more but the sinks': the caller takes
    /// them out first ([`Restored::take_closed_buckets`]); any left are ignored here.
    pub fn restore(cfg: EngineConfig, r: Restored) -> Engine {
        let mut open: BTreeMap<i64, OpenWindow> = r
            .open
            .into_iter()
            .map(|(s, w)| (s, OpenWindow::new(w, false)))
            .collect();
        for (s, p, c) in r.members {
            if let Some(w) = open.get_mut(&s) {
                w.members
                    .entry(p)
                    .or_default()
                    .insert(c.into_boxed_str(), false);
            }
        }
        let ready: BTreeSet<i64> = r.ready_buckets.iter().copied().collect();
        Engine {
            cfg,
            seq: r.seq,
            partitions: r.partitions.into_iter().collect(),
            open,
            closed: r
                .closed
                .into_iter()
                .filter(|(s, _)| !ready.contains(&bucket_start(*s)))
                .collect(),
            closed_before: r.closed_before,
            counters: r.counters,
            lateness: Lateness::default(),
            all_idle_since_ms: None,
            changed: false,
            open_deletes: Vec::new(),
            closed_inserts: Vec::new(),
            new_ready: Vec::new(),
            complete_before: i64::MIN,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Makes the watermark wait for these partitions too (a partition never seen is −∞).
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = u32>) {
        for p in partitions {
            self.partitions.entry(p).or_default();
        }
    }

    pub fn partitions(&self) -> &BTreeMap<u32, PartitionState> {
        &self.partitions
    }

    /// Where each partition's source resumes: the next offset to read.
    pub fn positions(&self) -> crate::source::Positions {
        self.partitions
            .iter()
            .map(|(p, s)| (*p, s.next_offset))
            .collect()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Lateness of the invoices this engine has seen since it was created (not restored).
    pub fn lateness(&self) -> &Lateness {
        &self.lateness
    }

    pub fn closed_before(&self) -> i64 {
        self.closed_before
    }

    pub fn open_windows(&self) -> impl Iterator<Item = (i64, &WindowAgg)> {
        self.open.iter().map(|(s, w)| (*s, &w.agg))
    }

    /// Takes the record at `offset` of `partition` into account, before it is decoded.
    /// `false`: it is below the partition's committed offset, was counted before a
    /// restart, and is skipped (not decoded, not counted again).
    #[inline]
    pub fn admit(&mut self, partition: u32, offset: i64) -> bool {
        let st = self.partitions.entry(partition).or_default();
        if let Some(next) = st.next_offset {
            if offset < next {
                self.counters.replayed_skipped += 1;
                return false;
            }
        }
        st.next_offset = Some(offset + 1);
        self.changed = true;
        self.counters.read += 1;
        true
    }

    /// A decoded invoice of an admitted record: the time checks of SPEC §4 and §7 (future,
    /// late, closed window) and the country cap, then into its window. On `Err` nothing
    /// changed but the lateness histogram; the caller files the rejection
    /// ([`Engine::count_rejected`] and the rejected sink).
    pub fn accept(&mut self, at: RecordAt, inv: &Invoice<'_>) -> Result<(), Rejection> {
        let st = self.partitions.entry(at.partition).or_default();
        let checked = check_time(
            inv,
            at.timestamp_ms,
            st.max_event_time,
            self.closed_before,
            &self.cfg,
        );
        let late_by = st.max_event_time.map_or(0, |m| m - inv.event_time);
        self.lateness.record(late_by, checked.is_ok());
        checked?;
        let t = inv.event_time;
        let ws = window_start(t);
        let w = self
            .open
            .entry(ws)
            .or_insert_with(|| OpenWindow::new(WindowAgg::default(), true));
        // The last check of SPEC §7: countries per window and partition.
        let members = w.members.entry(at.partition).or_default();
        let held = members.len();
        match members.get_mut(inv.country.as_ref()) {
            Some(changed) => *changed = true,
            None if held >= self.cfg.max_countries => {
                return Err(Rejection::new(
                    Reason::TooLarge,
                    format!(
                        "window {} already holds {} countries from partition {} (max_countries); country {:?} would be one more",
                        crate::event_time::format_instant(ws),
                        held,
                        at.partition,
                        inv.country
                    ),
                ));
            }
            None => {
                members.insert(inv.country.as_ref().into(), true);
                w.new_members
                    .push((at.partition, inv.country.as_ref().into()));
            }
        }
        st.max_event_time = Some(st.max_event_time.map_or(t, |m| m.max(t)));
        w.agg.add(inv);
        w.dirty = true;
        self.counters.accepted += 1;
        Ok(())
    }

    /// Counts an admitted record refused by the decoder or by [`Engine::accept`].
    #[inline]
    pub fn count_rejected(&mut self, reason: Reason) {
        self.counters.rejected[reason.index()] += 1;
    }

    /// The watermark W of SPEC §4, `None` for −∞. `idle` names the partitions the source
    /// found idle. With every partition idle, W moves on at wall-clock speed from the time
    /// they all became idle, if `now_ms` is given; a bounded run passes `None`.
    pub fn watermark(&mut self, now_ms: Option<i64>, idle: &BTreeSet<u32>) -> Option<EventTime> {
        let g = self.cfg.grace;
        let mut w: Option<EventTime> = None;
        let mut any_active = false;
        for (p, st) in &self.partitions {
            if idle.contains(p) {
                continue;
            }
            any_active = true;
            let m = st.max_event_time? - g;
            w = Some(w.map_or(m, |x| x.min(m)));
        }
        if any_active {
            self.all_idle_since_ms = None;
            return w;
        }
        let max = self
            .partitions
            .values()
            .filter_map(|s| s.max_event_time)
            .max()?
            - g;
        match now_ms {
            Some(now) => {
                let since = *self.all_idle_since_ms.get_or_insert(now);
                Some(max + ms_to_nanos((now - since).max(0)))
            }
            None => Some(max),
        }
    }

    /// Closes the windows the watermark has passed, and the buckets they complete.
    pub fn advance(&mut self, now_ms: Option<i64>, idle: &BTreeSet<u32>) {
        if let Some(w) = self.watermark(now_ms, idle) {
            self.close_before(window_start(w));
        }
    }

    /// End of a bounded input: every window closes, and so does every bucket that holds one.
    pub fn close_all(&mut self) {
        let last = self
            .open
            .keys()
            .next_back()
            .into_iter()
            .chain(self.closed.keys().next_back())
            .max();
        if let Some(&last) = last {
            self.close_before(bucket_start(last) + BUCKET_SECS);
        }
    }

    fn close_before(&mut self, before: i64) {
        if before <= self.closed_before {
            return;
        }
        self.closed_before = before;
        self.changed = true;
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() >= before {
                break;
            }
            let (start, w) = entry.remove_entry();
            self.open_deletes.push(start);
            self.closed_inserts.push(start);
            self.closed.insert(start, w.agg);
            self.counters.windows_closed += 1;
        }
        // A bucket is complete once its last window is closed: b + BUCKET_SECS <= before,
        // that is b below the bucket that holds `before` (both are multiples of it).
        let complete = bucket_start(before);
        if complete > self.complete_before {
            let mut last = None;
            for (&s, _) in self.closed.range(self.complete_before..complete) {
                let b = bucket_start(s);
                if last != Some(b) {
                    self.new_ready.push(b);
                    last = Some(b);
                }
            }
            self.complete_before = complete;
        }
    }

    /// The changes since the last checkpoint, or `None` when there are none. The caller
    /// commits it, and only then hands its complete buckets ([`Delta::ready`]) to the
    /// sinks: the engine keeps no window of a complete bucket.
    pub fn take_delta(&mut self) -> Option<Delta> {
        if !self.changed {
            return None;
        }
        self.changed = false;
        self.seq += 1;
        let seq = self.seq;
        let mut open_world = Vec::new();
        let mut open_countries = Vec::new();
        let mut new_members = Vec::new();
        for (s, w) in self.open.iter_mut().filter(|(_, w)| w.dirty) {
            w.dirty = false;
            open_world.push((*s, w.agg.world));
            let mut changed: BTreeSet<&str> = BTreeSet::new();
            for m in w.members.values_mut() {
                for (c, flag) in m.iter_mut() {
                    if std::mem::take(flag) {
                        changed.insert(c);
                    }
                }
            }
            for c in changed {
                if let Some(a) = w.agg.countries.get(c) {
                    open_countries.push((*s, c.to_owned(), *a));
                }
            }
            for (p, c) in w.new_members.drain(..) {
                new_members.push((*s, p, c.into_string()));
            }
        }
        let closed_inserts = std::mem::take(&mut self.closed_inserts)
            .into_iter()
            .filter_map(|s| self.closed.get(&s).map(|w| (s, w.clone())))
            .collect();
        let mut ready_keys = std::mem::take(&mut self.new_ready);
        ready_keys.sort_unstable();
        let ready = ready_keys
            .into_iter()
            .map(|b| {
                let starts: Vec<i64> = self
                    .closed
                    .range(b..b + BUCKET_SECS)
                    .map(|(s, _)| *s)
                    .collect();
                let windows = starts
                    .into_iter()
                    .map(|s| (s, self.closed.remove(&s).expect("a window just listed")))
                    .collect();
                (b, windows)
            })
            .collect();
        Some(Delta {
            seq,
            partitions: self.partitions.iter().map(|(p, s)| (*p, *s)).collect(),
            open_world,
            open_countries,
            new_members,
            open_deletes: std::mem::take(&mut self.open_deletes),
            closed_inserts,
            ready,
            rejected: Vec::new(),
            closed_before: self.closed_before,
            counters: self.counters.clone(),
            source: None,
            settings: None,
        })
    }

    /// The source lost records of partition `p` (SPEC §6, `--on-data-loss continue`): it
    /// goes on from `next`, which may be below the committed offset (a re-created topic).
    /// M_p is kept, so lateness still follows the partition's own history.
    pub fn restart_partition_at(&mut self, p: u32, next: i64) {
        let st = self.partitions.entry(p).or_default();
        st.next_offset = Some(next);
        self.changed = true;
    }

    /// Closed windows held for a bucket that is not complete yet.
    pub fn closed_windows(&self) -> usize {
        self.closed.len()
    }
}

/// The time checks of SPEC §4 and §7, in their order: future guard, lateness, closed window.
fn check_time(
    inv: &Invoice<'_>,
    record_ts_ms: Option<i64>,
    max_event_time: Option<EventTime>,
    closed_before: i64,
    cfg: &EngineConfig,
) -> Result<(), Rejection> {
    let t = inv.event_time;
    if let Some(ts) = record_ts_ms.filter(|&ts| ts >= 0) {
        let limit = ms_to_nanos(ts) + cfg.max_future_skew;
        if t > limit {
            return Err(Rejection::new(
                Reason::FutureTimestamp,
                format!(
                    "event time {} is more than max_future_skew ({}s) ahead of the record timestamp {ts} ms",
                    inv.timestamp,
                    cfg.max_future_skew / NANOS_PER_SEC
                ),
            ));
        }
    }
    if let Some(m) = max_event_time {
        if t < m - cfg.grace {
            return Err(Rejection::new(
                Reason::Late,
                format!(
                    "event time {} is {:.3}s behind the newest invoice of its partition, more than the grace of {}s",
                    inv.timestamp,
                    (m - t) as f64 / NANOS_PER_SEC as f64,
                    cfg.grace / NANOS_PER_SEC
                ),
            ));
        }
    }
    let ws = window_start(t);
    if ws < closed_before {
        return Err(Rejection::new(
            Reason::WindowClosed,
            format!(
                "event time {} falls in window {} which is already closed",
                inv.timestamp,
                crate::event_time::format_instant(ws)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoder, JsonInvoiceDecoder};
    use crate::record::SourceRecord;

    /// What the job does with a record (`job::Intake`), without keeping rejected records:
    /// `Ok` if accepted, else the rejection.
    fn process(e: &mut Engine, rec: SourceRecord<'_>) -> Option<Result<(), Rejection>> {
        if !e.admit(rec.partition, rec.offset) {
            return None;
        }
        let at = RecordAt {
            partition: rec.partition,
            offset: rec.offset,
            timestamp_ms: rec.timestamp_ms,
        };
        let r = JsonInvoiceDecoder::default()
            .decode(rec.value, rec.len())
            .and_then(|inv| e.accept(at, &inv));
        if let Err(rej) = &r {
            e.count_rejected(rej.reason);
        }
        Some(r)
    }

    fn rec(p: u32, off: i64, ts: &str) -> (u32, i64, String) {
        let v = format!(
            r#"{{"invoice_no":1,"country":"UK","timestamp":"{ts}","type":"ORDER","items":[{{"SKU":"a","title":"b","unit_price":1.5,"quantity":2}}]}}"#
        );
        (p, off, v)
    }

    fn feed(e: &mut Engine, recs: &[(u32, i64, String)]) -> Vec<Option<Reason>> {
        recs.iter()
            .map(|(p, o, v)| {
                let before = e.counters().rejected;
                let r = process(
                    e,
                    SourceRecord {
                        partition: *p,
                        offset: *o,
                        timestamp_ms: None,
                        value: v.as_bytes(),
                        full_len: None,
                    },
                );
                if matches!(r, Some(Ok(()))) {
                    None
                } else {
                    let after = e.counters().rejected;
                    Reason::ALL
                        .iter()
                        .copied()
                        .find(|r| after[r.index()] > before[r.index()])
                }
            })
            .collect()
    }

    #[test]
    fn lateness_is_per_partition_and_strict() {
        let mut e = Engine::new(EngineConfig::default());
        let out = feed(
            &mut e,
            &[
                rec(0, 0, "2020-09-18 10:05:00"),
                rec(0, 1, "2020-09-18 10:04:00"), // exactly M - G: not late
                rec(0, 2, "2020-09-18 10:03:59.999"), // late
                rec(1, 0, "2020-09-18 09:00:00"), // other partition: own history
                rec(0, 3, "2020-09-18 10:03:59.999"), // still late
            ],
        );
        assert_eq!(
            out,
            [None, None, Some(Reason::Late), None, Some(Reason::Late)]
        );
        assert_eq!(
            e.partitions()[&0].max_event_time,
            Some(crate::event_time::parse_timestamp("2020-09-18 10:05:00").unwrap())
        );
    }

    #[test]
    fn rejected_records_never_move_m_p() {
        let mut e = Engine::new(EngineConfig::default());
        let mut bad = rec(0, 0, "2020-09-18 11:00:00");
        bad.2 = bad.2.replace("ORDER", "order");
        let out = feed(&mut e, &[bad, rec(0, 1, "2020-09-18 10:00:00")]);
        assert_eq!(out, [Some(Reason::InvalidInvoice), None]);
    }

    #[test]
    fn watermark_waits_for_every_partition_and_closes_windows() {
        let mut e = Engine::new(EngineConfig::default());
        e.assign([0, 1]);
        feed(
            &mut e,
            &[
                rec(0, 0, "2020-09-18 10:00:30"),
                rec(0, 1, "2020-09-18 10:10:00"),
            ],
        );
        let none = BTreeSet::new();
        assert_eq!(
            e.watermark(None, &none),
            None,
            "partition 1 is still at -inf"
        );
        e.advance(None, &none);
        assert_eq!(e.open_windows().count(), 2);
        feed(&mut e, &[rec(1, 0, "2020-09-18 10:02:00")]);
        e.advance(None, &none);
        // W = 10:01:00: window 10:00 closes (end 10:01 <= W), 10:02 stays open.
        let open: Vec<i64> = e.open_windows().map(|(s, _)| s).collect();
        assert_eq!(open.len(), 2);
        assert_eq!(e.closed_windows(), 1);
        // Partition 1 idle: W = 10:09 from partition 0.
        e.advance(None, &BTreeSet::from([1]));
        assert_eq!(e.open_windows().count(), 1);
        // No bucket is complete: 10:00..10:10 holds nothing past 10:09 yet but is not closed.
        assert!(e.take_delta().unwrap().ready.is_empty());
    }

    #[test]
    fn all_idle_moves_with_the_wall_clock_and_window_closed_follows() {
        let mut e = Engine::new(EngineConfig::default());
        e.assign([0]);
        feed(&mut e, &[rec(0, 0, "2020-09-18 10:00:30")]);
        let idle = BTreeSet::from([0]);
        e.advance(Some(1_000), &idle);
        assert_eq!(e.closed_windows(), 0);
        e.advance(Some(1_000 + 31_000), &idle); // W = 10:00:30 - 60 + 31 s = 10:00:01
        assert_eq!(e.closed_windows(), 0);
        e.advance(Some(1_000 + 90_000), &idle); // W = 10:01:00
        assert_eq!(e.closed_windows(), 1);
        let out = feed(&mut e, &[rec(0, 1, "2020-09-18 10:00:59")]);
        assert_eq!(out, [Some(Reason::WindowClosed)]);
    }

    #[test]
    fn replayed_offsets_are_skipped() {
        let mut e = Engine::new(EngineConfig::default());
        feed(
            &mut e,
            &[
                rec(0, 0, "2020-09-18 10:00:30"),
                rec(0, 1, "2020-09-18 10:00:31"),
            ],
        );
        feed(&mut e, &[rec(0, 1, "2020-09-18 10:00:31")]);
        assert_eq!(e.counters().accepted, 2);
        assert_eq!(e.counters().replayed_skipped, 1);
    }

    #[test]
    fn future_guard_boundary() {
        let mut e = Engine::new(EngineConfig::default());
        let (_, _, v) = rec(0, 0, "2020-09-18 11:00:00");
        let ts =
            (crate::event_time::parse_timestamp("2020-09-18 10:00:00").unwrap() / 1_000_000) as i64;
        let r = |e: &mut Engine, off, ts| {
            matches!(
                process(
                    e,
                    SourceRecord {
                        partition: 0,
                        offset: off,
                        timestamp_ms: ts,
                        value: v.as_bytes(),
                        full_len: None,
                    },
                ),
                Some(Ok(()))
            )
        };
        assert!(
            r(&mut e, 0, Some(ts)),
            "exactly max_future_skew ahead is accepted"
        );
        assert!(!r(&mut e, 1, Some(ts - 1)));
        assert_eq!(e.counters().rejected[Reason::FutureTimestamp.index()], 1);
        assert!(
            r(&mut e, 2, Some(-1)),
            "a negative timestamp is not checked"
        );
        assert!(r(&mut e, 3, None));
    }

    #[test]
    fn close_all_completes_every_bucket_and_deltas_carry_it() {
        let mut e = Engine::new(EngineConfig::default());
        feed(
            &mut e,
            &[
                rec(0, 0, "2020-09-18 10:00:30"),
                rec(0, 1, "2020-09-18 10:25:00"),
            ],
        );
        let d1 = e.take_delta().unwrap();
        assert_eq!(d1.open_world.len(), 2);
        assert_eq!(d1.open_countries.len(), 2);
        assert_eq!(d1.new_members.len(), 2);
        assert!(e.take_delta().is_none(), "nothing changed");
        e.close_all();
        let d2 = e.take_delta().unwrap();
        assert_eq!(d2.ready.len(), 2);
        assert_eq!(d2.ready[0].1.len(), 1, "each bucket with its one window");
        assert_eq!(d2.closed_inserts.len(), 2);
        assert_eq!(d2.open_deletes.len(), 2);
        // The complete buckets are the sinks' now: the engine keeps none of their windows.
        assert_eq!(e.closed_windows(), 0);
        // After the end, a record for the closed range is refused, never reopening a file.
        let out = feed(&mut e, &[rec(0, 2, "2020-09-18 10:29:59")]);
        assert_eq!(out, [Some(Reason::WindowClosed)]);
    }

    fn rec_in(p: u32, off: i64, ts: &str, country: &str) -> (u32, i64, String) {
        let (p, off, v) = rec(p, off, ts);
        (p, off, v.replace("\"UK\"", &format!("{country:?}")))
    }

    /// SPEC §7: an invoice that would add one country more than the cap to its window, as
    /// counted for its own partition, is too large; other partitions have caps of their own.
    #[test]
    fn countries_per_window_and_partition_are_capped() {
        let mut e = Engine::new(EngineConfig {
            max_countries: 2,
            ..EngineConfig::default()
        });
        let out = feed(
            &mut e,
            &[
                rec_in(0, 0, "2020-09-18 10:00:01", "A"),
                rec_in(0, 1, "2020-09-18 10:00:02", "B"),
                rec_in(0, 2, "2020-09-18 10:00:03", "A"), // known: fine
                rec_in(0, 3, "2020-09-18 10:00:04", "C"), // a third: too large
                rec_in(1, 0, "2020-09-18 10:00:05", "C"), // partition 1's first
                rec_in(0, 4, "2020-09-18 10:01:04", "C"), // another window
            ],
        );
        assert_eq!(out, [None, None, None, Some(Reason::TooLarge), None, None]);
        let (_, _, v) = rec_in(0, 5, "2020-09-18 10:00:06", "D");
        let refused = process(
            &mut e,
            SourceRecord {
                partition: 0,
                offset: 5,
                timestamp_ms: None,
                value: v.as_bytes(),
                full_len: None,
            },
        );
        let Some(Err(rej)) = refused else {
            panic!("a fourth country was accepted: {refused:?}")
        };
        assert!(rej.message.contains("max_countries"), "{}", rej.message);
        // The refused invoice moved nothing: 10:00:04 is not M_0.
        assert_eq!(
            e.partitions()[&0].max_event_time,
            Some(crate::event_time::parse_timestamp("2020-09-18 10:01:04").unwrap())
        );
    }

    /// A checkpoint carries the country rows that changed, not the whole window.
    #[test]
    fn a_delta_carries_only_the_rows_that_changed() {
        let mut e = Engine::new(EngineConfig::default());
        let many: Vec<_> = (0..50)
            .map(|i| rec_in(0, i, "2020-09-18 10:00:01", &format!("C{i}")))
            .collect();
        feed(&mut e, &many);
        let d = e.take_delta().unwrap();
        assert_eq!((d.open_world.len(), d.open_countries.len()), (1, 50));
        assert_eq!(d.new_members.len(), 50);
        feed(&mut e, &[rec_in(0, 50, "2020-09-18 10:00:02", "C7")]);
        let d = e.take_delta().unwrap();
        assert_eq!(d.open_world.len(), 1);
        assert_eq!(d.open_countries.len(), 1);
        assert_eq!(d.open_countries[0].1, "C7");
        assert_eq!(d.open_countries[0].2.opm, 2);
        assert!(d.new_members.is_empty());
    }

    #[test]
    fn lateness_is_counted_per_partition_in_fixed_buckets() {
        let mut e = Engine::new(EngineConfig::default());
        let out = feed(
            &mut e,
            &[
                rec(0, 0, "2020-09-18 10:05:00"),   // first of p0: 0
                rec(0, 1, "2020-09-18 10:04:30"),   // 30 s behind: accepted, bucket le=30
                rec(1, 0, "2020-09-18 10:00:00"),   // first of p1: 0, p0 does not matter
                rec(0, 2, "2020-09-18 10:03:59"),   // 61 s behind: late, bucket le=120
                rec(0, 3, "2020-09-18 10:05:00.5"), // ahead: 0
            ],
        );
        assert_eq!(out, [None, None, None, Some(Reason::Late), None]);
        let l = e.lateness();
        let idx = |secs: i64| {
            LATENESS_BOUNDS_SECS
                .iter()
                .position(|&b| b == secs)
                .unwrap()
        };
        assert_eq!(l.count(Lateness::ACCEPTED), 4);
        assert_eq!(l.count(Lateness::REJECTED), 1);
        assert_eq!(l.buckets[Lateness::ACCEPTED][idx(0)], 3);
        assert_eq!(l.buckets[Lateness::ACCEPTED][idx(30)], 1);
        assert_eq!(l.buckets[Lateness::REJECTED][idx(120)], 1);
        assert_eq!(
            l.sum_nanos,
            [30 * NANOS_PER_SEC as u128, 61 * NANOS_PER_SEC as u128]
        );
        // Bad input is not an invoice: it has no lateness.
        feed(&mut e, &[(0, 4, "{".to_owned())]);
        assert_eq!(e.lateness().count(Lateness::REJECTED), 1);
    }
}
