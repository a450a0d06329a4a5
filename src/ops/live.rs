//! The live view of the page at `/`: the minutes closed most recently, and the open ones
//! as provisional figures, as the job last committed them.
//!
//! The job publishes here once per checkpoint, after the store committed it, so that a
//! minute shows as closed only once it is: within one checkpoint interval of its closing.
//! Between checkpoints nothing here is touched; a request only clones a small snapshot.

use crate::aggregate::partial::{Agg, WindowAgg};
use crate::event_time::{format_instant, WINDOW_SECS};
use crate::ops::metrics::Health;
use std::collections::VecDeque;
use std::sync::Mutex;

/// The page itself, with its scripts and styles: embedded, so the job serves it with no
/// network and no files beside the binary.
pub const PAGE: &str = include_str!("live/page.html");

/// Closed minutes the page gets: an hour of charts.
pub const KEEP_MINUTES: usize = 60;
/// Open minutes shown as provisional: the newest ones, where invoices still arrive.
pub const PROVISIONAL_MINUTES: usize = 2;
/// Countries per minute, by sales volume.
pub const TOP_COUNTRIES: usize = 10;

/// One minute's figures for the page, with money as exact decimal text (the page shows the
/// text; only its charts turn it into floating point).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Minute {
    pub window_start: String,
    pub window_end: String,
    pub world: Figures,
    /// The countries with the largest sales volume, largest first (ties by name).
    pub countries: Vec<CountryFigures>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Figures {
    #[serde(rename = "OPM")]
    pub opm: u64,
    pub total_sale_volume: String,
    pub average_transaction_size: String,
    pub rate_of_return: String,
    pub orders: u64,
    pub returns: u64,
    /// Text: the sum can pass 2^53, where a JSON number read by a browser loses digits.
    pub total_items: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CountryFigures {
    pub country: String,
    #[serde(rename = "OPM")]
    pub opm: u64,
    pub total_sale_volume: String,
    pub rate_of_return: String,
    pub orders: u64,
    pub returns: u64,
    pub total_items: String,
}

fn figures(a: &Agg) -> Figures {
    Figures {
        opm: a.opm,
        total_sale_volume: a.volume.to_string(),
        average_transaction_size: a.average_transaction_size().to_string(),
        rate_of_return: a.rate_of_return().to_string(),
        orders: a.orders,
        returns: a.returns,
        total_items: a.total_items.to_string(),
    }
}

impl Minute {
    pub fn new(start: i64, w: &WindowAgg) -> Minute {
        let mut top: Vec<(&str, &Agg)> = w.countries.iter().map(|(c, a)| (&**c, a)).collect();
        top.sort_unstable_by(|a, b| b.1.volume.0.cmp(&a.1.volume.0).then(a.0.cmp(b.0)));
        top.truncate(TOP_COUNTRIES);
        Minute {
            window_start: format_instant(start),
            window_end: format_instant(start + WINDOW_SECS),
            world: figures(&w.world),
            countries: top
                .into_iter()
                .map(|(c, a)| {
                    let f = figures(a);
                    CountryFigures {
                        country: c.to_owned(),
                        opm: f.opm,
                        total_sale_volume: f.total_sale_volume,
                        rate_of_return: f.rate_of_return,
                        orders: f.orders,
                        returns: f.returns,
                        total_items: f.total_items,
                    }
                })
                .collect(),
        }
    }
}

#[derive(Debug, Default)]
struct Snapshot {
    /// Ascending by window start, at most `KEEP_MINUTES`.
    closed: VecDeque<(i64, Minute)>,
    provisional: Vec<Minute>,
}

/// What `/api/v1/live` answers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveAnswer {
    pub now: String,
    pub closed: Vec<Minute>,
    pub provisional: Vec<Minute>,
    pub health: LiveHealth,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveHealth {
    #[serde(flatten)]
    pub health: Health,
    pub checkpoint_interval_seconds: f64,
    pub grace_seconds: f64,
}

/// The minutes the page shows; see the module's comment.
#[derive(Debug)]
pub struct LiveView {
    snapshot: Mutex<Snapshot>,
    checkpoint_interval_seconds: f64,
    grace_seconds: f64,
}

impl LiveView {
    pub fn new(checkpoint_interval: std::time::Duration, grace: std::time::Duration) -> LiveView {
        LiveView {
            snapshot: Mutex::default(),
            checkpoint_interval_seconds: checkpoint_interval.as_secs_f64(),
            grace_seconds: grace.as_secs_f64(),
        }
    }

    /// The job's grace, for the advice on choosing it.
    pub fn grace_seconds(&self) -> f64 {
        self.grace_seconds
    }

    /// After a checkpoint committed: the windows it closed (ascending), and the open
    /// windows as they stand (ascending).
    pub fn publish<'a>(
        &self,
        closed: &[(i64, WindowAgg)],
        open: impl Iterator<Item = (i64, &'a WindowAgg)>,
    ) {
        // Only what the page can show is turned into text: a backfill closes thousands of
        // minutes per checkpoint.
        let fresh: Vec<(i64, Minute)> = closed[closed.len().saturating_sub(KEEP_MINUTES)..]
            .iter()
            .map(|(s, w)| (*s, Minute::new(*s, w)))
            .collect();
        let open: Vec<(i64, &WindowAgg)> = open.collect();
        let provisional: Vec<Minute> = open[open.len().saturating_sub(PROVISIONAL_MINUTES)..]
            .iter()
            .map(|(s, w)| Minute::new(*s, w))
            .collect();
        let mut snap = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        for (s, m) in fresh {
            // Windows close in order; a restart may publish one again.
            if snap.closed.back().is_some_and(|(last, _)| *last >= s) {
                continue;
            }
            snap.closed.push_back((s, m));
        }
        while snap.closed.len() > KEEP_MINUTES {
            snap.closed.pop_front();
        }
        snap.provisional = provisional;
    }

    pub fn answer(&self, health: Health) -> LiveAnswer {
        let snap = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        LiveAnswer {
            // To the millisecond, like the checkpoint and file times the page counts "ago" from.
            now: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            closed: snap.closed.iter().map(|(_, m)| m.clone()).collect(),
            provisional: snap.provisional.clone(),
            health: LiveHealth {
                health,
                checkpoint_interval_seconds: self.checkpoint_interval_seconds,
                grace_seconds: self.grace_seconds,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Money;

    fn window(countries: &[(&str, i128)]) -> WindowAgg {
        let mut w = WindowAgg::default();
        for (c, v) in countries {
            let a = Agg {
                opm: 2,
                orders: 1,
                returns: 1,
                total_items: 3,
                volume: Money(*v),
            };
            w.world.merge(&a);
            w.countries.insert((*c).into(), a);
        }
        w
    }

    #[test]
    fn keeps_the_newest_closed_minutes_and_the_newest_open_ones() {
        let live = LiveView::new(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(60),
        );
        let closed: Vec<(i64, WindowAgg)> = (0..KEEP_MINUTES as i64 + 5)
            .map(|i| (i * 60, window(&[("A", 1)])))
            .collect();
        live.publish(&closed[..10], std::iter::empty());
        // Published again after a restart: not twice.
        live.publish(&closed[5..], std::iter::empty());
        let open: Vec<(i64, WindowAgg)> =
            (100..104).map(|i| (i * 60, window(&[("B", 2)]))).collect();
        live.publish(&[], open.iter().map(|(s, w)| (*s, w)));
        let health = crate::ops::metrics::Metrics::new(0).health();
        let a = live.answer(health);
        assert_eq!(a.closed.len(), KEEP_MINUTES);
        assert_eq!(a.closed[0].window_start, format_instant(5 * 60));
        assert_eq!(
            a.closed.last().unwrap().window_start,
            format_instant((KEEP_MINUTES as i64 + 4) * 60)
        );
        let starts: Vec<&str> = a.provisional.iter().map(|m| &*m.window_start).collect();
        assert_eq!(starts, [format_instant(102 * 60), format_instant(103 * 60)]);
    }

    #[test]
    fn countries_by_volume_largest_first_with_exact_text() {
        let mut names: Vec<(String, i128)> = (0..12).map(|i| (format!("C{i:02}"), i)).collect();
        names.push(("Tie".into(), 11));
        let list: Vec<(&str, i128)> = names.iter().map(|(c, v)| (c.as_str(), *v)).collect();
        let m = Minute::new(0, &window(&list));
        let got: Vec<&str> = m.countries.iter().map(|c| &*c.country).collect();
        assert_eq!(got[..3], ["C11", "Tie", "C10"]);
        assert_eq!(got.len(), TOP_COUNTRIES);
        let c11 = &m.countries[0];
        assert_eq!(c11.total_sale_volume, Money(11).to_string());
        assert_eq!(c11.rate_of_return, "0.5");
        assert_eq!(m.world.opm, 26);
    }
}
