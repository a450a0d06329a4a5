//! Malformed records: edits that make a valid invoice fail one check of SPEC §7 each.

/// An invoice as a list of fields, so that one can be dropped, repeated or replaced.
#[derive(Debug)]
pub(super) struct Doc {
    pub(super) fields: Vec<(&'static str, Val)>,
    pub(super) items: Vec<Vec<(&'static str, Vec<u8>)>>,
    /// `[{…},]`: invalid JSON.
    pub(super) trailing_comma: bool,
}

#[derive(Debug)]
pub(super) enum Val {
    Raw(Vec<u8>),
    /// Rendered from `Doc::items`.
    Items,
}

impl Doc {
    pub(super) fn set(&mut self, key: &str, value: Vec<u8>) {
        if let Some(f) = self.fields.iter_mut().find(|f| f.0 == key) {
            f.1 = Val::Raw(value);
        }
    }

    pub(super) fn render(&self) -> Vec<u8> {
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
pub(super) fn push_key(out: &mut Vec<u8>, key: &str) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// One malformation. Values are raw JSON text (or deliberately not JSON).
#[derive(Debug, Clone, Copy)]
pub(super) enum Edit {
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
pub(super) const UTF8_EDITS: &[Edit] = &[
    Edit::Set("country", b"\"Germ\xFFany\""),
    Edit::ItemSet("title", b"\"CAF\xC3\x28 SIGN\""),
    Edit::Add("note", b"\"\xED\xA0\x80\""),
    Edit::ItemSet("title", b"\"HEART \xE2\x82\""),
    Edit::Set("invoice_no", b"\"5370\xFF12\""),
    Edit::Suffix(b" \xFF"),
    Edit::Set("country", b"\"France\xC0\xAF\""),
];

/// UTF-8 but not exactly one JSON value.
pub(super) const JSON_EDITS: &[Edit] = &[
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
pub(super) const INVOICE_EDITS: &[Edit] = &[
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
pub(super) const BAD_TABLES: [(&[Edit], &str); 3] = [
    (INVOICE_EDITS, "invalid_invoice"),
    (UTF8_EDITS, "invalid_utf8"),
    (JSON_EDITS, "invalid_json"),
];
