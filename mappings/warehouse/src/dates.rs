//! Lenient date reading for warehouse documents: ISO dates and date-times
//! (`2025-01-15`, `2025-01-15T13:40:00+01:00`, BMEcat's `dtDATETIME`) and the compact
//! `YYYYMMDD` (EDIFACT format 102, JACOB's openTRANS). Only the calendar date is kept.

use chrono::NaiveDate;

/// Parses a date, or says what was expected.
pub fn parse(text: &str) -> Result<NaiveDate, String> {
    let t = text.trim();
    let expected =
        || format!("expected a date (YYYY-MM-DD, an ISO date-time or YYYYMMDD), got {t:?}");
    if t.len() >= 10 && t.as_bytes().get(4) == Some(&b'-') {
        let day = t.get(..10).ok_or_else(expected)?;
        return NaiveDate::parse_from_str(day, "%Y-%m-%d").map_err(|_| expected());
    }
    if t.len() == 8 && t.bytes().all(|b| b.is_ascii_digit()) {
        return NaiveDate::parse_from_str(t, "%Y%m%d").map_err(|_| expected());
    }
    Err(expected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_iso_datetime_and_compact_dates() {
        let d = NaiveDate::from_ymd_opt(2025, 1, 15).unwrap();
        assert_eq!(parse("2025-01-15").unwrap(), d);
        assert_eq!(parse("2025-01-15T13:40:00+01:00").unwrap(), d);
        assert_eq!(parse(" 20250115 ").unwrap(), d);
        assert!(parse("2025-02-30").unwrap_err().contains("2025-02-30"));
        assert!(parse("15.01.2025").is_err());
        assert!(parse("2025131").is_err());
    }
}
