//! The timestamp format of both signatures (`Timestamp`, `x-acs-date`):
//! `YYYY-MM-DDThh:mm:ssZ`, optionally with a fraction, always UTC.
//!
//! Hand-written on purpose: the accepted set is exactly what the SDKs send and the
//! tests pin (upper-case `T` and `Z` only, no offsets, 1-9 fraction digits, a leap
//! second rolls over). `httpdate` (already in the tree) only speaks the RFC 7231
//! `Sun, 06 Nov 1994 ...` form, and `time`'s RFC 3339 parser accepts lower-case
//! separators and offsets and refuses `:60`, so either would change what is accepted.

/// Parses `YYYY-MM-DDThh:mm:ssZ` (optionally `.f{1,9}` before the `Z`) into
/// milliseconds since the Unix epoch, UTC. Returns `None` for anything
/// malformed or out of range; never panics. A leap second (`:60`) is accepted
/// and lands on the next minute's first second, which is all a freshness
/// window needs.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    // Fixed part: "YYYY-MM-DDThh:mm:ss" is 19 bytes, then optional fraction, then 'Z'.
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;

    let tail = &b[19..b.len() - 1];
    let millis = if tail.is_empty() {
        0
    } else {
        let frac = tail.strip_prefix(b".")?;
        if frac.is_empty() || frac.len() > 9 || !frac.iter().all(u8::is_ascii_digit) {
            return None;
        }
        // Keep milliseconds, truncating finer digits; pad short fractions.
        let mut ms = 0i64;
        for i in 0..3 {
            ms = ms * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
        }
        ms
    };

    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

/// Parses a run of ASCII digits; `None` if any byte is not a digit.
fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
    })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`); the era shift keeps the divisions on non-negative values.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = (month + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + day - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DDThh:mm:ssZ` (UTC): the
/// `Timestamp` / `x-acs-date` a client sends. The inverse of [`parse_timestamp_ms`] to the second.
pub fn format_timestamp_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (H. Hinnant's algorithm), the inverse of `days_from_civil`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- timestamps -------------------------------------------------------

    #[test]
    fn timestamps_valid() {
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_timestamp_ms("2026-01-01T00:00:00Z"),
            Some(1_767_225_600_000)
        );
        // ExpireTime used in the facts vectors is 2026-01-01T01:01:00Z.
        assert_eq!(
            parse_timestamp_ms("2026-01-01T01:01:00Z"),
            Some(1_767_229_260_000)
        );
        assert_eq!(
            parse_timestamp_ms("2024-02-29T12:00:00Z"),
            Some(1_709_208_000_000)
        );
        assert_eq!(
            parse_timestamp_ms("2000-02-29T00:00:00Z"),
            Some(951_782_400_000)
        );
        assert_eq!(parse_timestamp_ms("1969-12-31T23:59:59Z"), Some(-1000));
        assert_eq!(
            parse_timestamp_ms("9999-12-31T23:59:59Z"),
            Some(253_402_300_799_000)
        );
        assert_eq!(
            parse_timestamp_ms("2026-11-24T10:07:45Z"),
            Some(1_795_514_865_000)
        );
        // Fractions: truncated to milliseconds, short ones padded.
        assert_eq!(
            parse_timestamp_ms("2026-01-01T00:00:00.123Z"),
            Some(1_767_225_600_123)
        );
        assert_eq!(
            parse_timestamp_ms("2026-01-01T00:00:00.5Z"),
            Some(1_767_225_600_500)
        );
        assert_eq!(
            parse_timestamp_ms("2026-01-01T00:00:00.123999999Z"),
            Some(1_767_225_600_123)
        );
        // Leap second rolls into the next minute.
        assert_eq!(
            parse_timestamp_ms("2016-12-31T23:59:60Z"),
            parse_timestamp_ms("2017-01-01T00:00:00Z")
        );
    }

    #[test]
    fn timestamps_invalid() {
        for s in [
            "",
            "Z",
            "2026-01-01",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00z",
            "2026-01-01t00:00:00Z",
            "2026-01-01 00:00:00Z",
            "2026-01-01T00:00:00+00:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00.1234567890Z",
            "2026-01-01T00:00:00,123Z",
            "2026-01-01T00:00:00.12aZ",
            "2026-01-01T00:00:00ZZ",
            "2026-1-01T00:00:00Z",
            "+026-01-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-01-32T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:60:00Z",
            "2026-01-01T00:00:61Z",
            "2026-01-01T0a:00:00Z",
            "２026-01-01T00:00:00Z",
            "2026-01-01T00:00:0é",
            "2026-01-01T00:00:00.é",
        ] {
            assert_eq!(parse_timestamp_ms(s), None, "{s:?}");
        }
    }

    #[test]
    fn days_from_civil_matches_day_counting() {
        // Walk day by day from 1600-01-01 to 2400-12-31 and check continuity.
        let mut expected = days_from_civil(1600, 1, 1);
        for y in 1600..=2400 {
            for m in 1..=12 {
                for d in 1..=days_in_month(y, m) {
                    assert_eq!(days_from_civil(y, m, d), expected);
                    expected += 1;
                }
            }
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }

    #[test]
    fn format_timestamp_round_trips() {
        for ms in [0, 951_782_400_000, 1_767_225_600_000, 4_102_444_799_000] {
            let text = format_timestamp_ms(ms);
            assert_eq!(parse_timestamp_ms(&text), Some(ms), "{text}");
        }
        assert_eq!(
            format_timestamp_ms(1_767_225_600_000),
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(format_timestamp_ms(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
