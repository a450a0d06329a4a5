//! One generated invoice and how it is written: item and timestamp styles, JSON text.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoStyle {
    /// A JSON integer, the usual form.
    Int,
    /// A string of digits (valid, SPEC §1).
    Text,
    /// A string of digits with leading zeros (valid).
    Zeros,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CountryStyle {
    Plain,
    Padded,
    Escaped,
}

/// An unknown field, which the job must ignore whatever it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Extra {
    None,
    Id(u32),
    Null,
    Nested,
    Text,
}

impl Extra {
    pub(super) fn write(self, out: &mut Vec<u8>) {
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
pub(super) struct Item {
    pub(super) product: u16,
    pub(super) quantity: u32,
    /// Price written with trailing zeros to 5 decimals: valid, 4 decimals by value.
    pub(super) padded: bool,
}

impl Item {
    pub(super) fn write_price(&self, out: &mut Vec<u8>) {
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
pub(super) struct Invoice {
    pub(super) no: u64,
    pub(super) no_style: NoStyle,
    pub(super) country: u16,
    pub(super) country_style: CountryStyle,
    /// The event time the written timestamp means, ms.
    pub(super) ts_ms: i64,
    pub(super) ts_style: TsStyle,
    pub(super) is_return: bool,
    pub(super) items: [Item; MAX_ITEMS],
    pub(super) n_items: usize,
    pub(super) extra: Extra,
    pub(super) reordered: bool,
}

impl Invoice {
    pub(super) fn write_no(&self, out: &mut Vec<u8>) {
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

    pub(super) fn write_ts(&self, out: &mut Vec<u8>) {
        out.push(b'"');
        self.ts_style.write(self.ts_ms, out);
        out.push(b'"');
    }

    pub(super) fn write_type(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.is_return {
            b"\"RETURN\""
        } else {
            b"\"ORDER\""
        });
    }
}

/// How a timestamp is spelt: the separator, digits of the fraction, and the zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TsStyle {
    pub(super) sep: u8,
    pub(super) frac_digits: u8,
    /// `b'Z'`/`b'z'` for UTC, 0 for no zone or for an offset.
    pub(super) zone: u8,
    /// Offset from UTC in minutes, when `zone` is 0.
    pub(super) offset_min: Option<i32>,
}

pub(super) const fn ts(sep: u8, frac_digits: u8, zone: u8, offset_min: Option<i32>) -> TsStyle {
    TsStyle {
        sep,
        frac_digits,
        zone,
        offset_min,
    }
}

impl TsStyle {
    pub(super) const PLAIN: TsStyle = ts(b' ', 0, 0, None);

    /// The step of time this spelling shows, ms.
    pub(super) fn unit(self) -> i64 {
        match self.frac_digits {
            0 => 1_000,
            1 => 100,
            2 => 10,
            _ => 1,
        }
    }

    /// The last instant at or before `ms` that this spelling can show.
    pub(super) fn floor(self, ms: i64) -> i64 {
        ms - ms.rem_euclid(self.unit())
    }

    /// The first instant at or after `ms` that this spelling can show.
    pub(super) fn ceil(self, ms: i64) -> i64 {
        self.floor(ms + self.unit() - 1)
    }

    pub(super) fn write(self, ms: i64, out: &mut Vec<u8>) {
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
pub(super) const TS_VARIANTS: &[TsStyle] = &[
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

pub(super) fn push_frac(out: &mut Vec<u8>, v: u64, digits: usize) {
    out.push(b'.');
    push_padded(out, v, digits);
}

/// `v` in decimal, at least `width` digits.
pub(super) fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
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

pub(super) fn push_u64(out: &mut Vec<u8>, v: u64) {
    push_padded(out, v, 1);
}

pub(super) fn json_string(s: &str) -> Vec<u8> {
    serde_json::to_vec(s).expect("a str always serializes")
}

/// `[{"SKU":"M","title":"","unit_price":0,"quantity":1},…]`, the smallest valid lines.
pub(super) fn tiny_items(n: usize) -> Vec<u8> {
    pub(super) const ITEM: &[u8] = br#"{"SKU":"M","title":"","unit_price":0,"quantity":1}"#;
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
