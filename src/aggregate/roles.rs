//! The engine's side of the two roles of a run over several processes (`crate::distributed`).
//!
//! An **aggregate** process keeps one [`Engine`] per source partition it owns and calls
//! [`Engine::accept`] as the single-process job does, so lateness, the future guard and the
//! country cap are decided by the same code, from the partition's own history. Instead of
//! closing windows it hands the sums added since its last transaction to Kafka
//! ([`Engine::take_partials`]) and keeps only what later decisions need: M_p and, per
//! window an invoice could still reach, the countries the partition brought in
//! ([`Engine::resume_point`]).
//!
//! The **merge** process keeps one [`Engine`] for every source partition and adds those
//! partials in ([`Engine::merge_window`]), with each partition's progress
//! ([`Engine::apply_progress`]); it closes windows and checkpoints exactly as the
//! single-process job does.

use super::partial::WindowAgg;
use super::{Engine, OpenWindow, PartitionState, Restored};
use crate::event_time::{EventTime, NANOS_PER_SEC, WINDOW_SECS};
use crate::record::Reason;

/// The members' key in a merge engine: the cap is the aggregate side's, so the merge keeps
/// one set of countries per window only to know which rows changed.
const MERGED: u32 = u32::MAX;

/// What a partition's next owner needs to decide as this one would have: the next offset,
/// M_p, and the countries of each window the partition may still add to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResumePoint {
    pub state: PartitionState,
    /// Window start → the countries the partition brought into it, in byte order.
    pub members: Vec<(i64, Vec<String>)>,
}

/// Counts a partials record carries: what its records did since the last transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub read: u64,
    pub accepted: u64,
    pub rejected: [u64; 7],
}

impl Engine {
    /// An aggregate process's engine for one partition, from the resume point its last
    /// owner committed (or an empty one).
    pub fn for_partition(cfg: super::EngineConfig, p: u32, from: ResumePoint) -> Engine {
        let open = from
            .members
            .iter()
            .map(|(s, _)| (*s, WindowAgg::default()))
            .collect();
        let members = from
            .members
            .into_iter()
            .flat_map(|(s, cs)| cs.into_iter().map(move |c| (s, p, c)))
            .collect();
        Engine::restore(
            cfg,
            Restored {
                partitions: vec![(p, from.state)],
                open,
                members,
                closed_before: i64::MIN,
                ..Restored::default()
            },
        )
    }

    /// Aggregate role: the sums added to each window since the last call. The windows are
    /// emptied but keep their countries (the cap counts them); windows that every later
    /// invoice of the partition would be late for are forgotten, so memory follows the
    /// windows still open to the partition, not the input.
    pub fn take_partials(&mut self) -> Vec<(i64, WindowAgg)> {
        let mut out = Vec::new();
        for (s, w) in self.open.iter_mut() {
            if !w.dirty {
                continue;
            }
            w.dirty = false;
            for m in w.members.values_mut() {
                m.values_mut().for_each(|f| *f = false);
            }
            w.new_members.clear();
            out.push((*s, std::mem::take(&mut w.agg)));
        }
        self.changed = false;
        if let Some(horizon) = self.lateness_horizon() {
            // An invoice at t is late when t < M_p − G: a window ending at or before
            // M_p − G can take none.
            self.open
                .retain(|s, _| ((*s + WINDOW_SECS) as EventTime) * NANOS_PER_SEC > horizon);
        }
        out
    }

    /// The smallest M_p − G of the engine's partitions, if every one has accepted an invoice.
    fn lateness_horizon(&self) -> Option<EventTime> {
        self.partitions
            .values()
            .map(|s| s.max_event_time.map(|m| m - self.cfg.grace))
            .min()
            .flatten()
    }

    /// Aggregate role: what the partition's next owner resumes from.
    pub fn resume_point(&self, p: u32) -> ResumePoint {
        let members = self
            .open
            .iter()
            .filter_map(|(s, w)| {
                let m = w.members.get(&p)?;
                let mut cs: Vec<String> = m.keys().map(|c| c.to_string()).collect();
                cs.sort_unstable();
                Some((*s, cs))
            })
            .collect();
        ResumePoint {
            state: self.partitions.get(&p).copied().unwrap_or_default(),
            members,
        }
    }

    /// Merge role: adds another process's partial of the window starting at `start`.
    /// A window closed already (only through the idle rules) cannot change: its invoices
    /// are counted as `window_closed` instead of accepted, and `Err` gives how many.
    pub fn merge_window(&mut self, start: i64, part: &WindowAgg) -> Result<(), u64> {
        if start < self.closed_before {
            let n = part.world.opm;
            self.counters.accepted -= n;
            self.counters.rejected[Reason::WindowClosed.index()] += n;
            self.changed = true;
            return Err(n);
        }
        let w = self
            .open
            .entry(start)
            .or_insert_with(|| OpenWindow::new(WindowAgg::default(), true));
        w.agg.merge(part);
        w.dirty = true;
        let m = w.members.entry(MERGED).or_default();
        for c in part.countries.keys() {
            match m.get_mut(c) {
                Some(changed) => *changed = true,
                None => {
                    m.insert(c.clone(), true);
                    w.new_members.push((MERGED, c.clone()));
                }
            }
        }
        self.changed = true;
        Ok(())
    }

    /// Merge role: a source partition's progress as its owner committed it. Offsets never
    /// go back: the owners of a partition resume from what the last of them committed, so
    /// a next offset below the one recorded means the partials are not what this merge
    /// read before (another topic, a topic created again), and `Err` says what was seen.
    pub fn apply_progress(
        &mut self,
        p: u32,
        next_offset: Option<i64>,
        max_event_time: Option<EventTime>,
    ) -> Result<(), String> {
        let st = self.partitions.entry(p).or_default();
        if let (Some(had), Some(now)) = (st.next_offset, next_offset) {
            if now < had {
                return Err(format!(
                    "partition {p}: its progress went back from next offset {had} to {now}"
                ));
            }
        }
        if next_offset.is_some() {
            st.next_offset = next_offset;
        }
        if let Some(m) = max_event_time {
            st.max_event_time = Some(st.max_event_time.map_or(m, |x| x.max(m)));
        }
        self.changed = true;
        Ok(())
    }

    /// Merge role: the counts of a partials record.
    pub fn add_counts(&mut self, c: &Counts) {
        self.counters.read += c.read;
        self.counters.accepted += c.accepted;
        for (a, b) in self.counters.rejected.iter_mut().zip(c.rejected) {
            *a += b;
        }
        self.changed = true;
    }

    /// Aggregate role: the counts since `since` (the engine's counters at the last
    /// transaction).
    pub fn counts_since(&self, since: &super::Counters) -> Counts {
        let c = &self.counters;
        let mut rejected = [0; 7];
        for (i, r) in rejected.iter_mut().enumerate() {
            *r = c.rejected[i] - since.rejected[i];
        }
        Counts {
            read: c.read - since.read,
            accepted: c.accepted - since.accepted,
            rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{EngineConfig, RecordAt};
    use crate::decode::{Decoder, JsonInvoiceDecoder};

    fn invoice_line(no: u64, country: &str, ts: &str) -> Vec<u8> {
        format!(
            r#"{{"invoice_no":{no},"country":"{country}","timestamp":"{ts}","type":"ORDER","items":[{{"SKU":"a","title":"b","unit_price":1.25,"quantity":2}}]}}"#
        )
        .into_bytes()
    }

    fn feed(e: &mut Engine, p: u32, offset: i64, line: &[u8]) -> bool {
        assert!(e.admit(p, offset));
        let inv = JsonInvoiceDecoder::default()
            .decode(line, line.len() as u64)
            .expect("a valid invoice");
        let at = RecordAt {
            partition: p,
            offset,
            timestamp_ms: None,
        };
        match e.accept(at, &inv) {
            Ok(()) => true,
            Err(rej) => {
                e.count_rejected(rej.reason);
                false
            }
        }
    }

    /// Partials taken in pieces and merged give the windows of one engine that saw it all,
    /// and a partition handed over through its resume point decides the cap as before.
    #[test]
    fn partials_in_pieces_merge_to_the_whole() {
        let cfg = EngineConfig {
            max_countries: 2,
            ..EngineConfig::default()
        };
        let lines: Vec<Vec<u8>> = [
            ("GB", "2020-09-18T10:55:01Z"),
            ("FR", "2020-09-18T10:55:02Z"),
            ("DE", "2020-09-18T10:55:03Z"), // a third country in the window: too_large
            ("GB", "2020-09-18T10:56:30Z"),
            ("FR", "2020-09-18T10:55:40Z"),
            ("DE", "2020-09-18T10:55:50Z"), // still too_large, after the hand-over
            ("GB", "2020-09-18T10:53:00Z"), // late by more than 60 s
        ]
        .iter()
        .enumerate()
        .map(|(i, (c, t))| invoice_line(i as u64 + 1, c, t))
        .collect();
        let mut whole = Engine::new(cfg);
        let verdicts: Vec<bool> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| feed(&mut whole, 0, i as i64, l))
            .collect();
        assert_eq!(verdicts, [true, true, false, true, true, false, false]);

        let mut merge = Engine::new(cfg);
        let mut owner = Engine::for_partition(cfg, 0, ResumePoint::default());
        let mut since = owner.counters().clone();
        let ship = |owner: &mut Engine, merge: &mut Engine, since: &mut super::super::Counters| {
            let counts = owner.counts_since(since);
            *since = owner.counters().clone();
            for (s, w) in owner.take_partials() {
                merge.merge_window(s, &w).expect("nothing is closed");
            }
            let st = owner.partitions()[&0];
            merge
                .apply_progress(0, st.next_offset, st.max_event_time)
                .unwrap();
            merge.add_counts(&counts);
        };
        for (i, l) in lines.iter().enumerate().take(4) {
            feed(&mut owner, 0, i as i64, l);
        }
        ship(&mut owner, &mut merge, &mut since);
        // Hand-over: a new owner from the resume point alone.
        let point = owner.resume_point(0);
        assert_eq!(point.state.next_offset, Some(4));
        let mut owner = Engine::for_partition(cfg, 0, point);
        let mut since = owner.counters().clone();
        for (i, l) in lines.iter().enumerate().skip(4) {
            feed(&mut owner, 0, i as i64, l);
        }
        ship(&mut owner, &mut merge, &mut since);

        let mut a: Vec<(i64, WindowAgg)> =
            whole.open_windows().map(|(s, w)| (s, w.clone())).collect();
        let mut b: Vec<(i64, WindowAgg)> =
            merge.open_windows().map(|(s, w)| (s, w.clone())).collect();
        a.sort_by_key(|x| x.0);
        b.sort_by_key(|x| x.0);
        assert_eq!(a, b);
        assert_eq!(merge.counters().accepted, 4);
        assert_eq!(merge.counters().read, 7);
        assert_eq!(merge.counters().rejected[Reason::TooLarge.index()], 2);
        assert_eq!(merge.counters().rejected[Reason::Late.index()], 1);
        assert_eq!(merge.partitions()[&0], whole.partitions()[&0]);
    }

    #[test]
    fn take_partials_forgets_windows_no_invoice_can_reach() {
        let cfg = EngineConfig::default();
        let mut e = Engine::for_partition(cfg, 3, ResumePoint::default());
        feed(&mut e, 3, 0, &invoice_line(1, "GB", "2020-09-18T10:50:10Z"));
        feed(&mut e, 3, 1, &invoice_line(2, "GB", "2020-09-18T10:55:10Z"));
        let parts = e.take_partials();
        assert_eq!(parts.len(), 2);
        // M_p − G = 10:54:10: the 10:50 window can take nothing more; the 10:55 one can.
        let kept: Vec<i64> = e.resume_point(3).members.iter().map(|m| m.0).collect();
        assert_eq!(kept.len(), 1);
        assert!(
            e.take_partials().is_empty(),
            "nothing new since the last take"
        );
    }

    #[test]
    fn progress_that_goes_back_is_refused() {
        let mut m = Engine::new(EngineConfig::default());
        m.apply_progress(2, Some(100), None).unwrap();
        let err = m.apply_progress(2, Some(90), None).unwrap_err();
        assert!(err.contains("from next offset 100 to 90"), "{err}");
    }

    #[test]
    fn a_partial_for_a_closed_window_counts_as_window_closed() {
        let mut m = Engine::new(EngineConfig::default());
        let mut w = WindowAgg::default();
        w.world.opm = 3;
        m.add_counts(&Counts {
            read: 3,
            accepted: 3,
            rejected: [0; 7],
        });
        m.close_before(600);
        assert_eq!(m.merge_window(540, &w), Err(3));
        assert_eq!(m.counters().accepted, 0);
        assert_eq!(m.counters().rejected[Reason::WindowClosed.index()], 3);
    }
}
