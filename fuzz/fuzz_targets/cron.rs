//! Fuzzes the cron parser (`runwarden::domain::cron::parse`), which reads the
//! `expected_interval` of `UpsertWorker`, and the fire-time arithmetic that then runs on the
//! parsed schedule for every missed-run check.
//!
//! Must hold, for any text: parsing never panics; `parse_expected` (seconds or cron) never
//! panics. For text that parses: the normalized form parses back to the same schedule; at each
//! of a few fixed instants (including chrono's extremes and a leap second) `next_after`,
//! `prev_before_or_at` and `matches` terminate without panicking and agree: `next_after(t)` is a
//! later whole minute the schedule matches with no fire time in between, `prev_before_or_at(t)`
//! an earlier-or-equal matching whole minute, and `matches(t)` holds exactly when that previous
//! fire time is the minute of `t`.

#![no_main]

use chrono::{DateTime, NaiveDate, TimeDelta, Timelike, Utc};
use libfuzzer_sys::fuzz_target;
use runwarden::domain::{
    cron::{self, CronSchedule},
    schedule::Expected,
    worker_settings,
};

fn instants() -> Vec<DateTime<Utc>> {
    let at = |y, m, d, h, min, s, nano| {
        NaiveDate::from_ymd_opt(y, m, d).and_then(|date| date.and_hms_nano_opt(h, min, s, nano)).map(|t| t.and_utc())
    };
    [
        Some(DateTime::<Utc>::MIN_UTC),
        Some(DateTime::UNIX_EPOCH),
        runwarden_fuzz::now().into(),
        at(2016, 12, 31, 23, 59, 59, 1_500_000_000), // inside a leap second
        at(2100, 2, 28, 23, 59, 59, 999_999_999),    // before a 28-day February in a century year
        at(9999, 12, 31, 23, 59, 0, 0),
        Some(DateTime::<Utc>::MAX_UTC),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn floor_minute(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    t.with_second(0)?.with_nanosecond(0)
}

fn check_fire_times(schedule: &CronSchedule, t: DateTime<Utc>) {
    let Some(minute) = floor_minute(t) else { return };
    if let Some(next) = schedule.next_after(t) {
        assert!(next > minute, "next_after({t}) = {next} is not later");
        assert_eq!(floor_minute(next), Some(next), "next_after({t}) = {next} is not a whole minute");
        assert!(schedule.matches(next), "next_after({t}) = {next} does not match");
        if let Some(before) = next.checked_sub_signed(TimeDelta::minutes(1))
            && let Some(skipped) = schedule.prev_before_or_at(before)
        {
            assert!(skipped <= minute, "{skipped} fires between {t} and next_after = {next}");
        }
    }
    let prev = schedule.prev_before_or_at(t);
    if let Some(prev) = prev {
        assert!(prev <= t, "prev_before_or_at({t}) = {prev} is later");
        assert_eq!(floor_minute(prev), Some(prev), "prev_before_or_at({t}) = {prev} is not a whole minute");
        assert!(schedule.matches(prev), "prev_before_or_at({t}) = {prev} does not match");
    }
    assert_eq!(schedule.matches(t), prev == Some(minute), "matches({t}) disagrees with prev_before_or_at = {prev:?}");
}

fuzz_target!(|expr: &str| {
    if let Ok(Some(expected)) = worker_settings::parse_expected(expr) {
        let grace = worker_settings::default_grace(&expected, runwarden_fuzz::now());
        assert!(grace >= TimeDelta::zero(), "negative default grace {grace} for {expr:?}");
        if let Expected::Every(interval) = expected {
            assert!(interval > TimeDelta::zero());
        }
    }

    let Ok(schedule) = cron::parse(expr) else { return };
    let normalized = schedule.to_string();
    assert_eq!(cron::parse(&normalized).as_ref(), Ok(&schedule), "{expr:?} normalizes to {normalized:?}");
    for t in instants() {
        check_fire_times(&schedule, t);
    }
});
