//! Durations as users write them: windows, SLO periods, canary spans, step timeouts and retry
//! intervals all share this one grammar.
//!
//! A duration is a positive number, optionally with a decimal fraction, followed by one unit:
//! `ms`, `s`, `m`, `h`, `d` or `w` (`500ms`, `1.5s`, `30m`, `24h`, `7d`, `2w`). Nothing longer
//! than [`MAX`] (100 years) is accepted, so no caller can make a window whose arithmetic
//! overflows a timestamp. The value is computed exactly in nanoseconds (no floating point), and
//! a fraction finer than a nanosecond is refused rather than rounded to zero.

use std::time::Duration;

/// The longest duration accepted: 36,500 days.
pub const MAX: Duration = Duration::from_secs(36_500 * 86_400);

const UNITS: [(&str, u128); 6] = [
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
    ("w", 604_800_000_000_000),
];

/// Parses a duration such as `500ms`, `1.5s`, `30m`, `24h`, `7d` or `2w`. The error says what
/// is wrong with the value; callers add which field or parameter it came from.
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| {
        format!(
            "invalid duration `{s}`: {why}; write a number followed by ms, s, m, h, d or w \
             (e.g. `500ms`, `1.5s`, `24h`, `7d`)"
        )
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let Some(&(_, unit_nanos)) = UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(bad(if unit.is_empty() {
            "no unit"
        } else {
            "unknown unit"
        }));
    };
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) if digits(f) => (w, f),
        Some(_) => return Err(bad("not a number")),
        None => (number, ""),
    };
    if !digits(whole) {
        return Err(bad("not a number"));
    }
    let too_long = || bad("longer than 36500d");
    let whole: u128 = whole.parse().map_err(|_| too_long())?;
    let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(too_long)?;
    // The fraction in nanoseconds: `digits / 10^len · unit`, exact when it divides.
    if !fraction.is_empty() {
        if fraction.len() > 18 {
            return Err(bad("too many decimals"));
        }
        let scale = 10u128.pow(fraction.len() as u32);
        let part: u128 = fraction.parse().map_err(|_| bad("not a number"))?;
        let scaled = part * unit_nanos;
        if !scaled.is_multiple_of(scale) {
            return Err(bad("finer than a nanosecond"));
        }
        nanos = nanos.checked_add(scaled / scale).ok_or_else(too_long)?;
    }
    if nanos == 0 {
        return Err(bad("must be greater than zero"));
    }
    if nanos > MAX.as_nanos() {
        return Err(too_long());
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_long())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Renders a duration the way [`parse`] reads it, in the largest unit that divides it (`1d`,
/// `90m`, `500ms`); a duration that no unit divides is written in seconds with a fraction.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    for (unit, n) in UNITS.iter().rev() {
        if nanos >= *n && nanos.is_multiple_of(*n) {
            return format!("{}{unit}", nanos / n);
        }
    }
    if nanos == 0 {
        return "0s".into();
    }
    let text = format!("{}.{:09}", d.as_secs(), d.subsec_nanos());
    format!("{}s", text.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_unit_and_decimals_parse() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1_500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1.5h", Duration::from_secs(5_400)),
            ("24h", Duration::from_secs(86_400)),
            ("7d", Duration::from_secs(604_800)),
            ("2w", Duration::from_secs(1_209_600)),
            ("0.001s", Duration::from_millis(1)),
            (" 90s ", Duration::from_secs(90)),
            ("36500d", MAX),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        for (text, why) in [
            ("", "no unit"),
            ("h", "not a number"),
            ("24", "no unit"),
            ("24x", "unknown unit"),
            ("0h", "greater than zero"),
            ("0.0s", "greater than zero"),
            ("-1h", "unknown unit"),
            ("1..5s", "not a number"),
            (".5s", "not a number"),
            ("5.s", "not a number"),
            ("100000000d", "longer than 36500d"),
            ("36501d", "longer than 36500d"),
            (
                "99999999999999999999999999999999999999999w",
                "longer than 36500d",
            ),
            ("0.0000000001s", "finer than a nanosecond"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(
                e.starts_with(&format!("invalid duration `{text}`")),
                "{text}: {e}"
            );
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn durations_print_in_the_largest_unit_that_divides_them() {
        assert_eq!(format(Duration::from_secs(86_400)), "1d");
        assert_eq!(format(Duration::from_secs(5_400)), "90m");
        assert_eq!(format(Duration::from_millis(1_500)), "1500ms");
        assert_eq!(format(Duration::from_nanos(1_500_000_001)), "1.500000001s");
        assert_eq!(format(Duration::from_secs(1_209_600)), "2w");
    }

    proptest! {
        #[test]
        fn what_is_printed_parses_back(nanos in 1u64..=MAX.as_nanos() as u64) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
