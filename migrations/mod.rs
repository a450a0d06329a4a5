//! Migrations of the state store's layout: ordered, numbered, append-only, one file each.
//!
//! The store records its schema version (key `schema_version` of the `meta` family, a
//! big-endian `u32`). Version N is what migrations 1..=N leave; a fresh store runs them all,
//! so `0001` *is* the initial layout. On open, `src/state/mod.rs` runs every migration above
//! the recorded version, each in one synced write batch together with its new version
//! number, after a RocksDB checkpoint of the old store (see README "Upgrading and the state
//! store").
//!
//! Rules for a new migration:
//! - Add a file `mNNNN_what_it_does.rs` with the next number, a module doc comment saying
//!   what it changes and why, and append it to [`MIGRATIONS`]. The schema version this
//!   build writes follows from the list ([`LATEST`]).
//! - Never edit a migration that has shipped: stores in the field were migrated by it.
//! - Do not use the crate's current types to read old bytes: they change with later
//!   layouts. Keep a frozen copy of the old shape inside the migration file.
//! - Reads see the store as committed plus what this migration wrote so far. Everything a
//!   migration writes is committed together, or not at all, so a migration may be cut
//!   short by a kill at any point and simply runs again on the next open.
//! - Create column families with [`MigrationStore::create_family`] (RocksDB cannot put that
//!   in a write batch: it happens just before the batch and is a no-op when the family
//!   already exists, so a rerun is harmless).
//! - `tests/state_store.rs` opens the committed schema-1 fixture with the new build and
//!   must still end byte-identical to an uninterrupted run.
//!
//! Why this layout rather than a workspace crate (as SeaORM's `migration` crate): the files
//! are compiled into the library through a `#[path]` module of `src/state/mod.rs`. That keeps
//! one crate and one build on the two-core CI machines, and it keeps `rocksdb` imported by
//! `src/state/` alone: a migration is plain code over the small [`MigrationStore`]
//! trait, which `src/state/mod.rs` implements over a RocksDB write batch, so a migration cannot write
//! outside its batch or forget the version. A separate crate would have needed either its
//! own RocksDB access (a second place that knows the engine) or this same trait exported
//! across a crate boundary, for no gain: each migration is still a file of its own, and
//! this list is the order.

mod m0001_initial_layout;
mod m0002_counters_as_keys;
mod m0003_window_rows;

/// An error of one migration: what it found that it cannot migrate.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MigrationError(pub String);

/// Keys and values of one column family, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// What a migration may do to the store: plain key-value operations per column family.
///
/// Writes are collected and committed by the caller in one synced batch with the new schema
/// version; reads see the committed store overlaid with the writes made so far.
pub trait MigrationStore {
    /// The value under `key` in `family`, if any.
    fn get(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>, MigrationError>;
    /// Every key and value of `family`, in key order.
    fn scan(&self, family: &str) -> Result<Entries, MigrationError>;
    fn put(&mut self, family: &str, key: &[u8], value: &[u8]) -> Result<(), MigrationError>;
    fn delete(&mut self, family: &str, key: &[u8]) -> Result<(), MigrationError>;
    /// Creates `family` if it does not exist yet.
    fn create_family(&mut self, family: &str) -> Result<(), MigrationError>;
}

/// One step of the layout.
pub struct Migration {
    /// The schema version the store has once this migration is committed.
    pub version: u32,
    /// The file's name without its number, e.g. `counters_as_keys`.
    pub name: &'static str,
    /// One line for `state migrate` and the logs.
    pub summary: &'static str,
    pub apply: fn(&mut dyn MigrationStore) -> Result<(), MigrationError>,
}

/// Every migration, in order; version `i + 1` at index `i`.
pub const MIGRATIONS: &[Migration] = &[
    m0001_initial_layout::MIGRATION,
    m0002_counters_as_keys::MIGRATION,
    m0003_window_rows::MIGRATION,
];

/// The schema version this build writes: the last migration's.
pub const LATEST: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_one_by_one_and_named_once() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{} is out of order", m.name);
            assert!(!m.summary.is_empty(), "{} has no summary", m.name);
        }
        let mut names: Vec<_> = MIGRATIONS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MIGRATIONS.len());
    }

    /// Each migration is a file named after its number and name, so the folder listing
    /// is the order (the list above must not skip or reorder a file).
    #[test]
    fn every_migration_has_its_file() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('m') && n.as_bytes().get(1).is_some_and(u8::is_ascii_digit))
            .collect();
        files.sort();
        let expected: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("m{:04}_{}.rs", m.version, m.name))
            .collect();
        assert_eq!(files, expected);
    }
}
