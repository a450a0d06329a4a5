//! The invoice model (SPEC §1), its validation and its derived columns (§2).
//!
//! Parsing is a hand-written serde visitor over a borrowed `&str` rather than a derived
//! struct: a derived struct would also accept a JSON array in place of an object, would
//! need every item collected into a `Vec`, and could not tell which field failed. The
//! visitor folds items into the invoice totals as it reads them, so the hot path
//! allocates only for a country or timestamp that contains escapes.

use crate::event_time::{parse_timestamp, EventTime};
use crate::money::Money;
use crate::record::{Reason, Rejection};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserializer as _;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

/// Limits on a record (SPEC §7); both are configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest record value accepted, bytes.
    pub max_record_bytes: usize,
    /// Most items accepted in one invoice.
    pub max_items: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record_bytes: 1 << 20,
            max_items: 10_000,
        }
    }
}

/// ORDER or RETURN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Order,
    Return,
}

/// A valid invoice with its derived columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice<'a> {
    pub invoice_no: u64,
    /// Trimmed country: the key of the country KPIs.
    pub country: Cow<'a, str>,
    /// The timestamp as written, for the per-invoice summary.
    pub timestamp: Cow<'a, str>,
    pub event_time: EventTime,
    pub kind: Kind,
    /// Number of items in the invoice.
    pub item_count: u64,
    /// Σ quantity, positive for a RETURN too.
    pub total_items: u64,
    /// Σ unit_price × quantity, negated for a RETURN.
    pub total_cost: Money,
}

impl Invoice<'_> {
    pub fn is_order(&self) -> u8 {
        (self.kind == Kind::Order) as u8
    }
    pub fn is_return(&self) -> u8 {
        (self.kind == Kind::Return) as u8
    }
}

/// Largest quantity of one item.
pub const MAX_QUANTITY: u64 = 1_000_000_000;

/// Parses and validates one record value, running the checks in the order of SPEC §7 up
/// to the number of items; time checks (future, late) belong to the engine.
pub fn parse_invoice<'a>(value: &'a [u8], limits: &Limits) -> Result<Invoice<'a>, Rejection> {
    parse(value, limits, true)
}

/// [`parse_invoice`] without its fast path: every record through serde_json. For the
/// tests and the fuzz target that compare the two paths.
#[doc(hidden)]
pub fn parse_invoice_general<'a>(
    value: &'a [u8],
    limits: &Limits,
) -> Result<Invoice<'a>, Rejection> {
    parse(value, limits, false)
}

fn parse<'a>(value: &'a [u8], limits: &Limits, fast: bool) -> Result<Invoice<'a>, Rejection> {
    if value.len() > limits.max_record_bytes {
        return Err(Rejection::new(
            Reason::TooLarge,
            format!(
                "record is {} bytes, above the limit of {} bytes (max_record_bytes)",
                value.len(),
                limits.max_record_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(value).map_err(|e| {
        Rejection::new(
            Reason::InvalidUtf8,
            format!("record is not valid UTF-8: {e}"),
        )
    })?;
    // The plain shape first; everything else, verdicts and messages, is serde_json's.
    let inv = match fast.then(|| super::fast::scan(text)).flatten() {
        Some(inv) => inv,
        None => parse_fields(text)?,
    };
    // The last check of §7's order that needs only the record: the number of items.
    if inv.item_count > limits.max_items {
        return Err(Rejection::new(
            Reason::TooLarge,
            format!(
                "invoice has {} items, above the limit of {} (max_items)",
                inv.item_count, limits.max_items
            ),
        ));
    }
    Ok(inv)
}

/// The serde_json path: every record the fast path leaves, with every reason of §7.
fn parse_fields(text: &str) -> Result<Invoice<'_>, Rejection> {
    let field = Cell::new("");
    KEY_NEEDS_SYNTAX_CHECK.with(|c| c.set(false));
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = de
        .deserialize_map(InvoiceVisitor { field: &field })
        .and_then(|inv| de.end().map(|()| inv));
    let inv = parsed.map_err(|e| super::classify::classify(text, e, field.get()))?;
    if KEY_NEEDS_SYNTAX_CHECK.with(|c| c.get()) {
        if let Err(e) = serde_json::from_str::<IgnoredAny>(text) {
            return Err(Rejection::new(
                Reason::InvalidJson,
                format!("not valid JSON: {e}"),
            ));
        }
    }
    Ok(inv)
}

struct InvoiceVisitor<'f> {
    /// The field being read, so that an error message can name it.
    field: &'f Cell<&'static str>,
}

fn dup<E: de::Error>(name: &'static str) -> E {
    E::custom(format_args!("field `{name}` is given twice"))
}

impl<'de> Visitor<'de> for InvoiceVisitor<'_> {
    type Value = Invoice<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an invoice object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Invoice<'de>, A::Error> {
        let mut invoice_no: Option<u64> = None;
        let mut country: Option<Cow<'de, str>> = None;
        let mut timestamp: Option<(Cow<'de, str>, EventTime)> = None;
        let mut kind: Option<Kind> = None;
        let mut items: Option<ItemTotals> = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match key.0.as_ref() {
                b"invoice_no" => {
                    self.field.set("invoice_no");
                    if invoice_no.is_some() {
                        return Err(dup("invoice_no"));
                    }
                    let raw: &'de RawValue = map.next_value()?;
                    invoice_no = Some(parse_invoice_no(raw.get()).map_err(de::Error::custom)?);
                }
                b"country" => {
                    self.field.set("country");
                    if country.is_some() {
                        return Err(dup("country"));
                    }
                    let Str(c) = map.next_value()?;
                    country =
                        Some(trim_cow(c).ok_or_else(|| {
                            de::Error::custom("is empty after trimming white space")
                        })?);
                }
                b"timestamp" => {
                    self.field.set("timestamp");
                    if timestamp.is_some() {
                        return Err(dup("timestamp"));
                    }
                    let Str(t) = map.next_value()?;
                    let et = parse_timestamp(&t)
                        .map_err(|e| de::Error::custom(format_args!("{t:?} {e}")))?;
                    timestamp = Some((t, et));
                }
                b"type" => {
                    self.field.set("type");
                    if kind.is_some() {
                        return Err(dup("type"));
                    }
                    let Str(t) = map.next_value()?;
                    kind = Some(match t.as_ref() {
                        "ORDER" => Kind::Order,
                        "RETURN" => Kind::Return,
                        other => {
                            return Err(de::Error::custom(format_args!(
                                "{other:?} is neither \"ORDER\" nor \"RETURN\""
                            )))
                        }
                    });
                }
                b"items" => {
                    self.field.set("items");
                    if items.is_some() {
                        return Err(dup("items"));
                    }
                    items = Some(map.next_value_seed(ItemsSeed { field: self.field })?);
                    self.field.set("items");
                }
                _ => {
                    self.field.set("");
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        self.field.set("");
        let missing = |name| de::Error::custom(format_args!("field `{name}` is missing"));
        let invoice_no = invoice_no.ok_or_else(|| missing("invoice_no"))?;
        let country = country.ok_or_else(|| missing("country"))?;
        let (timestamp, event_time) = timestamp.ok_or_else(|| missing("timestamp"))?;
        let kind = kind.ok_or_else(|| missing("type"))?;
        let items = items.ok_or_else(|| missing("items"))?;
        let total_cost = match kind {
            Kind::Order => items.cost,
            Kind::Return => Money(-items.cost.0),
        };
        Ok(Invoice {
            invoice_no,
            country,
            timestamp,
            event_time,
            kind,
            item_count: items.count,
            total_items: items.quantity,
            total_cost,
        })
    }
}

fn trim_cow(c: Cow<'_, str>) -> Option<Cow<'_, str>> {
    let t = c.trim();
    if t.is_empty() {
        return None;
    }
    Some(match c {
        Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
        Cow::Owned(ref o) if o.len() == t.len() => c,
        Cow::Owned(o) => Cow::Owned(o.trim().to_owned()),
    })
}

/// A JSON integer 0..=u64::MAX, or a string of ASCII digits with that value.
fn parse_invoice_no(raw: &str) -> Result<u64, String> {
    let digits: Cow<str> = if raw.starts_with('"') {
        if raw.contains('\\') {
            // Escapes like "\u0031" still spell digits; decode them properly.
            Cow::Owned(serde_json::from_str::<String>(raw).map_err(|e| e.to_string())?)
        } else {
            Cow::Borrowed(&raw[1..raw.len() - 1])
        }
    } else {
        Cow::Borrowed(raw)
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{raw} is not an integer 0..=18446744073709551615 or a string of digits"
        ));
    }
    let trimmed = digits.trim_start_matches('0');
    if trimmed.len() > 20 {
        return Err(format!("{raw} is above 18446744073709551615"));
    }
    if trimmed.is_empty() {
        return Ok(0);
    }
    trimmed
        .parse::<u64>()
        .map_err(|_| format!("{raw} is above 18446744073709551615"))
}

/// A JSON integer 0..=10^9 written as plain digits (`3.0`, `-0`, `1e2` are not).
fn parse_quantity(raw: &str) -> Result<u64, String> {
    let b = raw.as_bytes();
    if b.is_empty() || b.len() > 10 || !b.iter().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "{raw} is not an integer 0..={MAX_QUANTITY} in plain digits"
        ));
    }
    let mut v = 0u64;
    for &c in b {
        v = v * 10 + (c - b'0') as u64;
    }
    if v > MAX_QUANTITY {
        return Err(format!("{raw} is above {MAX_QUANTITY}"));
    }
    Ok(v)
}

#[derive(Default)]
struct ItemTotals {
    count: u64,
    quantity: u64,
    cost: Money,
}

struct ItemsSeed<'f> {
    field: &'f Cell<&'static str>,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = ItemTotals;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<ItemTotals, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_> {
    type Value = ItemTotals;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ItemTotals, A::Error> {
        let mut t = ItemTotals::default();
        while let Some((qty, price)) = seq.next_element_seed(ItemSeed { field: self.field })? {
            t.count += 1;
            t.quantity += qty;
            t.cost.0 += price.0 * qty as i128;
        }
        Ok(t)
    }
}

struct ItemSeed<'f> {
    field: &'f Cell<&'static str>,
}

impl<'de> DeserializeSeed<'de> for ItemSeed<'_> {
    type Value = (u64, Money);
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(u64, Money), D::Error> {
        d.deserialize_map(self)
    }
}

thread_local! {
    /// Set while parsing when a key decoded from escapes holds a control byte: then only
    /// a full syntax check can tell `\u0009` (valid) from a raw tab (invalid JSON).
    static KEY_NEEDS_SYNTAX_CHECK: Cell<bool> = const { Cell::new(false) };
}

/// An object key as bytes: escapes are decoded, but a lone surrogate is not an error,
/// because an unknown field is ignored whatever it holds, its name included; a key
/// with one never equals a field name.
pub(super) struct Key<'de>(pub(super) Cow<'de, [u8]>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            // Read as bytes, serde_json checks neither surrogates nor raw control
            // characters. A raw one is invalid JSON: an error here sends the record through
            // `classify`, whose full syntax check calls it invalid_json. After escapes were
            // decoded a control byte may be legitimate (`\u0009`), so the record is only
            // marked for that full check.
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Key<'de>, E> {
                if v.iter().any(|&b| b < 0x20) {
                    return Err(E::custom("control character in an object key"));
                }
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Key<'de>, E> {
                if v.iter().any(|&b| b < 0x20) {
                    KEY_NEEDS_SYNTAX_CHECK.with(|c| c.set(true));
                }
                Ok(Key(Cow::Owned(v.to_vec())))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v.as_bytes())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.as_bytes().to_vec())))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// A string borrowed from the record when it has no escapes. serde's own `Cow<str>`
/// always allocates (it borrows only under a derive's `#[serde(borrow)]`), which cost an
/// allocation per key and per string value on the hot path.
struct Str<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Str<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Accepts any JSON string without keeping it: SKU and title must be strings, nothing more.
struct AnyStr;

impl<'de> de::Deserialize<'de> for AnyStr {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<AnyStr, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyStr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<AnyStr, E> {
                Ok(AnyStr)
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Visitor<'de> for ItemSeed<'_> {
    type Value = (u64, Money);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an item object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(u64, Money), A::Error> {
        let (mut sku, mut title) = (false, false);
        let mut price: Option<Money> = None;
        let mut qty: Option<u64> = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match key.0.as_ref() {
                b"SKU" => {
                    self.field.set("items[].SKU");
                    if sku {
                        return Err(dup("items[].SKU"));
                    }
                    map.next_value::<AnyStr>()?;
                    sku = true;
                }
                b"title" => {
                    self.field.set("items[].title");
                    if title {
                        return Err(dup("items[].title"));
                    }
                    map.next_value::<AnyStr>()?;
                    title = true;
                }
                b"unit_price" => {
                    self.field.set("items[].unit_price");
                    if price.is_some() {
                        return Err(dup("items[].unit_price"));
                    }
                    let raw: &'de RawValue = map.next_value()?;
                    let text = raw.get();
                    price = Some(
                        Money::parse_price(text)
                            .map_err(|e| de::Error::custom(format_args!("{text} {e}")))?,
                    );
                }
                b"quantity" => {
                    self.field.set("items[].quantity");
                    if qty.is_some() {
                        return Err(dup("items[].quantity"));
                    }
                    let raw: &'de RawValue = map.next_value()?;
                    qty = Some(parse_quantity(raw.get()).map_err(de::Error::custom)?);
                }
                _ => {
                    self.field.set("items[]");
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        self.field.set("items[]");
        let missing = |name| de::Error::custom(format_args!("field `{name}` is missing"));
        if !sku {
            return Err(missing("SKU"));
        }
        if !title {
            return Err(missing("title"));
        }
        let price = price.ok_or_else(|| missing("unit_price"))?;
        let qty = qty.ok_or_else(|| missing("quantity"))?;
        Ok((qty, price))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"invoice_no": 154132541653705, "country": "United Kingdom", "timestamp": "2020-09-18 10:55:23", "type": "ORDER", "items": [{"SKU": "21485", "title": "RETROSPOT HEART HOT WATER BOTTLE", "unit_price": 4.95, "quantity": 6}, {"SKU": "23499", "title": "SET 12 VINTAGE DOILY CHALK", "unit_price": 0.42, "quantity": 2}]}"#;

    fn parse(s: &str) -> Result<Invoice<'_>, Rejection> {
        parse_invoice(s.as_bytes(), &Limits::default())
    }

    fn reason(s: &str) -> Reason {
        parse(s).expect_err(s).reason
    }

    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(GOOD).unwrap();
        let raw: serde_json::Value = serde_json::from_str(value).unwrap_or(serde_json::Value::Null);
        v.insert(field.into(), raw);
        serde_json::to_string(&v).unwrap()
    }

    #[test]
    fn the_spec_example_derives_its_columns() {
        let inv = parse(GOOD).unwrap();
        assert_eq!(inv.invoice_no, 154132541653705);
        assert_eq!(inv.country, "United Kingdom");
        assert_eq!(inv.kind, Kind::Order);
        assert_eq!(inv.item_count, 2);
        assert_eq!(inv.total_items, 8);
        // 4.95*6 + 0.42*2 = 29.70 + 0.84 = 30.54
        assert_eq!(inv.total_cost, Money(305_400));
        let text = GOOD.replace("ORDER", "RETURN");
        let ret = parse(&text).unwrap();
        assert_eq!(ret.total_cost, Money(-305_400));
        assert_eq!(ret.total_items, 8);
        assert_eq!((ret.is_order(), ret.is_return()), (0, 1));
    }

    #[test]
    fn invoice_numbers() {
        assert_eq!(
            parse(&with("invoice_no", "\"000123\"")).unwrap().invoice_no,
            123
        );
        assert_eq!(
            parse(&GOOD.replace("154132541653705", "\"\\u0031\\u0032\""))
                .unwrap()
                .invoice_no,
            12
        );
        assert_eq!(
            parse(&with("invoice_no", "18446744073709551615"))
                .unwrap()
                .invoice_no,
            u64::MAX
        );
        assert_eq!(parse(&with("invoice_no", "0")).unwrap().invoice_no, 0);
        for bad in [
            "18446744073709551616",
            "-1",
            "1.0",
            "1e3",
            "\"\"",
            "\"12a\"",
            "\"+1\"",
            "\" 1\"",
            "null",
            "[1]",
        ] {
            let r = parse(&GOOD.replace("154132541653705", bad)).unwrap_err();
            assert_eq!(r.reason, Reason::InvalidInvoice, "{bad}: {}", r.message);
            assert!(r.message.contains("invoice_no"), "{}", r.message);
        }
        assert_eq!(
            reason(&GOOD.replace("154132541653705", "-0")),
            Reason::InvalidInvoice
        );
    }

    #[test]
    fn countries_are_trimmed_and_must_not_be_empty() {
        assert_eq!(
            parse(&with("country", "\"  EIRE\\t\"")).unwrap().country,
            "EIRE"
        );
        assert_eq!(
            parse(&with("country", "\"Côte d'Ivoire\""))
                .unwrap()
                .country,
            "Côte d'Ivoire"
        );
        let r = parse(&with("country", "\" \\n \"")).unwrap_err();
        assert_eq!(r.reason, Reason::InvalidInvoice);
        assert!(r.message.contains("country"));
        assert_eq!(reason(&with("country", "5")), Reason::InvalidInvoice);
    }

    #[test]
    fn type_is_exact() {
        assert_eq!(
            reason(&GOOD.replace("ORDER", "order")),
            Reason::InvalidInvoice
        );
        assert_eq!(
            reason(&GOOD.replace("ORDER", "ORDER ")),
            Reason::InvalidInvoice
        );
    }

    #[test]
    fn items_rules() {
        let item = |p: &str, q: &str| {
            GOOD.replace(
                "\"unit_price\": 4.95, \"quantity\": 6",
                &format!("\"unit_price\": {p}, \"quantity\": {q}"),
            )
        };
        assert!(parse(&item("1.10000", "6")).is_ok());
        assert!(parse(&item("0", "0")).is_ok());
        assert!(parse(&item("1000000000", "1000000000")).is_ok());
        for (p, q) in [
            ("0.30000000000000004", "1"),
            ("-1", "1"),
            ("1000000000.0001", "1"),
            ("\"4.95\"", "1"),
            ("4.95", "3.0"),
            ("4.95", "-0"),
            ("4.95", "-1"),
            ("4.95", "1000000001"),
            ("4.95", "1e2"),
            ("4.95", "\"6\""),
        ] {
            let r = parse(&item(p, q)).unwrap_err();
            assert_eq!(r.reason, Reason::InvalidInvoice, "{p} {q}");
            assert!(r.message.contains("items[]"), "{}", r.message);
        }
        assert_eq!(parse(&with("items", "[]")).unwrap().total_cost, Money::ZERO);
        assert_eq!(reason(&with("items", "{}")), Reason::InvalidInvoice);
        assert_eq!(
            reason(&with("items", "[[\"1\",\"t\",1,1]]")),
            Reason::InvalidInvoice
        );
        assert_eq!(
            reason(&with(
                "items",
                "[{\"SKU\":\"1\",\"title\":\"t\",\"unit_price\":1}]"
            )),
            Reason::InvalidInvoice
        );
        assert_eq!(
            reason(&with(
                "items",
                "[{\"SKU\":1,\"title\":\"t\",\"unit_price\":1,\"quantity\":1}]"
            )),
            Reason::InvalidInvoice
        );
        assert!(parse(&with(
            "items",
            "[{\"SKU\":\"1\",\"title\":\"t\",\"unit_price\":1,\"quantity\":1,\"x\":[{}]}]"
        ))
        .is_ok());
    }

    #[test]
    fn structure_errors_are_invalid_invoice() {
        assert_eq!(reason("[1,2]"), Reason::InvalidInvoice);
        assert_eq!(reason("\"x\""), Reason::InvalidInvoice);
        assert_eq!(reason("{}"), Reason::InvalidInvoice);
        let missing = parse(&GOOD.replace("\"type\": \"ORDER\", ", "")).unwrap_err();
        assert_eq!(missing.reason, Reason::InvalidInvoice);
        assert!(
            missing.message.contains("`type` is missing"),
            "{}",
            missing.message
        );
        let twice = GOOD.replace(
            "\"type\": \"ORDER\"",
            "\"type\": \"ORDER\", \"type\": \"ORDER\"",
        );
        let r = parse(&twice).unwrap_err();
        assert_eq!(r.reason, Reason::InvalidInvoice);
        assert!(r.message.contains("twice"), "{}", r.message);
        // A key spelled with an escape is the same key.
        let esc = GOOD.replace(
            "\"type\": \"ORDER\"",
            "\"type\": \"ORDER\", \"typ\\u0065\": \"ORDER\"",
        );
        assert_eq!(reason(&esc), Reason::InvalidInvoice);
        // Unknown fields are ignored whatever they hold.
        let extra = GOOD.replace(
            "{\"invoice_no\"",
            "{\"extra\": {\"a\": [1, null, 2.5e300]}, \"invoice_no\"",
        );
        assert!(parse(&extra).is_ok());
    }

    /// A lone surrogate in a used string after a bad field: `invalid_json`, with the
    /// place serde_json gives it in the whole record (review of the F4 fix, which first
    /// counted from the start of the string), also on a later line.
    #[test]
    fn a_bad_used_string_is_placed_in_the_whole_record() {
        for text in [
            r#"{"invoice_no": "x", "country": "\ud800", "type": "ORDER"}"#,
            "{\"invoice_no\": -1,\n  \"items\": [{\"SKU\": \"1\",\n \"unit_price\": \"\\udc00\"}]}",
        ] {
            let r = parse(text).unwrap_err();
            let whole = serde_json::from_str::<serde_json::Value>(text).unwrap_err();
            assert_eq!(r.reason, Reason::InvalidJson, "{text}");
            assert_eq!(r.message, format!("not valid JSON: {whole}"), "{text}");
        }
    }

    /// Regression (fuzzing): keys read as bytes let raw control characters through.
    #[test]
    fn raw_control_characters_in_keys_are_invalid_json() {
        let raw = GOOD.replace("\"items\"", "\"x\u{9}y\": 1, \"items\"");
        assert_eq!(reason(&raw), Reason::InvalidJson);
        let raw_escaped = GOOD.replace("\"items\"", "\"\\u0041\u{0}\": 1, \"items\"");
        assert_eq!(reason(&raw_escaped), Reason::InvalidJson);
        let escaped = GOOD.replace("\"items\"", "\"x\\u0009y\": 1, \"items\"");
        assert!(
            parse(&escaped).is_ok(),
            "an escaped control character is fine"
        );
    }

    #[test]
    fn json_errors_win_over_field_errors() {
        assert_eq!(reason(""), Reason::InvalidJson);
        assert_eq!(reason(" "), Reason::InvalidJson);
        assert_eq!(reason(&format!("{GOOD} x")), Reason::InvalidJson);
        assert_eq!(reason(&format!("{GOOD}{GOOD}")), Reason::InvalidJson);
        assert_eq!(reason(&format!("\u{feff}{GOOD}")), Reason::InvalidJson);
        assert_eq!(reason(&GOOD.replace("4.95", "NaN")), Reason::InvalidJson);
        assert_eq!(reason(&GOOD[..GOOD.len() - 1]), Reason::InvalidJson);
        // The first field is wrong, but the record is not JSON at all: invalid_json.
        assert_eq!(reason("{\"country\": 5, \"x\": }"), Reason::InvalidJson);
        assert_eq!(
            reason(&GOOD.replace("United Kingdom", "\\ud800")),
            Reason::InvalidJson
        );
        assert!(parse(&format!(" \n{GOOD}\t ")).is_ok());
    }

    #[test]
    fn limits_come_first_and_items_last() {
        let limits = Limits {
            max_record_bytes: 100,
            max_items: 1,
        };
        let r = parse_invoice(GOOD.as_bytes(), &limits).unwrap_err();
        assert_eq!(r.reason, Reason::TooLarge);
        let limits = Limits {
            max_record_bytes: 1 << 20,
            max_items: 1,
        };
        assert_eq!(
            parse_invoice(GOOD.as_bytes(), &limits).unwrap_err().reason,
            Reason::TooLarge
        );
        // Invoice fields are checked before the number of items.
        let bad = GOOD.replace("ORDER", "order");
        assert_eq!(
            parse_invoice(bad.as_bytes(), &limits).unwrap_err().reason,
            Reason::InvalidInvoice
        );
        assert_eq!(
            parse_invoice(b"{\"a\":\"\xff\"}", &limits)
                .unwrap_err()
                .reason,
            Reason::InvalidUtf8
        );
        let limits = Limits {
            max_record_bytes: 5,
            max_items: 1,
        };
        assert_eq!(
            parse_invoice(b"\xff\xff\xff\xff\xff\xff", &limits)
                .unwrap_err()
                .reason,
            Reason::TooLarge
        );
    }
}
