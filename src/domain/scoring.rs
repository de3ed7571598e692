//! Run scoring: one run report plus the worker's duration history in, four
//! sub-scores, an overall score, a quality level and the reasons behind every
//! deduction out.
//!
//! Owns the scoring rules and their defaults ([`ScoringConfig`]). Pure: no
//! I/O, no clock, no logging; the same inputs always give the same card. The
//! formulas are spelled out in `docs/scoring.md`, whose worked example is
//! checked by `tests::worked_example`.
//!
//! Every sub-score starts at 100 and loses points; each loss is reported as a
//! reason string `"<input> <value> (-<points>)"` with points rounded to one
//! decimal. All arithmetic is `f64` on converted counts, so no input
//! (`u64::MAX`, `f64::MAX`, NaN) can overflow or leak a NaN into a score.

/// How a run ended, as reported by the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Outcome {
    /// Completed normally.
    #[default]
    Success,
    /// Completed, but only part of the work was done.
    Partial,
    /// Stopped with an error.
    Failed,
    /// Stopped because it ran out of time.
    Timeout,
    /// Decided not to run (nothing to do, lock held, outside its window).
    Skipped,
}

impl Outcome {
    /// Wire name: `"SUCCESS"`, `"PARTIAL"`, `"FAILED"`, `"TIMEOUT"`, `"SKIPPED"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "SUCCESS",
            Outcome::Partial => "PARTIAL",
            Outcome::Failed => "FAILED",
            Outcome::Timeout => "TIMEOUT",
            Outcome::Skipped => "SKIPPED",
        }
    }

    /// Inverse of [`Outcome::as_str`]; exact, upper-case match only.
    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "SUCCESS" => Some(Outcome::Success),
            "PARTIAL" => Some(Outcome::Partial),
            "FAILED" => Some(Outcome::Failed),
            "TIMEOUT" => Some(Outcome::Timeout),
            "SKIPPED" => Some(Outcome::Skipped),
            _ => None,
        }
    }

    /// `FAILED` or `TIMEOUT`: the outcomes whose overall score is capped.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::Timeout)
    }
}

/// What one run reported, already validated at the edge.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScoringInput {
    pub outcome: Outcome,
    pub duration_ms: u64,
    /// Informational: not scored.
    pub records_fetched: u64,
    pub records_processed: u64,
    pub records_failed: u64,
    pub validation_checks_passed: u64,
    pub validation_checks_failed: u64,
    /// `None` = not checked.
    pub expected_fields_present: Option<bool>,
    /// Number of expected field names that were missing.
    pub missing_fields: u64,
    /// Sum of the per-field null counts.
    pub null_fields: u64,
    /// Age of the newest record seen; `None` = unknown. Finite, `>= 0`.
    pub newest_record_age_seconds: Option<f64>,
    /// `None` = not measured. Finite, `>= 0`.
    pub memory_peak_mb: Option<f64>,
    /// `None` = not measured. `0..=10000` (multi-core).
    pub cpu_percent_avg: Option<f64>,
    pub database_query_count: u64,
}

/// The worker's duration history *before* the run being scored.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DurationBaseline {
    /// Runs in the history; 0 = no history.
    pub count: u64,
    pub mean_ms: f64,
    /// Sample standard deviation.
    pub stddev_ms: f64,
}

/// Weight of each sub-score in the overall score; must sum to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub reliability: f64,
    pub performance: f64,
    pub data_quality: f64,
    pub resource_efficiency: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights { reliability: 0.35, performance: 0.25, data_quality: 0.30, resource_efficiency: 0.10 }
    }
}

/// Tunable knobs. The per-input deduction sizes are fixed constants
/// (`*_MAX_POINTS`, `*_POINTS`) so scores stay comparable across workers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoringConfig {
    pub weights: Weights,
    /// Reliability of a `PARTIAL` run (default 50).
    pub partial_credit: f64,
    /// Reliability of a `SKIPPED` run (default 100: a skip is not a fault).
    pub skipped_credit: f64,
    /// History needed before duration is judged (default 3 runs).
    pub min_history_for_performance: u64,
    /// Duration/mean ratio that is always free (default 1.1).
    pub slow_tolerance_ratio: f64,
    /// Ratio at which performance reaches 0 when the spread is small
    /// (default 3.0); the decline spans `slow_zero_ratio - slow_tolerance_ratio`.
    pub slow_zero_ratio: f64,
    /// Peak memory budget (default 500 MB).
    pub memory_limit_mb: f64,
    /// Average CPU budget (default 80 %).
    pub cpu_limit_percent: f64,
    /// Query budget per run (default 100).
    pub db_query_limit: u64,
    /// Newest record may be this old for free (default 86 400 s = 1 day).
    pub freshness_limit_seconds: f64,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            weights: Weights::default(),
            partial_credit: 50.0,
            skipped_credit: 100.0,
            min_history_for_performance: 3,
            slow_tolerance_ratio: 1.1,
            slow_zero_ratio: 3.0,
            memory_limit_mb: 500.0,
            cpu_limit_percent: 80.0,
            db_query_limit: 100,
            freshness_limit_seconds: 86_400.0,
        }
    }
}

impl ScoringConfig {
    /// Rejects weights that are negative, non-finite or do not sum to 1
    /// (within 1e-9), credits outside `0..=100`, a decline that does not
    /// start at or above 1.0 and end after it starts, and limits that are not
    /// finite and positive.
    pub fn validate(&self) -> Result<(), String> {
        let w = &self.weights;
        let weights = [
            ("reliability", w.reliability),
            ("performance", w.performance),
            ("data_quality", w.data_quality),
            ("resource_efficiency", w.resource_efficiency),
        ];
        for (name, value) in weights {
            if !value.is_finite() || value < 0.0 {
                return Err(format!("weight {name} must be finite and >= 0, got {value}"));
            }
        }
        let sum: f64 = weights.iter().map(|(_, v)| v).sum();
        if (sum - 1.0).abs() > 1e-9 {
            return Err(format!("weights must sum to 1, got {sum}"));
        }
        for (name, value) in [("partial_credit", self.partial_credit), ("skipped_credit", self.skipped_credit)] {
            if !(0.0..=100.0).contains(&value) {
                return Err(format!("{name} must be within 0..=100, got {value}"));
            }
        }
        if !self.slow_tolerance_ratio.is_finite() || self.slow_tolerance_ratio < 1.0 {
            return Err(format!("slow_tolerance_ratio must be finite and >= 1, got {}", self.slow_tolerance_ratio));
        }
        if !self.slow_zero_ratio.is_finite() || self.slow_zero_ratio <= self.slow_tolerance_ratio {
            return Err(format!(
                "slow_zero_ratio must be finite and > slow_tolerance_ratio, got {}",
                self.slow_zero_ratio
            ));
        }
        for (name, value) in [
            ("memory_limit_mb", self.memory_limit_mb),
            ("cpu_limit_percent", self.cpu_limit_percent),
            ("freshness_limit_seconds", self.freshness_limit_seconds),
        ] {
            if !value.is_finite() || value <= 0.0 {
                return Err(format!("{name} must be finite and > 0, got {value}"));
            }
        }
        if self.db_query_limit == 0 {
            return Err("db_query_limit must be > 0".to_string());
        }
        Ok(())
    }
}

/// Overall score of a `FAILED` or `TIMEOUT` run never exceeds this, so such
/// a run is at best [`QualityLevel::Poor`]. A constant, not a knob: the
/// guarantee must hold for every configuration.
pub const FAILED_OVERALL_CAP: f64 = 49.9;
/// Data quality: all validation checks failed.
pub const VALIDATION_MAX_POINTS: f64 = 40.0;
/// Data quality: all records failed.
pub const RECORDS_MAX_POINTS: f64 = 40.0;
/// Data quality: `expected_fields_present == Some(false)`.
pub const EXPECTED_FIELDS_POINTS: f64 = 10.0;
/// Data quality: per missing field name...
pub const MISSING_FIELD_POINTS: f64 = 5.0;
/// ...up to this many points.
pub const MISSING_FIELDS_MAX_POINTS: f64 = 20.0;
/// Data quality: one null (or more) per processed record.
pub const NULLS_MAX_POINTS: f64 = 15.0;
/// Data quality: newest record at least twice the freshness limit old.
pub const STALENESS_MAX_POINTS: f64 = 30.0;
/// Resource efficiency: peak memory at least twice the limit.
pub const MEMORY_MAX_POINTS: f64 = 40.0;
/// Resource efficiency: CPU at least twice the limit.
pub const CPU_MAX_POINTS: f64 = 30.0;
/// Resource efficiency: queries at least twice the limit.
pub const DB_QUERIES_MAX_POINTS: f64 = 30.0;

/// The four sub-scores and their weighted overall, each in `0..=100`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub reliability: f64,
    pub performance: f64,
    pub data_quality: f64,
    pub resource_efficiency: f64,
    pub overall: f64,
}

/// Band of the overall score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QualityLevel {
    /// 90..=100
    Excellent,
    /// 70..<90
    Good,
    /// 50..<70
    Degraded,
    /// 30..<50
    Poor,
    /// <30
    Failed,
}

impl QualityLevel {
    /// Band of `score`; NaN falls to `Failed`.
    pub fn from_score(score: f64) -> QualityLevel {
        if score >= 90.0 {
            QualityLevel::Excellent
        } else if score >= 70.0 {
            QualityLevel::Good
        } else if score >= 50.0 {
            QualityLevel::Degraded
        } else if score >= 30.0 {
            QualityLevel::Poor
        } else {
            QualityLevel::Failed
        }
    }

    /// Wire name: `"EXCELLENT"`, `"GOOD"`, `"DEGRADED"`, `"POOR"`, `"FAILED"`.
    pub fn as_str(self) -> &'static str {
        match self {
            QualityLevel::Excellent => "EXCELLENT",
            QualityLevel::Good => "GOOD",
            QualityLevel::Degraded => "DEGRADED",
            QualityLevel::Poor => "POOR",
            QualityLevel::Failed => "FAILED",
        }
    }
}

/// Why each sub-score is what it is: one line per deduction, plus notes for
/// inputs that were not judged. The overall cap is noted under reliability.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reasons {
    pub reliability: Vec<String>,
    pub performance: Vec<String>,
    pub data_quality: Vec<String>,
    pub resource_efficiency: Vec<String>,
}

/// Scores, level and reasons for one run.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreCard {
    pub scores: Scores,
    pub level: QualityLevel,
    pub reasons: Reasons,
}

/// Scores one run against the worker's history before it.
pub fn score(input: &ScoringInput, baseline: &DurationBaseline, config: &ScoringConfig) -> ScoreCard {
    let mut reasons = Reasons::default();
    let reliability = reliability(input.outcome, config, &mut reasons.reliability);
    let performance = performance(input, baseline, config, &mut reasons.performance);
    let data_quality = data_quality(input, config, &mut reasons.data_quality);
    let resource_efficiency = resource_efficiency(input, config, &mut reasons.resource_efficiency);

    let w = &config.weights;
    let weighted = bounded(
        w.reliability * reliability
            + w.performance * performance
            + w.data_quality * data_quality
            + w.resource_efficiency * resource_efficiency,
    );
    let overall = if input.outcome.is_failure() && weighted > FAILED_OVERALL_CAP {
        reasons.reliability.push(format!(
            "overall {} capped at {FAILED_OVERALL_CAP} (outcome {})",
            points(weighted),
            input.outcome.as_str()
        ));
        FAILED_OVERALL_CAP
    } else {
        weighted
    };

    ScoreCard {
        scores: Scores { reliability, performance, data_quality, resource_efficiency, overall },
        level: QualityLevel::from_score(overall),
        reasons,
    }
}

/// 100 for `SUCCESS`, the configured credit for `PARTIAL` / `SKIPPED`, 0 for
/// `FAILED` / `TIMEOUT`.
fn reliability(outcome: Outcome, config: &ScoringConfig, why: &mut Vec<String>) -> f64 {
    let credit = bounded(match outcome {
        Outcome::Success => 100.0,
        Outcome::Partial => config.partial_credit,
        Outcome::Failed | Outcome::Timeout => 0.0,
        Outcome::Skipped => config.skipped_credit,
    });
    if credit < 100.0 {
        why.push(format!("outcome {} (-{})", outcome.as_str(), points(100.0 - credit)));
    }
    credit
}

/// Neutral 100 for a skip, for too little history or an unusable mean.
/// Otherwise, with `ratio = duration / mean`, `grace = max(tolerance,
/// 1 + stddev / mean)` and `span = zero_ratio - tolerance`, the run loses
/// `100 * min(1, (ratio - grace) / span)` once `ratio > grace`.
fn performance(
    input: &ScoringInput,
    baseline: &DurationBaseline,
    config: &ScoringConfig,
    why: &mut Vec<String>,
) -> f64 {
    if input.outcome == Outcome::Skipped {
        why.push("outcome SKIPPED; duration not judged".to_string());
        return 100.0;
    }
    if baseline.count < config.min_history_for_performance {
        why.push(format!(
            "history {} < {} runs; duration not judged",
            baseline.count, config.min_history_for_performance
        ));
        return 100.0;
    }
    let mean = baseline.mean_ms;
    if !(mean.is_finite() && mean > 0.0) {
        why.push(format!("baseline mean {}ms; duration not judged", number(mean)));
        return 100.0;
    }
    let spread = if baseline.stddev_ms > 0.0 { baseline.stddev_ms } else { 0.0 };
    let grace = config.slow_tolerance_ratio.max(1.0 + spread / mean);
    let ratio = input.duration_ms as f64 / mean;
    if ratio <= grace || ratio.is_nan() {
        return 100.0;
    }
    let span = config.slow_zero_ratio - config.slow_tolerance_ratio;
    let lost = if span > 0.0 { 100.0 * ((ratio - grace) / span).min(1.0) } else { 100.0 };
    let ratio_text = if ratio < 1e6 { format!("{ratio:.2}") } else { format!("{ratio:e}") };
    why.push(format!("duration {ratio_text}x mean {}ms (-{})", number(mean), points(lost)));
    bounded(100.0 - lost)
}

/// 100 minus the sum of the data-quality deductions, floored at 0.
fn data_quality(input: &ScoringInput, config: &ScoringConfig, why: &mut Vec<String>) -> f64 {
    let mut lost = 0.0;
    let mut reported = false;
    // The line is written only for a deduction: most inputs of a healthy run cost nothing.
    let mut deduct = |points_lost: f64, line: &dyn Fn() -> String| {
        if points_lost > 0.0 {
            lost += points_lost;
            let mut text = line();
            text.push_str(" (-");
            push_points(&mut text, points_lost);
            text.push(')');
            why.push(text);
        }
    };

    let (passed, failed) = (input.validation_checks_passed, input.validation_checks_failed);
    if passed > 0 || failed > 0 {
        reported = true;
        deduct(VALIDATION_MAX_POINTS * failed_share(passed, failed), &|| {
            format!("validation_checks_failed {failed}/{}", passed.saturating_add(failed))
        });
    }

    let (processed, rejected) = (input.records_processed, input.records_failed);
    if processed > 0 || rejected > 0 {
        reported = true;
        deduct(RECORDS_MAX_POINTS * failed_share(processed, rejected), &|| {
            format!("records_failed {rejected}/{}", processed.saturating_add(rejected))
        });
    }

    if let Some(present) = input.expected_fields_present {
        reported = true;
        if !present {
            deduct(EXPECTED_FIELDS_POINTS, &|| "expected_fields_present false".to_string());
        }
    }

    if input.missing_fields > 0 {
        reported = true;
        deduct((MISSING_FIELD_POINTS * input.missing_fields as f64).min(MISSING_FIELDS_MAX_POINTS), &|| {
            format!("missing_fields {}", input.missing_fields)
        });
    }

    if input.null_fields > 0 {
        reported = true;
        let per_record = input.null_fields as f64 / processed.max(1) as f64;
        deduct(NULLS_MAX_POINTS * per_record.min(1.0), &|| {
            format!("null_fields {} in {processed} records", input.null_fields)
        });
    }

    if let Some(age) = input.newest_record_age_seconds {
        reported = true;
        let limit = config.freshness_limit_seconds;
        deduct(STALENESS_MAX_POINTS * over_limit(age, limit), &|| {
            format!("newest_record_age_seconds {} > {}", number(age), number(limit))
        });
    }

    if !reported {
        why.push("no verification data reported".to_string());
    }
    bounded(100.0 - lost)
}

/// 100 minus the memory, CPU and query deductions; each grows linearly from
/// 0 at its limit to its maximum at twice the limit. Unmeasured costs nothing.
fn resource_efficiency(input: &ScoringInput, config: &ScoringConfig, why: &mut Vec<String>) -> f64 {
    let queries = (input.database_query_count > 0).then_some(input.database_query_count as f64);
    let usage = [
        ("memory_peak_mb", input.memory_peak_mb, config.memory_limit_mb, MEMORY_MAX_POINTS),
        ("cpu_percent_avg", input.cpu_percent_avg, config.cpu_limit_percent, CPU_MAX_POINTS),
        ("database_query_count", queries, config.db_query_limit as f64, DB_QUERIES_MAX_POINTS),
    ];
    if usage.iter().all(|(_, value, _, _)| value.is_none()) {
        why.push("no resource usage reported".to_string());
        return 100.0;
    }
    let mut lost = 0.0;
    for (name, value, limit, max_points) in usage {
        let Some(value) = value else { continue };
        let points_lost = max_points * over_limit(value, limit);
        if points_lost > 0.0 {
            lost += points_lost;
            why.push(format!("{name} {} > {} (-{})", number(value), number(limit), points(points_lost)));
        }
    }
    bounded(100.0 - lost)
}

/// `bad / (good + bad)` as `1 - good / (good + bad)`, so that `bad` appears
/// once and float rounding keeps the share monotone in it. 0 when both are 0.
fn failed_share(good: u64, bad: u64) -> f64 {
    let total = good as f64 + bad as f64;
    if total > 0.0 { 1.0 - good as f64 / total } else { 0.0 }
}

/// How far past `limit` a value is, as a fraction of the limit, in `0..=1`:
/// 0 at or below the limit (and for NaN), 1 at twice the limit or more.
fn over_limit(value: f64, limit: f64) -> f64 {
    if value > limit { ((value - limit) / limit).min(1.0) } else { 0.0 }
}

/// Clamps into `0..=100`; NaN (only reachable with a broken config) is 0.
fn bounded(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 100.0) }
}

/// Points as printed in reasons, rounded half away from zero to one decimal: always one decimal.
fn points(x: f64) -> String {
    let mut text = String::with_capacity(8);
    push_points(&mut text, x);
    text
}

/// [`points`], appended to `out`.
fn push_points(out: &mut String, x: f64) {
    let tenths = (x * 10.0).round();
    if !push_tenths(out, tenths, true) {
        out.push_str(&format!("{:.1}", tenths / 10.0));
    }
}

/// An input value as printed in reasons: shortest form of the value rounded (half away from
/// zero) to one decimal, scientific notation when huge or not finite.
fn number(x: f64) -> String {
    if !(x.is_finite() && x.abs() < 1e15) {
        return format!("{x:e}");
    }
    let tenths = (x * 10.0).round();
    let mut text = String::with_capacity(8);
    if !push_tenths(&mut text, tenths, false) {
        text = format!("{}", tenths / 10.0);
    }
    text
}

/// Appends what `{:.1}` (`always_decimal`) or `{}` writes for `tenths / 10`, from the integer's
/// digits instead of a float formatter (which took most of scoring's time). Beyond 14 digits it
/// appends nothing and returns false.
///
/// Exact: below 10¹⁴ the double nearest to `tenths / 10` is within 0.01 of it, so `{:.1}`
/// rounds it back to that decimal; and decimals of at most 15 significant digits map to distinct
/// doubles, so no shorter decimal reads back as it, which makes that decimal `{}`'s shortest form.
fn push_tenths(text: &mut String, tenths: f64, always_decimal: bool) -> bool {
    const LIMIT: f64 = 1e14;
    if tenths.is_nan() || tenths.abs() >= LIMIT {
        return false;
    }
    // Integral and below 10¹⁴: the conversion is exact.
    let magnitude = tenths.abs() as u64;
    let mut digits = itoa::Buffer::new();
    // `-0.0` keeps its sign, as the float formatters write it.
    if tenths.is_sign_negative() {
        text.push('-');
    }
    text.push_str(digits.format(magnitude / 10));
    let tenth = magnitude % 10;
    if tenth != 0 || always_decimal {
        text.push('.');
        text.push(char::from(b'0' + tenth as u8));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn clean() -> ScoringInput {
        ScoringInput {
            outcome: Outcome::Success,
            duration_ms: 1_000,
            records_fetched: 100,
            records_processed: 100,
            validation_checks_passed: 10,
            expected_fields_present: Some(true),
            ..ScoringInput::default()
        }
    }

    fn assert_close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() < 1e-9, "expected {expected}, got {actual}");
    }

    fn in_range(x: f64) -> bool {
        (0.0..=100.0).contains(&x)
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Success),
            Just(Outcome::Partial),
            Just(Outcome::Failed),
            Just(Outcome::Timeout),
            Just(Outcome::Skipped),
        ]
    }

    fn count() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0), Just(u64::MAX), 0u64..10, 0u64..1_000_000, any::<u64>(),]
    }

    fn magnitude() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            Just(f64::MAX),
            0.0..1e4,
            0.0..1e9,
            proptest::num::f64::POSITIVE | proptest::num::f64::NORMAL,
        ]
    }

    fn maybe_magnitude() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![Just(None), magnitude().prop_map(Some)]
    }

    /// Well-formed inputs, extremes included.
    fn input() -> impl Strategy<Value = ScoringInput> {
        (
            (outcome(), count(), count(), count(), count()),
            (count(), count(), proptest::option::of(any::<bool>()), count()),
            (count(), maybe_magnitude(), maybe_magnitude(), maybe_magnitude(), count()),
        )
            .prop_map(|(a, b, c)| ScoringInput {
                outcome: a.0,
                duration_ms: a.1,
                records_fetched: a.2,
                records_processed: a.3,
                records_failed: a.4,
                validation_checks_passed: b.0,
                validation_checks_failed: b.1,
                expected_fields_present: b.2,
                missing_fields: b.3,
                null_fields: c.0,
                newest_record_age_seconds: c.1,
                memory_peak_mb: c.2,
                cpu_percent_avg: c.3,
                database_query_count: c.4,
            })
    }

    /// Any float, NaN and infinities included.
    fn wild() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            Just(None),
            Just(Some(f64::NAN)),
            Just(Some(f64::INFINITY)),
            Just(Some(f64::NEG_INFINITY)),
            any::<f64>().prop_map(Some),
        ]
    }

    fn baseline() -> impl Strategy<Value = DurationBaseline> {
        (count(), magnitude(), magnitude()).prop_map(|(count, mean_ms, stddev_ms)| DurationBaseline {
            count,
            mean_ms,
            stddev_ms,
        })
    }

    fn wild_baseline() -> impl Strategy<Value = DurationBaseline> {
        (count(), any::<f64>(), any::<f64>()).prop_map(|(count, mean_ms, stddev_ms)| DurationBaseline {
            count,
            mean_ms,
            stddev_ms,
        })
    }

    /// Valid configs: random normalised weights, credits and limits.
    fn config() -> impl Strategy<Value = ScoringConfig> {
        (
            (0.0..1.0f64, 0.0..1.0f64, 0.0..1.0f64, 0.01..1.0f64),
            (0.0..=100.0f64, 0.0..=100.0f64, 0u64..10),
            (1.0..2.0f64, 0.1..5.0f64),
            (1.0..1e4f64, 1.0..1e3f64, 1u64..1_000, 1.0..1e6f64),
        )
            .prop_map(|(w, credit, ratio, limit)| {
                let sum = w.0 + w.1 + w.2 + w.3;
                ScoringConfig {
                    weights: Weights {
                        reliability: w.0 / sum,
                        performance: w.1 / sum,
                        data_quality: w.2 / sum,
                        resource_efficiency: w.3 / sum,
                    },
                    partial_credit: credit.0,
                    skipped_credit: credit.1,
                    min_history_for_performance: credit.2,
                    slow_tolerance_ratio: ratio.0,
                    slow_zero_ratio: ratio.0 + ratio.1,
                    memory_limit_mb: limit.0,
                    cpu_limit_percent: limit.1,
                    db_query_limit: limit.2,
                    freshness_limit_seconds: limit.3,
                }
            })
    }

    fn history() -> DurationBaseline {
        DurationBaseline { count: 20, mean_ms: 1_200.0, stddev_ms: 300.0 }
    }

    fn check_card(card: &ScoreCard) {
        let s = &card.scores;
        for x in [s.reliability, s.performance, s.data_quality, s.resource_efficiency, s.overall] {
            assert!(in_range(x), "{x} out of range in {card:?}");
        }
        assert_eq!(card.level, QualityLevel::from_score(s.overall));
    }

    /// `worse` must not beat `better` on the picked sub-score nor overall.
    fn assert_not_better(better: &ScoreCard, worse: &ScoreCard, pick: fn(&Scores) -> f64) {
        assert!(pick(&worse.scores) <= pick(&better.scores), "sub-score rose: {better:?} -> {worse:?}");
        assert!(worse.scores.overall <= better.scores.overall, "overall rose: {better:?} -> {worse:?}");
    }

    fn ordered<T: PartialOrd>(a: T, b: T) -> (T, T) {
        if a <= b { (a, b) } else { (b, a) }
    }

    fn round1(x: f64) -> f64 {
        (x * 10.0).round() / 10.0
    }

    /// What `points` and `number` wrote with the float formatters, before they wrote digits.
    fn points_by_formatter(x: f64) -> String {
        format!("{:.1}", round1(x))
    }

    fn number_by_formatter(x: f64) -> String {
        if x.is_finite() && x.abs() < 1e15 { format!("{}", round1(x)) } else { format!("{x:e}") }
    }

    #[test]
    fn numbers_in_reasons_read_as_the_float_formatters_wrote_them() {
        let edges = [
            0.0,
            -0.0,
            0.04,
            -0.04,
            0.05,
            -0.05,
            0.15,
            0.25,
            0.95,
            1.0,
            9.95,
            12.35,
            99.99,
            100.0,
            -1.0,
            -2.5,
            0.1 + 0.2,
            1e13,
            9_999_999_999_999.95,
            1e14 / 10.0 - 0.05,
            1e14,
            1e15,
            -1e15,
            5e15,
            1e300,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        for x in edges {
            assert_eq!(points(x), points_by_formatter(x), "points({x:?})");
            assert_eq!(number(x), number_by_formatter(x), "number({x:?})");
        }
    }

    proptest! {
        #[test]
        fn points_and_numbers_match_the_float_formatters(
            x in prop_oneof![
                any::<f64>(),
                -1e3..1e3f64,
                -1e16..1e16f64,
                (-100_000i64..100_000).prop_map(|t| t as f64 / 10.0),
                (-100_000i64..100_000).prop_map(|t| t as f64 / 10.0 + 0.05),
                (-100_000_000_000_000i64..100_000_000_000_000).prop_map(|t| t as f64 / 10.0),
            ]
        ) {
            prop_assert_eq!(points(x), points_by_formatter(x));
            prop_assert_eq!(number(x), number_by_formatter(x));
        }

        #[test]
        fn every_score_in_range(input in input(), baseline in baseline(), config in config()) {
            check_card(&score(&input, &baseline, &config));
            check_card(&score(&input, &baseline, &ScoringConfig::default()));
        }

        #[test]
        fn range_survives_nan_and_infinities(
            input in input(),
            baseline in wild_baseline(),
            age in wild(),
            memory in wild(),
            cpu in wild(),
        ) {
            let input = ScoringInput {
                newest_record_age_seconds: age,
                memory_peak_mb: memory,
                cpu_percent_avg: cpu,
                ..input
            };
            check_card(&score(&input, &baseline, &ScoringConfig::default()));
        }

        #[test]
        fn deterministic(input in input(), baseline in baseline(), config in config()) {
            prop_assert_eq!(score(&input, &baseline, &config), score(&input, &baseline, &config));
        }

        #[test]
        fn failure_is_never_better_than_poor(
            input in input(),
            failure in prop_oneof![Just(Outcome::Failed), Just(Outcome::Timeout)],
            baseline in baseline(),
            config in config(),
        ) {
            let input = ScoringInput { outcome: failure, ..input };
            let card = score(&input, &baseline, &config);
            prop_assert!(card.scores.overall < 50.0);
            prop_assert!(matches!(card.level, QualityLevel::Poor | QualityLevel::Failed));
            prop_assert_eq!(card.scores.reliability, 0.0);
        }

        #[test]
        fn clean_success_without_history_is_excellent(passed in 1u64.., processed in count(), duration in count()) {
            let input = ScoringInput {
                validation_checks_passed: passed,
                records_processed: processed,
                duration_ms: duration,
                ..clean()
            };
            let card = score(&input, &DurationBaseline::default(), &ScoringConfig::default());
            prop_assert_eq!(card.level, QualityLevel::Excellent);
            prop_assert_eq!(card.scores.overall, 100.0);
        }

        #[test]
        fn faster_than_mean_is_never_penalised(ms in 0u64..=1_200) {
            let input = ScoringInput { duration_ms: ms, ..clean() };
            let card = score(&input, &history(), &ScoringConfig::default());
            prop_assert_eq!(card.scores.performance, 100.0);
        }

        #[test]
        fn duration_monotone(input in input(), baseline in baseline(), a in count(), b in count()) {
            let (lo, hi) = ordered(a, b);
            let config = ScoringConfig::default();
            let better = score(&ScoringInput { duration_ms: lo, ..input.clone() }, &baseline, &config);
            let worse = score(&ScoringInput { duration_ms: hi, ..input }, &baseline, &config);
            assert_not_better(&better, &worse, |s| s.performance);
        }

        #[test]
        fn records_failed_monotone(input in input(), a in count(), b in count()) {
            let (lo, hi) = ordered(a, b);
            let (base, config) = (history(), ScoringConfig::default());
            let better = score(&ScoringInput { records_failed: lo, ..input.clone() }, &base, &config);
            let worse = score(&ScoringInput { records_failed: hi, ..input }, &base, &config);
            assert_not_better(&better, &worse, |s| s.data_quality);
        }

        #[test]
        fn validation_failed_monotone(input in input(), a in count(), b in count()) {
            let (lo, hi) = ordered(a, b);
            let (base, config) = (history(), ScoringConfig::default());
            let better =
                score(&ScoringInput { validation_checks_failed: lo, ..input.clone() }, &base, &config);
            let worse = score(&ScoringInput { validation_checks_failed: hi, ..input }, &base, &config);
            assert_not_better(&better, &worse, |s| s.data_quality);
        }

        #[test]
        fn missing_fields_monotone(input in input(), a in count(), b in count()) {
            let (lo, hi) = ordered(a, b);
            let (base, config) = (history(), ScoringConfig::default());
            let better = score(&ScoringInput { missing_fields: lo, ..input.clone() }, &base, &config);
            let worse = score(&ScoringInput { missing_fields: hi, ..input }, &base, &config);
            assert_not_better(&better, &worse, |s| s.data_quality);
        }

        #[test]
        fn null_fields_monotone(input in input(), a in count(), b in count()) {
            let (lo, hi) = ordered(a, b);
            let (base, config) = (history(), ScoringConfig::default());
            let better = score(&ScoringInput { null_fields: lo, ..input.clone() }, &base, &config);
            let worse = score(&ScoringInput { null_fields: hi, ..input }, &base, &config);
            assert_not_better(&better, &worse, |s| s.data_quality);
        }

        #[test]
        fn expected_fields_absent_never_helps(input in input(), checked in proptest::option::of(Just(true))) {
            let (base, config) = (history(), ScoringConfig::default());
            let better =
                score(&ScoringInput { expected_fields_present: checked, ..input.clone() }, &base, &config);
            let worse =
                score(&ScoringInput { expected_fields_present: Some(false), ..input }, &base, &config);
            assert_not_better(&better, &worse, |s| s.data_quality);
        }

        #[test]
        fn record_age_monotone(input in input(), a in magnitude(), b in magnitude()) {
            let (lo, hi) = ordered(a, b);
            let (base, config) = (history(), ScoringConfig::default());
            let unknown =
                score(&ScoringInput { newest_record_age_seconds: None, ..input.clone() }, &base, &config);
            let better =
                score(&ScoringInput { newest_record_age_seconds: Some(lo), ..input.clone() }, &base, &config);
            let worse =
                score(&ScoringInput { newest_record_age_seconds: Some(hi), ..input }, &base, &config);
            assert_not_better(&unknown, &better, |s| s.data_quality);
            assert_not_better(&better, &worse, |s| s.data_quality);
        }

        #[test]
        fn memory_monotone(input in input(), a in magnitude(), b in magnitude()) {
            let (lo, hi) = ordered(a, b);
            let (base, config) = (history(), ScoringConfig::default());
            let unmeasured = score(&ScoringInput { memory_peak_mb: None, ..input.clone() }, &base, &config);
            let better = score(&ScoringInput { memory_peak_mb: Some(lo), ..input.clone() }, &base, &config);
            let worse = score(&ScoringInput { memory_peak_mb: Some(hi), ..input }, &base, &config);
            assert_not_better(&unmeasured, &better, |s| s.resource_efficiency);
            assert_not_better(&better, &worse, |s| s.resource_efficiency);
        }

        #[test]
        fn cpu_monotone(input in input(), a in 0.0..=10_000.0f64, b in 0.0..=10_000.0f64) {
            let (lo, hi) = ordered(a, b);
            let (base, config) = (history(), ScoringConfig::default());
            let unmeasured = score(&ScoringInput { cpu_percent_avg: None, ..input.clone() }, &base, &config);
            let better = score(&ScoringInput { cpu_percent_avg: Some(lo), ..input.clone() }, &base, &config);
            let worse = score(&ScoringInput { cpu_percent_avg: Some(hi), ..input }, &base, &config);
            assert_not_better(&unmeasured, &better, |s| s.resource_efficiency);
            assert_not_better(&better, &worse, |s| s.resource_efficiency);
        }

        #[test]
        fn db_queries_monotone(input in input(), a in count(), b in count()) {
            let (lo, hi) = ordered(a, b);
            let (base, config) = (history(), ScoringConfig::default());
            let better =
                score(&ScoringInput { database_query_count: lo, ..input.clone() }, &base, &config);
            let worse = score(&ScoringInput { database_query_count: hi, ..input }, &base, &config);
            assert_not_better(&better, &worse, |s| s.resource_efficiency);
        }
    }

    /// The worked example of `docs/scoring.md`, number for number.
    #[test]
    fn worked_example() {
        let input = ScoringInput {
            outcome: Outcome::Partial,
            duration_ms: 1_956,
            records_fetched: 200,
            records_processed: 190,
            records_failed: 10,
            validation_checks_passed: 18,
            validation_checks_failed: 2,
            expected_fields_present: Some(false),
            missing_fields: 1,
            null_fields: 38,
            newest_record_age_seconds: Some(108_000.0),
            memory_peak_mb: Some(600.0),
            cpu_percent_avg: Some(60.0),
            database_query_count: 130,
        };
        let card = score(&input, &history(), &ScoringConfig::default());

        assert_close(card.scores.reliability, 50.0);
        assert_close(card.scores.performance, 80.0);
        assert_close(card.scores.data_quality, 68.5);
        assert_close(card.scores.resource_efficiency, 83.0);
        assert_close(card.scores.overall, 66.35);
        assert_eq!(card.level, QualityLevel::Degraded);
        assert_eq!(card.level.as_str(), "DEGRADED");
        assert_eq!(
            card.reasons,
            Reasons {
                reliability: vec!["outcome PARTIAL (-50.0)".to_string()],
                performance: vec!["duration 1.63x mean 1200ms (-20.0)".to_string()],
                data_quality: vec![
                    "validation_checks_failed 2/20 (-4.0)".to_string(),
                    "records_failed 10/200 (-2.0)".to_string(),
                    "expected_fields_present false (-10.0)".to_string(),
                    "missing_fields 1 (-5.0)".to_string(),
                    "null_fields 38 in 190 records (-3.0)".to_string(),
                    "newest_record_age_seconds 108000 > 86400 (-7.5)".to_string(),
                ],
                resource_efficiency: vec![
                    "memory_peak_mb 600 > 500 (-8.0)".to_string(),
                    "database_query_count 130 > 100 (-9.0)".to_string(),
                ],
            }
        );
    }

    #[test]
    fn clean_success_is_excellent() {
        let card = score(&clean(), &DurationBaseline::default(), &ScoringConfig::default());
        assert_eq!(card.scores.overall, 100.0);
        assert_eq!(card.level, QualityLevel::Excellent);
        assert_eq!(card.reasons.performance, ["history 0 < 3 runs; duration not judged"]);
        assert!(card.reasons.reliability.is_empty());
        assert!(card.reasons.data_quality.is_empty());
    }

    #[test]
    fn empty_report_is_excellent_and_says_so() {
        let card = score(&ScoringInput::default(), &DurationBaseline::default(), &ScoringConfig::default());
        assert_eq!(card.scores.overall, 100.0);
        assert_eq!(card.level, QualityLevel::Excellent);
        assert_eq!(card.reasons.data_quality, ["no verification data reported"]);
        assert_eq!(card.reasons.resource_efficiency, ["no resource usage reported"]);
    }

    #[test]
    fn skipped_run_does_not_drag_the_average_down() {
        let input = ScoringInput { outcome: Outcome::Skipped, duration_ms: 1_000_000, ..ScoringInput::default() };
        let card = score(&input, &history(), &ScoringConfig::default());
        assert_eq!(card.scores.overall, 100.0);
        assert_eq!(card.reasons.performance, ["outcome SKIPPED; duration not judged"]);
    }

    #[test]
    fn failed_run_cap_is_reported() {
        let input = ScoringInput { outcome: Outcome::Timeout, ..clean() };
        let card = score(&input, &history(), &ScoringConfig::default());
        assert_eq!(card.scores.overall, FAILED_OVERALL_CAP);
        assert_eq!(card.level, QualityLevel::Poor);
        assert_eq!(
            card.reasons.reliability,
            ["outcome TIMEOUT (-100.0)", "overall 65.0 capped at 49.9 (outcome TIMEOUT)"]
        );
    }

    #[test]
    fn slow_run_declines_to_zero() {
        let base = DurationBaseline { count: 10, mean_ms: 1_000.0, stddev_ms: 0.0 };
        let config = ScoringConfig::default();
        let perf = |ms| score(&ScoringInput { duration_ms: ms, ..clean() }, &base, &config);
        assert_eq!(perf(1_100).scores.performance, 100.0);
        assert_close(perf(2_050).scores.performance, 50.0);
        assert_eq!(perf(3_000).scores.performance, 0.0);
        assert_eq!(perf(u64::MAX).scores.performance, 0.0);
        assert_eq!(perf(2_050).reasons.performance, ["duration 2.05x mean 1000ms (-50.0)"]);
    }

    #[test]
    fn quality_levels() {
        let cases = [
            (100.0, "EXCELLENT"),
            (90.0, "EXCELLENT"),
            (89.99, "GOOD"),
            (70.0, "GOOD"),
            (69.9, "DEGRADED"),
            (50.0, "DEGRADED"),
            (49.9, "POOR"),
            (30.0, "POOR"),
            (29.9, "FAILED"),
            (0.0, "FAILED"),
            (f64::NAN, "FAILED"),
        ];
        for (score, name) in cases {
            assert_eq!(QualityLevel::from_score(score).as_str(), name, "{score}");
        }
    }

    #[test]
    fn outcome_names_round_trip() {
        for outcome in [Outcome::Success, Outcome::Partial, Outcome::Failed, Outcome::Timeout, Outcome::Skipped] {
            assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
        }
        assert_eq!(Outcome::parse("success"), None);
    }

    #[test]
    fn config_validation() {
        assert_eq!(ScoringConfig::default().validate(), Ok(()));
        let broken: [fn(&mut ScoringConfig); 10] = [
            |c| c.weights.reliability = 0.5,
            |c| c.weights.performance = -0.1,
            |c| c.weights.data_quality = f64::NAN,
            |c| c.partial_credit = 101.0,
            |c| c.skipped_credit = -1.0,
            |c| c.slow_tolerance_ratio = 0.9,
            |c| c.slow_zero_ratio = 1.1,
            |c| c.memory_limit_mb = 0.0,
            |c| c.freshness_limit_seconds = f64::INFINITY,
            |c| c.db_query_limit = 0,
        ];
        for (i, breaks) in broken.iter().enumerate() {
            let mut config = ScoringConfig::default();
            breaks(&mut config);
            assert!(config.validate().is_err(), "case {i} accepted: {config:?}");
        }
        let mut shifted = ScoringConfig::default();
        shifted.weights.reliability = 0.25;
        shifted.weights.performance = 0.35;
        assert_eq!(shifted.validate(), Ok(()));
    }
}
