//! The state store: RocksDB, one synced write batch per checkpoint (SPEC §6).
//!
//! This is the only module that imports `rocksdb`. Layout, in column families:
//!
//! | family | key | value |
//! |---|---|---|
//! | `meta` | name (ASCII) | schema version, checkpoint seq, closed-before, counters |
//! | `partitions` | partition `u32` BE | [`PartitionState`] |
//! | `open_windows` | window start, [`encode_i64`] | [`StoredWindow`] |
//! | `closed_windows` | window start, [`encode_i64`] | [`StoredWindow`] |
//! | `ready_buckets` | bucket start, [`encode_i64`] | empty |
//! | `rejected` | checkpoint `u64` BE ++ index `u32` BE | [`RejectedRecord`] |
//!
//! Keys are big-endian (signed ones with the sign bit flipped) so that RocksDB's byte order
//! is numeric order and a range of windows is a range of keys. Every value starts with a
//! format byte ahead of its bincode body, so a later layout can tell old values apart.

use crate::engine::{Counters, Delta, PartitionState, Restored};
use crate::record::RejectedRecord;
use crate::window::StoredWindow;
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};

pub const CF_META: &str = "meta";
pub const CF_PARTITIONS: &str = "partitions";
pub const CF_OPEN: &str = "open_windows";
pub const CF_CLOSED: &str = "closed_windows";
pub const CF_READY: &str = "ready_buckets";
pub const CF_REJECTED: &str = "rejected";
pub const COLUMN_FAMILIES: [&str; 6] = [
    CF_META,
    CF_PARTITIONS,
    CF_OPEN,
    CF_CLOSED,
    CF_READY,
    CF_REJECTED,
];

/// The single-writer lock file inside the state folder.
pub const LOCK_FILE: &str = "retail-kpi.lock";

const KEY_SCHEMA: &[u8] = b"schema_version";
const KEY_SEQ: &[u8] = b"checkpoint_seq";
const KEY_CLOSED_BEFORE: &[u8] = b"closed_before";
const KEY_COUNTERS: &[u8] = b"counters";

/// The schema this build writes. A store with a larger number was written by a newer build.
pub const SCHEMA_VERSION: u32 = 1;
/// Format byte ahead of every bincode value.
const VALUE_FORMAT: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the state folder {path} is in use by another retail-kpi process (its RocksDB lock is held); stop that job or point --state at another folder")]
    Locked { path: PathBuf },
    #[error("cannot open the state store at {path}: {source}; check the path, its permissions and free space")]
    Open {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("the state store at {path} has schema version {found}, newer than this build's {supported}; run the newer retail-kpi that wrote it")]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("the state store at {path} is not a retail-kpi store: {why}; point --state at an empty folder or at the job's own state")]
    Foreign { path: PathBuf, why: String },
    #[error("the state store at {path} is corrupt: {why}; restore it from a backup (it is never reset silently)")]
    Corrupt { path: PathBuf, why: String },
    #[error("writing the checkpoint to {path} failed: {source}; the previous checkpoint is intact (check free space and permissions, then restart)")]
    Write {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("reading the state store at {path} failed: {source}")]
    Read {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("cannot prepare the state folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Encodes an `i64` so that byte order is numeric order.
pub fn encode_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn decode_i64(b: &[u8]) -> Option<i64> {
    let a: [u8; 8] = b.try_into().ok()?;
    Some((u64::from_be_bytes(a) ^ (1 << 63)) as i64)
}

fn rejected_key(seq: u64, index: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&seq.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

fn encode_value<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![VALUE_FORMAT];
    bincode::serialize_into(&mut out, v).expect("serialising to a Vec cannot fail");
    out
}

fn decode_value<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    match b.split_first() {
        Some((&VALUE_FORMAT, body)) => bincode::deserialize(body).map_err(|e| e.to_string()),
        Some((f, _)) => Err(format!("unknown value format {f}")),
        None => Err("empty value".into()),
    }
}

type KeyValue<T> = (Box<[u8]>, T);

/// What `state inspect` shows, and what a restart needs: the committed state.
pub struct Store {
    db: DB,
    /// Held for the life of the store; see `open`.
    _lock: std::fs::File,
    path: PathBuf,
    sync: WriteOptions,
}

impl Store {
    /// Opens (or creates) the store, taking its lock. Fails at once if another process has it.
    pub fn open(path: &Path) -> Result<Store, StateError> {
        let folder_err = |source| StateError::Folder {
            path: path.into(),
            source,
        };
        if !path.exists() {
            std::fs::create_dir_all(path).map_err(folder_err)?;
            set_private(path).map_err(folder_err)?;
        }
        // Our own lock, taken before RocksDB is touched, so that a second job fails at once
        // even while the first is still creating the store; the kernel drops it when the
        // holder dies, so a killed job never blocks its restart.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join(LOCK_FILE))
            .map_err(folder_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked { path: path.into() })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(folder_err(e)),
        }
        let exists = path.join("CURRENT").exists();
        let mut opts = Options::default();
        // A job killed during the very first open can leave a store with only some of our
        // column families and no schema version: creating the missing ones finishes that
        // initialisation. A store holding a family that is not ours is someone else's.
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Checkpoints are small and synced; a modest memtable keeps memory flat.
        opts.set_write_buffer_size(16 << 20);
        opts.set_max_open_files(256);
        opts.set_keep_log_file_num(3);
        if exists {
            let existing = DB::list_cf(&opts, path).map_err(|e| open_error(path, e))?;
            if let Some(other) = existing
                .iter()
                .find(|c| *c != "default" && !COLUMN_FAMILIES.contains(&c.as_str()))
            {
                return Err(StateError::Foreign {
                    path: path.into(),
                    why: format!("it has a column family `{other}` that retail-kpi never writes"),
                });
            }
        }
        let cfs = COLUMN_FAMILIES
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(*n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| open_error(path, e))?;
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        let store = Store {
            db,
            path: path.into(),
            sync,
            _lock: lock,
        };
        match store.schema_version()? {
            None if store.is_empty()? => {
                let mut b = WriteBatch::default();
                b.put_cf(store.cf(CF_META), KEY_SCHEMA, SCHEMA_VERSION.to_be_bytes());
                store.write(b)?;
            }
            None => {
                return Err(StateError::Foreign {
                    path: path.into(),
                    why: "it records no schema version".into(),
                })
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StateError::TooNew {
                    path: path.into(),
                    found: v,
                    supported: SCHEMA_VERSION,
                })
            }
            Some(_) => {}
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// No key in any family: a new store, or one whose first open was cut short.
    fn is_empty(&self) -> Result<bool, StateError> {
        for cf in COLUMN_FAMILIES {
            if let Some(item) = self
                .db
                .iterator_cf(self.cf(cf), rocksdb::IteratorMode::Start)
                .next()
            {
                item.map_err(|e| self.read_err(e))?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created on open")
    }

    fn corrupt(&self, why: impl Into<String>) -> StateError {
        StateError::Corrupt {
            path: self.path.clone(),
            why: why.into(),
        }
    }

    fn read_err(&self, source: rocksdb::Error) -> StateError {
        StateError::Read {
            path: self.path.clone(),
            source,
        }
    }

    pub fn schema_version(&self) -> Result<Option<u32>, StateError> {
        let Some(v) = self
            .db
            .get_cf(self.cf(CF_META), KEY_SCHEMA)
            .map_err(|e| self.read_err(e))?
        else {
            return Ok(None);
        };
        let a: [u8; 4] = v
            .as_slice()
            .try_into()
            .map_err(|_| self.corrupt("schema version is not 4 bytes"))?;
        Ok(Some(u32::from_be_bytes(a)))
    }

    fn write(&self, b: WriteBatch) -> Result<(), StateError> {
        self.db
            .write_opt(b, &self.sync)
            .map_err(|source| StateError::Write {
                path: self.path.clone(),
                source,
            })
    }

    /// Commits one checkpoint: a single synced batch.
    pub fn commit(&self, d: &Delta) -> Result<(), StateError> {
        let mut b = WriteBatch::default();
        let meta = self.cf(CF_META);
        b.put_cf(meta, KEY_SEQ, d.seq.to_be_bytes());
        b.put_cf(meta, KEY_CLOSED_BEFORE, encode_i64(d.closed_before));
        b.put_cf(meta, KEY_COUNTERS, encode_value(&d.counters));
        let parts = self.cf(CF_PARTITIONS);
        for (p, s) in &d.partitions {
            b.put_cf(parts, p.to_be_bytes(), encode_value(s));
        }
        let open = self.cf(CF_OPEN);
        for s in &d.open_deletes {
            b.delete_cf(open, encode_i64(*s));
        }
        for (s, w) in &d.open_upserts {
            b.put_cf(open, encode_i64(*s), encode_value(w));
        }
        let closed = self.cf(CF_CLOSED);
        for (s, w) in &d.closed_inserts {
            b.put_cf(closed, encode_i64(*s), encode_value(w));
        }
        let ready = self.cf(CF_READY);
        for bucket in &d.ready_buckets {
            b.put_cf(ready, encode_i64(*bucket), []);
        }
        for bucket in &d.rendered_buckets {
            b.delete_cf(ready, encode_i64(*bucket));
            let end = bucket.saturating_add(crate::event_time::BUCKET_SECS);
            b.delete_range_cf(closed, encode_i64(*bucket), encode_i64(end));
        }
        let rej = self.cf(CF_REJECTED);
        for (i, r) in d.rejected.iter().enumerate() {
            b.put_cf(rej, rejected_key(d.seq, i as u32), encode_value(r));
        }
        for seq in &d.rendered_rejected {
            b.delete_range_cf(rej, rejected_key(*seq, 0), rejected_key(seq + 1, 0));
        }
        self.write(b)
    }

    fn scan<T: DeserializeOwned>(&self, cf: &str) -> Result<Vec<KeyValue<T>>, StateError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(cf), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item.map_err(|e| self.read_err(e))?;
            let v = decode_value(&v).map_err(|why| self.corrupt(format!("{cf}: {why}")))?;
            out.push((k, v));
        }
        Ok(out)
    }

    fn meta_bytes(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.db
            .get_cf(self.cf(CF_META), key)
            .map_err(|e| self.read_err(e))
    }

    /// Reads back the last committed checkpoint.
    pub fn load(&self) -> Result<Restored, StateError> {
        let seq = match self.meta_bytes(KEY_SEQ)? {
            None => 0,
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| self.corrupt("bad checkpoint seq"))?,
            ),
        };
        let closed_before = match self.meta_bytes(KEY_CLOSED_BEFORE)? {
            None => i64::MIN,
            Some(v) => decode_i64(&v).ok_or_else(|| self.corrupt("bad closed_before"))?,
        };
        let counters: Counters = match self.meta_bytes(KEY_COUNTERS)? {
            None => Counters::default(),
            Some(v) => decode_value(&v).map_err(|why| self.corrupt(format!("counters: {why}")))?,
        };
        let key_i64 = |k: &[u8]| decode_i64(k).ok_or_else(|| self.corrupt("bad window key"));
        let mut partitions = Vec::new();
        for (k, v) in self.scan::<PartitionState>(CF_PARTITIONS)? {
            let p = u32::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| self.corrupt("bad partition key"))?,
            );
            partitions.push((p, v));
        }
        let mut open = Vec::new();
        for (k, v) in self.scan::<StoredWindow>(CF_OPEN)? {
            open.push((key_i64(&k)?, v));
        }
        let mut closed = Vec::new();
        for (k, v) in self.scan::<StoredWindow>(CF_CLOSED)? {
            closed.push((key_i64(&k)?, v));
        }
        let mut ready_buckets = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_READY), rocksdb::IteratorMode::Start)
        {
            let (k, _) = item.map_err(|e| self.read_err(e))?;
            ready_buckets.push(key_i64(&k)?);
        }
        let mut pending_rejected: Vec<(u64, Vec<RejectedRecord>)> = Vec::new();
        for (k, v) in self.scan::<RejectedRecord>(CF_REJECTED)? {
            if k.len() != 12 {
                return Err(self.corrupt("bad rejected key"));
            }
            let s = u64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
            match pending_rejected.last_mut() {
                Some((last, v_list)) if *last == s => v_list.push(v),
                _ => pending_rejected.push((s, vec![v])),
            }
        }
        Ok(Restored {
            seq,
            partitions,
            open,
            closed,
            ready_buckets,
            pending_rejected,
            closed_before,
            counters,
        })
    }
}

fn open_error(path: &Path, e: rocksdb::Error) -> StateError {
    let msg = e.to_string();
    if msg.contains("lock") || msg.contains("LOCK") {
        StateError::Locked { path: path.into() }
    } else if msg.contains("Corruption") {
        StateError::Corrupt {
            path: path.into(),
            why: msg,
        }
    } else {
        StateError::Open {
            path: path.into(),
            source: e,
        }
    }
}

#[cfg(unix)]
fn set_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn set_private(_: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Reason;
    use crate::window::Agg;

    #[test]
    fn i64_keys_sort_numerically() {
        let vals = [
            i64::MIN,
            -62_167_219_200,
            -600,
            -1,
            0,
            1,
            60,
            1_600_426_500,
            i64::MAX,
        ];
        for w in vals.windows(2) {
            assert!(encode_i64(w[0]) < encode_i64(w[1]), "{} < {}", w[0], w[1]);
        }
        for v in vals {
            assert_eq!(decode_i64(&encode_i64(v)), Some(v));
        }
        assert!(rejected_key(1, u32::MAX) < rejected_key(2, 0));
    }

    #[test]
    fn a_checkpoint_round_trips_and_rendered_rows_go() {
        let dir = tempfile::tempdir().unwrap();
        let w = StoredWindow {
            world: Agg {
                opm: 2,
                orders: 1,
                returns: 1,
                total_items: 5,
                volume: crate::money::Money(-7),
            },
            countries: vec![("UK".into(), Agg::default())],
        };
        let rej = RejectedRecord {
            topic: "t".into(),
            partition: 3,
            offset: 9,
            reason: Reason::Late,
            message: "m".into(),
            raw: b"\xff".to_vec(),
        };
        {
            let s = Store::open(dir.path()).unwrap();
            let d = Delta {
                seq: 1,
                partitions: vec![(
                    3,
                    PartitionState {
                        next_offset: Some(10),
                        max_event_time: Some(-5),
                    },
                )],
                open_upserts: vec![(-60, w.clone())],
                closed_inserts: vec![(60, w.clone()), (660, w.clone())],
                ready_buckets: vec![0],
                rejected: vec![rej.clone()],
                closed_before: 120,
                counters: Counters {
                    read: 4,
                    ..Counters::default()
                },
                ..Delta::default()
            };
            s.commit(&d).unwrap();
            let r = s.load().unwrap();
            assert_eq!(r.seq, 1);
            assert_eq!(r.partitions, d.partitions);
            assert_eq!(r.open, vec![(-60, w.clone())]);
            assert_eq!(r.closed.len(), 2);
            assert_eq!(r.ready_buckets, vec![0]);
            assert_eq!(r.pending_rejected, vec![(1, vec![rej.clone()])]);
            assert_eq!(r.closed_before, 120);
            assert_eq!(r.counters.read, 4);
            let d2 = Delta {
                seq: 2,
                rendered_buckets: vec![0],
                rendered_rejected: vec![1],
                open_deletes: vec![-60],
                closed_before: 120,
                ..Delta::default()
            };
            s.commit(&d2).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let r = s.load().unwrap();
        assert_eq!(r.seq, 2);
        assert!(r.open.is_empty());
        assert_eq!(
            r.closed,
            vec![(660, w)],
            "only the rendered bucket's rows are gone"
        );
        assert!(r.ready_buckets.is_empty());
        assert!(r.pending_rejected.is_empty());
    }

    /// Regression: a job killed during its very first open left only some column
    /// families and no schema version; the restart refused the store as foreign.
    #[test]
    fn a_first_open_cut_short_is_finished_on_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            DB::open_cf(&opts, dir.path(), [CF_META]).unwrap();
        }
        let s = Store::open(dir.path()).expect("the half-created store opens");
        assert_eq!(s.schema_version().unwrap(), Some(SCHEMA_VERSION));
    }

    #[test]
    fn a_store_with_foreign_families_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            DB::open_cf(&opts, dir.path(), ["someone_elses"]).unwrap();
        }
        assert!(matches!(
            Store::open(dir.path()),
            Err(StateError::Foreign { .. })
        ));
    }

    #[test]
    fn a_second_opener_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        match Store::open(dir.path()) {
            Err(StateError::Locked { .. }) => {}
            other => panic!("expected Locked, got {:?}", other.err()),
        }
    }

    #[test]
    fn a_newer_schema_is_refused_and_names_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let mut b = WriteBatch::default();
            b.put_cf(
                s.cf(CF_META),
                KEY_SCHEMA,
                (SCHEMA_VERSION + 1).to_be_bytes(),
            );
            s.write(b).unwrap();
        }
        let e = Store::open(dir.path()).err().expect("must refuse");
        let msg = e.to_string();
        assert!(matches!(e, StateError::TooNew { .. }), "{msg}");
        assert!(
            msg.contains(&format!("version {}", SCHEMA_VERSION + 1))
                && msg.contains(&format!("build's {SCHEMA_VERSION}")),
            "{msg}"
        );
    }
}
