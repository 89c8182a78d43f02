//! Dovecot's time interval syntax (`settings_get_time` in 2.3), used for AGE.
//!
//! An interval is a decimal number, optional spaces and a unit: any non-empty prefix of
//! `secs`/`seconds`, `mins`/`minutes`, `hours`, `days` or `weeks`, in any case. A bare
//! number is refused unless it is 0. Like Dovecot, which stores intervals in an
//! `unsigned int`, intervals longer than 2^32-1 seconds (about 136 years) are refused.
//! Dovecot's millisecond units are not accepted here.

use std::fmt;
use std::time::Duration;

/// The longest interval accepted, in seconds (Dovecot's `UINT_MAX`).
const MAX_SECS: u64 = u32::MAX as u64;

/// Units: the short and long names (either may be abbreviated) and their seconds.
const UNITS: [(&str, &str, u64); 5] = [
    ("secs", "seconds", 1),
    ("mins", "minutes", 60),
    ("hours", "hours", 60 * 60),
    ("days", "days", 24 * 60 * 60),
    ("weeks", "weeks", 7 * 24 * 60 * 60),
];

const EMPTY: &str = "empty";
const NEGATIVE: &str = "negative intervals are not allowed";
const NO_NUMBER: &str = "missing number before the unit";
const NOT_A_NUMBER: &str = "does not start with a number";
const FRACTION: &str = "fractions are not supported, use a smaller unit";
const NO_UNIT: &str = "missing unit (add e.g. \"s\" for seconds)";
const UNKNOWN_UNIT: &str = "unknown unit";
const TOO_LARGE: &str = "too large (at most 4294967295 seconds)";

/// An AGE that is not a valid Dovecot interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntervalError {
    /// The text that was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for IntervalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid interval {:?}: {}", self.input, self.reason)?;
        if self.reason == UNKNOWN_UNIT {
            let (_, unit) = split_number(trim(&self.input));
            write!(
                f,
                " {:?} (use secs, mins, hours, days or weeks)",
                unit.trim_start_matches([' ', '\t'])
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for IntervalError {}

/// Parses an interval such as `7days`, `7d`, `12 hours`, `30m` or `0`.
///
/// # Errors
///
/// An [`IntervalError`] whose reason says what is wrong: empty, negative, no number,
/// no unit (for a number other than 0), an unknown unit, or too large.
pub fn parse_interval(s: &str) -> Result<Duration, IntervalError> {
    let fail = |reason| IntervalError {
        input: s.to_owned(),
        reason,
    };
    let text = trim(s);

    // The number: decimal digits at the start.
    let (digits, rest) = split_number(text);
    if digits.is_empty() {
        return Err(fail(match text.chars().next() {
            None => EMPTY,
            Some('-') => NEGATIVE,
            Some(c) if c.is_ascii_alphabetic() => NO_NUMBER,
            Some(_) => NOT_A_NUMBER,
        }));
    }
    let number = digits
        .bytes()
        .try_fold(0u64, |n, b| {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        })
        .ok_or_else(|| fail(TOO_LARGE))?;

    // The unit, after optional spaces; only 0 may go without one.
    let unit = rest.trim_start_matches([' ', '\t']);
    if unit.is_empty() {
        return if number == 0 {
            Ok(Duration::ZERO)
        } else {
            Err(fail(NO_UNIT))
        };
    }
    if rest.starts_with(['.', ',']) && rest[1..].starts_with(|c: char| c.is_ascii_digit()) {
        return Err(fail(FRACTION));
    }
    let multiplier = UNITS
        .iter()
        .find(|(short, long, _)| is_prefix(unit, short) || is_prefix(unit, long))
        .map(|&(_, _, secs)| secs)
        .ok_or_else(|| fail(UNKNOWN_UNIT))?;

    // The product, within Dovecot's limit.
    let secs = number
        .checked_mul(multiplier)
        .filter(|&secs| secs <= MAX_SECS)
        .ok_or_else(|| fail(TOO_LARGE))?;
    Ok(Duration::from_secs(secs))
}

/// `s` without surrounding ASCII white space.
fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii_whitespace())
}

/// Splits leading ASCII digits from the rest.
fn split_number(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// Whether `unit` is a non-empty, case-insensitive prefix of `name`.
fn is_prefix(unit: &str, name: &str) -> bool {
    !unit.is_empty()
        && name
            .get(..unit.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(unit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const MIN: u64 = 60;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    const WEEK: u64 = 7 * DAY;

    #[rstest]
    #[case("0", 0)]
    #[case("00", 0)]
    #[case(" 0 ", 0)]
    #[case("0s", 0)]
    #[case("0 days", 0)]
    #[case("1s", 1)]
    #[case("5 S", 5)]
    #[case("5sec", 5)]
    #[case("5secs", 5)]
    #[case("5second", 5)]
    #[case("5seconds", 5)]
    #[case("30m", 30 * MIN)]
    #[case("30mi", 30 * MIN)]
    #[case("30min", 30 * MIN)]
    #[case("30mins", 30 * MIN)]
    #[case("30minute", 30 * MIN)]
    #[case("30 minutes", 30 * MIN)]
    #[case("12h", 12 * HOUR)]
    #[case("12 hours", 12 * HOUR)]
    #[case("12HoUrS", 12 * HOUR)]
    #[case("7d", 7 * DAY)]
    #[case("7days", 7 * DAY)]
    #[case("7 DAYS", 7 * DAY)]
    #[case("7   d", 7 * DAY)]
    #[case("7\td", 7 * DAY)]
    #[case("1w", WEEK)]
    #[case("2 weeks", 2 * WEEK)]
    #[case("  3 days\n", 3 * DAY)]
    #[case("007d", 7 * DAY)]
    #[case("4294967295s", u64::from(u32::MAX))]
    #[case("7101 weeks", 7101 * WEEK)]
    fn valid(#[case] input: &str, #[case] secs: u64) {
        assert_eq!(parse_interval(input), Ok(Duration::from_secs(secs)));
    }

    #[rstest]
    #[case::empty("", EMPTY)]
    #[case::blank("   ", EMPTY)]
    #[case::negative("-5d", NEGATIVE)]
    #[case::negative_zero("-0", NEGATIVE)]
    #[case::unit_only("days", NO_NUMBER)]
    #[case::unit_letter_only("d", NO_NUMBER)]
    #[case::plus_sign("+5d", NOT_A_NUMBER)]
    #[case::leading_garbage("~7d", NOT_A_NUMBER)]
    #[case::leading_dot(".5d", NOT_A_NUMBER)]
    #[case::bare_number("7", NO_UNIT)]
    #[case::bare_number_spaces("7  ", NO_UNIT)]
    #[case::fraction("1.5d", FRACTION)]
    #[case::fraction_comma("1,5d", FRACTION)]
    #[case::unknown_letter("7x", UNKNOWN_UNIT)]
    #[case::milliseconds("7ms", UNKNOWN_UNIT)]
    #[case::too_long_unit("7 dayss", UNKNOWN_UNIT)]
    #[case::hours_long_name("7 hourses", UNKNOWN_UNIT)]
    #[case::trailing_garbage("7 days ago", UNKNOWN_UNIT)]
    #[case::two_units("7d12h", UNKNOWN_UNIT)]
    #[case::digit_groups("1 000s", UNKNOWN_UNIT)]
    #[case::non_ascii_unit("7 dä", UNKNOWN_UNIT)]
    #[case::number_overflow("99999999999999999999999s", TOO_LARGE)]
    #[case::product_overflow("31000000000000 weeks", TOO_LARGE)]
    #[case::above_dovecot_limit("4294967296s", TOO_LARGE)]
    #[case::weeks_above_limit("7102w", TOO_LARGE)]
    fn invalid(#[case] input: &str, #[case] reason: &str) {
        let err = parse_interval(input).expect_err("must be refused");
        assert_eq!(err.reason, reason, "input {input:?}");
        assert_eq!(err.input, input);
    }

    #[test]
    fn reasons_are_distinct() {
        let reasons = [
            EMPTY,
            NEGATIVE,
            NO_NUMBER,
            NOT_A_NUMBER,
            FRACTION,
            NO_UNIT,
            UNKNOWN_UNIT,
            TOO_LARGE,
        ];
        for (i, a) in reasons.iter().enumerate() {
            for b in &reasons[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[rstest]
    #[case(
        "7x",
        r#"invalid interval "7x": unknown unit "x" (use secs, mins, hours, days or weeks)"#
    )]
    #[case(
        " 7 days ago",
        r#"invalid interval " 7 days ago": unknown unit "days ago" (use secs, mins, hours, days or weeks)"#
    )]
    #[case(
        "7",
        r#"invalid interval "7": missing unit (add e.g. "s" for seconds)"#
    )]
    #[case("", r#"invalid interval "": empty"#)]
    #[case("-1d", r#"invalid interval "-1d": negative intervals are not allowed"#)]
    fn messages(#[case] input: &str, #[case] expected: &str) {
        let err = parse_interval(input).expect_err("must be refused");
        assert_eq!(err.to_string(), expected);
    }
}
