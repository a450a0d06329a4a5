//! Criterion benchmarks of the per-invoice hot path: parsing and validation alone (with and
//! without the decoder's fast path), and the
//! job's whole record step (`job::Intake::process`: decode, time checks, aggregation).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use retail_kpi::aggregate::{Engine, EngineConfig};
use retail_kpi::decode::invoice::{parse_invoice, parse_invoice_general, Limits};
use retail_kpi::decode::JsonInvoiceDecoder;
use retail_kpi::generate::{GenConfig, Generator};
use retail_kpi::job::Intake;
use retail_kpi::record::SourceRecord;

fn records(n: u64) -> Vec<Vec<u8>> {
    Generator::new(GenConfig {
        count: n,
        seed: 9,
        ..GenConfig::default()
    })
    .map(|r| r.value)
    .collect()
}

fn hot_path(c: &mut Criterion) {
    let recs = records(10_000);
    let bytes: u64 = recs.iter().map(|r| r.len() as u64).sum();
    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("serde_json_ignored_any (ceiling)", |b| {
        b.iter(|| {
            for r in &recs {
                serde_json::from_slice::<serde::de::IgnoredAny>(r).unwrap();
            }
        })
    });
    g.bench_function("parse_invoice", |b| {
        let limits = Limits::default();
        b.iter(|| {
            for r in &recs {
                std::hint::black_box(parse_invoice(r, &limits).unwrap());
            }
        })
    });
    // The serde_json path alone, as every record went before the fast path (issue 11).
    g.bench_function("parse_invoice_general (serde_json only)", |b| {
        let limits = Limits::default();
        b.iter(|| {
            for r in &recs {
                std::hint::black_box(parse_invoice_general(r, &limits).unwrap());
            }
        })
    });
    g.bench_function("engine_process", |b| {
        b.iter_batched(
            || {
                (
                    Engine::new(EngineConfig::default()),
                    Intake::new(JsonInvoiceDecoder::default(), "bench"),
                )
            },
            |(mut e, mut intake)| {
                for (i, r) in recs.iter().enumerate() {
                    intake.process(
                        &mut e,
                        SourceRecord {
                            partition: 0,
                            offset: i as i64,
                            timestamp_ms: None,
                            value: r,
                            full_len: None,
                        },
                    );
                }
                (e, intake)
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
    eprintln!(
        "({} records, {:.0} bytes each on average)",
        recs.len(),
        bytes as f64 / recs.len() as f64
    );
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
