//! 0003 — windows stored as one row per (window, country), and the countries each partition
//! brought into an open window.
//!
//! Before: `open_windows` and `closed_windows` hold one value per window, format byte 1 ++
//! bincode `{ world: Agg, countries: Vec<(String, Agg)> }`. After, in both families:
//! key `window` (8 bytes, as before) → the world row; key `window ++ country` (the country's
//! UTF-8 bytes) → that country's row; each value format byte 2 ++ bincode `Agg` (the same
//! five sums, field for field). A new family `window_countries` holds, for open windows,
//! `window ++ partition u32 BE ++ country` → empty: the countries each partition brought in,
//! which the cap on countries per window and partition (SPEC §7) counts.
//!
//! Why: a checkpoint rewrote every country of every window it touched (2.3 GB written for
//! a 174 MB input with many countries); with a row per country it writes the rows that
//! changed. The world row's key is the old window key, so a window's rows are the key
//! range `[window, window + 1)`, and closing or rendering deletes a range as before.
//!
//! What this migration cannot know: which partition brought which country into the open
//! windows it migrates (schema 2 did not keep it). Those windows start with no members, so
//! the cap counts, for them, only the countries that arrive after the migration. A fresh
//! store counts every one.

use super::{Migration, MigrationError, MigrationStore};

pub const MIGRATION: Migration = Migration {
    version: 3,
    name: "window_rows",
    summary: "store open and closed windows as one row per (window, country); add window_countries (the countries each partition brought into an open window)",
    apply,
};

/// Schema 2's sums of a window or a country, frozen: the field order is the bincode order.
#[derive(serde::Deserialize, serde::Serialize, Clone, Copy)]
struct AggV2 {
    opm: u64,
    orders: u64,
    returns: u64,
    total_items: u128,
    volume: i128,
}

/// Schema 2's window value, frozen.
#[derive(serde::Deserialize)]
struct WindowV2 {
    world: AggV2,
    countries: Vec<(String, AggV2)>,
}

fn row(a: &AggV2) -> Vec<u8> {
    let mut v = vec![2u8];
    bincode::serialize_into(&mut v, a).expect("serialising to a Vec cannot fail");
    v
}

fn apply(s: &mut dyn MigrationStore) -> Result<(), MigrationError> {
    for family in ["open_windows", "closed_windows"] {
        for (key, value) in s.scan(family)? {
            if key.len() != 8 {
                return Err(MigrationError(format!(
                    "{family}: a key of {} bytes, where schema 2 has 8",
                    key.len()
                )));
            }
            let w: WindowV2 = match value.split_first() {
                Some((1, body)) => bincode::deserialize(body)
                    .map_err(|e| MigrationError(format!("{family}: {e}")))?,
                _ => {
                    return Err(MigrationError(format!(
                        "{family}: a value that is not schema 2's window"
                    )))
                }
            };
            s.put(family, &key, &row(&w.world))?;
            for (country, a) in &w.countries {
                let mut k = key.clone();
                k.extend_from_slice(country.as_bytes());
                s.put(family, &k, &row(a))?;
            }
        }
    }
    s.create_family("window_countries")?;
    Ok(())
}
