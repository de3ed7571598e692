//! Rollups and the statistics read from them. Every execution is folded into two rollups of its
//! worker: its UTC hour and its UTC day (of `started_at`). A window is covered by day rows for its
//! whole days and hour rows for the rest ([`cover`]), so the cost of a statistic grows with the
//! window's length in days and hours, never with the number of raw executions.
//!
//! Floating sums depend on the order of additions, so incremental updates and a rebuild fold
//! executions in the same order (storage order) and produce identical rows.

use std::collections::BTreeMap;

use super::{scoring::QualityLevel, sketch::DurationSketch};
use crate::proto::v1 as pb;

pub const HOUR_US: i64 = 3_600_000_000;
pub const DAY_US: i64 = 24 * HOUR_US;

/// Start of the UTC hour containing `us` (microseconds since the epoch).
pub fn hour_start(us: i64) -> i64 {
    us.div_euclid(HOUR_US) * HOUR_US
}

/// The length of a rollup row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    Hour,
    Day,
}

impl Period {
    pub const ALL: [Period; 2] = [Period::Hour, Period::Day];

    pub fn len_us(self) -> i64 {
        match self {
            Period::Hour => HOUR_US,
            Period::Day => DAY_US,
        }
    }

    /// Start of the period containing `us`.
    pub fn start(self, us: i64) -> i64 {
        us.div_euclid(self.len_us()) * self.len_us()
    }

    /// The stored form.
    pub fn code(self) -> i16 {
        match self {
            Period::Hour => 1,
            Period::Day => 2,
        }
    }

    pub fn from_code(code: i16) -> Option<Period> {
        match code {
            1 => Some(Period::Hour),
            2 => Some(Period::Day),
            _ => None,
        }
    }
}

/// `(period, start_us, end_us)` ranges of rollup rows that together cover a window exactly once.
pub type Cover = Vec<(Period, i64, i64)>;

/// Covers the hour-aligned window `[since_us, until_us)` with day rows for its whole UTC days and
/// hour rows for the partial days at either end; `hours_only` uses hour rows throughout (for
/// hourly trends).
pub fn cover(since_us: i64, until_us: i64, hours_only: bool) -> Cover {
    let first_day = Period::Day.start(since_us + DAY_US - 1);
    let last_day = Period::Day.start(until_us);
    if hours_only || first_day >= last_day {
        return vec![(Period::Hour, since_us, until_us)];
    }
    let mut ranges = vec![(Period::Day, first_day, last_day)];
    if since_us < first_day {
        ranges.push((Period::Hour, since_us, first_day));
    }
    if last_day < until_us {
        ranges.push((Period::Hour, last_day, until_us));
    }
    ranges
}

/// How a run ended, as rollups count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Success,
    Partial,
    Failed,
    Timeout,
    Skipped,
}

/// What a rollup needs from one execution.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionFacts {
    pub started_at_us: i64,
    pub outcome: RunOutcome,
    pub duration_ms: i64,
    pub reliability: f64,
    pub performance: f64,
    pub data_quality: f64,
    pub resource_efficiency: f64,
    pub overall: f64,
    pub records_fetched: i64,
    pub records_processed: i64,
    pub records_failed: i64,
    pub validation_checks_passed: i64,
    pub validation_checks_failed: i64,
    pub api_rate_limited: bool,
    pub missing_fields: i64,
    pub newest_record_age_seconds: Option<f64>,
}

impl ExecutionFacts {
    /// The facts of a stored report; incremental updates and rebuilds both build them here.
    pub fn from_report(report: &pb::ExecutionReport, scores: &pb::Scores, started_at_us: i64) -> ExecutionFacts {
        let absent = pb::DataVerification::default();
        let data = report.data_verification.as_ref().unwrap_or(&absent);
        ExecutionFacts {
            started_at_us,
            outcome: match report.outcome() {
                pb::Outcome::Partial => RunOutcome::Partial,
                pb::Outcome::Failed => RunOutcome::Failed,
                pb::Outcome::Timeout => RunOutcome::Timeout,
                pb::Outcome::Skipped => RunOutcome::Skipped,
                pb::Outcome::Success | pb::Outcome::Unspecified => RunOutcome::Success,
            },
            duration_ms: report.duration_ms.unwrap_or(0),
            reliability: scores.reliability,
            performance: scores.performance,
            data_quality: scores.data_quality,
            resource_efficiency: scores.resource_efficiency,
            overall: scores.overall,
            records_fetched: data.records_fetched,
            records_processed: data.records_processed,
            records_failed: data.records_failed,
            validation_checks_passed: data.validation_checks_passed,
            validation_checks_failed: data.validation_checks_failed,
            api_rate_limited: data.api_rate_limited,
            missing_fields: data.missing_fields.len() as i64,
            newest_record_age_seconds: data.newest_record_age_seconds,
        }
    }
}

/// One worker's runs in one UTC hour.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollup {
    pub runs: i64,
    pub successful: i64,
    pub partial: i64,
    pub failed: i64,
    pub timed_out: i64,
    pub skipped: i64,
    pub duration_sum_ms: i64,
    pub duration_sumsq: f64,
    pub duration_max_ms: i64,
    pub reliability_sum: f64,
    pub performance_sum: f64,
    pub data_quality_sum: f64,
    pub resource_efficiency_sum: f64,
    pub overall_sum: f64,
    pub overall_sumsq: f64,
    pub records_fetched: i64,
    pub records_processed: i64,
    pub records_failed: i64,
    pub validation_passed: i64,
    pub validation_failed: i64,
    pub rate_limited_runs: i64,
    pub missing_fields: i64,
    /// The stalest `newest_record_age_seconds` reported in the hour.
    pub newest_record_age_max: Option<f64>,
    pub durations: DurationSketch,
}

impl Rollup {
    pub fn observe(&mut self, f: &ExecutionFacts) {
        self.runs += 1;
        match f.outcome {
            RunOutcome::Success => self.successful += 1,
            RunOutcome::Partial => self.partial += 1,
            RunOutcome::Failed => self.failed += 1,
            RunOutcome::Timeout => self.timed_out += 1,
            RunOutcome::Skipped => self.skipped += 1,
        }
        self.duration_sum_ms = self.duration_sum_ms.saturating_add(f.duration_ms);
        self.duration_sumsq += (f.duration_ms as f64) * (f.duration_ms as f64);
        self.duration_max_ms = self.duration_max_ms.max(f.duration_ms);
        self.reliability_sum += f.reliability;
        self.performance_sum += f.performance;
        self.data_quality_sum += f.data_quality;
        self.resource_efficiency_sum += f.resource_efficiency;
        self.overall_sum += f.overall;
        self.overall_sumsq += f.overall * f.overall;
        self.records_fetched = self.records_fetched.saturating_add(f.records_fetched);
        self.records_processed = self.records_processed.saturating_add(f.records_processed);
        self.records_failed = self.records_failed.saturating_add(f.records_failed);
        self.validation_passed = self.validation_passed.saturating_add(f.validation_checks_passed);
        self.validation_failed = self.validation_failed.saturating_add(f.validation_checks_failed);
        self.rate_limited_runs += i64::from(f.api_rate_limited);
        self.missing_fields = self.missing_fields.saturating_add(f.missing_fields);
        if let Some(age) = f.newest_record_age_seconds {
            self.newest_record_age_max = Some(self.newest_record_age_max.map_or(age, |max| max.max(age)));
        }
        self.durations.add(f.duration_ms as f64);
    }

    pub fn merge(&mut self, o: &Rollup) {
        self.runs += o.runs;
        self.successful += o.successful;
        self.partial += o.partial;
        self.failed += o.failed;
        self.timed_out += o.timed_out;
        self.skipped += o.skipped;
        self.duration_sum_ms = self.duration_sum_ms.saturating_add(o.duration_sum_ms);
        self.duration_sumsq += o.duration_sumsq;
        self.duration_max_ms = self.duration_max_ms.max(o.duration_max_ms);
        self.reliability_sum += o.reliability_sum;
        self.performance_sum += o.performance_sum;
        self.data_quality_sum += o.data_quality_sum;
        self.resource_efficiency_sum += o.resource_efficiency_sum;
        self.overall_sum += o.overall_sum;
        self.overall_sumsq += o.overall_sumsq;
        self.records_fetched = self.records_fetched.saturating_add(o.records_fetched);
        self.records_processed = self.records_processed.saturating_add(o.records_processed);
        self.records_failed = self.records_failed.saturating_add(o.records_failed);
        self.validation_passed = self.validation_passed.saturating_add(o.validation_passed);
        self.validation_failed = self.validation_failed.saturating_add(o.validation_failed);
        self.rate_limited_runs += o.rate_limited_runs;
        self.missing_fields = self.missing_fields.saturating_add(o.missing_fields);
        self.newest_record_age_max = match (self.newest_record_age_max, o.newest_record_age_max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.durations.merge(&o.durations);
    }

    /// Successful runs over runs that were not skipped (a skip is not a failure); 0 with none.
    pub fn success_rate(&self) -> f64 {
        let judged = self.runs - self.skipped;
        if judged > 0 { self.successful as f64 / judged as f64 } else { 0.0 }
    }

    fn mean(&self, sum: f64) -> f64 {
        if self.runs > 0 { sum / self.runs as f64 } else { 0.0 }
    }

    pub fn mean_overall(&self) -> f64 {
        self.mean(self.overall_sum)
    }

    pub fn mean_data_quality(&self) -> f64 {
        self.mean(self.data_quality_sum)
    }

    pub fn mean_duration_ms(&self) -> f64 {
        self.mean(self.duration_sum_ms as f64)
    }
}

/// Figures over a window, from the window's hourly rollups.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowStats {
    pub total: Rollup,
    pub avg_reliability: f64,
    pub avg_performance: f64,
    pub avg_data_quality: f64,
    pub avg_resource_efficiency: f64,
    pub avg_overall: f64,
    pub p50_duration_ms: f64,
    pub p95_duration_ms: f64,
    /// (bucket start, merged rollup), oldest first.
    pub trend: Vec<(i64, Rollup)>,
}

/// Merges `(start_us, rollup)` rows (hours, or buckets already grouped) into totals and a trend
/// series with buckets of `bucket_us` (an hour or a day); `durations` is the window's merged
/// duration sketch when the rows carry none.
pub fn window_stats(rows: &[(i64, Rollup)], bucket_us: i64, durations: DurationSketch) -> WindowStats {
    let mut total = Rollup { durations, ..Rollup::default() };
    let mut buckets: BTreeMap<i64, Rollup> = BTreeMap::new();
    for (hour, rollup) in rows {
        total.merge(rollup);
        buckets.entry(hour.div_euclid(bucket_us) * bucket_us).or_default().merge(rollup);
    }
    WindowStats {
        avg_reliability: total.mean(total.reliability_sum),
        avg_performance: total.mean(total.performance_sum),
        avg_data_quality: total.mean(total.data_quality_sum),
        avg_resource_efficiency: total.mean(total.resource_efficiency_sum),
        avg_overall: total.mean_overall(),
        p50_duration_ms: total.durations.quantile(0.5).unwrap_or(0.0),
        p95_duration_ms: total.durations.quantile(0.95).unwrap_or(0.0),
        trend: buckets.into_iter().collect(),
        total,
    }
}

/// The level of a mean score, or `None` with no runs to judge.
pub fn level_of(runs: i64, mean_score: f64) -> Option<QualityLevel> {
    (runs > 0).then(|| QualityLevel::from_score(mean_score))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn facts(outcome: RunOutcome, duration_ms: i64, overall: f64) -> ExecutionFacts {
        ExecutionFacts {
            started_at_us: 0,
            outcome,
            duration_ms,
            reliability: overall,
            performance: overall,
            data_quality: overall,
            resource_efficiency: overall,
            overall,
            records_fetched: 10,
            records_processed: 9,
            records_failed: 1,
            validation_checks_passed: 3,
            validation_checks_failed: 1,
            api_rate_limited: outcome == RunOutcome::Failed,
            missing_fields: 2,
            newest_record_age_seconds: Some(duration_ms as f64),
        }
    }

    proptest! {
        /// Every hour of the window is covered exactly once, whichever rows are used.
        #[test]
        fn cover_counts_every_hour_once(start in -1000i64..1000, hours in 1i64..2000, hours_only in any::<bool>()) {
            let since = start * HOUR_US;
            let until = since + hours * HOUR_US;
            let mut covered = std::collections::BTreeMap::new();
            for (period, from, to) in cover(since, until, hours_only) {
                prop_assert_eq!(from % period.len_us(), 0);
                let mut t = from;
                while t < to {
                    for h in 0..period.len_us() / HOUR_US {
                        *covered.entry(t + h * HOUR_US).or_insert(0) += 1;
                    }
                    t += period.len_us();
                }
            }
            let expected: std::collections::BTreeMap<i64, i32> = (0..hours).map(|h| (since + h * HOUR_US, 1)).collect();
            prop_assert_eq!(covered, expected);
        }
    }

    #[test]
    fn hour_start_floors_to_the_utc_hour() {
        assert_eq!(hour_start(HOUR_US + 5), HOUR_US);
        assert_eq!(hour_start(-1), -HOUR_US);
    }

    #[test]
    fn success_rate_ignores_skips() {
        let mut r = Rollup::default();
        r.observe(&facts(RunOutcome::Success, 10, 100.0));
        r.observe(&facts(RunOutcome::Failed, 10, 20.0));
        r.observe(&facts(RunOutcome::Skipped, 1, 100.0));
        assert_eq!(r.success_rate(), 0.5);
        assert_eq!((r.runs, r.successful, r.failed, r.skipped, r.rate_limited_runs), (3, 1, 1, 1, 1));
    }

    proptest! {
        /// Merging per-hour rollups gives the counts and integer sums of observing everything at once.
        #[test]
        fn merge_matches_single_pass(runs in proptest::collection::vec((0usize..5, 0i64..100_000, 0.0f64..100.0, 0usize..4), 1..200)) {
            let outcomes = [RunOutcome::Success, RunOutcome::Partial, RunOutcome::Failed, RunOutcome::Timeout, RunOutcome::Skipped];
            let mut parts = vec![Rollup::default(); 4];
            let mut all = Rollup::default();
            for (o, d, s, part) in &runs {
                let f = facts(outcomes[*o], *d, *s);
                parts[*part].observe(&f);
                all.observe(&f);
            }
            let rows: Vec<(i64, Rollup)> = parts.into_iter().enumerate().map(|(i, r)| (i as i64 * HOUR_US, r)).collect();
            let stats = window_stats(&rows, DAY_US, DurationSketch::default());
            prop_assert_eq!(stats.total.runs, all.runs);
            prop_assert_eq!(stats.total.successful, all.successful);
            prop_assert_eq!(stats.total.duration_sum_ms, all.duration_sum_ms);
            prop_assert_eq!(stats.total.duration_max_ms, all.duration_max_ms);
            prop_assert_eq!(&stats.total.durations, &all.durations);
            prop_assert!((stats.total.overall_sum - all.overall_sum).abs() < 1e-6);
            prop_assert_eq!(stats.trend.len(), 1);
        }
    }
}
