//! Learning insights and recommendations derived from a worker's aggregated history.
//!
//! This module owns turning per-slot statistics and run aggregates into advice: the best time slot to run
//! ([`optimal_slot`]), the direction of a metric over time ([`trend`]) and concrete, evidence-backed
//! recommendations ([`recommendations`]). Inputs are aggregates the caller computed (counts, means, rates);
//! it does no I/O and never reads the clock. Every recommendation states the numbers that justify it, and
//! none is made when the data does not support it ("not enough data" rather than guessing).
//!
//! # Rules
//!
//! - Optimal slot: among slots with at least `min_samples` runs (and a finite mean score), the best mean
//!   overall score; ties (within [`SCORE_TIE_EPSILON`]) go to the lower mean duration, then to the lower slot
//!   number. Fewer than two qualifying slots → `NotEnoughData`.
//! - Trend: least-squares slope of value over time in days; `STABLE` when `|slope| × span_days ≤ 10 % of
//!   |mean|` (the fitted change over the whole span is under a tenth of the typical level), or with fewer
//!   than two points or no time span.
//! - `SCHEDULE`: the most common start hour has ≥ `min_samples` runs, [`optimal_slot`] finds a different
//!   hour, and that hour's mean score beats the current one by ≥ [`SCHEDULE_MIN_GAIN`] points.
//! - `BATCH_SIZE` (rate limits): ≥ [`MIN_RUNS`] runs and ≥ [`RATE_LIMITED_SHARE`] of them rate-limited.
//! - `BATCH_SIZE` (database): ≥ [`MIN_RUNS`] runs and more than [`MAX_DB_QUERIES`] queries per run on
//!   average.
//! - `RESOURCES`: peak memory ≥ [`MEMORY_HEADROOM`] of the memory limit (limit > 0, at least one run).
//! - `RELIABILITY`: ≥ [`MIN_RUNS`] runs and a success rate below [`MIN_SUCCESS_RATE`].

use chrono::{DateTime, Utc};

/// Mean scores closer than this are a tie.
pub const SCORE_TIE_EPSILON: f64 = 1e-9;
/// Default `min_samples` for [`optimal_slot`] and [`RecommendationInput::min_samples`].
pub const DEFAULT_MIN_SAMPLES: u64 = 5;
/// [`trend`] is `STABLE` when the fitted change over the span is within this fraction of the mean.
pub const STABLE_FRACTION: f64 = 0.1;
/// A schedule move needs the best slot to beat the current one by at least this many score points.
pub const SCHEDULE_MIN_GAIN: f64 = 10.0;
/// Aggregate-based recommendations (batch size, reliability) need at least this many runs.
pub const MIN_RUNS: u64 = 10;
/// Share of rate-limited runs from which a smaller batch is recommended.
pub const RATE_LIMITED_SHARE: f64 = 0.2;
/// Average database queries per run above which batching is recommended.
pub const MAX_DB_QUERIES: f64 = 100.0;
/// Peak memory at or above this fraction of the limit triggers a resource recommendation.
pub const MEMORY_HEADROOM: f64 = 0.8;
/// Success rate (0..=1) below which a reliability recommendation is made.
pub const MIN_SUCCESS_RATE: f64 = 0.9;

const SECONDS_PER_DAY: f64 = 86_400.0;

/// Aggregates of the runs that started in one slot.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotStats {
    /// Hour of day 0-23 (UTC), or weekday 0-6 with 0 = Monday.
    pub slot: u32,
    /// Runs that started in the slot.
    pub runs: u64,
    /// Mean overall score 0-100 of those runs.
    pub mean_score: f64,
    /// Mean duration of those runs in milliseconds.
    pub mean_duration_ms: f64,
    /// Fraction 0..=1.
    pub success_rate: f64,
}

/// The best slot, or why there is none.
#[derive(Clone, Debug, PartialEq)]
pub enum Optimal {
    /// The winning slot with its mean score and run count.
    Found {
        /// Hour or weekday, as in [`SlotStats::slot`].
        slot: u32,
        /// Its mean overall score.
        mean_score: f64,
        /// Its run count.
        runs: u64,
    },
    /// Fewer than two slots have enough runs to compare.
    NotEnoughData {
        /// One sentence saying what is missing.
        reason: String,
    },
}

/// The best slot by mean overall score (rules in the module docs).
pub fn optimal_slot(slots: &[SlotStats], min_samples: u64) -> Optimal {
    let min_samples = min_samples.max(1);
    let qualified: Vec<&SlotStats> =
        slots.iter().filter(|s| s.runs >= min_samples && s.mean_score.is_finite()).collect();
    if qualified.len() < 2 {
        return Optimal::NotEnoughData {
            reason: format!(
                "not enough data: {} of {} slots have at least {min_samples} runs; need 2 to compare",
                qualified.len(),
                slots.len()
            ),
        };
    }
    let better = |a: &SlotStats, b: &SlotStats| {
        if (a.mean_score - b.mean_score).abs() > SCORE_TIE_EPSILON {
            a.mean_score > b.mean_score
        } else if a.mean_duration_ms != b.mean_duration_ms {
            a.mean_duration_ms < b.mean_duration_ms
        } else {
            a.slot < b.slot
        }
    };
    let mut best = qualified[0];
    for candidate in &qualified[1..] {
        if better(candidate, best) {
            best = candidate;
        }
    }
    Optimal::Found { slot: best.slot, mean_score: best.mean_score, runs: best.runs }
}

/// Direction of a metric over time.
#[derive(Clone, Debug, PartialEq)]
pub struct Trend {
    /// Least-squares slope in value units per day.
    pub slope_per_day: f64,
    /// `INCREASING`, `DECREASING` or `STABLE`.
    pub direction: &'static str,
    /// Number of (finite) points used.
    pub samples: usize,
}

/// Least-squares trend of `(time, value)` points, typically one per day, in any order; non-finite values
/// are ignored (rules in the module docs).
pub fn trend(points: &[(DateTime<Utc>, f64)]) -> Trend {
    let valid: Vec<(DateTime<Utc>, f64)> = points.iter().copied().filter(|(_, v)| v.is_finite()).collect();
    let samples = valid.len();
    let stable = Trend { slope_per_day: 0.0, direction: "STABLE", samples };
    let Some(origin) = valid.iter().map(|(t, _)| *t).min() else {
        return stable;
    };
    let xs: Vec<f64> =
        valid.iter().map(|(t, _)| (*t - origin).num_milliseconds() as f64 / 1000.0 / SECONDS_PER_DAY).collect();
    let ys: Vec<f64> = valid.iter().map(|(_, v)| *v).collect();
    let n = samples as f64;
    let mean_x = xs.iter().sum::<f64>() / n;
    let mean_y = ys.iter().sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mean_x).powi(2)).sum();
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mean_x) * (y - mean_y)).sum();
    let span = xs.iter().copied().fold(0.0, f64::max);
    if samples < 2 || sxx <= 0.0 || span <= 0.0 {
        return stable;
    }
    let slope = sxy / sxx;
    let direction = if slope.abs() * span <= STABLE_FRACTION * mean_y.abs() {
        "STABLE"
    } else if slope > 0.0 {
        "INCREASING"
    } else {
        "DECREASING"
    };
    Trend { slope_per_day: slope, direction, samples }
}

/// One piece of advice.
#[derive(Clone, Debug, PartialEq)]
pub struct Recommendation {
    /// `SCHEDULE`, `BATCH_SIZE`, `RESOURCES` or `RELIABILITY`.
    pub kind: &'static str,
    /// What to do, naming the worker.
    pub message: String,
    /// The numbers that justify it.
    pub evidence: String,
}

/// What [`recommendations`] looks at, aggregated over the caller's window (e.g. the last 30 days).
#[derive(Clone, Debug, PartialEq)]
pub struct RecommendationInput {
    /// Worker name used in the messages.
    pub worker_name: String,
    /// Per start hour (UTC) statistics.
    pub hourly: Vec<SlotStats>,
    /// Minimum runs per slot to trust its mean ([`DEFAULT_MIN_SAMPLES`] is a sensible value).
    pub min_samples: u64,
    /// The most common start hour, if known.
    pub current_hour: Option<u32>,
    /// Runs that hit an API rate limit.
    pub rate_limited_runs: u64,
    /// All runs in the window.
    pub runs: u64,
    /// Mean database queries per run.
    pub avg_db_queries: f64,
    /// Highest peak memory of any run, in MB.
    pub max_memory_mb: f64,
    /// Mean peak memory, in MB.
    pub avg_memory_mb: f64,
    /// The worker's memory budget in MB (500 by default in runwarden).
    pub memory_limit_mb: f64,
    /// Fraction 0..=1.
    pub success_rate: f64,
}

/// Evidence-backed recommendations, in the order SCHEDULE, BATCH_SIZE (rate limits, then database),
/// RESOURCES, RELIABILITY; each only when its rule in the module docs holds.
pub fn recommendations(input: &RecommendationInput) -> Vec<Recommendation> {
    let mut out = Vec::new();
    out.extend(schedule_recommendation(input));
    let name = &input.worker_name;
    if input.runs >= MIN_RUNS {
        let share = input.rate_limited_runs.min(input.runs) as f64 / input.runs as f64;
        if share >= RATE_LIMITED_SHARE {
            out.push(Recommendation {
                kind: "BATCH_SIZE",
                message: format!("reduce the batch size of {name} or spread its API calls over the run"),
                evidence: format!(
                    "{} of {} runs ({:.0} %) were rate-limited (threshold {:.0} %)",
                    input.rate_limited_runs.min(input.runs),
                    input.runs,
                    share * 100.0,
                    RATE_LIMITED_SHARE * 100.0
                ),
            });
        }
        if input.avg_db_queries.is_finite() && input.avg_db_queries > MAX_DB_QUERIES {
            out.push(Recommendation {
                kind: "BATCH_SIZE",
                message: format!(
                    "batch the database access of {name} (bulk reads and writes instead of per-record queries)"
                ),
                evidence: format!(
                    "{:.0} database queries per run on average over {} runs (threshold {MAX_DB_QUERIES:.0})",
                    input.avg_db_queries, input.runs
                ),
            });
        }
    }
    let limit = input.memory_limit_mb;
    if input.runs > 0 && limit.is_finite() && limit > 0.0 && input.max_memory_mb >= MEMORY_HEADROOM * limit {
        out.push(Recommendation {
            kind: "RESOURCES",
            message: format!("raise the memory limit of {name} or reduce its working set"),
            evidence: format!(
                "peak memory {:.0} MB is {:.0} % of the {limit:.0} MB limit (average {:.0} MB over {} runs)",
                input.max_memory_mb,
                input.max_memory_mb / limit * 100.0,
                input.avg_memory_mb,
                input.runs
            ),
        });
    }
    if input.runs >= MIN_RUNS && input.success_rate.is_finite() && input.success_rate < MIN_SUCCESS_RATE {
        out.push(Recommendation {
            kind: "RELIABILITY",
            message: format!("investigate the failures of {name}"),
            evidence: format!(
                "success rate {:.1} % over {} runs (target {:.0} %)",
                input.success_rate * 100.0,
                input.runs,
                MIN_SUCCESS_RATE * 100.0
            ),
        });
    }
    out
}

fn schedule_recommendation(input: &RecommendationInput) -> Option<Recommendation> {
    let current_hour = input.current_hour?;
    let min_samples = input.min_samples.max(1);
    let current = input.hourly.iter().find(|s| s.slot == current_hour && s.runs >= min_samples)?;
    let Optimal::Found { slot, mean_score, runs } = optimal_slot(&input.hourly, min_samples) else {
        return None;
    };
    if slot == current_hour || !current.mean_score.is_finite() || mean_score - current.mean_score < SCHEDULE_MIN_GAIN {
        return None;
    }
    let counts =
        if runs == current.runs { format!("{runs} runs each") } else { format!("{} and {runs} runs", current.runs) };
    Some(Recommendation {
        kind: "SCHEDULE",
        message: format!("move {} from {current_hour:02}:00 to {slot:02}:00 UTC", input.worker_name),
        evidence: format!(
            "runs at {current_hour:02}:00 score {:.0} on average, runs at {slot:02}:00 score {mean_score:.0} — {counts}",
            current.mean_score
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone};

    fn slot(slot: u32, runs: u64, mean_score: f64, mean_duration_ms: f64) -> SlotStats {
        SlotStats { slot, runs, mean_score, mean_duration_ms, success_rate: 1.0 }
    }

    fn day(d: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap() + TimeDelta::days(d)
    }

    /// A worker that mostly runs at 14:00 (score 61) but whose 03:00 runs score 88.
    fn analytics() -> RecommendationInput {
        RecommendationInput {
            worker_name: "analytics_flush_worker".to_string(),
            hourly: vec![
                slot(3, 40, 88.0, 900.0),
                slot(14, 40, 61.0, 1500.0),
                slot(9, 3, 99.0, 100.0),
                slot(20, 12, 70.0, 1200.0),
            ],
            min_samples: DEFAULT_MIN_SAMPLES,
            current_hour: Some(14),
            rate_limited_runs: 0,
            runs: 95,
            avg_db_queries: 12.0,
            max_memory_mb: 180.0,
            avg_memory_mb: 150.0,
            memory_limit_mb: 500.0,
            success_rate: 0.99,
        }
    }

    #[test]
    fn optimal_hour_is_the_best_scoring_slot_with_enough_runs() {
        // Hour 9 scores 99 but has only 3 runs: ignored.
        assert_eq!(
            optimal_slot(&analytics().hourly, DEFAULT_MIN_SAMPLES),
            Optimal::Found { slot: 3, mean_score: 88.0, runs: 40 }
        );
        // With min_samples 3, hour 9 qualifies and wins.
        assert_eq!(optimal_slot(&analytics().hourly, 3), Optimal::Found { slot: 9, mean_score: 99.0, runs: 3 });
    }

    #[test]
    fn ties_go_to_shorter_duration_then_lower_slot() {
        let tied = [slot(5, 10, 80.0, 2000.0), slot(7, 10, 80.0, 1000.0), slot(2, 10, 70.0, 10.0)];
        assert_eq!(optimal_slot(&tied, 5), Optimal::Found { slot: 7, mean_score: 80.0, runs: 10 });
        let identical = [slot(8, 10, 80.0, 1000.0), slot(6, 10, 80.0, 1000.0)];
        assert_eq!(optimal_slot(&identical, 5), Optimal::Found { slot: 6, mean_score: 80.0, runs: 10 });
    }

    #[test]
    fn not_enough_data() {
        let one = [slot(3, 40, 88.0, 900.0), slot(4, 2, 95.0, 900.0)];
        assert_eq!(
            optimal_slot(&one, 5),
            Optimal::NotEnoughData {
                reason: "not enough data: 1 of 2 slots have at least 5 runs; need 2 to compare".to_string()
            }
        );
        assert!(matches!(optimal_slot(&[], 5), Optimal::NotEnoughData { .. }));
        let nan = [slot(3, 40, f64::NAN, 900.0), slot(4, 40, 70.0, 900.0)];
        assert!(matches!(optimal_slot(&nan, 5), Optimal::NotEnoughData { .. }));
    }

    #[test]
    fn trend_directions() {
        let rising: Vec<_> = (0..14).map(|d| (day(d), 50.0 + 2.0 * d as f64)).collect();
        let t = trend(&rising);
        assert_eq!((t.direction, t.samples), ("INCREASING", 14));
        assert!((t.slope_per_day - 2.0).abs() < 1e-9);
        let falling: Vec<_> = (0..14).rev().map(|d| (day(d), 1000.0 - 30.0 * d as f64)).collect();
        let t = trend(&falling);
        assert_eq!(t.direction, "DECREASING");
        assert!((t.slope_per_day + 30.0).abs() < 1e-9);
        // +0.5/day over 13 days = 6.5, under 10 % of the ~83 mean: stable.
        let flat: Vec<_> =
            (0..14).map(|d| (day(d), 80.0 + 0.5 * d as f64 + if d % 2 == 0 { 3.0 } else { -3.0 })).collect();
        assert_eq!(trend(&flat).direction, "STABLE");
        assert_eq!(trend(&[]).direction, "STABLE");
        assert_eq!(trend(&[(day(0), 5.0)]), Trend { slope_per_day: 0.0, direction: "STABLE", samples: 1 });
        assert_eq!(trend(&[(day(0), 5.0), (day(0), 9.0)]).direction, "STABLE", "no time span");
        assert_eq!(trend(&[(day(0), 0.0), (day(1), 0.0), (day(2), f64::NAN)]).samples, 2);
        // Around zero any real slope is a trend.
        assert_eq!(trend(&[(day(0), -1.0), (day(1), 0.0), (day(2), 1.0)]).direction, "INCREASING");
    }

    #[test]
    fn schedule_move_message_and_evidence() {
        let recs = recommendations(&analytics());
        assert_eq!(
            recs,
            vec![Recommendation {
                kind: "SCHEDULE",
                message: "move analytics_flush_worker from 14:00 to 03:00 UTC".to_string(),
                evidence: "runs at 14:00 score 61 on average, runs at 03:00 score 88 — 40 runs each".to_string(),
            }]
        );
        let mut uneven = analytics();
        uneven.hourly[1].runs = 55;
        assert_eq!(
            recommendations(&uneven)[0].evidence,
            "runs at 14:00 score 61 on average, runs at 03:00 score 88 — 55 and 40 runs"
        );
    }

    #[test]
    fn schedule_move_needs_evidence() {
        let small_gain =
            RecommendationInput { hourly: vec![slot(3, 40, 70.0, 900.0), slot(14, 40, 61.0, 1500.0)], ..analytics() };
        assert!(recommendations(&small_gain).is_empty(), "9 points is under the 10-point bar");
        let thin_current = RecommendationInput {
            hourly: vec![slot(3, 40, 88.0, 900.0), slot(14, 4, 61.0, 1500.0), slot(20, 12, 70.0, 1200.0)],
            ..analytics()
        };
        assert!(recommendations(&thin_current).is_empty(), "too few runs at the current hour");
        let already_best = RecommendationInput { current_hour: Some(3), ..analytics() };
        assert!(recommendations(&already_best).is_empty());
        let unknown = RecommendationInput { current_hour: None, ..analytics() };
        assert!(recommendations(&unknown).is_empty());
        let single = RecommendationInput { hourly: vec![slot(14, 40, 61.0, 1500.0)], ..analytics() };
        assert!(recommendations(&single).is_empty());
    }

    fn quiet() -> RecommendationInput {
        RecommendationInput { current_hour: None, ..analytics() }
    }

    #[test]
    fn batch_size_on_rate_limits_or_db_queries() {
        let limited = RecommendationInput { rate_limited_runs: 30, ..quiet() };
        assert_eq!(
            recommendations(&limited),
            vec![Recommendation {
                kind: "BATCH_SIZE",
                message: "reduce the batch size of analytics_flush_worker or spread its API calls over the run"
                    .to_string(),
                evidence: "30 of 95 runs (32 %) were rate-limited (threshold 20 %)".to_string(),
            }]
        );
        assert!(
            recommendations(&RecommendationInput { rate_limited_runs: 18, ..quiet() }).is_empty(),
            "19 % is under 20 %"
        );
        let chatty = RecommendationInput { avg_db_queries: 240.0, ..quiet() };
        let recs = recommendations(&chatty);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].kind, "BATCH_SIZE");
        assert_eq!(recs[0].evidence, "240 database queries per run on average over 95 runs (threshold 100)");
        assert!(recommendations(&RecommendationInput { avg_db_queries: 100.0, ..quiet() }).is_empty());
        // Too few runs to judge.
        assert!(
            recommendations(&RecommendationInput { runs: 5, rate_limited_runs: 5, avg_db_queries: 500.0, ..quiet() })
                .is_empty()
        );
    }

    #[test]
    fn resources_when_peak_memory_is_near_the_limit() {
        let heavy = RecommendationInput { max_memory_mb: 430.0, avg_memory_mb: 310.0, ..quiet() };
        assert_eq!(
            recommendations(&heavy),
            vec![Recommendation {
                kind: "RESOURCES",
                message: "raise the memory limit of analytics_flush_worker or reduce its working set".to_string(),
                evidence: "peak memory 430 MB is 86 % of the 500 MB limit (average 310 MB over 95 runs)".to_string(),
            }]
        );
        assert_eq!(recommendations(&RecommendationInput { max_memory_mb: 400.0, ..quiet() }).len(), 1, "exactly 80 %");
        assert!(recommendations(&RecommendationInput { max_memory_mb: 399.0, ..quiet() }).is_empty());
        assert!(
            recommendations(&RecommendationInput { max_memory_mb: 900.0, memory_limit_mb: 0.0, ..quiet() }).is_empty()
        );
    }

    #[test]
    fn reliability_when_success_rate_is_low() {
        let flaky = RecommendationInput { success_rate: 0.82, ..quiet() };
        assert_eq!(
            recommendations(&flaky),
            vec![Recommendation {
                kind: "RELIABILITY",
                message: "investigate the failures of analytics_flush_worker".to_string(),
                evidence: "success rate 82.0 % over 95 runs (target 90 %)".to_string(),
            }]
        );
        assert!(recommendations(&RecommendationInput { success_rate: 0.9, ..quiet() }).is_empty());
        assert!(recommendations(&RecommendationInput { success_rate: 0.2, runs: 4, ..quiet() }).is_empty());
    }

    #[test]
    fn all_kinds_in_order() {
        let everything = RecommendationInput {
            rate_limited_runs: 40,
            avg_db_queries: 150.0,
            max_memory_mb: 480.0,
            success_rate: 0.5,
            ..analytics()
        };
        let kinds: Vec<_> = recommendations(&everything).iter().map(|r| r.kind).collect();
        assert_eq!(kinds, ["SCHEDULE", "BATCH_SIZE", "BATCH_SIZE", "RESOURCES", "RELIABILITY"]);
    }
}
