//! Worker schedules, health states, missed runs and schedule inference (Healthchecks.io-style semantics).
//!
//! This module owns what a worker is *expected* to do ([`Schedule`]: a fixed interval or a cron expression,
//! plus a grace period) and the verdicts derived from that expectation and the last reported run:
//! [`health`], [`next_deadline`], [`missed_slots`] / [`missed_slots_since`], [`running_too_often`], and
//! inferring a schedule from regular start times ([`infer`]). It does no I/O and never reads the clock:
//! "now" is always a parameter, so tests drive it with plain values.
//!
//! # Slots and deadlines
//!
//! A *slot* is a moment a run is expected to start. After an anchor `a` (the last run's start):
//! - `Every(i)`: the slots are `a + i`, `a + 2i`, ... (the phase follows the last run, like Healthchecks'
//!   "period" checks);
//! - `Cron(c)`: the slots are the cron's fire times strictly after `a`.
//!
//! A slot's *deadline* is `slot + grace` (a negative grace counts as zero). A slot is *missed* once
//! `now > deadline` with no run after the anchor; a deadline equal to `now` has not passed yet.
//!
//! # Health rules ([`health`])
//!
//! 1. The schedule is paused → `Paused` (whether or not the worker ever ran).
//! 2. No run ever (`last_run_started` is `None`) → `New`, however long ago the worker was first seen
//!    (Healthchecks keeps a never-pinged check "new"; `first_seen` does not change the verdict).
//! 3. No schedule (and not paused) → `Up`: there is no expectation to miss.
//! 4. Otherwise count the missed slots after the last run: 0 → `Up`, 1 → `Late`, 2 or more → `Down`.
//!    For `Every(i)` that means: `Up` until `last + i + grace`, `Late` until one more interval has passed
//!    (`last + 2i + grace`), `Down` after. A new report resets the anchor, so a late report brings the
//!    worker straight back to `Up`.
//!
//! # Pause and resume
//!
//! While paused there are no missed slots and health is `Paused`. On resume the slots that fell inside the
//! pause must not be reported, so the caller anchors at the later of the last run start and the resume
//! time ([`resume_anchor`]) and passes that anchor both to [`missed_slots_since`] and as
//! `HealthInput::last_run_started`. The worker then gets one full interval (or cron slot) plus grace after
//! the resume before it can be `Late`.

use chrono::{DateTime, TimeDelta, Utc};

use super::{anomaly::median, cron::CronSchedule};

/// At most this many missed slots are returned by one call (the most recent ones).
pub const MAX_MISSED_SLOTS: usize = 100;
/// [`running_too_often`] needs at least this many gaps between starts.
pub const TOO_OFTEN_MIN_GAPS: usize = 5;
/// [`running_too_often`] looks at this many most recent gaps.
pub const TOO_OFTEN_WINDOW_GAPS: usize = 10;
/// [`running_too_often`] fires when the median gap is below this fraction of the expected gap.
pub const TOO_OFTEN_RATIO: f64 = 0.5;
/// [`infer`] needs at least this many runs (so at least five gaps).
pub const INFER_MIN_RUNS: usize = 6;
/// [`infer`] looks at this many most recent runs.
pub const INFER_WINDOW_RUNS: usize = 20;
/// [`infer`] accepts the series as regular when MAD(gaps) / median(gaps) is below this.
pub const INFER_MAX_DISPERSION: f64 = 0.2;
/// An inferred grace is `max(INFER_GRACE_FRACTION × interval, INFER_MIN_GRACE_SECS)`.
pub const INFER_GRACE_FRACTION: f64 = 0.1;
/// Lower bound of an inferred grace period, in seconds.
pub const INFER_MIN_GRACE_SECS: i64 = 60;

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// When runs are expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// One run per interval, measured from the previous run's start. A non-positive interval expects nothing.
    Every(TimeDelta),
    /// One run per cron fire time (UTC).
    Cron(CronSchedule),
}

/// A worker's schedule: what is expected, how late a run may start, and its provenance and pause state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// When runs are expected.
    pub expected: Expected,
    /// How long after a slot the run may still start without being missed.
    pub grace: TimeDelta,
    /// True when the schedule was inferred from the run history ([`infer`]) rather than declared.
    pub inferred: bool,
    /// A paused worker is expected to do nothing: no missed slots, health `Paused`.
    pub paused: bool,
}

/// A worker's health, from its schedule and last run (rules in the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkerHealth {
    /// Never reported a run.
    New,
    /// No slot is past its deadline.
    Up,
    /// Exactly one slot is past its deadline.
    Late,
    /// Two or more slots are past their deadlines.
    Down,
    /// The schedule is paused.
    Paused,
}

impl WorkerHealth {
    /// Upper-case wire name: `NEW`, `UP`, `LATE`, `DOWN`, `PAUSED`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerHealth::New => "NEW",
            WorkerHealth::Up => "UP",
            WorkerHealth::Late => "LATE",
            WorkerHealth::Down => "DOWN",
            WorkerHealth::Paused => "PAUSED",
        }
    }
}

/// What [`health`] needs to know about a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthInput {
    /// The worker's schedule, if it has one (declared or inferred).
    pub schedule: Option<Schedule>,
    /// Start of the latest reported run (after a resume: [`resume_anchor`]).
    pub last_run_started: Option<DateTime<Utc>>,
    /// When the worker was first seen. Informational: it does not change the verdict (a worker with no
    /// run stays `New`).
    pub first_seen: Option<DateTime<Utc>>,
}

/// The worker's health at `now` (rules in the module docs).
pub fn health(input: &HealthInput, now: DateTime<Utc>) -> WorkerHealth {
    if input.schedule.as_ref().is_some_and(|s| s.paused) {
        return WorkerHealth::Paused;
    }
    let Some(last) = input.last_run_started else {
        return WorkerHealth::New;
    };
    let Some(schedule) = &input.schedule else {
        return WorkerHealth::Up;
    };
    match missed(schedule, last, now, 2).len() {
        0 => WorkerHealth::Up,
        1 => WorkerHealth::Late,
        _ => WorkerHealth::Down,
    }
}

/// The deadline (first slot after `last_run_started`, plus grace) by which the next report is due.
/// `None` when paused, when the interval is not positive, or when the cron has no fire time within its
/// search horizon.
pub fn next_deadline(schedule: &Schedule, last_run_started: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if schedule.paused {
        return None;
    }
    let slot = match &schedule.expected {
        Expected::Every(interval) if *interval > TimeDelta::zero() => last_run_started.checked_add_signed(*interval)?,
        Expected::Every(_) => return None,
        Expected::Cron(cron) => cron.next_after(last_run_started)?,
    };
    slot.checked_add_signed(grace_of(schedule))
}

/// Missed slots after the last run: each slot in `(last_run_started, now]` whose deadline has passed.
/// Returned as slot start times, oldest first, so the caller can record one anomaly per slot and dedupe by
/// slot across ticks. At most [`MAX_MISSED_SLOTS`] (the most recent ones, so new misses keep appearing at
/// the end while an old outage stays capped). Empty when paused. Same as
/// `missed_slots_since(schedule, last_run_started, now)`.
pub fn missed_slots(schedule: &Schedule, last_run_started: DateTime<Utc>, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    missed_slots_since(schedule, last_run_started, now)
}

/// Missed slots counted from an arbitrary anchor `since` (treated like a run starting at `since`): the
/// form to use after a resume, with `since = resume_anchor(last_run_started, resumed_at)`, so the slots
/// inside the pause are never reported. Same bounds and order as [`missed_slots`].
pub fn missed_slots_since(schedule: &Schedule, since: DateTime<Utc>, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    missed(schedule, since, now, MAX_MISSED_SLOTS)
}

/// The anchor for slot counting after a pause: the later of the last run start and the resume time.
pub fn resume_anchor(
    last_run_started: Option<DateTime<Utc>>,
    resumed_at: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    match (last_run_started, resumed_at) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The most recent `cap` missed slots after `since`, oldest first.
fn missed(schedule: &Schedule, since: DateTime<Utc>, now: DateTime<Utc>, cap: usize) -> Vec<DateTime<Utc>> {
    if schedule.paused || cap == 0 {
        return Vec::new();
    }
    let grace = grace_of(schedule);
    match &schedule.expected {
        Expected::Every(interval) => {
            let step = nanos(*interval);
            // Slot k (k >= 1) is missed when since + k·step + grace < now, i.e. k·step < span.
            let span = nanos(now - since) - nanos(grace);
            if step <= 0 || span <= 0 {
                return Vec::new();
            }
            let k_max = (span - 1) / step;
            let k_min = (k_max - cap as i128 + 1).max(1);
            (k_min..=k_max).filter_map(|k| since.checked_add_signed(delta_from_nanos(k * step)?)).collect()
        }
        Expected::Cron(cron) => {
            // A slot s is missed when s + grace < now, i.e. s <= now - grace - 1ns.
            let Some(cutoff) =
                now.checked_sub_signed(grace).and_then(|t| t.checked_sub_signed(TimeDelta::nanoseconds(1)))
            else {
                return Vec::new();
            };
            let mut slots = Vec::new();
            let mut cursor = cron.prev_before_or_at(cutoff);
            while let Some(slot) = cursor {
                if slot <= since || slots.len() == cap {
                    break;
                }
                slots.push(slot);
                cursor = slot.checked_sub_signed(TimeDelta::nanoseconds(1)).and_then(|t| cron.prev_before_or_at(t));
            }
            slots.reverse();
            slots
        }
    }
}

/// Observed versus expected spacing of recent starts (see [`start_gaps`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StartGaps {
    /// Median of the observed gaps between consecutive starts, in seconds.
    pub observed_median_secs: f64,
    /// The gap the schedule expects, in seconds.
    pub expected_secs: f64,
    /// How many gaps were looked at.
    pub gaps: usize,
}

/// Median observed gap over the last [`TOO_OFTEN_WINDOW_GAPS`] gaps between consecutive starts (input in any
/// order) and the gap the schedule expects: the interval for `Every`, and for `Cron` the median gap between
/// the cron's own consecutive fire times over the same stretch (so `MON-FRI` schedules expect one day, not
/// the weekend's three). `None` with fewer than two starts or when the cron has no fire times.
pub fn start_gaps(schedule: &Schedule, recent_starts: &[DateTime<Utc>]) -> Option<StartGaps> {
    let starts = sorted_tail(recent_starts, TOO_OFTEN_WINDOW_GAPS + 1);
    let gaps = gaps_secs(&starts);
    Some(StartGaps {
        observed_median_secs: median(&gaps)?,
        expected_secs: expected_gap_secs(schedule, &starts, gaps.len())?,
        gaps: gaps.len(),
    })
}

/// RUNNING_TOO_OFTEN: with at least [`TOO_OFTEN_MIN_GAPS`] gaps in the window of [`start_gaps`], the median
/// observed gap is below [`TOO_OFTEN_RATIO`] × the expected gap. Never true when paused or when the expected
/// gap is not positive.
pub fn running_too_often(schedule: &Schedule, recent_starts: &[DateTime<Utc>]) -> bool {
    !schedule.paused
        && start_gaps(schedule, recent_starts).is_some_and(|g| {
            g.gaps >= TOO_OFTEN_MIN_GAPS
                && g.expected_secs > 0.0
                && g.observed_median_secs < TOO_OFTEN_RATIO * g.expected_secs
        })
}

/// The expected gap in seconds: the interval, or the median of `count` consecutive cron gaps starting at the
/// fire time at or before the first start.
fn expected_gap_secs(schedule: &Schedule, starts: &[DateTime<Utc>], count: usize) -> Option<f64> {
    match &schedule.expected {
        Expected::Every(interval) => Some(secs(*interval)),
        Expected::Cron(cron) => {
            let first = *starts.first()?;
            let mut fire = cron.prev_before_or_at(first).or_else(|| cron.next_after(first))?;
            let mut gaps = Vec::with_capacity(count);
            for _ in 0..count {
                let next = cron.next_after(fire)?;
                gaps.push(secs(next - fire));
                fire = next;
            }
            median(&gaps)
        }
    }
}

/// The median gap between the last [`INFER_WINDOW_RUNS`] starts (any order), rounded to whole seconds;
/// `None` with fewer than two starts. Unlike [`infer`] it does not ask for regularity: it estimates when the
/// next run will come, not what the schedule is.
pub fn typical_gap(recent_starts: &[DateTime<Utc>]) -> Option<TimeDelta> {
    let starts = sorted_tail(recent_starts, INFER_WINDOW_RUNS);
    let gap = median(&gaps_secs(&starts))?;
    TimeDelta::try_seconds(gap.round() as i64)
}

/// Infers an `Every` schedule from start times (any order) when they are regular: at least
/// [`INFER_MIN_RUNS`] runs among the last [`INFER_WINDOW_RUNS`], median gap of at least one second, and
/// MAD(gaps) / median(gaps) < [`INFER_MAX_DISPERSION`]. The interval is the median gap rounded to whole
/// seconds; grace = max(10 % of the interval, 60 s); `inferred = true`, `paused = false`.
pub fn infer(recent_starts: &[DateTime<Utc>]) -> Option<Schedule> {
    let starts = sorted_tail(recent_starts, INFER_WINDOW_RUNS);
    if starts.len() < INFER_MIN_RUNS {
        return None;
    }
    let gaps = gaps_secs(&starts);
    let typical = median(&gaps)?;
    if typical < 1.0 {
        return None;
    }
    let deviations: Vec<f64> = gaps.iter().map(|g| (g - typical).abs()).collect();
    if median(&deviations)? / typical >= INFER_MAX_DISPERSION {
        return None;
    }
    let interval_secs = typical.round() as i64;
    let grace_secs = ((interval_secs as f64 * INFER_GRACE_FRACTION).round() as i64).max(INFER_MIN_GRACE_SECS);
    Some(Schedule {
        expected: Expected::Every(TimeDelta::try_seconds(interval_secs)?),
        grace: TimeDelta::try_seconds(grace_secs)?,
        inferred: true,
        paused: false,
    })
}

fn grace_of(schedule: &Schedule) -> TimeDelta {
    schedule.grace.max(TimeDelta::zero())
}

fn nanos(d: TimeDelta) -> i128 {
    i128::from(d.num_seconds()) * NANOS_PER_SEC + i128::from(d.subsec_nanos())
}

fn delta_from_nanos(n: i128) -> Option<TimeDelta> {
    let secs = i64::try_from(n.div_euclid(NANOS_PER_SEC)).ok()?;
    let sub = u32::try_from(n.rem_euclid(NANOS_PER_SEC)).ok()?;
    TimeDelta::new(secs, sub)
}

fn secs(d: TimeDelta) -> f64 {
    nanos(d) as f64 / NANOS_PER_SEC as f64
}

/// The last `n` starts in chronological order.
fn sorted_tail(starts: &[DateTime<Utc>], n: usize) -> Vec<DateTime<Utc>> {
    // Starts usually come in order (a worker's runs as stored): then only the tail is copied.
    if starts.is_sorted() {
        return starts[starts.len().saturating_sub(n)..].to_vec();
    }
    let mut sorted = starts.to_vec();
    sorted.sort_unstable();
    let skip = sorted.len().saturating_sub(n);
    sorted.split_off(skip)
}

fn gaps_secs(sorted: &[DateTime<Utc>]) -> Vec<f64> {
    sorted.windows(2).map(|w| secs(w[1] - w[0])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn every(minutes: i64, grace_minutes: i64) -> Schedule {
        Schedule {
            expected: Expected::Every(TimeDelta::minutes(minutes)),
            grace: TimeDelta::minutes(grace_minutes),
            inferred: false,
            paused: false,
        }
    }

    fn cron(expr: &str, grace_minutes: i64) -> Schedule {
        Schedule {
            expected: Expected::Cron(super::super::cron::parse(expr).unwrap()),
            grace: TimeDelta::minutes(grace_minutes),
            inferred: false,
            paused: false,
        }
    }

    fn input(schedule: &Schedule, last: DateTime<Utc>) -> HealthInput {
        HealthInput { schedule: Some(schedule.clone()), last_run_started: Some(last), first_seen: None }
    }

    #[test]
    fn typical_gap_is_the_median_gap() {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let starts = [t, t + TimeDelta::hours(1), t + TimeDelta::hours(3), t + TimeDelta::hours(4)];
        assert_eq!(typical_gap(&starts), Some(TimeDelta::hours(1)));
        assert_eq!(typical_gap(&starts[..1]), None);
    }

    #[test]
    fn as_str_names() {
        let all = [WorkerHealth::New, WorkerHealth::Up, WorkerHealth::Late, WorkerHealth::Down, WorkerHealth::Paused];
        assert_eq!(all.map(WorkerHealth::as_str), ["NEW", "UP", "LATE", "DOWN", "PAUSED"]);
    }

    #[test]
    fn hourly_timeline_across_midnight() {
        let s = every(60, 5);
        let last = utc(2024, 3, 10, 23, 0);
        let h = |now| health(&input(&s, last), now);
        assert_eq!(next_deadline(&s, last), Some(utc(2024, 3, 11, 0, 5)));
        assert_eq!(h(utc(2024, 3, 10, 23, 30)), WorkerHealth::Up);
        assert_eq!(h(utc(2024, 3, 11, 0, 5)), WorkerHealth::Up, "deadline not yet passed at the deadline itself");
        assert!(missed_slots(&s, last, utc(2024, 3, 11, 0, 5)).is_empty());
        let just_after = utc(2024, 3, 11, 0, 5) + TimeDelta::seconds(1);
        assert_eq!(h(just_after), WorkerHealth::Late);
        assert_eq!(missed_slots(&s, last, just_after), vec![utc(2024, 3, 11, 0, 0)]);
        assert_eq!(h(utc(2024, 3, 11, 1, 5)), WorkerHealth::Late, "within one more interval");
        assert_eq!(h(utc(2024, 3, 11, 1, 6)), WorkerHealth::Down);
        assert_eq!(
            missed_slots(&s, last, utc(2024, 3, 11, 1, 6)),
            vec![utc(2024, 3, 11, 0, 0), utc(2024, 3, 11, 1, 0)]
        );
        // The late report at 01:10 resolves it.
        let late_report = utc(2024, 3, 11, 1, 10);
        assert_eq!(health(&input(&s, late_report), utc(2024, 3, 11, 1, 11)), WorkerHealth::Up);
        assert!(missed_slots(&s, late_report, utc(2024, 3, 11, 1, 11)).is_empty());
        assert_eq!(next_deadline(&s, late_report), Some(utc(2024, 3, 11, 2, 15)));
    }

    #[test]
    fn daily_cron_timeline() {
        let s = cron("0 2 * * *", 30);
        let last = utc(2024, 2, 28, 2, 1);
        let h = |now| health(&input(&s, last), now);
        assert_eq!(next_deadline(&s, last), Some(utc(2024, 2, 29, 2, 30)));
        assert_eq!(h(utc(2024, 2, 29, 2, 20)), WorkerHealth::Up);
        assert_eq!(h(utc(2024, 2, 29, 2, 31)), WorkerHealth::Late);
        assert_eq!(missed_slots(&s, last, utc(2024, 2, 29, 2, 31)), vec![utc(2024, 2, 29, 2, 0)]);
        assert_eq!(h(utc(2024, 3, 1, 2, 29)), WorkerHealth::Late);
        assert_eq!(h(utc(2024, 3, 1, 2, 31)), WorkerHealth::Down);
        assert_eq!(missed_slots(&s, last, utc(2024, 3, 1, 2, 31)), vec![utc(2024, 2, 29, 2, 0), utc(2024, 3, 1, 2, 0)]);
        // A run at 02:00:00 exactly is the anchor: its own slot is not "after" it.
        assert!(missed_slots(&s, utc(2024, 3, 1, 2, 0), utc(2024, 3, 1, 2, 31)).is_empty());
    }

    #[test]
    fn weekday_cron_skips_weekend() {
        let s = cron("30 9 * * MON-FRI", 15);
        let friday = utc(2024, 3, 15, 9, 30);
        assert_eq!(next_deadline(&s, friday), Some(utc(2024, 3, 18, 9, 45)));
        assert_eq!(health(&input(&s, friday), utc(2024, 3, 17, 23, 0)), WorkerHealth::Up);
        assert_eq!(health(&input(&s, friday), utc(2024, 3, 18, 10, 0)), WorkerHealth::Late);
    }

    #[test]
    fn new_paused_and_unscheduled() {
        let s = every(60, 5);
        let never =
            HealthInput { schedule: Some(s.clone()), last_run_started: None, first_seen: Some(utc(2020, 1, 1, 0, 0)) };
        assert_eq!(health(&never, utc(2024, 1, 1, 0, 0)), WorkerHealth::New);
        let unscheduled =
            HealthInput { schedule: None, last_run_started: Some(utc(2020, 1, 1, 0, 0)), first_seen: None };
        assert_eq!(health(&unscheduled, utc(2024, 1, 1, 0, 0)), WorkerHealth::Up);
        assert_eq!(
            health(&HealthInput { schedule: None, last_run_started: None, first_seen: None }, utc(2024, 1, 1, 0, 0)),
            WorkerHealth::New
        );
        let paused = Schedule { paused: true, ..s };
        assert_eq!(health(&input(&paused, utc(2020, 1, 1, 0, 0)), utc(2024, 1, 1, 0, 0)), WorkerHealth::Paused);
        assert_eq!(
            health(
                &HealthInput { schedule: Some(paused.clone()), last_run_started: None, first_seen: None },
                utc(2024, 1, 1, 0, 0)
            ),
            WorkerHealth::Paused
        );
        assert!(missed_slots(&paused, utc(2020, 1, 1, 0, 0), utc(2024, 1, 1, 0, 0)).is_empty());
        assert_eq!(next_deadline(&paused, utc(2020, 1, 1, 0, 0)), None);
    }

    #[test]
    fn paused_then_resumed_reports_no_slots_from_the_pause() {
        let active = every(60, 10);
        let last = utc(2024, 3, 10, 20, 0);
        // Paused at 20:30, resumed the next day at 08:15.
        let paused = Schedule { paused: true, ..active.clone() };
        assert_eq!(health(&input(&paused, last), utc(2024, 3, 11, 3, 0)), WorkerHealth::Paused);
        assert!(missed_slots(&paused, last, utc(2024, 3, 11, 3, 0)).is_empty());
        let resumed_at = utc(2024, 3, 11, 8, 15);
        let anchor = resume_anchor(Some(last), Some(resumed_at)).unwrap();
        assert_eq!(anchor, resumed_at);
        // Right after resuming: Up, nothing missed (anchored at the resume, not at 20:00 yesterday).
        assert_eq!(health(&input(&active, anchor), utc(2024, 3, 11, 8, 16)), WorkerHealth::Up);
        assert!(missed_slots_since(&active, anchor, utc(2024, 3, 11, 9, 20)).is_empty());
        // Without the anchor the pause would have produced a pile of misses.
        assert_eq!(missed_slots(&active, last, utc(2024, 3, 11, 9, 20)).len(), 13);
        // After resuming, the first miss is the first slot after the resume.
        assert_eq!(missed_slots_since(&active, anchor, utc(2024, 3, 11, 9, 26)), vec![utc(2024, 3, 11, 9, 15)]);
        // A run reported after the resume wins over the resume time.
        assert_eq!(resume_anchor(Some(utc(2024, 3, 11, 9, 0)), Some(resumed_at)), Some(utc(2024, 3, 11, 9, 0)));
        assert_eq!(resume_anchor(None, Some(resumed_at)), Some(resumed_at));
        assert_eq!(resume_anchor(None, None), None);
    }

    #[test]
    fn missed_slots_are_capped_to_the_most_recent() {
        let s = every(1, 0);
        let last = utc(2023, 1, 1, 0, 0);
        let now = utc(2024, 1, 1, 0, 0) + TimeDelta::seconds(30);
        let slots = missed_slots(&s, last, now);
        assert_eq!(slots.len(), MAX_MISSED_SLOTS);
        assert_eq!(slots.last(), Some(&utc(2024, 1, 1, 0, 0)));
        assert_eq!(slots.first(), Some(&(utc(2024, 1, 1, 0, 0) - TimeDelta::minutes(99))));
        assert!(slots.windows(2).all(|w| w[1] - w[0] == TimeDelta::minutes(1)));
        let c = cron("*/5 * * * *", 0);
        let slots = missed_slots(&c, last, now);
        assert_eq!(slots.len(), MAX_MISSED_SLOTS);
        assert_eq!(slots.last(), Some(&utc(2024, 1, 1, 0, 0)));
        assert!(slots.windows(2).all(|w| w[1] - w[0] == TimeDelta::minutes(5)));
    }

    #[test]
    fn degenerate_schedules_expect_nothing() {
        let zero = every(0, 5);
        let t = utc(2024, 1, 1, 0, 0);
        assert_eq!(next_deadline(&zero, t), None);
        assert!(missed_slots(&zero, t, t + TimeDelta::days(1)).is_empty());
        assert_eq!(health(&input(&zero, t), t + TimeDelta::days(1)), WorkerHealth::Up);
        let never = cron("0 0 30 2 *", 0);
        assert_eq!(next_deadline(&never, t), None);
        assert!(missed_slots(&never, t, t + TimeDelta::days(400)).is_empty());
        // Negative grace counts as zero; a report in the future (clock skew) misses nothing.
        let negative = every(60, -30);
        assert_eq!(next_deadline(&negative, t), Some(t + TimeDelta::hours(1)));
        assert!(missed_slots(&negative, t + TimeDelta::hours(5), t).is_empty());
    }

    #[test]
    fn too_often() {
        let hourly = every(60, 5);
        let base = utc(2024, 3, 10, 22, 0);
        let at = |mins: &[i64]| mins.iter().map(|m| base + TimeDelta::minutes(*m)).collect::<Vec<_>>();
        assert!(running_too_often(&hourly, &at(&[0, 10, 20, 30, 40, 50])));
        assert!(!running_too_often(&hourly, &at(&[0, 60, 120, 180, 240, 300])));
        assert!(!running_too_often(&hourly, &at(&[0, 10, 20, 30, 40])), "only 4 gaps");
        assert!(!running_too_often(&hourly, &at(&[0, 31, 62, 93, 124, 155])), "31 min is not below half of 60");
        assert!(running_too_often(&hourly, &at(&[40, 0, 29, 10, 20, 50])), "order does not matter");
        // Old slow runs outside the 10-gap window do not dilute a recent burst.
        let mut burst = at(&[-6000, -5000, -4000, -3000, -2000, -1000]);
        burst.extend(at(&(0..11).map(|k| k * 5).collect::<Vec<_>>()));
        assert!(running_too_often(&hourly, &burst));
        let paused = Schedule { paused: true, ..hourly };
        assert!(!running_too_often(&paused, &at(&[0, 10, 20, 30, 40, 50])));
        // A weekday cron run every weekday for three weeks is on schedule (weekend gaps are expected).
        let weekdays = cron("30 9 * * MON-FRI", 15);
        let c = super::super::cron::parse("30 9 * * MON-FRI").unwrap();
        let mut starts = vec![c.next_after(utc(2024, 3, 1, 0, 0)).unwrap()];
        for _ in 0..14 {
            starts.push(c.next_after(*starts.last().unwrap()).unwrap());
        }
        assert!(!running_too_often(&weekdays, &starts));
        let hammered: Vec<_> = (0..8).map(|k| utc(2024, 3, 12, 9, 30) + TimeDelta::hours(k)).collect();
        assert!(running_too_often(&weekdays, &hammered));
    }

    #[test]
    fn infer_regular_series() {
        let base = utc(2024, 3, 10, 20, 0);
        // Hourly with a few seconds of jitter, crossing midnight, given out of order.
        let jitter = [0, 12, -8, 30, 5, -20, 0, 14, -3, 9];
        let mut starts: Vec<_> =
            jitter.iter().enumerate().map(|(k, j)| base + TimeDelta::seconds(3600 * k as i64 + j)).collect();
        starts.reverse();
        let s = infer(&starts).unwrap();
        // Gaps are 3600 s + (12, -20, 38, -25, -25, 20, 14, -17, 12): the median is 3612 s.
        assert_eq!(s.expected, Expected::Every(TimeDelta::seconds(3612)));
        assert_eq!(s.grace, TimeDelta::seconds(361));
        assert!(s.inferred && !s.paused);
        // Short interval: grace floors at 60 s.
        let fast: Vec<_> = (0..8).map(|k| base + TimeDelta::minutes(5 * k)).collect();
        let s = infer(&fast).unwrap();
        assert_eq!((s.expected, s.grace), (Expected::Every(TimeDelta::minutes(5)), TimeDelta::seconds(60)));
        // A single outlier gap does not break a regular series (median and MAD are robust).
        let mut one_gap: Vec<_> = (0..10).map(|k| base + TimeDelta::hours(k)).collect();
        one_gap[9] += TimeDelta::hours(5);
        assert_eq!(infer(&one_gap).map(|s| s.expected), Some(Expected::Every(TimeDelta::hours(1))));
    }

    #[test]
    fn infer_rejects_irregular_or_short_series() {
        let base = utc(2024, 3, 10, 20, 0);
        let irregular: Vec<_> =
            [0, 10, 70, 85, 200, 230, 400, 410, 600].iter().map(|m| base + TimeDelta::minutes(*m)).collect();
        assert_eq!(infer(&irregular), None);
        let short: Vec<_> = (0..5).map(|k| base + TimeDelta::hours(k)).collect();
        assert_eq!(infer(&short), None);
        assert_eq!(infer(&[]), None);
        assert_eq!(infer(&[base; 8]), None, "all at the same instant");
    }

    proptest! {
        #[test]
        fn interval_slots_match_brute_force(
            interval_min in 1i64..180,
            grace_min in 0i64..60,
            last_offset_s in 0i64..86_400,
            elapsed_s in 0i64..(3 * 86_400),
        ) {
            let s = every(interval_min, grace_min);
            let last = utc(2024, 1, 1, 0, 0) + TimeDelta::seconds(last_offset_s);
            let now = last + TimeDelta::seconds(elapsed_s);
            let expected: Vec<_> = (1..)
                .map(|k| last + TimeDelta::minutes(interval_min * k))
                .take_while(|slot| *slot + TimeDelta::minutes(grace_min) < now)
                .collect();
            let tail = expected[expected.len().saturating_sub(MAX_MISSED_SLOTS)..].to_vec();
            prop_assert_eq!(missed_slots(&s, last, now), tail);
            let want = match expected.len() { 0 => WorkerHealth::Up, 1 => WorkerHealth::Late, _ => WorkerHealth::Down };
            prop_assert_eq!(health(&input(&s, last), now), want);
        }

        #[test]
        fn cron_slots_are_fire_times_past_deadline(minute in 0u32..60, hour_step in 1u32..12, grace_min in 0i64..90, elapsed_min in 0i64..5000) {
            let s = cron(&format!("{minute} */{hour_step} * * *"), grace_min);
            let Expected::Cron(c) = &s.expected else { unreachable!() };
            let last = utc(2024, 2, 27, 13, 17);
            let now = last + TimeDelta::minutes(elapsed_min);
            let slots = missed_slots(&s, last, now);
            let mut brute = Vec::new();
            let mut cursor = c.next_after(last);
            while let Some(slot) = cursor.filter(|slot| *slot + TimeDelta::minutes(grace_min) < now) {
                brute.push(slot);
                cursor = c.next_after(slot);
            }
            prop_assert_eq!(slots, brute);
        }
    }
}
