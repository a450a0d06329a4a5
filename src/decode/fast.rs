//! The fast path of the invoice decoder: one pass over the bytes of a record written in
//! the plain shape producers use, folding the items into the invoice's totals as it goes.
//!
//! It recognises a strict subset of valid invoices and nothing else: the five fields of
//! SPEC §1 once each, items with their four fields once each, other fields of plain JSON
//! passed over, strings without escapes or control characters, `invoice_no` as a plain
//! JSON integer or a string of digits, `quantity` as a plain JSON integer, `unit_price` as
//! a plain decimal (`D{1,10}[.D+]`, beyond 4 places only zeros), JSON white space anywhere
//! JSON allows it. For any other record (an escape, an exponent, a sign, nesting deeper
//! than 16, any error) it answers `None` and the serde_json path of
//! [`super::invoice`] decides. So every verdict other than a plain valid invoice, and every
//! reason and message of SPEC §7, still has one home; this path only has to agree with it
//! on the invoices it accepts, which the tests below and the fuzz target check.
//!
//! Why not a SIMD JSON crate in front of the visitor: a profile of the serde path puts its
//! time in walking a generic map (visitor calls, key decoding, raw values for the exact
//! number text) more than in finding quotes, and a parser that knows the invoice's shape
//! does none of that while keeping every number as its text, which exact money needs.

use super::invoice::{Invoice, Kind, MAX_QUANTITY};
use crate::event_time::parse_timestamp;
use crate::money::Money;
use std::borrow::Cow;

/// The invoice in `text` if it is in the fast path's subset, else `None` (which says
/// nothing about the record: the general path decides).
pub(super) fn scan(text: &str) -> Option<Invoice<'_>> {
    let mut c = Cursor {
        text,
        b: text.as_bytes(),
        i: 0,
    };
    c.eat(b'{')?;
    let mut invoice_no = None;
    let mut country = None;
    let mut timestamp = None;
    let mut kind = None;
    let mut items = None;
    let mut n = 0;
    loop {
        let key = c.invoice_key(n)?;
        n += 1;
        c.eat(b':')?;
        match key {
            Field::InvoiceNo => once(&mut invoice_no, c.invoice_no()?)?,
            Field::Country => {
                let t = c.string()?.trim();
                if t.is_empty() {
                    return None;
                }
                once(&mut country, t)?;
            }
            Field::Timestamp => {
                let t = c.string()?;
                once(&mut timestamp, (t, parse_timestamp(t).ok()?))?;
            }
            Field::Type => {
                let k = match c.string()? {
                    "ORDER" => Kind::Order,
                    "RETURN" => Kind::Return,
                    _ => return None,
                };
                once(&mut kind, k)?;
            }
            Field::Items => once(&mut items, c.items()?)?,
            // Other fields are ignored whatever they hold, as long as it is JSON.
            _ => c.skip_value(0)?,
        }
        if !c.next_member(b'}')? {
            break;
        }
    }
    c.ws();
    if c.i != c.b.len() {
        return None;
    }
    let (count, quantity, cost) = items?;
    let kind = kind?;
    let (timestamp, event_time) = timestamp?;
    Some(Invoice {
        invoice_no: invoice_no?,
        country: Cow::Borrowed(country?),
        timestamp: Cow::Borrowed(timestamp),
        event_time,
        kind,
        item_count: count,
        total_items: quantity,
        total_cost: match kind {
            Kind::Order => cost,
            Kind::Return => Money(-cost.0),
        },
    })
}

/// The keys the fast path knows; any other is `Other`, an ignored field.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    InvoiceNo,
    Country,
    Timestamp,
    Type,
    Items,
    Sku,
    Title,
    UnitPrice,
    Quantity,
    Other,
}

impl Field {
    /// An invoice's keys and an item's are told apart by where they are read, so a
    /// `SKU` among the invoice's fields is an ignored field there, as for serde_json.
    fn of(key: &str) -> Field {
        match key {
            "invoice_no" => Field::InvoiceNo,
            "country" => Field::Country,
            "timestamp" => Field::Timestamp,
            "type" => Field::Type,
            "items" => Field::Items,
            "SKU" => Field::Sku,
            "title" => Field::Title,
            "unit_price" => Field::UnitPrice,
            "quantity" => Field::Quantity,
            _ => Field::Other,
        }
    }
}

/// Sets a field read once; `None` for a field given twice (the general path names it).
#[inline]
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

/// Nesting kept by the skipping of an ignored value; deeper is left to serde_json, whose
/// own limit is 128.
const MAX_SKIP_DEPTH: u32 = 16;

/// Digits (already checked) to a u64, `None` above u64::MAX.
#[inline]
fn to_u64(d: &[u8]) -> Option<u64> {
    d.iter().try_fold(0u64, |v, &c| {
        v.checked_mul(10)?.checked_add(u64::from(c - b'0'))
    })
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// A mask whose lowest set bit is the high bit of the first byte of `x` (little endian)
/// that ends or spoils a plain string: `"`, `\\` or a control character. Bits above it
/// may be set falsely (borrows), so only the lowest is read.
#[inline]
fn special(x: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    zero(x ^ (ONES * u64::from(b'"')))
        | zero(x ^ (ONES * u64::from(b'\\')))
        | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS)
}

struct Cursor<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    /// JSON's white space: space, tab, line feed, carriage return; nothing else.
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    fn eat(&mut self, want: u8) -> Option<()> {
        self.ws();
        (self.b.get(self.i) == Some(&want)).then(|| self.i += 1)
    }

    /// After a member or element: `true` on a comma, `false` on `close`, else `None`.
    #[inline]
    fn next_member(&mut self, close: u8) -> Option<bool> {
        self.ws();
        let c = *self.b.get(self.i)?;
        self.i += 1;
        match c {
            b',' => Some(true),
            _ if c == close => Some(false),
            _ => None,
        }
    }

    /// A string with no escape and no control character, whose text is then its value.
    #[inline]
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let (b, start) = (self.b, self.i);
        let mut i = start;
        // Eight bytes at a time: keys and values here are short, too short for a call
        // to memchr to pay off, and a branch per byte costs more than the record's parse.
        while let Some(chunk) = b.get(i..i + 8) {
            let m = special(u64::from_le_bytes(chunk.try_into().ok()?));
            if m != 0 {
                i += (m.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        while !matches!(*b.get(i)?, b'"' | b'\\' | 0..=0x1f) {
            i += 1;
        }
        if b[i] != b'"' {
            return None;
        }
        self.i = i + 1;
        self.text.get(start..i)
    }

    /// Whether the bytes at the cursor (after white space) are `quoted`, consumed if so.
    /// Of a length known at compile time, so that the comparison is a few loads.
    #[inline(always)]
    fn expect<const N: usize>(&mut self, quoted: &[u8; N]) -> bool {
        self.ws();
        let hit = self.b.get(self.i..self.i + N) == Some(quoted.as_slice());
        if hit {
            self.i += N;
        }
        hit
    }

    /// The next key of an invoice, tried first as the one producers write at position
    /// `n`, which spares the scan of most keys.
    #[inline]
    fn invoice_key(&mut self, n: usize) -> Option<Field> {
        let hit = match n {
            0 => self.expect(b"\"invoice_no\"").then_some(Field::InvoiceNo),
            1 => self.expect(b"\"country\"").then_some(Field::Country),
            2 => self.expect(b"\"timestamp\"").then_some(Field::Timestamp),
            3 => self.expect(b"\"type\"").then_some(Field::Type),
            4 => self.expect(b"\"items\"").then_some(Field::Items),
            _ => None,
        };
        self.or_scanned(hit)
    }

    /// The same for the keys of an item.
    #[inline]
    fn item_key(&mut self, n: usize) -> Option<Field> {
        let hit = match n {
            0 => self.expect(b"\"SKU\"").then_some(Field::Sku),
            1 => self.expect(b"\"title\"").then_some(Field::Title),
            2 => self.expect(b"\"unit_price\"").then_some(Field::UnitPrice),
            3 => self.expect(b"\"quantity\"").then_some(Field::Quantity),
            _ => None,
        };
        self.or_scanned(hit)
    }

    /// The key found by a guess, else the key read in full.
    #[inline]
    fn or_scanned(&mut self, hit: Option<Field>) -> Option<Field> {
        match hit {
            Some(f) => Some(f),
            None => Some(Field::of(self.string()?)),
        }
    }

    /// The text of a JSON number made only of digits, with an optional fraction when
    /// `fraction`; `None` for a sign, an exponent, a leading zero (not JSON) or a number
    /// not followed by a delimiter.
    #[inline]
    fn number(&mut self, fraction: bool) -> Option<&'a [u8]> {
        self.ws();
        let start = self.i;
        let int = self.digits();
        if int == 0 || (int > 1 && self.b[start] == b'0') {
            return None;
        }
        if fraction && self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        self.delimited().then(|| &self.b[start..self.i])
    }

    #[inline]
    fn digits(&mut self) -> usize {
        let s = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        self.i - s
    }

    /// Whether a value just read ends where JSON lets it (not `1a`, not `1.`).
    #[inline]
    fn delimited(&self) -> bool {
        matches!(
            self.b.get(self.i),
            Some(b' ' | b'\t' | b'\n' | b'\r' | b',' | b'}' | b']')
        )
    }

    /// A plain JSON integer of at most `max_digits` digits that fits a u64.
    #[inline]
    fn integer(&mut self, max_digits: usize) -> Option<u64> {
        let d = self.number(false)?;
        if d.len() > max_digits {
            return None;
        }
        to_u64(d)
    }

    /// `invoice_no`: a plain integer, or a string of digits (leading zeros allowed)
    /// without escapes; both up to u64::MAX.
    #[inline]
    fn invoice_no(&mut self) -> Option<u64> {
        self.ws();
        if self.b.get(self.i) != Some(&b'"') {
            return self.integer(20);
        }
        let d = self.string()?.as_bytes();
        let first = d.iter().position(|&c| c != b'0').unwrap_or(d.len());
        if d.is_empty() || d.len() - first > 20 || !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        to_u64(&d[first..])
    }

    /// Any JSON value, checked and passed over: strings without escapes, numbers of
    /// JSON's grammar, literals, and arrays and objects of those up to a small depth.
    fn skip_value(&mut self, depth: u32) -> Option<()> {
        self.ws();
        match *self.b.get(self.i)? {
            b'"' => self.string().map(drop),
            open @ (b'{' | b'[') if depth < MAX_SKIP_DEPTH => {
                let close = if open == b'{' { b'}' } else { b']' };
                self.i += 1;
                self.ws();
                if self.b.get(self.i) == Some(&close) {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    if open == b'{' {
                        self.string()?;
                        self.eat(b':')?;
                    }
                    self.skip_value(depth + 1)?;
                    if !self.next_member(close)? {
                        return Some(());
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => {
                if self.b[self.i] == b'-' {
                    self.i += 1;
                }
                let start = self.i;
                let int = self.digits();
                if int == 0 || (int > 1 && self.b[start] == b'0') {
                    return None;
                }
                if self.b.get(self.i) == Some(&b'.') {
                    self.i += 1;
                    if self.digits() == 0 {
                        return None;
                    }
                }
                if let Some(b'e' | b'E') = self.b.get(self.i) {
                    self.i += 1;
                    if let Some(b'+' | b'-') = self.b.get(self.i) {
                        self.i += 1;
                    }
                    if self.digits() == 0 {
                        return None;
                    }
                }
                self.delimited().then_some(())
            }
            _ => None,
        }
    }

    #[inline]
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if !self.b[self.i..].starts_with(word) {
            return None;
        }
        self.i += word.len();
        self.delimited().then_some(())
    }

    /// The items array folded into (count, Σ quantity, Σ unit_price × quantity), the
    /// same sums as the general path's.
    fn items(&mut self) -> Option<(u64, u64, Money)> {
        self.eat(b'[')?;
        let (mut count, mut quantity, mut cost) = (0u64, 0u64, Money::ZERO);
        self.ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            return Some((count, quantity, cost));
        }
        loop {
            let (qty, price) = self.item()?;
            count += 1;
            quantity += qty;
            cost.0 += price.0 * qty as i128;
            if !self.next_member(b']')? {
                return Some((count, quantity, cost));
            }
        }
    }

    fn item(&mut self) -> Option<(u64, Money)> {
        self.eat(b'{')?;
        let (mut sku, mut title, mut price, mut qty) = (None, None, None, None);
        let mut n = 0;
        loop {
            let key = self.item_key(n)?;
            n += 1;
            self.eat(b':')?;
            match key {
                Field::Sku => {
                    self.string()?;
                    once(&mut sku, ())?;
                }
                Field::Title => {
                    self.string()?;
                    once(&mut title, ())?;
                }
                Field::UnitPrice => {
                    let p = Money::parse_plain_price(self.number(true)?)?;
                    once(&mut price, p)?;
                }
                Field::Quantity => {
                    let q = self.integer(10)?;
                    if q > MAX_QUANTITY {
                        return None;
                    }
                    once(&mut qty, q)?;
                }
                _ => self.skip_value(0)?,
            }
            if !self.next_member(b'}')? {
                break;
            }
        }
        sku?;
        title?;
        Some((qty?, price?))
    }
}

#[cfg(test)]
mod tests {
    use super::super::invoice::{parse_invoice, parse_invoice_general, Limits};
    use super::*;
    use crate::generate::{GenConfig, Generator};
    use proptest::prelude::*;

    const GOOD: &str = r#"{"invoice_no": 154132541653705, "country": "United Kingdom", "timestamp": "2020-09-18 10:55:23", "type": "ORDER", "items": [{"SKU": "21485", "title": "RETROSPOT HEART HOT WATER BOTTLE", "unit_price": 4.95, "quantity": 6}, {"SKU": "23499", "title": "SET 12 VINTAGE DOILY CHALK", "unit_price": 0.42, "quantity": 2}]}"#;

    /// The decoder with its fast path gives the same verdict as without it, message
    /// included; `true` when the fast path took the record.
    fn agrees(text: &str) -> bool {
        let limits = Limits::default();
        assert_eq!(
            parse_invoice(text.as_bytes(), &limits),
            parse_invoice_general(text.as_bytes(), &limits),
            "{text:?}"
        );
        scan(text).is_some()
    }

    #[test]
    fn the_plain_shape_is_taken_and_agrees() {
        assert!(agrees(GOOD));
        assert!(agrees(&GOOD.replace("ORDER", "RETURN")));
        assert!(agrees(&GOOD.replace(", ", ",\n\t\r ")));
        assert!(agrees(&format!(" \n{GOOD}\t ")));
        assert!(agrees(
            &GOOD.replace("United Kingdom", "  Côte d'Ivoire\u{a0}")
        ));
        assert!(agrees(
            r#"{"items":[],"type":"RETURN","timestamp":"2020-09-18T10:55:23.5Z","country":"X","invoice_no":0}"#
        ));
        assert!(agrees(
            &GOOD.replace("154132541653705", "18446744073709551615")
        ));
        assert!(agrees(&GOOD.replace(
            "4.95, \"quantity\": 6",
            "1000000000, \"quantity\": 1000000000"
        )));
        assert!(agrees(
            &GOOD
                .replace("4.95", "0")
                .replace("\"quantity\": 6", "\"quantity\": 0")
        ));
        assert!(agrees(&GOOD.replace("4.95", "4.9500000")));
        assert!(agrees(
            &GOOD.replace("154132541653705", "\"000154132541653705\"")
        ));
        assert!(agrees(
            &GOOD.replace("154132541653705", "\"018446744073709551615\"")
        ));
        assert!(agrees(&GOOD.replace(
            "{\"invoice_no\"",
            "{\"x\": {\"a\": [1, -0.5e+3, 2E-2, true, false, null, \"s\", {}, []]}, \"invoice_no\"",
        )));
        assert!(agrees(
            &GOOD.replace("\"quantity\": 2}", "\"quantity\": 2, \"x\": [{}]}")
        ));
        // A key of the other level is an ignored field, whatever it holds.
        assert!(agrees(
            &GOOD.replace("{\"invoice_no\"", "{\"SKU\": 5, \"invoice_no\"")
        ));
        assert!(agrees(&GOOD.replace(
            "\"quantity\": 2}",
            "\"quantity\": 2, \"country\": []}"
        )));
        // Fields in another order than producers write them.
        assert!(agrees(&GOOD.replace("\"SKU\": \"23499\", ", "").replace(
            "\"quantity\": 2}",
            "\"quantity\": 2, \"SKU\": \"1\"}"
        )));
    }

    /// Each of these is left to the general path, which knows the verdict and its reason.
    #[test]
    fn anything_else_is_left_to_the_general_path() {
        for (from, to) in [
            ("154132541653705", "18446744073709551616"),
            ("154132541653705", "01"),
            ("154132541653705", "\"\""),
            ("154132541653705", "\"1 \""),
            ("154132541653705", "\"\\u0031\""),
            ("154132541653705", "\"018446744073709551616\""),
            ("{\"invoice_no\"", "{\"x\": \"\\n\", \"invoice_no\""),
            ("{\"invoice_no\"", "{\"x\": [1,], \"invoice_no\""),
            ("{\"invoice_no\"", "{\"x\": 1., \"invoice_no\""),
            ("{\"invoice_no\"", "{\"x\": 01, \"invoice_no\""),
            ("{\"invoice_no\"", "{\"x\": 1e, \"invoice_no\""),
            ("{\"invoice_no\"", "{\"x\": nul, \"invoice_no\""),
            ("{\"invoice_no\"", "{\"x\": truex, \"invoice_no\""),
            ("{\"invoice_no\"", "{\"x\": {1: 2}, \"invoice_no\""),
            (
                "{\"invoice_no\"",
                "{\"x\": [[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]], \"invoice_no\"",
            ),
            ("{\"invoice_no\"", "{\"invoice_no\": 1, \"invoice_no\""),
            ("154132541653705", "-1"),
            ("154132541653705", "1.0"),
            ("154132541653705", "1e3"),
            ("United Kingdom", "United\\u0020Kingdom"),
            ("United Kingdom", "  "),
            ("United Kingdom", "Tab\there"),
            ("2020-09-18 10:55:23", "2020-09-18 10:55"),
            ("ORDER", "order"),
            ("4.95", "4.950001"),
            ("4.95", "04.95"),
            ("4.95", "4."),
            ("4.95", "4.95e0"),
            ("4.95", "-4.95"),
            ("4.95", "1000000000.0001"),
            ("\"quantity\": 6", "\"quantity\": 1000000001"),
            ("\"quantity\": 6", "\"quantity\": 6.0"),
            ("\"quantity\": 6", "\"quantity\": 06"),
            (
                "\"type\": \"ORDER\"",
                "\"type\": \"ORDER\", \"type\": \"ORDER\"",
            ),
            ("\"type\": \"ORDER\", ", ""),
            ("\"SKU\": \"23499\", ", ""),
            ("\"SKU\": \"23499\"", "\"SKU\": 23499"),
            ("\"title\": \"SET", "\"title\": \"SET\\\""),
            ("]}", "],}"),
            ("]}", "]}}"),
            ("]}", "]} x"),
            ("]}", "]"),
        ] {
            let text = GOOD.replacen(from, to, 1);
            assert_ne!(text, GOOD, "{from} not in the example");
            assert!(scan(&text).is_none(), "taken: {text}");
        }
        assert!(scan(&format!("\u{feff}{GOOD}")).is_none());
        assert!(scan(&format!("{GOOD}{GOOD}")).is_none());
        assert!(scan("").is_none());
    }

    /// The generator's records, bad ones included: every valid one takes the fast path
    /// (so the benchmarks measure it) and agrees with the general path.
    #[test]
    fn generated_records_agree() {
        let (mut fast, mut valid) = (0, 0);
        for r in Generator::new(GenConfig {
            count: 20_000,
            seed: 3,
            bad_fraction: 0.2,
            late_fraction: 0.05,
            ..GenConfig::default()
        }) {
            let Ok(text) = std::str::from_utf8(&r.value) else {
                continue;
            };
            let taken = agrees(text);
            let ok = parse_invoice(text.as_bytes(), &Limits::default()).is_ok();
            // Only too many items (a check after either path) can refuse what it took.
            assert!(!taken || ok || text.matches("\"SKU\"").count() > 10_000);
            // Escapes are the general path's; every other valid record is the fast one's.
            if ok && !text.contains('\\') {
                assert!(taken, "{text}");
                fast += 1;
            }
            valid += ok as u32;
        }
        eprintln!("fast path: {fast} of {valid} valid generated records");
        assert!(
            fast > 15_000 && fast * 100 > valid * 99,
            "{fast} of {valid}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        /// Edits of a valid invoice from JSON's own alphabet: whatever the fast path
        /// takes, the general path takes the same.
        #[test]
        fn edits_never_make_the_paths_disagree(
            edits in proptest::collection::vec(
                (0usize..400, 0usize..4, proptest::sample::select(
                    &[
                        "{", "}", "[", "]", "\"", ",", ":", " ", "\t", "\n", "0", "1", "9",
                        ".", "e", "-", "+", "\\", "\\u0041", "\\ud800", "\u{1}", "é", "a",
                        "ORDER", "RETURN", "\"x\":1,", "\"SKU\":\"1\",", "00", "1e2",
                    ][..],
                )),
                1..4,
            ),
        ) {
            let mut text = GOOD.to_owned();
            for (at, cut, with) in edits {
                let at = at % (text.len() + 1);
                let end = (at + cut).min(text.len());
                if text.is_char_boundary(at) && text.is_char_boundary(end) {
                    text.replace_range(at..end, with);
                }
            }
            agrees(&text);
        }
    }
}
