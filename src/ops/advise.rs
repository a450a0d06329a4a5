//! `/api/v1/advise/grace`: the grace chosen from data. For each candidate grace, the share
//! of invoices it would have accepted on lateness grounds, and the delay it adds to every
//! file, from the lateness histogram the engine keeps (since the process started).
//!
//! An invoice is late when it is more than the grace behind the newest invoice of its
//! partition (SPEC §4), so a grace of `g` accepts exactly those at most `g` behind: the
//! histogram's buckets up to `g`, over both outcomes. A file is written once the watermark
//! (the slowest partition's newest invoice minus the grace) passes its bucket's end, so the
//! grace is also the delay it adds to every file.
//!
//! An estimate in two ways, both said in the answer: the candidates are the histogram's
//! bucket bounds, and an invoice refused because its window had already closed is counted
//! as one a grace above its lateness would have accepted (a larger grace closes windows
//! later). Invoices refused for a future timestamp are left out: no grace accepts them.

use crate::aggregate::{Lateness, LATENESS_BOUNDS_SECS};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GraceOption {
    pub grace_seconds: i64,
    /// Invoices at most `grace_seconds` behind their partition's newest.
    pub accepted: u64,
    /// `accepted` over every invoice counted; `None` before the first.
    pub accepted_share: Option<f64>,
    /// Added to the time every 10-minute file waits after its last minute.
    pub file_delay_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GraceAdvice {
    /// Invoices counted (since the process started), future timestamps left out.
    pub counted: u64,
    pub current_grace_seconds: f64,
    pub options: Vec<GraceOption>,
    pub method: &'static str,
}

/// The advice from `l`; `future` invoices refused for a future timestamp are taken out of
/// the first bucket of the refused ones, where the engine counts them (they are ahead of
/// their partition, 0 behind).
pub fn advise_grace(l: &Lateness, future: u64, current_grace_seconds: f64) -> GraceAdvice {
    let acc = &l.buckets[Lateness::ACCEPTED];
    let rej = &l.buckets[Lateness::REJECTED];
    let future = future.min(rej[0]);
    let counted = l.count(Lateness::ACCEPTED) + l.count(Lateness::REJECTED) - future;
    let mut running = 0u64;
    let options = LATENESS_BOUNDS_SECS
        .iter()
        .enumerate()
        .map(|(i, &g)| {
            running += acc[i] + rej[i];
            let accepted = running - future;
            GraceOption {
                grace_seconds: g,
                accepted,
                accepted_share: (counted > 0).then(|| accepted as f64 / counted as f64),
                file_delay_seconds: g,
            }
        })
        .collect();
    GraceAdvice {
        counted,
        current_grace_seconds,
        options,
        method: "lateness histogram since the process started; candidates are its bucket bounds; window_closed refusals count as accepted by a grace above their lateness; future timestamps left out",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_grow_with_the_grace_and_leave_future_timestamps_out() {
        let mut l = Lateness::default();
        // 90 in order, 6 a little late (<= 5 s), 3 refused 100 s late, 1 future.
        l.buckets[Lateness::ACCEPTED][0] = 90;
        l.buckets[Lateness::ACCEPTED][2] = 6;
        l.buckets[Lateness::REJECTED][7] = 3;
        l.buckets[Lateness::REJECTED][0] = 1;
        let a = advise_grace(&l, 1, 60.0);
        assert_eq!(a.counted, 99);
        let by: Vec<(i64, u64)> = a
            .options
            .iter()
            .map(|o| (o.grace_seconds, o.accepted))
            .collect();
        assert_eq!(by[0], (0, 90));
        assert_eq!(by[1], (1, 90));
        assert_eq!(by[2], (5, 96));
        assert_eq!(by[6], (120, 96));
        assert_eq!(by[7], (300, 99));
        assert_eq!(a.options[7].accepted_share, Some(1.0));
        assert!(a
            .options
            .iter()
            .all(|o| o.file_delay_seconds == o.grace_seconds));
        assert_eq!(
            advise_grace(&Lateness::default(), 0, 60.0).options[0].accepted_share,
            None
        );
    }
}
