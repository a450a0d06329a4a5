//! Bad input (SPEC §7; issue 6, items 1 and 3): every reason code, fed as real malformed
//! records through the real binary (`retail-kpi run --input FILE`), and the rejected sink
//! read back for each record: source (topic, partition, offset = line number), reason, a
//! message that names the problem, the raw bytes (escaped) and their length, each exactly
//! once; the valid lines around them still count. Then the configurable limits, the two
//! reasons a bounded file run cannot produce (through the engine's library API), and the
//! overflow headroom of a window at the enforced limits.
//!
//! Every expected value is written by hand from the SPEC.

use retail_kpi::aggregate::partial::WindowAgg;
use retail_kpi::aggregate::{Engine, EngineConfig};
use retail_kpi::decode::invoice::{parse_invoice, Limits, MAX_QUANTITY};
use retail_kpi::decode::JsonInvoiceDecoder;
use retail_kpi::event_time::{parse_timestamp, NANOS_PER_SEC};
use retail_kpi::job::Intake;
use retail_kpi::money::{Money, MAX_UNIT_PRICE, SCALE};
use retail_kpi::record::{Reason, SourceRecord};
use retail_kpi::sink::render::{render_bucket, render_rejected, Family};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use test_support::harness;
use test_support::process::owned_command;

const MIB: usize = 1 << 20;

/// One invoice line. `items` is the JSON text of the items array; `extra` is inserted as
/// the first member (an unknown field, or a repeated one) when not empty.
fn invoice(extra: &str, ts: &str, kind: &str, country: &str, items: &str) -> String {
    format!(
        r#"{{{extra}"invoice_no": 154132541653705, "country": "{country}", "timestamp": "{ts}", "type": "{kind}", "items": {items}}}"#
    )
}

fn item(price: &str, qty: &str) -> String {
    format!(
        r#"{{"SKU": "21485", "title": "HOT WATER BOTTLE", "unit_price": {price}, "quantity": {qty}}}"#
    )
}

/// An ORDER of one item (unit price 1, quantity 1) at 10:55:30, with one field replaced:
/// `field` is one of the five invoice fields; `value` is its JSON text, or None to drop it.
fn with_field(field: &str, value: Option<&str>) -> String {
    let fields = [
        ("invoice_no", "154132541653705".to_owned()),
        ("country", "\"United Kingdom\"".to_owned()),
        ("timestamp", "\"2020-09-18 10:55:30\"".to_owned()),
        ("type", "\"ORDER\"".to_owned()),
        ("items", format!("[{}]", item("1", "1"))),
    ];
    let members: Vec<String> = fields
        .iter()
        .filter_map(|(k, v)| {
            if *k == field {
                value.map(|v| format!("\"{k}\": {v}"))
            } else {
                Some(format!("\"{k}\": {v}"))
            }
        })
        .collect();
    format!("{{{}}}", members.join(", "))
}

/// The same invoice with its one item given as `item_json`.
fn with_item(item_json: &str) -> String {
    with_field("items", Some(&format!("[{item_json}]")))
}

/// Pads `line` (an invoice ending in `}`) with an unknown field to exactly `len` bytes.
fn padded(line: &str, len: usize) -> String {
    let head = &line[..line.len() - 1];
    let fixed = head.len() + r#", "pad": ""}"#.len();
    assert!(len >= fixed);
    format!("{head}, \"pad\": \"{}\"}}", "x".repeat(len - fixed))
}

fn items_of(n: usize, price: &str, qty: &str) -> String {
    let one = format!(r#"{{"SKU":"a","title":"b","unit_price":{price},"quantity":{qty}}}"#);
    format!("[{}]", vec![one; n].join(","))
}

/// What one rejected record must look like in the sink.
struct Want {
    reason: &'static str,
    /// Each must occur in the message (the field, the limit, the problem).
    needles: Vec<&'static str>,
    /// The `raw` field as the sink writes it; None: the line itself (valid UTF-8).
    raw: Option<String>,
}

fn want(reason: &'static str, needles: &[&'static str]) -> Want {
    Want {
        reason,
        needles: needles.to_vec(),
        raw: None,
    }
}

/// The input file under construction: lines, and what each rejected one must give.
#[derive(Default)]
struct Input {
    lines: Vec<Vec<u8>>,
    rejected: BTreeMap<i64, Want>,
}

impl Input {
    fn ok(&mut self, line: impl Into<Vec<u8>>) {
        self.lines.push(line.into());
    }
    fn bad(&mut self, line: impl Into<Vec<u8>>, w: Want) {
        self.rejected.insert(self.lines.len() as i64, w);
        self.lines.push(line.into());
    }
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for l in &self.lines {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        out
    }
}

/// A line of the rejected sink, parsed.
#[derive(Debug)]
struct Sunk {
    topic: String,
    partition: u64,
    offset: i64,
    reason: String,
    message: String,
    raw: String,
    raw_bytes: u64,
    raw_truncated: bool,
}

/// Every line of `<out>/rejected/*.jsonl`, by offset; panics on a record written twice or on
/// a line without one of the fields of README "Output".
fn read_rejected(out: &Path) -> BTreeMap<i64, Sunk> {
    let mut all = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(out.join("rejected")) else {
        return all;
    };
    for e in dir {
        let path = e.unwrap().path();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let s = |k: &str| {
                v[k].as_str()
                    .unwrap_or_else(|| panic!("{k} in {line}"))
                    .to_owned()
            };
            let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {line}"));
            let r = Sunk {
                topic: s("topic"),
                partition: n("partition"),
                offset: v["offset"].as_i64().unwrap(),
                reason: s("reason"),
                message: s("message"),
                raw: s("raw"),
                raw_bytes: n("raw_bytes"),
                raw_truncated: v["raw_truncated"].as_bool().unwrap_or(false),
            };
            let off = r.offset;
            if let Some(prev) = all.insert(off, r) {
                panic!("offset {off} written twice: {prev:?}");
            }
        }
    }
    all
}

struct Run {
    _dir: tempfile::TempDir,
    input: PathBuf,
    out: PathBuf,
    state: PathBuf,
}

/// `retail-kpi run --input FILE` on `bytes` with `args`; asserts exit 0.
fn run(bytes: &[u8], args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("invoices.jsonl");
    std::fs::write(&input, bytes).unwrap();
    let (out, state) = (dir.path().join("out"), dir.path().join("state"));
    let res = owned_command(env!("CARGO_BIN_EXE_retail-kpi"))
        .arg("run")
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--state")
        .arg(&state)
        .args(args)
        // Tests run in parallel: no metrics port (harmless before the flag exists), and
        // no limits from the caller's environment.
        .env("RETAIL_KPI_METRICS_ADDR", "off")
        .env_remove("RETAIL_KPI_MAX_RECORD_BYTES")
        .env_remove("RETAIL_KPI_MAX_ITEMS")
        .env_remove("RETAIL_KPI_GRACE")
        .env_remove("RETAIL_KPI_CONFIG")
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "run failed: {:?}\n{}",
        res.status,
        String::from_utf8_lossy(&res.stderr)
    );
    Run {
        _dir: dir,
        input,
        out,
        state,
    }
}

/// Rejected counters per reason from `state inspect --json`.
fn counters(state: &Path) -> BTreeMap<String, u64> {
    let res = owned_command(env!("CARGO_BIN_EXE_retail-kpi"))
        .args(["state", "inspect", "--json", "--state"])
        .arg(state)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    let c = &v["counters"];
    let mut m: BTreeMap<String, u64> = c["rejected"]
        .as_object()
        .expect("counters.rejected in state inspect --json")
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect();
    m.insert("(read)".into(), c["read"].as_u64().unwrap());
    m.insert("(accepted)".into(), c["accepted"].as_u64().unwrap());
    m
}

/// Checks the sink against `input`: every rejected line once, with its fields; nothing else.
fn check_sink(r: &Run, input: &Input) {
    let sunk = read_rejected(&r.out);
    let got: Vec<i64> = sunk.keys().copied().collect();
    let wanted: Vec<i64> = input.rejected.keys().copied().collect();
    assert_eq!(got, wanted, "offsets in the rejected sink");
    let topic = r.input.display().to_string();
    for (off, w) in &input.rejected {
        let s = &sunk[off];
        let line = &input.lines[*off as usize];
        let ctx = format!("line {off}: {s:?}");
        assert_eq!(s.topic, topic, "{ctx}");
        assert_eq!(s.partition, 0, "{ctx}");
        assert_eq!(s.reason, w.reason, "{ctx}");
        for n in &w.needles {
            assert!(s.message.contains(n), "message lacks {n:?}: {ctx}");
        }
        let raw = match &w.raw {
            Some(raw) => raw.clone(),
            None => String::from_utf8(line.clone()).expect("a UTF-8 line"),
        };
        // SPEC §7: a too-large record keeps its first 64 KiB, marked as cut.
        let cut = w.reason == "too_large" && line.len() > 64 << 10;
        let raw = if cut {
            // The first 64 KiB of bytes, escaped as README "Output" says: UTF-8 as it is,
            // any other byte as \xNN.
            let mut e = String::new();
            for chunk in line[..64 << 10].utf8_chunks() {
                e.push_str(chunk.valid());
                for b in chunk.invalid() {
                    e.push_str(&format!("\\x{b:02X}"));
                }
            }
            e
        } else {
            raw
        };
        assert!(
            s.raw == raw,
            "raw of line {off} differs: {:?}",
            &s.raw[..s.raw.len().min(200)]
        );
        assert_eq!(s.raw_truncated, cut, "line {off}");
        assert_eq!(s.raw_bytes, line.len() as u64, "line {off}");
    }
}

/// The window rows of SPEC §5 for a window starting at `start` (`2020-09-18T10:55:00Z`).
fn time_row(start: &str, end: &str, rest: &str) -> String {
    format!("{{\"window\":{{\"start\":\"{start}\",\"end\":\"{end}\"}},{rest}}}\n")
}

#[test]
fn every_reason_code_through_the_binary() {
    let mut inp = Input::default();
    let ts = "2020-09-18 10:55:30";
    let good_items = format!("[{}]", item("1", "1"));

    // --- valid lines, window 10:55 unless said otherwise; M_p after each in brackets.
    // V1: ORDER 4.95×6 + 0.42×2 = 30.54, 8 items, United Kingdom [10:55:23]
    inp.ok(invoice(
        "",
        "2020-09-18 10:55:23",
        "ORDER",
        "United Kingdom",
        &format!("[{}, {}]", item("4.95", "6"), item("0.42", "2")),
    ));
    // V2: exactly M_p − G: not late; window 10:54: ORDER 10×1 [10:55:23]
    inp.ok(invoice(
        "",
        "2020-09-18 10:54:23",
        "ORDER",
        "United Kingdom",
        &format!("[{}]", item("10", "1")),
    ));
    // late: 1 ms more than the grace behind M_p = 10:55:23.
    inp.bad(
        invoice(
            "",
            "2020-09-18 10:54:22.999",
            "ORDER",
            "United Kingdom",
            &good_items,
        ),
        want("late", &["10:54:22.999", "grace"]),
    );
    // V3: RETURN 2.5×2 = −5, 2 items, EIRE [10:55:40]
    inp.ok(invoice(
        "",
        "2020-09-18 10:55:40",
        "RETURN",
        "EIRE",
        &format!("[{}]", item("2.5", "2")),
    ));
    // V4: exactly 1 MiB (the limit itself), ORDER 1×1 [10:55:40]
    inp.ok(padded(
        &invoice(
            "",
            "2020-09-18 10:55:10",
            "ORDER",
            "United Kingdom",
            &good_items,
        ),
        MIB,
    ));
    // V5: exactly 10,000 items (the limit itself) of 0 × 1: cost 0, 10,000 items [10:55:50]
    inp.ok(invoice(
        "",
        "2020-09-18 10:55:50",
        "ORDER",
        "United Kingdom",
        &items_of(10_000, "0", "1"),
    ));
    // V6: an unknown field holding a lone surrogate and invalid-looking data is ignored
    // (SPEC §1: "whatever they hold"); `1.10000` is 4 places by value: 1.1 [10:55:59.999]
    inp.ok(invoice(
        r#""note": "\ud800", "more": [NaNa, {"x": null}], "#
            .replace("NaNa", "1e999")
            .as_str(),
        "2020-09-18 10:55:59.999",
        "ORDER",
        "United Kingdom",
        &format!("[{}]", item("1.10000", "1")),
    ));
    // V7: invoice_no as a string with leading zeros, country trimmed, `T`, fraction, `Z`,
    // a CR before the newline (JSON white space): 0.0001×3 = 0.0003, 3 items [10:55:59.999]
    inp.ok(with_field("invoice_no", Some("\"000123\""))
        .replace("\"United Kingdom\"", "\"  United Kingdom\\t\"")
        .replace("2020-09-18 10:55:30", "2020-09-18T10:55:30.5Z")
        .replace(
            "\"unit_price\": 1, \"quantity\": 1",
            "\"unit_price\": 0.0001, \"quantity\": 3",
        )
        + "\r");

    // --- too_large: both limits, one over each.
    inp.bad(
        padded(
            &invoice("", ts, "ORDER", "United Kingdom", &good_items),
            MIB + 1,
        ),
        want(
            "too_large",
            &["1048577 bytes", "1048576", "max_record_bytes"],
        ),
    );
    inp.bad(
        invoice(
            "",
            ts,
            "ORDER",
            "United Kingdom",
            &items_of(10_001, "0", "1"),
        ),
        want("too_large", &["10001 items", "10000", "max_items"]),
    );
    // Size comes before UTF-8 (§7 order): an oversized line that is not UTF-8 either.
    let mut big_bad = padded(&invoice("", ts, "ORDER", "UK", &good_items), MIB + 1).into_bytes();
    big_bad[20] = 0xFF;
    inp.bad(
        big_bad.clone(),
        Want {
            reason: "too_large",
            needles: vec!["max_record_bytes"],
            raw: Some(format!(
                "{}\\xFF{}",
                std::str::from_utf8(&big_bad[..20]).unwrap(),
                std::str::from_utf8(&big_bad[21..]).unwrap()
            )),
        },
    );

    // --- invalid_utf8: anywhere in the record, unknown fields included.
    let utf8_cases: [(&[u8], &[u8], &str); 5] = [
        // Latin-1 byte in an unknown field
        (b"\"junk\": \"", b"\xff", "\\xFF"),
        // Latin-1 "ç" in a string
        (b"\"note\": \"Fran", b"\xe7", "\\xE7"),
        // a UTF-8 encoded surrogate (CESU-8)
        (b"\"note\": \"", b"\xed\xa0\x80", "\\xED\\xA0\\x80"),
        // an overlong encoding of '/'
        (b"\"note\": \"", b"\xc0\xaf", "\\xC0\\xAF"),
        // a sequence cut short
        (b"\"note\": \"", b"\xe2\x82", "\\xE2\\x82"),
    ];
    for (head, bad, esc) in utf8_cases {
        let tail = format!(
            "\", {}",
            &invoice("", ts, "ORDER", "United Kingdom", &good_items)[1..]
        );
        let mut line = b"{".to_vec();
        line.extend_from_slice(head);
        line.extend_from_slice(bad);
        line.extend_from_slice(tail.as_bytes());
        let raw = format!("{{{}{esc}{tail}", std::str::from_utf8(head).unwrap());
        inp.bad(
            line,
            Want {
                reason: "invalid_utf8",
                needles: vec!["UTF-8"],
                raw: Some(raw),
            },
        );
    }
    // Invalid UTF-8 where a field would also be wrong: UTF-8 is checked first.
    let mut line = invoice("", ts, "order", "Fran?e", &good_items).into_bytes();
    let q = line.iter().position(|&b| b == b'?').unwrap();
    line[q] = 0xE7;
    let raw = invoice("", ts, "order", "Fran\\xE7e", &good_items);
    inp.bad(
        line,
        Want {
            reason: "invalid_utf8",
            needles: vec!["UTF-8"],
            raw: Some(raw),
        },
    );

    // --- invalid_json: not exactly one JSON value.
    let good = invoice("", ts, "ORDER", "United Kingdom", &good_items);
    inp.bad("", want("invalid_json", &["EOF while parsing"])); // an empty line is a record
    inp.bad("   \t", want("invalid_json", &["EOF while parsing"]));
    inp.bad(
        good.replacen(", \"country\"", " \"country\"", 1),
        want("invalid_json", &["expected `,` or `}`"]),
    );
    inp.bad(
        &good[..good.len() - 1],
        want("invalid_json", &["EOF while parsing an object"]),
    );
    inp.bad(
        format!("{good} x"),
        want("invalid_json", &["trailing characters"]),
    );
    inp.bad(
        format!("{good}{good}"),
        want("invalid_json", &["trailing characters"]),
    );
    inp.bad(
        format!("{good},"),
        want("invalid_json", &["trailing characters"]),
    );
    inp.bad(
        format!("\u{feff}{good}"),
        want("invalid_json", &["expected value"]),
    );
    inp.bad(
        good.replace("\"unit_price\": 1", "\"unit_price\": NaN"),
        want("invalid_json", &["expected value"]),
    );
    inp.bad(
        good.replace("\"unit_price\": 1", "\"unit_price\": Infinity"),
        want("invalid_json", &["expected value"]),
    );
    inp.bad(
        good.replace("154132541653705", "0154132541653705"),
        want("invalid_json", &["invalid number"]),
    );
    inp.bad(
        good.replace("\"ORDER\"", "'ORDER'"),
        want("invalid_json", &["expected value"]),
    );
    // Lone surrogate escapes in strings the invoice uses.
    inp.bad(
        good.replace("United Kingdom", "United \\ud800Kingdom"),
        want("invalid_json", &["escape"]),
    );
    inp.bad(
        good.replace("HOT WATER BOTTLE", "\\udc00"),
        want("invalid_json", &["escape"]),
    );
    inp.bad(
        good.replace("\"21485\"", "\"\\ud83d\""),
        want("invalid_json", &["escape"]),
    );
    // A JSON syntax error later in the record wins over a wrong field before it.
    inp.bad(
        good.replace("\"ORDER\"", "\"order\"") + " }",
        want("invalid_json", &["trailing characters"]),
    );

    // --- invalid_invoice: JSON, but not an invoice. The message names the field.
    for not_object in ["[1, 2]", "\"an invoice\"", "42", "null", "true"] {
        inp.bad(
            not_object,
            want("invalid_invoice", &["not an invoice", "invoice object"]),
        );
    }
    for field in ["invoice_no", "country", "timestamp", "type", "items"] {
        inp.bad(
            with_field(field, None),
            Want {
                reason: "invalid_invoice",
                needles: vec![field, "missing"],
                raw: None,
            },
        );
    }
    let repeated = [
        ("invoice_no", "\"invoice_no\": 1, "),
        ("country", "\"country\": \"EIRE\", "),
        ("timestamp", "\"timestamp\": \"2020-09-18 10:55:30\", "),
        ("type", "\"type\": \"ORDER\", "),
        ("items", "\"items\": [], "),
        // the same key spelled with an escape is the same key
        ("type", "\"typ\\u0065\": \"ORDER\", "),
    ];
    for (field, first) in repeated {
        inp.bad(
            good.replacen('{', &format!("{{{first}"), 1),
            Want {
                reason: "invalid_invoice",
                needles: vec![field, "twice"],
                raw: None,
            },
        );
    }
    let wrong = [
        ("invoice_no", "true"),
        ("invoice_no", "1.0"),
        ("invoice_no", "-1"),
        ("invoice_no", "-0"),
        ("invoice_no", "1e3"),
        ("invoice_no", "\"12a\""),
        ("invoice_no", "\"+1\""),
        ("invoice_no", "\" 1\""),
        ("invoice_no", "\"\""),
        ("invoice_no", "[1]"),
        ("country", "5"),
        ("country", "null"),
        ("country", "\" \\t\\n \""),
        ("country", "\"\""),
        ("timestamp", "1600426523"),
        ("timestamp", "\"2020-09-18 10:55\""),
        ("timestamp", "\"2020/09/18 10:55:23\""),
        ("timestamp", "\"2020-09-18 10:55:23.\""),
        ("timestamp", "\"2020-09-18 10:55:23.1234567890\""),
        ("timestamp", "\"2020-09-18 10:55:23 \""),
        ("timestamp", "\"2020-09-18 10:55:23+0100\""),
        ("timestamp", "\"2020-09-18 24:00:00\""),
        ("timestamp", "\"2020-02-30 10:55:23\""),
        ("timestamp", "\"2020-13-01 10:55:23\""),
        ("type", "null"),
        ("type", "\"order\""),
        ("type", "\"ORDER \""),
        ("type", "\"SALE\""),
        ("items", "{}"),
        ("items", "null"),
        ("items", "\"[]\""),
        ("items", "[[\"21485\", \"t\", 1, 1]]"),
    ];
    for (field, value) in wrong {
        inp.bad(
            with_field(field, Some(value)),
            Want {
                reason: "invalid_invoice",
                needles: vec![field],
                raw: None,
            },
        );
    }
    // Out of range, with what the message must say.
    let range: [(&str, &str, &'static str); 6] = [
        ("invoice_no", "18446744073709551616", "18446744073709551615"),
        (
            "invoice_no",
            "\"18446744073709551616\"",
            "18446744073709551615",
        ),
        (
            "invoice_no",
            "99999999999999999999999",
            "18446744073709551615",
        ),
        (
            "timestamp",
            "\"2020-09-18 10:55:60\"",
            "calendar date or time",
        ),
        ("timestamp", "\"0000-01-01 00:30:00+01:00\"", "0000..9999"),
        ("timestamp", "\"9999-12-31 23:30:00-01:00\"", "0000..9999"),
    ];
    for (field, value, what) in range {
        inp.bad(
            with_field(field, Some(value)),
            Want {
                reason: "invalid_invoice",
                needles: vec![field, what],
                raw: None,
            },
        );
    }
    // Items: each field missing, repeated, of the wrong type, out of range.
    let item_cases: [(&str, &'static str, &'static str); 22] = [
        (
            r#"{"title": "t", "unit_price": 1, "quantity": 1}"#,
            "SKU",
            "missing",
        ),
        (
            r#"{"SKU": "a", "unit_price": 1, "quantity": 1}"#,
            "title",
            "missing",
        ),
        (
            r#"{"SKU": "a", "title": "t", "quantity": 1}"#,
            "unit_price",
            "missing",
        ),
        (
            r#"{"SKU": "a", "title": "t", "unit_price": 1}"#,
            "quantity",
            "missing",
        ),
        (
            r#"{"SKU": "a", "SKU": "a", "title": "t", "unit_price": 1, "quantity": 1}"#,
            "SKU",
            "twice",
        ),
        (
            r#"{"SKU": "a", "title": "t", "unit_price": 1, "unit_price": 1, "quantity": 1}"#,
            "unit_price",
            "twice",
        ),
        (
            r#"{"SKU": "a", "title": "t", "unit_price": 1, "quantity": 1, "quantity": 1}"#,
            "quantity",
            "twice",
        ),
        (
            r#"{"SKU": 21485, "title": "t", "unit_price": 1, "quantity": 1}"#,
            "SKU",
            "string",
        ),
        (
            r#"{"SKU": "a", "title": null, "unit_price": 1, "quantity": 1}"#,
            "title",
            "string",
        ),
        (
            r#"{"SKU": "a", "title": "t", "unit_price": "4.95", "quantity": 1}"#,
            "unit_price",
            "4.95",
        ),
        (
            r#"{"SKU": "a", "title": "t", "unit_price": 1, "quantity": "6"}"#,
            "quantity",
            "6",
        ),
        (
            r#"{"SKU": "a", "title": "t", "unit_price": 4.95, "quantity": 3.0}"#,
            "quantity",
            "3.0",
        ),
        (
            r#"{"SKU": "a", "title": "t", "unit_price": 4.95, "quantity": -0}"#,
            "quantity",
            "-0",
        ),
        (
            r#"{"SKU": "a", "title": "t", "unit_price": 4.95, "quantity": -1}"#,
            "quantity",
            "-1",
        ),
        (
            r#"{"SKU": "a", "title": "t", "unit_price": 4.95, "quantity": 1e2}"#,
            "quantity",
            "1e2",
        ),
        (
            r#"{"SKU": "a", "title": "t", "unit_price": 4.95, "quantity": 1000000001}"#,
            "quantity",
            "1000000000",
        ),
        (
            r#"{"SKU": "a", "title": "t", "unit_price": 4.95001, "quantity": 1}"#,
            "unit_price",
            "4 decimal places",
        ),
        (
            r#"{"SKU": "a", "title": "t", "unit_price": 0.30000000000000004, "quantity": 1}"#,
            "unit_price",
            "4 decimal places",
        ),
        (
            r#"{"SKU": "a", "title": "t", "unit_price": 1e-5, "quantity": 1}"#,
            "unit_price",
            "4 decimal places",
        ),
        (
            r#"{"SKU": "a", "title": "t", "unit_price": -1, "quantity": 1}"#,
            "unit_price",
            "negative",
        ),
        (
            r#"{"SKU": "a", "title": "t", "unit_price": 1000000000.0001, "quantity": 1}"#,
            "unit_price",
            "1000000000",
        ),
        (
            r#"{"SKU": "a", "title": "t", "unit_price": 1e400, "quantity": 1}"#,
            "unit_price",
            "1000000000",
        ),
    ];
    for (it, field, what) in item_cases {
        inp.bad(
            with_item(it),
            Want {
                reason: "invalid_invoice",
                needles: vec![field, what],
                raw: None,
            },
        );
    }
    // Invoice fields are checked before the number of items (§7 order).
    inp.bad(
        invoice(
            "",
            ts,
            "order",
            "United Kingdom",
            &items_of(10_001, "0", "1"),
        ),
        want("invalid_invoice", &["type"]),
    );
    // An item with a bad price after 10,001 items: invalid_invoice, not too_large.
    inp.bad(
        invoice(
            "",
            ts,
            "ORDER",
            "United Kingdom",
            &items_of(10_001, "0", "1").replace(
                "}]",
                "},{\"SKU\":\"a\",\"title\":\"b\",\"unit_price\":-1,\"quantity\":1}]",
            ),
        ),
        want("invalid_invoice", &["unit_price", "negative"]),
    );

    let bytes = inp.bytes();
    let r = run(&bytes, &[]);
    check_sink(&r, &inp);

    // Counters per reason, and the valid lines still count.
    let c = counters(&r.state);
    let n = |reason: &str| inp.rejected.values().filter(|w| w.reason == reason).count() as u64;
    assert_eq!(c["(read)"], inp.lines.len() as u64);
    assert_eq!(c["(accepted)"], 7);
    for reason in [
        "too_large",
        "invalid_utf8",
        "invalid_json",
        "invalid_invoice",
        "late",
    ] {
        assert!(n(reason) > 0, "{reason} not covered");
        assert_eq!(c[reason], n(reason), "counter of {reason}");
    }
    assert_eq!(c["future_timestamp"], 0);
    assert_eq!(c["window_closed"], 0);
    assert_eq!(c["(accepted)"] + inp.rejected.len() as u64, c["(read)"]);

    // Window 10:54: V2 alone. Window 10:55: V1 30.54, V3 −5, V4 1, V5 0, V6 1.1, V7 0.0003
    // = 27.6403 over 6 invoices (4.606716.. -> 4.6067), 1 return in 6 (0.1667), items
    // 8+2+1+10000+1+3 = 10015. By country: EIRE is V3; United Kingdom the other five:
    // 32.6403, 10013 items.
    let files = harness::kpi_files(&r.out);
    let names: Vec<&str> = files.keys().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "country_kpi/2020-09-18T10-50.json",
            "time_kpi/2020-09-18T10-50.json"
        ]
    );
    let w54 = ("2020-09-18T10:54:00Z", "2020-09-18T10:55:00Z");
    let w55 = ("2020-09-18T10:55:00Z", "2020-09-18T10:56:00Z");
    let time = time_row(w54.0, w54.1, "\"OPM\":1,\"total_sale_volume\":10,\"average_transaction_size\":10,\"rate_of_return\":0,\"orders\":1,\"returns\":0,\"total_items\":1")
        + &time_row(w55.0, w55.1, "\"OPM\":6,\"total_sale_volume\":27.6403,\"average_transaction_size\":4.6067,\"rate_of_return\":0.1667,\"orders\":5,\"returns\":1,\"total_items\":10015");
    let country = time_row(w54.0, w54.1, "\"country\":\"United Kingdom\",\"OPM\":1,\"total_sale_volume\":10,\"rate_of_return\":0,\"orders\":1,\"returns\":0,\"total_items\":1")
        + &time_row(w55.0, w55.1, "\"country\":\"EIRE\",\"OPM\":1,\"total_sale_volume\":-5,\"rate_of_return\":1,\"orders\":0,\"returns\":1,\"total_items\":2")
        + &time_row(w55.0, w55.1, "\"country\":\"United Kingdom\",\"OPM\":5,\"total_sale_volume\":32.6403,\"rate_of_return\":0,\"orders\":5,\"returns\":0,\"total_items\":10013");
    assert_eq!(
        String::from_utf8_lossy(&files["time_kpi/2020-09-18T10-50.json"]),
        time
    );
    assert_eq!(
        String::from_utf8_lossy(&files["country_kpi/2020-09-18T10-50.json"]),
        country
    );
}

/// Lines the limit flags decide: at a limit is accepted, one over is `too_large`.
#[test]
fn limits_are_configurable_by_flag() {
    let ts = "2020-09-18 10:55:30";
    let one = format!("[{}]", item("1", "1"));
    let base = invoice("", ts, "ORDER", "United Kingdom", &one);
    let lines = [
        padded(&base, 300),                                                 // 0: 300 bytes
        padded(&base, 301),                                                 // 1: 301 bytes
        invoice("", ts, "ORDER", "United Kingdom", &items_of(2, "1", "1")), // 2: 2 items
        invoice("", ts, "ORDER", "United Kingdom", &items_of(3, "1", "1")), // 3: 3 items
        // 4: 3 items and 301 bytes: the size is checked first
        padded(
            &invoice("", ts, "ORDER", "United Kingdom", &items_of(3, "1", "1")),
            301,
        ),
    ];
    assert!(
        lines[2].len() <= 300 && lines[3].len() <= 300,
        "{}",
        lines[3].len()
    );
    let mut bytes = lines.join("\n").into_bytes();
    bytes.push(b'\n');

    // Defaults (1 MiB, 10,000 items): all five are accepted.
    let r = run(&bytes, &[]);
    assert!(read_rejected(&r.out).is_empty());
    let time = &harness::kpi_files(&r.out)["time_kpi/2020-09-18T10-50.json"];
    assert!(
        String::from_utf8_lossy(time).contains("\"OPM\":5,"),
        "{}",
        String::from_utf8_lossy(time)
    );

    // Tight limits by flag: lines 1, 3 and 4 are refused, each for its own limit.
    let r = run(&bytes, &["--max-record-bytes", "300", "--max-items", "2"]);
    let sunk = read_rejected(&r.out);
    let got: Vec<(i64, &str)> = sunk.iter().map(|(o, s)| (*o, s.reason.as_str())).collect();
    assert_eq!(got, [(1, "too_large"), (3, "too_large"), (4, "too_large")]);
    assert!(sunk[&1].message.contains("301 bytes"), "{:?}", sunk[&1]);
    assert!(
        sunk[&1].message.contains("max_record_bytes"),
        "{:?}",
        sunk[&1]
    );
    assert!(sunk[&3].message.contains("3 items"), "{:?}", sunk[&3]);
    assert!(sunk[&3].message.contains("max_items"), "{:?}", sunk[&3]);
    assert!(
        sunk[&4].message.contains("max_record_bytes"),
        "{:?}",
        sunk[&4]
    );
    for (o, s) in &sunk {
        assert_eq!(s.raw, lines[*o as usize]);
        assert_eq!(s.raw_bytes, lines[*o as usize].len() as u64);
    }
    let time = &harness::kpi_files(&r.out)["time_kpi/2020-09-18T10-50.json"];
    assert!(
        String::from_utf8_lossy(time).contains("\"OPM\":2,"),
        "{}",
        String::from_utf8_lossy(time)
    );
    let c = counters(&r.state);
    assert_eq!((c["(read)"], c["(accepted)"], c["too_large"]), (5, 2, 3));

    // The environment sets them too (flags win over it, SPEC §8).
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, &bytes).unwrap();
    let res = owned_command(env!("CARGO_BIN_EXE_retail-kpi"))
        .arg("run")
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .args(["--max-items", "10000"])
        .env("RETAIL_KPI_METRICS_ADDR", "off")
        .env("RETAIL_KPI_MAX_RECORD_BYTES", "300")
        .env("RETAIL_KPI_MAX_ITEMS", "2")
        .env_remove("RETAIL_KPI_CONFIG")
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let got: Vec<(i64, String)> = read_rejected(&dir.path().join("out"))
        .into_iter()
        .map(|(o, s)| (o, s.reason))
        .collect();
    // 300 bytes from the environment; the flag's 10,000 items beat the environment's 2.
    assert_eq!(got, [(1, "too_large".into()), (4, "too_large".into())]);
}

// `window_closed` cannot happen in a bounded file run: a file has one partition, so the
// watermark is that partition's M_p − G, and a record that is not late (t ≥ M_p − G) can
// never fall in a window that closed before it (closed windows end at or before the
// watermark); the idle rules of SPEC §4 that could close a window early apply to live Kafka
// runs only, and the end of the file closes everything after the last record. It is reached
// below through the engine's library API (the all-idle wall-clock rule), like the unit test
// in src/aggregate/mod.rs; no test with real brokers produces one yet (`tests/idle.rs` asserts
// that its cases produce none).
//
// `future_timestamp` needs a broker timestamp, which a file does not have. It is covered
// here through the engine's library API with `SourceRecord::timestamp_ms`; with real
// brokers, `tests/kafka.rs` produces `--bad-fraction` records, among them some whose event
// time is 2 h ahead of their CreateTime (src/generate/mod.rs), and checks the rejected sink
// against the reference; src/source/kafka.rs hands the broker timestamp (CreateTime or
// LogAppendTime, negative = none) to the engine.

fn line_at(ts: &str) -> String {
    invoice("", ts, "ORDER", "UK", &format!("[{}]", item("2.5", "2")))
}

fn ms(ts: &str) -> i64 {
    (parse_timestamp(ts).unwrap() / 1_000_000) as i64
}

#[test]
fn future_timestamp_through_the_engine() {
    let mut e = Engine::new(EngineConfig::default());
    let mut intake = Intake::new(JsonInvoiceDecoder::default(), "invoices");
    e.assign([0, 3]);
    let v_future = line_at("2020-09-18 11:00:00.001");
    let v_edge = line_at("2020-09-18 11:00:00");
    let v_bad = line_at("2020-09-18 11:00:00.001").replace("ORDER", "order");
    let broker = ms("2020-09-18 10:00:00");
    let mut feed = |e: &mut Engine, p: u32, off: i64, ts: Option<i64>, v: &str| {
        intake
            .process(
                e,
                SourceRecord {
                    partition: p,
                    offset: off,
                    timestamp_ms: ts,
                    value: v.as_bytes(),
                    full_len: None,
                },
            )
            .is_some()
    };
    // 1 ms more than max_future_skew (1 h) ahead of the broker timestamp: refused.
    assert!(!feed(&mut e, 3, 41, Some(broker), &v_future));
    // Exactly 1 h ahead: accepted; so is a record without a timestamp, or a negative one.
    assert!(feed(&mut e, 3, 42, Some(broker), &v_edge));
    assert!(feed(&mut e, 0, 7, None, &v_future));
    assert!(feed(&mut e, 0, 8, Some(-1), &v_future));
    // Invoice fields are checked before the future guard.
    assert!(!feed(&mut e, 0, 9, Some(broker), &v_bad));
    // A refused record never moves M_p: partition 3 is still at 11:00:00 exactly, so an
    // invoice at 10:59:00 is on time there.
    assert!(feed(&mut e, 3, 43, None, &line_at("2020-09-18 10:59:00")));
    let c = e.counters();
    assert_eq!(c.rejected[Reason::FutureTimestamp.index()], 1);
    assert_eq!(c.rejected[Reason::InvalidInvoice.index()], 1);
    assert_eq!((c.read, c.accepted), (6, 4));

    let rejected = intake.take_rejected();
    assert_eq!(rejected.len(), 2);
    let r = &rejected[0];
    assert_eq!(
        (r.topic.as_str(), r.partition, r.offset, r.reason),
        ("invoices", 3, 41, Reason::FutureTimestamp)
    );
    assert!(r.message.contains("max_future_skew"), "{}", r.message);
    assert!(
        r.message.contains("2020-09-18 11:00:00.001"),
        "{}",
        r.message
    );
    assert_eq!(r.raw, v_future.as_bytes());
    assert_eq!(rejected[1].reason, Reason::InvalidInvoice);
    let line = String::from_utf8(render_rejected(&rejected[..1])).unwrap();
    let want = format!(
        "{{\"topic\":\"invoices\",\"partition\":3,\"offset\":41,\"reason\":\"future_timestamp\",\"message\":{},\"raw\":{},\"raw_bytes\":{}}}\n",
        serde_json::to_string(&r.message).unwrap(),
        serde_json::to_string(&v_future).unwrap(),
        v_future.len()
    );
    assert_eq!(line, want);
}

#[test]
fn window_closed_through_the_engine() {
    // One partition; when it is idle (as a live Kafka run may find it), W moves on with
    // the wall clock: W = M_p − G + (time since it became idle).
    let mut e = Engine::new(EngineConfig::default());
    let mut intake = Intake::new(JsonInvoiceDecoder::default(), "invoices");
    e.assign([0]);
    let mut feed = |e: &mut Engine, off: i64, ts: &str| {
        let v = line_at(ts);
        intake
            .process(
                e,
                SourceRecord {
                    partition: 0,
                    offset: off,
                    timestamp_ms: None,
                    value: v.as_bytes(),
                    full_len: None,
                },
            )
            .is_some()
    };
    let none = std::collections::BTreeSet::new();
    let idle = std::collections::BTreeSet::from([0]);
    assert!(feed(&mut e, 0, "2020-09-18 10:00:30"));
    assert!(feed(&mut e, 1, "2020-09-18 10:00:59.999"));
    e.advance(Some(0), &none); // a record just came: W = M_p − G = 09:59:59.999
    e.advance(Some(1_000), &idle); // idle from now on: W = 09:59:59.999
    e.advance(Some(60_000), &idle); // W = 10:00:58.999: window 10:00 still open
    assert!(
        feed(&mut e, 2, "2020-09-18 10:00:00"),
        "window 10:00 is open"
    );
    e.advance(Some(60_001), &none);
    e.advance(Some(70_000), &idle);
    e.advance(Some(131_000), &idle); // W = 09:59:59.999 + 61 s = 10:01:00.999
                                     // Not late (M_p − G = 09:59:59.999), but its window has closed: window_closed.
    assert!(!feed(&mut e, 3, "2020-09-18 10:00:00"));
    let c = e.counters();
    assert_eq!(c.rejected[Reason::WindowClosed.index()], 1);
    assert_eq!((c.read, c.accepted, c.rejected_total()), (4, 3, 1));
    let rejected = intake.take_rejected();
    assert_eq!(rejected.len(), 1);
    let r = &rejected[0];
    assert_eq!(
        (r.partition, r.offset, r.reason),
        (0, 3, Reason::WindowClosed)
    );
    assert!(r.message.contains("2020-09-18T10:00:00Z"), "{}", r.message);
    assert!(r.message.contains("closed"), "{}", r.message);
}

/// SPEC §2: a window's totals cannot overflow at 10^9 invoices per window, each at the
/// limits that parsing enforces (10,000 items of price 10^9 and quantity 10^9). The worst
/// invoice is parsed for real, then 2^30 (> 10^9) copies are summed by doubling through
/// `WindowAgg`, and every total is compared with the value computed by hand in checked
/// arithmetic. Release builds do not trap on overflow, so a wrap would show as a wrong sum.
#[test]
fn window_totals_cannot_overflow_at_the_enforced_limits() {
    let limits = Limits::default();
    assert_eq!((limits.max_record_bytes, limits.max_items), (MIB, 10_000));
    assert_eq!(MAX_QUANTITY, 1_000_000_000);
    assert_eq!(MAX_UNIT_PRICE, 1_000_000_000 * SCALE);
    // The limits are enforced: one unit over each is refused.
    let one = |p: &str, q: &str| {
        let line = with_item(&format!(
            r#"{{"SKU":"a","title":"b","unit_price":{p},"quantity":{q}}}"#
        ));
        parse_invoice(line.as_bytes(), &limits).map(|i| i.total_cost)
    };
    assert_eq!(
        one("1000000000", "1000000000"),
        Ok(Money(1_000_000_000 * 1_000_000_000 * 10_000))
    );
    assert_eq!(
        one("1000000000.0001", "1").unwrap_err().reason,
        Reason::InvalidInvoice
    );
    assert_eq!(
        one("1e9", "1000000001").unwrap_err().reason,
        Reason::InvalidInvoice
    );

    // The worst invoice at the default limits, both kinds: it fits in 1 MiB.
    let mut windows = Vec::new();
    for kind in ["ORDER", "RETURN"] {
        let line = invoice(
            "",
            "9999-12-31 23:59:59.999999999",
            kind,
            "X",
            &items_of(10_000, "1000000000", "1000000000"),
        );
        assert!(line.len() <= MIB, "{}", line.len());
        let inv = parse_invoice(line.as_bytes(), &limits).unwrap();
        // 10^4 × 10^9 × 10^9 units = 10^22 units = 10^26 ten-thousandths.
        let cost: i128 = 10i128.pow(26);
        assert_eq!(inv.total_items, 10u64.pow(13));
        assert_eq!(
            inv.total_cost,
            Money(if kind == "ORDER" { cost } else { -cost })
        );
        let mut w = WindowAgg::default();
        w.add(&inv);
        for _ in 0..30 {
            let copy = w.world;
            w.world.merge(&copy);
            let c = w.countries.get_mut("X").unwrap();
            let copy = *c;
            c.merge(&copy);
        }
        let n: u64 = 1 << 30;
        assert!(n > 1_000_000_000);
        let items = (n as u128).checked_mul(10u128.pow(13)).unwrap();
        let volume = (n as i128).checked_mul(cost).unwrap();
        // Over 1,000 times more room than this worst window needs.
        assert!(i128::MAX / volume > 1_000);
        assert!(u128::MAX / items > 10u128.pow(15));
        for a in [&w.world, &w.countries["X"]] {
            assert_eq!(a.opm, n);
            assert_eq!(a.total_items, items);
            if kind == "ORDER" {
                assert_eq!((a.orders, a.returns, a.volume), (n, 0, Money(volume)));
            } else {
                assert_eq!((a.orders, a.returns, a.volume), (0, n, Money(-volume)));
            }
        }
        windows.push((kind, w));
    }
    // And the row prints exactly: 2^30 × 10^22 = 10737418240000000000000000000000, the
    // average 10^22; the window of year 9999 ends at 10000-01-01.
    let (_, order) = &windows[0];
    let start = (parse_timestamp("9999-12-31 23:59:00").unwrap() / NANOS_PER_SEC) as i64;
    let row = String::from_utf8(render_bucket(Family::Time, &[(start, order)])).unwrap();
    assert_eq!(
        row,
        "{\"window\":{\"start\":\"9999-12-31T23:59:00Z\",\"end\":\"10000-01-01T00:00:00Z\"},\"OPM\":1073741824,\"total_sale_volume\":10737418240000000000000000000000,\"average_transaction_size\":10000000000000000000000,\"rate_of_return\":0,\"orders\":1073741824,\"returns\":0,\"total_items\":10737418240000000000000}\n"
    );
    let (_, ret) = &windows[1];
    let row = String::from_utf8(render_bucket(Family::Country, &[(start, ret)])).unwrap();
    assert_eq!(
        row,
        "{\"window\":{\"start\":\"9999-12-31T23:59:00Z\",\"end\":\"10000-01-01T00:00:00Z\"},\"country\":\"X\",\"OPM\":1073741824,\"total_sale_volume\":-10737418240000000000000000000000,\"rate_of_return\":1,\"orders\":0,\"returns\":1073741824,\"total_items\":10737418240000000000000}\n"
    );
}

/// The item limit is configurable; whatever it is set to, a record's size bounds the
/// items too. The smallest item at the largest price and quantity takes 61 bytes with its
/// comma, so a 1 MiB record holds at most 17,189 of them: with `--max-items` raised to its largest
/// value, the worst window (10^9 such invoices) still fits in i128 with room to spare.
#[test]
fn record_size_bounds_the_items_whatever_max_items_says() {
    let smallest = r#"{"SKU":"","title":"","unit_price":1e9,"quantity":1000000000},"#;
    assert_eq!(smallest.len(), 61);
    let limits = Limits {
        max_record_bytes: MIB,
        max_items: u64::MAX,
    };
    let items = MIB / smallest.len(); // 17,189
    let body = |n: usize| {
        let one = &smallest[..smallest.len() - 1];
        invoice(
            "",
            "2020-09-18 10:55:30",
            "ORDER",
            "X",
            &format!("[{}]", vec![one; n].join(",")),
        )
    };
    // The most that fit under 1 MiB with the rest of the invoice.
    let mut n = items;
    while body(n).len() > MIB {
        n -= 1;
    }
    let line = body(n);
    let inv = parse_invoice(line.as_bytes(), &limits).unwrap();
    assert_eq!(inv.item_count, n as u64);
    assert_eq!(
        parse_invoice(body(n + 1).as_bytes(), &limits)
            .unwrap_err()
            .reason,
        Reason::TooLarge
    );
    let worst_window = (inv.total_cost.0).checked_mul(1_000_000_000).unwrap();
    // 17,187 items × 10^22 × 10^9 invoices ≈ 1.72 × 10^35: room to spare 989 times over.
    assert_eq!(
        worst_window,
        171_870_000_000_000_000_000_000_000_000_000_000
    );
    assert_eq!(i128::MAX / worst_window, 989);
}

// ---------------------------------------------------------------------------------------
// REGRESSION TESTS FOR BUGS FOUND BY FUZZING (fuzz/fuzz_targets/parse_invoice.rs, which
// compares the parser with the independent reference of tests/support/src/reference.rs).
// F1-F3 were fixed in src/invoice.rs (`classify`, the key visitor, the used-strings
// check); these tests keep them fixed.
// ---------------------------------------------------------------------------------------

fn reason_of(line: &str) -> Result<(), (Reason, String)> {
    parse_invoice(line.as_bytes(), &Limits::default())
        .map(|_| ())
        .map_err(|r| (r.reason, r.message))
}

/// F1: a number beyond the range of f64 is still JSON (RFC 8259 sets no limit); where the
/// invoice wants an object, a string or an array, it is a value of the wrong type:
/// `invalid_invoice` (SPEC §7). serde_json reports "number out of range" in its syntax
/// category, so `classify` says `invalid_json`.
#[test]
fn regression_f1_huge_number_of_the_wrong_type_is_invalid_invoice() {
    assert!(matches!(
        reason_of("1e400"),
        Err((Reason::InvalidInvoice, _))
    ));
    let line = with_field("country", Some("1e400"));
    match reason_of(&line) {
        Err((Reason::InvalidInvoice, m)) => assert!(m.contains("country"), "{m}"),
        other => panic!("{other:?}"),
    }
    let line = with_field("items", Some("-1e400"));
    assert!(matches!(reason_of(&line), Err((Reason::InvalidInvoice, _))));
}

/// F2: SPEC §7 runs the JSON check (which includes a lone surrogate escape in a string
/// the invoice uses) before the invoice fields. When a field that comes first in the
/// record is wrong, the parser stops there and re-checks the syntax with `IgnoredAny`,
/// which lets lone surrogates through: `invalid_invoice` instead of `invalid_json`.
#[test]
fn regression_f2_lone_surrogate_after_a_bad_field_is_invalid_json() {
    let line = r#"{"type": "order", "invoice_no": 1, "country": "\ud800", "timestamp": "2020-09-18 10:55:30", "items": []}"#;
    assert!(
        matches!(reason_of(line), Err((Reason::InvalidJson, _))),
        "{:?}",
        reason_of(line)
    );
    let line = with_field("invoice_no", Some("-1")).replace("HOT WATER BOTTLE", "\\udc00");
    assert!(
        matches!(reason_of(&line), Err((Reason::InvalidJson, _))),
        "{:?}",
        reason_of(&line)
    );
}

/// F3: SPEC §1 "Unknown fields are ignored, whatever they hold", and §7 makes a lone
/// surrogate `invalid_json` only "in a string the invoice uses". The parser decodes every
/// key as a `str`, so a lone surrogate in the key of an unknown field refuses a valid
/// invoice as `invalid_json` (the reference, like SPEC, ignores the field). A fix: read
/// keys without validating escapes (serde_json's `deserialize_bytes` on a key) and compare
/// the bytes with the field names.
#[test]
fn regression_f3_lone_surrogate_in_an_unknown_key_is_ignored() {
    let good = with_field("country", Some("\"EIRE\""));
    let line = good.replacen('{', r#"{"\ud800": 1, "#, 1);
    assert_eq!(reason_of(&line), Ok(()));
    let line = good.replacen("\"SKU\"", r#""x\udfff": [], "SKU""#, 1);
    assert_eq!(reason_of(&line), Ok(()));
}

/// F4 (fuzzing, 2026-12-03): a lone surrogate in a string the invoice does not use is JSON
/// the invoice ignores (SPEC §7). The check of the used strings decoded the record's top
/// value, and each element of `items`, whatever it was, so a top-level string or a string
/// element of `items` with a lone surrogate was `invalid_json` where it is
/// `invalid_invoice` (not an object; an item that is not an object). Found by the
/// `parse_invoice` target on `"it{r\ud83d\ued00"`.
#[test]
fn regression_f4_lone_surrogate_in_an_unused_string_is_not_invalid_json() {
    let top = r#""it{r\ud83d\ued00""#;
    assert!(
        matches!(reason_of(top), Err((Reason::InvalidInvoice, _))),
        "{:?}",
        reason_of(top)
    );
    let line = with_field("items", Some(r#"["\ud800"]"#));
    assert!(
        matches!(reason_of(&line), Err((Reason::InvalidInvoice, _))),
        "{:?}",
        reason_of(&line)
    );
    // Still invalid_json where the invoice uses the string, after a field that failed.
    let line = with_field("items", Some(r#"[{"SKU": 1, "title": "\ud800"}]"#));
    assert!(
        matches!(reason_of(&line), Err((Reason::InvalidJson, _))),
        "{:?}",
        reason_of(&line)
    );
    // unit_price and quantity are used strings too when they are strings (of the wrong type).
    let line = with_field(
        "items",
        Some(r#"[{"SKU": "1", "title": "t", "unit_price": "\ud800", "quantity": 1}]"#),
    );
    assert!(
        matches!(reason_of(&line), Err((Reason::InvalidJson, _))),
        "{:?}",
        reason_of(&line)
    );
    let line = with_field("items", Some(r#""\udc00""#));
    assert!(
        matches!(reason_of(&line), Err((Reason::InvalidJson, _))),
        "{:?}",
        reason_of(&line)
    );
}
