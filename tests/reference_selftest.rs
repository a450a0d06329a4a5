// Self-tests of the reference computation (`tests/support/src/reference.rs`).
// Every expected value below is computed by hand from SPEC.md, never printed by the code.

use std::collections::BTreeMap;
use test_support::reference::*;

// ----------------------------------------------------------------------------- helpers

/// One invoice line; `items` are (unit_price JSON text, quantity JSON text).
fn inv(country: &str, ts: &str, typ: &str, items: &[(&str, &str)]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|(p, q)| {
            format!(r#"{{"SKU":"21485","title":"RETROSPOT","unit_price":{p},"quantity":{q}}}"#)
        })
        .collect();
    format!(
        r#"{{"invoice_no":154132541653705,"country":{},"timestamp":"{ts}","type":"{typ}","items":[{}]}}"#,
        serde_json::to_string(country).unwrap(),
        items.join(",")
    )
}

fn rec(partition: u32, offset: i64, ts: Option<i64>, value: &str) -> RefRecord {
    RefRecord {
        partition,
        offset,
        timestamp_ms: ts,
        value: value.as_bytes().to_vec(),
    }
}

/// Runs the given invoice lines as partition 0, offsets 0.., no record timestamps.
fn run(lines: &[String]) -> RefOutput {
    let recs: Vec<RefRecord> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| rec(0, i as i64, None, l))
        .collect();
    reference(&recs, &RefConfig::default())
}

/// Runs each invoice line as its own partition (offset 0), so no line can be late.
fn run_spread(lines: &[String]) -> RefOutput {
    let recs: Vec<RefRecord> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| rec(i as u32, 0, None, l))
        .collect();
    reference(&recs, &RefConfig::default())
}

fn file(out: &RefOutput, path: &str) -> String {
    String::from_utf8(
        out.files
            .get(path)
            .unwrap_or_else(|| panic!("no file {path}: {:?}", out.files.keys()))
            .clone(),
    )
    .unwrap()
}

#[allow(clippy::too_many_arguments)]
fn tline(
    start: &str,
    end: &str,
    opm: u64,
    vol: &str,
    avg: &str,
    rate: &str,
    o: u64,
    r: u64,
    items: u64,
) -> String {
    format!(
        "{{\"window\":{{\"start\":\"{start}\",\"end\":\"{end}\"}},\"OPM\":{opm},\"total_sale_volume\":{vol},\"average_transaction_size\":{avg},\"rate_of_return\":{rate},\"orders\":{o},\"returns\":{r},\"total_items\":{items}}}\n"
    )
}

#[allow(clippy::too_many_arguments)]
fn cline(
    start: &str,
    end: &str,
    country_json: &str,
    opm: u64,
    vol: &str,
    rate: &str,
    o: u64,
    r: u64,
    items: u64,
) -> String {
    format!(
        "{{\"window\":{{\"start\":\"{start}\",\"end\":\"{end}\"}},\"country\":{country_json},\"OPM\":{opm},\"total_sale_volume\":{vol},\"rate_of_return\":{rate},\"orders\":{o},\"returns\":{r},\"total_items\":{items}}}\n"
    )
}

/// Reason for one record (partition 0, offset 0), None when accepted.
fn reason_cfg(value: &[u8], ts: Option<i64>, cfg: &RefConfig) -> Option<String> {
    let r = RefRecord {
        partition: 0,
        offset: 0,
        timestamp_ms: ts,
        value: value.to_vec(),
    };
    let out = reference(&[r], cfg);
    let reason = out.rejected.get(&(0, 0)).cloned();
    assert_eq!(
        reason.is_none(),
        !out.files.is_empty(),
        "accepted <=> output"
    );
    reason
}

fn reason(value: &str) -> Option<String> {
    reason_cfg(value.as_bytes(), None, &RefConfig::default())
}

const GOOD_TS: &str = "2020-09-18 10:55:23";

fn good() -> String {
    inv(
        "United Kingdom",
        GOOD_TS,
        "ORDER",
        &[("4.95", "6"), ("0.42", "2")],
    )
}

/// A valid invoice with `field` replaced by raw JSON text `raw` (or removed when None).
fn with_field(field: &str, raw: Option<&str>) -> String {
    let mut parts: Vec<(String, String)> = vec![
        ("invoice_no".into(), "154132541653705".into()),
        ("country".into(), "\"United Kingdom\"".into()),
        ("timestamp".into(), format!("\"{GOOD_TS}\"")),
        ("type".into(), "\"ORDER\"".into()),
        (
            "items".into(),
            r#"[{"SKU":"21485","title":"T","unit_price":4.95,"quantity":6}]"#.into(),
        ),
    ];
    parts.retain(|(k, _)| k != field);
    if let Some(r) = raw {
        parts.push((field.to_string(), r.to_string()));
    }
    let body: Vec<String> = parts.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}

/// A valid invoice whose single item has `field` replaced by raw text (removed when None).
fn with_item_field(field: &str, raw: Option<&str>) -> String {
    let mut parts: Vec<(String, String)> = vec![
        ("SKU".into(), "\"21485\"".into()),
        ("title".into(), "\"T\"".into()),
        ("unit_price".into(), "4.95".into()),
        ("quantity".into(), "6".into()),
    ];
    parts.retain(|(k, _)| k != field);
    if let Some(r) = raw {
        parts.push((field.to_string(), r.to_string()));
    }
    let body: Vec<String> = parts.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    with_field("items", Some(&format!("[{{{}}}]", body.join(","))))
}

// ----------------------------------------------------------------------------- output format

#[test]
fn spec_example_line_is_reproduced() {
    // 10 orders of 30.00 × 1, one order of 50.67 × 1 + 0 × 75, one return of 5 × 1:
    // volume 300 + 50.67 − 5 = 345.67, items 10 + 76 + 1 = 87, avg 345.67/12 = 28.80583.. -> 28.8058,
    // rate 1/12 = 0.08333.. -> 0.0833.
    let mut lines = Vec::new();
    for s in 0..10 {
        lines.push(inv(
            "United Kingdom",
            &format!("2020-09-18 10:55:{s:02}"),
            "ORDER",
            &[("30.00", "1")],
        ));
    }
    lines.push(inv(
        "United Kingdom",
        "2020-09-18 10:55:40",
        "ORDER",
        &[("50.67", "1"), ("0", "75")],
    ));
    lines.push(inv(
        "United Kingdom",
        "2020-09-18 10:55:59.999",
        "RETURN",
        &[("5", "1")],
    ));
    let out = run(&lines);
    assert!(out.rejected.is_empty());
    assert_eq!(out.files.len(), 2);
    assert_eq!(
        file(&out, "time_kpi/2020-09-18T10-50.json"),
        "{\"window\":{\"start\":\"2020-09-18T10:55:00Z\",\"end\":\"2020-09-18T10:56:00Z\"},\"OPM\":12,\"total_sale_volume\":345.67,\"average_transaction_size\":28.8058,\"rate_of_return\":0.0833,\"orders\":11,\"returns\":1,\"total_items\":87}\n"
    );
    assert_eq!(
        file(&out, "country_kpi/2020-09-18T10-50.json"),
        "{\"window\":{\"start\":\"2020-09-18T10:55:00Z\",\"end\":\"2020-09-18T10:56:00Z\"},\"country\":\"United Kingdom\",\"OPM\":12,\"total_sale_volume\":345.67,\"rate_of_return\":0.0833,\"orders\":11,\"returns\":1,\"total_items\":87}\n"
    );
}

#[test]
fn spec_section1_example_invoice() {
    // 4.95 × 6 + 0.42 × 2 = 29.70 + 0.84 = 30.54; items 8.
    let out = run(&[good()]);
    assert_eq!(
        file(&out, "time_kpi/2020-09-18T10-50.json"),
        tline(
            "2020-09-18T10:55:00Z",
            "2020-09-18T10:56:00Z",
            1,
            "30.54",
            "30.54",
            "0",
            1,
            0,
            8
        )
    );
    assert_eq!(
        file(&out, "country_kpi/2020-09-18T10-50.json"),
        cline(
            "2020-09-18T10:55:00Z",
            "2020-09-18T10:56:00Z",
            "\"United Kingdom\"",
            1,
            "30.54",
            "0",
            1,
            0,
            8
        )
    );
}

// ----------------------------------------------------------------------------- windows, buckets

#[test]
fn window_boundaries_and_buckets() {
    let lines = vec![
        inv("A", "2020-09-18 10:55:59.999", "ORDER", &[("1", "1")]),
        inv("A", "2020-09-18T10:56:00Z", "ORDER", &[("2", "1")]),
        inv("A", "2020-09-18 10:49:59.999999999", "ORDER", &[("3", "1")]),
        inv("A", "2020-09-18 10:50:00", "ORDER", &[("4", "1")]),
        inv("A", "2020-09-18 10:59:59.999", "ORDER", &[("5", "1")]),
        inv("A", "2020-09-18 11:00:00", "ORDER", &[("6", "1")]),
        // 12:55:30 at +02:00 is 10:55:30Z
        inv("A", "2020-09-18T12:55:30+02:00", "ORDER", &[("7", "1")]),
        // 23:30 at −01:00 is 00:30Z of the next day
        inv("A", "2020-09-18T23:30:00-01:00", "ORDER", &[("8", "1")]),
    ];
    let out = run_spread(&lines);
    assert!(out.rejected.is_empty());
    let names: Vec<&str> = out.files.keys().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "country_kpi/2020-09-18T10-40.json",
            "country_kpi/2020-09-18T10-50.json",
            "country_kpi/2020-09-18T11-00.json",
            "country_kpi/2020-09-19T00-30.json",
            "time_kpi/2020-09-18T10-40.json",
            "time_kpi/2020-09-18T10-50.json",
            "time_kpi/2020-09-18T11-00.json",
            "time_kpi/2020-09-19T00-30.json",
        ]
    );
    assert_eq!(
        file(&out, "time_kpi/2020-09-18T10-40.json"),
        tline(
            "2020-09-18T10:49:00Z",
            "2020-09-18T10:50:00Z",
            1,
            "3",
            "3",
            "0",
            1,
            0,
            1
        )
    );
    // sorted by window start; 10:55 holds 1 + 7
    let expected = [
        tline(
            "2020-09-18T10:50:00Z",
            "2020-09-18T10:51:00Z",
            1,
            "4",
            "4",
            "0",
            1,
            0,
            1,
        ),
        tline(
            "2020-09-18T10:55:00Z",
            "2020-09-18T10:56:00Z",
            2,
            "8",
            "4",
            "0",
            2,
            0,
            2,
        ),
        tline(
            "2020-09-18T10:56:00Z",
            "2020-09-18T10:57:00Z",
            1,
            "2",
            "2",
            "0",
            1,
            0,
            1,
        ),
        tline(
            "2020-09-18T10:59:00Z",
            "2020-09-18T11:00:00Z",
            1,
            "5",
            "5",
            "0",
            1,
            0,
            1,
        ),
    ]
    .concat();
    assert_eq!(file(&out, "time_kpi/2020-09-18T10-50.json"), expected);
    assert_eq!(
        file(&out, "time_kpi/2020-09-18T11-00.json"),
        tline(
            "2020-09-18T11:00:00Z",
            "2020-09-18T11:01:00Z",
            1,
            "6",
            "6",
            "0",
            1,
            0,
            1
        )
    );
    assert_eq!(
        file(&out, "time_kpi/2020-09-19T00-30.json"),
        tline(
            "2020-09-19T00:30:00Z",
            "2020-09-19T00:31:00Z",
            1,
            "8",
            "8",
            "0",
            1,
            0,
            1
        )
    );
}

#[test]
fn windows_before_1970_and_at_the_year_limits() {
    let lines = vec![
        inv("A", "1969-12-31 23:59:59.5", "ORDER", &[("1", "1")]),
        inv("A", "1969-12-31T23:50:00Z", "ORDER", &[("2", "1")]),
        inv("A", "1969-12-31 23:49:59.999", "ORDER", &[("3", "1")]),
        inv("A", "0000-01-01 00:00:00", "ORDER", &[("4", "1")]),
        inv("A", "0000-02-29 12:09:00", "ORDER", &[("5", "1")]), // year 0 is a leap year
        inv("A", "9999-12-31 23:59:30Z", "ORDER", &[("6", "1")]),
    ];
    let out = run_spread(&lines);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(
        file(&out, "time_kpi/1969-12-31T23-50.json"),
        [
            tline(
                "1969-12-31T23:50:00Z",
                "1969-12-31T23:51:00Z",
                1,
                "2",
                "2",
                "0",
                1,
                0,
                1
            ),
            tline(
                "1969-12-31T23:59:00Z",
                "1970-01-01T00:00:00Z",
                1,
                "1",
                "1",
                "0",
                1,
                0,
                1
            ),
        ]
        .concat()
    );
    assert_eq!(
        file(&out, "time_kpi/1969-12-31T23-40.json"),
        tline(
            "1969-12-31T23:49:00Z",
            "1969-12-31T23:50:00Z",
            1,
            "3",
            "3",
            "0",
            1,
            0,
            1
        )
    );
    assert_eq!(
        file(&out, "time_kpi/0000-01-01T00-00.json"),
        tline(
            "0000-01-01T00:00:00Z",
            "0000-01-01T00:01:00Z",
            1,
            "4",
            "4",
            "0",
            1,
            0,
            1
        )
    );
    assert_eq!(
        file(&out, "time_kpi/0000-02-29T12-00.json"),
        tline(
            "0000-02-29T12:09:00Z",
            "0000-02-29T12:10:00Z",
            1,
            "5",
            "5",
            "0",
            1,
            0,
            1
        )
    );
    // Reference's choice (SPEC silent): the end of the last window prints a 5-digit year.
    assert_eq!(
        file(&out, "time_kpi/9999-12-31T23-50.json"),
        tline(
            "9999-12-31T23:59:00Z",
            "10000-01-01T00:00:00Z",
            1,
            "6",
            "6",
            "0",
            1,
            0,
            1
        )
    );
    assert_eq!(out.files.len(), 10);
}

#[test]
fn helpers_windows_and_names() {
    // 2020-09-18T00:00:00Z = 18523 days after the epoch = 1_600_387_200 s.
    let ns = parse_timestamp_ns("2020-09-18 10:55:23").unwrap();
    assert_eq!(ns, 1_600_426_523 * 1_000_000_000);
    assert_eq!(window_minute(ns), 1_600_426_500 / 60);
    assert_eq!(format_minute(1_600_426_500 / 60), "2020-09-18T10:55:00Z");
    assert_eq!(bucket_name(1_600_426_500 / 60), "2020-09-18T10-50");
    assert_eq!(window_minute(-1), -1);
    assert_eq!(window_minute(-60_000_000_000), -1);
    assert_eq!(window_minute(-60_000_000_001), -2);
    assert_eq!(format_minute(-1), "1969-12-31T23:59:00Z");
    assert_eq!(bucket_name(-1), "1969-12-31T23-50");
    assert_eq!(bucket_name(-10), "1969-12-31T23-50");
    assert_eq!(bucket_name(-11), "1969-12-31T23-40");
    assert_eq!(
        parse_timestamp_ns("1969-12-31T23:59:59.5Z"),
        Some(-500_000_000)
    );
    assert_eq!(
        parse_timestamp_ns("1970-01-01T00:00:00+01:00"),
        Some(-3_600_000_000_000)
    );
    assert_eq!(
        parse_timestamp_ns("1970-01-01T00:00:00-00:30"),
        Some(1_800_000_000_000)
    );
    assert_eq!(parse_timestamp_ns("1970-01-01 00:00:00.000000001"), Some(1));
    assert_eq!(
        parse_timestamp_ns("1970-01-01 00:00:00.1"),
        Some(100_000_000)
    );
    assert_eq!(
        parse_timestamp_ns("0000-01-01T00:00:00Z"),
        Some(-62_167_219_200 * 1_000_000_000)
    );
    assert_eq!(
        parse_timestamp_ns("9999-12-31T23:59:59.999999999z"),
        Some(253_402_300_799 * 1_000_000_000 + 999_999_999)
    );
}

// ----------------------------------------------------------------------------- numbers

#[test]
fn half_to_even_and_money_helpers() {
    // units of 1/10_000
    assert_eq!(div_round_half_even(10_000, 32), 312); // 1/32 = 0.03125 -> 0.0312
    assert_eq!(div_round_half_even(30_000, 32), 938); // 3/32 = 0.09375 -> 0.0938
    assert_eq!(div_round_half_even(30_000, 8), 3750); // 3/8
    assert_eq!(div_round_half_even(10_000, 3), 3333);
    assert_eq!(div_round_half_even(20_000, 3), 6667);
    assert_eq!(div_round_half_even(5, 2), 2); // 2.5 -> 2
    assert_eq!(div_round_half_even(7, 2), 4); // 3.5 -> 4
    assert_eq!(div_round_half_even(-1, 2), 0); // −0.5 -> 0
    assert_eq!(div_round_half_even(-3, 2), -2); // −1.5 -> −2
    assert_eq!(div_round_half_even(-5, 2), -2); // −2.5 -> −2
    assert_eq!(div_round_half_even(-7, 3), -2); // −2.33 -> −2
    assert_eq!(div_round_half_even(-8, 3), -3); // −2.67 -> −3
    assert_eq!(format_units4(3_456_700), "345.67");
    assert_eq!(format_units4(125_000), "12.5");
    assert_eq!(format_units4(1_000_000), "100");
    assert_eq!(format_units4(0), "0");
    assert_eq!(format_units4(-0), "0");
    assert_eq!(format_units4(1), "0.0001");
    assert_eq!(format_units4(-1), "-0.0001");
    assert_eq!(format_units4(-297_000), "-29.7");
    assert_eq!(
        format_units4(10_000_000_000_000_000_000_000),
        "1000000000000000000"
    );
    assert_eq!(format_units4(288_058), "28.8058");
}

#[test]
fn rates_and_averages_round_once_half_to_even() {
    let t = "2020-09-18 10:55:00";
    let window = |n_orders: usize,
                  n_returns: usize,
                  first_items: &[(&str, &str)],
                  first_type: &str|
     -> String {
        let mut lines = vec![inv("A", t, first_type, first_items)];
        let (o, r) = if first_type == "ORDER" {
            (n_orders - 1, n_returns)
        } else {
            (n_orders, n_returns - 1)
        };
        for _ in 0..o {
            lines.push(inv("A", t, "ORDER", &[]));
        }
        for _ in 0..r {
            lines.push(inv("A", t, "RETURN", &[]));
        }
        let out = run(&lines);
        assert!(out.rejected.is_empty());
        file(&out, "time_kpi/2020-09-18T10-50.json")
    };
    let s = "2020-09-18T10:55:00Z";
    let e = "2020-09-18T10:56:00Z";
    // rate 1/32 = 0.03125 -> 0.0312; avg 1/32 -> 0.0312
    assert_eq!(
        window(31, 1, &[("1", "1")], "ORDER"),
        tline(s, e, 32, "1", "0.0312", "0.0312", 31, 1, 1)
    );
    // rate 3/32 = 0.09375 -> 0.0938; avg 3/32 -> 0.0938
    assert_eq!(
        window(29, 3, &[("3", "1")], "ORDER"),
        tline(s, e, 32, "3", "0.0938", "0.0938", 29, 3, 1)
    );
    // 3/8 = 0.375 exactly
    assert_eq!(
        window(5, 3, &[("3", "1")], "ORDER"),
        tline(s, e, 8, "3", "0.375", "0.375", 5, 3, 1)
    );
    // 1/3 and 2/3
    assert_eq!(
        window(2, 1, &[("1", "1")], "ORDER"),
        tline(s, e, 3, "1", "0.3333", "0.3333", 2, 1, 1)
    );
    assert_eq!(
        window(1, 2, &[("2", "1")], "ORDER"),
        tline(s, e, 3, "2", "0.6667", "0.6667", 1, 2, 1)
    );
    // returns only: volume −0.0001 over 2 -> avg −0.00005 -> 0 (never "-0"); rate 1
    assert_eq!(
        window(0, 2, &[("0.0001", "1")], "RETURN"),
        tline(s, e, 2, "-0.0001", "0", "1", 0, 2, 1)
    );
    // −0.0003 / 2 = −0.00015 -> −0.0002 (half to even)
    assert_eq!(
        window(0, 2, &[("0.0003", "1")], "RETURN"),
        tline(s, e, 2, "-0.0003", "-0.0002", "1", 0, 2, 1)
    );
    // −0.0005 / 2 = −0.00025 -> −0.0002
    assert_eq!(
        window(0, 2, &[("0.0005", "1")], "RETURN"),
        tline(s, e, 2, "-0.0005", "-0.0002", "1", 0, 2, 1)
    );
    // 0.001 / 4 = 0.00025 -> 0.0002
    assert_eq!(
        window(4, 0, &[("0.001", "1")], "ORDER"),
        tline(s, e, 4, "0.001", "0.0002", "0", 4, 0, 1)
    );
    // 0.0007 / 2 = 0.00035 -> 0.0004
    assert_eq!(
        window(2, 0, &[("0.0007", "1")], "ORDER"),
        tline(s, e, 2, "0.0007", "0.0004", "0", 2, 0, 1)
    );
    // 0.0049 / 10 = 0.00049 -> 0.0005
    assert_eq!(
        window(10, 0, &[("0.0049", "1")], "ORDER"),
        tline(s, e, 10, "0.0049", "0.0005", "0", 10, 0, 1)
    );
    // 0.0149 / 100 = 0.000149 -> 0.0001 (a double rounding via 0.00015 would give 0.0002)
    assert_eq!(
        window(100, 0, &[("0.0149", "1")], "ORDER"),
        tline(s, e, 100, "0.0149", "0.0001", "0", 100, 0, 1)
    );
}

#[test]
fn money_is_exact() {
    let t = "2020-09-18 10:55:00";
    let one = |items: &[(&str, &str)], typ: &str| -> String {
        let out = run(&[inv("A", t, typ, items)]);
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        let body = file(&out, "time_kpi/2020-09-18T10-50.json");
        let v = body.split("\"total_sale_volume\":").nth(1).unwrap();
        v.split(',').next().unwrap().to_string()
    };
    assert_eq!(one(&[("2.5", "5")], "ORDER"), "12.5");
    assert_eq!(one(&[("100.00", "1")], "ORDER"), "100");
    assert_eq!(one(&[("1e2", "1")], "ORDER"), "100");
    assert_eq!(one(&[("1.5E+2", "1")], "ORDER"), "150");
    assert_eq!(one(&[("12345e-4", "1")], "ORDER"), "1.2345");
    assert_eq!(one(&[("0.1", "1"), ("0.2", "1")], "ORDER"), "0.3");
    assert_eq!(one(&[("1.10000", "3")], "ORDER"), "3.3");
    assert_eq!(one(&[("0.0001", "1")], "ORDER"), "0.0001");
    assert_eq!(one(&[("4.95", "6")], "RETURN"), "-29.7");
    assert_eq!(
        one(&[("1000000000", "1000000000")], "ORDER"),
        "1000000000000000000"
    );
    assert_eq!(
        one(&[("1000000000", "1000000000")], "RETURN"),
        "-1000000000000000000"
    );
    assert_eq!(one(&[("-0", "5")], "RETURN"), "0");
    assert_eq!(one(&[], "RETURN"), "0");
    assert_eq!(one(&[("0.7", "0")], "ORDER"), "0");

    // an order and a return of the same amount cancel: volume 0, never "-0"
    let out = run(&[
        inv("A", t, "ORDER", &[("10.00", "1")]),
        inv("A", t, "RETURN", &[("10", "1")]),
    ]);
    assert_eq!(
        file(&out, "time_kpi/2020-09-18T10-50.json"),
        tline(
            "2020-09-18T10:55:00Z",
            "2020-09-18T10:56:00Z",
            2,
            "0",
            "0",
            "0.5",
            1,
            1,
            2
        )
    );
    // total_items is positive for returns; 3 × 1e9 quantities
    let out = run(&[inv(
        "A",
        t,
        "RETURN",
        &[
            ("0", "1000000000"),
            ("0", "1000000000"),
            ("0", "1000000000"),
        ],
    )]);
    assert_eq!(
        file(&out, "time_kpi/2020-09-18T10-50.json"),
        tline(
            "2020-09-18T10:55:00Z",
            "2020-09-18T10:56:00Z",
            1,
            "0",
            "0",
            "1",
            0,
            1,
            3_000_000_000
        )
    );
}

// ----------------------------------------------------------------------------- lateness

#[test]
fn lateness_is_per_partition() {
    let r = |p: u32, off: i64, ts: Option<i64>, t: &str| {
        rec(p, off, ts, &inv("A", t, "ORDER", &[("1", "1")]))
    };
    // deliberately out of offset order in the slice: processing follows offsets
    let records = vec![
        r(0, 4, None, "2020-09-18 10:10:00"),
        r(1, 5, None, "2020-09-18 09:59:00"),
        r(0, 0, None, "2020-09-18 10:05:00"),     // M0 = 10:05
        r(0, 1, None, "2020-09-18 10:04:00"),     // = M0 − G: not late
        r(0, 2, None, "2020-09-18 10:03:59.999"), // late
        r(0, 3, None, "2020-09-18 10:03:59.999999999"), // late
        // offset 4: 10:10 -> M0 = 10:10
        r(0, 5, None, "2020-09-18 10:05:00"),    // < 10:09: late
        r(0, 6, Some(0), "2020-09-18 11:00:00"), // future_timestamp; must not move M0
        r(0, 7, None, "2020-09-18 10:09:00"),    // = 10:10 − G: accepted (M0 still 10:10)
        r(0, 8, None, "2020-09-18 10:00:00"),    // late
        r(0, 9, None, "2020-09-18 10:08:59.999"), // late: the late record at 8 did not lower M0
        r(1, 0, None, "2020-09-18 10:00:00"),    // own history: accepted, M1 = 10:00
        // offset 5 of partition 1: 09:59 = M1 − G: accepted
        r(1, 6, None, "2020-09-18 09:58:59.999"), // late in partition 1
    ];
    let out = reference(&records, &RefConfig::default());
    let expected: BTreeMap<(u32, i64), String> = [
        ((0, 2), "late"),
        ((0, 3), "late"),
        ((0, 5), "late"),
        ((0, 6), "future_timestamp"),
        ((0, 8), "late"),
        ((0, 9), "late"),
        ((1, 6), "late"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    assert_eq!(out.rejected, expected);
    let w = |m: &str, n: &str| {
        tline(
            &format!("2020-09-18T{m}:00Z"),
            &format!("2020-09-18T{n}:00Z"),
            1,
            "1",
            "1",
            "0",
            1,
            0,
            1,
        )
    };
    assert_eq!(
        file(&out, "time_kpi/2020-09-18T09-50.json"),
        w("09:59", "10:00")
    );
    assert_eq!(
        file(&out, "time_kpi/2020-09-18T10-00.json"),
        [
            w("10:00", "10:01"),
            w("10:04", "10:05"),
            w("10:05", "10:06"),
            w("10:09", "10:10")
        ]
        .concat()
    );
    assert_eq!(
        file(&out, "time_kpi/2020-09-18T10-10.json"),
        w("10:10", "10:11")
    );
    assert_eq!(out.files.len(), 6);
}

#[test]
fn lateness_with_other_grace_and_exact_time() {
    let r = |off: i64, t: &str| rec(0, off, None, &inv("A", t, "ORDER", &[("1", "1")]));
    let records = vec![
        r(0, "2020-09-18 10:05:00"),
        r(1, "2020-09-18 10:05:00"),           // = M: accepted with G = 0
        r(2, "2020-09-18 10:04:59.999999999"), // < M: late
    ];
    let cfg = RefConfig {
        grace_ms: 0,
        ..RefConfig::default()
    };
    let out = reference(&records, &cfg);
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[&(0, 2)], "late");

    // Reference's choice (SPEC silent on resolution): event time keeps nanoseconds.
    // M = 10:05:00.0005, M − G = 10:04:00.0005 > 10:04:00.0001 -> late.
    let records = vec![
        r(0, "2020-09-18 10:05:00.0005"),
        r(1, "2020-09-18 10:04:00.0001"),
        r(2, "2020-09-18 10:04:00.0005"),
    ];
    let out = reference(&records, &RefConfig::default());
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[&(0, 1)], "late");
}

// ----------------------------------------------------------------------------- sorting, escaping

#[test]
fn country_rows_sorted_by_window_then_country_bytes() {
    let t = "2020-09-18 10:55:10";
    let lines = vec![
        inv("United Kingdom", t, "ORDER", &[("1", "1")]),
        inv("germany", t, "ORDER", &[("1", "1")]),
        inv("Éire", t, "ORDER", &[("1", "1")]),
        inv("Zambia", t, "RETURN", &[("1", "1")]),
        inv("France", t, "ORDER", &[("1", "1")]),
        inv("  France\t", t, "RETURN", &[("2", "2")]), // trimmed: same key
        inv("\u{a0}France\u{2003}", t, "ORDER", &[("3", "1")]), // Unicode white space trimmed too
        inv("Austria", "2020-09-18 10:56:00", "ORDER", &[("1", "1")]),
        inv("Zambia", "2020-09-18 10:54:59.999", "ORDER", &[("1", "1")]),
        inv("C\"q\\\u{1}\n\t/é\u{7f}", t, "ORDER", &[("1", "1")]),
    ];
    let out = run_spread(&lines);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    let (s4, e4) = ("2020-09-18T10:54:00Z", "2020-09-18T10:55:00Z");
    let (s5, e5) = ("2020-09-18T10:55:00Z", "2020-09-18T10:56:00Z");
    let (s6, e6) = ("2020-09-18T10:56:00Z", "2020-09-18T10:57:00Z");
    // byte order: 'C' 0x43 < 'F' 0x46 < 'U' 0x55 < 'Z' 0x5A < 'g' 0x67 < 'É' 0xC3 0x89
    let expected = [
        cline(s4, e4, "\"Zambia\"", 1, "1", "0", 1, 0, 1),
        // serde_json escapes '"', '\\' and control characters; '/', 'é' and DEL stay as they are
        cline(
            s5,
            e5,
            "\"C\\\"q\\\\\\u0001\\n\\t/é\u{7f}\"",
            1,
            "1",
            "0",
            1,
            0,
            1,
        ),
        // France: 1 − 4 + 3 = 0; returns 1 of 3 -> 0.3333; items 1 + 2 + 1
        cline(s5, e5, "\"France\"", 3, "0", "0.3333", 2, 1, 4),
        cline(s5, e5, "\"United Kingdom\"", 1, "1", "0", 1, 0, 1),
        cline(s5, e5, "\"Zambia\"", 1, "-1", "1", 0, 1, 1),
        cline(s5, e5, "\"germany\"", 1, "1", "0", 1, 0, 1),
        cline(s5, e5, "\"Éire\"", 1, "1", "0", 1, 0, 1),
        cline(s6, e6, "\"Austria\"", 1, "1", "0", 1, 0, 1),
    ]
    .concat();
    assert_eq!(file(&out, "country_kpi/2020-09-18T10-50.json"), expected);
    // world rows: 10:55 holds 8 invoices: 1+1+1−1+1−4+3+1 = 3; 2 returns of 8 = 0.25; avg 3/8 = 0.375
    assert_eq!(
        file(&out, "time_kpi/2020-09-18T10-50.json"),
        [
            tline(s4, e4, 1, "1", "1", "0", 1, 0, 1),
            tline(s5, e5, 8, "3", "0.375", "0.25", 6, 2, 9),
            tline(s6, e6, 1, "1", "1", "0", 1, 0, 1),
        ]
        .concat()
    );
}

// ----------------------------------------------------------------------------- JSON-lines input

#[test]
fn jsonl_splitting() {
    let offs = |b: &[u8]| -> Vec<(u32, i64, Vec<u8>)> {
        records_from_jsonl(b)
            .into_iter()
            .map(|r| {
                assert!(r.timestamp_ms.is_none());
                (r.partition, r.offset, r.value)
            })
            .collect()
    };
    assert_eq!(offs(b""), vec![]);
    assert_eq!(offs(b"\n"), vec![(0, 0, b"".to_vec())]);
    assert_eq!(
        offs(b"\n\n"),
        vec![(0, 0, b"".to_vec()), (0, 1, b"".to_vec())]
    );
    assert_eq!(
        offs(b"a\nb"),
        vec![(0, 0, b"a".to_vec()), (0, 1, b"b".to_vec())]
    );
    assert_eq!(
        offs(b"a\n\nb\n"),
        vec![
            (0, 0, b"a".to_vec()),
            (0, 1, b"".to_vec()),
            (0, 2, b"b".to_vec())
        ]
    );
    assert_eq!(offs(b"a\r\n"), vec![(0, 0, b"a\r".to_vec())]);

    // an empty line is bad input (invalid_json); "\r" before "\n" is JSON white space
    let data = format!("{}\n\n{}\r\n{}", good(), good(), good());
    let out = reference(&records_from_jsonl(data.as_bytes()), &RefConfig::default());
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[&(0, 1)], "invalid_json");
    assert!(file(&out, "time_kpi/2020-09-18T10-50.json").contains("\"OPM\":3,"));
}

// ----------------------------------------------------------------------------- rejections

#[test]
fn too_large() {
    let g = good();
    let exact = RefConfig {
        max_record_bytes: g.len(),
        ..RefConfig::default()
    };
    assert_eq!(reason_cfg(g.as_bytes(), None, &exact), None);
    let less = RefConfig {
        max_record_bytes: g.len() - 1,
        ..RefConfig::default()
    };
    assert_eq!(
        reason_cfg(g.as_bytes(), None, &less).as_deref(),
        Some("too_large")
    );
    // size is checked before UTF-8 and JSON
    let tiny = RefConfig {
        max_record_bytes: 2,
        ..RefConfig::default()
    };
    assert_eq!(
        reason_cfg(b"\xff\xff\xff", None, &tiny).as_deref(),
        Some("too_large")
    );
    assert_eq!(
        reason_cfg(b"\xff\xff", None, &tiny).as_deref(),
        Some("invalid_utf8")
    );
    assert_eq!(
        reason_cfg(b"{}", None, &tiny).as_deref(),
        Some("invalid_invoice")
    );

    // items: more than max_items
    let two = inv("A", GOOD_TS, "ORDER", &[("1", "1"), ("2", "2")]);
    let one_item = RefConfig {
        max_items: 1,
        ..RefConfig::default()
    };
    assert_eq!(
        reason_cfg(two.as_bytes(), None, &one_item).as_deref(),
        Some("too_large")
    );
    let two_items = RefConfig {
        max_items: 2,
        ..RefConfig::default()
    };
    assert_eq!(reason_cfg(two.as_bytes(), None, &two_items), None);
    // field checks come before the item count
    let bad = inv("A", GOOD_TS, "ORDER", &[("1", "1"), ("-2", "2")]);
    assert_eq!(
        reason_cfg(bad.as_bytes(), None, &one_item).as_deref(),
        Some("invalid_invoice")
    );
    // the item count comes before the future guard
    assert_eq!(
        reason_cfg(two.as_bytes(), Some(0), &one_item).as_deref(),
        Some("too_large")
    );
    // default limit: 10_000 items fine, 10_001 too many
    let items = vec![("1", "1"); 10_000];
    assert_eq!(reason(&inv("A", GOOD_TS, "ORDER", &items)), None);
    let items = vec![("1", "1"); 10_001];
    assert_eq!(
        reason(&inv("A", GOOD_TS, "ORDER", &items)).as_deref(),
        Some("too_large")
    );
}

#[test]
fn invalid_utf8() {
    let cfg = RefConfig::default();
    for bad in [
        &b"\xff"[..],
        b"\xc0\xaf",
        b"\xed\xa0\x80",
        b"{\"a\":\"\xe2\x82\"}",
    ] {
        assert_eq!(
            reason_cfg(bad, None, &cfg).as_deref(),
            Some("invalid_utf8"),
            "{bad:?}"
        );
    }
    // anywhere in the record, unknown fields included
    let g = good();
    let mut v = g.as_bytes()[..g.len() - 1].to_vec();
    v.extend_from_slice(b",\"note\":\"caf\xe9\"}");
    assert_eq!(reason_cfg(&v, None, &cfg).as_deref(), Some("invalid_utf8"));
    // the same with valid UTF-8 is fine
    let v = format!("{},\"note\":\"café\"}}", &g[..g.len() - 1]);
    assert_eq!(reason_cfg(v.as_bytes(), None, &cfg), None);
}

#[test]
fn invalid_json() {
    let g = good();
    let open = &g[..g.len() - 1]; // without the closing brace
    let cases: Vec<String> = vec![
        "".into(),
        " ".into(),
        "\n".into(),
        format!("\u{feff}{g}"),
        "NaN".into(),
        format!("{open},\"x\":NaN}}"),
        format!("{open},\"x\":Infinity}}"),
        format!("{g} x"),
        format!("{g}{g}"),
        format!("{g}\n{g}"),
        open.to_string(),
        format!("{open},}}"),
        format!("{open},\"x\":01}}"),
        format!("{open},\"x\":'a'}}"),
        format!("{open},\"x\":\"a\u{1}\"}}"), // raw control character in a string
        format!("{open},\"x\":\"\\x\"}}"),    // invalid escape
        format!("{open},\"x\":\"\\u12G4\"}}"), // invalid hex
        "{\"country\":\"\\ud800\"}".into(),   // invalid_json before invalid_invoice
        with_field("country", Some("\"\\ud800\"")),
        with_field("country", Some("\"Fr\\udc00\"")),
        with_field("timestamp", Some("\"\\ud800\"")),
        with_field("type", Some("\"\\ud83d\\u0041\"")),
        with_field("invoice_no", Some("\"\\ud800\"")),
        with_item_field("SKU", Some("\"\\ud800\"")),
        with_item_field("title", Some("\"ok \\udfff\"")),
    ];
    for c in &cases {
        assert_eq!(reason(c).as_deref(), Some("invalid_json"), "{c:?}");
    }
    // Valid JSON, not used by the invoice: accepted
    let accepted: Vec<String> = vec![
        format!("{open},\"x\":\"\\ud800\"}}"), // lone surrogate in an unknown field
        format!("{open},\"\\ud800\":1}}"),     // ... in an unknown key
        format!("{open},\"x\":1e400,\"y\":-0,\"z\":[1.5e-999]}}"), // numbers out of f64 range elsewhere
        format!(" \t{g}\r\n "),                                    // JSON white space around
        with_item_field("title", Some("\"\\ud83d\\ude00 ok\"")),   // a valid pair
        with_field(
            "items",
            Some(r#"[{"SKU":"1","title":"T","unit_price":1,"quantity":1,"x":"\udc00"}]"#),
        ),
        format!(
            "{open},\"x\":{}1{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ), // deep nesting
        format!("{open},\"x\":{{\"a\":{{\"b\":[\"}}]\",{{}}]}}}}}}"), // brackets in strings
    ];
    for c in &accepted {
        assert_eq!(reason(c), None, "{c:?}");
    }
}

#[test]
fn invalid_invoice_shape_and_fields() {
    let bad: Vec<String> = vec![
        "[]".into(),
        "null".into(),
        "1".into(),
        "\"x\"".into(),
        "{}".into(),
        format!("[{}]", good()),
        // missing fields
        with_field("invoice_no", None),
        with_field("country", None),
        with_field("timestamp", None),
        with_field("type", None),
        with_field("items", None),
        // repeated fields, also with the same value, also through an escape
        format!(
            "{},\"country\":\"United Kingdom\"}}",
            &good()[..good().len() - 1]
        ),
        format!("{},\"type\":\"ORDER\"}}", &good()[..good().len() - 1]),
        format!("{},\"countr\\u0079\":\"X\"}}", &good()[..good().len() - 1]),
        format!("{},\"items\":[]}}", &good()[..good().len() - 1]),
        format!("{},\"invoice_no\":1}}", &good()[..good().len() - 1]),
        format!(
            "{},\"timestamp\":\"{GOOD_TS}\"}}",
            &good()[..good().len() - 1]
        ),
    ];
    for c in &bad {
        assert_eq!(reason(c).as_deref(), Some("invalid_invoice"), "{c:?}");
    }
    // unknown fields, whatever they hold, and duplicated unknown fields are ignored
    let g = good();
    let open = &g[..g.len() - 1];
    for ok in [
        format!("{open},\"x\":null,\"x\":[1,{{}}],\"Country\":5,\"COUNTRY\":\"\"}}"),
        format!("{{\"x\":{{\"country\":1}},{}", &g[1..]),
        format!(
            "{{\"coun\\u0074ry\":\"Fr\",{}",
            &g[1..].replacen("\"country\":\"United Kingdom\",", "", 1)
        ),
    ] {
        assert_eq!(reason(&ok), None, "{ok:?}");
    }
}

#[test]
fn invalid_invoice_values() {
    let ok =
        |f: &str, raw: &str| assert_eq!(reason(&with_field(f, Some(raw))), None, "{f} = {raw}");
    let bad = |f: &str, raw: &str| {
        assert_eq!(
            reason(&with_field(f, Some(raw))).as_deref(),
            Some("invalid_invoice"),
            "{f} = {raw}"
        )
    };

    // invoice_no
    for r in [
        "0",
        "18446744073709551615",
        "\"0\"",
        "\"00012\"",
        "\"18446744073709551615\"",
        "\"018446744073709551615\"",
    ] {
        ok("invoice_no", r);
    }
    for r in [
        "18446744073709551616",
        "-1",
        "-0",
        "1.0",
        "1e3",
        "0.5",
        "\"\"",
        "\" 1\"",
        "\"1 \"",
        "\"+1\"",
        "\"-1\"",
        "\"1.0\"",
        "\"18446744073709551616\"",
        "\"１\"",
        "\"0x1\"",
        "true",
        "null",
        "[]",
        "{}",
    ] {
        bad("invoice_no", r);
    }

    // country
    for r in ["\"France\"", "\" x \"", "\"\\u00e9\""] {
        ok("country", r);
    }
    for r in [
        "\"\"",
        "\"   \"",
        "\"\\t\\n\"",
        "\"\\u00a0\\u2003\"",
        "5",
        "null",
        "[\"France\"]",
    ] {
        bad("country", r);
    }

    // type
    for r in ["\"ORDER\"", "\"RETURN\"", "\"ORD\\u0045R\""] {
        ok("type", r);
    }
    for r in [
        "\"order\"",
        "\"Order\"",
        "\" ORDER\"",
        "\"ORDER \"",
        "\"SALE\"",
        "\"\"",
        "1",
        "null",
        "true",
    ] {
        bad("type", r);
    }

    // timestamp
    for r in [
        "2020-09-18 10:55:23",
        "2020-09-18T10:55:23",
        "2020-09-18t10:55:23",
        "2020-09-18 10:55:23.1",
        "2020-09-18 10:55:23.123456789",
        "2020-09-18 10:55:23Z",
        "2020-09-18 10:55:23z",
        "2020-09-18 10:55:23.5Z",
        "2020-09-18 10:55:23+05:30",
        "2020-09-18 10:55:23-00:00",
        "2020-09-18 10:55:23+23:59",
        "2020-02-29 00:00:00",
        "2000-02-29 00:00:00",
        "0000-01-01 00:00:00",
        "0000-01-01 00:00:00-01:00",
        "9999-12-31 23:59:59.999999999",
        "9999-12-31 23:59:59+01:00",
        "1900-01-01 00:00:00",
    ] {
        ok("timestamp", &format!("\"{r}\""));
    }
    for r in [
        "2020-09-18 10:55:60",
        "2020-09-18 10:55:23.",
        "2020-09-18 10:55:23.1234567890",
        "2020-09-18 24:00:00",
        "2020-09-18 10:60:00",
        "2020-02-30 00:00:00",
        "2019-02-29 00:00:00",
        "1900-02-29 00:00:00",
        "2020-13-01 00:00:00",
        "2020-00-10 00:00:00",
        "2020-09-00 00:00:00",
        "2020-9-18 10:55:23",
        "2020-09-18 1:55:23",
        "2020-09-18 10:55",
        "2020-09-18",
        "2020-09-18 10:55:23 ",
        " 2020-09-18 10:55:23",
        "2020-09-18_10:55:23",
        "2020-09-18  10:55:23",
        "2020-09-18 10:55:23+0530",
        "2020-09-18 10:55:23+05",
        "2020-09-18 10:55:23+24:00",
        "2020-09-18 10:55:23+05:60",
        "2020-09-18 10:55:23Z+01:00",
        "2020-09-18 10:55:23zz",
        "2020-09-18 10:55:23 UTC",
        "2020-09-18 10:55:23.5 Z",
        "2020-09-18 10:55:23,5",
        "2020-09-18T10:55:23.+01:00",
        "0000-01-01 00:00:00+00:01",
        "9999-12-31 23:59:59-00:01",
        "10000-01-01 00:00:00",
        "-0001-01-01 00:00:00",
        "２０２０-09-18 10:55:23",
        "",
    ] {
        bad("timestamp", &format!("\"{r}\""));
    }
    bad("timestamp", "1600426523");
    bad("timestamp", "null");

    // items
    for r in [
        "[]",
        r#"[{"SKU":"","title":"","unit_price":0,"quantity":0,"extra":{"a":[1]}}]"#,
    ] {
        ok("items", r);
    }
    for r in [
        "{}",
        "\"[]\"",
        "null",
        "[1]",
        "[[]]",
        "[{}]",
        "[null]",
        r#"[{"SKU":"1","title":"T","unit_price":1,"quantity":1},2]"#,
    ] {
        bad("items", r);
    }
}

#[test]
fn invalid_item_values() {
    let ok = |f: &str, raw: Option<&str>| {
        assert_eq!(reason(&with_item_field(f, raw)), None, "{f} = {raw:?}")
    };
    let bad = |f: &str, raw: Option<&str>| {
        assert_eq!(
            reason(&with_item_field(f, raw)).as_deref(),
            Some("invalid_invoice"),
            "{f} = {raw:?}"
        )
    };
    for f in ["SKU", "title", "unit_price", "quantity"] {
        bad(f, None);
    }
    ok("SKU", Some("\"\""));
    ok("title", Some("\"ü \\\" x\""));
    for r in ["21485", "null", "[]", "true"] {
        bad("SKU", Some(r));
        bad("title", Some(r));
    }
    // repeated item fields
    let dup = with_field(
        "items",
        Some(r#"[{"SKU":"1","title":"T","unit_price":1,"quantity":1,"SKU":"1"}]"#),
    );
    assert_eq!(reason(&dup).as_deref(), Some("invalid_invoice"));
    let dup = with_field(
        "items",
        Some(r#"[{"SKU":"1","title":"T","unit_price":1,"quantity":1,"quantit\u0079":1}]"#),
    );
    assert_eq!(reason(&dup).as_deref(), Some("invalid_invoice"));

    // unit_price: 0 ..= 1e9, at most 4 decimals by value
    for r in [
        "0",
        "-0",
        "0.0",
        "-0.0",
        "0e5",
        "0.00000e-9",
        "1000000000",
        "1e9",
        "1E9",
        "1000000000.0000",
        "1.10000",
        "0.0001",
        "1E-4",
        "1e-4",
        "12345e-4",
        "9.9999",
        "4.95",
        "0.000100000",
        "100000000000e-2",
    ] {
        ok("unit_price", Some(r));
    }
    for r in [
        "-0.0001",
        "-1",
        "1000000000.0001",
        "1000000001",
        "1e10",
        "1.0000000001e9",
        "0.00001",
        "1e-5",
        "0.30000000000000004",
        "1e400",
        "1e-400",
        "4.95001",
        "0.12345",
        "true",
        "null",
        "\"4.95\"",
        "[4.95]",
        "1e99999999999999999999999",
        "1e-99999999999999999999999",
    ] {
        bad("unit_price", Some(r));
    }

    // quantity: JSON integer 0 ..= 1e9, written without fraction, exponent or sign
    for r in ["0", "6", "1000000000"] {
        ok("quantity", Some(r));
    }
    for r in [
        "1000000001",
        "-1",
        "-0",
        "3.0",
        "6.0",
        "1e3",
        "0e0",
        "1.5",
        "\"6\"",
        "null",
        "99999999999999999999999",
    ] {
        bad("quantity", Some(r));
    }
}

#[test]
fn future_timestamp() {
    // 2020-09-18T10:00:00Z = 1_600_387_200 + 36_000 s = 1_600_423_200_000 ms
    let event = inv("A", "2020-09-18T10:00:00Z", "ORDER", &[("1", "1")]);
    let cfg = RefConfig::default();
    let e = event.as_bytes();
    assert_eq!(
        reason_cfg(e, Some(1_600_423_200_000 - 3_600_000), &cfg),
        None
    ); // exactly 1 h ahead
    assert_eq!(
        reason_cfg(e, Some(1_600_423_200_000 - 3_600_001), &cfg).as_deref(),
        Some("future_timestamp")
    );
    assert_eq!(reason_cfg(e, Some(1_600_423_200_000), &cfg), None);
    assert_eq!(reason_cfg(e, Some(1_700_000_000_000), &cfg), None); // event in the past
    assert_eq!(
        reason_cfg(e, Some(0), &cfg).as_deref(),
        Some("future_timestamp")
    ); // 0 is a timestamp
    assert_eq!(reason_cfg(e, Some(-1), &cfg), None); // negative: not checked
    assert_eq!(reason_cfg(e, None, &cfg), None);
    // other skew
    let zero = RefConfig {
        max_future_skew_ms: 0,
        ..RefConfig::default()
    };
    assert_eq!(reason_cfg(e, Some(1_600_423_200_000), &zero), None);
    assert_eq!(
        reason_cfg(e, Some(1_600_423_199_999), &zero).as_deref(),
        Some("future_timestamp")
    );
    // Reference's choice (SPEC silent on resolution): 1 µs over the skew is "more than".
    let e2 = inv("A", "2020-09-18T10:00:00.000001Z", "ORDER", &[("1", "1")]);
    assert_eq!(
        reason_cfg(e2.as_bytes(), Some(1_600_423_200_000), &zero).as_deref(),
        Some("future_timestamp")
    );
    // zone offsets count: 12:00+02:00 is 10:00Z
    let e3 = inv("A", "2020-09-18T12:00:00+02:00", "ORDER", &[("1", "1")]);
    assert_eq!(
        reason_cfg(e3.as_bytes(), Some(1_600_423_200_000), &zero),
        None
    );

    // the future guard comes before lateness, and invalid fields before the future guard
    let records = vec![
        rec(0, 0, None, &inv("A", "2020-09-18T10:00:00Z", "ORDER", &[])),
        rec(
            0,
            1,
            Some(0),
            &inv("A", "2020-09-18T09:00:00Z", "ORDER", &[]),
        ), // future and late
        rec(0, 2, Some(0), &with_field("type", Some("\"SALE\""))),
        rec(0, 3, None, &inv("A", "2020-09-18T09:00:00Z", "ORDER", &[])), // late
    ];
    let out = reference(&records, &cfg);
    assert_eq!(out.rejected[&(0, 1)], "future_timestamp");
    assert_eq!(out.rejected[&(0, 2)], "invalid_invoice");
    assert_eq!(out.rejected[&(0, 3)], "late");
    assert_eq!(out.rejected.len(), 3);
}

#[test]
fn rejected_records_produce_no_rows_and_no_empty_files() {
    let out = run(&["".to_string(), "{}".to_string(), "x".to_string()]);
    assert!(out.files.is_empty());
    assert_eq!(out.rejected.len(), 3);
    assert_eq!(out.rejected[&(0, 0)], "invalid_json");
    assert_eq!(out.rejected[&(0, 1)], "invalid_invoice");
    assert_eq!(out.rejected[&(0, 2)], "invalid_json");
    let out = reference(&[], &RefConfig::default());
    assert!(out.files.is_empty() && out.rejected.is_empty());
}

#[test]
fn default_config() {
    let c = RefConfig::default();
    assert_eq!(
        (
            c.grace_ms,
            c.max_future_skew_ms,
            c.max_record_bytes,
            c.max_items
        ),
        (60_000, 3_600_000, 1 << 20, 10_000)
    );
}
