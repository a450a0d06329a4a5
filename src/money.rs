//! Exact fixed-point money.
//!
//! Amounts are integers of ten-thousandths (`1.2345` is `12345`). We chose a plain `i128`
//! over `rust_decimal` because the spec fixes the scale (at most 4 decimal places by value),
//! so every sum is an integer addition: associative and commutative, which is what makes
//! sums independent of arrival order, and about an order of magnitude cheaper than a
//! general decimal on the hot path. `i128` leaves room for the worst window the limits
//! allow: 10^9 invoices × 10^4 items × 10^9 quantity × 10^13 ten-thousandths = 10^35,
//! below `i128::MAX` ≈ 1.7 × 10^38.

use std::fmt;

/// Ten-thousandths per unit of money.
pub const SCALE: i128 = 10_000;

/// An exact amount of money, in ten-thousandths.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Money(pub i128);

/// Why a JSON number is not an acceptable price.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("is not a plain JSON number")]
    NotANumber,
    #[error("is negative")]
    Negative,
    #[error("has more than 4 decimal places")]
    TooPrecise,
    #[error("is above the limit of 1000000000")]
    TooLarge,
}

/// Largest unit price the spec allows, in ten-thousandths.
pub const MAX_UNIT_PRICE: i128 = 1_000_000_000 * SCALE;

impl Money {
    pub const ZERO: Money = Money(0);

    /// Parses the text of a JSON number (as it appears in the record) into an exact price.
    ///
    /// Works on the text rather than on an `f64` so that `0.30000000000000004` is seen for
    /// what it is (too precise) while `1.10000` is accepted; exponents are honoured by value.
    pub fn parse_price(text: &str) -> Result<Money, PriceError> {
        if let Some(m) = Self::parse_plain_price(text.as_bytes()) {
            return Ok(m);
        }
        Self::parse_price_general(text)
    }

    /// The common case without allocation: `D{1,10}[.D{1,4}0*]`, no sign, no exponent.
    /// Anything else (or above the limit) goes to the general parser, which knows why.
    #[inline]
    pub(crate) fn parse_plain_price(b: &[u8]) -> Option<Money> {
        let dot = b.iter().position(|&c| c == b'.').unwrap_or(b.len());
        let (int, frac) = (&b[..dot], b.get(dot + 1..).unwrap_or(&[]));
        if int.is_empty() || (dot < b.len() && frac.is_empty()) || int.len() > 10 {
            return None;
        }
        // Places beyond the fourth are fine when they are zeros (`2.75000`).
        let frac = match frac.split_at_checked(4) {
            Some((four, rest)) if rest.iter().all(|&c| c == b'0') => four,
            Some(_) => return None,
            None => frac,
        };
        if int.len() > 1 && int[0] == b'0' {
            return None; // not JSON; let the general parser refuse it
        }
        let mut v: i128 = 0;
        for &c in int {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as i128;
        }
        let mut f: i128 = 0;
        for &c in frac {
            if !c.is_ascii_digit() {
                return None;
            }
            f = f * 10 + (c - b'0') as i128;
        }
        f *= 10i128.pow(4 - frac.len() as u32);
        let m = v * SCALE + f;
        (m <= MAX_UNIT_PRICE).then_some(Money(m))
    }

    fn parse_price_general(text: &str) -> Result<Money, PriceError> {
        let b = text.as_bytes();
        let mut i = 0;
        let negative = b.first() == Some(&b'-');
        if negative {
            i += 1;
        }
        // Mantissa digits, with the position of the decimal point.
        let mut digits: Vec<u8> = Vec::with_capacity(24);
        let mut frac_len: i64 = 0;
        let int_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            digits.push(b[i] - b'0');
            i += 1;
        }
        if i == int_start {
            return Err(PriceError::NotANumber);
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                digits.push(b[i] - b'0');
                i += 1;
            }
            if i == s {
                return Err(PriceError::NotANumber);
            }
            frac_len = (i - s) as i64;
        }
        let mut exp: i64 = 0;
        if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
            i += 1;
            let mut eneg = false;
            if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                eneg = b[i] == b'-';
                i += 1;
            }
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                // Saturate: an absurd exponent is out of range either way.
                exp = (exp * 10 + (b[i] - b'0') as i64).min(1_000_000);
                i += 1;
            }
            if i == s {
                return Err(PriceError::NotANumber);
            }
            if eneg {
                exp = -exp;
            }
        }
        if i != b.len() {
            return Err(PriceError::NotANumber);
        }
        // value = digits × 10^(exp − frac_len); we want value × 10^4 as an integer.
        let shift = exp - frac_len + 4;
        // Strip leading zeros so that long zero runs cannot overflow the accumulator.
        let first = digits.iter().position(|&d| d != 0);
        let Some(first) = first else {
            return Ok(Money::ZERO); // 0, -0, 0.000e5: all zero; -0 is zero by value
        };
        let digits = &digits[first..];
        let mut value: i128 = 0;
        let keep = if shift >= 0 {
            digits.len()
        } else {
            let drop = (-shift) as usize;
            if drop >= digits.len() {
                return Err(PriceError::TooPrecise);
            }
            if digits[digits.len() - drop..].iter().any(|&d| d != 0) {
                return Err(PriceError::TooPrecise);
            }
            digits.len() - drop
        };
        for &d in &digits[..keep] {
            value = value * 10 + d as i128;
            if value > MAX_UNIT_PRICE {
                return Err(if negative {
                    PriceError::Negative
                } else {
                    PriceError::TooLarge
                });
            }
        }
        if shift > 0 {
            for _ in 0..shift {
                value *= 10;
                if value > MAX_UNIT_PRICE {
                    return Err(if negative {
                        PriceError::Negative
                    } else {
                        PriceError::TooLarge
                    });
                }
            }
        }
        if negative {
            return Err(PriceError::Negative);
        }
        Ok(Money(value))
    }

    /// `self / n` in ten-thousandths, rounded once, half to even.
    pub fn div_round_half_even(self, n: u64) -> Money {
        Money(div_round_half_even(self.0, n as i128))
    }
}

/// `num / den` rounded to the nearest integer, ties to even. `den` must be positive.
pub fn div_round_half_even(num: i128, den: i128) -> i128 {
    debug_assert!(den > 0);
    let q = num.div_euclid(den);
    let r = num.rem_euclid(den); // 0 <= r < den, num = q*den + r
    let twice = r * 2;
    if twice > den || (twice == den && q.rem_euclid(2) == 1) {
        q + 1
    } else {
        q
    }
}

/// A ratio `num / den` as ten-thousandths, rounded half to even.
pub fn ratio_4dp(num: u64, den: u64) -> Money {
    Money(div_round_half_even(num as i128 * SCALE, den as i128))
}

impl fmt::Display for Money {
    /// Exact, no trailing zeros, no exponent, never `-0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        let neg = v < 0;
        let a = v.unsigned_abs();
        let int = a / SCALE as u128;
        let mut frac = (a % SCALE as u128) as u32;
        if neg && (int != 0 || frac != 0) {
            f.write_str("-")?;
        }
        write!(f, "{int}")?;
        if frac != 0 {
            let mut width = 4;
            while frac.is_multiple_of(10) {
                frac /= 10;
                width -= 1;
            }
            write!(f, ".{frac:0width$}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<i128, PriceError> {
        Money::parse_price(s).map(|m| m.0)
    }

    #[test]
    fn prices_parse_exactly_by_value() {
        assert_eq!(p("4.95"), Ok(49_500));
        assert_eq!(p("0.42"), Ok(4_200));
        assert_eq!(p("1.10000"), Ok(11_000));
        assert_eq!(p("0"), Ok(0));
        assert_eq!(p("-0"), Ok(0));
        assert_eq!(p("-0.0"), Ok(0));
        assert_eq!(p("1e2"), Ok(1_000_000));
        assert_eq!(p("12345E-4"), Ok(12_345));
        assert_eq!(p("0.0001"), Ok(1));
        assert_eq!(p("1000000000"), Ok(MAX_UNIT_PRICE));
        assert_eq!(p("1000000000.0000"), Ok(MAX_UNIT_PRICE));
        assert_eq!(p("0.00000000000000000000001e19"), Ok(1));
    }

    #[test]
    fn prices_out_of_rule_are_refused() {
        assert_eq!(p("0.30000000000000004"), Err(PriceError::TooPrecise));
        assert_eq!(p("0.00001"), Err(PriceError::TooPrecise));
        assert_eq!(p("1e-5"), Err(PriceError::TooPrecise));
        assert_eq!(p("1000000000.0001"), Err(PriceError::TooLarge));
        assert_eq!(p("1e10"), Err(PriceError::TooLarge));
        assert_eq!(p("1e999999999999"), Err(PriceError::TooLarge));
        assert_eq!(p("-1"), Err(PriceError::Negative));
        assert_eq!(p("-0.0001"), Err(PriceError::Negative));
        assert_eq!(p("\"1\""), Err(PriceError::NotANumber));
        assert_eq!(p("1."), Err(PriceError::NotANumber));
    }

    #[test]
    fn the_fast_path_agrees_with_the_general_parser() {
        for t in [
            "0",
            "7",
            "4.95",
            "0.42",
            "12.5",
            "1.0000",
            "999999999.9999",
            "1000000000",
            "1000000000.0",
            "1000000000.0001",
            "0.1",
            "10.01",
            "2.75000",
            "2.7500000000",
            "1000000000.00000",
            "1000000000.00001",
        ] {
            assert_eq!(Money::parse_price(t), Money::parse_price_general(t), "{t}");
        }
        assert_eq!(Money::parse_plain_price(b"1000000000.0001"), None);
        assert_eq!(Money::parse_plain_price(b"1.12345"), None);
        assert_eq!(Money::parse_plain_price(b"-1"), None);
        // Zeros beyond the fourth place are taken by value, as the general parser does.
        assert_eq!(Money::parse_plain_price(b"2.75000"), Some(Money(27_500)));
        assert_eq!(Money::parse_plain_price(b"2.750001"), None);
    }

    proptest::proptest! {
        #[test]
        fn fast_and_general_parsers_agree(int in 0u64..20_000_000_000, frac in "[0-9]{0,6}0{0,3}") {
            let t = if frac.is_empty() { int.to_string() } else { format!("{int}.{frac}") };
            proptest::prop_assert_eq!(Money::parse_price(&t), Money::parse_price_general(&t));
        }
    }

    #[test]
    fn money_prints_exactly() {
        let s = |v: i128| Money(v).to_string();
        assert_eq!(s(3_456_700), "345.67");
        assert_eq!(s(125_000), "12.5");
        assert_eq!(s(1_000_000), "100");
        assert_eq!(s(0), "0");
        assert_eq!(s(-1), "-0.0001");
        assert_eq!(s(-125_000), "-12.5");
        assert_eq!(s(10), "0.001");
        assert_eq!(s(i128::MAX), "17014118346046923173168730371588410.5727");
        assert_eq!(s(i128::MIN), "-17014118346046923173168730371588410.5728");
    }

    #[test]
    fn rounding_is_half_to_even_once() {
        // 1/32 = 0.03125 -> 0.0312 (tie, 2 is even); 3/32 = 0.09375 -> 0.0938.
        assert_eq!(ratio_4dp(1, 32).to_string(), "0.0312");
        assert_eq!(ratio_4dp(3, 32).to_string(), "0.0938");
        assert_eq!(ratio_4dp(1, 3).to_string(), "0.3333");
        assert_eq!(ratio_4dp(2, 3).to_string(), "0.6667");
        assert_eq!(ratio_4dp(1, 1).to_string(), "1");
        assert_eq!(ratio_4dp(0, 7).to_string(), "0");
        // Averages of negative volumes round half to even too: -0.00005 -> -0 -> "0".
        assert_eq!(Money(-1).div_round_half_even(2).to_string(), "0");
        assert_eq!(Money(-3).div_round_half_even(2).to_string(), "-0.0002");
        assert_eq!(Money(5).div_round_half_even(2).to_string(), "0.0002");
        assert_eq!(Money(7).div_round_half_even(2).to_string(), "0.0004");
    }

    #[test]
    fn huge_windows_do_not_overflow() {
        // 10^9 invoices of 10^4 items at the limits.
        let per_item = MAX_UNIT_PRICE * 1_000_000_000;
        let per_invoice = per_item * 10_000;
        let window = per_invoice.checked_mul(1_000_000_000);
        assert!(window.is_some());
        assert_eq!(
            Money(window.unwrap()).div_round_half_even(1_000_000_000),
            Money(per_invoice)
        );
    }
}
