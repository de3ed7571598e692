//! Cron expressions for worker schedules: parsing the standard five-field syntax and computing fire times.
//!
//! This module owns the cron grammar runwarden accepts, the [`CronSchedule`] value it parses into, the
//! normalized text form of a schedule ([`fmt::Display`]) and the "next / previous fire time" arithmetic.
//! Everything is in UTC at minute resolution. It does no I/O and never reads the clock: every function
//! takes the instant it reasons about.
//!
//! # Grammar
//!
//! `minute hour day-of-month month day-of-week`, fields separated by whitespace:
//!
//! | field        | values | names |
//! |--------------|--------|-------|
//! | minute       | 0-59   |       |
//! | hour         | 0-23   |       |
//! | day-of-month | 1-31   |       |
//! | month        | 1-12   | `JAN`-`DEC` |
//! | day-of-week  | 0-7 (0 and 7 = Sunday) | `SUN`-`SAT` |
//!
//! Each field is a comma-separated list of items; an item is `*`, a value `a`, a range `a-b`, optionally
//! followed by a step `/n` (`*/n`, `a-b/n`, and `a/n` meaning `a-max/n`). Names are case-insensitive and
//! may appear in ranges (`MON-FRI`). Ranges must not be reversed (`FRI-MON` is rejected rather than
//! wrapped). Macros: `@hourly`, `@daily`, `@midnight`, `@weekly`, `@monthly`, `@yearly`, `@annually`
//! (`@reboot` is rejected: it has no fire times).
//!
//! # Day matching (Vixie semantics)
//!
//! A day-of-month or day-of-week field is *unrestricted* when it is a bare `*` or `*/n`. When both are
//! restricted a day matches if **either** matches (`0 0 13 * FRI` fires on every 13th and every Friday);
//! otherwise a day matches if **both** match. Like Vixie cron, `*/2` counts as unrestricted, so
//! `0 0 */2 * MON` fires on odd-numbered days that are Mondays.
//!
//! # Search horizon
//!
//! [`CronSchedule::next_after`] and [`CronSchedule::prev_before_or_at`] look at most
//! [`SEARCH_HORIZON_DAYS`] days (8 years: long enough for `0 0 29 2 *` across the non-leap year 2100).
//! `None` means "no fire time within the horizon" (e.g. `0 0 30 2 *`, or the end of chrono's range).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Timelike, Utc};

/// How many days [`CronSchedule::next_after`] / [`CronSchedule::prev_before_or_at`] scan before giving up.
pub const SEARCH_HORIZON_DAYS: u32 = 8 * 366;

const MINUTES_PER_DAY: u32 = 24 * 60;

/// Why a cron expression was rejected. `Display` gives `field: message`, e.g. `hour: 24 is out of range 0-23`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronError {
    /// The offending field (`minute`, `hour`, `day-of-month`, `month`, `day-of-week`), or `expression`
    /// when the expression as a whole is malformed.
    pub field: &'static str,
    /// What is wrong, quoting the offending value.
    pub message: String,
}

impl CronError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for CronError {}

/// A parsed cron schedule. Each field is a bit set (bit `i` = value `i`); day-of-week uses 0-6 with
/// Sunday = 0 (a `7` in the text is folded into 0).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CronSchedule {
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// `Some(step)` when the day-of-month field was a bare `*` (step 1) or `*/step` (unrestricted).
    dom_star: Option<u32>,
    /// `Some(step)` when the day-of-week field was a bare `*` (step 1) or `*/step` (unrestricted).
    dow_star: Option<u32>,
}

/// Static description of one field: its name in error messages, its bounds and its names.
struct FieldSpec {
    name: &'static str,
    min: u32,
    /// Largest value accepted in the text (7 for day-of-week).
    max: u32,
    /// Largest value `*` expands to (6 for day-of-week, so `*/n` never lists Sunday twice).
    star_max: u32,
    /// Names for `min`, `min + 1`, ... (empty when the field has none).
    names: &'static [&'static str],
}

const MINUTE: FieldSpec = FieldSpec { name: "minute", min: 0, max: 59, star_max: 59, names: &[] };
const HOUR: FieldSpec = FieldSpec { name: "hour", min: 0, max: 23, star_max: 23, names: &[] };
const DAY_OF_MONTH: FieldSpec = FieldSpec { name: "day-of-month", min: 1, max: 31, star_max: 31, names: &[] };
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    star_max: 12,
    names: &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
};
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    star_max: 6,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

/// A parsed field: its bit set and, when it was a bare `*` or `*/n`, that step.
struct Field {
    bits: u64,
    star_step: Option<u32>,
}

/// Parses a cron expression (five fields or a macro). See the module docs for the grammar.
pub fn parse(expr: &str) -> Result<CronSchedule, CronError> {
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err(CronError::new("expression", "is empty"));
    }
    if let Some(name) = trimmed.strip_prefix('@') {
        let expanded = match name.to_ascii_lowercase().as_str() {
            "hourly" => "0 * * * *",
            "daily" | "midnight" => "0 0 * * *",
            "weekly" => "0 0 * * 0",
            "monthly" => "0 0 1 * *",
            "yearly" | "annually" => "0 0 1 1 *",
            "reboot" => return Err(CronError::new("expression", "@reboot is not supported (it has no fire times)")),
            _ => return Err(CronError::new("expression", format!("unknown macro '{trimmed}'"))),
        };
        return parse(expanded);
    }
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    let [minute, hour, dom, month, dow] = fields.as_slice() else {
        return Err(CronError::new(
            "expression",
            format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) but found {} in '{trimmed}'",
                fields.len()
            ),
        ));
    };
    let minute = parse_field(minute, &MINUTE)?;
    let hour = parse_field(hour, &HOUR)?;
    let dom = parse_field(dom, &DAY_OF_MONTH)?;
    let month = parse_field(month, &MONTH)?;
    let dow = parse_field(dow, &DAY_OF_WEEK)?;
    // Fold Sunday-as-7 into Sunday-as-0.
    let dow_bits = (dow.bits & 0x7f) | ((dow.bits >> 7) & 1);
    Ok(CronSchedule {
        minutes: minute.bits,
        hours: hour.bits,
        days_of_month: dom.bits,
        months: month.bits,
        days_of_week: dow_bits,
        dom_star: dom.star_step,
        dow_star: dow.star_step,
    })
}

fn parse_field(text: &str, spec: &FieldSpec) -> Result<Field, CronError> {
    let mut bits = 0u64;
    let items: Vec<&str> = text.split(',').collect();
    let mut star_step = None;
    for item in &items {
        if item.is_empty() {
            return Err(CronError::new(spec.name, format!("empty list item in '{text}'")));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(parse_step(step, item, spec)?)),
            None => (*item, None),
        };
        let (start, end, is_star) = if range == "*" {
            (spec.min, spec.star_max, true)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (parse_value(a, spec)?, parse_value(b, spec)?);
            if a > b {
                return Err(CronError::new(
                    spec.name,
                    format!("range {range} is reversed (start must not exceed end)"),
                ));
            }
            (a, b, false)
        } else {
            let a = parse_value(range, spec)?;
            // `a/n` means `a-max/n`; a lone `a` is just `a`.
            (a, if step.is_some() { spec.max } else { a }, false)
        };
        let step = step.unwrap_or(1);
        let mut value = start;
        while value <= end {
            bits |= 1 << value;
            value += step;
        }
        if is_star && items.len() == 1 {
            star_step = Some(step);
        }
    }
    Ok(Field { bits, star_step })
}

fn parse_step(step: &str, item: &str, spec: &FieldSpec) -> Result<u32, CronError> {
    if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CronError::new(spec.name, format!("step '{step}' in '{item}' is not a number")));
    }
    match step.parse::<u32>() {
        Ok(n) if (1..=spec.max.max(1)).contains(&n) => Ok(n),
        _ => Err(CronError::new(spec.name, format!("step {step} in '{item}' is out of range 1-{}", spec.max.max(1)))),
    }
}

fn parse_value(text: &str, spec: &FieldSpec) -> Result<u32, CronError> {
    if let Some(index) = spec.names.iter().position(|name| name.eq_ignore_ascii_case(text)) {
        return Ok(spec.min + index as u32);
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        let hint = if spec.names.is_empty() { String::new() } else { format!(" or one of {}", spec.names.join(",")) };
        return Err(CronError::new(
            spec.name,
            format!("'{text}' is not a number{hint} (expected {}-{})", spec.min, spec.max),
        ));
    }
    match text.parse::<u32>() {
        Ok(v) if (spec.min..=spec.max).contains(&v) => Ok(v),
        _ => Err(CronError::new(spec.name, format!("{text} is out of range {}-{}", spec.min, spec.max))),
    }
}

impl FromStr for CronSchedule {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl CronSchedule {
    /// The first fire time strictly after `t` (seconds and below of `t` are ignored for the comparison:
    /// a schedule firing every minute gives 10:01:00 for both 10:00:00 and 10:00:59).
    /// `None` when nothing fires within [`SEARCH_HORIZON_DAYS`].
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = floor_minute(t)?.checked_add_signed(TimeDelta::minutes(1))?;
        let mut date = start.date_naive();
        let mut from = start.hour() * 60 + start.minute();
        for _ in 0..=SEARCH_HORIZON_DAYS {
            if self.date_matches(date)
                && let Some(minute) = self.first_minute_from(from)
            {
                return at_minute(date, minute);
            }
            date = date.succ_opt()?;
            from = 0;
        }
        None
    }

    /// The latest fire time at or before `t` (a fire time at 10:00 counts for any `t` in 10:00:00-10:00:59).
    /// `None` when nothing fired within [`SEARCH_HORIZON_DAYS`].
    pub fn prev_before_or_at(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = floor_minute(t)?;
        let mut date = start.date_naive();
        let mut to = start.hour() * 60 + start.minute();
        for _ in 0..=SEARCH_HORIZON_DAYS {
            if self.date_matches(date)
                && let Some(minute) = self.last_minute_until(to)
            {
                return at_minute(date, minute);
            }
            date = date.pred_opt()?;
            to = MINUTES_PER_DAY - 1;
        }
        None
    }

    /// Whether the schedule fires in the minute containing `t`.
    pub fn matches(&self, t: DateTime<Utc>) -> bool {
        self.date_matches(t.date_naive()) && bit(self.hours, t.hour()) && bit(self.minutes, t.minute())
    }

    /// Whether the schedule fires at some minute of `date` (month plus the Vixie day rule).
    fn date_matches(&self, date: NaiveDate) -> bool {
        if !bit(self.months, date.month()) {
            return false;
        }
        let dom = bit(self.days_of_month, date.day());
        let dow = bit(self.days_of_week, date.weekday().num_days_from_sunday());
        if self.dom_star.is_some() || self.dow_star.is_some() { dom && dow } else { dom || dow }
    }

    /// The first firing minute of a matching day at or after minute-of-day `from`.
    fn first_minute_from(&self, from: u32) -> Option<u32> {
        let mut minute_floor = from % 60;
        for hour in from / 60..24 {
            if bit(self.hours, hour) {
                let candidates = self.minutes & (u64::MAX << minute_floor);
                if candidates != 0 {
                    return Some(hour * 60 + candidates.trailing_zeros());
                }
            }
            minute_floor = 0;
        }
        None
    }

    /// The last firing minute of a matching day at or before minute-of-day `to`.
    fn last_minute_until(&self, to: u32) -> Option<u32> {
        let mut minute_ceiling = to % 60;
        for hour in (0..=to / 60).rev() {
            if bit(self.hours, hour) {
                let candidates = self.minutes & (u64::MAX >> (63 - minute_ceiling));
                if candidates != 0 {
                    return Some(hour * 60 + 63 - candidates.leading_zeros());
                }
            }
            minute_ceiling = 59;
        }
        None
    }
}

fn bit(set: u64, value: u32) -> bool {
    value < 64 && set & (1 << value) != 0
}

fn floor_minute(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    t.with_second(0)?.with_nanosecond(0)
}

fn at_minute(date: NaiveDate, minute_of_day: u32) -> Option<DateTime<Utc>> {
    Some(date.and_hms_opt(minute_of_day / 60, minute_of_day % 60, 0)?.and_utc())
}

/// Normalized form: numbers instead of names, Sunday as 0, `*` for a full minute/hour/month field,
/// `*/n` for an arithmetic progression from the field's minimum, `a-b/n` for other progressions of three
/// or more values, otherwise a comma list of values and `a-b` runs. Day-of-month and day-of-week keep
/// their restricted/unrestricted status, so `parse(&s.to_string()) == Ok(s)` always holds.
impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {}",
            render_free(self.minutes, 0, 59),
            render_free(self.hours, 0, 23),
            render_day(self.days_of_month, 1, 31, self.dom_star),
            render_free(self.months, 1, 12),
            render_day(self.days_of_week, 0, 6, self.dow_star),
        )
    }
}

/// Renders a field whose `*`-ness has no meaning of its own (minute, hour, month).
fn render_free(bits: u64, min: u32, max: u32) -> String {
    match star_step_of(bits, min, max) {
        Some(1) => "*".to_string(),
        Some(step) => format!("*/{step}"),
        None => render_list(bits, min, max),
    }
}

/// Renders day-of-month / day-of-week, keeping the Vixie "unrestricted" flag.
fn render_day(bits: u64, min: u32, max: u32, star: Option<u32>) -> String {
    match star {
        Some(1) => "*".to_string(),
        Some(step) => format!("*/{step}"),
        None => render_list(bits, min, max),
    }
}

/// `Some(n)` when `bits` is exactly `min, min + n, min + 2n, ... <= max` with at least two values.
fn star_step_of(bits: u64, min: u32, max: u32) -> Option<u32> {
    (1..=max - min).find(|&step| bits.count_ones() >= 2 && progression(min, max, step) == bits)
}

fn progression(start: u32, end: u32, step: u32) -> u64 {
    (start..=end).step_by(step as usize).fold(0, |acc, v| acc | 1 << v)
}

fn render_list(bits: u64, min: u32, max: u32) -> String {
    let values: Vec<u32> = (min..=max).filter(|&v| bit(bits, v)).collect();
    if let [first, second, .., last] = values.as_slice() {
        let step = second - first;
        if step >= 2 && progression(*first, *last, step) == bits {
            return format!("{first}-{last}/{step}");
        }
    }
    let mut parts = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let mut j = i;
        while j + 1 < values.len() && values[j + 1] == values[j] + 1 {
            j += 1;
        }
        parts.push(if j > i { format!("{}-{}", values[i], values[j]) } else { values[i].to_string() });
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn cron(expr: &str) -> CronSchedule {
        parse(expr).unwrap()
    }

    #[test]
    fn every_minute_and_seconds_are_ignored() {
        let c = cron("* * * * *");
        let t = Utc.with_ymd_and_hms(2024, 1, 1, 10, 0, 30).unwrap();
        assert_eq!(c.next_after(t), Some(utc(2024, 1, 1, 10, 1)));
        assert_eq!(c.next_after(utc(2024, 1, 1, 10, 0)), Some(utc(2024, 1, 1, 10, 1)));
        assert_eq!(c.prev_before_or_at(t), Some(utc(2024, 1, 1, 10, 0)));
    }

    #[test]
    fn known_schedules() {
        let t = utc(2024, 3, 15, 12, 34); // a Friday
        assert_eq!(cron("*/15 * * * *").next_after(t), Some(utc(2024, 3, 15, 12, 45)));
        assert_eq!(cron("0 3 * * *").next_after(t), Some(utc(2024, 3, 16, 3, 0)));
        assert_eq!(cron("30 9 * * MON-FRI").next_after(t), Some(utc(2024, 3, 18, 9, 30)));
        assert_eq!(cron("0 0 1 * *").next_after(t), Some(utc(2024, 4, 1, 0, 0)));
        assert_eq!(cron("0 12 * * sat,sun").next_after(t), Some(utc(2024, 3, 16, 12, 0)));
        assert_eq!(cron("5-10/5 8-18/5 * * *").next_after(t), Some(utc(2024, 3, 15, 13, 5)));
        assert_eq!(cron("0 0 1 jan *").next_after(t), Some(utc(2025, 1, 1, 0, 0)));
        assert_eq!(cron("0 0 1 jan *").prev_before_or_at(t), Some(utc(2024, 1, 1, 0, 0)));
        assert_eq!(cron("0 3 * * *").prev_before_or_at(t), Some(utc(2024, 3, 15, 3, 0)));
        assert_eq!(cron("0 3 * * *").prev_before_or_at(utc(2024, 3, 15, 3, 0)), Some(utc(2024, 3, 15, 3, 0)));
        assert_eq!(cron("45 23 * * *").prev_before_or_at(utc(2024, 3, 1, 0, 10)), Some(utc(2024, 2, 29, 23, 45)));
    }

    #[test]
    fn macros_expand() {
        let t = utc(2024, 3, 15, 12, 34);
        assert_eq!(cron("@hourly").to_string(), "0 * * * *");
        assert_eq!(cron("@daily"), cron("@midnight"));
        assert_eq!(cron("@weekly").next_after(t), Some(utc(2024, 3, 17, 0, 0)));
        assert_eq!(cron("@monthly").next_after(t), Some(utc(2024, 4, 1, 0, 0)));
        assert_eq!(cron("@YEARLY"), cron("@annually"));
        assert_eq!(cron("@annually").to_string(), "0 0 1 1 *");
    }

    #[test]
    fn feb_29_and_month_ends() {
        let leap = cron("0 0 29 2 *");
        assert_eq!(leap.next_after(utc(2024, 3, 1, 0, 0)), Some(utc(2028, 2, 29, 0, 0)));
        // 2100 is not a leap year: the 8-year gap 2096 -> 2104 is within the horizon.
        assert_eq!(leap.next_after(utc(2096, 3, 1, 0, 0)), Some(utc(2104, 2, 29, 0, 0)));
        assert_eq!(leap.prev_before_or_at(utc(2024, 2, 28, 23, 59)), Some(utc(2020, 2, 29, 0, 0)));
        let day31 = cron("0 0 31 * *");
        assert_eq!(day31.next_after(utc(2024, 1, 31, 0, 0)), Some(utc(2024, 3, 31, 0, 0)));
        assert_eq!(day31.next_after(utc(2024, 3, 31, 0, 0)), Some(utc(2024, 5, 31, 0, 0)));
        assert_eq!(day31.prev_before_or_at(utc(2024, 7, 30, 0, 0)), Some(utc(2024, 5, 31, 0, 0)));
        assert_eq!(cron("59 23 31 12 *").next_after(utc(2024, 12, 31, 23, 59)), Some(utc(2025, 12, 31, 23, 59)));
        assert_eq!(cron("0 0 30 2 *").next_after(utc(2024, 1, 1, 0, 0)), None);
        assert_eq!(cron("0 0 30 2 *").prev_before_or_at(utc(2024, 1, 1, 0, 0)), None);
    }

    #[test]
    fn extremes_of_time_give_none_not_panics() {
        let every = cron("* * * * *");
        assert_eq!(every.next_after(DateTime::<Utc>::MAX_UTC), None);
        assert_eq!(
            every.prev_before_or_at(DateTime::<Utc>::MIN_UTC),
            Some(floor_minute(DateTime::<Utc>::MIN_UTC).unwrap())
        );
        assert_eq!(cron("0 0 2 1 *").prev_before_or_at(DateTime::<Utc>::MIN_UTC), None);
        assert_eq!(cron("0 0 1 1 *").next_after(DateTime::<Utc>::MAX_UTC - TimeDelta::days(3)), None);
    }

    #[test]
    fn sunday_is_0_and_7() {
        assert_eq!(cron("0 0 * * 7"), cron("0 0 * * 0"));
        assert_eq!(cron("0 0 * * SUN"), cron("0 0 * * 0"));
        assert_eq!(cron("0 0 * * 5-7"), cron("0 0 * * 0,5,6"));
        assert_eq!(cron("0 0 * * 0-7").to_string(), "0 0 * * 0-6");
        assert_eq!(cron("0 0 * * 7").next_after(utc(2024, 3, 15, 12, 0)), Some(utc(2024, 3, 17, 0, 0)));
    }

    #[test]
    fn vixie_day_rule() {
        // Both restricted: the 13th OR a Friday.
        let c = cron("0 0 13 * FRI");
        assert_eq!(c.next_after(utc(2024, 3, 1, 0, 0)), Some(utc(2024, 3, 8, 0, 0))); // Friday
        assert_eq!(c.next_after(utc(2024, 3, 8, 0, 0)), Some(utc(2024, 3, 13, 0, 0))); // Wednesday the 13th
        // One unrestricted: both must match (`*` dom matches every day, so just Fridays).
        assert_eq!(cron("0 0 * * FRI").next_after(utc(2024, 3, 8, 0, 0)), Some(utc(2024, 3, 15, 0, 0)));
        // `*/2` is unrestricted too (Vixie): odd days that are Mondays.
        let odd_mondays = cron("0 0 */2 * MON");
        assert_eq!(odd_mondays.next_after(utc(2024, 3, 1, 0, 0)), Some(utc(2024, 3, 11, 0, 0)));
        // A full but explicit range is restricted: every day OR Monday = every day.
        assert_eq!(cron("0 0 1-31 * MON").next_after(utc(2024, 3, 1, 0, 0)), Some(utc(2024, 3, 2, 0, 0)));
    }

    #[test]
    fn display_normalizes() {
        assert_eq!(cron("0-59 */1 * JAN-DEC *").to_string(), "* * * * *");
        assert_eq!(cron("0,15,30,45 0 * * *").to_string(), "*/15 0 * * *");
        assert_eq!(cron("1,2,3,7 9-17 1-31 2,4 MON-FRI").to_string(), "1-3,7 9-17 1-31 2,4 1-5");
        assert_eq!(cron("5/20 * */2 * *").to_string(), "5-45/20 * */2 * *");
        assert_eq!(cron("0 0 1-31/2 * *").to_string(), "0 0 1-31/2 * *");
        assert_eq!(cron("  0   0 * *   7 ").to_string(), "0 0 * * 0");
    }

    #[test]
    fn errors_name_field_and_value() {
        let err = |e: &str| parse(e).unwrap_err().to_string();
        assert_eq!(err("0 24 * * *"), "hour: 24 is out of range 0-23");
        assert_eq!(err("60 * * * *"), "minute: 60 is out of range 0-59");
        assert_eq!(err("0 0 0 * *"), "day-of-month: 0 is out of range 1-31");
        assert_eq!(err("0 0 * 13 *"), "month: 13 is out of range 1-12");
        assert_eq!(err("0 0 * * 8"), "day-of-week: 8 is out of range 0-7");
        assert_eq!(
            err("0 0 * * FOO"),
            "day-of-week: 'FOO' is not a number or one of SUN,MON,TUE,WED,THU,FRI,SAT (expected 0-7)"
        );
        assert_eq!(err("x * * * *"), "minute: 'x' is not a number (expected 0-59)");
        assert_eq!(err("*/0 * * * *"), "minute: step 0 in '*/0' is out of range 1-59");
        assert_eq!(err("*/x * * * *"), "minute: step 'x' in '*/x' is not a number");
        assert_eq!(err("0 10-5 * * *"), "hour: range 10-5 is reversed (start must not exceed end)");
        assert_eq!(err("0 1,,2 * * *"), "hour: empty list item in '1,,2'");
        assert_eq!(
            err("0 0 * *"),
            "expression: expected 5 fields (minute hour day-of-month month day-of-week) but found 4 in '0 0 * *'"
        );
        assert_eq!(err("0 0 * * * *").split(':').next(), Some("expression"));
        assert_eq!(err(""), "expression: is empty");
        assert_eq!(err("@reboot"), "expression: @reboot is not supported (it has no fire times)");
        assert_eq!(err("@often"), "expression: unknown macro '@often'");
        assert_eq!(err("99999999999 * * * *"), "minute: 99999999999 is out of range 0-59");
        assert_eq!(err("-1 * * * *"), "minute: '' is not a number (expected 0-59)");
        assert_eq!(
            parse("0 0 * * *").map(|c| c.to_string()),
            "0 0 * * *".parse::<CronSchedule>().map(|c| c.to_string())
        );
    }

    /// One field item in valid syntax: `*`, `*/n`, `a`, `a-b`, `a-b/n`.
    fn item(min: u32, max: u32) -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            (1..=max - min).prop_map(|n| format!("*/{n}")),
            (min..=max).prop_map(|a| a.to_string()),
            (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            (min..=max, min..=max, 1..=max - min).prop_map(|(a, b, n)| format!("{}-{}/{n}", a.min(b), a.max(b))),
        ]
    }

    fn field(min: u32, max: u32) -> impl Strategy<Value = String> {
        prop_oneof![
            3 => item(min, max),
            1 => prop::collection::vec(item(min, max), 2..4).prop_map(|items| items.join(",")),
        ]
    }

    fn expression() -> impl Strategy<Value = String> {
        (field(0, 59), field(0, 23), field(1, 31), field(1, 12), field(0, 7))
            .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"))
    }

    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        // 2000-01-01 .. 2040-01-01, second resolution.
        (946_684_800i64..2_208_988_800i64).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap())
    }

    /// Brute-force oracle: every matching minute in the open interval (lo, hi), scanning at most `cap` minutes
    /// from each end.
    fn brute_matches_between(
        c: &CronSchedule,
        lo: DateTime<Utc>,
        hi: DateTime<Utc>,
        cap: i64,
    ) -> Option<DateTime<Utc>> {
        let lo_minute = floor_minute(lo).unwrap();
        let hi_minute = floor_minute(hi).unwrap();
        let mut found = None;
        for k in 1..=cap {
            let forward = lo_minute + TimeDelta::minutes(k);
            if forward >= hi_minute {
                break;
            }
            if c.matches(forward) {
                found = Some(forward);
                break;
            }
            let backward = hi_minute - TimeDelta::minutes(k);
            if backward > lo_minute && c.matches(backward) {
                found = Some(backward);
                break;
            }
        }
        found
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,40}") {
            let _ = parse(&s);
        }

        #[test]
        fn cron_like_strings_never_panic(s in "[0-9*/,A-Za-z@ -]{0,30}") {
            if let Ok(c) = parse(&s) {
                let t = utc(2024, 1, 1, 0, 0);
                let _ = (c.next_after(t), c.prev_before_or_at(t), c.to_string());
            }
        }

        #[test]
        fn display_round_trips(expr in expression()) {
            let c = parse(&expr).unwrap();
            let normalized = c.to_string();
            let reparsed = parse(&normalized);
            prop_assert_eq!(reparsed.as_ref(), Ok(&c), "{} -> {}", expr, normalized);
            prop_assert_eq!(parse(&normalized).unwrap().to_string(), normalized);
        }

        #[test]
        fn next_and_prev_bracket_t(expr in expression(), t in instant()) {
            let c = parse(&expr).unwrap();
            let next = c.next_after(t);
            let prev = c.prev_before_or_at(t);
            if let Some(n) = next {
                prop_assert!(n > t, "{} next {} <= {}", expr, n, t);
                prop_assert!(c.matches(n));
                prop_assert_eq!(n.second(), 0);
            }
            if let Some(p) = prev {
                prop_assert!(p <= t);
                prop_assert!(c.matches(p));
                // next_after(prev) is next, unless the gap exceeds the search horizon.
                let horizon = TimeDelta::days(i64::from(SEARCH_HORIZON_DAYS));
                match c.next_after(p) {
                    None => prop_assert!(next.is_none_or(|n| n - p > horizon)),
                    found => prop_assert_eq!(found, next, "{}: next_after(prev) must be next", expr),
                }
            }
            if let Some(n) = next {
                let horizon = TimeDelta::days(i64::from(SEARCH_HORIZON_DAYS));
                match c.prev_before_or_at(n - TimeDelta::seconds(1)) {
                    None => prop_assert!(prev.is_none_or(|p| n - p > horizon)),
                    found => prop_assert_eq!(found, prev, "{}: prev_before_or_at(next - 1s) must be prev", expr),
                }
            }
            // Independent oracle: no matching minute strictly between prev (or t) and next (or t + 3 days),
            // scanning up to 3 days from each end.
            let lo = prev.unwrap_or(t);
            let hi = next.unwrap_or(t + TimeDelta::days(3));
            let stray = brute_matches_between(&c, lo, hi, 3 * 1440);
            prop_assert!(stray.is_none(), "{}: {:?} fires between {:?} and {:?}", expr, stray, prev, next);
            // Nothing in (prev, t] either, and t's own minute counts as prev when it matches.
            if c.matches(t) {
                prop_assert_eq!(prev, floor_minute(t));
            }
        }
    }
}
