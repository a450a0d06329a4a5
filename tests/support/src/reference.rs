//! Independent, deliberately naive reference computation of retail-kpi's output.
//!
//! Written from `SPEC.md` (§1–§5, §7) alone; it shares no code with the engine under
//! `src/`. Dependencies: std, serde_json and chrono only. Simplicity over speed:
//! every record is held in memory, every window lives in a `BTreeMap`, money is an
//! `i128` count of 1/10_000 units, event time is an `i128` count of nanoseconds.
//!
//! Pipeline per record, in the order of SPEC §7 (the first failing check decides):
//! 1. record size          -> `too_large`
//! 2. UTF-8                -> `invalid_utf8`
//! 3. JSON                 -> `invalid_json` (syntax via serde_json, plus lone surrogate
//!    escapes in the strings the invoice uses, see [`used_strings_ok`])
//! 4. invoice fields       -> `invalid_invoice`
//! 5. number of items      -> `too_large`
//! 6. future guard         -> `future_timestamp`
//! 7. lateness (per part.) -> `late`
//!
//! Choices where the SPEC is silent (documented so the tests can be read):
//! - Event time keeps the full nanosecond precision of the timestamp; the future guard
//!   and the lateness rule compare exactly (1 µs over the skew is "more than").
//! - Duplicate *unknown* keys are ignored; duplicate known keys (invoice or item level)
//!   are `invalid_invoice`. Keys are compared after unescaping (`"countr\u0079"` is
//!   `country`). A key that holds a lone surrogate matches no field, so it is unknown.
//! - "Strings the invoice uses" = string values under a known key of the invoice object,
//!   and string values under a known key of an object element of an `items` array.
//!   A lone surrogate anywhere else (unknown fields, keys, a top-level string) is valid
//!   JSON and ignored.
//! - JSON offset zones must have hour 00..=23 and minute 00..=59.
//! - `invoice_no` as a number and `quantity` must be written as plain digits (no sign,
//!   no fraction, no exponent): `-0`, `3.0`, `1e3` are not JSON integers here.
//! - `unit_price` is judged by its exact decimal value from the JSON text (so `-0`,
//!   `0e5`, `1.5e2`, `1.10000` are fine; `1e400` and `0.30000000000000004` are
//!   out of range -> `invalid_invoice`, not `invalid_json`).
//! - The end of the last window of year 9999 prints as `10000-01-01T00:00:00Z`.
//! - Bounded run: `window_closed` can never happen (see SPEC §4), so it is never produced.
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike};

#[derive(Clone, Debug)]
pub struct RefRecord {
    pub partition: u32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub value: Vec<u8>,
}

pub struct RefConfig {
    pub grace_ms: i64,
    pub max_future_skew_ms: i64,
    pub max_record_bytes: usize,
    pub max_items: usize,
    /// Most distinct countries per window and partition (SPEC §7).
    pub max_countries: usize,
}

impl Default for RefConfig {
    fn default() -> Self {
        RefConfig {
            grace_ms: 60_000,
            max_future_skew_ms: 3_600_000,
            max_record_bytes: 1 << 20,
            max_items: 10_000,
            max_countries: 1000,
        }
    }
}

#[derive(Debug, Default)]
pub struct RefOutput {
    /// relative path ("time_kpi/2020-09-18T10-50.json", "country_kpi/...") -> exact file bytes
    pub files: BTreeMap<String, Vec<u8>>,
    /// (partition, offset) -> reason code ("late", "invalid_json", ...)
    pub rejected: BTreeMap<(u32, i64), String>,
}

const NS_PER_MS: i128 = 1_000_000;
const NS_PER_SEC: i128 = 1_000_000_000;
const NS_PER_MIN: i128 = 60 * NS_PER_SEC;

/// A valid invoice, reduced to what the KPIs need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefInvoice {
    /// Event time in nanoseconds since 1970-01-01T00:00:00Z (may be negative).
    pub event_ns: i128,
    /// Trimmed country key.
    pub country: String,
    pub is_return: bool,
    /// (unit_price in 1/10_000 units, quantity)
    pub items: Vec<(i128, i128)>,
}

impl RefInvoice {
    /// Σ unit_price × quantity, negated for a RETURN, in 1/10_000 units.
    pub fn total_cost_units(&self) -> i128 {
        let mut sum: i128 = 0;
        for &(p, q) in &self.items {
            sum = sum
                .checked_add(p.checked_mul(q).expect("overflow"))
                .expect("overflow");
        }
        if self.is_return {
            -sum
        } else {
            sum
        }
    }
    /// Σ quantity (positive for returns too).
    pub fn total_items(&self) -> i128 {
        self.items.iter().map(|&(_, q)| q).sum()
    }
}

// ---------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------

/// Bounded run: all records in memory; within a partition records are processed in offset order;
/// at the end every window is closed and written.
pub fn reference(records: &[RefRecord], cfg: &RefConfig) -> RefOutput {
    // Group by partition, order by offset. Partitions are independent for lateness,
    // and window sums do not depend on order, so partition after partition is fine.
    let mut by_partition: BTreeMap<u32, Vec<&RefRecord>> = BTreeMap::new();
    for r in records {
        by_partition.entry(r.partition).or_default().push(r);
    }

    let mut out = RefOutput::default();
    let mut accepted: Vec<RefInvoice> = Vec::new();
    let grace_ns = cfg.grace_ms as i128 * NS_PER_MS;

    for (partition, mut recs) in by_partition {
        recs.sort_by_key(|r| r.offset);
        for w in recs.windows(2) {
            assert!(
                w[0].offset != w[1].offset,
                "duplicate offset {} in partition {}",
                w[0].offset,
                partition
            );
        }
        // M_p: None stands for −∞ (nothing accepted yet).
        let mut max_event: Option<i128> = None;
        // 8. the countries this partition brought into each minute.
        let mut countries: BTreeMap<i128, std::collections::BTreeSet<String>> = BTreeMap::new();
        for r in recs {
            let result = check_record(r, cfg)
                .and_then(|inv| {
                    // 7. lateness: t < M_p − G, with M_p as it was before this invoice.
                    match max_event {
                        Some(m) if inv.event_ns < m - grace_ns => Err("late"),
                        _ => Ok(inv),
                    }
                })
                .and_then(|inv| {
                    let seen = countries
                        .entry(inv.event_ns.div_euclid(NS_PER_MIN))
                        .or_default();
                    if !seen.contains(&inv.country) {
                        if seen.len() >= cfg.max_countries {
                            return Err("too_large");
                        }
                        seen.insert(inv.country.clone());
                    }
                    Ok(inv)
                });
            match result {
                Ok(inv) => {
                    max_event = Some(match max_event {
                        Some(m) if m >= inv.event_ns => m,
                        _ => inv.event_ns,
                    });
                    accepted.push(inv);
                }
                Err(reason) => {
                    out.rejected
                        .insert((partition, r.offset), reason.to_string());
                }
            }
        }
    }

    out.files = render(&accepted);
    out
}

/// Helper: read a JSON-lines file as the spec says (partition 0, offset = 0-based line number,
/// split on b'\n', the final newline starts no record, empty lines are records), timestamp None.
pub fn records_from_jsonl(bytes: &[u8]) -> Vec<RefRecord> {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // `split` yields one piece after the last '\n' (empty when the file ends with '\n',
    // and a single empty piece for an empty file): that piece is not a record.
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
        .into_iter()
        .enumerate()
        .map(|(i, line)| RefRecord {
            partition: 0,
            offset: i as i64,
            timestamp_ms: None,
            value: line.to_vec(),
        })
        .collect()
}

/// Checks 1–6 of SPEC §7 (everything but lateness, which needs the partition's history).
pub fn check_record(r: &RefRecord, cfg: &RefConfig) -> Result<RefInvoice, &'static str> {
    // 1. record size
    if r.value.len() > cfg.max_record_bytes {
        return Err("too_large");
    }
    // 2. UTF-8, the whole record
    let text = std::str::from_utf8(&r.value).map_err(|_| "invalid_utf8")?;
    // 3. JSON
    if !is_one_json_value(text) {
        return Err("invalid_json");
    }
    if !used_strings_ok(text) {
        return Err("invalid_json");
    }
    // 4. invoice fields
    let inv = parse_invoice(text).map_err(|_field| "invalid_invoice")?;
    // 5. number of items
    if inv.items.len() > cfg.max_items {
        return Err("too_large");
    }
    // 6. future guard (only with a record timestamp that is present and not negative)
    if let Some(ts) = r.timestamp_ms {
        if ts >= 0 {
            let limit = (ts as i128 + cfg.max_future_skew_ms as i128) * NS_PER_MS;
            if inv.event_ns > limit {
                return Err("future_timestamp");
            }
        }
    }
    Ok(inv)
}

// ---------------------------------------------------------------------------------------
// JSON: syntax by serde_json, then a tiny walker over the (now known valid) text
// ---------------------------------------------------------------------------------------

/// Exactly one JSON value, only JSON white space around it. serde_json rejects an empty
/// text, syntax errors, trailing data, a BOM and NaN. Deserializing a `RawValue` checks the
/// syntax only (serde_json's `ignore_value`): no number range, no surrogate pairing, no
/// depth limit.
pub fn is_one_json_value(text: &str) -> bool {
    if text.starts_with('\u{feff}') {
        return false; // serde_json rejects it anyway; explicit for the reader
    }
    serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok()
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_ws(b[i]) {
        i += 1;
    }
    i
}

/// `b[i]` is `"`; index just past the closing quote.
fn string_end(b: &[u8], i: usize) -> usize {
    assert_eq!(b[i], b'"');
    let mut j = i + 1;
    loop {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return j + 1,
            _ => j += 1,
        }
    }
}

/// Index just past the value starting at `b[i]` (no recursion: nesting is only counted).
fn value_end(b: &[u8], i: usize) -> usize {
    match b[i] {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b']' | b'}') && !is_ws(b[j]) {
                j += 1;
            }
            j
        }
    }
}

/// The single top-level value of a valid JSON text, without surrounding white space.
fn top_value(text: &str) -> &str {
    let b = text.as_bytes();
    let i = skip_ws(b, 0);
    &text[i..value_end(b, i)]
}

/// Members of an object (`obj` is the raw text of an object): (decoded key, raw value).
/// A key holding a lone surrogate decodes to `Err(())`.
fn members(obj: &str) -> Vec<(Result<String, ()>, &str)> {
    let b = obj.as_bytes();
    assert_eq!(b[0], b'{');
    let mut out = Vec::new();
    let mut i = skip_ws(b, 1);
    if b[i] == b'}' {
        return out;
    }
    loop {
        let ke = string_end(b, i);
        let key = decode_string(&obj[i..ke]);
        i = skip_ws(b, ke);
        assert_eq!(b[i], b':');
        i = skip_ws(b, i + 1);
        let ve = value_end(b, i);
        out.push((key, &obj[i..ve]));
        i = skip_ws(b, ve);
        match b[i] {
            b',' => i = skip_ws(b, i + 1),
            b'}' => return out,
            other => panic!("unexpected byte {other:#x} in object"),
        }
    }
}

/// Elements of an array (`arr` is the raw text of an array).
fn elements(arr: &str) -> Vec<&str> {
    let b = arr.as_bytes();
    assert_eq!(b[0], b'[');
    let mut out = Vec::new();
    let mut i = skip_ws(b, 1);
    if b[i] == b']' {
        return out;
    }
    loop {
        let ve = value_end(b, i);
        out.push(&arr[i..ve]);
        i = skip_ws(b, ve);
        match b[i] {
            b',' => i = skip_ws(b, i + 1),
            b']' => return out,
            other => panic!("unexpected byte {other:#x} in array"),
        }
    }
}

/// Decodes a raw JSON string token (quotes included). The syntax is known valid, so
/// serde_json can only fail on a lone surrogate escape: that is `Err(())`.
fn decode_string(raw: &str) -> Result<String, ()> {
    serde_json::from_str::<String>(raw).map_err(|_| ())
}

const INVOICE_FIELDS: [&str; 5] = ["invoice_no", "country", "timestamp", "type", "items"];
const ITEM_FIELDS: [&str; 4] = ["SKU", "title", "unit_price", "quantity"];

fn is_known(key: &Result<String, ()>, names: &[&str]) -> bool {
    matches!(key, Ok(k) if names.contains(&k.as_str()))
}

/// No lone surrogate in the strings the invoice uses (see module doc). Text is valid JSON.
pub fn used_strings_ok(text: &str) -> bool {
    let top = top_value(text);
    if !top.starts_with('{') {
        return true;
    }
    for (key, value) in members(top) {
        if !is_known(&key, &INVOICE_FIELDS) {
            continue;
        }
        if value.starts_with('"') && decode_string(value).is_err() {
            return false;
        }
        if key.as_deref() == Ok("items") && value.starts_with('[') {
            for item in elements(value) {
                if !item.starts_with('{') {
                    continue;
                }
                for (k2, v2) in members(item) {
                    if is_known(&k2, &ITEM_FIELDS)
                        && v2.starts_with('"')
                        && decode_string(v2).is_err()
                    {
                        return false;
                    }
                }
            }
        }
    }
    true
}

/// Collects the known fields of an object; each must be present exactly once.
/// Err names the offending field.
fn fields<'a>(
    obj: &'a str,
    names: &[&'static str],
) -> Result<BTreeMap<&'static str, &'a str>, String> {
    let mut found: BTreeMap<&'static str, Vec<&'a str>> = BTreeMap::new();
    for (key, value) in members(obj) {
        if let Ok(k) = &key {
            if let Some(name) = names.iter().find(|n| **n == k.as_str()) {
                found.entry(name).or_default().push(value);
            }
        }
    }
    let mut out = BTreeMap::new();
    for name in names {
        match found.get(name).map(|v| v.as_slice()) {
            None | Some([]) => return Err(format!("{name}: missing")),
            Some([one]) => {
                out.insert(*name, *one);
            }
            Some(_) => return Err(format!("{name}: repeated")),
        }
    }
    Ok(out)
}

/// A string field: Err if not a JSON string.
fn string_value(raw: &str, name: &str) -> Result<String, String> {
    if !raw.starts_with('"') {
        return Err(format!("{name}: not a string"));
    }
    decode_string(raw).map_err(|_| format!("{name}: lone surrogate"))
}

/// SPEC §1 validation. Text is valid JSON with no lone surrogate in used strings.
/// Err names the field.
pub fn parse_invoice(text: &str) -> Result<RefInvoice, String> {
    let top = top_value(text);
    if !top.starts_with('{') {
        return Err("not an object".into());
    }
    let f = fields(top, &INVOICE_FIELDS)?;

    // invoice_no
    let raw = f["invoice_no"];
    let digits: String = if raw.starts_with('"') {
        string_value(raw, "invoice_no")?
    } else {
        raw.to_string() // a number token (or something else, which fails below)
    };
    if parse_u64_digits(&digits).is_none() {
        return Err("invoice_no".into());
    }

    // country
    let country = string_value(f["country"], "country")?;
    let country = country.trim();
    if country.is_empty() {
        return Err("country: empty".into());
    }

    // timestamp
    let ts = string_value(f["timestamp"], "timestamp")?;
    let event_ns = parse_timestamp_ns(&ts).ok_or("timestamp")?;

    // type
    let is_return = match string_value(f["type"], "type")?.as_str() {
        "ORDER" => false,
        "RETURN" => true,
        _ => return Err("type".into()),
    };

    // items
    let raw = f["items"];
    if !raw.starts_with('[') {
        return Err("items: not an array".into());
    }
    let mut items = Vec::new();
    for item in elements(raw) {
        if !item.starts_with('{') {
            return Err("items: element not an object".into());
        }
        let g = fields(item, &ITEM_FIELDS)?;
        string_value(g["SKU"], "SKU")?;
        string_value(g["title"], "title")?;
        let price = price_units(g["unit_price"]).ok_or("unit_price")?;
        let qty = quantity(g["quantity"]).ok_or("quantity")?;
        items.push((price, qty));
    }

    Ok(RefInvoice {
        event_ns,
        country: country.to_string(),
        is_return,
        items,
    })
}

/// Non-empty ASCII digits with a value 0..=u64::MAX (leading zeros fine).
fn parse_u64_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok()
}

/// `quantity`: a JSON number written as plain digits (no sign, fraction, exponent),
/// 0..=1_000_000_000.
pub fn quantity(raw: &str) -> Option<i128> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) || raw.len() > 10 {
        return None;
    }
    let q: i128 = raw.parse().ok()?;
    if q <= 1_000_000_000 {
        Some(q)
    } else {
        None
    }
}

/// `unit_price`: the exact decimal value of a JSON number token, in 1/10_000 units, if it
/// is 0..=1e9 with at most 4 decimal places by value; None otherwise (also for non-numbers).
pub fn price_units(raw: &str) -> Option<i128> {
    let b = raw.as_bytes();
    let mut i = 0;
    let negative = b.first() == Some(&b'-');
    if negative {
        i += 1;
    }
    if i >= b.len() || !b[i].is_ascii_digit() {
        return None; // a string, object, array, true, false, null
    }
    // mantissa digits (integer part then fraction part), exponent of the last digit
    let mut digits: Vec<u8> = Vec::new();
    while i < b.len() && b[i].is_ascii_digit() {
        digits.push(b[i] - b'0');
        i += 1;
    }
    let mut exp: i64 = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            digits.push(b[i] - b'0');
            exp -= 1;
            i += 1;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        let mut sign = 1i64;
        if b[i] == b'+' || b[i] == b'-' {
            if b[i] == b'-' {
                sign = -1;
            }
            i += 1;
        }
        let mut e: i64 = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            // saturate: beyond 10^15 the verdict (too big / too many decimals) cannot change
            e = (e * 10 + (b[i] - b'0') as i64).min(1_000_000_000_000_000);
            i += 1;
        }
        exp += sign * e;
    }
    assert_eq!(i, b.len(), "not a number token: {raw}");

    // value = ±digits × 10^exp
    let first_nonzero = digits.iter().position(|&d| d != 0).unwrap_or(digits.len());
    digits.drain(..first_nonzero);
    if digits.is_empty() {
        return Some(0); // zero, whatever the sign or exponent
    }
    if negative {
        return None;
    }
    while digits.last() == Some(&0) {
        digits.pop();
        exp += 1;
    }
    if exp < -4 {
        return None; // more than 4 decimal places
    }
    let shift = exp + 4; // value × 10^4 = digits × 10^shift, shift >= 0
    if digits.len() as i64 + shift > 14 {
        return None; // >= 10^14 > 10^13 = 1e9 × 10^4
    }
    let mut units: i128 = 0;
    for d in digits {
        units = units * 10 + d as i128;
    }
    for _ in 0..shift {
        units *= 10;
    }
    if units <= 1_000_000_000 * 10_000 {
        Some(units)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------

/// SPEC §1 timestamp -> nanoseconds since the Unix epoch (UTC). None when invalid.
/// `YYYY-MM-DD` (`T`|`t`|` `) `HH:MM:SS` [`.` 1–9 digits] [`Z`|`z`|`±HH:MM`];
/// no zone = UTC; second 60 rejected; UTC year must be 0000..=9999.
pub fn parse_timestamp_ns(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(|c| c.is_ascii_digit()) {
            return None;
        }
        Some(
            part.iter()
                .fold(0u32, |acc, c| acc * 10 + (c - b'0') as u32),
        )
    };
    let at = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));

    let year = num(0, 4)?;
    if !at(4, b"-") {
        return None;
    }
    let month = num(5, 2)?;
    if !at(7, b"-") {
        return None;
    }
    let day = num(8, 2)?;
    if !at(10, b"Tt ") {
        return None;
    }
    let hour = num(11, 2)?;
    if !at(13, b":") {
        return None;
    }
    let minute = num(14, 2)?;
    if !at(16, b":") {
        return None;
    }
    let second = num(17, 2)?;
    let mut i = 19;

    let mut nanos: u32 = 0;
    if at(i, b".") {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 9 {
            return None;
        }
        nanos = num(start, n)? * 10u32.pow((9 - n) as u32);
    }

    let offset_secs: i64;
    if i == b.len() || (at(i, b"Zz") && i + 1 == b.len()) {
        offset_secs = 0; // no zone, or Z / z: UTC
    } else if at(i, b"+-") && i + 6 == b.len() && at(i + 3, b":") {
        let oh = num(i + 1, 2)?;
        let om = num(i + 4, 2)?;
        if oh > 23 || om > 59 {
            return None;
        }
        let mag = (oh * 3600 + om * 60) as i64;
        offset_secs = if b[i] == b'-' { -mag } else { mag };
    } else {
        return None;
    }

    if second >= 60 || hour >= 24 || minute >= 60 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    let local_secs = date.and_time(time).and_utc().timestamp();
    let utc_secs = local_secs - offset_secs;

    let min = NaiveDate::from_ymd_opt(0, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp();
    let end = NaiveDate::from_ymd_opt(10000, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp();
    if utc_secs < min || utc_secs >= end {
        return None;
    }
    Some(utc_secs as i128 * NS_PER_SEC + nanos as i128)
}

// ---------------------------------------------------------------------------------------
// Windows, numbers, rendering
// ---------------------------------------------------------------------------------------

/// Window of an event time: minutes since the epoch, floored (also before 1970).
pub fn window_minute(event_ns: i128) -> i64 {
    event_ns.div_euclid(NS_PER_MIN) as i64
}

/// `YYYY-MM-DDTHH:MM:00Z` of a minute since the epoch.
pub fn format_minute(minute: i64) -> String {
    let dt = DateTime::from_timestamp(minute * 60, 0).expect("minute in chrono range");
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:00Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute()
    )
}

/// File stem of the 10-minute bucket of a window: `YYYY-MM-DDTHH-MM` (minute floored to :x0).
pub fn bucket_name(minute: i64) -> String {
    let bucket = minute.div_euclid(10) * 10;
    let dt = DateTime::from_timestamp(bucket * 60, 0).expect("minute in chrono range");
    format!(
        "{:04}-{:02}-{:02}T{:02}-{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute()
    )
}

/// num / den rounded half-to-even to an integer (den > 0).
pub fn div_round_half_even(num: i128, den: i128) -> i128 {
    assert!(den > 0);
    let q = num.div_euclid(den);
    let r = num.rem_euclid(den); // num = q·den + r, 0 <= r < den
    match (2 * r).cmp(&den) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => {
            if q % 2 == 0 {
                q
            } else {
                q + 1
            }
        }
    }
}

/// A count of 1/10_000 units printed exactly: no trailing zeros, no exponent, never `-0`.
pub fn format_units4(units: i128) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.unsigned_abs();
    let int = abs / 10_000;
    let frac = abs % 10_000;
    if frac == 0 {
        format!("{sign}{int}")
    } else {
        let f = format!("{frac:04}");
        format!("{sign}{int}.{}", f.trim_end_matches('0'))
    }
}

#[derive(Default, Debug, Clone)]
struct Agg {
    opm: i128,
    volume_units: i128,
    orders: i128,
    returns: i128,
    total_items: i128,
}

impl Agg {
    fn add(&mut self, inv: &RefInvoice) {
        self.opm += 1;
        self.volume_units = self
            .volume_units
            .checked_add(inv.total_cost_units())
            .expect("overflow");
        if inv.is_return {
            self.returns += 1;
        } else {
            self.orders += 1;
        }
        self.total_items = self
            .total_items
            .checked_add(inv.total_items())
            .expect("overflow");
    }
    fn average_units(&self) -> i128 {
        div_round_half_even(self.volume_units, self.opm)
    }
    fn rate_units(&self) -> i128 {
        div_round_half_even(self.returns * 10_000, self.opm)
    }
}

fn window_json(minute: i64) -> String {
    format!(
        r#"{{"start":"{}","end":"{}"}}"#,
        format_minute(minute),
        format_minute(minute + 1)
    )
}

fn render(accepted: &[RefInvoice]) -> BTreeMap<String, Vec<u8>> {
    let mut time: BTreeMap<i64, Agg> = BTreeMap::new();
    let mut country: BTreeMap<(i64, String), Agg> = BTreeMap::new(); // String orders by bytes
    for inv in accepted {
        let m = window_minute(inv.event_ns);
        time.entry(m).or_default().add(inv);
        country
            .entry((m, inv.country.clone()))
            .or_default()
            .add(inv);
    }

    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (m, a) in &time {
        let line = format!(
            "{{\"window\":{},\"OPM\":{},\"total_sale_volume\":{},\"average_transaction_size\":{},\"rate_of_return\":{},\"orders\":{},\"returns\":{},\"total_items\":{}}}\n",
            window_json(*m),
            a.opm,
            format_units4(a.volume_units),
            format_units4(a.average_units()),
            format_units4(a.rate_units()),
            a.orders,
            a.returns,
            a.total_items
        );
        files
            .entry(format!("time_kpi/{}.json", bucket_name(*m)))
            .or_default()
            .extend_from_slice(line.as_bytes());
    }
    for ((m, c), a) in &country {
        let line = format!(
            "{{\"window\":{},\"country\":{},\"OPM\":{},\"total_sale_volume\":{},\"rate_of_return\":{},\"orders\":{},\"returns\":{},\"total_items\":{}}}\n",
            window_json(*m),
            serde_json::to_string(c.as_str()).unwrap(),
            a.opm,
            format_units4(a.volume_units),
            format_units4(a.rate_units()),
            a.orders,
            a.returns,
            a.total_items
        );
        files
            .entry(format!("country_kpi/{}.json", bucket_name(*m)))
            .or_default()
            .extend_from_slice(line.as_bytes());
    }
    files
}
