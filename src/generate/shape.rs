//! The shape of the generated stream: rates and bounds, the countries and the catalogue
//! with their weights, and the random draws over them.

use super::*;

/// 2020-09-18 10:00:00 UTC, the day of the example in SPEC §1.
pub(super) const DEFAULT_START_MS: i64 = 1_600_423_200_000;
pub(super) const MS_PER_MINUTE: f64 = 60_000.0;
pub(super) const US_PER_MINUTE: f64 = 60_000_000.0;
/// One invoice per microsecond of event time: the clock's resolution.
pub(super) const MAX_RATE_PER_MINUTE: f64 = 60_000_000.0;
pub(super) const MAX_GRACE_MS: i64 = 30 * 86_400_000;
pub(super) const TWO_POW_53: f64 = 9_007_199_254_740_992.0;
pub(super) const MAX_JITTER_MS: i64 = 30_000;
pub(super) const LATE_EXTRA_MIN_MS: i64 = 1_000;
pub(super) const LATE_EXTRA_MAX_MS: i64 = 300_000;
pub(super) const MAX_BROKER_DELAY_MS: i64 = 2_000;
/// Twice the job's default `max_future_skew` of 1 h.
pub(super) const FUTURE_AHEAD_MS: i64 = 2 * 3_600_000;
pub(super) const FUTURE_EXTRA_MAX_MS: i64 = 600_000;
/// One more than the job's default limit of items per invoice.
pub(super) const TOO_LARGE_ITEMS: usize = 10_001;
/// 1 in 200 malformed records is too large (0.5 %, each about 500 kB).
pub(super) const TOO_LARGE_EVERY: u64 = 200;
/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z, the range SPEC §1 allows.
pub(super) const MIN_EVENT_MS: i64 = -62_167_219_200_000;
pub(super) const MAX_EVENT_MS: i64 = 253_402_300_799_999;

pub(super) const MAX_ITEMS: usize = 8;
pub(super) const UK: &str = "United Kingdom";
pub(super) const UK_PER_10K: u32 = 9_200;
/// The UK's UTC offset in hours, as in `OTHER_COUNTRIES`.
pub(super) const UK_UTC_OFFSET_H: i64 = 0;

pub(super) const MS_PER_HOUR: i64 = 3_600_000;
pub(super) const US_PER_HOUR: i64 = 3_600_000_000;
pub(super) const US_PER_DAY: i64 = 24 * US_PER_HOUR;

/// The daily cycle (`GenConfig::daily_cycle`): a country's rate of invoices in each hour
/// of its local day, 00:00 to 23:00, in thousandths of its mean over the day (they sum to
/// 24,000, so a day keeps the mean): few at night, a first peak in the late morning, a dip
/// in the afternoon and the highest peak in the evening, as web shops see. None is zero,
/// so the world's rate never stops and the gap to the next invoice is always finite.
pub(super) const DIURNAL: [u32; 24] = [
    500, 300, 200, 150, 150, 200, // 00..05
    400, 700, 1_000, 1_300, 1_550, 1_600, // 06..11
    1_450, 1_200, 1_150, 1_150, 1_300, 1_400, // 12..17
    1_550, 1_700, 1_750, 1_500, 1_100, 700, // 18..23
];

/// The hour of the day (0..24) of `ms` in UTC shifted by `offset_h` hours.
pub(super) fn hour_of_day(ms: i64, offset_h: i64) -> usize {
    (ms.div_euclid(MS_PER_HOUR) + offset_h).rem_euclid(24) as usize
}

/// The tables of the daily cycle, one entry per UTC hour of the day (every offset is whole
/// hours, so the hour of the day decides every country's local hour):
///
/// * the running sums of the countries' weights in that hour, UK first (the order of
///   `Generator::country_json`): a country's share of all invoices (UK `UK_PER_10K` in
///   10,000, the others `10_000 - UK_PER_10K` shared by their weights) times `DIURNAL` of
///   its local hour, in integers (at most about 4·10^10), so the draw is exact;
/// * the world's rate in that hour relative to the mean of the day: the sum of those
///   weights over what it would be with a flat day; its mean over the 24 hours is 1.
pub(super) fn cycle_tables() -> (Vec<Vec<u64>>, [f64; 24]) {
    let others: u64 = OTHER_COUNTRIES.iter().map(|c| u64::from(c.1)).sum();
    let shares: Vec<(u64, i64)> =
        std::iter::once((u64::from(UK_PER_10K) * others, UK_UTC_OFFSET_H))
            .chain(
                OTHER_COUNTRIES
                    .iter()
                    .map(|c| (u64::from(10_000 - UK_PER_10K) * u64::from(c.1), c.2)),
            )
            .collect();
    let flat = (10_000 * others * 1_000) as f64;
    let mut cums = Vec::with_capacity(24);
    let mut levels = [0.0; 24];
    for (hour, level) in levels.iter_mut().enumerate() {
        let at = hour as i64 * MS_PER_HOUR;
        let mut sum = 0u64;
        let cum: Vec<u64> = shares
            .iter()
            .map(|&(share, offset)| {
                sum += share * u64::from(DIURNAL[hour_of_day(at, offset)]);
                sum
            })
            .collect();
        *level = sum as f64 / flat;
        cums.push(cum);
    }
    (cums, levels)
}

/// Countries other than the UK, spelt as in the UCI data, weighted by roughly their
/// number of invoices there, each with the UTC offset of its local time in hours (standard
/// time of its capital or largest market, no daylight saving: the daily cycle's clock, a
/// demo's curve and not a calendar; the names that are no country take a nearby one's).
pub(super) const OTHER_COUNTRIES: &[(&str, u32, i64)] = &[
    ("Germany", 603, 1),
    ("France", 461, 1),
    ("EIRE", 360, 0),
    ("Belgium", 119, 1),
    ("Spain", 105, 1),
    ("Netherlands", 101, 1),
    ("Switzerland", 74, 1),
    ("Portugal", 71, 0),
    ("Australia", 69, 10),
    ("Italy", 55, 1),
    ("Finland", 48, 2),
    ("Sweden", 46, 1),
    ("Norway", 40, 1),
    ("Channel Islands", 33, 0),
    ("Japan", 28, 9),
    ("Poland", 24, 1),
    ("Denmark", 21, 1),
    ("Cyprus", 20, 2),
    ("Austria", 19, 1),
    ("Unspecified", 13, 0),
    ("Singapore", 10, 8),
    ("Malta", 10, 1),
    ("Israel", 9, 2),
    ("USA", 7, -5),
    ("Iceland", 7, 0),
    ("Canada", 6, -5),
    ("Greece", 6, 2),
    ("Czech Republic", 5, 1),
    ("European Community", 5, 1),
    ("Lithuania", 4, 2),
    ("Bahrain", 4, 3),
    ("United Arab Emirates", 3, 4),
    ("Saudi Arabia", 2, 3),
    ("RSA", 1, 2),
    ("Brazil", 1, -3),
    ("Lebanon", 1, 2),
];

pub(super) struct Product {
    pub(super) sku: &'static str,
    pub(super) title: &'static str,
    /// The price as written: at most 2 decimals, like the UCI data.
    pub(super) price: &'static str,
}

pub(super) const fn p(sku: &'static str, title: &'static str, price: &'static str) -> Product {
    Product { sku, title, price }
}

/// Products and prices of the UCI Online Retail data.
pub(super) const CATALOGUE: &[Product] = &[
    p("85123A", "WHITE HANGING HEART T-LIGHT HOLDER", "2.55"),
    p("71053", "WHITE METAL LANTERN", "3.39"),
    p("84406B", "CREAM CUPID HEARTS COAT HANGER", "2.75"),
    p("84029G", "KNITTED UNION FLAG HOT WATER BOTTLE", "3.39"),
    p("84029E", "RED WOOLLY HOTTIE WHITE HEART.", "3.39"),
    p("22752", "SET 7 BABUSHKA NESTING BOXES", "7.65"),
    p("21730", "GLASS STAR FROSTED T-LIGHT HOLDER", "4.25"),
    p("22633", "HAND WARMER UNION JACK", "1.85"),
    p("22632", "HAND WARMER RED POLKA DOT", "1.85"),
    p("84879", "ASSORTED COLOUR BIRD ORNAMENT", "1.69"),
    p("22745", "POPPY'S PLAYHOUSE BEDROOM", "2.1"),
    p("22748", "POPPY'S PLAYHOUSE KITCHEN", "2.1"),
    p("22749", "FELTCRAFT PRINCESS CHARLOTTE DOLL", "3.75"),
    p("22310", "IVORY KNITTED MUG COSY", "1.65"),
    p("84969", "BOX OF 6 ASSORTED COLOUR TEASPOONS", "4.25"),
    p("22623", "BOX OF VINTAGE JIGSAW BLOCKS", "4.95"),
    p("22622", "BOX OF VINTAGE ALPHABET BLOCKS", "9.95"),
    p("21754", "HOME BUILDING BLOCK WORD", "5.95"),
    p("21755", "LOVE BUILDING BLOCK WORD", "5.95"),
    p("21777", "RECIPE BOX WITH METAL HEART", "7.95"),
    p("48187", "DOORMAT NEW ENGLAND", "7.95"),
    p("22960", "JAM MAKING SET WITH JARS", "4.25"),
    p("22913", "RED COAT RACK PARIS FASHION", "4.95"),
    p("22616", "PACK OF 12 LONDON TISSUES", "0.29"),
    p("21977", "PACK OF 60 PINK PAISLEY CAKE CASES", "0.55"),
    p("84991", "60 TEATIME FAIRY CAKE CASES", "0.55"),
    p("22728", "ALARM CLOCK BAKELIKE PINK", "3.75"),
    p("22727", "ALARM CLOCK BAKELIKE RED", "3.75"),
    p("22355", "CHARLOTTE BAG SUKI DESIGN", "0.85"),
    p("21724", "PANDA AND BUNNIES STICKER SHEET", "0.85"),
    p("21883", "STARS GIFT TAPE", "0.65"),
    p("10002", "INFLATABLE POLITICAL GLOBE", "0.85"),
    p("21791", "VINTAGE HEADS AND TAILS CARD GAME", "1.25"),
    p("21035", "SET/2 RED RETROSPOT TEA TOWELS", "2.95"),
    p("22326", "ROUND SNACK BOXES SET OF4 WOODLAND", "2.95"),
    p("22629", "SPACEBOY LUNCH BOX", "1.95"),
    p("22630", "DOLLY GIRL LUNCH BOX", "1.95"),
    p("22423", "REGENCY CAKESTAND 3 TIER", "12.75"),
    p("47566", "PARTY BUNTING", "4.95"),
    p("85099B", "JUMBO BAG RED RETROSPOT", "1.95"),
    p("84077", "WORLD WAR 2 GLIDERS ASSTD DESIGNS", "0.29"),
    p("85152", "HAND OVER THE CHOCOLATE SIGN", "2.1"),
    p("22197", "SMALL POPCORN HOLDER", "0.85"),
    p("23084", "RABBIT NIGHT LIGHT", "2.08"),
    p("22086", "PAPER CHAIN KIT 50'S CHRISTMAS", "2.95"),
    p("21212", "PACK OF 72 RETROSPOT CAKE CASES", "0.55"),
    p("20725", "LUNCH BAG RED RETROSPOT", "1.65"),
    p("22720", "SET OF 3 CAKE TINS PANTRY DESIGN", "4.95"),
    p("21485", "RETROSPOT HEART HOT WATER BOTTLE", "4.95"),
    p("23499", "SET 12 VINTAGE DOILY CHALK", "0.42"),
    p("22457", "NATURAL SLATE HEART CHALKBOARD", "2.95"),
    p("22469", "HEART OF WICKER SMALL", "1.65"),
    p("22470", "HEART OF WICKER LARGE", "2.95"),
    p("21232", "STRAWBERRY CERAMIC TRINKET BOX", "1.25"),
    p("22666", "RECIPE BOX PANTRY YELLOW DESIGN", "2.95"),
    p("82482", "WOODEN PICTURE FRAME WHITE FINISH", "2.55"),
    p("82494L", "WOODEN FRAME ANTIQUE WHITE", "2.95"),
    p("22411", "JUMBO SHOPPER VINTAGE RED PAISLEY", "1.95"),
    p("22382", "LUNCH BAG SPACEBOY DESIGN", "1.65"),
    p("23203", "JUMBO BAG DOILEY PATTERNS", "2.08"),
    p("22492", "MINI PAINT SET VINTAGE", "0.65"),
    p("79321", "CHILLI LIGHTS", "5.75"),
    p("22961", "JAM MAKING SET PRINTED", "1.45"),
    p("20724", "RED RETROSPOT CHARLOTTE BAG", "0.85"),
    p("22993", "SET OF 4 PANTRY JELLY MOULDS", "1.25"),
    p("21080", "SET/20 RED RETROSPOT PAPER NAPKINS", "0.85"),
];

/// The postage line of exports; kept out of the catalogue so only exports get it.
pub(super) const POSTAGE: Product = p("POST", "POSTAGE", "18");
pub(super) const POSTAGE_INDEX: u16 = CATALOGUE.len() as u16;

/// Unit price (in hundredths) from which lines take smaller quantities, and under which
/// they take larger ones; tuned so the median invoice is about 33 in money and 15 units.
pub(super) const PRICEY: u32 = 200;

/// The price of a product in hundredths (catalogue prices have at most 2 decimals).
pub(super) fn product_price(index: u16) -> u32 {
    let text = product(index).price;
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digit = |i: usize| frac.as_bytes().get(i).map_or(0, |d| u32::from(d - b'0'));
    int.parse::<u32>().unwrap_or(0) * 100 + digit(0) * 10 + digit(1)
}

pub(super) fn product(index: u16) -> &'static Product {
    CATALOGUE.get(index as usize).unwrap_or(&POSTAGE)
}

/// Quantity of a line and its weight: mostly small counts and packs of 6, 12, 24, with a
/// long wholesale tail, as in the UCI data.
pub(super) const QUANTITIES: &[(u32, u32)] = &[
    (1, 2_700),
    (2, 1_900),
    (3, 800),
    (4, 800),
    (5, 150),
    (6, 1_000),
    (8, 350),
    (10, 350),
    (12, 1_050),
    (16, 80),
    (20, 80),
    (24, 320),
    (25, 50),
    (36, 70),
    (48, 100),
    (72, 35),
    (96, 30),
    (100, 20),
    (144, 20),
    (200, 8),
    (288, 6),
    (480, 4),
    (600, 2),
    (1_000, 1),
    (2_400, 1),
    (4_800, 1),
];

/// Cumulative weights of 1 ..= 8 lines per invoice.
pub(super) const ITEMS_CUM: [u32; MAX_ITEMS] =
    [2_400, 4_000, 5_300, 6_400, 7_400, 8_300, 9_200, 10_000];

pub(super) fn cumulative(weights: impl Iterator<Item = u32>) -> Vec<u32> {
    weights
        .scan(0, |sum, w| {
            *sum += w;
            Some(*sum)
        })
        .collect()
}

/// Index drawn with the weights whose running sums are `cum`.
pub(super) fn pick(cum: &[u32], rng: &mut ChaCha8Rng) -> usize {
    let r = rng.gen_range(0..cum[cum.len() - 1]);
    cum.partition_point(|&c| c <= r)
}

/// Index drawn with the weights whose running sums are `cum`, from a `u64` range (the
/// daily cycle's weights pass `u32`).
pub(super) fn pick_u64(cum: &[u64], rng: &mut ChaCha8Rng) -> usize {
    let r = rng.gen_range(0..cum[cum.len() - 1]);
    cum.partition_point(|&c| c <= r)
}

/// A standard exponential draw, −ln(U) with U in (0, 1].
pub(super) fn exp1(rng: &mut ChaCha8Rng) -> f64 {
    let u = ((rng.next_u64() >> 11) + 1) as f64 / TWO_POW_53;
    -ln(u)
}

/// Natural logarithm of a positive normal `x` from IEEE basic operations only, so that it
/// gives the same bits on every platform (unlike `f64::ln`, which is libm's). Splits
/// `x = m · 2^e` with m in [√½, √2) and sums 2·atanh((m−1)/(m+1)); |s| < 0.172, so 13
/// terms leave an error far below one ulp of the result.
pub(super) fn ln(x: f64) -> f64 {
    const LN_2: f64 = std::f64::consts::LN_2;
    const SQRT_2: f64 = std::f64::consts::SQRT_2;
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    for k in 0..13 {
        sum += term / f64::from(2 * k + 1);
        term *= s2;
    }
    e as f64 * LN_2 + 2.0 * sum
}
