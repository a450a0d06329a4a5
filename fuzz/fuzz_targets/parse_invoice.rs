//! Fuzz target: the invoice parser (`retail_kpi::decode::invoice::parse_invoice`) on arbitrary bytes.
//!
//! Checked for every input, under the default limits and under tight limits derived from the
//! input's length (so that both `too_large` checks are reached often):
//! - no panic (libFuzzer reports one as a crash);
//! - an accepted invoice keeps the invariants of SPEC §1–§2 (country non-empty and trimmed,
//!   ORDER xor RETURN, cost sign, item count within the limit, prices and quantities within
//!   their ranges summed exactly);
//! - a refusal has a message, and an `invalid_invoice` message names a field or says the
//!   value is not an invoice;
//! - the verdict equals that of the independent reference of the tests
//!   (`tests/support/src/reference.rs`, written from the SPEC alone): same reason code, and for an
//!   accepted invoice the same event time, country, kind, Σ quantity and Σ cost;
//! - the verdict, message included, equals that of the decoder without its fast path
//!   (`parse_invoice_general`, serde_json alone).

#![no_main]

use libfuzzer_sys::fuzz_target;
use retail_kpi::decode::invoice::{
    parse_invoice, parse_invoice_general, Kind, Limits, MAX_QUANTITY,
};
use retail_kpi::money::MAX_UNIT_PRICE;

use test_support::reference;

use reference::{check_record, RefConfig, RefRecord};

fn check(data: &[u8], limits: Limits) {
    let got = parse_invoice(data, &limits);
    assert_eq!(
        got,
        parse_invoice_general(data, &limits),
        "the fast path and serde_json differ"
    );
    let cfg = RefConfig {
        max_record_bytes: limits.max_record_bytes,
        max_items: limits.max_items as usize,
        ..RefConfig::default()
    };
    let want = check_record(
        &RefRecord {
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            value: data.to_vec(),
        },
        &cfg,
    );
    match (&got, &want) {
        (Ok(inv), Ok(r)) => {
            // Invariants of an accepted invoice, from the SPEC.
            assert!(data.len() <= limits.max_record_bytes);
            assert!(!inv.country.is_empty(), "empty country accepted");
            assert_eq!(inv.country.trim(), inv.country, "country not trimmed");
            assert_eq!(inv.is_order() + inv.is_return(), 1);
            assert!(inv.item_count <= limits.max_items);
            match inv.kind {
                Kind::Order => assert!(inv.total_cost.0 >= 0),
                Kind::Return => assert!(inv.total_cost.0 <= 0),
            }
            assert!(inv.total_items as u128 <= inv.item_count as u128 * MAX_QUANTITY as u128);
            assert!(
                inv.total_cost.0.unsigned_abs() <= inv.total_items as u128 * MAX_UNIT_PRICE as u128
            );
            // Same invoice as the reference computes.
            assert_eq!(inv.event_time, r.event_ns, "event time");
            assert_eq!(inv.country.as_ref(), r.country.as_str(), "country");
            assert_eq!(inv.kind == Kind::Return, r.is_return, "type");
            assert_eq!(inv.item_count, r.items.len() as u64, "item count");
            assert_eq!(inv.total_items as i128, r.total_items(), "total_items");
            assert_eq!(inv.total_cost.0, r.total_cost_units(), "total_cost");
        }
        (Err(rej), Err(code)) => {
            assert!(!rej.message.is_empty());
            if rej.reason.code() == "invalid_invoice" {
                assert!(
                    rej.message.contains('`') || rej.message.starts_with("not an invoice"),
                    "message names no field: {}",
                    rej.message
                );
            }
            assert_eq!(
                rej.reason.code(),
                *code,
                "reason differs from the reference; message: {}",
                rej.message
            );
        }
        (Ok(inv), Err(code)) => panic!("accepted, the reference says {code}: {inv:?}"),
        (Err(rej), Ok(_)) => panic!(
            "refused as {} ({}), the reference accepts it",
            rej.reason, rej.message
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, Limits::default());
    // Tight limits: at, or one or two bytes under, the record's size; 0..=3 items.
    check(
        data,
        Limits {
            max_record_bytes: data.len().saturating_sub(data.len() % 3),
            max_items: (data.len() % 4) as u64,
        },
    );
});
