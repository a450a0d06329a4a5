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
//! * on request (`daily_cycle`), a day like a shop's: each country's invoices follow its
//!   local time of day, few at night and most in the late morning and the evening, the
//!   world's rate rising and falling with them and keeping its mean over a day;
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

mod bad;
mod calendar;
mod one;
pub mod produce;
mod shape;

use bad::*;
use calendar::*;
use one::*;
use shape::*;

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
    /// Each country's rate of invoices follows its local time of day (`DIURNAL`, by its
    /// UTC offset), and the world's rate the sum of them, with the mean over a day still
    /// `rate_per_minute` (default false: off, and then the stream's bytes are those of a
    /// generator without the cycle, which the pinned outputs were made from).
    pub daily_cycle: bool,
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
            daily_cycle: false,
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
        // The daily cycle stretches a stream by less than a day: any whole day holds a
        // mean day's invoices.
        let cycle_ms = if self.daily_cycle { 86_400_000.0 } else { 0.0 };
        let span_ms = 2.0 * gap_ms * self.count as f64 + 40.0 * gap_ms + cycle_ms;
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
    /// With the daily cycle, per UTC hour of the day: the running sums of the countries'
    /// weights in that hour (see `cycle_tables`); empty without it.
    cycle_cum: Vec<Vec<u64>>,
    /// With the daily cycle, per UTC hour of the day: the world's rate relative to the
    /// day's mean; and what a whole day is worth in time at the mean rate, µs.
    cycle_level: [f64; 24],
    cycle_day_us: f64,
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
        let (cycle_cum, cycle_level) = if cfg.daily_cycle {
            cycle_tables()
        } else {
            (Vec::new(), [1.0; 24])
        };
        let cycle_day_us: f64 = cycle_level
            .iter()
            .map(|level| level * US_PER_HOUR as f64)
            .sum();
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
            cycle_cum,
            cycle_level,
            cycle_day_us,
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
        let e = exp1(&mut self.rng);
        let gap_us = if self.cfg.daily_cycle {
            self.cycle_gap_us(e)
        } else {
            (self.mean_gap_us * e).round() as i64
        };
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

    /// The gap from the clock to the next invoice with the daily cycle, µs: the
    /// exponential draw `e` gives the gap at the day's mean rate, which is then spent
    /// through the hours ahead, each at its own rate (`cycle_level`). That makes the
    /// invoices a Poisson process whose rate follows the cycle hour by hour, exactly (not
    /// only for gaps short beside an hour), with `rate_per_minute` as its mean over a day;
    /// only IEEE basic operations and roundings, so the same bits on every platform.
    fn cycle_gap_us(&self, e: f64) -> i64 {
        let mut left = self.mean_gap_us * e;
        let mut t = self.clock_us;
        // Whole days at once: a very low rate must not walk hour by hour through years.
        let days = (left / self.cycle_day_us) as i64;
        if days > 0 {
            t += days * US_PER_DAY;
            left = (left - days as f64 * self.cycle_day_us).max(0.0);
        }
        loop {
            let hour = t.div_euclid(US_PER_HOUR);
            let level = self.cycle_level[hour.rem_euclid(24) as usize];
            let end = (hour + 1) * US_PER_HOUR;
            // What the rest of this hour is worth in time at the mean rate.
            let room = (end - t) as f64 * level;
            if left <= room {
                return t + (left / level).round() as i64 - self.clock_us;
            }
            left -= room;
            t = end;
        }
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
        // With the daily cycle, by the weights of the invoice's own UTC hour, in which
        // each country's weight follows its local hour.
        let country = if let Some(cum) = self.cycle_cum.get(hour_of_day(event_ms, 0)) {
            pick_u64(cum, rng) as u16
        } else if rng.gen_range(0..10_000u32) < UK_PER_10K {
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

    /// Off (the default), the daily cycle changes nothing: an explicit `false` gives the
    /// stream `stream_is_pinned` pins; on, another one.
    #[test]
    fn daily_cycle_off_is_the_pinned_stream() {
        let mixed = |daily_cycle| GenConfig {
            bad_fraction: 0.1,
            late_fraction: 0.05,
            broker_timestamps: true,
            daily_cycle,
            ..cfg(3_000, 2020)
        };
        let fnv = |c: GenConfig| {
            let mut hash = 0xcbf2_9ce4_8422_2325u64;
            for r in Generator::new(c) {
                let ts = r.timestamp_ms.unwrap().to_le_bytes();
                for &b in r.value.iter().chain(&ts) {
                    hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
            }
            hash
        };
        assert!(!GenConfig::default().daily_cycle);
        assert_eq!(fnv(mixed(false)), 0xb0c0_f787_a814_159d);
        assert_ne!(fnv(mixed(true)), 0xb0c0_f787_a814_159d);
    }

    #[test]
    fn daily_cycle_same_seed_same_bytes() {
        // 20,000 at 30 a minute: about 11 hours from 10:00, through the evening and night.
        let mk = |seed| GenConfig {
            late_fraction: 0.05,
            bad_fraction: 0.1,
            broker_timestamps: true,
            rate_per_minute: 30.0,
            daily_cycle: true,
            ..cfg(20_000, seed)
        };
        let a: Vec<_> = Generator::new(mk(7)).collect();
        let b: Vec<_> = Generator::new(mk(7)).collect();
        let c: Vec<_> = Generator::new(mk(8)).collect();
        assert_eq!(a, b);
        assert!(a.iter().zip(&c).filter(|(x, y)| x == y).count() < 10);
    }

    /// The tables: the day keeps its mean, every hour has invoices, and over a day every
    /// country keeps its share of the stream without the cycle.
    #[test]
    fn daily_cycle_tables_keep_the_mean() {
        assert_eq!(DIURNAL.iter().sum::<u32>(), 24_000);
        assert!(DIURNAL.iter().all(|&d| d > 0));
        let (cums, levels) = cycle_tables();
        assert_eq!(cums.len(), 24);
        let mean = levels.iter().sum::<f64>() / 24.0;
        assert!((mean - 1.0).abs() < 1e-12, "mean level {mean}");
        assert!(levels.iter().all(|&l| l > 0.1), "{levels:?}");
        let weight = |h: usize, c: usize| cums[h][c] - if c == 0 { 0 } else { cums[h][c - 1] };
        let others: u64 = OTHER_COUNTRIES.iter().map(|c| u64::from(c.1)).sum();
        let uk_day: u64 = (0..24).map(|h| weight(h, 0)).sum();
        assert_eq!(uk_day, u64::from(UK_PER_10K) * others * 24_000);
        assert_eq!(cums[0].len(), 1 + OTHER_COUNTRIES.len());
        for (i, c) in OTHER_COUNTRIES.iter().enumerate() {
            let day: u64 = (0..24).map(|h| weight(h, i + 1)).sum();
            assert_eq!(
                day,
                u64::from(10_000 - UK_PER_10K) * u64::from(c.1) * 24_000,
                "{}",
                c.0
            );
        }
    }

    /// With the daily cycle, a country's invoices in its local night (02:00 to 06:00) are
    /// far fewer than in its late morning (10:00 to 14:00), each by its own clock; and two
    /// days at the mean rate still take two days.
    #[test]
    fn daily_cycle_follows_each_countrys_local_time() {
        let start = parse_start("2020-09-18 00:00:00").unwrap();
        let rate = 40.0;
        let n = 2 * 1_440 * 40;
        let gen = Generator::new(GenConfig {
            start_ms: start,
            rate_per_minute: rate,
            daily_cycle: true,
            ..cfg(n, 3)
        });
        let offset = |country: &str| {
            OTHER_COUNTRIES
                .iter()
                .find(|c| c.0 == country)
                .map_or(UK_UTC_OFFSET_H, |c| c.2)
        };
        // Invoices by local hour: the UK (UTC+0), Germany (+1), and Australia (+10), Japan
        // (+9) and Singapore (+8) together, each counted at its own local hour.
        let mut by_hour = [[0u32; 24]; 3];
        let mut last = start;
        for r in gen {
            let v: Value = serde_json::from_slice(&r.value).unwrap();
            let country = v["country"].as_str().unwrap().trim().to_string();
            let t = parse_timestamp(v["timestamp"].as_str().unwrap().as_bytes()).unwrap();
            last = last.max(t);
            let group = match country.as_str() {
                UK => 0,
                "Germany" => 1,
                "Australia" | "Japan" | "Singapore" => 2,
                _ => continue,
            };
            by_hour[group][hour_of_day(t, offset(&country))] += 1;
        }
        for (group, hours) in by_hour.iter().enumerate() {
            let night: u32 = hours[2..6].iter().sum();
            let day: u32 = hours[10..14].iter().sum();
            assert!(
                night * 3 < day,
                "group {group}: {night} at night, {day} in the late morning: {hours:?}"
            );
        }
        let days = (last - start) as f64 / 86_400_000.0;
        assert!(
            (1.95..2.05).contains(&days),
            "{n} invoices took {days} days"
        );
    }

    /// Far apart invoices cross whole days at once, and the clock never goes back.
    #[test]
    fn daily_cycle_at_a_very_low_rate() {
        let mut g = Generator::new(GenConfig {
            rate_per_minute: 0.001,
            daily_cycle: true,
            ..cfg(200, 5)
        });
        let mut prev = g.clock_us;
        while g.next().is_some() {
            assert!(g.clock_us >= prev);
            prev = g.clock_us;
        }
        // 200 at one per 1,000 minutes: about 200,000 minutes.
        let minutes = (prev - DEFAULT_START_MS * 1_000) as f64 / 60e6;
        assert!((150_000.0..250_000.0).contains(&minutes), "{minutes} min");
    }

    #[test]
    fn daily_cycle_keeps_the_labels() {
        let grace = 60_000;
        let cfg = GenConfig {
            bad_fraction: 0.2,
            late_fraction: 0.1,
            broker_timestamps: true,
            rate_per_minute: 5.0,
            daily_cycle: true,
            ..cfg(12_000, 22)
        };
        let mut max = None;
        for (i, (rec, expected)) in all(cfg).into_iter().enumerate() {
            assert_eq!(
                judge(&rec, &mut max, grace),
                label(expected),
                "record {i}: {}",
                String::from_utf8_lossy(&rec.value)
            );
        }
    }
}
