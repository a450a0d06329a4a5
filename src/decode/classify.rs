//! Why the serde_json path refused a record: `invalid_json` or `invalid_invoice`, in SPEC
//! §7's order. The visitor of [`super::invoice`] stops at the first field it does not like;
//! whether the record is JSON at all, and whether a string the invoice uses holds a lone
//! surrogate (which §7 ranks first), is decided here, on the whole text.

use super::invoice::Key;
use crate::record::{Reason, Rejection};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Turns a parse error into a reason: a record that is not one JSON value is
/// `invalid_json` even when the visitor stopped first at a field it did not like.
pub(super) fn classify(text: &str, e: serde_json::Error, field: &str) -> Rejection {
    use serde_json::error::Category;
    // serde_json files a number too large for an f64 under "syntax", but it is valid JSON
    // of the wrong type wherever we ask for a string, an object or an array.
    let out_of_range = e.to_string().starts_with("number out of range");
    let syntax = matches!(
        e.classify(),
        Category::Syntax | Category::Eof | Category::Io
    ) && !out_of_range;
    let valid = serde_json::from_str::<IgnoredAny>(text);
    if let (true, Err(_)) = (syntax, &valid) {
        return Rejection::new(Reason::InvalidJson, format!("not valid JSON: {e}"));
    }
    if let Err(invalid) = valid {
        return Rejection::new(Reason::InvalidJson, format!("not valid JSON: {invalid}"));
    }
    // The visitor stopped at the bad field; a string the invoice uses further on may
    // still hold a lone surrogate, which §7 ranks first (invalid_json).
    if let Err(used) = used_strings_decode(text) {
        let shown = if syntax { e.to_string() } else { used };
        return Rejection::new(Reason::InvalidJson, format!("not valid JSON: {shown}"));
    }
    // A syntax error of the visitor in a record that is valid JSON with its used strings
    // sound: serde_json decoded a string where it wanted another type, to name that type,
    // and the string held a lone surrogate the invoice would ignore (a top-level string,
    // a string element of `items`).
    let what = if syntax {
        "a string where another type is expected".to_owned()
    } else {
        e.to_string()
    };
    let msg = if field.is_empty() {
        format!("not an invoice: {what}")
    } else {
        format!("field `{field}`: {what}")
    };
    Rejection::new(Reason::InvalidInvoice, msg)
}

/// Decodes (and so validates) the strings the invoice uses, and only those: string values
/// under a field of the invoice object, and under a field of an object in its `items`
/// array. A lone surrogate escape anywhere else (an unknown field, a key, a top-level
/// string, a string element of `items`) is JSON that the invoice ignores. The text is known
/// to be one JSON value. `Err` is serde_json's message for the first used string that
/// does not decode, with its line and column in the whole record.
fn used_strings_decode(text: &str) -> Result<(), String> {
    const INVOICE: [&[u8]; 5] = [b"invoice_no", b"country", b"timestamp", b"type", b"items"];
    const ITEM: [&[u8]; 4] = [b"SKU", b"title", b"unit_price", b"quantity"];
    let decode = |v: &RawValue| match v.get().starts_with('"') {
        true => serde_json::from_str::<Cow<str>>(v.get())
            .map(drop)
            .map_err(|e| placed(text, v.get(), &e)),
        false => Ok(()),
    };
    // Parses of parts of a text known to be JSON: they fail only on a key with a raw
    // control character, which is not a used string's fault (nothing found, as before).
    let Ok(top) = serde_json::from_str::<&RawValue>(text) else {
        return Ok(());
    };
    // Raw values keep their text with no white space around it.
    if !top.get().starts_with('{') {
        return Ok(());
    }
    let Ok(Members(fields)) = serde_json::from_str(top.get()) else {
        return Ok(());
    };
    for (Key(k), v) in fields {
        if !INVOICE.contains(&k.as_ref()) {
            continue;
        }
        decode(v)?;
        if k.as_ref() != b"items" || !v.get().starts_with('[') {
            continue;
        }
        let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(v.get()) else {
            return Ok(());
        };
        for item in items.into_iter().filter(|i| i.get().starts_with('{')) {
            let Ok(Members(fields)) = serde_json::from_str(item.get()) else {
                return Ok(());
            };
            for (Key(k), v) in fields {
                if ITEM.contains(&k.as_ref()) {
                    decode(v)?;
                }
            }
        }
    }
    Ok(())
}

/// serde_json's message for an error in `part`, a slice of `text`, with the line and
/// column it has in `text` (serde_json counts them from the start of what it parsed).
fn placed(text: &str, part: &str, e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let base = msg.strip_suffix(&suffix).unwrap_or(&msg);
    let off = (part.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
    let before = text.get(..off).unwrap_or("");
    let line = 1 + before.matches('\n').count() + e.line().saturating_sub(1);
    let column = match e.line() {
        1 => off - before.rfind('\n').map_or(0, |p| p + 1) + e.column(),
        _ => e.column(),
    };
    format!("{base} at line {line} column {column}")
}

/// The members of an object in their order, duplicates included, values undecoded.
struct Members<'de>(Vec<(Key<'de>, &'de RawValue)>);

impl<'de> de::Deserialize<'de> for Members<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Members<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<Key<'de>>()? {
                    out.push((k, map.next_value::<&'de RawValue>()?));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}
