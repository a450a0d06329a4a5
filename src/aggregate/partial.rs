//! Exact partial aggregates of one-minute windows, and the KPI arithmetic of SPEC §3.
//! Pure: no I/O.
//!
//! [`Agg`] is the partial of one window for the world or one country, [`WindowAgg`] the
//! partial of one window; both merge associatively and commutatively, so the result of
//! a job is each partition's partials merged, in any grouping and order. These are live
//! types: the store keeps layouts of its own (`state::StoredAgg`), converted on the way in
//! and out, so a field added here cannot change what is stored.

use crate::decode::invoice::{Invoice, Kind};
use crate::money::{ratio_4dp, Money};
use std::collections::HashMap;

/// A map keyed by country. foldhash rather than the standard library's SipHash: two
/// lookups per accepted invoice made SipHash a few per cent of the job's loop, and
/// foldhash's per-process random seed still keeps an input from choosing collisions.
pub type CountryMap<V> = HashMap<Box<str>, V, foldhash::fast::RandomState>;

/// The sums behind the KPIs of one window, for the world or for one country.
///
/// Every field is a plain integer sum, so the result does not depend on the order in which
/// invoices arrive. Sizes: 10^9 invoices per window fit in `u64`; `total_items` can reach
/// 10^9 × 10^4 × 10^9 and needs `u128`; money is `i128` (see `money`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Agg {
    /// Invoices in the window, orders and returns.
    pub opm: u64,
    pub orders: u64,
    pub returns: u64,
    pub total_items: u128,
    /// Σ total_cost; returns subtract.
    pub volume: Money,
}

impl Agg {
    #[inline]
    pub fn add(&mut self, inv: &Invoice<'_>) {
        self.opm += 1;
        match inv.kind {
            Kind::Order => self.orders += 1,
            Kind::Return => self.returns += 1,
        }
        self.total_items += inv.total_items as u128;
        self.volume.0 += inv.total_cost.0;
    }

    pub fn merge(&mut self, o: &Agg) {
        self.opm += o.opm;
        self.orders += o.orders;
        self.returns += o.returns;
        self.total_items += o.total_items;
        self.volume.0 += o.volume.0;
    }

    /// total_sale_volume / OPM, exact then rounded half to even to 4 places.
    pub fn average_transaction_size(&self) -> Money {
        self.volume.div_round_half_even(self.opm)
    }

    /// returns / OPM, rounded half to even to 4 places.
    pub fn rate_of_return(&self) -> Money {
        ratio_4dp(self.returns, self.opm)
    }
}

/// One window: the world row and one row per country.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WindowAgg {
    pub world: Agg,
    pub countries: CountryMap<Agg>,
}

impl WindowAgg {
    #[inline]
    pub fn add(&mut self, inv: &Invoice<'_>) {
        self.world.add(inv);
        match self.countries.get_mut(inv.country.as_ref()) {
            Some(a) => a.add(inv),
            None => {
                let mut a = Agg::default();
                a.add(inv);
                self.countries.insert(inv.country.as_ref().into(), a);
            }
        }
    }

    /// Adds another partial of the same window (another partition's, another process's).
    /// Every field is an integer sum, so merging is associative and commutative, and
    /// merging the partials of any split of the invoices gives their aggregate.
    pub fn merge(&mut self, o: &WindowAgg) {
        self.world.merge(&o.world);
        for (c, a) in &o.countries {
            match self.countries.get_mut(c) {
                Some(mine) => mine.merge(a),
                None => {
                    self.countries.insert(c.clone(), *a);
                }
            }
        }
    }

    /// Countries in byte order, as the output wants them.
    pub fn sorted_countries(&self) -> Vec<(&str, &Agg)> {
        let mut v: Vec<(&str, &Agg)> = self.countries.iter().map(|(k, a)| (&**k, a)).collect();
        v.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn inv(country: &str, kind: Kind, cost: i128, items: u64) -> Invoice<'_> {
        Invoice {
            invoice_no: 1,
            country: Cow::Borrowed(country),
            timestamp: Cow::Borrowed(""),
            event_time: 0,
            kind,
            item_count: 1,
            total_items: items,
            total_cost: Money(if kind == Kind::Return { -cost } else { cost }),
        }
    }

    #[test]
    fn kpis_of_a_small_window() {
        let mut w = WindowAgg::default();
        w.add(&inv("United Kingdom", Kind::Order, 100_000, 3));
        w.add(&inv("EIRE", Kind::Order, 25_000, 1));
        w.add(&inv("United Kingdom", Kind::Return, 20_000, 2));
        assert_eq!(w.world.opm, 3);
        assert_eq!(w.world.total_items, 6);
        // 10 + 2.5 - 2 = 10.5; / 3 = 3.5
        assert_eq!(w.world.volume.to_string(), "10.5");
        assert_eq!(w.world.average_transaction_size().to_string(), "3.5");
        assert_eq!(w.world.rate_of_return().to_string(), "0.3333");
        let names: Vec<&str> = w.sorted_countries().iter().map(|c| c.0).collect();
        assert_eq!(names, ["EIRE", "United Kingdom"]);
        let uk = w.countries["United Kingdom"];
        assert_eq!((uk.opm, uk.orders, uk.returns), (2, 1, 1));
        assert_eq!(uk.rate_of_return().to_string(), "0.5");
    }

    #[test]
    fn order_of_arrival_does_not_matter() {
        let a = [
            inv("A", Kind::Order, 12_345, 3),
            inv("B", Kind::Return, 99_999, 7),
            inv("A", Kind::Order, 1, 1),
        ];
        let mut x = WindowAgg::default();
        let mut y = WindowAgg::default();
        a.iter().for_each(|i| x.add(i));
        a.iter().rev().for_each(|i| y.add(i));
        assert_eq!(x, y);
    }

    const COUNTRIES: [&str; 4] = ["United Kingdom", "EIRE", "France", "Ä"];

    fn whole(invoices: &[(usize, bool, i128, u64)]) -> Vec<Invoice<'static>> {
        invoices
            .iter()
            .map(|&(c, ret, cost, items)| {
                let kind = if ret { Kind::Return } else { Kind::Order };
                inv(COUNTRIES[c], kind, cost, items)
            })
            .collect()
    }

    proptest::proptest! {
        /// The partials of any split of the invoices, merged in any order and grouping,
        /// equal the aggregate of all the invoices at once.
        #[test]
        fn partials_merge_in_any_grouping_and_order_to_the_whole(
            invoices in proptest::collection::vec(
                (0usize..4, proptest::bool::ANY, 0i128..1_000_000_000_000, 0u64..10_000),
                0..80,
            ),
            groups in proptest::collection::vec(0usize..6, 80),
            order in proptest::collection::vec(proptest::num::usize::ANY, 6),
        ) {
            let invoices = whole(&invoices);
            let mut all = WindowAgg::default();
            invoices.iter().for_each(|i| all.add(i));
            let mut parts = vec![WindowAgg::default(); 6];
            for (i, x) in invoices.iter().enumerate() {
                parts[groups[i]].add(x);
            }
            // Any order: the partials sorted by random keys.
            let mut idx: Vec<usize> = (0..6).collect();
            idx.sort_by_key(|&i| order[i]);
            let mut left = WindowAgg::default();
            for &i in &idx {
                left.merge(&parts[i]);
            }
            proptest::prop_assert_eq!(&left, &all);
            // Another grouping: ((p5 + p4) + ...) nested from the right.
            let mut right = parts[idx[5]].clone();
            for &i in idx[..5].iter().rev() {
                let mut t = parts[i].clone();
                t.merge(&right);
                right = t;
            }
            proptest::prop_assert_eq!(&right, &all);
            // Commutative pairwise, and the empty partial is neutral.
            let (mut ab, mut ba) = (parts[0].clone(), parts[1].clone());
            ab.merge(&parts[1]);
            ba.merge(&parts[0]);
            proptest::prop_assert_eq!(&ab, &ba);
            let mut e = all.clone();
            e.merge(&WindowAgg::default());
            proptest::prop_assert_eq!(&e, &all);
        }
    }

    #[test]
    fn byte_order_not_locale_order() {
        let mut w = WindowAgg::default();
        for c in ["b", "B", "Ä", "a"] {
            w.add(&inv(c, Kind::Order, 1, 1));
        }
        let names: Vec<&str> = w.sorted_countries().iter().map(|c| c.0).collect();
        assert_eq!(names, ["B", "a", "b", "Ä"]);
    }
}
