//! What a checkpoint writes and what a restart reads back, over any [`Backend`]: the
//! RocksDB store ([`super::Store`]) and the in-memory one ([`MemoryStore`], for the tests
//! and the fuzz target) run this same code, so a test of a commit is a test of the job's.

use super::schema::{
    Batch, ClosedRows, Members, Meta, MetaEntry, Op, OpenRows, Partitions, Ready, Rejected, RowKey,
    Schema,
};
use crate::aggregate::partial::{Agg, WindowAgg};
use crate::aggregate::{Counters, Delta, Restored};
use crate::event_time::BUCKET_SECS;
use crate::record::{Reason, RejectedRecord};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// What the sinks delivered since their last record: committed outputs that can go from
/// the store. The sinks keep it ([`crate::sink::Outbox`]); the engine never sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Buckets whose files are written: their closed rows and marker go.
    pub buckets: Vec<i64>,
    /// Checkpoints whose rejected file is written: their records go.
    pub rejected: Vec<u64>,
    /// Buckets written since the store was made (a counter of `state inspect`).
    pub buckets_rendered: u64,
}

/// Bytes by column family, written in batches that apply whole or not at all.
pub trait Backend {
    type Error;
    /// Applies every write of `b` at once, durably; returns the bytes written.
    fn write(&self, b: &Batch) -> Result<usize, Self::Error>;
    fn get(&self, family: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, Self::Error>;
    /// Hands every key and value of `family` to `visit`, in key order; stops at the first
    /// `Err` of `visit` and returns it.
    #[allow(clippy::type_complexity)]
    fn scan(
        &self,
        family: &'static str,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), String>,
    ) -> Result<Result<(), String>, Self::Error>;
}

/// Why reading the committed state failed.
#[derive(Debug)]
pub enum Fault<E> {
    /// The backend could not read.
    Read(E),
    /// It read bytes that are not a valid state (named by family and why).
    Corrupt(String),
}

/// Each counter's `meta` name (schema 2; migration 0002 says why) and its slot in `c`.
pub fn counter_slots(c: &mut Counters) -> Vec<(String, &mut u64)> {
    // Destructured without `..`, so that a counter added to `Counters` cannot be forgotten
    // here. A new counter needs no migration: an absent key reads as zero.
    let Counters {
        read,
        accepted,
        rejected,
        replayed_skipped,
        windows_closed,
        buckets_rendered,
    } = c;
    let mut slots = vec![
        ("read".to_owned(), read),
        ("accepted".to_owned(), accepted),
        ("replayed_skipped".to_owned(), replayed_skipped),
        ("windows_closed".to_owned(), windows_closed),
        ("buckets_rendered".to_owned(), buckets_rendered),
    ];
    for (i, n) in rejected.iter_mut().enumerate() {
        let reason = Reason::ALL
            .iter()
            .find(|r| r.index() == i)
            .expect("one reason per rejected counter");
        slots.push((format!("rejected/{}", reason.code()), n));
    }
    slots
        .into_iter()
        .map(|(name, n)| (format!("{}{name}", MetaEntry::COUNTER_PREFIX), n))
        .collect()
}

fn row(window: i64, country: Option<&str>) -> RowKey {
    RowKey {
        window,
        country: country.map(str::to_owned),
    }
}

/// The writes of one checkpoint: the engine's delta, the records refused since the last
/// one (in `d.rejected`), and what the sinks delivered since their last record.
pub fn checkpoint_batch(d: &Delta, done: &Delivered) -> Batch {
    let mut b = Batch::default();
    b.put::<Meta>(&MetaEntry::SEQ.into(), &MetaEntry::u64(d.seq));
    b.put::<Meta>(
        &MetaEntry::CLOSED_BEFORE.into(),
        &MetaEntry::i64(d.closed_before),
    );
    let mut counters = d.counters.clone();
    // The sinks count what they wrote; the engine never learns it.
    counters.buckets_rendered = done.buckets_rendered;
    for (key, n) in counter_slots(&mut counters) {
        b.put::<Meta>(&key, &MetaEntry::u64(*n));
    }
    for (p, s) in &d.partitions {
        b.put::<Partitions>(p, s);
    }
    for s in &d.open_deletes {
        b.delete_window::<OpenRows>(*s);
        b.delete_window::<Members>(*s);
    }
    for (s, a) in &d.open_world {
        b.put::<OpenRows>(&row(*s, None), a);
    }
    for (s, c, a) in &d.open_countries {
        b.put::<OpenRows>(&row(*s, Some(c)), a);
    }
    for (s, p, c) in &d.new_members {
        b.put::<Members>(
            &super::schema::MemberKey {
                window: *s,
                partition: *p,
                country: c.clone(),
            },
            &(),
        );
    }
    for (s, w) in &d.closed_inserts {
        b.put::<ClosedRows>(&row(*s, None), &w.world);
        for (c, a) in &w.countries {
            b.put::<ClosedRows>(&row(*s, Some(c)), a);
        }
    }
    for (bucket, _) in &d.ready {
        b.put::<Ready>(bucket, &());
    }
    if let Some(src) = &d.source {
        b.put::<Meta>(&MetaEntry::SOURCE.into(), &MetaEntry::json(src));
    }
    if let Some(set) = &d.settings {
        b.put::<Meta>(&MetaEntry::SETTINGS.into(), &MetaEntry::json(set));
    }
    for (i, r) in d.rejected.iter().enumerate() {
        b.put::<Rejected>(&(d.seq, i as u32), r);
    }
    forget_delivered(&mut b, done);
    b
}

/// The sinks' own record between checkpoints: the outputs they delivered go, and their
/// count of buckets written moves on.
pub fn delivered_batch(done: &Delivered) -> Batch {
    let mut b = Batch::default();
    b.put::<Meta>(
        &format!("{}buckets_rendered", MetaEntry::COUNTER_PREFIX),
        &MetaEntry::u64(done.buckets_rendered),
    );
    forget_delivered(&mut b, done);
    b
}

fn forget_delivered(b: &mut Batch, done: &Delivered) {
    for bucket in &done.buckets {
        b.delete::<Ready>(bucket);
        let end = bucket.saturating_add(BUCKET_SECS);
        b.delete_range::<ClosedRows>(&row(*bucket, None), &row(end, None));
    }
    for seq in &done.rejected {
        b.delete_range::<Rejected>(&(*seq, 0), &(seq + 1, 0));
    }
}

/// Every entry of `S`, decoded, in key order.
fn scan_typed<S: Schema, B: Backend>(
    b: &B,
    mut f: impl FnMut(S::Key, S::Value) -> Result<(), String>,
) -> Result<(), Fault<B::Error>> {
    b.scan(S::FAMILY, &mut |k, v| {
        let k = S::decode_key(k)?;
        let v = S::decode_value(v)?;
        f(k, v)
    })
    .map_err(Fault::Read)?
    .map_err(|why| Fault::Corrupt(format!("{}: {why}", S::FAMILY)))
}

/// The windows of `S` assembled from their rows (key order: the world row first, then
/// the countries in byte order).
fn windows<S: Schema<Key = RowKey, Value = Agg>, B: Backend>(
    b: &B,
) -> Result<Vec<(i64, WindowAgg)>, Fault<B::Error>> {
    let mut out: Vec<(i64, WindowAgg)> = Vec::new();
    scan_typed::<S, B>(b, |k, a| {
        match k.country {
            None => out.push((
                k.window,
                WindowAgg {
                    world: a,
                    countries: Default::default(),
                },
            )),
            Some(country) => match out.last_mut() {
                Some((last, w)) if *last == k.window => {
                    w.countries.insert(country.into_boxed_str(), a);
                }
                _ => {
                    return Err(format!(
                        "a country row without its window's row ({country:?})"
                    ))
                }
            },
        }
        Ok(())
    })?;
    Ok(out)
}

fn meta<B: Backend>(b: &B, name: &'static str) -> Result<Option<Vec<u8>>, Fault<B::Error>> {
    b.get(Meta::FAMILY, name.as_bytes()).map_err(Fault::Read)
}

fn meta_json<T: serde::de::DeserializeOwned, B: Backend>(
    b: &B,
    name: &'static str,
) -> Result<Option<T>, Fault<B::Error>> {
    meta(b, name)?
        .map(|v| {
            serde_json::from_slice(&v).map_err(|why| Fault::Corrupt(format!("meta/{name}: {why}")))
        })
        .transpose()
}

/// Reads back the last committed checkpoint.
pub fn load<B: Backend>(b: &B) -> Result<Restored, Fault<B::Error>> {
    let seq = match meta(b, MetaEntry::SEQ)? {
        None => 0,
        Some(v) => {
            MetaEntry::read_u64(&v).ok_or_else(|| Fault::Corrupt("bad checkpoint seq".into()))?
        }
    };
    let closed_before = match meta(b, MetaEntry::CLOSED_BEFORE)? {
        None => i64::MIN,
        Some(v) => {
            MetaEntry::read_i64(&v).ok_or_else(|| Fault::Corrupt("bad closed_before".into()))?
        }
    };
    let mut counters = Counters::default();
    for (key, n) in counter_slots(&mut counters) {
        if let Some(v) = b.get(Meta::FAMILY, key.as_bytes()).map_err(Fault::Read)? {
            *n = MetaEntry::read_u64(&v)
                .ok_or_else(|| Fault::Corrupt(format!("meta/{key} is not 8 bytes")))?;
        }
    }
    let mut partitions = Vec::new();
    scan_typed::<Partitions, B>(b, |p, s| {
        partitions.push((p, s));
        Ok(())
    })?;
    let open = windows::<OpenRows, B>(b)?;
    let closed = windows::<ClosedRows, B>(b)?;
    let mut members = Vec::new();
    scan_typed::<Members, B>(b, |k, ()| {
        members.push((k.window, k.partition, k.country));
        Ok(())
    })?;
    let mut ready_buckets = Vec::new();
    scan_typed::<Ready, B>(b, |k, ()| {
        ready_buckets.push(k);
        Ok(())
    })?;
    let mut pending_rejected: Vec<(u64, Vec<RejectedRecord>)> = Vec::new();
    scan_typed::<Rejected, B>(b, |(s, _), v| {
        match pending_rejected.last_mut() {
            Some((last, list)) if *last == s => list.push(v),
            _ => pending_rejected.push((s, vec![v])),
        }
        Ok(())
    })?;
    Ok(Restored {
        seq,
        source: meta_json(b, MetaEntry::SOURCE)?,
        settings: meta_json(b, MetaEntry::SETTINGS)?,
        partitions,
        open,
        members,
        closed,
        ready_buckets,
        pending_rejected,
        closed_before,
        counters,
    })
}

/// One column family in memory: key -> value, in byte order as RocksDB keeps them.
type Family = BTreeMap<Vec<u8>, Vec<u8>>;

/// Column families in memory: what a batch does to RocksDB, without RocksDB.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    families: RefCell<BTreeMap<&'static str, Family>>,
}

impl Backend for MemoryBackend {
    type Error = std::convert::Infallible;

    fn write(&self, b: &Batch) -> Result<usize, Self::Error> {
        let mut fams = self.families.borrow_mut();
        let mut bytes = 0;
        for op in &b.ops {
            match op {
                Op::Put(f, k, v) => {
                    bytes += k.len() + v.len();
                    fams.entry(f).or_default().insert(k.clone(), v.clone());
                }
                Op::Delete(f, k) => {
                    bytes += k.len();
                    fams.entry(f).or_default().remove(k);
                }
                Op::DeleteRange(f, from, to) => {
                    bytes += from.len() + to.len();
                    let fam = fams.entry(f).or_default();
                    if from < to {
                        let gone: Vec<Vec<u8>> = fam
                            .range(from.clone()..to.clone())
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in gone {
                            fam.remove(&k);
                        }
                    }
                }
            }
        }
        Ok(bytes)
    }

    fn get(&self, family: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self
            .families
            .borrow()
            .get(family)
            .and_then(|f| f.get(key).cloned()))
    }

    fn scan(
        &self,
        family: &'static str,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), String>,
    ) -> Result<Result<(), String>, Self::Error> {
        let fams = self.families.borrow();
        for (k, v) in fams.get(family).into_iter().flatten() {
            if let Err(e) = visit(k, v) {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }
}

/// A state store in memory that commits and loads with the job's own code: for the tests
/// and the fuzz target, whose "restart" is a [`MemoryStore::load`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    backend: MemoryBackend,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// [`super::Store::commit`], in memory.
    pub fn commit(&self, d: &Delta, done: &Delivered) -> usize {
        let Ok(n) = self.backend.write(&checkpoint_batch(d, done));
        n
    }

    /// [`super::Store::record_delivered`], in memory.
    pub fn record_delivered(&self, done: &Delivered) {
        let Ok(_) = self.backend.write(&delivered_batch(done));
    }

    /// [`super::Store::load`], in memory; `Err` says what is corrupt.
    pub fn load(&self) -> Result<Restored, String> {
        load(&self.backend).map_err(|f| match f {
            Fault::Read(e) => match e {},
            Fault::Corrupt(why) => why,
        })
    }
}

/// The round trip every backend must pass: a checkpoint, then one that closes its open
/// window with the sinks' record of a written bucket and rejected file.
#[cfg(test)]
pub(crate) fn check_round_trip(
    mut commit: impl FnMut(&Delta, &Delivered),
    mut load: impl FnMut() -> Restored,
) {
    use crate::aggregate::PartitionState;
    let w = WindowAgg {
        world: Agg {
            opm: 2,
            orders: 1,
            returns: 1,
            total_items: 5,
            volume: crate::money::Money(-7),
        },
        countries: [("UK".into(), Agg::default())].into_iter().collect(),
    };
    let rej = RejectedRecord {
        topic: "t".into(),
        partition: 3,
        offset: 9,
        reason: Reason::Late,
        message: "m".into(),
        raw: b"\xff".to_vec(),
        raw_len: 70_000,
    };
    let d = Delta {
        seq: 1,
        partitions: vec![(
            3,
            PartitionState {
                next_offset: Some(10),
                max_event_time: Some(-5),
            },
        )],
        open_world: vec![(-60, w.world)],
        open_countries: vec![(-60, "UK".into(), Agg::default())],
        new_members: vec![(-60, 3, "UK".into())],
        closed_inserts: vec![(60, w.clone()), (660, w.clone())],
        ready: vec![(0, vec![(60, w.clone())])],
        rejected: vec![rej.clone()],
        closed_before: 120,
        counters: Counters {
            read: 4,
            ..Counters::default()
        },
        ..Delta::default()
    };
    commit(&d, &Delivered::default());
    let r = load();
    assert_eq!((r.seq, r.closed_before, r.counters.read), (1, 120, 4));
    assert_eq!(r.partitions, d.partitions);
    assert_eq!(r.open, vec![(-60, w.clone())]);
    assert_eq!(r.members, vec![(-60, 3, "UK".to_owned())]);
    assert_eq!(r.closed.len(), 2);
    assert_eq!(r.ready_buckets, vec![0]);
    assert_eq!(r.pending_rejected, vec![(1, vec![rej])]);
    // The sinks' record of what they wrote rides the next checkpoint.
    commit(
        &Delta {
            seq: 2,
            open_deletes: vec![-60],
            closed_before: 120,
            ..Delta::default()
        },
        &Delivered {
            buckets: vec![0],
            rejected: vec![1],
            buckets_rendered: 1,
        },
    );
    let r = load();
    assert_eq!(r.seq, 2);
    assert!(r.open.is_empty());
    assert!(r.members.is_empty(), "a closed window's members go with it");
    assert_eq!(
        r.closed,
        vec![(660, w)],
        "only the written bucket's rows go"
    );
    assert!(r.ready_buckets.is_empty());
    assert!(r.pending_rejected.is_empty());
    assert_eq!(r.counters.buckets_rendered, 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The round trip of the RocksDB store's test, through the same code in memory.
    #[test]
    fn a_checkpoint_round_trips_and_delivered_outputs_go() {
        let m = MemoryStore::new();
        check_round_trip(
            |d, done| {
                m.commit(d, done);
            },
            || m.load().unwrap(),
        );
    }

    #[test]
    fn a_country_row_without_its_window_is_corrupt() {
        let m = MemoryStore::new();
        let mut b = Batch::default();
        b.put::<OpenRows>(&row(0, Some("UK")), &Agg::default());
        let Ok(_) = m.backend.write(&b);
        let e = m.load().unwrap_err();
        assert!(e.starts_with("open_windows: a country row without"), "{e}");
    }
}
