//! Learning fields: what the server derives about a run from the worker's
//! running history (position in the day, gap since the last run, duration
//! against the average, duration and volume trends).
//!
//! Owns [`WorkerRunningState`], the per-worker running statistics persisted
//! with the worker, and the rules that fold one run into it. Pure: no I/O,
//! no clock (times come from the run report), no logging. The rules are
//! spelled out in `docs/scoring.md`.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};

use super::scoring::DurationBaseline;

/// Smoothing factor of the recent-window EWMAs: once warmed up, each run
/// moves the estimate 20 % of the way towards itself (an effective window of
/// about 9 runs). See `ewma_gain` for the warm-up.
pub const TREND_ALPHA: f64 = 0.2;
/// Runs (including the current one) needed before a trend can leave `STABLE`.
pub const TREND_MIN_RUNS: u64 = 5;
/// Half-width of the `STABLE` band: the EWMA must be more than 10 % away
/// from the long-run mean for a verdict.
pub const TREND_TOLERANCE: f64 = 0.10;

/// Recent durations against the long-run mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DurationTrend {
    Faster,
    Slower,
    Stable,
}

impl DurationTrend {
    /// Wire name: `"FASTER"`, `"SLOWER"`, `"STABLE"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DurationTrend::Faster => "FASTER",
            DurationTrend::Slower => "SLOWER",
            DurationTrend::Stable => "STABLE",
        }
    }
}

/// Recent `records_processed` against the long-run mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VolumeTrend {
    Increasing,
    Decreasing,
    Stable,
}

impl VolumeTrend {
    /// Wire name: `"INCREASING"`, `"DECREASING"`, `"STABLE"`.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeTrend::Increasing => "INCREASING",
            VolumeTrend::Decreasing => "DECREASING",
            VolumeTrend::Stable => "STABLE",
        }
    }
}

/// Persisted in the worker's row; updated in the same transaction that
/// stores the execution. Runs are folded in arrival order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkerRunningState {
    pub run_count: u64,
    /// Welford running mean and sum of squared deviations of `duration_ms`.
    pub duration_mean_ms: f64,
    pub duration_m2: f64,
    /// Welford running mean and sum of squared deviations of `records_processed`.
    pub records_mean: f64,
    pub records_m2: f64,
    /// Bias-corrected EWMAs ([`TREND_ALPHA`]) of the same two inputs; equal
    /// to the first run's values after one run.
    pub duration_ewma_ms: f64,
    pub records_ewma: f64,
    /// `started_at` of the latest run by start time.
    pub last_run_at: Option<DateTime<Utc>>,
    /// Runs seen on `runs_today_day` (UTC).
    pub runs_today: u64,
    pub runs_today_day: Option<NaiveDate>,
}

/// The facts of one run that learning needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunFacts {
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub records_processed: u64,
}

/// Server-side fields stored with the execution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearningFields {
    /// Hour of `started_at`, `0..=23` UTC.
    pub time_of_day_utc: u32,
    /// Weekday of `started_at`, 0 = Monday .. 6 = Sunday (UTC).
    pub day_of_week: u32,
    /// 1-based position within the UTC day of `started_at`, in arrival order.
    pub execution_number_today: u64,
    /// `started_at - last_run_at`; `None` for the first run and for a run
    /// that started before the latest known one.
    pub time_since_last_run_seconds: Option<f64>,
    /// `duration / mean` of the previous runs; `None` with no history or a
    /// mean of 0.
    pub duration_vs_avg: Option<f64>,
    pub duration_trend: DurationTrend,
    pub data_volume_trend: VolumeTrend,
}

impl WorkerRunningState {
    /// The duration history that the next run will be scored against.
    /// `stddev_ms` is the sample standard deviation (0 below two runs).
    pub fn baseline(&self) -> DurationBaseline {
        DurationBaseline {
            count: self.run_count,
            mean_ms: self.duration_mean_ms,
            stddev_ms: sample_stddev(self.run_count, self.duration_m2),
        }
    }

    /// Computes this run's learning fields against the state BEFORE the run,
    /// then folds the run in. Returns the fields.
    ///
    /// The trends are the exception: they are read after the fold, so the
    /// run counts towards its own trend and towards [`TREND_MIN_RUNS`].
    pub fn observe(&mut self, run: &RunFacts) -> LearningFields {
        let started = run.started_at;
        let duration = run.duration_ms as f64;
        let records = run.records_processed as f64;

        let time_since_last_run_seconds = self.last_run_at.and_then(|last| {
            let millis = started.signed_duration_since(last).num_milliseconds();
            (millis >= 0).then(|| millis as f64 / 1_000.0)
        });
        let mean = self.duration_mean_ms;
        let duration_vs_avg = (self.run_count > 0 && mean.is_finite() && mean > 0.0).then(|| duration / mean);
        let execution_number_today = self.count_today(started.date_naive());

        self.run_count = self.run_count.saturating_add(1);
        welford(self.run_count, &mut self.duration_mean_ms, &mut self.duration_m2, duration);
        welford(self.run_count, &mut self.records_mean, &mut self.records_m2, records);
        let gain = ewma_gain(self.run_count);
        self.duration_ewma_ms += gain * (duration - self.duration_ewma_ms);
        self.records_ewma += gain * (records - self.records_ewma);
        if self.last_run_at.is_none_or(|last| started > last) {
            self.last_run_at = Some(started);
        }

        LearningFields {
            time_of_day_utc: started.hour(),
            day_of_week: started.weekday().num_days_from_monday(),
            execution_number_today,
            time_since_last_run_seconds,
            duration_vs_avg,
            duration_trend: match self.trend(self.duration_ewma_ms, self.duration_mean_ms) {
                Some(true) => DurationTrend::Slower,
                Some(false) => DurationTrend::Faster,
                None => DurationTrend::Stable,
            },
            data_volume_trend: match self.trend(self.records_ewma, self.records_mean) {
                Some(true) => VolumeTrend::Increasing,
                Some(false) => VolumeTrend::Decreasing,
                None => VolumeTrend::Stable,
            },
        }
    }

    /// Advances the per-day counter for a run on `day` and returns the run's
    /// number. A new (later) day restarts at 1. A run on a day earlier than
    /// the counter's (a late report) gets 1 and leaves the counter alone:
    /// the state keeps no count for past days.
    fn count_today(&mut self, day: NaiveDate) -> u64 {
        match self.runs_today_day {
            Some(current) if current == day => {
                self.runs_today = self.runs_today.saturating_add(1);
                self.runs_today
            }
            Some(current) if current > day => 1,
            _ => {
                self.runs_today_day = Some(day);
                self.runs_today = 1;
                1
            }
        }
    }

    /// `Some(true)` when `recent` is above the band around `mean`,
    /// `Some(false)` when below, `None` when inside it, with too little
    /// history, or with a mean that is not positive.
    fn trend(&self, recent: f64, mean: f64) -> Option<bool> {
        if self.run_count < TREND_MIN_RUNS || !(mean.is_finite() && mean > 0.0) {
            return None;
        }
        let ratio = recent / mean;
        if ratio > 1.0 + TREND_TOLERANCE {
            Some(true)
        } else if ratio < 1.0 - TREND_TOLERANCE {
            Some(false)
        } else {
            None
        }
    }
}

/// EWMA gain for the `count`-th run: `alpha / (1 - (1 - alpha)^count)`.
///
/// This is the bias-corrected EWMA written as an update: the first run gets
/// gain 1 (the estimate starts at its value) and the gain falls towards
/// [`TREND_ALPHA`] as runs accumulate, so the estimate is always a normalised
/// exponentially weighted mean. A plain EWMA seeded with the first run would
/// weight that run more heavily than the long-run mean does for the first
/// ~10 runs and so lag behind it.
fn ewma_gain(count: u64) -> f64 {
    if count <= 1 {
        return 1.0;
    }
    let count = count.min(1_000) as i32;
    TREND_ALPHA / (1.0 - (1.0 - TREND_ALPHA).powi(count))
}

/// One Welford step; `count` already includes `x`.
fn welford(count: u64, mean: &mut f64, m2: &mut f64, x: f64) {
    let delta = x - *mean;
    *mean += delta / count as f64;
    *m2 += delta * (x - *mean);
}

/// `sqrt(m2 / (n - 1))`, 0 below two samples or for a negative rounding residue.
fn sample_stddev(count: u64, m2: f64) -> f64 {
    if count >= 2 && m2 > 0.0 { (m2 / (count - 1) as f64).sqrt() } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone};
    use proptest::prelude::*;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn run(started_at: DateTime<Utc>, duration_ms: u64, records_processed: u64) -> RunFacts {
        RunFacts { started_at, duration_ms, records_processed }
    }

    /// Feeds `durations` (with constant volume) one hour apart; returns the
    /// last run's fields.
    fn feed(durations: &[u64], records: &[u64]) -> LearningFields {
        let mut state = WorkerRunningState::default();
        let start = at(2024, 3, 1, 0, 0, 0);
        let mut last = None;
        for (i, (&ms, &n)) in durations.iter().zip(records).enumerate() {
            let when = start + TimeDelta::hours(i as i64);
            last = Some(state.observe(&run(when, ms, n)));
        }
        last.unwrap()
    }

    fn two_pass(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = if xs.len() < 2 { 0.0 } else { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) };
        (mean, var)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    proptest! {
        #[test]
        fn welford_matches_two_pass(
            runs in proptest::collection::vec((0u64..10_000_000, 0u64..1_000_000), 1..200),
        ) {
            let mut state = WorkerRunningState::default();
            let start = at(2024, 1, 1, 0, 0, 0);
            for (i, &(ms, n)) in runs.iter().enumerate() {
                state.observe(&run(start + TimeDelta::minutes(i as i64), ms, n));
            }
            let durations: Vec<f64> = runs.iter().map(|r| r.0 as f64).collect();
            let records: Vec<f64> = runs.iter().map(|r| r.1 as f64).collect();
            let (d_mean, d_var) = two_pass(&durations);
            let (r_mean, r_var) = two_pass(&records);
            let n = runs.len() as u64;

            prop_assert_eq!(state.run_count, n);
            prop_assert!(close(state.duration_mean_ms, d_mean));
            prop_assert!(close(state.records_mean, r_mean));
            let baseline = state.baseline();
            prop_assert_eq!(baseline.count, n);
            prop_assert!(close(baseline.stddev_ms.powi(2), d_var), "{} vs {}", baseline.stddev_ms.powi(2), d_var);
            let records_var = if n < 2 { 0.0 } else { state.records_m2 / (n - 1) as f64 };
            prop_assert!(close(records_var, r_var));
        }

        #[test]
        fn welford_is_stable_on_a_large_offset(jitter in proptest::collection::vec(0u64..100, 2..100)) {
            let mut state = WorkerRunningState::default();
            let start = at(2024, 1, 1, 0, 0, 0);
            let offset = 1_000_000_000_000u64;
            for (i, &j) in jitter.iter().enumerate() {
                state.observe(&run(start + TimeDelta::minutes(i as i64), offset + j, 0));
            }
            let small: Vec<f64> = jitter.iter().map(|&j| j as f64).collect();
            let (_, var) = two_pass(&small);
            let got = state.baseline().stddev_ms.powi(2);
            prop_assert!((got - var).abs() <= 1e-3 * (1.0 + var), "{got} vs {var}");
        }

        #[test]
        fn ewma_is_a_normalised_exponential_mean(
            durations in proptest::collection::vec(0u64..1_000_000, 1..60),
        ) {
            let mut state = WorkerRunningState::default();
            let start = at(2024, 1, 1, 0, 0, 0);
            for (i, &ms) in durations.iter().enumerate() {
                state.observe(&run(start + TimeDelta::minutes(i as i64), ms, ms));
            }
            let n = durations.len();
            let (mut weighted, mut total) = (0.0, 0.0);
            for (i, &ms) in durations.iter().enumerate() {
                let w = (1.0 - TREND_ALPHA).powi((n - 1 - i) as i32);
                weighted += w * ms as f64;
                total += w;
            }
            let expected = weighted / total;
            prop_assert!(close(state.duration_ewma_ms, expected), "{} vs {expected}", state.duration_ewma_ms);
            prop_assert!(close(state.records_ewma, expected));
        }

        #[test]
        fn execution_numbers_have_no_gaps(gaps in proptest::collection::vec(0i64..600, 1..100)) {
            let mut state = WorkerRunningState::default();
            let mut when = at(2024, 5, 6, 0, 0, 0);
            for (i, gap) in gaps.iter().enumerate() {
                when += TimeDelta::seconds(*gap);
                let fields = state.observe(&run(when, 100, 1));
                prop_assert_eq!(fields.execution_number_today, i as u64 + 1);
            }
        }
    }

    #[test]
    fn first_run_fields() {
        let mut state = WorkerRunningState::default();
        let fields = state.observe(&run(at(2024, 6, 9, 17, 45, 0), 1_500, 40));
        assert_eq!(
            fields,
            LearningFields {
                time_of_day_utc: 17,
                day_of_week: 6,
                execution_number_today: 1,
                time_since_last_run_seconds: None,
                duration_vs_avg: None,
                duration_trend: DurationTrend::Stable,
                data_volume_trend: VolumeTrend::Stable,
            }
        );
        assert_eq!(state.run_count, 1);
        assert_eq!(state.last_run_at, Some(at(2024, 6, 9, 17, 45, 0)));
        assert_eq!(state.duration_ewma_ms, 1_500.0);
        assert_eq!(state.baseline(), DurationBaseline { count: 1, mean_ms: 1_500.0, stddev_ms: 0.0 });
    }

    /// The learning half of the worked example in `docs/scoring.md`.
    #[test]
    fn worked_example() {
        let mut state = WorkerRunningState {
            run_count: 20,
            duration_mean_ms: 1_200.0,
            duration_m2: 1_710_000.0,
            records_mean: 190.0,
            records_m2: 1_900.0,
            duration_ewma_ms: 1_250.0,
            records_ewma: 195.0,
            last_run_at: Some(at(2024, 6, 10, 13, 5, 0)),
            runs_today: 14,
            runs_today_day: NaiveDate::from_ymd_opt(2024, 6, 10),
        };
        assert_eq!(state.baseline(), DurationBaseline { count: 20, mean_ms: 1_200.0, stddev_ms: 300.0 });
        let fields = state.observe(&run(at(2024, 6, 10, 14, 5, 0), 1_956, 190));
        assert_eq!(fields.time_of_day_utc, 14);
        assert_eq!(fields.day_of_week, 0);
        assert_eq!(fields.execution_number_today, 15);
        assert_eq!(fields.time_since_last_run_seconds, Some(3_600.0));
        assert!(close(fields.duration_vs_avg.unwrap(), 1.63));
        assert_eq!(fields.duration_trend, DurationTrend::Slower);
        assert_eq!(fields.data_volume_trend, VolumeTrend::Stable);
        assert_eq!(state.run_count, 21);
        assert!(close(state.duration_mean_ms, 1_236.0));
        assert!((state.duration_ewma_ms - 1_392.51).abs() < 0.01);
        assert!((state.records_ewma - 193.99).abs() < 0.01);
        assert_eq!(state.runs_today, 15);
    }

    #[test]
    fn baseline_before_any_run_is_empty() {
        assert_eq!(WorkerRunningState::default().baseline(), DurationBaseline::default());
    }

    #[test]
    fn second_run_compares_against_the_first() {
        let mut state = WorkerRunningState::default();
        state.observe(&run(at(2024, 6, 10, 8, 0, 0), 1_000, 10));
        let fields = state.observe(&run(at(2024, 6, 10, 8, 15, 30), 1_500, 10));
        assert_eq!(fields.time_of_day_utc, 8);
        assert_eq!(fields.day_of_week, 0);
        assert_eq!(fields.execution_number_today, 2);
        assert_eq!(fields.time_since_last_run_seconds, Some(930.0));
        assert_eq!(fields.duration_vs_avg, Some(1.5));
        assert_eq!(state.baseline().mean_ms, 1_250.0);
    }

    #[test]
    fn zero_mean_gives_no_ratio() {
        let mut state = WorkerRunningState::default();
        state.observe(&run(at(2024, 6, 10, 8, 0, 0), 0, 0));
        let fields = state.observe(&run(at(2024, 6, 10, 9, 0, 0), 50, 0));
        assert_eq!(fields.duration_vs_avg, None);
    }

    #[test]
    fn execution_number_resets_at_utc_midnight() {
        let mut state = WorkerRunningState::default();
        let numbers: Vec<u64> = [
            at(2024, 2, 28, 22, 0, 0),
            at(2024, 2, 28, 23, 59, 59),
            at(2024, 2, 29, 0, 0, 0),
            at(2024, 2, 29, 12, 0, 0),
            at(2024, 3, 2, 1, 0, 0),
        ]
        .iter()
        .map(|&t| state.observe(&run(t, 10, 1)).execution_number_today)
        .collect();
        assert_eq!(numbers, [1, 2, 1, 2, 1]);
        assert_eq!(state.runs_today_day, NaiveDate::from_ymd_opt(2024, 3, 2));
    }

    #[test]
    fn late_report_from_an_earlier_day() {
        let mut state = WorkerRunningState::default();
        state.observe(&run(at(2024, 4, 2, 0, 10, 0), 10, 1));
        state.observe(&run(at(2024, 4, 2, 0, 20, 0), 10, 1));
        let late = state.observe(&run(at(2024, 4, 1, 23, 50, 0), 10, 1));
        assert_eq!(late.execution_number_today, 1);
        assert_eq!(late.time_since_last_run_seconds, None);
        assert_eq!(late.time_of_day_utc, 23);
        assert_eq!(state.last_run_at, Some(at(2024, 4, 2, 0, 20, 0)));
        assert_eq!(state.run_count, 3);
        let next = state.observe(&run(at(2024, 4, 2, 0, 30, 0), 10, 1));
        assert_eq!(next.execution_number_today, 3);
        assert_eq!(next.time_since_last_run_seconds, Some(600.0));
    }

    #[test]
    fn late_report_within_the_day_counts_in_arrival_order() {
        let mut state = WorkerRunningState::default();
        state.observe(&run(at(2024, 4, 2, 10, 0, 0), 10, 1));
        let late = state.observe(&run(at(2024, 4, 2, 9, 0, 0), 10, 1));
        assert_eq!(late.execution_number_today, 2);
        assert_eq!(late.time_since_last_run_seconds, None);
        assert_eq!(state.last_run_at, Some(at(2024, 4, 2, 10, 0, 0)));
    }

    #[test]
    fn rising_series_is_slower_and_increasing() {
        let durations: Vec<u64> = (0..20).map(|i| 1_000 + 100 * i).collect();
        let records: Vec<u64> = (0..20).map(|i| 100 + 20 * i).collect();
        let fields = feed(&durations, &records);
        assert_eq!(fields.duration_trend, DurationTrend::Slower);
        assert_eq!(fields.data_volume_trend, VolumeTrend::Increasing);
        assert_eq!(fields.duration_trend.as_str(), "SLOWER");
        assert_eq!(fields.data_volume_trend.as_str(), "INCREASING");
    }

    #[test]
    fn falling_series_is_faster_and_decreasing() {
        let durations: Vec<u64> = (0..20).map(|i| 3_000 - 100 * i).collect();
        let records: Vec<u64> = (0..20).map(|i| 500 - 20 * i).collect();
        let fields = feed(&durations, &records);
        assert_eq!(fields.duration_trend, DurationTrend::Faster);
        assert_eq!(fields.data_volume_trend, VolumeTrend::Decreasing);
        assert_eq!(fields.duration_trend.as_str(), "FASTER");
        assert_eq!(fields.data_volume_trend.as_str(), "DECREASING");
    }

    #[test]
    fn flat_and_noisy_series_are_stable() {
        let flat = feed(&[1_000; 30], &[50; 30]);
        assert_eq!(flat.duration_trend, DurationTrend::Stable);
        assert_eq!(flat.data_volume_trend, VolumeTrend::Stable);
        assert_eq!(flat.duration_trend.as_str(), "STABLE");
        assert_eq!(flat.data_volume_trend.as_str(), "STABLE");

        let noisy: Vec<u64> = (0..30).map(|i| if i % 2 == 0 { 950 } else { 1_050 }).collect();
        let fields = feed(&noisy, &noisy);
        assert_eq!(fields.duration_trend, DurationTrend::Stable);
        assert_eq!(fields.data_volume_trend, VolumeTrend::Stable);
    }

    #[test]
    fn one_outlier_does_not_flip_a_steady_worker() {
        for outlier in [500, 1_500] {
            let mut durations = vec![1_000; 30];
            durations.push(outlier);
            let fields = feed(&durations, &durations);
            assert_eq!(fields.duration_trend, DurationTrend::Stable, "{outlier}");
            assert_eq!(fields.data_volume_trend, VolumeTrend::Stable, "{outlier}");
        }
    }

    #[test]
    fn no_verdict_before_min_runs() {
        let steep = [100, 1_000, 10_000, 100_000];
        let fields = feed(&steep, &steep);
        assert_eq!(fields.duration_trend, DurationTrend::Stable);
        assert_eq!(fields.data_volume_trend, VolumeTrend::Stable);
        let fields = feed(&[100, 1_000, 10_000, 100_000, 1_000_000], &[1; 5]);
        assert_eq!(fields.duration_trend, DurationTrend::Slower);
    }
}
