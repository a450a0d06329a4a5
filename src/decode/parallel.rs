//! Decoding on a pool of threads while the source is being read (`--threads N`).
//!
//! The records a poll admits are gathered in chunks; each full chunk is decoded on the
//! pool at once, while the loop's thread goes on reading, and the verdicts are handed to
//! the consumer in the records' order as soon as the chunks before them are done. So the
//! reading, the decoding and the aggregation of one poll overlap, and the aggregation
//! still sees every record in partition-offset order, as with one thread. Nothing is
//! read ahead of the poll: when `poll` returns, every record it gave has been handed
//! over, so a checkpoint after it covers exactly what the source read.

use super::invoice::{Invoice, Kind};
use super::Decoder;
use crate::event_time::EventTime;
use crate::money::Money;
use crate::record::{Rejection, SourceRecord};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::mpsc;

/// Records per task: large enough that a task costs far more than its scheduling (about
/// a microsecond), small enough that the first chunks of a poll are decoded while the
/// rest is still being read.
const CHUNK_RECORDS: usize = 256;

/// What receives the records of a poll: `admit` first, on the loop's thread as each record
/// is read (`false` skips it undecoded); then `take` with its verdict, in order.
pub trait Consumer {
    fn admit(&mut self, rec: &SourceRecord<'_>) -> bool;
    fn take(&mut self, rec: SourceRecord<'_>, verdict: Result<Invoice<'_>, Rejection>);
}

/// A pool of decoding threads and the chunks it reuses.
pub struct ParallelDecoder<D> {
    decoder: D,
    pool: rayon::ThreadPool,
    free: Vec<Chunk>,
}

impl<D: Decoder + Sync> ParallelDecoder<D> {
    pub fn new(decoder: D, threads: usize) -> Result<Self, rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("decode-{i}"))
            .build()?;
        Ok(ParallelDecoder {
            decoder,
            pool,
            free: Vec::new(),
        })
    }

    /// Runs `poll` with a sink that feeds `consumer` as described above, and returns what
    /// `poll` returned once every admitted record has been handed to `consumer`.
    pub fn poll<R>(
        &mut self,
        consumer: &mut dyn Consumer,
        poll: impl FnOnce(&mut dyn FnMut(SourceRecord<'_>)) -> R,
    ) -> R {
        let (decoder, free) = (&self.decoder, &mut self.free);
        self.pool.in_place_scope(|scope| {
            let (tx, rx) = mpsc::channel::<(usize, Chunk)>();
            let mut order = InOrder::default();
            let mut filling = free.pop().unwrap_or_default();
            let mut sent = 0;
            let mut spawn = |mut chunk: Chunk| {
                let (tx, seq) = (tx.clone(), sent);
                sent += 1;
                scope.spawn(move |_| {
                    chunk.decode(decoder);
                    // The receiver outlives the scope, so this cannot fail.
                    let _ = tx.send((seq, chunk));
                });
            };
            let out = poll(&mut |rec| {
                if !consumer.admit(&rec) {
                    return;
                }
                filling.push(&rec);
                if filling.records.len() >= CHUNK_RECORDS {
                    let next = free.pop().unwrap_or_default();
                    spawn(std::mem::replace(&mut filling, next));
                    // Hand over whatever is done, so that aggregation overlaps reading.
                    while let Ok(done) = rx.try_recv() {
                        order.arrived(done, consumer, free);
                    }
                }
            });
            if filling.records.is_empty() {
                free.push(filling);
            } else {
                spawn(filling);
            }
            // From here the only senders are the tasks' own: a task that panicked drops its
            // sender unsent, `recv` then fails instead of waiting for good, and the panic
            // ends the job as it would on one thread (rayon passes it on from the scope).
            drop(tx);
            while order.handed < sent {
                let Ok(done) = rx.recv() else {
                    panic!("a decoding thread panicked (its panic message is above)");
                };
                order.arrived(done, consumer, free);
            }
            out
        })
    }
}

/// Decoded chunks put back in the order they were read.
#[derive(Default)]
struct InOrder {
    handed: usize,
    early: BTreeMap<usize, Chunk>,
}

impl InOrder {
    fn arrived(
        &mut self,
        (seq, chunk): (usize, Chunk),
        c: &mut dyn Consumer,
        free: &mut Vec<Chunk>,
    ) {
        self.early.insert(seq, chunk);
        while let Some(mut chunk) = self.early.remove(&self.handed) {
            chunk.hand_over(c);
            free.push(chunk);
            self.handed += 1;
        }
    }
}

/// Records copied out of the source's buffers (which the next record may reuse), with
/// their verdicts once decoded.
#[derive(Default)]
struct Chunk {
    bytes: Vec<u8>,
    records: Vec<Meta>,
    verdicts: Vec<Result<Decoded, Rejection>>,
}

struct Meta {
    partition: u32,
    offset: i64,
    timestamp_ms: Option<i64>,
    start: usize,
    end: usize,
    full_len: Option<u64>,
}

impl Chunk {
    fn push(&mut self, rec: &SourceRecord<'_>) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(rec.value);
        self.records.push(Meta {
            partition: rec.partition,
            offset: rec.offset,
            timestamp_ms: rec.timestamp_ms,
            start,
            end: self.bytes.len(),
            full_len: rec.full_len,
        });
    }

    /// Split further among the pool's idle threads, 64 records at least per part: a
    /// small poll (a live stream) is one chunk, which must not end up on one thread.
    fn decode<D: Decoder + Sync>(&mut self, decoder: &D) {
        use rayon::prelude::*;
        let (records, bytes) = (&self.records, &self.bytes);
        (0..records.len())
            .into_par_iter()
            .with_min_len(64)
            .map(|i| {
                let rec = record(records, bytes, i);
                let verdict = decoder.decode(rec.value, rec.len());
                verdict.map(|inv| Decoded::of(inv, rec.value, records[i].start))
            })
            .collect_into_vec(&mut self.verdicts);
    }

    fn hand_over(&mut self, c: &mut dyn Consumer) {
        for (i, v) in self.verdicts.drain(..).enumerate() {
            let rec = record(&self.records, &self.bytes, i);
            match v {
                Ok(d) => c.take(rec, Ok(d.invoice(&self.bytes))),
                Err(r) => c.take(rec, Err(r)),
            }
        }
        self.bytes.clear();
        self.records.clear();
        // A chunk of huge records is not kept at that size for the rest of the run.
        if self.bytes.capacity() > KEEP_BYTES {
            self.bytes = Vec::new();
        }
    }
}

/// Bytes a reused chunk keeps: far above 256 ordinary invoices (about 120 KB).
const KEEP_BYTES: usize = 4 << 20;

fn record<'c>(records: &[Meta], bytes: &'c [u8], i: usize) -> SourceRecord<'c> {
    let m = &records[i];
    SourceRecord {
        partition: m.partition,
        offset: m.offset,
        timestamp_ms: m.timestamp_ms,
        value: &bytes[m.start..m.end],
        full_len: m.full_len,
    }
}

/// An invoice that can cross threads without its record: its strings as places in the
/// chunk's bytes (or owned, when decoding unescaped them).
struct Decoded {
    invoice_no: u64,
    country: Text,
    timestamp: Text,
    event_time: EventTime,
    kind: Kind,
    item_count: u64,
    total_items: u64,
    total_cost: Money,
}

enum Text {
    At(usize, usize),
    Owned(Box<str>),
}

impl Text {
    /// `value` starts at `base` in the chunk's bytes.
    fn of(s: Cow<'_, str>, value: &[u8], base: usize) -> Text {
        if let Cow::Borrowed(b) = &s {
            let at = (b.as_ptr() as usize).wrapping_sub(value.as_ptr() as usize);
            if at <= value.len() && b.len() <= value.len() - at {
                return Text::At(base + at, base + at + b.len());
            }
        }
        // Unescaped, or (from some other decoder) not borrowed from the record at all.
        Text::Owned(s.into_owned().into_boxed_str())
    }

    fn get<'c>(&'c self, bytes: &'c [u8]) -> Cow<'c, str> {
        match self {
            // These bytes were a `str` when the decoder handed them over, so the check
            // passes (and std's is the fastest on short ASCII text).
            Text::At(a, b) => match std::str::from_utf8(&bytes[*a..*b]) {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => String::from_utf8_lossy(&bytes[*a..*b]),
            },
            Text::Owned(s) => Cow::Borrowed(s),
        }
    }
}

impl Decoded {
    fn of(inv: Invoice<'_>, value: &[u8], base: usize) -> Decoded {
        Decoded {
            invoice_no: inv.invoice_no,
            country: Text::of(inv.country, value, base),
            timestamp: Text::of(inv.timestamp, value, base),
            event_time: inv.event_time,
            kind: inv.kind,
            item_count: inv.item_count,
            total_items: inv.total_items,
            total_cost: inv.total_cost,
        }
    }

    fn invoice<'c>(&'c self, bytes: &'c [u8]) -> Invoice<'c> {
        Invoice {
            invoice_no: self.invoice_no,
            country: self.country.get(bytes),
            timestamp: self.timestamp.get(bytes),
            event_time: self.event_time,
            kind: self.kind,
            item_count: self.item_count,
            total_items: self.total_items,
            total_cost: self.total_cost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::JsonInvoiceDecoder;
    use crate::generate::{GenConfig, Generator};

    /// Records what it is handed, as the job's consumer would aggregate them.
    #[derive(Default)]
    struct Seen {
        taken: Vec<(u32, i64, String)>,
        skip_every: Option<i64>,
    }

    impl Consumer for Seen {
        fn admit(&mut self, rec: &SourceRecord<'_>) -> bool {
            self.skip_every.is_none_or(|n| rec.offset % n != 0)
        }
        fn take(&mut self, rec: SourceRecord<'_>, v: Result<Invoice<'_>, Rejection>) {
            let what = match v {
                Ok(inv) => format!(
                    "{}|{}|{}|{:?}",
                    inv.country, inv.timestamp, inv.invoice_no, inv.total_cost
                ),
                Err(r) => format!("{}: {}", r.reason.code(), r.message),
            };
            self.taken.push((rec.partition, rec.offset, what));
        }
    }

    /// Whatever the chunking and the threads' timing, the consumer gets every admitted
    /// record once, in the order read, with the verdict one thread gives.
    #[test]
    fn verdicts_come_in_the_order_read_and_equal_one_thread() {
        let records: Vec<Vec<u8>> = Generator::new(GenConfig {
            count: 3_000,
            seed: 5,
            bad_fraction: 0.1,
            ..GenConfig::default()
        })
        .map(|r| r.value)
        .collect();
        let d = JsonInvoiceDecoder::default();
        for skip_every in [None, Some(7)] {
            let mut want = Seen {
                skip_every,
                ..Seen::default()
            };
            for (i, v) in records.iter().enumerate() {
                let rec = source_record(i, v);
                if want.admit(&rec) {
                    let verdict = d.decode(rec.value, rec.len());
                    want.take(rec, verdict);
                }
            }
            let mut par = ParallelDecoder::new(d, 2).unwrap();
            // Polls of several sizes, the last one short of a chunk.
            let mut got = Seen {
                skip_every,
                ..Seen::default()
            };
            let mut next = 0;
            for size in [1, 300, 1000, 1_699] {
                let n = par.poll(&mut got, |sink| {
                    for (i, r) in records.iter().enumerate().skip(next).take(size) {
                        sink(source_record(i, r));
                    }
                    size
                });
                next += n;
            }
            assert_eq!(next, records.len());
            assert_eq!(got.taken, want.taken);
        }
    }

    /// Regression (review): a panic in a decoding task left the loop thread waiting on
    /// the channel for good. It must end the poll with a panic, as on one thread.
    #[test]
    fn a_panicking_decoder_ends_the_poll_instead_of_hanging() {
        struct PanicOn;
        impl Decoder for PanicOn {
            fn decode<'a>(&self, value: &'a [u8], _: u64) -> Result<Invoice<'a>, Rejection> {
                assert_ne!(value, b"boom", "the test decoder panics on purpose");
                Err(Rejection::new(crate::record::Reason::InvalidJson, "x"))
            }
        }
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut par = ParallelDecoder::new(PanicOn, 2).unwrap();
                let mut seen = Seen::default();
                par.poll(&mut seen, |sink| {
                    for i in 0..1000 {
                        let v: &[u8] = if i == 700 { b"boom" } else { b"{}" };
                        sink(source_record(i, v));
                    }
                });
            }));
            let _ = done_tx.send(result.is_err());
        });
        let panicked = done_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the poll neither returned nor panicked within 60 s: it hangs");
        assert!(panicked, "the decoder's panic was swallowed");
    }

    fn source_record(i: usize, v: &[u8]) -> SourceRecord<'_> {
        SourceRecord {
            partition: (i % 3) as u32,
            offset: i as i64,
            timestamp_ms: None,
            value: v,
            full_len: None,
        }
    }
}
