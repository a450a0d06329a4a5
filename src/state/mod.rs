//! The state store: RocksDB, one synced write batch per checkpoint (SPEC §6).
//!
//! This is the only module that imports `rocksdb`; [`schema`] owns the layout (a type per
//! column family with its codecs), [`tables`] what a checkpoint writes and a restart reads,
//! over RocksDB here or over memory ([`MemoryStore`]). Layout, in column families (the
//! migrations in `migrations/` say how it came to be):
//!
//! | family | key | value |
//! |---|---|---|
//! | `meta` | name (ASCII) | schema version, checkpoint seq, closed-before; `counter/<name>`: one counter, `u64` BE |
//! | `partitions` | partition `u32` BE | [`schema::StoredPartition`] (format byte 1) |
//! | `open_windows` | window start, [`encode_i64`]; for a country row `++` the country's bytes | the world's or the country's [`StoredAgg`] (format byte 2) |
//! | `closed_windows` | as `open_windows` | as `open_windows` |
//! | `window_countries` | window start ++ partition `u32` BE ++ country | empty: the partition brought the country into the open window (SPEC §7's cap) |
//! | `ready_buckets` | bucket start, [`encode_i64`] | empty |
//! | `rejected` | checkpoint `u64` BE ++ index `u32` BE | [`RejectedRecord`]: format 1 [`StoredRejectedV1`], format 2 [`StoredRejectedV2`] |
//!
//! `meta` also holds, since this build, `source` ([`crate::source::SourceIdentity`]: what
//! the job reads) and `settings` ([`crate::aggregate::ResultSettings`]: the settings that
//! change results), both as JSON. A store without
//! them (older builds) takes them at its next checkpoint; no migration is needed, since an
//! absent key reads as "not recorded".
//!
//! (Layout of schema version 3.) Keys are big-endian (signed ones with the sign bit
//! flipped) so that RocksDB's byte order is numeric order and a range of windows is a range of keys. Every bincode value starts
//! with a format byte, so a later layout can tell old values apart.
//!
//! Opening for writing runs the migrations above the store's recorded schema version, each
//! in one synced batch with its new version, after a RocksDB checkpoint of the old store
//! beside it; a store from a newer build, someone else's store or a damaged one is refused
//! and left exactly as it was.

use crate::aggregate::{Delta, Restored};
use rocksdb::checkpoint::Checkpoint;
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};

#[path = "../../migrations/mod.rs"]
pub mod migrations;
use migrations::{Migration, MigrationError, MigrationStore, MIGRATIONS};

pub mod report;
pub mod schema;
pub mod tables;

pub use schema::{
    decode_i64, encode_i64, StoredAgg, StoredRejectedV1, StoredRejectedV2, CF_CLOSED, CF_MEMBERS,
    CF_META, CF_OPEN, CF_PARTITIONS, CF_READY, CF_REJECTED,
};
use schema::{Batch, MetaEntry, Op};
use tables::{Backend, Fault};
pub use tables::{Delivered, MemoryStore};
pub const COLUMN_FAMILIES: [&str; 7] = [
    CF_META,
    CF_PARTITIONS,
    CF_OPEN,
    CF_CLOSED,
    CF_READY,
    CF_REJECTED,
    CF_MEMBERS,
];

/// The single-writer lock file inside the state folder.
pub const LOCK_FILE: &str = "retail-kpi.lock";

/// The number of the last checkpoint committed, written beside the store after each
/// commit. A store whose own checkpoint number is below it has lost files (a MANIFEST cut
/// short that still names an older checkpoint, files restored from an older copy): RocksDB
/// would open it as a valid, older store. Written without a sync: after a crash it can only
/// be behind the store, never ahead, so it never refuses a sound store.
pub const CHECKPOINT_MARK_FILE: &str = "retail-kpi.checkpoint";

const KEY_SCHEMA: &[u8] = MetaEntry::SCHEMA.as_bytes();
const KEY_SEQ: &[u8] = MetaEntry::SEQ.as_bytes();

/// The schema this build writes: the last migration's. A store with a larger number was
/// written by a newer build.
pub const SCHEMA_VERSION: u32 = migrations::LATEST;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the state folder {path} is in use by another retail-kpi process (its lock is held); stop that job or point --state at another folder")]
    Locked { path: PathBuf },
    #[error("there is no state store at {path}; check --state (a job creates its store on its first run)")]
    Missing { path: PathBuf },
    #[error("the state store at {path} is being created or migrated by the job that holds it; try again in a moment")]
    Busy { path: PathBuf },
    #[error("cannot open the state store at {path}: {source}; check the path, its permissions and free space, then retry")]
    Open {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("the state store at {path} has schema version {found}, newer than this build's {supported}; run the newer retail-kpi that wrote it (stores are never downgraded)")]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("the state store at {path} has schema version {found}, older than this build's {supported}; run `retail-kpi state migrate --state {path}` (or start the job, which migrates it) first")]
    NeedsMigration {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("the state store at {path} is not a retail-kpi store: {why}; point --state at an empty folder or at the job's own state")]
    Foreign { path: PathBuf, why: String },
    #[error("the state store at {path} is corrupt: {why}. It was left as it is (never reset): restore the folder from a backup (a migration leaves one beside it, `<folder>.backup-v<N>-<time>`), or move it aside and start on an empty folder to recompute from the source")]
    Corrupt { path: PathBuf, why: String },
    #[error("cannot back up the state store at {path} to {backup} before migrating it from schema version {from} to {to}: {source}; nothing was changed: make room (or write access) beside the state folder, then retry")]
    Backup {
        path: PathBuf,
        backup: PathBuf,
        from: u32,
        to: u32,
        source: rocksdb::Error,
    },
    #[error("migration {version:04} ({name}) of the state store at {path} failed: {why}; the store stays at schema version {at}, since a migration commits all or nothing{backup}. This build cannot run on it: keep the store and report this")]
    Migration {
        path: PathBuf,
        version: u32,
        name: &'static str,
        at: u32,
        /// Where the backup taken before the first migration is, as a clause.
        backup: String,
        why: String,
    },
    #[error("writing to the state store at {path} failed: {source}; the last committed checkpoint is intact: free space or fix permissions, then restart")]
    Write {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("reading the state store at {path} failed: {source}")]
    Read {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("the state folder {path} has {free} bytes free, less than the 1 MiB needed to open the store for writing; the store is intact: free space, then restart")]
    NoSpace { path: PathBuf, free: u64 },
    #[error("cannot prepare the state folder {path}: {source}; check that it is a writable folder with free space")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One migration as it ran, or as a dry run says it would run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub version: u32,
    pub name: &'static str,
    pub summary: &'static str,
    pub puts: usize,
    pub deletes: usize,
    pub families_created: Vec<String>,
}

/// What migrating a store did (`open_and_migrate`) or would do (`plan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub from: u32,
    pub to: u32,
    /// The RocksDB checkpoint of the old store (none for a fresh store: nothing to keep).
    /// For a plan: where it would go.
    pub backup: Option<PathBuf>,
    pub steps: Vec<Step>,
}

/// What `state inspect` shows, and what a restart needs: the committed state.
pub struct Store {
    /// Closed on drop unless a write failed; see `Drop`.
    db: ManuallyDrop<DB>,
    /// A write to the store failed.
    failed: Cell<bool>,
    /// Held for the life of the store; see `take_lock`.
    _lock: Option<std::fs::File>,
    path: PathBuf,
    sync: WriteOptions,
    /// The schema version of what is stored (after any migration).
    version: u32,
    /// For a secondary instance (`open_secondary`): the folder of its own info log,
    /// removed with it.
    secondary: Option<PathBuf>,
}

impl Store {
    /// Opens (or creates) the store for the job, taking its lock, and migrates an older
    /// store first. Fails at once if another process has it.
    pub fn open(path: &Path) -> Result<Store, StateError> {
        Ok(Store::open_and_migrate(path)?.0)
    }

    /// [`Store::open`], saying what a migration did, if one ran.
    pub fn open_and_migrate(path: &Path) -> Result<(Store, Option<Migrated>), StateError> {
        let folder_err = |source| StateError::Folder {
            path: path.into(),
            source,
        };
        if !path.exists() {
            std::fs::create_dir_all(path).map_err(folder_err)?;
            set_private(path).map_err(folder_err)?;
        }
        let lock = take_lock(path, true)?;
        let exists = store_exists(path)?;
        if exists {
            // Look before writing: opening for writing rewrites RocksDB's own files and
            // deletes table files the MANIFEST does not name, so a store to refuse (newer,
            // foreign, damaged) is refused by a read-only look that changes nothing.
            Store::read_only(path, None)?;
        }
        let free = free_bytes(path).map_err(folder_err)?;
        if free < MIN_FREE_BYTES {
            return Err(StateError::NoSpace {
                path: path.into(),
                free,
            });
        }
        let mut opts = db_options();
        // Only a folder without a store gets a new one: were CURRENT to vanish between the
        // check and the open, RocksDB must fail rather than start an empty store over data.
        opts.create_if_missing(!exists);
        let families = if exists {
            DB::list_cf(&opts, path).map_err(|e| open_error(path, e))?
        } else {
            vec![rocksdb::DEFAULT_COLUMN_FAMILY_NAME.to_owned()]
        };
        let cfs = families
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| open_error(path, e))?;
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        let mut store = Store {
            db: ManuallyDrop::new(db),
            failed: Cell::new(false),
            path: path.into(),
            sync,
            _lock: lock,
            version: 0,
            secondary: None,
        };
        store.version = store.check_version(&families)?;
        let migrated = if store.version < SCHEMA_VERSION {
            Some(store.migrate()?)
        } else {
            None
        };
        if let Some(missing) = COLUMN_FAMILIES
            .iter()
            .find(|cf| store.db.cf_handle(cf).is_none())
        {
            return Err(store.corrupt(format!(
                "the column family `{missing}` is missing although the schema version is {}",
                store.version
            )));
        }
        Ok((store, migrated))
    }

    /// Opens an existing store to look at it: no migration, no write, nothing created, and a
    /// shared lock, so that a job cannot start meanwhile but several readers can look.
    pub fn open_read_only(path: &Path) -> Result<Store, StateError> {
        if !store_exists(path)? {
            return Err(StateError::Missing { path: path.into() });
        }
        let lock = take_lock(path, false)?;
        Store::read_only(path, lock)
    }

    /// A store opened to look, not to write (read-only or secondary); its version is
    /// read by the caller.
    fn for_reading(
        db: DB,
        path: &Path,
        lock: Option<std::fs::File>,
        secondary: Option<PathBuf>,
    ) -> Store {
        Store {
            db: ManuallyDrop::new(db),
            failed: Cell::new(false),
            path: path.into(),
            sync: WriteOptions::default(),
            _lock: lock,
            version: 0,
            secondary,
        }
    }

    fn read_only(path: &Path, lock: Option<std::fs::File>) -> Result<Store, StateError> {
        let opts = db_options();
        // Every family must be opened; which ones are ours is checked once the version is
        // known, so that a newer build's store is reported as newer, not as foreign.
        let families = DB::list_cf(&opts, path).map_err(|e| open_error(path, e))?;
        let db = DB::open_cf_for_read_only(&opts, path, &families, false)
            .map_err(|e| open_error(path, e))?;
        let mut store = Store::for_reading(db, path, lock, None);
        store.version = store.check_version(&families)?;
        store.check_complete(&families)?;
        Ok(store)
    }

    /// Opens the store of a job that may be running, to look at it: a RocksDB secondary
    /// instance, which takes no lock (neither ours nor RocksDB's) and writes nothing in
    /// the state folder, so the job goes on undisturbed. It sees the last checkpoint
    /// committed when it opened; a checkpoint is one write batch, so it never sees half of
    /// one. It keeps every table file open (RocksDB requires it of a secondary): open it
    /// for one look and drop it.
    pub fn open_secondary(path: &Path) -> Result<Store, StateError> {
        if !store_exists(path)? {
            return Err(StateError::Missing { path: path.into() });
        }
        remove_stale_secondaries();
        static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Its own info log goes to a private folder outside the state folder.
        let own =
            std::env::temp_dir().join(format!("retail-kpi-secondary-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&own).map_err(|source| StateError::Folder {
            path: own.clone(),
            source,
        })?;
        let opened = (|| {
            let mut opts = db_options();
            // A secondary instance keeps every table file open: it cannot reopen one the
            // primary has deleted since.
            opts.set_max_open_files(-1);
            let families = DB::list_cf(&opts, path).map_err(|e| open_error(path, e))?;
            let db = DB::open_cf_as_secondary(&opts, path, &own, &families)
                .map_err(|e| open_error(path, e))?;
            let mut store = Store::for_reading(db, path, None, Some(own.clone()));
            store.version = store.check_version(&families)?;
            // The job creates the families and then migrates, at its start: a look in
            // between sees a store of this version without all of them.
            if store.version == SCHEMA_VERSION
                && COLUMN_FAMILIES
                    .iter()
                    .any(|f| !families.iter().any(|g| g == f))
            {
                return Err(StateError::Busy { path: path.into() });
            }
            Ok(store)
        })();
        if opened.is_err() {
            let _ = std::fs::remove_dir_all(&own);
        }
        opened
    }

    /// Damage that RocksDB cannot see. It reads a MANIFEST cut short as one whose last
    /// write a crash tore, and then knows nothing of the table files the lost part named
    /// (an open for writing would even delete them). Our own invariants catch what they
    /// can: every checkpoint batch writes `checkpoint_seq` together with its data, and
    /// only migration 0002 moves data without a checkpoint, data that came from one; so
    /// data without a checkpoint number, or table files in a store without a schema
    /// version, mean lost files. A crash never produces either.
    fn check_complete(&self, families: &[String]) -> Result<(), StateError> {
        let lost = |what: &str| {
            self.corrupt(format!(
                "{what}: some of its files are lost to the MANIFEST, which may be damaged or cut short"
            ))
        };
        if self.version == 0 && has_table_files(&self.path) {
            return Err(lost("it records no schema version yet holds table files"));
        }
        let Some(meta) = self.db.cf_handle(CF_META) else {
            return Ok(());
        };
        let mark = std::fs::read_to_string(self.path.join(CHECKPOINT_MARK_FILE))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        if let Some(seq) = self.meta_bytes(KEY_SEQ)? {
            let seq = <[u8; 8]>::try_from(seq.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| self.corrupt("bad checkpoint seq"))?;
            if let Some(mark) = mark.filter(|m| *m > seq) {
                return Err(lost(&format!(
                    "its last checkpoint is {seq}, but checkpoint {mark} was committed to it"
                )));
            }
            return Ok(());
        }
        if let Some(mark) = mark.filter(|m| *m > 0) {
            return Err(lost(&format!(
                "it holds no checkpoint, but checkpoint {mark} was committed to it"
            )));
        }
        for item in self.db.iterator_cf(meta, rocksdb::IteratorMode::Start) {
            let (k, _) = item.map_err(|e| self.read_err(e))?;
            if k.starts_with(MetaEntry::COUNTER_PREFIX.as_bytes()) || &*k == b"counters" {
                return Err(lost("it holds counters but no checkpoint number"));
            }
        }
        for cf in families
            .iter()
            .filter(|f| COLUMN_FAMILIES.contains(&f.as_str()) && *f != CF_META)
        {
            if let Some(item) = self
                .db
                .iterator_cf(self.cf(cf), rocksdb::IteratorMode::Start)
                .next()
            {
                item.map_err(|e| self.read_err(e))?;
                return Err(lost(&format!("it holds {cf} but no checkpoint number")));
            }
        }
        Ok(())
    }

    /// The recorded schema version, refusing a newer one and a store that is not ours.
    fn check_version(&self, families: &[String]) -> Result<u32, StateError> {
        let found = self.schema_version()?;
        if let Some(v) = found.filter(|v| *v > SCHEMA_VERSION) {
            return Err(StateError::TooNew {
                path: self.path.clone(),
                found: v,
                supported: SCHEMA_VERSION,
            });
        }
        if let Some(other) = families.iter().find(|c| {
            *c != rocksdb::DEFAULT_COLUMN_FAMILY_NAME && !COLUMN_FAMILIES.contains(&c.as_str())
        }) {
            return Err(StateError::Foreign {
                path: self.path.clone(),
                why: format!("it has a column family `{other}` that retail-kpi never writes"),
            });
        }
        match found {
            Some(0) => Err(self.corrupt("its schema version is 0")),
            Some(v) => Ok(v),
            // A new store, or one whose first open a kill cut short: migration 0001 on.
            None if self.is_empty(families)? => Ok(0),
            None => Err(StateError::Foreign {
                path: self.path.clone(),
                why: "it holds data but records no schema version".into(),
            }),
        }
    }

    /// The schema version of what is stored, as opened (after any migration).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// What migrating this store would do, without changing it (`state migrate --dry-run`):
    /// the pending migrations run against an overlay that is then dropped.
    pub fn plan(&self) -> Result<Migrated, StateError> {
        let from = self.version;
        let backup = if from >= 1 {
            Some(self.backup_path(from)?)
        } else {
            None
        };
        // One overlay across the steps, so that each sees what the ones before it wrote.
        let mut session = Session::new(&self.db);
        let mut steps = Vec::new();
        for m in pending(from) {
            let (puts, deletes, created) = (session.puts, session.deletes, session.create.len());
            (m.apply)(&mut session).map_err(|e| self.migration_failed(m, from, &None, e))?;
            steps.push(Step {
                version: m.version,
                name: m.name,
                summary: m.summary,
                puts: session.puts - puts,
                deletes: session.deletes - deletes,
                families_created: session.create[created..].to_vec(),
            });
        }
        Ok(Migrated {
            from,
            to: SCHEMA_VERSION,
            backup,
            steps,
        })
    }

    /// Backs the store up (unless it is new) and runs the pending migrations, each in one
    /// synced batch that also records its version, so that a kill at any point leaves
    /// either the old or the new version of that step, and a rerun finishes the job.
    fn migrate(&mut self) -> Result<Migrated, StateError> {
        let from = self.version;
        let backup = if from >= 1 {
            Some(self.backup(from)?)
        } else {
            None
        };
        let mut steps = Vec::new();
        for m in pending(from) {
            let mut session = Session::new(&self.db);
            (m.apply)(&mut session)
                .map_err(|e| self.migration_failed(m, self.version, &backup, e))?;
            let Session {
                overlay,
                create,
                puts,
                deletes,
                ..
            } = session;
            for family in &create {
                if self.db.cf_handle(family).is_none() {
                    self.db
                        .create_cf(family, &Options::default())
                        .map_err(|e| self.write_err(e))?;
                }
            }
            let mut b = WriteBatch::default();
            for (family, changes) in &overlay {
                let cf = self.cf(family);
                for (k, v) in changes {
                    match v {
                        Some(v) => b.put_cf(cf, k, v),
                        None => b.delete_cf(cf, k),
                    }
                }
            }
            b.put_cf(self.cf(CF_META), KEY_SCHEMA, m.version.to_be_bytes());
            crate::failpoint!("migrate.before_commit");
            self.write_batch(b)?;
            self.version = m.version;
            steps.push(Step {
                version: m.version,
                name: m.name,
                summary: m.summary,
                puts,
                deletes,
                families_created: create,
            });
        }
        if from >= 1 {
            tracing::info!(
                from,
                to = self.version,
                backup = %backup.as_deref().unwrap_or(Path::new("-")).display(),
                "state store migrated"
            );
        }
        Ok(Migrated {
            from,
            to: self.version,
            backup,
            steps,
        })
    }

    fn migration_failed(
        &self,
        m: &Migration,
        at: u32,
        backup: &Option<PathBuf>,
        e: MigrationError,
    ) -> StateError {
        StateError::Migration {
            path: self.path.clone(),
            version: m.version,
            name: m.name,
            at,
            backup: backup
                .as_ref()
                .map(|b| format!("; the backup taken before is {}", b.display()))
                .unwrap_or_default(),
            why: e.0,
        }
    }

    /// `<folder>.backup-v<from>-<unix seconds>` beside the state folder, not yet taken.
    fn backup_path(&self, from: u32) -> Result<PathBuf, StateError> {
        let folder_err = |source| StateError::Folder {
            path: self.path.clone(),
            source,
        };
        let abs = std::fs::canonicalize(&self.path).map_err(folder_err)?;
        let name = abs
            .file_name()
            .ok_or_else(|| {
                folder_err(std::io::Error::other(
                    "the state folder is a file system root: there is no room beside it for a backup",
                ))
            })?
            .to_string_lossy()
            .into_owned();
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let base = format!("{name}.backup-v{from}-{secs}");
        let mut candidate = abs.with_file_name(&base);
        let mut n = 2;
        while candidate.exists() {
            candidate = abs.with_file_name(format!("{base}-{n}"));
            n += 1;
        }
        Ok(candidate)
    }

    /// A RocksDB checkpoint beside the store: hard links of its files where the file system
    /// allows, a complete store that the old build opens as it is.
    fn backup(&self, from: u32) -> Result<PathBuf, StateError> {
        let target = self.backup_path(from)?;
        Checkpoint::new(&*self.db)
            .and_then(|c| c.create_checkpoint(&target))
            .map_err(|source| {
                // The checkpoint flushes the memtable into the store first.
                self.failed.set(true);
                StateError::Backup {
                    path: self.path.clone(),
                    backup: target.clone(),
                    from,
                    to: SCHEMA_VERSION,
                    source,
                }
            })?;
        let folder_err = |source| StateError::Folder {
            path: target.clone(),
            source,
        };
        set_private(&target).map_err(folder_err)?;
        // RocksDB syncs the checkpoint's own folder; its name in the parent must be durable
        // too before the migration may change the store.
        if let Some(parent) = target.parent() {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(folder_err)?;
        }
        Ok(target)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// No key in any family (`default` included, which we never write): a new store, or
    /// one whose first open was cut short.
    fn is_empty(&self, families: &[String]) -> Result<bool, StateError> {
        for cf in families {
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
        // A checksum or format error found while reading is damage, not a passing failure.
        if source.kind() == rocksdb::ErrorKind::Corruption {
            return self.corrupt(source.to_string());
        }
        StateError::Read {
            path: self.path.clone(),
            source,
        }
    }

    fn write_err(&self, source: rocksdb::Error) -> StateError {
        self.failed.set(true);
        StateError::Write {
            path: self.path.clone(),
            source,
        }
    }

    /// The version recorded in the store; `None` before migration 0001 has committed.
    pub fn schema_version(&self) -> Result<Option<u32>, StateError> {
        let Some(meta) = self.db.cf_handle(CF_META) else {
            return Ok(None);
        };
        let Some(v) = self
            .db
            .get_cf(meta, KEY_SCHEMA)
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

    fn write_batch(&self, b: WriteBatch) -> Result<(), StateError> {
        self.db
            .write_opt(b, &self.sync)
            .map_err(|e| self.write_err(e))
    }

    /// Commits one checkpoint: a single synced batch, with what the sinks delivered since
    /// their last record. Returns the size of the batch in bytes (for the checkpoint size
    /// metric).
    pub fn commit(&self, d: &Delta, done: &Delivered) -> Result<usize, StateError> {
        let bytes = Backend::write(self, &tables::checkpoint_batch(d, done))
            .map_err(|e| self.write_err(e))?;
        self.mark_checkpoint(d.seq);
        Ok(bytes)
    }

    /// The sinks' own record, between checkpoints: the committed outputs they delivered
    /// go, in one synced batch (it touches nothing a checkpoint writes but the count of
    /// buckets written).
    pub fn record_delivered(&self, done: &Delivered) -> Result<(), StateError> {
        Backend::write(self, &tables::delivered_batch(done)).map_err(|e| self.write_err(e))?;
        Ok(())
    }

    /// Records `seq` in [`CHECKPOINT_MARK_FILE`] (replaced whole by a rename). A failure
    /// only weakens the check it serves, so it is logged, not raised.
    fn mark_checkpoint(&self, seq: u64) {
        let tmp = self.path.join(format!(".{CHECKPOINT_MARK_FILE}.tmp"));
        let done = std::fs::write(&tmp, format!("{seq}\n"))
            .and_then(|()| std::fs::rename(&tmp, self.path.join(CHECKPOINT_MARK_FILE)));
        if let Err(e) = done {
            tracing::debug!("cannot record checkpoint {seq} beside the store: {e}");
        }
    }

    fn meta_bytes(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let Some(meta) = self.db.cf_handle(CF_META) else {
            return Ok(None);
        };
        self.db.get_cf(meta, key).map_err(|e| self.read_err(e))
    }

    /// Reads back the last committed checkpoint.
    pub fn load(&self) -> Result<Restored, StateError> {
        if self.version != SCHEMA_VERSION {
            return Err(StateError::NeedsMigration {
                path: self.path.clone(),
                found: self.version,
                supported: SCHEMA_VERSION,
            });
        }
        tables::load(self).map_err(|f| match f {
            Fault::Read(e) => self.read_err(e),
            Fault::Corrupt(why) => self.corrupt(why),
        })
    }
}

/// The RocksDB side of [`tables`]: a [`Batch`] is one synced `WriteBatch`.
impl Backend for Store {
    type Error = rocksdb::Error;

    fn write(&self, batch: &Batch) -> Result<usize, rocksdb::Error> {
        let mut b = WriteBatch::default();
        for op in &batch.ops {
            match op {
                Op::Put(f, k, v) => b.put_cf(self.cf(f), k, v),
                Op::Delete(f, k) => b.delete_cf(self.cf(f), k),
                Op::DeleteRange(f, from, to) => b.delete_range_cf(self.cf(f), from, to),
            }
        }
        let bytes = b.size_in_bytes();
        self.db.write_opt(b, &self.sync)?;
        Ok(bytes)
    }

    fn get(&self, family: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error> {
        match self.db.cf_handle(family) {
            Some(cf) => self.db.get_cf(cf, key),
            None => Ok(None),
        }
    }

    fn scan(
        &self,
        family: &'static str,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), String>,
    ) -> Result<Result<(), String>, rocksdb::Error> {
        for item in self
            .db
            .iterator_cf(self.cf(family), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            if let Err(e) = visit(&k, &v) {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // After a failed write RocksDB's writers hold their error, and closing flushes
        // them, which trips the assertion described at `db_options`. A store abandoned
        // without closing is what a killed job leaves, and RocksDB recovers that on the
        // next open; the process is about to report the error and exit anyway.
        if !self.failed.get() {
            // SAFETY: dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.db) };
        }
        if let Some(own) = &self.secondary {
            let _ = std::fs::remove_dir_all(own);
        }
    }
}

/// The migrations above version `from`, in order.
fn pending(from: u32) -> impl Iterator<Item = &'static Migration> {
    MIGRATIONS.iter().filter(move |m| m.version > from)
}

/// Free space for an unprivileged writer below `path`.
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: statvfs only writes the struct it is given; an all-zero one is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Bound of the write-ahead log's total size (see `db_options`).
pub const MAX_TOTAL_WAL_BYTES: u64 = 64 << 20;

/// Least free space to open the store for writing (see `Store::open_and_migrate`).
const MIN_FREE_BYTES: u64 = 1 << 20;

/// Settings of every open, for writing or reading.
fn db_options() -> Options {
    let mut opts = Options::default();
    // Debian's librocksdb keeps its assertions on, and one of them aborts the process when
    // a file writer that already failed is written to again. RocksDB's own info log (LOG,
    // in the state folder) is such a writer when the disk fills: it logs the error of the
    // failed write, and the process dies of SIGABRT instead of reporting the full disk.
    // So the info log holds only what RocksDB writes at open (its version and options),
    // which an open for writing makes room for (`MIN_FREE_BYTES`), and fatal errors.
    opts.set_log_level(rocksdb::LogLevel::Fatal);
    // Checkpoints are small and synced; a modest memtable keeps memory flat.
    opts.set_write_buffer_size(16 << 20);
    opts.set_max_open_files(256);
    opts.set_keep_log_file_num(3);
    // The write-ahead log is kept until every family's memtable that it covers is flushed;
    // families written rarely (meta, partitions) held gigabytes of it after millions of
    // rejected records, and replaying it made a restart take 25 s. Past this size RocksDB
    // flushes the families that keep the oldest log alive.
    opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
    opts
}

const SECONDARY_PREFIX: &str = "retail-kpi-secondary-";

/// Removes the private folders of secondary instances whose process is gone (an inspect
/// interrupted by Ctrl-C, a killed job): they hold only RocksDB's info log.
fn remove_stale_secondaries() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SECONDARY_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// How long a starting job waits for readers of its store to finish.
const READERS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Our own lock, taken before RocksDB is touched, so that a second job fails at once even
/// while the first is still creating the store; the kernel drops it when the holder dies,
/// so a killed job never blocks its restart. Readers share it: they keep a job from
/// starting under them, not each other.
fn take_lock(path: &Path, exclusive: bool) -> Result<Option<std::fs::File>, StateError> {
    let folder_err = |source| StateError::Folder {
        path: path.into(),
        source,
    };
    let lock_path = path.join(LOCK_FILE);
    let file = if exclusive {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(folder_err)?
    } else {
        match std::fs::File::open(&lock_path) {
            Ok(f) => f,
            // A store copied without its lock file: no job holds it. One that starts now
            // only appends, and a read-only RocksDB instance keeps the state it opened.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(folder_err(e)),
        }
    };
    if !exclusive {
        return match file.try_lock_shared() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(StateError::Locked { path: path.into() }),
            Err(std::fs::TryLockError::Error(e)) => Err(folder_err(e)),
        };
    }
    // A reader (`state inspect` on a stopped store) holds the lock shared for a moment; a
    // job starting then waits for it rather than failing, while another job (which holds
    // it exclusively, so that a shared lock fails too) is refused at once.
    let deadline = std::time::Instant::now() + READERS_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            Err(std::fs::TryLockError::Error(e)) => return Err(folder_err(e)),
            Err(std::fs::TryLockError::WouldBlock) => {}
        }
        let probe = std::fs::File::open(&lock_path).map_err(folder_err)?;
        let only_readers = probe.try_lock_shared().is_ok();
        drop(probe);
        if !only_readers || std::time::Instant::now() >= deadline {
            return Err(StateError::Locked { path: path.into() });
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Whether `path` holds a store. Without its CURRENT file RocksDB would start a new, empty
/// store over whatever is there; that is right only if no open ever finished here. Every
/// finished open leaves an OPTIONS file, and data lives in table files and the write-ahead
/// log, so any of those without CURRENT is damage to report, never a reason to start over.
fn store_exists(path: &Path) -> Result<bool, StateError> {
    if path.join("CURRENT").exists() {
        return Ok(true);
    }
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(StateError::Folder {
                path: path.into(),
                source,
            })
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let nonempty = entry.metadata().is_ok_and(|m| m.len() > 0);
        if name.starts_with("OPTIONS-")
            || name.ends_with(".sst")
            || (name.ends_with(".log") && nonempty)
        {
            return Err(StateError::Corrupt {
                path: path.into(),
                why: format!(
                    "its file CURRENT is missing while RocksDB files such as {name} are there"
                ),
            });
        }
    }
    if path.join(CHECKPOINT_MARK_FILE).exists() {
        return Err(StateError::Corrupt {
            path: path.into(),
            why: format!(
                "its RocksDB files are gone, yet checkpoints were committed to it ({CHECKPOINT_MARK_FILE} is there)"
            ),
        });
    }
    Ok(false)
}

fn has_table_files(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".sst"))
    })
}

/// Overlay of one migration (or of a whole dry run): reads fall through to the committed
/// store, writes stay here until the caller turns them into one batch, or drops them.
struct Session<'a> {
    db: &'a DB,
    /// family -> key -> new value, `None` for a delete.
    overlay: BTreeMap<String, BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    /// Families to create before the batch is written.
    create: Vec<String>,
    puts: usize,
    deletes: usize,
}

impl<'a> Session<'a> {
    fn new(db: &'a DB) -> Session<'a> {
        Session {
            db,
            overlay: BTreeMap::new(),
            create: Vec::new(),
            puts: 0,
            deletes: 0,
        }
    }

    fn check(&self, family: &str) -> Result<(), MigrationError> {
        if self.db.cf_handle(family).is_some() || self.create.iter().any(|f| f == family) {
            Ok(())
        } else {
            Err(MigrationError(format!(
                "the column family `{family}` does not exist"
            )))
        }
    }
}

impl MigrationStore for Session<'_> {
    fn get(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>, MigrationError> {
        self.check(family)?;
        if let Some(v) = self.overlay.get(family).and_then(|o| o.get(key)) {
            return Ok(v.clone());
        }
        match self.db.cf_handle(family) {
            Some(cf) => self
                .db
                .get_cf(cf, key)
                .map_err(|e| MigrationError(format!("reading {family}: {e}"))),
            None => Ok(None),
        }
    }

    fn scan(&self, family: &str) -> Result<migrations::Entries, MigrationError> {
        self.check(family)?;
        let mut all = BTreeMap::new();
        if let Some(cf) = self.db.cf_handle(family) {
            for item in self.db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
                let (k, v) = item.map_err(|e| MigrationError(format!("reading {family}: {e}")))?;
                all.insert(k.into_vec(), v.into_vec());
            }
        }
        for (k, v) in self.overlay.get(family).into_iter().flatten() {
            match v {
                Some(v) => all.insert(k.clone(), v.clone()),
                None => all.remove(k),
            };
        }
        Ok(all.into_iter().collect())
    }

    fn put(&mut self, family: &str, key: &[u8], value: &[u8]) -> Result<(), MigrationError> {
        self.check(family)?;
        self.overlay
            .entry(family.to_owned())
            .or_default()
            .insert(key.to_vec(), Some(value.to_vec()));
        self.puts += 1;
        Ok(())
    }

    fn delete(&mut self, family: &str, key: &[u8]) -> Result<(), MigrationError> {
        self.check(family)?;
        self.overlay
            .entry(family.to_owned())
            .or_default()
            .insert(key.to_vec(), None);
        self.deletes += 1;
        Ok(())
    }

    fn create_family(&mut self, family: &str) -> Result<(), MigrationError> {
        if self.db.cf_handle(family).is_none() && !self.create.iter().any(|f| f == family) {
            self.create.push(family.to_owned());
        }
        Ok(())
    }
}

fn open_error(path: &Path, e: rocksdb::Error) -> StateError {
    use rocksdb::ErrorKind;
    let msg = e.as_ref();
    // RocksDB gives a missing MANIFEST and a held LOCK file no kind of their own (they come
    // as "IO error" or "NotFound"): they are told apart by the file they name. Its own
    // LOCK file is held only by a process that is not a retail-kpi job (ours take
    // `retail-kpi.lock` first); other messages that mention the LOCK file (a read-only or
    // full folder) are not a holder.
    let missing_manifest = msg.contains("MANIFEST") && msg.contains("No such file");
    let lock_held = msg.contains("Resource temporarily unavailable")
        || msg.contains("lock hold by current process");
    match e.kind() {
        ErrorKind::Corruption => StateError::Corrupt {
            path: path.into(),
            why: e.into_string(),
        },
        _ if missing_manifest => StateError::Corrupt {
            path: path.into(),
            why: e.into_string(),
        },
        ErrorKind::IOError if lock_held => StateError::Locked { path: path.into() },
        _ => StateError::Open {
            path: path.into(),
            source: e,
        },
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
    use crate::aggregate::{Counters, PartitionState};
    use crate::record::Reason;
    use schema::Schema;

    #[test]
    fn a_checkpoint_round_trips_and_rendered_rows_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::cell::RefCell::new(Some(Store::open(dir.path()).unwrap()));
        tables::check_round_trip(
            |d, done| {
                store.borrow().as_ref().unwrap().commit(d, done).unwrap();
            },
            // Each load from a store opened again: what a restart reads.
            || {
                store.borrow_mut().take();
                let s = Store::open(dir.path()).unwrap();
                let r = s.load().unwrap();
                *store.borrow_mut() = Some(s);
                r
            },
        );
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

    /// A schema-1 store as the builds before the migrations wrote it, made by hand: the six
    /// families, version 1, a checkpoint number and the counters as one value (format byte
    /// 1, then twelve `u64`s little-endian, bincode's fixed-size encoding).
    fn v1_store(dir: &Path, counters: &[u8]) {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = DB::open_cf(&opts, dir, &COLUMN_FAMILIES[..6]).unwrap();
        let meta = db.cf_handle(CF_META).unwrap();
        db.put_cf(meta, b"schema_version", [0, 0, 0, 1]).unwrap();
        db.put_cf(meta, b"checkpoint_seq", 7u64.to_be_bytes())
            .unwrap();
        db.put_cf(meta, b"counters", counters).unwrap();
    }

    /// Counters 1, 2, …, 12 in schema 1's field order.
    fn v1_counters() -> Vec<u8> {
        let mut v = vec![1u8];
        for n in 1..=12u64 {
            v.extend(n.to_le_bytes());
        }
        v
    }

    #[test]
    fn a_v1_store_is_backed_up_then_migrated() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("state");
        v1_store(&dir, &v1_counters());
        let (s, m) = Store::open_and_migrate(&dir).unwrap();
        let m = m.expect("a migration ran");
        assert_eq!((m.from, m.to), (1, 3));
        assert_eq!(m.steps.len(), 2);
        assert_eq!((m.steps[0].puts, m.steps[0].deletes), (12, 1));
        assert_eq!(s.schema_version().unwrap(), Some(3));
        assert_eq!(
            s.load().unwrap().counters,
            Counters {
                read: 1,
                accepted: 2,
                rejected: [3, 4, 5, 6, 7, 8, 9],
                replayed_skipped: 10,
                windows_closed: 11,
                buckets_rendered: 12,
            }
        );
        assert_eq!(s.meta_bytes(b"counters").unwrap(), None);
        assert_eq!(
            s.meta_bytes(b"counter/rejected/late").unwrap(),
            Some(8u64.to_be_bytes().to_vec())
        );
        drop(s);
        let backup = m.backup.expect("an older store is backed up");
        assert_eq!(
            backup.parent().unwrap(),
            parent.path().canonicalize().unwrap()
        );
        let name = backup.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("state.backup-v1-"), "{name}");
        let b = Store::open_read_only(&backup).unwrap();
        assert_eq!(b.version(), 1);
        assert_eq!(b.meta_bytes(b"counters").unwrap(), Some(v1_counters()));
        let (_, again) = Store::open_and_migrate(&dir).unwrap();
        assert!(again.is_none(), "a migrated store has nothing left to do");
    }

    /// Migration 0003: a schema-2 window value becomes a world row and a row per country.
    #[test]
    fn windows_of_schema_2_become_rows() {
        let dir = tempfile::tempdir().unwrap();
        v1_store(dir.path(), &v1_counters());
        {
            let mut opts = Options::default();
            opts.create_missing_column_families(true);
            let db = DB::open_cf(&opts, dir.path(), &COLUMN_FAMILIES[..6]).unwrap();
            // Schema 2's window: format byte 1, world, then the country list (bincode).
            #[derive(serde::Serialize)]
            struct A(u64, u64, u64, u128, i128);
            let mut v = vec![1u8];
            bincode::serialize_into(
                &mut v,
                &(
                    A(3, 2, 1, 9, -50_000),
                    vec![
                        ("EIRE".to_owned(), A(1, 1, 0, 2, 10_000)),
                        ("UK".to_owned(), A(2, 1, 1, 7, -60_000)),
                    ],
                ),
            )
            .unwrap();
            db.put_cf(db.cf_handle(CF_OPEN).unwrap(), encode_i64(600), &v)
                .unwrap();
            db.put_cf(db.cf_handle(CF_CLOSED).unwrap(), encode_i64(0), &v)
                .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let r = s.load().unwrap();
        for (got, at) in [(&r.open, 600), (&r.closed, 0)] {
            assert_eq!(got.len(), 1);
            let (start, w) = &got[0];
            assert_eq!(*start, at);
            assert_eq!((w.world.opm, w.world.volume.0), (3, -50_000));
            let names: Vec<&str> = w.sorted_countries().iter().map(|c| c.0).collect();
            assert_eq!(names, ["EIRE", "UK"]);
            assert_eq!(w.countries["UK"].total_items, 7);
        }
        assert!(r.members.is_empty());
    }

    /// Rejected records stored by builds before the record-limit cut (format byte 1) read
    /// back whole.
    #[test]
    fn rejected_records_of_format_1_still_read() {
        let old = StoredRejectedV1 {
            topic: "t".into(),
            partition: 1,
            offset: 2,
            reason: Reason::InvalidJson,
            message: "m".into(),
            raw: b"{".to_vec(),
        };
        let mut v = vec![1u8];
        bincode::serialize_into(&mut v, &old).unwrap();
        let r = schema::Rejected::decode_value(&v).unwrap();
        assert_eq!((r.raw.as_slice(), r.raw_len), (&b"{"[..], 1));
        assert!(!r.raw_truncated());
    }

    #[test]
    fn a_plan_runs_the_migrations_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        v1_store(dir.path(), &v1_counters());
        {
            let s = Store::open_read_only(dir.path()).unwrap();
            let plan = s.plan().unwrap();
            assert_eq!((plan.from, plan.to), (1, SCHEMA_VERSION));
            assert_eq!(
                plan.steps,
                vec![
                    Step {
                        version: 2,
                        name: "counters_as_keys",
                        summary: MIGRATIONS[1].summary,
                        puts: 12,
                        deletes: 1,
                        families_created: vec![],
                    },
                    Step {
                        version: 3,
                        name: "window_rows",
                        summary: MIGRATIONS[2].summary,
                        puts: 0,
                        deletes: 0,
                        families_created: vec![CF_MEMBERS.to_owned()],
                    }
                ]
            );
            assert!(matches!(
                s.load(),
                Err(StateError::NeedsMigration {
                    found: 1,
                    supported: 3,
                    ..
                })
            ));
        }
        let s = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(s.version(), 1);
        assert_eq!(s.meta_bytes(b"counters").unwrap(), Some(v1_counters()));
    }

    #[test]
    fn a_migration_that_fails_leaves_the_store_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let bad = vec![1u8, 2, 3];
        v1_store(dir.path(), &bad);
        let e = Store::open(dir.path()).err().expect("must fail");
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                StateError::Migration {
                    version: 2,
                    at: 1,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(
            msg.contains("0002 (counters_as_keys)")
                && msg.contains("stays at schema version 1")
                && msg.contains("backup taken before is"),
            "{msg}"
        );
        let s = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(s.version(), 1);
        assert_eq!(s.meta_bytes(b"counters").unwrap(), Some(bad));
    }

    #[test]
    fn a_fresh_store_runs_every_migration_and_needs_no_backup() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("state");
        let (s, m) = Store::open_and_migrate(&dir).unwrap();
        let m = m.expect("a fresh store is built by the migrations");
        assert_eq!((m.from, m.to, m.backup), (0, SCHEMA_VERSION, None));
        assert_eq!(m.steps[0].families_created, COLUMN_FAMILIES[..6].to_vec());
        assert_eq!(m.steps[2].families_created, [CF_MEMBERS]);
        assert_eq!(s.version(), SCHEMA_VERSION);
        assert_eq!(
            s.load().unwrap(),
            Restored {
                closed_before: i64::MIN,
                ..Restored::default()
            }
        );
        let entries: Vec<_> = std::fs::read_dir(parent.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "no backup beside a fresh store");
    }

    /// What a MANIFEST cut short can leave: data whose checkpoint number was in a table
    /// file that the MANIFEST no longer names.
    #[test]
    fn data_without_a_checkpoint_number_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let mut b = WriteBatch::default();
            b.put_cf(
                s.cf(CF_PARTITIONS),
                0u32.to_be_bytes(),
                schema::Partitions::encode_value(&PartitionState::default()),
            );
            s.write_batch(b).unwrap();
        }
        for e in [
            Store::open(dir.path()).err(),
            Store::open_read_only(dir.path()).err(),
        ] {
            let msg = e.as_ref().map(ToString::to_string).unwrap_or_default();
            assert!(matches!(e, Some(StateError::Corrupt { .. })), "{msg}");
            assert!(msg.contains("partitions but no checkpoint number"), "{msg}");
        }
    }

    #[test]
    fn looking_at_a_missing_store_creates_nothing() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("nothing");
        assert!(matches!(
            Store::open_read_only(&dir),
            Err(StateError::Missing { .. })
        ));
        assert!(!dir.exists());
    }

    #[test]
    fn a_second_opener_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let t0 = std::time::Instant::now();
        match Store::open(dir.path()) {
            Err(StateError::Locked { .. }) => {}
            other => panic!("expected Locked, got {:?}", other.err()),
        }
        // Not after waiting as for a reader.
        assert!(t0.elapsed() < READERS_WAIT / 2, "{:?}", t0.elapsed());
    }

    #[test]
    fn a_starting_job_waits_for_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let reader = Store::open_read_only(dir.path()).unwrap();
        let (looked, done) = std::sync::mpsc::channel();
        let path = dir.path().to_owned();
        let job = std::thread::spawn(move || {
            let opened = Store::open(&path).map(|_| ());
            looked.send(()).unwrap();
            opened
        });
        // The job waits while the reader looks...
        assert!(done
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_err());
        // ...and opens once it is done.
        drop(reader);
        job.join().unwrap().unwrap();
    }

    #[test]
    fn a_secondary_instance_sees_commits_and_leaves_the_folder_alone() {
        let dir = tempfile::tempdir().unwrap();
        let job = Store::open(dir.path()).unwrap();
        let d = Delta {
            seq: 1,
            ..Delta::default()
        };
        job.commit(&d, &Delivered::default()).unwrap();
        let listing = || {
            let mut v: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (e.file_name(), e.metadata().unwrap().len())
                })
                .collect();
            v.sort();
            v
        };
        let before = listing();
        let look = Store::open_secondary(dir.path()).unwrap();
        assert_eq!(look.load().unwrap().seq, 1);
        let own = look.secondary.clone().unwrap();
        assert!(own.exists() && !own.starts_with(dir.path()));
        drop(look);
        assert!(!own.exists(), "its own folder is removed with it");
        assert_eq!(listing(), before, "the state folder is untouched");
        // A later commit is seen by the next look, with the job still holding the store.
        job.commit(
            &Delta {
                seq: 2,
                ..Delta::default()
            },
            &Delivered::default(),
        )
        .unwrap();
        assert_eq!(
            Store::open_secondary(dir.path())
                .unwrap()
                .load()
                .unwrap()
                .seq,
            2
        );
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
            s.write_batch(b).unwrap();
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
