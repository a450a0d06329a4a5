//! Deterministic invoice generator behind `retail-kpi generate` and `retail-kpi produce`.
//!
//! Tests, benchmarks and demos need a stream that looks like the real one (the UCI Online
//! Retail data set the task is built on), that exercises every input rule of SPEC §1, §4
//! and §7, and that is byte-identical for a given seed on every machine, so that the output
//! of a run can be compared with a stored one. This module gives exactly that:
//!
//! * about `rate_per_minute` invoices per minute of event time (exponential gaps), event
//!   times up to 30 s out of order, ~92 % United Kingdom, ~4 % returns, 1 to 8 lines from a
//!   catalogue of real-looking products, a median invoice of about 33 in money and 15 units;
//! * a `late_fraction` of invoices that are late by SPEC §4 for a job that reads the records
//!   in this order from one partition;
//! * a `bad_fraction` of records that cycle through every reason code of SPEC §7;
//! * rare but valid oddities (digit-string invoice numbers, other timestamp spellings,
//!   padded countries, unknown fields, reordered fields, ...) so that the job's parser
//!   meets them in every run, not only in its unit tests.
//!
//! Determinism: one [`ChaCha8Rng`] seeded from `seed`; integers are drawn only from `u32`,
//! `u64` and `i64` ranges (a `usize` range draws differently on 32-bit targets); floating
//! point is used only through IEEE basic operations (+ − × ÷, exactly rounded everywhere),
//! which is why the exponential gaps use a hand-written logarithm instead of `f64::ln`, whose
//! last bit depends on the platform's libm; and no float is ever formatted: prices are
//! decimal text from the catalogue, everything else is an integer.
//!
//! Speed: a valid invoice is written straight into its byte buffer from pre-escaped
//! pieces; only the rare malformed or reordered records go through the slower `Doc`
//! model, which can drop, repeat or replace single fields.

pub mod produce;

use std::fmt;
use std::iter::FusedIterator;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Settings of the generator.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Number of records to make, malformed ones included (default 1,000).
    pub count: u64,
    /// Seed of the random stream; the same settings and seed give the same bytes (default 0).
    pub seed: u64,
    /// Event time of the first invoice, UTC, milliseconds since the epoch
    /// (default 2020-09-18 10:00:00).
    pub start_ms: i64,
    /// Mean invoices per minute of event time (default 10.0).
    pub rate_per_minute: f64,
    /// Fraction of records that are valid invoices made later than the grace (default 0.0).
    pub late_fraction: f64,
    /// Fraction of records that are malformed (default 0.0).
    pub bad_fraction: f64,
    /// Grace the late invoices must exceed, ms (default 60,000, the job's default grace).
    pub grace_ms: i64,
    /// True when the records go to Kafka with a broker timestamp (CreateTime): then
    /// `future_timestamp` records can be made too; false for files (no broker timestamp).
    pub broker_timestamps: bool,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            count: 1_000,
            seed: 0,
            start_ms: DEFAULT_START_MS,
            rate_per_minute: 10.0,
            late_fraction: 0.0,
            bad_fraction: 0.0,
            grace_ms: 60_000,
            broker_timestamps: false,
        }
    }
}

impl GenConfig {
    /// Checks the settings; [`Generator::new`] panics on settings this rejects, so a
    /// command line should call it first and show the error.
    pub fn validate(&self) -> Result<(), GenError> {
        let bad =
            |field: &'static str, reason: String| Err(GenError::InvalidConfig { field, reason });
        let r = self.rate_per_minute;
        if !(r.is_finite() && r > 0.0 && r <= MAX_RATE_PER_MINUTE) {
            return bad(
                "rate",
                format!("must be above 0 and at most {MAX_RATE_PER_MINUTE} per minute, not {r}"),
            );
        }
        for (field, f) in [
            ("late_fraction", self.late_fraction),
            ("bad_fraction", self.bad_fraction),
        ] {
            if !(0.0..=1.0).contains(&f) {
                return bad(field, format!("must be between 0 and 1, not {f}"));
            }
        }
        if self.late_fraction + self.bad_fraction > 1.0 {
            return bad(
                "late_fraction",
                "late_fraction + bad_fraction must not exceed 1".to_string(),
            );
        }
        if !(0..=MAX_GRACE_MS).contains(&self.grace_ms) {
            return bad(
                "grace",
                format!(
                    "must be between 0 and {MAX_GRACE_MS} ms, not {}",
                    self.grace_ms
                ),
            );
        }
        // Every event time written must stay inside years 0000..=9999 (SPEC §1): late
        // invoices reach back grace + jitter + 5 min before the start, future ones 2 h
        // ahead of the end. The end is estimated generously (twice the mean span plus the
        // largest gap the sampler can draw), in floating point as nothing is written from it.
        let lowest = MIN_EVENT_MS + self.grace_ms + MAX_JITTER_MS + LATE_EXTRA_MAX_MS;
        let gap_ms = MS_PER_MINUTE / r;
        let span_ms = 2.0 * gap_ms * self.count as f64 + 40.0 * gap_ms;
        let highest =
            (MAX_EVENT_MS - FUTURE_AHEAD_MS - FUTURE_EXTRA_MAX_MS - MAX_BROKER_DELAY_MS) as f64;
        if self.start_ms < lowest || self.start_ms as f64 + span_ms > highest {
            return bad(
                "start",
                "the stream (start, count / rate) must stay within years 0000..9999".to_string(),
            );
        }
        Ok(())
    }
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// The start time given on the command line is not a timestamp.
    #[error("invalid start time {input:?}: {reason} (expected UTC like \"2020-09-18 10:00:00\")")]
    InvalidStart {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A generator setting is out of range.
    #[error("invalid generator setting {field}: {reason}")]
    InvalidConfig {
        /// The setting, named as on the command line.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// One generated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedRecord {
    /// The record value: one JSON invoice, or a malformed one; never contains `\n`, so it
    /// can be written as one line of a JSON-lines file.
    pub value: Vec<u8>,
    /// CreateTime to give the record (ms), None for files.
    pub timestamp_ms: Option<i64>,
}

/// What the job must do with a generated record, for end-to-end tests.
///
/// This holds when the job reads the records in the order generated from one partition,
/// with the default limits (1 MiB, 10,000 items, `max_future_skew` at most 2 h) and the
/// grace of [`GenConfig::grace_ms`]. Records spread over several partitions keep their
/// `invalid_*`, `too_large` and `future_timestamp` outcomes, but lateness is decided per
/// partition (SPEC §4), so a `late` record may then be accepted, never the other way round
/// (an accepted record is within the jitter of the nominal clock, and the jitter stays
/// below the grace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// A valid invoice that counts in its window.
    Accepted,
    /// Rejected with this reason code of SPEC §7.
    Rejected(&'static str),
}

/// The generator: an iterator that yields exactly `count` records.
pub struct Generator {
    cfg: GenConfig,
    rng: ChaCha8Rng,
    emitted: u64,
    /// Nominal event clock in microseconds: fine enough that high rates keep their mean.
    clock_us: i64,
    mean_gap_us: f64,
    next_invoice_no: u64,
    /// Largest event time of the accepted invoices so far (the job's `M_p`).
    accepted_max_ms: Option<i64>,
    bad_seen: u64,
    /// Thresholds on a 53-bit uniform draw; integer compares keep the choice exact.
    bad_cut: u64,
    late_cut: u64,
    /// Out-of-order jitter, kept one second below the grace so no ordinary invoice is late.
    jitter_max_ms: i64,
    /// Next variant to use in each table of malformed records.
    cursors: [usize; 3],
    /// `{"SKU":"…","title":"…","unit_price":` for each catalogue entry, pre-escaped.
    product_heads: Vec<Vec<u8>>,
    /// Each country as a JSON string, pre-escaped; index 0 is the United Kingdom.
    country_json: Vec<Vec<u8>>,
    /// Cumulative weights of `OTHER_COUNTRIES`.
    other_cum: Vec<u32>,
    qty_cum: Vec<u32>,
}

impl fmt::Debug for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generator")
            .field("cfg", &self.cfg)
            .field("emitted", &self.emitted)
            .finish_non_exhaustive()
    }
}

impl Generator {
    /// Makes a generator.
    ///
    /// # Panics
    /// When [`GenConfig::validate`] rejects the settings.
    pub fn new(cfg: GenConfig) -> Generator {
        if let Err(e) = cfg.validate() {
            panic!("{e}");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let next_invoice_no = rng.gen_range(100_000_000_000_000u64..900_000_000_000_000);
        let cut = |p: f64| (p * TWO_POW_53) as u64;
        let product_heads = CATALOGUE
            .iter()
            .chain(std::iter::once(&POSTAGE))
            .map(|p| {
                let mut h = b"{\"SKU\":".to_vec();
                h.extend_from_slice(&json_string(p.sku));
                h.extend_from_slice(b",\"title\":");
                h.extend_from_slice(&json_string(p.title));
                h.extend_from_slice(b",\"unit_price\":");
                h
            })
            .collect();
        let country_json = std::iter::once(UK)
            .chain(OTHER_COUNTRIES.iter().map(|c| c.0))
            .map(json_string)
            .collect();
        Generator {
            bad_cut: cut(cfg.bad_fraction),
            late_cut: cut(cfg.late_fraction),
            jitter_max_ms: MAX_JITTER_MS.min(cfg.grace_ms - 1_000).max(0),
            mean_gap_us: US_PER_MINUTE / cfg.rate_per_minute,
            clock_us: cfg.start_ms * 1_000,
            rng,
            emitted: 0,
            next_invoice_no,
            accepted_max_ms: None,
            bad_seen: 0,
            cursors: [0; 3],
            product_heads,
            country_json,
            other_cum: cumulative(OTHER_COUNTRIES.iter().map(|c| c.1)),
            qty_cum: cumulative(QUANTITIES.iter().map(|q| q.1)),
            cfg,
        }
    }

    /// The next record together with what the job must do with it (see [`Expected`]).
    pub fn next_labeled(&mut self) -> Option<(GeneratedRecord, Expected)> {
        if self.emitted >= self.cfg.count {
            return None;
        }
        self.emitted += 1;
        let nominal_ms = self.clock_us.div_euclid(1_000);
        let gap_us = (self.mean_gap_us * exp1(&mut self.rng)).round() as i64;
        self.clock_us += gap_us;
        let timestamp_ms = if self.cfg.broker_timestamps {
            Some(nominal_ms + self.rng.gen_range(0..=MAX_BROKER_DELAY_MS))
        } else {
            None
        };
        // Out of order, but never before the start: the first invoice is at the start.
        let event_ms =
            (nominal_ms - self.rng.gen_range(0..=self.jitter_max_ms)).max(self.cfg.start_ms);
        let roll = self.rng.next_u64() >> 11;
        let (value, expected) = if roll < self.bad_cut {
            self.bad_record(event_ms, timestamp_ms)
        } else if let (true, Some(max)) =
            (roll - self.bad_cut < self.late_cut, self.accepted_max_ms)
        {
            let behind =
                self.cfg.grace_ms + self.rng.gen_range(LATE_EXTRA_MIN_MS..=LATE_EXTRA_MAX_MS);
            let inv = self.draw_invoice(max - behind, true);
            (self.render_valid(&inv), Expected::Rejected("late"))
        } else {
            let mut inv = self.draw_invoice(event_ms, true);
            // Only a grace under a second can make the floored time of an on-time invoice
            // late (the jitter stays a second below the grace); move it just on time then.
            if let Some(max) = self.accepted_max_ms {
                if inv.ts_ms < max - self.cfg.grace_ms {
                    inv.ts_ms = inv.ts_style.ceil(max - self.cfg.grace_ms);
                }
            }
            self.accepted_max_ms =
                Some(self.accepted_max_ms.map_or(inv.ts_ms, |m| m.max(inv.ts_ms)));
            (self.render_valid(&inv), Expected::Accepted)
        };
        debug_assert!(!value.contains(&b'\n'));
        Some((
            GeneratedRecord {
                value,
                timestamp_ms,
            },
            expected,
        ))
    }

    /// A malformed record: the reasons take turns (`too_large` only every
    /// `TOO_LARGE_EVERY`th time, as those records are half a megabyte), and within a reason
    /// the variants of its table take turns, so every variant shows up in a long run.
    fn bad_record(&mut self, event_ms: i64, timestamp_ms: Option<i64>) -> (Vec<u8>, Expected) {
        self.bad_seen += 1;
        if self.bad_seen.is_multiple_of(TOO_LARGE_EVERY) {
            let inv = self.draw_invoice(event_ms, false);
            let mut doc = self.doc(&inv);
            doc.set("items", tiny_items(TOO_LARGE_ITEMS));
            return (doc.render(), Expected::Rejected("too_large"));
        }
        let reasons = if timestamp_ms.is_some() { 4 } else { 3 };
        let which = (self.bad_seen % reasons) as usize;
        if which == 3 {
            let ahead = FUTURE_AHEAD_MS + self.rng.gen_range(0..=FUTURE_EXTRA_MAX_MS);
            let inv = self.draw_invoice(timestamp_ms.unwrap_or(event_ms) + ahead, true);
            return (
                self.render_valid(&inv),
                Expected::Rejected("future_timestamp"),
            );
        }
        let (table, reason) = BAD_TABLES[which];
        let edit = table[self.cursors[which] % table.len()];
        self.cursors[which] += 1;
        let inv = self.draw_invoice(event_ms, false);
        (self.apply(&inv, edit), Expected::Rejected(reason))
    }

    /// Draws an invoice whose written timestamp means `event_ms`, floored to the precision
    /// its spelling shows (flooring only moves it earlier, so a late invoice stays late).
    fn draw_invoice(&mut self, event_ms: i64, allow_empty: bool) -> Invoice {
        let rng = &mut self.rng;
        let no = self.next_invoice_no;
        self.next_invoice_no += rng.gen_range(1..=997u64);
        let (no, no_style) = match rng.gen_range(0..1_000u32) {
            0..=1 => (u64::MAX - rng.gen_range(0..1_000_000u64), NoStyle::Int),
            2..=6 => (no, NoStyle::Zeros),
            7..=56 => (no, NoStyle::Text),
            _ => (no, NoStyle::Int),
        };
        let country = if rng.gen_range(0..10_000u32) < UK_PER_10K {
            0
        } else {
            1 + pick(&self.other_cum, rng) as u16
        };
        let country_style = match rng.gen_range(0..1_000u32) {
            0..=1 => CountryStyle::Padded,
            2 => CountryStyle::Escaped,
            _ => CountryStyle::Plain,
        };
        let ts_style = if rng.gen_range(0..100u32) < 3 {
            TS_VARIANTS[rng.gen_range(0..TS_VARIANTS.len() as u32) as usize]
        } else {
            TsStyle::PLAIN
        };
        let is_return = rng.gen_range(0..100u32) < 4;
        let mut items = [Item::default(); MAX_ITEMS];
        let mut n_items = 0;
        if !(allow_empty && rng.gen_range(0..1_000u32) == 0) {
            let want = 1 + pick(&ITEMS_CUM, rng);
            // Exports to other countries carry a postage line, as in the UCI data.
            if country != 0 && rng.gen_range(0..100u32) < 40 {
                items[0] = Item {
                    product: POSTAGE_INDEX,
                    quantity: rng.gen_range(1..=3),
                    padded: false,
                };
                n_items = 1;
            }
            while n_items < want {
                let product = rng.gen_range(0..CATALOGUE.len() as u32) as u16;
                if items[..n_items].iter().any(|it| it.product == product) {
                    continue;
                }
                let quantity = QUANTITIES[pick(&self.qty_cum, rng)].0;
                // Dear things sell in smaller numbers, cheap ones in packs of 12, 24,
                // 48, as in the UCI data: the smaller or the larger of two draws.
                let other = QUANTITIES[pick(&self.qty_cum, rng)].0;
                let quantity = if product_price(product) >= PRICEY {
                    quantity.min(other)
                } else {
                    quantity.max(other)
                };
                let padded = rng.gen_range(0..200u32) == 0;
                items[n_items] = Item {
                    product,
                    quantity,
                    padded,
                };
                n_items += 1;
            }
        }
        let extra = match rng.gen_range(0..1_000u32) {
            0..=9 => Extra::Id(rng.gen_range(12_346..=18_287)),
            10..=13 => Extra::Null,
            14..=16 => Extra::Nested,
            17..=19 => Extra::Text,
            _ => Extra::None,
        };
        let reordered = rng.gen_range(0..100u32) == 0;
        Invoice {
            no,
            no_style,
            country,
            country_style,
            ts_ms: ts_style.floor(event_ms),
            ts_style,
            is_return,
            items,
            n_items,
            extra,
            reordered,
        }
    }

    /// Writes a valid invoice: straight into bytes, or through [`Doc`] when its fields
    /// are to be shuffled.
    fn render_valid(&mut self, inv: &Invoice) -> Vec<u8> {
        if inv.reordered {
            let mut doc = self.doc(inv);
            for i in (1..doc.fields.len()).rev() {
                let j = self.rng.gen_range(0..=i as u32) as usize;
                doc.fields.swap(i, j);
            }
            return doc.render();
        }
        let mut out = Vec::with_capacity(128 + 96 * inv.n_items);
        out.extend_from_slice(b"{\"invoice_no\":");
        inv.write_no(&mut out);
        out.extend_from_slice(b",\"country\":");
        self.write_country(inv, &mut out);
        out.extend_from_slice(b",\"timestamp\":");
        inv.write_ts(&mut out);
        out.extend_from_slice(b",\"type\":");
        inv.write_type(&mut out);
        out.extend_from_slice(b",\"items\":[");
        for (i, item) in inv.items[..inv.n_items].iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&self.product_heads[item.product as usize]);
            item.write_price(&mut out);
            out.extend_from_slice(b",\"quantity\":");
            push_u64(&mut out, u64::from(item.quantity));
            out.push(b'}');
        }
        out.push(b']');
        if inv.extra != Extra::None {
            out.extend_from_slice(b",\"customer_id\":");
            inv.extra.write(&mut out);
        }
        out.push(b'}');
        out
    }

    fn write_country(&self, inv: &Invoice, out: &mut Vec<u8>) {
        let plain = &self.country_json[inv.country as usize];
        match inv.country_style {
            CountryStyle::Plain => out.extend_from_slice(plain),
            // Valid, but the key is the trimmed text (SPEC §1).
            CountryStyle::Padded => {
                out.extend_from_slice(b"\"  ");
                out.extend_from_slice(&plain[1..plain.len() - 1]);
                out.extend_from_slice(b" \"");
            }
            // Valid, but the key is the unescaped text: "\u0047ermany" is Germany.
            CountryStyle::Escaped => {
                out.extend_from_slice(format!("\"\\u{:04x}", plain[1]).as_bytes());
                out.extend_from_slice(&plain[2..]);
            }
        }
    }

    /// The invoice as a list of fields, for the records that drop, repeat or replace one.
    /// Rendered unchanged it gives the same bytes as [`Generator::render_valid`].
    fn doc(&self, inv: &Invoice) -> Doc {
        let field = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = Vec::new();
            f(&mut v);
            Val::Raw(v)
        };
        let mut fields = vec![
            ("invoice_no", field(&|o| inv.write_no(o))),
            ("country", field(&|o| self.write_country(inv, o))),
            ("timestamp", field(&|o| inv.write_ts(o))),
            ("type", field(&|o| inv.write_type(o))),
            ("items", Val::Items),
        ];
        if inv.extra != Extra::None {
            fields.push(("customer_id", field(&|o| inv.extra.write(o))));
        }
        let items = inv.items[..inv.n_items]
            .iter()
            .map(|item| {
                let p = product(item.product);
                let mut price = Vec::new();
                item.write_price(&mut price);
                let mut quantity = Vec::new();
                push_u64(&mut quantity, u64::from(item.quantity));
                vec![
                    ("SKU", json_string(p.sku)),
                    ("title", json_string(p.title)),
                    ("unit_price", price),
                    ("quantity", quantity),
                ]
            })
            .collect();
        Doc {
            fields,
            items,
            trailing_comma: false,
        }
    }

    /// Applies one malformation to an invoice (which has at least one item).
    fn apply(&mut self, inv: &Invoice, edit: Edit) -> Vec<u8> {
        let mut doc = self.doc(inv);
        let item = self.rng.gen_range(0..doc.items.len() as u32) as usize;
        match edit {
            Edit::Remove(key) => doc.fields.retain(|f| f.0 != key),
            Edit::Set(key, v) => doc.set(key, v.to_vec()),
            Edit::Add(key, v) => doc.fields.push((key, Val::Raw(v.to_vec()))),
            Edit::ItemRemove(key) => doc.items[item].retain(|f| f.0 != key),
            Edit::ItemSet(key, v) => {
                for f in doc.items[item].iter_mut().filter(|f| f.0 == key) {
                    f.1 = v.to_vec();
                }
            }
            Edit::ItemAdd(key, v) => doc.items[item].push((key, v.to_vec())),
            Edit::TrailingComma => doc.trailing_comma = true,
            Edit::Whole(v) => return v.to_vec(),
            Edit::Prefix(p) => {
                let mut out = p.to_vec();
                out.extend_from_slice(&doc.render());
                return out;
            }
            Edit::Suffix(s) => {
                let mut out = doc.render();
                out.extend_from_slice(s);
                return out;
            }
            Edit::Truncate => {
                let mut out = doc.render();
                // Any non-empty proper prefix of an object is unfinished JSON; cut on a
                // character boundary so that it stays valid UTF-8.
                let mut len = self.rng.gen_range(1..out.len() as u64) as usize;
                while len > 1 && out[len] & 0xC0 == 0x80 {
                    len -= 1;
                }
                out.truncate(len);
                return out;
            }
        }
        doc.render()
    }
}

impl Iterator for Generator {
    type Item = GeneratedRecord;

    fn next(&mut self) -> Option<GeneratedRecord> {
        self.next_labeled().map(|(record, _)| record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.cfg.count - self.emitted;
        (
            usize::try_from(left).unwrap_or(usize::MAX),
            usize::try_from(left).ok(),
        )
    }
}

impl FusedIterator for Generator {}

/// Parses a start time: `YYYY-MM-DD HH:MM:SS` (or `T` between), optionally with a
/// fraction and `Z` or `±HH:MM`, as SPEC §1 writes timestamps; no zone means UTC.
/// Returns milliseconds since the epoch (a finer fraction is floored).
pub fn parse_start(s: &str) -> Result<i64, GenError> {
    parse_timestamp(s.trim().as_bytes()).map_err(|reason| GenError::InvalidStart {
        input: s.to_string(),
        reason,
    })
}

// ---------------------------------------------------------------------------------------
// Shape of the stream
// ---------------------------------------------------------------------------------------

/// 2020-09-18 10:00:00 UTC, the day of the example in SPEC §1.
const DEFAULT_START_MS: i64 = 1_600_423_200_000;
const MS_PER_MINUTE: f64 = 60_000.0;
const US_PER_MINUTE: f64 = 60_000_000.0;
/// One invoice per microsecond of event time: the clock's resolution.
const MAX_RATE_PER_MINUTE: f64 = 60_000_000.0;
const MAX_GRACE_MS: i64 = 30 * 86_400_000;
const TWO_POW_53: f64 = 9_007_199_254_740_992.0;
const MAX_JITTER_MS: i64 = 30_000;
const LATE_EXTRA_MIN_MS: i64 = 1_000;
const LATE_EXTRA_MAX_MS: i64 = 300_000;
const MAX_BROKER_DELAY_MS: i64 = 2_000;
/// Twice the job's default `max_future_skew` of 1 h.
const FUTURE_AHEAD_MS: i64 = 2 * 3_600_000;
const FUTURE_EXTRA_MAX_MS: i64 = 600_000;
/// One more than the job's default limit of items per invoice.
const TOO_LARGE_ITEMS: usize = 10_001;
/// 1 in 200 malformed records is too large (0.5 %, each about 500 kB).
const TOO_LARGE_EVERY: u64 = 200;
/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z, the range SPEC §1 allows.
const MIN_EVENT_MS: i64 = -62_167_219_200_000;
const MAX_EVENT_MS: i64 = 253_402_300_799_999;

const MAX_ITEMS: usize = 8;
const UK: &str = "United Kingdom";
const UK_PER_10K: u32 = 9_200;

/// Countries other than the UK, spelt as in the UCI data, weighted by roughly their
/// number of invoices there.
const OTHER_COUNTRIES: &[(&str, u32)] = &[
    ("Germany", 603),
    ("France", 461),
    ("EIRE", 360),
    ("Belgium", 119),
    ("Spain", 105),
    ("Netherlands", 101),
    ("Switzerland", 74),
    ("Portugal", 71),
    ("Australia", 69),
    ("Italy", 55),
    ("Finland", 48),
    ("Sweden", 46),
    ("Norway", 40),
    ("Channel Islands", 33),
    ("Japan", 28),
    ("Poland", 24),
    ("Denmark", 21),
    ("Cyprus", 20),
    ("Austria", 19),
    ("Unspecified", 13),
    ("Singapore", 10),
    ("Malta", 10),
    ("Israel", 9),
    ("USA", 7),
    ("Iceland", 7),
    ("Canada", 6),
    ("Greece", 6),
    ("Czech Republic", 5),
    ("European Community", 5),
    ("Lithuania", 4),
    ("Bahrain", 4),
    ("United Arab Emirates", 3),
    ("Saudi Arabia", 2),
    ("RSA", 1),
    ("Brazil", 1),
    ("Lebanon", 1),
];

struct Product {
    sku: &'static str,
    title: &'static str,
    /// The price as written: at most 2 decimals, like the UCI data.
    price: &'static str,
}

const fn p(sku: &'static str, title: &'static str, price: &'static str) -> Product {
    Product { sku, title, price }
}

/// Products and prices of the UCI Online Retail data.
const CATALOGUE: &[Product] = &[
    p("85123A", "WHITE HANGING HEART T-LIGHT HOLDER", "2.55"),
    p("71053", "WHITE METAL LANTERN", "3.39"),
    p("84406B", "CREAM CUPID HEARTS COAT HANGER", "2.75"),
    p("84029G", "KNITTED UNION FLAG HOT WATER BOTTLE", "3.39"),
    p("84029E", "RED WOOLLY HOTTIE WHITE HEART.", "3.39"),
    p("22752", "SET 7 BABUSHKA NESTING BOXES", "7.65"),
    p("21730", "GLASS STAR FROSTED T-LIGHT HOLDER", "4.25"),
    p("22633", "HAND WARMER UNION JACK", "1.85"),
    p("22632", "HAND WARMER RED POLKA DOT", "1.85"),
    p("84879", "ASSORTED COLOUR BIRD ORNAMENT", "1.69"),
    p("22745", "POPPY'S PLAYHOUSE BEDROOM", "2.1"),
    p("22748", "POPPY'S PLAYHOUSE KITCHEN", "2.1"),
    p("22749", "FELTCRAFT PRINCESS CHARLOTTE DOLL", "3.75"),
    p("22310", "IVORY KNITTED MUG COSY", "1.65"),
    p("84969", "BOX OF 6 ASSORTED COLOUR TEASPOONS", "4.25"),
    p("22623", "BOX OF VINTAGE JIGSAW BLOCKS", "4.95"),
    p("22622", "BOX OF VINTAGE ALPHABET BLOCKS", "9.95"),
    p("21754", "HOME BUILDING BLOCK WORD", "5.95"),
    p("21755", "LOVE BUILDING BLOCK WORD", "5.95"),
    p("21777", "RECIPE BOX WITH METAL HEART", "7.95"),
    p("48187", "DOORMAT NEW ENGLAND", "7.95"),
    p("22960", "JAM MAKING SET WITH JARS", "4.25"),
    p("22913", "RED COAT RACK PARIS FASHION", "4.95"),
    p("22616", "PACK OF 12 LONDON TISSUES", "0.29"),
    p("21977", "PACK OF 60 PINK PAISLEY CAKE CASES", "0.55"),
    p("84991", "60 TEATIME FAIRY CAKE CASES", "0.55"),
    p("22728", "ALARM CLOCK BAKELIKE PINK", "3.75"),
    p("22727", "ALARM CLOCK BAKELIKE RED", "3.75"),
    p("22355", "CHARLOTTE BAG SUKI DESIGN", "0.85"),
    p("21724", "PANDA AND BUNNIES STICKER SHEET", "0.85"),
    p("21883", "STARS GIFT TAPE", "0.65"),
    p("10002", "INFLATABLE POLITICAL GLOBE", "0.85"),
    p("21791", "VINTAGE HEADS AND TAILS CARD GAME", "1.25"),
    p("21035", "SET/2 RED RETROSPOT TEA TOWELS", "2.95"),
    p("22326", "ROUND SNACK BOXES SET OF4 WOODLAND", "2.95"),
    p("22629", "SPACEBOY LUNCH BOX", "1.95"),
    p("22630", "DOLLY GIRL LUNCH BOX", "1.95"),
    p("22423", "REGENCY CAKESTAND 3 TIER", "12.75"),
    p("47566", "PARTY BUNTING", "4.95"),
    p("85099B", "JUMBO BAG RED RETROSPOT", "1.95"),
    p("84077", "WORLD WAR 2 GLIDERS ASSTD DESIGNS", "0.29"),
    p("85152", "HAND OVER THE CHOCOLATE SIGN", "2.1"),
    p("22197", "SMALL POPCORN HOLDER", "0.85"),
    p("23084", "RABBIT NIGHT LIGHT", "2.08"),
    p("22086", "PAPER CHAIN KIT 50'S CHRISTMAS", "2.95"),
    p("21212", "PACK OF 72 RETROSPOT CAKE CASES", "0.55"),
    p("20725", "LUNCH BAG RED RETROSPOT", "1.65"),
    p("22720", "SET OF 3 CAKE TINS PANTRY DESIGN", "4.95"),
    p("21485", "RETROSPOT HEART HOT WATER BOTTLE", "4.95"),
    p("23499", "SET 12 VINTAGE DOILY CHALK", "0.42"),
    p("22457", "NATURAL SLATE HEART CHALKBOARD", "2.95"),
    p("22469", "HEART OF WICKER SMALL", "1.65"),
    p("22470", "HEART OF WICKER LARGE", "2.95"),
    p("21232", "STRAWBERRY CERAMIC TRINKET BOX", "1.25"),
    p("22666", "RECIPE BOX PANTRY YELLOW DESIGN", "2.95"),
    p("82482", "WOODEN PICTURE FRAME WHITE FINISH", "2.55"),
    p("82494L", "WOODEN FRAME ANTIQUE WHITE", "2.95"),
    p("22411", "JUMBO SHOPPER VINTAGE RED PAISLEY", "1.95"),
    p("22382", "LUNCH BAG SPACEBOY DESIGN", "1.65"),
    p("23203", "JUMBO BAG DOILEY PATTERNS", "2.08"),
    p("22492", "MINI PAINT SET VINTAGE", "0.65"),
    p("79321", "CHILLI LIGHTS", "5.75"),
    p("22961", "JAM MAKING SET PRINTED", "1.45"),
    p("20724", "RED RETROSPOT CHARLOTTE BAG", "0.85"),
    p("22993", "SET OF 4 PANTRY JELLY MOULDS", "1.25"),
    p("21080", "SET/20 RED RETROSPOT PAPER NAPKINS", "0.85"),
];

/// The postage line of exports; kept out of the catalogue so only exports get it.
const POSTAGE: Product = p("POST", "POSTAGE", "18");
const POSTAGE_INDEX: u16 = CATALOGUE.len() as u16;

/// Unit price (in hundredths) from which lines take smaller quantities, and under which
/// they take larger ones; tuned so the median invoice is about 33 in money and 15 units.
const PRICEY: u32 = 200;

/// The price of a product in hundredths (catalogue prices have at most 2 decimals).
fn product_price(index: u16) -> u32 {
    let text = product(index).price;
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digit = |i: usize| frac.as_bytes().get(i).map_or(0, |d| u32::from(d - b'0'));
    int.parse::<u32>().unwrap_or(0) * 100 + digit(0) * 10 + digit(1)
}

fn product(index: u16) -> &'static Product {
    CATALOGUE.get(index as usize).unwrap_or(&POSTAGE)
}

/// Quantity of a line and its weight: mostly small counts and packs of 6, 12, 24, with a
/// long wholesale tail, as in the UCI data.
const QUANTITIES: &[(u32, u32)] = &[
    (1, 2_700),
    (2, 1_900),
    (3, 800),
    (4, 800),
    (5, 150),
    (6, 1_000),
    (8, 350),
    (10, 350),
    (12, 1_050),
    (16, 80),
    (20, 80),
    (24, 320),
    (25, 50),
    (36, 70),
    (48, 100),
    (72, 35),
    (96, 30),
    (100, 20),
    (144, 20),
    (200, 8),
    (288, 6),
    (480, 4),
    (600, 2),
    (1_000, 1),
    (2_400, 1),
    (4_800, 1),
];

/// Cumulative weights of 1 ..= 8 lines per invoice.
const ITEMS_CUM: [u32; MAX_ITEMS] = [2_400, 4_000, 5_300, 6_400, 7_400, 8_300, 9_200, 10_000];

fn cumulative(weights: impl Iterator<Item = u32>) -> Vec<u32> {
    weights
        .scan(0, |sum, w| {
            *sum += w;
            Some(*sum)
        })
        .collect()
}

/// Index drawn with the weights whose running sums are `cum`.
fn pick(cum: &[u32], rng: &mut ChaCha8Rng) -> usize {
    let r = rng.gen_range(0..cum[cum.len() - 1]);
    cum.partition_point(|&c| c <= r)
}

/// A standard exponential draw, −ln(U) with U in (0, 1].
fn exp1(rng: &mut ChaCha8Rng) -> f64 {
    let u = ((rng.next_u64() >> 11) + 1) as f64 / TWO_POW_53;
    -ln(u)
}

/// Natural logarithm of a positive normal `x` from IEEE basic operations only, so that it
/// gives the same bits on every platform (unlike `f64::ln`, which is libm's). Splits
/// `x = m · 2^e` with m in [√½, √2) and sums 2·atanh((m−1)/(m+1)); |s| < 0.172, so 13
/// terms leave an error far below one ulp of the result.
fn ln(x: f64) -> f64 {
    const LN_2: f64 = std::f64::consts::LN_2;
    const SQRT_2: f64 = std::f64::consts::SQRT_2;
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    for k in 0..13 {
        sum += term / f64::from(2 * k + 1);
        term *= s2;
    }
    e as f64 * LN_2 + 2.0 * sum
}

// ---------------------------------------------------------------------------------------
// One invoice
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoStyle {
    /// A JSON integer, the usual form.
    Int,
    /// A string of digits (valid, SPEC §1).
    Text,
    /// A string of digits with leading zeros (valid).
    Zeros,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CountryStyle {
    Plain,
    Padded,
    Escaped,
}

/// An unknown field, which the job must ignore whatever it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extra {
    None,
    Id(u32),
    Null,
    Nested,
    Text,
}

impl Extra {
    fn write(self, out: &mut Vec<u8>) {
        match self {
            Extra::None => {}
            Extra::Id(id) => push_u64(out, u64::from(id)),
            Extra::Null => out.extend_from_slice(b"null"),
            Extra::Nested => out.extend_from_slice(br#"{"ids":[1,2.5,"x"],"vip":true}"#),
            Extra::Text => out.extend_from_slice(br#""guest \"walk-in\"""#),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Item {
    product: u16,
    quantity: u32,
    /// Price written with trailing zeros to 5 decimals: valid, 4 decimals by value.
    padded: bool,
}

impl Item {
    fn write_price(&self, out: &mut Vec<u8>) {
        let price = product(self.product).price;
        out.extend_from_slice(price.as_bytes());
        if self.padded {
            match price.find('.') {
                Some(dot) => out.extend(std::iter::repeat_n(b'0', 5 - (price.len() - dot - 1))),
                None => out.extend_from_slice(b".00000"),
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Invoice {
    no: u64,
    no_style: NoStyle,
    country: u16,
    country_style: CountryStyle,
    /// The event time the written timestamp means, ms.
    ts_ms: i64,
    ts_style: TsStyle,
    is_return: bool,
    items: [Item; MAX_ITEMS],
    n_items: usize,
    extra: Extra,
    reordered: bool,
}

impl Invoice {
    fn write_no(&self, out: &mut Vec<u8>) {
        match self.no_style {
            NoStyle::Int => push_u64(out, self.no),
            NoStyle::Text => {
                out.push(b'"');
                push_u64(out, self.no);
                out.push(b'"');
            }
            NoStyle::Zeros => {
                out.extend_from_slice(b"\"000");
                push_u64(out, self.no);
                out.push(b'"');
            }
        }
    }

    fn write_ts(&self, out: &mut Vec<u8>) {
        out.push(b'"');
        self.ts_style.write(self.ts_ms, out);
        out.push(b'"');
    }

    fn write_type(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.is_return {
            b"\"RETURN\""
        } else {
            b"\"ORDER\""
        });
    }
}

/// How a timestamp is spelt: the separator, digits of the fraction, and the zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TsStyle {
    sep: u8,
    frac_digits: u8,
    /// `b'Z'`/`b'z'` for UTC, 0 for no zone or for an offset.
    zone: u8,
    /// Offset from UTC in minutes, when `zone` is 0.
    offset_min: Option<i32>,
}

const fn ts(sep: u8, frac_digits: u8, zone: u8, offset_min: Option<i32>) -> TsStyle {
    TsStyle {
        sep,
        frac_digits,
        zone,
        offset_min,
    }
}

impl TsStyle {
    const PLAIN: TsStyle = ts(b' ', 0, 0, None);

    /// The step of time this spelling shows, ms.
    fn unit(self) -> i64 {
        match self.frac_digits {
            0 => 1_000,
            1 => 100,
            2 => 10,
            _ => 1,
        }
    }

    /// The last instant at or before `ms` that this spelling can show.
    fn floor(self, ms: i64) -> i64 {
        ms - ms.rem_euclid(self.unit())
    }

    /// The first instant at or after `ms` that this spelling can show.
    fn ceil(self, ms: i64) -> i64 {
        self.floor(ms + self.unit() - 1)
    }

    fn write(self, ms: i64, out: &mut Vec<u8>) {
        let local = ms + i64::from(self.offset_min.unwrap_or(0)) * 60_000;
        let days = local.div_euclid(86_400_000);
        let in_day = local.rem_euclid(86_400_000);
        let (y, m, d) = civil_from_days(days);
        push_padded(out, y as u64, 4);
        out.push(b'-');
        push_padded(out, u64::from(m), 2);
        out.push(b'-');
        push_padded(out, u64::from(d), 2);
        out.push(self.sep);
        let secs = (in_day / 1_000) as u64;
        push_padded(out, secs / 3_600, 2);
        out.push(b':');
        push_padded(out, secs / 60 % 60, 2);
        out.push(b':');
        push_padded(out, secs % 60, 2);
        let frac_ms = (in_day % 1_000) as u64;
        match self.frac_digits {
            0 => {}
            1 => push_frac(out, frac_ms / 100, 1),
            2 => push_frac(out, frac_ms / 10, 2),
            n => push_frac(out, frac_ms * 10u64.pow(u32::from(n) - 3), n as usize),
        }
        if self.zone != 0 {
            out.push(self.zone);
        } else if let Some(off) = self.offset_min {
            out.push(if off < 0 { b'-' } else { b'+' });
            let off = u64::from(off.unsigned_abs());
            push_padded(out, off / 60, 2);
            out.push(b':');
            push_padded(out, off % 60, 2);
        }
    }
}

/// The other valid spellings of SPEC §1, used by 3 % of the invoices.
const TS_VARIANTS: &[TsStyle] = &[
    ts(b'T', 0, 0, None),
    ts(b'T', 0, b'Z', None),
    ts(b' ', 3, 0, None),
    ts(b'T', 6, b'Z', None),
    ts(b't', 0, b'z', None),
    ts(b' ', 0, 0, Some(60)),
    ts(b'T', 3, 0, Some(-330)),
    ts(b' ', 1, 0, None),
    ts(b'T', 9, 0, Some(0)),
    ts(b'T', 2, 0, Some(540)),
];

fn push_frac(out: &mut Vec<u8>, v: u64, digits: usize) {
    out.push(b'.');
    push_padded(out, v, digits);
}

/// `v` in decimal, at least `width` digits.
fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    out.extend_from_slice(&buf[start..]);
}

fn push_u64(out: &mut Vec<u8>, v: u64) {
    push_padded(out, v, 1);
}

fn json_string(s: &str) -> Vec<u8> {
    serde_json::to_vec(s).expect("a str always serializes")
}

/// `[{"SKU":"M","title":"","unit_price":0,"quantity":1},…]`, the smallest valid lines.
fn tiny_items(n: usize) -> Vec<u8> {
    const ITEM: &[u8] = br#"{"SKU":"M","title":"","unit_price":0,"quantity":1}"#;
    let mut out = Vec::with_capacity(2 + n * (ITEM.len() + 1));
    out.push(b'[');
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(ITEM);
    }
    out.push(b']');
    out
}

// ---------------------------------------------------------------------------------------
// Malformed records
// ---------------------------------------------------------------------------------------

/// An invoice as a list of fields, so that one can be dropped, repeated or replaced.
#[derive(Debug)]
struct Doc {
    fields: Vec<(&'static str, Val)>,
    items: Vec<Vec<(&'static str, Vec<u8>)>>,
    /// `[{…},]`: invalid JSON.
    trailing_comma: bool,
}

#[derive(Debug)]
enum Val {
    Raw(Vec<u8>),
    /// Rendered from `Doc::items`.
    Items,
}

impl Doc {
    fn set(&mut self, key: &str, value: Vec<u8>) {
        if let Some(f) = self.fields.iter_mut().find(|f| f.0 == key) {
            f.1 = Val::Raw(value);
        }
    }

    fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.push(b'{');
        for (i, (key, val)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_key(&mut out, key);
            match val {
                Val::Raw(v) => out.extend_from_slice(v),
                Val::Items => {
                    out.push(b'[');
                    for (j, item) in self.items.iter().enumerate() {
                        if j > 0 {
                            out.push(b',');
                        }
                        out.push(b'{');
                        for (k, (key, v)) in item.iter().enumerate() {
                            if k > 0 {
                                out.push(b',');
                            }
                            push_key(&mut out, key);
                            out.extend_from_slice(v);
                        }
                        out.push(b'}');
                    }
                    if self.trailing_comma {
                        out.push(b',');
                    }
                    out.push(b']');
                }
            }
        }
        out.push(b'}');
        out
    }
}

/// Keys are plain ASCII names, so quoting is all the escaping they need.
fn push_key(out: &mut Vec<u8>, key: &str) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// One malformation. Values are raw JSON text (or deliberately not JSON).
#[derive(Debug, Clone, Copy)]
enum Edit {
    /// Drop a field of the invoice.
    Remove(&'static str),
    /// Replace the value of a field of the invoice.
    Set(&'static str, &'static [u8]),
    /// Add a field at the end (a second one when the key is there already).
    Add(&'static str, &'static [u8]),
    /// Drop a field of one item.
    ItemRemove(&'static str),
    /// Replace the value of a field of one item.
    ItemSet(&'static str, &'static [u8]),
    /// Add a field at the end of one item.
    ItemAdd(&'static str, &'static [u8]),
    /// A comma after the last item.
    TrailingComma,
    /// Replace the whole record.
    Whole(&'static [u8]),
    /// Bytes before the record.
    Prefix(&'static [u8]),
    /// Bytes after the record.
    Suffix(&'static [u8]),
    /// Cut the record short.
    Truncate,
}

/// Not UTF-8, in strings the invoice uses, in an unknown field, and outside strings.
const UTF8_EDITS: &[Edit] = &[
    Edit::Set("country", b"\"Germ\xFFany\""),
    Edit::ItemSet("title", b"\"CAF\xC3\x28 SIGN\""),
    Edit::Add("note", b"\"\xED\xA0\x80\""),
    Edit::ItemSet("title", b"\"HEART \xE2\x82\""),
    Edit::Set("invoice_no", b"\"5370\xFF12\""),
    Edit::Suffix(b" \xFF"),
    Edit::Set("country", b"\"France\xC0\xAF\""),
];

/// UTF-8 but not exactly one JSON value.
const JSON_EDITS: &[Edit] = &[
    Edit::Truncate,
    Edit::Suffix(b"}"),
    Edit::ItemSet("unit_price", b"NaN"),
    Edit::Prefix(b"\xEF\xBB\xBF"),
    Edit::Set("country", br#""\ud800""#),
    Edit::Suffix(b" true"),
    Edit::TrailingComma,
    Edit::ItemSet("title", b"\"TAB\tINSIDE\""),
    Edit::Set("country", br#""United \udc00Kingdom""#),
    Edit::Truncate,
    Edit::Set("type", b"'ORDER'"),
    Edit::Set("invoice_no", b"0154132541653705"),
    Edit::ItemSet("quantity", b"Infinity"),
    Edit::Suffix(b"x"),
    Edit::Set("invoice_no", b"+154132541653705"),
    Edit::Whole(b"{\"invoice_no\":1,}"),
];

/// JSON, but not an invoice by SPEC §1.
const INVOICE_EDITS: &[Edit] = &[
    Edit::Remove("invoice_no"),
    Edit::Remove("country"),
    Edit::Remove("timestamp"),
    Edit::Remove("type"),
    Edit::Remove("items"),
    Edit::ItemRemove("SKU"),
    Edit::ItemRemove("title"),
    Edit::ItemRemove("unit_price"),
    Edit::ItemRemove("quantity"),
    Edit::Add("country", b"\"France\""),
    Edit::Add("invoice_no", b"1"),
    Edit::Add("items", b"[]"),
    Edit::ItemAdd("quantity", b"1"),
    Edit::Set("type", b"\"order\""),
    Edit::Set("type", b"\"Return\""),
    Edit::Set("type", b"\"CANCEL\""),
    Edit::Set("type", b"1"),
    Edit::ItemSet("unit_price", b"2.55001"),
    Edit::ItemSet("unit_price", b"0.30000000000000004"),
    Edit::ItemSet("unit_price", b"-1.5"),
    Edit::ItemSet("unit_price", b"1000000000.01"),
    Edit::ItemSet("unit_price", b"\"2.55\""),
    Edit::ItemSet("quantity", b"3.0"),
    Edit::ItemSet("quantity", b"-1"),
    Edit::ItemSet("quantity", b"-0"),
    Edit::ItemSet("quantity", b"1000000001"),
    Edit::ItemSet("quantity", b"\"6\""),
    Edit::ItemSet("SKU", b"85123"),
    Edit::ItemSet("title", b"null"),
    Edit::Set("timestamp", b"\"2020-09-18 10:59:60\""),
    Edit::Set("timestamp", b"\"2020-13-01 10:00:00\""),
    Edit::Set("timestamp", b"\"2021-02-29 10:00:00\""),
    Edit::Set("timestamp", b"\"2020-09-18 24:00:00\""),
    Edit::Set("timestamp", b"\"2020-09-18 10:55\""),
    Edit::Set("timestamp", b"\"2020-09-18_10:55:23\""),
    Edit::Set("timestamp", b"\"2020-09-18 10:55:23.1234567890\""),
    Edit::Set("timestamp", b"\"2020-09-18 10:55:23+1:00\""),
    Edit::Set("timestamp", b"\"0000-01-01 00:30:00+01:00\""),
    Edit::Set("timestamp", b"\"9999-12-31 23:30:00-01:00\""),
    Edit::Set("timestamp", b"\"\""),
    Edit::Set("timestamp", b"1600426523000"),
    Edit::Set("country", b"\"\""),
    Edit::Set("country", br#"" \t ""#),
    Edit::Set("country", b"44"),
    Edit::Set("country", b"null"),
    Edit::Set("invoice_no", b"-7"),
    Edit::Set("invoice_no", b"1.5"),
    Edit::Set("invoice_no", b"18446744073709551616"),
    Edit::Set("invoice_no", b"\"18446744073709551616\""),
    Edit::Set("invoice_no", b"\"+12345\""),
    Edit::Set("invoice_no", b"\" 12345\""),
    Edit::Set("invoice_no", b"\"\""),
    Edit::Set("invoice_no", b"null"),
    Edit::Set("items", b"{}"),
    Edit::Set("items", b"\"none\""),
    Edit::Set("items", b"[1]"),
    Edit::Set("items", b"null"),
    Edit::Whole(b"[1,2,3]"),
    Edit::Whole(b"\"invoice\""),
    Edit::Whole(b"42"),
    Edit::Whole(b"null"),
    Edit::Whole(b"{}"),
];

/// The tables in the order the reasons take turns (index = `bad_seen % reasons`;
/// index 3 is `future_timestamp`, made without a table).
const BAD_TABLES: [(&[Edit], &str); 3] = [
    (INVOICE_EDITS, "invalid_invoice"),
    (UTF8_EDITS, "invalid_utf8"),
    (JSON_EDITS, "invalid_json"),
];

// ---------------------------------------------------------------------------------------
// Calendar, and timestamps read with the decoder's parser
// ---------------------------------------------------------------------------------------

/// The date of a day since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A timestamp by SPEC §1, in ms since the epoch (a finer fraction is floored): the
/// decoder's own parser, so that the generator never writes a time the job reads otherwise.
fn parse_timestamp(b: &[u8]) -> Result<i64, &'static str> {
    use crate::event_time::TimestampError;
    let s = std::str::from_utf8(b).map_err(|_| "it is not UTF-8")?;
    match crate::event_time::parse_timestamp(s) {
        Ok(ns) => Ok(ns.div_euclid(1_000_000) as i64),
        Err(TimestampError::Format) => {
            Err("it is not of the form YYYY-MM-DD HH:MM:SS[.fraction][Z|±HH:MM]")
        }
        Err(TimestampError::OutOfRange) => Err("the date or time of day does not exist"),
        Err(TimestampError::YearOutOfRange) => Err("the year in UTC is outside 0000..9999"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn cfg(count: u64, seed: u64) -> GenConfig {
        GenConfig {
            count,
            seed,
            ..GenConfig::default()
        }
    }

    fn all(cfg: GenConfig) -> Vec<(GeneratedRecord, Expected)> {
        let mut g = Generator::new(cfg);
        std::iter::from_fn(|| g.next_labeled()).collect()
    }

    /// Money in units of 10^-5, exact, from the price text.
    fn price_units(v: &Value) -> i64 {
        let s = v.to_string();
        let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
        let frac = format!("{frac:0<5}");
        int.parse::<i64>().unwrap() * 100_000 + frac.parse::<i64>().unwrap()
    }

    /// A strict check of SPEC §1 for what this generator writes, independent of its code
    /// apart from the timestamp parser (which has its own tests). Returns the event time
    /// and the number of items. Repeated keys are found by counting `"key":` in the text,
    /// which works because no value written here contains such a pattern.
    fn check_invoice(text: &str, v: &Value) -> Result<(i64, usize), String> {
        let o = v.as_object().ok_or("not an object")?;
        for key in ["invoice_no", "country", "timestamp", "type", "items"] {
            if text.matches(&format!("\"{key}\":")).count() != 1 {
                return Err(format!("{key} missing or repeated"));
            }
        }
        match &o["invoice_no"] {
            Value::Number(n) if n.is_u64() => {}
            Value::String(s) if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) => {
                s.parse::<u64>().map_err(|_| "invoice_no out of range")?;
            }
            _ => return Err("invoice_no".into()),
        }
        match o["country"].as_str() {
            Some(c) if !c.trim().is_empty() => {}
            _ => return Err("country".into()),
        }
        let ts = o["timestamp"].as_str().ok_or("timestamp type")?;
        let event = parse_timestamp(ts.as_bytes())?;
        if !matches!(o["type"].as_str(), Some("ORDER" | "RETURN")) {
            return Err("type".into());
        }
        let items = o["items"].as_array().ok_or("items")?;
        for key in ["SKU", "title", "unit_price", "quantity"] {
            if text.matches(&format!("\"{key}\":")).count() != items.len() {
                return Err(format!("item field {key} missing or repeated"));
            }
        }
        for item in items {
            let item = item.as_object().ok_or("item not an object")?;
            item["SKU"].as_str().ok_or("SKU")?;
            item["title"].as_str().ok_or("title")?;
            let price = item["unit_price"].as_f64().ok_or("unit_price type")?;
            let decimals = format!("{price}")
                .split_once('.')
                .map_or(0, |(_, f)| f.len());
            if !(0.0..=1e9).contains(&price) || decimals > 4 {
                return Err("unit_price value".into());
            }
            match item["quantity"].as_u64() {
                Some(q) if q <= 1_000_000_000 => {}
                _ => return Err("quantity".into()),
            }
        }
        Ok((event, items.len()))
    }

    /// What SPEC §4 and §7 make of a record, checks in the order of §7.
    fn judge(rec: &GeneratedRecord, max: &mut Option<i64>, grace: i64) -> &'static str {
        let Ok(text) = std::str::from_utf8(&rec.value) else {
            return "invalid_utf8";
        };
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return "invalid_json";
        };
        let (event, n_items) = match check_invoice(text, &v) {
            Ok(x) => x,
            Err(_) => return "invalid_invoice",
        };
        if n_items > 10_000 {
            return "too_large";
        }
        if rec.timestamp_ms.is_some_and(|t| event > t + 3_600_000) {
            return "future_timestamp";
        }
        if max.is_some_and(|m| event < m - grace) {
            return "late";
        }
        *max = Some(max.map_or(event, |m| m.max(event)));
        "accepted"
    }

    fn label(e: Expected) -> &'static str {
        match e {
            Expected::Accepted => "accepted",
            Expected::Rejected(r) => r,
        }
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let mk = |seed| GenConfig {
            late_fraction: 0.05,
            bad_fraction: 0.1,
            broker_timestamps: true,
            ..cfg(5_000, seed)
        };
        let a: Vec<_> = Generator::new(mk(7)).collect();
        let b: Vec<_> = Generator::new(mk(7)).collect();
        let c: Vec<_> = Generator::new(mk(8)).collect();
        assert_eq!(a, b);
        assert_ne!(a[0].value, c[0].value);
        assert!(a.iter().zip(&c).filter(|(x, y)| x == y).count() < 10);
    }

    /// Pins the stream: a change of the generator's bytes must be deliberate, and the same
    /// hash on another platform shows the output does not depend on it.
    #[test]
    fn stream_is_pinned() {
        let mixed = GenConfig {
            bad_fraction: 0.1,
            late_fraction: 0.05,
            broker_timestamps: true,
            ..cfg(3_000, 2020)
        };
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for r in Generator::new(mixed) {
            let ts = r.timestamp_ms.unwrap().to_le_bytes();
            for &b in r.value.iter().chain(&ts) {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        assert_eq!(
            hash, 0xb0c0_f787_a814_159d,
            "FNV-1a of the stream: {hash:#018x}"
        );
        let first = Generator::new(cfg(1, 0)).next().unwrap();
        let text = String::from_utf8(first.value).unwrap();
        assert!(
            text.contains("\"timestamp\":\"2020-09-18 10:00:00\""),
            "{text}"
        );
        assert_eq!(first.timestamp_ms, None);
    }

    #[test]
    fn count_is_exact() {
        for count in [0, 1, 2, 7, 1_000] {
            let cfg = GenConfig {
                bad_fraction: 0.3,
                late_fraction: 0.3,
                ..cfg(count, 3)
            };
            let mut g = Generator::new(cfg);
            assert_eq!(g.size_hint(), (count as usize, Some(count as usize)));
            assert_eq!(g.by_ref().count() as u64, count);
            assert!(g.next().is_none());
        }
    }

    #[test]
    fn no_newline_in_any_value() {
        for broker in [false, true] {
            let cfg = GenConfig {
                bad_fraction: 0.5,
                late_fraction: 0.1,
                broker_timestamps: broker,
                ..cfg(20_000, 11)
            };
            for r in Generator::new(cfg) {
                assert!(!r.value.contains(&b'\n'));
                assert_eq!(r.timestamp_ms.is_some(), broker);
            }
        }
    }

    #[test]
    fn shares_and_medians_look_like_the_uci_data() {
        let n = 100_000;
        let (mut uk, mut returns, mut money, mut units) = (0, 0, Vec::new(), Vec::new());
        let mut first_last = (i64::MAX, i64::MIN);
        let mut countries = std::collections::BTreeSet::new();
        for r in Generator::new(cfg(n, 5)) {
            let v: Value = serde_json::from_slice(&r.value).unwrap();
            let country = v["country"].as_str().unwrap().trim().to_string();
            uk += usize::from(country == UK);
            countries.insert(country);
            returns += usize::from(v["type"] == "RETURN");
            let items = v["items"].as_array().unwrap();
            money.push(
                items
                    .iter()
                    .map(|i| price_units(&i["unit_price"]) * i["quantity"].as_i64().unwrap())
                    .sum::<i64>(),
            );
            units.push(
                items
                    .iter()
                    .map(|i| i["quantity"].as_i64().unwrap())
                    .sum::<i64>(),
            );
            let t = parse_timestamp(v["timestamp"].as_str().unwrap().as_bytes()).unwrap();
            first_last = (first_last.0.min(t), first_last.1.max(t));
        }
        assert_eq!(countries.len(), 1 + OTHER_COUNTRIES.len(), "{countries:?}");
        let share = |k: usize| k as f64 / n as f64;
        assert!((0.90..0.94).contains(&share(uk)), "UK share {}", share(uk));
        assert!(
            (0.03..0.05).contains(&share(returns)),
            "return share {}",
            share(returns)
        );
        money.sort_unstable();
        units.sort_unstable();
        let median_money = money[money.len() / 2] as f64 / 1e5;
        let median_units = units[units.len() / 2];
        assert!(
            (20.0..=50.0).contains(&median_money),
            "median money {median_money}"
        );
        assert!(
            (8..=25).contains(&median_units),
            "median units {median_units}"
        );
        assert!(*units.last().unwrap() > 1_000, "no long tail");
        // 10 a minute for 100,000 invoices: about 10,000 minutes of event time.
        let minutes = (first_last.1 - first_last.0) as f64 / 60_000.0;
        assert!((9_700.0..10_300.0).contains(&minutes), "span {minutes} min");
    }

    /// The labels agree with an independent reading of SPEC §1, §4 and §7, which also
    /// shows that valid records are invoices, late records are behind the running maximum
    /// by more than the grace, and ordinary records are neither late nor future.
    #[test]
    fn labels_agree_with_the_spec() {
        for (broker, grace, rate) in [
            (false, 60_000, 10.0),
            (true, 60_000, 10.0),
            (true, 5_000, 1_000.0),
            (false, 0, 0.5),
        ] {
            let cfg = GenConfig {
                bad_fraction: 0.2,
                late_fraction: 0.1,
                broker_timestamps: broker,
                grace_ms: grace,
                rate_per_minute: rate,
                ..cfg(12_000, 21)
            };
            let mut max = None;
            for (i, (rec, expected)) in all(cfg).into_iter().enumerate() {
                let got = judge(&rec, &mut max, grace);
                assert_eq!(
                    got,
                    label(expected),
                    "record {i}: {}",
                    String::from_utf8_lossy(&rec.value)
                );
            }
        }
    }

    #[test]
    fn every_reason_appears() {
        for broker in [false, true] {
            let cfg = GenConfig {
                bad_fraction: 0.2,
                late_fraction: 0.05,
                broker_timestamps: broker,
                ..cfg(10_000, 1)
            };
            let mut counts = std::collections::BTreeMap::new();
            for (_, e) in all(cfg) {
                *counts.entry(label(e)).or_insert(0) += 1;
            }
            let mut want = vec![
                "accepted",
                "invalid_invoice",
                "invalid_json",
                "invalid_utf8",
                "late",
                "too_large",
            ];
            if broker {
                want.push("future_timestamp");
            }
            want.sort_unstable();
            assert_eq!(
                counts.keys().copied().collect::<Vec<_>>(),
                want,
                "{counts:?}"
            );
            let bad: usize = counts
                .iter()
                .filter(|(k, _)| !["accepted", "late"].contains(k))
                .map(|x| x.1)
                .sum();
            assert!((1_800..2_200).contains(&bad), "{counts:?}");
            assert!((400..600).contains(&counts["late"]), "{counts:?}");
        }
    }

    #[test]
    fn every_variant_is_used() {
        let cfg = GenConfig {
            bad_fraction: 1.0,
            broker_timestamps: true,
            ..cfg(1_000, 2)
        };
        let mut g = Generator::new(cfg);
        g.by_ref().for_each(drop);
        for (i, (table, _)) in BAD_TABLES.iter().enumerate() {
            assert!(g.cursors[i] >= table.len(), "table {i} not cycled");
        }
    }

    #[test]
    fn records_carry_broker_time_near_the_event() {
        let cfg = GenConfig {
            late_fraction: 0.1,
            broker_timestamps: true,
            ..cfg(20_000, 4)
        };
        for (rec, e) in all(cfg) {
            let v: Value = serde_json::from_slice(&rec.value).unwrap();
            let event = parse_timestamp(v["timestamp"].as_str().unwrap().as_bytes()).unwrap();
            let ts = rec.timestamp_ms.unwrap();
            assert!(event <= ts, "event after its broker time");
            if e == Expected::Accepted {
                assert!(ts - event <= MAX_JITTER_MS + MAX_BROKER_DELAY_MS + 1_000);
            }
        }
    }

    #[test]
    fn first_invoice_is_at_start() {
        for seed in 0..50 {
            let start = parse_start("2021-03-04 05:06:07").unwrap();
            let r = Generator::new(GenConfig {
                start_ms: start,
                ..cfg(1, seed)
            })
            .next()
            .unwrap();
            let v: Value = serde_json::from_slice(&r.value).unwrap();
            assert_eq!(
                parse_timestamp(v["timestamp"].as_str().unwrap().as_bytes()),
                Ok(start)
            );
        }
    }

    /// Unchanged, the field model gives the bytes of the fast writer.
    #[test]
    fn doc_renders_like_the_fast_path() {
        let mut g = Generator::new(cfg(0, 6));
        for _ in 0..20_000 {
            let mut inv = g.draw_invoice(DEFAULT_START_MS, true);
            inv.reordered = false;
            assert_eq!(g.doc(&inv).render(), g.render_valid(&inv));
        }
    }

    #[test]
    fn timestamps_round_trip_in_every_spelling() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20_000 {
            let ms = rng.gen_range(MIN_EVENT_MS + 86_400_000..MAX_EVENT_MS - 86_400_000);
            for style in std::iter::once(TsStyle::PLAIN).chain(TS_VARIANTS.iter().copied()) {
                let mut out = Vec::new();
                style.write(ms, &mut out);
                assert_eq!(
                    parse_timestamp(&out),
                    Ok(style.floor(ms)),
                    "{}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }

    #[test]
    fn parse_start_accepts_and_rejects() {
        let ok = [
            ("2020-09-18 10:00:00", 1_600_423_200_000),
            ("2020-09-18T10:00:00", 1_600_423_200_000),
            ("2020-09-18T10:00:00Z", 1_600_423_200_000),
            (" 2020-09-18 10:00:00 ", 1_600_423_200_000),
            ("2020-09-18 10:00:00.5", 1_600_423_200_500),
            ("2020-09-18 12:00:00+02:00", 1_600_423_200_000),
            ("1970-01-01 00:00:00", 0),
            ("1969-12-31 23:59:59.999999999", -1),
            ("2000-02-29 00:00:00", 951_782_400_000),
            ("0000-01-01 00:00:00", MIN_EVENT_MS),
            ("9999-12-31 23:59:59.999", MAX_EVENT_MS),
        ];
        for (s, want) in ok {
            assert_eq!(parse_start(s).unwrap(), want, "{s}");
        }
        let bad = [
            "",
            "2020-09-18",
            "2020-09-18 10:00",
            "2020-09-18 10:00:60",
            "2020-09-18 24:00:00",
            "2020-02-30 10:00:00",
            "2019-02-29 10:00:00",
            "2020-00-10 10:00:00",
            "2020-09-18x10:00:00",
            "2020-09-18 10:00:00.",
            "2020-09-18 10:00:00.1234567890",
            "2020-09-18 10:00:00+2:00",
            "2020-09-18 10:00:00 UTC",
            "0000-01-01 00:00:00+00:01",
            "9999-12-31 23:59:59-00:01",
            "+2020-09-18 10:00:00",
            "2020-9-18 10:00:00",
        ];
        for s in bad {
            let err = parse_start(s).unwrap_err();
            assert!(matches!(err, GenError::InvalidStart { .. }), "{s}");
            assert!(err.to_string().contains("invalid start time"), "{err}");
        }
    }

    #[test]
    fn parser_agrees_with_chrono() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..20_000 {
            let ms = rng.gen_range(-62_000_000_000_000i64..250_000_000_000_000);
            let dt = chrono::DateTime::from_timestamp_millis(ms).unwrap();
            let s = dt.format("%Y-%m-%d %H:%M:%S%.3f").to_string();
            assert_eq!(parse_timestamp(s.as_bytes()), Ok(ms), "{s}");
        }
    }

    #[test]
    fn ln_matches_std() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..100_000 {
            let x = ((rng.next_u64() >> 11) + 1) as f64 / TWO_POW_53;
            assert!(
                (ln(x) - x.ln()).abs() <= 4.0 * f64::EPSILON * x.ln().abs().max(1.0),
                "{x}"
            );
        }
        assert_eq!(ln(1.0), 0.0);
    }

    #[test]
    fn settings_are_checked() {
        let bad = [
            GenConfig {
                rate_per_minute: 0.0,
                ..GenConfig::default()
            },
            GenConfig {
                rate_per_minute: f64::NAN,
                ..GenConfig::default()
            },
            GenConfig {
                late_fraction: -0.1,
                ..GenConfig::default()
            },
            GenConfig {
                bad_fraction: 1.5,
                ..GenConfig::default()
            },
            GenConfig {
                late_fraction: 0.6,
                bad_fraction: 0.6,
                ..GenConfig::default()
            },
            GenConfig {
                grace_ms: -1,
                ..GenConfig::default()
            },
            GenConfig {
                start_ms: MIN_EVENT_MS,
                ..GenConfig::default()
            },
            GenConfig {
                start_ms: MAX_EVENT_MS - 1_000,
                ..GenConfig::default()
            },
        ];
        for c in bad {
            assert!(
                matches!(c.validate(), Err(GenError::InvalidConfig { .. })),
                "{c:?}"
            );
        }
        assert!(GenConfig::default().validate().is_ok());
        assert!(GenConfig {
            late_fraction: 0.5,
            bad_fraction: 0.5,
            ..GenConfig::default()
        }
        .validate()
        .is_ok());
    }

    #[test]
    #[should_panic(expected = "invalid generator setting rate")]
    fn new_panics_on_bad_settings() {
        Generator::new(GenConfig {
            rate_per_minute: -1.0,
            ..GenConfig::default()
        });
    }
}
