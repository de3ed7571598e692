//! What the server adds to a validated report: its scores and learning fields, computed against
//! the worker's running state, which the run is then folded into. Pure glue between
//! [`validation`](super::validation), [`scoring`](super::scoring) and [`learning`](super::learning).

use super::{
    learning::{DurationTrend, LearningFields, RunFacts, VolumeTrend, WorkerRunningState},
    scoring::{self, QualityLevel, ScoreCard, ScoringConfig, ScoringInput},
    validation::ValidReport,
};
use crate::proto::v1 as pb;

/// Scores one run against `state` (the worker's history before it), then folds the run into
/// `state`. Returns what is stored with the execution and returned to the worker.
pub fn analyze(report: &ValidReport, state: &mut WorkerRunningState, config: &ScoringConfig) -> pb::Analysis {
    let card = scoring::score(&scoring_input(report), &state.baseline(), config);
    let learning = state.observe(&RunFacts {
        started_at: report.started_at,
        duration_ms: non_negative(report.duration_ms),
        records_processed: report.report.data_verification.as_ref().map_or(0, |d| non_negative(d.records_processed)),
    });
    to_proto(card, &learning, config)
}

fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The inputs scoring reads, from a report whose counts validation has already bounded.
pub fn scoring_input(report: &ValidReport) -> ScoringInput {
    let absent = pb::DataVerification::default();
    let data = report.report.data_verification.as_ref().unwrap_or(&absent);
    let resources = report.report.resource_metrics.unwrap_or_default();
    ScoringInput {
        outcome: match report.outcome {
            pb::Outcome::Success | pb::Outcome::Unspecified => scoring::Outcome::Success,
            pb::Outcome::Partial => scoring::Outcome::Partial,
            pb::Outcome::Failed => scoring::Outcome::Failed,
            pb::Outcome::Timeout => scoring::Outcome::Timeout,
            pb::Outcome::Skipped => scoring::Outcome::Skipped,
        },
        duration_ms: non_negative(report.duration_ms),
        records_fetched: non_negative(data.records_fetched),
        records_processed: non_negative(data.records_processed),
        records_failed: non_negative(data.records_failed),
        validation_checks_passed: non_negative(data.validation_checks_passed),
        validation_checks_failed: non_negative(data.validation_checks_failed),
        expected_fields_present: data.expected_fields_present,
        missing_fields: data.missing_fields.len() as u64,
        null_fields: data.null_field_counts.values().fold(0u64, |sum, n| sum.saturating_add(non_negative(*n))),
        newest_record_age_seconds: data.newest_record_age_seconds,
        memory_peak_mb: resources.memory_peak_mb,
        cpu_percent_avg: resources.cpu_percent_avg,
        database_query_count: non_negative(resources.database_query_count),
    }
}

pub fn quality_level_to_proto(level: QualityLevel) -> pb::QualityLevel {
    match level {
        QualityLevel::Excellent => pb::QualityLevel::Excellent,
        QualityLevel::Good => pb::QualityLevel::Good,
        QualityLevel::Degraded => pb::QualityLevel::Degraded,
        QualityLevel::Poor => pb::QualityLevel::Poor,
        QualityLevel::Failed => pb::QualityLevel::Failed,
    }
}

fn to_proto(card: ScoreCard, learning: &LearningFields, config: &ScoringConfig) -> pb::Analysis {
    let s = &card.scores;
    let w = &config.weights;
    pb::Analysis {
        scores: Some(pb::Scores {
            reliability: s.reliability,
            performance: s.performance,
            data_quality: s.data_quality,
            resource_efficiency: s.resource_efficiency,
            overall: s.overall,
        }),
        quality_level: quality_level_to_proto(card.level) as i32,
        reasons: Some(pb::ScoreReasons {
            reliability: card.reasons.reliability,
            performance: card.reasons.performance,
            data_quality: card.reasons.data_quality,
            resource_efficiency: card.reasons.resource_efficiency,
        }),
        weights: Some(pb::ScoreWeights {
            reliability: w.reliability,
            performance: w.performance,
            data_quality: w.data_quality,
            resource_efficiency: w.resource_efficiency,
        }),
        learning: Some(pb::LearningFields {
            time_of_day_utc: learning.time_of_day_utc,
            day_of_week: learning.day_of_week,
            execution_number_today: i64::try_from(learning.execution_number_today).unwrap_or(i64::MAX),
            time_since_last_run_seconds: learning.time_since_last_run_seconds,
            duration_vs_avg: learning.duration_vs_avg,
            duration_trend: match learning.duration_trend {
                DurationTrend::Faster => pb::DurationTrend::Faster,
                DurationTrend::Slower => pb::DurationTrend::Slower,
                DurationTrend::Stable => pb::DurationTrend::Stable,
            } as i32,
            data_volume_trend: match learning.data_volume_trend {
                VolumeTrend::Increasing => pb::VolumeTrend::Increasing,
                VolumeTrend::Decreasing => pb::VolumeTrend::Decreasing,
                VolumeTrend::Stable => pb::VolumeTrend::Stable,
            } as i32,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::validation::validate_report;
    use chrono::DateTime;

    #[test]
    fn first_clean_run_is_excellent_with_first_run_learning_fields() {
        let now = DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default();
        let report = pb::ExecutionReport {
            worker_name: "w".into(),
            outcome: pb::Outcome::Success as i32,
            duration_ms: Some(1000),
            data_verification: Some(pb::DataVerification {
                records_processed: 10,
                validation_checks_passed: 3,
                ..Default::default()
            }),
            ..Default::default()
        };
        let valid = validate_report(Some(report), now).expect("valid");
        let mut state = WorkerRunningState::default();
        let analysis = analyze(&valid, &mut state, &ScoringConfig::default());
        assert_eq!(analysis.quality_level, pb::QualityLevel::Excellent as i32);
        assert_eq!(analysis.scores.map(|s| s.overall), Some(100.0));
        let learning = analysis.learning.expect("learning");
        assert_eq!(learning.execution_number_today, 1);
        assert_eq!(learning.time_since_last_run_seconds, None);
        assert_eq!(state.run_count, 1);
    }

    #[test]
    fn failed_run_is_never_better_than_poor() {
        let now = DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default();
        let report = pb::ExecutionReport {
            worker_name: "w".into(),
            outcome: pb::Outcome::Failed as i32,
            duration_ms: Some(1000),
            ..Default::default()
        };
        let valid = validate_report(Some(report), now).expect("valid");
        let analysis = analyze(&valid, &mut WorkerRunningState::default(), &ScoringConfig::default());
        assert_eq!(analysis.quality_level, pb::QualityLevel::Poor as i32);
        assert!(analysis.scores.map_or(100.0, |s| s.overall) < 50.0);
    }
}
